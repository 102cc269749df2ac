//! The worker against a real aggregator and against a scripted server: done file naming a
//! file or a directory, retries that resend the whole file, giving up, 409 as delivered, the
//! progress relay passing the upstream status back, and a missing result file.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

use buoy_worker::{Delivery, Mode, WorkerConfig, WorkerError};

use crate::*;

#[derive(Debug, Clone)]
struct Seen {
    path: String,
    content_type: Option<String>,
    disposition: Option<String>,
    body_len: usize,
}

/// A server that answers with `statuses` in turn (the last one repeats) and records requests.
async fn scripted(statuses: Vec<u16>) -> (SocketAddr, Arc<Mutex<Vec<Seen>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let (seen, statuses) = (seen2.clone(), statuses.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let (seen, statuses) = (seen.clone(), statuses.clone());
                        async move {
                            let h = |n| {
                                req.headers()
                                    .get(n)
                                    .map(|v: &http::HeaderValue| v.to_str().unwrap().to_string())
                            };
                            let (ct, cd, path) = (
                                h("content-type"),
                                h("content-disposition"),
                                req.uri().path().to_string(),
                            );
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            let n = {
                                let mut s = seen.lock().unwrap();
                                s.push(Seen {
                                    path,
                                    content_type: ct,
                                    disposition: cd,
                                    body_len: body.len(),
                                });
                                s.len()
                            };
                            let status = statuses[(n - 1).min(statuses.len() - 1)];
                            let mut r =
                                hyper::Response::new(Full::new(Bytes::from("scripted answer")));
                            *r.status_mut() = http::StatusCode::from_u16(status).unwrap();
                            Ok::<_, Infallible>(r)
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    (addr, seen)
}

fn config(url: String, plugin: &str, node: &str, dir: &std::path::Path) -> WorkerConfig {
    let mut c = WorkerConfig::new(url, plugin, node, dir);
    c.done_file_delay = Duration::ZERO;
    c.poll_interval = Duration::from_millis(50);
    c.backoff = Duration::from_millis(10);
    c.max_backoff = Duration::from_millis(40);
    c.retry_for = Duration::from_millis(300);
    c.progress_bind = std::net::IpAddr::from([127, 0, 0, 1]);
    c.progress_port = 0;
    c
}

/// Runs a worker to the end (no shutdown), bounded like every await here.
async fn deliver(cfg: &WorkerConfig, mode: Mode) -> Result<Delivery, WorkerError> {
    within(buoy_worker::run(cfg, mode, std::future::pending())).await
}

#[tokio::test]
async fn worker_delivers_a_file_per_node_and_a_directory_globally() {
    let mut a = spawn_aggregator(&[("p", "n1"), ("e2e", "global")], insecure(), None, None).await;
    let node_dir = tempfile::tempdir().unwrap();
    std::fs::write(node_dir.path().join("r.xml"), b"<testsuite/>").unwrap();
    std::fs::write(node_dir.path().join("done"), b"r.xml\n").unwrap();
    let d = deliver(
        &config(a.url(), "p", "n1", node_dir.path()),
        Mode::SingleNode,
    )
    .await
    .unwrap();
    assert_eq!(d, Delivery::Stored { attempts: 1 });

    let global_dir = tempfile::tempdir().unwrap();
    let out = global_dir.path().join("out");
    std::fs::create_dir_all(out.join("sub")).unwrap();
    std::fs::write(out.join("junit_01.xml"), b"<testsuites/>").unwrap();
    std::fs::write(out.join("sub/raw.txt"), b"raw").unwrap();
    let cfg = config(a.url(), "e2e", "", global_dir.path());
    let run =
        tokio::spawn(
            async move { buoy_worker::run(&cfg, Mode::Global, std::future::pending()).await },
        );
    // The worker waits until the done file appears.
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(!run.is_finished());
    std::fs::write(global_dir.path().join("done"), out.to_str().unwrap()).unwrap();
    assert_eq!(
        within(run).await.unwrap().unwrap(),
        Delivery::Stored { attempts: 1 }
    );

    let fin = a.finished().await;
    let files = files_under(&fin.run_dir.join("plugins"));
    assert_eq!(
        files,
        [
            "e2e/results/global/junit_01.xml",
            "e2e/results/global/sub/raw.txt",
            "e2e/sonobuoy_results.yaml",
            "p/results/n1/r.xml",
            "p/sonobuoy_results.yaml"
        ]
    );
}

#[tokio::test]
async fn worker_retries_a_5xx_and_resends_the_whole_file() {
    let (addr, seen) = scripted(vec![500, 200]).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("results.tar.gz"), vec![1u8; 100_000]).unwrap();
    std::fs::write(
        dir.path().join("done"),
        dir.path().join("results.tar.gz").to_str().unwrap(),
    )
    .unwrap();
    let d = deliver(
        &config(format!("http://{addr}"), "p", "n1", dir.path()),
        Mode::SingleNode,
    )
    .await
    .unwrap();
    assert_eq!(d, Delivery::Stored { attempts: 2 });
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    for s in &seen {
        assert_eq!(s.path, "/api/v1/results/by-node/n1/p");
        assert_eq!(s.body_len, 100_000);
        assert_eq!(s.content_type.as_deref(), Some("application/gzip"));
        assert_eq!(
            s.disposition.as_deref(),
            Some("attachment;filename=results.tar.gz")
        );
    }
}

#[tokio::test]
async fn worker_gives_up_once_its_retry_window_is_spent() {
    let (addr, seen) = scripted(vec![503]).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("r"), b"x").unwrap();
    std::fs::write(dir.path().join("done"), b"r").unwrap();
    let e = deliver(
        &config(format!("http://{addr}"), "p", "", dir.path()),
        Mode::Global,
    )
    .await
    .unwrap_err();
    let WorkerError::GaveUp { attempts, .. } = e else {
        panic!("{e}")
    };
    assert!(attempts >= 3, "{attempts}");
    assert_eq!(seen.lock().unwrap().len(), attempts as usize);
    assert_eq!(
        seen.lock().unwrap()[0].disposition.as_deref(),
        Some("attachment;filename=r")
    );
    assert_eq!(seen.lock().unwrap()[0].content_type, None);
}

/// An aggregator down for longer than five tries (Buoy's worker used to give up after 1, 2,
/// 4 and 8 s): the worker keeps trying for as long as its window allows, and delivers.
#[tokio::test]
async fn worker_keeps_trying_through_an_outage_longer_than_five_attempts() {
    let mut codes = vec![503; 8];
    codes.push(200);
    let (addr, seen) = scripted(codes).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("r"), b"x").unwrap();
    std::fs::write(dir.path().join("done"), b"r").unwrap();
    let mut cfg = config(format!("http://{addr}"), "p", "", dir.path());
    cfg.retry_for = Duration::from_secs(30);
    let d = deliver(&cfg, Mode::Global).await.unwrap();
    assert_eq!(d, Delivery::Stored { attempts: 9 });
    assert_eq!(seen.lock().unwrap().len(), 9);
}

#[tokio::test]
async fn a_409_counts_as_delivered_and_a_4xx_is_not_retried() {
    let (addr, seen) = scripted(vec![409]).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("r.json"), b"{}").unwrap();
    std::fs::write(dir.path().join("done"), b"r.json").unwrap();
    let d = deliver(
        &config(format!("http://{addr}"), "p", "", dir.path()),
        Mode::Global,
    )
    .await
    .unwrap();
    assert_eq!(d, Delivery::AlreadyReceived);

    let (addr, seen403) = scripted(vec![403]).await;
    let e = deliver(
        &config(format!("http://{addr}"), "p", "", dir.path()),
        Mode::Global,
    )
    .await
    .unwrap_err();
    assert!(matches!(e, WorkerError::Refused { status: 403, .. }), "{e}");
    assert_eq!(
        (seen.lock().unwrap().len(), seen403.lock().unwrap().len()),
        (1, 1)
    );
}

#[tokio::test]
async fn a_missing_result_file_is_an_error_without_contacting_the_aggregator() {
    let (addr, seen) = scripted(vec![200]).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("done"), b"/does/not/exist.tar.gz").unwrap();
    let e = deliver(
        &config(format!("http://{addr}"), "p", "", dir.path()),
        Mode::Global,
    )
    .await
    .unwrap_err();
    assert!(matches!(e, WorkerError::MissingResult(_)), "{e}");
    assert!(seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn the_relay_forwards_the_body_and_passes_the_status_back() {
    let (addr, seen) = scripted(vec![418]).await;
    let client = buoy_worker::Client::new(&format!("http://{addr}"), None).unwrap();
    let port = buoy_testenv::free_port();
    let relay = buoy_worker::relay::start(
        std::net::IpAddr::from([127, 0, 0, 1]),
        port,
        client,
        "/api/v1/progress/global/e2e".into(),
    )
    .await
    .unwrap();
    let body = br#"{"msg":"hello","completed":1,"total":2}"#.to_vec();
    let r = within(buoy_worker::relay::post_local(port, body.clone()))
        .await
        .unwrap();
    assert_eq!(
        (r.status.as_u16(), r.text().as_str()),
        (418, "scripted answer")
    );
    let s = seen.lock().unwrap()[0].clone();
    assert_eq!(
        (s.path.as_str(), s.body_len),
        ("/api/v1/progress/global/e2e", body.len())
    );
    // Only the exact path is relayed.
    let other = buoy_worker::Client::new(&format!("http://127.0.0.1:{port}"), None).unwrap();
    let r = within(other.send(
        http::Method::POST,
        "/progress/",
        HeaderMap::new(),
        buoy_worker::client::full("{}"),
    ))
    .await
    .unwrap();
    assert_eq!(r.status, 404);
    relay.abort();
}

#[tokio::test]
async fn progress_reaches_the_aggregator_through_the_relay_for_a_node() {
    let a = spawn_aggregator(&[("p", "n1")], insecure(), None, None).await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(a.url(), "p", "n1", dir.path());
    cfg.progress_port = buoy_testenv::free_port();
    let port = cfg.progress_port;
    let worker = tokio::spawn(async move {
        buoy_worker::run(&cfg, Mode::SingleNode, std::future::pending()).await
    });
    let r = within(async {
        loop {
            if let Ok(r) = buoy_worker::relay::post_local(
                port,
                br#"{"msg":"via relay","completed":3,"total":9}"#.to_vec(),
            )
            .await
            {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let p = a.agg.status().plugins.unwrap()[0].progress.clone().unwrap();
    assert_eq!(
        (p.msg.as_str(), p.completed, p.total, p.node.as_str()),
        ("via relay", 3, 9, "n1")
    );
    worker.abort();
    a.stop().await;
}
