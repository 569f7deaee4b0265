/* Tests of the arena's ordered record (src/arena/arena_tree.c): the AVL tree against a
 * plain reference array, and the node allocator. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "arena/arena_tree.h"

/* A deterministic xorshift generator so that failures reproduce. */
static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t rnd(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return rng_state;
}

struct collect {
  size_t keys[4096];
  size_t n;
  size_t stop_after;
};

static int collect_fn(const arena_node *n, void *p) {
  struct collect *c = p;
  c->keys[c->n++] = n->off;
  return c->n == c->stop_after ? 77 : 0;
}

Test(arena_tree, empty_tree_lookups) {
  arena_tree t = {0};
  cr_assert_null(arena_tree_floor(&t, 0));
  cr_assert_null(arena_tree_floor(&t, SIZE_MAX));
  cr_assert_null(arena_tree_next(&t, 0));
  cr_assert_null(arena_tree_remove(&t, 5));
  cr_assert_eq(arena_tree_check(&t), 0);
}

Test(arena_tree, sequential_insert_stays_balanced) {
  enum { N = 4095 };
  arena_node *nodes = calloc(N, sizeof *nodes);
  arena_tree t = {0};
  for (size_t i = 0; i < N; i++) {
    nodes[i].off = i * 10;
    arena_tree_insert(&t, &nodes[i]);
  }
  cr_assert_eq(arena_tree_check(&t), N);
  /* A perfectly balanced tree of 4095 nodes has height 12; AVL allows at most ~1.44x. */
  cr_assert_leq(t.root->height, 17);
  cr_assert_eq(arena_tree_floor(&t, 55)->off, 50);
  cr_assert_eq(arena_tree_floor(&t, 50)->off, 50);
  cr_assert_eq(arena_tree_next(&t, 50)->off, 60);
  cr_assert_eq(arena_tree_next(&t, 49)->off, 50);
  cr_assert_null(arena_tree_next(&t, (N - 1) * 10));
  cr_assert_eq(arena_tree_floor(&t, SIZE_MAX)->off, (N - 1) * 10);
  /* Descending removal also keeps the balance. */
  for (size_t i = N; i-- > N / 2;) {
    cr_assert_eq(arena_tree_remove(&t, i * 10), &nodes[i]);
  }
  cr_assert_eq(arena_tree_check(&t), N / 2);
  free(nodes);
}

Test(arena_tree, walk_in_order_and_stop) {
  enum { N = 1000 };
  arena_node *nodes = calloc(N, sizeof *nodes);
  arena_tree t = {0};
  for (size_t i = 0; i < N; i++) {
    nodes[i].off = (i * 7919) % N; /* a permutation of 0..N-1 */
    arena_tree_insert(&t, &nodes[i]);
  }
  struct collect *c = calloc(1, sizeof *c);
  cr_assert_eq(arena_tree_walk(&t, collect_fn, c), 0);
  cr_assert_eq(c->n, N);
  for (size_t i = 0; i < N; i++) cr_assert_eq(c->keys[i], i);
  memset(c, 0, sizeof *c);
  c->stop_after = 10;
  cr_assert_eq(arena_tree_walk(&t, collect_fn, c), 77, "a non-zero return stops the walk");
  cr_assert_eq(c->n, 10);
  cr_assert_eq(c->keys[9], 9);
  free(c);
  free(nodes);
}

/* Random inserts and removes, compared after every step with a presence array. */
Test(arena_tree, random_against_reference) {
  enum { KEYS = 2048, STEPS = 20000 };
  arena_node *nodes = calloc(KEYS, sizeof *nodes);
  bool *in = calloc(KEYS, sizeof *in);
  arena_tree t = {0};
  size_t count = 0;
  for (int s = 0; s < STEPS; s++) {
    size_t k = rnd() % KEYS;
    if (in[k]) {
      cr_assert_eq(arena_tree_remove(&t, k * 4096), &nodes[k]);
      in[k] = false;
      count--;
    } else {
      nodes[k].off = k * 4096;
      arena_tree_insert(&t, &nodes[k]);
      in[k] = true;
      count++;
    }
    if (s % 97 == 0) cr_assert_eq(arena_tree_check(&t), (long)count, "step %d", s);
    /* floor/next of a random probe agree with a linear scan */
    size_t probe = rnd() % (KEYS * 4096);
    long fl = -1, nx = -1;
    for (long i = (long)(probe / 4096); i >= 0; i--)
      if (in[i]) {
        fl = i;
        break;
      }
    for (size_t i = probe / 4096 + 1; i < KEYS; i++)
      if (in[i]) {
        nx = (long)i;
        break;
      }
    arena_node *f = arena_tree_floor(&t, probe), *x = arena_tree_next(&t, probe);
    cr_assert_eq(f ? (long)(f - nodes) : -1, fl, "floor of %zu", probe);
    cr_assert_eq(x ? (long)(x - nodes) : -1, nx, "next of %zu", probe);
  }
  cr_assert_eq(t.count, count);
  cr_assert_eq(arena_tree_check(&t), (long)count);
  free(in);
  free(nodes);
}

Test(arena_tree, remove_absent_key_changes_nothing) {
  arena_node a = {.off = 10}, b = {.off = 20};
  arena_tree t = {0};
  arena_tree_insert(&t, &a);
  arena_tree_insert(&t, &b);
  cr_assert_null(arena_tree_remove(&t, 15));
  cr_assert_eq(t.count, 2);
  cr_assert_eq(arena_tree_check(&t), 2);
}

Test(arena_tree, check_detects_broken_order) {
  arena_node a = {.off = 10}, b = {.off = 20};
  arena_tree t = {0};
  arena_tree_insert(&t, &a);
  arena_tree_insert(&t, &b);
  b.off = 5; /* now out of order */
  cr_assert_eq(arena_tree_check(&t), -1);
}

Test(arena_tree, node_pool_recycles_and_grows) {
  arena_node_pool p = {0};
  enum { N = 5000 }; /* more than one 64 KiB chunk */
  arena_node **v = calloc(N, sizeof *v);
  for (size_t i = 0; i < N; i++) {
    v[i] = arena_node_alloc(&p);
    cr_assert_not_null(v[i]);
    cr_assert_eq((uintptr_t)v[i] % _Alignof(arena_node), 0);
    memset(v[i], 0xa5, sizeof *v[i]); /* writable, and no overlap with the others below */
    v[i]->off = i;
  }
  for (size_t i = 0; i < N; i++) cr_assert_eq(v[i]->off, i, "nodes do not overlap");
  arena_node *last = v[N - 1];
  arena_node_free(&p, last);
  cr_assert_eq(arena_node_alloc(&p), last, "a freed node is reused first");
  arena_node_pool_release(&p);
  cr_assert_null(p.chunks);
  cr_assert_null(p.free);
  free(v);
}
