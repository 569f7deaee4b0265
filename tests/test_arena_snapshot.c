/* The arena's snapshot and lazy-restore calls (include/mapalloc/arena.h): which pages have
 * memory (ma_arena_resident), and userfaultfd missing mode over memfd mappings
 * (ma_arena_uffd_register, _unregister, _copy), the way a VMM restores guest RAM lazily:
 * a handler thread serves each page on first touch from "the snapshot". */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "mapalloc/arena.h"

#define RW (MA_PROT_READ | MA_PROT_WRITE)

static size_t ps;

static void setup(void) {
  ps = (size_t)sysconf(_SC_PAGESIZE);
}

TestSuite(arena_snapshot, .init = setup);

static ma_arena *make(size_t pages) {
  ma_arena *a = NULL;
  cr_assert_eq(ma_arena_create(pages * ps, 0, &a), 0);
  return a;
}

static int empty_memfd(size_t pages) {
  int fd = memfd_create("test_arena_snapshot", MFD_CLOEXEC);
  cr_assert_geq(fd, 0);
  cr_assert_eq(ftruncate(fd, (off_t)(pages * ps)), 0);
  return fd;
}

/* ---- ma_arena_resident ------------------------------------------------------------------- */

Test(arena_snapshot, resident_reports_pages_with_memory) {
  ma_arena *a = make(16);
  int fd = empty_memfd(8);
  char *base = ma_arena_base(a);
  cr_assert_eq(ma_arena_add_fd_mapping(a, 4 * ps, 8 * ps, fd, 0, RW), 0);
  base[4 * ps] = 1;                                     /* through the mapping: page 0 */
  base[9 * ps + 5] = 1;                                 /* page 5 */
  cr_assert_eq(pwrite(fd, "x", 1, (off_t)(6 * ps)), 1); /* through the file: page 6 */
  (void)*(volatile char *)(base + 11 * ps);             /* a read of a hole: page 7 too */
  unsigned char vec[8];
  cr_assert_eq(ma_arena_resident(a, 4 * ps, 8 * ps, vec), 0);
  static const unsigned char want[8] = {1, 0, 0, 0, 0, 1, 1, 1};
  for (int i = 0; i < 8; i++) cr_assert_eq(vec[i] & 1, want[i], "page %d", i);

  /* Ballooned out: no memory any more. */
  cr_assert_eq(ma_arena_advise(a, 9 * ps, ps, MA_ADV_REMOVE), 0);
  cr_assert_eq(ma_arena_resident(a, 9 * ps, ps, vec), 0);
  cr_assert_eq(vec[0] & 1, 0, "punched page");

  /* Anonymous memory: only what was touched. */
  cr_assert_eq(ma_arena_add_anon_mapping(a, 13 * ps, 2 * ps, RW), 0);
  base[14 * ps] = 1;
  cr_assert_eq(ma_arena_resident(a, 13 * ps, 2 * ps, vec), 0);
  cr_assert_eq(vec[0] & 1, 0);
  cr_assert_eq(vec[1] & 1, 1);

  cr_assert_eq(ma_arena_resident(a, 0, 8 * ps, vec), -ENOENT, "pages 0-3 are reserved");
  cr_assert_eq(ma_arena_resident(a, 4 * ps, 8 * ps, NULL), -EINVAL);
  cr_assert_eq(ma_arena_resident(a, 4 * ps + 1, ps, vec), -EINVAL);
  cr_assert_eq(ma_arena_resident(NULL, 0, ps, vec), -EINVAL);
  ma_arena_destroy(a);
  close(fd);
}

/* ---- userfaultfd --------------------------------------------------------------------------- */

/* A userfaultfd for missing mode over shmem, or -errno with the reason in *why. */
static int open_uffd(const char **why) {
  int u = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
  if (u < 0) {
    *why = "userfaultfd(2) refused (needs CAP_SYS_PTRACE or vm.unprivileged_userfaultfd=1)";
    return -errno;
  }
  struct uffdio_api api = {.api = UFFD_API, .features = 0};
  if (ioctl(u, UFFDIO_API, &api) != 0 || !(api.features & UFFD_FEATURE_MISSING_SHMEM)) {
    *why = "the kernel's userfaultfd has no missing mode over shmem";
    close(u);
    return -EOPNOTSUPP;
  }
  return u;
}

/* The "snapshot" a page is restored from: page p of the arena is filled with (p + 0x40). */
struct server {
  ma_arena *a;
  int uffd;
  int stop;     /* set by the test, atomically */
  int served;   /* faults reported and answered (counted before the answer wakes the toucher) */
  int refused;  /* copies that failed other than with -EEXIST */
  size_t first; /* arena offset of the first fault, for the test */
};

static void *serve(void *p) {
  struct server *s = p;
  char *page = malloc(ps);
  uintptr_t base = (uintptr_t)ma_arena_base(s->a);
  while (!__atomic_load_n(&s->stop, __ATOMIC_ACQUIRE)) {
    struct pollfd pfd = {.fd = s->uffd, .events = POLLIN};
    if (poll(&pfd, 1, 20) <= 0) continue;
    struct uffd_msg msg;
    if (read(s->uffd, &msg, sizeof msg) != (ssize_t)sizeof msg) continue;
    if (msg.event != UFFD_EVENT_PAGEFAULT) continue;
    size_t off = ((uintptr_t)msg.arg.pagefault.address - base) & ~(ps - 1);
    memset(page, (int)(off / ps + 0x40), ps);
    if (__atomic_load_n(&s->served, __ATOMIC_RELAXED) == 0) s->first = off;
    __atomic_fetch_add(&s->served, 1, __ATOMIC_ACQ_REL);
    size_t copied = 0;
    int r = ma_arena_uffd_copy(s->a, off, page, ps, s->uffd, &copied);
    if (r != 0 || copied != ps) __atomic_fetch_add(&s->refused, 1, __ATOMIC_RELAXED);
  }
  free(page);
  return NULL;
}

Test(arena_snapshot, uffd_serves_memfd_pages_on_first_touch) {
  const char *why = NULL;
  int uffd = open_uffd(&why);
  if (uffd < 0) cr_skip_test("%s", why);
  ma_arena *a = make(16);
  int fd = empty_memfd(8);
  char *base = ma_arena_base(a);
  cr_assert_eq(ma_arena_add_fd_mapping(a, 4 * ps, 8 * ps, fd, 0, RW), 0);
  cr_assert_eq(pwrite(fd, "z", 1, (off_t)(7 * ps)), 1, "page 7 already has memory");

  cr_assert_eq(ma_arena_uffd_register(a, 0, 8 * ps, uffd, MA_UFFD_MISSING), -ENOENT);
  cr_assert_eq(ma_arena_uffd_register(a, 4 * ps, 8 * ps, uffd, 0), -EINVAL, "no mode");
  cr_assert_eq(ma_arena_uffd_register(a, 4 * ps, 8 * ps, uffd, 2), -EINVAL, "unknown mode");
  cr_assert_eq(ma_arena_uffd_register(a, 4 * ps, 8 * ps, -1, MA_UFFD_MISSING), -EBADF);
  cr_assert_lt(ma_arena_uffd_register(a, 4 * ps, 8 * ps, fd, MA_UFFD_MISSING), 0, "not a uffd");
  cr_assert_eq(ma_arena_uffd_register(a, 4 * ps, 8 * ps, uffd, MA_UFFD_MISSING), 0);

  struct server s = {.a = a, .uffd = uffd};
  pthread_t t;
  cr_assert_eq(pthread_create(&t, NULL, serve, &s), 0);
  /* Touch pages 0-6 of the file in a scattered order: each is served once, on first touch. */
  static const int order[7] = {3, 0, 6, 1, 5, 2, 4};
  for (int i = 0; i < 7; i++) {
    size_t off = (4 + (size_t)order[i]) * ps;
    cr_assert_eq(((volatile char *)base)[off + 17], (char)(off / ps + 0x40), "page %d", order[i]);
    cr_assert_eq(__atomic_load_n(&s.served, __ATOMIC_ACQUIRE), i + 1, "one fault per page");
    if (i == 0) cr_assert_eq(s.first, off, "the fault reports the touched page");
  }
  cr_assert_eq(((volatile char *)base)[11 * ps], 'z', "a page already in the file is not missing");
  for (int p = 0; p < 7; p++) cr_assert_eq(base[(4 + p) * ps + ps - 1], (char)(4 + p + 0x40));
  cr_assert_eq(s.served, 7, "touching served pages again faults no more");
  base[6 * ps] = 'w';
  char c = 0;
  cr_assert_eq(pread(fd, &c, 1, (off_t)(2 * ps)), 1);
  cr_assert_eq(c, 'w', "served pages are the file's pages");

  /* Resolving a page that has memory is refused, and nothing is written. */
  char src[4096 * 4];
  memset(src, 'q', sizeof src);
  size_t copied = 99;
  cr_assert_leq(ps, sizeof src / 2);
  cr_assert_eq(ma_arena_uffd_copy(a, 5 * ps, src, ps, uffd, &copied), -EEXIST);
  cr_assert_eq(copied, 0);
  cr_assert_eq(base[5 * ps], (char)(5 + 0x40));
  cr_assert_eq(ma_arena_uffd_copy(a, 5 * ps, NULL, ps, uffd, NULL), -EINVAL);
  cr_assert_eq(ma_arena_uffd_copy(a, 5 * ps + 1, src, ps, uffd, NULL), -EINVAL);

  /* Unregistered: a missing page is filled with zeros by the kernel, no fault is reported. */
  cr_assert_eq(ma_arena_advise(a, 8 * ps, ps, MA_ADV_REMOVE), 0);
  cr_assert_eq(ma_arena_uffd_unregister(a, 4 * ps, 8 * ps, uffd), 0);
  cr_assert_eq(((volatile char *)base)[8 * ps], 0);
  cr_assert_eq(s.served, 7);
  cr_assert_eq(ma_arena_uffd_unregister(a, 0, 8 * ps, uffd), -ENOENT);

  /* A new mapping over a registered range is not registered: the kernel forgot it. */
  cr_assert_eq(ma_arena_uffd_register(a, 4 * ps, 8 * ps, uffd, MA_UFFD_MISSING), 0);
  cr_assert_eq(ma_arena_remove_mapping(a, 10 * ps, 2 * ps), 0);
  cr_assert_eq(ma_arena_advise(a, 9 * ps, ps, MA_ADV_REMOVE), 0);
  cr_assert_eq(ma_arena_add_fd_mapping(a, 10 * ps, 2 * ps, fd, 6 * ps, RW), 0);
  cr_assert_eq(ma_arena_advise(a, 10 * ps, ps, MA_ADV_REMOVE), 0);
  cr_assert_eq(((volatile char *)base)[10 * ps], 0, "the new mapping: zeros, no fault");
  cr_assert_eq(s.served, 7);
  cr_assert_eq(((volatile char *)base)[9 * ps], (char)(9 + 0x40), "the old one still faults");
  cr_assert_eq(s.served, 8);

  __atomic_store_n(&s.stop, 1, __ATOMIC_RELEASE);
  cr_assert_eq(pthread_join(t, NULL), 0);
  cr_assert_eq(s.refused, 0);
  close(uffd);
  ma_arena_destroy(a);
  close(fd);
}
