/* threads: many short-lived threads that exchange blocks, one point per thread count
 * (tools/bench.sh's threads-1, threads-2, threads-8, threads-32: --threads; 32 on 2 cores is
 * oversubscribed on purpose) and, in threads-N-S, per largest size (--max-size S, 32 KiB by
 * default; threads-256-128K has 256 threads alive at once each using a few blocks of every
 * medium class). The run is split into rounds; each round starts N fresh threads
 * and joins them. A thread keeps a private set of live blocks (8 B-2 KiB, 1 in 64 up to
 * --max-size) and replaces a random one per step; one step in four swaps its block with a slot of
 * a shared table instead and frees what it got out (another thread's block, often one from a
 * thread that has exited). At exit a thread frees half of its set and leaves the other half
 * in the shared table for later threads to free. The total work is the same at every thread
 * count, so the points differ only in how many threads share it and how often threads are
 * born and die. Every freed block's stamp is checked. */
#include "common.h"

#include <pthread.h>
#include <stdatomic.h>

#define LOCAL       512
#define SHARED      8192
#define MAX_THREADS 1024

static _Atomic(void *) shared[SHARED];
static _Atomic uint64_t bad;
static long long max_size = 32768;

struct worker {
  uint64_t ops, seed;
};

static size_t pick_size(uint64_t r) {
  if ((r & 63) == 0) return 2048 + (size_t)((r >> 8) % (uint64_t)(max_size - 2048 + 1));
  return 8 + (size_t)((r >> 8) % 2041);
}

static void release(void *p) {
  if (p && !wl_stamp_check(p, (size_t)max_size)) atomic_fetch_add(&bad, 1);
  free(p);
}

static void *run(void *arg) {
  struct worker *w = arg;
  uint64_t s = w->seed;
  void *local[LOCAL];
  for (size_t k = 0; k < LOCAL; k++) {
    size_t n = pick_size(wl_rand(&s));
    local[k] = wl_check(malloc(n), "malloc");
    wl_stamp(local[k], n, 1);
  }
  for (uint64_t i = 0; i < w->ops; i++) {
    uint64_t r = wl_rand(&s);
    size_t k = (size_t)((r >> 40) % LOCAL);
    if ((r >> 36) % 4 == 0) {
      void *got =
          atomic_exchange_explicit(&shared[(r >> 20) % SHARED], local[k], memory_order_acq_rel);
      release(got);
    } else {
      release(local[k]);
    }
    size_t n = pick_size(wl_rand(&s));
    local[k] = wl_check(malloc(n), "malloc");
    wl_stamp(local[k], n, (uint32_t)i);
  }
  for (size_t k = 0; k < LOCAL; k++) {
    if (k % 2) {
      release(local[k]);
    } else {
      uint64_t r = wl_rand(&s);
      release(atomic_exchange_explicit(&shared[r % SHARED], local[k], memory_order_acq_rel));
    }
  }
  return NULL;
}

int main(int argc, char **argv) {
  long long rounds = 40;
  const struct wl_param params[] = {{"rounds", &rounds}, {"max-size", &max_size}, {0, 0}};
  struct wl_opts o;
  wl_parse_params(argc, argv, &o, params);
  if (o.quick && rounds == 40) rounds = 10; /* --quick: fewer thread generations too */
  if (rounds < 1 || rounds > 100000) {
    fprintf(stderr, "threads: --rounds must be 1..100000\n");
    return 2;
  }
  if (max_size < 2048 || max_size > (1LL << 30)) {
    fprintf(stderr, "threads: --max-size must be 2048..1G\n");
    return 2;
  }
  int nt = wl_threads(&o, 2, MAX_THREADS);
  uint64_t total = wl_count(&o, 4000000, 64);
  uint64_t per = total / (uint64_t)rounds / (uint64_t)nt;
  if (per == 0) per = 1;
  static struct worker w[MAX_THREADS];
  double t0 = wl_now();
  for (long long round = 0; round < rounds; round++) {
    for (int t = 0; t < nt; t++)
      w[t] = (struct worker){.ops = per, .seed = wl_seed((uint64_t)(round * nt + t) + 400)};
    wl_run_threads("threads", nt, run, w, sizeof w[0]);
  }
  double secs = wl_now() - t0;
  for (size_t k = 0; k < SHARED; k++) release(atomic_load(&shared[k]));
  if (atomic_load(&bad)) {
    fprintf(stderr, "threads: %llu corrupted blocks\n", (unsigned long long)atomic_load(&bad));
    return 1;
  }
  char extra[128];
  snprintf(extra, sizeof extra, "threads=%d rounds=%lld thread_starts=%lld max_size=%lld", nt,
           rounds, rounds * nt, max_size);
  wl_result("threads", per * (uint64_t)rounds * (uint64_t)nt, secs, extra);
  return 0;
}
