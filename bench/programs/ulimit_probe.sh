#!/usr/bin/env bash
# The smallest `ulimit -v` (KiB, bisected to 5 MB) under which each of three real programs
# runs, per allocator: what a program near an address-space limit sees (docs/internals.md,
# "Segments that grow in their window", the RLIMIT_AS table).
#
#   bench/programs/ulimit_probe.sh [LIB.so ...]   # "" or "glibc" for the system malloc
#   bench/programs/ulimit_probe.sh glibc build/release/libmapalloc-preload.so
set -uo pipefail
(($#)) || set -- glibc "$(cd "$(dirname "$0")/../.." && pwd)/build/release/libmapalloc-preload.so"

threads_py=$(mktemp --suffix=.py)
trap 'rm -f "$threads_py"' EXIT
cat >"$threads_py" <<'PY'
import json, threading
d = {str(i): [i] * 10 for i in range(200000)}
s = json.dumps(d)
ts = [threading.Thread(target=lambda: sum(len(x) for x in d.values())) for _ in range(8)]
[t.start() for t in ts]
[t.join() for t in ts]
print(len(s))
PY
programs=(
  "python3 $threads_py"
  "perl -e 'my @a=(1..1000000); print scalar(@a)'"
  "python3 -c 'import json; print(len(json.dumps(list(range(10**6)))))'"
)

# Smallest limit in [lo, hi] KiB under which "$2" exits 0 with LD_PRELOAD=$1.
smallest() {
  local lib=$1 prog=$2 lo=20000 hi=400000 mid
  [[ $lib == glibc ]] && lib=
  while ((hi - lo > 5000)); do
    mid=$(((lo + hi) / 2))
    if bash -c "ulimit -v $mid; LD_PRELOAD=$lib $prog" >/dev/null 2>&1; then hi=$mid; else lo=$mid; fi
  done
  echo "$hi"
}

for prog in "${programs[@]}"; do
  line="${prog//$threads_py/threads.py}"
  for lib in "$@"; do line+=" | ${lib##*/} $(smallest "$lib" "$prog")"; done
  echo "$line"
done
