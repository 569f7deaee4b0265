/* One classic heap misuse per run, done through the standard malloc family so that any
 * allocator can be preloaded under it (tests/misuse/run.sh runs every case in a child
 * process per allocator).
 *
 * Usage: misuse_case <case>. After the misuse the program keeps allocating, looking for
 * the damage a missed misuse does (a block handed out twice, a pointer that is not the
 * allocator's). Exit status: it does not return at all if the allocator stopped the
 * misuse (abort with a message, or a fault); 2 when it saw a duplicate or wild pointer;
 * 0 when it finished without noticing anything (the misuse went unstopped but did no
 * visible harm yet); 64 on bad usage. */
#include <dlfcn.h>
#include <malloc.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Kept out of the optimiser's sight: the compiler must not reason about the misuse. */
static void *volatile sink;
static void *(*volatile do_malloc)(size_t) = malloc;
static void (*volatile do_free)(void *) = free;

/* Where a forged free-list link points: memory the allocator never handed out. */
static _Alignas(64) char target[4096];

static int report(const char *what) {
  printf("not stopped: %s\n", what);
  fflush(stdout);
  return 2;
}

/* Allocates n blocks of `size`; true if two are equal or one is `wild`. */
static bool allocs_show_damage(size_t size, int n, const void *wild) {
  void *v[64];
  bool bad = false;
  for (int i = 0; i < n; i++) {
    v[i] = do_malloc(size);
    if (v[i] == NULL || v[i] == wild || ((char *)v[i] >= target && (char *)v[i] < target + 4096))
      bad = true;
    for (int j = 0; j < i; j++) bad |= v[i] == v[j];
  }
  return bad;
}

static int double_free_small(void) {
  void *p = do_malloc(32);
  do_free(p);
  do_free(p);
  return allocs_show_damage(32, 4, NULL) ? report("duplicate block") : 0;
}

/* The second free comes after other frees and allocations of other sizes. */
static int double_free_delayed(void) {
  void *p = do_malloc(48), *q = do_malloc(48);
  do_free(p);
  do_free(q);
  for (int i = 0; i < 8; i++) sink = do_malloc(200);
  do_free(p);
  return allocs_show_damage(48, 4, NULL) ? report("duplicate block") : 0;
}

static int double_free_large(void) {
  void *p = do_malloc(1 << 20);
  memset(p, 1, 1 << 20);
  do_free(p);
  do_free(p);
  return allocs_show_damage(1 << 20, 3, NULL) ? report("duplicate block") : 0;
}

static int free_interior(void) {
  char *p = do_malloc(64);
  memset(p, 0, 64);
  do_free(p + 16);
  return allocs_show_damage(48, 4, p + 16) ? report("interior pointer handed out") : 0;
}

static int free_stack(void) {
  _Alignas(16) char buf[256];
  memset(buf, 0, sizeof buf);
  do_free(buf + 32);
  return allocs_show_damage(200, 4, buf + 32) ? report("stack pointer handed out") : 0;
}

/* A dangling pointer writes a plausible address (an attacker's choice) over the first word
 * of a freed block, where allocators keep the free-list link. */
static int uaf_link(void) {
  void *q = do_malloc(32), *p = do_malloc(32);
  do_free(q);
  do_free(p);
  *(void *volatile *)p = target + 64;
  return allocs_show_damage(32, 4, target + 64) ? report("wild pointer handed out") : 0;
}

/* A linear overflow: the bytes right after the end of a large block. Another large block
 * is allocated first, so memory follows the block (mappings grow downwards). */
static int overflow_large(void) {
  size_t n = 1 << 20, ps = (size_t)sysconf(_SC_PAGESIZE);
  char *a = do_malloc(n), *b = do_malloc(n);
  sink = a;
  size_t u = malloc_usable_size(b);
  for (size_t i = u; i < u + 2 * ps; i++) ((volatile char *)b)[i] = 'x';
  return allocs_show_damage(n, 2, NULL) ? report("duplicate block") : 0;
}

/* free_sized (C23) with a size the block was not allocated with. Without free_sized in
 * the C library, plain free (which cannot check). */
static int free_sized_mismatch(void) {
  void (*fs)(void *, size_t) = (void (*)(void *, size_t))dlsym(RTLD_DEFAULT, "free_sized");
  void *p = do_malloc(48);
  if (fs)
    fs(p, 4096);
  else
    do_free(p);
  return allocs_show_damage(48, 4, NULL) ? report("duplicate block") : 0;
}

static const struct {
  const char *name;
  int (*run)(void);
} cases[] = {
    {"double_free_small", double_free_small},
    {"double_free_delayed", double_free_delayed},
    {"double_free_large", double_free_large},
    {"free_interior", free_interior},
    {"free_stack", free_stack},
    {"uaf_link", uaf_link},
    {"overflow_large", overflow_large},
    {"free_sized_mismatch", free_sized_mismatch},
};

int main(int argc, char **argv) {
  if (argc == 2 && strcmp(argv[1], "--list") == 0) {
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) puts(cases[i].name);
    return 0;
  }
  for (size_t i = 0; argc == 2 && i < sizeof cases / sizeof cases[0]; i++)
    if (strcmp(argv[1], cases[i].name) == 0) return cases[i].run();
  fprintf(stderr, "usage: misuse_case <case> | --list\n");
  return 64;
}
