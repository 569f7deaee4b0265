#!/usr/bin/env bash
# The long stress test: builds ma_stress (tests/stress/stress.c) in a release build with
# asserts on (-O2 -g, no NDEBUG) in a build directory of its own, and runs it.
#
#   tools/stress.sh [SECONDS] [ma_stress options]   # default 30 s, e.g. --seed N, --no-fork
#   MAPALLOC_STRESS_SANITIZE=address,undefined tools/stress.sh 120   # in build/stress-<san>
#
# Exits with ma_stress's status: 0 only if every pattern check and every fork child passed.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
seconds=${1:-30}
shift || true

san=${MAPALLOC_STRESS_SANITIZE:-}
build="$top/build/stress${san:+-${san//,/-}}"
cmake -S "$top" -B "$build" -DCMAKE_BUILD_TYPE=Release -DCMAKE_C_FLAGS_RELEASE="-O2 -g" \
  -DMAPALLOC_BUILD_TESTS=ON -DMAPALLOC_SANITIZE="$san" >/dev/null
cmake --build "$build" -j 2 --target ma_stress -- --no-print-directory >/dev/null
echo "stress.sh: $build/tests/ma_stress $seconds $*"
exec "$build/tests/ma_stress" "$seconds" "$@"
