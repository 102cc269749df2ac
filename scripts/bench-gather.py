#!/usr/bin/env python3
"""Peak memory of an in-cluster aggregator's gathering at N nodes, against a synthetic API server.

Serves N Node objects (about 4 KB each, with images and managedFields) and N kube-system pods
(about 9 KB each, one per node, as a DaemonSet makes), each with a 10 KB log, plus discovery,
the version and the aggregator pod. Runs `buoy aggregator` in in-cluster mode with no plugins
(so the run completes at once and gathers), reads its peak RSS (VmHWM) from /proc, and prints
it with the requests served, the time taken and what landed in the tarball. Not a real control
plane: it measures Buoy's side only.

    cargo build --release --locked && scripts/bench-gather.py [NODES]     (default 5000)
"""

import http.server
import json
import os
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import urllib.parse

NODES = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
NS = "sonobuoy"
REQUESTS = {"count": 0}


def node(i):
    images = [{"names": [f"registry.example/img-{i}-{k}@sha256:{'a' * 64}", f"img-{k}:v1"],
               "sizeBytes": 123456789} for k in range(12)]
    return {"metadata": {"name": f"n{i:05d}", "uid": f"uid-node-{i}", "resourceVersion": "1",
                         "labels": {"kubernetes.io/hostname": f"n{i:05d}", "kubernetes.io/os": "linux"},
                         "managedFields": [{"manager": "kubelet", "operation": "Update",
                                            "fieldsV1": {"f:status": {"f:images": {}, "x": "y" * 800}}}]},
            "spec": {"podCIDR": "10.0.0.0/24"},
            "status": {"conditions": [{"type": "Ready", "status": "True" if i % 50 else "False",
                                       "reason": "KubeletReady", "message": "kubelet is posting ready status"}],
                       "images": images,
                       "nodeInfo": {"kubeletVersion": "v1.26.3", "osImage": "Debian"}}}


def pod(i):
    env = [{"name": f"VAR_{k}", "value": "v" * 40} for k in range(30)]
    return {"metadata": {"name": f"ds-{i:05d}", "namespace": "kube-system", "uid": f"uid-pod-{i}",
                         "labels": {"app": "ds"},
                         "managedFields": [{"manager": "kube-controller-manager", "fieldsV1": {"x": "y" * 3000}}]},
            "spec": {"nodeName": f"n{i:05d}", "containers": [{"name": "c", "image": "ds:1", "env": env}]},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}}


AGG_POD = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "sonobuoy", "namespace": NS, "uid": "agg-uid",
                        "labels": {"sonobuoy-component": "aggregator"}},
           "spec": {"containers": [{"name": "kube-sonobuoy"}]},
           "status": {"phase": "Running"}}

LOG = ("I1125 10:00:00.000000 1 main.go:1] a line of a log that is long enough to be typical\n" * 120
       + "E1125 10:00:01.000000 1 main.go:2] an error\n")


def page(kind, make, total, query):
    limit = int(query.get("limit", ["500"])[0])
    start = int(query.get("continue", ["0"])[0] or 0)
    end = min(total, start + limit)
    meta = {"resourceVersion": "7"}
    if end < total:
        meta["continue"] = str(end)
    return {"kind": kind, "apiVersion": "v1", "metadata": meta, "items": [make(i) for i in range(start, end)]}


def answer(method, path, query):
    empty = lambda kind: {"kind": kind, "apiVersion": "v1", "metadata": {}, "items": []}
    if path == "/api":
        return {"kind": "APIVersions", "versions": ["v1"]}
    if path == "/apis":
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": []}
    if path == "/version":
        return {"major": "1", "minor": "26", "gitVersion": "v1.26.3"}
    if path == "/api/v1":
        res = lambda n, k, ns: {"name": n, "kind": k, "namespaced": ns, "verbs": ["get", "list"]}
        return {"kind": "APIResourceList", "groupVersion": "v1",
                "resources": [res("nodes", "Node", False), res("namespaces", "Namespace", False),
                              res("pods", "Pod", True), res("events", "Event", True)]}
    if path == "/api/v1/nodes":
        return page("NodeList", node, NODES, query)
    if path == "/api/v1/namespaces":
        return {"kind": "NamespaceList", "apiVersion": "v1", "metadata": {},
                "items": [{"metadata": {"name": n}} for n in ("kube-system", NS)]}
    if path == "/api/v1/namespaces/kube-system/pods":
        return page("PodList", pod, NODES, query)
    if path == f"/api/v1/namespaces/{NS}/pods":
        return {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": [AGG_POD]}
    if path == f"/api/v1/namespaces/{NS}/pods/sonobuoy":
        return AGG_POD
    if path.endswith("/log"):
        return LOG
    if path.endswith("/events"):
        return empty("EventList")
    return None


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def handle_any(self):
        REQUESTS["count"] += 1
        n = int(self.headers.get("content-length") or 0)
        if n:
            self.rfile.read(n)
        u = urllib.parse.urlparse(self.path)
        body = answer(self.command, u.path, urllib.parse.parse_qs(u.query))
        code = 200
        if body is None:
            code, body = 404, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404,
                               "reason": "NotFound", "message": u.path}
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        self.send_response(code)
        self.send_header("content-type", "text/plain" if isinstance(body, str) else "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_PATCH = do_POST = do_DELETE = handle_any


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    binary = os.path.join(root, "target/release/buoy")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    api = f"http://127.0.0.1:{server.server_address[1]}"
    work = tempfile.mkdtemp(prefix="bench-gather-")
    kubeconfig = os.path.join(work, "kubeconfig")
    with open(kubeconfig, "w") as f:
        f.write(f"apiVersion: v1\nkind: Config\nclusters: [{{name: c, cluster: {{server: '{api}'}}}}]\n"
                "users: [{name: u, user: {}}]\ncontexts: [{name: x, context: {cluster: c, user: u}}]\n"
                "current-context: x\n")
    port = free_port()
    config = os.path.join(work, "config.json")
    with open(config, "w") as f:
        json.dump({"UUID": "5e1d2c3b-4a59-4687-9a8b-7c6d5e4f3a21", "Namespace": NS,
                   "PluginSearchPath": [os.path.join(work, "no-plugins")],
                   "Server": {"bindaddress": "127.0.0.1", "bindport": port,
                              "advertiseaddress": f"127.0.0.1:{port}"}}, f)
    out = os.path.join(work, "out")
    env = dict(os.environ, SONOBUOY_CONFIG=config, BUOY_LOG="warn")
    started = time.time()
    p = subprocess.Popen([binary, "aggregator", "--kubeconfig", kubeconfig, "--output", out],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    hwm = 0
    while p.poll() is None:
        try:
            with open(f"/proc/{p.pid}/status") as s:
                for line in s:
                    if line.startswith("VmHWM:"):
                        hwm = max(hwm, int(line.split()[1]))
        except FileNotFoundError:
            pass
        time.sleep(0.05)
    stdout, stderr = p.communicate()
    took = time.time() - started
    if p.returncode != 0:
        sys.exit(f"buoy exited {p.returncode}: {stderr.decode()[-2000:]}")
    tarball = stdout.decode().strip()
    with tarfile.open(tarball) as t:
        names = t.getnames()
    logs = sum(1 for n in names if n.startswith("podlogs/") and n.endswith(".txt"))
    print(f"nodes: {NODES}, pods: {NODES}, logs gathered: {logs}")
    print(f"requests served: {REQUESTS['count']}, run took {took:.1f} s")
    print(f"tarball: {os.path.getsize(tarball) / 1e6:.1f} MB, "
          f"resources/cluster/core_v1_nodes.json present: {'resources/cluster/core_v1_nodes.json' in names}, "
          f"meta/clusterhealth.json present: {'meta/clusterhealth.json' in names}")
    print(f"peak RSS (VmHWM): {hwm / 1024:.1f} MiB")


if __name__ == "__main__":
    main()
