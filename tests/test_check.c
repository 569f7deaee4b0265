/* The consistency walks (ma_heap_check, ma_pool_check) after varied workloads, a corrupted
 * slab caught by them (every build), and the slow-path checks of a -DMAPALLOC_DEBUG=ON
 * build (MA_DEBUG: those tests exist only there). */
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "malloc/heap_internal.h"
#include "mapalloc/heap.h"
#include "mapalloc/pool.h"
#include "common.h"
#include "obj/obj.h"

static uint64_t rng_next(uint64_t *s) {
  *s ^= *s << 13;
  *s ^= *s >> 7;
  *s ^= *s << 17;
  return *s;
}

/* A size mix: mostly small, some medium, a few large (> 128 KiB). */
static size_t pick_size(uint64_t *r) {
  uint64_t x = rng_next(r);
  switch (x % 16) {
  case 0:
    return 128 * 1024 + x % (2u << 20); /* large */
  case 1:
  case 2:
    return 1024 + x % (64 * 1024);
  default:
    return 1 + x % 512;
  }
}

Test(check, empty_and_single_thread_workload) {
  cr_assert_eq(ma_heap_check(), 0);
  enum { N = 4000 };
  static void *v[N];
  uint64_t r = 0x1234567;
  for (int round = 0; round < 4; round++) {
    for (int i = 0; i < N; i++) {
      if (v[i] && rng_next(&r) % 3 == 0) {
        ma_free(v[i]);
        v[i] = NULL;
      } else if (v[i]) {
        void *q = ma_realloc(v[i], pick_size(&r));
        if (q) v[i] = q;
      } else {
        v[i] = ma_malloc(pick_size(&r));
        cr_assert_not_null(v[i]);
      }
    }
    cr_assert_eq(ma_heap_check(), 0);
  }
  for (int i = 0; i < N; i++) ma_free(v[i]);
  cr_assert_eq(ma_heap_check(), 0);
  ma_heap_collect(false);
  cr_assert_eq(ma_heap_check(), 0);
  ma_heap_collect(true);
  cr_assert_eq(ma_heap_check(), 0);
}

/* Threads allocate, hand blocks to each other through shared slots (cross-thread frees),
 * while the main thread runs the walk concurrently; then exit (orphan heaps). */
enum { SLOTS = 1024, THREADS = 4, STEPS = 20000 };
static void *slots[SLOTS];
static pthread_mutex_t slots_lock = PTHREAD_MUTEX_INITIALIZER;
static volatile int stop_checking;

static void *worker(void *arg) {
  uint64_t r = (uintptr_t)arg * 0x9e3779b97f4a7c15ull + 1;
  for (int i = 0; i < STEPS; i++) {
    void *p = ma_malloc(pick_size(&r) % 4096 + 1);
    if (i % 512 == 0) p = (ma_free(p), ma_malloc(200 * 1024 + i)); /* a large one now and then */
    unsigned k = (unsigned)(rng_next(&r) % SLOTS);
    pthread_mutex_lock(&slots_lock);
    void *old = slots[k];
    slots[k] = p;
    pthread_mutex_unlock(&slots_lock);
    ma_free(old); /* most likely another thread's block */
    if (i % 5000 == 0) ma_heap_collect(i % 10000 == 0);
  }
  return NULL;
}

static void *checker(void *arg) {
  (void)arg;
  while (!stop_checking) cr_assert_eq(ma_heap_check(), 0);
  return NULL;
}

Test(check, threads_cross_thread_frees_and_a_concurrent_walk) {
  pthread_t t[THREADS], c;
  cr_assert_eq(pthread_create(&c, NULL, checker, NULL), 0);
  for (uintptr_t i = 0; i < THREADS; i++)
    cr_assert_eq(pthread_create(&t[i], NULL, worker, (void *)(i + 1)), 0);
  for (int i = 0; i < THREADS; i++) pthread_join(t[i], NULL);
  stop_checking = 1;
  pthread_join(c, NULL);
  cr_assert_eq(ma_heap_check(), 0); /* orphans' caches walked too */
  for (int i = 0; i < SLOTS; i++) ma_free(slots[i]);
  memset(slots, 0, sizeof slots);
  cr_assert_eq(ma_heap_check(), 0);
  ma_heap_collect(true);
  cr_assert_eq(ma_heap_check(), 0);
  /* New threads adopt the orphans. */
  for (uintptr_t i = 0; i < 2; i++)
    cr_assert_eq(pthread_create(&t[i], NULL, worker, (void *)(i + 7)), 0);
  for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
  cr_assert_eq(ma_heap_check(), 0);
  for (int i = 0; i < SLOTS; i++) ma_free(slots[i]);
  cr_assert_eq(ma_heap_check(), 0);
}

Test(check, large_blocks_cache_splits_merges_and_growth) {
  enum { N = 48 };
  void *v[N];
  uint64_t r = 77;
  for (int i = 0; i < N; i++) v[i] = ma_malloc(((size_t)1 << 17) + (rng_next(&r) % (4u << 20)));
  cr_assert_eq(ma_heap_check(), 0);
  for (int i = 0; i < N; i += 2) ma_free(v[i]); /* cached ranges */
  cr_assert_eq(ma_heap_check(), 0);
  for (int i = 0; i < N; i += 2) v[i] = ma_malloc(((size_t)1 << 17) + (rng_next(&r) % (1u << 20)));
  cr_assert_eq(ma_heap_check(), 0);
  for (int round = 0; round < 6; round++) /* growth in place, by copy, by mremap; shrinks */
    for (int i = 0; i < N; i++) {
      size_t u = ma_usable_size(v[i]);
      void *q = ma_realloc(v[i], round % 3 == 2 ? u / 2 + 1 : u + u / 3 + 4096);
      cr_assert_not_null(q);
      v[i] = q;
    }
  cr_assert_eq(ma_heap_check(), 0);
  for (int i = 0; i < N; i++) ma_free(v[i]);
  cr_assert_eq(ma_heap_check(), 0);
  ma_heap_collect(true);
  cr_assert_eq(ma_heap_check(), 0);
}

static void *pool_user(void *arg) {
  ma_pool *p = arg;
  void *v[3000];
  for (int i = 0; i < 3000; i++) v[i] = ma_pool_alloc(p);
  for (int i = 0; i < 3000; i += 2) ma_pool_free(p, v[i]);
  return NULL; /* the odd ones stay live; the cache is parked at exit */
}

Test(check, pools) {
  cr_assert_eq(ma_pool_check(NULL), -EINVAL);
  size_t sizes[] = {24, 256, 3000, 600 * 1024}; /* the last: solo (one-slab) segments */
  for (unsigned k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
    ma_pool *p;
    cr_assert_eq(ma_pool_create(&(ma_pool_opts){.obj_size = sizes[k]}, &p), 0);
    cr_assert_eq(ma_pool_check(p), 0);
    unsigned n = sizes[k] > 100000 ? 40 : 5000;
    void **v = ma_malloc(n * sizeof *v);
    for (unsigned i = 0; i < n; i++) v[i] = ma_pool_alloc(p);
    cr_assert_eq(ma_pool_check(p), 0);
    for (unsigned i = 0; i < n; i += 3) ma_pool_free(p, v[i]);
    cr_assert_eq(ma_pool_check(p), 0);
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, pool_user, p), 0);
    pthread_join(t, NULL);
    cr_assert_eq(ma_pool_check(p), 0); /* the exited thread's parked cache is walked */
    for (unsigned i = 0; i < n; i++)
      if (i % 3) ma_pool_free(p, v[i]);
    cr_assert_eq(ma_pool_check(p), 0);
    cr_assert_eq(ma_pool_trim(p), 0);
    cr_assert_eq(ma_pool_check(p), 0);
    ma_free(v);
    ma_pool_destroy(p);
  }
}

static ma_pool *busy_pool;
static pthread_barrier_t busy_in, busy_out;
static void *busy_user(void *arg) {
  (void)arg;
  void *o = ma_pool_alloc(busy_pool);
  pthread_barrier_wait(&busy_in);
  pthread_barrier_wait(&busy_out);
  ma_pool_free(busy_pool, o);
  return NULL;
}

Test(check, pool_with_another_live_thread_is_busy) {
  cr_assert_eq(ma_pool_create(&(ma_pool_opts){.obj_size = 64}, &busy_pool), 0);
  void *o = ma_pool_alloc(busy_pool);
  pthread_barrier_init(&busy_in, NULL, 2);
  pthread_barrier_init(&busy_out, NULL, 2);
  pthread_t t;
  cr_assert_eq(pthread_create(&t, NULL, busy_user, NULL), 0);
  pthread_barrier_wait(&busy_in);
  cr_assert_eq(ma_pool_check(busy_pool), -EBUSY);
  pthread_barrier_wait(&busy_out);
  pthread_join(t, NULL);
  cr_assert_eq(ma_pool_check(busy_pool), 0);
  ma_pool_free(busy_pool, o);
  ma_pool_destroy(busy_pool);
}

static obj_slab *slab_of(void *p) {
  obj_segment *seg = obj_segment_of(p);
  cr_assert_not_null(seg);
  return obj_slab_of(seg, p);
}

static void corrupt_pool_slab(void) {
  ma_pool *p;
  if (ma_pool_create(&(ma_pool_opts){.obj_size = 48}, &p) != 0) _exit(2);
  void *o = ma_pool_alloc(p);
  (void)ma_pool_alloc(p);
  if (ma_pool_check(p) != 0) _exit(3);
  slab_of(o)->cnt += 3; /* three more blocks "used" than are out */
  (void)ma_pool_check(p);
}

Test(check, walk_catches_a_corrupted_pool_slab) {
  expect_abort_saying(corrupt_pool_slab, (const char *const[]){"mapalloc: check failed at ",
                                                               "obj_check.c:", "!= carved", NULL});
}

static void corrupt_heap_slab(void) {
  void *a = ma_malloc(100);
  if (ma_heap_check() != 0) _exit(3);
  slab_of(a)->notify = 7; /* not -1, 0 or INT32_MAX */
  (void)ma_heap_check();
}

Test(check, walk_catches_a_corrupted_heap_slab) {
  expect_abort_saying(corrupt_heap_slab,
                      (const char *const[]){"mapalloc: check failed at ", "notify 7", NULL});
}

static void corrupt_heap_accounting(void) {
  void *a = ma_malloc(100);
  ma_free(a);
  if (ma_heap_check() != 0) _exit(3);
  heap_get()->bs->retained += 4096;
  (void)ma_heap_check();
}

Test(check, walk_catches_wrong_retained_bytes) {
  expect_abort_saying(corrupt_heap_accounting,
                      (const char *const[]){"mapalloc: check failed at ", "retained", NULL});
}

#if defined(MA_DEBUG) && MA_DEBUG
/* Checked build only: the slow paths themselves catch a corrupted encoding. A free whose
 * count drops to 0 reaches obj_slab_notify, which checks the notify value. */
static void corrupt_then_free(void) {
  ma_pool *p;
  if (ma_pool_create(&(ma_pool_opts){.obj_size = 32}, &p) != 0) _exit(2);
  void *o = ma_pool_alloc(p);
  obj_slab *s = slab_of(o);
  s->notify = 5;
  s->cnt = 1;
  ma_pool_free(p, o);
}

Test(check_debug, slow_path_catches_a_bad_notify) {
  expect_abort_saying(corrupt_then_free, (const char *const[]){"mapalloc: check failed at ",
                                                               "obj_bins.c:", "notify 5", NULL});
}

/* A partial-list unlink of a slab that is not on the list. */
static void corrupt_list(void) {
  ma_pool *p;
  if (ma_pool_create(&(ma_pool_opts){.obj_size = 64 * 1024}, &p) != 0) _exit(2);
  void *v[64];
  for (int i = 0; i < 64; i++) v[i] = ma_pool_alloc(p); /* several slabs */
  obj_slab *s = slab_of(v[0]);
  ma_pool_free(p, v[0]); /* s was full: onto the partial list */
  s->prev = s;           /* its list links broken */
  for (int i = 1; i < 64; i++) v[i] = (ma_pool_free(p, v[i]), NULL);
  for (int i = 0; i < 64; i++) v[i] = ma_pool_alloc(p);
}

Test(check_debug, slow_path_catches_a_broken_partial_list) {
  expect_abort_saying(corrupt_list,
                      (const char *const[]){"mapalloc: check failed at ", "partial", NULL});
}
#endif
