#!/usr/bin/env bash
# The benchmark suite: every workload under every allocator, interleaved, with a table and a
# chart. See docs/benchmarks.md for what each workload stresses.
#
#   tools/bench.sh [--quick] [--alloc glibc,jemalloc,mimalloc,tcmalloc,mapalloc] [--runs N]
#                  [--only NAME...] [--callgrind] [--list]
#
#   --quick      small problem sizes (a smoke run: about 2 minutes on 2 cores); default runs 1
#   --alloc L    comma-separated allocators (default: all five; also mapalloc-secure, the
#                preload library of a -DMAPALLOC_SECURE=ON build in build/release-secure;
#                mapalloc-prof, mapalloc with MAPALLOC_PROF=1 (heap profiling at the default
#                rate, a profile written at exit); jemalloc-prof, jemalloc with
#                MALLOC_CONF=prof:true (the same 512 KiB mean sampling interval); mapalloc-base,
#                the preload library $MAPALLOC_BASE_LIB names (another commit's build: before
#                and after in one interleaved run); mapalloc-base-prof, that one profiling)
#   --runs N     repetitions per (workload, allocator); medians are reported (default 5)
#   --only N...  only these workloads (names as in --list, or any point of a generated family:
#                server-50k, churn-16K-2K, threads-64, ...); stops at the next --option
#   --callgrind  instead of timing, count instructions per operation (valgrind) for the
#                single-thread workloads: stable figures on a noisy machine
#   --list       print the workload names and exit
#
# Generated families (one program, one parameter per point; in a name a lower-case k/m/g is
# decimal, K/M/G binary): server-<slots per thread>, prodcons-b<batch>, churn-<window>-<largest
# size>, threads-<count>[-<largest size>], medium-<largest size>, burst-<ring slots>,
# remote-<live bytes per thread>, mstress-t<threads>, prodcons-t<threads> (oversubscribed:
# the same work on more threads than cores). Our own
# workloads get --seed <run - 1>: every run draws another random sequence, the same for every
# allocator within the run, so no allocator can be tuned to one fixed sequence.
#
# Installs missing Debian packages (as root or with sudo), builds a Release tree in
# build/release, runs, prints a markdown table of medians with each allocator's ratio to
# mapalloc (to glibc while mapalloc has no preload library), and writes
# bench/results/<date>-<host>.{csv,md,png} (--quick: <date>-<host>-quick.*). Exits non-zero if
# the build, the runner or any run fails. Environment: MAPALLOC_BENCH_TIMEOUT (seconds per run).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"

all_allocs=(glibc jemalloc mimalloc tcmalloc mapalloc)
workloads=(larson xmalloc cache-scratch cache-thrash churn glibc-simple glibc-thread mstress frag
  memcached sqlite3 python3 gcc lua)
# The generated families' default points (issue 10's "suite that cannot be tuned to").
for n in 1k 10k 100k; do workloads+=("server-$n"); done # slots per thread, 2 threads
for n in 16 1K; do workloads+=("prodcons-b$n"); done    # blocks per hand-over
# 8 and 32 threads a core: each thread's reuse of what it freed comes 8-32 times later in
# wall time, past a purge delay counted in wall time
workloads+=(mstress-t16 prodcons-t64)
for w in 1K 4K 64K; do
  for m in 128 512 4K; do workloads+=("churn-$w-$m"); done # live window x largest size
done
for n in 1 2 8 32; do workloads+=("threads-$n"); done # 32: oversubscribed on 2 cores
workloads+=(threads-256-128K)                          # many threads x medium classes
for n in 512K 2M 8M; do workloads+=("medium-$n"); done # largest buffer, 2 threads
for n in 10k 100k 1m; do workloads+=("burst-$n"); done # ring of blocks freed in bursts
workloads+=(alloctest idle)
for n in 1M 1G; do workloads+=("remote-$n"); done # live bytes per thread (a pair)
# --callgrind set (mstress: a few MiB blocks dominate at callgrind sizes)
single_thread=(churn glibc-simple frag alloctest churn-1K-128 churn-4K-512)
libdir=/usr/lib/x86_64-linux-gnu
declare -A lib=(
  [glibc]=""
  [jemalloc]=$libdir/libjemalloc.so.2
  [mimalloc]=$libdir/libmimalloc.so.2
  [tcmalloc]=$libdir/libtcmalloc_minimal.so.4
  [mapalloc]="$top/build/release/libmapalloc-preload.so"
  [mapalloc-secure]="$top/build/release-secure/libmapalloc-preload.so"
  [mapalloc-prof]="$top/build/release/libmapalloc-preload.so"
  [jemalloc-prof]=$libdir/libjemalloc.so.2
  [mapalloc-base]=${MAPALLOC_BASE_LIB:-}
  [mapalloc-base-prof]=${MAPALLOC_BASE_LIB:-}
)
# Environment of an allocator's runs (runner -e arguments): profiling on.
profdir=${TMPDIR:-/tmp}/mapalloc-bench-prof.$$
declare -A alloc_env=(
  [mapalloc-prof]="MAPALLOC_PROF=1 MAPALLOC_PROF_PREFIX=$profdir/mapalloc"
  [mapalloc-base-prof]="MAPALLOC_PROF=1 MAPALLOC_PROF_PREFIX=$profdir/mapalloc-base"
  [jemalloc-prof]="MALLOC_CONF=prof:true,prof_prefix:$profdir/jeprof"
)
# env_args A: "-e VAR=VALUE" for each variable of allocator A, in the array eargs.
env_args() {
  eargs=()
  local v
  for v in ${alloc_env[$1]:-}; do eargs+=(-e "$v"); done
  [[ -z ${alloc_env[$1]:-} ]] || mkdir -p "$profdir"
}

quick=0 runs="" callgrind=0 only=() allocs=("${all_allocs[@]}")
while (($#)); do
  case "$1" in
  --quick) quick=1 ;;
  --runs)
    runs=${2:?--runs needs a number}
    shift
    ;;
  --alloc)
    IFS=, read -r -a allocs <<<"${2:?--alloc needs a list}"
    shift
    ;;
  --only)
    while (($# > 1)) && [[ $2 != --* ]]; do
      only+=("$2")
      shift
    done
    ;;
  --callgrind) callgrind=1 ;;
  --list)
    printf '%s\n' "${workloads[@]}"
    exit 0
    ;;
  -h | --help)
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
    exit 0
    ;;
  *)
    echo "bench.sh: unknown argument '$1' (see --help)" >&2
    exit 2
    ;;
  esac
  shift
done
[[ -n $runs ]] || runs=$((quick ? 1 : 5))
[[ $runs =~ ^[1-9][0-9]*$ ]] || {
  echo "bench.sh: --runs wants a positive number" >&2
  exit 2
}
for a in "${allocs[@]}"; do
  [[ -v "lib[$a]" ]] || {
    echo "bench.sh: unknown allocator '$a' (known: ${all_allocs[*]})" >&2
    exit 2
  }
done

build="$top/build/release"
wl="$build/bench/workloads"
data="$build/bench-data/$( ((quick)) && echo quick || echo full)"

# cmd_for NAME: set the array cmd to the command line of a workload (not memcached; without
# --quick and --seed, which the timing loop adds to our own workloads). Returns 1 for an
# unknown name or a family point whose parameter is not a number (with a k/m/g/K/M/G suffix).
num='^[1-9][0-9]*[kmgKMG]?$'
cmd_for() {
  local p=${1#*-} quick_live
  case "$1" in
  larson | xmalloc | cache-scratch | cache-thrash | churn | glibc-simple | glibc-thread | mstress | \
    frag | alloctest | idle)
    cmd=("$wl/wl_${1//-/_}")
    ;;
  server-*) [[ $p =~ $num ]] && cmd=("$wl/wl_server" --slots "$p") ;;
  prodcons-b*) [[ ${p#b} =~ $num ]] && cmd=("$wl/wl_prodcons" --batch "${p#b}") ;;
  prodcons-t*) [[ ${p#t} =~ $num ]] && cmd=("$wl/wl_prodcons" --threads "${p#t}") ;;
  mstress-t*) [[ ${p#t} =~ $num ]] && cmd=("$wl/wl_mstress" --threads "${p#t}") ;;
  churn-*-*) [[ ${p%-*} =~ $num && ${p#*-} =~ $num ]] &&
    cmd=("$wl/wl_window" --window "${p%-*}" --max-size "${p#*-}") ;;
  threads-*-*) [[ ${p%-*} =~ $num && ${p#*-} =~ $num ]] &&
    cmd=("$wl/wl_threads" --threads "${p%-*}" --max-size "${p#*-}") ;;
  threads-*) [[ $p =~ $num ]] && cmd=("$wl/wl_threads" --threads "$p") ;;
  medium-*) [[ $p =~ $num ]] && cmd=("$wl/wl_medium" --max-size "$p") ;;
  burst-*) [[ $p =~ $num ]] && cmd=("$wl/wl_burst" --ring "$p") ;;
  remote-*)
    # --quick caps the live heap at 64 MiB per thread (the RESULT line says live_mib).
    quick_live=$p
    ((quick)) && [[ $p == *[gG] ]] && quick_live=64M
    [[ $p =~ $num ]] && cmd=("$wl/wl_remote" --live "$quick_live")
    ;;
  sqlite3) cmd=(sh -c "exec sqlite3 -bail :memory: < '$data/sqlite.sql'") ;;
  python3) cmd=(env PYTHONMALLOC=malloc python3 "$top/bench/programs/alloc_heavy.py" "$(sz 1 4)") ;;
  gcc) cmd=(gcc -O2 -c "$data/big.c" -o "$data/big-$$.o") ;;
  lua) cmd=(lua5.4 "$top/bench/programs/tables.lua" "$(sz 1 4)") ;;
  *) return 1 ;;
  esac
}
kind_of() {
  case "$1" in
  memcached | sqlite3 | python3 | gcc | lua) echo program ;;
  *) echo workload ;;
  esac
}
sz() { if ((quick)); then echo "$1"; else echo "$2"; fi; } # sz QUICK FULL

if ((${#only[@]})); then
  for w in "${only[@]}"; do
    [[ $w == memcached || " ${workloads[*]} " == *" $w "* ]] || cmd_for "$w" || {
      echo "bench.sh: unknown workload '$w' (see --list; families: server-N, prodcons-bN, prodcons-tN, mstress-tN, churn-N-N, threads-N, threads-N-N, medium-N, burst-N, remote-N)" >&2
      exit 2
    }
  done
  workloads=("${only[@]}")
fi

# ---------------------------------------------------------------------------------------------
# Packages
# ---------------------------------------------------------------------------------------------
packages=(cmake make gcc python3 libjemalloc2 libmimalloc2.0 libtcmalloc-minimal4 memcached
  libmemcached-tools sqlite3 lua5.4 gnuplot-nox procps)
((callgrind)) && packages+=(valgrind)
. "$top/tools/lib/packages.sh"
ensure_packages bench.sh "${packages[@]}" || exit 1

# ---------------------------------------------------------------------------------------------
# Build (Release). The preload library only exists once src/malloc/override*.c does.
# ---------------------------------------------------------------------------------------------
mkdir -p "$build"
echo "bench.sh: building $build (Release)"
cmake -S "$top" -B "$build" -DCMAKE_BUILD_TYPE=Release -DMAPALLOC_BUILD_BENCH=ON \
  -DMAPALLOC_BUILD_TESTS=OFF >"$top/build/bench-cmake.log" 2>&1 ||
  {
    cat "$top/build/bench-cmake.log"
    echo "bench.sh: cmake configure failed" >&2
    exit 1
  }
cmake --build "$build" -j "$(nproc)" -- --no-print-directory >>"$top/build/bench-cmake.log" 2>&1 ||
  {
    tail -40 "$top/build/bench-cmake.log"
    echo "bench.sh: build failed (full log: build/bench-cmake.log)" >&2
    exit 1
  }
# The secure build's preload library, when asked for (not in the default set).
if [[ " ${allocs[*]} " == *" mapalloc-secure "* ]]; then
  sbuild="$top/build/release-secure"
  echo "bench.sh: building $sbuild (Release, MAPALLOC_SECURE=ON)"
  { cmake -S "$top" -B "$sbuild" -DCMAKE_BUILD_TYPE=Release -DMAPALLOC_SECURE=ON \
    -DMAPALLOC_BUILD_TESTS=OFF && cmake --build "$sbuild" -j "$(nproc)" --target mapalloc_preload \
    -- --no-print-directory; } >>"$top/build/bench-cmake.log" 2>&1 || {
    tail -40 "$top/build/bench-cmake.log"
    echo "bench.sh: secure build failed (full log: build/bench-cmake.log)" >&2
    exit 1
  }
fi
runner="$wl/bench-runner"
have_mapalloc=0
[[ -f ${lib[mapalloc]} ]] && have_mapalloc=1
for a in "${allocs[@]}"; do
  if [[ $a == mapalloc-base* && -z ${lib[$a]} ]]; then
    echo "bench.sh: $a: set MAPALLOC_BASE_LIB to a preload library" >&2
    exit 1
  fi
  if [[ $a != mapalloc && $a != mapalloc-prof && -n ${lib[$a]} && ! -f ${lib[$a]} ]]; then
    echo "bench.sh: $a library ${lib[$a]} missing" >&2
    exit 1
  fi
done
((have_mapalloc)) || [[ " ${allocs[*]} " != *" mapalloc "* ]] ||
  echo "bench.sh: mapalloc: n/a (no preload library yet: build/release/libmapalloc-preload.so)"

# ---------------------------------------------------------------------------------------------
# Inputs for the real programs (generated once per size, deterministic).
# ---------------------------------------------------------------------------------------------
mkdir -p "$data"
[[ -s $data/sqlite.sql ]] || python3 bench/programs/gen_sqlite.py "$(sz 6000 60000)" >"$data/sqlite.sql"
[[ -s $data/big.c ]] || python3 bench/programs/gen_c.py "$(sz 40 300)" >"$data/big.c"
qflag=()
((quick)) && qflag=(--quick)

stamp=$(date -u +%Y%m%d-%H%M)
host=$(hostname -s 2>/dev/null || hostname)
suffix=$( ((quick)) && echo -quick || true)
((callgrind)) && suffix="$suffix-callgrind"
mkdir -p bench/results
out="bench/results/$stamp-$host$suffix"
logdir="$build/bench-logs/$stamp$suffix"
mkdir -p "$logdir"
timeout=${MAPALLOC_BENCH_TIMEOUT:-$(sz 120 600)}
failures=0

# ---------------------------------------------------------------------------------------------
# --callgrind: instructions per operation. Each workload runs at two sizes; the difference in
# instructions over the difference in operations cancels start-up and exit costs.
# ---------------------------------------------------------------------------------------------
if ((callgrind)); then
  sel=()
  for w in "${workloads[@]}"; do [[ " ${single_thread[*]} " == *" $w "* ]] && sel+=("$w"); done
  ((${#sel[@]})) || {
    echo "bench.sh: --callgrind measures ${single_thread[*]}; none selected" >&2
    exit 2
  }
  echo "workload,alloc,ops_small,ir_small,ops_large,ir_large,ir_per_op" >"$out.csv"
  declare -A ipo
  for w in "${sel[@]}"; do
    cmd_for "$w"
    extra=(--quick)
    [[ $w == mstress ]] && extra+=(--threads 1)
    for a in "${allocs[@]}"; do
      if [[ $a == mapalloc || $a == mapalloc-prof ]] && ((!have_mapalloc)); then
        ipo[$w,$a]="n/a (no preload library yet)"
        continue
      fi
      printf 'callgrind: %-13s %-9s ' "$w" "$a"
      res=()
      for scale in 0.05 0.1; do
        log="$logdir/cg-$w-$a-$scale.log"
        # MAPALLOC_TRACK=0: mapalloc's valgrind client requests (memcheck support) are not
        # part of its native cost (they doubled its count); other allocators ignore it.
        env_args "$a"
        "$runner" -p "${lib[$a]}" -t "$timeout" -o "$log" -e MAPALLOC_TRACK=0 "${eargs[@]}" -- valgrind --tool=callgrind \
          --callgrind-out-file=/dev/null "${cmd[@]}" "${extra[@]}" --scale "$scale" >/dev/null ||
          {
            echo "FAILED ($log)"
            failures=$((failures + 1))
            continue 2
          }
        ir=$(sed -n 's/.*Collected : \([0-9]*\).*/\1/p' "$log" | tail -1)
        ops=$(sed -n 's/^RESULT .* ops=\([0-9]*\) .*/\1/p' "$log")
        res+=("$ops" "$ir")
      done
      per=$(awk -v o1="${res[0]}" -v i1="${res[1]}" -v o2="${res[2]}" -v i2="${res[3]}" \
        'BEGIN { printf "%.1f", (i2 - i1) / (o2 - o1) }')
      ipo[$w,$a]=$per
      echo "$per instructions/op"
      echo "$w,$a,${res[0]},${res[1]},${res[2]},${res[3]},$per" >>"$out.csv"
    done
  done
  {
    echo "Instructions per operation (callgrind, Ir difference between two sizes / op difference)."
    echo "An op is one malloc+free pair (glibc-simple, churn, churn-W-S, alloctest, burst-N), one malloc or one free (frag)."
    echo
    printf '| workload |'
    for a in "${allocs[@]}"; do printf ' %s |' "$a"; done
    echo
    printf '|---|'
    for _ in "${allocs[@]}"; do printf -- '---|'; done
    echo
    for w in "${sel[@]}"; do
      printf '| %s |' "$w"
      for a in "${allocs[@]}"; do printf ' %s |' "${ipo[$w,$a]:-FAILED}"; done
      echo
    done
  } | tee "$out.md"
  echo "bench.sh: wrote $out.csv $out.md"
  exit $((failures ? 1 : 0))
fi

# ---------------------------------------------------------------------------------------------
# Timing runs
# ---------------------------------------------------------------------------------------------
csv="$out.csv"
series="$out-idle.csv"
echo "date,host,workload,kind,alloc,run,wall_s,user_s,sys_s,maxrss_kib,status,result" >"$csv"
# field KEY LINE: the value of KEY=value in a runner line (bash only: no process per call).
field() { if [[ " $2" =~ [[:space:]]$1=([^ ]*) ]]; then echo "${BASH_REMATCH[1]}"; fi; }
record() { # workload kind alloc run wall user sys rss status result
  echo "$stamp,$host,$1,$2,$3,$4,$5,$6,$7,$8,$9,\"${10}\"" >>"$csv"
}

# A free TCP port on loopback for memcached.
free_port() {
  local p
  for _ in $(seq 50); do
    p=$((20000 + RANDOM % 20000))
    (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || {
      echo "$p"
      return 0
    }
  done
  return 1
}

# run_memcached ALLOC LOGBASE: start the server under ALLOC, load it with memcslap (set, then
# binary multi-get) from a client that is not preloaded, read the server's VmHWM, stop it.
# Prints a runner-style line: wall = client time; user/sys = server CPU; maxrss = VmHWM.
run_memcached() {
  local a=$1 base=$2 port spid="" res cres hwm n
  port=$(free_port) || return 1
  rm -f "$base.spid"
  env_args "$a"
  "$runner" -p "${lib[$a]}" -t "$timeout" -o "$base.server.log" -P "$base.spid" "${eargs[@]}" -- \
    memcached -u root -l 127.0.0.1 -p "$port" -U 0 -t 2 -m 1024 >"$base.server.res" &
  local rpid=$!
  for _ in $(seq 250); do
    [[ -s $base.spid ]] && spid=$(<"$base.spid")
    [[ -n $spid ]] && (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.02
  done
  if [[ -z $spid ]] || ! kill -0 "$spid" 2>/dev/null; then
    wait "$rpid" || true
    return 1
  fi
  n=$(sz 4000 20000)
  cres=$("$runner" -t "$timeout" -o "$base.client.log" -- sh -c \
    "memcslap -s 127.0.0.1:$port -t set -c 4 -e $n && memcslap -s 127.0.0.1:$port -b -t mget -c 4 -e $n") ||
    {
      kill "$spid" 2>/dev/null || true
      wait "$rpid" || true
      return 1
    }
  # memcslap can exit 0 after connection errors: a dead server or an error line is a failure.
  if ! kill -0 "$spid" 2>/dev/null || grep -qiE 'fatal|failure' "$base.client.log"; then
    kill "$spid" 2>/dev/null || true
    wait "$rpid" || true
    return 1
  fi
  hwm=$(sed -n 's/^VmHWM:[[:space:]]*\([0-9]*\) kB/\1/p' "/proc/$spid/status")
  kill -TERM "$spid"
  wait "$rpid" || true # memcached exits on SIGTERM with status 0; the runner reports it
  res=$(<"$base.server.res")
  echo "wall=$(field wall "$cres") user=$(field user "$res") sys=$(field sys "$res") maxrss_kib=$hwm status=0"
}

total=$((${#workloads[@]} * runs * ${#allocs[@]}))
k=0
t_start=$(date +%s)
echo "bench.sh: ${#workloads[@]} workloads x ${#allocs[@]} allocators x $runs run(s)$( ((quick)) && echo ', quick' || true); logs in $logdir"
for w in "${workloads[@]}"; do
  kind=$(kind_of "$w")
  for ((r = 1; r <= runs; r++)); do
    for a in "${allocs[@]}"; do # interleaved: A B C D E A B C D E ...
      k=$((k + 1))
      if [[ $a == mapalloc || $a == mapalloc-prof ]] && ((!have_mapalloc)); then
        record "$w" "$kind" "$a" "$r" "" "" "" "" "n/a" "no preload library yet"
        printf '[%3d/%d] %-13s %-9s run %d/%d ... n/a (no preload library yet)\n' "$k" "$total" "$w" "$a" "$r" "$runs"
        continue
      fi
      printf '[%3d/%d] %-13s %-9s run %d/%d ... ' "$k" "$total" "$w" "$a" "$r" "$runs"
      log="$logdir/$w-$a-$r.log"
      if [[ $w == memcached ]]; then
        line=$(run_memcached "$a" "$logdir/$w-$a-$r") || line="status=failed"
        cat "$logdir/$w-$a-$r.client.log" >"$log" 2>/dev/null || true
      else
        cmd_for "$w"
        [[ $kind == workload ]] && cmd+=("${qflag[@]}" --seed $((r - 1)))
        env_args "$a"
        line=$("$runner" -p "${lib[$a]}" -t "$timeout" -o "$log" "${eargs[@]}" -- "${cmd[@]}") || true
      fi
      st=$(field status "$line")
      result=$(sed -n 's/^RESULT name=[^ ]* //p' "$log" | tail -1)
      if [[ $st != 0 ]]; then
        echo "FAILED (status ${st:-?}; log $log)"
        tail -5 "$log" 2>/dev/null | sed 's/^/    /'
        failures=$((failures + 1))
        record "$w" "$kind" "$a" "$r" "" "" "" "" "${st:-failed}" ""
        continue
      fi
      if [[ $kind == workload && -z $result ]]; then
        echo "FAILED (no RESULT line; log $log)"
        failures=$((failures + 1))
        record "$w" "$kind" "$a" "$r" "" "" "" "" "noresult" ""
        continue
      fi
      wall=$(field wall "$line") rss=$(field maxrss_kib "$line")
      record "$w" "$kind" "$a" "$r" "$wall" "$(field user "$line")" "$(field sys "$line")" \
        "$rss" 0 "$result"
      # A time series (idle's RSS samples): one CSV for the run, plotted by summarize.py.
      if grep -q '^SAMPLE ' "$log"; then
        [[ -s $series ]] || echo "workload,alloc,run,t_s,rss_mib,phase" >"$series"
        sed -n "s/^SAMPLE t_s=\([^ ]*\) rss_mib=\([^ ]*\) phase=\([^ ]*\)\$/$w,$a,$r,\1,\2,\3/p" \
          "$log" >>"$series"
      fi
      printf '%6.2f s %6d.%d MiB\n' "$wall" $((rss / 1024)) $((rss % 1024 * 10 / 1024))
    done
  done
done

# Micro-benchmarks of mapalloc's own layers (bench/bench_*.c, linked statically; no preload).
# Each repeats and interleaves internally and prints its own table of medians, so it runs once
# per invocation (not --runs times), with a small size in --quick.
micro=()
if ((!${#only[@]})); then
  for f in bench/bench_*.c; do
    [[ -e $f ]] || continue
    b=$(basename "$f" .c)
    [[ -x $build/bench/$b ]] && micro+=("$b")
  done
  if ((${#micro[@]})); then
    for b in "${micro[@]}"; do
      printf '[micro] %-22s ... ' "$b"
      log="$logdir/$b.log"
      margs=()
      # Quick sizes of the layer benchmarks, in their own argument conventions.
      if ((quick)); then
        case $b in
        bench_arena) margs=(3) ;;                   # reps
        bench_pages) margs=(3 500) ;;               # reps ops
        bench_pool) margs=(--reps 1 --scale 0.1) ;; # its own flags
        bench_heap) margs=(--reps 1) ;;             # its own flags
        esac
      fi
      line=$("$runner" -t "$timeout" -o "$log" -e "MAPALLOC_BENCH_QUICK=$quick" -- \
        "$build/bench/$b" "${margs[@]}") || true
      st=$(field status "$line")
      if [[ $st != 0 ]]; then
        echo "FAILED (status ${st:-?}; log $log)"
        failures=$((failures + 1))
        record "$b" micro - 1 "" "" "" "" "${st:-failed}" ""
        continue
      fi
      record "$b" micro - 1 "$(field wall "$line")" "$(field user "$line")" \
        "$(field sys "$line")" "$(field maxrss_kib "$line")" 0 ""
      printf '%6.2f s\n' "$(field wall "$line")"
    done
  else
    echo "bench.sh: no micro-benchmarks built yet (bench/bench_*.c: pages, pool, arena come with those layers)"
  fi
fi

elapsed=$(($(date +%s) - t_start))
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
note="Machine: $(nproc) cores, $cpu, Linux $(uname -r); $runs run(s); ${elapsed} s. Command: tools/bench.sh"
((quick)) && note="$note --quick"
note="$note --runs $runs --alloc $(
  IFS=,
  echo "${allocs[*]}"
)$( ((${#only[@]})) && echo " --only ${only[*]}" || true)"
echo
sargs=(--png "$out.png" --md "$out.md" --note "$note")
[[ -s $series ]] && sargs+=(--series "$series" --series-png "$out-idle.png")
python3 bench/summarize.py "$csv" "${sargs[@]}" || failures=$((failures + 1))
# The layer benchmarks print their own tables (ours vs the raw system calls): keep the last.
for b in "${micro[@]}"; do
  [[ -s $logdir/$b.log ]] || continue
  printf '\n**%s** (its own output)\n\n```\n%s\n```\n' "$b" "$(tr '\r' '\n' <"$logdir/$b.log" | grep -v ': repetition [0-9]*/[0-9]* done$' | sed '/./,$!d')" | tee -a "$out.md"
done
echo
echo "bench.sh: wrote $csv, $out.md and $out.png$([[ -s $series ]] && echo " (and $series, $out-idle.png)" || true) in ${elapsed} s"
if ((failures)); then
  echo "bench.sh: $failures failure(s)" >&2
  exit 1
fi
