//! 5,000 nodes (opt-in: `BUOY_TEST_SCALE=1`, about ten minutes on two cores): two DaemonSet
//! plugins and a Job plugin, the nodes played by the stand-in kubelet (each pod marked running
//! and its worker's upload made with the pod's own credentials), and one node whose kubelet
//! is down, where the Job and a pod of each DaemonSet wait until the timeout: the run stays
//! running with every monitor at work, then gathers and seals.
//! Asserts the aggregator's peak RSS, its requests per minute while the run waits (from the
//! API server's audit log) and the status annotation's size, and prints all three.
//! `BUOY_TEST_SCALE_NODES` and `BUOY_TEST_SCALE_TIMEOUT` (seconds) change the size and the
//! wait; `BUOY_TEST_SCALE_BIN` measures another build of `buoy` (a release one).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::time::Duration;

use buoy_testenv::{ControlPlaneOptions, NodeMode};
use serde_json::{json, Value};

use super::{
    annotation, cluster, config_for, eventually_within, namespace_with_anchor, peak_rss_kib,
    plugin, rss_kib, ClusterOpts, OutOfCluster,
};

/// A plain-HTTP GET of the aggregator's status page listener.
fn get(port: u16, path: &str) -> Option<Value> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    serde_json::from_str(out.split_once("\r\n\r\n")?.1).ok()
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_nodes_fit_64_mib_30_requests_a_minute_and_a_bounded_annotation() {
    if std::env::var("BUOY_TEST_SCALE").as_deref() != Ok("1") {
        eprintln!("SKIPPED five_thousand_nodes: set BUOY_TEST_SCALE=1 (about ten minutes)");
        return;
    }
    let n = env_or("BUOY_TEST_SCALE_NODES", 5000) as usize;
    let timeout = env_or("BUOY_TEST_SCALE_TIMEOUT", 480);
    let opts = ClusterOpts {
        control_plane: ControlPlaneOptions { component_qps: 500 },
        ..Default::default()
    };
    let Some(c) = cluster("five_thousand_nodes", opts).await else {
        return;
    };
    let k = c.kubeconfig();
    let ns = "scale";
    namespace_with_anchor(&c, ns).await;
    let names: Vec<String> = (0..n).map(|i| format!("scale-{i:05}")).collect();
    let started = std::time::Instant::now();
    c.add_nodes(&names, NodeMode::Play, &[("scale", "yes")])
        .await
        .unwrap();
    // Its kubelet is down: the Job and both DaemonSets' pods there never deliver.
    c.add_nodes(
        &["scale-held".into()],
        NodeMode::Down,
        &[("hold", "yes"), ("scale", "yes")],
    )
    .await
    .unwrap();
    eprintln!("scale: {n} nodes registered in {:?}", started.elapsed());

    let every = json!({"nodeSelector": {"scale": "yes"}, "tolerations": [{"operator": "Exists"}], "containers": []});
    let held = json!({"nodeSelector": {"hold": "yes"}, "restartPolicy": "Never", "containers": []});
    let plugins = [
        plugin("ds-a", "DaemonSet", "true", every.clone()),
        plugin("ds-b", "DaemonSet", "true", every),
        plugin("held", "Job", "true", held),
    ];
    let dir = tempfile::tempdir().unwrap();
    let config = config_for(dir.path(), ns, &plugins, timeout);
    let view = buoy_testenv::free_port();
    let page = format!("--status-page=127.0.0.1:{view}");
    // The aggregator measured: this build's, or the one `BUOY_TEST_SCALE_BIN` names (a
    // release build, as users run it).
    let cmd = match std::env::var_os("BUOY_TEST_SCALE_BIN") {
        Some(bin) => {
            let mut c = tokio::process::Command::new(bin);
            c.env("BUOY_LOG", "info").kill_on_drop(true);
            c
        }
        None => crate::cli::buoy(),
    };
    let mut agg = OutOfCluster::start_with(
        cmd,
        k,
        &config,
        &dir.path().join("out"),
        &["--no-exit", &page],
    );
    let pid = agg.child.id().unwrap();
    let launched = time::OffsetDateTime::now_utc();

    // Every played result in: from here until the timeout, the run only waits.
    let mut biggest = 0usize;
    // The resident set by the run's phase, to say where a peak came from.
    let mut rss_by_phase: BTreeMap<String, u64> = BTreeMap::new();
    let mut sample = |phase: &str| {
        let now = rss_kib(pid).unwrap_or_default();
        let e = rss_by_phase.entry(phase.to_string()).or_default();
        *e = (*e).max(now);
    };
    let mut last_note = std::time::Instant::now();
    let all_in = eventually_within(
        "every DaemonSet result",
        Duration::from_secs(timeout),
        || {
            sample("launching and receiving");
            if last_note.elapsed() > Duration::from_secs(30) {
                last_note = std::time::Instant::now();
                let counts = get(view, "/api/v1/overview").map(|o| {
                    o["plugins"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|p| {
                            format!(
                                "{} {}/{}",
                                p["plugin"].as_str().unwrap_or(""),
                                p["complete"],
                                p["expected"]
                            )
                        })
                        .collect::<Vec<_>>()
                });
                eprintln!(
                    "scale: {} s after launch: {counts:?}",
                    (time::OffsetDateTime::now_utc() - launched).whole_seconds()
                );
            }
            if let Some(a) = annotation(k, ns) {
                biggest = biggest.max(a.to_string().len());
            }
            let o = get(view, "/api/v1/overview")?;
            let done: u64 = o["plugins"]
                .as_array()?
                .iter()
                .filter(|p| p["plugin"] != "held")
                .map(|p| p["complete"].as_u64().unwrap_or(0))
                .sum();
            (done == 2 * n as u64).then(time::OffsetDateTime::now_utc)
        },
    )
    .await;
    eprintln!(
        "scale: {} results in {} s after launch",
        2 * n,
        (all_in - launched).whole_seconds()
    );
    let complete = eventually_within(
        "the run to complete",
        Duration::from_secs(timeout + 900),
        || {
            let a = annotation(k, ns)?;
            biggest = biggest.max(a.to_string().len());
            let over = time::OffsetDateTime::now_utc() > launched + Duration::from_secs(timeout);
            sample(if over {
                "gathering and sealing"
            } else {
                "waiting"
            });
            (a["status"] == "complete").then_some(a)
        },
    )
    .await;
    let peak = peak_rss_kib(pid).unwrap();
    let final_size = complete.to_string().len();
    assert!(complete["tar-info"]["sha256"].is_string(), "{complete}");

    // The wait: from every played result in until the timeout (its error results are
    // recorded at launch + timeout), less half a minute at each end for the edges.
    let window_start = all_in + Duration::from_secs(30);
    let window_end = launched + Duration::from_secs(timeout) - Duration::from_secs(30);
    let minutes = (window_end - window_start).as_seconds_f64() / 60.0;
    assert!(
        minutes >= 1.0,
        "the wait is too short to measure ({minutes:.1} min): raise BUOY_TEST_SCALE_TIMEOUT"
    );
    let requests = buoy_testenv::audit::requests(&c.cp.audit_log, "buoy/");
    let in_window: Vec<_> = requests
        .iter()
        .filter(|r| r.at >= window_start && r.at < window_end)
        .collect();
    let per_minute = in_window.len() as f64 / minutes;
    let mut by_kind: BTreeMap<String, usize> = BTreeMap::new();
    for r in &in_window {
        let path = r.uri.split('?').next().unwrap_or_default();
        let kind = path
            .rsplit('/')
            .find(|s| !s.is_empty() && !s.starts_with("sonobuoy"))
            .unwrap_or_default();
        *by_kind.entry(format!("{} {kind}", r.verb)).or_default() += 1;
    }
    let _ = agg.child.start_kill();
    eprintln!(
        "scale: {n} nodes, 2 DaemonSets + 1 Job: peak RSS {peak} KiB ({:.1} MiB); {} requests by buoy/ in all, {:.1}/min over {minutes:.1} min of waiting {by_kind:?}; annotation at most {biggest} bytes, {final_size} complete; largest RSS seen by phase (KiB) {rss_by_phase:?}",
        peak as f64 / 1024.0,
        requests.len(),
        per_minute
    );
    assert!(
        !requests.is_empty(),
        "no request named buoy/ in the audit log"
    );
    assert!(biggest <= 64 * 1024, "annotation {biggest} bytes");
    assert!(
        per_minute <= 30.0,
        "{per_minute:.1} requests/min while waiting: {by_kind:?}"
    );
    assert!(peak <= 64 * 1024, "peak RSS {peak} KiB");
}
