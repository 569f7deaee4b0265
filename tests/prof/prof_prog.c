/* Heap-profiling test program, run under libmapalloc-preload.so with MAPALLOC_PROF=1 by
 * tests/prof/run.sh, which checks the profiles and the leak report it leaves behind.
 *
 *   prof_prog leak     leak_here() keeps 24 MiB in 96-byte blocks, leak_big() 8 MiB in
 *                      256 KiB blocks; neighbour() allocates 48 MiB and frees all of it
 *   prof_prog threads  4 threads, each leaking 4 MiB in its own thread_leak_N() while
 *                      allocating and freeing blocks that other threads free
 *   prof_prog fork     the parent keeps 8 MiB (leak_here), its child 8 MiB more
 *                      (child_leak) and exits: two profiles, one per pid
 *   prof_prog dump     3 threads allocate and free while main writes 20 profiles with
 *                      ma_prof_dump(argv[2] + ".N.heap")
 *   prof_prog signal   keeps 8 MiB, raises MAPALLOC_PROF_SIGNAL (SIGUSR2) and waits for
 *                      the helper thread's file PREFIX.PID.0.heap
 *   prof_prog misuse   frees a sampled block twice (run with MAPALLOC_PROF_SAMPLE=1):
 *                      must abort with "double free"
 *   prof_prog rate     1000000 malloc/free pairs of 64 bytes, then 4000 batches of 300
 *                      mallocs and 300 frees (past the thread cache's bound of 256): the
 *                      number of samples taken must match 1 - exp(-64/rate) per malloc;
 *                      then 1000000 blocks allocated by main and freed by a consumer
 *                      thread (which makes one pair of its own every 8 frees)
 *   prof_prog slots    200000 blocks of 64 bytes kept, then freed and malloc_trim(0): prints
 *                      the resident KiB before, with them and after (run with a small
 *                      MAPALLOC_PROF_SAMPLE: each sampled block has a 4 KiB slot of its own)
 * ma_prof_dump comes from the preload library, looked up with dlsym. */
#include <dlfcn.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <malloc.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define NOINLINE __attribute__((noinline))

static void *must(void *p) {
  if (!p) {
    fprintf(stderr, "prof_prog: out of memory\n");
    exit(2);
  }
  return p;
}

/* Blocks kept until exit (the "leak"): a plain array so nothing else allocates. */
static void *kept[1 << 20];
static atomic_size_t nkept;

static void keep(void *p) {
  size_t i = atomic_fetch_add(&nkept, 1);
  if (i < sizeof kept / sizeof kept[0]) kept[i] = p;
}

NOINLINE void *leak_here(size_t n) {
  void *p = must(malloc(n));
  memset(p, 1, n);
  return p;
}

NOINLINE void *leak_big(size_t n) {
  void *p = must(malloc(n));
  memset(p, 2, n);
  return p;
}

NOINLINE void neighbour(size_t n) {
  void *p = must(malloc(n));
  memset(p, 3, n);
  free(p);
}

NOINLINE void *child_leak(size_t n) {
  void *p = must(malloc(n));
  memset(p, 4, n);
  return p;
}

static void leak_bytes(void *(*fn)(size_t), size_t total, size_t block) {
  for (size_t done = 0; done < total; done += block) keep(fn(block));
}

/* ---- threads: one leaking function per thread, cross-thread frees ---- */
#define NTHREADS 4
static void *_Atomic exchange[64];

#define THREAD_LEAK(N)                                                                             \
  NOINLINE void *thread_leak_##N(size_t n) {                                                       \
    void *p = must(malloc(n));                                                                     \
    memset(p, 5, n);                                                                               \
    return p;                                                                                      \
  }
THREAD_LEAK(0)
THREAD_LEAK(1)
THREAD_LEAK(2)
THREAD_LEAK(3)
static void *(*const thread_leaks[NTHREADS])(size_t) = {thread_leak_0, thread_leak_1, thread_leak_2,
                                                        thread_leak_3};

static void *churn_thread(void *arg) {
  unsigned id = (unsigned)(uintptr_t)arg, seed = id * 7919 + 1;
  for (int i = 0; i < 200000; i++) {
    seed = seed * 1103515245 + 12345;
    size_t n = 16 + (seed >> 8) % 2000;
    void *p = must(malloc(n));
    memset(p, 6, n < 64 ? n : 64);
    /* swap with a shared slot: the block is freed by whichever thread takes it next */
    void *old = atomic_exchange(&exchange[(seed >> 20) % 64], p);
    free(old);
    if (i % 50 == 0) keep(thread_leaks[id % NTHREADS](1024)); /* 4000 x 1 KiB = ~4 MiB */
  }
  return NULL;
}

static int run_threads(void) {
  pthread_t t[NTHREADS];
  for (unsigned i = 0; i < NTHREADS; i++)
    if (pthread_create(&t[i], NULL, churn_thread, (void *)(uintptr_t)i) != 0) return 1;
  for (unsigned i = 0; i < NTHREADS; i++) pthread_join(t[i], NULL);
  for (unsigned i = 0; i < 64; i++) free(atomic_exchange(&exchange[i], NULL));
  return 0;
}

/* ---- dump while other threads allocate ---- */
static atomic_bool stop;

static void *busy_thread(void *arg) {
  unsigned seed = (unsigned)(uintptr_t)arg;
  void *ring[256] = {0};
  for (unsigned i = 0; !atomic_load(&stop); i++) {
    seed = seed * 1103515245 + 12345;
    free(ring[i % 256]);
    ring[i % 256] = must(malloc(16 + (seed >> 8) % 300000)); /* small and large blocks */
  }
  for (unsigned i = 0; i < 256; i++) free(ring[i]);
  return NULL;
}

static int run_dump(const char *base) {
  int (*dump)(const char *) = (int (*)(const char *))dlsym(RTLD_DEFAULT, "ma_prof_dump");
  if (!dump) {
    fprintf(stderr, "prof_prog: ma_prof_dump not found (not preloaded?)\n");
    return 1;
  }
  pthread_t t[3];
  for (unsigned i = 0; i < 3; i++)
    if (pthread_create(&t[i], NULL, busy_thread, (void *)(uintptr_t)(i + 1)) != 0) return 1;
  leak_bytes(leak_here, (size_t)4 << 20, 96);
  int rc = 0;
  for (int i = 0; i < 20; i++) {
    char path[4096];
    snprintf(path, sizeof path, "%s.%d.heap", base, i);
    int r = dump(path);
    if (r != 0) {
      fprintf(stderr, "prof_prog: ma_prof_dump(%s) = %d\n", path, r);
      rc = 1;
    }
    usleep(10000);
  }
  atomic_store(&stop, true);
  for (unsigned i = 0; i < 3; i++) pthread_join(t[i], NULL);
  return rc;
}

static int run_signal(void) {
  const char *prefix = getenv("MAPALLOC_PROF_PREFIX");
  if (!prefix) return 1;
  leak_bytes(leak_here, (size_t)8 << 20, 96);
  char path[4096];
  snprintf(path, sizeof path, "%s.%d.0.heap", prefix, (int)getpid());
  raise(SIGUSR2);
  for (int i = 0; i < 1000; i++) { /* up to 10 s */
    if (access(path, R_OK) == 0) {
      usleep(100000); /* let the helper finish the file */
      printf("signal dump: %s\n", path);
      return 0;
    }
    usleep(10000);
  }
  fprintf(stderr, "prof_prog: no %s after the signal\n", path);
  return 1;
}

/* ---- rate: the count of samples of one class's mallocs, whatever the frees do ---- */
static void *volatile rate_sink;

NOINLINE void rate_pairs(long n) {
  for (long i = 0; i < n; i++) {
    rate_sink = must(malloc(64));
    free(rate_sink);
  }
}

NOINLINE void rate_batches(long rounds, int n) {
  static void *batch[300];
  for (long r = 0; r < rounds; r++) {
    for (int i = 0; i < n; i++) batch[i] = rate_sink = must(malloc(64));
    for (int i = 0; i < n; i++) free(batch[i]);
  }
}

/* Remote frees: main allocates, a consumer thread frees each block (and makes its own
 * pairs now and then): batches of blocks freed by another thread join their owner's cache. */
enum { RING = 4096 };
static void *ring[RING];
static atomic_long ring_head, ring_tail; /* produced, consumed */

static void *rate_consumer(void *arg) {
  long n = *(long *)arg, own = 0;
  for (long i = 0; i < n; i++) {
    while (atomic_load_explicit(&ring_head, memory_order_acquire) == i) sched_yield();
    free(ring[i % RING]);
    atomic_store_explicit(&ring_tail, i + 1, memory_order_release);
    if (i % 8 == 0) {
      free(rate_sink = must(malloc(64)));
      own++;
    }
  }
  *(long *)arg = own;
  return NULL;
}

/* Returns the mallocs of 64 bytes made: n by main, the consumer's own. */
NOINLINE long rate_remote(long n) {
  pthread_t t;
  long arg = n;
  if (pthread_create(&t, NULL, rate_consumer, &arg) != 0) return -1;
  for (long i = 0; i < n; i++) {
    while (i - atomic_load_explicit(&ring_tail, memory_order_acquire) >= RING) sched_yield();
    ring[i % RING] = rate_sink = must(malloc(64));
    atomic_store_explicit(&ring_head, i + 1, memory_order_release);
  }
  pthread_join(t, NULL);
  return n + arg;
}

/* ---- slots: the memory of freed sampled blocks goes back ---- */
static long resident_kib(void) {
  long pages = 0, rss = 0;
  FILE *f = fopen("/proc/self/statm", "r");
  if (!f || fscanf(f, "%ld %ld", &pages, &rss) != 2) rss = -1;
  if (f) fclose(f);
  return rss < 0 ? -1 : rss * 4;
}

NOINLINE int run_slots(void) {
  enum { N = 200000 };
  static void *keep[N];
  long before = resident_kib();
  for (int i = 0; i < N; i++) memset(keep[i] = must(malloc(64)), 1, 64);
  long held = resident_kib();
  for (int i = 0; i < N; i++) free(keep[i]);
  malloc_trim(0);
  long after = resident_kib();
  printf("slots: resident KiB before %ld held %ld after %ld\n", before, held, after);
  return before < 0 ? 1 : 0;
}

/* Freed sampled slots kept resident go back a purge delay after no sample took them, with
 * no allocator call: 200 blocks of 16 KiB (each sampled at 1 per KiB, each in a 16 KiB
 * slot), freed, then a second thread (so the background purger runs) and a wait. */
static void *idle_thread(void *arg) {
  free(must(malloc(64))); /* a heap: its exit makes the process multithreaded for the heap */
  return arg;
}

NOINLINE int run_slots_idle(void) {
  enum { N = 200, SIZE = 16 << 10 };
  static void *keep[N];
  pthread_t t;
  if (pthread_create(&t, NULL, idle_thread, NULL) != 0) return 1;
  pthread_join(t, NULL);
  long before = resident_kib();
  for (int i = 0; i < N; i++) memset(keep[i] = must(malloc(SIZE)), 1, SIZE);
  long held = resident_kib();
  for (int i = 0; i < N; i++) free(keep[i]);
  long freed = resident_kib();
  usleep(1000 * 1000); /* the purge delay (100 ms) and the purger's cadence, with slack */
  long after = resident_kib();
  printf("slots_idle: resident KiB before %ld held %ld freed %ld after %ld\n", before, held, freed,
         after);
  return before < 0 ? 1 : 0;
}

int main(int argc, char **argv) {
  const char *mode = argc > 1 ? argv[1] : "leak";
  if (strcmp(mode, "leak") == 0) {
    for (int i = 0; i < 8; i++) { /* interleaved: neighbour's blocks are live meanwhile */
      leak_bytes(leak_here, (size_t)3 << 20, 96);
      leak_bytes(leak_big, (size_t)1 << 20, (size_t)256 << 10);
      for (int j = 0; j < 6 * 8192; j++) neighbour(128);
    }
    printf("leak: kept %zu blocks\n", atomic_load(&nkept));
    return 0;
  }
  if (strcmp(mode, "threads") == 0) return run_threads();
  if (strcmp(mode, "fork") == 0) {
    leak_bytes(leak_here, (size_t)8 << 20, 96);
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) return 1;
    if (pid == 0) {
      leak_bytes(child_leak, (size_t)8 << 20, 96);
      printf("child %d\n", (int)getpid());
      exit(0);
    }
    int st;
    if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0) return 1;
    printf("parent %d child %d\n", (int)getpid(), (int)pid);
    return 0;
  }
  if (strcmp(mode, "dump") == 0) return argc > 2 ? run_dump(argv[2]) : 2;
  if (strcmp(mode, "signal") == 0) return run_signal();
  if (strcmp(mode, "misuse") == 0) {
    char *volatile p = must(malloc(100));
    char *q = p; /* through a volatile: the compiler cannot see the second free */
    free(q);
    q = p;
    free(q); /* must abort */
    return 0;
  }
  if (strcmp(mode, "rate") == 0) {
    rate_pairs(1000000);
    rate_batches(4000, 300);
    long remote = rate_remote(1000000);
    if (remote < 0) return 1;
    /* Both lists of every class hold what their counts say, and every slab's bin_off names
     * the list its frees push onto (aborts with the broken invariant otherwise). */
    int (*check)(void) = (int (*)(void))dlsym(RTLD_DEFAULT, "ma_heap_check");
    if (!check || check() != 0) {
      fprintf(stderr, "prof_prog: ma_heap_check missing or failed\n");
      return 1;
    }
    printf("rate: %ld mallocs of 64 bytes\n", 1000000L + 4000L * 300 + remote);
    return 0;
  }
  if (strcmp(mode, "slots") == 0) return run_slots();
  if (strcmp(mode, "slots_idle") == 0) return run_slots_idle();
  fprintf(stderr, "prof_prog: unknown mode %s\n", mode);
  return 2;
}
