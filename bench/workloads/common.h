/* Shared helpers for the allocator workloads in bench/workloads/.
 *
 * Every workload is a plain C program that uses only malloc & co, so that LD_PRELOAD swaps the
 * allocator under it. Each prints exactly one line starting with "RESULT" on stdout:
 *   RESULT name=<workload> ops=<n> secs=<s> mops=<millions of ops per second> [key=value ...]
 * Options common to all: --quick (a smaller problem, for smoke runs), --threads N,
 * --scale F (multiply the amount of work by F; --callgrind runs use small scales). */
#ifndef BENCH_WORKLOADS_COMMON_H
#define BENCH_WORKLOADS_COMMON_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>
#include <pthread.h>

struct wl_opts {
  int quick;
  int threads;  /* 0: the workload's default */
  double scale; /* multiplies the op count; 1.0 by default */
};

static inline void wl_parse(int argc, char **argv, struct wl_opts *o) {
  o->quick = 0;
  o->threads = 0;
  o->scale = 1.0;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--quick")) {
      o->quick = 1;
    } else if (!strcmp(argv[i], "--threads") && i + 1 < argc) {
      o->threads = atoi(argv[++i]);
    } else if (!strcmp(argv[i], "--scale") && i + 1 < argc) {
      o->scale = atof(argv[++i]);
    } else {
      fprintf(stderr, "usage: %s [--quick] [--threads N] [--scale F]\n", argv[0]);
      exit(2);
    }
  }
  if (o->scale <= 0) o->scale = 1.0;
}

/* Number of operations: the full count, divided by quick_div in --quick, times --scale. */
static inline uint64_t wl_count(const struct wl_opts *o, uint64_t full, uint64_t quick_div) {
  double n = (double)full / (o->quick ? (double)quick_div : 1.0) * o->scale;
  return n < 1 ? 1 : (uint64_t)n;
}

/* The thread count: --threads N when given, else `def`; at most `max`. */
static inline int wl_threads(const struct wl_opts *o, int def, int max) {
  int nt = o->threads > 0 ? o->threads : def;
  return nt > max ? max : nt;
}

/* Runs fn on nt threads, thread t getting (char *)base + t * stride, and waits for all.
 * Exits the program when a thread cannot be created. */
static inline void wl_run_threads(const char *name, int nt, void *(*fn)(void *), void *base,
                                  size_t stride) {
  pthread_t th[nt];
  for (int t = 0; t < nt; t++) {
    if (pthread_create(&th[t], NULL, fn, (char *)base + (size_t)t * stride)) {
      fprintf(stderr, "%s: pthread_create failed\n", name);
      exit(1);
    }
  }
  for (int t = 0; t < nt; t++) pthread_join(th[t], NULL);
}

static inline double wl_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* xorshift64*: a small per-thread generator; never use rand() (it locks). */
static inline uint64_t wl_rand(uint64_t *s) {
  uint64_t x = *s;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  *s = x;
  return x * 0x2545F4914F6CDD1DULL;
}

static inline uint64_t wl_seed(uint64_t k) {
  return (k + 1) * 0x9E3779B97F4A7C15ULL | 1;
}

/* Resident set size in KiB, from /proc/self/statm (read(2), so no allocation on the way). */
static inline long wl_rss_kib(void) {
  char buf[128];
  int fd = open("/proc/self/statm", O_RDONLY);
  if (fd < 0) return -1;
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0) return -1;
  buf[n] = 0;
  long size = 0, res = 0;
  if (sscanf(buf, "%ld %ld", &size, &res) != 2) return -1;
  return res * (sysconf(_SC_PAGESIZE) / 1024);
}

/* Die on allocation failure: a benchmark that silently skips work is a lie. */
static inline void *wl_check(void *p, const char *what) {
  if (!p) {
    fprintf(stderr, "workload: %s failed (out of memory)\n", what);
    exit(3);
  }
  return p;
}

/* Touch a block so the allocator cannot hand out memory nobody uses. */
static inline void wl_touch(void *p, size_t n, unsigned char v) {
  unsigned char *c = p;
  c[0] = v;
  c[n - 1] = v;
  if (n > 64) c[n / 2] = v;
}

static inline void wl_result(const char *name, uint64_t ops, double secs, const char *extra) {
  printf("RESULT name=%s ops=%llu secs=%.4f mops=%.3f%s%s\n", name, (unsigned long long)ops, secs,
         secs > 0 ? (double)ops / secs / 1e6 : 0.0, extra && *extra ? " " : "", extra ? extra : "");
  fflush(stdout);
}

#endif
