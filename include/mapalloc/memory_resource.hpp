/* mapalloc std::pmr memory resources (header-only; link libmapalloc). C++17.
 *
 * - mapalloc::heap_resource: std::pmr::memory_resource over mapalloc's heap (ma_malloc,
 *   ma_aligned_alloc, ma_free_sized); heap_memory_resource() returns a process-wide one, as
 *   std::pmr::new_delete_resource() does for operator new.
 * - mapalloc::pool_resource: std::pmr::memory_resource over mapalloc pools: one ma_pool per
 *   size class up to max_pooled bytes (64 KiB by default, at most 1 MiB), larger or
 *   over-aligned blocks from an upstream resource. Thread-safe, unlike
 *   std::pmr::unsynchronized_pool_resource, and without the lock of
 *   std::pmr::synchronized_pool_resource: each thread allocates from its own pool caches.
 *
 * Errors: allocation failure throws std::bad_alloc. Thread-safety: both resources may be
 * used from any thread at once; memory may be freed by any thread. pool_resource::release()
 * and its destructor free everything at once and need no concurrent user.
 */
#ifndef MAPALLOC_MEMORY_RESOURCE_HPP
#define MAPALLOC_MEMORY_RESOURCE_HPP

#include <atomic>
#include <cstddef>
#include <memory_resource>
#include <new>

#include "mapalloc/pool.hpp"

namespace mapalloc {

/* std::pmr::memory_resource over mapalloc's heap. All instances are equal: memory from one
 * may be freed through another. */
class heap_resource final : public std::pmr::memory_resource {
private:
  void *do_allocate(std::size_t bytes, std::size_t align) override {
    return detail::heap_allocate(bytes, align);
  }
  void do_deallocate(void *p, std::size_t bytes, std::size_t align) override {
    detail::heap_deallocate(p, bytes, align);
  }
  bool do_is_equal(const std::pmr::memory_resource &other) const noexcept override {
    return dynamic_cast<const heap_resource *>(&other) != nullptr;
  }
};

/* The process-wide heap_resource (never destroyed, so usable during exit). */
inline heap_resource *heap_memory_resource() noexcept {
  alignas(heap_resource) static unsigned char storage[sizeof(heap_resource)];
  static heap_resource *const r = ::new (storage) heap_resource();
  return r;
}

/* std::pmr::memory_resource over mapalloc pools, one per size class: 16-byte steps up to
 * 256 bytes, then four classes per power of two (at most 25% internal waste), up to
 * max_pooled. Pools are created on first use. Blocks above max_pooled, or aligned above
 * 16 bytes, come from `upstream`. Equal only to itself. Destroying the resource (or
 * release()) frees every pooled block at once, as std::pmr pool resources do. */
class pool_resource final : public std::pmr::memory_resource {
public:
  static constexpr std::size_t max_pooled_limit = std::size_t(1) << 20;

  explicit pool_resource(std::size_t max_pooled = 64 * 1024,
                         std::pmr::memory_resource *upstream = heap_memory_resource()) noexcept
      : max_pooled_(max_pooled < max_pooled_limit ? max_pooled : max_pooled_limit),
        upstream_(upstream) {
    for (auto &p : pools_) p.store(nullptr, std::memory_order_relaxed);
  }
  pool_resource(const pool_resource &) = delete;
  pool_resource &operator=(const pool_resource &) = delete;
  ~pool_resource() override { release(); }

  /* Frees every pooled block (destroys the pools); blocks from upstream are not tracked and
   * stay allocated. No other thread may use the resource meanwhile. */
  void release() noexcept {
    for (auto &p : pools_) ma_pool_destroy(p.exchange(nullptr, std::memory_order_acq_rel));
  }

  std::pmr::memory_resource *upstream_resource() const noexcept { return upstream_; }
  std::size_t max_pooled() const noexcept { return max_pooled_; }

  /* The size class a request of `bytes` is served from (0 above max_pooled). */
  std::size_t class_size(std::size_t bytes) const noexcept {
    return bytes > max_pooled_ ? 0 : size_of_class(class_of(bytes));
  }

  /* Sums the counters of the pools created so far. */
  ma_pool_stats stats() const noexcept {
    ma_pool_stats sum{};
    for (const auto &p : pools_) {
      ma_pool *q = p.load(std::memory_order_acquire);
      if (q == nullptr) continue;
      ma_pool_stats s{};
      ma_pool_stats_get(q, &s);
      sum.live += s.live;
      sum.capacity += s.capacity;
      sum.committed_bytes += s.committed_bytes;
      sum.reserved_bytes += s.reserved_bytes;
      sum.allocs += s.allocs;
      sum.frees += s.frees;
    }
    return sum;
  }

private:
  static constexpr std::size_t nclasses = 16 + 4 * 12; /* up to 256 B, then 2^8 .. 2^20 */

  /* 1..256: 16-byte steps (classes 0..15); (2^k, 2^(k+1)]: four steps of 2^(k-2). */
  static std::size_t class_of(std::size_t bytes) noexcept {
    if (bytes <= 256) return bytes == 0 ? 0 : (bytes - 1) / 16;
    const unsigned k = 63u - static_cast<unsigned>(__builtin_clzll(bytes - 1));
    const std::size_t step = std::size_t(1) << (k - 2);
    const std::size_t q = (bytes - (std::size_t(1) << k) + step - 1) / step; /* 1..4 */
    return 16 + (k - 8) * 4 + (q - 1);
  }
  static std::size_t size_of_class(std::size_t c) noexcept {
    if (c < 16) return (c + 1) * 16;
    const std::size_t k = 8 + (c - 16) / 4, q = (c - 16) % 4 + 1;
    return (std::size_t(1) << k) + q * (std::size_t(1) << (k - 2));
  }

  ma_pool *pool_for(std::size_t c) {
    ma_pool *p = pools_[c].load(std::memory_order_acquire);
    if (p != nullptr) return p;
    ma_pool_opts o{};
    o.obj_size = size_of_class(c);
    ma_pool *fresh = nullptr;
    if (ma_pool_create(&o, &fresh) != 0) throw std::bad_alloc();
    if (pools_[c].compare_exchange_strong(p, fresh, std::memory_order_acq_rel)) return fresh;
    ma_pool_destroy(fresh); /* another thread created it first: p holds its pool */
    return p;
  }

  void *do_allocate(std::size_t bytes, std::size_t align) override {
    if (bytes > max_pooled_ || align > detail::heap_min_align)
      return upstream_->allocate(bytes, align);
    void *p = ma_pool_alloc(pool_for(class_of(bytes)));
    if (p == nullptr) throw std::bad_alloc();
    return p;
  }
  void do_deallocate(void *p, std::size_t bytes, std::size_t align) override {
    if (bytes > max_pooled_ || align > detail::heap_min_align)
      return upstream_->deallocate(p, bytes, align);
    ma_pool_free(pools_[class_of(bytes)].load(std::memory_order_acquire), p);
  }
  bool do_is_equal(const std::pmr::memory_resource &other) const noexcept override {
    return this == &other;
  }

  std::size_t max_pooled_;
  std::pmr::memory_resource *upstream_;
  std::atomic<ma_pool *> pools_[nclasses];
};

} // namespace mapalloc

#endif /* MAPALLOC_MEMORY_RESOURCE_HPP */
