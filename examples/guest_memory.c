/* Guest memory for a virtual machine monitor, laid out in one mapalloc arena.
 *
 * A VMM-like parent process:
 *   1. reserves the guest-physical address space as one ma_arena (DONTDUMP, DONTFORK, as
 *      VMMs do for guest RAM);
 *   2. backs guest RAM with two memfds around a hole (the PCI hole below 4 GiB, scaled
 *      down to MiB), sealed against shrinking so no one can truncate RAM under the guest;
 *   3. passes the memfds over a unix socket (SCM_RIGHTS) to a forked device backend (as a
 *      vhost-user backend gets its memory table), which maps them into its own arena and
 *      writes a pattern into guest RAM that the VMM then reads back;
 *   4. balloons a range out: MA_ADV_REMOVE frees the memfd's blocks (st_blocks falls),
 *      ma_arena_remove_mapping makes the guest range fault; the backend sees zeros there;
 *   5. maps a device window (a BAR backed by its own memfd) into the hole, moves it, and
 *      maps it out again.
 * Prints each step; exits non-zero on any failed check.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "mapalloc/arena.h"

#define MIB ((size_t)1 << 20)

/* Guest-physical layout (the real thing: RAM below 3 GiB, PCI hole 3-4 GiB, RAM above). */
#define LOW_RAM_GPA   0
#define LOW_RAM_SIZE  (3 * MIB)
#define HOLE_GPA      (3 * MIB)
#define HOLE_SIZE     (1 * MIB)
#define HIGH_RAM_GPA  (4 * MIB)
#define HIGH_RAM_SIZE (4 * MIB)
#define GUEST_SIZE    (8 * MIB)
#define BALLOON_GPA   (5 * MIB)
#define BALLOON_SIZE  (1 * MIB)
#define BAR_SIZE      (64 * 1024)

static pid_t backend_pid = -1;
static const char *who = "vmm";

static void fail(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "[%s] FAILED: ", who);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  if (backend_pid > 0) kill(backend_pid, SIGKILL);
  exit(1);
}

#define CHECK(cond, ...)                                                                           \
  do {                                                                                             \
    if (!(cond)) fail(__VA_ARGS__);                                                                \
  } while (0)

#define CHECK_OK(call)                                                                             \
  do {                                                                                             \
    int r_ = (call);                                                                               \
    if (r_ != 0) fail("%s returned %d (%s)", #call, r_, strerror(-r_));                            \
  } while (0)

static void say(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  printf("[%s] ", who);
  vprintf(fmt, ap);
  putchar('\n');
  fflush(stdout);
  va_end(ap);
}

/* The value the backend writes at each 8-byte word of guest RAM: derived from the
 * guest-physical address so a misplaced mapping cannot pass. */
static uint64_t pattern(uint64_t gpa) {
  return (gpa * 0x9e3779b97f4a7c15ull) ^ 0xfeedface;
}

/* ---- The vhost-user-like protocol --------------------------------------------------------- */

enum { MSG_MEM_TABLE = 1, MSG_CHECK_BALLOON, MSG_QUIT, MSG_ACK = 100, MSG_NAK };

struct region {
  uint64_t gpa, size, fd_off;
};

struct msg {
  int type;
  int nregions;
  struct region regions[2];
  uint64_t gpa, len; /* MSG_CHECK_BALLOON */
};

static void send_msg(int sock, const struct msg *m, const int *fds, int nfds) {
  struct iovec iov = {.iov_base = (void *)m, .iov_len = sizeof *m};
  union {
    char buf[CMSG_SPACE(2 * sizeof(int))];
    struct cmsghdr align;
  } u;
  struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
  if (nfds > 0) {
    mh.msg_control = u.buf;
    mh.msg_controllen = CMSG_SPACE(nfds * sizeof(int));
    struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(nfds * sizeof(int));
    memcpy(CMSG_DATA(c), fds, nfds * sizeof(int));
  }
  CHECK(sendmsg(sock, &mh, 0) == (ssize_t)sizeof *m, "sendmsg: %s", strerror(errno));
}

/* Receives one message and up to 2 descriptors; returns how many descriptors came. */
static int recv_msg(int sock, struct msg *m, int *fds) {
  struct iovec iov = {.iov_base = m, .iov_len = sizeof *m};
  union {
    char buf[CMSG_SPACE(2 * sizeof(int))];
    struct cmsghdr align;
  } u;
  struct msghdr mh = {
      .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof u.buf};
  ssize_t n = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC);
  CHECK(n == (ssize_t)sizeof *m, "recvmsg: %zd (%s)", n, strerror(errno));
  CHECK(!(mh.msg_flags & MSG_CTRUNC), "descriptors truncated");
  int nfds = 0;
  for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
      nfds = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
      memcpy(fds, CMSG_DATA(c), nfds * sizeof(int));
    }
  }
  return nfds;
}

static void reply(int sock, int type) {
  struct msg m = {.type = type};
  send_msg(sock, &m, NULL, 0);
}

static int wait_reply(int sock) {
  struct msg m;
  int fds[2];
  CHECK(recv_msg(sock, &m, fds) == 0, "unexpected descriptors in a reply");
  return m.type;
}

/* ---- The device backend (child process) ---------------------------------------------------- */

static void backend(int sock) {
  who = "backend";
  backend_pid = -1;
  ma_arena *arena = NULL;
  for (;;) {
    struct msg m;
    int fds[2] = {-1, -1};
    int nfds = recv_msg(sock, &m, fds);
    if (m.type == MSG_MEM_TABLE) {
      CHECK(nfds == m.nregions && nfds == 2, "memory table: %d descriptors", nfds);
      CHECK_OK(ma_arena_create(GUEST_SIZE, MA_MAP_DONTDUMP, &arena));
      char *base = ma_arena_base(arena);
      for (int i = 0; i < nfds; i++) {
        const struct region *r = &m.regions[i];
        CHECK_OK(ma_arena_add_fd_mapping(arena, r->gpa, r->size, fds[i], r->fd_off,
                                         MA_PROT_READ | MA_PROT_WRITE));
        close(fds[i]); /* the mapping keeps the file; the arena keeps no descriptor */
        for (uint64_t gpa = r->gpa; gpa < r->gpa + r->size; gpa += 8)
          *(uint64_t *)(base + gpa) = pattern(gpa);
        say("mapped region gpa [%#llx, %#llx) from received memfd, wrote pattern",
            (unsigned long long)r->gpa, (unsigned long long)(r->gpa + r->size));
      }
      reply(sock, MSG_ACK);
    } else if (m.type == MSG_CHECK_BALLOON) {
      /* The VMM punched the balloon out of the memfd: our mapping of it reads zeros, the
       * rest of guest RAM is intact. */
      const char *base = ma_arena_base(arena);
      bool ok = true;
      for (uint64_t gpa = m.gpa; gpa < m.gpa + m.len; gpa += 8)
        ok &= *(const uint64_t *)(base + gpa) == 0;
      for (uint64_t gpa = HIGH_RAM_GPA; gpa < m.gpa; gpa += 4096)
        ok &= *(const uint64_t *)(base + gpa) == pattern(gpa);
      say("balloon [%#llx, %#llx) reads as zeros here too: %s", (unsigned long long)m.gpa,
          (unsigned long long)(m.gpa + m.len), ok ? "yes" : "NO");
      reply(sock, ok ? MSG_ACK : MSG_NAK);
    } else if (m.type == MSG_QUIT) {
      ma_arena_destroy(arena);
      say("done");
      exit(0);
    } else {
      fail("unknown message %d", m.type);
    }
  }
}

/* ---- The VMM (parent process) --------------------------------------------------------------- */

static int make_ram(const char *name, size_t size) {
  int fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
  CHECK(fd >= 0, "memfd_create: %s", strerror(errno));
  CHECK(ftruncate(fd, (off_t)size) == 0, "ftruncate: %s", strerror(errno));
  CHECK(fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) == 0, "seal: %s",
        strerror(errno));
  return fd;
}

static long long blocks_kib(int fd) {
  struct stat st;
  CHECK(fstat(fd, &st) == 0, "fstat: %s", strerror(errno));
  return (long long)st.st_blocks / 2;
}

/* Does reading `p` raise SIGSEGV? That is what a guest access to an unmapped
 * guest-physical range looks like to the VMM. Probed in this process (a fork child would
 * not see the arena's DONTFORK mappings at all). */
static sigjmp_buf probe_env;

static void probe_handler(int sig) {
  (void)sig;
  siglongjmp(probe_env, 1);
}

static bool faults(volatile const char *p) {
  struct sigaction sa = {.sa_handler = probe_handler}, old;
  sigemptyset(&sa.sa_mask);
  CHECK(sigaction(SIGSEGV, &sa, &old) == 0, "sigaction: %s", strerror(errno));
  volatile bool faulted = false;
  if (sigsetjmp(probe_env, 1) == 0)
    (void)p[0];
  else
    faulted = true;
  sigaction(SIGSEGV, &old, NULL);
  return faulted;
}

static int print_one(const ma_arena_mapping *m, void *ctx) {
  (void)ctx;
  printf("        gpa [%#9zx, %#9zx) %5zu KiB  %s %-6llu @ %#llx  %s%s\n", m->off, m->off + m->len,
         m->len >> 10, m->anon ? "anon" : "ino", (unsigned long long)m->ino,
         (unsigned long long)m->fd_off, m->prot & MA_PROT_READ ? "r" : "-",
         m->prot & MA_PROT_WRITE ? "w" : "-");
  return 0;
}

static void print_layout(const ma_arena *a, const char *when) {
  say("layout %s (%zu mappings):", when, ma_arena_count(a));
  ma_arena_foreach(a, print_one, NULL);
}

int main(void) {
  size_t ps = (size_t)sysconf(_SC_PAGESIZE);
  CHECK(BALLOON_SIZE % ps == 0 && BAR_SIZE % ps == 0, "page size %zu too large", ps);
  setvbuf(stdout, NULL, _IOLBF, 0);

  int sv[2];
  CHECK(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) == 0, "socketpair: %s",
        strerror(errno));
  backend_pid = fork();
  CHECK(backend_pid >= 0, "fork: %s", strerror(errno));
  if (backend_pid == 0) {
    close(sv[0]);
    backend(sv[1]); /* never returns */
  }
  close(sv[1]);
  int sock = sv[0];

  /* 1-2. Reserve guest-physical space; back RAM with sealed memfds around the hole. */
  ma_arena *guest = NULL;
  CHECK_OK(ma_arena_create(GUEST_SIZE, MA_MAP_DONTDUMP | MA_MAP_DONTFORK, &guest));
  char *base = ma_arena_base(guest);
  say("reserved %zu MiB of guest-physical space at %p", GUEST_SIZE / MIB, (void *)base);
  int low = make_ram("guest-ram-low", LOW_RAM_SIZE);
  int high = make_ram("guest-ram-high", HIGH_RAM_SIZE);
  CHECK(ftruncate(high, HIGH_RAM_SIZE / 2) == -1 && errno == EPERM,
        "a shrink-sealed memfd must refuse ftruncate");
  say("RAM memfds sealed: shrinking refused (EPERM)");
  CHECK_OK(ma_arena_add_fd_mapping(guest, LOW_RAM_GPA, LOW_RAM_SIZE, low, 0,
                                   MA_PROT_READ | MA_PROT_WRITE));
  CHECK_OK(ma_arena_add_fd_mapping(guest, HIGH_RAM_GPA, HIGH_RAM_SIZE, high, 0,
                                   MA_PROT_READ | MA_PROT_WRITE));
  print_layout(guest, "with RAM around the hole");
  CHECK(faults(base + HOLE_GPA), "the hole must fault");
  CHECK(!faults(base + HIGH_RAM_GPA) && !faults(base + LOW_RAM_SIZE - 1), "RAM must not fault");
  CHECK(ma_arena_add_fd_mapping(guest, HIGH_RAM_GPA - ps, 2 * ps, low, 0, MA_PROT_READ) == -EEXIST,
        "a mapping over RAM must be refused");
  say("the hole faults; a mapping overlapping RAM is refused with EEXIST");

  /* 3. Hand RAM to the device backend, which writes a pattern into it. */
  struct msg m = {.type = MSG_MEM_TABLE, .nregions = 2};
  m.regions[0] = (struct region){LOW_RAM_GPA, LOW_RAM_SIZE, 0};
  m.regions[1] = (struct region){HIGH_RAM_GPA, HIGH_RAM_SIZE, 0};
  int fds[2] = {low, high};
  send_msg(sock, &m, fds, 2);
  say("sent the memory table and both memfds over SCM_RIGHTS");
  CHECK(wait_reply(sock) == MSG_ACK, "backend did not map the memory");
  size_t words = 0;
  for (size_t gpa = 0; gpa < GUEST_SIZE; gpa += 8) {
    if (gpa >= HOLE_GPA && gpa < HOLE_GPA + HOLE_SIZE) continue;
    CHECK(*(uint64_t *)(base + gpa) == pattern(gpa), "pattern mismatch at gpa %#zx", gpa);
    words++;
  }
  say("read back the backend's pattern: %zu words, all correct", words);
  CHECK_OK(ma_arena_flush(guest, LOW_RAM_GPA, LOW_RAM_SIZE, false));

  /* 4. Balloon 1 MiB of high RAM out: free the memfd blocks, then unmap the range. */
  long long before = blocks_kib(high);
  CHECK_OK(ma_arena_advise(guest, BALLOON_GPA, BALLOON_SIZE, MA_ADV_REMOVE));
  long long after = blocks_kib(high);
  CHECK_OK(ma_arena_remove_mapping(guest, BALLOON_GPA, BALLOON_SIZE));
  say("balloon [%#zx, %#zx): high memfd allocated %lld KiB -> %lld KiB", (size_t)BALLOON_GPA,
      (size_t)(BALLOON_GPA + BALLOON_SIZE), before, after);
  CHECK(before - after >= (long long)(BALLOON_SIZE >> 10), "MA_ADV_REMOVE must free blocks");
  CHECK(faults(base + BALLOON_GPA), "a ballooned range must fault");
  CHECK(*(uint64_t *)(base + BALLOON_GPA + BALLOON_SIZE) == pattern(BALLOON_GPA + BALLOON_SIZE),
        "RAM after the balloon intact");
  print_layout(guest, "with the balloon inflated (high RAM split in two)");
  CHECK(ma_arena_count(guest) == 3, "high RAM split into two pieces");
  m = (struct msg){.type = MSG_CHECK_BALLOON, .gpa = BALLOON_GPA, .len = BALLOON_SIZE};
  send_msg(sock, &m, NULL, 0);
  CHECK(wait_reply(sock) == MSG_ACK, "backend saw stale data in the balloon");
  /* Deflate: the range comes back, zero-filled, backed by the same memfd offset. */
  CHECK_OK(ma_arena_add_fd_mapping(guest, BALLOON_GPA, BALLOON_SIZE, high,
                                   BALLOON_GPA - HIGH_RAM_GPA, MA_PROT_READ | MA_PROT_WRITE));
  CHECK(*(uint64_t *)(base + BALLOON_GPA) == 0, "deflated memory reads as zeros");
  say("balloon deflated: the range is mapped again and reads as zeros");

  /* 5. A device window (a 64 KiB BAR backed by its own memfd) in the hole. */
  int bar = memfd_create("device-bar", MFD_CLOEXEC);
  CHECK(bar >= 0 && ftruncate(bar, BAR_SIZE) == 0, "bar memfd: %s", strerror(errno));
  CHECK_OK(
      ma_arena_add_fd_mapping(guest, HOLE_GPA, BAR_SIZE, bar, 0, MA_PROT_READ | MA_PROT_WRITE));
  strcpy(base + HOLE_GPA, "device registers");
  print_layout(guest, "with the device window mapped at the start of the hole");
  /* The guest reprograms the BAR: unmap it, map it higher in the hole. */
  size_t moved = HOLE_GPA + HOLE_SIZE / 2;
  CHECK_OK(ma_arena_remove_mapping(guest, HOLE_GPA, BAR_SIZE));
  CHECK(faults(base + HOLE_GPA), "the old window must fault");
  CHECK_OK(ma_arena_add_fd_mapping(guest, moved, BAR_SIZE, bar, 0, MA_PROT_READ | MA_PROT_WRITE));
  CHECK(strcmp(base + moved, "device registers") == 0, "the BAR keeps its contents");
  say("device window moved to %#zx, contents kept", moved);
  CHECK_OK(ma_arena_remove_mapping(guest, moved, BAR_SIZE));
  CHECK(faults(base + moved), "the unmapped window must fault");
  CHECK(ma_arena_remove_mapping(guest, HOLE_GPA, HOLE_SIZE) == -ENOENT, "nothing left in the hole");
  say("device window mapped out: the hole is empty and faults again");
  close(bar);

  /* Shut down. */
  m = (struct msg){.type = MSG_QUIT};
  send_msg(sock, &m, NULL, 0);
  int st;
  CHECK(waitpid(backend_pid, &st, 0) == backend_pid, "waitpid");
  backend_pid = -1;
  CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "backend failed (status %#x)", st);
  ma_arena_destroy(guest);
  close(low);
  close(high);
  close(sock);
  say("all checks passed");
  return 0;
}
