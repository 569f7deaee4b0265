//! Object pools: the untyped `RawPool` over `ma_pool`, and the typed `Pool<T>` with its
//! owning handle `PoolBox`.

use std::alloc::{handle_alloc_error, Layout};
use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::mem;
use std::ops::{Deref, DerefMut};
use std::os::raw::c_void;
use std::ptr::{self, NonNull};

use crate::map::MapFlags;
use crate::{check, errno, ffi, Error, Result};

/// Options of a pool (`ma_pool_opts`). Start from [`PoolOptions::new`] and chain setters.
#[derive(Clone, Copy, Debug, Default)]
pub struct PoolOptions {
    opts: ffi::ma_pool_opts,
}

impl PoolOptions {
    /// Objects of `obj_size` bytes (1 .. 1 GiB) with the natural alignment (16 when the size is
    /// a multiple of 16, else the largest power of two dividing it, at least 8).
    pub fn new(obj_size: usize) -> Self {
        PoolOptions {
            opts: ffi::ma_pool_opts {
                obj_size,
                ..Default::default()
            },
        }
    }
    /// The options for objects of type `T` (size and alignment of `T`; a zero-sized `T` takes
    /// one byte).
    pub fn for_type<T>() -> Self {
        PoolOptions::new(mem::size_of::<T>().max(1)).align(mem::align_of::<T>())
    }
    /// Object alignment: a power of two up to 4 MiB (0 = natural).
    pub fn align(mut self, align: usize) -> Self {
        self.opts.align = align;
        self
    }
    /// Every object is returned zeroed.
    pub fn zero(mut self, zero: bool) -> Self {
        self.opts.zero = zero;
        self
    }
    /// Objects come from populated pages (no page fault on first touch).
    pub fn commit(mut self, commit: bool) -> Self {
        self.opts.commit = commit;
        self
    }
    /// The committed footprint never exceeds `max_bytes` (0 = unlimited): past it,
    /// allocation fails with `ENOMEM`.
    pub fn max_bytes(mut self, max_bytes: usize) -> Self {
        self.opts.max_bytes = max_bytes;
        self
    }
    /// Flags for the pool's pages: [`MapFlags::HUGE_TRY`], `LOCKED`, `DONTDUMP`, `DONTFORK`,
    /// `NORESERVE`, `POPULATE`.
    pub fn map_flags(mut self, flags: MapFlags) -> Self {
        self.opts.map_flags = flags.bits();
        self
    }
    /// The object size asked for.
    pub fn obj_size(&self) -> usize {
        self.opts.obj_size
    }
}

/// Counters of a pool (`ma_pool_stats`), summed over threads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Object size, as created.
    pub obj_size: usize,
    /// Objects allocated and not freed.
    pub live: usize,
    /// Objects the active slabs can hold.
    pub capacity: usize,
    /// Memory made accessible (a bound on resident memory).
    pub committed_bytes: usize,
    /// Address space reserved.
    pub reserved_bytes: usize,
    /// Successful allocations since creation.
    pub allocs: usize,
    /// Frees since creation.
    pub frees: usize,
}

/// An untyped pool of fixed-size objects (`ma_pool`). Thread-safe: allocation and free on
/// the same thread take no lock; a free from another thread is one atomic push. Dropping the
/// pool releases every slab, live objects included (`ma_pool_destroy`).
pub struct RawPool {
    pool: NonNull<ffi::ma_pool>,
    obj_size: usize,
}

// SAFETY: every ma_pool_* function is thread-safe, and objects may be freed from any thread.
unsafe impl Send for RawPool {}
// SAFETY: as above.
unsafe impl Sync for RawPool {}

impl RawPool {
    /// Creates a pool. Errors: `EINVAL` (size 0 or above 1 GiB, alignment not a power of two
    /// or above 4 MiB, flags outside the list), `ENOMEM`.
    pub fn new(opts: &PoolOptions) -> Result<Self> {
        let mut p = ptr::null_mut();
        // SAFETY: valid pointers to the options and the out parameter.
        check("ma_pool_create", unsafe {
            ffi::ma_pool_create(&opts.opts, &mut p)
        })?;
        Ok(RawPool {
            pool: NonNull::new(p).expect("ma_pool_create returned 0 and no pool"),
            obj_size: opts.opts.obj_size,
        })
    }

    /// An object of `obj_size` bytes (uninitialised unless the pool zeroes). Errors: `ENOMEM`
    /// (the system, or the pool's `max_bytes`).
    #[inline]
    pub fn alloc(&self) -> Result<NonNull<u8>> {
        // SAFETY: self.pool is a live pool.
        let p = unsafe { ffi::ma_pool_alloc(self.pool.as_ptr()) } as *mut u8;
        NonNull::new(p).ok_or_else(|| {
            let e = io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(errno::ENOMEM);
            Error::new("ma_pool_alloc", e)
        })
    }

    /// Returns an object to the pool.
    ///
    /// # Safety
    /// `obj` must come from [`alloc`](RawPool::alloc) of this pool and not have been freed
    /// (a double free or a foreign pointer aborts the process), and nothing may use it
    /// afterwards.
    #[inline]
    pub unsafe fn free(&self, obj: NonNull<u8>) {
        ffi::ma_pool_free(self.pool.as_ptr(), obj.as_ptr() as *mut c_void);
    }

    /// Gives empty slabs back to the OS now.
    pub fn trim(&self) -> Result<()> {
        // SAFETY: self.pool is a live pool.
        check("ma_pool_trim", unsafe {
            ffi::ma_pool_trim(self.pool.as_ptr())
        })
    }

    /// The pool's counters.
    pub fn stats(&self) -> PoolStats {
        let mut s = ffi::ma_pool_stats::default();
        // SAFETY: live pool, valid out pointer.
        unsafe { ffi::ma_pool_stats_get(self.pool.as_ptr(), &mut s) };
        PoolStats {
            obj_size: s.obj_size,
            live: s.live,
            capacity: s.capacity,
            committed_bytes: s.committed_bytes,
            reserved_bytes: s.reserved_bytes,
            allocs: s.allocs,
            frees: s.frees,
        }
    }

    /// The object size.
    pub fn obj_size(&self) -> usize {
        self.obj_size
    }

    /// The C pool, for calls this crate does not wrap. It stays owned by `self`.
    pub fn as_ptr(&self) -> *mut ffi::ma_pool {
        self.pool.as_ptr()
    }
}

impl Drop for RawPool {
    fn drop(&mut self) {
        // SAFETY: we own the pool; every PoolBox borrowing it is gone.
        unsafe { ffi::ma_pool_destroy(self.pool.as_ptr()) };
    }
}

impl fmt::Debug for RawPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawPool")
            .field("obj_size", &self.obj_size)
            .field("stats", &self.stats())
            .finish()
    }
}

/// A typed pool of `T` (one `ma_pool` with `T`'s size and alignment). `Send + Sync`: any
/// thread may allocate, and a [`PoolBox`] may be dropped on any thread.
///
/// ```
/// let pool = mapalloc::Pool::new().unwrap();
/// let mut conn = pool.alloc(String::from("request"));
/// conn.push_str(" #1");
/// assert_eq!(*conn, "request #1");
/// drop(conn); // drops the String, returns the slot to the pool
/// assert_eq!(pool.stats().live, 0);
/// ```
///
/// Boxes borrow the pool, so the pool outlives them; to hand boxes to other threads, use
/// scoped threads (`std::thread::scope`) or a pool in a `static`.
pub struct Pool<T> {
    raw: RawPool,
    _marker: PhantomData<fn() -> T>,
}

impl<T> Pool<T> {
    /// A pool of `T`. Errors: `EINVAL` when `T` is aligned above 4 MiB, `ENOMEM`.
    pub fn new() -> Result<Self> {
        Pool::with_options(PoolOptions::for_type::<T>())
    }

    /// A pool of `T` with extra options (`commit`, `zero`, `max_bytes`, `map_flags`); the
    /// object size and alignment are `T`'s whatever `opts` says.
    pub fn with_options(opts: PoolOptions) -> Result<Self> {
        let t = PoolOptions::for_type::<T>();
        let opts = PoolOptions {
            opts: ffi::ma_pool_opts {
                obj_size: t.opts.obj_size,
                align: t.opts.align,
                ..opts.opts
            },
        };
        Ok(Pool {
            raw: RawPool::new(&opts)?,
            _marker: PhantomData,
        })
    }

    /// Moves `value` into an object of the pool. On failure calls
    /// [`handle_alloc_error`](std::alloc::handle_alloc_error), as `Box::new` does.
    #[inline]
    pub fn alloc(&self, value: T) -> PoolBox<'_, T> {
        match self.try_alloc(value) {
            Ok(b) => b,
            Err(_) => handle_alloc_error(Layout::new::<T>()),
        }
    }

    /// Moves `value` into an object of the pool, or gives it back with the error (`ENOMEM`,
    /// e.g. past `max_bytes`).
    #[inline]
    pub fn try_alloc(&self, value: T) -> std::result::Result<PoolBox<'_, T>, (T, Error)> {
        match self.raw.alloc() {
            Ok(p) => {
                let p = p.cast::<T>();
                // SAFETY: p is a fresh object with T's size and alignment.
                unsafe { p.as_ptr().write(value) };
                Ok(PoolBox {
                    ptr: p,
                    pool: &self.raw,
                    _owns: PhantomData,
                })
            }
            Err(e) => Err((value, e)),
        }
    }

    /// The untyped pool underneath.
    pub fn raw(&self) -> &RawPool {
        &self.raw
    }

    /// The pool's counters.
    pub fn stats(&self) -> PoolStats {
        self.raw.stats()
    }

    /// Gives empty slabs back to the OS now.
    pub fn trim(&self) -> Result<()> {
        self.raw.trim()
    }
}

impl<T> fmt::Debug for Pool<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("type", &std::any::type_name::<T>())
            .field("stats", &self.raw.stats())
            .finish()
    }
}

/// An owning handle to a `T` in a [`Pool`]: dereferences to the value, drops it and returns
/// the object to the pool when dropped (from any thread).
pub struct PoolBox<'p, T> {
    ptr: NonNull<T>,
    pool: &'p RawPool,
    _owns: PhantomData<T>,
}

// SAFETY: the box owns its T like Box<T> does; the pool accepts frees from any thread.
unsafe impl<T: Send> Send for PoolBox<'_, T> {}
// SAFETY: shared access to the box is shared access to T.
unsafe impl<T: Sync> Sync for PoolBox<'_, T> {}

impl<'p, T> PoolBox<'p, T> {
    /// Moves the value out and returns the object to the pool.
    pub fn into_inner(b: Self) -> T {
        let b = mem::ManuallyDrop::new(b);
        // SAFETY: the value is initialised; the object is freed once, here, and b is not
        // dropped.
        unsafe {
            let v = b.ptr.as_ptr().read();
            b.pool.free(b.ptr.cast());
            v
        }
    }

    /// Keeps the value for as long as the pool lives (it is released with the pool, without
    /// running its destructor).
    pub fn leak(b: Self) -> &'p mut T {
        let b = mem::ManuallyDrop::new(b);
        // SAFETY: the object stays allocated until the pool (borrowed for 'p) is destroyed.
        unsafe { &mut *b.ptr.as_ptr() }
    }

    /// The address of the value.
    pub fn as_ptr(b: &Self) -> *const T {
        b.ptr.as_ptr()
    }
}

impl<T> Deref for PoolBox<'_, T> {
    type Target = T;
    #[inline]
    fn deref(&self) -> &T {
        // SAFETY: the box owns an initialised T.
        unsafe { self.ptr.as_ref() }
    }
}

impl<T> DerefMut for PoolBox<'_, T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the box owns an initialised T, borrowed mutably through &mut self.
        unsafe { self.ptr.as_mut() }
    }
}

impl<T> Drop for PoolBox<'_, T> {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: the value is initialised and dropped once; the object came from this pool.
        unsafe {
            ptr::drop_in_place(self.ptr.as_ptr());
            self.pool.free(self.ptr.cast());
        }
    }
}

impl<T: fmt::Debug> fmt::Debug for PoolBox<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl<T: fmt::Display> fmt::Display for PoolBox<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&**self, f)
    }
}

impl<T: PartialEq> PartialEq for PoolBox<'_, T> {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl<T> AsRef<T> for PoolBox<'_, T> {
    fn as_ref(&self) -> &T {
        self
    }
}

impl<T> AsMut<T> for PoolBox<'_, T> {
    fn as_mut(&mut self) -> &mut T {
        self
    }
}
