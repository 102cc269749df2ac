#!/usr/bin/env bash
# Download benchmark (not a test): a standalone aggregator seals a ~2 GiB tarball (a 2 GiB
# upload of random bytes, which gzip cannot shrink), then `GET /api/v1/tarball` is fetched in
# 64 MiB ranges with curl while the server's RSS is sampled. The re-assembled file must match
# the SHA-256 the server advertises. Needs curl and sha256sum; ~7 GiB of free disk in $TMPDIR.
# Usage: cargo build --release --locked && scripts/bench-tarball-download.sh
set -euo pipefail
B="$(cd "$(dirname "$0")/.." && pwd)/target/release/buoy"
[ -x "$B" ] || { echo "build first: cargo build --release --locked" >&2; exit 1; }
W=$(mktemp -d); cd "$W"
PORT=${PORT:-18091}
URL="http://127.0.0.1:$PORT"
"$B" aggregator --insecure-http --expect big=global --no-exit \
  --bind 127.0.0.1:$PORT --output "$W/out" 2> agg.log > /dev/null &
PID=$!
trap 'kill $PID 2>/dev/null; rm -rf "$W"' EXIT
sleep 1
rss() { awk '/^VmRSS/ {print $2}' /proc/$PID/status; }
head -c $((2<<30)) /dev/urandom | curl -sS -o /dev/null -w 'upload of 2 GiB: %{http_code} in %{time_total}s\n' \
  -H 'Content-Disposition: attachment;filename=random.bin' -T - "$URL/api/v1/results/global/big"
t0=$(date +%s)
until curl -sf "$URL/api/v1/status" | grep -q '"sha256":"[0-9a-f]\{64\}"'; do sleep 1; done
echo "sealed in $(( $(date +%s) - t0 ))s"
curl -sSI "$URL/api/v1/tarball" > head.txt
SIZE=$(awk 'tolower($1)=="content-length:" {print $2}' head.txt | tr -d '\r')
SHA=$(awk 'tolower($1)=="x-buoy-tarball-sha256:" {print $2}' head.txt | tr -d '\r')
echo "tarball: $SIZE bytes, advertised sha256 $SHA"
echo "server RSS before download: $(rss) KiB"
# Sample the server's RSS every 0.1 s while the ranges stream.
( while kill -0 $PID 2>/dev/null; do rss >> rss.log; sleep 0.1; done ) & SAMPLER=$!
CHUNK=$((64<<20)); start=0; n=0
: > got.tar.gz
t0=$(date +%s)
while [ "$start" -lt "$SIZE" ]; do
  end=$(( start + CHUNK - 1 )); [ "$end" -ge "$SIZE" ] && end=$(( SIZE - 1 ))
  code=$(curl -sS -r "$start-$end" -o part -w '%{http_code}' "$URL/api/v1/tarball")
  [ "$code" = 206 ] || { echo "range $start-$end: HTTP $code" >&2; exit 1; }
  cat part >> got.tar.gz
  start=$(( end + 1 )); n=$(( n + 1 ))
done
kill $SAMPLER
echo "downloaded in $n ranges in $(( $(date +%s) - t0 ))s"
echo "server RSS during download: max $(sort -n rss.log | tail -1) KiB over $(wc -l < rss.log) samples"
echo "server peak RSS over the whole run (VmHWM): $(awk '/^VmHWM/ {print $2}' /proc/$PID/status) KiB"
GOT=$(sha256sum got.tar.gz | cut -d' ' -f1)
echo "re-assembled sha256 $GOT"
[ "$GOT" = "$SHA" ] && echo "MATCH" || { echo "MISMATCH" >&2; exit 1; }
