/* Helpers of the large-block tests (include after malloc/heap_internal.h). */
#ifndef MAPALLOC_TESTS_LARGE_COMMON_H
#define MAPALLOC_TESTS_LARGE_COMMON_H

#include <stddef.h>

/* Bytes of freed large blocks kept for reuse: the cache's and every thread's stash. */
static inline size_t large_cached_bytes(void) {
  size_t count, bytes, allocs, frees, cached;
  huge_stats(&count, &bytes, &allocs, &frees, &cached);
  return cached;
}

#endif /* MAPALLOC_TESTS_LARGE_COMMON_H */
