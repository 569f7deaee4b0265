/* Helpers shared by the Criterion test files (include after <criterion/criterion.h>). */
#ifndef MAPALLOC_TESTS_COMMON_H
#define MAPALLOC_TESTS_COMMON_H

#include <signal.h>
#include <string.h>
#include <sys/wait.h>
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

#endif
