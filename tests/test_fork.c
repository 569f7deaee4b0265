/* The fork policy (docs/fork.md, issue 12 item 3): in a fork child the heaps and pool
 * caches of threads the child does not have are left behind (never walked, trimmed or
 * reused), everything else works, and the checked walks (ma_heap_check, ma_pool_check)
 * pass in every child. Two scenarios: a child whose own threads free blocks that several
 * parent threads allocated (threads that may get a dead parent thread's thread pointer
 * from glibc), and forks taken while other threads hammer local and remote frees. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "malloc/heap_internal.h"
#include "mapalloc/heap.h"
#include "mapalloc/pool.h"

#include "common.h"

/* A child's failure: a message on stderr and exit status 2 (a failed check aborts). */
#define CHILD_ASSERT(cond, ...)                                                                    \
  do {                                                                                             \
    if (!(cond)) {                                                                                 \
      fprintf(stderr, "fork child: " __VA_ARGS__);                                                 \
      fputc('\n', stderr);                                                                         \
      _exit(2);                                                                                    \
    }                                                                                              \
  } while (0)

enum { NPOOLS = 2 };
static ma_pool *pools[NPOOLS];

static void pools_make(void) {
  static const size_t sizes[NPOOLS] = {48, 400};
  for (int i = 0; i < NPOOLS; i++) {
    ma_pool_opts o = {.obj_size = sizes[i]};
    cr_assert_eq(ma_pool_create(&o, &pools[i]), 0);
  }
}

static void pools_destroy(void) {
  for (int i = 0; i < NPOOLS; i++) ma_pool_destroy(pools[i]);
}

/* Every walk of the calling process (a fork child): the heap, each pool. */
static void child_checks(void) {
  CHILD_ASSERT(ma_heap_check() == 0, "ma_heap_check failed");
  for (int i = 0; i < NPOOLS; i++) {
    int rc = ma_pool_check(pools[i]);
    CHILD_ASSERT(rc == 0, "ma_pool_check(pool %d) = %d", i, rc);
  }
}

/* GCC 12's libasan does not hold its allocator's locks across fork: a child that starts a
 * thread deadlocks if a parent thread was starting up at the fork (tests/test_remote.c).
 * So the tests fork once the purger (started by a slow path once two threads have heaps)
 * has completed a pass and the other threads said they started. */
static void wait_purger_settled(void) {
  ma_free(ma_malloc(70000)); /* a slow path: starts the purger */
  if (heap_opt.background == 0) return;
  for (int i = 0; i < 300 && heap_purger_passes() == 0; i++) usleep(10000);
}

/* ---- a child's threads free what several parent threads allocated ----------------- */

enum { PARENTS = 4, PER = 600 };
typedef struct {
  void *heap[PER];
  void *pool[NPOOLS][PER];
  pthread_t self;
} parent_blocks;
static parent_blocks held[PARENTS];
static pthread_barrier_t allocated_bar, release_bar;

static size_t block_size(int i) {
  return 8 + (size_t)(i * 97) % 3000;
}

/* A parent thread: allocates, frees half (its own cache and slabs change state), waits
 * (alive) across the fork, then frees the rest. */
static void *parent_thread(void *arg) {
  parent_blocks *b = arg;
  b->self = pthread_self();
  for (int i = 0; i < PER; i++) {
    b->heap[i] = ma_malloc(block_size(i));
    cr_assert_not_null(b->heap[i]);
    memset(b->heap[i], 0x3c, 8);
    for (int k = 0; k < NPOOLS; k++) cr_assert_not_null(b->pool[k][i] = ma_pool_alloc(pools[k]));
  }
  for (int i = 0; i < PER; i += 2) {
    ma_free(b->heap[i]);
    b->heap[i] = NULL;
    for (int k = 0; k < NPOOLS; k++) {
      ma_pool_free(pools[k], b->pool[k][i]);
      b->pool[k][i] = NULL;
    }
  }
  pthread_barrier_wait(&allocated_bar);
  pthread_barrier_wait(&release_bar);
  for (int i = 0; i < PER; i++) {
    ma_free(b->heap[i]);
    for (int k = 0; k < NPOOLS; k++) ma_pool_free(pools[k], b->pool[k][i]);
  }
  return NULL;
}

/* Child threads whose pthread_t (their thread pointer) is a dead parent thread's: counted
 * in a shared page, so the parent can report it. */
static atomic_int *aliased;

/* Frees o, an object of a parent thread's pool cache, which the child left behind: whatever
 * this thread's thread pointer (often the dead parent thread's), the free is not the
 * owner's push onto the object's slab (that slab's state may be torn in the child). */
static void pool_free_left_behind(ma_pool *p, void *o) {
  obj_slab *s = obj_slab_of(obj_segment_of(o), o);
  ma_pool_free(p, o);
  CHILD_ASSERT(s->free != o, "a left-behind cache's slab %p took %p on its free list", (void *)s,
               o);
}

/* A child thread: frees the blocks of parent threads (p and the next), allocates and
 * frees its own (slabs fill and empty, so frees reach slab state), and walks its heap. */
static void *child_freer(void *arg) {
  int p = (int)(intptr_t)arg;
  for (int q = 0; q < PARENTS; q++)
    if (pthread_equal(pthread_self(), held[q].self)) atomic_fetch_add(aliased, 1);
  for (int j = p; j < p + 2; j++) {
    parent_blocks *b = &held[j % PARENTS];
    for (int i = 1; i < PER; i += 2) {
      CHILD_ASSERT(((unsigned char *)b->heap[i])[7] == 0x3c, "parent block %p changed", b->heap[i]);
      ma_free(b->heap[i]);
      for (int k = 0; k < NPOOLS; k++) pool_free_left_behind(pools[k], b->pool[k][i]);
    }
  }
  void *mine[2000];
  for (int round = 0; round < 3; round++) {
    for (int i = 0; i < 2000; i++) {
      mine[i] = i % 3 ? ma_malloc(block_size(i)) : ma_pool_alloc(pools[i % NPOOLS]);
      CHILD_ASSERT(mine[i] != NULL, "allocation failed");
    }
    for (int i = 0; i < 2000; i++) {
      if (i % 3)
        ma_free(mine[i]);
      else
        ma_pool_free(pools[i % NPOOLS], mine[i]);
    }
  }
  CHILD_ASSERT(ma_heap_check() == 0, "ma_heap_check in a child thread failed");
  return NULL;
}

static void child_frees_parent_blocks(void) {
  pthread_t t[PARENTS];
  /* Thread 0 frees parents 0 and 1's odd blocks, thread 1 (argument 2) parents 2 and 3's. */
  int n = CHILD_THREADS ? PARENTS / 2 : 0;
  for (int p = 0; p < n; p++)
    CHILD_ASSERT(pthread_create(&t[p], NULL, child_freer, (void *)(intptr_t)(2 * p)) == 0,
                 "pthread_create");
  for (int p = 0; p < n; p++) pthread_join(t[p], NULL);
  if (n == 0) { /* TSan: the forking thread does the child threads' work */
    child_freer((void *)(intptr_t)0);
    child_freer((void *)(intptr_t)2);
  }
  ma_heap_collect(true);
  for (int k = 0; k < NPOOLS; k++) ma_pool_trim(pools[k]);
  child_checks();
}

Test(fork, child_threads_free_parent_threads_blocks, .timeout = 120) {
  pools_make();
  pthread_barrier_init(&allocated_bar, NULL, PARENTS + 1);
  pthread_barrier_init(&release_bar, NULL, PARENTS + 1);
  pthread_t t[PARENTS];
  for (int p = 0; p < PARENTS; p++) pthread_create(&t[p], NULL, parent_thread, &held[p]);
  pthread_barrier_wait(&allocated_bar);
  wait_purger_settled();
  aliased = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  cr_assert_neq(aliased, MAP_FAILED);
  for (int f = 0; f < 4; f++) {
    fflush(stdout);
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
      child_frees_parent_blocks();
      _exit(0);
    }
    int st = wait_child(pid);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child %d: status 0x%x", f, st);
  }
  /* glibc gives a child thread a parent thread's cached stack and descriptor. */
  fprintf(stderr, "test_fork: %d of %d child threads had a parent thread's pthread_t\n",
          atomic_load(aliased), 4 * (CHILD_THREADS ? PARENTS / 2 : 0));
  munmap(aliased, 4096);
  pthread_barrier_wait(&release_bar);
  for (int p = 0; p < PARENTS; p++) pthread_join(t[p], NULL);
  cr_assert_eq(ma_heap_check(), 0);
  for (int k = 0; k < NPOOLS; k++) cr_assert_eq(ma_pool_check(pools[k]), 0);
  pools_destroy();
}

/* ---- forks while other threads hammer remote frees ---------------------------------- */

enum { HAMMERS = 3, HSLOTS = 256 };
static _Atomic(void *) hslots[HSLOTS]; /* heap blocks passed between threads */
static _Atomic(void *) pslots[NPOOLS][HSLOTS];
static atomic_bool hstop;
static atomic_int hstarted;
/* While a child runs the hammers pause: on 2 loaded cores a child competing with them took
 * ~100 ms. Before each fork they resume and do some hundred operations first. */
static atomic_bool hpause;
static atomic_ulong hops;

/* Allocates and swaps blocks through the shared slots: most frees are of another thread's
 * block (remote: batched, sent, filed), the rest local (pool fast path, heap cache). */
static void *hammer(void *arg) {
  uint64_t r = (uintptr_t)arg * 0x9e3779b97f4a7c15ull + 1;
  atomic_fetch_add(&hstarted, 1);
  while (!atomic_load(&hstop)) {
    if (atomic_load_explicit(&hpause, memory_order_relaxed)) {
      sched_yield();
      continue;
    }
    atomic_fetch_add_explicit(&hops, 1, memory_order_relaxed);
    r ^= r << 13, r ^= r >> 7, r ^= r << 17;
    unsigned i = (unsigned)(r >> 24) % HSLOTS;
    if (r & 1) {
      void *p = ma_malloc(16 + r % 500);
      cr_assert_not_null(p);
      ma_free(atomic_exchange(&hslots[i], p));
    } else {
      int k = (int)((r >> 8) % NPOOLS);
      void *p = ma_pool_alloc(pools[k]);
      cr_assert_not_null(p);
      void *old = atomic_exchange(&pslots[k][i], p);
      if (old) ma_pool_free(pools[k], old);
      if (r & 2) ma_pool_free(pools[k], ma_pool_alloc(pools[k])); /* local */
    }
  }
  return NULL;
}

static void *child_hammer_freer(void *arg) {
  (void)arg;
  for (int i = 0; i < HSLOTS; i += 3) {
    ma_free(atomic_exchange(&hslots[i], NULL));
    for (int k = 0; k < NPOOLS; k++) ma_pool_free(pools[k], atomic_exchange(&pslots[k][i], NULL));
  }
  return NULL;
}

/* The child: the walks as the fork left things, then frees of blocks the hammering
 * threads owned (from a thread of its own in every 8th child: a thread start in a child
 * costs tens of ms on a loaded machine), its own work, a trim, and the walks again. */
static void hammer_child(int forkno) {
  child_checks();
  if (CHILD_THREADS && forkno % 8 == 0) {
    pthread_t t;
    CHILD_ASSERT(pthread_create(&t, NULL, child_hammer_freer, NULL) == 0, "pthread_create");
    pthread_join(t, NULL);
  } else {
    child_hammer_freer(NULL);
  }
  for (int i = 0; i < 300; i++) {
    ma_free(ma_malloc((size_t)i * 11 % 2000));
    ma_pool_free(pools[i % NPOOLS], ma_pool_alloc(pools[i % NPOOLS]));
  }
  ma_heap_collect(true);
  for (int k = 0; k < NPOOLS; k++) ma_pool_trim(pools[k]);
  child_checks();
}

Test(fork, forks_while_threads_hammer_remote_frees, .timeout = 300) {
  pools_make();
  pthread_t t[HAMMERS];
  for (long k = 0; k < HAMMERS; k++) pthread_create(&t[k], NULL, hammer, (void *)(k + 1));
  while (atomic_load(&hstarted) < HAMMERS) usleep(1000);
  wait_purger_settled();
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  int forks = 0;
  double elapsed = 0;
  /* Forks for 3 s (hundreds on an idle machine; each costs the parent's copy-on-write
   * faults), at least 100, at most 2000. */
  while (forks < 100 || (elapsed < 3.0 && forks < 2000)) {
    unsigned long ops0 = atomic_load(&hops);
    atomic_store(&hpause, false);
    while (atomic_load(&hops) - ops0 < 100 * HAMMERS) sched_yield();
    pid_t pid = fork();
    atomic_store(&hpause, true);
    cr_assert_neq(pid, -1);
    if (pid == 0) {
      hammer_child(forks);
      _exit(0);
    }
    int st = wait_child(pid);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "fork %d: child status 0x%x", forks, st);
    forks++;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    elapsed = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9;
  }
  atomic_store(&hstop, true);
  for (int k = 0; k < HAMMERS; k++) pthread_join(t[k], NULL);
  for (int i = 0; i < HSLOTS; i++) {
    ma_free(atomic_exchange(&hslots[i], NULL));
    for (int k = 0; k < NPOOLS; k++) ma_pool_free(pools[k], atomic_exchange(&pslots[k][i], NULL));
  }
  cr_assert_eq(ma_heap_check(), 0);
  for (int k = 0; k < NPOOLS; k++) cr_assert_eq(ma_pool_check(pools[k]), 0);
  fprintf(stderr, "test_fork: %d forks in %.1f s, every child walked\n", forks, elapsed);
  pools_destroy();
}
