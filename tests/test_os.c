/* Tests of the internal page primitives (src/os/os.h) the upper layers build on. */
#include <criterion/criterion.h>
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>

#include "os/os.h"

#if defined(__SANITIZE_ADDRESS__) || defined(__has_feature)
/* Under AddressSanitizer: let SIGSEGV kill the process as the fault probes expect. */
const char *__asan_default_options(void);
const char *__asan_default_options(void) {
  return "handle_segv=0";
}
#endif

Test(os, page_size_is_power_of_two) {
  size_t ps = os_page_size();
  cr_assert_geq(ps, 4096);
  cr_assert_eq(ps & (ps - 1), 0);
}

Test(os, reserve_aligned_then_commit_and_decommit) {
  size_t align = 4u << 20, len = 8u << 20;
  char *p = os_reserve(len, align, NULL);
  cr_assert_not_null(p);
  cr_assert_eq((uintptr_t)p & (align - 1), 0);
  cr_assert_eq(os_commit(p, 2 * os_page_size(), MA_PROT_READ | MA_PROT_WRITE), 0);
  memset(p, 0xab, 2 * os_page_size());
  cr_assert_eq(os_decommit(p, 2 * os_page_size()), 0);
  cr_assert_eq(os_commit(p, os_page_size(), MA_PROT_READ | MA_PROT_WRITE), 0);
  cr_assert_eq(p[0], 0, "a decommitted range reads as zeros after commit");
  cr_assert_eq(os_release(p, len), 0);
}

Test(os, reserved_range_faults, .signal = SIGSEGV) {
  volatile char *p = os_reserve(os_page_size(), 0, NULL);
  cr_assert_not_null(p);
  p[0] = 1;
}

Test(os, reset_keeps_range_accessible_and_zero) {
  size_t ps = os_page_size();
  char *p = os_alloc(4 * ps, 0, true);
  cr_assert_not_null(p);
  memset(p, 7, 4 * ps);
  cr_assert_eq(os_reset(p, 4 * ps), 0);
  for (size_t i = 0; i < 4 * ps; i += ps) cr_assert_eq(p[i], 0);
  cr_assert_eq(os_release(p, 4 * ps), 0);
}

Test(os, map_fixed_replaces_in_place) {
  size_t ps = os_page_size();
  char *p = os_reserve(4 * ps, 0, NULL);
  cr_assert_not_null(p);
  cr_assert_eq(os_map_fixed(p + ps, ps, MA_PROT_READ | MA_PROT_WRITE, 0, -1, 0), 0);
  p[ps] = 42;
  cr_assert_eq(p[ps], 42);
  cr_assert_eq(os_map_fixed(p + ps, ps, MA_PROT_READ, 0, 99999, 0), -EBADF);
  cr_assert_eq(p[ps], 42, "a failed fixed map leaves the old mapping");
  cr_assert_eq(os_release(p, 4 * ps), 0);
}
