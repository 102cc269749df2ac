//! The in-cluster run against a scripted API server that keeps what the run creates: launch,
//! monitoring, gathering, cleanup, interruption, and restarts on the same output directory.

use super::*;
use crate::fixtures::{list, pair, within, Call, Recorded};
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;

const NS: &str = "/api/v1/namespaces/sonobuoy";

fn plugin(yaml: &str) -> Manifest {
    Manifest::parse(Path::new("p.yaml"), yaml).unwrap()
}

fn aggregator_pod() -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "sonobuoy", "namespace": "sonobuoy", "uid": "agg-uid",
           "labels": {"sonobuoy-component": "aggregator"}}, "status": {"phase": "Running"}})
}

/// A scripted API server that keeps the objects the run creates and answers lists from them.
/// `pod_status` gives each created Job pod's status; DaemonSet pods appear on `ds_pod_nodes`.
fn scripted_cluster(
    pod_status: impl Fn(&str) -> Value + Send + 'static,
    ds_pod_nodes: Vec<&'static str>,
) -> (kube::Client, Recorded) {
    scripted_cluster_holding(Arc::default(), pod_status, ds_pod_nodes)
}

type Store = Arc<std::sync::Mutex<Vec<Value>>>;

/// The same, keeping its objects in `created`, which the test may read and seed.
fn scripted_cluster_holding(
    created: Store,
    pod_status: impl Fn(&str) -> Value + Send + 'static,
    ds_pod_nodes: Vec<&'static str>,
) -> (kube::Client, Recorded) {
    let (client, server) = pair();
    let named = |created: &[Value], kind: &str, name: &str| {
        created
            .iter()
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
            .cloned()
    };
    let recorded = server.serve(move |c: &Call| {
        let sel = c.query("labelSelector").unwrap_or_default();
        let mut created = created.lock().unwrap();
        match (c.method.as_str(), c.path()) {
            ("GET", "/api/v1/nodes") => (200, list("NodeList", vec![
                json!({"metadata": {"name": "n1", "labels": {"kubernetes.io/os": "linux"}}}),
                json!({"metadata": {"name": "n2", "labels": {"kubernetes.io/os": "linux"}}}),
            ])),
            ("GET", p) if p == format!("{NS}/pods") && sel == "sonobuoy-component=aggregator" => {
                (200, list("PodList", vec![aggregator_pod()]))
            }
            ("GET", p) if p == format!("{NS}/pods") => {
                // Monitors list by run label; gathering lists every pod.
                let sid = sel.strip_prefix("sonobuoy-run=");
                let mut pods = Vec::new();
                for o in created.iter().filter(|o| sid.is_none_or(|sid| o["metadata"]["labels"]["sonobuoy-run"] == sid)) {
                    let name = o["metadata"]["name"].as_str().unwrap().to_string();
                    if o["kind"] == "Pod" {
                        let mut p = o.clone();
                        p["status"] = pod_status(&name);
                        pods.push(p);
                    } else {
                        for n in &ds_pod_nodes {
                            let mut spec = o["spec"]["template"]["spec"].clone();
                            spec["nodeName"] = (*n).into();
                            pods.push(json!({"metadata": {"name": format!("{name}-{n}"), "labels": o["spec"]["template"]["metadata"]["labels"]},
                                             "spec": spec, "status": {"phase": "Running"}}));
                        }
                    }
                }
                (200, list("PodList", pods))
            }
            ("GET", "/apis/apps/v1/namespaces/sonobuoy/daemonsets") => {
                let sid = sel.strip_prefix("sonobuoy-run=");
                let ds: Vec<Value> = created.iter().filter(|o| o["kind"] == "DaemonSet" && sid.is_none_or(|sid| o["metadata"]["labels"]["sonobuoy-run"] == sid)).cloned().collect();
                (200, list("DaemonSetList", ds))
            }
            ("PATCH" | "GET", p) if p == format!("{NS}/pods/sonobuoy") => (200, aggregator_pod()),
            ("GET", p) if (p.starts_with(&format!("{NS}/secrets/")) || p.starts_with(&format!("{NS}/pods/"))) && !p.ends_with("/log") => {
                let (kind, name) = if let Some(n) = p.strip_prefix(&format!("{NS}/secrets/")) { ("Secret", n) } else { ("Pod", &p[NS.len() + 6..]) };
                match named(&created, kind, name) {
                    Some(o) => (200, o),
                    None => (404, crate::fixtures::api_error(404, "NotFound", name)),
                }
            }
            // What gathering asks for: discovery, the version, namespaces, logs.
            ("GET", "/api") => (200, json!({"kind": "APIVersions", "versions": ["v1"]})),
            ("GET", "/apis") => (200, json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": []})),
            ("GET", "/api/v1") => (200, json!({"kind": "APIResourceList", "groupVersion": "v1", "resources": [
                {"name": "nodes", "kind": "Node", "namespaced": false, "verbs": ["list"]},
                {"name": "pods", "kind": "Pod", "namespaced": true, "verbs": ["list"]}]})),
            ("GET", "/version") => (200, json!({"gitVersion": "v1.26.3"})),
            ("GET", "/api/v1/namespaces") => (200, list("NamespaceList", vec![json!({"metadata": {"name": "sonobuoy"}})])),
            ("GET", p) if p.ends_with("/log") => (200, Value::String(format!("log of {}\nE0101 an error\n", c.query("container").unwrap_or_default()))),
            ("POST", _) => {
                created.push(c.body.clone());
                (201, c.body.clone())
            }
            ("DELETE", _) => (200, list("List", vec![])),
            _ => (404, crate::fixtures::api_error(404, "NotFound", &format!("{} {}", c.method, c.uri))),
        }
    });
    (client, recorded)
}

/// The process-wide subscriber of this test binary, with a run log. Global, because a
/// thread-local subscriber can miss events whose callsite interest another test's thread
/// cached meanwhile.
fn global_run_log() -> RunLog {
    static LOG: std::sync::OnceLock<RunLog> = std::sync::OnceLock::new();
    LOG.get_or_init(|| {
        use tracing_subscriber::layer::SubscriberExt;
        use tracing_subscriber::util::SubscriberInitExt;
        let log = RunLog::default();
        tracing_subscriber::registry()
            .with(log.layer())
            .try_init()
            .expect("the only global subscriber of these tests");
        log
    })
    .clone()
}

fn config(port: u16, timeout: u64) -> ClusterConfig {
    config_with_uuid(port, timeout, "8d8b1f4e-3f6a-4b8e-9a51-0c1d2e3f4a5b")
}

/// `uuid` empty, as `buoy manifest` writes it, makes a new UUID at each start.
fn config_with_uuid(port: u16, timeout: u64, uuid: &str) -> ClusterConfig {
    let text = json!({"UUID": uuid, "Namespace": "sonobuoy", "WorkerImage": "buoy:test",
        "Server": {"advertiseaddress": format!("127.0.0.1:{port}"), "timeoutseconds": timeout}});
    ClusterConfig::parse(None, &text.to_string(), &|_: &str| None).unwrap()
}

fn quick() -> ClusterOptions {
    ClusterOptions {
        monitor: MonitorOptions {
            poll: Duration::from_millis(100),
            missing_pod_grace: Duration::from_millis(500),
            gone_polls: 2,
        },
        publish: PublishOptions {
            period: Duration::from_millis(100),
            ..Default::default()
        },
        ..Default::default()
    }
}

fn calls(rec: &Recorded) -> Vec<Call> {
    rec.lock().unwrap().clone()
}

/// The status the last annotation patch wrote.
fn last_status(rec: &Recorded) -> Status {
    let patch = calls(rec)
        .into_iter()
        .rev()
        .find(|c| c.method == "PATCH")
        .expect("a status patch");
    serde_json::from_str(
        patch.body["metadata"]["annotations"]["sonobuoy.hept.io/status"]
            .as_str()
            .unwrap(),
    )
    .unwrap()
}

fn b64(v: &Value) -> String {
    use base64::Engine;
    String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap())
            .unwrap(),
    )
    .unwrap()
}

/// Plays a plugin pod's worker: the env of its `sonobuoy-worker` container, with the Secret's
/// certificate and key and the node name filled in as the kubelet would.
async fn play_worker(pod_spec: &Value, secret: &Value, node: &str, dir: &Path, file: &str) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(file), "result").unwrap();
    std::fs::write(dir.join("done"), dir.join(file).to_str().unwrap()).unwrap();
    let mut cfg = worker_config(pod_spec, secret, node);
    cfg.results_dir = dir.to_path_buf();
    cfg.progress_port = 0;
    cfg.progress_bind = std::net::Ipv4Addr::LOCALHOST.into();
    cfg.done_file_delay = Duration::ZERO;
    let mode = if node.is_empty() {
        buoy_worker::Mode::Global
    } else {
        buoy_worker::Mode::SingleNode
    };
    buoy_worker::run(&cfg, mode, std::future::pending())
        .await
        .unwrap();
}

/// The worker config a plugin pod's `sonobuoy-worker` container would have.
fn worker_config(pod_spec: &Value, secret: &Value, node: &str) -> buoy_worker::WorkerConfig {
    let worker = pod_spec["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "sonobuoy-worker")
        .unwrap();
    let mut env: Vec<(String, String)> = Vec::new();
    for e in worker["env"].as_array().unwrap() {
        let name = e["name"].as_str().unwrap().to_string();
        let value = if let Some(v) = e["value"].as_str() {
            v.to_string()
        } else if let Some(k) = e
            .pointer("/valueFrom/secretKeyRef/key")
            .and_then(Value::as_str)
        {
            b64(&secret["data"][k])
        } else if e.pointer("/valueFrom/fieldRef/fieldPath") == Some(&json!("spec.nodeName")) {
            node.to_string()
        } else {
            "x".into()
        };
        env.push((name, value));
    }
    buoy_worker::WorkerConfig::from_lookup(|k| {
        env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    })
    .unwrap()
}

async fn wait_for_post(rec: &Recorded, kind_path: &str, plugin: &str) -> Value {
    within(async {
        loop {
            if let Some(c) = calls(rec).into_iter().find(|c| {
                c.method == "POST"
                    && c.path().ends_with(kind_path)
                    && (c.body["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .contains(&format!("-{plugin}-")))
            }) {
                return c.body;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

#[tokio::test]
async fn a_run_launches_plugins_collects_results_cleans_up_and_publishes_completion() {
    let (client, rec) = scripted_cluster(|_| json!({"phase": "Running"}), vec!["n1"]);
    let api = KubeApi::new(client, "sonobuoy");
    let out = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let plugins = vec![
        plugin("sonobuoy-config: {driver: Job, plugin-name: e2e}\nspec: {name: e2e, image: e2e:1}\n"),
        plugin("sonobuoy-config: {driver: DaemonSet, plugin-name: logs, order: 1}\nspec: {name: logs, image: l:1}\n"),
    ];
    let mut opts = quick();
    opts.output_dir = out.path().to_path_buf();
    opts.listener = Some(listener);
    let log = global_run_log();
    opts.run_log = Some(log);
    let run = tokio::spawn(run(
        api,
        config(port, 0),
        plugins,
        opts,
        std::future::pending(),
    ));

    // The Job plugin comes first (order 0); the DaemonSet only once it has its result.
    let secret = wait_for_post(&rec, "/secrets", "e2e").await;
    let pod = wait_for_post(&rec, "/pods", "e2e").await;
    assert!(!calls(&rec)
        .iter()
        .any(|c| c.path().ends_with("/daemonsets") && c.method == "POST"));
    play_worker(
        &pod["spec"],
        &secret,
        "",
        &out.path().join("w-e2e"),
        "junit.xml",
    )
    .await;
    let secret = wait_for_post(&rec, "/secrets", "logs").await;
    let ds = wait_for_post(&rec, "/daemonsets", "logs").await;
    play_worker(
        &ds["spec"]["template"]["spec"],
        &secret,
        "n1",
        &out.path().join("w-n1"),
        "logs.txt",
    )
    .await;
    // n2 never gets a pod: after the grace it becomes an error result and the run completes.
    let finished = within(run).await.unwrap().unwrap();

    let run_dir = &finished.run_dir;
    assert!(run_dir
        .join("plugins/e2e/results/global/junit.xml")
        .is_file());
    assert!(run_dir.join("plugins/logs/results/n1/logs.txt").is_file());
    let err: Value = serde_json::from_slice(
        &std::fs::read(run_dir.join("plugins/logs/errors/n2/error.json")).unwrap(),
    )
    .unwrap();
    assert!(
        err["error"]
            .as_str()
            .unwrap()
            .starts_with("No pod was scheduled on node n2 within"),
        "{err}"
    );
    let def: Value = serde_json::from_slice(
        &std::fs::read(run_dir.join("plugins/e2e/definition.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(def["Namespace"], "sonobuoy");
    assert_eq!(def["CleanedUp"], true);
    assert!(finished.tarball.is_file());

    // Gathered before cleanup: resources, the plugin pods' logs, the health summary, query
    // times, and every log line of the run.
    let nodes: Value = serde_json::from_slice(
        &std::fs::read(run_dir.join("resources/cluster/core_v1_nodes.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(nodes["items"].as_array().unwrap().len(), 2);
    let e2e_pod = pod["metadata"]["name"].as_str().unwrap();
    assert_eq!(
        std::fs::read_to_string(run_dir.join(format!(
            "podlogs/sonobuoy/{e2e_pod}/logs/sonobuoy-worker.txt"
        )))
        .unwrap(),
        "log of sonobuoy-worker\nE0101 an error\n"
    );
    assert!(run_dir.join("meta/query-time.json").is_file());
    assert!(run_dir.join("serverversion.json").is_file());
    let run_log = std::fs::read_to_string(run_dir.join("meta/run.log")).unwrap();
    for want in [
        "starting the run",
        "plugin launched",
        "gathered cluster data",
    ] {
        assert!(run_log.contains(want), "{want} not in {run_log}");
    }
    assert!(!out
        .path()
        .join(format!(
            ".buoy-run-{}.log",
            "8d8b1f4e-3f6a-4b8e-9a51-0c1d2e3f4a5b"
        ))
        .exists());
    // The sealed archive shows the health section as `sonobuoy results` does.
    let archive = buoy_results::archive::Archive::open(&finished.tarball).unwrap();
    let mut text = Vec::new();
    buoy_results::report::show(&archive, &Default::default(), &mut text).unwrap();
    let text = String::from_utf8(text).unwrap();
    assert!(text.contains("API Server version: v1.26.3"), "{text}");
    assert!(text.contains("Node health: 0/2 (0%)"), "{text}");
    assert!(
        text.contains(&format!("podlogs/sonobuoy/{e2e_pod}/logs/e2e.txt")),
        "{text}"
    );

    let all = calls(&rec);
    // Nodes are only ever listed a page at a time; the launch reads their metadata only.
    let is_watch = |c: &Call| c.query("watch").is_some();
    let node_lists: Vec<&Call> = all
        .iter()
        .filter(|c| c.path() == "/api/v1/nodes" && !is_watch(c))
        .collect();
    assert!(node_lists.iter().all(|c| c.query("limit").is_some()));
    // Monitoring watches the plugin pods and never lists them by a plugin's run label.
    assert!(all.iter().any(|c| is_watch(c)
        && c.path() == format!("{NS}/pods")
        && c.query("labelSelector").unwrap() == "component=sonobuoy,sonobuoy-component=plugin"));
    assert!(!all.iter().any(|c| c.method == "GET"
        && c.path() == format!("{NS}/pods")
        && c.query("labelSelector")
            .is_some_and(|s| s.starts_with("sonobuoy-run="))));
    assert!(node_lists
        .iter()
        .any(|c| c.accept.contains("as=PartialObjectMetadataList")));
    // The Secret: type kubernetes.io/tls, SEC1 key, owned by the aggregator pod.
    let s = all
        .iter()
        .find(|c| c.method == "POST" && c.path() == format!("{NS}/secrets"))
        .unwrap();
    assert_eq!(s.body["type"], "kubernetes.io/tls");
    assert!(b64(&s.body["data"]["tls.key"]).starts_with("-----BEGIN EC PRIVATE KEY-----"));
    assert_eq!(s.body["metadata"]["ownerReferences"][0]["uid"], "agg-uid");
    // Cleanup: the Job's pods and the DaemonSet, by their run label.
    let e2e_sid = pod["metadata"]["labels"]["sonobuoy-run"].as_str().unwrap();
    let ds_sid = ds["metadata"]["labels"]["sonobuoy-run"].as_str().unwrap();
    assert!(all.iter().any(|c| c.method == "DELETE"
        && c.path() == format!("{NS}/pods")
        && c.query("labelSelector").unwrap() == format!("sonobuoy-run={e2e_sid}")));
    assert!(all.iter().any(|c| c.method == "DELETE"
        && c.path() == "/apis/apps/v1/namespaces/sonobuoy/daemonsets"
        && c.query("labelSelector").unwrap() == format!("sonobuoy-run={ds_sid}")));
    // The annotation: the initial status first, `complete` with the tarball's digest last.
    let patches: Vec<Status> = all
        .iter()
        .filter(|c| c.method == "PATCH")
        .map(|c| {
            assert_eq!(c.content_type, "application/merge-patch+json");
            serde_json::from_str(
                c.body["metadata"]["annotations"]["sonobuoy.hept.io/status"]
                    .as_str()
                    .unwrap(),
            )
            .unwrap()
        })
        .collect();
    assert_eq!(patches[0], Status::initial());
    let last = patches.last().unwrap();
    assert_eq!(last.status, "complete");
    assert_eq!(last.tar_info.sha256, finished.tar_info.sha256);
    let rows = last.plugins.as_ref().unwrap();
    assert_eq!(rows.len(), 3);
    assert!(rows.iter().any(|r| r.node == "n2" && r.status == "failed"));
    // Post-processing ran before `complete`: every row has its result (compat §5.4).
    for r in rows {
        let want = if r.node == "n2" { "failed" } else { "passed" };
        assert_eq!(r.result_status, want, "{r:?}");
        assert_eq!(
            r.result_counts,
            Some([(want.to_string(), 1)].into()),
            "{r:?}"
        );
    }
    // No two consecutive patches carry the same status.
    assert!(patches.windows(2).all(|w| w[0] != w[1]));
}

#[tokio::test]
async fn failing_pods_and_timeouts_become_error_results_with_the_pod() {
    let (client, _rec) = scripted_cluster(
        |name| {
            if name.contains("-stuck-") {
                json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/2 nodes are available: 2 Insufficient cpu."}]})
            } else {
                json!({"phase": "Running"})
            }
        },
        vec![],
    );
    let api = KubeApi::new(client, "sonobuoy");
    let out = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let plugins = vec![
        plugin("sonobuoy-config: {driver: Job, plugin-name: stuck}\nspec: {name: s, image: s:1}\n"),
        plugin(
            "sonobuoy-config: {driver: Job, plugin-name: silent}\nspec: {name: q, image: q:1}\n",
        ),
    ];
    let mut opts = quick();
    opts.output_dir = out.path().to_path_buf();
    opts.listener = Some(listener);
    let finished = within(run(
        api,
        config(port, 2),
        plugins,
        opts,
        std::future::pending(),
    ))
    .await
    .unwrap();
    let read = |p: &str| -> Value {
        serde_json::from_slice(&std::fs::read(finished.run_dir.join(p)).unwrap()).unwrap()
    };
    let stuck = read("plugins/stuck/errors/global/error.json");
    assert_eq!(
        stuck["error"],
        "Can't schedule pod: 0/2 nodes are available: 2 Insufficient cpu."
    );
    assert_eq!(
        stuck["pod"]["metadata"]["labels"]["sonobuoy-plugin"],
        "stuck"
    );
    assert_eq!(
        stuck["pod"]["status"]["conditions"][0]["reason"],
        "Unschedulable"
    );
    let silent = read("plugins/silent/errors/global/error.json");
    assert_eq!(silent["error"], buoy_wire::TIMEOUT_ERROR_MESSAGE);
    assert_eq!(finished.status.status, "complete");
}

#[tokio::test]
async fn a_stop_before_every_result_publishes_failed_with_the_reason_and_cleans_up_or_seals_only_if_asked(
) {
    for (cleanup, seal) in [(false, false), (true, false), (false, true)] {
        let (client, rec) = scripted_cluster(|_| json!({"phase": "Running"}), vec![]);
        let api = KubeApi::new(client, "sonobuoy");
        let out = tempfile::tempdir().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let plugins = vec![plugin(
            "sonobuoy-config: {driver: Job, plugin-name: e2e}\nspec: {name: e2e, image: e2e:1}\n",
        )];
        let mut opts = quick();
        opts.output_dir = out.path().to_path_buf();
        opts.listener = Some(listener);
        opts.cleanup_on_interrupt = cleanup;
        opts.seal_on_interrupt = seal;
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let run = tokio::spawn(run(api, config(port, 0), plugins, opts, async {
            let _ = stop_rx.await;
        }));
        // The plugin is running and will never deliver; then the pod is told to stop.
        let pod = wait_for_post(&rec, "/pods", "e2e").await;
        stop_tx.send(()).unwrap();
        let e = within(run).await.unwrap().unwrap_err();
        assert!(
            matches!(
                e,
                KubeError::Aggregator(buoy_aggregator::AggError::Interrupted)
            ),
            "{e}"
        );

        let all = calls(&rec);
        let last = last_status(&rec);
        assert_eq!(last.status, "failed");
        assert!(
            last.interrupted.as_deref().unwrap().contains("SIGTERM"),
            "{last:?}"
        );
        let row = &last.plugins.as_ref().unwrap()[0];
        if seal {
            // The missing result is an error result, and the tarball is named.
            assert_eq!(row.status, "failed");
            assert!(out.path().join(&last.tar_info.name).is_file(), "{last:?}");
            let err: Value = serde_json::from_slice(
                &std::fs::read(out.path().join(
                    "8d8b1f4e-3f6a-4b8e-9a51-0c1d2e3f4a5b/plugins/e2e/errors/global/error.json",
                ))
                .unwrap(),
            )
            .unwrap();
            assert!(err["error"].as_str().unwrap().contains("SIGTERM"), "{err}");
        } else {
            assert_eq!(row.status, "running");
            assert!(last.tar_info.name.is_empty());
        }
        let sid = pod["metadata"]["labels"]["sonobuoy-run"].as_str().unwrap();
        let deleted = all.iter().any(|c| {
            c.method == "DELETE"
                && c.query("labelSelector").as_deref() == Some(&format!("sonobuoy-run={sid}"))
        });
        assert_eq!(deleted, cleanup);
    }
}
/// An upload under way when the aggregator is told to stop finishes while the server drains:
/// it is stored, and the last status published says so (it used to keep the counts of the
/// moment of the stop).
#[tokio::test]
async fn a_result_that_arrives_while_a_stopped_run_drains_is_in_its_last_status() {
    use http_body_util::BodyExt;
    let (client, rec) = scripted_cluster(|_| json!({"phase": "Running"}), vec![]);
    let api = KubeApi::new(client, "sonobuoy");
    let out = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let plugins = vec![
        plugin("sonobuoy-config: {driver: Job, plugin-name: never}\nspec: {name: n, image: n:1}\n"),
        plugin("sonobuoy-config: {driver: Job, plugin-name: late}\nspec: {name: l, image: l:1}\n"),
    ];
    let mut opts = quick();
    opts.output_dir = out.path().to_path_buf();
    opts.listener = Some(listener);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(run(api, config(port, 0), plugins, opts, async {
        let _ = stop_rx.await;
    }));
    let pod = wait_for_post(&rec, "/pods", "late").await;
    let secret = wait_for_post(&rec, "/secrets", "late").await;
    let cfg = worker_config(&pod["spec"], &secret, "");
    let worker = cfg.client().unwrap();
    let path = cfg.result_path(buoy_worker::Mode::Global).unwrap();
    // A body sent in two parts: the first before the stop, the rest after it.
    let (tx, rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(1);
    let chunks = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, std::io::Error>(http_body::Frame::data(b)), rx))
    });
    let body = http_body_util::StreamBody::new(chunks).boxed();
    let upload = tokio::spawn(async move {
        worker
            .send(http::Method::PUT, &path, http::HeaderMap::new(), body)
            .await
    });
    tx.send(bytes::Bytes::from_static(b"first half, "))
        .await
        .unwrap();
    // The second send waits until the first part was taken: the upload is under way.
    tx.send(bytes::Bytes::from_static(b"second half"))
        .await
        .unwrap();
    stop_tx.send(()).unwrap();
    // The stop is published (the run is interrupted), and only then does the upload end.
    within(async {
        while !calls(&rec)
            .iter()
            .any(|c| c.method == "PATCH" && c.body.to_string().contains("interrupted"))
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    drop(tx);
    let reply = within(upload).await.unwrap().unwrap();
    assert_eq!(reply.status, http::StatusCode::OK);
    assert!(within(run).await.unwrap().is_err());
    let last = last_status(&rec);
    assert_eq!(last.status, "failed");
    let late = last
        .plugins
        .unwrap()
        .into_iter()
        .find(|p| p.plugin == "late")
        .unwrap();
    assert_eq!(late.status, "complete", "the drained upload is not counted");
}

fn job_and_daemonset() -> Vec<Manifest> {
    vec![
        plugin("sonobuoy-config: {driver: Job, plugin-name: e2e}\nspec: {name: e2e, image: e2e:1}\n"),
        plugin("sonobuoy-config: {driver: DaemonSet, plugin-name: logs, order: 1}\nspec: {name: logs, image: l:1}\n"),
    ]
}

/// An aggregator on its own runtime, so that dropping the runtime ends every task of it at
/// once, as `kill -9` ends a process: nothing of it runs on, and nothing is cleaned up.
fn start_killable(
    client: &kube::Client,
    out: &Path,
    port: u16,
    listener: std::net::TcpListener,
) -> tokio::runtime::Runtime {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let api = KubeApi::new(client.clone(), "sonobuoy");
    let mut opts = quick();
    opts.output_dir = out.to_path_buf();
    rt.spawn(async move {
        listener.set_nonblocking(true).unwrap();
        opts.listener = Some(TcpListener::from_std(listener).unwrap());
        let cfg = config_with_uuid(port, 0, "");
        let _ = run(api, cfg, job_and_daemonset(), opts, std::future::pending()).await;
    });
    rt
}

/// A restart on the same output directory and port (the pod keeps its IP and emptyDir).
async fn restart(
    client: &kube::Client,
    out: &Path,
    port: u16,
) -> tokio::task::JoinHandle<Result<Finished, KubeError>> {
    // The killed runtime's listener closes as its tasks are dropped.
    let listener = within(async {
        loop {
            match TcpListener::bind(("127.0.0.1", port)).await {
                Ok(l) => return l,
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    })
    .await;
    let mut opts = quick();
    opts.output_dir = out.to_path_buf();
    opts.listener = Some(listener);
    tokio::spawn(run(
        KubeApi::new(client.clone(), "sonobuoy"),
        config_with_uuid(port, 0, ""),
        job_and_daemonset(),
        opts,
        std::future::pending(),
    ))
}

fn posts(rec: &Recorded, kind_path: &str) -> usize {
    calls(rec)
        .iter()
        .filter(|c| c.method == "POST" && c.path().ends_with(kind_path))
        .count()
}

fn deleted(rec: &Recorded, path_end: &str, selector: &str) -> bool {
    calls(rec).iter().any(|c| {
        c.method == "DELETE"
            && c.path().ends_with(path_end)
            && c.query("labelSelector").unwrap_or_default() == selector
    })
}

fn free_port() -> (std::net::TcpListener, u16) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    (l, port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_mid_results_keeps_uuid_ca_and_sessions_launches_nothing_twice_and_removes_strays(
) {
    let store: Store = Arc::default();
    let (client, rec) = scripted_cluster_holding(
        store.clone(),
        |_| json!({"phase": "Running"}),
        vec!["n1", "n2"],
    );
    let out = tempfile::tempdir().unwrap();
    let (listener, port) = free_port();
    let first = start_killable(&client, out.path(), port, listener);
    let secret = wait_for_post(&rec, "/secrets", "e2e").await;
    let pod = wait_for_post(&rec, "/pods", "e2e").await;
    play_worker(
        &pod["spec"],
        &secret,
        "",
        &out.path().join("w-e2e"),
        "junit.xml",
    )
    .await;
    let logs_secret = wait_for_post(&rec, "/secrets", "logs").await;
    let ds = wait_for_post(&rec, "/daemonsets", "logs").await;
    let ds_spec = &ds["spec"]["template"]["spec"];
    play_worker(
        ds_spec,
        &logs_secret,
        "n1",
        &out.path().join("w-n1"),
        "logs.txt",
    )
    .await;
    first.shutdown_background();
    let record = identity::load(out.path()).unwrap().unwrap();
    assert_eq!(record.sessions().len(), 2);

    // Objects the restart must sort out: a Job pod of this aggregator pod that the record
    // does not name (a stray), and one of another owner (not ours to touch).
    let stray = |sid: &str, owner: &str| {
        json!({"kind": "Pod", "metadata": {"name": format!("sonobuoy-e2e-job-{sid}"),
            "labels": {"component": "sonobuoy", "sonobuoy-component": "plugin", "sonobuoy-plugin": "e2e", "sonobuoy-run": sid},
            "ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": "x", "uid": owner}]}})
    };
    store
        .lock()
        .unwrap()
        .push(stray("0000000000000000", "agg-uid"));
    store
        .lock()
        .unwrap()
        .push(stray("1111111111111111", "someone-else"));

    let second = restart(&client, out.path(), port).await;
    // The first instance's worker on n2, holding the first instance's Secret, delivers to
    // the second: same CA, same identity.
    play_worker(
        ds_spec,
        &logs_secret,
        "n2",
        &out.path().join("w-n2"),
        "logs.txt",
    )
    .await;
    let finished = within(second).await.unwrap().unwrap();

    assert_eq!(
        finished.run_dir.file_name().unwrap().to_str().unwrap(),
        record.uuid
    );
    for key in [
        "e2e/results/global/junit.xml",
        "logs/results/n1/logs.txt",
        "logs/results/n2/logs.txt",
    ] {
        assert!(
            finished.run_dir.join("plugins").join(key).is_file(),
            "{key}"
        );
    }
    assert!(!finished.run_dir.join("plugins/logs/errors").exists());
    assert_eq!(
        (
            posts(&rec, "/secrets"),
            posts(&rec, "/pods"),
            posts(&rec, "/daemonsets")
        ),
        (2, 1, 1),
        "no plugin is launched twice"
    );
    for (plugin, sid) in record
        .plugins
        .iter()
        .map(|p| (&p.name, &p.launch.as_ref().unwrap().session))
    {
        let path = if plugin == "e2e" {
            "/pods"
        } else {
            "/daemonsets"
        };
        assert!(
            deleted(&rec, path, &format!("sonobuoy-run={sid}")),
            "{plugin} cleaned up"
        );
    }
    assert!(deleted(&rec, "/pods", "sonobuoy-run=0000000000000000"));
    assert!(calls(&rec).iter().any(|c| c.method == "DELETE"
        && c.path()
            .ends_with("/secrets/sonobuoy-plugin-e2e-0000000000000000")));
    assert!(!deleted(&rec, "/pods", "sonobuoy-run=1111111111111111"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_right_after_launch_adopts_and_one_during_sealing_seals_without_launching_again()
{
    let (client, rec) = scripted_cluster(|_| json!({"phase": "Running"}), vec!["n1", "n2"]);
    let out = tempfile::tempdir().unwrap();
    let (listener, port) = free_port();
    let first = start_killable(&client, out.path(), port, listener);
    let secret = wait_for_post(&rec, "/secrets", "e2e").await;
    let pod = wait_for_post(&rec, "/pods", "e2e").await;
    first.shutdown_background();

    let second = restart(&client, out.path(), port).await;
    // The Job pod the first instance made delivers to the second, which launches the
    // DaemonSet plugin itself.
    play_worker(
        &pod["spec"],
        &secret,
        "",
        &out.path().join("w-e2e"),
        "junit.xml",
    )
    .await;
    let logs_secret = wait_for_post(&rec, "/secrets", "logs").await;
    let ds = wait_for_post(&rec, "/daemonsets", "logs").await;
    for n in ["n1", "n2"] {
        let dir = out.path().join(format!("w-{n}"));
        play_worker(
            &ds["spec"]["template"]["spec"],
            &logs_secret,
            n,
            &dir,
            "logs.txt",
        )
        .await;
    }
    let finished = within(second).await.unwrap().unwrap();
    let launches = (
        posts(&rec, "/secrets"),
        posts(&rec, "/pods"),
        posts(&rec, "/daemonsets"),
    );
    assert_eq!(launches, (2, 1, 1), "no plugin is launched twice");
    let uuid = finished
        .run_dir
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();

    // A crash while sealing leaves no tarball and no sealed record, maybe a partial one.
    std::fs::remove_file(&finished.tarball).unwrap();
    std::fs::remove_file(out.path().join(format!(".buoy-sealed-{uuid}.json"))).unwrap();
    let partial = out
        .path()
        .join(format!(".202611251200_sonobuoy_{uuid}.tar.gz.partial"));
    std::fs::write(&partial, "half a tarball").unwrap();
    let deletes_before = calls(&rec).iter().filter(|c| c.method == "DELETE").count();
    let gathers_before = calls(&rec)
        .iter()
        .filter(|c| c.path() == "/version")
        .count();
    let third = within(restart(&client, out.path(), port).await)
        .await
        .unwrap()
        .unwrap();
    assert!(third.tarball.is_file());
    assert!(!partial.exists());
    assert_eq!(third.run_dir, finished.run_dir);
    assert_eq!(
        (
            posts(&rec, "/secrets"),
            posts(&rec, "/pods"),
            posts(&rec, "/daemonsets")
        ),
        launches,
        "sealing again launches nothing"
    );
    assert!(
        calls(&rec).iter().filter(|c| c.method == "DELETE").count() > deletes_before,
        "and cleans up again"
    );
    // Gathered once, before the first cleanup: the plugins' pods are in what was gathered,
    // and the restart did not gather again (by then they could be gone).
    assert_eq!(
        calls(&rec)
            .iter()
            .filter(|c| c.path() == "/version")
            .count(),
        gathers_before,
        "sealing again gathers nothing"
    );
    assert!(third.run_dir.join("serverversion.json").is_file());

    // A restart of a sealed run serves it as it is.
    let calls_before = calls(&rec).len();
    let fourth = within(restart(&client, out.path(), port).await)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(fourth.tar_info.sha256, third.tar_info.sha256);
    assert_eq!(fourth.tarball, third.tarball);
    let later: Vec<Call> = calls(&rec).split_off(calls_before);
    assert!(
        later
            .iter()
            .all(|c| c.method == "PATCH" || c.method == "GET"),
        "a sealed run creates and deletes nothing, it only publishes its status: {:?}",
        later
            .iter()
            .map(|c| format!("{} {}", c.method, c.uri))
            .collect::<Vec<_>>()
    );
    assert!(later
        .iter()
        .any(|c| c.body.to_string().contains("complete")));
}

#[test]
fn a_recorded_run_is_carried_on_only_with_its_uuid_and_plugins() {
    let out = tempfile::tempdir().unwrap();
    let names = vec!["e2e".to_string(), "logs".to_string()];
    let record = RunRecord {
        uuid: "11111111-2222-4333-8444-555555555555".into(),
        ca_sha256: String::new(),
        plugins: names
            .iter()
            .map(|n| PluginRecord {
                name: n.clone(),
                nodes: vec![],
                launch: None,
            })
            .collect(),
        gathered: false,
    };
    identity::save(out.path(), &record).unwrap();
    let cfg = |uuid: &str| config_with_uuid(1, 0, uuid);
    assert_eq!(
        resumable(&cfg(""), &names, out.path()).unwrap(),
        Some(record.clone())
    );
    assert_eq!(
        resumable(&cfg(&record.uuid), &names, out.path()).unwrap(),
        Some(record.clone())
    );
    assert_eq!(
        resumable(
            &cfg("99999999-2222-4333-8444-555555555555"),
            &names,
            out.path()
        )
        .unwrap(),
        None,
        "a config naming another run starts that one"
    );
    let e = resumable(&cfg(""), &names[..1], out.path())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(identity::RECORD_FILE) && e.contains("[\"e2e\", \"logs\"]"),
        "{e}"
    );
}

#[tokio::test]
async fn a_resumed_plugins_timeout_counts_from_its_first_launch_and_missing_objects_are_made_again()
{
    let (client, rec) = scripted_cluster(|_| json!({"phase": "Running"}), vec![]);
    let out = tempfile::tempdir().unwrap();
    let uuid = "11111111-2222-4333-8444-555555555555";
    let names = vec!["e2e".to_string()];
    let pki = buoy_pki::RunPki::load_or_create(
        &identity::pki_dir(out.path(), uuid),
        "127.0.0.1",
        &[],
        &names,
    )
    .unwrap();
    let an_hour_ago = OffsetDateTime::now_utc() - time::Duration::hours(1);
    let record = RunRecord {
        uuid: uuid.into(),
        ca_sha256: identity::ca_fingerprint(pki.ca.cert_pem()),
        plugins: vec![PluginRecord {
            name: "e2e".into(),
            nodes: vec![],
            launch: Some(LaunchRecord::new("abcdef0123456789".into(), an_hour_ago)),
        }],
        gathered: false,
    };
    identity::save(out.path(), &record).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut opts = quick();
    opts.output_dir = out.path().to_path_buf();
    opts.listener = Some(listener);
    // A 10-minute timeout, launched an hour ago: it has passed, whatever the restart.
    let finished = within(run(
        KubeApi::new(client, "sonobuoy"),
        config_with_uuid(port, 600, ""),
        vec![plugin(
            "sonobuoy-config: {driver: Job, plugin-name: e2e}\nspec: {name: e2e, image: e2e:1}\n",
        )],
        opts,
        std::future::pending(),
    ))
    .await
    .unwrap();
    let err: Value = serde_json::from_slice(
        &std::fs::read(
            finished
                .run_dir
                .join("plugins/e2e/errors/global/error.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(err["error"], buoy_wire::TIMEOUT_ERROR_MESSAGE);
    // The Secret and the pod were gone (the API server had neither): made again under the
    // recorded session, never under a new one.
    let made: Vec<String> = calls(&rec)
        .iter()
        .filter(|c| c.method == "POST")
        .map(|c| c.body["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        made,
        [
            "sonobuoy-plugin-e2e-abcdef0123456789",
            "sonobuoy-e2e-job-abcdef0123456789"
        ]
    );
}
