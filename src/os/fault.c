/* Test-only fault injection (fault.h): the counter behind sys_inject(). Empty unless the
 * build defines MA_FAULT_INJECTION (CMake option MAPALLOC_FAULT_INJECTION). */
#include "os/fault.h"

#ifdef MA_FAULT_INJECTION

int os_fault_armed;
static unsigned long fault_calls, fault_first, fault_last, fault_fired;
static int fault_err;

void os_fault_arm_run(unsigned long n, unsigned long count, int err) {
  __atomic_store_n(&os_fault_armed, 0, __ATOMIC_SEQ_CST);
  __atomic_store_n(&fault_calls, 0, __ATOMIC_SEQ_CST);
  __atomic_store_n(&fault_fired, 0, __ATOMIC_SEQ_CST);
  fault_first = n;
  if (n == 0 || count == 0)
    fault_last = 0;
  else
    fault_last = count - 1 > ~0ul - n ? ~0ul : n + (count - 1);
  fault_err = err;
  __atomic_store_n(&os_fault_armed, 1, __ATOMIC_SEQ_CST);
}

void os_fault_arm(unsigned long n, int err) {
  os_fault_arm_run(n, 1, err);
}

void os_fault_disarm(void) {
  __atomic_store_n(&os_fault_armed, 0, __ATOMIC_SEQ_CST);
}

unsigned long os_fault_calls(void) {
  return __atomic_load_n(&fault_calls, __ATOMIC_SEQ_CST);
}

unsigned long os_fault_fired(void) {
  return __atomic_load_n(&fault_fired, __ATOMIC_SEQ_CST);
}

int os_fault_hit(void) {
  unsigned long c = __atomic_add_fetch(&fault_calls, 1, __ATOMIC_SEQ_CST);
  if (fault_first == 0 || c < fault_first || c > fault_last) return 0;
  __atomic_add_fetch(&fault_fired, 1, __ATOMIC_SEQ_CST);
  return fault_err;
}

int os_fault_munmap_armed;
static unsigned long munmap_left, munmap_fired;
static int munmap_err;

void os_fault_arm_munmap(unsigned long count, int err) {
  __atomic_store_n(&os_fault_munmap_armed, 0, __ATOMIC_SEQ_CST);
  __atomic_store_n(&munmap_fired, 0, __ATOMIC_SEQ_CST);
  __atomic_store_n(&munmap_left, count, __ATOMIC_SEQ_CST);
  munmap_err = err;
  __atomic_store_n(&os_fault_munmap_armed, count != 0, __ATOMIC_SEQ_CST);
}

unsigned long os_fault_munmap_fired(void) {
  return __atomic_load_n(&munmap_fired, __ATOMIC_SEQ_CST);
}

int os_fault_munmap_hit(void) {
  unsigned long left = __atomic_load_n(&munmap_left, __ATOMIC_SEQ_CST);
  do {
    if (left == 0) return 0;
  } while (left != OS_FAULT_ALL &&
           !__atomic_compare_exchange_n(&munmap_left, &left, left - 1, false, __ATOMIC_SEQ_CST,
                                        __ATOMIC_SEQ_CST));
  __atomic_add_fetch(&munmap_fired, 1, __ATOMIC_SEQ_CST);
  return munmap_err;
}

#else
typedef int os_fault_disabled; /* ISO C wants a translation unit to declare something */
#endif
