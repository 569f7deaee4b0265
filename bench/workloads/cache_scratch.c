/* cache-scratch: passive false sharing. The main thread allocates one small object per
 * thread back to back (so they likely share a cache line) and hands one to each thread. Each
 * thread frees the object it was given, then repeatedly allocates a small object, writes it
 * many times and frees it. An allocator that gives a thread back the block it just freed - a
 * block on a line shared with other threads' blocks - makes the threads fight over that line. */
#include "common.h"

#include <pthread.h>

#define OBJ_SIZE    8
#define MAX_THREADS 64

struct worker {
  void *given;
  uint64_t iters;
  uint64_t writes;
  uint64_t sum;
};

static void *run(void *arg) {
  struct worker *w = arg;
  free(w->given);
  uint64_t sum = 0;
  for (uint64_t i = 0; i < w->iters; i++) {
    volatile unsigned char *p = wl_check(malloc(OBJ_SIZE), "malloc");
    for (uint64_t j = 0; j < w->writes; j++) {
      for (int k = 0; k < OBJ_SIZE; k++) p[k] = (unsigned char)(p[k] + j);
    }
    sum += p[0];
    free((void *)p);
  }
  w->sum = sum;
  return NULL;
}

int main(int argc, char **argv) {
  struct wl_opts o;
  wl_parse(argc, argv, &o);
  int nt = wl_threads(&o, 2, MAX_THREADS);
  uint64_t iters = wl_count(&o, 200000, 16);
  const uint64_t writes = 1000;
  struct worker w[MAX_THREADS];
  for (int t = 0; t < nt; t++) {
    w[t].given = wl_check(malloc(OBJ_SIZE), "malloc");
    w[t].iters = iters;
    w[t].writes = writes;
  }
  double t0 = wl_now();
  wl_run_threads("cache-scratch", nt, run, w, sizeof w[0]);
  double secs = wl_now() - t0;
  uint64_t sum = 0;
  for (int t = 0; t < nt; t++) sum += w[t].sum;
  char extra[64];
  snprintf(extra, sizeof extra, "threads=%d check=%llu", nt, (unsigned long long)(sum & 0xff));
  wl_result("cache-scratch", iters * (uint64_t)nt, secs, extra);
  return 0;
}
