/* Checked walk of an arena (arena_check.h): the record itself, then the record against the
 * kernel's view. No allocation: the maps are read by os_areas_query into a stack buffer,
 * and a failure message is formatted on the stack (MA_VERIFY, obj/obj_check.h). */
#include "arena/arena_check.h"

#include <stdbool.h>
#include <stdint.h>

#include "mapalloc/pages.h"
#include "obj/obj_check.h"
#include "os/os.h"

#define PROT_ALL (MA_PROT_READ | MA_PROT_WRITE | MA_PROT_EXEC)

struct record_walk {
  size_t len;  /* the arena's */
  size_t prev; /* end of the previous node */
};

static int node_check(const arena_node *n, void *p) {
  struct record_walk *w = p;
  size_t mask = os_page_size() - 1;
  MA_VERIFY(n->len > 0 && ((n->off | n->len) & mask) == 0,
            "arena node [%#zx, +%#zx): empty or not page-aligned", n->off, n->len);
  MA_VERIFY(n->off >= w->prev, "arena node at %#zx overlaps the previous one, which ends at %#zx",
            n->off, w->prev);
  MA_VERIFY(n->off < w->len && n->len <= w->len - n->off,
            "arena node [%#zx, +%#zx) outside the arena's %#zx bytes", n->off, n->len, w->len);
  MA_VERIFY((n->prot & ~(unsigned)PROT_ALL) == 0 && n->prot != PROT_ALL,
            "arena node at %#zx: protection %#x", n->off, n->prot);
  MA_VERIFY(n->file || (n->fd_off == 0 && n->dev == 0 && n->ino == 0),
            "anonymous arena node at %#zx has file offset %#llx, dev %llu, ino %llu", n->off,
            (unsigned long long)n->fd_off, (unsigned long long)n->dev, (unsigned long long)n->ino);
  w->prev = n->off + n->len;
  return 0;
}

struct maps_walk {
  const arena_tree *t;
  uintptr_t base, end;
  uintptr_t next; /* first address of the arena no area has covered yet */
  bool absent_ok; /* mappings may be missing (a DONTFORK arena in a fork child) */
};

static size_t node_end(const arena_node *n) {
  return n->off + n->len;
}

/* [s, e) is in no area of the maps: allowed only where mappings may be absent and the
 * record has mappings over all of it. */
static void unmapped_check(const struct maps_walk *w, uintptr_t s, uintptr_t e) {
  for (uintptr_t at = s; at < e;) {
    const arena_node *n = w->absent_ok ? arena_tree_floor(w->t, at - w->base) : NULL;
    MA_VERIFY(n && w->base + node_end(n) > at,
              "arena pages [%#lx, %#lx) are not mapped at all (not even reserved)",
              (unsigned long)at, (unsigned long)e);
    at = w->base + node_end(n);
  }
}

/* [s, e) of area a lies inside node n: mapped as n says. */
static void mapped_check(const ma_area *a, const arena_node *n, uintptr_t s, uintptr_t e,
                         size_t off) {
  MA_VERIFY(a->prot == n->prot && a->shared == n->file,
            "arena pages [%#lx, %#lx) (offset %#zx): the kernel has prot %#x %s, the record %#x %s",
            (unsigned long)s, (unsigned long)e, off, a->prot, a->shared ? "shared" : "private",
            n->prot, n->file ? "shared" : "private");
  if (n->file)
    MA_VERIFY(a->offset + (s - a->start) == n->fd_off + (off - n->off),
              "arena pages at %#lx (offset %#zx): file offset %#llx in the kernel, %#llx in the "
              "record",
              (unsigned long)s, off, (unsigned long long)(a->offset + (s - a->start)),
              (unsigned long long)(n->fd_off + (off - n->off)));
}

static int area_check(const ma_area *a, void *p) {
  struct maps_walk *w = p;
  uintptr_t s = a->start > w->base ? a->start : w->base;
  uintptr_t e = a->end < w->end ? a->end : w->end;
  unmapped_check(w, w->next, s);
  while (s < e) {
    size_t off = s - w->base;
    const arena_node *n = arena_tree_floor(w->t, off);
    uintptr_t stop;
    if (n && node_end(n) > off) {
      stop = w->base + node_end(n) < e ? w->base + node_end(n) : e;
      mapped_check(a, n, s, stop, off);
    } else {
      const arena_node *nx = arena_tree_next(w->t, off);
      stop = nx && w->base + nx->off < e ? w->base + nx->off : e;
      MA_VERIFY(a->prot == 0 && !a->shared,
                "arena pages [%#lx, %#lx) (offset %#zx) are reserved in the record, the kernel "
                "has prot %#x %s",
                (unsigned long)s, (unsigned long)stop, off, a->prot,
                a->shared ? "shared" : "private");
    }
    s = stop;
  }
  w->next = e;
  return 0;
}

int arena_check_record(const arena_tree *t, char *base, size_t len, bool absent_ok) {
  long nodes = arena_tree_check(t);
  MA_VERIFY(nodes >= 0, "arena %p: record tree broken (AVL shape, order or count %zu)",
            (void *)base, t->count);
  struct record_walk rw = {len, 0};
  (void)arena_tree_walk(t, node_check, &rw);
  struct maps_walk mw = {t, (uintptr_t)base, (uintptr_t)base + len, (uintptr_t)base, absent_ok};
  int r = os_areas_query(0, mw.base, mw.end, area_check, &mw);
  if (r < 0) return r;
  unmapped_check(&mw, mw.next, mw.end);
  return 0;
}
