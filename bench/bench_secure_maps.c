/* How far a heap of small blocks gets in secure mode under vm.max_map_count (issue 12.8).
 *
 *   bench_secure_maps [--gib G] [--block BYTES]
 *
 * Allocates blocks of BYTES (default 1024) with ma_malloc, writing one byte of each, until
 * G GiB (default 6) are allocated or ma_malloc fails, and prints the GiB reached, the
 * number of mappings (lines of /proc/self/maps) and the limit. Secure mode: a
 * -DMAPALLOC_SECURE=ON build, or MAPALLOC_SECURE=1 in the environment; MAPALLOC_GUARD_MADVISE=0
 * forces the PROT_NONE-hole guards (a mapping per slab) where the kernel has guard pages.
 * Blocks are never freed (the process exits); the memory is resident: G GiB and a little. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mapalloc/heap.h"

static long maps_count(void) {
  FILE *f = fopen("/proc/self/maps", "r");
  if (!f) return -1;
  long n = 0;
  int c;
  while ((c = fgetc(f)) != EOF) n += c == '\n';
  fclose(f);
  return n;
}

static long max_map_count(void) {
  FILE *f = fopen("/proc/sys/vm/max_map_count", "r");
  long v = -1;
  if (f) {
    if (fscanf(f, "%ld", &v) != 1) v = -1;
    fclose(f);
  }
  return v;
}

int main(int argc, char **argv) {
  double gib = 6;
  size_t block = 1024;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--gib") == 0 && i + 1 < argc) {
      gib = strtod(argv[++i], NULL);
    } else if (strcmp(argv[i], "--block") == 0 && i + 1 < argc) {
      block = strtoul(argv[++i], NULL, 10);
    } else {
      fprintf(stderr, "usage: %s [--gib G] [--block BYTES]\n", argv[0]);
      return 2;
    }
  }
  if (gib <= 0 || block == 0 || block > (1u << 20)) {
    fprintf(stderr, "bench_secure_maps: bad --gib or --block\n");
    return 2;
  }
  size_t goal = (size_t)(gib * (double)(1ul << 30)), total = 0, n = 0;
  long maps0 = maps_count();
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  int err = 0;
  while (total < goal) {
    char *p = ma_malloc(block);
    if (!p) {
      err = errno;
      break;
    }
    p[0] = (char)n; /* touch lightly (carving has written the block's tag word anyway) */
    total += block;
    n++;
  }
  clock_gettime(CLOCK_MONOTONIC, &t1);
  double s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
  long maps = maps_count();
  printf("block %zu B: %.2f GiB in %zu blocks (%s), %.2f s; mappings %ld (%ld at start), "
         "vm.max_map_count %ld\n",
         block, (double)total / (double)(1ul << 30), n, err ? strerror(err) : "goal reached", s,
         maps, maps0, max_map_count());
  return err ? 1 : 0;
}
