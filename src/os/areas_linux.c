/* The /proc/PID/maps parser behind ma_areas_query.
 *
 * It must work where malloc cannot be called (inside the allocator, in a forked child), so
 * it reads the file with read(2) into a stack buffer and parses lines in place. A line is
 *   start-end perms offset major:minor inode [spaces path]
 * where the path may contain spaces, may end in " (deleted)", or be a pseudo name such as
 * [heap], [stack], [vsyscall] or [anon:name]. The kernel escapes newlines in paths, so a
 * newline always ends a line. A line longer than the buffer (a path near PATH_MAX) is
 * parsed from its first bufferful, which holds every field, and its path is truncated.
 */
#include "os/os.h"
#include "os/sys_linux.h"

#include <errno.h>
#include <string.h>

/* Parses a hexadecimal number; advances *s. Returns false when there is no digit. */
static bool parse_hex(const char **s, uint64_t *out) {
  uint64_t v = 0;
  const char *p = *s;
  for (;; p++) {
    unsigned d;
    if (*p >= '0' && *p <= '9')
      d = (unsigned)(*p - '0');
    else if (*p >= 'a' && *p <= 'f')
      d = (unsigned)(*p - 'a' + 10);
    else if (*p >= 'A' && *p <= 'F')
      d = (unsigned)(*p - 'A' + 10);
    else
      break;
    if (v >> 60) return false; /* more than 64 bits */
    v = v << 4 | d;
  }
  if (p == *s) return false;
  *s = p;
  *out = v;
  return true;
}

/* Skips one field and the single space after it; false at the end of the line. */
static bool skip_field(const char **s) {
  const char *p = *s;
  while (*p && *p != ' ') p++;
  if (*p != ' ') return false;
  *s = p + 1;
  return true;
}

/* Parses one NUL-terminated line into *a. Returns false for a malformed line. */
static bool parse_line(const char *s, ma_area *a) {
  uint64_t start, end, off;
  if (!parse_hex(&s, &start) || *s++ != '-') return false;
  if (!parse_hex(&s, &end) || *s++ != ' ' || end < start) return false;
  if (strlen(s) < 5 || s[4] != ' ') return false;
  unsigned prot = 0;
  if (s[0] == 'r') prot |= MA_PROT_READ;
  if (s[1] == 'w') prot |= MA_PROT_WRITE;
  if (s[2] == 'x') prot |= MA_PROT_EXEC;
  if (s[3] != 's' && s[3] != 'p') return false;
  a->shared = s[3] == 's';
  s += 5;
  if (!parse_hex(&s, &off) || *s++ != ' ') return false;
  if (!skip_field(&s)) return false; /* device */
  const char *inode = s;
  if (!skip_field(&s)) { /* an inode at the very end of the line: no path */
    if (*inode < '0' || *inode > '9') return false;
    s = inode + strlen(inode);
  }
  while (*s == ' ') s++;
  size_t n = strlen(s);
  if (n >= sizeof a->path) n = sizeof a->path - 1;
  memcpy(a->path, s, n);
  a->path[n] = '\0';
  a->start = (uintptr_t)start;
  a->end = (uintptr_t)end;
  a->prot = prot;
  a->offset = off;
  return true;
}

/* Writes "/proc/<pid>/maps" (or /proc/self/maps) without printf. */
static void maps_path(int pid, char out[32]) {
  if (pid == 0) {
    memcpy(out, "/proc/self/maps", sizeof "/proc/self/maps");
    return;
  }
  char digits[12];
  int n = 0;
  for (unsigned v = (unsigned)pid; v; v /= 10) digits[n++] = (char)('0' + v % 10);
  char *p = stpcpy(out, "/proc/");
  while (n) *p++ = digits[--n];
  memcpy(p, "/maps", sizeof "/maps");
}

/* Outcome of one line: keep going, stop with fn's value, or done (past `end`). */
struct scan {
  uintptr_t start, end;
  int (*fn)(const ma_area *, void *);
  void *ctx;
  int result;
  bool done;
};

static void visit(struct scan *sc, const char *line) {
  ma_area a;
  if (!parse_line(line, &a)) return;
  if (a.start >= sc->end) {
    sc->done = true;
    return;
  }
  if (a.end <= sc->start) return;
  int r = sc->fn(&a, sc->ctx);
  if (r != 0) {
    sc->result = r;
    sc->done = true;
  }
}

int os_areas_query(int pid, uintptr_t start, uintptr_t end, int (*fn)(const ma_area *, void *ctx),
                   void *ctx) {
  char path[32];
  maps_path(pid, path);
  int fd = sys_open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return errno == ENOENT ? -ESRCH : -errno;

  struct scan sc = {.start = start, .end = end, .fn = fn, .ctx = ctx};
  char buf[4096];
  size_t have = 0;
  bool skipping = false; /* inside the unread rest of an overlong line */
  int err = 0;
  while (!sc.done) {
    ssize_t got = sys_read(fd, buf + have, sizeof buf - 1 - have);
    if (got < 0) {
      if (errno == EINTR) continue;
      err = -errno;
      break;
    }
    if (got == 0) { /* a last line without a newline */
      buf[have] = '\0';
      if (have && !skipping) visit(&sc, buf);
      break;
    }
    have += (size_t)got;
    char *line = buf, *stop = buf + have, *nl;
    while (!sc.done && (nl = memchr(line, '\n', (size_t)(stop - line))) != NULL) {
      *nl = '\0';
      if (!skipping) visit(&sc, line);
      skipping = false;
      line = nl + 1;
    }
    size_t rest = (size_t)(stop - line);
    if (rest == sizeof buf - 1) { /* one line fills the buffer: take what we have */
      buf[rest] = '\0';
      if (!skipping) visit(&sc, buf);
      skipping = true;
      rest = 0;
    }
    memmove(buf, line, rest);
    have = rest;
  }
  sys_close(fd);
  if (err) return err;
  return sc.result;
}
