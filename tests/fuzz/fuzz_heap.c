/* libFuzzer target for the heap (include/mapalloc/heap.h).
 *
 * The input is a program of operations on up to NSLOTS live blocks: malloc, calloc,
 * realloc, aligned_alloc, posix_memalign, free, free_sized, usable_size, collect, and a
 * batch of frees and mallocs run by a short-lived second thread (remote frees, abandoned
 * and adopted heaps). A shadow records each block's id and requested size; every block is
 * filled with a pattern derived from its id and checked before it is freed or resized
 * (realloc keeps the contents up to the smaller size), calloc must return zeros, alignment
 * and usable_size >= size are checked on every allocation. Everything is freed at the end
 * of the input; the heap's `allocated` statistic must be back where it started, and after
 * ma_heap_collect(true) nothing may stay committed or reserved. */
#include <errno.h>
#include <stdint.h>
#include <pthread.h>
#include <stdbool.h>
#include <string.h>

#include "fuzz_common.h"
#include "mapalloc/heap.h"

enum { NSLOTS = 64, SMALL_CHECK = 8192, EDGE = 4096, NCHUNKS = 8, CHUNK = 64 };

typedef struct blk {
  unsigned char *p;
  size_t size;
  uint32_t id;
} blk;

static blk slots[NSLOTS];
static uint32_t next_id;

/* Calls fn on the byte ranges of a block of `size` that carry its pattern: all of a small
 * block, the head, the tail and a few chunks inside a large one (touching every page of a
 * 2 MiB block would cost more than the allocation). */
static void ranges(size_t size, uint32_t id, void (*fn)(size_t from, size_t to, void *), void *c) {
  if (size <= SMALL_CHECK) {
    fn(0, size, c);
    return;
  }
  fn(0, EDGE, c);
  fn(size - EDGE, size, c);
  for (uint32_t k = 0; k < NCHUNKS; k++) {
    size_t at = (size_t)(fz_pattern(id, k) * 0x10001u + k * 977u) * 31u % (size - CHUNK);
    fn(at, at + CHUNK, c);
  }
}

typedef struct fill_ctx {
  unsigned char *p;
  uint32_t id;
  size_t limit; /* check: only bytes below it */
  const char *what;
} fill_ctx;

static void fill_range(size_t from, size_t to, void *c) {
  fill_ctx *f = c;
  for (size_t j = from; j < to; j++) f->p[j] = fz_pattern(f->id, j);
}

static void check_range(size_t from, size_t to, void *c) {
  fill_ctx *f = c;
  if (to > f->limit) to = f->limit;
  for (size_t j = from; j < to; j++)
    FZ_CHECK(f->p[j] == fz_pattern(f->id, j), "%s: block id %u byte %zu is %#x, want %#x", f->what,
             f->id, j, f->p[j], fz_pattern(f->id, j));
}

static void zero_range(size_t from, size_t to, void *c) {
  fill_ctx *f = c;
  for (size_t j = from; j < to; j++)
    FZ_CHECK(f->p[j] == 0, "calloc: byte %zu of %p is %#x", j, (void *)f->p, f->p[j]);
}

static void fill(blk *b) {
  fill_ctx f = {b->p, b->id, b->size, ""};
  ranges(b->size, b->id, fill_range, &f);
}

static void check(const blk *b, const unsigned char *at, size_t limit, const char *what) {
  fill_ctx f = {(unsigned char *)at, b->id, limit, what};
  ranges(b->size, b->id, check_range, &f);
}

/* A new block of `size` at p: alignment, usable size, the whole usable size writable. */
static void adopt(blk *b, void *p, size_t size, size_t align, uint32_t id) {
  FZ_CHECK(((uintptr_t)p & 15) == 0, "%p not 16-byte aligned (size %zu)", p, size);
  FZ_CHECK(((uintptr_t)p & (align - 1)) == 0, "%p not aligned to %zu", p, align);
  size_t us = ma_usable_size(p);
  FZ_CHECK(us >= size, "usable_size %zu < size %zu", us, size);
  if (us > size) ((unsigned char *)p)[us - 1] = 0xA5; /* the slack is the caller's too */
  b->p = p;
  b->size = size;
  b->id = id;
  fill(b);
}

static void release(blk *b, bool sized) {
  if (!b->p) return;
  check(b, b->p, b->size, "before free");
  if (sized)
    ma_free_sized(b->p, b->size);
  else
    ma_free(b->p);
  b->p = NULL;
}

/* Sizes: mostly small, some around the largest slab class, a few mapped directly. */
static size_t read_size(fz_in *in) {
  uint8_t c = fz_u8(in);
  uint16_t v = fz_u16(in);
  switch (c & 7) {
  case 0:
  case 1:
  case 2:
  case 3:
    return v % 257;
  case 4:
  case 5:
    return v % 4097;
  case 6:
    return (size_t)v * 2 % ((128u << 10) + 512);
  default:
    return (128u << 10) + ((size_t)v << 5);
  }
}

static void do_malloc(blk *b, size_t size) {
  release(b, false);
  void *p = ma_malloc(size);
  FZ_CHECK(p != NULL, "malloc(%zu) failed: errno %d", size, errno);
  adopt(b, p, size, 16, next_id++);
}

static void do_calloc(blk *b, size_t n, size_t size) {
  release(b, false);
  void *p = ma_calloc(n, size);
  FZ_CHECK(p != NULL, "calloc(%zu, %zu) failed: errno %d", n, size, errno);
  fill_ctx f = {p, 0, 0, "calloc"};
  ranges(n * size, 0, zero_range, &f);
  adopt(b, p, n * size, 16, next_id++);
}

static void do_realloc(blk *b, size_t size) {
  if (!b->p) {
    void *p = ma_realloc(NULL, size);
    FZ_CHECK(p != NULL, "realloc(NULL, %zu) failed", size);
    adopt(b, p, size, 16, next_id++);
    return;
  }
  check(b, b->p, b->size, "before realloc");
  if (size == 0) { /* frees, as glibc */
    FZ_CHECK(ma_realloc(b->p, 0) == NULL, "realloc(p, 0) returned a block");
    b->p = NULL;
    return;
  }
  unsigned char *p = ma_realloc(b->p, size);
  FZ_CHECK(p != NULL, "realloc(%zu -> %zu) failed: errno %d", b->size, size, errno);
  check(b, p, size < b->size ? size : b->size, "after realloc");
  adopt(b, p, size, 16, b->id); /* same pattern: the preserved part already has it */
}

static void do_aligned(blk *b, fz_in *in, bool posix) {
  size_t align = (size_t)1 << (fz_u8(in) % 23);
  size_t size = read_size(in);
  release(b, false);
  void *p = NULL;
  if (posix) {
    int r = ma_posix_memalign(&p, align, size);
    if (align < sizeof(void *)) {
      FZ_CHECK(r == EINVAL, "posix_memalign(%zu) gave %d, want EINVAL", align, r);
      return;
    }
    FZ_CHECK(r == 0, "posix_memalign(%zu, %zu) failed: %d", align, size, r);
  } else {
    p = ma_aligned_alloc(align, size);
    FZ_CHECK(p != NULL, "aligned_alloc(%zu, %zu) failed: errno %d", align, size, errno);
  }
  adopt(b, p, size, align, next_id++);
}

/* The second thread: frees the chosen blocks (remote frees) and allocates new ones into
 * the chosen empty slots; its heap is abandoned when it exits and adopted later. */
typedef struct remote_job {
  uint64_t free_mask, alloc_mask;
  size_t size;
} remote_job;

static void *remote_main(void *arg) {
  remote_job *j = arg;
  for (int i = 0; i < NSLOTS; i++)
    if (j->free_mask >> i & 1) release(&slots[i], false);
  for (int i = 0; i < NSLOTS; i++)
    if ((j->alloc_mask >> i & 1) && !slots[i].p) do_malloc(&slots[i], j->size + (size_t)i * 24);
  return NULL;
}

static void do_remote(fz_in *in) {
  remote_job j = {(uint64_t)fz_u32(in) << 32 | fz_u32(in), fz_u32(in), read_size(in)};
  if (j.size > (128u << 10)) j.size = 100;
  pthread_t t;
  FZ_CHECK(pthread_create(&t, NULL, remote_main, &j) == 0, "pthread_create");
  pthread_join(t, NULL);
}

/* Requests that must fail with the documented errno and leave the block b untouched. */
static void do_bad(blk *b) {
  void *q = b->p;
  errno = 0;
  FZ_CHECK(ma_malloc(SIZE_MAX) == NULL && errno == ENOMEM, "malloc(SIZE_MAX)");
  errno = 0;
  FZ_CHECK(ma_malloc((size_t)PTRDIFF_MAX + 1) == NULL && errno == ENOMEM, "malloc(> PTRDIFF_MAX)");
  errno = 0;
  FZ_CHECK(ma_calloc(SIZE_MAX / 2, 3) == NULL && errno == ENOMEM, "calloc overflow");
  errno = 0;
  FZ_CHECK(ma_aligned_alloc(48, 16) == NULL && errno == EINVAL, "aligned_alloc(48)");
  FZ_CHECK(ma_posix_memalign(&q, 4, 16) == EINVAL && q == b->p, "posix_memalign(4)");
  if (!b->p) return;
  errno = 0;
  FZ_CHECK(ma_reallocarray(b->p, SIZE_MAX / 2, 3) == NULL && errno == ENOMEM, "reallocarray");
  errno = 0;
  FZ_CHECK(ma_realloc(b->p, SIZE_MAX - 4096) == NULL && errno == ENOMEM, "realloc(huge)");
  check(b, b->p, b->size, "after failed realloc");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fz_in in = {data, size};
  ma_heap_stats st0, st1;
  ma_heap_stats_get(&st0);
  next_id = 1;
  while (fz_more(&in)) {
    uint8_t op = fz_u8(&in);
    blk *b = &slots[fz_u8(&in) % NSLOTS];
    switch (op % 13) {
    case 0:
    case 1:
      do_malloc(b, read_size(&in));
      break;
    case 2: {
      size_t n = fz_u8(&in) % 17, s = read_size(&in) % 4097;
      do_calloc(b, n, s);
      break;
    }
    case 3:
    case 4:
      do_realloc(b, read_size(&in));
      break;
    case 5:
      do_aligned(b, &in, false);
      break;
    case 6:
      do_aligned(b, &in, true);
      break;
    case 7:
      release(b, false);
      break;
    case 8:
      release(b, true);
      break;
    case 9:
      if (b->p) FZ_CHECK(ma_usable_size(b->p) >= b->size, "usable_size shrank");
      FZ_CHECK(ma_usable_size(NULL) == 0, "usable_size(NULL)");
      break;
    case 10:
      ma_heap_collect(op & 0x80);
      break;
    case 11:
      do_remote(&in);
      break;
    default:
      do_bad(b);
      break;
    }
  }
  for (int i = 0; i < NSLOTS; i++) release(&slots[i], (i & 1) != 0);
  ma_heap_stats_get(&st1);
  FZ_CHECK(st1.allocated == st0.allocated, "allocated %zu after freeing all, %zu before",
           st1.allocated, st0.allocated);
  /* With no live block and no other thread, a forced collect gives everything back: no
   * segment, slab or cached mapping is lost, and the next input starts from an empty heap
   * (so that a crash reproduces from its input alone). */
  ma_heap_collect(true);
  ma_heap_stats_get(&st1);
  FZ_CHECK(st1.allocated == 0 && st1.active == 0 && st1.committed == 0 && st1.reserved == 0 &&
               st1.mapped_large == 0,
           "after free-all and collect(true): allocated %zu active %zu committed %zu reserved %zu "
           "large %zu",
           st1.allocated, st1.active, st1.committed, st1.reserved, st1.mapped_large);
  return 0;
}
