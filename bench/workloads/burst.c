/* burst: long bursts of allocations and of frees in allocation order and in reverse, the
 * shape of MicroQuill's sh6bench (tools/bench.sh's burst-<ring>: --ring). Each thread fills
 * a ring of --ring slots with blocks whose sizes sweep 1..--max-size geometrically (each
 * size a run of 1-250 blocks, small sizes more often), writing each block's first byte.
 * When the ring is full, a fifth of it is kept for the next lap and the rest freed: the
 * part before the kept fifth in allocation order, the part after it in reverse. So every
 * free list sees bursts of thousands of frees and then of allocations, and the blocks
 * freed were allocated long ago: an allocator whose thread cache must hand such bursts
 * back to their slabs block by block, or refill by walking cold lists, pays for it here.
 * 2 threads by default (--threads N), nothing shared between them. */
#include "common.h"

#include <pthread.h>

#define MAX_THREADS 64

struct worker {
  uint64_t ops, sum;
  size_t ring, max_size;
};

/* Blocks of one size in a row: small sizes more often, as sh6bench does. */
static unsigned run_length(size_t size) {
  unsigned n = size < 10000 ? 10 : 1;
  if (size < 1000) n *= 5;
  if (size < 100) n *= 5;
  return n;
}

/* Frees the ring's blocks outside [keep, keep_end): those before it oldest first, those
 * after it newest first. */
static void free_outside(char **ring, char **end, char **keep, char **keep_end) {
  for (char **q = ring; q < keep; q++) free(*q);
  for (char **q = end; q > keep_end;) free(*--q);
}

static void *run(void *arg) {
  struct worker *w = arg;
  char **ring = wl_check(malloc(w->ring * sizeof(char *)), "malloc");
  char **end = ring + w->ring, **mp = ring, **keep = end, **keep_end = end;
  uint64_t done = 0, sum = 0;
  while (done < w->ops) {
    for (size_t base = 1; base < w->max_size && done < w->ops; base = base * 3 / 2 + 1) {
      for (size_t size = base; size >= 1; size /= 2) {
        for (unsigned i = run_length(size); i--; done++) {
          *mp = wl_check(malloc(size), "malloc");
          **mp = (char)done;
          if (++mp == keep) mp = keep_end;
          if (mp < end) continue;
          /* The ring is full: keep the next fifth, free the rest, refill around it. */
          keep = keep_end < end ? keep_end : ring;
          keep_end = keep + w->ring / 5 < end ? keep + w->ring / 5 : end;
          for (char **q = keep; q < keep_end; q++) sum += (unsigned char)**q;
          free_outside(ring, end, keep, keep_end);
          mp = keep == ring ? keep_end : ring;
        }
      }
    }
  }
  /* What is left: the kept part and the slots filled since the last lap. */
  for (char **q = ring; q < end; q++)
    if ((q >= keep && q < keep_end) || (keep == ring ? q >= keep_end && q < mp : q < mp)) free(*q);
  free(ring);
  w->sum = sum;
  return NULL;
}

int main(int argc, char **argv) {
  long long ring = 100000, max_size = 1000;
  const struct wl_param params[] = {{"ring", &ring}, {"max-size", &max_size}, {0, 0}};
  struct wl_opts o;
  wl_parse_params(argc, argv, &o, params);
  if (ring < 10 || ring > (1LL << 28) || max_size < 2 || max_size > (1LL << 30)) {
    fprintf(stderr, "burst: --ring must be 10..2^28 and --max-size 2..2^30\n");
    return 2;
  }
  int nt = wl_threads(&o, 2, MAX_THREADS);
  uint64_t ops = wl_count(&o, 64000000, 64);
  static struct worker w[MAX_THREADS];
  for (int t = 0; t < nt; t++)
    w[t] = (struct worker){
        .ops = ops / (uint64_t)nt, .ring = (size_t)ring, .max_size = (size_t)max_size};
  double t0 = wl_now();
  wl_run_threads("burst", nt, run, w, sizeof w[0]);
  double secs = wl_now() - t0;
  char extra[128];
  snprintf(extra, sizeof extra, "threads=%d ring=%lld max_size=%lld check=%llu", nt, ring, max_size,
           (unsigned long long)(w[0].sum & 0xff));
  wl_result("burst", ops / (uint64_t)nt * (uint64_t)nt, secs, extra);
  return 0;
}
