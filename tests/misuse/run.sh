#!/usr/bin/env bash
# Runs the eight misuse cases of misuse_case.c, each in a child process, under glibc's
# malloc, mapalloc's default preload library and its secure one (and jemalloc/mimalloc
# when installed, for the table only), prints the table and checks:
#   - the secure build stops every case, with a "mapalloc: <misuse>" message naming it
#     (SIGSEGV from the guard page for the overflow off a large block);
#   - the default build with MAPALLOC_SECURE=1 also stops the overflow off a large block;
#   - the default build stops every case glibc stops (glibc is measured here, not assumed),
#     but for the cases listed in DEFAULT_BELOW_GLIBC with the reason.
# A case is stopped when the process dies by a signal (abort or fault) at the misuse or at
# the next allocation instead of going on with a duplicate or wild block.
#
# Usage: run.sh <misuse_case> <default preload .so> <secure preload .so>
set -u
prog=$1 default_lib=$2 secure_lib=$3

# The default build checks a free-list link cheaply (a link out of the block's 4 MiB chunk is
# verified exactly, out of line: three instructions on the malloc fast path), which stops
# uaf_link as glibc's safe-linking does; no case is below glibc. The mechanism stays for a
# case a future change would have to justify.
DEFAULT_BELOW_GLIBC=""

# What the secure build must print (or the signal it must die by) per case.
declare -A expect=(
  [double_free_small]="mapalloc: double free"
  [double_free_delayed]="mapalloc: double free"
  [double_free_large]="mapalloc: double free"
  [free_interior]="mapalloc: invalid free"
  [free_stack]="mapalloc: invalid free"
  [uaf_link]="mapalloc: corrupted free list"
  [overflow_large]="SIGSEGV"
  [free_sized_mismatch]="mapalloc: free_sized with a wrong size"
)

# run <lib or empty> <case> [VAR=value]: sets $res to "stopped" / "MISSED" and $msg to what
# it said.
run() {
  local out rc
  out=$(env ${1:+LD_PRELOAD=$1} MAPALLOC_PURGE_DELAY_MS=100 ${3:-} timeout 60 "$prog" "$2" 2>&1)
  rc=$?
  msg=$(printf '%s' "$out" | grep -m1 -v '^$' | cut -c1-60)
  case $rc in
  134) res=stopped; msg=${msg:-SIGABRT} ;;
  139) res=stopped; msg="SIGSEGV${msg:+ $msg}" ;;
  135 | 132 | 133) res=stopped; msg="signal $((rc - 128))${msg:+ $msg}" ;;
  *) res=MISSED; msg="exit $rc${msg:+ $msg}" ;;
  esac
}

cases=$("$prog" --list) || exit 1
# Column 3: the default build with MAPALLOC_SECURE=1 (guard pages, random order per run):
# it must stop what the default build stops, and the overflow off a large block.
allocs=(glibc "$default_lib" "$secure_lib" "$default_lib")
names=(glibc mapalloc mapalloc-secure "mapalloc SECURE=1")
for extra in jemalloc:libjemalloc.so.2 mimalloc:libmimalloc.so.2; do
  f=/usr/lib/x86_64-linux-gnu/${extra#*:}
  if [ -e "$f" ]; then
    allocs+=("$f")
    names+=("${extra%%:*}")
  fi
done

fail=0
declare -A stopped
printf '%-20s' case
for n in "${names[@]}"; do printf ' | %-16s' "$n"; done
echo
for c in $cases; do
  printf '%-20s' "$c"
  for i in "${!allocs[@]}"; do
    lib=${allocs[$i]}
    [ "$lib" = glibc ] && lib=
    envs=
    [ "$i" = 3 ] && envs=MAPALLOC_SECURE=1
    run "$lib" "$c" $envs
    stopped[$c,$i]=$res
    printf ' | %-16s' "$res"
    if [ "$i" = 2 ]; then
      if [ "$res" != stopped ]; then
        echo; echo "FAIL: secure build did not stop $c ($msg)"; fail=1
      elif [ "${expect[$c]}" = SIGSEGV ]; then
        [[ "$msg" == SIGSEGV* ]] || { echo; echo "FAIL: $c: want SIGSEGV, got: $msg"; fail=1; }
      elif [[ "$msg" != "${expect[$c]}"* ]]; then
        echo; echo "FAIL: $c: want '${expect[$c]}...', got: $msg"; fail=1
      fi
    fi
  done
  echo
  if [ "${stopped[$c,3]}" != stopped ] &&
    { [ "${stopped[$c,1]}" = stopped ] || [ "$c" = overflow_large ]; }; then
    echo "FAIL: the default build with MAPALLOC_SECURE=1 does not stop $c"; fail=1
  fi
  # The default build against glibc, case by case.
  below=0
  [[ " $DEFAULT_BELOW_GLIBC " == *" $c "* ]] && below=1
  if [ "${stopped[$c,0]}" = stopped ] && [ "${stopped[$c,1]}" != stopped ] && [ $below = 0 ]; then
    echo "FAIL: glibc stops $c, mapalloc's default build does not"; fail=1
  fi
  if [ $below = 1 ] && [ "${stopped[$c,1]}" = stopped ]; then
    echo "FAIL: the default build now stops $c: remove it from DEFAULT_BELOW_GLIBC"; fail=1
  fi
done
for i in "${!allocs[@]}"; do
  n=0
  for c in $cases; do [ "${stopped[$c,$i]}" = stopped ] && n=$((n + 1)); done
  echo "${names[$i]}: stops $n of $(echo $cases | wc -w)"
done
[ $fail = 0 ] && echo "misuse: ok"
exit $fail
