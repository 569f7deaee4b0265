#!/usr/bin/env bash
# CI smoke test of the benchmark suite: every workload under every allocator once, at the
# --quick size. It checks that the runner and each workload work; it asserts no timing.
# Exits non-zero if the build, the runner or any run fails. Takes about 2 minutes on 2 cores
# (38 workloads x 5 allocators). The results go to bench/results/*-quick.* (not meant to be
# committed).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
start=$(date +%s)
"$top/tools/bench.sh" --quick --runs 1 "$@"
echo "bench-smoke.sh: passed in $(($(date +%s) - start)) s"
