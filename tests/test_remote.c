/* Tests of cross-thread frees and memory return (src/obj/obj_bins.c "Remote frees",
 * src/malloc/heap_internal.h "Thread cache", src/malloc/purger.c): frees in flight when
 * threads exit, fork while batches are being sent, the background purger returning the
 * memory of idle and exited threads with no call, its life at exit and in fork children,
 * and trims racing it. Sizes are checked through ma_heap_stats (the accounting), which
 * sanitizers do not distort. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "malloc/heap_internal.h"
#include "mapalloc/heap.h"
#include "large_common.h"

#include "common.h"

static size_t committed(void) {
  ma_heap_stats st;
  ma_heap_stats_get(&st);
  return st.committed;
}

static size_t allocated(void) {
  ma_heap_stats st;
  ma_heap_stats_get(&st);
  return st.allocated;
}

static void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

/* Waits (making no allocator call) until committed bytes fall to `bound`; the time taken
 * in ms, or -1 after `limit_ms`. */
static long wait_committed_below(size_t bound, long limit_ms) {
  for (long t = 0; t <= limit_ms; t += 20) {
    if (committed() <= bound) return t;
    sleep_ms(20);
  }
  return -1;
}

/* GCC 12's libasan does not hold its allocator's locks across fork: a child that starts a
 * thread (whose start-up mallocs inside libc) deadlocks if a parent thread was starting up
 * at the fork (seen in CI). The fork tests therefore fork only once every thread of the
 * parent is past its start-up: the purger once it completed a pass, the others once they
 * said so. */
static void wait_purger_settled(void) {
  if (heap_opt.background == 0) return;
  for (int i = 0; i < 300 && heap_purger_passes() == 0; i++) sleep_ms(10);
}

static int task_count(void) {
  DIR *d = opendir("/proc/self/task");
  if (!d) return -1;
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL)
    if (e->d_name[0] != '.') n++;
  closedir(d);
  return n;
}

/* ---- frees in flight when threads exit --------------------------------------------- */

typedef struct {
  void **v;
  size_t n;
} span;

static void *free_span(void *arg) {
  span *s = arg;
  for (size_t i = 0; i < s->n; i++) ma_free(s->v[i]); /* remote: batched, then the thread exits */
  return NULL;
}

static void *alloc_span(void *arg) {
  span *s = arg;
  for (size_t i = 0; i < s->n; i++) {
    s->v[i] = ma_malloc(16 + (i * 37) % 2000);
    cr_assert_not_null(s->v[i]);
    memset(s->v[i], 0x5a, 16);
  }
  return NULL; /* exits owning live blocks */
}

Test(remote, freeing_threads_exit_with_batches_pending) {
  ma_heap_collect(true);
  size_t a0 = allocated(), c0 = committed();
  enum { N = 200000, T = 8 };
  void **v = calloc(N, sizeof *v);
  for (size_t i = 0; i < N; i++) cr_assert_not_null(v[i] = ma_malloc(16 + (i * 37) % 2000));
  cr_assert_gt(committed(), c0 + (size_t)(50 << 20));
  pthread_t t[T];
  span s[T];
  for (int k = 0; k < T; k++) {
    s[k] = (span){v + (size_t)k * (N / T), N / T};
    pthread_create(&t[k], NULL, free_span, &s[k]);
  }
  for (int k = 0; k < T; k++) pthread_join(t[k], NULL);
  /* Every block came back to this thread's slabs: nothing is live, and a trim returns
   * every page. */
  ma_heap_collect(true);
  cr_assert_eq(allocated(), a0, "allocated %zu, before %zu", allocated(), a0);
  cr_assert_leq(committed(), c0 + (size_t)(2 << 20), "committed %zu, before %zu", committed(), c0);
  free(v);
}

Test(remote, owners_exit_then_their_blocks_are_freed) {
  ma_heap_collect(true);
  size_t a0 = allocated(), c0 = committed();
  enum { N = 50000, T = 6 };
  void **v = calloc((size_t)N * T, sizeof *v);
  pthread_t t[T];
  span s[T];
  for (int k = 0; k < T; k++) {
    s[k] = (span){v + (size_t)k * N, N};
    pthread_create(&t[k], NULL, alloc_span, &s[k]);
  }
  for (int k = 0; k < T; k++) pthread_join(t[k], NULL);
  /* The owners are gone (their caches parked); half the blocks are freed here, half by
   * threads that exit right after. */
  for (size_t i = 0; i < (size_t)N * T; i += 2) {
    cr_assert_eq(*(unsigned char *)v[i], 0x5a);
    ma_free(v[i]);
  }
  span odd[T];
  for (int k = 0; k < T; k++) {
    odd[k] = (span){NULL, 0};
    size_t lo = (size_t)k * N;
    odd[k].v = malloc(sizeof(void *) * (N / 2 + 1));
    for (size_t i = lo + 1; i < lo + N; i += 2) odd[k].v[odd[k].n++] = v[i];
    pthread_create(&t[k], NULL, free_span, &odd[k]);
  }
  for (int k = 0; k < T; k++) pthread_join(t[k], NULL);
  ma_heap_collect(true);
  cr_assert_eq(allocated(), a0, "allocated %zu, before %zu", allocated(), a0);
  cr_assert_leq(committed(), c0 + (size_t)(2 << 20), "committed %zu, before %zu", committed(), c0);
  for (int k = 0; k < T; k++) free(odd[k].v);
  free(v);
}

/* ---- fork while other threads send batches ------------------------------------------ */

#define XN 4096
/* A thread whose first call frees a block another thread allocated does not hand that
 * block out as its own next allocation: the block lies next to blocks its owner gave other
 * threads, and reusing it makes the threads write one cache line (Hoard's cache-scratch ran
 * at 4x jemalloc's time). The thread's later frees are cached as before. */
typedef struct {
  void *given;
  uintptr_t first, second_freed, second;
} scratch_t;

static void *scratch_thread(void *arg) {
  scratch_t *x = arg;
  ma_free(x->given);
  void *p = ma_malloc(8);
  x->first = (uintptr_t)p;
  ma_free(p); /* no longer the thread's first call: cached, and reused at once */
  void *q = ma_malloc(8);
  x->second_freed = (uintptr_t)p;
  x->second = (uintptr_t)q;
  ma_free(q);
  return NULL;
}

Test(remote, a_threads_first_free_goes_back_to_the_owner) {
  enum { N = 8 };
  scratch_t x[N];
  for (int i = 0; i < N; i++) x[i] = (scratch_t){.given = ma_malloc(8)};
  for (int i = 0; i < N; i++) {
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, scratch_thread, &x[i]), 0);
    cr_assert_eq(pthread_join(t, NULL), 0);
    cr_assert_not_null((void *)x[i].first);
    cr_assert_neq(x[i].first, (uintptr_t)x[i].given,
                  "thread %d got back the block it was given (%p) as its first allocation", i,
                  x[i].given);
    cr_assert_eq(x[i].second, x[i].second_freed, "a later free is cached and reused");
  }
  cr_assert_eq(ma_heap_check(), 0);
}

/* ---- batches given back by a thread cache's trim ---------------------------------------- */

static int cmp_ptr(const void *a, const void *b) {
  uintptr_t x = *(const uintptr_t *)a, y = *(const uintptr_t *)b;
  return (x > y) - (x < y);
}

static bool is_one_of(void *p, void **sorted, size_t n) {
  return bsearch(&p, sorted, n, sizeof *sorted, cmp_ptr) != NULL;
}

/* The calling thread allocates `n` blocks of `size` (v), which another thread then frees.
 * Before that, it frees blocks of its own so that its trims give some back to the class's
 * current slab, and empties its cache for the class (the blocks it takes stay in own[]):
 * so a refill that took the slab's free blocks first would not return any of v. v is
 * sorted on return. */
static void give_away(size_t size, void **v, size_t n, void **own, size_t nown) {
  heap *h = heap_get();
  unsigned cls = heap_size_class(size);
  for (size_t i = 0; i < n; i++) cr_assert_not_null(v[i] = ma_malloc(size));
  for (size_t i = 0; i < nown; i++) cr_assert_not_null(own[i] = ma_malloc(size));
  /* The last ones go back to cur: the list's bound must not grow meanwhile (a list that
   * overflows with its own blocks grows instead of giving them back, heap_tc_grow, unless
   * the thread's growth budget is spent). */
  size_t grown = h->tc_grown;
  h->tc_grown = SIZE_MAX / 2;
  for (size_t i = 0; i < nown; i++) ma_free(own[i]);
  h->tc_grown = grown;
  size_t k = 0;
  while (!heap_tc_empty(&h->tc[cls]) && k < nown) own[k++] = ma_malloc(size);
  for (size_t i = k; i < nown; i++) own[i] = NULL;
  obj_slab *cur = h->bs->bins[cls].cur;
  cr_assert(heap_tc_empty(&h->tc[cls]) && cur != &obj_empty_slab && cur->free,
            "set-up: the cache is empty and the current slab has free blocks");
  span x = {v, n};
  pthread_t t;
  cr_assert_eq(pthread_create(&t, NULL, free_span, &x), 0);
  cr_assert_eq(pthread_join(t, NULL), 0);
  qsort(v, n, sizeof *v, cmp_ptr);
}

/* Blocks another thread frees come back to their owner as batches of one class, which the
 * owner's cache takes whole at its next refill: its next allocations are those blocks, not
 * fresh ones from its slab (the old path filed each block into its slab, block by block,
 * and the refill took the slab's untouched blocks first). */
Test(remote, a_batch_given_back_joins_its_owners_cache_whole) {
  static void *v[1024], *own[1024], *got[1024];
  ma_free(ma_malloc(64)); /* the thread's heap */
  heap *h = heap_get();
  unsigned cls = heap_size_class(64);
  uint32_t half = h->tc[cls].max / 2;
  cr_assert_gt(half, 0);
  size_t n = 4 * (size_t)half, nown = 2 * (size_t)h->tc[cls].max;
  cr_assert_leq(n, 1024);
  /* A pass of the background purger in between may file the batches into their slabs (as
   * it must for an idle thread): such an attempt is run again. */
  for (int attempt = 0;; attempt++) {
    size_t passes = heap_purger_passes();
    give_away(64, v, n, own, nown);
    uint32_t in = 0;
    for (uint32_t i = 0; i < half; i++) {
      got[i] = ma_malloc(64);
      in += is_one_of(got[i], v, n);
    }
    bool quiet = heap_purger_passes() == passes;
    for (uint32_t i = 0; i < half; i++) ma_free(got[i]);
    for (size_t i = 0; i < nown; i++) ma_free(own[i]);
    if (in < half && !quiet && attempt < 10) continue;
    cr_assert_eq(in, half,
                 "%u of the %u allocations after the remote frees are among the %zu blocks freed",
                 in, half, n);
    break;
  }
  cr_assert_eq(ma_heap_check(), 0);
}

/* A program's write after free (not instrumented: ASan would report it, rightly, before
 * the allocator could see it). */
__attribute__((no_sanitize_address)) static void write_after_free(uintptr_t *w, uintptr_t x) {
  *(volatile uintptr_t *)w ^= x;
}

/* A write after free over a batch's header (its third and fourth words) breaks its seal:
 * the owner files the batch block by block, each block checked, and nothing is lost. */
Test(remote, a_batch_whose_header_was_overwritten_is_filed_block_by_block) {
  static void *v[1024], *own[1024];
  ma_free(ma_malloc(64)); /* the thread's heap */
  heap *h = heap_get();
  unsigned cls = heap_size_class(64);
  size_t n = 2 * (size_t)h->tc[cls].max, nown = n;
  cr_assert_leq(n, 1024);
  /* (run again when a pass of the background purger came in between: it may have filed the
   * stack before the owner's malloc looked at the header) */
  for (int attempt = 0;; attempt++) {
    size_t passes = heap_purger_passes();
    give_away(64, v, n, own, nown);
    obj_block *head = __atomic_load_n(&h->bs->inbatch, __ATOMIC_ACQUIRE);
    if (head) {
      cr_assert(is_one_of(head, v, n));
      write_after_free((uintptr_t *)head + 3, 0x5a5a); /* the program writes its freed block */
    }
    size_t before = allocated();
    for (size_t i = 0; i < n; i++) v[i] = ma_malloc(64); /* the first one takes the stack */
    cr_assert_null(__atomic_load_n(&h->bs->inbatch, __ATOMIC_ACQUIRE));
    cr_assert_eq(ma_heap_check(), 0);
    for (size_t i = 0; i < n; i++) ma_free(v[i]);
    for (size_t i = 0; i < nown; i++) ma_free(own[i]);
    cr_assert_eq(ma_heap_check(), 0);
    cr_assert_leq(allocated(), before, "blocks lost");
    if (heap_purger_passes() != passes && attempt < 10) continue;
    cr_assert_not_null(head, "the freeing thread's trims sent batches");
    break;
  }
}

static _Atomic(void *) xslots[XN];
static atomic_bool xstop;
static atomic_int xstarted;

static void *exchanger(void *arg) {
  uint64_t r = (uintptr_t)arg * 0x9e3779b97f4a7c15ull + 1;
  atomic_fetch_add(&xstarted, 1);
  while (!atomic_load(&xstop)) {
    r ^= r << 13, r ^= r >> 7, r ^= r << 17;
    void *p = ma_malloc(16 + r % 700);
    cr_assert_not_null(p);
    memset(p, 0x11, 16);
    void *old = atomic_exchange(&xslots[(r >> 20) % XN], p); /* the other thread's, often */
    ma_free(old);
  }
  return NULL;
}

static void *child_thread(void *arg) {
  void **v = arg;
  for (int i = 0; i < 64; i++) ma_free(v[i]);
  return NULL;
}

Test(remote, fork_while_batches_are_sent) {
  pthread_t t[3];
  for (long k = 0; k < 3; k++) pthread_create(&t[k], NULL, exchanger, (void *)(k + 1));
  while (atomic_load(&xstarted) < 3) sleep_ms(1);
  ma_free(ma_malloc(70000)); /* a slow path: starts the purger */
  wait_purger_settled();
  for (int f = 0; f < 60; f++) {
    sleep_ms(2);
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
      /* The child's heap works, a thread of its own frees blocks the child allocated,
       * and a full trim completes (other threads' heaps are left as they were). */
      void *v[64];
      for (int i = 0; i < 64; i++)
        if ((v[i] = ma_malloc(24 + (size_t)i * 40)) == NULL) _exit(2);
      if (CHILD_THREADS) {
        pthread_t ct;
        if (pthread_create(&ct, NULL, child_thread, v) != 0) _exit(3);
        pthread_join(ct, NULL);
      } else {
        child_thread(v);
      }
      for (int i = 0; i < 1000; i++) ma_free(ma_malloc((size_t)i % 3000));
      ma_heap_collect(true);
      _exit(0);
    }
    char what[32];
    snprintf(what, sizeof what, "child %d", f);
    expect_child_ok(pid, what);
  }
  atomic_store(&xstop, true);
  for (int k = 0; k < 3; k++) pthread_join(t[k], NULL);
  for (int i = 0; i < XN; i++) ma_free(atomic_exchange(&xslots[i], NULL));
}

/* ---- the background purger ----------------------------------------------------------- */

typedef struct {
  void **v;
  size_t n;
  test_stage st;
} idle_t;

static void *idle_worker(void *arg) {
  idle_t *x = arg;
  for (size_t i = 0; i < x->n; i++) {
    x->v[i] = ma_malloc(256);
    cr_assert_not_null(x->v[i]);
    memset(x->v[i], 1, 256);
  }
  stage_set(&x->st, 1);
  stage_wait(&x->st, 2);
  for (size_t i = 1; i < x->n; i += 2) ma_free(x->v[i]);
  stage_set(&x->st, 3);
  stage_wait(&x->st, 4); /* idle: no allocator call until the end */
  return NULL;
}

/* The scenario: a worker allocates 64 MiB of 256-byte blocks, this thread frees
 * half, the worker frees the rest and blocks. Nobody calls the allocator afterwards: the
 * purger must give the memory back (here within 3 s; the figure is a benchmark's). */
Test(purger, returns_an_idle_workers_memory_without_a_call) {
  cr_assert(heap_opt.background != 0, "run without MAPALLOC_BACKGROUND=0");
  ma_heap_collect(true);
  size_t c0 = committed();
  idle_t x = {.n = (64u << 20) / 256, .st = TEST_STAGE_INIT};
  x.v = calloc(x.n, sizeof(void *));
  pthread_t t;
  pthread_create(&t, NULL, idle_worker, &x);
  stage_wait(&x.st, 1);
  cr_assert_gt(committed(), c0 + (size_t)(60 << 20));
  for (size_t i = 0; i < x.n; i += 2) ma_free(x.v[i]);
  stage_set(&x.st, 2);
  stage_wait(&x.st, 3);
  long ms = wait_committed_below(c0 + (size_t)(10 << 20), 3000);
  cr_assert_geq(ms, 0, "committed still %zu MiB over the start after 3 s",
                (committed() - c0) >> 20);
  cr_assert(heap_purger_running());
  stage_set(&x.st, 4);
  pthread_join(t, NULL);
  free(x.v);
}

static void *large_idle_worker(void *arg) {
  idle_t *x = arg;
  for (size_t i = 0; i < x->n; i++) {
    x->v[i] = ma_malloc(512u << 10);
    cr_assert_not_null(x->v[i]);
    memset(x->v[i], 1, 512u << 10);
  }
  for (size_t i = 0; i < x->n; i++) ma_free(x->v[i]);
  /* (read by the test once stage 1 is set; relaxed: the purger may be trimming it) */
  x->n = __atomic_load_n(&heap_get()->stash.bytes, __ATOMIC_RELAXED);
  stage_set(&x->st, 1);
  stage_wait(&x->st, 2); /* idle: no allocator call until the end */
  return NULL;
}

/* Large blocks a worker freed wait in its stash and the cache; the worker goes idle and
 * nobody calls the allocator: the purger unmaps both after the purge delay. */
Test(purger, returns_an_idle_workers_stashed_large_blocks_without_a_call) {
  cr_assert(heap_opt.background != 0, "run without MAPALLOC_BACKGROUND=0");
  void *small = ma_malloc(64); /* (two threads with heaps: the purger runs) */
  ma_heap_collect(true);
  void *v[16];
  idle_t x = {.v = v, .n = 16, .st = TEST_STAGE_INIT};
  pthread_t t;
  pthread_create(&t, NULL, large_idle_worker, &x);
  stage_wait(&x.st, 1);
  cr_assert_gt(x.n, 0, "the worker stashed none of its blocks");
  long ms = -1;
  for (long w = 0; w <= 3000 && ms < 0; w += 20) {
    if (heap_stash_bytes() == 0 && large_cached_bytes() == 0) ms = w;
    sleep_ms(20);
  }
  cr_assert_geq(ms, 0, "%zu bytes still stashed, %zu cached after 3 s", heap_stash_bytes(),
                large_cached_bytes());
  stage_set(&x.st, 2);
  pthread_join(t, NULL);
  ma_free(small);
}

static void *alloc_and_exit(void *arg) {
  span *s = arg;
  for (size_t i = 0; i < s->n; i++) cr_assert_not_null(s->v[i] = ma_malloc(200));
  return NULL;
}

/* A thread allocates 32 MiB and exits; this thread frees it all and then makes no call:
 * the purger files the frees into the exited thread's parked cache and returns the pages. */
Test(purger, returns_an_exited_threads_memory_without_a_call) {
  ma_heap_collect(true);
  size_t c0 = committed();
  span s = {NULL, (32u << 20) / 200};
  s.v = calloc(s.n, sizeof(void *));
  pthread_t t;
  pthread_create(&t, NULL, alloc_and_exit, &s);
  pthread_join(t, NULL);
  for (size_t i = 0; i < s.n; i++) ma_free(s.v[i]);
  long ms = wait_committed_below(c0 + (size_t)(4 << 20), 3000);
  cr_assert_geq(ms, 0, "committed still %zu MiB over the start after 3 s",
                (committed() - c0) >> 20);
  free(s.v);
}

static void *churn(void *arg) {
  atomic_bool *stop = arg;
  void *v[512] = {0};
  uint64_t r = 88172645463325252ull;
  while (!atomic_load(stop)) {
    r ^= r << 13, r ^= r >> 7, r ^= r << 17;
    unsigned k = (unsigned)(r % 512);
    ma_free(v[k]);
    v[k] = ma_malloc(16 + (r >> 16) % 5000);
    cr_assert_not_null(v[k]);
    memset(v[k], (int)k, 16);
  }
  for (int k = 0; k < 512; k++) ma_free(v[k]);
  return NULL;
}

static void *trimmer(void *arg) {
  atomic_bool *stop = arg;
  while (!atomic_load(stop)) {
    ma_heap_collect(true);
    ma_heap_collect(false);
    sched_yield();
  }
  return NULL;
}

/* Trims from several threads and the purger's passes while threads churn: every heap is
 * touched by at most one of them at a time (its lock); contents stay intact (the churn
 * checks nothing was handed out twice by writing and the final accounting). */
Test(purger, never_races_a_trim) {
  ma_heap_collect(true);
  size_t a0 = allocated();
  size_t passes0 = heap_purger_passes();
  atomic_bool stop = false;
  pthread_t c[3], tr[2];
  for (int k = 0; k < 3; k++) pthread_create(&c[k], NULL, churn, &stop);
  for (int k = 0; k < 2; k++) pthread_create(&tr[k], NULL, trimmer, &stop);
  sleep_ms(1500);
  atomic_store(&stop, true);
  for (int k = 0; k < 3; k++) pthread_join(c[k], NULL);
  for (int k = 0; k < 2; k++) pthread_join(tr[k], NULL);
  cr_assert_gt(heap_purger_passes(), passes0, "the purger ran meanwhile");
  ma_heap_collect(true);
  cr_assert_eq(allocated(), a0);
}

static void *touch_heap(void *arg) {
  (void)arg;
  ma_free(ma_malloc(100));
  return NULL;
}

/* A second thread that had a heap, then a slow path: the purger starts. */
static void start_purger(void) {
  pthread_t t;
  pthread_create(&t, NULL, touch_heap, NULL);
  pthread_join(t, NULL);
  ma_free(ma_malloc(70000));
  for (int i = 0; i < 100 && !heap_purger_running(); i++) sleep_ms(10);
  cr_assert(heap_purger_running());
}

/* The purger thread does not exist in a fork child (fork's prepare handler keeps it out of
 * every heap) and does not start while the child has one thread; a child that runs a
 * second thread gets one of its own. */
Test(purger, absent_in_fork_children) {
  start_purger();
  wait_purger_settled();
  cr_assert_geq(task_count(), 2);
  pid_t pid = fork();
  cr_assert_geq(pid, 0);
  if (pid == 0) {
    if (task_count() != 1) _exit(10);
    if (heap_purger_running()) _exit(11);
    ma_free(ma_malloc(70000)); /* one thread: no purger yet */
    if (task_count() != 1) _exit(14);
    if (!CHILD_THREADS) _exit(0);
    pthread_t ct;
    if (pthread_create(&ct, NULL, touch_heap, NULL) != 0) _exit(12);
    pthread_join(ct, NULL);
    ma_free(ma_malloc(70000));
    for (int i = 0; i < 100 && !heap_purger_running(); i++) sleep_ms(10);
    _exit(heap_purger_running() ? 0 : 13);
  }
  expect_child_ok(pid, "purger child");
}

/* A process that exits while the purger works exits cleanly (its destructor stops it). */
Test(purger, stops_at_exit) {
  for (int round = 0; round < 20; round++) {
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
      atomic_bool stop = false;
      pthread_t c;
      pthread_create(&c, NULL, churn, &stop);
      sleep_ms(round * 7 % 60);
      exit(0); /* with the churn thread still running */
    }
    char what[32];
    snprintf(what, sizeof what, "round %d", round);
    expect_child_ok(pid, what);
  }
}

static size_t reserved(void) {
  ma_heap_stats st;
  ma_heap_stats_get(&st);
  return st.reserved;
}

/* 512k blocks of 64 B (32 MiB: eight segments) allocated and then freed by this thread;
 * *before* = reserved bytes with all of them live. Returns reserved bytes right after.
 * What may stay after the frees with nothing kept: the last segment of the kind and the
 * one whose slabs hold the blocks left in the thread cache, 8 MiB (SEGS_LEFT). */
#define SEGS_LEFT ((size_t)12 << 20) /* (with a segment's worth of slack) */
static size_t empty_segments_whole(size_t *before) {
  enum { N = 512 << 10 };
  void **v = calloc(N, sizeof *v);
  cr_assert_not_null(v);
  for (int i = 0; i < N; i++) cr_assert_not_null(v[i] = ma_malloc(64));
  *before = reserved();
  for (int i = 0; i < N; i++) ma_free(v[i]);
  free(v);
  return reserved();
}

/* While the purger runs, a heap segment emptied whole stays (a burst that empties segments
 * and fills them again faults nothing back) and goes once its slabs' purge delay passed,
 * with no call. Without the purger (a single-threaded program: nothing would return them
 * if the thread then waits) it goes at once. */
Test(purger, segments_emptied_whole_stay_for_the_delay_while_it_runs) {
  cr_assert(heap_opt.background != 0, "run without MAPALLOC_BACKGROUND=0");
  start_purger();
  ma_heap_collect(true);
  size_t c0 = committed(), r0 = reserved(), before;
  size_t after = empty_segments_whole(&before);
  cr_assert_gt(before, r0 + ((size_t)28 << 20), "%zu -> %zu", r0, before);
  cr_assert_gt(after, before - ((size_t)4 << 20), "kept: %zu -> %zu", before, after);
  long ms = wait_committed_below(c0 + ((size_t)2 << 20), 3000);
  cr_assert_geq(ms, 0, "committed still %zu MiB over the start after 3 s",
                (committed() - c0) >> 20);
  cr_assert_lt(reserved(), r0 + SEGS_LEFT, "unmapped: %zu, %zu at the start", reserved(), r0);
}

Test(purger, segments_emptied_whole_go_at_once_without_it) {
  ma_free(ma_malloc(70000));
  cr_assert_not(heap_purger_running(), "one thread: no purger");
  size_t r0 = reserved(), before;
  size_t after = empty_segments_whole(&before);
  cr_assert_gt(before, r0 + ((size_t)28 << 20), "%zu -> %zu", r0, before);
  cr_assert_lt(after, r0 + SEGS_LEFT, "unmapped at once: %zu -> %zu, %zu at the start", before,
               after, r0);
}
