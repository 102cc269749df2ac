//! Results in the aggregator: every status entry carries `result-status` and `result-counts`
//! by the time the run is `complete`, and `GET /api/v1/tarball` serves the sealed tarball
//! (404 before), in ranges, with its SHA-256.

use http::Method;
use sha2::{Digest, Sha256};

use crate::*;

async fn get(c: &Client, method: Method, path: &str, hdrs: &[(&'static str, &str)]) -> Reply {
    send(c, method, path, headers(hdrs), full(bytes::Bytes::new())).await
}

fn header<'a>(r: &'a Reply, name: &str) -> &'a str {
    r.headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("no {name} header in {:?}", r.headers))
}

/// Checks that `buoy retrieve` exited 0 and printed the path of the tarball `want` in `dir`,
/// whole and with its SHA-256; returns its stderr.
pub(crate) fn assert_retrieved(
    got: &std::process::Output,
    dir: &std::path::Path,
    want: &buoy_wire::TarInfo,
) -> String {
    let err = String::from_utf8_lossy(&got.stderr).into_owned();
    assert_eq!(got.status.code(), Some(0), "{err}");
    let path = String::from_utf8_lossy(&got.stdout).trim().to_string();
    assert_eq!(path, dir.join(&want.name).display().to_string());
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(bytes.len() as i64, want.size);
    assert_eq!(hex::encode(Sha256::digest(&bytes)), want.sha256);
    err
}

/// Bytes gzip cannot shrink, so the tarball is about as big as the result.
pub(crate) fn noise(n: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e3779b97f4a7c15;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[tokio::test]
async fn every_status_entry_has_its_result_status_once_the_run_is_complete() {
    let mut t = spawn_aggregator(
        &[("job", "global"), ("ds", "n1"), ("ds", "n2")],
        insecure(),
        None,
        None,
    )
    .await;
    let c = t.client();
    // Whenever the status says `complete`, every entry already has its result.
    let mut rx = t.agg.subscribe();
    let agg = t.agg.clone();
    let watcher = tokio::spawn(async move {
        loop {
            let s = agg.status();
            if s.status == "complete" {
                return s;
            }
            rx.changed().await.unwrap();
        }
    });
    let cd = [("content-disposition", "attachment;filename=out.txt")];
    for path in [
        "/api/v1/results/global/job",
        "/api/v1/results/by-node/n1/ds",
        "/api/v1/results/by-node/n2/ds",
    ] {
        assert_eq!(put(&c, path, &cd, "data").await.status, 200);
    }
    let at_complete = within(watcher).await.unwrap();
    let finished = t.finished().await;
    for s in [&at_complete, &finished.status] {
        for row in s.plugins.as_ref().unwrap() {
            assert_eq!(row.result_status, "passed", "{row:?}");
            assert_eq!(
                row.result_counts,
                Some([("passed".to_string(), 1)].into()),
                "{row:?}"
            );
        }
    }
    let yaml =
        std::fs::read_to_string(finished.run_dir.join("plugins/ds/sonobuoy_results.yaml")).unwrap();
    assert!(
        yaml.starts_with("name: ds\nstatus: passed\nmeta:\n  type: summary\n"),
        "{yaml}"
    );
    assert_eq!(finished.reports.len(), 2);
    assert!(finished.reports.iter().all(|r| r.passed()));
}

#[tokio::test]
async fn the_tarball_is_404_until_sealed_then_served_whole_and_in_ranges_with_its_sha256() {
    let t = spawn_aggregator(&[("p", "global")], insecure(), None, None).await;
    let c = t.client();
    let r = get(&c, Method::GET, "/api/v1/tarball", &[]).await;
    assert_eq!(r.status, 404);
    assert!(
        r.text().contains("not ready: the run is running"),
        "{}",
        r.text()
    );

    let data = noise(20_000);
    let cd = [("content-disposition", "attachment;filename=blob")];
    assert_eq!(
        put(&c, "/api/v1/results/global/p", &cd, data).await.status,
        200
    );
    t.complete().await;

    let whole = get(&c, Method::GET, "/api/v1/tarball", &[]).await;
    assert_eq!(whole.status, 200);
    let sha = hex::encode(Sha256::digest(&whole.body));
    assert_eq!(header(&whole, "x-buoy-tarball-sha256"), sha);
    assert_eq!(header(&whole, "etag"), format!("\"{sha}\""));
    assert_eq!(t.agg.status().tar_info.sha256, sha);
    assert_eq!(header(&whole, "accept-ranges"), "bytes");
    let len = whole.body.len();
    assert!(len > 20_000, "{len}");

    // Re-assembled from 4 KiB ranges, it is the same file.
    let mut joined = Vec::new();
    let mut start = 0;
    while start < len {
        let end = (start + 4096).min(len) - 1;
        let range = format!("bytes={start}-{end}");
        let r = get(&c, Method::GET, "/api/v1/tarball", &[("range", &range)]).await;
        assert_eq!(r.status, 206, "{range}");
        assert_eq!(
            header(&r, "content-range"),
            format!("bytes {start}-{end}/{len}")
        );
        assert_eq!(header(&r, "x-buoy-tarball-sha256"), sha);
        joined.extend_from_slice(&r.body);
        start = end + 1;
    }
    assert_eq!(hex::encode(Sha256::digest(&joined)), sha);

    let tail = get(
        &c,
        Method::GET,
        "/api/v1/tarball",
        &[("range", "bytes=-100")],
    )
    .await;
    assert_eq!(tail.status, 206);
    assert_eq!(&tail.body[..], &whole.body[len - 100..]);
    let past = format!("bytes={}-", len + 10);
    let r = get(&c, Method::GET, "/api/v1/tarball", &[("range", &past)]).await;
    assert_eq!(r.status, 416);
    let head = get(&c, Method::HEAD, "/api/v1/tarball", &[]).await;
    assert_eq!(head.status, 200);
    assert_eq!(header(&head, "content-length"), len.to_string());
    assert!(head.body.is_empty());
    t.stop().await;
}

/// A TCP proxy in front of `upstream` that cuts the connections whose number (1-based) is in
/// `cut` once `after` bytes of the answer have passed. Counts the connections it took.
async fn cutting_proxy(
    upstream: std::net::SocketAddr,
    cut: &'static [usize],
    after: usize,
) -> (std::net::SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let taken = Arc::new(AtomicUsize::new(0));
    let count = taken.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let n = count.fetch_add(1, Ordering::SeqCst) + 1;
            let limit = if cut.contains(&n) { after } else { usize::MAX };
            tokio::spawn(async move {
                let server = tokio::net::TcpStream::connect(upstream).await.unwrap();
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let up = tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut cr, &mut sw).await;
                });
                let mut passed = 0usize;
                let mut buf = vec![0u8; 16 * 1024];
                loop {
                    let room = (limit - passed).min(buf.len());
                    if room == 0 {
                        break;
                    }
                    match sr.read(&mut buf[..room]).await {
                        Ok(0) | Err(_) => break,
                        Ok(k) => {
                            if cw.write_all(&buf[..k]).await.is_err() {
                                break;
                            }
                            passed += k;
                        }
                    }
                }
                // Dropping both halves closes the client's connection mid-answer.
                up.abort();
            });
        }
    });
    (addr, taken)
}

#[tokio::test]
async fn retrieve_resumes_after_cut_connections_and_checks_the_sha256() {
    let t = spawn_aggregator(&[("p", "global")], insecure(), None, None).await;
    let c = t.client();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("got");

    // Before the run is sealed there is nothing to fetch, and the command says why.
    let early = cli::buoy()
        .args(["retrieve", "--url", &t.url(), "-q"])
        .arg(&out)
        .output()
        .await
        .unwrap();
    assert_eq!(early.status.code(), Some(1));
    let err = String::from_utf8_lossy(&early.stderr);
    assert!(err.contains("not ready: the run is running"), "{err}");

    let cd = [("content-disposition", "attachment;filename=blob")];
    let put_reply = put(&c, "/api/v1/results/global/p", &cd, noise(300_000)).await;
    assert_eq!(put_reply.status, 200);
    t.complete().await;
    let want = t.agg.status().tar_info;

    // The 2nd and 4th connections (the 1st and 3rd ranges) break off after 10,000 bytes.
    let (proxy, taken) = cutting_proxy(t.addr, &[2, 4], 10_000).await;
    let got = cli::buoy()
        .args(["retrieve", "--url", &format!("http://{proxy}"), "-q"])
        .args(["--range-bytes", "65536"])
        .arg(&out)
        .output()
        .await
        .unwrap();
    let err = assert_retrieved(&got, &out, &want);
    assert!(err.contains("2 requests tried again"), "{err}");
    // The status, one connection per range (more than four of 64 KiB), two of them again.
    let ranges = (want.size as usize).div_ceil(65536);
    assert!(ranges >= 4, "{ranges}");
    assert_eq!(
        taken.load(std::sync::atomic::Ordering::SeqCst),
        1 + ranges + 2
    );
    let leftovers: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers.len(), 1, "{leftovers:?}");

    // A partial download that is not this tarball's beginning fails the check, and is removed.
    let again = dir.path().join("again");
    std::fs::create_dir_all(&again).unwrap();
    let partial = again.join(format!(".{}.partial", want.name));
    std::fs::write(&partial, vec![b'x'; 1000]).unwrap();
    let bad = cli::buoy()
        .args(["retrieve", "--url", &t.url(), "-q"])
        .arg(&again)
        .output()
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(1), "{err}");
    assert!(err.contains("but the run's status says"), "{err}");
    assert!(!partial.exists() && !again.join(&want.name).exists());
}

/// The tarball answers conditional requests as RFC 9110 says: `If-None-Match: *` (or its tag)
/// is 304, an `If-Match` naming another tag is 412, and an `If-Range` with another tag gets
/// the whole file, not the range (both used to be answered as if the condition held).
#[tokio::test]
async fn the_tarball_answers_if_none_match_if_match_and_if_range_by_its_tag() {
    let t = spawn_aggregator(&[("p", "global")], insecure(), None, None).await;
    let c = t.client();
    let cd = [("content-disposition", "attachment;filename=blob")];
    assert_eq!(
        put(&c, "/api/v1/results/global/p", &cd, noise(20_000))
            .await
            .status,
        200
    );
    t.complete().await;
    let whole = get(&c, Method::GET, "/api/v1/tarball", &[]).await;
    let etag = header(&whole, "etag").to_string();
    let len = whole.body.len();

    for inm in ["*", etag.as_str(), &format!("\"other\", W/{etag}")] {
        let r = get(
            &c,
            Method::GET,
            "/api/v1/tarball",
            &[("if-none-match", inm)],
        )
        .await;
        assert_eq!(r.status, 304, "If-None-Match: {inm}");
        assert_eq!(header(&r, "etag"), etag);
        assert!(r.body.is_empty());
    }
    let r = get(
        &c,
        Method::GET,
        "/api/v1/tarball",
        &[("if-none-match", "\"other\"")],
    )
    .await;
    assert_eq!(r.status, 200);

    let r = get(
        &c,
        Method::GET,
        "/api/v1/tarball",
        &[("if-match", "\"other\"")],
    )
    .await;
    assert_eq!(r.status, 412);
    let r = get(&c, Method::GET, "/api/v1/tarball", &[("if-match", &etag)]).await;
    assert_eq!(r.status, 200);

    let range = [("range", "bytes=0-99"), ("if-range", "\"other\"")];
    let r = get(&c, Method::GET, "/api/v1/tarball", &range).await;
    assert_eq!(r.status, 200, "a mismatched If-Range gets the whole file");
    assert_eq!(r.body.len(), len);
    let range = [("range", "bytes=0-99"), ("if-range", etag.as_str())];
    let r = get(&c, Method::GET, "/api/v1/tarball", &range).await;
    assert_eq!(r.status, 206);
    assert_eq!(r.body.len(), 100);
}
