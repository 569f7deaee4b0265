/* larson: a server-style workload. Each thread owns an array of slots and replaces a random
 * slot's block with a new one of random size, over and over. A share of the frees (1 in 8)
 * lands on blocks another thread allocated: instead of freeing its old block, a thread swaps
 * it into a shared exchange table and frees whatever block was there. The run is split into
 * rounds; each round starts fresh threads that inherit the previous round's slots, so blocks
 * outlive the threads that allocated them (as in a server whose worker threads come and go). */
#include "common.h"

#include <pthread.h>
#include <stdatomic.h>

#define SLOTS       1000
#define XCHG        1024
#define MIN_SIZE    8
#define MAX_SIZE    256
#define ROUNDS      4
#define MAX_THREADS 64

static _Atomic(void *) xchg[XCHG];

struct worker {
  void **slots;
  uint64_t ops;
  uint64_t seed;
  uint64_t remote;
};

static size_t rand_size(uint64_t *s) {
  return MIN_SIZE + wl_rand(s) % (MAX_SIZE - MIN_SIZE + 1);
}

static void *run(void *arg) {
  struct worker *w = arg;
  uint64_t s = w->seed;
  for (uint64_t i = 0; i < w->ops; i++) {
    uint64_t r = wl_rand(&s);
    size_t k = r % SLOTS;
    void *old = w->slots[k];
    if ((r >> 32) % 8 == 0) {
      /* Hand the old block to whoever takes this exchange slot; free what we got. */
      old = atomic_exchange_explicit(&xchg[(r >> 40) % XCHG], old, memory_order_acq_rel);
      w->remote++;
    }
    free(old);
    size_t n = rand_size(&s);
    void *p = wl_check(malloc(n), "malloc");
    wl_touch(p, n, (unsigned char)i);
    w->slots[k] = p;
  }
  w->seed = s;
  return NULL;
}

int main(int argc, char **argv) {
  struct wl_opts o;
  wl_parse(argc, argv, &o);
  int nt = wl_threads(&o, 2, MAX_THREADS);
  uint64_t total = wl_count(&o, 48000000, 16);
  uint64_t per = total / ((uint64_t)nt * ROUNDS);
  if (per == 0) per = 1;

  struct worker w[MAX_THREADS];
  uint64_t s = wl_seed(42);
  for (int t = 0; t < nt; t++) {
    w[t].slots = wl_check(malloc(SLOTS * sizeof(void *)), "malloc");
    for (int k = 0; k < SLOTS; k++) {
      size_t n = rand_size(&s);
      w[t].slots[k] = wl_check(malloc(n), "malloc");
      wl_touch(w[t].slots[k], n, 1);
    }
    w[t].ops = per;
    w[t].seed = wl_seed((uint64_t)t + 7);
    w[t].remote = 0;
  }

  double t0 = wl_now();
  for (int round = 0; round < ROUNDS; round++) {
    if (round > 0) {
      /* Rotate the slot arrays (all threads joined): each new thread inherits the blocks
       * another thread of the previous round allocated. */
      void **first = w[0].slots;
      for (int t = 0; t + 1 < nt; t++) w[t].slots = w[t + 1].slots;
      w[nt - 1].slots = first;
    }
    wl_run_threads("larson", nt, run, w, sizeof w[0]);
  }
  double secs = wl_now() - t0;

  uint64_t remote = 0;
  for (int t = 0; t < nt; t++) {
    for (int k = 0; k < SLOTS; k++) free(w[t].slots[k]);
    free(w[t].slots);
    remote += w[t].remote;
  }
  for (int k = 0; k < XCHG; k++) free(atomic_load(&xchg[k]));

  char extra[96];
  snprintf(extra, sizeof extra, "threads=%d remote_frees=%llu", nt, (unsigned long long)remote);
  wl_result("larson", per * (uint64_t)nt * ROUNDS, secs, extra);
  return 0;
}
