/* glibc-thread: the shape of glibc's bench-malloc-thread. Each thread keeps a working set of
 * 1,000 blocks and replaces a random one per step; sizes are drawn so that small blocks are
 * far more frequent than large ones (probability falling with size, up to 32 KiB). No block
 * crosses threads: this measures per-thread scalability and lock-free fast paths. */
#include "common.h"

#include <pthread.h>

#define SLOTS       1000
#define MAX_THREADS 64

struct worker {
  uint64_t ops;
  uint64_t seed;
};

/* Roughly 1/size: pick an exponent 4..15 weighted toward small, then a size within it. */
static size_t skewed_size(uint64_t r) {
  unsigned e = 4;
  while (e < 15 && (r & 1)) {
    e++;
    r >>= 1;
  }
  r >>= 1;
  size_t lo = (size_t)1 << e;
  return lo + (size_t)(r % lo);
}

static void *run(void *arg) {
  struct worker *w = arg;
  void **slot = wl_check(calloc(SLOTS, sizeof(void *)), "calloc");
  uint64_t s = w->seed;
  for (uint64_t i = 0; i < w->ops; i++) {
    uint64_t r = wl_rand(&s);
    size_t k = (r >> 48) % SLOTS;
    free(slot[k]);
    size_t n = skewed_size(r);
    slot[k] = wl_check(malloc(n), "malloc");
    wl_touch(slot[k], n, (unsigned char)i);
  }
  for (size_t k = 0; k < SLOTS; k++) free(slot[k]);
  free(slot);
  return NULL;
}

int main(int argc, char **argv) {
  struct wl_opts o;
  wl_parse(argc, argv, &o);
  int nt = wl_threads(&o, 2, MAX_THREADS);
  uint64_t total = wl_count(&o, 48000000, 16);
  struct worker w[MAX_THREADS];
  double t0 = wl_now();
  for (int t = 0; t < nt; t++) {
    w[t] = (struct worker){.ops = total / (uint64_t)nt, .seed = wl_seed((uint64_t)t + 11)};
  }
  wl_run_threads("glibc-thread", nt, run, w, sizeof w[0]);
  double secs = wl_now() - t0;
  char extra[32];
  snprintf(extra, sizeof extra, "threads=%d", nt);
  wl_result("glibc-thread", total / (uint64_t)nt * (uint64_t)nt, secs, extra);
  return 0;
}
