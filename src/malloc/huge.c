/* Large blocks (> 128 KiB or over-aligned): one mapping each, straight from the page layer.
 *
 * Each block is recorded in a side table (open addressing keyed by its address), so a block
 * needs no header (page-aligned requests cost no extra page) and a pointer we did not map
 * is recognised. One mutex guards the table and the cache; no system call runs under it:
 * mappings, unmaps, mremap and the secure build's guard changes happen with the pages in
 * neither the table nor the cache (or, for a block being resized, its record unchanged until
 * the change is done and found again by its address afterwards).
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

/* Adaptive where glibc has it: the sections under the lock are short (no system call), so
 * a waiter spins a little before it sleeps; with a plain mutex two threads using medium
 * blocks made a futex call per 12 operations (medium-8M: 3438 in 41846). */
#ifdef PTHREAD_ADAPTIVE_MUTEX_INITIALIZER_NP
static pthread_mutex_t huge_lock = PTHREAD_ADAPTIVE_MUTEX_INITIALIZER_NP;
#else
static pthread_mutex_t huge_lock = PTHREAD_MUTEX_INITIALIZER;
#endif

static uint64_t huge_map_ids; /* last mapping id handed out */
static bool huge_tight;       /* (atomic) near RLIMIT_AS: freed pages are not cached */
static huge_rec *huge_tab;
static size_t huge_cap, huge_count, huge_bytes, huge_allocs, huge_frees;
static size_t huge_out, huge_out_bytes; /* blocks out of the table during a realloc's mremap
                                          (counted in huge_count and huge_bytes) */

/* Recently freed large blocks, to tell a double free from an invalid free. */
static uintptr_t huge_recent[16];
static unsigned huge_recent_next;

static size_t huge_hash(uintptr_t p, size_t cap) {
  return (size_t)(((p >> 12) * 0x9E3779B97F4A7C15ull) >> 20) & (cap - 1);
}

static size_t huge_find(uintptr_t p) {
  if (!huge_cap) return SIZE_MAX;
  for (size_t i = huge_hash(p, huge_cap);; i = (i + 1) & (huge_cap - 1)) {
    if (huge_tab[i].ptr == p) return i;
    if (huge_tab[i].ptr == 0) return SIZE_MAX;
  }
}

static void huge_put(huge_rec *tab, size_t cap, huge_rec r) {
  size_t i = huge_hash(r.ptr, cap);
  while (tab[i].ptr) i = (i + 1) & (cap - 1);
  tab[i] = r;
}

/* Grows the table to keep it at most half full; huge_lock held, let go while the new table
 * is mapped and the old one unmapped (no system call under the lock), so the caller holds
 * no slot index across it. */
static bool huge_reserve_slot(void) {
  while ((huge_count + 1) * 2 > huge_cap) {
    size_t ncap = huge_cap ? huge_cap * 2 : 1024;
    int saved = errno;
    pthread_mutex_unlock(&huge_lock);
    huge_rec *nt = os_alloc(ncap * sizeof(huge_rec), 0, false);
    if (nt) os_name(nt, ncap * sizeof(huge_rec), "mapalloc-meta");
    pthread_mutex_lock(&huge_lock);
    errno = saved;
    if (!nt) return false;
    huge_rec *old = nt;
    size_t old_cap = ncap;
    if (huge_cap < ncap) { /* (else another thread grew it meanwhile: nt goes) */
      for (size_t i = 0; i < huge_cap; i++)
        if (huge_tab[i].ptr) huge_put(nt, ncap, huge_tab[i]);
      old = huge_tab;
      old_cap = huge_cap;
      huge_tab = nt;
      huge_cap = ncap;
    }
    if (old) {
      pthread_mutex_unlock(&huge_lock);
      os_release_owned_rw(old, old_cap * sizeof(huge_rec));
      pthread_mutex_lock(&huge_lock);
      errno = saved;
    }
  }
  return true;
}

/* Removes slot i, shifting back the entries of its probe chain; huge_lock held. */
static void huge_remove_at(size_t i) {
  obj_probe_delete(huge_tab, sizeof *huge_tab, huge_cap, i, huge_hash);
  huge_count--;
}

static size_t huge_round(size_t size) {
  size_t ps = os_page_size();
  if (size > (size_t)PTRDIFF_MAX) return 0;
  size_t len = (size + ps - 1) & ~(ps - 1);
  return len ? len : ps;
}

/* The most cached bytes: HUGE_CACHE_MIN_BYTES plus as much as the live large blocks. A
 * program that replaces or regrows its large blocks needs about as many free pages as it
 * has live ones to keep reusing faulted pages (mstress: 64 MiB live, a 64 MiB cap evicted
 * 1.2 GiB that was faulted in again); the purge delay still empties the cache once the
 * program stops freeing. huge_lock held. */
static size_t huge_cache_cap(void) {
  return HUGE_CACHE_MIN_BYTES + huge_bytes;
}

static uint64_t huge_delay(void) {
  return heap_opt.purge_delay_ms < 0 ? UINT64_MAX / 2 : (uint64_t)heap_opt.purge_delay_ms;
}

size_t huge_cache_purge(bool all) {
  if (huge_cache_count_relaxed() == 0) return 0;
  uint64_t now = obj_now_ms();
  if (!all && now < huge_cache_next_expiry()) return 0;
  huge_victims v = {0};
  pthread_mutex_lock(&huge_lock);
  huge_cache_expire(all, now, &v);
  pthread_mutex_unlock(&huge_lock);
  huge_victims_unmap(&v);
  return v.bytes;
}

/* Records block r in the table; huge_lock held and a slot reserved. */
static void huge_record(huge_rec r) {
  huge_put(huge_tab, huge_cap, r);
  for (unsigned k = 0; k < 16; k++)
    if (huge_recent[k] == r.ptr) huge_recent[k] = 0;
  huge_count++;
  huge_allocs++;
  huge_bytes += r.len;
}

/* Releases pages no block uses any more: into the cache when they may be reused (not
 * over-aligned), else unmapped. `mark`: 0 or a guard marker inside c that stays (secure).
 * huge_lock held on entry, released on return (the unmaps run outside it). */
static void huge_uncommit_unlock(huge_cached c, uintptr_t mark, bool cacheable) {
  huge_victims v = {0};
  if (cacheable && c.len <= HUGE_CACHE_MAX_BLOCK && heap_opt.purge_delay_ms != 0 &&
      !__atomic_load_n(&huge_tight, __ATOMIC_RELAXED))
    huge_cache_put(c, mark, obj_now_ms(), huge_delay(), huge_cache_cap(), &v);
  else
    huge_victim_add(&v, c.ptr, c.len);
  pthread_mutex_unlock(&huge_lock);
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
 * lock. A PROT_NONE guard page alone is unmapped as it is. huge_lock held on entry,
 * released on return. */
static void huge_release_pages_unlock(huge_rec r, uintptr_t at, size_t len) {
  huge_cached c = {at, len, 0, r.map};
  bool cacheable = huge_cacheable(&r);
  if (r.guard && !r.marker && len <= r.guard) {
    pthread_mutex_unlock(&huge_lock);
    (void)os_release_owned((void *)at, len);
    return;
  }
  uintptr_t mark = r.marker ? r.ptr + r.len : 0;
  if (mark && (len <= r.guard || !huge_cache_mark_room())) {
    pthread_mutex_unlock(&huge_lock);
    cacheable = huge_unguard(&r);
    mark = 0;
    if (!cacheable) { /* the marker stays in: the pages go as they are */
      (void)os_release_owned((void *)at, len);
      return;
    }
    pthread_mutex_lock(&huge_lock);
  }
  huge_uncommit_unlock(c, mark, cacheable);
}

/* Releases a block that left the table; huge_lock held on entry, released on return. */
static void huge_release_unlock(huge_rec r) {
  huge_recent[huge_recent_next++ % 16] = r.ptr;
  huge_frees++;
  huge_release_pages_unlock(r, r.ptr, r.len + r.guard);
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

/* Takes a block of `len` bytes and its guard page (`g`: 0 or a page, a guard marker) from
 * the cache and records it; NULL when no range fits or a marker could not be taken out or
 * put in. The markers change outside the lock, between the take and the record (the piece
 * is in neither the cache nor the table meanwhile). */
static void *huge_alloc_cached(size_t len, size_t g, bool roomy) {
  huge_cached c;
  huge_marks m;
  pthread_mutex_lock(&huge_lock);
  if (!huge_reserve_slot() || !huge_cache_take(len + g, g, roomy, &c, &m)) {
    pthread_mutex_unlock(&huge_lock);
    return NULL;
  }
  if (m.n || (g && !m.guard_kept)) {
    pthread_mutex_unlock(&huge_lock);
    bool ok = huge_ready_piece(&m, c.ptr + c.len, g);
    pthread_mutex_lock(&huge_lock);
    if (!ok || !huge_reserve_slot()) { /* (failure paths: the piece is unmapped) */
      pthread_mutex_unlock(&huge_lock);
      huge_drop_piece(c.ptr, c.len);
      return NULL;
    }
  }
  huge_record((huge_rec){c.ptr, len, 0, c.map, g, g != 0});
  pthread_mutex_unlock(&huge_lock);
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

static void *huge_alloc_at(size_t size, size_t align, bool zero, bool roomy) {
  size_t len = huge_round(size);
  if (!len || len + os_page_size() < len) {
    errno = ENOMEM;
    return NULL;
  }
  size_t ps = os_page_size();
  size_t a = align > ps ? align : 0;
  size_t g = huge_guard();
  if (a == 0 && (g == 0 || os_guard_supported()) && huge_cache_count_relaxed()) {
    void *p = huge_alloc_cached(len, g, roomy);
    if (p) {
      if (zero) memset(p, 0, size);
      return p;
    }
  }
  bool marker;
  size_t chunk = huge_chunk(len, a, g); /* bytes mapped: the block, its guard, the rest */
  void *p = huge_map(chunk, len, a, g, &marker);
  if (!p && chunk > len + g) p = huge_map(chunk = len + g, len, a, g, &marker); /* RLIMIT_AS */
  if (!p) {
    errno = ENOMEM;
    return NULL;
  }
  if (heap_opt.huge_pages > 0) os_advise(p, chunk, MA_ADV_HUGEPAGE);
  if (heap_opt.huge_pages == 0) os_advise(p, chunk, MA_ADV_NOHUGEPAGE);
  pthread_mutex_lock(&huge_lock);
  if (!huge_reserve_slot()) {
    pthread_mutex_unlock(&huge_lock);
    os_release_owned_rw(p, chunk);
    errno = ENOMEM;
    return NULL;
  }
  uint64_t map = ++huge_map_ids;
  huge_record((huge_rec){(uintptr_t)p, len, a, map, g, marker});
  if (chunk == len + g) {
    pthread_mutex_unlock(&huge_lock);
    return p;
  }
  huge_victims v = {0}; /* the rest of the chunk, cached (or unmapped when over the cap) */
  huge_cache_put((huge_cached){(uintptr_t)p + len + g, chunk - len - g, 0, map}, 0, obj_now_ms(),
                 huge_delay(), huge_cache_cap(), &v);
  pthread_mutex_unlock(&huge_lock);
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
 * what the cache held goes when that starts. Asked outside huge_lock (obj_space_tight may
 * make system calls). */
static void huge_check_tight(void) {
  bool t = obj_space_tight();
  if (t == __atomic_load_n(&huge_tight, __ATOMIC_RELAXED)) return;
  __atomic_store_n(&huge_tight, t, __ATOMIC_RELAXED);
  if (t) (void)huge_cache_purge(true);
}

bool huge_free(void *p) {
  huge_check_tight();
  pthread_mutex_lock(&huge_lock);
  size_t i = huge_find((uintptr_t)p);
  if (i == SIZE_MAX) {
    bool again = false;
    for (unsigned k = 0; k < 16; k++) again |= huge_recent[k] == (uintptr_t)p;
    pthread_mutex_unlock(&huge_lock);
    if (again) obj_fatal("double free", p);
    return false;
  }
  huge_rec r = huge_tab[i];
  huge_remove_at(i);
  huge_bytes -= r.len;
  huge_release_unlock(r);
  return true;
}

size_t huge_usable(const void *p) {
  pthread_mutex_lock(&huge_lock);
  size_t i = huge_find((uintptr_t)p);
  size_t n = i == SIZE_MAX ? 0 : huge_tab[i].len;
  pthread_mutex_unlock(&huge_lock);
  return n;
}

/* Moves block p to the front of the roomiest cached range of `nlen` bytes or more by
 * copying, and caches its pages; huge_lock held, released on success (NULL: none fits, lock
 * still held). Worth it when the copy is not much larger than the growth: the growth then
 * costs no page fault, the block's faulted pages stay in use, and the rest of the range lies
 * behind the block for its next growth. A guarded piece's markers change outside the lock
 * (the piece is in neither the cache nor the table meanwhile; p's record stays and is found
 * again by its address). */
static void *huge_grow_by_copy(void *p, size_t nlen) {
  size_t i = huge_find((uintptr_t)p);
  huge_rec r = huge_tab[i];
  huge_cached c;
  huge_marks m;
  if (!huge_cacheable(&r) || (nlen - r.len) * 4 < r.len ||
      !huge_cache_take(nlen + r.guard, r.guard, true, &c, &m))
    return NULL;
  if (m.n || (r.guard && !m.guard_kept)) {
    pthread_mutex_unlock(&huge_lock);
    bool ok = huge_ready_piece(&m, c.ptr + c.len, r.guard);
    if (!ok) huge_drop_piece(c.ptr, c.len); /* (failure path) */
    pthread_mutex_lock(&huge_lock);
    if (!ok) return NULL;
    i = huge_find((uintptr_t)p); /* (the table may have changed meanwhile) */
  }
  huge_remove_at(i);
  huge_bytes -= r.len;
  huge_record((huge_rec){c.ptr, nlen, 0, c.map, r.guard, r.guard != 0});
  huge_allocs--;
  pthread_mutex_unlock(&huge_lock);
  memcpy((void *)c.ptr, (void *)r.ptr, r.len);
  pthread_mutex_lock(&huge_lock);
  huge_frees--;
  huge_release_unlock(r);
  return (void *)c.ptr;
}

/* Grows block p (record r) to `nlen` bytes over the cached pages right behind it (already
 * faulted in) when the cache holds them; huge_lock held on entry, released when it grew
 * (true), still held when not (false). A guarded block takes up to a quarter more when that
 * ends it on a marker already in those pages: a marker put in on a faulted-in page zaps it,
 * and the zap flushes the TLB of every CPU the process runs on (an IPI each). A guarded
 * block's marker moves to its new end, outside the lock (the absorbed pages are in neither
 * the cache nor the table meanwhile; p's record stays as it was until the end): the markers
 * inside the absorbed pages and then the old one come out first (if the kernel refuses,
 * those pages are unmapped and the block stays as it was), so that none is ever left inside
 * the block; the new guard page keeps the marker it may hold. */
static bool huge_grow_in_place_unlock(void *p, huge_rec r, size_t nlen) {
  uintptr_t at = r.ptr + r.len + r.guard;
  huge_marks m;
  size_t need = nlen - r.len;
  if (!huge_cacheable(&r) || !huge_cache_absorb(at, r.map, &need, r.guard, nlen / 4, &m))
    return false;
  nlen = r.len + need; /* (more than asked when a marker a little further is the guard) */
  bool marker = r.marker;
  if (r.guard) {
    pthread_mutex_unlock(&huge_lock);
    /* (the markers inside only: the new guard page is made below, with its PROT_NONE
     * fallback) */
    bool ok = huge_ready_piece(&m, 0, 0) && huge_unguard(&r);
    if (!ok) {
      huge_drop_piece(at, need);
      pthread_mutex_lock(&huge_lock);
      return false;
    }
    marker = m.guard_kept || huge_guard_put((char *)r.ptr + nlen, r.guard) == 1;
    pthread_mutex_lock(&huge_lock);
  }
  size_t i = huge_find((uintptr_t)p);
  huge_tab[i].marker = marker;
  huge_tab[i].len = nlen;
  huge_bytes += nlen - r.len;
  pthread_mutex_unlock(&huge_lock);
  return true;
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
  pthread_mutex_lock(&huge_lock);
  size_t i = huge_find((uintptr_t)p);
  if (i == SIZE_MAX) {
    pthread_mutex_unlock(&huge_lock);
    obj_fatal("invalid realloc", p);
  }
  huge_rec r = huge_tab[i];
  if (nlen == r.len) {
    pthread_mutex_unlock(&huge_lock);
    return p;
  }
  int saved = errno;
  if (nlen < r.len) { /* the tail is cached (or unmapped) as a freed block would be */
    /* A guarded block gets its new guard page first; if that fails it keeps its size. The
     * old guard goes with the tail. */
    if (r.guard) { /* (outside the lock: p's record stays as it is meanwhile) */
      pthread_mutex_unlock(&huge_lock);
      int kind = huge_guard_put((char *)p + nlen, r.guard);
      if (kind < 0) {
        errno = saved;
        return p;
      }
      pthread_mutex_lock(&huge_lock);
      i = huge_find((uintptr_t)p);
      huge_tab[i].marker = kind == 1;
    }
    huge_tab[i].len = nlen;
    huge_bytes -= r.len - nlen;
    huge_release_pages_unlock(r, r.ptr + nlen + r.guard, r.len - nlen); /* ends in the old guard */
    errno = saved;
    return p;
  }
  if (huge_grow_in_place_unlock(p, r, nlen)) {
    errno = saved;
    return p;
  }
  void *q = huge_grow_by_copy(p, nlen);
  if (q) {
    *moved_out = true;
    errno = saved;
    return q;
  }
  i = huge_find((uintptr_t)p); /* (the table may have changed while the lock was let go) */
  /* The block leaves the table while its pages move, so that no system call runs under
   * huge_lock: once the kernel has moved them, another thread may map the old address and
   * must not find it recorded. The record stays counted (huge_out) so that putting it back
   * never needs a larger table. A thread that frees or resizes the block meanwhile races
   * with this realloc (undefined behaviour): it finds no block and reports an invalid free. */
  obj_probe_delete(huge_tab, sizeof *huge_tab, huge_cap, i, huge_hash);
  huge_out++;
  huge_out_bytes += r.len;
  pthread_mutex_unlock(&huge_lock);
  void *np = NULL;
  /* MREMAP_MAYMOVE grows in place when it can and moves the pages otherwise. A guarded
   * block gets a page more, which becomes its new guard. A guard marker lies inside the
   * block's mapping: it is removed first (else it would stay inside the grown block) and
   * the mapping remapped whole. A PROT_NONE guard is a mapping of its own: it stays behind
   * and is unmapped. */
  int rc, kind = 0;
  if (r.marker) {
    (void)os_guard_remove((char *)p + r.len, r.guard);
    rc = os_remap(p, r.len + r.guard, wlen + r.guard, r.align == 0, &np);
    if (rc != 0) (void)huge_guard_put((char *)p + r.len, r.guard); /* as it was */
  } else {
    rc = os_remap(p, r.len, wlen + r.guard, r.align == 0, &np);
    if (rc == 0 && r.guard && np != p) os_release_owned((char *)p + r.len, r.guard);
  }
  if (rc == 0 && r.guard) kind = huge_guard_put((char *)np + wlen, r.guard); /* best effort */
  pthread_mutex_lock(&huge_lock);
  huge_out--;
  huge_out_bytes -= r.len;
  if (rc != 0) { /* back as it was */
    huge_put(huge_tab, huge_cap, r);
    pthread_mutex_unlock(&huge_lock);
  } else {
    /* Moved: the block is a mapping of its own now. */
    huge_put(huge_tab, huge_cap,
             (huge_rec){(uintptr_t)np, wlen, r.align, np == p ? r.map : ++huge_map_ids, r.guard,
                        kind == 1});
    huge_bytes += wlen - r.len;
    pthread_mutex_unlock(&huge_lock);
    *moved_out = np != p;
    errno = saved;
    return np;
  }
  errno = saved;
  /* Over-aligned block that cannot grow in place, or a block over two mappings: copy. */
  q = huge_alloc(size, r.align, false);
  if (!q) return NULL;
  memcpy(q, p, r.len);
  huge_free(p);
  *moved_out = true;
  return q;
}

void huge_stats(size_t *count, size_t *bytes, size_t *allocs, size_t *frees, size_t *cached) {
  pthread_mutex_lock(&huge_lock);
  *count = huge_count;
  *bytes = huge_bytes;
  *cached = huge_cache_total();
  *allocs = huge_allocs;
  *frees = huge_frees;
  pthread_mutex_unlock(&huge_lock);
}

void huge_atfork_prepare(void) {
  pthread_mutex_lock(&huge_lock);
}
void huge_atfork_parent(void) {
  pthread_mutex_unlock(&huge_lock);
}
void huge_atfork_child(void) {
  pthread_mutex_unlock(&huge_lock); /* the child's thread is the one that locked it */
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

void huge_check(void) {
  pthread_mutex_lock(&huge_lock);
  huge_cache_check_locked();
  size_t ps = os_page_size(), n = 0, bytes = 0;
  static huge_cached s[HUGE_CACHE_N]; /* huge_lock held */
  size_t nc = huge_cache_sorted(s);
  for (size_t i = 0; i < huge_cap; i++) {
    const huge_rec *r = &huge_tab[i];
    if (!r->ptr) continue;
    MA_VERIFY((r->ptr & (ps - 1)) == 0 && r->len > 0 && (r->len & (ps - 1)) == 0,
              "large block %#lx + %zu", (unsigned long)r->ptr, r->len);
    MA_VERIFY(r->align == 0 || (r->ptr & (r->align - 1)) == 0, "large block %#lx align %zu",
              (unsigned long)r->ptr, r->align);
    MA_VERIFY(huge_find(r->ptr) == i, "large block %#lx not found at its slot %zu",
              (unsigned long)r->ptr, i);
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
  MA_VERIFY(n + huge_out == huge_count,
            "%zu large blocks in the table and %zu moving, huge_count %zu", n, huge_out,
            huge_count);
  MA_VERIFY(bytes + huge_out_bytes == huge_bytes,
            "large blocks hold %zu bytes (%zu moving), huge_bytes %zu", bytes, huge_out_bytes,
            huge_bytes);
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
  pthread_mutex_unlock(&huge_lock);
}
