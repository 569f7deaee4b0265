#!/usr/bin/env bash
# Accuracy of mapalloc's heap profiles: runs bench/prof/prof_accuracy.c RUNS times (default
# 20) under libmapalloc-preload.so with MAPALLOC_PROF=1 at the default rate (524288, or
# MAPALLOC_PROF_SAMPLE), reads each exit profile with google-pprof --text, and prints per
# call site the true live MiB, the median estimate, and the median and largest relative
# error over the runs. Builds build/release if needed; installs google-perftools if missing.
#
#   bench/prof/accuracy.sh [RUNS]
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
runs=${1:-20}
. "$top/tools/lib/packages.sh"
ensure_packages accuracy.sh google-perftools gcc cmake
lib=$top/build/release/libmapalloc-preload.so
if [ ! -f "$lib" ]; then
  cmake -S "$top" -B "$top/build/release" -DCMAKE_BUILD_TYPE=Release -DMAPALLOC_BUILD_TESTS=OFF >/dev/null
  cmake --build "$top/build/release" --target mapalloc_preload -j "$(nproc)" >/dev/null
fi
work=$(mktemp -d /tmp/mapalloc-prof-accuracy.XXXXXX)
trap 'rm -rf "$work"' EXIT
prog=$work/prof_accuracy
gcc -O2 -g -o "$prog" "$top/bench/prof/prof_accuracy.c"
rate=${MAPALLOC_PROF_SAMPLE:-524288}
for ((r = 1; r <= runs; r++)); do
  MAPALLOC_PROF=1 MAPALLOC_PROF_SAMPLE=$rate MAPALLOC_PROF_PREFIX="$work/run$r" LD_PRELOAD="$lib" \
    "$prog" >"$work/truth.txt"
  google-pprof --text "$prog" "$work/run$r".*.heap 2>/dev/null |
    awk -v r="$r" '$6 ~ /^(site_|churn_site)/ { print r, $6, $1 }' >>"$work/est.txt"
done
python3 - "$work/truth.txt" "$work/est.txt" "$runs" "$rate" <<'PY'
import statistics, sys
truth = [l.split() for l in open(sys.argv[1]) if l.startswith("truth")]
est = [l.split() for l in open(sys.argv[2])]
runs, rate = int(sys.argv[3]), int(sys.argv[4])
print(f"Heap-profile accuracy: {runs} runs, 1 sample per {rate} bytes on average "
      "(google-pprof --text; MB there = MiB)\n")
print("| call site | block | true MiB | median estimate | median error | largest error |")
print("|---|---|---|---|---|---|")
for _, name, block, nbytes in truth:
    t = int(nbytes) / 1048576
    by_run = {int(r): float(v) for r, n, v in est if n == name}
    vals = [by_run.get(r, 0.0) for r in range(1, runs + 1)]  # absent from a profile: 0
    errs = [abs(v - t) / t for v in vals]
    print(f"| {name} | {block} B | {t:.1f} | {statistics.median(vals):.1f} | "
          f"{100 * statistics.median(errs):.1f}% | {100 * max(errs):.1f}% |")
churn = [float(v) for r, n, v in est if n == "churn_site"]
print(f"| churn_site (all freed) | 16-616 B | 0.0 | "
      f"{statistics.mean(churn) if churn else 0:.2f} (mean) | | |")
PY
