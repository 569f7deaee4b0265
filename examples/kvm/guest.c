/* The guest of examples/kvm_vmm.c: 64-bit code that runs at CODE_GPA in long mode, with
 * the page tables, GDT and stack the monitor set up (see protocol.h for the layout and the
 * steps). Built freestanding as a flat binary (guest.ld, tests/kvm.cmake); it uses general
 * registers only, no libc, no interrupts, and no static data (a flat binary has no .bss).
 */
#include "protocol.h"

static inline void outl(uint16_t port, uint32_t v) {
  __asm__ volatile("outl %0, %1" : : "a"(v), "Nd"(port) : "memory");
}

static inline void cpu_relax(void) {
  __asm__ volatile("pause" : : : "memory");
}

static volatile struct mbox *const mb = (volatile struct mbox *)MBOX_GPA;

static void report(uint32_t step, uint64_t a, uint64_t b) {
  mb->a = a;
  mb->b = b;
  outl(PORT_REPORT, step);
}

static void fill(uint64_t start, uint64_t end, uint64_t seed) {
  for (uint64_t gpa = start; gpa < end; gpa += 8) *(uint64_t *)gpa = pattern(gpa, seed);
}

static uint64_t checksum(uint64_t start, uint64_t end) {
  uint64_t cs = CSUM_INIT;
  for (uint64_t gpa = start; gpa < end; gpa += 8) cs = csum_word(cs, *(volatile uint64_t *)gpa);
  return cs;
}

void guest_main(void);

void guest_main(void) {
  report(STEP_HELLO, GUEST_MAGIC, 0);
  uint64_t lo_s = mb->lo_start, lo_e = mb->lo_end, hi_s = mb->hi_start, hi_e = mb->hi_end;
  uint64_t seed = mb->seed;

  /* Every word of both work regions, then their checksums. */
  fill(lo_s, lo_e, seed);
  fill(hi_s, hi_e, seed);
  report(STEP_FILLED, checksum(lo_s, lo_e), checksum(hi_s, hi_e));
  if (mb->bench) {
    for (;;) { /* the monitor times each round between two reports */
      fill(lo_s, lo_e, seed);
      fill(hi_s, hi_e, seed);
      report(STEP_BENCH, 0, 0);
      report(STEP_BENCH, checksum(lo_s, lo_e), checksum(hi_s, hi_e));
    }
  }

  /* The device window, before and after the monitor swaps its file. */
  uint64_t win = mb->window_gpa, win_e = win + mb->window_len;
  report(STEP_WINDOW_A, checksum(win, win_e), 0);
  report(STEP_WINDOW_B, checksum(win, win_e), 0);
  /* Now removed: this read becomes an MMIO exit, answered as an absent device. */
  report(STEP_WINDOW_GONE, *(volatile uint32_t *)win, 0);

  /* Balloon: hand a range back, then read it. */
  uint64_t bal = mb->balloon_gpa, bal_e = bal + mb->balloon_len, nonzero = 0, words = 0;
  report(STEP_BALLOON, 0, 0);
  for (uint64_t gpa = bal; gpa < bal_e; gpa += 8, words++)
    nonzero += *(volatile uint64_t *)gpa != 0;
  report(STEP_BALLOON_READ, nonzero, words);

  /* The device backend writes the data, then the ready word, while we poll. */
  volatile uint64_t *ready = (volatile uint64_t *)mb->dev_gpa;
  *ready = 0;
  report(STEP_DEVICE_KICK, 0, 0);
  uint64_t polls = 0, limit = mb->poll_limit;
  while (*ready != DEVICE_READY && polls < limit) {
    cpu_relax();
    polls++;
  }
  if (*ready != DEVICE_READY) outl(PORT_PANIC, 1);
  report(STEP_DEVICE_DONE, checksum(mb->dev_gpa + 8, mb->dev_gpa + mb->dev_len), polls);

  /* Dirty a known set of pages for the incremental snapshot. */
  for (uint64_t gpa = hi_s; gpa < hi_e; gpa += mb->dirty_stride * 4096)
    fill(gpa, gpa + 4096, seed ^ 0xd1d1);
  report(STEP_DIRTY, 0, 0);
  report(STEP_RESUMED, 0, 0);
  report(STEP_FINAL, checksum(lo_s, lo_e), checksum(hi_s, hi_e));
}

/* The entry point: the monitor sets RIP here and RSP to STACK_TOP. */
__asm__(".section .text.start, \"ax\"\n"
        ".global _start\n"
        "_start:\n"
        "  call guest_main\n"
        "1: hlt\n"
        "  jmp 1b\n"
        ".previous\n");
