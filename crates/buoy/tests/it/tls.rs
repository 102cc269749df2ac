//! mTLS: the server requires a client certificate from the run CA and lets a certificate
//! submit only for the plugin it was issued for (departure 6).

use std::sync::Arc;

use buoy_pki::RunPki;
use buoy_worker::Client;

use crate::*;

fn client_for(pki: &RunPki, url: &str, plugin: &str) -> Client {
    let c = pki.client(plugin).unwrap();
    Client::new(
        url,
        Some(buoy_pki::client_config(pki.ca.cert_pem(), &c.cert_pem, &c.key_pem).unwrap()),
    )
    .unwrap()
}

#[tokio::test]
async fn a_certificate_submits_only_for_its_own_plugin() {
    let dir = tempfile::tempdir().unwrap();
    let pki = RunPki::load_or_create(
        dir.path(),
        "127.0.0.1",
        &[],
        &["p".into(), "systemd_logs".into()],
    )
    .unwrap();
    let a = spawn_aggregator(
        &[("p", "n1"), ("systemd_logs", "n1")],
        Options::default(),
        None,
        Some(Arc::new(pki.server_config().unwrap())),
    )
    .await;
    let url = format!("https://127.0.0.1:{}", a.addr.port());
    let p = client_for(&pki, &url, "p");
    let r = put(&p, "/api/v1/results/by-node/n1/p", &[], "mine").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = put(
        &p,
        "/api/v1/results/by-node/n1/systemd_logs",
        &[],
        "not mine",
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(
        r.text()
            .contains("may not submit for plugin \"systemd_logs\""),
        "{}",
        r.text()
    );
    assert_eq!(
        post(&p, "/api/v1/progress/by-node/n1/systemd_logs", "{}")
            .await
            .status,
        403
    );
    // Plugin names with '_' work as DNS SANs too.
    let s = client_for(&pki, &url, "systemd_logs");
    assert_eq!(
        put(&s, "/api/v1/results/by-node/n1/systemd_logs", &[], "mine")
            .await
            .status,
        200
    );
    a.stop().await;
}

#[tokio::test]
async fn without_a_client_certificate_the_handshake_fails() {
    let dir = tempfile::tempdir().unwrap();
    let pki = RunPki::load_or_create(dir.path(), "127.0.0.1", &[], &["p".into()]).unwrap();
    let a = spawn_aggregator(
        &[("p", "n1")],
        Options::default(),
        None,
        Some(Arc::new(pki.server_config().unwrap())),
    )
    .await;
    let url = format!("https://127.0.0.1:{}", a.addr.port());
    let anon = Client::new(
        &url,
        Some(buoy_pki::anonymous_client_config(pki.ca.cert_pem()).unwrap()),
    )
    .unwrap();
    let r = within(anon.send(
        http::Method::PUT,
        "/api/v1/results/by-node/n1/p",
        HeaderMap::new(),
        buoy_worker::client::full("x"),
    ))
    .await;
    assert!(
        r.is_err(),
        "a request without a client certificate got an answer: {r:?}"
    );
    // A certificate from another CA is refused as well.
    let other = RunPki::generate("127.0.0.1", &[], &["p".into()]).unwrap();
    let oc = other.client("p").unwrap();
    let foreign = Client::new(
        &url,
        Some(buoy_pki::client_config(pki.ca.cert_pem(), &oc.cert_pem, &oc.key_pem).unwrap()),
    )
    .unwrap();
    let r = within(foreign.send(
        http::Method::PUT,
        "/api/v1/results/by-node/n1/p",
        HeaderMap::new(),
        buoy_worker::client::full("x"),
    ))
    .await;
    assert!(r.is_err(), "a foreign certificate got an answer: {r:?}");
    assert!(files_under(&a.plugins_dir()).is_empty());
    a.stop().await;
}
