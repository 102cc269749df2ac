//! Buoy against a real control plane: etcd, kube-apiserver, kube-controller-manager and
//! kube-scheduler from `BUOY_TEST_K8S_BIN` (default `/usr/local/kubebuilder/bin`), one per
//! test, with the stand-in kubelet of `buoy-testenv` running pods as local processes
//! (`/sonobuoy` in every container is this build's `buoy`). Without the binaries each test
//! skips with a printed note. Setup and checks go through kubectl where a user would.

mod conformance;
mod end_to_end;
mod failures;
mod quickstart;
mod restarts;
mod scale;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use buoy_testenv::kubelet::ImageSpec;
use buoy_testenv::{ControlPlaneOptions, KubeletOptions, NodeMode, TestCluster};
use serde_json::{json, Value};

use crate::cli::buoy;

pub(super) fn kubectl(kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> (bool, String) {
    let mut c = std::process::Command::new("kubectl");
    c.arg("--kubeconfig").arg(kubeconfig).args(args);
    c.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = c.spawn().expect("kubectl runs");
    if let Some(text) = stdin {
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), text.as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

pub(super) fn apply(k: &Path, v: &Value) {
    let (ok, out) = kubectl(k, &["apply", "-f", "-"], Some(&v.to_string()));
    assert!(ok, "kubectl apply: {out}");
}

pub(super) fn get_json(k: &Path, args: &[&str]) -> Value {
    let mut a = vec!["get"];
    a.extend_from_slice(args);
    a.extend_from_slice(&["-o", "json"]);
    let (ok, out) = kubectl(k, &a, None);
    assert!(ok, "kubectl get {args:?}: {out}");
    serde_json::from_str(&out).unwrap()
}

/// Polls `f` until it gives a value; panics, naming `what`, after `limit` (a bound for a
/// broken run, never the thing waited for).
pub(super) async fn eventually_within<T>(
    what: &str,
    limit: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> T {
    let until = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "gave up waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub(super) async fn eventually<T>(what: &str, f: impl FnMut() -> Option<T>) -> T {
    eventually_within(what, Duration::from_secs(180), f).await
}

/// Held by a test whose aggregator runs in the cluster: every pod shares the host's network
/// here, and the manifest's aggregator listens on the fixed ports 8080 and 8081.
pub(super) static IN_CLUSTER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// What a test changes about its cluster.
#[derive(Default)]
pub(super) struct ClusterOpts {
    /// The kubelet's log endpoint answers this late (gathering takes that long per log).
    pub log_delay: Duration,
    pub control_plane: ControlPlaneOptions,
    /// More images the kubelet knows (the conformance image, say).
    pub images: Vec<ImageSpec>,
}

/// This test's cluster, or `None` (a note printed) without the binaries.
pub(super) async fn cluster(test: &str, o: ClusterOpts) -> Option<TestCluster> {
    let buoy_bin = PathBuf::from(env!("CARGO_BIN_EXE_buoy"));
    let opts = KubeletOptions {
        binds: vec![(PathBuf::from("/sonobuoy"), buoy_bin.clone())],
        images: std::iter::once(ImageSpec {
            name: "buoy".into(),
            entrypoint: vec!["/sonobuoy".into()],
            ..Default::default()
        })
        .chain(o.images)
        .collect(),
        log_delay: o.log_delay,
        play_concurrency: 32,
        ..Default::default()
    };
    TestCluster::start(test, o.control_plane, opts)
        .await
        .expect("the test control plane starts")
}

/// A test's namespace with the aggregator pod Buoy annotates and owns plugins through,
/// pinned to a node whose kubelet is down (the aggregator itself runs out of the cluster).
pub(super) async fn namespace_with_anchor(c: &TestCluster, ns: &str) {
    let k = c.kubeconfig();
    let anchor = format!("{ns}-anchor");
    c.add_nodes(std::slice::from_ref(&anchor), NodeMode::Down, &[])
        .await
        .unwrap();
    apply(
        k,
        &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
    );
    apply(
        k,
        &json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "sonobuoy-serviceaccount", "namespace": ns}}),
    );
    // Pods are admitted only once the namespace has its default service account.
    eventually("the namespace's default service account", || {
        kubectl(k, &["get", "serviceaccount", "default", "-n", ns], None)
            .0
            .then_some(())
    })
    .await;
    apply(
        k,
        &json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "sonobuoy", "namespace": ns, "labels": {"sonobuoy-component": "aggregator"}},
        "spec": {"nodeName": anchor, "containers": [{"name": "kube-sonobuoy", "image": "buoy:test"}]}}),
    );
    let (ok, out) = kubectl(
        k,
        &[
            "patch",
            "pod",
            "sonobuoy",
            "-n",
            ns,
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"phase":"Running"}}"#,
        ],
        None,
    );
    assert!(ok, "{out}");
}

/// A plugin manifest: `driver` Job or DaemonSet, the plugin container running `script` with
/// `sh -c`, and the pod spec `pod_spec` (a DaemonSet's node selection goes there).
/// A `Null` pod spec means the driver's default one.
pub(super) fn plugin(name: &str, driver: &str, script: &str, pod_spec: Value) -> Value {
    let mut p = json!({"sonobuoy-config": {"driver": driver, "plugin-name": name, "result-format": "raw"},
        "spec": {"name": "plugin", "image": "busybox:1.36", "command": ["sh", "-c", script]}});
    if !pod_spec.is_null() {
        p["podSpec"] = pod_spec;
    }
    p
}

/// A plugin script that writes `text` as its result and says it is done; a DaemonSet's plugin
/// then sleeps, as a real one must (its pod restarts otherwise).
pub(super) fn delivering(text: &str, sleep: bool) -> String {
    format!(
        "d=${{SONOBUOY_RESULTS_DIR:-/tmp/sonobuoy/results}}; echo '{text}' > $d/out.txt; printf $d/out.txt > $d/done{}",
        if sleep { "; exec sleep 3600" } else { "" }
    )
}

/// `buoy aggregator` out of the cluster (`--kubeconfig`), with a config naming `ns`, the
/// plugins and a free port, writing into `dir/out`.
pub(super) struct OutOfCluster {
    pub child: tokio::process::Child,
    pub output: PathBuf,
}

pub(super) fn config_for(dir: &Path, ns: &str, plugins: &[Value], timeout_secs: u64) -> PathBuf {
    let plugins_dir = dir.join("plugins.d");
    std::fs::create_dir_all(&plugins_dir).unwrap();
    for (i, p) in plugins.iter().enumerate() {
        std::fs::write(plugins_dir.join(format!("p{i}.yaml")), p.to_string()).unwrap();
    }
    let port = buoy_testenv::free_port();
    let config = dir.join("config.json");
    std::fs::write(&config, json!({"Namespace": ns, "WorkerImage": "buoy:test", "PluginSearchPath": [plugins_dir],
        "Server": {"bindaddress": "127.0.0.1", "bindport": port, "advertiseaddress": format!("127.0.0.1:{port}"), "timeoutseconds": timeout_secs}}).to_string()).unwrap();
    config
}

impl OutOfCluster {
    pub fn start(k: &Path, config: &Path, output: &Path, extra: &[&str]) -> Self {
        Self::start_with(buoy(), k, config, output, extra)
    }

    /// The same with another `buoy` command (another build of it).
    pub fn start_with(
        mut cmd: tokio::process::Command,
        k: &Path,
        config: &Path,
        output: &Path,
        extra: &[&str],
    ) -> Self {
        let child = cmd
            .args([
                "aggregator",
                "--kubeconfig",
                k.to_str().unwrap(),
                "--output",
            ])
            .arg(output)
            .args(extra)
            .env("SONOBUOY_CONFIG", config)
            .stderr(
                std::fs::File::options()
                    .create(true)
                    .append(true)
                    .open(output.with_extension("log"))
                    .unwrap(),
            )
            .spawn()
            .unwrap();
        Self {
            child,
            output: output.to_path_buf(),
        }
    }

    /// What the aggregator wrote to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.output.with_extension("log")).unwrap_or_default()
    }
}

/// The run directory under `output` (the one directory not starting with a dot).
pub(super) fn run_dir(output: &Path) -> Option<PathBuf> {
    std::fs::read_dir(output)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.is_dir() && !p.file_name().unwrap().to_string_lossy().starts_with('.'))
}

/// The sealed tarball under `output`.
pub(super) fn tarball(output: &Path) -> Option<PathBuf> {
    std::fs::read_dir(output)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with(".tar.gz"))
}

/// The status annotation of the aggregator pod, decoded.
pub(super) fn annotation(k: &Path, ns: &str) -> Option<Value> {
    let (ok, out) = kubectl(k, &["get", "pod", "sonobuoy", "-n", ns, "-o", "json"], None);
    if !ok {
        return None;
    }
    let pod: Value = serde_json::from_str(&out).ok()?;
    serde_json::from_str(pod["metadata"]["annotations"]["sonobuoy.hept.io/status"].as_str()?).ok()
}

/// A `/proc/<pid>/status` field in KiB.
fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix(field))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// The peak resident set (`VmHWM`) of a process, in KiB.
pub(super) fn peak_rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmHWM:")
}

/// The resident set now (`VmRSS`), in KiB.
pub(super) fn rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmRSS:")
}

/// Whether every plugin row of a status says its results passed.
pub(super) fn all_passed(status: &Value) -> bool {
    status["plugins"]
        .as_array()
        .is_some_and(|ps| ps.iter().all(|p| p["result-status"] == "passed"))
}

/// The members of a tarball.
pub(super) fn tar_list(tarball: &Path) -> Vec<String> {
    let out = std::process::Command::new("tar")
        .arg("tzf")
        .arg(tarball)
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

/// One member of a tarball, as text.
pub(super) fn tar_file(tarball: &Path, member: &str) -> String {
    let out = std::process::Command::new("tar")
        .arg("xzOf")
        .arg(tarball)
        .arg(member)
        .output()
        .unwrap();
    assert!(out.status.success(), "{member} is not in the tarball");
    String::from_utf8(out.stdout).unwrap()
}
