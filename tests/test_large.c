/* Tests of the large-block cache (src/malloc/huge.c): freed large blocks are kept as page
 * ranges for the purge delay and reused (split, merged with their neighbours, grown into in
 * place or copied into), then unmapped. Criterion runs each test in a fresh process, so the
 * cache starts empty in every test. Addresses are asserted where the policy fixes them
 * (which range a block comes from); page faults are counted with getrusage. */
#include <criterion/criterion.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "common.h"
#include "malloc/heap_internal.h"
#include "mapalloc/heap.h"
#include "large_common.h"
#include "malloc/huge_cache.h"
#include "os/os.h"

#define MiB ((size_t)1 << 20)
#define KiB ((size_t)1 << 10)

static void fill(void *p, size_t n, unsigned seed) {
  unsigned char *c = p;
  for (size_t i = 0; i < n; i += 512) c[i] = (unsigned char)(seed + i / 512);
  c[n - 1] = (unsigned char)seed;
}

static bool check(const void *p, size_t n, unsigned seed) {
  const unsigned char *c = p;
  for (size_t i = 0; i < n; i += 512)
    if (c[i] != (unsigned char)(seed + i / 512)) return false;
  return c[n - 1] == (unsigned char)seed;
}

#if !MA_SECURE
/* The cache tests: a secure build keeps no freed large block (each has a guard page that
 * every split and merge would have to move); the tests of that build follow at the end. */
static long minor_faults(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_minflt;
}

/* A freed block of `n` bytes with every page faulted in: a cached range. */
static char *cached_range(size_t n) {
  char *p = ma_malloc(n);
  cr_assert_not_null(p);
  memset(p, 1, n);
  ma_free(p);
  return p;
}

Test(large_cache, freed_block_is_reused_without_faults) {
  char *p = cached_range(4 * MiB);
  cr_assert_eq(large_cached_bytes(), 4 * MiB, "kept for the purge delay");
  long f0 = minor_faults();
  char *q = ma_malloc(4 * MiB - 100);
  memset(q, 2, 4 * MiB - 100);
  long f1 = minor_faults();
  cr_assert_eq(q, p, "the cached range is reused");
  cr_assert_lt(f1 - f0, 64, "%ld faults to reuse faulted pages", f1 - f0);
  cr_assert_eq(large_cached_bytes(), 0);
  ma_free(q);
}

Test(large_cache, split_serves_the_smallest_fitting_range) {
  char *big = ma_malloc(8 * MiB), *small = ma_malloc(2 * MiB);
  memset(big, 1, 8 * MiB);
  memset(small, 1, 2 * MiB);
  ma_free(big);
  ma_free(small);
  char *a = ma_malloc(1 * MiB);
  cr_assert_eq(a, small, "best fit: the 2 MiB range, the 8 MiB one stays whole");
  char *b = ma_malloc(1 * MiB);
  cr_assert_eq(b, small + 1 * MiB, "the rest of the split range");
  char *c = ma_malloc(6 * MiB);
  cr_assert_eq(c, big);
  cr_assert_eq(ma_usable_size(c), 6 * MiB, "split, not handed out whole");
  ma_free(a);
  ma_free(b);
  ma_free(c);
}

Test(large_cache, neighbours_merge_when_freed) {
  char *p = cached_range(8 * MiB);
  char *a = ma_malloc(2 * MiB), *b = ma_malloc(2 * MiB), *c = ma_malloc(2 * MiB);
  cr_assert_eq(a, p);
  cr_assert_eq(b, p + 2 * MiB);
  cr_assert_eq(c, p + 4 * MiB);
  ma_free(a);
  ma_free(c); /* merges with the cached 2 MiB behind it */
  ma_free(b); /* joins both sides: one 8 MiB range again */
  char *whole = ma_malloc(8 * MiB);
  cr_assert_eq(whole, p, "the three pieces and the tail merged into one range");
  ma_free(whole);
}

Test(large_cache, growth_takes_the_cached_tail_in_place) {
  char *p = cached_range(8 * MiB);
  char *q = ma_malloc(256 * KiB);
  cr_assert_eq(q, p);
  fill(q, 256 * KiB, 3);
  long f0 = minor_faults();
  char *r = ma_realloc(q, 3 * MiB);
  memset(r + 256 * KiB, 4, 3 * MiB - 256 * KiB);
  long f1 = minor_faults();
  cr_assert_eq(r, q, "grown in place");
  cr_assert(check(r, 256 * KiB, 3));
  cr_assert_eq(ma_usable_size(r), 3 * MiB, "exactly the request: cached pages are not tied up");
  cr_assert_lt(f1 - f0, 64, "%ld faults growing over faulted pages", f1 - f0);
  ma_free(r);
}

/* A block with no room behind it moves by copy to the front of the largest cached range,
 * whose faulted pages then hold its growth; its own pages are cached. */
Test(large_cache, growth_without_room_copies_into_the_largest_range) {
  char *blk = ma_malloc(1 * MiB); /* a mapping of its own, nothing cached behind it */
  char *small = ma_malloc(3 * MiB), *big = ma_malloc(8 * MiB);
  memset(small, 1, 3 * MiB);
  memset(big, 1, 8 * MiB);
  ma_free(small);
  ma_free(big);
  fill(blk, 1 * MiB, 5);
  long f0 = minor_faults();
  char *r = ma_realloc(blk, 2 * MiB);
  memset(r + 1 * MiB, 6, 1 * MiB);
  long f1 = minor_faults();
  cr_assert_eq(r, big, "copied to the front of the largest range, not mremapped");
  cr_assert(check(r, 1 * MiB, 5));
  cr_assert_lt(f1 - f0, 64, "%ld faults for a growth into faulted pages", f1 - f0);
  char *again = ma_realloc(r, 5 * MiB);
  cr_assert_eq(again, r, "the rest of the range lies behind it");
  cr_assert(check(again, 1 * MiB, 5));
  cr_assert_eq(ma_malloc(1 * MiB), blk, "the old pages were cached");
  ma_free(again);
  ma_free(blk);
}

/* A small block that grows past the slab classes starts at the front of the largest range,
 * so that its next growths are in place. */
Test(large_cache, small_block_growing_large_starts_in_the_roomiest_range) {
  char *small = ma_malloc(2 * MiB), *big = ma_malloc(8 * MiB);
  memset(small, 1, 2 * MiB);
  memset(big, 1, 8 * MiB);
  ma_free(small);
  ma_free(big);
  char *v = ma_malloc(100 * KiB);
  fill(v, 100 * KiB, 7);
  char *w = ma_realloc(v, 200 * KiB);
  cr_assert_eq(w, big, "worst fit for a growing block");
  cr_assert(check(w, 100 * KiB, 7));
  char *x = ma_realloc(w, 5 * MiB);
  cr_assert_eq(x, w, "in place over the range");
  cr_assert(check(x, 100 * KiB, 7));
  char *y = ma_malloc(2 * MiB);
  cr_assert_eq(y, small, "the small range was left for others");
  ma_free(x);
  ma_free(y);
}

Test(large_cache, shrunk_tail_is_cached) {
  char *p = ma_malloc(8 * MiB);
  memset(p, 1, 8 * MiB);
  fill(p, 1 * MiB, 8);
  char *q = ma_realloc(p, 1 * MiB);
  cr_assert_eq(q, p);
  cr_assert(check(q, 1 * MiB, 8));
  cr_assert_eq(large_cached_bytes(), 7 * MiB, "the tail is kept, not unmapped");
  char *r = ma_malloc(4 * MiB);
  cr_assert_eq(r, p + 1 * MiB, "served from the tail");
  ma_free(q);
  ma_free(r);
}

Test(large_cache, purged_after_the_delay) {
  cached_range(16 * MiB);
  cr_assert_eq(large_cached_bytes(), 16 * MiB);
  ma_heap_collect(false); /* within the delay: kept */
  cr_assert_eq(large_cached_bytes(), 16 * MiB, "kept within the purge delay");
  usleep(300 * 1000);        /* the default delay is 100 ms */
  void *w = ma_malloc(7000); /* any slow path after the delay purges */
  cr_assert_eq(large_cached_bytes(), 0, "unmapped after the delay");
  ma_free(w);
  cached_range(4 * MiB);
  cr_assert_eq(ma_heap_collect(true), 0);
  cr_assert_eq(large_cached_bytes(), 0, "collect(true) unmaps at once");
}

/* The expiry keeps up to `keep` bytes of expired ranges, each for another delay (huge.c's
 * huge_cache_bounds passes what the program asked of the cache lately), and takes the oldest
 * first; with `keep` 0 every expired range goes. The cache alone, driven with made-up times
 * (no ma_* call in this test: no other thread uses it). */
Test(large_cache, expiry_keeps_up_to_keep_bytes_oldest_first) {
  size_t ps = os_page_size();
  char *m = os_alloc(5 * ps, 0, false);
  cr_assert_not_null(m);
  huge_victims v = {0};
  /* two ranges of two pages, of different mappings (they never merge), cached at 0 and 10 */
  huge_cache_put((huge_cached){(uintptr_t)m, 2 * ps, 0, 1}, 0, 0, 100, 64 * MiB, 0, &v);
  huge_cache_put((huge_cached){(uintptr_t)m + 3 * ps, 2 * ps, 0, 2}, 0, 10, 100, 64 * MiB, 0, &v);
  cr_assert_eq(huge_cache_total(), 4 * ps);
  cr_assert_eq(huge_cache_next_expiry(), 100);
  huge_cache_expire(false, 200, 100, 2 * ps, &v); /* both expired, room for one */
  cr_assert_eq(v.n, 1, "one range goes");
  cr_assert_eq(v.head, (uintptr_t)m, "the oldest");
  cr_assert_eq(huge_cache_total(), 2 * ps, "the other is kept");
  cr_assert_eq(huge_cache_next_expiry(), 300, "for another delay");
  huge_cache_expire(false, 299, 100, 0, &v);
  cr_assert_eq(huge_cache_total(), 2 * ps, "not expired again yet");
  huge_cache_expire(false, 300, 100, 0, &v);
  cr_assert_eq(huge_cache_total(), 0, "expired, nothing kept");
  cr_assert_eq(v.n, 2);
  huge_victims_unmap(&v);
  os_release_owned(m + 2 * ps, ps); /* the page between them */
}

Test(large_cache, cache_is_bounded_by_the_live_large_bytes) {
  enum { N = 40 };
  char *v[N];
  for (int i = 0; i < N; i++) {
    v[i] = ma_malloc(4 * MiB);
    memset(v[i], 1, 4 * MiB);
  }
  for (int i = 0; i < N; i++) ma_free(v[i]);
  /* 160 MiB freed with nothing live: the cap is 64 MiB. */
  cr_assert_leq(large_cached_bytes(), 64 * MiB, "cached %zu", large_cached_bytes());
  cr_assert_geq(large_cached_bytes(), 60 * MiB, "evicts no more than needed: cached %zu",
                large_cached_bytes());
}

/* Hundreds of freed blocks, each its own mapping (no merge), are all kept and all served
 * again from the cache: many threads replacing medium buffers (300 KB blocks from 1000
 * threads) had unmapped and mapped again most of them with 64 ranges (95k system calls
 * against 2.8k). */
Test(large_cache, keeps_hundreds_of_ranges_and_serves_them_all) {
  enum { N = 200 };
  const size_t n = 256 * KiB;
  static char *v[N], *w[N];
  for (int i = 0; i < N; i++) {
    v[i] = ma_malloc(n);
    cr_assert_not_null(v[i]);
    memset(v[i], 1, n);
  }
  for (int i = 0; i < N; i++) ma_free(v[i]);
  cr_assert_eq(large_cached_bytes(), N * n, "every freed block is cached: %zu of %zu bytes",
               large_cached_bytes(), N * n);
  long f0 = minor_faults();
  for (int i = 0; i < N; i++) {
    w[i] = ma_malloc(n);
    memset(w[i], 2, n);
  }
  cr_assert_eq(large_cached_bytes(), 0, "every block came from the cache");
  cr_assert_lt(minor_faults() - f0, N, "faulted pages: %ld", minor_faults() - f0);
  for (int i = 0; i < N; i++) ma_free(w[i]);
  cr_assert_eq(ma_heap_check(), 0);
}

/* The cache's size bins: a request is served by a range of its own size when there is
 * one, whatever the order the ranges were freed in and however many larger ones there are
 * (the bigger ranges stay whole). */
Test(large_cache, best_fit_among_many_sizes) {
  enum { N = 96 };
  static char *v[N];
  for (int i = 0; i < N; i++) { /* sizes 132 KiB .. 512 KiB, shuffled */
    size_t n = (132 + (size_t)((i * 37) % N) * 4) * KiB;
    v[i] = ma_malloc(n);
    cr_assert_not_null(v[i]);
    memset(v[i], 1, n);
  }
  for (int i = 0; i < N; i++) ma_free(v[i]);
  size_t before = large_cached_bytes();
  for (int i = 0; i < N; i += 7) {
    size_t n = (132 + (size_t)((i * 37) % N) * 4) * KiB;
    char *p = ma_malloc(n);
    cr_assert_eq(p, v[i], "the %zu KiB request got %p, not the %zu KiB range freed at %p", n / KiB,
                 (void *)p, n / KiB, (void *)v[i]);
    cr_assert_eq(large_cached_bytes(), before - n);
    before -= n;
  }
  cr_assert_eq(ma_heap_check(), 0);
}

Test(large_cache, over_aligned_blocks_are_never_cached_or_split) {
  cached_range(8 * MiB);
  size_t al = 2 * MiB;
  char *a = ma_aligned_alloc(al, 3 * MiB);
  cr_assert_not_null(a);
  cr_assert_eq((uintptr_t)a % al, 0, "aligned");
  fill(a, 3 * MiB, 9);
  char *b = ma_realloc(a, 6 * MiB);
  cr_assert_not_null(b);
  cr_assert(check(b, 3 * MiB, 9));
  size_t before = large_cached_bytes();
  ma_free(b);
  cr_assert_eq(large_cached_bytes(), before, "an over-aligned mapping is unmapped, not cached");
  char *c = ma_aligned_alloc(al, 1 * MiB);
  cr_assert_eq((uintptr_t)c % al, 0, "not served from an unaligned cached range");
  ma_free(c);
}

Test(large_cache, calloc_from_the_cache_is_zeroed) {
  char *p = cached_range(4 * MiB);
  char *q = ma_calloc(1, 3 * MiB);
  cr_assert_eq(q, p);
  for (size_t i = 0; i < 3 * MiB; i += 4093) cr_assert_eq(q[i], 0, "byte %zu", i);
  ma_free(q);
}
#else /* MA_SECURE */

#include "guard_common.h"

/* A freed guarded block is cached, its guard marker kept in its page, when the kernel has
 * guard markers (guard_large/freed_blocks_are_reused_guarded checks the reuse); with PROT_NONE
 * guards (a mapping each, which the cache's splits and merges would have to move) it is
 * unmapped. */
Test(large_secure, freed_block_is_cached_with_markers_else_unmapped) {
  size_t g = (size_t)sysconf(_SC_PAGESIZE);
  char *p = ma_malloc(4 * MiB);
  cr_assert_not_null(p);
  memset(p, 1, 4 * MiB);
  ma_free(p);
  if (os_guard_supported())
    cr_assert_eq(large_cached_bytes(), 4 * MiB + g, "the block and its guard page are cached");
  size_t before = large_cached_bytes();
  os_guard_disable();
  p = ma_malloc(8 * MiB); /* larger than anything cached: a new mapping, PROT_NONE guard */
  cr_assert_not_null(p);
  memset(p, 1, 8 * MiB);
  ma_free(p);
  cr_assert_eq(large_cached_bytes(), before, "a block with a PROT_NONE guard is never cached");
}

/* A write one byte past the usable size of a large block faults at once, also after the
 * block shrank and after it grew (the guard page follows it). */
static void overflow_faults(size_t n, size_t resize) {
  char *p = ma_malloc(n);
  cr_assert_not_null(p);
  if (resize) p = ma_realloc(p, resize);
  cr_assert_not_null(p);
  size_t u = ma_usable_size(p);
  fill(p, u, 3);
  cr_assert(check(p, u, 3), "the whole usable size is writable");
  cr_assert(write_faults(p + u), "a write past the usable size did not fault");
  ma_free(p);
}

Test(large_secure, overflow_off_the_end_faults) {
  overflow_faults(1 * MiB, 0);
}

Test(large_secure, overflow_after_shrink_faults) {
  overflow_faults(4 * MiB, 1 * MiB);
}

Test(large_secure, overflow_after_growth_faults) {
  overflow_faults(1 * MiB, 8 * MiB);
}
#endif

/* ---- both builds ---------------------------------------------------------------------- */
#include <pthread.h>
#include <stdatomic.h>

static atomic_bool grower_done;

/* Other threads' large blocks and checks while one thread's realloc moves its block with
 * mremap outside the lock (the block is out of the table meanwhile, still counted). */
static void *large_churn(void *arg) {
  (void)arg;
  unsigned k = 0;
  while (!atomic_load(&grower_done)) {
    size_t n = (200 + (k++ % 7) * 300) * KiB;
    char *p = ma_malloc(n);
    cr_assert_not_null(p);
    fill(p, n, k);
    cr_assert(check(p, n, k));
    ma_free(p);
    if (k % 16 == 0) cr_assert_eq(ma_heap_check(), 0);
  }
  return NULL;
}

Test(large_threads, growth_by_mremap_while_other_threads_use_large_blocks) {
  pthread_t t[2];
  atomic_store(&grower_done, false);
  for (int i = 0; i < 2; i++) cr_assert_eq(pthread_create(&t[i], NULL, large_churn, NULL), 0);
  for (int round = 0; round < 20; round++) {
    size_t n = 1 * MiB;
    char *p = ma_malloc(n);
    cr_assert_not_null(p);
    fill(p, n, 7);
    for (int g = 0; g < 12; g++) { /* growths of an eighth: mremap, not a copy */
      size_t m = n + n / 8;
      char *q = ma_realloc(p, m);
      cr_assert_not_null(q);
      cr_assert(check(q, 1 * MiB, 7), "round %d growth %d: the first MiB changed", round, g);
      p = q;
      n = m;
    }
    ma_free(p);
  }
  atomic_store(&grower_done, true);
  for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
  cr_assert_eq(ma_heap_check(), 0);
}

/* The first m bytes of a block `fill` wrote with `seed` (every 512th byte). */
static bool check_prefix(const void *p, size_t m, unsigned seed) {
  const unsigned char *c = p;
  for (size_t i = 0; i < m; i += 512)
    if (c[i] != (unsigned char)(seed + i / 512)) return false;
  return true;
}

/* Random large-block traffic (allocations of 128 KiB..12 MiB, frees, growth and shrinking by
 * realloc and by huge_realloc itself, in random order; seeded by MAPALLOC_TEST_SEED or the
 * time, which the log prints): every block keeps its contents across a realloc, the cache's
 * splits, merges, in-place growths and evictions keep the table and the cache consistent
 * (ma_heap_check), and every usable byte stays writable. Runs with chunks off here (this
 * test's environment) and in the secure build with guard pages. */
Test(large_random, traffic_keeps_contents) {
  enum { SLOTS = 24, STEPS = 800 };
  uint64_t seed = test_seed(), x = seed | 1;
  char *b[SLOTS] = {0};
  size_t n[SLOTS] = {0};
  for (unsigned step = 0; step < STEPS; step++) {
    test_rand(&x);
    unsigned k = (unsigned)(x % SLOTS), op = (unsigned)((x >> 8) % 8);
    size_t want = 128 * KiB + (size_t)((x >> 16) % (12 * MiB - 128 * KiB));
    if (b[k] && op < 5)
      cr_assert(check(b[k], n[k], k), "seed %llu step %u: slot %u changed",
                (unsigned long long)seed, step, k);
    if (!b[k]) {
      b[k] = ma_malloc(want);
    } else if (op < 2) { /* a shrink by a few pages: huge_realloc itself */
      bool moved;
      size_t u = ma_usable_size(b[k]), cut = 4 * KiB * (1 + (x >> 40) % 3);
      cr_assert_eq(huge_realloc(b[k], u - cut, u - cut, &moved), b[k]);
      want = u - cut;
    } else if (op < 5) {
      b[k] = ma_realloc(b[k], want);
      if (b[k])
        cr_assert(check_prefix(b[k], n[k] < want ? n[k] : want, k), "seed %llu step %u",
                  (unsigned long long)seed, step);
    } else {
      ma_free(b[k]);
      b[k] = NULL;
      continue;
    }
    cr_assert_not_null(b[k], "seed %llu step %u", (unsigned long long)seed, step);
    n[k] = ma_usable_size(b[k]);
    cr_assert_geq(n[k], want);
    fill(b[k], n[k], k);
    if (step % 64 == 0)
      cr_assert_eq(ma_heap_check(), 0, "seed %llu step %u", (unsigned long long)seed, step);
  }
  for (unsigned k = 0; k < SLOTS; k++)
    if (b[k]) {
      cr_assert(check(b[k], n[k], k));
      ma_free(b[k]);
    }
  cr_assert_eq(ma_heap_check(), 0);
}
