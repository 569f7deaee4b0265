/* Object layer, part 1: constants, types and globals (the slab, segment, bins and space
 * structures, the segment map, the random keys, the run-time options). See obj.h for the
 * model and the size taxonomy (docs/internals.md); obj_inline.h has the inline paths. */
#ifndef MAPALLOC_OBJ_TYPES_H
#define MAPALLOC_OBJ_TYPES_H

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
/* ThreadSanitizer: GCC defines __SANITIZE_THREAD__, clang 14 only has the feature test. */
#if defined(__SANITIZE_THREAD__)
#define OBJ_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define OBJ_TSAN 1
#endif
#endif
#ifndef OBJ_TSAN
#define OBJ_TSAN 0
#endif

/* Secure mode (obj.h, point 7, and docs/hardening.md). OBJ_SECURE: compiled in
 * (-DMAPALLOC_SECURE=ON), the fast paths encode and check free-list links. obj_secure_on(): the
 * slow-path parts (guard pages, random carve order, tagged carving), always on in a secure build
 * and selectable per run in the default one (obj_secure_rt, set from MAPALLOC_SECURE=1 when the
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
#define OBJ_SHIFT_SOLO          63                /* slab_shift of a one-slab segment (any size) */
#define OBJ_NSHIFTS             8                 /* segment kinds: shifts 16..22, then solo */
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
  uint64_t bin_off;    /* space->bin_off_base + (bin_idx << OBJ_BIN_OFF_SHIFT): the heap indexes
                          its 16-byte thread cache entries with it from this line (one shift
                          less per free);
                          64 bits, so the free adds it to the heap's address from memory */
  uintptr_t owner_tid; /* obj_tid() of the owner; 0 abandoned, 1 tracked (never local) */
  char *start;         /* first block */
  uint64_t inv;        /* inverse of the stride's odd part mod 2^64 (see obj_block_index) */
  uint64_t carved;     /* blocks carved so far (the rest was never touched); 64 bits, so
                          the block check compares the 64-bit index with it from memory */
  uint32_t stride;     /* block size */
  uint8_t inv_shift;   /* stride = odd << inv_shift */
  uint8_t free_zero;   /* every block on `free` is zero beyond its link word */
  uint8_t pad_[2];
  /* second line: slow paths */
  obj_block *local_free;        /* remote frees once collected */
  uint32_t capacity;            /* blocks that fit */
  uint16_t bin_idx;             /* bin of the owner */
  uint8_t active;               /* handed to a bin */
  uint8_t fresh;                /* the slab's pages are untouched since commit (zero) */
  uint8_t committed;            /* pages accessible and counted in space->committed */
  uint8_t mapped;               /* pages mapped with the space's prot (maybe purged) */
  uint32_t retired_ms;          /* obj_now_ms() (low bits) when last retained empty */
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

/* A segment: OBJ_SEG_SIZE aligned (a multiple of it for solo ones); header then slabs.
 * A segment of several slabs may start with only its first slab reserved and grow slab by
 * slab within its 4 MiB window (obj_segment_grow): address space in proportion to use. */
typedef struct obj_segment {
  uint64_t magic; /* OBJ_SEG_MAGIC ^ address */
  obj_space *space;
  struct obj_bins *owner;          /* set at creation, never changes (see obj_bins.c) */
  struct obj_segment *next, *prev; /* owner's list, or the abandoned list */
  size_t size;        /* bytes reserved from the start (grows; read by any thread: atomic) */
  size_t hdr_size;    /* bytes of header (committed) */
  size_t area_end;    /* the slab area is mapped read-write in one go up to here (lazy mode) */
  uint32_t slabs_max; /* slabs it may use: nslabs, or those reserved once growth failed */
  uint64_t free_mask; /* slabs not active */
  uint32_t nslabs;
  uint32_t nactive;
  uint8_t slab_shift;
  uint8_t kind;        /* index in bins->segs */
  uint8_t guard_mode;  /* OBJ_GUARD_*: how the guards of a secure segment are made */
  uint32_t guard;      /* bytes of guard at the end of each slab (secure), else 0 */
  uintptr_t slab_base; /* slabs, less (address >> slab_shift) << OBJ_SLAB_DESC_SHIFT of the
                          segment's start (mod 2^64): obj_slab_of adds the descriptor offset of
                          an address's own shift, with no mask of its offset in the segment */
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
#define OBJ_BATCH_MAX    0xffffu /* most blocks in a sealed batch (obj_send_batch) */
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
  uint64_t retained_since; /* obj_now_ms() when the oldest retained slab was emptied, or
                              earlier: the next purge pass is due a delay after it */
  uint64_t allocs, frees;  /* stats, written by the owner only (obj_stat_inc) */
  struct obj_bins *next_all;
  size_t alloc_size;
  unsigned trim_seen;
  obj_outbox out[OBJ_OUTBOX_SLOTS]; /* this thread's remote frees, batched per owner */
  /* Blocks other threads freed to this cache: stacks of chains pushed by CAS and taken
   * whole by the owner (obj_bins.c): single blocks and outbox chains in inbox, thread-cache
   * batches with a header in inbatch. On their own line: the only fields others write. */
  _Alignas(64) obj_block *inbox;
  obj_block *inbatch;
  char inbox_pad_[48];
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
  unsigned trim_epoch;   /* bumped by a trim: other bins trim at their slow path */
  int purge_delay_ms;    /* empty slabs kept this long (< 0: until a trim; 0: none) */
  uint32_t map_tag;      /* or'ed into its segments' map entries: OBJ_MAP_POOL or _HEAP */
  bool keep_segments;    /* an empty segment that retains slabs stays until they are purged
                            (the heap while its purger runs; atomic); else it goes as it
                            empties (pools: pool.h's promise) */
  uint32_t bin_off_base; /* added to each slab's bin_off (the heap's free-side lists while
                            profiling: src/malloc/heap_internal.h) */
  size_t purges;         /* purge passes (time-based and trims), atomic */
  size_t purged_bytes;   /* bytes of empty slabs returned to the OS, atomic */
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
/* The zone of growing segments' windows (obj_segment.c). It spans four leaves: the turn
 * through its windows maps each leaf the first time it crosses into that leaf's region. */
#if defined(__x86_64__) && !OBJ_TSAN
#define OBJ_ZONE_START ((uintptr_t)32 << 40) /* 32 TiB: also above ASan's shadow */
#define OBJ_ZONE_BITS  18                    /* 2^18 windows of 4 MiB: 1 TiB */
#else
#define OBJ_ZONE_START 0
#define OBJ_ZONE_BITS  0
#endif
extern OBJ_HIDDEN bool obj_tracking; /* running under valgrind */
/* A segment map entry is the number of the segment's first 4 MiB chunk (< 2^26) or'ed with
 * its space's tag: the heap's free tells its own segments from pools' in the one compare
 * that finds the segment. An entry of 0 is no segment (chunk 0 never holds one). */
#define OBJ_MAP_HEAP ((uint32_t)1 << 31)
#define OBJ_MAP_POOL ((uint32_t)1 << 30)
#define OBJ_MAP_TAGS (OBJ_MAP_HEAP | OBJ_MAP_POOL)
/* A pool whose frees all take the slow path (zero pools: a free clears the slab's
 * free_zero, which the fast push leaves alone); neither the heap's nor the pools' fast
 * compare matches it. */
#define OBJ_MAP_POOL_SLOW OBJ_MAP_TAGS
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
      guard_madvise, large_chunk, large_stash;
  long prof, prof_sample, leaks, prof_warmup; /* the heap profiler's (src/malloc/prof.c) */
  char prof_prefix[200], prof_signal[16];     /* string options: copied, NUL-terminated */
} obj_options;
extern OBJ_HIDDEN obj_options obj_opt;
/* Reads the options (once; later calls return at once, concurrent ones wait for the
 * first), sets obj_shuffle_window and obj_secure_rt, prints them with MAPALLOC_VERBOSE=1.
 * Keeps errno. Any thread; never allocates. */
void obj_options_read(void);

#endif /* MAPALLOC_OBJ_TYPES_H */
