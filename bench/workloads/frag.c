/* frag: fragmentation and return. Fill 1 GiB (64 MiB with --quick) with small objects of
 * random size 16-256 bytes, free 90% of them at random, allocate the same amount again, then
 * free everything. The resident set size (/proc/self/statm) is printed after each phase, once
 * straight away and, after a free phase, once more after 100 ms and a few hundred small
 * allocations (allocators that purge lazily get a chance to do it). The question it asks:
 * when a program frees most of its memory, does its RSS fall, and is the freed memory reused? */
#include "common.h"

#define MIN_SIZE 16
#define MAX_SIZE 256

static void nudge(void) {
  /* A pause, then a little allocator traffic: lazy purgers work on later calls. */
  usleep(100 * 1000);
  void *p[256];
  for (int i = 0; i < 256; i++) p[i] = wl_check(malloc(64), "malloc");
  for (int i = 0; i < 256; i++) free(p[i]);
}

static long mib(long kib) {
  return kib / 1024;
}

int main(int argc, char **argv) {
  struct wl_opts o;
  wl_parse(argc, argv, &o);
  uint64_t target = wl_count(&o, 1ull << 30, 16); /* bytes of payload */
  /* Mean payload (MIN+MAX)/2 bytes; size the table with some headroom. */
  size_t cap = (size_t)(target / ((MIN_SIZE + MAX_SIZE) / 2) * 11 / 10 + 16);
  void **obj = wl_check(malloc(cap * sizeof(void *)), "malloc table");
  uint32_t *len = wl_check(malloc(cap * sizeof(uint32_t)), "malloc table");
  uint64_t s = wl_seed(9), ops = 0;
  long rss0 = wl_rss_kib();

  double t0 = wl_now();
  size_t count = 0;
  uint64_t bytes = 0;
  while (bytes < target && count < cap) {
    size_t n = MIN_SIZE + wl_rand(&s) % (MAX_SIZE - MIN_SIZE + 1);
    obj[count] = wl_check(malloc(n), "malloc");
    memset(obj[count], (int)(count & 0xff), n);
    len[count++] = (uint32_t)n;
    bytes += n;
  }
  ops += count;
  long rss_fill = wl_rss_kib();

  size_t freed = 0;
  for (size_t i = 0; i < count; i++) {
    if (wl_rand(&s) % 10 != 0) {
      if (*(unsigned char *)obj[i] != (unsigned char)(i & 0xff)) {
        fprintf(stderr, "frag: block %zu corrupted\n", i);
        return 1;
      }
      free(obj[i]);
      obj[i] = NULL;
      freed++;
    }
  }
  ops += freed;
  long rss_free = wl_rss_kib();
  double t_free = wl_now();
  nudge();
  long rss_free_late = wl_rss_kib();
  double pause = wl_now() - t_free;

  for (size_t i = 0; i < count; i++) {
    if (!obj[i]) {
      size_t n = MIN_SIZE + wl_rand(&s) % (MAX_SIZE - MIN_SIZE + 1);
      obj[i] = wl_check(malloc(n), "malloc");
      memset(obj[i], (int)(i & 0xff), n);
      len[i] = (uint32_t)n;
    }
  }
  ops += freed;
  long rss_refill = wl_rss_kib();

  for (size_t i = 0; i < count; i++) free(obj[i]);
  ops += count;
  long rss_end = wl_rss_kib();
  double t_end = wl_now();
  nudge();
  long rss_end_late = wl_rss_kib();
  pause += wl_now() - t_end;
  double secs = wl_now() - t0 - pause;
  free(obj);
  free(len);

  char extra[400];
  snprintf(extra, sizeof extra,
           "objects=%zu rss_start_mib=%ld rss_fill_mib=%ld rss_free90_mib=%ld "
           "rss_free90_late_mib=%ld rss_refill_mib=%ld rss_end_mib=%ld rss_end_late_mib=%ld",
           count, mib(rss0), mib(rss_fill), mib(rss_free), mib(rss_free_late), mib(rss_refill),
           mib(rss_end), mib(rss_end_late));
  wl_result("frag", ops, secs, extra);
  return 0;
}
