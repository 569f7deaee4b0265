//! Map and MapOptions.
mod common;

use mapalloc::{page_size, Advice, Map, MapFlags, MapOptions, Prot};

#[test]
fn reserve_commit_decommit() {
    let page = page_size();
    let mut m = MapOptions::new(64 * page + 1).reserve().unwrap();
    assert_eq!(m.len(), 65 * page, "rounded up to the page size");
    assert!(m.as_slice().is_none(), "a reservation gives no safe slice");
    let p = m.as_mut_ptr() as usize;
    // A reserved page faults.
    assert_eq!(
        common::child_signal(|| unsafe { (p as *mut u8).write_volatile(1) }),
        Some(libc::SIGSEGV)
    );
    m.commit(0, 4 * page).unwrap();
    // SAFETY: the first four pages are committed read-write.
    unsafe {
        m.as_mut_ptr().write_bytes(0x5a, 4 * page);
        assert_eq!(*m.as_ptr().add(4 * page - 1), 0x5a);
    }
    m.decommit(0, 4 * page).unwrap();
    assert_eq!(
        common::child_signal(|| unsafe { (p as *mut u8).write_volatile(1) }),
        Some(libc::SIGSEGV),
        "a decommitted range faults again"
    );
    m.commit(0, 4 * page).unwrap();
    // SAFETY: committed again; anonymous private memory reads as zeros.
    assert_eq!(unsafe { *m.as_ptr().add(page) }, 0);
    m.commit(0, m.len()).unwrap();
    assert_eq!(
        m.as_slice().unwrap().len(),
        65 * page,
        "whole map committed: safe slices"
    );
    assert_eq!(m.commit(1, page).unwrap_err().errno(), libc::EINVAL);
    assert_eq!(m.commit(0, 66 * page).unwrap_err().errno(), libc::EINVAL);
}

#[test]
fn slices_and_protection() {
    let page = page_size();
    let mut m = Map::anon(8 * page).unwrap();
    m.as_mut_slice().unwrap().fill(3);
    assert!(m.as_slice().unwrap().iter().all(|&b| b == 3));
    m.protect(Prot::READ).unwrap();
    assert!(m.as_mut_slice().is_none(), "read-only: no mutable slice");
    assert_eq!(m.as_slice().unwrap()[5], 3);
    let p = m.as_ptr() as usize;
    assert_eq!(
        common::child_signal(|| unsafe { (p as *mut u8).write_volatile(1) }),
        Some(libc::SIGSEGV)
    );
    // W^X: RWX is refused without JIT, nothing changes.
    let e = m
        .protect(Prot::READ | Prot::WRITE | Prot::EXEC)
        .unwrap_err();
    assert_eq!((e.errno(), e.op()), (libc::EPERM, "ma_map_protect"));
    assert_eq!(m.prot(), Prot::READ);
    m.protect(Prot::READ | Prot::EXEC).unwrap();
    m.protect(Prot::READ_WRITE).unwrap();
    m.protect_range(page, page, Prot::NONE).unwrap();
    assert!(
        m.as_slice().is_none(),
        "a range is inaccessible: no safe slice"
    );
    assert!(MapOptions::new(page)
        .prot(Prot::READ | Prot::WRITE | Prot::EXEC)
        .map()
        .is_err());
    let mut jit = MapOptions::new(page).flags(MapFlags::JIT).map().unwrap();
    jit.protect(Prot::READ | Prot::WRITE | Prot::EXEC).unwrap();
    jit.flush_icache(0, page);
}

#[test]
fn split_merge_align_hint() {
    let page = page_size();
    let mut m = MapOptions::new(2 << 20).align(2 << 20).map().unwrap();
    assert_eq!(m.as_ptr() as usize % (2 << 20), 0);
    let tail = m.split(page).unwrap();
    assert_eq!((m.len(), tail.len()), (page, (2 << 20) - page));
    assert_eq!(tail.as_ptr() as usize, m.as_ptr() as usize + page);
    m.merge(tail).unwrap();
    assert_eq!(m.len(), 2 << 20);
    let other = Map::anon(page).unwrap();
    let (other, e) = m.merge(other).unwrap_err();
    assert_eq!(e.errno(), libc::EINVAL);
    assert_eq!(other.len(), page, "a refused merge gives the map back");
    // A strict hint on a taken address is EEXIST.
    let e = MapOptions::new(page)
        .hint(m.as_mut_ptr())
        .flags(MapFlags::STRICT_HINT)
        .map()
        .unwrap_err();
    assert_eq!(e.errno(), libc::EEXIST);
    m.advise(0, page, Advice::DontNeed).unwrap();
}

#[test]
fn shared_file_map() {
    let page = page_size();
    let f = common::memfd("map", 4 * page as u64);
    // SAFETY: nobody else changes or truncates the memfd while the maps live.
    let mut a = unsafe {
        MapOptions::new(4 * page)
            .flags(MapFlags::SHARED)
            .file(&f, 0)
    }
    .map()
    .unwrap();
    // SAFETY: as above.
    let b = unsafe {
        MapOptions::new(2 * page)
            .flags(MapFlags::SHARED)
            .file(&f, 2 * page as u64)
    }
    .map()
    .unwrap();
    a.as_mut_slice().unwrap()[2 * page + 9] = 0x77;
    assert_eq!(
        b.as_slice().unwrap()[9],
        0x77,
        "both maps see the same file pages"
    );
    a.flush(0, page, false).unwrap();
    drop(f); // the kernel keeps the file while it is mapped
    assert_eq!(b.as_slice().unwrap()[9], 0x77);
}

#[test]
fn maps_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Map>();
    let mut m = Map::anon(page_size()).unwrap();
    m.as_mut_slice().unwrap()[0] = 1;
    let m = std::thread::spawn(move || {
        m.as_slice().unwrap()[0];
        m
    })
    .join()
    .unwrap();
    assert_eq!(m.as_slice().unwrap()[0], 1);
    assert!(!mapalloc::huge_page_sizes().contains(&0));
}
