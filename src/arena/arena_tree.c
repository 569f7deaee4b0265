/* AVL tree of arena mappings keyed by offset, and the node allocator (see arena_tree.h). */
#include "arena/arena_tree.h"

#include <errno.h>

#include "os/os.h"

/* ---- AVL balancing ------------------------------------------------------------------------ */

static inline int height(const arena_node *n) {
  return n ? n->height : 0;
}

static inline void update(arena_node *n) {
  int hl = height(n->left), hr = height(n->right);
  n->height = (hl > hr ? hl : hr) + 1;
}

static arena_node *rotate_right(arena_node *n) {
  arena_node *l = n->left;
  n->left = l->right;
  l->right = n;
  update(n);
  update(l);
  return l;
}

static arena_node *rotate_left(arena_node *n) {
  arena_node *r = n->right;
  n->right = r->left;
  r->left = n;
  update(n);
  update(r);
  return r;
}

/* Restores the AVL property at n (children already balanced, heights differ by <= 2). */
static arena_node *rebalance(arena_node *n) {
  update(n);
  int bal = height(n->left) - height(n->right);
  if (bal > 1) {
    if (height(n->left->left) < height(n->left->right)) n->left = rotate_left(n->left);
    return rotate_right(n);
  }
  if (bal < -1) {
    if (height(n->right->right) < height(n->right->left)) n->right = rotate_right(n->right);
    return rotate_left(n);
  }
  return n;
}

/* ---- Insert and remove --------------------------------------------------------------------- */

static arena_node *insert_at(arena_node *root, arena_node *n) {
  if (!root) return n;
  if (n->off < root->off)
    root->left = insert_at(root->left, n);
  else
    root->right = insert_at(root->right, n);
  return rebalance(root);
}

void arena_tree_insert(arena_tree *t, arena_node *n) {
  n->left = n->right = NULL;
  n->height = 1;
  t->root = insert_at(t->root, n);
  t->count++;
}

/* Detaches the minimum of the subtree into *min; returns the new subtree root. */
static arena_node *remove_min(arena_node *root, arena_node **min) {
  if (!root->left) {
    *min = root;
    return root->right;
  }
  root->left = remove_min(root->left, min);
  return rebalance(root);
}

static arena_node *remove_at(arena_node *root, size_t off, arena_node **out) {
  if (!root) return NULL;
  if (off < root->off) {
    root->left = remove_at(root->left, off, out);
  } else if (off > root->off) {
    root->right = remove_at(root->right, off, out);
  } else {
    *out = root;
    if (!root->left) return root->right;
    if (!root->right) return root->left;
    arena_node *succ;
    arena_node *right = remove_min(root->right, &succ);
    succ->left = root->left;
    succ->right = right;
    return rebalance(succ);
  }
  return rebalance(root);
}

arena_node *arena_tree_remove(arena_tree *t, size_t off) {
  arena_node *out = NULL;
  t->root = remove_at(t->root, off, &out);
  if (out) t->count--;
  return out;
}

/* ---- Lookups -------------------------------------------------------------------------------- */

arena_node *arena_tree_floor(const arena_tree *t, size_t key) {
  arena_node *best = NULL;
  for (arena_node *n = t->root; n;) {
    if (n->off <= key) {
      best = n;
      n = n->right;
    } else {
      n = n->left;
    }
  }
  return best;
}

arena_node *arena_tree_next(const arena_tree *t, size_t key) {
  arena_node *best = NULL;
  for (arena_node *n = t->root; n;) {
    if (n->off > key) {
      best = n;
      n = n->left;
    } else {
      n = n->right;
    }
  }
  return best;
}

static int walk(const arena_node *n, int (*fn)(const arena_node *, void *), void *ctx) {
  while (n) {
    int r = walk(n->left, fn, ctx);
    if (r) return r;
    r = fn(n, ctx);
    if (r) return r;
    n = n->right; /* tail position: iterate instead of recursing */
  }
  return 0;
}

int arena_tree_walk(const arena_tree *t, int (*fn)(const arena_node *, void *), void *ctx) {
  return walk(t->root, fn, ctx);
}

/* Returns the subtree's node count, or -1 when an invariant fails. */
static long check(const arena_node *n, const arena_node *lo, const arena_node *hi) {
  if (!n) return 0;
  if ((lo && n->off <= lo->off) || (hi && n->off >= hi->off)) return -1;
  long l = check(n->left, lo, n), r = check(n->right, n, hi);
  if (l < 0 || r < 0) return -1;
  int hl = height(n->left), hr = height(n->right);
  if (n->height != (hl > hr ? hl : hr) + 1 || hl - hr > 1 || hr - hl > 1) return -1;
  return l + r + 1;
}

long arena_tree_check(const arena_tree *t) {
  long c = check(t->root, NULL, NULL);
  return (c >= 0 && (size_t)c == t->count) ? c : -1;
}

/* ---- Node allocator ------------------------------------------------------------------------- */

#define CHUNK_SIZE ((size_t)64 << 10)

/* The chunk header is one arena_node-sized slot so that nodes stay naturally aligned. */
_Static_assert(sizeof(void *) <= sizeof(arena_node), "chunk header fits a node slot");

arena_node *arena_node_alloc(arena_node_pool *p) {
  arena_node *n = p->free;
  if (n) {
    p->free = n->left;
    return n;
  }
  if ((size_t)(p->end - p->bump) < sizeof(arena_node)) {
    char *c = os_alloc(CHUNK_SIZE, 0, false);
    if (!c) {
      errno = ENOMEM;
      return NULL;
    }
    *(void **)c = p->chunks;
    p->chunks = c;
    p->bump = c + sizeof(arena_node);
    p->end = c + CHUNK_SIZE;
  }
  n = (arena_node *)p->bump;
  p->bump += sizeof(arena_node);
  return n;
}

void arena_node_free(arena_node_pool *p, arena_node *n) {
  n->left = p->free;
  p->free = n;
}

void arena_node_pool_release(arena_node_pool *p) {
  void *c = p->chunks;
  while (c) {
    void *next = *(void **)c;
    os_release_owned_rw(c, CHUNK_SIZE);
    c = next;
  }
  p->chunks = NULL;
  p->free = NULL;
  p->bump = p->end = NULL;
}
