/* window: churn over a window of live blocks, one point per (window, largest size) pair
 * (tools/bench.sh's churn-1K-128 ... churn-64K-4K: --window, --max-size). One thread keeps
 * --window live blocks; each step frees the block of a random slot and allocates one of a
 * uniformly random size in 8..--max-size in its place, writing its first, middle and last
 * bytes. The same number of steps at every point, so a small window measures the fast path
 * with every free list warm and a large one the cache misses of a heap that no longer fits
 * in cache. Single thread; --threads N runs N independent copies. */
#include "common.h"

#include <pthread.h>

#define MIN_SIZE    8
#define MAX_THREADS 64

struct worker {
  uint64_t ops, seed, sum;
  size_t window, max_size;
};

static void *run(void *arg) {
  struct worker *w = arg;
  void **slot = wl_check(calloc(w->window, sizeof(void *)), "calloc");
  uint64_t s = w->seed, sum = 0;
  size_t span = w->max_size - MIN_SIZE + 1;
  for (size_t k = 0; k < w->window; k++) {
    size_t n = MIN_SIZE + (size_t)(wl_rand(&s) % span);
    slot[k] = wl_check(malloc(n), "malloc");
    wl_touch(slot[k], n, 1);
  }
  for (uint64_t i = 0; i < w->ops; i++) {
    uint64_t r = wl_rand(&s);
    size_t k = (size_t)((r >> 32) % w->window);
    sum += *(unsigned char *)slot[k];
    free(slot[k]);
    size_t n = MIN_SIZE + (size_t)((r & 0xffffffff) % span);
    slot[k] = wl_check(malloc(n), "malloc");
    wl_touch(slot[k], n, (unsigned char)i);
  }
  for (size_t k = 0; k < w->window; k++) free(slot[k]);
  free(slot);
  w->sum = sum;
  return NULL;
}

int main(int argc, char **argv) {
  long long window = 4096, max_size = 512;
  const struct wl_param params[] = {{"window", &window}, {"max-size", &max_size}, {0, 0}};
  struct wl_opts o;
  wl_parse_params(argc, argv, &o, params);
  if (window < 1 || window > (1LL << 30) || max_size < MIN_SIZE || max_size > (1LL << 30)) {
    fprintf(stderr, "window: --window must be 1..2^30 and --max-size %d..2^30\n", MIN_SIZE);
    return 2;
  }
  int nt = wl_threads(&o, 1, MAX_THREADS);
  uint64_t ops = wl_count(&o, 8000000, 16);
  static struct worker w[MAX_THREADS];
  for (int t = 0; t < nt; t++)
    w[t] = (struct worker){.ops = ops / (uint64_t)nt,
                           .seed = wl_seed((uint64_t)t + 300),
                           .window = (size_t)window,
                           .max_size = (size_t)max_size};
  double t0 = wl_now();
  if (nt == 1)
    run(&w[0]);
  else
    wl_run_threads("window", nt, run, w, sizeof w[0]);
  double secs = wl_now() - t0;
  char extra[128];
  snprintf(extra, sizeof extra, "threads=%d window=%lld max_size=%lld check=%llu", nt, window,
           max_size, (unsigned long long)(w[0].sum & 0xff));
  wl_result("window", ops / (uint64_t)nt * (uint64_t)nt, secs, extra);
  return 0;
}
