/* Fault-injection sweeps (built only with -DMAPALLOC_FAULT_INJECTION=ON; docs/testing.md).
 *
 * Each scenario is a whole use of one structure (a map, a pool, the heap, an arena) that
 * returns 0 or the negative errno of the first step that failed, after cleaning up. A sweep
 * runs it once unarmed to count its system calls K, then for N = 1..K makes the Nth call
 * fail with ENOMEM (src/os/fault.h), and then again every call from the Nth on (memory
 * that has run out for good: cleanup unmaps fail too), and checks that
 *   - the scenario reports 0 (the failure was absorbed: an advisory call, a deferred unmap)
 *     or -ENOMEM, and never crashes;
 *   - /proc/self/maps is what it was before (nothing leaked, nothing left with another
 *     protection), once what is legitimately cached is given back: ma_heap_collect(true)
 *     and the page layer's deferred unmaps (os_release_retry);
 *   - the same scenario then runs unarmed to success (the structure still works, data
 *     intact: every scenario checks what it wrote).
 * Sweeps run in a forked child: no Criterion thread maps or allocates behind our back, and
 * nothing between two snapshots calls malloc.
 */
#define MA_FAULT_INJECTION 1

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common.h"
#include "malloc/heap_internal.h"
#include "obj/obj_internal.h"
#include "mapalloc/arena.h"
#include "mapalloc/heap.h"
#include "mapalloc/pages.h"
#include "mapalloc/pool.h"
#include "os/fault.h"
#include "os/os.h"

/* ---- Failing in a child ------------------------------------------------------------------ */

static unsigned long armed_at; /* the failing call of the current run, 0 if none */

#define CHECK(cond, ...)                                                                           \
  do {                                                                                             \
    if (!(cond)) {                                                                                 \
      fprintf(stderr, "%s:%d: (failing call %lu) check failed: %s: ", __FILE__, __LINE__,          \
              armed_at, #cond);                                                                    \
      fprintf(stderr, __VA_ARGS__);                                                                \
      fputc('\n', stderr);                                                                         \
      _exit(1);                                                                                    \
    }                                                                                              \
  } while (0)

/* Runs body in a forked child and asserts it exits 0. */
static void in_child(void (*body)(void)) {
  fflush(NULL);
  pid_t pid = fork();
  cr_assert_geq(pid, 0);
  if (pid == 0) {
    body();
    _exit(0);
  }
  expect_child_ok(pid, "the sweep child (a failure is reported on stderr)");
}

/* ---- Snapshots of the address space -------------------------------------------------------- */

enum { SNAP_MAX = 16384 };
typedef struct {
  uintptr_t start, end;
  unsigned prot;
  bool shared;
} span;
typedef struct {
  size_t n;
  bool overflow;
  span s[SNAP_MAX];
} snap;
static snap snap_base, snap_now;

/* Adjacent areas with the same protection are one span: the kernel may merge or split
 * VMAs differently from run to run without anything having changed. The stack and the brk
 * heap grow on their own. */
static int snap_cb(const ma_area *a, void *ctx) {
  snap *s = ctx;
  if (strcmp(a->path, "[stack]") == 0 || strcmp(a->path, "[heap]") == 0) return 0;
  span *last = s->n ? &s->s[s->n - 1] : NULL;
  if (last && last->end == a->start && last->prot == a->prot && last->shared == a->shared) {
    last->end = a->end;
    return 0;
  }
  if (s->n == SNAP_MAX) {
    s->overflow = true;
    return 1;
  }
  s->s[s->n++] = (span){a->start, a->end, a->prot, a->shared};
  return 0;
}

static void snap_take(snap *s) {
  s->n = 0;
  s->overflow = false;
  int r = ma_areas_query(0, 0, UINTPTR_MAX, snap_cb, s);
  CHECK(r == 0 && !s->overflow, "reading /proc/self/maps: %d", r);
}

/* Prints the first difference; true when equal. */
static bool snap_same(const snap *a, const snap *b) {
  size_t i = 0;
  for (; i < a->n && i < b->n; i++)
    if (memcmp(&a->s[i], &b->s[i], sizeof(span)) != 0) break;
  if (i == a->n && i == b->n) return true;
  if (i < a->n)
    fprintf(stderr, "  before: %lx-%lx prot %u\n", (unsigned long)a->s[i].start,
            (unsigned long)a->s[i].end, a->s[i].prot);
  if (i < b->n)
    fprintf(stderr, "  after:  %lx-%lx prot %u\n", (unsigned long)b->s[i].start,
            (unsigned long)b->s[i].end, b->s[i].prot);
  return false;
}

/* Maps whose destroy was refused even when tried twice (every call failing): the
 * scenario still owns them; destroyed once the hook is disarmed. */
static ma_map stash[8];
static size_t nstash;

/* Gives back what is cached on purpose, so that only a leak remains. */
static void settle(void) {
  while (nstash) CHECK(ma_map_destroy(&stash[--nstash]) == 0, "destroy a stashed map");
  ma_heap_collect(true);
  CHECK(os_release_retry() == 0, "deferred unmaps still pending");
}

/* ---- VMA flags (/proc/self/smaps, read without malloc) ---------------------------------- */

static char smaps[16 << 20];

/* True when every VMA overlapping [addr, addr+len) shows VmFlags "dd" (MADV_DONTDUMP) and
 * "dc" (MADV_DONTFORK). */
static bool dontdump_dontfork(const void *addr, size_t len) {
  int fd = open("/proc/self/smaps", O_RDONLY | O_CLOEXEC);
  CHECK(fd >= 0, "open smaps");
  size_t have = 0;
  ssize_t got;
  while ((got = read(fd, smaps + have, sizeof smaps - 1 - have)) > 0) have += (size_t)got;
  close(fd);
  CHECK(have < sizeof smaps - 1, "smaps fits");
  smaps[have] = 0;
  uintptr_t lo = (uintptr_t)addr, hi = lo + len;
  bool inside = false, seen = false;
  for (char *line = smaps; *line;) {
    char *nl = strchr(line, '\n');
    if (nl) *nl = 0;
    char *dash;
    uintptr_t start = strtoul(line, &dash, 16);
    if (*dash == '-' && dash != line) {
      uintptr_t end = strtoul(dash + 1, NULL, 16);
      inside = start < hi && end > lo;
    } else if (inside && strncmp(line, "VmFlags:", 8) == 0) {
      seen = true;
      if (!strstr(line, " dd") || !strstr(line, " dc")) return false;
    }
    if (!nl) break;
    line = nl + 1;
  }
  return seen;
}

/* ---- The sweep ----------------------------------------------------------------------------- */

typedef int (*scenario_fn)(void);

/* Returns K, the system calls of one run. */
static unsigned long sweep(const char *name, scenario_fn fn) {
  int r = fn(); /* warm: one-time state (segment map, TLS caches, tables) exists from here */
  CHECK(r == 0, "%s: unarmed run failed with %d", name, r);
  settle();
  snap_take(&snap_base);
  os_fault_arm(0, 0);
  r = fn();
  unsigned long k = os_fault_calls();
  os_fault_disarm();
  CHECK(r == 0, "%s: counting run failed with %d", name, r);
  settle();
  snap_take(&snap_now);
  CHECK(snap_same(&snap_base, &snap_now), "%s: an unarmed run changes the address space", name);

  unsigned long failed = 0, absorbed = 0;
  for (unsigned long i = 1; i <= 2 * k; i++) {
    unsigned long n = i <= k ? i : i - k;
    os_fault_arm_run(n, i <= k ? 1 : OS_FAULT_ALL, ENOMEM);
    armed_at = n;
    r = fn();
    unsigned long fired = os_fault_fired();
    os_fault_disarm();
    armed_at = 0;
    CHECK(r == 0 || r == -ENOMEM, "%s: call %lu of %lu failed: result %d, not 0 or -ENOMEM", name,
          n, k, r);
    failed += r != 0;
    absorbed += r == 0 && fired;
    settle();
    snap_take(&snap_now);
    CHECK(snap_same(&snap_base, &snap_now), "%s: call %lu of %lu failed (result %d): leak", name, n,
          k, r);
    r = fn();
    CHECK(r == 0, "%s: after call %lu of %lu failed, an unarmed run fails with %d", name, n, k, r);
    settle();
    snap_take(&snap_now);
    CHECK(snap_same(&snap_base, &snap_now), "%s: the run after failing call %lu leaks", name, n);
  }
  fprintf(stderr,
          "fault sweep %-22s %4lu calls, 2 x %4lu runs: %4lu reported ENOMEM, %4lu absorbed\n",
          name, k, k, failed, absorbed);
  return k;
}

/* ---- Helpers for scenarios --------------------------------------------------------------- */

static void fill(void *p, size_t n, unsigned seed) {
  unsigned char *c = p;
  for (size_t i = 0; i < n; i++) c[i] = (unsigned char)(seed + i * 7);
}

static bool filled(const void *p, size_t n, unsigned seed) {
  const unsigned char *c = p;
  for (size_t i = 0; i < n; i++)
    if (c[i] != (unsigned char)(seed + i * 7)) return false;
  return true;
}

/* Destroys a map; ma_map_destroy leaves *m as it was when munmap is refused, so the caller
 * still owns it and destroys it again. Returns the first result. */
static int map_destroy(ma_map *m) {
  int r = ma_map_destroy(m);
  if (r != 0 && ma_map_destroy(m) != 0) {
    CHECK(nstash < sizeof stash / sizeof *stash, "stash");
    stash[nstash++] = *m;
  }
  return r;
}

/* Creates, fills, checks and destroys a map; `first` is the result of the step that failed. */
static int map_use(ma_map_opts *o) {
  ma_map m;
  int r = ma_map_create(o, &m);
  if (r != 0) return r;
  CHECK(m.len >= o->len, "map length");
  if (o->flags & MA_MAP_DONTDUMP) CHECK(dontdump_dontfork(m.addr, m.len), "map lacks dd/dc");
  if (!(o->flags & MA_MAP_RESERVE)) {
    fill(m.addr, m.len, 3);
    CHECK(filled(m.addr, m.len, 3), "map data");
  }
  return map_destroy(&m);
}

/* ---- Page layer scenarios ----------------------------------------------------------------- */

static int pages_anon(void) {
  ma_map_opts o = MA_MAP_OPTS_DEFAULT;
  o.len = 64 << 10;
  return map_use(&o);
}

/* Alignment beyond the page: reserve len + align, map in place, trim both ends; and the
 * dump/fork advice, which must be undone with the map when refused. */
static int pages_aligned(void) {
  ma_map_opts o = MA_MAP_OPTS_DEFAULT;
  o.len = 3 * ma_page_size();
  o.align = 1 << 20;
  o.flags = MA_MAP_DONTDUMP | MA_MAP_DONTFORK;
  int r = map_use(&o);
  if (r) return r;
  o.hint = (void *)((uintptr_t)64 << 30); /* an aligned hint: tried first */
  return map_use(&o);
}

static int pages_locked(void) {
  ma_map_opts o = MA_MAP_OPTS_DEFAULT;
  o.len = 16 << 10;
  o.flags = MA_MAP_LOCKED | MA_MAP_POPULATE;
  return map_use(&o);
}

/* A reservation: commit, write, decommit (the data must survive a failed decommit),
 * commit again (zeros), protect the whole reserve-only map (reads /proc/self/maps). */
static int pages_reserve_commit(void) {
  size_t ps = ma_page_size(), off = 16 * ps, len = 8 * ps;
  ma_map_opts o = MA_MAP_OPTS_DEFAULT;
  o.len = 1 << 20;
  o.flags = MA_MAP_RESERVE | MA_MAP_DONTDUMP | MA_MAP_DONTFORK;
  ma_map m;
  int r = ma_map_create(&o, &m);
  if (r) return r;
  char *p = (char *)m.addr + off;
  if ((r = ma_map_commit(&m, off, len)) != 0) goto out;
  fill(p, len, 5);
  if ((r = ma_map_decommit(&m, off, len)) != 0) {
    CHECK(filled(p, len, 5), "a failed decommit lost the data");
    goto out;
  }
  if ((r = ma_map_commit(&m, off, len)) != 0) goto out;
  CHECK(dontdump_dontfork(p, len), "a range committed again lacks dd/dc");
  for (size_t i = 0; i < len; i++) CHECK(p[i] == 0, "a decommitted range reads zeros");
  fill(p, len, 6);
  if ((r = ma_map_protect(&m, MA_PROT_READ)) != 0) {
    CHECK(m.prot == (MA_PROT_READ | MA_PROT_WRITE), "a failed protect changed m.prot");
    fill(p, len, 6); /* still writable */
    goto out;
  }
  CHECK(filled(p, len, 6), "protect kept the data");
  r = ma_map_protect(&m, MA_PROT_READ | MA_PROT_WRITE);
out:;
  int d = map_destroy(&m);
  return r ? r : d;
}

static int pages_protect(void) {
  size_t ps = ma_page_size();
  ma_map_opts o = MA_MAP_OPTS_DEFAULT;
  o.len = 8 * ps;
  ma_map m;
  int r = ma_map_create(&o, &m);
  if (r) return r;
  fill(m.addr, m.len, 9);
  if ((r = ma_map_protect(&m, MA_PROT_READ)) == 0) {
    CHECK(filled(m.addr, m.len, 9), "read-only data");
    if ((r = ma_map_protect_range(&m, 2 * ps, 2 * ps, MA_PROT_READ | MA_PROT_WRITE)) == 0)
      fill((char *)m.addr + 2 * ps, 2 * ps, 9 + 14 * (unsigned)ps);
  }
  int d = map_destroy(&m);
  return r ? r : d;
}

/* Split into two maps, each destroyed on its own (the tail after it is written). */
static int pages_split(void) {
  size_t ps = ma_page_size();
  ma_map_opts o = MA_MAP_OPTS_DEFAULT;
  o.len = 4 * ps;
  ma_map m, t;
  int r = ma_map_create(&o, &m);
  if (r) return r;
  CHECK(ma_map_split(&m, 2 * ps, &t) == 0, "split");
  int d1 = map_destroy(&m);
  fill(t.addr, t.len, 1);
  CHECK(filled(t.addr, t.len, 1), "tail data");
  int d2 = map_destroy(&t);
  return d1 ? d1 : d2;
}

static int memfd = -1;

/* A shared file map (written, flushed, read back through the file) and a private one. */
static int pages_file(void) {
  size_t len = 4 * ma_page_size();
  ma_map_opts o = MA_MAP_OPTS_DEFAULT;
  o.len = len;
  o.fd = memfd;
  o.flags = MA_MAP_SHARED;
  ma_map m;
  int r = ma_map_create(&o, &m);
  if (r) return r;
  fill(m.addr, len, 11);
  if ((r = ma_map_flush(&m, 0, len, false)) == 0) {
    static unsigned char back[1 << 16];
    CHECK(pread(memfd, back, len, 0) == (ssize_t)len && filled(back, len, 11), "file data");
  }
  int d = map_destroy(&m);
  if (r || d) return r ? r : d;
  o.flags = 0;
  o.prot = MA_PROT_READ;
  if ((r = ma_map_create(&o, &m)) != 0) return r;
  CHECK(filled(m.addr, len, 11), "private file map reads the file");
  return map_destroy(&m);
}

/* Huge pages if available: explicit ones from the pool, else transparent ones on a map
 * aligned to the huge page size (reads /sys/kernel/mm/hugepages). */
static int pages_huge(void) {
  ma_map_opts o = MA_MAP_OPTS_DEFAULT;
  o.len = 4 << 20;
  o.flags = MA_MAP_HUGE_TRY;
  return map_use(&o);
}

/* ---- Pools -------------------------------------------------------------------------------- */

enum { MAX_PTRS = 120000 };
static void *ptrs[MAX_PTRS];

/* Creates a pool, grows it to `count` objects (several slabs, segments), checks, frees,
 * trims, destroys. */
static int pool_use(const ma_pool_opts *o, size_t count) {
  ma_pool *p;
  int r = ma_pool_create(o, &p);
  if (r) return r;
  size_t n = 0;
  for (; n < count; n++) {
    if (!(ptrs[n] = ma_pool_alloc(p))) {
      CHECK(errno == ENOMEM, "pool alloc: errno %d", errno);
      r = -ENOMEM;
      break;
    }
    if (o->zero) CHECK(((unsigned char *)ptrs[n])[o->obj_size - 1] == 0, "zeroed object");
    if ((o->map_flags & MA_MAP_DONTDUMP) && n % 1000 == 0)
      CHECK(dontdump_dontfork(ptrs[n], o->obj_size), "pool object lacks dd/dc");
    memcpy(ptrs[n], &n, sizeof n);
  }
  for (size_t i = 0; i < n; i++) {
    size_t v;
    memcpy(&v, ptrs[i], sizeof v);
    CHECK(v == i, "pool object %zu overwritten", i);
  }
  for (size_t i = 0; i < n; i += 2) ma_pool_free(p, ptrs[i]);
  ma_pool_trim(p); /* half-empty slabs stay; nothing to give back but the partial lists */
  for (size_t i = 1; i < n; i += 2) ma_pool_free(p, ptrs[i]);
  ma_pool_trim(p); /* empty: slabs decommitted, segments unmapped */
  ma_pool_destroy(p);
  return r;
}

static int pool_small(void) {
  ma_pool_opts o = {.obj_size = 256};
  return pool_use(&o, 20000); /* two segments of 64 KiB slabs */
}

static int pool_flags(void) {
  ma_pool_opts o = {.obj_size = 512,
                    .map_flags = MA_MAP_DONTDUMP | MA_MAP_DONTFORK,
                    .commit = true,
                    .zero = true};
  return pool_use(&o, 3000);
}

static int pool_huge_objects(void) {
  ma_pool_opts o = {.obj_size = 3 << 20};
  return pool_use(&o, 3); /* one-slab segments */
}

/* ---- Heap --------------------------------------------------------------------------------- */

/* Allocates count blocks of `size` (calloc for every third), checks, frees them, collects. */
static int heap_blocks(size_t size, size_t count) {
  int r = 0;
  size_t n = 0;
  for (; n < count; n++) {
    void *p = n % 3 == 2 ? ma_calloc(1, size) : ma_malloc(size);
    if (!p) {
      CHECK(errno == ENOMEM, "malloc(%zu): errno %d", size, errno);
      r = -ENOMEM;
      break;
    }
    if (n % 3 == 2) CHECK(((unsigned char *)p)[size - 1] == 0, "calloc zeroes");
    ptrs[n] = p;
    memcpy(p, &n, sizeof n);
    ((unsigned char *)p)[size - 1] = (unsigned char)n;
  }
  for (size_t i = 0; i < n; i++) {
    size_t v;
    memcpy(&v, ptrs[i], sizeof v);
    CHECK(v == i && ((unsigned char *)ptrs[i])[size - 1] == (unsigned char)i, "block %zu", i);
    ma_free(ptrs[i]);
  }
  ma_heap_collect(true); /* its unmaps are part of the scenario */
  return r;
}

static int heap_small(void) {
  return heap_blocks(48, 100000); /* more than one 4 MiB segment */
}

static int heap_medium(void) {
  int r = heap_blocks(100 << 10, 48);
  return r ? r : heap_blocks(128 << 10, 40);
}

/* Large blocks (mapped directly), reused from the cache of freed ones, and an aligned one
 * (over-reserve and trim). */
static int heap_large(void) {
  int r = heap_blocks(300 << 10, 8);
  if (r) return r;
  void *a = ma_malloc(600 << 10), *b = NULL;
  if (!a) return -errno;
  ma_free(a);
  a = ma_malloc(200 << 10); /* from the cache, split */
  if (a) b = ma_aligned_alloc(1 << 20, 300 << 10);
  if (b) CHECK(((uintptr_t)b & ((1 << 20) - 1)) == 0, "aligned");
  r = a && b ? 0 : -errno;
  CHECK(r == 0 || r == -ENOMEM, "errno %d", -r);
  ma_free(a);
  ma_free(b);
  ma_heap_collect(true);
  return r;
}

/* A large block grows by realloc (mremap, moving or in place) far past the cache limit,
 * shrinks (tail unmapped), and an over-aligned one grows (in place or copied). */
static int heap_realloc_large(void) {
  const size_t keep = 256 << 10;
  const size_t sizes[] = {300 << 10, 1 << 20, 3 << 20, 9 << 20, 40 << 20, 200 << 10};
  unsigned char *p = ma_malloc(keep);
  if (!p) return -errno;
  fill(p, keep, 21);
  int r = 0;
  for (size_t i = 0; i < sizeof sizes / sizeof *sizes && !r; i++) {
    unsigned char *q = ma_realloc(p, sizes[i]);
    if (!q) {
      CHECK(errno == ENOMEM, "realloc errno %d", errno);
      r = -ENOMEM;
    } else {
      p = q;
    }
    CHECK(filled(p, r || sizes[i] > keep ? keep : sizes[i], 21), "realloc kept the data (step %zu)",
          i);
    if (!r) p[sizes[i] - 1] = 21 + (unsigned char)((sizes[i] - 1) * 7); /* the pattern's byte */
  }
  ma_free(p);
  unsigned char *a = r ? NULL : ma_aligned_alloc(1 << 20, keep);
  if (!r && !a) r = -errno;
  if (a) {
    fill(a, keep, 22);
    unsigned char *q = ma_realloc(a, 3 << 20);
    if (q) {
      a = q;
      CHECK(((uintptr_t)a & ((1 << 20) - 1)) == 0, "stays aligned");
    } else {
      r = -errno;
    }
    CHECK(filled(a, keep, 22), "aligned realloc kept the data");
    ma_free(a);
  }
  ma_heap_collect(true);
  return r;
}

/* ---- Arena -------------------------------------------------------------------------------- */

static int arena_use(void) {
  static const size_t counts[] = {0, 1, 2, 4, 4}; /* records after each step (protect splits) */
  size_t ps = ma_page_size();
  ma_arena *a;
  int r = ma_arena_create(4 << 20, MA_MAP_DONTDUMP | MA_MAP_DONTFORK, &a);
  if (r) return r;
  char *base = ma_arena_base(a);
  size_t n0 = 0;
  if ((r = ma_arena_add_anon_mapping(a, 0, 16 * ps, MA_PROT_READ | MA_PROT_WRITE)) != 0) goto out;
  n0 = 1;
  fill(base, 16 * ps, 31);
  r = ma_arena_add_fd_mapping(a, 1 << 20, 4 * ps, memfd, 0, MA_PROT_READ | MA_PROT_WRITE);
  if (r) goto out;
  n0 = 2;
  CHECK(dontdump_dontfork(base, 16 * ps) && dontdump_dontfork(base + (1 << 20), 4 * ps),
        "arena mappings lack dd/dc");
  fill(base + (1 << 20), 4 * ps, 32);
  if ((r = ma_arena_protect(a, 4 * ps, 4 * ps, MA_PROT_READ)) != 0) goto out;
  n0 = 3;
  if ((r = ma_arena_remove_mapping(a, 8 * ps, 4 * ps)) != 0) goto out; /* a split */
  n0 = 4;
  CHECK(filled(base, 4 * ps, 31) && filled(base + 12 * ps, 4 * ps, 31 + 12 * 7 * (unsigned)ps),
        "what stays mapped keeps its data");
  r = ma_arena_remove_mapping(a, 0, 2 << 20);
out:
  /* A failed step changed nothing: the record is what the steps before it made. */
  if (r) CHECK(ma_arena_count(a) == counts[n0], "record after a failure: %zu", ma_arena_count(a));
  if (r && n0 >= 1 && n0 < 4) CHECK(filled(base, 4 * ps, 31), "anon data after a failure");
  if (r && n0 >= 2) CHECK(filled(base + (1 << 20), 4 * ps, 32), "file data after a failure");
  ma_arena_destroy(a);
  return r;
}

/* ---- Tests -------------------------------------------------------------------------------- */

static void child_setup(void) {
  /* Deterministic runs: nothing is purged by the clock, only by ma_heap_collect(true). */
  heap_global_init();
  heap_space.purge_delay_ms = -1;
  heap_opt.purge_delay_ms = -1;
  /* Segments live in their zone (src/obj/obj_segment.c); one whose zone reservation fails
   * is reserved where the kernel puts it, and the segment map's leaf for that region, mapped
   * then and kept for good, is not a leak: mapped here already. */
  void *w = os_reserve(OBJ_SEG_SIZE, OBJ_SEG_SIZE, NULL);
  CHECK(w && obj_map_cover((uintptr_t)w >> OBJ_SEG_SHIFT, 1) == 0, "segment map leaf");
  os_release(w, OBJ_SEG_SIZE);
  /* Likewise the zone's leaves: its turn starts at a random window and crosses into the next
   * leaf's 256 GiB region after some thousands of segments (a leaf mapped mid-sweep: a CI
   * run of c66438d failed on it). */
#if OBJ_ZONE_BITS
  CHECK(obj_map_cover(OBJ_ZONE_START >> OBJ_SEG_SHIFT, (size_t)1 << OBJ_ZONE_BITS) == 0,
        "the zone's segment map leaves");
#endif
  memfd = memfd_create("mapalloc-fault", 0);
  CHECK(memfd >= 0 && ftruncate(memfd, 1 << 20) == 0, "memfd");
}

static void sweep_pages(void) {
  child_setup();
  sweep("pages anonymous", pages_anon);
  sweep("pages aligned", pages_aligned);
  sweep("pages locked", pages_locked);
  sweep("pages reserve+commit", pages_reserve_commit);
  sweep("pages protect", pages_protect);
  sweep("pages split", pages_split);
  sweep("pages file", pages_file);
  sweep("pages huge request", pages_huge);
}

static void sweep_pools(void) {
  child_setup();
  sweep("pool small objects", pool_small);
  sweep("pool commit+flags", pool_flags);
  sweep("pool huge objects", pool_huge_objects);
}

static void sweep_heap(void) {
  child_setup();
  sweep("heap small", heap_small);
  sweep("heap medium", heap_medium);
  sweep("heap large", heap_large);
  sweep("heap large realloc", heap_realloc_large);
}

/* Secure mode (guard pages; turned on at run time in a default build): the slab area's
 * guards with MADV_GUARD_INSTALL where the kernel has them (each install is a call the
 * sweep fails), and the PROT_NONE holes of the fallback. */
static void sweep_secure(void) {
  child_setup();
#if !OBJ_SECURE
  obj_secure_rt = true;
#endif
  (void)os_guard_supported(); /* probed (and cached) before counting */
  sweep("secure pool small objects", pool_small);
  sweep("secure heap small", heap_small);
}

static void sweep_secure_holes(void) {
  os_guard_disable();
  child_setup();
#if !OBJ_SECURE
  obj_secure_rt = true;
#endif
  sweep("secure pool small objects, holes", pool_small);
  sweep("secure heap small, holes", heap_small);
}

static void sweep_arena(void) {
  child_setup();
  sweep("arena", arena_use);
}

Test(fault, page_layer) {
  in_child(sweep_pages);
}

Test(fault, pools) {
  in_child(sweep_pools);
}

Test(fault, heap) {
  in_child(sweep_heap);
}

Test(fault, secure) {
  in_child(sweep_secure);
}

Test(fault, secure_holes) {
  in_child(sweep_secure_holes);
}

Test(fault, arena) {
  in_child(sweep_arena);
}

/* free never changes errno (heap.h), even when the purge or unmap a free triggers fails:
 * with purging at once, every free below empties a slab or a segment (or unmaps a large
 * block) while every system call fails; errno must still be what the caller left there. */
enum { ERRNO_BLOCKS = 64 };
static void *eblocks[ERRNO_BLOCKS];

#define FREE_KEEPS_ERRNO(what, call)                                                               \
  do {                                                                                             \
    errno = EDOM;                                                                                  \
    call;                                                                                          \
    CHECK(errno == EDOM, "%s changed errno to %d", what, errno);                                   \
  } while (0)

static void free_errno_body(void) {
  child_setup();
  heap_space.purge_delay_ms = 0; /* an emptied slab is purged by the free that empties it */
  heap_opt.purge_delay_ms = 0;   /* a freed large block is unmapped at once */
  const size_t sizes[] = {96 << 10, 40 << 10, 64, 1 << 20};
  for (size_t k = 0; k < sizeof sizes / sizeof *sizes; k++) {
    for (int i = 0; i < ERRNO_BLOCKS; i++) CHECK((eblocks[i] = ma_malloc(sizes[k])), "malloc");
    os_fault_arm_run(1, OS_FAULT_ALL, ENOMEM);
    for (int i = 0; i < ERRNO_BLOCKS; i++) {
      if (i % 2)
        FREE_KEEPS_ERRNO("ma_free", ma_free(eblocks[i]));
      else
        FREE_KEEPS_ERRNO("ma_realloc(p, 0)", CHECK(ma_realloc(eblocks[i], 0) == NULL, "realloc"));
    }
    FREE_KEEPS_ERRNO("ma_heap_collect", ma_heap_collect(true));
    unsigned long fired = os_fault_fired();
    os_fault_disarm();
    CHECK(fired > 0, "size %zu: no system call failed during the frees", sizes[k]);
    settle();
  }
  /* Pools: objects of one segment each (the free unmaps it) and small ones past the
   * retention. */
  const size_t osizes[] = {5 << 20, 256 << 10};
  for (size_t k = 0; k < sizeof osizes / sizeof *osizes; k++) {
    ma_pool *pool;
    ma_pool_opts po = {.obj_size = osizes[k]};
    CHECK(ma_pool_create(&po, &pool) == 0, "pool");
    int n = k == 0 ? 8 : ERRNO_BLOCKS;
    for (int i = 0; i < n; i++) CHECK((eblocks[i] = ma_pool_alloc(pool)), "pool alloc");
    os_fault_arm_run(1, OS_FAULT_ALL, ENOMEM);
    for (int i = 0; i < n; i++) FREE_KEEPS_ERRNO("ma_pool_free", ma_pool_free(pool, eblocks[i]));
    unsigned long fired = os_fault_fired();
    os_fault_disarm();
    CHECK(fired > 0, "pool %zu: no system call failed during the frees", osizes[k]);
    ma_pool_destroy(pool);
    settle();
  }
}

Test(fault, free_keeps_errno_when_the_purge_fails) {
  in_child(free_errno_body);
}

/* The hook itself: counts, fails exactly the armed call with the armed errno, disarms. */
Test(fault, hook_fails_the_nth_call) {
  size_t ps = ma_page_size();
  os_fault_arm(2, EAGAIN);
  void *a = os_alloc(ps, 0, false); /* call 1 */
  void *b = os_alloc(ps, 0, false); /* call 2: fails */
  int e = errno;
  void *c = os_alloc(ps, 0, false); /* call 3 */
  cr_assert_eq(os_fault_calls(), 3);
  cr_assert_eq(os_fault_fired(), 1);
  os_fault_disarm();
  cr_assert(a && !b && c);
  cr_assert_eq(e, EAGAIN);
  cr_assert_eq(os_release(a, ps), 0);
  cr_assert_eq(os_release(c, ps), 0);
  cr_assert_eq(os_fault_calls(), 3, "disarmed: not counted");
}

/* A refused munmap of memory nobody refers to any more is retried, not lost. */
Test(fault, refused_unmap_is_deferred_then_done) {
  size_t ps = ma_page_size();
  unsigned char v;
  char *a = os_alloc(2 * ps, 0, false);
  cr_assert_not_null(a);
  /* Call 1 (munmap of a) fails: a's pages are given back (call 2, MADV_DONTNEED, refused
   * here too, which changes nothing) and a is deferred. */
  os_fault_arm_run(1, 3, ENOMEM);
  cr_assert_eq(os_release_owned(a, ps), 0);
  cr_assert_eq(os_release_owned(a + ps, ps), 0); /* call 3 (retry of a) fails, 4 unmaps */
  cr_assert_eq(os_fault_calls(), 4);
  os_fault_disarm();
  a[0] = 1; /* still mapped */
  cr_assert_eq(mincore(a + ps, ps, &v), -1, "the second range is gone");
  cr_assert_eq(os_release_retry(), 0);
  cr_assert_eq(mincore(a, ps, &v), -1, "unmapped by the retry");
  cr_assert_eq(errno, ENOMEM);
}

/* Address space runs out for real (RLIMIT_AS): every failure is NULL + ENOMEM (or -ENOMEM),
 * and after freeing everything the same requests succeed again. */
static size_t vm_bytes;
static int vm_cb(const ma_area *a, void *ctx) {
  (void)ctx;
  vm_bytes += a->end - a->start;
  return 0;
}

static size_t until_enomem(size_t size) {
  size_t n = 0;
  while (n < MAX_PTRS) {
    void *p = ma_malloc(size);
    if (!p) {
      CHECK(errno == ENOMEM, "malloc(%zu) under RLIMIT_AS: errno %d", size, errno);
      break;
    }
    memset(p, 1, size < 4096 ? size : 4096);
    ptrs[n++] = p;
  }
  CHECK(n < MAX_PTRS && n > 0, "malloc(%zu): %zu blocks before ENOMEM", size, n);
  return n;
}

static void rlimit_body(void) {
  child_setup();
  ma_free(ma_malloc(16));           /* this thread's heap exists */
  ma_free(ma_malloc(1 << 20));      /* the large-block table exists */
  CHECK(pool_small() == 0, "pool"); /* this thread's pool cache exists */
  settle();
  snap_take(&snap_base);
  vm_bytes = 0;
  CHECK(ma_areas_query(0, 0, UINTPTR_MAX, vm_cb, NULL) == 0, "maps");
  struct rlimit rl = {vm_bytes + (96 << 20), vm_bytes + (96 << 20)};
  CHECK(setrlimit(RLIMIT_AS, &rl) == 0, "setrlimit");
  const size_t sizes[] = {16 << 10, 100 << 10, 1 << 20, 4096};
  for (int round = 0; round < 2; round++) {
    for (size_t k = 0; k < sizeof sizes / sizeof *sizes; k++) {
      size_t n = until_enomem(sizes[k]);
      void *big = ma_realloc(ptrs[0], 1 << 30);
      CHECK(!big && errno == ENOMEM, "realloc beyond the limit");
      for (size_t i = 0; i < n; i++) ma_free(ptrs[i]);
      settle();
      snap_take(&snap_now);
      CHECK(snap_same(&snap_base, &snap_now), "malloc(%zu) until ENOMEM left mappings", sizes[k]);
    }
    ma_pool *pool;
    ma_pool_opts po = {.obj_size = 4096};
    CHECK(ma_pool_create(&po, &pool) == 0, "pool");
    size_t n = 0;
    while (n < MAX_PTRS && (ptrs[n] = ma_pool_alloc(pool)) != NULL) n++;
    CHECK(n < MAX_PTRS && errno == ENOMEM, "pool alloc: errno %d after %zu", errno, n);
    ma_pool_destroy(pool);
    ma_map maps[64];
    ma_map_opts mo = MA_MAP_OPTS_DEFAULT;
    mo.len = 8 << 20;
    mo.align = 2 << 20;
    int r = 0;
    for (n = 0; n < 64 && (r = ma_map_create(&mo, &maps[n])) == 0;) n++;
    CHECK(n < 64 && r == -ENOMEM, "map create: %d after %zu", r, n);
    while (n) CHECK(ma_map_destroy(&maps[--n]) == 0, "destroy");
    settle();
    snap_take(&snap_now);
    CHECK(snap_same(&snap_base, &snap_now), "round %d left mappings behind", round);
  }
}

Test(fault, rlimit_as_failures_are_clean_and_recoverable) {
  in_child(rlimit_body);
}

/* ---- Refused unmaps past the old 64-entry table (issue 12, item 4) ----------------------- */

/* Resident pages of [p, p+len), or SIZE_MAX when some of it is not mapped. */
static size_t resident_pages(const void *p, size_t len) {
  static unsigned char vec[1 << 16];
  size_t ps = ma_page_size(), n = (len + ps - 1) / ps, r = 0;
  CHECK(n <= sizeof vec, "mincore vector");
  if (mincore((void *)p, len, vec) != 0) return SIZE_MAX;
  for (size_t i = 0; i < n; i++) r += vec[i] & 1;
  return r;
}

enum { STORM_BLOCKS = 100, STORM_POOLS = 40, STORM_RES = 100, STORM_BLOCK = 256 << 10 };
static void *storm_blk[STORM_BLOCKS], *storm_res[STORM_RES];
static void *storm_obj[STORM_POOLS];

/* munmap refused 300+ times in a row (heap large blocks given back by a collect, pools
 * destroyed with their segments, page-layer reservations): every range is kept with its
 * pages given back, errno is untouched, and once munmap works again one retry unmaps it
 * all, in a fork child too. The old 64-entry table dropped every range past the 64th. */
static void storm_body(void) {
  child_setup();
  size_t ps = ma_page_size();
  ma_free(ma_malloc(STORM_BLOCK)); /* the large-block table exists */
  CHECK(pool_small() == 0, "pool");
  settle();
  snap_take(&snap_base);

  for (size_t i = 0; i < STORM_BLOCKS; i++) {
    storm_blk[i] = ma_malloc(STORM_BLOCK);
    CHECK(storm_blk[i], "malloc");
    memset(storm_blk[i], 0x5a, STORM_BLOCK); /* resident */
  }
  ma_pool *pools[STORM_POOLS];
  for (size_t i = 0; i < STORM_POOLS; i++) {
    ma_pool_opts po = {.obj_size = 64 + 64 * i};
    CHECK(ma_pool_create(&po, &pools[i]) == 0, "pool create");
    storm_obj[i] = ma_pool_alloc(pools[i]);
    CHECK(storm_obj[i], "pool alloc");
    memset(storm_obj[i], 0x5a, po.obj_size);
  }
  for (size_t i = 0; i < STORM_RES; i++) {
    storm_res[i] = os_reserve(4 * ps, 0, NULL);
    CHECK(storm_res[i], "reserve");
  }

  os_fault_arm_munmap(OS_FAULT_ALL, ENOMEM);
  errno = 4242;
  for (size_t i = 0; i < STORM_BLOCKS; i++) ma_free(storm_blk[i]);
  ma_heap_collect(true); /* the cached blocks go back: every munmap refused */
  for (size_t i = 0; i < STORM_POOLS; i++) ma_pool_destroy(pools[i]);
  for (size_t i = 0; i < STORM_RES; i++)
    CHECK(os_release_owned(storm_res[i], 4 * ps) == 0, "release %zu deferred", i);
  CHECK(errno == 4242, "errno changed to %d by the release paths", errno);
  unsigned long refused = os_fault_munmap_fired();
  size_t pending = os_release_pending();
  fprintf(stderr, "munmap storm: %lu munmaps refused, %zu ranges pending\n", refused, pending);
  CHECK(refused > 3 * 64, "only %lu munmaps refused", refused);
  CHECK(pending >= STORM_RES + STORM_POOLS, "%zu ranges pending", pending);

  /* Still mapped, but not resident: at most the page that holds a range's list node. */
  size_t res_pages = 0;
  for (size_t i = 0; i < STORM_BLOCKS; i++) {
    size_t r = resident_pages(storm_blk[i], STORM_BLOCK);
    CHECK(r != SIZE_MAX, "a refused block is gone");
    res_pages += r;
  }
  CHECK(res_pages <= STORM_BLOCKS, "%zu pages of %d refused blocks still resident", res_pages,
        STORM_BLOCKS);
  for (size_t i = 0; i < STORM_RES; i++)
    CHECK(resident_pages(storm_res[i], 4 * ps) == 0, "reservation %zu", i);

  /* A fork child inherits the list and can drain it (the lock was not left held). */
  fflush(NULL);
  pid_t pid = fork();
  CHECK(pid >= 0, "fork");
  if (pid == 0) {
    os_fault_arm_munmap(0, 0);
    if (os_release_retry() != 0) _exit(2);
    for (size_t i = 0; i < STORM_BLOCKS; i++)
      if (resident_pages(storm_blk[i], STORM_BLOCK) != SIZE_MAX) _exit(3);
    _exit(0);
  }
  int st;
  CHECK(waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0,
        "fork child drain: status %d", st);
  CHECK(os_release_pending() == pending, "the child's retry changed the parent");

  os_fault_arm_munmap(0, 0);
  errno = 4242;
  CHECK(os_release_retry() == 0, "deferred unmaps still pending");
  CHECK(errno == 4242, "retry changed errno");
  for (size_t i = 0; i < STORM_BLOCKS; i++)
    CHECK(resident_pages(storm_blk[i], STORM_BLOCK) == SIZE_MAX, "block %zu still mapped", i);
  for (size_t i = 0; i < STORM_RES; i++)
    CHECK(resident_pages(storm_res[i], 4 * ps) == SIZE_MAX, "reservation %zu still mapped", i);
  settle();
  snap_take(&snap_now);
  CHECK(snap_same(&snap_base, &snap_now), "refused unmaps left mappings behind");

  /* Usable again. */
  for (size_t i = 0; i < STORM_BLOCKS; i++) {
    storm_blk[i] = ma_malloc(STORM_BLOCK);
    CHECK(storm_blk[i], "malloc after the storm");
    memset(storm_blk[i], 1, STORM_BLOCK);
  }
  for (size_t i = 0; i < STORM_BLOCKS; i++) ma_free(storm_blk[i]);
  CHECK(pool_small() == 0, "pool after the storm");
}

Test(fault, refused_unmaps_past_the_table_are_kept_then_done) {
  in_child(storm_body);
}

/* Ranges without room for a node (reservations) fill a table; while half of it is taken
 * the page layer maps nothing new (ENOMEM), and maps again once the retry drains it. */
static void gate_body(void) {
  size_t ps = ma_page_size();
  void *grow = os_alloc(ps, 0, false), *moved = NULL;
  CHECK(grow != NULL, "a mapping to grow later");
  os_fault_arm_munmap(OS_FAULT_ALL, ENOMEM);
  size_t n = 0;
  void *p;
  while (n < 100000 && (p = os_reserve(ps, 0, NULL)) != NULL) {
    CHECK(os_release_owned(p, ps) == 0, "release %zu", n);
    n++;
  }
  CHECK(n > 64 && n < 100000 && errno == ENOMEM, "reserve refused after %zu: errno %d", n, errno);
  CHECK(os_alloc(ps, 0, false) == NULL && errno == ENOMEM, "alloc behind a closed gate");
  ma_map_opts mo = MA_MAP_OPTS_DEFAULT;
  mo.len = ps;
  ma_map mm;
  CHECK(ma_map_create(&mo, &mm) == -ENOMEM, "ma_map_create behind a closed gate");
  CHECK(os_remap(grow, ps, 64 * ps, true, &moved) == -ENOMEM,
        "a remap that may move, behind a closed gate");
  fprintf(stderr, "mapping gate closed after %zu refused unmaps\n", n);
  os_fault_arm_munmap(0, 0);
  void *m = os_alloc(ps, 0, false);
  CHECK(m != NULL, "alloc once munmap works again");
  CHECK(os_release_pending() == 0, "the gate's retry drained the table");
  CHECK(os_release_owned(m, ps) == 0, "release");
  CHECK(os_remap(grow, ps, 64 * ps, true, &moved) == 0, "remap once the gate is open");
  CHECK(os_release_owned(moved, 64 * ps) == 0, "release the grown mapping");
}

Test(fault, deferred_table_closes_the_mapping_gate) {
  in_child(gate_body);
}
