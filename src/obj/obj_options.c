/* Run-time options (MAPALLOC_* environment variables) of the whole library: the heap's and
 * the pools' (obj_opt, see obj.h). The object layer reads them because it is the first
 * thing every user of the library reaches (a malloc and a pool alike), so a pool made
 * before any malloc runs with the same options as the heap.
 *
 * Read once, at the first use (obj_options_read from obj_global_init, or from the heap's
 * start-up before it), and never changed afterwards: every part of the library (slabs,
 * large blocks, pools, the purger) sees one set of values for the whole run. The values
 * come from `environ`; when it is NULL at that moment (a program that cleared it, or a
 * first malloc before libc has set it) from /proc/self/environ, the environment the
 * process started with; when neither can be read, the defaults stay for the whole run.
 * Nothing here may allocate: the first read can happen inside the dynamic loader's first
 * malloc. */
#include <fcntl.h>
#include <sched.h>
#include <unistd.h> /* environ (_GNU_SOURCE) */

#include "obj/obj.h"

/* Default purge delay: see the README and bench/bench_heap.c for the measurements. */
#define OPT_PURGE_DELAY_DEFAULT 100

obj_options obj_opt = {.stats = 0,
                       .verbose = 0,
                       .purge_delay_ms = OPT_PURGE_DELAY_DEFAULT,
                       .huge_pages = -1,
                       .secure = OBJ_SECURE,
                       .shuffle = OBJ_SHUFFLE_DEFAULT,
                       .background = 1,
                       .track = 1,
                       .guard_madvise = 1,
                       .large_chunk = (long)32 << 20,
                       .large_stash = (long)8 << 20,
                       .prof_sample = 524288,
                       .prof_warmup = 1,
                       .prof_prefix = "mapalloc"};

typedef struct opt_desc {
  const char *name; /* after MAPALLOC_ */
  long *value;
  long def;
  const char *desc;
} opt_desc;

/* String options: copied into buf (a value of cap bytes or more is ignored, with a warning). */
typedef struct opt_str_desc {
  const char *name;
  char *buf;
  size_t cap;
  const char *desc;
} opt_str_desc;

static const opt_desc opt_table[] = {
    {"STATS", &obj_opt.stats, 0, "1: print the statistics table to stderr at exit"},
    {"VERBOSE", &obj_opt.verbose, 0, "1: print the options in effect at start-up"},
    {"PURGE_DELAY_MS", &obj_opt.purge_delay_ms, OPT_PURGE_DELAY_DEFAULT,
     "ms before freed pages go back to the OS (0: at once, -1: only on collect/trim)"},
    {"HUGE_PAGES", &obj_opt.huge_pages, -1,
     "transparent huge pages: 1 on (heap segments and large blocks), 0 off (large blocks), "
     "-1 system default"},
    {"SECURE", &obj_opt.secure, OBJ_SECURE,
     "1: guard pages after slabs and large blocks, random allocation order, heap and pools "
     "(the free-list link checks need a -DMAPALLOC_SECURE=ON build, where this is always 1)"},
    {"SHUFFLE", &obj_opt.shuffle, OBJ_SHUFFLE_DEFAULT,
     "secure mode: allocation order shuffled within windows of this many blocks (0: off, "
     "at most 256; larger costs pointer-chasing programs more)"},
    {"GUARD_MADVISE", &obj_opt.guard_madvise, 1,
     "secure mode: 1 slab guard pages inside one mapping (MADV_GUARD_INSTALL) where the "
     "kernel has them (Linux 6.13+); 0 PROT_NONE holes, a mapping per slab"},
    {"LARGE_CHUNK", &obj_opt.large_chunk, (long)32 << 20,
     "bytes: a large block the cache cannot serve is cut from a new mapping of at least this "
     "much, the rest cached (0: a mapping per block; at most 32 MiB)"},
    {"LARGE_STASH", &obj_opt.large_stash, (long)8 << 20,
     "bytes: a thread keeps the large blocks (up to 4 MiB) it freed lately, up to this much, "
     "for its next large allocations without a shared lock (0: none; the running threads "
     "share 64 MiB)"},
    {"BACKGROUND", &obj_opt.background, 1,
     "0: no background purger thread (memory of idle threads returns at their next call)"},
    {"TRACK", &obj_opt.track, 1,
     "under valgrind, 0 turns off the memcheck client requests (for callgrind runs)"},
    {"PROF", &obj_opt.prof, 0,
     "1: sampled heap profiling, a profile PREFIX.PID.SEQ.heap written at exit "
     "(docs/profiling.md)"},
    {"PROF_SAMPLE", &obj_opt.prof_sample, 524288,
     "profiling: mean bytes between samples (exponentially distributed intervals)"},
    {"LEAKS", &obj_opt.leaks, 0,
     "1: at exit, print the call sites holding the most live sampled bytes (implies PROF)"},
    {"PROF_WARMUP", &obj_opt.prof_warmup, 1,
     "profiling: 0 never warms up backtrace(), the stack walk's fallback (tests only)"},
};
#define OPT_N (sizeof opt_table / sizeof opt_table[0])

static const opt_str_desc opt_str_table[] = {
    {"PROF_PREFIX", obj_opt.prof_prefix, sizeof obj_opt.prof_prefix,
     "profiling: path prefix of the profile files PREFIX.PID.SEQ.heap (default mapalloc)"},
    {"PROF_SIGNAL", obj_opt.prof_signal, sizeof obj_opt.prof_signal,
     "profiling: a signal (USR1, USR2, HUP, ... or a number) on which a profile is written"},
};
#define OPT_STR_N (sizeof opt_str_table / sizeof opt_str_table[0])

/* Parses a decimal integer (optionally negative); yes/true/on = 1, no/false/off = 0. */
static bool parse_long(const char *s, long *out) {
  if ((s[0] == 'y' || s[0] == 'Y' || s[0] == 't' || s[0] == 'T') ||
      ((s[0] == 'o' || s[0] == 'O') && (s[1] == 'n' || s[1] == 'N'))) {
    *out = 1;
    return true;
  }
  if (s[0] == 'n' || s[0] == 'N' || s[0] == 'f' || s[0] == 'F' ||
      ((s[0] == 'o' || s[0] == 'O') && (s[1] == 'f' || s[1] == 'F'))) {
    *out = 0;
    return true;
  }
  bool neg = *s == '-';
  if (neg) s++;
  if (*s < '0' || *s > '9') return false;
  long v = 0;
  for (; *s >= '0' && *s <= '9'; s++) {
    if (v > 100000000000L) return false;
    v = v * 10 + (*s - '0');
  }
  if (*s) return false;
  *out = neg ? -v : v;
  return true;
}

static bool name_eq(const char *env, const char *name, const char **val) {
  while (*name && *env == *name) env++, name++;
  if (*name || *env != '=') return false;
  *val = env + 1;
  return true;
}

void obj_write_str(int fd, const char *s) {
  size_t n = 0;
  while (s[n]) n++;
  while (n) {
    ssize_t w = write(fd, s, n);
    if (w <= 0) return;
    s += w;
    n -= (size_t)w;
  }
}

void obj_comm(char *buf, size_t size) {
  int fd = open("/proc/self/comm", O_RDONLY | O_CLOEXEC);
  ssize_t n = fd >= 0 ? read(fd, buf, size - 1) : -1;
  if (fd >= 0) close(fd);
  if (n <= 0) n = 1, buf[0] = '?';
  if (buf[n - 1] == '\n') n--;
  buf[n] = 0;
}

/* A signed decimal, without printf (parse_long keeps |v| far below LONG_MAX). */
static void opt_write_long(long v) {
  char buf[32];
  size_t n = 0;
  if (v < 0) buf[n++] = '-';
  n += obj_fmt_uint(buf + n, (uint64_t)(v < 0 ? -v : v), 10);
  buf[n] = 0;
  obj_write_str(2, buf);
}

/* One NAME=value entry of the environment. */
static void opt_apply(const char *s) {
  if (s[0] != 'M' || s[1] != 'A' || s[2] != 'P' || s[3] != 'A' || s[4] != 'L' || s[5] != 'L' ||
      s[6] != 'O' || s[7] != 'C' || s[8] != '_')
    return;
  for (size_t i = 0; i < OPT_N; i++) {
    const char *val;
    if (!name_eq(s + 9, opt_table[i].name, &val)) continue;
    long v;
    if (parse_long(val, &v)) {
      *opt_table[i].value = v;
    } else {
      obj_write_str(2, "mapalloc: ignoring bad value of MAPALLOC_");
      obj_write_str(2, opt_table[i].name);
      obj_write_str(2, "\n");
    }
  }
  for (size_t i = 0; i < OPT_STR_N; i++) {
    const char *val;
    if (!name_eq(s + 9, opt_str_table[i].name, &val)) continue;
    size_t len = 0;
    while (val[len]) len++;
    if (len < opt_str_table[i].cap) {
      for (size_t k = 0; k <= len; k++) opt_str_table[i].buf[k] = val[k];
    } else {
      obj_write_str(2, "mapalloc: ignoring too long a value of MAPALLOC_");
      obj_write_str(2, opt_str_table[i].name);
      obj_write_str(2, "\n");
    }
  }
}

/* The start-up environment (NUL-separated entries), read without allocating; entries
 * longer than the buffer are not options of ours (or carry a bad value) and are skipped. */
static void opt_read_proc(void) {
  int fd = open("/proc/self/environ", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  char buf[1024], ent[256]; /* a PROF_PREFIX fits */
  size_t len = 0;
  bool skip = false;
  ssize_t got;
  while ((got = read(fd, buf, sizeof buf)) > 0) {
    for (ssize_t i = 0; i < got; i++) {
      char c = buf[i];
      if (c == 0) {
        if (!skip && len) {
          ent[len] = 0;
          opt_apply(ent);
        }
        len = 0;
        skip = false;
      } else if (!skip) {
        if (len < sizeof ent - 1)
          ent[len++] = c;
        else
          skip = true;
      }
    }
  }
  close(fd);
}

static int opt_state; /* 0 unread, 1 being read, 2 read (for good) */

void obj_options_read(void) {
  if (obj_likely(__atomic_load_n(&opt_state, __ATOMIC_ACQUIRE) == 2)) return;
  int zero = 0;
  if (!__atomic_compare_exchange_n(&opt_state, &zero, 1, false, __ATOMIC_ACQ_REL,
                                   __ATOMIC_ACQUIRE)) {
    while (__atomic_load_n(&opt_state, __ATOMIC_ACQUIRE) == 1) sched_yield();
    return;
  }
  int saved = errno;
  char **env = environ;
  if (env) {
    for (char **e = env; *e; e++) opt_apply(*e);
  } else {
    opt_read_proc();
  }
  if (obj_opt.shuffle < 0) obj_opt.shuffle = 0;
  if (obj_opt.shuffle > 256) obj_opt.shuffle = 256;
  obj_shuffle_window = (uint32_t)obj_opt.shuffle;
#if OBJ_SECURE
  obj_opt.secure = 1;
#else
  obj_secure_rt = obj_opt.secure > 0;
#endif
  if (obj_opt.guard_madvise == 0) os_guard_disable(); /* before the first segment */
  if (obj_opt.verbose) {
    for (size_t i = 0; i < OPT_N; i++) {
      obj_write_str(2, "mapalloc: option MAPALLOC_");
      obj_write_str(2, opt_table[i].name);
      obj_write_str(2, "=");
      opt_write_long(*opt_table[i].value);
      obj_write_str(2, "  (");
      obj_write_str(2, opt_table[i].desc);
      obj_write_str(2, "; default ");
      opt_write_long(opt_table[i].def);
      obj_write_str(2, ")\n");
    }
    for (size_t i = 0; i < OPT_STR_N; i++) {
      obj_write_str(2, "mapalloc: option MAPALLOC_");
      obj_write_str(2, opt_str_table[i].name);
      obj_write_str(2, "=");
      obj_write_str(2, opt_str_table[i].buf);
      obj_write_str(2, "  (");
      obj_write_str(2, opt_str_table[i].desc);
      obj_write_str(2, ")\n");
    }
  }
  errno = saved;
  __atomic_store_n(&opt_state, 2, __ATOMIC_RELEASE);
}
