#!/usr/bin/env bash
# Small uploads, Buoy against nginx's PUT-to-disk in the same run (docs/BENCHMARKS.md).
# Rounds alternate: a fresh `buoy aggregator` (plain HTTP, then mTLS with a new connection per
# upload), then nginx (scripts/nginx-put.sh) storing every body, then nginx answering 200 and
# storing nothing (what the load generator reaches on these cores), each loaded by `buoy bench`.
# Prints one line per server and round: results/s, p99, and the aggregator's peak RSS (VmHWM)
# after sealing.
# Usage: scripts/bench-small.sh [NODES] [ROUNDS]     (needs nginx-core for the nginx rows)
#        SIZE=104857600 scripts/bench-small.sh 100 1  (100 × 100 MiB; each run's files are
#        deleted after it, since a large run fills gigabytes and deleting a hundred files does
#        not slow the next run the way deleting thousands does)
set -euo pipefail
cd "$(dirname "$0")/.."
nodes="${1:-10000}"; rounds="${2:-3}"; size="${SIZE:-10240}"
cargo build --release --locked -q
buoy="$PWD/target/release/buoy"
work="$(mktemp -d)"; chmod 755 "$work" # nginx's workers run as another user
trap 'kill $(jobs -p) 2>/dev/null; for p in "$work"/ngx-*/nginx.pid; do [ -f "$p" ] && kill "$(cat "$p")"; done; rm -rf "$work"' EXIT
# --expect takes at most ~128 KiB per argument: split the node list.
expect=()
for ((s = 0; s < nodes; s += 5000)); do
  e=$((s + 5000 < nodes ? s + 5000 - 1 : nodes - 1))
  expect+=("--expect=p=$(seq -f 'n%05g' "$s" "$e" | paste -sd,)")
done
runs=0
# Let earlier deletions on this file system age out first (see run_buoy).
sync; sleep 35
field() { python3 -c "import json,sys; d=json.load(sys.stdin); print(d['$1'])"; }

run_buoy() { # $1: label, $2...: extra aggregator flags; then bench flags after --
  local label="$1"; shift
  local agg=() bench=()
  while [ "$1" != "--" ]; do agg+=("$1"); shift; done; shift; bench=("$@")
  # A new directory each run, nothing deleted until the end: ext4 is slow to create inodes for
  # about 30 s after many were deleted, which would charge one run for the previous one.
  out="$work/out-$((++runs))"; mkdir -p "$out"; : >"$work/agg.log"
  # The previous server's files are written back first, not during this run.
  sync
  "$buoy" aggregator --bind 127.0.0.1:18181 --output "$out" --no-exit "${agg[@]}" "${expect[@]}" >/dev/null 2>"$work/agg.log" &
  local pid=$!
  until grep -q "listening on" "$work/agg.log"; do sleep 0.1; done
  local json; json="$("$buoy" bench --nodes "$nodes" --size "$size" -c 50 --json "${bench[@]}")"
  until ls "$out"/*.tar.gz >/dev/null 2>&1; do sleep 0.1; done
  local rss; rss="$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")"
  kill -INT "$pid"; wait "$pid" 2>/dev/null || true
  [ "$size" -le 1048576 ] || rm -rf "$out"
  printf '%-28s results/s %7.0f   MB/s %6.0f   p99 %7.2f ms   peak RSS %6d KiB\n' "$label" \
    "$(echo "$json" | field results_per_s)" "$(echo "$json" | field mb_per_s)" \
    "$(echo "$json" | field p99_ms)" "$rss"
}

run_nginx() { # $1: label, $2: nginx's directory, $3: 1 to answer 200 and store nothing
  NGINX_DISCARD="$3" scripts/nginx-put.sh 18182 "$2" >/dev/null; sync
  local json; json="$("$buoy" bench --url http://127.0.0.1:18182 --nodes "$nodes" --size "$size" -c 50 --json || true)"
  local pid; pid="$(cat "$2/nginx.pid")"; kill "$pid"; rm -f "$2/nginx.pid"
  # With reuseport a new nginx could share the port with this one while it shuts down.
  while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
  [ "$size" -le 1048576 ] || rm -rf "$2/data"
  printf '%-28s results/s %7.0f   MB/s %6.0f   p99 %7.2f ms\n' "$1" \
    "$(echo "$json" | field results_per_s)" "$(echo "$json" | field mb_per_s)" \
    "$(echo "$json" | field p99_ms)"
}

for ((r = 1; r <= rounds; r++)); do
  echo "round $r ($nodes × $size bytes, 50 in flight)"
  run_buoy "buoy, HTTP keep-alive" --insecure-http -- --url http://127.0.0.1:18181
  rm -rf "$work/certs"
  "$buoy" certs init "$work/certs" --advertise 127.0.0.1 2>/dev/null
  "$buoy" certs plugin "$work/certs" p 2>/dev/null
  run_buoy "buoy, mTLS new conn/upload" --certs "$work/certs" --advertise 127.0.0.1 -- \
    --url https://127.0.0.1:18181 --certs "$work/certs" --new-conn
  if command -v nginx >/dev/null; then
    run_nginx "nginx PUT, HTTP keep-alive" "$work/ngx-$r" 0
    # The load generator's ceiling on these cores: a server that stores nothing.
    run_nginx "nginx, stores nothing" "$work/ngx-discard-$r" 1
  fi
done
