//! The quickstart as a user runs it in a cluster: `buoy manifest | kubectl apply`, the
//! aggregator running in its pod with its own service account (RBAC as the manifest grants
//! it), the plugins on every node, `buoy status`, the tarball's contents (results, gathered
//! resources, pod logs, versions, health, run.log), `buoy results`, and `buoy delete`.

use std::time::Duration;

use buoy_testenv::NodeMode;
use serde_json::Value;

use super::{
    all_passed, annotation, cluster, eventually_within, get_json, kubectl, tar_file, tar_list,
    IN_CLUSTER,
};
use crate::cli::buoy;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quickstart_manifest_runs_in_the_cluster_and_buoy_delete_removes_it() {
    let Some(c) = cluster(
        "quickstart_manifest_runs_in_the_cluster",
        Default::default(),
    )
    .await
    else {
        return;
    };
    let _ports = IN_CLUSTER.lock().await;
    let k = c.kubeconfig();
    let ns = "quickstart";
    let nodes = ["qs-a".to_string(), "qs-b".to_string()];
    c.add_nodes(&nodes, NodeMode::Run, &[]).await.unwrap();
    let root = env!("CARGO_MANIFEST_DIR").to_string() + "/../../examples/quickstart";
    let out = buoy()
        .args([
            "manifest",
            "--plugin",
            &root,
            "--image",
            "buoy:test",
            "-n",
            ns,
        ])
        .output()
        .await
        .unwrap();
    assert!(out.status.success());
    let manifest = String::from_utf8(out.stdout).unwrap();
    let (ok, text) = kubectl(k, &["apply", "-f", "-"], Some(&manifest));
    assert!(ok, "kubectl apply: {text}");

    let done = eventually_within("the run to complete", Duration::from_secs(300), || {
        annotation(k, ns).filter(|s| s["status"] == "complete")
    })
    .await;
    let keys: Vec<(String, String)> = done["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["plugin"].as_str().unwrap().into(),
                p["node"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        keys,
        [
            ("hello-e2e".to_string(), "global".to_string()),
            ("node-info".into(), "qs-a".into()),
            ("node-info".into(), "qs-b".into())
        ]
    );
    assert!(all_passed(&done), "{done}");
    assert_eq!(done["tar-info"]["sha256"].as_str().unwrap().len(), 64);

    // `buoy status` reads the annotation as `sonobuoy status` would.
    let st = buoy()
        .args(["status", "-n", ns, "--kubeconfig", k.to_str().unwrap()])
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&st.stdout);
    assert!(st.status.success(), "{text}");
    assert!(
        text.contains("hello-e2e") && text.contains("node-info"),
        "{text}"
    );

    // The tarball, from the aggregator pod's output volume.
    let out_dir = c
        .kubelet
        .pod_dir(ns, "sonobuoy")
        .unwrap()
        .join("volumes/output-volume");
    let tarball = super::tarball(&out_dir).expect("a sealed tarball");
    let names = tar_list(&tarball);
    let has = |suffix: &str| names.iter().any(|n| n.ends_with(suffix));
    for want in [
        "plugins/hello-e2e/results/global/junit_01.xml",
        "plugins/node-info/results/qs-a/node-info.txt",
        "plugins/node-info/results/qs-b/node-info.txt",
        "plugins/hello-e2e/sonobuoy_results.yaml",
        "plugins/hello-e2e/definition.json",
        "resources/cluster/core_v1_nodes.json",
        "resources/ns/quickstart/core_v1_pods.json",
        "serverversion.json",
        "servergroups.json",
        "meta/query-time.json",
        "meta/clusterhealth.json",
        "meta/config.json",
        "meta/run.log",
    ] {
        assert!(has(want), "{want} missing from {names:?}");
    }
    let member = |suffix: &str| names.iter().find(|n| n.ends_with(suffix)).unwrap().clone();
    // Gathered before cleanup: the plugins' pods are in the resources, their logs were read.
    let pods: Value = serde_json::from_str(&tar_file(
        &tarball,
        &member("resources/ns/quickstart/core_v1_pods.json"),
    ))
    .unwrap();
    let plugin_pods: Vec<String> = pods["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["metadata"]["labels"]["sonobuoy-component"] == "plugin")
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(plugin_pods.len(), 3, "{plugin_pods:?}");
    let job_pod = plugin_pods
        .iter()
        .find(|p| p.contains("hello-e2e"))
        .unwrap();
    let worker_log = tar_file(
        &tarball,
        &member(&format!(
            "podlogs/quickstart/{job_pod}/logs/sonobuoy-worker.txt"
        )),
    );
    assert!(worker_log.contains("result delivered"), "{worker_log}");
    let version: Value =
        serde_json::from_str(&tar_file(&tarball, &member("serverversion.json"))).unwrap();
    assert_eq!(version["gitVersion"], "v1.26.0");
    let run_log = tar_file(&tarball, &member("meta/run.log"));
    assert!(run_log.lines().count() > 3, "{run_log}");

    let results = buoy().arg("results").arg(&tarball).output().await.unwrap();
    let text = String::from_utf8_lossy(&results.stdout);
    assert!(results.status.success(), "{text}");
    assert!(
        text.contains("Plugin: hello-e2e") && text.contains("Status: passed"),
        "{text}"
    );

    // Plugin pods went at cleanup; every plugin object was the aggregator pod's.
    let left = get_json(k, &["pods", "-n", ns, "-l", "sonobuoy-component=plugin"]);
    assert!(left["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["metadata"]["deletionTimestamp"].is_string()));
    let secrets = get_json(k, &["secrets", "-n", ns]);
    let plugin_secrets: Vec<&Value> = secrets["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| {
            s["metadata"]["name"]
                .as_str()
                .unwrap()
                .starts_with("sonobuoy-plugin-")
        })
        .collect();
    assert_eq!(plugin_secrets.len(), 2, "{secrets}");
    for s in plugin_secrets {
        assert_eq!(
            s["metadata"]["ownerReferences"][0]["name"], "sonobuoy",
            "{s}"
        );
    }

    let del = buoy()
        .args([
            "delete",
            "-n",
            ns,
            "--wait",
            "--kubeconfig",
            k.to_str().unwrap(),
        ])
        .output()
        .await
        .unwrap();
    crate::succeeded(&del);
    let (exists, _) = kubectl(k, &["get", "namespace", ns], None);
    assert!(!exists, "the namespace outlived buoy delete --wait");
    let roles = get_json(k, &["clusterroles", "-l", &format!("namespace={ns}")]);
    assert!(roles["items"].as_array().unwrap().is_empty(), "{roles}");
}

/// `buoy run` against the cluster, stopped with Ctrl-C while its plugin runs: it removes what
/// it created and says it was stopped (exit 130).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buoy_run_stopped_with_ctrl_c_removes_what_it_created() {
    let Some(c) = cluster("buoy_run_ctrl_c", Default::default()).await else {
        return;
    };
    let _ports = IN_CLUSTER.lock().await;
    let k = c.kubeconfig();
    c.add_nodes(&["cc-a".into()], NodeMode::Run, &[])
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("waits.yaml"),
        super::plugin("waits", "Job", "exec sleep 3600", serde_json::Value::Null).to_string(),
    )
    .unwrap();
    let run = buoy()
        .args([
            "run",
            "--kubeconfig",
            k.to_str().unwrap(),
            "-n",
            "ctrlc",
            "--image",
            "buoy:test",
            "-q",
        ])
        .arg(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    super::eventually("the plugin's pod running", || {
        let pods = get_json(k, &["pods", "-n", "ctrlc", "-l", "sonobuoy-plugin=waits"]);
        let p = pods["items"].as_array()?.first()?.clone();
        (p["status"]["phase"] == "Running").then_some(())
    })
    .await;
    // SAFETY: kill(2) on our own child.
    unsafe {
        libc::kill(run.id().unwrap() as i32, libc::SIGINT);
    }
    let out = tokio::time::timeout(Duration::from_secs(120), run.wait_with_output())
        .await
        .expect("buoy run stops")
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("stopped; cleaning up"), "{stderr}");
    assert!(
        !kubectl(k, &["get", "namespace", "ctrlc"], None).0,
        "{stderr}"
    );
}
