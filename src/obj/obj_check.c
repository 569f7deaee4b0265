/* Object layer, part 4: consistency walks (obj_check.h) and the check failure report. */
#include "obj/obj_check.h"

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "obj/obj.h"
#include "obj/obj_internal.h"

/* Formats and writes the report (va_list taken by the caller). */
static void check_report(const char *file, int line, const char *cond, const char *fmt,
                         va_list *ap) {
  char buf[640];
  size_t n = 0;
  int k = snprintf(buf, sizeof buf, "mapalloc: check failed at %s:%d: %s (", file, line, cond);
  if (k > 0) n = (size_t)k < sizeof buf ? (size_t)k : sizeof buf - 1;
  /* clang-14's analyzer loses the va_start of the caller (valist.Uninitialized, a false
   * positive: ap is started by ma_check_fail before this call). */
  k = vsnprintf(buf + n, sizeof buf - n, fmt, *ap); // NOLINT(clang-analyzer-valist.Uninitialized)
  if (k > 0) n += (size_t)k < sizeof buf - n ? (size_t)k : sizeof buf - n - 1;
  if (n > sizeof buf - 3) n = sizeof buf - 3;
  buf[n++] = ')';
  buf[n++] = '\n';
  const char *p = buf;
  while (n > 0) {
    ssize_t w = write(2, p, n);
    if (w <= 0) break;
    p += w;
    n -= (size_t)w;
  }
}

void ma_check_fail(const char *file, int line, const char *cond, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  check_report(file, line, cond, fmt, &ap);
  va_end(ap);
  abort();
}

static size_t slab_bytes(const obj_segment *seg, const obj_slab *s) {
  char *lo, *hi;
  obj_slab_range(seg, (uint32_t)(s - seg->slabs), &lo, &hi);
  return (size_t)(hi - lo);
}

/* The link stored in b, decoded (not checked). */
static obj_block *link_of(obj_block *b) {
  obj_link_open_rt(b);
#if OBJ_SECURE
  obj_block *n = (obj_block *)((uintptr_t)b->next ^ (uintptr_t)b ^ obj_link_key);
#else
  obj_block *n = b->next;
#endif
  bool tagged = obj_block_is_free(b);
  obj_link_close_rt(b);
  MA_VERIFY(tagged, "free block %p does not carry the free tag", (void *)b);
  return n;
}

/* Length of one of s's lists (free or local_free): every block a carved block of s. */
static uint32_t list_len(const obj_slab *s, obj_block *b, const char *which) {
  uint32_t n = 0;
  while (b) {
    MA_VERIFY(obj_link_in_slab(s, b), "%s list of slab %p: %p is not a carved block", which,
              (const void *)s, (void *)b);
    MA_VERIFY(n < (unsigned)s->carved,
              "%s list of slab %p longer than its %u carved blocks (a cycle?)", which,
              (const void *)s, (unsigned)s->carved);
    n++;
    b = link_of(b);
  }
  return n;
}

static void slab_check(const obj_bins *bs, const obj_segment *seg, const obj_slab *s) {
  const void *sp = s;
  MA_VERIFY(s->bin_idx < bs->nbins, "slab %p bin %u of %u", sp, s->bin_idx, bs->nbins);
  const obj_bin *bin = &bs->bins[s->bin_idx];
  MA_VERIFY(s->stride == bin->stride, "slab %p stride %u, its bin's %u", sp, s->stride,
            bin->stride);
  MA_VERIFY(s->bin_off == bs->space->bin_off_base + ((uint32_t)s->bin_idx << OBJ_BIN_OFF_SHIFT),
            "slab %p bin_off %u idx %u", sp, (unsigned)s->bin_off, s->bin_idx);
  MA_VERIFY(s->committed, "active slab %p not committed", sp);
  char *lo, *hi;
  obj_slab_range(seg, (uint32_t)(s - seg->slabs), &lo, &hi);
  MA_VERIFY(s->start >= lo && s->start + (size_t)s->capacity * s->stride <= hi,
            "slab %p blocks [%p, +%u x %u) outside its range [%p, %p)", sp, (void *)s->start,
            s->capacity, s->stride, (void *)lo, (void *)hi);
  MA_VERIFY((unsigned)s->carved <= s->capacity, "slab %p carved %u > capacity %u", sp,
            (unsigned)s->carved, s->capacity);
  int32_t notify = s->notify;
  MA_VERIFY(notify == -1 || notify == 0 || notify == INT32_MAX,
            "slab %p notify %d (cnt %d): not -1, 0 or INT32_MAX", sp, notify, s->cnt);
  int64_t used = (int64_t)s->cnt + notify;
  MA_VERIFY(used >= 0 && used <= (unsigned)s->carved,
            "slab %p used %lld (cnt %d + notify %d), carved %u", sp, (long long)used, s->cnt,
            notify, (unsigned)s->carved);
  uint32_t nf = list_len(s, s->free, "free");
  uint32_t nl = list_len(s, s->local_free, "local_free");
  MA_VERIFY((int64_t)nf + nl + used == (unsigned)s->carved,
            "slab %p: free %u + local_free %u + used %lld (cnt %d, notify %d) != carved %u", sp, nf,
            nl, (long long)used, s->cnt, notify, (unsigned)s->carved);
  if (notify == -1)
    MA_VERIFY(bin->cur == s, "slab %p notify -1 but bin %u's current slab is %p", sp, s->bin_idx,
              (void *)bin->cur);
  else
    MA_VERIFY(bin->cur != s, "current slab %p of bin %u has notify %d", sp, s->bin_idx, notify);
  if (notify == INT32_MAX)
    MA_VERIFY(nf == 0 && nl == 0 && (unsigned)s->carved == s->capacity,
              "full slab %p has room: free %u local_free %u carved %u/%u", sp, nf, nl,
              (unsigned)s->carved, s->capacity);
  if (notify == 0)
    MA_VERIFY(used > 0 && (nf || nl || (unsigned)s->carved < s->capacity),
              "partial slab %p: used %lld, free %u local_free %u carved %u/%u", sp, (long long)used,
              nf, nl, (unsigned)s->carved, s->capacity);
}

/* A cache's byte accounting against what its slabs hold (computed by the caller). */
static void check_bytes(const obj_bins *bs, size_t retained, size_t active) {
  MA_VERIFY(bs->retained == retained, "cache %p retained %zu, empty committed slabs hold %zu",
            (const void *)bs, bs->retained, retained);
  MA_VERIFY(bs->active_bytes == active, "cache %p active_bytes %zu, active slabs hold %zu",
            (const void *)bs, bs->active_bytes, active);
  MA_VERIFY(bs->peak_bytes >= bs->active_bytes, "cache %p peak_bytes %zu < active_bytes %zu",
            (const void *)bs, bs->peak_bytes, bs->active_bytes);
}

static void segment_check(const obj_bins *bs, int kind, const obj_segment *seg,
                          const obj_segment *prev) {
  const void *g = seg;
  MA_VERIFY(seg->magic == (OBJ_SEG_MAGIC ^ (uintptr_t)seg), "segment %p magic %#llx", g,
            (unsigned long long)seg->magic);
  MA_VERIFY(((uintptr_t)seg & (OBJ_SEG_SIZE - 1)) == 0, "segment %p not aligned", g);
  MA_VERIFY(seg->space == bs->space, "segment %p space %p, its cache's %p", g, (void *)seg->space,
            (void *)bs->space);
  MA_VERIFY(seg->owner == bs, "segment %p owner %p, listed in cache %p", g, (void *)seg->owner,
            (const void *)bs);
  MA_VERIFY(seg->kind == kind, "segment %p kind %u on list %d", g, seg->kind, kind);
  MA_VERIFY(seg->prev == prev, "segment %p prev %p, walked from %p", g, (void *)seg->prev,
            (const void *)prev);
  bool solo = kind == OBJ_NSHIFTS - 1;
  MA_VERIFY(solo ? seg->slab_shift == OBJ_SHIFT_SOLO : seg->slab_shift == kind + OBJ_SLAB_MIN,
            "segment %p kind %d slab_shift %u", g, kind, seg->slab_shift);
  uint32_t nslabs = solo ? 1 : 1u << (OBJ_SEG_SHIFT - seg->slab_shift);
  MA_VERIFY(seg->nslabs == nslabs, "segment %p nslabs %u, expected %u", g, seg->nslabs, nslabs);
  /* A one-slab segment is reserved whole; another may be reserved in part, in whole slabs
   * of its window (obj_segment_grow), and once its growth failed it keeps what it has. */
  size_t slab = solo ? OBJ_SEG_SIZE : (size_t)1 << seg->slab_shift;
  MA_VERIFY(seg->size >= slab && (seg->size & (slab - 1)) == 0 &&
                (solo || seg->size <= OBJ_SEG_SIZE) && seg->area_end <= seg->size,
            "segment %p size %zu area_end %zu", g, seg->size, seg->area_end);
  MA_VERIFY(seg->slabs_max == nslabs || (seg->slabs_max < nslabs && !solo &&
                                         seg->size == (size_t)seg->slabs_max << seg->slab_shift),
            "segment %p slabs_max %u of %u, size %zu", g, seg->slabs_max, nslabs, seg->size);
  uintptr_t c0 = (uintptr_t)seg >> OBJ_SEG_SHIFT;
  for (uintptr_t c = c0; c < c0 + obj_seg_chunks(seg->size); c++) {
    uint32_t e = obj_map_entry(c);
    MA_VERIFY(e == ((uint32_t)c0 | seg->space->map_tag),
              "segment map entry of chunk %#lx is %#x, segment %p wants %#x", (unsigned long)c, e,
              g, (uint32_t)c0 | seg->space->map_tag);
  }
  uint32_t nactive = 0;
  for (uint32_t i = 0; i < nslabs; i++) {
    const obj_slab *s = &seg->slabs[i];
    bool in_mask = (seg->free_mask >> i) & 1;
    MA_VERIFY(in_mask == (!s->active && i < seg->slabs_max),
              "segment %p slab %u active %u, free_mask %#llx, slabs_max %u", g, i, s->active,
              (unsigned long long)seg->free_mask, seg->slabs_max);
    MA_VERIFY(solo || ((size_t)i << seg->slab_shift) < seg->size ||
                  (!s->active && !s->committed && !s->mapped),
              "segment %p slab %u past its reservation (%zu bytes): active %u committed %u "
              "mapped %u",
              g, i, seg->size, s->active, s->committed, s->mapped);
    if (s->active) nactive++;
  }
  if (nslabs < 64)
    MA_VERIFY((seg->free_mask >> nslabs) == 0, "segment %p free_mask %#llx past %u slabs", g,
              (unsigned long long)seg->free_mask, nslabs);
  MA_VERIFY(seg->nactive == nactive, "segment %p nactive %u, %u slabs active", g, seg->nactive,
            nactive);
}

void obj_bins_check(const obj_bins *bs, obj_check_totals *t) {
  obj_check_totals tot = {0};
  size_t retained = 0, active = 0, n0 = 0, ncur = 0;
  for (int k = 0; k < OBJ_NSHIFTS; k++) {
    const obj_segment *prev = NULL;
    for (const obj_segment *seg = bs->segs[k]; seg; prev = seg, seg = seg->next) {
      segment_check(bs, k, seg, prev);
      tot.segments++;
      tot.chunks += obj_seg_chunks(seg->size);
      tot.reserved += seg->size;
      tot.committed += seg->hdr_size;
      for (uint32_t i = 0; i < seg->nslabs; i++) {
        const obj_slab *s = &seg->slabs[i];
        size_t len = slab_bytes(seg, s);
        if (s->committed) tot.committed += len;
        if (!s->active) {
          if (s->committed) retained += len;
          MA_VERIFY((unsigned)s->carved == 0, "inactive slab %p carved %u", (const void *)s,
                    (unsigned)s->carved);
          continue;
        }
        slab_check(bs, seg, s);
        active += len;
        tot.capacity += s->capacity;
        tot.slabs++;
        if (s->notify == 0) n0++;
        if (s->notify == -1) ncur++;
      }
    }
  }
  size_t listed = 0, cur = 0;
  for (uint32_t i = 0; i < bs->nbins; i++) {
    const obj_bin *bin = &bs->bins[i];
    MA_VERIFY(bin->idx == i, "bin %u idx %u", i, bin->idx);
    if (bin->cur != &obj_empty_slab) {
      const obj_slab *s = bin->cur;
      MA_VERIFY(s->active && s->bin_idx == i && s->notify == -1 &&
                    obj_segment_of_slab(s)->owner == bs,
                "bin %u current slab %p: active %u bin %u notify %d", i, (const void *)s, s->active,
                s->bin_idx, s->notify);
      cur++;
    }
    const obj_slab *prev = NULL;
    for (const obj_slab *s = bin->partial; s; prev = s, s = s->next) {
      MA_VERIFY(s->prev == prev, "partial slab %p of bin %u: prev %p, walked from %p",
                (const void *)s, i, (void *)s->prev, (const void *)prev);
      MA_VERIFY(s->active && s->bin_idx == i && s->notify == 0 &&
                    obj_segment_of_slab(s)->owner == bs,
                "partial slab %p of bin %u: active %u bin %u notify %d", (const void *)s, i,
                s->active, s->bin_idx, s->notify);
      MA_VERIFY(++listed <= n0, "bin %u: more slabs on partial lists than with notify 0 (%zu)", i,
                n0);
    }
  }
  MA_VERIFY(listed == n0, "%zu slabs on partial lists, %zu with notify 0", listed, n0);
  MA_VERIFY(cur == ncur, "%zu current slabs, %zu with notify -1", cur, ncur);
  check_bytes(bs, retained, active);
  if (t) {
    t->segments += tot.segments;
    t->chunks += tot.chunks;
    t->reserved += tot.reserved;
    t->committed += tot.committed;
    t->capacity += tot.capacity;
    t->slabs += tot.slabs;
  }
}

void obj_bins_check_accounting(const obj_bins *bs) {
  size_t retained = 0, active = 0;
  for (int k = 0; k < OBJ_NSHIFTS; k++)
    for (const obj_segment *seg = bs->segs[k]; seg; seg = seg->next)
      for (uint32_t i = 0; i < seg->nslabs; i++) {
        const obj_slab *s = &seg->slabs[i];
        if (s->active)
          active += slab_bytes(seg, s);
        else if (s->committed)
          retained += slab_bytes(seg, s);
      }
  check_bytes(bs, retained, active);
}

size_t obj_map_check(const obj_space *sp, uint32_t tag) {
  const size_t leaf_len = (size_t)1 << OBJ_MAP_LEAF_BITS;
  const uint32_t *none = NULL; /* the shared leaf of zeros: the only leaf that repeats */
  size_t found = 0;
  for (size_t r = 0; r < OBJ_MAP_ROOT_LEN; r++) {
    const uint32_t *leaf = __atomic_load_n(&obj_segmap[r], __ATOMIC_ACQUIRE);
    if (leaf == none) continue;
    if (r + 1 < OBJ_MAP_ROOT_LEN && leaf == __atomic_load_n(&obj_segmap[r + 1], __ATOMIC_ACQUIRE)) {
      none = leaf;
      continue;
    }
    for (size_t i = 0; i < leaf_len; i++) {
      uint32_t e = __atomic_load_n(&leaf[i], __ATOMIC_RELAXED);
      if ((e & OBJ_MAP_TAGS) != tag || e == 0) continue;
      uintptr_t c = ((uintptr_t)r << OBJ_MAP_LEAF_BITS) | i, c0 = e & ~OBJ_MAP_TAGS;
      MA_VERIFY(c0 != 0 && c0 <= c, "segment map entry of chunk %#lx is %#x", (unsigned long)c, e);
      const obj_segment *seg = (const obj_segment *)(c0 << OBJ_SEG_SHIFT);
      MA_VERIFY(seg->magic == (OBJ_SEG_MAGIC ^ (uintptr_t)seg),
                "segment map entry of chunk %#lx names %p, not a live segment (magic %#llx)",
                (unsigned long)c, (const void *)seg, (unsigned long long)seg->magic);
      MA_VERIFY(seg->space == sp, "segment map entry of chunk %#lx: segment %p of space %p, not %p",
                (unsigned long)c, (const void *)seg, (void *)seg->space, (const void *)sp);
      MA_VERIFY(c < c0 + obj_seg_chunks(seg->size),
                "segment map entry of chunk %#lx: segment %p ends before it (size %zu)",
                (unsigned long)c, (const void *)seg, seg->size);
      found++;
    }
  }
  return found;
}
