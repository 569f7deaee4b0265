/* Run with MAPALLOC_BACKGROUND=0 and a 5 s purge delay (tests/remote.cmake): no purger
 * thread; an idle thread's
 * freed memory stays until a trim, and ma_heap_collect(true) from another thread returns
 * it at once. Exit status 0 when every check holds. */
#include <dirent.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mapalloc/heap.h"

#define CHECK(c)                                                                                   \
  do {                                                                                             \
    if (!(c)) {                                                                                    \
      fprintf(stderr, "purger_off: %s:%d: %s\n", __FILE__, __LINE__, #c);                          \
      exit(1);                                                                                     \
    }                                                                                              \
  } while (0)

static size_t committed(void) {
  ma_heap_stats st;
  ma_heap_stats_get(&st);
  return st.committed;
}

static int task_count(void) {
  DIR *d = opendir("/proc/self/task");
  int n = 0;
  struct dirent *e;
  while (d && (e = readdir(d)) != NULL) n += e->d_name[0] != '.';
  if (d) closedir(d);
  return n;
}

static void *worker(void *arg) {
  size_t n = (32u << 20) / 256;
  void **v = malloc(n * sizeof *v);
  for (size_t i = 0; i < n; i++) v[i] = ma_malloc(256);
  /* One block in 8192 stays: its segment is not unmapped, so the emptied slabs around it
   * are retained for the purge delay (or until a trim). */
  for (size_t i = 0; i < n; i++)
    if (i % 8192 != 0) ma_free(v[i]);
  pthread_barrier_wait(arg);
  pthread_barrier_wait(arg); /* idle until main has checked */
  for (size_t i = 0; i < n; i += 8192) ma_free(v[i]);
  free(v);
  return NULL;
}

int main(void) {
  const char *e = getenv("MAPALLOC_BACKGROUND");
  CHECK(e && strcmp(e, "0") == 0);
  ma_heap_collect(true);
  size_t c0 = committed();
  pthread_barrier_t b;
  pthread_barrier_init(&b, NULL, 2);
  pthread_t t;
  pthread_create(&t, NULL, worker, &b);
  pthread_barrier_wait(&b);
  struct timespec ts = {0, 600 * 1000000L};
  nanosleep(&ts, NULL);
  CHECK(task_count() == 2);                     /* main and the worker: no purger */
  CHECK(committed() > c0 + (size_t)(16 << 20)); /* the idle worker's empty slabs stay */
  ma_heap_collect(true);                        /* from another thread: at once */
  CHECK(committed() <= c0 + (size_t)(2 << 20));
  pthread_barrier_wait(&b);
  pthread_join(t, NULL);
  printf("purger_off: ok\n");
  return 0;
}
