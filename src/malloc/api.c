/* The ma_* heap API: C/POSIX semantics on top of the fast paths, realloc and alignment,
 * statistics. */
#include <string.h>

#include "malloc/heap_internal.h"
#include "malloc/stats_class.h"
#include "os/os.h"

/* prof hook: a large block counted by the profiler (out of line: heap_malloc_large is
 * reached from ma_malloc's tail, which must stay frameless). */
__attribute__((noinline)) static void *heap_malloc_large_prof(size_t size, size_t align,
                                                              bool zero) {
  void *p = huge_alloc(size, align, zero);
  if (heap_unlikely(p == NULL) && heap_release_for_retry()) p = huge_alloc(size, align, zero);
  if (p) prof_note_large(p, huge_usable(p));
  return p;
}

void *heap_malloc_large(size_t size, size_t align, bool zero) {
  if (size > (size_t)PTRDIFF_MAX) {
    errno = ENOMEM;
    return NULL;
  }
  heap_global_init();
  if (heap_unlikely(prof_on)) return heap_malloc_large_prof(size, align, zero); /* prof hook */
  void *p = huge_alloc(size, align, zero);
  if (heap_unlikely(p == NULL) && heap_release_for_retry()) p = huge_alloc(size, align, zero);
  return p;
}

/* Over-aligned allocation: a slab class whose size is a multiple of `align` gives aligned
 * blocks (slabs start on 64 KiB boundaries); beyond that, an aligned mapping. */
static void *heap_malloc_aligned(size_t align, size_t size) {
  if (align <= 16) return heap_malloc_inline(size);
  if (size <= HEAP_MAX_SMALL && align <= HEAP_MAX_ALIGN) {
    unsigned c = heap_size_class(size);
    while (c < HEAP_NCLASSES && (heap_cls_size[c] & (align - 1)) != 0) c++;
    if (c < HEAP_NCLASSES) return heap_malloc_cls(c);
  }
  return heap_malloc_large(size, align, false);
}

MA_API void *ma_malloc(size_t size) {
  return heap_malloc_inline(size);
}

MA_API void ma_free(void *p) {
  heap_free_inline(p);
}

#if OBJ_SECURE
/* Secure: a size the block cannot have been asked with is a misuse. It may not exceed the
 * usable size, nor be less than what an in-place realloc leaves (ma_realloc keeps a block
 * while the new size is at least half of it; a page less for a large block). With an
 * alignment (free_aligned_sized) only the upper bound holds: an aligned block may be far
 * larger than asked for. */
void heap_free_sized_check(void *p, size_t size, size_t align) {
  if (p == NULL) return;
  size_t usable = heap_usable_size(p); /* aborts on an invalid pointer */
  size_t slack = usable > HEAP_MAX_SMALL ? os_page_size() : 16;
  size_t least = align <= 16 && usable / 2 > slack ? usable / 2 - slack : 0;
  if (size > usable || size < least) obj_fatal("free_sized with a wrong size", p);
}
#endif

MA_API void ma_free_sized(void *p, size_t size) {
#if OBJ_SECURE
  heap_free_sized_check(p, size, 0);
#endif
  (void)size;
  heap_free_inline(p);
}

MA_API void *ma_calloc(size_t n, size_t size) {
  size_t total;
  if (__builtin_mul_overflow(n, size, &total)) {
    errno = ENOMEM;
    return NULL;
  }
  if (heap_likely(total <= HEAP_MAX_SMALL)) {
    unsigned c = heap_size_class(total);
    void *p = heap_malloc_cls(c);
    if (heap_unlikely(p == NULL)) return NULL;
    memset(p, 0, total); /* (a cached block may come from anywhere) */
    return p;
  }
  return heap_malloc_large(total, 0, true); /* no memset on fresh pages from the OS */
}

MA_API size_t ma_usable_size(const void *p) {
  return heap_usable_size(p);
}

MA_API void *ma_realloc(void *p, size_t size) {
  if (p == NULL) return heap_malloc_inline(size);
  if (size == 0) { /* glibc: realloc(p, 0) frees p and returns NULL */
    heap_free_inline(p);
    return NULL;
  }
  size_t old = heap_usable_size(p); /* aborts on a pointer that is not ours */
  if (old > HEAP_MAX_SMALL && size > HEAP_MAX_SMALL) {
    if (size <= old && size >= old / 2) return p; /* no system call for a small shrink */
    /* A block that keeps growing at least doubles: a loop of small reallocs then costs a
     * logarithmic number of mremaps (the slack is address space, untouched until used). */
    bool doubles = size > old && size < 2 * old && old <= ((size_t)1 << 40);
    if (doubles && obj_space_tight()) doubles = false; /* near RLIMIT_AS: no slack */
    bool moved;
    uint32_t prof_token = heap_unlikely(prof_on) ? prof_forget_large(p) : 0; /* prof hook */
    void *q = huge_realloc(p, size, doubles ? 2 * old : size, &moved);
    if (!q && doubles) q = huge_realloc(p, size, size, &moved); /* the slack did not fit */
    if (heap_unlikely(prof_on)) { /* prof hook: a realloc is a new allocation */
      if (q)
        prof_note_large(q, huge_usable(q));
      else
        prof_large_restore(p, prof_token);
    }
    return q;
  }
  /* Stay in place while the block fits and is not more than twice what is needed. */
  if (size <= old && (old <= HEAP_MAX_SMALL ? size >= old / 2 : false)) return p;
  /* A small block growing past the slab classes is likely to keep growing: it goes where
   * cached pages lie behind it (huge_realloc then grows it in place). */
  void *q = size > HEAP_MAX_SMALL && old <= HEAP_MAX_SMALL ? huge_alloc_growing(size)
                                                           : heap_malloc_inline(size);
  if (!q) return NULL;
  if (heap_unlikely(prof_on) && size > HEAP_MAX_SMALL && old <= HEAP_MAX_SMALL)
    prof_note_large(q, huge_usable(q)); /* prof hook: huge_alloc_growing */
  memcpy(q, p, size < old ? size : old);
  heap_free_inline(p);
  return q;
}

MA_API void *ma_reallocarray(void *p, size_t n, size_t size) {
  size_t total;
  if (__builtin_mul_overflow(n, size, &total)) {
    errno = ENOMEM;
    return NULL;
  }
  return ma_realloc(p, total);
}

MA_API void *ma_aligned_alloc(size_t align, size_t size) {
  if (align == 0 || (align & (align - 1)) != 0) {
    errno = EINVAL;
    return NULL;
  }
  return heap_malloc_aligned(align, size);
}

MA_API int ma_posix_memalign(void **out, size_t align, size_t size) {
  if (align < sizeof(void *) || (align & (align - 1)) != 0) return EINVAL;
  int saved = errno;
  void *p = heap_malloc_aligned(align, size);
  if (!p) {
    errno = saved;
    return ENOMEM;
  }
  *out = p;
  return 0;
}

/* memalign/valloc/pvalloc semantics for override.c, glibc's: a non-power-of-two alignment
 * is rounded up, one above 2^63 (which cannot be) is EINVAL, 2^63 itself ENOMEM. */
void *heap_memalign(size_t align, size_t size) {
  if (align > ((size_t)1 << 63)) {
    errno = EINVAL;
    return NULL;
  }
  if (align & (align - 1)) align = (size_t)1 << (64 - __builtin_clzl(align));
  return heap_malloc_aligned(align, size);
}

/* ------------------------------------------------------------------------------------
 * Statistics
 * ---------------------------------------------------------------------------------- */
MA_API void ma_heap_stats_get(ma_heap_stats *out) {
  size_t allocated, allocs, frees, retained, hcount, hbytes, hallocs, hfrees, hcached;
  heap_sum_counters(&allocated, &allocs, &frees, &retained);
  huge_stats(&hcount, &hbytes, &hallocs, &hfrees, &hcached);
  size_t committed = __atomic_load_n(&heap_space.committed, __ATOMIC_RELAXED);
  out->allocated = allocated + hbytes;
  out->active = (committed > retained ? committed - retained : 0) + hbytes;
  out->committed = committed + hbytes + hcached;
  out->reserved = __atomic_load_n(&heap_space.reserved, __ATOMIC_RELAXED) + hbytes + hcached;
  out->mapped_large = hbytes;
  out->allocs = allocs + hallocs;
  out->frees = frees + hfrees;
  out->purges =
      atomic_load(&heap_stat_purges) + __atomic_load_n(&heap_space.purges, __ATOMIC_RELAXED);
}

static void print_row(int fd, const char *name, size_t v, bool bytes, const char *desc) {
  char num[40];
  size_t k;
  const char *unit = bytes ? " B  " : "    ";
  if (bytes && v >= (size_t)10 << 20) {
    v >>= 20;
    unit = " MiB";
  } else if (bytes && v >= (size_t)10 << 10) {
    v >>= 10;
    unit = " KiB";
  }
  k = obj_fmt_uint(num, v, 10);
  char line[160];
  size_t n = 0;
  line[n++] = ' ';
  line[n++] = ' ';
  for (const char *s = name; *s; s++) line[n++] = *s;
  while (n < 16) line[n++] = ' ';
  for (size_t pad = k; pad < 12; pad++) line[n++] = ' ';
  memcpy(line + n, num, k);
  n += k;
  for (const char *s = unit; *s; s++) line[n++] = *s;
  line[n++] = ' ';
  line[n++] = ' ';
  for (const char *s = desc; *s && n < sizeof line - 2; s++) line[n++] = *s;
  line[n++] = '\n';
  line[n] = 0;
  obj_write_str(fd, line);
}

MA_API void ma_heap_stats_print(int fd) {
  ma_heap_stats st;
  ma_heap_stats_get(&st);
  heap_stats_header(fd); /* "mapalloc heap statistics of COMM (pid N)" */
  print_row(fd, "allocated", st.allocated, true, "bytes in live blocks");
  print_row(fd, "active", st.active, true, "committed minus empty slabs kept for reuse");
  print_row(fd, "committed", st.committed, true, "mapped and not purged");
  print_row(fd, "reserved", st.reserved, true, "address space held");
  print_row(fd, "mapped_large", st.mapped_large, true, "large blocks mapped directly");
  print_row(fd, "allocs", st.allocs, false, "allocations");
  print_row(fd, "frees", st.frees, false, "frees");
  print_row(fd, "purges", st.purges, false, "purge passes (empty slabs returned to the OS)");
  print_row(fd, "heaps", atomic_load(&heap_stat_heaps), false, "thread heaps created");
  heap_class_stats_print(fd); /* the table per size class, the large-block line */
}
