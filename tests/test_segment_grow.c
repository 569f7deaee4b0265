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
#include "obj/obj_internal.h"

#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif

/* Where segments are reserved whole (the zone is x86-64 only, and left to ThreadSanitizer's
 * shadow), there is nothing to test. */
#if !defined(__x86_64__) || OBJ_TSAN
#define GROWING 0
#else
#define GROWING 1
#endif
#define NOT_GROWING "segments are reserved whole in this build (not x86-64, or TSan)"
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

/* ---- the zone ----------------------------------------------------------------------------- */

#define ZONE_START ((uintptr_t)32 << 40)
#define ZONE_END   ((uintptr_t)33 << 40)

/* New threads that each take a small block and stay alive until released, so that each
 * one's heap is new (an exited thread's heap is handed to the next thread). */
static pthread_mutex_t hold_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t hold_cv = PTHREAD_COND_INITIALIZER;
static int hold_released;

static void *hold_first_block(void *arg) {
  *(void **)arg = ma_malloc(48);
  pthread_mutex_lock(&hold_mu);
  while (!hold_released) pthread_cond_wait(&hold_cv, &hold_mu);
  pthread_mutex_unlock(&hold_mu);
  return NULL;
}

/* Starts a holding thread; returns the segment of its block (*block). */
static obj_segment *first_segment_of_a_new_thread(pthread_t *t, void *volatile *block) {
  *block = NULL;
  cr_assert_eq(pthread_create(t, NULL, hold_first_block, (void *)block), 0);
  while (!*block) usleep(100);
  obj_segment *seg = heap_segment_holding(*block);
  cr_assert_not_null(seg);
  return seg;
}

static void release_threads(pthread_t *t, int n) {
  pthread_mutex_lock(&hold_mu);
  hold_released = 1;
  pthread_cond_broadcast(&hold_cv);
  pthread_mutex_unlock(&hold_mu);
  for (int i = 0; i < n; i++) pthread_join(t[i], NULL);
}

static bool in_zone(const void *p) {
  return (uintptr_t)p >= ZONE_START && (uintptr_t)p < ZONE_END;
}

/* Someone's mapping of 512 MiB where the zone's turn is: the next segments go elsewhere in
 * the zone (the turn jumps), not out of it. */
Test(segment_grow, a_large_mapping_at_the_zones_turn_is_skipped) {
  skip_unless_growing();
  void *b0 = ma_malloc(48), *volatile b[2];
  pthread_t t[2];
  cr_assert(in_zone(heap_segment_holding(b0)), "segments are in the zone");
  uintptr_t next = obj_zone_next();
  cr_assert_neq(next, 0);
  size_t len = (size_t)512 << 20;
  if (next + len > ZONE_END) next = ZONE_END - len; /* (the turn wraps; stay inside) */
  void *q = mmap((void *)next, len, PROT_NONE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED_NOREPLACE, -1, 0);
  cr_assert_eq(q, (void *)next, "mmap at %p: %s", (void *)next, strerror(errno));
  obj_segment *segs[2] = {first_segment_of_a_new_thread(&t[0], &b[0]),
                          first_segment_of_a_new_thread(&t[1], &b[1])};
  cr_assert_neq(segs[0], segs[1]);
  for (int k = 0; k < 2; k++) {
    uintptr_t s = (uintptr_t)segs[k];
    cr_assert(in_zone(segs[k]), "segment %#lx out of the zone", (unsigned long)s);
    cr_assert(s + OBJ_SEG_SIZE <= next || s >= next + len,
              "segment %#lx inside the foreign mapping", (unsigned long)s);
    cr_assert_lt(segs[k]->size, OBJ_SEG_SIZE);
  }
  cr_assert_neq(obj_zone_next(), 0, "the zone was given up");
  cr_assert_eq(ma_heap_check(), 0);
  release_threads(t, 2);
  ma_free(b0);
  ma_free(b[0]);
  ma_free(b[1]);
  munmap(q, len);
}

/* A zone with no free window (all of it mapped by someone else): segments are reserved
 * whole where the kernel puts them, and the heap works on. */
Test(segment_grow, a_full_zone_falls_back_to_whole_segments) {
  skip_unless_growing();
  void *b0 = ma_malloc(48), *volatile b1;
  pthread_t t;
  /* The rest of the zone, a GiB at a time, window by window where a segment is. */
  enum { MAXMAPS = 4096 };
  static void *maps[MAXMAPS];
  static size_t lens[MAXMAPS];
  size_t n = 0;
  const size_t gib = (size_t)1 << 30;
  for (uintptr_t a = ZONE_START; a < ZONE_END; a += gib) {
    int f = MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED_NOREPLACE;
    void *q = mmap((void *)a, gib, PROT_NONE, f, -1, 0);
    if (q == (void *)a) {
      maps[n] = q, lens[n++] = gib;
      continue;
    }
    cr_assert_eq(errno, EEXIST);
    for (uintptr_t w = a; w < a + gib; w += OBJ_SEG_SIZE) {
      q = mmap((void *)w, OBJ_SEG_SIZE, PROT_NONE, f, -1, 0);
      if (q == (void *)w) {
        cr_assert_lt(n, MAXMAPS);
        maps[n] = q, lens[n++] = OBJ_SEG_SIZE;
      }
    }
  }
  obj_segment *s = first_segment_of_a_new_thread(&t, &b1);
  cr_assert(!in_zone(s), "segment %p in a full zone", (void *)s);
  cr_assert_eq(s->size, OBJ_SEG_SIZE, "reserved whole: %zu KiB", s->size >> 10);
  cr_assert_eq(obj_zone_next(), 0, "the zone is given up");
  cr_assert_eq(ma_heap_check(), 0);
  release_threads(&t, 1);
  ma_free(b0);
  ma_free(b1);
  for (size_t i = 0; i < n; i++) munmap(maps[i], lens[i]);
}
