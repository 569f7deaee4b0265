#!/usr/bin/env bash
# The one test command: install what is missing (Debian, as root), configure a fresh
# build directory, build, run every test. Idempotent; exits non-zero on any failure.
#
#   tools/test.sh            # default build + ctest
#   MAPALLOC_TEST_JOBS=N     # parallel ctest jobs (default: nproc)
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"

# Debian packages the build and the tests need. Later layers add theirs here.
packages=(
  cmake make gcc g++ pkg-config libcriterion-dev   # build + unit tests
  valgrind                                         # memcheck client request headers
  util-linux                                       # fallocate etc. for page-layer tests
  python3 perl git sqlite3                         # heap: real programs run preloaded
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "test.sh: installing ${missing[*]}"
  if [ "$(id -u)" != 0 ]; then sudo=sudo; else sudo=; fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get install -y -q "${missing[@]}" >/dev/null ||
    { $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q "${missing[@]}" >/dev/null; }
fi

jobs=${MAPALLOC_TEST_JOBS:-$(nproc)}
build="$top/build/test"
rm -rf "$build"
cmake -S "$top" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMAPALLOC_BUILD_TESTS=ON \
  -DMAPALLOC_BUILD_BENCH=ON >/dev/null
cmake --build "$build" -j "$jobs" -- --no-print-directory
ctest --test-dir "$build" --output-on-failure -j "$jobs"
echo "test.sh: all tests passed"
