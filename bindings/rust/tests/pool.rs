//! Pool<T>, PoolBox and RawPool.
use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread;

use mapalloc::{Pool, PoolBox, PoolOptions, RawPool};

struct Tracked {
    drops: Rc<Cell<u32>>,
    v: u64,
}
impl Drop for Tracked {
    fn drop(&mut self) {
        self.drops.set(self.drops.get() + 1);
    }
}

#[test]
fn box_owns_value_and_frees_on_drop() {
    let pool = Pool::<Tracked>::new().unwrap();
    let drops = Rc::new(Cell::new(0));
    let mut boxes: Vec<_> = (0..1000)
        .map(|v| {
            pool.alloc(Tracked {
                drops: drops.clone(),
                v,
            })
        })
        .collect();
    assert_eq!(pool.stats().live, 1000);
    for (i, b) in boxes.iter_mut().enumerate() {
        assert_eq!(b.v, i as u64);
        b.v *= 2;
    }
    assert_eq!(boxes[999].v, 1998);
    // Distinct, aligned objects.
    let mut addrs: Vec<usize> = boxes.iter().map(|b| PoolBox::as_ptr(b) as usize).collect();
    addrs.sort_unstable();
    addrs.dedup();
    assert_eq!(addrs.len(), 1000);
    assert!(addrs
        .iter()
        .all(|a| a % std::mem::align_of::<Tracked>() == 0));
    boxes.truncate(10);
    assert_eq!(drops.get(), 990);
    assert_eq!(pool.stats().live, 10);
    let t = PoolBox::into_inner(boxes.pop().unwrap());
    assert_eq!(
        drops.get(),
        990,
        "into_inner moves the value out without dropping it"
    );
    assert_eq!(pool.stats().live, 9);
    drop(t);
    drop(boxes);
    assert_eq!(drops.get(), 1000);
    let s = pool.stats();
    assert_eq!((s.live, s.allocs, s.frees), (0, 1000, 1000));
}

#[test]
fn sizes_and_alignments_follow_the_type() {
    #[repr(align(64))]
    struct Line([u8; 64]);
    #[repr(align(4096))]
    struct Page([u8; 100]);
    let lines = Pool::<Line>::new().unwrap();
    let pages = Pool::<Page>::new().unwrap();
    let units = Pool::<()>::new().unwrap();
    for _ in 0..50 {
        let l = lines.alloc(Line([7; 64]));
        assert_eq!(PoolBox::as_ptr(&l) as usize % 64, 0);
        assert_eq!(l.0[63], 7);
        let p = pages.alloc(Page([1; 100]));
        assert_eq!(PoolBox::as_ptr(&p) as usize % 4096, 0);
        let u = units.alloc(());
        assert_eq!(*u, ());
    }
    assert_eq!(lines.stats().obj_size, 64);
    assert_eq!(units.stats().obj_size, 1);
}

#[test]
fn max_bytes_gives_the_value_back_with_enomem() {
    let pool = Pool::<[u8; 4096]>::with_options(PoolOptions::new(0).max_bytes(1 << 20)).unwrap();
    let mut held = Vec::new();
    let err = loop {
        match pool.try_alloc([0xab; 4096]) {
            Ok(b) => held.push(b),
            Err((v, e)) => {
                assert_eq!(v[4095], 0xab, "the value comes back");
                break e;
            }
        }
        assert!(held.len() < 1000, "max_bytes not enforced");
    };
    assert_eq!(err.errno(), 12); // ENOMEM
    assert_eq!(err.op(), "ma_pool_alloc");
    assert!(!held.is_empty() && held.len() < 256);
    assert!(pool.stats().committed_bytes <= 1 << 20);
    held.clear();
    assert!(
        pool.try_alloc([0; 4096]).is_ok(),
        "memory is reusable after frees"
    );
}

#[test]
fn bad_options_are_einval() {
    let e = RawPool::new(&PoolOptions::new(0)).unwrap_err();
    assert_eq!((e.errno(), e.op()), (22, "ma_pool_create"));
    assert_eq!(
        RawPool::new(&PoolOptions::new(64).align(48))
            .unwrap_err()
            .errno(),
        22
    );
    assert!(
        e.to_string()
            .starts_with("ma_pool_create: Invalid argument"),
        "{}",
        e
    );
    let io: std::io::Error = e.into();
    assert_eq!(io.raw_os_error(), Some(22));
}

#[test]
fn raw_pool_zeroes_and_trims() {
    let pool = RawPool::new(&PoolOptions::new(200).zero(true)).unwrap();
    let objs: Vec<_> = (0..2000).map(|_| pool.alloc().unwrap()).collect();
    for o in &objs {
        // SAFETY: 200-byte objects of this pool.
        let s = unsafe { std::slice::from_raw_parts_mut(o.as_ptr(), 200) };
        assert!(s.iter().all(|&b| b == 0));
        s.fill(0xee);
    }
    for o in objs {
        // SAFETY: allocated above, freed once.
        unsafe { pool.free(o) };
    }
    let o = pool.alloc().unwrap();
    // SAFETY: a live object of 200 bytes.
    assert!(unsafe { std::slice::from_raw_parts(o.as_ptr(), 200) }
        .iter()
        .all(|&b| b == 0));
    // SAFETY: as above.
    unsafe { pool.free(o) };
    let before = pool.stats().committed_bytes;
    pool.trim().unwrap();
    assert!(pool.stats().committed_bytes < before);
}

#[test]
fn boxes_move_between_threads() {
    static DROPS: AtomicUsize = AtomicUsize::new(0);
    struct Msg(Vec<u32>);
    impl Drop for Msg {
        fn drop(&mut self) {
            DROPS.fetch_add(1, Ordering::Relaxed);
        }
    }
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Pool<Msg>>();
    assert_send_sync::<PoolBox<'static, Msg>>();

    let pool = Pool::<Msg>::new().unwrap();
    const PER: u32 = 20_000;
    thread::scope(|s| {
        let (tx, rx) = mpsc::sync_channel::<PoolBox<'_, Msg>>(256);
        for t in 0..3u32 {
            let tx = tx.clone();
            let pool = &pool;
            s.spawn(move || {
                for i in 0..PER {
                    tx.send(pool.alloc(Msg(vec![t, i]))).unwrap();
                }
            });
        }
        drop(tx);
        // The consumer frees every box on its own thread (remote frees to the producers).
        let consumer = s.spawn(move || {
            let mut sum = 0u64;
            for b in rx {
                sum += u64::from(b.0[1]);
            }
            sum
        });
        let n = u64::from(PER);
        assert_eq!(consumer.join().unwrap(), 3 * n * (n - 1) / 2);
    });
    assert_eq!(DROPS.load(Ordering::Relaxed), 3 * PER as usize);
    let s = pool.stats();
    assert_eq!((s.live, s.allocs, s.frees), (0, 60_000, 60_000));
}

#[test]
fn leak_lives_as_long_as_the_pool() {
    let pool = Pool::<u64>::new().unwrap();
    let r: &mut u64 = PoolBox::leak(pool.alloc(41));
    *r += 1;
    assert_eq!(*r, 42);
    assert_eq!(pool.stats().live, 1);
}
