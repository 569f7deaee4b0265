/* Tests of the object layer's retention/purge policy (src/obj/obj_bins.c): empty slabs stay
 * committed and mapped for the space's purge delay, are reused without a new mapping, and go
 * back to the OS at the first slow path after the delay; a pool that shrinks gives memory
 * back by itself. */
#include <criterion/criterion.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mapalloc/pool.h"
#include "obj/obj.h"

enum { NB = 2, N = 40000 }; /* 40k blocks of 256 bytes: ~10 MiB in 64 KiB slabs */
static const uint32_t strides[NB] = {256, 48};

/* Number of mappings of the process (/proc/self/maps lines). */
static size_t map_count(void) {
  FILE *f = fopen("/proc/self/maps", "r");
  cr_assert_not_null(f);
  size_t n = 0;
  int c;
  while ((c = fgetc(f)) != EOF)
    if (c == '\n') n++;
  fclose(f);
  return n;
}

static void free_all(void **v, size_t n) {
  for (size_t k = 0; k < n; k++) {
    obj_segment *seg = obj_segment_of(v[k]);
    cr_assert_not_null(seg);
    obj_free(NULL, seg, obj_slab_of(seg, v[k]), v[k]);
  }
}

static void alloc_all(obj_bins *bs, void **v, size_t n) {
  for (size_t k = 0; k < n; k++) {
    v[k] = obj_bin_alloc(bs, &bs->bins[0]);
    cr_assert_not_null(v[k]);
    memset(v[k], 0x5a, strides[0]);
  }
}

/* A space named `name` whose empty slabs are purged `delay_ms` after they were emptied, and
 * this thread's bins in it. */
static obj_bins *space_bins(obj_space *sp, const char *name, int delay_ms) {
  cr_assert_eq(obj_space_init(sp, MA_PROT_READ | MA_PROT_WRITE, 0, false, 0, name), 0);
  sp->purge_delay_ms = delay_ms;
  obj_bins *bs = obj_bins_get(sp, NB, strides, NULL);
  cr_assert_not_null(bs);
  return bs;
}

Test(retention, reuse_within_the_delay_maps_nothing_and_purges_nothing) {
  static obj_space sp;
  static void *v[N];
  obj_bins *bs = space_bins(&sp, "ret1", 60000); /* nothing expires during the test */
  alloc_all(bs, v, N);
  size_t peak = sp.committed;
  free_all(v, N);
  cr_assert_gt(bs->retained, 0, "empty slabs are retained");
  cr_assert_leq(bs->retained, (peak >> OBJ_RETAIN_SHIFT) + OBJ_RETAIN_BYTES,
                "retention bounded by the peak");
  size_t purged = sp.purged_bytes, maps = map_count(), purges = sp.purges;
  for (int round = 0; round < 3; round++) {
    alloc_all(bs, v, N);
    free_all(v, N);
  }
  /* Retained slabs were reused; the others were purged with MADV_DONTNEED (mapped). */
  size_t maps_after = map_count();
  cr_assert_leq(maps_after, maps + 2, "no new mapping: %zu -> %zu", maps, maps_after);
  cr_assert_eq(sp.purges, purges, "no purge pass before the delay");
  cr_assert_geq(sp.purged_bytes, purged);
  obj_bins_trim(bs);
  cr_assert_eq(sp.purges, purges + 1, "a trim counts one purge pass");
  cr_assert_eq(bs->retained, 0);
  obj_bins_abandon(bs);
  obj_space_destroy(&sp);
}

/* A space that keeps segments (the heap's) keeps a segment emptied whole while it retains
 * slabs: a burst that empties segments and fills them again maps and commits nothing; the
 * purge after the delay unmaps them. A pool's space unmaps it as it empties. */
Test(retention, emptied_segments_stay_for_the_delay_where_the_space_keeps_them) {
  static obj_space sp, pool;
  static void *v[N];
  obj_bins *bs = space_bins(&sp, "ret-keep", 60);
  sp.keep_segments = true;
  alloc_all(bs, v, N);
  size_t reserved = sp.reserved, committed = sp.committed;
  cr_assert_gt(reserved, (size_t)2 * OBJ_SEG_SIZE, "the burst spans segments: %zu", reserved);
  free_all(v, N);
  cr_assert_eq(sp.reserved, reserved, "emptied segments stay");
  size_t maps = map_count();
  alloc_all(bs, v, N);
  cr_assert_eq(sp.reserved, reserved, "refilled in place: %zu -> %zu", reserved, sp.reserved);
  cr_assert_eq(sp.committed, committed, "nothing committed anew: %zu -> %zu", committed,
               sp.committed);
  cr_assert_leq(map_count(), maps + 2, "no new mapping");
  free_all(v, N);
  usleep(150 * 1000);
  cr_assert(obj_bins_purge_check(bs), "a purge pass after the delay");
  cr_assert_eq(bs->retained, 0);
  cr_assert_leq(sp.reserved, (size_t)OBJ_SEG_SIZE, "the purge unmapped the empty segments: %zu",
                sp.reserved);
  obj_bins_abandon(bs);
  obj_space_destroy(&sp);

  bs = space_bins(&pool, "ret-pool", 60000);
  alloc_all(bs, v, N);
  reserved = pool.reserved;
  free_all(v, N);
  cr_assert_leq(pool.reserved, (size_t)OBJ_SEG_SIZE,
                "a pool's empty segments go at once: %zu of %zu", pool.reserved, reserved);
  obj_bins_abandon(bs);
  obj_space_destroy(&pool);
}

Test(retention, committed_falls_after_the_delay_and_one_slow_path) {
  static obj_space sp;
  static void *v[N];
  obj_bins *bs = space_bins(&sp, "ret2", 30);
  alloc_all(bs, v, N);
  free_all(v, N);
  size_t kept = sp.committed, purges = sp.purges;
  cr_assert_gt(bs->retained, 0);
  cr_assert_eq(obj_bins_purge_check(bs), false, "not yet: within the delay");
  usleep(80 * 1000);
  /* One slow-path event: the first allocation from the other bin refills. */
  void *x = obj_bin_alloc(bs, &bs->bins[1]);
  cr_assert_not_null(x);
  cr_assert_eq(sp.purges, purges + 1, "the slow path purged");
  cr_assert_eq(bs->retained, 0);
  cr_assert_lt(sp.committed, kept, "committed falls: %zu -> %zu", kept, sp.committed);
  cr_assert_leq(sp.committed, 4 * 64 * 1024, "headers and one slab remain: %zu", sp.committed);
  /* A purged slab comes back zeroed and usable. */
  alloc_all(bs, v, 64);
  free_all(v, 64);
  free_all(&x, 1);
  obj_bins_abandon(bs);
  obj_space_destroy(&sp);
}

/* Each slab is purged once it has been empty for the delay, not all of them a delay after
 * the first: slabs emptied again since stay. Margins of 80 ms: only a stall that long could
 * fail it. */
Test(retention, a_purge_takes_only_the_slabs_empty_for_the_delay) {
  enum { M = 1000 }; /* about 4 slabs of 256 blocks */
  static obj_space sp;
  static void *v[N];
  obj_bins *bs = space_bins(&sp, "ret4", 200);
  alloc_all(bs, v, N);
  free_all(v, N);
  size_t all = bs->retained, purges = sp.purges;
  cr_assert_gt(all, 16 * 64 * 1024);
  usleep(120 * 1000);
  alloc_all(bs, v, M); /* reuses a few retained slabs, emptied again below */
  free_all(v, M);
  cr_assert_eq(sp.purges, purges, "no pass before the delay");
  usleep(120 * 1000);
  cr_assert_eq(obj_bins_purge_check(bs), true, "the first slabs were empty 240 ms > 200");
  size_t kept = bs->retained;
  cr_assert_gt(kept, 0, "the slabs emptied 120 ms ago stay");
  cr_assert_leq(kept, (M / 256 + 2) * 64 * 1024, "only those: %zu of %zu", kept, all);
  cr_assert_eq(obj_bins_purge_check(bs), false, "the next pass waits for the oldest kept");
  usleep(120 * 1000);
  cr_assert_eq(obj_bins_purge_check(bs), true, "then they go too");
  cr_assert_eq(bs->retained, 0);
  obj_bins_abandon(bs);
  obj_space_destroy(&sp);
}

Test(retention, delay_zero_purges_at_once) {
  static obj_space sp;
  static void *v[N];
  obj_bins *bs = space_bins(&sp, "ret3", 0);
  alloc_all(bs, v, N);
  size_t purged = sp.purged_bytes;
  free_all(v, N);
  cr_assert_eq(bs->retained, 0);
  cr_assert_gt(sp.purged_bytes, purged + (size_t)N * strides[0] / 2);
  obj_bins_abandon(bs);
  obj_space_destroy(&sp);
}

Test(retention, a_shrinking_pool_gives_memory_back_by_itself) {
  ma_pool_opts o = {.obj_size = 128};
  ma_pool *p = NULL;
  cr_assert_eq(ma_pool_create(&o, &p), 0);
  static void *v[N];
  for (int k = 0; k < N; k++) cr_assert_not_null(v[k] = ma_pool_alloc(p));
  for (int k = 0; k < N; k++) ma_pool_free(p, v[k]);
  ma_pool_stats a, b;
  ma_pool_stats_get(p, &a);
  usleep((OBJ_PURGE_DELAY_DEFAULT + 100) * 1000);
  /* Slow-path events: more blocks than the current slab holds. */
  for (int k = 0; k < 2000; k++) cr_assert_not_null(v[k] = ma_pool_alloc(p));
  ma_pool_stats_get(p, &b);
  cr_assert_lt(b.committed_bytes, a.committed_bytes, "%zu -> %zu", a.committed_bytes,
               b.committed_bytes);
  cr_assert_leq(b.committed_bytes, 2000 * 128 + 4 * 64 * 1024);
  for (int k = 0; k < 2000; k++) ma_pool_free(p, v[k]);
  ma_pool_destroy(p);
}
