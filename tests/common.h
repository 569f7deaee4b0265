/* Helpers shared by the Criterion test files (include after <criterion/criterion.h>). */
#ifndef MAPALLOC_TESTS_COMMON_H
#define MAPALLOC_TESTS_COMMON_H

#include <criterion/logging.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ThreadSanitizer cannot start threads in the child of a multithreaded fork: fork tests'
 * children stay single-threaded there (their other checks still run). */
#if defined(__SANITIZE_THREAD__)
#define CHILD_THREADS 0
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define CHILD_THREADS 0
#endif
#endif
#ifndef CHILD_THREADS
#define CHILD_THREADS 1
#endif

/* The seed of a randomised test: MAPALLOC_TEST_SEED, else the time; logged, so that a
 * failing run can be replayed. */
static inline uint64_t test_seed(void) {
  const char *env = getenv("MAPALLOC_TEST_SEED");
  uint64_t seed = env ? strtoull(env, NULL, 10) : (uint64_t)time(NULL);
  cr_log_info("seed %llu (MAPALLOC_TEST_SEED)\n", (unsigned long long)seed);
  return seed;
}

/* The next number of a test's xorshift sequence (*x never 0). */
static inline uint64_t test_rand(uint64_t *x) {
  *x ^= *x << 13;
  *x ^= *x >> 7;
  *x ^= *x << 17;
  return *x;
}

/* Runs fn in a forked child with its stderr on a pipe; asserts that the child aborts and
 * that what it wrote holds every string of want[] (NULL-terminated). */
static inline void expect_abort_saying(void (*fn)(void), const char *const *want) {
  int fds[2];
  cr_assert_eq(pipe(fds), 0);
  pid_t pid = fork();
  cr_assert_geq(pid, 0);
  if (pid == 0) {
    dup2(fds[1], 2);
    fn();
    _exit(0);
  }
  close(fds[1]);
  char buf[1024] = {0};
  size_t n = 0;
  ssize_t k;
  while (n < sizeof buf - 1 && (k = read(fds[0], buf + n, sizeof buf - 1 - n)) > 0) n += (size_t)k;
  close(fds[0]);
  int status;
  cr_assert_eq(waitpid(pid, &status, 0), pid);
  cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT, "child did not abort: %s", buf);
  for (; *want; want++) cr_assert(strstr(buf, *want) != NULL, "message was: %s", buf);
}

/* Waits for the child pid (asserting that the wait succeeds) and returns its status. */
static inline int wait_child(pid_t pid) {
  int st = 0;
  cr_assert_eq(waitpid(pid, &st, 0), pid);
  return st;
}

/* Waits for the child pid and asserts that it exited with status 0; `what` names it in the
 * failure message. */
static inline void expect_child_ok(pid_t pid, const char *what) {
  int st = wait_child(pid);
  cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s: child status %#x (%s %d)", what, st,
            WIFSIGNALED(st) ? "signal" : "exit", WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
}

/* Runs fn(arg) in a forked child (stdio flushed first, so that nothing is written twice),
 * which then exits 0; returns the child's wait status. */
static inline int run_in_child(void (*fn)(void *), void *arg) {
  fflush(NULL);
  pid_t pid = fork();
  cr_assert_geq(pid, 0);
  if (pid == 0) {
    fn(arg);
    _exit(0);
  }
  return wait_child(pid);
}

/* Did fn(arg), run in a forked child, kill it with SIGSEGV? (Probes of guard pages and
 * unmapped or protected memory.) */
static inline bool child_segfaults(void (*fn)(void *), void *arg) {
  int st = run_in_child(fn, arg);
  return WIFSIGNALED(st) && WTERMSIG(st) == SIGSEGV;
}

/* The stages a test and a thread of its step through: each waits until the other has
 * reached the stage it needs. */
typedef struct test_stage {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int stage;
} test_stage;
#define TEST_STAGE_INIT                                                                            \
  { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0 }

static inline void stage_set(test_stage *t, int s) {
  pthread_mutex_lock(&t->mu);
  t->stage = s;
  pthread_cond_broadcast(&t->cv);
  pthread_mutex_unlock(&t->mu);
}

static inline void stage_wait(test_stage *t, int s) {
  pthread_mutex_lock(&t->mu);
  while (t->stage < s) pthread_cond_wait(&t->cv, &t->mu);
  pthread_mutex_unlock(&t->mu);
}

#endif
