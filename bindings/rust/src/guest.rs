//! Guest memory for rust-vmm (feature `vm-memory`): a mapalloc [`Arena`] whose mappings are
//! `vm-memory` regions.
//!
//! [`GuestArena`] reserves the guest-physical address space as one arena (guest-physical
//! address = offset in the arena) and adds RAM as anonymous or file (memfd) mappings. Each
//! mapping becomes a `GuestRegionMmap` built over the arena's memory
//! (`MmapRegionBuilder::with_raw_mmap_pointer`: the region does not own or unmap it), and
//! [`GuestArena::memory`] returns the standard `GuestMemoryMmap` over those regions, so code
//! written against `vm-memory` (`GuestMemory`, `Bytes::write_obj`, `read_slice`, ...) reads
//! and writes memory that lives in the arena. A file region carries its `FileOffset` (a
//! duplicate of the descriptor), as a vhost-user memory table needs.
//!
//! Soundness: `vm-memory` accesses a region's memory without checks beyond its bounds, so
//! the arena must keep every region mapped read-write while any `GuestMemoryMmap` holds it.
//! Regions are reference-counted (`Arc<GuestRegionMmap>`): [`GuestArena::remove`] refuses
//! (`EBUSY`) a region some `GuestMemoryMmap` still holds, the arena itself is reachable only
//! through `GuestArena`'s methods, and if a `GuestMemoryMmap` outlives its `GuestArena`, the
//! arena is left mapped (leaked) instead of unmapped under it. Ballooning
//! ([`GuestArena::balloon`]) is allowed at any time: freed pages read as zeros.
//!
//! ```
//! use mapalloc::guest::GuestArena;
//! use mapalloc::MapFlags;
//! use vm_memory::{Bytes, GuestAddress, GuestMemory};
//!
//! let mut guest = GuestArena::<()>::new(64 << 20, MapFlags::DONTDUMP).unwrap();
//! guest.add_ram(GuestAddress(0), 4 << 20).unwrap();
//! guest.add_ram(GuestAddress(8 << 20), 4 << 20).unwrap(); // a hole at [4, 8) MiB
//! let mem = guest.memory().unwrap();
//! mem.write_obj(0xfeed_u64, GuestAddress(0x1000)).unwrap();
//! assert_eq!(mem.read_obj::<u64>(GuestAddress(0x1000)).unwrap(), 0xfeed);
//! assert!(mem.write_obj(1u8, GuestAddress(5 << 20)).is_err()); // the hole
//! assert_eq!(mem.num_regions(), 2);
//! ```

use std::fs::File;
use std::mem::ManuallyDrop;
use std::os::unix::io::AsFd;
use std::sync::Arc;

use vm_memory::mmap::{MmapRegionBuilder, NewBitmap};
use vm_memory::{
    Address, FileOffset, GuestAddress, GuestMemoryMmap, GuestMemoryRegion, GuestRegionMmap,
    GuestUsize,
};

use crate::map::MapFlags;
use crate::{errno, Advice, Arena, Error, Mapping, Prot, Result};

/// A guest-physical address space in a mapalloc arena, with RAM regions for `vm-memory`.
/// `B` is the dirty-page bitmap of the regions (`()` for none, or e.g.
/// `vm_memory::bitmap::AtomicBitmap` for live migration).
pub struct GuestArena<B: NewBitmap = ()> {
    arena: ManuallyDrop<Arena>,
    /// Sorted by start address, non-overlapping.
    regions: Vec<Arc<GuestRegionMmap<B>>>,
}

fn vm_err(op: &'static str) -> Error {
    Error::new(op, errno::EINVAL)
}

impl<B: NewBitmap> GuestArena<B> {
    /// Reserves `len` bytes of guest-physical address space (page multiple; nothing
    /// committed). `flags` apply to every region: `DONTDUMP`, `DONTFORK`, `HUGE_TRY`,
    /// `LOCKED`.
    pub fn new(len: usize, flags: MapFlags) -> Result<Self> {
        Ok(GuestArena {
            arena: ManuallyDrop::new(Arena::new(len, flags)?),
            regions: Vec::new(),
        })
    }

    fn offset(&self, gpa: GuestAddress, len: usize) -> Result<usize> {
        let off = usize::try_from(gpa.raw_value()).map_err(|_| vm_err("GuestArena"))?;
        match off.checked_add(len) {
            Some(end) if end <= self.arena.len() => Ok(off),
            _ => Err(vm_err("GuestArena")),
        }
    }

    fn insert(&mut self, gpa: GuestAddress, len: usize, file: Option<FileOffset>) -> Result<()> {
        let off = gpa.raw_value() as usize;
        // SAFETY: [off, off+len) was just mapped read-write in the arena, and stays mapped
        // while the region's Arc is shared (remove, Drop).
        let host = unsafe { self.arena.base().add(off) };
        let flags = if file.is_some() {
            libc::MAP_SHARED
        } else {
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS
        };
        let mut builder = MmapRegionBuilder::new_with_bitmap(len, B::with_len(len))
            .with_mmap_prot(libc::PROT_READ | libc::PROT_WRITE)
            .with_mmap_flags(flags);
        if let Some(f) = file {
            builder = builder.with_file_offset(f);
        }
        // SAFETY: host..host+len is a mapping present in the process (see above).
        let mapping = unsafe { builder.with_raw_mmap_pointer(host) }
            .build()
            .map_err(|_| vm_err("MmapRegionBuilder::build"))?;
        let region =
            GuestRegionMmap::new(mapping, gpa).map_err(|_| vm_err("GuestRegionMmap::new"))?;
        let at = self.regions.partition_point(|r| r.start_addr() < gpa);
        self.regions.insert(at, Arc::new(region));
        Ok(())
    }

    /// Adds `len` bytes of anonymous RAM (zero-filled, private) at guest address `gpa`.
    /// Errors: `EINVAL` (alignment, range), `EEXIST` (overlaps RAM), `ENOMEM`.
    pub fn add_ram(&mut self, gpa: GuestAddress, len: usize) -> Result<()> {
        let off = self.offset(gpa, len)?;
        self.arena.add_anon_mapping(off, len, Prot::READ_WRITE)?;
        self.insert(gpa, len, None).map_err(|e| {
            let _ = self.arena.remove_mapping(off, len);
            e
        })
    }

    /// Adds `len` bytes of RAM backed by `fd` (a memfd, shared: other processes mapping it
    /// see the guest's writes) from file offset `fd_off`. The region keeps a duplicate of
    /// the descriptor as its `FileOffset`. Errors as [`Arena::add_fd_mapping`], plus the
    /// `dup` error.
    pub fn add_ram_fd<F: AsFd>(
        &mut self,
        gpa: GuestAddress,
        len: usize,
        fd: &F,
        fd_off: u64,
    ) -> Result<()> {
        let off = self.offset(gpa, len)?;
        let owned = fd
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| Error::new("dup", e.raw_os_error().unwrap_or(errno::EINVAL)))?;
        self.arena
            .add_fd_mapping(off, len, &owned, fd_off, Prot::READ_WRITE)?;
        let file = FileOffset::new(File::from(owned), fd_off);
        self.insert(gpa, len, Some(file)).map_err(|e| {
            let _ = self.arena.remove_mapping(off, len);
            e
        })
    }

    /// Removes the region that starts at `gpa` and is `len` bytes long (as
    /// `GuestMemoryMmap::remove_region`): its range is reserved again (accesses fault).
    /// Errors: `ENOENT` (no such region), `EBUSY` (a `GuestMemoryMmap` from
    /// [`memory`](GuestArena::memory) still holds it: drop it, or swap in a newer one, first).
    pub fn remove(&mut self, gpa: GuestAddress, len: usize) -> Result<()> {
        let i = self
            .regions
            .iter()
            .position(|r| r.start_addr() == gpa && r.len() == len as GuestUsize)
            .ok_or_else(|| Error::new("GuestArena::remove", errno::ENOENT))?;
        if Arc::strong_count(&self.regions[i]) > 1 {
            return Err(Error::new("GuestArena::remove", errno::EBUSY));
        }
        self.arena.remove_mapping(gpa.raw_value() as usize, len)?;
        self.regions.remove(i);
        Ok(())
    }

    /// Frees the memory of `[gpa, gpa+len)`, which must lie in RAM, keeping it mapped: it
    /// reads as zeros afterwards (a memfd's blocks are freed with `MADV_REMOVE`, anonymous
    /// memory with `MADV_DONTNEED`). Allowed while `GuestMemoryMmap`s are in use. Errors:
    /// `EINVAL` (range), `ENOENT` (part of the range is not RAM: nothing is freed).
    pub fn balloon(&self, gpa: GuestAddress, len: usize) -> Result<()> {
        let off = self.offset(gpa, len)?;
        let end = off + len;
        // The pieces and their advice first, so a range running into a hole changes nothing.
        let mut pieces = Vec::new();
        let mut pos = off;
        while pos < end {
            let m = self.arena.find(pos)?;
            let piece = m.end().min(end) - pos;
            let advice = if m.file.is_some() {
                Advice::Remove
            } else {
                Advice::DontNeed
            };
            pieces.push((pos, piece, advice));
            pos += piece;
        }
        for (pos, piece, advice) in pieces {
            self.arena.advise(pos, piece, advice)?;
        }
        Ok(())
    }

    /// A `GuestMemoryMmap` over the current regions (it shares them: cheap to make, and
    /// later changes of the arena do not alter it). Errors: `EINVAL` when there is no region.
    pub fn memory(&self) -> Result<GuestMemoryMmap<B>> {
        GuestMemoryMmap::from_arc_regions(self.regions.clone())
            .map_err(|_| vm_err("GuestMemoryMmap::from_arc_regions"))
    }

    /// The number of RAM regions.
    pub fn num_regions(&self) -> usize {
        self.regions.len()
    }

    /// The arena's mappings (one per region, unless a region was split by ballooning).
    pub fn mappings(&self) -> Vec<Mapping> {
        self.arena.mappings()
    }

    /// The host address of guest address 0 (the arena base).
    pub fn host_base(&self) -> *mut u8 {
        self.arena.base()
    }

    /// The size of the guest-physical address space.
    pub fn len(&self) -> usize {
        self.arena.len()
    }

    /// Whether the address space is empty (never, once created).
    pub fn is_empty(&self) -> bool {
        self.arena.is_empty()
    }
}

impl<B: NewBitmap> Drop for GuestArena<B> {
    fn drop(&mut self) {
        if self.regions.iter().any(|r| Arc::strong_count(r) > 1) {
            // A GuestMemoryMmap still reaches the memory: keep it mapped (leak the arena).
            return;
        }
        // SAFETY: no region is shared any more; the arena is dropped once, here.
        unsafe { ManuallyDrop::drop(&mut self.arena) };
    }
}

impl<B: NewBitmap> std::fmt::Debug for GuestArena<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuestArena")
            .field("host_base", &self.arena.base())
            .field("len", &self.arena.len())
            .field("mappings", &self.arena.mappings())
            .finish()
    }
}
