//! The Rust allocation workload of `bench.sh` (a benchmark, not a test): collections,
//! strings, BTreeMap/HashMap churn, threads passing boxes, growing vectors. Included by
//! `with_mapalloc.rs` (`#[global_allocator] MapAlloc`) and `with_system.rs` (Rust's
//! `System`, i.e. glibc malloc, or jemalloc/mimalloc/tcmalloc preloaded).
//!
//! Usage: `<bench binary> [SCALE [PHASE]]` (default 1.0, every phase). Prints one line per phase
//! (`phase NAME ms`) and `total ms`, `maxrss_kib` at the end.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::sync::mpsc;
use std::thread;
use std::time::Instant;

/// `std::hint::black_box` is stable only from Rust 1.66; Debian 12 has 1.63.
fn black_box<T>(x: T) -> T {
    // SAFETY: a volatile bitwise move of x; the original is forgotten, not dropped.
    let r = unsafe { std::ptr::read_volatile(&x as *const T) };
    std::mem::forget(x);
    r
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn n(base: usize, scale: f64) -> usize {
    ((base as f64 * scale) as usize).max(1)
}

/// Formatting, sorting and deduplicating strings.
pub fn strings(scale: f64) {
    let mut rng = Rng(1);
    for _ in 0..n(20, scale) {
        let mut v: Vec<String> = (0..10_000)
            .map(|_| format!("user-{}-{}", rng.below(5000), rng.below(7)))
            .collect();
        v.sort_unstable();
        v.dedup();
        let joined = v[..200].join(",");
        black_box(joined.len());
        black_box(v);
    }
}

/// A BTreeMap of String values, keys inserted and removed at random (steady 20k entries).
pub fn btree_churn(scale: f64) {
    let mut rng = Rng(2);
    let mut m: BTreeMap<u64, String> = BTreeMap::new();
    for _ in 0..n(400_000, scale) {
        let k = rng.below(40_000);
        if rng.next() & 1 == 0 {
            m.insert(k, "x".repeat((k % 60) as usize + 1));
        } else {
            m.remove(&k);
        }
    }
    black_box(m.len());
}

/// A HashMap of byte buffers of 16 B .. 2 KiB, churned (steady 10k entries).
pub fn hash_churn(scale: f64) {
    let mut rng = Rng(3);
    let mut m: HashMap<u64, Vec<u8>> = HashMap::new();
    for _ in 0..n(400_000, scale) {
        let k = rng.below(20_000);
        if rng.next() & 1 == 0 {
            let len = 16 + rng.below(2032) as usize;
            m.insert(k, vec![k as u8; len]);
        } else {
            m.remove(&k);
        }
    }
    black_box(m.len());
}

/// Two producer threads send boxes (64 B .. 4 KiB) to a consumer that frees them: every free
/// is a cross-thread free.
pub fn threads_boxes(scale: f64) {
    let per = n(150_000, scale);
    let (tx, rx) = mpsc::sync_channel::<Box<[u8]>>(1024);
    let producers: Vec<_> = (0..2u64)
        .map(|t| {
            let tx = tx.clone();
            thread::spawn(move || {
                let mut rng = Rng(10 + t);
                for _ in 0..per {
                    let len = 64usize << rng.below(7);
                    tx.send(vec![t as u8; len].into_boxed_slice()).unwrap();
                }
            })
        })
        .collect();
    drop(tx);
    let mut bytes = 0usize;
    for b in rx {
        bytes += b.len();
    }
    for p in producers {
        p.join().unwrap();
    }
    black_box(bytes);
}

/// Vectors grown by push to random lengths up to 1M elements (realloc of large blocks).
pub fn vec_growth(scale: f64) {
    let mut rng = Rng(4);
    for _ in 0..n(60, scale) {
        let len = 1 + rng.below(1 << 20) as usize;
        let mut v: Vec<u64> = Vec::new();
        for i in 0..len {
            v.push(i as u64);
        }
        black_box(&v);
    }
}

fn maxrss_kib() -> i64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(-1)
}

pub fn main() {
    let scale: f64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    let phases: [(&str, fn(f64)); 5] = [
        ("strings", strings),
        ("btree_churn", btree_churn),
        ("hash_churn", hash_churn),
        ("threads_boxes", threads_boxes),
        ("vec_growth", vec_growth),
    ];
    let only = std::env::args().nth(2);
    let start = Instant::now();
    for (name, f) in phases {
        if only.as_deref().map_or(false, |o| o != name) {
            continue;
        }
        let t = Instant::now();
        f(scale);
        println!("phase {} {:.2}", name, t.elapsed().as_secs_f64() * 1e3);
    }
    println!("total {:.2}", start.elapsed().as_secs_f64() * 1e3);
    println!("maxrss_kib {}", maxrss_kib());
}
