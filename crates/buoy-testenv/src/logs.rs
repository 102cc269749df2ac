//! The kubelet endpoints the API server proxies to, over TLS: `GET
//! /containerLogs/{namespace}/{pod}/{container}` (what the container wrote to stdout and
//! stderr) and `/portForward/{namespace}/{pod}` (the websocket port-forward protocol: channel 0
//! carries a connection's bytes, channel 1 its errors, each opened with a frame naming the
//! port; every pod shares the host's network, so the port is on 127.0.0.1). Nothing else of
//! the kubelet API is served (404).

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::certs::Pair;
use crate::kubelet::{pod_file, Inner};
use crate::EnvError;

type Serve = Box<
    dyn FnOnce(Arc<Inner>) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>
        + Send,
>;

fn tls(serving: &Pair) -> Result<rustls::ServerConfig, EnvError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let bad = |e: &dyn std::fmt::Display| EnvError::Certs(e.to_string());
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(serving.cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| bad(&e))?;
    let key = PrivateKeyDer::from_pem_slice(serving.key_pem.as_bytes()).map_err(|e| bad(&e))?;
    let _ = rustls::crypto::ring::default_provider().install_default();
    rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| bad(&e))
}

/// Binds a loopback port and returns it with the server to run once the kubelet exists.
pub(crate) async fn serve(serving: &Pair) -> Result<(u16, Serve), EnvError> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|source| EnvError::Io {
            context: "cannot bind the kubelet's log port".into(),
            source,
        })?;
    let port = listener.local_addr().map(|a| a.port()).unwrap_or_default();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls(serving)?));
    let run: Serve = Box::new(move |inner: Arc<Inner>| {
        Box::pin(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, inner) = (acceptor.clone(), inner.clone());
                tokio::spawn(async move {
                    let Ok(stream) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let svc = hyper::service::service_fn(move |req| {
                        let inner = inner.clone();
                        async move { Ok::<_, std::convert::Infallible>(answer(&inner, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .with_upgrades()
                        .await;
                });
            }
        })
    });
    Ok((port, run))
}

async fn answer(inner: &Inner, mut req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    let reply = |code: StatusCode, body: Vec<u8>| {
        Response::builder()
            .status(code)
            .header(http::header::CONTENT_TYPE, "text/plain")
            .body(Full::new(Bytes::from(body)))
            .expect("a response")
    };
    let parts: Vec<&str> = req.uri().path().split('/').collect();
    match parts.as_slice() {
        ["", "containerLogs", ns, pod, container] => {
            tokio::time::sleep(inner.opts.log_delay).await;
            let rel = std::path::PathBuf::from(format!("logs/{container}.log"));
            match pod_file(inner, ns, pod, &rel).map(std::fs::read) {
                Some(Ok(bytes)) => reply(StatusCode::OK, bytes),
                _ => reply(
                    StatusCode::NOT_FOUND,
                    format!("no log for {ns}/{pod}/{container}").into_bytes(),
                ),
            }
        }
        ["", "portForward", ns, pod] if inner.pod_dir(ns, pod).is_some() => {
            let query = req.uri().query().unwrap_or_default();
            let port = query
                .split('&')
                .filter_map(|kv| kv.split_once('='))
                .find(|(k, _)| *k == "port" || *k == "ports")
                .and_then(|(_, v)| v.split(',').next()?.parse::<u16>().ok());
            let (Some(port), Some(key)) = (port, req.headers().get("sec-websocket-key").cloned())
            else {
                return reply(
                    StatusCode::BAD_REQUEST,
                    b"a websocket upgrade naming one port".to_vec(),
                );
            };
            let protocol = req
                .headers()
                .get("sec-websocket-protocol")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(',').next())
                .map(|p| p.trim().to_string())
                .unwrap_or_else(|| "v4.channel.k8s.io".into());
            let upgrade = hyper::upgrade::on(&mut req);
            tokio::spawn(forward(upgrade, port));
            Response::builder()
                .status(StatusCode::SWITCHING_PROTOCOLS)
                .header("upgrade", "websocket")
                .header("connection", "Upgrade")
                .header("sec-websocket-protocol", protocol)
                .header(
                    "sec-websocket-accept",
                    tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes()),
                )
                .body(Full::new(Bytes::new()))
                .expect("a response")
        }
        _ => reply(
            StatusCode::NOT_FOUND,
            b"not served by the stand-in kubelet".to_vec(),
        ),
    }
}

/// One forwarded connection to `port` on the host, over the upgraded request.
async fn forward(upgrade: hyper::upgrade::OnUpgrade, port: u16) {
    use futures_util::{SinkExt, StreamExt};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_tungstenite::tungstenite::Message;
    let Ok(upgraded) = upgrade.await else {
        return;
    };
    let ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
        TokioIo::new(upgraded),
        tokio_tungstenite::tungstenite::protocol::Role::Server,
        None,
    )
    .await;
    let (mut tx, mut rx) = ws.split();
    let p = port.to_le_bytes();
    for ch in [0u8, 1] {
        if tx
            .send(Message::binary(vec![ch, p[0], p[1]]))
            .await
            .is_err()
        {
            return;
        }
    }
    let tcp = match tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
        Ok(tcp) => tcp,
        Err(e) => {
            let mut frame = vec![1u8];
            frame.extend_from_slice(format!("cannot connect to port {port}: {e}").as_bytes());
            let _ = tx.send(Message::binary(frame)).await;
            let _ = tx.send(Message::Close(None)).await;
            return;
        }
    };
    let (mut from, mut to) = tcp.into_split();
    let to_pod = async move {
        while let Some(Ok(m)) = rx.next().await {
            match m {
                Message::Binary(b) if b.len() > 1 && b[0] == 0 => {
                    if to.write_all(&b[1..]).await.is_err() {
                        return;
                    }
                }
                Message::Binary(_) | Message::Ping(_) | Message::Pong(_) => {}
                _ => return,
            }
        }
    };
    let from_pod = async move {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            let n = from.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                let _ = tx.send(Message::Close(None)).await;
                return;
            }
            let mut frame = Vec::with_capacity(n + 1);
            frame.push(0);
            frame.extend_from_slice(&buf[..n]);
            if tx.send(Message::binary(frame)).await.is_err() {
                return;
            }
        }
    };
    tokio::select! { _ = to_pod => {}, _ = from_pod => {} }
}
