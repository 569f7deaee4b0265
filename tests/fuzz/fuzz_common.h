/* Helpers shared by the libFuzzer targets: a reader that turns the input bytes into
 * operation codes and arguments (reading past the end yields zeros, so every input is a
 * valid program), and a check that names the broken expectation before aborting, so
 * libFuzzer records the input as a crash. */
#ifndef MAPALLOC_FUZZ_COMMON_H
#define MAPALLOC_FUZZ_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

typedef struct fz_in {
  const uint8_t *p;
  size_t n;
} fz_in;

static inline int fz_more(const fz_in *in) {
  return in->n > 0;
}

static inline uint8_t fz_u8(fz_in *in) {
  if (in->n == 0) return 0;
  in->n--;
  return *in->p++;
}

static inline uint16_t fz_u16(fz_in *in) {
  uint16_t lo = fz_u8(in);
  return (uint16_t)(lo | (uint16_t)fz_u8(in) << 8);
}

static inline uint32_t fz_u32(fz_in *in) {
  uint32_t lo = fz_u16(in);
  return lo | (uint32_t)fz_u16(in) << 16;
}

#define FZ_CHECK(cond, ...)                                                                        \
  do {                                                                                             \
    if (!(cond)) {                                                                                 \
      fprintf(stderr, "fuzz check failed at %s:%d: %s: ", __FILE__, __LINE__, #cond);              \
      fprintf(stderr, __VA_ARGS__);                                                                \
      fputc('\n', stderr);                                                                         \
      abort();                                                                                     \
    }                                                                                              \
  } while (0)

/* A byte of the pattern a block with `id` holds at offset j (never constant along a block,
 * different for neighbouring ids). */
static inline uint8_t fz_pattern(uint32_t id, size_t j) {
  uint64_t x = (uint64_t)id * 0x9E3779B97F4A7C15ull + (j >> 3) * 0xBF58476D1CE4E5B9ull;
  return (uint8_t)((x >> 56) ^ j ^ id);
}

#endif
