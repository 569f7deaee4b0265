/* A tiny program built against an installed mapalloc (see tests/install.cmake). */
#include <mapalloc.h>
#include <stdio.h>
#include <string.h>

static int count(const ma_area *a, void *ctx) {
  (void)a;
  ++*(int *)ctx;
  return 0;
}

int main(void) {
  ma_map_opts o = MA_MAP_OPTS_DEFAULT;
  o.len = 3 * ma_page_size();
  ma_map m;
  if (ma_map_create(&o, &m) != 0) return 1;
  memset(m.addr, 7, m.len);
  int n = 0;
  if (ma_areas_query(0, (uintptr_t)m.addr, (uintptr_t)m.addr + m.len, count, &n) != 0 || n < 1)
    return 2;
  if (ma_map_destroy(&m) != 0) return 3;
  printf("consumer ok\n");
  return 0;
}
