/* prodcons: producer/consumer with every free remote, one point per batch size (tools/bench.sh's
 * prodcons-b16, prodcons-b1k: --batch). Each producer allocates blocks of 16-1024 bytes,
 * stamps them, collects them into a batch (an array it also allocates) and passes the batch
 * through a bounded queue to its consumer, which checks and frees every block and the batch
 * array: every free of the run is a free of another thread's block. Small batches stress the
 * per-free cost and the hand-over latency; large ones the collection of a burst of remote
 * frees by the owner. --threads N gives N/2 pairs (default 1 pair). */
#include "common.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>

#define QUEUE     64 /* batches in flight per pair; a power of two */
#define MIN_SIZE  16
#define MAX_SIZE  1024
#define MAX_PAIRS 32

struct pair {
  _Alignas(64) _Atomic uint64_t head; /* written by the producer */
  _Alignas(64) _Atomic uint64_t tail; /* written by the consumer */
  _Alignas(64) void **queue[QUEUE];
  uint64_t batches, seed, bad;
  size_t batch;
};

static void *producer(void *arg) {
  struct pair *q = arg;
  uint64_t s = q->seed;
  for (uint64_t b = 0; b < q->batches; b++) {
    void **arr = wl_check(malloc(q->batch * sizeof(void *)), "malloc");
    for (size_t i = 0; i < q->batch; i++) {
      size_t n = MIN_SIZE + (size_t)(wl_rand(&s) % (MAX_SIZE - MIN_SIZE + 1));
      arr[i] = wl_check(malloc(n), "malloc");
      wl_stamp(arr[i], n, (uint32_t)b);
    }
    while (b - atomic_load_explicit(&q->tail, memory_order_acquire) >= QUEUE) sched_yield();
    q->queue[b % QUEUE] = arr;
    atomic_store_explicit(&q->head, b + 1, memory_order_release);
  }
  return NULL;
}

static void *consumer(void *arg) {
  struct pair *q = arg;
  for (uint64_t b = 0; b < q->batches; b++) {
    while (atomic_load_explicit(&q->head, memory_order_acquire) == b) sched_yield();
    void **arr = q->queue[b % QUEUE];
    atomic_store_explicit(&q->tail, b + 1, memory_order_release);
    for (size_t i = 0; i < q->batch; i++) {
      if (!wl_stamp_check(arr[i], MAX_SIZE)) q->bad++;
      free(arr[i]);
    }
    free(arr);
  }
  return NULL;
}

int main(int argc, char **argv) {
  long long batch = 256;
  const struct wl_param params[] = {{"batch", &batch}, {0, 0}};
  struct wl_opts o;
  wl_parse_params(argc, argv, &o, params);
  if (batch < 1 || batch > (1 << 20)) {
    fprintf(stderr, "prodcons: --batch must be 1..1M\n");
    return 2;
  }
  int pairs = (o.threads > 0 ? o.threads : 2) / 2;
  if (pairs < 1) pairs = 1;
  if (pairs > MAX_PAIRS) pairs = MAX_PAIRS;
  uint64_t total = wl_count(&o, 4000000, 64); /* blocks in all */
  uint64_t per = total / (uint64_t)pairs / (uint64_t)batch;
  if (per == 0) per = 1;
  struct pair *q = wl_check(aligned_alloc(64, sizeof(struct pair) * (size_t)pairs), "alloc");
  memset(q, 0, sizeof(struct pair) * (size_t)pairs);
  pthread_t th[2 * MAX_PAIRS];
  double t0 = wl_now();
  for (int i = 0; i < pairs; i++) {
    q[i].batches = per;
    q[i].batch = (size_t)batch;
    q[i].seed = wl_seed((uint64_t)i + 200);
    if (pthread_create(&th[2 * i], NULL, producer, &q[i]) ||
        pthread_create(&th[2 * i + 1], NULL, consumer, &q[i])) {
      fprintf(stderr, "prodcons: pthread_create failed\n");
      return 1;
    }
  }
  for (int i = 0; i < 2 * pairs; i++) pthread_join(th[i], NULL);
  double secs = wl_now() - t0;
  uint64_t bad = 0;
  for (int i = 0; i < pairs; i++) bad += q[i].bad;
  free(q);
  if (bad) {
    fprintf(stderr, "prodcons: %llu corrupted blocks\n", (unsigned long long)bad);
    return 1;
  }
  char extra[96];
  snprintf(extra, sizeof extra, "threads=%d batch=%lld", 2 * pairs, batch);
  wl_result("prodcons", per * (uint64_t)batch * (uint64_t)pairs, secs, extra);
  return 0;
}
