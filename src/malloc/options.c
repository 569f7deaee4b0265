/* Allocation-free output helpers of the heap (the statistics table, misuse messages). The
 * run-time options moved to src/obj/obj_options.c (obj_opt; heap_opt is its name here). */
#include <unistd.h>

#include "malloc/heap_internal.h"

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
