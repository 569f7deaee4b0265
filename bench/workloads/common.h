/* Shared helpers for the allocator workloads in bench/workloads/.
 *
 * Every workload is a plain C program that uses only malloc & co, so that LD_PRELOAD swaps the
 * allocator under it. Each prints exactly one line starting with "RESULT" on stdout:
 *   RESULT name=<workload> ops=<n> secs=<s> mops=<millions of ops per second> [key=value ...]
 * Options common to all: --quick (a smaller problem, for smoke runs), --threads N,
 * --scale F (multiply the amount of work by F; --callgrind runs use small scales), --seed N
 * (another random sequence; tools/bench.sh passes the run number). Workloads with generated
 * parameters add their own integer options through wl_parse_params. */
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

/* A workload's own integer parameter (--slots, --window...): the generated points of a family
 * (tools/bench.sh's server-10k is wl_server --slots 10k) come through these. */
struct wl_param {
  const char *name; /* without the leading "--" */
  long long *value; /* holds the default; overwritten when the option is given */
};

/* The run's seed (--seed N, 0 by default): every wl_seed() mixes it in, so each run of
 * tools/bench.sh draws a different sequence, the same one for every allocator of that run. */
static uint64_t wl_seed_base;

/* A number with an optional suffix: decimal k = 1000, m = 1000000, g = 10^9, or the
 * power-of-two ones K = 1024, M = 2^20, G = 2^30 (tools/bench.sh spells 4 KiB as 4K). */
static inline int wl_number(const char *s, long long *out) {
  char *end;
  long long v = strtoll(s, &end, 10);
  if (end == s || v < 0) return -1;
  switch (*end) {
  case 0:
    break;
  case 'k':
    v *= 1000;
    end++;
    break;
  case 'm':
    v *= 1000000;
    end++;
    break;
  case 'g':
    v *= 1000000000;
    end++;
    break;
  case 'K':
    v <<= 10;
    end++;
    break;
  case 'M':
    v <<= 20;
    end++;
    break;
  case 'G':
    v <<= 30;
    end++;
    break;
  default:
    return -1;
  }
  if (*end) return -1;
  *out = v;
  return 0;
}

/* Parses the common options and the workload's own (params: NULL-terminated, or NULL). Exits
 * with status 2 and a usage line on anything else. */
static inline void wl_parse_params(int argc, char **argv, struct wl_opts *o,
                                   const struct wl_param *params) {
  o->quick = 0;
  o->threads = 0;
  o->scale = 1.0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    int ok = 1;
    if (!strcmp(a, "--quick")) {
      o->quick = 1;
    } else if (!strcmp(a, "--threads") && i + 1 < argc) {
      o->threads = atoi(argv[++i]);
    } else if (!strcmp(a, "--scale") && i + 1 < argc) {
      o->scale = atof(argv[++i]);
    } else if (!strcmp(a, "--seed") && i + 1 < argc) {
      long long v = 0;
      ok = wl_number(argv[++i], &v) == 0;
      wl_seed_base = (uint64_t)v;
    } else {
      ok = 0;
      for (const struct wl_param *p = params; p && p->name; p++) {
        if (a[0] == '-' && a[1] == '-' && !strcmp(a + 2, p->name) && i + 1 < argc) {
          if (wl_number(argv[++i], p->value)) {
            fprintf(stderr, "%s: --%s wants a number (suffix k/m/g or K/M/G), not '%s'\n", argv[0],
                    p->name, argv[i]);
            exit(2);
          }
          ok = 1;
          break;
        }
      }
    }
    if (!ok) {
      fprintf(stderr, "usage: %s [--quick] [--threads N] [--scale F] [--seed N]", argv[0]);
      for (const struct wl_param *p = params; p && p->name; p++)
        fprintf(stderr, " [--%s N (default %lld)]", p->name, *p->value);
      fprintf(stderr, "\n");
      exit(2);
    }
  }
  if (o->scale <= 0) o->scale = 1.0;
}

static inline void wl_parse(int argc, char **argv, struct wl_opts *o) {
  wl_parse_params(argc, argv, o, NULL);
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

/* A generator seed for stream k of this run (--seed 0 gives the suite's historical streams). */
static inline uint64_t wl_seed(uint64_t k) {
  return (k + 1 + wl_seed_base * 0x100000001ULL) * 0x9E3779B97F4A7C15ULL | 1;
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

/* Stamp a block of n >= 8 bytes with its size and a tag (first 8 bytes, and the last byte),
 * so that whoever frees it can check that nobody else was handed the same memory. */
static inline void wl_stamp(void *p, size_t n, uint32_t tag) {
  uint32_t h[2] = {(uint32_t)n, tag};
  memcpy(p, h, sizeof h);
  ((unsigned char *)p)[n - 1] = (unsigned char)(n ^ tag);
}

/* The stamped size of a block, or 0 if the stamp is damaged (or says more than max bytes). */
static inline size_t wl_stamp_check(const void *p, size_t max) {
  uint32_t h[2];
  memcpy(h, p, sizeof h);
  if (h[0] < 8 || h[0] > max) return 0;
  if (((const unsigned char *)p)[h[0] - 1] != (unsigned char)(h[0] ^ h[1])) return 0;
  return h[0];
}

static inline void wl_result(const char *name, uint64_t ops, double secs, const char *extra) {
  printf("RESULT name=%s ops=%llu secs=%.4f mops=%.3f%s%s\n", name, (unsigned long long)ops, secs,
         secs > 0 ? (double)ops / secs / 1e6 : 0.0, extra && *extra ? " " : "", extra ? extra : "");
  fflush(stdout);
}

#endif
