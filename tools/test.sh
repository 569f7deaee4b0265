#!/usr/bin/env bash
# The one test command: installs what is missing (Debian, as root), then runs every stage
# below, each from a fresh build directory (build/test, build/test-<stage>). All stages run
# even when one fails; a summary with each stage's wall time is printed at the end and the
# exit status is non-zero if any stage failed. See docs/testing.md for what each stage does.
#
#   tools/test.sh                          # every stage
#   tools/test.sh --stage asan --stage lint  # only these (also --stage asan,lint)
#   tools/test.sh --list                   # the stage names, one a line
#   MAPALLOC_TEST_JOBS=N                   # parallel build/ctest jobs (default: nproc)
set -uo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"

all_stages=(main asan tsan secure valgrind lint fuzz stress debug)
declare -A stage_desc=(
  [main]="RelWithDebInfo build with tests and benchmarks, full ctest"
  [asan]="AddressSanitizer + fatal UBSan (+ fault injection), ctest"
  [tsan]="ThreadSanitizer (clang-14) over the threaded tests"
  [secure]="MAPALLOC_SECURE=ON build, full ctest"
  [valgrind]="memcheck over the pool and arena tests"
  [lint]="cppcheck, clang-tidy and clang-format over the sources"
  [fuzz]="tools/fuzz.sh 20 (when present)"
  [stress]="tools/stress.sh 30 (when present)"
  [debug]="MAPALLOC_DEBUG=ON checked build: full ctest, then ma_stress 30 s on it"
)

usage() {
  sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'
  exit "${1:-0}"
}

selected=()
while (($#)); do
  case "$1" in
  --list)
    for s in "${all_stages[@]}"; do printf '%-9s %s\n' "$s" "${stage_desc[$s]}"; done
    exit 0
    ;;
  --stage)
    (($# >= 2)) || usage 2
    IFS=, read -r -a names <<<"$2"
    for s in "${names[@]}"; do
      [[ -n ${stage_desc[$s]+x} ]] || { echo "test.sh: unknown stage '$s' (see --list)" >&2; exit 2; }
      selected+=("$s")
    done
    shift 2
    ;;
  --stage=*)
    set -- --stage "${1#--stage=}" "${@:2}"
    ;;
  -h | --help) usage 0 ;;
  *) echo "test.sh: unknown argument '$1'" >&2; usage 2 ;;
  esac
done
((${#selected[@]})) || selected=("${all_stages[@]}")

# ---- Debian packages the build, the tests and the checkers need ----------------------------
packages=(
  cmake make gcc g++ pkg-config libcriterion-dev   # build + unit tests
  valgrind                                         # memcheck headers + valgrind stage
  util-linux                                       # setarch, fallocate etc.
  python3 perl git sqlite3                         # heap: real programs run preloaded
  clang-14 libclang-rt-14-dev libfuzzer-14-dev     # tsan stage, fuzzers
  cppcheck clang-tidy clang-format                 # lint stage
  rustc cargo librust-vm-memory-dev rustfmt        # bindings/rust: Debian's 1.63, offline
  google-perftools graphviz                        # heap profiles: google-pprof --text/--svg
)
. "$top/tools/lib/packages.sh"
ensure_packages test.sh "${packages[@]}" || exit 1

jobs=${MAPALLOC_TEST_JOBS:-$(nproc)}

# configure DIR ARGS...: a fresh build directory (an unknown -D, e.g. an option another
# branch has not merged yet, is accepted silently).
configure() {
  local dir=$1
  shift
  rm -rf "$dir"
  cmake -S "$top" -B "$dir" --no-warn-unused-cli -DMAPALLOC_BUILD_TESTS=ON "$@" >/dev/null
}
build() { cmake --build "$1" -j "$jobs" "${@:2}" -- --no-print-directory; }

# ---- Stages: each runs under `set -e` in a subshell; a non-zero exit fails the stage --------

stage_main() {
  local b=$top/build/test
  configure "$b" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMAPALLOC_BUILD_BENCH=ON
  build "$b"
  ctest --test-dir "$b" --output-on-failure -j "$jobs"
}

# The preload tests are left out: ASan interposes malloc itself, so LD_PRELOAD of our
# malloc into an ASan process (and into the uninstrumented real programs, which would need
# libasan preloaded first) tests ASan's allocator or nothing. install_consumer is left out:
# it links the installed sanitized library into a program built without -fsanitize.
# handle_segv=0: several tests check that touching a reserved page kills a child with
# SIGSEGV; ASan's own SEGV handler would turn that into exit(1). Wild accesses still crash.
stage_asan() {
  local b=$top/build/test-asan
  configure "$b" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMAPALLOC_SANITIZE=address,undefined \
    -DCMAKE_C_FLAGS=-fno-sanitize-recover=all -DCMAKE_CXX_FLAGS=-fno-sanitize-recover=all \
    -DMAPALLOC_FAULT_INJECTION=ON
  build "$b"
  ASAN_OPTIONS=handle_segv=0:detect_leaks=1:strict_string_checks=1:detect_stack_use_after_return=1 \
    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ctest --test-dir "$b" --output-on-failure -j "$jobs" -E '^(preload_|install_consumer$)'
}

# Only the tests that run threads against the library; the rest are single-threaded and
# are covered by asan. Criterion cannot start under TSan: these tests are built against the
# fork-per-test stand-in tests/criterion-shim/ (see tests/CMakeLists.txt). handle_segv=0:
# as in asan, the tests that expect a SIGSEGV must get it. TSan (clang 14) cannot map its shadow with more than 28 bits of mmap
# randomization; setarch -R disables ASLR for the run where that is the case.
stage_tsan() {
  local b=$top/build/test-tsan
  configure "$b" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMAPALLOC_SANITIZE=thread \
    -DCMAKE_C_COMPILER=clang-14 -DCMAKE_CXX_COMPILER=clang++-14
  local tests=(test_pool test_heap test_remote test_fork test_arena test_arena_tree test_arena_check
    test_retention)
  build "$b" --target "${tests[@]}"
  local bits wrap=()
  bits=$(cat /proc/sys/vm/mmap_rnd_bits 2>/dev/null || echo 28)
  ((bits <= 28)) || wrap=(setarch "$(uname -m)" -R)
  local re
  re="^($(IFS='|'; echo "${tests[*]}"))\$"
  TSAN_OPTIONS="halt_on_error=1:handle_segv=0:second_deadlock_stack=1:suppressions=$top/tools/tsan.supp" \
    "${wrap[@]}" ctest --test-dir "$b" --output-on-failure -j "$jobs" -R "$re"
}

stage_secure() {
  local b=$top/build/test-secure
  configure "$b" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMAPALLOC_SECURE=ON
  build "$b"
  ctest --test-dir "$b" --output-on-failure -j "$jobs"
}

# Memcheck over the pool and arena tests. Criterion forks a process per test, so memcheck
# follows the children (--trace-children) and writes one log per process. A process that
# dies by a signal is a test that expects a fault or an abort (touching a reserved page, a
# double free): memcheck's report of that access is the point of the test. Every other
# process must end with "ERROR SUMMARY: 0 errors" (definite leaks count as errors).
# Left out: the obj/* tests of test_pool, which drive the untracked inline fast path that
# the library itself bypasses under valgrind (src/obj/obj.h, "Valgrind"), and
# one_tib_arena_is_not_charged (valgrind cannot reserve 2 TiB of address space).
# Then the pool_valgrind_* ctest entries (tests/pool_tools.cmake), which check that memcheck
# SEES a pool user's use-after-free and leak.
stage_valgrind() {
  local b=$top/build/test-valgrind
  configure "$b" -DCMAKE_BUILD_TYPE=RelWithDebInfo
  build "$b" --target test_pool test_arena test_arena_tree pool_misuse
  local logs=$b/memcheck
  mkdir -p "$logs"
  local vg=(valgrind --leak-check=full --errors-for-leak-kinds=definite --trace-children=yes
    --child-silent-after-fork=no)
  "${vg[@]}" --log-file="$logs/test_pool.%p" "$b/tests/test_pool" --jobs 1 --filter 'pool/*'
  "${vg[@]}" --log-file="$logs/test_arena.%p" "$b/tests/test_arena" --jobs 1 \
    --filter 'arena/!(one_tib_arena_is_not_charged)'
  "${vg[@]}" --log-file="$logs/test_arena_tree.%p" "$b/tests/test_arena_tree" --jobs 1
  local f n=0 faulted=0 bad=0
  for f in "$logs"/*; do
    n=$((n + 1))
    if grep -q 'Process terminating with default action of signal' "$f"; then
      faulted=$((faulted + 1))
    elif ! grep -q 'ERROR SUMMARY: 0 errors' "$f"; then
      echo "valgrind: memcheck errors in ${f##*/}:"
      cat "$f"
      bad=$((bad + 1))
    fi
  done
  echo "valgrind: $n processes, $faulted ended by an expected signal, $bad with errors"
  ((n > 0 && bad == 0))
  ctest --test-dir "$b" --output-on-failure -R '^pool_valgrind_'
}

# Lint: the checked-in .clang-tidy and tools/cppcheck.supp; only our sources are checked.
stage_lint() {
  local b=$top/build/test-lint
  configure "$b" -DCMAKE_C_COMPILER=clang-14 -DCMAKE_CXX_COMPILER=clang++-14
  local srcs
  mapfile -t srcs < <(find src -name '*.c' | sort)
  echo "lint: cppcheck"
  local out
  out=$(cppcheck --project="$b/compile_commands.json" --file-filter="$top/src/*" \
    --enable=warning,style,performance,portability --inline-suppr --quiet \
    --suppressions-list="$top/tools/cppcheck.supp" --error-exitcode=1 -j "$jobs" 2>&1) ||
    { echo "$out"; return 1; }
  echo "lint: clang-tidy"
  out=$(printf '%s\n' "${srcs[@]}" |
    xargs -P "$jobs" -n 4 clang-tidy -p "$b" --quiet --warnings-as-errors='*' 2>&1) ||
    { echo "$out" | grep -v 'warnings generated\|^Suppressed\|^Use -header-filter'; return 1; }
  echo "lint: clang-format"
  { find src include tests tools bench examples -name '*.[ch]' -print0
    find include tests/cpp bench examples -name '*.[ch]pp' -print0; } | sort -z |
    xargs -0 clang-format --dry-run -Werror
  echo "lint: rustfmt"
  find bindings/rust examples -name '*.rs' -not -path '*/target/*' -print0 | sort -z |
    xargs -0 /usr/bin/rustfmt --edition 2021 --check # Debian 1.63, as CI
}

stage_fuzz() {
  if [ -x "$top/tools/fuzz.sh" ]; then "$top/tools/fuzz.sh" 20; else
    echo "fuzz: SKIPPED, tools/fuzz.sh does not exist"; fi
}

stage_stress() {
  if [ -x "$top/tools/stress.sh" ]; then "$top/tools/stress.sh" 30; else
    echo "stress: SKIPPED, tools/stress.sh does not exist"; fi
}

# The checked build (docs/testing.md): MA_CHECK invariants compiled into the slow paths,
# RelWithDebInfo so the suite and the stress run keep their speed (a -O0 Debug build works
# too, but its ctest alone took almost 6 minutes on 2 cores). Then the stress program of
# this build (tests/stress, as tools/stress.sh runs it) for 30 s, --quiet.
stage_debug() {
  local b=$top/build/test-debug
  configure "$b" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMAPALLOC_DEBUG=ON
  build "$b"
  ctest --test-dir "$b" --output-on-failure -j "$jobs"
  echo "debug: $b/tests/ma_stress 30 --quiet"
  "$b/tests/ma_stress" 30 --quiet
}

# ---- Run -----------------------------------------------------------------------------------
declare -A result secs
failed=0
total_start=$(date +%s)
for s in "${selected[@]}"; do
  echo "=== test.sh: stage $s: ${stage_desc[$s]}"
  start=$(date +%s)
  (set -e; "stage_$s")
  rc=$?
  secs[$s]=$(($(date +%s) - start))
  if ((rc == 0)); then result[$s]=ok; else result[$s]="FAILED (exit $rc)"; failed=1; fi
  echo "=== test.sh: stage $s: ${result[$s]} in ${secs[$s]} s"
done
echo "=== test.sh: summary"
for s in "${selected[@]}"; do printf '  %-9s %-18s %5d s\n' "$s" "${result[$s]}" "${secs[$s]}"; done
printf '  %-9s %-18s %5d s\n' total "" $(($(date +%s) - total_start))
if ((failed)); then
  echo "test.sh: FAILED"
  exit 1
fi
echo "test.sh: all stages passed"
