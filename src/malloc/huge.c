/* Large blocks (> 128 KiB or over-aligned): one mapping each, straight from the page layer.
 *
 * Each block is recorded in a side table (open addressing keyed by its address), so a block
 * needs no header (page-aligned requests cost no extra page) and a pointer we did not map
 * is recognised. Growth uses mremap, which moves page tables instead of copying. One mutex
 * guards the table; the system calls for alloc and free run outside it.
 *
 * Freed mappings of up to HUGE_CACHE_MAX_BLOCK are kept in a small cache for
 * MAPALLOC_PURGE_DELAY_MS and reused by the next large allocation that fits (a program that
 * allocates and frees 500 KiB buffers in a loop would otherwise pay mmap, page faults and
 * munmap every time); expired entries are unmapped on the next large-block operation or
 * heap slow path, all of them on ma_heap_collect(true) / malloc_trim. */
#include <pthread.h>
#include <string.h>

#include "malloc/heap_internal.h"
#include "os/os.h"

typedef struct huge_rec {
  uintptr_t ptr; /* 0 = empty slot */
  size_t len;    /* mapped bytes = usable size */
  size_t align;  /* > page size: must not be moved by mremap */
} huge_rec;

#define HUGE_CACHE_N         64
#define HUGE_CACHE_MAX_BLOCK ((size_t)32 << 20)
#define HUGE_CACHE_MAX_BYTES ((size_t)64 << 20)

typedef struct huge_cached {
  uintptr_t ptr;
  size_t len;
  uint64_t expires; /* ms */
} huge_cached;

static pthread_mutex_t huge_lock = PTHREAD_MUTEX_INITIALIZER;
static huge_cached huge_cache[HUGE_CACHE_N];
static size_t huge_cache_n, huge_cache_bytes;
static _Atomic size_t huge_cache_pub;    /* huge_cache_n, readable without the lock */
static _Atomic uint64_t huge_cache_next; /* earliest expiry in the cache (ms) */

/* Publishes the cache's size and earliest expiry; huge_lock held. */
static void huge_cache_publish(void) {
  uint64_t next = UINT64_MAX;
  for (size_t i = 0; i < huge_cache_n; i++)
    if (huge_cache[i].expires < next) next = huge_cache[i].expires;
  atomic_store_explicit(&huge_cache_next, next, memory_order_relaxed);
  atomic_store_explicit(&huge_cache_pub, huge_cache_n, memory_order_relaxed);
}

static huge_rec *huge_tab;
static size_t huge_cap, huge_count, huge_bytes, huge_allocs, huge_frees;

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

/* Grows the table to keep it at most half full; huge_lock held. */
static bool huge_reserve_slot(void) {
  if ((huge_count + 1) * 2 <= huge_cap) return true;
  size_t ncap = huge_cap ? huge_cap * 2 : 1024;
  int saved = errno;
  huge_rec *nt = os_alloc(ncap * sizeof(huge_rec), 0, false);
  errno = saved;
  if (!nt) return false;
  os_name(nt, ncap * sizeof(huge_rec), "mapalloc-meta");
  for (size_t i = 0; i < huge_cap; i++)
    if (huge_tab[i].ptr) huge_put(nt, ncap, huge_tab[i]);
  if (huge_tab) os_release(huge_tab, huge_cap * sizeof(huge_rec));
  errno = saved;
  huge_tab = nt;
  huge_cap = ncap;
  return true;
}

/* Removes slot i, shifting back the entries of its probe chain; huge_lock held. */
static void huge_remove_at(size_t i) {
  size_t mask = huge_cap - 1;
  huge_tab[i].ptr = 0;
  for (size_t j = (i + 1) & mask; huge_tab[j].ptr; j = (j + 1) & mask) {
    size_t home = huge_hash(huge_tab[j].ptr, huge_cap);
    /* Move j into the hole if its home is not in the cyclic range (i, j]. */
    bool between = (i <= j) ? (home > i && home <= j) : (home > i || home <= j);
    if (!between) {
      huge_tab[i] = huge_tab[j];
      huge_tab[j].ptr = 0;
      i = j;
    }
  }
  huge_count--;
}

static size_t huge_round(size_t size) {
  size_t ps = os_page_size();
  if (size > (size_t)PTRDIFF_MAX) return 0;
  size_t len = (size + ps - 1) & ~(ps - 1);
  return len ? len : ps;
}

/* Takes the smallest cached mapping of at least `len` bytes; huge_lock held. A longer one
 * is split: `len` bytes are taken and the tail stays cached (no system call: any page
 * range of a mapping can be unmapped on its own later). Its pages are already faulted in,
 * and a block that then grows by realloc absorbs the cached tail in place
 * (huge_cache_absorb), so a vector restarted after a free reuses the last vector's memory
 * instead of faulting fresh pages in after each mremap. */
static bool huge_cache_take(size_t len, huge_cached *out) {
  size_t best = SIZE_MAX;
  for (size_t i = 0; i < huge_cache_n; i++) {
    size_t l = huge_cache[i].len;
    if (l >= len && (best == SIZE_MAX || l < huge_cache[best].len)) best = i;
  }
  if (best == SIZE_MAX) return false;
  *out = huge_cache[best];
  if (out->len > len) { /* the slot stays in use for the tail */
    huge_cache[best].ptr += len;
    huge_cache[best].len -= len;
    out->len = len;
  } else {
    huge_cache[best] = huge_cache[--huge_cache_n];
  }
  huge_cache_bytes -= len;
  huge_cache_publish();
  return true;
}

/* Takes `need` bytes of cached memory that start exactly at `at` (the end of a block that
 * grows); huge_lock held. False when the cache holds no such range. */
static bool huge_cache_absorb(uintptr_t at, size_t need) {
  for (size_t i = 0; i < huge_cache_n; i++) {
    if (huge_cache[i].ptr != at || huge_cache[i].len < need) continue;
    if (huge_cache[i].len > need) {
      huge_cache[i].ptr += need;
      huge_cache[i].len -= need;
    } else {
      huge_cache[i] = huge_cache[--huge_cache_n];
    }
    huge_cache_bytes -= need;
    huge_cache_publish();
    return true;
  }
  return false;
}

/* Removes expired (all with `all`) entries into victims[]; huge_lock held. */
static size_t huge_cache_expire(bool all, uint64_t now, huge_cached *victims) {
  size_t nv = 0;
  for (size_t i = 0; i < huge_cache_n;) {
    if (all || huge_cache[i].expires <= now) {
      victims[nv++] = huge_cache[i];
      huge_cache_bytes -= huge_cache[i].len;
      huge_cache[i] = huge_cache[--huge_cache_n];
    } else {
      i++;
    }
  }
  huge_cache_publish();
  return nv;
}

static void huge_unmap_all(const huge_cached *v, size_t n) {
  int saved = errno;
  for (size_t i = 0; i < n; i++) os_release((void *)v[i].ptr, v[i].len);
  errno = saved;
}

size_t huge_cache_purge(bool all) {
  if (atomic_load_explicit(&huge_cache_pub, memory_order_relaxed) == 0) return 0;
  uint64_t now = heap_now_ms();
  if (!all && now < atomic_load_explicit(&huge_cache_next, memory_order_relaxed)) return 0;
  huge_cached victims[HUGE_CACHE_N];
  pthread_mutex_lock(&huge_lock);
  size_t nv = huge_cache_expire(all, now, victims);
  pthread_mutex_unlock(&huge_lock);
  huge_unmap_all(victims, nv);
  size_t bytes = 0;
  for (size_t i = 0; i < nv; i++) bytes += victims[i].len;
  return bytes;
}

void *huge_alloc(size_t size, size_t align, bool zero) {
  size_t len = huge_round(size);
  if (!len) {
    errno = ENOMEM;
    return NULL;
  }
  size_t ps = os_page_size();
  size_t a = align > ps ? align : 0;
  if (a == 0 && atomic_load_explicit(&huge_cache_pub, memory_order_relaxed)) {
    huge_cached c;
    pthread_mutex_lock(&huge_lock);
    if (huge_reserve_slot() && huge_cache_take(len, &c)) {
      huge_put(huge_tab, huge_cap, (huge_rec){c.ptr, c.len, 0});
      huge_count++;
      huge_allocs++;
      huge_bytes += c.len;
      pthread_mutex_unlock(&huge_lock);
      if (zero) memset((void *)c.ptr, 0, size);
      return (void *)c.ptr;
    }
    pthread_mutex_unlock(&huge_lock);
  }
  void *p = os_alloc(len, a, false);
  if (!p) {
    errno = ENOMEM;
    return NULL;
  }
  if (heap_opt.huge_pages > 0) os_advise(p, len, MA_ADV_HUGEPAGE);
  if (heap_opt.huge_pages == 0) os_advise(p, len, MA_ADV_NOHUGEPAGE);
  pthread_mutex_lock(&huge_lock);
  if (!huge_reserve_slot()) {
    pthread_mutex_unlock(&huge_lock);
    os_release(p, len);
    errno = ENOMEM;
    return NULL;
  }
  huge_put(huge_tab, huge_cap, (huge_rec){(uintptr_t)p, len, a});
  for (unsigned k = 0; k < 16; k++)
    if (huge_recent[k] == (uintptr_t)p) huge_recent[k] = 0;
  huge_count++;
  huge_allocs++;
  huge_bytes += len;
  pthread_mutex_unlock(&huge_lock);
  return p;
}

bool huge_free(void *p) {
  pthread_mutex_lock(&huge_lock);
  size_t i = huge_find((uintptr_t)p);
  if (i == SIZE_MAX) {
    bool again = false;
    for (unsigned k = 0; k < 16; k++) again |= huge_recent[k] == (uintptr_t)p;
    pthread_mutex_unlock(&huge_lock);
    if (again) heap_misuse("double free", p);
    return false;
  }
  huge_recent[huge_recent_next++ % 16] = (uintptr_t)p;
  size_t len = huge_tab[i].len;
  bool aligned = huge_tab[i].align != 0;
  huge_remove_at(i);
  huge_frees++;
  huge_bytes -= len;
  huge_cached victims[HUGE_CACHE_N + 1];
  size_t nv = 0;
  if (!aligned && len <= HUGE_CACHE_MAX_BLOCK && heap_opt.purge_delay_ms != 0) {
    uint64_t now = heap_now_ms();
    nv = huge_cache_expire(false, now, victims);
    while (huge_cache_n &&
           (huge_cache_n == HUGE_CACHE_N || huge_cache_bytes + len > HUGE_CACHE_MAX_BYTES)) {
      size_t old = 0; /* evict the entry that expires first */
      for (size_t k = 1; k < huge_cache_n; k++)
        if (huge_cache[k].expires < huge_cache[old].expires) old = k;
      victims[nv++] = huge_cache[old];
      huge_cache_bytes -= huge_cache[old].len;
      huge_cache[old] = huge_cache[--huge_cache_n];
    }
    if (huge_cache_bytes + len <= HUGE_CACHE_MAX_BYTES) {
      uint64_t delay =
          heap_opt.purge_delay_ms < 0 ? UINT64_MAX / 2 : (uint64_t)heap_opt.purge_delay_ms;
      huge_cache[huge_cache_n++] = (huge_cached){(uintptr_t)p, len, now + delay};
      huge_cache_bytes += len;
      len = 0; /* kept */
    }
    huge_cache_publish();
  }
  pthread_mutex_unlock(&huge_lock);
  if (len) victims[nv++] = (huge_cached){(uintptr_t)p, len, 0};
  huge_unmap_all(victims, nv);
  return true;
}

size_t huge_usable(const void *p) {
  pthread_mutex_lock(&huge_lock);
  size_t i = huge_find((uintptr_t)p);
  size_t n = i == SIZE_MAX ? 0 : huge_tab[i].len;
  pthread_mutex_unlock(&huge_lock);
  return n;
}

/* Resizes huge block p to `size` (> HEAP_MAX_SMALL) in place when it can: shrink by
 * unmapping the tail, grow with mremap (moving pages, never copying, unless the block is
 * over-aligned). NULL + ENOMEM on failure with p untouched. */
void *huge_realloc(void *p, size_t size, bool *moved_out) {
  *moved_out = false;
  size_t nlen = huge_round(size);
  if (!nlen) {
    errno = ENOMEM;
    return NULL;
  }
  pthread_mutex_lock(&huge_lock);
  size_t i = huge_find((uintptr_t)p);
  if (i == SIZE_MAX) {
    pthread_mutex_unlock(&huge_lock);
    heap_misuse("invalid realloc", p);
  }
  huge_rec r = huge_tab[i];
  if (nlen == r.len) {
    pthread_mutex_unlock(&huge_lock);
    return p;
  }
  int saved = errno;
  if (nlen < r.len) {
    huge_tab[i].len = nlen;
    huge_bytes -= r.len - nlen;
    pthread_mutex_unlock(&huge_lock);
    os_release((char *)p + nlen, r.len - nlen);
    errno = saved;
    return p;
  }
  if (r.align == 0 && huge_cache_absorb((uintptr_t)p + r.len, nlen - r.len)) {
    huge_tab[i].len = nlen; /* grown in place over cached, already faulted pages */
    huge_bytes += nlen - r.len;
    pthread_mutex_unlock(&huge_lock);
    errno = saved;
    return p;
  }
  /* Under the lock: a moved-away address must not be re-mapped and recorded by another
   * thread before the old record is gone. */
  void *np = NULL;
  /* MREMAP_MAYMOVE grows in place when it can and moves the pages otherwise. */
  int rc = os_remap(p, r.len, nlen, r.align == 0, &np);
  if (rc == 0) {
    huge_remove_at(i);
    huge_put(huge_tab, huge_cap, (huge_rec){(uintptr_t)np, nlen, r.align});
    huge_count++;
    huge_bytes += nlen - r.len;
    pthread_mutex_unlock(&huge_lock);
    *moved_out = np != p;
    errno = saved;
    return np;
  }
  pthread_mutex_unlock(&huge_lock);
  errno = saved;
  /* Over-aligned block that cannot grow in place: copy. */
  void *q = huge_alloc(size, r.align, false);
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
  *cached = huge_cache_bytes;
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
