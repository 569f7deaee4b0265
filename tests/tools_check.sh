#!/usr/bin/env bash
# Sanity checks of the mapalloc-maps table (run by ctest from tests/tools.cmake).
set -euo pipefail
bin=$1
fail() { echo "tools_check: $*" >&2; exit 1; }

# Itself: a header, its own executable, the stack, a totals line with rss.
out=$("$bin")
grep -q '^range .*size .*prt .*offset .*rss .*path$' <<<"$out" || fail "no header"
grep -q 'mapalloc-maps$' <<<"$out" || fail "own executable missing"
grep -q ' \[stack\]$' <<<"$out" || fail "[stack] missing"
grep -qE '^[0-9a-f]{12,}-[0-9a-f]{12,} +[0-9.]+[KMGT] r-x p ' <<<"$out" || fail "no r-x row"
total=$(grep '^total: ' <<<"$out") || fail "no totals"
rows=$(grep -cE '^[0-9a-f]+-[0-9a-f]+ ' <<<"$out")
[[ $total == "total: $rows areas,"* ]] || fail "totals count '$total' vs $rows rows"
[[ $total == *", rss "* ]] || fail "no rss in totals"

# A child process: its executable appears, and not ours.
sleep 30 &
child=$!
trap 'kill $child 2>/dev/null || true' EXIT
for _ in 1 2 3 4 5 6 7 8 9 10; do
  grep -q sleep "/proc/$child/maps" 2>/dev/null && break
  sleep 0.1
done
out=$("$bin" "$child")
head -1 <<<"$out" | grep -q "process $child" || fail "title lacks pid"
grep -q '/sleep$' <<<"$out" || fail "child's executable missing"
grep -q 'mapalloc-maps$' <<<"$out" && fail "our executable in the child's table"
grep -q '^total: ' <<<"$out" || fail "no totals for the child"

# Errors: a bad argument and a process that does not exist.
if "$bin" nonsense 2>/dev/null; then fail "accepted a bad pid"; fi
if "$bin" 1073741823 2>/dev/null; then fail "accepted a missing process"; fi
echo "tools_check: ok"
