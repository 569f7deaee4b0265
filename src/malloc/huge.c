/* Large blocks (> 128 KiB or over-aligned): one mapping each, straight from the page layer.
 *
 * Each block is recorded in a side table (open addressing keyed by its address, in 16
 * stripes by address with a lock each), so a block needs no header (page-aligned requests
 * cost no extra page) and a pointer we did not map is recognised. A thread's freed blocks up
 * to 4 MiB wait in its stash (its heap's, "a thread's stash" below) for its next large
 * allocations; what the stash does not take goes to the cache, which has a lock of its own.
 * No system call runs under any of these locks: mappings, unmaps, mremap and the secure
 * build's guard changes happen with the pages in neither the table, a stash nor the cache
 * (or, for a block being resized, its record unchanged until the change is done and found
 * again by its address afterwards).
 *
 * Freed blocks go to a cache of faulted-in page ranges (huge_cache.c: at most HUGE_CACHE_N
 * ranges and HUGE_CACHE_MIN_BYTES plus the live large bytes, every operation O(1) in the
 * number of ranges) for MAPALLOC_PURGE_DELAY_MS; expired ranges are unmapped at the next
 * large-block operation or heap slow path, all of them on ma_heap_collect(true) /
 * malloc_trim. A range is a piece of one mapping (its `map` id):
 * - an allocation takes the front of a smallest range that fits (split, no system call);
 * - a freed block merges with the cached ranges of its mapping next to it;
 * - a growing block takes exactly the cached pages right behind it (in place), else it is
 *   copied to the front of the largest range that fits (the rest of that range then lies
 *   behind it) when the growth is at least a quarter of the block, else mremap moves its
 *   pages (a new mapping, with slack as address space only);
 * - a small block that grows past 128 KiB starts at the front of the largest range.
 * In mstress (vectors regrown by realloc to 8 MiB) that turned 1.95M page faults into ~65k,
 * as many as mimalloc, which keeps such blocks in its segments. */
#include <pthread.h>
#include <string.h>

#include "malloc/heap_internal.h"
#include "malloc/huge_cache.h"
#include "obj/obj_check.h"
#include "os/os.h"

typedef struct huge_rec {
  uintptr_t ptr; /* 0 = empty slot */
  size_t len;    /* mapped read-write bytes = usable size */
  size_t align;  /* > page size: must not be moved by mremap */
  uint64_t map;  /* id of the mapping (one kernel VMA) the block was carved from */
  size_t guard;  /* secure: an inaccessible page after the block (part of the mapping) */
  bool marker;   /* the guard is a guard marker in the block's mapping, not a PROT_NONE one */
  bool grows;    /* realloc made it, or grew it: freed, it goes to the cache (not a stash) */
} huge_rec;

#define HUGE_CACHE_MAX_BLOCK ((size_t)32 << 20)
/* A block the cache cannot serve is cut from a fresh mapping of at least
 * MAPALLOC_LARGE_CHUNK bytes (32 MiB; address space: only the pages a block touches are
 * faulted in), the rest cached as a range of the same mapping. Blocks cut from one mapping
 * merge when freed, so the cache holds a few large ranges instead of many exact ones, and a
 * larger request later fits: medium-8M (2 threads, buffers of 128 KiB..8 MiB) made 156 mmap
 * and 529 munmap calls with a mapping per block, 34 and 49 with chunks; mimalloc, whose
 * segments work this way, 27 and none. Returns the bytes to map: the block, its guard page
 * (secure) and the rest. Not for over-aligned blocks, nor for guarded ones where guards
 * are PROT_NONE mappings of their own (a mapping each), nor with a purge delay of 0
 * (nothing is cached). */
static size_t huge_chunk(size_t len, size_t a, size_t g) {
  size_t c = heap_opt.large_chunk > 0 ? (size_t)heap_opt.large_chunk : 0;
  if (c > HUGE_CACHE_MAX_BLOCK) c = HUGE_CACHE_MAX_BLOCK;
  c &= ~(os_page_size() - 1);
  bool guard_inside = g == 0 || os_guard_supported(); /* a marker splits no mapping */
  bool chunked = len + g < c && a == 0 && guard_inside && heap_opt.purge_delay_ms != 0;
  /* (under RLIMIT_AS the rest of a chunk is address space the program may need: a python3
   * that starts 8 threads under `ulimit -v 200000` could not, for a chunk's 30 MiB) */
  return chunked && !obj_space_tight() ? c : len + g;
}
#define HUGE_CACHE_MIN_BYTES ((size_t)64 << 20)
#define HUGE_WINDOW_CROWDING 8 /* most purge delays a window of the cache's demand lasts */

/* Adaptive where glibc has it: the sections under these locks are short (no system call),
 * so a waiter spins a little before it sleeps; with a plain mutex two threads using medium
 * blocks made a futex call per 12 operations (medium-8M: 3438 in 41846). */
#ifdef PTHREAD_ADAPTIVE_MUTEX_INITIALIZER_NP
#define HUGE_MUTEX_INIT PTHREAD_ADAPTIVE_MUTEX_INITIALIZER_NP
#else
#define HUGE_MUTEX_INIT PTHREAD_MUTEX_INITIALIZER
#endif

/* The block table in stripes by address, a lock each: threads that free or allocate
 * different blocks rarely meet on one (with one lock over table and cache, two threads
 * using 128..512 KiB buffers spent 27% of their time in pthread_mutex_lock/unlock). A
 * stripe's table starts in static memory (HUGE_TAB0 slots: no mapping can fail on the way
 * back of a moved block, see huge_record_moved) and is grown into mapped memory. */
#define HUGE_STRIPE_BITS 4
#define HUGE_STRIPES     (1u << HUGE_STRIPE_BITS)
#define HUGE_TAB0        256
#define HUGE_RECENT      16

typedef struct huge_stripe {
  pthread_mutex_t lock;
  huge_rec *tab;
  size_t cap, count, allocs, frees;
  size_t bytes;                  /* of its blocks (written under the lock, read relaxed by all) */
  size_t out, out_bytes;         /* blocks out of the table during a realloc's mremap (counted in
                                    count and bytes) */
  uintptr_t recent[HUGE_RECENT]; /* recently freed blocks: a double free or an invalid one */
  unsigned recent_next;
} __attribute__((aligned(64))) huge_stripe;

static huge_stripe huge_stripes[HUGE_STRIPES] = {
    [0 ... HUGE_STRIPES - 1] = {.lock = HUGE_MUTEX_INIT}};
static huge_rec huge_tab0[HUGE_STRIPES][HUGE_TAB0];

/* The cache of freed ranges (huge_cache.c) has a lock of its own, taken after a stripe's
 * when both are held (and after a heap's: h->lock, stripe, cache). */
static pthread_mutex_t huge_cache_lock = HUGE_MUTEX_INIT;

static _Atomic uint64_t huge_map_ids; /* last mapping id handed out */
static bool huge_tight;               /* (atomic) near RLIMIT_AS: freed pages are not cached */

static huge_stripe *huge_stripe_of(uintptr_t p) {
  return &huge_stripes[((p >> 12) * 0x9E3779B97F4A7C15ull) >> (64 - HUGE_STRIPE_BITS)];
}

static size_t huge_hash(uintptr_t p, size_t cap) {
  return (size_t)(((p >> 12) * 0x9E3779B97F4A7C15ull) >> 20) & (cap - 1);
}

static size_t huge_find(const huge_stripe *st, uintptr_t p) {
  if (!st->cap) return SIZE_MAX;
  for (size_t i = huge_hash(p, st->cap);; i = (i + 1) & (st->cap - 1)) {
    if (st->tab[i].ptr == p) return i;
    if (st->tab[i].ptr == 0) return SIZE_MAX;
  }
}

static void huge_put(huge_rec *tab, size_t cap, huge_rec r) {
  size_t i = huge_hash(r.ptr, cap);
  while (tab[i].ptr) i = (i + 1) & (cap - 1);
  tab[i] = r;
}

static void huge_bytes_add(huge_stripe *st, size_t add, size_t sub) {
  __atomic_store_n(&st->bytes, st->bytes + add - sub, __ATOMIC_RELAXED);
}

/* Grows st's table to keep it at most half full; st->lock held, let go while the new table
 * is mapped and the old one unmapped (no system call under the lock), so the caller holds
 * no slot index across it. */
static bool huge_reserve_slot(huge_stripe *st) {
  if (!st->cap) {
    st->tab = huge_tab0[st - huge_stripes];
    st->cap = HUGE_TAB0;
  }
  while ((st->count + 1) * 2 > st->cap) {
    size_t ncap = st->cap * 2;
    int saved = errno;
    pthread_mutex_unlock(&st->lock);
    huge_rec *nt = os_alloc(ncap * sizeof(huge_rec), 0, false);
    if (nt) os_name(nt, ncap * sizeof(huge_rec), "mapalloc-meta");
    pthread_mutex_lock(&st->lock);
    errno = saved;
    if (!nt) return false;
    huge_rec *old = nt;
    size_t old_cap = ncap;
    if (st->cap < ncap) { /* (else another thread grew it meanwhile: nt goes) */
      for (size_t i = 0; i < st->cap; i++)
        if (st->tab[i].ptr) huge_put(nt, ncap, st->tab[i]);
      old = st->tab;
      old_cap = st->cap;
      st->tab = nt;
      st->cap = ncap;
    }
    if (old != huge_tab0[st - huge_stripes]) {
      pthread_mutex_unlock(&st->lock);
      os_release_owned_rw(old, old_cap * sizeof(huge_rec));
      pthread_mutex_lock(&st->lock);
      errno = saved;
    }
  }
  return true;
}

/* Removes slot i, shifting back the entries of its probe chain; st->lock held. */
static void huge_remove_at(huge_stripe *st, size_t i) {
  obj_probe_delete(st->tab, sizeof *st->tab, st->cap, i, huge_hash);
  st->count--;
}

/* Records block r in st (a slot reserved; st->lock held); `alloc`: counted as an
 * allocation (not a block moved by realloc). */
static void huge_record(huge_stripe *st, huge_rec r, bool alloc) {
  huge_put(st->tab, st->cap, r);
  for (unsigned k = 0; k < HUGE_RECENT; k++)
    if (st->recent[k] == r.ptr) st->recent[k] = 0;
  st->count++;
  st->allocs += alloc;
  huge_bytes_add(st, r.len, 0);
}

/* Records block r in its stripe; false (nothing recorded) when the table could not grow. */
static bool huge_record_new(huge_rec r, bool alloc) {
  huge_stripe *st = huge_stripe_of(r.ptr);
  pthread_mutex_lock(&st->lock);
  bool ok = huge_reserve_slot(st);
  if (ok) huge_record(st, r, alloc);
  pthread_mutex_unlock(&st->lock);
  return ok;
}

/* Takes block p's record out of its stripe (into *r); false when p is no block of ours.
 * `freed`: counted as a free and remembered (a second free of p is then a double free). */
static bool huge_unrecord(uintptr_t p, bool freed, huge_rec *r) {
  huge_stripe *st = huge_stripe_of(p);
  pthread_mutex_lock(&st->lock);
  size_t i = huge_find(st, p);
  if (i == SIZE_MAX) {
    pthread_mutex_unlock(&st->lock);
    return false;
  }
  *r = st->tab[i];
  huge_remove_at(st, i);
  huge_bytes_add(st, 0, r->len);
  st->recent[st->recent_next++ % HUGE_RECENT] = p;
  st->frees += freed;
  pthread_mutex_unlock(&st->lock);
  return true;
}

/* Whether p was freed lately (its stripe remembers the last HUGE_RECENT frees). */
static bool huge_freed_lately(uintptr_t p) {
  huge_stripe *st = huge_stripe_of(p);
  bool again = false;
  pthread_mutex_lock(&st->lock);
  for (unsigned k = 0; k < HUGE_RECENT; k++) again |= st->recent[k] == p;
  pthread_mutex_unlock(&st->lock);
  return again;
}

/* A copy of block p's record; false when p is no block of ours. */
static bool huge_lookup(uintptr_t p, huge_rec *r) {
  huge_stripe *st = huge_stripe_of(p);
  pthread_mutex_lock(&st->lock);
  size_t i = huge_find(st, p);
  if (i != SIZE_MAX) *r = st->tab[i];
  pthread_mutex_unlock(&st->lock);
  return i != SIZE_MAX;
}

/* Block p (record r before) is `len` bytes now, its guard a marker or not. */
static void huge_update(uintptr_t p, const huge_rec *r, size_t len, bool marker) {
  huge_stripe *st = huge_stripe_of(p);
  pthread_mutex_lock(&st->lock);
  size_t i = huge_find(st, p);
  MA_VERIFY(i != SIZE_MAX, "large block %#lx left the table while it was resized",
            (unsigned long)p);
  st->tab[i].len = len;
  st->tab[i].marker = marker;
  st->tab[i].grows |= len > r->len;
  huge_bytes_add(st, len, r->len);
  pthread_mutex_unlock(&st->lock);
}

static size_t huge_round(size_t size) {
  size_t ps = os_page_size();
  if (size > (size_t)PTRDIFF_MAX) return 0;
  size_t len = (size + ps - 1) & ~(ps - 1);
  return len ? len : ps;
}

/* Bytes of all live large blocks (relaxed: a bound, not an account). */
static size_t huge_live_bytes(void) {
  size_t n = 0;
  for (unsigned k = 0; k < HUGE_STRIPES; k++)
    n += __atomic_load_n(&huge_stripes[k].bytes, __ATOMIC_RELAXED);
  return n;
}

static uint64_t huge_delay(void) {
  return heap_opt.purge_delay_ms < 0 ? UINT64_MAX / 2 : (uint64_t)heap_opt.purge_delay_ms;
}

/* The cache's demand (huge_cache_demand) when the current purge window began, and over the
 * window before; a window lasts a purge delay (huge_cache_lock). */
static huge_demand huge_window_start, huge_window_prev;
static uint64_t huge_window_since;

/* What the cache was asked for over the current or the last purge window (the larger of
 * each); nothing once a purge delay has passed without a request. A window lasts a purge
 * delay times the running threads per core (at most HUGE_WINDOW_CROWDING): each thread runs
 * that much less of a delay, and its requests, which the window's sums stand for, come that
 * much more slowly (16 threads on 2 cores: mstress's misses over 100 ms kept a cap that
 * evicted what the threads asked for again a turn later). huge_cache_lock held. */
static huge_demand huge_cache_recent(void) {
  uint64_t now = obj_now_ms(), delay = huge_delay();
  huge_demand d = huge_cache_demand();
  uint64_t window = delay > UINT32_MAX ? delay : delay * heap_crowding(HUGE_WINDOW_CROWDING);
  if (now - huge_window_since >= window) {
    huge_window_prev =
        (huge_demand){d.asked - huge_window_start.asked, d.missed - huge_window_start.missed, 0};
    huge_window_start = d;
    huge_window_since = now;
  }
  if (now - d.last_ms >= delay) return (huge_demand){0, 0, 0};
  huge_demand cur = {d.asked - huge_window_start.asked, d.missed - huge_window_start.missed, 0};
  if (cur.asked < huge_window_prev.asked) cur.asked = huge_window_prev.asked;
  if (cur.missed < huge_window_prev.missed) cur.missed = huge_window_prev.missed;
  return cur;
}

/* How the cache is bounded now (huge_cache_lock held): `keep`, the expired bytes the expiry
 * keeps, is what the program asked of the cache lately: a delay alone drops the oldest
 * ranges however soon they would be asked for again, and 16 threads running mstress on 2
 * cores (a working set 8 times larger, each range asked for again 8 times later) had their
 * faulted pages unmapped and faulted in again. The cap is HUGE_CACHE_MIN_BYTES plus as much
 * as the live large blocks, or as the takes that found nothing to fit lately when that is
 * more (pages the program had to map afresh, which a larger cache would have served): a
 * program that replaces or regrows its large blocks needs about as many free pages as it
 * has live ones (mstress: 64 MiB live, a 64 MiB cap evicted 1.2 GiB that was faulted in
 * again), and more when it asks for them faster than it frees them in order (mstress asks
 * 300-700 MiB a window with 200 MiB live at 16 threads). A quarter of `keep` instead made
 * mstress as fast with 1.3x the peak RSS. A multiple of pages: the cap cuts ranges. The
 * expiry still empties the cache once the program stops asking (docs/internals.md). */
typedef struct huge_bounds {
  size_t keep, cap;
} huge_bounds;
static huge_bounds huge_cache_bounds(void) {
  huge_demand d = huge_cache_recent();
  size_t live = huge_live_bytes(), more = d.missed & ~(os_page_size() - 1);
  return (huge_bounds){d.asked, HUGE_CACHE_MIN_BYTES + (more > live ? more : live)};
}

size_t huge_cache_purge(bool all) {
  if (huge_cache_count_relaxed() == 0) return 0;
  uint64_t now = obj_now_ms();
  if (!all && now < huge_cache_next_expiry()) return 0;
  huge_victims v = {0};
  pthread_mutex_lock(&huge_cache_lock);
  huge_cache_expire(all, now, huge_delay(), huge_cache_recent().asked, &v);
  pthread_mutex_unlock(&huge_cache_lock);
  huge_victims_unmap(&v);
  return v.bytes;
}

/* Releases pages no block uses any more: into the cache when they may be reused (not
 * over-aligned), else to v, to be unmapped once the lock is let go. `mark`: 0 or a guard
 * marker inside c that stays (secure). huge_cache_lock held. */
static void huge_uncommit_locked(huge_cached c, uintptr_t mark, bool cacheable, huge_victims *v) {
  if (cacheable && c.len <= HUGE_CACHE_MAX_BLOCK && heap_opt.purge_delay_ms != 0 &&
      !__atomic_load_n(&huge_tight, __ATOMIC_RELAXED)) {
    huge_bounds b = huge_cache_bounds();
    huge_cache_put(c, mark, obj_now_ms(), huge_delay(), b.cap, b.keep, v);
  } else {
    huge_victim_add(v, c.ptr, c.len);
  }
}

/* As huge_uncommit_locked; the lock is released on return (the unmaps run outside it). */
static void huge_uncommit_unlock(huge_cached c, uintptr_t mark, bool cacheable) {
  huge_victims v = {0};
  huge_uncommit_locked(c, mark, cacheable, &v);
  pthread_mutex_unlock(&huge_cache_lock);
  huge_victims_unmap(&v);
}

/* Whether r's pages may go to the cache when it is freed: not over-aligned, and no guard
 * page or a guard marker (which stays, in the cache's marker set). A PROT_NONE guard is a
 * mapping of its own, which the cache's splits and merges would have to move. */
static bool huge_cacheable(const huge_rec *r) {
  return r->align == 0 && (r->guard == 0 || r->marker);
}

/* Takes the guard marker out of the page after block r (nothing to do without one), so that
 * the page can be cached and reused; errno kept. False when the kernel refused: the range
 * must then be unmapped, never cached. */
static bool huge_unguard(const huge_rec *r) {
  if (!r->marker) return true;
  int saved = errno;
  bool ok = os_guard_remove((char *)r->ptr + r->len, r->guard) == 0;
  errno = saved;
  return ok;
}

/* Caches (or unmaps) the pages [at, at + len) that end with block r's guard page: a
 * marker there stays, listed in the cache's marker set (so that a block whose guard page
 * lands on it later needs no madvise), unless the set is full or the pages are that page
 * alone (a cached range never starts with a marker): it then comes out first, outside the
 * lock. A PROT_NONE guard page alone is unmapped as it is. No lock held. */
static void huge_release_pages(huge_rec r, uintptr_t at, size_t len) {
  huge_cached c = {at, len, 0, r.map};
  bool cacheable = huge_cacheable(&r);
  if (r.guard && !r.marker && len <= r.guard) {
    (void)os_release_owned((void *)at, len);
    return;
  }
  uintptr_t mark = r.marker ? r.ptr + r.len : 0;
  pthread_mutex_lock(&huge_cache_lock);
  if (mark && (len <= r.guard || !huge_cache_mark_room())) {
    pthread_mutex_unlock(&huge_cache_lock);
    cacheable = huge_unguard(&r);
    mark = 0;
    if (!cacheable) { /* the marker stays in: the pages go as they are */
      (void)os_release_owned((void *)at, len);
      return;
    }
    pthread_mutex_lock(&huge_cache_lock);
  }
  huge_uncommit_unlock(c, mark, cacheable);
}

/* Secure mode: an inaccessible page after each large block, so a linear overflow off its
 * end (past the usable size) faults at once. With guard markers a block and its guard come
 * from the cache like any block: a freed block's marker stays in the cache, a block is
 * placed so that its guard page lands on one when it can (no madvise), else gets a marker
 * put in, and the markers left inside it come out (a madvise each, where a fresh mapping
 * costs a page fault per page touched). PROT_NONE guards bypass the cache. */
static size_t huge_guard(void) {
  return obj_secure_on() ? os_page_size() : 0;
}

/* Makes the guard page at `at` inaccessible: a guard marker (MADV_GUARD_INSTALL) where the
 * kernel has them, so that a block stays one mapping and vm.max_map_count is not reached
 * at half the blocks; else a PROT_NONE page, a mapping of its own (old kernels, locked
 * mappings). Returns 1 for a marker, 0 for PROT_NONE, -1 when neither worked. */
static int huge_guard_put(char *at, size_t guard) {
  if (os_guard_install(at, guard) == 0) return 1;
  return os_protect(at, guard, MA_PROT_NONE) == 0 ? 0 : -1;
}

/* Readies a piece taken from the cache (huge_cache_take, _absorb) for a block whose guard
 * page is the last `g` bytes of [.., end): takes out the markers left inside it and puts
 * one on the guard page when none is there. errno kept. False when the kernel refused one
 * of them: the piece must then be unmapped (huge_drop_piece), never used or cached. */
static bool huge_ready_piece(const huge_marks *m, uintptr_t end, size_t g) {
  int saved = errno;
  bool ok = true;
  for (size_t k = 0; k < m->n && ok; k++)
    ok = os_guard_remove((void *)m->rm[k], os_page_size()) == 0;
  if (ok && g && !m->guard_kept) ok = os_guard_install((void *)(end - g), g) == 0;
  errno = saved;
  return ok;
}

/* Unmaps a piece taken from the cache that could not be readied (a marker may still be in
 * its first page: nothing is written into it). */
static void huge_drop_piece(uintptr_t at, size_t len) {
  (void)os_release_owned((void *)at, len);
}

/* ---- a thread's stash ------------------------------------------------------------------ */

/* A thread keeps the large blocks it freed lately in its heap (huge_stash, h->lock: taken
 * by its owner, and by a purge or a trim from another thread), and its next large
 * allocations come from them without a shared lock: the smallest that holds the request,
 * whole when less than HEAP_MAX_SMALL would be left over (the usable size is then larger;
 * the pages were the old block's and are faulted in), else split, the rest staying; a freed
 * block merges with the stashed pieces of its mapping next to it. A guarded range (secure)
 * is split from its back: the block keeps the range's guard page and its marker (no
 * madvise); the front keeps the page before the block as its own guard page, a plain page
 * that gets its marker only if that front is handed out (one madvise, deferred: a freed
 * block behind it merges with it first, its marker then covering both); a range over
 * HUGE_STASH_SPLIT_GUARDED is reused whole (at most a quarter over) or not at all. Reused
 * only whole, secure wl_medium --max-size 512K spent 18% of its samples in the cache's
 * lock (docs/benchmarks.md: 0.73 -> 0.44 s, 2M 0.98 -> 0.78 s). Blocks up to
 * HUGE_STASH_MAX_BLOCK, HUGE_STASH_N ranges, at most MAPALLOC_LARGE_STASH bytes a thread
 * (8 MiB) and HUGE_STASH_TOTAL over the running threads (64 threads stash 1 MiB each, 512
 * none): the oldest go to the cache to make room. Blocks that realloc made or grew go to the cache
 * when freed; an allocation the stash cannot serve first sends it the ranges stashed
 * HUGE_STASH_AGE_MS ago or more (every range there is smaller than the request; in the cache they
 * merge with their neighbours and serve other sizes), a block growing past it or one that must
 * otherwise move by mremap all of them. Without these rules mstress (vectors regrown by realloc)
 * ran 2.5x slower with 3x the page faults: the faulted pages sat in the stashes while growing
 * blocks went to the cache's largest ranges, unfaulted ones. Sending the whole stash on
 * every miss cost medium-512K a fifth of its gain (0.185 s instead of 0.15). Stashed
 * blocks expire as cached ranges do (purger, trims, ma_heap_collect); a thread's exit
 * sends them to the cache. Two threads replacing buffers of 128..512 KiB (wl_medium
 * --max-size 512K) took 0.15 s instead of 0.28 s (mimalloc 0.16). */
#define HUGE_STASH_MAX_BLOCK ((size_t)4 << 20)
#define HUGE_STASH_MAX       ((size_t)64 << 20)
#define HUGE_STASH_TOTAL     ((size_t)64 << 20)
#define HUGE_STASH_AGE_MS    20
/* Guarded ranges (secure) larger than this are taken whole or not at all: splitting any
 * size made secure medium-8M 1.5x slower (fresh 32 MiB chunks mapped 23 -> 39 a run,
 * page faults 150k -> 270k; why the larger ranges split in the stash starve the cache's
 * large requests was not pinned down), at 1 MiB medium-2M gained half as much. */
#define HUGE_STASH_SPLIT_GUARDED ((size_t)2 << 20)

static size_t huge_stash_cap(void) {
  size_t live = atomic_load_explicit(&heap_live, memory_order_relaxed);
  size_t c = HUGE_STASH_TOTAL / (live ? live : 1);
  size_t opt = heap_opt.large_stash > 0 ? (size_t)heap_opt.large_stash : 0;
  if (opt > HUGE_STASH_MAX) opt = HUGE_STASH_MAX;
  return c < opt ? c : opt;
}

/* The record of stashed range e, to send it to the cache: a range whose guard page has no
 * marker yet is plain pages. */
static huge_rec huge_stashed_rec(const huge_stashed *e) {
  if (e->guard && !e->marked)
    return (huge_rec){e->ptr, e->len + e->guard, 0, e->map, 0, false, false};
  return (huge_rec){e->ptr, e->len, 0, e->map, e->guard, e->guard != 0, false};
}

/* Whether freed block r may wait in a stash: what the cache would take, not too large. */
static bool huge_stashable(const huge_rec *r) {
  return huge_cacheable(r) && !r->grows && r->len <= HUGE_STASH_MAX_BLOCK &&
         heap_opt.purge_delay_ms != 0 && !__atomic_load_n(&huge_tight, __ATOMIC_RELAXED);
}

/* Removes entry k (h->lock held). */
static void huge_stash_remove(huge_stash *s, uint32_t k) {
  __atomic_store_n(&s->bytes, s->bytes - s->e[k].len - s->e[k].guard, __ATOMIC_RELAXED);
  memmove(&s->e[k], &s->e[k + 1], (s->n - k - 1) * sizeof *s->e);
  __atomic_store_n(&s->n, s->n - 1, __ATOMIC_RELAXED);
}

/* Sends blocks taken out of a stash to the cache (no lock held). */
static void huge_stash_release(const huge_stashed *out, uint32_t n) {
  huge_victims v = {0};
  bool locked = false;
  for (uint32_t k = 0; k < n; k++) {        /* the guarded first: their markers may have to come */
    huge_rec r = huge_stashed_rec(&out[k]); /* out before the lock (huge_release_pages) */
    if (r.guard) huge_release_pages(r, r.ptr, r.len + r.guard);
  }
  for (uint32_t k = 0; k < n; k++) {
    huge_rec r = huge_stashed_rec(&out[k]);
    if (r.guard) continue;
    if (!locked) pthread_mutex_lock(&huge_cache_lock); /* one hold for the unguarded */
    locked = true;
    huge_uncommit_locked((huge_cached){r.ptr, r.len, 0, r.map}, 0, true, &v);
  }
  if (locked) pthread_mutex_unlock(&huge_cache_lock);
  huge_victims_unmap(&v);
}

/* Adds an entry as the newest (h->lock held; the caller made room). */
static void huge_stash_add(huge_stash *s, huge_stashed e) {
  s->e[s->n] = e;
  __atomic_store_n(&s->n, s->n + 1, __ATOMIC_RELAXED);
  __atomic_store_n(&s->bytes, s->bytes + e.len + e.guard, __ATOMIC_RELAXED);
}

/* Stashed pieces a and b of one mapping, a right before b, as one range, if they make one:
 * unguarded both, or guarded both with no marker on a's guard page, which then lies inside
 * (b's guard stays the range's). */
static bool huge_stash_join(const huge_stashed *a, const huge_stashed *b, huge_stashed *out) {
  if (a->map != b->map || a->guard != b->guard || (a->guard && a->marked) ||
      a->ptr + a->len + a->guard != b->ptr ||
      a->len + a->guard + b->len + b->guard > HUGE_STASH_MAX)
    return false;
  *out = *b;
  out->ptr = a->ptr;
  out->len = a->len + a->guard + b->len;
  out->expires = a->expires > b->expires ? a->expires : b->expires;
  return true;
}

/* A freed block merges with a stashed piece of its mapping right before or after it (the
 * merged range is the newest): a block split off a stashed one comes back whole. Returns
 * the range to stash (h->lock held). */
static huge_stashed huge_stash_merge(huge_stash *s, huge_stashed c) {
  for (uint32_t k = 0; k < s->n;) {
    const huge_stashed *e = &s->e[k];
    huge_stashed m;
    if (!huge_stash_join(e, &c, &m) && !huge_stash_join(&c, e, &m)) {
      k++;
      continue;
    }
    c = m;
    huge_stash_remove(s, k); /* (then look again: a piece on the other side) */
  }
  return c;
}

/* Puts freed block r into the calling thread's stash, the oldest blocks going to the cache
 * to make room; false when the thread has no heap or r is over its share. */
static bool huge_stash_put(const huge_rec *r) {
  heap *h = heap_get();
  size_t cap = huge_stash_cap();
  if (!h->bs || h->tracking || r->len + r->guard > cap) return false;
  huge_stashed out[HUGE_STASH_N];
  uint32_t nout = 0;
  pthread_mutex_lock(&h->lock);
  huge_stash *s = &h->stash;
  huge_stashed c = {r->ptr, r->len, r->guard, r->map, obj_now_ms() + huge_delay(), r->marker};
  c = huge_stash_merge(s, c);
  while (s->n == HUGE_STASH_N || s->bytes + c.len + c.guard > cap) {
    if (!s->n) { /* merged past the share: the whole range goes to the cache */
      out[nout++] = c;
      c.len = 0;
      break;
    }
    out[nout++] = s->e[0];
    huge_stash_remove(s, 0);
  }
  if (c.len) huge_stash_add(s, c);
  pthread_mutex_unlock(&h->lock);
  huge_stash_release(out, nout);
  heap_purger_poke();
  return true;
}

/* Whether a block of `len` bytes takes all of stashed range e (what would be left is less
 * than a small block's largest class and, if guarded, its guard page; or for a guarded
 * one, at most a quarter of the block), else is split off. */
static bool huge_stash_whole(const huge_stashed *e, size_t len) {
  return e->len - len < HEAP_MAX_SMALL + e->guard || (e->guard && e->len - len <= len / 4);
}

/* Which stashed range a block of `len` bytes (guard `g`) comes from: the smallest that
 * holds it, a guarded one with its marker in before one without (that needs a madvise),
 * a guarded one split only when it is at most HUGE_STASH_SPLIT_GUARDED. HUGE_STASH_N if
 * none. */
static uint32_t huge_stash_pick(const huge_stash *s, size_t len, size_t g) {
  uint32_t best = HUGE_STASH_N;
  for (uint32_t k = 0; k < s->n; k++) {
    const huge_stashed *e = &s->e[k];
    if (e->guard != g || e->len < len) continue;
    if (g && e->len > HUGE_STASH_SPLIT_GUARDED && !huge_stash_whole(e, len)) continue;
    const huge_stashed *b = &s->e[best];
    if (best == HUGE_STASH_N || e->marked > b->marked ||
        (e->marked == b->marked && e->len < b->len))
      best = k;
  }
  return best;
}

/* Takes a block of `len` bytes from stashed range k: all of it (huge_stash_whole), else its
 * front, or its back when guarded (the block keeps the range's guard page; the front's
 * guard page is the one before the block, no marker in yet); the rest stays, as old as it
 * was. h->lock held. */
static huge_stashed huge_stash_cut(huge_stash *s, uint32_t k, size_t len) {
  huge_stashed e = s->e[k], *rest = &s->e[k];
  if (huge_stash_whole(&e, len)) {
    huge_stash_remove(s, k);
    return e;
  }
  if (e.guard) {
    e.ptr += e.len - len;
    rest->len -= len + e.guard;
    rest->marked = false;
  } else {
    rest->ptr += len;
    rest->len -= len;
  }
  e.len = len;
  __atomic_store_n(&s->bytes, s->bytes - len - e.guard, __ATOMIC_RELAXED);
  return e;
}

/* A block of `len` bytes (guard page `g`) from the calling thread's stash, recorded; NULL
 * if none holds it. */
static void *huge_stash_take(size_t len, size_t g) {
  heap *h = heap_thread_heap();
  if (!h || __atomic_load_n(&h->stash.n, __ATOMIC_RELAXED) == 0) return NULL;
  huge_stash *s = &h->stash;
  huge_stashed e = {0};
  pthread_mutex_lock(&h->lock);
  uint32_t k = huge_stash_pick(s, len, g);
  if (k < HUGE_STASH_N) e = huge_stash_cut(s, k, len);
  pthread_mutex_unlock(&h->lock);
  if (!e.ptr) return NULL;
  if (e.guard && !e.marked) { /* a front piece: its guard page gets its marker now */
    int saved = errno;
    e.marked = os_guard_install((void *)(e.ptr + e.len), e.guard) == 0;
    errno = saved;
  }
  huge_rec r = huge_stashed_rec(&e);
  if (r.guard != g || !huge_record_new(r, true)) { /* (no marker, or no table slot: ENOMEM) */
    huge_release_pages(r, r.ptr, r.len + r.guard);
    return NULL;
  }
  return (void *)r.ptr;
}

/* Grows unguarded block r by `need` bytes over the stashed piece of its mapping right
 * behind it in the calling thread's stash (its pages are faulted in): the block's record
 * is the caller's to update. */
static bool huge_stash_absorb(const huge_rec *r, size_t need) {
  heap *h = heap_get();
  if (r->guard || !h->bs || __atomic_load_n(&h->stash.n, __ATOMIC_RELAXED) == 0) return false;
  huge_stash *s = &h->stash;
  bool ok = false;
  pthread_mutex_lock(&h->lock);
  for (uint32_t k = 0; k < s->n && !ok; k++) {
    huge_stashed *e = &s->e[k];
    if (e->ptr != r->ptr + r->len || e->map != r->map || e->guard || e->len < need) continue;
    ok = true;
    if (e->len == need) {
      huge_stash_remove(s, k);
    } else {
      e->ptr += need;
      e->len -= need;
      __atomic_store_n(&s->bytes, s->bytes - need, __ATOMIC_RELAXED);
    }
  }
  pthread_mutex_unlock(&h->lock);
  return ok;
}

/* Moves the stashed ranges that expire at `upto` or before (UINT64_MAX: all) to out
 * (room for HUGE_STASH_N); returns how many. h->lock held. */
static uint32_t huge_stash_drain(huge_stash *s, uint64_t upto, huge_stashed *out) {
  uint32_t n = 0;
  for (uint32_t k = 0; k < s->n;) {
    if (s->e[k].expires <= upto) {
      out[n++] = s->e[k];
      huge_stash_remove(s, k);
    } else {
      k++;
    }
  }
  return n;
}

bool huge_stash_trim(heap *h, bool all, bool wait) {
  if (__atomic_load_n(&h->stash.n, __ATOMIC_RELAXED) == 0) return false;
  if (!wait && pthread_mutex_trylock(&h->lock) != 0) return true;
  if (wait) pthread_mutex_lock(&h->lock);
  huge_stashed out[HUGE_STASH_N];
  uint32_t n = huge_stash_drain(&h->stash, all ? UINT64_MAX : obj_now_ms(), out);
  bool more = h->stash.n != 0;
  pthread_mutex_unlock(&h->lock);
  huge_victims v = {0};
  for (uint32_t k = 0; k < n; k++) /* (a guard marker, if any, goes with the pages) */
    huge_victim_add(&v, out[k].ptr, out[k].len + out[k].guard);
  huge_victims_unmap(&v);
  return more;
}

/* Sends h's stashed ranges put there `age` ms ago or more (UINT64_MAX: all) to the cache:
 * those that expire `age` ms before a range stashed now would. */
static void huge_stash_spill(heap *h, uint64_t age) {
  if (__atomic_load_n(&h->stash.n, __ATOMIC_RELAXED) == 0) return;
  uint64_t upto = age == UINT64_MAX ? UINT64_MAX : obj_now_ms() + huge_delay() - age;
  huge_stashed out[HUGE_STASH_N];
  pthread_mutex_lock(&h->lock);
  uint32_t n = huge_stash_drain(&h->stash, upto, out);
  pthread_mutex_unlock(&h->lock);
  huge_stash_release(out, n);
}

/* The calling thread's (if it has a heap). */
static void huge_stash_spill_own(uint64_t age) {
  heap *h = heap_get();
  if (h->bs) huge_stash_spill(h, age);
}

void huge_stash_flush(heap *h) {
  huge_stash_spill(h, UINT64_MAX);
}

void huge_stash_check(heap *h) {
  size_t ps = os_page_size(), bytes = 0;
  const huge_stash *s = &h->stash;
  MA_VERIFY(s->n <= HUGE_STASH_N, "stash of %u blocks", s->n);
  for (uint32_t k = 0; k < s->n; k++) {
    const huge_stashed *e = &s->e[k];
    huge_rec r;
    MA_VERIFY(e->ptr && (e->ptr & (ps - 1)) == 0 && e->len && (e->len & (ps - 1)) == 0 &&
                  e->len + e->guard <= HUGE_STASH_MAX,
              "stashed block %#lx + %zu", (unsigned long)e->ptr, e->len);
    MA_VERIFY(!huge_lookup(e->ptr, &r), "stashed block %#lx is live", (unsigned long)e->ptr);
    MA_VERIFY(e->guard || !e->marked, "unguarded stashed block %#lx is marked",
              (unsigned long)e->ptr);
    bytes += e->len + e->guard;
  }
  MA_VERIFY(bytes == s->bytes, "stashed blocks hold %zu bytes, the stash says %zu", bytes,
            s->bytes);
}

/* Releases a block that left the table: into the thread's stash, or its pages into the
 * cache (or unmapped). No lock held. */
static void huge_release_block(huge_rec r) {
  if (huge_stashable(&r) && huge_stash_put(&r)) return;
  huge_release_pages(r, r.ptr, r.len + r.guard);
}

/* Takes a block of `len` bytes and its guard page (`g`: 0 or a page, a guard marker) from
 * the cache and records it; NULL when no range fits or a marker could not be taken out or
 * put in. The markers change outside the lock, between the take and the record (the piece
 * is in neither the cache nor the table meanwhile). */
static void *huge_alloc_cached(size_t len, size_t g, bool roomy) {
  huge_cached c;
  huge_marks m;
  pthread_mutex_lock(&huge_cache_lock);
  bool ok = huge_cache_take(len + g, g, roomy, &c, &m);
  pthread_mutex_unlock(&huge_cache_lock);
  if (!ok) return NULL;
  if ((m.n || (g && !m.guard_kept)) && !huge_ready_piece(&m, c.ptr + c.len, g)) {
    huge_drop_piece(c.ptr, c.len); /* (failure path) */
    return NULL;
  }
  if (!huge_record_new((huge_rec){c.ptr, len, 0, c.map, g, g != 0, roomy}, true)) {
    huge_drop_piece(c.ptr, c.len); /* (no table slot: ENOMEM) */
    return NULL;
  }
  return (void *)c.ptr;
}

/* A mapping of `size` bytes aligned to a (0: page) for a block of len bytes at its start,
 * the guard page after the block inaccessible; *marker says how (huge_guard_put). */
static void *huge_map(size_t size, size_t len, size_t a, size_t guard, bool *marker) {
  void *p = os_alloc(size, a, false);
  *marker = false;
  if (!p || !guard) return p;
  int kind = huge_guard_put((char *)p + len, guard);
  if (kind < 0) {
    os_release_owned_rw(p, size);
    return NULL;
  }
  *marker = kind == 1;
  return p;
}

static uint64_t huge_new_map_id(void) {
  return atomic_fetch_add_explicit(&huge_map_ids, 1, memory_order_relaxed) + 1;
}

static void *huge_alloc_at(size_t size, size_t align, bool zero, bool roomy) {
  size_t len = huge_round(size);
  if (!len || len + os_page_size() < len) {
    errno = ENOMEM;
    return NULL;
  }
  size_t ps = os_page_size();
  size_t a = align > ps ? align : 0;
  size_t g = huge_guard();
  bool reuse = a == 0 && (g == 0 || os_guard_supported());
  void *p = reuse && !roomy ? huge_stash_take(len, g) : NULL;
  if (!p && reuse) huge_stash_spill_own(roomy ? UINT64_MAX : HUGE_STASH_AGE_MS);
  if (!p && reuse && huge_cache_count_relaxed()) p = huge_alloc_cached(len, g, roomy);
  if (p) {
    if (zero) memset(p, 0, size);
    return p;
  }
  bool marker;
  size_t chunk = huge_chunk(len, a, g); /* bytes mapped: the block, its guard, the rest */
  p = huge_map(chunk, len, a, g, &marker);
  if (!p && chunk > len + g) p = huge_map(chunk = len + g, len, a, g, &marker); /* RLIMIT_AS */
  if (!p) {
    errno = ENOMEM;
    return NULL;
  }
  if (heap_opt.huge_pages > 0) os_advise(p, chunk, MA_ADV_HUGEPAGE);
  if (heap_opt.huge_pages == 0) os_advise(p, chunk, MA_ADV_NOHUGEPAGE);
  uint64_t map = huge_new_map_id();
  if (!huge_record_new((huge_rec){(uintptr_t)p, len, a, map, g, marker, roomy}, true)) {
    os_release_owned_rw(p, chunk);
    errno = ENOMEM;
    return NULL;
  }
  if (chunk == len + g) return p;
  huge_victims v = {0}; /* the rest of the chunk, cached (or unmapped when over the cap) */
  pthread_mutex_lock(&huge_cache_lock);
  huge_bounds b = huge_cache_bounds();
  huge_cache_put((huge_cached){(uintptr_t)p + len + g, chunk - len - g, 0, map}, 0, obj_now_ms(),
                 huge_delay(), b.cap, b.keep, &v);
  pthread_mutex_unlock(&huge_cache_lock);
  huge_victims_unmap(&v);
  return p;
}

void *huge_alloc(size_t size, size_t align, bool zero) {
  return huge_alloc_at(size, align, zero, false);
}

void *huge_alloc_growing(size_t size) {
  return huge_alloc_at(size, 0, false, true);
}

/* Near RLIMIT_AS freed pages are not cached (their address space is the program's), and
 * what the cache held goes when that starts. Asked outside the locks (obj_space_tight may
 * make system calls). */
static void huge_check_tight(void) {
  bool t = obj_space_tight();
  if (t == __atomic_load_n(&huge_tight, __ATOMIC_RELAXED)) return;
  __atomic_store_n(&huge_tight, t, __ATOMIC_RELAXED);
  if (t) (void)huge_cache_purge(true);
}

bool huge_free(void *p) {
  huge_check_tight();
  huge_rec r;
  if (!huge_unrecord((uintptr_t)p, true, &r)) {
    if (huge_freed_lately((uintptr_t)p)) obj_fatal("double free", p);
    return false;
  }
  huge_release_block(r);
  return true;
}

size_t huge_usable(const void *p) {
  huge_rec r;
  return huge_lookup((uintptr_t)p, &r) ? r.len : 0;
}

/* Moves block p (record r) to the front of the roomiest cached range of `nlen` bytes or
 * more by copying, and caches its pages; NULL when none fits. Worth it when the copy is not
 * much larger than the growth: the growth then costs no page fault, the block's faulted
 * pages stay in use, and the rest of the range lies behind the block for its next growth.
 * A guarded piece's markers change outside the locks (the piece is in neither the cache
 * nor the table meanwhile); the new block is recorded before p's record goes. */
static void *huge_grow_by_copy(void *p, const huge_rec *r, size_t nlen) {
  huge_cached c;
  huge_marks m;
  if (!huge_cacheable(r) || (nlen - r->len) * 4 < r->len) return NULL;
  pthread_mutex_lock(&huge_cache_lock);
  bool ok = huge_cache_take(nlen + r->guard, r->guard, true, &c, &m);
  pthread_mutex_unlock(&huge_cache_lock);
  if (!ok) return NULL;
  if (((m.n || (r->guard && !m.guard_kept)) && !huge_ready_piece(&m, c.ptr + c.len, r->guard)) ||
      !huge_record_new((huge_rec){c.ptr, nlen, 0, c.map, r->guard, r->guard != 0, true}, false)) {
    huge_drop_piece(c.ptr, c.len); /* (failure paths) */
    return NULL;
  }
  memcpy((void *)c.ptr, (const void *)r->ptr, r->len);
  huge_rec old;
  MA_VERIFY(huge_unrecord((uintptr_t)p, false, &old),
            "large block %#lx left the table while it grew", (unsigned long)p);
  huge_release_pages(old, old.ptr, old.len + old.guard);
  return (void *)c.ptr;
}

/* Grows block p (record r) to `nlen` bytes over the cached pages right behind it (already
 * faulted in) when the cache holds them; false when not. A guarded block takes up to a
 * quarter more when that ends it on a marker already in those pages: a marker put in on a
 * faulted-in page zaps it, and the zap flushes the TLB of every CPU the process runs on (an
 * IPI each). A guarded block's marker moves to its new end, outside the locks (the absorbed
 * pages are in neither the cache nor the table meanwhile; p's record stays as it was until
 * the end): the markers inside the absorbed pages and then the old one come out first (if
 * the kernel refuses, those pages are unmapped and the block stays as it was), so that none
 * is ever left inside the block; the new guard page keeps the marker it may hold. */
static bool huge_grow_in_place(void *p, const huge_rec *r, size_t nlen) {
  uintptr_t at = r->ptr + r->len + r->guard;
  huge_marks m;
  size_t need = nlen - r->len;
  if (!huge_cacheable(r)) return false;
  if (huge_stash_absorb(r, need)) {
    huge_update((uintptr_t)p, r, nlen, r->marker);
    return true;
  }
  pthread_mutex_lock(&huge_cache_lock);
  bool ok = huge_cache_absorb(at, r->map, &need, r->guard, nlen / 4, &m);
  pthread_mutex_unlock(&huge_cache_lock);
  if (!ok) return false;
  nlen = r->len + need; /* (more than asked when a marker a little further is the guard) */
  bool marker = r->marker;
  if (r->guard) {
    /* (the markers inside only: the new guard page is made below, with its PROT_NONE
     * fallback) */
    if (!huge_ready_piece(&m, 0, 0) || !huge_unguard(r)) {
      huge_drop_piece(at, need);
      return false;
    }
    marker = m.guard_kept || huge_guard_put((char *)r->ptr + nlen, r->guard) == 1;
  }
  huge_update((uintptr_t)p, r, nlen, marker);
  return true;
}

/* Puts back block r (out of its stripe st during a realloc's mremap) as nr: at its new
 * address, in that address's stripe. A stripe's table is at most half full after every
 * insert and never smaller than HUGE_TAB0, so the block finds a slot even when the table
 * cannot grow now. */
static void huge_record_moved(huge_stripe *st, const huge_rec *r, huge_rec nr) {
  huge_stripe *nst = huge_stripe_of(nr.ptr);
  pthread_mutex_lock(&st->lock);
  st->out--;
  st->out_bytes -= r->len;
  if (nst == st) {
    huge_put(st->tab, st->cap, nr);
    huge_bytes_add(st, nr.len, r->len);
    pthread_mutex_unlock(&st->lock);
    return;
  }
  st->count--;
  huge_bytes_add(st, 0, r->len);
  pthread_mutex_unlock(&st->lock);
  pthread_mutex_lock(&nst->lock);
  if (!huge_reserve_slot(nst))
    MA_VERIFY(nst->count + 1 < nst->cap, "no slot for moved large block %#lx (%zu of %zu)",
              (unsigned long)nr.ptr, nst->count, nst->cap);
  huge_record(nst, nr, false);
  pthread_mutex_unlock(&nst->lock);
}

/* Moves block p (record r) with mremap to `wlen` bytes (slack as address space only).
 * The block leaves the table while its pages move, so that no system call runs under a
 * lock: once the kernel has moved them, another thread may map the old address and must
 * not find it recorded. The record stays counted in its stripe (out) so that putting it
 * back never needs a larger table. A thread that frees or resizes the block meanwhile races
 * with this realloc (undefined behaviour): it finds no block and reports an invalid free.
 * NULL when the kernel could not (p as it was). */
static void *huge_remap(void *p, const huge_rec *r, size_t wlen) {
  huge_stripe *st = huge_stripe_of((uintptr_t)p);
  pthread_mutex_lock(&st->lock);
  size_t i = huge_find(st, (uintptr_t)p);
  MA_VERIFY(i != SIZE_MAX, "large block %#lx left the table while it grew", (unsigned long)p);
  obj_probe_delete(st->tab, sizeof *st->tab, st->cap, i, huge_hash);
  st->out++;
  st->out_bytes += r->len;
  pthread_mutex_unlock(&st->lock);
  void *np = NULL;
  /* MREMAP_MAYMOVE grows in place when it can and moves the pages otherwise. A guarded
   * block gets a page more, which becomes its new guard. A guard marker lies inside the
   * block's mapping: it is removed first (else it would stay inside the grown block) and
   * the mapping remapped whole. A PROT_NONE guard is a mapping of its own: it stays behind
   * and is unmapped. */
  int rc, kind = 0;
  if (r->marker) {
    (void)os_guard_remove((char *)p + r->len, r->guard);
    rc = os_remap(p, r->len + r->guard, wlen + r->guard, r->align == 0, &np);
    if (rc != 0) (void)huge_guard_put((char *)p + r->len, r->guard); /* as it was */
  } else {
    rc = os_remap(p, r->len, wlen + r->guard, r->align == 0, &np);
    if (rc == 0 && r->guard && np != p) os_release_owned((char *)p + r->len, r->guard);
  }
  if (rc == 0 && r->guard) kind = huge_guard_put((char *)np + wlen, r->guard); /* best effort */
  if (rc != 0) {
    huge_record_moved(st, r, *r); /* back as it was */
    return NULL;
  }
  /* Moved: the block is a mapping of its own now. */
  huge_record_moved(st, r,
                    (huge_rec){(uintptr_t)np, wlen, r->align, np == p ? r->map : huge_new_map_id(),
                               r->guard, kind == 1, true});
  return np;
}

/* Resizes huge block p to `size` (> HEAP_MAX_SMALL) in place when it can: shrink by
 * unmapping the tail, grow by what is asked over the cached range behind it (its pages are
 * faulted in already: asking for more would tie them up unused; a guarded block's exception
 * in huge_grow_in_place); otherwise grow
 * by copying into a cached range (huge_grow_by_copy) or with mremap to `want` >= size
 * bytes (moving pages, never copying, unless the block is over-aligned; the slack is
 * address space only). NULL + ENOMEM on failure with p untouched. */
void *huge_realloc(void *p, size_t size, size_t want, bool *moved_out) {
  *moved_out = false;
  size_t nlen = huge_round(size), wlen = huge_round(want);
  if (!nlen || !wlen) {
    errno = ENOMEM;
    return NULL;
  }
  huge_rec r;
  if (!huge_lookup((uintptr_t)p, &r)) obj_fatal("invalid realloc", p);
  if (nlen == r.len) return p;
  int saved = errno;
  if (nlen < r.len) { /* the tail is cached (or unmapped) as a freed block would be */
    /* A guarded block gets its new guard page first; if that fails it keeps its size. The
     * old guard goes with the tail. */
    int kind = r.marker ? 1 : 0;
    if (r.guard) kind = huge_guard_put((char *)p + nlen, r.guard);
    if (kind >= 0) {
      huge_update((uintptr_t)p, &r, nlen, kind == 1);
      huge_release_pages(r, r.ptr + nlen + r.guard, r.len - nlen); /* ends in the old guard */
    }
    errno = saved;
    return p;
  }
  void *q = huge_grow_in_place(p, &r, nlen) ? p : huge_grow_by_copy(p, &r, nlen);
  if (!q && __atomic_load_n(&heap_get()->stash.n,
                            __ATOMIC_RELAXED)) { /* the stash's ranges may hold it, in the cache */
    huge_stash_spill_own(UINT64_MAX);
    q = huge_grow_by_copy(p, &r, nlen);
  }
  if (!q) q = huge_remap(p, &r, wlen);
  errno = saved;
  if (q) {
    *moved_out = q != p;
    return q;
  }
  /* Over-aligned block that cannot grow in place, or a block over two mappings: copy. */
  q = huge_alloc(size, r.align, false);
  if (!q) return NULL;
  memcpy(q, p, r.len);
  huge_free(p);
  *moved_out = true;
  return q;
}

void huge_stats(size_t *count, size_t *bytes, size_t *allocs, size_t *frees, size_t *cached) {
  *count = *bytes = *allocs = *frees = 0;
  for (unsigned k = 0; k < HUGE_STRIPES; k++) {
    huge_stripe *st = &huge_stripes[k];
    pthread_mutex_lock(&st->lock);
    *count += st->count;
    *bytes += st->bytes;
    *allocs += st->allocs;
    *frees += st->frees;
    pthread_mutex_unlock(&st->lock);
  }
  pthread_mutex_lock(&huge_cache_lock);
  *cached = huge_cache_total();
  pthread_mutex_unlock(&huge_cache_lock);
  *cached += heap_stash_bytes();
}

/* Every stripe in order, then the cache (as huge_check). */
static void huge_lock_all(void) {
  for (unsigned k = 0; k < HUGE_STRIPES; k++) pthread_mutex_lock(&huge_stripes[k].lock);
  pthread_mutex_lock(&huge_cache_lock);
}
static void huge_unlock_all(void) {
  pthread_mutex_unlock(&huge_cache_lock);
  for (unsigned k = HUGE_STRIPES; k-- > 0;) pthread_mutex_unlock(&huge_stripes[k].lock);
}

void huge_atfork_prepare(void) {
  huge_lock_all();
}
void huge_atfork_parent(void) {
  huge_unlock_all();
}
void huge_atfork_child(void) {
  huge_unlock_all(); /* the child's thread is the one that locked them */
}

/* ---- consistency checks (obj/obj_check.h) ---------------------------------------------- */

typedef struct huge_cover {
  uintptr_t at; /* covered up to here */
  bool ok;
} huge_cover;

/* ma_areas_query callback: areas in address order must cover [at, end) read-write. */
static int huge_cover_cb(const ma_area *a, void *ctx) {
  huge_cover *c = ctx;
  if (a->start > c->at ||
      (a->prot & (MA_PROT_READ | MA_PROT_WRITE)) != (MA_PROT_READ | MA_PROT_WRITE)) {
    c->ok = false;
    return 1;
  }
  if (a->end > c->at) c->at = a->end;
  return 0;
}

/* Checks stripe st's records against the cached ranges s[0..nc) (sorted). */
static void huge_check_stripe(const huge_stripe *st, const huge_cached *s, size_t nc) {
  size_t ps = os_page_size(), n = 0, bytes = 0;
  for (size_t i = 0; i < st->cap; i++) {
    const huge_rec *r = &st->tab[i];
    if (!r->ptr) continue;
    MA_VERIFY((r->ptr & (ps - 1)) == 0 && r->len > 0 && (r->len & (ps - 1)) == 0,
              "large block %#lx + %zu", (unsigned long)r->ptr, r->len);
    MA_VERIFY(r->align == 0 || (r->ptr & (r->align - 1)) == 0, "large block %#lx align %zu",
              (unsigned long)r->ptr, r->align);
    MA_VERIFY(huge_stripe_of(r->ptr) == st && huge_find(st, r->ptr) == i,
              "large block %#lx not found at its slot %zu", (unsigned long)r->ptr, i);
    /* No cached range may overlap a live block (its guard page included). */
    uintptr_t lo = r->ptr, hi = r->ptr + r->len + r->guard;
    size_t a = 0, b = nc; /* first cached range ending after lo */
    while (a < b) {
      size_t m = (a + b) / 2;
      if (s[m].ptr + s[m].len <= lo)
        a = m + 1;
      else
        b = m;
    }
    MA_VERIFY(a == nc || s[a].ptr >= hi,
              "cached range %#lx + %zu overlaps the live large block %#lx + %zu",
              (unsigned long)s[a].ptr, s[a].len, (unsigned long)r->ptr, r->len);
    n++;
    bytes += r->len;
  }
  MA_VERIFY(n + st->out == st->count, "%zu large blocks in the table and %zu moving, count %zu", n,
            st->out, st->count);
  MA_VERIFY(bytes + st->out_bytes == st->bytes,
            "large blocks hold %zu bytes (%zu moving), the stripe says %zu", bytes, st->out_bytes,
            st->bytes);
}

void huge_check(void) {
  huge_lock_all();
  huge_cache_check_locked();
  static huge_cached s[HUGE_CACHE_N]; /* every lock held */
  size_t nc = huge_cache_sorted(s);
  for (unsigned k = 0; k < HUGE_STRIPES; k++) huge_check_stripe(&huge_stripes[k], s, nc);
  MA_VERIFY(huge_cache_count_relaxed() == huge_cache_count(),
            "published cache size %zu, %zu ranges", huge_cache_count_relaxed(), huge_cache_count());
  /* Each cached range lies inside read-write mappings (its pages are reused as they are). */
  for (size_t i = 0; i < nc; i++) {
    huge_cover c = {s[i].ptr, true};
    int rc = ma_areas_query(0, s[i].ptr, s[i].ptr + s[i].len, huge_cover_cb, &c);
    if (rc < 0) continue; /* /proc unreadable (no /proc, EMFILE, fault injection): unchecked */
    MA_VERIFY(c.ok && c.at >= s[i].ptr + s[i].len,
              "cached range %#lx + %zu is not mapped read-write (covered to %#lx)",
              (unsigned long)s[i].ptr, s[i].len, (unsigned long)c.at);
  }
  huge_unlock_all();
}
