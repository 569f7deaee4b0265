//! Rust bindings of **mapalloc**, a memory allocator library for Linux x86-64.
//!
//! - [`MapAlloc`]: a [`GlobalAlloc`](std::alloc::GlobalAlloc) over mapalloc's heap, usable as
//!   `#[global_allocator]`;
//! - [`Pool<T>`]: a typed, `Send + Sync` object pool handing out owning [`PoolBox`]es, over
//!   the untyped [`RawPool`];
//! - [`Map`]: a page map (reserve, commit, decommit, protect with W^X);
//! - [`Arena`]: a reserved range of address space with file and anonymous mappings
//!   (guest memory of a virtual machine monitor);
//! - with the cargo feature `vm-memory`: [`guest::GuestArena`], whose mappings are rust-vmm
//!   `vm-memory` regions, so code written against `GuestMemory` reads and writes guest
//!   memory that lives in a mapalloc arena.
//!
//! Every fallible call returns [`Result`], whose [`Error`] carries the errno the C library
//! returned and the name of the C function.
//!
//! ```
//! use mapalloc::{MapAlloc, Pool};
//!
//! #[global_allocator]
//! static GLOBAL: MapAlloc = MapAlloc;
//!
//! let pool = Pool::<[u64; 4]>::new().unwrap();
//! let b = pool.alloc([1, 2, 3, 4]);
//! assert_eq!(b[3], 4);
//! ```

use std::fmt;
use std::io;
use std::ops::{BitOr, BitOrAssign};
use std::os::raw::{c_int, c_uint};

mod alloc;
mod arena;
#[doc(hidden)]
pub mod ffi;
#[cfg(feature = "vm-memory")]
pub mod guest;
mod map;
mod pool;

pub use crate::alloc::MapAlloc;
pub use crate::arena::{Arena, Mapping};
pub use crate::map::{Map, MapFlags, MapOptions};
pub use crate::pool::{Pool, PoolBox, PoolOptions, PoolStats, RawPool};

/// An error of the C library: the errno it returned and the function that returned it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Error {
    op: &'static str,
    errno: i32,
}

impl Error {
    /// An error `errno` (positive, e.g. `libc`'s `EINVAL` = 22) reported by function `op`.
    pub fn new(op: &'static str, errno: i32) -> Self {
        Error { op, errno }
    }

    /// The positive errno value (`EINVAL`, `ENOMEM`, `EEXIST`, `EPERM`, ...).
    pub fn errno(&self) -> i32 {
        self.errno
    }

    /// The C function that failed, e.g. `"ma_arena_add_fd_mapping"`.
    pub fn op(&self) -> &'static str {
        self.op
    }

    /// The standard library's classification of the errno.
    pub fn kind(&self) -> io::ErrorKind {
        io::Error::from_raw_os_error(self.errno).kind()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {}",
            self.op,
            io::Error::from_raw_os_error(self.errno)
        )
    }
}

impl std::error::Error for Error {}

impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        io::Error::from_raw_os_error(e.errno)
    }
}

/// `Result` with the crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// Turns a C return code (0 or a negative errno) into a `Result`.
pub(crate) fn check(op: &'static str, rc: c_int) -> Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(Error::new(op, -rc))
    }
}

/// Errno values the bindings produce themselves (the same numbers as Linux's).
#[allow(dead_code)] // some are used only with the vm-memory feature
pub(crate) mod errno {
    pub const EINVAL: i32 = 22;
    pub const ENOMEM: i32 = 12;
    pub const EBUSY: i32 = 16;
    pub const ENOENT: i32 = 2;
}

/// Memory protection: `READ`, `WRITE`, `EXEC` or `NONE`, combined with `|`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Prot(c_uint);

impl Prot {
    /// Inaccessible: any access faults.
    pub const NONE: Prot = Prot(ffi::MA_PROT_NONE);
    /// Readable.
    pub const READ: Prot = Prot(ffi::MA_PROT_READ);
    /// Writable.
    pub const WRITE: Prot = Prot(ffi::MA_PROT_WRITE);
    /// Executable.
    pub const EXEC: Prot = Prot(ffi::MA_PROT_EXEC);
    /// `READ | WRITE`, the usual data protection.
    pub const READ_WRITE: Prot = Prot(ffi::MA_PROT_READ | ffi::MA_PROT_WRITE);

    /// The `MA_PROT_*` bits.
    pub fn bits(self) -> u32 {
        self.0
    }
    /// From `MA_PROT_*` bits (unknown bits are kept, and refused by the C library).
    pub fn from_bits(bits: u32) -> Prot {
        Prot(bits)
    }
    /// Whether every bit of `other` is set in `self`.
    pub fn contains(self, other: Prot) -> bool {
        self.0 & other.0 == other.0
    }
}

impl BitOr for Prot {
    type Output = Prot;
    fn bitor(self, rhs: Prot) -> Prot {
        Prot(self.0 | rhs.0)
    }
}

impl BitOrAssign for Prot {
    fn bitor_assign(&mut self, rhs: Prot) {
        self.0 |= rhs.0;
    }
}

impl fmt::Debug for Prot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = if self.contains(Prot::READ) { 'r' } else { '-' };
        let w = if self.contains(Prot::WRITE) { 'w' } else { '-' };
        let x = if self.contains(Prot::EXEC) { 'x' } else { '-' };
        write!(f, "Prot({}{}{})", r, w, x)
    }
}

/// Advice for [`Map::advise`] and [`Arena::advise`] (`enum ma_advice`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum Advice {
    /// Prefetch.
    WillNeed = 0,
    /// Drop now; private anonymous pages read as zero afterwards.
    DontNeed = 1,
    /// Free lazily when memory is short; contents undefined until written.
    Free = 2,
    /// Free the backing store (memfd, shared memory, tmpfs): the range reads as zeros.
    Remove = 3,
    /// Back with transparent huge pages.
    HugePage = 4,
    /// Never back with transparent huge pages.
    NoHugePage = 5,
    /// Exclude from core dumps.
    DontDump = 6,
    /// Include in core dumps again.
    DoDump = 7,
    /// Not inherited by `fork()` children.
    DontFork = 8,
    /// Inherited again.
    DoFork = 9,
    /// Reclaim now (to swap or file).
    PageOut = 10,
}

/// The base page size in bytes.
pub fn page_size() -> usize {
    // SAFETY: no preconditions.
    unsafe { ffi::ma_page_size() }
}

/// The huge page sizes the system supports (ascending; empty where there are none).
pub fn huge_page_sizes() -> Vec<usize> {
    let mut sizes = [0usize; 8];
    // SAFETY: `sizes` has room for `sizes.len()` entries.
    let n = unsafe { ffi::ma_huge_page_sizes(sizes.as_mut_ptr(), sizes.len()) };
    sizes[..n.min(sizes.len())].to_vec()
}

/// Process-wide statistics of mapalloc's heap (`ma_heap_stats`): what [`MapAlloc`] and the
/// C++ adapters allocate from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HeapStats {
    /// Bytes in live blocks (usable sizes).
    pub allocated: usize,
    /// Bytes of slab pages and large mappings in use.
    pub active: usize,
    /// Bytes that may hold memory (mapped and not purged).
    pub committed: usize,
    /// Address space held.
    pub reserved: usize,
    /// Bytes in large blocks mapped directly from the OS.
    pub mapped_large: usize,
    /// Allocations so far.
    pub allocs: usize,
    /// Frees so far.
    pub frees: usize,
    /// Page ranges returned to the OS.
    pub purges: usize,
}

/// Reads the heap statistics (a consistent snapshot only when no other thread allocates).
pub fn heap_stats() -> HeapStats {
    let mut s = ffi::ma_heap_stats::default();
    // SAFETY: `s` is a valid out pointer.
    unsafe { ffi::ma_heap_stats_get(&mut s) };
    HeapStats {
        allocated: s.allocated,
        active: s.active,
        committed: s.committed,
        reserved: s.reserved,
        mapped_large: s.mapped_large,
        allocs: s.allocs,
        frees: s.frees,
        purges: s.purges,
    }
}

/// Returns unused heap memory to the OS now (`ma_heap_collect`); `force` also releases the
/// calling thread's current empty slabs.
pub fn heap_collect(force: bool) {
    // SAFETY: no preconditions; the call cannot fail in a way the caller can act on.
    unsafe { ffi::ma_heap_collect(force) };
}
