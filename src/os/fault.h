/* Test-only fault injection for the page layer: make the Nth next system call of src/os/
 * fail with a chosen errno (see sys_linux.h, where every wrapper asks sys_inject()).
 *
 * Compiled in only with the CMake option MAPALLOC_FAULT_INJECTION=ON (MA_FAULT_INJECTION);
 * otherwise this header declares nothing and sys_inject() is the constant 0, so a release
 * build carries no trace of the hook. Internal: tests include it through src/.
 *
 * Counting is process-wide (any thread's calls count) with atomics, so arming from one
 * thread while others make system calls is safe but makes N depend on their timing; the
 * sweeps in tests/test_fault.c run single-threaded.
 */
#ifndef MAPALLOC_FAULT_H
#define MAPALLOC_FAULT_H

#ifdef MA_FAULT_INJECTION

#include <stdbool.h>

/* Arms the hook: system calls are counted from now on, and calls n .. n+count-1 fail with
 * errno `err` (without reaching the kernel); count OS_FAULT_ALL fails every call from n on
 * (memory that has run out for good). n = 0 only counts (nothing fails). Re-arming resets
 * the count. Thread-safe. */
#define OS_FAULT_ALL (~0ul)
void os_fault_arm_run(unsigned long n, unsigned long count, int err);

/* os_fault_arm_run(n, 1, err): the Nth next system call fails with `err`. */
void os_fault_arm(unsigned long n, int err);

/* Stops counting and failing. Thread-safe. */
void os_fault_disarm(void);

/* System calls made (failed ones included) since the last arming. */
unsigned long os_fault_calls(void);

/* How many calls the hook failed since the last arming. */
unsigned long os_fault_fired(void);

/* Called by sys_inject(): 0 to let the call through, else the errno to fail it with. */
int os_fault_hit(void);

/* A second, independent hook for munmap alone (a process at vm.max_map_count refuses
 * unmaps that split a VMA while everything else works): the next `count` munmap calls
 * fail with `err` (OS_FAULT_ALL: every one until disarmed); count 0 disarms. These calls
 * are not counted by os_fault_calls. Thread-safe. */
void os_fault_arm_munmap(unsigned long count, int err);

/* munmap calls failed by os_fault_arm_munmap since it was armed. */
unsigned long os_fault_munmap_fired(void);

int os_fault_munmap_hit(void);
extern int os_fault_munmap_armed;

static inline int os_fault_check_munmap(void) {
  if (__builtin_expect(__atomic_load_n(&os_fault_munmap_armed, __ATOMIC_RELAXED) == 0, 1)) return 0;
  return os_fault_munmap_hit();
}

extern int os_fault_armed; /* non-zero while armed: sys_inject's one-load fast check */

static inline int os_fault_check(void) {
  if (__builtin_expect(__atomic_load_n(&os_fault_armed, __ATOMIC_RELAXED) == 0, 1)) return 0;
  return os_fault_hit();
}

#endif /* MA_FAULT_INJECTION */
#endif /* MAPALLOC_FAULT_H */
