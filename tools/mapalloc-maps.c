/* mapalloc-maps [PID]: the memory areas of a process (default: this one) as a table.
 *
 * One row per area of /proc/PID/maps (read with ma_areas_query): range, size, protection,
 * shared or private, file offset and path, plus what /proc/PID/smaps tells where it is
 * readable: resident and swapped bytes, transparent huge pages, locked bytes and the
 * interesting VmFlags. A totals line closes the table.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mapalloc/pages.h"

/* What smaps says about one area (sizes in kB). */
struct smap {
  uintptr_t start;
  unsigned long rss, swap, thp, locked;
  char flags[40];
};

struct smaps {
  struct smap *v;
  size_t n, cap;
};

/* VmFlags worth showing (see proc(5)): locked, huge pages, dump/fork, no-reserve... */
static const char *const shown_flags[] = {"lo", "ht", "hg", "nh", "dd", "dc", "nr", "gd", "mg"};

static void keep_flags(const char *line, char *out, size_t cap) {
  out[0] = '\0';
  size_t len = 0;
  for (const char *p = line; *p;) {
    while (*p == ' ' || *p == '\n') p++;
    if (!*p) break;
    char f[3] = {p[0], p[1] ? p[1] : '\0', '\0'};
    for (size_t i = 0; i < sizeof shown_flags / sizeof *shown_flags; i++)
      if (strcmp(f, shown_flags[i]) == 0 && len + 4 < cap) {
        len += (size_t)snprintf(out + len, cap - len, "%s%s", len ? "," : "", f);
      }
    while (*p && *p != ' ' && *p != '\n') p++;
  }
}

/* Reads /proc/PID/smaps; returns false when it cannot be read. */
static bool read_smaps(int pid, struct smaps *s) {
  char path[64];
  if (pid)
    snprintf(path, sizeof path, "/proc/%d/smaps", pid);
  else
    snprintf(path, sizeof path, "/proc/self/smaps");
  FILE *f = fopen(path, "r");
  if (!f) return false;
  char line[8192];
  struct smap *cur = NULL;
  while (fgets(line, sizeof line, f)) {
    uintptr_t a, b;
    char c;
    char *dash = strchr(line, '-'), *space = strchr(line, ' ');
    if (dash && space && dash < space &&
        sscanf(line, "%" SCNxPTR "-%" SCNxPTR " %c", &a, &b, &c) == 3) {
      if (s->n == s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 256;
        struct smap *v = realloc(s->v, cap * sizeof *v);
        if (!v) break;
        s->v = v;
        s->cap = cap;
      }
      cur = &s->v[s->n++];
      memset(cur, 0, sizeof *cur);
      cur->start = a;
      continue;
    }
    if (!cur) continue;
    unsigned long kb;
    if (sscanf(line, "Rss: %lu kB", &kb) == 1)
      cur->rss = kb;
    else if (sscanf(line, "Swap: %lu kB", &kb) == 1)
      cur->swap = kb;
    else if (sscanf(line, "AnonHugePages: %lu kB", &kb) == 1)
      cur->thp = kb;
    else if (sscanf(line, "Locked: %lu kB", &kb) == 1)
      cur->locked = kb;
    else if (strncmp(line, "VmFlags:", 8) == 0)
      keep_flags(line + 8, cur->flags, sizeof cur->flags);
  }
  fclose(f);
  return true;
}

static const struct smap *smap_find(const struct smaps *s, uintptr_t start) {
  size_t lo = 0, hi = s->n; /* smaps is in address order */
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (s->v[mid].start < start)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo < s->n && s->v[lo].start == start ? &s->v[lo] : NULL;
}

/* Formats kB as a short human size: 4K, 1.5M, 2.0G. */
static const char *human_kb(unsigned long long kb, char buf[16]) {
  if (kb < 1024)
    snprintf(buf, 16, "%lluK", kb);
  else if (kb < 1024 * 1024)
    snprintf(buf, 16, "%.1fM", (double)kb / 1024);
  else if (kb < 1024ull * 1024 * 1024)
    snprintf(buf, 16, "%.1fG", (double)kb / (1024 * 1024));
  else
    snprintf(buf, 16, "%.1fT", (double)kb / (1024.0 * 1024 * 1024));
  return buf;
}

struct ctx {
  const struct smaps *smaps;
  bool have_smaps;
  size_t areas;
  unsigned long long size_kb, rss, swap, thp, locked;
};

static int print_area(const ma_area *a, void *p) {
  struct ctx *c = p;
  unsigned long long kb = (a->end - a->start) / 1024;
  char prot[4] = {a->prot & MA_PROT_READ ? 'r' : '-', a->prot & MA_PROT_WRITE ? 'w' : '-',
                  a->prot & MA_PROT_EXEC ? 'x' : '-', '\0'};
  char b1[16], b2[16], b3[16], b4[16], b5[16];
  const struct smap *s = c->have_smaps ? smap_find(c->smaps, a->start) : NULL;
  printf("%012" PRIxPTR "-%012" PRIxPTR " %7s %s %c %9" PRIx64, a->start, a->end, human_kb(kb, b1),
         prot, a->shared ? 's' : 'p', a->offset);
  if (s) {
    printf(" %7s %6s %6s %6s %-14s", human_kb(s->rss, b2), human_kb(s->swap, b3),
           human_kb(s->thp, b4), human_kb(s->locked, b5), s->flags[0] ? s->flags : "-");
    c->rss += s->rss;
    c->swap += s->swap;
    c->thp += s->thp;
    c->locked += s->locked;
  } else {
    printf(" %7s %6s %6s %6s %-14s", "-", "-", "-", "-", "-");
  }
  printf(" %s\n", a->path);
  c->areas++;
  c->size_kb += kb;
  return 0;
}

static int no_area(const ma_area *a, void *ctx) {
  (void)a;
  (void)ctx;
  return 0;
}

int main(int argc, char **argv) {
  int pid = 0;
  if (argc > 2 || (argc == 2 && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0))) {
    fprintf(stderr, "usage: %s [PID]\n  the memory areas of process PID (default: this one)\n",
            argv[0]);
    return argc == 2 ? 0 : 2;
  }
  if (argc == 2) {
    char *end;
    errno = 0;
    long v = strtol(argv[1], &end, 10);
    if (errno || *end || v <= 0 || v > 0x3fffffff) {
      fprintf(stderr, "mapalloc-maps: not a process id: %s\n", argv[1]);
      return 2;
    }
    pid = (int)v;
  }
  /* Fail before printing anything when the process is gone or its maps are closed to us. */
  int r = ma_areas_query(pid, 0, 1, no_area, NULL);
  if (r < 0) {
    fprintf(stderr, "mapalloc-maps: cannot read the areas of %s: %s\n",
            argc == 2 ? argv[1] : "self", strerror(-r));
    return 1;
  }
  struct smaps sm = {0};
  struct ctx c = {.smaps = &sm};
  c.have_smaps = read_smaps(pid, &sm);

  if (pid)
    printf("memory areas of process %d\n", pid);
  else
    printf("memory areas of process self (mapalloc-maps)\n");
  printf("%-25s %7s %s %c %9s %7s %6s %6s %6s %-14s %s\n", "range", "size", "prt", 'S', "offset",
         "rss", "swap", "thp", "locked", "flags", "path");
  r = ma_areas_query(pid, 0, UINTPTR_MAX, print_area, &c);
  if (r < 0) {
    fprintf(stderr, "mapalloc-maps: cannot read the areas of %s: %s\n",
            argc == 2 ? argv[1] : "self", strerror(-r));
    free(sm.v);
    return 1;
  }
  char b1[16], b2[16], b3[16], b4[16], b5[16];
  printf("total: %zu areas, size %s", c.areas, human_kb(c.size_kb, b1));
  if (c.have_smaps)
    printf(", rss %s, swap %s, thp %s, locked %s", human_kb(c.rss, b2), human_kb(c.swap, b3),
           human_kb(c.thp, b4), human_kb(c.locked, b5));
  else
    printf(" (smaps not readable: no rss/swap/flags)");
  printf("\n");
  free(sm.v);
  return 0;
}
