/* The mapping arena (include/mapalloc/arena.h): a reservation plus an ordered record of
 * the mappings placed inside it.
 *
 * Invariants, all under `lock`:
 * - every byte of [base, base+len) is either covered by exactly one record node (and then
 *   mapped as the node says) or reserved (PROT_NONE private anonymous NORESERVE);
 * - record nodes never overlap; a node's fd_off advances with its off when it is split.
 * Every change is checked and its bookkeeping allocated before the system call that makes
 * it, so a failing call leaves both the record and the address space as they were. Mappings
 * and removals replace the range in place with MAP_FIXED (os_map_fixed, os_decommit): the
 * range is never unmapped, so no other thread's mmap can land inside the arena.
 */
#include "mapalloc/arena.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "arena/arena_check.h"
#include "arena/arena_tree.h"
#include "os/os.h"

#ifndef F_SEAL_FUTURE_WRITE
#define F_SEAL_FUTURE_WRITE 0x0010
#endif

struct ma_arena {
  char *base;
  size_t len;
  unsigned flags; /* MA_MAP_* applied to every mapping */
  pthread_mutex_t lock;
  arena_tree tree;
  arena_node_pool nodes;
  struct ma_arena *next_all; /* the fork registry (arenas_lock) */
  pid_t pid;                 /* the creating process (ma_arena_check in a fork child) */
  int fork_held;             /* fork: 1 prepare took the lock, 2 the forking thread held it */
};

#define ARENA_FLAGS (MA_MAP_DONTDUMP | MA_MAP_DONTFORK | MA_MAP_HUGE_TRY | MA_MAP_LOCKED)
#define PROT_ALL    (MA_PROT_READ | MA_PROT_WRITE | MA_PROT_EXEC)

/* ---- Argument checks (no lock needed: base and len never change) ------------------------- */

static int check_range(const ma_arena *a, size_t off, size_t len) {
  size_t mask = os_page_size() - 1;
  if (!a || len == 0 || ((off | len) & mask)) return -EINVAL;
  if (off > a->len || len > a->len - off) return -EINVAL;
  return 0;
}

static int check_prot(unsigned prot) {
  if (prot & ~(unsigned)PROT_ALL) return -EINVAL;
  if (prot == PROT_ALL) return -EPERM; /* W^X: the arena offers no JIT flag */
  return 0;
}

/* What the record keeps of a file mapping's descriptor: never the descriptor itself. */
struct fd_info {
  uint64_t dev, ino; /* the file's identity, reported by find and foreach */
  bool maywrite;     /* open read-write: MA_ADV_REMOVE may punch the file */
};

/* Checks the descriptor before the range is touched, with one fstat (EBADF, and the file's
 * identity) and one fcntl: F_GETFL for a read-only mapping (it tells whether the descriptor
 * is open read-write, which ma_arena_advise needs to know for MA_ADV_REMOVE), F_GET_SEALS
 * for a writable one (it tells whether a memfd is write-sealed; mmap then succeeds only on a
 * read-write descriptor). The kernel refuses a write seal only after it has begun to replace
 * the range on older kernels, so that case is caught here. Descriptors open in the wrong mode
 * and O_PATH descriptors are refused by mmap itself before it changes anything (-EACCES,
 * -EBADF). */
static int check_fd(int fd, unsigned prot, struct fd_info *info) {
  struct stat st;
  if (fd < 0) return -EBADF;
  if (fstat(fd, &st) != 0) return -errno;
  info->dev = (uint64_t)st.st_dev;
  info->ino = (uint64_t)st.st_ino;
  if (!(prot & MA_PROT_WRITE)) {
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0) return -errno;
    info->maywrite = (fl & O_ACCMODE) == O_RDWR;
    return 0;
  }
  info->maywrite = true;
  int seals = fcntl(fd, F_GET_SEALS);
  if (seals < 0) return errno == EINVAL ? 0 : -errno; /* EINVAL: not a sealable file */
  return (seals & (F_SEAL_WRITE | F_SEAL_FUTURE_WRITE)) ? -EPERM : 0;
}

/* ---- Locking -------------------------------------------------------------------------------- */

static int lock_init(pthread_mutex_t *m) {
  pthread_mutexattr_t attr;
  if (pthread_mutexattr_init(&attr) != 0) return ENOMEM;
  pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_ERRORCHECK);
  int r = pthread_mutex_init(m, &attr);
  pthread_mutexattr_destroy(&attr);
  return r;
}

/* Fork: every arena's lock is held across fork() (a child must not inherit one held by a
 * thread it does not have), through a registry of live arenas. The error-checking mutex
 * records its owner's thread id, which the child's thread does not share: the child
 * re-initialises each lock, and locks again the ones its thread held before the fork (a
 * fork from inside a foreach callback). A process that never had a second thread takes
 * nothing (see os_single_threaded). */
static pthread_mutex_t arenas_lock = PTHREAD_MUTEX_INITIALIZER;
static ma_arena *arenas;
static pthread_once_t arenas_once = PTHREAD_ONCE_INIT;
static bool arenas_fork_skip;

static void arenas_fork_prepare(void) {
  arenas_fork_skip = os_single_threaded();
  if (arenas_fork_skip) return;
  pthread_mutex_lock(&arenas_lock);
  for (ma_arena *a = arenas; a; a = a->next_all) {
    int r = pthread_mutex_lock(&a->lock);
    a->fork_held = r == 0 ? 1 : r == EDEADLK ? 2 : 0;
  }
}

static void arenas_fork_parent(void) {
  if (arenas_fork_skip) return;
  for (ma_arena *a = arenas; a; a = a->next_all)
    if (a->fork_held == 1) pthread_mutex_unlock(&a->lock);
  pthread_mutex_unlock(&arenas_lock);
}

static void arenas_fork_child(void) {
  if (arenas_fork_skip) return;
  for (ma_arena *a = arenas; a; a = a->next_all) {
    if (a->fork_held == 0) continue;
    lock_init(&a->lock);
    if (a->fork_held == 2) pthread_mutex_lock(&a->lock);
  }
  pthread_mutex_unlock(&arenas_lock);
}

static void arenas_register_fork(void) {
  pthread_atfork(arenas_fork_prepare, arenas_fork_parent, arenas_fork_child);
}

static void arenas_link(ma_arena *a) {
  pthread_once(&arenas_once, arenas_register_fork);
  pthread_mutex_lock(&arenas_lock);
  a->next_all = arenas;
  arenas = a;
  pthread_mutex_unlock(&arenas_lock);
}

static void arenas_unlink(ma_arena *a) {
  pthread_mutex_lock(&arenas_lock);
  for (ma_arena **pp = &arenas; *pp; pp = &(*pp)->next_all)
    if (*pp == a) {
      *pp = a->next_all;
      break;
    }
  pthread_mutex_unlock(&arenas_lock);
}

/* For changes: the error-checking mutex turns a call from inside a foreach callback into
 * -EDEADLK. */
static int lock_rw(ma_arena *a) {
  int r = pthread_mutex_lock(&a->lock);
  return r ? -r : 0;
}

/* For reads: a thread that already holds the lock (inside a foreach callback) may read.
 * Sets *held when this call took the lock and must release it. */
static int lock_ro(const ma_arena *a, int *held) {
  int r = pthread_mutex_lock((pthread_mutex_t *)&a->lock);
  *held = (r == 0);
  return (r == 0 || r == EDEADLK) ? 0 : -r;
}

static void unlock(const ma_arena *a) {
  pthread_mutex_unlock((pthread_mutex_t *)&a->lock);
}

/* ---- Record helpers ---------------------------------------------------------------------------
 */

static inline size_t node_end(const arena_node *n) {
  return n->off + n->len;
}

/* The first node intersecting [off, end), or NULL. */
static arena_node *first_overlap(const ma_arena *a, size_t off, size_t end) {
  arena_node *n = arena_tree_floor(&a->tree, off);
  if (!n || node_end(n) <= off) n = arena_tree_next(&a->tree, off);
  return (n && n->off < end) ? n : NULL;
}

/* The first node of [off, end) when the nodes cover every byte of it, else NULL. */
static arena_node *covering(const ma_arena *a, size_t off, size_t end) {
  arena_node *first = arena_tree_floor(&a->tree, off);
  if (!first || node_end(first) <= off) return NULL;
  for (arena_node *n = first; node_end(n) < end;) {
    arena_node *next = arena_tree_next(&a->tree, n->off);
    if (!next || next->off != node_end(n)) return NULL;
    n = next;
  }
  return first;
}

/* Cuts n at `at` (n->off < at < end of n): n keeps the head, `piece` becomes the tail and
 * is inserted. */
static void split_node(ma_arena *a, arena_node *n, size_t at, arena_node *piece) {
  piece->off = at;
  piece->len = node_end(n) - at;
  piece->file = n->file;
  piece->dev = n->dev;
  piece->ino = n->ino;
  piece->fd_off = n->file ? n->fd_off + (at - n->off) : 0;
  piece->prot = n->prot;
  piece->maywrite = n->maywrite;
  n->len = at - n->off;
  arena_tree_insert(&a->tree, piece);
}

/* ---- Create, destroy, inspect ------------------------------------------------------------------
 */

static size_t round_up(size_t x, size_t to) {
  return (x + to - 1) & ~(to - 1);
}

int ma_arena_create(size_t len, unsigned map_flags, ma_arena **out) {
  if (!out || len == 0 || (len & (os_page_size() - 1))) return -EINVAL;
  if (map_flags & ~(unsigned)ARENA_FLAGS) return -EINVAL;
  size_t align = len >= ((size_t)1 << 30)   ? (size_t)1 << 30
                 : len >= ((size_t)2 << 20) ? (size_t)2 << 20
                                            : 0;
  size_t hdr = round_up(sizeof(ma_arena), os_page_size());

  ma_arena *a = os_alloc(hdr, 0, false);
  if (!a) return -ENOMEM;
  char *base = os_reserve(len, align, NULL);
  if (!base) goto fail_release_header;

  if (lock_init(&a->lock) != 0) goto fail_release_base;

  a->base = base;
  a->len = len;
  a->flags = map_flags;
  a->pid = getpid();
  a->tree = (arena_tree){0};
  a->nodes = (arena_node_pool){0};
  arenas_link(a);
  *out = a;
  return 0;

fail_release_base:
  os_release_owned(base, len);
fail_release_header:
  os_release_owned_rw(a, hdr);
  return -ENOMEM;
}

void ma_arena_destroy(ma_arena *a) {
  if (!a) return;
  arenas_unlink(a);
  os_release_owned(a->base, a->len);
  arena_node_pool_release(&a->nodes);
  pthread_mutex_destroy(&a->lock);
  os_release_owned_rw(a, round_up(sizeof(ma_arena), os_page_size()));
}

void *ma_arena_base(const ma_arena *a) {
  return a ? a->base : NULL;
}

size_t ma_arena_len(const ma_arena *a) {
  return a ? a->len : 0;
}

static void to_mapping(const arena_node *n, ma_arena_mapping *m) {
  *m = (ma_arena_mapping){.off = n->off,
                          .len = n->len,
                          .anon = !n->file,
                          .dev = n->dev,
                          .ino = n->ino,
                          .fd_off = n->fd_off,
                          .prot = n->prot};
}

int ma_arena_find(const ma_arena *a, size_t off, ma_arena_mapping *out) {
  if (!a || !out || off >= a->len) return -EINVAL;
  int held, r = lock_ro(a, &held);
  if (r) return r;
  const arena_node *n = arena_tree_floor(&a->tree, off);
  if (n && node_end(n) > off)
    to_mapping(n, out);
  else
    r = -ENOENT;
  if (held) unlock(a);
  return r;
}

int ma_arena_mapping_is_fd(const ma_arena_mapping *m, int fd) {
  struct stat st;
  if (!m) return -EINVAL;
  if (fd < 0) return -EBADF;
  if (fstat(fd, &st) != 0) return -errno;
  return !m->anon && m->dev == (uint64_t)st.st_dev && m->ino == (uint64_t)st.st_ino;
}

size_t ma_arena_count(const ma_arena *a) {
  if (!a) return 0;
  int held;
  if (lock_ro(a, &held)) return 0;
  size_t c = a->tree.count;
  if (held) unlock(a);
  return c;
}

int ma_arena_check(const ma_arena *a) {
  if (!a) return -EINVAL;
  int held, r = lock_ro(a, &held);
  if (r) return r;
  /* A fork child has no copy of a DONTFORK arena's mappings (the reservation stays). */
  bool absent_ok = (a->flags & MA_MAP_DONTFORK) && getpid() != a->pid;
  r = arena_check_record(&a->tree, a->base, a->len, absent_ok);
  if (held) unlock(a);
  return r;
}

struct walk_ctx {
  int (*fn)(const ma_arena_mapping *, void *);
  void *ctx;
};

static int walk_one(const arena_node *n, void *p) {
  const struct walk_ctx *w = p;
  ma_arena_mapping m;
  to_mapping(n, &m);
  return w->fn(&m, w->ctx);
}

int ma_arena_foreach(const ma_arena *a, int (*fn)(const ma_arena_mapping *, void *), void *ctx) {
  if (!a || !fn) return -EINVAL;
  int held, r = lock_ro(a, &held);
  if (r) return r;
  struct walk_ctx w = {fn, ctx};
  r = arena_tree_walk(&a->tree, walk_one, &w);
  if (held) unlock(a);
  return r;
}

/* ---- Add and remove
 * ------------------------------------------------------------------------------ */

/* Maps [off, off+len) (fd >= 0: shared file mapping described by `info`; else private
 * anonymous) and records it. Arguments are already checked. */
static int add_mapping(ma_arena *a, size_t off, size_t len, int fd, uint64_t fd_off, unsigned prot,
                       const struct fd_info *info) {
  int r = lock_rw(a);
  if (r) return r;
  const arena_node *prev = arena_tree_floor(&a->tree, off + len - 1);
  if (prev && node_end(prev) > off) {
    r = -EEXIST;
    goto out_unlock;
  }
  arena_node *n = arena_node_alloc(&a->nodes);
  if (!n) {
    r = -ENOMEM;
    goto out_unlock;
  }
  unsigned flags = a->flags | (fd >= 0 ? MA_MAP_SHARED : 0);
  r = os_map_fixed(a->base + off, len, prot, flags, fd, fd_off);
  if (r) {
    arena_node_free(&a->nodes, n);
    goto out_unlock;
  }
  n->off = off;
  n->len = len;
  n->file = fd >= 0;
  n->dev = fd >= 0 ? info->dev : 0;
  n->ino = fd >= 0 ? info->ino : 0;
  n->fd_off = fd >= 0 ? fd_off : 0;
  n->prot = prot;
  n->maywrite = fd >= 0 && info->maywrite;
  arena_tree_insert(&a->tree, n);
out_unlock:
  unlock(a);
  return r;
}

int ma_arena_add_fd_mapping(ma_arena *a, size_t off, size_t len, int fd, uint64_t fd_off,
                            unsigned prot) {
  int r = check_range(a, off, len);
  if (r) return r;
  if (fd_off & (os_page_size() - 1)) return -EINVAL;
  if (fd_off > (uint64_t)INT64_MAX || len > (uint64_t)INT64_MAX - fd_off) return -EINVAL;
  struct fd_info info = {0};
  if ((r = check_prot(prot)) || (r = check_fd(fd, prot, &info))) return r;
  return add_mapping(a, off, len, fd, fd_off, prot, &info);
}

int ma_arena_add_anon_mapping(ma_arena *a, size_t off, size_t len, unsigned prot) {
  int r = check_range(a, off, len);
  if (r || (r = check_prot(prot))) return r;
  return add_mapping(a, off, len, -1, 0, prot, NULL);
}

int ma_arena_remove_mapping(ma_arena *a, size_t off, size_t len) {
  int r = check_range(a, off, len);
  if (r || (r = lock_rw(a))) return r;
  size_t end = off + len;
  arena_node *n = first_overlap(a, off, end), *piece = NULL;
  if (!n) {
    r = -ENOENT;
    goto out_unlock;
  }
  /* Only a node reaching past both ends of the range needs a second node. */
  bool split = n->off < off && node_end(n) > end;
  if (split && !(piece = arena_node_alloc(&a->nodes))) {
    r = -ENOMEM;
    goto out_unlock;
  }
  r = os_decommit(a->base + off, len);
  if (r) {
    if (piece) arena_node_free(&a->nodes, piece);
    goto out_unlock;
  }
  while (n && n->off < end) {
    size_t key = n->off, nend = node_end(n);
    if (n->off < off) { /* keeps its head (and maybe a tail): only the first node can */
      if (split) split_node(a, n, end, piece);
      n->len = off - n->off;
    } else if (nend > end) { /* keeps its tail: the key changes */
      arena_tree_remove(&a->tree, key);
      if (n->file) n->fd_off += end - n->off;
      n->len = nend - end;
      n->off = end;
      arena_tree_insert(&a->tree, n);
    } else {
      arena_tree_remove(&a->tree, key);
      arena_node_free(&a->nodes, n);
    }
    n = arena_tree_next(&a->tree, key);
  }
out_unlock:
  unlock(a);
  return r;
}

/* ---- Protect, advise, flush
 * ------------------------------------------------------------------------ */

int ma_arena_protect(ma_arena *a, size_t off, size_t len, unsigned prot) {
  int r = check_range(a, off, len);
  if (r || (r = check_prot(prot)) || (r = lock_rw(a))) return r;
  size_t end = off + len;
  arena_node *first = covering(a, off, end), *head = NULL, *tail = NULL;
  if (!first) {
    r = -ENOENT;
    goto out_unlock;
  }
  arena_node *last = arena_tree_floor(&a->tree, end - 1);
  bool cut_head = first->off < off && first->prot != prot;
  bool cut_tail = node_end(last) > end && last->prot != prot;
  if ((cut_head && !(head = arena_node_alloc(&a->nodes))) ||
      (cut_tail && !(tail = arena_node_alloc(&a->nodes)))) {
    r = -ENOMEM;
    goto out_free;
  }
  r = os_protect(a->base + off, len, prot);
  if (r) {
    /* mprotect may have changed a prefix before failing: put back what the record says. */
    for (arena_node *n = first; n && n->off < end; n = arena_tree_next(&a->tree, n->off)) {
      size_t s = n->off > off ? n->off : off, e = node_end(n) < end ? node_end(n) : end;
      os_protect(a->base + s, e - s, n->prot);
    }
    goto out_free;
  }
  /* Cut the tail first: `last` may be `first`, and cutting the head moves the range start. */
  if (cut_tail) split_node(a, last, end, tail);
  if (cut_head) split_node(a, first, off, head);
  for (arena_node *n = arena_tree_floor(&a->tree, off); n && n->off < end;
       n = arena_tree_next(&a->tree, n->off)) {
    if (n->off >= off && node_end(n) <= end) n->prot = prot;
  }
  goto out_unlock;
out_free:
  if (head) arena_node_free(&a->nodes, head);
  if (tail) arena_node_free(&a->nodes, tail);
out_unlock:
  unlock(a);
  return r;
}

/* madvise works mapping by mapping and stops at the first it refuses, after it has applied
 * the advice to the ones before: for the advice that destroys data (REMOVE frees a file's
 * blocks, FREE lets anonymous pages go) every mapping of the range is checked first, with
 * the kernel's rules and its error, so that a refusal changes nothing. */
static int advice_refused(const ma_arena *a, arena_node *n, size_t end, enum ma_advice adv) {
  for (; n && n->off < end; n = arena_tree_next(&a->tree, n->off)) {
    if (adv == MA_ADV_REMOVE && !n->file) return -EINVAL; /* private anonymous */
    if (adv == MA_ADV_REMOVE && !n->maywrite) return -EACCES;
    if (adv == MA_ADV_FREE && n->file) return -EINVAL; /* shared file mapping */
  }
  return 0;
}

int ma_arena_advise(ma_arena *a, size_t off, size_t len, enum ma_advice adv) {
  int r = check_range(a, off, len);
  if (r) return r;
  if ((unsigned)adv > (unsigned)MA_ADV_PAGEOUT) return -EINVAL;
  if ((r = lock_rw(a))) return r;
  arena_node *first = covering(a, off, off + len);
  if (!first)
    r = -ENOENT;
  else if (!(r = advice_refused(a, first, off + len, adv)))
    r = os_advise(a->base + off, len, adv);
  unlock(a);
  return r;
}

int ma_arena_flush(ma_arena *a, size_t off, size_t len, bool async) {
  int r = check_range(a, off, len);
  if (r || (r = lock_rw(a))) return r;
  r = covering(a, off, off + len) ? os_sync(a->base + off, len, async) : -ENOENT;
  unlock(a);
  return r;
}

/* ---- Snapshots and lazy restore ------------------------------------------------------------ */

int ma_arena_resident(const ma_arena *a, size_t off, size_t len, unsigned char *vec) {
  int held, r = check_range(a, off, len);
  if (r) return r;
  if (!vec) return -EINVAL;
  if ((r = lock_ro(a, &held))) return r;
  if (!covering(a, off, off + len))
    r = -ENOENT;
  else if (mincore(a->base + off, len, vec) != 0)
    r = -errno;
  if (held) unlock(a);
  return r;
}

int ma_arena_uffd_register(ma_arena *a, size_t off, size_t len, int uffd, unsigned modes) {
  int r = check_range(a, off, len);
  if (r) return r;
  if (modes == 0 || (modes & ~(unsigned)MA_UFFD_MISSING)) return -EINVAL;
  if ((r = lock_rw(a))) return r;
  struct uffdio_register reg = {
      .range = {.start = (uint64_t)(uintptr_t)(a->base + off), .len = len},
      .mode = UFFDIO_REGISTER_MODE_MISSING};
  if (!covering(a, off, off + len))
    r = -ENOENT;
  else if (ioctl(uffd, UFFDIO_REGISTER, &reg) != 0)
    r = -errno;
  unlock(a);
  return r;
}

int ma_arena_uffd_unregister(ma_arena *a, size_t off, size_t len, int uffd) {
  int r = check_range(a, off, len);
  if (r || (r = lock_rw(a))) return r;
  struct uffdio_range range = {.start = (uint64_t)(uintptr_t)(a->base + off), .len = len};
  if (!covering(a, off, off + len))
    r = -ENOENT;
  else if (ioctl(uffd, UFFDIO_UNREGISTER, &range) != 0)
    r = -errno;
  unlock(a);
  return r;
}

int ma_arena_uffd_copy(ma_arena *a, size_t off, const void *src, size_t len, int uffd,
                       size_t *copied) {
  if (copied) *copied = 0;
  int r = check_range(a, off, len);
  if (r) return r;
  if (!src) return -EINVAL;
  struct uffdio_copy c = {.dst = (uint64_t)(uintptr_t)(a->base + off),
                          .src = (uint64_t)(uintptr_t)src,
                          .len = len,
                          .mode = 0};
  r = ioctl(uffd, UFFDIO_COPY, &c) == 0 ? 0 : -errno;
  if (copied) *copied = c.copy > 0 ? (size_t)c.copy : 0;
  return r;
}
