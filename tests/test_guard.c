/* Secure-mode guard pages (issue 12 item 8): the page layer's os_guard_install/remove
 * (MADV_GUARD_INSTALL, Linux 6.13+) and the object layer's use of them. In secure mode a
 * slab's guard page is a guard inside the segment's one slab-area mapping where the kernel
 * has guard pages, so the number of mappings no longer grows per slab; the fallback (old
 * kernels, MAPALLOC_GUARD_MADVISE=0, forced here with os_guard_disable) keeps PROT_NONE holes,
 * a mapping per slab. Either way a linear overflow off a slab faults at its last page.
 * Criterion runs each test in a fresh process; the default build turns secure mode on at
 * run time (obj_secure_rt), the secure build has it always. */
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdatomic.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common.h"
#include "malloc/heap_internal.h"
#include "mapalloc/heap.h"
#include "mapalloc/pool.h"
#include "os/os.h"
#include "guard_common.h"

#if defined(__SANITIZE_ADDRESS__)
/* Under AddressSanitizer: a fault must kill the process as the probes expect. */
const char *__asan_default_options(void);
const char *__asan_default_options(void) {
  return "handle_segv=0";
}
#endif

#define KiB ((size_t)1 << 10)
#define MiB ((size_t)1 << 20)
/* Every slab is a power of two of at least 64 KiB, aligned to its size in its segment. */
#define SLAB_MIN (64 * KiB)

/* Lines of /proc/self/maps: one per mapping. */
static long maps_count(void) {
  FILE *f = fopen("/proc/self/maps", "r");
  cr_assert_not_null(f);
  long n = 0;
  int c;
  while ((c = fgetc(f)) != EOF) n += c == '\n';
  fclose(f);
  return n;
}

/* ---- page layer ---------------------------------------------------------------------------- */

Test(guard_os, bad_arguments_are_einval) {
  size_t ps = os_page_size();
  char *p = os_alloc(4 * ps, 0, false);
  cr_assert_not_null(p);
  cr_assert_eq(os_guard_install(p + 1, ps), -EINVAL);
  cr_assert_eq(os_guard_install(p, ps - 1), -EINVAL);
  cr_assert_eq(os_guard_install(p, 0), -EINVAL);
  cr_assert_eq(os_guard_remove(p + 1, ps), -EINVAL);
  cr_assert_eq(os_guard_install((void *)(-ps), 2 * ps), -EINVAL, "wraps around");
  cr_assert_eq(os_release(p, 4 * ps), 0);
}

Test(guard_os, install_faults_remove_reads_zero) {
  if (!os_guard_supported()) cr_skip_test("this kernel has no MADV_GUARD_INSTALL");
  size_t ps = os_page_size();
  char *p = os_alloc(4 * ps, 0, false);
  cr_assert_not_null(p);
  memset(p, 7, 4 * ps);
  long before = maps_count();
  cr_assert_eq(os_guard_install(p + ps, ps), 0);
  cr_assert_eq(maps_count(), before, "a guard splits no mapping");
  cr_assert(write_faults(p + ps));
  cr_assert(!write_faults(p + ps - 1));
  cr_assert(!write_faults(p + 2 * ps));
  cr_assert_eq(os_reset(p, 4 * ps), 0);
  cr_assert(write_faults(p + ps), "MADV_DONTNEED keeps the guard");
  cr_assert_eq(os_guard_remove(p + ps, ps), 0);
  cr_assert_eq(p[ps], 0, "a removed guard reads as zeros");
  p[ps] = 1;
  cr_assert_eq(os_release(p, 4 * ps), 0);
}

/* In-process probe of many pages: a write that faults jumps back here. */
static sigjmp_buf probe_jmp;
static void probe_segv(int sig) {
  (void)sig;
  siglongjmp(probe_jmp, 1);
}

static bool write_faults_here(volatile char *p) {
  struct sigaction sa = {.sa_handler = probe_segv}, old;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGSEGV, &sa, &old);
  bool faulted = true;
  if (!sigsetjmp(probe_jmp, 1)) {
    *p = 1;
    faulted = false;
  }
  sigaction(SIGSEGV, &old, NULL);
  return faulted;
}

/* Many ranges at once (more than one process_madvise batch of 64): each gets its guard,
 * no mapping splits, the pages between stay writable; a range that is not mapped stops it
 * with the kernel's error, the ranges before it guarded. */
Test(guard_os, install_many_guards_every_range) {
  if (!os_guard_supported()) cr_skip_test("this kernel has no MADV_GUARD_INSTALL");
  size_t ps = os_page_size();
  enum { N = 150 };
  char *p = os_alloc(2 * N * ps, 0, false);
  cr_assert_not_null(p);
  void *g[N];
  for (size_t i = 0; i < N; i++) g[i] = p + (2 * i + 1) * ps;
  long before = maps_count();
  cr_assert_eq(os_guard_install_many(g, N, ps), 0);
  cr_assert_eq(maps_count(), before, "guards split no mapping");
  for (size_t i = 0; i < N; i++) {
    cr_assert(write_faults_here(g[i]), "range %zu has no guard", i);
    cr_assert(!write_faults_here(p + 2 * i * ps), "page %zu between guards faults", 2 * i);
  }
  cr_assert_eq(os_guard_install_many(g, N, ps + 1), -EINVAL);
  cr_assert_eq(os_release(p, 2 * N * ps), 0);

  char *q = os_alloc(2 * N * ps, 0, false);
  cr_assert_not_null(q);
  for (size_t i = 0; i < N; i++) g[i] = q + (2 * i + 1) * ps;
  cr_assert_eq(os_release(g[100], ps), 0); /* a hole where range 100 is */
  cr_assert_eq(os_guard_install_many(g, N, ps), -ENOMEM);
  for (size_t i = 0; i < 100; i++) cr_assert(write_faults_here(g[i]), "range %zu", i);
  cr_assert_eq(os_release(q, 2 * N * ps), 0);
}

Test(guard_os, disabled_is_enosys) {
  size_t ps = os_page_size();
  char *p = os_alloc(2 * ps, 0, false);
  cr_assert_not_null(p);
  os_guard_disable();
  cr_assert(!os_guard_supported());
  cr_assert_eq(os_guard_install(p, ps), -ENOSYS);
  cr_assert_eq(os_guard_remove(p, ps), -ENOSYS);
  void *one = p;
  cr_assert_eq(os_guard_install_many(&one, 1, ps), -ENOSYS);
  p[0] = 1; /* nothing installed */
  cr_assert_eq(os_release(p, 2 * ps), 0);
}

/* ---- object layer, through the heap ------------------------------------------------------- */

enum { NBLOCKS = 64 * 1024 }; /* 1 KiB blocks: 64 MiB, about 1,000 slabs */

/* Allocates NBLOCKS 1 KiB blocks, touching each lightly; returns the growth in mappings.
 * *nslabs gets the number of distinct 64 KiB slab-sized regions used. */
static long fill_heap(void **blocks, long *nregions) {
  long before = maps_count();
  uintptr_t last = 0;
  long regions = 0;
  for (size_t i = 0; i < NBLOCKS; i++) {
    char *b = ma_malloc(KiB);
    cr_assert_not_null(b, "block %zu", i);
    b[0] = (char)i;
    b[KiB - 1] = (char)i;
    blocks[i] = b;
    if ((uintptr_t)b / SLAB_MIN != last) regions++, last = (uintptr_t)b / SLAB_MIN;
  }
  *nregions = regions;
  return maps_count() - before;
}

static void check_heap(void **blocks) {
  for (size_t i = 0; i < NBLOCKS; i++) {
    const char *b = blocks[i];
    cr_assert(b[0] == (char)i && b[KiB - 1] == (char)i, "block %zu intact", i);
  }
}

/* A linear overflow off block `b` (writing forwards a page at a time) faults at the first
 * page of the guard after its slab: the page that ends a 64 KiB-aligned region. */
static void overflow_faults_at_slab_end(char *b) {
  size_t ps = os_page_size();
  fflush(NULL);
  pid_t pid = fork();
  cr_assert_geq(pid, 0);
  if (pid == 0) {
    int fd[2];
    if (pipe(fd) != 0) _exit(3);
    pid_t g = fork(); /* the grandchild overflows and reports how far it got */
    if (g == 0) {
      close(fd[0]);
      signal(SIGSEGV, SIG_DFL);
      volatile char *c = b;
      uintptr_t end = ((uintptr_t)b | (SLAB_MIN - 1)) + 1 + 4 * MiB;
      for (uintptr_t a = (uintptr_t)b; a < end; a = (a | (ps - 1)) + 1) {
        if (write(fd[1], &a, sizeof a) != sizeof a) _exit(4);
        poke(c + (a - (uintptr_t)b));
      }
      _exit(0); /* no fault: missed */
    }
    close(fd[1]);
    uintptr_t a = 0, last = 0;
    while (read(fd[0], &a, sizeof a) == sizeof a) last = a;
    int st;
    if (waitpid(g, &st, 0) != g) _exit(5);
    if (!WIFSIGNALED(st) || WTERMSIG(st) != SIGSEGV) _exit(6);
    /* The faulting page is a guard page: the last page before a slab boundary. */
    _exit(((last & ~(uintptr_t)(ps - 1)) + ps) % SLAB_MIN == 0 ? 0 : 7);
  }
  int st = wait_child(pid);
  cr_assert(WIFEXITED(st), "status %#x", st);
  cr_assert_eq(WEXITSTATUS(st), 0,
               "exit %d (6: the overflow did not fault, 7: it faulted elsewhere than at a "
               "slab's last page)",
               WEXITSTATUS(st));
}

/* (a) The growth in mappings is far less than one per slab (it was about two per slab, the
 * slab and its hole, with PROT_NONE holes). */
Test(guard_heap, many_slabs_few_mappings) {
  secure_markers_on();
  void **blocks = calloc(NBLOCKS, sizeof *blocks);
  cr_assert_not_null(blocks);
  long slabs, grown = fill_heap(blocks, &slabs);
  cr_log_info("%ld slab regions, %ld more mappings\n", slabs, grown);
  cr_assert_geq(slabs, 900);
  cr_assert_lt(grown, slabs / 16, "%ld more mappings for %ld slabs", grown, slabs);
  check_heap(blocks);
  for (size_t i = 0; i < NBLOCKS; i++) ma_free(blocks[i]);
  free(blocks);
}

/* (b) Guards inside the mapping: an overflow off a slab still faults, at the guard, also
 * after the slab was purged (MADV_DONTNEED keeps guards) and used again. */
Test(guard_heap, overflow_off_a_slab_faults) {
  secure_on();
  void **blocks = calloc(NBLOCKS, sizeof *blocks);
  cr_assert_not_null(blocks);
  long slabs;
  (void)fill_heap(blocks, &slabs);
  overflow_faults_at_slab_end(blocks[0]);
  overflow_faults_at_slab_end(blocks[NBLOCKS / 2]);
  overflow_faults_at_slab_end(blocks[NBLOCKS - 1]);
  /* Every block but the first goes (its segment stays); the empty slabs are purged; new
   * blocks fault their pages in again. */
  void *kept = blocks[0];
  for (size_t i = 1; i < NBLOCKS; i++) ma_free(blocks[i]);
  cr_assert_eq(ma_heap_collect(true), 0);
  (void)fill_heap(blocks, &slabs);
  check_heap(blocks);
  overflow_faults_at_slab_end(blocks[1]);
  overflow_faults_at_slab_end(blocks[NBLOCKS - 1]);
  for (size_t i = 0; i < NBLOCKS; i++) ma_free(blocks[i]);
  ma_free(kept);
  free(blocks);
}

/* (c) The fallback (a kernel without guard pages): PROT_NONE holes, a mapping per slab;
 * the heap works and an overflow faults all the same. */
Test(guard_heap, fallback_holes_work) {
  os_guard_disable();
  secure_on();
  void **blocks = calloc(NBLOCKS, sizeof *blocks);
  cr_assert_not_null(blocks);
  long slabs, grown = fill_heap(blocks, &slabs);
  cr_log_info("fallback: %ld slab regions, %ld more mappings\n", slabs, grown);
  cr_assert_geq(grown, slabs / 2, "the fallback maps slabs one by one");
  check_heap(blocks);
  overflow_faults_at_slab_end(blocks[0]);
  overflow_faults_at_slab_end(blocks[NBLOCKS - 1]);
  void *kept = blocks[0];
  for (size_t i = 1; i < NBLOCKS; i++) ma_free(blocks[i]);
  cr_assert_eq(ma_heap_collect(true), 0);
  (void)fill_heap(blocks, &slabs);
  check_heap(blocks);
  overflow_faults_at_slab_end(blocks[NBLOCKS - 1]);
  for (size_t i = 0; i < NBLOCKS; i++) ma_free(blocks[i]);
  ma_free(kept);
  free(blocks);
}

/* ---- object layer, through the pools ------------------------------------------------------ */

/* Pools share the segments' code: guards inside the mapping, purges (trim) keep them, and
 * a commit pool (populated pages) populates around them. */
static void pool_case(bool commit) {
  secure_on();
  ma_pool *p;
  cr_assert_eq(ma_pool_create(&(ma_pool_opts){.obj_size = 1000, .commit = commit}, &p), 0);
  enum { N = 16 * 1024 };
  static char *o[N];
  long before = maps_count();
  for (size_t i = 0; i < N; i++) {
    o[i] = ma_pool_alloc(p);
    cr_assert_not_null(o[i]);
    memset(o[i], (int)(i & 0x7f), 1000);
  }
  long grown = maps_count() - before;
  if (os_guard_supported()) cr_assert_lt(grown, 32, "%ld more mappings", grown);
  for (size_t i = 0; i < N; i++) cr_assert_eq(o[i][999], (char)(i & 0x7f));
  overflow_faults_at_slab_end(o[N - 1]);
  for (size_t i = 1; i < N; i++) ma_pool_free(p, o[i]);
  cr_assert_eq(ma_pool_trim(p), 0);
  for (size_t i = 1; i < N; i++) {
    o[i] = ma_pool_alloc(p);
    cr_assert_not_null(o[i]);
    o[i][0] = 1;
  }
  overflow_faults_at_slab_end(o[N - 1]);
  ma_pool_destroy(p);
}

Test(guard_pool, lazy_pool) {
  pool_case(false);
}

Test(guard_pool, commit_pool) {
  pool_case(true);
}

/* ---- large blocks --------------------------------------------------------------------------- */

enum { NLARGE = 256 };

/* Every usable byte of large block p (of `u` usable bytes) takes a write and reads it back,
 * and the byte after them faults. */
static void large_block_guarded(char *p, size_t u) {
  memset(p, 0x5a, u);
  cr_assert_eq(p[0], 0x5a);
  cr_assert_eq(p[u - 1], 0x5a, "the last usable byte of %p + %zu", (void *)p, u);
  cr_assert(write_faults(p + u), "a write just past %p + %zu usable bytes must fault", (void *)p,
            u);
}

/* `NLARGE` secure large blocks of 256 KiB..1.2 MiB; returns how many mappings they added. */
static long map_large(char **b) {
  long before = maps_count();
  for (size_t i = 0; i < NLARGE; i++) {
    b[i] = ma_malloc(256 * KiB + i * 4 * KiB);
    cr_assert_not_null(b[i]);
  }
  return maps_count() - before;
}

/* (d) A secure large block's guard page is a guard marker inside its mapping: the blocks
 * add far fewer mappings than one each (a PROT_NONE guard splits each block's mapping in
 * two: about two per block, and vm.max_map_count was reached at half the blocks), and a
 * write past a block still faults. */
Test(guard_large, many_blocks_few_mappings) {
  secure_markers_on();
  static char *b[NLARGE];
  long grown = map_large(b);
  cr_log_info("%d large blocks, %ld more mappings\n", NLARGE, grown);
  cr_assert_leq(grown, NLARGE / 2, "%ld more mappings for %d blocks", grown, NLARGE);
  for (size_t i = 0; i < NLARGE; i += 51) large_block_guarded(b[i], ma_usable_size(b[i]));
  for (size_t i = 0; i < NLARGE; i++) ma_free(b[i]);
}

/* (e) Growth and shrinking move the guard: after each realloc every usable byte (the old
 * guard page included: a marker left inside the block would fault or read zeros) is
 * writable, the byte past them faults, and the contents are kept. */
Test(guard_large, realloc_moves_the_guard) {
  secure_on();
  char *p = ma_malloc(300 * KiB);
  cr_assert_not_null(p);
  size_t u = ma_usable_size(p);
  large_block_guarded(p, u);
  static const size_t sizes[] = {2 * MiB,   700 * KiB, 5 * MiB + 123,
                                 200 * KiB, 9 * MiB,   9 * MiB + 8 * KiB};
  for (size_t k = 0; k < sizeof sizes / sizeof *sizes; k++) {
    size_t keep = u < sizes[k] ? u : sizes[k];
    char *q = ma_realloc(p, sizes[k]);
    cr_assert_not_null(q);
    for (size_t i = 0; i < keep; i += 997) cr_assert_eq(q[i], 0x5a, "byte %zu after %zu", i, k);
    cr_assert_eq(q[keep - 1], 0x5a);
    p = q;
    u = ma_usable_size(p);
    cr_assert_geq(u, sizes[k]);
    large_block_guarded(p, u);
  }
  cr_assert_eq(ma_heap_check(), 0);
  ma_free(p);
}

/* (e2) Freed guarded blocks are cached like any large block, their pages reused, and a freed
 * block keeps its marker: a block cut from the end of its range gets that marker as its guard
 * (no madvise), one cut from the front of a range without one gets a marker put in (before,
 * the marker came out at every free and went in at every allocation: two madvise calls per
 * block, and medium-2M in a secure build took 6.4x the default build's time; before that,
 * guarded blocks bypassed the cache and every page faulted again). Blocks taken from a
 * longer range, one grown in place and one shrunk keep a guard right after their usable
 * bytes and none inside them. */
Test(guard_large, freed_blocks_are_reused_guarded) {
  secure_markers_on();
  char *a = ma_malloc(2 * MiB);
  cr_assert_not_null(a);
  large_block_guarded(a, ma_usable_size(a));
  ma_free(a);
  char *b = ma_malloc(2 * MiB);
  cr_assert_eq(b, a, "a freed block's range is reused whole, marker included (got %p, freed %p)",
               (void *)b, (void *)a);
  large_block_guarded(b, ma_usable_size(b));
  ma_free(b);
  b = ma_malloc(512 * KiB);
  cr_assert_eq(b, a + 1536 * KiB, "cut from the end of the range, before its marker (got %p)",
               (void *)b);
  large_block_guarded(b, ma_usable_size(b));
  char *c = ma_malloc(256 * KiB); /* from the front of the rest: a marker put in */
  cr_assert_eq(c, a, "the front of the rest of the range (got %p)", (void *)c);
  large_block_guarded(c, ma_usable_size(c));
  char *q = ma_realloc(c, 700 * KiB); /* in place, over the cached pages behind c's guard */
  cr_assert_eq(q, c, "grown in place");
  for (size_t i = 0; i < 256 * KiB; i += 4096) cr_assert_eq(q[i], 0x5a);
  large_block_guarded(q, ma_usable_size(q));
  q = ma_realloc(q, 300 * KiB); /* shrunk: the tail with the old guard page is cached */
  cr_assert_eq(q, a);
  large_block_guarded(q, ma_usable_size(q));
  char *d = ma_malloc(400 * KiB); /* the shrunk tail and its marker, cut from its end */
  cr_assert_not_null(d);
  large_block_guarded(d, ma_usable_size(d));
  cr_assert_eq(ma_heap_check(), 0);
  ma_free(d);
  ma_free(q);
  ma_free(b);
  cr_assert_eq(ma_heap_check(), 0);
}

/* (e3) Freed guarded blocks next to each other merge into one cached range, their markers
 * kept inside it, so a request larger than each is served from it: the markers inside the
 * block come out, the block is writable to its last usable byte and the last block's marker
 * is its guard, instead of a fresh mapping whose every page faults (medium-8M in a secure
 * build). A block shrunk by one page leaves a tail that is its old marker page alone: the
 * marker comes out before the page is kept. */
Test(guard_large, neighbouring_freed_blocks_join) {
  secure_markers_on();
  /* 12 + 12 + 6 MiB from one 32 MiB mapping: the rest of it cannot serve 24 MiB */
  char *x = ma_malloc(12 * MiB), *y = ma_malloc(12 * MiB), *z = ma_malloc(6 * MiB);
  cr_assert(x && y && z);
  cr_assert_eq(y, x + 12 * MiB + 4 * KiB, "one mapping: y right after x's guard page");
  large_block_guarded(x, ma_usable_size(x));
  large_block_guarded(y, ma_usable_size(y));
  ma_free(x);
  ma_free(y);
  cr_assert_eq(ma_heap_check(), 0);
  char *j = ma_malloc(24 * MiB);
  cr_assert_eq(j, x + 4 * KiB, "ends on y's marker, x's taken out (got %p, x %p)", (void *)j,
               (void *)x);
  large_block_guarded(j, ma_usable_size(j)); /* x's old marker inside would fault here */
  cr_assert_eq(ma_heap_check(), 0);
  /* (huge_realloc itself: realloc keeps a block that shrinks by less than half) */
  bool moved;
  size_t u = ma_usable_size(z);
  char *s = huge_realloc(z, u - 4 * KiB, u - 4 * KiB, &moved);
  cr_assert(s == z && !moved && ma_usable_size(s) == u - 4 * KiB);
  large_block_guarded(s, ma_usable_size(s));
  cr_assert_eq(ma_heap_check(), 0);
  char *t = ma_malloc(u - 4 * KiB); /* the tail's page was kept without its marker */
  cr_assert_not_null(t);
  large_block_guarded(t, ma_usable_size(t));
  ma_free(t);
  ma_free(j);
  ma_free(s);
  cr_assert_eq(ma_heap_check(), 0);
}

/* Writes one byte in every page of p's `u` usable bytes and the last one: a guard marker
 * left inside the block faults (the test then crashes), and checks what was written. */
static void touch_pages(char *p, size_t u, unsigned char v) {
  for (size_t i = 0; i < u; i += 4096) p[i] = v;
  p[u - 1] = v;
  for (size_t i = 0; i < u; i += 4096)
    cr_assert_eq((unsigned char)p[i], v, "%p + %zu", (void *)p, i);
}

/* (e4) Random large-block traffic in secure mode (allocations of 128 KiB..12 MiB, frees,
 * growth and shrinking by realloc and by huge_realloc itself, in random order, seeded by
 * MAPALLOC_TEST_SEED or the time): every page of every block stays writable (no marker is
 * ever left inside one), its contents survive a realloc, the byte after it faults, and the
 * cache's structures stay consistent. Exercises the cache's kept markers, their reuse as
 * guard pages, the markers taken out of blocks placed over them and the shrink tails that
 * end in one. */
Test(guard_large, random_traffic_keeps_blocks_guarded) {
  secure_markers_on();
  enum { SLOTS = 24, STEPS = 600 };
  uint64_t seed = test_seed(), x = seed | 1;
  char *b[SLOTS] = {0};
  unsigned char v[SLOTS] = {0};
  for (unsigned step = 0; step < STEPS; step++) {
    test_rand(&x);
    unsigned k = (unsigned)(x % SLOTS), op = (unsigned)((x >> 8) % 8);
    size_t n = 128 * KiB + (size_t)((x >> 16) % (12 * MiB - 128 * KiB));
    if (op < 2 && b[k]) n = ma_usable_size(b[k]) - 4 * KiB * (1 + (x >> 40) % 3);
    if (!b[k]) {
      b[k] = ma_malloc(n);
      cr_assert_not_null(b[k], "seed %llu step %u", (unsigned long long)seed, step);
    } else if (op < 2) { /* shrink by a few pages: huge_realloc itself (realloc keeps it) */
      bool moved;
      cr_assert_eq(huge_realloc(b[k], n, n, &moved), b[k]);
      cr_assert_eq((unsigned char)b[k][0], v[k]);
    } else if (op < 5) {
      char *q = ma_realloc(b[k], n);
      cr_assert_not_null(q, "seed %llu step %u", (unsigned long long)seed, step);
      cr_assert_eq((unsigned char)q[0], v[k], "contents kept (seed %llu step %u)",
                   (unsigned long long)seed, step);
      b[k] = q;
    } else {
      ma_free(b[k]);
      b[k] = NULL;
      continue;
    }
    v[k] = (unsigned char)(step | 1);
    touch_pages(b[k], ma_usable_size(b[k]), v[k]);
    if (step % 50 == 0) {
      size_t u = ma_usable_size(b[k]);
      cr_assert(write_faults(b[k] + u), "past %p + %zu (seed %llu step %u)", (void *)b[k], u,
                (unsigned long long)seed, step);
      cr_assert_eq(ma_heap_check(), 0);
    }
  }
  for (unsigned k = 0; k < SLOTS; k++) {
    if (!b[k]) continue;
    touch_pages(b[k], ma_usable_size(b[k]), 7);
    ma_free(b[k]);
  }
  cr_assert_eq(ma_heap_check(), 0);
}

/* (e4) A guarded block that grows in place over the cached pages behind it takes up to a
 * quarter more than asked when that puts its guard page on a marker already there (a freed
 * neighbour's): the marker put in on a faulted-in page costs a TLB flush on every CPU the
 * process runs on (mstress in a secure build: 17.8k of them). */
Test(guard_large, growth_ends_on_a_marker) {
  secure_markers_on();
  char *b = ma_malloc(1 * MiB), *c = ma_malloc(1 * MiB), *d = ma_malloc(1 * MiB);
  cr_assert(b && c && d);
  cr_assert_eq(c, b + 1 * MiB + 4 * KiB, "one mapping: c right after b's guard page");
  ma_free(c); /* c's pages and its marker (at b + 2 MiB + 4 KiB) are cached */
  bool moved;
  char *g = huge_realloc(b, 1900 * KiB, 1900 * KiB, &moved);
  cr_assert(g == b && !moved, "grown in place");
  cr_assert_eq(ma_usable_size(g), 2 * MiB + 4 * KiB, "ends on c's marker (usable %zu)",
               ma_usable_size(g));
  large_block_guarded(g, ma_usable_size(g));
  cr_assert_eq(ma_heap_check(), 0);
  ma_free(d);
  ma_free(g);
  cr_assert_eq(ma_heap_check(), 0);
}

/* (e5) The guard changes of a resize run outside the large-block lock (the block's record
 * stays as it was until they are done, then is found again by its address): one thread
 * grows and shrinks guarded blocks while another makes the block table grow and shrink
 * (1200 blocks a round) and churns the cache; every block stays guarded and the walk finds
 * the table, the cache and their accounting consistent. */
static atomic_bool churn_stop;
static atomic_int churn_rounds;

static void *churn_large(void *arg) {
  (void)arg;
  static char *b[1200];
  while (!atomic_load(&churn_stop)) {
    for (size_t i = 0; i < 1200; i++) b[i] = ma_malloc(132 * KiB + (i % 7) * 4 * KiB);
    for (size_t i = 0; i < 1200; i++) ma_free(b[i]);
    atomic_fetch_add(&churn_rounds, 1);
  }
  return NULL;
}

Test(guard_large, resizes_beside_another_thread) {
  secure_markers_on();
  pthread_t t;
  atomic_store(&churn_stop, false);
  cr_assert_eq(pthread_create(&t, NULL, churn_large, NULL), 0);
  for (int round = 0; round < 300 || atomic_load(&churn_rounds) < 3; round++) {
    char *p = ma_malloc(200 * KiB);
    cr_assert_not_null(p);
    for (size_t n = 300 * KiB; n < 4 * MiB; n += n / 2) {
      p = ma_realloc(p, n);
      cr_assert_not_null(p);
    }
    p = ma_realloc(p, 300 * KiB); /* less than half: it shrinks */
    cr_assert_not_null(p);
    if (round % 10 == 0) large_block_guarded(p, ma_usable_size(p));
    ma_free(p);
  }
  atomic_store(&churn_stop, true);
  pthread_join(t, NULL);
  cr_log_info("%d rounds of 1200 blocks beside the resizes\n", atomic_load(&churn_rounds));
  cr_assert_eq(ma_heap_check(), 0);
}

/* (f) The fallback: PROT_NONE guards, a mapping each; overflows fault all the same, also
 * after a realloc. */
Test(guard_large, fallback_prot_none_guards) {
  os_guard_disable();
  secure_on();
  static char *b[NLARGE];
  long grown = map_large(b);
  cr_log_info("fallback: %d large blocks, %ld more mappings\n", NLARGE, grown);
  cr_assert_geq(grown, NLARGE, "a PROT_NONE guard is a mapping of its own");
  large_block_guarded(b[0], ma_usable_size(b[0]));
  b[1] = ma_realloc(b[1], 3 * MiB);
  cr_assert_not_null(b[1]);
  large_block_guarded(b[1], ma_usable_size(b[1]));
  b[2] = ma_realloc(b[2], 160 * KiB + 1);
  cr_assert_not_null(b[2]);
  large_block_guarded(b[2], ma_usable_size(b[2]));
  /* Shrunk by one page (huge_realloc itself: realloc keeps a block that shrinks by less
   * than half): the tail is the old PROT_NONE guard page alone, which is unmapped as it is
   * (before, the list of ranges to unmap wrote its first bytes: SIGSEGV). */
  bool moved;
  size_t u3 = ma_usable_size(b[3]);
  cr_assert_eq(huge_realloc(b[3], u3 - 4 * KiB, u3 - 4 * KiB, &moved), b[3]);
  cr_assert_eq(ma_usable_size(b[3]), u3 - 4 * KiB);
  large_block_guarded(b[3], ma_usable_size(b[3]));
  for (size_t i = 0; i < NLARGE; i++) ma_free(b[i]);
}
