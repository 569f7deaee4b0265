/* Helpers of the tests of guard pages (include after common.h and malloc/heap_internal.h):
 * secure mode turned on at run time, and a write probed in a child for its fault. */
#ifndef MAPALLOC_TESTS_GUARD_COMMON_H
#define MAPALLOC_TESTS_GUARD_COMMON_H

#include <criterion/criterion.h>
#include <signal.h>
#include <stdbool.h>

#include "os/os.h"

/* One byte written past a block, unseen by AddressSanitizer (the bytes after a block are
 * free blocks, poisoned): the test wants the hardware fault at the guard page. */
__attribute__((no_sanitize_address)) static inline void poke(volatile char *c) {
  *c = 1;
}

static inline void child_poke(void *p) {
  signal(SIGSEGV, SIG_DFL);
  poke(p);
}

/* Does a write to `p` kill a child with SIGSEGV? */
static inline bool write_faults(volatile char *p) {
  return child_segfaults(child_poke, (void *)p);
}

/* Secure mode for the heap of this process, before its first segment (a default build's
 * segments made before keep no guards, and small classes share segments; large blocks read
 * it at each allocation). The options are read first: reading them sets obj_secure_rt from
 * MAPALLOC_SECURE. */
static inline void secure_on(void) {
  obj_options_read();
#if !OBJ_SECURE
  obj_secure_rt = true;
#endif
}

/* secure_on, for a test of guard markers: skipped (with the reason) where the kernel has
 * none. */
static inline void secure_markers_on(void) {
  secure_on();
  if (!os_guard_supported()) cr_skip_test("this kernel has no MADV_GUARD_INSTALL");
}

#endif /* MAPALLOC_TESTS_GUARD_COMMON_H */
