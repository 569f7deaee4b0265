//! `Map`: a safe wrapper of the page layer's `ma_map` (include/mapalloc/pages.h).

use std::fmt;
use std::ops::{BitOr, BitOrAssign};
use std::os::raw::{c_uint, c_void};
use std::os::unix::io::AsRawFd;
use std::ptr;
use std::slice;

use crate::{check, ffi, Advice, Error, Prot, Result};

/// `MA_MAP_*` flags of the page layer, combined with `|`. Pools and arenas accept the
/// subsets their constructors list.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct MapFlags(c_uint);

impl MapFlags {
    /// No flag: a private map.
    pub const EMPTY: MapFlags = MapFlags(0);
    /// Shared (a file's pages are written back; children share anonymous memory).
    pub const SHARED: MapFlags = MapFlags(ffi::MA_MAP_SHARED);
    /// Reserve address space only: inaccessible until [`Map::commit`].
    pub const RESERVE: MapFlags = MapFlags(ffi::MA_MAP_RESERVE);
    /// Prefault every page now (each committed range, for a reserved map).
    pub const POPULATE: MapFlags = MapFlags(ffi::MA_MAP_POPULATE);
    /// No swap reservation.
    pub const NORESERVE: MapFlags = MapFlags(ffi::MA_MAP_NORESERVE);
    /// Place the map exactly at the hint or fail with `EEXIST`.
    pub const STRICT_HINT: MapFlags = MapFlags(ffi::MA_MAP_STRICT_HINT);
    /// Explicit huge pages (of [`MapOptions::page_shift`], default the smallest size).
    pub const HUGE: MapFlags = MapFlags(ffi::MA_MAP_HUGE);
    /// Huge pages if available (explicit, else transparent), else base pages.
    pub const HUGE_TRY: MapFlags = MapFlags(ffi::MA_MAP_HUGE_TRY);
    /// Lock in physical memory.
    pub const LOCKED: MapFlags = MapFlags(ffi::MA_MAP_LOCKED);
    /// Exclude from core dumps.
    pub const DONTDUMP: MapFlags = MapFlags(ffi::MA_MAP_DONTDUMP);
    /// Not inherited by `fork()` children.
    pub const DONTFORK: MapFlags = MapFlags(ffi::MA_MAP_DONTFORK);
    /// A thread stack (`MAP_STACK`).
    pub const STACK: MapFlags = MapFlags(ffi::MA_MAP_STACK);
    /// Permit `WRITE | EXEC` at once (W^X is enforced otherwise).
    pub const JIT: MapFlags = MapFlags(ffi::MA_MAP_JIT);

    /// The `MA_MAP_*` bits.
    pub fn bits(self) -> u32 {
        self.0
    }
    /// From `MA_MAP_*` bits (unknown bits are refused by the C library).
    pub fn from_bits(bits: u32) -> MapFlags {
        MapFlags(bits)
    }
    /// Whether every flag of `other` is set.
    pub fn contains(self, other: MapFlags) -> bool {
        self.0 & other.0 == other.0
    }
}

impl BitOr for MapFlags {
    type Output = MapFlags;
    fn bitor(self, rhs: MapFlags) -> MapFlags {
        MapFlags(self.0 | rhs.0)
    }
}

impl BitOrAssign for MapFlags {
    fn bitor_assign(&mut self, rhs: MapFlags) {
        self.0 |= rhs.0;
    }
}

impl fmt::Debug for MapFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MapFlags({:#x})", self.0)
    }
}

/// How to make a [`Map`] (`ma_map_opts`): `MapOptions::new(len)`, setters, then
/// [`map`](MapOptions::map) or [`reserve`](MapOptions::reserve).
///
/// Compared point by point with mmap-rs's `MmapOptions` (0.6):
///
/// | mmap-rs `MmapOptions` | mapalloc `MapOptions` |
/// |---|---|
/// | `new(size)` fails unless `size` is a page multiple | `new(len)` rounds `len` up to the page (or huge page) size; [`Map::len`] says what was mapped |
/// | `with_address(addr)`: a hint (`MAP_FIXED` only through `UnsafeMmapFlags::MAP_FIXED`) | [`hint`](MapOptions::hint), and [`MapFlags::STRICT_HINT`] to get exactly that address or `EEXIST`; never `MAP_FIXED` over someone else's memory |
/// | — | [`align`](MapOptions::align): the start is a multiple of any power of two |
/// | `unsafe with_file(&File, offset)` | `unsafe` [`file`](MapOptions::file)`(&fd, offset)`; unsafe for the same reason (another process may change or truncate the file under safe slices) |
/// | `MmapFlags::SHARED`, `COPY_ON_WRITE` | [`MapFlags::SHARED`]; private (copy-on-write for files) is the default |
/// | `MmapFlags::POPULATE`, `NO_RESERVE`, `LOCKED`, `STACK`, `NO_CORE_DUMP` | `POPULATE`, `NORESERVE`, `LOCKED`, `STACK`, `DONTDUMP`, plus `DONTFORK` |
/// | `MmapFlags::HUGE_PAGES` + `with_page_size(PageSize)` | [`MapFlags::HUGE`] + [`page_shift`](MapOptions::page_shift) (fails with `ENOMEM` at create time if the pool cannot back it, never `SIGBUS` later), or `HUGE_TRY`, which falls back to transparent then base pages |
/// | `MmapFlags::TRANSPARENT_HUGE_PAGES` | part of `HUGE_TRY` (and [`Advice::HugePage`]) |
/// | protection chosen by the constructor: `map()` read-only, `map_mut()`, `map_exec()`, `map_none()`, and `reserve*()` for address space only | [`prot`](MapOptions::prot) then `map()`, or [`reserve`](MapOptions::reserve): one type whose protection changes at run time, with [`Map::commit`]/[`Map::decommit`] on sub-ranges (mmap-rs has no decommit) |
/// | W^X in the types: `make_exec` consumes an `MmapMut`; RWX only with `UnsafeMmapFlags::JIT` and `unsafe map_exec_mut()` | W^X checked at run time: `WRITE | EXEC` at once is `EPERM` unless [`MapFlags::JIT`] (executing the bytes still needs `unsafe`) |
/// | `split_off`, `merge`, `lock`, `unlock`, `flush`, `flush_async`, `flush_icache` | [`Map::split`], [`Map::merge`], [`Map::lock`], [`Map::unlock`], [`Map::flush`], [`Map::flush_icache`], plus [`Map::advise`] (madvise set) |
/// | errors: `mmap_rs::Error` (an enum wrapping the OS error) | [`Error`]: the errno and the C function |
#[derive(Clone, Copy, Debug)]
pub struct MapOptions {
    opts: ffi::ma_map_opts,
}

impl MapOptions {
    /// A private anonymous read-write map of `len` bytes.
    pub fn new(len: usize) -> Self {
        MapOptions {
            opts: ffi::ma_map_opts {
                len,
                prot: ffi::MA_PROT_READ | ffi::MA_PROT_WRITE,
                flags: 0,
                hint: ptr::null_mut(),
                align: 0,
                fd: -1,
                offset: 0,
                page_shift: 0,
            },
        }
    }
    /// The protection (default `READ | WRITE`).
    pub fn prot(mut self, prot: Prot) -> Self {
        self.opts.prot = prot.bits();
        self
    }
    /// `MA_MAP_*` flags.
    pub fn flags(mut self, flags: MapFlags) -> Self {
        self.opts.flags = flags.bits();
        self
    }
    /// A preferred address (exactly this one with [`MapFlags::STRICT_HINT`]).
    pub fn hint(mut self, addr: *mut u8) -> Self {
        self.opts.hint = addr as *mut c_void;
        self
    }
    /// The start is a multiple of `align` (a power of two, at least the page size).
    pub fn align(mut self, align: usize) -> Self {
        self.opts.align = align;
        self
    }
    /// With [`MapFlags::HUGE`]: log2 of the huge page size (21 = 2 MiB, 30 = 1 GiB).
    pub fn page_shift(mut self, shift: u32) -> Self {
        self.opts.page_shift = shift;
        self
    }
    /// Maps `fd` from `offset` (page aligned) instead of anonymous memory. The map does not
    /// own the descriptor (the kernel keeps its own reference).
    ///
    /// # Safety
    /// The bytes of a file map can be changed, or the file truncated (accesses then raise
    /// `SIGBUS`), by other processes or other descriptors while safe slices of the map exist.
    /// The caller guarantees that does not happen for as long as it uses the map's slices.
    pub unsafe fn file<F: AsRawFd>(mut self, fd: &F, offset: u64) -> Self {
        self.opts.fd = fd.as_raw_fd();
        self.opts.offset = offset;
        self
    }

    /// Makes the map. Errors (`Error::errno`): `EINVAL` (zero or overflowing length, bad
    /// alignment or flags), `EPERM` (`WRITE | EXEC` without `JIT`), `EEXIST` (strict hint
    /// taken), `ENOMEM`, `ENOTSUP` (no such huge page size), the file's `EBADF`/`EACCES`.
    pub fn map(&self) -> Result<Map> {
        let mut m = ffi::ma_map {
            addr: ptr::null_mut(),
            len: 0,
            prot: 0,
            flags: 0,
            fd: -1,
            offset: 0,
            page_shift: 0,
        };
        // SAFETY: valid option and out pointers.
        check("ma_map_create", unsafe {
            ffi::ma_map_create(&self.opts, &mut m)
        })?;
        Ok(Map {
            uniform: m.flags & ffi::MA_MAP_RESERVE == 0,
            m,
        })
    }

    /// Reserves the address space only (inaccessible, nothing committed): [`Map::commit`]
    /// makes sub-ranges usable with the chosen protection.
    pub fn reserve(&self) -> Result<Map> {
        let mut o = *self;
        o.opts.flags |= ffi::MA_MAP_RESERVE;
        o.map()
    }
}

/// A page map (`ma_map`): anonymous or file memory, or reserved address space whose
/// sub-ranges are committed and decommitted. Unmapped on drop.
///
/// ```
/// use mapalloc::{MapOptions, Prot};
/// let mut m = MapOptions::new(1 << 20).reserve().unwrap();
/// let page = mapalloc::page_size();
/// m.commit(0, 4 * page).unwrap();
/// // SAFETY: the first four pages are committed read-write.
/// unsafe { m.as_mut_ptr().write(7) };
/// m.decommit(0, 4 * page).unwrap(); // memory back to the OS, the range faults again
/// assert_eq!(m.protect(Prot::READ | Prot::WRITE | Prot::EXEC).unwrap_err().errno(), 1); // EPERM
/// ```
///
/// Safe slices ([`as_slice`](Map::as_slice), [`as_mut_slice`](Map::as_mut_slice)) are given
/// only while every page of the map is accessible with the map's protection: after
/// `map()` without `RESERVE`, or once `commit` covered the whole map, until a `decommit` or
/// `protect_range`. Otherwise use the raw pointer on ranges you know to be committed.
pub struct Map {
    m: ffi::ma_map,
    /// Every page is accessible with m.prot.
    uniform: bool,
}

// SAFETY: the map owns its memory like a Vec<u8>; the page layer is thread-safe.
unsafe impl Send for Map {}
// SAFETY: shared references only read (as_slice) or query.
unsafe impl Sync for Map {}

impl Map {
    /// A private anonymous read-write map of at least `len` bytes.
    pub fn anon(len: usize) -> Result<Map> {
        MapOptions::new(len).map()
    }

    /// The first byte.
    pub fn as_ptr(&self) -> *const u8 {
        self.m.addr as *const u8
    }
    /// The first byte, for writing.
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.m.addr as *mut u8
    }
    /// The length mapped (the request rounded up to the page size).
    pub fn len(&self) -> usize {
        self.m.len
    }
    /// Whether the map is empty (never, for a map that was created).
    pub fn is_empty(&self) -> bool {
        self.m.len == 0
    }
    /// The protection of the map.
    pub fn prot(&self) -> Prot {
        Prot::from_bits(self.m.prot)
    }
    /// The flags in effect (`HUGE_TRY` becomes `HUGE` when explicit huge pages were given).
    pub fn flags(&self) -> MapFlags {
        MapFlags::from_bits(self.m.flags)
    }

    /// The whole map as bytes, when every page is readable (see the type's notes).
    pub fn as_slice(&self) -> Option<&[u8]> {
        if self.uniform && self.prot().contains(Prot::READ) {
            // SAFETY: every page is mapped and readable; changes need &mut self.
            Some(unsafe { slice::from_raw_parts(self.as_ptr(), self.m.len) })
        } else {
            None
        }
    }

    /// The whole map as mutable bytes, when every page is readable and writable.
    pub fn as_mut_slice(&mut self) -> Option<&mut [u8]> {
        if self.uniform && self.prot().contains(Prot::READ_WRITE) {
            // SAFETY: every page is mapped read-write and borrowed exclusively.
            Some(unsafe { slice::from_raw_parts_mut(self.as_mut_ptr(), self.m.len) })
        } else {
            None
        }
    }

    /// Makes `[off, off+len)` accessible with the map's protection (contents kept if it was
    /// committed). Errors: `EINVAL` (range not page aligned or outside), `ENOMEM`.
    pub fn commit(&mut self, off: usize, len: usize) -> Result<()> {
        // SAFETY: self.m is a live map.
        check("ma_map_commit", unsafe {
            ffi::ma_map_commit(&mut self.m, off, len)
        })?;
        if off == 0 && len == self.m.len {
            self.uniform = true;
        }
        Ok(())
    }

    /// Returns the memory of `[off, off+len)` to the system and makes it inaccessible again
    /// (anonymous private memory reads as zeros after the next commit).
    pub fn decommit(&mut self, off: usize, len: usize) -> Result<()> {
        // SAFETY: self.m is a live map; no slice borrows it (&mut self).
        check("ma_map_decommit", unsafe {
            ffi::ma_map_decommit(&mut self.m, off, len)
        })?;
        self.uniform = false;
        Ok(())
    }

    /// Changes the protection of the whole map. W^X: `WRITE | EXEC` is `EPERM` unless the map
    /// was made with [`MapFlags::JIT`].
    pub fn protect(&mut self, prot: Prot) -> Result<()> {
        // SAFETY: live map, exclusively borrowed.
        check("ma_map_protect", unsafe {
            ffi::ma_map_protect(&mut self.m, prot.bits())
        })
    }

    /// Changes the protection of `[off, off+len)` only ([`prot`](Map::prot) is unchanged).
    pub fn protect_range(&mut self, off: usize, len: usize, prot: Prot) -> Result<()> {
        // SAFETY: live map, exclusively borrowed.
        check("ma_map_protect_range", unsafe {
            ffi::ma_map_protect_range(&mut self.m, off, len, prot.bits())
        })?;
        self.uniform = false;
        Ok(())
    }

    /// Locks `[off, off+len)` in physical memory (`ENOMEM`/`EPERM` past `RLIMIT_MEMLOCK`).
    pub fn lock(&mut self, off: usize, len: usize) -> Result<()> {
        // SAFETY: live map.
        check("ma_map_lock", unsafe {
            ffi::ma_map_lock(&mut self.m, off, len)
        })
    }

    /// Unlocks `[off, off+len)`.
    pub fn unlock(&mut self, off: usize, len: usize) -> Result<()> {
        // SAFETY: live map.
        check("ma_map_unlock", unsafe {
            ffi::ma_map_unlock(&mut self.m, off, len)
        })
    }

    /// Writes a file map's dirty pages back (`msync`; `async` for `MS_ASYNC`).
    pub fn flush(&mut self, off: usize, len: usize, is_async: bool) -> Result<()> {
        // SAFETY: live map.
        check("ma_map_flush", unsafe {
            ffi::ma_map_flush(&mut self.m, off, len, is_async)
        })
    }

    /// Makes instruction fetches see bytes written to `[off, off+len)` (a no-op on x86-64).
    pub fn flush_icache(&mut self, off: usize, len: usize) {
        let len = len.min(self.m.len.saturating_sub(off));
        // SAFETY: the range lies inside the map.
        unsafe { ffi::ma_flush_icache((self.m.addr as *mut u8).wrapping_add(off) as _, len) };
    }

    /// Gives the kernel advice on `[off, off+len)`.
    pub fn advise(&mut self, off: usize, len: usize, advice: Advice) -> Result<()> {
        // SAFETY: live map, exclusively borrowed (DontNeed may zero pages under no slice).
        check("ma_map_advise", unsafe {
            ffi::ma_map_advise(&mut self.m, off, len, advice as i32)
        })
    }

    /// Splits the map at `off`: `self` keeps `[0, off)`, the returned map owns the rest.
    pub fn split(&mut self, off: usize) -> Result<Map> {
        let mut tail = ffi::ma_map { ..self.m };
        // SAFETY: live map; tail is a distinct out descriptor.
        check("ma_map_split", unsafe {
            ffi::ma_map_split(&mut self.m, off, &mut tail)
        })?;
        Ok(Map {
            m: tail,
            uniform: self.uniform,
        })
    }

    /// Joins `next` (which must start where `self` ends, with the same protection, flags and
    /// backing) onto `self`. On error `next` is given back.
    pub fn merge(&mut self, mut next: Map) -> std::result::Result<(), (Map, Error)> {
        // SAFETY: two live, distinct maps.
        let rc = unsafe { ffi::ma_map_merge(&mut self.m, &mut next.m) };
        if rc != 0 {
            return Err((next, Error::new("ma_map_merge", -rc)));
        }
        self.uniform &= next.uniform;
        std::mem::forget(next); // cleared by ma_map_merge: nothing left to unmap
        Ok(())
    }
}

impl Drop for Map {
    fn drop(&mut self) {
        if !self.m.addr.is_null() {
            // SAFETY: we own the map; nothing borrows it any more.
            let rc = unsafe { ffi::ma_map_destroy(&mut self.m) };
            debug_assert_eq!(rc, 0, "ma_map_destroy failed");
        }
    }
}

impl fmt::Debug for Map {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Map")
            .field("addr", &self.m.addr)
            .field("len", &self.m.len)
            .field("prot", &self.prot())
            .field("flags", &self.flags())
            .finish()
    }
}
