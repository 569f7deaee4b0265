/* cache-scratch: passive false sharing. The main thread allocates one small object per
 * thread back to back (so they likely share a cache line) and hands one to each thread. Each
 * thread frees the object it was given, then repeatedly allocates a small object, writes it
 * many times and frees it. An allocator that gives a thread back the block it just freed - a
 * block on a line shared with other threads' blocks - makes the threads fight over that line. */
#include "false_sharing.h"

int main(int argc, char **argv) {
  return fs_main("cache-scratch", 1, argc, argv);
}
