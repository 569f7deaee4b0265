/* Benchmark: ma_pool against malloc/free of the same size under glibc, jemalloc, mimalloc
 * and tcmalloc, in the same run.
 *
 *   build/dev/bench/bench_pool [--reps N] [--scale F]     the table (runs itself as children)
 *   bench_pool --child pool|malloc [--only NAME] [--scale F]   one child: "name ns" lines
 *   bench_pool --callgrind     instructions per alloc+free pair (valgrind's callgrind)
 *
 * The runner re-executes itself once per allocator and repetition, interleaved
 * (pool, glibc, jemalloc, mimalloc, tcmalloc, pool, ...), the peers through LD_PRELOAD of
 * Debian's libraries; it prints medians of ns per alloc+free pair and the ratio of the
 * pool to each malloc, then the memory used by 1M live 64-byte objects.
 *
 * --callgrind counts instructions per alloc+free pair of 64-byte objects, loop included:
 * each iteration allocates 8 objects then frees them (so a free is not always of the
 * block just allocated), and the figure is (Ir(2N) - Ir(N)) / 8N over two runs, so
 * start-up cancels out. The peers run the same loop with malloc/free.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "mapalloc/pool.h"

#define escape(p) __asm__ volatile("" : : "r"(p) : "memory")

static double scale = 1.0;
static bool use_pool;
static const char *only;

static double now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

/* One allocator interface for both sides: a pool of `size`, or malloc. */
typedef struct {
  ma_pool *pool;
  size_t size;
} alloc_t;

static alloc_t mk(size_t size) {
  alloc_t a = {NULL, size};
  if (use_pool) {
    ma_pool_opts o = {.obj_size = size};
    if (ma_pool_create(&o, &a.pool) != 0) {
      perror("ma_pool_create");
      exit(1);
    }
  }
  return a;
}

static inline void *al(alloc_t *a) {
  return use_pool ? ma_pool_alloc(a->pool) : malloc(a->size);
}
static inline void fr(alloc_t *a, void *p) {
  if (use_pool)
    ma_pool_free(a->pool, p);
  else
    free(p);
}
static void done(alloc_t *a) {
  if (a->pool) ma_pool_destroy(a->pool);
}

static size_t iters(size_t base) {
  return (size_t)((double)base * scale) + 1;
}

/* ---- workloads: each returns ns per alloc+free pair ------------------------------------ */

static double pair(size_t size) {
  alloc_t a = mk(size);
  size_t n = iters(2000000);
  for (size_t i = 0; i < 1000; i++) fr(&a, al(&a)); /* warm */
  double t = now_ns();
  for (size_t i = 0; i < n; i++) {
    void *p = al(&a);
    *(volatile char *)p = 1;
    escape(p);
    fr(&a, p);
  }
  t = now_ns() - t;
  done(&a);
  return t / (double)n;
}

static double window(size_t size, size_t live, size_t base) {
  alloc_t a = mk(size);
  void **ring = calloc(live, sizeof *ring);
  for (size_t i = 0; i < live; i++) {
    ring[i] = al(&a);
    *(volatile char *)ring[i] = 1;
  }
  size_t n = iters(base);
  double t = now_ns();
  size_t k = 0;
  for (size_t i = 0; i < n; i++) {
    fr(&a, ring[k]);
    void *p = al(&a);
    *(volatile char *)p = 1;
    ring[k] = p;
    k = k + 1 == live ? 0 : k + 1;
  }
  t = now_ns() - t;
  for (size_t i = 0; i < live; i++) fr(&a, ring[i]);
  free(ring);
  done(&a);
  return t / (double)n;
}

typedef struct {
  alloc_t *a;
  size_t n;
} targ_t;

static void *pair_thread(void *arg) {
  targ_t *t = arg;
  for (size_t i = 0; i < t->n; i++) {
    void *p = al(t->a);
    *(volatile char *)p = 1;
    escape(p);
    fr(t->a, p);
  }
  return NULL;
}

static double pair_2threads(size_t size) {
  alloc_t a = mk(size);
  targ_t t = {&a, iters(1500000)};
  pthread_t th[2];
  double t0 = now_ns();
  for (int i = 0; i < 2; i++) pthread_create(&th[i], NULL, pair_thread, &t);
  for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
  double el = now_ns() - t0;
  done(&a);
  return el / (double)t.n; /* wall time per pair per thread */
}

#define RING 4096
typedef struct {
  alloc_t *a;
  size_t n;
  void *_Atomic ring[RING];
  atomic_size_t head, tail;
} pc_t;

static void backoff(int spin) {
  if (spin < 2000)
    __builtin_ia32_pause();
  else
    sched_yield();
}

/* Objects cross in batches of 64 (one release store per batch) so that the ring costs
 * little next to the allocator's remote free. */
static void *produce(void *arg) {
  pc_t *q = arg;
  size_t tail = 0;
  for (size_t i = 0; i < q->n; i++) {
    void *p = al(q->a);
    *(volatile char *)p = 1;
    for (int spin = 0; i - tail >= RING; spin++) {
      backoff(spin);
      tail = atomic_load_explicit(&q->tail, memory_order_acquire);
    }
    atomic_store_explicit(&q->ring[i % RING], p, memory_order_relaxed);
    if ((i & 63) == 63 || i + 1 == q->n)
      atomic_store_explicit(&q->head, i + 1, memory_order_release);
  }
  return NULL;
}

static void *consume(void *arg) {
  pc_t *q = arg;
  size_t head = 0;
  for (size_t i = 0; i < q->n; i++) {
    for (int spin = 0; i >= head; spin++) {
      if (spin) backoff(spin);
      head = atomic_load_explicit(&q->head, memory_order_acquire);
    }
    void *p = atomic_load_explicit(&q->ring[i % RING], memory_order_relaxed);
    fr(q->a, p);
    if ((i & 63) == 63) atomic_store_explicit(&q->tail, i + 1, memory_order_release);
  }
  return NULL;
}

static double prodcons(size_t size) {
  alloc_t a = mk(size);
  pc_t *q = calloc(1, sizeof *q);
  q->a = &a;
  q->n = iters(1000000);
  pthread_t p, c;
  double t0 = now_ns();
  pthread_create(&p, NULL, produce, q);
  pthread_create(&c, NULL, consume, q);
  pthread_join(p, NULL);
  pthread_join(c, NULL);
  double el = now_ns() - t0;
  size_t n = q->n;
  if (a.pool && getenv("BENCH_POOL_STATS")) {
    ma_pool_stats st;
    ma_pool_stats_get(a.pool, &st);
    fprintf(stderr, "prodcons: committed %zu reserved %zu capacity %zu live %zu\n",
            st.committed_bytes, st.reserved_bytes, st.capacity, st.live);
  }
  free(q);
  done(&a);
  return el / (double)n;
}

static size_t rss_bytes(void) {
  FILE *f = fopen("/proc/self/statm", "r");
  unsigned long size = 0, res = 0;
  if (f) {
    if (fscanf(f, "%lu %lu", &size, &res) != 2) res = 0;
    fclose(f);
  }
  return res * (size_t)sysconf(_SC_PAGESIZE);
}

/* RSS growth for 1M live 64-byte objects, in bytes (the pointer array is excluded). */
static double mem_1m(void) {
  size_t n = 1000000;
  void **v = malloc(n * sizeof *v);
  for (size_t i = 0; i < n; i++) ((void *volatile *)v)[i] = NULL;
  alloc_t a = mk(64);
  void *warm = al(&a);
  fr(&a, warm);
  size_t before = rss_bytes();
  for (size_t i = 0; i < n; i++) {
    v[i] = al(&a);
    memset(v[i], 1, 64);
    escape(v[i]);
  }
  size_t after = rss_bytes();
  for (size_t i = 0; i < n; i++) fr(&a, v[i]);
  done(&a);
  free(v);
  return (double)(after - before);
}

/* The --callgrind loop: n iterations of 8 allocations then 8 frees of 64-byte objects. */
static void cg_loop(size_t n) {
  alloc_t a = mk(64);
  void *v[8];
  for (size_t i = 0; i < n; i++) {
    for (int k = 0; k < 8; k++) {
      v[k] = al(&a);
      escape(v[k]);
    }
    for (int k = 0; k < 8; k++) fr(&a, v[k]);
  }
  done(&a);
}

typedef struct {
  const char *name;
  double (*fn)(void);
} work_t;

static double w_p16(void) {
  return pair(16);
}
static double w_p64(void) {
  return pair(64);
}
static double w_p256(void) {
  return pair(256);
}
static double w_p4096(void) {
  return pair(4096);
}
static double w_win1k(void) {
  return window(64, 1000, 5000000);
}
static double w_win1m(void) {
  return window(64, 1000000, 3000000);
}
static double w_t2(void) {
  return pair_2threads(64);
}
static double w_pc(void) {
  return prodcons(64);
}

static const work_t works[] = {
    {"pair16", w_p16},     {"pair64", w_p64},     {"pair256", w_p256},
    {"pair4096", w_p4096}, {"win1k_64", w_win1k}, {"win1M_64", w_win1m},
    {"2thr_pair64", w_t2}, {"prodcons64", w_pc},  {"mem1M_64", mem_1m},
};
#define NWORK (sizeof works / sizeof works[0])

/* A child runs its timed workload three times and reports the median (the box is shared). */
static int child(void) {
  for (size_t i = 0; i < NWORK; i++) {
    if (only && strcmp(only, works[i].name) != 0) continue;
    double v[3];
    v[0] = v[1] = v[2] = works[i].fn();
    if (works[i].fn != mem_1m) /* memory: the first run only (later ones reuse it) */
      for (int k = 1; k < 3; k++) v[k] = works[i].fn();
    double lo = v[0] < v[1] ? v[0] : v[1], hi = v[0] < v[1] ? v[1] : v[0];
    double med = v[2] < lo ? lo : v[2] > hi ? hi : v[2];
    printf("%s %.3f\n", works[i].name, med);
    fflush(stdout);
  }
  return 0;
}

/* ---- runner ----------------------------------------------------------------------------- */

#define LIBDIR "/usr/lib/x86_64-linux-gnu/"
static const struct {
  const char *name, *preload;
} peers[] = {{"pool", NULL},
             {"glibc", NULL},
             {"jemalloc", LIBDIR "libjemalloc.so.2"},
             {"mimalloc", LIBDIR "libmimalloc.so.2"},
             {"tcmalloc", LIBDIR "libtcmalloc_minimal.so.4"}};
#define NPEER  (sizeof peers / sizeof peers[0])
#define MAXREP 64

static double res[NPEER][NWORK][MAXREP];

/* Starts argv (argv[0] a path, or a name looked up in PATH) with peer k's LD_PRELOAD and
 * its file descriptor `fd` (1 or 2) on a pipe; returns the pid (-1 on failure) and the
 * pipe's read end in *rd. */
static pid_t spawn_peer(size_t k, char *const argv[], int fd, int *rd) {
  int fds[2];
  if (pipe(fds) != 0) return -1;
  pid_t pid = fork();
  if (pid == 0) {
    dup2(fds[1], fd);
    close(fds[0]);
    if (peers[k].preload)
      setenv("LD_PRELOAD", peers[k].preload, 1);
    else
      unsetenv("LD_PRELOAD");
    execvp(argv[0], argv);
    _exit(127);
  }
  close(fds[1]);
  if (pid < 0) close(fds[0]);
  *rd = fds[0];
  return pid;
}

/* Waits for pid: 0 when it exited with status 0, else -1. */
static int reap(pid_t pid) {
  int st;
  if (waitpid(pid, &st, 0) != pid) return -1;
  return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -1;
}

/* Runs workload w of peer k in a fresh process (so no workload inherits another's heap). */
static int run_child(const char *self, size_t k, size_t w, int rep) {
  char sc[32];
  snprintf(sc, sizeof sc, "%g", scale);
  char *argv[] = {(char *)self, "--child", k == 0 ? "pool" : "malloc", "--scale",
                  sc,           "--only",  (char *)works[w].name,      NULL};
  int rd;
  pid_t pid = spawn_peer(k, argv, 1, &rd);
  if (pid < 0) return -1;
  FILE *f = fdopen(rd, "r");
  char name[64];
  double v;
  while (fscanf(f, "%63s %lf", name, &v) == 2)
    if (strcmp(name, works[w].name) == 0) res[k][w][rep] = v;
  fclose(f);
  return reap(pid);
}

/* Instructions callgrind counted for a run of cg_loop(n) by peer k ("Collected" line), or
 * -1 when valgrind is missing or failed. */
static double callgrind_ir(const char *self, size_t k, size_t n) {
  char ns[32];
  snprintf(ns, sizeof ns, "%zu", n);
  char *argv[] = {"valgrind",
                  "--tool=callgrind",
                  "--callgrind-out-file=/dev/null",
                  (char *)self,
                  "--child",
                  k == 0 ? "pool" : "malloc",
                  "--cg-loop",
                  ns,
                  NULL};
  setenv("MAPALLOC_TRACK", "0", 1); /* obj: no valgrind client requests under callgrind */
  int rd;
  pid_t pid = spawn_peer(k, argv, 2, &rd);
  if (pid < 0) return -1;
  static char err[16384];
  size_t m = 0;
  ssize_t r;
  while ((r = read(rd, err + m, sizeof err - 1 - m)) > 0) m += (size_t)r;
  err[m] = 0;
  close(rd);
  if (reap(pid) != 0) return -1;
  const char *c = strstr(err, "Collected : ");
  return c ? strtod(c + 12, NULL) : -1;
}

static int run_callgrind(const char *self) {
  size_t n = 100000;
  printf("instructions per alloc+free pair of 64 B, 8 allocs then 8 frees, loop included "
         "(callgrind, (Ir(2N) - Ir(N)) / 8N)\n");
  for (size_t k = 0; k < NPEER; k++) {
    if (peers[k].preload && access(peers[k].preload, R_OK) != 0) continue;
    double i1 = callgrind_ir(self, k, n), i2 = callgrind_ir(self, k, 2 * n);
    if (i1 < 0 || i2 < 0) {
      fprintf(stderr, "bench_pool: callgrind run of %s failed (is valgrind installed?)\n",
              peers[k].name);
      return 1;
    }
    printf("  %-10s %8.1f\n", peers[k].name, (i2 - i1) / (8.0 * (double)n));
  }
  return 0;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
  double t[MAXREP];
  memcpy(t, v, (size_t)n * sizeof *t);
  qsort(t, (size_t)n, sizeof *t, cmp);
  return n % 2 ? t[n / 2] : (t[n / 2 - 1] + t[n / 2]) / 2;
}

int main(int argc, char **argv) {
  int reps = 9;
  const char *mode = NULL;
  bool cg = false;
  size_t cg_iters = 0;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--child") && i + 1 < argc)
      mode = argv[++i];
    else if (!strcmp(argv[i], "--callgrind"))
      cg = true;
    else if (!strcmp(argv[i], "--cg-loop") && i + 1 < argc)
      cg_iters = strtoull(argv[++i], NULL, 10);
    else if (!strcmp(argv[i], "--reps") && i + 1 < argc)
      reps = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--scale") && i + 1 < argc)
      scale = atof(argv[++i]);
    else if (!strcmp(argv[i], "--only") && i + 1 < argc)
      only = argv[++i];
    else {
      fprintf(stderr,
              "usage: %s [--reps N] [--scale F] | --callgrind | --child pool|malloc [--only W]\n",
              argv[0]);
      return 2;
    }
  }
  if (mode) {
    use_pool = !strcmp(mode, "pool");
    if (cg_iters) {
      cg_loop(cg_iters);
      return 0;
    }
    return child();
  }
  if (reps < 1) reps = 1;
  if (reps > MAXREP) reps = MAXREP;
  char self[4096];
  ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
  if (n <= 0) return 1;
  self[n] = 0;
  if (cg) return run_callgrind(self);
  bool have[NPEER];
  for (size_t k = 0; k < NPEER; k++) have[k] = !peers[k].preload || !access(peers[k].preload, R_OK);
  for (int r = 0; r < reps; r++) {
    for (size_t w = 0; w < NWORK; w++) {
      for (size_t k = 0; k < NPEER; k++) {
        if (!have[k]) continue;
        if (run_child(self, k, w, r) != 0) {
          fprintf(stderr, "bench_pool: child %s %s failed\n", peers[k].name, works[w].name);
          have[k] = false;
        }
      }
    }
    fprintf(stderr, "\rbench_pool: repetition %d/%d done", r + 1, reps);
  }
  fprintf(stderr, "\n");
  printf("ns per alloc+free pair, median of %d interleaved runs (scale %g)\n", reps, scale);
  printf("%-12s", "workload");
  for (size_t k = 0; k < NPEER; k++) printf(" %9s", peers[k].name);
  for (size_t k = 1; k < NPEER; k++) printf("  pool/%-4.4s", peers[k].name);
  printf("\n");
  for (size_t w = 0; w + 1 < NWORK; w++) {
    double m[NPEER];
    printf("%-12s", works[w].name);
    for (size_t k = 0; k < NPEER; k++) {
      m[k] = have[k] ? median(res[k][w], reps) : 0;
      printf(" %9.2f", m[k]);
    }
    for (size_t k = 1; k < NPEER; k++) printf("  %9.2fx", m[k] > 0 ? m[0] / m[k] : 0);
    printf("\n");
  }
  size_t w = NWORK - 1;
  printf("\nRSS growth for 1M live 64-byte objects (64,000,000 bytes of payload)\n");
  for (size_t k = 0; k < NPEER; k++) {
    if (!have[k]) continue;
    double b = median(res[k][w], reps);
    printf("%-10s %12.0f bytes  overhead %+6.2f%%\n", peers[k].name, b, (b / 64e6 - 1) * 100);
  }
  return 0;
}
