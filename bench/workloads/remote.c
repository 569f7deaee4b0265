/* remote: the cost of a cross-thread free against the size of the heap, one point per live
 * heap size (tools/bench.sh's remote-1M and remote-1G: --live per thread; the issue-10 goal is
 * the two within 1.2x). Two threads each first allocate --live bytes of 16-256 B blocks that
 * stay live to the end (the heap an owner's collection of remote frees might walk). Then the
 * owner allocates blocks of 16-256 B in batches of 64 and passes each batch through a bounded
 * queue to the other thread, which frees every block: a free of a block another thread owns.
 * The owner's later allocations reuse what was freed remotely, so the measured loop carries
 * the whole round trip: the remote free, the hand-back and the owner's reuse.
 *   RESULT ... ns_per_remote_free=<loop wall / blocks> free_ns=<time in free() / blocks>
 * The table's time is the whole process (including the fill); the pair's figure is
 * ns_per_remote_free. */
#include "common.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>

#define MIN_SIZE 16
#define MAX_SIZE 256
#define BATCH    64
#define QUEUE    256 /* batches in flight; a power of two */

struct heap {
  void **blk;
  size_t n;
};

static struct {
  _Alignas(64) _Atomic uint64_t head;
  _Alignas(64) _Atomic uint64_t tail;
  _Alignas(64) void *q[QUEUE][BATCH];
} ring;

static uint64_t batches, bad;
static double free_secs, loop_secs;
static long long live;
static pthread_barrier_t start;

static void fill(struct heap *h, uint64_t seed) {
  uint64_t s = seed, bytes = 0;
  size_t cap = (size_t)(live / ((MIN_SIZE + MAX_SIZE) / 2)) * 11 / 10 + 16;
  h->blk = wl_check(malloc(cap * sizeof(void *)), "malloc");
  h->n = 0;
  while (bytes < (uint64_t)live && h->n < cap) {
    size_t n = MIN_SIZE + (size_t)(wl_rand(&s) % (MAX_SIZE - MIN_SIZE + 1));
    h->blk[h->n] = wl_check(malloc(n), "malloc");
    wl_stamp(h->blk[h->n++], n, 5);
    bytes += n;
  }
}

static uint64_t drop(struct heap *h) {
  uint64_t damaged = 0;
  for (size_t i = 0; i < h->n; i++) {
    if (!wl_stamp_check(h->blk[i], MAX_SIZE)) damaged++;
    free(h->blk[i]);
  }
  free(h->blk);
  return damaged;
}

static void *owner(void *arg) {
  struct heap h;
  uint64_t s = wl_seed(700);
  fill(&h, wl_seed(701));
  pthread_barrier_wait(&start);
  double t0 = wl_now();
  for (uint64_t b = 0; b < batches; b++) {
    while (b - atomic_load_explicit(&ring.tail, memory_order_acquire) >= QUEUE) sched_yield();
    for (size_t i = 0; i < BATCH; i++) {
      size_t n = MIN_SIZE + (size_t)(wl_rand(&s) % (MAX_SIZE - MIN_SIZE + 1));
      ring.q[b % QUEUE][i] = wl_check(malloc(n), "malloc");
      wl_stamp(ring.q[b % QUEUE][i], n, (uint32_t)b);
    }
    atomic_store_explicit(&ring.head, b + 1, memory_order_release);
  }
  /* Wait for the last free, so the loop time covers the whole round trip. */
  while (atomic_load_explicit(&ring.tail, memory_order_acquire) < batches) sched_yield();
  loop_secs = wl_now() - t0;
  *(uint64_t *)arg = drop(&h);
  return NULL;
}

static void *freer(void *arg) {
  struct heap h;
  fill(&h, wl_seed(702));
  pthread_barrier_wait(&start);
  double in_free = 0;
  uint64_t damaged = 0;
  for (uint64_t b = 0; b < batches; b++) {
    while (atomic_load_explicit(&ring.head, memory_order_acquire) == b) sched_yield();
    void **q = ring.q[b % QUEUE];
    for (size_t i = 0; i < BATCH; i++)
      if (!wl_stamp_check(q[i], MAX_SIZE)) damaged++;
    double t0 = wl_now();
    for (size_t i = 0; i < BATCH; i++) free(q[i]);
    in_free += wl_now() - t0;
    atomic_store_explicit(&ring.tail, b + 1, memory_order_release);
  }
  free_secs = in_free;
  *(uint64_t *)arg = damaged + drop(&h);
  return NULL;
}

int main(int argc, char **argv) {
  live = 1 << 20;
  const struct wl_param params[] = {{"live", &live}, {0, 0}};
  struct wl_opts o;
  wl_parse_params(argc, argv, &o, params);
  if (live < 0 || live > (64LL << 30)) {
    fprintf(stderr, "remote: --live must be 0..64G bytes\n");
    return 2;
  }
  batches = wl_count(&o, 4000000, 64) / BATCH;
  if (batches == 0) batches = 1;
  pthread_barrier_init(&start, NULL, 2);
  pthread_t a, b;
  uint64_t bad_a = 0, bad_b = 0;
  if (pthread_create(&a, NULL, owner, &bad_a) || pthread_create(&b, NULL, freer, &bad_b)) {
    fprintf(stderr, "remote: pthread_create failed\n");
    return 1;
  }
  pthread_join(a, NULL);
  pthread_join(b, NULL);
  bad = bad_a + bad_b;
  if (bad) {
    fprintf(stderr, "remote: %llu corrupted blocks\n", (unsigned long long)bad);
    return 1;
  }
  uint64_t n = batches * BATCH;
  char extra[160];
  snprintf(extra, sizeof extra, "live_mib=%.1f ns_per_remote_free=%.2f free_ns=%.2f",
           (double)live / (1 << 20), loop_secs * 1e9 / (double)n, free_secs * 1e9 / (double)n);
  wl_result("remote", n, loop_secs, extra);
  return 0;
}
