#!/usr/bin/env bash
# Runs every test with ava (TAP reporter) and ends with one line: "N passed, N failed[, N skipped]".
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/node_modules/.bin:$PATH"
log=$(mktemp)
t0=$(date +%s%3N)
export COS_AGENT_TEST_TIMING=$(mktemp)
bash scripts/build.sh || { echo "build failed"; echo "0 passed, 1 failed"; exit 1; }
# The VM suite comes last; its cold builds (package, kernel, debootstrap, disks, images: minutes) start now, beside
# the other tests, so its boots start at once (vm-tests/lib/prebuild.ts; the cache's locks keep builds single).
prebuild=
if [ "$#" -eq 0 ] || printf '%s\n' "$@" | grep -q '^vm-tests'; then
  prebuild_log=$(mktemp)
  node vm-tests/lib/prebuild.ts > "$prebuild_log" 2>&1 &
  prebuild=$!
fi
ava --tap "$@" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
if [ -n "$prebuild" ]; then
  wait "$prebuild"; echo "# $(tail -n 1 "$prebuild_log" | cut -c1-300)"; rm -f "$prebuild_log"
fi
# Wall-clock accounting: the whole run, and the VM suite from its first file's start to its last file's end
# (vm-tests/lib/timing.ts), beside the budgets (40 and 20 minutes on 2 cores).
t1=$(date +%s%3N)
vm=$(awk '$2=="start"{if(!s||$1<s)s=$1} $2=="end"{if($1>e)e=$1} END{if(s&&e)printf "%.1f s (%d files)", (e-s)/1000, n; else print "not run"} $2=="start"{n++}' "$COS_AGENT_TEST_TIMING")
echo "# timing: build and tests $(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f s", (b-a)/1000}'); VM suite ${vm}"
rm -f "$COS_AGENT_TEST_TIMING"
pass=$(grep -E '^# pass ' "$log" | tail -1 | awk '{print $3}')
fail=$(grep -E '^# fail ' "$log" | tail -1 | awk '{print $3}')
skip=$(grep -E '^# skip ' "$log" | tail -1 | awk '{print $3}')
todo=$(grep -E '^# todo ' "$log" | tail -1 | awk '{print $3}')
rm -f "$log"
pass=${pass:-0}; fail=${fail:-0}; skip=$(( ${skip:-0} + ${todo:-0} ))
# ava exits non-zero on an uncaught exception or a timeout even when no assertion failed: count that as a failure.
if [ "$rc" -ne 0 ] && [ "$fail" -eq 0 ]; then fail=1; fi
if [ "$skip" -gt 0 ]; then echo "$pass passed, $fail failed, $skip skipped"; else echo "$pass passed, $fail failed"; fi
[ "$fail" -eq 0 ] && [ "$rc" -eq 0 ]
