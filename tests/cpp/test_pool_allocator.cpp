/* C++ adapters of include/mapalloc/pool.hpp: mapalloc::pool, object_pool<T> and
 * pool_allocator<T> with the standard node containers, threads and propagation. */
#include <criterion/criterion.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdint>
#include <list>
#include <map>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "mapalloc/pool.hpp"

using mapalloc::pool_allocator;

namespace {

template <class T> using plist = std::list<T, pool_allocator<T>>;
template <class K, class V>
using pmap = std::map<K, V, std::less<K>, pool_allocator<std::pair<const K, V>>>;
template <class K, class V>
using phash =
    std::unordered_map<K, V, std::hash<K>, std::equal_to<K>, pool_allocator<std::pair<const K, V>>>;

std::size_t heap_allocs() {
  ma_heap_stats s{};
  ma_heap_stats_get(&s);
  return s.allocs;
}

struct Counted {
  static std::atomic<int> live;
  std::uint64_t v;
  explicit Counted(std::uint64_t x) : v(x) { live.fetch_add(1); }
  Counted(const Counted &o) : v(o.v) { live.fetch_add(1); }
  ~Counted() { live.fetch_sub(1); }
};
std::atomic<int> Counted::live{0};

} // namespace

Test(pool_allocator, list_nodes_come_from_a_pool) {
  const std::size_t heap_before = heap_allocs();
  {
    plist<int> l;
    for (int i = 0; i < 20000; i++) l.push_back(i);
    /* Nodes are pool objects, not heap blocks: the heap saw (almost) nothing. */
    cr_assert_lt(heap_allocs() - heap_before, 100u, "heap allocations: %zu",
                 heap_allocs() - heap_before);
    l.remove_if([](int x) { return x % 3 == 0; });
    cr_assert_eq(l.size(), 13333u);
    long sum = 0;
    for (int x : l) sum += x;
    long expect = 0;
    for (int i = 0; i < 20000; i++)
      if (i % 3 != 0) expect += i;
    cr_assert_eq(sum, expect);
  }
  /* A std::list<int> node (two links and an int) shares the pool of its size class with any
   * other 24-byte, 8-aligned node type: every node was returned. */
  using node_alloc = pool_allocator<std::array<void *, 3>>;
  ma_pool_stats s{};
  ma_pool_stats_get(node_alloc::shared_pool(), &s);
  cr_assert_eq(s.live, 0u, "live nodes after the list is gone: %zu", s.live);
  cr_assert_geq(s.allocs, 20000u);
}

Test(pool_allocator, map_set_unordered_map) {
  pmap<int, std::string> m;
  std::set<long, std::less<long>, pool_allocator<long>> s;
  phash<std::uint64_t, int> h;
  for (int i = 0; i < 30000; i++) {
    m.emplace(i * 7919 % 30011, std::to_string(i));
    s.insert(i * 31L % 1009);
    h[static_cast<std::uint64_t>(i) * 2654435761u] = i;
    if (i % 4 == 3) {
      m.erase(m.begin());
      h.erase(static_cast<std::uint64_t>(i - 1) * 2654435761u);
    }
  }
  cr_assert_eq(m.size(), 30000u - 7500u);
  cr_assert_eq(s.size(), 1009u);
  cr_assert_eq(h.size(), 30000u - 7500u);
  for (const auto &kv : m) cr_assert_eq(std::stoi(kv.second) * 7919 % 30011, kv.first);
  cr_assert_eq(h.at(5ull * 2654435761u), 5);
  cr_assert(h.find(2ull * 2654435761u) == h.end());
  h.rehash(1 << 16); /* the bucket array is a heap block (n > 1) */
  cr_assert_geq(h.bucket_count(), 1u << 16);
  cr_assert_eq(h.at(4ull * 2654435761u), 4);
}

Test(pool_allocator, object_pool_handles) {
  mapalloc::object_pool<Counted> pool;
  {
    std::vector<mapalloc::object_pool<Counted>::handle> hs;
    for (std::uint64_t i = 0; i < 5000; i++) hs.push_back(pool.make(i));
    cr_assert_eq(Counted::live.load(), 5000);
    cr_assert_eq(pool.stats().live, 5000u);
    cr_assert_eq(hs[4999]->v, 4999u);
    hs.erase(hs.begin(), hs.begin() + 1000);
    cr_assert_eq(pool.stats().live, 4000u);
  }
  cr_assert_eq(Counted::live.load(), 0);
  cr_assert_eq(pool.stats().live, 0u);

  struct Throws {
    explicit Throws(int x) {
      if (x < 0) throw std::runtime_error("no");
    }
  };
  mapalloc::object_pool<Throws> tp;
  bool threw = false;
  try {
    auto h = tp.make(-1);
  } catch (const std::runtime_error &) {
    threw = true;
  }
  cr_assert(threw);
  cr_assert_eq(tp.stats().live, 0u, "a throwing constructor gives the object back");

  bool bad = false;
  try {
    mapalloc::pool p(0);
  } catch (const std::system_error &e) {
    bad = e.code().value() == EINVAL;
  }
  cr_assert(bad, "ma_pool_create's EINVAL arrives as std::system_error");
}

Test(pool_allocator, threads_share_pools_and_free_each_others_nodes) {
  constexpr int nthreads = 4, per = 20000;
  std::vector<plist<Counted>> lists(nthreads);
  std::vector<std::thread> ts;
  for (int t = 0; t < nthreads; t++)
    ts.emplace_back([&, t] {
      pmap<int, int> local;
      for (int i = 0; i < per; i++) {
        lists[t].emplace_back(static_cast<std::uint64_t>(t) << 32 | i);
        local[i % 977] += i;
      }
      cr_assert_eq(local.size(), 977u);
    });
  for (auto &t : ts) t.join();
  ts.clear();
  /* Each thread now frees the nodes another thread allocated (remote frees), after
   * splicing them into its own list (no allocation: equal allocators). */
  for (int t = 0; t < nthreads; t++)
    ts.emplace_back([&, t] {
      plist<Counted> mine;
      mine.splice(mine.end(), lists[(t + 1) % nthreads]);
      std::uint64_t n = 0;
      for (const auto &c : mine) n += c.v & 0xffffffff;
      cr_assert_eq(n, static_cast<std::uint64_t>(per) * (per - 1) / 2);
      mine.clear();
    });
  for (auto &t : ts) t.join();
  cr_assert_eq(Counted::live.load(), 0);
}

Test(pool_allocator, propagation_and_equality) {
  pool_allocator<int> a;
  pool_allocator<double> b;
  cr_assert(a == b);
  static_assert(std::allocator_traits<pool_allocator<int>>::is_always_equal::value);
  static_assert(
      std::allocator_traits<pool_allocator<int>>::propagate_on_container_move_assignment::value);
  static_assert(std::is_same_v<std::allocator_traits<pool_allocator<int>>::rebind_alloc<long>,
                               pool_allocator<long>>);
  pmap<int, int> x, y;
  for (int i = 0; i < 100; i++) x[i] = i;
  const auto *first = &*x.begin();
  y = std::move(x); /* equal allocators: the nodes move, nothing is copied */
  cr_assert_eq(&*y.begin(), first);
  pmap<int, int> z(y); /* copy: new nodes from the same pool */
  cr_assert_neq(&*z.begin(), first);
  x.swap(z);
  cr_assert_eq(x.size(), 100u);
  /* Arrays take the heap; single objects the pool. */
  std::vector<int, pool_allocator<int>> v(1000, 7);
  cr_assert_eq(v[999], 7);
  bool threw = false;
  try {
    pool_allocator<std::uint64_t>().allocate(SIZE_MAX / 4);
  } catch (const std::bad_array_new_length &) {
    threw = true;
  } catch (const std::bad_alloc &) {
    threw = true;
  }
  cr_assert(threw);
}

Test(pool_allocator, over_aligned_nodes) {
  struct alignas(64) Line {
    char b[64];
  };
  plist<Line> l;
  for (int i = 0; i < 1000; i++) l.emplace_back();
  for (auto &x : l) cr_assert_eq(reinterpret_cast<std::uintptr_t>(&x) % 64, 0u);
}
