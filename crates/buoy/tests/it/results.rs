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

/// Bytes gzip cannot shrink, so the tarball is about as big as the result.
fn noise(n: usize) -> Vec<u8> {
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
