/* A pool's freed objects are poisoned under AddressSanitizer. When the pool (or an idle
 * heap segment) gives its segment back to the OS, the shadow of that range must be cleared:
 * the kernel hands the same addresses to the next mapping (a large heap block, another
 * library's mmap), and its user must not get a false "use-after-poison". Found by the
 * stress test (tools/stress.sh under -fsanitize=address): a large block mapped where a
 * released segment had been was reported as poisoned from byte 0. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

#include "mapalloc/pool.h"

#define SEG_SIZE ((size_t)4 << 20) /* the object layer's segment size and alignment */

int main(void) {
  ma_pool_opts o = {.obj_size = 64};
  ma_pool *p;
  if (ma_pool_create(&o, &p) != 0) return 2;
  enum { N = 1000 };
  static char *objs[N];
  for (int i = 0; i < N; i++) {
    if (!(objs[i] = ma_pool_alloc(p))) return 2;
    memset(objs[i], i, 64);
  }
  uintptr_t seg = (uintptr_t)objs[0] & ~(SEG_SIZE - 1);
  for (int i = 0; i < N; i++) ma_pool_free(p, objs[i]); /* poisoned now */
  ma_pool_destroy(p);                                   /* the segment is unmapped */

  /* Map the same range again, as the next mmap of the process may. */
  void *m = mmap((void *)seg, SEG_SIZE, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
  if (m != (void *)seg) {
    fprintf(stderr, "asan_remap: the released segment at %p was not free to map again\n",
            (void *)seg);
    return 1;
  }
  memset(m, 1, SEG_SIZE); /* ASan reports use-after-poison here if the shadow was kept */
  unsigned long sum = 0;
  for (size_t i = 0; i < SEG_SIZE; i += 4096) sum += ((unsigned char *)m)[i];
  printf("remapped %lu pages\n", sum);
  return sum == SEG_SIZE / 4096 ? 0 : 1;
}
