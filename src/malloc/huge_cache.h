/* The cache of freed large-block page ranges (huge_cache.c), used by huge.c under its lock.
 *
 * Every operation is O(1) in the number of cached ranges (at most HUGE_CACHE_N):
 * - size bins, one per page count up to 4 MiB, then eight per power of two, with a bitmap
 *   of the non-empty ones: a take uses a range of the request's own size when there is one
 *   (else a fitting one among the first few of its bin), else the first range of the next
 *   non-empty bin, where every range fits;
 * - two hash tables keyed by start and by end address: a freed range finds the ranges of
 *   its mapping next to it (merge), a growing block the range right behind it (absorb);
 * - a list by age, oldest first (a range expires the purge delay after it was cached, so
 *   the oldest expires first): expiry and eviction take its head.
 * Ranges to unmap ("victims") are chained through their own first page, so that no array
 * on the stack grows with the cache; the caller unmaps them once the lock is released.
 */
#ifndef MAPALLOC_HUGE_CACHE_H
#define MAPALLOC_HUGE_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HUGE_CACHE_N 1024 /* most ranges cached */

typedef struct huge_cached {
  uintptr_t ptr;
  size_t len;
  uint64_t expires; /* ms */
  uint64_t map;     /* id of the mapping it is a piece of: only ranges of one mapping merge */
  bool guarded;     /* its last page is a guard marker (secure mode: a freed block's guard,
                       kept so that the next guarded block cut from the range's end needs no
                       madvise); such a range has at least one page more, and no range
                       holds a marker anywhere else */
} huge_cached;

/* Ranges to unmap, chained through their first bytes (each is read-write, page-aligned and
 * no longer in the cache or the block table). */
typedef struct huge_victims {
  uintptr_t head;
  size_t n, bytes;
} huge_victims;

/* Adds [ptr, ptr + len) to v (writes its first 16 bytes). */
void huge_victim_add(huge_victims *v, uintptr_t ptr, size_t len);
/* Unmaps every range of v (no lock held; errno kept). */
void huge_victims_unmap(huge_victims *v);

/* All of the following: huge_lock held. */
size_t huge_cache_count(void);
size_t huge_cache_total(void); /* bytes */
/* Takes `len` bytes of a range of at least `len` bytes (the rest stays cached): a
 * smallest-fitting one, or with `roomy` a largest one. For a guarded request (`guard`: the
 * size of the guard page that ends `len`, else 0) a guarded range gives its end, marker
 * included (out->guarded: no madvise needed); any other take gives a range's front, never
 * a marker (out->guarded false). False if none fits. */
bool huge_cache_take(size_t len, size_t guard, bool roomy, huge_cached *out);
/* Takes `need` bytes of the range of mapping `map` that starts exactly at `at`, for a block
 * growing in place: with `guarded` the range's marker may end the piece (it becomes the
 * block's new guard; *marked says so), else the piece never holds one. */
bool huge_cache_absorb(uintptr_t at, uint64_t map, size_t need, bool guarded, bool *marked);
/* Secure mode, when no range fits a guarded request of `len` bytes: ranges of one mapping
 * that follow each other, joined only by guard markers (a freed guarded block keeps its
 * marker, so it merges with no range after it), that hold `len` bytes together. Takes them
 * out of the cache as one range (*out, guarded if its last piece was) and lists in
 * marks[] the *nmarks (at most max) marker pages inside it, which the caller removes before
 * the range is used. Looks at chains from the HC_CHAIN_SCAN newest ranges. False if none. */
bool huge_cache_pull_chain(size_t len, huge_cached *out, uintptr_t *marks, size_t max,
                           size_t *nmarks);
/* Moves the ranges expired at `now` (every range with `all`) to v. */
void huge_cache_expire(bool all, uint64_t now, huge_victims *v);
/* Caches c, merged with the ranges of its mapping around it, expiring `delay` ms after
 * `now`; evicts the oldest ranges (or only the tail of the oldest) to keep at most
 * HUGE_CACHE_N ranges and `cap` bytes; c itself goes to v when it is over `cap` alone. */
void huge_cache_put(huge_cached c, uint64_t now, uint64_t delay, size_t cap, huge_victims *v);
/* The cache's size and earliest expiry (UINT64_MAX when empty), readable without the lock:
 * updated by every change above. */
size_t huge_cache_count_relaxed(void);
uint64_t huge_cache_next_expiry(void);
/* Copies the ranges sorted by address into out (room for HUGE_CACHE_N); returns how many. */
size_t huge_cache_sorted(huge_cached *out);
/* Aborts (MA_VERIFY) on an inconsistency of the cache's structures. */
void huge_cache_check_locked(void);

#endif /* MAPALLOC_HUGE_CACHE_H */
