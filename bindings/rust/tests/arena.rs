//! Arena: fd and anonymous mappings, protect, advise, find, iterate, errors.
mod common;

use std::ops::ControlFlow;
use std::os::unix::fs::{FileExt, MetadataExt};

use mapalloc::{page_size, Advice, Arena, MapFlags, Mapping, Prot};

#[test]
fn fd_and_anon_mappings() {
    let page = page_size();
    let arena = Arena::new(1 << 30, MapFlags::DONTDUMP | MapFlags::DONTFORK).unwrap();
    assert_eq!(
        arena.base() as usize % (1 << 30),
        0,
        "1 GiB arenas are 1 GiB aligned"
    );
    let ram = common::memfd("ram", 64 * page as u64);
    arena
        .add_fd_mapping(0, 64 * page, &ram, 0, Prot::READ_WRITE)
        .unwrap();
    arena
        .add_anon_mapping(128 * page, 16 * page, Prot::READ_WRITE)
        .unwrap();
    // SAFETY: [0, 64 pages) is mapped read-write.
    unsafe { arena.base().add(3 * page + 5).write(0x42) };
    let mut buf = [0u8; 1];
    ram.read_exact_at(&mut buf, 3 * page as u64 + 5).unwrap();
    assert_eq!(buf[0], 0x42, "writes through the arena reach the memfd");

    assert_eq!(arena.count(), 2);
    let m = arena.find(130 * page).unwrap();
    assert_eq!(
        m,
        Mapping {
            off: 128 * page,
            len: 16 * page,
            file: None,
            fd_off: 0,
            prot: Prot::READ_WRITE
        }
    );
    let m = arena.find(page).unwrap();
    let st = ram.metadata().unwrap();
    assert_eq!(
        (m.file, m.len),
        (Some((st.dev(), st.ino())), 64 * page),
        "the file's identity, not a descriptor number"
    );
    let e = arena.find(100 * page).unwrap_err();
    assert_eq!((e.errno(), e.op()), (libc::ENOENT, "ma_arena_find"));

    // Overlaps are EEXIST, never a silent replace.
    let e = arena
        .add_anon_mapping(60 * page, 8 * page, Prot::READ)
        .unwrap_err();
    assert_eq!(
        (e.errno(), e.op()),
        (libc::EEXIST, "ma_arena_add_anon_mapping")
    );
    assert_eq!(
        arena
            .add_anon_mapping(1, page, Prot::READ)
            .unwrap_err()
            .errno(),
        libc::EINVAL
    );
    assert_eq!(
        arena
            .add_anon_mapping(0, page, Prot::READ | Prot::WRITE | Prot::EXEC)
            .unwrap_err()
            .errno(),
        libc::EPERM
    );

    // Removing the middle splits the fd mapping; the range faults afterwards.
    arena.remove_mapping(16 * page, 16 * page).unwrap();
    let all = arena.mappings();
    let offs: Vec<_> = all
        .iter()
        .map(|m| (m.off / page, m.len / page, m.fd_off))
        .collect();
    assert_eq!(
        offs,
        vec![(0, 16, 0), (32, 32, 32 * page as u64), (128, 16, 0)]
    );
    let hole = arena.base() as usize + 20 * page;
    assert_eq!(
        common::child_signal(|| unsafe { (hole as *mut u8).write_volatile(1) }),
        Some(libc::SIGSEGV)
    );
    assert_eq!(
        arena
            .remove_mapping(16 * page, 16 * page)
            .unwrap_err()
            .errno(),
        libc::ENOENT
    );
}

#[test]
fn protect_advise_flush() {
    let page = page_size();
    let arena = Arena::new(256 * page, MapFlags::EMPTY).unwrap();
    let ram = common::memfd("balloon", 32 * page as u64);
    arena
        .add_fd_mapping(0, 32 * page, &ram, 0, Prot::READ_WRITE)
        .unwrap();
    // SAFETY: mapped read-write.
    unsafe { arena.base().write_bytes(0xcc, 32 * page) };
    let before = common::blocks(&ram);
    assert!(before >= (32 * page / 512) as u64);
    // Balloon 16 pages out: the memfd's blocks are freed, the range reads as zeros.
    arena.advise(8 * page, 16 * page, Advice::Remove).unwrap();
    assert!(common::blocks(&ram) <= before - (16 * page / 512) as u64);
    // SAFETY: still mapped.
    assert_eq!(unsafe { *arena.base().add(9 * page) }, 0);
    assert_eq!(unsafe { *arena.base().add(7 * page) }, 0xcc);
    arena.flush(0, 32 * page, false).unwrap();

    arena.protect(0, 4 * page, Prot::READ).unwrap();
    assert_eq!(arena.count(), 2, "protect splits the record");
    assert_eq!(arena.find(0).unwrap().prot, Prot::READ);
    let p = arena.base() as usize;
    assert_eq!(
        common::child_signal(|| unsafe { (p as *mut u8).write_volatile(1) }),
        Some(libc::SIGSEGV)
    );
    assert_eq!(
        arena.protect(0, 64 * page, Prot::READ).unwrap_err().errno(),
        libc::ENOENT
    );
    assert_eq!(
        arena
            .advise(64 * page, page, Advice::WillNeed)
            .unwrap_err()
            .errno(),
        libc::ENOENT
    );
}

#[test]
fn for_each_stops_reenters_and_propagates_panics() {
    let page = page_size();
    let arena = Arena::new(64 * page, MapFlags::EMPTY).unwrap();
    for i in 0..8 {
        arena
            .add_anon_mapping(i * 8 * page, 4 * page, Prot::READ_WRITE)
            .unwrap();
    }
    let mut seen = Vec::new();
    arena
        .for_each(|m| {
            seen.push(m.off / page);
            // Read-only calls work from inside; changes are EDEADLK, not a deadlock.
            assert_eq!(arena.find(m.off).unwrap().off, m.off);
            assert_eq!(
                arena.remove_mapping(m.off, page).unwrap_err().errno(),
                libc::EDEADLK
            );
            if seen.len() == 3 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .unwrap();
    assert_eq!(seen, vec![0, 8, 16]);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = arena.for_each(|_| panic!("stop here"));
    }));
    assert!(r.is_err(), "the panic crossed the C walk and came back");
    assert_eq!(
        arena.mappings().len(),
        8,
        "the arena is usable after the panic"
    );
    arena.remove_mapping(0, 64 * page).unwrap();
    assert_eq!(arena.count(), 0);
}

#[test]
fn threads_share_an_arena() {
    let page = page_size();
    let arena = Arena::new(1 << 30, MapFlags::EMPTY).unwrap();
    std::thread::scope(|s| {
        for t in 0..4usize {
            let arena = &arena;
            s.spawn(move || {
                for i in 0..200usize {
                    let off = (t * 1000 + i) * 2 * page;
                    arena.add_anon_mapping(off, page, Prot::READ_WRITE).unwrap();
                    // SAFETY: mapped just above by this thread.
                    unsafe { arena.base().add(off).write(t as u8) };
                    if i % 2 == 0 {
                        arena.remove_mapping(off, page).unwrap();
                    }
                }
            });
        }
    });
    assert_eq!(arena.count(), 400);
    for m in arena.mappings() {
        // SAFETY: every remaining mapping is read-write.
        assert_eq!(
            unsafe { *arena.base().add(m.off) } as usize,
            m.off / (2000 * page)
        );
    }
}

#[test]
fn bad_arguments() {
    let e = Arena::new(0, MapFlags::EMPTY).unwrap_err();
    assert_eq!((e.errno(), e.op()), (libc::EINVAL, "ma_arena_create"));
    assert_eq!(
        Arena::new(page_size(), MapFlags::SHARED)
            .unwrap_err()
            .errno(),
        libc::EINVAL
    );
    let arena = Arena::new(4 * page_size(), MapFlags::EMPTY).unwrap();
    let e = arena
        .add_anon_mapping(0, 8 * page_size(), Prot::READ)
        .unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
    assert_eq!(
        format!("{}", e),
        "ma_arena_add_anon_mapping: Invalid argument (os error 22)"
    );
}
