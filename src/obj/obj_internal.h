/* Object layer: declarations shared by the files of src/obj/ only. */
#ifndef MAPALLOC_OBJ_INTERNAL_H
#define MAPALLOC_OBJ_INTERNAL_H

#include "obj/obj.h"

#define OBJ_SEG_MAGIC 0x6d61706f626a7367ull

extern uintptr_t obj_cookie;

int obj_global_init(void);
void obj_link_open_rt(obj_block *b);
void obj_link_close_rt(obj_block *b);
bool obj_account_commit(obj_space *sp, size_t len);
void obj_account_decommit(obj_space *sp, size_t len);
void obj_slab_range(const obj_segment *seg, uint32_t i, char **lo, char **hi);
obj_segment *obj_segment_create(obj_space *sp, uint8_t shift, size_t huge_need);
void obj_segment_release(obj_segment *seg);
int obj_slab_commit(obj_segment *seg, obj_slab *s);
size_t obj_slab_decommit(obj_segment *seg, obj_slab *s);

static inline obj_segment *obj_segment_of_slab(const obj_slab *s) {
  return (obj_segment *)((uintptr_t)s & ~(OBJ_SEG_SIZE - 1));
}

#endif
