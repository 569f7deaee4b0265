/* idle: does memory come back from a thread that has gone idle? A worker thread allocates
 * --mib MiB (100; 16 with --quick) of 256-byte blocks; the main thread frees every other block
 * (frees of the worker's blocks from another thread), the worker frees the rest and then
 * blocks on a condition variable, making no allocator call. The main thread then samples the
 * resident set size (/proc/self/statm) every 50 ms for --sample-ms ms (3000; 1000 with --quick),
 * calls malloc_trim(0) and samples again right after it and 100 ms later, then wakes the worker
 * and joins it. Each sample is a line
 *   SAMPLE t_s=<seconds since the worker's frees ended> rss_mib=<MiB> phase=<name>
 * (tools/bench.sh turns them into bench/results/<stamp>-idle.csv and -idle.png). The RESULT
 * line has the RSS at the start, after the allocation, after the frees, 1 s after them, at the
 * end of the sampling and after the trim, and timed_s: the time spent in allocator calls and
 * the trim, which the suite's table uses instead of the wall time (mostly sleeping). */
#include "common.h"

#include <malloc.h>
#include <pthread.h>

#define BLOCK 256

static void **blocks;
static size_t nblocks;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int stage; /* 0 start, 1 allocated, 2 main freed half, 3 worker freed rest, 4 exit */
static double alloc_s, free_s;

static void wait_stage(int want) {
  pthread_mutex_lock(&mu);
  while (stage < want) pthread_cond_wait(&cv, &mu);
  pthread_mutex_unlock(&mu);
}

static void set_stage(int s) {
  pthread_mutex_lock(&mu);
  stage = s;
  pthread_cond_broadcast(&cv);
  pthread_mutex_unlock(&mu);
}

static void *worker(void *arg) {
  (void)arg;
  double t0 = wl_now();
  for (size_t i = 0; i < nblocks; i++) {
    blocks[i] = wl_check(malloc(BLOCK), "malloc");
    memset(blocks[i], (int)(i & 0xff), BLOCK);
  }
  alloc_s = wl_now() - t0;
  set_stage(1);
  wait_stage(2);
  t0 = wl_now();
  for (size_t i = 0; i < nblocks; i += 2) {
    if (*(unsigned char *)blocks[i] != (unsigned char)(i & 0xff)) {
      fprintf(stderr, "idle: block %zu corrupted\n", i);
      exit(1);
    }
    free(blocks[i]);
  }
  free_s = wl_now() - t0;
  set_stage(3);
  wait_stage(4); /* idle: blocked, no allocator call until the end */
  return NULL;
}

static double mib(long kib) {
  return (double)kib / 1024.0;
}

int main(int argc, char **argv) {
  long long size_mib = 100, sample_ms = 3000;
  const struct wl_param params[] = {{"mib", &size_mib}, {"sample-ms", &sample_ms}, {0, 0}};
  struct wl_opts o;
  wl_parse_params(argc, argv, &o, params);
  if (o.quick) {
    /* --quick shrinks only what the command line did not set. */
    int set_mib = 0, set_ms = 0;
    for (int i = 1; i < argc; i++) {
      set_mib |= !strcmp(argv[i], "--mib");
      set_ms |= !strcmp(argv[i], "--sample-ms");
    }
    if (!set_mib) size_mib = 16;
    if (!set_ms) sample_ms = 1000;
  }
  if (size_mib < 1 || size_mib > 65536 || sample_ms < 1000 || sample_ms > 600000) {
    fprintf(stderr, "idle: --mib must be 1..65536 and --sample-ms 1000..600000\n");
    return 2;
  }
  nblocks = (size_t)size_mib * (1u << 20) / BLOCK;
  blocks = wl_check(malloc(nblocks * sizeof(void *)), "malloc table");
  memset(blocks, 0, nblocks * sizeof(void *)); /* resident before the start sample */
  long rss_start = wl_rss_kib();
  double t_begin = wl_now();
  pthread_t th;
  if (pthread_create(&th, NULL, worker, NULL)) {
    fprintf(stderr, "idle: pthread_create failed\n");
    return 1;
  }
  wait_stage(1);
  long rss_alloc = wl_rss_kib();
  double t_alloc = wl_now();
  for (size_t i = 1; i < nblocks; i += 2) {
    if (*(unsigned char *)blocks[i] != (unsigned char)(i & 0xff)) {
      fprintf(stderr, "idle: block %zu corrupted\n", i);
      return 1;
    }
    free(blocks[i]);
  }
  double main_free_s = wl_now() - t_alloc;
  long rss_half = wl_rss_kib();
  set_stage(2);
  wait_stage(3);
  double t0 = wl_now();
  long rss_freed = wl_rss_kib();
  printf("SAMPLE t_s=%.3f rss_mib=%.1f phase=start\n", t_begin - t0, mib(rss_start));
  printf("SAMPLE t_s=%.3f rss_mib=%.1f phase=allocated\n", t_alloc - t0, mib(rss_alloc));
  printf("SAMPLE t_s=%.3f rss_mib=%.1f phase=half_freed\n", t_alloc + main_free_s - t0,
         mib(rss_half));
  printf("SAMPLE t_s=0.000 rss_mib=%.1f phase=freed\n", mib(rss_freed));

  /* Idle: sample every 50 ms against the clock (no drift from the sampling itself). */
  long rss_1s = -1, rss_last = rss_freed;
  for (long k = 1; k * 50 <= sample_ms; k++) {
    double due = t0 + (double)k * 0.05, now = wl_now();
    if (due > now) usleep((useconds_t)((due - now) * 1e6));
    rss_last = wl_rss_kib();
    printf("SAMPLE t_s=%.3f rss_mib=%.1f phase=idle\n", wl_now() - t0, mib(rss_last));
    if (k == 20) rss_1s = rss_last;
  }
  double t_trim = wl_now();
  malloc_trim(0);
  double trim_s = wl_now() - t_trim;
  long rss_trim = wl_rss_kib();
  printf("SAMPLE t_s=%.3f rss_mib=%.1f phase=trim\n", wl_now() - t0, mib(rss_trim));
  usleep(100 * 1000);
  long rss_trim_late = wl_rss_kib();
  printf("SAMPLE t_s=%.3f rss_mib=%.1f phase=trim_late\n", wl_now() - t0, mib(rss_trim_late));
  set_stage(4);
  pthread_join(th, NULL);
  free(blocks);

  char extra[400];
  snprintf(extra, sizeof extra,
           "mib=%lld timed_s=%.4f rss_start_mib=%.1f rss_alloc_mib=%.1f rss_half_mib=%.1f "
           "rss_freed_mib=%.1f rss_1s_mib=%.1f rss_idle_end_mib=%.1f rss_trim_mib=%.1f "
           "rss_trim_late_mib=%.1f",
           size_mib, alloc_s + main_free_s + free_s + trim_s, mib(rss_start), mib(rss_alloc),
           mib(rss_half), mib(rss_freed), mib(rss_1s), mib(rss_last), mib(rss_trim),
           mib(rss_trim_late));
  wl_result("idle", nblocks * 2, alloc_s + main_free_s + free_s + trim_s, extra);
  return 0;
}
