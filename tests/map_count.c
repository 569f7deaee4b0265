/* The heap grown past vm.max_map_count in secure mode (issue 12, item 4). Secure mode
 * costs about two kernel mappings per slab (the slab and its guard page), so a process
 * reaches the default limit (65530) near 2 GiB of small blocks. Rather than allocating
 * that much, a forked child first fills the map count with mappings of its own (every
 * other page of a PROT_NONE region made readable: no memory) up to HEADROOM mappings below
 * the limit, then allocates 64-byte blocks until ma_malloc says no, and checks that
 *   - the failure is NULL with errno ENOMEM (no crash, no abort);
 *   - every block frees, and free() leaves errno alone;
 *   - the heap is usable again at the limit after the frees;
 *   - once the filler is gone and the heap collected, no unmap is pending in the page layer
 *     and the mapping count is back near its start (nothing leaked, no range forgotten);
 *   - the heap then fits at least as many blocks as at the limit;
 * and in between, at the limit, allocates large blocks and frees every other one (see
 * large_blocks: without guard pages this is where the kernel refuses unmaps for real).
 * /proc/sys/vm/max_map_count is global and is only read. Run with MAPALLOC_SECURE=1 (or a
 * secure build); with MAPALLOC_SECURE=0 in a default build it must see more than 64 unmaps
 * refused by the kernel, which the page layer's old 64-entry table dropped. Usage: map_count
 * [HEADROOM]   (default 3000). Exit status 0 on success.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "mapalloc/heap.h"
#include "mapalloc/pages.h"
#include "obj/obj.h"
#include "os/os.h"

#define FAIL(...)                                                                                  \
  do {                                                                                             \
    fprintf(stderr, "map_count: FAIL: " __VA_ARGS__);                                              \
    fputc('\n', stderr);                                                                           \
    _exit(1);                                                                                      \
  } while (0)

static int count_cb(const ma_area *a, void *ctx) {
  (void)a;
  ++*(size_t *)ctx;
  return 0;
}

static size_t map_count(void) {
  size_t n = 0;
  int r = ma_areas_query(0, 0, UINTPTR_MAX, count_cb, &n);
  if (r != 0) FAIL("reading /proc/self/maps: %d", r);
  return n;
}

static int bytes_cb(const ma_area *a, void *ctx) {
  if (strcmp(a->path, "[stack]") != 0 && strcmp(a->path, "[heap]") != 0)
    *(size_t *)ctx += a->end - a->start;
  return 0;
}

/* Bytes mapped, the stack and the brk heap left out (they grow on their own). */
static size_t map_bytes(void) {
  size_t n = 0;
  int r = ma_areas_query(0, 0, UINTPTR_MAX, bytes_cb, &n);
  if (r != 0) FAIL("reading /proc/self/maps: %d", r);
  return n;
}

/* Large blocks at the limit: without guard pages (a default run) neighbouring blocks share
 * one kernel mapping, so freeing every other one asks for unmaps in the middle of a
 * mapping, which the kernel refuses at the limit (a split). Those ranges must be kept
 * (their pages given back) and unmapped once the limit is gone. Returns the refusals. */
enum { LARGE_MAX = 400, LARGE = 256 << 10 };
static void *large[LARGE_MAX];
static size_t large_blocks(void) {
  size_t n = 0;
  while (n < LARGE_MAX && (large[n] = ma_malloc(LARGE)) != NULL) {
    memset(large[n], 0x5a, ma_page_size());
    memset((char *)large[n] + LARGE - 64, 0x5a, 64);
    n++;
  }
  if (n < 8) FAIL("%zu large blocks at the limit", n);
  errno = 4242;
  for (size_t i = 1; i < n; i += 2) ma_free(large[i]);
  ma_heap_collect(true);
  if (errno != 4242) FAIL("free/collect of large blocks changed errno to %d", errno);
  size_t pending = os_release_pending();
  unsigned char vec[LARGE >> 12];
  size_t resident = 0, mapped = 0;
  for (size_t i = 1; i < n; i += 2) {
    if (mincore(large[i], LARGE, vec) != 0) continue; /* unmapped */
    mapped++;
    for (size_t j = 0; j < sizeof vec; j++) resident += vec[j] & 1;
  }
  printf("map_count: %zu large blocks at the limit; freeing every other one: %zu unmaps "
         "pending, %zu freed blocks still mapped with %zu resident pages\n",
         n, pending, mapped, resident);
  if (resident > mapped) FAIL("a refused block kept more than its node page resident");
  for (size_t i = 0; i < n; i += 2) ma_free(large[i]);
  ma_heap_collect(true);
  return pending;
}

enum { MAX_BLOCKS = 1 << 22, BLOCK = 64 };
static void *blocks[MAX_BLOCKS];

/* Allocates until NULL; returns the count. */
static size_t fill_heap(const char *when) {
  size_t n = 0;
  errno = 0;
  while (n < MAX_BLOCKS) {
    void *p = ma_malloc(BLOCK);
    if (!p) break;
    memset(p, 0x5a, BLOCK);
    blocks[n++] = p;
  }
  if (n == MAX_BLOCKS) FAIL("%s: %d blocks without reaching the limit", when, MAX_BLOCKS);
  if (errno != ENOMEM) FAIL("%s: malloc returned NULL with errno %d", when, errno);
  return n;
}

static void free_all(size_t n, const char *when) {
  errno = 4242;
  for (size_t i = 0; i < n; i++) ma_free(blocks[i]);
  if (errno != 4242) FAIL("%s: free changed errno to %d", when, errno);
}

static void child(size_t headroom, bool require_refusals) {
  FILE *f = fopen("/proc/sys/vm/max_map_count", "r");
  long max = 0;
  if (!f || fscanf(f, "%ld", &max) != 1 || max <= 0) FAIL("reading vm.max_map_count");
  fclose(f);
  ma_free(ma_malloc(BLOCK)); /* this thread's heap exists */
  ma_free(ma_malloc(LARGE)); /* and the large-block table */
  ma_heap_collect(true);
  size_t ps = ma_page_size(), start = map_count(), start_bytes = map_bytes();
  /* Without guard pages small blocks hardly cost mappings: fill to the limit itself. */
  if (require_refusals) headroom = 2;
  if ((size_t)max < start + headroom + 16) FAIL("vm.max_map_count %ld is too low", max);

  /* k pages made readable in a PROT_NONE region of 2k+1 pages: 2k+1 mappings. */
  size_t k = ((size_t)max - headroom - start) / 2, len = (2 * k + 1) * ps;
  char *filler = mmap(NULL, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (filler == MAP_FAILED) FAIL("filler mmap");
  for (size_t i = 0; i < k; i++)
    if (mprotect(filler + (2 * i + 1) * ps, ps, PROT_READ) != 0) FAIL("filler mprotect %zu", i);
  size_t filled = map_count();
  printf("map_count: vm.max_map_count %ld, %zu mappings at start, %zu with the filler\n", max,
         start, filled);

  size_t n1 = 0;
  if (!require_refusals) { /* secure: small blocks until the map count runs out */
    n1 = fill_heap("at the limit");
    size_t at_limit = map_count();
    printf("map_count: %zu blocks of %d B (%zu KiB) until ENOMEM at %zu mappings\n", n1, BLOCK,
           n1 * BLOCK >> 10, at_limit);
    free_all(n1, "at the limit");
    ma_heap_collect(true);
    printf("map_count: after the frees and a collect: %zu mappings, %zu unmaps pending\n",
           map_count(), os_release_pending());

    size_t n2 = fill_heap("again at the limit");
    printf("map_count: %zu blocks again at the limit\n", n2);
    if (n2 < n1 / 2) FAIL("only %zu blocks after freeing %zu at the limit", n2, n1);
    free_all(n2, "again at the limit");
    ma_heap_collect(true);
  }
  size_t refused = large_blocks();
  if (require_refusals && refused <= 64)
    FAIL("only %zu refused unmaps: the test did not reach the case it is for", refused);

  if (munmap(filler, len) != 0) FAIL("filler munmap");
  ma_heap_collect(true); /* retries what the kernel refused at the limit */
  size_t pending = os_release_pending(), end = map_count();
  printf("map_count: filler gone: %zu mappings (start %zu), %zu unmaps pending\n", end, start,
         pending);
  if (pending != 0) FAIL("%zu unmaps still pending", pending);
  if (end > start + 8) FAIL("%zu mappings left behind", end - start);
  size_t end_bytes = map_bytes();
  printf("map_count: %zu KiB mapped (start %zu KiB)\n", end_bytes >> 10, start_bytes >> 10);
  if (end_bytes > start_bytes + (1 << 20))
    FAIL("%zu KiB more mapped than at the start", (end_bytes - start_bytes) >> 10);

  size_t n3 = 0;
  for (; n3 < (n1 ? n1 : 100000); n3++) {
    blocks[n3] = ma_malloc(BLOCK);
    if (!blocks[n3]) FAIL("malloc %zu after the limit is gone: errno %d", n3, errno);
    memset(blocks[n3], 1, BLOCK);
  }
  free_all(n3, "after the limit");
  ma_heap_collect(true);
  end = map_count();
  if (end > start + 8 || os_release_pending() != 0)
    FAIL("after a last round: %zu mappings (start %zu), %zu pending", end, start,
         os_release_pending());
  fflush(stdout);
}

int main(int argc, char **argv) {
  size_t headroom = argc > 1 ? strtoul(argv[1], NULL, 10) : 3000;
  /* Secure mode is what the test is for; a run with MAPALLOC_SECURE=0 in a default build
   * (no guard pages) must reach more than 64 refused unmaps with the large blocks. */
  const char *e = getenv("MAPALLOC_SECURE");
  bool want_secure = !(e && e[0] == '0');
  if (want_secure && !obj_secure_on()) FAIL("secure mode is off: run with MAPALLOC_SECURE=1");
  fflush(NULL);
  pid_t pid = fork();
  if (pid < 0) FAIL("fork");
  if (pid == 0) {
    child(headroom, !obj_secure_on());
    _exit(0);
  }
  int st;
  if (waitpid(pid, &st, 0) != pid) FAIL("waitpid");
  if (WIFSIGNALED(st)) FAIL("the child died of signal %d", WTERMSIG(st));
  if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) return 1;
  printf("map_count: pass\n");
  return 0;
}
