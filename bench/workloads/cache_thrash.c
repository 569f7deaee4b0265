/* cache-thrash: active false sharing. Every thread allocates its own small objects, writes
 * each one many times and frees it. If the allocator hands out neighbouring bytes of one cache
 * line to different threads (a shared free list, no per-thread segregation), the threads'
 * writes bounce the line between cores. */
#include "false_sharing.h"

int main(int argc, char **argv) {
  return fs_main("cache-thrash", 0, argc, argv);
}
