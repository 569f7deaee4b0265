/* bench-runner: run one command and report its cost, without depending on /usr/bin/time.
 *
 *   bench-runner [-p PRELOAD] [-t TIMEOUT_S] [-o OUTFILE] [-P PIDFILE] [-e VAR=VALUE]...
 *                -- CMD [ARGS...]
 *
 * Runs CMD in its own process group with LD_PRELOAD=PRELOAD (only in the child: the runner
 * itself is never preloaded), stdout and stderr to OUTFILE (default: inherited), waits for it
 * with wait4(2) and prints one line on stdout (-P writes the child's pid to PIDFILE first, so a
 * caller can watch a server in /proc and stop it with a signal):
 *   wall=<s> user=<s> sys=<s> maxrss_kib=<KiB> status=<exit code | sig:N | timeout>
 * user/sys/maxrss cover CMD and every descendant it waited for (Linux wait4 semantics; for
 * maxrss the largest single process). Exits 0 if CMD exited 0, 1 otherwise, 2 on usage. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double tv(struct timeval t) {
  return (double)t.tv_sec + (double)t.tv_usec * 1e-6;
}

static void usage(void) {
  fprintf(stderr, "usage: bench-runner [-p PRELOAD] [-t TIMEOUT_S] [-o OUTFILE] [-P PIDFILE] "
                  "[-e VAR=VALUE]... -- CMD [ARGS...]\n");
  exit(2);
}

int main(int argc, char **argv) {
  const char *preload = NULL, *out = NULL, *pidfile = NULL;
  double timeout = 0;
  int i = 1;
  for (; i < argc; i++) {
    if (!strcmp(argv[i], "--")) {
      i++;
      break;
    }
    if (i + 1 >= argc) usage();
    if (!strcmp(argv[i], "-p")) {
      preload = argv[++i];
    } else if (!strcmp(argv[i], "-t")) {
      timeout = atof(argv[++i]);
    } else if (!strcmp(argv[i], "-P")) {
      pidfile = argv[++i];
    } else if (!strcmp(argv[i], "-o")) {
      out = argv[++i];
    } else if (!strcmp(argv[i], "-e")) {
      if (!strchr(argv[i + 1], '=') || putenv(argv[i + 1])) usage();
      i++;
    } else {
      usage();
    }
  }
  if (i >= argc) usage();

  int outfd = -1;
  if (out) {
    outfd = open(out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (outfd < 0) {
      fprintf(stderr, "bench-runner: %s: %s\n", out, strerror(errno));
      return 2;
    }
  }

  double t0 = now();
  pid_t pid = fork();
  if (pid < 0) {
    perror("bench-runner: fork");
    return 2;
  }
  if (pid == 0) {
    setpgid(0, 0);
    if (outfd >= 0) {
      dup2(outfd, 1);
      dup2(outfd, 2);
    }
    if (preload && *preload) setenv("LD_PRELOAD", preload, 1);
    execvp(argv[i], argv + i);
    fprintf(stderr, "bench-runner: exec %s: %s\n", argv[i], strerror(errno));
    _exit(127);
  }
  setpgid(pid, pid); /* both sides, so the group exists before any kill */
  if (pidfile) {
    FILE *f = fopen(pidfile, "w");
    int bad = !f;
    if (f) {
      bad |= fprintf(f, "%d\n", (int)pid) < 0;
      bad |= fclose(f) != 0;
    }
    if (bad) {
      fprintf(stderr, "bench-runner: cannot write %s\n", pidfile);
      kill(-pid, SIGKILL);
    }
  }

  int status = 0, timed_out = 0;
  struct rusage ru;
  memset(&ru, 0, sizeof ru);
  for (;;) {
    pid_t r = wait4(pid, &status, timeout > 0 ? WNOHANG : 0, &ru);
    if (r == pid) break;
    if (r < 0 && errno != EINTR) {
      perror("bench-runner: wait4");
      return 2;
    }
    if (timeout > 0 && now() - t0 > timeout && !timed_out) {
      timed_out = 1;
      kill(-pid, SIGKILL);
    }
    if (timeout > 0) usleep(2000);
  }
  double wall = now() - t0;

  char st[32];
  if (timed_out) {
    snprintf(st, sizeof st, "timeout");
  } else if (WIFEXITED(status)) {
    snprintf(st, sizeof st, "%d", WEXITSTATUS(status));
  } else {
    snprintf(st, sizeof st, "sig:%d", WIFSIGNALED(status) ? WTERMSIG(status) : 0);
  }
  printf("wall=%.4f user=%.4f sys=%.4f maxrss_kib=%ld status=%s\n", wall, tv(ru.ru_utime),
         tv(ru.ru_stime), ru.ru_maxrss, st);
  return !timed_out && WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 1;
}
