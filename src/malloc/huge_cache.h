/* The cache of freed large-block page ranges (huge_cache.c), used by huge.c under huge_cache_lock.
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
} huge_cached;

/* Secure mode: a freed block's guard marker stays in its page, inside the cached range,
 * listed in the cache's marker set (a sorted array of their addresses, HUGE_CACHE_MARKS at
 * most). Ranges merge across markers as across any page; a piece taken from a range is
 * placed so that its guard page lands on a marker when one is there (no madvise), and the
 * markers left inside the piece are handed to the caller to take out before the piece is
 * used. No cached range starts with a marker (victims are chained through their first
 * page). */
#define HUGE_CACHE_MARKS 2048
#define HUGE_TAKE_MARKS  64 /* most markers inside one piece taken (else the take fails) */
typedef struct huge_marks {
  uintptr_t rm[HUGE_TAKE_MARKS]; /* marker pages inside the piece: the caller removes them */
  size_t n;
  bool guard_kept; /* the piece's guard page (its last) holds a marker already */
} huge_marks;

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

/* All of the following: huge_cache_lock held. */
size_t huge_cache_count(void);
size_t huge_cache_total(void); /* bytes */
/* Takes a piece of `len` bytes of a range of at least `len` bytes (the rest stays cached): a
 * smallest-fitting range, or with `roomy` a largest one. `guard`: the size of the guard page
 * that ends the piece (secure), else 0. The piece is the range's front (always for `roomy`:
 * the rest lies behind it, for a block that grows), or, for a guarded request, placed where
 * it holds no marker and its guard page lands on one if it can (hc_place); *m lists the markers
 * inside the piece (the caller takes them out) and says whether its guard page holds one. False if
 * none fits (or the piece would hold more than HUGE_TAKE_MARKS markers, or leave a range that
 * starts with one). */
bool huge_cache_take(size_t len, size_t guard, bool roomy, huge_cached *out, huge_marks *m);
/* Takes the first *need bytes of the range of mapping `map` that starts exactly at `at`,
 * for a block growing in place (`guard`, *m: as huge_cache_take). With a guard, up to
 * `slack` bytes more when that ends the piece on a marker (no madvise to put one in): *need
 * then says how much was taken. */
bool huge_cache_absorb(uintptr_t at, uint64_t map, size_t *need, size_t guard, size_t slack,
                       huge_marks *m);
/* What the cache was asked for so far: bytes asked of huge_cache_take and huge_cache_absorb
 * (served or not), bytes of takes that found no range that fits, and when it was last asked
 * (obj_now_ms; 0: never). */
typedef struct huge_demand {
  size_t asked, missed;
  uint64_t last_ms;
} huge_demand;
huge_demand huge_cache_demand(void);
/* Whether the marker set has room for one more (huge_cache_put's `mark`). */
bool huge_cache_mark_room(void);
/* Moves the ranges expired at `now` (every range with `all`) to v, oldest first, while the
 * cache holds more than `keep` bytes; the expired ranges it keeps expire again `delay` ms
 * after `now`. */
void huge_cache_expire(bool all, uint64_t now, uint64_t delay, size_t keep, huge_victims *v);
/* Caches c, merged with the ranges of its mapping around it, expiring `delay` ms after
 * `now` (first the expired ranges go, as huge_cache_expire says with `keep`); evicts the
 * oldest ranges (or only the tail of the oldest) to keep at most HUGE_CACHE_N ranges and
 * `cap` bytes (a multiple of pages); c itself goes to v when it is over `cap` alone.
 * `mark`: 0, or the address of a guard marker in c (not its first page), which joins the
 * marker set (the caller checked huge_cache_mark_room). */
void huge_cache_put(huge_cached c, uintptr_t mark, uint64_t now, uint64_t delay, size_t cap,
                    size_t keep, huge_victims *v);
/* The cache's size and earliest expiry (UINT64_MAX when empty), readable without the lock:
 * updated by every change above. */
size_t huge_cache_count_relaxed(void);
uint64_t huge_cache_next_expiry(void);
/* Copies the ranges sorted by address into out (room for HUGE_CACHE_N); returns how many. */
size_t huge_cache_sorted(huge_cached *out);
/* Aborts (MA_VERIFY) on an inconsistency of the cache's structures. */
void huge_cache_check_locked(void);

#endif /* MAPALLOC_HUGE_CACHE_H */
