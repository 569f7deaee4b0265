/* Consistency checks (issue 12 item 1).
 *
 * MA_CHECK(cond, fmt, ...) is compiled into the slow paths: in a build configured with
 * -DMAPALLOC_DEBUG=ON (MA_DEBUG=1) a false condition writes
 *   mapalloc: check failed at FILE:LINE: COND (VALUES)
 * to fd 2 with write() (no malloc) and aborts; in every other build it is dead code (the
 * condition and the values are never evaluated, but they are still compiled, so they
 * cannot rot). Never on the malloc/free fast paths.
 *
 * MA_VERIFY is the same check in every build: the walks (ma_heap_check, ma_pool_check,
 * obj_bins_check) use it, since a caller who asks for a walk wants its answer.
 */
#ifndef MAPALLOC_OBJ_CHECK_H
#define MAPALLOC_OBJ_CHECK_H

#include <stddef.h>
#include <stdint.h>

#if defined(MA_DEBUG) && MA_DEBUG
#define MA_DEBUG_ON 1
#else
#define MA_DEBUG_ON 0
#endif

/* Writes "mapalloc: check failed at file:line: cond (fmt...)" to fd 2 and aborts. The
 * message is formatted into a stack buffer (vsnprintf with integer and pointer
 * conversions only: no allocation). */
__attribute__((noreturn, cold, format(printf, 4, 5))) void
ma_check_fail(const char *file, int line, const char *cond, const char *fmt, ...);

#define MA_VERIFY(cond, ...)                                                                       \
  do {                                                                                             \
    if (__builtin_expect(!(cond), 0)) ma_check_fail(__FILE__, __LINE__, #cond, __VA_ARGS__);       \
  } while (0)

#define MA_CHECK(cond, ...)                                                                        \
  do {                                                                                             \
    if (MA_DEBUG_ON) MA_VERIFY(cond, __VA_ARGS__);                                                 \
  } while (0)

/* ---- walks of the object layer (obj_check.c) ------------------------------------------
 * Each aborts through MA_VERIFY at the first inconsistency; the caller guarantees that
 * nothing changes what it walks meanwhile (the owner thread, or the locks that stand for
 * it: a heap's lock, a parked cache claimed under space->lock and trim_lock). */
struct obj_bins;
struct obj_space;
typedef struct obj_check_totals {
  size_t segments;  /* segments walked */
  size_t chunks;    /* 4 MiB chunks they cover (segment map entries) */
  size_t reserved;  /* bytes reserved (segment sizes) */
  size_t committed; /* headers + committed slabs */
  size_t capacity;  /* blocks of active slabs */
  size_t slabs;     /* active slabs */
} obj_check_totals;

/* Every segment of bs (magic, space, owner, kind, list links, map entries, free mask,
 * active count), every slab (the cnt/notify encoding against the used count, free and
 * local_free lists walked link by link: each a carved block of the slab tagged free,
 * lengths + used == carved; list membership: notify -1 is its bin's current slab, 0 is on
 * its bin's partial list, INT32_MAX is full), every bin (cur, partial list links), and the
 * byte accounting (retained, active_bytes, peak_bytes). Adds to *t (may be NULL). */
void obj_bins_check(const struct obj_bins *bs, obj_check_totals *t);

/* The retained / active / peak byte accounting of bs alone (cheaper: no list walks), for
 * the slow paths of a debug build. */
void obj_bins_check_accounting(const struct obj_bins *bs);

/* Walks the whole segment map: every entry tagged `tag` must name the first chunk of a
 * live segment (magic) of space sp that covers the entry's chunk. Returns the number of
 * such entries. Only for a space whose segments cannot be released meanwhile. */
size_t obj_map_check(const struct obj_space *sp, uint32_t tag);

#endif /* MAPALLOC_OBJ_CHECK_H */
