/* The background purger: memory comes back without its owner.
 *
 * Slab state of a thread's heap is touched only under heap.lock (heap_internal.h), so
 * another thread may file the remote frees sent to an idle thread, send the batches an idle
 * thread still holds, and return empty slabs whose purge delay expired. One detached thread
 * does that for every heap (heap_purge_pass: trylock, never waiting on a busy heap), then
 * for the caches of exited threads and the large-block cache, every half purge delay
 * while anything is left to return, every HEAP_PURGER_IDLE_MS when nothing is.
 *
 * It starts at the first slow path after two threads had heaps at once or one exited (a
 * single-threaded program stays single-threaded: its own slow paths purge), never in the
 * dynamic loader and never holding a lock; MAPALLOC_BACKGROUND=0 turns it off. It blocks
 * every signal, takes purger_lock for each pass, and fork's prepare handler takes that lock
 * too, so a fork never catches it inside a heap. In the child it does not exist; the
 * child's own second thread starts another. It stops at exit (a destructor), after its
 * current pass. */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <time.h>

#include "malloc/heap_internal.h"

#define HEAP_PURGER_IDLE_MS 250
#define HEAP_PURGER_MIN_MS  10

enum { PURGER_OFF, PURGER_STARTING, PURGER_RUNNING, PURGER_FAILED, PURGER_STOPPED };

static pthread_mutex_t purger_lock = PTHREAD_MUTEX_INITIALIZER;
static _Atomic int purger_state = PURGER_OFF;
static _Atomic size_t purger_passes;

static void purger_sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0) {
  }
}

static long purger_busy_ms(void) {
  long d = heap_opt.purge_delay_ms / 2;
  return d < HEAP_PURGER_MIN_MS    ? HEAP_PURGER_MIN_MS
         : d > HEAP_PURGER_IDLE_MS ? HEAP_PURGER_IDLE_MS
                                   : d;
}

static void *purger_main(void *arg) {
  (void)arg;
  long wait = purger_busy_ms();
  for (;;) {
    purger_sleep_ms(wait);
    pthread_mutex_lock(&purger_lock);
    if (atomic_load(&purger_state) != PURGER_RUNNING) {
      pthread_mutex_unlock(&purger_lock);
      return NULL;
    }
    bool more = heap_purge_pass();
    atomic_fetch_add_explicit(&purger_passes, 1, memory_order_relaxed);
    pthread_mutex_unlock(&purger_lock);
    wait = more ? purger_busy_ms() : HEAP_PURGER_IDLE_MS;
  }
}

static void purger_keep_segments(bool on) {
  __atomic_store_n(&heap_space.keep_segments, on, __ATOMIC_RELAXED);
}

void heap_purger_poke(void) {
  if (heap_likely(atomic_load_explicit(&purger_state, memory_order_relaxed) != PURGER_OFF)) return;
  if (heap_opt.background == 0 || heap_opt.purge_delay_ms < 0 ||
      !atomic_load_explicit(&heap_threads_seen, memory_order_relaxed))
    return;
  int off = PURGER_OFF;
  if (!atomic_compare_exchange_strong(&purger_state, &off, PURGER_STARTING)) return;
  int saved = errno;
  pthread_attr_t attr;
  sigset_t all, old;
  sigfillset(&all);
  pthread_t t;
  int rc = pthread_attr_init(&attr);
  if (rc == 0) {
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, (size_t)64 << 10);
    pthread_sigmask(SIG_SETMASK, &all, &old); /* the thread starts with every signal blocked */
    atomic_store(&purger_state, PURGER_RUNNING);
    rc = pthread_create(&t, &attr, purger_main, NULL);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&attr);
  }
  if (rc != 0) atomic_store(&purger_state, PURGER_FAILED); /* not tried again */
  /* Segments emptied whole may stay for the purge delay now: something returns them with
   * no call from their thread (in a single-threaded program a thread that frees all and
   * waits would keep them). */
  if (rc == 0) purger_keep_segments(true);
  errno = saved;
}

size_t heap_purger_passes(void) {
  return atomic_load_explicit(&purger_passes, memory_order_relaxed);
}

bool heap_purger_running(void) {
  return atomic_load_explicit(&purger_state, memory_order_relaxed) == PURGER_RUNNING;
}

void heap_purger_atfork_prepare(void) {
  pthread_mutex_lock(&purger_lock);
}
void heap_purger_atfork_parent(void) {
  pthread_mutex_unlock(&purger_lock);
}
void heap_purger_atfork_child(void) {
  /* No purger thread in the child; one starts there again with its second thread. */
  int st = atomic_load(&purger_state);
  if (st == PURGER_RUNNING || st == PURGER_STARTING) atomic_store(&purger_state, PURGER_OFF);
  purger_keep_segments(false);
  pthread_mutex_unlock(&purger_lock);
}

__attribute__((destructor)) static void heap_purger_stop(void) {
  pthread_mutex_lock(&purger_lock);
  atomic_store(&purger_state, PURGER_STOPPED);
  purger_keep_segments(false);
  pthread_mutex_unlock(&purger_lock);
}
