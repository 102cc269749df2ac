//! The progress relay (compat §7.2): plain HTTP on the progress port; any method on exactly
//! `/progress` forwards the body unchanged to the aggregator's progress route over the worker's
//! client, and passes the aggregator's status and body back. Failing to listen is logged and
//! not fatal (two plugins on one host network may want the same port).

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;
use http::{HeaderMap, Method, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::task::JoinHandle;

use crate::client::{full, Client};

const MAX_BODY: usize = 1 << 20;

async fn handle(
    req: hyper::Request<Incoming>,
    client: Client,
    path: String,
) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, body: String| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        r
    };
    if req.uri().path() != "/progress" {
        return reply(StatusCode::NOT_FOUND, "404 page not found\n".into());
    }
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return reply(
                StatusCode::BAD_REQUEST,
                format!("cannot read progress update: {e}\n"),
            )
        }
    };
    match client
        .send(Method::POST, &path, HeaderMap::new(), full(body))
        .await
    {
        Ok(r) => reply(r.status, String::from_utf8_lossy(&r.body).into_owned()),
        Err(e) => {
            tracing::warn!(error = %e, "cannot relay a progress update");
            reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot relay progress update: {e}\n"),
            )
        }
    }
}

/// Starts the relay; `None` if the port cannot be bound.
pub async fn start(
    bind: IpAddr,
    port: u16,
    client: Client,
    path: String,
) -> Option<JoinHandle<()>> {
    let addr = SocketAddr::new(bind, port);
    match tokio::net::TcpListener::bind(addr).await {
        Ok(listener) => Some(serve(listener, client, path)),
        Err(e) => {
            tracing::warn!(%addr, error = %e, "progress relay not started; progress updates will be lost");
            None
        }
    }
}

/// Serves the relay on a listener bound beforehand: local mode binds it before the plugin
/// starts, so the port the plugin is told is held from the first moment, and an update sent
/// before this task runs waits in the listen queue instead of being refused.
pub fn serve(listener: tokio::net::TcpListener, client: Client, path: String) -> JoinHandle<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "progress relay listening");
    }
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let client = client.clone();
            let path = path.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let client = client.clone();
                    let path = path.clone();
                    async move { Ok::<_, Infallible>(handle(req, client, path).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    })
}

/// Posts one progress update to a relay on this host (what `buoy progress` does).
pub async fn post_local(
    port: u16,
    body: Vec<u8>,
) -> Result<crate::client::Reply, crate::client::ClientError> {
    let client = Client::new(&format!("http://127.0.0.1:{port}"), None)?;
    let mut h = HeaderMap::new();
    h.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    client.send(Method::POST, "/progress", h, full(body)).await
}
