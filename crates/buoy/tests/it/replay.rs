//! Replays the raw bytes a real Sonobuoy v0.18.4 worker sent (`shared/spec/captures/`), byte
//! for byte, chunked bodies and keep-alive included, and checks Buoy's answers: the same as
//! Sonobuoy's, except where a departure improves on them (by-node progress is served; a body
//! that is not gzip under `application/gzip` is a 400, not a 500).

use std::path::PathBuf;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::*;

/// A copy of `shared/spec/captures/worker-v0.18.4` (see its README), kept in the repository so
/// the tests need nothing outside it.
fn captures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/captures/worker-v0.18.4")
}

/// Sends `bytes` on one connection and returns the status codes of the responses.
async fn replay(addr: std::net::SocketAddr, bytes: &[u8], responses: usize) -> Vec<u16> {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut got = Vec::new();
    within(async {
        let mut buf = [0u8; 4096];
        loop {
            if status_codes(&got).len() >= responses && complete(&got, responses) {
                break;
            }
            let n = s.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    status_codes(&got)
}

fn status_codes(raw: &[u8]) -> Vec<u16> {
    let text = String::from_utf8_lossy(raw);
    text.match_indices("HTTP/1.1 ")
        .filter_map(|(i, _)| text.get(i + 9..i + 12)?.parse().ok())
        .collect()
}

/// Whether the last of `n` responses has all of its Content-Length body.
fn complete(raw: &[u8], n: usize) -> bool {
    let text = String::from_utf8_lossy(raw);
    let Some((start, _)) = text.match_indices("HTTP/1.1 ").nth(n - 1) else {
        return false;
    };
    let last = &text[start..];
    let Some(head_end) = last.find("\r\n\r\n") else {
        return false;
    };
    let len = last[..head_end]
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length: ")
                .map(|v| v.trim().parse::<usize>().unwrap_or(0))
        })
        .unwrap_or(0);
    last.len() >= head_end + 4 + len
}

#[tokio::test]
async fn a_real_workers_requests_are_accepted_byte_for_byte() {
    let dir = captures();
    let a = spawn_aggregator(
        &[
            ("systemd-logs", "node-0"),
            ("e2e", "global"),
            ("custom", "global"),
            ("systemd-logs", "node-1"),
        ],
        insecure(),
        None,
        None,
    )
    .await;
    let read = |n: &str| std::fs::read(dir.join(n)).unwrap();

    // Single-node worker: by-node progress (Sonobuoy: 404; Buoy serves it), then its tarball.
    assert_eq!(replay(a.addr, &read("conn-0.c2s"), 2).await, [200, 200]);
    // Global worker: progress, then its tarball, on one keep-alive connection.
    assert_eq!(replay(a.addr, &read("conn-1.c2s"), 2).await, [200, 200]);
    // A junit.xml result sent as text/xml.
    assert_eq!(replay(a.addr, &read("conn-2.c2s"), 1).await, [200]);
    // The error JSON sent as application/gzip: refused as malformed (Sonobuoy: 500, retried).
    for c in ["conn-3.c2s", "conn-4.c2s", "conn-5.c2s"] {
        assert_eq!(replay(a.addr, &read(c), 1).await, [400], "{c}");
    }

    // Small results are journaled at their 200; a flush lays them out as files.
    a.agg.flush().await.unwrap();
    let plugins = a.plugins_dir();
    let files = files_under(&plugins);
    assert!(
        files
            .iter()
            .any(|f| f.starts_with("systemd-logs/results/node-0/")),
        "{files:?}"
    );
    assert!(
        files.iter().any(|f| f.starts_with("e2e/results/global/")),
        "{files:?}"
    );
    assert_eq!(
        std::fs::read_to_string(plugins.join("custom/results/global/junit.xml")).unwrap(),
        "<testsuite/>\n"
    );
    assert!(
        !files
            .iter()
            .any(|f| f.starts_with("systemd-logs/results/node-1")),
        "{files:?}"
    );
    let st = a.agg.status().plugins.unwrap();
    assert_eq!(st[0].progress.as_ref().unwrap().msg, "halfway");
    assert_eq!(st[0].progress.as_ref().unwrap().errors, ["x"]);
    assert_eq!(st[1].progress.as_ref().unwrap().failures, ["[sig-foo] bar"]);
    a.stop().await;
}
