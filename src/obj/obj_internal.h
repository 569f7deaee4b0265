/* Object layer: declarations shared by the files of src/obj/ only. */
#ifndef MAPALLOC_OBJ_INTERNAL_H
#define MAPALLOC_OBJ_INTERNAL_H

#include "obj/obj.h"

#define OBJ_SEG_MAGIC 0x6d61706f626a7367ull

#define OBJ_CARVE_MAX   256         /* blocks carved at a time (a page of 16-byte blocks) */
#define OBJ_CARVE_BYTES (16u << 10) /* bytes a carve of blocks over 256 bytes may touch */

int obj_global_init(void);
void obj_link_open_vg(obj_block *b);
void obj_link_close_vg(obj_block *b);

/* Link access in the slow paths: ASan (compile time) and valgrind (run time) aware. */
static inline void obj_link_open_rt(obj_block *b) {
  obj_link_open(b);
  if (obj_unlikely(obj_tracking)) obj_link_open_vg(b);
}
static inline void obj_link_close_rt(obj_block *b) {
  obj_link_close(b);
  if (obj_unlikely(obj_tracking)) obj_link_close_vg(b);
}
bool obj_account_commit(obj_space *sp, size_t len);
void obj_account_decommit(obj_space *sp, size_t len);
void obj_slab_range(const obj_segment *seg, uint32_t i, char **lo, char **hi);
obj_segment *obj_segment_create(obj_space *sp, uint8_t shift, size_t solo_need);
void obj_segment_release(obj_segment *seg);
/* Makes sure the segment map has real leaves for chunks [c0, c0 + n). 0 or -ENOMEM. */
int obj_map_cover(uintptr_t c0, size_t n);
/* Tests: the window of the segment zone the next segment tries first; 0 when the zone is
 * off, not used yet, or not in this build (src/obj/obj_segment.c, "the segment zone"). */
uintptr_t obj_zone_next(void);
/* Map chunks a segment of `size` reserved bytes covers (a growing one: its whole window). */
static inline size_t obj_seg_chunks(size_t size) {
  return (size + OBJ_SEG_SIZE - 1) >> OBJ_SEG_SHIFT;
}
/* Makes sure slab i of seg is inside its reservation, growing it within its window (the
 * owner, under its lock). Returns 0; -EEXIST when another mapping holds the window past the
 * reservation (the segment keeps the slabs it has: slabs_max and free_mask shrink to them);
 * -ENOMEM when the address space is exhausted (RLIMIT_AS). */
int obj_segment_grow(obj_segment *seg, uint32_t i);
int obj_slab_commit(obj_segment *seg, obj_slab *s);
size_t obj_slab_decommit(obj_segment *seg, obj_slab *s);

/* The owner_tid a slab of bs gets: the thread id, or 1 under valgrind so that every free
 * takes the (tracked) slow path. */
static inline uintptr_t obj_slab_tid(const obj_bins *bs) {
  return obj_tracking ? 1 : bs->tid;
}

/* Owner: makes bin->cur a slab with a non-empty free list; false (errno ENOMEM) if none. */
bool obj_bin_refill(obj_bins *bs, obj_bin *bin);

/* Segment lists of a bins (its owner only). */
static inline void obj_seg_link(obj_segment **head, obj_segment *seg) {
  seg->prev = NULL;
  seg->next = *head;
  if (*head) (*head)->prev = seg;
  __atomic_store_n(head, seg, __ATOMIC_RELAXED);
}

static inline void obj_seg_unlink(obj_segment **head, obj_segment *seg) {
  if (seg->prev)
    seg->prev->next = seg->next;
  else
    __atomic_store_n(head, seg->next, __ATOMIC_RELAXED);
  if (seg->next) seg->next->prev = seg->prev;
  seg->next = seg->prev = NULL;
}

static inline obj_segment *obj_segment_of_slab(const obj_slab *s) {
  return (obj_segment *)((uintptr_t)s & ~(OBJ_SEG_SIZE - 1));
}

#endif
