/* Object layer, part 3: spaces (init, trim of abandoned segments, destroy, fork) and the
 * valgrind-tracked alloc/free paths. See obj.h. */
#include "obj/obj.h"

#include "obj/obj_internal.h"

/* ---- tracked (valgrind) paths ----------------------------------------------------------- */

void *obj_bin_alloc_tracked(obj_bins *bs, obj_bin *bin, size_t size, bool zero) {
  obj_slab *s = bin->cur;
  if (!s->free && !obj_bin_refill(bs, bin)) return NULL;
  s = bin->cur;
  obj_block *b = s->free;
  obj_link_open_rt(b);
  s->free = obj_link_next(s, b);
  bool fz = s->free_zero;
  obj_unpoison(b, s->stride);
  obj_track_alloc(b, size, zero);
  if (zero) {
    if (fz)
      b->next = NULL;
    else
      memset(b, 0, s->stride);
  }
  b->key = 0;
  s->cnt++;
  return b;
}

void obj_free_tracked(obj_segment *seg, obj_slab *s, void *p, size_t size) {
  obj_block *b = p;
  obj_track_peek(b);
  if (obj_block_is_free(b)) obj_fatal("double free", p);
  obj_track_free(p, size);
  obj_bins *o = __atomic_load_n(&seg->owner, __ATOMIC_RELAXED);
  if (o && o->tid == obj_tid() && s->owner_tid == 1) {
    obj_slab_put(s, b);
  } else {
    obj_free_remote_now(seg, s, b);
  }
}

/* ---- spaces ----------------------------------------------------------------------------- */

int obj_space_init(obj_space *sp, unsigned prot, unsigned map_flags, bool populate,
                   size_t max_bytes, const char *name) {
  int rc = obj_global_init();
  if (rc) return rc;
  memset(sp, 0, sizeof *sp);
  sp->prot = prot;
  sp->map_flags = map_flags;
  sp->populate = populate;
  sp->max_bytes = max_bytes;
  sp->name = name;
  sp->purge_delay_ms = OBJ_PURGE_DELAY_DEFAULT;
  sp->map_tag = OBJ_MAP_POOL;
  if (pthread_mutex_init(&sp->lock, NULL) != 0) return -ENOMEM;
  if (pthread_mutex_init(&sp->trim_lock, NULL) != 0) {
    pthread_mutex_destroy(&sp->lock);
    return -ENOMEM;
  }
  return 0;
}

/* Under valgrind: tells memcheck that the live blocks of seg are gone (a destroyed pool
 * frees its objects; they must not show up as leaks). */
static void untrack_live(obj_segment *seg) {
  for (uint32_t i = 0; i < seg->nslabs; i++) {
    obj_slab *s = &seg->slabs[i];
    if (!s->active || s->carved == 0) continue;
    size_t words = (s->carved + 63) / 64, len = (words * 8 + 4095) & ~(size_t)4095;
    uint64_t *freed = os_alloc(len, 0, false);
    if (!freed) continue;
    obj_block *lists[2] = {s->free, s->local_free};
    for (int l = 0; l < 2; l++) {
      for (obj_block *b = lists[l]; b;) {
        uint32_t idx;
        if (!obj_block_index(s, b, &idx)) break;
        freed[idx / 64] |= (uint64_t)1 << (idx % 64);
        obj_link_open_rt(b);
        obj_block *nx = obj_link_next(s, b);
        obj_link_close_rt(b);
        b = nx;
      }
    }
    for (uint32_t k = 0; k < s->carved; k++)
      if (!(freed[k / 64] & ((uint64_t)1 << (k % 64))))
        obj_track_free(s->start + (size_t)k * s->stride, s->stride);
    os_release_owned_rw(freed, len);
  }
}

void obj_space_destroy(obj_space *sp) {
  if (obj_tracking) {
    /* Blocks in flight are freed blocks: file them all before telling memcheck which
     * blocks were still live (no thread uses the space any more). */
    for (obj_bins *bs = sp->all_bins; bs; bs = bs->next_all) obj_outbox_flush(bs);
    for (obj_bins *bs = sp->all_bins; bs; bs = bs->next_all) obj_bins_file_inbox(bs);
    for (obj_bins *bs = sp->all_bins; bs; bs = bs->next_all)
      for (int k = 0; k < OBJ_NSHIFTS; k++)
        for (obj_segment *seg = bs->segs[k]; seg; seg = seg->next) untrack_live(seg);
  }
  obj_bins *bs = sp->all_bins;
  while (bs) {
    obj_bins *next = bs->next_all;
    for (int k = 0; k < OBJ_NSHIFTS; k++) {
      while (bs->segs[k]) {
        obj_segment *seg = bs->segs[k];
        obj_seg_unlink(&bs->segs[k], seg);
        obj_segment_release(seg);
      }
    }
    os_release_owned_rw(bs, bs->alloc_size);
    bs = next;
  }
  sp->all_bins = NULL;
  pthread_mutex_destroy(&sp->lock);
  pthread_mutex_destroy(&sp->trim_lock);
}

void obj_space_fork_child(obj_space *sp) {
  pthread_mutex_unlock(&sp->lock); /* locked by the forking thread in the prepare handler */
  pthread_mutex_unlock(&sp->trim_lock);
  uintptr_t self = obj_tid();
  for (obj_bins *bs = sp->all_bins; bs; bs = bs->next_all)
    if (bs->in_use && bs->tid != self && bs->tid != OBJ_TID_FORKED) obj_bins_forked(bs);
}
