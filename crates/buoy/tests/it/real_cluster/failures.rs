//! What goes wrong in a real cluster becomes error results, and the run still completes: a
//! plugin whose container keeps crashing, a DaemonSet node that never gets a pod (a taint the
//! plugin does not tolerate), and a plugin that never delivers (the timeout); beside them a
//! plugin that delivers. `buoy results` then fails the run and names what failed.

use std::time::Duration;

use buoy_testenv::NodeMode;
use serde_json::{json, Value};

use super::{
    cluster, config_for, delivering, kubectl, namespace_with_anchor, plugin, run_dir, tarball,
    OutOfCluster,
};
use crate::cli::buoy;

fn read(p: &std::path::Path) -> Value {
    serde_json::from_slice(&std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashing_plugin_a_node_without_a_pod_and_a_timeout_are_error_results() {
    let Some(c) = cluster("failures", Default::default()).await else {
        return;
    };
    let k = c.kubeconfig();
    let ns = "failures";
    namespace_with_anchor(&c, ns).await;
    let nodes = ["f-a".to_string(), "f-b".to_string()];
    c.add_nodes(&nodes, NodeMode::Run, &[("failures", "yes")])
        .await
        .unwrap();
    let (ok, out) = kubectl(
        k,
        &["taint", "nodes", "f-b", "buoy-test/no-pods=true:NoSchedule"],
        None,
    );
    assert!(ok, "{out}");
    let everywhere = json!({"nodeSelector": {"failures": "yes"}, "tolerations": [{"operator": "Exists"}], "containers": []});
    let untolerating = json!({"nodeSelector": {"failures": "yes"}, "containers": []});
    let job =
        json!({"nodeSelector": {"failures": "yes"}, "restartPolicy": "Never", "containers": []});
    let plugins = [
        plugin("crashes", "DaemonSet", "echo boom; exit 1", everywhere),
        plugin(
            "untolerated",
            "DaemonSet",
            &delivering("here", true),
            untolerating,
        ),
        plugin("silent", "Job", "exec sleep 3600", job.clone()),
        plugin("delivers", "Job", &delivering("done", false), job),
    ];
    let dir = tempfile::tempdir().unwrap();
    // Long enough for three crash restarts (1 + 2 + 4 s) and a look at them; the silent
    // plugin's timeout then ends the run.
    let config = config_for(dir.path(), ns, &plugins, 45);
    let output = dir.path().join("out");
    let mut agg = OutOfCluster::start(k, &config, &output, &["--missing-pod-grace=5"]);
    let status = tokio::time::timeout(Duration::from_secs(240), agg.child.wait())
        .await
        .expect("the run ends")
        .unwrap();
    assert!(status.success(), "{}", agg.log());

    let run = run_dir(&output).unwrap();
    for n in &nodes {
        let e = read(&run.join(format!("plugins/crashes/errors/{n}/error.json")));
        // Three restarts or more: when the monitor looks, the kubelet may have made another.
        let times: u32 = e["error"]
            .as_str()
            .unwrap()
            .strip_prefix("Container plugin has restarted unsuccessfully ")
            .and_then(|r| r.strip_suffix(" times"))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{}", e["error"]));
        assert!(times >= 3, "{times}");
        assert_eq!(e["pod"]["spec"]["nodeName"], n.as_str());
    }
    assert!(run
        .join("plugins/untolerated/results/f-a/out.txt")
        .is_file());
    let e = read(&run.join("plugins/untolerated/errors/f-b/error.json"));
    let msg = e["error"].as_str().unwrap();
    assert!(
        msg.starts_with("No pod was scheduled on node f-b within")
            && msg.ends_with("Check tolerations for plugin untolerated"),
        "{msg}"
    );
    let e = read(&run.join("plugins/silent/errors/global/error.json"));
    assert_eq!(e["error"], buoy_wire::TIMEOUT_ERROR_MESSAGE);
    assert!(run
        .join("plugins/delivers/results/global/out.txt")
        .is_file());

    let results = buoy()
        .arg("results")
        .arg(tarball(&output).unwrap())
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&results.stdout);
    assert_eq!(results.status.code(), Some(1), "{text}");
    assert!(
        text.contains("Plugin: crashes\nStatus: failed")
            && text.contains("\nContainer plugin has restarted unsuccessfully "),
        "{text}"
    );
    assert!(text.contains("Plugin: delivers\nStatus: passed"), "{text}");
}
