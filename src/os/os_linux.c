/* Linux primitives: with areas_linux.c the only code that issues mmap/mprotect/madvise/
 * munmap/mlock/msync, always through the wrappers of sys_linux.h. */
#include "os/os.h"
#include "os/sys_linux.h"

#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>
#if defined(__has_include)
#if __has_include(<sys/single_threaded.h>)
#include <sys/single_threaded.h> /* glibc 2.32+ */
#define OS_HAVE_SINGLE_THREADED 1
#endif
#endif

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif
#ifndef MADV_GUARD_INSTALL /* Linux 6.13 uapi; older headers lack them */
#define MADV_GUARD_INSTALL 102
#define MADV_GUARD_REMOVE  103
#endif
#ifndef PR_SET_VMA
#define PR_SET_VMA           0x53564d41
#define PR_SET_VMA_ANON_NAME 0
#endif

static size_t page_size_cache;

size_t os_page_size(void) {
  size_t ps = __atomic_load_n(&page_size_cache, __ATOMIC_RELAXED);
  if (__builtin_expect(ps == 0, 0)) {
    long v = sysconf(_SC_PAGESIZE);
    ps = v > 0 ? (size_t)v : 4096;
    __atomic_store_n(&page_size_cache, ps, __ATOMIC_RELAXED);
  }
  return ps;
}

static int native_prot(unsigned prot) {
  int p = PROT_NONE;
  if (prot & MA_PROT_READ) p |= PROT_READ;
  if (prot & MA_PROT_WRITE) p |= PROT_WRITE;
  if (prot & MA_PROT_EXEC) p |= PROT_EXEC;
  return p;
}

#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif

static bool deferred_gate_closed(void);
static int release_owned(void *addr, size_t len, bool rw);

/* Maps with mmap, then trims the misaligned head and the tail so the start is a multiple
 * of `align`. On failure nothing stays mapped. */
static void *map_aligned(size_t len, size_t align, void *hint, int prot, int flags) {
  size_t ps = os_page_size();
  /* Our own fresh private pages when writable: a refused trim may hold its list node. */
  bool rw = (prot & PROT_WRITE) != 0;
  if (deferred_gate_closed()) return NULL;
  if (align <= ps) {
    void *p = sys_mmap(hint, len, prot, flags, -1, 0);
    return p == MAP_FAILED ? NULL : p;
  }
  /* Try the hint (or a plain map) first: often already aligned. */
  void *p = sys_mmap(hint, len, prot, flags, -1, 0);
  if (p == MAP_FAILED) return NULL;
  if (((uintptr_t)p & (align - 1)) == 0) return p;
  release_owned(p, len, rw);
  /* The kernel places maps top-down at the high end of a gap: the aligned address just
   * below p is usually free too. Trying it first needs no more address space than len,
   * which matters under RLIMIT_AS, where the over-sized map below can fail near the limit
   * although len would fit. (Kernels before 4.17 take NOREPLACE as a plain hint.) */
  void *down = (void *)((uintptr_t)p & ~(uintptr_t)(align - 1));
  if (down != NULL) {
    void *q = sys_mmap(down, len, prot, flags | MAP_FIXED_NOREPLACE, -1, 0);
    if (q == down) return q;
    if (q != MAP_FAILED) release_owned(q, len, rw);
  }
  size_t over = len + align - ps;
  if (over < len) {
    errno = ENOMEM;
    return NULL;
  }
  p = sys_mmap(NULL, over, prot, flags, -1, 0);
  if (p == MAP_FAILED) return NULL;
  uintptr_t start = ((uintptr_t)p + align - 1) & ~(uintptr_t)(align - 1);
  size_t head = start - (uintptr_t)p;
  size_t tail = over - head - len;
  /* A trim that cannot be unmapped now is deferred; only a full table fails the call, and
   * then what is not in the table yet goes. */
  if (head && release_owned(p, head, rw) != 0) {
    release_owned(p, over, rw);
    errno = ENOMEM;
    return NULL;
  }
  if (tail && release_owned((void *)(start + len), tail, rw) != 0) {
    release_owned((void *)start, len + tail, rw);
    errno = ENOMEM;
    return NULL;
  }
  return (void *)start;
}

void *os_reserve(size_t len, size_t align, void *hint) {
  return map_aligned(len, align, hint, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE);
}

void *os_alloc(size_t len, size_t align, bool populate) {
  void *p = map_aligned(len, align, NULL, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS);
  if (p && populate) os_populate(p, len);
  return p;
}

int os_release(void *addr, size_t len) {
  return sys_munmap(addr, len) == 0 ? 0 : -errno;
}

/* Deferred unmaps (os_release_owned, os_release_owned_rw). The page layer allocates nothing
 * (a map of its own would need the very map count that is missing), so a refused range is
 * kept in one of two places:
 *   - a range whose first page is private read-write memory we may scribble on
 *     (os_release_owned_rw) carries its own list node there: an unbounded list;
 *   - any other range (a reservation, a guard page, a user's map) goes to a fixed table.
 *     While half of it is in use after a retry, new mappings of the page layer fail with
 *     ENOMEM (deferred_gate_closed), so only frees of what is already mapped can fill the
 *     other half.
 * Either way its pages are given back first (MADV_DONTNEED never splits a VMA, so it works
 * at the map count limit): a deferred range costs address space, not memory, apart from
 * the one page that holds a node. All of it is under deferred_lock. */
enum { DEFERRED_MAX = 1024, DEFERRED_GATE = DEFERRED_MAX / 2, DEFERRED_TRY = 64 };
static struct {
  void *addr;
  size_t len;
} deferred[DEFERRED_MAX];
static size_t deferred_n; /* table entries; read without the lock as a hint */
typedef struct deferred_node {
  struct deferred_node *next;
  size_t len;
} deferred_node;
static deferred_node *deferred_list;
static size_t deferred_list_n;
static size_t deferred_pending; /* deferred_n + deferred_list_n; read without the lock */
static pthread_mutex_t deferred_lock = PTHREAD_MUTEX_INITIALIZER;

/* The node lives in memory the layers above handed back; under ASan it may still be
 * poisoned (a freed block), which does not make it less ours. */
__attribute__((no_sanitize("address"))) static void node_write(deferred_node *n,
                                                               deferred_node *next, size_t len) {
  n->next = next;
  n->len = len;
}
__attribute__((no_sanitize("address"))) static deferred_node *node_next(const deferred_node *n) {
  return n->next;
}
__attribute__((no_sanitize("address"))) static size_t node_len(const deferred_node *n) {
  return n->len;
}
__attribute__((no_sanitize("address"))) static void node_set_next(deferred_node *n,
                                                                  deferred_node *next) {
  n->next = next;
}

/* Retries under deferred_lock; stops after `max_fail` refusals (SIZE_MAX: tries all). */
static size_t deferred_retry_locked(size_t max_fail) {
  size_t fails = 0;
  for (size_t i = 0; i < deferred_n && fails < max_fail;) {
    if (sys_munmap(deferred[i].addr, deferred[i].len) == 0) {
      deferred[i] = deferred[--deferred_n];
    } else {
      fails++;
      i++;
    }
  }
  __atomic_store_n(&deferred_n, deferred_n, __ATOMIC_RELAXED);
  deferred_node *prev = NULL;
  for (deferred_node *n = deferred_list; n && fails < max_fail;) {
    deferred_node *next = node_next(n); /* read before the node goes */
    if (sys_munmap(n, node_len(n)) == 0) {
      if (prev)
        node_set_next(prev, next);
      else
        deferred_list = next;
      deferred_list_n--;
    } else {
      fails++;
      prev = n;
    }
    n = next;
  }
  size_t left = deferred_n + deferred_list_n;
  __atomic_store_n(&deferred_pending, left, __ATOMIC_RELAXED);
  return left;
}

static size_t deferred_retry(size_t max_fail) {
  if (__atomic_load_n(&deferred_pending, __ATOMIC_RELAXED) == 0) return 0;
  int saved = errno;
  pthread_mutex_lock(&deferred_lock);
  size_t left = deferred_retry_locked(max_fail);
  pthread_mutex_unlock(&deferred_lock);
  errno = saved;
  return left;
}

size_t os_release_retry(void) {
  return deferred_retry(SIZE_MAX);
}

/* True when new mappings must wait: half of the table is taken even after a retry. */
static bool deferred_gate_closed(void) {
  if (__builtin_expect(__atomic_load_n(&deferred_n, __ATOMIC_RELAXED) < DEFERRED_GATE, 1))
    return false;
  (void)os_release_retry();
  if (__atomic_load_n(&deferred_n, __ATOMIC_RELAXED) < DEFERRED_GATE) return false;
  errno = ENOMEM;
  return true;
}

size_t os_release_pending(void) {
  return __atomic_load_n(&deferred_pending, __ATOMIC_RELAXED);
}

/* Fork: a child must not inherit deferred_lock held by a thread it does not have. The
 * handlers are registered before any other layer's (constructor priority 101), so this
 * prepare runs last and this child handler first: the heap's and pools' handlers, which
 * hold their locks across fork, may call into the page layer. */
static bool deferred_fork_skip;
static void deferred_fork_prepare(void) {
  deferred_fork_skip = os_single_threaded();
  // cppcheck-suppress knownConditionTrueFalse ; it misses <sys/single_threaded.h> (__has_include)
  if (!deferred_fork_skip) pthread_mutex_lock(&deferred_lock);
}
static void deferred_fork_resume(void) {
  if (!deferred_fork_skip) pthread_mutex_unlock(&deferred_lock);
}
__attribute__((constructor(101))) static void deferred_fork_register(void) {
  pthread_atfork(deferred_fork_prepare, deferred_fork_resume, deferred_fork_resume);
}

bool os_single_threaded(void) {
#if OS_HAVE_SINGLE_THREADED
  return __libc_single_threaded != 0;
#else
  return false;
#endif
}

/* A refused range: its pages go back to the system, then it is kept (see deferred[]). */
static int release_owned(void *addr, size_t len, bool rw) {
  /* Old entries first, then this range. The retry of a release gives up after a few
   * refusals: at the map count limit each costs a system call, and the full retries
   * (os_release_retry: trims, collects, a closed gate) try them all. */
  (void)deferred_retry(DEFERRED_TRY);
  int saved = errno;
  if (sys_munmap(addr, len) == 0) return 0;
  size_t ps = os_page_size();
  int r = 0;
  if (rw) {
    /* Keep the first page for the node. */
    if (len > ps) (void)sys_madvise((char *)addr + ps, len - ps, MADV_DONTNEED);
    pthread_mutex_lock(&deferred_lock);
    node_write(addr, deferred_list, len);
    deferred_list = addr;
    deferred_list_n++;
  } else {
    (void)sys_madvise(addr, len, MADV_DONTNEED);
    pthread_mutex_lock(&deferred_lock);
    if (deferred_n < DEFERRED_MAX) {
      deferred[deferred_n].addr = addr;
      deferred[deferred_n].len = len;
      __atomic_store_n(&deferred_n, deferred_n + 1, __ATOMIC_RELAXED);
    } else {
      r = -ENOMEM;
    }
  }
  __atomic_store_n(&deferred_pending, deferred_n + deferred_list_n, __ATOMIC_RELAXED);
  pthread_mutex_unlock(&deferred_lock);
  errno = saved;
  return r;
}

int os_release_owned(void *addr, size_t len) {
  return release_owned(addr, len, false);
}

int os_release_owned_rw(void *addr, size_t len) {
  return release_owned(addr, len, true);
}

int os_commit(void *addr, size_t len, unsigned prot) {
  return sys_mprotect(addr, len, native_prot(prot)) == 0 ? 0 : -errno;
}

int os_decommit(void *addr, size_t len) {
  void *p = sys_mmap(addr, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED,
                     -1, 0);
  return p == MAP_FAILED ? -errno : 0;
}

int os_reset(void *addr, size_t len) {
  return sys_madvise(addr, len, MADV_DONTNEED) == 0 ? 0 : -errno;
}

int os_populate(void *addr, size_t len) {
  if (sys_madvise(addr, len, MADV_POPULATE_WRITE) == 0) return 0;
  if (errno != EINVAL) return -errno;
  /* Older kernel: touch one byte per page (a read-modify-write keeps contents). */
  size_t ps = os_page_size();
  for (size_t i = 0; i < len; i += ps) {
    volatile char *c = (volatile char *)addr + i;
    // cppcheck-suppress selfAssignment ; a volatile read-modify-write faults the page in
    *c = *c;
  }
  return 0;
}

int os_map_fixed(void *addr, size_t len, unsigned prot, unsigned flags, int fd, uint64_t off) {
  int f = MAP_FIXED | ((flags & MA_MAP_SHARED) ? MAP_SHARED : MAP_PRIVATE);
  if (fd < 0) f |= MAP_ANONYMOUS;
  if (flags & MA_MAP_NORESERVE) f |= MAP_NORESERVE;
  if (flags & MA_MAP_POPULATE) f |= MAP_POPULATE;
  void *p = sys_mmap(addr, len, native_prot(prot), f, fd, (off_t)off);
  if (p == MAP_FAILED) return -errno;
  /* A range left without DONTDUMP/DONTFORK would leak into core dumps or fork children,
   * an unlocked one would page out: undo rather than return half of the request. The
   * transparent huge page advice is only a wish. */
  if ((flags & MA_MAP_DONTDUMP) && sys_madvise(addr, len, MADV_DONTDUMP) != 0) goto undo;
  if ((flags & MA_MAP_DONTFORK) && sys_madvise(addr, len, MADV_DONTFORK) != 0) goto undo;
  if (flags & MA_MAP_HUGE_TRY) (void)sys_madvise(addr, len, MADV_HUGEPAGE);
  /* mlock faults the range in, which an inaccessible range refuses (ENOMEM): that one is
   * locked on fault, so its pages are locked as soon as a protect lets them be touched. */
  if ((flags & MA_MAP_LOCKED) && os_lock(addr, len, prot == MA_PROT_NONE) != 0) goto undo;
  return 0;
undo:;
  int e = errno;
  (void)os_decommit(addr, len);
  return -e;
}

int os_protect(void *addr, size_t len, unsigned prot) {
  return sys_mprotect(addr, len, native_prot(prot)) == 0 ? 0 : -errno;
}

static int native_advice(enum ma_advice adv) {
  switch (adv) {
  case MA_ADV_WILLNEED:
    return MADV_WILLNEED;
  case MA_ADV_DONTNEED:
    return MADV_DONTNEED;
  case MA_ADV_FREE:
    return MADV_FREE;
  case MA_ADV_REMOVE:
    return MADV_REMOVE;
  case MA_ADV_HUGEPAGE:
    return MADV_HUGEPAGE;
  case MA_ADV_NOHUGEPAGE:
    return MADV_NOHUGEPAGE;
  case MA_ADV_DONTDUMP:
    return MADV_DONTDUMP;
  case MA_ADV_DODUMP:
    return MADV_DODUMP;
  case MA_ADV_DONTFORK:
    return MADV_DONTFORK;
  case MA_ADV_DOFORK:
    return MADV_DOFORK;
  case MA_ADV_PAGEOUT:
    return MADV_PAGEOUT;
  }
  return -1;
}

int os_advise(void *addr, size_t len, enum ma_advice adv) {
  int a = native_advice(adv);
  if (a < 0) return -EINVAL;
  return sys_madvise(addr, len, a) == 0 ? 0 : -errno;
}

/* 1: the kernel names anonymous VMAs, -1: it does not (CONFIG_ANON_VMA_NAME unset or a
 * kernel before 5.17), 0: not probed yet. Probed once with an empty range, which such a
 * kernel accepts and any other refuses, so later calls cost no failing system call. */
static int name_support;

void os_name(void *addr, size_t len, const char *name) {
  int saved = errno;
  int s = __atomic_load_n(&name_support, __ATOMIC_RELAXED);
  if (s == 0) {
    /* Only a refusal of the call itself (EINVAL) is remembered: another error (ENOMEM) says
     * nothing about the kernel and must not turn naming off for good. */
    if (sys_prctl5(PR_SET_VMA, PR_SET_VMA_ANON_NAME, 0, 0, (unsigned long)name) == 0)
      s = 1;
    else if (errno == EINVAL)
      s = -1;
    if (s != 0) __atomic_store_n(&name_support, s, __ATOMIC_RELAXED);
  }
  if (s > 0)
    (void)sys_prctl5(PR_SET_VMA, PR_SET_VMA_ANON_NAME, (unsigned long)addr, len,
                     (unsigned long)name);
  errno = saved;
}

int os_sync(void *addr, size_t len, bool async) {
  return sys_msync(addr, len, async ? MS_ASYNC : MS_SYNC) == 0 ? 0 : -errno;
}

/* ---- Added for the public page layer -------------------------------------------------- */

#ifndef MAP_HUGE_SHIFT
#define MAP_HUGE_SHIFT 26
#endif
#ifndef MLOCK_ONFAULT
#define MLOCK_ONFAULT 0x01
#endif
#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#endif

int os_map(void *hint, size_t len, unsigned prot, unsigned flags, int fd, uint64_t off,
           unsigned huge_shift, enum os_place place, void **out) {
  int f = (flags & MA_MAP_SHARED) ? MAP_SHARED : MAP_PRIVATE;
  if (fd < 0) f |= MAP_ANONYMOUS;
  if (flags & MA_MAP_NORESERVE) f |= MAP_NORESERVE;
  if (flags & MA_MAP_POPULATE) f |= MAP_POPULATE;
  if (flags & MA_MAP_STACK) f |= MAP_STACK;
  if (huge_shift) f |= MAP_HUGETLB | (int)(huge_shift << MAP_HUGE_SHIFT);
  if (place == OS_PLACE_NOREPLACE) f |= MAP_FIXED_NOREPLACE;
  if (place == OS_PLACE_FIXED) f |= MAP_FIXED;
  if (place != OS_PLACE_FIXED && deferred_gate_closed()) return -ENOMEM;
  void *p = sys_mmap(hint, len, native_prot(prot), f, fd < 0 ? -1 : fd, (off_t)off);
  if (p == MAP_FAILED) return -errno;
  if (place == OS_PLACE_NOREPLACE && p != hint) {
    /* A kernel older than 4.17 took MAP_FIXED_NOREPLACE as a plain hint. */
    os_release_owned(p, len);
    return -EEXIST;
  }
  *out = p;
  return 0;
}

int os_lock(void *addr, size_t len, bool on_fault) {
  if (!on_fault) return sys_mlock(addr, len) == 0 ? 0 : -errno;
  if (sys_mlock2(addr, len, MLOCK_ONFAULT) == 0) return 0;
  return errno == ENOSYS ? -ENOTSUP : -errno;
}

int os_unlock(void *addr, size_t len) {
  return sys_munlock(addr, len) == 0 ? 0 : -errno;
}

void os_prefault(void *addr, size_t len, bool write) {
  int saved = errno;
  (void)sys_madvise(addr, len, write ? MADV_POPULATE_WRITE : MADV_POPULATE_READ);
  errno = saved;
}

/* Parses "hugepages-<n>kB"; returns the size in bytes or 0. */
static size_t huge_dir_size(const char *name) {
  static const char prefix[] = "hugepages-";
  if (strncmp(name, prefix, sizeof prefix - 1) != 0) return 0;
  const char *s = name + sizeof prefix - 1;
  size_t kb = 0;
  for (; *s >= '0' && *s <= '9'; s++) {
    if (kb > (SIZE_MAX / 1024 - 9) / 10) return 0;
    kb = kb * 10 + (size_t)(*s - '0');
  }
  return strcmp(s, "kB") == 0 ? kb * 1024 : 0;
}

size_t os_huge_page_sizes(size_t *out, size_t max) {
  enum { MAXSIZES = 16 };
  size_t sizes[MAXSIZES], n = 0;
  int fd = sys_open("/sys/kernel/mm/hugepages", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return 0;
  char buf[1024] __attribute__((aligned(8)));
  long got;
  while ((got = sys_getdents64(fd, buf, sizeof buf)) > 0) {
    for (long pos = 0; pos < got;) {
      /* struct linux_dirent64: u64 ino, s64 off, u16 reclen, u8 type, char name[]. */
      unsigned short reclen;
      memcpy(&reclen, buf + pos + 16, sizeof reclen);
      size_t sz = huge_dir_size(buf + pos + 19);
      if (sz && n < MAXSIZES) {
        size_t i = n++;
        for (; i > 0 && sizes[i - 1] > sz; i--) sizes[i] = sizes[i - 1];
        sizes[i] = sz;
      }
      if (reclen == 0) break;
      pos += reclen;
    }
  }
  sys_close(fd);
  for (size_t i = 0; i < n && i < max; i++) out[i] = sizes[i];
  return n;
}

/* ---- Added for the heap (src/malloc/huge.c) ------------------------------------------- */

int os_remap(void *addr, size_t old_len, size_t new_len, bool may_move, void **out) {
  /* A move may split the mapping it leaves (a piece of a larger one): a new mapping, which
   * waits behind a closed gate as any other. */
  if (may_move && new_len > old_len && deferred_gate_closed()) return -ENOMEM;
  void *p = sys_mremap(addr, old_len, new_len, may_move ? MREMAP_MAYMOVE : 0);
  if (p == MAP_FAILED) return -errno;
  *out = p;
  return 0;
}

/* ---- Added for the secure mode ---------------------------------------------------------- */

int os_random(void *buf, size_t len) {
  ssize_t n = sys_getrandom(buf, len, 0x1 /* GRND_NONBLOCK */);
  if (n < 0) return -errno;
  return (size_t)n == len ? 0 : -EAGAIN;
}

/* The process's mapped bytes (/proc/self/statm's first field), or 0 when unknown. Reads
 * into a stack buffer: no allocation. */
static size_t vm_size_now(void) {
  int fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  char buf[64];
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  size_t pages = 0;
  for (ssize_t i = 0; i < n && buf[i] >= '0' && buf[i] <= '9'; i++)
    pages = pages * 10 + (size_t)(buf[i] - '0');
  return pages * os_page_size();
}

bool os_space_limited(void) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_AS, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY) return false;
  size_t limit = (size_t)rl.rlim_cur, used = vm_size_now();
  if (used == 0 || used >= limit) return true; /* (no /proc: careful) */
  size_t near = (size_t)1 << 30;
  if (near < limit / 8) near = limit / 8;
  return limit - used < near;
}

/* ---- Guard pages inside a mapping (MADV_GUARD_INSTALL) -------------------------------- */

/* 1: the kernel has guard pages, -1: it has not (or os_guard_disable), 0: not probed yet. */
static int guard_support;

bool os_guard_supported(void) {
  int s = __atomic_load_n(&guard_support, __ATOMIC_RELAXED);
  if (s == 0) {
    /* An empty range: a kernel that knows the advice returns 0 before looking at any
     * mapping, an older one refuses the advice with EINVAL. Only that answer is cached; an
     * injected or transient failure says nothing about the kernel. */
    int saved = errno;
    if (sys_madvise((void *)os_page_size(), 0, MADV_GUARD_INSTALL) == 0)
      s = 1;
    else if (errno == EINVAL)
      s = -1;
    errno = saved;
    if (s == 0) return false;
    int none = 0; /* os_guard_disable may have raced ahead: it wins */
    if (!__atomic_compare_exchange_n(&guard_support, &none, s, false, __ATOMIC_RELAXED,
                                     __ATOMIC_RELAXED))
      s = none;
  }
  return s > 0;
}

void os_guard_disable(void) {
  __atomic_store_n(&guard_support, -1, __ATOMIC_RELAXED);
}

static int guard_advise(void *addr, size_t len, int advice) {
  size_t ps = os_page_size();
  if (len == 0 || ((uintptr_t)addr | len) & (ps - 1) || (uintptr_t)addr + len < (uintptr_t)addr)
    return -EINVAL;
  if (!os_guard_supported()) return -ENOSYS;
  /* The kernel restarts the walk itself when a page-table race asks for it; EINTR/EAGAIN
   * are only seen when a fatal signal is pending or on a busy range: a few more tries. */
  for (int tries = 0;; tries++) {
    if (sys_madvise(addr, len, advice) == 0) return 0;
    if ((errno != EINTR && errno != EAGAIN) || tries == 3) return -errno;
  }
}

int os_guard_install(void *addr, size_t len) {
  return guard_advise(addr, len, MADV_GUARD_INSTALL);
}

int os_guard_remove(void *addr, size_t len) {
  return guard_advise(addr, len, MADV_GUARD_REMOVE);
}

/* 1: process_madvise takes MADV_GUARD_INSTALL for PIDFD_SELF, -1: it does not, 0: unknown. */
static int guard_batch_support;
#define OS_PIDFD_SELF  (-10000) /* linux/pidfd.h's PIDFD_SELF (6.15): the calling process */
#define OS_GUARD_BATCH 64       /* ranges per process_madvise (IOV_MAX is 1024) */

/* One process_madvise for pages[0..n): the number of ranges it guarded (all of them, or
 * those before a range it stopped at), or -errno; -ENOSYS where it cannot be used here. */
static long guard_install_batch(void *const *pages, size_t n, size_t len) {
  if (__atomic_load_n(&guard_batch_support, __ATOMIC_RELAXED) < 0) return -ENOSYS;
  struct iovec iov[OS_GUARD_BATCH];
  for (size_t i = 0; i < n; i++) iov[i] = (struct iovec){pages[i], len};
  int saved = errno;
  long r = sys_process_madvise(OS_PIDFD_SELF, iov, n, MADV_GUARD_INSTALL);
  int e = errno;
  errno = saved;
  if (r >= 0) {
    __atomic_store_n(&guard_batch_support, 1, __ATOMIC_RELAXED);
    return r / (long)len;
  }
  /* A kernel without PIDFD_SELF (EBADF) or without every advice for its own process
   * (EINVAL), a tool that does not know the call (ENOSYS), a seccomp filter (EPERM): the
   * answer is cached (an EINVAL that was a locked range's costs only the batching: the one
   * by one calls then give the range's own answer). Anything else (ENOMEM, an injected
   * failure) is this call's. */
  if (e == EBADF || e == EINVAL || e == ENOSYS || e == EPERM) {
    __atomic_store_n(&guard_batch_support, -1, __ATOMIC_RELAXED);
    return -ENOSYS;
  }
  return -e;
}

int os_guard_install_many(void *const *pages, size_t n, size_t len) {
  size_t ps = os_page_size();
  if (len == 0 || len & (ps - 1)) return -EINVAL;
  if (!os_guard_supported()) return -ENOSYS;
  size_t i = 0;
  while (i < n) {
    size_t k = n - i < OS_GUARD_BATCH ? n - i : OS_GUARD_BATCH;
    long done = guard_install_batch(pages + i, k, len);
    if (done == -ENOSYS) break; /* one by one from here */
    if (done < 0) return (int)done;
    i += (size_t)done;
    if ((size_t)done < k) break; /* stopped at a range: its own call says why */
  }
  for (; i < n; i++) {
    int rc = os_guard_install(pages[i], len);
    if (rc != 0) return rc;
  }
  return 0;
}
