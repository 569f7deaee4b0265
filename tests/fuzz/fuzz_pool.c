/* libFuzzer target for object pools (include/mapalloc/pool.h).
 *
 * The first bytes choose two pools (object size, alignment, zero, commit, max_bytes); the
 * rest is a program of operations on up to NSLOTS live objects: alloc, free, a burst of
 * allocs or frees, trim, a statistics check, and a batch of frees and allocs run by a
 * short-lived second thread (remote frees; its caches are abandoned at exit and adopted).
 * Every object is filled with a pattern derived from its id and checked before it is freed;
 * alignment, zeroing (zero pools), the live/allocs/frees counters and the max_bytes bound on
 * the committed footprint are checked against the shadow. At the end the pools are
 * destroyed, one of them with its live objects still in it when the input says so. */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <string.h>

#include "fuzz_common.h"
#include "mapalloc/pool.h"

enum { NSLOTS = 128, NPOOLS = 2, SMALL_CHECK = 4096, EDGE = 1024 };

typedef struct pool_model {
  ma_pool *p;
  ma_pool_opts o;
  size_t align; /* effective */
  size_t live, allocs, frees;
} pool_model;

typedef struct obj {
  unsigned char *p;
  int pool;
  uint32_t id;
} obj;

static pool_model pools[NPOOLS];
static obj slots[NSLOTS];
static uint32_t next_id;

/* Visits the patterned bytes of an object: all of a small one, both ends of a big one. */
static void visit(size_t size, unsigned char *p, uint32_t id, bool write, bool zero) {
  size_t spans[2][2] = {{0, size}, {size, size}};
  if (size > SMALL_CHECK) {
    spans[0][1] = EDGE;
    spans[1][0] = size - EDGE;
  }
  for (int k = 0; k < 2; k++)
    for (size_t j = spans[k][0]; j < spans[k][1]; j++) {
      if (write)
        p[j] = fz_pattern(id, j);
      else if (zero)
        FZ_CHECK(p[j] == 0, "zero pool object %p byte %zu is %#x", (void *)p, j, p[j]);
      else
        FZ_CHECK(p[j] == fz_pattern(id, j), "object id %u byte %zu is %#x, want %#x", id, j, p[j],
                 fz_pattern(id, j));
    }
}

static void release(obj *o) {
  if (!o->p) return;
  pool_model *m = &pools[o->pool];
  visit(m->o.obj_size, o->p, o->id, false, false);
  ma_pool_free(m->p, o->p);
  o->p = NULL;
  m->live--;
  m->frees++;
}

static bool alloc_into(obj *o, int pool) {
  release(o);
  pool_model *m = &pools[pool];
  errno = 0;
  unsigned char *p = ma_pool_alloc(m->p);
  if (!p) {
    FZ_CHECK(errno == ENOMEM && m->o.max_bytes != 0, "pool_alloc failed: errno %d", errno);
    return false;
  }
  FZ_CHECK(((uintptr_t)p & (m->align - 1)) == 0, "%p not aligned to %zu", (void *)p, m->align);
  if (m->o.zero) visit(m->o.obj_size, p, 0, false, true);
  o->p = p;
  o->pool = pool;
  o->id = next_id++;
  visit(m->o.obj_size, p, o->id, true, false);
  m->live++;
  m->allocs++;
  return true;
}

static void check_stats(void) {
  for (int i = 0; i < NPOOLS; i++) {
    pool_model *m = &pools[i];
    ma_pool_stats st;
    ma_pool_stats_get(m->p, &st);
    FZ_CHECK(st.obj_size == m->o.obj_size, "obj_size %zu", st.obj_size);
    FZ_CHECK(st.live == m->live, "pool %d live %zu, want %zu", i, st.live, m->live);
    FZ_CHECK(st.allocs == m->allocs && st.frees == m->frees,
             "pool %d allocs/frees %zu/%zu, want %zu/%zu", i, st.allocs, st.frees, m->allocs,
             m->frees);
    FZ_CHECK(st.capacity >= st.live, "capacity %zu < live %zu", st.capacity, st.live);
    FZ_CHECK(!m->o.max_bytes || st.committed_bytes <= m->o.max_bytes,
             "committed %zu over max_bytes %zu", st.committed_bytes, m->o.max_bytes);
  }
}

/* Object sizes: mostly small, some odd, a few large enough for one-slab segments. */
static void read_pool(fz_in *in, pool_model *m) {
  uint8_t f = fz_u8(in);
  uint16_t v = fz_u16(in);
  size_t size;
  switch (f & 3) {
  case 0:
  case 1:
    size = 1 + v % 256;
    break;
  case 2:
    size = 1 + v % 8192;
    break;
  default: /* one in four up to 1 MiB: one-slab segments, but costly to fill and map */
    size = (f >> 6) == 3 ? 1 + (size_t)v * 16 : 1 + (size_t)v;
    break;
  }
  size_t align = (f >> 2 & 1) ? (size_t)1 << (fz_u8(in) % 13) : 0;
  m->o = (ma_pool_opts){.obj_size = size,
                        .align = align,
                        .zero = f >> 3 & 1,
                        .commit = f >> 4 & 1,
                        .max_bytes = (f >> 5 & 1) ? ((size_t)fz_u8(in) + 1) << 16 : 0};
  if (align == 0) {
    align = size & -size;
    align = align > 16 ? 16 : align < 8 ? 8 : align;
  }
  m->align = align;
  m->live = m->allocs = m->frees = 0;
  int r = ma_pool_create(&m->o, &m->p);
  FZ_CHECK(r == 0, "pool_create(size %zu align %zu) = %d", size, m->o.align, r);
}

typedef struct remote_job {
  uint64_t free_mask[2], alloc_mask[2];
} remote_job;

static void *remote_main(void *arg) {
  remote_job *j = arg;
  for (int i = 0; i < NSLOTS; i++)
    if (j->free_mask[i / 64] >> (i % 64) & 1) release(&slots[i]);
  for (int i = 0; i < NSLOTS; i++)
    if ((j->alloc_mask[i / 64] >> (i % 64) & 1) && !slots[i].p) alloc_into(&slots[i], i & 1);
  return NULL;
}

static void do_remote(fz_in *in) {
  remote_job j;
  for (int k = 0; k < 2; k++) {
    j.free_mask[k] = (uint64_t)fz_u32(in) << 32 | fz_u32(in);
    j.alloc_mask[k] = fz_u32(in);
  }
  pthread_t t;
  FZ_CHECK(pthread_create(&t, NULL, remote_main, &j) == 0, "pthread_create");
  pthread_join(t, NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fz_in in = {data, size};
  next_id = 1;
  for (int i = 0; i < NPOOLS; i++) read_pool(&in, &pools[i]);
  bool destroy_live = fz_u8(&in) & 1;
  while (fz_more(&in)) {
    uint8_t op = fz_u8(&in), a = fz_u8(&in);
    obj *o = &slots[a % NSLOTS];
    switch (op % 8) {
    case 0:
    case 1:
      alloc_into(o, op >> 7);
      break;
    case 2:
      release(o);
      break;
    case 3: /* burst: fill the next n empty slots */
      for (int i = 0, n = 1 + fz_u8(&in) % 64; i < NSLOTS && n > 0; i++)
        if (!slots[(a + i) % NSLOTS].p) n -= alloc_into(&slots[(a + i) % NSLOTS], op >> 7) ? 1 : 64;
      break;
    case 4: /* free every k-th live object */
      for (int i = a % 4; i < NSLOTS; i += 1 + (op >> 4)) release(&slots[i]);
      break;
    case 5:
      FZ_CHECK(ma_pool_trim(pools[op >> 7].p) == 0, "trim");
      break;
    case 6:
      check_stats();
      break;
    default:
      do_remote(&in);
      break;
    }
  }
  check_stats();
  for (int i = 0; i < NSLOTS; i++)
    if (!destroy_live || slots[i].pool != 0) release(&slots[i]);
  for (int i = 0; i < NPOOLS; i++) ma_pool_destroy(pools[i].p);
  memset(slots, 0, sizeof slots);
  return 0;
}
