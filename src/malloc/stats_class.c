/* Statistics per size class, derived from the slabs: no counter on any fast path.
 *
 * The walk visits every segment of the heap's space (each cache's segment lists, found
 * through heap_space.all_bins: threads' and parked ones) under heap_space.lock, and reads
 * each slab descriptor: used blocks = cnt + notify, slab bytes = capacity * stride. Blocks
 * in the threads' caches are used from their slabs' point of view: live blocks are the
 * used ones minus those (heap_tc_blocks).
 * Segment lists are their owners' and change without that lock, and an owner may unmap an
 * empty segment at any time, so every header is read with process_vm_readv on our own pid:
 * a segment unmapped meanwhile reads as an error instead of a fault.
 *
 * Precision: exact when no other thread allocates or frees during the walk (at exit, or
 * in a quiet process). Otherwise a snapshot in which a segment moved between lists may be
 * missed or counted twice, and "live" counts blocks freed by other threads whose remote
 * frees the owner has not collected yet (they are live until then for the slab too).
 * Sampled blocks of the heap profiler are outside the slabs and not in the table.
 */
#include "malloc/stats_class.h"

#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "obj/obj_internal.h"

/* Copies n bytes at src into dst; false when src is not (or no longer) mapped. */
static bool stats_read(void *dst, const void *src, size_t n) {
  struct iovec local = {dst, n}, remote = {(void *)(uintptr_t)src, n};
  return process_vm_readv(getpid(), &local, 1, &remote, 1, 0) == (ssize_t)n;
}

static int stats_class_of(uint32_t stride) {
  unsigned lo = 0, hi = HEAP_NCLASSES;
  while (lo < hi) {
    unsigned mid = (lo + hi) / 2;
    if (heap_cls_size[mid] < stride)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo < HEAP_NCLASSES && heap_cls_size[lo] == stride ? (int)lo : -1;
}

#define STATS_MAX_SLABS 64 /* 4 MiB / 64 KiB: the most slabs of a small-block segment */

/* Adds the slabs of the segment at seg to out; returns its successor on its list, or NULL
 * when it cannot be read (unmapped, or not a segment any more). */
static obj_segment *stats_segment(const obj_segment *seg, heap_class_stats *out) {
  obj_segment hdr = {0}; /* filled by stats_read (cppcheck cannot tell) */
  if (!stats_read(&hdr, seg, sizeof hdr) || hdr.magic != (OBJ_SEG_MAGIC ^ (uintptr_t)seg))
    return NULL;
  if (hdr.nslabs == 0 || hdr.nslabs > STATS_MAX_SLABS) return hdr.next;
  obj_slab slabs[STATS_MAX_SLABS] = {{0}};
  if (!stats_read(slabs, seg->slabs, hdr.nslabs * sizeof slabs[0])) return NULL;
  out->segments++;
  for (uint32_t i = 0; i < hdr.nslabs; i++) {
    const obj_slab *s = &slabs[i];
    if (!s->active) continue;
    int c = stats_class_of(s->stride);
    if (c < 0) continue;
    int32_t used = obj_slab_used(s);
    out->cls[c].live += used > 0 ? (size_t)used : 0;
    out->cls[c].slabs++;
    out->cls[c].slab_bytes += (size_t)s->capacity * s->stride;
  }
  return hdr.next;
}

void heap_class_stats_get(heap_class_stats *out) {
  memset(out, 0, sizeof *out);
  if (!__atomic_load_n(&heap_space.name, __ATOMIC_ACQUIRE)) return; /* no heap yet */
  size_t budget = (size_t)1 << 20; /* a list changed under us cannot make the walk loop */
  pthread_mutex_lock(&heap_space.lock);
  for (obj_bins *bs = heap_space.all_bins; bs; bs = bs->next_all) {
    for (unsigned k = 0; k < OBJ_NSHIFTS; k++) {
      obj_segment *seg = __atomic_load_n(&bs->segs[k], __ATOMIC_RELAXED);
      while (seg && budget--) seg = stats_segment(seg, out);
    }
  }
  pthread_mutex_unlock(&heap_space.lock);
  out->complete = budget > 0;
  size_t cached[HEAP_NCLASSES] = {0};
  heap_tc_blocks(cached);
  for (unsigned c = 0; c < HEAP_NCLASSES; c++)
    out->cls[c].live -= cached[c] < out->cls[c].live ? cached[c] : out->cls[c].live;
}

/* ------------------------------------------------------------------------------------
 * The table
 * ---------------------------------------------------------------------------------- */
typedef struct stats_line {
  size_t n;
  char buf[160];
} stats_line;

static void line_str(stats_line *l, const char *s) {
  while (*s && l->n < sizeof l->buf - 2) l->buf[l->n++] = *s++;
}

static void line_u64(stats_line *l, uint64_t v, size_t width) {
  char num[24];
  size_t k = obj_fmt_uint(num, v, 10);
  for (; width > k && l->n < sizeof l->buf - 2; width--) l->buf[l->n++] = ' ';
  num[k] = 0;
  line_str(l, num);
}

static void line_end(stats_line *l, int fd) {
  l->buf[l->n++] = '\n';
  l->buf[l->n] = 0;
  obj_write_str(fd, l->buf);
  l->n = 0;
}

/* Percent with one decimal, right-aligned in 7 columns. */
static void line_pct(stats_line *l, size_t part, size_t whole) {
  uint64_t t = whole ? ((uint64_t)part * 1000 + whole / 2) / whole : 0; /* tenths of % */
  line_u64(l, t / 10, 5);
  char tail[4] = {'.', (char)('0' + t % 10), '%', 0};
  line_str(l, tail);
}

void heap_stats_header(int fd) {
  char comm[64];
  obj_comm(comm, sizeof comm);
  stats_line l = {0};
  line_str(&l, "mapalloc heap statistics of ");
  line_str(&l, comm);
  line_str(&l, " (pid ");
  line_u64(&l, (uint64_t)getpid(), 0);
  line_str(&l, ")");
  line_end(&l, fd);
}

void heap_class_stats_print(int fd) {
  heap_class_stats st;
  heap_class_stats_get(&st);
  stats_line l = {0};
  obj_write_str(fd, "size classes (live blocks read from the slabs; exact when no other thread "
                    "allocates meanwhile)\n");
  obj_write_str(fd, "  class   block   live blocks    live bytes   slabs    slab bytes   "
                    "util\n");
  size_t tl = 0, tb = 0, ts = 0, tsb = 0;
  for (unsigned c = 0; c < HEAP_NCLASSES; c++) {
    const heap_class_stat *s = &st.cls[c];
    if (s->slabs == 0) continue;
    size_t bytes = s->live * heap_cls_size[c];
    line_u64(&l, c, 7);
    line_u64(&l, heap_cls_size[c], 8);
    line_u64(&l, s->live, 14);
    line_u64(&l, bytes, 14);
    line_u64(&l, s->slabs, 8);
    line_u64(&l, s->slab_bytes, 14);
    line_pct(&l, bytes, s->slab_bytes);
    line_end(&l, fd);
    tl += s->live, tb += bytes, ts += s->slabs, tsb += s->slab_bytes;
  }
  line_str(&l, "  total        ");
  line_u64(&l, tl, 14);
  line_u64(&l, tb, 14);
  line_u64(&l, ts, 8);
  line_u64(&l, tsb, 14);
  line_pct(&l, tb, tsb);
  line_end(&l, fd);
  size_t count, bytes, allocs, frees, cached;
  huge_stats(&count, &bytes, &allocs, &frees, &cached);
  line_str(&l, "  large (> 128 KiB, mapped):");
  line_u64(&l, count, 8);
  line_str(&l, " blocks,");
  line_u64(&l, bytes, 14);
  line_str(&l, " bytes live,");
  line_u64(&l, cached, 12);
  line_str(&l, " bytes cached");
  line_end(&l, fd);
  if (!st.complete) obj_write_str(fd, "  (walk cut short: the segment lists kept changing)\n");
}
