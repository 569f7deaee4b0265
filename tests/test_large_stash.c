/* Tests of a thread's stash of freed large blocks (src/malloc/huge.c, "a thread's stash"):
 * a thread's next large allocations reuse the blocks it freed lately, split and merged
 * (a guarded range of the secure mode split from its back), without the shared
 * cache; the stash is bounded, emptied by collections from any thread, and handed to the
 * cache when the thread exits. Criterion runs each test in a fresh process; ctest runs this
 * file with a purge delay of a minute (nothing expires during a test: the expiry without a
 * call is test_remote's purger test). */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "malloc/heap_internal.h"
#include "mapalloc/heap.h"
#include "os/os.h"
#include "large_common.h"
#include "guard_common.h"

#define MiB ((size_t)1 << 20)
#define KiB ((size_t)1 << 10)

/* The calling thread's stashed bytes (its heap's, read by its owner; relaxed: the purger
 * may be trimming it). */
static size_t own_stash(void) {
  return __atomic_load_n(&heap_get()->stash.bytes, __ATOMIC_RELAXED);
}

/* Whether freed large blocks can wait in a stash in this run: always, but for the secure
 * mode on a kernel without guard markers (each guard is then a mapping of its own). */
static bool stashing(void) {
  return !obj_secure_on() || os_guard_supported();
}

static char *touched(size_t n) {
  char *p = ma_malloc(n);
  cr_assert_not_null(p);
  memset(p, 7, n);
  return p;
}

Test(large_stash, the_freeing_threads_next_block_is_the_one_it_freed) {
  cr_assert_eq(ma_heap_collect(true), 0);
  char *p = touched(1 * MiB);
  ma_free(p);
  if (!stashing()) {
    cr_assert_eq(own_stash(), 0, "a PROT_NONE guard is never stashed");
    return;
  }
  cr_assert_eq(own_stash(), 1 * MiB + (obj_secure_on() ? os_page_size() : 0));
  char *q = ma_malloc(1 * MiB);
  cr_assert_eq(q, p, "reused from the stash");
  cr_assert_eq(own_stash(), 0);
  cr_assert_eq(ma_usable_size(q), 1 * MiB);
  cr_assert_eq(ma_heap_check(), 0);
  ma_free(q);
}

Test(large_stash, a_larger_block_is_split_and_its_pieces_merge_again) {
  char *p = touched(2 * MiB);
  ma_free(p);
  char *a = ma_malloc(512 * KiB), *b = ma_malloc(512 * KiB);
  if (obj_secure_on()) { /* split from the back: guarded_ranges_split_from_their_back */
    if (stashing()) {
      cr_assert_eq(a, p + 2 * MiB - 512 * KiB);
      cr_assert_eq(b, a - os_page_size() - 512 * KiB);
    }
    ma_free(a);
    ma_free(b);
    return;
  }
  cr_assert_eq(a, p, "the front of the stashed block");
  cr_assert_eq(b, p + 512 * KiB, "the front of what was left");
  cr_assert_eq(ma_usable_size(a), 512 * KiB, "split, not handed out whole");
  cr_assert_eq(own_stash(), 1 * MiB);
  cr_assert_eq(ma_heap_check(), 0);
  ma_free(b);
  ma_free(a); /* joins b, which joined the rest: one range of 2 MiB again */
  cr_assert_eq(own_stash(), 2 * MiB);
  char *c = ma_malloc(2 * MiB);
  cr_assert_eq(c, p, "the pieces merged");
  ma_free(c);
}

Test(large_stash, a_block_with_little_over_is_handed_out_whole) {
  char *p = touched(600 * KiB);
  ma_free(p);
  char *q = ma_malloc(500 * KiB);
  if (!stashing()) {
    cr_assert_eq(own_stash(), 0);
    ma_free(q);
    return;
  }
  cr_assert_eq(q, p);
  cr_assert_eq(ma_usable_size(q), 600 * KiB, "100 KiB over is no block of its own");
  cr_assert_eq(own_stash(), 0);
  ma_free(q);
  char *r = ma_malloc(400 * KiB); /* 200 KiB over: split */
  cr_assert_eq(r, obj_secure_on() ? p + 200 * KiB : p,
               "the back of a guarded range, else its front");
  cr_assert_eq(ma_usable_size(r), 400 * KiB);
  ma_free(r);
}

/* Secure mode (guard markers): a guarded range is split from its back, so the block keeps
 * the range's guard page and marker; the front's guard page, the page before the block,
 * gets its marker when the front is handed out, and a freed block merges with the front
 * before it (no marker between them). */
Test(large_stash, guarded_ranges_split_from_their_back) {
  secure_markers_on();
  size_t ps = os_page_size();
  char *p = touched(2 * MiB);
  ma_free(p);
  cr_assert_eq(own_stash(), 2 * MiB + ps);
  char *a = touched(512 * KiB);
  cr_assert_eq(a, p + 2 * MiB - 512 * KiB, "the back of the stashed range");
  cr_assert_eq(ma_usable_size(a), 512 * KiB);
  cr_assert_eq(own_stash(), 1536 * KiB, "the front and its guard page");
  cr_assert(write_faults(a + 512 * KiB), "the range's guard page guards the block");
  char *b = touched(512 * KiB);
  cr_assert_eq(b, a - ps - 512 * KiB, "the back of the front");
  cr_assert(write_faults(b + 512 * KiB), "the front's guard page got its marker");
  cr_assert_eq(ma_heap_check(), 0);
  ma_free(b); /* joins the front before it: that front's guard page had no marker */
  cr_assert_eq(own_stash(), 1536 * KiB);
  cr_assert_eq(__atomic_load_n(&heap_get()->stash.n, __ATOMIC_RELAXED), 1, "one range");
  char *c = ma_malloc(1536 * KiB - ps);
  cr_assert_eq(c, p, "the merged range, whole");
  cr_assert(write_faults(c + 1536 * KiB - ps), "b's guard page guards it");
  cr_assert_eq(ma_heap_check(), 0);
  ma_free(c);
  ma_free(a);
  cr_assert_eq(own_stash(), 2 * MiB + ps, "all of it back, in two ranges (a marker between)");
}

/* An allocation the stash cannot serve sends the cache the ranges stashed 20 ms ago or
 * more, where they merge with their neighbours; a block that grows past the small classes
 * sends all of them. */
Test(large_stash, a_miss_sends_its_older_ranges_to_the_cache) {
  char *p = touched(512 * KiB);
  ma_free(p);
  size_t stashed = own_stash();
  if (stashing()) cr_assert_gt(stashed, 0);
  usleep(60 * 1000);
  char *q = ma_malloc(1 * MiB);
  cr_assert_not_null(q);
  cr_assert_eq(own_stash(), 0, "60 ms old: sent by the miss");
  cr_assert_geq(large_cached_bytes(), stashed, "the stashed block is in the cache");
  cr_assert_eq(ma_heap_check(), 0);
  ma_free(q);
  cr_assert_eq(own_stash(), stashing() ? 1 * MiB + (obj_secure_on() ? os_page_size() : 0) : 0);
  char *v = ma_realloc(ma_malloc(100), 300 * KiB); /* a block that grows: all of it goes */
  cr_assert_not_null(v);
  cr_assert_eq(own_stash(), 0, "sent by a growing block");
  ma_free(v);
}

/* Blocks that realloc made or grew go to the cache when freed, where growing blocks find
 * their room (a stash holding them made mstress 2.5x slower). */
Test(large_stash, a_block_grown_by_realloc_is_not_stashed) {
  char *p = ma_malloc(200 * KiB);
  memset(p, 3, 200 * KiB);
  p = ma_realloc(p, 1 * MiB);
  cr_assert_not_null(p);
  memset(p, 4, 1 * MiB);
  ma_free(p);
  cr_assert_eq(own_stash(), 0);
  char *small = ma_malloc(100); /* a small block grown past the largest class */
  char *q = ma_realloc(small, 300 * KiB);
  cr_assert_not_null(q);
  ma_free(q);
  cr_assert_eq(own_stash(), 0);
  char *r = touched(300 * KiB); /* and a plain one is */
  ma_free(r);
  if (stashing()) cr_assert_gt(own_stash(), 0);
}

typedef struct {
  char *p;
  char *again;
  size_t stash_after_free;
} handoff;

static void *free_then_alloc(void *arg) {
  handoff *h = arg;
  void *small = ma_malloc(64); /* a heap (a thread whose first call frees has none) */
  ma_free(h->p);
  h->stash_after_free = own_stash();
  h->again = ma_malloc(1 * MiB);
  ma_free(small);
  return NULL;
}

/* As a freed small block joins the freeing thread's cache, a freed large block joins the
 * freeing thread's stash (once the thread has a heap: its first call may free a block). */
Test(large_stash, a_block_freed_by_another_thread_joins_that_threads_stash) {
  char *small = ma_malloc(64); /* (this thread has a heap of its own) */
  handoff h = {touched(1 * MiB), NULL, 0};
  pthread_t t;
  pthread_create(&t, NULL, free_then_alloc, &h);
  pthread_join(t, NULL);
  if (stashing()) {
    cr_assert_gt(h.stash_after_free, 0);
    cr_assert_eq(h.again, h.p, "the freeing thread reused it");
  }
  cr_assert_eq(own_stash(), 0);
  ma_free(h.again);
  ma_free(small);
}

/* Twenty blocks of 1 MiB freed: the stash keeps at most its share (8 MiB, HUGE_STASH_N
 * ranges); the rest went to the cache; nothing is lost. */
Test(large_stash, is_bounded_and_what_it_cannot_keep_goes_to_the_cache) {
  ma_heap_collect(true);
  char *v[20];
  for (int i = 0; i < 20; i++) v[i] = touched(1 * MiB);
  /* every other one first: ranges that cannot merge, then their neighbours */
  for (int i = 0; i < 20; i += 2) ma_free(v[i]);
  heap *h = heap_get();
  cr_assert_leq(__atomic_load_n(&h->stash.n, __ATOMIC_RELAXED), HUGE_STASH_N);
  cr_assert_leq(own_stash(), 8 * MiB + 8 * os_page_size());
  for (int i = 1; i < 20; i += 2) ma_free(v[i]);
  cr_assert_leq(own_stash(), 8 * MiB + 8 * os_page_size());
  if (stashing())
    cr_assert_geq(large_cached_bytes(), 20 * MiB, "stash and cache hold all 20 MiB");
  else /* PROT_NONE guards: a mapping each, unmapped when freed */
    cr_assert_eq(large_cached_bytes(), 0);
  cr_assert_eq(ma_heap_check(), 0);
  ma_heap_collect(true);
  cr_assert_eq(own_stash(), 0);
  cr_assert_eq(large_cached_bytes(), 0);
}

typedef struct {
  test_stage st;
  size_t stashed;
} worker;

static void *free_and_wait(void *arg) {
  worker *w = arg;
  char *a = touched(1 * MiB), *b = touched(700 * KiB);
  ma_free(a);
  ma_free(b);
  w->stashed = own_stash();
  stage_set(&w->st, 1);
  stage_wait(&w->st, 2); /* idle while another thread collects */
  char *c = touched(1 * MiB);
  ma_free(c);
  return NULL;
}

/* ma_heap_collect(true) from any thread empties every thread's stash at once. */
Test(large_stash, a_collection_from_another_thread_empties_it) {
  worker w = {TEST_STAGE_INIT, 0};
  pthread_t t;
  pthread_create(&t, NULL, free_and_wait, &w);
  stage_wait(&w.st, 1);
  if (stashing()) cr_assert_gt(w.stashed, 0);
  cr_assert_eq(heap_stash_bytes(), w.stashed);
  cr_assert_eq(ma_heap_check(), 0);
  ma_heap_collect(true);
  cr_assert_eq(heap_stash_bytes(), 0);
  cr_assert_eq(large_cached_bytes(), 0);
  stage_set(&w.st, 2);
  pthread_join(t, NULL);
}

static void *free_and_exit(void *arg) {
  size_t *stashed = arg;
  char *a = touched(1 * MiB);
  ma_free(a);
  *stashed = own_stash();
  return NULL;
}

/* A thread's stash goes to the cache when it exits (an orphaned heap would keep it until a
 * new thread took the heap over). */
Test(large_stash, an_exiting_thread_hands_it_to_the_cache) {
  ma_heap_collect(true);
  size_t stashed = 0;
  pthread_t t;
  pthread_create(&t, NULL, free_and_exit, &stashed);
  pthread_join(t, NULL);
  if (stashing()) cr_assert_gt(stashed, 0);
  cr_assert_eq(heap_stash_bytes(), 0);
  cr_assert_geq(large_cached_bytes(), stashed, "in the cache now");
  cr_assert_eq(ma_heap_check(), 0);
}

/* A stashed block is free: freeing it again is a double free, as for a cached one. */
Test(large_stash, freeing_a_stashed_block_again_aborts, .signal = SIGABRT) {
  char *p = touched(1 * MiB);
  ma_free(p);
  ma_free(p);
}

/* Blocks of random sizes replaced from two threads, each also freeing some of the other's:
 * contents survive, and the heap checks out with blocks in both stashes. */
#define SLOTS 16
static _Atomic(char *) shared_slot;

static void *replace_many(void *arg) {
  uint64_t x = (uint64_t)(uintptr_t)arg;
  char *v[SLOTS] = {0};
  size_t n[SLOTS] = {0};
  for (int i = 0; i < 4000; i++) {
    unsigned k = (unsigned)(test_rand(&x) % SLOTS);
    if (v[k]) {
      for (size_t o = 0; o < n[k]; o += 4096) cr_assert_eq(v[k][o], (char)k, "block %u", k);
      if (test_rand(&x) % 8 == 0) {
        char *o = atomic_exchange(&shared_slot, v[k]);
        ma_free(o);
      } else {
        ma_free(v[k]);
      }
    }
    n[k] = 128 * KiB + test_rand(&x) % (3 * MiB);
    v[k] = ma_malloc(n[k]);
    cr_assert_not_null(v[k]);
    for (size_t o = 0; o < n[k]; o += 4096) v[k][o] = (char)k;
  }
  for (int k = 0; k < SLOTS; k++) ma_free(v[k]);
  return NULL;
}

Test(large_stash, two_threads_replacing_and_exchanging_blocks) {
  uint64_t seed = test_seed() | 1;
  pthread_t t[2];
  for (int i = 0; i < 2; i++)
    pthread_create(&t[i], NULL, replace_many, (void *)(uintptr_t)(seed + 2 * (uint64_t)i));
  for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
  ma_free(atomic_exchange(&shared_slot, NULL));
  cr_assert_eq(ma_heap_check(), 0);
  ma_heap_collect(true);
  cr_assert_eq(large_cached_bytes(), 0);
}

/* A fork child does not have the threads whose heaps it copied: their stashes go to the
 * child's cache (their heaps are never touched again), not lost with them. */
Test(large_stash, a_fork_child_takes_the_stashes_of_threads_it_does_not_have) {
  worker w = {TEST_STAGE_INIT, 0};
  pthread_t t;
  pthread_create(&t, NULL, free_and_wait, &w);
  stage_wait(&w.st, 1);
  size_t stashed = heap_stash_bytes();
  pid_t pid = fork();
  if (pid == 0) {
    int rc = heap_stash_bytes() != 0 ? 1 : large_cached_bytes() < stashed ? 2 : 0;
    if (rc == 0 && ma_heap_check() != 0) rc = 3;
    char *p = ma_malloc(1 * MiB); /* the cache serves the child */
    if (rc == 0 && !p) rc = 4;
    ma_free(p);
    _exit(rc);
  }
  int status = 0;
  cr_assert_eq(waitpid(pid, &status, 0), pid);
  cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %#x", status);
  stage_set(&w.st, 2);
  pthread_join(t, NULL);
}
