/* Tests of large blocks cut from larger mappings (MAPALLOC_LARGE_CHUNK, default 32 MiB;
 * src/malloc/huge.c): a block the cache cannot serve comes from a new mapping of a chunk's
 * size, the rest of which is cached, so blocks cut from one chunk sit next to each other,
 * merge when freed, and serve a larger block later without a new mapping. The cache tests
 * of test_large.c run with chunks off. Criterion runs each test in a fresh process, so the
 * cache starts empty in every test. */
#include <criterion/criterion.h>
#include <stdint.h>
#include <string.h>

#include "malloc/heap_internal.h"
#include "mapalloc/heap.h"
#include "large_common.h"

#define MiB ((size_t)1 << 20)

#if !MA_SECURE /* a secure build's large blocks have guard pages: a mapping each */
Test(large_chunk, blocks_are_cut_one_after_another_from_one_mapping) {
  char *a = ma_malloc(1 * MiB), *b = ma_malloc(2 * MiB), *c = ma_malloc(3 * MiB);
  cr_assert(a && b && c);
  /* a mapping per block would place them wherever mmap does (below one another) */
  cr_assert_eq(b, a + 1 * MiB, "b at %p, right after a (%p)", (void *)b, (void *)a);
  cr_assert_eq(c, b + 2 * MiB, "c at %p, right after b (%p)", (void *)c, (void *)b);
  /* the rest of the chunk is cached: address space, not faulted pages */
  cr_assert_eq(large_cached_bytes(), 32 * MiB - 6 * MiB);
  memset(a, 1, 1 * MiB);
  memset(b, 2, 2 * MiB);
  memset(c, 3, 3 * MiB);
  cr_assert(a[MiB - 1] == 1 && b[0] == 2 && c[3 * MiB - 1] == 3);
  ma_free(b);
  ma_free(a);
  ma_free(c);
}

Test(large_chunk, freed_neighbours_merge_and_serve_a_larger_block) {
  char *blk[8];
  for (int i = 0; i < 8; i++) {
    blk[i] = ma_malloc(2 * MiB);
    cr_assert_not_null(blk[i]);
    memset(blk[i], i, 2 * MiB);
  }
  for (int i = 0; i < 8; i++) ma_free(blk[i]);
  cr_assert_eq(large_cached_bytes(), 32 * MiB, "the chunk whole again");
  /* 20 MiB: more than any one freed block; the merged chunk serves it from its front */
  char *big = ma_malloc(20 * MiB);
  cr_assert_eq(big, blk[0], "the 20 MiB block at %p, the chunk's front %p", (void *)big,
               (void *)blk[0]);
  cr_assert_eq(large_cached_bytes(), 12 * MiB);
  ma_free(big);
}

Test(large_chunk, a_block_as_large_as_a_chunk_gets_its_own_mapping) {
  char *a = ma_malloc(40 * MiB);
  cr_assert_not_null(a);
  cr_assert_eq(large_cached_bytes(), 0, "no rest to cache");
  ma_free(a);
}

Test(large_chunk, trim_unmaps_the_cached_rest) {
  char *a = ma_malloc(1 * MiB);
  cr_assert_not_null(a);
  cr_assert_eq(large_cached_bytes(), 31 * MiB);
  ma_free(a);
  ma_heap_collect(true);
  cr_assert_eq(large_cached_bytes(), 0);
}
#endif
