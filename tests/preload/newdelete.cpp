// A C++ program using new/delete and the standard containers. With MAPALLOC_EXPECT=1 it
// also checks that operator new and delete go through mapalloc (libstdc++ implements them
// with malloc/free, so the preload library needs no C++ symbols).
#include <dlfcn.h>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <string>
#include <vector>

struct Stats { size_t allocated, active, committed, reserved, mapped_large, allocs, frees, purges; };

struct Node {
  std::string name;
  std::vector<int> v;
  Node *next;
};

int main() {
  using get_fn = void (*)(Stats *);
  auto get = reinterpret_cast<get_fn>(dlsym(RTLD_DEFAULT, "ma_heap_stats_get"));
  Stats before{}, after{};
  if (get) get(&before);
  Node *head = nullptr;
  for (int i = 0; i < 10000; i++) head = new Node{std::to_string(i), std::vector<int>(i % 50, i), head};
  std::map<std::string, std::unique_ptr<int[]>> m;
  for (int i = 0; i < 5000; i++) m[std::to_string(i * 7)] = std::make_unique<int[]>(i % 100 + 1);
  long sum = 0;
  for (Node *n = head; n; n = n->next) sum += (long)n->v.size() + (long)n->name.size();
  int *arr = new int[1 << 20];
  arr[12345] = 7;
  sum += arr[12345];
  delete[] arr;
  if (get) get(&after);
  while (head) { Node *n = head->next; delete head; head = n; }
  std::printf("%ld %zu\n", sum, m.size());
  if (std::getenv("MAPALLOC_EXPECT")) {
    if (!get) { std::fprintf(stderr, "mapalloc not loaded\n"); return 1; }
    if (after.allocs - before.allocs < 20000) {
      std::fprintf(stderr, "new did not reach mapalloc (%zu allocs)\n", after.allocs - before.allocs);
      return 1;
    }
  }
  return 0;
}
