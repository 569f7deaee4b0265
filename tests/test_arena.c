/* Tests of the mapping arena (include/mapalloc/arena.h, src/arena/arena.c). */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/capability.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common.h"
#include "mapalloc/arena.h"

#if defined(__SANITIZE_ADDRESS__) || defined(__has_feature)
/* Under AddressSanitizer: let SIGSEGV kill the process as the fault probes expect. */
const char *__asan_default_options(void);
const char *__asan_default_options(void) {
  return "handle_segv=0";
}
#endif

#define RW (MA_PROT_READ | MA_PROT_WRITE)

static size_t ps;

static void setup(void) {
  ps = (size_t)sysconf(_SC_PAGESIZE);
}

TestSuite(arena, .init = setup);

/* ---- Helpers -------------------------------------------------------------------------------- */

/* A memfd of `pages` pages; page i is filled with byte (seed + i). */
static int memfd_pattern(size_t pages, int seed) {
  int fd = memfd_create("test_arena", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  cr_assert_geq(fd, 0);
  cr_assert_eq(ftruncate(fd, (off_t)(pages * ps)), 0);
  char *buf = malloc(ps);
  for (size_t i = 0; i < pages; i++) {
    memset(buf, (char)(seed + (int)i), ps);
    cr_assert_eq(pwrite(fd, buf, ps, (off_t)(i * ps)), (ssize_t)ps);
  }
  free(buf);
  return fd;
}

static void touch_read(void *p) {
  (void)*(volatile char *)p;
}
static void touch_write(void *p) {
  *(volatile char *)p = 1;
}

/* Does touching `p` (read, or write when `write`) kill a child with SIGSEGV? */
static bool faults(volatile char *p, bool write) {
  return child_segfaults(write ? touch_write : touch_read, (void *)p);
}

static ma_arena *make(size_t pages) {
  ma_arena *a = NULL;
  cr_assert_eq(ma_arena_create(pages * ps, 0, &a), 0);
  cr_assert_not_null(a);
  return a;
}

#define MAX_SEEN 64
struct seen {
  ma_arena_mapping m[MAX_SEEN];
  size_t n;
};

static int seen_fn(const ma_arena_mapping *m, void *p) {
  struct seen *s = p;
  if (s->n < MAX_SEEN) s->m[s->n] = *m;
  s->n++;
  return 0;
}

static struct seen list(const ma_arena *a) {
  struct seen s = {.n = 0};
  cr_assert_eq(ma_arena_foreach(a, seen_fn, &s), 0);
  return s;
}

/* Counts open descriptors of this process. */
static int open_fds(void) {
  DIR *d = opendir("/proc/self/fd");
  cr_assert_not_null(d);
  int n = 0;
  while (readdir(d)) n++;
  closedir(d);
  return n;
}

/* The VmFlags line of the /proc/self/smaps entry containing addr (empty if none). */
static void vmflags(const void *addr, char *out, size_t outlen) {
  FILE *f = fopen("/proc/self/smaps", "r");
  cr_assert_not_null(f);
  char line[512];
  bool in = false;
  out[0] = 0;
  while (fgets(line, sizeof line, f)) {
    unsigned long lo, hi;
    if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2 && strchr(line, '-') < strchr(line, ' ')) {
      in = (uintptr_t)addr >= lo && (uintptr_t)addr < hi;
    } else if (in && strncmp(line, "VmFlags:", 8) == 0) {
      size_t n = strlen(line + 8);
      if (n >= outlen) n = outlen - 1;
      memcpy(out, line + 8, n);
      out[n] = 0;
      break;
    }
  }
  fclose(f);
}

static bool has_vmflag(const void *addr, const char *flag) {
  char fl[512], pat[8];
  vmflags(addr, fl, sizeof fl);
  snprintf(pat, sizeof pat, " %s", flag);
  return strstr(fl, pat) != NULL;
}

/* ---- Create ---------------------------------------------------------------------------------- */

Test(arena, create_rejects_bad_arguments) {
  ma_arena *a = (ma_arena *)0x1;
  cr_assert_eq(ma_arena_create(ps, 0, NULL), -EINVAL);
  cr_assert_eq(ma_arena_create(0, 0, &a), -EINVAL);
  cr_assert_eq(ma_arena_create(ps + 1, 0, &a), -EINVAL);
  cr_assert_eq(ma_arena_create(ps, MA_MAP_SHARED, &a), -EINVAL);
  cr_assert_eq(ma_arena_create(ps, MA_MAP_POPULATE, &a), -EINVAL);
  cr_assert_eq(ma_arena_create(ps, MA_MAP_JIT, &a), -EINVAL);
  cr_assert_eq(ma_arena_create(ps, 1u << 20, &a), -EINVAL);
  cr_assert_eq(a, (ma_arena *)0x1, "*out untouched on failure");
  cr_assert_eq(ma_arena_create(SIZE_MAX & ~(ps - 1), 0, &a), -ENOMEM);
}

Test(arena, create_accessors_and_alignment) {
  ma_arena *a = make(1024); /* 4 MiB: 2 MiB aligned */
  cr_assert_eq(ma_arena_len(a), 1024 * ps);
  cr_assert_eq((uintptr_t)ma_arena_base(a) % (2u << 20), 0);
  cr_assert_eq(ma_arena_count(a), 0);
  cr_assert_null(ma_arena_base(NULL));
  cr_assert_eq(ma_arena_len(NULL), 0);
  cr_assert_eq(ma_arena_count(NULL), 0);
  ma_arena_destroy(a);
  ma_arena_destroy(NULL);
}

Test(arena, fresh_arena_faults, .signal = SIGSEGV) {
  ma_arena *a = make(4);
  volatile char *p = ma_arena_base(a);
  (void)p[ps];
}

#if defined(__SANITIZE_THREAD__)
#define TSAN_BUILD 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define TSAN_BUILD 1
#endif
#endif

Test(arena, one_tib_arena_is_not_charged) {
#ifdef TSAN_BUILD
  cr_skip_test("ThreadSanitizer's high application range (1.5 TiB) cannot hold 2 TiB");
#endif
  /* overcommit heuristics refuse a charged 1 TiB mapping on this machine: this only works
   * because the reservation is NORESERVE and PROT_NONE. Two at once to be sure. */
  size_t tib = (size_t)1 << 40;
  ma_arena *a = NULL, *b = NULL;
  cr_assert_eq(ma_arena_create(tib, 0, &a), 0);
  cr_assert_eq(ma_arena_create(tib, MA_MAP_DONTDUMP, &b), 0);
  cr_assert_eq((uintptr_t)ma_arena_base(a) % ((size_t)1 << 30), 0, "1 GiB aligned");
  int fd = memfd_pattern(2, 0x30);
  char *base = ma_arena_base(a);
  size_t mid = tib / 2, last = tib - ps;
  cr_assert_eq(ma_arena_add_fd_mapping(a, mid, 2 * ps, fd, 0, RW), 0);
  cr_assert_eq(ma_arena_add_fd_mapping(a, last, ps, fd, ps, RW), 0);
  cr_assert_eq(base[mid], 0x30);
  cr_assert_eq(base[last + ps - 1], 0x31);
  base[mid + ps] = 0x55;
  cr_assert_eq(base[last], 0x55, "both mappings share the file page");
  cr_assert_eq(ma_arena_add_fd_mapping(a, last, 2 * ps, fd, 0, RW), -EINVAL, "past the end");
  cr_assert_eq(ma_arena_remove_mapping(a, 0, tib), 0, "one call removes everything");
  cr_assert_eq(ma_arena_count(a), 0);
  cr_assert(faults(base + mid, false));
  close(fd);
  ma_arena_destroy(a);
  ma_arena_destroy(b);
}

Test(arena, destroy_returns_the_whole_range) {
  ma_arena *a = make(64);
  int fd = memfd_pattern(4, 1);
  char *base = ma_arena_base(a);
  cr_assert_eq(ma_arena_add_fd_mapping(a, 8 * ps, 4 * ps, fd, 0, RW), 0);
  cr_assert_eq(ma_arena_add_anon_mapping(a, 20 * ps, 4 * ps, RW), 0);
  ma_arena_destroy(a);
  unsigned char vec[64];
  errno = 0;
  cr_assert_eq(mincore(base, 64 * ps, vec), -1);
  cr_assert_eq(errno, ENOMEM, "nothing is mapped at the old arena range");
  close(fd);
}

/* ---- Add ------------------------------------------------------------------------------------- */

Test(arena, fd_mapping_is_shared_with_the_file) {
  ma_arena *a = make(16);
  int fd = memfd_pattern(8, 0x10);
  char *base = ma_arena_base(a);
  cr_assert_eq(ma_arena_add_fd_mapping(a, 4 * ps, 3 * ps, fd, 2 * ps, RW), 0);
  cr_assert_eq(base[4 * ps], 0x12, "fd_off 2 pages");
  cr_assert_eq(base[6 * ps + ps - 1], 0x14);
  base[5 * ps + 7] = 'x';
  char c = 0;
  cr_assert_eq(pread(fd, &c, 1, (off_t)(3 * ps + 7)), 1);
  cr_assert_eq(c, 'x', "writes reach the file");
  cr_assert_eq(pwrite(fd, "y", 1, (off_t)(2 * ps)), 1);
  cr_assert_eq(base[4 * ps], 'y', "file writes are seen through the mapping");
  cr_assert(faults(base + 3 * ps, false), "the page before is still reserved");
  cr_assert(faults(base + 7 * ps, false), "the page after is still reserved");
  ma_arena_mapping m;
  cr_assert_eq(ma_arena_find(a, 5 * ps + 1, &m), 0);
  cr_assert_eq(m.off, 4 * ps);
  cr_assert_eq(m.len, 3 * ps);
  cr_assert(!m.anon);
  struct stat st;
  cr_assert_eq(fstat(fd, &st), 0);
  cr_assert_eq(m.dev, (uint64_t)st.st_dev);
  cr_assert_eq(m.ino, (uint64_t)st.st_ino);
  cr_assert_eq(ma_arena_mapping_is_fd(&m, fd), 1);
  cr_assert_eq(m.fd_off, 2 * ps);
  cr_assert_eq(m.prot, RW);
  close(fd);
  ma_arena_destroy(a);
}

/* The caller closes its descriptor and an unrelated file takes the same number: the arena
 * must still describe the file it maps, never the new one (issue 11, item 3). */
Test(arena, reused_fd_number_is_not_reported) {
  ma_arena *a = make(16);
  int fd = memfd_pattern(4, 0x21);
  struct stat mapped;
  cr_assert_eq(fstat(fd, &mapped), 0);
  cr_assert_eq(ma_arena_add_fd_mapping(a, 2 * ps, 4 * ps, fd, 0, RW), 0);
  cr_assert_eq(ma_arena_add_anon_mapping(a, 8 * ps, ps, RW), 0);
  int number = fd;
  close(fd);
  int other = memfd_pattern(4, 0x77);
  cr_assert_eq(other, number, "the lowest free number is reused");
  ma_arena_mapping m;
  cr_assert_eq(ma_arena_find(a, 3 * ps, &m), 0);
  cr_assert(!m.anon);
  cr_assert_eq(m.ino, (uint64_t)mapped.st_ino, "the mapped file, not the reused number's");
  cr_assert_eq(m.dev, (uint64_t)mapped.st_dev);
  cr_assert_eq(ma_arena_mapping_is_fd(&m, other), 0, "the new file at the same number differs");
  cr_assert_eq(((char *)ma_arena_base(a))[3 * ps], 0x22,
               "the mapping still shows the old file (its page 1)");
  /* A second descriptor of the mapped file is recognised (what a VMM looks up). */
  char path[64];
  snprintf(path, sizeof path, "/proc/self/map_files/%lx-%lx",
           (unsigned long)((char *)ma_arena_base(a) + 2 * ps),
           (unsigned long)((char *)ma_arena_base(a) + 6 * ps));
  int again = open(path, O_RDONLY | O_CLOEXEC);
  if (again >= 0) { /* map_files needs CAP_SYS_ADMIN */
    cr_assert_eq(ma_arena_mapping_is_fd(&m, again), 1);
    close(again);
  }
  cr_assert_eq(ma_arena_find(a, 8 * ps, &m), 0);
  cr_assert(m.anon);
  cr_assert_eq(m.ino, 0);
  cr_assert_eq(ma_arena_mapping_is_fd(&m, other), 0, "anonymous maps no file");
  cr_assert_eq(ma_arena_mapping_is_fd(NULL, other), -EINVAL);
  cr_assert_eq(ma_arena_mapping_is_fd(&m, -1), -EBADF);
  close(other);
  cr_assert_eq(ma_arena_mapping_is_fd(&m, other), -EBADF, "closed");
  /* A split keeps the identity, with fd_off advanced. */
  cr_assert_eq(ma_arena_remove_mapping(a, 3 * ps, ps), 0);
  cr_assert_eq(ma_arena_find(a, 5 * ps, &m), 0);
  cr_assert_eq(m.ino, (uint64_t)mapped.st_ino);
  cr_assert_eq(m.fd_off, 2 * ps);
  ma_arena_destroy(a);
}

Test(arena, fd_is_not_kept_open) {
  ma_arena *a = make(64);
  int before = open_fds();
  int fd = memfd_pattern(1, 0x40);
  for (size_t i = 0; i < 10; i++)
    cr_assert_eq(ma_arena_add_fd_mapping(a, 2 * i * ps, ps, fd, 0, MA_PROT_READ), 0);
  cr_assert_eq(open_fds(), before + 1, "no dup per mapping");
  close(fd);
  cr_assert_eq(open_fds(), before);
  char *base = ma_arena_base(a);
  cr_assert_eq(base[18 * ps], 0x40, "mapping outlives the caller's descriptor");
  ma_arena_destroy(a);
}

Test(arena, add_range_errors) {
  ma_arena *a = make(16);
  int fd = memfd_pattern(16, 0);
  size_t len = 16 * ps;
  cr_assert_eq(ma_arena_add_fd_mapping(NULL, 0, ps, fd, 0, RW), -EINVAL);
  cr_assert_eq(ma_arena_add_fd_mapping(a, 1, ps, fd, 0, RW), -EINVAL, "unaligned off");
  cr_assert_eq(ma_arena_add_fd_mapping(a, 0, ps + 1, fd, 0, RW), -EINVAL, "unaligned len");
  cr_assert_eq(ma_arena_add_fd_mapping(a, 0, ps, fd, 7, RW), -EINVAL, "unaligned fd_off");
  cr_assert_eq(ma_arena_add_fd_mapping(a, 0, 0, fd, 0, RW), -EINVAL, "len 0");
  cr_assert_eq(ma_arena_add_fd_mapping(a, len, ps, fd, 0, RW), -EINVAL, "starts at the end");
  cr_assert_eq(ma_arena_add_fd_mapping(a, len - ps, 2 * ps, fd, 0, RW), -EINVAL, "runs past");
  cr_assert_eq(ma_arena_add_fd_mapping(a, ps, SIZE_MAX - ps + 1, fd, 0, RW), -EINVAL,
               "off+len wraps around");
  cr_assert_eq(ma_arena_add_fd_mapping(a, SIZE_MAX - ps + 1, ps, fd, 0, RW), -EINVAL);
  cr_assert_eq(ma_arena_add_fd_mapping(a, 0, ps, fd, UINT64_MAX - ps + 1, RW), -EINVAL,
               "fd_off+len past the largest file offset");
  cr_assert_eq(ma_arena_add_fd_mapping(a, 0, ps, fd, 0, 8), -EINVAL, "unknown prot bit");
  cr_assert_eq(ma_arena_add_fd_mapping(a, 0, ps, fd, 0, RW | MA_PROT_EXEC), -EPERM, "W^X");
  cr_assert_eq(ma_arena_add_anon_mapping(a, 0, ps, RW | MA_PROT_EXEC), -EPERM, "W^X");
  cr_assert_eq(ma_arena_add_anon_mapping(a, ps, 0, RW), -EINVAL);
  cr_assert_eq(ma_arena_add_anon_mapping(NULL, 0, ps, RW), -EINVAL);
  cr_assert_eq(ma_arena_add_anon_mapping(a, 0, ps, 16), -EINVAL);
  cr_assert_eq(ma_arena_count(a), 0, "nothing recorded");
  cr_assert(faults(ma_arena_base(a), false), "nothing mapped");
  /* The exact boundary is fine. */
  cr_assert_eq(ma_arena_add_fd_mapping(a, len - ps, ps, fd, 0, RW), 0);
  cr_assert_eq(ma_arena_add_fd_mapping(a, 0, ps, fd, 0, MA_PROT_READ | MA_PROT_EXEC), 0);
  close(fd);
  ma_arena_destroy(a);
}

Test(arena, add_fd_errors) {
  ma_arena *a = make(16);
  char *base = ma_arena_base(a);
  cr_assert_eq(ma_arena_add_fd_mapping(a, 0, ps, -1, 0, RW), -EBADF);
  int closed = memfd_pattern(1, 0);
  close(closed);
  cr_assert_eq(ma_arena_add_fd_mapping(a, 0, ps, closed, 0, RW), -EBADF, "closed fd");
  cr_assert_eq(ma_arena_add_fd_mapping(a, 0, ps, 1 << 20, 0, RW), -EBADF);

  char path[] = "/tmp/test_arena_XXXXXX";
  int rw = mkstemp(path);
  cr_assert_geq(rw, 0);
  cr_assert_eq(ftruncate(rw, (off_t)ps), 0);
  int rdonly = open(path, O_RDONLY | O_CLOEXEC), wronly = open(path, O_WRONLY | O_CLOEXEC);
  int opath = open(path, O_PATH | O_CLOEXEC);
  unlink(path);
  cr_assert(rdonly >= 0 && wronly >= 0 && opath >= 0);
  cr_assert_eq(ma_arena_add_fd_mapping(a, 0, ps, opath, 0, MA_PROT_READ), -EBADF, "O_PATH");
  cr_assert_eq(ma_arena_add_fd_mapping(a, 0, ps, wronly, 0, MA_PROT_WRITE), -EACCES);
  cr_assert_eq(ma_arena_add_fd_mapping(a, 0, ps, rdonly, 0, RW), -EACCES);
  cr_assert_eq(ma_arena_count(a), 0);
  cr_assert(faults(base, false));
  cr_assert_eq(ma_arena_add_fd_mapping(a, 0, ps, rdonly, 0, MA_PROT_READ), 0);
  cr_assert_eq(ma_arena_add_fd_mapping(a, ps, ps, rw, 0, RW), 0, "a regular file works too");

  /* Directory: mmap itself refuses (-ENODEV); the range stays reserved. */
  int dir = open("/tmp", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  cr_assert_eq(ma_arena_add_fd_mapping(a, 4 * ps, ps, dir, 0, MA_PROT_READ), -ENODEV);
  cr_assert(faults(base + 4 * ps, false));
  cr_assert_eq(ma_arena_count(a), 2);
  close(dir);
  close(rw);
  close(rdonly);
  close(wronly);
  close(opath);
  ma_arena_destroy(a);
}

Test(arena, sealed_memfd) {
  ma_arena *a = make(16);
  int fd = memfd_pattern(4, 0x20);
  cr_assert_eq(fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW), 0);
  cr_assert_eq(ma_arena_add_fd_mapping(a, 0, 4 * ps, fd, 0, RW), 0, "shrink seal allows RW");
  cr_assert_eq(ma_arena_remove_mapping(a, 0, 4 * ps), 0);
  cr_assert_eq(fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE), 0);
  cr_assert_eq(ma_arena_add_fd_mapping(a, 0, ps, fd, 0, RW), -EPERM, "write-sealed");
  cr_assert(faults(ma_arena_base(a), false));
  cr_assert_eq(ma_arena_add_fd_mapping(a, 0, ps, fd, 0, MA_PROT_READ), 0);
  cr_assert_eq(((char *)ma_arena_base(a))[0], 0x20);
  close(fd);
  ma_arena_destroy(a);
}

Test(arena, overlap_is_refused) {
  ma_arena *a = make(32);
  int fd = memfd_pattern(8, 0x50);
  char *base = ma_arena_base(a);
  cr_assert_eq(ma_arena_add_fd_mapping(a, 8 * ps, 4 * ps, fd, 0, RW), 0);
  size_t cases[][2] = {{8, 4}, {8, 1}, {11, 1}, {6, 3}, {11, 3}, {4, 16}, {9, 2}};
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    cr_assert_eq(ma_arena_add_fd_mapping(a, cases[i][0] * ps, cases[i][1] * ps, fd, 4 * ps, RW),
                 -EEXIST, "case %zu", i);
    cr_assert_eq(ma_arena_add_anon_mapping(a, cases[i][0] * ps, cases[i][1] * ps, RW), -EEXIST);
  }
  cr_assert_eq(base[8 * ps], 0x50, "the original mapping is untouched");
  cr_assert_eq(base[11 * ps], 0x53);
  cr_assert_eq(ma_arena_count(a), 1);
  cr_assert(faults(base + 6 * ps, false), "neighbours stay reserved");
  /* Adjacent on both sides is not an overlap. */
  cr_assert_eq(ma_arena_add_fd_mapping(a, 7 * ps, ps, fd, 4 * ps, RW), 0);
  cr_assert_eq(ma_arena_add_anon_mapping(a, 12 * ps, ps, RW), 0);
  cr_assert_eq(ma_arena_count(a), 3);
  close(fd);
  ma_arena_destroy(a);
}

Test(arena, anon_mapping_is_zeroed_and_private) {
  ma_arena *a = make(16);
  char *base = ma_arena_base(a);
  cr_assert_eq(ma_arena_add_anon_mapping(a, 2 * ps, 2 * ps, RW), 0);
  for (size_t i = 0; i < 2 * ps; i += 512) cr_assert_eq(base[2 * ps + i], 0);
  memset(base + 2 * ps, 0x77, 2 * ps);
  ma_arena_mapping m;
  cr_assert_eq(ma_arena_find(a, 3 * ps, &m), 0);
  cr_assert(m.anon);
  cr_assert_eq(m.ino, 0);
  cr_assert_eq(m.fd_off, 0);
  pid_t pid = fork();
  if (pid == 0) {
    base[2 * ps] = 1; /* copy-on-write: the parent must not see it */
    _exit(base[3 * ps] == 0x77 ? 0 : 1);
  }
  int st;
  waitpid(pid, &st, 0);
  cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
  cr_assert_eq(base[2 * ps], 0x77);
  ma_arena_destroy(a);
}

/* ---- Remove ---------------------------------------------------------------------------------- */

Test(arena, removed_range_faults, .signal = SIGSEGV) {
  ma_arena *a = make(8);
  int fd = memfd_pattern(2, 0x60);
  volatile char *base = ma_arena_base(a);
  cr_assert_eq(ma_arena_add_fd_mapping(a, 0, 2 * ps, fd, 0, RW), 0);
  cr_assert_eq(base[ps], 0x61);
  cr_assert_eq(ma_arena_remove_mapping(a, 0, 2 * ps), 0);
  (void)base[ps];
}

Test(arena, remove_then_readd_sees_no_stale_data) {
  ma_arena *a = make(8);
  char *base = ma_arena_base(a);
  cr_assert_eq(ma_arena_add_anon_mapping(a, 0, 4 * ps, RW), 0);
  memset(base, 0x99, 4 * ps);
  unsigned char vec[4];
  cr_assert_eq(mincore(base, 4 * ps, vec), 0);
  cr_assert(vec[0] & 1, "resident before removal");
  cr_assert_eq(ma_arena_remove_mapping(a, 0, 4 * ps), 0);
  cr_assert_eq(mincore(base, 4 * ps, vec), 0);
  for (int i = 0; i < 4; i++) cr_assert_eq(vec[i] & 1, 0, "memory freed");
  cr_assert_eq(ma_arena_count(a), 0);
  cr_assert_eq(ma_arena_add_anon_mapping(a, 0, 4 * ps, RW), 0);
  cr_assert_eq(base[0], 0);
  cr_assert_eq(base[4 * ps - 1], 0);
  ma_arena_destroy(a);
}

Test(arena, remove_where_nothing_is_mapped_is_enoent) {
  ma_arena *a = make(16);
  char *base = ma_arena_base(a);
  cr_assert_eq(ma_arena_remove_mapping(a, 0, 16 * ps), -ENOENT);
  cr_assert_eq(ma_arena_add_anon_mapping(a, 4 * ps, 2 * ps, RW), 0);
  base[4 * ps] = 3;
  cr_assert_eq(ma_arena_remove_mapping(a, 0, 4 * ps), -ENOENT, "just before");
  cr_assert_eq(ma_arena_remove_mapping(a, 6 * ps, 10 * ps), -ENOENT, "just after");
  cr_assert_eq(base[4 * ps], 3, "nothing changed");
  cr_assert_eq(ma_arena_count(a), 1);
  cr_assert(faults(base + 3 * ps, false));
  /* A range reaching into the mapping removes that part; the gaps stay reserved. */
  cr_assert_eq(ma_arena_remove_mapping(a, 0, 5 * ps), 0);
  cr_assert(faults(base + 4 * ps, false));
  cr_assert_eq(base[5 * ps], 0, "the rest is still mapped");
  cr_assert_eq(ma_arena_remove_mapping(a, 4 * ps, ps), -ENOENT, "already removed");
  ma_arena_destroy(a);
}

Test(arena, remove_range_errors) {
  ma_arena *a = make(16);
  cr_assert_eq(ma_arena_add_anon_mapping(a, 0, 16 * ps, RW), 0);
  cr_assert_eq(ma_arena_remove_mapping(NULL, 0, ps), -EINVAL);
  cr_assert_eq(ma_arena_remove_mapping(a, 1, ps), -EINVAL);
  cr_assert_eq(ma_arena_remove_mapping(a, 0, ps - 1), -EINVAL);
  cr_assert_eq(ma_arena_remove_mapping(a, 0, 0), -EINVAL);
  cr_assert_eq(ma_arena_remove_mapping(a, 0, 17 * ps), -EINVAL);
  cr_assert_eq(ma_arena_remove_mapping(a, 2 * ps, SIZE_MAX - ps + 1), -EINVAL);
  cr_assert_eq(ma_arena_count(a), 1);
  ((char *)ma_arena_base(a))[15 * ps] = 1;
  ma_arena_destroy(a);
}

Test(arena, partial_removal_splits) {
  ma_arena *a = make(32);
  int fd = memfd_pattern(16, 0x10);
  char *base = ma_arena_base(a);
  cr_assert_eq(ma_arena_add_fd_mapping(a, 8 * ps, 16 * ps, fd, 0, RW), 0);
  /* Middle: [8,24) -> [8,12) + [14,24). */
  cr_assert_eq(ma_arena_remove_mapping(a, 12 * ps, 2 * ps), 0);
  struct seen s = list(a);
  cr_assert_eq(s.n, 2);
  cr_assert_eq(s.m[0].off, 8 * ps);
  cr_assert_eq(s.m[0].len, 4 * ps);
  cr_assert_eq(s.m[0].fd_off, 0);
  cr_assert_eq(s.m[1].off, 14 * ps);
  cr_assert_eq(s.m[1].len, 10 * ps);
  cr_assert_eq(s.m[1].fd_off, 6 * ps);
  cr_assert_eq(ma_arena_mapping_is_fd(&s.m[1], fd), 1);
  cr_assert_eq(s.m[0].ino, s.m[1].ino, "both pieces map the same file");
  cr_assert_eq(base[11 * ps], 0x13);
  cr_assert_eq(base[14 * ps], 0x16);
  cr_assert(faults(base + 12 * ps, false));
  cr_assert(faults(base + 13 * ps, true));
  /* Head of the second piece: [14,24) -> [16,24). */
  cr_assert_eq(ma_arena_remove_mapping(a, 14 * ps, 2 * ps), 0);
  /* Tail of the first piece: [8,12) -> [8,10). */
  cr_assert_eq(ma_arena_remove_mapping(a, 10 * ps, 2 * ps), 0);
  s = list(a);
  cr_assert_eq(s.n, 2);
  cr_assert_eq(s.m[0].off, 8 * ps);
  cr_assert_eq(s.m[0].len, 2 * ps);
  cr_assert_eq(s.m[1].off, 16 * ps);
  cr_assert_eq(s.m[1].len, 8 * ps);
  cr_assert_eq(s.m[1].fd_off, 8 * ps);
  cr_assert_eq(base[16 * ps], 0x18);
  cr_assert(faults(base + 15 * ps, false));
  cr_assert(faults(base + 10 * ps, false));
  /* The freed ranges can be mapped again, with something else. */
  cr_assert_eq(ma_arena_add_anon_mapping(a, 10 * ps, 6 * ps, RW), 0);
  cr_assert_eq(base[12 * ps], 0);
  cr_assert_eq(ma_arena_count(a), 3);
  close(fd);
  ma_arena_destroy(a);
}

Test(arena, one_remove_spans_several_mappings_and_gaps) {
  ma_arena *a = make(64);
  int fd = memfd_pattern(32, 0);
  char *base = ma_arena_base(a);
  for (size_t i = 0; i < 8; i++) /* [0,3) [4,7) ... [28,31) with one-page gaps */
    cr_assert_eq(ma_arena_add_fd_mapping(a, 4 * i * ps, 3 * ps, fd, 4 * i * ps, RW), 0);
  cr_assert_eq(ma_arena_remove_mapping(a, 5 * ps, 20 * ps), 0); /* [5,25) */
  struct seen s = list(a);
  cr_assert_eq(s.n, 4);
  cr_assert_eq(s.m[0].off, 0);
  cr_assert_eq(s.m[1].off, 4 * ps);
  cr_assert_eq(s.m[1].len, ps);
  cr_assert_eq(s.m[2].off, 25 * ps);
  cr_assert_eq(s.m[2].len, 2 * ps);
  cr_assert_eq(s.m[2].fd_off, 25 * ps);
  cr_assert_eq(s.m[3].off, 28 * ps);
  cr_assert_eq(base[25 * ps], 25);
  cr_assert_eq(base[4 * ps], 4);
  for (size_t p = 5; p < 25; p += 3) cr_assert(faults(base + p * ps, false), "page %zu", p);
  close(fd);
  ma_arena_destroy(a);
}

/* ---- Protect --------------------------------------------------------------------------------- */

Test(arena, protected_read_only_faults_on_write, .signal = SIGSEGV) {
  ma_arena *a = make(8);
  volatile char *base = ma_arena_base(a);
  cr_assert_eq(ma_arena_add_anon_mapping(a, 0, 4 * ps, RW), 0);
  base[ps] = 5;
  cr_assert_eq(ma_arena_protect(a, ps, ps, MA_PROT_READ), 0);
  cr_assert_eq(base[ps], 5, "still readable");
  base[ps] = 6;
}

Test(arena, protected_none_faults_on_read, .signal = SIGSEGV) {
  ma_arena *a = make(8);
  int fd = memfd_pattern(4, 1);
  volatile char *base = ma_arena_base(a);
  cr_assert_eq(ma_arena_add_fd_mapping(a, 0, 4 * ps, fd, 0, RW), 0);
  cr_assert_eq(ma_arena_protect(a, 2 * ps, 2 * ps, MA_PROT_NONE), 0);
  cr_assert_eq(base[ps], 2);
  (void)base[3 * ps];
}

Test(arena, protect_splits_the_record) {
  ma_arena *a = make(32);
  int fd = memfd_pattern(16, 0x30);
  char *base = ma_arena_base(a);
  cr_assert_eq(ma_arena_add_fd_mapping(a, 0, 16 * ps, fd, 0, RW), 0);
  cr_assert_eq(ma_arena_protect(a, 4 * ps, 4 * ps, MA_PROT_READ), 0);
  struct seen s = list(a);
  cr_assert_eq(s.n, 3);
  cr_assert_eq(s.m[0].len, 4 * ps);
  cr_assert_eq(s.m[0].prot, RW);
  cr_assert_eq(s.m[1].off, 4 * ps);
  cr_assert_eq(s.m[1].fd_off, 4 * ps);
  cr_assert_eq(s.m[1].prot, MA_PROT_READ);
  cr_assert_eq(s.m[2].off, 8 * ps);
  cr_assert_eq(s.m[2].fd_off, 8 * ps);
  cr_assert_eq(s.m[2].prot, RW);
  cr_assert(faults(base + 5 * ps, true));
  cr_assert_not(faults(base + 8 * ps, true));
  cr_assert_not(faults(base + 3 * ps, true));
  /* Same prot again: no further split. Across two pieces: both change. */
  cr_assert_eq(ma_arena_protect(a, 4 * ps, 2 * ps, MA_PROT_READ), 0);
  cr_assert_eq(ma_arena_count(a), 3);
  cr_assert_eq(ma_arena_protect(a, 0, 8 * ps, MA_PROT_NONE), 0);
  s = list(a);
  cr_assert_eq(s.n, 3);
  cr_assert_eq(s.m[0].prot, MA_PROT_NONE);
  cr_assert_eq(s.m[1].prot, MA_PROT_NONE);
  cr_assert(faults(base, false));
  cr_assert(faults(base + 7 * ps, false));
  cr_assert_eq(base[9 * ps], 0x39);
  /* Removing a protected part works as any other. */
  cr_assert_eq(ma_arena_remove_mapping(a, 2 * ps, 4 * ps), 0);
  s = list(a); /* [0,2) NONE, [6,8) NONE, [8,16) RW */
  cr_assert_eq(s.n, 3);
  cr_assert_eq(s.m[1].off, 6 * ps);
  cr_assert_eq(s.m[1].fd_off, 6 * ps);
  cr_assert_eq(s.m[1].prot, MA_PROT_NONE);
  cr_assert(faults(base + 6 * ps, false));
  close(fd);
  ma_arena_destroy(a);
}

Test(arena, protect_errors_change_nothing) {
  ma_arena *a = make(32);
  char *base = ma_arena_base(a);
  cr_assert_eq(ma_arena_add_anon_mapping(a, 0, 4 * ps, RW), 0);
  cr_assert_eq(ma_arena_add_anon_mapping(a, 5 * ps, 4 * ps, RW), 0);
  cr_assert_eq(ma_arena_protect(a, 2 * ps, 4 * ps, MA_PROT_READ), -ENOENT, "crosses a gap");
  cr_assert_eq(ma_arena_protect(a, 4 * ps, ps, MA_PROT_READ), -ENOENT, "only the gap");
  cr_assert_eq(ma_arena_protect(a, 20 * ps, ps, MA_PROT_READ), -ENOENT);
  cr_assert(faults(base + 4 * ps, false), "the gap was not made accessible");
  cr_assert_eq(ma_arena_protect(a, 0, 4 * ps, RW | MA_PROT_EXEC), -EPERM);
  cr_assert_eq(ma_arena_protect(a, 0, 4 * ps, 9), -EINVAL);
  cr_assert_eq(ma_arena_protect(a, 1, ps, MA_PROT_READ), -EINVAL);
  cr_assert_eq(ma_arena_protect(a, 0, 33 * ps, MA_PROT_READ), -EINVAL);
  cr_assert_eq(ma_arena_protect(NULL, 0, ps, MA_PROT_READ), -EINVAL);
  base[3 * ps] = 1; /* still writable */
  base[5 * ps] = 1;
  cr_assert_eq(ma_arena_count(a), 2);

  /* The kernel refuses WRITE on a read-only descriptor's shared mapping: record unchanged. */
  char path[] = "/tmp/test_arena_XXXXXX";
  int rw = mkstemp(path);
  cr_assert_eq(ftruncate(rw, (off_t)(4 * ps)), 0);
  int ro = open(path, O_RDONLY | O_CLOEXEC);
  unlink(path);
  cr_assert_eq(ma_arena_add_fd_mapping(a, 12 * ps, 4 * ps, ro, 0, MA_PROT_READ), 0);
  cr_assert_eq(ma_arena_protect(a, 13 * ps, ps, RW), -EACCES);
  struct seen s = list(a);
  cr_assert_eq(s.n, 3);
  cr_assert_eq(s.m[2].prot, MA_PROT_READ);
  cr_assert(faults(base + 13 * ps, true));
  close(ro);
  close(rw);
  ma_arena_destroy(a);
}

Test(arena, protect_across_adjacent_mappings) {
  ma_arena *a = make(16);
  char *base = ma_arena_base(a);
  int fd = memfd_pattern(4, 0);
  cr_assert_eq(ma_arena_add_anon_mapping(a, 0, 4 * ps, RW), 0);
  cr_assert_eq(ma_arena_add_fd_mapping(a, 4 * ps, 4 * ps, fd, 0, RW), 0);
  cr_assert_eq(ma_arena_protect(a, 2 * ps, 4 * ps, MA_PROT_READ), 0);
  cr_assert_eq(ma_arena_count(a), 4);
  cr_assert(faults(base + 2 * ps, true));
  cr_assert(faults(base + 5 * ps, true));
  cr_assert_not(faults(base + 6 * ps, true));
  close(fd);
  ma_arena_destroy(a);
}

/* ---- Advise, flush --------------------------------------------------------------------------- */

Test(arena, advise_remove_frees_memfd_blocks) {
  ma_arena *a = make(512);
  int fd = memfd_pattern(256, 1); /* 1 MiB written: allocated */
  char *base = ma_arena_base(a);
  struct stat st0, st1, st2;
  cr_assert_eq(ma_arena_add_fd_mapping(a, 0, 256 * ps, fd, 0, RW), 0);
  cr_assert_eq(fstat(fd, &st0), 0);
  cr_assert_geq((size_t)st0.st_blocks * 512, 256 * ps);
  cr_assert_eq(ma_arena_advise(a, 0, 128 * ps, MA_ADV_DONTNEED), 0);
  cr_assert_eq(fstat(fd, &st1), 0);
  cr_assert_eq(st1.st_blocks, st0.st_blocks, "DONTNEED keeps shared memfd memory");
  cr_assert_eq(base[ps], 2, "and the data");
  cr_assert_eq(ma_arena_advise(a, 0, 128 * ps, MA_ADV_REMOVE), 0);
  cr_assert_eq(fstat(fd, &st2), 0);
  cr_assert_leq((size_t)st2.st_blocks * 512, st0.st_blocks * 512 - 128 * ps, "REMOVE frees");
  cr_assert_eq(base[ps], 0, "a removed page reads as zero");
  cr_assert_eq(base[128 * ps], (char)129, "the rest is intact");
  close(fd);
  ma_arena_destroy(a);
}

Test(arena, advise_errors) {
  ma_arena *a = make(16);
  cr_assert_eq(ma_arena_add_anon_mapping(a, 0, 4 * ps, RW), 0);
  cr_assert_eq(ma_arena_advise(a, 0, 8 * ps, MA_ADV_WILLNEED), -ENOENT, "past the mapping");
  cr_assert_eq(ma_arena_advise(a, 8 * ps, ps, MA_ADV_DONTNEED), -ENOENT);
  cr_assert_eq(ma_arena_advise(a, 0, ps, (enum ma_advice)99), -EINVAL);
  cr_assert_eq(ma_arena_advise(a, 0, ps, (enum ma_advice) - 1), -EINVAL);
  cr_assert_eq(ma_arena_advise(a, 0, 0, MA_ADV_DONTNEED), -EINVAL);
  cr_assert_eq(ma_arena_advise(NULL, 0, ps, MA_ADV_DONTNEED), -EINVAL);
  cr_assert_eq(ma_arena_advise(a, 0, ps, MA_ADV_REMOVE), -EINVAL, "private anon: kernel says no");
  cr_assert_eq(ma_arena_advise(a, 0, 4 * ps, MA_ADV_WILLNEED), 0);
  ma_arena_destroy(a);
}

Test(arena, flush_writes_a_file) {
  ma_arena *a = make(16);
  char path[] = "/tmp/test_arena_XXXXXX";
  int fd = mkstemp(path);
  cr_assert_eq(ftruncate(fd, (off_t)(4 * ps)), 0);
  char *base = ma_arena_base(a);
  cr_assert_eq(ma_arena_add_fd_mapping(a, 0, 4 * ps, fd, 0, RW), 0);
  memcpy(base + ps, "flushed", 8);
  cr_assert_eq(ma_arena_flush(a, 0, 4 * ps, false), 0);
  cr_assert_eq(ma_arena_flush(a, ps, ps, true), 0);
  int fd2 = open(path, O_RDONLY | O_CLOEXEC);
  unlink(path);
  char buf[8];
  cr_assert_eq(pread(fd2, buf, 8, (off_t)ps), 8);
  cr_assert_str_eq(buf, "flushed");
  cr_assert_eq(ma_arena_flush(a, 0, 5 * ps, false), -ENOENT);
  cr_assert_eq(ma_arena_flush(a, 8 * ps, ps, false), -ENOENT);
  cr_assert_eq(ma_arena_flush(a, 0, ps / 2, false), -EINVAL);
  cr_assert_eq(ma_arena_add_anon_mapping(a, 4 * ps, ps, RW), 0);
  cr_assert_eq(ma_arena_flush(a, 0, 5 * ps, false), 0, "anonymous pages flush trivially");
  close(fd);
  close(fd2);
  ma_arena_destroy(a);
}

/* ---- Foreach and find ------------------------------------------------------------------------ */

struct reenter {
  ma_arena *a;
  int add, find, stop_at, calls;
};

static int reenter_fn(const ma_arena_mapping *m, void *p) {
  struct reenter *r = p;
  ma_arena_mapping m2;
  r->add = ma_arena_add_anon_mapping(r->a, 30 * (size_t)sysconf(_SC_PAGESIZE),
                                     (size_t)sysconf(_SC_PAGESIZE), RW);
  r->find = ma_arena_find(r->a, m->off, &m2);
  if (r->find == 0 && m2.off != m->off) r->find = -1000;
  return ++r->calls == r->stop_at ? 42 : 0;
}

Test(arena, foreach_order_stop_and_reentry) {
  ma_arena *a = make(32);
  size_t order[] = {20, 3, 11, 0, 7};
  for (size_t i = 0; i < 5; i++)
    cr_assert_eq(ma_arena_add_anon_mapping(a, order[i] * ps, ps, RW), 0);
  struct seen s = list(a);
  cr_assert_eq(s.n, 5);
  for (size_t i = 1; i < 5; i++) cr_assert_gt(s.m[i].off, s.m[i - 1].off, "increasing order");
  cr_assert_eq(ma_arena_foreach(a, NULL, NULL), -EINVAL);
  cr_assert_eq(ma_arena_foreach(NULL, seen_fn, &s), -EINVAL);
  struct reenter r = {.a = a, .stop_at = 3};
  cr_assert_eq(ma_arena_foreach(a, reenter_fn, &r), 42, "the callback's value stops the walk");
  cr_assert_eq(r.calls, 3);
  cr_assert_eq(r.add, -EDEADLK, "changes from inside the callback are refused");
  cr_assert_eq(r.find, 0, "reads from inside the callback work");
  cr_assert_eq(ma_arena_count(a), 5);
  ma_arena_destroy(a);
}

Test(arena, find_errors) {
  ma_arena *a = make(8);
  ma_arena_mapping m;
  cr_assert_eq(ma_arena_add_anon_mapping(a, 2 * ps, ps, RW), 0);
  cr_assert_eq(ma_arena_find(a, 2 * ps + ps - 1, &m), 0);
  cr_assert_eq(ma_arena_find(a, 3 * ps, &m), -ENOENT);
  cr_assert_eq(ma_arena_find(a, 0, &m), -ENOENT);
  cr_assert_eq(ma_arena_find(a, 8 * ps, &m), -EINVAL);
  cr_assert_eq(ma_arena_find(a, 0, NULL), -EINVAL);
  cr_assert_eq(ma_arena_find(NULL, 0, &m), -EINVAL);
  ma_arena_destroy(a);
}

/* ---- Create flags ---------------------------------------------------------------------------- */

Test(arena, flags_apply_to_every_mapping) {
  ma_arena *a = NULL;
  cr_assert_eq(ma_arena_create(64 * ps, MA_MAP_DONTDUMP | MA_MAP_DONTFORK | MA_MAP_HUGE_TRY, &a),
               0);
  int fd = memfd_pattern(4, 0x70);
  char *base = ma_arena_base(a);
  cr_assert_eq(ma_arena_add_fd_mapping(a, 0, 4 * ps, fd, 0, RW), 0);
  cr_assert_eq(ma_arena_add_anon_mapping(a, 8 * ps, 4 * ps, RW), 0);
  for (size_t off = 0; off <= 8 * ps; off += 8 * ps) {
    cr_assert(has_vmflag(base + off, "dd"), "DONTDUMP at %zu", off);
    cr_assert(has_vmflag(base + off, "dc"), "DONTFORK (dc = don't copy) at %zu", off);
    cr_assert(has_vmflag(base + off, "hg"), "HUGE_TRY advises huge pages at %zu", off);
  }
  cr_assert(faults(base, false), "a fork child has no copy of a DONTFORK mapping");
  cr_assert_eq(base[0], 0x70, "the parent still has it");
  close(fd);
  ma_arena_destroy(a);

  cr_assert_eq(ma_arena_create(64 * ps, 0, &a), 0);
  base = ma_arena_base(a);
  cr_assert_eq(ma_arena_add_anon_mapping(a, 0, ps, RW), 0);
  cr_assert_not(has_vmflag(base, "dd"));
  cr_assert_not(has_vmflag(base, "dc"));
  cr_assert_not(faults(base, false), "without DONTFORK the child sees it");
  ma_arena_destroy(a);
}

/* AddressSanitizer turns mlock into a no-op, so the lock itself cannot be observed there. */
#if defined(__SANITIZE_ADDRESS__)
#define MLOCK_IGNORED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define MLOCK_IGNORED 1
#endif
#endif

Test(arena, locked_flag_locks_and_faults_in) {
#ifdef MLOCK_IGNORED
  cr_skip_test("mlock is ignored under AddressSanitizer");
#endif
  ma_arena *a = NULL;
  cr_assert_eq(ma_arena_create(64 * ps, MA_MAP_LOCKED, &a), 0);
  char *base = ma_arena_base(a);
  int fd = memfd_create("locked", MFD_CLOEXEC); /* never written: nothing resident yet */
  cr_assert_eq(ftruncate(fd, (off_t)(4 * ps)), 0);
  cr_assert_eq(ma_arena_add_fd_mapping(a, 0, 4 * ps, fd, 0, RW), 0);
  cr_assert_eq(ma_arena_add_anon_mapping(a, 8 * ps, 4 * ps, RW), 0);
  unsigned char vec[4];
  for (size_t off = 0; off <= 8 * ps; off += 8 * ps) {
    cr_assert(has_vmflag(base + off, "lo"), "locked at %zu", off);
    cr_assert_eq(mincore(base + off, 4 * ps, vec), 0);
    for (int i = 0; i < 4; i++) cr_assert(vec[i] & 1, "page %d at %zu faulted in", i, off);
  }
  close(fd);
  ma_arena_destroy(a);
}

/* Beyond RLIMIT_MEMLOCK the add fails and the range stays reserved. Run in a child that
 * drops CAP_IPC_LOCK (which lets root lock without limit) and lowers the limit. */
Test(arena, locked_flag_over_the_limit_fails_cleanly) {
#ifdef MLOCK_IGNORED
  cr_skip_test("mlock is ignored under AddressSanitizer");
#endif
  struct __user_cap_header_struct hdr = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
  struct __user_cap_data_struct data[2];
  cr_assert_eq(syscall(SYS_capget, &hdr, data), 0);
  data[0].effective &= ~(1u << CAP_IPC_LOCK);
  data[0].permitted &= ~(1u << CAP_IPC_LOCK);
  cr_assert_eq(syscall(SYS_capset, &hdr, data), 0);
  struct rlimit rl = {.rlim_cur = 64 << 10, .rlim_max = 64 << 10};
  cr_assert_eq(setrlimit(RLIMIT_MEMLOCK, &rl), 0);

  ma_arena *a = NULL;
  cr_assert_eq(ma_arena_create(1024 * ps, MA_MAP_LOCKED, &a), 0);
  char *base = ma_arena_base(a);
  int r = ma_arena_add_anon_mapping(a, 0, 1024 * ps, RW);
  cr_assert(r == -ENOMEM || r == -EAGAIN || r == -EPERM, "got %d", r);
  cr_assert_eq(ma_arena_count(a), 0);
  cr_assert(faults(base, false), "the range is reserved again");
  cr_assert(faults(base + 1023 * ps, false));
  cr_assert_eq(ma_arena_add_anon_mapping(a, 0, 4 * ps, RW), 0, "within the limit it works");
  ma_arena_destroy(a);
}

/* ---- Scale and threads ----------------------------------------------------------------------- */

static int count_fn(const ma_arena_mapping *m, void *p) {
  size_t *prev_end = p;
  if (m->off < *prev_end) return -1; /* out of order or overlapping */
  *prev_end = m->off + m->len;
  return 0;
}

Test(arena, ten_thousand_mappings) {
  enum { N = 10000 };
  ma_arena *a = make(2 * N + 2);
  int fd = memfd_pattern(64, 0);
  char *base = ma_arena_base(a);
  /* Every other page, in a scattered order so the tree sees random inserts. */
  for (size_t i = 0; i < N; i++) {
    size_t k = (i * 7919) % N;
    cr_assert_eq(ma_arena_add_fd_mapping(a, 2 * k * ps, ps, fd, (k % 64) * ps, MA_PROT_READ), 0,
                 "mapping %zu", k);
  }
  cr_assert_eq(ma_arena_count(a), N);
  size_t prev_end = 0;
  cr_assert_eq(ma_arena_foreach(a, count_fn, &prev_end), 0);
  for (size_t k = 0; k < N; k += 997) {
    ma_arena_mapping m;
    cr_assert_eq(ma_arena_find(a, 2 * k * ps + 5, &m), 0);
    cr_assert_eq(m.off, 2 * k * ps);
    cr_assert_eq(m.fd_off, (k % 64) * ps);
    cr_assert_eq(base[2 * k * ps], (char)(k % 64));
    cr_assert_eq(ma_arena_find(a, (2 * k + 1) * ps, &m), -ENOENT);
  }
  /* Remove every third, then everything in one call. */
  for (size_t k = 0; k < N; k += 3) cr_assert_eq(ma_arena_remove_mapping(a, 2 * k * ps, ps), 0);
  cr_assert_eq(ma_arena_count(a), N - (N + 2) / 3);
  cr_assert(faults(base + 6 * ps, false));
  cr_assert_eq(ma_arena_remove_mapping(a, 0, (2 * N + 2) * ps), 0);
  cr_assert_eq(ma_arena_count(a), 0);
  close(fd);
  ma_arena_destroy(a);
}

enum { THREADS = 4, SLOTS = 16, ROUNDS = 150 };

struct worker {
  ma_arena *a;
  int fd;
  size_t first_slot;
  int errors;
};

static void *worker_fn(void *p) {
  struct worker *w = p;

  char *base = ma_arena_base(w->a);
  for (int r = 0; r < ROUNDS; r++) {
    size_t slot = w->first_slot + (size_t)r % SLOTS, off = 2 * slot * ps;
    bool anon = r & 1;
    int e = anon ? ma_arena_add_anon_mapping(w->a, off, 2 * ps, RW)
                 : ma_arena_add_fd_mapping(w->a, off, 2 * ps, w->fd, 0, RW);
    if (e) w->errors++;
    base[off + ps] = (char)r; /* our own range: no lock needed */
    if (base[off + ps] != (char)r) w->errors++;
    if (ma_arena_remove_mapping(w->a, off, ps) != 0) w->errors++; /* split */
    if (ma_arena_remove_mapping(w->a, off, 2 * ps) != 0) w->errors++;
  }
  return NULL;
}

static void *walker_fn(void *p) {
  struct worker *w = p;
  for (int r = 0; r < ROUNDS; r++) {
    size_t prev_end = 0;
    if (ma_arena_foreach(w->a, count_fn, &prev_end) != 0) w->errors++;
  }
  return NULL;
}

Test(arena, threads_add_and_remove_disjoint_ranges) {
  ma_arena *a = make(2 * SLOTS * THREADS);
  int fd = memfd_pattern(2, 0);
  pthread_t t[THREADS + 1];
  struct worker w[THREADS + 1];
  for (int i = 0; i <= THREADS; i++) {
    w[i] = (struct worker){.a = a, .fd = fd, .first_slot = (size_t)i * SLOTS};
    cr_assert_eq(pthread_create(&t[i], NULL, i < THREADS ? worker_fn : walker_fn, &w[i]), 0);
  }
  for (int i = 0; i <= THREADS; i++) {
    pthread_join(t[i], NULL);
    cr_assert_eq(w[i].errors, 0, "thread %d", i);
  }
  cr_assert_eq(ma_arena_count(a), 0);
  cr_assert(faults(ma_arena_base(a), false));
  close(fd);
  ma_arena_destroy(a);
}

/* Threads racing to add the same range: exactly one wins each round, the others get
 * -EEXIST, and the winner's mapping is the one in place. */
struct racer {
  ma_arena *a;
  int fd, id, errors;
  pthread_barrier_t *bar;
  int *round_wins;
};

static void *racer_fn(void *p) {
  struct racer *r = p;
  char *base = ma_arena_base(r->a);
  for (int round = 0; round < 100; round++) {
    pthread_barrier_wait(r->bar);
    int e = (r->id & 1) ? ma_arena_add_anon_mapping(r->a, ps, 2 * ps, RW)
                        : ma_arena_add_fd_mapping(r->a, 0, 2 * ps, r->fd, 0, RW);
    if (e == 0)
      __atomic_fetch_add(r->round_wins, 1, __ATOMIC_RELAXED);
    else if (e != -EEXIST)
      r->errors++;
    pthread_barrier_wait(r->bar);
    if (r->id == 0) {
      if (__atomic_load_n(r->round_wins, __ATOMIC_RELAXED) != 1) r->errors++;
      ma_arena_mapping m;
      if (ma_arena_find(r->a, ps, &m) != 0) r->errors++;
      if (!m.anon && base[ps] != 0x11) r->errors++; /* the memfd's second page */
      if (m.anon && base[ps] != 0) r->errors++;
      if (ma_arena_remove_mapping(r->a, 0, 3 * ps) != 0 || ma_arena_count(r->a) != 0) r->errors++;
      __atomic_store_n(r->round_wins, 0, __ATOMIC_RELAXED);
    }
  }
  return NULL;
}

Test(arena, racing_adds_one_winner) {
  enum { N = 4 };
  ma_arena *a = make(8);
  int fd = memfd_pattern(2, 0x10);
  pthread_barrier_t bar;
  pthread_barrier_init(&bar, NULL, N);
  int round_wins = 0;
  pthread_t t[N];
  struct racer r[N];
  for (int i = 0; i < N; i++) {
    r[i] = (struct racer){.a = a, .fd = fd, .id = i, .bar = &bar, .round_wins = &round_wins};
    cr_assert_eq(pthread_create(&t[i], NULL, racer_fn, &r[i]), 0);
  }
  for (int i = 0; i < N; i++) {
    pthread_join(t[i], NULL);
    cr_assert_eq(r[i].errors, 0, "thread %d", i);
  }
  pthread_barrier_destroy(&bar);
  close(fd);
  ma_arena_destroy(a);
}

/* ---- Fork (issue 12.3): no arena lock is inherited held ----------------------------------- */

static int cb_inside; /* atomic */

static int slow_callback(const ma_arena_mapping *m, void *ctx) {
  (void)m;
  (void)ctx;
  __atomic_store_n(&cb_inside, 1, __ATOMIC_RELEASE);
  usleep(200 * 1000); /* fork() is called meanwhile: its prepare handler must wait */
  return 0;
}

static void *foreach_thread(void *arg) {
  ma_arena_foreach(arg, slow_callback, NULL);
  return NULL;
}

/* The child runs fn(a) under a 10 s alarm; true when it exited 0. */
static bool child_ok(ma_arena *a, int (*fn)(ma_arena *)) {
  pid_t pid = fork();
  cr_assert_geq(pid, 0);
  if (pid == 0) {
    alarm(10); /* a lock inherited held: the child hangs, SIGALRM ends it */
    /* exit_group, not _exit: ThreadSanitizer's _exit reports the parent's threads, which
     * the child does not have, as leaked. */
    syscall(SYS_exit_group, fn(a));
  }
  int st = wait_child(pid);
  return WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

static int child_adds(ma_arena *a) {
  if (ma_arena_add_anon_mapping(a, 2 * ps, ps, RW) != 0) return 1;
  ((char *)ma_arena_base(a))[2 * ps] = 1;
  return ma_arena_count(a) == 2 ? 0 : 2;
}

Test(arena, fork_while_another_thread_holds_the_lock) {
  ma_arena *a = make(8);
  cr_assert_eq(ma_arena_add_anon_mapping(a, 0, ps, RW), 0);
  __atomic_store_n(&cb_inside, 0, __ATOMIC_RELEASE);
  pthread_t t;
  cr_assert_eq(pthread_create(&t, NULL, foreach_thread, a), 0);
  while (!__atomic_load_n(&cb_inside, __ATOMIC_ACQUIRE)) usleep(1000);
  cr_assert(child_ok(a, child_adds), "the fork child could not use the arena");
  pthread_join(t, NULL);
  cr_assert_eq(ma_arena_count(a), 1, "the child's mapping is not the parent's");
  ma_arena_destroy(a);
}

static ma_arena *cb_arena;
static int cb_child_ok = -1;

static int child_in_callback(ma_arena *a) {
  /* Still inside the callback: reads work, changes are refused as in the parent. */
  if (ma_arena_count(a) != 1) return 1;
  return ma_arena_add_anon_mapping(a, 2 * ps, ps, RW) == -EDEADLK ? 0 : 2;
}

static int forking_callback(const ma_arena_mapping *m, void *ctx) {
  (void)m;
  (void)ctx;
  cb_child_ok = child_ok(cb_arena, child_in_callback);
  return 0;
}

Test(arena, fork_inside_a_foreach_callback) {
  ma_arena *a = make(8);
  cr_assert_eq(ma_arena_add_anon_mapping(a, 0, ps, RW), 0);
  pthread_t t; /* a second thread: fork handlers run as in a threaded program */
  cr_assert_eq(pthread_create(&t, NULL, foreach_thread, a), 0);
  pthread_join(t, NULL);
  cb_arena = a;
  cr_assert_eq(ma_arena_foreach(a, forking_callback, NULL), 0);
  cr_assert_eq(cb_child_ok, 1, "the child inside the callback saw the wrong lock state");
  cr_assert(child_ok(a, child_adds), "after the callback the child could not use the arena");
  ma_arena_destroy(a);
}
