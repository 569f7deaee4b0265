/* Run-time options are read once, at the first use of the library, and never change after
 * it (README, "Run-time options"). Two ways a program reaches that first use early
 * (tests/options.cmake runs each with MAPALLOC_PURGE_DELAY_MS=0 MAPALLOC_SECURE=1
 * MAPALLOC_VERBOSE=1):
 *
 *   options_first_use heap-noenv  a constructor that runs before the library's sets
 *                                 environ = NULL, mallocs, and restores environ; the
 *                                 options must all be in effect from that first malloc on
 *                                 (the slabs' purge delay, the large blocks', secure mode
 *                                 for the segment already made), and the same in main;
 *   options_first_use pool-first  a constructor creates a pool (and allocates from it)
 *                                 before any malloc: its segment has secure mode's guard
 *                                 pages too.
 *
 * Exit status 0 when every check holds. White-box: reads the heap's and obj's internals. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "malloc/heap_internal.h"
#include "mapalloc/heap.h"
#include "mapalloc/pool.h"

#define CHECK(c)                                                                                   \
  do {                                                                                             \
    if (!(c)) {                                                                                    \
      fprintf(stderr, "options_first_use: %s:%d: %s\n", __FILE__, __LINE__, #c);                   \
      exit(1);                                                                                     \
    }                                                                                              \
  } while (0)

typedef struct {
  long opt_delay, opt_secure, opt_shuffle;
  int space_delay;
  bool secure_on;
  uint32_t guard; /* guard bytes of the first block's (or object's) segment */
} seen;

static seen at_first_use;
static void *first_block;
static ma_pool *first_pool;

/* (heap_space is set up by the first malloc: its delay is compared in heap mode only) */
static seen look(void *block, bool heap_mode) {
  obj_segment *seg = obj_segment_of(block);
  CHECK(seg != NULL);
  return (seen){heap_opt.purge_delay_ms, heap_opt.secure,
                heap_opt.shuffle,        heap_mode ? heap_space.purge_delay_ms : -2,
                obj_secure_on(),         seg->guard};
}

/* argv[1], read before main (the program's path may be long: a page of room). */
static const char *mode(void) {
  static char buf[4096];
  FILE *f = fopen("/proc/self/cmdline", "r");
  size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
  if (f) fclose(f);
  buf[n] = 0;
  return buf + strlen(buf) + 1 < buf + n ? buf + strlen(buf) + 1 : "";
}

/* Priority 101: before the library's own constructor (which would read the options). */
__attribute__((constructor(101))) static void early(void) {
  if (strcmp(mode(), "heap-noenv") == 0) {
    char **saved = environ;
    environ = NULL;
    first_block = ma_malloc(100);
    environ = saved;
  } else if (strcmp(mode(), "pool-first") == 0) {
    CHECK(ma_pool_create(&(ma_pool_opts){.obj_size = 64}, &first_pool) == 0);
    first_block = ma_pool_alloc(first_pool);
  } else {
    return;
  }
  CHECK(first_block != NULL);
  at_first_use = look(first_block, first_pool == NULL);
}

int main(int argc, char **argv) {
  CHECK(argc == 2);
  CHECK(first_block != NULL);
  const char *d = getenv("MAPALLOC_PURGE_DELAY_MS"), *s = getenv("MAPALLOC_SECURE");
  CHECK(d && strcmp(d, "0") == 0 && s && strcmp(s, "1") == 0);
  seen now = look(first_block, first_pool == NULL);
  fprintf(stderr,
          "%s: at first use: delay %ld (slabs %d) secure %ld (on %d, guard %u); in main: "
          "delay %ld (slabs %d) secure %ld (on %d)\n",
          argv[1], at_first_use.opt_delay, at_first_use.space_delay, at_first_use.opt_secure,
          at_first_use.secure_on, at_first_use.guard, now.opt_delay, now.space_delay,
          now.opt_secure, now.secure_on);
  /* In effect from the first use on, for slabs and large blocks alike. */
  CHECK(at_first_use.opt_delay == 0);
  CHECK(at_first_use.opt_secure == 1);
  CHECK(at_first_use.secure_on);
  CHECK(at_first_use.guard != 0); /* the segment made by the first use has guard pages */
  /* Nothing changed afterwards. */
  CHECK(now.opt_delay == at_first_use.opt_delay && now.opt_secure == at_first_use.opt_secure &&
        now.opt_shuffle == at_first_use.opt_shuffle &&
        now.space_delay == at_first_use.space_delay && now.secure_on == at_first_use.secure_on &&
        now.guard == at_first_use.guard);
  if (strcmp(argv[1], "heap-noenv") == 0) {
    CHECK(heap_space.purge_delay_ms == 0); /* slabs: as the large blocks */
    /* Behaviour: a large block freed with a purge delay of 0 is not cached. */
    ma_heap_stats st0, st1;
    void *big = ma_malloc(1 << 20);
    CHECK(big != NULL);
    ma_heap_stats_get(&st0);
    ma_free(big);
    ma_heap_stats_get(&st1);
    CHECK(st1.committed + (1 << 20) <= st0.committed);
    ma_free(first_block);
  } else {
    ma_pool_free(first_pool, first_block);
    ma_pool_destroy(first_pool);
  }
  return 0;
}
