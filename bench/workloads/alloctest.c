/* alloctest: a single-thread allocation test in the spirit of the published alloc-test: mixed
 * sizes, most blocks short-lived and a minority long-lived. Each step either (7 in 8) pushes
 * a short-lived block onto a stack and, when the stack is deep enough, pops and frees a random
 * number of blocks from its top (LIFO lifetimes, as temporaries in a call tree), or (1 in 8)
 * replaces a random block of a 100,000-slot long-lived table (random lifetimes). Sizes fall off
 * roughly as 1/size: 8-16 B as often as 16-32 B, and so on up to 4 KiB, with 1 in 256 blocks
 * up to 64 KiB; every block is written at both ends. One op = one malloc+free pair. */
#include "common.h"

#define LONG_SLOTS 100000
#define STACK      256

static size_t pick_size(uint64_t r) {
  if ((r & 255) == 0) return 4096 + (size_t)((r >> 8) % 61441);
  unsigned e = 3 + (unsigned)((r >> 8) % 10); /* 8..4096, each power of two as likely */
  size_t lo = (size_t)1 << e;
  return lo + (size_t)((r >> 16) % lo);
}

int main(int argc, char **argv) {
  struct wl_opts o;
  wl_parse(argc, argv, &o);
  uint64_t ops = wl_count(&o, 8000000, 16);
  void **table = wl_check(calloc(LONG_SLOTS, sizeof(void *)), "calloc");
  void *stack[STACK];
  size_t depth = 0;
  uint64_t s = wl_seed(600), sum = 0, done = 0;
  for (size_t k = 0; k < LONG_SLOTS; k++) {
    size_t n = pick_size(wl_rand(&s));
    table[k] = wl_check(malloc(n), "malloc");
    wl_touch(table[k], n, 1);
  }
  double t0 = wl_now();
  while (done < ops) {
    uint64_t r = wl_rand(&s);
    size_t n = pick_size(wl_rand(&s));
    unsigned char *p = wl_check(malloc(n), "malloc");
    wl_touch(p, n, (unsigned char)done);
    if ((r & 7) == 0) {
      size_t k = (size_t)((r >> 40) % LONG_SLOTS);
      sum += *(unsigned char *)table[k];
      free(table[k]);
      table[k] = p;
      done++;
      continue;
    }
    stack[depth++] = p;
    if (depth == STACK || (depth > 8 && ((r >> 32) & 3) == 0)) {
      size_t pop = 1 + (size_t)((r >> 48) % depth);
      while (pop--) {
        sum += *(unsigned char *)stack[--depth];
        free(stack[depth]);
        done++;
      }
    }
  }
  double secs = wl_now() - t0;
  while (depth) free(stack[--depth]);
  for (size_t k = 0; k < LONG_SLOTS; k++) free(table[k]);
  free(table);
  char extra[48];
  snprintf(extra, sizeof extra, "check=%llu", (unsigned long long)(sum & 0xff));
  wl_result("alloctest", done, secs, extra);
  return 0;
}
