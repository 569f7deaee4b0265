/* Object layer, part 1: the segment map, segments, slab commit/decommit, instrumentation.
 * See obj.h for the model. */
#include "obj/obj.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "obj/obj_check.h"
#include "obj/obj_internal.h"

#if OBJ_ASAN
#include <sanitizer/asan_interface.h>
#endif
#ifdef MA_HAVE_VALGRIND
#include <valgrind/memcheck.h>
#endif

obj_slab obj_empty_slab = {.notify = -1};
/* Every root entry starts at this leaf of zeros ("no segment"), never written, so a lookup
 * needs no NULL test. It stays in .bss: untouched pages of it are never made resident. */
static uint32_t obj_map_none[(size_t)1 << OBJ_MAP_LEAF_BITS];
uint32_t *obj_segmap[OBJ_MAP_ROOT_LEN] = {[0 ... OBJ_MAP_ROOT_LEN - 1] = obj_map_none};
static bool obj_inited;
bool obj_tracking;
uintptr_t obj_cookie;
uintptr_t obj_link_key;
uint32_t obj_shuffle_window = OBJ_SHUFFLE_DEFAULT;
#if !OBJ_SECURE
bool obj_secure_rt;
#endif

/* The keys and the valgrind switch, set once. No lock (a fork could catch one held for
 * ever): racing threads each draw keys and the first compare-and-swap of each wins. Nothing
 * here can fail: the segment map needs no start-up reservation (obj_map_cover maps a leaf
 * when a segment first needs it). */
/* 64 random bits (getrandom); with no entropy yet (early boot) the clock mixed with
 * `salt`: weaker, still varied. */
static uint64_t random_u64(uint64_t salt) {
  uint64_t r = 0;
  if (os_random(&r, sizeof r) == 0) return r;
  return ((uint64_t)__builtin_ia32_rdtsc() ^ salt) * 0x9e3779b97f4a7c15ull;
}

int obj_global_init(void) {
  if (__atomic_load_n(&obj_inited, __ATOMIC_ACQUIRE)) return 0;
  obj_options_read(); /* the first use of the library: every option in effect from here */
  uintptr_t c[2];
  c[0] = random_u64((uintptr_t)c);
  c[1] = random_u64(c[0] ^ (uintptr_t)&obj_inited);
  uintptr_t none = 0; /* acquire on failure: the winner's key happens-before our readers */
  __atomic_compare_exchange_n(&obj_cookie, &none, c[0] | 1, false, __ATOMIC_ACQ_REL,
                              __ATOMIC_ACQUIRE);
  none = 0; /* separate from the tag key, which sits in freed blocks */
  __atomic_compare_exchange_n(&obj_link_key, &none, c[1] | 1, false, __ATOMIC_ACQ_REL,
                              __ATOMIC_ACQUIRE);
#ifdef MA_HAVE_VALGRIND
  /* MAPALLOC_TRACK=0 turns the client requests off (for callgrind/cachegrind runs). */
  __atomic_store_n(&obj_tracking, RUNNING_ON_VALGRIND != 0 && obj_opt.track != 0, __ATOMIC_RELAXED);
#endif
  __atomic_store_n(&obj_inited, true, __ATOMIC_RELEASE);
  return 0;
}

/* (obj_internal.h) A leaf is 256 KiB of zeros, mapped the first time a segment lands in its
 * 256 GiB region and never unmapped. Two threads racing for one root entry both map; the
 * loser unmaps its own. */
int obj_map_cover(uintptr_t c0, size_t n) {
  const size_t len = sizeof(uint32_t) << OBJ_MAP_LEAF_BITS;
  for (uintptr_t r = c0 >> OBJ_MAP_LEAF_BITS; r <= (c0 + n - 1) >> OBJ_MAP_LEAF_BITS; r++) {
    uint32_t *cur = __atomic_load_n(&obj_segmap[r], __ATOMIC_ACQUIRE);
    if (cur != obj_map_none) continue;
    uint32_t *leaf = os_alloc(len, 0, false);
    if (!leaf) return -ENOMEM;
    os_name(leaf, len, "mapalloc-segmap");
    if (!__atomic_compare_exchange_n(&obj_segmap[r], &cur, leaf, false, __ATOMIC_ACQ_REL,
                                     __ATOMIC_ACQUIRE))
      os_release(leaf, len);
  }
  return 0;
}

/* Sets the entries of chunks [c0, c0 + n), whose leaves obj_map_cover installed. Release:
 * a thread that finds the entry (relaxed) got the pointer through some release/acquire
 * pair after this store, so the segment header reads initialised. */
static void obj_map_set(uintptr_t c0, size_t n, uint32_t e) {
  for (uintptr_t c = c0; c < c0 + n; c++) {
    uint32_t *leaf = __atomic_load_n(&obj_segmap[c >> OBJ_MAP_LEAF_BITS], __ATOMIC_ACQUIRE);
    __atomic_store_n(&leaf[c & ((1u << OBJ_MAP_LEAF_BITS) - 1)], e, __ATOMIC_RELEASE);
  }
}

size_t obj_fmt_uint(char *buf, uint64_t v, unsigned base) {
  char tmp[24];
  size_t n = 0;
  do {
    tmp[n++] = "0123456789abcdef"[v % base];
    v /= base;
  } while (v);
  for (size_t i = 0; i < n; i++) buf[i] = tmp[n - 1 - i];
  return n;
}

/* No stdio: a misuse may be reported from a corrupted heap or a signal handler. */
void obj_fatal(const char *what, const void *p) {
  char buf[96];
  size_t n = 0;
  for (const char *s = "mapalloc: "; *s; s++) buf[n++] = *s;
  while (*what && n < 60) buf[n++] = *what++;
  for (const char *s = " of 0x"; *s; s++) buf[n++] = *s;
  n += obj_fmt_uint(buf + n, (uintptr_t)p, 16);
  buf[n++] = '\n';
  ssize_t w = write(2, buf, n);
  (void)w;
  abort();
}

#if !OBJ_SECURE
obj_block *obj_link_far(const obj_slab *s, const obj_block *b, obj_block *n) {
  if (!obj_link_in_slab(s, n)) obj_fatal("corrupted free list (write after free?)", b);
  return n;
}

void *obj_bin_alloc_far(obj_bin *bin) {
  obj_slab *s = bin->cur;
  obj_block *b = s->free;
  return obj_bin_pop(s, b, obj_link_next(s, b));
}
#endif

/* ---- instrumentation ---------------------------------------------------------------- */

#if OBJ_ASAN
void obj_link_open(obj_block *b) {
  ASAN_UNPOISON_MEMORY_REGION(b, sizeof *b);
}
void obj_link_close(obj_block *b) {
  ASAN_POISON_MEMORY_REGION(b, sizeof *b);
}
void obj_poison(void *p, size_t n) {
  ASAN_POISON_MEMORY_REGION(p, n);
}
void obj_unpoison(void *p, size_t n) {
  ASAN_UNPOISON_MEMORY_REGION(p, n);
}
#endif

void obj_link_open_vg(obj_block *b) {
#ifdef MA_HAVE_VALGRIND
  VALGRIND_MAKE_MEM_DEFINED(b, sizeof *b);
#endif
  (void)b;
}

void obj_link_close_vg(obj_block *b) {
#ifdef MA_HAVE_VALGRIND
  VALGRIND_MAKE_MEM_NOACCESS(b, sizeof *b);
#endif
  (void)b;
}

void obj_track_alloc(void *p, size_t size, bool zero) {
#ifdef MA_HAVE_VALGRIND
  if (obj_tracking) VALGRIND_MALLOCLIKE_BLOCK(p, size, 0, zero);
#endif
  (void)p, (void)size, (void)zero;
}

void obj_track_peek(void *p) {
#ifdef MA_HAVE_VALGRIND
  if (obj_tracking) VALGRIND_MAKE_MEM_DEFINED(p, sizeof(obj_block));
#endif
  (void)p;
}

void obj_track_free(void *p, size_t size) {
#ifdef MA_HAVE_VALGRIND
  if (obj_tracking) VALGRIND_FREELIKE_BLOCK(p, 0);
#endif
  (void)p, (void)size;
}

/* ---- accounting ---------------------------------------------------------------------- */

bool obj_account_commit(obj_space *sp, size_t len) {
  size_t now = __atomic_add_fetch(&sp->committed, len, __ATOMIC_RELAXED);
  if (sp->max_bytes && now > sp->max_bytes) {
    __atomic_sub_fetch(&sp->committed, len, __ATOMIC_RELAXED);
    return false;
  }
  return true;
}

void obj_account_decommit(obj_space *sp, size_t len) {
  __atomic_sub_fetch(&sp->committed, len, __ATOMIC_RELAXED);
}

/* ---- segments ------------------------------------------------------------------------ */

static size_t header_size(uint32_t nslabs) {
  size_t ps = os_page_size();
  size_t h = sizeof(obj_segment) + (size_t)nslabs * sizeof(obj_slab);
  return (h + ps - 1) & ~(ps - 1);
}

uint8_t obj_slab_shift_for(size_t stride, size_t align) {
  if (align < 8) align = 8;
  for (unsigned sh = OBJ_SLAB_MIN; sh <= OBJ_SEG_SHIFT; sh++) {
    size_t slab = (size_t)1 << sh;
    size_t hdr = header_size(1u << (OBJ_SEG_SHIFT - sh));
    /* (+ a page: room for a secure segment's guard page after the first slab) */
    if (slab >= 16 * stride + align && slab - hdr >= stride + align + os_page_size())
      return (uint8_t)sh;
  }
  return OBJ_SHIFT_SOLO;
}

/* The usable range of slab i; a secure segment's guard page after it is excluded. */
void obj_slab_range(const obj_segment *seg, uint32_t i, char **lo, char **hi) {
  char *base = (char *)seg;
  if (seg->slab_shift == OBJ_SHIFT_SOLO) {
    *lo = base + seg->hdr_size;
    *hi = base + seg->size - seg->guard;
    return;
  }
  *lo = i == 0 ? base + seg->hdr_size : base + ((size_t)i << seg->slab_shift);
  *hi = base + ((size_t)(i + 1) << seg->slab_shift) - seg->guard;
}

/* A space whose empty slabs can be purged with MADV_DONTNEED: private (shared anonymous
 * memory keeps its pages) and not locked. Its segments get their slab area mapped once. */
static bool space_resettable(const obj_space *sp) {
  return !(sp->map_flags & (MA_MAP_SHARED | MA_MAP_LOCKED));
}

/* ---- the segment zone -----------------------------------------------------------------
 * A segment that starts with its first slab reserved grows into the rest of its 4 MiB
 * window, so the window must stay free. The kernel places new mappings top-down in the
 * highest gap that fits, which is just such a window's free tail: next to a segment the
 * kernel placed, the next thread stack or large block would land in it. So growing segments
 * live in a zone the kernel never picks by itself (far below its mmap base: it fills the
 * address space from the top): windows are taken in turn, from a random first one, each with
 * MAP_FIXED_NOREPLACE, skipping a window still in use (the turn wraps around the zone). Not
 * under ThreadSanitizer (its shadow and its idea of application memory own fixed ranges);
 * elsewhere, when the zone cannot be used (a kernel before 4.17 takes NOREPLACE as a hint,
 * a tool refuses fixed maps) segments are reserved whole where the kernel puts them. The
 * zone's place: OBJ_ZONE_START, OBJ_ZONE_BITS (obj_types.h). */
#define OBJ_ZONE_TRIES  64 /* windows tried in turn before the turn jumps elsewhere */
#define OBJ_ZONE_ROUNDS 4  /* jumps before a segment is reserved whole, and the zone given up */
static uint64_t zone_turn; /* windows handed out so far, plus the random first (atomic) */
static bool zone_off;      /* OBJ_ZONE_ROUNDS x OBJ_ZONE_TRIES refusals in a row: not used again */

/* Reserves `len` bytes at the start of a free window of the zone; NULL when the zone is off
 * or out of reach (the caller reserves a whole window elsewhere). A run of windows in use
 * (someone's mapping of 256 MiB or more in the zone, or the zone nearly full) sends the turn
 * to a random window; a kernel that takes NOREPLACE as a hint refuses every window, and the
 * zone is given up after OBJ_ZONE_ROUNDS such runs. */
static char *zone_take(size_t len) {
  if (OBJ_ZONE_BITS == 0 || __atomic_load_n(&zone_off, __ATOMIC_RELAXED)) return NULL;
  if (__atomic_load_n(&zone_turn, __ATOMIC_RELAXED) == 0) {
    uint64_t zero = 0; /* racing threads: the first draw wins */
    __atomic_compare_exchange_n(&zone_turn, &zero, random_u64((uintptr_t)&zone_turn) | 1, false,
                                __ATOMIC_RELAXED, __ATOMIC_RELAXED);
  }
  for (int round = 0; round < OBJ_ZONE_ROUNDS; round++) {
    for (int i = 0; i < OBJ_ZONE_TRIES; i++) {
      uint64_t w = __atomic_fetch_add(&zone_turn, 1, __ATOMIC_RELAXED);
      w &= ((uint64_t)1 << OBJ_ZONE_BITS) - 1;
      char *a = (char *)(OBJ_ZONE_START + ((uintptr_t)w << OBJ_SEG_SHIFT)), *out;
      int rc = os_map(a, len, MA_PROT_NONE, MA_MAP_NORESERVE, -1, 0, 0, OS_PLACE_NOREPLACE,
                      (void **)&out);
      if (rc == 0) return out;
      if (rc != -EEXIST) return NULL; /* out of address space (RLIMIT_AS) or refused */
    }
    __atomic_fetch_add(&zone_turn, random_u64((uintptr_t)&zone_turn) | 1, __ATOMIC_RELAXED);
  }
  __atomic_store_n(&zone_off, true, __ATOMIC_RELAXED);
  return NULL;
}

uintptr_t obj_zone_next(void) {
  if (OBJ_ZONE_BITS == 0 || __atomic_load_n(&zone_off, __ATOMIC_RELAXED) ||
      __atomic_load_n(&zone_turn, __ATOMIC_RELAXED) == 0)
    return 0;
  uint64_t w = __atomic_load_n(&zone_turn, __ATOMIC_RELAXED) & (((uint64_t)1 << OBJ_ZONE_BITS) - 1);
  return OBJ_ZONE_START + ((uintptr_t)w << OBJ_SEG_SHIFT);
}

obj_segment *obj_segment_create(obj_space *sp, uint8_t shift, size_t solo_need) {
  uint32_t nslabs = shift == OBJ_SHIFT_SOLO ? 1 : 1u << (OBJ_SEG_SHIFT - shift);
  size_t hdr = header_size(nslabs);
  size_t size = OBJ_SEG_SIZE;
  /* Secure: the last page of each slab is a guard, so a linear overflow off a slab run
   * faults: a MADV_GUARD_INSTALL page inside the slab area's one mapping where the kernel
   * has them (map_guarded_area), else never mapped (the segment is reserved inaccessible and
   * slabs are committed one by one). Slab shifts leave room for it (obj_slab_shift_for). */
  size_t guard = obj_secure_on() ? os_page_size() : 0;
  if (shift == OBJ_SHIFT_SOLO) {
    if (solo_need > OBJ_MAX_STRIDE * 2) goto nomem;
    size = (hdr + solo_need + guard + OBJ_SEG_SIZE - 1) & ~(OBJ_SEG_SIZE - 1);
  }
  if (!obj_account_commit(sp, hdr)) goto nomem;
  /* Several slabs: the first slab now, the rest as it is needed (obj_segment_grow). */
  char *m = NULL;
  if (shift != OBJ_SHIFT_SOLO && nslabs > 1) {
    m = zone_take((size_t)1 << shift);
    if (m) size = (size_t)1 << shift;
  }
  if (!m) m = os_reserve(size, OBJ_SEG_SIZE, NULL);
  if (!m) goto unaccount;
  uintptr_t chunk0 = (uintptr_t)m >> OBJ_SEG_SHIFT, nchunks = obj_seg_chunks(size);
  if (chunk0 + nchunks > (uintptr_t)OBJ_MAP_ROOT_LEN << OBJ_MAP_LEAF_BITS) goto unmap;
  if (obj_map_cover(chunk0, nchunks) != 0) goto unmap;
  unsigned hflags = sp->map_flags & (MA_MAP_LOCKED | MA_MAP_DONTDUMP | MA_MAP_DONTFORK);
  if (os_map_fixed(m, hdr, MA_PROT_READ | MA_PROT_WRITE, hflags, -1, 0) != 0) goto unmap;
  if (sp->name) os_name(m, size, sp->name);
  obj_segment *seg = (obj_segment *)m; /* fresh pages: every field starts zero */
  seg->magic = OBJ_SEG_MAGIC ^ (uintptr_t)seg;
  seg->space = sp;
  seg->size = size;
  seg->hdr_size = hdr;
  seg->area_end = hdr;
  seg->slabs_max = nslabs;
  seg->guard = (uint32_t)guard;
  /* Decided once, before any slab is mapped: the two schemes must not meet in a segment. */
  if (guard && shift != OBJ_SHIFT_SOLO && space_resettable(sp) && os_guard_supported())
    seg->guard_mode = OBJ_GUARD_MADV_PENDING;
  seg->nslabs = nslabs;
  seg->slab_shift = shift;
  seg->slab_base = (uintptr_t)seg->slabs - (((uintptr_t)seg >> shift) << OBJ_SLAB_DESC_SHIFT);
  seg->kind = shift == OBJ_SHIFT_SOLO ? OBJ_NSHIFTS - 1 : (uint8_t)(shift - OBJ_SLAB_MIN);
  seg->free_mask = nslabs == 64 ? ~(uint64_t)0 : ((uint64_t)1 << nslabs) - 1;
  obj_map_set(chunk0, nchunks, (uint32_t)chunk0 | sp->map_tag);
  __atomic_add_fetch(&sp->reserved, size, __ATOMIC_RELAXED);
  MA_CHECK(obj_segment_of(m + size - 1) == seg, "new segment %p: the map names %p", (void *)seg,
           (void *)obj_segment_of(m + size - 1));
  return seg;
unmap:
  os_release_owned(m, size);
unaccount:
  obj_account_decommit(sp, hdr);
nomem:
  errno = ENOMEM;
  return NULL;
}

/* Unmaps a segment; the caller has unlinked it. Active slabs are dropped with it. */
void obj_segment_release(obj_segment *seg) {
  obj_space *sp = seg->space;
  MA_CHECK(seg->magic == (OBJ_SEG_MAGIC ^ (uintptr_t)seg) &&
               obj_map_entry((uintptr_t)seg >> OBJ_SEG_SHIFT) ==
                   ((uint32_t)((uintptr_t)seg >> OBJ_SEG_SHIFT) | sp->map_tag),
           "releasing segment %p: magic %#llx, map entry %#x", (void *)seg,
           (unsigned long long)seg->magic, obj_map_entry((uintptr_t)seg >> OBJ_SEG_SHIFT));
  size_t committed = seg->hdr_size;
  for (uint32_t i = 0; i < seg->nslabs; i++) {
    obj_slab *s = &seg->slabs[i];
    if (s->active) __atomic_sub_fetch(&sp->capacity, s->capacity, __ATOMIC_RELAXED);
    if (s->committed) {
      char *lo, *hi;
      obj_slab_range(seg, i, &lo, &hi);
      committed += (size_t)(hi - lo);
    }
  }
  size_t size = seg->size;
  obj_map_set((uintptr_t)seg >> OBJ_SEG_SHIFT, obj_seg_chunks(size), 0);
  obj_account_decommit(sp, committed);
  __atomic_sub_fetch(&sp->reserved, size, __ATOMIC_RELAXED);
  /* ASan: free blocks are poisoned, and the shadow outlives the mapping; a large block or
   * anything else mapped here later would read as use-after-poison. */
  obj_unpoison(seg, size);
  /* Nothing refers to the segment any more: if munmap is refused (a VMA split at the map
   * count limit) the page layer keeps the range and unmaps it at a later release. The
   * header page is private read-write and holds the page layer's note of it then, unless
   * a fork child would not inherit it (MA_MAP_DONTFORK). */
  if (sp->map_flags & MA_MAP_DONTFORK)
    os_release_owned(seg, size);
  else
    os_release_owned_rw(seg, size);
}

/* Whether seg's slab area is mapped read-write in one go at its first use, its slabs then
 * faulting in lazily (no mmap per slab). */
static bool seg_lazy(const obj_segment *seg) {
  const obj_space *sp = seg->space;
  return seg->slab_shift != OBJ_SHIFT_SOLO && !sp->populate && space_resettable(sp) && !seg->guard;
}

/* Secure: guard markers on the last page of slabs [first, end) of seg (MADV_GUARD_INSTALL;
 * the pages mapped read-write), in one system call where the kernel allows. 0 or the first
 * failure's -errno. */
static int install_slab_guards(obj_segment *seg, uint32_t first, uint32_t end) {
  void *g[64]; /* (a segment has at most 64 slabs: free_mask) */
  size_t n = 0;
  for (uint32_t i = first; i < end; i++)
    g[n++] = (char *)seg + ((size_t)(i + 1) << seg->slab_shift) - seg->guard;
  return os_guard_install_many(g, n, seg->guard);
}

/* The slab area is mapped read-write up to `to` now: the slabs from area_end on are marked
 * mapped (their pages fault in when used). */
static void area_mapped_to(obj_segment *seg, size_t to) {
  for (uint32_t i = (uint32_t)(seg->area_end >> seg->slab_shift);
       ((size_t)i << seg->slab_shift) < to; i++)
    seg->slabs[i].mapped = 1;
  seg->area_end = to;
}

int obj_segment_grow(obj_segment *seg, uint32_t i) {
  size_t need = (size_t)(i + 1) << seg->slab_shift, size = seg->size;
  if (need <= size) return 0;
  if (i >= seg->slabs_max) return -EEXIST;
  /* Half more at a time past the slab asked for: nine steps from a 64 KiB slab to the
   * window, and the address space within half of what the slabs in use need; under
   * RLIMIT_AS the slab asked for alone (obj_space_tight). */
  size_t slab = (size_t)1 << seg->slab_shift;
  size_t want = obj_space_tight() ? need : size + size / 2;
  want = want < need ? need : (want + slab - 1) & ~(slab - 1);
  if (want > OBJ_SEG_SIZE) want = OBJ_SEG_SIZE;
  /* Where the area reserved so far is mapped read-write already (lazy, or guarded with
   * markers, after its first use), the new part is mapped so at once: one system call per
   * step, not two, plus its slabs' guard markers. (Not with flags that take an madvise
   * after the map: os_map_fixed's path does them.) */
  obj_space *sp = seg->space;
  const unsigned advised = MA_MAP_DONTDUMP | MA_MAP_DONTFORK | MA_MAP_HUGE_TRY;
  bool rw = (seg_lazy(seg) || seg->guard_mode == OBJ_GUARD_MADV) && seg->area_end == size &&
            !(sp->map_flags & advised);
  unsigned prot = rw ? sp->prot : MA_PROT_NONE, flags = rw ? sp->map_flags : MA_MAP_NORESERVE;
  int rc;
  for (size_t to = want;; to = need) {
    char *end = (char *)seg + size, *out;
    rc = os_map(end, to - size, prot, flags, -1, 0, 0, OS_PLACE_NOREPLACE, (void **)&out);
    if (rc == 0 && rw && seg->guard &&
        install_slab_guards(seg, (uint32_t)(size >> seg->slab_shift),
                            (uint32_t)(to >> seg->slab_shift)) != 0) {
      (void)os_release_owned_rw(end, to - size); /* (its guards go with it) */
      return -ENOMEM;
    }
    if (rc == 0) {
      if (sp->name) os_name(end, to - size, sp->name);
      if (rw) area_mapped_to(seg, to);
      __atomic_add_fetch(&sp->reserved, to - size, __ATOMIC_RELAXED);
      __atomic_store_n(&seg->size, to, __ATOMIC_RELAXED);
      return 0;
    }
    if (to == need) break;
  }
  if (rc == -EEXIST) { /* someone's mapping: the slabs reserved are all this one gets */
    seg->slabs_max = (uint32_t)(size >> seg->slab_shift);
    seg->free_mask &= ((uint64_t)1 << seg->slabs_max) - 1;
  }
  return rc;
}

/* Secure, first use of a segment's slab area where the kernel has guard pages, or of the
 * part it grew by since: the part is mapped read-write in one call and the last page of
 * each of its slabs becomes a guard inside the mapping (MADV_GUARD_INSTALL), so the
 * segment costs no mapping per slab. The guards stay through purges (MADV_DONTNEED) and go
 * with the segment's munmap. Returns 0 (every slab of the part mapped and guarded), 1 when
 * the kernel refuses guards on a segment's first use (-EINVAL/-ENOSYS: the area is a
 * PROT_NONE reservation again and the caller maps slabs one by one, PROT_NONE holes for
 * guards; once a segment has guard pages the two schemes must not meet, so a later refusal
 * is -ENOMEM), or a negative errno with nothing of the part accessible, or at worst
 * accessible without all its guards on a fresh segment the caller releases at once (its
 * first slab's commit failed; the segment stays MADV_PENDING, no slab mapped, so a retry is
 * safe). */
static int map_guarded_area(obj_segment *seg) {
  obj_space *sp = seg->space;
  char *a = (char *)seg + seg->area_end, *b = (char *)seg + seg->size;
  int rc = os_map_fixed(a, (size_t)(b - a), sp->prot, sp->map_flags, -1, 0);
  if (rc != 0) return rc;
  rc = install_slab_guards(seg, (uint32_t)(seg->area_end >> seg->slab_shift),
                           (uint32_t)(seg->size >> seg->slab_shift));
  if (rc == 0) {
    seg->guard_mode = OBJ_GUARD_MADV;
    area_mapped_to(seg, seg->size);
    return 0;
  }
  /* Back to a reservation (this also drops the guards already installed). */
  int undo = os_decommit(a, (size_t)(b - a));
  if (undo != 0) return undo;
  if (rc != -EINVAL && rc != -ENOSYS) return rc;
  return seg->guard_mode == OBJ_GUARD_MADV_PENDING ? 1 : -ENOMEM;
}

int obj_slab_commit(obj_segment *seg, obj_slab *s) {
  obj_space *sp = seg->space;
  char *lo, *hi;
  obj_slab_range(seg, (uint32_t)(s - seg->slabs), &lo, &hi);
  size_t len = (size_t)(hi - lo);
  if (!obj_account_commit(sp, len)) return -ENOMEM;
  int rc;
  if (seg->guard_mode == OBJ_GUARD_MADV_PENDING ||
      (seg->guard_mode == OBJ_GUARD_MADV && !s->mapped)) { /* (a part grown since) */
    rc = map_guarded_area(seg);
    if (rc < 0) {
      obj_account_decommit(sp, len);
      return rc;
    }
    if (rc > 0) seg->guard_mode = OBJ_GUARD_HOLES;
  }
  if (s->mapped) { /* mapped, purged or never touched: zero pages on the next fault */
    if (sp->populate) (void)os_populate(lo, len);
  } else if (seg_lazy(seg)) {
    /* First use of the slab area reserved since the last such map: all of it read-write
     * in one call; its other slabs fault in lazily when they are used (no mmap per slab). */
    char *a = (char *)seg + seg->area_end, *b = (char *)seg + seg->size;
    rc = os_map_fixed(a, (size_t)(b - a), sp->prot, sp->map_flags, -1, 0);
    if (rc != 0) {
      obj_account_decommit(sp, len);
      return rc;
    }
    area_mapped_to(seg, seg->size);
  } else {
    unsigned f = sp->map_flags | (sp->populate ? MA_MAP_POPULATE : 0);
    rc = os_map_fixed(lo, len, sp->prot, f, -1, 0);
    if (rc != 0) {
      obj_account_decommit(sp, len);
      return rc;
    }
    s->mapped = 1;
  }
  s->committed = 1;
  s->fresh = 1;
  return 0;
}

size_t obj_slab_decommit(obj_segment *seg, obj_slab *s) {
  obj_space *sp = seg->space;
  char *lo, *hi;
  obj_slab_range(seg, (uint32_t)(s - seg->slabs), &lo, &hi);
  size_t len = (size_t)(hi - lo);
  if (space_resettable(sp) && seg->slab_shift != OBJ_SHIFT_SOLO) {
    if (os_reset(lo, len) != 0) return 0; /* keep it committed; retry later */
  } else {
    if (os_decommit(lo, len) != 0) return 0;
    s->mapped = 0;
  }
  obj_account_decommit(sp, len);
  __atomic_add_fetch(&sp->purged_bytes, len, __ATOMIC_RELAXED);
  s->committed = 0;
  s->fresh = 0;
  return len;
}

void obj_probe_delete(void *tab, size_t esize, size_t cap, size_t i,
                      size_t (*hash)(uintptr_t key, size_t cap)) {
  char *t = tab;
  size_t mask = cap - 1;
  uintptr_t key, zero = 0;
  memcpy(t + i * esize, &zero, sizeof zero);
  for (size_t j = (i + 1) & mask;; j = (j + 1) & mask) {
    memcpy(&key, t + j * esize, sizeof key);
    if (key == 0) return;
    size_t home = hash(key, cap);
    /* Move j into the hole if its home is not in the cyclic range (i, j]. */
    bool between = (i <= j) ? (home > i && home <= j) : (home > i || home <= j);
    if (!between) {
      memcpy(t + i * esize, t + j * esize, esize);
      memcpy(t + j * esize, &zero, sizeof zero);
      i = j;
    }
  }
}
