//! A test binary whose global allocator is MapAlloc: collections, threads, large
//! reallocations and over-aligned layouts all go through mapalloc's heap.
use std::alloc::{GlobalAlloc, Layout};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::mpsc;
use std::thread;

use mapalloc::{heap_stats, MapAlloc};

#[global_allocator]
static GLOBAL: MapAlloc = MapAlloc;

#[test]
fn the_heap_serves_this_binary() {
    let before = heap_stats();
    let v: Vec<Box<[u8; 100]>> = (0..1000).map(|_| Box::new([1; 100])).collect();
    let during = heap_stats();
    // allocs/frees count blocks moving between thread caches and slabs (heap.h): they
    // grow, by less than the calls when blocks are reused through a cache.
    assert!(
        during.allocs > before.allocs,
        "{:?} -> {:?}",
        before,
        during
    );
    assert!(during.allocated >= 100 * 1000);
    drop(v);
    assert!(heap_stats().frees > before.frees);
}

#[test]
fn collections_churn() {
    let mut map: HashMap<String, Vec<u64>> = HashMap::new();
    let mut tree: BTreeMap<u64, String> = BTreeMap::new();
    let mut queue: VecDeque<Box<u64>> = VecDeque::new();
    for i in 0..50_000u64 {
        let key = format!("key-{}", i % 5000);
        map.entry(key).or_default().push(i);
        tree.insert(i.wrapping_mul(2654435761) % 100_000, i.to_string());
        queue.push_back(Box::new(i));
        if queue.len() > 1000 {
            assert_eq!(*queue.pop_front().unwrap(), i - 1000);
        }
        if i % 3 == 0 {
            tree.remove(&(i.wrapping_mul(7919) % 100_000));
        }
    }
    assert_eq!(map.len(), 5000);
    assert!(map.values().all(|v| v.len() == 10));
    assert!(map["key-42"].iter().all(|&i| i % 5000 == 42));
    for (k, v) in &tree {
        let i: u64 = v.parse().unwrap();
        assert_eq!(i.wrapping_mul(2654435761) % 100_000, *k);
    }
    let mut s = String::new();
    for i in 0..10_000 {
        s.push_str(&i.to_string());
        s.shrink_to_fit();
    }
    assert!(s.starts_with("0123456789101112"));
}

#[test]
fn threads_pass_boxes() {
    let (tx, rx) = mpsc::channel::<Box<[u64; 16]>>();
    let producers: Vec<_> = (0..4u64)
        .map(|t| {
            let tx = tx.clone();
            thread::spawn(move || {
                for i in 0..20_000u64 {
                    let mut b = Box::new([0u64; 16]);
                    b[0] = t;
                    b[15] = i;
                    tx.send(b).unwrap();
                }
            })
        })
        .collect();
    drop(tx);
    let mut per = [0u64; 4];
    for b in rx {
        per[b[0] as usize] += b[15];
    }
    for p in producers {
        p.join().unwrap();
    }
    assert!(per.iter().all(|&s| s == 20_000 * 19_999 / 2));
}

#[test]
fn large_reallocations_keep_contents() {
    let mut v: Vec<u32> = Vec::new();
    for i in 0..(1u32 << 20) {
        v.push(i); // amortised growth: small, medium, then large blocks
    }
    // Then +25% at a time up to 64 MiB: each step reallocates a large block (grown in place
    // or moved with mremap, never copied by hand).
    while v.capacity() < (16 << 20) {
        let target = v.capacity() + v.capacity() / 4;
        v.reserve_exact(target - v.len());
        v.push(v.len() as u32);
    }
    assert!(v
        .iter()
        .enumerate()
        .step_by(4099)
        .all(|(i, &x)| x == i as u32));
    v.truncate(1000);
    v.shrink_to_fit();
    assert_eq!(v[999], 999);
    let mut bytes = vec![7u8; 3 << 20];
    bytes.resize(24 << 20, 9);
    assert_eq!(
        (bytes[(3 << 20) - 1], bytes[3 << 20], bytes[(24 << 20) - 1]),
        (7, 9, 9)
    );
}

#[test]
fn every_alignment_is_honoured() {
    for shift in 0..22 {
        let align = 1usize << shift;
        for &size in &[1usize, 24, 100, 4096, 70_000, 1 << 20] {
            let layout = Layout::from_size_align(size, align).unwrap();
            // SAFETY: non-zero sizes; every block is freed with its layout.
            unsafe {
                let p = GLOBAL.alloc(layout);
                assert!(!p.is_null());
                assert_eq!(p as usize % align, 0, "align {} size {}", align, size);
                p.write_bytes(0xa5, size);
                let z = GLOBAL.alloc_zeroed(layout);
                assert_eq!(z as usize % align, 0);
                assert!(std::slice::from_raw_parts(z, size).iter().all(|&b| b == 0));
                GLOBAL.dealloc(z, layout);
                let q = GLOBAL.realloc(p, layout, size * 3);
                assert_eq!(q as usize % align, 0, "realloc keeps align {}", align);
                assert!(std::slice::from_raw_parts(q, size)
                    .iter()
                    .all(|&b| b == 0xa5));
                let q2 = GLOBAL.realloc(q, Layout::from_size_align(size * 3, align).unwrap(), size);
                assert_eq!(q2 as usize % align, 0);
                assert_eq!(*q2.add(size - 1), 0xa5);
                GLOBAL.dealloc(q2, layout);
            }
        }
    }
}

#[test]
fn failure_is_null_not_abort() {
    let layout = Layout::from_size_align(usize::MAX / 2, 16).unwrap();
    // SAFETY: a valid layout; the result is checked.
    assert!(unsafe { GLOBAL.alloc(layout) }.is_null());
    let mut v: Vec<u8> = Vec::new();
    assert!(v.try_reserve(usize::MAX / 4).is_err());
}
