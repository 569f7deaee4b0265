/* Page layer micro-benchmark: what mapalloc's page layer adds over the raw system calls.
 *
 * Each operation is timed as a batch of `ops` calls, once through mapalloc (ma_map_*) and
 * once as the same raw system calls, alternating raw and mapalloc batches `reps` times so
 * both see the same machine noise. Reports the median ns per operation of each side and
 * their ratio (goal: mapalloc / raw < 1.05).
 *
 *   bench_pages [reps] [ops]      (defaults 15 and 2000)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "mapalloc/pages.h"

#define RESERVE_LEN ((size_t)1 << 20)  /* 1 MiB reservations */
#define COMMIT_LEN  ((size_t)64 << 10) /* 64 KiB commits */

static double now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static void die(const char *what) {
  perror(what);
  exit(1);
}

/* ---- the operations, raw and through mapalloc ------------------------------------------------ */

static void *raw_reserve(void) {
  void *p = mmap(NULL, RESERVE_LEN, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) die("mmap");
  return p;
}
static void raw_commit(void *p) {
  if (mprotect(p, COMMIT_LEN, PROT_READ | PROT_WRITE)) die("mprotect");
}
static void raw_decommit(void *p) {
  if (mmap(p, COMMIT_LEN, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, -1,
           0) == MAP_FAILED)
    die("mmap fixed");
}

static ma_map ma_reserve(void) {
  ma_map_opts o = MA_MAP_OPTS_DEFAULT;
  o.len = RESERVE_LEN;
  o.flags = MA_MAP_RESERVE;
  ma_map m;
  if (ma_map_create(&o, &m)) die("ma_map_create");
  return m;
}

/* One batch of an operation: returns ns per op. */
typedef double (*batch_fn)(size_t ops);

static double raw_cycle(size_t ops) {
  double t = now_ns();
  for (size_t i = 0; i < ops; i++) {
    void *p = raw_reserve();
    raw_commit(p);
    raw_decommit(p);
    munmap(p, RESERVE_LEN);
  }
  return (now_ns() - t) / (double)ops;
}
static double ma_cycle(size_t ops) {
  double t = now_ns();
  for (size_t i = 0; i < ops; i++) {
    ma_map m = ma_reserve();
    if (ma_map_commit(&m, 0, COMMIT_LEN)) die("commit");
    if (ma_map_decommit(&m, 0, COMMIT_LEN)) die("decommit");
    ma_map_destroy(&m);
  }
  return (now_ns() - t) / (double)ops;
}

static double raw_reserve_release(size_t ops) {
  double t = now_ns();
  for (size_t i = 0; i < ops; i++) munmap(raw_reserve(), RESERVE_LEN);
  return (now_ns() - t) / (double)ops;
}
static double ma_reserve_release(size_t ops) {
  double t = now_ns();
  for (size_t i = 0; i < ops; i++) {
    ma_map m = ma_reserve();
    ma_map_destroy(&m);
  }
  return (now_ns() - t) / (double)ops;
}

static void *raw_region;
static ma_map ma_region;
static size_t ma_region_off;

static double raw_commit_decommit(size_t ops) {
  double t = now_ns();
  for (size_t i = 0; i < ops; i++) {
    raw_commit(raw_region);
    raw_decommit(raw_region);
  }
  return (now_ns() - t) / (double)ops;
}
static double ma_commit_decommit(size_t ops) {
  double t = now_ns();
  for (size_t i = 0; i < ops; i++) {
    if (ma_map_commit(&ma_region, ma_region_off, COMMIT_LEN)) die("commit");
    if (ma_map_decommit(&ma_region, ma_region_off, COMMIT_LEN)) die("decommit");
  }
  return (now_ns() - t) / (double)ops;
}

static double raw_protect(size_t ops) {
  double t = now_ns();
  for (size_t i = 0; i < ops; i++) {
    if (mprotect(raw_region, COMMIT_LEN, PROT_READ)) die("mprotect");
    if (mprotect(raw_region, COMMIT_LEN, PROT_READ | PROT_WRITE)) die("mprotect");
  }
  return (now_ns() - t) / (double)ops;
}
static double ma_protect(size_t ops) {
  double t = now_ns();
  for (size_t i = 0; i < ops; i++) {
    if (ma_map_protect_range(&ma_region, ma_region_off, COMMIT_LEN, MA_PROT_READ)) die("protect");
    if (ma_map_protect_range(&ma_region, ma_region_off, COMMIT_LEN, MA_PROT_READ | MA_PROT_WRITE))
      die("protect");
  }
  return (now_ns() - t) / (double)ops;
}

/* ---- driver
 * -------------------------------------------------------------------------------------- */

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}
static double median(double *v, size_t n) {
  qsort(v, n, sizeof *v, cmp_double);
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

struct bench {
  const char *name;
  batch_fn raw, ma;
};

int main(int argc, char **argv) {
  size_t reps = argc > 1 ? strtoul(argv[1], NULL, 10) : 15;
  size_t ops = argc > 2 ? strtoul(argv[2], NULL, 10) : 2000;
  if (reps < 1 || reps > 1000 || ops < 1) {
    fprintf(stderr, "usage: %s [reps 1..1000] [ops >= 1]\n", argv[0]);
    return 2;
  }
  /* Both regions: a committed 1 MiB map; the operations work on 64 KiB in its middle, so
   * the VMA splits and merges are the same whatever the neighbours are. */
  size_t mid = RESERVE_LEN / 2;
  raw_region = raw_reserve();
  if (mprotect(raw_region, RESERVE_LEN, PROT_READ | PROT_WRITE)) die("mprotect");
  ma_region = ma_reserve();
  if (ma_map_commit(&ma_region, 0, RESERVE_LEN)) die("ma setup");
  raw_region = (char *)raw_region + mid;
  ma_region_off = mid;

  const struct bench benches[] = {
      {"reserve 1M + commit 64K + decommit + release", raw_cycle, ma_cycle},
      {"reserve 1M + release", raw_reserve_release, ma_reserve_release},
      {"commit 64K + decommit (in a reserve)", raw_commit_decommit, ma_commit_decommit},
      {"protect 64K R, then RW", raw_protect, ma_protect},
  };
  double *raw = calloc(reps, sizeof *raw), *ma = calloc(reps, sizeof *ma);
  if (!raw || !ma) die("calloc");
  printf("page layer vs raw syscalls: median ns/op over %zu interleaved reps of %zu ops\n", reps,
         ops);
  printf("%-46s %10s %10s %8s\n", "operation", "raw ns", "mapalloc", "ratio");
  for (size_t b = 0; b < sizeof benches / sizeof *benches; b++) {
    benches[b].raw(ops / 10 + 1); /* warm up */
    benches[b].ma(ops / 10 + 1);
    for (size_t r = 0; r < reps; r++) {
      if (r % 2) { /* alternate which side goes first */
        ma[r] = benches[b].ma(ops);
        raw[r] = benches[b].raw(ops);
      } else {
        raw[r] = benches[b].raw(ops);
        ma[r] = benches[b].ma(ops);
      }
    }
    double mr = median(raw, reps), mm = median(ma, reps);
    printf("%-46s %10.0f %10.0f %8.3f\n", benches[b].name, mr, mm, mm / mr);
  }
  free(raw);
  free(ma);
  munmap((char *)raw_region - mid, RESERVE_LEN);
  ma_map_destroy(&ma_region);
  return 0;
}
