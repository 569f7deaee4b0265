/* Tests of the public page layer (include/mapalloc/pages.h), every function and its errors. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common.h"
#include "mapalloc/pages.h"

#ifndef PR_SET_VMA
#define PR_SET_VMA           0x53564d41
#define PR_SET_VMA_ANON_NAME 0
#endif

#define RW  (MA_PROT_READ | MA_PROT_WRITE)
#define RWX (MA_PROT_READ | MA_PROT_WRITE | MA_PROT_EXEC)
#define MiB ((size_t)1 << 20)

#if defined(__SANITIZE_ADDRESS__) || defined(__has_feature)
/* Under AddressSanitizer: let SIGSEGV kill the process as the fault probes expect. */
const char *__asan_default_options(void);
const char *__asan_default_options(void) {
  return "handle_segv=0";
}
#endif

static size_t ps;
static void setup(void) {
  ps = ma_page_size();
}
TestSuite(pages, .init = setup);

/* ---- helpers ------------------------------------------------------------------------------ */

static ma_map make(size_t len, unsigned prot, unsigned flags) {
  ma_map_opts o = MA_MAP_OPTS_DEFAULT;
  o.len = len;
  o.prot = prot;
  o.flags = flags;
  ma_map m;
  int r = ma_map_create(&o, &m);
  cr_assert_eq(r, 0, "ma_map_create: %d", r);
  return m;
}

struct find {
  uintptr_t addr;
  bool found;
  ma_area a;
};
static int find_cb(const ma_area *a, void *ctx) {
  struct find *f = ctx;
  f->found = true;
  f->a = *a;
  return 1;
}
/* The area of process `pid` containing addr. */
static ma_area area_at(int pid, const void *addr) {
  struct find f = {.addr = (uintptr_t)addr};
  int r = ma_areas_query(pid, (uintptr_t)addr, (uintptr_t)addr + 1, find_cb, &f);
  cr_assert_eq(r, f.found ? 1 : 0);
  cr_assert(f.found, "no area at %p", addr);
  return f.a;
}

/* What our anonymous maps are called in /proc/PID/maps: [anon:mapalloc] where the kernel
 * has PR_SET_VMA_ANON_NAME (CONFIG_ANON_VMA_NAME), else nothing. */
static const char *anon_name(void) {
  void *p = mmap(NULL, ps, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  cr_assert_neq(p, MAP_FAILED);
  int r = prctl(PR_SET_VMA, PR_SET_VMA_ANON_NAME, (unsigned long)p, ps, (unsigned long)"x");
  munmap(p, ps);
  return r == 0 ? "[anon:mapalloc]" : "";
}

struct total {
  size_t bytes, count;
};
static int total_cb(const ma_area *a, void *ctx) {
  struct total *t = ctx;
  t->bytes += a->end - a->start;
  t->count++;
  return 0;
}
/* Bytes of address space mapped in this process (to detect leaks). */
static size_t mapped_bytes(void) {
  struct total t = {0};
  cr_assert_eq(ma_areas_query(0, 0, UINTPTR_MAX, total_cb, &t), 0);
  return t.bytes;
}

/* Pages of [p, p+len) resident per mincore. */
static size_t resident_pages(void *p, size_t len) {
  size_t n = len / ps, count = 0;
  unsigned char *vec = malloc(n);
  cr_assert_eq(mincore(p, len, vec), 0);
  for (size_t i = 0; i < n; i++) count += vec[i] & 1;
  free(vec);
  return count;
}

static size_t rss_bytes(void) {
  FILE *f = fopen("/proc/self/statm", "r");
  cr_assert_not_null(f);
  unsigned long size, rss;
  cr_assert_eq(fscanf(f, "%lu %lu", &size, &rss), 2);
  fclose(f);
  return rss * ps;
}

/* From /proc/self/smaps: the VmFlags line and a kB field of the area starting at `p`. */
static void smaps_of(const void *p, const char *field, size_t *kb, char *vmflags, size_t cap) {
  FILE *f = fopen("/proc/self/smaps", "r");
  cr_assert_not_null(f);
  char line[4096];
  bool in = false;
  size_t flen = strlen(field);
  *kb = 0;
  vmflags[0] = 0;
  while (fgets(line, sizeof line, f)) {
    unsigned long s, e;
    char c;
    if (sscanf(line, "%lx-%lx %c", &s, &e, &c) == 3 && strchr(line, '-') < strchr(line, ' ')) {
      if (in) break;
      in = s <= (uintptr_t)p && (uintptr_t)p < e; /* p may sit in a merged VMA */
      continue;
    }
    if (!in) continue;
    if (strncmp(line, field, flen) == 0 && line[flen] == ':') *kb = strtoul(line + flen + 1, 0, 10);
    if (strncmp(line, "VmFlags:", 8) == 0) {
      size_t n = strlen(line + 8);
      if (n > cap - 1) n = cap - 1;
      memcpy(vmflags, line + 8, n);
      vmflags[n] = 0;
    }
  }
  fclose(f);
  cr_assert(in, "area %p not in smaps", p);
}
static bool has_vmflag(const void *p, const char *flag) {
  size_t kb;
  char fl[256], want[8];
  smaps_of(p, "Rss", &kb, fl, sizeof fl);
  snprintf(want, sizeof want, " %s ", flag);
  return strstr(fl, want) != NULL ||
         (strlen(fl) >= 3 && strncmp(fl + strlen(fl) - 3, want, 3) == 0);
}
static size_t smaps_kb(const void *p, const char *field) {
  size_t kb;
  char fl[256];
  smaps_of(p, field, &kb, fl, sizeof fl);
  return kb;
}

static int memfd_with(const char *name, size_t len, char fill) {
  int fd = memfd_create(name, 0);
  cr_assert_geq(fd, 0);
  cr_assert_eq(ftruncate(fd, (off_t)len), 0);
  char *buf = malloc(len);
  memset(buf, fill, len);
  cr_assert_eq(pwrite(fd, buf, len, 0), (ssize_t)len);
  free(buf);
  return fd;
}

static ma_map make_file(int fd, size_t len, uint64_t off, unsigned prot, unsigned flags) {
  ma_map_opts o = MA_MAP_OPTS_DEFAULT;
  o.len = len;
  o.prot = prot;
  o.flags = flags;
  o.fd = fd;
  o.offset = off;
  ma_map m;
  int r = ma_map_create(&o, &m);
  cr_assert_eq(r, 0, "file map: %d", r);
  return m;
}

/* ---- system facts ------------------------------------------------------------------------- */

Test(pages, system_facts) {
  cr_assert_geq(ps, 4096);
  cr_assert_eq(ps & (ps - 1), 0);
  cr_assert_eq(ma_allocation_granularity(), ps);

  size_t expect = 0;
  DIR *d = opendir("/sys/kernel/mm/hugepages");
  if (d) {
    for (struct dirent *e; (e = readdir(d));) expect += strncmp(e->d_name, "hugepages-", 10) == 0;
    closedir(d);
  }
  size_t sizes[8];
  size_t n = ma_huge_page_sizes(sizes, 8);
  cr_assert_eq(n, expect);
  for (size_t i = 0; i < n && i < 8; i++) {
    cr_assert_gt(sizes[i], ps);
    cr_assert_eq(sizes[i] & (sizes[i] - 1), 0);
    if (i) cr_assert_gt(sizes[i], sizes[i - 1], "ascending");
  }
  cr_assert_eq(ma_huge_page_sizes(NULL, 0), n, "count without output");
  if (n > 1) {
    size_t one[1] = {0};
    cr_assert_eq(ma_huge_page_sizes(one, 1), n);
    cr_assert_eq(one[0], sizes[0]);
  }
}

/* ---- create / destroy ---------------------------------------------------------------------- */

Test(pages, create_rounds_and_destroy_clears) {
  ma_map m = make(1, RW, 0);
  cr_assert_eq(m.len, ps);
  cr_assert_eq(m.prot, RW);
  cr_assert_eq(m.flags, 0u);
  cr_assert_eq(m.fd, -1);
  cr_assert_eq((uintptr_t)m.addr % ps, 0);
  memset(m.addr, 0x5a, m.len);
  ma_map copy = m;
  cr_assert_eq(ma_map_destroy(&m), 0);
  cr_assert_null(m.addr);
  cr_assert_eq(m.len, 0);
  cr_assert_eq(ma_map_destroy(&m), -EINVAL);
  cr_assert_eq(ma_map_destroy(NULL), -EINVAL);
  unsigned char v;
  cr_assert_eq(mincore(copy.addr, ps, &v), -1, "unmapped after destroy");
  cr_assert_eq(errno, ENOMEM);
}

Test(pages, create_rejects_bad_arguments) {
  ma_map m = {0};
  ma_map_opts o = MA_MAP_OPTS_DEFAULT;
  size_t before = mapped_bytes();
  cr_assert_eq(ma_map_create(NULL, &m), -EINVAL);
  o.len = ps;
  cr_assert_eq(ma_map_create(&o, NULL), -EINVAL);
#define BAD(field, value, err)                                                                     \
  do {                                                                                             \
    ma_map_opts b = o;                                                                             \
    b.field = value;                                                                               \
    cr_assert_eq(ma_map_create(&b, &m), err, #field " = " #value);                                 \
  } while (0)
  BAD(len, 0, -EINVAL);
  BAD(len, SIZE_MAX, -EINVAL);
  BAD(len, SIZE_MAX - ps + 2, -EINVAL);
  BAD(prot, 8, -EINVAL);
  BAD(flags, 1u << 20, -EINVAL);
  BAD(flags, MA_MAP_HUGE | MA_MAP_HUGE_TRY, -EINVAL);
  BAD(page_shift, 21, -EINVAL); /* without a huge flag */
  BAD(flags, MA_MAP_STRICT_HINT, -EINVAL);
  BAD(align, 3, -EINVAL);
  BAD(align, ps / 2, -EINVAL);
  BAD(align, ps * 3, -EINVAL);
  BAD(fd, -7, -EBADF);
  BAD(fd, 1000000, -EBADF);
  BAD(prot, RWX, -EPERM);
  BAD(prot, MA_PROT_WRITE | MA_PROT_EXEC, -EPERM);
  ma_map_opts h = o;
  h.flags = MA_MAP_STRICT_HINT;
  h.hint = (void *)(uintptr_t)(0x200000000000 + 1);
  cr_assert_eq(ma_map_create(&h, &m), -EINVAL, "unaligned strict hint");
  h.hint = (void *)(uintptr_t)0x200000001000;
  h.align = 1 << 16;
  cr_assert_eq(ma_map_create(&h, &m), -EINVAL, "strict hint not a multiple of align");
  int fd = memfd_with("bad-args", ps, 1);
  ma_map_opts f = o;
  f.fd = fd;
  f.offset = 100;
  cr_assert_eq(ma_map_create(&f, &m), -EINVAL, "unaligned offset");
  f.offset = 0;
  f.flags = MA_MAP_RESERVE;
  cr_assert_eq(ma_map_create(&f, &m), -EINVAL, "reserve with a file");
  f.flags = MA_MAP_HUGE;
  cr_assert_eq(ma_map_create(&f, &m), -EINVAL, "explicit huge with a file");
  f.flags = 0;
  f.offset = (uint64_t)1 << 63;
  cr_assert_eq(ma_map_create(&f, &m), -EINVAL, "offset beyond off_t");
  close(fd);
  cr_assert_eq(mapped_bytes(), before, "nothing left mapped");
  cr_assert_null(m.addr, "out untouched on failure");
}

Test(pages, failed_aligned_create_leaks_nothing) {
  /* The over-reservation is made before the real map fails (bad fd): it must go. */
  size_t before = mapped_bytes();
  ma_map_opts o = MA_MAP_OPTS_DEFAULT;
  o.len = ps;
  o.align = 64 * MiB;
  o.fd = 1000000;
  ma_map m;
  cr_assert_eq(ma_map_create(&o, &m), -EBADF);
  o.fd = open("/proc/self/exe", O_RDONLY);
  cr_assert_geq(o.fd, 0);
  o.flags = MA_MAP_SHARED; /* shared writable map of a read-only fd */
  cr_assert_eq(ma_map_create(&o, &m), -EACCES);
  close(o.fd);
  cr_assert_eq(mapped_bytes(), before);
}

Test(pages, alignment_up_to_1gib) {
  size_t before = mapped_bytes();
  size_t aligns[] = {ps, 2 * ps, 64 << 10, 2 * MiB, 256 * MiB, 1024 * MiB};
  for (size_t i = 0; i < sizeof aligns / sizeof *aligns; i++) {
    ma_map_opts o = MA_MAP_OPTS_DEFAULT;
    o.len = 3 * ps;
    o.align = aligns[i];
    ma_map m;
    cr_assert_eq(ma_map_create(&o, &m), 0);
    cr_assert_eq((uintptr_t)m.addr % aligns[i], 0, "align %zu: %p", aligns[i], m.addr);
    cr_assert_eq(m.len, 3 * ps);
    ((char *)m.addr)[m.len - 1] = 1;
    cr_assert_eq(mapped_bytes(), before + m.len, "trimmed: only the map is left");
    cr_assert_eq(ma_map_destroy(&m), 0);
  }
  cr_assert_eq(mapped_bytes(), before);
}

Test(pages, hint_and_strict_hint) {
  /* Find a free, 2 MiB aligned address: map there, then unmap. */
  ma_map_opts o = MA_MAP_OPTS_DEFAULT;
  o.len = 4 * ps;
  o.align = 2 * MiB;
  ma_map probe;
  cr_assert_eq(ma_map_create(&o, &probe), 0);
  void *free_addr = probe.addr;
  cr_assert_eq(ma_map_destroy(&probe), 0);

  o.align = 0;
  o.hint = free_addr;
  o.flags = MA_MAP_STRICT_HINT;
  ma_map a;
  cr_assert_eq(ma_map_create(&o, &a), 0);
  cr_assert_eq(a.addr, free_addr, "placed exactly at the strict hint");
  memset(a.addr, 3, a.len);

  ma_map b = {0};
  cr_assert_eq(ma_map_create(&o, &b), -EEXIST, "strict hint taken");
  cr_assert_null(b.addr);
  cr_assert_eq(((char *)a.addr)[0], 3, "the existing map is untouched");
  o.hint = (char *)free_addr + ps; /* overlapping the tail */
  cr_assert_eq(ma_map_create(&o, &b), -EEXIST);

  o.flags = 0; /* a plain hint that is taken: placed elsewhere */
  o.hint = free_addr;
  cr_assert_eq(ma_map_create(&o, &b), 0);
  cr_assert_neq(b.addr, free_addr);
  cr_assert_eq(((char *)a.addr)[ps], 3);
  cr_assert_eq(ma_map_destroy(&b), 0);
  cr_assert_eq(ma_map_destroy(&a), 0);
}

/* ---- reserve, commit, decommit -------------------------------------------------------------- */

Test(pages, reserve_is_inaccessible, .signal = SIGSEGV) {
  ma_map m = make(4 * ps, RW, MA_MAP_RESERVE);
  cr_assert_eq(area_at(0, m.addr).prot, MA_PROT_NONE);
  ((volatile char *)m.addr)[ps] = 1;
}

Test(pages, reserve_commit_decommit_cycle) {
  ma_map m = make(16 * ps, RW, MA_MAP_RESERVE);
  cr_assert_eq(m.flags, (unsigned)MA_MAP_RESERVE);
  char *p = m.addr;
  cr_assert_eq(ma_map_commit(&m, 4 * ps, 2 * ps), 0);
  cr_assert_eq(area_at(0, p + 4 * ps).prot, RW);
  cr_assert_eq(area_at(0, p).prot, MA_PROT_NONE, "outside the commit stays reserved");
  memset(p + 4 * ps, 0x77, 2 * ps);
  cr_assert_eq(ma_map_commit(&m, 4 * ps, 2 * ps), 0, "recommit keeps contents");
  cr_assert_eq(p[5 * ps], 0x77);
  cr_assert_eq(ma_map_decommit(&m, 4 * ps, 2 * ps), 0);
  cr_assert_eq(area_at(0, p + 4 * ps).prot, MA_PROT_NONE);
  cr_assert_eq(resident_pages(p + 4 * ps, 2 * ps), 0);
  cr_assert_eq(ma_map_commit(&m, 4 * ps, 2 * ps), 0);
  cr_assert_eq(p[4 * ps], 0, "decommitted anonymous memory reads as zero");
  cr_assert_eq(p[6 * ps - 1], 0);
  /* protect on a reserve map: committed ranges change, reserved ones stay closed, and the
   * prot applies to later commits. */
  cr_assert_eq(ma_map_commit(&m, 10 * ps, ps), 0);
  cr_assert_eq(ma_map_protect(&m, MA_PROT_READ), 0);
  cr_assert_eq(m.prot, MA_PROT_READ);
  cr_assert_eq(area_at(0, p).prot, MA_PROT_NONE, "reserved range not opened by protect");
  cr_assert_eq(area_at(0, p + 8 * ps).prot, MA_PROT_NONE);
  cr_assert_eq(area_at(0, p + 4 * ps).prot, MA_PROT_READ, "committed range changed");
  cr_assert_eq(area_at(0, p + 10 * ps).prot, MA_PROT_READ);
  cr_assert_eq(p[4 * ps], 0, "contents kept");
  cr_assert_eq(ma_map_commit(&m, 0, ps), 0);
  cr_assert_eq(area_at(0, p).prot, MA_PROT_READ);
  cr_assert_eq(ma_map_protect(&m, RWX), -EPERM);
  cr_assert_eq(area_at(0, p + 4 * ps).prot, MA_PROT_READ);
  cr_assert_eq(ma_map_destroy(&m), 0);
}

Test(pages, reserve_protect_many_committed_ranges) {
  /* More committed pieces than one batch of the /proc scan. */
  enum { N = 150 };
  ma_map m = make(2 * N * ps, RW, MA_MAP_RESERVE);
  char *p = m.addr;
  for (size_t i = 0; i < N; i++) {
    cr_assert_eq(ma_map_commit(&m, 2 * i * ps, ps), 0);
    p[2 * i * ps] = (char)i;
  }
  cr_assert_eq(ma_map_protect(&m, MA_PROT_READ), 0);
  for (size_t i = 0; i < 2 * N; i++)
    cr_assert_eq(area_at(0, p + i * ps).prot, i % 2 ? MA_PROT_NONE : MA_PROT_READ, "page %zu", i);
  for (size_t i = 0; i < N; i++) cr_assert_eq(p[2 * i * ps], (char)i);
  cr_assert_eq(ma_map_destroy(&m), 0);
}

Test(pages, reserve_protect_read_only_faults_on_write, .signal = SIGSEGV) {
  ma_map m = make(4 * ps, RW, MA_MAP_RESERVE);
  cr_assert_eq(ma_map_commit(&m, ps, ps), 0);
  ((volatile char *)m.addr)[ps] = 1;
  cr_assert_eq(ma_map_protect(&m, MA_PROT_READ), 0);
  ((volatile char *)m.addr)[ps] = 2;
}

Test(pages, decommitted_range_faults, .signal = SIGSEGV) {
  ma_map m = make(4 * ps, RW, 0);
  ((char *)m.addr)[ps] = 1;
  cr_assert_eq(ma_map_decommit(&m, ps, ps), 0);
  ((volatile char *)m.addr)[ps] = 1;
}

Test(pages, decommit_shows_in_mincore_and_rss) {
  size_t len = 32 * MiB;
  ma_map m = make(len, RW, MA_MAP_POPULATE);
  cr_assert_eq(resident_pages(m.addr, len), len / ps, "populated");
  size_t rss0 = rss_bytes();
  cr_assert_eq(ma_map_decommit(&m, 0, len), 0);
  cr_assert_eq(resident_pages(m.addr, len), 0);
  size_t rss1 = rss_bytes();
  cr_assert_geq(rss0 - rss1, len - 2 * MiB, "RSS %zu -> %zu", rss0, rss1);
  cr_assert_eq(ma_map_commit(&m, 0, len), 0);
  cr_assert_eq(ma_map_destroy(&m), 0);
}

Test(pages, commit_and_decommit_range_errors) {
  ma_map m = make(4 * ps, RW, MA_MAP_RESERVE);
  ma_map empty = {0};
  size_t big = SIZE_MAX & ~(ps - 1);
  int (*fns[])(ma_map *, size_t, size_t) = {ma_map_commit, ma_map_decommit, ma_map_lock,
                                            ma_map_lock_on_fault, ma_map_unlock};
  for (size_t i = 0; i < sizeof fns / sizeof *fns; i++) {
    cr_assert_eq(fns[i](&m, 0, 0), -EINVAL, "zero length");
    cr_assert_eq(fns[i](&m, 1, ps), -EINVAL, "unaligned offset");
    cr_assert_eq(fns[i](&m, 0, ps + 1), -EINVAL, "unaligned length");
    cr_assert_eq(fns[i](&m, 0, 5 * ps), -EINVAL, "past the end");
    cr_assert_eq(fns[i](&m, 4 * ps, ps), -EINVAL, "starts at the end");
    cr_assert_eq(fns[i](&m, ps, big), -EINVAL, "off + len overflows");
    cr_assert_eq(fns[i](&m, big, 2 * ps), -EINVAL, "off past the end");
    cr_assert_eq(fns[i](NULL, 0, ps), -EINVAL);
    cr_assert_eq(fns[i](&empty, 0, ps), -EINVAL);
  }
  cr_assert_eq(ma_map_flush(&m, 0, 0, false), -EINVAL);
  cr_assert_eq(ma_map_flush(&m, ps, big, true), -EINVAL);
  cr_assert_eq(ma_map_advise(&m, 0, 0, MA_ADV_WILLNEED), -EINVAL);
  cr_assert_eq(ma_map_advise(&m, ps, big, MA_ADV_WILLNEED), -EINVAL);
  cr_assert_eq(ma_map_protect_range(&m, ps, big, MA_PROT_READ), -EINVAL);
  cr_assert_eq(area_at(0, m.addr).prot, MA_PROT_NONE, "nothing changed");
  cr_assert_eq(area_at(0, (char *)m.addr + 3 * ps).prot, MA_PROT_NONE);
  cr_assert_eq(ma_map_destroy(&m), 0);
}

Test(pages, decommit_file_maps) {
  int fd = memfd_with("decommit", 4 * ps, 'a');
  ma_map s = make_file(fd, 4 * ps, 0, RW, MA_MAP_SHARED);
  ma_map p = make_file(fd, 4 * ps, 0, RW, 0);
  ((char *)s.addr)[0] = 'S';
  ((char *)p.addr)[ps] = 'P'; /* a private copy of page 1 */
  cr_assert_eq(ma_map_decommit(&s, 0, 4 * ps), 0);
  cr_assert_eq(ma_map_decommit(&p, 0, 4 * ps), 0);
  cr_assert_eq(area_at(0, s.addr).prot, MA_PROT_NONE);
  /* mincore of a file map reports the page cache: ask smaps what this process maps. */
  cr_assert_eq(smaps_kb(s.addr, "Rss"), 0);
  cr_assert_eq(smaps_kb(p.addr, "Rss"), 0);
  cr_assert_eq(smaps_kb(p.addr, "Anonymous"), 0, "the private copy is gone");
  cr_assert_eq(ma_map_commit(&s, 0, 4 * ps), 0);
  cr_assert_eq(ma_map_commit(&p, 0, 4 * ps), 0);
  cr_assert_eq(((char *)s.addr)[0], 'S', "a shared file keeps its data");
  cr_assert_eq(((char *)p.addr)[ps], 'a', "the private copy is dropped: file data again");
  cr_assert_eq(((char *)p.addr)[0], 'S');
  cr_assert_eq(ma_map_destroy(&s), 0);
  cr_assert_eq(ma_map_destroy(&p), 0);
  close(fd);
}

/* ---- protection and W^X ---------------------------------------------------------------------- */

Test(pages, protect_read_only_faults_on_write, .signal = SIGSEGV) {
  ma_map m = make(2 * ps, RW, 0);
  ((char *)m.addr)[0] = 1;
  cr_assert_eq(ma_map_protect(&m, MA_PROT_READ), 0);
  cr_assert_eq(m.prot, MA_PROT_READ);
  cr_assert_eq(((volatile char *)m.addr)[0], 1);
  ((volatile char *)m.addr)[0] = 2;
}

Test(pages, protect_range_and_errors) {
  ma_map m = make(4 * ps, RW, 0);
  char *p = m.addr;
  cr_assert_eq(ma_map_protect_range(&m, ps, ps, MA_PROT_READ), 0);
  cr_assert_eq(area_at(0, p + ps).prot, MA_PROT_READ);
  cr_assert_eq(area_at(0, p).prot, RW);
  cr_assert_eq(m.prot, RW, "m->prot unchanged by a range protect");
  cr_assert_eq(ma_map_protect_range(&m, 0, ps, 8), -EINVAL);
  cr_assert_eq(ma_map_protect_range(&m, 0, ps, RWX), -EPERM);
  cr_assert_eq(ma_map_protect_range(&m, 0, ps, MA_PROT_WRITE | MA_PROT_EXEC), -EPERM);
  cr_assert_eq(ma_map_protect_range(&m, 3 * ps, 2 * ps, MA_PROT_READ), -EINVAL);
  cr_assert_eq(ma_map_protect(&m, 16), -EINVAL);
  cr_assert_eq(ma_map_protect(&m, RWX), -EPERM, "W^X");
  cr_assert_eq(ma_map_protect(NULL, MA_PROT_READ), -EINVAL);
  cr_assert_eq(m.prot, RW);
  cr_assert_eq(area_at(0, p).prot, RW, "failed protects changed nothing");
  cr_assert_eq(ma_map_protect(&m, MA_PROT_READ | MA_PROT_EXEC), 0, "R+X is fine");
  cr_assert_eq(area_at(0, p + 3 * ps).prot, MA_PROT_READ | MA_PROT_EXEC);
  cr_assert_eq(ma_map_destroy(&m), 0);
}

Test(pages, failed_protect_of_file_map_changes_nothing) {
  char path[] = "/tmp/mapalloc-ro-XXXXXX";
  int fd = mkstemp(path);
  cr_assert_geq(fd, 0);
  cr_assert_eq(ftruncate(fd, (off_t)(2 * ps)), 0);
  int ro = open(path, O_RDONLY);
  unlink(path);
  close(fd);
  ma_map m = make_file(ro, 2 * ps, 0, MA_PROT_READ, MA_MAP_SHARED);
  cr_assert_eq(ma_map_protect(&m, RW), -EACCES);
  cr_assert_eq(m.prot, MA_PROT_READ);
  cr_assert_eq(area_at(0, m.addr).prot, MA_PROT_READ);
  cr_assert_eq(ma_map_protect_range(&m, ps, ps, RW), -EACCES);
  cr_assert_eq(area_at(0, (char *)m.addr + ps).prot, MA_PROT_READ);
  cr_assert_eq(ma_map_destroy(&m), 0);
  close(ro);
}

typedef int (*fn_int)(void);

Test(pages, jit_map_executes_code) {
  cr_assert_eq(ma_map_protect(&(ma_map){0}, RWX), -EINVAL);
  ma_map m = make(ps, RWX, MA_MAP_JIT);
  cr_assert_eq(area_at(0, m.addr).prot, RWX);
  static const unsigned char code[] = {0xb8, 42, 0, 0, 0, 0xc3}; /* mov eax, 42; ret */
  memcpy(m.addr, code, sizeof code);
  ma_flush_icache(m.addr, sizeof code);
  fn_int f;
  memcpy(&f, &m.addr, sizeof f);
  cr_assert_eq(f(), 42);
  /* W^X flip on a JIT map: write, then execute-only. */
  ((unsigned char *)m.addr)[1] = 7;
  cr_assert_eq(ma_map_protect(&m, MA_PROT_READ | MA_PROT_EXEC), 0);
  ma_flush_icache(m.addr, sizeof code);
  cr_assert_eq(f(), 7);
  cr_assert_eq(ma_map_protect(&m, RWX), 0, "JIT maps may go back to RWX");
  ma_flush_icache(NULL, 0); /* a no-op */
  cr_assert_eq(ma_map_destroy(&m), 0);
}

Test(pages, non_jit_map_is_not_executable, .signal = SIGSEGV) {
  ma_map m = make(ps, RW, 0);
  static const unsigned char code[] = {0xb8, 42, 0, 0, 0, 0xc3};
  memcpy(m.addr, code, sizeof code);
  cr_assert_eq(ma_map_protect(&m, RWX), -EPERM);
  fn_int f;
  memcpy(&f, &m.addr, sizeof f);
  f();
}

/* ---- files: shared, private (copy-on-write), flush ---------------------------------------------
 */

Test(pages, file_maps_shared_and_copy_on_write) {
  int fd = memfd_with("cow", 2 * ps, 'x');
  ma_map priv = make_file(fd, 2 * ps, 0, RW, 0);
  ma_map shr = make_file(fd, ps, ps, RW, MA_MAP_SHARED);
  cr_assert_eq(priv.fd, fd);
  cr_assert_eq(shr.offset, ps);
  cr_assert_eq(((char *)priv.addr)[0], 'x');
  ((char *)priv.addr)[0] = 'p';
  char c;
  cr_assert_eq(pread(fd, &c, 1, 0), 1);
  cr_assert_eq(c, 'x', "private write does not reach the file");
  ((char *)shr.addr)[0] = 's';
  cr_assert_eq(pread(fd, &c, 1, (off_t)ps), 1);
  cr_assert_eq(c, 's', "shared write reaches the file");
  cr_assert_eq(((char *)priv.addr)[ps], 's', "untouched private page still shows the file");
  cr_assert_eq(ma_map_flush(&shr, 0, ps, false), 0);
  cr_assert_eq(ma_map_flush(&shr, 0, ps, true), 0);
  cr_assert_eq(ma_map_flush(&priv, 0, 2 * ps, false), 0);
  cr_assert(!area_at(0, priv.addr).shared);
  cr_assert(area_at(0, shr.addr).shared);
  cr_assert_eq(ma_map_destroy(&priv), 0);
  cr_assert_eq(ma_map_destroy(&shr), 0);
  close(fd);
}

Test(pages, flush_of_real_file_and_anonymous) {
  char path[] = "/tmp/mapalloc-flush-XXXXXX";
  int fd = mkstemp(path);
  cr_assert_geq(fd, 0);
  unlink(path);
  cr_assert_eq(ftruncate(fd, (off_t)(4 * ps)), 0);
  ma_map m = make_file(fd, 4 * ps, 0, RW, MA_MAP_SHARED);
  memset(m.addr, 'f', 4 * ps);
  cr_assert_eq(ma_map_flush(&m, 0, 4 * ps, false), 0);
  cr_assert_eq(ma_map_flush(&m, ps, ps, true), 0);
  cr_assert_eq(ma_map_flush(&m, 0, 8 * ps, false), -EINVAL);
  char c;
  cr_assert_eq(pread(fd, &c, 1, (off_t)(3 * ps)), 1);
  cr_assert_eq(c, 'f');
  cr_assert_eq(ma_map_destroy(&m), 0);
  close(fd);
  ma_map a = make(ps, RW, 0);
  cr_assert_eq(ma_map_flush(&a, 0, ps, false), 0, "anonymous: nothing to do");
  cr_assert_eq(ma_map_destroy(&a), 0);
}

/* ---- huge pages --------------------------------------------------------------------------------
 */

static unsigned long free_huge(size_t kb) {
  char path[128];
  snprintf(path, sizeof path, "/sys/kernel/mm/hugepages/hugepages-%zukB/free_hugepages", kb);
  FILE *f = fopen(path, "r");
  unsigned long n = 0;
  if (f) {
    if (fscanf(f, "%lu", &n) != 1) n = 0;
    fclose(f);
  }
  return n;
}

Test(pages, explicit_huge_pages_or_enomem) {
  size_t sizes[4];
  size_t n = ma_huge_page_sizes(sizes, 4);
  ma_map_opts o = MA_MAP_OPTS_DEFAULT;
  o.len = ps; /* rounded up to one huge page */
  o.flags = MA_MAP_HUGE;
  ma_map m = {0};
  if (n == 0) {
    cr_assert_eq(ma_map_create(&o, &m), -ENOTSUP);
    return;
  }
  for (size_t i = 0; i < n && i < 4; i++) {
    o.page_shift = (unsigned)__builtin_ctzl(sizes[i]);
    size_t before = mapped_bytes();
    int r = ma_map_create(&o, &m);
    if (free_huge(sizes[i] >> 10) == 0) {
      cr_assert_eq(r, -ENOMEM, "no huge pages of %zu: -ENOMEM at create", sizes[i]);
      cr_assert_eq(mapped_bytes(), before);
    } else {
      cr_assert_eq(r, 0);
      cr_assert_eq(m.len, sizes[i]);
      cr_assert_eq(m.page_shift, o.page_shift);
      cr_assert_eq((uintptr_t)m.addr % sizes[i], 0);
      memset(m.addr, 1, m.len);
      cr_assert_eq(ma_map_commit(&m, 0, ps), -EINVAL, "huge maps take huge units");
      cr_assert_eq(ma_map_destroy(&m), 0);
    }
  }
  o.page_shift = 22; /* 4 MiB: not an x86-64 size */
  cr_assert_eq(ma_map_create(&o, &m), -ENOTSUP);
  o.page_shift = 70;
  cr_assert_eq(ma_map_create(&o, &m), -EINVAL);
}

Test(pages, huge_try_falls_back) {
  size_t huge;
  bool have = ma_huge_page_sizes(&huge, 1) > 0;
  ma_map_opts o = MA_MAP_OPTS_DEFAULT;
  o.len = 4 * MiB + ps;
  o.flags = MA_MAP_HUGE_TRY;
  ma_map m;
  cr_assert_eq(ma_map_create(&o, &m), 0);
  memset(m.addr, 1, m.len);
  if (have && free_huge(huge >> 10) == 0) {
    cr_assert_eq(m.flags, (unsigned)MA_MAP_HUGE_TRY, "fell back to base pages");
    cr_assert_eq(m.page_shift, 0);
    cr_assert_eq(m.len, o.len, "base-page rounding");
    cr_assert_eq((uintptr_t)m.addr % huge, 0, "aligned for transparent huge pages");
    if (access("/sys/kernel/mm/transparent_hugepage/enabled", F_OK) == 0)
      cr_assert(has_vmflag(m.addr, "hg"), "MADV_HUGEPAGE applied");
  } else if (have) {
    cr_assert_eq(m.flags, (unsigned)MA_MAP_HUGE);
    cr_assert_eq(m.len % huge, 0);
  }
  cr_assert_eq(ma_map_destroy(&m), 0);
}

/* ---- other creation flags
 * ------------------------------------------------------------------------ */

Test(pages, populate_noreserve_dontdump_stack) {
  ma_map m = make(64 * ps, RW, MA_MAP_POPULATE);
  cr_assert_eq(resident_pages(m.addr, m.len), 64, "prefaulted at create");
  cr_assert_eq(ma_map_destroy(&m), 0);

  m = make(64 * ps, RW, MA_MAP_RESERVE | MA_MAP_POPULATE);
  cr_assert_eq(ma_map_commit(&m, 0, 8 * ps), 0);
  cr_assert_eq(resident_pages(m.addr, 8 * ps), 8, "commit-on-alloc for committed ranges");
  cr_assert_eq(resident_pages((char *)m.addr + 8 * ps, 56 * ps), 0);
  cr_assert_eq(ma_map_destroy(&m), 0);

  m = make(1024 * MiB, RW, MA_MAP_NORESERVE);
  cr_assert(has_vmflag(m.addr, "nr"));
  cr_assert_eq(ma_map_destroy(&m), 0);

  m = make(4 * ps, RW, MA_MAP_DONTDUMP);
  cr_assert(has_vmflag(m.addr, "dd"));
  cr_assert_eq(ma_map_decommit(&m, 0, ps), 0);
  cr_assert(has_vmflag(m.addr, "dd"), "kept across decommit");
  cr_assert_eq(ma_map_destroy(&m), 0);

  m = make(16 * ps, RW, MA_MAP_STACK);
  cr_assert_eq(m.flags, (unsigned)MA_MAP_STACK);
  memset(m.addr, 9, m.len);
  cr_assert(!has_vmflag(m.addr, "gd"), "a fixed-size stack, not MAP_GROWSDOWN");
  cr_assert_eq(ma_map_destroy(&m), 0);
}

Test(pages, dontfork_child_faults) {
  ma_map m = make(2 * ps, RW, MA_MAP_DONTFORK);
  ma_map keep = make(ps, RW, 0);
  ((char *)m.addr)[0] = 1;
  ((char *)keep.addr)[0] = 2;
  cr_assert(has_vmflag(m.addr, "dc"));
  pid_t pid = fork();
  cr_assert_geq(pid, 0);
  if (pid == 0) {
    if (((volatile char *)keep.addr)[0] != 2) _exit(3); /* inherited */
    ((volatile char *)m.addr)[0] = 5;                   /* not inherited: faults */
    _exit(0);
  }
  int st = wait_child(pid);
  cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGSEGV, "status %#x", st);
  cr_assert_eq(ma_map_destroy(&m), 0);
  cr_assert_eq(ma_map_destroy(&keep), 0);
}

/* ---- locking
 * ---------------------------------------------------------------------------------------- */

Test(pages, lock_and_unlock) {
  ma_map m = make(8 * ps, RW, 0);
  int r = ma_map_lock(&m, 0, 4 * ps);
  cr_assert(r == 0 || r == -ENOMEM || r == -EPERM, "documented result: %d", r);
  if (r == 0) {
    cr_assert_eq(smaps_kb(m.addr, "Locked"), 4 * ps / 1024);
    cr_assert_eq(resident_pages(m.addr, 4 * ps), 4, "faulted in by the lock");
    cr_assert_eq(ma_map_unlock(&m, 0, 4 * ps), 0);
    cr_assert_eq(smaps_kb(m.addr, "Locked"), 0);
  }
  cr_assert_eq(ma_map_destroy(&m), 0);

  m = make(4 * ps, RW, MA_MAP_LOCKED);
  cr_assert_eq(smaps_kb(m.addr, "Locked"), 4 * ps / 1024);
  cr_assert_eq(ma_map_decommit(&m, 0, ps), 0);
  cr_assert_eq(ma_map_commit(&m, 0, ps), 0);
  cr_assert_eq(smaps_kb(m.addr, "Locked"), ps / 1024, "recommitted pages are locked again");
  cr_assert_eq(ma_map_destroy(&m), 0);
}

Test(pages, lock_on_fault) {
  ma_map m = make(8 * ps, RW, 0);
  int r = ma_map_lock_on_fault(&m, 0, 8 * ps);
  cr_assert(r == 0 || r == -ENOMEM || r == -EPERM || r == -ENOTSUP, "documented result: %d", r);
  if (r == 0) {
    cr_assert(has_vmflag(m.addr, "lo"));
    cr_assert_eq(resident_pages(m.addr, 8 * ps), 0, "nothing faulted in yet");
    ((char *)m.addr)[0] = 1;
    ((char *)m.addr)[3 * ps] = 1;
    cr_assert_eq(smaps_kb(m.addr, "Locked"), 2 * ps / 1024, "only touched pages locked");
    cr_assert_eq(ma_map_unlock(&m, 0, 8 * ps), 0);
    cr_assert(!has_vmflag(m.addr, "lo"));
  }
  cr_assert_eq(ma_map_destroy(&m), 0);
}

/* ---- advice
 * --------------------------------------------------------------------------------------- */

Test(pages, advice_set) {
  ma_map m = make(8 * ps, RW, 0);
  char *p = m.addr;
  memset(p, 1, m.len);
  cr_assert_eq(ma_map_advise(&m, 0, 8 * ps, MA_ADV_WILLNEED), 0);
  cr_assert_eq(ma_map_advise(&m, 0, ps, MA_ADV_DONTNEED), 0);
  cr_assert_eq(p[0], 0, "DONTNEED: private anonymous reads zero");
  cr_assert_eq(p[ps], 1);
  cr_assert_eq(ma_map_advise(&m, ps, ps, MA_ADV_FREE), 0);
  cr_assert_eq(ma_map_advise(&m, 0, 8 * ps, MA_ADV_NOHUGEPAGE), 0);
  cr_assert(has_vmflag(p, "nh"));
  cr_assert_eq(ma_map_advise(&m, 0, 8 * ps, MA_ADV_HUGEPAGE), 0);
  cr_assert(has_vmflag(p, "hg"));
  cr_assert_eq(ma_map_advise(&m, 0, 8 * ps, MA_ADV_DONTDUMP), 0);
  cr_assert(has_vmflag(p, "dd"));
  cr_assert_eq(ma_map_advise(&m, 0, 8 * ps, MA_ADV_DODUMP), 0);
  cr_assert(!has_vmflag(p, "dd"));
  cr_assert_eq(ma_map_advise(&m, 0, 8 * ps, MA_ADV_DONTFORK), 0);
  cr_assert(has_vmflag(p, "dc"));
  cr_assert_eq(ma_map_advise(&m, 0, 8 * ps, MA_ADV_DOFORK), 0);
  cr_assert(!has_vmflag(p, "dc"));
  cr_assert_eq(ma_map_advise(&m, 2 * ps, 2 * ps, MA_ADV_PAGEOUT), 0);
  cr_assert_eq(ma_map_advise(&m, 0, ps, (enum ma_advice)99), -EINVAL);
  cr_assert_eq(ma_map_advise(&m, 0, ps, (enum ma_advice) - 1), -EINVAL);
  cr_assert_eq(ma_map_advise(&m, 0, ps, MA_ADV_REMOVE), -EINVAL, "REMOVE needs shared memory");
  cr_assert_eq(ma_map_destroy(&m), 0);

  int fd = memfd_with("remove", 2 * ps, 'r');
  ma_map s = make_file(fd, 2 * ps, 0, RW, MA_MAP_SHARED);
  cr_assert_eq(ma_map_advise(&s, 0, ps, MA_ADV_REMOVE), 0);
  char c;
  cr_assert_eq(pread(fd, &c, 1, 0), 1);
  cr_assert_eq(c, 0, "REMOVE freed the backing store");
  cr_assert_eq(pread(fd, &c, 1, (off_t)ps), 1);
  cr_assert_eq(c, 'r');
  cr_assert_eq(ma_map_destroy(&s), 0);
  close(fd);
}

/* ---- split and merge
 * -------------------------------------------------------------------------------- */

Test(pages, split_and_merge) {
  size_t before = mapped_bytes();
  ma_map m = make(8 * ps, RW, 0);
  void *base = m.addr;
  ma_map t;
  cr_assert_eq(ma_map_split(&m, 0, &t), -EINVAL);
  cr_assert_eq(ma_map_split(&m, 8 * ps, &t), -EINVAL);
  cr_assert_eq(ma_map_split(&m, 3, &t), -EINVAL);
  cr_assert_eq(ma_map_split(&m, ps, NULL), -EINVAL);
  cr_assert_eq(ma_map_split(&m, ps, &m), -EINVAL);
  cr_assert_eq(ma_map_split(NULL, ps, &t), -EINVAL);
  cr_assert_eq(m.len, 8 * ps, "failed splits change nothing");
  cr_assert_eq(ma_map_split(&m, 3 * ps, &t), 0);
  cr_assert_eq(m.addr, base);
  cr_assert_eq(m.len, 3 * ps);
  cr_assert_eq(t.addr, (char *)base + 3 * ps);
  cr_assert_eq(t.len, 5 * ps);
  cr_assert_eq(t.prot, m.prot);
  cr_assert_eq(t.flags, m.flags);

  /* The halves are independent maps. */
  cr_assert_eq(ma_map_protect(&t, MA_PROT_READ), 0);
  cr_assert_eq(ma_map_merge(&m, &t), -EINVAL, "different prot");
  cr_assert_eq(ma_map_protect(&t, RW), 0);
  cr_assert_eq(ma_map_merge(&t, &m), -EINVAL, "wrong order: not adjacent");
  cr_assert_eq(ma_map_merge(&m, &m), -EINVAL);
  cr_assert_eq(ma_map_merge(NULL, &t), -EINVAL);
  ma_map other = make(ps, RW, 0);
  cr_assert_eq(ma_map_merge(&m, &other), -EINVAL, "not adjacent");
  cr_assert_eq(m.len, 3 * ps);
  cr_assert_eq(t.len, 5 * ps, "failed merges change nothing");
  cr_assert_eq(ma_map_merge(&m, &t), 0);
  cr_assert_eq(m.addr, base);
  cr_assert_eq(m.len, 8 * ps);
  cr_assert_null(t.addr);
  cr_assert_eq(ma_map_destroy(&other), 0);

  cr_assert_eq(ma_map_split(&m, 5 * ps, &t), 0);
  cr_assert_eq(ma_map_destroy(&t), 0);
  cr_assert_eq(ma_map_destroy(&m), 0);
  cr_assert_eq(mapped_bytes(), before, "split halves unmap everything");
}

Test(pages, merge_refuses_different_backing) {
  int fd = memfd_with("merge", 4 * ps, 'm');
  ma_map f = make_file(fd, 4 * ps, 0, RW, 0);
  ma_map t;
  cr_assert_eq(ma_map_split(&f, 2 * ps, &t), 0);
  cr_assert_eq(t.offset, 2 * ps);
  ma_map fake = t;
  fake.offset = 3 * ps; /* not the continuing offset */
  cr_assert_eq(ma_map_merge(&f, &fake), -EINVAL);
  fake = t;
  fake.fd = -1;
  cr_assert_eq(ma_map_merge(&f, &fake), -EINVAL, "file + anonymous");
  fake = t;
  fake.flags |= MA_MAP_SHARED;
  cr_assert_eq(ma_map_merge(&f, &fake), -EINVAL, "different flags");
  cr_assert_eq(f.len, 2 * ps);
  cr_assert_eq(ma_map_merge(&f, &t), 0);
  cr_assert_eq(f.len, 4 * ps);
  cr_assert_eq(ma_map_destroy(&f), 0);
  close(fd);
}

/* ---- process memory areas
 * --------------------------------------------------------------------------- */

struct names {
  bool heap, stack, vdso;
  size_t count;
  uintptr_t last_end;
  bool ordered;
};
static int names_cb(const ma_area *a, void *ctx) {
  struct names *n = ctx;
  n->heap |= strcmp(a->path, "[heap]") == 0;
  n->stack |= strcmp(a->path, "[stack]") == 0;
  n->vdso |= strcmp(a->path, "[vdso]") == 0;
  if (a->start < n->last_end || a->end <= a->start) n->ordered = false;
  n->last_end = a->end;
  n->count++;
  return 0;
}

Test(pages, areas_query_finds_our_maps) {
  ma_map m = make(3 * ps, RW, 0);
  ma_area a = area_at(0, (char *)m.addr + ps);
  cr_assert_leq(a.start, (uintptr_t)m.addr);
  cr_assert_geq(a.end, (uintptr_t)m.addr + m.len);
  cr_assert_eq(a.prot, RW);
  cr_assert(!a.shared);
  cr_assert_str_eq(a.path, anon_name(), "named: %s", a.path);

  char *heap = malloc(100); /* make sure there is a [heap] */
  struct names n = {.ordered = true};
  cr_assert_eq(ma_areas_query(0, 0, UINTPTR_MAX, names_cb, &n), 0);
  cr_assert(n.stack && n.vdso && n.ordered);
  FILE *mf = fopen("/proc/self/maps", "r");
  cr_assert_not_null(mf);
  bool raw_heap = false;
  for (char line[4200]; fgets(line, sizeof line, mf);) raw_heap |= strstr(line, " [heap]\n") != 0;
  fclose(mf);
  cr_assert_eq(n.heap, raw_heap, "[heap] reported as the file has it");
  free(heap);
  ma_area exe = area_at(0, (void *)(uintptr_t)&names_cb);
  cr_assert(exe.prot & MA_PROT_EXEC);
  cr_assert(strstr(exe.path, "test_pages") != NULL, "%s", exe.path);
  cr_assert_eq(ma_map_destroy(&m), 0);
}

Test(pages, areas_query_paths_with_spaces_and_deleted) {
  int fd = memfd_with("name with  spaces", ps, 0);
  ma_map m = make_file(fd, ps, 0, MA_PROT_READ, MA_MAP_SHARED);
  ma_area a = area_at(0, m.addr);
  cr_assert_str_eq(a.path, "/memfd:name with  spaces (deleted)");
  cr_assert(a.shared);
  cr_assert_eq(a.prot, MA_PROT_READ);
  cr_assert_eq(ma_map_destroy(&m), 0);
  close(fd);

  char path[] = "/tmp/mapalloc deleted XXXXXX";
  fd = mkstemp(path);
  cr_assert_geq(fd, 0);
  cr_assert_eq(ftruncate(fd, (off_t)(3 * ps)), 0);
  m = make_file(fd, ps, 2 * ps, MA_PROT_READ, 0);
  a = area_at(0, m.addr);
  cr_assert_str_eq(a.path, path);
  cr_assert_eq(a.offset, 2 * ps);
  unlink(path);
  a = area_at(0, m.addr);
  char want[300];
  snprintf(want, sizeof want, "%s (deleted)", path);
  cr_assert_str_eq(a.path, want);
  cr_assert_eq(ma_map_destroy(&m), 0);
  close(fd);
}

Test(pages, areas_query_long_lines_and_many_areas) {
  /* A path near PATH_MAX makes a line longer than the parser's buffer. */
  char dir[4096] = "/tmp/mapalloc-long-XXXXXX";
  cr_assert_not_null(mkdtemp(dir));
  char top[64];
  cr_assert_lt(snprintf(top, sizeof top, "%s", dir), (int)sizeof top); /* (used: -O0 warns) */
  size_t dl = strlen(dir);
  char comp[201];
  memset(comp, 'd', 200);
  comp[200] = 0;
  while (dl + 202 < 3900) {
    dir[dl++] = '/';
    memcpy(dir + dl, comp, 201);
    dl += 200;
    cr_assert_eq(mkdir(dir, 0700), 0);
  }
  char file[4096];
  cr_assert_lt(snprintf(file, sizeof file, "%s/f", dir), (int)sizeof file);
  int fd = open(file, O_RDWR | O_CREAT, 0600);
  cr_assert_geq(fd, 0);
  cr_assert_eq(ftruncate(fd, (off_t)ps), 0);
  ma_map lm = make_file(fd, ps, 0, MA_PROT_READ, 0);

  /* Many areas: alternating protections so none merge, many buffer refills. */
  enum { N = 200 };
  ma_map many = make(2 * N * ps, RW, 0);
  for (size_t i = 0; i < N; i++)
    cr_assert_eq(ma_map_protect_range(&many, 2 * i * ps, ps, MA_PROT_READ), 0);

  ma_area a = area_at(0, lm.addr);
  cr_assert_eq(strlen(a.path), sizeof a.path - 1, "truncated path");
  cr_assert_eq(strncmp(a.path, file, sizeof a.path - 1), 0);
  for (size_t i = 0; i < 2 * N; i++) {
    a = area_at(0, (char *)many.addr + i * ps);
    cr_assert_eq(a.prot, i % 2 ? RW : MA_PROT_READ, "area %zu", i);
    cr_assert_eq(a.start, (uintptr_t)many.addr + i * ps);
  }
  struct names n = {.ordered = true};
  cr_assert_eq(ma_areas_query(0, 0, UINTPTR_MAX, names_cb, &n), 0);
  cr_assert(n.ordered && n.stack, "areas after the long line are parsed");
  cr_assert_geq(n.count, 2 * N);

  cr_assert_eq(ma_map_destroy(&lm), 0);
  cr_assert_eq(ma_map_destroy(&many), 0);
  close(fd);
  unlink(file);
  while (strlen(dir) > strlen(top)) {
    cr_assert_eq(rmdir(dir), 0);
    *strrchr(dir, '/') = 0;
  }
  cr_assert_eq(rmdir(top), 0);
}

static int stop_at_second(const ma_area *a, void *ctx) {
  (void)a;
  return ++*(int *)ctx == 2 ? 77 : 0;
}

Test(pages, areas_query_errors_stop_and_other_process) {
  int calls = 0;
  cr_assert_eq(ma_areas_query(0, 0, UINTPTR_MAX, stop_at_second, &calls), 77);
  cr_assert_eq(calls, 2);
  cr_assert_eq(ma_areas_query(0, 10, 10, stop_at_second, &calls), -EINVAL);
  cr_assert_eq(ma_areas_query(0, 10, 5, stop_at_second, &calls), -EINVAL);
  cr_assert_eq(ma_areas_query(0, 0, 1, NULL, NULL), -EINVAL);
  cr_assert_eq(ma_areas_query(-1, 0, 1, stop_at_second, &calls), -EINVAL);
  cr_assert_eq(ma_areas_query(0x7ffffff0, 0, UINTPTR_MAX, stop_at_second, &calls), -ESRCH);
  calls = 0;
  cr_assert_eq(ma_areas_query(0, 0, 4096, stop_at_second, &calls), 0, "nothing at page 0");
  cr_assert_eq(calls, 0);

  /* A child's map, made after fork, is seen in the child's maps only. */
  int pipefd[2], go[2];
  cr_assert_eq(pipe(pipefd), 0);
  cr_assert_eq(pipe(go), 0);
  pid_t pid = fork();
  cr_assert_geq(pid, 0);
  if (pid == 0) {
    close(go[1]); /* so the read below ends if the parent dies */
    close(pipefd[0]);
    ma_map_opts o = MA_MAP_OPTS_DEFAULT;
    o.len = 5 * ps;
    o.prot = MA_PROT_READ;
    ma_map cm;
    if (ma_map_create(&o, &cm) != 0) _exit(1);
    if (write(pipefd[1], &cm.addr, sizeof cm.addr) != sizeof cm.addr) _exit(1);
    char c;
    if (read(go[0], &c, 1) < 0) _exit(1); /* wait for the parent */
    _exit(0);
  }
  void *caddr;
  cr_assert_eq(read(pipefd[0], &caddr, sizeof caddr), (ssize_t)sizeof caddr);
  ma_area a = area_at(pid, caddr);
  cr_assert_eq(a.prot, MA_PROT_READ);
  cr_assert_eq(a.end - a.start, 5 * ps);
  cr_assert_str_eq(a.path, anon_name());
  struct find f = {0};
  cr_assert_eq(ma_areas_query(0, (uintptr_t)caddr, (uintptr_t)caddr + 1, find_cb, &f), f.found);
  cr_assert(!f.found || f.a.start != a.start || f.a.prot != a.prot || strcmp(f.a.path, a.path));
  cr_assert_eq(write(go[1], "x", 1), 1);
  expect_child_ok(pid, "child holding the area");
  close(pipefd[0]);
  close(pipefd[1]);
  close(go[0]);
  close(go[1]);
}

/* ---- ma_areas_query against the raw file, and without malloc
 * ------------------------------------- */

/* Counts calls into the allocator of this test program (glibc's, underneath). Not under a
 * sanitizer, which owns malloc itself. */
#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define __SANITIZE_ADDRESS__ 1
#endif
#endif
static size_t malloc_calls;
#ifndef __SANITIZE_ADDRESS__
#define COUNT_MALLOC 1
extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
void *malloc(size_t n) {
  __atomic_add_fetch(&malloc_calls, 1, __ATOMIC_RELAXED);
  return __libc_malloc(n);
}
void *calloc(size_t n, size_t s) {
  __atomic_add_fetch(&malloc_calls, 1, __ATOMIC_RELAXED);
  return __libc_calloc(n, s);
}
void *realloc(void *p, size_t n) {
  __atomic_add_fetch(&malloc_calls, 1, __ATOMIC_RELAXED);
  return __libc_realloc(p, n);
}
#endif

enum { MAX_AREAS = 4096 };
static ma_area snapshot[MAX_AREAS];
static size_t snapshot_n;
static int snapshot_cb(const ma_area *a, void *ctx) {
  (void)ctx;
  if (snapshot_n < MAX_AREAS) snapshot[snapshot_n] = *a;
  snapshot_n++;
  return 0;
}
static char raw_maps[1 << 20];

Test(pages, areas_query_matches_proc_maps_and_never_mallocs) {
  /* Some variety: a shared memfd with spaces, a deleted file, a reserve, a JIT map. */
  int fd = memfd_with("cross check", ps, 0);
  ma_map a = make_file(fd, ps, 0, MA_PROT_READ, MA_MAP_SHARED);
  ma_map b = make(4 * ps, RW, MA_MAP_RESERVE);
  ma_map c = make(ps, RWX, MA_MAP_JIT);
  size_t sizes[4];

  /* Read the file raw, then query at once: nothing in between changes the maps. */
  int mf = open("/proc/self/maps", O_RDONLY);
  cr_assert_geq(mf, 0);
  size_t have = 0;
  for (ssize_t got; (got = read(mf, raw_maps + have, sizeof raw_maps - 1 - have)) > 0;)
    have += (size_t)got;
  raw_maps[have] = 0;
  close(mf);
  size_t before = __atomic_load_n(&malloc_calls, __ATOMIC_RELAXED);
  snapshot_n = 0;
  cr_assert_eq(ma_areas_query(0, 0, UINTPTR_MAX, snapshot_cb, NULL), 0);
  (void)ma_huge_page_sizes(sizes, 4);
  size_t after = __atomic_load_n(&malloc_calls, __ATOMIC_RELAXED);
  cr_assert_eq(after, before, "ma_areas_query/ma_huge_page_sizes called malloc");
#ifdef COUNT_MALLOC
  void *volatile probe = malloc(16); /* the counter does count */
  free(probe);
  cr_assert_gt(__atomic_load_n(&malloc_calls, __ATOMIC_RELAXED), after);
#endif
  cr_assert_leq(snapshot_n, MAX_AREAS);

  size_t i = 0;
  bool vsyscall = false;
  for (char *line = strtok(raw_maps, "\n"); line; line = strtok(NULL, "\n"), i++) {
    unsigned long s, e, off;
    char perms[5];
    int pathpos = 0;
    cr_assert_eq(sscanf(line, "%lx-%lx %4s %lx %*s %*s %n", &s, &e, perms, &off, &pathpos), 4);
    cr_assert_lt(i, snapshot_n);
    const ma_area *ar = &snapshot[i];
    cr_assert_eq(ar->start, s, "line %zu: %s", i, line);
    cr_assert_eq(ar->end, e);
    cr_assert_eq(ar->offset, off);
    cr_assert_eq(ar->shared, perms[3] == 's');
    unsigned prot = (perms[0] == 'r' ? MA_PROT_READ : 0) | (perms[1] == 'w' ? MA_PROT_WRITE : 0) |
                    (perms[2] == 'x' ? MA_PROT_EXEC : 0);
    cr_assert_eq(ar->prot, prot, "%s", line);
    const char *path = pathpos ? line + pathpos : "";
    cr_assert_eq(strncmp(ar->path, path, sizeof ar->path - 1), 0, "'%s' vs '%s'", ar->path, path);
    vsyscall |= strcmp(ar->path, "[vsyscall]") == 0;
  }
  cr_assert_eq(i, snapshot_n, "as many areas as lines");
  cr_assert(vsyscall || strstr(raw_maps, "[vsyscall]") == NULL);
  cr_assert_eq(ma_map_destroy(&a), 0);
  cr_assert_eq(ma_map_destroy(&b), 0);
  cr_assert_eq(ma_map_destroy(&c), 0);
  close(fd);
}

Test(pages, huge_flag_combinations) {
  size_t huge;
  if (ma_huge_page_sizes(&huge, 1) == 0) return; /* asserted by system_facts */
  ma_map_opts o = MA_MAP_OPTS_DEFAULT;
  ma_map m = {0};
  o.len = ps;
  o.flags = MA_MAP_HUGE | MA_MAP_RESERVE | MA_MAP_NORESERVE;
  int r = ma_map_create(&o, &m);
  if (free_huge(huge >> 10) == 0)
    cr_assert_eq(r, -ENOMEM, "NORESERVE cannot bypass the check");
  else {
    cr_assert_eq(r, 0);
    cr_assert_eq(ma_map_destroy(&m), 0);
  }
  /* HUGE_TRY with a strict hint: falls back, still exactly at the hint. */
  ma_map probe = make(2 * huge, RW, 0);
  void *hint = (void *)(((uintptr_t)probe.addr + huge - 1) & ~(uintptr_t)(huge - 1));
  cr_assert_eq(ma_map_destroy(&probe), 0);
  o.flags = MA_MAP_HUGE_TRY | MA_MAP_STRICT_HINT;
  o.hint = hint;
  o.len = huge;
  cr_assert_eq(ma_map_create(&o, &m), 0);
  cr_assert_eq(m.addr, hint);
  ma_map again;
  cr_assert_eq(ma_map_create(&o, &again), -EEXIST);
  cr_assert_eq(ma_map_destroy(&m), 0);
}
