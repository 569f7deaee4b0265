/* mapalloc mapping arena: one reserved range of address space in which file-backed
 * (memfd) and anonymous mappings are added and removed at page-aligned sub-ranges.
 *
 * The use it is made for: a virtual machine monitor's guest memory. The VMM reserves the
 * guest-physical layout once, maps RAM regions (memfds it can share with device backends)
 * and device windows into it, balloons pages out, and never lets another thread's mmap land
 * inside the range: every change replaces part of the arena's own reservation in place
 * (MAP_FIXED over our reservation), and a removed range becomes reserved again, never a
 * hole.
 *
 * Conventions (see DESIGN.md and pages.h):
 * - Functions that can fail return 0 or a negative errno; on failure nothing has changed.
 * - `off` and `len` are byte offsets/lengths relative to the arena base, multiples of
 *   ma_page_size(), `len` > 0, and [off, off+len) inside the arena (checked without
 *   overflow), else -EINVAL.
 * - "Mapped" below means covered by mappings added with ma_arena_add_*_mapping and not
 *   removed since. Every other page of the arena is reserved: inaccessible (SIGSEGV on
 *   access), no memory, no swap reservation.
 * - The arena does not own the descriptors given to it and keeps none open: the kernel's
 *   mapping holds its own reference to the file, so the caller may close its fd right after
 *   ma_arena_add_fd_mapping. Nor does it record descriptor numbers, which go stale (a number
 *   closed by the caller is soon reused by an unrelated file): foreach and find report the
 *   mapped file's identity, st_dev and st_ino taken at add time, which stays true for as
 *   long as the mapping exists (the mapping keeps the file, so its inode cannot be reused).
 *   A VMM that must hand "the file of this range" to a device backend keeps its own
 *   descriptors and picks the one whose fstat matches (ma_arena_mapping_is_fd).
 * - Thread-safety: every function may be called from any thread. Operations on one arena
 *   are serialized by an internal mutex; the memory itself is accessed without any lock.
 *   A callback of ma_arena_foreach runs with the lock held: it may call the read-only
 *   functions (find, count, foreach) on the same arena; any other call on that arena
 *   returns -EDEADLK instead of deadlocking.
 * - fork(): every arena's lock is held across fork() (a pthread_atfork handler), so the
 *   child finds each arena consistent and usable from its one thread. Hence, while another
 *   thread may call fork(), a foreach callback must not call functions of a different
 *   arena, nor fork() itself (a fork from a callback is supported when no other thread
 *   forks at the same time: the child's thread then still holds the walked arena's lock).
 */
#ifndef MAPALLOC_ARENA_H
#define MAPALLOC_ARENA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mapalloc/pages.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ma_arena ma_arena;

/* One mapping as reported by ma_arena_foreach and ma_arena_find. */
typedef struct ma_arena_mapping {
  size_t off, len;   /* [off, off+len) relative to the arena base */
  bool anon;         /* private anonymous memory (dev, ino and fd_off are then 0) */
  uint64_t dev, ino; /* the mapped file: st_dev and st_ino of the descriptor given at add time
                        (no descriptor number: see the conventions above) */
  uint64_t fd_off;   /* file offset mapped at `off` */
  unsigned prot;     /* MA_PROT_* in effect */
} ma_arena_mapping;

/* Reserves `len` bytes of address space, inaccessible and without swap reservation (an
 * arena far larger than RAM + swap is fine: 1 TiB works on a 24 GiB machine), and returns
 * the arena in *out. The base is aligned to 1 GiB when len >= 1 GiB, else to 2 MiB when
 * len >= 2 MiB (so huge pages can back mappings), else to the page size.
 * `map_flags` are MA_MAP_* applied to every mapping added later: MA_MAP_DONTDUMP,
 * MA_MAP_DONTFORK, MA_MAP_HUGE_TRY (transparent huge pages advised), MA_MAP_LOCKED (each
 * mapping is locked in memory when added, a MA_PROT_NONE one as its pages are faulted in
 * once a protect makes them accessible; adding fails with -ENOMEM/-EAGAIN/-EPERM beyond
 * RLIMIT_MEMLOCK).
 * Errors: -EINVAL (out NULL, len 0 or not a page multiple, any other flag), -ENOMEM (no
 * address space or memory for the bookkeeping). Thread-safe. */
MA_API int ma_arena_create(size_t len, unsigned map_flags, ma_arena **out);

/* The first byte of the arena (NULL for a NULL arena). Constant for the arena's life.
 * Thread-safe, lock-free. */
MA_API void *ma_arena_base(const ma_arena *a);

/* The arena's length in bytes (0 for a NULL arena). Thread-safe, lock-free. */
MA_API size_t ma_arena_len(const ma_arena *a);

/* Maps [fd_off, fd_off+len) of `fd` shared (writes reach the file, and every other process
 * mapping it) at [off, off+len) of the arena with protection `prot`, replacing the
 * reservation in place. The arena's create flags apply.
 * Checks, in this order, before anything changes:
 * -EINVAL: a NULL, off/len/fd_off not page multiples, len 0, range outside the arena,
 *          fd_off + len beyond the largest file offset, unknown prot bits;
 * -EPERM:  prot READ|WRITE|EXEC at once (W^X);
 * -EBADF:  fd is not an open descriptor (checked with fcntl);
 * -EPERM:  prot has WRITE and the memfd is sealed with F_SEAL_WRITE/F_SEAL_FUTURE_WRITE;
 * -EEXIST: any page of the range is already mapped (never a silent replace).
 * Then mmap's own refusals, which also leave the range reserved and unchanged: -EBADF (an
 * O_PATH descriptor), -EACCES (fd not open for reading, or prot has WRITE and fd is not
 * open read-write), -ENODEV (file cannot be mapped), -ENOMEM (memory, map count,
 * RLIMIT_MEMLOCK with MA_MAP_LOCKED), -EAGAIN, -EINVAL (e.g. hugetlbfs alignment).
 * Mapping past the end of the file succeeds but accessing those pages raises SIGBUS (as
 * with mmap). Two system calls before the mmap: fstat (the file's identity, recorded) and
 * one fcntl (F_GETFL, or F_GET_SEALS when prot has WRITE). The descriptor is not kept.
 * Thread-safe. */
MA_API int ma_arena_add_fd_mapping(ma_arena *a, size_t off, size_t len, int fd, uint64_t fd_off,
                                   unsigned prot);

/* Maps private anonymous memory at [off, off+len) (zero-filled, charged as committed
 * memory, not shared with fork children beyond copy-on-write). Errors as
 * ma_arena_add_fd_mapping without the fd ones: -EINVAL, -EPERM (RWX), -EEXIST, -ENOMEM.
 * Thread-safe. */
MA_API int ma_arena_add_anon_mapping(ma_arena *a, size_t off, size_t len, unsigned prot);

/* Puts [off, off+len) back to reserved: the pages are unmapped (an anonymous mapping's
 * memory is freed; a file's pages stay in the file), later accesses fault (SIGSEGV) and
 * never see stale data, and the range can be mapped again. A mapping only partly covered
 * is split: the parts outside the range stay mapped, unchanged. Reserved pages inside the
 * range are fine (they stay reserved), so one call can remove several mappings.
 * Errors: -EINVAL (range rules), -ENOENT (no page of the range is mapped; nothing
 * changes), -ENOMEM (bookkeeping for a split, or the kernel's map count limit).
 * Thread-safe. */
MA_API int ma_arena_remove_mapping(ma_arena *a, size_t off, size_t len);

/* Changes the protection of [off, off+len), which must be entirely mapped (possibly by
 * several mappings); the record is split where the range ends inside a mapping.
 * MA_PROT_NONE keeps the memory but makes accesses fault.
 * Errors: -EINVAL (range rules, unknown prot bits), -EPERM (RWX), -EACCES (WRITE on a mapping
 * of a descriptor not opened read-write: the kernel's refusal), -ENOENT (some page of the range is
 * not mapped; nothing changes), -ENOMEM. Thread-safe. */
MA_API int ma_arena_protect(ma_arena *a, size_t off, size_t len, unsigned prot);

/* Gives the kernel advice on [off, off+len), which must be entirely mapped. To free a
 * memfd's (shmem's) pages under a shared mapping use MA_ADV_REMOVE: MA_ADV_DONTNEED only
 * drops this process's page table entries and the file keeps its memory. MA_ADV_REMOVE
 * frees the file's blocks (the range then reads as zeros); it fails with -EINVAL on an
 * anonymous private mapping (use MA_ADV_DONTNEED there).
 * MA_ADV_FREE applies to anonymous mappings only (-EINVAL on a file mapping). The advice
 * that destroys data (REMOVE, FREE) is checked against every mapping of the range before
 * any is advised, so its refusal changes nothing (the kernel would have applied it to the
 * mappings before the one it refuses).
 * Errors: -EINVAL (range rules, unknown advice, advice invalid for the mapping), -EACCES
 * (MA_ADV_REMOVE on a mapping of a descriptor not open read-write), -ENOENT (some page not
 * mapped), -EPERM/-ENOMEM/-EAGAIN from the kernel. Thread-safe. */
MA_API int ma_arena_advise(ma_arena *a, size_t off, size_t len, enum ma_advice adv);

/* Writes the dirty pages of [off, off+len), which must be entirely mapped, back to their
 * files (msync MS_SYNC, or MS_ASYNC when `async`); anonymous and memfd pages have nowhere
 * to go and succeed at once. Errors: -EINVAL (range rules), -ENOENT (some page not
 * mapped), -EIO, -ENOMEM. Thread-safe. */
MA_API int ma_arena_flush(ma_arena *a, size_t off, size_t len, bool async);

/* Copies the mapping that contains byte `off` into *out. Errors: -EINVAL (a or out NULL,
 * off outside the arena), -ENOENT (off is not mapped). O(log n). Thread-safe. */
MA_API int ma_arena_find(const ma_arena *a, size_t off, ma_arena_mapping *out);

/* Whether mapping `m` (from find or foreach) maps the file open at descriptor `fd`: 1 if
 * fstat(fd) gives m's st_dev and st_ino, 0 if not (or m is anonymous).
 * Errors: -EINVAL (m NULL), -EBADF (fd not open). Thread-safe (it reads only *m). */
MA_API int ma_arena_mapping_is_fd(const ma_arena_mapping *m, int fd);

/* The number of mappings currently recorded (a split mapping counts as its pieces).
 * 0 for a NULL arena. Thread-safe. */
MA_API size_t ma_arena_count(const ma_arena *a);

/* Calls fn for every mapping in increasing offset order (adjacent pieces are reported
 * separately, as added or split). fn returns non-zero to stop; that value is returned, else
 * 0. fn runs with the arena's lock held, so it should be short; on this arena it may call
 * only find, count and foreach (changes return -EDEADLK). Errors: -EINVAL (a or fn NULL).
 * Thread-safe. */
MA_API int ma_arena_foreach(const ma_arena *a, int (*fn)(const ma_arena_mapping *, void *),
                            void *ctx);

/* Checks the arena's record and its agreement with the kernel; for tests and debugging
 * (compiled in every build). The record: its tree (balanced, ordered, its count), each
 * mapping page-aligned, non-empty, inside the arena, disjoint from the next, with a valid
 * protection. Against /proc/self/maps: every page of a mapping is mapped with the
 * mapping's protection (shared, at the recorded file offset, for a file mapping; private
 * for an anonymous one), every other page is reserved (PROT_NONE, private), and no page of
 * the arena is unmapped (in a fork child of the creating process, the mappings of an arena
 * created with MA_MAP_DONTFORK may be absent: the kernel does not copy them). So it reports
 * what was done to the range behind the arena's back (an mprotect, an mmap or munmap over
 * part of it).
 * Errors: returns 0 when everything holds; -EINVAL (a NULL); the negative errno of reading
 * /proc/self/maps (e.g. -EACCES; the record checks still ran). On the
 * first inconsistency it writes "mapalloc: check failed at FILE:LINE: CONDITION (values)"
 * to stderr and aborts. Thread-safety: any thread; it holds the arena's lock (other calls
 * on the arena wait; callable from a foreach callback), but accesses and mprotect/mmap
 * calls by other threads on the range are not excluded. Does not allocate; O(mappings +
 * areas of the process's maps). */
MA_API int ma_arena_check(const ma_arena *a);

/* ---- Snapshots and lazy restore -------------------------------------------------------------
 * A VMM that snapshots guest memory asks which pages hold memory (so a snapshot skips the
 * rest), and one that restores lazily serves guest RAM on first touch with userfaultfd. The
 * arena neither creates nor reads the userfaultfd: the caller owns it (userfaultfd(2), then
 * UFFDIO_API; missing mode over memfd mappings needs UFFD_FEATURE_MISSING_SHMEM) and reads
 * its fault messages, whose addresses are ma_arena_base(a) + off. */

/* Writes one byte per page of [off, off+len), which must be entirely mapped, into vec
 * (len / page size bytes): 1 where the page has memory, 0 where it has none. For a file
 * mapping that is the file's page cache, whoever put the page there (this process, a
 * backend mapping the same memfd, a write(), a read fault on a hole); a page punched out with
 * MA_ADV_REMOVE, or never touched, reads 0. For an anonymous mapping it is this mapping's memory.
 * (mincore(2).) Errors: -EINVAL (range rules, vec NULL), -ENOENT (some page not mapped), -ENOMEM,
 * -EAGAIN. Thread-safe; the answer may be stale by the time it is read if others touch the range.
 */
MA_API int ma_arena_resident(const ma_arena *a, size_t off, size_t len, unsigned char *vec);

enum {
  MA_UFFD_MISSING = 1u << 0 /* report the first touch of a page that has no memory */
};

/* Registers [off, off+len), which must be entirely mapped, with the userfaultfd `uffd` in
 * `modes` (MA_UFFD_*). With MA_UFFD_MISSING, an access through this process's mapping to a
 * page without memory (see ma_arena_resident) blocks the accessing thread, or the kernel
 * acting for it (a KVM vCPU's access to guest RAM, a read(2) into the range), until the page
 * is supplied with ma_arena_uffd_copy. Accesses through other processes' mappings of the same
 * file are not reported, and a page that another process has put in the file is not missing.
 * The registration belongs to the mappings now in the range: ma_arena_remove_mapping or a new
 * mapping over part of it ends it there (register again), and it ends when uffd is closed.
 * Errors: -EINVAL (range rules, modes 0 or unknown, the kernel's refusal: a mode the uffd
 * was not opened for, e.g. missing mode over memfd pages without
 * UFFD_FEATURE_MISSING_SHMEM), -ENOENT (some page not mapped), -EBUSY (some page registered
 * with another uffd), -EBADF/-ENOTTY (uffd is not an open userfaultfd), -EPERM, -ENOMEM.
 * Nothing is registered on failure. Thread-safe. */
MA_API int ma_arena_uffd_register(ma_arena *a, size_t off, size_t len, int uffd, unsigned modes);

/* Ends the registration of [off, off+len) with uffd; threads blocked there are woken and
 * retry the access (which then gets memory as without userfaultfd: zeros where nothing is).
 * Errors: -EINVAL (range rules), -ENOENT (some page not mapped), -EBADF/-ENOTTY, -ENOMEM.
 * Thread-safe. */
MA_API int ma_arena_uffd_unregister(ma_arena *a, size_t off, size_t len, int uffd);

/* Resolves missing-page faults: copies `len` bytes from `src` into [off, off+len) of a range
 * registered with `uffd` (UFFDIO_COPY: each page gets its memory atomically, and the
 * threads waiting on it are woken). *copied (may be NULL) receives the bytes copied.
 * Errors: -EINVAL (range rules, src NULL), -EEXIST (the page at off already has memory:
 * another thread resolved it first; nothing copied), -EAGAIN (only the first *copied bytes
 * were copied: a later page already had memory, or the process's mappings changed under the
 * copy; go on from off + *copied — the one error after which something has changed),
 * -ENOENT (the range is not registered, or its mapping changed), -ESRCH (the registering
 * process is exiting), -ENOMEM.
 * Thread-safe and lock-free: it takes no arena lock, so a fault handler never waits for a
 * thread that is itself waiting for the handler. */
MA_API int ma_arena_uffd_copy(ma_arena *a, size_t off, const void *src, size_t len, int uffd,
                              size_t *copied);

/* Unmaps the whole arena (every mapping and the reservation) and frees its bookkeeping.
 * NULL is a no-op. The caller must ensure no other thread uses the arena any more.
 * Descriptors given to the arena are not touched. */
MA_API void ma_arena_destroy(ma_arena *a);

#ifdef __cplusplus
}
#endif

#endif /* MAPALLOC_ARENA_H */
