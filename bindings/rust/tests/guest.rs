//! GuestArena (feature vm-memory): guest memory in a mapalloc arena, driven through
//! vm-memory's own API.
#![cfg(feature = "vm-memory")]
mod common;

use std::os::unix::fs::FileExt;
use std::sync::Arc;

use mapalloc::guest::GuestArena;
use mapalloc::MapFlags;
use vm_memory::bitmap::AtomicBitmap;
use vm_memory::{
    Address, ByteValued, Bytes, GuestAddress, GuestMemory, GuestMemoryError, GuestMemoryRegion,
};

const MIB: usize = 1 << 20;

#[derive(Clone, Copy, Debug, Default, PartialEq)]
#[repr(C)]
struct Desc {
    addr: u64,
    len: u32,
    flags: u16,
    next: u16,
}
// SAFETY: plain integers, no padding (8 + 4 + 2 + 2 bytes).
unsafe impl ByteValued for Desc {}

fn fnv(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf29ce484222325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
    })
}

/// Low RAM [0, 3 MiB) in two pieces (anonymous 1 MiB, then a memfd 2 MiB), a hole at
/// [3, 4) MiB, high RAM [4, 8) MiB on a memfd.
fn layout() -> (GuestArena, std::fs::File, std::fs::File) {
    let mut g = GuestArena::new(64 * MIB, MapFlags::DONTDUMP | MapFlags::DONTFORK).unwrap();
    let low = common::memfd("low", 2 * MIB as u64);
    let high = common::memfd("high", 4 * MIB as u64);
    g.add_ram(GuestAddress(0), MIB).unwrap();
    g.add_ram_fd(GuestAddress(MIB as u64), 2 * MIB, &low, 0)
        .unwrap();
    g.add_ram_fd(GuestAddress(4 * MIB as u64), 4 * MIB, &high, 0)
        .unwrap();
    (g, low, high)
}

#[test]
fn objects_and_slices_through_vm_memory() {
    let (g, low, high) = layout();
    let mem = g.memory().unwrap();
    assert_eq!(mem.num_regions(), 3);
    assert_eq!(mem.last_addr(), GuestAddress(8 * MIB as u64 - 1));
    let d = Desc {
        addr: 0x1234_5678,
        len: 4096,
        flags: 1,
        next: 7,
    };
    mem.write_obj(d, GuestAddress(0x2000)).unwrap();
    assert_eq!(mem.read_obj::<Desc>(GuestAddress(0x2000)).unwrap(), d);
    // The object is in the arena: read it back through the host address.
    let host = mem.get_host_address(GuestAddress(0x2000)).unwrap();
    assert_eq!(host, g.host_base().wrapping_add(0x2000));
    // SAFETY: 16 mapped bytes at host.
    assert_eq!(
        unsafe { (host as *const u64).read_unaligned() },
        0x1234_5678
    );

    // A slice across the boundary of the anonymous and the memfd region.
    let data: Vec<u8> = (0..8192u32).map(|i| (i * 7 + 3) as u8).collect();
    let at = GuestAddress(MIB as u64 - 4096);
    mem.write_slice(&data, at).unwrap();
    let mut back = vec![0u8; 8192];
    mem.read_slice(&mut back, at).unwrap();
    assert_eq!(back, data);
    // The memfd half is in the file (shared), at file offset 0.
    let mut file_part = vec![0u8; 4096];
    low.read_exact_at(&mut file_part, 0).unwrap();
    assert_eq!(&file_part[..], &data[4096..]);
    let r = mem.find_region(GuestAddress(MIB as u64)).unwrap();
    let fo = r
        .file_offset()
        .expect("a memfd region carries its FileOffset");
    assert_eq!(fo.start(), 0);

    // A write that runs into the hole stops at its edge.
    let end_low = GuestAddress(3 * MIB as u64 - 100);
    match mem.write_slice(&[9u8; 200], end_low) {
        Err(GuestMemoryError::PartialBuffer {
            expected,
            completed,
        }) => {
            assert_eq!((expected, completed), (200, 100))
        }
        other => panic!("expected a partial write, got {:?}", other),
    }
    assert!(mem
        .read_obj::<u32>(GuestAddress(3 * MIB as u64 + 8))
        .is_err());
    assert!(!mem.address_in_range(GuestAddress(3 * MIB as u64)));
    // Atomic access.
    mem.store(
        77u32,
        GuestAddress(4 * MIB as u64),
        std::sync::atomic::Ordering::SeqCst,
    )
    .unwrap();
    let mut b4 = [0u8; 4];
    high.read_exact_at(&mut b4, 0).unwrap();
    assert_eq!(u32::from_ne_bytes(b4), 77);
}

#[test]
fn checksums_across_regions_and_a_hole() {
    let (g, _low, _high) = layout();
    let mem = g.memory().unwrap();
    // Fill every region through vm-memory, one region at a time.
    for r in mem.iter() {
        let len = r.len() as usize;
        let base = r.start_addr().raw_value();
        let pattern: Vec<u8> = (0..len)
            .map(|i| ((base as usize + i) * 31 % 251) as u8)
            .collect();
        mem.write_slice(&pattern, r.start_addr()).unwrap();
    }
    // Checksums per region through vm-memory and through the raw arena memory agree.
    let mut total_vm = 0u64;
    let mut total_raw = 0u64;
    for r in mem.iter() {
        let len = r.len() as usize;
        let mut buf = vec![0u8; len];
        mem.read_slice(&mut buf, r.start_addr()).unwrap();
        let off = r.start_addr().raw_value() as usize;
        // SAFETY: the region is mapped read-write in the arena for as long as mem lives.
        let raw = unsafe { std::slice::from_raw_parts(g.host_base().add(off), len) };
        assert_eq!(fnv(&buf), fnv(raw));
        total_vm = total_vm.wrapping_add(fnv(&buf));
        total_raw = total_raw.wrapping_add(fnv(raw));
    }
    assert_eq!(total_vm, total_raw);
    // The whole low RAM (two regions) reads as one checksum, the hole does not read.
    let mut low = vec![0u8; 3 * MIB];
    mem.read_slice(&mut low, GuestAddress(0)).unwrap();
    let expect: Vec<u8> = (0..3 * MIB).map(|i| (i * 31 % 251) as u8).collect();
    assert_eq!(fnv(&low), fnv(&expect));
    let mut across = vec![0u8; 2 * MIB];
    assert!(mem
        .read_slice(&mut across, GuestAddress(2 * MIB as u64))
        .is_err());
    // A checksum over all of guest memory, region by region through GuestMemoryRegion.
    let sum = mem
        .iter()
        .map(|r| {
            let mut buf = vec![0u8; r.len() as usize];
            r.read_slice(&mut buf, vm_memory::MemoryRegionAddress(0))
                .unwrap();
            fnv(&buf)
        })
        .fold(0u64, |a, b| a.wrapping_add(b));
    assert_eq!(sum, total_vm);
}

#[test]
fn balloon_remove_and_lifetimes() {
    let (mut g, _low, high) = layout();
    let mem = g.memory().unwrap();
    mem.write_slice(&[0xee; 8192], GuestAddress(5 * MIB as u64))
        .unwrap();
    let before = common::blocks(&high);
    g.balloon(GuestAddress(5 * MIB as u64), MIB).unwrap();
    assert!(
        common::blocks(&high) < before,
        "MADV_REMOVE freed the memfd's blocks"
    );
    assert_eq!(
        mem.read_obj::<u64>(GuestAddress(5 * MIB as u64)).unwrap(),
        0
    );

    // A balloon running into the hole changes nothing.
    mem.write_obj(0x55u8, GuestAddress(3 * MIB as u64 - 1))
        .unwrap();
    let e = g
        .balloon(GuestAddress(2 * MIB as u64), 2 * MIB)
        .unwrap_err();
    assert_eq!(e.errno(), libc::ENOENT);
    assert_eq!(
        mem.read_obj::<u8>(GuestAddress(3 * MIB as u64 - 1))
            .unwrap(),
        0x55
    );

    // A region a GuestMemoryMmap still holds cannot be removed.
    let e = g.remove(GuestAddress(4 * MIB as u64), 4 * MIB).unwrap_err();
    assert_eq!(e.errno(), libc::EBUSY);
    assert_eq!(
        g.remove(GuestAddress(4 * MIB as u64), MIB)
            .unwrap_err()
            .errno(),
        libc::ENOENT
    );
    drop(mem);
    g.remove(GuestAddress(4 * MIB as u64), 4 * MIB).unwrap();
    let mem = g.memory().unwrap();
    assert_eq!(mem.num_regions(), 2);
    assert!(mem.read_obj::<u8>(GuestAddress(5 * MIB as u64)).is_err());
    // RAM can come back in the freed range (memory hotplug).
    g.add_ram(GuestAddress(4 * MIB as u64), 2 * MIB).unwrap();
    assert_eq!(g.memory().unwrap().num_regions(), 3);
    assert_eq!(
        g.add_ram(GuestAddress(5 * MIB as u64), MIB)
            .unwrap_err()
            .errno(),
        libc::EEXIST
    );

    // A GuestMemoryMmap that outlives its GuestArena keeps working (the arena is left mapped).
    mem.write_obj(5u64, GuestAddress(8)).unwrap();
    drop(g);
    assert_eq!(mem.read_obj::<u64>(GuestAddress(8)).unwrap(), 5);
}

#[test]
fn threads_share_guest_memory_and_dirty_bitmap() {
    let mut g = GuestArena::<AtomicBitmap>::new(1 << 30, MapFlags::EMPTY).unwrap();
    g.add_ram(GuestAddress(0), 16 * MIB).unwrap();
    let mem = Arc::new(g.memory().unwrap());
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let mem = mem.clone();
            s.spawn(move || {
                for i in 0..4096u64 {
                    let a = GuestAddress((t * 4 * MIB as u64) + i * 512);
                    mem.write_obj(t << 32 | i, a).unwrap();
                }
            });
        }
    });
    for t in 0..4u64 {
        let a = GuestAddress(t * 4 * MIB as u64 + 4095 * 512);
        assert_eq!(mem.read_obj::<u64>(a).unwrap(), t << 32 | 4095);
    }
    let r = mem.find_region(GuestAddress(0)).unwrap();
    use vm_memory::bitmap::Bitmap;
    assert!(
        r.bitmap().dirty_at(4096),
        "writes through vm-memory mark pages dirty"
    );
    assert!(
        !r.bitmap().dirty_at(4 * MIB - 4096),
        "untouched pages stay clean"
    );
    assert_eq!(g.mappings().len(), 1);
    assert_eq!(g.len(), 1 << 30);
}

#[test]
fn bad_ranges() {
    let mut g: GuestArena = GuestArena::new(8 * MIB, MapFlags::EMPTY).unwrap();
    assert_eq!(
        g.add_ram(GuestAddress(6 * MIB as u64), 4 * MIB)
            .unwrap_err()
            .errno(),
        libc::EINVAL
    );
    assert_eq!(
        g.add_ram(GuestAddress(u64::MAX - 4095), 4096)
            .unwrap_err()
            .errno(),
        libc::EINVAL
    );
    assert_eq!(
        g.add_ram(GuestAddress(100), 4096).unwrap_err().errno(),
        libc::EINVAL
    );
    assert!(g.memory().is_err(), "no RAM yet");
    assert!(g.balloon(GuestAddress(0), 4096).is_err());
}
