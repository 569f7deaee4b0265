/* Regression tests for the bugs the libFuzzer targets (tests/fuzz/, docs/fuzzing.md)
 * found, one test each, written as the smallest program that showed the bug. Some only
 * fail in a sanitizer build (MAPALLOC_SANITIZE=address,undefined); their checks of the
 * contents run everywhere. */
#include <criterion/criterion.h>
#include <stdint.h>
#include <string.h>

#include "mapalloc/heap.h"
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
