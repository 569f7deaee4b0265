/* Thread heaps on the object layer: size classes, the thread life cycle (TLS, pthread key,
 * orphaned heaps), the malloc/free slow paths, the purge delay, collection, fork and the
 * statistics walk. The fast paths are inline in heap_internal.h; slabs, free lists and
 * remote frees are src/obj/'s. */
#include "malloc/heap_internal.h"

#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "obj/obj_check.h"
#include "os/os.h"

/* ------------------------------------------------------------------------------------
 * Size classes: 16..128 in steps of 16, then 8 classes per power of two up to 128 KiB.
 * (tests/test_heap.c checks both tables against the formula.)
 * ---------------------------------------------------------------------------------- */
/* The class of every size up to HEAP_LUT_MAX, indexed by the size itself and stored as the
 * byte offset of its thread cache list (class << OBJ_BIN_OFF_SHIFT): malloc looks the size
 * up with no rounding and adds the entry to the heap's address with no shift (2 KiB, as
 * against 130 bytes by 16-byte steps: two instructions less per malloc). */
#define LUT(c) ((c) << OBJ_BIN_OFF_SHIFT)
const uint16_t heap_cls_lut[HEAP_LUT_MAX + 1] = {
    [0 ... 16] = LUT(0),     [17 ... 32] = LUT(1),    [33 ... 48] = LUT(2),
    [49 ... 64] = LUT(3),    [65 ... 80] = LUT(4),    [81 ... 96] = LUT(5),
    [97 ... 112] = LUT(6),   [113 ... 128] = LUT(7),  [129 ... 144] = LUT(8),
    [145 ... 160] = LUT(9),  [161 ... 176] = LUT(10), [177 ... 192] = LUT(11),
    [193 ... 208] = LUT(12), [209 ... 224] = LUT(13), [225 ... 240] = LUT(14),
    [241 ... 256] = LUT(15), [257 ... 288] = LUT(16), [289 ... 320] = LUT(17),
    [321 ... 352] = LUT(18), [353 ... 384] = LUT(19), [385 ... 416] = LUT(20),
    [417 ... 448] = LUT(21), [449 ... 480] = LUT(22), [481 ... 512] = LUT(23),
    [513 ... 576] = LUT(24), [577 ... 640] = LUT(25), [641 ... 704] = LUT(26),
    [705 ... 768] = LUT(27), [769 ... 832] = LUT(28), [833 ... 896] = LUT(29),
    [897 ... 960] = LUT(30), [961 ... 1024] = LUT(31)};
#undef LUT

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
obj_space heap_space;

const obj_block heap_tc_end = {.next = NULL, .key = 2};

/* The heap of a thread before its first call: empty lists, bounds 0 (every call slow). */
heap heap_empty = {.tc = {[0 ... HEAP_NLISTS - 1] = {.head = HEAP_TC_END}},
                   .lock = PTHREAD_MUTEX_INITIALIZER};

/* Thread cache bound per class: about HEAP_TC_BYTES of blocks, 2..HEAP_TC_MAX_BLOCKS; none
 * above HEAP_TC_MAX_SIZE (those classes go to their slabs under the lock each time). */
#define HEAP_TC_BYTES           ((size_t)64 << 10)
#define HEAP_TC_MAX_BLOCKS      256
#define HEAP_TC_MAX_SIZE        ((size_t)32 << 10)
#define HEAP_TC_FOREIGN_MIN     16 /* least bound a list of other threads' blocks narrows to */
#define HEAP_TC_FOREIGN_THREADS 8  /* threads running before such a list narrows at all */
/* A thread's first refill of a class from the slabs takes (and carves, when the slab's
 * blocks are untouched) this many bytes of blocks (at least one block), the next ones twice
 * as many each: a thread that uses a block or two of many classes touches about a page of
 * each, not half a bound's worth (1000 threads with 64 blocks of 16-1528 B each: 300 KiB of
 * RSS per thread before). */
#define HEAP_FILL_FIRST ((size_t)4 << 10)
static uint32_t heap_tc_max[HEAP_NCLASSES];

/* The base bound of list i: a class's, or half of it for a second list (a profiled run's
 * frees), so that a class's two lists together hold what one list holds unprofiled (a
 * counted refill moves at most the second list, or takes half a bound from the slabs). */
static uint32_t heap_list_max(unsigned i) {
  return i < HEAP_NCLASSES ? heap_tc_max[i] : heap_tc_max[i - HEAP_NCLASSES] / 2;
}

#ifndef MA_TLS_DYNAMIC
__thread heap *heap_tls __attribute__((tls_model("initial-exec"))) = &heap_empty;
#endif

_Atomic size_t heap_stat_purges, heap_stat_heaps;
_Atomic size_t heap_live;       /* heaps of running threads */
_Atomic bool heap_threads_seen; /* two threads had heaps at once, or one exited */
/* frees by threads that never allocated (no heap to count them on) */
static _Atomic size_t heap_stat_stray_frees, heap_stat_stray_bytes;
/* CPUs this process may run on, counted at heap_crowding's first call (0: not yet) */
static _Atomic size_t heap_cores;

static size_t cores_usable(void) {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0)
    return (size_t)CPU_COUNT(&set);
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? (size_t)n : 1;
}

size_t heap_crowding(size_t max) {
  size_t cores = atomic_load_explicit(&heap_cores, memory_order_relaxed);
  if (heap_unlikely(cores == 0)) { /* a race counts twice, the same number */
    cores = cores_usable();
    atomic_store_explicit(&heap_cores, cores, memory_order_relaxed);
  }
  size_t live = atomic_load_explicit(&heap_live, memory_order_relaxed);
  size_t c = live / cores;
  return c < 1 ? 1 : c > max ? max : c;
}

/* heap_lock guards the heap registry, the orphan list and the metadata bump allocator. */
static pthread_mutex_t heap_lock = PTHREAD_MUTEX_INITIALIZER;
static heap *heap_all;     /* every heap ever made (heaps are never freed) */
static heap *heap_orphans; /* heaps of exited threads, waiting for a new thread */
static char *meta_cur, *meta_end;

static pthread_key_t heap_key;
static _Atomic int heap_init_state; /* 0 none (or failed: tried again), 1 running, 2 done */
static bool heap_key_made;

/* Strides and alignments of the classes, as obj_bins_get wants them. A class's blocks are
 * aligned to the largest power of two dividing its size (so aligned_alloc can use it). */
static uint32_t heap_cls_align[HEAP_NCLASSES];

static void heap_set_tls(heap *h);

/* ------------------------------------------------------------------------------------
 * Misuse and time
 * ---------------------------------------------------------------------------------- */
void heap_free_invalid(const void *p) {
  obj_fatal("invalid free", p);
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
  if (heap_likely(st >= 2)) return;
  int zero = 0;
  if (atomic_compare_exchange_strong(&heap_init_state, &zero, 1)) {
    obj_options_read();   /* once for the whole run: see obj_options.c */
    prof_options_apply(); /* prof hook: prof_on before any heap exists */
    for (unsigned c = 0; c < HEAP_NCLASSES; c++) {
      uint32_t a = heap_cls_size[c] & -heap_cls_size[c];
      heap_cls_align[c] = a > HEAP_MAX_ALIGN ? (uint32_t)HEAP_MAX_ALIGN : a;
      size_t n = HEAP_TC_BYTES / heap_cls_size[c];
      n = n > HEAP_TC_MAX_BLOCKS ? HEAP_TC_MAX_BLOCKS : n < 2 ? 2 : n;
      heap_tc_max[c] = heap_cls_size[c] > HEAP_TC_MAX_SIZE ? 0 : (uint32_t)n;
    }
    unsigned flags = heap_opt.huge_pages > 0 ? MA_MAP_HUGE_TRY : 0;
    int rc = obj_space_init(&heap_space, MA_PROT_READ | MA_PROT_WRITE, flags, false, 0, "mapalloc");
    heap_space.map_tag = OBJ_MAP_HEAP; /* heap_segment_of: one compare names the heap's */
    /* prof hook: frees push onto the second lists (HEAP_NLISTS), for good: slabs keep it */
    heap_space.bin_off_base = prof_on ? (uint32_t)HEAP_NCLASSES << OBJ_BIN_OFF_SHIFT : 0;
    /* obj retains empty slabs for the purge delay and purges them at a slow path after it. */
    long delay = heap_opt.purge_delay_ms; /* parsed as a long: clamp, never truncate */
    heap_space.purge_delay_ms = delay > INT_MAX ? INT_MAX : delay < -1 ? -1 : (int)delay;
    if (rc == 0 && !heap_key_made)
      heap_key_made = pthread_key_create(&heap_key, heap_thread_done) == 0;
    /* A failure (no address space for the segment map yet) does not stick: the next malloc
     * slow path tries again. */
    atomic_store_explicit(&heap_init_state, rc == 0 ? 2 : 0, memory_order_release);
    return;
  }
  while (atomic_load_explicit(&heap_init_state, memory_order_acquire) == 1) sched_yield();
}

/* Programs such as coreutils close stderr before exiting: the exit statistics go to a
 * duplicate taken at start-up. */
static int heap_stats_fd = 2;

__attribute__((constructor)) static void heap_constructor(void) {
  heap_global_init(); /* options included: read once, at the first use of the library */
  prof_start();       /* prof hook: tables, unwinder warm-up, signal, fork handlers */
  pthread_atfork(heap_atfork_prepare, heap_atfork_parent, heap_atfork_child);
  if (heap_opt.stats) {
    int saved = errno;
    int fd = fcntl(2, F_DUPFD_CLOEXEC, 200);
    if (fd >= 0) heap_stats_fd = fd;
    errno = saved;
  }
}

__attribute__((destructor)) static void heap_destructor(void) {
  prof_exit(); /* prof hook: the exit profile and the leak report */
  if (heap_opt.stats) ma_heap_stats_print(heap_stats_fd);
}

/* Metadata (heap structs) from a bump allocator over OS pages; heap_lock held. */
static void *meta_alloc(size_t size) {
  size = (size + 63) & ~(size_t)63;
  if ((size_t)(meta_end - meta_cur) < size) {
    size_t len = 64 << 10;
    char *m = os_alloc(len, 0, false);
    if (!m) return NULL;
    os_name(m, len, "mapalloc-meta");
    meta_cur = m;
    meta_end = m + len;
  }
  void *r = meta_cur;
  meta_cur += size;
  return r;
}

/* Puts h on the orphan list (its thread is gone, or never got it). */
static void heap_orphan_push(heap *h) {
  pthread_mutex_lock(&heap_lock);
  h->next_orphan = heap_orphans;
  heap_orphans = h;
  pthread_mutex_unlock(&heap_lock);
}

/* Gives the calling thread a heap (an orphan if there is one, else a new one) with obj
 * bins of its own. NULL on ENOMEM. */
static heap *heap_thread_init(void) {
  heap_global_init();
  if (atomic_load_explicit(&heap_init_state, memory_order_acquire) != 2) return NULL;
  /* An exited thread's heap is taken over whole (cache, slabs, pending frees): a thread
   * that comes and goes costs no system call and no refill. */
  pthread_mutex_lock(&heap_lock);
  heap *h = heap_orphans;
  if (h) {
    heap_orphans = h->next_orphan;
  } else {
    h = meta_alloc(sizeof(heap));
    if (h) {
      memset(h, 0, sizeof *h);
      pthread_mutex_init(&h->lock, NULL);
      h->next_all = heap_all;
      __atomic_store_n(&heap_all, h, __ATOMIC_RELEASE); /* walked without heap_lock */
      atomic_fetch_add(&heap_stat_heaps, 1);
    }
  }
  pthread_mutex_unlock(&heap_lock);
  if (!h) return NULL;
  pthread_mutex_lock(&h->lock);
  h->orphan = false;
  h->next_orphan = NULL;
  if (!h->bs) { /* a new heap, or an orphan whose slabs a trim gave back */
    int saved = errno;
    obj_bins *bs = obj_bins_get(&heap_space, HEAP_NCLASSES, heap_cls_size, heap_cls_align);
    errno = saved;
    if (!bs) {
      pthread_mutex_unlock(&h->lock);
      heap_orphan_push(h);
      return NULL;
    }
    h->tracking = obj_tracking;
    for (unsigned i = 0; i < HEAP_NLISTS; i++) {
      if (!h->tc[i].head) h->tc[i].head = HEAP_TC_END; /* a new heap (an orphan's are empty) */
      MA_CHECK(heap_tc_empty(&h->tc[i]), "list %u of a heap without slabs holds blocks", i);
      /* prof hook: a profiled thread's first lists keep bound 0 (room -blocks): only its
       * counted refills fill them, so every malloc that empties one reaches the countdown */
      bool used = i < HEAP_NCLASSES ? !prof_on : heap_space.bin_off_base != 0;
      uint32_t max = h->tracking || !used ? 0 : heap_list_max(i);
      __atomic_store_n(&h->tc[i].max, max, __ATOMIC_RELAXED);           /* statistics read it */
      __atomic_store_n(&h->tc[i].room, (int32_t)max, __ATOMIC_RELAXED); /* empty */
    }
    __atomic_store_n(&h->bs, bs, __ATOMIC_RELEASE); /* statistics read *bs without a lock */
  }
  h->bs->tid = obj_tid();
  pthread_mutex_unlock(&h->lock);
  if (atomic_fetch_add(&heap_live, 1) > 0) atomic_store(&heap_threads_seen, true);
  heap_set_tls(h);
  /* After heap_tls is set: pthread_setspecific may itself call calloc. */
  pthread_setspecific(heap_key, h);
  return h;
}

heap *heap_thread_heap(void) {
  heap *h = heap_get();
  if (heap_unlikely(!h->bs)) h = heap_thread_init();
  return h && !h->tracking ? h : NULL;
}

size_t heap_stash_bytes(void) {
  size_t n = 0;
  for (heap *h = __atomic_load_n(&heap_all, __ATOMIC_ACQUIRE); h; h = h->next_all)
    n += __atomic_load_n(&h->stash.bytes, __ATOMIC_RELAXED);
  return n;
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
 * Slow paths. Slab state (obj) is touched only here, under h->lock.
 * ---------------------------------------------------------------------------------- */

/* Statistics: relaxed stores (only h's owner, or a holder of h->lock, writes them). */
static void heap_count_take(heap *h, size_t k, size_t bytes) {
  __atomic_store_n(&h->takes, h->takes + k, __ATOMIC_RELAXED);
  __atomic_store_n(&h->out_bytes, h->out_bytes + bytes, __ATOMIC_RELAXED);
}
static void heap_count_give(heap *h, size_t k, size_t bytes) {
  __atomic_store_n(&h->gives, h->gives + k, __ATOMIC_RELAXED);
  __atomic_store_n(&h->out_bytes, h->out_bytes - bytes, __ATOMIC_RELAXED);
}

static void heap_tc_take_mail(heap *h);
static uint32_t heap_tc_take_freed(heap *h, unsigned cls, uint32_t want);

/* Class cls's first list ran empty and takes blocks again: both its lists cycled. */
static void heap_tc_refilled(heap *h, unsigned cls) {
  h->refilled[cls] = true;
  h->refilled[cls + HEAP_NCLASSES] = true;
}

/* Refills class cls's empty first list with up to `want` blocks from the current slab: the
 * thread's first refills of a class HEAP_FILL_FIRST bytes of blocks, then twice as many each
 * time, up to half the class's base bound (a grown bound holds the blocks a burst of frees gives
 * back; a refill that grew with it would take hundreds of blocks, touching memory a program
 * that allocates little at a time never uses). Returns the blocks taken. h->lock held. */
static uint32_t heap_tc_take_slab(heap *h, unsigned cls, uint32_t want) {
  heap_tc *tc = &h->tc[cls];
  uint32_t cap = heap_tc_max[cls] / 2 ? heap_tc_max[cls] / 2 : 1;
  size_t ramp = (HEAP_FILL_FIRST << h->fills[cls]) / heap_cls_size[cls]; /* (slow path) */
  if (ramp < cap) {
    cap = ramp ? (uint32_t)ramp : 1;
    h->fills[cls]++;
  }
  obj_block *head;
  uint32_t k =
      obj_bin_take_batch(h->bs, &h->bs->bins[cls], want < cap ? want : cap, HEAP_TC_END, &head);
  MA_CHECK(tc->max == 0 || k <= tc->max, "class %u: refill of %u blocks, bound %u", cls, k,
           tc->max); /* (a profiled thread's first list has bound 0) */
  if (k) {
    heap_count_take(h, k, (size_t)k * heap_cls_size[cls]);
    tc->head = head;
    __atomic_store_n(&tc->room, tc->room - (int32_t)k, __ATOMIC_RELAXED);
  }
  return k;
}

static void *heap_malloc_slow_once(heap *h, unsigned cls) {
  if (h->bs == NULL) {
    h = heap_thread_init();
    if (!h) {
      errno = ENOMEM;
      return NULL;
    }
  }
  heap_purger_poke();
  huge_cache_purge(false);
  obj_bin *bin = &h->bs->bins[cls];
  heap_tc *tc = &h->tc[cls];
  void *p = NULL;
  pthread_mutex_lock(&h->lock);
  if (heap_unlikely(h->tracking)) {
    p = obj_bin_alloc_tracked(h->bs, bin, heap_cls_size[cls], false);
    if (p) heap_count_take(h, 1, heap_cls_size[cls]);
  } else if (tc->max == 0) { /* a class too large to cache */
    p = obj_bin_alloc(h->bs, bin);
    if (p) heap_count_take(h, 1, heap_cls_size[cls]);
  } else if (heap_tc_empty(tc)) {
    heap_tc_refilled(h, cls);
    heap_tc_take_mail(h); /* batches other threads gave back, first */
    /* (the second list: a profiled run's after its profiler failed to start) */
    if (heap_tc_empty(tc)) heap_tc_take_freed(h, cls, (uint32_t)tc->room);
    if (heap_tc_empty(tc)) heap_tc_take_slab(h, cls, UINT32_MAX);
  }
  pthread_mutex_unlock(&h->lock);
  if (!heap_tc_empty(tc)) return heap_malloc_cls(cls);
  return p; /* NULL: obj set errno */
}

/* The link of a cached block, checked as the pop checks it (the tag; exactly in secure
 * mode); aborts on a corrupted one. */
static obj_block *heap_tc_next_checked(obj_block *b) {
  obj_link_open(b);
  bool ok = obj_block_is_free(b);
  obj_block *n = heap_tc_link(b);
  obj_link_close(b);
  if (OBJ_SECURE && ok) ok = heap_link_valid_from(b, n);
  if (!ok) obj_fatal("corrupted free list (write after free?)", b);
  return n;
}

/* Moves up to `want` blocks from class cls's second list (the frees of a profiled run)
 * onto its first, which is empty: the whole list at once when it fits, else the blocks
 * freed last (still in this core's cache). Returns the blocks moved. The owner only (both
 * lists are its thread's; no lock). */
static uint32_t heap_tc_take_freed(heap *h, unsigned cls, uint32_t want) {
  heap_tc *tc = &h->tc[cls], *f = &h->tc[cls + HEAP_NCLASSES];
  uint32_t n = heap_tc_count(f);
  if (n == 0 || want == 0) return 0;
  obj_block *rest = HEAP_TC_END;
  if (n > want) {
    obj_block *last = f->head;
    for (uint32_t i = 1; i < want; i++) last = heap_tc_next_checked(last);
    rest = heap_tc_next_checked(last);
    obj_link_open(last);
    obj_link_set(last, HEAP_TC_END);
    obj_link_close(last);
    n = want;
  }
  tc->head = f->head;
  f->head = rest;
  __atomic_store_n(&tc->room, tc->room - (int32_t)n, __ATOMIC_RELAXED);
  __atomic_store_n(&f->room, f->room + (int32_t)n, __ATOMIC_RELAXED);
  return n;
}

/* prof hook: the refill of a profiled thread's first list, at most `want` blocks (the
 * caller has charged them to its sampling countdown, so every block the thread pops was
 * counted): the blocks its thread freed (heap_tc_take_freed), else batches other threads
 * sent back, else half the usual bound from the slabs. The list keeps bound 0 and room
 * -blocks (heap_tc_count stays exact). Returns the blocks taken (0: a class without a
 * cache, or no memory: the caller takes one block). */
uint32_t heap_tc_refill_counted(heap *h, unsigned cls, uint32_t want) {
  heap_tc *tc = &h->tc[cls];
  if (want == 0 || !heap_tc_empty(tc) || tc->max != 0 || heap_tc_max[cls] == 0) return 0;
  heap_tc_refilled(h, cls);
  uint32_t k = heap_tc_take_freed(h, cls, want);
  if (k) return k;
  pthread_mutex_lock(&h->lock);
  heap_tc_take_mail(h);
  k = heap_tc_take_freed(h, cls, want);
  if (k == 0) k = heap_tc_take_slab(h, cls, want);
  pthread_mutex_unlock(&h->lock);
  return k;
}

bool heap_release_for_retry(void) {
  if (errno != ENOMEM) return false;
  heap_collect_all(true);
  errno = ENOMEM;
  return true;
}

void *heap_malloc_slow(heap *h, const heap_tc *tc) {
  unsigned cls = (unsigned)(tc - h->tc);
  if (heap_unlikely(prof_on) && h->bs && !h->tracking) { /* prof hook: the countdown */
    void *s = prof_malloc_small(h, cls);
    if (s) return s; /* a sampled block (else: an ordinary one, below) */
  }
  void *p = heap_malloc_slow_once(h, cls);
  if (heap_unlikely(p == NULL) && heap_release_for_retry())
    p = heap_malloc_slow_once(heap_get(), cls);
  return p;
}

void *heap_malloc_far(const heap_tc *tc) {
  if (heap_tc_empty(tc)) return heap_malloc_slow(heap_get(), tc);
  obj_fatal("corrupted free list (write after free?)", tc->head);
}

/* Blocks of one class a trim gives back to one other thread, sent as one batch. */
#define HEAP_TRIM_OWNERS 4
typedef struct heap_batch {
  obj_bins *to;
  obj_block *head, *tail;
  uint32_t n;
} heap_batch;

/* Chains b, a cached block of a slab `to` owns, into the batch for `to` in out[] (false:
 * all HEAP_TRIM_OWNERS batches are for other owners). */
static bool heap_batch_add(heap_batch out[HEAP_TRIM_OWNERS], obj_bins *to, obj_block *b) {
  for (unsigned i = 0; i < HEAP_TRIM_OWNERS; i++) {
    heap_batch *m = &out[i];
    if (m->n && m->to != to) continue;
    obj_link_open(b);
    obj_link_set(b, m->head);
    obj_link_close(b);
    if (!m->n) *m = (heap_batch){.to = to, .tail = b};
    m->head = b;
    m->n++;
    return true;
  }
  return false;
}

/* The run of b: b and the blocks after it on a thread cache list that lie in b's slab (a
 * slab is the 2^shift bytes around it, aligned; a one-slab segment's shift is 63, its runs
 * end at OBJ_SEG_SIZE boundaries), at most `max` of them past b, their links checked. *rest
 * is the block after b on entry, the first after the run on return; *last the run's last
 * block. Returns the run's length. A thread that frees blocks in the order it allocated
 * them (a burst of frees over a buffer, sh6bench) gives back long runs: one relink each
 * instead of a segment-map lookup and a push per block. */
static uint32_t heap_tc_run(obj_block *b, obj_block **rest, obj_block **last, uint32_t max,
                            unsigned shift) {
  unsigned sh = shift < OBJ_SEG_SHIFT ? shift : OBJ_SEG_SHIFT;
  obj_block *l = b, *r = *rest;
  uint32_t k = 1;
  while (k <= max && (((uintptr_t)r ^ (uintptr_t)b) >> sh) == 0) {
    l = r;
    r = heap_tc_next_checked(r);
    k++;
  }
  *rest = r;
  *last = l;
  return k;
}

/* Gives back all but `keep` blocks of list `list` (HEAP_NLISTS), from its head (the blocks
 * freed last: still in this core's cache, and no walk past the ones given back): blocks of
 * h's own slabs go back to them, the others go to their owners, one batch per owner (the
 * owner moves a batch into its own cache whole, heap_tc_take_mail). Returns how many of
 * the blocks given back were other threads' (heap_tc_grow). h->lock held. */
static uint32_t heap_tc_trim(heap *h, unsigned list, uint32_t keep) {
  heap_tc *tc = &h->tc[list];
  unsigned cls = heap_list_cls(list);
  uint32_t n = heap_tc_count(tc);
  /* (bound 0 with room -n: a profiled thread's list, see heap_tc_refill_counted) */
  MA_CHECK(tc->max ? tc->room >= 0 && n <= tc->max : tc->room <= 0,
           "list %u: %u cached blocks, bound %u, room %d", list, n, tc->max, tc->room);
  if (n <= keep) return 0;
  obj_block *rest = tc->head;
  heap_batch out[HEAP_TRIM_OWNERS] = {{0}};
  uint32_t foreign = 0;
  for (uint32_t i = keep; i < n;) {
    obj_block *b = rest;
    rest = heap_tc_next_checked(b);
    i++;
    obj_segment *seg = heap_segment_of(b); /* checked when it was pushed or linked */
    if (seg->owner == h->bs) {
      obj_block *last;
      uint32_t k = heap_tc_run(b, &rest, &last, n - i, seg->slab_shift);
      i += k - 1;
      obj_slab_put_run(obj_slab_of(seg, b), b, last, k);
      continue;
    }
    foreign++;
    if (!heap_batch_add(out, seg->owner, b)) obj_send_remote(h->bs, seg, b);
  }
  for (unsigned i = 0; i < HEAP_TRIM_OWNERS && out[i].n; i++)
    obj_send_batch(out[i].to, out[i].head, out[i].tail, out[i].n);
  size_t k = n - keep, bytes = k * heap_cls_size[cls];
  tc->head = rest;
  __atomic_store_n(&tc->room, (int32_t)(tc->max - keep), __ATOMIC_RELAXED);
  heap_count_give(h, k, bytes);
  /* prof hook: a profiled thread's first list holds blocks charged to the class's countdown
   * for the pops that now never come: the charge goes back (else the sample comes early). */
  if (tc->max == 0) h->prof.cls_left[cls] += (int64_t)k * heap_cls_size[cls];
  return foreign;
}

/* A full list whose trim gave back only h's own blocks doubles its bound, within the
 * limits of HEAP_TC_GROW_*. (A list of other threads' blocks keeps its bound: its trims
 * send them home in batches, and a batch larger than its owner's bound could not join
 * the owner's list whole.) h->lock held. */
static void heap_tc_grow(heap *h, unsigned list) {
  heap_tc *tc = &h->tc[list];
  uint32_t base = heap_list_max(list), from = tc->max > base ? tc->max : base;
  size_t size = heap_cls_size[heap_list_cls(list)];
  size_t add = 2 * tc->max > from ? (size_t)(2 * tc->max - from) * size : 0; /* past base */
  if (tc->max * 2 > HEAP_TC_GROW_BLOCKS || 2 * (size_t)tc->max * size > HEAP_TC_GROW_CLASS) return;
  size_t live = atomic_load_explicit(&heap_live, memory_order_relaxed);
  size_t share = HEAP_TC_GROW_ALL / (live ? live : 1);
  if (h->tc_grown + add > (share < HEAP_TC_GROW_THREAD ? share : HEAP_TC_GROW_THREAD)) return;
  h->tc_grown += add;
  uint32_t old = tc->max;
  __atomic_store_n(&tc->max, 2 * old, __ATOMIC_RELAXED); /* statistics read it */
  __atomic_store_n(&tc->room, tc->room + (int32_t)old, __ATOMIC_RELAXED);
}

/* A full list whose trim gave back only other threads' blocks (h frees more of the class
 * than it allocates: a consumer) halves its bound while more than HEAP_TC_FOREIGN_THREADS
 * threads run, to the base bound x HEAP_TC_FOREIGN_THREADS / running threads, at least
 * HEAP_TC_FOREIGN_MIN blocks: what it keeps is seldom reused here, and every consumer's
 * share adds up (xmalloc with 32 consumers: 64 KiB of each class cached in each). With
 * fewer threads the bound stays (each narrowing costs trims and smaller batches: xmalloc
 * with 2 threads ran 20% more instructions narrowed to 16 blocks). A grown list does not
 * narrow: it grew on its own blocks. h->lock held; the list holds half its bound (just
 * trimmed). */
static void heap_tc_narrow(heap *h, unsigned list) {
  heap_tc *tc = &h->tc[list];
  uint32_t base = heap_list_max(list), max = tc->max / 2;
  size_t live = atomic_load_explicit(&heap_live, memory_order_relaxed);
  if (tc->max > base || max < HEAP_TC_FOREIGN_MIN ||
      (size_t)max * live < (size_t)base * HEAP_TC_FOREIGN_THREADS)
    return;
  __atomic_store_n(&tc->max, max, __ATOMIC_RELAXED); /* statistics read it */
  __atomic_store_n(&tc->room, 0, __ATOMIC_RELAXED);  /* full: holds max blocks */
  (void)heap_tc_trim(h, list, max / 2);
}

/* A full list: its colder half goes back, and its bound follows whose blocks they were. It
 * grows only when it also ran empty since its last trim: a larger bound would have saved a
 * refill as well as this trim. A thread that frees a large structure it built and then
 * waits (no refill between its trims) keeps its bound: what a grown list holds only an
 * exit or a forced trim of the thread's own heap gives back. */
static void heap_tc_full(heap *h, unsigned list) {
  heap_tc *tc = &h->tc[list];
  uint32_t keep = tc->max / 2, given = heap_tc_count(tc) - keep;
  uint32_t foreign = heap_tc_trim(h, list, keep);
  bool cycled = h->refilled[list];
  h->refilled[list] = false;
  if (foreign == 0 && cycled)
    heap_tc_grow(h, list);
  else if (foreign == given)
    heap_tc_narrow(h, list);
}

/* Puts every list's bound back (their blocks were just given back: room = bound). */
static void heap_tc_shrink(heap *h) {
  if (h->tc_grown == 0) return;
  for (unsigned i = 0; i < HEAP_NLISTS; i++) {
    heap_tc *tc = &h->tc[i];
    uint32_t base = heap_list_max(i);
    if (tc->max <= base) continue;
    MA_CHECK(heap_tc_count(tc) == 0, "list %u: %u blocks cached when the bounds go back", i,
             heap_tc_count(tc));
    __atomic_store_n(&tc->max, base, __ATOMIC_RELAXED);
    __atomic_store_n(&tc->room, (int32_t)base, __ATOMIC_RELAXED);
  }
  h->tc_grown = 0;
}

/* Owner, h->lock held: takes the batches other threads' trims sent h: a batch whose list
 * has room for it all joins the list whole, O(1) (the list frees push onto: a profiled
 * run's second list, uncharged like a free); the others are filed into their slabs. */
static void heap_tc_take_mail(heap *h) {
  obj_block *b = obj_bins_take_batches(h->bs);
  size_t k = 0, bytes = 0;
  unsigned base = heap_space.bin_off_base >> OBJ_BIN_OFF_SHIFT;
  while (b) {
    obj_batch m;
    if (!obj_batch_open(h->bs, b, &m)) {
      obj_bins_file_chain(h->bs, b);
      break;
    }
    heap_tc *tc = &h->tc[base + m.bin];
    if (!tc->max || tc->room < (int32_t)m.n) {
      b = obj_batch_file(h->bs, b, &m);
      continue;
    }
    obj_block *next = obj_batch_splice(&m, tc->head);
    tc->head = b;
    __atomic_store_n(&tc->room, tc->room - (int32_t)m.n, __ATOMIC_RELAXED);
    k += m.n;
    bytes += (size_t)m.n * heap_cls_size[m.bin];
    b = next;
  }
  if (k) heap_count_take(h, k, bytes);
}

void heap_free_double(const void *p) {
  obj_fatal("double free", p);
}

/* A validated block, not free, that the fast path could not cache: the thread's first
 * call, valgrind, a class without a cache, or a full list (the colder half goes back).
 * free never changes errno: the caller (heap_free_slow) saves and restores it around
 * everything here (a purge's madvise or munmap, a heap's creation may fail and set it). */
static void heap_free_slow_errno(heap *h, obj_segment *seg, obj_slab *s, void *p) {
  if (!obj_tracking) { /* the fast path leaves the double-free check to us; valgrind's: below */
    obj_link_open((obj_block *)p);
    if (heap_unlikely(obj_block_is_free((obj_block *)p))) heap_free_double(p);
  }
  /* A thread's first call is this free: the block goes back to its owner, not into this
   * thread's cache, which would hand it out as the thread's first allocation. Such a block
   * was allocated next to the blocks its owner gave other threads; reusing it here makes
   * the threads write one cache line (passive false sharing, Hoard's cache-scratch: 4x
   * jemalloc's and mimalloc's time). Later frees are cached: a consumer thread gets a heap
   * too, its frees then go back to their owners in batches. */
  bool first = h->bs == NULL;
  if (first) {
    heap *n = heap_thread_init();
    if (!n) {
      atomic_fetch_add(&heap_stat_stray_frees, 1);
      atomic_fetch_add(&heap_stat_stray_bytes, s->stride);
      obj_free_remote_now(seg, s, (obj_block *)p);
      return;
    }
    h = n;
  }
  if (heap_unlikely(h->tracking)) { /* under the lock: it may put p back into its slab */
    pthread_mutex_lock(&h->lock);
    heap_count_give(h, 1, s->stride);
    obj_free_tracked(seg, s, p, s->stride);
    pthread_mutex_unlock(&h->lock);
    return;
  }
  heap_purger_poke();
  unsigned list = (unsigned)(s->bin_off >> OBJ_BIN_OFF_SHIFT); /* as the fast path's */
  heap_tc *tc = &h->tc[list];
  pthread_mutex_lock(&h->lock);
  if (tc->max == 0 || first) {
    heap_count_give(h, 1, s->stride);
    if (seg->owner == h->bs)
      obj_free_local(s, p);
    else
      obj_free_remote(h->bs, seg, s, (obj_block *)p);
  } else {
    if (tc->room <= 0) heap_tc_full(h, list);
    heap_tc_push(tc, s, (obj_block *)p);
  }
  pthread_mutex_unlock(&h->lock);
}

void heap_free_slow(obj_segment *seg, obj_slab *s, void *p) {
  int saved = errno;
  heap_free_slow_errno(heap_get(), seg, s, p);
  errno = saved;
}

/* Validates that p is the start of a handed-out block of a heap segment. */
static obj_slab *heap_slab_check(obj_segment *seg, const void *p, const char *what) {
  if (seg->space != &heap_space) obj_fatal(what, p); /* a pool's object */
  obj_slab *s = obj_slab_of(seg, p);
  if (obj_block_q(s, (uintptr_t)p) >= obj_slab_carved(s)) obj_fatal(what, p);
  return s;
}

size_t heap_usable_size(const void *p) {
  if (!p) return 0;
  obj_segment *seg = heap_segment_holding(p);
  if (seg) return heap_slab_check(seg, p, "invalid pointer")->stride;
  if (heap_unlikely(prof_on) && prof_owns(p)) return prof_usable(p); /* prof hook (aborts) */
  size_t n = huge_usable(p);
  if (!n) obj_fatal("invalid pointer", p);
  return n;
}

/* Frees the fast path does not take: NULL, large blocks, foreign pointers and pointers
 * that are not the start of a block of a heap segment (a pool's object among them). */
void heap_free_generic(void *p) {
  if (p == NULL) return; /* first: programs free NULL often (churn: 1 free in 3) */
  obj_segment *seg = heap_segment_holding(p);
  if (!seg) {
    int saved = errno;                            /* free never changes errno (an unmap may fail) */
    if (heap_unlikely(prof_on) && prof_free(p)) { /* prof hook: a sampled small block */
      errno = saved;
      return;
    }
    if (!huge_free(p)) obj_fatal("invalid free", p);
    errno = saved;
    return;
  }
  (void)heap_slab_check(seg, p, "invalid free");
  heap_free_inline(p); /* not reached from the fast path */
}

/* ------------------------------------------------------------------------------------
 * Collection, the purger's pass, thread exit, fork
 * ---------------------------------------------------------------------------------- */

/* One heap's part of a collection (h->lock held), in two phases over all heaps so that
 * what one heap sends another is filed in the same collection. Phase 0: its cache (own heap
 * or an orphan on a forced trim; an orphan unclaimed for the purge delay) and its pending
 * remote frees are sent. Phase 1: the frees sent to it are filed, and every free slab goes
 * back (force) or those whose purge delay expired. True when something is left that a
 * later pass may return. */
static bool heap_trim_locked(heap *h, int phase, bool force, bool own) {
  obj_bins *bs = h->bs;
  if (!bs || h->tracking) return false;
  if (phase == 0) {
    bool idle_orphan = h->orphan && heap_space.purge_delay_ms >= 0 &&
                       obj_now_ms() - h->orphaned_ms >= (uint64_t)heap_space.purge_delay_ms;
    if ((force && (own || h->orphan)) || idle_orphan) {
      for (unsigned i = 0; i < HEAP_NLISTS; i++) heap_tc_trim(h, i, 0);
      heap_tc_shrink(h);
    }
    obj_outbox_flush(bs);
    bool cached = false;
    if (h->orphan)
      for (unsigned i = 0; i < HEAP_NLISTS && !cached; i++) cached = !heap_tc_empty(&h->tc[i]);
    return cached;
  }
  if (force) {
    obj_bins_trim(bs);
  } else {
    obj_bins_file_inbox(bs);
    if (bs->retained) (void)obj_bins_purge_check(bs);
  }
  return bs->retained != 0;
}

/* Every heap's part (other threads' heaps too: their slabs are touched only under their
 * lock), then parked caches. `wait`: lock busy heaps, else skip them. True when something
 * is left that a later pass may return (a skipped heap counts). */
static bool heap_trim_all(bool force, bool wait) {
  heap *self = heap_get();
  bool more = false;
  for (int phase = 0; phase < 2; phase++) {
    for (heap *h = __atomic_load_n(&heap_all, __ATOMIC_ACQUIRE); h; h = h->next_all) {
      if (h->forked || __atomic_load_n(&h->bs, __ATOMIC_RELAXED) == NULL) continue;
      if (h == self || wait) {
        pthread_mutex_lock(&h->lock);
      } else if (pthread_mutex_trylock(&h->lock) != 0) {
        more = true;
        continue;
      }
      more |= heap_trim_locked(h, phase, force, h == self);
      pthread_mutex_unlock(&h->lock);
    }
  }
  for (heap *h = __atomic_load_n(&heap_all, __ATOMIC_ACQUIRE); h; h = h->next_all)
    if (!h->forked) more |= huge_stash_trim(h, force, wait || h == self);
  obj_space_trim(&heap_space); /* caches parked by obj (not the heap's orphans) */
  return more;
}

size_t heap_collect_all(bool force) {
  heap_global_init();
  if (atomic_load_explicit(&heap_init_state, memory_order_acquire) != 2) return 0;
  size_t before = __atomic_load_n(&heap_space.committed, __ATOMIC_RELAXED);
  heap_trim_all(force, force);
  size_t cached = huge_cache_purge(force);
  if (force) prof_purge(true); /* prof hook: freed sampled slots kept resident for reuse */
  /* And the unmaps the kernel refused earlier (a VMA split at the map count limit). */
  (void)os_release_retry();
  size_t after = __atomic_load_n(&heap_space.committed, __ATOMIC_RELAXED);
  return (before > after ? before - after : 0) + cached;
}

int ma_heap_collect(bool force) {
  int saved = errno;
  heap_collect_all(force);
  errno = saved;
  return 0;
}

bool heap_purge_pass(void) {
  int saved = errno;
  bool more = heap_trim_all(false, false);
  (void)huge_cache_purge(false);
  prof_purge(false); /* prof hook */
  size_t hc, hb, ha, hf, cached;
  huge_stats(&hc, &hb, &ha, &hf, &cached);
  errno = saved;
  return more || cached != 0;
}

/* Thread exit: the heap becomes an orphan with everything in it, for the next new thread;
 * its pending remote frees are sent now, and the purger (or a trim) returns its cache and
 * its free slabs once the purge delay has passed with no thread taking it over. */
static void heap_thread_done(void *arg) {
  heap *h = arg;
  if (!h || h == &heap_empty || !h->bs) return;
  int saved = errno;
  heap_set_tls(&heap_empty);
  huge_stash_flush(h); /* (an orphan's stash is empty: nobody would expire it soon) */
  pthread_mutex_lock(&h->lock);
  obj_outbox_flush(h->bs);
  h->orphan = true;
  h->orphaned_ms = obj_now_ms();
  pthread_mutex_unlock(&h->lock);
  heap_orphan_push(h);
  atomic_fetch_sub(&heap_live, 1);
  atomic_store(&heap_threads_seen, true);
  errno = saved;
}

/* Fork (docs/fork.md): hold the global locks, every heap's lock (as ma_heap_check:
 * heap_lock, then the heaps, then the space) and keep the purger out, so the child sees
 * every heap's slabs consistent: no slow path, trim or adoption is caught half done. Only a
 * thread cache (its owner's, lock-free) may be torn. In the child the heaps of threads it
 * does not have are left behind (forked, obj_bins_forked): never walked, trimmed or reused;
 * their cached blocks, slabs and pending remote frees stay allocated there (their stashed
 * large blocks go to the cache: a stash is consistent under the heap's lock). Heaps of no
 * thread (orphans, incl. one caught between its thread's exit and the orphan list, or taken
 * off the list by a thread that had not locked it yet) make the child's orphan list. Heaps
 * a fork already left behind in an ancestor are skipped (nobody touches them). */
static bool heap_fork_skip; /* this fork takes no lock: see os_single_threaded */
static void heap_atfork_prepare(void) {
  heap_fork_skip = os_single_threaded();
  if (heap_fork_skip) return;
  heap_purger_atfork_prepare();
  pthread_mutex_lock(&heap_lock);
  for (heap *h = heap_all; h; h = h->next_all)
    if (!h->forked) pthread_mutex_lock(&h->lock);
  if (atomic_load(&heap_init_state) == 2) {
    pthread_mutex_lock(&heap_space.trim_lock);
    pthread_mutex_lock(&heap_space.lock);
  }
  huge_atfork_prepare();
}
static void heap_atfork_parent(void) {
  if (heap_fork_skip) return;
  huge_atfork_parent();
  if (atomic_load(&heap_init_state) == 2) {
    pthread_mutex_unlock(&heap_space.lock);
    pthread_mutex_unlock(&heap_space.trim_lock);
  }
  for (heap *h = heap_all; h; h = h->next_all)
    if (!h->forked) pthread_mutex_unlock(&h->lock);
  pthread_mutex_unlock(&heap_lock);
  heap_purger_atfork_parent();
}
static void heap_atfork_child(void) {
  /* Unlock, not re-init: the child's only thread is the one that locked them in prepare,
   * and a re-init of a held mutex is invisible to ThreadSanitizer (it then reports the
   * child's next lock from another thread as a double lock). A process that never had a
   * second thread took no lock and has nothing to fix: the child is its exact copy. */
  if (heap_fork_skip) return;
  huge_atfork_child();
  if (atomic_load(&heap_init_state) == 2) {
    pthread_mutex_unlock(&heap_space.lock);
    pthread_mutex_unlock(&heap_space.trim_lock);
  }
  heap *self = heap_get();
  heap_orphans = NULL;
  for (heap *h = heap_all; h; h = h->next_all) {
    if (h->forked) continue;
    pthread_mutex_unlock(&h->lock);
    if (h == self) continue;
    if (!h->orphan && h->bs) { /* its thread is gone; its cache may be torn */
      h->forked = true;
      obj_bins_forked(h->bs);
      huge_stash_flush(h); /* (consistent: h->lock was held) to the cache */
    } else { /* no thread's: consistent (h->lock), for the child's threads to take over */
      h->orphan = true;
      h->next_orphan = heap_orphans;
      heap_orphans = h;
    }
  }
  /* One thread: the purger starts again only when the child runs a second one. */
  atomic_store(&heap_live, self->bs ? 1 : 0);
  atomic_store(&heap_threads_seen, false);
  pthread_mutex_unlock(&heap_lock);
  heap_purger_atfork_child();
}

/* Stats walk: sums every heap's counters (relaxed reads, no lock). Live small bytes are
 * exact when no thread is between a cache move and its count. */
void heap_sum_counters(size_t *allocated, size_t *allocs, size_t *frees, size_t *retained) {
  size_t a = 0, n = 0, f = 0, r = 0;
  for (heap *h = __atomic_load_n(&heap_all, __ATOMIC_ACQUIRE); h; h = h->next_all) {
    n += __atomic_load_n(&h->takes, __ATOMIC_RELAXED);
    f += __atomic_load_n(&h->gives, __ATOMIC_RELAXED);
    a += __atomic_load_n(&h->out_bytes, __ATOMIC_RELAXED);
    for (unsigned c = 0; c < HEAP_NCLASSES; c++)
      a -= (size_t)heap_tc_cached(h, c) * heap_cls_size[c];
    obj_bins *bs = __atomic_load_n(&h->bs, __ATOMIC_ACQUIRE); /* its initialisation */
    if (bs) r += __atomic_load_n(&bs->retained, __ATOMIC_RELAXED);
  }
  f += atomic_load(&heap_stat_stray_frees);
  a -= atomic_load(&heap_stat_stray_bytes);
  *allocated = a;
  *allocs = n;
  *frees = f;
  *retained = r;
}

/* Blocks sitting in thread caches, per class, added to out (relaxed reads, no lock): the
 * slabs count them as used (stats_class.c subtracts them). */
void heap_tc_blocks(size_t out[HEAP_NCLASSES]) {
  for (heap *h = __atomic_load_n(&heap_all, __ATOMIC_ACQUIRE); h; h = h->next_all)
    for (unsigned c = 0; c < HEAP_NCLASSES; c++) out[c] += heap_tc_cached(h, c);
}

/* ------------------------------------------------------------------------------------
 * Consistency walk (ma_heap_check; obj/obj_check.h)
 * ---------------------------------------------------------------------------------- */

/* The blocks of h's thread cache: each a carved block of an active heap slab of its class,
 * tagged free; as many as the list's count says. h's thread cannot run meanwhile (it is
 * the caller, or h is an orphan under h->lock). */
static void heap_tc_check(heap *h) {
  for (unsigned c = 0; c < HEAP_NLISTS; c++) { /* (c: the list) */
    heap_tc *tc = &h->tc[c];
    uint32_t n = 0;
    for (obj_block *b = tc->head; b != HEAP_TC_END;) {
      MA_VERIFY(n < (tc->max ? tc->max : heap_tc_count(tc)),
                "thread cache %p list %u: more than its bound %u blocks", (void *)h, c, tc->max);
      obj_segment *seg = heap_segment_of(b);
      MA_VERIFY(seg != NULL, "thread cache %p list %u: block %p is not in a heap segment",
                (void *)h, c, (void *)b);
      obj_slab *s = obj_slab_of(seg, b);
      MA_VERIFY(s->active && obj_block_q(s, (uintptr_t)b) < obj_slab_carved(s) &&
                    s->stride == heap_cls_size[heap_list_cls(c)],
                "thread cache %p list %u: block %p is not a block of its class (slab %p, "
                "active %u, stride %u)",
                (void *)h, c, (void *)b, (void *)s, s->active, s->stride);
      obj_link_open(b);
      bool tagged = obj_block_is_free(b);
      obj_block *next = heap_tc_link(b);
      obj_link_close(b);
      MA_VERIFY(tagged, "thread cache %p list %u: block %p does not carry the free tag", (void *)h,
                c, (void *)b);
      n++;
      b = next;
    }
    MA_VERIFY(n == heap_tc_count(tc), "thread cache %p list %u: %u blocks, count %u (room %d)",
              (void *)h, c, n, heap_tc_count(tc), tc->room);
  }
}

int ma_heap_check(void) {
  heap_global_init();
  if (atomic_load_explicit(&heap_init_state, memory_order_acquire) != 2) return 0;
  int saved = errno;
  heap *self = heap_get();
  /* Lock order as elsewhere: heap_lock (no heap joins or leaves the registry or the orphan
   * list), then each heap's lock (its slabs; taken one at a time elsewhere, never with
   * heap_lock wanted), then the space's trim_lock and lock (parked caches). The heaps of
   * threads a fork left behind are not locked: their lock may be held for ever, and their
   * state may be torn (fork caught them mid-call); they are not walked. */
  pthread_mutex_lock(&heap_lock);
  bool forked = false;
  for (heap *h = heap_all; h; h = h->next_all) {
    if (h->forked)
      forked = true;
    else /* (also a heap without bs: its thread may be giving it one) */
      pthread_mutex_lock(&h->lock);
  }
  pthread_mutex_lock(&heap_space.trim_lock);
  pthread_mutex_lock(&heap_space.lock);
  obj_check_totals t = {0};
  size_t heaps = 0;
  for (heap *h = heap_all; h; h = h->next_all) {
    if (h->forked || !h->bs) continue;
    MA_VERIFY(h->bs->space == &heap_space && h->bs->in_use && h->bs->nbins == HEAP_NCLASSES,
              "heap %p: cache %p of space %p, in_use %d, %u bins", (void *)h, (void *)h->bs,
              (void *)h->bs->space, h->bs->in_use, h->bs->nbins);
    obj_bins_check(h->bs, &t);
    huge_stash_check(h);
    /* Another live thread's cache is its own (no lock): walked only for orphans. */
    if (h == self || h->orphan) heap_tc_check(h);
    heaps++;
  }
  size_t caches = 0;
  for (obj_bins *bs = heap_space.all_bins; bs; bs = bs->next_all) {
    caches++;
    if (!bs->in_use) obj_bins_check(bs, &t); /* parked by obj (a fork child's) */
  }
  MA_VERIFY(caches >= heaps, "%zu caches in the heap space, %zu heaps hold one", caches, heaps);
  if (!forked) {
    size_t entries = obj_map_check(&heap_space, OBJ_MAP_HEAP);
    MA_VERIFY(entries == t.chunks,
              "%zu segment map entries name heap segments, the caches own %zu chunks", entries,
              t.chunks);
    MA_VERIFY(caches == heaps, "%zu caches in the heap space, %zu heaps hold one", caches, heaps);
    size_t reserved = __atomic_load_n(&heap_space.reserved, __ATOMIC_RELAXED);
    size_t committed = __atomic_load_n(&heap_space.committed, __ATOMIC_RELAXED);
    size_t capacity = __atomic_load_n(&heap_space.capacity, __ATOMIC_RELAXED);
    MA_VERIFY(reserved == t.reserved, "heap space reserved %zu, its segments %zu", reserved,
              t.reserved);
    MA_VERIFY(committed == t.committed, "heap space committed %zu, headers and slabs %zu",
              committed, t.committed);
    MA_VERIFY(capacity == t.capacity, "heap space capacity %zu, active slabs hold %zu", capacity,
              t.capacity);
  }
  pthread_mutex_unlock(&heap_space.lock);
  pthread_mutex_unlock(&heap_space.trim_lock);
  for (heap *h = heap_all; h; h = h->next_all)
    if (!h->forked) pthread_mutex_unlock(&h->lock);
  pthread_mutex_unlock(&heap_lock);
  huge_check();
  errno = saved;
  return 0;
}
