//! Uploads run in parallel (departure 2): while one client trickles its body, 200 uploads of
//! 1 MiB, 50 at a time, all finish. The test asserts the order in which they finish, not a
//! time: if uploads were serialised behind the slow one (Sonobuoy holds one lock for every
//! upload), the slow one would finish first.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::*;

const FAST: usize = 200;
const SLOW_BODY: usize = 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_upload_does_not_hold_up_the_others() {
    let names: Vec<(String, String)> = std::iter::once(("slow".to_string(), "global".to_string()))
        .chain((0..FAST).map(|i| ("fast".to_string(), format!("n{i}"))))
        .collect();
    let spec: Vec<(&str, &str)> = names
        .iter()
        .map(|(p, n)| (p.as_str(), n.as_str()))
        .collect();
    let a = spawn_aggregator(&spec, insecure(), None, None).await;
    let finished_order: Arc<Mutex<Vec<&'static str>>> = Arc::new(Mutex::new(Vec::new()));
    let fast_done = Arc::new(AtomicUsize::new(0));

    // The slow client: headers and a byte at a time, until every fast upload is done (or a
    // minute has passed, so a serialising server fails the assertion instead of hanging).
    let addr = a.addr;
    let (order, done) = (finished_order.clone(), fast_done.clone());
    let slow = tokio::spawn(async move {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let head = format!("PUT /api/v1/results/global/slow HTTP/1.1\r\nHost: x\r\nContent-Length: {SLOW_BODY}\r\n\r\n");
        s.write_all(head.as_bytes()).await.unwrap();
        let mut sent = 0;
        let give_up = tokio::time::Instant::now() + Duration::from_secs(60);
        while sent < SLOW_BODY - 1
            && done.load(Ordering::SeqCst) < FAST
            && tokio::time::Instant::now() < give_up
        {
            s.write_all(b"s").await.unwrap();
            sent += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        s.write_all(&vec![b's'; SLOW_BODY - sent]).await.unwrap();
        let mut buf = vec![0u8; 512];
        let n = s.read(&mut buf).await.unwrap();
        order.lock().unwrap().push("slow");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    });

    // Wait until the server is receiving the slow body before the others start.
    let slow_key = ResultKey::global("slow");
    within(async {
        while !matches!(
            a.agg.inspect(|s| s.phase_of(&slow_key).cloned()),
            Some(buoy_aggregator::state::Phase::Receiving { .. })
        ) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;

    let client = a.client();
    let payload = bytes::Bytes::from(vec![7u8; 1 << 20]);
    let statuses: Vec<u16> = futures_util::stream::iter(0..FAST)
        .map(|i| {
            let (c, body, order, done) = (
                client.clone(),
                payload.clone(),
                finished_order.clone(),
                fast_done.clone(),
            );
            async move {
                let r = c
                    .send(
                        http::Method::PUT,
                        &format!("/api/v1/results/by-node/n{i}/fast"),
                        HeaderMap::new(),
                        buoy_worker::client::full(body),
                    )
                    .await
                    .unwrap();
                order.lock().unwrap().push("fast");
                done.fetch_add(1, Ordering::SeqCst);
                r.status.as_u16()
            }
        })
        .buffer_unordered(50)
        .collect()
        .await;
    let slow_reply = within(slow).await.unwrap();

    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert!(slow_reply.starts_with("HTTP/1.1 200"), "{slow_reply}");
    let order = finished_order.lock().unwrap().clone();
    assert_eq!(order.len(), FAST + 1);
    assert_eq!(
        order.last(),
        Some(&"slow"),
        "an upload waited for the slow one: {:?}",
        order.iter().position(|o| *o == "slow")
    );
    let stored = files_under(&a.plugins_dir().join("fast/results"));
    assert_eq!(stored.len(), FAST);
    assert_eq!(
        std::fs::metadata(a.plugins_dir().join("fast/results/n7/result"))
            .unwrap()
            .len(),
        1 << 20
    );
    a.stop().await;
}

/// A client that goes away while its result is being committed: the commit finishes and is
/// recorded anyway, so a result on disk is never left behind a key marked failed (which made
/// every retry fail on the existing directory).
#[tokio::test]
async fn a_request_dropped_during_its_commit_never_leaves_a_result_behind_an_open_key() {
    use buoy_aggregator::state::{Outcome, Phase};
    let nodes: Vec<String> = (0..40).map(|i| format!("n{i}")).collect();
    let expected: Vec<(&str, &str)> = nodes.iter().map(|n| ("p", n.as_str())).collect();
    let a = spawn_aggregator(&expected, insecure(), None, None).await;
    // All at once, so that commits queue up and the drops land while they wait.
    let mut uploads = Vec::new();
    for n in &nodes {
        let key = ResultKey::new("p", n.as_str());
        let (ended, body_read) = tokio::sync::oneshot::channel::<()>();
        // One chunk, then word that the body has been read whole, then its end.
        let body = Box::pin(futures_util::stream::unfold(
            (0u8, Some(ended)),
            |(i, mut ended)| async move {
                if i == 0 {
                    let chunk = bytes::Bytes::from_static(b"data");
                    return Some((Ok::<_, std::io::Error>(chunk), (1, ended)));
                }
                if let Some(e) = ended.take() {
                    let _ = e.send(());
                }
                None
            },
        ));
        let agg = a.agg.clone();
        let task = tokio::spawn(async move {
            agg.upload(key, None, Some("attachment;filename=r.txt"), Some(4), body)
                .await
        });
        uploads.push((task, body_read));
    }
    let mut tasks = Vec::new();
    for (task, body_read) in uploads {
        let _ = within(body_read).await;
        tasks.push(task);
    }
    for t in &tasks {
        t.abort();
    }
    let mut rx = a.agg.subscribe();
    let mut phases = Vec::new();
    for n in &nodes {
        let key = ResultKey::new("p", n.as_str());
        let phase = within(async {
            loop {
                let p = a.agg.inspect(|s| s.phase_of(&key).cloned()).unwrap();
                if !matches!(p, Phase::Receiving { .. }) {
                    return p;
                }
                rx.changed().await.unwrap();
            }
        })
        .await;
        phases.push(phase);
    }
    // Small results are journaled at their 200; a flush lays out every one the committer was
    // given, including a dropped request's.
    within(a.agg.flush()).await.unwrap();
    for (n, phase) in nodes.iter().zip(phases) {
        let stored = a.plugins_dir().join("p/results").join(n).exists();
        assert_eq!(
            matches!(phase, Phase::Done(Outcome::Result)),
            stored,
            "{n}: phase {phase:?}, result on disk: {stored}"
        );
    }
    a.stop().await;
}
