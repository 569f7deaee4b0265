/* A user's misuse of pool objects, for the Valgrind and ASan ctest entries in
 * pool_tools.cmake: those tools must report it.
 *   pool_misuse uaf    writes to a freed object (use after free)
 *   pool_misuse leak   loses an object (Valgrind reports it as definitely lost)
 *   pool_misuse ok     correct use: no report
 *   pool_misuse live   destroys the pool with live objects: no report (they are freed) */
#include <stdio.h>
#include <string.h>

#include "mapalloc/pool.h"

int main(int argc, char **argv) {
  const char *mode = argc > 1 ? argv[1] : "ok";
  ma_pool_opts o = {.obj_size = 64};
  ma_pool *p;
  if (ma_pool_create(&o, &p) != 0) return 2;
  char *keep[100];
  for (int i = 0; i < 100; i++) {
    keep[i] = ma_pool_alloc(p);
    memset(keep[i], i, 64);
  }
  char *x = ma_pool_alloc(p);
  memset(x, 1, 64);
  if (!strcmp(mode, "uaf")) {
    ma_pool_free(p, x);
    ((volatile char *)x)[40] = 7; /* the bug */
  } else if (!strcmp(mode, "leak")) {
    x = NULL; /* the bug: the only reference is gone */
  } else {
    ma_pool_free(p, x);
  }
  if (!strcmp(mode, "live")) {
    ma_pool_destroy(p); /* frees keep[] and x */
    printf("sum 4950\n");
    return 0;
  }
  int sum = 0;
  for (int i = 0; i < 100; i++) {
    sum += keep[i][63];
    ma_pool_free(p, keep[i]);
  }
  printf("sum %d\n", sum);
  if (strcmp(mode, "leak") != 0) ma_pool_destroy(p);
  return 0;
}
