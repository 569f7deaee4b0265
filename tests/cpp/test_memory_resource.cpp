/* std::pmr resources of include/mapalloc/memory_resource.hpp: heap_resource and
 * pool_resource with pmr containers, threads and the pmr propagation rules. */
#include <criterion/criterion.h>

#include <cstdint>
#include <cstring>
#include <list>
#include <map>
#include <memory_resource>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "mapalloc/memory_resource.hpp"

using mapalloc::heap_memory_resource;
using mapalloc::pool_resource;

Test(memory_resource, heap_resource_alignments_and_equality) {
  std::pmr::memory_resource *r = heap_memory_resource();
  mapalloc::heap_resource other;
  cr_assert(r->is_equal(other), "every heap_resource is the same heap");
  cr_assert(!r->is_equal(*std::pmr::new_delete_resource()));
  ma_heap_stats before{}, after{};
  ma_heap_stats_get(&before);
  for (std::size_t align = 1; align <= 8192; align *= 2)
    for (std::size_t size : {1ul, 17ul, 256ul, 5000ul, 300000ul}) {
      void *p = r->allocate(size, align);
      cr_assert_eq(reinterpret_cast<std::uintptr_t>(p) % align, 0u);
      std::memset(p, 0x5a, size);
      other.deallocate(p, size, align); /* freed through an equal resource */
    }
  ma_heap_stats_get(&after);
  cr_assert_geq(after.allocs - before.allocs, 70u, "the blocks came from mapalloc's heap");
  bool threw = false;
  try {
    void *p = r->allocate(SIZE_MAX / 2, 16);
    r->deallocate(p, SIZE_MAX / 2, 16); /* not reached */
  } catch (const std::bad_alloc &) {
    threw = true;
  }
  cr_assert(threw);
}

Test(memory_resource, pool_resource_classes) {
  pool_resource res(4096);
  cr_assert_eq(res.class_size(1), 16u);
  cr_assert_eq(res.class_size(256), 256u);
  cr_assert_eq(res.class_size(257), 320u);
  cr_assert_eq(res.class_size(512), 512u);
  cr_assert_eq(res.class_size(513), 640u);
  cr_assert_eq(res.class_size(4096), 4096u);
  cr_assert_eq(res.class_size(4097), 0u, "above max_pooled: upstream");
  for (std::size_t n = 1; n <= 4096; n++) {
    const std::size_t c = res.class_size(n);
    cr_assert(c >= n && c <= n + n / 4 + 16, "class %zu for %zu bytes", c, n);
  }
  std::vector<std::pair<void *, std::size_t>> blocks;
  for (std::size_t n = 1; n <= 9000; n += 37) {
    void *p = res.allocate(n, n % 3 == 0 ? 8 : 16);
    cr_assert_eq(reinterpret_cast<std::uintptr_t>(p) % 16, 0u);
    std::memset(p, static_cast<int>(n), n);
    blocks.emplace_back(p, n);
  }
  void *big = res.allocate(100, 256); /* over-aligned: upstream */
  cr_assert_eq(reinterpret_cast<std::uintptr_t>(big) % 256, 0u);
  cr_assert_eq(res.stats().live, 111u, "pooled blocks: those up to 4096 bytes");
  for (auto &b : blocks) {
    cr_assert_eq(static_cast<unsigned char *>(b.first)[b.second - 1],
                 static_cast<unsigned char>(b.second));
    res.deallocate(b.first, b.second, b.second % 3 == 0 ? 8 : 16);
  }
  res.deallocate(big, 100, 256);
  cr_assert_eq(res.stats().live, 0u);
  pool_resource other;
  cr_assert(!res.is_equal(other), "a pool_resource is equal only to itself");
  cr_assert(res.is_equal(res));
}

Test(memory_resource, pmr_containers_and_uses_allocator) {
  pool_resource res;
  {
    std::pmr::map<int, std::pmr::string> m(&res);
    std::pmr::list<std::pmr::vector<int>> l(&res);
    std::pmr::unordered_map<std::pmr::string, int> h(&res);
    for (int i = 0; i < 5000; i++) {
      m.emplace(i, std::string(40, static_cast<char>('a' + i % 26)));
      l.emplace_back(static_cast<std::size_t>(i % 50), i);
      h[std::pmr::string(("key-" + std::to_string(i)).c_str())] = i;
    }
    /* Uses-allocator construction: the inner strings and vectors use the same resource. */
    cr_assert(m.at(7).get_allocator().resource() == &res);
    cr_assert(l.back().get_allocator().resource() == &res);
    cr_assert_eq(m.at(27)[39], 'b');
    cr_assert_eq(h.at("key-4999"), 4999);
    cr_assert_gt(res.stats().live, 15000u);
  }
  cr_assert_eq(res.stats().live, 0u, "every block came back");
}

Test(memory_resource, pmr_propagation_rules) {
  pool_resource r1, r2;
  std::pmr::vector<int> a({1, 2, 3}, &r1);
  /* Copy construction does not propagate a polymorphic_allocator: the default resource. */
  std::pmr::vector<int> copy(a);
  cr_assert(copy.get_allocator().resource() == std::pmr::get_default_resource());
  /* Move construction keeps the resource and the storage. */
  const int *data = a.data();
  std::pmr::vector<int> moved(std::move(a));
  cr_assert(moved.get_allocator().resource() == &r1);
  cr_assert_eq(moved.data(), data);
  /* Move assignment between unequal resources copies into the target's resource. */
  std::pmr::vector<int> target(&r2);
  target = std::move(moved);
  cr_assert(target.get_allocator().resource() == &r2);
  cr_assert_neq(target.data(), data);
  cr_assert_eq(target[2], 3);
  /* The same resource: the storage moves. */
  std::pmr::vector<int> same(&r2);
  const int *tdata = target.data();
  same = std::move(target);
  cr_assert_eq(same.data(), tdata);
  /* As the default resource. */
  std::pmr::memory_resource *old = std::pmr::set_default_resource(&r1);
  std::pmr::string s(100, 'x');
  cr_assert(s.get_allocator().resource() == &r1);
  std::pmr::set_default_resource(old);
}

Test(memory_resource, pool_resource_threads) {
  pool_resource res;
  std::pmr::synchronized_pool_resource unused; /* same interface, for comparison only */
  (void)unused;
  std::vector<std::pmr::list<std::pmr::string>> lists;
  for (int t = 0; t < 4; t++) lists.emplace_back(&res);
  std::vector<std::thread> ts;
  for (int t = 0; t < 4; t++)
    ts.emplace_back([&, t] {
      std::pmr::map<int, std::pmr::string> local(&res);
      for (int i = 0; i < 20000; i++) {
        lists[t].emplace_back(std::to_string(i) + std::string(30, 'z'));
        local[i % 500] = std::to_string(i);
        if (i % 2) local.erase((i * 7) % 500);
      }
    });
  for (auto &t : ts) t.join();
  ts.clear();
  for (int t = 0; t < 4; t++) /* free another thread's blocks */
    ts.emplace_back([&, t] {
      auto &l = lists[(t + 1) % 4];
      cr_assert_eq(l.size(), 20000u);
      l.clear();
    });
  for (auto &t : ts) t.join();
  cr_assert_eq(res.stats().live, 0u);
  res.release();
  cr_assert_eq(res.stats().live, 0u);
  void *p = res.allocate(64); /* usable again after release */
  res.deallocate(p, 64);
}
