/* Regression tests for the bugs the libFuzzer targets (tests/fuzz/, docs/fuzzing.md)
 * found, one test each, written as the smallest program that showed the bug. Some only
 * fail in a sanitizer build (MAPALLOC_SANITIZE=address,undefined); their checks of the
 * contents run everywhere. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>
#include <stdint.h>
#include <string.h>

#include "mapalloc/arena.h"
#include "mapalloc/heap.h"
#include "mapalloc/pages.h"
#include "mapalloc/pool.h"

#if defined(__SANITIZE_ADDRESS__)
#define FR_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define FR_ASAN 1
#endif
#endif
#ifdef FR_ASAN
#include <sanitizer/asan_interface.h>
/* A block handed out must not be poisoned (a fresh mapping's shadow may be stale). */
#define assert_unpoisoned(p, n) cr_assert_null(__asan_region_is_poisoned((p), (n)))
#else
#define assert_unpoisoned(p, n) ((void)(p), (void)(n))
#endif

/* fuzz_heap: a segment released with poisoned free blocks left ASan's shadow poisoned, so a
 * large block mapped later at the same address faulted on its first write
 * (use-after-poison under clang 14's -fsanitize=address). Several segments' worth of
 * blocks are freed so that collect unmaps some; the large blocks then reuse their space. */
Test(fuzz_regress, released_segment_is_unpoisoned) {
  enum { N = 3 * 8192, BIG = 8 };
  static void *v[N];
  unsigned char *big[BIG];
  for (int i = 0; i < N; i++) cr_assert_not_null(v[i] = ma_malloc(512));
  for (int i = 0; i < N; i++) ma_free(v[i]);
  ma_heap_collect(true); /* the empty segments (all but one) are unmapped */
  for (int k = 0; k < BIG; k++) {
    unsigned char *p = big[k] = ma_aligned_alloc((size_t)4 << 20, (size_t)128 << 10);
    cr_assert_not_null(p);
    cr_assert_eq((uintptr_t)p & (((size_t)4 << 20) - 1), 0);
    assert_unpoisoned(p, (size_t)128 << 10);
    memset(p, k + 1, (size_t)128 << 10);
    cr_assert_eq(p[((size_t)128 << 10) - 1], k + 1);
  }
  for (int k = 0; k < BIG; k++) ma_free(big[k]);
}

/* fuzz_pool: align 1, 2 or 4 made the stride an odd multiple of it (obj_size 7977, align 2:
 * stride 7978), so free objects' list links were misaligned (UBSan: misaligned obj_block
 * access in slab_carve). Objects are now 8-byte aligned whatever is asked. */
Test(fuzz_regress, pool_small_align_keeps_links_aligned) {
  for (size_t align = 1; align <= 4; align *= 2) {
    ma_pool *p;
    ma_pool_opts o = {.obj_size = 7977, .align = align};
    cr_assert_eq(ma_pool_create(&o, &p), 0);
    enum { N = 40 };
    unsigned char *v[N];
    for (int i = 0; i < N; i++) {
      v[i] = ma_pool_alloc(p);
      cr_assert_not_null(v[i]);
      cr_assert_eq((uintptr_t)v[i] & 7, 0, "align %zu: object %p", align, (void *)v[i]);
      memset(v[i], i, o.obj_size);
    }
    for (int i = 0; i < N; i++) {
      cr_assert_eq(v[i][o.obj_size - 1], i);
      ma_pool_free(p, v[i]);
    }
    ma_pool_destroy(p);
  }
}

/* fuzz_arena: madvise stops at the first mapping that refuses the advice, after applying it
 * to the ones before, so a failed MA_ADV_REMOVE over [memfd mapping, anonymous mapping] had
 * already freed the file's pages. The arena now checks every mapping first: the refusal
 * changes nothing. Same for a read-only descriptor's mapping (-EACCES) and MA_ADV_FREE over
 * a file mapping (-EINVAL). */
Test(fuzz_regress, refused_advice_changes_nothing) {
  size_t ps = ma_page_size();
  ma_arena *a;
  cr_assert_eq(ma_arena_create(8 * ps, 0, &a), 0);
  int fd = memfd_create("fuzz_regress", MFD_CLOEXEC);
  cr_assert_geq(fd, 0);
  cr_assert_eq(ftruncate(fd, (off_t)(8 * ps)), 0);
  char path[64];
  snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
  int ro = open(path, O_RDONLY | O_CLOEXEC);
  cr_assert_geq(ro, 0);
  const unsigned rw = MA_PROT_READ | MA_PROT_WRITE;
  cr_assert_eq(ma_arena_add_fd_mapping(a, 0, ps, fd, 0, rw), 0);
  cr_assert_eq(ma_arena_add_anon_mapping(a, ps, ps, rw), 0);
  cr_assert_eq(ma_arena_add_fd_mapping(a, 2 * ps, ps, ro, ps, MA_PROT_READ), 0);
  char *b = ma_arena_base(a);
  b[0] = 42;
  b[ps] = 43;
  cr_assert_eq(ma_arena_advise(a, 0, 2 * ps, MA_ADV_REMOVE), -EINVAL);
  cr_assert_eq(b[0], 42, "the memfd page was freed by a failed advise");
  cr_assert_eq(ma_arena_advise(a, 0, ps, MA_ADV_REMOVE), 0); /* alone it works */
  cr_assert_eq(b[0], 0);
  b[0] = 44;
  cr_assert_eq(ma_arena_advise(a, 0, 3 * ps, MA_ADV_REMOVE), -EINVAL);
  cr_assert_eq(ma_arena_advise(a, 2 * ps, ps, MA_ADV_REMOVE), -EACCES);
  cr_assert_eq(ma_arena_advise(a, ps, 2 * ps, MA_ADV_FREE), -EINVAL);
  cr_assert_eq(b[0], 44);
  cr_assert_eq(b[ps], 43);
  ma_arena_destroy(a);
  close(ro);
  close(fd);
}

/* fuzz_pages: mlock marks the areas of the range locked before faulting them in and keeps
 * the mark when it fails on an inaccessible page, so a refused ma_map_lock left part of a
 * shared reserve-only map locked, and decommitting a page of it then failed with -EINVAL
 * (MADV_DONTNEED refuses locked pages). A failed lock now unlocks the range. */
Test(fuzz_regress, refused_lock_leaves_range_unlocked) {
  size_t ps = ma_page_size();
  ma_map_opts o = MA_MAP_OPTS_DEFAULT;
  o.len = 16 * ps;
  o.flags = MA_MAP_RESERVE | MA_MAP_SHARED;
  ma_map m;
  cr_assert_eq(ma_map_create(&o, &m), 0);
  cr_assert_eq(ma_map_lock(&m, 8 * ps, 4 * ps), -ENOMEM); /* not committed */
  cr_assert_eq(ma_map_decommit(&m, 10 * ps, ps), 0);
  cr_assert_eq(ma_map_commit(&m, 8 * ps, 4 * ps), 0);
  ((char *)m.addr)[9 * ps] = 7;
  cr_assert_eq(ma_map_decommit(&m, 8 * ps, 4 * ps), 0);
  cr_assert_eq(ma_map_destroy(&m), 0);
}

/* fuzz_arena: in a MA_MAP_LOCKED arena, adding a MA_PROT_NONE mapping failed with -ENOMEM
 * (mlock cannot fault in an inaccessible range). It is now locked on fault. */
Test(fuzz_regress, locked_arena_takes_prot_none_mapping) {
  size_t ps = ma_page_size();
  ma_arena *a;
  cr_assert_eq(ma_arena_create(8 * ps, MA_MAP_LOCKED, &a), 0);
  cr_assert_eq(ma_arena_add_anon_mapping(a, 0, 2 * ps, MA_PROT_NONE), 0);
  int fd = memfd_create("fuzz_regress", MFD_CLOEXEC);
  cr_assert_geq(fd, 0);
  cr_assert_eq(ftruncate(fd, (off_t)ps), 0);
  cr_assert_eq(ma_arena_add_fd_mapping(a, 2 * ps, ps, fd, 0, MA_PROT_NONE), 0);
  cr_assert_eq(ma_arena_protect(a, 0, 3 * ps, MA_PROT_READ | MA_PROT_WRITE), 0);
  char *b = ma_arena_base(a);
  b[0] = 1;
  b[2 * ps] = 2;
  cr_assert_eq(b[0] + b[2 * ps], 3);
  cr_assert_eq(ma_arena_count(a), 2);
  ma_arena_destroy(a);
  close(fd);
}
