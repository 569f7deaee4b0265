/* Benchmark: std::map<int, T> and std::list<T> inserts and erases with
 * mapalloc::pool_allocator against std::allocator under glibc, jemalloc, mimalloc and
 * tcmalloc (LD_PRELOAD of Debian's libraries), in the same run.
 *
 *   bench_containers [--reps N] [--scale F]   the table (runs itself as children)
 *   bench_containers --callgrind [--scale F]  instructions per operation (callgrind)
 *   bench_containers --child pool|std [--scale F]   one child: "workload ns/op" lines
 *
 * The runner re-executes itself once per allocator and repetition, interleaved (pool,
 * glibc, jemalloc, mimalloc, tcmalloc, pool, ...) and prints the median ns per operation
 * and the ratio of each std::allocator run to pool_allocator (> 1: the pool is faster).
 * With --callgrind each workload runs once per allocator under callgrind, counting only
 * inside the workload's function (--toggle-collect).
 */
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <list>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "mapalloc/pool.hpp"

namespace {

double scale = 1.0;

struct Value { /* a 32-byte payload: map nodes of 72 bytes, list nodes of 48 */
  std::uint64_t a[4];
};

std::uint64_t rng_state = 88172645463325252ull;
std::uint64_t rnd() {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return rng_state;
}

std::size_t scaled(double n) {
  return std::max<std::size_t>(1, static_cast<std::size_t>(n * scale));
}

template <class T> T *escape(T *p) {
  __asm__ volatile("" : : "r"(p) : "memory");
  return p;
}

/* Each workload returns its operation count; noinline so callgrind can toggle on it. */
template <template <class> class A> __attribute__((noinline)) std::size_t wl_map_fill_drain() {
  using M = std::map<int, Value, std::less<int>, A<std::pair<const int, Value>>>;
  const std::size_t n = scaled(200000);
  std::vector<int> keys(n);
  for (std::size_t i = 0; i < n; i++) keys[i] = static_cast<int>(rnd() >> 33);
  std::size_t ops = 0;
  for (int rep = 0; rep < 3; rep++) {
    M m;
    for (int k : keys) m.emplace(k, Value{});
    for (int k : keys) m.erase(k);
    ops += 2 * n;
    escape(&m);
  }
  return ops;
}

template <template <class> class A> __attribute__((noinline)) std::size_t wl_map_churn() {
  using M = std::map<int, Value, std::less<int>, A<std::pair<const int, Value>>>;
  M m;
  const int range = 200000;
  for (int i = 0; i < range / 2; i++) m.emplace(static_cast<int>(rnd() % range), Value{});
  const std::size_t n = scaled(1000000);
  for (std::size_t i = 0; i < n; i++) {
    const int k = static_cast<int>(rnd() % range);
    if (i & 1)
      m.erase(k);
    else
      m.emplace(k, Value{});
  }
  escape(&m);
  return n;
}

template <template <class> class A> __attribute__((noinline)) std::size_t wl_list_push_pop() {
  std::list<Value, A<Value>> l;
  const std::size_t n = scaled(300000);
  std::size_t ops = 0;
  for (int rep = 0; rep < 4; rep++) {
    for (std::size_t i = 0; i < n; i++) l.push_back(Value{{i, 0, 0, 0}});
    while (!l.empty()) l.pop_front();
    ops += 2 * n;
  }
  escape(&l);
  return ops;
}

template <template <class> class A> __attribute__((noinline)) std::size_t wl_list_churn() {
  std::list<Value, A<Value>> l;
  for (int i = 0; i < 100000; i++) l.push_back(Value{});
  /* Erase and insert around a cursor that wanders: nodes are freed and reused out of order. */
  auto it = l.begin();
  const std::size_t n = scaled(1000000);
  for (std::size_t i = 0; i < n; i++) {
    const std::uint64_t r = rnd();
    for (std::uint64_t s = r % 8; s > 0; s--)
      if (++it == l.end()) it = l.begin();
    if (r & 0x100) {
      it = l.erase(it);
      if (it == l.end()) it = l.begin();
    } else {
      it = l.insert(it, Value{{r, 0, 0, 0}});
    }
  }
  escape(&l);
  return n;
}

struct workload {
  const char *name;
  std::size_t (*pool)();
  std::size_t (*std)();
  const char *pool_fn, *std_fn; /* for --toggle-collect */
};

template <class T> using pool_alloc = mapalloc::pool_allocator<T>;
template <class T> using std_alloc = std::allocator<T>;

const workload workloads[] = {
    {"map_fill_drain", wl_map_fill_drain<pool_alloc>, wl_map_fill_drain<std_alloc>,
     "*wl_map_fill_drain*pool_allocator*", "*wl_map_fill_drain*allocator*"},
    {"map_churn", wl_map_churn<pool_alloc>, wl_map_churn<std_alloc>,
     "*wl_map_churn*pool_allocator*", "*wl_map_churn*allocator*"},
    {"list_push_pop", wl_list_push_pop<pool_alloc>, wl_list_push_pop<std_alloc>,
     "*wl_list_push_pop*pool_allocator*", "*wl_list_push_pop*allocator*"},
    {"list_churn", wl_list_churn<pool_alloc>, wl_list_churn<std_alloc>,
     "*wl_list_churn*pool_allocator*", "*wl_list_churn*allocator*"},
};

int child(bool pool, const char *only) {
  for (const auto &w : workloads) {
    if (only && std::strcmp(only, w.name) != 0) continue;
    const auto t0 = std::chrono::steady_clock::now();
    const std::size_t ops = pool ? w.pool() : w.std();
    const double ns =
        std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0).count();
    std::printf("%s %zu %.2f\n", w.name, ops, ns / static_cast<double>(ops));
  }
  return 0;
}

struct config {
  const char *name;
  const char *mode;    /* child mode */
  const char *preload; /* LD_PRELOAD or nullptr */
};
const config configs[] = {
    {"pool_allocator", "pool", nullptr},
    {"std/glibc", "std", nullptr},
    {"std/jemalloc", "std", "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"},
    {"std/mimalloc", "std", "/usr/lib/x86_64-linux-gnu/libmimalloc.so.2"},
    {"std/tcmalloc", "std", "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4"},
};
constexpr int nconfigs = sizeof configs / sizeof configs[0];
constexpr int nworkloads = sizeof workloads / sizeof workloads[0];

/* Runs argv with LD_PRELOAD = preload and returns its stdout (or stderr with err). */
std::string run(const std::vector<std::string> &args, const char *preload, bool err = false) {
  int fds[2];
  if (pipe(fds) != 0) std::exit(1);
  const pid_t pid = fork();
  if (pid == 0) {
    dup2(fds[1], err ? 2 : 1);
    if (err) {
      const int null = open("/dev/null", O_WRONLY);
      dup2(null, 1);
    }
    close(fds[0]);
    if (preload)
      setenv("LD_PRELOAD", preload, 1);
    else
      unsetenv("LD_PRELOAD");
    std::vector<char *> av;
    for (const auto &a : args) av.push_back(const_cast<char *>(a.c_str()));
    av.push_back(nullptr);
    execvp(av[0], av.data());
    _exit(127);
  }
  close(fds[1]);
  std::string out;
  char buf[4096];
  ssize_t r;
  while ((r = read(fds[0], buf, sizeof buf)) > 0) out.append(buf, static_cast<std::size_t>(r));
  close(fds[0]);
  int st = 0;
  waitpid(pid, &st, 0);
  if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
    std::fprintf(stderr, "bench_containers: child %s failed\n", args[0].c_str());
    std::exit(1);
  }
  return out;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}

} // namespace

int main(int argc, char **argv) {
  int reps = 7;
  bool callgrind = false;
  const char *mode = nullptr, *only = nullptr;
  for (int i = 1; i < argc; i++) {
    if (!std::strcmp(argv[i], "--reps") && i + 1 < argc)
      reps = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--scale") && i + 1 < argc)
      scale = std::atof(argv[++i]);
    else if (!std::strcmp(argv[i], "--child") && i + 1 < argc)
      mode = argv[++i];
    else if (!std::strcmp(argv[i], "--only") && i + 1 < argc)
      only = argv[++i];
    else if (!std::strcmp(argv[i], "--callgrind"))
      callgrind = true;
    else {
      std::fprintf(stderr, "usage: %s [--reps N] [--scale F] [--callgrind]\n", argv[0]);
      return 2;
    }
  }
  if (mode) return child(!std::strcmp(mode, "pool"), only);

  char self[4096];
  const ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
  if (n <= 0) return 1;
  self[n] = 0;
  const std::string sc = std::to_string(scale);
  if (callgrind) {
    setenv("MAPALLOC_TRACK", "0", 1); /* no valgrind client requests in the pools */
    std::printf("instructions per operation (callgrind, inside the workload; ratio = std / "
                "pool_allocator)\n%-16s",
                "workload");
    for (const auto &c : configs) std::printf("%22s", c.name);
    std::printf("\n");
    for (const auto &w : workloads) {
      std::printf("%-16s", w.name);
      double pool_ir = 0;
      for (const auto &c : configs) {
        const bool pool = !std::strcmp(c.mode, "pool");
        const std::string toggle = std::string("--toggle-collect=") + (pool ? w.pool_fn : w.std_fn);
        const std::string err =
            run({"valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", toggle, self,
                 "--child", c.mode, "--only", w.name, "--scale", sc},
                c.preload, true);
        const std::size_t at = err.find("Collected : ");
        const double ir = at == std::string::npos ? 0 : std::atof(err.c_str() + at + 12);
        /* operations: from a plain run of the same child (cheap at small scales). */
        const std::string out =
            run({self, "--child", c.mode, "--only", w.name, "--scale", sc}, c.preload);
        char name[64];
        std::size_t ops = 1;
        double ns;
        std::sscanf(out.c_str(), "%63s %zu %lf", name, &ops, &ns);
        const double per = ir / static_cast<double>(ops);
        if (pool) pool_ir = per;
        if (pool)
          std::printf("%22.1f", per);
        else
          std::printf("%14.1f (%4.2fx)", per, per / pool_ir);
      }
      std::printf("\n");
    }
    return 0;
  }
  std::vector<double> ns[nconfigs][nworkloads];
  for (int r = 0; r < reps; r++)
    for (int c = 0; c < nconfigs; c++) {
      const std::string out =
          run({self, "--child", configs[c].mode, "--scale", sc}, configs[c].preload);
      std::size_t pos = 0;
      for (int w = 0; w < nworkloads; w++) {
        char name[64];
        std::size_t ops;
        double v;
        if (std::sscanf(out.c_str() + pos, "%63s %zu %lf", name, &ops, &v) != 3) return 1;
        ns[c][w].push_back(v);
        pos = out.find('\n', pos) + 1;
      }
    }
  std::printf(
      "median ns per operation over %d interleaved runs (ratio = std / pool_allocator; > 1: "
      "the pool is faster)\n%-16s",
      reps, "workload");
  for (const auto &c : configs) std::printf("%20s", c.name);
  std::printf("\n");
  for (int w = 0; w < nworkloads; w++) {
    std::printf("%-16s", workloads[w].name);
    const double pool = median(ns[0][w]);
    std::printf("%20.1f", pool);
    for (int c = 1; c < nconfigs; c++) {
      const double m = median(ns[c][w]);
      std::printf("%12.1f (%4.2fx)", m, m / pool);
    }
    std::printf("\n");
  }
  return 0;
}
