/* Heap profiler internals that need no environment (src/malloc/prof*.c): the API with
 * profiling off, the libm-free exponential used to scale estimates. The profiles themselves
 * are tested end to end by tests/prof/run.sh (ctest prof_*). */
#include <criterion/criterion.h>
#include <errno.h>

#include "malloc/prof.h"
#include "mapalloc/prof.h"

Test(prof, api_reports_profiling_off) {
  cr_assert(!prof_on, "run without MAPALLOC_PROF");
  cr_assert_eq(ma_prof_dump(NULL), -ENOTSUP);
  cr_assert_eq(ma_prof_dump("/tmp/never-written.heap"), -ENOTSUP);
  cr_assert_eq(ma_prof_leaks_print(2, 0), -ENOTSUP);
}

Test(prof, free_and_usable_ignore_foreign_pointers_when_off) {
  int x;
  cr_assert(!prof_owns(&x));
  cr_assert(!prof_owns(NULL));
  cr_assert_eq(prof_usable(&x), 0);
}

static void close_to(double got, double want, double rel) {
  double d = got - want;
  if (d < 0) d = -d;
  cr_assert(d <= rel * want, "got %.17g, want %.17g", got, want);
}

Test(prof, exp_neg_matches_reference_values) {
  close_to(prof_exp_neg(0), 1.0, 1e-12);
  close_to(prof_exp_neg(1e-6), 0.99999900000049998, 1e-12);
  close_to(prof_exp_neg(0.5), 0.60653065971263342, 1e-12);
  close_to(prof_exp_neg(1), 0.36787944117144233, 1e-12);
  close_to(prof_exp_neg(10), 4.5399929762484854e-05, 1e-11);
  close_to(prof_exp_neg(100), 3.7200759760208361e-44, 1e-10);
  cr_assert_eq(prof_exp_neg(1000), 0.0);
}

Test(prof, scale_is_the_inverse_sampling_probability) {
  /* rate 524288: a block of the rate's size is sampled with probability 1 - 1/e */
  cr_assert_eq(prof_rate, 524288);
  close_to(prof_scale(524288), 1 / (1 - 0.36787944117144233), 1e-12);
  close_to(prof_scale(16), 1 / (1 - 0.99996948288644020), 1e-6); /* ~32768 */
  close_to(prof_scale(64.0 * 524288), 1.0, 1e-12);               /* large blocks: always */
}

/* ---- prof_unwind: the same return addresses as glibc's backtrace() ---- */
#include <dlfcn.h> /* DLFO_EH_SEGMENT_TYPE: glibc 2.35 has _dl_find_object, the fast walk runs */
#include <execinfo.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>

#define UNW_MAX 64

/* Walks the stack both ways from here and compares them below this frame (their first
 * entries are two call sites in this function). Returns the fast walk's depth (-1: it
 * declined, and the sample would use backtrace()). */
__attribute__((noinline)) static int unwind_compare(void) {
  void *fast[UNW_MAX], *slow[UNW_MAX];
  int n = prof_unwind(fast, UNW_MAX);
  int m = backtrace(slow, UNW_MAX);
  if (n < 0) return n;
  /* The walks meet at this function's caller: backtrace()'s first entry is its call site
   * here, or under ASan its interceptor's frame and then that. */
  cr_assert_geq(n, 2);
  int j = 0;
  while (j < m && j < 3 && slow[j] != fast[1]) j++;
  cr_assert(j < m && j < 3, "prof_unwind's second frame %p is not among backtrace()'s first",
            fast[1]);
  cr_assert_eq(n - 1, m - j, "prof_unwind found %d frames below, backtrace %d", n - 1, m - j);
  for (int i = 1; i < n; i++)
    cr_assert_eq(fast[i], slow[j + i - 1], "frame %d: prof_unwind %p, backtrace %p", i, fast[i],
                 slow[j + i - 1]);
  return n;
}

/* Frames of several shapes: a frame pointer and a variable-length array (CFA from rbp),
 * none (CFA from rsp, moving with pushes), a large frame, an indirect call. */
static volatile int unw_sink;
typedef int (*unw_fn)(int);
static int unw_shape(int level);

__attribute__((noinline, optimize("no-omit-frame-pointer"))) static int unw_vla(int level) {
  char buf[16 + (level & 7) * 40];
  memset(buf, level, sizeof buf);
  int r = unw_shape(level - 1) + buf[level & 15];
  unw_sink = r;
  return r;
}

__attribute__((noinline, optimize("omit-frame-pointer"))) static int unw_plain(int level) {
  int r = unw_shape(level - 1);
  unw_sink = r;
  return r + 1;
}

__attribute__((noinline)) static int unw_big(int level) {
  volatile char big[20000];
  big[level] = (char)level;
  int r = unw_shape(level - 1) + big[level];
  unw_sink = r;
  return r;
}

static unw_fn volatile unw_table[3] = {unw_vla, unw_plain, unw_big};

static int unw_depth_seen;
__attribute__((noinline)) static int unw_shape(int level) {
  if (level == 0) {
    unw_depth_seen = unwind_compare();
    return 0;
  }
  return unw_table[level % 3](level);
}

Test(prof, unwind_matches_backtrace) {
  for (int level = 0; level < 24; level++) {
    unw_shape(level);
#if defined(__x86_64__) && defined(DLFO_EH_SEGMENT_TYPE)
    cr_assert_geq(unw_depth_seen, level + 2, "level %d: fast walk declined or fell short (%d)",
                  level, unw_depth_seen);
#endif
  }
}

static void *unw_thread(void *arg) {
  (void)arg;
  unw_shape(5);
  return NULL;
}

Test(prof, unwind_matches_backtrace_in_a_thread) {
  pthread_t t;
  cr_assert_eq(pthread_create(&t, NULL, unw_thread, NULL), 0);
  cr_assert_eq(pthread_join(t, NULL), 0);
#if defined(__x86_64__) && defined(DLFO_EH_SEGMENT_TYPE)
  cr_assert_geq(unw_depth_seen, 7);
#endif
}

static void unw_on_signal(int sig) {
  (void)sig;
  unw_shape(2); /* through the signal frame: compared if the fast walk takes it */
}

Test(prof, unwind_through_a_signal_frame_declines_or_matches) {
  struct sigaction sa, old;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = unw_on_signal;
  cr_assert_eq(sigaction(SIGUSR1, &sa, &old), 0);
  unw_depth_seen = 0;
  raise(SIGUSR1);
  cr_assert_eq(sigaction(SIGUSR1, &old, NULL), 0);
  cr_assert_neq(unw_depth_seen, 0, "the handler ran");
}
