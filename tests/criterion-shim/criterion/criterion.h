/* A minimal stand-in for Criterion's <criterion/criterion.h>, used ONLY in ThreadSanitizer
 * builds (tests/CMakeLists.txt puts this directory first on the include path there).
 *
 * Why: Criterion 2.4 cannot start under TSan. Its BoxFort runner maps a shared "inheritable
 * arena" at a fixed address that falls in TSan's shadow range, and aborts with "Could not
 * initialize inheritable arena" (Snaipe/Criterion issue #274, still open). This header
 * implements the subset the tests use -- Test/TestSuite with .init/.fini/.signal/.timeout,
 * the cr_assert_* family and cr_skip_test -- with one fork()ed child per test, so the same
 * test sources run under TSan unchanged. Not a general replacement for Criterion. */
#ifndef MAPALLOC_CRITERION_SHIM_H
#define MAPALLOC_CRITERION_SHIM_H

#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

struct mc_test {
  const char *suite, *name;
  void (*fn)(void);
  void (*init)(void);
  void (*fini)(void);
  int signal, exit_code;
  double timeout;
  bool disabled;
  const char *description;
  struct mc_test *next;
};
struct mc_suite {
  const char *name;
  void (*init)(void);
  void (*fini)(void);
  double timeout;
  bool disabled;
  const char *description;
  struct mc_suite *next;
};

/* One registry per test program (each test_<layer>.c is a single translation unit). */
static struct mc_test *mc_tests, **mc_tests_tail = &mc_tests;
static struct mc_suite *mc_suites;

#define MC_SKIP_EXIT 77 /* a child's exit status meaning "skipped" */

#define Test(S, N, ...)                                                                            \
  static void S##_##N##_impl(void);                                                                \
  static struct mc_test S##_##N##_desc = {                                                         \
      .suite = #S, .name = #N, .fn = S##_##N##_impl, __VA_ARGS__};                                 \
  __attribute__((constructor)) static void S##_##N##_reg(void) {                                   \
    *mc_tests_tail = &S##_##N##_desc;                                                              \
    mc_tests_tail = &S##_##N##_desc.next;                                                          \
  }                                                                                                \
  static void S##_##N##_impl(void)

#define TestSuite(S, ...)                                                                          \
  static struct mc_suite mc_suite_##S = {.name = #S, __VA_ARGS__};                                 \
  __attribute__((constructor)) static void mc_suite_reg_##S(void) {                                \
    mc_suite_##S.next = mc_suites;                                                                 \
    mc_suites = &mc_suite_##S;                                                                     \
  }

__attribute__((format(printf, 4, 5), unused)) static void
mc_fail(const char *file, int line, const char *expr, const char *fmt, ...) {
  fprintf(stderr, "[----] %s:%d: Assertion Failed\n[----]   %s\n", file, line, expr);
  if (fmt && *fmt) {
    va_list ap;
    va_start(ap, fmt);
    fputs("[----]   ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
  }
  exit(1);
}

/* The optional message: `"" __VA_ARGS__` is "" when none is given, else the format. */
#define MC_CHECK(cond, expr, ...)                                                                  \
  do {                                                                                             \
    if (!(cond)) mc_fail(__FILE__, __LINE__, expr, "" __VA_ARGS__);                                \
  } while (0)

#define cr_assert(c, ...)           MC_CHECK((c), #c, __VA_ARGS__)
#define cr_assert_not(c, ...)       MC_CHECK(!(c), "!(" #c ")", __VA_ARGS__)
#define cr_assert_eq(a, b, ...)     MC_CHECK((a) == (b), #a " == " #b, __VA_ARGS__)
#define cr_assert_neq(a, b, ...)    MC_CHECK((a) != (b), #a " != " #b, __VA_ARGS__)
#define cr_assert_lt(a, b, ...)     MC_CHECK((a) < (b), #a " < " #b, __VA_ARGS__)
#define cr_assert_leq(a, b, ...)    MC_CHECK((a) <= (b), #a " <= " #b, __VA_ARGS__)
#define cr_assert_gt(a, b, ...)     MC_CHECK((a) > (b), #a " > " #b, __VA_ARGS__)
#define cr_assert_geq(a, b, ...)    MC_CHECK((a) >= (b), #a " >= " #b, __VA_ARGS__)
#define cr_assert_null(p, ...)      MC_CHECK((p) == NULL, #p " == NULL", __VA_ARGS__)
#define cr_assert_not_null(p, ...)  MC_CHECK((p) != NULL, #p " != NULL", __VA_ARGS__)
#define cr_assert_str_eq(a, b, ...) MC_CHECK(strcmp((a), (b)) == 0, #a " equals " #b, __VA_ARGS__)
#define cr_assert_fail(...)         mc_fail(__FILE__, __LINE__, "cr_assert_fail", "" __VA_ARGS__)
#define cr_skip_test(...)                                                                          \
  do {                                                                                             \
    fprintf(stderr, "[SKIP] " __VA_ARGS__);                                                        \
    fputc('\n', stderr);                                                                           \
    exit(MC_SKIP_EXIT);                                                                            \
  } while (0)

static const struct mc_suite *mc_suite_of(const struct mc_test *t) {
  for (const struct mc_suite *s = mc_suites; s; s = s->next)
    if (strcmp(s->name, t->suite) == 0) return s;
  return NULL;
}

/* Runs one test in a child; returns 1 on failure, 0 on pass or skip. */
static int mc_run(const struct mc_test *t) {
  const struct mc_suite *s = mc_suite_of(t);
  if (t->disabled || (s && s->disabled)) return 0;
  double timeout = t->timeout > 0 ? t->timeout : s && s->timeout > 0 ? s->timeout : 600;
  fflush(NULL);
  pid_t pid = fork();
  if (pid < 0) {
    perror("fork");
    return 1;
  }
  if (pid == 0) {
    alarm((unsigned)timeout + 1);
    if (s && s->init) s->init();
    if (t->init) t->init();
    t->fn();
    if (t->fini) t->fini();
    if (s && s->fini) s->fini();
    exit(0);
  }
  int st;
  while (waitpid(pid, &st, 0) < 0) {
  }
  int sig = WIFSIGNALED(st) ? WTERMSIG(st) : 0, code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  bool ok =
      t->signal ? sig == t->signal : (sig == 0 && (code == t->exit_code || code == MC_SKIP_EXIT));
  printf("[%s] %s::%s%s", ok ? (code == MC_SKIP_EXIT ? "SKIP" : "PASS") : "FAIL", t->suite, t->name,
         ok ? "\n" : "");
  if (!ok) printf(": %s %d\n", sig ? "signal" : "exit status", sig ? sig : code);
  return !ok;
}

/* `--jobs N` and other Criterion options are accepted and ignored: tests run one by one.
 * A non-option argument runs only the tests whose "suite::name" contains it. */
int main(int argc, char **argv) {
  const char *filter = NULL;
  for (int i = 1; i < argc; i++)
    if (strcmp(argv[i], "--jobs") == 0 || strcmp(argv[i], "-j") == 0)
      i++;
    else if (argv[i][0] != '-')
      filter = argv[i];
  int run = 0, failed = 0;
  for (struct mc_test *t = mc_tests; t; t = t->next) {
    char full[256];
    snprintf(full, sizeof full, "%s::%s", t->suite, t->name);
    if (filter && !strstr(full, filter)) continue;
    run++;
    failed += mc_run(t);
  }
  printf("[====] Synthesis: Tested: %d | Passing: %d | Failing: %d\n", run, run - failed, failed);
  return failed ? 1 : 0;
}

#endif
