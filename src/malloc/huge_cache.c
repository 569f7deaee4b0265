/* The cache of freed large-block page ranges: size bins, address hashes and an age list,
 * so that every operation is O(1) in the number of ranges (huge_cache.h). huge_cache_lock
 * (huge.c) guards everything here but the two published values. */
#include "malloc/huge_cache.h"

#include <errno.h>
#include <stdatomic.h>
#include <string.h>

#include "obj/obj.h"
#include "obj/obj_check.h"
#include "os/os.h"

#define HC_EXACT 1024 /* ranges of fewer pages have a bin per page count (4 MiB of 4 KiB) */
#define HC_NBINS (HC_EXACT + 8 * 48) /* then eight per power of two of pages: 2^10..2^57 */
#define HC_TAB   2048 /* slots of each address hash: twice the ranges, a power of two */
#define HC_SCAN  8    /* ranges of the request's own bin looked at for a fit */
#define HC_NONE  0    /* entry index 0: none (entries are 1..HUGE_CACHE_N) */

_Static_assert(HC_NBINS % 64 == 0, "whole bitmap words");

typedef struct hc_ent {
  huge_cached c;
  uint16_t bin_next, bin_prev; /* bin list; bin_next also chains the free entries */
  uint16_t age_next, age_prev; /* age list, oldest first */
  uint16_t bin;
} hc_ent;

typedef struct hc_slot {
  uintptr_t key; /* a range's start (or end) address; 0 = empty */
  uint32_t idx;
} hc_slot;

static hc_ent hc[HUGE_CACHE_N + 1];
static uint16_t hc_free, hc_made; /* free entries; entries ever used */
static uint16_t hc_bins[HC_NBINS];
static uint64_t hc_binmap[HC_NBINS / 64];
static uint16_t hc_oldest, hc_newest;
static huge_demand hc_demand; /* what the cache was asked for so far */
static hc_slot hc_by_start[HC_TAB], hc_by_end[HC_TAB];
static size_t hc_n, hc_bytes;
static uintptr_t hc_marks[HUGE_CACHE_MARKS]; /* guard markers inside cached ranges, sorted */
static size_t hc_nmarks;
static _Atomic size_t hc_pub_n;
static _Atomic uint64_t hc_pub_next = UINT64_MAX;

/* ---- victims ------------------------------------------------------------------------ */

typedef struct hc_victim_hdr {
  uintptr_t next;
  size_t len;
} hc_victim_hdr;

void huge_victim_add(huge_victims *v, uintptr_t ptr, size_t len) {
  hc_victim_hdr *h = (hc_victim_hdr *)ptr;
  h->next = v->head;
  h->len = len;
  v->head = ptr;
  v->n++;
  v->bytes += len;
}

void huge_victims_unmap(huge_victims *v) {
  int saved = errno;
  for (uintptr_t p = v->head; p;) {
    const hc_victim_hdr *h = (const hc_victim_hdr *)p;
    uintptr_t next = h->next;
    os_release_owned_rw((void *)p, h->len);
    p = next;
  }
  v->head = 0;
  errno = saved;
}

/* ---- bins ---------------------------------------------------------------------------- */

static unsigned hc_bin_of(size_t len) {
  size_t p = len / os_page_size();
  if (p < HC_EXACT) return (unsigned)p;
  unsigned k = 63u - (unsigned)__builtin_clzl(p); /* 2^k <= p, k >= 10 */
  return HC_EXACT + 8 * (k - 10) + (unsigned)((p >> (k - 3)) & 7);
}

static void hc_bin_link(uint16_t i) {
  hc_ent *e = &hc[i];
  e->bin = (uint16_t)hc_bin_of(e->c.len);
  e->bin_prev = HC_NONE;
  e->bin_next = hc_bins[e->bin];
  if (e->bin_next) hc[e->bin_next].bin_prev = i;
  hc_bins[e->bin] = i;
  hc_binmap[e->bin / 64] |= (uint64_t)1 << (e->bin % 64);
}

static void hc_bin_unlink(uint16_t i) {
  hc_ent *e = &hc[i];
  if (e->bin_prev)
    hc[e->bin_prev].bin_next = e->bin_next;
  else
    hc_bins[e->bin] = e->bin_next;
  if (e->bin_next) hc[e->bin_next].bin_prev = e->bin_prev;
  if (!hc_bins[e->bin]) hc_binmap[e->bin / 64] &= ~((uint64_t)1 << (e->bin % 64));
}

/* The first non-empty bin at or above b (above the highest with `highest`: the highest
 * non-empty bin); HC_NBINS if none. */
static unsigned hc_bin_find(unsigned b, bool highest) {
  if (highest) {
    for (unsigned w = HC_NBINS / 64; w-- > 0;)
      if (hc_binmap[w]) return w * 64 + 63u - (unsigned)__builtin_clzll(hc_binmap[w]);
    return HC_NBINS;
  }
  for (unsigned w = b / 64; w < HC_NBINS / 64; w++) {
    uint64_t m = hc_binmap[w];
    if (w == b / 64) m &= ~(uint64_t)0 << (b % 64);
    if (m) return w * 64 + (unsigned)__builtin_ctzll(m);
  }
  return HC_NBINS;
}

/* ---- address hashes -------------------------------------------------------------------- */

static size_t hc_hash(uintptr_t key, size_t cap) {
  return (size_t)(((key >> 12) * 0x9E3779B97F4A7C15ull) >> 32) & (cap - 1);
}

static void hc_tab_put(hc_slot *t, uintptr_t key, uint16_t i) {
  size_t s = hc_hash(key, HC_TAB);
  while (t[s].key) s = (s + 1) & (HC_TAB - 1);
  t[s] = (hc_slot){key, i};
}

static size_t hc_tab_find(const hc_slot *t, uintptr_t key) {
  for (size_t s = hc_hash(key, HC_TAB); t[s].key; s = (s + 1) & (HC_TAB - 1))
    if (t[s].key == key) return s;
  return SIZE_MAX;
}

static void hc_tab_del(hc_slot *t, uintptr_t key) {
  size_t s = hc_tab_find(t, key);
  MA_CHECK(s != SIZE_MAX, "cached range key %#lx missing from its hash", (unsigned long)key);
  obj_probe_delete(t, sizeof *t, HC_TAB, s, hc_hash);
}

/* The entry whose range starts (or ends) at key; HC_NONE if none. */
static uint16_t hc_lookup(const hc_slot *t, uintptr_t key) {
  size_t s = hc_tab_find(t, key);
  return s == SIZE_MAX ? HC_NONE : (uint16_t)t[s].idx;
}

/* ---- the marker set ------------------------------------------------------------------------ */

/* Index of the first marker at or after a. */
static size_t hc_mark_at(uintptr_t a) {
  size_t lo = 0, hi = hc_nmarks;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (hc_marks[mid] < a)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

static bool hc_mark_has(uintptr_t a) {
  size_t i = hc_mark_at(a);
  return i < hc_nmarks && hc_marks[i] == a;
}

/* A piece ending at `end` of a range ending at e would leave a rest that starts with a
 * marker (forbidden: the rest's first page chains it as a victim). */
static bool hc_rest_marked(uintptr_t end, uintptr_t e) {
  return end < e && hc_mark_has(end);
}

static void hc_mark_add(uintptr_t a) {
  size_t i = hc_mark_at(a);
  memmove(&hc_marks[i + 1], &hc_marks[i], (hc_nmarks - i) * sizeof *hc_marks);
  hc_marks[i] = a;
  hc_nmarks++;
}

static size_t hc_marks_in(uintptr_t lo, uintptr_t hi) {
  return hc_mark_at(hi) - hc_mark_at(lo);
}

/* Takes the markers in [lo, hi) out of the set (pages unmapped, or handed to a caller that
 * removes them: listed in m when m is not NULL). */
static void hc_marks_cut(uintptr_t lo, uintptr_t hi, huge_marks *m) {
  size_t i = hc_mark_at(lo), j = i;
  for (; j < hc_nmarks && hc_marks[j] < hi; j++)
    if (m) m->rm[m->n++] = hc_marks[j];
  memmove(&hc_marks[i], &hc_marks[j], (hc_nmarks - j) * sizeof *hc_marks);
  hc_nmarks -= j - i;
}

bool huge_cache_mark_room(void) {
  return hc_nmarks < HUGE_CACHE_MARKS;
}

/* ---- entries ----------------------------------------------------------------------------- */

/* Files entry i by size and address (its range set). */
static void hc_index(uint16_t i) {
  hc_bin_link(i);
  hc_tab_put(hc_by_start, hc[i].c.ptr, i);
  hc_tab_put(hc_by_end, hc[i].c.ptr + hc[i].c.len, i);
}

static void hc_unindex(uint16_t i) {
  hc_bin_unlink(i);
  hc_tab_del(hc_by_start, hc[i].c.ptr);
  hc_tab_del(hc_by_end, hc[i].c.ptr + hc[i].c.len);
}

static void hc_publish(void) {
  atomic_store_explicit(&hc_pub_n, hc_n, memory_order_relaxed);
  atomic_store_explicit(&hc_pub_next, hc_oldest ? hc[hc_oldest].c.expires : UINT64_MAX,
                        memory_order_relaxed);
  if (MA_DEBUG_ON) huge_cache_check_locked();
}

/* Entry i joins the age list as its newest. */
static void hc_age_push(uint16_t i) {
  hc[i].age_next = HC_NONE;
  hc[i].age_prev = hc_newest;
  if (hc_newest)
    hc[hc_newest].age_next = i;
  else
    hc_oldest = i;
  hc_newest = i;
}

/* Entry i leaves the age list. */
static void hc_age_unlink(uint16_t i) {
  hc_ent *e = &hc[i];
  if (e->age_prev)
    hc[e->age_prev].age_next = e->age_next;
  else
    hc_oldest = e->age_next;
  if (e->age_next)
    hc[e->age_next].age_prev = e->age_prev;
  else
    hc_newest = e->age_prev;
}

/* Adds c as the newest range (the caller made room: hc_n < HUGE_CACHE_N). */
static void hc_insert(huge_cached c) {
  uint16_t i = hc_free;
  if (i)
    hc_free = hc[i].bin_next;
  else
    i = ++hc_made;
  hc[i].c = c;
  hc_age_push(i);
  hc_index(i);
  hc_n++;
  hc_bytes += c.len;
}

static void hc_remove(uint16_t i) {
  hc_ent *e = &hc[i];
  hc_unindex(i);
  hc_age_unlink(i);
  hc_n--;
  hc_bytes -= e->c.len;
  e->c = (huge_cached){0};
  e->bin_next = hc_free;
  hc_free = i;
}

/* Cuts `front` bytes off the front of entry i and `back` off its end (it keeps some), and
 * its age. */
static void hc_cut(uint16_t i, size_t front, size_t back) {
  hc_unindex(i);
  hc[i].c.ptr += front;
  hc[i].c.len -= front + back;
  hc_bytes -= front + back;
  hc_index(i);
}

/* ---- operations ------------------------------------------------------------------------ */

size_t huge_cache_count(void) {
  return hc_n;
}

size_t huge_cache_total(void) {
  return hc_bytes;
}

size_t huge_cache_count_relaxed(void) {
  return atomic_load_explicit(&hc_pub_n, memory_order_relaxed);
}

uint64_t huge_cache_next_expiry(void) {
  return atomic_load_explicit(&hc_pub_next, memory_order_relaxed);
}

/* The entry a take of len bytes uses: the smallest fitting one among the first HC_SCAN of
 * the request's bin, else the first of the next non-empty bin (all fit); with roomy, the
 * largest among the first HC_SCAN of the highest bin. HC_NONE if none fits. */
static uint16_t hc_pick(size_t len, bool roomy) {
  unsigned b = roomy ? hc_bin_find(0, true) : hc_bin_of(len);
  if (b >= HC_NBINS) return HC_NONE;
  uint16_t best = HC_NONE;
  unsigned k = 0;
  for (uint16_t i = hc_bins[b]; i && k < HC_SCAN; i = hc[i].bin_next, k++) {
    size_t l = hc[i].c.len;
    if (l < len) continue;
    if (!best || (roomy ? l > hc[best].c.len : l < hc[best].c.len)) best = i;
    if (l == len && !roomy) break;
  }
  if (best || roomy) return best;
  b = hc_bin_find(b + 1, false);
  return b < HC_NBINS ? hc_bins[b] : HC_NONE;
}

/* Takes the first `len` bytes of entry i's range (all of it, or its front). */
static void hc_take_front(uint16_t i, size_t len) {
  if (hc[i].c.len > len)
    hc_cut(i, len, 0);
  else
    hc_remove(i);
  hc_publish();
}

/* Takes the piece [at, at + len) of entry i's range, the rest staying cached (one range
 * before it, one after: the one after is added with an expiry no earlier than the newest's,
 * so the age list stays sorted). The markers inside the piece but its guard page (the last
 * `guard` bytes) go to m; one on the guard page leaves the set (m->guard_kept). False,
 * nothing changed, when the rest after the piece would start with a marker, when the piece
 * holds more than HUGE_TAKE_MARKS markers or when a split finds no free entry. */
static bool hc_take_at(uint16_t i, uintptr_t at, size_t len, size_t guard, huge_marks *m) {
  uintptr_t s = hc[i].c.ptr, e = s + hc[i].c.len, end = at + len, inner = end - guard;
  m->n = 0;
  m->guard_kept = false;
  if (hc_rest_marked(end, e)) return false;
  if (hc_marks_in(at, inner) > HUGE_TAKE_MARKS) return false;
  bool split = at > s && end < e;
  if (split && hc_n == HUGE_CACHE_N) return false;
  hc_marks_cut(at, inner, m);
  if (guard && hc_mark_has(inner)) {
    hc_marks_cut(inner, end, NULL);
    m->guard_kept = true;
  }
  if (at == s) {
    hc_take_front(i, len);
    return true;
  }
  huge_cached back = hc[i].c;
  hc_cut(i, 0, e - at);
  if (split) {
    back.ptr = end;
    back.len = e - end;
    if (hc_newest && hc[hc_newest].c.expires > back.expires) back.expires = hc[hc_newest].c.expires;
    hc_insert(back);
  }
  hc_publish();
  return true;
}

/* What a placement costs, in units of taking one marker out (MADV_GUARD_REMOVE, ~0.5 us):
 * putting one in (MADV_GUARD_INSTALL) on a cached page, which is faulted in, zaps it, and the
 * zap flushes the TLB of every CPU the process runs on: an IPI per CPU, ~12 us with a second
 * thread running on this machine (a VM), and the page is faulted in again when used. */
#define HC_COST_INSTALL 8
#define HC_PLACE_MARKS  64 /* markers looked at as guard pages, per range */

/* Where in entry i's range a guarded piece of `len` bytes goes, and *cost (above): ending with
 * its guard page on a marker when one has room for the piece before it (the markers inside
 * come out: the fewest), else from the front of the first stretch without markers that holds
 * it, else from the range's front (a marker goes in, and the markers inside come out). A
 * piece never ends right before a marker (hc_take_at: the rest would start with it). */
static uintptr_t hc_place(uint16_t i, size_t len, size_t guard, size_t *cost) {
  uintptr_t s = hc[i].c.ptr, e = s + hc[i].c.len, best = s;
  size_t first = hc_mark_at(s), front_end = hc_mark_at(s + len - guard), k = front_end, j = first;
  *cost = SIZE_MAX;
  /* Ending on marker k: the markers inside are those from the first at or after the piece's
   * start (j, which only moves forward) up to k. */
  for (size_t looked = 0; k < hc_nmarks && hc_marks[k] < e && looked < HC_PLACE_MARKS;
       k++, looked++) {
    uintptr_t g = hc_marks[k], at = g + guard - len;
    if (hc_rest_marked(g + guard, e)) continue;
    while (hc_marks[j] < at) j++;
    if (k - j < *cost) {
      *cost = k - j;
      best = at;
      if (*cost == 0) return best;
    }
  }
  if (*cost <= HC_COST_INSTALL) return best;
  /* A marker put in: from the front of the first stretch without markers that holds the
   * piece, else from the range's front. */
  uintptr_t lo = s;
  for (k = first; k < hc_nmarks && hc_marks[k] < e && hc_marks[k] - lo < len; k++)
    lo = hc_marks[k] + guard;
  if (e - lo >= len && !hc_rest_marked(lo + len, e)) {
    *cost = HC_COST_INSTALL;
    return lo;
  }
  size_t c = HC_COST_INSTALL + front_end - first; /* (the markers inside from the front) */
  if (c < *cost) {
    *cost = c;
    best = s;
  }
  return best;
}

/* For a guarded piece: the range among the first HC_SCAN that fit `len` bytes (by size, from
 * i's bin up) whose placement needs the fewest madvise calls, i first; *at: where. */
static uint16_t hc_pick_placed(uint16_t i, size_t len, size_t guard, uintptr_t *at) {
  size_t cost, c;
  *at = hc_place(i, len, guard, &cost);
  unsigned looked = 0;
  for (unsigned b = hc_bin_find(hc_bin_of(len), false); cost && b < HC_NBINS;
       b = hc_bin_find(b + 1, false)) {
    for (uint16_t j = hc_bins[b]; j && cost && looked < HC_SCAN; j = hc[j].bin_next, looked++) {
      if (j == i || hc[j].c.len < len) continue;
      uintptr_t a = hc_place(j, len, guard, &c);
      if (c < cost) {
        cost = c;
        *at = a;
        i = j;
      }
    }
    if (looked >= HC_SCAN) break;
  }
  return i;
}

huge_demand huge_cache_demand(void) {
  return hc_demand;
}

/* Counts a request of len bytes in the cache's demand. */
static void hc_asked(size_t len) {
  hc_demand.asked += len;
  hc_demand.last_ms = obj_now_ms();
}

bool huge_cache_take(size_t len, size_t guard, bool roomy, huge_cached *out, huge_marks *m) {
  hc_asked(len);
  uint16_t i = hc_pick(len, roomy);
  if (!i) {
    hc_demand.missed += len;
    return false;
  }
  uintptr_t at = hc[i].c.ptr;
  /* (a roomy piece, for a block that grows, stays at the front: the rest lies behind it) */
  if (guard && hc_nmarks && !roomy) i = hc_pick_placed(i, len, guard, &at);
  *out = hc[i].c;
  out->ptr = at;
  out->len = len;
  return hc_take_at(i, at, len, guard, m);
}

bool huge_cache_absorb(uintptr_t at, uint64_t map, size_t *need, size_t guard, size_t slack,
                       huge_marks *m) {
  hc_asked(*need);
  uint16_t i = hc_lookup(hc_by_start, at);
  if (!i || hc[i].c.map != map || hc[i].c.len < *need) return false;
  if (guard && slack) {
    uintptr_t e = hc[i].c.ptr + hc[i].c.len, g0 = at + *need - guard;
    /* a marker within reach becomes the guard page: none goes in */
    size_t k = hc_mark_at(g0);
    uintptr_t g = k < hc_nmarks ? hc_marks[k] : UINTPTR_MAX; /* (the take moves the set) */
    if (g < e && g - g0 <= slack && !hc_rest_marked(g + guard, e) &&
        hc_take_at(i, at, g + guard - at, guard, m)) {
      *need = g + guard - at;
      return true;
    }
  }
  return hc_take_at(i, at, *need, guard, m);
}

/* Moves entry i's whole range to v (its markers go with the pages). */
static void hc_evict(uint16_t i, huge_victims *v) {
  huge_victim_add(v, hc[i].c.ptr, hc[i].c.len);
  hc_marks_cut(hc[i].c.ptr, hc[i].c.ptr + hc[i].c.len, NULL);
  hc_remove(i);
}

/* Makes entry i the newest, expiring at `expires` (no earlier than any other's). */
static void hc_rearm(uint16_t i, uint64_t expires) {
  hc[i].c.expires = expires;
  hc_age_unlink(i);
  hc_age_push(i);
}

void huge_cache_expire(bool all, uint64_t now, uint64_t delay, size_t keep, huge_victims *v) {
  while (hc_oldest && (all || hc[hc_oldest].c.expires <= now)) {
    if (!all && hc_bytes <= keep) {
      hc_rearm(hc_oldest, now + (delay ? delay : 1));
      continue;
    }
    hc_evict(hc_oldest, v);
  }
  hc_publish();
}

/* Merges c with the ranges of its mapping right before and right after it. */
static huge_cached hc_merge(huge_cached c) {
  uint16_t i = hc_lookup(hc_by_end, c.ptr);
  if (i && hc[i].c.map == c.map) {
    c.ptr = hc[i].c.ptr;
    c.len += hc[i].c.len;
    hc_remove(i);
  }
  i = hc_lookup(hc_by_start, c.ptr + c.len);
  if (i && hc[i].c.map == c.map) {
    c.len += hc[i].c.len;
    hc_remove(i);
  }
  return c;
}

void huge_cache_put(huge_cached c, uintptr_t mark, uint64_t now, uint64_t delay, size_t cap,
                    size_t keep, huge_victims *v) {
  huge_cache_expire(false, now, delay, keep, v);
  MA_CHECK((cap & (os_page_size() - 1)) == 0, "cache cap %zu: not a multiple of pages", cap);
  MA_CHECK(!mark || (mark > c.ptr && mark < c.ptr + c.len && hc_nmarks < HUGE_CACHE_MARKS),
           "marker %#lx of range %#lx + %zu (%zu markers)", (unsigned long)mark,
           (unsigned long)c.ptr, c.len, hc_nmarks);
  if (mark) hc_mark_add(mark);
  c = hc_merge(c);
  if (c.len > cap) {
    huge_victim_add(v, c.ptr, c.len);
    hc_marks_cut(c.ptr, c.ptr + c.len, NULL);
    hc_publish();
    return;
  }
  while (hc_oldest && (hc_n == HUGE_CACHE_N || hc_bytes + c.len > cap)) {
    uint16_t i = hc_oldest;
    size_t over = hc_bytes + c.len - cap; /* a page multiple when > 0 */
    uintptr_t end = hc[i].c.ptr + hc[i].c.len;
    /* (a tail is chained through its first page: never a marker) */
    while (hc_n < HUGE_CACHE_N && over < hc[i].c.len && hc_mark_has(end - over))
      over += os_page_size();
    if (hc_n < HUGE_CACHE_N && over < hc[i].c.len) { /* only its tail: no more than needed */
      hc_cut(i, 0, over);
      hc_marks_cut(end - over, end, NULL);
      huge_victim_add(v, end - over, over);
      break;
    }
    hc_evict(i, v);
  }
  c.expires = now + delay;
  hc_insert(c);
  hc_publish();
}

/* ---- checks ------------------------------------------------------------------------------ */

/* Heap sort by address, in place (qsort may call malloc: not under huge_cache_lock). */
static void hc_sift(huge_cached *a, size_t i, size_t n) {
  for (size_t c; (c = 2 * i + 1) < n; i = c) {
    if (c + 1 < n && a[c + 1].ptr > a[c].ptr) c++;
    if (a[i].ptr >= a[c].ptr) return;
    huge_cached t = a[i];
    a[i] = a[c];
    a[c] = t;
  }
}

size_t huge_cache_sorted(huge_cached *out) {
  size_t n = 0;
  for (uint16_t i = hc_oldest; i; i = hc[i].age_next) out[n++] = hc[i].c;
  for (size_t i = n / 2; i-- > 0;) hc_sift(out, i, n);
  for (size_t k = n; k-- > 1;) {
    huge_cached t = out[0];
    out[0] = out[k];
    out[k] = t;
    hc_sift(out, 0, k);
  }
  return n;
}

void huge_cache_check_locked(void) {
  static huge_cached s[HUGE_CACHE_N]; /* huge_cache_lock held */
  size_t ps = os_page_size(), bytes = 0, n = 0, inbins = 0;
  uint64_t last = 0;
  MA_VERIFY(hc_n <= HUGE_CACHE_N, "large-block cache holds %zu ranges", hc_n);
  for (uint16_t i = hc_oldest; i; i = hc[i].age_next) {
    const huge_cached *c = &hc[i].c;
    MA_VERIFY(++n <= hc_n, "age list longer than %zu ranges", hc_n);
    MA_VERIFY(c->len > 0 && (c->ptr & (ps - 1)) == 0 && (c->len & (ps - 1)) == 0,
              "cached range %#lx + %zu", (unsigned long)c->ptr, c->len);
    MA_VERIFY(c->ptr + c->len > c->ptr, "cached range %#lx + %zu wraps", (unsigned long)c->ptr,
              c->len);
    MA_VERIFY(!hc_mark_has(c->ptr), "cached range %#lx starts with a guard marker",
              (unsigned long)c->ptr);
    MA_VERIFY(c->expires >= last, "cached range %#lx expires before the one cached earlier",
              (unsigned long)c->ptr);
    MA_VERIFY(hc[i].bin == hc_bin_of(c->len), "cached range %#lx in bin %u", (unsigned long)c->ptr,
              hc[i].bin);
    MA_VERIFY(hc_lookup(hc_by_start, c->ptr) == i && hc_lookup(hc_by_end, c->ptr + c->len) == i,
              "cached range %#lx + %zu missing from the address hashes", (unsigned long)c->ptr,
              c->len);
    last = c->expires;
    bytes += c->len;
  }
  for (unsigned b = 0; b < HC_NBINS; b++) {
    bool set = (hc_binmap[b / 64] >> (b % 64)) & 1;
    MA_VERIFY(set == (hc_bins[b] != HC_NONE), "bin %u: bitmap %d", b, set);
    for (uint16_t i = hc_bins[b]; i; i = hc[i].bin_next) {
      MA_VERIFY(hc[i].bin == b && ++inbins <= hc_n, "bin %u lists entry %u", b, i);
    }
  }
  MA_VERIFY(n == hc_n && inbins == hc_n, "%zu ranges: %zu by age, %zu in bins", hc_n, n, inbins);
  MA_VERIFY(bytes == hc_bytes, "cached ranges hold %zu bytes, the total says %zu", bytes, hc_bytes);
  n = huge_cache_sorted(s);
  for (size_t i = 1; i < n; i++)
    MA_VERIFY(s[i - 1].ptr + s[i - 1].len <= s[i].ptr,
              "cached ranges overlap: %#lx + %zu and %#lx + %zu", (unsigned long)s[i - 1].ptr,
              s[i - 1].len, (unsigned long)s[i].ptr, s[i].len);
  /* Every marker lies in a cached range (both sorted: one pass). */
  MA_VERIFY(hc_nmarks <= HUGE_CACHE_MARKS, "%zu markers", hc_nmarks);
  for (size_t k = 0, r = 0; k < hc_nmarks; k++) {
    MA_VERIFY(k == 0 || hc_marks[k - 1] < hc_marks[k], "marker set unsorted at %zu", k);
    MA_VERIFY((hc_marks[k] & (ps - 1)) == 0, "marker %#lx", (unsigned long)hc_marks[k]);
    while (r < n && s[r].ptr + s[r].len <= hc_marks[k]) r++;
    MA_VERIFY(r < n && s[r].ptr <= hc_marks[k], "marker %#lx in no cached range",
              (unsigned long)hc_marks[k]);
  }
}
