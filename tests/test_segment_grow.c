/* Segments that grow in their window (src/obj/obj_segment.c, obj_segment_grow): a heap
 * segment of small slabs starts with its first slab reserved and takes the rest of its 4 MiB
 * window as slabs are needed, so a thread's address space follows its use. Another mapping
 * in the window stops the growth: the segment keeps what it has, the heap goes on in another
 * segment, and a pointer into the foreign mapping is not taken for one of the segment's. */
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "malloc/heap_internal.h"
#include "mapalloc/heap.h"

#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif

/* Where segments are reserved whole (the zone is x86-64 only, left to ThreadSanitizer's
 * shadow, and secure segments keep the kernel's placement), there is nothing to test. */
#if !defined(__x86_64__) || OBJ_TSAN || defined(MA_SECURE)
#define GROWING 0
#else
#define GROWING 1
#endif
#define NOT_GROWING "segments are reserved whole in this build (not x86-64, TSan or secure)"
static void skip_unless_growing(void) {
  if (!GROWING) cr_skip_test(NOT_GROWING);
}

/* A thread's first small block: what it adds to the heap's address space. */
static void *first_block_reserve(void *arg) {
  ma_heap_stats a, b;
  ma_heap_stats_get(&a);
  void *p = ma_malloc(48);
  ma_heap_stats_get(&b);
  *(size_t *)arg = b.reserved - a.reserved;
  ma_free(p);
  return p ? arg : NULL;
}

Test(segment_grow, a_threads_first_small_block_reserves_a_slab_not_a_segment) {
  skip_unless_growing();
  ma_free(ma_malloc(48)); /* the main thread's heap and the process's tables exist */
  size_t grew = 0;
  pthread_t t;
  void *ok = NULL;
  cr_assert_eq(pthread_create(&t, NULL, first_block_reserve, &grew), 0);
  pthread_join(t, &ok);
  cr_assert_not_null(ok, "the thread's malloc failed");
  cr_assert_gt(grew, 0, "the first block of a thread comes from a segment of its own");
  cr_assert_leq(grew, (size_t)128 << 10, "reserved %zu KiB for one 48-byte block", grew >> 10);
}

/* Blocks of one class in the calling thread; the segment of the first. */
enum { MANY = 40000 };
static void *many[MANY];

static obj_segment *fill(size_t size) {
  for (int i = 0; i < MANY; i++) {
    many[i] = ma_malloc(size);
    cr_assert_not_null(many[i], "block %d of %zu bytes", i, size);
    memset(many[i], 0x5a, size);
  }
  return heap_segment_holding(many[0]);
}

/* A page mapped right past the reservation of the segment that p's block is in. */
static char *map_past(obj_segment *seg) {
  char *end = (char *)seg + seg->size;
  void *q = mmap(end, 4096, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
  cr_assert_eq(q, (void *)end, "mmap at %p: %s", (void *)end, strerror(errno));
  return q;
}

static void *capped(void *arg) {
  (void)arg;
  void *p = ma_malloc(32); /* this thread's small-slab segment, one slab reserved */
  obj_segment *seg = heap_segment_holding(p);
  cr_assert_not_null(seg);
  cr_assert_lt(seg->size, OBJ_SEG_SIZE, "reserved whole: %zu KiB", seg->size >> 10);
  size_t before = seg->size;
  char *foreign = map_past(seg);
  /* Many slabs' worth of the class: the segment cannot take them. */
  fill(32);
  cr_assert_eq(seg->size, before, "grew over the foreign page");
  cr_assert_eq(seg->slabs_max, seg->size >> seg->slab_shift, "slabs_max %u", seg->slabs_max);
  int elsewhere = 0;
  for (int i = 0; i < MANY; i++) {
    obj_segment *s = heap_segment_holding(many[i]);
    cr_assert_not_null(s, "block %d", i);
    elsewhere += s != seg;
  }
  cr_assert_gt(elsewhere, 0, "all %d blocks in the capped segment", MANY);
  cr_assert_null(heap_segment_holding(foreign), "the foreign page taken for the segment's");
  cr_assert_eq(ma_heap_check(), 0);
  for (int i = 0; i < MANY; i++) ma_free(many[i]);
  ma_free(p);
  cr_assert_eq(ma_heap_check(), 0);
  cr_assert_eq(*foreign, 0, "the foreign page was written");
  munmap(foreign, 4096);
  return arg;
}

Test(segment_grow, a_mapping_in_the_window_caps_the_segment) {
  skip_unless_growing();
  pthread_t t;
  void *ok = NULL;
  static int token;
  cr_assert_eq(pthread_create(&t, NULL, capped, &token), 0);
  pthread_join(t, &ok);
  cr_assert_not_null(ok);
}

/* A block just before the window's foreign page frees normally; the page itself is not a
 * block of the segment's: free names the misuse. */
static void *free_foreign(void *arg) {
  void *p = ma_malloc(32);
  char *foreign = map_past(heap_segment_holding(p));
  ma_free(p);
  *(char **)arg = foreign;
  ma_free(foreign); /* aborts: "invalid free" */
  return NULL;
}

#if GROWING
Test(segment_grow, freeing_a_foreign_mapping_in_the_window_aborts, .signal = SIGABRT) {
  char *foreign = NULL;
  pthread_t t;
  cr_assert_eq(pthread_create(&t, NULL, free_foreign, &foreign), 0);
  pthread_join(t, NULL);
}
#else /* (a test that expects a signal cannot skip itself) */
Test(segment_grow, freeing_a_foreign_mapping_in_the_window_aborts) {
  (void)free_foreign;
  cr_skip_test(NOT_GROWING);
}
#endif

/* The segment grows as the thread needs slabs, to the whole window. */
Test(segment_grow, a_segment_grows_to_its_window) {
  skip_unless_growing();
  obj_segment *seg = fill(32); /* 40000 x 32 B: about 20 slabs of 64 KiB */
  cr_assert_not_null(seg);
  size_t used = 0;
  for (int i = 0; i < MANY; i++) used += heap_segment_holding(many[i]) == seg;
  cr_assert_gt(seg->size, (size_t)1 << seg->slab_shift, "never grew: %zu KiB", seg->size >> 10);
  cr_assert_leq(seg->size, OBJ_SEG_SIZE);
  cr_assert_eq(seg->slabs_max, seg->nslabs, "capped without a foreign mapping");
  cr_assert_eq(ma_heap_check(), 0);
  for (int i = 0; i < MANY; i++) ma_free(many[i]);
  cr_assert_gt(used, 0);
}
