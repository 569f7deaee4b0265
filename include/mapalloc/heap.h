/* mapalloc heap: a malloc-compatible allocator (ma_ prefix), its statistics and controls.
 *
 * Small and medium blocks (up to 128 KiB) come from size classes with at most 12.5%
 * internal waste above 128 bytes (8 classes per power of two; 16-byte steps below), carved
 * from slabs inside 4 MiB aligned segments; each thread allocates from its own heap without
 * locks. Larger blocks are mapped straight from the page layer and grow in place with
 * mremap. Freed pages go back to the OS after MAPALLOC_PURGE_DELAY_MS.
 *
 * The functions follow C and POSIX malloc semantics exactly (see each comment): every block
 * is at least 16-byte aligned; on failure NULL is returned with errno = ENOMEM; free(NULL)
 * is a no-op; free never changes errno. libmapalloc-preload.so exports the standard names
 * (malloc, free, ...) on top of these.
 *
 * Thread-safety: every function may be called from any thread at any time; a block may be
 * freed by a thread other than the one that allocated it.
 *
 * Misuse is detected where it costs (almost) nothing: freeing a pointer that is not the
 * start of a live block of this heap (a stack address, p + 16, a pointer from another
 * allocator) prints "mapalloc: invalid free of 0x..." and aborts; a double free (small or
 * large, immediate or after other calls) prints "mapalloc: double free of 0x..." and aborts.
 *
 * Secure mode (-DMAPALLOC_SECURE=ON; docs/hardening.md) adds: free-list links encoded with
 * a per-process random key and checked when followed (a write after free over a freed
 * block's link aborts with "mapalloc: corrupted free list" at the next allocation), a
 * guard page after each slab and each large block (a linear overflow off a large
 * block faults at once), a random allocation order within a slab, and ma_free_sized
 * aborting on a size the block cannot have ("free_sized with a wrong size"). Blocks and
 * semantics are otherwise the same. MAPALLOC_SECURE=1 in the environment turns on the parts
 * that cost nothing on the fast paths (guard pages, random order) in the default build.
 */
#ifndef MAPALLOC_HEAP_H
#define MAPALLOC_HEAP_H

#include <stdbool.h>
#include <stddef.h>

#include "mapalloc/pages.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Allocates `size` bytes (16-byte aligned, uninitialised). size 0 gives a unique minimal
 * block. Errors: NULL with errno = ENOMEM when memory or address space runs out or size is
 * larger than PTRDIFF_MAX. */
MA_API void *ma_malloc(size_t size);

/* Allocates n * size zeroed bytes. Errors: NULL + ENOMEM on overflow of n * size or lack of
 * memory. Memory fresh from the OS is not cleared again. */
MA_API void *ma_calloc(size_t n, size_t size);

/* Resizes the block p to `size` bytes, keeping its contents up to the smaller size; may move
 * it. p == NULL is ma_malloc(size). size == 0 with p != NULL frees p and returns NULL (as
 * glibc does). Errors: NULL + ENOMEM, and p is left untouched and still owned by the caller.
 * p must be a live block of this heap (else abort, as for ma_free). */
MA_API void *ma_realloc(void *p, size_t size);

/* ma_realloc(p, n * size) with an overflow check. Errors: NULL + ENOMEM on overflow or lack
 * of memory; p untouched. */
MA_API void *ma_reallocarray(void *p, size_t n, size_t size);

/* Frees the block p (NULL: no-op). Any thread may free any block. Never changes errno.
 * Aborts with a message on a pointer that is not a live block ("invalid free") or on an
 * immediate double free. */
MA_API void ma_free(void *p);

/* ma_free for a caller that knows the size it asked for; `size` must be between the
 * requested size and ma_usable_size(p). The default build does not trust it (the block is
 * freed as ma_free); the secure build aborts ("free_sized with a wrong size") when size is
 * larger than the usable size or less than half of it (minus 16 bytes, a page for large
 * blocks: what an in-place ma_realloc can leave). Blocks from the aligned functions are to
 * be freed with ma_free (or free_aligned_sized, which checks only the upper bound). */
MA_API void ma_free_sized(void *p, size_t size);

/* Allocates `size` bytes aligned to `align`, a power of two (any size). Errors: NULL with
 * errno = EINVAL if align is not a power of two, ENOMEM if out of memory. */
MA_API void *ma_aligned_alloc(size_t align, size_t size);

/* Allocates `size` bytes aligned to `align` (a power of two multiple of sizeof(void *)) and
 * stores the pointer in *out. Returns 0, EINVAL for a bad alignment, or ENOMEM; on error
 * *out is not touched. (Returns a positive errno as POSIX requires.) */
MA_API int ma_posix_memalign(void **out, size_t align, size_t size);

/* The number of usable bytes of block p (>= the size asked for; all of them may be written).
 * 0 for NULL. Aborts on a pointer that is not a live block of this heap. */
MA_API size_t ma_usable_size(const void *p);

typedef struct ma_heap_stats {
  size_t allocated;    /* bytes in live blocks (usable sizes) */
  size_t active;       /* bytes of slab pages and large mappings in use */
  size_t committed;    /* bytes that may hold memory (mapped and not purged) */
  size_t reserved;     /* address space held (segments and large mappings) */
  size_t mapped_large; /* bytes in large blocks mapped directly from the OS */
  size_t allocs;       /* blocks handed out so far (see the precision below) */
  size_t frees;        /* blocks given back so far (see the precision below) */
  size_t purges;       /* number of page ranges returned to the OS */
} ma_heap_stats;

/* Fills *out with the process-wide heap statistics (per-thread counters summed on read; a
 * consistent snapshot only when no other thread allocates at the time). Thread-safe.
 * Precision: nothing is counted on the malloc/free fast paths. `allocated` is exact (live
 * bytes: blocks taken from slabs and large blocks, less the blocks waiting in thread
 * caches) whenever no thread is in the middle of a call. `allocs` and `frees` count large
 * blocks exactly and small blocks as they move between thread caches and slabs: a block
 * reused through a thread cache (freed and allocated again by the same thread) counts once,
 * so they are lower bounds of the calls made and differ from them by at most a cache's
 * content per class and thread. */
MA_API void ma_heap_stats_get(ma_heap_stats *out);

/* Writes a human-readable statistics table to file descriptor fd: a header naming the
 * process and its pid, the totals, then a table per size class (block size, live blocks
 * and bytes, slabs, slab bytes, utilisation; read from the slab descriptors, exact when no
 * other thread allocates meanwhile; blocks in thread caches are not live) and a line for
 * the large blocks. Thread-safe (it also takes the heap space's lock for the class walk).
 * It does not allocate and writes with write(2) only, but it is not async-signal-safe in
 * general: it takes the large-block table's mutexes (one per stripe of addresses) and the
 * large-block cache's, which a thread holds inside a malloc family call for a block over
 * 128 KiB (and its free or realloc), inside a small-block malloc's slow path (a thread's
 * first call, a cache refill: it expires cached large blocks), in
 * ma_heap_collect/malloc_trim, during a pass of the background purger and across fork(). A
 * signal handler may call it only when the thread it interrupted cannot be inside one of
 * those (e.g. the signal is blocked around them, or the handler runs on a thread that makes
 * no such call): otherwise it can deadlock. Other threads holding them only make it wait.
 * The per-thread counters (and the large blocks each thread keeps for reuse) are read
 * without any lock. */
MA_API void ma_heap_stats_print(int fd);

/* Returns unused memory to the OS now: collects frees pending from other threads, releases
 * empty slabs and segments of the calling thread's heap and of heaps left by exited threads,
 * and purges their freed pages. force = false purges only pages whose purge delay has
 * expired; force = true purges everything that is free and also releases the current (empty)
 * slabs. Other live threads' heaps purge themselves on their next slow path. Returns 0 (the
 * operations cannot fail in a way the caller can act on). Thread-safe. */
MA_API int ma_heap_collect(bool force);

/* Fork (docs/fork.md): fork() is supported from any thread, also while other threads
 * allocate and free. The child's heap is consistent and usable, also by threads it starts.
 * The heaps of the parent's other threads are left behind in the child: their cached
 * blocks, slabs and pending remote frees stay allocated there and are never reused (a
 * fork may have caught their lock-free thread caches mid-operation); the child may still
 * free blocks of theirs it holds, from any thread. Heaps of exited threads are reused. A
 * child thread that gets a dead parent thread's thread pointer gets a heap of its own. The
 * pools follow the same policy (pool.h). */

/* Walks the whole heap and checks its invariants; for tests and debugging (compiled in
 * every build; -DMAPALLOC_DEBUG=ON also compiles checks into the allocator's slow paths).
 * What: every thread heap's slabs (the used/count/notify encoding of each slab against the
 * lengths of its free lists, every link a block of its slab tagged free, list membership:
 * current slab, partial lists, full slabs), its segments (header magic, owner, free mask,
 * segment map entries) and its byte accounting (retained, active and peak bytes); the
 * thread cache of the calling thread and of exited threads' heaps (each block a free block
 * of its size class, counts); the segment map against the live segments and the space's
 * reserved/committed/capacity totals; the large blocks' table and their cache of freed
 * ranges (sorted, disjoint, not overlapping a live block, inside read-write mappings per
 * /proc/self/maps when readable).
 * Errors: returns 0 when everything holds; on the first inconsistency it writes
 * "mapalloc: check failed at FILE:LINE: CONDITION (values)" to stderr and aborts (a heap
 * that fails a check cannot be trusted to continue).
 * Thread-safety: any thread, at any time. It takes every heap's lock in turn and holds them
 * (other threads' slow paths wait; their fast paths go on), so it is exact even while other
 * threads allocate, except for what a live thread owns without a lock: other running
 * threads' thread caches are not walked. In a fork child the heaps of the threads that did
 * not survive the fork are skipped (left behind: see "Fork" above), and so are the
 * whole-space totals. Takes O(heap size):
 * every free block is visited. Does not allocate; must not be called from a signal
 * handler. */
MA_API int ma_heap_check(void);

#ifdef __cplusplus
}
#endif

#endif /* MAPALLOC_HEAP_H */
