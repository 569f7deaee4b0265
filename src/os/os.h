/* Internal page primitives shared by the layers above (obj, arena, malloc).
 *
 * These are the only entry points to mmap/mprotect/madvise/munmap for code outside
 * src/os/. They do no argument checking beyond what the system does: callers pass page
 * aligned addresses and lengths. Errors are returned as negative errno values (or NULL
 * with errno set for the functions that return an address). All are thread-safe.
 *
 * The platform specifics live in os_linux.c; a second OS is a second file.
 */
#ifndef MAPALLOC_OS_H
#define MAPALLOC_OS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mapalloc/pages.h"

/* Base page size; cheap after the first call. */
size_t os_page_size(void);

/* Reserves `len` bytes of address space aligned to `align` (0 = page size; a power of
 * two), inaccessible and without swap reservation. `hint` may be NULL. Returns NULL with
 * errno on failure. */
void *os_reserve(size_t len, size_t align, void *hint);

/* Maps `len` bytes of committed private anonymous read-write memory aligned to `align`
 * (0 = page size). With `populate` every page is prefaulted. NULL + errno on failure. */
void *os_alloc(size_t len, size_t align, bool populate);

/* Unmaps [addr, addr+len). */
int os_release(void *addr, size_t len);

/* Unmaps [addr, addr+len) for a caller that forgets the range afterwards (a freed segment
 * or block, a trimmed head or tail). munmap can fail on a range we own: ENOMEM when the
 * unmap splits a VMA of a process at vm.max_map_count (or a test's injected failure). The
 * range's pages are then given back (MADV_DONTNEED, which needs no split) and the range is
 * kept and unmapped by a later os_release_owned* or os_release_retry, never lost: in a
 * table of 1024 ranges, while half of which is in use (after a retry) the page layer's new
 * mappings (os_reserve, os_alloc, os_map other than in place) fail with ENOMEM. Returns 0
 * (unmapped or deferred), or -ENOMEM when the table is full too (the range stays mapped,
 * its pages given back: the caller may still use or retry it). Preserves errno.
 * Thread-safe. */
int os_release_owned(void *addr, size_t len);

/* os_release_owned for a range whose first page is private read-write memory, not
 * MA_MAP_DONTFORK, that nobody reads or writes any more (a freed block, segment or
 * metadata page): a refused range then keeps its bookkeeping in that page (16 bytes, in an
 * unbounded list), so this never fails; the rest of its pages are given back. Returns 0. */
int os_release_owned_rw(void *addr, size_t len);

/* Retries the deferred unmaps of os_release_owned*; returns how many are still pending.
 * Preserves errno. */
size_t os_release_retry(void);

/* How many deferred unmaps are pending (a relaxed read, for statistics and tests). */
size_t os_release_pending(void);

/* True when the process has never had a second thread (glibc's __libc_single_threaded;
 * false where the C library does not say). Fork handlers skip their locks then: nothing
 * else can hold them, and a fork() from a signal handler that interrupted a fork() (which
 * POSIX allows in a single-threaded process) must not wait on its own prepare handler. */
bool os_single_threaded(void);

/* Makes a reserved range accessible with `prot` (MA_PROT_*). */
int os_commit(void *addr, size_t len, unsigned prot);

/* Returns the memory of [addr, addr+len) to the system and makes it inaccessible again
 * (a fresh reservation replaces the range in place; the commit charge is dropped too). */
int os_decommit(void *addr, size_t len);

/* Returns the memory of a private anonymous range to the system but keeps it accessible:
 * it reads as zeros afterwards (MADV_DONTNEED). */
int os_reset(void *addr, size_t len);

/* Prefaults [addr, addr+len) for writing (commit-on-alloc for already mapped ranges). */
int os_populate(void *addr, size_t len);

/* Replaces [addr, addr+len) in place with a new mapping (MAP_FIXED): of `fd` at `off` when
 * fd >= 0, else anonymous. `flags` are MA_MAP_* (SHARED, NORESERVE, POPULATE, LOCKED,
 * DONTDUMP, DONTFORK, HUGE_TRY are honoured; the first three are part of the result, so if
 * mlock or the DONTDUMP/DONTFORK madvise is refused the call fails). Never leaves a hole:
 * when the mmap fails the old mapping is still there; when a later step fails the range
 * is a fresh reservation (PROT_NONE, what every caller maps over) and nothing stays
 * accessible. */
int os_map_fixed(void *addr, size_t len, unsigned prot, unsigned flags, int fd, uint64_t off);

/* Changes protection of [addr, addr+len). */
int os_protect(void *addr, size_t len, unsigned prot);

/* madvise with an ma_advice. */
int os_advise(void *addr, size_t len, enum ma_advice adv);

/* Names an anonymous range "[anon:<name>]" in /proc/PID/maps where the kernel supports it;
 * silently does nothing elsewhere. */
void os_name(void *addr, size_t len, const char *name);

/* Writes dirty file pages back: msync MS_SYNC, or MS_ASYNC when `async`. (Added by the
 * arena layer for ma_arena_flush; the same primitive as the page layer's os_sync.) */
int os_sync(void *addr, size_t len, bool async);

/* ---- Added for the public page layer (src/os/pages.c) ------------------------------- */

/* Where os_map places a mapping: `hint` is a hint, or exactly there without replacing
 * anything (-EEXIST if taken, also on kernels that treat the request as a hint), or
 * exactly there replacing what is mapped (MAP_FIXED). */
enum os_place { OS_PLACE_HINT, OS_PLACE_NOREPLACE, OS_PLACE_FIXED };

/* The general mmap: `flags` are MA_MAP_* of which SHARED, NORESERVE, POPULATE and STACK
 * are honoured here (the caller applies LOCKED, DONTDUMP, DONTFORK afterwards); fd < 0 is
 * anonymous; huge_shift != 0 asks for explicit huge pages of 1 << huge_shift. Stores the
 * address in *out and returns 0, or a negative errno with nothing mapped. */
int os_map(void *hint, size_t len, unsigned prot, unsigned flags, int fd, uint64_t off,
           unsigned huge_shift, enum os_place place, void **out);

/* Locks [addr, addr+len) in memory: now (mlock) or as pages are faulted in (mlock2
 * MLOCK_ONFAULT; -ENOTSUP where the kernel lacks it). */
int os_lock(void *addr, size_t len, bool on_fault);

/* Unlocks [addr, addr+len). */
int os_unlock(void *addr, size_t len);

/* Prefaults [addr, addr+len), best effort: for writing when `write` (commits private
 * pages), else for reading. Never faults the caller; errors are ignored. */
void os_prefault(void *addr, size_t len, bool write);

/* Writes up to `max` supported huge page sizes (ascending) to `out`; returns how many the
 * system has. Never calls malloc. */
size_t os_huge_page_sizes(size_t *out, size_t max);

/* Calls fn for each area of /proc/PID/maps (pid 0 = self) intersecting [start, end), in
 * address order, without calling malloc. Returns 0, fn's non-zero value, or a negative
 * errno (-ESRCH no such process, -EACCES, ...). Implemented in areas_linux.c. */
int os_areas_query(int pid, uintptr_t start, uintptr_t end, int (*fn)(const ma_area *, void *ctx),
                   void *ctx);

/* ---- Added for the heap (src/malloc/huge.c) ------------------------------------------- */

/* Resizes the private anonymous mapping [addr, addr+old_len) to new_len bytes (mremap).
 * With may_move the kernel may move it (pages move without copying); *out gets the new
 * address. Without it the resize happens in place or fails with -ENOMEM. A growth that may
 * move fails with -ENOMEM while the deferred-unmap table keeps new mappings out (as
 * os_alloc: a move may split the mapping it leaves). */
int os_remap(void *addr, size_t old_len, size_t new_len, bool may_move, void **out);

/* ---- Added for the secure mode (src/obj/, src/malloc/) ------------------------------- */

/* Fills buf with `len` random bytes from the kernel (getrandom(2), non-blocking: early in
 * boot the pool may not be ready). Returns 0, or a negative errno when fewer bytes came;
 * the caller falls back to a weaker source. Never allocates. */
int os_random(void *buf, size_t len);

/* Guard pages that split no mapping: MADV_GUARD_INSTALL (Linux 6.13+) makes the pages of
 * [addr, addr+len) fault (SIGSEGV) on any access without changing the mapping (no new VMA,
 * so /proc/PID/maps and vm.max_map_count do not see it). Whatever the pages held is
 * discarded. The guard survives MADV_DONTNEED/MADV_FREE (os_reset), mprotect and fork; a
 * new mapping over the range (os_map_fixed, os_decommit) or munmap removes it, and
 * MADV_POPULATE_WRITE over it fails (populate around it). The kernel refuses locked and
 * huge-TLB mappings (-EINVAL). addr and len must be page aligned and len non-zero, else
 * -EINVAL. Returns 0, -ENOSYS when the kernel lacks guard pages (or os_guard_disable was
 * called), or another negative errno (-ENOMEM: no memory for page tables). Thread-safe. */
int os_guard_install(void *addr, size_t len);

/* Removes the guard pages of [addr, addr+len) (MADV_GUARD_REMOVE): they read as zeros
 * again. Pages without a guard are left as they are. Same arguments and errors as
 * os_guard_install. */
int os_guard_remove(void *addr, size_t len);

/* Whether the process is near a finite address-space limit (RLIMIT_AS, `ulimit -v`): less
 * than max(1 GiB, an eighth of the limit) left, counting every mapping of the process
 * (/proc/self/statm; without it, any finite limit). Asked each time (setrlimit may come at
 * any moment; one system call, three more under a limit): callers then reserve no more than
 * they need (no slack for growth, no chunks cut up later), so that what is left stays for
 * the program's own mappings (thread stacks, files). Thread-safe. */
bool os_space_limited(void);

/* os_guard_install on n ranges of len bytes each, the addresses in pages[]: one system call
 * for many ranges where the kernel takes process_madvise(2) on its own process for guard
 * pages (PIDFD_SELF: Linux 6.15 and later), else one madvise each. Returns 0 or the first
 * failure's negative errno (the ranges before it may have their guards). Thread-safe. */
int os_guard_install_many(void *const *pages, size_t n, size_t len);

/* Whether os_guard_install can work here: probed once (an empty madvise, which a kernel
 * without guard pages refuses with EINVAL), then cached. False after os_guard_disable.
 * Thread-safe. */
bool os_guard_supported(void);

/* Makes os_guard_supported() false and os_guard_install/remove return -ENOSYS from now on,
 * as on a kernel without guard pages (MAPALLOC_GUARD_MADVISE=0, and the tests of the
 * fallback). Guards already installed stay. Thread-safe. */
void os_guard_disable(void);

#endif /* MAPALLOC_OS_H */
