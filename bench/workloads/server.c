/* server: the server pattern of issue 10, one point per table size (tools/bench.sh's
 * server-1k, server-10k, server-100k: --slots per thread). Each of 2 threads (--threads N)
 * owns a table of slots and, step after step, replaces the block of a random slot with a new
 * one of 16-1024 bytes. One replacement in ten (--remote-pct) lands in the neighbour's table
 * instead: this thread frees a block the neighbour allocated, and the neighbour will later
 * free the block this thread put there, so a fifth of all frees cross threads. Slots are
 * swapped atomically (the neighbour may be replacing the same slot), the same cost under every
 * allocator. Every freed block's stamp is checked. The step count is the same for every table
 * size, so the points differ only in how far the live heap spreads. */
#include "common.h"

#include <pthread.h>
#include <stdatomic.h>

#define MIN_SIZE    16
#define MAX_SIZE    1024
#define MAX_THREADS 64

struct table {
  _Atomic(void *) *slot;
  size_t n;
};

struct worker {
  struct table *own, *next;
  uint64_t ops, seed, remote, bad;
  unsigned remote_pct;
};

static void *run(void *arg) {
  struct worker *w = arg;
  uint64_t s = w->seed;
  for (uint64_t i = 0; i < w->ops; i++) {
    uint64_t r = wl_rand(&s);
    size_t n = MIN_SIZE + (size_t)((r >> 8) % (MAX_SIZE - MIN_SIZE + 1));
    void *p = wl_check(malloc(n), "malloc");
    wl_stamp(p, n, (uint32_t)i);
    struct table *t = w->own;
    if ((r >> 40) % 100 < w->remote_pct) {
      t = w->next;
      w->remote++;
    }
    void *old = atomic_exchange_explicit(&t->slot[(r >> 20) % t->n], p, memory_order_acq_rel);
    if (old && !wl_stamp_check(old, MAX_SIZE)) w->bad++;
    free(old);
  }
  return NULL;
}

int main(int argc, char **argv) {
  long long slots = 10000, remote_pct = 10;
  const struct wl_param params[] = {{"slots", &slots}, {"remote-pct", &remote_pct}, {0, 0}};
  struct wl_opts o;
  wl_parse_params(argc, argv, &o, params);
  if (slots < 1 || remote_pct > 100) {
    fprintf(stderr, "server: --slots must be >= 1 and --remote-pct <= 100\n");
    return 2;
  }
  int nt = wl_threads(&o, 2, MAX_THREADS);
  /* Tables below 100k slots fit in cache: 4M operations took 0.1-0.2 s, where one
   * scheduling hiccup on a shared machine doubled a run (server-1k read 1.77x mimalloc in a
   * whole-suite run, 0.75x in lone runs). */
  uint64_t total = wl_count(&o, slots < 100000 ? 20000000 : 4000000, 64);
  static struct table tab[MAX_THREADS];
  static struct worker w[MAX_THREADS];
  uint64_t s = wl_seed(11);
  for (int t = 0; t < nt; t++) {
    tab[t].n = (size_t)slots;
    tab[t].slot = wl_check(calloc((size_t)slots, sizeof(void *)), "calloc");
  }
  /* Fill the tables from their owners' threads' point of view: the main thread fills, so the
   * first replacement of each slot is a free of a block the main thread allocated. */
  for (int t = 0; t < nt; t++) {
    for (size_t k = 0; k < (size_t)slots; k++) {
      size_t n = MIN_SIZE + (size_t)(wl_rand(&s) % (MAX_SIZE - MIN_SIZE + 1));
      void *p = wl_check(malloc(n), "malloc");
      wl_stamp(p, n, 7);
      atomic_store_explicit(&tab[t].slot[k], p, memory_order_relaxed);
    }
  }
  for (int t = 0; t < nt; t++) {
    w[t] = (struct worker){.own = &tab[t],
                           .next = &tab[(t + 1) % nt],
                           .ops = total / (uint64_t)nt,
                           .seed = wl_seed((uint64_t)t + 100),
                           .remote_pct = (unsigned)remote_pct};
  }
  double t0 = wl_now();
  wl_run_threads("server", nt, run, w, sizeof w[0]);
  double secs = wl_now() - t0;

  uint64_t remote = 0, bad = 0;
  for (int t = 0; t < nt; t++) {
    remote += w[t].remote;
    bad += w[t].bad;
    for (size_t k = 0; k < tab[t].n; k++) {
      void *p = atomic_load_explicit(&tab[t].slot[k], memory_order_relaxed);
      if (!wl_stamp_check(p, MAX_SIZE)) bad++;
      free(p);
    }
    free((void *)tab[t].slot);
  }
  if (bad) {
    fprintf(stderr, "server: %llu corrupted blocks\n", (unsigned long long)bad);
    return 1;
  }
  char extra[128];
  snprintf(extra, sizeof extra, "threads=%d slots=%lld remote_replacements=%llu", nt, slots,
           (unsigned long long)remote);
  wl_result("server", total / (uint64_t)nt * (uint64_t)nt, secs, extra);
  return 0;
}
