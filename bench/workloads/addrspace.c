/* addrspace: how much address space many threads' small blocks take. THREADS threads
 * (64 KiB stacks) each allocate BLOCKS blocks of 16..MAX bytes and hold them until all have
 * theirs; then one line reports the blocks asked for, the mallocs that failed (run it under
 * `ulimit -v` to see who runs out first), and the process's VSZ and RSS in MiB.
 *
 *   wl_addrspace [THREADS=1000] [BLOCKS=64] [MAX=1528]
 *   (ulimit -v 2000000; LD_PRELOAD=build/release/libmapalloc-preload.so wl_addrspace)
 *
 * Not a timing: thread creation dominates the run. docs/internals.md ("Segments that grow"). */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static pthread_barrier_t held, done;
static atomic_long failed, asked;
static int nblocks = 64, max_size = 1528;

static void *hold(void *arg) {
  uint32_t s = (uint32_t)(uintptr_t)arg * 2654435761u + 1;
  void **p = __builtin_alloca((size_t)nblocks * sizeof *p);
  for (int i = 0; i < nblocks; i++) {
    s = s * 1103515245u + 12345u;
    p[i] = malloc(16 + (s >> 8) % (uint32_t)(max_size - 15));
    if (p[i])
      memset(p[i], 1, 8);
    else
      atomic_fetch_add(&failed, 1);
    atomic_fetch_add(&asked, 1);
  }
  pthread_barrier_wait(&held);
  pthread_barrier_wait(&done);
  for (int i = 0; i < nblocks; i++) free(p[i]);
  return NULL;
}

int main(int argc, char **argv) {
  int n = argc > 1 ? atoi(argv[1]) : 1000;
  if (argc > 2) nblocks = atoi(argv[2]);
  if (argc > 3) max_size = atoi(argv[3]);
  if (n < 1 || nblocks < 1 || nblocks > 4096 || max_size < 16) {
    fprintf(stderr, "usage: wl_addrspace [THREADS] [BLOCKS<=4096] [MAX>=16]\n");
    return 2;
  }
  pthread_t *t = calloc((size_t)n, sizeof *t);
  pthread_attr_t a;
  if (!t || pthread_attr_init(&a) != 0 || pthread_attr_setstacksize(&a, 64 << 10) != 0) return 1;
  pthread_barrier_init(&held, NULL, (unsigned)n + 1);
  pthread_barrier_init(&done, NULL, (unsigned)n + 1);
  for (int i = 0; i < n; i++)
    if (pthread_create(&t[i], &a, hold, (void *)(uintptr_t)i) != 0) {
      fprintf(stderr, "wl_addrspace: thread %d could not start\n", i);
      return 1; /* (the started ones wait at the barrier for ever: exit ends them) */
    }
  pthread_barrier_wait(&held);
  long vsz = 0, rss = 0;
  FILE *f = fopen("/proc/self/statm", "r");
  if (!f || fscanf(f, "%ld %ld", &vsz, &rss) != 2) return 1;
  fclose(f);
  long page_kib = sysconf(_SC_PAGESIZE) / 1024;
  printf("RESULT threads=%d blocks=%ld failed=%ld vsz_mib=%ld rss_mib=%ld\n", n,
         atomic_load(&asked), atomic_load(&failed), vsz * page_kib / 1024, rss * page_kib / 1024);
  pthread_barrier_wait(&done);
  for (int i = 0; i < n; i++) pthread_join(t[i], NULL);
  free(t);
  return 0;
}
