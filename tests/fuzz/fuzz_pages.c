/* libFuzzer target for the page layer (include/mapalloc/pages.h).
 *
 * Each input makes one map of NPG pages of a kind the first byte picks: private anonymous
 * reserve-only, private anonymous committed, shared anonymous reserve-only, a shared memfd,
 * or a private (copy-on-write) mapping of a memfd whose pages hold known values; with
 * optional DONTDUMP, DONTFORK, HUGE_TRY, NORESERVE and JIT flags. The bytes are then a
 * program of commit, decommit, protect_range, protect (whole map), advise (DONTNEED,
 * WILLNEED, FREE), lock+unlock, split+merge, writes, content checks, mincore checks,
 * /proc/self/maps checks and bad-argument calls. A per-page shadow holds the protection, the
 * value at a marker in the page and, for private anonymous maps, whether the page must or
 * must not be resident: return values, contents (decommit zeroes private anonymous pages,
 * keeps shared ones, rereads the file for a private file map), readability of inaccessible
 * pages, mincore and the protections the kernel reports are all checked against it. */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fuzz_common.h"
#include "mapalloc/pages.h"

enum { NPG = 64, MAXLEN = 24 };
enum { K_RESERVE, K_ANON, K_SHARED_RESERVE, K_MEMFD_SHARED, K_MEMFD_PRIVATE, NKINDS };
enum { RES_UNKNOWN, RES_ABSENT, RES_PRESENT };

typedef struct page {
  unsigned prot;
  uint64_t val;
  bool lost; /* MA_ADV_FREE: undefined until written */
  uint8_t res;
} page;

static page pg[NPG];
static int kind;
static ma_map m;
static size_t ps;
static int probe[2] = {-1, -1};
static int filefd = -1; /* prefilled, for K_MEMFD_PRIVATE; never written */
static int sharedfd = -1;
static uint64_t next_val;

static uint64_t *marker(size_t i) {
  return (uint64_t *)((char *)m.addr + i * ps + (i * 40) % ps);
}

static uint64_t file_val(size_t i) {
  return kind == K_MEMFD_PRIVATE ? 0x5151000000000000ull + i : 0;
}

static bool private_anon(void) {
  return kind == K_RESERVE || kind == K_ANON;
}

static bool readable(const void *p) {
  if (write(probe[1], p, 1) != 1) return false;
  char c;
  FZ_CHECK(read(probe[0], &c, 1) == 1, "probe pipe");
  return true;
}

/* ---- checks -------------------------------------------------------------------------- */

static void check_pages(size_t a, size_t n) {
  for (size_t i = a; i < a + n; i++) {
    bool can = pg[i].prot & MA_PROT_READ;
    if (can || pg[i].prot == MA_PROT_NONE) { /* x86 reads WRITE/EXEC-only pages: not checked */
      FZ_CHECK(readable(marker(i)) == can, "page %zu readable %d, shadow prot %u", i, !can,
               pg[i].prot);
      if (pg[i].res == RES_ABSENT && can) pg[i].res = RES_UNKNOWN; /* the probe faulted it in */
    }
    if (can && !pg[i].lost)
      FZ_CHECK(*marker(i) == pg[i].val, "page %zu holds %#llx, shadow %#llx (kind %d)", i,
               (unsigned long long)*marker(i), (unsigned long long)pg[i].val, kind);
  }
}

static void check_mincore(size_t a, size_t n) {
  if (!private_anon()) return; /* shared pages stay in the page cache */
  unsigned char vec[NPG];
  FZ_CHECK(mincore((char *)m.addr + a * ps, n * ps, vec) == 0, "mincore: errno %d", errno);
  for (size_t i = 0; i < n; i++) {
    uint8_t r = pg[a + i].res;
    if (r == RES_PRESENT) FZ_CHECK(vec[i] & 1, "page %zu written but not resident", a + i);
    if (r == RES_ABSENT) FZ_CHECK(!(vec[i] & 1), "page %zu resident after decommit", a + i);
  }
}

static int area_cb(const ma_area *ar, void *c) {
  (void)c;
  uintptr_t lo = (uintptr_t)m.addr, hi = lo + m.len;
  uintptr_t s = ar->start < lo ? lo : ar->start, e = ar->end > hi ? hi : ar->end;
  for (uintptr_t p = s; p < e; p += ps) {
    size_t i = (p - lo) / ps;
    FZ_CHECK(ar->prot == pg[i].prot, "maps says page %zu has prot %u, shadow %u", i, ar->prot,
             pg[i].prot);
  }
  return 0;
}

static void check_maps(void) {
  uintptr_t lo = (uintptr_t)m.addr;
  FZ_CHECK(ma_areas_query(0, lo, lo + m.len, area_cb, NULL) == 0, "areas_query");
}

/* ---- operations ------------------------------------------------------------------------ */

static bool wx(unsigned prot) {
  return (prot & 6) == 6 && !(m.flags & MA_MAP_JIT);
}

/* What decommit (or DONTNEED) leaves in a page: zero for private anonymous, the file for a
 * private file map, the same data for shared memory. */
static void dropped(size_t i) {
  if (private_anon()) {
    pg[i].val = 0;
    pg[i].res = RES_ABSENT;
    pg[i].lost = false;
  } else if (kind == K_MEMFD_PRIVATE) {
    pg[i].val = file_val(i);
  }
}

static void do_commit(size_t a, size_t n) {
  int e = ma_map_commit(&m, a * ps, n * ps);
  FZ_CHECK(e == 0, "commit(%zu+%zu) = %d", a, n, e);
  for (size_t i = a; i < a + n; i++) {
    pg[i].prot = m.prot;
    if (m.flags & MA_MAP_POPULATE) pg[i].res = RES_UNKNOWN;
  }
}

static void do_decommit(size_t a, size_t n) {
  int e = ma_map_decommit(&m, a * ps, n * ps);
  FZ_CHECK(e == 0, "decommit(%zu+%zu) = %d", a, n, e);
  for (size_t i = a; i < a + n; i++) {
    pg[i].prot = MA_PROT_NONE;
    dropped(i);
  }
}

static void do_protect_range(size_t a, size_t n, unsigned prot) {
  int e = ma_map_protect_range(&m, a * ps, n * ps, prot);
  int want = wx(prot) ? -EPERM : 0;
  FZ_CHECK(e == want, "protect_range(%zu+%zu, %u) = %d, want %d", a, n, prot, e, want);
  if (e == 0)
    for (size_t i = a; i < a + n; i++) pg[i].prot = prot;
}

static void do_protect(unsigned prot) {
  int e = ma_map_protect(&m, prot);
  int want = wx(prot) ? -EPERM : 0;
  FZ_CHECK(e == want, "protect(%u) = %d, want %d", prot, e, want);
  if (e) return;
  FZ_CHECK(m.prot == prot, "m.prot %u after protect(%u)", m.prot, prot);
  bool reserve = m.flags & MA_MAP_RESERVE;
  for (size_t i = 0; i < NPG; i++)
    if (!reserve || pg[i].prot != MA_PROT_NONE) pg[i].prot = prot;
}

static void do_advise(size_t a, size_t n, uint8_t k) {
  static const enum ma_advice advs[3] = {MA_ADV_DONTNEED, MA_ADV_WILLNEED, MA_ADV_FREE};
  enum ma_advice adv = advs[k % 3];
  int want = adv == MA_ADV_FREE && !private_anon() ? -EINVAL : 0;
  int e = ma_map_advise(&m, a * ps, n * ps, adv);
  FZ_CHECK(e == want, "advise(%zu+%zu, %d) = %d, want %d", a, n, adv, e, want);
  if (e) return;
  for (size_t i = a; i < a + n; i++) {
    if (adv == MA_ADV_DONTNEED) dropped(i);
    if (adv == MA_ADV_FREE) {
      pg[i].lost = true;
      pg[i].res = RES_UNKNOWN;
    }
    if (adv == MA_ADV_WILLNEED && pg[i].res == RES_ABSENT) pg[i].res = RES_UNKNOWN;
  }
}

static void do_lock(size_t a, size_t n) {
  bool committed = true;
  for (size_t i = a; i < a + n; i++) committed &= pg[i].prot != MA_PROT_NONE;
  int e = ma_map_lock(&m, a * ps, n * ps);
  for (size_t i = a; i < a + n; i++) /* even a refused lock faults in what it can */
    if (pg[i].prot != MA_PROT_NONE) pg[i].res = RES_UNKNOWN;
  if (!committed) {
    FZ_CHECK(e == -ENOMEM, "lock over an inaccessible page = %d", e);
    return;
  }
  FZ_CHECK(e == 0, "lock(%zu+%zu) = %d", a, n, e);
  check_pages(a, n);
  FZ_CHECK(ma_map_unlock(&m, a * ps, n * ps) == 0, "unlock");
}

static void do_split_merge(size_t at) {
  if (at == 0) at = 1;
  ma_map tail, copy = m;
  FZ_CHECK(ma_map_split(&m, at * ps, &tail) == 0, "split at page %zu", at);
  FZ_CHECK(m.len == at * ps && tail.len == (NPG - at) * ps &&
               (char *)tail.addr == (char *)m.addr + at * ps,
           "split halves");
  FZ_CHECK(tail.fd != -1 || copy.fd == -1, "split tail fd");
  FZ_CHECK(copy.fd < 0 || tail.offset == copy.offset + at * ps, "split tail offset");
  FZ_CHECK(ma_map_merge(&tail, &m) == -EINVAL, "merge in the wrong order");
  FZ_CHECK(ma_map_merge(&m, &tail) == 0, "merge");
  FZ_CHECK(memcmp(&m, &copy, sizeof m) == 0 && tail.addr == NULL, "merge restores the map");
}

static void do_write(size_t a, size_t n) {
  for (size_t i = a; i < a + n; i++) {
    if ((pg[i].prot & (MA_PROT_READ | MA_PROT_WRITE)) != (MA_PROT_READ | MA_PROT_WRITE)) continue;
    uint64_t v = ++next_val;
    *marker(i) = v;
    pg[i] = (page){pg[i].prot, v, false, RES_PRESENT};
  }
}

static void do_bad(fz_in *in) {
  size_t off = fz_u16(in), len = fz_u16(in);
  if (off % ps == 0 && len % ps == 0 && len && off + len <= m.len) len += 1;
  FZ_CHECK(ma_map_commit(&m, off, len) == -EINVAL, "bad commit");
  FZ_CHECK(ma_map_decommit(&m, off, len) == -EINVAL, "bad decommit");
  FZ_CHECK(ma_map_protect_range(&m, off, len, MA_PROT_READ) == -EINVAL, "bad protect_range");
  FZ_CHECK(ma_map_protect_range(&m, 0, ps, 8) == -EINVAL, "bad prot");
  FZ_CHECK(ma_map_advise(&m, 0, ps, (enum ma_advice)99) == -EINVAL, "bad advice");
  ma_map tail;
  FZ_CHECK(ma_map_split(&m, m.len, &tail) == -EINVAL, "split at the end");
}

/* ---- setup ------------------------------------------------------------------------------ */

static void setup_fds(void) {
  if (probe[0] < 0) FZ_CHECK(pipe2(probe, O_CLOEXEC) == 0, "pipe");
  if (filefd >= 0) return;
  filefd = memfd_create("fuzz_pages_private", MFD_CLOEXEC);
  sharedfd = memfd_create("fuzz_pages_shared", MFD_CLOEXEC);
  FZ_CHECK(filefd >= 0 && sharedfd >= 0, "memfd");
  FZ_CHECK(ftruncate(filefd, (off_t)(NPG * ps)) == 0, "ftruncate");
  kind = K_MEMFD_PRIVATE;
  for (size_t i = 0; i < NPG; i++) {
    uint64_t v = file_val(i);
    FZ_CHECK(pwrite(filefd, &v, sizeof v, (off_t)(i * ps + (i * 40) % ps)) == sizeof v, "pwrite");
  }
}

static void setup(uint8_t f) {
  ps = ma_page_size();
  setup_fds();
  kind = f % NKINDS;
  ma_map_opts o = MA_MAP_OPTS_DEFAULT;
  o.len = NPG * ps;
  o.flags = (f & 0x08 ? MA_MAP_DONTDUMP : 0) | (f & 0x10 ? MA_MAP_DONTFORK : 0) |
            (f & 0x20 ? MA_MAP_HUGE_TRY : 0) | (f & 0x40 ? MA_MAP_NORESERVE : 0) |
            (f & 0x80 ? MA_MAP_JIT : 0);
  if (kind == K_RESERVE || kind == K_SHARED_RESERVE) o.flags |= MA_MAP_RESERVE;
  if (kind == K_SHARED_RESERVE || kind == K_MEMFD_SHARED) o.flags |= MA_MAP_SHARED;
  if (kind == K_MEMFD_SHARED) {
    /* A fresh (zero) file for every input. */
    FZ_CHECK(ftruncate(sharedfd, 0) == 0 && ftruncate(sharedfd, (off_t)(NPG * ps)) == 0, "trunc");
    o.fd = sharedfd;
  }
  if (kind == K_MEMFD_PRIVATE) o.fd = filefd;
  int e = ma_map_create(&o, &m);
  FZ_CHECK(e == 0, "map_create(kind %d, flags %#x) = %d", kind, o.flags, e);
  FZ_CHECK(m.len == NPG * ps && m.prot == o.prot, "map fields");
  bool reserve = o.flags & MA_MAP_RESERVE;
  for (size_t i = 0; i < NPG; i++)
    pg[i] = (page){reserve ? MA_PROT_NONE : o.prot, file_val(i), false,
                   private_anon() ? RES_ABSENT : RES_UNKNOWN};
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fz_in in = {data, size};
  setup(fz_u8(&in));
  while (fz_more(&in)) {
    uint8_t op = fz_u8(&in);
    size_t a = fz_u8(&in) % NPG;
    size_t n = 1 + fz_u8(&in) % MAXLEN;
    if (a + n > NPG) n = NPG - a;
    switch (op % 12) {
    case 0:
    case 1:
      do_commit(a, n);
      break;
    case 2:
      do_decommit(a, n);
      break;
    case 3:
      do_protect_range(a, n, fz_u8(&in) % 8);
      break;
    case 4:
      do_protect(fz_u8(&in) % 8);
      break;
    case 5:
      do_advise(a, n, fz_u8(&in));
      break;
    case 6:
    case 7:
      do_write(a, n);
      break;
    case 8:
      check_mincore(a, n);
      break;
    case 9:
      check_maps();
      break;
    case 10:
      (op & 0x80) ? do_lock(a, n) : do_split_merge(a);
      break;
    default:
      do_bad(&in);
      break;
    }
    check_pages(a, n);
  }
  check_mincore(0, NPG);
  check_pages(0, NPG);
  FZ_CHECK(ma_map_destroy(&m) == 0 && m.addr == NULL, "destroy");
  return 0;
}
