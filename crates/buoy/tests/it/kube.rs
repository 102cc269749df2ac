//! The Kubernetes-facing commands as an operator runs them: `buoy manifest` through
//! `kubectl apply --dry-run=client`, `buoy splat` as `sonobuoy retrieve` runs it, `buoy status`
//! against a standalone aggregator, and the real-cluster suite (only with
//! `BUOY_TEST_KUBECONFIG`).

use std::convert::Infallible;
use std::process::Stdio;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response};
use tokio::io::AsyncWriteExt;

use crate::cli::buoy;
use crate::*;

fn json_response(code: u16, v: serde_json::Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(v.to_string())))
        .unwrap()
}

fn resources(list: &[(&str, &str, bool)]) -> serde_json::Value {
    serde_json::Value::Array(
        list.iter()
            .map(|(name, kind, namespaced)| {
                serde_json::json!({"name": name, "singularName": "", "namespaced": namespaced, "kind": kind,
                    "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]})
            })
            .collect(),
    )
}

/// The discovery documents kubectl needs to map kinds to resources, and 404 for every object,
/// so a client-side dry run "creates" each one. No cluster behind it.
fn discovery(path: &str) -> Response<Full<Bytes>> {
    use serde_json::json;
    match path {
        "/api" => json_response(
            200,
            json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]}),
        ),
        "/apis" => json_response(
            200,
            json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": [
            {"name": "apps", "versions": [{"groupVersion": "apps/v1", "version": "v1"}], "preferredVersion": {"groupVersion": "apps/v1", "version": "v1"}},
            {"name": "rbac.authorization.k8s.io", "versions": [{"groupVersion": "rbac.authorization.k8s.io/v1", "version": "v1"}], "preferredVersion": {"groupVersion": "rbac.authorization.k8s.io/v1", "version": "v1"}}]}),
        ),
        "/api/v1" => json_response(
            200,
            json!({"kind": "APIResourceList", "groupVersion": "v1", "resources": resources(&[
            ("namespaces", "Namespace", false), ("serviceaccounts", "ServiceAccount", true), ("configmaps", "ConfigMap", true),
            ("pods", "Pod", true), ("services", "Service", true), ("secrets", "Secret", true), ("nodes", "Node", false)])}),
        ),
        "/apis/apps/v1" => json_response(
            200,
            json!({"kind": "APIResourceList", "groupVersion": "apps/v1", "resources": resources(&[("daemonsets", "DaemonSet", true)])}),
        ),
        "/apis/rbac.authorization.k8s.io/v1" => json_response(
            200,
            json!({"kind": "APIResourceList", "groupVersion": "rbac.authorization.k8s.io/v1", "resources": resources(&[
            ("clusterroles", "ClusterRole", false), ("clusterrolebindings", "ClusterRoleBinding", false)])}),
        ),
        _ => json_response(
            404,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": format!("{path} not found")}),
        ),
    }
}

async fn spawn_discovery_stub() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let svc =
                    hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
                        Ok::<_, Infallible>(discovery(req.uri().path()))
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    addr
}

fn kubectl_present() -> bool {
    std::process::Command::new("kubectl")
        .args(["version", "--client"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[tokio::test]
async fn buoy_manifest_passes_kubectl_apply_dry_run_client() {
    if !kubectl_present() {
        eprintln!(
            "SKIPPED: kubectl is not installed (.ci/run installs Debian's kubernetes-client)"
        );
        return;
    }
    let manifest = buoy()
        .args([
            "manifest",
            "--plugin",
            "../../examples/quickstart",
            "--image",
            "registry.example/buoy:test",
        ])
        .output()
        .await
        .unwrap();
    succeeded(&manifest);
    let addr = spawn_discovery_stub().await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!("apiVersion: v1\nkind: Config\nclusters: [{{name: stub, cluster: {{server: 'http://{addr}'}}}}]\ncontexts: [{{name: stub, context: {{cluster: stub, user: u}}}}]\ncurrent-context: stub\nusers: [{{name: u, user: {{}}}}]\n"),
    )
    .unwrap();
    // Schema validation needs the API server's OpenAPI document, which no stub can give
    // honestly; the objects' schema is checked by the typed round trip in buoy-kube instead.
    let mut kubectl = tokio::process::Command::new("kubectl")
        .args([
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "apply",
            "--dry-run=client",
            "--validate=false",
            "-f",
            "-",
        ])
        .env("HOME", dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    kubectl
        .stdin
        .take()
        .unwrap()
        .write_all(&manifest.stdout)
        .await
        .unwrap();
    let out = within(kubectl.wait_with_output()).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "kubectl failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "namespace/sonobuoy created (dry run)",
        "serviceaccount/sonobuoy-serviceaccount created (dry run)",
        "clusterrole.rbac.authorization.k8s.io/sonobuoy-serviceaccount-sonobuoy created (dry run)",
        "clusterrolebinding.rbac.authorization.k8s.io/sonobuoy-serviceaccount-sonobuoy created (dry run)",
        "configmap/sonobuoy-config-cm created (dry run)",
        "configmap/sonobuoy-plugins-cm created (dry run)",
        "pod/sonobuoy created (dry run)",
        "service/sonobuoy-aggregator created (dry run)",
    ] {
        assert!(stdout.lines().any(|l| l == line), "missing {line:?} in:\n{stdout}");
    }
}

#[tokio::test]
async fn splat_writes_every_tarball_by_basename_with_its_mode_and_mtime() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("202611241200_sonobuoy_a.tar.gz");
    std::fs::write(&a, b"first").unwrap();
    std::fs::write(dir.path().join("202611241300_sonobuoy_b.tar.gz"), b"second").unwrap();
    std::fs::write(dir.path().join("notes.txt"), b"not a tarball").unwrap();
    std::fs::create_dir(dir.path().join("run-dir")).unwrap();
    std::fs::set_permissions(&a, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let out = buoy()
        .args(["splat", dir.path().to_str().unwrap()])
        .output()
        .await
        .unwrap();
    assert!(out.status.success());
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(&out.stdout[..]));
    let mut seen = Vec::new();
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().to_string_lossy().into_owned();
        let mut body = String::new();
        std::io::Read::read_to_string(&mut e, &mut body).unwrap();
        let mtime = std::fs::metadata(dir.path().join(&name))
            .unwrap()
            .modified()
            .unwrap()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert_eq!(e.header().mtime().unwrap(), mtime);
        seen.push((name, e.header().mode().unwrap() & 0o777, body));
    }
    assert_eq!(
        seen,
        [
            (
                "202611241200_sonobuoy_a.tar.gz".to_string(),
                0o600,
                "first".to_string()
            ),
            (
                "202611241300_sonobuoy_b.tar.gz".to_string(),
                0o644,
                "second".to_string()
            ),
        ]
    );
}

#[tokio::test]
async fn status_url_reads_a_standalone_aggregator_and_exits_zero_unless_failed() {
    let t = spawn_aggregator(&[("e2e", "global"), ("logs", "n1")], insecure(), None, None).await;
    put(
        &t.client(),
        "/api/v1/results/global/e2e",
        &[],
        b"ok".to_vec(),
    )
    .await;
    let out = buoy()
        .args(["status", "--url", &t.url()])
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        text.starts_with("PLUGIN   STATUS     RESULT   COUNT   PROGRESS\n"),
        "{text}"
    );
    assert!(text.contains("e2e      complete            1"), "{text}");
    assert!(text.contains("logs     running             1"), "{text}");
    let out = buoy()
        .args(["status", "--url", &t.url(), "--json"])
        .output()
        .await
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["status"], "running");
}

/// `buoy status --url` on a run whose status is larger than the client's 64 KiB default read
/// (it printed "the status does not decode" past about 700 keys) and streamed (over 4,096 keys).
#[tokio::test]
async fn status_url_reads_a_large_streamed_status_whole() {
    let nodes: Vec<String> = (0..5_000).map(|i| format!("node-{i:05}")).collect();
    let expected: Vec<(&str, &str)> = nodes.iter().map(|n| ("logs", n.as_str())).collect();
    let t = spawn_aggregator(&expected, insecure(), None, None).await;
    let out = buoy()
        .args(["status", "--url", &t.url(), "--json"])
        .output()
        .await
        .unwrap();
    succeeded(&out);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["plugins"].as_array().unwrap().len(), 5_000);
    let out = buoy()
        .args(["status", "--url", &t.url()])
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("logs     running"), "{text}");
    t.stop().await;
}

/// An API server that knows one aggregator pod and forwards its port 8081 (the status page) to
/// `target` over the websocket port-forward protocol (`v4.channel.k8s.io`), as a kubelet would.
/// The forwards numbered in `cut` (from 1) break off once `cut_after` bytes came back.
async fn spawn_port_forward_stub(
    target: SocketAddr,
    cut: &'static [usize],
    cut_after: usize,
) -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::Ordering;
    let forwards = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = forwards.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    move |mut req: Request<hyper::body::Incoming>| {
                        let count = count.clone();
                        async move {
                            let path = req.uri().path().to_string();
                            if path == "/api/v1/namespaces/sonobuoy/pods" {
                                return Ok::<_, Infallible>(json_response(
                                    200,
                                    serde_json::json!({"kind": "PodList", "apiVersion": "v1", "metadata": {},
                                "items": [{"metadata": {"name": "sonobuoy", "namespace": "sonobuoy", "labels": {"sonobuoy-component": "aggregator"}}}]}),
                                ));
                            }
                            assert_eq!(
                                path,
                                "/api/v1/namespaces/sonobuoy/pods/sonobuoy/portforward"
                            );
                            assert_eq!(
                                req.uri().query().map(|q| q.trim_start_matches('&')),
                                Some("ports=8081")
                            );
                            let key = req.headers()["sec-websocket-key"].as_bytes().to_vec();
                            let n = count.fetch_add(1, Ordering::SeqCst) + 1;
                            let upgrade = hyper::upgrade::on(&mut req);
                            tokio::spawn(relay(
                                upgrade,
                                target,
                                cut.contains(&n).then_some(cut_after),
                            ));
                            Ok(Response::builder()
                                .status(101)
                                .header("upgrade", "websocket")
                                .header("connection", "Upgrade")
                                .header("sec-websocket-protocol", "v4.channel.k8s.io")
                                .header(
                                    "sec-websocket-accept",
                                    tokio_tungstenite::tungstenite::handshake::derive_accept_key(
                                        &key,
                                    ),
                                )
                                .body(Full::new(Bytes::new()))
                                .unwrap())
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                    .with_upgrades()
                    .await;
            });
        }
    });
    (addr, forwards)
}

/// One forwarded connection: channel 0 carries data, channel 1 errors; each starts with a
/// frame naming the port.
async fn relay(upgrade: hyper::upgrade::OnUpgrade, target: SocketAddr, cut_after: Option<usize>) {
    use futures_util::{SinkExt, StreamExt};
    use tokio::io::AsyncReadExt;
    use tokio_tungstenite::tungstenite::Message;
    let io = hyper_util::rt::TokioIo::new(upgrade.await.unwrap());
    let ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
        io,
        tokio_tungstenite::tungstenite::protocol::Role::Server,
        None,
    )
    .await;
    let (mut tx, mut rx) = ws.split();
    let port = 8081u16.to_le_bytes();
    for ch in [0u8, 1] {
        tx.send(Message::binary(vec![ch, port[0], port[1]]))
            .await
            .unwrap();
    }
    let tcp = match tokio::net::TcpStream::connect(target).await {
        Ok(tcp) => tcp,
        Err(e) => {
            // As a kubelet does: the reason on the error channel, then close.
            let mut frame = vec![1u8];
            frame.extend_from_slice(format!("cannot connect to port 8081: {e}").as_bytes());
            let _ = tx.send(Message::binary(frame)).await;
            let _ = tx.send(Message::Close(None)).await;
            return;
        }
    };
    let (mut tcp_rx, mut tcp_tx) = tcp.into_split();
    let to_pod = async move {
        while let Some(Ok(m)) = rx.next().await {
            match m {
                Message::Binary(b) if b.len() > 1 && b[0] == 0 => {
                    if tcp_tx.write_all(&b[1..]).await.is_err() {
                        return;
                    }
                }
                Message::Binary(_) => {}
                _ => return,
            }
        }
    };
    let from_pod = async move {
        let mut buf = vec![0u8; 16 * 1024];
        let mut sent = 0;
        loop {
            let n = tcp_rx.read(&mut buf).await.unwrap_or(0);
            if n == 0 || cut_after.is_some_and(|c| sent >= c) {
                // A cut drops the socket without a close frame, as a broken link would.
                if n == 0 {
                    let _ = tx.send(Message::Close(None)).await;
                }
                return;
            }
            sent += n;
            let mut frame = Vec::with_capacity(n + 1);
            frame.push(0);
            frame.extend_from_slice(&buf[..n]);
            if tx.send(Message::binary(frame)).await.is_err() {
                return;
            }
        }
    };
    tokio::select! { _ = to_pod => {}, _ = from_pod => {} }
}

#[tokio::test]
async fn retrieve_through_an_api_server_port_forward_resumes_after_a_cut_and_checks_the_sha256() {
    let t = spawn_aggregator(&[("p", "global")], insecure(), None, None).await;
    let cd = [("content-disposition", "attachment;filename=blob")];
    let body = crate::results::noise(300_000);
    assert_eq!(
        put(&t.client(), "/api/v1/results/global/p", &cd, body)
            .await
            .status,
        200
    );
    t.complete().await;
    let want = t.agg.status().tar_info;

    // The status, then ranges of 64 KiB; the 3rd forward (the 2nd range) breaks off.
    let (api, forwards) = spawn_port_forward_stub(t.addr, &[3], 10_000).await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!("apiVersion: v1\nkind: Config\nclusters: [{{name: c, cluster: {{server: 'http://{api}'}}}}]\nusers: [{{name: u, user: {{}}}}]\ncontexts: [{{name: x, context: {{cluster: c, user: u}}}}]\ncurrent-context: x\n"),
    )
    .unwrap();
    let out = dir.path().join("got");
    let got = buoy()
        .args([
            "retrieve",
            "-n",
            "sonobuoy",
            "-q",
            "--range-bytes",
            "65536",
            "--kubeconfig",
        ])
        .arg(&kubeconfig)
        .arg(&out)
        .output()
        .await
        .unwrap();
    let err = crate::results::assert_retrieved(&got, &out, &want);
    assert!(err.contains("through the API server"), "{err}");
    assert!(err.contains("1 requests tried again"), "{err}");
    let ranges = (want.size as usize).div_ceil(65536);
    assert!(ranges >= 4, "{ranges}");
    assert!(forwards.load(std::sync::atomic::Ordering::SeqCst) > ranges);

    // No aggregator pod answers on the status page port: a clear error, nothing written.
    let (dead, _) = spawn_port_forward_stub("127.0.0.1:9".parse().unwrap(), &[], 0).await;
    std::fs::write(
        &kubeconfig,
        std::fs::read_to_string(&kubeconfig)
            .unwrap()
            .replace(&api.to_string(), &dead.to_string()),
    )
    .unwrap();
    let none = dir.path().join("none");
    let failed = buoy()
        .args(["retrieve", "-q", "--kubeconfig"])
        .arg(&kubeconfig)
        .arg(&none)
        .output()
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&failed.stderr);
    assert_eq!(failed.status.code(), Some(1), "{err}");
    assert!(err.contains("use `sonobuoy retrieve`"), "{err}");
}
