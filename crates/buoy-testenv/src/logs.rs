//! The kubelet endpoint the API server reads pod logs from: `GET
//! /containerLogs/{namespace}/{pod}/{container}` over TLS, answered with what the container
//! wrote to stdout and stderr. Nothing else of the kubelet API is served (404).

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
                        .await;
                });
            }
        })
    });
    Ok((port, run))
}

async fn answer(inner: &Inner, req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
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
        _ => reply(
            StatusCode::NOT_FOUND,
            b"not served by the stand-in kubelet".to_vec(),
        ),
    }
}
