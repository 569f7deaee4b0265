/* The arena's ordered record of mappings: an AVL tree keyed by offset, plus the small
 * allocator its nodes come from.
 *
 * The tree holds non-overlapping [off, off+len) ranges; it only compares `off` (the arena
 * checks overlap before inserting). Insert, remove and the floor/successor lookups are
 * O(log n): an AVL tree's height stays below 1.45 log2(n + 2), so recursion depth is
 * bounded (under 100 levels even for 2^64 nodes).
 *
 * Nodes come from arena_node_pool: 64 KiB chunks from os_alloc carved into nodes and
 * recycled through a free list. It never calls malloc, so the arena does not depend on the
 * heap layer that will later replace malloc. Nothing here locks: the arena's mutex
 * serializes every call.
 */
#ifndef MAPALLOC_ARENA_TREE_H
#define MAPALLOC_ARENA_TREE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct arena_node {
  struct arena_node *left, *right;
  size_t off, len;   /* the key is off; [off, off+len) inside the arena */
  uint64_t fd_off;   /* file offset of `off` (0 for anonymous mappings) */
  uint64_t dev, ino; /* the mapped file's st_dev and st_ino (0 for anonymous mappings) */
  bool file;         /* a shared file mapping; false: private anonymous */
  unsigned prot;     /* MA_PROT_* currently in effect */
  int height;        /* AVL height: 1 for a leaf */
  bool maywrite;     /* a file mapping whose descriptor is open read-write (MADV_REMOVE works) */
} arena_node;

typedef struct arena_tree {
  arena_node *root;
  size_t count;
} arena_tree;

/* Inserts `n` (its off must not already be present; left/right/height are set here). */
void arena_tree_insert(arena_tree *t, arena_node *n);

/* Unlinks the node whose off equals `off` and returns it; NULL (tree unchanged) if there
 * is none. The node's memory is the caller's to free or reinsert. */
arena_node *arena_tree_remove(arena_tree *t, size_t off);

/* The node with the greatest off <= key, or NULL. */
arena_node *arena_tree_floor(const arena_tree *t, size_t key);

/* The node with the smallest off > key, or NULL. */
arena_node *arena_tree_next(const arena_tree *t, size_t key);

/* Calls fn for every node in increasing off; stops at the first non-zero return and
 * returns it (0 after a full walk). fn must not change the tree. */
int arena_tree_walk(const arena_tree *t, int (*fn)(const arena_node *, void *), void *ctx);

/* Checks the AVL and ordering invariants; returns the number of nodes or -1 if broken.
 * For tests. */
long arena_tree_check(const arena_tree *t);

/* ---- Node allocator ---------------------------------------------------------------------- */

typedef struct arena_node_pool {
  void *chunks;     /* singly linked list of chunks (first word = next chunk) */
  arena_node *free; /* recycled nodes (linked through ->left) */
  char *bump, *end; /* uncarved part of the newest chunk */
} arena_node_pool;

/* A node from the pool (contents undefined), or NULL with errno = ENOMEM. */
arena_node *arena_node_alloc(arena_node_pool *p);

/* Returns a node to the pool. */
void arena_node_free(arena_node_pool *p, arena_node *n);

/* Releases every chunk (every node, live or free) and clears the pool. */
void arena_node_pool_release(arena_node_pool *p);

#endif /* MAPALLOC_ARENA_TREE_H */
