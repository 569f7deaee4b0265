#!/usr/bin/env bash
# The Rust workload (benches/workload.rs: strings, BTreeMap/HashMap churn, threads passing
# boxes, growing vectors) with MapAlloc as #[global_allocator] against Rust's System
# allocator under glibc, jemalloc, mimalloc and tcmalloc (LD_PRELOAD of Debian's libraries),
# interleaved in one run. A benchmark, not a test.
#
#   bindings/rust/bench.sh [--runs N] [--scale F]   median wall ms per phase, ratio to mapalloc,
#                                                   peak RSS (VmHWM)
#   bindings/rust/bench.sh --callgrind [--scale F]  instructions (callgrind, one run each)
#
# Builds with Debian's cargo (cargo-debian.sh), release profile, linking build/release's
# libmapalloc.a when it exists (else CMake builds the library).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
runs=5 scale=1.0 callgrind=0
while (($#)); do
  case "$1" in
  --runs) runs=$2; shift 2 ;;
  --scale) scale=$2; shift 2 ;;
  --callgrind) callgrind=1; shift ;;
  *) sed -n '2,12p' "$0"; exit 2 ;;
  esac
done
. "$top/tools/lib/packages.sh"
ensure_packages bench.sh rustc cargo librust-vm-memory-dev libjemalloc2 libmimalloc2.0 \
  libtcmalloc-minimal4 valgrind python3 || exit 1

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$top/build/cargo-bench}
if [ -f "$top/build/release/libmapalloc.a" ]; then export MAPALLOC_BUILD_DIR=$top/build/release; fi
mapfile -t bins < <("$here/cargo-debian.sh" bench --no-run --message-format=json 2>/dev/null |
  python3 -c '
import json, sys
for line in sys.stdin:
    j = json.loads(line)
    if j.get("reason") == "compiler-artifact" and j.get("executable") and "bench" in j["target"]["kind"]:
        print(j["target"]["name"], j["executable"])' | sort)
declare -A bin
for b in "${bins[@]}"; do bin[${b%% *}]=${b#* }; done
[ -n "${bin[with_mapalloc]:-}" ] && [ -n "${bin[with_system]:-}" ] ||
  { echo "bench.sh: the bench binaries were not built" >&2; exit 1; }

libdir=/usr/lib/x86_64-linux-gnu
allocs=(glibc jemalloc mimalloc tcmalloc mapalloc)
declare -A preload=([glibc]= [jemalloc]=$libdir/libjemalloc.so.2 [mimalloc]=$libdir/libmimalloc.so.2
  [tcmalloc]=$libdir/libtcmalloc_minimal.so.4 [mapalloc]=)
run_one() { # ALLOC CMD-PREFIX...: the workload's output
  local a=$1
  shift
  local exe=${bin[with_system]}
  [ "$a" = mapalloc ] && exe=${bin[with_mapalloc]}
  # $scale may carry a phase name after the scale (word splitting intended).
  # shellcheck disable=SC2086
  env ${preload[$a]:+LD_PRELOAD=${preload[$a]}} MAPALLOC_TRACK=0 "$@" "$exe" $scale
}

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
echo "rust workload, scale $scale, $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
if ((callgrind)); then
  # One callgrind run per allocator and phase: the program runs that phase only, and
  # --toggle-collect counts the instructions inside it (its producer threads included).
  phases=(strings btree_churn hash_churn threads_boxes vec_growth)
  for a in "${allocs[@]}"; do
    for p in "${phases[@]}"; do
      scale="$scale $p" run_one "$a" valgrind --tool=callgrind --callgrind-out-file=/dev/null \
        "--toggle-collect=*workload::$p*" 2>&1 >/dev/null |
        grep -o 'Collected : [0-9]*' | awk -v a="$a" -v p="$p" '{print a, p, $3}'
    done
  done | python3 -c '
import sys
ir = {}
for line in sys.stdin:
    a, p, n = line.split()
    ir.setdefault(a, {})[p] = int(n)
for a in ir:
    ir[a]["total"] = sum(ir[a].values())
allocs = list(ir)
print("instructions (callgrind, inside each phase; ratio = allocator / mapalloc; > 1: mapalloc executes fewer)")
print("%-14s" % "phase" + "".join("%22s" % a for a in allocs))
for k in ir["mapalloc"]:
    m = ir["mapalloc"][k]
    print("%-14s" % k + "".join(
        "%14d (%4.2fx)" % (ir[a][k], ir[a][k] / m) if a != "mapalloc" else "%14d        " % m
        for a in allocs))'
  exit 0
fi
for ((r = 1; r <= runs; r++)); do
  for a in "${allocs[@]}"; do run_one "$a" >>"$out/$a"; done
done
python3 - "$out" "${allocs[@]}" <<'PY'
import statistics, sys
out, allocs = sys.argv[1], sys.argv[2:]
rows = {}
for a in allocs:
    vals = {}
    for line in open(f"{out}/{a}"):
        f = line.split()
        key = f[1] if f[0] == "phase" else f[0]
        vals.setdefault(key, []).append(float(f[-1]))
    rows[a] = {k: statistics.median(v) for k, v in vals.items()}
keys = [k for k in rows["mapalloc"] if k != "maxrss_kib"]
print("median wall ms over %d runs (ratio = allocator / mapalloc; > 1: mapalloc faster)" %
      len(open(f"{out}/mapalloc").read().split("total")[1:]))
print("%-14s" % "phase" + "".join("%18s" % a for a in allocs))
for k in keys + ["maxrss_kib"]:
    m = rows["mapalloc"][k]
    cells = []
    for a in allocs:
        v = rows[a][k]
        cells.append("%10.1f (%4.2fx)" % (v, v / m) if a != "mapalloc" else "%10.1f        " % v)
    print("%-14s" % k + "".join("%18s" % c for c in cells))
PY
