/* Object layer, part 2: per-thread bins, the slow paths, remote frees, parking and
 * takeover, trimming. See obj.h for the model and the threading rules. */
#include "obj/obj.h"

#include <limits.h>
#include <time.h>

#include "obj/obj_check.h"
#include "obj/obj_internal.h"

/* ---- bin lists ------------------------------------------------------------------------ */

static void partial_push(obj_bin *bin, obj_slab *s) {
  MA_CHECK(s->active && s->notify == INT32_MAX && s->bin_idx == bin->idx,
           "partial push of slab %p: active %u notify %d bin %u/%u", (void *)s, s->active,
           s->notify, s->bin_idx, bin->idx);
  obj_slab_set_notify(s, 0);
  s->prev = NULL;
  s->next = bin->partial;
  if (bin->partial) bin->partial->prev = s;
  bin->partial = s;
}

static void partial_unlink(obj_bin *bin, obj_slab *s) {
  MA_CHECK(s->notify == 0 && (s->prev ? s->prev->next == s : bin->partial == s) &&
               (!s->next || s->next->prev == s),
           "partial unlink of slab %p not on bin %u's partial list: notify %d prev %p next %p "
           "head %p",
           (void *)s, bin->idx, s->notify, (void *)s->prev, (void *)s->next, (void *)bin->partial);
  if (s->prev)
    s->prev->next = s->next;
  else
    bin->partial = s->next;
  if (s->next) s->next->prev = s->prev;
  s->next = s->prev = NULL;
}

/* bs->retained is written by its owner (or the holder of the lock that stands for it) and
 * read by statistics from any thread: relaxed stores, plain on x86. */
static void retained_add(obj_bins *bs, size_t len) {
  __atomic_store_n(&bs->retained, bs->retained + len, __ATOMIC_RELAXED);
}

static void retained_sub(obj_bins *bs, size_t len) {
  __atomic_store_n(&bs->retained, bs->retained - len, __ATOMIC_RELAXED);
}

/* ---- slabs ---------------------------------------------------------------------------- */

static size_t slab_len(const obj_segment *seg, const obj_slab *s) {
  char *lo, *hi;
  obj_slab_range(seg, (uint32_t)(s - seg->slabs), &lo, &hi);
  return (size_t)(hi - lo);
}

static void slab_activate(obj_bins *bs, obj_bin *bin, obj_segment *seg, uint32_t i) {
  obj_slab *s = &seg->slabs[i];
  MA_CHECK(!s->active && ((seg->free_mask >> i) & 1) && seg->nactive < seg->nslabs,
           "activating slab %u of segment %p: active %u free_mask %#llx nactive %u", i, (void *)seg,
           s->active, (unsigned long long)seg->free_mask, seg->nactive);
  char *lo, *hi;
  obj_slab_range(seg, i, &lo, &hi);
  uintptr_t a = bin->align;
  char *start = (char *)(((uintptr_t)lo + a - 1) & ~(a - 1));
  s->start = start;
  s->stride = bin->stride;
  s->capacity = (uint32_t)((size_t)(hi - start) / bin->stride);
  unsigned k = (unsigned)__builtin_ctz(bin->stride);
  uint64_t odd = bin->stride >> k, inv = odd; /* Newton: 5 steps give 64 correct bits */
  for (int step = 0; step < 5; step++) inv *= 2 - odd * inv;
  s->inv = inv;
  s->inv_shift = (uint8_t)k;
  __atomic_store_n(&s->carved, 0, __ATOMIC_RELAXED);
  s->free = s->local_free = NULL;
  s->notify = -1;
  s->cnt = 1; /* used 0 */
  s->bin_idx = bin->idx;
  s->bin_off = bs->space->bin_off_base + ((uint32_t)bin->idx << OBJ_BIN_OFF_SHIFT);
  s->active = 1;
  s->next = s->prev = NULL;
  __atomic_store_n(&s->owner_tid, obj_slab_tid(bs), __ATOMIC_RELAXED);
  seg->free_mask &= ~((uint64_t)1 << i);
  seg->nactive++;
  __atomic_add_fetch(&bs->space->capacity, s->capacity, __ATOMIC_RELAXED);
  bs->active_bytes += (size_t)(hi - lo);
  if (bs->active_bytes > bs->peak_bytes) bs->peak_bytes = bs->active_bytes;
}

static void bins_release_segment(obj_bins *bs, obj_segment *seg) {
  for (uint32_t i = 0; i < seg->nslabs; i++) {
    obj_slab *s = &seg->slabs[i];
    if (!s->active && s->committed) retained_sub(bs, slab_len(seg, s));
  }
  obj_seg_unlink(&bs->segs[seg->kind], seg);
  obj_segment_release(seg);
}

/* The first free slab of seg that is still committed (retained), or -1. */
static int seg_committed_free(const obj_segment *seg) {
  for (uint64_t c = seg->free_mask; c; c &= c - 1) {
    uint32_t i = (uint32_t)__builtin_ctzll(c);
    if (seg->slabs[i].committed) return (int)i;
  }
  return -1;
}

/* An active slab of bs with no block out goes back to its segment. Returns true when
 * that emptied and released the whole segment. */
static bool slab_retire(obj_bins *bs, obj_slab *s) {
  obj_segment *seg = obj_segment_of_slab(s);
  MA_CHECK(s->active && obj_slab_used(s) == 0 && seg->owner == bs,
           "retiring slab %p: active %u used %d (cnt %d notify %d), owner %p not %p", (void *)s,
           s->active, obj_slab_used(s), s->cnt, s->notify, (void *)seg->owner, (void *)bs);
  obj_bin *bin = &bs->bins[s->bin_idx];
  if (s->notify == 0) partial_unlink(bin, s);
  if (bin->cur == s) bin->cur = &obj_empty_slab;
  __atomic_sub_fetch(&bs->space->capacity, s->capacity, __ATOMIC_RELAXED);
  s->active = 0;
  __atomic_store_n(&s->carved, 0, __ATOMIC_RELAXED); /* no pointer passes obj_block_index */
  s->free = s->local_free = NULL;
  s->fresh = 0;
  __atomic_store_n(&s->owner_tid, 0, __ATOMIC_RELAXED);
  seg->free_mask |= (uint64_t)1 << (s - seg->slabs);
  seg->nactive--;
  size_t len = slab_len(seg, s);
  bs->active_bytes = bs->active_bytes > len ? bs->active_bytes - len : 0;
  if (seg->kind == OBJ_NSHIFTS - 1) { /* a one-slab segment goes at once: never retained */
    obj_seg_unlink(&bs->segs[seg->kind], seg);
    obj_segment_release(seg);
    return true;
  }
  /* Retention: the slab stays committed (reusable without a fault or a syscall) while the
   * bins retains less than its recent peak >> OBJ_RETAIN_SHIFT (at least OBJ_RETAIN_BYTES); the
   * purge check gives it back after the space's purge delay. */
  size_t cap = bs->peak_bytes >> OBJ_RETAIN_SHIFT;
  if (cap < OBJ_RETAIN_BYTES) cap = OBJ_RETAIN_BYTES;
  int delay = bs->space->purge_delay_ms;
  if (delay != 0 && bs->retained + len <= cap) {
    uint64_t now = delay > 0 ? obj_now_ms() : 0;
    if (bs->retained == 0) bs->retained_since = now;
    s->retired_ms = (uint32_t)now;
    retained_add(bs, len);
  } else {
    obj_slab_decommit(seg, s);
  }
  /* An empty segment goes back unless it is the only one of its kind or, in a space that
   * keeps segments (the heap while its background purger runs), retains a slab: then the
   * purge that decommits its last retained slab unmaps it (bins_purge). A burst that empties
   * whole segments and fills them again soon (sh6bench's) would otherwise unmap and fault
   * back all it freed. */
  if (seg->nactive == 0 && (seg->next || seg->prev) &&
      !(__atomic_load_n(&bs->space->keep_segments, __ATOMIC_RELAXED) &&
        seg_committed_free(seg) >= 0)) {
    bins_release_segment(bs, seg);
    return true;
  }
  return false;
}

/* splitmix64: the secure mode's shuffles (quality matters less than cost here). */
static uint64_t carve_rand(uint64_t *state) {
  uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

/* Secure mode: the n blocks from `first` are linked in a random order, so the address of
 * the next allocation is not predictable from the last, and each carries the free tag, so
 * a free of a block that was purged and re-carved is still a double free.
 * The order is shuffled within windows of obj_shuffle_window blocks taken in address
 * order: programs that walk their objects in allocation order pay for any shuffle (the
 * hardware prefetchers lose the stride), so the window is small, 4 by default, set per run
 * with MAPALLOC_SHUFFLE. docs/hardening.md has the entropy it leaves and the measured
 * cost of each window. */
static obj_block *carve_shuffled(obj_slab *s, char *first, uint32_t n, obj_block *end) {
  uint16_t order[OBJ_CARVE_MAX] = {0}; /* (secure carve only; the analyser can't see n) */
  uint64_t st = obj_link_key ^ (uintptr_t)first ^ __builtin_ia32_rdtsc();
  uint32_t win = obj_shuffle_window;
  for (uint32_t i = 0; i < n; i++) order[i] = (uint16_t)i;
  for (uint32_t w = 0; w < n; w += win) {
    uint32_t m = n - w < win ? n - w : win;
    for (uint32_t i = m - 1; i > 0; i--) {                                /* Fisher-Yates */
      uint32_t j = (uint32_t)(((carve_rand(&st) >> 32) * (i + 1)) >> 32); /* no division */
      uint16_t t = order[w + i];
      order[w + i] = order[w + j];
      order[w + j] = t;
    }
  }
  obj_block *head = end;
  for (uint32_t i = n; i-- > 0;) { /* backwards: order[0] ends up at the head */
    obj_block *b = (obj_block *)(first + (size_t)order[i] * s->stride);
    obj_link_open_rt(b);
    obj_link_set(b, head);
    obj_link_close_rt(b);
    head = b;
  }
  return head;
}

/* Blocks carved at a time: a page's worth of small blocks, at least 16 of them while that
 * touches at most OBJ_CARVE_BYTES (each carved block's link word touches its page), fewer for
 * larger blocks, down to 1: a thread that takes 2 blocks of 64 KiB must not fault in 16
 * pages of 16 different blocks (with 200 threads each using a few blocks of every medium
 * class, that was 1.5 MiB of RSS per thread). Secure mode carves at least a shuffle window. */
static uint32_t carve_count(const obj_slab *s) {
  uint32_t n = (uint32_t)(os_page_size() / s->stride);
  if (n < 16) {
    n = OBJ_CARVE_BYTES / s->stride;
    if (n > 16) n = 16;
    if (obj_secure_on() && n < obj_shuffle_window) n = obj_shuffle_window;
    if (n < 1) n = 1;
  }
  return n > OBJ_CARVE_MAX ? OBJ_CARVE_MAX : n;
}

/* Takes the next blocks of s to carve: carve_count's worth, or `want` when fewer (a secure
 * carve keeps at least its shuffle window); publishes them in s->carved (a secure link check
 * accepts only carved blocks) and returns how many, the first at *first. */
static uint32_t carve_span(obj_slab *s, uint32_t want, char **first) {
  uint32_t rem = s->capacity - (uint32_t)s->carved;
  uint32_t n = carve_count(s);
  uint32_t least = obj_secure_on() ? obj_shuffle_window : 1;
  if (want < least) want = least;
  if (n > want) n = want;
  if (n > rem) n = rem;
  *first = s->start + (size_t)s->carved * s->stride;
  __atomic_store_n(&s->carved, s->carved + n, __ATOMIC_RELAXED);
  return n;
}

/* Links the n (>= 1) blocks of s from p on in address order, the last one to `end`, each
 * tagged free. (Two loops: the valgrind test stays out of the common one.) */
static void carve_in_order(const obj_slab *s, char *p, uint32_t n, obj_block *end) {
  if (obj_unlikely(obj_tracking)) {
    for (uint32_t i = 1; i <= n; i++, p += s->stride) {
      obj_link_open_vg((obj_block *)p);
      obj_link_set((obj_block *)p, i < n ? (obj_block *)(p + s->stride) : end);
      obj_link_close_vg((obj_block *)p);
    }
    return;
  }
  for (uint32_t i = 1; i <= n; i++, p += s->stride) {
    obj_block *b = (obj_block *)p;
    obj_link_open(b); /* ASan: uncarved memory is poisoned, as are free blocks */
    obj_link_set(b, i < n ? (obj_block *)(p + s->stride) : end);
    obj_link_close(b);
  }
}

/* Links the n blocks of s from p on, shuffled in a secure run (carve_shuffled), the last
 * one to `end`; returns the first. */
static obj_block *carve_blocks(obj_slab *s, char *p, uint32_t n, obj_block *end) {
  if (obj_secure_on() && obj_shuffle_window > 1) return carve_shuffled(s, p, n, end);
  carve_in_order(s, p, n, end);
  return (obj_block *)p;
}

/* Carves the next blocks of s (carve_span) onto its free list. */
static void slab_carve(obj_slab *s, uint32_t want) {
  char *p;
  uint32_t n = carve_span(s, want, &p);
  s->free = carve_blocks(s, p, n, NULL);
  s->free_zero = s->fresh;
}

/* Owner: gives s a non-empty free list if it has any block available: its own frees,
 * then remote frees filed from the inbox, then untouched blocks (at most `want` carved). */
static bool slab_refill(obj_slab *s, uint32_t want) {
  if (s->free) return true;
  if (s->local_free) {
    s->free = s->local_free;
    s->local_free = NULL;
    s->free_zero = 0;
    return true;
  }
  if (s->carved < s->capacity) {
    slab_carve(s, want);
    return true;
  }
  return false;
}

static bool slab_has_room(const obj_slab *s) {
  return s->free || s->local_free || s->carved < s->capacity;
}

/* After remote frees were filed into s; true if its segment went. */
static bool slab_after_collect(obj_bins *bs, obj_slab *s) {
  if (s->notify == -1) return false; /* current slab: stays */
  if (s->notify == INT32_MAX && slab_has_room(s)) partial_push(&bs->bins[s->bin_idx], s);
  if (obj_slab_used(s) == 0) return slab_retire(bs, s);
  return false;
}

/* ---- remote frees ----------------------------------------------------------------------
 * A thread that frees a block of a slab it does not own (a "remote" free) checks and tags
 * it as a local free would (double-free tag), then chains it into its outbox slot for the
 * slab's owner cache (seg->owner, which never changes while the segment lives). When the
 * slot holds OBJ_OUTBOX_BATCH blocks, when another owner needs the slot, and at the freeing
 * thread's slow paths, trims and exit, the chain is pushed onto the owner's inbox with one
 * CAS (obj_bins.inbox, a stack of chains; the owner takes it whole with one exchange). So a
 * remote free costs no atomic operation and writes no line the owner writes, a batch one
 * CAS, and the owner files each block in O(1) (obj_bins_file_inbox): the cost is per block
 * collected, not per segment owned. Blocks waiting in an outbox or inbox keep their slab
 * in use (they are counted in `used` until filed), so neither the slab nor its segment can
 * go while a pointer to it is in flight.
 *
 * The chain links are stored like free-list links (encoded in secure mode), but cross
 * slabs: obj_bins_file_inbox checks each block exactly (segment map, owner, carved block) before it
 * touches it, in both builds. */

static obj_block *chain_next(obj_block *b) {
#if OBJ_SECURE
  return (obj_block *)((uintptr_t)b->next ^ (uintptr_t)b ^ obj_link_key);
#else
  return b->next;
#endif
}

/* Pushes the chain head..tail onto one of an owner's stacks (inbox, inbatch). */
static void stack_push(obj_block **stack, obj_block *head, obj_block *tail) {
  obj_block *old = __atomic_load_n(stack, __ATOMIC_RELAXED);
  do {
    obj_link_open_rt(tail);
    obj_link_set(tail, old);
    obj_link_close_rt(tail);
  } while (
      !__atomic_compare_exchange_n(stack, &old, head, true, __ATOMIC_RELEASE, __ATOMIC_RELAXED));
}

static void inbox_push(obj_bins *to, obj_block *head, obj_block *tail) {
  stack_push(&to->inbox, head, tail);
}

static void outbox_send(obj_bins *bs, unsigned i) {
  obj_outbox *o = &bs->out[i];
  inbox_push(o->to, o->head, o->tail);
  o->head = o->tail = NULL;
  o->n = 0;
  bs->out_used &= (uint8_t) ~(1u << i);
}

void obj_outbox_flush(obj_bins *bs) {
  while (bs->out_used) outbox_send(bs, (unsigned)__builtin_ctz(bs->out_used));
}

/* Checks and tags b as freed (aborts on a double free); returns its owner cache. */
static obj_bins *remote_tag(obj_segment *seg, obj_slab *s, obj_block *b, obj_block *next) {
  obj_link_open_rt(b);
  if (obj_block_is_free(b)) obj_fatal("double free", b);
  obj_poison(b, s->stride);
  obj_link_open_rt(b);
  obj_link_set(b, next);
  obj_link_close_rt(b);
  return __atomic_load_n(&seg->owner, __ATOMIC_RELAXED);
}

/* The outbox slot of mine for seg's owner, emptied first if it held another owner's. */
static obj_outbox *outbox_for(obj_bins *mine, obj_segment *seg, unsigned *slot) {
  obj_bins *to = __atomic_load_n(&seg->owner, __ATOMIC_RELAXED);
  unsigned i = (unsigned)((uintptr_t)to >> 12) & (OBJ_OUTBOX_SLOTS - 1);
  obj_outbox *o = &mine->out[i];
  if (o->to != to) {
    if (o->n) outbox_send(mine, i);
    o->to = to;
  }
  *slot = i;
  return o;
}

static void outbox_add(obj_bins *mine, obj_outbox *o, unsigned i, obj_block *b) {
  if (!o->head) o->tail = b;
  o->head = b;
  mine->out_used |= (uint8_t)(1u << i);
  if (++o->n >= OBJ_OUTBOX_BATCH) outbox_send(mine, i);
}

void obj_free_remote(obj_bins *mine, obj_segment *seg, obj_slab *s, obj_block *b) {
  unsigned i;
  obj_outbox *o = outbox_for(mine, seg, &i);
  (void)remote_tag(seg, s, b, o->head);
  outbox_add(mine, o, i, b);
}

void obj_send_remote(obj_bins *mine, obj_segment *seg, obj_block *b) {
  unsigned i;
  obj_outbox *o = outbox_for(mine, seg, &i);
  obj_link_open_rt(b);
  obj_link_set(b, o->head);
  obj_link_close_rt(b);
  outbox_add(mine, o, i, b);
}

void obj_slab_put(obj_slab *s, obj_block *b) {
  bool vg = obj_tracking;
  if (obj_unlikely(vg)) obj_link_open_vg(b);
  s->free_zero = 0;
  obj_slab_push(s, b);
  /* (after a notify that may have retired the slab: memcheck's marks outlive a mapping) */
  if (obj_unlikely(vg)) obj_link_close_vg(b);
}

void obj_slab_put_run(obj_slab *s, obj_block *first, obj_block *last, uint32_t k) {
  if (k == 1) {
    obj_slab_put(s, first);
    return;
  }
  obj_link_open_rt(last);
  obj_link_set(last, s->free);
  obj_link_close_rt(last);
  s->free = first;
  s->free_zero = 0;
  s->cnt -= (int32_t)k;
  /* The checks of a notify hold on the end state as well as after each of k pushes: a count
   * below zero is a double free, a full slab goes back on its bin's list, an empty one is
   * retired. */
  if (s->cnt <= 0) obj_slab_notify(s);
}

static void bins_housekeep(obj_bins *bs);
static bool bin_refill(obj_bins *bs, obj_bin *bin, uint32_t want);

/* Carves up to n blocks of s, the current slab, whose lists are empty and which has blocks
 * never carved, straight into a chain linked to `end` (tagged free, in the order slab_carve
 * would link them: shuffled in a secure run): what slab_carve and the walk of
 * obj_bin_take_batch would do, in one pass. Returns how many. (Not under valgrind: the
 * heap's tracked paths take no batches.) */
static uint32_t slab_carve_chain(obj_slab *s, uint32_t n, obj_block *end, obj_block **head) {
  char *p;
  uint32_t k = carve_span(s, n, &p);
  *head = carve_blocks(s, p, k, end);
  s->cnt += (int32_t)k;
  return k;
}

uint32_t obj_bin_take_batch(obj_bins *bs, obj_bin *bin, uint32_t n, obj_block *end,
                            obj_block **head) {
  obj_slab *s = bin->cur;
  if (s->free == NULL) {
    bins_housekeep(bs); /* as a refill does first: it may file remote frees into s */
    s = bin->cur;
    /* (A secure carve takes a whole shuffle window: one for fewer blocks goes to s->free.) */
    bool whole = !obj_secure_on() || n >= obj_shuffle_window;
    if (s->free == NULL && s->local_free == NULL && s->carved < s->capacity && !obj_tracking &&
        whole)
      return slab_carve_chain(s, n, end, head);
    if (s->free == NULL && !bin_refill(bs, bin, n)) return 0;
    s = bin->cur;
  }
  obj_block *b = s->free, *last = b;
  uint32_t k = 1;
  for (;;) { /* (every block is tagged free: a free of one still in a cache is caught) */
    obj_link_open_rt(last);
    obj_block *nx = k < n ? obj_link_next(s, last) : NULL;
    obj_link_close_rt(last);
    if (!nx) break;
    last = nx;
    k++;
  }
  obj_link_open_rt(last);
  s->free = obj_link_next(s, last);
  obj_link_set(last, end);
  obj_link_close_rt(last);
  s->cnt += (int32_t)k;
  *head = b;
  return k;
}

void obj_free_remote_now(obj_segment *seg, obj_slab *s, obj_block *b) {
  obj_bins *to = remote_tag(seg, s, b, NULL);
  inbox_push(to, b, b);
}

/* b, a block on one of bs's stacks, checked exactly before anything reads it: a carved
 * block of an active slab of a segment bs owns. Aborts otherwise. */
static obj_slab *mail_slab(const obj_bins *bs, obj_block *b) {
  obj_segment *seg = obj_segment_of(b);
  if (obj_unlikely(seg == NULL || seg->owner != bs)) obj_fatal("corrupted remote free list", b);
  obj_slab *s = obj_slab_of(seg, b);
  if (obj_unlikely(!s->active || obj_block_q(s, (uintptr_t)b) >= obj_slab_carved(s)))
    obj_fatal("corrupted remote free list", b);
  return s;
}

/* Files b (checked) into its slab's local_free list, with the list moves and retirements a
 * local free would cause; returns the block that followed b on its chain. */
static obj_block *file_one(obj_bins *bs, obj_block *b) {
  obj_slab *s = mail_slab(bs, b);
  MA_CHECK(obj_slab_used(s) > 0,
           "remote free %p filed into slab %p with used %d (cnt %d notify %d)", (void *)b,
           (void *)s, obj_slab_used(s), s->cnt, s->notify);
  obj_link_open_rt(b);
  obj_block *next = chain_next(b);
  obj_link_set(b, s->local_free);
  obj_link_close_rt(b);
  s->local_free = b;
  s->cnt--; /* used-- */
  if (s->notify != -1) (void)slab_after_collect(bs, s);
  return next;
}

void obj_bins_file_chain(obj_bins *bs, obj_block *b) {
  while (b) b = file_one(bs, b);
}

static obj_block *stack_take(obj_block **stack) {
  if (__atomic_load_n(stack, __ATOMIC_RELAXED) == NULL) return NULL;
  return __atomic_exchange_n(stack, NULL, __ATOMIC_ACQUIRE);
}

/* Owner (or the claimer of a parked bins): files every block of both stacks into its
 * slab (a batch's header is ignored: its chain is an ordinary one). */
void obj_bins_file_inbox(obj_bins *bs) {
  obj_bins_file_chain(bs, stack_take(&bs->inbox));
  obj_bins_file_chain(bs, stack_take(&bs->inbatch));
}

static bool bins_has_mail(const obj_bins *bs) {
  return __atomic_load_n(&bs->inbox, __ATOMIC_RELAXED) != NULL ||
         __atomic_load_n(&bs->inbatch, __ATOMIC_RELAXED) != NULL;
}

/* ---- batches --------------------------------------------------------------------------
 * A thread cache's trim gives back blocks of one bin; those of one owner go to it as a
 * batch (obj_send_batch): a chain head..tail, like an inbox chain, pushed onto the owner's
 * inbatch stack with one CAS. Its head block carries the tail and the length in its third
 * and fourth words, sealed with a hash keyed by the process cookie (bins of 32-byte blocks and up;
 * a 16-byte block has no room, and such chains go to the inbox). So the owner can move a whole
 * batch into its own thread cache in O(1), reading two blocks: the blocks stay "used" for their
 * slabs, as any cached block, so no slab is touched, and the cache's pops check each block's tag
 * (exactly, in secure mode) as they check any cached block. The header is checked before it is
 * believed: the seal (a write after free over it breaks it, but for a chance of 2^-40) and the
 * tail, exactly as a filed block. Anything else (a broken seal, a caller without a thread cache, a
 * list without room) files block by block, each block checked exactly. */
typedef struct batch_hdr {
  obj_block link;
  uintptr_t tail;
  uintptr_t seal; /* n | bin << 16 | a keyed hash of tail, n and bin << 24 */
} batch_hdr;

static uintptr_t batch_seal(uintptr_t tail, uint32_t n, uint32_t bin) {
  uintptr_t meta = (uintptr_t)bin << 16 | n;
  uintptr_t h = (tail ^ obj_cookie ^ meta) * (uintptr_t)0x9e3779b97f4a7c15u;
  h = (h ^ h >> 29) * (uintptr_t)0xbf58476d1ce4e5b9u;
  return meta | h << 24;
}

void obj_send_batch(obj_bins *to, obj_block *head, obj_block *tail, uint32_t n) {
  /* (head is in flight, counted used: its slab stays) */
  const obj_slab *s = obj_slab_of(obj_segment_of(head), head);
  if (s->stride < sizeof(batch_hdr) || n > OBJ_BATCH_MAX || obj_tracking) {
    inbox_push(to, head, tail);
    return;
  }
  batch_hdr *h = (batch_hdr *)head;
  obj_unpoison(&h->tail, 2 * sizeof(uintptr_t));
  h->tail = (uintptr_t)tail;
  h->seal = batch_seal((uintptr_t)tail, n, s->bin_idx);
  obj_poison(&h->tail, 2 * sizeof(uintptr_t));
  stack_push(&to->inbatch, head, tail);
}

obj_block *obj_bins_take_batches(obj_bins *bs) {
  return stack_take(&bs->inbatch);
}

bool obj_batch_open(obj_bins *bs, obj_block *head, obj_batch *m) {
  const obj_slab *s = mail_slab(bs, head);
  if (s->stride < sizeof(batch_hdr)) return false;
  batch_hdr *h = (batch_hdr *)head;
  obj_unpoison(&h->tail, 2 * sizeof(uintptr_t));
  uintptr_t tail = h->tail, seal = h->seal;
  obj_poison(&h->tail, 2 * sizeof(uintptr_t));
  uint32_t n = (uint32_t)seal & 0xffff;
  if (n == 0 || seal != batch_seal(tail, n, s->bin_idx)) return false;
  obj_block *t = (obj_block *)tail;
  const obj_slab *ts = mail_slab(bs, t); /* a sealed tail that fails: aborts */
  obj_link_open_rt(t);
  bool tagged = obj_block_is_free(t);
  obj_link_close_rt(t);
  if (obj_unlikely(ts->bin_idx != s->bin_idx || !tagged))
    obj_fatal("corrupted remote free list", t);
  *m = (obj_batch){.tail = t, .n = n, .bin = s->bin_idx};
  return true;
}

obj_block *obj_batch_splice(const obj_batch *m, obj_block *link) {
  obj_block *t = m->tail;
  obj_link_open_rt(t);
  obj_block *next = chain_next(t);
  obj_link_set(t, link);
  obj_link_close_rt(t);
  return next;
}

obj_block *obj_batch_file(obj_bins *bs, obj_block *head, const obj_batch *m) {
  obj_block *b = head;
  for (uint32_t i = 0; i < m->n; i++) {
    if (obj_unlikely(b == NULL)) obj_fatal("corrupted remote free list", head);
    b = file_one(bs, b);
  }
  return b;
}

/* ---- the allocation slow path ------------------------------------------------------- */

static obj_slab *slab_acquire(obj_bins *bs, obj_bin *bin) {
  obj_segment *seg;
  if (bin->kind != OBJ_NSHIFTS - 1) {
    /* A retained slab of any segment first (no fault, no mapping): a burst that emptied
     * whole segments refills them, not a new slab of the first segment with room. */
    for (seg = bs->retained ? bs->segs[bin->kind] : NULL; seg; seg = seg->next) {
      int i = seg_committed_free(seg);
      if (i < 0) continue;
      retained_sub(bs, slab_len(seg, &seg->slabs[i]));
      slab_activate(bs, bin, seg, (uint32_t)i);
      return &seg->slabs[i];
    }
    /* Else a fresh slab: every committed free slab is counted in bs->retained, so none is
     * left here (obj_bins_check verifies the count). */
    for (seg = bs->segs[bin->kind]; seg; seg = seg->next) {
      if (!seg->free_mask) continue;
      uint32_t pick = (uint32_t)__builtin_ctzll(seg->free_mask);
      obj_slab *s = &seg->slabs[pick];
      MA_CHECK(!s->committed, "free slab %u of segment %p committed, retained %zu", pick,
               (void *)seg, bs->retained);
      int rc = obj_segment_grow(seg, pick); /* (pick is its lowest free slab) */
      if (rc == -EEXIST) continue;          /* it cannot grow: the next segment */
      if (rc != 0 || obj_slab_commit(seg, s) != 0) return NULL;
      slab_activate(bs, bin, seg, pick);
      return s;
    }
  }
  seg = obj_segment_create(bs->space, bin->slab_shift, (size_t)bin->stride + bin->align);
  if (!seg) return NULL;
  if (obj_slab_commit(seg, &seg->slabs[0]) != 0) {
    obj_segment_release(seg);
    errno = ENOMEM;
    return NULL;
  }
  obj_seg_link(&bs->segs[seg->kind], seg);
  __atomic_store_n(&seg->owner, bs, __ATOMIC_SEQ_CST);
  slab_activate(bs, bin, seg, 0);
  return &seg->slabs[0];
}

/* What the owner does each time a current slab's free list runs dry: a trim another thread
 * asked for, the purge of expired empty slabs, its outbox sent, its inbox filed. */
static void bins_housekeep(obj_bins *bs) {
  unsigned epoch = __atomic_load_n(&bs->space->trim_epoch, __ATOMIC_RELAXED);
  if (obj_unlikely(epoch != bs->trim_seen)) {
    bs->trim_seen = epoch;
    obj_bins_trim(bs);
  }
  if (bs->retained) (void)obj_bins_purge_check(bs);
  if (bs->out_used) obj_outbox_flush(bs);
  obj_bins_file_inbox(bs);
}

bool obj_bin_refill(obj_bins *bs, obj_bin *bin) {
  bins_housekeep(bs);
  return bin_refill(bs, bin, UINT32_MAX);
}

/* obj_bin_refill after its housekeeping; a list carved from untouched blocks holds at most
 * `want` (>= 1) of them, so that a thread's first blocks of a class touch no more pages than
 * it asks for. */
static bool bin_refill(obj_bins *bs, obj_bin *bin, uint32_t want) {
  obj_slab *s = bin->cur;
  MA_CHECK(s == &obj_empty_slab || (s->active && s->notify == -1 && s->bin_idx == bin->idx),
           "refill of bin %u: current slab %p active %u notify %d bin %u", bin->idx, (void *)s,
           s->active, s->notify, s->bin_idx);
  if (s != &obj_empty_slab) {
    if (slab_refill(s, want)) return true;
    obj_slab_set_notify(s, INT32_MAX); /* full: unlisted until a free arrives */
    bin->cur = &obj_empty_slab;
  }
  while ((s = bin->partial) != NULL) {
    partial_unlink(bin, s);
    obj_slab_set_notify(s, -1);
    bin->cur = s;
    if (slab_refill(s, want)) return true;
    obj_slab_set_notify(s, INT32_MAX);
    bin->cur = &obj_empty_slab;
  }
  s = slab_acquire(bs, bin);
  if (!s) {
    /* Out of budget: give back what parked caches and this thread retain, try again. */
    obj_space_trim(bs->space);
    if (bs->retained) obj_bins_trim(bs);
    s = slab_acquire(bs, bin);
    if (!s) {
      errno = ENOMEM;
      return false;
    }
  }
  bin->cur = s;
  return slab_refill(s, want);
}

void *obj_bin_alloc_slow(obj_bins *bs, obj_bin *bin) {
  if (!obj_bin_refill(bs, bin)) return NULL;
  return obj_bin_alloc(bs, bin);
}

/* Reached from frees only (the pools' inline free jumps here): errno is kept, as free
 * keeps it, whatever the purge or segment unmap of a retirement runs into. */
void obj_slab_notify(obj_slab *s) {
  MA_CHECK(s->active && (s->notify == -1 || s->notify == 0 || s->notify == INT32_MAX),
           "slab %p: active %u notify %d (cnt %d): not -1, 0 or INT32_MAX", (void *)s, s->active,
           s->notify, s->cnt);
  if (obj_slab_used(s) < 0) obj_fatal("double free", s->free);
  MA_CHECK(obj_slab_used(s) <= (int32_t)s->carved, "slab %p used %d > carved %u", (void *)s,
           obj_slab_used(s), (unsigned)s->carved);
  obj_segment *seg = obj_segment_of_slab(s);
  obj_bins *bs = __atomic_load_n(&seg->owner, __ATOMIC_RELAXED);
  if (s->notify == INT32_MAX) partial_push(&bs->bins[s->bin_idx], s);
  if (s->notify == 0 && obj_slab_used(s) == 0) {
    int saved = errno;
    (void)slab_retire(bs, s);
    if (bs->retained) (void)obj_bins_purge_check(bs);
    errno = saved;
  }
}

/* ---- bins ------------------------------------------------------------------------------- */

/* Stores tid as the owner of every active slab of bs (takeover, parking). */
static void bins_set_owner(obj_bins *bs, uintptr_t tid) {
  for (int k = 0; k < OBJ_NSHIFTS; k++)
    for (obj_segment *seg = bs->segs[k]; seg; seg = seg->next)
      for (uint32_t i = 0; i < seg->nslabs; i++)
        if (seg->slabs[i].active) __atomic_store_n(&seg->slabs[i].owner_tid, tid, __ATOMIC_RELEASE);
}

obj_bins *obj_bins_get(obj_space *sp, uint32_t nbins, const uint32_t *strides,
                       const uint32_t *aligns) {
  pthread_mutex_lock(&sp->lock);
  obj_bins *bs;
  for (bs = sp->all_bins; bs; bs = bs->next_all) {
    if (bs->in_use || bs->nbins != nbins) continue;
    uint32_t i = 0;
    while (i < nbins && bs->bins[i].stride == strides[i]) i++;
    if (i == nbins) break;
  }
  if (!bs) {
    size_t ps = os_page_size();
    size_t sz = (sizeof(obj_bins) + nbins * sizeof(obj_bin) + ps - 1) & ~(ps - 1);
    bs = os_alloc(sz, 0, false);
    if (!bs) {
      pthread_mutex_unlock(&sp->lock);
      errno = ENOMEM;
      return NULL;
    }
    bs->space = sp;
    bs->alloc_size = sz;
    bs->nbins = nbins;
    for (uint32_t i = 0; i < nbins; i++) {
      obj_bin *b = &bs->bins[i];
      uint32_t a = aligns && aligns[i] > 8 ? aligns[i] : 8;
      b->cur = &obj_empty_slab;
      b->stride = strides[i];
      b->align = a;
      b->slab_shift = obj_slab_shift_for(strides[i], a);
      b->kind = b->slab_shift == OBJ_SHIFT_SOLO ? OBJ_NSHIFTS - 1
                                                : (uint8_t)(b->slab_shift - OBJ_SLAB_MIN);
      b->idx = (uint16_t)i;
    }
    bs->next_all = sp->all_bins;
    sp->all_bins = bs;
  }
  bs->in_use = true;
  bs->tid = obj_tid();
  bs->trim_seen = __atomic_load_n(&sp->trim_epoch, __ATOMIC_RELAXED);
  pthread_mutex_unlock(&sp->lock);
  /* A parked cache is taken over whole: its live slabs become this thread's. */
  bins_set_owner(bs, obj_slab_tid(bs));
  obj_bins_file_inbox(bs);
  return bs;
}

uint64_t obj_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

bool obj_space_tight(void) {
  static uint64_t asked_ms; /* (atomic) when os_space_limited was last asked, + 1 */
  static bool tight;        /* (atomic) its answer */
  uint64_t now = obj_now_ms() + 1, last = __atomic_load_n(&asked_ms, __ATOMIC_RELAXED);
  if (last && now - last < 50) return __atomic_load_n(&tight, __ATOMIC_RELAXED);
  bool t = os_space_limited(); /* (racing threads both ask: same answer) */
  __atomic_store_n(&tight, t, __ATOMIC_RELAXED);
  __atomic_store_n(&asked_ms, now, __ATOMIC_RELAXED);
  return t;
}

/* Returns to the OS the retained empty slabs emptied `age` ms or more before `now`, and
 * unmaps the empty segments that leaves (but the last of each kind); the peak that scales
 * retention restarts from the current footprint. Returns the idle time of the oldest slab
 * kept (0: none kept, or every purge failed). */
static uint64_t bins_purge(obj_bins *bs, uint64_t now, uint64_t age) {
  int saved = errno; /* free() must not change errno */
  uint64_t kept_idle = 0;
  for (int k = 0; k < OBJ_NSHIFTS; k++) {
    obj_segment *seg = bs->segs[k];
    while (seg) {
      obj_segment *next = seg->next;
      bool kept = false;
      for (uint32_t i = 0; i < seg->nslabs; i++) {
        obj_slab *s = &seg->slabs[i];
        if (s->active || !s->committed) continue;
        uint64_t idle = (uint32_t)((uint32_t)now - s->retired_ms);
        if (idle < age) {
          kept = true;
          kept_idle = idle > kept_idle ? idle : kept_idle;
        } else {
          retained_sub(bs, obj_slab_decommit(seg, s));
        }
      }
      if (!kept && seg->nactive == 0 && (seg->next || seg->prev)) bins_release_segment(bs, seg);
      seg = next;
    }
  }
  bs->peak_bytes = bs->active_bytes;
  __atomic_add_fetch(&bs->space->purges, 1, __ATOMIC_RELAXED);
  if (MA_DEBUG_ON) obj_bins_check_accounting(bs);
  errno = saved;
  return kept_idle;
}

/* Each slab goes back once it has been empty for the delay, not all of them a delay after
 * the first: the slabs a thread empties and refills all the time stay. (With 64 threads on
 * 2 cores, a thread runs a few ms in every hundred: each of its turns found what it kept
 * the turn before past the delay, purged all of it and faulted it back.) */
bool obj_bins_purge_check(obj_bins *bs) {
  int delay = bs->space->purge_delay_ms;
  if (bs->retained == 0 || delay < 0) return false;
  uint64_t now = obj_now_ms();
  if (bs->retained_since == 0) bs->retained_since = now;
  if (now - bs->retained_since < (uint64_t)delay) return false;
  uint64_t kept_idle = bins_purge(bs, now, (uint64_t)delay);
  /* The next pass when the oldest slab kept expires, but a quarter delay from now at the
   * soonest: a pass walks every slab of the thread's segments, and slabs emptied a ms apart
   * would call one every ms (a slab may stay 1.25 delays). A failed purge is retried a
   * delay later. */
  uint64_t most = (uint64_t)delay - (uint64_t)delay / 4;
  bs->retained_since = bs->retained ? now - (kept_idle < most ? kept_idle : most) : 0;
  return true;
}

void obj_bins_trim(obj_bins *bs) {
  obj_outbox_flush(bs);
  obj_bins_file_inbox(bs);
  for (uint32_t i = 0; i < bs->nbins; i++) {
    obj_slab *s = bs->bins[i].cur;
    if (s != &obj_empty_slab && obj_slab_used(s) == 0) (void)slab_retire(bs, s);
  }
  for (int k = 0; k < OBJ_NSHIFTS; k++) {
    obj_segment *seg = bs->segs[k];
    while (seg) {
      obj_segment *next = seg->next;
      for (uint32_t i = 0; i < seg->nslabs; i++) {
        obj_slab *s = &seg->slabs[i];
        if (!s->active && s->committed) retained_sub(bs, obj_slab_decommit(seg, s));
      }
      if (seg->nactive == 0) bins_release_segment(bs, seg);
      seg = next;
    }
  }
  bs->peak_bytes = bs->active_bytes;
  bs->retained_since = 0;
  __atomic_add_fetch(&bs->space->purges, 1, __ATOMIC_RELAXED);
  if (MA_DEBUG_ON) obj_bins_check(bs, NULL); /* the whole cache: a trim is rare */
}

void obj_bins_abandon(obj_bins *bs) {
  obj_space *sp = bs->space;
  obj_bins_trim(bs);
  bins_set_owner(bs, 0); /* no free is local until a thread takes the cache over */
  pthread_mutex_lock(&sp->lock);
  bs->tid = 0;
  bs->in_use = false;
  pthread_mutex_unlock(&sp->lock);
}

void obj_bins_forked(obj_bins *bs) {
  bs->tid = OBJ_TID_FORKED;
  for (int k = 0; k < OBJ_NSHIFTS; k++)
    for (obj_segment *seg = bs->segs[k]; seg; seg = seg->next)
      for (uint32_t i = 0; i < seg->nslabs; i++)
        __atomic_store_n(&seg->slabs[i].owner_tid, 0, __ATOMIC_RELAXED);
}

/* Parked caches: each is claimed under the lock (in_use, tid 0) so that no thread takes it
 * over meanwhile, trimmed as its owner would, and parked again. all_bins only grows at its
 * head and next_all never changes, so the walk survives the unlocked stretches. */
void obj_space_trim(obj_space *sp) {
  pthread_mutex_lock(&sp->trim_lock); /* a concurrent trim's claims would be skipped */
  pthread_mutex_lock(&sp->lock);
  for (obj_bins *bs = sp->all_bins; bs; bs = bs->next_all) {
    if (bs->in_use || !bins_has_mail(bs)) continue;
    bs->in_use = true;
    pthread_mutex_unlock(&sp->lock);
    obj_bins_trim(bs);
    pthread_mutex_lock(&sp->lock);
    bs->in_use = false;
  }
  pthread_mutex_unlock(&sp->lock);
  pthread_mutex_unlock(&sp->trim_lock);
}
