/* Object layer: aligned segments carved into slabs of fixed-size blocks, with per-thread
 * caches (obj_bins). Used by ma_pool (src/obj/pool.c) and by the heap (src/malloc/).
 *
 * Model. A segment is OBJ_SEG_SIZE (4 MiB) aligned: a header (magic, space, owner bins, the
 * slab descriptors) then 2^(22-shift) slabs of 2^shift bytes (shift 16..22; slab 0 starts
 * after the header), or one slab for big strides ("huge", any multiple of 4 MiB). The
 * global segment map (obj_segmap: a static root of 1024 leaves, each leaf 4 bytes per 4 MiB
 * chunk of a 256 GiB region, mapped when a segment first lands there) says which chunks
 * belong to one of our segments: pointer -> segment -> slab is O(1) and
 * lock-free, and a pointer we did not hand out is recognised.
 *
 * HOW THE HEAP USES THIS LAYER
 * ----------------------------
 * 1. One obj_space for the heap: obj_space_init(&sp, READ|WRITE, 0, false, 0, "mapalloc-heap").
 *    It owns the accounting (committed/reserved bytes, max_bytes), the segments abandoned
 *    by exited threads and every obj_bins made for it. Never destroyed in the heap.
 * 2. One obj_bins per thread: obj_bins_get(&sp, nbins, strides, aligns) returns a recycled
 *    or new one (metadata from the page layer, never from malloc). Bin i serves blocks of
 *    strides[i] bytes (>= 16, a multiple of 8: the size class; aligns[i] may be NULL = 8,
 *    pass 16 for malloc). Slab size follows the stride (>= 16 blocks per slab). Keep the
 *    pointer in an initial-exec TLS variable; all bins of one space must use the same
 *    strides table (abandoned slabs are re-filed by bin index).
 * (Since 2026-12-04 the heap keeps a thread cache of free blocks in front of these paths
 * and calls the obj functions only in its slow paths, under its heap lock: see
 * src/malloc/heap_internal.h. The pools use them as described here.)
 * 3. Fast paths (inline, no lock, no atomic RMW, no division, no syscall):
 *      p = obj_bin_alloc(bs, &bs->bins[cls]);       NULL + errno = ENOMEM on failure
 *      p = obj_bin_alloc_zero(bs, &bs->bins[cls]);  calloc: no memset on fresh pages
 *      seg = obj_segment_of(p);        NULL: not ours -> "invalid free"; then check
 *                                      seg->space == &sp (a pool's segment is not yours)
 *      s = obj_slab_of(seg, p);  obj_block_index(s, p, &i)  false: not a block start
 *      obj_free(mine, seg, s, p);      owner: LIFO push; other thread: batched per owner
 *                                      in `mine` (the freeing thread's bins, or NULL)
 *    s->stride is the usable size. Slab starts are page aligned, so a block of stride S is
 *    aligned to the largest power of two dividing S (up to the page size): aligned_alloc
 *    can pick a class whose stride the alignment divides. obj_free aborts "mapalloc: double free of
 * 0x..." when the block is already free (a keyed tag in its second word, cleared on alloc).
 *    pool.c's ma_pool_alloc/ma_pool_free show the same paths written out by hand
 *    (~16 and ~40 instructions) with obj_map_entry (one map compare).
 * 4. Thread exit: obj_bins_abandon(bs) from the pthread_key destructor: sends the thread's
 *    pending remote frees, files its inbox, returns its empty slabs and segments, and parks
 *    the cache with its live segments; the next obj_bins_get takes it over whole, and
 *    obj_space_trim() (any thread) files and purges parked caches meanwhile. Nothing leaks.
 * 5. Purging: an emptied slab stays committed (reused with no syscall and no fault) while
 *    the thread retains at most max(OBJ_RETAIN_BYTES, its recent peak of active slab bytes
 *    >> OBJ_RETAIN_SHIFT) of empty slabs; past that it is purged at once. The time bound is
 *    what returns memory; the byte cap only stops a runaway (a shift of 3 purged and
 *    refaulted 18k slabs in glibc-simple's 400-block batches). space->purge_delay_ms after
 *    the retention started (default OBJ_PURGE_DELAY_DEFAULT; the heap sets its
 *    MAPALLOC_PURGE_DELAY_MS; 0 = purge at once, < 0 = only on trim), the thread's next slow
 *    path (a refill, or a free that empties a slab) purges every retained slab and unmaps its
 *    empty segments but the last of each kind (obj_bins_purge_check; coarse clock, read only
 *    when something is retained). A purge is MADV_DONTNEED (os_reset): the slab stays mapped
 *    read-write, so reuse costs page faults but no mmap; spaces with MA_MAP_SHARED or
 *    MA_MAP_LOCKED, and huge segments, still remap PROT_NONE (os_decommit). A segment's slab
 *    area is mapped read-write in one call on first use (pages fault in lazily); committed
 *    still counts slabs in use or retained, not the mapping. space->purges counts purge
 *    passes, space->purged_bytes the bytes given back. obj_bins_trim(bs) (owner) purges
 *    every retained slab now (malloc_trim); a bump of sp->trim_epoch makes every thread do
 *    that at its next slow path.
 * 6. Valgrind: when obj_tracking (valgrind detected at run time; MAPALLOC_TRACK=0 turns it
 *    off) slabs get owner_tid 1, so every free misses the inline local path; route such
 *    frees to obj_free_tracked and allocs to obj_bin_alloc_tracked (memcheck client
 *    requests). ASan poisoning of free blocks is compiled into the inline paths.
 *
 * 7. Secure mode (docs/hardening.md). A -DMAPALLOC_SECURE=ON build (MA_SECURE, OBJ_SECURE)
 *    stores free-list links encoded (obj_link_set: xor with the block's address and the
 *    random obj_link_key) and checks each link it follows (obj_link_next: NULL or a carved
 *    block of the same slab, else "mapalloc: corrupted free list"); every list goes through
 *    those two helpers, which are plain loads and stores in the default build. The slow-path
 *    parts follow obj_secure_on() (always in a secure build, MAPALLOC_SECURE=1 per run in
 *    the default one): segments created then keep a guard page at the end of each slab
 *    (seg->guard, excluded by obj_slab_range). Where the kernel has MADV_GUARD_INSTALL
 *    (os_guard_install, Linux 6.13+) the slab area is still mapped read-write in one call and
 *    each slab's last page becomes a guard inside that mapping (seg->guard_mode: no mapping
 *    per slab; purges keep the guards); elsewhere (old kernel, MAPALLOC_GUARD_MADVISE=0, a
 *    space the kernel refuses guards in) the guard is a PROT_NONE hole of the segment's
 *    reservation and slabs are mapped one by one (a mapping per slab), and
 *    carving links blocks in a random order (within windows of obj_shuffle_window blocks),
 *    each tagged free.
 *
 * Threading rules: a slab has one owner thread (s->owner_tid); only the owner touches
 * free/local_free/cnt/notify and the bin lists. Other threads batch the blocks they free
 * per owner cache and push each batch onto the owner's inbox with one CAS; the owner takes
 * the inbox whole in its slow path and files each block in O(1) ("Remote frees" in
 * obj_bins.c). A parked cache (its thread exited) has no owner thread: whoever claims it
 * under space->lock (a new thread, or obj_space_trim) acts as its owner meanwhile.
 */
#ifndef MAPALLOC_OBJ_H
#define MAPALLOC_OBJ_H

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "os/os.h"

#if defined(__SANITIZE_ADDRESS__)
#define OBJ_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define OBJ_ASAN 1
#endif
#endif
#ifndef OBJ_ASAN
#define OBJ_ASAN 0
#endif

/* Secure mode (see "SECURE MODE" above). OBJ_SECURE: compiled in (-DMAPALLOC_SECURE=ON),
 * the fast paths encode and check free-list links. obj_secure_on(): the slow-path parts
 * (guard pages, random carve order, tagged carving), always on in a secure build and
 * selectable per run in the default one (obj_secure_rt, set from MAPALLOC_SECURE=1 when the
 * options are read, before the first segment of the heap or of any pool). */
#ifdef MA_SECURE
#define OBJ_SECURE 1
#else
#define OBJ_SECURE 0
#endif

#define obj_likely(x)   __builtin_expect(!!(x), 1)
#define obj_unlikely(x) __builtin_expect(!!(x), 0)

#define OBJ_SEG_SHIFT           22 /* 4 MiB segments, aligned to their size */
#define OBJ_SEG_SIZE            ((size_t)1 << OBJ_SEG_SHIFT)
#define OBJ_SLAB_MIN            16                /* smallest slab: 64 KiB */
#define OBJ_SHIFT_HUGE          63                /* slab_shift of a one-slab segment (any size) */
#define OBJ_NSHIFTS             8                 /* segment kinds: shifts 16..22, then huge */
#define OBJ_RETAIN_BYTES        ((size_t)1 << 20) /* least empty-slab bytes a bins may retain */
#define OBJ_RETAIN_SHIFT        0   /* ... and up to its recent peak of active slab bytes */
#define OBJ_PURGE_DELAY_DEFAULT 100 /* ms an empty slab stays committed (pools) */
#define OBJ_MAX_STRIDE          ((size_t)1 << 30)

typedef struct obj_block {
  struct obj_block *next;
  uintptr_t key; /* while free: obj_cookie ^ the stored link word (obj_link_set) */
} obj_block;

struct obj_bins;
struct obj_segment;

/* A slab: a run of pages carved into blocks of one stride. Lives in the segment header. */
typedef struct __attribute__((aligned(64))) obj_slab {
  /* first cache line: everything the owner's fast paths touch */
  obj_block *free;     /* pop here; the owner's frees push here too (LIFO: cache-warm) */
  int32_t cnt;         /* used - notify: a free takes the slow path when --cnt <= 0 */
  int32_t notify;      /* -1 current slab, 0 on the partial list, INT32_MAX full; `used`
                          (blocks out, incl. remote frees not collected) is cnt + notify */
  uint32_t bin_off;    /* bin_idx << OBJ_BIN_OFF_SHIFT: the heap indexes its 16-byte thread
                          cache entries with it from this line (one shift less per free) */
  uint32_t spare0_;    /* (unused) */
  uintptr_t owner_tid; /* obj_tid() of the owner; 0 abandoned, 1 tracked (never local) */
  char *start;         /* first block */
  uint64_t inv;        /* inverse of the stride's odd part mod 2^64 (see obj_block_index) */
  uint32_t stride;     /* block size */
  uint32_t carved;     /* blocks carved so far (the rest was never touched) */
  uint8_t inv_shift;   /* stride = odd << inv_shift */
  uint8_t free_zero;   /* every block on `free` is zero beyond its link word */
  uint8_t pad_[6];
  /* second line: slow paths */
  obj_block *local_free;        /* remote frees once collected */
  uint32_t capacity;            /* blocks that fit */
  uint16_t bin_idx;             /* bin of the owner */
  uint8_t active;               /* handed to a bin */
  uint8_t fresh;                /* the slab's pages are untouched since commit (zero) */
  uint8_t committed;            /* pages accessible and counted in space->committed */
  uint8_t mapped;               /* pages mapped with the space's prot (maybe purged) */
  void *spare_;                 /* (unused; keeps the descriptor at 128 bytes) */
  struct obj_slab *next, *prev; /* bin partial list */
} obj_slab;

static inline int32_t obj_slab_used(const obj_slab *s) {
  return (int32_t)((int64_t)s->cnt + s->notify);
}
static inline void obj_slab_set_notify(obj_slab *s, int32_t n) {
  s->cnt = (int32_t)((int64_t)s->cnt + s->notify - n);
  s->notify = n;
}

#define OBJ_SLAB_DESC_SHIFT 7 /* sizeof(obj_slab) == 128 */
#define OBJ_BIN_OFF_SHIFT   4 /* obj_slab.bin_off */
_Static_assert(sizeof(obj_slab) == 1u << OBJ_SLAB_DESC_SHIFT, "slab descriptor size");

typedef struct obj_space obj_space;

/* obj_segment.guard_mode. HOLES: each guard is a PROT_NONE hole of the reservation and
 * slabs are mapped one by one (also every segment without guards). MADV_PENDING: no slab
 * committed yet; the first commit maps the slab area in one call and installs the guards
 * with MADV_GUARD_INSTALL (MADV then; HOLES if the kernel refuses them there). */
enum { OBJ_GUARD_HOLES, OBJ_GUARD_MADV_PENDING, OBJ_GUARD_MADV };

/* A segment: OBJ_SEG_SIZE aligned (a multiple of it for huge ones); header then slabs. */
typedef struct obj_segment {
  uint64_t magic; /* OBJ_SEG_MAGIC ^ address */
  obj_space *space;
  struct obj_bins *owner;          /* set at creation, never changes (see obj_bins.c) */
  struct obj_segment *next, *prev; /* owner's list, or the abandoned list */
  size_t size;                     /* bytes reserved */
  size_t hdr_size;                 /* bytes of header (committed) */
  uint64_t free_mask;              /* slabs not active */
  uint32_t nslabs;
  uint32_t nactive;
  uint8_t slab_shift;
  uint8_t kind;       /* index in bins->segs */
  uint8_t guard_mode; /* OBJ_GUARD_*: how the guards of a secure segment are made */
  uint32_t guard;     /* bytes of guard at the end of each slab (secure), else 0 */
  obj_slab slabs[];
} obj_segment;

typedef struct obj_bin {
  obj_slab *cur;     /* never NULL: &obj_empty_slab when none */
  obj_slab *partial; /* slabs with free blocks, doubly linked */
  uint32_t stride;
  uint32_t align;
  uint8_t slab_shift;
  uint8_t kind;
  uint16_t idx;
} obj_bin;

/* Remote frees travel in batches (see "Remote frees" in obj_bins.c): a freeing thread
 * chains the blocks it frees for one owner in an outbox slot and hands the chain over with
 * one CAS when OBJ_OUTBOX_BATCH blocks have gathered (or at its next slow path, trim or
 * exit). Slots are direct-mapped by the owner's address. */
#define OBJ_OUTBOX_SLOTS 8
#define OBJ_OUTBOX_BATCH 64
typedef struct obj_outbox {
  struct obj_bins *to;    /* owner the chain goes to */
  struct obj_block *head; /* chain through the blocks' links (encoded as free-list links) */
  struct obj_block *tail;
  uint32_t n;
} obj_outbox;

/* A thread's cache for one space. It owns its segments for their whole life: when its
 * thread exits it is parked (in_use false) with them, and the next thread that asks for
 * a cache takes it over whole. */
typedef struct obj_bins {
  obj_space *space;
  uintptr_t tid;
  bool in_use;
  uint8_t out_used; /* bit i: out[i] holds blocks */
  obj_segment *segs[OBJ_NSHIFTS];
  size_t retained;         /* committed bytes of empty slabs in own segments */
  size_t active_bytes;     /* bytes of slabs this bins activated and has not retired */
  size_t peak_bytes;       /* most active_bytes since the last purge pass */
  uint64_t retained_since; /* obj_now_ms() when retained last became non-zero */
  uint64_t allocs, frees;  /* stats, written by the owner only (obj_stat_inc) */
  struct obj_bins *next_all;
  size_t alloc_size;
  unsigned trim_seen;
  obj_outbox out[OBJ_OUTBOX_SLOTS]; /* this thread's remote frees, batched per owner */
  /* Blocks other threads freed to this cache: a stack of chains pushed by CAS and taken
   * whole by the owner (obj_bins.c). On its own line: the only field others write. */
  _Alignas(64) obj_block *inbox;
  char inbox_pad_[56];
  uint32_t nbins;
  obj_bin bins[];
} obj_bins;

struct obj_space {
  unsigned prot;
  unsigned map_flags; /* MA_MAP_* for os_map_fixed */
  bool populate;      /* commit-on-alloc */
  size_t max_bytes;   /* 0 = unlimited, caps `committed` */
  size_t committed, reserved, capacity;
  pthread_mutex_t lock;      /* all_bins and each bins' in_use */
  pthread_mutex_t trim_lock; /* one obj_space_trim at a time: a trim is complete on return */
  obj_bins *all_bins;
  const char *name;
  unsigned trim_epoch; /* bumped by a trim: other bins trim at their slow path */
  int purge_delay_ms;  /* empty slabs kept this long (< 0: until a trim; 0: none) */
  uint32_t map_tag;    /* or'ed into its segments' map entries: OBJ_MAP_POOL or _HEAP */
  size_t purges;       /* purge passes (time-based and trims), atomic */
  size_t purged_bytes; /* bytes of empty slabs returned to the OS, atomic */
};

#define OBJ_HIDDEN __attribute__((visibility("hidden")))
extern OBJ_HIDDEN obj_slab obj_empty_slab;
/* The segment map: two levels, so that address space is reserved in proportion to use (a
 * program under RLIMIT_AS pays 256 KiB per 256 GiB region holding segments, not a flat
 * table for 2^48 bytes). Root entries start at a static leaf of zeros that is never
 * written; obj_map_cover installs a real leaf before a segment's entries are set. */
#define OBJ_MAP_LEAF_BITS 16   /* chunks per leaf: 2^16 x 4 MiB = 256 GiB */
#define OBJ_MAP_ROOT_LEN  1024 /* leaves: 1024 x 256 GiB = 2^48 bytes of address space */
extern OBJ_HIDDEN uint32_t *obj_segmap[OBJ_MAP_ROOT_LEN];
extern OBJ_HIDDEN bool obj_tracking; /* running under valgrind */
/* A segment map entry is the number of the segment's first 4 MiB chunk (< 2^26) or'ed with
 * its space's tag: the heap's free tells its own segments from pools' in the one compare
 * that finds the segment. An entry of 0 is no segment (chunk 0 never holds one). */
#define OBJ_MAP_HEAP ((uint32_t)1 << 31)
#define OBJ_MAP_POOL ((uint32_t)1 << 30)
#define OBJ_MAP_TAGS (OBJ_MAP_HEAP | OBJ_MAP_POOL)
extern OBJ_HIDDEN uintptr_t obj_link_key; /* random, odd: free-list link encoding (secure) */
extern OBJ_HIDDEN uintptr_t obj_cookie;   /* random, odd: the free tag (obj_link_set) */
/* Secure carving shuffles blocks within windows of this many (<= 1: no shuffle). */
#define OBJ_SHUFFLE_DEFAULT 4 /* docs/hardening.md: cost and entropy */
extern OBJ_HIDDEN uint32_t obj_shuffle_window;
#if OBJ_SECURE
#define obj_secure_on() true
#else
extern OBJ_HIDDEN bool obj_secure_rt;
#define obj_secure_on() obj_secure_rt
#endif

/* Run-time options of the whole library (MAPALLOC_* environment variables, obj_options.c):
 * read once by obj_options_read at the first use of the library (the first malloc or pool,
 * through obj_global_init; the heap calls it first) and never changed afterwards. */
typedef struct obj_options {
  long stats, verbose, purge_delay_ms, huge_pages, secure, shuffle, background, track,
      guard_madvise;
  long prof, prof_sample, leaks, prof_warmup; /* the heap profiler's (src/malloc/prof.c) */
  char prof_prefix[200], prof_signal[16];     /* string options: copied, NUL-terminated */
} obj_options;
extern OBJ_HIDDEN obj_options obj_opt;
/* Reads the options (once; later calls return at once, concurrent ones wait for the
 * first), sets obj_shuffle_window and obj_secure_rt, prints them with MAPALLOC_VERBOSE=1.
 * Keeps errno. Any thread; never allocates. */
void obj_options_read(void);

/* A unique id of the calling thread: its thread pointer (one load, no TLS lookup). */
static inline uintptr_t obj_tid(void) {
#if defined(__x86_64__) && !defined(MA_NO_INLINE_ASM)
  uintptr_t t;
  __asm__("movq %%fs:0, %0" : "=r"(t));
  return t;
#else
  return (uintptr_t)__builtin_thread_pointer();
#endif
}

/* A statistics counter written by one thread and read by others (ma_pool_stats_get):
 * incremented with a relaxed atomic store (the reader's relaxed load then races with
 * nothing), at the cost of the plain ++ it replaces. Clang fuses the relaxed load and store
 * into one add to memory; GCC 12 does not (a load, an add and a store: two instructions
 * more on the pools' fast paths), so with GCC on x86-64 it is that one add, written out:
 * a single aligned 8-byte store that no reader can see torn, opaque to the compiler, and
 * with one writer no increment is lost. (The TSan stage builds with clang: the atomic form,
 * which TSan sees.) */
static inline void obj_stat_inc(uint64_t *x) { // NOLINT(readability-non-const-parameter)
#if defined(__x86_64__) && !defined(MA_NO_INLINE_ASM) && !defined(__clang__)
  __asm__ volatile("addq $1, %0" : "+m"(*x));
#else
  __atomic_store_n(x, __atomic_load_n(x, __ATOMIC_RELAXED) + 1, __ATOMIC_RELAXED);
#endif
}

/* ---- pointer -> metadata: O(1), lock-free ---------------------------------------- */

/* The map entry of 4 MiB chunk c (address >> OBJ_SEG_SHIFT): two dependent loads, no
 * branch. Relaxed: a pointer's own segment was published to this thread by whatever
 * handed it the pointer. Addresses past 2^48 alias, but their chunk number does not
 * match the entry (it is compared in full by every caller). */
static inline uint32_t obj_map_entry(uintptr_t c) {
  const uint32_t *leaf = __atomic_load_n(
      &obj_segmap[(c >> OBJ_MAP_LEAF_BITS) & (OBJ_MAP_ROOT_LEN - 1)], __ATOMIC_RELAXED);
  return __atomic_load_n(&leaf[c & ((1u << OBJ_MAP_LEAF_BITS) - 1)], __ATOMIC_RELAXED);
}

/* The segment starting at p's 4 MiB chunk when the map tags it `tag` (OBJ_MAP_HEAP or
 * OBJ_MAP_POOL), else NULL: the one map compare of the heap's and the pools' fast frees.
 * Only for segments of at most 4 MiB (a bigger one is found by obj_segment_of). Chunk 0's
 * entry is 0, never tagged, so NULL gives NULL. */
static inline obj_segment *obj_segment_of_tagged(const void *p, uint32_t tag) {
  uintptr_t c = (uintptr_t)p >> OBJ_SEG_SHIFT;
  if (obj_unlikely(obj_map_entry(c) != ((uint32_t)c | tag))) return NULL;
  if (c == 0) __builtin_unreachable(); /* no code: callers' NULL tests fold away */
  return (obj_segment *)(c << OBJ_SEG_SHIFT);
}

/* The segment holding p, or NULL when p is not inside a live segment of ours. */
static inline obj_segment *obj_segment_of(const void *p) {
  uintptr_t a = (uintptr_t)p;
  uint32_t e = obj_map_entry(a >> OBJ_SEG_SHIFT) & ~OBJ_MAP_TAGS;
  if (obj_unlikely(e == 0)) return NULL;
  obj_segment *seg = (obj_segment *)((uintptr_t)e << OBJ_SEG_SHIFT);
  if (obj_unlikely(a - (uintptr_t)seg >= seg->size)) return NULL;
  return seg;
}

static inline obj_slab *obj_slab_of(obj_segment *seg, const void *p) {
  /* Byte offset, not an array index: GCC then addresses every field of the descriptor
   * from one register (with &slabs[i] it rebuilt the address for the atomic `carved`
   * load, two instructions more per free). */
  uintptr_t off = (((uintptr_t)p - (uintptr_t)seg) >> seg->slab_shift) << OBJ_SLAB_DESC_SHIFT;
  return (obj_slab *)((char *)seg->slabs + off);
}

/* Index of the block starting at p; false when p is not the start of a carved block.
 * No division: with stride = odd << k and inv = odd^-1 mod 2^64, rotr(off * inv, k) is
 * off / stride when stride divides off, and larger than any block index otherwise
 * (Granlund-Montgomery), so one compare checks both alignment and range. */
static inline uint64_t obj_block_q(const obj_slab *s, uintptr_t p) {
  uint64_t x = (p - (uintptr_t)s->start) * s->inv;
  unsigned k = s->inv_shift;
  return (x >> k) | (x << ((64 - k) & 63));
}

/* carved only grows while a slab is active, and a thread holding one of its blocks saw a
 * value covering that block: a relaxed read from any thread is enough. */
static inline uint32_t obj_slab_carved(const obj_slab *s) {
  return __atomic_load_n(&s->carved, __ATOMIC_RELAXED);
}

static inline bool obj_block_index(const obj_slab *s, const void *p, uint32_t *idx) {
  uint64_t q = obj_block_q(s, (uintptr_t)p);
  *idx = (uint32_t)q;
  return obj_likely(q < obj_slab_carved(s));
}

/* ---- free-list links -----------------------------------------------------------------
 * Default build: b->next is a plain pointer. Secure build: it is stored xor'ed with the
 * block's own address and a per-process random key, and every link followed is decoded
 * and checked to be NULL or a carved block of the same slab, so a use-after-free write
 * over a freed block's link aborts at the next allocation instead of handing out a wild
 * pointer (an attacker who does not know the key cannot forge a link). */
/* Writes "mapalloc: <what> of 0x<p>" to fd 2 (no stdio, no allocation) and aborts: the
 * one report of a misuse or corruption, for every layer above the page layer. */
__attribute__((noreturn)) void obj_fatal(const char *what, const void *p);
/* v in base 10 or 16 into buf (room for 20 digits), no terminator; returns the length. */
size_t obj_fmt_uint(char *buf, uint64_t v, unsigned base);
/* Writes the string s to fd in full (retrying short writes), without allocating. */
void obj_write_str(int fd, const char *s);

/* The exact link check of both builds: n ends the list or is a carved block of slab s. */
static inline bool obj_link_in_slab(const obj_slab *s, const obj_block *n) {
  return n == NULL || obj_block_q(s, (uintptr_t)n) < obj_slab_carved(s);
}

/* Links b to next and tags b free: its second word becomes obj_cookie ^ the stored link.
 * Every free block carries the tag (on a slab's lists, in a thread cache, in flight to its
 * owner) and no live one does (a pop clears it), so a free of a block whose tag holds is a
 * double free, and a write after free over a free block's link (or tag) breaks the tag,
 * which the heap's pop checks. The cookie is random per process: a live block's data
 * passes for free with probability 2^-64. */
static inline void obj_link_set(obj_block *b, obj_block *next) {
#if OBJ_SECURE
  uintptr_t w = (uintptr_t)next ^ (uintptr_t)b ^ obj_link_key;
#else
  uintptr_t w = (uintptr_t)next;
#endif
  b->next = (obj_block *)w;
  b->key = obj_cookie ^ w;
}

/* b carries the free tag (see obj_link_set). */
static inline bool obj_block_is_free(const obj_block *b) {
  return b->key == (obj_cookie ^ (uintptr_t)b->next);
}

#if !OBJ_SECURE
/* Default build: a link out of b's 4 MiB chunk is NULL (b is the list's last block), a
 * block of a huge slab, or a use-after-free write. Three instructions find out; all three
 * are rare enough for the exact check to run out of line (NULL tested inline cost two more
 * instructions per malloc than the call once per list). */
static inline bool obj_link_leaves_chunk(const obj_block *b, const obj_block *n) {
  return (((uintptr_t)n ^ (uintptr_t)b) >> OBJ_SEG_SHIFT) != 0;
}

/* n, which b's link points to outside b's chunk, when it is NULL or a carved block of s;
 * aborts with "corrupted free list" otherwise. */
obj_block *obj_link_far(const obj_slab *s, const obj_block *b, obj_block *n);
#endif

/* The next block after b on one of slab s's lists (free, local_free, remote). */
static inline obj_block *obj_link_next(const obj_slab *s, const obj_block *b) {
#if OBJ_SECURE
  obj_block *n = (obj_block *)((uintptr_t)b->next ^ (uintptr_t)b ^ obj_link_key);
  if (obj_unlikely(!obj_link_in_slab(s, n)))
    obj_fatal("corrupted free list (write after free?)", b);
  return n;
#else
  obj_block *n = b->next;
  if (obj_unlikely(obj_link_leaves_chunk(b, n))) return obj_link_far(s, b, n);
  return n;
#endif
}

/* ---- instrumentation ---------------------------------------------------------------
 * Under ASan (compile time) a free block is poisoned; the inline paths open its link words
 * while they touch them. Under valgrind (run time, obj_tracking) the pool takes the
 * obj_*_tracked paths, which do the same with memcheck client requests. */
#if OBJ_ASAN
void obj_link_open(obj_block *b);
void obj_link_close(obj_block *b);
void obj_poison(void *p, size_t n);
void obj_unpoison(void *p, size_t n);
#else
static inline void obj_link_open(obj_block *b) {
  (void)b;
}
static inline void obj_link_close(obj_block *b) {
  (void)b;
}
static inline void obj_poison(void *p, size_t n) {
  (void)p, (void)n;
}
static inline void obj_unpoison(void *p, size_t n) {
  (void)p, (void)n;
}
#endif
/* Memcheck client requests (no-ops unless obj_tracking). */
void obj_track_alloc(void *p, size_t size, bool zero);
void obj_track_free(void *p, size_t size);
/* Before a tracked free reads the free tag of p: its words become defined for memcheck
 * (a live block's first words may never have been written; a freed one aborts). */
void obj_track_peek(void *p);
/* Tracked (valgrind) versions of obj_bin_alloc/obj_free: `size` is the user-visible size. */
void *obj_bin_alloc_tracked(obj_bins *bs, obj_bin *bin, size_t size, bool zero);
void obj_free_tracked(obj_segment *seg, obj_slab *s, void *p, size_t size);

/* ---- slow paths (obj_bins.c, obj_segment.c) ---------------------------------------- */
void *obj_bin_alloc_slow(obj_bins *bs, obj_bin *bin);
void obj_slab_notify(obj_slab *s);
/* Frees b (validated, of slab s in seg) from a thread that does not own s: batched in the
 * outbox of `mine`, the calling thread's own cache of the same space (not thread-safe on
 * `mine`: its owner only). */
void obj_free_remote(obj_bins *mine, obj_segment *seg, obj_slab *s, obj_block *b);
/* As obj_free_remote for a caller without a cache: b goes to its owner's inbox at once. */
void obj_free_remote_now(obj_segment *seg, obj_slab *s, obj_block *b);
/* Owner: sends every batch of remote frees waiting in bs's outbox. */
void obj_outbox_flush(obj_bins *bs);
/* Owner (or the holder of the lock that stands for it): files the blocks other threads
 * sent to bs into their slabs, O(blocks). */
void obj_bins_file_inbox(obj_bins *bs);
/* Blocks already checked and tagged free (a thread cache's, see the heap): obj_slab_put
 * returns b to s, a slab of the calling owner; obj_send_remote batches b for its owner in
 * mine's outbox. */
void obj_slab_put(obj_slab *s, obj_block *b);
void obj_send_remote(obj_bins *mine, obj_segment *seg, obj_block *b);
/* Owner: detaches up to n (>= 1) blocks of bin's current slab (refilled first if empty) as
 * a NULL-terminated chain linked as a free list and tagged free; returns how many (0 and
 * errno ENOMEM when no memory). */
uint32_t obj_bin_take_batch(obj_bins *bs, obj_bin *bin, uint32_t n, obj_block **head);

/* ---- fast paths --------------------------------------------------------------------- */

/* Hands out b, the head of s's free list, whose successor is n. */
static inline void *obj_bin_pop(obj_slab *s, obj_block *b, obj_block *n) {
  s->free = n;
  obj_unpoison(b, s->stride);
  b->key = 0;
  s->cnt++;
  return b;
}

#if !OBJ_SECURE
/* obj_bin_alloc when the head's link leaves its chunk: checked exactly (aborts on a
 * forged link), then popped. */
void *obj_bin_alloc_far(obj_bin *bin);
#endif

/* Pops the head of bin's current slab, which the caller found non-empty. Default build:
 * NULL when the head's link leaves its chunk; the caller then calls obj_bin_alloc_far in
 * tail position, so the fast path keeps no stack frame. */
static inline void *obj_bin_take(obj_bin *bin) {
  obj_slab *s = bin->cur;
  obj_block *b = s->free;
  obj_link_open(b);
#if OBJ_SECURE
  return obj_bin_pop(s, b, obj_link_next(s, b));
#else
  obj_block *n = b->next;
  if (obj_unlikely(obj_link_leaves_chunk(b, n))) return NULL;
  return obj_bin_pop(s, b, n);
#endif
}

static inline void *obj_bin_alloc(obj_bins *bs, obj_bin *bin) {
  if (obj_unlikely(bin->cur->free == NULL)) return obj_bin_alloc_slow(bs, bin);
  void *p = obj_bin_take(bin);
#if !OBJ_SECURE
  if (obj_unlikely(p == NULL)) return obj_bin_alloc_far(bin);
#endif
  return p;
}

/* As obj_bin_alloc, the whole stride zeroed; no memset when the block is fresh. */
static inline void *obj_bin_alloc_zero(obj_bins *bs, obj_bin *bin) {
  obj_block *b = obj_bin_alloc(bs, bin);
  if (obj_likely(b != NULL)) {
    if (bin->cur->free_zero)
      b->next = NULL;
    else
      memset(b, 0, bin->stride);
  }
  return b;
}

/* Pushes b, a validated live block (not yet tagged free), onto its slab's local free list
 * (LIFO: cache-warm) and tags it free: the owner's push, shared by obj_free_local and the
 * pools' fast free. The caller counts it (s->cnt). */
static inline void obj_push_local(obj_slab *s, obj_block *b) {
  obj_poison(b, s->stride);
  obj_link_open(b);
  obj_link_set(b, s->free);
  obj_link_close(b);
  s->free = b;
  s->free_zero = 0;
}

/* Frees p, a validated block of slab s, from the slab's owner thread (s->owner_tid ==
 * obj_tid()). */
static inline void obj_free_local(obj_slab *s, void *p) {
  obj_block *b = (obj_block *)p;
  obj_link_open(b); /* ASan: a freed block is poisoned; we read its tag to say why */
  if (obj_unlikely(obj_block_is_free(b))) obj_fatal("double free", p);
  obj_push_local(s, b);
  if (obj_unlikely(--s->cnt <= 0)) obj_slab_notify(s);
}

static inline bool obj_is_local(const obj_slab *s) {
  return __atomic_load_n(&s->owner_tid, __ATOMIC_RELAXED) == obj_tid();
}

/* Frees p (validated as a block of slab s in seg) from any thread; mine is the calling
 * thread's cache of the same space, or NULL. */
static inline void obj_free(obj_bins *mine, obj_segment *seg, obj_slab *s, void *p) {
  if (obj_likely(obj_is_local(s)))
    obj_free_local(s, p);
  else if (mine)
    obj_free_remote(mine, seg, s, (obj_block *)p);
  else
    obj_free_remote_now(seg, s, (obj_block *)p);
}

/* ---- spaces and bins ---------------------------------------------------------------- */

/* Initialises a space. prot must include READ|WRITE. Returns 0 or -errno. */
int obj_space_init(obj_space *sp, unsigned prot, unsigned map_flags, bool populate,
                   size_t max_bytes, const char *name);
/* Releases every segment and every bins of the space (no thread may use it any more). */
void obj_space_destroy(obj_space *sp);
/* Any thread: files the inboxes of parked caches (threads that exited) and returns their
 * empty slabs and segments to the OS. */
void obj_space_trim(obj_space *sp);

/* Slab shift suited to a stride (>= 16 blocks a slab), OBJ_SHIFT_HUGE for big strides. */
uint8_t obj_slab_shift_for(size_t stride, size_t align);

/* A bins for the calling thread: recycled from an exited thread or new. NULL on ENOMEM. */
obj_bins *obj_bins_get(obj_space *sp, uint32_t nbins, const uint32_t *strides,
                       const uint32_t *aligns);
/* The calling thread (the owner) gives up its bins: pending remote frees are sent, the
 * inbox filed, empty slabs and segments go back to the OS, and the bins is parked with its
 * live segments until obj_bins_get hands it (whole) to another thread. */
void obj_bins_abandon(obj_bins *bs);
/* Owner thread: sends its pending remote frees, files its inbox, decommits every retained
 * empty slab and unmaps empty segments. */
void obj_bins_trim(obj_bins *bs);
/* Owner thread, slow paths only: when empty slabs have been retained for at least
 * space->purge_delay_ms, returns them to the OS (MADV_DONTNEED: the range stays mapped, so
 * reuse costs page faults but no mmap) and unmaps empty segments. Returns true if it
 * purged. Reads the coarse clock only when something is retained. */
bool obj_bins_purge_check(obj_bins *bs);
/* CLOCK_MONOTONIC_COARSE in milliseconds (vDSO, no syscall). */
uint64_t obj_now_ms(void);

/* Fork policy (docs/fork.md): in a fork child the caches of threads the child does not
 * have are left behind: never walked, trimmed, taken over or filed again, since their
 * owners ran without a lock and the fork may have caught them mid-operation. Their blocks
 * stay allocated in the child; frees of them are accepted (sent to the cache's inbox, never
 * filed). OBJ_TID_FORKED marks such a cache (bs->tid; in_use stays true): no thread pointer
 * equals it, so a child thread that glibc gives a dead parent thread's thread pointer never
 * finds the cache by tid. */
#define OBJ_TID_FORKED ((uintptr_t)2)
/* Fork child, for bs of a thread the child does not have: bs->tid = OBJ_TID_FORKED and
 * every slab of its segments gets owner_tid 0 (no free is local to it, whatever the thread
 * pointer). Reads only the segment lists' forward links and slab counts, which a slow path
 * caught half done leaves walkable (a segment is linked after it is initialised and
 * unlinked before it is unmapped). */
void obj_bins_forked(obj_bins *bs);
/* Fork child: unlocks sp->lock and sp->trim_lock (held by the prepare handler of the
 * thread that forked) and leaves behind (obj_bins_forked) every cache in use by another
 * thread. Parked caches stay parked: nobody was touching them. */
void obj_space_fork_child(obj_space *sp);

#endif /* MAPALLOC_OBJ_H */
