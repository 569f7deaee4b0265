/* Internal structures of the heap and its inline fast paths (malloc, free).
 *
 * Small blocks (<= HEAP_MAX_SMALL = 128 KiB) are objects of the object layer (src/obj/):
 * one obj_space for the heap, one obj_bins per thread with one bin per size class. The heap
 * adds the size classes, the thread life cycle (TLS, pthread key, orphaned heaps), the
 * purge delay, statistics and misuse messages; slabs, free lists, remote frees, pointer ->
 * slab lookup and thread-exit hand-over are obj's (one mechanism for pools and heap).
 *
 * A thread's `heap` lives in metadata memory and is never freed: a thread that exits hands
 * its obj_bins back (obj_bins_abandon) and its heap struct to the orphan list, where the
 * next new thread picks it up with its counters. `heap->bins` points at the obj bins, or at
 * heap_empty_bins (every slab empty) so that the first malloc of a thread, and every malloc
 * under valgrind (obj_tracking), takes the slow path.
 *
 * Large blocks (> 128 KiB, or over-aligned) are mapped directly (huge.c), recorded in a
 * side table; freed ones are cached as page ranges for the purge delay and reused, split,
 * merged and grown into in place; mremap moves what cannot grow there.
 */
#ifndef MAPALLOC_HEAP_INTERNAL_H
#define MAPALLOC_HEAP_INTERNAL_H

#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mapalloc/heap.h"
#include "obj/obj.h"

#define heap_likely(x)   __builtin_expect(!!(x), 1)
#define heap_unlikely(x) __builtin_expect(!!(x), 0)

#define HEAP_NCLASSES  88
#define HEAP_LUT_MAX   1024                /* sizes served by the lookup table */
#define HEAP_MAX_SMALL ((size_t)128 << 10) /* largest slab class */
#define HEAP_MAX_ALIGN ((size_t)64 << 10)  /* largest alignment served from slabs */

typedef struct heap {
  obj_bin *bins;                /* obj_bins->bins, or heap_empty_bins: the fast path's only load */
  obj_bins *bs;                 /* NULL until the thread's first slow path */
  size_t frees;                 /* blocks freed by this thread */
  size_t allocs[HEAP_NCLASSES]; /* blocks handed out, per class */
  size_t freed_bytes;           /* (apart from `frees`: two scalar adds beat a vectorised pair) */
  struct heap *next_all;        /* registry of all heaps (never freed) */
  struct heap *next_orphan;
  bool tracking; /* valgrind: every call takes obj's tracked paths */
} heap;

/* ---- globals shared with the inline fast paths ---- */
extern const uint8_t heap_cls_lut[HEAP_LUT_MAX / 16 + 1];
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
void *heap_malloc_slow(heap *h, unsigned cls);
void heap_free_generic(void *p);
void heap_free_other(obj_segment *seg, obj_slab *s, void *p); /* validated, not ours */
void heap_free_invalid(const void *p); /* aborts; not noreturn so the call is a jump */
__attribute__((noreturn)) void heap_misuse(const char *what, const void *p);
void *heap_malloc_large(size_t size, size_t align, bool zero);
uint64_t heap_now_ms(void);
size_t heap_collect_all(bool force);
void heap_global_init(void);
size_t heap_usable_size(const void *p);
#if OBJ_SECURE
void heap_free_sized_check(void *p, size_t size, size_t align); /* aborts on a mismatch */
#endif
void heap_sum_counters(size_t *allocated, size_t *allocs, size_t *frees, size_t *retained);

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

/* options.c */
typedef struct heap_options {
  long stats, verbose, purge_delay_ms, huge_pages, secure, shuffle;
} heap_options;
extern heap_options heap_opt;
void heap_options_read(void);
void heap_write_str(int fd, const char *s);
size_t heap_fmt_u64(char *buf, uint64_t v);
size_t heap_fmt_hex(char *buf, uint64_t v);

/* stats */
extern _Atomic size_t heap_stat_purges, heap_stat_heaps;

/* ---- size classes ---- */

/* Class of a size <= HEAP_MAX_SMALL: a table below 1 KiB, a bit scan above (no division).
 * Above 128 bytes there are 8 classes per power of two. */
static inline unsigned heap_size_class(size_t size) {
  if (heap_likely(size <= HEAP_LUT_MAX)) return heap_cls_lut[(size + 15) >> 4];
  size_t s = size - 1;
  unsigned k = 63u - (unsigned)__builtin_clzl(s); /* 2^k <= s < 2^(k+1), k >= 10 */
  return (k - 7) * 8 + (unsigned)(s >> (k - 3));
}

/* The segment of a small block, or NULL (NULL pointer, large block, foreign pointer, or no
 * segment yet). Small-block segments are never larger than 4 MiB, so the segment map entry
 * of p's 4 MiB chunk names the chunk itself. */
static inline obj_segment *heap_segment_of(const void *p) {
  const uint32_t *map = obj_segmap;
  uintptr_t c = (uintptr_t)p >> OBJ_SEG_SHIFT;
  if (heap_unlikely(map == NULL) ||
      heap_unlikely(map[c & ((1u << OBJ_MAP_BITS) - 1)] != (uint32_t)c))
    return NULL;
  return (obj_segment *)(c << OBJ_SEG_SHIFT);
}

#if !OBJ_SECURE
/* heap_malloc_cls when the head block's link leaves its chunk: checked exactly (aborts on a
 * use-after-free write over the link), then handed out. */
void *heap_malloc_far(heap *h, unsigned cls);
#endif

/* ---- fast paths ---- */

/* Pops a block of class `cls` from the thread's current slab (obj_bin_alloc): no lock, no
 * atomic, no division. The emptiness test is repeated here so that the slow path is ours
 * (first use of a thread, valgrind, purge delay), not obj's. */
static inline void *heap_malloc_cls(unsigned cls) {
  heap *h = heap_get();
  obj_bin *bin = &h->bins[cls];
  if (heap_unlikely(bin->cur->free == NULL)) return heap_malloc_slow(h, cls);
  void *p = obj_bin_take(bin);
#if !OBJ_SECURE
  if (heap_unlikely(p == NULL)) return heap_malloc_far(h, cls);
#endif
  h->allocs[cls]++;
  return p;
}

static inline void *heap_malloc_inline(size_t size) {
  if (heap_likely(size <= HEAP_LUT_MAX)) return heap_malloc_cls(heap_cls_lut[(size + 15) >> 4]);
  if (heap_likely(size <= HEAP_MAX_SMALL)) return heap_malloc_cls(heap_size_class(size));
  return heap_malloc_large(size, 0, false);
}

/* Frees p: validated in O(1) (segment map, exact block start by modular inverse), then
 * obj_free_local when this thread owns the slab. Everything else (another thread's block,
 * valgrind, a large block, NULL, a foreign pointer) goes to heap_free_generic, in tail
 * position so the common path saves no registers. */
static inline void heap_free_inline(void *p) {
  const uint32_t *map = obj_segmap;
  uintptr_t c = (uintptr_t)p >> OBJ_SEG_SHIFT;
  if (heap_unlikely(map == NULL) ||
      heap_unlikely(map[c & ((1u << OBJ_MAP_BITS) - 1)] != (uint32_t)c)) {
    heap_free_generic(p);
    return;
  }
  /* Chunk 0 is never a segment's (obj_init marks map[0] so): no code, but the static
   * analyser learns that seg is not NULL. */
  if (c == 0) __builtin_unreachable();
  obj_segment *seg = (obj_segment *)(c << OBJ_SEG_SHIFT);
  obj_slab *s = obj_slab_of(seg, p);
  if (heap_unlikely(obj_block_q(s, (uintptr_t)p) >= obj_slab_carved(s))) {
    heap_free_invalid(p);
    return;
  }
  if (heap_unlikely(!obj_is_local(s))) {
    heap_free_other(seg, s, p);
    return;
  }
  heap *h = heap_get();
  h->frees++;
  h->freed_bytes += s->stride;
  obj_free_local(s, p);
}

#endif /* MAPALLOC_HEAP_INTERNAL_H */
