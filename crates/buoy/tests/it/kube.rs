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
    assert!(
        manifest.status.success(),
        "{}",
        String::from_utf8_lossy(&manifest.stderr)
    );
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

/// The end-to-end suite against a real API server. With no kubelet there, it plays the nodes
/// and the pods itself. Skips, saying why, without `BUOY_TEST_KUBECONFIG`.
#[tokio::test]
async fn real_cluster_end_to_end() {
    let Ok(kubeconfig) = std::env::var("BUOY_TEST_KUBECONFIG") else {
        eprintln!("SKIPPED real_cluster_end_to_end: set BUOY_TEST_KUBECONFIG to a kubeconfig of a disposable cluster (README: 'Testing against a real cluster')");
        return;
    };
    crate::real_cluster::run(std::path::Path::new(&kubeconfig)).await;
}
