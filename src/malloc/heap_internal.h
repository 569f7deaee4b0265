/* Internal structures of the heap and its inline fast paths (malloc, free).
 *
 * Layout. Small blocks (<= HEAP_MAX_SMALL = 128 KiB) live in slabs: runs of 64 KiB pages
 * inside 4 MiB segments aligned to 4 MiB. Page 0 of a segment holds its header (owner heap,
 * page masks, one slab descriptor per page and a page -> slab table), so a block's slab is
 * found from its address alone: segment = p & ~(4 MiB - 1), page = (p - segment) >> 16.
 * A process-wide bitmap (one bit per 4 MiB of address space) says which segments are ours,
 * so a foreign pointer is recognised without touching its memory.
 *
 * Ownership. A segment belongs to one thread heap; only the owner allocates from its slabs
 * and pushes onto their local free lists (no atomics). A free from another thread pushes
 * the block onto the owner heap's `remote` stack (one CAS); the owner drains it in its
 * slow path. A thread that exits leaves its heap, segments included, on an orphan list; the
 * next new thread adopts it whole, so nothing leaks and frees still find their owner.
 *
 * Large blocks (> 128 KiB, or over-aligned) are mapped directly (huge.c), recorded in a
 * side table and resized with mremap.
 *
 * TODO(obj): the slab/free-list/remote-free mechanism here is meant to fold onto
 * src/obj/ (issue 3) once obj.h offers per-thread bins for many size classes.
 */
#ifndef MAPALLOC_HEAP_INTERNAL_H
#define MAPALLOC_HEAP_INTERNAL_H

#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mapalloc/heap.h"

#define heap_likely(x)   __builtin_expect(!!(x), 1)
#define heap_unlikely(x) __builtin_expect(!!(x), 0)

#define HEAP_SEG_SHIFT   22
#define HEAP_SEG_SIZE    ((size_t)1 << HEAP_SEG_SHIFT)
#define HEAP_PAGE_SHIFT  16
#define HEAP_PAGE_SIZE   ((size_t)1 << HEAP_PAGE_SHIFT)
#define HEAP_PAGES       (HEAP_SEG_SIZE / HEAP_PAGE_SIZE) /* 64: one bit each in a uint64_t */
#define HEAP_NCLASSES    88
#define HEAP_LUT_MAX     1024                /* sizes served by the lookup table */
#define HEAP_MAX_SMALL   ((size_t)128 << 10) /* largest slab class */
#define HEAP_MAGIC_SHIFT 40                  /* exact (off * magic) >> 40 == off / size */
#define HEAP_SEGMAP_BITS ((uintptr_t)1 << (47 - HEAP_SEG_SHIFT))
#define HEAP_SEG_MAGIC   0x6d61736567686561ull /* "maseghea" */

/* The first two words of a free block. `key` marks it free (double-free detection); malloc
 * clears it. */
typedef struct heap_block {
  struct heap_block *next;
  uintptr_t key;
} heap_block;

enum {
  HEAP_SLAB_FULL = 1u,    /* exhausted and on no list; the next local free relists it */
  HEAP_SLAB_INVALID = 2u, /* not a slab: a free page, the header page, or the empty slab */
};

/* One slab: `capacity` blocks of `size` bytes from `start`; blocks below `bump` have been
 * handed out at least once, the rest are untouched memory. Hot fields first. */
typedef struct heap_slab {
  heap_block *free; /* local free list (owner only) */
  uint32_t used;    /* blocks handed out and not yet freed back here */
  uint32_t flags;   /* HEAP_SLAB_* */
  uintptr_t start;
  uint64_t magic; /* ceil(2^40 / size): block index without division */
  uint32_t size;
  uint32_t capacity;
  char *bump;                    /* next never-used block */
  char *end;                     /* start + capacity * size */
  struct heap_slab *next, *prev; /* the class's partial list */
  uint8_t cls, pages, first_page, pad;
} heap_slab;

struct heap;

typedef struct heap_seg {
  struct heap *owner;
  uint64_t magic;
  uint64_t used;     /* pages holding slabs (bit 0: the header page) */
  uint64_t dirty;    /* free pages whose memory has not been purged */
  uint64_t purge_at; /* ms (monotonic) when the dirty pages should go; 0 = none */
  struct heap_seg *next, *prev;
  heap_slab *page_slab[HEAP_PAGES]; /* page -> its slab (heap_slab_invalid if none) */
  heap_slab slabs[HEAP_PAGES];      /* a slab's descriptor sits at its first page */
} heap_seg;

typedef struct heap_bin {
  heap_slab *cur; /* the slab malloc pops from (never NULL; heap_slab_empty if none) */
  size_t allocs;  /* per-thread counters, summed on read */
  size_t frees;
  heap_slab *partial; /* other slabs of this class with free blocks */
} heap_bin;

typedef struct heap {
  heap_bin bins[HEAP_NCLASSES];
  _Alignas(64) heap_block *_Atomic remote; /* blocks freed by other threads */
  heap_seg *segs;                          /* this heap's segments */
  uint64_t purge_next;                     /* earliest purge deadline (ms); 0 = none */
  struct heap *next_all;                   /* registry of all heaps (never freed) */
  struct heap *next_orphan;
  bool orphan;
} heap;

/* ---- globals shared with the inline fast paths ---- */
extern const uint8_t heap_cls_lut[HEAP_LUT_MAX / 16 + 1];
extern const uint32_t heap_cls_size[HEAP_NCLASSES];
extern uint64_t heap_segmap[HEAP_SEGMAP_BITS / 64];
extern uintptr_t heap_free_key;
extern heap heap_empty;
extern heap_slab heap_slab_invalid;

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
void heap_free_generic(heap *h, void *p);
void heap_slab_emptied(heap *h, heap_slab *s);
void heap_double_free_check(heap *h, heap_slab *s, heap_block *b);
__attribute__((noreturn)) void heap_misuse(const char *what, const void *p);
void *heap_malloc_large(size_t size, size_t align);
size_t heap_collect_all(bool force);
void heap_global_init(void);

/* huge.c: blocks mapped directly */
void *huge_alloc(size_t size, size_t align);
bool huge_free(void *p);           /* false: not a huge block */
size_t huge_usable(const void *p); /* 0: not a huge block */
void *huge_realloc(void *p, size_t size, bool *moved_out);
void huge_stats(size_t *count, size_t *bytes, size_t *allocs, size_t *frees);
void huge_atfork_prepare(void);
void huge_atfork_parent(void);
void huge_atfork_child(void);

/* options.c */
typedef struct heap_options {
  long stats, verbose, purge_delay_ms, huge_pages;
} heap_options;
extern heap_options heap_opt;
void heap_options_read(void);
void heap_write_str(int fd, const char *s);
size_t heap_fmt_u64(char *buf, uint64_t v);
size_t heap_fmt_hex(char *buf, uint64_t v);

/* stats */
extern _Atomic size_t heap_stat_active, heap_stat_committed, heap_stat_reserved;
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

static inline heap_seg *heap_seg_of(const void *p) {
  return (heap_seg *)((uintptr_t)p & ~(uintptr_t)(HEAP_SEG_SIZE - 1));
}

/* Is p inside one of our small-block segments? Foreign pointers (and NULL) say no. */
static inline bool heap_segmap_test(const void *p) {
  uintptr_t i = (uintptr_t)p >> HEAP_SEG_SHIFT;
  if (heap_unlikely(i >= HEAP_SEGMAP_BITS)) return false;
  return (heap_segmap[i >> 6] >> (i & 63)) & 1;
}

/* ---- fast paths ---- */

/* Pops a block of class `cls` from the thread's current slab: no lock, no atomic, no
 * division. Written to stay in registers; everything rare is in heap_malloc_slow. */
static inline void *heap_malloc_cls(unsigned cls) {
  heap *h = heap_get();
  heap_bin *b = &h->bins[cls];
  heap_slab *s = b->cur;
  heap_block *blk = s->free;
  if (heap_unlikely(blk == NULL)) return heap_malloc_slow(h, cls);
  s->free = blk->next;
  s->used++;
  b->allocs++;
  blk->key = 0;
  return blk;
}

static inline void *heap_malloc_inline(size_t size) {
  if (heap_likely(size <= HEAP_MAX_SMALL)) return heap_malloc_cls(heap_size_class(size));
  return heap_malloc_large(size, 0);
}

/* Frees p: the owner pushes onto the slab's local list; everything else (another thread's
 * block, a large block, a foreign pointer, a full slab) goes to heap_free_generic. */
static inline void heap_free_inline(void *p) {
  if (heap_unlikely(!heap_segmap_test(p))) {
    heap_free_generic(heap_get(), p);
    return;
  }
  heap_seg *seg = heap_seg_of(p);
  heap_slab *s = seg->page_slab[((uintptr_t)p >> HEAP_PAGE_SHIFT) & (HEAP_PAGES - 1)];
  heap *h = heap_get();
  if (heap_unlikely(seg->owner != h || s->flags != 0)) {
    heap_free_generic(h, p);
    return;
  }
  uintptr_t off = (uintptr_t)p - s->start;
  if (heap_unlikely(((off * s->magic) >> HEAP_MAGIC_SHIFT) * s->size != off ||
                    (char *)p >= s->bump))
    heap_misuse("invalid free", p);
  heap_block *blk = (heap_block *)p;
  if (heap_unlikely(blk->key == heap_free_key)) heap_double_free_check(h, s, blk);
  blk->next = s->free;
  blk->key = heap_free_key;
  s->free = blk;
  h->bins[s->cls].frees++;
  if (heap_unlikely(--s->used == 0)) heap_slab_emptied(h, s);
}

/* Usable size of a live block (aborts on a pointer that is not ours). */
size_t heap_usable_size(const void *p);
void heap_sum_counters(size_t *allocated, size_t *allocs, size_t *frees);

#endif /* MAPALLOC_HEAP_INTERNAL_H */
