//! An aggregator that dies and comes back: kill -9 in its pod right after launch, mid-results
//! and while sealing (the kubelet restarts the container on the same output volume, as a real
//! one would), a 60 s outage while a plugin finishes, and SIGTERM. The run carries on with the
//! same UUID, creates no object twice, loses no result and ends complete (or, stopped, says
//! so).

use std::path::{Path, PathBuf};
use std::time::Duration;

use buoy_testenv::{NodeMode, TestCluster};
use serde_json::json;

use super::{
    annotation, cluster, config_for, eventually, eventually_within, get_json, kubectl,
    namespace_with_anchor, run_dir, ClusterOpts, OutOfCluster, IN_CLUSTER,
};
use crate::cli::buoy;

/// A plugin script that waits for `gate` to appear, then delivers (and, for a DaemonSet,
/// sleeps).
fn gated(gate: &str, sleep: bool) -> String {
    format!(
        "while [ ! -e /gate/{gate} ]; do sleep 0.2; done; {}",
        super::delivering(gate, sleep)
    )
}

/// A plugin manifest whose container sees the host directory `gates` at `/gate`.
fn gated_plugin(name: &str, driver: &str, gate: &str, gates: &Path) -> serde_json::Value {
    json!({"sonobuoy-config": {"driver": driver, "plugin-name": name, "result-format": "raw"},
        "spec": {"name": "plugin", "image": "busybox:1.36", "command": ["sh", "-c", gated(gate, driver == "DaemonSet")],
                 "volumeMounts": [{"name": "gate", "mountPath": "/gate"}]},
        "extra-volumes": [{"name": "gate", "hostPath": {"path": gates.to_str().unwrap()}}]})
}

/// The words of `text` shaped like a UUID (8-4-4-4-12 hex digits).
fn uuid_words(text: &str) -> Vec<&str> {
    let shape = |w: &str| {
        let parts: Vec<&str> = w.split('-').collect();
        parts.iter().map(|p| p.len()).eq([8, 4, 4, 4, 12])
            && parts
                .iter()
                .all(|p| p.bytes().all(|b| b.is_ascii_hexdigit()))
    };
    text.split(|c: char| !(c.is_ascii_hexdigit() || c == '-'))
        .filter(|w| shape(w))
        .collect()
}

fn kill(pid: u32, signal: i32) {
    // SAFETY: kill(2) on a process this test's cluster started.
    unsafe {
        libc::kill(pid as i32, signal);
    }
}

/// The answer codes to Buoy's requests to create `resource` in `ns`, in order.
fn creates(audit: &Path, ns: &str, resource: &str) -> Vec<u16> {
    let paths = [
        format!("/api/v1/namespaces/{ns}/{resource}"),
        format!("/apis/apps/v1/namespaces/{ns}/{resource}"),
    ];
    buoy_testenv::audit::requests(audit, "buoy/")
        .iter()
        .filter(|r| r.verb == "create" && paths.iter().any(|p| r.uri.split('?').next() == Some(p)))
        .map(|r| r.code)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_after_launch_mid_results_and_while_sealing_carries_the_run_on_once() {
    // Each pod log takes 2 s to read: gathering lasts long enough to be caught under way.
    let opts = ClusterOpts {
        log_delay: Duration::from_secs(2),
        ..Default::default()
    };
    let Some(c) = cluster("kill_9_three_times", opts).await else {
        return;
    };
    let _ports = IN_CLUSTER.lock().await;
    let k = c.kubeconfig();
    let ns = "restarts";
    c.add_nodes(&["r-a".into()], NodeMode::Run, &[])
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let gates = dir.path().join("gates");
    std::fs::create_dir_all(&gates).unwrap();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    for (name, driver) in [("job", "Job"), ("ds", "DaemonSet")] {
        std::fs::write(
            plugins.join(format!("{name}.yaml")),
            gated_plugin(name, driver, name, &gates).to_string(),
        )
        .unwrap();
    }
    let out = buoy()
        .args(["manifest", "--plugin"])
        .arg(&plugins)
        .args(["--image", "buoy:test", "-n", ns])
        .output()
        .await
        .unwrap();
    assert!(out.status.success());
    let (ok, text) = kubectl(
        k,
        &["apply", "-f", "-"],
        Some(&String::from_utf8(out.stdout).unwrap()),
    );
    assert!(ok, "{text}");

    let aggregator = || {
        c.kubelet
            .pids(ns, "sonobuoy")
            .into_iter()
            .find(|(name, _)| name == "kube-sonobuoy")
            .map(|(_, pid)| pid)
    };
    let restart = |why: &str, pid: u32| {
        eprintln!("kill -9 the aggregator ({why})");
        kill(pid, libc::SIGKILL);
    };
    // 1. Right after launch: the first plugin's Secret exists.
    let first = eventually("the first plugin object", || {
        let s = get_json(k, &["secrets", "-n", ns]);
        s["items"]
            .as_array()?
            .iter()
            .any(|s| {
                s["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with("sonobuoy-plugin-"))
            })
            .then_some(())?;
        aggregator()
    })
    .await;
    restart("right after launch", first);
    let second = eventually("the aggregator back", || {
        aggregator().filter(|p| *p != first)
    })
    .await;

    // 2. Mid-results: the Job delivered, the DaemonSet has not.
    std::fs::write(gates.join("job"), "").unwrap();
    eventually("the Job's result", || {
        let a = annotation(k, ns)?;
        let job = a["plugins"]
            .as_array()?
            .iter()
            .find(|p| p["plugin"] == "job")?
            .clone();
        (job["status"] == "complete").then_some(())
    })
    .await;
    let pid = eventually("the aggregator", aggregator).await;
    assert_eq!(pid, second);
    restart("mid-results", pid);
    let third = eventually("the aggregator back", || {
        aggregator().filter(|p| *p != second)
    })
    .await;

    // 3. While sealing: gathering is under way.
    let output = c
        .kubelet
        .pod_dir(ns, "sonobuoy")
        .unwrap()
        .join("volumes/output-volume");
    std::fs::write(gates.join("ds"), "").unwrap();
    eventually_within("gathering under way", Duration::from_secs(120), || {
        std::fs::read_dir(&output)
            .ok()?
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with(".buoy-gather-"))
            .then_some(())
    })
    .await;
    restart("while sealing", third);

    let done = eventually_within("the run to complete", Duration::from_secs(300), || {
        annotation(k, ns).filter(|a| a["status"] == "complete")
    })
    .await;
    let tarball = super::tarball(&output).expect("a tarball");
    let uuid = run_dir(&output)
        .unwrap()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert!(tarball
        .to_string_lossy()
        .ends_with(&format!("_sonobuoy_{uuid}.tar.gz")));
    assert!(super::all_passed(&done), "{done}");

    // Four starts, one UUID: no start ever named another.
    let log = std::fs::read_to_string(
        c.kubelet
            .pod_dir(ns, "sonobuoy")
            .unwrap()
            .join("logs/kube-sonobuoy.log"),
    )
    .unwrap();
    let starts: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("in-cluster run"))
        .collect();
    assert_eq!(starts.len(), 4, "{log}");
    // Every UUID-shaped word the aggregator wrote, less the Kubernetes objects' UIDs.
    let object_uid = |w: &str| {
        let plain = log.replace("uuid=", "run=");
        plain.contains(&format!("uid\":\"{w}")) || plain.contains(&format!("uid={w}"))
    };
    let uuids: std::collections::BTreeSet<&str> = uuid_words(&log)
        .into_iter()
        .filter(|w| !object_uid(w))
        .collect();
    assert_eq!(
        uuids.into_iter().collect::<Vec<_>>(),
        [uuid.as_str()],
        "{log}"
    );
    // Nothing created twice.
    let audit = &c.cp.audit_log;
    // The audit log is written in batches: wait for the last creation to be in it.
    eventually("the audit log", || {
        creates(audit, ns, "daemonsets")
            .contains(&201)
            .then_some(())
    })
    .await;
    for (resource, want) in [("secrets", 2), ("pods", 1), ("daemonsets", 1)] {
        // A create the killed aggregator had in flight can land after its successor looked
        // for the object; the successor's create then finds it (409) and creates nothing.
        let codes = creates(audit, ns, resource);
        let made = codes.iter().filter(|c| **c == 201).count();
        assert_eq!(made, want, "{resource}: {codes:?}\n{log}");
        assert!(
            codes.iter().all(|c| matches!(c, 201 | 409)),
            "{resource}: {codes:?}\n{log}"
        );
    }
    // Gathered while the plugins' pods were there.
    let names = super::tar_list(&tarball);
    let pods_json = names
        .iter()
        .find(|n| n.ends_with("resources/ns/restarts/core_v1_pods.json"))
        .unwrap();
    let pods: serde_json::Value =
        serde_json::from_str(&super::tar_file(&tarball, pods_json)).unwrap();
    let plugin_pods = pods["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["metadata"]["labels"]["sonobuoy-component"] == "plugin")
        .count();
    assert_eq!(plugin_pods, 2, "{names:?}");
}

/// A Job plugin held at its gate, run by an out-of-cluster aggregator, once its pod runs.
struct GatedJob {
    c: TestCluster,
    gates: PathBuf,
    config: PathBuf,
    output: PathBuf,
    agg: OutOfCluster,
    _dir: tempfile::TempDir,
}

async fn gated_job_running(test: &str, ns: &str) -> Option<GatedJob> {
    let c = cluster(test, Default::default()).await?;
    let k = c.kubeconfig().to_path_buf();
    namespace_with_anchor(&c, ns).await;
    c.add_nodes(&[format!("{ns}-a")], NodeMode::Run, &[("gated", "yes")])
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let gates = dir.path().join("gates");
    std::fs::create_dir_all(&gates).unwrap();
    let mut p = gated_plugin("late", "Job", "late", &gates);
    p["podSpec"] =
        json!({"restartPolicy": "Never", "containers": [], "nodeSelector": {"gated": "yes"}});
    let config = config_for(dir.path(), ns, &[p], 600);
    let output = dir.path().join("out");
    let agg = OutOfCluster::start(&k, &config, &output, &[]);
    eventually("the plugin running", || {
        let pods = get_json(&k, &["pods", "-n", ns, "-l", "sonobuoy-plugin=late"]);
        let p = pods["items"].as_array()?.first()?.clone();
        (p["status"]["phase"] == "Running").then_some(())
    })
    .await;
    Some(GatedJob {
        c,
        gates,
        config,
        output,
        agg,
        _dir: dir,
    })
}

/// The aggregator is gone for a minute while its plugin finishes: the worker keeps trying and
/// delivers to the restarted aggregator (it used to give up after about 15 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sixty_second_outage_of_the_aggregator_loses_no_result() {
    let Some(mut g) = gated_job_running("a_sixty_second_outage", "outage").await else {
        return;
    };
    // Its aggregator goes away, and the plugin finishes meanwhile.
    g.agg.child.start_kill().unwrap();
    g.agg.child.wait().await.unwrap();
    let down = std::time::Instant::now();
    std::fs::write(g.gates.join("late"), "").unwrap();
    // The outage itself is what is tested: a minute with nobody listening.
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(down.elapsed() >= Duration::from_secs(60));
    let mut second = OutOfCluster::start(g.c.kubeconfig(), &g.config, &g.output, &[]);
    let status = tokio::time::timeout(Duration::from_secs(180), second.child.wait())
        .await
        .expect("the run ends")
        .unwrap();
    assert!(status.success(), "{}", second.log());
    let run = run_dir(&g.output).unwrap();
    assert!(
        run.join("plugins/late/results/global/out.txt").is_file(),
        "the result delivered during the outage is not there: {:?}",
        std::fs::read_dir(run.join("plugins/late"))
            .map(|d| d.flatten().map(|e| e.path()).collect::<Vec<_>>())
    );
    assert!(!run.join("plugins/late/errors").exists());
}

/// SIGTERM before every result: the aggregator stops, its last status says the run was
/// interrupted and why, and the plugins are left for a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_before_every_result_publishes_the_interruption_and_leaves_the_plugins() {
    let Some(mut g) = gated_job_running("sigterm_mid_run", "sigterm").await else {
        return;
    };
    let k = g.c.kubeconfig();
    kill(g.agg.child.id().unwrap(), libc::SIGTERM);
    let status = tokio::time::timeout(Duration::from_secs(120), g.agg.child.wait())
        .await
        .expect("the aggregator stops")
        .unwrap();
    assert!(!status.success(), "{}", g.agg.log());
    let a = annotation(k, "sigterm").unwrap();
    assert_eq!(a["status"], "failed", "{a}");
    assert!(
        a["interrupted"].as_str().unwrap().contains("SIGTERM"),
        "{a}"
    );
    let pods = get_json(k, &["pods", "-n", "sigterm", "-l", "sonobuoy-plugin=late"]);
    assert!(
        pods["items"][0]["metadata"]["deletionTimestamp"].is_null(),
        "the plugin was deleted"
    );
}
