/* The public page layer (include/mapalloc/pages.h): argument checks, the W^X policy,
 * placement (hint, strict hint, alignment), huge page choice and the split/merge
 * bookkeeping. Portable: everything system specific is an os_* primitive (os_linux.c).
 *
 * Every function checks all of its arguments before the first system call, so a bad
 * argument never changes anything; where a later step fails, the earlier ones are undone.
 */
#include "os/os.h"

#include <errno.h>

#define PROT_ALL  (MA_PROT_READ | MA_PROT_WRITE | MA_PROT_EXEC)
#define FLAGS_ALL ((MA_MAP_JIT << 1) - 1u)

/* The name anonymous private maps carry in /proc/PID/maps: [anon:mapalloc]. */
static const char map_name[] = "mapalloc";

/* ---- System facts ---------------------------------------------------------------------- */

size_t ma_page_size(void) {
  return os_page_size();
}

size_t ma_allocation_granularity(void) {
  return os_page_size();
}

size_t ma_huge_page_sizes(size_t *out, size_t max) {
  if (!out) max = 0;
  return os_huge_page_sizes(out, max);
}

/* ---- Helpers ------------------------------------------------------------------------------ */

static bool is_pow2(size_t x) {
  return x && (x & (x - 1)) == 0;
}

/* W^X: writable and executable at once only for maps created with MA_MAP_JIT. */
static bool wx_allowed(unsigned prot, unsigned flags) {
  return (prot & (MA_PROT_WRITE | MA_PROT_EXEC)) != (MA_PROT_WRITE | MA_PROT_EXEC) ||
         (flags & MA_MAP_JIT);
}

static size_t map_page(const ma_map *m) {
  return m->page_shift ? (size_t)1 << m->page_shift : os_page_size();
}

static bool map_valid(const ma_map *m) {
  return m && m->addr && m->len;
}

/* [off, off+len) is a non-empty, page aligned range inside the map (overflow-safe). */
static int check_range(const ma_map *m, size_t off, size_t len) {
  if (!map_valid(m)) return -EINVAL;
  size_t pg = map_page(m);
  if (len == 0 || (off & (pg - 1)) || (len & (pg - 1))) return -EINVAL;
  if (off > m->len || len > m->len - off) return -EINVAL;
  return 0;
}

static void *at(const ma_map *m, size_t off) {
  return (char *)m->addr + off;
}

/* Private anonymous maps of base pages are decommitted by replacing the range with a fresh
 * reservation, which also drops the commit charge; they carry our name. */
static bool private_anon(unsigned flags, int fd, unsigned page_shift) {
  return fd < 0 && !(flags & MA_MAP_SHARED) && page_shift == 0;
}

/* Re-applies the per-range properties a fresh mapping of a private anonymous map lacks.
 * Best effort: the range is an empty reservation, which has nothing to dump or to pass to
 * a fork child; ma_map_commit applies DONTDUMP/DONTFORK again before anything is in it. */
static void restore_anon_props(void *addr, size_t len, unsigned flags) {
  os_name(addr, len, map_name);
  if (flags & MA_MAP_DONTDUMP) (void)os_advise(addr, len, MA_ADV_DONTDUMP);
  if (flags & MA_MAP_DONTFORK) (void)os_advise(addr, len, MA_ADV_DONTFORK);
  if (flags & MA_MAP_HUGE_TRY) (void)os_advise(addr, len, MA_ADV_HUGEPAGE);
}

/* DONTDUMP/DONTFORK on a committed range of a private anonymous map: a decommit replaced
 * the range with a fresh one, and restore_anon_props may have been refused there. */
static int ensure_anon_props(const ma_map *m, void *addr, size_t len) {
  int r = 0;
  if (!private_anon(m->flags, m->fd, m->page_shift)) return 0;
  if ((m->flags & MA_MAP_DONTDUMP) && (r = os_advise(addr, len, MA_ADV_DONTDUMP)) != 0) return r;
  if ((m->flags & MA_MAP_DONTFORK) && (r = os_advise(addr, len, MA_ADV_DONTFORK)) != 0) return r;
  return 0;
}

/* ---- Create and destroy --------------------------------------------------------------------- */

/* Explicit huge pages: picks the default size for shift 0 (the smallest supported) and
 * checks the system has the size. */
static int huge_shift_for(unsigned *shift) {
  size_t sizes[16];
  size_t n = os_huge_page_sizes(sizes, 16);
  if (n > 16) n = 16;
  if (n == 0) return -ENOTSUP;
  if (*shift == 0) {
    *shift = (unsigned)__builtin_ctzl(sizes[0]);
    return 0;
  }
  for (size_t i = 0; i < n; i++)
    if (sizes[i] == (size_t)1 << *shift) return 0;
  return -ENOTSUP;
}

/* Maps `len` bytes whose start is a multiple of `align`. Tries the hint first; otherwise
 * reserves len + align - page bytes, maps the real thing in place at the aligned start and
 * trims both ends. On any failure nothing stays mapped. */
static int map_aligned(void *hint, size_t len, size_t align, size_t natural, unsigned prot,
                       unsigned flags, int fd, uint64_t off, unsigned shift, void **out) {
  void *p;
  if (align <= natural) return os_map(hint, len, prot, flags, fd, off, shift, OS_PLACE_HINT, out);
  if (hint && ((uintptr_t)hint & (align - 1)) == 0) {
    int r = os_map(hint, len, prot, flags, fd, off, shift, OS_PLACE_HINT, &p);
    if (r == 0 && ((uintptr_t)p & (align - 1)) == 0) {
      *out = p;
      return 0;
    }
    if (r == 0) (void)os_release_owned(p, len);
  }
  size_t ps = os_page_size();
  size_t over = len + (align - ps);
  if (over < len) return -ENOMEM;
  char *res = os_reserve(over, 0, NULL);
  if (!res) return errno > 0 ? -errno : -ENOMEM; /* never 0 or positive: out is unset */
  uintptr_t start = ((uintptr_t)res + align - 1) & ~(uintptr_t)(align - 1);
  int r = os_map((void *)start, len, prot, flags, fd, off, shift, OS_PLACE_FIXED, &p);
  if (r != 0) {
    (void)os_release_owned(res, over);
    return r;
  }
  /* A trim that cannot be unmapped now is deferred (os_release_owned); only a full table
   * fails the call, and then what is not in the table yet goes. */
  size_t head = start - (uintptr_t)res, tail = over - head - len;
  if (head && (r = os_release_owned(res, head)) != 0) {
    (void)os_release_owned(res, over);
    return r;
  }
  if (tail && (r = os_release_owned((char *)start + len, tail)) != 0) {
    (void)os_release_owned((void *)start, len + tail);
    return r;
  }
  *out = p;
  return 0;
}

/* One attempt at creating the map with base pages (shift 0) or explicit huge pages. */
static int create_with(const ma_map_opts *o, unsigned shift, size_t align, ma_map *out) {
  size_t ps = os_page_size();
  size_t pg = shift ? (size_t)1 << shift : ps;
  if (o->len > SIZE_MAX - (pg - 1)) return -EINVAL;
  size_t len = (o->len + pg - 1) & ~(pg - 1);
  if (align < pg) align = pg;

  unsigned flags = o->flags;
  /* Explicit huge pages are reserved at mmap time so a shortage fails here with -ENOMEM
   * and never as a SIGBUS on first touch; MAP_NORESERVE would undo that. */
  unsigned mflags = flags & ~(unsigned)MA_MAP_NORESERVE;
  if (!shift && (flags & (MA_MAP_NORESERVE | MA_MAP_RESERVE))) mflags |= MA_MAP_NORESERVE;
  unsigned prot = (flags & MA_MAP_RESERVE) ? MA_PROT_NONE : o->prot;

  void *p = NULL;
  int r;
  if (flags & MA_MAP_STRICT_HINT) {
    if ((uintptr_t)o->hint & (align - 1)) return -EINVAL;
    r = os_map(o->hint, len, prot, mflags, o->fd, o->offset, shift, OS_PLACE_NOREPLACE, &p);
  } else {
    r = map_aligned(o->hint, len, align, pg, prot, mflags, o->fd, o->offset, shift, &p);
  }
  if (r != 0) return r;

  /* A reserve-only map is locked range by range as it is committed. */
  if ((flags & MA_MAP_LOCKED) && !(flags & MA_MAP_RESERVE) && (r = os_lock(p, len, false)) != 0)
    goto unmap;
  if ((flags & MA_MAP_DONTDUMP) && (r = os_advise(p, len, MA_ADV_DONTDUMP)) != 0) goto unmap;
  if ((flags & MA_MAP_DONTFORK) && (r = os_advise(p, len, MA_ADV_DONTFORK)) != 0) goto unmap;
  if (private_anon(flags, o->fd, shift)) os_name(p, len, map_name);

  *out = (ma_map){.addr = p,
                  .len = len,
                  .prot = o->prot,
                  .flags = flags,
                  .fd = o->fd < 0 ? -1 : o->fd,
                  .offset = o->fd < 0 ? 0 : o->offset,
                  .page_shift = shift};
  return 0;
unmap:
  (void)os_release_owned(p, len);
  return r;
}

int ma_map_create(const ma_map_opts *o, ma_map *out) {
  if (!o || !out) return -EINVAL;
  unsigned flags = o->flags;
  size_t ps = os_page_size();
  size_t align = o->align ? o->align : ps;
  if (o->len == 0 || (o->prot & ~PROT_ALL) || (flags & ~FLAGS_ALL)) return -EINVAL;
  if ((flags & MA_MAP_HUGE) && (flags & MA_MAP_HUGE_TRY)) return -EINVAL;
  if ((flags & MA_MAP_RESERVE) && o->fd >= 0) return -EINVAL;
  if ((flags & MA_MAP_HUGE) && o->fd >= 0) return -EINVAL; /* hugetlbfs: map the file */
  if (o->page_shift && (!(flags & (MA_MAP_HUGE | MA_MAP_HUGE_TRY)) || o->page_shift < 12 ||
                        o->page_shift >= 8 * sizeof(size_t) - 1))
    return -EINVAL;
  if ((flags & MA_MAP_STRICT_HINT) && (!o->hint || ((uintptr_t)o->hint & (ps - 1)))) return -EINVAL;
  if (!is_pow2(align) || align < ps) return -EINVAL;
  if (o->fd < -1) return -EBADF;
  if (o->fd >= 0 && ((o->offset & (ps - 1)) || o->offset > (uint64_t)INT64_MAX)) return -EINVAL;
  if (!wx_allowed(o->prot, flags)) return -EPERM;

  if ((flags & (MA_MAP_HUGE | MA_MAP_HUGE_TRY)) && o->fd < 0) {
    unsigned shift = o->page_shift;
    int r = huge_shift_for(&shift);
    if (r == 0) r = create_with(o, shift, align, out);
    if (r == 0) {
      out->flags = (flags & ~(unsigned)MA_MAP_HUGE_TRY) | MA_MAP_HUGE;
      return 0;
    }
    if (flags & MA_MAP_HUGE) return r;
    if (r == -EEXIST) return r; /* the strict hint is taken whatever the page size */
  }

  /* Base pages; with MA_MAP_HUGE_TRY, transparent huge pages where the kernel has them:
   * align to the smallest huge size (without a hint) so whole huge pages fit. */
  if ((flags & MA_MAP_HUGE_TRY) && !o->hint) {
    size_t huge;
    if (os_huge_page_sizes(&huge, 1) && o->len >= huge && align < huge) align = huge;
  }
  int r = create_with(o, 0, align, out);
  if (r == 0 && (flags & MA_MAP_HUGE_TRY)) (void)os_advise(out->addr, out->len, MA_ADV_HUGEPAGE);
  return r;
}

int ma_map_destroy(ma_map *m) {
  if (!map_valid(m)) return -EINVAL;
  int r = os_release(m->addr, m->len);
  if (r != 0) return r;
  *m = (ma_map){.fd = -1};
  return 0;
}

/* ---- Protection -------------------------------------------------------------------------- */

/* The committed parts of a reserve-only map, found in /proc/self/maps (committed = not
 * PROT_NONE), a batch at a time. */
enum { COMMITTED_BATCH = 64 };
struct committed {
  uintptr_t lo, hi, next; /* the map; where the next batch starts */
  size_t n;
  struct {
    uintptr_t start, end;
    unsigned prot;
  } r[COMMITTED_BATCH];
};

static int committed_cb(const ma_area *a, void *ctx) {
  struct committed *c = ctx;
  if (a->prot == MA_PROT_NONE) return 0;
  if (c->n == COMMITTED_BATCH) {
    c->next = a->start > c->lo ? a->start : c->lo;
    return 1;
  }
  c->r[c->n].start = a->start > c->lo ? a->start : c->lo;
  c->r[c->n].end = a->end < c->hi ? a->end : c->hi;
  c->r[c->n].prot = a->prot;
  c->n++;
  return 0;
}

/* Gives every committed range of a reserve-only map `prot`; reserved ranges stay
 * inaccessible. If the kernel refuses part-way, the ranges of the current batch are put
 * back (the batch holds COMMITTED_BATCH ranges: all of them for any usual map). */
static int protect_committed(ma_map *m, unsigned prot) {
  struct committed c;
  c.lo = (uintptr_t)m->addr;
  c.hi = c.lo + m->len;
  for (uintptr_t from = c.lo; from < c.hi;) {
    c.n = 0;
    c.next = c.hi;
    int r = ma_areas_query(0, from, c.hi, committed_cb, &c);
    if (r < 0) return r;
    for (size_t i = 0; i < c.n; i++) {
      r = os_protect((void *)c.r[i].start, c.r[i].end - c.r[i].start, prot);
      if (r != 0) {
        while (i--) (void)os_protect((void *)c.r[i].start, c.r[i].end - c.r[i].start, c.r[i].prot);
        return r;
      }
    }
    from = c.next;
  }
  return 0;
}

int ma_map_protect(ma_map *m, unsigned prot) {
  if (!map_valid(m) || (prot & ~PROT_ALL)) return -EINVAL;
  if (!wx_allowed(prot, m->flags)) return -EPERM;
  int r =
      (m->flags & MA_MAP_RESERVE) ? protect_committed(m, prot) : os_protect(m->addr, m->len, prot);
  if (r != 0) return r;
  m->prot = prot;
  return 0;
}

int ma_map_protect_range(ma_map *m, size_t off, size_t len, unsigned prot) {
  int r = check_range(m, off, len);
  if (r != 0) return r;
  if (prot & ~PROT_ALL) return -EINVAL;
  if (!wx_allowed(prot, m->flags)) return -EPERM;
  return os_protect(at(m, off), len, prot);
}

/* ---- Commit and decommit ----------------------------------------------------------------- */

int ma_map_commit(ma_map *m, size_t off, size_t len) {
  int r = check_range(m, off, len);
  if (r != 0) return r;
  void *p = at(m, off);
  if ((r = os_protect(p, len, m->prot)) != 0) return r;
  /* A locked map's committed pages are locked (mlock cannot lock an inaccessible range, so
   * this comes second); if that or the dump/fork advice is refused, the range goes back to
   * inaccessible. */
  if ((r = ensure_anon_props(m, p, len)) != 0 ||
      ((m->flags & MA_MAP_LOCKED) && (r = os_lock(p, len, false)) != 0)) {
    (void)os_protect(p, len, MA_PROT_NONE);
    return r;
  }
  if ((m->flags & MA_MAP_POPULATE) && m->prot != MA_PROT_NONE)
    os_prefault(p, len, (m->prot & MA_PROT_WRITE) && !(m->fd >= 0 && !(m->flags & MA_MAP_SHARED)));
  return 0;
}

int ma_map_decommit(ma_map *m, size_t off, size_t len) {
  int r = check_range(m, off, len);
  if (r != 0) return r;
  void *p = at(m, off);
  if (private_anon(m->flags, m->fd, m->page_shift)) {
    if ((r = os_decommit(p, len)) != 0) return r;
    restore_anon_props(p, len, m->flags);
    return 0;
  }
  /* Shared, file and huge page maps keep their mapping: drop the pages from it (locked
   * pages cannot be dropped, so unlock them first) and make the range inaccessible. */
  if ((r = os_protect(p, len, MA_PROT_NONE)) != 0) return r;
  if ((m->flags & MA_MAP_LOCKED) && (r = os_unlock(p, len)) != 0) goto restore;
  if ((r = os_reset(p, len)) != 0) {
    if (m->flags & MA_MAP_LOCKED) (void)os_lock(p, len, false);
    goto restore;
  }
  return 0;
restore:
  (void)os_protect(p, len, m->prot);
  return r;
}

/* ---- Locking and flushing ---------------------------------------------------------------- */

/* The kernel marks the areas of the range locked before it faults them in, and keeps the
 * mark when it then fails (an inaccessible page, RLIMIT_MEMLOCK): a refused lock would leave
 * part of the range locked, and a locked shared page cannot be decommitted. So a failure
 * unlocks the range again, except in a MA_MAP_LOCKED map, whose committed pages must stay
 * locked (its decommit unlocks by itself). */
static int lock_range(ma_map *m, size_t off, size_t len, bool on_fault) {
  int r = check_range(m, off, len);
  if (r != 0) return r;
  r = os_lock(at(m, off), len, on_fault);
  if (r != 0 && r != -ENOTSUP && !(m->flags & MA_MAP_LOCKED)) (void)os_unlock(at(m, off), len);
  return r;
}

int ma_map_lock(ma_map *m, size_t off, size_t len) {
  return lock_range(m, off, len, false);
}

int ma_map_lock_on_fault(ma_map *m, size_t off, size_t len) {
  return lock_range(m, off, len, true);
}

int ma_map_unlock(ma_map *m, size_t off, size_t len) {
  int r = check_range(m, off, len);
  return r ? r : os_unlock(at(m, off), len);
}

int ma_map_flush(ma_map *m, size_t off, size_t len, bool async) {
  int r = check_range(m, off, len);
  if (r != 0 || m->fd < 0) return r;
  return os_sync(at(m, off), len, async);
}

void ma_flush_icache(void *addr, size_t len) {
  if (!addr || !len) return;
  __builtin___clear_cache((char *)addr, (char *)addr + len);
}

/* ---- Advice ------------------------------------------------------------------------------ */

int ma_map_advise(ma_map *m, size_t off, size_t len, enum ma_advice adv) {
  int r = check_range(m, off, len);
  if (r != 0) return r;
  if ((unsigned)adv > (unsigned)MA_ADV_PAGEOUT) return -EINVAL;
  return os_advise(at(m, off), len, adv);
}

/* ---- Split and merge --------------------------------------------------------------------- */

int ma_map_split(ma_map *m, size_t off, ma_map *tail) {
  if (!map_valid(m) || !tail || tail == m) return -EINVAL;
  if (off == 0 || off >= m->len || (off & (map_page(m) - 1))) return -EINVAL;
  *tail = *m;
  tail->addr = at(m, off);
  tail->len = m->len - off;
  if (m->fd >= 0) tail->offset = m->offset + off;
  m->len = off;
  return 0;
}

int ma_map_merge(ma_map *m, ma_map *next) {
  if (!map_valid(m) || !map_valid(next) || m == next) return -EINVAL;
  if ((uintptr_t)m->addr > UINTPTR_MAX - m->len || at(m, m->len) != next->addr) return -EINVAL;
  if (m->len > SIZE_MAX - next->len) return -EINVAL;
  if (m->prot != next->prot || m->flags != next->flags || m->fd != next->fd ||
      m->page_shift != next->page_shift)
    return -EINVAL;
  if (m->fd >= 0 && next->offset != m->offset + m->len) return -EINVAL;
  m->len += next->len;
  *next = (ma_map){.fd = -1};
  return 0;
}

/* ---- Process memory areas ---------------------------------------------------------------- */

int ma_areas_query(int pid, uintptr_t start, uintptr_t end, int (*fn)(const ma_area *, void *ctx),
                   void *ctx) {
  if (pid < 0 || !fn || start >= end) return -EINVAL;
  return os_areas_query(pid, start, end, fn, ctx);
}
