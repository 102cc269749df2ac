//! Server hardening (departure 8): a stalled body, an oversize body and a silent connection
//! are answered or closed, never left to hold the run.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use std::net::SocketAddr;

use http::{HeaderMap, Method};

use buoy_wire::ResultKey;

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
    let first = within(h.finish(std::future::pending(), false))
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

/// Opens an upload of `len` bytes for `path` and sends one byte every `gap` until told to stop
/// (or `len` is reached); returns the reply's status line.
fn trickle(
    addr: SocketAddr,
    path: &'static str,
    len: usize,
    gap: Duration,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<String> {
    tokio::spawn(async move {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let head = format!("PUT {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len}\r\n\r\n");
        s.write_all(head.as_bytes()).await.unwrap();
        let (mut rd, mut wr) = s.into_split();
        let writer = tokio::spawn(async move {
            for _ in 0..len {
                if stop.load(std::sync::atomic::Ordering::SeqCst) {
                    // Fall silent with the connection open, as a stuck client would.
                    std::future::pending::<()>().await;
                }
                if wr.write_all(b"t").await.is_err() {
                    return;
                }
                tokio::time::sleep(gap).await;
            }
        });
        let mut buf = vec![0u8; 1024];
        let n = rd.read(&mut buf).await.unwrap_or(0);
        writer.abort();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    })
}

async fn until_receiving(a: &TestAgg, key: &ResultKey) {
    let mut rx = a.agg.subscribe();
    within(async {
        while !matches!(
            a.agg.inspect(|s| s.phase_of(key).cloned()),
            Some(buoy_aggregator::state::Phase::Receiving { .. })
        ) {
            // Claiming a key announces nothing; poll the state briefly instead.
            let _ = tokio::time::timeout(Duration::from_millis(10), rx.changed()).await;
        }
    })
    .await;
}

/// With two upload slots, two clients that trickled their bodies made a third key wait until
/// they finished. Now a body too slow while others wait gives its slot up (503, retry).
#[tokio::test]
async fn trickling_clients_lose_their_slots_to_a_waiting_upload() {
    let opts = Options {
        max_concurrent_uploads: 2,
        min_upload_rate: 1024,
        slow_window: Duration::from_millis(300),
        body_idle_timeout: Duration::from_secs(1),
        ..insecure()
    };
    let a = spawn_aggregator(&[("p", "n1"), ("p", "n2"), ("p", "n3")], opts, None, None).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let gap = Duration::from_millis(100);
    let t1 = trickle(
        a.addr,
        "/api/v1/results/by-node/n1/p",
        10_000,
        gap,
        stop.clone(),
    );
    let t2 = trickle(
        a.addr,
        "/api/v1/results/by-node/n2/p",
        10_000,
        gap,
        stop.clone(),
    );
    until_receiving(&a, &ResultKey::new("p", "n1")).await;
    until_receiving(&a, &ResultKey::new("p", "n2")).await;
    // The tricklers would need 1,000 s to finish; the third upload gets its slot long before.
    let r = put(&a.client(), "/api/v1/results/by-node/n3/p", &[], "fast").await;
    assert_eq!(r.status, 200, "{}", r.text());
    // One trickler had to give its slot up for that; once nobody waits, the other may keep
    // trickling, so stop both (the survivor then ends on the idle timeout).
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let replies = [within(t1).await.unwrap(), within(t2).await.unwrap()];
    let gave_up: Vec<&String> = replies
        .iter()
        .filter(|r| r.starts_with("HTTP/1.1 503"))
        .collect();
    assert!(!gave_up.is_empty(), "{replies:?}");
    for reply in gave_up {
        assert!(reply.contains("retry"), "{reply}");
        assert!(
            reply.to_ascii_lowercase().contains("retry-after: 1"),
            "{reply}"
        );
    }
    assert!(
        replies
            .iter()
            .all(|r| r.starts_with("HTTP/1.1 503") || r.starts_with("HTTP/1.1 408")),
        "{replies:?}"
    );
    // Their keys stay open: a retry at a normal pace is stored.
    let r = put(&a.client(), "/api/v1/results/by-node/n1/p", &[], "again").await;
    assert_eq!(r.status, 200, "{}", r.text());
    a.stop().await;
}

#[tokio::test]
async fn waiting_for_a_slot_is_bounded_by_a_503() {
    let opts = Options {
        max_concurrent_uploads: 1,
        min_upload_rate: 0,
        slot_wait: Duration::from_millis(200),
        ..insecure()
    };
    let a = spawn_aggregator(&[("p", "n1"), ("p", "n2")], opts, None, None).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let holder = trickle(
        a.addr,
        "/api/v1/results/by-node/n1/p",
        10_000,
        Duration::from_millis(50),
        stop.clone(),
    );
    until_receiving(&a, &ResultKey::new("p", "n1")).await;
    let r = put(&a.client(), "/api/v1/results/by-node/n2/p", &[], "x").await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(
        r.text().contains("upload slots stayed busy"),
        "{}",
        r.text()
    );
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    holder.abort();
    a.stop().await;
}

#[tokio::test]
async fn below_the_disk_reserve_uploads_get_507_and_succeed_once_space_returns() {
    use std::sync::atomic::{AtomicU64, Ordering};
    let free = std::sync::Arc::new(AtomicU64::new(10));
    let f2 = free.clone();
    let opts = Options {
        disk_reserve_bytes: 1 << 20,
        free_space: buoy_aggregator::budget::FreeSpaceProbe(std::sync::Arc::new(move |_| {
            Ok(f2.load(Ordering::SeqCst))
        })),
        ..insecure()
    };
    let a = spawn_aggregator(&[("p", "n1")], opts, None, None).await;
    let c = a.client();
    for body in [tar_gz(&[("f", b"1")]), b"plain".to_vec()] {
        let gzip = body.starts_with(&[0x1f, 0x8b]);
        let ct: &[(&str, &str)] = if gzip {
            &[("content-type", "application/gzip")]
        } else {
            &[]
        };
        let r = put(&c, "/api/v1/results/by-node/n1/p", ct, body).await;
        assert_eq!(r.status, 507, "{}", r.text());
        assert!(r.text().contains("below its reserve"), "{}", r.text());
        assert_eq!(r.headers.get("retry-after").unwrap(), "1");
    }
    assert!(files_under(&a.plugins_dir()).is_empty());
    free.store(u64::MAX, Ordering::SeqCst);
    let r = put(&c, "/api/v1/results/by-node/n1/p", &[], "now it fits").await;
    assert_eq!(r.status, 200, "{}", r.text());
    a.stop().await;
}

#[tokio::test]
async fn the_runs_storage_budget_is_shared_by_all_uploads() {
    let opts = Options {
        max_run_bytes: 100,
        ..insecure()
    };
    let a = spawn_aggregator(&[("p", "n1"), ("p", "n2")], opts, None, None).await;
    let c = a.client();
    assert_eq!(
        put(&c, "/api/v1/results/by-node/n1/p", &[], vec![1u8; 80])
            .await
            .status,
        200
    );
    let r = put(&c, "/api/v1/results/by-node/n2/p", &[], vec![2u8; 80]).await;
    assert_eq!(r.status, 507, "{}", r.text());
    assert!(r.text().contains("storage budget"), "{}", r.text());
    assert!(!a.plugins_dir().join("p/results/n2").exists());
    assert_eq!(
        put(&c, "/api/v1/results/by-node/n2/p", &[], vec![2u8; 20])
            .await
            .status,
        200
    );
    a.stop().await;
}

/// A small sized body is read into memory; kept as one chunk when it comes in one, gathered
/// when it comes in several. A body sent in three parts, each only once the server has read the
/// one before (its bytes are charged to the budget as they are read), must be stored whole and
/// in order.
#[tokio::test]
async fn a_small_body_in_several_parts_is_stored_whole() {
    let a = spawn_aggregator(&[("p", "n1")], insecure(), None, None).await;
    let parts: [Vec<u8>; 3] = [vec![b'a'; 1000], vec![b'b'; 1500], vec![b'c'; 700]];
    let len: usize = parts.iter().map(Vec::len).sum();
    let mut s = tokio::net::TcpStream::connect(a.addr).await.unwrap();
    let head = format!(
        "PUT /api/v1/results/by-node/n1/p HTTP/1.1\r\nHost: x\r\n\
         Content-Disposition: attachment;filename=r.txt\r\nContent-Length: {len}\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let mut sent = 0;
    for part in &parts[..2] {
        s.write_all(part).await.unwrap();
        sent += part.len() as u64;
        within(async {
            while a.agg.budget_used() < sent {
                tokio::task::yield_now().await;
            }
        })
        .await;
    }
    s.write_all(&parts[2]).await.unwrap();
    let reply = read_reply(&mut s).await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    a.agg.flush().await.unwrap();
    let stored = std::fs::read(a.plugins_dir().join("p/results/n1/r.txt")).unwrap();
    assert_eq!(stored, parts.concat());
    a.stop().await;
}

/// A full disk is 507 on the small-result path too (it was 500, where every other path says
/// 507), and the key stays open: the same upload succeeds once there is room again. Needs
/// root for a small tmpfs; skips, saying so, without.
#[tokio::test]
async fn a_full_disk_is_507_for_a_small_result_and_the_key_stays_open() {
    // SAFETY: geteuid(2) has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: a full disk is simulated with a tmpfs, which needs root");
        return;
    }
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk");
    std::fs::create_dir(&disk).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=8m", "tmpfs"])
        .arg(&disk)
        .status()
        .unwrap();
    assert!(mounted.success());
    let _unmount = Unmount(disk.clone());
    let out = disk.join("out");
    let (mut agg, addr) = crate::cli::start_aggregator(&[
        "--insecure-http",
        "--expect",
        "p=n1",
        "--bind",
        "127.0.0.1:0",
        "--no-exit",
        "--disk-reserve-bytes",
        "0",
        "--output",
        out.to_str().unwrap(),
    ])
    .await;
    // Fill what is left.
    let filler = disk.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![7u8; 64 * 1024];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
    }
    let c = Client::new(&format!("http://{addr}"), None).unwrap();
    let cd = [("content-disposition", "attachment;filename=r.txt")];
    let r = put(&c, "/api/v1/results/by-node/n1/p", &cd, vec![1u8; 4096]).await;
    assert_eq!(r.status, 507, "{}", r.text());
    std::fs::remove_file(&filler).unwrap();
    let r = put(&c, "/api/v1/results/by-node/n1/p", &cd, vec![1u8; 4096]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    agg.kill().await.unwrap();
}

/// A seal that fails (here a directory where `meta/config.json` must go, as a full disk or no
/// descriptors would) is tried again while the server goes on and the status says why; it
/// once ended the process, even with `--no-exit`, and a restart met the same failure.
#[tokio::test]
async fn a_seal_that_fails_is_retried_and_said_in_the_status_while_the_server_goes_on() {
    let mut a = spawn_aggregator(&[("p", "n1")], insecure(), None, None).await;
    let blocker = a.run_dir().join("meta/config.json");
    std::fs::create_dir_all(blocker.join("in-the-way")).unwrap();
    let r = put(&a.client(), "/api/v1/results/by-node/n1/p", &[], "ok").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let mut rx = a.agg.subscribe();
    within(async {
        while a.agg.status().seal_error.is_none() {
            rx.changed().await.unwrap();
        }
    })
    .await;
    let s = status_json(&a.client()).await;
    assert_eq!(s["status"], "post-processing", "{s}");
    let why = s["seal-error"].as_str().unwrap_or_default();
    assert!(why.contains("tarball"), "{s}");
    assert!(!a.done.as_ref().unwrap().is_finished());

    std::fs::remove_dir_all(&blocker).unwrap();
    let f = a.finished().await;
    assert!(f.tarball.is_file());
    assert_eq!(f.status.status, "complete");
    assert!(f.status.seal_error.is_none());
    assert!(tarball_entries(&f.tarball)
        .iter()
        .any(|e| e.contains("plugins/p/results/n1")));
}

/// A plugin or node name longer than a directory name can be could be expected but never
/// stored, so its run could never seal; it is refused when the run starts.
#[tokio::test]
async fn an_expected_name_longer_than_a_directory_name_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let long = "n".repeat(256);
    let expected = keys(&[("p", "n1"), ("p", &long)]);
    let cfg = RunConfig {
        output_dir: dir.path().to_path_buf(),
        uuid: "11111111-2222-4333-8444-555555555555".into(),
        plugins: buoy_results::PluginSpec::raw_for_keys(&expected),
        expected,
        timeout: None,
        options: insecure(),
        server: ServerOptions::default(),
        config_json: serde_json::json!({}),
    };
    let err = match RunHandle::start(listener, None, cfg).await {
        Ok(_) => panic!("a 256-byte node name was accepted"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("255 bytes"), "{err}");
}

/// A client that asks for a large status and never reads the answer is cut off once it has
/// taken nothing for the write-stall timeout, and what its answer held is released; before,
/// nothing ever closed such a connection.
#[tokio::test]
async fn a_client_that_never_reads_its_status_answer_is_cut_off_and_releases_it() {
    let nodes: Vec<String> = (0..100_000).map(|i| format!("node-{i:06}")).collect();
    let expected: Vec<(&str, &str)> = nodes.iter().map(|n| ("p", n.as_str())).collect();
    let server = ServerOptions {
        write_stall_timeout: Duration::from_millis(500),
        grace_period: Duration::from_secs(1),
        ..ServerOptions::default()
    };
    let a = spawn_aggregator_with(&expected, Options::default(), server, None, None).await;
    // A small receive window, so the answer backs up into the server.
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let mut slow = within(sock.connect(a.addr)).await.unwrap();
    slow.write_all(b"GET /api/v1/status HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    within(async {
        while a.agg.status_streams_open() == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    within(async {
        while a.agg.status_streams_open() != 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    // The server goes on serving others, the whole answer to one that reads.
    let mut s = within(tokio::net::TcpStream::connect(a.addr))
        .await
        .unwrap();
    s.write_all(b"GET /api/v1/status HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut whole = Vec::new();
    within(s.read_to_end(&mut whole)).await.unwrap();
    assert!(whole.starts_with(b"HTTP/1.1 200"));
    // More than the loopback socket buffers (4 MiB to send) can take off the server's hands.
    assert!(whole.len() > 8 << 20, "a status of {} bytes", whole.len());
    // What the slow client can still read ends short of the answer: the server gave up on it.
    let mut got = 0usize;
    let mut buf = vec![0u8; 64 * 1024];
    within(async {
        while let Ok(n) = slow.read(&mut buf).await {
            if n == 0 {
                break;
            }
            got += n;
        }
    })
    .await;
    assert!(
        got < whole.len(),
        "read {got} of a {}-byte answer",
        whole.len()
    );
    a.stop().await;
}
