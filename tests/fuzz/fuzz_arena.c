/* libFuzzer target for the mapping arena (include/mapalloc/arena.h).
 *
 * Each input gets an arena of NPG pages (flags DONTDUMP, DONTFORK, HUGE_TRY, LOCKED) and a memfd of
 * FPG pages, opened a second time read-only. The bytes are a program of operations at page-aligned
 * sub-ranges: add an anonymous mapping, add a mapping of the memfd (read-write or read-only
 * descriptor), remove, protect, advise (DONTNEED, REMOVE, WILLNEED), flush, write a value into
 * pages, check pages, and calls with bad arguments. A per-page shadow holds which record covers the
 * page (records split as the header says: remove and protect cut them, nothing merges), its
 * descriptor, file page and protection, and the value each page (or file page) holds.
 * After every operation the return value must be the one the shadow predicts (on failure
 * nothing may change), foreach/count/find must report exactly the shadow's records, mapped
 * readable pages must read back the shadow's values (a memfd page shows the file's value
 * through every mapping of it), and reserved or PROT_NONE pages must not be readable. */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fuzz_common.h"
#include "mapalloc/arena.h"

enum { NPG = 64, FPG = 64, MAXLEN = 24 };
enum { FD_ANON = -1, FD_RW = 0, FD_RO = 1 };

typedef struct page {
  uint32_t rec; /* 0: reserved */
  int fd;       /* FD_ANON, FD_RW, FD_RO */
  uint32_t fpg; /* file page (fd mappings) */
  unsigned prot;
  uint64_t val; /* anonymous pages: the value at the marker */
  bool lost;    /* MA_ADV_FREE: undefined until written */
} page;

static page pg[NPG];
static uint64_t fval[FPG];
static uint32_t next_rec;
static uint64_t next_val;
static int fds[2];
static int probe[2] = {-1, -1}; /* a pipe: write(2) from an address tells if it is readable */
static size_t ps;
static ma_arena *ar;
static bool locked; /* MA_MAP_LOCKED: the kernel refuses to drop pages */
static unsigned char *base;

/* The same offset in every page: two arena pages may show one file page. */
static uint64_t *marker(size_t i) {
  return (uint64_t *)(base + i * ps + 72);
}

static bool readable(const void *p) {
  if (write(probe[1], p, 1) != 1) return false;
  char c;
  FZ_CHECK(read(probe[0], &c, 1) == 1, "probe pipe");
  return true;
}

static uint64_t expected(size_t i) {
  return pg[i].fd == FD_ANON ? pg[i].val : fval[pg[i].fpg];
}

/* ---- the shadow's view against the arena's ------------------------------------------- */

typedef struct run {
  size_t off, len;
  int fd;
  uint64_t fd_off;
  unsigned prot;
} run;

static size_t shadow_runs(run *out) {
  size_t n = 0;
  for (size_t i = 0; i < NPG;) {
    if (!pg[i].rec) {
      i++;
      continue;
    }
    size_t j = i + 1;
    while (j < NPG && pg[j].rec == pg[i].rec) j++;
    out[n++] = (run){i * ps, (j - i) * ps, pg[i].fd == FD_ANON ? -1 : fds[pg[i].fd],
                     pg[i].fd == FD_ANON ? 0 : (uint64_t)pg[i].fpg * ps, pg[i].prot};
    i = j;
  }
  return n;
}

typedef struct walk {
  const run *r;
  size_t n, i;
} walk;

static int walk_cb(const ma_arena_mapping *m, void *c) {
  walk *w = c;
  FZ_CHECK(w->i < w->n, "foreach reports more than %zu mappings (extra at %zu)", w->n, m->off);
  const run *r = &w->r[w->i++];
  /* The arena reports the file's identity, not a descriptor: it must be the shadow's fd's. */
  bool same_file = r->fd < 0 ? m->anon : ma_arena_mapping_is_fd(m, r->fd) == 1;
  FZ_CHECK(m->off == r->off && m->len == r->len && same_file && m->fd_off == r->fd_off &&
               m->prot == r->prot,
           "mapping %zu: arena {%zu,%zu,ino %llu,%llu,prot %u} shadow {%zu,%zu,fd %d,%llu,prot %u}",
           w->i - 1, m->off, m->len, (unsigned long long)m->ino, (unsigned long long)m->fd_off,
           m->prot, r->off, r->len, r->fd, (unsigned long long)r->fd_off, r->prot);
  return 0;
}

static void check_view(void) {
  run r[NPG];
  walk w = {r, shadow_runs(r), 0};
  FZ_CHECK(ma_arena_count(ar) == w.n, "count %zu, shadow %zu", ma_arena_count(ar), w.n);
  FZ_CHECK(ma_arena_foreach(ar, walk_cb, &w) == 0, "foreach");
  FZ_CHECK(w.i == w.n, "foreach reported %zu of %zu", w.i, w.n);
  /* The record against /proc/self/maps (aborts with its message on a disagreement). */
  FZ_CHECK(ma_arena_check(ar) == 0, "ma_arena_check could not read /proc/self/maps");
}

static void check_find(size_t i) {
  ma_arena_mapping m;
  int e = ma_arena_find(ar, i * ps + (i % 7) * 8, &m);
  if (!pg[i].rec) {
    FZ_CHECK(e == -ENOENT, "find on reserved page %zu = %d", i, e);
    return;
  }
  FZ_CHECK(e == 0, "find on page %zu = %d", i, e);
  run r[NPG];
  size_t n = shadow_runs(r), k = 0;
  while (k < n && !(r[k].off <= i * ps && i * ps < r[k].off + r[k].len)) k++;
  FZ_CHECK(k < n && m.off == r[k].off && m.len == r[k].len && m.prot == r[k].prot,
           "find(page %zu) = {%zu,%zu,%u}", i, m.off, m.len, m.prot);
}

static void check_pages(size_t from, size_t to) {
  for (size_t i = from; i < to; i++) {
    bool can = pg[i].rec && (pg[i].prot & MA_PROT_READ);
    /* x86 reads WRITE-only and (without protection keys) EXEC-only pages: not checked. */
    bool sure = can || !pg[i].rec || pg[i].prot == MA_PROT_NONE;
    if (sure)
      FZ_CHECK(readable(marker(i)) == can, "page %zu readable %d, shadow %d (rec %u prot %u)", i,
               !can, can, pg[i].rec, pg[i].prot);
    if (can && !(pg[i].fd == FD_ANON && pg[i].lost))
      FZ_CHECK(*marker(i) == expected(i), "page %zu holds %llu, shadow %llu (fd %d)", i,
               (unsigned long long)*marker(i), (unsigned long long)expected(i), pg[i].fd);
  }
}

/* ---- operations ------------------------------------------------------------------------ */

static bool any_mapped(size_t a, size_t n) {
  for (size_t i = a; i < a + n; i++)
    if (pg[i].rec) return true;
  return false;
}

static bool all_mapped(size_t a, size_t n) {
  for (size_t i = a; i < a + n; i++)
    if (!pg[i].rec) return false;
  return true;
}

static unsigned read_prot(fz_in *in) {
  return fz_u8(in) % 8;
}

static void do_add(size_t a, size_t n, int fd, uint32_t fpg, unsigned prot) {
  int want = prot == 7 ? -EPERM : any_mapped(a, n) ? -EEXIST : 0;
  if (want == 0 && fd == FD_RO && (prot & MA_PROT_WRITE)) want = -EACCES;
  int e = fd == FD_ANON
              ? ma_arena_add_anon_mapping(ar, a * ps, n * ps, prot)
              : ma_arena_add_fd_mapping(ar, a * ps, n * ps, fds[fd], (uint64_t)fpg * ps, prot);
  FZ_CHECK(e == want, "add(%zu+%zu, fd %d, prot %u) = %d, want %d", a, n, fd, prot, e, want);
  if (e) return;
  uint32_t rec = next_rec++;
  for (size_t i = 0; i < n; i++) pg[a + i] = (page){rec, fd, fpg + (uint32_t)i, prot, 0, false};
}

static void do_remove(size_t a, size_t n) {
  int want = any_mapped(a, n) ? 0 : -ENOENT;
  int e = ma_arena_remove_mapping(ar, a * ps, n * ps);
  FZ_CHECK(e == want, "remove(%zu+%zu) = %d, want %d", a, n, e, want);
  if (e == 0) memset(&pg[a], 0, n * sizeof pg[0]);
}

static void do_protect(size_t a, size_t n, unsigned prot) {
  int want = prot == 7 ? -EPERM : !all_mapped(a, n) ? -ENOENT : 0;
  for (size_t i = a; want == 0 && i < a + n; i++)
    if (pg[i].fd == FD_RO && (prot & MA_PROT_WRITE)) want = -EACCES;
  int e = ma_arena_protect(ar, a * ps, n * ps, prot);
  FZ_CHECK(e == want, "protect(%zu+%zu, %u) = %d, want %d", a, n, prot, e, want);
  if (e) return;
  /* Each record whose protection changes: its pages inside the range become one piece. */
  uint32_t cut = 0, newrec = 0;
  for (size_t i = a; i < a + n; i++) {
    if (pg[i].prot == prot) continue;
    if (pg[i].rec != cut) {
      cut = pg[i].rec;
      newrec = next_rec++;
    }
    pg[i].rec = newrec;
    pg[i].prot = prot;
  }
}

static void do_advise(size_t a, size_t n, uint8_t k) {
  static const enum ma_advice advs[4] = {MA_ADV_DONTNEED, MA_ADV_REMOVE, MA_ADV_WILLNEED,
                                         MA_ADV_FREE};
  enum ma_advice adv = advs[k % 4];
  int want = all_mapped(a, n) ? 0 : -ENOENT;
  for (size_t i = a; want == 0 && adv == MA_ADV_REMOVE && i < a + n; i++) {
    if (pg[i].fd == FD_ANON)
      want = -EINVAL;
    else if (pg[i].fd == FD_RO) /* the kernel wants a shared file it may write (VM_MAYWRITE) */
      want = -EACCES;
  }
  for (size_t i = a; want == 0 && adv == MA_ADV_FREE && i < a + n; i++)
    if (pg[i].fd != FD_ANON) want = -EINVAL;
  if (want == 0 && locked && adv != MA_ADV_WILLNEED) want = -EINVAL; /* locked pages stay */
  int e = ma_arena_advise(ar, a * ps, n * ps, adv);
  FZ_CHECK(e == want, "advise(%zu+%zu, %d) = %d, want %d", a, n, adv, e, want);
  if (e) return;
  for (size_t i = a; i < a + n; i++) {
    if (adv == MA_ADV_DONTNEED && pg[i].fd == FD_ANON) pg[i].val = 0;
    if (adv == MA_ADV_REMOVE) fval[pg[i].fpg] = 0;
    if (adv == MA_ADV_FREE) pg[i].lost = true;
  }
}

static void do_write(size_t a, size_t n) {
  for (size_t i = a; i < a + n; i++) {
    if (!pg[i].rec ||
        (pg[i].prot & (MA_PROT_READ | MA_PROT_WRITE)) != (MA_PROT_READ | MA_PROT_WRITE))
      continue;
    uint64_t v = ++next_val;
    *marker(i) = v;
    if (pg[i].fd == FD_ANON) {
      pg[i].val = v;
      pg[i].lost = false;
    } else {
      fval[pg[i].fpg] = v;
    }
  }
}

/* Misaligned, empty and out-of-range arguments: -EINVAL and nothing changes. */
static void do_bad(fz_in *in) {
  size_t off = fz_u16(in), len = fz_u16(in);
  if (off % ps == 0 && len % ps == 0 && len && off + len <= NPG * ps) len += 1;
  FZ_CHECK(ma_arena_add_anon_mapping(ar, off, len, MA_PROT_READ) == -EINVAL, "bad add");
  FZ_CHECK(ma_arena_remove_mapping(ar, off, len) == -EINVAL, "bad remove");
  FZ_CHECK(ma_arena_protect(ar, off, len, MA_PROT_READ) == -EINVAL, "bad protect");
  FZ_CHECK(ma_arena_add_anon_mapping(ar, 0, ps, 8) == -EINVAL, "bad prot");
  FZ_CHECK(ma_arena_add_fd_mapping(ar, 0, ps, 1 << 20, 0, MA_PROT_READ) == -EBADF, "bad fd");
  FZ_CHECK(ma_arena_add_fd_mapping(ar, 0, ps, fds[FD_RW], 1, MA_PROT_READ) == -EINVAL, "fd_off");
}

static void setup(unsigned flags) {
  ps = ma_page_size();
  if (probe[0] < 0) FZ_CHECK(pipe2(probe, O_CLOEXEC) == 0, "pipe");
  fds[FD_RW] = memfd_create("fuzz_arena", MFD_CLOEXEC);
  FZ_CHECK(fds[FD_RW] >= 0 && ftruncate(fds[FD_RW], (off_t)(FPG * ps)) == 0, "memfd");
  char path[64];
  snprintf(path, sizeof path, "/proc/self/fd/%d", fds[FD_RW]);
  fds[FD_RO] = open(path, O_RDONLY | O_CLOEXEC);
  FZ_CHECK(fds[FD_RO] >= 0, "reopen read-only");
  FZ_CHECK(ma_arena_create(NPG * ps, flags, &ar) == 0, "arena_create");
  base = ma_arena_base(ar);
  memset(pg, 0, sizeof pg);
  memset(fval, 0, sizeof fval);
  next_rec = 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fz_in in = {data, size};
  uint8_t f = fz_u8(&in);
  locked = f & 8;
  setup((f & 1 ? MA_MAP_DONTDUMP : 0) | (f & 2 ? MA_MAP_DONTFORK : 0) |
        (f & 4 ? MA_MAP_HUGE_TRY : 0) | (locked ? MA_MAP_LOCKED : 0));
  while (fz_more(&in)) {
    uint8_t op = fz_u8(&in);
    size_t a = fz_u8(&in) % NPG;
    size_t n = 1 + fz_u8(&in) % MAXLEN;
    if (a + n > NPG) n = NPG - a;
    switch (op % 10) {
    case 0:
    case 1:
      do_add(a, n, FD_ANON, 0, read_prot(&in));
      break;
    case 2: {
      int fd = op & 0x80 ? FD_RO : FD_RW;
      uint32_t fpg = fz_u8(&in) % (FPG - n + 1);
      do_add(a, n, fd, fpg, read_prot(&in));
      break;
    }
    case 3:
      do_remove(a, n);
      break;
    case 4:
      do_protect(a, n, read_prot(&in));
      break;
    case 5:
      do_advise(a, n, fz_u8(&in));
      break;
    case 6:
      do_write(a, n);
      break;
    case 7:
      FZ_CHECK(ma_arena_flush(ar, a * ps, n * ps, op & 0x80) == (all_mapped(a, n) ? 0 : -ENOENT),
               "flush");
      break;
    case 8:
      check_find(a);
      break;
    default:
      do_bad(&in);
      break;
    }
    check_view();
    check_pages(a, a + n);
  }
  check_pages(0, NPG);
  ma_arena_destroy(ar);
  close(fds[FD_RW]);
  close(fds[FD_RO]);
  return 0;
}
