/* Object layer, part 2: the inline paths (pointer -> metadata, free-list links, the
 * owner's pop and push) and the out-of-line functions they call. See obj.h. */
#ifndef MAPALLOC_OBJ_INLINE_H
#define MAPALLOC_OBJ_INLINE_H

#include "obj/obj_types.h"

/* A unique id of the calling thread: its thread pointer (one load, no TLS lookup). Read
 * through GCC's and clang's %fs address space where they have it, so that a compare with
 * it (obj_is_local) takes its operand from memory: one instruction less per pool free
 * than the inline asm load. Not under the sanitizers, which would instrument that load. */
static inline uintptr_t obj_tid(void) {
#if defined(__x86_64__) && defined(__SEG_FS) && !OBJ_ASAN && !OBJ_TSAN && !defined(MA_NO_INLINE_ASM)
  return *(const uintptr_t __seg_fs *)0;
#elif defined(__x86_64__) && !defined(MA_NO_INLINE_ASM)
  uintptr_t t;
  __asm__("movq %%fs:0, %0" : "=r"(t));
  return t;
#else
  return (uintptr_t)__builtin_thread_pointer();
#endif
}

/* Counters written by one thread and read by others (ma_pool_stats_get, the heap's thread
 * cache room): changed with a relaxed atomic store (the reader's relaxed load then races
 * with nothing), at the cost of the plain ++ it replaces. Clang fuses the relaxed load and
 * store into one add to memory; GCC 12 does not (a load, an add and a store: two
 * instructions more on the fast paths), so with GCC on x86-64 it is that one add, written
 * out: a single aligned store that no reader can see torn, opaque to the compiler, and with
 * one writer no change is lost. (The TSan stage builds with clang: the atomic form, which
 * TSan sees.) */
#if defined(__x86_64__) && !defined(MA_NO_INLINE_ASM) && !defined(__clang__)
#define OBJ_ADD_ASM 1
#else
#define OBJ_ADD_ASM 0
#endif
static inline void obj_stat_inc(uint64_t *x) { // NOLINT(readability-non-const-parameter)
#if OBJ_ADD_ASM
  __asm__ volatile("addq $1, %0" : "+m"(*x));
#else
  __atomic_store_n(x, __atomic_load_n(x, __ATOMIC_RELAXED) + 1, __ATOMIC_RELAXED);
#endif
}
// NOLINTNEXTLINE(readability-non-const-parameter)
static inline void obj_count_add32(int32_t *x, int32_t d) {
#if OBJ_ADD_ASM
  __asm__ volatile("addl %1, %0" : "+m"(*x) : "ir"(d));
#else
  __atomic_store_n(x, __atomic_load_n(x, __ATOMIC_RELAXED) + d, __ATOMIC_RELAXED);
#endif
}

/* ---- pointer -> metadata: O(1), lock-free ---------------------------------------- */

/* The map entry of 4 MiB chunk c (address >> OBJ_SEG_SHIFT): two dependent loads, no
 * branch. Relaxed: a pointer's own segment was published to this thread by whatever
 * handed it the pointer. Addresses past 2^48 alias, but their chunk number does not
 * match the entry (it is compared in full by every caller). The entry is read with a plain
 * load outside the TSan build: on x86-64 a relaxed load is that same load, and GCC folds a
 * plain one into the caller's compare (it keeps an atomic load a separate instruction: one
 * instruction more per free); the TSan build keeps the atomic form it can see. */
static inline uint32_t obj_map_entry(uintptr_t c) {
  const uint32_t *leaf = __atomic_load_n(
      &obj_segmap[(c >> OBJ_MAP_LEAF_BITS) & (OBJ_MAP_ROOT_LEN - 1)], __ATOMIC_RELAXED);
#if OBJ_TSAN
  return __atomic_load_n(&leaf[c & ((1u << OBJ_MAP_LEAF_BITS) - 1)], __ATOMIC_RELAXED);
#else
  return leaf[c & ((1u << OBJ_MAP_LEAF_BITS) - 1)];
#endif
}

/* The segment starting at p's 4 MiB chunk when the map tags it `tag` (OBJ_MAP_HEAP or
 * OBJ_MAP_POOL), else NULL: the one map compare of the heap's and the pools' fast frees.
 * Only for segments of at most 4 MiB (a bigger one is found by obj_segment_of). Chunk 0's
 * entry is 0, never tagged, so NULL gives NULL. */
static inline obj_segment *obj_segment_of_tagged(const void *p, uint32_t tag) {
  uintptr_t c = (uintptr_t)p >> OBJ_SEG_SHIFT;
  if (obj_unlikely(obj_map_entry(c) != ((uint32_t)c | tag))) return NULL;
  if (c == 0) __builtin_unreachable(); /* no code: callers' NULL tests fold away */
  return (obj_segment *)(c << OBJ_SEG_SHIFT);
}

/* Whether p lies inside seg's reservation: a growing segment's window past it is not ours
 * (another mapping may be there). seg->size is read atomically: its owner grows it. */
static inline bool obj_segment_holds(const obj_segment *seg, const void *p) {
  return (uintptr_t)p - (uintptr_t)seg < __atomic_load_n(&seg->size, __ATOMIC_RELAXED);
}

/* The segment holding p, or NULL when p is not inside a live segment of ours. */
static inline obj_segment *obj_segment_of(const void *p) {
  uint32_t e = obj_map_entry((uintptr_t)p >> OBJ_SEG_SHIFT) & ~OBJ_MAP_TAGS;
  if (obj_unlikely(e == 0)) return NULL;
  obj_segment *seg = (obj_segment *)((uintptr_t)e << OBJ_SEG_SHIFT);
  return obj_likely(obj_segment_holds(seg, p)) ? seg : NULL;
}

static inline obj_slab *obj_slab_of(obj_segment *seg, const void *p) {
  /* p's slab number counted from address 0, as a byte offset, added to a base biased by the
   * segment's own number (seg->slab_base): no mask of p's offset in the segment and no
   * separate add of the descriptors' offset. (A one-slab segment's shift is 63: offset 0.) */
  uintptr_t off = ((uintptr_t)p >> seg->slab_shift) << OBJ_SLAB_DESC_SHIFT;
  return (obj_slab *)(seg->slab_base + off);
}

/* Index of the block starting at p; false when p is not the start of a carved block.
 * No division: with stride = odd << k and inv = odd^-1 mod 2^64, rotr(off * inv, k) is
 * off / stride when stride divides off, and larger than any block index otherwise
 * (Granlund-Montgomery), so one compare checks both alignment and range. */
static inline uint64_t obj_block_q(const obj_slab *s, uintptr_t p) {
  uint64_t x = (p - (uintptr_t)s->start) * s->inv;
  unsigned k = s->inv_shift;
  return (x >> k) | (x << ((64 - k) & 63));
}

/* carved only grows while a slab is active, and a thread holding one of its blocks saw a
 * value covering that block: a relaxed read from any thread is enough. */
static inline uint64_t obj_slab_carved(const obj_slab *s) {
#if OBJ_TSAN
  return __atomic_load_n(&s->carved, __ATOMIC_RELAXED);
#else
  return s->carved; /* the same load on x86-64, and GCC folds it into the compare */
#endif
}

static inline bool obj_block_index(const obj_slab *s, const void *p, uint32_t *idx) {
  uint64_t q = obj_block_q(s, (uintptr_t)p);
  *idx = (uint32_t)q;
  return obj_likely(q < obj_slab_carved(s));
}

/* ---- free-list links -----------------------------------------------------------------
 * Default build: b->next is a plain pointer. Secure build: it is stored xor'ed with the
 * block's own address and a per-process random key, and every link followed is decoded
 * and checked to be NULL or a carved block of the same slab, so a use-after-free write
 * over a freed block's link aborts at the next allocation instead of handing out a wild
 * pointer (an attacker who does not know the key cannot forge a link). */
/* Writes "mapalloc: <what> of 0x<p>" to fd 2 (no stdio, no allocation) and aborts: the
 * one report of a misuse or corruption, for every layer above the page layer. */
__attribute__((noreturn)) void obj_fatal(const char *what, const void *p);
/* v in base 10 or 16 into buf (room for 20 digits), no terminator; returns the length. */
size_t obj_fmt_uint(char *buf, uint64_t v, unsigned base);
/* Writes the string s to fd in full (retrying short writes), without allocating. */
void obj_write_str(int fd, const char *s);
/* The process name (/proc/self/comm, "?" when unreadable) into buf of `size` >= 2 bytes,
 * terminated; no allocation. */
void obj_comm(char *buf, size_t size);
/* Empties slot i of an open-addressing table with linear probing (`cap` entries of `esize`
 * bytes, cap a power of two, each entry's first field a uintptr_t key, 0 = empty; `hash`
 * gives a key's home slot) and moves back the entries of its probe chain, so that every
 * lookup still finds them: the large-block table and the profiler's live samples. */
void obj_probe_delete(void *tab, size_t esize, size_t cap, size_t i,
                      size_t (*hash)(uintptr_t key, size_t cap));

/* The exact link check of both builds: n ends the list or is a carved block of slab s. */
static inline bool obj_link_in_slab(const obj_slab *s, const obj_block *n) {
  return n == NULL || obj_block_q(s, (uintptr_t)n) < obj_slab_carved(s);
}

/* Links b to next and tags b free: its second word becomes obj_cookie ^ the stored link.
 * Every free block carries the tag (on a slab's lists, in a thread cache, in flight to its
 * owner) and no live one does (a pop clears it), so a free of a block whose tag holds is a
 * double free, and a write after free over a free block's link (or tag) breaks the tag,
 * which the heap's pop checks. The cookie is random per process: a live block's data
 * passes for free with probability 2^-64. */
static inline void obj_link_set(obj_block *b, obj_block *next) {
#if OBJ_SECURE
  uintptr_t w = (uintptr_t)next ^ (uintptr_t)b ^ obj_link_key;
#else
  uintptr_t w = (uintptr_t)next;
#endif
  b->next = (obj_block *)w;
  b->key = obj_cookie ^ w;
}

/* b carries the free tag (see obj_link_set). */
static inline bool obj_block_is_free(const obj_block *b) {
  return b->key == (obj_cookie ^ (uintptr_t)b->next);
}

#if !OBJ_SECURE
/* Default build: a link out of b's 4 MiB chunk is NULL (b is the list's last block), a
 * block of a solo slab, or a use-after-free write. An xor and a shift find out; all three
 * are rare enough for the exact check to run out of line (NULL tested inline cost more per
 * malloc than the call once per list). */
static inline bool obj_link_leaves_chunk(const obj_block *b, const obj_block *n) {
  return (((uintptr_t)n ^ (uintptr_t)b) >> OBJ_SEG_SHIFT) != 0;
}

/* n, which b's link points to outside b's chunk, when it is NULL or a carved block of s;
 * aborts with "corrupted free list" otherwise. */
obj_block *obj_link_far(const obj_slab *s, const obj_block *b, obj_block *n);
#endif

/* The next block after b on one of slab s's lists (free, local_free, remote). */
static inline obj_block *obj_link_next(const obj_slab *s, const obj_block *b) {
#if OBJ_SECURE
  obj_block *n = (obj_block *)((uintptr_t)b->next ^ (uintptr_t)b ^ obj_link_key);
  if (obj_unlikely(!obj_link_in_slab(s, n)))
    obj_fatal("corrupted free list (write after free?)", b);
  return n;
#else
  obj_block *n = b->next;
  if (obj_unlikely(obj_link_leaves_chunk(b, n))) return obj_link_far(s, b, n);
  return n;
#endif
}

/* ---- instrumentation ---------------------------------------------------------------
 * Under ASan (compile time) a free block is poisoned; the inline paths open its link words
 * while they touch them. Under valgrind (run time, obj_tracking) the pool takes the
 * obj_*_tracked paths, which do the same with memcheck client requests. */
#if OBJ_ASAN
void obj_link_open(obj_block *b);
void obj_link_close(obj_block *b);
void obj_poison(void *p, size_t n);
void obj_unpoison(void *p, size_t n);
#else
static inline void obj_link_open(obj_block *b) {
  (void)b;
}
static inline void obj_link_close(obj_block *b) {
  (void)b;
}
static inline void obj_poison(void *p, size_t n) {
  (void)p, (void)n;
}
static inline void obj_unpoison(void *p, size_t n) {
  (void)p, (void)n;
}
#endif
/* Memcheck client requests (no-ops unless obj_tracking). */
void obj_track_alloc(void *p, size_t size, bool zero);
void obj_track_free(void *p, size_t size);
/* Before a tracked free reads the free tag of p: its words become defined for memcheck
 * (a live block's first words may never have been written; a freed one aborts). */
void obj_track_peek(void *p);
/* Tracked (valgrind) versions of obj_bin_alloc/obj_free: `size` is the user-visible size. */
void *obj_bin_alloc_tracked(obj_bins *bs, obj_bin *bin, size_t size, bool zero);
void obj_free_tracked(obj_segment *seg, obj_slab *s, void *p, size_t size);

/* ---- slow paths (obj_bins.c, obj_segment.c) ---------------------------------------- */
void *obj_bin_alloc_slow(obj_bins *bs, obj_bin *bin);
void obj_slab_notify(obj_slab *s);
/* Frees b (validated, of slab s in seg) from a thread that does not own s: batched in the
 * outbox of `mine`, the calling thread's own cache of the same space (not thread-safe on
 * `mine`: its owner only). */
void obj_free_remote(obj_bins *mine, obj_segment *seg, obj_slab *s, obj_block *b);
/* As obj_free_remote for a caller without a cache: b goes to its owner's inbox at once. */
void obj_free_remote_now(obj_segment *seg, obj_slab *s, obj_block *b);
/* Owner: sends every batch of remote frees waiting in bs's outbox. */
void obj_outbox_flush(obj_bins *bs);
/* Owner (or the holder of the lock that stands for it): files the blocks other threads
 * sent to bs (both stacks) into their slabs, O(blocks). */
void obj_bins_file_inbox(obj_bins *bs);

/* Batches ("Batches" in obj_bins.c): a chain head..tail of n blocks of one bin, all of
 * slabs `to` owns, already checked and tagged free (a thread cache's trim), linked from
 * head to tail (the tail's link is overwritten). Pushed onto to's inbatch stack with one
 * CAS, with a sealed header in head's third and fourth words when the stride has room
 * (else onto the inbox, filed block by block). Any thread. */
void obj_send_batch(obj_bins *to, obj_block *head, obj_block *tail, uint32_t n);
/* A batch as the owner found it: its tail, its length and its bin. */
typedef struct obj_batch {
  obj_block *tail;
  uint32_t n, bin;
} obj_batch;
/* Owner: takes bs's inbatch stack whole (NULL if empty). */
obj_block *obj_bins_take_batches(obj_bins *bs);
/* Owner: head, the first block of what is left of a taken stack, checked exactly (aborts
 * on a block that is not a carved block of bs's); true if it heads a batch whose sealed
 * header and tail check out (into *m); false otherwise: the caller files the rest of the
 * stack with obj_bins_file_chain. */
bool obj_batch_open(obj_bins *bs, obj_block *head, obj_batch *m);
/* Owner: relinks m's tail to `link` (the batch becomes the head of a list that goes on
 * with link); returns the block that followed the batch on its stack. */
obj_block *obj_batch_splice(const obj_batch *m, obj_block *link);
/* Owner: files m's blocks into their slabs; returns the block that followed the batch. */
obj_block *obj_batch_file(obj_bins *bs, obj_block *head, const obj_batch *m);
/* Owner: files every block of the chain starting at b into its slab. */
void obj_bins_file_chain(obj_bins *bs, obj_block *b);
/* Blocks already checked and tagged free (a thread cache's, see the heap): obj_slab_put
 * returns b to s, a slab of the calling owner; obj_send_remote batches b for its owner in
 * mine's outbox. */
void obj_slab_put(obj_slab *s, obj_block *b);
/* As obj_slab_put for k blocks of s already chained first -> ... -> last as a free list
 * (a run of a thread cache's list): one relink and one count update for the run. */
void obj_slab_put_run(obj_slab *s, obj_block *first, obj_block *last, uint32_t k);
void obj_send_remote(obj_bins *mine, obj_segment *seg, obj_block *b);
/* Owner: detaches up to n (>= 1) blocks of bin's current slab (refilled first if empty) as
 * a chain linked as a free list and tagged free, its last block linked to `end` (the
 * heap's list end); returns how many (0 and errno ENOMEM when no memory). */
uint32_t obj_bin_take_batch(obj_bins *bs, obj_bin *bin, uint32_t n, obj_block *end,
                            obj_block **head);

/* ---- fast paths --------------------------------------------------------------------- */

/* Hands out b, the head of s's free list, whose successor is n. */
static inline void *obj_bin_pop(obj_slab *s, obj_block *b, obj_block *n) {
  s->free = n;
  obj_unpoison(b, s->stride);
  b->key = 0;
  s->cnt++;
  return b;
}

#if !OBJ_SECURE
/* obj_bin_alloc when the head's link leaves its chunk: checked exactly (aborts on a
 * forged link), then popped. */
void *obj_bin_alloc_far(obj_bin *bin);
#endif

/* Pops the head of bin's current slab, which the caller found non-empty. Default build:
 * NULL when the head's link leaves its chunk; the caller then calls obj_bin_alloc_far in
 * tail position, so the fast path keeps no stack frame. */
static inline void *obj_bin_take(obj_bin *bin) {
  obj_slab *s = bin->cur;
  obj_block *b = s->free;
  obj_link_open(b);
#if OBJ_SECURE
  return obj_bin_pop(s, b, obj_link_next(s, b));
#else
  obj_block *n = b->next;
  if (obj_unlikely(obj_link_leaves_chunk(b, n))) return NULL;
  return obj_bin_pop(s, b, n);
#endif
}

static inline void *obj_bin_alloc(obj_bins *bs, obj_bin *bin) {
  if (obj_unlikely(bin->cur->free == NULL)) return obj_bin_alloc_slow(bs, bin);
  void *p = obj_bin_take(bin);
#if !OBJ_SECURE
  if (obj_unlikely(p == NULL)) return obj_bin_alloc_far(bin);
#endif
  return p;
}

/* As obj_bin_alloc, the whole stride zeroed; no memset when the block is fresh. */
static inline void *obj_bin_alloc_zero(obj_bins *bs, obj_bin *bin) {
  obj_block *b = obj_bin_alloc(bs, bin);
  if (obj_likely(b != NULL)) {
    if (bin->cur->free_zero)
      b->next = NULL;
    else
      memset(b, 0, bin->stride);
  }
  return b;
}

/* The owner's local free: pushes b, a validated live block of slab s (not yet tagged
 * free), onto s->free (LIFO: cache-warm), tags it free and counts it (--cnt, the slab's
 * slow path at <= 0). The one local-free push of the pools' fast free (ma_pool_free), the
 * object layer's (obj_free_local) and the heap's (obj_slab_put: blocks a thread cache gives
 * back, tracked frees). It leaves s->free_zero alone: a push onto a zero pool's slab comes
 * only through obj_free_local or obj_slab_put, which clear it (zero pools' segments carry
 * OBJ_MAP_POOL_SLOW, so their frees never reach the pools' fast path). */
static inline void obj_slab_push(obj_slab *s, obj_block *b) {
  obj_poison(b, s->stride);
  obj_link_open(b);
  obj_link_set(b, s->free);
  obj_link_close(b);
  s->free = b;
#if defined(__x86_64__) && !defined(MA_NO_INLINE_ASM)
  /* --cnt and the test as one instruction pair (GCC otherwise tests the result again) */
  __asm__ goto("subl $1, %0\n\tjle %l[notify]" : "+m"(s->cnt) : : "cc" : notify);
  return;
notify:
  obj_slab_notify(s);
#else
  if (obj_unlikely(--s->cnt <= 0)) obj_slab_notify(s);
#endif
}

/* Frees p, a validated block of slab s, from the slab's owner thread (s->owner_tid ==
 * obj_tid()). */
static inline void obj_free_local(obj_slab *s, void *p) {
  obj_block *b = (obj_block *)p;
  obj_link_open(b); /* ASan: a freed block is poisoned; we read its tag to say why */
  if (obj_unlikely(obj_block_is_free(b))) obj_fatal("double free", p);
  s->free_zero = 0;
  obj_slab_push(s, b);
}

static inline bool obj_is_local(const obj_slab *s) {
  return __atomic_load_n(&s->owner_tid, __ATOMIC_RELAXED) == obj_tid();
}

/* Frees p (validated as a block of slab s in seg) from any thread; mine is the calling
 * thread's cache of the same space, or NULL. */
static inline void obj_free(obj_bins *mine, obj_segment *seg, obj_slab *s, void *p) {
  if (obj_likely(obj_is_local(s)))
    obj_free_local(s, p);
  else if (mine)
    obj_free_remote(mine, seg, s, (obj_block *)p);
  else
    obj_free_remote_now(seg, s, (obj_block *)p);
}

#endif /* MAPALLOC_OBJ_INLINE_H */
