/* mapalloc page layer: reserve, commit, protect, advise and release pages.
 *
 * The only layer that talks to the operating system. Every other layer of mapalloc
 * (pools, arenas, the heap) gets its memory from here.
 *
 * Conventions (see DESIGN.md):
 * - Functions that can fail return 0 on success or a negative errno: -EINVAL for a bad
 *   argument, -ENOMEM for lack of memory or address space, -EPERM for a request refused by
 *   policy (W^X), -EEXIST when a strict hint is taken, -ENOTSUP when this system lacks the
 *   feature. On failure nothing has changed: the map is exactly as it was.
 * - Offsets and lengths given to functions on an existing map must be multiples of
 *   ma_page_size() (of the huge page size for maps made of explicit huge pages), non-zero,
 *   and lie inside the map (checked without overflow), else -EINVAL.
 * - Thread-safety: the functions are thread-safe in the sense of the system calls under
 *   them; two threads changing the *same* ma_map descriptor concurrently must synchronise
 *   themselves (the descriptor fields are plain memory).
 */
#ifndef MAPALLOC_PAGES_H
#define MAPALLOC_PAGES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define MA_API __attribute__((visibility("default")))
#else
#define MA_API
#endif

enum { MA_PROT_NONE = 0, MA_PROT_READ = 1, MA_PROT_WRITE = 2, MA_PROT_EXEC = 4 };

enum {                               /* ma_map_opts.flags */
       MA_MAP_SHARED = 1u << 0,      /* shared; default private (private file map = COW) */
       MA_MAP_RESERVE = 1u << 1,     /* reserve address space only (inaccessible) */
       MA_MAP_POPULATE = 1u << 2,    /* commit-on-alloc: prefault every page now */
       MA_MAP_NORESERVE = 1u << 3,   /* no swap reservation (ignored with MA_MAP_HUGE) */
       MA_MAP_STRICT_HINT = 1u << 4, /* fail with -EEXIST unless placed exactly at hint */
       MA_MAP_HUGE = 1u << 5,        /* huge pages of page_shift (default: system huge size) */
       MA_MAP_HUGE_TRY = 1u << 6,    /* huge pages if available, else fall back silently */
       MA_MAP_LOCKED = 1u << 7,      /* lock in physical memory */
       MA_MAP_DONTDUMP = 1u << 8,    /* exclude from core dumps */
       MA_MAP_DONTFORK = 1u << 9,    /* not inherited by fork() children */
       MA_MAP_STACK = 1u << 10,      /* a thread stack: MAP_STACK, fixed size (no GROWSDOWN) */
       MA_MAP_JIT = 1u << 11,        /* permit WRITE|EXEC at once (refused otherwise) */
};

/* Options of ma_map_create. Start from MA_MAP_OPTS_DEFAULT and set what you need. */
typedef struct ma_map_opts {
  size_t len;          /* bytes; rounded up to the page (or huge page) size */
  unsigned prot;       /* MA_PROT_* */
  unsigned flags;      /* MA_MAP_* */
  void *hint;          /* preferred address, or NULL */
  size_t align;        /* 0 = page size; else a power of two >= page size */
  int fd;              /* -1 for anonymous */
  uint64_t offset;     /* file offset, page aligned */
  unsigned page_shift; /* with MA_MAP_HUGE: 21 = 2 MiB, 30 = 1 GiB; 0 = default */
} ma_map_opts;

#define MA_MAP_OPTS_DEFAULT                                                                        \
  { .len = 0, .prot = MA_PROT_READ | MA_PROT_WRITE, .fd = -1 }

/* A mapping made by ma_map_create. The fields describe it; treat them as read-only.
 * `flags` holds the MA_MAP_* flags actually in effect (MA_MAP_HUGE_TRY becomes MA_MAP_HUGE
 * when explicit huge pages were obtained). `fd` is the caller's descriptor (not owned).
 * `offset` is the file offset of `addr` (0 for anonymous maps); `page_shift` is log2 of
 * the explicit huge page size backing the map, 0 for base pages. */
typedef struct ma_map {
  void *addr;
  size_t len;
  unsigned prot;
  unsigned flags;
  int fd;
  uint64_t offset;
  unsigned page_shift;
} ma_map;

/* ---- System facts -------------------------------------------------------------------- */

/* The base page size in bytes. Thread-safe; cached after the first call. */
MA_API size_t ma_page_size(void);

/* The granularity at which address space is handed out (the page size on Linux).
 * Thread-safe. */
MA_API size_t ma_allocation_granularity(void);

/* Writes up to `max` huge page sizes the system supports (ascending, from
 * /sys/kernel/mm/hugepages) to `out` and returns how many there are in all (which may be
 * more than `max`). Returns 0 where there are none. Thread-safe. */
MA_API size_t ma_huge_page_sizes(size_t *out, size_t max);

/* ---- Create and destroy ---------------------------------------------------------------- */

/* Maps memory as `opts` describes and fills `*out`.
 * - Anonymous (fd = -1) or a file (fd >= 0, `offset` page aligned), private (copy-on-write
 *   for files) or MA_MAP_SHARED.
 * - MA_MAP_RESERVE: address space only, inaccessible and not committed; ma_map_commit makes
 *   sub-ranges usable with opts->prot.
 * - `len` is rounded up to the page size (the huge page size with huge pages); out->len
 *   is the length mapped.
 * - `hint`: a preferred address; with MA_MAP_STRICT_HINT the map is placed exactly there or
 *   the call fails with -EEXIST. `align`: the start is a multiple of it.
 * - MA_MAP_HUGE: explicit huge pages of 1 << page_shift (0: the smallest size the system
 *   has, 2 MiB on x86-64), anonymous maps only. The kernel reserves the huge pages at
 *   create time (MA_MAP_NORESERVE is ignored for them), so when the pool cannot back the
 *   whole length the call fails with -ENOMEM, never with a SIGBUS on first touch.
 *   Offsets and lengths given to the other functions are then multiples of the huge size.
 * - MA_MAP_HUGE_TRY: explicit huge pages if the pool has them (out->flags then says
 *   MA_MAP_HUGE), else base pages advised for transparent huge pages (MADV_HUGEPAGE,
 *   aligned to the huge size when len allows), else plain base pages.
 * - MA_MAP_LOCKED locks the map now (a reserve-only map: each range as it is committed);
 *   MA_MAP_DONTDUMP / MA_MAP_DONTFORK apply madvise to the whole map; MA_MAP_POPULATE
 *   prefaults (MAP_POPULATE; on a reserve-only map, each committed range).
 * - Private anonymous maps are named "mapalloc" ([anon:mapalloc] in /proc/PID/maps) where
 *   the kernel supports PR_SET_VMA_ANON_NAME; elsewhere they stay unnamed.
 * Errors: -EINVAL (NULL, zero len, len overflow, bad align, strict hint NULL or not a
 * multiple of the alignment, unaligned or too large offset, unknown flags or prot, both
 * HUGE and HUGE_TRY, RESERVE or HUGE with a file, page_shift without a huge flag or out of
 * range), -EPERM (WRITE|EXEC without MA_MAP_JIT), -EEXIST (strict hint taken), -ENOMEM,
 * -EBADF/-EACCES/-ENODEV from the file, -ENOTSUP (a page_shift this system does not
 * support, or no huge pages at all with MA_MAP_HUGE), -EPERM/-ENOMEM from MA_MAP_LOCKED.
 * Thread-safe. On failure nothing is left mapped and *out is untouched. */
MA_API int ma_map_create(const ma_map_opts *opts, ma_map *out);

/* Unmaps the whole map and clears `*m` (addr NULL, len 0, fd -1). Errors: -EINVAL (NULL
 * or empty map), or the munmap error with *m unchanged.
 * Thread-safe with respect to other maps. */
MA_API int ma_map_destroy(ma_map *m);

/* ---- Protection ------------------------------------------------------------------------ */

/* Changes the protection of the whole map and records it in m->prot. W^X: WRITE and EXEC
 * at once (with or without READ) is -EPERM unless the map was created with MA_MAP_JIT.
 * On a reserve-only map (MA_MAP_RESERVE) the committed ranges (those not MA_PROT_NONE, as
 * /proc/self/maps shows them) get `prot`, reserved ranges stay inaccessible, and ranges
 * committed later get `prot` too (this reads /proc/self/maps: use ma_map_protect_range
 * where that matters). With MA_PROT_NONE every range counts as reserved afterwards.
 * Errors: -EINVAL (NULL map, unknown prot), -EPERM (W^X), -EACCES (the file's open mode
 * forbids it), -ENOMEM; on error the map is unchanged. */
MA_API int ma_map_protect(ma_map *m, unsigned prot);

/* Changes the protection of [off, off+len) only; m->prot is unchanged. Errors as
 * ma_map_protect plus the range rules. */
MA_API int ma_map_protect_range(ma_map *m, size_t off, size_t len, unsigned prot);

/* ---- Commit and decommit --------------------------------------------------------------- */

/* Makes [off, off+len) accessible with m->prot (and charged as committed memory where the
 * kernel accounts commit, vm.overcommit_memory=2). Committing an already committed range is
 * allowed and keeps its contents. With MA_MAP_LOCKED the range is locked too (if that is
 * refused the range is made inaccessible again); with MA_MAP_POPULATE it is prefaulted.
 * Errors: -EINVAL, -ENOMEM (commit limit), -EACCES, -EPERM/-ENOMEM (lock refused). */
MA_API int ma_map_commit(ma_map *m, size_t off, size_t len);

/* Returns the physical memory of [off, off+len) to the system and makes the range
 * inaccessible again, keeping the address range reserved: an access faults (SIGSEGV) until
 * ma_map_commit, after which an anonymous private range reads as zeros (it drops from RSS
 * and mincore, and its commit charge is returned: the range is replaced by a fresh
 * reservation). On a shared, file or huge page map the pages are dropped from this mapping
 * only (MADV_DONTNEED): a shared file or shared memory keeps its data, a private file map
 * reads the file again. Errors: -EINVAL, -ENOMEM. */
MA_API int ma_map_decommit(ma_map *m, size_t off, size_t len);

/* ---- Locking and flushing -------------------------------------------------------------- */

/* Locks [off, off+len) in physical memory (mlock), faulting it all in now.
 * Errors: -EINVAL, -ENOMEM (RLIMIT_MEMLOCK, or part of the range is not committed),
 * -EPERM (no RLIMIT_MEMLOCK allowance at all). On failure the range is left unlocked (the
 * kernel may have locked a part before refusing; pages locked before the call are unlocked
 * too), except in a MA_MAP_LOCKED map, whose committed pages stay locked. */
MA_API int ma_map_lock(ma_map *m, size_t off, size_t len);

/* Locks pages of [off, off+len) as they are faulted in (mlock2 MLOCK_ONFAULT): nothing is
 * faulted in now. Errors and failure: as ma_map_lock, -ENOTSUP where the kernel lacks
 * mlock2. */
MA_API int ma_map_lock_on_fault(ma_map *m, size_t off, size_t len);

/* Unlocks [off, off+len). Errors: -EINVAL, -ENOMEM. */
MA_API int ma_map_unlock(ma_map *m, size_t off, size_t len);

/* Writes dirty pages of a file map's [off, off+len) back (msync MS_SYNC, or MS_ASYNC when
 * `async`). On anonymous maps it succeeds and does nothing. Errors: -EINVAL, -EIO, -ENOMEM.*/
MA_API int ma_map_flush(ma_map *m, size_t off, size_t len, bool async);

/* Makes instruction fetches see the bytes written to [addr, addr+len) (after writing code
 * into a JIT map). A no-op on x86-64. Thread-safe. */
MA_API void ma_flush_icache(void *addr, size_t len);

/* ---- Advice ------------------------------------------------------------------------------ */

enum ma_advice {
  MA_ADV_WILLNEED,   /* prefetch */
  MA_ADV_DONTNEED,   /* drop now; private anonymous pages read as zero afterwards */
  MA_ADV_FREE,       /* free lazily when memory is short; contents undefined until written */
  MA_ADV_REMOVE,     /* free the backing store (shared memory, memfd, tmpfs files) */
  MA_ADV_HUGEPAGE,   /* back with transparent huge pages */
  MA_ADV_NOHUGEPAGE, /* never back with transparent huge pages */
  MA_ADV_DONTDUMP,   /* exclude from core dumps */
  MA_ADV_DODUMP,     /* include in core dumps again */
  MA_ADV_DONTFORK,   /* not inherited by fork() children */
  MA_ADV_DOFORK,     /* inherited again */
  MA_ADV_PAGEOUT     /* reclaim now (to swap or file) */
};

/* Gives the kernel advice on [off, off+len). Errors: -EINVAL (range, unknown advice, or
 * advice not valid for this kind of map), -ENOTSUP (kernel lacks it), -ENOMEM, -EPERM. */
MA_API int ma_map_advise(ma_map *m, size_t off, size_t len, enum ma_advice adv);

/* ---- Split and merge -------------------------------------------------------------------- */

/* Splits a map at `off` (0 < off < len, a multiple of the map's page size): m keeps
 * [0, off), *tail gets [off, len) with the same prot, flags and fd (a file tail's offset
 * advanced by off); each half can then be destroyed or changed on its own. No system call
 * is made. Errors: -EINVAL (NULL, tail == m, off out of range or unaligned); nothing
 * changes. */
MA_API int ma_map_split(ma_map *m, size_t off, ma_map *tail);

/* Joins `next` onto the end of `m` when next starts where m ends, with the same prot,
 * flags, fd and page size (and, for files, the continuing file offset). *next is cleared.
 * No system call is made. Errors: -EINVAL (NULL, the same map, not adjacent, or differently
 * backed); nothing changes. */
MA_API int ma_map_merge(ma_map *m, ma_map *next);

/* ---- Process memory areas --------------------------------------------------------------- */

typedef struct ma_area {
  uintptr_t start, end;
  unsigned prot; /* MA_PROT_* */
  bool shared;
  uint64_t offset;
  char path[256]; /* file path (with " (deleted)" once unlinked; truncated to 255 bytes),
                     [heap], [stack], [vdso], [anon:name]...; "" for plain anonymous */
} ma_area;

/* Calls fn for each memory area of process pid (0 = self) intersecting [start, end), in
 * address order; fn returns non-zero to stop (that value is returned). Reads
 * /proc/PID/maps with read(2) into a stack buffer, without calling malloc (usable inside
 * an allocator or a forked child); fn may map and unmap memory. Errors: -ESRCH (no such
 * process), -EACCES (not allowed to read its maps), -EINVAL (pid < 0, start >= end or fn
 * NULL), or the read error. Thread-safe. */
MA_API int ma_areas_query(int pid, uintptr_t start, uintptr_t end,
                          int (*fn)(const ma_area *, void *ctx), void *ctx);

#ifdef __cplusplus
}
#endif

#endif /* MAPALLOC_PAGES_H */
