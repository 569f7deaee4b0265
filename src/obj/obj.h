/* Object layer: aligned segments carved into slabs of fixed-size blocks, with per-thread
 * caches (obj_bins). Used by ma_pool (src/obj/pool.c) and by the heap (src/malloc/).
 *
 * Model. A segment is OBJ_SEG_SIZE (4 MiB) aligned: a header (magic, space, owner bins, the
 * slab descriptors) then 2^(22-shift) slabs of 2^shift bytes (shift 16..22; slab 0 starts
 * after the header), or one slab for big strides (a "solo" segment, OBJ_SHIFT_SOLO, any
 * multiple of 4 MiB: docs/internals.md has the size names of every layer). The
 * global segment map (obj_segmap: a static root of 1024 leaves, each leaf 4 bytes per 4 MiB
 * chunk of a 256 GiB region, mapped when a segment first lands there) says which chunks
 * belong to one of our segments: pointer -> segment -> slab is O(1) and
 * lock-free, and a pointer we did not hand out is recognised.
 *
 * HOW THE HEAP USES THIS LAYER
 * ----------------------------
 * 1. One obj_space for the heap: obj_space_init(&sp, READ|WRITE, 0, false, 0, "mapalloc-heap").
 *    It owns the accounting (committed/reserved bytes, max_bytes), the segments abandoned
 *    by exited threads and every obj_bins made for it. Never destroyed in the heap.
 * 2. One obj_bins per thread: obj_bins_get(&sp, nbins, strides, aligns) returns a recycled
 *    or new one (metadata from the page layer, never from malloc). Bin i serves blocks of
 *    strides[i] bytes (>= 16, a multiple of 8: the size class; aligns[i] may be NULL = 8,
 *    pass 16 for malloc). Slab size follows the stride (>= 16 blocks per slab). Keep the
 *    pointer in an initial-exec TLS variable; all bins of one space must use the same
 *    strides table (abandoned slabs are re-filed by bin index).
 * (Since 2026-12-04 the heap keeps a thread cache of free blocks in front of these paths
 * and calls the obj functions only in its slow paths, under its heap lock: see
 * src/malloc/heap_internal.h. The pools use them as described here.)
 * 3. Fast paths (inline, no lock, no atomic RMW, no division, no syscall):
 *      p = obj_bin_alloc(bs, &bs->bins[cls]);       NULL + errno = ENOMEM on failure
 *      p = obj_bin_alloc_zero(bs, &bs->bins[cls]);  calloc: no memset on fresh pages
 *      seg = obj_segment_of(p);        NULL: not ours -> "invalid free"; then check
 *                                      seg->space == &sp (a pool's segment is not yours)
 *      s = obj_slab_of(seg, p);  obj_block_index(s, p, &i)  false: not a block start
 *      obj_free(mine, seg, s, p);      owner: LIFO push; other thread: batched per owner
 *                                      in `mine` (the freeing thread's bins, or NULL)
 *    s->stride is the usable size. Slab starts are page aligned, so a block of stride S is
 *    aligned to the largest power of two dividing S (up to the page size): aligned_alloc
 *    can pick a class whose stride the alignment divides. obj_free aborts "mapalloc: double free of
 * 0x..." when the block is already free (a keyed tag in its second word, cleared on alloc).
 *    pool.c's ma_pool_alloc/ma_pool_free show the same paths written out by hand with
 *    obj_segment_of_tagged (one map compare) and obj_slab_push (the owner's push); their
 *    instruction counts are in docs/internals.md.
 * 4. Thread exit: obj_bins_abandon(bs) from the pthread_key destructor: sends the thread's
 *    pending remote frees, files its inbox, returns its empty slabs and segments, and parks
 *    the cache with its live segments; the next obj_bins_get takes it over whole, and
 *    obj_space_trim() (any thread) files and purges parked caches meanwhile. Nothing leaks.
 * 5. Purging: an emptied slab stays committed (reused with no syscall and no fault) while
 *    the thread retains at most max(OBJ_RETAIN_BYTES, its recent peak of active slab bytes
 *    >> OBJ_RETAIN_SHIFT) of empty slabs; past that it is purged at once. The time bound is
 *    what returns memory; the byte cap only stops a runaway (a smaller cap purged and
 *    refaulted slabs over and over in batch workloads: docs/internals.md). Once a slab has
 *    been empty for space->purge_delay_ms (default OBJ_PURGE_DELAY_DEFAULT; the heap sets
 *    its MAPALLOC_PURGE_DELAY_MS; 0 = purge at once, < 0 = only on trim), the thread's next
 *    slow path (a refill, or a free that empties a slab) purges it, with every other slab
 *    empty that long (each keeps the time it was last emptied: one emptied and refilled all
 *    the time stays), and unmaps the empty segments that leaves but the last of each kind
 *    (a segment emptied whole goes at once, unless space->keep_segments: the heap's while
 *    its purger runs keep it until its last retained slab is purged);
 *    the next pass comes when the oldest slab kept expires (obj_bins_purge_check; coarse
 *    clock, read only when something is retained). A purge is MADV_DONTNEED (os_reset):
 *    the slab stays mapped read-write, so reuse costs page faults but no mmap; spaces with
 *    MA_MAP_SHARED or MA_MAP_LOCKED, and solo segments, still remap PROT_NONE
 *    (os_decommit). A segment's slab area is mapped read-write in one call on first use
 *    (pages fault in lazily); committed still counts slabs in use or retained, not the
 *    mapping. space->purges counts purge passes, space->purged_bytes the bytes given back.
 *    obj_bins_trim(bs) (owner) purges every retained slab now (malloc_trim); a bump of
 *    sp->trim_epoch makes every thread do that at its next slow path.
 * 6. Valgrind: when obj_tracking (valgrind detected at run time; MAPALLOC_TRACK=0 turns it
 *    off) slabs get owner_tid 1, so every free misses the inline local path; route such
 *    frees to obj_free_tracked and allocs to obj_bin_alloc_tracked (memcheck client
 *    requests). ASan poisoning of free blocks is compiled into the inline paths.
 *
 * 7. Secure mode (docs/hardening.md). A -DMAPALLOC_SECURE=ON build (MA_SECURE, OBJ_SECURE)
 *    stores free-list links encoded (obj_link_set: xor with the block's address and the
 *    random obj_link_key) and checks each link it follows (obj_link_next: NULL or a carved
 *    block of the same slab, else "mapalloc: corrupted free list"); every list goes through
 *    those two helpers, which are plain loads and stores in the default build. The slow-path
 *    parts follow obj_secure_on() (always in a secure build, MAPALLOC_SECURE=1 per run in
 *    the default one): segments created then keep a guard page at the end of each slab
 *    (seg->guard, excluded by obj_slab_range). Where the kernel has MADV_GUARD_INSTALL
 *    (os_guard_install, Linux 6.13+) the slab area is still mapped read-write in one call and
 *    each slab's last page becomes a guard inside that mapping (seg->guard_mode: no mapping
 *    per slab; purges keep the guards); elsewhere (old kernel, MAPALLOC_GUARD_MADVISE=0, a
 *    space the kernel refuses guards in) the guard is a PROT_NONE hole of the segment's
 *    reservation and slabs are mapped one by one (a mapping per slab), and
 *    carving links blocks in a random order (within windows of obj_shuffle_window blocks),
 *    each tagged free.
 *
 * Threading rules: a slab has one owner thread (s->owner_tid); only the owner touches
 * free/local_free/cnt/notify and the bin lists. Other threads batch the blocks they free
 * per owner cache and push each batch onto the owner's inbox with one CAS; the owner takes
 * the inbox whole in its slow path and files each block in O(1) ("Remote frees" in
 * obj_bins.c). A batch of one bin can carry a sealed header (inbatch): the heap's owner
 * then moves it into its thread cache whole, in O(1) ("Batches" in obj_bins.c). A parked cache (its
 * thread exited) has no owner thread: whoever claims it under space->lock (a new thread, or
 * obj_space_trim) acts as its owner meanwhile.
 */
#ifndef MAPALLOC_OBJ_H
#define MAPALLOC_OBJ_H

#include "obj/obj_inline.h" /* inline paths */
#include "obj/obj_types.h"  /* types, constants, globals */

/* ---- spaces and bins ---------------------------------------------------------------- */

/* Initialises a space. prot must include READ|WRITE. Returns 0 or -errno. */
int obj_space_init(obj_space *sp, unsigned prot, unsigned map_flags, bool populate,
                   size_t max_bytes, const char *name);
/* Releases every segment and every bins of the space (no thread may use it any more). */
void obj_space_destroy(obj_space *sp);
/* Any thread: files the inboxes of parked caches (threads that exited) and returns their
 * empty slabs and segments to the OS. */
void obj_space_trim(obj_space *sp);

/* Slab shift suited to a stride (>= 16 blocks a slab), OBJ_SHIFT_SOLO for big strides. */
uint8_t obj_slab_shift_for(size_t stride, size_t align);

/* A bins for the calling thread: recycled from an exited thread or new. NULL on ENOMEM. */
obj_bins *obj_bins_get(obj_space *sp, uint32_t nbins, const uint32_t *strides,
                       const uint32_t *aligns);
/* The calling thread (the owner) gives up its bins: pending remote frees are sent, the
 * inbox filed, empty slabs and segments go back to the OS, and the bins is parked with its
 * live segments until obj_bins_get hands it (whole) to another thread. */
void obj_bins_abandon(obj_bins *bs);
/* Owner thread: sends its pending remote frees, files its inbox, decommits every retained
 * empty slab and unmaps empty segments. */
void obj_bins_trim(obj_bins *bs);
/* Owner thread, slow paths only: returns the slabs empty for at least space->purge_delay_ms
 * to the OS (MADV_DONTNEED: the range stays mapped, so reuse costs page faults but no mmap)
 * and unmaps empty segments. Returns true if it made a purge pass (due a delay after the
 * oldest retained slab was emptied). Reads the coarse clock only when something is
 * retained. */
bool obj_bins_purge_check(obj_bins *bs);
/* CLOCK_MONOTONIC_COARSE in milliseconds (vDSO, no syscall). */
uint64_t obj_now_ms(void);
/* os_space_limited (near RLIMIT_AS: reserve nothing ahead), asked of the kernel at most
 * every 50 ms; the answers in between are the last one. Thread-safe. */
bool obj_space_tight(void);

/* Fork policy (docs/fork.md): in a fork child the caches of threads the child does not
 * have are left behind: never walked, trimmed, taken over or filed again, since their
 * owners ran without a lock and the fork may have caught them mid-operation. Their blocks
 * stay allocated in the child; frees of them are accepted (sent to the cache's inbox, never
 * filed). OBJ_TID_FORKED marks such a cache (bs->tid; in_use stays true): no thread pointer
 * equals it, so a child thread that glibc gives a dead parent thread's thread pointer never
 * finds the cache by tid. */
#define OBJ_TID_FORKED ((uintptr_t)2)
/* Fork child, for bs of a thread the child does not have: bs->tid = OBJ_TID_FORKED and
 * every slab of its segments gets owner_tid 0 (no free is local to it, whatever the thread
 * pointer). Reads only the segment lists' forward links and slab counts, which a slow path
 * caught half done leaves walkable (a segment is linked after it is initialised and
 * unlinked before it is unmapped). */
void obj_bins_forked(obj_bins *bs);
/* Fork child: unlocks sp->lock and sp->trim_lock (held by the prepare handler of the
 * thread that forked) and leaves behind (obj_bins_forked) every cache in use by another
 * thread. Parked caches stay parked: nobody was touching them. */
void obj_space_fork_child(obj_space *sp);

#endif /* MAPALLOC_OBJ_H */
