/* What the KVM monitor (examples/kvm_vmm.c) and its guest (examples/kvm/guest.c) share:
 * the guest-physical layout, the mailbox page through which they talk, the report ports and
 * steps, and the data pattern and checksum both compute. Freestanding: <stdint.h> only.
 *
 * The guest reports by writing the mailbox's result words and then the step number to
 * PORT_REPORT with `outl` (a KVM_EXIT_IO the monitor answers by checking the values and
 * re-entering); PORT_PANIC carries a guest-detected error code.
 */
#ifndef KVM_PROTOCOL_H
#define KVM_PROTOCOL_H

#include <stdint.h>

#define GIB ((uint64_t)1 << 30)

/* Guest-physical layout. RAM below the hole starts at 0; RAM above it at 4 GiB (like the
 * PCI hole of a PC); the device window sits in the hole. The first 2 MiB of low RAM is the
 * system area (GDT, page tables, mailbox, code, stack); the guest's work covers the rest. */
#define GDT_GPA      0x1000ull
#define PML4_GPA     0x10000ull
#define PDPT_GPA     0x11000ull
#define PD_GPA       0x12000ull /* one page directory per GiB mapped, 2 MiB pages */
#define MAX_GIB      64ull      /* the page directories end below MBOX_GPA */
#define MBOX_GPA     0x80000ull
#define CODE_GPA     0x100000ull
#define CODE_MAX     0xe0000ull
#define STACK_TOP    0x200000ull
#define SYSTEM_END   0x200000ull
#define WINDOW_GPA   0xc0000000ull /* 3 GiB: inside the hole */
#define WINDOW_SIZE  0x200000ull
#define HIGH_RAM_GPA (4 * GIB)

#define PORT_REPORT 0x500
#define PORT_PANIC  0x501

/* The steps, in the order the guest reports them. */
enum {
  STEP_HELLO = 1,    /* a = GUEST_MAGIC */
  STEP_FILLED,       /* every word of both work regions written; a, b = checksums */
  STEP_WINDOW_A,     /* a = checksum of the window (file A) */
  STEP_WINDOW_B,     /* a = checksum of the window after the swap (file B) */
  STEP_WINDOW_GONE,  /* a = the 32-bit value read from the removed window */
  STEP_BALLOON,      /* the guest hands [balloon_gpa, +balloon_len) back */
  STEP_BALLOON_READ, /* a = non-zero words read in the balloon, b = words read */
  STEP_DEVICE_KICK,  /* the guest asks the device backend to fill [dev_gpa, +dev_len) */
  STEP_DEVICE_DONE,  /* a = checksum of the backend's data, b = polls before it came */
  STEP_DIRTY,        /* the guest rewrote every dirty_stride-th page of high RAM */
  STEP_RESUMED,      /* the first report after the dirty pages (a restore resumes here) */
  STEP_FINAL,        /* a, b = checksums of both work regions as they are now */
  STEP_BENCH,        /* benchmark mode: a = fill cycles, b = checksum cycles */
};

#define GUEST_MAGIC  0x6d6170616c6c6f63ull /* "mapalloc" */
#define DEVICE_READY 0x5245414459524459ull /* the backend's last store */

/* The page at MBOX_GPA. The monitor writes the configuration before the first entry; the
 * guest writes the results before each report. */
struct mbox {
  uint64_t a, b;                               /* results */
  uint64_t lo_start, lo_end, hi_start, hi_end; /* the work regions (GPAs) */
  uint64_t window_gpa, window_len;
  uint64_t balloon_gpa, balloon_len;
  uint64_t dev_gpa, dev_len; /* word 0 is the ready flag, data follows */
  uint64_t dirty_stride;     /* pages */
  uint64_t seed, dev_seed;
  uint64_t bench; /* non-zero: fill and checksum only, then report STEP_BENCH */
  uint64_t poll_limit;
};

/* The value of the 8-byte word at guest-physical address `gpa` (splitmix64). */
static inline uint64_t pattern(uint64_t gpa, uint64_t seed) {
  uint64_t z = gpa + seed * 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

#define CSUM_INIT 0xcbf29ce484222325ull

/* FNV-1a over 64-bit words: order-dependent, so a word in the wrong place changes it. */
static inline uint64_t csum_word(uint64_t cs, uint64_t v) {
  return (cs ^ v) * 0x100000001b3ull;
}

#endif /* KVM_PROTOCOL_H */
