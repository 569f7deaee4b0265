/* malloc_info(3) for libmapalloc-preload.so (override*.c: preload library only): glibc's
 * XML shape, so that tools which parse it keep working, with mapalloc's own figures.
 *
 *   <malloc version="1">
 *   <heap nr="0">                       one heap: the slabs of every thread
 *   <sizes>
 *   <size from="F" to="T" total="B" count="N"/>   per size class with live blocks: F..T
 *                                        requests served by the class, N live blocks of T
 *                                        bytes (glibc lists free chunks here; we list live
 *                                        ones, which is what a reader of our table wants)
 *   <unsorted from="0" to="0" total="0" count="0"/>
 *   </sizes>
 *   <total type="fast" count="0" size="0"/>
 *   <total type="rest" count="N" size="B"/>       live small blocks and bytes
 *   <system type="current" size="S"/>              slab bytes (capacity * block size)
 *   <system type="max" size="S"/>
 *   <aspace type="total" size="C"/>               committed bytes of the slabs' segments
 *   <aspace type="mprotect" size="C"/>
 *   </heap>
 *   <total type="fast" count="0" size="0"/>
 *   <total type="rest" count="N" size="B"/>
 *   <total type="mmap" count="L" size="M"/>       live large blocks, mapped directly
 *   <system type="current" size="..."/>            committed bytes, small and large
 *   <system type="max" size="..."/>
 *   <aspace type="total" size="..."/>             reserved address space
 *   <aspace type="mprotect" size="..."/>
 *   </malloc>
 *
 * The class walk is stats_class.c's (exact when no other thread allocates meanwhile).
 * Errors: options != 0 gives EINVAL (as glibc); -1 with errno when fp cannot be written. */
#include <malloc.h>
#include <stdio.h>

#include "malloc/stats_class.h"

MA_API int malloc_info(int options, FILE *fp) {
  if (options != 0) {
    errno = EINVAL;
    return -1;
  }
  heap_class_stats cs;
  heap_class_stats_get(&cs);
  ma_heap_stats st;
  ma_heap_stats_get(&st);
  size_t lcount, lbytes, la, lf, lcached;
  huge_stats(&lcount, &lbytes, &la, &lf, &lcached);
  size_t n = 0, b = 0, slab = 0;
  int bad = 0;
  bad |= fprintf(fp, "<malloc version=\"1\">\n<heap nr=\"0\">\n<sizes>\n") < 0;
  for (unsigned c = 0; c < HEAP_NCLASSES; c++) {
    const heap_class_stat *s = &cs.cls[c];
    slab += s->slab_bytes;
    if (s->live == 0) continue;
    size_t from = c ? heap_cls_size[c - 1] + 1 : 0, to = heap_cls_size[c];
    bad |= fprintf(fp, "<size from=\"%zu\" to=\"%zu\" total=\"%zu\" count=\"%zu\"/>\n", from, to,
                   s->live * to, s->live) < 0;
    n += s->live;
    b += s->live * to;
  }
  size_t small_committed =
      st.committed > st.mapped_large + lcached ? st.committed - st.mapped_large - lcached : 0;
  bad |= fprintf(fp,
                 "<unsorted from=\"0\" to=\"0\" total=\"0\" count=\"0\"/>\n</sizes>\n"
                 "<total type=\"fast\" count=\"0\" size=\"0\"/>\n"
                 "<total type=\"rest\" count=\"%zu\" size=\"%zu\"/>\n"
                 "<system type=\"current\" size=\"%zu\"/>\n<system type=\"max\" size=\"%zu\"/>\n"
                 "<aspace type=\"total\" size=\"%zu\"/>\n<aspace type=\"mprotect\" size=\"%zu\"/>\n"
                 "</heap>\n",
                 n, b, slab, slab, small_committed, small_committed) < 0;
  bad |= fprintf(fp,
                 "<total type=\"fast\" count=\"0\" size=\"0\"/>\n"
                 "<total type=\"rest\" count=\"%zu\" size=\"%zu\"/>\n"
                 "<total type=\"mmap\" count=\"%zu\" size=\"%zu\"/>\n"
                 "<system type=\"current\" size=\"%zu\"/>\n<system type=\"max\" size=\"%zu\"/>\n"
                 "<aspace type=\"total\" size=\"%zu\"/>\n<aspace type=\"mprotect\" size=\"%zu\"/>\n"
                 "</malloc>\n",
                 n, b, lcount, lbytes, st.committed, st.committed, st.reserved, st.reserved) < 0;
  return bad ? -1 : 0;
}
