//! Gathering against a scripted API: resources, pod logs, versions, query times and health land
//! in Sonobuoy's paths; configuration mistakes are refused before any call.

use super::*;
use crate::config::ClusterConfig;
use crate::fixtures::{api_error, list, pair, within, Call};

fn verbs(list_too: bool) -> Value {
    if list_too {
        json!(["create", "get", "list", "watch"])
    } else {
        json!(["create"])
    }
}

fn res(name: &str, kind: &str, namespaced: bool, listable: bool) -> Value {
    json!({"name": name, "kind": kind, "namespaced": namespaced, "verbs": verbs(listable)})
}

fn node(name: &str, ready: &str) -> Value {
    json!({"metadata": {"name": name, "managedFields": [{"manager": "kubelet"}]},
           "status": {"conditions": [{"type": "Ready", "status": ready, "reason": "KubeletReady", "message": "m"}]}})
}

fn pod(ns: &str, name: &str, phase: &str, containers: &[&str]) -> Value {
    let cs: Vec<Value> = containers.iter().map(|c| json!({"name": c})).collect();
    json!({"metadata": {"name": name, "namespace": ns, "uid": format!("uid-{name}")},
           "spec": {"containers": cs},
           "status": {"phase": phase, "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/3 nodes"}]}})
}

/// A small cluster: three nodes (one not ready, listed over two pages), three namespaces,
/// a broken API group, and a kubelet that serves some logs and fails others.
fn cluster(c: &Call) -> (u16, Value) {
    let page2 = c.query("continue").as_deref() == Some("c1");
    match c.path() {
        "/api" => (200, json!({"kind": "APIVersions", "versions": ["v1"]})),
        "/apis" => (
            200,
            json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": [
            {"name": "apps", "versions": [{"groupVersion": "apps/v1", "version": "v1"}], "preferredVersion": {"groupVersion": "apps/v1", "version": "v1"}},
            {"name": "broken.example.com", "versions": [{"groupVersion": "broken.example.com/v1", "version": "v1"}], "preferredVersion": {"groupVersion": "broken.example.com/v1", "version": "v1"}}]}),
        ),
        "/api/v1" => (
            200,
            json!({"kind": "APIResourceList", "groupVersion": "v1", "resources": [
            res("nodes", "Node", false, true), res("namespaces", "Namespace", false, true),
            res("pods", "Pod", true, true), res("pods/log", "Pod", true, true),
            res("secrets", "Secret", true, true), res("configmaps", "ConfigMap", true, true),
            res("bindings", "Binding", true, false)]}),
        ),
        "/apis/apps/v1" => (
            200,
            json!({"kind": "APIResourceList", "groupVersion": "apps/v1", "resources": [
            res("daemonsets", "DaemonSet", true, true), res("pods", "Pod", true, true)]}),
        ),
        "/apis/broken.example.com/v1" => (
            503,
            api_error(503, "ServiceUnavailable", "the aggregated API is down"),
        ),
        "/version" => (
            200,
            json!({"major": "1", "minor": "26", "gitVersion": "v1.26.3"}),
        ),
        "/api/v1/nodes" if !page2 => {
            let mut l = list("NodeList", vec![node("n1", "True"), node("n2", "True")]);
            l["metadata"]["continue"] = "c1".into();
            (200, l)
        }
        "/api/v1/nodes" => (200, list("NodeList", vec![node("n3", "False")])),
        "/api/v1/namespaces" => (
            200,
            list(
                "NamespaceList",
                ["kube-system", "sonobuoy", "other"]
                    .iter()
                    .map(|n| json!({"metadata": {"name": n}}))
                    .collect(),
            ),
        ),
        "/api/v1/namespaces/kube-system/pods" => {
            // Pending and unschedulable by its conditions, yet its container ran once.
            let mut coredns = pod("kube-system", "coredns", "Pending", &["coredns"]);
            coredns["status"]["containerStatuses"] =
                json!([{"name": "coredns", "state": {"running": {}}}]);
            (200, list("PodList", vec![coredns]))
        }
        "/api/v1/namespaces/sonobuoy/pods" => {
            let mut evicted = pod("sonobuoy", "evicted", "Failed", &["x"]);
            evicted["status"]["reason"] = "Evicted".into();
            (
                200,
                list(
                    "PodList",
                    vec![
                        pod("sonobuoy", "p1", "Running", &["e2e", "sonobuoy-worker"]),
                        evicted,
                    ],
                ),
            )
        }
        "/api/v1/namespaces/other/pods" => (
            200,
            list("PodList", vec![pod("other", "o1", "Running", &["o"])]),
        ),
        "/apis/apps/v1/namespaces/sonobuoy/daemonsets" => (
            200,
            list("DaemonSetList", vec![json!({"metadata": {"name": "ds"}})]),
        ),
        p if p.ends_with("/configmaps") || p.ends_with("/daemonsets") => {
            (200, list("List", vec![]))
        }
        "/api/v1/namespaces/sonobuoy/pods/p1/log"
            if c.query("container").as_deref() == Some("e2e") =>
        {
            (
                200,
                Value::String(
                    "ok\nE0101 broke\nsomething failed\nWarning: slow\nlast line error".into(),
                ),
            )
        }
        "/api/v1/namespaces/kube-system/pods/coredns/log" => {
            (200, Value::String("level=warn x\n".into()))
        }
        p if p.ends_with("/log") => (500, api_error(500, "InternalError", "no kubelet")),
        _ => (404, api_error(404, "NotFound", &c.uri)),
    }
}

fn gather_config(extra: Value) -> GatherConfig {
    let mut text = json!({"Namespace": "sonobuoy"});
    for (k, v) in extra.as_object().unwrap() {
        text[k] = v.clone();
    }
    ClusterConfig::parse(None, &text.to_string(), &|_: &str| None)
        .unwrap()
        .gather
}

fn read_json(dir: &Path, rel: &str) -> Value {
    serde_json::from_slice(&fs::read(dir.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}")))
        .unwrap()
}

#[tokio::test]
async fn gathers_resources_logs_versions_query_times_and_health_in_sonobuoys_paths() {
    let (client, server) = pair();
    let calls = server.serve(cluster);
    let api = KubeApi::new(client, "sonobuoy");
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    fs::create_dir_all(run.join("meta")).unwrap();
    let cfg = gather_config(json!({"Filters": {"Namespaces": "kube-system|sonobuoy"}}));
    let work = dir.path().join(".gather");
    let s = within(gather(&api, &cfg, &run, &work)).await.unwrap();
    assert!(!work.exists());

    // Nodes over two pages into one list, managedFields gone, kind and apiVersion set.
    let nodes = read_json(&run, "resources/cluster/core_v1_nodes.json");
    assert_eq!(nodes["kind"], "NodeList");
    assert_eq!(nodes["apiVersion"], "v1");
    let items = nodes["items"].as_array().unwrap();
    assert_eq!(items.len(), 3);
    assert!(items.iter().all(|n| n["kind"] == "Node"
        && n["apiVersion"] == "v1"
        && n["metadata"].get("managedFields").is_none()));
    assert!(run
        .join("resources/cluster/core_v1_namespaces.json")
        .is_file());
    assert_eq!(
        read_json(&run, "resources/ns/sonobuoy/core_v1_pods.json")["items"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        read_json(&run, "resources/ns/sonobuoy/apps_v1_daemonsets.json")["items"][0]["kind"],
        "DaemonSet"
    );
    // An empty list writes no file; a filtered-out namespace is not listed at all.
    assert!(!run
        .join("resources/ns/sonobuoy/core_v1_configmaps.json")
        .exists());
    assert!(!run.join("resources/ns/other").exists());

    // Logs by namespace (kube-system and the run's own), by container, as served.
    assert_eq!(
        fs::read_to_string(run.join("podlogs/sonobuoy/p1/logs/e2e.txt")).unwrap(),
        "ok\nE0101 broke\nsomething failed\nWarning: slow\nlast line error"
    );
    assert!(run
        .join("podlogs/kube-system/coredns/logs/coredns.txt")
        .is_file());
    assert!(!run
        .join("podlogs/sonobuoy/p1/logs/sonobuoy-worker.txt")
        .exists());
    assert!(!run.join("podlogs/sonobuoy/evicted").exists());
    assert!(!run.join("podlogs/other").exists());

    assert_eq!(
        read_json(&run, "serverversion.json")["gitVersion"],
        "v1.26.3"
    );
    let groups = read_json(&run, "servergroups.json");
    assert_eq!(groups["groups"][0]["name"], "");
    assert_eq!(
        groups["groups"][0]["preferredVersion"]["groupVersion"],
        "v1"
    );
    assert_eq!(groups["groups"][1]["name"], "apps");

    let queries = read_json(&run, "meta/query-time.json");
    let q = |obj: &str, ns: &str| -> Value {
        queries
            .as_array()
            .unwrap()
            .iter()
            .find(|q| q["queryobj"] == obj && q["namespace"].as_str().unwrap_or_default() == ns)
            .unwrap_or_else(|| panic!("no query {obj} {ns}: {queries}"))
            .clone()
    };
    assert!(q("nodes", "")["error"].is_null());
    assert!(q("nodes", "")["time"].as_str().unwrap().ends_with('s'));
    assert!(q("discovery", "")["error"]
        .as_str()
        .unwrap()
        .contains("broken.example.com"));
    assert!(q("PodLogs", "sonobuoy")["error"]
        .as_str()
        .unwrap()
        .contains("no kubelet"));
    assert!(q("PodLogs", "kube-system")["error"].is_null());
    assert_eq!(s.failed, 2, "{queries}");

    let health = read_json(&run, "meta/clusterhealth.json");
    assert_eq!(health["api_version"], "v1.26.3");
    assert_eq!(health["node_health"]["total_nodes"], 3);
    assert_eq!(health["node_health"]["healthy_nodes"], 2);
    assert_eq!(health["node_health"]["details"][2]["ready"], "False");
    assert_eq!(health["pod_health"]["total_nodes"], 3);
    assert_eq!(health["pod_health"]["healthy_nodes"], 1);
    let e2e = "podlogs/sonobuoy/p1/logs/e2e.txt";
    assert_eq!(health["error_summary"]["Errors"][e2e], 3);
    assert_eq!(health["error_summary"]["Warnings"][e2e], 1);
    assert_eq!(
        health["error_summary"]["Warnings"]["podlogs/kube-system/coredns/logs/coredns.txt"],
        1
    );
    // `buoy results` reads it as `sonobuoy results` does.
    let summary = buoy_results::health::ClusterSummary::from_json(Some(
        &fs::read(run.join("meta/clusterhealth.json")).unwrap(),
    ));
    let mut out = Vec::new();
    buoy_results::health::write_text(&summary, &mut out).unwrap();
    let out = String::from_utf8(out).unwrap();
    assert!(out.contains("API Server version: v1.26.3"), "{out}");
    assert!(out.contains("Node health: 2/3 (66%)"), "{out}");

    let calls = calls.lock().unwrap();
    // Secrets only when named; every list paged.
    assert!(!calls.iter().any(|c| c.path().ends_with("/secrets")));
    assert!(calls
        .iter()
        .filter(|c| c.path().ends_with("/nodes"))
        .all(|c| c.query("limit").as_deref() == Some("100")));
}

#[tokio::test]
async fn resources_names_what_is_gathered_and_an_empty_list_gathers_nothing() {
    for (resources, want_nodes, want_logs, want_version) in [
        (json!(["nodes", "secrets"]), true, false, false),
        (json!(["podlogs", "serverversion"]), false, true, true),
        (json!([]), false, false, false),
    ] {
        let (client, server) = pair();
        let calls = server.serve(cluster);
        let api = KubeApi::new(client, "sonobuoy");
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        let cfg = gather_config(json!({"Resources": resources}));
        within(gather(&api, &cfg, &run, &dir.path().join(".g")))
            .await
            .unwrap();
        assert_eq!(
            run.join("resources/cluster/core_v1_nodes.json").is_file(),
            want_nodes,
            "{resources}"
        );
        assert_eq!(
            run.join("podlogs/kube-system/coredns/logs/coredns.txt")
                .is_file(),
            want_logs,
            "{resources}"
        );
        assert_eq!(
            run.join("serverversion.json").is_file(),
            want_version,
            "{resources}"
        );
        assert!(!run.join("servergroups.json").exists());
        assert!(run.join("meta/query-time.json").is_file());
        assert!(run.join("meta/clusterhealth.json").is_file());
        let named_secrets = resources.as_array().unwrap().iter().any(|r| r == "secrets");
        let asked_secrets = calls
            .lock()
            .unwrap()
            .iter()
            .any(|c| c.path().ends_with("/secrets"));
        assert_eq!(asked_secrets, named_secrets);
    }
}

#[test]
fn bad_patterns_and_both_since_limits_are_config_errors() {
    for bad in [
        json!({"Filters": {"Namespaces": "("}}),
        json!({"Limits": {"PodLogs": {"Namespaces": "[a"}}}),
        json!({"Limits": {"PodLogs": {"SinceSeconds": 5, "SinceTime": "2026-01-01T00:00:00Z"}}}),
    ] {
        let e = ClusterConfig::parse(None, &bad.to_string(), &|_: &str| None).unwrap_err();
        assert!(
            e.to_string().contains("Namespaces") || e.to_string().contains("Since"),
            "{e}"
        );
    }
}

/// A container that never started has no log to ask for; logs that cannot be read are
/// counted by kind, one line each, not one line per log.
#[tokio::test]
async fn logs_of_containers_that_never_started_are_not_asked_for_and_failures_are_tallied() {
    let (client, server) = pair();
    let running = json!([{"name": "c", "state": {"running": {}}}]);
    let calls = server.serve(move |c: &Call| match c.path() {
        "/api/v1/namespaces" => (
            200,
            list(
                "NamespaceList",
                vec![json!({"metadata": {"name": "sonobuoy"}})],
            ),
        ),
        "/api/v1/namespaces/sonobuoy/pods" => {
            let mut pods = Vec::new();
            for name in ["ran", "gone-1", "gone-2", "gone-3"] {
                let mut p = pod("sonobuoy", name, "Running", &["c"]);
                p["status"]["containerStatuses"] = running.clone();
                pods.push(p);
            }
            let mut waiting = pod("sonobuoy", "waiting", "Pending", &["c"]);
            waiting["status"]["containerStatuses"] =
                json!([{"name": "c", "state": {"waiting": {"reason": "ContainerCreating"}}}]);
            pods.push(waiting);
            (200, list("PodList", pods))
        }
        "/api/v1/namespaces/sonobuoy/pods/ran/log" => (200, Value::String("fine\n".into())),
        p if p.ends_with("/log") => (
            404,
            api_error(404, "NotFound", "the kubelet has no such pod"),
        ),
        _ => (404, api_error(404, "NotFound", &c.uri)),
    });
    let api = KubeApi::new(client, "sonobuoy");
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    fs::create_dir_all(run.join("meta")).unwrap();
    let cfg = gather_config(json!({"Resources": ["podlogs"]}));
    within(gather(&api, &cfg, &run, &dir.path().join(".gather")))
        .await
        .unwrap();
    assert_eq!(
        fs::read_to_string(run.join("podlogs/sonobuoy/ran/logs/c.txt")).unwrap(),
        "fine\n"
    );
    let asked: Vec<String> = calls
        .lock()
        .unwrap()
        .iter()
        .filter(|c| c.path().ends_with("/log"))
        .map(|c| c.path().to_string())
        .collect();
    assert_eq!(asked.len(), 4, "{asked:?}");
    assert!(!asked.iter().any(|p| p.contains("/waiting/")), "{asked:?}");
}

#[test]
fn failures_of_one_kind_are_one_line_with_a_count_and_the_first_example() {
    let not_found = |pod: &str| KubeError::Api {
        context: format!("GET {pod}"),
        source: kube::Error::Api(
            kube::core::Status::failure("no such pod", "NotFound")
                .with_code(404)
                .boxed(),
        ),
    };
    let mut t = Tally::default();
    t.add(&not_found("a"), "ns/a container c");
    t.add(&not_found("b"), "ns/b container c");
    t.add(&not_found("c"), "ns/c container c");
    t.add(
        &KubeError::Io {
            context: "write".into(),
            source: std::io::Error::other("disk"),
        },
        "ns/d container c",
    );
    let lines = t.lines();
    assert_eq!(lines.len(), 2, "{lines:?}");
    let nf = lines.iter().find(|l| l.0 == "404 NotFound").unwrap();
    assert_eq!((nf.1, nf.2.as_str()), (3, "ns/a container c"));
    assert!(t.lines().is_empty(), "a report empties the tally");
}

/// Pod logs are read no faster than 100 a second, whatever the API server could take: 30 logs
/// take at least 0.29 s (of the test's paused clock, which only timers move).
#[tokio::test(start_paused = true)]
async fn pod_logs_are_read_no_faster_than_a_hundred_a_second() {
    let (client, server) = pair();
    server.serve(move |c: &Call| match c.path() {
        "/api/v1/namespaces" => (
            200,
            list(
                "NamespaceList",
                vec![json!({"metadata": {"name": "sonobuoy"}})],
            ),
        ),
        "/api/v1/namespaces/sonobuoy/pods" => (
            200,
            list(
                "PodList",
                (0..30)
                    .map(|i| pod("sonobuoy", &format!("p{i}"), "Running", &["c"]))
                    .collect(),
            ),
        ),
        p if p.ends_with("/log") => (200, Value::String("a line\n".into())),
        _ => (404, api_error(404, "NotFound", &c.uri)),
    });
    let api = KubeApi::new(client, "sonobuoy");
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    fs::create_dir_all(run.join("meta")).unwrap();
    let cfg = gather_config(json!({"Resources": ["podlogs"]}));
    let started = tokio::time::Instant::now();
    within(gather(&api, &cfg, &run, &dir.path().join(".gather")))
        .await
        .unwrap();
    assert_eq!(
        fs::read_dir(run.join("podlogs/sonobuoy")).unwrap().count(),
        30
    );
    let took = started.elapsed();
    assert!(took >= std::time::Duration::from_millis(290), "{took:?}");
}
