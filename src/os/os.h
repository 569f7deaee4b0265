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
 * DONTDUMP, DONTFORK, HUGE_TRY are honoured). Never leaves a hole: on failure the old
 * mapping is still there. */
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

#endif /* MAPALLOC_OS_H */
