//! A Rust program on mapalloc: `#[global_allocator]` makes every Box, Vec, String and map of
//! the program (and of the standard library) come from mapalloc's heap, and a typed pool
//! holds the program's fixed-size records.
//!
//!   bindings/rust/cargo-debian.sh run --release --example global_alloc
//!
//! Builds an inverted index of generated text on four threads, sends the per-thread
//! results to the main thread as boxes, merges them, and prints what the heap did.
use std::collections::{BTreeMap, HashMap};
use std::sync::mpsc;
use std::thread;

use mapalloc::{heap_stats, MapAlloc, Pool};

#[global_allocator]
static GLOBAL: MapAlloc = MapAlloc;

const WORDS: [&str; 12] = [
    "page", "slab", "arena", "pool", "heap", "guest", "memfd", "commit", "reserve", "purge",
    "segment", "thread",
];

/// One posting: where a word occurs (a fixed-size record: a pool object).
#[derive(Debug)]
struct Posting {
    doc: u32,
    pos: u32,
}

fn document(seed: u64, len: usize) -> String {
    let mut x = seed | 1;
    let mut s = String::new();
    for _ in 0..len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.push_str(WORDS[(x % WORDS.len() as u64) as usize]);
        s.push(' ');
    }
    s
}

fn main() {
    let before = heap_stats();
    let postings = Pool::<Posting>::new().expect("pool");
    let (tx, rx) = mpsc::channel::<Box<HashMap<String, Vec<u32>>>>();
    let total: usize = thread::scope(|s| {
        for t in 0..4u32 {
            let tx = tx.clone();
            let postings = &postings;
            s.spawn(move || {
                let mut index: HashMap<String, Vec<u32>> = HashMap::new();
                let mut kept = Vec::new();
                for d in 0..200u32 {
                    let doc = t * 1000 + d;
                    for (pos, w) in document(u64::from(doc), 500).split(' ').enumerate() {
                        if w.is_empty() {
                            continue;
                        }
                        index.entry(w.to_string()).or_default().push(doc);
                        if pos % 50 == 0 {
                            kept.push(postings.alloc(Posting {
                                doc,
                                pos: pos as u32,
                            }));
                        }
                    }
                }
                assert!(kept.iter().all(|p| p.doc / 1000 == t && p.pos % 50 == 0));
                tx.send(Box::new(index)).unwrap(); // freed by the main thread
            });
        }
        drop(tx);
        let mut merged: BTreeMap<String, usize> = BTreeMap::new();
        for index in rx {
            for (w, docs) in index.iter() {
                *merged.entry(w.clone()).or_default() += docs.len();
            }
        }
        for (w, n) in &merged {
            println!("{:>8} {}", w, n);
        }
        merged.values().sum()
    });
    assert_eq!(total, 4 * 200 * 500, "every word counted once");
    assert_eq!(
        postings.stats().live,
        0,
        "every posting went back to its pool"
    );
    let after = heap_stats();
    println!(
        "words {}; mapalloc heap: {} allocations, {} frees, {} KiB live, pool {:?}",
        total,
        after.allocs - before.allocs,
        after.frees - before.frees,
        after.allocated / 1024,
        postings.stats()
    );
    assert!(
        after.allocs > before.allocs && after.allocated > 0,
        "the heap served the program (allocs counts blocks leaving the slabs)"
    );
}
