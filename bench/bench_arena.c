/* Benchmark of the mapping arena against the raw system calls it wraps.
 *
 *   bench_arena [reps]        (default 31 repetitions)
 *
 * 1. add+remove cycles of a shared memfd mapping, 4 KiB to 1 GiB:
 *    arena: ma_arena_add_fd_mapping + ma_arena_remove_mapping
 *    raw:   mmap(MAP_SHARED|MAP_FIXED, fd) over a raw PROT_NONE reservation, then
 *           mmap(PROT_NONE, MAP_PRIVATE|MAP_ANONYMOUS|MAP_NORESERVE|MAP_FIXED) back
 *    (the same two system calls; the arena adds its checks, one fcntl or two, the mutex and
 *    the record). Also with 10k other mappings present, and for anonymous mappings.
 * 2. foreach over 10k mappings, and find (lookup) among them.
 * Repetitions are interleaved (arena and raw alternate, order flipped every repetition);
 * the table shows medians of ns per cycle, the ratio of the medians, and the median of the
 * per-repetition ratios (paired: each arena batch against the raw batch run next to it,
 * which cancels most of the drift of a shared machine).
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "mapalloc/arena.h"

#define RW     (MA_PROT_READ | MA_PROT_WRITE)
#define GIB    ((size_t)1 << 30)
#define SPAN   (2 * GIB)
#define MAXREP 101

static double now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
  qsort(v, (size_t)n, sizeof *v, cmp_double);
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static void die(const char *what) {
  perror(what);
  exit(1);
}

/* ---- One batch of cycles; returns ns per cycle --------------------------------------------- */

static double arena_batch(ma_arena *a, size_t off, size_t len, int fd, int iters) {
  double t0 = now_ns();
  for (int i = 0; i < iters; i++) {
    int r = fd >= 0 ? ma_arena_add_fd_mapping(a, off, len, fd, 0, RW)
                    : ma_arena_add_anon_mapping(a, off, len, RW);
    if (r || ma_arena_remove_mapping(a, off, len)) {
      fprintf(stderr, "arena cycle failed: %d\n", r);
      exit(1);
    }
  }
  return (now_ns() - t0) / iters;
}

static double raw_batch(char *base, size_t len, int fd, int iters) {
  int flags = fd >= 0 ? MAP_SHARED : (MAP_PRIVATE | MAP_ANONYMOUS);
  double t0 = now_ns();
  for (int i = 0; i < iters; i++) {
    if (mmap(base, len, PROT_READ | PROT_WRITE, flags | MAP_FIXED, fd, 0) == MAP_FAILED)
      die("mmap fixed");
    if (mmap(base, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, -1,
             0) == MAP_FAILED)
      die("mmap reserve");
  }
  return (now_ns() - t0) / iters;
}

struct row {
  const char *name;
  size_t len;
  int fd;       /* memfd, or -1 for anonymous */
  bool crowded; /* 10k other mappings present in both arena and raw reservation */
  double arena[MAXREP], raw[MAXREP];
};

static void fmt_size(size_t len, char *buf, size_t n) {
  if (len >= GIB)
    snprintf(buf, n, "%zu GiB", len / GIB);
  else if (len >= (1u << 20))
    snprintf(buf, n, "%zu MiB", len >> 20);
  else
    snprintf(buf, n, "%zu KiB", len >> 10);
}

/* Fills [0, 2*n pages) of both the arena and the raw reservation with n one-page mappings
 * of fd on every other page (the raw side gets the same VMAs, so both pay the same kernel
 * cost for a crowded address space). */
static void crowd(ma_arena *a, char *raw, int fd, size_t n, size_t ps) {
  for (size_t i = 0; i < n; i++) {
    if (ma_arena_add_fd_mapping(a, 2 * i * ps, ps, fd, 0, MA_PROT_READ)) die("crowd arena");
    if (mmap(raw + 2 * i * ps, ps, PROT_READ, MAP_SHARED | MAP_FIXED, fd, 0) == MAP_FAILED)
      die("crowd raw");
  }
}

static int sum_fn(const ma_arena_mapping *m, void *ctx) {
  *(size_t *)ctx += m->len;
  return 0;
}

int main(int argc, char **argv) {
  int reps = argc > 1 ? atoi(argv[1]) : 31;
  if (reps < 1 || reps > MAXREP) reps = 31;
  size_t ps = (size_t)sysconf(_SC_PAGESIZE);
  enum { CROWD = 10000 };

  int fd = memfd_create("bench_arena", MFD_CLOEXEC);
  if (fd < 0 || ftruncate(fd, (off_t)GIB) != 0) die("memfd");

  ma_arena *a = NULL;
  if (ma_arena_create(SPAN, 0, &a)) die("ma_arena_create");
  /* The raw reservation gets the arena's 1 GiB alignment, so both sides map at addresses
   * with the same page-table layout. */
  char *over =
      mmap(NULL, SPAN + GIB, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (over == MAP_FAILED) die("raw reservation");
  char *raw = (char *)(((uintptr_t)over + GIB - 1) & ~(uintptr_t)(GIB - 1));

  /* Mappings are placed in the upper GiB; the crowd (added later) lives in the lower one. */
  struct row rows[] = {
      {"memfd", 4096, fd, false, {0}, {0}},       {"memfd", 64 << 10, fd, false, {0}, {0}},
      {"memfd", 2 << 20, fd, false, {0}, {0}},    {"memfd", 64 << 20, fd, false, {0}, {0}},
      {"memfd", GIB, fd, false, {0}, {0}},        {"anon", 4096, -1, false, {0}, {0}},
      {"anon", 2 << 20, -1, false, {0}, {0}},     {"memfd+10k", 4096, fd, true, {0}, {0}},
      {"memfd+10k", 2 << 20, fd, true, {0}, {0}},
  };
  size_t nrows = sizeof rows / sizeof rows[0];
  int iters = 200;
  double foreach_ns[MAXREP], find_ns[MAXREP];

  /* Warm up both paths once. */
  arena_batch(a, GIB, ps, fd, 50);
  raw_batch(raw + GIB, ps, fd, 50);

  for (int pass = 0; pass < 2; pass++) { /* pass 0: empty; pass 1: 10k mappings present */
    if (pass == 1) crowd(a, raw, fd, CROWD, ps);
    for (int r = 0; r < reps; r++) {
      for (size_t i = 0; i < nrows; i++) {
        if (rows[i].crowded != (pass == 1)) continue;
        if (r % 2) {
          rows[i].arena[r] = arena_batch(a, GIB, rows[i].len, rows[i].fd, iters);
          rows[i].raw[r] = raw_batch(raw + GIB, rows[i].len, rows[i].fd, iters);
        } else {
          rows[i].raw[r] = raw_batch(raw + GIB, rows[i].len, rows[i].fd, iters);
          rows[i].arena[r] = arena_batch(a, GIB, rows[i].len, rows[i].fd, iters);
        }
      }
      if (pass == 1) {
        size_t sum = 0;
        double t0 = now_ns();
        for (int k = 0; k < 20; k++) ma_arena_foreach(a, sum_fn, &sum);
        foreach_ns[r] = (now_ns() - t0) / 20;
        if (sum != 20 * CROWD * ps) die("foreach sum");
        ma_arena_mapping m;
        t0 = now_ns();
        for (size_t k = 0; k < 20000; k++) {
          size_t slot = (k * 7919) % CROWD;
          if (ma_arena_find(a, 2 * slot * ps, &m) || m.off != 2 * slot * ps) die("find");
        }
        find_ns[r] = (now_ns() - t0) / 20000;
      }
    }
  }

  printf("mapalloc arena vs raw mmap: add+remove cycle (MAP_FIXED over a PROT_NONE "
         "reservation and back)\n%d interleaved repetitions x %d cycles, medians\n\n",
         reps, iters);
  printf("%-10s %8s %14s %14s %8s\n", "mapping", "size", "raw ns/cycle", "arena ns/cycle", "ratio");
  for (size_t i = 0; i < nrows; i++) {
    char sz[32];
    fmt_size(rows[i].len, sz, sizeof sz);
    double ratios[MAXREP];
    for (int r = 0; r < reps; r++) ratios[r] = rows[i].arena[r] / rows[i].raw[r];
    double mp = median(ratios, reps);
    double mr = median(rows[i].raw, reps), ma = median(rows[i].arena, reps);
    printf("%-10s %8s %14.0f %14.0f %7.2fx %7.2fx\n", rows[i].name, sz, mr, ma, ma / mr, mp);
  }
  double fe = median(foreach_ns, reps), fi = median(find_ns, reps);
  printf("\nforeach over %d mappings: %.0f us per walk (%.1f ns per mapping)\n", CROWD, fe / 1e3,
         fe / CROWD);
  printf("find among %d mappings:   %.0f ns per lookup\n", CROWD, fi);

  ma_arena_destroy(a);
  munmap(over, SPAN + GIB);
  close(fd);
  return 0;
}
