/* fork() from a signal handler that interrupted a fork() (issue 12.6; the scenario of
 * glibc's tst-mallocfork2, written here from its description). A single-threaded process
 * forks in a loop and allocates from the heap and a pool between forks, while a sender
 * process floods it with SIGUSR1, whose handler forks too. A fork handler that takes a lock
 * the interrupted fork already holds deadlocks; a SIGALRM watchdog that sees no fork finish
 * for WATCHDOG_S seconds then reports it.
 *
 * The sender waits for the handler's acknowledgement (a byte on a pipe) before the next
 * signal: where a fork takes longer than the signal interval (ASan's shadow makes it slow)
 * an unpaced flood keeps the process in its handler and the loop starves, which is not
 * the deadlock this test looks for.
 *
 * Usage: fork_signal [SECONDS]   (default 2). Exit 0 when every fork returned.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <mapalloc/heap.h>
#include <mapalloc/pool.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

enum { WATCHDOG_S = 10 };

static volatile sig_atomic_t handler_forks;
static volatile sig_atomic_t forks_done; /* the loop's and the handler's */
static sig_atomic_t forks_seen;
static int ack_fd = -1;

static void say(const char *msg) {
  ssize_t w = write(2, msg, strlen(msg));
  (void)w;
}

static void on_usr1(int sig) {
  (void)sig;
  int saved = errno;
  pid_t pid = fork();
  if (pid == 0) _exit(0);
  if (pid > 0) {
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {
    }
    handler_forks++;
    forks_done++;
  }
  char ack = 1;
  ssize_t w = write(ack_fd, &ack, 1);
  (void)w;
  errno = saved;
}

static void on_alarm(int sig) {
  (void)sig;
  if (forks_done == forks_seen) {
    say("fork_signal: FAILED: no fork returned for 10 s (deadlock in a fork handler)\n");
    _exit(1);
  }
  forks_seen = forks_done;
  alarm(WATCHDOG_S);
}

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
  double secs = argc > 1 ? atof(argv[1]) : 2.0;
  ma_pool *pool;
  ma_pool_opts po = {.obj_size = 48};
  if (ma_pool_create(&po, &pool) != 0) return 2;
  struct sigaction sa = {.sa_handler = on_usr1}; /* no SA_RESTART: waitpid sees EINTR */
  sigaction(SIGUSR1, &sa, NULL);
  signal(SIGALRM, on_alarm);
  int ack[2];
  if (pipe(ack) != 0) return 2;
  ack_fd = ack[1];
  pid_t parent = getpid();
  pid_t sender = fork();
  if (sender == 0) { /* a process, not a thread: the test process stays single-threaded */
    close(ack[1]);
    char c;
    for (;;) {
      if (kill(parent, SIGUSR1) != 0) _exit(0);
      if (read(ack[0], &c, 1) != 1) _exit(0); /* the parent is gone */
      struct timespec ts = {0, 300000};       /* 0.3 ms */
      nanosleep(&ts, NULL);
    }
  }
  close(ack[0]);
  alarm(WATCHDOG_S);
  unsigned long loops = 0;
  double end = now() + secs;
  while (now() < end) {
    void *a = ma_malloc(100 + loops % 5000), *b = ma_pool_alloc(pool);
    pid_t pid = fork();
    if (pid == 0) {
      ma_free(ma_malloc(64)); /* the child's heap works */
      _exit(0);
    }
    if (pid < 0) {
      perror("fork");
      return 1;
    }
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {
    }
    ma_free(a);
    ma_pool_free(pool, b);
    loops++;
    forks_done++;
  }
  alarm(0);
  /* No handler may run once the sender is gone: its acknowledgement would write to a pipe
   * without a reader (SIGPIPE killed the test now and then under load). */
  signal(SIGUSR1, SIG_IGN);
  kill(sender, SIGKILL);
  waitpid(sender, NULL, 0);
  ma_pool_destroy(pool);
  printf("fork_signal: %lu forks in the loop, %d from the handler: ok\n", loops,
         (int)handler_forks);
  /* Both must have forked for the test to mean much. */
  return handler_forks > 0 && loops > 0 ? 0 : 1;
}
