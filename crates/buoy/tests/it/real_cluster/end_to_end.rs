//! The end-to-end suite against any real API server (`BUOY_TEST_KUBECONFIG`, else the
//! test control plane, whose kubelet it keeps away from its nodes). It needs no kubelet:
//! it creates Node objects, runs `buoy aggregator` out of the cluster against the API server,
//! plays the plugin pods (a worker process per delivering pod, with the credentials read from
//! the Secrets; an Unschedulable condition patched onto another; a node deleted mid-run) and
//! checks the objects, the annotation, the error results and the cleanup. Setup and checks go
//! through kubectl, so the test binary does not import kube-rs.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Value};

use super::{apply, eventually, get_json, kubectl};
use crate::cli::buoy;

fn b64(s: &str) -> String {
    let out = std::process::Command::new("base64")
        .arg("-d")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = out;
    std::io::Write::write_all(&mut out.stdin.take().unwrap(), s.as_bytes()).unwrap();
    String::from_utf8(out.wait_with_output().unwrap().stdout).unwrap()
}

/// Starts `buoy worker` with the env a kubelet would give the pod's worker container.
fn start_worker(
    k: &Path,
    ns: &str,
    pod_spec: &Value,
    node: &str,
    dir: &Path,
) -> tokio::process::Child {
    let w = pod_spec["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "sonobuoy-worker")
        .unwrap();
    let mut cmd = buoy();
    cmd.arg("worker").arg(if node.is_empty() {
        "global"
    } else {
        "single-node"
    });
    for e in w["env"].as_array().unwrap() {
        let name = e["name"].as_str().unwrap();
        let value = if let Some(v) = e["value"].as_str() {
            v.to_string()
        } else if let Some(r) = e.pointer("/valueFrom/secretKeyRef") {
            let s = get_json(k, &["secret", "-n", ns, r["name"].as_str().unwrap()]);
            b64(s["data"][r["key"].as_str().unwrap()].as_str().unwrap())
        } else {
            node.to_string()
        };
        cmd.env(name, value);
    }
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("out.txt"), "delivered").unwrap();
    std::fs::write(dir.join("done"), dir.join("out.txt").to_str().unwrap()).unwrap();
    cmd.env("SONOBUOY_RESULTS_DIR", dir)
        .env("SONOBUOY_PROGRESS_PORT", "0")
        .env("SONOBUOY_DONE_FILE_DELAY", "0s");
    cmd.spawn().unwrap()
}

/// Deletes the test's namespace and Node objects when the test ends, passed or failed (a
/// failed assertion unwinds through this).
struct Cleanup {
    kubeconfig: std::path::PathBuf,
    ns: String,
    nodes: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let k = self.kubeconfig.as_path();
        let _ = kubectl(k, &["delete", "namespace", &self.ns, "--wait=false"], None);
        for n in &self.nodes {
            let _ = kubectl(
                k,
                &["delete", "node", n, "--ignore-not-found", "--wait=false"],
                None,
            );
        }
    }
}

/// With no kubelet for its nodes, it plays the nodes and the pods itself.
#[tokio::test]
async fn real_cluster_end_to_end() {
    if let Ok(k) = std::env::var("BUOY_TEST_KUBECONFIG") {
        return run(Path::new(&k)).await;
    }
    let Some(c) = super::cluster("real_cluster_end_to_end", Default::default()).await else {
        return;
    };
    run(c.kubeconfig()).await;
}

async fn run(k: &Path) {
    let id = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let ns = format!("buoy-e2e-{id}");
    let nodes = [format!("buoy-e2e-{id}-a"), format!("buoy-e2e-{id}-b")];
    let _cleanup = Cleanup {
        kubeconfig: k.to_path_buf(),
        ns: ns.clone(),
        nodes: nodes.to_vec(),
    };
    apply(
        k,
        &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
    );
    for n in &nodes {
        apply(
            k,
            &json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": n, "labels": {"buoy-e2e": id, "kubernetes.io/os": "linux"}}}),
        );
    }
    // The aggregator pod Buoy annotates and owns everything through; pinned to a node with no
    // kubelet, so it never starts.
    apply(
        k,
        &json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "sonobuoy", "namespace": ns, "labels": {"sonobuoy-component": "aggregator"}},
        "spec": {"nodeName": nodes[0], "containers": [{"name": "kube-sonobuoy", "image": "buoy:e2e"}]}}),
    );
    let (ok, out) = kubectl(
        k,
        &[
            "patch",
            "pod",
            "sonobuoy",
            "-n",
            &ns,
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"phase":"Running"}}"#,
        ],
        None,
    );
    assert!(ok, "{out}");

    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins.d");
    std::fs::create_dir(&plugins).unwrap();
    let pin = json!({"nodeName": nodes[0], "restartPolicy": "Never", "containers": []});
    std::fs::write(plugins.join("a.yaml"), json!({"sonobuoy-config": {"driver": "Job", "plugin-name": "delivers"}, "spec": {"name": "p", "image": "none:0"}, "podSpec": pin}).to_string()).unwrap();
    std::fs::write(plugins.join("b.yaml"), json!({"sonobuoy-config": {"driver": "Job", "plugin-name": "stuck"}, "spec": {"name": "p", "image": "none:0"}, "podSpec": pin}).to_string()).unwrap();
    std::fs::write(plugins.join("c.yaml"), json!({"sonobuoy-config": {"driver": "DaemonSet", "plugin-name": "nodes"}, "spec": {"name": "p", "image": "none:0"},
        "podSpec": {"nodeSelector": {"buoy-e2e": id}, "containers": []}}).to_string()).unwrap();
    let port = buoy_testenv::free_port();
    let config = dir.path().join("config.json");
    std::fs::write(&config, json!({"Namespace": ns, "WorkerImage": "buoy:e2e", "PluginSearchPath": [plugins],
        "Server": {"bindaddress": "127.0.0.1", "bindport": port, "advertiseaddress": format!("127.0.0.1:{port}"), "timeoutseconds": 300}}).to_string()).unwrap();
    let output = dir.path().join("out");
    let mut agg = buoy()
        .args([
            "aggregator",
            "--kubeconfig",
            k.to_str().unwrap(),
            "--output",
            output.to_str().unwrap(),
        ])
        .env("SONOBUOY_CONFIG", &config)
        .spawn()
        .unwrap();

    let pod_of = |plugin: &str| {
        let l = get_json(
            k,
            &[
                "pods",
                "-n",
                &ns,
                "-l",
                &format!("sonobuoy-plugin={plugin}"),
            ],
        );
        l["items"].as_array().and_then(|i| i.first().cloned())
    };
    let delivers = eventually("the delivering plugin's pod", || pod_of("delivers")).await;
    assert_eq!(
        delivers["metadata"]["ownerReferences"][0]["name"],
        "sonobuoy"
    );
    let secret_name = format!(
        "sonobuoy-plugin-delivers-{}",
        delivers["metadata"]["labels"]["sonobuoy-run"]
            .as_str()
            .unwrap()
    );
    let secret = get_json(k, &["secret", "-n", &ns, &secret_name]);
    assert_eq!(secret["type"], "kubernetes.io/tls");
    let mut w1 = start_worker(k, &ns, &delivers["spec"], "", &dir.path().join("w1"));

    let stuck = eventually("the stuck plugin's pod", || pod_of("stuck")).await;
    let (ok, out) = kubectl(
        k,
        &[
            "patch",
            "pod",
            stuck["metadata"]["name"].as_str().unwrap(),
            "-n",
            &ns,
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"conditions":[{"type":"PodScheduled","status":"False","reason":"Unschedulable","message":"0/2 nodes are available"}]}}"#,
        ],
        None,
    );
    assert!(ok, "{out}");

    let ds = eventually("the DaemonSet", || {
        let l = get_json(k, &["daemonsets", "-n", &ns, "-l", "sonobuoy-plugin=nodes"]);
        l["items"].as_array().and_then(|i| i.first().cloned())
    })
    .await;
    let mut w2 = start_worker(
        k,
        &ns,
        &ds["spec"]["template"]["spec"],
        &nodes[0],
        &dir.path().join("w2"),
    );
    // Node b leaves the cluster: its result becomes an error, not a timeout.
    let (ok, out) = kubectl(k, &["delete", "node", &nodes[1]], None);
    assert!(ok, "{out}");

    let status = tokio::time::timeout(Duration::from_secs(240), agg.wait())
        .await
        .expect("the run finished")
        .unwrap();
    assert!(status.success());
    let _ = w1.wait().await;
    let _ = w2.kill().await;

    let run_dir = std::fs::read_dir(&output)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.is_dir() && !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .unwrap();
    assert!(run_dir
        .join("plugins/delivers/results/global/out.txt")
        .is_file());
    assert!(run_dir
        .join("plugins/nodes/results")
        .join(&nodes[0])
        .join("out.txt")
        .is_file());
    let read = |p: &Path| -> Value { serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap() };
    let stuck_err = read(&run_dir.join("plugins/stuck/errors/global/error.json"));
    assert_eq!(
        stuck_err["error"],
        "Can't schedule pod: 0/2 nodes are available"
    );
    assert!(stuck_err["pod"].is_object());
    let gone = read(
        &run_dir
            .join("plugins/nodes/errors")
            .join(&nodes[1])
            .join("error.json"),
    );
    assert!(
        gone["error"]
            .as_str()
            .unwrap()
            .contains("removed from the cluster"),
        "{gone}"
    );

    let agg_pod = get_json(k, &["pod", "-n", &ns, "sonobuoy"]);
    let st: Value = serde_json::from_str(
        agg_pod["metadata"]["annotations"]["sonobuoy.hept.io/status"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(st["status"], "complete");
    assert_eq!(st["tar-info"]["sha256"].as_str().unwrap().len(), 64);
    let left = get_json(k, &["pods", "-n", &ns, "-l", "sonobuoy-component=plugin"]);
    assert!(
        left["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["metadata"]["deletionTimestamp"].is_string()),
        "plugin pods left behind"
    );
    let dss = get_json(k, &["daemonsets", "-n", &ns]);
    assert!(
        dss["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["metadata"]["deletionTimestamp"].is_string()),
        "DaemonSets left behind"
    );
}
