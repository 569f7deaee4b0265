/* Tests of the object pools (include/mapalloc/pool.h, src/obj/). */
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common.h"
#include "mapalloc/pool.h"
#include "obj/obj.h"

static ma_pool *mk(size_t size, size_t align, bool commit, bool zero, size_t max) {
  ma_pool_opts o = {
      .obj_size = size, .align = align, .commit = commit, .zero = zero, .max_bytes = max};
  ma_pool *p = NULL;
  int rc = ma_pool_create(&o, &p);
  cr_assert_eq(rc, 0, "create(%zu) = %d", size, rc);
  cr_assert_not_null(p);
  return p;
}

static ma_pool_stats st(ma_pool *p) {
  ma_pool_stats s;
  ma_pool_stats_get(p, &s);
  return s;
}

/* ---- API and errors ---------------------------------------------------------------- */

Test(pool, create_rejects_bad_options) {
  ma_pool *p = (ma_pool *)0x1;
  ma_pool_opts o = {.obj_size = 64};
  cr_assert_eq(ma_pool_create(NULL, &p), -EINVAL);
  cr_assert_eq(ma_pool_create(&o, NULL), -EINVAL);
  o.obj_size = 0;
  cr_assert_eq(ma_pool_create(&o, &p), -EINVAL);
  o.obj_size = ((size_t)1 << 30) + 1;
  cr_assert_eq(ma_pool_create(&o, &p), -EINVAL);
  o.obj_size = 64;
  o.align = 24;
  cr_assert_eq(ma_pool_create(&o, &p), -EINVAL);
  o.align = (size_t)8 << 20;
  cr_assert_eq(ma_pool_create(&o, &p), -EINVAL);
  o.align = 0;
  o.prot = MA_PROT_READ;
  cr_assert_eq(ma_pool_create(&o, &p), -EINVAL);
  o.prot = MA_PROT_READ | MA_PROT_WRITE | 0x100;
  cr_assert_eq(ma_pool_create(&o, &p), -EINVAL);
  o.prot = MA_PROT_READ | MA_PROT_WRITE | MA_PROT_EXEC;
  cr_assert_eq(ma_pool_create(&o, &p), -EPERM, "W^X: EXEC needs MA_MAP_JIT");
  o.prot = 0;
  o.map_flags = MA_MAP_RESERVE;
  cr_assert_eq(ma_pool_create(&o, &p), -EINVAL);
  o.map_flags = MA_MAP_STRICT_HINT;
  cr_assert_eq(ma_pool_create(&o, &p), -EINVAL);
  cr_assert_eq(p, (ma_pool *)0x1, "out untouched on failure");
}

Test(pool, null_arguments) {
  errno = 0;
  cr_assert_null(ma_pool_alloc(NULL));
  cr_assert_eq(errno, EINVAL);
  cr_assert_eq(ma_pool_trim(NULL), -EINVAL);
  ma_pool_stats s;
  ma_pool_stats_get(NULL, &s);
  ma_pool_destroy(NULL);
  ma_pool *p = mk(32, 0, false, false, 0);
  ma_pool_stats_get(p, NULL);
  ma_pool_free(p, NULL); /* no-op */
  cr_assert_eq(st(p).frees, 0);
  ma_pool_destroy(p);
}

Test(pool, alloc_free_and_stats) {
  ma_pool *p = mk(48, 0, false, false, 0);
  ma_pool_stats s = st(p);
  cr_assert_eq(s.obj_size, 48);
  cr_assert_eq(s.live, 0);
  void *a[100];
  for (int i = 0; i < 100; i++) {
    a[i] = ma_pool_alloc(p);
    cr_assert_not_null(a[i]);
    cr_assert_eq((uintptr_t)a[i] % 16, 0, "natural alignment of 48 is 16");
    memset(a[i], i, 48);
  }
  s = st(p);
  cr_assert_eq(s.allocs, 100);
  cr_assert_eq(s.live, 100);
  cr_assert_geq(s.capacity, 100);
  cr_assert_gt(s.committed_bytes, 0);
  cr_assert_geq(s.reserved_bytes, s.committed_bytes);
  for (int i = 0; i < 100; i++) {
    for (int j = 0; j < 48; j++) cr_assert_eq(((unsigned char *)a[i])[j], i);
    ma_pool_free(p, a[i]);
  }
  s = st(p);
  cr_assert_eq(s.frees, 100);
  cr_assert_eq(s.live, 0);
  ma_pool_destroy(p);
}

Test(pool, natural_and_explicit_alignment) {
  struct {
    size_t size, align, expect;
  } c[] = {{1, 0, 8},     {8, 0, 8},          {12, 0, 8},         {24, 0, 8},
           {40, 0, 8},    {64, 0, 16},        {100, 0, 8},        {40, 64, 64},
           {7, 256, 256}, {4096, 4096, 4096}, {100, 65536, 65536}};
  for (size_t k = 0; k < sizeof c / sizeof c[0]; k++) {
    ma_pool *p = mk(c[k].size, c[k].align, false, false, 0);
    void *v[50];
    for (int i = 0; i < 50; i++) {
      v[i] = ma_pool_alloc(p);
      cr_assert_not_null(v[i]);
      cr_assert_eq((uintptr_t)v[i] % c[k].expect, 0, "size %zu align %zu: %p", c[k].size,
                   c[k].align, v[i]);
      memset(v[i], 0x5a, c[k].size);
    }
    for (int i = 0; i < 50; i++) ma_pool_free(p, v[i]);
    ma_pool_destroy(p);
  }
}

Test(pool, big_objects_get_their_own_slabs) {
  size_t sizes[] = {(size_t)1 << 20, ((size_t)5 << 20) + 3};
  for (int k = 0; k < 2; k++) {
    ma_pool *p = mk(sizes[k], 0, false, false, 0);
    char *v[4];
    for (int i = 0; i < 4; i++) {
      v[i] = ma_pool_alloc(p);
      cr_assert_not_null(v[i]);
      v[i][0] = 1;
      v[i][sizes[k] - 1] = 2;
    }
    for (int i = 0; i < 4; i++)
      for (int j = i + 1; j < 4; j++)
        cr_assert(v[i] + sizes[k] <= v[j] || v[j] + sizes[k] <= v[i], "overlap");
    for (int i = 0; i < 4; i++) ma_pool_free(p, v[i]);
    ma_pool_trim(p);
    cr_assert_lt(st(p).committed_bytes, sizes[k], "empty solo slabs go back");
    ma_pool_destroy(p);
  }
}

Test(pool, million_objects_distinct_and_aligned) {
  const size_t n = 1000000;
  ma_pool *p = mk(16, 0, false, false, 0);
  uint64_t **v = malloc(n * sizeof *v);
  cr_assert_not_null(v);
  for (size_t i = 0; i < n; i++) {
    v[i] = ma_pool_alloc(p);
    cr_assert_not_null(v[i]);
    if ((uintptr_t)v[i] % 16) cr_assert_fail("misaligned %p", (void *)v[i]);
    v[i][0] = i;
    v[i][1] = ~i;
  }
  cr_assert_eq(st(p).live, n);
  for (size_t i = 0; i < n; i++)
    if (v[i][0] != i || v[i][1] != ~i) cr_assert_fail("object %zu overlaps another", i);
  for (size_t i = 0; i < n; i++) ma_pool_free(p, v[i]);
  cr_assert_eq(st(p).live, 0);
  free(v);
  ma_pool_destroy(p);
}

Test(pool, zero_pool_returns_zeroed_objects) {
  ma_pool *p = mk(200, 0, false, true, 0);
  unsigned char *v[300];
  for (int round = 0; round < 3; round++) {
    for (int i = 0; i < 300; i++) {
      v[i] = ma_pool_alloc(p);
      cr_assert_not_null(v[i]);
      for (int j = 0; j < 200; j++)
        if (v[i][j]) cr_assert_fail("round %d object %d byte %d not zero", round, i, j);
      memset(v[i], 0xff, 200);
    }
    for (int i = 0; i < 300; i++) ma_pool_free(p, v[i]);
  }
  ma_pool_destroy(p);
}

static bool resident(void *addr) {
  size_t ps = (size_t)sysconf(_SC_PAGESIZE);
  unsigned char vec = 0;
  void *page = (void *)((uintptr_t)addr & ~(ps - 1));
  cr_assert_eq(mincore(page, ps, &vec), 0);
  return vec & 1;
}

Test(pool, commit_true_populates_commit_false_is_lazy) {
  size_t ps = (size_t)sysconf(_SC_PAGESIZE);
  /* 4 KiB objects: a slab holds 32 of them, the first carve touches 16. */
  ma_pool *lazy = mk(4096, 4096, false, false, 0);
  ma_pool *eager = mk(4096, 4096, true, false, 0);
  char *a = ma_pool_alloc(lazy), *b = ma_pool_alloc(eager);
  cr_assert_not_null(a);
  cr_assert_not_null(b);
  /* Pages counted from the slab's first block: the first object need not be that block
   * (the secure build shuffles the allocation order). */
  char *sa = obj_slab_of(obj_segment_of(a), a)->start,
       *sb = obj_slab_of(obj_segment_of(b), b)->start;
  cr_assert(resident(sb + 24 * ps), "commit=true: later pages of the slab are populated");
  cr_assert_not(resident(sa + 24 * ps), "commit=false: pages are committed lazily");
  ma_pool_destroy(lazy);
  ma_pool_destroy(eager);
}

Test(pool, max_bytes_gives_enomem_then_recovers) {
  size_t max = 512 * 1024;
  ma_pool *p = mk(1024, 0, false, false, max);
  void *v[2048];
  int n = 0;
  for (; n < 2048; n++) {
    errno = 0;
    v[n] = ma_pool_alloc(p);
    if (!v[n]) break;
  }
  cr_assert_lt(n, 2048, "the cap must bite");
  cr_assert_gt(n, 100);
  cr_assert_eq(errno, ENOMEM);
  cr_assert_leq(st(p).committed_bytes, max);
  cr_assert_null(ma_pool_alloc(p), "still full");
  ma_pool_free(p, v[n - 1]);
  cr_assert_not_null(ma_pool_alloc(p), "a free makes room again");
  cr_assert_eq(st(p).live, (size_t)n);
  ma_pool_destroy(p);
}

Test(pool, trim_and_retention_return_memory) {
  const int n = 200000;
  ma_pool *p = mk(64, 0, false, false, 0);
  void **v = malloc(n * sizeof *v);
  for (int i = 0; i < n; i++) cr_assert_not_null(v[i] = ma_pool_alloc(p));
  size_t peak = st(p).committed_bytes;
  cr_assert_geq(peak, (size_t)n * 64);
  for (int i = 0; i < n; i++) ma_pool_free(p, v[i]);
  size_t after_free = st(p).committed_bytes;
  cr_assert_lt(after_free, peak / 4, "bounded retention: %zu of %zu kept", after_free, peak);
  cr_assert_eq(ma_pool_trim(p), 0);
  size_t after_trim = st(p).committed_bytes;
  cr_assert_lt(after_trim, after_free);
  cr_assert_leq(after_trim, 64 * 1024, "only segment headers remain: %zu", after_trim);
  cr_assert_eq(st(p).capacity, 0);
  /* The pool still works after a trim. */
  void *x = ma_pool_alloc(p);
  cr_assert_not_null(x);
  ma_pool_free(p, x);
  free(v);
  ma_pool_destroy(p);
}

Test(pool, many_pools_beyond_the_fast_slots) {
  enum { N = 300 };
  ma_pool **ps = malloc(N * sizeof *ps);
  void *v[N];
  for (int i = 0; i < N; i++) {
    ps[i] = mk((size_t)16 + (size_t)i, 0, false, false, 0);
    v[i] = ma_pool_alloc(ps[i]);
    cr_assert_not_null(v[i]);
    memset(v[i], i & 0xff, (size_t)16 + (size_t)i);
  }
  for (int i = 0; i < N; i++) {
    cr_assert_eq(((unsigned char *)v[i])[15], i & 0xff);
    ma_pool_free(ps[i], v[i]);
    cr_assert_eq(st(ps[i]).live, 0);
    ma_pool_destroy(ps[i]);
  }
  free(ps);
}

Test(pool, exec_pool_with_jit) {
  ma_pool_opts o = {.obj_size = 64,
                    .prot = MA_PROT_READ | MA_PROT_WRITE | MA_PROT_EXEC,
                    .map_flags = MA_MAP_JIT | MA_MAP_DONTDUMP};
  ma_pool *p;
  cr_assert_eq(ma_pool_create(&o, &p), 0);
  unsigned char *c = ma_pool_alloc(p);
  cr_assert_not_null(c);
  c[0] = 0xc3; /* ret */
  ma_pool_free(p, c);
  ma_pool_destroy(p);
}

Test(pool, destroy_releases_live_objects) {
  ma_pool *p = mk(128, 0, false, false, 0);
  for (int i = 0; i < 10000; i++) cr_assert_not_null(ma_pool_alloc(p));
  ma_pool_destroy(p); /* must not leak: checked by the mapping being gone */
  ma_pool *q = mk(128, 0, false, false, 0);
  cr_assert_not_null(ma_pool_alloc(q));
  ma_pool_destroy(q);
}

/* ---- threads ------------------------------------------------------------------------- */

#define RING 1024
typedef struct {
  ma_pool *p;
  void *_Atomic ring[RING];
  atomic_size_t head, tail;
  size_t n;
} pc_t;

static void *producer(void *arg) {
  pc_t *q = arg;
  for (size_t i = 0; i < q->n; i++) {
    uint64_t *o = ma_pool_alloc(q->p);
    cr_assert_not_null(o);
    o[0] = i;
    o[1] = i * 3;
    size_t h = atomic_load(&q->head);
    while (h - atomic_load(&q->tail) >= RING) sched_yield();
    atomic_store(&q->ring[h % RING], o);
    atomic_store(&q->head, h + 1);
  }
  return NULL;
}

static void *consumer(void *arg) {
  pc_t *q = arg;
  for (size_t i = 0; i < q->n; i++) {
    size_t t = atomic_load(&q->tail);
    while (atomic_load(&q->head) == t) sched_yield();
    uint64_t *o = atomic_load(&q->ring[t % RING]);
    atomic_store(&q->tail, t + 1);
    if (o[0] != i || o[1] != i * 3) cr_assert_fail("object %zu corrupted", i);
    ma_pool_free(q->p, o);
  }
  return NULL;
}

Test(pool, producer_consumer_cross_thread_frees) {
  pc_t *q = calloc(1, sizeof *q);
  q->p = mk(32, 0, false, false, 0);
  q->n = 300000;
  pthread_t a, b;
  pthread_create(&a, NULL, producer, q);
  pthread_create(&b, NULL, consumer, q);
  pthread_join(a, NULL);
  pthread_join(b, NULL);
  ma_pool_stats s = st(q->p);
  cr_assert_eq(s.allocs, q->n);
  cr_assert_eq(s.frees, q->n);
  cr_assert_eq(s.live, 0);
  /* Both threads exited: the producer's slabs were abandoned; a trim drops them. */
  ma_pool_trim(q->p);
  cr_assert_leq(st(q->p).committed_bytes, 64 * 1024);
  ma_pool_destroy(q->p);
  free(q);
}

typedef struct {
  ma_pool *p;
  void *_Atomic *swap; /* shared exchange slots: objects change hands here */
  size_t nswap;
  unsigned id;
  size_t ops;
  size_t size;
} stress_t;

static void tag(uint64_t *o, size_t size, uint64_t t) {
  o[0] = t;
  o[size / 8 - 1] = ~t;
}

static void check(uint64_t *o, size_t size) {
  if (o[size / 8 - 1] != ~o[0]) cr_assert_fail("object %p tag corrupted", (void *)o);
}

static void *stress(void *arg) {
  stress_t *a = arg;
  enum { LIVE = 512 };
  uint64_t *live[LIVE] = {0};
  uint64_t rng = 0x9e3779b97f4a7c15ull * (a->id + 1);
  for (size_t i = 0; i < a->ops; i++) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    size_t k = rng % LIVE;
    if (live[k]) {
      check(live[k], a->size);
      if (rng & 0x300) {
        ma_pool_free(a->p, live[k]);
        live[k] = NULL;
      } else { /* hand it to whoever comes next; take theirs */
        size_t s = (rng >> 20) % a->nswap;
        live[k] = atomic_exchange(&a->swap[s], live[k]);
        if (live[k]) check(live[k], a->size);
      }
    } else {
      live[k] = ma_pool_alloc(a->p);
      cr_assert_not_null(live[k]);
      tag(live[k], a->size, ((uint64_t)a->id << 48) | i);
    }
  }
  for (size_t k = 0; k < LIVE; k++)
    if (live[k]) {
      check(live[k], a->size);
      ma_pool_free(a->p, live[k]);
    }
  return NULL;
}

static void run_stress(unsigned nthreads, size_t ops, size_t size) {
  ma_pool *p = mk(size, 0, false, false, 0);
  size_t nswap = 64;
  void *_Atomic *swap = calloc(nswap, sizeof *swap);
  pthread_t th[16];
  stress_t args[16];
  for (unsigned i = 0; i < nthreads; i++) {
    args[i] = (stress_t){p, swap, nswap, i, ops, size};
    pthread_create(&th[i], NULL, stress, &args[i]);
  }
  for (unsigned i = 0; i < nthreads; i++) pthread_join(th[i], NULL);
  for (size_t s = 0; s < nswap; s++) {
    uint64_t *o = atomic_load(&swap[s]);
    if (o) {
      check(o, size);
      ma_pool_free(p, o);
    }
  }
  ma_pool_stats s = st(p);
  cr_assert_eq(s.live, 0, "live %zu", s.live);
  cr_assert_eq(s.allocs, s.frees);
  ma_pool_trim(p);
  cr_assert_leq(st(p).committed_bytes, 64 * 1024, "all memory back after exit + trim");
  free(swap);
  ma_pool_destroy(p);
}

Test(pool, stress_2_threads) {
  run_stress(2, 400000, 48);
}
Test(pool, stress_8_threads) {
  run_stress(8, 150000, 32);
}
Test(pool, stress_8_threads_big_objects) {
  run_stress(8, 20000, 4096);
}

static void *alloc_and_exit(void *arg) {
  void **out = arg;
  ma_pool *p = out[0];
  for (int i = 1; i < 5001; i++) {
    out[i] = ma_pool_alloc(p);
    memset(out[i], 7, 64);
  }
  return NULL;
}

Test(pool, thread_exit_hands_slabs_back) {
  ma_pool *p = mk(64, 0, false, false, 0);
  void **v = calloc(5001, sizeof *v);
  v[0] = p;
  pthread_t t;
  pthread_create(&t, NULL, alloc_and_exit, v);
  pthread_join(t, NULL);
  cr_assert_eq(st(p).live, 5000);
  /* The thread is gone: half its objects are freed remotely, then the rest after our own
   * allocations adopted its slabs. */
  for (int i = 1; i <= 2500; i++) ma_pool_free(p, v[i]);
  void *mine = ma_pool_alloc(p);
  cr_assert_not_null(mine);
  for (int i = 2501; i <= 5000; i++) {
    cr_assert_eq(((unsigned char *)v[i])[63], 7);
    ma_pool_free(p, v[i]);
  }
  ma_pool_free(p, mine);
  cr_assert_eq(st(p).live, 0);
  ma_pool_trim(p);
  cr_assert_leq(st(p).committed_bytes, 64 * 1024);
  free(v);
  ma_pool_destroy(p);
}

static void *hold_cache(void *arg) {
  ma_pool *p = arg;
  void *x = ma_pool_alloc(p);
  ma_pool_free(p, x);
  sleep(2);
  return NULL;
}

Test(pool, fork_child_uses_the_pool) {
  ma_pool *p = mk(96, 0, false, false, 0);
  pthread_t t;
  pthread_create(&t, NULL, hold_cache, p);
  void *kept[1000];
  for (int i = 0; i < 1000; i++) {
    kept[i] = ma_pool_alloc(p);
    memset(kept[i], 3, 96);
  }
  pid_t pid = fork();
  cr_assert_geq(pid, 0);
  if (pid == 0) {
    int ok = 1;
    for (int i = 0; i < 1000; i++) {
      if (((unsigned char *)kept[i])[95] != 3) ok = 0;
      ma_pool_free(p, kept[i]);
    }
    void *v[20000];
    for (int i = 0; i < 20000; i++) {
      v[i] = ma_pool_alloc(p);
      if (!v[i])
        ok = 0;
      else
        memset(v[i], 9, 96);
    }
    for (int i = 0; i < 20000; i++) ma_pool_free(p, v[i]);
    ma_pool_stats s;
    ma_pool_stats_get(p, &s);
    if (s.live != 0) ok = 0;
    ma_pool_destroy(p);
    _exit(ok ? 0 : 1);
  }
  expect_child_ok(pid, "pool user forked while another thread allocates");
  for (int i = 0; i < 1000; i++) ma_pool_free(p, kept[i]);
  pthread_join(t, NULL);
  ma_pool_destroy(p);
}

/* ---- misuse aborts ------------------------------------------------------------------- */

Test(pool, double_free_aborts, .signal = SIGABRT) {
  ma_pool *p = mk(64, 0, false, false, 0);
  void *a = ma_pool_alloc(p), *b = ma_pool_alloc(p);
  ma_pool_free(p, a);
  ma_pool_free(p, b);
  ma_pool_free(p, a);
}

static void *free_it(void *arg) {
  void **x = arg;
  ma_pool_free(x[0], x[1]);
  return NULL;
}

Test(pool, cross_thread_double_free_aborts, .signal = SIGABRT) {
  ma_pool *p = mk(64, 0, false, false, 0);
  void *x[2] = {p, ma_pool_alloc(p)};
  pthread_t t;
  pthread_create(&t, NULL, free_it, x);
  pthread_join(t, NULL);
  ma_pool_free(p, x[1]);
}

Test(pool, interior_pointer_aborts, .signal = SIGABRT) {
  ma_pool *p = mk(64, 0, false, false, 0);
  char *a = ma_pool_alloc(p);
  ma_pool_free(p, a + 16);
}

Test(pool, other_pools_object_aborts, .signal = SIGABRT) {
  ma_pool *p = mk(64, 0, false, false, 0), *q = mk(64, 0, false, false, 0);
  ma_pool_free(q, ma_pool_alloc(p));
}

Test(pool, stack_pointer_aborts, .signal = SIGABRT) {
  ma_pool *p = mk(64, 0, false, false, 0);
  int local;
  ma_pool_free(p, &local);
}

Test(pool, never_allocated_block_aborts, .signal = SIGABRT) {
  ma_pool *p = mk(64, 0, false, false, 0);
  char *a = ma_pool_alloc(p);
  ma_pool_free(p, a + 64 * 1000); /* same slab, not carved yet */
}

static ma_pool *misuse_pool;
static void double_free_in_pool(void) {
  void *a = ma_pool_alloc(misuse_pool);
  ma_pool_free(misuse_pool, a);
  ma_pool_free(misuse_pool, a);
}

Test(pool, misuse_message_names_it) {
  misuse_pool = mk(64, 0, false, false, 0);
  expect_abort_saying(double_free_in_pool,
                      (const char *const[]){"mapalloc: double free of 0x", NULL});
  ma_pool_destroy(misuse_pool);
}

/* ---- the object layer as the heap will use it (src/obj/obj.h) -------------------------- */

static obj_space heap_sp;
static const uint32_t heap_strides[] = {16,   32,   48,    64,    80,     112,    128,
                                        1024, 4096, 12288, 65536, 262144, 1048576};
#define NB (sizeof heap_strides / sizeof heap_strides[0])

static void *heap_thread(void *arg) {
  void **out = arg;
  obj_bins *bs = obj_bins_get(&heap_sp, NB, heap_strides, NULL);
  cr_assert_not_null(bs);
  for (uint32_t i = 0; i < NB; i++) {
    out[i] = obj_bin_alloc(bs, &bs->bins[i]);
    cr_assert_not_null(out[i]);
    memset(out[i], 0x33, heap_strides[i]);
  }
  obj_bins_abandon(bs); /* thread exit: live blocks stay valid */
  return NULL;
}

Test(obj, multi_class_bins_for_the_heap) {
  cr_assert_eq(obj_space_init(&heap_sp, MA_PROT_READ | MA_PROT_WRITE, 0, false, 0, "test"), 0);
  obj_bins *bs = obj_bins_get(&heap_sp, NB, heap_strides, NULL);
  cr_assert_not_null(bs);
  enum { N = 300 };
  static void *v[NB][N];
  for (uint32_t i = 0; i < NB; i++) {
    uint32_t n = heap_strides[i] >= 65536 ? 20 : N;
    for (uint32_t k = 0; k < n; k++) {
      char *p = obj_bin_alloc(bs, &bs->bins[i]);
      cr_assert_not_null(p);
      cr_assert_eq((uintptr_t)p % 16, 0);
      memset(p, (int)k, heap_strides[i]);
      obj_segment *seg = obj_segment_of(p);
      cr_assert_not_null(seg);
      cr_assert_eq(seg->space, &heap_sp);
      obj_slab *s = obj_slab_of(seg, p);
      cr_assert_eq(s->stride, heap_strides[i]);
      uint32_t idx;
      cr_assert(obj_block_index(s, p, &idx));
      cr_assert_eq(s->start + (size_t)idx * s->stride, p);
      cr_assert_not(obj_block_index(s, p + 8, &idx), "interior pointer");
      v[i][k] = p;
    }
  }
  int local;
  cr_assert_null(obj_segment_of(&local), "a stack address is not ours");
  void *m = malloc(64);
  cr_assert_null(obj_segment_of(m), "a malloc block is not ours");
  free(m);
  cr_assert_null(obj_segment_of(NULL));
  /* calloc-like: a dirty block comes back zeroed */
  obj_free(bs, obj_segment_of(v[3][0]), obj_slab_of(obj_segment_of(v[3][0]), v[3][0]), v[3][0]);
  unsigned char *z = obj_bin_alloc_zero(bs, &bs->bins[3]);
  for (int j = 0; j < 64; j++) cr_assert_eq(z[j], 0);
  v[3][0] = z;
  /* a thread that exits with live blocks in every class */
  void *orphan[NB];
  pthread_t t;
  pthread_create(&t, NULL, heap_thread, orphan);
  pthread_join(t, NULL);
  for (uint32_t i = 0; i < NB; i++) {
    cr_assert_eq(((unsigned char *)orphan[i])[heap_strides[i] - 1], 0x33);
    obj_segment *seg = obj_segment_of(orphan[i]);
    obj_free(bs, seg, obj_slab_of(seg, orphan[i]), orphan[i]); /* remote: batched in bs */
  }
  for (uint32_t i = 0; i < NB; i++) {
    uint32_t n = heap_strides[i] >= 65536 ? 20 : N;
    for (uint32_t k = 0; k < n; k++) {
      obj_segment *seg = obj_segment_of(v[i][k]);
      obj_free(bs, seg, obj_slab_of(seg, v[i][k]), v[i][k]);
    }
  }
  obj_bins_trim(bs);        /* sends the batched remote frees to the parked cache */
  obj_space_trim(&heap_sp); /* which another thread files and trims */
  cr_assert_eq(heap_sp.capacity, 0, "every slab retired");
  cr_assert_leq(heap_sp.committed, 8 * 64 * 1024, "committed %zu", heap_sp.committed);
  obj_bins_abandon(bs);
  obj_space_destroy(&heap_sp);
}

/* Short-lived producers hand objects to long-lived consumers and exit while their objects
 * are still being freed: remote frees race abandonment and adoption. */
typedef struct {
  ma_pool *p;
  pthread_mutex_t mu;
  uint64_t **q;
  size_t head, tail, cap;
  atomic_int producers_left;
} exitq_t;

static void *short_producer(void *arg) {
  exitq_t *x = arg;
  for (int i = 0; i < 10000; i++) {
    uint64_t *o = ma_pool_alloc(x->p);
    cr_assert_not_null(o);
    o[0] = (uint64_t)(uintptr_t)o ^ 0x5555;
    o[5] = ~o[0];
    pthread_mutex_lock(&x->mu);
    x->q[x->head++ % x->cap] = o;
    pthread_mutex_unlock(&x->mu);
    if (i % 7 == 0) ma_pool_free(x->p, ma_pool_alloc(x->p)); /* local churn too */
  }
  atomic_fetch_sub(&x->producers_left, 1);
  return NULL;
}

static void *long_consumer(void *arg) {
  exitq_t *x = arg;
  for (;;) {
    uint64_t *o = NULL;
    pthread_mutex_lock(&x->mu);
    if (x->tail < x->head) o = x->q[x->tail++ % x->cap];
    pthread_mutex_unlock(&x->mu);
    if (!o) {
      if (atomic_load(&x->producers_left) == 0) {
        pthread_mutex_lock(&x->mu);
        bool empty = x->tail == x->head;
        pthread_mutex_unlock(&x->mu);
        if (empty) return NULL;
      }
      sched_yield();
      continue;
    }
    if (o[0] != ((uint64_t)(uintptr_t)o ^ 0x5555) || o[5] != ~o[0])
      cr_assert_fail("object %p corrupted", (void *)o);
    ma_pool_free(x->p, o);
  }
}

Test(pool, producers_exit_while_consumers_free) {
  exitq_t *x = calloc(1, sizeof *x);
  x->p = mk(48, 0, false, false, 0);
  pthread_mutex_init(&x->mu, NULL);
  x->cap = 8 * 10000;
  x->q = calloc(x->cap, sizeof *x->q);
  atomic_store(&x->producers_left, 8);
  pthread_t c[2], pr[8];
  for (int i = 0; i < 2; i++) pthread_create(&c[i], NULL, long_consumer, x);
  for (int r = 0; r < 4; r++) { /* two at a time: threads come and go */
    pthread_create(&pr[2 * r], NULL, short_producer, x);
    pthread_create(&pr[2 * r + 1], NULL, short_producer, x);
    pthread_join(pr[2 * r], NULL);
    pthread_join(pr[2 * r + 1], NULL);
  }
  for (int i = 0; i < 2; i++) pthread_join(c[i], NULL);
  ma_pool_stats s = st(x->p);
  cr_assert_eq(s.live, 0, "live %zu", s.live);
  cr_assert_eq(s.allocs, s.frees);
  ma_pool_trim(x->p);
  cr_assert_leq(st(x->p).committed_bytes, 64 * 1024, "committed %zu", st(x->p).committed_bytes);
  ma_pool_destroy(x->p);
  free(x->q);
  free(x);
}

/* ---- statistics read while other threads allocate (ThreadSanitizer: tools/test.sh --stage
 * tsan). The counters are written by one thread each (relaxed stores, obj_stat_inc) and
 * read with relaxed loads; a plain ++ there is a data race TSan reports. */

#include "mapalloc/heap.h"

enum { STATS_WORKERS = 2, STATS_ROUNDS = 300, STATS_BATCH = 64 };

typedef struct {
  ma_pool *pool;
  atomic_int running;
} stats_ctx;

static void *stats_worker(void *arg) {
  stats_ctx *c = arg;
  void *objs[STATS_BATCH], *blocks[STATS_BATCH];
  for (int r = 0; r < STATS_ROUNDS; r++) {
    for (int i = 0; i < STATS_BATCH; i++) {
      objs[i] = ma_pool_alloc(c->pool);
      blocks[i] = ma_malloc((size_t)16 << (i % 8)); /* 16 B .. 2 KiB */
      if (!objs[i] || !blocks[i]) abort();
    }
    for (int i = 0; i < STATS_BATCH; i++) {
      /* objects in a scrambled order (7 is prime to the batch), heap blocks in order */
      ma_pool_free(c->pool, objs[(i * 7) % STATS_BATCH]);
      ma_free(blocks[i]);
    }
  }
  atomic_fetch_sub(&c->running, 1);
  return NULL;
}

Test(pool, stats_read_while_threads_allocate) {
  stats_ctx c = {.pool = mk(48, 0, false, false, 0), .running = STATS_WORKERS};
  pthread_t th[STATS_WORKERS];
  for (int i = 0; i < STATS_WORKERS; i++)
    cr_assert_eq(pthread_create(&th[i], NULL, stats_worker, &c), 0);
  size_t last_allocs = 0, reads = 0;
  while (atomic_load(&c.running) > 0 || reads < 10) {
    ma_pool_stats ps = st(c.pool);
    ma_heap_stats hs;
    ma_heap_stats_get(&hs);
    cr_assert_geq(ps.allocs, last_allocs, "pool allocs went backwards");
    cr_assert_leq(ps.allocs, (size_t)STATS_WORKERS * STATS_ROUNDS * STATS_BATCH);
    last_allocs = ps.allocs;
    reads++;
  }
  for (int i = 0; i < STATS_WORKERS; i++) pthread_join(th[i], NULL);
  ma_pool_stats ps = st(c.pool);
  cr_assert_eq(ps.allocs, (size_t)STATS_WORKERS * STATS_ROUNDS * STATS_BATCH);
  cr_assert_eq(ps.frees, ps.allocs);
  cr_assert_eq(ps.live, 0);
  ma_pool_destroy(c.pool);
}
