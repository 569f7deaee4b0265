/* The checked walk of an arena's record (ma_arena_check, include/mapalloc/arena.h). */
#ifndef MAPALLOC_ARENA_CHECK_H
#define MAPALLOC_ARENA_CHECK_H

#include <stdbool.h>
#include <stddef.h>

#include "arena/arena_tree.h"

/* Checks the record t of the arena [base, base+len) (caller holds the arena's lock): the
 * tree's AVL shape and order, each node page-aligned, non-empty, inside the arena and
 * disjoint from the next, a valid protection; then every page of the arena against
 * /proc/self/maps: a node's pages mapped with its protection (shared with the right file
 * offset for a file node, private for an anonymous one), every other page reserved
 * (PROT_NONE, private), no page unmapped, except mappings' pages when absent_ok (the
 * kernel does not copy MADV_DONTFORK mappings into a fork child). Aborts through MA_VERIFY
 * at the first disagreement. Returns 0, or the negative errno of reading /proc/self/maps
 * (the record checks ran). Does not allocate. */
int arena_check_record(const arena_tree *t, char *base, size_t len, bool absent_ok);

#endif /* MAPALLOC_ARENA_CHECK_H */
