/* glibc-simple: the shape of glibc's bench-malloc-simple. For each size in 16..4096 and each
 * batch length (1, 25, 400), allocate a batch of blocks of that size, then free them in the
 * same order; repeat. Batch 1 is the pure malloc+free fast path; longer batches exercise the
 * free lists filling and draining. Single thread: the --callgrind instructions-per-op figure
 * for the fast path comes from here. */
#include "common.h"

static const size_t sizes[] = {16, 32, 64, 128, 256, 512, 1024, 4096};
static const size_t batches[] = {1, 25, 400};

int main(int argc, char **argv) {
  struct wl_opts o;
  wl_parse(argc, argv, &o);
  /* ops = malloc+free pairs, spread evenly over the 24 (size, batch) cases */
  uint64_t per_case = wl_count(&o, 20000000 / 24, 16);
  void *blocks[400];
  uint64_t ops = 0, sum = 0;
  double t0 = wl_now();
  for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
    for (size_t bi = 0; bi < sizeof batches / sizeof batches[0]; bi++) {
      size_t n = sizes[si], b = batches[bi];
      uint64_t rounds = per_case / b;
      for (uint64_t r = 0; r < rounds; r++) {
        for (size_t i = 0; i < b; i++) {
          unsigned char *p = wl_check(malloc(n), "malloc");
          p[0] = (unsigned char)i;
          blocks[i] = p;
        }
        for (size_t i = 0; i < b; i++) {
          sum += *(unsigned char *)blocks[i];
          free(blocks[i]);
        }
        ops += b;
      }
    }
  }
  double secs = wl_now() - t0;
  char extra[32];
  snprintf(extra, sizeof extra, "check=%llu", (unsigned long long)(sum & 0xff));
  wl_result("glibc-simple", ops, secs, extra);
  return 0;
}
