/* Internal structures of the heap and its inline fast paths (malloc, free).
 *
 * Small blocks (<= HEAP_MAX_SMALL = 128 KiB) are objects of the object layer (src/obj/):
 * one obj_space for the heap, one obj_bins per thread with one bin per size class. The heap
 * adds the size classes, a thread cache in front of the slabs, the thread life cycle (TLS,
 * pthread key, orphaned heaps), the background purger, statistics and misuse messages;
 * slabs, remote-free batches, pointer -> slab lookup and thread-exit hand-over are obj's.
 *
 * Thread cache. Each thread keeps, per size class, a LIFO list of free blocks (heap_tc):
 * malloc pops it, free pushes onto it whichever thread allocated the block, so a free from
 * another thread costs what a local one does (no atomic operation, no shared line written).
 * The lists are bounded (heap_tc.max, about 64 KiB a class): a free past the bound gives the
 * colder half back (blocks of the thread's own slabs to their slabs, the others to their
 * owners, one batch per owner), and an empty list is refilled first with the batches other
 * threads gave back (each joins the list whole, without touching a slab), then with a
 * batch from the class's current slab. So the fast paths touch only the thread's own heap_tc and
 * the block, and slab state is touched only by slow paths, under heap.lock: the owner takes it
 * (uncontended) around every obj call, and another thread can take it to file an idle
 * owner's remote frees and purge its empty slabs (the background purger, trims).
 *
 * A thread's `heap` lives in metadata memory and is never freed: a thread that exits gives
 * its cache back, hands its obj_bins to obj (parked, see obj.h) and its heap struct to the
 * orphan list, where the next new thread picks it up. heap_empty (every list empty, every
 * bound 0) is the heap of a thread before its first call: its malloc and free take the
 * slow path, which gives the thread a heap. Under valgrind (obj_tracking) every bound is 0
 * too, so every call reaches obj's tracked paths.
 *
 * Large blocks (> 128 KiB, or over-aligned) are mapped directly (huge.c), recorded in a
 * side table; freed ones are cached as page ranges for the purge delay and reused, split,
 * merged and grown into in place; mremap moves what cannot grow there.
 */
#ifndef MAPALLOC_HEAP_INTERNAL_H
#define MAPALLOC_HEAP_INTERNAL_H

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mapalloc/heap.h"
#include "obj/obj.h"
#include "malloc/prof.h" /* prof hook: heap.prof */

#define heap_likely(x)   __builtin_expect(!!(x), 1)
#define heap_unlikely(x) __builtin_expect(!!(x), 0)

#define HEAP_NCLASSES  88
#define HEAP_LUT_MAX   1024                /* sizes served by the lookup table */
#define HEAP_MAX_SMALL ((size_t)128 << 10) /* largest slab class */
#define HEAP_MAX_ALIGN ((size_t)64 << 10)  /* largest alignment served from slabs */

/* A thread cache list: free blocks of one class, linked as obj free-list links (encoded
 * in secure mode) and tagged free (their key word), so a double free of a cached block is
 * caught as anywhere else. Written by its thread only; n is read by statistics. */
typedef struct heap_tc {
  obj_block *head;
  int32_t room; /* max - blocks on the list: a free that finds 0 takes the slow path */
  uint32_t max; /* the bound (0: every free takes the slow path); set (relaxed) when the
                   heap gets its bins, read by statistics */
} heap_tc;
_Static_assert(sizeof(heap_tc) == 1u << OBJ_BIN_OFF_SHIFT, "obj_slab.bin_off indexes heap_tc");

/* The end of every thread-cache list (never NULL): a read-only block whose free tag never
 * holds (its key ^ link is 2: the cookie is odd, and 0 before start-up), so the malloc fast
 * path's tag check also finds an empty list and the path has no NULL test (two
 * instructions); heap_malloc_far tells the two apart. */
extern OBJ_HIDDEN const obj_block heap_tc_end;
#define HEAP_TC_END ((obj_block *)&heap_tc_end)

static inline bool heap_tc_empty(const heap_tc *tc) {
  return tc->head == HEAP_TC_END;
}

static inline uint32_t heap_tc_count(const heap_tc *tc) {
  return __atomic_load_n(&tc->max, __ATOMIC_RELAXED) -
         (uint32_t)__atomic_load_n(&tc->room, __ATOMIC_RELAXED);
}

/* Two lists per class: mallocs pop from the first, frees (heap_free_inline, at h->tc +
 * obj_slab.bin_off) push onto the first too, or, in a profiled run (heap_space.bin_off_base
 * set), onto the second: a profiled thread's first list then holds only blocks charged to
 * the class's sampling countdown when they moved there (heap_tc_refill_counted), so every
 * malloc is counted while both inline paths stay as they are. A second list's bound is
 * half its class's (the two together hold what one list holds unprofiled); unused second
 * lists keep bound 0 and room 0. */
#define HEAP_NLISTS (2 * HEAP_NCLASSES)

/* The class of thread cache list i. */
static inline unsigned heap_list_cls(unsigned i) {
  return i < HEAP_NCLASSES ? i : i - HEAP_NCLASSES;
}

/* Large blocks a thread freed lately, for its next large allocations (huge.c: under its
 * heap's lock; n and bytes also read relaxed, by the purger and statistics). */
#define HUGE_STASH_N 8
typedef struct huge_stashed {
  uintptr_t ptr;
  size_t len, guard; /* usable bytes, and the guard page after them or 0 */
  uint64_t map;      /* the mapping it is a piece of (huge.c's huge_rec.map) */
  uint64_t expires;  /* ms */
  bool marked;       /* the guard page holds its guard marker (else it is a plain page) */
} huge_stashed;
typedef struct huge_stash {
  huge_stashed e[HUGE_STASH_N]; /* oldest first */
  uint32_t n;
  size_t bytes; /* len + guard of the n blocks */
} huge_stash;

typedef struct heap {
  heap_tc tc[HEAP_NLISTS]; /* the fast paths' only state */
  obj_bins *bs;            /* NULL until the thread's first slow path */
  pthread_mutex_t lock;    /* bs's slabs and outbox: owner slow paths, purger, trims */
  /* Statistics, counted where blocks move between the cache and the slabs (relaxed
   * atomics: read by other threads). Live bytes of the thread = out_bytes - cached bytes. */
  size_t takes, gives;   /* blocks taken from / given back to slabs (or sent to owners) */
  size_t out_bytes;      /* bytes taken minus bytes given back */
  size_t tc_grown;       /* bytes the lists' bounds grew past heap_tc_max (h->lock) */
  struct heap *next_all; /* registry of all heaps (never freed) */
  struct heap *next_orphan;
  bool tracking;        /* valgrind: every call takes obj's tracked paths */
  bool forked;          /* a fork child's copy of another thread's heap: never touched again */
  bool orphan;          /* its thread exited (h->lock): the purger may empty its cache */
  uint64_t orphaned_ms; /* obj_now_ms() at the exit */
  prof_thread prof;     /* prof hook: sampling countdown (MAPALLOC_PROF) */
  huge_stash stash;     /* freed large blocks (h->lock) */
  uint8_t fills[HEAP_NCLASSES]; /* refills from the slabs so far, while they ramp up */
  /* List i ran empty and was refilled since its last trim (heap_tc_grow: only a list that
   * cycles between empty and full grows). h->lock held, or the owner with no lock taken. */
  bool refilled[HEAP_NLISTS];
} heap;

/* A list that overflows with the thread's own blocks, and ran empty since its last trim,
 * doubles its bound (heap_tc_full: a program that allocates and frees in bursts longer than
 * the bound, glibc's bench-malloc-simple 400 at a time, sh6bench tens of thousands over
 * many classes), up to HEAP_TC_GROW_CLASS bytes and HEAP_TC_GROW_BLOCKS blocks, within the
 * thread's share of HEAP_TC_GROW_ALL (at most HEAP_TC_GROW_THREAD). A forced trim of the
 * thread's own heap, and the trim of an orphan, put the bounds back. */
#define HEAP_TC_GROW_CLASS  ((size_t)2 << 20)
#define HEAP_TC_GROW_BLOCKS 65536
#define HEAP_TC_GROW_THREAD ((size_t)4 << 20)
#define HEAP_TC_GROW_ALL    ((size_t)32 << 20)

/* Blocks cached for class c, on both its lists (relaxed reads). */
static inline uint32_t heap_tc_cached(const heap *h, unsigned c) {
  return heap_tc_count(&h->tc[c]) + heap_tc_count(&h->tc[c + HEAP_NCLASSES]);
}

/* ---- globals shared with the inline fast paths ---- */
extern const uint16_t heap_cls_lut[HEAP_LUT_MAX + 1]; /* class << OBJ_BIN_OFF_SHIFT, by size */
extern const uint32_t heap_cls_size[HEAP_NCLASSES];
extern heap heap_empty;
extern obj_space heap_space;

#ifdef MA_TLS_DYNAMIC
heap *heap_tls_get_dynamic(void);
static inline heap *heap_get(void) {
  return heap_tls_get_dynamic();
}
#else
extern __thread heap *heap_tls __attribute__((tls_model("initial-exec")));
static inline heap *heap_get(void) {
  return heap_tls;
}
#endif

/* ---- slow paths (heap.c, huge.c) ---- */
/* tc: the class's list in h->tc (its index is the class). */
void *heap_malloc_slow(heap *h, const heap_tc *tc);
/* Out of memory, or of address space under RLIMIT_AS (errno ENOMEM): gives back all the
 * heap keeps for reuse (the large-block cache, every thread's empty slabs and cached
 * blocks, as ma_heap_collect(true)) and returns true: the caller tries once more. */
bool heap_release_for_retry(void);
void heap_free_generic(void *p);
/* A validated block whose free found the calling thread's list full (or the thread without
 * a heap yet); it takes the thread's heap itself, so that the fast path keeps no register
 * for it. */
void heap_free_slow(obj_segment *seg, obj_slab *s, void *p);
void heap_free_double(const void *p);  /* aborts; not noreturn so the call is a jump */
void heap_free_invalid(const void *p); /* aborts; not noreturn so the call is a jump */
void *heap_malloc_large(size_t size, size_t align, bool zero);
/* memalign's semantics (api.c): glibc's errors and rounding of the alignment. */
void *heap_memalign(size_t align, size_t size);
size_t heap_collect_all(bool force);
void heap_global_init(void);
size_t heap_usable_size(const void *p);
#if OBJ_SECURE
void heap_free_sized_check(void *p, size_t size, size_t align); /* aborts on a mismatch */
#endif
void heap_sum_counters(size_t *allocated, size_t *allocs, size_t *frees, size_t *retained);
void heap_tc_blocks(size_t out[HEAP_NCLASSES]); /* cached blocks per class (statistics) */
uint32_t heap_tc_refill_counted(heap *h, unsigned cls, uint32_t want); /* prof hook */
/* One pass of the background purger over every heap (never waits on a busy heap); true
 * while anything is left that a later pass may return. Any thread. */
bool heap_purge_pass(void);

/* purger.c: the background purger (starts it when due; no lock may be held) */
void heap_purger_poke(void);
size_t heap_purger_passes(void);
bool heap_purger_running(void);
void heap_purger_atfork_prepare(void);
void heap_purger_atfork_parent(void);
void heap_purger_atfork_child(void);

/* huge.c: blocks mapped directly */
void *huge_alloc(size_t size, size_t align, bool zero); /* zero: calloc */
void *huge_alloc_growing(size_t size);                  /* placed where it can grow in place */
size_t huge_cache_purge(bool all); /* unmaps expired (all) cached mappings; bytes */
bool huge_free(void *p);           /* false: not a huge block */
size_t huge_usable(const void *p); /* 0: not a huge block */
void *huge_realloc(void *p, size_t size, size_t want, bool *moved_out); /* want >= size */
void huge_stats(size_t *count, size_t *bytes, size_t *allocs, size_t *frees, size_t *cached);
void huge_atfork_prepare(void);
void huge_atfork_parent(void);
void huge_atfork_child(void);
/* The table and the cache of large blocks (ma_heap_check): aborts on an inconsistency. */
void huge_check(void);
/* A thread's stash (h->lock taken inside; no other lock held): its blocks expired at now
 * (all with `all`) are unmapped; `wait`: else a busy heap is skipped. True when blocks are
 * left (or the heap was busy). */
bool huge_stash_trim(heap *h, bool all, bool wait);
void huge_stash_flush(heap *h); /* every block to the cache: the thread exits */
void huge_stash_check(heap *h); /* aborts (MA_VERIFY) on an inconsistency; h->lock held */
/* heap.c: the calling thread's heap, made if it has none (NULL: none can be, or valgrind's
 * tracking); the bytes all stashes hold (relaxed). */
heap *heap_thread_heap(void);
size_t heap_stash_bytes(void);

/* Run-time options: the library's (src/obj/obj_options.c), read once at its first use. */
#define heap_opt obj_opt

/* stats */
extern _Atomic size_t heap_stat_purges, heap_stat_heaps;
extern _Atomic size_t heap_live;
extern _Atomic bool heap_threads_seen;
/* Running threads (heaps) per usable core, rounded down, 1..max: how much longer than the
 * wall's clock each thread takes to come back for what it freed. (Down: a main thread that
 * waits for two workers on two cores does not make them take longer.) */
size_t heap_crowding(size_t max);

/* ---- size classes ---- */

/* Class of a size <= HEAP_MAX_SMALL: a table below 1 KiB, a bit scan above (no division).
 * Above 128 bytes there are 8 classes per power of two. */
static inline unsigned heap_size_class(size_t size) {
  if (heap_likely(size <= HEAP_LUT_MAX)) return heap_cls_lut[size] >> OBJ_BIN_OFF_SHIFT;
  size_t s = size - 1;
  unsigned k = 63u - (unsigned)__builtin_clzl(s); /* 2^k <= s < 2^(k+1), k >= 10 */
  return (k - 7) * 8 + (unsigned)(s >> (k - 3));
}

/* The segment of a small block, or NULL (NULL pointer, large block, a pool's object, a
 * foreign pointer, or no segment yet). Small-block segments are never larger than 4 MiB,
 * so the segment map entry of p's 4 MiB chunk names the chunk itself, tagged as the
 * heap's (OBJ_MAP_HEAP). */
static inline obj_segment *heap_segment_of(const void *p) {
  return obj_segment_of_tagged(p, OBJ_MAP_HEAP);
}

/* heap_segment_of for the slow paths, where p may be anything: also NULL when p lies past
 * the reservation of a segment still growing in its window (another mapping there, say a
 * large block, is not the segment's). The fast paths need no such test: a slab past the
 * reservation was never activated, so nothing passes its block check. */
static inline obj_segment *heap_segment_holding(const void *p) {
  obj_segment *seg = heap_segment_of(p);
  return seg && obj_segment_holds(seg, p) ? seg : NULL;
}

/* n, an address inside heap segment seg, is a carved block of one of its slabs. */
static inline bool heap_carved_in(obj_segment *seg, const obj_block *n) {
  const obj_slab *s = obj_slab_of(seg, n);
  return obj_block_q(s, (uintptr_t)n) < obj_slab_carved(s);
}

/* n is the list end or a carved block of a heap slab: exact (segment map, block index). */
static inline bool heap_link_valid(const obj_block *n) {
  if (n == HEAP_TC_END) return true;
  obj_segment *seg = heap_segment_of(n);
  return seg != NULL && heap_carved_in(seg, n);
}

/* n, the link of b (a validated block of a heap slab), is the list end or a carved block of
 * a heap slab: exact. A link into b's own 4 MiB chunk is in b's segment (heap segments are one
 * chunk), so only its slab and block index are checked: no map lookup for most links. */
static inline bool heap_link_valid_from(const obj_block *b, const obj_block *n) {
  if ((((uintptr_t)n ^ (uintptr_t)b) >> OBJ_SEG_SHIFT) != 0) return heap_link_valid(n);
  return heap_carved_in((obj_segment *)((uintptr_t)b & ~(OBJ_SEG_SIZE - 1)), n);
}

/* The link stored in a cached block, decoded but not checked. */
static inline obj_block *heap_tc_link(const obj_block *b) {
#if OBJ_SECURE
  return (obj_block *)((uintptr_t)b->next ^ (uintptr_t)b ^ obj_link_key);
#else
  return b->next;
#endif
}

/* Pops block b, the head of tc, whose link is n (checked by the caller). */
static inline void *heap_tc_pop(heap_tc *tc, obj_block *b, obj_block *n, unsigned cls) {
  tc->head = n;
  obj_count_add32(&tc->room, 1);
  obj_unpoison(b, heap_cls_size[cls]);
  (void)cls;
  b->key = 0;
  return b;
}

/* Takes one block's room on tc's list for a free: false (room unchanged) when the list is
 * full (room <= 0; always under valgrind and before the thread's first call). With GCC on
 * x86-64 the decrement is the test (a sub and a branch, the room put back when full),
 * where a load, a test and a store took three instructions more. */
static inline bool heap_tc_take_room(heap_tc *tc) {
#if OBJ_ADD_ASM
  __asm__ goto("subl $1, %0\n\tjl %l[full]" : "+m"(tc->room) : : "cc" : full);
  return true;
full:
  obj_count_add32(&tc->room, 1);
  return false;
#else
  if (tc->room <= 0) return false;
  obj_count_add32(&tc->room, -1);
  return true;
#endif
}

/* Links b, a validated block of slab s that is not free (checked by the caller), at the
 * head of tc, whose room the caller took (heap_tc_take_room). */
static inline void heap_tc_put(heap_tc *tc, const obj_slab *s, obj_block *b) {
  obj_poison(b, s->stride);
  obj_link_open(b);
  obj_link_set(b, tc->head);
  obj_link_close(b);
  tc->head = b;
}

/* Pushes b, a validated block of slab s that is not free, onto tc, which has room. */
static inline void heap_tc_push(heap_tc *tc, const obj_slab *s, obj_block *b) {
  heap_tc_put(tc, s, b);
  obj_count_add32(&tc->room, -1);
}

/* heap_malloc_off when the head's tag or link failed its check: the list's end (an empty
 * list: heap_malloc_slow), else aborts ("corrupted free list"). */
void *heap_malloc_far(const heap_tc *tc);

/* ---- fast paths ---- */

/* Pops a block of the class whose list is at byte offset `off` of h->tc (class <<
 * OBJ_BIN_OFF_SHIFT, as heap_cls_lut and obj_slab.bin_off store it) from the thread cache: no lock,
 * no atomic read-modify-write, no division, no shared line written. An empty list takes the slow
 * path through heap_malloc_far (refill from the slabs; the first call of a thread; valgrind). */
static inline void *heap_malloc_off(unsigned off) {
  heap *h = heap_get();
  heap_tc *tc = (heap_tc *)((char *)h->tc + off);
  unsigned cls = off >> OBJ_BIN_OFF_SHIFT;
  obj_block *b = tc->head;
  obj_link_open(b);
  /* The free tag must hold (an empty list's end fails it; so does a write after free over
   * the link or the tag); the secure build also checks the decoded link exactly. */
  if (heap_unlikely(!obj_block_is_free(b))) return heap_malloc_far(tc);
  obj_block *n = heap_tc_link(b);
#if OBJ_SECURE
  if (heap_unlikely(!heap_link_valid_from(b, n))) return heap_malloc_far(tc);
#endif
  return heap_tc_pop(tc, b, n, cls);
}

/* heap_malloc_off by class number. */
static inline void *heap_malloc_cls(unsigned cls) {
  return heap_malloc_off(cls << OBJ_BIN_OFF_SHIFT);
}

static inline void *heap_malloc_inline(size_t size) {
  if (heap_likely(size <= HEAP_LUT_MAX)) return heap_malloc_off(heap_cls_lut[size]);
  if (heap_likely(size <= HEAP_MAX_SMALL)) return heap_malloc_cls(heap_size_class(size));
  return heap_malloc_large(size, 0, false);
}

/* Frees p: validated in O(1) (segment map, the heap's space, exact block start by modular
 * inverse, the free tag), then pushed onto this thread's cache for its class, whichever
 * thread allocated it. Everything else (NULL, a large block, a foreign pointer, a full
 * cache, a thread's first call, valgrind) goes to a slow path in tail position, so the
 * common path saves no registers. */
static inline void heap_free_inline(void *p) {
  obj_segment *seg = heap_segment_of(p);
  if (heap_unlikely(seg == NULL)) {
    heap_free_generic(p);
    return;
  }
  obj_slab *s = obj_slab_of(seg, p);
  if (heap_unlikely(obj_block_q(s, (uintptr_t)p) >= obj_slab_carved(s))) {
    heap_free_generic(p);
    return;
  }
  /* The cache's room first: under valgrind every free takes the slow path (room 0) before
   * the tag of a block the program may never have written is read (memcheck would call the
   * compare a use of uninitialised memory); the slow path checks the tag itself. */
  heap_tc *tc = (heap_tc *)((char *)heap_get()->tc + s->bin_off);
  if (heap_unlikely(!heap_tc_take_room(tc))) {
    heap_free_slow(seg, s, p);
    return;
  }
  obj_block *b = p;
  obj_link_open(b); /* ASan: a freed block is poisoned; we read its tag to say why */
  if (heap_unlikely(obj_block_is_free(b))) {
    heap_free_double(p); /* (aborts: the room taken is never given back) */
    return;
  }
  heap_tc_put(tc, s, b);
}

#endif /* MAPALLOC_HEAP_INTERNAL_H */
