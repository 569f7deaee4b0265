/* medium: medium buffers from 2 threads, one point per largest size (tools/bench.sh's
 * medium-2M, medium-8M: --max-size). Each thread keeps 8 live buffers of 128 KiB..--max-size
 * (uniform) and replaces a random one per step, writing one byte in every 4 KiB page of the new
 * buffer (as a program filling an I/O or decode buffer would; an allocator that hands back
 * unmapped memory pays the page faults). One step in 16 swaps the buffer through a shared slot
 * instead, so the other thread frees it. Stresses the path above the small size classes: its
 * locks, its cache of freed ranges, and how often memory goes back to and comes again from
 * the kernel. */
#include "common.h"

#include <pthread.h>
#include <stdatomic.h>

#define LIVE        8
#define SHARED      16
#define MIN_SIZE    (128u << 10)
#define PAGE        4096
#define MAX_THREADS 64

static _Atomic(void *) shared[SHARED];
static _Atomic uint64_t bad;
static size_t max_size;

struct worker {
  uint64_t ops, seed;
};

static void *fill(uint64_t r, uint32_t tag) {
  size_t n = MIN_SIZE + (size_t)(r % (max_size - MIN_SIZE + 1));
  unsigned char *p = wl_check(malloc(n), "malloc");
  for (size_t off = PAGE; off < n; off += PAGE) p[off] = (unsigned char)off;
  wl_stamp(p, n, tag);
  return p;
}

static void release(void *p) {
  if (p && !wl_stamp_check(p, max_size)) atomic_fetch_add(&bad, 1);
  free(p);
}

static void *run(void *arg) {
  struct worker *w = arg;
  uint64_t s = w->seed;
  void *live[LIVE];
  for (size_t k = 0; k < LIVE; k++) live[k] = fill(wl_rand(&s), 1);
  for (uint64_t i = 0; i < w->ops; i++) {
    uint64_t r = wl_rand(&s);
    size_t k = (size_t)((r >> 56) % LIVE);
    if (((r >> 48) & 15) == 0)
      release(atomic_exchange_explicit(&shared[(r >> 40) % SHARED], live[k], memory_order_acq_rel));
    else
      release(live[k]);
    live[k] = fill(wl_rand(&s), (uint32_t)i);
  }
  for (size_t k = 0; k < LIVE; k++) release(live[k]);
  return NULL;
}

int main(int argc, char **argv) {
  long long max = 2 << 20;
  const struct wl_param params[] = {{"max-size", &max}, {0, 0}};
  struct wl_opts o;
  wl_parse_params(argc, argv, &o, params);
  if (max < (long long)MIN_SIZE || max > (1LL << 30)) {
    fprintf(stderr, "medium: --max-size must be 128K..1G\n");
    return 2;
  }
  max_size = (size_t)max;
  int nt = wl_threads(&o, 2, MAX_THREADS);
  /* The same number of bytes written at every --max-size: fewer steps for larger buffers.
   * (16,000 steps at 2 MiB ran 0.04-0.07 s: noise; now 10x that.) */
  double mean = (MIN_SIZE + (double)max_size) / 2, mean_2m = (MIN_SIZE + (double)(2 << 20)) / 2;
  uint64_t total = wl_count(&o, (uint64_t)(160000 * mean_2m / mean), 640);
  static struct worker w[MAX_THREADS];
  for (int t = 0; t < nt; t++)
    w[t] = (struct worker){.ops = total / (uint64_t)nt, .seed = wl_seed((uint64_t)t + 500)};
  double t0 = wl_now();
  wl_run_threads("medium", nt, run, w, sizeof w[0]);
  double secs = wl_now() - t0;
  for (size_t k = 0; k < SHARED; k++) release(atomic_load(&shared[k]));
  if (atomic_load(&bad)) {
    fprintf(stderr, "medium: %llu corrupted buffers\n", (unsigned long long)atomic_load(&bad));
    return 1;
  }
  char extra[96];
  snprintf(extra, sizeof extra, "threads=%d max_size=%lld", nt, max);
  wl_result("medium", total / (uint64_t)nt * (uint64_t)nt, secs, extra);
  return 0;
}
