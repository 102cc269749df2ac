#!/usr/bin/env bash
# Issue 2 acceptance, by hand: curl against the release binary (needs curl and python3).
# Usage: cargo build --release --locked && scripts/accept-foundation.sh
set -u
B=${B:-$(cd "$(dirname "$0")/.." && pwd)/target/release/buoy}
[ -x "$B" ] || { echo "build first: cargo build --release --locked" >&2; exit 1; }
W=$(mktemp -d); cd "$W"
python3 - <<'PY'
import tarfile, io, gzip
def tgz(name, entries):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        for n, kind, data in entries:
            ti = tarfile.TarInfo(n)
            if kind == "file":
                ti.size = len(data); t.addfile(ti, io.BytesIO(data))
            else:
                ti.type = tarfile.SYMTYPE; ti.linkname = "/etc/passwd"; t.addfile(ti)
    open(name, "wb").write(buf.getvalue())
tgz("good.tar.gz", [("hello.txt", "file", b"hello"), ("sub/x.txt", "file", b"x")])
tgz("dotdot.tar.gz", [("../../escape.txt", "file", b"x")])
tgz("abs.tar.gz", [("/tmp/buoy-abs-escape.txt", "file", b"x")])
tgz("link.tar.gz", [("link", "sym", b"")])
PY
code() { curl -s -o /dev/null -w '%{http_code}' "$@"; }
$B aggregator --insecure-http --no-exit --expect p=n1,n2 --expect e2e=global --bind 127.0.0.1:18080 --output "$W/out" 2>agg.log &
AGG=$!; sleep 1
U=http://127.0.0.1:18080
echo "gzip PUT:            $(code -X PUT -H 'Content-Type: application/gzip' --data-binary @good.tar.gz $U/api/v1/results/by-node/n1/p)"
echo "extracted:           $(cd out/*/plugins/p/results/n1 && find . -type f | sort | tr '\n' ' ')"
echo "same again:          $(code -X PUT -H 'Content-Type: application/gzip' --data-binary @good.tar.gz $U/api/v1/results/by-node/n1/p)"
echo "unknown node:        $(code -X PUT --data-binary x $U/api/v1/results/by-node/n9/p)"
echo "progress by-node:    $(code -X POST -d '{"msg":"n2 half","total":4,"completed":2}' $U/api/v1/progress/by-node/n2/p)"
echo "progress global:     $(code -X POST -d '{"msg":"e2e half","total":10,"completed":5}' $U/api/v1/progress/global/e2e)"
echo "bad progress JSON:   $(code -X POST -d '{oops' $U/api/v1/progress/global/e2e)"
echo "status progress:     $(curl -s $U/api/v1/status | python3 -c 'import json,sys; s=json.load(sys.stdin); print([ (p["plugin"],p["node"],p.get("progress",{}).get("msg")) for p in s["plugins"]])')"
for t in dotdot abs link; do echo "unsafe $t:       $(code -X PUT -H 'Content-Type: application/gzip' --data-binary @$t.tar.gz $U/api/v1/results/by-node/n2/p) $(curl -s -X PUT -H 'Content-Type: application/gzip' --data-binary @$t.tar.gz $U/api/v1/results/by-node/n2/p)"; done
echo "files after unsafe:  $(find out -path '*n2*' | wc -l) under out for n2; escape files: $(ls /tmp/buoy-abs-escape.txt "$W/escape.txt" ../escape.txt 2>/dev/null | wc -l)"
echo "last results:        $(code -X PUT --data-binary two $U/api/v1/results/by-node/n2/p) $(code -X PUT --data-binary e2e $U/api/v1/results/global/e2e)"
sleep 1
S=$(curl -s $U/api/v1/status)
echo "status:              $(echo "$S" | python3 -c 'import json,sys; s=json.load(sys.stdin); print(s["status"], s["tar-info"]["name"], s["tar-info"]["sha256"])')"
echo "sha256sum:           $(sha256sum out/*.tar.gz | cut -d' ' -f1)"
kill -TERM $AGG; wait $AGG; echo "exit after SIGTERM:  $?"
# Without --no-exit the process exits by itself once the last result lands.
$B aggregator --insecure-http --expect e2e=global --bind 127.0.0.1:18082 --output "$W/out2" >stdout2 2>agg2.log &
A2=$!; sleep 1
code -X PUT --data-binary r http://127.0.0.1:18082/api/v1/results/global/e2e >/dev/null
wait $A2; echo "exit on its own:     $? -> $(cat stdout2)"
# mTLS
$B aggregator --certs "$W/certs" --advertise 127.0.0.1 --expect p=n1 --expect q=n1 --bind 127.0.0.1:18081 --output "$W/out3" 2>agg3.log &
A3=$!; sleep 1
C="$W/certs"
echo "p cert -> p:         $(code --cacert $C/ca.pem --cert $C/p.crt.pem --key $C/p.key.pem -X PUT --data-binary x https://127.0.0.1:18081/api/v1/results/by-node/n1/p)"
echo "p cert -> q:         $(code --cacert $C/ca.pem --cert $C/p.crt.pem --key $C/p.key.pem -X PUT --data-binary x https://127.0.0.1:18081/api/v1/results/by-node/n1/q)"
curl -s --cacert $C/ca.pem -X PUT --data-binary x https://127.0.0.1:18081/api/v1/results/by-node/n1/q -o /dev/null; echo "no client cert:      curl exit $? ($(code --cacert $C/ca.pem -X PUT --data-binary x https://127.0.0.1:18081/api/v1/results/by-node/n1/q))"
echo "key format:          $(head -1 $C/p.key.pem)"
kill -TERM $A3; wait $A3 2>/dev/null
rm -rf "$W"
