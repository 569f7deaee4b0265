/* Heap profiling output: profile files in gperftools' heap-profile format, the leak
 * report, the dump signal and the exit hook. Nothing here allocates from the heap: output
 * goes through a buffer on the stack and write(2), scratch tables come from the page layer.
 *
 * The profile ("heap_v2" as tcmalloc's sampled heap profiles, which google-pprof scales by
 * 1 / (1 - exp(-avg / rate)) per line):
 *
 *   heap profile:  <live n>: <live bytes> [<sampled n>: <sampled bytes>] @ heap_v2/<rate>
 *   <live n>: <live bytes> [<sampled n>: <sampled bytes>] @ 0x<pc> 0x<return address> ...
 *   ...
 *
 *   MAPPED_LIBRARIES:
 *   <the contents of /proc/self/maps>
 *
 * One line per (call stack, block size), so that the scale of each line is exact.
 */
#include <dlfcn.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "malloc/heap_internal.h"
#include "malloc/prof.h"
#include "mapalloc/prof.h"
#include "os/os.h"

static _Atomic unsigned prof_seq;      /* files written by this process */
static int prof_err_fd = 2;            /* stderr as it was at start-up */
static sem_t prof_sem;                 /* posted by the signal handler */
static _Atomic int prof_sig_pending;   /* a signal asked for a dump */
static _Atomic bool prof_helper_alive; /* the helper thread exists in this process */

/* ------------------------------------------------------------------------------------
 * Buffered output without malloc
 * ---------------------------------------------------------------------------------- */
typedef struct prof_out {
  int fd;
  int err; /* first negative errno */
  size_t n;
  char buf[4096];
} prof_out;

static void out_flush(prof_out *o) {
  const char *s = o->buf;
  size_t n = o->n;
  while (n && !o->err) {
    ssize_t w = write(o->fd, s, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      o->err = w < 0 ? -errno : -EIO;
      break;
    }
    s += w;
    n -= (size_t)w;
  }
  o->n = 0;
}

static void out_mem(prof_out *o, const char *s, size_t n) {
  while (n) {
    if (o->n == sizeof o->buf) out_flush(o);
    size_t k = sizeof o->buf - o->n;
    if (k > n) k = n;
    memcpy(o->buf + o->n, s, k);
    o->n += k;
    s += k;
    n -= k;
  }
}

static void out_str(prof_out *o, const char *s) {
  out_mem(o, s, strlen(s));
}

/* v in decimal, right-aligned in `width` columns. */
static void out_u64(prof_out *o, uint64_t v, size_t width) {
  char num[24];
  size_t k = obj_fmt_uint(num, v, 10);
  for (; width > k; width--) out_mem(o, " ", 1);
  out_mem(o, num, k);
}

static void out_hex(prof_out *o, uint64_t v) {
  char num[24] = "0x";
  size_t k = obj_fmt_uint(num + 2, v, 16);
  out_mem(o, num, k + 2);
}

/* The contents of a /proc file (its size is unknown before reading). */
static void out_file(prof_out *o, const char *path) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  char buf[4096];
  for (;;) {
    ssize_t r = read(fd, buf, sizeof buf);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    out_mem(o, buf, (size_t)r);
  }
  close(fd);
}

/* ------------------------------------------------------------------------------------
 * Profile files
 * ---------------------------------------------------------------------------------- */
static void out_counts(prof_out *o, size_t n1, size_t b1, size_t n2, size_t b2) {
  out_u64(o, n1, 6);
  out_str(o, ": ");
  out_u64(o, b1, 8);
  out_str(o, " [");
  out_u64(o, n2, 6);
  out_str(o, ": ");
  out_u64(o, b2, 8);
  out_str(o, "]");
}

/* PREFIX.PID.SEQ.heap; false when it does not fit. */
static bool prof_next_name(char *name, size_t cap) {
  size_t n = strlen(heap_opt.prof_prefix);
  if (n + (size_t)64 > cap) return false; /* two numbers of at most 20 digits, dots, .heap */
  for (size_t i = 0; i < n; i++) name[i] = heap_opt.prof_prefix[i];
  name[n++] = '.';
  n += obj_fmt_uint(name + n, (uint64_t)getpid(), 10);
  name[n++] = '.';
  n += obj_fmt_uint(name + n, atomic_fetch_add(&prof_seq, 1), 10);
  for (const char *s = ".heap"; *s; s++) name[n++] = *s;
  name[n] = 0;
  return true;
}

MA_API int ma_prof_dump(const char *path) {
  if (!prof_on || !prof_buckets) return -ENOTSUP;
  int saved = errno;
  char name[PATH_MAX];
  if (!path) {
    if (!prof_next_name(name, sizeof name)) return -ENAMETOOLONG;
    path = name;
  }
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    int err = -errno;
    errno = saved;
    return err;
  }
  prof_out o = {.fd = fd};
  pthread_mutex_lock(&prof_lock);
  size_t n1 = 0, b1 = 0, n2 = 0, b2 = 0;
  for (uint32_t i = 0; i < prof_nbuckets; i++) {
    const prof_bucket *b = &prof_buckets[i];
    n1 += b->live_n, b1 += b->live_bytes, n2 += b->total_n, b2 += b->total_bytes;
  }
  out_str(&o, "heap profile: ");
  out_counts(&o, n1, b1, n2, b2);
  out_str(&o, " @ heap_v2/");
  out_u64(&o, prof_rate, 0);
  out_str(&o, "\n");
  for (uint32_t i = 0; i < prof_nbuckets; i++) {
    const prof_bucket *b = &prof_buckets[i];
    if (b->depth == 0) continue;
    out_counts(&o, b->live_n, b->live_bytes, b->total_n, b->total_bytes);
    out_str(&o, " @");
    for (uint32_t d = 0; d < b->depth; d++) {
      out_str(&o, " ");
      out_hex(&o, b->pcs[d]);
    }
    out_str(&o, "\n");
  }
  pthread_mutex_unlock(&prof_lock);
  out_str(&o, "\nMAPPED_LIBRARIES:\n");
  out_file(&o, "/proc/self/maps");
  out_flush(&o);
  if (close(fd) != 0 && !o.err) o.err = -errno;
  if (o.err) unlink(path);
  errno = saved;
  return o.err;
}

/* ------------------------------------------------------------------------------------
 * Leak report
 * ---------------------------------------------------------------------------------- */
#define PROF_LEAK_MAX_SITES 32

typedef struct prof_site {
  uint64_t hash; /* stack hash; 0 = empty slot (a zero hash is folded to 1) */
  double bytes, blocks;
  size_t samples;
  uint32_t bucket; /* a bucket with this stack, for its frames */
} prof_site;

/* A frame as "symbol+0xoff (object)", or "0xpc (object+0xoff)" without a symbol. */
static void out_frame(prof_out *o, uintptr_t pc) {
  Dl_info info;
  memset(&info, 0, sizeof info);
  if (pc && dladdr((void *)(pc - 1), &info) && info.dli_fname) {
    const char *obj = strrchr(info.dli_fname, '/');
    obj = obj ? obj + 1 : info.dli_fname;
    if (info.dli_sname) {
      out_str(o, info.dli_sname);
      out_str(o, "+");
      out_hex(o, pc - (uintptr_t)info.dli_saddr);
      out_str(o, " (");
      out_str(o, obj);
      out_str(o, ")");
    } else {
      out_hex(o, pc);
      out_str(o, " (");
      out_str(o, *obj ? obj : "?");
      out_str(o, "+");
      out_hex(o, pc - (uintptr_t)info.dli_fbase);
      out_str(o, ")");
    }
    return;
  }
  out_hex(o, pc);
}

static void out_mib(prof_out *o, double bytes, size_t width) {
  /* bytes with one decimal in MiB, KiB or B */
  const char *unit = " B";
  double v = bytes;
  if (v >= 1048576) {
    v /= 1048576;
    unit = " MiB";
  } else if (v >= 1024) {
    v /= 1024;
    unit = " KiB";
  }
  uint64_t t = (uint64_t)(v * 10 + 0.5);
  char num[32];
  size_t k = obj_fmt_uint(num, t / 10, 10);
  num[k++] = '.';
  num[k++] = (char)('0' + t % 10);
  for (size_t w = k + strlen(unit); w < width; w++) out_mem(o, " ", 1);
  out_mem(o, num, k);
  out_str(o, unit);
}

MA_API int ma_prof_leaks_print(int fd, unsigned max_sites) {
  if (!prof_on || !prof_buckets) return -ENOTSUP;
  if (fd < 0) return -EBADF;
  if (max_sites == 0) max_sites = 10;
  if (max_sites > PROF_LEAK_MAX_SITES) max_sites = PROF_LEAK_MAX_SITES;
  int saved = errno;
  prof_site top[PROF_LEAK_MAX_SITES];
  uintptr_t pcs[PROF_LEAK_MAX_SITES][PROF_DEPTH];
  uint32_t depth[PROF_LEAK_MAX_SITES];
  unsigned ntop = 0;
  double all_bytes = 0, all_blocks = 0;
  size_t all_samples = 0;

  pthread_mutex_lock(&prof_lock);
  size_t cap = 1024;
  while (cap < (size_t)prof_nbuckets * 2) cap *= 2;
  prof_site *map = os_alloc(cap * sizeof *map, 0, false);
  if (!map) {
    pthread_mutex_unlock(&prof_lock);
    errno = saved;
    return -ENOMEM;
  }
  for (uint32_t i = 0; i < prof_nbuckets; i++) { /* merge the sizes of each stack */
    const prof_bucket *b = &prof_buckets[i];
    if (b->live_n == 0) continue;
    double s = prof_scale((double)b->size);
    uint64_t h = b->stack_hash ? b->stack_hash : 1;
    size_t j = (size_t)(h >> 7) & (cap - 1);
    while (map[j].hash && map[j].hash != h) j = (j + 1) & (cap - 1);
    if (!map[j].hash) map[j] = (prof_site){.hash = h, .bucket = i};
    map[j].bytes += (double)b->live_bytes * s;
    map[j].blocks += (double)b->live_n * s;
    map[j].samples += b->live_n;
    all_bytes += (double)b->live_bytes * s;
    all_blocks += (double)b->live_n * s;
    all_samples += b->live_n;
  }
  for (size_t j = 0; j < cap; j++) { /* the largest sites, by insertion */
    if (!map[j].hash) continue;
    unsigned at = ntop < max_sites ? ntop : max_sites;
    while (at > 0 && top[at - 1].bytes < map[j].bytes) {
      if (at < max_sites) top[at] = top[at - 1];
      at--;
    }
    if (at < max_sites) {
      top[at] = map[j];
      if (ntop < max_sites) ntop++;
    }
  }
  for (unsigned k = 0; k < ntop; k++) {
    const prof_bucket *b = &prof_buckets[top[k].bucket];
    depth[k] = b->depth;
    memcpy(pcs[k], b->pcs, b->depth * sizeof b->pcs[0]);
  }
  uint64_t rate = prof_rate;
  pthread_mutex_unlock(&prof_lock);
  os_release(map, cap * sizeof *map);

  prof_out o = {.fd = fd};
  char comm[64];
  obj_comm(comm, sizeof comm);
  out_str(&o, "mapalloc: leak report of ");
  out_str(&o, comm);
  out_str(&o, " (pid ");
  out_u64(&o, (uint64_t)getpid(), 0);
  out_str(&o, "): ");
  out_mib(&o, all_bytes, 0);
  out_str(&o, " in ~");
  out_u64(&o, (uint64_t)(all_blocks + 0.5), 0);
  out_str(&o, " live blocks, estimated from ");
  out_u64(&o, all_samples, 0);
  out_str(&o, " samples (1 per ");
  out_u64(&o, rate, 0);
  out_str(&o, " bytes on average)\n");
  if (ntop == 0)
    out_str(&o, "  no live sampled blocks\n");
  else
    out_str(&o, "   est. bytes  est. blocks  samples  call site (innermost first)\n");
  for (unsigned k = 0; k < ntop; k++) {
    out_mib(&o, top[k].bytes, 13);
    out_u64(&o, (uint64_t)(top[k].blocks + 0.5), 13);
    out_u64(&o, top[k].samples, 9);
    out_str(&o, "  ");
    for (uint32_t d = 0; d < depth[k] && d < 4; d++) {
      if (d) out_str(&o, " <- ");
      out_frame(&o, pcs[k][d]);
    }
    if (depth[k] == 0) out_str(&o, "(no stack)");
    out_str(&o, "\n");
  }
  out_flush(&o);
  errno = saved;
  return o.err;
}

/* ------------------------------------------------------------------------------------
 * Dump signal: the handler only posts a semaphore (async-signal-safe); a helper thread
 * with every signal blocked writes the file. A fork child has no helper: its sample paths
 * and its exit write what a signal asked for.
 * ---------------------------------------------------------------------------------- */
static void prof_sig_handler(int sig) {
  (void)sig;
  int saved = errno;
  atomic_store(&prof_sig_pending, 1);
  if (atomic_load(&prof_helper_alive)) sem_post(&prof_sem);
  errno = saved;
}

static void *prof_helper(void *arg) {
  (void)arg;
  for (;;) {
    while (sem_wait(&prof_sem) != 0) {
    }
    if (atomic_exchange(&prof_sig_pending, 0)) (void)ma_prof_dump(NULL);
  }
  return NULL;
}

void prof_signal_start(void) {
  if (sem_init(&prof_sem, 0, 0) != 0) return;
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  pthread_t t;
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pthread_attr_setstacksize(&attr, (size_t)256 << 10);
  bool ok = pthread_create(&t, &attr, prof_helper, NULL) == 0;
  pthread_attr_destroy(&attr);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (ok) pthread_setname_np(t, "mapalloc-prof");
  atomic_store(&prof_helper_alive, ok);
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = prof_sig_handler;
  sa.sa_flags = SA_RESTART;
  sigemptyset(&sa.sa_mask);
  sigaction(prof_signo, &sa, NULL);
}

void prof_signal_poll(void) {
  if (atomic_load_explicit(&prof_sig_pending, memory_order_relaxed) &&
      !atomic_load(&prof_helper_alive) && atomic_exchange(&prof_sig_pending, 0))
    (void)ma_prof_dump(NULL);
}

void prof_dump_atfork_child(void) {
  atomic_store(&prof_seq, 0);
  atomic_store(&prof_helper_alive, false);
}

/* ------------------------------------------------------------------------------------
 * Start and exit
 * ---------------------------------------------------------------------------------- */
void prof_exit(void) {
  if (!prof_on || !prof_buckets) return;
  prof_signal_poll();
  if (prof_write_exit) (void)ma_prof_dump(NULL);
  if (prof_leaks) (void)ma_prof_leaks_print(prof_err_fd, 10);
}

/* Called by prof_start: programs such as coreutils close stderr before exit. */
void prof_keep_stderr(void) {
  int saved = errno;
  int fd = fcntl(2, F_DUPFD_CLOEXEC, 200);
  if (fd >= 0) prof_err_fd = fd;
  errno = saved;
}
