/* mapalloc C++ adapters over object pools (header-only; link libmapalloc). C++17.
 *
 * - mapalloc::pool: RAII owner of one ma_pool (include/mapalloc/pool.h).
 * - mapalloc::object_pool<T>: a typed pool whose make() returns a std::unique_ptr that
 *   destroys the object and returns it to the pool.
 * - mapalloc::pool_allocator<T>: a stateless standard allocator for node containers
 *   (std::list, std::map, std::set, std::unordered_map, ...): every single-object allocation
 *   (a node) comes from a pool shared by all allocators of that node size and alignment;
 *   arrays (unordered_map's buckets, vector storage) come from mapalloc's heap.
 *
 * Errors: allocation failure throws std::bad_alloc (std::bad_array_new_length for an array
 * whose size overflows); a pool that cannot be created throws std::system_error carrying
 * the errno. Thread-safety: every function may be called from any thread, and an object
 * may be freed by a thread other than the one that allocated it (pools are thread-safe).
 */
#ifndef MAPALLOC_POOL_HPP
#define MAPALLOC_POOL_HPP

#include <cstddef>
#include <limits>
#include <memory>
#include <new>
#include <system_error>
#include <type_traits>
#include <utility>

#include "mapalloc/heap.h"
#include "mapalloc/pool.h"

namespace mapalloc {

/* RAII owner of an ma_pool: created in the constructor, destroyed (with every object still
 * in it) in the destructor. Move-only. */
class pool {
public:
  /* Objects of obj_size bytes aligned to align (0 = natural). Throws std::system_error
   * (EINVAL, ENOMEM) when ma_pool_create fails. */
  explicit pool(std::size_t obj_size, std::size_t align = 0) : pool(make_opts(obj_size, align)) {}

  /* A pool with every option of ma_pool_opts (commit, zero, max_bytes, map_flags...). */
  explicit pool(const ma_pool_opts &opts) {
    const int rc = ma_pool_create(&opts, &p_);
    if (rc != 0) throw std::system_error(-rc, std::generic_category(), "ma_pool_create");
  }

  pool(pool &&other) noexcept : p_(std::exchange(other.p_, nullptr)) {}
  pool &operator=(pool &&other) noexcept {
    if (this != &other) {
      ma_pool_destroy(p_);
      p_ = std::exchange(other.p_, nullptr);
    }
    return *this;
  }
  pool(const pool &) = delete;
  pool &operator=(const pool &) = delete;
  ~pool() { ma_pool_destroy(p_); }

  /* An object (uninitialised, or zeroed with opts.zero). Throws std::bad_alloc. */
  void *allocate() {
    void *p = ma_pool_alloc(p_);
    if (p == nullptr) throw std::bad_alloc();
    return p;
  }
  /* An object, or nullptr with errno = ENOMEM. */
  void *try_allocate() noexcept { return ma_pool_alloc(p_); }
  /* Returns an object of this pool (nullptr: no-op). A foreign pointer or a double free
   * aborts with a message. */
  void deallocate(void *obj) noexcept { ma_pool_free(p_, obj); }

  /* Gives empty slabs back to the OS now. */
  void trim() noexcept { (void)ma_pool_trim(p_); }
  ma_pool_stats stats() const noexcept {
    ma_pool_stats s{};
    ma_pool_stats_get(p_, &s);
    return s;
  }
  ma_pool *get() const noexcept { return p_; }

private:
  static ma_pool_opts make_opts(std::size_t obj_size, std::size_t align) noexcept {
    ma_pool_opts o{};
    o.obj_size = obj_size;
    o.align = align;
    return o;
  }
  ma_pool *p_ = nullptr;
};

/* A typed object pool: make(args...) constructs a T in the pool and returns a unique_ptr
 * whose deleter destroys it and frees it back to the pool (from any thread). The pool must
 * outlive the handles. */
template <class T> class object_pool {
public:
  struct deleter {
    ma_pool *p = nullptr;
    void operator()(T *obj) const noexcept {
      obj->~T();
      ma_pool_free(p, obj);
    }
  };
  using handle = std::unique_ptr<T, deleter>;

  object_pool() : pool_(sizeof(T), alignof(T)) {}
  explicit object_pool(ma_pool_opts opts) : pool_(with_type(opts)) {}

  /* Constructs a T from args. Throws std::bad_alloc, or what T's constructor throws (the
   * object then goes back to the pool). */
  template <class... Args> handle make(Args &&...args) {
    void *mem = pool_.allocate();
    try {
      return handle(::new (mem) T(std::forward<Args>(args)...), deleter{pool_.get()});
    } catch (...) {
      pool_.deallocate(mem);
      throw;
    }
  }

  ma_pool_stats stats() const noexcept { return pool_.stats(); }
  void trim() noexcept { pool_.trim(); }
  ma_pool *get() const noexcept { return pool_.get(); }

private:
  static ma_pool_opts with_type(ma_pool_opts o) noexcept {
    o.obj_size = sizeof(T);
    o.align = alignof(T);
    return o;
  }
  pool pool_;
};

namespace detail {

/* The pool shared by every pool_allocator whose value type has this size and alignment.
 * Created on first use (thread-safe static initialisation; a failure throws and is retried
 * at the next call) and never destroyed: containers with static storage duration may free
 * nodes during exit, after any destructor of ours would have run. */
template <std::size_t Size, std::size_t Align> ma_pool *shared_pool() {
  static ma_pool *const p = [] {
    ma_pool_opts o{};
    o.obj_size = Size;
    o.align = Align;
    ma_pool *q = nullptr;
    const int rc = ma_pool_create(&o, &q);
    if (rc != 0) throw std::system_error(-rc, std::generic_category(), "ma_pool_create");
    return q;
  }();
  return p;
}

/* Heap blocks: every ma_malloc block is 16-byte aligned. */
constexpr std::size_t heap_min_align = 16;

inline void *heap_allocate(std::size_t bytes, std::size_t align) {
  void *p = align <= heap_min_align ? ma_malloc(bytes) : ma_aligned_alloc(align, bytes);
  if (p == nullptr) throw std::bad_alloc();
  return p;
}

inline void heap_deallocate(void *p, std::size_t bytes, std::size_t align) noexcept {
  if (align <= heap_min_align)
    ma_free_sized(p, bytes); /* checked against the block in a secure build */
  else
    ma_free(p);
}

} // namespace detail

/* A standard allocator for node containers. allocate(1) takes an object from the pool
 * shared per (sizeof(T), alignof(T)): a container rebinds its allocator to its node type,
 * so std::map<K, V, Cmp, pool_allocator<std::pair<const K, V>>> draws its nodes from the
 * pool of that node size, shared with every other container of the same node size.
 * allocate(n > 1) takes a block of mapalloc's heap.
 *
 * Stateless: all instances compare equal (is_always_equal), so containers move, swap and
 * splice nodes freely, and a node may be freed by any container or thread. */
template <class T> class pool_allocator {
public:
  using value_type = T;
  using size_type = std::size_t;
  using difference_type = std::ptrdiff_t;
  using is_always_equal = std::true_type;
  using propagate_on_container_move_assignment = std::true_type;
  template <class U> struct rebind { using other = pool_allocator<U>; };

  pool_allocator() noexcept = default;
  template <class U> pool_allocator(const pool_allocator<U> &) noexcept {}

  T *allocate(std::size_t n) {
    if (n == 1) {
      void *p = ma_pool_alloc(shared_pool());
      if (p == nullptr) throw std::bad_alloc();
      return static_cast<T *>(p);
    }
    if (n > std::numeric_limits<std::size_t>::max() / sizeof(T)) throw std::bad_array_new_length();
    return static_cast<T *>(detail::heap_allocate(n * sizeof(T), alignof(T)));
  }

  void deallocate(T *p, std::size_t n) noexcept {
    if (n == 1)
      ma_pool_free(shared_pool(), p);
    else
      detail::heap_deallocate(p, n * sizeof(T), alignof(T));
  }

  /* The pool that single objects of T come from. */
  static ma_pool *shared_pool() { return detail::shared_pool<sizeof(T), alignof(T)>(); }
};

template <class T, class U>
constexpr bool operator==(const pool_allocator<T> &, const pool_allocator<U> &) noexcept {
  return true;
}
template <class T, class U>
constexpr bool operator!=(const pool_allocator<T> &, const pool_allocator<U> &) noexcept {
  return false;
}

} // namespace mapalloc

#endif /* MAPALLOC_POOL_HPP */
