/* The malloc family for libmapalloc-preload.so (compiled only into that library, with
 * MA_OVERRIDE=1): every entry point glibc and programs use, including the __libc_* names,
 * so that no allocation escapes to glibc's malloc and no block of ours reaches glibc's
 * free. C++ operator new/delete need nothing here: libstdc++ implements them with malloc
 * and free, which resolve to these. */
#include <malloc.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "malloc/heap_internal.h"
#include "os/os.h"

/* Not declared by glibc 2.36 headers. */
void free_sized(void *p, size_t size);
void free_aligned_sized(void *p, size_t align, size_t size);
void cfree(void *p);
void *__libc_malloc(size_t size);
void __libc_free(void *p);
void *__libc_calloc(size_t n, size_t size);
void *__libc_realloc(void *p, size_t size);
void *__libc_reallocarray(void *p, size_t n, size_t size);
void *__libc_memalign(size_t align, size_t size);
void *__libc_valloc(size_t size);
void *__libc_pvalloc(size_t size);
int __posix_memalign(void **out, size_t align, size_t size);
size_t __malloc_usable_size(void *p);
int __malloc_trim(size_t pad);
int reallocarr(void *ptrp, size_t n, size_t size);

MA_API void *malloc(size_t size) {
  return heap_malloc_inline(size);
}

MA_API void free(void *p) {
  heap_free_inline(p);
}

MA_API void *calloc(size_t n, size_t size) {
  return ma_calloc(n, size);
}

MA_API void *realloc(void *p, size_t size) {
  return ma_realloc(p, size);
}

MA_API void *reallocarray(void *p, size_t n, size_t size) {
  return ma_reallocarray(p, n, size);
}

/* NetBSD's reallocarr: *ptrp is resized in place of the caller; 0 or an errno value
 * (EOVERFLOW, ENOMEM) is returned, *ptrp and errno are untouched on failure. n or size 0
 * frees the block and stores NULL. */
MA_API int reallocarr(void *ptrp, size_t n, size_t size) {
  int saved = errno;
  void *old;
  memcpy(&old, ptrp, sizeof old);
  if (n == 0 || size == 0) {
    ma_free(old);
    void *null = NULL;
    memcpy(ptrp, &null, sizeof null);
    return 0;
  }
  size_t total;
  if (__builtin_mul_overflow(n, size, &total)) return EOVERFLOW;
  void *p = ma_realloc(old, total);
  if (!p) {
    errno = saved;
    return ENOMEM;
  }
  memcpy(ptrp, &p, sizeof p);
  errno = saved;
  return 0;
}

MA_API int posix_memalign(void **out, size_t align, size_t size) {
  return ma_posix_memalign(out, align, size);
}

MA_API void *aligned_alloc(size_t align, size_t size) {
  return ma_aligned_alloc(align, size);
}

MA_API void *memalign(size_t align, size_t size) {
  return heap_memalign(align, size);
}

MA_API void *valloc(size_t size) {
  return heap_memalign(os_page_size(), size);
}

MA_API void *pvalloc(size_t size) {
  size_t ps = os_page_size();
  size_t r = (size + ps - 1) & ~(ps - 1);
  if (r < size) {
    errno = ENOMEM;
    return NULL;
  }
  return heap_memalign(ps, r ? r : ps);
}

MA_API size_t malloc_usable_size(void *p) {
  return ma_usable_size(p);
}

MA_API void free_sized(void *p, size_t size) {
  ma_free_sized(p, size);
}

MA_API void free_aligned_sized(void *p, size_t align, size_t size) {
#if OBJ_SECURE
  heap_free_sized_check(p, size, align);
#endif
  (void)align, (void)size;
  heap_free_inline(p);
}

MA_API void cfree(void *p) {
  heap_free_inline(p);
}

MA_API int malloc_trim(size_t pad) {
  (void)pad;
  int saved = errno;
  size_t n = heap_collect_all(true);
  errno = saved;
  return n > 0;
}

MA_API void malloc_stats(void) {
  ma_heap_stats_print(2);
}

MA_API struct mallinfo2 mallinfo2(void) {
  ma_heap_stats st;
  ma_heap_stats_get(&st);
  size_t hcount, hbytes, ha, hf, hc;
  huge_stats(&hcount, &hbytes, &ha, &hf, &hc);
  struct mallinfo2 mi;
  memset(&mi, 0, sizeof mi);
  mi.arena = st.committed - st.mapped_large;
  mi.hblks = hcount;
  mi.hblkhd = st.mapped_large;
  mi.uordblks = st.allocated - st.mapped_large;
  mi.fordblks = mi.arena > mi.uordblks ? mi.arena - mi.uordblks : 0;
  return mi;
}

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
MA_API struct mallinfo mallinfo(void) {
  struct mallinfo2 m2 = mallinfo2();
  struct mallinfo mi;
  memset(&mi, 0, sizeof mi);
  mi.arena = (int)m2.arena;
  mi.hblks = (int)m2.hblks;
  mi.hblkhd = (int)m2.hblkhd;
  mi.uordblks = (int)m2.uordblks;
  mi.fordblks = (int)m2.fordblks;
  return mi;
}
#pragma GCC diagnostic pop

/* glibc-internal names (used by older loaders and by programs that bypass malloc). Plain
 * wrappers rather than aliases: glibc's headers give the targets attributes an alias would
 * have to repeat. */
MA_API void *__libc_malloc(size_t size) {
  return heap_malloc_inline(size);
}
MA_API void __libc_free(void *p) {
  heap_free_inline(p);
}
MA_API void *__libc_calloc(size_t n, size_t size) {
  return ma_calloc(n, size);
}
MA_API void *__libc_realloc(void *p, size_t size) {
  return ma_realloc(p, size);
}
MA_API void *__libc_reallocarray(void *p, size_t n, size_t size) {
  return ma_reallocarray(p, n, size);
}
MA_API void *__libc_memalign(size_t align, size_t size) {
  return heap_memalign(align, size);
}
MA_API void *__libc_valloc(size_t size) {
  return heap_memalign(os_page_size(), size);
}
MA_API void *__libc_pvalloc(size_t size) {
  return pvalloc(size);
}
MA_API int __posix_memalign(void **out, size_t align, size_t size) {
  return ma_posix_memalign(out, align, size);
}
MA_API size_t __malloc_usable_size(void *p) {
  return ma_usable_size(p);
}
MA_API int __malloc_trim(size_t pad) {
  return malloc_trim(pad);
}
