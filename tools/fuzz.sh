#!/usr/bin/env bash
# Builds the libFuzzer targets (tests/fuzz/, MAPALLOC_BUILD_FUZZ=ON, clang 14 with
# -fsanitize=fuzzer,address,undefined) and runs each for SECONDS, one after the other on one
# core. Exits non-zero if any target finds a crash, a leak or a failed shadow check.
#
#   tools/fuzz.sh                 # every target, 20 s each
#   tools/fuzz.sh 3600 heap       # one target for an hour
#   tools/fuzz.sh 600 pool arena  # several targets
#
# Each run starts from tests/fuzz/corpus/<target>/ (read only: new inputs go to a temporary
# corpus that is deleted at the end) unless MAPALLOC_FUZZ_CORPUS=DIR names a directory to
# keep the growing corpus in (DIR/<target>/), so that long runs can continue each other.
# A crashing input is kept as build/fuzz/artifacts/<target>/crash-*; reproduce it with
#   build/fuzz/tests/fuzz/fuzz_<target> build/fuzz/artifacts/<target>/crash-...
# Extra libFuzzer flags can be passed in MAPALLOC_FUZZ_FLAGS (e.g. "-max_len=512").
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"

all_targets=(heap pool arena pages)
seconds=${1:-20}
shift || true
targets=("$@")
((${#targets[@]})) || targets=("${all_targets[@]}")
[[ $seconds =~ ^[0-9]+$ ]] || { echo "fuzz.sh: SECONDS must be a number, not '$seconds'" >&2; exit 2; }
for t in "${targets[@]}"; do
  [[ " ${all_targets[*]} " == *" $t "* ]] ||
    { echo "fuzz.sh: unknown target '$t' (one of: ${all_targets[*]})" >&2; exit 2; }
done

# clang 14 and its libFuzzer/sanitizer runtimes (Debian packages), as root or with sudo.
packages=(clang-14 libfuzzer-14-dev libclang-rt-14-dev cmake make)
. "$top/tools/lib/packages.sh"
ensure_packages fuzz.sh "${packages[@]}" || exit 1

build="$top/build/fuzz"
CC=clang-14 CXX=clang++-14 cmake -S "$top" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DMAPALLOC_BUILD_FUZZ=ON -DMAPALLOC_BUILD_TESTS=OFF -DMAPALLOC_BUILD_BENCH=OFF >/dev/null
cmake --build "$build" -j 2 --target "${targets[@]/#/fuzz_}" -- --no-print-directory >/dev/null

work=$(mktemp -d "${TMPDIR:-/tmp}/mapalloc-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT
# Leaks are errors; a failed shadow check aborts (FZ_CHECK) and counts as a crash.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

failed=()
summary=()
for t in "${targets[@]}"; do
  if [ -n "${MAPALLOC_FUZZ_CORPUS:-}" ]; then corpus="$MAPALLOC_FUZZ_CORPUS/$t"; else corpus="$work/$t"; fi
  arts="$build/artifacts/$t"
  mkdir -p "$corpus" "$arts"
  log="$work/$t.log"
  echo "fuzz.sh: fuzz_$t for ${seconds}s (corpus $corpus)"
  rc=0
  # shellcheck disable=SC2086 # MAPALLOC_FUZZ_FLAGS is a list of flags
  # rss_limit: libFuzzer checks the *peak* RSS, which big inputs (dozens of 1 MiB pool
  # objects, committed) and ASan's quarantine push past the 2 GiB default on long runs.
  "$build/tests/fuzz/fuzz_$t" -max_total_time="$seconds" -print_final_stats=1 \
    -rss_limit_mb=4096 -artifact_prefix="$arts/" ${MAPALLOC_FUZZ_FLAGS:-} \
    "$corpus" "tests/fuzz/corpus/$t" \
    >"$log" 2>&1 || rc=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
  line=$(printf '%-6s %10s execs %6s exec/s  cov %5s  ' "$t" "${execs:-?}" "${rate:-?}" "${cov:-?}")
  if ((rc != 0)); then
    failed+=("$t")
    summary+=("$line FAILED (exit $rc)")
    echo "fuzz.sh: fuzz_$t FAILED (exit $rc); the end of its log:"
    grep -v '^#\|^INFO\|^  *NEW_FUNC\|Uses:' "$log" | tail -40
    ls -t "$arts" | head -3 | sed "s|^|fuzz.sh: reproduce: $build/tests/fuzz/fuzz_$t $arts/|"
  else
    summary+=("$line ok")
  fi
done

echo "fuzz.sh: summary (${seconds}s per target)"
printf '  %s\n' "${summary[@]}"
if ((${#failed[@]})); then
  echo "fuzz.sh: FAILED: ${failed[*]}"
  exit 1
fi
echo "fuzz.sh: ${#targets[@]} passed, 0 failed"
