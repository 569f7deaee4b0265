/* Heap benchmark: the same malloc/free workloads under mapalloc and its peers.
 *
 *   bench_heap [--reps N] [--lib PATH] [--callgrind] [WORKLOAD...]
 *
 * The driver re-runs itself once per allocator and repetition with LD_PRELOAD set (glibc:
 * none; jemalloc, mimalloc, tcmalloc: Debian's libraries; mapalloc: libmapalloc-preload.so
 * next to this build, or --lib), and prints the median ns per operation and the ratio to
 * mimalloc. --callgrind instead counts instructions per malloc+free pair of the churn loop
 * with valgrind (difference of two runs of N and 2N iterations, so start-up cancels out).
 *
 * Workloads (one thread unless stated):
 *   churn      malloc+free of one block, sizes cycling over 16..512 bytes
 *   window     1,000 live blocks of 16..1,024 bytes, one replaced per step
 *   bigwindow  100,000 live blocks of 16..4,096 bytes, one replaced per step
 *   medium     malloc+free of 8..64 KiB blocks with 64 live
 *   large      malloc+free of 200..900 KB blocks (two pages touched)
 *   realloc    a buffer grown by realloc from 16 bytes to 4 MiB, freed, repeated
 *   xthread    2 threads: one allocates, the other frees (remote frees), batches of 1024
 *   threads2   2 threads each running `window` independently
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static inline uint64_t rng(uint64_t *s) {
  uint64_t x = *s;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  return *s = x;
}

/* Keeps the compiler from removing a malloc/free pair. */
static void *volatile sink;

/* ---- workloads: return operations done ---- */
static size_t w_churn(size_t n) {
  static const size_t sizes[8] = {16, 32, 48, 64, 96, 128, 256, 512};
  for (size_t i = 0; i < n; i++) {
    void *p = malloc(sizes[i & 7]);
    sink = p;
    free(p);
  }
  return n;
}

static size_t window(size_t n, size_t live, size_t maxsz, uint64_t seed) {
  void **v = calloc(live, sizeof(void *));
  uint64_t s = seed;
  for (size_t i = 0; i < n; i++) {
    size_t k = rng(&s) % live;
    free(v[k]);
    v[k] = malloc(16 + rng(&s) % maxsz);
    *(char *)v[k] = 1;
  }
  for (size_t k = 0; k < live; k++) free(v[k]);
  free(v);
  return n;
}

static size_t w_window(size_t n) {
  return window(n, 1000, 1008, 1);
}
static size_t w_bigwindow(size_t n) {
  return window(n, 100000, 4080, 2);
}
static size_t w_medium(size_t n) {
  return window(n, 64, 56 << 10, 3);
}

static size_t w_large(size_t n) {
  for (size_t i = 0; i < n; i++) {
    char *p = malloc(200000 + (i % 8) * 100000);
    p[0] = 1;
    p[150000] = 2;
    sink = p;
    free(p);
  }
  return n;
}

static size_t w_realloc(size_t n) {
  size_t ops = 0;
  for (size_t r = 0; ops < n; r++) {
    char *p = NULL;
    for (size_t sz = 16; sz <= (4u << 20); sz += sz / 4 + 16) {
      char *q = realloc(p, sz);
      if (!q) abort();
      p = q;
      p[sz - 1] = 1;
      ops++;
    }
    free(p);
  }
  return ops;
}

/* Producer/consumer in batches of XB blocks handed over under a mutex: the time is the
 * allocation and the cross-thread free, not the hand-over (which a spinning ring on a
 * loaded machine would dominate). At most XQ batches are in flight. */
#define XB 1024
#define XQ 8
static void *xbatch[XQ][XB];
static size_t x_head, x_tail, x_batches;
static pthread_mutex_t x_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t x_cv = PTHREAD_COND_INITIALIZER;

static void *x_consumer(void *arg) {
  (void)arg;
  for (size_t b = 0; b < x_batches; b++) {
    pthread_mutex_lock(&x_mu);
    while (x_tail == x_head) pthread_cond_wait(&x_cv, &x_mu);
    pthread_mutex_unlock(&x_mu);
    void **v = xbatch[x_tail % XQ];
    for (size_t i = 0; i < XB; i++) free(v[i]);
    pthread_mutex_lock(&x_mu);
    x_tail++;
    pthread_cond_broadcast(&x_cv);
    pthread_mutex_unlock(&x_mu);
  }
  return NULL;
}

static size_t w_xthread(size_t n) {
  x_batches = n / XB;
  pthread_t t;
  pthread_create(&t, NULL, x_consumer, NULL);
  uint64_t s = 5;
  for (size_t b = 0; b < x_batches; b++) {
    pthread_mutex_lock(&x_mu);
    while (x_head - x_tail == XQ) pthread_cond_wait(&x_cv, &x_mu);
    pthread_mutex_unlock(&x_mu);
    void **v = xbatch[x_head % XQ];
    for (size_t i = 0; i < XB; i++) v[i] = malloc(16 + rng(&s) % 500);
    pthread_mutex_lock(&x_mu);
    x_head++;
    pthread_cond_broadcast(&x_cv);
    pthread_mutex_unlock(&x_mu);
  }
  pthread_join(t, NULL);
  return x_batches * XB;
}

static void *t_window(void *arg) {
  window((size_t)(uintptr_t)arg, 1000, 1008, (uint64_t)(uintptr_t)&arg);
  return NULL;
}
static size_t w_threads2(size_t n) {
  pthread_t t[2];
  for (int i = 0; i < 2; i++) pthread_create(&t[i], NULL, t_window, (void *)(uintptr_t)(n / 2));
  for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
  return n;
}

typedef struct workload {
  const char *name;
  size_t (*fn)(size_t);
  size_t n;
} workload;

static const workload workloads[] = {
    {"churn", w_churn, 10000000},        {"window", w_window, 4000000},
    {"bigwindow", w_bigwindow, 2000000}, {"medium", w_medium, 500000},
    {"large", w_large, 200000},          {"realloc", w_realloc, 200000},
    {"xthread", w_xthread, 1000000},     {"threads2", w_threads2, 4000000},
};
#define NW (sizeof workloads / sizeof workloads[0])

typedef struct alloc_def {
  const char *name;
  const char *lib; /* NULL: glibc */
} alloc_def;

static alloc_def allocs[] = {
    {"mapalloc", NULL},
    {"mimalloc", "/usr/lib/x86_64-linux-gnu/libmimalloc.so.2"},
    {"jemalloc", "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"},
    {"tcmalloc", "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4"},
    {"glibc", NULL},
};
#define NA (sizeof allocs / sizeof allocs[0])

/* Runs argv with LD_PRELOAD=lib (NULL: unset); returns its stdout (first line) as double,
 * or -1. With `err`, the child's stderr is captured there instead. */
static double child_rss_kb; /* second number the worker printed: peak RSS in KiB */

static double run_child(const char *lib, char *const argv[], char *err, size_t errlen) {
  int out[2], ep[2];
  if (pipe(out) || pipe(ep)) return -1;
  pid_t pid = fork();
  if (pid == 0) {
    if (lib)
      setenv("LD_PRELOAD", lib, 1);
    else
      unsetenv("LD_PRELOAD");
    dup2(out[1], 1);
    if (err) dup2(ep[1], 2);
    close(out[0]);
    close(ep[0]);
    execvp(argv[0], argv);
    _exit(127);
  }
  close(out[1]);
  close(ep[1]);
  char buf[256] = {0};
  size_t n = 0;
  ssize_t r;
  while ((r = read(out[0], buf + n, sizeof buf - 1 - n)) > 0) n += (size_t)r;
  if (err) {
    size_t m = 0;
    while ((r = read(ep[0], err + m, errlen - 1 - m)) > 0) m += (size_t)r;
    err[m] = 0;
  }
  close(out[0]);
  close(ep[0]);
  int st;
  waitpid(pid, &st, 0);
  if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) return -1;
  char *end;
  double v = strtod(buf, &end);
  child_rss_kb = strtod(end, NULL);
  return v;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static const char *self_path(void) {
  static char p[4096];
  ssize_t n = readlink("/proc/self/exe", p, sizeof p - 1);
  if (n <= 0) return "bench_heap";
  p[n] = 0;
  return p;
}

/* Instructions of a churn run of `iters` (callgrind "Collected" line). */
static double callgrind_ir(const char *lib, size_t iters) {
  char n[32], err[16384];
  snprintf(n, sizeof n, "%zu", iters);
  char *argv[] = {"valgrind",
                  "--tool=callgrind",
                  "--callgrind-out-file=/dev/null",
                  (char *)self_path(),
                  "--worker",
                  "churn",
                  n,
                  NULL};
  if (run_child(lib, argv, err, sizeof err) < 0) return -1;
  const char *c = strstr(err, "Collected : ");
  return c ? strtod(c + 12, NULL) : -1;
}

int main(int argc, char **argv) {
  if (argc >= 3 && strcmp(argv[1], "--worker") == 0) {
    for (size_t i = 0; i < NW; i++) {
      if (strcmp(argv[2], workloads[i].name)) continue;
      size_t n = argc > 3 ? strtoull(argv[3], NULL, 10) : workloads[i].n;
      double t0 = now_ns();
      size_t ops = workloads[i].fn(n);
      double t1 = now_ns();
      struct rusage ru;
      getrusage(RUSAGE_SELF, &ru);
      printf("%.3f %ld\n", (t1 - t0) / (double)ops, ru.ru_maxrss);
      return 0;
    }
    return 2;
  }
  int reps = 5;
  bool cg = false;
  char libbuf[4096];
  const char *ours = NULL;
  const char *only[NW];
  size_t nonly = 0;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--reps") && i + 1 < argc)
      reps = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--lib") && i + 1 < argc)
      ours = argv[++i];
    else if (!strcmp(argv[i], "--callgrind"))
      cg = true;
    else if (nonly < NW)
      only[nonly++] = argv[i];
  }
  if (!ours) { /* build tree: bench/bench_heap -> ../libmapalloc-preload.so */
    snprintf(libbuf, sizeof libbuf, "%s", self_path());
    char *slash = strrchr(libbuf, '/');
    if (slash) *slash = 0;
    slash = strrchr(libbuf, '/');
    if (slash) *slash = 0;
    strncat(libbuf, "/libmapalloc-preload.so", sizeof libbuf - strlen(libbuf) - 1);
    ours = libbuf;
  }
  if (access(ours, R_OK) != 0) {
    fprintf(stderr, "bench_heap: %s not found (use --lib)\n", ours);
    return 1;
  }
  allocs[0].lib = ours;

  if (cg) {
    setenv("MAPALLOC_TRACK", "0", 1); /* obj: no valgrind client requests under callgrind */
    printf("instructions per malloc+free pair, churn loop (callgrind, (Ir(2N) - Ir(N)) / N)\n");
    size_t n = 200000;
    for (size_t a = 0; a < NA; a++) {
      if (allocs[a].lib && access(allocs[a].lib, R_OK) != 0) continue;
      double i1 = callgrind_ir(allocs[a].lib, n), i2 = callgrind_ir(allocs[a].lib, 2 * n);
      printf("  %-10s %8.1f\n", allocs[a].name, (i2 - i1) / (double)n);
    }
    return 0;
  }

  printf("median ns per operation over %d runs (ratio to mimalloc in brackets)\n", reps);
  printf("%-10s", "workload");
  for (size_t a = 0; a < NA; a++) printf(" %18s", allocs[a].name);
  printf("\n");
  double geo[NA] = {0};
  int ngeo = 0;
  double rss[NW][NA];
  for (size_t w = 0; w < NW; w++) {
    bool sel = nonly == 0;
    for (size_t i = 0; i < nonly; i++) sel |= !strcmp(only[i], workloads[w].name);
    if (!sel) continue;
    double med[NA];
    for (size_t a = 0; a < NA; a++) {
      double t[64], m[64];
      int k = 0;
      if (allocs[a].lib && access(allocs[a].lib, R_OK) != 0) {
        med[a] = -1;
        continue;
      }
      for (int r = 0; r < reps && r < 64; r++) {
        char *cargv[] = {(char *)self_path(), "--worker", (char *)workloads[w].name, NULL};
        double v = run_child(allocs[a].lib, cargv, NULL, 0);
        if (v > 0) m[k] = child_rss_kb, t[k++] = v;
      }
      qsort(t, (size_t)k, sizeof t[0], cmp_double);
      qsort(m, (size_t)k, sizeof m[0], cmp_double);
      med[a] = k ? t[k / 2] : -1;
      rss[w][a] = k ? m[k / 2] : -1;
    }
    printf("%-10s", workloads[w].name);
    for (size_t a = 0; a < NA; a++) {
      if (med[a] < 0)
        printf(" %18s", "n/a");
      else
        printf(" %9.2f (%5.2fx)", med[a], med[a] / med[1]);
      if (med[a] > 0 && med[1] > 0) geo[a] += __builtin_log(med[a] / med[1]);
    }
    ngeo++;
    printf("\n");
    fflush(stdout);
  }
  printf("%-10s", "geomean");
  for (size_t a = 0; a < NA; a++) printf("          (%5.2fx)", __builtin_exp(geo[a] / ngeo));
  printf("\n\nmedian peak RSS in MiB (ratio to jemalloc in brackets)\n%-10s", "workload");
  for (size_t a = 0; a < NA; a++) printf(" %18s", allocs[a].name);
  printf("\n");
  for (size_t w = 0, i = 0; w < NW; w++) {
    bool sel = nonly == 0;
    for (size_t j = 0; j < nonly; j++) sel |= !strcmp(only[j], workloads[w].name);
    if (!sel) continue;
    printf("%-10s", workloads[w].name);
    for (size_t a = 0; a < NA; a++) {
      if (rss[w][a] < 0)
        printf(" %18s", "n/a");
      else
        printf(" %9.1f (%5.2fx)", rss[w][a] / 1024, rss[w][a] / rss[w][2]);
    }
    printf("\n");
    i++;
  }
  return 0;
}
