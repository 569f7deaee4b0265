/* Long stress test of the heap (ma_*) and the object pools (ma_pool_*).
 *
 *   ma_stress [SECONDS] [--seed N] [--threads-max N] [--budget-mib N] [--no-fork] [--quiet]
 *
 * Runs phases of 2 to 16 worker threads (the first four phases use 2, 4, 8 and 16; later
 * ones a seeded random count) that do random heap and pool operations on a table of their
 * own, hand blocks to each other through shared slots (so most frees of those blocks are
 * cross-thread, and some blocks outlive the thread that allocated them), and now and then
 * fork: the child verifies and frees inherited blocks, allocates its own, starts threads
 * that do the same, walks its heap and pools (ma_heap_check, ma_pool_check) and exits 0.
 *
 * Every block is filled over its whole usable size with a pattern derived from its id and
 * size, and verified before every free and realloc, after every realloc (the kept prefix),
 * at random and at the end of each phase. A mismatch aborts with a message naming the
 * block. At the end the program prints the operations done per kind, ops/s and the peak
 * RSS (VmHWM), and exits 0 only if every check and every child passed.
 *
 * Choices come from a seeded generator per thread and phase (the seed is printed); thread
 * interleaving is up to the scheduler, so a failing seed makes a failure likely to recur,
 * not certain. */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "mapalloc/heap.h"
#include "mapalloc/pool.h"

/* ---- configuration ------------------------------------------------------------------- */

enum {
  TABLE = 1024,    /* blocks a worker holds at most */
  SLOTS = 4096,    /* shared hand-off slots */
  NPOOLS = 7,      /* pools shared by all threads */
  MAX_THREADS = 16 /* upper bound of --threads-max */
};

static struct {
  uint64_t seed;
  double seconds;
  int threads_max;
  size_t budget; /* bytes of live blocks above which large allocations turn small */
  bool fork;
  bool quiet;
} cfg = {0, 30.0, MAX_THREADS, 512u << 20, true, false};

/* ---- operation counters -------------------------------------------------------------- */

enum op {
  OP_MALLOC,
  OP_CALLOC,
  OP_REALLOC,
  OP_ALIGNED,
  OP_MEMALIGN,
  OP_FREE,
  OP_FREE_SIZED,
  OP_POOL_ALLOC,
  OP_POOL_FREE,
  OP_POOL_FULL,
  OP_HANDOFF,
  OP_REMOTE_FREE,
  OP_VERIFY,
  OP_COLLECT,
  OP_TRIM,
  OP_FORK,
  OP_COUNT
};
static const char *const op_name[OP_COUNT] = {
    "malloc",     "calloc",     "realloc",   "aligned_alloc", "posix_memalign", "free",
    "free_sized", "pool_alloc", "pool_free", "pool_enomem",   "handoff",        "remote_free",
    "verify",     "collect",    "pool_trim", "fork"};
static _Atomic uint64_t op_total[OP_COUNT];

/* The operations counted in ops/s: calls into the allocator (a hand-off, a verification
 * and the remote-free subset of frees are not). */
static bool is_allocator_call(int o) {
  return o != OP_HANDOFF && o != OP_REMOTE_FREE && o != OP_VERIFY;
}

/* ---- blocks and their pattern ---------------------------------------------------------- */

enum { KIND_HEAP = 0, KIND_POOL = 1 };

typedef struct block {
  unsigned char *p;
  size_t size;   /* requested size (the pattern's key with id) */
  size_t usable; /* bytes filled with the pattern */
  uint64_t id;
  int kind;
  int pool;     /* pool index for KIND_POOL */
  int owner;    /* global number of the allocating thread (for the remote-free count) */
  size_t align; /* heap: the alignment asked of aligned_alloc/posix_memalign, else 0 (C23:
                 * such a block is freed with free_aligned_sized, not free_sized) */
} block;

static _Atomic uint64_t next_id = 1;
static bool in_fork_child;
static _Atomic size_t live_bytes;

static uint64_t mix64(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

static uint64_t pattern_base(uint64_t id, size_t size) {
  return mix64(id * 0x9e3779b97f4a7c15ull ^ size);
}
#define PATTERN_STEP 0xd6e8feb86659fd93ull

/* Writes bytes [0, n) of the pattern of (id, size): word i is base + i * STEP. */
static void pattern_fill(unsigned char *p, size_t n, uint64_t id, size_t size) {
  uint64_t w = pattern_base(id, size);
  size_t i = 0;
  for (; i + 8 <= n; i += 8, w += PATTERN_STEP) memcpy(p + i, &w, 8);
  if (i < n) memcpy(p + i, &w, n - i);
}

/* Returns the first offset in [0, n) that differs from the pattern, or n. */
static size_t pattern_check(const unsigned char *p, size_t n, uint64_t id, size_t size) {
  uint64_t w = pattern_base(id, size);
  size_t i = 0;
  for (; i + 8 <= n; i += 8, w += PATTERN_STEP) {
    uint64_t got;
    memcpy(&got, p + i, 8);
    if (got != w) break;
  }
  for (; i < n; i++) {
    size_t word = i / 8;
    uint64_t ww = pattern_base(id, size) + (uint64_t)word * PATTERN_STEP;
    if (p[i] != (unsigned char)(ww >> (8 * (i % 8)))) return i;
  }
  return n;
}

static void die(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
static void die(const char *fmt, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  fprintf(stderr, "stress: FAIL (seed %" PRIu64 "): %s\n", cfg.seed, buf);
  fflush(stderr);
  abort();
}

static const char *block_kind(const block *b) {
  return b->kind == KIND_POOL ? "pool" : "heap";
}

/* Verifies bytes [0, n) of b against the pattern of (b->id, key_size); aborts naming it. */
static void verify_prefix(const block *b, size_t n, size_t key_size, const char *when) {
  size_t bad = pattern_check(b->p, n, b->id, key_size);
  if (bad == n) return;
  uint64_t w = pattern_base(b->id, key_size) + (uint64_t)(bad / 8) * PATTERN_STEP;
  die("block id %" PRIu64 " (%s%s%d, size %zu, usable %zu) at %p corrupt %s: byte %zu is "
      "0x%02x, expected 0x%02x",
      b->id, block_kind(b), b->kind == KIND_POOL ? " " : "", b->kind == KIND_POOL ? b->pool : 0,
      b->size, b->usable, (void *)b->p, when, bad, b->p[bad],
      (unsigned)(unsigned char)(w >> (8 * (bad % 8))));
}

static void verify(const block *b, const char *when) {
  verify_prefix(b, b->usable, b->size, when);
  atomic_fetch_add_explicit(&op_total[OP_VERIFY], 1, memory_order_relaxed);
}

/* ---- random numbers ---------------------------------------------------------------- */

typedef struct rng {
  uint64_t s;
} rng;

static uint64_t rnd(rng *r) {
  return mix64(r->s += 0x9e3779b97f4a7c15ull);
}
static uint64_t below(rng *r, uint64_t n) {
  return n ? rnd(r) % n : 0;
}
/* Uniform in [lo, hi]. */
static size_t between(rng *r, size_t lo, size_t hi) {
  return lo + below(r, hi - lo + 1);
}

/* A size from 1 B to 4 MiB skewed to small: 70% up to 256 B, 20% up to 4 KiB, 8.5% up to
 * 128 KiB (the largest size class), 1.5% large (mapped) blocks. Large ones turn small when
 * the live bytes are over the budget. */
static size_t random_size(rng *r) {
  uint64_t c = below(r, 1000);
  if (c < 350) return between(r, 1, 64);
  if (c < 700) return between(r, 65, 256);
  if (c < 900) return between(r, 257, 4096);
  size_t s;
  if (c < 985)
    s = between(r, 4097, 128 << 10);
  else if (c < 997)
    s = between(r, (128 << 10) + 1, 1 << 20);
  else
    s = between(r, (1 << 20) + 1, 4 << 20);
  if (atomic_load_explicit(&live_bytes, memory_order_relaxed) + s > cfg.budget)
    s = between(r, 1, 256);
  return s;
}

/* ---- pools ------------------------------------------------------------------------- */

static const ma_pool_opts pool_opts[NPOOLS] = {
    {.obj_size = 24},
    {.obj_size = 64, .zero = true},
    {.obj_size = 200},
    {.obj_size = 4096},
    {.obj_size = 48, .align = 64},
    {.obj_size = 100000},
    {.obj_size = 512, .max_bytes = 1 << 20}, /* ENOMEM is expected from this one */
};
static ma_pool *pools[NPOOLS];

static void pool_make(int i) {
  int err = ma_pool_create(&pool_opts[i], &pools[i]);
  if (err) die("ma_pool_create(obj_size %zu) = %d", pool_opts[i].obj_size, err);
}

/* ---- allocation and release of one block -------------------------------------------- */

typedef struct worker {
  int num; /* global thread number (owner of the blocks it allocates) */
  rng r;
  block table[TABLE];
  uint64_t ops[OP_COUNT];
} worker;

static void count(worker *w, enum op o) {
  w->ops[o]++;
}

static void fail_alloc(const char *what, size_t size) {
  die("%s(%zu) returned NULL (errno %d) within the %zu MiB budget", what, size, errno,
      cfg.budget >> 20);
}

static bool is_zero(const unsigned char *p, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (p[i]) return false;
  return true;
}

/* Under AddressSanitizer every usable byte of a live block must be addressable (the object
 * layer poisons free blocks): say which block is not before the fill trips over it. */
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
static void check_addressable(const block *b, const char *how) {
  unsigned char *bad = __asan_region_is_poisoned(b->p, b->usable);
  if (bad) {
    unsigned char *end = bad; /* extent of the poisoned run, for the report */
    while (end < b->p + b->usable && __asan_address_is_poisoned(end)) end++;
    die("%s block id %" PRIu64 " at %p (size %zu, usable %zu%s) is poisoned at bytes "
        "[%zu, %zu)",
        how, b->id, (void *)b->p, b->size, b->usable, in_fork_child ? ", in a fork child" : "",
        (size_t)(bad - b->p), (size_t)(end - b->p));
  }
}
#else
static void check_addressable(const block *b, const char *how) {
  (void)b, (void)how;
}
#endif

static void fill_new(block *b) {
  pattern_fill(b->p, b->usable, b->id, b->size);
  atomic_fetch_add_explicit(&live_bytes, b->usable, memory_order_relaxed);
}

/* Allocates a heap block of a random kind into *b. */
static void heap_alloc(worker *w, block *b) {
  size_t size = random_size(&w->r);
  uint64_t how = below(&w->r, 100);
  unsigned char *p;
  size_t align = 0;
  if (how < 55) {
    p = ma_malloc(size);
    if (!p) fail_alloc("ma_malloc", size);
    count(w, OP_MALLOC);
  } else if (how < 70) {
    size_t m = between(&w->r, 1, 16), n = (size + m - 1) / m;
    size = n * m;
    p = ma_calloc(n, m);
    if (!p) fail_alloc("ma_calloc", size);
    if (!is_zero(p, size)) die("ma_calloc(%zu, %zu) at %p is not zeroed", n, m, (void *)p);
    count(w, OP_CALLOC);
  } else if (how < 80) {
    p = ma_realloc(NULL, size);
    if (!p) fail_alloc("ma_realloc(NULL)", size);
    count(w, OP_REALLOC);
  } else {
    /* Alignments 16 B .. 4 KiB, rarely up to 2 MiB. */
    align = (size_t)16 << below(&w->r, below(&w->r, 50) == 0 ? 18 : 9);
    if (how < 92) {
      p = ma_aligned_alloc(align, size);
      if (!p) fail_alloc("ma_aligned_alloc", size);
      count(w, OP_ALIGNED);
    } else {
      void *q = NULL;
      int err = ma_posix_memalign(&q, align, size);
      if (err) die("ma_posix_memalign(%zu, %zu) = %d", align, size, err);
      p = q;
      count(w, OP_MEMALIGN);
    }
    if ((uintptr_t)p % align)
      die("block %p of size %zu is not %zu-aligned", (void *)p, size, align);
  }
  if ((uintptr_t)p % 16) die("block %p of size %zu is not 16-byte aligned", (void *)p, size);
  size_t usable = ma_usable_size(p);
  if (usable < size) die("ma_usable_size(%p) = %zu < size %zu", (void *)p, usable, size);
  *b = (block){p, size, usable, atomic_fetch_add(&next_id, 1), KIND_HEAP, 0, w->num, align};
  check_addressable(b, op_name[how < 55   ? OP_MALLOC
                               : how < 70 ? OP_CALLOC
                               : how < 80 ? OP_REALLOC
                               : how < 92 ? OP_ALIGNED
                                          : OP_MEMALIGN]);
  fill_new(b);
}

/* Allocates a pool object into *b; false when the bounded pool is full. */
static bool pool_alloc(worker *w, block *b) {
  int i = (int)below(&w->r, NPOOLS);
  unsigned char *p = ma_pool_alloc(pools[i]);
  if (!p) {
    if (i == NPOOLS - 1 && errno == ENOMEM) {
      count(w, OP_POOL_FULL);
      return false;
    }
    fail_alloc("ma_pool_alloc", pool_opts[i].obj_size);
  }
  size_t size = pool_opts[i].obj_size;
  size_t align = pool_opts[i].align ? pool_opts[i].align : 8;
  if ((uintptr_t)p % align) die("pool %d object %p is not %zu-aligned", i, (void *)p, align);
  if (pool_opts[i].zero && !is_zero(p, size))
    die("zeroing pool %d returned a dirty object %p", i, (void *)p);
  *b = (block){p, size, size, atomic_fetch_add(&next_id, 1), KIND_POOL, i, w->num, 0};
  fill_new(b);
  count(w, OP_POOL_ALLOC);
  return true;
}

static void block_alloc(worker *w, block *b) {
  if (below(&w->r, 100) < 30 && pool_alloc(w, b)) return;
  heap_alloc(w, b);
}

/* Verifies and frees *b (worker w may be NULL: the main thread at a phase end). */
static void block_free(worker *w, block *b, rng *r) {
  verify(b, "before free");
  atomic_fetch_sub_explicit(&live_bytes, b->usable, memory_order_relaxed);
  /* Scribble the first bytes so a block handed out twice shows as corrupt. */
  memset(b->p, 0xa5, b->usable < 16 ? b->usable : 16);
  enum op o;
  if (b->kind == KIND_POOL) {
    ma_pool_free(pools[b->pool], b->p);
    o = OP_POOL_FREE;
  } else if (below(r, 4) == 0) {
    if (b->align)
      ma_free(b->p); /* ma_ has no free_aligned_sized; free_sized is not for these */
    else
      ma_free_sized(b->p, between(r, b->size, b->usable));
    o = OP_FREE_SIZED;
  } else {
    ma_free(b->p);
    o = OP_FREE;
  }
  if (w) {
    count(w, o);
    if (b->owner != w->num) count(w, OP_REMOTE_FREE);
  } else {
    atomic_fetch_add_explicit(&op_total[o], 1, memory_order_relaxed);
  }
  b->p = NULL;
}

/* Resizes heap block *b: a random size, or 1.5x growth as a vector does (the in-place
 * growth path of large blocks), or a shrink. */
static void block_realloc(worker *w, block *b) {
  verify(b, "before realloc");
  uint64_t how = below(&w->r, 3);
  size_t size = how == 0   ? random_size(&w->r)
                : how == 1 ? b->size + b->size / 2 + 1
                           : b->size / 2 + 1;
  if (size > (8u << 20)) size = random_size(&w->r);
  unsigned char *p;
  if (below(&w->r, 4) == 0) { /* as n * m, overflow-checked */
    size_t m = between(&w->r, 1, 8), n = (size + m - 1) / m;
    size = n * m;
    p = ma_reallocarray(b->p, n, m);
  } else {
    p = ma_realloc(b->p, size);
  }
  if (!p) fail_alloc("ma_realloc", size);
  count(w, OP_REALLOC);
  block old = *b;
  old.p = p;
  size_t keep = size < old.size ? size : old.size;
  verify_prefix(&old, keep, old.size, "after realloc (kept prefix)");
  size_t usable = ma_usable_size(p);
  if (usable < size) die("ma_usable_size(%p) = %zu < realloc size %zu", (void *)p, usable, size);
  atomic_fetch_sub_explicit(&live_bytes, b->usable, memory_order_relaxed);
  b->p = p;
  b->size = size;
  b->align = 0; /* a realloc'd block is a malloc'd block */
  b->usable = usable;
  check_addressable(b, "realloc");
  fill_new(b);
}

/* ---- shared hand-off slots ------------------------------------------------------------ */

static _Atomic(block *) slots[SLOTS];

/* Puts the worker's block *b into a random slot and takes what was there into *b (so the
 * taken block is later freed by this thread: a cross-thread free). */
static void handoff(worker *w, block *b) {
  block *rec = malloc(sizeof *rec); /* bookkeeping: libc, not the allocator under test */
  if (!rec) die("out of memory for bookkeeping");
  *rec = *b;
  block *got = atomic_exchange(&slots[below(&w->r, SLOTS)], rec);
  if (got) {
    *b = *got;
    free(got);
    verify(b, "after hand-off");
  } else {
    b->p = NULL;
  }
  count(w, OP_HANDOFF);
}

/* ---- fork ------------------------------------------------------------------------------- */

static _Atomic int64_t last_fork_ns;
static _Atomic int child_failures;

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Random steps on w's table, then frees what is left. */
static void child_steps(worker *w, int rounds) {
  for (int round = 0; round < rounds; round++) {
    block *b = &w->table[below(&w->r, TABLE)];
    if (!b->p)
      block_alloc(w, b);
    else if (b->kind == KIND_HEAP && below(&w->r, 3) == 0)
      block_realloc(w, b);
    else
      block_free(w, b, &w->r);
  }
  for (int i = 0; i < TABLE; i++)
    if (w->table[i].p) block_free(w, &w->table[i], &w->r);
}

static void *child_thread(void *arg) {
  child_steps(arg, 1000);
  return NULL;
}

/* In the child: only this thread exists. Verify and free half of the inherited table and a
 * few shared slots (blocks of threads that are gone here), allocate and free blocks of its
 * own, start two threads that do the same, and exit 0. A failure aborts (the parent sees the
 * signal). */
static void child_work(worker *w) {
  in_fork_child = true;
  alarm(60); /* a deadlocked child fails the run instead of hanging it */
  for (int i = 0; i < TABLE; i++) {
    block *b = &w->table[i];
    if (!b->p) continue;
    if (below(&w->r, 2))
      block_free(w, b, &w->r);
    else
      verify(b, "in fork child");
  }
  for (int i = 0; i < 64; i++) {
    block *rec = atomic_exchange(&slots[below(&w->r, SLOTS)], NULL);
    if (!rec) continue;
    block_free(w, rec, &w->r);
    free(rec);
  }
  child_steps(w, 2000);
  /* New threads in the child: fresh or recycled heaps and pool caches after fork. Not
   * under ThreadSanitizer, which cannot start threads after a multi-threaded fork, nor under
   * AddressSanitizer: the stacks of the parent's other threads keep their poisoned shadow
   * in the child, glibc unmaps those stacks when the child creates a thread, and a large
   * block mapped there later reads as poisoned (a false report, not the allocator's). */
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
  enum { CHILD_THREADS = 0 };
#else
  enum { CHILD_THREADS = 2 };
#endif
  pthread_t t[2];
  worker *cw[2];
  for (int i = 0; i < CHILD_THREADS; i++) {
    if (!(cw[i] = calloc(1, sizeof(worker)))) die("out of memory for bookkeeping");
    cw[i]->num = w->num;
    cw[i]->r.s = rnd(&w->r);
    int err = pthread_create(&t[i], NULL, child_thread, cw[i]);
    if (err) die("pthread_create in fork child: %s", strerror(err));
  }
  for (int i = 0; i < CHILD_THREADS; i++) pthread_join(t[i], NULL);
  ma_heap_collect(true);
  /* The walks in the child (docs/fork.md): the caches of the parent's other threads are
   * left behind, everything else must be consistent. (Pool caches of other threads used to
   * be adopted here, and a fork that caught one mid-operation, e.g. between a pop's list
   * update and its count, left the child a slab one block short.) */
  if (ma_heap_check() != 0) die("ma_heap_check failed in a fork child");
  for (int i = 0; i < NPOOLS; i++)
    if (ma_pool_check(pools[i]) != 0) die("ma_pool_check of pool %d failed in a fork child", i);
  _exit(0);
}

static void maybe_fork(worker *w) {
  int64_t t = now_ns(), last = atomic_load(&last_fork_ns);
  if (t - last < 250000000 || !atomic_compare_exchange_strong(&last_fork_ns, &last, t)) return;
  pid_t pid = fork();
  if (pid < 0) die("fork: %s", strerror(errno));
  if (pid == 0) child_work(w);
  int st;
  while (waitpid(pid, &st, 0) < 0)
    if (errno != EINTR) die("waitpid: %s", strerror(errno));
  if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
    fprintf(stderr, "stress: FAIL (seed %" PRIu64 "): fork child of thread %d %s %d\n", cfg.seed,
            w->num, WIFEXITED(st) ? "exited with" : "was killed by signal",
            WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
    atomic_fetch_add(&child_failures, 1);
  }
  count(w, OP_FORK);
}

/* ---- workers --------------------------------------------------------------------------- */

static atomic_bool stop;

static void step(worker *w) {
  block *b = &w->table[below(&w->r, TABLE)];
  if (!b->p) {
    block_alloc(w, b);
    return;
  }
  uint64_t c = below(&w->r, 100);
  if (c < 40)
    block_free(w, b, &w->r);
  else if (c < 60 && b->kind == KIND_HEAP)
    block_realloc(w, b);
  else if (c < 85)
    handoff(w, b);
  else
    verify(b, "at random");
}

static void *worker_main(void *arg) {
  worker *w = arg;
  for (uint64_t n = 1; !atomic_load_explicit(&stop, memory_order_relaxed); n++) {
    step(w);
    if (n % 50000 == 0) {
      ma_heap_collect(below(&w->r, 4) == 0);
      count(w, OP_COLLECT);
    }
    if (n % 20000 == 0) { /* the statistics walk races thread start and exit */
      ma_heap_stats hs;
      ma_heap_stats_get(&hs);
      if (hs.committed > hs.reserved || hs.mapped_large > hs.reserved)
        die("heap stats: committed %zu, mapped_large %zu, reserved %zu", hs.committed,
            hs.mapped_large, hs.reserved);
    }
    if (n % 40000 == 0) {
      ma_pool_trim(pools[below(&w->r, NPOOLS)]);
      count(w, OP_TRIM);
    }
    if (cfg.fork && n % 1024 == 0 && below(&w->r, 8) == 0) maybe_fork(w);
  }
  /* Leave: verify everything, hand a third to the slots (they outlive this thread), free
   * the rest. */
  for (int i = 0; i < TABLE; i++) {
    block *b = &w->table[i];
    if (!b->p) continue;
    if (below(&w->r, 3) == 0) {
      handoff(w, b);
      if (b->p) block_free(w, b, &w->r);
    } else {
      block_free(w, b, &w->r);
    }
  }
  return NULL;
}

/* ---- phases --------------------------------------------------------------------------- */

static void sleep_s(double s) {
  struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
  while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
  }
}

static uint64_t run_phase(int phase, int nthreads, double seconds, int *thread_num) {
  static worker *ws[MAX_THREADS];
  pthread_t tids[MAX_THREADS];
  atomic_store(&stop, false);
  for (int i = 0; i < nthreads; i++) {
    if (!ws[i] && !(ws[i] = calloc(1, sizeof(worker)))) die("out of memory for bookkeeping");
    memset(ws[i], 0, sizeof(worker));
    ws[i]->num = (*thread_num)++;
    ws[i]->r.s = mix64(cfg.seed ^ mix64((uint64_t)phase << 8 | (uint64_t)i));
    int err = pthread_create(&tids[i], NULL, worker_main, ws[i]);
    if (err) die("pthread_create: %s", strerror(err));
  }
  sleep_s(seconds);
  atomic_store(&stop, true);
  uint64_t ops = 0;
  for (int i = 0; i < nthreads; i++) {
    pthread_join(tids[i], NULL);
    for (int o = 0; o < OP_COUNT; o++) {
      atomic_fetch_add(&op_total[o], ws[i]->ops[o]);
      if (is_allocator_call(o)) ops += ws[i]->ops[o];
    }
  }
  return ops;
}

/* Between phases (no worker running): verify every slot, check the bounded pool, and
 * replace one pool: free half of its objects in the slots, destroy it with the rest live. */
static void phase_end(rng *r) {
  int victim = (int)below(r, NPOOLS);
  for (int i = 0; i < SLOTS; i++) {
    block *rec = atomic_load(&slots[i]);
    if (!rec) continue;
    verify(rec, "at phase end");
    if (rec->kind == KIND_POOL && rec->pool == victim) {
      if (below(r, 2))
        block_free(NULL, rec, r);
      else
        atomic_fetch_sub(&live_bytes, rec->usable);
      free(rec);
      atomic_store(&slots[i], NULL);
    }
  }
  /* The walks abort with their own message on an inconsistency. No worker runs: every
   * pool cache but this thread's is parked, so each pool is walked whole. */
  if (ma_heap_check() != 0) die("ma_heap_check failed at phase end");
  for (int i = 0; i < NPOOLS; i++)
    if (ma_pool_check(pools[i]) != 0) die("ma_pool_check of pool %d failed at phase end", i);
  ma_pool_stats st;
  ma_pool_stats_get(pools[NPOOLS - 1], &st);
  if (st.committed_bytes > pool_opts[NPOOLS - 1].max_bytes)
    die("bounded pool committed %zu bytes over its max_bytes %zu", st.committed_bytes,
        pool_opts[NPOOLS - 1].max_bytes);
  ma_pool_destroy(pools[victim]);
  pool_make(victim);
}

/* Frees everything left and checks that the heap and the pools account for no live block. */
static void final_checks(rng *r) {
  for (int i = 0; i < SLOTS; i++) {
    block *rec = atomic_exchange(&slots[i], NULL);
    if (!rec) continue;
    block_free(NULL, rec, r);
    free(rec);
  }
  for (int i = 0; i < NPOOLS; i++) {
    ma_pool_stats st;
    ma_pool_stats_get(pools[i], &st);
    if (st.live != 0)
      die("pool %d reports %zu live objects after every object was freed", i, st.live);
    ma_pool_destroy(pools[i]);
  }
  ma_heap_collect(true);
  /* The walks in the child (docs/fork.md): the caches of the parent's other threads are
   * left behind, everything else must be consistent. (Pool caches of other threads used to
   * be adopted here, and a fork that caught one mid-operation, e.g. between a pop's list
   * update and its count, left the child a slab one block short.) */
  if (ma_heap_check() != 0) die("ma_heap_check failed at the end");
  ma_heap_stats hs;
  ma_heap_stats_get(&hs);
  if (hs.allocated != 0 || hs.allocs != hs.frees)
    die("heap reports %zu bytes allocated, %zu allocs and %zu frees after every block was freed",
        hs.allocated, hs.allocs, hs.frees);
  if (atomic_load(&live_bytes) != 0)
    die("bookkeeping: %zu live bytes left", atomic_load(&live_bytes));
}

static long vm_hwm_kib(void) {
  FILE *f = fopen("/proc/self/status", "r");
  if (!f) return -1;
  char line[256];
  long kib = -1;
  while (fgets(line, sizeof line, f))
    if (sscanf(line, "VmHWM: %ld kB", &kib) == 1) break;
  fclose(f);
  return kib;
}

static void usage(void) {
  fprintf(stderr, "usage: ma_stress [SECONDS] [--seed N] [--threads-max 2..16] [--budget-mib N] "
                  "[--no-fork] [--quiet]\n");
  exit(2);
}

static void parse_args(int argc, char **argv) {
  cfg.seed = mix64((uint64_t)time(NULL) ^ (uint64_t)getpid() << 32);
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    char *end;
    if (!strcmp(a, "--seed") && i + 1 < argc)
      cfg.seed = strtoull(argv[++i], &end, 0);
    else if (!strcmp(a, "--threads-max") && i + 1 < argc)
      cfg.threads_max = atoi(argv[++i]);
    else if (!strcmp(a, "--budget-mib") && i + 1 < argc)
      cfg.budget = (size_t)strtoull(argv[++i], &end, 0) << 20;
    else if (!strcmp(a, "--no-fork"))
      cfg.fork = false;
    else if (!strcmp(a, "--quiet"))
      cfg.quiet = true;
    else if (a[0] != '-' && (cfg.seconds = strtod(a, &end)) > 0 && !*end)
      continue;
    else
      usage();
  }
  if (cfg.threads_max < 2 || cfg.threads_max > MAX_THREADS || cfg.seconds <= 0) usage();
}

int main(int argc, char **argv) {
  parse_args(argc, argv);
  printf("stress: seed %" PRIu64 ", %.0f s, 2..%d threads, budget %zu MiB, fork %s\n", cfg.seed,
         cfg.seconds, cfg.threads_max, cfg.budget >> 20, cfg.fork ? "on" : "off");
  fflush(stdout);
  for (int i = 0; i < NPOOLS; i++) pool_make(i);

  rng r = {mix64(cfg.seed)};
  double phase_s = cfg.seconds / 8;
  if (phase_s < 0.25) phase_s = 0.25;
  if (phase_s > 15) phase_s = 15;
  static const int first[] = {2, 4, 8, 16};
  int64_t t0 = now_ns();
  int thread_num = 0;
  uint64_t ops = 0;
  for (int phase = 0;; phase++) {
    double left = cfg.seconds - (double)(now_ns() - t0) / 1e9;
    if (left <= 0.05) break;
    int n = phase < 4 ? first[phase] : (int)between(&r, 2, (size_t)cfg.threads_max);
    if (n > cfg.threads_max) n = cfg.threads_max;
    double s = left < phase_s * 1.5 ? left : phase_s;
    uint64_t phase_ops = run_phase(phase, n, s, &thread_num);
    ops += phase_ops;
    if (!cfg.quiet) {
      ma_heap_stats hs;
      ma_heap_stats_get(&hs);
      printf("phase %2d: %2d threads, %5.1f s, %9" PRIu64 " ops, live %4zu MiB, heap committed "
             "%4zu MiB (large %4zu), peak RSS %ld MiB\n",
             phase, n, s, phase_ops, atomic_load(&live_bytes) >> 20, hs.committed >> 20,
             hs.mapped_large >> 20, vm_hwm_kib() >> 10);
    }
    fflush(stdout);
    phase_end(&r);
  }
  double elapsed = (double)(now_ns() - t0) / 1e9;
  final_checks(&r);

  printf("operations:");
  for (int o = 0; o < OP_COUNT; o++)
    printf("%s %s %" PRIu64, o ? "," : "", op_name[o], atomic_load(&op_total[o]));
  printf("\ntotal %" PRIu64 " ops in %.1f s: %.0f ops/s\n", ops, elapsed, (double)ops / elapsed);
  printf("peak RSS (VmHWM): %ld MiB\n", vm_hwm_kib() >> 10);
  int failed = atomic_load(&child_failures);
  if (failed) {
    printf("stress: FAIL (seed %" PRIu64 "): %d fork children failed\n", cfg.seed, failed);
    return 1;
  }
  printf("stress: PASS (seed %" PRIu64 ")\n", cfg.seed);
  return 0;
}
