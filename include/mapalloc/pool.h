/* mapalloc object pools: thread-safe allocators of fixed-size objects.
 *
 * A pool hands out objects of one size carved from slabs of pages it takes from the page
 * layer with its own protection and map flags. Allocation and free by the same thread take
 * no lock, no atomic read-modify-write and no system call (a per-thread cache); a free from
 * another thread is one atomic push onto the owning slab's remote list. Empty slabs go
 * back to the operating system on ma_pool_trim and, beyond a small per-thread retention
 * (1 MiB), as soon as they empty.
 *
 * Conventions (DESIGN.md): functions that can fail return 0 or a negative errno; nothing
 * changes on failure. Misuse that is cheap to detect (a double free, a pointer into the
 * middle of an object, another pool's object, a pointer that no pool handed out) aborts
 * the process with a message naming it, e.g. "mapalloc: double free of 0x...".
 *
 * Performance notes: a thread reaches its cache for the pool it used last in one compare,
 * for up to 256 live pools through a TLS table, beyond that through a locked lookup.
 * Pools with zero = true, and every pool under valgrind, take a slightly longer path.
 * Under valgrind (memcheck) objects are reported as heap blocks (MALLOCLIKE/FREELIKE); with
 * -fsanitize=address free objects are poisoned. MAPALLOC_TRACK=0 turns the valgrind client
 * requests off (for callgrind runs).
 *
 * Run-time options (README) apply to pools as to the heap, from the first use of the
 * library on, a pool made before any malloc included: MAPALLOC_SECURE=1 gives pool slabs
 * guard pages and a shuffled allocation order too.
 *
 * ma_pool_free never changes errno.
 */
#ifndef MAPALLOC_POOL_H
#define MAPALLOC_POOL_H

#include "mapalloc/pages.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ma_pool ma_pool;

typedef struct ma_pool_opts {
  size_t obj_size;    /* required, 1 .. 1 GiB */
  size_t align;       /* 0 = natural: 16 when obj_size is a multiple of 16, else the largest
                         power of two dividing obj_size, at least 8; else a power of two up
                         to 4 MiB (objects are 8-byte aligned at least: 1, 2, 4 act as 8) */
  unsigned prot;      /* 0 = READ|WRITE; READ|WRITE|EXEC needs MA_MAP_JIT in map_flags */
  unsigned map_flags; /* MA_MAP_HUGE_TRY, LOCKED, DONTDUMP, DONTFORK, NORESERVE, JIT,
                         POPULATE (= commit) */
  bool commit;        /* true: objects come from populated pages (no fault on first touch) */
  bool zero;          /* true: every object is returned zeroed */
  size_t max_bytes;   /* 0 = unlimited; else the committed footprint (slabs and their
                         headers) never exceeds it: ma_pool_alloc fails with ENOMEM */
} ma_pool_opts;

typedef struct ma_pool_stats {
  size_t obj_size;        /* as created */
  size_t live;            /* objects allocated and not freed */
  size_t capacity;        /* objects the active slabs can hold */
  size_t committed_bytes; /* memory made accessible (a bound on resident memory) */
  size_t reserved_bytes;  /* address space reserved */
  size_t allocs, frees;   /* successful calls since creation */
} ma_pool_stats;

/* Creates a pool. Errors: -EINVAL (opts or out NULL, obj_size 0 or > 1 GiB, align not a
 * power of two or > 4 MiB, prot without READ|WRITE or with other bits, map_flags outside
 * the list above), -EPERM (EXEC without MA_MAP_JIT), -ENOMEM. Thread-safe. */
MA_API int ma_pool_create(const ma_pool_opts *opts, ma_pool **out);

/* Returns an object of obj_size bytes aligned as requested (zeroed with opts.zero), or
 * NULL with errno = ENOMEM (max_bytes reached or the system is out of memory) or EINVAL
 * (p NULL). Thread-safe; lock-free on the fast path. */
MA_API void *ma_pool_alloc(ma_pool *p);

/* Returns obj to its pool; NULL is a no-op. Thread-safe, from any thread. Aborts with a
 * message on a double free, an interior pointer, an object of another pool or a pointer
 * that is not a pool object. */
MA_API void ma_pool_free(ma_pool *p, void *obj);

/* Gives empty slabs back to the OS now: those of the calling thread and of exited threads,
 * and asks other threads to do the same at their next slow path (each retains at most
 * 1 MiB of empty slabs anyway). Returns 0, or -EINVAL for NULL. Thread-safe. */
MA_API int ma_pool_trim(ma_pool *p);

/* Fills *out with the pool's counters (summed over threads; a consistent snapshot only
 * when no thread is using the pool). Thread-safe. No-op if p or out is NULL. */
MA_API void ma_pool_stats_get(ma_pool *p, ma_pool_stats *out);

/* Fork (docs/fork.md; the heap's policy, heap.h): fork() is supported from any thread, also
 * while other threads use the pool. In the child the calling thread's caches and those of
 * exited threads are used as before; the caches of the parent's other threads are left
 * behind: their objects and slabs stay allocated there and are never reused (a fork may
 * have caught such a cache mid-operation), though the child may free objects of theirs it
 * holds, from any thread. A child thread that gets a dead parent thread's thread pointer
 * gets a cache of its own. */

/* Walks pool p and checks its invariants; for tests and debugging (compiled in every
 * build; -DMAPALLOC_DEBUG=ON also compiles checks into the slow paths). Checks the caches
 * of the calling thread and of exited threads: every segment (magic, owner, free mask,
 * segment map entries), every slab (the used/count/notify encoding against its free
 * lists, each link a block of the slab tagged free, list membership) and each cache's
 * retained/active/peak byte accounting; when no other thread holds a cache of p, also the
 * pool's reserved/committed/capacity totals and max_bytes.
 * Returns 0 when everything walked holds; -EBUSY when it holds but the caches of other
 * live threads that used p were skipped (a thread uses its cache without a lock: call it
 * when those threads have exited, or accept a partial walk); in a fork child the caches the
 * fork left behind are skipped, with the totals, and do not make it -EBUSY; -EINVAL for p
 * NULL. On an
 * inconsistency it writes "mapalloc: check failed at FILE:LINE: CONDITION (values)" to
 * stderr and aborts. Thread-safety: any thread; trims of p wait meanwhile. Does not
 * allocate. */
MA_API int ma_pool_check(ma_pool *p);

/* Releases every slab, live objects included, and the pool. No thread may use the pool or
 * its objects any more. NULL is a no-op. */
MA_API void ma_pool_destroy(ma_pool *p);

#ifdef __cplusplus
}
#endif
#endif /* MAPALLOC_POOL_H */
