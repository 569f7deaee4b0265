/* churn: mixed-size alloc/free churn over a live working set (alloc-test style). A table of
 * 20,000 slots; each step picks a random slot, frees its block (if any) and allocates a new
 * one whose size follows a skewed mix: 80% 16-128 bytes, 15% up to 1 KiB, 4% up to 8 KiB and
 * 1% up to 64 KiB. Every 64th step frees a run of slots to make the live set breathe. One
 * thread by default (the --callgrind figure); --threads N runs N independent copies. */
#include "common.h"

#include <pthread.h>

#define SLOTS       20000
#define MAX_THREADS 64

struct worker {
  uint64_t ops;
  uint64_t seed;
  uint64_t sum;
};

static size_t mixed_size(uint64_t r) {
  unsigned pick = (unsigned)(r % 100);
  r >>= 8;
  if (pick < 80) return 16 + r % 113;
  if (pick < 95) return 129 + r % 896;
  if (pick < 99) return 1025 + r % 7168;
  return 8193 + r % 57344;
}

static void *run(void *arg) {
  struct worker *w = arg;
  void **slot = wl_check(calloc(SLOTS, sizeof(void *)), "calloc");
  uint64_t s = w->seed, sum = 0;
  for (uint64_t i = 0; i < w->ops; i++) {
    uint64_t r = wl_rand(&s);
    size_t k = (r >> 40) % SLOTS;
    free(slot[k]);
    size_t n = mixed_size(r);
    unsigned char *p = wl_check(malloc(n), "malloc");
    wl_touch(p, n, (unsigned char)i);
    sum += p[0];
    slot[k] = p;
    if ((i & 63) == 63) { /* drop a run of up to 32 blocks */
      size_t at = (size_t)(wl_rand(&s) % SLOTS);
      for (size_t j = 0; j < 32 && at + j < SLOTS; j++) {
        free(slot[at + j]);
        slot[at + j] = NULL;
      }
    }
  }
  for (size_t k = 0; k < SLOTS; k++) free(slot[k]);
  free(slot);
  w->sum = sum;
  return NULL;
}

int main(int argc, char **argv) {
  struct wl_opts o;
  wl_parse(argc, argv, &o);
  int nt = wl_threads(&o, 1, MAX_THREADS);
  uint64_t ops = wl_count(&o, 24000000, 16);
  struct worker w[MAX_THREADS];
  double t0 = wl_now();
  if (nt == 1) {
    w[0] = (struct worker){.ops = ops, .seed = wl_seed(3)};
    run(&w[0]);
  } else {
    for (int t = 0; t < nt; t++)
      w[t] = (struct worker){.ops = ops / (uint64_t)nt, .seed = wl_seed((uint64_t)t + 3)};
    wl_run_threads("churn", nt, run, w, sizeof w[0]);
  }
  double secs = wl_now() - t0;
  char extra[64];
  snprintf(extra, sizeof extra, "threads=%d check=%llu", nt, (unsigned long long)(w[0].sum & 0xff));
  wl_result("churn", nt == 1 ? ops : ops / (uint64_t)nt * (uint64_t)nt, secs, extra);
  return 0;
}
