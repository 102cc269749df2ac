//! `buoy bench`, scaled down: it plays workers' traffic against a real aggregator over HTTP
//! and mTLS, in every shape it offers, and says when anything was not 2xx.

use std::sync::Arc;

use buoy_bench::{node_name, BenchConfig};

use crate::cli::buoy;
use crate::*;

fn expect(
    plugins: &[&'static str],
    nodes: usize,
    globals: &[&'static str],
) -> Vec<(&'static str, String)> {
    let mut v = Vec::new();
    for n in 0..nodes {
        for p in plugins {
            v.push((*p, node_name(n)));
        }
    }
    v.extend(globals.iter().map(|g| (*g, "global".to_string())));
    v
}

fn borrowed<'a>(v: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    v.iter().map(|(p, n)| (*p, n.as_str())).collect()
}

#[tokio::test]
async fn bench_keep_alive_over_http_stores_every_result() {
    let keys = expect(&["p", "q"], 40, &["e2e"]);
    let mut a = spawn_aggregator(&borrowed(&keys), insecure(), None, None).await;
    let cfg = BenchConfig {
        url: a.url(),
        nodes: 40,
        node_plugins: vec!["p".into(), "q".into()],
        global_plugins: vec!["e2e".into()],
        size: 3000,
        concurrency: 8,
        ..Default::default()
    };
    let ticks = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let t2 = ticks.clone();
    let r = within(buoy_bench::run(cfg, move |_, _| {
        t2.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }))
    .await
    .unwrap();
    assert!(r.all_ok(), "{r:?}");
    assert_eq!((r.results, r.ok), (81, 81));
    assert_eq!(r.codes.get("200"), Some(&81));
    assert_eq!(ticks.load(std::sync::atomic::Ordering::Relaxed), 81);
    assert!(r.results_per_s > 0.0 && r.p50_ms <= r.p99_ms && r.p99_ms <= r.max_ms);
    let f = a.finished().await;
    let stored = a.run_dir().join("plugins/q/results/n00039/result.bin");
    assert_eq!(std::fs::metadata(stored).unwrap().len(), 3000);
    assert!(f.tarball.exists());
}

#[tokio::test]
async fn bench_over_mtls_with_new_connections_tarballs_chunks_slow_clients_and_progress() {
    let keys = expect(&["p"], 12, &["e2e"]);
    let (a, _pki, dir) = spawn_mtls_aggregator(&borrowed(&keys), &["p", "e2e"]).await;
    let cfg = BenchConfig {
        url: format!("https://127.0.0.1:{}", a.addr.port()),
        nodes: 12,
        node_plugins: vec!["p".into()],
        global_plugins: vec!["e2e".into()],
        size: 4096,
        concurrency: 4,
        tar_files: 3,
        chunked: true,
        new_conn: true,
        certs: Some(dir.path().to_path_buf()),
        slow: 2,
        slow_rate: 64 << 10,
        progress_rate: 20.0,
        ..Default::default()
    };
    let r = within(buoy_bench::run(cfg, |_, _| {})).await.unwrap();
    assert!(r.all_ok(), "{r:?}");
    assert_eq!(r.ok, 13);
    assert!(r.slow.is_some());
    // Each tarball was extracted: three files per result.
    let files = files_under(&a.run_dir().join("plugins/p/results/n00000"));
    assert_eq!(files.len(), 3, "{files:?}");
    a.stop().await;
}

#[tokio::test]
async fn buoy_bench_prints_json_and_fails_when_uploads_are_refused() {
    // The aggregator expects 5 nodes; the bench sends 8: three are refused with 403.
    let keys = expect(&["p"], 5, &[]);
    let a = spawn_aggregator(&borrowed(&keys), insecure(), None, None).await;
    let o = within(
        buoy()
            .args([
                "bench",
                "--url",
                &a.url(),
                "--nodes",
                "8",
                "--node-plugins",
                "p",
            ])
            .args(["--size", "100", "-c", "2", "--json"])
            .output(),
    )
    .await
    .unwrap();
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    for k in ["results_per_s", "mb_per_s", "p50_ms", "p99_ms", "max_ms"] {
        assert!(v[k].is_number(), "{k} in {v}");
    }
    assert_eq!(v["codes"], serde_json::json!({"200": 5, "403": 3}));
    a.stop().await;
}
