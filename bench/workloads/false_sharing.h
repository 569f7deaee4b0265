/* The two false-sharing workloads (cache-scratch, cache-thrash) share everything but how the
 * threads start: each thread repeatedly allocates a small object, writes it many times and
 * frees it. cache-scratch first hands every thread one object the main thread allocated back
 * to back, which the thread frees before its loop (passive false sharing); cache-thrash does
 * not (active false sharing). */
#ifndef BENCH_WORKLOADS_FALSE_SHARING_H
#define BENCH_WORKLOADS_FALSE_SHARING_H

#include "common.h"

#define FS_OBJ_SIZE    8
#define FS_MAX_THREADS 64
#define FS_WRITES      1000

struct fs_worker {
  void *given; /* NULL in cache-thrash */
  uint64_t iters;
  uint64_t sum;
};

static void *fs_run(void *arg) {
  struct fs_worker *w = arg;
  free(w->given);
  uint64_t sum = 0;
  for (uint64_t i = 0; i < w->iters; i++) {
    volatile unsigned char *p = wl_check(malloc(FS_OBJ_SIZE), "malloc");
    for (uint64_t j = 0; j < FS_WRITES; j++) {
      for (int k = 0; k < FS_OBJ_SIZE; k++) p[k] = (unsigned char)(p[k] + j);
    }
    sum += p[0];
    free((void *)p);
  }
  w->sum = sum;
  return NULL;
}

/* Runs the workload `name`; give_objects selects cache-scratch's hand-over. */
static inline int fs_main(const char *name, int give_objects, int argc, char **argv) {
  struct wl_opts o;
  wl_parse(argc, argv, &o);
  int nt = wl_threads(&o, 2, FS_MAX_THREADS);
  uint64_t iters = wl_count(&o, 200000, 16);
  struct fs_worker w[FS_MAX_THREADS];
  for (int t = 0; t < nt; t++) {
    w[t].given = give_objects ? wl_check(malloc(FS_OBJ_SIZE), "malloc") : NULL;
    w[t].iters = iters;
  }
  double t0 = wl_now();
  wl_run_threads(name, nt, fs_run, w, sizeof w[0]);
  double secs = wl_now() - t0;
  uint64_t sum = 0;
  for (int t = 0; t < nt; t++) sum += w[t].sum;
  char extra[64];
  snprintf(extra, sizeof extra, "threads=%d check=%llu", nt, (unsigned long long)(sum & 0xff));
  wl_result(name, iters * (uint64_t)nt, secs, extra);
  return 0;
}

#endif
