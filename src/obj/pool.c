/* ma_pool: fixed-size object pools on the object layer (obj.h).
 *
 * A pool is an obj_space (its prot/map_flags/max_bytes) plus, per thread, a one-bin
 * obj_bins. A thread finds its bins through a TLS array indexed by the pool's slot (one of
 * POOL_SLOTS) and checked against the pool's unique id, so a destroyed pool's stale entry
 * is never used. Pools beyond POOL_SLOTS live at once take a locked lookup instead.
 */
#include "mapalloc/pool.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "obj/obj.h"
#include "obj/obj_check.h"

#define POOL_SLOTS 256
#define POOL_NONE  UINT32_MAX

struct ma_pool {
  obj_space space; /* first: seg->space == &p->space */
  size_t obj_size;
  uint32_t stride;
  uint32_t align;
  bool zero;
  uint32_t slot;     /* TLS cache slot, or POOL_NONE */
  uint32_t fslot;    /* slot for the fast path (0 for POOL_NONE pools) */
  uint64_t uid_fast; /* uid, or ~0 (never in a TLS entry) to force the slow paths */
  uint64_t uid;
  struct ma_pool *next, *prev;
};

typedef struct pool_tld {
  uint64_t uid[POOL_SLOTS];
  obj_bins *bins[POOL_SLOTS];
} pool_tld;

/* TLS model: initial-exec (one %fs-relative load) unless the library is built for dlopen
 * with -DMA_TLS_DYNAMIC (as the heap, heap_internal.h): global-dynamic then, which a library
 * loaded after start-up can always get (static TLS space may be exhausted by then). */
#ifdef MA_TLS_DYNAMIC
#define POOL_TLS __attribute__((tls_model("global-dynamic")))
#else
#define POOL_TLS __attribute__((tls_model("initial-exec")))
#endif

static __thread pool_tld *tls_tld POOL_TLS;

/* The pool this thread used last: the alloc fast path is one compare away from its bins. */
typedef struct {
  uint64_t uid;
  obj_bins *bins;
} pool_last;
static __thread pool_last tls_last POOL_TLS;

static pthread_mutex_t pools_lock = PTHREAD_MUTEX_INITIALIZER;
static ma_pool *pools;
static uint64_t slots_used[POOL_SLOTS / 64];
static uint64_t next_uid = 1;
static pthread_key_t tld_key;
static pthread_once_t key_once = PTHREAD_ONCE_INIT;
static int key_err;

/* ---- thread exit and fork ------------------------------------------------------------ */

/* Hands every cache of the exiting thread back to its pool. */
static void tld_destroy(void *arg) {
  pool_tld *t = arg;
  uintptr_t self = obj_tid();
  pthread_mutex_lock(&pools_lock);
  for (ma_pool *p = pools; p; p = p->next) {
    obj_bins *mine = NULL;
    pthread_mutex_lock(&p->space.lock);
    for (obj_bins *bs = p->space.all_bins; bs; bs = bs->next_all)
      if (bs->in_use && bs->tid == self) mine = bs;
    pthread_mutex_unlock(&p->space.lock);
    if (mine) obj_bins_abandon(mine);
  }
  pthread_mutex_unlock(&pools_lock);
  if (tls_tld == t) tls_tld = NULL;
  tls_last.uid = 0; /* those bins may go to another thread now */
  tls_last.bins = NULL;
  os_release_owned_rw(t, sizeof *t);
}

static bool fork_skip; /* this fork takes no lock: see os_single_threaded */
static void fork_prepare(void) {
  fork_skip = os_single_threaded();
  if (fork_skip) return;
  pthread_mutex_lock(&pools_lock);
  for (ma_pool *p = pools; p; p = p->next) {
    pthread_mutex_lock(&p->space.trim_lock);
    pthread_mutex_lock(&p->space.lock);
  }
}

static void fork_parent(void) {
  if (fork_skip) return;
  for (ma_pool *p = pools; p; p = p->next) {
    pthread_mutex_unlock(&p->space.lock);
    pthread_mutex_unlock(&p->space.trim_lock);
  }
  pthread_mutex_unlock(&pools_lock);
}

/* The child unlocks what prepare locked (same thread): see heap_atfork_child. */
static void fork_child(void) {
  if (fork_skip) return;
  for (ma_pool *p = pools; p; p = p->next) obj_space_fork_child(&p->space);
  pthread_mutex_unlock(&pools_lock);
}

static void key_init(void) {
  key_err = pthread_key_create(&tld_key, tld_destroy);
  if (!key_err) key_err = pthread_atfork(fork_prepare, fork_parent, fork_child);
}

/* ---- per-thread cache lookup -------------------------------------------------------- */

static __attribute__((noinline)) obj_bins *pool_bins_slow(ma_pool *p) {
  pool_tld *t = tls_tld;
  if (!t) {
    pthread_once(&key_once, key_init);
    if (key_err) goto nomem;
    t = os_alloc(sizeof *t, 0, false);
    if (!t) goto nomem;
    if (pthread_setspecific(tld_key, t) != 0) {
      os_release_owned_rw(t, sizeof *t);
      goto nomem;
    }
    tls_tld = t;
  }
  if (p->slot != POOL_NONE && t->uid[p->slot] == p->uid) return t->bins[p->slot];
  obj_bins *bs = NULL;
  if (p->slot == POOL_NONE) { /* more than POOL_SLOTS pools: a locked lookup */
    uintptr_t self = obj_tid();
    pthread_mutex_lock(&p->space.lock);
    for (obj_bins *b = p->space.all_bins; b; b = b->next_all)
      if (b->in_use && b->tid == self) bs = b;
    pthread_mutex_unlock(&p->space.lock);
  }
  if (!bs) bs = obj_bins_get(&p->space, 1, &p->stride, &p->align);
  if (!bs) return NULL;
  if (p->slot != POOL_NONE) {
    t->uid[p->slot] = p->uid;
    t->bins[p->slot] = bs;
  }
  return bs;
nomem:
  errno = ENOMEM;
  return NULL;
}

static inline obj_bins *pool_bins(ma_pool *p) {
  pool_tld *t = tls_tld;
  uint32_t slot = p->slot;
  if (obj_likely(t != NULL && slot < POOL_SLOTS && t->uid[slot] == p->uid)) return t->bins[slot];
  return pool_bins_slow(p);
}

/* pool_bins through the one-entry cache, which it refreshes (fast-path pools only). */
static obj_bins *pool_bins_last(ma_pool *p) {
  if (tls_last.uid == p->uid) return tls_last.bins;
  obj_bins *bs = pool_bins(p);
  if (bs && p->uid_fast == p->uid) {
    tls_last.uid = p->uid;
    tls_last.bins = bs;
  }
  return bs;
}

/* The calling thread's cache if it has one (no creation). */
static obj_bins *pool_bins_peek(ma_pool *p) {
  pool_tld *t = tls_tld;
  if (t && p->slot < POOL_SLOTS && t->uid[p->slot] == p->uid) return t->bins[p->slot];
  if (p->slot != POOL_NONE) return NULL;
  obj_bins *bs = NULL;
  uintptr_t self = obj_tid();
  pthread_mutex_lock(&p->space.lock);
  for (obj_bins *b = p->space.all_bins; b; b = b->next_all)
    if (b->in_use && b->tid == self) bs = b;
  pthread_mutex_unlock(&p->space.lock);
  return bs;
}

/* ---- the API ------------------------------------------------------------------------- */

#define POOL_FLAGS                                                                                 \
  (MA_MAP_HUGE_TRY | MA_MAP_LOCKED | MA_MAP_DONTDUMP | MA_MAP_DONTFORK | MA_MAP_NORESERVE |        \
   MA_MAP_JIT | MA_MAP_POPULATE)

int ma_pool_create(const ma_pool_opts *opts, ma_pool **out) {
  if (!opts || !out) return -EINVAL;
  size_t size = opts->obj_size, align = opts->align;
  if (size == 0 || size > OBJ_MAX_STRIDE) return -EINVAL;
  if (align == 0) {
    align = size & -size; /* largest power of two dividing size */
    if (align > 16) align = 16;
    if (align < 8) align = 8;
  } else if ((align & (align - 1)) != 0 || align > OBJ_SEG_SIZE) {
    return -EINVAL;
  } else if (align < 8) {
    align = 8; /* a free object holds the free-list link: a smaller stride step misaligns it */
  }
  unsigned prot = opts->prot ? opts->prot : MA_PROT_READ | MA_PROT_WRITE;
  if (prot & ~(unsigned)(MA_PROT_READ | MA_PROT_WRITE | MA_PROT_EXEC)) return -EINVAL;
  if ((prot & (MA_PROT_READ | MA_PROT_WRITE)) != (MA_PROT_READ | MA_PROT_WRITE)) return -EINVAL;
  if (opts->map_flags & ~(unsigned)POOL_FLAGS) return -EINVAL;
  if ((prot & MA_PROT_EXEC) && !(opts->map_flags & MA_MAP_JIT)) return -EPERM;
  size_t stride = size < 16 ? 16 : size;
  stride = (stride + align - 1) & ~(align - 1);

  pthread_once(&key_once, key_init);
  if (key_err) return -ENOMEM;
  ma_pool *p = os_alloc(sizeof *p, 0, false);
  if (!p) return -ENOMEM;
  bool populate = opts->commit || (opts->map_flags & MA_MAP_POPULATE);
  int rc = obj_space_init(&p->space, prot, opts->map_flags & ~(unsigned)MA_MAP_POPULATE, populate,
                          opts->max_bytes, "mapalloc-pool");
  if (rc) {
    os_release_owned_rw(p, sizeof *p);
    return rc;
  }
  if (opts->zero) p->space.map_tag = OBJ_MAP_POOL_SLOW; /* see obj_slab_push */
  p->obj_size = size;
  p->stride = (uint32_t)stride;
  p->align = (uint32_t)align;
  p->zero = opts->zero;
  p->slot = POOL_NONE;
  pthread_mutex_lock(&pools_lock);
  p->uid = next_uid++;
  for (uint32_t w = 0; w < POOL_SLOTS / 64 && p->slot == POOL_NONE; w++) {
    if (~slots_used[w]) {
      uint32_t b = (uint32_t)__builtin_ctzll(~slots_used[w]);
      slots_used[w] |= (uint64_t)1 << b;
      p->slot = w * 64 + b;
    }
  }
  bool fast = !p->zero && !obj_tracking && p->slot != POOL_NONE;
  p->fslot = p->slot == POOL_NONE ? 0 : p->slot;
  p->uid_fast = fast ? p->uid : ~(uint64_t)0;
  p->prev = NULL;
  p->next = pools;
  if (pools) pools->prev = p;
  pools = p;
  pthread_mutex_unlock(&pools_lock);
  *out = p;
  return 0;
}

/* The fast paths below are written out by hand (no spills, one exit to a noinline slow
 * path): a TLS slot lookup and a pop; a map check, a slab lookup, an exact-block check and
 * a push. Everything else (zero pools, valgrind, foreign pointers, remote frees, misuse)
 * goes to the slow paths. */

static __attribute__((noinline)) void *pool_alloc_slow(ma_pool *p) {
  if (p == NULL) {
    errno = EINVAL;
    return NULL;
  }
  obj_bins *bs = pool_bins_last(p);
  if (obj_unlikely(bs == NULL)) return NULL;
  void *o;
  if (obj_unlikely(obj_tracking))
    o = obj_bin_alloc_tracked(bs, bs->bins, p->obj_size, p->zero);
  else if (p->zero)
    o = obj_bin_alloc_zero(bs, bs->bins);
  else
    o = obj_bin_alloc(bs, bs->bins);
  if (obj_likely(o != NULL)) obj_stat_inc(&bs->allocs);
  return o;
}

void *ma_pool_alloc(ma_pool *p) {
  if (obj_likely(p != NULL && tls_last.uid == p->uid_fast)) {
    obj_bins *bs = tls_last.bins;
    obj_bin *bin = &bs->bins[0];
    if (obj_likely(bin->cur->free != NULL)) {
      void *o = obj_bin_take(bin); /* NULL: a link out of its chunk, checked on the slow path */
      if (obj_likely(o != NULL)) {
        obj_stat_inc(&bs->allocs); /* one add to memory, as a plain ++ */
        return o;
      }
    }
  }
  return pool_alloc_slow(p);
}

static __attribute__((noinline, noreturn)) void bad_free(ma_pool *p, obj_segment *seg, void *obj) {
  if (!seg) obj_fatal("invalid free (not a pool object)", obj);
  if (seg->space != &p->space) obj_fatal("free of another pool's object", obj);
  obj_slab *s = obj_slab_of(seg, obj);
  if (!s->active || (uintptr_t)obj < (uintptr_t)s->start ||
      (uintptr_t)obj >= (uintptr_t)s->start + (size_t)obj_slab_carved(s) * s->stride)
    obj_fatal("invalid free (not a live object)", obj);
  obj_fatal("invalid free (interior pointer)", obj);
}

/* ma_pool_free never changes errno (a purge's or an unmap's failure, or a cache that cannot
 * be made, would set it): the slow paths save and restore it. */
static __attribute__((noinline)) void pool_free_slow(ma_pool *p, void *obj) {
  if (obj == NULL) return;
  int saved = errno;
  if (p == NULL) obj_fatal("invalid free (NULL pool)", obj);
  obj_segment *seg = obj_segment_of(obj);
  if (seg == NULL || seg->space != &p->space) bad_free(p, seg, obj);
  obj_slab *s = obj_slab_of(seg, obj);
  uint32_t idx;
  if (!obj_block_index(s, obj, &idx)) bad_free(p, seg, obj);
  /* Count the free on this thread's cache (made if need be) before the block goes: the
   * free may release the segment. Without a cache (ENOMEM) the count is lost. */
  obj_bins *mine = pool_bins_last(p);
  if (mine) obj_stat_inc(&mine->frees);
  if (obj_tracking)
    obj_free_tracked(seg, s, obj, p->obj_size);
  else
    obj_free(mine, seg, s, obj);
  errno = saved;
}

/* A validated object whose slab another thread owns (or valgrind tracks). */
static __attribute__((noinline)) void pool_free_other(ma_pool *p, obj_segment *seg, obj_slab *s,
                                                      void *obj) {
  int saved = errno;
  obj_bins *mine = pool_bins_last(p);
  if (mine) obj_stat_inc(&mine->frees);
  if (obj_tracking)
    obj_free_tracked(seg, s, obj, p->obj_size);
  else if (mine)
    obj_free_remote(mine, seg, s, (obj_block *)obj);
  else
    obj_free_remote_now(seg, s, (obj_block *)obj);
  errno = saved;
}

void ma_pool_free(ma_pool *p, void *obj) {
  uintptr_t a = (uintptr_t)obj;
  obj_segment *seg = obj_segment_of_tagged(obj, OBJ_MAP_POOL);
  /* A NULL pool fails the space compare (done on integers: &p->space of a NULL p would be
   * undefined). */
  if (obj_likely(seg != NULL)) {
    if (obj_likely((uintptr_t)seg->space == (uintptr_t)p + offsetof(ma_pool, space))) {
      obj_slab *s = obj_slab_of(seg, obj);
      obj_block *b = obj;
      if (obj_unlikely(obj_block_q(s, a) >= obj_slab_carved(s))) goto slow;
      if (obj_unlikely(!obj_is_local(s))) {
        pool_free_other(p, seg, s, obj);
        return;
      }
      obj_link_open(b);
      if (obj_likely(!obj_block_is_free(b))) {
        obj_stat_inc(&seg->owner->frees);
        obj_slab_push(s, b);
        return;
      }
    }
  }
slow:
  pool_free_slow(p, obj);
}

int ma_pool_trim(ma_pool *p) {
  if (!p) return -EINVAL;
  __atomic_add_fetch(&p->space.trim_epoch, 1, __ATOMIC_RELAXED);
  obj_bins *bs = pool_bins_peek(p);
  if (bs) { /* first: sends this thread's batches to caches the space trim then files */
    bs->trim_seen = __atomic_load_n(&p->space.trim_epoch, __ATOMIC_RELAXED);
    obj_bins_trim(bs);
  }
  obj_space_trim(&p->space);
  (void)os_release_retry(); /* unmaps the kernel refused earlier (map count limit) */
  return 0;
}

void ma_pool_stats_get(ma_pool *p, ma_pool_stats *out) {
  if (!p || !out) return;
  size_t allocs = 0, frees = 0;
  pthread_mutex_lock(&p->space.lock);
  for (obj_bins *bs = p->space.all_bins; bs; bs = bs->next_all) {
    allocs += __atomic_load_n(&bs->allocs, __ATOMIC_RELAXED);
    frees += __atomic_load_n(&bs->frees, __ATOMIC_RELAXED);
  }
  pthread_mutex_unlock(&p->space.lock);
  memset(out, 0, sizeof *out);
  out->obj_size = p->obj_size;
  out->allocs = allocs;
  out->frees = frees;
  out->live = allocs >= frees ? allocs - frees : 0;
  out->capacity = __atomic_load_n(&p->space.capacity, __ATOMIC_RELAXED);
  out->committed_bytes = __atomic_load_n(&p->space.committed, __ATOMIC_RELAXED);
  out->reserved_bytes = __atomic_load_n(&p->space.reserved, __ATOMIC_RELAXED);
}

void ma_pool_destroy(ma_pool *p) {
  if (!p) return;
  pthread_mutex_lock(&pools_lock);
  if (p->prev)
    p->prev->next = p->next;
  else
    pools = p->next;
  if (p->next) p->next->prev = p->prev;
  if (p->slot != POOL_NONE) slots_used[p->slot / 64] &= ~((uint64_t)1 << (p->slot % 64));
  pthread_mutex_unlock(&pools_lock);
  obj_space_destroy(&p->space);
  os_release_owned_rw(p, sizeof *p);
}

int ma_pool_check(ma_pool *p) {
  if (!p) return -EINVAL;
  int saved = errno;
  uintptr_t self = obj_tid();
  obj_check_totals t = {0};
  size_t skipped = 0, forked = 0;
  /* trim_lock: no trim claims a parked cache meanwhile; lock: no thread takes one over. */
  pthread_mutex_lock(&p->space.trim_lock);
  pthread_mutex_lock(&p->space.lock);
  for (obj_bins *bs = p->space.all_bins; bs; bs = bs->next_all) {
    MA_VERIFY(bs->space == &p->space && bs->nbins == 1 && bs->bins[0].stride == p->stride,
              "pool %p: cache %p of space %p, %u bins, stride %u (pool's %u)", (void *)p,
              (void *)bs, (void *)bs->space, bs->nbins, bs->bins[0].stride, p->stride);
    if (bs->in_use && bs->tid == OBJ_TID_FORKED) { /* left behind by a fork: maybe torn */
      forked++;
      continue;
    }
    if (bs->in_use && bs->tid != self) { /* another thread's cache: it runs without a lock */
      skipped++;
      continue;
    }
    obj_bins_check(bs, &t);
  }
  /* The space's totals count the caches a fork left behind, whose state the walk skips. */
  if (skipped == 0 && forked == 0) {
    size_t reserved = __atomic_load_n(&p->space.reserved, __ATOMIC_RELAXED);
    size_t committed = __atomic_load_n(&p->space.committed, __ATOMIC_RELAXED);
    size_t capacity = __atomic_load_n(&p->space.capacity, __ATOMIC_RELAXED);
    MA_VERIFY(reserved == t.reserved, "pool %p reserved %zu, its segments %zu", (void *)p, reserved,
              t.reserved);
    MA_VERIFY(committed == t.committed, "pool %p committed %zu, headers and slabs %zu", (void *)p,
              committed, t.committed);
    MA_VERIFY(capacity == t.capacity, "pool %p capacity %zu, active slabs hold %zu", (void *)p,
              capacity, t.capacity);
  }
  size_t committed = __atomic_load_n(&p->space.committed, __ATOMIC_RELAXED);
  MA_VERIFY(p->space.max_bytes == 0 || committed <= p->space.max_bytes,
            "pool %p committed %zu > max_bytes %zu", (void *)p, committed, p->space.max_bytes);
  pthread_mutex_unlock(&p->space.lock);
  pthread_mutex_unlock(&p->space.trim_lock);
  errno = saved;
  return skipped ? -EBUSY : 0;
}
