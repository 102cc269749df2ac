#!/usr/bin/env bash
# Two builds of `buoy` in alternation on the small-upload workload (docs/BENCHMARKS.md): each
# run starts a fresh aggregator expecting N nodes (after `sync`), loads it with one `buoy
# bench` (10 KiB plain bodies, 50 in flight, keep-alive), and prints results/s, the
# aggregator's CPU per upload (user+system from /proc/<pid>/stat over the bench run), the
# committer thread's share of it, p99, and peak RSS (VmHWM) once the run has sealed.
# Usage: scripts/bench-ab.sh BUOY_A BUOY_B [ROUNDS] [NODES]   (the load generator is BUOY_A)
# Each run's directory is kept until the script ends: deleting thousands of files slows the
# next run's file creation on ext4 (see the caution in docs/BENCHMARKS.md).
set -euo pipefail
a="$(realpath "${1:?first buoy binary}")"; b="$(realpath "${2:?second buoy binary}")"
rounds="${3:-4}"; nodes="${4:-20000}"
work="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$work"' EXIT
seq -f 'n%05g' 0 $((nodes - 1)) | paste -sd, | sed 's/^/p=/' >"$work/expect.txt"
cpu() { awk '{print $14 + $15}' "$1"; } # clock ticks, from a stat file
hz="$(getconf CLK_TCK)"

one() { # $1: label, $2: binary
  local out="$work/run-$RANDOM$RANDOM"; mkdir -p "$out"; sync
  "$2" aggregator --bind 127.0.0.1:18191 --output "$out" --no-exit --insecure-http \
    --expect-file "$work/expect.txt" >/dev/null 2>"$out.log" &
  local pid=$!
  until grep -q "listening on" "$out.log"; do sleep 0.05; done
  local tid t
  for t in /proc/$pid/task/*; do [ "$(cat "$t/comm")" = buoy-commit ] && tid="$t"; done
  local c0 t0 c1 t1 json
  c0="$(cpu "$tid/stat")"; t0="$(cpu /proc/$pid/stat)"
  json="$("$a" bench --url http://127.0.0.1:18191 --nodes "$nodes" --size 10240 -c 50 --json)"
  c1="$(cpu "$tid/stat")"; t1="$(cpu /proc/$pid/stat)"
  until ls "$out"/*.tar.gz >/dev/null 2>&1; do sleep 0.1; done
  local rss; rss="$(awk '/VmHWM/ {print $2}' /proc/$pid/status)"
  kill -INT "$pid"; wait "$pid" 2>/dev/null || true
  echo "$json" | python3 -c "
import json, sys
d = json.load(sys.stdin)
us = lambda ticks: ticks / $hz / $nodes * 1e6
print('%-4s results/s %7.0f   CPU/upload %5.1f us (committer %4.1f)   p99 %5.2f ms   peak RSS %6d KiB' % (
    '$1', d['results_per_s'], us($t1 - $t0), us($c1 - $c0), d['p99_ms'], $rss))"
}

for ((r = 1; r <= rounds; r++)); do
  one A "$a"
  one B "$b"
done
