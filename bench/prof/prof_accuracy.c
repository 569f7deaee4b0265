/* Heap-profile accuracy workload (bench/prof/accuracy.sh): six call sites keep known live
 * bytes (16 to 48 MiB each, blocks from 32 B to 2 MiB) while a churn site allocates and
 * frees 10x as much; the sites interleave so that no site owns a stretch of the sampling
 * sequence. Prints the true live bytes per site; the script compares google-pprof's
 * estimates with them. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NOINLINE __attribute__((noinline))

/* malloc is called in the site's own body: an inlined helper would be the innermost frame
 * (google-pprof names the inline function, with debug information). */
#define SITE(NAME, FILL)                                                                           \
  NOINLINE void *NAME(size_t n) {                                                                  \
    void *p = malloc(n);                                                                           \
    if (!p) abort();                                                                               \
    memset(p, FILL, n);                                                                            \
    return p;                                                                                      \
  }
SITE(site_32b, 1)
SITE(site_200b, 2)
SITE(site_3000b, 3)
SITE(site_40k, 4)
SITE(site_300k, 5)
SITE(site_2m, 6)
SITE(churn_site, 7)

typedef struct site {
  const char *name;
  void *(*fn)(size_t);
  size_t block, total, done;
} site;

int main(void) {
  site sites[] = {
      {"site_32b", site_32b, 32, (size_t)16 << 20, 0},
      {"site_200b", site_200b, 208, (size_t)24 << 20, 0}, /* 208: a class size (exact bytes) */
      {"site_3000b", site_3000b, 3072, (size_t)32 << 20, 0},
      {"site_40k", site_40k, 40960, (size_t)40 << 20, 0},
      {"site_300k", site_300k, 300 << 10, (size_t)48 << 20, 0},
      {"site_2m", site_2m, 2 << 20, (size_t)32 << 20, 0},
  };
  size_t nsites = sizeof sites / sizeof sites[0], left = nsites;
  unsigned seed = 12345;
  while (left) {
    for (size_t i = 0; i < nsites; i++) {
      site *s = &sites[i];
      /* each round: about 64 KiB per site, then churn */
      for (size_t k = 0; k < 65536 && s->done < s->total; k += s->block) {
        (void)s->fn(s->block); /* kept: a deliberate leak */
        s->done += s->block;
        if (s->done >= s->total) left--;
      }
    }
    for (int k = 0; k < 3000; k++) {
      seed = seed * 1103515245 + 12345;
      size_t n = 16 + (seed >> 8) % 600;
      free(churn_site(n));
    }
  }
  for (size_t i = 0; i < nsites; i++)
    printf("truth %s %zu %zu\n", sites[i].name, sites[i].block, sites[i].done);
  return 0;
}
