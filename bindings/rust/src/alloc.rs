//! `MapAlloc`: the global allocator over mapalloc's heap.

use std::alloc::{GlobalAlloc, Layout};
use std::os::raw::c_void;
use std::ptr;

use crate::ffi;

/// Every block of the heap is at least this aligned (`ma_malloc` guarantees 16 bytes).
const MIN_ALIGN: usize = 16;

/// A [`GlobalAlloc`] over mapalloc's heap (`ma_malloc` and family, `include/mapalloc/heap.h`).
///
/// ```
/// #[global_allocator]
/// static GLOBAL: mapalloc::MapAlloc = mapalloc::MapAlloc;
/// ```
///
/// - `alloc`: `ma_malloc` for alignments up to 16 bytes (every heap block has them), else
///   `ma_aligned_alloc` (any power of two);
/// - `alloc_zeroed`: `ma_calloc` (pages fresh from the OS are not cleared again), or an
///   aligned block cleared here;
/// - `dealloc`: `ma_free_sized` with the layout's size for blocks from `ma_malloc`: in a
///   secure build of the library (`-DMAPALLOC_SECURE=ON`) a size the block cannot have aborts
///   with "free_sized with a wrong size", catching a mismatched `Layout`; the default build
///   frees it as `ma_free` does. Over-aligned blocks go to `ma_free`, as the C API requires;
/// - `realloc`: `ma_realloc` (large blocks grow in place or move with `mremap`, no copy);
///   an over-aligned block stays in place when its usable size already fits, else moves to a
///   new aligned block.
///
/// Allocation failure returns null, as `GlobalAlloc` requires (the standard library then
/// calls `handle_alloc_error`). Thread-safe: each thread allocates from its own heap without
/// locks, and any thread may free any block.
#[derive(Clone, Copy, Debug, Default)]
pub struct MapAlloc;

unsafe impl GlobalAlloc for MapAlloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= MIN_ALIGN {
            ffi::ma_malloc(layout.size()) as *mut u8
        } else {
            ffi::ma_aligned_alloc(layout.align(), layout.size()) as *mut u8
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= MIN_ALIGN {
            ffi::ma_calloc(1, layout.size()) as *mut u8
        } else {
            let p = ffi::ma_aligned_alloc(layout.align(), layout.size()) as *mut u8;
            if !p.is_null() {
                ptr::write_bytes(p, 0, layout.size());
            }
            p
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if layout.align() <= MIN_ALIGN {
            ffi::ma_free_sized(ptr as *mut c_void, layout.size());
        } else {
            ffi::ma_free(ptr as *mut c_void);
        }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if layout.align() <= MIN_ALIGN {
            return ffi::ma_realloc(ptr as *mut c_void, new_size) as *mut u8;
        }
        if new_size <= ffi::ma_usable_size(ptr as *const c_void) {
            return ptr; // the slack of an aligned block is writable and stays aligned
        }
        // SAFETY: the caller guarantees new_size, rounded up to align, does not overflow.
        let new_layout = Layout::from_size_align_unchecked(new_size, layout.align());
        let new = self.alloc(new_layout);
        if !new.is_null() {
            ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
            ffi::ma_free(ptr as *mut c_void);
        }
        new
    }
}
