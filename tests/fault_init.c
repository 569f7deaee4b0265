/* Fault sweep of the start-up path (built with -DMAPALLOC_FAULT_INJECTION=ON; see
 * docs/testing.md): the heap initialises in a constructor (its first segment, the segment
 * map leaf that covers it, their names), before any test could arm the hook. This program arms
 * it in an earlier constructor from MAPALLOC_FAULT_AT=N, so the Nth call of start-up fails,
 * and main checks that the heap and a pool work anyway (a failed start-up must be tried
 * again, not remembered) and that start-up left nothing behind.
 *
 * Without MAPALLOC_FAULT_AT it is the driver: it runs itself once to count start-up's calls
 * K, then for N = 1..K, and exits non-zero if any run fails.
 */
#define MA_FAULT_INJECTION 1

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "mapalloc/heap.h"
#include "mapalloc/pool.h"
#include "os/fault.h"

static long fault_at = -1;

__attribute__((constructor(101))) static void arm_early(void) {
  const char *e = getenv("MAPALLOC_FAULT_AT");
  if (!e) return;
  fault_at = strtol(e, NULL, 10);
  os_fault_arm((unsigned long)fault_at, ENOMEM); /* 0: count only */
}

/* Bytes of address space mapped (from /proc/self/maps, read by hand: no malloc). */
static size_t mapped_bytes(void) {
  static char buf[1 << 20];
  FILE *f = fopen("/proc/self/maps", "r");
  if (!f) return 0;
  size_t n = fread(buf, 1, sizeof buf - 1, f), total = 0;
  fclose(f);
  buf[n] = 0;
  for (char *l = buf; *l;) {
    char *dash;
    unsigned long a = strtoul(l, &dash, 16), b = strtoul(dash + 1, NULL, 16);
    total += b - a;
    char *nl = strchr(l, '\n');
    if (!nl) break;
    l = nl + 1;
  }
  return total;
}

static int child(void) {
  unsigned long calls = os_fault_calls(), fired = os_fault_fired();
  os_fault_disarm();
  void *p = ma_malloc(100);
  if (!p) {
    fprintf(stderr, "fault_init: start-up call %ld failed: malloc then fails (errno %d)\n",
            fault_at, errno);
    return 1;
  }
  memset(p, 1, 100);
  ma_free(p);
  ma_pool *pool;
  ma_pool_opts o = {.obj_size = 64};
  void *q = NULL;
  if (ma_pool_create(&o, &pool) != 0 || !(q = ma_pool_alloc(pool))) {
    fprintf(stderr, "fault_init: start-up call %ld failed: a pool then fails\n", fault_at);
    return 1;
  }
  ma_pool_free(pool, q);
  ma_pool_destroy(pool);
  (void)fired;
  printf("%lu %zu\n", calls, mapped_bytes());
  return 0;
}

/* Runs the program with the Nth start-up call failing; its system calls and mapped bytes. */
static int run(const char *self, long n, unsigned long *calls, size_t *mapped) {
  char at[32], out[64] = {0};
  snprintf(at, sizeof at, "%ld", n);
  int fd[2];
  if (pipe(fd) != 0) return -1;
  pid_t pid = fork();
  if (pid == 0) {
    dup2(fd[1], 1);
    setenv("MAPALLOC_FAULT_AT", at, 1);
    execl(self, self, (char *)NULL);
    _exit(127);
  }
  close(fd[1]);
  ssize_t got = read(fd[0], out, sizeof out - 1);
  close(fd[0]);
  int st;
  waitpid(pid, &st, 0);
  if (!WIFEXITED(st) || WEXITSTATUS(st) != 0 || got <= 0) return -1;
  char *end;
  *calls = strtoul(out, &end, 10);
  *mapped = strtoul(end, NULL, 10);
  return 0;
}

int main(int argc, char **argv) {
  (void)argc;
  if (fault_at >= 0) return child();
  unsigned long k, c;
  size_t base, mapped;
  if (run(argv[0], 0, &k, &base) != 0 || k == 0) {
    fprintf(stderr, "fault_init: the counting run failed or made no call\n");
    return 1;
  }
  int bad = 0;
  for (unsigned long n = 1; n <= k; n++) {
    if (run(argv[0], (long)n, &c, &mapped) != 0) {
      bad = 1;
    } else if (mapped > base + ((size_t)1 << 20)) { /* a segment is 4 MiB, a map leaf 256 KiB */
      fprintf(stderr, "fault_init: start-up call %lu failed: %zu bytes more mapped\n", n,
              mapped - base);
      bad = 1;
    }
  }
  printf("fault sweep start-up: %lu calls, %s\n", k, bad ? "FAILED" : "all recovered");
  return bad;
}
