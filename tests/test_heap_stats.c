/* Statistics per size class (src/malloc/stats_class.c): live blocks read from the slabs,
 * the printed table with the process name and pid. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "malloc/stats_class.h"
#include "mapalloc/heap.h"

#define N_SMALL 1000
#define N_MID   50

Test(heap_stats, class_counts_follow_allocations) {
  static void *small[N_SMALL], *mid[N_MID];
  unsigned cs = heap_size_class(100), cm = heap_size_class(5000);
  ma_free(ma_malloc(1)); /* the heap exists */
  heap_class_stats before, during, after;
  heap_class_stats_get(&before);
  for (int i = 0; i < N_SMALL; i++) small[i] = ma_malloc(100);
  for (int i = 0; i < N_MID; i++) mid[i] = ma_malloc(5000);
  heap_class_stats_get(&during);
  cr_assert(during.complete);
  cr_assert_eq(during.cls[cs].live - before.cls[cs].live, N_SMALL, "class %u: %zu -> %zu", cs,
               before.cls[cs].live, during.cls[cs].live);
  cr_assert_eq(during.cls[cm].live - before.cls[cm].live, N_MID);
  cr_assert_geq(during.cls[cs].slab_bytes, N_SMALL * (size_t)heap_cls_size[cs]);
  cr_assert_geq(during.cls[cs].slabs, 1);
  for (int i = 0; i < N_SMALL; i++) ma_free(small[i]);
  for (int i = 0; i < N_MID; i++) ma_free(mid[i]);
  heap_class_stats_get(&after);
  cr_assert_eq(after.cls[cs].live, before.cls[cs].live);
  cr_assert_eq(after.cls[cm].live, before.cls[cm].live);
}

Test(heap_stats, print_has_pid_and_class_rows) {
  void *keep[300];
  for (int i = 0; i < 300; i++) keep[i] = ma_malloc(200); /* class of 208-byte blocks */
  char path[] = "/tmp/mapalloc-stats-XXXXXX";
  int fd = mkstemp(path);
  cr_assert_geq(fd, 0);
  unlink(path);
  ma_heap_stats_print(fd);
  char buf[16384];
  ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
  close(fd);
  cr_assert_gt(n, 0);
  buf[n] = 0;
  char want[64];
  snprintf(want, sizeof want, "(pid %d)", (int)getpid());
  cr_assert(strstr(buf, want), "no '%s' in:\n%s", want, buf);
  cr_assert(strstr(buf, "size classes"), "%s", buf);
  /* the row of the 208-byte class: class index, block size, then >= 300 live blocks */
  char row[64];
  snprintf(row, sizeof row, "%7u%8u", heap_size_class(200), 208u);
  const char *r = strstr(buf, row);
  cr_assert(r, "no row '%s' in:\n%s", row, buf);
  unsigned long live = strtoul(r + strlen(row), NULL, 10);
  cr_assert_geq(live, 300, "%s", r);
  cr_assert(strstr(buf, "large (> 128 KiB, mapped):"), "%s", buf);
  for (int i = 0; i < 300; i++) ma_free(keep[i]);
}
