/* Heap profiling: the sampling decision, stack capture, the table of stacks (buckets), the
 * table of live sampled blocks and the region that serves sampled small blocks. The
 * design (why nothing here touches a fast path) is in prof.h; files and the leak report
 * are prof_dump.c's.
 *
 * Memory: everything comes from the page layer (os_alloc / os_reserve), never from the
 * heap, so a sample taken inside malloc cannot recurse into it. Stacks come from glibc's
 * backtrace() (libgcc's unwinder), warmed up in prof_start: its first call loads libgcc_s
 * and allocates, and any allocation made while a thread is inside the profiler (its
 * prof_thread.busy) is served unsampled.
 */
#include "malloc/prof.h"

#include <execinfo.h>
#include <link.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "malloc/heap_internal.h"
#include "os/os.h"

bool prof_on;
bool prof_write_exit, prof_leaks;
uint64_t prof_rate = 524288;
int prof_signo;
_Atomic size_t prof_dropped;
uintptr_t prof_lo, prof_hi;

/* Adaptive where glibc has it, as huge.c's locks: their sections are short, and two threads
 * sampling large blocks (most blocks of 512 KiB and more are sampled) made a futex call
 * every few samples with a plain mutex. */
#ifdef PTHREAD_ADAPTIVE_MUTEX_INITIALIZER_NP
pthread_mutex_t prof_lock = PTHREAD_ADAPTIVE_MUTEX_INITIALIZER_NP;
#else
pthread_mutex_t prof_lock = PTHREAD_MUTEX_INITIALIZER;
#endif
prof_bucket *prof_buckets;
uint32_t prof_nbuckets;

static _Atomic bool prof_ready;              /* start-up done: samples may be taken */
static _Atomic size_t prof_live_large;       /* live records of sampled large blocks */
static uintptr_t prof_text_lo, prof_text_hi; /* our shared object's code, skipped in stacks */

/* ------------------------------------------------------------------------------------
 * Options (the library's table, obj_options.c: read once at the first use)
 * ---------------------------------------------------------------------------------- */
static int prof_signal_number(const char *v) {
  static const struct {
    const char *name;
    int no;
  } names[] = {{"USR1", SIGUSR1}, {"USR2", SIGUSR2}, {"HUP", SIGHUP},
               {"PROF", SIGPROF}, {"URG", SIGURG},   {"WINCH", SIGWINCH}};
  if (strncmp(v, "SIG", 3) == 0) v += 3;
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
    if (strcmp(v, names[i].name) == 0) return names[i].no;
  int no = 0;
  for (; *v >= '0' && *v <= '9' && no < 1000; v++) no = no * 10 + (*v - '0');
  return *v == 0 && no > 0 && no < 65 && no != SIGKILL && no != SIGSTOP ? no : -1;
}

void prof_options_apply(void) {
  prof_write_exit = heap_opt.prof > 0;
  prof_leaks = heap_opt.leaks > 0;
  if (heap_opt.prof_sample > 0) {
    prof_rate = (uint64_t)heap_opt.prof_sample;
  } else {
    obj_write_str(2, "mapalloc: ignoring bad value of MAPALLOC_PROF_SAMPLE (not > 0)\n");
    heap_opt.prof_sample = (long)prof_rate;
  }
  if (!heap_opt.prof_prefix[0]) memcpy(heap_opt.prof_prefix, "mapalloc", sizeof "mapalloc");
  if (heap_opt.prof_signal[0]) {
    prof_signo = prof_signal_number(heap_opt.prof_signal);
    if (prof_signo < 0) {
      obj_write_str(2, "mapalloc: ignoring bad value of MAPALLOC_PROF_SIGNAL\n");
      prof_signo = 0;
    }
  }
  prof_on = prof_write_exit || prof_leaks || prof_signo > 0;
}

/* ------------------------------------------------------------------------------------
 * Random intervals: exponential with mean prof_rate, without libm
 * ---------------------------------------------------------------------------------- */
static uint64_t prof_next_rand(prof_thread *t) {
  uint64_t x = t->rng; /* xorshift64* */
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  t->rng = x;
  return x * 0x2545F4914F6CDD1Dull;
}

static void prof_seed(prof_thread *t, uintptr_t salt) {
  static _Atomic uint64_t counter;
  uint64_t z = (uint64_t)__builtin_ia32_rdtsc() ^ salt ^
               (atomic_fetch_add(&counter, 1) * 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull; /* splitmix64 finaliser */
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  t->rng = z ? z : 1;
}

/* Natural logarithm of x in (0, 1]: exponent plus 2 atanh((m-1)/(m+1)) (error < 1e-10). */
static double prof_ln(double x) {
  uint64_t bits;
  memcpy(&bits, &x, sizeof bits);
  int e = (int)((bits >> 52) & 0x7ff) - 1023;
  bits = (bits & ((UINT64_C(1) << 52) - 1)) | (UINT64_C(1023) << 52);
  double m;
  memcpy(&m, &bits, sizeof m);
  if (m > 1.4142135623730951) {
    m *= 0.5;
    e++;
  }
  double z = (m - 1) / (m + 1), z2 = z * z;
  double s =
      z * (2 + z2 * (2.0 / 3 + z2 * (2.0 / 5 + z2 * (2.0 / 7 + z2 * (2.0 / 9 + z2 * (2.0 / 11))))));
  return s + e * 0.6931471805599453;
}

double prof_exp_neg(double x) {
  if (x > 700) return 0;
  int k = (int)(x / 0.6931471805599453);
  double r = x - k * 0.6931471805599453, t = 1, s = 1;
  for (int i = 1; i <= 16; i++) {
    t *= -r / i;
    s += t;
  }
  uint64_t bits = (uint64_t)(1023 - k) << 52; /* 2^-k, k <= 1010 */
  double p;
  memcpy(&p, &bits, sizeof p);
  return s * p;
}

double prof_scale(double avg) {
  double q = 1 - prof_exp_neg(avg / (double)prof_rate);
  return q > 0 ? 1 / q : 1;
}

/* Bytes to the next sample: -ln(U) * rate, U uniform in (0, 1]. */
static int64_t prof_interval(prof_thread *t) {
  double u = (double)((prof_next_rand(t) >> 11) + 1) * (1.0 / 9007199254740992.0);
  double v = -prof_ln(u) * (double)prof_rate;
  return v < 1 ? 1 : v > 9e18 ? INT64_MAX : (int64_t)v;
}

/* ------------------------------------------------------------------------------------
 * Stacks
 * ---------------------------------------------------------------------------------- */
static int prof_find_text(struct dl_phdr_info *info, size_t size, void *ctx) {
  (void)size;
  uintptr_t self = (uintptr_t)ctx;
  for (int i = 0; i < info->dlpi_phnum; i++) {
    const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
    if (ph->p_type != PT_LOAD || !(ph->p_flags & PF_X)) continue;
    uintptr_t lo = info->dlpi_addr + ph->p_vaddr, hi = lo + ph->p_memsz;
    if (self < lo || self >= hi) continue;
    /* In the main program (a static libmapalloc.a) the program's code is there too: only
     * our own frames at the top of a stack are dropped then (see prof_capture). */
    if (info->dlpi_name && info->dlpi_name[0]) {
      prof_text_lo = lo;
      prof_text_hi = hi;
    }
    return 1;
  }
  return 0;
}

/* The caller's stack without the allocator's frames; returns the depth. */
__attribute__((noinline)) static uint32_t prof_capture(uintptr_t *pcs) {
  void *buf[PROF_DEPTH + 16];
  int n = prof_unwind(buf, PROF_DEPTH + 16);
  if (n < 0) n = backtrace(buf, PROF_DEPTH + 16);
  int i = 1; /* buf[0] is in prof_capture's caller (a prof_sample_* function) */
  if (prof_text_hi) {
    while (i < n && (uintptr_t)buf[i] - prof_text_lo < prof_text_hi - prof_text_lo) i++;
  } else {
    i = 2; /* static library: drop the sampler; the heap's slow-path frame stays */
  }
  uint32_t d = 0;
  for (; i < n && d < PROF_DEPTH; i++) pcs[d++] = (uintptr_t)buf[i];
  return d;
}

static uint64_t prof_hash_stack(const uintptr_t *pcs, uint32_t depth) {
  uint64_t h = 0xcbf29ce484222325ull ^ depth;
  for (uint32_t i = 0; i < depth; i++) {
    h ^= pcs[i];
    h *= 0x100000001b3ull;
    h ^= h >> 29;
  }
  return h;
}

/* ------------------------------------------------------------------------------------
 * Buckets: a fixed array plus a chained hash index, both from the page layer.
 * ---------------------------------------------------------------------------------- */
#define PROF_MAX_BUCKETS 32768u
/* Chain heads: 16 KiB, touched at random by the stacks' hashes, so a program with a few
 * hundred call sites makes all of it resident (256 KiB with 65536 heads); chains of eight
 * buckets on average when the table is full (a lookup per sample, under prof_lock). */
#define PROF_INDEX_SIZE 4096u

static uint32_t *prof_index; /* bucket index + 1 of the chain's head */

/* The bucket of (stack, size), created if new; NULL when the table is full. prof_lock. */
static prof_bucket *prof_bucket_get(const uintptr_t *pcs, uint32_t depth, size_t size) {
  uint64_t sh = prof_hash_stack(pcs, depth);
  uint64_t key = sh ^ (size * 0x9E3779B97F4A7C15ull);
  uint32_t slot = (uint32_t)(key >> 40) & (PROF_INDEX_SIZE - 1);
  for (uint32_t i = prof_index[slot]; i; i = prof_buckets[i - 1].next) {
    prof_bucket *b = &prof_buckets[i - 1];
    if (b->stack_hash == sh && b->size == size && b->depth == depth &&
        memcmp(b->pcs, pcs, depth * sizeof *pcs) == 0)
      return b;
  }
  if (prof_nbuckets >= PROF_MAX_BUCKETS) return NULL;
  prof_bucket *b = &prof_buckets[prof_nbuckets++];
  b->stack_hash = sh;
  b->size = size;
  b->depth = depth;
  memcpy(b->pcs, pcs, depth * sizeof *pcs);
  b->next = prof_index[slot];
  prof_index[slot] = prof_nbuckets;
  return b;
}

/* ------------------------------------------------------------------------------------
 * Live sampled blocks: open addressing keyed by address (backward-shift deletion).
 * ---------------------------------------------------------------------------------- */
typedef struct prof_live {
  uintptr_t ptr; /* 0 = empty */
  uint32_t bucket;
  uint32_t small; /* served from the region */
} prof_live;

static prof_live *prof_live_tab;
static size_t prof_live_cap, prof_live_n;

static size_t prof_live_hash(uintptr_t p, size_t cap) {
  return (size_t)(((p >> 4) * 0x9E3779B97F4A7C15ull) >> 17) & (cap - 1);
}

static prof_live *prof_live_find(uintptr_t p) {
  if (!prof_live_cap) return NULL;
  for (size_t i = prof_live_hash(p, prof_live_cap);; i = (i + 1) & (prof_live_cap - 1)) {
    if (prof_live_tab[i].ptr == p) return &prof_live_tab[i];
    if (prof_live_tab[i].ptr == 0) return NULL;
  }
}

static void prof_live_put(prof_live *tab, size_t cap, prof_live r) {
  size_t i = prof_live_hash(r.ptr, cap);
  while (tab[i].ptr) i = (i + 1) & (cap - 1);
  tab[i] = r;
}

static bool prof_live_insert(prof_live r) {
  if ((prof_live_n + 1) * 2 > prof_live_cap) {
    size_t ncap = prof_live_cap ? prof_live_cap * 2 : 512; /* 8 KiB, touched at random */
    prof_live *nt = os_alloc(ncap * sizeof *nt, 0, false);
    if (!nt) return false;
    os_name(nt, ncap * sizeof *nt, "mapalloc-prof");
    for (size_t i = 0; i < prof_live_cap; i++)
      if (prof_live_tab[i].ptr) prof_live_put(nt, ncap, prof_live_tab[i]);
    if (prof_live_tab) os_release_owned(prof_live_tab, prof_live_cap * sizeof *nt);
    prof_live_tab = nt;
    prof_live_cap = ncap;
  }
  prof_live_put(prof_live_tab, prof_live_cap, r);
  prof_live_n++;
  return true;
}

static void prof_live_remove(const prof_live *e) {
  obj_probe_delete(prof_live_tab, sizeof *prof_live_tab, prof_live_cap, (size_t)(e - prof_live_tab),
                   prof_live_hash);
  prof_live_n--;
}

/* ------------------------------------------------------------------------------------
 * The region of sampled small blocks: one reservation, one sub-range per slot size
 * (4 KiB << k, k = 0..5: every class up to 128 KiB), each a bump pointer committed ahead
 * plus a bitmap of freed slots. A slot is aligned to its size, so every class alignment
 * holds. Freed slots stay resident on a stack (up to PROF_WARM_MAX of a size) for the next
 * samples, as the heap keeps empty slabs: a page given back costs a madvise, a page fault
 * and a cleared page when the slot is used again and, with other threads running, a TLB
 * shootdown on every core (10% of larson's time when each freed slot went back; with 128
 * KiB of warm slots a size, churn still gave back one slot in eight: 7% of its profiled
 * time in the kernel). Those no sample took for a purge delay go back (prof_purge: the
 * purger's pass, or the next sampled free), all of them on a trim; the pages of a slot go
 * back to the system (prof_slot_release) before the slot is marked free in the bitmap,
 * which lives outside the slots.
 * ---------------------------------------------------------------------------------- */
#define PROF_SLOT_KINDS  6
#define PROF_SUB_SHIFT   27 /* 128 MiB per slot size */
#define PROF_REGION_SIZE ((size_t)PROF_SLOT_KINDS << PROF_SUB_SHIFT)
#define PROF_COMMIT_STEP ((size_t)256 << 10)
#define PROF_SLOT_WORDS  ((((size_t)1 << PROF_SUB_SHIFT) >> 12) / 64) /* of 4 KiB slots */
#define PROF_WARM_MAX    256 /* freed slots of a size kept resident, at most */

/* A freed slot still resident, with obj_now_ms() of its free. */
typedef struct prof_warm {
  void *slot;
  uint64_t freed_ms;
} prof_warm;

typedef struct prof_slots {
  size_t bump, committed;          /* offsets in the sub-range */
  size_t nfree, hint;              /* freed slots; no word below `hint` has a bit set */
  uint64_t freed[PROF_SLOT_WORDS]; /* bit i: slot i is free (kind k uses the first >> k) */
  uint32_t nwarm;
  /* Freed slots still resident, last freed on top: a stack's entries are in the order of
   * their pushes, so the oldest are at the bottom. */
  prof_warm warm[PROF_WARM_MAX];
} prof_slots;

static prof_slots prof_slot[PROF_SLOT_KINDS];

static unsigned prof_slot_kind(size_t size) {
  unsigned k = 0;
  while (((size_t)4096 << k) < size) k++;
  return k;
}

/* The lowest freed slot of kind k (nfree > 0); prof_lock. */
static size_t prof_slot_pop(prof_slots *ps) {
  while (ps->freed[ps->hint] == 0) ps->hint++;
  uint64_t w = ps->freed[ps->hint];
  ps->freed[ps->hint] = w & (w - 1);
  ps->nfree--;
  return ps->hint * 64 + (size_t)__builtin_ctzll(w);
}

/* A slot for a block of `size` <= 128 KiB; NULL when its sub-range is used up. prof_lock. */
static void *prof_slot_take(size_t size) {
  unsigned k = prof_slot_kind(size);
  prof_slots *ps = &prof_slot[k];
  char *base = (char *)prof_lo + ((size_t)k << PROF_SUB_SHIFT);
  size_t len = (size_t)4096 << k;
  if (ps->nwarm) return ps->warm[--ps->nwarm].slot;
  if (ps->nfree) return base + prof_slot_pop(ps) * len;
  if (ps->bump + len > ((size_t)1 << PROF_SUB_SHIFT)) return NULL;
  if (ps->bump + len > ps->committed) {
    size_t step = len > PROF_COMMIT_STEP ? len : PROF_COMMIT_STEP;
    if (os_commit(base + ps->committed, step, MA_PROT_READ | MA_PROT_WRITE) != 0) return NULL;
    ps->committed += step;
  }
  void *p = base + ps->bump;
  ps->bump += len;
  return p;
}

static unsigned prof_slot_kind_of(const void *p) {
  return (unsigned)(((uintptr_t)p - prof_lo) >> PROF_SUB_SHIFT);
}

/* Gives the pages of the slot at p back to the system (they read as zeros afterwards); no
 * lock: the slot belongs to nobody between its block's free and prof_slot_put. errno kept
 * (free never changes it). */
static void prof_slot_release(void *p) {
  int saved = errno;
  (void)os_reset(p, (size_t)4096 << prof_slot_kind_of(p));
  errno = saved;
}

/* Marks the slot at p free; prof_lock. */
static void prof_slot_put(void *p) {
  unsigned k = prof_slot_kind_of(p);
  prof_slots *ps = &prof_slot[k];
  size_t i = (((uintptr_t)p - prof_lo) & (((size_t)1 << PROF_SUB_SHIFT) - 1)) >> (12 + k);
  ps->freed[i / 64] |= (uint64_t)1 << (i % 64);
  ps->nfree++;
  if (i / 64 < ps->hint) ps->hint = i / 64;
}

/* ------------------------------------------------------------------------------------
 * Start-up
 * ---------------------------------------------------------------------------------- */
/* Fork (docs/fork.md): prof_lock is held across fork, so the child's tables (buckets, live
 * samples, slots, the shared countdown) are consistent. Other threads' sampling state lives
 * in their heaps, which the child leaves behind with them. A process that never had a
 * second thread takes no lock (os_single_threaded): a fork from a signal handler that
 * interrupted a fork, or a sample holding prof_lock, must not deadlock
 * (tests/fork_signal.c, run with profiling on as fork_signal_prof). */
static bool prof_fork_skip; /* this fork takes no lock */
static void prof_atfork_prepare(void) {
  prof_fork_skip = os_single_threaded();
  if (!prof_fork_skip) pthread_mutex_lock(&prof_lock);
}
static void prof_atfork_parent(void) {
  if (!prof_fork_skip) pthread_mutex_unlock(&prof_lock);
}
/* Unlock, not re-init (see heap_atfork_child). The child has no dump helper thread. */
static void prof_atfork_child(void) {
  if (!prof_fork_skip) pthread_mutex_unlock(&prof_lock);
  prof_dump_atfork_child();
}

void prof_start(void) {
  static bool started;
  if (!prof_on || started) return;
  started = true;
  int saved = errno;
  size_t blen = (size_t)PROF_MAX_BUCKETS * sizeof(prof_bucket);
  size_t ilen = (size_t)PROF_INDEX_SIZE * sizeof(uint32_t);
  prof_buckets = os_alloc(blen, 0, false);
  prof_index = os_alloc(ilen, 0, false);
  void *region = os_reserve(PROF_REGION_SIZE, (size_t)2 << 20, NULL);
  if (!prof_buckets || !prof_index || !region) {
    obj_write_str(2, "mapalloc: heap profiling off: no memory for its tables\n");
    prof_on = false;
    errno = saved;
    return;
  }
  os_name(prof_buckets, blen, "mapalloc-prof");
  os_name(prof_index, ilen, "mapalloc-prof");
  prof_lo = (uintptr_t)region;
  prof_hi = prof_lo + PROF_REGION_SIZE;
  dl_iterate_phdr(prof_find_text, (void *)(uintptr_t)&prof_start);
  prof_unwind_init();
  /* backtrace(), the fast walk's fallback, loads libgcc_s and allocates at its first use:
   * done now, unsampled, where the fast walk declines at start-up (another architecture,
   * a glibc without _dl_find_object). Elsewhere only a sample through a frame the walk
   * declines (a signal frame) calls it, and the thread's busy flag keeps the allocations
   * of that first call unsampled, as with MAPALLOC_PROF_WARMUP=0 (tests only: never).
   * Warming up always cost 230 KiB of resident memory at start-up. */
  if (heap_opt.prof_warmup != 0) {
    void *warm[4];
    if (prof_unwind(warm, 4) < 0) (void)backtrace(warm, 4);
  }
  pthread_atfork(prof_atfork_prepare, prof_atfork_parent, prof_atfork_child);
  if (prof_leaks) prof_keep_stderr();
  if (prof_signo) prof_signal_start();
  atomic_store(&prof_ready, true);
  errno = saved;
}

/* ------------------------------------------------------------------------------------
 * Hooks
 * ---------------------------------------------------------------------------------- */

/* Records a sample of `size` usable bytes at p with the given stack; prof_lock held.
 * False when the bucket table is full. */
static bool prof_record(uintptr_t p, size_t size, bool small, const uintptr_t *pcs,
                        uint32_t depth) {
  prof_bucket *b = prof_bucket_get(pcs, depth, size);
  if (!b || !prof_live_insert((prof_live){p, (uint32_t)(b - prof_buckets), small})) return false;
  b->live_n++;
  b->live_bytes += size;
  b->total_n++;
  b->total_bytes += size;
  return true;
}

__attribute__((noinline)) static void *prof_sample_small(heap *h, unsigned cls) {
  prof_thread *t = &h->prof;
  size_t size = heap_cls_size[cls];
  t->busy = 1;
  prof_signal_poll();
  uintptr_t pcs[PROF_DEPTH];
  uint32_t depth = prof_capture(pcs);
  pthread_mutex_lock(&prof_lock);
  void *p = prof_slot_take(size);
  if (p && !prof_record((uintptr_t)p, size, true, pcs, depth)) {
    prof_slot_put(p);
    p = NULL;
  }
  pthread_mutex_unlock(&prof_lock);
  if (!p) atomic_fetch_add(&prof_dropped, 1);
  t->busy = 0;
  return p;
}

_Static_assert(PROF_NCLASSES == HEAP_NCLASSES, "prof_thread.cls_left has a slot per class");

/* Class cls's countdown ran out: a sample, unless the profiler is not ready. NULL: not
 * sampled. The class gets a new interval either way. */
__attribute__((noinline)) static void *prof_malloc_countdown(heap *h, unsigned cls) {
  prof_thread *t = &h->prof;
  if (!atomic_load_explicit(&prof_ready, memory_order_relaxed)) {
    t->cls_left[cls] = prof_interval(t);
    return NULL;
  }
  void *p = prof_sample_small(h, cls);
  t->cls_left[cls] = prof_interval(t);
  return p;
}

/* A class's first countdown (and the thread's generator on its first use). */
__attribute__((noinline)) void prof_class_start(heap *h, unsigned cls) {
  prof_thread *t = &h->prof;
  if (t->rng == 0) prof_seed(t, (uintptr_t)h);
  t->cls_left[cls] = prof_interval(t);
}

/* A profiled thread's small malloc found its cache list empty (heap_malloc_slow). The
 * class's countdown is charged for this block; when it runs out the block is sampled.
 * Otherwise the list is refilled with as many blocks as the countdown has bytes left
 * (charged now: each is popped by a later malloc of the class; frees go to the class's
 * second list, charged when a refill moves them here, and a trim refunds what it gives
 * back), so the sample falls on the malloc that crosses the interval, as with a count per
 * call. Returns a block, or NULL: the caller serves one block the ordinary way. */
void *prof_malloc_small(heap *h, unsigned cls) {
  prof_thread *t = &h->prof;
  if (t->busy) return NULL; /* the profiler's own allocations are not counted */
  if (heap_unlikely(t->cls_left[cls] == 0)) prof_class_start(h, cls);
  int64_t size = (int64_t)heap_cls_size[cls];
  t->cls_left[cls] -= size;
  if (heap_unlikely(t->cls_left[cls] <= 0)) {
    void *p = prof_malloc_countdown(h, cls);
    if (p) return p;
  }
  /* This block and k - 1 more, with (k - 1) * size < left: the sample stays ahead. */
  int64_t more = (t->cls_left[cls] - 1) / size;
  uint32_t want = more > 4096 ? 4097u : (uint32_t)more + 1;
  uint32_t k = heap_tc_refill_counted(h, cls, want);
  if (k == 0) return NULL;
  t->cls_left[cls] -= (int64_t)(k - 1) * size;
  return heap_malloc_cls(cls);
}

/* Threads without a heap yet (their first allocation is large) share this countdown. */
static prof_thread prof_shared;

void prof_note_large(void *p, size_t usable) {
  if (!p || !atomic_load_explicit(&prof_ready, memory_order_relaxed)) return;
  heap *h = heap_get();
  bool sample;
  if (h->bs) {
    prof_thread *t = &h->prof;
    if (t->busy) return;
    if (t->rng == 0) {
      prof_seed(t, (uintptr_t)h);
      t->left = prof_interval(t);
    }
    t->left -= (int64_t)(usable > INT64_MAX ? INT64_MAX : usable);
    sample = t->left <= 0;
    if (sample) {
      t->left = prof_interval(t);
      t->busy = 1;
    }
  } else {
    pthread_mutex_lock(&prof_lock);
    prof_thread *t = &prof_shared;
    if (t->rng == 0) {
      prof_seed(t, (uintptr_t)p);
      t->left = prof_interval(t);
    }
    t->left -= (int64_t)(usable > INT64_MAX ? INT64_MAX : usable);
    sample = t->left <= 0;
    if (sample) t->left = prof_interval(t);
    pthread_mutex_unlock(&prof_lock);
  }
  if (!sample) return;
  prof_signal_poll();
  uintptr_t pcs[PROF_DEPTH];
  uint32_t depth = prof_capture(pcs);
  pthread_mutex_lock(&prof_lock);
  bool ok = prof_record((uintptr_t)p, usable, false, pcs, depth);
  pthread_mutex_unlock(&prof_lock);
  if (ok)
    atomic_fetch_add(&prof_live_large, 1);
  else
    atomic_fetch_add(&prof_dropped, 1);
  if (h->bs) h->prof.busy = 0;
}

/* Removes the record of p (a large block) if there is one; returns its bucket + 1. */
uint32_t prof_forget_large(const void *p) {
  if (atomic_load_explicit(&prof_live_large, memory_order_relaxed) == 0) return 0;
  uint32_t token = 0;
  pthread_mutex_lock(&prof_lock);
  prof_live *e = prof_live_find((uintptr_t)p);
  if (e && !e->small) {
    prof_bucket *b = &prof_buckets[e->bucket];
    b->live_n--;
    b->live_bytes -= b->size;
    token = e->bucket + 1;
    prof_live_remove(e);
    atomic_fetch_sub(&prof_live_large, 1);
  }
  pthread_mutex_unlock(&prof_lock);
  return token;
}

void prof_large_restore(const void *p, uint32_t token) {
  if (!token) return;
  pthread_mutex_lock(&prof_lock);
  prof_bucket *b = &prof_buckets[token - 1];
  if (prof_live_insert((prof_live){(uintptr_t)p, token - 1, 0})) {
    b->live_n++;
    b->live_bytes += b->size;
    atomic_fetch_add(&prof_live_large, 1);
  }
  pthread_mutex_unlock(&prof_lock);
}

/* How many warm slots of a size (from the bottom) have waited a purge delay since their
 * free (a delay < 0: they wait for a trim). prof_lock. */
static uint32_t prof_purge_due(const prof_slots *ps, uint64_t now) {
  int delay = heap_space.purge_delay_ms;
  uint32_t n = 0;
  while (delay >= 0 && n < ps->nwarm && now - ps->warm[n].freed_ms >= (uint64_t)delay) n++;
  return n; /* (stops at the first slot still waiting: O(slots given back)) */
}

bool prof_free(void *p) {
  if (!prof_owns(p)) {
    (void)prof_forget_large(p);
    return false;
  }
  pthread_mutex_lock(&prof_lock);
  prof_live *e = prof_live_find((uintptr_t)p);
  if (!e) {
    pthread_mutex_unlock(&prof_lock);
    unsigned k = prof_slot_kind_of(p);
    bool slot_start = ((uintptr_t)p & (((uintptr_t)4096 << k) - 1)) == 0;
    obj_fatal(slot_start ? "double free" : "invalid free", p);
  }
  prof_bucket *b = &prof_buckets[e->bucket];
  b->live_n--;
  b->live_bytes -= b->size;
  prof_live_remove(e);
  prof_slots *ps = &prof_slot[prof_slot_kind_of(p)];
  bool warm = ps->nwarm < PROF_WARM_MAX && heap_space.purge_delay_ms != 0;
  uint64_t now = obj_now_ms();
  if (warm) ps->warm[ps->nwarm++] = (prof_warm){p, now};
  bool due = prof_purge_due(ps, now) != 0; /* (the bottom slot's wait is over) */
  pthread_mutex_unlock(&prof_lock);
  if (due) prof_purge(false);
  if (warm) return true;
  prof_slot_release(p);
  pthread_mutex_lock(&prof_lock);
  prof_slot_put(p);
  pthread_mutex_unlock(&prof_lock);
  return true;
}

void prof_purge(bool force) {
  if (!prof_on || !prof_lo) return;
  uint64_t now = obj_now_ms();
  for (unsigned k = 0; k < PROF_SLOT_KINDS; k++) {
    prof_slots *ps = &prof_slot[k];
    void *cold[PROF_WARM_MAX];
    pthread_mutex_lock(&prof_lock);
    uint32_t n = force ? ps->nwarm : prof_purge_due(ps, now);
    for (uint32_t i = 0; i < n; i++) cold[i] = ps->warm[i].slot;
    memmove(ps->warm, ps->warm + n, (ps->nwarm - n) * sizeof ps->warm[0]);
    ps->nwarm -= n;
    pthread_mutex_unlock(&prof_lock);
    for (uint32_t i = 0; i < n; i++) prof_slot_release(cold[i]);
    if (!n) continue;
    pthread_mutex_lock(&prof_lock);
    for (uint32_t i = 0; i < n; i++) prof_slot_put(cold[i]);
    pthread_mutex_unlock(&prof_lock);
  }
}

size_t prof_usable(const void *p) {
  if (!prof_owns(p)) return 0;
  size_t n = 0;
  pthread_mutex_lock(&prof_lock);
  prof_live *e = prof_live_find((uintptr_t)p);
  if (e) n = prof_buckets[e->bucket].size;
  pthread_mutex_unlock(&prof_lock);
  if (!n) obj_fatal("invalid pointer", p);
  return n;
}
