/* Run with LD_PRELOAD=libmapalloc-preload.so (tests/preload.cmake): checks that every malloc
 * entry point resolves to mapalloc and behaves as C/POSIX/glibc say, including allocations
 * made inside glibc (strdup, stdio, dlopen, threads). Prints "ok" and exits 0 on success. */
#include <dlfcn.h>
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int failures;
#define CHECK(cond)                                                                                \
  do {                                                                                             \
    if (!(cond)) {                                                                                 \
      fprintf(stderr, "override_check: %s:%d: %s\n", __FILE__, __LINE__, #cond);                   \
      failures++;                                                                                  \
    }                                                                                              \
  } while (0)

static const char *exports[] = {"malloc",
                                "free",
                                "calloc",
                                "realloc",
                                "reallocarray",
                                "reallocarr",
                                "posix_memalign",
                                "aligned_alloc",
                                "memalign",
                                "valloc",
                                "pvalloc",
                                "malloc_usable_size",
                                "free_sized",
                                "free_aligned_sized",
                                "cfree",
                                "malloc_trim",
                                "malloc_stats",
                                "mallinfo2",
                                "mallinfo",
                                "__libc_malloc",
                                "__libc_free",
                                "__libc_calloc",
                                "__libc_realloc",
                                "__libc_memalign",
                                "__libc_valloc",
                                "__libc_pvalloc",
                                "__posix_memalign",
                                "ma_malloc",
                                "ma_heap_stats_get"};

typedef struct {
  size_t allocated, active, committed, reserved, mapped_large, allocs, frees, purges;
} stats;

static void *thread_fn(void *arg) {
  char *s = strdup((const char *)arg);
  void *v[100];
  for (int i = 0; i < 100; i++) v[i] = malloc((size_t)i * 40 + 1);
  for (int i = 0; i < 100; i++) free(v[i]);
  return s; /* freed by the main thread */
}

int main(void) {
  /* 1. Every export resolves to the preload library. */
  for (size_t i = 0; i < sizeof exports / sizeof exports[0]; i++) {
    void *f = dlsym(RTLD_DEFAULT, exports[i]);
    Dl_info info;
    CHECK(f != NULL);
    if (f && dladdr(f, &info) && info.dli_fname) {
      if (!strstr(info.dli_fname, "mapalloc-preload"))
        fprintf(stderr, "override_check: %s resolves to %s\n", exports[i], info.dli_fname),
            failures++;
    }
  }
  void (*stats_get)(stats *) = (void (*)(stats *))dlsym(RTLD_DEFAULT, "ma_heap_stats_get");
  CHECK(stats_get != NULL);

  /* 2. Allocations made inside glibc come from us (malloc_usable_size would abort on a
   * foreign pointer) and go back to us. */
  char *d = strdup("hello");
  CHECK(malloc_usable_size(d) >= 6);
  free(d);
  FILE *f = fopen("/proc/self/maps", "r");
  CHECK(f != NULL);
  char *line = NULL;
  size_t cap = 0;
  int found = 0;
  while (f && getline(&line, &cap, f) > 0) found |= strstr(line, "mapalloc") != NULL;
  CHECK(found); /* our segments are named [anon:mapalloc] (or the library path shows) */
  free(line);
  if (f) fclose(f);
  char *as = NULL;
  CHECK(asprintf(&as, "%d-%s", 42, "x") == 4);
  free(as);
  void *h = dlopen("libm.so.6", RTLD_NOW);
  CHECK(h != NULL);
  if (h) dlclose(h);
  pthread_t t;
  void *ret = NULL;
  CHECK(pthread_create(&t, NULL, thread_fn, "thread") == 0);
  CHECK(pthread_join(t, &ret) == 0);
  CHECK(ret && strcmp(ret, "thread") == 0);
  free(ret);

  /* 3. Semantics. */
  stats s0, s1;
  stats_get(&s0);
  void *p = malloc(100);
  stats_get(&s1);
  CHECK(s1.allocated == s0.allocated + malloc_usable_size(p)); /* live bytes: exact */
  CHECK(malloc_usable_size(p) == 112);
  int e = errno = 4242;
  free(p);
  free(NULL);
  CHECK(errno == e);
  p = malloc(10);
  CHECK(realloc(p, 0) == NULL); /* frees, like glibc */
  void *out = (void *)1;
  CHECK(posix_memalign(&out, 24, 10) == EINVAL && out == (void *)1);
  CHECK(posix_memalign(&out, 4096, 10) == 0 && ((uintptr_t)out & 4095) == 0);
  free(out);
  volatile size_t odd_align = 24; /* volatile: clang rejects a constant one */
  CHECK(aligned_alloc(odd_align, 10) == NULL && errno == EINVAL);
  p = memalign(odd_align * 2, 10); /* glibc rounds the alignment up to 64 */
  CHECK(p && ((uintptr_t)p & 63) == 0);
  free(p);
  p = valloc(10);
  CHECK(p && ((uintptr_t)p & 4095) == 0);
  free(p);
  p = pvalloc(10);
  CHECK(p && ((uintptr_t)p & 4095) == 0 && malloc_usable_size(p) % 4096 == 0);
  free(p);
  volatile size_t huge = SIZE_MAX; /* volatile: keeps gcc's size warnings quiet */
  errno = 0;
  CHECK(calloc(huge / 2, 4) == NULL && errno == ENOMEM);
  errno = 0;
  CHECK(malloc(huge) == NULL && errno == ENOMEM);
  p = malloc(16);
  errno = 7;
  int (*rarr)(void *, size_t, size_t) =
      (int (*)(void *, size_t, size_t))dlsym(RTLD_DEFAULT, "reallocarr");
  CHECK(rarr(&p, SIZE_MAX / 2, 4) == EOVERFLOW && p != NULL && errno == 7);
  CHECK(rarr(&p, 100, 4) == 0 && p && malloc_usable_size(p) >= 400);
  CHECK(rarr(&p, 0, 4) == 0 && p == NULL);
  void (*fsized)(void *, size_t) = (void (*)(void *, size_t))dlsym(RTLD_DEFAULT, "free_sized");
  fsized(malloc(33), 33);
  void (*cf)(void *) = (void (*)(void *))dlsym(RTLD_DEFAULT, "cfree");
  cf(malloc(5));
  void *(*lm)(size_t) = (void *(*)(size_t))dlsym(RTLD_DEFAULT, "__libc_malloc");
  void (*lf)(void *) = (void (*)(void *))dlsym(RTLD_DEFAULT, "__libc_free");
  p = lm(20);
  CHECK(p != NULL);
  free(p); /* mixing __libc_malloc and free is fine */
  lf(malloc(20));
  /* Large blocks: churn (the mapping cache), growth by realloc, calloc on reused memory. */
  for (int i = 0; i < 50; i++) {
    size_t n = 200000 + (size_t)(i % 5) * 150000;
    unsigned char *b = malloc(n);
    CHECK(b != NULL && malloc_usable_size(b) >= n);
    memset(b, 0xAB, n);
    b = realloc(b, n * 3);
    CHECK(b != NULL && b[n - 1] == 0xAB);
    free(b);
    unsigned char *z = calloc(1, n);
    CHECK(z != NULL && z[0] == 0 && z[n / 2] == 0 && z[n - 1] == 0);
    free(z);
  }
  struct mallinfo2 mi = mallinfo2();
  CHECK(mi.uordblks > 0);
  CHECK(mi.hblkhd == 0); /* no large block is live any more */
  CHECK(malloc_trim(0) >= 0);

  if (failures) return 1;
  puts("ok");
  return 0;
}
