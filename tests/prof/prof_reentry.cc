// Re-entrancy of the heap profiler, run with MAPALLOC_PROF_SAMPLE=1 (every allocation is
// sampled) and MAPALLOC_PROF_WARMUP=0 (backtrace() is not warmed up at start): a sample
// through a signal frame, where the fast stack walk declines, makes the first call of
// backtrace(), which allocates inside the profiler; exceptions allocate and unwind while
// other threads sample; dlopen allocates inside the loader.
#include <dlfcn.h>
#include <signal.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

__attribute__((noinline)) static void thrower(int i) {
  throw std::runtime_error("boom " + std::to_string(i));
}

static int work(int n) {
  int caught = 0;
  std::vector<std::string> v;
  for (int i = 0; i < n; i++) {
    try {
      thrower(i);
    } catch (const std::exception &e) {
      v.emplace_back(e.what());
      caught++;
    }
    if (v.size() > 64) v.clear();
  }
  return caught;
}

static void *volatile sig_block;
static void on_signal(int) {
  sig_block = std::malloc(100); // (raise() runs it synchronously: main is not in malloc)
}

int main() {
  std::signal(SIGUSR1, on_signal);
  std::raise(SIGUSR1);
  std::free(sig_block);
  std::vector<std::thread> ts;
  int caught[4] = {0, 0, 0, 0};
  for (int t = 0; t < 4; t++) ts.emplace_back([&caught, t] { caught[t] = work(2000); });
  void *h = dlopen("libm.so.6", RTLD_NOW);
  int main_caught = work(2000);
  for (auto &t : ts) t.join();
  if (h) dlclose(h);
  int total = main_caught + caught[0] + caught[1] + caught[2] + caught[3];
  std::printf("reentry: caught %d exceptions\n", total);
  return total == 10000 ? 0 : 1;
}
