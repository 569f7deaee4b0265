/* Heap profiling, internal side (prof.c: sampling, stacks, sampled blocks; prof_dump.c:
 * files, leak report, signal). Public API: include/mapalloc/prof.h.
 *
 * HOW SAMPLING STAYS OFF THE FAST PATHS
 * -------------------------------------
 * Profiling off (prof_on false, the default) adds no instruction to the inline malloc and
 * free paths: every hook below sits in a slow path (heap_malloc_slow, heap_free_generic,
 * heap_usable_size, heap_malloc_large and the large-block branches of ma_realloc).
 *
 * Profiling on: every class has a second thread-cache list (HEAP_NLISTS) that frees push
 * onto, through the same inline free (slabs' bin_off include heap_space.bin_off_base), and a
 * thread's first lists, which mallocs pop from, have bound 0 (room is minus the blocks on
 * the list), so only counted refills fill them. Sampling stays exact because every block
 * the thread pops was counted once against its class's countdown (prof_thread.cls_left)
 * before the pop: a malloc that finds the list empty (prof_malloc_small) charges its own
 * block, samples it when the countdown runs out, and refills the list with as many blocks as
 * the countdown has room for, charged ahead (heap_tc_refill_counted: the thread's freed
 * blocks from the second list first); a trim refunds the charge of the blocks it takes off
 * a first list (heap_tc_trim). So the countdown runs out only on a malloc that found the
 * list empty. A sampled small block is served outside the slabs, from the profiler's own
 * region (page-granular slots of one reservation), so the free fast path's segment-map
 * check already sends it to heap_free_generic, where one range compare (prof_owns) finds
 * it before the large-block lookup. Sampled large blocks stay ordinary large blocks and are
 * recorded in the profiler's table of live samples (looked up on a large free only while
 * such a record exists).
 */
#ifndef MAPALLOC_PROF_INTERNAL_H
#define MAPALLOC_PROF_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Per-thread sampling state, kept in the thread's heap struct (no TLS of its own: the
 * heap's TLS works under MA_TLS_DYNAMIC too). */
#define PROF_NCLASSES 88 /* HEAP_NCLASSES (checked in prof.c) */
typedef struct prof_thread {
  int64_t left;  /* large blocks: bytes until the next sample */
  uint64_t rng;  /* xorshift state; 0 = not seeded */
  uint32_t busy; /* inside the profiler: nested allocations are never sampled */
  /* Small blocks: one countdown per size class (0: not started). Each class's mallocs are
   * a stream of their own with exponential intervals, so a block of S bytes is still
   * sampled with probability 1 - exp(-S/rate) (the intervals are memoryless), and a class's
   * cache refill can be charged ahead without moving another class's sample point. */
  int64_t cls_left[PROF_NCLASSES];
} prof_thread;

struct heap;

/* Set once at start-up (MAPALLOC_PROF / MAPALLOC_LEAKS); read by the hooks. */
extern bool prof_on;
/* The region of sampled small blocks: [prof_lo, prof_hi), empty while profiling is off. */
extern uintptr_t prof_lo, prof_hi;

static inline bool prof_owns(const void *p) {
  return (uintptr_t)p - prof_lo < prof_hi - prof_lo;
}

/* heap_global_init hook, after obj_options_read: sets prof_on, prof_rate, prof_signo from
 * the options table (MAPALLOC_PROF*, MAPALLOC_LEAKS); warns about bad values. */
void prof_options_apply(void);
/* heap constructor hook: reserves the region, warms up the unwinder, installs the signal
 * handler and fork handlers. */
void prof_start(void);
/* heap destructor hook: the exit profile and leak report. */
void prof_exit(void);

/* heap_malloc_slow hook (profiling on, h->bs set, not tracking): counts the class's block
 * against the thread's countdown; returns a sampled block, or NULL (not sampled, or no
 * room for the sample: the caller serves an ordinary block). */
void *prof_malloc_small(struct heap *h, unsigned cls);
/* Starts class cls's countdown in h (a fresh interval: the intervals are memoryless, so a
 * class may start at its first malloc or at its first free alike). */
void prof_class_start(struct heap *h, unsigned cls);
/* heap_malloc_large / ma_realloc hook: a large block p of usable size `usable` was just
 * allocated (or moved/resized by realloc): counts it and records it when sampled. */
void prof_note_large(void *p, size_t usable);
/* ma_realloc hook before huge_realloc: forgets p's record (a realloc is a new allocation
 * for the profile); returns a token for prof_large_restore when the realloc fails. */
uint32_t prof_forget_large(const void *p);
void prof_large_restore(const void *p, uint32_t token);
/* heap_free_generic hook for pointers outside the slabs: frees a sampled small block
 * (true), or forgets the record of a sampled large block and returns false (the caller
 * frees it). Aborts on an invalid or double free inside the region. */
bool prof_free(void *p);
/* heap_usable_size hook for a pointer inside the region: the usable size of a live sampled
 * small block; aborts ("invalid pointer") on anything else. */
size_t prof_usable(const void *p);
/* Gives back the pages of the freed sampled-block slots kept resident for reuse: all of
 * them (`force`: the heap_collect_all(true) hook, malloc_trim, ma_heap_collect(true)), or
 * those no sample took for a purge delay (the purger's pass; a sampled free). Any thread. */
void prof_purge(bool force);

/* ---- shared by prof.c and prof_dump.c -------------------------------------------- */
#include <pthread.h>

#define PROF_DEPTH 32 /* frames kept per stack (as gperftools' heap profiler) */

/* One call stack and block size: what a line of the profile reports. */
typedef struct prof_bucket {
  uint64_t stack_hash;         /* of pcs[0..depth) only: the leak report merges sizes */
  size_t size;                 /* usable bytes of each block */
  size_t live_n, live_bytes;   /* sampled blocks not freed yet */
  size_t total_n, total_bytes; /* every sample taken */
  uint32_t depth;
  uint32_t next; /* hash chain (index + 1; 0 ends it) */
  uintptr_t pcs[PROF_DEPTH];
} prof_bucket;

extern pthread_mutex_t prof_lock; /* buckets, live table, region; never held over a call
                                     that can allocate or take a heap lock */
extern prof_bucket *prof_buckets; /* prof_nbuckets used, under prof_lock */
extern uint32_t prof_nbuckets;
extern uint64_t prof_rate;               /* mean bytes between samples */
extern bool prof_write_exit, prof_leaks; /* MAPALLOC_PROF=1, MAPALLOC_LEAKS=1 */
extern int prof_signo;                   /* MAPALLOC_PROF_SIGNAL, 0 = none */
extern _Atomic size_t prof_dropped;      /* samples lost (region or table full) */

/* e^-x for x >= 0 and the inverse sampling probability of a block of `avg` bytes (no
 * libm: the library depends on libc and pthreads only). */
double prof_exp_neg(double x);
double prof_scale(double avg);

/* prof_unwind.c: the calling thread's return addresses, from the caller's (as glibc's
 * backtrace() orders them), at most max; -1 when a frame's unwind rules are beyond its
 * reader (the caller then uses backtrace()). No allocation; no lock once a frame's rule is
 * cached. prof_unwind_init gives it its cache (prof_start; without it every frame's rule is
 * read from .eh_frame again). */
void prof_unwind_init(void);
int prof_unwind(void **pcs, int max);

/* prof_dump.c */
void prof_signal_start(void); /* handler + helper thread */
void prof_signal_poll(void);  /* a sample path: a pending signal dump with no helper */
void prof_dump_atfork_child(void);
void prof_keep_stderr(void); /* the leak report's fd: a dup of stderr at start-up */

#endif /* MAPALLOC_PROF_INTERNAL_H */
