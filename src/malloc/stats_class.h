/* Statistics per size class, derived from the slabs (stats_class.c): nothing is counted on
 * the fast paths. Used by ma_heap_stats_print and malloc_info. */
#ifndef MAPALLOC_STATS_CLASS_H
#define MAPALLOC_STATS_CLASS_H

#include "malloc/heap_internal.h"

typedef struct heap_class_stat {
  size_t live;       /* blocks handed out (incl. remote frees not yet collected), not
                        counting blocks in thread caches */
  size_t slabs;      /* slabs of this class in use by a thread or parked */
  size_t slab_bytes; /* capacity * block size of those slabs */
} heap_class_stat;

typedef struct heap_class_stats {
  heap_class_stat cls[HEAP_NCLASSES];
  size_t segments; /* segments read */
  bool complete;   /* false: the walk stopped at its step budget */
} heap_class_stats;

/* Walks the heap's segments under heap_space.lock (no allocation). Thread-safe. */
void heap_class_stats_get(heap_class_stats *out);
/* "mapalloc heap statistics of COMM (pid N)" */
void heap_stats_header(int fd);
/* The class table and the large-block line. */
void heap_class_stats_print(int fd);

#endif /* MAPALLOC_STATS_CLASS_H */
