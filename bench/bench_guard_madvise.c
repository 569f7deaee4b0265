/* bench_guard_madvise: what a guard marker costs the kernel (docs/hardening.md).
 *
 *   bench_guard_madvise [pages]      (default 2000)
 *
 * Times, per page and call, MADV_GUARD_INSTALL on pages that are faulted in and on pages
 * never touched (or zapped), MADV_GUARD_REMOVE, a page fault and MADV_DONTNEED: once with
 * this thread alone and once with a second thread spinning on another CPU. Putting a marker
 * on a faulted-in page zaps it, and a zap flushes the TLB of every CPU the process runs on:
 * with a second thread running that is an inter-processor interrupt per call. Calls the
 * kernel directly (the page layer wraps these for the library). Prints one line per case;
 * exits 0 with a note where the kernel has no guard markers (Linux < 6.13). */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#ifndef MADV_GUARD_INSTALL
#define MADV_GUARD_INSTALL 102
#define MADV_GUARD_REMOVE  103
#endif

static atomic_int stop;

static void *spin(void *arg) {
  (void)arg;
  while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
  }
  return NULL;
}

static double now_us(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec * 1e6 + (double)t.tv_nsec / 1e3;
}

/* Mean microseconds of madvise(advice) on each of the n pages of m. */
static double each(char *m, size_t n, size_t ps, int advice) {
  double t = now_us();
  for (size_t i = 0; i < n; i++)
    if (madvise(m + i * ps, ps, advice) != 0) {
      fprintf(stderr, "bench_guard_madvise: madvise(%d): %s\n", advice, strerror(errno));
      exit(1);
    }
  return (now_us() - t) / (double)n;
}

static double touch(char *m, size_t n, size_t ps) {
  double t = now_us();
  for (size_t i = 0; i < n; i++) ((volatile char *)m)[i * ps] = 1;
  return (now_us() - t) / (double)n;
}

static void run(size_t n, bool second) {
  size_t ps = 4096;
  pthread_t th;
  atomic_store(&stop, 0);
  if (second && pthread_create(&th, NULL, spin, NULL) != 0) return;
  char *m = mmap(NULL, n * ps, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (m == MAP_FAILED) exit(1);
  touch(m, n, ps);
  double in_present = each(m, n, ps, MADV_GUARD_INSTALL);
  double out = each(m, n, ps, MADV_GUARD_REMOVE);
  double in_absent = each(m, n, ps, MADV_GUARD_INSTALL); /* the install zapped them */
  (void)each(m, n, ps, MADV_GUARD_REMOVE);
  double fault = touch(m, n, ps);
  double dontneed = each(m, n, ps, MADV_DONTNEED);
  printf("%-22s install (faulted in) %6.2f us  install (untouched) %5.2f us  remove %5.2f us  "
         "fault %5.2f us  dontneed %5.2f us\n",
         second ? "second thread running" : "one thread", in_present, in_absent, out, fault,
         dontneed);
  munmap(m, n * ps);
  atomic_store(&stop, 1);
  if (second) pthread_join(th, NULL);
}

int main(int argc, char **argv) {
  size_t n = argc > 1 ? strtoul(argv[1], NULL, 10) : 2000;
  if (n == 0) n = 1;
  char *probe = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (probe == MAP_FAILED) return 1;
  if (madvise(probe, 4096, MADV_GUARD_INSTALL) != 0) {
    printf("bench_guard_madvise: no guard markers here (%s): nothing to measure\n",
           strerror(errno));
    return 0;
  }
  munmap(probe, 4096);
  run(n, false);
  run(n, true);
  return 0;
}
