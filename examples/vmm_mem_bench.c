/* The host side of a VMM's guest-memory operations, timed on arena memory against plain
 * mmap memory (a benchmark, not a test; no KVM needed — examples/kvm_vmm.c --bench times the
 * guest itself):
 *   - window swap: a 2 MiB device window's file replaced by another (arena: remove_mapping +
 *     add_fd_mapping; peer: one mmap MAP_FIXED over the old file);
 *   - balloon: 1 GiB of populated memfd RAM freed 2 MiB at a time (arena: MA_ADV_REMOVE;
 *     peers: madvise(MADV_REMOVE), fallocate(PUNCH_HOLE));
 *   - restore of N GiB of RAM from a snapshot file: eager (read the whole file into RAM, then
 *     checksum it) against lazy (userfaultfd missing mode: each page is copied from the file
 *     on first touch by a handler thread while the checksum runs), with the time to the first
 *     byte available and to a full checksum. A host thread plays the guest here.
 *
 *   example_vmm_mem_bench [--restore-gib 1,4] [--rounds N]
 *
 * Rounds are interleaved (arena, then peer, alternately); the tables give medians and the
 * ratio arena/peer. The snapshot files go to $TMPDIR (default /tmp) and are read warm from
 * the page cache, as a VMM restoring a snapshot it just took.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "mapalloc/arena.h"

#define MIB  ((size_t)1 << 20)
#define GIB  ((size_t)1 << 30)
#define PAGE ((size_t)4096)

static void die(const char *what, int err) {
  fprintf(stderr, "vmm_mem_bench: %s: %s\n", what, strerror(err));
  exit(1);
}

#define SYS(call)                                                                                  \
  do {                                                                                             \
    if ((call) < 0) die(#call, errno);                                                             \
  } while (0)
#define OK(call)                                                                                   \
  do {                                                                                             \
    int r_ = (call);                                                                               \
    if (r_) die(#call, -r_);                                                                       \
  } while (0)

static double now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static int cmp_double(const void *x, const void *y) {
  double a = *(const double *)x, b = *(const double *)y;
  return (a > b) - (a < b);
}

static double median(double *v, int n) {
  qsort(v, (size_t)n, sizeof *v, cmp_double);
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static int memfd(const char *name, size_t size) {
  int fd = memfd_create(name, MFD_CLOEXEC);
  SYS(fd);
  SYS(ftruncate(fd, (off_t)size));
  return fd;
}

static void populate(char *p, size_t len) {
  for (size_t i = 0; i < len; i += PAGE) p[i] = (char)(i / PAGE + 1);
}

/* ---- RAM: an arena, or the peer (a reservation with the memfd mmap'ed over it) ----------- */

struct ram {
  bool arena;
  ma_arena *a;
  char *mem;
  size_t len;
};

static struct ram ram_map(bool arena, int fd, size_t len) {
  struct ram r = {.arena = arena, .len = len};
  if (arena) {
    OK(ma_arena_create(len, MA_MAP_DONTDUMP, &r.a));
    OK(ma_arena_add_fd_mapping(r.a, 0, len, fd, 0, MA_PROT_READ | MA_PROT_WRITE));
    r.mem = ma_arena_base(r.a);
  } else {
    r.mem = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (r.mem == MAP_FAILED) die("mmap", errno);
    madvise(r.mem, len, MADV_DONTDUMP);
  }
  return r;
}

static void ram_unmap(struct ram *r) {
  if (r->arena)
    ma_arena_destroy(r->a);
  else
    munmap(r->mem, r->len);
}

static void ram_register(const struct ram *r, int uffd) {
  if (r->arena) {
    OK(ma_arena_uffd_register(r->a, 0, r->len, uffd, MA_UFFD_MISSING));
    return;
  }
  struct uffdio_register reg = {.range = {.start = (uintptr_t)r->mem, .len = r->len},
                                .mode = UFFDIO_REGISTER_MODE_MISSING};
  SYS(ioctl(uffd, UFFDIO_REGISTER, &reg));
}

static int ram_copy(const struct ram *r, int uffd, size_t off, const void *src) {
  if (r->arena) return ma_arena_uffd_copy(r->a, off, src, PAGE, uffd, NULL);
  struct uffdio_copy c = {.dst = (uintptr_t)r->mem + off, .src = (uintptr_t)src, .len = PAGE};
  return ioctl(uffd, UFFDIO_COPY, &c) == 0 ? 0 : -errno;
}

/* ---- Window swap ---------------------------------------------------------------------------- */

static double window_swap_us(bool arena, int fa, int fb, int reps) {
  const size_t win = 2 * MIB;
  double *t = malloc(sizeof(double) * (size_t)reps);
  if (!t) die("malloc", ENOMEM);
  ma_arena *a = NULL;
  char *base;
  if (arena) {
    OK(ma_arena_create(4 * MIB, 0, &a));
    base = ma_arena_base(a);
    OK(ma_arena_add_fd_mapping(a, 0, win, fa, 0, MA_PROT_READ | MA_PROT_WRITE));
  } else {
    base = mmap(NULL, win, PROT_READ | PROT_WRITE, MAP_SHARED, fa, 0);
    if (base == MAP_FAILED) die("mmap", errno);
  }
  for (int i = 0; i < reps; i++) {
    int next = i % 2 ? fa : fb;
    double t0 = now_us();
    if (arena) {
      OK(ma_arena_remove_mapping(a, 0, win));
      OK(ma_arena_add_fd_mapping(a, 0, win, next, 0, MA_PROT_READ | MA_PROT_WRITE));
    } else if (mmap(base, win, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, next, 0) != base) {
      die("mmap MAP_FIXED", errno);
    }
    volatile char c = base[win - 1]; /* the new file is visible (first access faults it in) */
    (void)c;
    t[i] = now_us() - t0;
  }
  double m = median(t, reps);
  free(t);
  if (arena)
    ma_arena_destroy(a);
  else
    munmap(base, win);
  return m;
}

/* ---- Balloon ------------------------------------------------------------------------------- */

enum balloon_kind { BAL_ARENA, BAL_MADVISE, BAL_PUNCH };

static double balloon_gibs(enum balloon_kind kind, size_t len) {
  int fd = memfd("balloon", len);
  struct ram r = ram_map(kind == BAL_ARENA, fd, len);
  populate(r.mem, len);
  double t0 = now_us();
  for (size_t off = 0; off < len; off += 2 * MIB) {
    if (kind == BAL_ARENA)
      OK(ma_arena_advise(r.a, off, 2 * MIB, MA_ADV_REMOVE));
    else if (kind == BAL_MADVISE)
      SYS(madvise(r.mem + off, 2 * MIB, MADV_REMOVE));
    else
      SYS(fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off, (off_t)(2 * MIB)));
  }
  double s = (now_us() - t0) / 1e6;
  ram_unmap(&r);
  close(fd);
  return (double)len / GIB / s;
}

/* ---- Restore -------------------------------------------------------------------------------- */

struct server {
  const struct ram *r;
  int uffd, snap, stop;
  size_t served;
};

static void *serve(void *p) {
  struct server *s = p;
  char *page = aligned_alloc(PAGE, PAGE);
  if (!page) die("aligned_alloc", ENOMEM);
  for (;;) {
    struct pollfd pfd[2] = {{.fd = s->uffd, .events = POLLIN}, {.fd = s->stop, .events = POLLIN}};
    if (poll(pfd, 2, -1) < 0) continue;
    if (pfd[1].revents) break;
    struct uffd_msg msg;
    if (read(s->uffd, &msg, sizeof msg) != (ssize_t)sizeof msg) continue;
    if (msg.event != UFFD_EVENT_PAGEFAULT) continue;
    size_t off = ((uintptr_t)msg.arg.pagefault.address - (uintptr_t)s->r->mem) & ~(PAGE - 1);
    if (pread(s->snap, page, PAGE, (off_t)off) != (ssize_t)PAGE) die("pread snapshot", errno);
    int e = ram_copy(s->r, s->uffd, off, page);
    if (e && e != -EEXIST) die("UFFDIO_COPY", -e);
    s->served++;
  }
  free(page);
  return NULL;
}

static uint64_t checksum(const char *p, size_t len) {
  uint64_t cs = 0xcbf29ce484222325ull;
  for (size_t i = 0; i < len; i += 8) cs = (cs ^ *(const uint64_t *)(p + i)) * 0x100000001b3ull;
  return cs;
}

struct restore_t {
  double first, full; /* ms from the start to the first byte read, to the full checksum */
  uint64_t sum;
};

static struct restore_t restore_once(bool arena, bool lazy, int snap, size_t len) {
  struct restore_t t;
  double t0 = now_us();
  int fd = memfd("restored-ram", len);
  struct ram r = ram_map(arena, fd, len);
  struct server s = {.r = &r, .snap = snap};
  pthread_t th;
  int stop[2];
  if (lazy) {
    s.uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
    SYS(s.uffd);
    struct uffdio_api api = {.api = UFFD_API};
    SYS(ioctl(s.uffd, UFFDIO_API, &api));
    ram_register(&r, s.uffd);
    SYS(pipe2(stop, O_CLOEXEC));
    s.stop = stop[0];
    if (pthread_create(&th, NULL, serve, &s)) die("pthread_create", EAGAIN);
  } else {
    for (size_t off = 0; off < len;) {
      ssize_t n = pread(snap, r.mem + off, len - off, (off_t)off);
      if (n <= 0) die("read snapshot", n < 0 ? errno : EIO);
      off += (size_t)n;
    }
  }
  volatile char c = r.mem[0];
  (void)c;
  t.first = (now_us() - t0) / 1e3;
  t.sum = checksum(r.mem, len);
  t.full = (now_us() - t0) / 1e3;
  if (lazy) {
    if (write(stop[1], "", 1) != 1) die("write", errno);
    pthread_join(th, NULL);
    if (s.served != len / PAGE) {
      fprintf(stderr, "vmm_mem_bench: %zu pages served for %zu\n", s.served, len / PAGE);
      exit(1);
    }
    close(stop[0]);
    close(stop[1]);
    close(s.uffd);
  }
  ram_unmap(&r);
  close(fd);
  return t;
}

static int make_snapshot(size_t len) {
  const char *tmp = getenv("TMPDIR");
  char path[4096];
  snprintf(path, sizeof path, "%s/vmm-mem-bench-XXXXXX", tmp && *tmp ? tmp : "/tmp");
  int fd = mkstemp(path);
  SYS(fd);
  unlink(path);
  uint64_t *buf = malloc(8 * MIB);
  if (!buf) die("malloc", ENOMEM);
  for (size_t off = 0; off < len; off += 8 * MIB) {
    for (size_t i = 0; i < 8 * MIB / 8; i++) buf[i] = (off / 8 + i) * 0x9e3779b97f4a7c15ull;
    if (pwrite(fd, buf, 8 * MIB, (off_t)off) != (ssize_t)(8 * MIB)) die("write snapshot", errno);
  }
  free(buf);
  return fd;
}

/* ---- Main ------------------------------------------------------------------------------------ */

int main(int argc, char **argv) {
  int rounds = 5;
  size_t gibs[8] = {1, 4};
  int ngib = 2;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--rounds") == 0 && i + 1 < argc) {
      rounds = atoi(argv[++i]);
    } else if (strcmp(argv[i], "--restore-gib") == 0 && i + 1 < argc) {
      ngib = 0;
      for (char *t = strtok(argv[++i], ","); t && ngib < 8; t = strtok(NULL, ","))
        gibs[ngib++] = strtoul(t, NULL, 10);
    } else {
      fprintf(stderr, "usage: example_vmm_mem_bench [--restore-gib 1,4] [--rounds N]\n");
      return 2;
    }
  }
  if (rounds < 1 || rounds > 99) rounds = 5;
  setvbuf(stdout, NULL, _IOLBF, 0);

  /* Window swap. */
  int fa = memfd("window-a", 2 * MIB), fb = memfd("window-b", 2 * MIB);
  double ws[2][99];
  for (int r = 0; r < rounds; r++)
    for (int k = 0; k < 2; k++) ws[(k + r) % 2][r] = window_swap_us((k + r) % 2 == 0, fa, fb, 400);
  double wa = median(ws[0], rounds), wp = median(ws[1], rounds);
  printf("window swap (2 MiB window, file replaced, first access), median of %d x 400\n", rounds);
  printf("  %-36s %8.1f us\n  %-36s %8.1f us\n  %-36s %8.2f\n", "arena remove + add", wa,
         "plain mmap MAP_FIXED over the old", wp, "ratio arena/peer", wa / wp);
  close(fa);
  close(fb);

  /* Balloon. */
  double bal[3][99];
  for (int r = 0; r < rounds; r++)
    for (int k = 0; k < 3; k++) bal[(k + r) % 3][r] = balloon_gibs((k + r) % 3, GIB);
  double ba = median(bal[0], rounds), bm = median(bal[1], rounds), bp = median(bal[2], rounds);
  printf("balloon (1 GiB of populated memfd RAM freed in 2 MiB steps), median of %d\n", rounds);
  printf("  %-36s %8.1f GiB/s\n  %-36s %8.1f GiB/s\n  %-36s %8.1f GiB/s\n", "arena MA_ADV_REMOVE",
         ba, "madvise(MADV_REMOVE)", bm, "fallocate(PUNCH_HOLE)", bp);

  /* Restore. */
  printf("restore (snapshot file in the page cache; a host thread checksums RAM), median of %d\n",
         rounds);
  printf("  %-5s %-6s %-7s %12s %12s %10s\n", "RAM", "how", "RAM on", "first byte", "checksum",
         "vs mmap");
  for (int g = 0; g < ngib; g++) {
    size_t len = gibs[g] * GIB;
    int snap = make_snapshot(len);
    double first[4][99], full[4][99];
    uint64_t sum = 0;
    for (int r = 0; r < rounds; r++) {
      for (int k = 0; k < 4; k++) {
        int kind = (k + r) % 4; /* bit 0: lazy, bit 1: plain mmap */
        struct restore_t t = restore_once(!(kind & 2), kind & 1, snap, len);
        if (sum && t.sum != sum) die("restored RAM differs between runs", EIO);
        sum = t.sum;
        first[kind][r] = t.first;
        full[kind][r] = t.full;
      }
    }
    for (int kind = 0; kind < 4; kind++) {
      double f = median(first[kind], rounds), c = median(full[kind], rounds);
      double peer = kind & 2 ? c : median(full[kind | 2], rounds);
      printf("  %2zu GiB %-6s %-7s %9.1f ms %9.1f ms %10.3f\n", gibs[g],
             kind & 1 ? "lazy" : "eager", kind & 2 ? "mmap" : "arena", f, c, c / peer);
    }
    close(snap);
  }
  return 0;
}
