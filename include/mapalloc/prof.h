/* mapalloc heap profiling: sampled allocation profiles in the heap-profile format of
 * gperftools (read by `google-pprof`, Debian package google-perftools) and a leak report.
 *
 * Off by default; turned on for the whole process by the environment, read once at start:
 *   MAPALLOC_PROF=1              sample allocations and track the sampled blocks until freed
 *   MAPALLOC_PROF_SAMPLE=BYTES   mean bytes between samples (default 524288); the intervals
 *                                are exponentially distributed, so a block of S bytes is
 *                                sampled with probability 1 - exp(-S/BYTES) and estimates
 *                                scaled by the inverse are unbiased
 *   MAPALLOC_PROF_PREFIX=PATH    profile files are PATH.PID.SEQ.heap (default "mapalloc")
 *   MAPALLOC_PROF_SIGNAL=NAME    a profile is written when the process gets this signal
 *                                (USR1, USR2, HUP, ... or a number), by a helper thread,
 *                                never inside the handler (implies sampling)
 *   MAPALLOC_LEAKS=1             at exit, print to stderr the call sites holding the most
 *                                live sampled bytes (implies MAPALLOC_PROF=1)
 * With MAPALLOC_PROF=1 a profile is also written at exit (exit() or return from main; not
 * _exit). A fork child writes its own files under its own pid.
 *
 * Read a profile with:  google-pprof --text PROGRAM mapalloc.PID.0.heap
 *                       google-pprof --svg  PROGRAM mapalloc.PID.0.heap > graph.svg
 * or run `tools/mapalloc-run --profile CMD ...`, which does both.
 */
#ifndef MAPALLOC_PROF_H
#define MAPALLOC_PROF_H

#include "mapalloc/pages.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Writes the current heap profile (the live sampled blocks and every sample taken so far,
 * per call stack) to the file `path`, created or truncated with mode 0644; with path NULL
 * to the next PREFIX.PID.SEQ.heap. The format is gperftools' heap profile ("heap_v2" with
 * the sampling rate in the header, then MAPPED_LIBRARIES: with /proc/self/maps).
 * Errors: -ENOTSUP when profiling is off (MAPALLOC_PROF unset); -ENAMETOOLONG when the
 * generated name does not fit PATH_MAX; the negative errno of open(2) or write(2) (a file
 * that could not be written completely is removed). Does not allocate. Thread-safe: other
 * threads may allocate and free meanwhile (their samples wait for the table lock). */
MA_API int ma_prof_dump(const char *path);

/* Writes the leak report to fd: the call sites with the most live sampled bytes, with the
 * estimated live bytes and blocks (scaled by the sampling rate), symbolised with dladdr
 * (exported symbols; link programs with -rdynamic for their own functions). `max_sites`
 * bounds the number of sites (0: 10). Errors: -ENOTSUP when profiling is off; -EBADF or the
 * errno of write(2). Does not allocate. Thread-safe. */
MA_API int ma_prof_leaks_print(int fd, unsigned max_sites);

#ifdef __cplusplus
}
#endif

#endif /* MAPALLOC_PROF_H */
