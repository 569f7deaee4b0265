//! `Arena`: a safe wrapper of the mapping arena (`ma_arena`, include/mapalloc/arena.h).

use std::any::Any;
use std::fmt;
use std::ops::ControlFlow;
use std::os::raw::{c_int, c_void};
use std::os::unix::io::{AsFd, AsRawFd};
use std::panic::{self, AssertUnwindSafe};
use std::ptr::{self, NonNull};

use crate::map::MapFlags;
use crate::{check, ffi, Advice, Error, Prot, Result};

/// One mapping of an [`Arena`] (`ma_arena_mapping`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapping {
    /// Offset from the arena base.
    pub off: usize,
    /// Length in bytes.
    pub len: usize,
    /// The mapped file's identity (`st_dev`, `st_ino` of the descriptor given when the
    /// mapping was added; the arena keeps no descriptor number, which could go stale), or
    /// `None` for anonymous memory.
    pub file: Option<(u64, u64)>,
    /// The file offset mapped at `off` (0 for anonymous memory).
    pub fd_off: u64,
    /// The protection in effect.
    pub prot: Prot,
}

impl Mapping {
    fn from_c(m: &ffi::ma_arena_mapping) -> Mapping {
        Mapping {
            off: m.off,
            len: m.len,
            file: if m.anon { None } else { Some((m.dev, m.ino)) },
            fd_off: m.fd_off,
            prot: Prot::from_bits(m.prot),
        }
    }
    /// One past the last byte (`off + len`).
    pub fn end(&self) -> usize {
        self.off + self.len
    }
}

/// A reserved range of address space in which file (memfd) and anonymous mappings are added
/// and removed at page-aligned offsets: guest memory of a virtual machine monitor. A removed
/// range is reserved again (accesses fault), never a hole another `mmap` could take.
///
/// Every method takes `&self` and is thread-safe (the C arena serialises changes with its
/// own lock). Offsets and lengths are page multiples inside the arena, else `EINVAL`.
/// Memory is reached through [`base`](Arena::base) and raw pointers: the arena cannot know
/// which ranges another thread keeps mapped, so it hands out no safe slices (the
/// `vm-memory` feature's [`GuestArena`](crate::guest::GuestArena) does, through
/// `vm-memory`'s checked accessors).
///
/// ```
/// use mapalloc::{Arena, MapFlags, Prot};
/// let page = mapalloc::page_size();
/// let arena = Arena::new(1 << 30, MapFlags::DONTDUMP).unwrap(); // 1 GiB reserved
/// arena.add_anon_mapping(0, 16 * page, Prot::READ_WRITE).unwrap();
/// assert_eq!(arena.add_anon_mapping(page, page, Prot::READ).unwrap_err().errno(), 17); // EEXIST
/// arena.remove_mapping(4 * page, 4 * page).unwrap(); // splits it in two
/// let m: Vec<_> = arena.mappings();
/// assert_eq!((m.len(), m[1].off), (2, 8 * page));
/// ```
pub struct Arena {
    a: NonNull<ffi::ma_arena>,
}

// SAFETY: every ma_arena_* function is thread-safe (an internal mutex); destroy needs
// ownership, which Drop has.
unsafe impl Send for Arena {}
// SAFETY: as above.
unsafe impl Sync for Arena {}

struct Walk<'f> {
    f: &'f mut dyn FnMut(&Mapping) -> ControlFlow<()>,
    panic: Option<Box<dyn Any + Send>>,
}

unsafe extern "C" fn walk_one(m: *const ffi::ma_arena_mapping, ctx: *mut c_void) -> c_int {
    let w = &mut *(ctx as *mut Walk<'_>);
    let m = Mapping::from_c(&*m);
    // A panic must not unwind through the C frames: caught here, resumed after foreach.
    match panic::catch_unwind(AssertUnwindSafe(|| (w.f)(&m))) {
        Ok(ControlFlow::Continue(())) => 0,
        Ok(ControlFlow::Break(())) => 1,
        Err(p) => {
            w.panic = Some(p);
            1
        }
    }
}

impl Arena {
    /// Reserves `len` bytes (a page multiple; nothing is committed, so 1 TiB is fine).
    /// `flags` apply to every mapping added later: `DONTDUMP`, `DONTFORK`, `HUGE_TRY`,
    /// `LOCKED`. Errors: `EINVAL`, `ENOMEM`.
    pub fn new(len: usize, flags: MapFlags) -> Result<Arena> {
        let mut a = ptr::null_mut();
        // SAFETY: valid out pointer.
        check("ma_arena_create", unsafe {
            ffi::ma_arena_create(len, flags.bits(), &mut a)
        })?;
        Ok(Arena {
            a: NonNull::new(a).expect("ma_arena_create returned 0 and no arena"),
        })
    }

    /// The first byte of the arena (aligned to 1 GiB for arenas of 1 GiB or more, else to
    /// 2 MiB from 2 MiB up).
    pub fn base(&self) -> *mut u8 {
        // SAFETY: live arena.
        unsafe { ffi::ma_arena_base(self.a.as_ptr()) as *mut u8 }
    }

    /// The arena's length in bytes.
    pub fn len(&self) -> usize {
        // SAFETY: live arena.
        unsafe { ffi::ma_arena_len(self.a.as_ptr()) }
    }

    /// Whether the arena is empty (never, for an arena that was created).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Maps `[fd_off, fd_off+len)` of `fd` shared at `[off, off+len)`. The arena keeps no
    /// descriptor (the kernel's mapping holds the file): `fd` may be closed afterwards.
    /// Errors: `EINVAL`, `EPERM` (RWX, or WRITE on a write-sealed memfd), `EBADF`, `EEXIST`
    /// (a page of the range is already mapped), `EACCES`, `ENODEV`, `ENOMEM`.
    pub fn add_fd_mapping<F: AsFd>(
        &self,
        off: usize,
        len: usize,
        fd: &F,
        fd_off: u64,
        prot: Prot,
    ) -> Result<()> {
        let fd = fd.as_fd().as_raw_fd();
        // SAFETY: live arena; the descriptor is open for the duration of the call.
        check("ma_arena_add_fd_mapping", unsafe {
            ffi::ma_arena_add_fd_mapping(self.a.as_ptr(), off, len, fd, fd_off, prot.bits())
        })
    }

    /// Maps private anonymous zero-filled memory at `[off, off+len)`. Errors: `EINVAL`,
    /// `EPERM` (RWX), `EEXIST`, `ENOMEM`.
    pub fn add_anon_mapping(&self, off: usize, len: usize, prot: Prot) -> Result<()> {
        // SAFETY: live arena.
        check("ma_arena_add_anon_mapping", unsafe {
            ffi::ma_arena_add_anon_mapping(self.a.as_ptr(), off, len, prot.bits())
        })
    }

    /// Puts `[off, off+len)` back to reserved (accesses fault), splitting mappings only
    /// partly covered. Errors: `EINVAL`, `ENOENT` (nothing mapped there), `ENOMEM`.
    pub fn remove_mapping(&self, off: usize, len: usize) -> Result<()> {
        // SAFETY: live arena.
        check("ma_arena_remove_mapping", unsafe {
            ffi::ma_arena_remove_mapping(self.a.as_ptr(), off, len)
        })
    }

    /// Changes the protection of `[off, off+len)`, which must be entirely mapped. Errors:
    /// `EINVAL`, `EPERM` (RWX), `EACCES`, `ENOENT`, `ENOMEM`.
    pub fn protect(&self, off: usize, len: usize, prot: Prot) -> Result<()> {
        // SAFETY: live arena.
        check("ma_arena_protect", unsafe {
            ffi::ma_arena_protect(self.a.as_ptr(), off, len, prot.bits())
        })
    }

    /// Advice on `[off, off+len)`, which must be entirely mapped; [`Advice::Remove`] frees a
    /// memfd's pages (ballooning). Errors: `EINVAL`, `EACCES`, `ENOENT`, `EPERM`, `ENOMEM`.
    pub fn advise(&self, off: usize, len: usize, advice: Advice) -> Result<()> {
        // SAFETY: live arena.
        check("ma_arena_advise", unsafe {
            ffi::ma_arena_advise(self.a.as_ptr(), off, len, advice as i32)
        })
    }

    /// Writes dirty file pages of `[off, off+len)` back (`msync`).
    pub fn flush(&self, off: usize, len: usize, is_async: bool) -> Result<()> {
        // SAFETY: live arena.
        check("ma_arena_flush", unsafe {
            ffi::ma_arena_flush(self.a.as_ptr(), off, len, is_async)
        })
    }

    /// The mapping containing byte `off`. Errors: `EINVAL` (outside the arena), `ENOENT`.
    pub fn find(&self, off: usize) -> Result<Mapping> {
        let mut m = ffi::ma_arena_mapping::default();
        // SAFETY: live arena, valid out pointer.
        check("ma_arena_find", unsafe {
            ffi::ma_arena_find(self.a.as_ptr(), off, &mut m)
        })?;
        Ok(Mapping::from_c(&m))
    }

    /// The number of mappings (a split mapping counts as its pieces).
    pub fn count(&self) -> usize {
        // SAFETY: live arena.
        unsafe { ffi::ma_arena_count(self.a.as_ptr()) }
    }

    /// Calls `f` for every mapping in offset order until it returns `ControlFlow::Break`.
    /// `f` runs with the arena's lock held: calls that change this arena from inside it
    /// fail with `EDEADLK`. A panic in `f` stops the walk and is resumed after it.
    pub fn for_each<F: FnMut(&Mapping) -> ControlFlow<()>>(&self, mut f: F) -> Result<()> {
        let mut w = Walk {
            f: &mut f,
            panic: None,
        };
        // SAFETY: live arena; w outlives the call and walk_one only uses it during it.
        let rc = unsafe {
            ffi::ma_arena_foreach(
                self.a.as_ptr(),
                walk_one,
                &mut w as *mut Walk<'_> as *mut c_void,
            )
        };
        if let Some(p) = w.panic.take() {
            panic::resume_unwind(p);
        }
        if rc < 0 {
            return Err(Error::new("ma_arena_foreach", -rc));
        }
        Ok(())
    }

    /// A snapshot of every mapping, in offset order.
    pub fn mappings(&self) -> Vec<Mapping> {
        let mut v = Vec::with_capacity(self.count());
        self.for_each(|m| {
            v.push(*m);
            ControlFlow::Continue(())
        })
        .expect("ma_arena_foreach on a live arena");
        v
    }

    /// The C arena, for calls this crate does not wrap. It stays owned by `self`.
    pub fn as_ptr(&self) -> *mut ffi::ma_arena {
        self.a.as_ptr()
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        // SAFETY: we own the arena and no other reference to it exists.
        unsafe { ffi::ma_arena_destroy(self.a.as_ptr()) };
    }
}

impl fmt::Debug for Arena {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Arena")
            .field("base", &self.base())
            .field("len", &self.len())
            .field("mappings", &self.mappings())
            .finish()
    }
}
