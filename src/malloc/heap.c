/* Thread heaps: segments, slabs, the malloc/free slow paths, remote frees, purging,
 * thread exit and fork. The fast paths are inline in heap_internal.h. */
#include "malloc/heap_internal.h"

#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "os/os.h"

/* ------------------------------------------------------------------------------------
 * Size classes: 16..128 in steps of 16, then 8 classes per power of two up to 128 KiB.
 * (tests/test_heap.c checks both tables against the formula.)
 * ---------------------------------------------------------------------------------- */
const uint8_t heap_cls_lut[HEAP_LUT_MAX / 16 + 1] = {
    0,  0,  1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14, 15, 16, 16, 17, 17, 18,
    18, 19, 19, 20, 20, 21, 21, 22, 22, 23, 23, 24, 24, 24, 24, 25, 25, 25, 25, 26, 26, 26,
    26, 27, 27, 27, 27, 28, 28, 28, 28, 29, 29, 29, 29, 30, 30, 30, 30, 31, 31, 31, 31};

const uint32_t heap_cls_size[HEAP_NCLASSES] = {
    16,    32,    48,    64,    80,    96,    112,    128,    144,    160,   176,   192,   208,
    224,   240,   256,   288,   320,   352,   384,    416,    448,    480,   512,   576,   640,
    704,   768,   832,   896,   960,   1024,  1152,   1280,   1408,   1536,  1664,  1792,  1920,
    2048,  2304,  2560,  2816,  3072,  3328,  3584,   3840,   4096,   4608,  5120,  5632,  6144,
    6656,  7168,  7680,  8192,  9216,  10240, 11264,  12288,  13312,  14336, 15360, 16384, 18432,
    20480, 22528, 24576, 26624, 28672, 30720, 32768,  36864,  40960,  45056, 49152, 53248, 57344,
    61440, 65536, 73728, 81920, 90112, 98304, 106496, 114688, 122880, 131072};

/* ------------------------------------------------------------------------------------
 * Globals
 * ---------------------------------------------------------------------------------- */
uint64_t heap_segmap[HEAP_SEGMAP_BITS / 64]; /* 4 MiB of zero pages until touched */
uintptr_t heap_free_key = 0x5bd1e995a3c2f1d7ull;

/* The slab every empty bin points at: free == NULL sends malloc to the slow path, and its
 * INVALID flag sends a free to the generic path. */
static heap_slab heap_slab_empty = {.flags = HEAP_SLAB_INVALID};
heap_slab heap_slab_invalid = {.flags = HEAP_SLAB_INVALID};

/* A thread without a heap points here: every malloc takes the slow path and sets one up. */
heap heap_empty = {.bins = {[0 ... HEAP_NCLASSES - 1] = {.cur = &heap_slab_empty}}};

#ifndef MA_TLS_DYNAMIC
__thread heap *heap_tls __attribute__((tls_model("initial-exec"))) = &heap_empty;
#endif

_Atomic size_t heap_stat_active, heap_stat_committed, heap_stat_reserved;
_Atomic size_t heap_stat_purges, heap_stat_heaps;

/* heap_lock guards the heap registry, the orphan list and the metadata bump allocator. */
static pthread_mutex_t heap_lock = PTHREAD_MUTEX_INITIALIZER;
static heap *heap_all;     /* every heap ever made (heaps are never freed) */
static heap *heap_orphans; /* heaps of exited threads, waiting for a new thread */
static char *meta_cur, *meta_end;

static pthread_key_t heap_key;
static _Atomic int heap_init_state; /* 0 none, 1 running, 2 done */

#define HEAP_HDR_BYTES ((sizeof(heap_seg) + 4095) & ~(size_t)4095)

static void heap_set_tls(heap *h);

/* ------------------------------------------------------------------------------------
 * Misuse and time
 * ---------------------------------------------------------------------------------- */
void heap_misuse(const char *what, const void *p) {
  char buf[96];
  size_t n = 0;
  const char *pre = "mapalloc: ";
  while (*pre) buf[n++] = *pre++;
  while (*what && n < 60) buf[n++] = *what++;
  const char *of = " of 0x";
  while (*of) buf[n++] = *of++;
  n += heap_fmt_hex(buf + n, (uintptr_t)p);
  buf[n++] = '\n';
  ssize_t r = write(2, buf, n);
  (void)r;
  abort();
}

static uint64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* ------------------------------------------------------------------------------------
 * Initialisation. Runs on the first malloc, which may come from inside the dynamic loader:
 * no allocation, no stdio, no dlsym here.
 * ---------------------------------------------------------------------------------- */
static void heap_thread_done(void *arg);
static void heap_atfork_prepare(void);
static void heap_atfork_parent(void);
static void heap_atfork_child(void);

void heap_global_init(void) {
  int st = atomic_load_explicit(&heap_init_state, memory_order_acquire);
  if (heap_likely(st == 2)) return;
  int zero = 0;
  if (atomic_compare_exchange_strong(&heap_init_state, &zero, 1)) {
    heap_options_read();
    /* A per-process key makes a stale "free" mark in user data unlikely to match. */
    uintptr_t k = (uintptr_t)&zero ^ ((uintptr_t)now_ms() << 20) ^ (uintptr_t)getpid();
    heap_free_key = (k * 0x9E3779B97F4A7C15ull) | 1;
    pthread_key_create(&heap_key, heap_thread_done);
    atomic_store_explicit(&heap_init_state, 2, memory_order_release);
    return;
  }
  while (atomic_load_explicit(&heap_init_state, memory_order_acquire) != 2) sched_yield();
}

/* Programs such as coreutils close stderr before exiting: the exit statistics go to a
 * duplicate taken at start-up. */
static int heap_stats_fd = 2;

__attribute__((constructor)) static void heap_constructor(void) {
  heap_global_init();
  heap_options_read(); /* again: environ may have been unset at the first malloc */
  pthread_atfork(heap_atfork_prepare, heap_atfork_parent, heap_atfork_child);
  if (heap_opt.stats) {
    int saved = errno;
    int fd = fcntl(2, F_DUPFD_CLOEXEC, 200);
    if (fd >= 0) heap_stats_fd = fd;
    errno = saved;
  }
}

__attribute__((destructor)) static void heap_destructor(void) {
  if (heap_opt.stats) ma_heap_stats_print(heap_stats_fd);
}

/* Metadata (heap structs) from a bump allocator over OS pages; heap_lock held. */
static void *meta_alloc(size_t size) {
  size = (size + 63) & ~(size_t)63;
  if ((size_t)(meta_end - meta_cur) < size) {
    size_t len = 256 << 10;
    char *m = os_alloc(len, 0, false);
    if (!m) return NULL;
    os_name(m, len, "mapalloc-meta");
    meta_cur = m;
    meta_end = m + len;
    atomic_fetch_add(&heap_stat_reserved, len);
  }
  void *r = meta_cur;
  meta_cur += size;
  return r;
}

static void heap_init_struct(heap *h) {
  memset(h, 0, sizeof *h);
  for (unsigned c = 0; c < HEAP_NCLASSES; c++) h->bins[c].cur = &heap_slab_empty;
}

/* Gives the calling thread a heap: an orphan if there is one, else a new one. */
static heap *heap_thread_init(void) {
  heap_global_init();
  pthread_mutex_lock(&heap_lock);
  heap *h = heap_orphans;
  if (h) {
    heap_orphans = h->next_orphan;
  } else {
    h = meta_alloc(sizeof(heap));
    if (h) {
      heap_init_struct(h);
      h->next_all = heap_all;
      heap_all = h;
      atomic_fetch_add(&heap_stat_heaps, 1);
    }
  }
  pthread_mutex_unlock(&heap_lock);
  if (!h) return NULL;
  h->orphan = false;
  h->next_orphan = NULL;
  heap_set_tls(h);
  /* After heap_tls is set: pthread_setspecific may itself call calloc. */
  pthread_setspecific(heap_key, h);
  return h;
}

#ifdef MA_TLS_DYNAMIC
heap *heap_tls_get_dynamic(void) {
  if (heap_unlikely(atomic_load_explicit(&heap_init_state, memory_order_acquire) != 2))
    return &heap_empty;
  heap *h = pthread_getspecific(heap_key);
  return h ? h : &heap_empty;
}
static void heap_set_tls(heap *h) {
  (void)h;
}
#else
static void heap_set_tls(heap *h) {
  heap_tls = h;
}
#endif

/* ------------------------------------------------------------------------------------
 * Segments
 * ---------------------------------------------------------------------------------- */
static void segmap_set(heap_seg *seg, bool on) {
  uintptr_t i = (uintptr_t)seg >> HEAP_SEG_SHIFT;
  uint64_t bit = (uint64_t)1 << (i & 63);
  if (on)
    __atomic_fetch_or(&heap_segmap[i >> 6], bit, __ATOMIC_RELEASE);
  else
    __atomic_fetch_and(&heap_segmap[i >> 6], ~bit, __ATOMIC_RELEASE);
}

static heap_seg *seg_new(heap *h) {
  int saved = errno;
  heap_seg *seg = os_alloc(HEAP_SEG_SIZE, HEAP_SEG_SIZE, false);
  if (!seg) return NULL;
  errno = saved;
  if ((uintptr_t)seg >> HEAP_SEG_SHIFT >= HEAP_SEGMAP_BITS) { /* beyond 47 bits: not ours */
    os_release(seg, HEAP_SEG_SIZE);
    errno = ENOMEM;
    return NULL;
  }
  os_name(seg, HEAP_SEG_SIZE, "mapalloc");
  if (heap_opt.huge_pages > 0) os_advise(seg, HEAP_SEG_SIZE, MA_ADV_HUGEPAGE);
  if (heap_opt.huge_pages == 0) os_advise(seg, HEAP_SEG_SIZE, MA_ADV_NOHUGEPAGE);
  errno = saved;
  /* Fresh pages are zero: only the non-zero fields need writing. */
  seg->owner = h;
  seg->magic = HEAP_SEG_MAGIC;
  seg->used = 1; /* the header page */
  for (unsigned i = 0; i < HEAP_PAGES; i++) seg->page_slab[i] = &heap_slab_invalid;
  seg->next = h->segs;
  if (h->segs) h->segs->prev = seg;
  h->segs = seg;
  segmap_set(seg, true);
  atomic_fetch_add(&heap_stat_reserved, HEAP_SEG_SIZE);
  atomic_fetch_add(&heap_stat_committed, HEAP_HDR_BYTES);
  return seg;
}

static size_t popcount64(uint64_t x) {
  return (size_t)__builtin_popcountll(x);
}

static void seg_release(heap *h, heap_seg *seg) {
  if (seg->prev)
    seg->prev->next = seg->next;
  else
    h->segs = seg->next;
  if (seg->next) seg->next->prev = seg->prev;
  atomic_fetch_sub(&heap_stat_committed, HEAP_HDR_BYTES + popcount64(seg->dirty) * HEAP_PAGE_SIZE);
  atomic_fetch_sub(&heap_stat_reserved, HEAP_SEG_SIZE);
  segmap_set(seg, false);
  int saved = errno;
  os_release(seg, HEAP_SEG_SIZE);
  errno = saved;
}

/* Finds `n` contiguous free pages in `seg` (first fit); returns the first index or -1. */
static int seg_find_run(const heap_seg *seg, unsigned n) {
  uint64_t free_mask = ~seg->used;
  while (free_mask) {
    unsigned i = (unsigned)__builtin_ctzll(free_mask);
    if (i + n > HEAP_PAGES) return -1;
    uint64_t want = (n == 64 ? ~0ull : ((1ull << n) - 1)) << i;
    if ((free_mask & want) == want) return (int)i;
    /* skip past the used page that broke the run */
    uint64_t used_above = seg->used & ~((1ull << i) - 1);
    if (!used_above) return -1;
    unsigned j = (unsigned)__builtin_ctzll(used_above);
    free_mask &= ~((j >= 63 ? ~0ull : ((1ull << (j + 1)) - 1)));
  }
  return -1;
}

/* Purges the dirty pages of `seg`: one madvise per run. */
static size_t seg_purge(heap_seg *seg) {
  uint64_t d = seg->dirty;
  size_t bytes = 0;
  int saved = errno;
  while (d) {
    unsigned i = (unsigned)__builtin_ctzll(d);
    uint64_t rest = ~(d >> i);
    unsigned n = rest ? (unsigned)__builtin_ctzll(rest) : HEAP_PAGES - i;
    os_reset((char *)seg + (size_t)i * HEAP_PAGE_SIZE, (size_t)n * HEAP_PAGE_SIZE);
    atomic_fetch_add(&heap_stat_purges, 1);
    bytes += (size_t)n * HEAP_PAGE_SIZE;
    uint64_t run = (n == 64 ? ~0ull : ((1ull << n) - 1)) << i;
    d &= ~run;
  }
  errno = saved;
  seg->dirty = 0;
  seg->purge_at = 0;
  atomic_fetch_sub(&heap_stat_committed, bytes);
  return bytes;
}

/* Purges the segments whose delay has expired (all of them with force). */
static size_t heap_purge(heap *h, bool force) {
  uint64_t now = now_ms(), next = 0;
  size_t bytes = 0;
  for (heap_seg *seg = h->segs; seg; seg = seg->next) {
    if (!seg->dirty) continue;
    if (force || seg->purge_at <= now)
      bytes += seg_purge(seg);
    else if (next == 0 || seg->purge_at < next)
      next = seg->purge_at;
  }
  h->purge_next = next;
  return bytes;
}

/* Releases empty segments, keeping `keep` of them for reuse. */
static size_t heap_release_empty_segs(heap *h, unsigned keep) {
  size_t bytes = 0;
  heap_seg *seg = h->segs;
  while (seg) {
    heap_seg *next = seg->next;
    if (seg->used == 1) {
      if (keep)
        keep--;
      else {
        bytes += HEAP_SEG_SIZE;
        seg_release(h, seg);
      }
    }
    seg = next;
  }
  return bytes;
}

/* ------------------------------------------------------------------------------------
 * Slabs
 * ---------------------------------------------------------------------------------- */
static unsigned slab_pages_for(uint32_t size) {
  if (size <= 8192) return 1;
  size_t want = ((size_t)size * 4 + HEAP_PAGE_SIZE - 1) / HEAP_PAGE_SIZE;
  unsigned n = 1;
  while (n < want) n <<= 1;
  return n;
}

static void partial_push(heap_bin *b, heap_slab *s) {
  s->prev = NULL;
  s->next = b->partial;
  if (b->partial) b->partial->prev = s;
  b->partial = s;
}

static void partial_remove(heap_bin *b, heap_slab *s) {
  if (s->prev)
    s->prev->next = s->next;
  else
    b->partial = s->next;
  if (s->next) s->next->prev = s->prev;
  s->next = s->prev = NULL;
}

static heap_slab *slab_new(heap *h, unsigned cls) {
  uint32_t size = heap_cls_size[cls];
  unsigned pages = slab_pages_for(size);
  heap_seg *seg;
  int first = -1;
  for (seg = h->segs; seg; seg = seg->next) {
    first = seg_find_run(seg, pages);
    if (first >= 0) break;
  }
  if (!seg) {
    seg = seg_new(h);
    if (!seg) return NULL;
    first = seg_find_run(seg, pages);
  }
  uint64_t bits = (pages == 64 ? ~0ull : ((1ull << pages) - 1)) << first;
  size_t span = (size_t)pages * HEAP_PAGE_SIZE;
  /* Reused dirty pages are already counted as committed. */
  atomic_fetch_add(&heap_stat_committed, popcount64(bits & ~seg->dirty) * HEAP_PAGE_SIZE);
  atomic_fetch_add(&heap_stat_active, span);
  seg->used |= bits;
  seg->dirty &= ~bits;
  heap_slab *s = &seg->slabs[first];
  s->free = NULL;
  s->used = 0;
  s->flags = 0;
  s->start = (uintptr_t)seg + (size_t)first * HEAP_PAGE_SIZE;
  s->size = size;
  s->magic = (((uint64_t)1 << HEAP_MAGIC_SHIFT) + size - 1) / size;
  s->capacity = (uint32_t)(span / size);
  s->bump = (char *)s->start;
  s->end = s->bump + (size_t)s->capacity * size;
  s->next = s->prev = NULL;
  s->cls = (uint8_t)cls;
  s->pages = (uint8_t)pages;
  s->first_page = (uint8_t)first;
  for (unsigned i = 0; i < pages; i++) seg->page_slab[first + i] = s;
  return s;
}

/* Gives an empty slab's pages back to its segment; they are purged after the delay. */
static void slab_release(heap *h, heap_slab *s) {
  heap_seg *seg = heap_seg_of((void *)s->start);
  uint64_t bits = (s->pages == 64 ? ~0ull : ((1ull << s->pages) - 1)) << s->first_page;
  for (unsigned i = 0; i < s->pages; i++) seg->page_slab[s->first_page + i] = &heap_slab_invalid;
  s->flags = HEAP_SLAB_INVALID;
  /* Only the pages actually touched hold memory; untouched ones are still clean. */
  size_t touched = (size_t)(s->bump - (char *)s->start);
  unsigned tpages = (unsigned)((touched + HEAP_PAGE_SIZE - 1) / HEAP_PAGE_SIZE);
  uint64_t tbits = (tpages == 64 ? ~0ull : ((1ull << tpages) - 1)) << s->first_page;
  atomic_fetch_sub(&heap_stat_active, (size_t)s->pages * HEAP_PAGE_SIZE);
  atomic_fetch_sub(&heap_stat_committed, popcount64(bits & ~tbits) * HEAP_PAGE_SIZE);
  seg->used &= ~bits;
  seg->dirty |= tbits;
  if (heap_opt.purge_delay_ms == 0) {
    seg_purge(seg);
  } else if (heap_opt.purge_delay_ms > 0 && tbits) {
    if (seg->purge_at == 0) {
      seg->purge_at = now_ms() + (uint64_t)heap_opt.purge_delay_ms;
      if (h->purge_next == 0 || seg->purge_at < h->purge_next) h->purge_next = seg->purge_at;
    }
  }
  if (seg->used == 1) heap_release_empty_segs(h, 1);
}

/* Links up to a page's worth of never-used blocks into the free list. */
static void slab_carve(heap_slab *s) {
  size_t size = s->size;
  size_t avail = (size_t)(s->end - s->bump) / size;
  size_t n = size >= 4096 ? 1 : 4096 / size;
  if (n > avail) n = avail;
  char *p = s->bump;
  for (size_t i = 0; i + 1 < n; i++)
    ((heap_block *)(p + i * size))->next = (heap_block *)(p + (i + 1) * size);
  ((heap_block *)(p + (n - 1) * size))->next = s->free;
  s->free = (heap_block *)p;
  s->bump = p + n * size;
}

/* ------------------------------------------------------------------------------------
 * Local frees that are not on the fast path
 * ---------------------------------------------------------------------------------- */

/* The block's slab is owned by h; push it and fix the slab's list membership. */
static void heap_free_local(heap *h, heap_slab *s, heap_block *blk) {
  blk->next = s->free;
  blk->key = heap_free_key;
  s->free = blk;
  h->bins[s->cls].frees++;
  s->used--;
  if (s->flags & HEAP_SLAB_FULL) {
    s->flags &= ~HEAP_SLAB_FULL;
    if (s->used == 0)
      slab_release(h, s);
    else
      partial_push(&h->bins[s->cls], s);
  } else if (s->used == 0) {
    heap_slab_emptied(h, s);
  }
}

void heap_slab_emptied(heap *h, heap_slab *s) {
  heap_bin *b = &h->bins[s->cls];
  if (b->cur == s) return; /* keep the current slab: malloc/free churn must not thrash */
  partial_remove(b, s);
  slab_release(h, s);
}

/* Drains the blocks other threads freed to this heap. */
static void heap_collect_remote(heap *h) {
  heap_block *blk = atomic_exchange_explicit(&h->remote, NULL, memory_order_acquire);
  while (blk) {
    heap_block *next = blk->next;
    heap_seg *seg = heap_seg_of(blk);
    heap_slab *s = seg->page_slab[((uintptr_t)blk >> HEAP_PAGE_SHIFT) & (HEAP_PAGES - 1)];
    heap_free_local(h, s, blk);
    blk = next;
  }
}

/* Checks a suspected double free (the block carries the free mark): is it on the slab's
 * local list or on the heap's remote list? Aborts if so; returns if it was live after all. */
void heap_double_free_check(heap *h, heap_slab *s, heap_block *blk) {
  for (heap_block *b = s->free; b; b = b->next)
    if (b == blk) heap_misuse("double free", blk);
  for (heap_block *b = atomic_load_explicit(&h->remote, memory_order_acquire); b; b = b->next)
    if (b == blk) heap_misuse("double free", blk);
}

/* Validates that p is the start of a handed-out block of a live slab; returns the slab. */
static heap_slab *heap_slab_check(const void *p, const char *what) {
  heap_seg *seg = heap_seg_of(p);
  heap_slab *s = seg->page_slab[((uintptr_t)p >> HEAP_PAGE_SHIFT) & (HEAP_PAGES - 1)];
  if (s->flags & HEAP_SLAB_INVALID) heap_misuse(what, p);
  uintptr_t off = (uintptr_t)p - s->start;
  if (((off * s->magic) >> HEAP_MAGIC_SHIFT) * s->size != off || (const char *)p >= s->bump)
    heap_misuse(what, p);
  return s;
}

size_t heap_usable_size(const void *p) {
  if (!p) return 0;
  if (heap_segmap_test(p)) return heap_slab_check(p, "invalid pointer")->size;
  size_t n = huge_usable(p);
  if (!n) heap_misuse("invalid pointer", p);
  return n;
}

void heap_free_generic(heap *h, void *p) {
  if (!heap_segmap_test(p)) {
    if (p == NULL) return;
    if (!huge_free(p)) heap_misuse("invalid free", p);
    return;
  }
  heap_slab *s = heap_slab_check(p, "invalid free");
  heap_seg *seg = heap_seg_of(p);
  heap_block *blk = p;
  if (seg->owner == h) {
    if (blk->key == heap_free_key) heap_double_free_check(h, s, blk);
    heap_free_local(h, s, blk);
    return;
  }
  /* Another thread's block (or an orphan heap's): push onto the owner's remote stack. The
   * owner cannot go away: heaps are never freed and the segment holds this live block. */
  heap *owner = seg->owner;
  heap_block *head = atomic_load_explicit(&owner->remote, memory_order_relaxed);
  do {
    blk->next = head;
  } while (!atomic_compare_exchange_weak_explicit(&owner->remote, &head, blk, memory_order_release,
                                                  memory_order_relaxed));
}

/* ------------------------------------------------------------------------------------
 * malloc slow path
 * ---------------------------------------------------------------------------------- */
void *heap_malloc_slow(heap *h, unsigned cls) {
  if (h == &heap_empty) {
    h = heap_thread_init();
    if (!h) {
      errno = ENOMEM;
      return NULL;
    }
  }
  if (atomic_load_explicit(&h->remote, memory_order_relaxed)) heap_collect_remote(h);
  if (h->purge_next && now_ms() >= h->purge_next) heap_purge(h, false);
  heap_bin *b = &h->bins[cls];
  heap_slab *s = b->cur;
  heap_block *blk;
  while ((blk = s->free) == NULL) {
    if (s->bump < s->end) {
      slab_carve(s);
      continue;
    }
    if (s != &heap_slab_empty) s->flags |= HEAP_SLAB_FULL;
    s = b->partial;
    if (s) {
      partial_remove(b, s);
    } else {
      s = slab_new(h, cls);
      if (!s) {
        b->cur = &heap_slab_empty;
        errno = ENOMEM;
        return NULL;
      }
    }
    b->cur = s;
  }
  s->free = blk->next;
  s->used++;
  b->allocs++;
  blk->key = 0;
  return blk;
}

/* ------------------------------------------------------------------------------------
 * Collection, thread exit, fork
 * ---------------------------------------------------------------------------------- */

/* Returns a heap's unused memory; the caller owns h (its thread, or heap_lock for an
 * orphan). Returns the bytes released or purged. */
static size_t heap_collect_one(heap *h, bool force) {
  heap_collect_remote(h);
  if (force) {
    for (unsigned c = 0; c < HEAP_NCLASSES; c++) {
      heap_bin *b = &h->bins[c];
      heap_slab *s = b->cur;
      if (s != &heap_slab_empty && s->used == 0) {
        b->cur = &heap_slab_empty;
        slab_release(h, s);
      }
    }
  }
  size_t bytes = heap_purge(h, force);
  bytes += heap_release_empty_segs(h, force ? 0 : 1);
  return bytes;
}

static void heap_thread_done(void *arg) {
  heap *h = arg;
  if (!h || h == &heap_empty) return;
  int saved = errno;
  heap_collect_one(h, true);
  heap_set_tls(&heap_empty);
  pthread_mutex_lock(&heap_lock);
  h->orphan = true;
  h->next_orphan = heap_orphans;
  heap_orphans = h;
  pthread_mutex_unlock(&heap_lock);
  errno = saved;
}

size_t heap_collect_all(bool force) {
  heap_global_init();
  size_t bytes = 0;
  heap *h = heap_get();
  if (h != &heap_empty) bytes += heap_collect_one(h, force);
  pthread_mutex_lock(&heap_lock);
  for (heap *o = heap_orphans; o; o = o->next_orphan) bytes += heap_collect_one(o, force);
  pthread_mutex_unlock(&heap_lock);
  return bytes;
}

int ma_heap_collect(bool force) {
  int saved = errno;
  heap_collect_all(force);
  errno = saved;
  return 0;
}

/* Fork: hold the global locks across fork so the child sees consistent registries. Heaps of
 * threads that do not exist in the child stay as they are (their memory is unreachable
 * there, as with any allocator); the forking thread's heap works on. */
static void heap_atfork_prepare(void) {
  pthread_mutex_lock(&heap_lock);
  huge_atfork_prepare();
}
static void heap_atfork_parent(void) {
  huge_atfork_parent();
  pthread_mutex_unlock(&heap_lock);
}
static void heap_atfork_child(void) {
  huge_atfork_child();
  pthread_mutex_init(&heap_lock, NULL);
}

/* Stats walk: sums every heap's per-class counters. */
void heap_sum_counters(size_t *allocated, size_t *allocs, size_t *frees) {
  size_t a = 0, n = 0, f = 0;
  pthread_mutex_lock(&heap_lock);
  for (heap *h = heap_all; h; h = h->next_all) {
    for (unsigned c = 0; c < HEAP_NCLASSES; c++) {
      size_t na = __atomic_load_n(&h->bins[c].allocs, __ATOMIC_RELAXED);
      size_t nf = __atomic_load_n(&h->bins[c].frees, __ATOMIC_RELAXED);
      n += na;
      f += nf;
      a += (na - nf) * heap_cls_size[c];
    }
  }
  pthread_mutex_unlock(&heap_lock);
  *allocated = a;
  *allocs = n;
  *frees = f;
}
