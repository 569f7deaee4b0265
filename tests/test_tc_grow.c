/* Thread-cache bounds that grow (src/malloc/heap.c, heap_tc_grow): a list that overflows
 * with the thread's own blocks doubles its bound within per-class and per-thread limits; a
 * list of other threads' blocks keeps its bound; a forced collection puts the bounds back. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "malloc/heap_internal.h"
#include "mapalloc/heap.h"

#define BURST 400
#define SIZE  1000

static void *burst[BURST];

/* One burst: BURST blocks of `size` allocated, then freed in the same order. */
static void one_burst(size_t size) {
  for (int i = 0; i < BURST; i++) {
    burst[i] = ma_malloc(size);
    cr_assert_not_null(burst[i]);
    *(volatile char *)burst[i] = 1;
  }
  for (int i = 0; i < BURST; i++) ma_free(burst[i]);
}

static size_t cached_blocks(unsigned cls) {
  size_t n[HEAP_NCLASSES] = {0};
  heap_tc_blocks(n);
  return n[cls];
}

static uint32_t bound_of(unsigned cls) {
  return heap_get()->tc[cls].max;
}

Test(tc_grow, bursts_longer_than_the_bound_stay_in_the_cache) {
  unsigned cls = heap_size_class(SIZE);
  ma_free(ma_malloc(SIZE)); /* the heap exists */
  uint32_t base = bound_of(cls);
  cr_assert_lt(base, BURST, "the test needs a burst longer than the bound (%u)", base);
  for (int r = 0; r < 8; r++) one_burst(SIZE);
  cr_assert_geq(bound_of(cls), BURST, "bound %u -> %u", base, bound_of(cls));
  ma_heap_stats a, b;
  ma_heap_stats_get(&a);
  one_burst(SIZE);
  ma_heap_stats_get(&b);
  /* Blocks counted as they move between the cache and the slabs: none moved. */
  cr_assert_eq(b.allocs, a.allocs, "allocs %zu -> %zu", a.allocs, b.allocs);
  cr_assert_eq(b.frees, a.frees, "frees %zu -> %zu", a.frees, b.frees);
  cr_assert_geq(cached_blocks(cls), BURST);
}

/* Rounds of n blocks of `size` allocated, then freed in the same order: each round the
 * class's list runs empty and then overflows. */
static void cycles(size_t size, int n, int rounds) {
  enum { MAXN = 8000 };
  static void *blocks[MAXN];
  cr_assert_leq(n, MAXN);
  for (int r = 0; r < rounds; r++) {
    for (int i = 0; i < n; i++) cr_assert_not_null(blocks[i] = ma_malloc(size));
    for (int i = 0; i < n; i++) ma_free(blocks[i]);
  }
}

static size_t cached_bytes(size_t size) {
  unsigned cls = heap_size_class(size);
  return cached_blocks(cls) * heap_cls_size[cls];
}

/* Run in a thread of its own: the growth budget is per thread. */
static void *grow_one_class(void *arg) {
  (void)arg;
  cycles(16000, 400, 10); /* 6.4 MB a round: past HEAP_TC_GROW_CLASS */
  unsigned cls = heap_size_class(16000);
  cr_assert_leq((size_t)bound_of(cls) * heap_cls_size[cls], HEAP_TC_GROW_CLASS, "bound %u",
                bound_of(cls));
  cr_assert_gt(cached_bytes(16000), (size_t)64 << 10, "the class grew");
  cycles(16, 8000, 14); /* 8000 blocks of 16 B: a bound of 8192 holds them */
  cr_assert_leq(bound_of(heap_size_class(16)), HEAP_TC_GROW_BLOCKS);
  cr_assert_geq(bound_of(heap_size_class(16)), 8000, "bursts of 8000 fit");
  return NULL;
}

static void *grow_many_classes(void *arg) {
  static const size_t sizes[] = {256, 1000, 4000, 8000, 16000};
  size_t *total = arg;
  for (unsigned s = 0; s < sizeof sizes / sizeof sizes[0]; s++) cycles(sizes[s], 2000, 8);
  for (unsigned s = 0; s < sizeof sizes / sizeof sizes[0]; s++) *total += cached_bytes(sizes[s]);
  return NULL;
}

Test(tc_grow, growth_is_bounded_per_class_and_per_thread) {
  pthread_t t;
  cr_assert_eq(pthread_create(&t, NULL, grow_one_class, NULL), 0);
  cr_assert_eq(pthread_join(t, NULL), 0);
  size_t total = 0;
  cr_assert_eq(pthread_create(&t, NULL, grow_many_classes, &total), 0);
  cr_assert_eq(pthread_join(t, NULL), 0);
  /* Each class's base bound holds at most 64 KiB; growth past it is HEAP_TC_GROW_THREAD
   * (2000 blocks of each class would be 58 MB). */
  size_t limit = 5 * ((size_t)64 << 10) + HEAP_TC_GROW_THREAD;
  cr_assert_leq(total, limit, "%zu bytes cached in 5 classes (limit %zu)", total, limit);
  cr_assert_gt(total, HEAP_TC_GROW_THREAD / 2, "the classes grew (%zu bytes cached)", total);
}

/* A list that overflows without running empty in between (a thread frees a structure it
 * built, and then waits) grows at most once, at its first trim: what it would keep is not
 * reused, and an idle thread's cache is its own to give back. */
static void *build_then_free(void *arg) {
  enum { N = 20000 };
  static void *blocks[N];
  uint32_t *bounds = arg;
  unsigned cls = heap_size_class(256);
  ma_free(ma_malloc(256));
  bounds[0] = bound_of(cls);
  for (int i = 0; i < N; i++) cr_assert_not_null(blocks[i] = ma_malloc(256));
  for (int i = 0; i < N; i++) ma_free(blocks[i]);
  bounds[1] = bound_of(cls);
  return NULL;
}

Test(tc_grow, a_list_that_only_fills_does_not_keep_growing) {
  uint32_t bounds[2];
  pthread_t t;
  cr_assert_eq(pthread_create(&t, NULL, build_then_free, bounds), 0);
  cr_assert_eq(pthread_join(t, NULL), 0);
  cr_assert_leq(bounds[1], 2 * bounds[0], "bound %u -> %u after one build and free", bounds[0],
                bounds[1]);
}

Test(tc_grow, a_forced_collection_puts_the_bounds_back) {
  unsigned cls = heap_size_class(SIZE);
  ma_free(ma_malloc(SIZE));
  uint32_t base = bound_of(cls);
  for (int r = 0; r < 8; r++) one_burst(SIZE);
  cr_assert_gt(bound_of(cls), base);
  cr_assert_eq(ma_heap_collect(true), 0);
  cr_assert_eq(cached_blocks(cls), 0);
  cr_assert_eq(bound_of(cls), base, "bound %u after the collection, base %u", bound_of(cls), base);
  /* And the next bursts grow it again. */
  one_burst(SIZE);
  cr_assert_gt(bound_of(cls), base);
}

struct foreign {
  void **blocks;
  int n;
  unsigned cls;
  uint32_t bound_after;
};

static void *free_foreign(void *arg) {
  struct foreign *f = arg;
  for (int i = 0; i < f->n; i++) ma_free(f->blocks[i]);
  f->bound_after = bound_of(f->cls);
  return NULL;
}

Test(tc_grow, other_threads_blocks_do_not_grow_the_list) {
  enum { N = 4000 };
  static void *blocks[N];
  unsigned cls = heap_size_class(SIZE);
  ma_free(ma_malloc(SIZE));
  uint32_t base = bound_of(cls);
  for (int r = 0; r < 4; r++) {
    for (int i = 0; i < N; i++) cr_assert_not_null(blocks[i] = ma_malloc(SIZE));
    struct foreign f = {.blocks = blocks, .n = N, .cls = cls};
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, free_foreign, &f), 0);
    cr_assert_eq(pthread_join(t, NULL), 0);
    cr_assert_eq(f.bound_after, base, "round %d: the freeing thread's bound %u, base %u", r,
                 f.bound_after, base);
  }
}

/* A trim gives back runs of blocks of one slab with one relink each (heap_tc_run,
 * obj_slab_put_run): bursts of frees in allocation order and in reverse (sh6bench's
 * shape), over many slabs of several classes, interleaved so that runs end at slab and
 * class boundaries. Every slab's count must match its lists (ma_heap_check), every block
 * come back (live 0), and the slabs emptied must retire, so that a collection returns
 * their memory: a run whose count was lost would keep its slab. */
Test(tc_grow, bursts_go_back_to_their_slabs_in_runs) {
  enum { N = 24000 };
  static const size_t sizes[] = {16, 48, 200, 1000, 3000};
  static void *blocks[N];
  ma_free(ma_malloc(16));
  ma_heap_collect(true);
  ma_heap_stats s0, s1, s2;
  ma_heap_stats_get(&s0);
  for (int round = 0; round < 4; round++) {
    for (int i = 0; i < N; i++) {
      size_t size = sizes[(i / 37) % 5];
      cr_assert_not_null(blocks[i] = ma_malloc(size));
      memset(blocks[i], i & 0xff, size);
    }
    ma_heap_stats_get(&s1);
    cr_assert_gt(s1.committed, s0.committed + ((size_t)4 << 20), "%zu -> %zu", s0.committed,
                 s1.committed);
    if (round & 1) {
      for (int i = N - 1; i >= 0; i--) ma_free(blocks[i]);
    } else {
      for (int i = 0; i < N; i++) ma_free(blocks[i]);
    }
    cr_assert_eq(ma_heap_check(), 0);
  }
  cr_assert_eq(ma_heap_collect(true), 0);
  cr_assert_eq(ma_heap_check(), 0);
  ma_heap_stats_get(&s2);
  cr_assert_eq(s2.allocated, s0.allocated, "allocated %zu -> %zu", s0.allocated, s2.allocated);
  cr_assert_lt(s2.committed, s0.committed + ((size_t)1 << 20), "committed %zu -> %zu -> %zu",
               s0.committed, s1.committed, s2.committed);
}

/* Pages resident in the process (/proc/self/statm). */
static long resident_pages(void) {
  FILE *f = fopen("/proc/self/statm", "r");
  cr_assert_not_null(f);
  long size = 0, resident = 0;
  cr_assert_eq(fscanf(f, "%ld %ld", &size, &resident), 2);
  fclose(f);
  return resident;
}

struct first_blocks {
  long pages;     /* resident pages the blocks added */
  unsigned nset;  /* classes used */
  unsigned worst; /* most bytes carved or cached for one class, past its one block */
};

static void *one_block_per_class(void *arg) {
  struct first_blocks *r = arg;
  static void *blocks[HEAP_NCLASSES];
  ma_free(ma_malloc(16)); /* the thread's heap and first segment */
  long before = resident_pages();
  unsigned n = 0;
  for (unsigned c = 0; c < HEAP_NCLASSES; c++) {
    if (heap_cls_size[c] < 512 || heap_cls_size[c] > (8u << 10)) continue;
    cr_assert_not_null(blocks[n] = ma_malloc(heap_cls_size[c]));
    *(volatile char *)blocks[n] = 1;
    /* Blocks the refill carved in the block's slab or left in the thread's cache, past
     * those a secure carve must shuffle together (its window). */
    obj_segment *seg = obj_segment_of(blocks[n]);
    cr_assert_not_null(seg);
    unsigned carved = (unsigned)obj_slab_of(seg, blocks[n])->carved;
    unsigned cached = heap_tc_cached(heap_get(), c) + 1;
    unsigned taken = carved > cached ? carved : cached;
    unsigned least = obj_secure_on() ? obj_shuffle_window : 1;
    unsigned extra = taken > least ? taken - 1 : 0;
    if (extra * heap_cls_size[c] > r->worst) r->worst = extra * heap_cls_size[c];
    n++;
  }
  r->pages = resident_pages() - before;
  r->nset = n;
  while (n) ma_free(blocks[--n]);
  return NULL;
}

/* A thread that takes one block of many classes touches about a page of each (the first
 * refill of a class takes HEAP_FILL_FIRST bytes of blocks, carved as they are taken), not
 * half a bound's worth: 1000 threads with 64 blocks each of 16-1528 B held 300 KiB of RSS
 * per thread that way. (Each class's first slab may start a segment: its header page.) */
Test(tc_grow, a_threads_first_blocks_touch_a_page_or_so_per_class) {
  struct first_blocks r = {0, 0, 0};
  pthread_t t;
  ma_free(ma_malloc(16)); /* starts the purger thread (its stack) before the measurement */
  usleep(20000);
  cr_assert_eq(pthread_create(&t, NULL, one_block_per_class, &r), 0);
  cr_assert_eq(pthread_join(t, NULL), 0);
  cr_assert_geq(r.nset, 8, "%u classes between 512 B and 8 KiB", r.nset);
  cr_assert_leq(r.worst, 4u << 10, "a class's first refill carved or cached %u bytes more",
                r.worst);
  /* (RSS also moves with what other threads do: a loose bound; 127 pages before. A
   * secure carve shuffles a window of 4 blocks, each a page of its own here.) */
  long per_class = obj_secure_on() ? 5 : 3;
#if OBJ_ASAN
  per_class *= 2; /* ASan's shadow of the slabs it poisons is resident too */
#endif
  cr_assert_leq(r.pages, (long)r.nset * per_class, "%ld pages for one block of each of %u classes",
                r.pages, r.nset);
}

/* Blocks handed out from fresh slabs come in carve order: address order in the default
 * build, shuffled within windows in a secure run, including the blocks a refill carves
 * straight into the thread cache (slab_carve_chain). Measured on a new thread's blocks of
 * one class: the share of next blocks that sit right after the one before. */
static void *carve_order(void *arg) {
  enum { N = 4096 };
  static char *b[N];
  double *share = arg;
  unsigned next = 0, stride = heap_cls_size[heap_size_class(48)];
  for (int i = 0; i < N; i++) cr_assert_not_null(b[i] = ma_malloc(48));
  for (int i = 1; i < N; i++) next += b[i] == b[i - 1] + stride;
  for (int i = 0; i < N; i++) ma_free(b[i]);
  *share = (double)next / (N - 1);
  return NULL;
}

Test(tc_grow, fresh_blocks_come_in_carve_order) {
  double share = -1;
  pthread_t t;
  cr_assert_eq(pthread_create(&t, NULL, carve_order, &share), 0);
  cr_assert_eq(pthread_join(t, NULL), 0);
  if (obj_secure_on() && obj_shuffle_window > 1)
    cr_assert_lt(share, 0.6, "%.2f of the blocks follow their predecessor: not shuffled", share);
  else
    cr_assert_gt(share, 0.9, "%.2f of the blocks follow their predecessor", share);
}
