//! What people watch a run through: the status page and its assets, the overview and node
//! pages behind it, Prometheus metrics, and the read-only view listener.

use buoy_wire::overview::{NodePage, Overview};
use http::{HeaderMap, Method};

use crate::*;

async fn get(c: &Client, path: &str) -> Reply {
    send(
        c,
        Method::GET,
        path,
        HeaderMap::new(),
        full(bytes::Bytes::new()),
    )
    .await
}

async fn overview(c: &Client) -> Overview {
    let r = get(c, "/api/v1/overview").await;
    assert_eq!(r.status, 200, "{}", r.text());
    serde_json::from_slice(&r.body).unwrap()
}

async fn metrics(c: &Client) -> String {
    let r = get(c, "/metrics").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let ct = r.headers.get("content-type").unwrap().to_str().unwrap();
    assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
    r.text()
}

fn assert_lines(text: &str, lines: &[&str]) {
    for l in lines {
        assert!(text.lines().any(|t| t == *l), "{l:?} missing from:\n{text}");
    }
}

#[tokio::test]
async fn metrics_match_what_a_client_uploaded() {
    let mut a = spawn_aggregator(
        &[("p", "n1"), ("p", "n2"), ("p", "n3"), ("e2e", "global")],
        insecure(),
        None,
        None,
    )
    .await;
    let c = a.client();
    let plain = vec![b'x'; 1000];
    let tarball = tar_gz(&[("out/a.txt", b"hello")]);
    let cd = [("content-disposition", "attachment;filename=r.txt")];
    assert_eq!(
        put(&c, "/api/v1/results/by-node/n1/p", &cd, plain.clone())
            .await
            .status,
        200
    );
    // Refused before a byte of the body is read: counted by code, not in the bytes.
    assert_eq!(
        put(&c, "/api/v1/results/by-node/n1/p", &cd, plain.clone())
            .await
            .status,
        409
    );
    assert_eq!(
        put(&c, "/api/v1/results/by-node/n9/p", &cd, plain.clone())
            .await
            .status,
        403
    );
    let gz = [("content-type", "application/gzip")];
    assert_eq!(
        put(&c, "/api/v1/results/by-node/n2/p", &gz, tarball.clone())
            .await
            .status,
        200
    );
    for i in 1..=3 {
        let body = format!(r#"{{"msg":"step {i}","total":3,"completed":{i}}}"#);
        assert_eq!(
            post(&c, "/api/v1/progress/global/e2e", &body).await.status,
            200
        );
    }
    let bytes = format!(
        "buoy_upload_received_bytes_total {}",
        plain.len() + tarball.len()
    );
    assert_lines(
        &metrics(&c).await,
        &[
            "buoy_uploads_total{code=\"200\"} 2",
            "buoy_uploads_total{code=\"409\"} 1",
            "buoy_uploads_total{code=\"403\"} 1",
            &bytes,
            "buoy_upload_duration_seconds_count 4",
            "buoy_progress_updates_total{plugin=\"e2e\"} 3",
            "buoy_results{plugin=\"p\",state=\"expected\"} 3",
            "buoy_results{plugin=\"p\",state=\"received\"} 2",
            "buoy_results{plugin=\"p\",state=\"failed\"} 0",
            "buoy_results{plugin=\"e2e\",state=\"received\"} 0",
            "buoy_run_phase{phase=\"running\"} 1",
            "buoy_run_phase{phase=\"complete\"} 0",
        ],
    );
    let o = overview(&c).await;
    let e2e = o.plugins.iter().find(|p| p.plugin == "e2e").unwrap();
    let g = e2e.progress.as_ref().unwrap();
    assert_eq!((g.completed, g.total, g.msg.as_str()), (3, 3, "step 3"));

    // The rest arrive; the run seals, and the phase follows.
    assert_eq!(
        put(&c, "/api/v1/results/by-node/n3/p", &cd, "x")
            .await
            .status,
        200
    );
    a.agg
        .submit_error(&ResultKey::global("e2e"), "pod e2e failed", None)
        .await
        .unwrap();
    a.complete().await;
    assert_lines(
        &metrics(&c).await,
        &[
            "buoy_results{plugin=\"p\",state=\"received\"} 3",
            "buoy_results{plugin=\"e2e\",state=\"failed\"} 1",
            "buoy_results{plugin=\"e2e\",state=\"timed_out\"} 0",
            "buoy_run_phase{phase=\"running\"} 0",
            "buoy_run_phase{phase=\"complete\"} 1",
        ],
    );
    let o = overview(&c).await;
    assert_eq!(o.status, "complete");
    assert!(o.tarball.is_some());
    let e2e = o.plugins.iter().find(|p| p.plugin == "e2e").unwrap();
    assert_eq!(e2e.errors[0].reason, "pod e2e failed");
    assert!(!e2e.errors[0].retrying);
    // Post-processing's summary is on the overview once sealed.
    let p = o.plugins.iter().find(|p| p.plugin == "p").unwrap();
    assert_eq!(p.results.as_ref().unwrap().status, "passed");
    a.finished().await;
}

#[tokio::test]
async fn overview_stays_small_and_nodes_come_in_pages_at_5000_nodes() {
    let names: Vec<String> = (0..5000).map(|i| format!("n{i:05}")).collect();
    let expected: Vec<(&str, &str)> = names.iter().map(|n| ("logs", n.as_str())).collect();
    let a = spawn_aggregator(&expected, insecure(), None, None).await;
    let c = a.client();
    for n in &names[..30] {
        let key = ResultKey::new("logs", n.as_str());
        a.agg
            .submit_error(&key, &format!("pod on {n} failed"), None)
            .await
            .unwrap();
    }
    let cd = [("content-disposition", "attachment;filename=r.txt")];
    assert_eq!(
        put(&c, "/api/v1/results/by-node/n04999/logs", &cd, "x")
            .await
            .status,
        200
    );
    // A failed upload leaves its key open, and says why.
    let gz = [("content-type", "application/gzip")];
    assert_eq!(
        put(&c, "/api/v1/results/by-node/n04998/logs", &gz, "not gzip")
            .await
            .status,
        400
    );

    let r = get(&c, "/api/v1/overview").await;
    assert!(r.body.len() < 16 << 10, "{} bytes", r.body.len());
    let o: Overview = serde_json::from_slice(&r.body).unwrap();
    let p = &o.plugins[0];
    assert_eq!(
        (p.expected, p.complete, p.failed, p.remaining),
        (5000, 1, 30, 4969)
    );
    assert_eq!(p.errors_total, 31);
    let retry = p.errors.iter().find(|e| e.node == "n04998").unwrap();
    assert!(retry.retrying, "{retry:?}");

    let page = |q: &str| {
        let c = &c;
        let path = format!("/api/v1/nodes?plugin=logs&{q}");
        async move {
            let r = get(c, &path).await;
            assert_eq!(r.status, 200, "{}", r.text());
            serde_json::from_slice::<NodePage>(&r.body).unwrap()
        }
    };
    let first = page("offset=0&limit=200").await;
    assert_eq!((first.total, first.nodes.len()), (5000, 200));
    assert_eq!(first.nodes[0].node, "n00000");
    assert_eq!(
        first.nodes[0].error.as_deref(),
        Some("pod on n00000 failed")
    );
    let last = page("offset=4900&limit=200").await;
    assert_eq!(last.nodes.len(), 100);
    assert_eq!(last.nodes[99].status, "complete");
    let failed = page("state=failed&offset=20").await;
    assert_eq!((failed.total, failed.nodes.len()), (30, 10));
    // A page is never larger than the cap, whatever is asked.
    let big = page("limit=100000").await;
    assert_eq!(big.nodes.len() as u64, buoy_wire::overview::MAX_NODE_PAGE);
    a.stop().await;
}

#[tokio::test]
async fn the_page_and_its_assets_are_served_with_a_strict_policy() {
    let a = spawn_aggregator(&[("p", "n1")], insecure(), None, None).await;
    let c = a.client();
    let r = get(&c, "/").await;
    assert_eq!(r.status, 200);
    let h = |name: &str| r.headers.get(name).unwrap().to_str().unwrap().to_string();
    assert!(h("content-type").starts_with("text/html"));
    assert!(h("content-security-policy").contains("script-src 'self'"));
    let html = r.text();
    assert!(html.contains("/ui/app.js") && html.contains("/api/v1/overview"));
    // Nothing from elsewhere: every src and href is on this server.
    let elsewhere: Vec<&str> = html
        .split(['"', '\''])
        .filter(|s| s.contains("://"))
        .collect();
    assert!(
        elsewhere.is_empty(),
        "the page refers to other hosts: {elsewhere:?}"
    );
    for (path, ct) in [
        ("/ui/app.js", "text/javascript"),
        ("/ui/app.css", "text/css"),
        ("/ui/favicon.svg", "image/svg+xml"),
    ] {
        let r = get(&c, path).await;
        assert_eq!(r.status, 200, "{path}");
        let got = r.headers.get("content-type").unwrap().to_str().unwrap();
        assert!(got.starts_with(ct), "{path}: {got}");
    }
    assert_eq!(get(&c, "/ui/nope.js").await.status, 404);
    a.stop().await;
}

#[tokio::test]
async fn the_page_is_served_over_mtls_to_a_client_with_a_certificate() {
    let (a, pki, _dir) = spawn_mtls_aggregator(&[("p", "n1")], &["p"]).await;
    let cert = pki.client("p").unwrap();
    let tls = buoy_pki::client_config(pki.ca.cert_pem(), &cert.cert_pem, &cert.key_pem).unwrap();
    let c = Client::new(&format!("https://127.0.0.1:{}", a.addr.port()), Some(tls)).unwrap();
    assert_eq!(get(&c, "/").await.status, 200);
    assert_eq!(overview(&c).await.plugins[0].plugin, "p");
    assert!(metrics(&c).await.contains("buoy_run_phase"));
    a.stop().await;
}

/// The plain-HTTP view listener shows the run but never takes a result or a progress update.
#[tokio::test]
async fn the_view_listener_serves_the_page_and_refuses_uploads() {
    let a = spawn_aggregator(&[("p", "n1")], insecure(), None, None).await;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let view =
        buoy_aggregator::ViewServer::start(l, a.agg.clone(), ServerOptions::default()).unwrap();
    let c = Client::new(&format!("http://{}", view.local_addr()), None).unwrap();
    assert_eq!(get(&c, "/").await.status, 200);
    assert_eq!(get(&c, "/api/v1/status").await.status, 200);
    assert!(metrics(&c)
        .await
        .contains("buoy_run_phase{phase=\"running\"} 1"));
    let r = put(&c, "/api/v1/results/by-node/n1/p", &[], "x").await;
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(
        post(&c, "/api/v1/progress/by-node/n1/p", "{}").await.status,
        404
    );
    assert_eq!(a.agg.overview().plugins[0].complete, 0);
    view.stop().await;
    a.stop().await;
}
