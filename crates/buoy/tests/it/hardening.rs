//! Server hardening (departure 8): a stalled body, an oversize body and a silent connection
//! are answered or closed, never left to hold the run.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use std::net::SocketAddr;

use http::{HeaderMap, Method};

use crate::*;

/// Server options whose header-read timeout (which also bounds an idle keep-alive wait) is short.
fn short_header_timeout() -> ServerOptions {
    ServerOptions {
        header_read_timeout: Duration::from_millis(300),
        grace_period: Duration::from_secs(1),
        ..ServerOptions::default()
    }
}

/// Reads until the server closes the connection.
async fn wait_closed(s: &mut tokio::net::TcpStream) {
    let mut buf = [0u8; 1024];
    within(async {
        while let Ok(n) = s.read(&mut buf).await {
            if n == 0 {
                return;
            }
        }
    })
    .await;
}

async fn read_reply(s: &mut tokio::net::TcpStream) -> String {
    let mut buf = vec![0u8; 4096];
    let mut got = Vec::new();
    within(async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    got.extend_from_slice(&buf[..n]);
                    if String::from_utf8_lossy(&got).contains("\r\n\r\n") && got.ends_with(b"\n") {
                        break;
                    }
                }
            }
        }
    })
    .await;
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test]
async fn a_stalled_body_gets_408_and_the_key_stays_open() {
    let opts = Options {
        body_idle_timeout: Duration::from_millis(300),
        ..insecure()
    };
    let a = spawn_aggregator(&[("p", "n1")], opts, None, None).await;
    let mut s = tokio::net::TcpStream::connect(a.addr).await.unwrap();
    s.write_all(b"PUT /api/v1/results/by-node/n1/p HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly ten b").await.unwrap();
    let reply = read_reply(&mut s).await;
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    assert!(reply.contains("no body data for"), "{reply}");
    assert!(files_under(a.dir.path()).is_empty());
    assert_eq!(
        put(&a.client(), "/api/v1/results/by-node/n1/p", &[], "retry")
            .await
            .status,
        200
    );
    a.stop().await;
}

#[tokio::test]
async fn an_oversize_body_gets_413_and_leaves_nothing() {
    let limits = buoy_aggregator::Limits {
        max_upload_bytes: 1000,
        ..Default::default()
    };
    let a = spawn_aggregator(
        &[("p", "n1"), ("p", "n2")],
        Options {
            limits,
            ..insecure()
        },
        None,
        None,
    )
    .await;
    let c = a.client();
    let r = put(&c, "/api/v1/results/by-node/n1/p", &[], vec![0u8; 5000]).await;
    assert_eq!(r.status, 413, "{}", r.text());
    let big = tar_gz(&[("big", &vec![0u8; 100_000])]);
    assert!(big.len() < 1000, "the gzip stays under the body cap");
    let limits_hit = put(
        &c,
        "/api/v1/results/by-node/n2/p",
        &[("content-type", "application/gzip")],
        big,
    )
    .await;
    assert_eq!(
        limits_hit.status, 200,
        "the body cap applies to the body, not the expanded size"
    );
    assert!(!a.plugins_dir().join("p/results/n1").exists());
    a.stop().await;
}

#[tokio::test]
async fn a_silent_connection_is_closed_by_the_header_timeout() {
    let a = spawn_aggregator_with(
        &[("p", "n1")],
        insecure(),
        short_header_timeout(),
        None,
        None,
    )
    .await;
    let mut s = tokio::net::TcpStream::connect(a.addr).await.unwrap();
    s.write_all(b"PUT /api/v1/results/by-node/n1/p HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // The server gives up on the unfinished headers and closes the connection.
    wait_closed(&mut s).await;
    // The key was never claimed.
    assert_eq!(
        put(&a.client(), "/api/v1/results/by-node/n1/p", &[], "ok")
            .await
            .status,
        200
    );
    a.stop().await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed() {
    let a = spawn_aggregator_with(
        &[("p", "n1")],
        insecure(),
        short_header_timeout(),
        None,
        None,
    )
    .await;
    let mut s = tokio::net::TcpStream::connect(a.addr).await.unwrap();
    s.write_all(b"GET /api/v1/status HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 8192];
    let n = within(s.read(&mut buf)).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    // Then nothing: the server must not keep the connection forever.
    wait_closed(&mut s).await;
    a.stop().await;
}

/// A run configuration on `dir` with a fixed UUID, for restarts on the same directory.
fn restartable(dir: &std::path::Path, expected: &[(&str, &str)], addr: SocketAddr) -> RunConfig {
    RunConfig {
        output_dir: dir.to_path_buf(),
        uuid: RESTART_UUID.into(),
        expected: keys(expected),
        plugins: buoy_results::PluginSpec::raw_for_keys(&keys(expected)),
        timeout: None,
        options: insecure(),
        server: ServerOptions::default(),
        config_json: buoy_aggregator::run::standalone_config_json(
            &["p".to_string()],
            addr,
            &addr.to_string(),
            None,
        ),
    }
}

const RESTART_UUID: &str = "99999999-2222-4333-8444-555555555555";

async fn start_on(dir: &std::path::Path, expected: &[(&str, &str)]) -> RunHandle {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    RunHandle::start(listener, None, restartable(dir, expected, addr))
        .await
        .unwrap()
}

#[tokio::test]
async fn a_partial_tarball_left_by_a_crash_is_removed_on_restart() {
    let dir = tempfile::tempdir().unwrap();
    let partial = dir.path().join(format!(
        ".202601010000_sonobuoy_{RESTART_UUID}.tar.gz.partial"
    ));
    let other = dir
        .path()
        .join(".202601010000_sonobuoy_other.tar.gz.partial");
    std::fs::write(&partial, b"half a tarball").unwrap();
    std::fs::write(&other, b"another run's").unwrap();
    let h = start_on(dir.path(), &[("p", "n1")]).await;
    assert!(!partial.exists(), "this run's partial tarball is gone");
    assert!(other.exists(), "another run's file is left alone");
    h.abort().await;
}

#[tokio::test]
async fn a_sealed_run_restarted_serves_its_tarball_and_sha_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let expected = [("p", "n1")];
    let h = start_on(dir.path(), &expected).await;
    let c = Client::new(&format!("http://{}", h.local_addr()), None).unwrap();
    assert_eq!(
        put(&c, "/api/v1/results/by-node/n1/p", &[], "r")
            .await
            .status,
        200
    );
    let first = within(h.finish(std::future::ready(()), false))
        .await
        .unwrap();
    let meta = std::fs::metadata(&first.tarball).unwrap();

    // Restarted on the same directory: complete at once, nothing sealed again.
    let h = start_on(dir.path(), &expected).await;
    let c = Client::new(&format!("http://{}", h.local_addr()), None).unwrap();
    let agg = h.aggregator().clone();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(h.finish(
        async move {
            let _ = rx.await;
        },
        true,
    ));
    let mut changes = agg.subscribe();
    within(async {
        while agg.status().status != "complete" {
            changes.changed().await.unwrap();
        }
    })
    .await;
    let st = status_json(&c).await;
    assert_eq!(st["tar-info"]["sha256"], first.tar_info.sha256.as_str());
    assert_eq!(st["tar-info"]["name"], first.tar_info.name.as_str());
    assert_eq!(st["plugins"][0]["result-status"], "passed", "{st}");
    let r = send(
        &c,
        Method::GET,
        "/api/v1/tarball",
        HeaderMap::new(),
        buoy_worker::client::full(bytes::Bytes::new()),
    )
    .await;
    assert_eq!(r.status, 200);
    use sha2::Digest;
    assert_eq!(
        hex::encode(sha2::Sha256::digest(&r.body)),
        first.tar_info.sha256
    );
    let _ = tx.send(());
    let second = within(running).await.unwrap().unwrap();
    assert_eq!(second.tar_info, first.tar_info);
    let after = std::fs::metadata(&second.tarball).unwrap();
    assert_eq!(after.modified().unwrap(), meta.modified().unwrap());
    let tarballs = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tar.gz"))
        .count();
    assert_eq!(tarballs, 1, "no second tarball");
}
