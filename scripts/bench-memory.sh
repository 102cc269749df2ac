#!/usr/bin/env bash
# Memory benchmark (not a test): the aggregator's peak RSS while it receives a 2 GiB plain
# upload and a tarball that expands to a 2 GiB file, then seals both. Needs curl, python3 and
# GNU time (/usr/bin/time). Usage: cargo build --release --locked && scripts/bench-memory.sh
set -euo pipefail
B="$(cd "$(dirname "$0")/.." && pwd)/target/release/buoy"
[ -x "$B" ] || { echo "build first: cargo build --release --locked" >&2; exit 1; }
W=$(mktemp -d); trap 'rm -rf "$W"' EXIT; cd "$W"
python3 - <<'PY'
import gzip, io, tarfile
class Zeros(io.RawIOBase):
    def __init__(s, n): s.n = n
    def readable(s): return True
    def readinto(s, b):
        k = min(len(b), s.n); b[:k] = bytes(k); s.n -= k; return k
with gzip.open("big.tar.gz", "wb", compresslevel=1) as g:
    with tarfile.open(fileobj=g, mode="w|") as t:
        ti = tarfile.TarInfo("big.bin"); ti.size = 2 << 30
        t.addfile(ti, io.BufferedReader(Zeros(ti.size)))
PY
PORT=${PORT:-18090}
/usr/bin/time -v "$B" aggregator --insecure-http --expect plain=n1 --expect tgz=n1 \
  --bind 127.0.0.1:$PORT --output "$W/out" 2> agg.log > /dev/null &
sleep 1
head -c $((2<<30)) /dev/zero | curl -s -o /dev/null -w 'plain 2 GiB upload: %{http_code} in %{time_total}s\n' -T - "http://127.0.0.1:$PORT/api/v1/results/by-node/n1/plain"
curl -s -o /dev/null -w 'tar.gz expanding to 2 GiB: %{http_code} in %{time_total}s\n' -T big.tar.gz -H 'Content-Type: application/gzip' "http://127.0.0.1:$PORT/api/v1/results/by-node/n1/tgz"
wait
grep -E "Maximum resident" agg.log
