//! Raw declarations of the C API (include/mapalloc/*.h). Kept by hand: the crate has no
//! build dependencies beyond CMake and a C compiler. Layouts mirror the headers exactly.
#![allow(non_camel_case_types, dead_code)]

use std::os::raw::{c_int, c_uint, c_void};

pub const MA_PROT_NONE: c_uint = 0;
pub const MA_PROT_READ: c_uint = 1;
pub const MA_PROT_WRITE: c_uint = 2;
pub const MA_PROT_EXEC: c_uint = 4;

pub const MA_MAP_SHARED: c_uint = 1 << 0;
pub const MA_MAP_RESERVE: c_uint = 1 << 1;
pub const MA_MAP_POPULATE: c_uint = 1 << 2;
pub const MA_MAP_NORESERVE: c_uint = 1 << 3;
pub const MA_MAP_STRICT_HINT: c_uint = 1 << 4;
pub const MA_MAP_HUGE: c_uint = 1 << 5;
pub const MA_MAP_HUGE_TRY: c_uint = 1 << 6;
pub const MA_MAP_LOCKED: c_uint = 1 << 7;
pub const MA_MAP_DONTDUMP: c_uint = 1 << 8;
pub const MA_MAP_DONTFORK: c_uint = 1 << 9;
pub const MA_MAP_STACK: c_uint = 1 << 10;
pub const MA_MAP_JIT: c_uint = 1 << 11;

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ma_map_opts {
    pub len: usize,
    pub prot: c_uint,
    pub flags: c_uint,
    pub hint: *mut c_void,
    pub align: usize,
    pub fd: c_int,
    pub offset: u64,
    pub page_shift: c_uint,
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ma_map {
    pub addr: *mut c_void,
    pub len: usize,
    pub prot: c_uint,
    pub flags: c_uint,
    pub fd: c_int,
    pub offset: u64,
    pub page_shift: c_uint,
}

/// `enum ma_advice` (a C enum: int-sized).
pub type ma_advice = c_int;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ma_pool_opts {
    pub obj_size: usize,
    pub align: usize,
    pub prot: c_uint,
    pub map_flags: c_uint,
    pub commit: bool,
    pub zero: bool,
    pub max_bytes: usize,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ma_pool_stats {
    pub obj_size: usize,
    pub live: usize,
    pub capacity: usize,
    pub committed_bytes: usize,
    pub reserved_bytes: usize,
    pub allocs: usize,
    pub frees: usize,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ma_heap_stats {
    pub allocated: usize,
    pub active: usize,
    pub committed: usize,
    pub reserved: usize,
    pub mapped_large: usize,
    pub allocs: usize,
    pub frees: usize,
    pub purges: usize,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ma_arena_mapping {
    pub off: usize,
    pub len: usize,
    pub anon: bool,
    pub dev: u64,
    pub ino: u64,
    pub fd_off: u64,
    pub prot: c_uint,
}

#[repr(C)]
pub struct ma_pool {
    _private: [u8; 0],
}

#[repr(C)]
pub struct ma_arena {
    _private: [u8; 0],
}

extern "C" {
    // Page layer.
    pub fn ma_page_size() -> usize;
    pub fn ma_allocation_granularity() -> usize;
    pub fn ma_huge_page_sizes(out: *mut usize, max: usize) -> usize;
    pub fn ma_map_create(opts: *const ma_map_opts, out: *mut ma_map) -> c_int;
    pub fn ma_map_destroy(m: *mut ma_map) -> c_int;
    pub fn ma_map_protect(m: *mut ma_map, prot: c_uint) -> c_int;
    pub fn ma_map_protect_range(m: *mut ma_map, off: usize, len: usize, prot: c_uint) -> c_int;
    pub fn ma_map_commit(m: *mut ma_map, off: usize, len: usize) -> c_int;
    pub fn ma_map_decommit(m: *mut ma_map, off: usize, len: usize) -> c_int;
    pub fn ma_map_lock(m: *mut ma_map, off: usize, len: usize) -> c_int;
    pub fn ma_map_unlock(m: *mut ma_map, off: usize, len: usize) -> c_int;
    pub fn ma_map_flush(m: *mut ma_map, off: usize, len: usize, is_async: bool) -> c_int;
    pub fn ma_flush_icache(addr: *mut c_void, len: usize);
    pub fn ma_map_advise(m: *mut ma_map, off: usize, len: usize, adv: ma_advice) -> c_int;
    pub fn ma_map_split(m: *mut ma_map, off: usize, tail: *mut ma_map) -> c_int;
    pub fn ma_map_merge(m: *mut ma_map, next: *mut ma_map) -> c_int;

    // Object pools.
    pub fn ma_pool_create(opts: *const ma_pool_opts, out: *mut *mut ma_pool) -> c_int;
    pub fn ma_pool_alloc(p: *mut ma_pool) -> *mut c_void;
    pub fn ma_pool_free(p: *mut ma_pool, obj: *mut c_void);
    pub fn ma_pool_trim(p: *mut ma_pool) -> c_int;
    pub fn ma_pool_stats_get(p: *mut ma_pool, out: *mut ma_pool_stats);
    pub fn ma_pool_destroy(p: *mut ma_pool);

    // Mapping arena.
    pub fn ma_arena_create(len: usize, map_flags: c_uint, out: *mut *mut ma_arena) -> c_int;
    pub fn ma_arena_base(a: *const ma_arena) -> *mut c_void;
    pub fn ma_arena_len(a: *const ma_arena) -> usize;
    pub fn ma_arena_add_fd_mapping(
        a: *mut ma_arena,
        off: usize,
        len: usize,
        fd: c_int,
        fd_off: u64,
        prot: c_uint,
    ) -> c_int;
    pub fn ma_arena_add_anon_mapping(
        a: *mut ma_arena,
        off: usize,
        len: usize,
        prot: c_uint,
    ) -> c_int;
    pub fn ma_arena_remove_mapping(a: *mut ma_arena, off: usize, len: usize) -> c_int;
    pub fn ma_arena_protect(a: *mut ma_arena, off: usize, len: usize, prot: c_uint) -> c_int;
    pub fn ma_arena_advise(a: *mut ma_arena, off: usize, len: usize, adv: ma_advice) -> c_int;
    pub fn ma_arena_flush(a: *mut ma_arena, off: usize, len: usize, is_async: bool) -> c_int;
    pub fn ma_arena_find(a: *const ma_arena, off: usize, out: *mut ma_arena_mapping) -> c_int;
    pub fn ma_arena_count(a: *const ma_arena) -> usize;
    pub fn ma_arena_foreach(
        a: *const ma_arena,
        f: unsafe extern "C" fn(*const ma_arena_mapping, *mut c_void) -> c_int,
        ctx: *mut c_void,
    ) -> c_int;
    pub fn ma_arena_destroy(a: *mut ma_arena);

    // Heap.
    pub fn ma_malloc(size: usize) -> *mut c_void;
    pub fn ma_calloc(n: usize, size: usize) -> *mut c_void;
    pub fn ma_realloc(p: *mut c_void, size: usize) -> *mut c_void;
    pub fn ma_free(p: *mut c_void);
    pub fn ma_free_sized(p: *mut c_void, size: usize);
    pub fn ma_aligned_alloc(align: usize, size: usize) -> *mut c_void;
    pub fn ma_usable_size(p: *const c_void) -> usize;
    pub fn ma_heap_stats_get(out: *mut ma_heap_stats);
    pub fn ma_heap_collect(force: bool) -> c_int;
}
