/* xmalloc: producer/consumer. Each producer thread allocates blocks of random small size,
 * fills their first bytes and passes them through a single-producer/single-consumer ring to
 * its consumer thread, which checks and frees them. Every free is a free of a block another
 * thread allocated, the case per-thread caches handle worst. --threads N gives N/2 pairs. */
#include "common.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>

#define RING      4096 /* power of two */
#define MAX_PAIRS 32

struct ring {
  _Alignas(64) _Atomic uint64_t head; /* written by the producer */
  _Alignas(64) _Atomic uint64_t tail; /* written by the consumer */
  _Alignas(64) void *slot[RING];
  uint64_t ops;
  uint64_t seed;
  uint64_t bad;
};

static void *producer(void *arg) {
  struct ring *r = arg;
  uint64_t s = r->seed;
  uint64_t head = 0;
  for (uint64_t i = 0; i < r->ops; i++) {
    uint64_t x = wl_rand(&s);
    /* Mostly small (16..512), 1 in 64 up to 8 KiB. */
    size_t n = (x & 63) == 0 ? 16 + (x >> 8) % 8192 : 16 + (x >> 8) % 497;
    unsigned char *p = wl_check(malloc(n), "malloc");
    memcpy(p, &n, sizeof n); /* n >= 16: room for the size and a trailer byte */
    p[n - 1] = (unsigned char)n;
    while (head - atomic_load_explicit(&r->tail, memory_order_acquire) >= RING) sched_yield();
    r->slot[head % RING] = p;
    atomic_store_explicit(&r->head, ++head, memory_order_release);
  }
  return NULL;
}

static void *consumer(void *arg) {
  struct ring *r = arg;
  uint64_t tail = 0;
  while (tail < r->ops) {
    uint64_t head;
    while ((head = atomic_load_explicit(&r->head, memory_order_acquire)) == tail) sched_yield();
    while (tail < head) {
      unsigned char *p = r->slot[tail % RING];
      size_t n;
      memcpy(&n, p, sizeof n);
      if (n < 16 || n > 16 + 8192 || p[n - 1] != (unsigned char)n) r->bad++;
      free(p);
      tail++;
    }
    atomic_store_explicit(&r->tail, tail, memory_order_release);
  }
  return NULL;
}

int main(int argc, char **argv) {
  struct wl_opts o;
  wl_parse(argc, argv, &o);
  int pairs = (o.threads > 0 ? o.threads : 2) / 2;
  if (pairs < 1) pairs = 1;
  if (pairs > MAX_PAIRS) pairs = MAX_PAIRS;
  uint64_t total = wl_count(&o, 8000000, 16);
  struct ring *rings = wl_check(aligned_alloc(64, sizeof(struct ring) * (size_t)pairs), "alloc");
  memset(rings, 0, sizeof(struct ring) * (size_t)pairs);
  pthread_t th[2 * MAX_PAIRS];

  double t0 = wl_now();
  for (int i = 0; i < pairs; i++) {
    rings[i].ops = total / (uint64_t)pairs;
    rings[i].seed = wl_seed((uint64_t)i);
    if (pthread_create(&th[2 * i], NULL, producer, &rings[i]) ||
        pthread_create(&th[2 * i + 1], NULL, consumer, &rings[i])) {
      fprintf(stderr, "xmalloc: pthread_create failed\n");
      return 1;
    }
  }
  uint64_t bad = 0;
  for (int i = 0; i < 2 * pairs; i++) pthread_join(th[i], NULL);
  double secs = wl_now() - t0;
  for (int i = 0; i < pairs; i++) bad += rings[i].bad;
  free(rings);
  if (bad) {
    fprintf(stderr, "xmalloc: %llu corrupted blocks\n", (unsigned long long)bad);
    return 1;
  }
  char extra[64];
  snprintf(extra, sizeof extra, "threads=%d", 2 * pairs);
  wl_result("xmalloc", total / (uint64_t)pairs * (uint64_t)pairs, secs, extra);
  return 0;
}
