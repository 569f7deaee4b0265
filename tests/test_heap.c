/* Tests of the heap (src/malloc/): the ma_* API, size classes, large blocks, misuse,
 * threads, fork and memory return. The malloc exports of the preload library are tested by
 * tests/preload/ (run by ctest, see tests/preload.cmake). */
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "malloc/heap_internal.h"
#include "mapalloc/heap.h"
#include "mapalloc/pool.h"
#include "common.h"

/* Under AddressSanitizer the process's RSS also holds shadow memory and ASan's own thread
 * bookkeeping, which never shrink: the RSS bounds that are about *our* memory are checked in
 * normal builds only (the functional checks of the same tests run everywhere). */
#if defined(__SANITIZE_ADDRESS__)
#define RSS_BOUNDS 0
#else
#define RSS_BOUNDS 1
#endif
/* Under ThreadSanitizer (clang: __has_feature only) the shadow of every page touched stays
 * resident, several times the page's size, after the page is purged: RSS cannot show a
 * purge at all there. */
#if defined(__SANITIZE_THREAD__)
#define RSS_SHOWS_PURGE 0
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define RSS_SHOWS_PURGE 0
#endif
#endif
#ifndef RSS_SHOWS_PURGE
#define RSS_SHOWS_PURGE 1
#endif
#if !RSS_SHOWS_PURGE
#undef RSS_BOUNDS
#define RSS_BOUNDS 0
#endif

static size_t rss_bytes(void) {
  FILE *f = fopen("/proc/self/statm", "r");
  long size = 0, rss = 0;
  if (f) {
    if (fscanf(f, "%ld %ld", &size, &rss) != 2) rss = 0;
    fclose(f);
  }
  return (size_t)rss * (size_t)sysconf(_SC_PAGESIZE);
}

static void fill(void *p, size_t n, unsigned seed) {
  unsigned char *c = p;
  for (size_t i = 0; i < n; i++) c[i] = (unsigned char)(seed + i * 7);
}

static bool check(const void *p, size_t n, unsigned seed) {
  const unsigned char *c = p;
  for (size_t i = 0; i < n; i++)
    if (c[i] != (unsigned char)(seed + i * 7)) return false;
  return true;
}

/* ---------------------------------------------------------------------------------
 * Size classes
 * ------------------------------------------------------------------------------- */
static size_t ref_class_size(size_t s) {
  if (s == 0) s = 1;
  if (s <= 128) return (s + 15) & ~(size_t)15;
  size_t k = 63 - (size_t)__builtin_clzl(s - 1); /* 2^k < s <= 2^(k+1) */
  size_t step = (size_t)1 << (k - 3);            /* 8 classes per power of two */
  return (s + step - 1) / step * step;
}

Test(heap_classes, tables_match_the_formula) {
  for (size_t s = 0; s <= HEAP_MAX_SMALL; s++) {
    unsigned c = heap_size_class(s);
    cr_assert_lt(c, HEAP_NCLASSES);
    cr_assert_eq(heap_cls_size[c], ref_class_size(s), "size %zu", s);
    if (c > 0) cr_assert_lt(heap_cls_size[c - 1], s ? s : 1, "size %zu not in smallest class", s);
  }
}

Test(heap_classes, waste_at_most_one_eighth_and_16_byte_multiples) {
  for (unsigned c = 0; c < HEAP_NCLASSES; c++) {
    cr_assert_eq(heap_cls_size[c] % 16, 0);
    if (c) cr_assert_gt(heap_cls_size[c], heap_cls_size[c - 1]);
  }
  for (size_t s = 129; s <= HEAP_MAX_SMALL; s++) {
    size_t waste = heap_cls_size[heap_size_class(s)] - s;
    cr_assert_leq(waste * 8, s, "size %zu wastes %zu", s, waste);
  }
}

/* ---------------------------------------------------------------------------------
 * malloc / free / usable size
 * ------------------------------------------------------------------------------- */
Test(heap_malloc, sizes_alignment_usable_writable) {
  static const size_t sizes[] = {0,     1,     8,      15,     16,      17,     100,
                                 128,   129,   1000,   1024,   1025,    4096,   5000,
                                 65536, 70000, 131072, 131073, 1 << 20, 3000000};
  void *ps[sizeof sizes / sizeof sizes[0]];
  for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
    ps[i] = ma_malloc(sizes[i]);
    cr_assert_not_null(ps[i]);
    cr_assert_eq((uintptr_t)ps[i] % 16, 0);
    size_t u = ma_usable_size(ps[i]);
    cr_assert_geq(u, sizes[i]);
    if (sizes[i] <= HEAP_MAX_SMALL)
      cr_assert_eq(u, ref_class_size(sizes[i]));
    else
      cr_assert_eq(u, (sizes[i] + 4095) & ~(size_t)4095);
    fill(ps[i], u, (unsigned)i);
  }
  for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
    cr_assert(check(ps[i], ma_usable_size(ps[i]), (unsigned)i), "block %zu corrupted", i);
    ma_free(ps[i]);
  }
  cr_assert_eq(ma_usable_size(NULL), 0);
}

Test(heap_malloc, many_blocks_distinct_and_intact) {
  enum { N = 20000 };
  static void *p[N];
  for (int i = 0; i < N; i++) {
    size_t sz = 16 + (size_t)(i * 37) % 3000;
    p[i] = ma_malloc(sz);
    cr_assert_not_null(p[i]);
    memset(p[i], i & 0xff, sz);
  }
  for (int i = 0; i < N; i++) {
    size_t sz = 16 + (size_t)(i * 37) % 3000;
    unsigned char *c = p[i];
    cr_assert(c[0] == (i & 0xff) && c[sz - 1] == (i & 0xff), "block %d overwritten", i);
    if (i % 2) ma_free(p[i]);
  }
  for (int i = 0; i < N; i += 2) ma_free(p[i]);
}

/* Lists end in heap_tc_end, a read-only block the fast path's tag check rejects: emptying
 * a list again and again (refills of every size of a class's run) never hands it out, and
 * the emptied lists end in it (ma_heap_check walks them). */
Test(heap_malloc, emptied_lists_never_hand_out_their_end) {
  enum { N = 3000 };
  static void *p[N];
  for (int round = 0; round < 4; round++) {
    for (int i = 0; i < N; i++) {
      p[i] = ma_malloc(16 + (size_t)(i % 7) * 48);
      cr_assert(p[i] != NULL && p[i] != (void *)&heap_tc_end, "block %d: %p", i, p[i]);
      memset(p[i], 0xa5, 16);
    }
    for (int i = 0; i < N; i++) ma_free(p[i]);
  }
  heap *h = heap_get();
  for (unsigned c = 0; c < HEAP_NLISTS; c++)
    cr_assert(h->tc[c].head != NULL, "list %u ends in NULL", c);
  cr_assert_eq(ma_heap_check(), 0);
  cr_assert_eq(heap_tc_end.next, NULL); /* never written: it is read-only */
}

Test(heap_malloc, zero_size_is_unique) {
  void *a = ma_malloc(0), *b = ma_malloc(0);
  cr_assert(a && b && a != b);
  ma_free(a);
  ma_free(b);
}

Test(heap_malloc, enomem_for_impossible_sizes) {
  size_t sizes[] = {SIZE_MAX, SIZE_MAX - 4095, (size_t)PTRDIFF_MAX + 1, (size_t)1 << 50};
  for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
    errno = 0;
    cr_assert_null(ma_malloc(sizes[i]));
    cr_assert_eq(errno, ENOMEM);
    errno = 0;
    cr_assert_null(ma_aligned_alloc(4096, sizes[i]));
    cr_assert_eq(errno, ENOMEM);
  }
}

Test(heap_malloc, free_null_and_errno_untouched) {
  void *small = ma_malloc(40), *big = ma_malloc(1 << 20), *mid = ma_malloc(100000);
  errno = 1234;
  ma_free(NULL);
  ma_free(small);
  ma_free(big);
  ma_free(mid);
  ma_free_sized(ma_malloc(10), 10);
  cr_assert_eq(errno, 1234);
  /* Emptying and purging slabs on free must not leak errno either. */
  void *v[5000];
  for (int i = 0; i < 5000; i++) v[i] = ma_malloc(2000);
  errno = 4321;
  for (int i = 0; i < 5000; i++) ma_free(v[i]);
  ma_heap_collect(true);
  cr_assert_eq(errno, 4321);
}

/* ---------------------------------------------------------------------------------
 * calloc / realloc / reallocarray
 * ------------------------------------------------------------------------------- */
Test(heap_calloc, zeroed_even_when_reused) {
  for (size_t sz = 1; sz < 300000; sz = sz * 3 + 5) {
    unsigned char *p = ma_malloc(sz);
    memset(p, 0xAB, sz);
    ma_free(p);
    unsigned char *q = ma_calloc(1, sz);
    cr_assert_not_null(q);
    for (size_t i = 0; i < sz; i++) cr_assert_eq(q[i], 0, "size %zu byte %zu", sz, i);
    ma_free(q);
  }
  void *z = ma_calloc(0, 0);
  cr_assert_not_null(z);
  ma_free(z);
}

Test(heap_calloc, overflow_is_enomem) {
  errno = 0;
  cr_assert_null(ma_calloc(SIZE_MAX / 2, 3));
  cr_assert_eq(errno, ENOMEM);
  errno = 0;
  cr_assert_null(ma_calloc((size_t)1 << 33, (size_t)1 << 33));
  cr_assert_eq(errno, ENOMEM);
}

Test(heap_realloc, grow_and_shrink_keep_contents) {
  size_t sizes[] = {1, 24, 200, 5000, 140000, 1 << 20, 5 << 20, 300000, 100, 3, 9 << 20, 64};
  size_t cur = 10;
  unsigned char *p = ma_malloc(cur);
  fill(p, cur, 9);
  for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
    size_t keep = cur < sizes[i] ? cur : sizes[i];
    p = ma_realloc(p, sizes[i]);
    cr_assert_not_null(p);
    cr_assert_eq((uintptr_t)p % 16, 0);
    cr_assert(check(p, keep, 9), "contents lost at step %zu", i);
    cr_assert_geq(ma_usable_size(p), sizes[i]);
    fill(p, sizes[i], 9);
    cur = sizes[i];
  }
  ma_free(p);
}

Test(heap_realloc, null_zero_and_failure) {
  void *p = ma_realloc(NULL, 50);
  cr_assert_not_null(p);
  cr_assert_geq(ma_usable_size(p), 50);
  /* realloc(p, 0) frees p and returns NULL, like glibc. */
  ma_heap_stats st0, st1;
  ma_heap_stats_get(&st0);
  size_t usable = ma_usable_size(p);
  cr_assert_null(ma_realloc(p, 0));
  ma_heap_stats_get(&st1);
  cr_assert_eq(st1.allocated + usable, st0.allocated); /* freed: live bytes are exact */
  /* A failed realloc leaves the block as it was. */
  p = ma_malloc(100);
  fill(p, 100, 3);
  errno = 0;
  cr_assert_null(ma_realloc(p, SIZE_MAX - 100));
  cr_assert_eq(errno, ENOMEM);
  cr_assert(check(p, 100, 3));
  void *big = ma_malloc(1 << 20);
  cr_assert_null(ma_realloc(big, (size_t)1 << 52));
  cr_assert_eq(errno, ENOMEM);
  ma_free(big);
  ma_free(p);
}

Test(heap_realloc, reallocarray_overflow) {
  void *p = ma_malloc(32);
  memset(p, 7, 32);
  errno = 0;
  cr_assert_null(ma_reallocarray(p, SIZE_MAX / 4, 8));
  cr_assert_eq(errno, ENOMEM);
  cr_assert_eq(((unsigned char *)p)[31], 7);
  p = ma_reallocarray(p, 100, 8);
  cr_assert_not_null(p);
  cr_assert_geq(ma_usable_size(p), 800);
  cr_assert_eq(((unsigned char *)p)[31], 7);
  ma_free(p);
}

Test(heap_realloc, large_growth_in_place_keeps_data) {
  size_t n = 2 << 20;
  char *p = ma_malloc(n);
  fill(p, n, 5);
  for (int i = 0; i < 6; i++) {
    p = ma_realloc(p, n * 2);
    cr_assert_not_null(p);
    cr_assert(check(p, n, 5));
    fill(p, n * 2, 5);
    n *= 2;
  }
  ma_free(p);
}

/* ---------------------------------------------------------------------------------
 * Aligned allocation
 * ------------------------------------------------------------------------------- */
Test(heap_aligned, alignments_and_sizes) {
  for (size_t a = 1; a <= ((size_t)4 << 20); a <<= 1) {
    size_t sizes[] = {1, a / 2 + 1, a, a + 1, 3 * a, 200000};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
      void *p = ma_aligned_alloc(a, sizes[i]);
      cr_assert_not_null(p, "align %zu size %zu", a, sizes[i]);
      cr_assert_eq((uintptr_t)p % (a < 16 ? 16 : a), 0, "align %zu size %zu", a, sizes[i]);
      cr_assert_geq(ma_usable_size(p), sizes[i]);
      memset(p, 1, sizes[i]);
      ma_free(p);
    }
  }
  errno = 0;
  cr_assert_null(ma_aligned_alloc(24, 10));
  cr_assert_eq(errno, EINVAL);
  errno = 0;
  cr_assert_null(ma_aligned_alloc(0, 10));
  cr_assert_eq(errno, EINVAL);
}

Test(heap_aligned, posix_memalign_einval_leaves_out_alone) {
  void *sentinel = (void *)0x1234, *out = sentinel;
  size_t bad[] = {0, 1, 2, 4, 12, 24, 48, (size_t)1 << 63 | 8};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    errno = 77;
    cr_assert_eq(ma_posix_memalign(&out, bad[i], 64), EINVAL, "align %zu", bad[i]);
    cr_assert_eq(out, sentinel);
    cr_assert_eq(errno, 77);
  }
  cr_assert_eq(ma_posix_memalign(&out, 64, SIZE_MAX / 2), ENOMEM);
  cr_assert_eq(out, sentinel);
  for (size_t a = 8; a <= 65536; a <<= 1) {
    cr_assert_eq(ma_posix_memalign(&out, a, 100), 0);
    cr_assert_eq((uintptr_t)out % a, 0);
    ma_free(out);
  }
}

/* glibc's memalign: a power of two up to 2^63 is a valid alignment (too large: ENOMEM),
 * another alignment is rounded up to one, and only one above 2^63 is EINVAL. */
Test(heap_aligned, memalign_errors_follow_glibc) {
  size_t enomem[] = {(size_t)1 << 63, ((size_t)1 << 62) + 1, (size_t)1 << 62};
  for (size_t i = 0; i < sizeof enomem / sizeof enomem[0]; i++) {
    errno = 0;
    cr_assert_null(heap_memalign(enomem[i], 16), "align %#zx", enomem[i]);
    cr_assert_eq(errno, ENOMEM, "align %#zx: errno %d", enomem[i], errno);
  }
  size_t einval[] = {((size_t)1 << 63) + 1, SIZE_MAX};
  for (size_t i = 0; i < sizeof einval / sizeof einval[0]; i++) {
    errno = 0;
    cr_assert_null(heap_memalign(einval[i], 16), "align %#zx", einval[i]);
    cr_assert_eq(errno, EINVAL, "align %#zx: errno %d", einval[i], errno);
  }
  void *p = heap_memalign(48, 100); /* rounded up to 64 */
  cr_assert_not_null(p);
  cr_assert_eq((uintptr_t)p % 64, 0);
  ma_free(p);
}

/* ---------------------------------------------------------------------------------
 * Misuse aborts
 * ------------------------------------------------------------------------------- */
Test(heap_misuse, stack_pointer, .signal = SIGABRT) {
  int x;
  ma_free(&x);
}

Test(heap_misuse, interior_pointer, .signal = SIGABRT) {
  char *p = ma_malloc(64);
  ma_free(p + 16);
}

Test(heap_misuse, interior_pointer_large, .signal = SIGABRT) {
  char *p = ma_malloc(1 << 20);
  ma_free(p + 4096);
}

Test(heap_misuse, double_free, .signal = SIGABRT) {
  void *p = ma_malloc(48);
  ma_free(p);
  ma_free(p);
}

Test(heap_misuse, double_free_after_other_frees, .signal = SIGABRT) {
  void *p = ma_malloc(48), *q = ma_malloc(48), *r = ma_malloc(48);
  ma_free(p);
  ma_free(q);
  ma_free(r);
  ma_free(p);
}

#if OBJ_SECURE
/* The secure build checks every link a thread-cache pop follows exactly. A link forged with
 * a valid free tag (as a use-after-free write that knew the keys would) into the block's own
 * 4 MiB chunk but not at a block's start is checked by slab and block index alone (no map
 * lookup); one out of the chunk through the segment map. Both abort at the pop. */
static void pop_forged_link(uintptr_t off_from_q, bool far) {
  static char outside[64];
  char *q = ma_malloc(48), *p = ma_malloc(48);
  ma_free(q);
  ma_free(p); /* the head of the class's list, linked to q */
  obj_block *bad = far ? (obj_block *)outside : (obj_block *)(q + off_from_q);
  obj_link_set((obj_block *)p, bad);
  void *a = ma_malloc(48); /* pops p: its link is checked here */
  cr_log_error("the pop handed out %p with a forged link to %p", a, (void *)bad);
}

Test(heap_misuse, forged_link_inside_the_chunk, .signal = SIGABRT) {
  pop_forged_link(16, false);
}

Test(heap_misuse, forged_link_out_of_the_chunk, .signal = SIGABRT) {
  pop_forged_link(0, true);
}
#endif

Test(heap_misuse, double_free_large, .signal = SIGABRT) {
  void *p = ma_malloc(1 << 20);
  ma_free(p);
  ma_free(p);
}

Test(heap_misuse, foreign_pointer, .signal = SIGABRT) {
  void *p = malloc(32); /* glibc's block: not ours */
  ma_free(p);
}

Test(heap_misuse, usable_size_of_foreign_pointer, .signal = SIGABRT) {
  static char buf[64];
  (void)ma_usable_size(buf + 16);
}

static void expect_message(void (*fn)(void), const char *msg) {
  expect_abort_saying(fn, (const char *const[]){msg, " of 0x", NULL});
}

/* Pools and the heap never accept each other's blocks: the segment map's tag tells a
 * pool's segment from the heap's in the free path's one compare. */
static ma_pool *misuse_pool(void) {
  ma_pool *p;
  cr_assert_eq(ma_pool_create(&(ma_pool_opts){.obj_size = 64}, &p), 0);
  return p;
}
static void do_free_pool_object(void) {
  ma_free(ma_pool_alloc(misuse_pool()));
}
static void do_realloc_pool_object(void) {
  (void)ma_realloc(ma_pool_alloc(misuse_pool()), 200);
}
static void do_usable_size_pool_object(void) {
  (void)ma_usable_size(ma_pool_alloc(misuse_pool()));
}
static void do_pool_free_heap_block(void) {
  ma_pool_free(misuse_pool(), ma_malloc(64));
}

Test(heap_misuse, pool_objects_and_heap_blocks_stay_apart) {
  expect_message(do_free_pool_object, "mapalloc: invalid free");
  expect_message(do_realloc_pool_object, "mapalloc: invalid pointer");
  expect_message(do_usable_size_pool_object, "mapalloc: invalid pointer");
  expect_message(do_pool_free_heap_block, "mapalloc: free of another pool's object");
}

static void do_double_free(void) {
  void *p = ma_malloc(100);
  ma_free(p);
  ma_free(p);
}
static void do_invalid_free(void) {
  char *p = ma_malloc(100);
  ma_free(p + 16);
}

Test(heap_misuse, messages) {
  expect_message(do_double_free, "mapalloc: double free");
  expect_message(do_invalid_free, "mapalloc: invalid free");
}

/* ---------------------------------------------------------------------------------
 * Threads
 * ------------------------------------------------------------------------------- */
#define RING 1024
typedef struct ring {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  void *slot[RING];
  size_t head, tail;
  bool done;
} ring;

static void ring_put(ring *r, void *p) {
  pthread_mutex_lock(&r->mu);
  while (r->head - r->tail == RING) pthread_cond_wait(&r->cv, &r->mu);
  r->slot[r->head++ % RING] = p;
  pthread_cond_broadcast(&r->cv);
  pthread_mutex_unlock(&r->mu);
}

static void *ring_get(ring *r) {
  pthread_mutex_lock(&r->mu);
  while (r->head == r->tail && !r->done) pthread_cond_wait(&r->cv, &r->mu);
  void *p = r->head == r->tail ? NULL : r->slot[r->tail++ % RING];
  pthread_cond_broadcast(&r->cv);
  pthread_mutex_unlock(&r->mu);
  return p;
}

static void *ring_try_get(ring *r) {
  pthread_mutex_lock(&r->mu);
  void *p = r->head == r->tail ? NULL : r->slot[r->tail++ % RING];
  if (p) pthread_cond_broadcast(&r->cv);
  pthread_mutex_unlock(&r->mu);
  return p;
}

typedef struct worker {
  ring *out, *in;
  unsigned id;
  size_t n;
  size_t bad;
} worker;

/* Each block carries its size and a tag; the consumer checks every byte before freeing. */
static void *producer_consumer(void *arg) {
  worker *w = arg;
  void *local[64] = {0};
  for (size_t i = 0; i < w->n; i++) {
    size_t sz = 16 + (i * 131 + w->id * 17) % (i % 64 == 0 ? 200000 : 2000);
    unsigned char *p = ma_malloc(sz);
    if (!p) abort();
    memcpy(p, &sz, sizeof sz);
    memset(p + sizeof sz, (int)(w->id + i) & 0xff, sz - sizeof sz);
    if (i % 3 == 0) { /* some stay local for a while */
      size_t k = i % 64;
      if (local[k]) ma_free(local[k]);
      local[k] = p;
    } else {
      ring_put(w->out, p);
    }
    /* consume what the neighbour sent, if anything (never block: a drainer may have taken
     * it, and the neighbour may have finished) */
    unsigned char *q = ring_try_get(w->in);
    if (q) {
      size_t qs;
      memcpy(&qs, q, sizeof qs);
      for (size_t j = sizeof qs + 1; j < qs; j++)
        if (q[j] != q[sizeof qs]) w->bad++;
      ma_free(q);
    }
  }
  for (int k = 0; k < 64; k++) ma_free(local[k]);
  return NULL;
}

static void *drain(void *arg) {
  ring *r = arg;
  void *p;
  while ((p = ring_get(r)) != NULL) ma_free(p);
  return NULL;
}

Test(heap_threads, cross_thread_free_stress, .timeout = 120) {
  enum { T = 4 };
  ring rings[T];
  worker w[T];
  pthread_t th[T];
  for (int i = 0; i < T; i++) {
    pthread_mutex_init(&rings[i].mu, NULL);
    pthread_cond_init(&rings[i].cv, NULL);
    rings[i].head = rings[i].tail = 0;
    rings[i].done = false;
  }
  for (int i = 0; i < T; i++) {
    w[i] = (worker){
        .out = &rings[i], .in = &rings[(i + T - 1) % T], .id = (unsigned)i, .n = 60000, .bad = 0};
  }
  /* drainers make sure every ring empties even when its consumer has finished */
  pthread_t dr[T];
  for (int i = 0; i < T; i++) pthread_create(&th[i], NULL, producer_consumer, &w[i]);
  for (int i = 0; i < T; i++) pthread_create(&dr[i], NULL, drain, &rings[i]);
  for (int i = 0; i < T; i++) pthread_join(th[i], NULL);
  for (int i = 0; i < T; i++) {
    pthread_mutex_lock(&rings[i].mu);
    rings[i].done = true;
    pthread_cond_broadcast(&rings[i].cv);
    pthread_mutex_unlock(&rings[i].mu);
  }
  for (int i = 0; i < T; i++) pthread_join(dr[i], NULL);
  for (int i = 0; i < T; i++) cr_assert_eq(w[i].bad, 0, "worker %d saw corrupted blocks", i);
  ma_heap_collect(true);
  ma_heap_stats st;
  ma_heap_stats_get(&st);
  cr_assert_eq(st.allocs, st.frees, "allocs %zu frees %zu", st.allocs, st.frees);
}

static void *alloc_and_exit(void *arg) {
  void **out = arg;
  void *keep = NULL;
  for (int i = 0; i < 200; i++) {
    void *p = ma_malloc(16 + (size_t)i * 24);
    memset(p, 1, 16);
    if (i == 100)
      keep = p;
    else
      ma_free(p);
  }
  *out = keep; /* freed by the main thread after this thread is gone */
  return NULL;
}

Test(heap_threads, two_thousand_short_threads_no_rss_growth, .timeout = 120) {
  size_t rss_mid = 0;
  for (int i = 0; i < 2000; i++) {
    pthread_t t;
    void *kept = NULL;
    cr_assert_eq(pthread_create(&t, NULL, alloc_and_exit, &kept), 0);
    pthread_join(t, NULL);
    cr_assert_not_null(kept);
    ma_free(kept); /* a free to an exited thread's heap */
    if (i == 200) rss_mid = rss_bytes();
  }
  size_t rss_end = rss_bytes();
  if (RSS_BOUNDS)
    cr_assert_lt(rss_end, rss_mid + (4 << 20), "RSS grew from %zu to %zu", rss_mid, rss_end);
  ma_heap_stats st;
  ma_heap_stats_get(&st);
  cr_assert_lt(st.reserved, (size_t)64 << 20, "reserved %zu", st.reserved);
}

static _Atomic bool fork_stop;
static void *churn(void *arg) {
  (void)arg;
  void *v[32] = {0};
  unsigned i = 0;
  while (!atomic_load(&fork_stop)) {
    unsigned k = i++ % 32;
    ma_free(v[k]);
    v[k] = ma_malloc(16 + (i * 97) % 5000);
    if (i % 1000 == 0) {
      void *big = ma_malloc(300000);
      ma_free(big);
    }
  }
  for (int k = 0; k < 32; k++) ma_free(v[k]);
  return NULL;
}

Test(heap_threads, fork_under_threads, .timeout = 120) {
  pthread_t th[3];
  atomic_store(&fork_stop, false);
  for (int i = 0; i < 3; i++) pthread_create(&th[i], NULL, churn, NULL);
  for (int f = 0; f < 20; f++) {
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
      void *v[1000];
      for (int i = 0; i < 1000; i++) {
        v[i] = ma_malloc(16 + (size_t)i * 13);
        if (!v[i]) _exit(2);
        memset(v[i], 3, 16);
      }
      for (int i = 0; i < 1000; i++) ma_free(v[i]);
      void *big = ma_malloc(5 << 20);
      if (!big) _exit(3);
      ma_free(big);
      _exit(0);
    }
    char what[32];
    snprintf(what, sizeof what, "child %d", f);
    expect_child_ok(pid, what);
  }
  atomic_store(&fork_stop, true);
  for (int i = 0; i < 3; i++) pthread_join(th[i], NULL);
}

/* ---------------------------------------------------------------------------------
 * Memory goes back to the OS; statistics
 * ------------------------------------------------------------------------------- */
Test(heap_memory, rss_falls_after_freeing_most) {
  enum { N = 1 << 20 };
  void **v = ma_malloc(N * sizeof(void *));
  memset(v, 0, N * sizeof(void *));
  size_t base = rss_bytes();
  for (size_t i = 0; i < N; i++) {
    v[i] = ma_malloc(100 + i % 64);
    memset(v[i], 1, 100);
  }
  size_t peak = rss_bytes();
  cr_assert_gt(peak, base + (100 << 20));
  for (size_t i = 0; i < N; i++)
    if (i % 64) ma_free(v[i]); /* keep 1/64: fragmentation the allocator must handle */
  ma_heap_collect(false);
  usleep(250 * 1000); /* past the default purge delay */
  ma_heap_collect(false);
  size_t after = rss_bytes();
  if (RSS_SHOWS_PURGE)
    cr_assert_lt(after, base + (peak - base) / 2, "base %zu peak %zu after %zu", base, peak, after);
  for (size_t i = 0; i < N; i += 64) ma_free(v[i]);
  ma_heap_collect(true);
  size_t end = rss_bytes();
  if (RSS_BOUNDS) cr_assert_lt(end, base + (8 << 20), "base %zu end %zu", base, end);
  ma_free(v);
}

/* A thread that takes one block of a medium class faults in that block's first page, not
 * one page of each of the 16 blocks a carve used to link up at once (200 threads using a
 * few blocks of every medium class held 1.5 MiB of RSS each that way). The blocks after p
 * in its fresh slab must still be untouched. */
Test(heap_memory, one_medium_block_touches_no_neighbours) {
  char *p = ma_malloc(40000);
  cr_assert_not_null(p);
  size_t stride = ma_usable_size(p), ps = (size_t)sysconf(_SC_PAGESIZE);
  cr_assert_geq(stride, 40000);
  int touched = 0;
  for (size_t k = 1; k < 16; k++) {
    unsigned char vec = 0;
    uintptr_t q = ((uintptr_t)p + k * stride) & ~(uintptr_t)(ps - 1);
    if (mincore((void *)q, ps, &vec) == 0 && (vec & 1)) touched++;
  }
  /* secure builds carve a shuffle window (4 blocks) at a time */
  cr_assert_leq(touched, 4, "%d of the 15 blocks after a fresh %zu-byte block are resident",
                touched, stride);
  ma_free(p);
}

Test(heap_memory, purge_happens_by_itself_after_the_delay) {
  enum { N = 200000 };
  static void *v[N];
  size_t base = rss_bytes();
  for (size_t i = 0; i < N; i++) v[i] = ma_malloc(500);
  for (size_t i = 0; i < N; i++) memset(v[i], 1, 500);
  size_t peak = rss_bytes();
  for (size_t i = 0; i < N; i++) ma_free(v[i]);
  usleep(250 * 1000);
  /* Any slow path after the delay purges: allocate from a class not used yet. */
  void *w[64];
  for (int i = 0; i < 64; i++) w[i] = ma_malloc(7000);
  size_t after = rss_bytes();
  for (int i = 0; i < 64; i++) ma_free(w[i]);
  cr_assert_lt(after, base + (peak - base) / 4, "base %zu peak %zu after %zu", base, peak, after);
}

Test(heap_stats, counters_follow_allocations) {
  ma_heap_stats a, b, c;
  ma_heap_stats_get(&a);
  void *p = ma_malloc(1000), *q = ma_malloc(1 << 20);
  ma_heap_stats_get(&b);
  cr_assert_eq(b.allocated, a.allocated + ma_usable_size(p) + ma_usable_size(q));
  /* allocs/frees count blocks moving between thread caches and slabs (heap.h): at least
   * the large block, never more than a cache refill more */
  cr_assert_geq(b.allocs, a.allocs + 1);
  cr_assert_eq(b.mapped_large, a.mapped_large + ma_usable_size(q));
  cr_assert_geq(b.committed, b.allocated);
  cr_assert_geq(b.reserved, b.committed);
  ma_free(p);
  ma_free(q);
  ma_heap_stats_get(&c);
  cr_assert_eq(c.allocated, a.allocated);
  cr_assert_geq(c.frees, b.frees + 1);
  cr_assert_eq(ma_heap_collect(true), 0);
}

Test(heap_stats, print_table) {
  int fds[2];
  cr_assert_eq(pipe(fds), 0);
  void *p = ma_malloc(10);
  ma_heap_stats_print(fds[1]);
  close(fds[1]);
  char buf[4096] = {0};
  size_t n = 0;
  ssize_t r;
  while ((r = read(fds[0], buf + n, sizeof buf - 1 - n)) > 0) n += (size_t)r;
  close(fds[0]);
  ma_free(p);
  const char *rows[] = {"allocated",    "active", "committed", "reserved",
                        "mapped_large", "allocs", "frees",     "purges"};
  for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++)
    cr_assert(strstr(buf, rows[i]) != NULL, "row %s missing in:\n%s", rows[i], buf);
}

/* A thread that frees other threads' blocks of a class and allocates none (a consumer)
 * narrows that class's cache bound when many threads run (heap.c, heap_tc_narrow): what it
 * keeps is not reused there. With few threads the bound stays. */
enum { NARROW_BLOCKS = 20000, NARROW_IDLE = 30 }; /* 32 running: bound to 8/32 of base */
static void *narrow_blocks[NARROW_BLOCKS];
static pthread_barrier_t narrow_in, narrow_out;

static void *narrow_idle(void *arg) {
  (void)arg;
  ma_free(ma_malloc(64)); /* a heap: a running thread */
  pthread_barrier_wait(&narrow_in);
  pthread_barrier_wait(&narrow_out);
  return NULL;
}

/* Starts n threads that each take a heap and wait; they run (count in heap_live) until
 * idle_threads_stop. */
static void idle_threads_start(pthread_t *t, size_t n) {
  cr_assert_eq(pthread_barrier_init(&narrow_in, NULL, (unsigned)n + 1), 0);
  cr_assert_eq(pthread_barrier_init(&narrow_out, NULL, (unsigned)n + 1), 0);
  for (size_t i = 0; i < n; i++) cr_assert_eq(pthread_create(&t[i], NULL, narrow_idle, NULL), 0);
  pthread_barrier_wait(&narrow_in);
}

static void idle_threads_stop(pthread_t *t, size_t n) {
  pthread_barrier_wait(&narrow_out);
  for (size_t i = 0; i < n; i++) pthread_join(t[i], NULL);
  pthread_barrier_destroy(&narrow_in);
  pthread_barrier_destroy(&narrow_out);
}

/* Frees the main thread's blocks; returns the class's bound before and after, packed. */
static void *narrow_consumer(void *arg) {
  (void)arg;
  ma_free(ma_malloc(4000)); /* its heap, from another class */
  heap *h = heap_get();
  unsigned cls = heap_size_class(64);
  uintptr_t before = __atomic_load_n(&h->tc[cls].max, __ATOMIC_RELAXED);
  for (int i = 0; i < NARROW_BLOCKS; i++) ma_free(narrow_blocks[i]);
  uintptr_t after = __atomic_load_n(&h->tc[cls].max, __ATOMIC_RELAXED);
  return (void *)(before << 32 | after);
}

static void narrow_run(unsigned idle, uint32_t *before, uint32_t *after) {
  pthread_t t[NARROW_IDLE], c;
  idle_threads_start(t, idle);
  for (int i = 0; i < NARROW_BLOCKS; i++) cr_assert_not_null(narrow_blocks[i] = ma_malloc(64));
  void *r;
  cr_assert_eq(pthread_create(&c, NULL, narrow_consumer, NULL), 0);
  pthread_join(c, &r);
  idle_threads_stop(t, idle);
  *before = (uint32_t)((uintptr_t)r >> 32);
  *after = (uint32_t)(uintptr_t)r;
}

Test(heap_memory, a_consumer_narrows_its_cache_when_many_threads_run) {
  uint32_t before, after;
  narrow_run(NARROW_IDLE, &before, &after);
  cr_assert_gt(before, 32, "the class's base bound: %u", before);
  cr_assert_lt(after, before, "narrowed with %d threads running: %u -> %u", NARROW_IDLE + 2, before,
               after);
  cr_assert_geq(after, 16, "not below HEAP_TC_FOREIGN_MIN: %u", after);
  narrow_run(0, &before, &after);
  cr_assert_eq(after, before, "kept with 2 threads running: %u -> %u", before, after);
}

/* heap_crowding: running threads per usable core, rounded down, within 1..max (the large-
 * block cache's demand window lasts that many purge delays). */
static void expect_crowding(size_t cores) {
  size_t live, c;
  do {
    live = atomic_load(&heap_live);
    c = heap_crowding(8);
  } while (live != atomic_load(&heap_live)); /* the purger's heap may come meanwhile */
  size_t want = live / cores < 1 ? 1 : live / cores > 8 ? 8 : live / cores;
  cr_assert_eq(c, want, "%zu threads on %zu cores: crowding %zu, not %zu", live, cores, c, want);
}

Test(heap_memory, crowding_counts_running_threads_per_core) {
  cpu_set_t set;
  cr_assert_eq(sched_getaffinity(0, sizeof set, &set), 0);
  size_t cores = (size_t)CPU_COUNT(&set), n = 4 * cores > 40 ? 40 : 4 * cores;
  pthread_t t[40];
  ma_free(ma_malloc(64));
  expect_crowding(cores);
  idle_threads_start(t, n);
  expect_crowding(cores);
  cr_assert_geq(heap_crowding(8), n / cores < 8 ? n / cores : 8);
  idle_threads_stop(t, n);
  expect_crowding(cores);
}

Test(heap_memory, large_blocks_are_cached_then_purged) {
  size_t n = 6 << 20;
  char *p = ma_malloc(n);
  memset(p, 1, n);
  ma_heap_stats a, b, c;
  ma_heap_stats_get(&a);
  ma_free(p);
  ma_heap_stats_get(&b);
  cr_assert_eq(b.allocated + n, a.allocated);
  cr_assert_geq(b.committed + n, a.committed); /* kept for reuse (or unmapped) */
  char *q = ma_calloc(1, n - 4096);            /* a reused mapping must come back zeroed */
  for (size_t i = 0; i < n - 4096; i += 511) cr_assert_eq(q[i], 0, "byte %zu", i);
  ma_free(q);
  cr_assert_eq(ma_heap_collect(true), 0);
  ma_heap_stats_get(&c);
  cr_assert_leq(c.committed + n, a.committed, "committed %zu before %zu", c.committed, a.committed);
}
