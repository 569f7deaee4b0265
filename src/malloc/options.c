/* Run-time options (MAPALLOC_* environment variables) and allocation-free output helpers.
 *
 * Options are read from `environ` directly (getenv is fine too, but nothing here may
 * allocate: the first read can happen inside the dynamic loader's first malloc). */
#include <unistd.h> /* environ (_GNU_SOURCE) */

#include "malloc/heap_internal.h"

/* Default purge delay: see the README and bench/bench_heap.c for the measurements. */
#define HEAP_PURGE_DELAY_DEFAULT 100

heap_options heap_opt = {.stats = 0,
                         .verbose = 0,
                         .purge_delay_ms = HEAP_PURGE_DELAY_DEFAULT,
                         .huge_pages = -1,
                         .secure = OBJ_SECURE,
                         .shuffle = OBJ_SHUFFLE_DEFAULT,
                         .background = 1,
                         .guard_madvise = 1};

typedef struct heap_option_desc {
  const char *name; /* after MAPALLOC_ */
  long *value;
  long def;
  const char *desc;
} heap_option_desc;

static const heap_option_desc heap_option_table[] = {
    {"STATS", &heap_opt.stats, 0, "1: print the statistics table to stderr at exit"},
    {"VERBOSE", &heap_opt.verbose, 0, "1: print the options in effect at start-up"},
    {"PURGE_DELAY_MS", &heap_opt.purge_delay_ms, HEAP_PURGE_DELAY_DEFAULT,
     "ms before freed pages go back to the OS (0: at once, -1: only on collect/trim)"},
    {"HUGE_PAGES", &heap_opt.huge_pages, -1,
     "transparent huge pages: 1 on (heap segments and large blocks), 0 off (large blocks), "
     "-1 system default"},
    {"SECURE", &heap_opt.secure, OBJ_SECURE,
     "1: guard pages after slabs and large blocks, random allocation order (the free-list "
     "link checks need a -DMAPALLOC_SECURE=ON build, where this is always 1)"},
    {"SHUFFLE", &heap_opt.shuffle, OBJ_SHUFFLE_DEFAULT,
     "secure mode: allocation order shuffled within windows of this many blocks (0: off, "
     "at most 256; larger costs pointer-chasing programs more)"},
    {"GUARD_MADVISE", &heap_opt.guard_madvise, 1,
     "secure mode: 1 slab guard pages inside one mapping (MADV_GUARD_INSTALL) where the "
     "kernel has them (Linux 6.13+); 0 PROT_NONE holes, a mapping per slab"},
    {"BACKGROUND", &heap_opt.background, 1,
     "0: no background purger thread (memory of idle threads returns at their next call)"},
};

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

static bool heap_options_done;

/* A signed decimal, without printf (parse_long keeps |v| far below LONG_MAX). */
static void heap_write_long(int fd, long v) {
  char buf[32];
  size_t n = 0;
  if (v < 0) buf[n++] = '-';
  n += heap_fmt_u64(buf + n, (uint64_t)(v < 0 ? -v : v));
  buf[n] = 0;
  heap_write_str(fd, buf);
}

void heap_options_read(void) {
  if (heap_options_done || !environ) return; /* no environ yet: the constructor retries */
  heap_options_done = true;
  for (char **e = environ; *e; e++) {
    const char *s = *e;
    if (s[0] != 'M' || s[1] != 'A' || s[2] != 'P' || s[3] != 'A' || s[4] != 'L' || s[5] != 'L' ||
        s[6] != 'O' || s[7] != 'C' || s[8] != '_')
      continue;
    for (size_t i = 0; i < sizeof heap_option_table / sizeof heap_option_table[0]; i++) {
      const char *val;
      if (!name_eq(s + 9, heap_option_table[i].name, &val)) continue;
      long v;
      if (parse_long(val, &v)) {
        *heap_option_table[i].value = v;
      } else {
        heap_write_str(2, "mapalloc: ignoring bad value of MAPALLOC_");
        heap_write_str(2, heap_option_table[i].name);
        heap_write_str(2, "\n");
      }
    }
  }
  if (heap_opt.shuffle < 0) heap_opt.shuffle = 0;
  if (heap_opt.shuffle > 256) heap_opt.shuffle = 256;
  obj_shuffle_window = (uint32_t)heap_opt.shuffle;
#if OBJ_SECURE
  heap_opt.secure = 1;
#else
  obj_secure_rt = heap_opt.secure > 0; /* new segments, carves and large blocks only */
#endif
  if (heap_opt.guard_madvise == 0) os_guard_disable(); /* before the first segment */
  if (heap_opt.verbose) {
    for (size_t i = 0; i < sizeof heap_option_table / sizeof heap_option_table[0]; i++) {
      heap_write_str(2, "mapalloc: option MAPALLOC_");
      heap_write_str(2, heap_option_table[i].name);
      heap_write_str(2, "=");
      heap_write_long(2, *heap_option_table[i].value);
      heap_write_str(2, "  (");
      heap_write_str(2, heap_option_table[i].desc);
      heap_write_str(2, "; default ");
      heap_write_long(2, heap_option_table[i].def);
      heap_write_str(2, ")\n");
    }
  }
}

void heap_write_str(int fd, const char *s) {
  size_t n = 0;
  while (s[n]) n++;
  while (n) {
    ssize_t w = write(fd, s, n);
    if (w <= 0) return;
    s += w;
    n -= (size_t)w;
  }
}

size_t heap_fmt_u64(char *buf, uint64_t v) {
  char tmp[24];
  size_t n = 0;
  do {
    tmp[n++] = (char)('0' + v % 10);
    v /= 10;
  } while (v);
  for (size_t i = 0; i < n; i++) buf[i] = tmp[n - 1 - i];
  return n;
}

size_t heap_fmt_hex(char *buf, uint64_t v) {
  char tmp[20];
  size_t n = 0;
  do {
    tmp[n++] = "0123456789abcdef"[v & 15];
    v >>= 4;
  } while (v);
  for (size_t i = 0; i < n; i++) buf[i] = tmp[n - 1 - i];
  return n;
}
