/* A small but real KVM monitor whose guest-physical address space is one mapalloc arena.
 *
 *   example_kvm_vmm [--guest GUEST.bin] [--low-mib N] [--high-mib N]
 *
 * Guest RAM is two memfds, one below a hole and one from 4 GiB (like the PCI hole of a PC),
 * mapped into an arena sized for the whole layout (most of it never committed) with
 * MA_MAP_HUGE_TRY, one KVM memory slot per RAM region. The guest (examples/kvm/guest.c, a
 * flat binary built by CMake) runs in 64-bit long mode on page tables and a GDT this
 * monitor writes into guest RAM, and reports each step over port I/O; the monitor checks
 * every value (examples/kvm/protocol.h lists the steps):
 *   - the guest fills every word of both work regions, the monitor reads them all back;
 *   - a device window in the hole (its own memfd and memory slot) is swapped for another
 *     file between two exits (remove_mapping + add_fd_mapping: the kernel's MMU notifiers
 *     make the guest see the new file at once), then removed with its slot: the guest's read
 *     becomes an MMIO exit answered as an absent device (all ones);
 *   - ballooning: the guest hands a range back, MA_ADV_REMOVE frees the memfd's blocks
 *     (st_blocks falls), the guest reads zeros;
 *   - a device backend process, given the RAM memfds over SCM_RIGHTS as vhost-user does,
 *     writes into guest RAM while the guest runs and polls for it.
 * Exits 0 when every check passed, 1 on a failed check, 77 (ctest's SKIP_RETURN_CODE) with
 * the reason when /dev/kvm is missing or refuses to create a VM.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/kvm.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "kvm/protocol.h"
#include "mapalloc/arena.h"

#define MIB       ((uint64_t)1 << 20)
#define PAGE      4096ull
#define EXIT_SKIP 77
#define SLOT_LOW  0
#define SLOT_HIGH 1
#define SLOT_WIN  2
#define TIMEOUT_S 240 /* a nested kvm-pvm guest touches a page in ~8 ms: tests/kvm.cmake */

/* ---- Reporting --------------------------------------------------------------------------- */

static const char *who = "vmm";
static pid_t backend_pid = -1;

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

/* /dev/kvm is missing or refuses us: not a failure of the code under test. */
static void skip(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  printf("[%s] SKIPPED: ", who);
  vprintf(fmt, ap);
  putchar('\n');
  va_end(ap);
  fflush(stdout);
  exit(EXIT_SKIP);
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

#define CHECK_SYS(call) CHECK((call) >= 0, "%s: %s", #call, strerror(errno))

static void say(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  printf("[%s] ", who);
  vprintf(fmt, ap);
  putchar('\n');
  fflush(stdout);
  va_end(ap);
}

static double now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static void on_alarm(int sig) {
  (void)sig;
  static const char msg[] = "[vmm] FAILED: timed out\n";
  (void)!write(STDERR_FILENO, msg, sizeof msg - 1);
  if (backend_pid > 0) kill(backend_pid, SIGKILL);
  _exit(1);
}

/* ---- The virtual machine ---------------------------------------------------------------- */

struct vm {
  int kvm, fd, vcpu;
  struct kvm_run *run;
  size_t run_size;
  ma_arena *arena;
  char *mem; /* the arena base: guest-physical address 0 */
  int lo_fd, hi_fd;
  uint64_t lo_size, hi_size;
  void *plain; /* benchmark peer: RAM mapped by plain mmap, no arena */
  size_t plain_len;
  bool window_present;
  uint64_t absent_reads; /* MMIO reads answered as an absent device */
};

static volatile struct mbox *mbox_of(const struct vm *vm) {
  return (volatile struct mbox *)(vm->mem + MBOX_GPA);
}

/* Opens /dev/kvm and creates the VM; skips (exit 77) where KVM cannot be had. */
static void kvm_open(struct vm *vm) {
  vm->kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (vm->kvm < 0) skip("/dev/kvm: %s", strerror(errno));
  int api = ioctl(vm->kvm, KVM_GET_API_VERSION, 0);
  if (api != KVM_API_VERSION) skip("/dev/kvm: API version %d, not %d", api, KVM_API_VERSION);
  if (ioctl(vm->kvm, KVM_CHECK_EXTENSION, KVM_CAP_USER_MEMORY) <= 0)
    skip("/dev/kvm: no KVM_CAP_USER_MEMORY");
  vm->fd = ioctl(vm->kvm, KVM_CREATE_VM, 0);
  if (vm->fd < 0) skip("KVM_CREATE_VM refused: %s", strerror(errno));
  /* Intel needs three pages for the real-mode TSS somewhere; the top of the hole. */
  CHECK_SYS(ioctl(vm->fd, KVM_SET_TSS_ADDR, 0xfffbd000ul));
}

static int make_memfd(const char *name, uint64_t size, bool seal) {
  int fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
  CHECK_SYS(fd);
  CHECK_SYS(ftruncate(fd, (off_t)size));
  if (seal) CHECK_SYS(fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL));
  return fd;
}

/* Guest RAM: two sealed memfds in an arena that spans the whole layout. */
static void make_ram_flags(struct vm *vm, unsigned extra_flags) {
  vm->lo_fd = make_memfd("guest-ram-low", vm->lo_size, true);
  vm->hi_fd = make_memfd("guest-ram-high", vm->hi_size, true);
  CHECK_OK(ma_arena_create(HIGH_RAM_GPA + vm->hi_size,
                           MA_MAP_DONTDUMP | MA_MAP_DONTFORK | extra_flags, &vm->arena));
  vm->mem = ma_arena_base(vm->arena);
  CHECK_OK(ma_arena_add_fd_mapping(vm->arena, 0, vm->lo_size, vm->lo_fd, 0,
                                   MA_PROT_READ | MA_PROT_WRITE));
  CHECK_OK(ma_arena_add_fd_mapping(vm->arena, HIGH_RAM_GPA, vm->hi_size, vm->hi_fd, 0,
                                   MA_PROT_READ | MA_PROT_WRITE));
}

static void make_ram(struct vm *vm) {
  make_ram_flags(vm, MA_MAP_HUGE_TRY);
}

static void set_slot(const struct vm *vm, uint32_t slot, uint64_t gpa, uint64_t size,
                     uint32_t flags) {
  struct kvm_userspace_memory_region r = {.slot = slot,
                                          .flags = flags,
                                          .guest_phys_addr = gpa,
                                          .memory_size = size,
                                          .userspace_addr = (uint64_t)(uintptr_t)(vm->mem + gpa)};
  CHECK(ioctl(vm->fd, KVM_SET_USER_MEMORY_REGION, &r) == 0, "memory slot %u [%#llx, +%#llx): %s",
        slot, (unsigned long long)gpa, (unsigned long long)size, strerror(errno));
}

static void ram_slots(const struct vm *vm, uint32_t flags) {
  set_slot(vm, SLOT_LOW, 0, vm->lo_size, flags);
  set_slot(vm, SLOT_HIGH, HIGH_RAM_GPA, vm->hi_size, flags);
}

/* Identity page tables for [0, ngib GiB) with 2 MiB pages, and a flat 64-bit GDT. */
static void write_system_area(const struct vm *vm, uint64_t ngib) {
  uint64_t *pml4 = (uint64_t *)(vm->mem + PML4_GPA), *pdpt = (uint64_t *)(vm->mem + PDPT_GPA);
  enum { P = 1, RW = 2, PS = 0x80 };
  pml4[0] = PDPT_GPA | P | RW;
  for (uint64_t g = 0; g < ngib; g++) {
    uint64_t *pd = (uint64_t *)(vm->mem + PD_GPA + g * PAGE);
    pdpt[g] = (PD_GPA + g * PAGE) | P | RW;
    for (uint64_t i = 0; i < 512; i++) pd[i] = (g * GIB + i * 2 * MIB) | P | RW | PS;
  }
  uint64_t *gdt = (uint64_t *)(vm->mem + GDT_GPA);
  gdt[0] = 0;
  gdt[1] = 0x00af9b000000ffffull; /* 64-bit code, DPL 0 */
  gdt[2] = 0x00cf93000000ffffull; /* data, DPL 0 */
}

static void load_guest(const struct vm *vm, const char *path) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  CHECK(fd >= 0, "guest binary %s: %s", path, strerror(errno));
  struct stat st;
  CHECK_SYS(fstat(fd, &st));
  CHECK(st.st_size > 0 && (uint64_t)st.st_size <= CODE_MAX, "guest binary %s: %lld bytes", path,
        (long long)st.st_size);
  CHECK(read(fd, vm->mem + CODE_GPA, (size_t)st.st_size) == st.st_size, "reading %s", path);
  close(fd);
}

static void set_cpuid(const struct vm *vm) {
  int n = 128;
  struct kvm_cpuid2 *c;
  for (;;) {
    c = calloc(1, sizeof *c + (size_t)n * sizeof c->entries[0]);
    CHECK(c, "out of memory");
    c->nent = (uint32_t)n;
    if (ioctl(vm->kvm, KVM_GET_SUPPORTED_CPUID, c) == 0) break;
    CHECK(errno == E2BIG && n < 4096, "KVM_GET_SUPPORTED_CPUID: %s", strerror(errno));
    free(c);
    n *= 2;
  }
  CHECK_SYS(ioctl(vm->vcpu, KVM_SET_CPUID2, c));
  free(c);
}

/* Creates the vCPU, maps its kvm_run and gives it the host's supported CPUID. */
static void make_vcpu(struct vm *vm) {
  vm->vcpu = ioctl(vm->fd, KVM_CREATE_VCPU, 0);
  CHECK_SYS(vm->vcpu);
  int sz = ioctl(vm->kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
  CHECK(sz >= (int)sizeof(struct kvm_run), "KVM_GET_VCPU_MMAP_SIZE: %d", sz);
  vm->run_size = (size_t)sz;
  vm->run = mmap(NULL, vm->run_size, PROT_READ | PROT_WRITE, MAP_SHARED, vm->vcpu, 0);
  CHECK(vm->run != MAP_FAILED, "mmap kvm_run: %s", strerror(errno));
  set_cpuid(vm);
}

/* 64-bit long mode at the guest's entry: flat segments, our GDT and page tables. */
static void enter_long_mode(const struct vm *vm) {
  struct kvm_sregs s;
  CHECK_SYS(ioctl(vm->vcpu, KVM_GET_SREGS, &s));
  struct kvm_segment code = {.base = 0,
                             .limit = 0xffffffff,
                             .selector = 8,
                             .type = 11, /* execute/read, accessed */
                             .present = 1,
                             .s = 1,
                             .l = 1,
                             .g = 1};
  struct kvm_segment data = code;
  data.selector = 16;
  data.type = 3; /* read/write, accessed */
  data.l = 0;
  data.db = 1;
  s.cs = code;
  s.ds = s.es = s.fs = s.gs = s.ss = data;
  s.gdt.base = GDT_GPA;
  s.gdt.limit = 3 * 8 - 1;
  s.cr3 = PML4_GPA;
  s.cr4 = 1u << 5 | 1u << 9 | 1u << 10;                                /* PAE, OSFXSR, OSXMMEXCPT */
  s.cr0 = 1u << 0 | 1u << 1 | 1u << 4 | 1u << 5 | 1u << 16 | 1u << 31; /* PE MP ET NE WP PG */
  s.efer = 1u << 8 | 1u << 10;                                         /* LME, LMA */
  CHECK_SYS(ioctl(vm->vcpu, KVM_SET_SREGS, &s));
  struct kvm_regs regs = {.rflags = 2, .rip = CODE_GPA, .rsp = STACK_TOP};
  CHECK_SYS(ioctl(vm->vcpu, KVM_SET_REGS, &regs));
}

static const char *exit_name(uint32_t reason) {
  switch (reason) {
  case KVM_EXIT_SHUTDOWN:
    return "SHUTDOWN (triple fault)";
  case KVM_EXIT_FAIL_ENTRY:
    return "FAIL_ENTRY";
  case KVM_EXIT_INTERNAL_ERROR:
    return "INTERNAL_ERROR";
  default:
    return "unexpected";
  }
}

/* Runs the vCPU until the guest reports; returns the step (0 when it halted). MMIO to the
 * removed window is answered here as an absent device: reads return all ones, writes are
 * dropped. */
static uint32_t run_vcpu(struct vm *vm) {
  for (;;) {
    if (ioctl(vm->vcpu, KVM_RUN, 0) < 0) {
      CHECK(errno == EINTR || errno == EAGAIN, "KVM_RUN: %s", strerror(errno));
      continue;
    }
    struct kvm_run *r = vm->run;
    switch (r->exit_reason) {
    case KVM_EXIT_IO: {
      const char *data = (const char *)r + r->io.data_offset;
      uint32_t v = 0;
      CHECK(r->io.direction == KVM_EXIT_IO_OUT && r->io.size == 4 && r->io.count == 1,
            "unexpected port access: port %#x size %u dir %u", r->io.port, r->io.size,
            r->io.direction);
      memcpy(&v, data, sizeof v);
      if (r->io.port == PORT_REPORT) return v;
      CHECK(r->io.port != PORT_PANIC, "the guest panicked with code %u", v);
      fail("write of %#x to unknown port %#x", v, r->io.port);
      break;
    }
    case KVM_EXIT_MMIO: {
      uint64_t a = r->mmio.phys_addr;
      CHECK(!vm->window_present && a >= WINDOW_GPA && a < WINDOW_GPA + WINDOW_SIZE,
            "MMIO %s at %#llx outside the removed window", r->mmio.is_write ? "write" : "read",
            (unsigned long long)a);
      if (!r->mmio.is_write) {
        memset(r->mmio.data, 0xff, sizeof r->mmio.data);
        CHECK(a == WINDOW_GPA && r->mmio.len == 4, "MMIO read at %#llx, %u bytes",
              (unsigned long long)a, r->mmio.len);
        vm->absent_reads++;
      }
      break;
    }
    case KVM_EXIT_HLT:
      return 0;
    default: {
      struct kvm_regs regs;
      ioctl(vm->vcpu, KVM_GET_REGS, &regs);
      fail("vCPU exit %u %s at rip %#llx (internal suberror %u)", r->exit_reason,
           exit_name(r->exit_reason), (unsigned long long)regs.rip, r->internal.suberror);
    }
    }
  }
}

/* Runs until the guest reports `step`, which must be the next one. */
static void run_to(struct vm *vm, uint32_t step) {
  uint32_t got = run_vcpu(vm);
  CHECK(got == step, "guest reported step %u, expected %u", got, step);
}

/* ---- Guest memory checks ------------------------------------------------------------------ */

static uint64_t host_checksum(const struct vm *vm, uint64_t start, uint64_t end) {
  uint64_t cs = CSUM_INIT;
  for (uint64_t gpa = start; gpa < end; gpa += 8)
    cs = csum_word(cs, *(const uint64_t *)(vm->mem + gpa));
  return cs;
}

static uint64_t pattern_checksum(uint64_t start, uint64_t end, uint64_t seed) {
  uint64_t cs = CSUM_INIT;
  for (uint64_t gpa = start; gpa < end; gpa += 8) cs = csum_word(cs, pattern(gpa, seed));
  return cs;
}

/* Every word of [start, end) holds its pattern. */
static void check_filled(const struct vm *vm, uint64_t start, uint64_t end, uint64_t seed) {
  for (uint64_t gpa = start; gpa < end; gpa += 8) {
    uint64_t v = *(const uint64_t *)(vm->mem + gpa);
    CHECK(v == pattern(gpa, seed), "gpa %#llx holds %#llx, expected %#llx", (unsigned long long)gpa,
          (unsigned long long)v, (unsigned long long)pattern(gpa, seed));
  }
}

static long long blocks_kib(int fd) {
  struct stat st;
  CHECK_SYS(fstat(fd, &st));
  return (long long)st.st_blocks / 2;
}

/* A device window's file: WINDOW_SIZE bytes of the pattern of `seed` at the window's GPAs. */
static int make_window_file(const char *name, uint64_t seed) {
  int fd = make_memfd(name, WINDOW_SIZE, false);
  uint64_t *buf = malloc(WINDOW_SIZE);
  CHECK(buf, "out of memory");
  for (uint64_t i = 0; i < WINDOW_SIZE / 8; i++) buf[i] = pattern(WINDOW_GPA + i * 8, seed);
  CHECK(pwrite(fd, buf, WINDOW_SIZE, 0) == (ssize_t)WINDOW_SIZE, "pwrite: %s", strerror(errno));
  free(buf);
  return fd;
}

/* ---- The device backend: a second process mapping guest RAM (as vhost-user does) ----------- */

struct backend_msg {
  uint64_t lo_size, hi_size; /* the memory table (with the two memfds) */
  uint64_t gpa, len, seed;   /* a request: fill [gpa+8, gpa+len) with the pattern of seed */
  int status;                /* the reply: 0 done */
};

static void send_msg(int sock, const struct backend_msg *m, const int *fds, int nfds) {
  struct iovec iov = {.iov_base = (void *)m, .iov_len = sizeof *m};
  union {
    char buf[CMSG_SPACE(2 * sizeof(int))];
    struct cmsghdr align;
  } u;
  struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
  if (nfds > 0) {
    mh.msg_control = u.buf;
    mh.msg_controllen = CMSG_SPACE((size_t)nfds * sizeof(int));
    struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN((size_t)nfds * sizeof(int));
    memcpy(CMSG_DATA(c), fds, (size_t)nfds * sizeof(int));
  }
  CHECK(sendmsg(sock, &mh, 0) == (ssize_t)sizeof *m, "sendmsg: %s", strerror(errno));
}

/* One message and up to two descriptors; returns how many descriptors came, -1 at EOF. */
static int recv_msg(int sock, struct backend_msg *m, int *fds) {
  struct iovec iov = {.iov_base = m, .iov_len = sizeof *m};
  union {
    char buf[CMSG_SPACE(2 * sizeof(int))];
    struct cmsghdr align;
  } u;
  struct msghdr mh = {
      .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof u.buf};
  ssize_t n = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC);
  if (n == 0) return -1;
  CHECK(n == (ssize_t)sizeof *m, "recvmsg: %zd (%s)", n, strerror(errno));
  CHECK(!(mh.msg_flags & MSG_CTRUNC), "descriptors truncated");
  int nfds = 0;
  for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
      nfds = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
      memcpy(fds, CMSG_DATA(c), (size_t)nfds * sizeof(int));
    }
  }
  return nfds;
}

/* The backend maps the memfds it received into an arena of its own at the same guest
 * offsets, then serves requests: it sleeps 20 ms (the guest is running and polling by
 * then), writes the data, and stores DEVICE_READY last. */
static void backend(int sock) {
  who = "backend";
  backend_pid = -1;
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  struct backend_msg m;
  int fds[2] = {-1, -1};
  CHECK(recv_msg(sock, &m, fds) == 2, "the memory table needs two memfds");
  ma_arena *arena = NULL;
  CHECK_OK(ma_arena_create(HIGH_RAM_GPA + m.hi_size, MA_MAP_DONTDUMP, &arena));
  CHECK_OK(ma_arena_add_fd_mapping(arena, 0, m.lo_size, fds[0], 0, MA_PROT_READ | MA_PROT_WRITE));
  CHECK_OK(ma_arena_add_fd_mapping(arena, HIGH_RAM_GPA, m.hi_size, fds[1], 0,
                                   MA_PROT_READ | MA_PROT_WRITE));
  close(fds[0]); /* the mappings keep the files */
  close(fds[1]);
  char *mem = ma_arena_base(arena);
  say("mapped guest RAM from the received memfds: [0, %#llx) and [%#llx, %#llx)",
      (unsigned long long)m.lo_size, (unsigned long long)HIGH_RAM_GPA,
      (unsigned long long)(HIGH_RAM_GPA + m.hi_size));
  while (recv_msg(sock, &m, fds) == 0 && m.len > 0) {
    CHECK(m.gpa >= HIGH_RAM_GPA && m.gpa + m.len <= ma_arena_len(arena) && m.len % 8 == 0,
          "bad request [%#llx, +%#llx)", (unsigned long long)m.gpa, (unsigned long long)m.len);
    struct timespec ts = {0, 20 * 1000 * 1000};
    nanosleep(&ts, NULL);
    for (uint64_t gpa = m.gpa + 8; gpa < m.gpa + m.len; gpa += 8)
      *(uint64_t *)(mem + gpa) = pattern(gpa, m.seed);
    __atomic_store_n((uint64_t *)(mem + m.gpa), DEVICE_READY, __ATOMIC_RELEASE);
    say("wrote %llu KiB at gpa %#llx while the guest polled", (unsigned long long)(m.len >> 10),
        (unsigned long long)m.gpa);
    m.status = 0;
    send_msg(sock, &m, NULL, 0);
  }
  ma_arena_destroy(arena);
  exit(0);
}

static int start_backend(const struct vm *vm) {
  int sv[2];
  CHECK_SYS(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv));
  fflush(stdout);
  backend_pid = fork();
  CHECK_SYS(backend_pid);
  if (backend_pid == 0) {
    close(sv[0]);
    backend(sv[1]); /* never returns */
  }
  close(sv[1]);
  struct backend_msg m = {.lo_size = vm->lo_size, .hi_size = vm->hi_size};
  int fds[2] = {vm->lo_fd, vm->hi_fd};
  send_msg(sv[0], &m, fds, 2);
  return sv[0];
}

static void stop_backend(int sock) {
  struct backend_msg m = {0};
  send_msg(sock, &m, NULL, 0);
  int st;
  CHECK(waitpid(backend_pid, &st, 0) == backend_pid, "waitpid: %s", strerror(errno));
  backend_pid = -1;
  CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the backend failed (status %#x)", st);
  close(sock);
}

/* ---- Snapshots: dirty logging, full and incremental snapshots, eager and lazy restore ---- */

/* The snapshot directory holds ram.lo and ram.hi (the full snapshot: each RAM memfd as a
 * sparse file, only the pages that had memory written), incr (the incremental snapshot:
 * records of a GPA and its page, for the pages dirtied since the full one) and meta (the
 * layout, the vCPU's registers at the incremental snapshot, and the checksums the guest
 * computed after it, which a restored guest must compute again). */
struct snap_meta {
  uint64_t magic, lo_size, hi_size, incr_pages, final_lo, final_hi;
  struct kvm_regs regs;
  struct kvm_sregs sregs;
};
#define SNAP_MAGIC 0x70616e73616d6b76ull

struct snap {
  char dir[PATH_MAX];
  uint64_t *host_dirty[2]; /* pages this process or the backend wrote (KVM cannot see them) */
  size_t words[2];
  struct snap_meta meta;
};

static const char *snap_path(const struct snap *s, const char *name) {
  static char path[PATH_MAX + 16];
  snprintf(path, sizeof path, "%s/%s", s->dir, name);
  return path;
}

static uint64_t region_gpa(int r) {
  return r == 0 ? 0 : HIGH_RAM_GPA;
}

static uint64_t region_size(const struct vm *vm, int r) {
  return r == 0 ? vm->lo_size : vm->hi_size;
}

static void snap_init(struct snap *s, const struct vm *vm) {
  const char *tmp = getenv("TMPDIR");
  snprintf(s->dir, sizeof s->dir, "%s/kvm-vmm-XXXXXX", tmp && *tmp ? tmp : "/tmp");
  CHECK(mkdtemp(s->dir), "mkdtemp %s: %s", s->dir, strerror(errno));
  for (int r = 0; r < 2; r++) {
    s->words[r] = (region_size(vm, r) / PAGE + 63) / 64;
    s->host_dirty[r] = calloc(s->words[r], 8);
    CHECK(s->host_dirty[r], "out of memory");
  }
  s->meta = (struct snap_meta){.magic = SNAP_MAGIC, .lo_size = vm->lo_size, .hi_size = vm->hi_size};
}

/* The monitor (or its backend) wrote [gpa, gpa+len) of RAM behind KVM's back. */
static void mark_host_dirty(struct snap *s, uint64_t gpa, uint64_t len) {
  int r = gpa >= HIGH_RAM_GPA;
  for (uint64_t p = (gpa - region_gpa(r)) / PAGE; p < (gpa - region_gpa(r) + len) / PAGE; p++)
    s->host_dirty[r][p / 64] |= 1ull << (p % 64);
}

/* KVM's dirty bitmap of region r's slot since the last call (the call clears it). */
static void get_dirty_log(const struct vm *vm, int r, uint64_t *bitmap) {
  struct kvm_dirty_log log = {.slot = r == 0 ? SLOT_LOW : SLOT_HIGH, .dirty_bitmap = bitmap};
  CHECK_SYS(ioctl(vm->fd, KVM_GET_DIRTY_LOG, &log));
}

static void write_all(int fd, const void *buf, size_t len, off_t off) {
  while (len > 0) {
    ssize_t n = pwrite(fd, buf, len, off);
    CHECK(n > 0, "write to the snapshot: %s", n < 0 ? strerror(errno) : "short");
    buf = (const char *)buf + n;
    len -= (size_t)n;
    off += n;
  }
}

static void read_all(int fd, void *buf, size_t len, off_t off) {
  while (len > 0) {
    ssize_t n = pread(fd, buf, len, off);
    CHECK(n > 0, "read from the snapshot: %s", n < 0 ? strerror(errno) : "end of file");
    buf = (char *)buf + n;
    len -= (size_t)n;
    off += n;
  }
}

/* The full snapshot, with the vCPU stopped: each RAM region's pages that have memory
 * (ma_arena_resident), at their offsets in a sparse file. Restarts dirty tracking. */
static void snapshot_full(const struct vm *vm, struct snap *s) {
  uint64_t written = 0;
  for (int r = 0; r < 2; r++) {
    uint64_t gpa = region_gpa(r), size = region_size(vm, r), npages = size / PAGE;
    unsigned char *vec = malloc(npages);
    CHECK(vec, "out of memory");
    CHECK_OK(ma_arena_resident(vm->arena, gpa, size, vec));
    int fd =
        open(snap_path(s, r ? "ram.hi" : "ram.lo"), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    CHECK_SYS(fd);
    CHECK_SYS(ftruncate(fd, (off_t)size));
    for (uint64_t p = 0; p < npages;) {
      if (!(vec[p] & 1)) {
        p++;
        continue;
      }
      uint64_t q = p;
      while (q < npages && (vec[q] & 1)) q++;
      write_all(fd, vm->mem + gpa + p * PAGE, (q - p) * PAGE, (off_t)(p * PAGE));
      written += (q - p) * PAGE;
      p = q;
    }
    close(fd);
    free(vec);
    get_dirty_log(vm, r, s->host_dirty[r]); /* discarded: tracking starts now */
    memset(s->host_dirty[r], 0, s->words[r] * 8);
  }
  say("full snapshot: %llu MiB of resident RAM written to %s", (unsigned long long)(written / MIB),
      s->dir);
}

/* Completes the pending port I/O (KVM finishes an exit's instruction only at the next
 * KVM_RUN) without running the guest further, then saves the registers. */
static void save_vcpu(const struct vm *vm, struct snap_meta *m) {
  vm->run->immediate_exit = 1;
  CHECK(ioctl(vm->vcpu, KVM_RUN, 0) < 0 && errno == EINTR, "KVM_RUN with immediate_exit");
  vm->run->immediate_exit = 0;
  CHECK_SYS(ioctl(vm->vcpu, KVM_GET_REGS, &m->regs));
  CHECK_SYS(ioctl(vm->vcpu, KVM_GET_SREGS, &m->sregs));
}

/* The incremental snapshot: the pages KVM logged as written by the guest since the full
 * one, plus those written behind its back. `stride` pages of high RAM the guest is known to
 * have dirtied must all be in the log. */
static void snapshot_incremental(const struct vm *vm, struct snap *s, uint64_t stride) {
  int fd = open(snap_path(s, "incr"), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  CHECK_SYS(fd);
  uint64_t logged = 0, pages = 0;
  off_t off = 0;
  for (int r = 0; r < 2; r++) {
    uint64_t *log = calloc(s->words[r], 8);
    CHECK(log, "out of memory");
    get_dirty_log(vm, r, log);
    if (r == 1) {
      for (uint64_t p = 0; p < vm->hi_size / PAGE; p += stride)
        CHECK(log[p / 64] >> (p % 64) & 1, "page %#llx written by the guest is not in the log",
              (unsigned long long)(HIGH_RAM_GPA + p * PAGE));
    }
    for (size_t w = 0; w < s->words[r]; w++) {
      logged += (uint64_t)__builtin_popcountll(log[w]);
      uint64_t bits = log[w] | s->host_dirty[r][w];
      for (; bits; bits &= bits - 1) {
        uint64_t gpa = region_gpa(r) + (w * 64 + (uint64_t)__builtin_ctzll(bits)) * PAGE;
        write_all(fd, &gpa, sizeof gpa, off);
        write_all(fd, vm->mem + gpa, PAGE, off + 8);
        off += 8 + PAGE;
        pages++;
      }
    }
    free(log);
  }
  close(fd);
  uint64_t known = (vm->hi_size / PAGE + stride - 1) / stride;
  CHECK(logged >= known && logged <= known + 64, "dirty log: %llu pages for %llu written",
        (unsigned long long)logged, (unsigned long long)known);
  s->meta.incr_pages = pages;
  save_vcpu(vm, &s->meta);
  say("incremental snapshot: %llu pages (KVM's dirty log %llu, %llu of them the guest's known "
      "writes; the rest written by the monitor and the backend)",
      (unsigned long long)pages, (unsigned long long)logged, (unsigned long long)known);
}

static void write_meta(const struct snap *s) {
  int fd = open(snap_path(s, "meta"), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  CHECK_SYS(fd);
  write_all(fd, &s->meta, sizeof s->meta, 0);
  close(fd);
}

static void snap_remove(struct snap *s) {
  static const char *const names[] = {"ram.lo", "ram.hi", "incr", "meta"};
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) unlink(snap_path(s, names[i]));
  rmdir(s->dir);
  free(s->host_dirty[0]);
  free(s->host_dirty[1]);
}

/* Runs `/proc/self/exe --restore DIR --lazy|--eager` and checks that it passed. */
static void run_restore(const struct snap *s, const char *guest, bool lazy) {
  fflush(stdout);
  pid_t pid = fork();
  CHECK_SYS(pid);
  if (pid == 0) {
    char lo[24], hi[24]; /* the sizes only scale the child's time limit */
    snprintf(lo, sizeof lo, "%llu", (unsigned long long)(s->meta.lo_size / MIB));
    snprintf(hi, sizeof hi, "%llu", (unsigned long long)(s->meta.hi_size / MIB));
    execl("/proc/self/exe", "example_kvm_vmm", "--guest", guest, "--low-mib", lo, "--high-mib", hi,
          "--restore", s->dir, lazy ? "--lazy" : "--eager", (char *)NULL);
    _exit(127);
  }
  int st;
  CHECK(waitpid(pid, &st, 0) == pid, "waitpid: %s", strerror(errno));
  CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the %s restore failed (status %#x)",
        lazy ? "lazy" : "eager", st);
}

/* ---- The restoring process -------------------------------------------------------------- */

struct lazy {
  const struct vm *vm;
  int uffd, full[2], incr, stop_pipe;
  uint32_t *incr_index[2]; /* per page: record number + 1 in incr, 0 if not there */
  uint64_t served;
};

/* Serves each missing page of guest RAM from the snapshot on first touch: the incremental
 * record when there is one, else the full snapshot's page. */
static void *lazy_server(void *p) {
  struct lazy *l = p;
  char *page = aligned_alloc(PAGE, PAGE);
  CHECK(page, "out of memory");
  uintptr_t base = (uintptr_t)l->vm->mem;
  for (;;) {
    struct pollfd pfd[2] = {{.fd = l->uffd, .events = POLLIN},
                            {.fd = l->stop_pipe, .events = POLLIN}};
    if (poll(pfd, 2, -1) < 0) {
      CHECK(errno == EINTR, "poll: %s", strerror(errno));
      continue;
    }
    if (pfd[1].revents) break;
    struct uffd_msg msg;
    ssize_t n = read(l->uffd, &msg, sizeof msg);
    if (n < 0 && errno == EAGAIN) continue;
    CHECK(n == (ssize_t)sizeof msg, "read userfaultfd: %s", strerror(errno));
    if (msg.event != UFFD_EVENT_PAGEFAULT) continue;
    uint64_t gpa = ((uintptr_t)msg.arg.pagefault.address - base) & ~(PAGE - 1);
    int r = gpa >= HIGH_RAM_GPA;
    uint64_t idx = (gpa - region_gpa(r)) / PAGE;
    uint32_t rec = l->incr_index[r][idx];
    if (rec)
      read_all(l->incr, page, PAGE, (off_t)((rec - 1) * (8 + PAGE) + 8));
    else
      read_all(l->full[r], page, PAGE, (off_t)(idx * PAGE));
    int e = ma_arena_uffd_copy(l->vm->arena, gpa, page, PAGE, l->uffd, NULL);
    CHECK(e == 0 || e == -EEXIST, "ma_arena_uffd_copy at %#llx: %s", (unsigned long long)gpa,
          strerror(-e));
    l->served++;
  }
  free(page);
  return NULL;
}

/* Eager: the data extents of the full snapshot (SEEK_DATA skips its holes), then every
 * incremental record, copied into guest RAM before the vCPU runs. */
static void restore_eager(const struct vm *vm, int full[2], int incr, uint64_t incr_pages) {
  for (int r = 0; r < 2; r++) {
    off_t size = (off_t)region_size(vm, r), at = 0, end;
    while (at < size && (at = lseek(full[r], at, SEEK_DATA)) >= 0 && at < size) {
      end = lseek(full[r], at, SEEK_HOLE);
      CHECK(end > at, "SEEK_HOLE: %s", strerror(errno));
      read_all(full[r], vm->mem + region_gpa(r) + at, (size_t)(end - at), at);
      at = end;
    }
  }
  for (uint64_t i = 0; i < incr_pages; i++) {
    uint64_t gpa;
    read_all(incr, &gpa, sizeof gpa, (off_t)(i * (8 + PAGE)));
    read_all(incr, vm->mem + gpa, PAGE, (off_t)(i * (8 + PAGE) + 8));
  }
}

static int open_uffd(void) {
  int u = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
  if (u < 0) fail("userfaultfd: %s", strerror(errno));
  struct uffdio_api api = {.api = UFFD_API, .features = 0};
  CHECK_SYS(ioctl(u, UFFDIO_API, &api));
  CHECK(api.features & UFFD_FEATURE_MISSING_SHMEM, "no userfaultfd missing mode over shmem");
  return u;
}

static int restore_main(const char *dir, bool lazy) {
  who = lazy ? "restore-lazy" : "restore-eager";
  double t0 = now_us();
  struct snap s = {0};
  snprintf(s.dir, sizeof s.dir, "%s", dir);
  int fd = open(snap_path(&s, "meta"), O_RDONLY | O_CLOEXEC);
  CHECK_SYS(fd);
  read_all(fd, &s.meta, sizeof s.meta, 0);
  close(fd);
  CHECK(s.meta.magic == SNAP_MAGIC, "%s is not a snapshot", dir);

  struct vm vm = {.lo_size = s.meta.lo_size, .hi_size = s.meta.hi_size};
  kvm_open(&vm);
  make_ram(&vm); /* a fresh arena and fresh memfds in this new process */
  int full[2], incr = open(snap_path(&s, "incr"), O_RDONLY | O_CLOEXEC);
  CHECK_SYS(incr);
  for (int r = 0; r < 2; r++) {
    full[r] = open(snap_path(&s, r ? "ram.hi" : "ram.lo"), O_RDONLY | O_CLOEXEC);
    CHECK_SYS(full[r]);
  }
  struct lazy l = {.vm = &vm, .uffd = -1, .full = {full[0], full[1]}, .incr = incr};
  pthread_t server;
  int stop[2] = {-1, -1};
  if (lazy) {
    for (int r = 0; r < 2; r++) {
      l.incr_index[r] = calloc(region_size(&vm, r) / PAGE, sizeof(uint32_t));
      CHECK(l.incr_index[r], "out of memory");
    }
    for (uint64_t i = 0; i < s.meta.incr_pages; i++) {
      uint64_t gpa;
      read_all(incr, &gpa, sizeof gpa, (off_t)(i * (8 + PAGE)));
      int r = gpa >= HIGH_RAM_GPA;
      l.incr_index[r][(gpa - region_gpa(r)) / PAGE] = (uint32_t)(i + 1);
    }
    l.uffd = open_uffd();
    CHECK_OK(ma_arena_uffd_register(vm.arena, 0, vm.lo_size, l.uffd, MA_UFFD_MISSING));
    CHECK_OK(ma_arena_uffd_register(vm.arena, HIGH_RAM_GPA, vm.hi_size, l.uffd, MA_UFFD_MISSING));
    CHECK_SYS(pipe2(stop, O_CLOEXEC));
    l.stop_pipe = stop[0];
    CHECK(pthread_create(&server, NULL, lazy_server, &l) == 0, "pthread_create");
  } else {
    restore_eager(&vm, full, incr, s.meta.incr_pages);
  }
  ram_slots(&vm, 0);
  make_vcpu(&vm);
  CHECK_SYS(ioctl(vm.vcpu, KVM_SET_SREGS, &s.meta.sregs));
  CHECK_SYS(ioctl(vm.vcpu, KVM_SET_REGS, &s.meta.regs));
  double t1 = now_us();
  run_to(&vm, STEP_RESUMED);
  double t2 = now_us();
  run_to(&vm, STEP_FINAL);
  double t3 = now_us();
  volatile struct mbox *mb = mbox_of(&vm);
  CHECK(mb->a == s.meta.final_lo && mb->b == s.meta.final_hi,
        "restored guest checksums %#llx %#llx, the original computed %#llx %#llx",
        (unsigned long long)mb->a, (unsigned long long)mb->b, (unsigned long long)s.meta.final_lo,
        (unsigned long long)s.meta.final_hi);
  CHECK(run_vcpu(&vm) == 0, "the restored guest did not halt");
  if (lazy) {
    CHECK(write(stop[1], "", 1) == 1, "stop the server");
    pthread_join(server, NULL);
    CHECK(l.served > 0, "no page was served lazily");
    say("%llu pages served on first touch by userfaultfd", (unsigned long long)l.served);
    for (int r = 0; r < 2; r++) free(l.incr_index[r]);
    close(l.uffd);
    close(stop[0]);
    close(stop[1]);
  }
  for (int r = 0; r < 2; r++) close(full[r]);
  close(incr);
  say("RAM %llu MiB: guest resumed %.1f ms after start (memory ready %.1f ms), full checksum "
      "%.1f ms after start: matches the original",
      (unsigned long long)((vm.lo_size + vm.hi_size) / MIB), (t2 - t0) / 1e3, (t1 - t0) / 1e3,
      (t3 - t0) / 1e3);
  return 0;
}

struct options {
  const char *guest;
  uint64_t lo_mib, hi_mib;
  const char *restore; /* internal: restore from this snapshot directory */
  bool lazy;
  bool bench;
};

/* ---- Benchmark: the guest's memory bandwidth on arena memory against plain mmap --------- */

enum ram_kind { RAM_ARENA_HUGE, RAM_ARENA, RAM_MMAP_HUGE, RAM_MMAP, RAM_KINDS };
static const char *const ram_kind_name[RAM_KINDS] = {"arena + THP advice", "arena",
                                                     "plain mmap + THP advice", "plain mmap"};

/* The peer: what a VMM without the arena does, a PROT_NONE reservation with the memfds
 * mapped over it by mmap(MAP_FIXED), madvise(MADV_HUGEPAGE) when asked. */
static void make_plain_ram(struct vm *vm, bool huge) {
  vm->lo_fd = make_memfd("guest-ram-low", vm->lo_size, true);
  vm->hi_fd = make_memfd("guest-ram-high", vm->hi_size, true);
  size_t len = HIGH_RAM_GPA + vm->hi_size;
  void *p = mmap(NULL, len + GIB, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  CHECK(p != MAP_FAILED, "mmap: %s", strerror(errno));
  vm->mem = (char *)(((uintptr_t)p + GIB - 1) & ~(uintptr_t)(GIB - 1)); /* 1 GiB aligned too */
  const int prot = PROT_READ | PROT_WRITE, fl = MAP_SHARED | MAP_FIXED;
  CHECK(mmap(vm->mem, vm->lo_size, prot, fl, vm->lo_fd, 0) == vm->mem, "mmap low RAM");
  CHECK(mmap(vm->mem + HIGH_RAM_GPA, vm->hi_size, prot, fl, vm->hi_fd, 0) == vm->mem + HIGH_RAM_GPA,
        "mmap high RAM");
  if (huge) {
    madvise(vm->mem, vm->lo_size, MADV_HUGEPAGE);
    madvise(vm->mem + HIGH_RAM_GPA, vm->hi_size, MADV_HUGEPAGE);
  }
  vm->plain = p;
  vm->plain_len = len + GIB;
}

struct bench_round {
  double touch, fill, sum; /* ms: first touch + fill, fill again, checksum */
};

static struct bench_round bench_once(const struct options *o, enum ram_kind kind) {
  struct vm vm = {.lo_size = o->lo_mib * MIB, .hi_size = o->hi_mib * MIB};
  kvm_open(&vm);
  if (kind == RAM_ARENA_HUGE || kind == RAM_ARENA) {
    make_ram_flags(&vm, kind == RAM_ARENA_HUGE ? MA_MAP_HUGE_TRY : 0);
  } else {
    make_plain_ram(&vm, kind == RAM_MMAP_HUGE);
  }
  ram_slots(&vm, 0);
  write_system_area(&vm, (HIGH_RAM_GPA + vm.hi_size + GIB - 1) / GIB);
  load_guest(&vm, o->guest);
  volatile struct mbox *mb = mbox_of(&vm);
  *mb = (struct mbox){.lo_start = SYSTEM_END,
                      .lo_end = vm.lo_size,
                      .hi_start = HIGH_RAM_GPA,
                      .hi_end = HIGH_RAM_GPA + vm.hi_size,
                      .seed = 1,
                      .bench = 1};
  make_vcpu(&vm);
  enter_long_mode(&vm);
  run_to(&vm, STEP_HELLO);
  struct bench_round b;
  double t0 = now_us();
  run_to(&vm, STEP_FILLED); /* first touch of every page, fill, checksum */
  double t1 = now_us();
  run_to(&vm, STEP_BENCH); /* fill again */
  double t2 = now_us();
  run_to(&vm, STEP_BENCH); /* checksum */
  double t3 = now_us();
  CHECK(mb->a == pattern_checksum(mb->lo_start, mb->lo_end, 1), "bench checksum");
  b.fill = (t2 - t1) / 1e3;
  b.sum = (t3 - t2) / 1e3;
  b.touch = (t1 - t0) / 1e3 - b.sum; /* first touch + fill (the checksum part removed) */
  munmap(vm.run, vm.run_size);
  close(vm.vcpu);
  close(vm.fd);
  close(vm.kvm);
  if (vm.arena) ma_arena_destroy(vm.arena);
  if (vm.plain) munmap(vm.plain, vm.plain_len);
  close(vm.lo_fd);
  close(vm.hi_fd);
  return b;
}

static int cmp_double(const void *x, const void *y) {
  double a = *(const double *)x, b = *(const double *)y;
  return (a > b) - (a < b);
}

static double median(double *v, int n) {
  qsort(v, (size_t)n, sizeof *v, cmp_double);
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* Rounds interleaved over the four kinds of RAM; medians and ratios to plain mmap. */
static int bench_main(const struct options *o) {
  enum { ROUNDS = 7 };
  double touch[RAM_KINDS][ROUNDS], fill[RAM_KINDS][ROUNDS], sum[RAM_KINDS][ROUNDS];
  for (int r = 0; r < ROUNDS; r++) {
    for (int k = 0; k < RAM_KINDS; k++) {
      int kind = (k + r) % RAM_KINDS; /* rotate the order too */
      struct bench_round b = bench_once(o, (enum ram_kind)kind);
      touch[kind][r] = b.touch;
      fill[kind][r] = b.fill;
      sum[kind][r] = b.sum;
    }
  }
  double gib = (double)(o->lo_mib + o->hi_mib - 2) / 1024, pages = gib * GIB / PAGE;
  printf("guest RAM %llu MiB (work %.2f GiB), %d rounds interleaved, medians\n",
         (unsigned long long)(o->lo_mib + o->hi_mib), gib, ROUNDS);
  printf("%-24s %14s %12s %12s %10s %10s\n", "RAM", "first touch", "fill GiB/s", "sum GiB/s",
         "fill/mmap", "sum/mmap");
  double base_fill[2], base_sum[2];
  for (int k = RAM_KINDS - 1; k >= 0; k--) {
    double t = median(touch[k], ROUNDS), f = median(fill[k], ROUNDS), c = median(sum[k], ROUNDS);
    int pair = k % 2; /* huge or not: compare with the plain mmap of the same advice */
    if (k >= RAM_MMAP_HUGE) base_fill[pair] = f, base_sum[pair] = c;
    printf("%-24s %9.0f k/s %12.2f %12.2f %10.3f %10.3f\n", ram_kind_name[k],
           pages / (t / 1e3) / 1e3, gib / (f / 1e3), gib / (c / 1e3), base_fill[pair] / f,
           base_sum[pair] / c);
  }
  return 0;
}

/* ---- The run ------------------------------------------------------------------------------ */

/* Kilobytes of guest RAM the kernel maps with huge pages here (ShmemPmdMapped in smaps). */
static long long huge_kib(const struct vm *vm) {
  FILE *f = fopen("/proc/self/smaps", "re");
  if (!f) return -1;
  char line[256];
  unsigned long lo = 0, hi = 0;
  long long sum = 0, kib;
  uintptr_t base = (uintptr_t)vm->mem, end = base + ma_arena_len(vm->arena);
  while (fgets(line, sizeof line, f)) {
    if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2) continue;
    if (lo >= base && hi <= end && sscanf(line, "ShmemPmdMapped: %lld kB", &kib) == 1) sum += kib;
  }
  fclose(f);
  return sum;
}

static uint64_t parse_mib(const char *s) {
  char *end;
  unsigned long long v = strtoull(s, &end, 10);
  if (*s == '\0' || *end != '\0' || v == 0 || v % 2 || v > (MAX_GIB - 5) * 1024) {
    fprintf(stderr, "kvm_vmm: '%s' is not an even number of MiB (2 to %llu)\n", s,
            (unsigned long long)(MAX_GIB - 5) * 1024);
    exit(2);
  }
  return v;
}

static void usage(void) {
  fprintf(stderr, "usage: example_kvm_vmm [--guest GUEST.bin] [--low-mib N] [--high-mib N]\n"
                  "       example_kvm_vmm --bench [--low-mib N] [--high-mib N]\n"
                  "       example_kvm_vmm --restore SNAPSHOT_DIR --eager|--lazy\n");
  exit(2);
}

/* The guest binary defaults to kvm_guest.bin beside this executable. */
static char default_guest[PATH_MAX];

static void parse_options(int argc, char **argv, struct options *o) {
  *o = (struct options){.lo_mib = 64, .hi_mib = 64};
  for (int i = 1; i < argc; i++) {
    const char *arg = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
    if (strcmp(arg, "--bench") == 0) {
      o->bench = true;
      continue;
    }
    if (!val) usage();
    i++;
    if (strcmp(arg, "--guest") == 0) {
      o->guest = val;
    } else if (strcmp(arg, "--low-mib") == 0) {
      o->lo_mib = parse_mib(val);
    } else if (strcmp(arg, "--high-mib") == 0) {
      o->hi_mib = parse_mib(val);
    } else if (strcmp(arg, "--restore") == 0 && i + 1 < argc) {
      o->restore = val;
      o->lazy = strcmp(argv[++i], "--lazy") == 0;
    } else {
      usage();
    }
  }
  if (o->lo_mib < 4 || o->hi_mib < 8) {
    fprintf(stderr, "kvm_vmm: at least 4 MiB low and 8 MiB high RAM\n");
    exit(2);
  }
  if (!o->guest) {
    ssize_t n = readlink("/proc/self/exe", default_guest, sizeof default_guest - 16);
    CHECK(n > 0, "readlink /proc/self/exe: %s", strerror(errno));
    default_guest[n] = '\0';
    char *slash = strrchr(default_guest, '/');
    strcpy(slash ? slash + 1 : default_guest, "kvm_guest.bin");
    o->guest = default_guest;
  }
}

int main(int argc, char **argv) {
  struct options o;
  parse_options(argc, argv, &o);
  setvbuf(stdout, NULL, _IOLBF, 0);
  signal(SIGALRM, on_alarm);
  alarm(TIMEOUT_S + (unsigned)((o.lo_mib + o.hi_mib) / 1024) * 60); /* large RAM: more time */
  if (o.restore) return restore_main(o.restore, o.lazy);
  if (o.bench) {
    alarm(0);
    return bench_main(&o);
  }

  struct vm vm = {.lo_size = o.lo_mib * MIB, .hi_size = o.hi_mib * MIB};
  kvm_open(&vm);
  say("KVM API %d, VM created", KVM_API_VERSION);

  /* Guest memory: RAM below and above the hole, the device window in it. */
  make_ram(&vm);
  uint64_t ngib = (HIGH_RAM_GPA + vm.hi_size + GIB - 1) / GIB;
  say("arena of %llu MiB at %p: low RAM [0, %#llx), hole, high RAM [%#llx, %#llx)",
      (unsigned long long)(ma_arena_len(vm.arena) / MIB), (void *)vm.mem,
      (unsigned long long)vm.lo_size, (unsigned long long)HIGH_RAM_GPA,
      (unsigned long long)(HIGH_RAM_GPA + vm.hi_size));
  int sock = start_backend(&vm);
  struct snap snap;
  snap_init(&snap, &vm);
  ram_slots(&vm, KVM_MEM_LOG_DIRTY_PAGES);
  int win_a = make_window_file("window-a", 0xa), win_b = make_window_file("window-b", 0xb);
  CHECK_OK(ma_arena_add_fd_mapping(vm.arena, WINDOW_GPA, WINDOW_SIZE, win_a, 0,
                                   MA_PROT_READ | MA_PROT_WRITE));
  set_slot(&vm, SLOT_WIN, WINDOW_GPA, WINDOW_SIZE, 0);
  vm.window_present = true;
  say("memory slots: low RAM, high RAM, device window [%#llx, +%llu KiB) (file A)",
      (unsigned long long)WINDOW_GPA, (unsigned long long)(WINDOW_SIZE >> 10));

  /* The system area, the guest's code, its configuration. */
  write_system_area(&vm, ngib);
  load_guest(&vm, o.guest);
  volatile struct mbox *mb = mbox_of(&vm);
  const uint64_t seed = 0x5eed;
  mb->lo_start = SYSTEM_END;
  mb->lo_end = vm.lo_size;
  mb->hi_start = HIGH_RAM_GPA;
  mb->hi_end = HIGH_RAM_GPA + vm.hi_size;
  mb->window_gpa = WINDOW_GPA;
  mb->window_len = WINDOW_SIZE;
  mb->balloon_gpa = HIGH_RAM_GPA + 2 * MIB;
  mb->balloon_len = 2 * MIB;
  mb->dev_gpa = HIGH_RAM_GPA + vm.hi_size - 64 * 1024;
  mb->dev_len = 64 * 1024;
  mb->dirty_stride = 64;
  mb->seed = seed;
  mb->dev_seed = 0xde7;
  mb->poll_limit = 1ull << 28;
  make_vcpu(&vm);
  enter_long_mode(&vm);

  run_to(&vm, STEP_HELLO);
  CHECK(mb->a == GUEST_MAGIC, "hello: %#llx", (unsigned long long)mb->a);
  say("guest running in long mode, %llu GiB identity-mapped", (unsigned long long)ngib);

  double t0 = now_us();
  run_to(&vm, STEP_FILLED);
  double t1 = now_us();
  check_filled(&vm, mb->lo_start, mb->lo_end, seed);
  check_filled(&vm, mb->hi_start, mb->hi_end, seed);
  CHECK(mb->a == pattern_checksum(mb->lo_start, mb->lo_end, seed) &&
            mb->b == pattern_checksum(mb->hi_start, mb->hi_end, seed),
        "guest checksums %#llx %#llx", (unsigned long long)mb->a, (unsigned long long)mb->b);
  say("guest filled and checksummed %llu MiB in %.1f ms; every word checked here "
      "(%lld KiB on huge pages)",
      (unsigned long long)((mb->lo_end - mb->lo_start + mb->hi_end - mb->hi_start) / MIB),
      (t1 - t0) / 1e3, huge_kib(&vm));
  snapshot_full(&vm, &snap);

  /* The device window: file A, swapped for file B between two exits, then removed. */
  run_to(&vm, STEP_WINDOW_A);
  CHECK(mb->a == pattern_checksum(WINDOW_GPA, WINDOW_GPA + WINDOW_SIZE, 0xa),
        "window A checksum %#llx", (unsigned long long)mb->a);
  t0 = now_us();
  CHECK_OK(ma_arena_remove_mapping(vm.arena, WINDOW_GPA, WINDOW_SIZE));
  CHECK_OK(ma_arena_add_fd_mapping(vm.arena, WINDOW_GPA, WINDOW_SIZE, win_b, 0,
                                   MA_PROT_READ | MA_PROT_WRITE));
  t1 = now_us();
  run_to(&vm, STEP_WINDOW_B);
  CHECK(mb->a == pattern_checksum(WINDOW_GPA, WINDOW_GPA + WINDOW_SIZE, 0xb),
        "window B checksum %#llx: the guest did not see the new file", (unsigned long long)mb->a);
  say("window: guest read file A, the file was swapped for B in %.0f us, the guest read B",
      t1 - t0);
  CHECK_OK(ma_arena_remove_mapping(vm.arena, WINDOW_GPA, WINDOW_SIZE));
  set_slot(&vm, SLOT_WIN, WINDOW_GPA, 0, 0); /* size 0 deletes the slot */
  vm.window_present = false;
  run_to(&vm, STEP_WINDOW_GONE);
  CHECK(mb->a == 0xffffffffu && vm.absent_reads == 1, "removed window read %#llx, %llu MMIO reads",
        (unsigned long long)mb->a, (unsigned long long)vm.absent_reads);
  say("window removed: the guest's read became an MMIO exit, answered as absent (%#llx)",
      (unsigned long long)mb->a);

  /* Balloon: the guest hands a range back; its memfd blocks go. */
  run_to(&vm, STEP_BALLOON);
  uint64_t bal = mb->balloon_gpa, bal_len = mb->balloon_len;
  long long before = blocks_kib(vm.hi_fd);
  t0 = now_us();
  CHECK_OK(ma_arena_advise(vm.arena, bal, bal_len, MA_ADV_REMOVE));
  t1 = now_us();
  mark_host_dirty(&snap, bal, bal_len);
  long long after = blocks_kib(vm.hi_fd);
  CHECK(before - after >= (long long)(bal_len >> 10), "st_blocks: %lld KiB -> %lld KiB", before,
        after);
  for (uint64_t gpa = bal; gpa < bal + bal_len; gpa += 8)
    CHECK(*(uint64_t *)(vm.mem + gpa) == 0, "ballooned gpa %#llx not zero",
          (unsigned long long)gpa);
  run_to(&vm, STEP_BALLOON_READ);
  CHECK(mb->a == 0 && mb->b == bal_len / 8, "guest read %llu non-zero of %llu words",
        (unsigned long long)mb->a, (unsigned long long)mb->b);
  say("balloon [%#llx, +%llu KiB): memfd %lld KiB -> %lld KiB in %.0f us, the guest reads zeros",
      (unsigned long long)bal, (unsigned long long)(bal_len >> 10), before, after, t1 - t0);

  /* The device backend writes guest RAM while the guest polls for it. */
  run_to(&vm, STEP_DEVICE_KICK);
  struct backend_msg req = {.gpa = mb->dev_gpa, .len = mb->dev_len, .seed = mb->dev_seed};
  send_msg(sock, &req, NULL, 0);
  mark_host_dirty(&snap, req.gpa, req.len);
  run_to(&vm, STEP_DEVICE_DONE);
  CHECK(mb->a == pattern_checksum(req.gpa + 8, req.gpa + req.len, req.seed),
        "device data checksum %#llx", (unsigned long long)mb->a);
  CHECK(mb->b > 0, "the guest never polled: the data was there before it ran");
  int none[2];
  CHECK(recv_msg(sock, &req, none) == 0 && req.status == 0, "backend reply");
  say("device backend wrote %llu KiB while the guest ran; the guest polled %llu times, "
      "checksum matches",
      (unsigned long long)(req.len >> 10), (unsigned long long)mb->b);
  stop_backend(sock);

  /* Snapshot the guest after it dirtied known pages; restores resume it from here. */
  run_to(&vm, STEP_DIRTY);
  snapshot_incremental(&vm, &snap, mb->dirty_stride);
  run_to(&vm, STEP_RESUMED);
  run_to(&vm, STEP_FINAL);
  CHECK(mb->a == host_checksum(&vm, mb->lo_start, mb->lo_end) &&
            mb->b == host_checksum(&vm, mb->hi_start, mb->hi_end),
        "final checksums differ between guest and host");
  say("final checksums agree: low %#llx, high %#llx", (unsigned long long)mb->a,
      (unsigned long long)mb->b);
  snap.meta.final_lo = mb->a;
  snap.meta.final_hi = mb->b;
  write_meta(&snap);
  CHECK(run_vcpu(&vm) == 0, "the guest did not halt");
  say("guest halted");

  munmap(vm.run, vm.run_size);
  close(vm.vcpu);
  close(vm.fd);
  close(vm.kvm);
  ma_arena_destroy(vm.arena);
  close(vm.lo_fd);
  close(vm.hi_fd);
  close(win_a);
  close(win_b);

  /* Restore in new processes, into fresh arenas: copying first, then on first touch. */
  run_restore(&snap, o.guest, false);
  run_restore(&snap, o.guest, true);
  snap_remove(&snap);
  say("all checks passed, restores included");
  return 0;
}
