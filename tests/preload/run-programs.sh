#!/usr/bin/env bash
# Runs real programs plainly and with LD_PRELOAD=$1 (libmapalloc-preload.so) and compares
# their output. Each program must be installed (tools/test.sh installs them); a missing one
# is a failure, not a skip. Usage: run-programs.sh /path/to/libmapalloc-preload.so [AS_KIB]
# With AS_KIB both runs happen under `ulimit -v AS_KIB` (RLIMIT_AS): a program that fails
# plainly (on glibc) under the limit is reported "over" and not compared; every program
# that fits on glibc must fit on mapalloc too, and at least one program must fit.
set -uo pipefail
lib=$(readlink -f "$1")
as_kib=${2:-}
lim=()
if [[ -n $as_kib ]]; then
  # The limit is set in a plain shell that then execs the program (with the preload, for
  # the mapalloc run): only the program itself runs under it.
  lim=(bash -c 'ulimit -v "$0" && exec "$@"' "$as_kib")
fi
fits=0
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0

# run NAME CMD...: stdout+exit status of the plain and the preloaded run must match.
run() {
  local name=$1
  shift
  reset_work
  (cd "$tmp/work" && "${lim[@]}" "$@") >"$tmp/$name.plain" 2>"$tmp/$name.plain.err"
  echo "exit=$?" >>"$tmp/$name.plain"
  if [[ -n $as_kib ]] && ! grep -qx 'exit=0' "$tmp/$name.plain"; then
    echo "over $name (fails under ulimit -v $as_kib on glibc too)"
    return
  fi
  fits=$((fits + 1))
  reset_work
  (cd "$tmp/work" && "${lim[@]}" env LD_PRELOAD="$lib" "$@") >"$tmp/$name.pre" 2>"$tmp/$name.pre.err"
  echo "exit=$?" >>"$tmp/$name.pre"
  if cmp -s "$tmp/$name.plain" "$tmp/$name.pre" && grep -qx 'exit=0' "$tmp/$name.pre"; then
    echo "ok   $name"
  else
    echo "FAIL $name"
    diff "$tmp/$name.plain" "$tmp/$name.pre" | head -20
    tail -5 "$tmp/$name.pre.err"
    fails=$((fails + 1))
  fi
}

need() {
  command -v "$1" >/dev/null || { echo "FAIL $1 is not installed (tools/test.sh installs it)"; fails=$((fails + 1)); return 1; }
}

# Prepared once, outside the timed runs: a work directory per program run.
reset_work() { rm -rf "$tmp/work"; mkdir -p "$tmp/work"; }

# --- python3: pymalloc off so every object goes through malloc --------------------------
if need python3; then
  run python env PYTHONMALLOC=malloc python3 "$here/workload.py"
  # A few of the interpreter's own test suites, where it ships them (pyenv builds do;
  # Debian's python3 keeps them in libpython3.x-testsuite).
  if python3 -c 'import test.test_dict, test.test_list, test.test_json' 2>/dev/null; then
    # regrtest prints seeds and timings: compare only the verdict.
    run python-regrtest bash -c 'PYTHONMALLOC=malloc python3 -m test -q test_dict test_list test_json test_re >log 2>&1; s=$?; grep -o "Result: [A-Z]*" log; exit $s' 
  else
    echo "note python3 has no test suites here (test.test_dict missing): workload only"
  fi
fi

# --- perl -------------------------------------------------------------------------------
if need perl; then
  run perl perl -e '
    my %h; for my $i (1..200000) { $h{"k$i"} = [$i, "v" x ($i % 50)]; }
    my @k = sort { $h{$a}[0] <=> $h{$b}[0] } grep { /7/ } keys %h;
    my $s = 0; $s += length($h{$_}[1]) for @k;
    my $str = join(",", map { sprintf("%05d", $_) } 1..50000);
    $str =~ s/(\d)0(\d)/$2$1/g;
    print scalar(@k), " $s ", length($str), "\n";'
fi

# --- git: a repository with a few commits ------------------------------------------------
if need git; then
  reset_work
  cat >"$tmp/git.sh" <<'GIT'
set -e
export GIT_AUTHOR_NAME=t GIT_AUTHOR_EMAIL=t@e GIT_COMMITTER_NAME=t GIT_COMMITTER_EMAIL=t@e
export GIT_AUTHOR_DATE='2024-01-01T00:00:00Z' GIT_COMMITTER_DATE='2024-01-01T00:00:00Z'
export HOME=$PWD GIT_CONFIG_NOSYSTEM=1
git init -q -b main repo && cd repo
for i in 1 2 3 4 5; do
  seq 1 $((i * 3000)) >"f$i.txt"; git add .; git commit -q -m "commit $i"
done
git log --format='%H %s' && git gc -q && git fsck --no-progress && git log --stat | tail -3
GIT
  run git bash "$tmp/git.sh"
fi

# --- gcc and g++: the compilers run on mapalloc, and so do the programs they build -------
if need gcc && need g++; then
  reset_work
  cat >"$tmp/prog.c" <<'C'
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
int main(void) {
  char *v[1000]; size_t t = 0;
  for (int i = 0; i < 1000; i++) { v[i] = malloc(i + 1); memset(v[i], 'a', i + 1); t += i + 1; }
  for (int i = 0; i < 1000; i++) free(v[i]);
  printf("c %zu\n", t);
  return 0;
}
C
  run gcc bash -c "gcc -O2 -o prog '$tmp/prog.c' && ./prog"
  run g++ bash -c "g++ -O2 -o prog '$here/newdelete.cpp' -ldl && ./prog"
  # The C++ program checks that operator new/delete really went through mapalloc.
  reset_work
  if [[ -n $as_kib ]]; then
    : # a check of the preload's symbols, not of limits: run once, without one
  elif (cd "$tmp/work" && g++ -O2 -o prog "$here/newdelete.cpp" -ldl &&
      LD_PRELOAD="$lib" MAPALLOC_EXPECT=1 ./prog >/dev/null); then
    echo "ok   g++-new-uses-mapalloc"
  else
    echo "FAIL g++-new-uses-mapalloc"; fails=$((fails + 1))
  fi
fi

# --- sort, bash, sqlite3 -------------------------------------------------------------------
if need sort && need awk; then
  reset_work
  awk 'BEGIN { x = 12345; for (i = 0; i < 300000; i++) { x = (x * 1103515245 + 12345) % 2147483648; printf "%d line %d\n", x, i } }' >"$tmp/sort.in"
  run sort sort -n -S 64M "$tmp/sort.in"
  run sort-unique sort -u -k3 "$tmp/sort.in"
fi
if need bash; then
  run bash bash -c 'declare -A m; a=(); for ((i=0;i<20000;i++)); do a+=("x$i"); m[k$i]=$((i*i)); done
    s=""; for ((i=0;i<3000;i++)); do s+="${a[i]}"; done
    echo "${#a[@]} ${#m[@]} ${#s} ${m[k999]}"; x=$(printf "%s\n" "${a[@]}" | wc -l); echo $x'
fi
if need sqlite3; then
  run sqlite3 sqlite3 db.sqlite "
    CREATE TABLE t(a INTEGER PRIMARY KEY, b TEXT, c REAL);
    WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < 50000)
    INSERT INTO t SELECT i, printf('row-%08d', i * 7919 % 50000), i * 0.5 FROM n;
    CREATE INDEX tb ON t(b);
    SELECT count(*), sum(c), min(b), max(b) FROM t;
    SELECT b FROM t WHERE a % 9999 = 0 ORDER BY b;"
fi

# --- options are read from the environment ------------------------------------------------
reset_work
if out=$(cd "$tmp/work" && "${lim[@]}" env MAPALLOC_VERBOSE=1 MAPALLOC_PURGE_DELAY_MS=7 \
         MAPALLOC_STATS=1 LD_PRELOAD="$lib" cat /dev/null 2>&1) &&
   grep -q 'MAPALLOC_PURGE_DELAY_MS=7' <<<"$out" && grep -q 'mapalloc heap statistics' <<<"$out"; then
  echo "ok   options"
else
  echo "FAIL options: $out"; fails=$((fails + 1))
fi

if [[ -n $as_kib ]] && ((fits == 0)); then
  echo "FAIL no program fits under ulimit -v $as_kib even on glibc: the limit tests nothing"
  fails=$((fails + 1))
fi
if ((fails)); then
  echo "run-programs: $fails failure(s)"
  exit 1
fi
echo "run-programs: all programs behave the same with mapalloc"
