/* The system calls of the Linux page layer, each behind one thin wrapper.
 *
 * Every system call src/os/ makes goes through a function of this file, and every wrapper
 * first asks sys_inject() whether to fail. That is the single spot of the test-only fault
 * injection hook (fault.h): built with -DMAPALLOC_FAULT_INJECTION=ON, os_fault_arm(n, err)
 * makes the Nth next wrapper return failure with errno err without entering the kernel
 * (os_fault_calls() counts the calls, so a test can fail each of a scenario's calls in
 * turn: tests/test_fault.c, docs/testing.md). In every other build sys_inject() is the
 * constant 0 and the check compiles to nothing.
 *
 * The wrappers keep the libc conventions (-1 or MAP_FAILED with errno set) so call sites
 * read like the system calls they stand for. Internal to src/os/.
 */
#ifndef MAPALLOC_SYS_LINUX_H
#define MAPALLOC_SYS_LINUX_H

#include <errno.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

#include "os/fault.h"

/* Returns 0 to let a system call through, or a positive errno to fail it (fault injection).
 */
static inline int sys_inject(void) {
#ifdef MA_FAULT_INJECTION
  return os_fault_check();
#else
  return 0;
#endif
}

#define SYS_INJECT_OR(fail)                                                                        \
  do {                                                                                             \
    int e_ = sys_inject();                                                                         \
    if (__builtin_expect(e_ != 0, 0)) {                                                            \
      errno = e_;                                                                                  \
      return fail;                                                                                 \
    }                                                                                              \
  } while (0)

static inline void *sys_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off) {
  SYS_INJECT_OR(MAP_FAILED);
  return mmap(addr, len, prot, flags, fd, off);
}

static inline int sys_munmap(void *addr, size_t len) {
  SYS_INJECT_OR(-1);
#ifdef MA_FAULT_INJECTION
  int e = os_fault_check_munmap(); /* munmap alone refused (fault.h) */
  if (__builtin_expect(e != 0, 0)) {
    errno = e;
    return -1;
  }
#endif
  return munmap(addr, len);
}

static inline void *sys_mremap(void *addr, size_t old_len, size_t new_len, int flags) {
  SYS_INJECT_OR(MAP_FAILED);
  return mremap(addr, old_len, new_len, flags);
}

static inline int sys_mprotect(void *addr, size_t len, int prot) {
  SYS_INJECT_OR(-1);
  return mprotect(addr, len, prot);
}

static inline int sys_madvise(void *addr, size_t len, int advice) {
  SYS_INJECT_OR(-1);
  return madvise(addr, len, advice);
}

/* process_madvise(2) through syscall(2) (glibc 2.36 has no wrapper); -1 with errno. */
static inline long sys_process_madvise(int pidfd, const struct iovec *iov, size_t n, int advice) {
  SYS_INJECT_OR(-1);
#ifdef SYS_process_madvise
  return syscall(SYS_process_madvise, pidfd, iov, n, advice, 0u);
#else
  (void)pidfd, (void)iov, (void)n, (void)advice;
  errno = ENOSYS;
  return -1;
#endif
}

/* mlock and munlock through syscall(2): AddressSanitizer replaces the libc functions with
 * no-ops, and a lock the caller asked for must happen in every build. */
static inline int sys_mlock(const void *addr, size_t len) {
  SYS_INJECT_OR(-1);
  return (int)syscall(SYS_mlock, addr, len);
}

/* mlock2 through syscall(2): glibc grew a wrapper only in 2.27. */
static inline int sys_mlock2(const void *addr, size_t len, unsigned flags) {
  SYS_INJECT_OR(-1);
  return (int)syscall(SYS_mlock2, addr, len, flags);
}

static inline int sys_munlock(const void *addr, size_t len) {
  SYS_INJECT_OR(-1);
  return (int)syscall(SYS_munlock, addr, len);
}

static inline int sys_msync(void *addr, size_t len, int flags) {
  SYS_INJECT_OR(-1);
  return msync(addr, len, flags);
}

static inline int sys_prctl5(int op, unsigned long a2, unsigned long a3, unsigned long a4,
                             unsigned long a5) {
  SYS_INJECT_OR(-1);
  return prctl(op, a2, a3, a4, a5);
}

/* getrandom(2) without GRND_RANDOM; a short read is the caller's to handle. */
static inline ssize_t sys_getrandom(void *buf, size_t len, unsigned flags) {
  SYS_INJECT_OR(-1);
  return (ssize_t)syscall(SYS_getrandom, buf, len, flags);
}

static inline int sys_open(const char *path, int flags) {
  SYS_INJECT_OR(-1);
  return open(path, flags);
}

static inline ssize_t sys_read(int fd, void *buf, size_t len) {
  SYS_INJECT_OR(-1);
  return read(fd, buf, len);
}

static inline int sys_close(int fd) {
  SYS_INJECT_OR(-1);
  return close(fd);
}

/* getdents64 through syscall(2): unlike readdir it never calls malloc. */
static inline long sys_getdents64(int fd, void *buf, size_t len) {
  SYS_INJECT_OR(-1);
  return syscall(SYS_getdents64, fd, buf, len);
}

#endif /* MAPALLOC_SYS_LINUX_H */
