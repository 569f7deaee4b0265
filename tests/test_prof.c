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
