//! The HTTP API (compat §1 with departures 1, 2, 5, 6 and 8): routes, Sonobuoy's router
//! behaviour (404 text, 405, 301 to the clean path), the handlers, and the single place where
//! errors become HTTP responses.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Extension, Json, Router};
use buoy_wire::key::is_valid_name;
use buoy_wire::overview::{NodePage, Overview, MAX_NODE_PAGE};
use buoy_wire::ResultKey;
use futures_util::TryStreamExt;
use tower::ServiceExt;

use crate::aggregator::Aggregator;
use crate::error::AggError;
use crate::status_body::StatusBody;

/// Largest progress update body accepted.
const MAX_PROGRESS_BYTES: usize = 1 << 20;

/// The names on the client certificate of the connection a request came in on; `None` on a
/// plain-HTTP listener.
#[derive(Debug, Clone, Default)]
pub struct PeerIdentity(pub Option<Arc<Vec<String>>>);

/// Everything a handler can answer besides 200.
#[derive(Debug)]
pub enum ApiError {
    NotFound,
    /// The tarball is asked for before the run is sealed.
    TarballNotReady(String),
    ProgressTooLarge,
    /// A transfer coding besides `chunked` (RFC 9112 §6.1: 501, never stored still coded).
    TransferCoding(String),
    /// `If-None-Match` matched the tarball.
    NotModified(String),
    /// `If-Match` did not match the tarball.
    PreconditionFailed,
    Agg(AggError),
}

impl From<AggError> for ApiError {
    fn from(e: AggError) -> Self {
        ApiError::Agg(e)
    }
}

fn text(status: StatusCode, body: String) -> Response {
    let mut r = (status, body).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    r
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::NotFound | ApiError::TarballNotReady(_) => StatusCode::NOT_FOUND,
            ApiError::ProgressTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::TransferCoding(_) => StatusCode::NOT_IMPLEMENTED,
            ApiError::NotModified(_) => StatusCode::NOT_MODIFIED,
            ApiError::PreconditionFailed => StatusCode::PRECONDITION_FAILED,
            ApiError::Agg(e) => match e {
                AggError::Unexpected(_)
                | AggError::ProgressUnexpected(_)
                | AggError::WrongIdentity { .. } => StatusCode::FORBIDDEN,
                AggError::Duplicate(_) | AggError::InFlight(_) => StatusCode::CONFLICT,
                AggError::BadProgress(_) | AggError::Refused { .. } => StatusCode::BAD_REQUEST,
                AggError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
                AggError::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
                AggError::NoSpace { .. } => StatusCode::INSUFFICIENT_STORAGE,
                AggError::Busy { .. } | AggError::ShuttingDown | AggError::Interrupted => {
                    StatusCode::SERVICE_UNAVAILABLE
                }
                AggError::Internal { .. } | AggError::Io { .. } | AggError::Config(_) => {
                    StatusCode::INTERNAL_SERVER_ERROR
                }
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let e = match self {
            ApiError::NotFound => return text(status, "404 page not found\n".into()),
            ApiError::TarballNotReady(run) => {
                return text(
                    status,
                    format!("the tarball is not ready: the run is {run}\n"),
                )
            }
            ApiError::ProgressTooLarge => {
                return text(
                    status,
                    format!("progress update exceeds {MAX_PROGRESS_BYTES} bytes\n"),
                )
            }
            ApiError::TransferCoding(te) => {
                tracing::warn!(transfer_encoding = %te, "request refused: unsupported transfer coding");
                return text(
                    status,
                    format!("transfer coding {te:?} is not supported: send the body chunked or with a length\n"),
                );
            }
            ApiError::NotModified(etag) => {
                let mut r = status.into_response();
                if let Ok(v) = HeaderValue::from_str(&etag) {
                    r.headers_mut().insert(header::ETAG, v);
                }
                return r;
            }
            ApiError::PreconditionFailed => {
                return text(status, "the tarball does not match If-Match\n".into())
            }
            ApiError::Agg(e) => e,
        };
        if status.is_server_error() {
            tracing::error!(status = status.as_u16(), error = %e, "request failed");
        } else {
            tracing::warn!(status = status.as_u16(), error = %e, "request refused");
        }
        let mut r = text(status, format!("{e}\n"));
        if matches!(e, AggError::Busy { .. } | AggError::NoSpace { .. }) {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        r
    }
}

fn key_of(plugin: String, node: Option<String>) -> Result<ResultKey, ApiError> {
    // Go's router never matches a segment containing '/', which a decoded %2F would be.
    let node = node.unwrap_or_else(|| buoy_wire::GLOBAL_NODE.to_string());
    if !is_valid_name(&plugin) || !is_valid_name(&node) {
        return Err(ApiError::NotFound);
    }
    Ok(ResultKey::new(plugin, node))
}

fn header_str(h: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

async fn put_result(
    agg: Arc<Aggregator>,
    peer: Option<Extension<PeerIdentity>>,
    key: ResultKey,
    req: Request<Body>,
) -> Result<StatusCode, ApiError> {
    let started = std::time::Instant::now();
    // The request itself rather than axum's `HeaderMap` extractor, which copies every header.
    let (parts, body) = req.into_parts();
    let answer = receive(&agg, peer, key, &parts.headers, body).await;
    let code = match &answer {
        Ok(()) => StatusCode::OK,
        Err(e) => e.status(),
    };
    agg.metrics()
        .upload_answered(code.as_u16(), started.elapsed().as_secs_f64());
    answer.map(|()| StatusCode::OK)
}

async fn receive(
    agg: &Arc<Aggregator>,
    peer: Option<Extension<PeerIdentity>>,
    key: ResultKey,
    headers: &HeaderMap,
    body: Body,
) -> Result<(), ApiError> {
    let ids = peer.as_ref().and_then(|Extension(p)| p.0.clone());
    agg.authorize(&key.plugin, ids.as_deref().map(Vec::as_slice))?;
    // hyper undoes `chunked` only; a body still under another coding would be stored coded.
    for te in headers.get_all(header::TRANSFER_ENCODING) {
        let te = te.to_str().unwrap_or("?");
        if te
            .split(',')
            .any(|c| !c.trim().eq_ignore_ascii_case("chunked"))
        {
            return Err(ApiError::TransferCoding(te.chars().take(100).collect()));
        }
    }
    let ct = header_str(headers, header::CONTENT_TYPE);
    let cd = header_str(headers, header::CONTENT_DISPOSITION);
    let len = header_str(headers, header::CONTENT_LENGTH).and_then(|v| v.parse::<u64>().ok());
    let metrics = agg.metrics().clone();
    let counted = body
        .into_data_stream()
        .inspect_ok(move |chunk| metrics.body_bytes(chunk.len() as u64));
    agg.upload(key, ct, cd, len, counted).await?;
    Ok(())
}

async fn put_by_node(
    State(agg): State<Arc<Aggregator>>,
    peer: Option<Extension<PeerIdentity>>,
    Path((node, plugin)): Path<(String, String)>,
    req: Request<Body>,
) -> Result<StatusCode, ApiError> {
    let key = key_of(plugin, Some(node))?;
    put_result(agg, peer, key, req).await
}

async fn put_global(
    State(agg): State<Arc<Aggregator>>,
    peer: Option<Extension<PeerIdentity>>,
    Path(plugin): Path<String>,
    req: Request<Body>,
) -> Result<StatusCode, ApiError> {
    let key = key_of(plugin, None)?;
    put_result(agg, peer, key, req).await
}

async fn post_progress(
    agg: Arc<Aggregator>,
    peer: Option<Extension<PeerIdentity>>,
    key: ResultKey,
    body: Body,
) -> Result<StatusCode, ApiError> {
    let ids = peer.as_ref().and_then(|Extension(p)| p.0.clone());
    agg.authorize(&key.plugin, ids.as_deref().map(Vec::as_slice))?;
    let bytes = axum::body::to_bytes(body, MAX_PROGRESS_BYTES)
        .await
        .map_err(|_| ApiError::ProgressTooLarge)?;
    agg.progress(&key, &bytes)?;
    Ok(StatusCode::OK)
}

async fn progress_by_node(
    State(agg): State<Arc<Aggregator>>,
    peer: Option<Extension<PeerIdentity>>,
    Path((node, plugin)): Path<(String, String)>,
    body: Body,
) -> Result<StatusCode, ApiError> {
    let key = key_of(plugin, Some(node))?;
    post_progress(agg, peer, key, body).await
}

async fn progress_global(
    State(agg): State<Arc<Aggregator>>,
    peer: Option<Extension<PeerIdentity>>,
    Path(plugin): Path<String>,
    body: Body,
) -> Result<StatusCode, ApiError> {
    let key = key_of(plugin, None)?;
    post_progress(agg, peer, key, body).await
}

async fn status(State(agg): State<Arc<Aggregator>>) -> Response {
    match agg.status_body() {
        StatusBody::Whole(s) => Json(s).into_response(),
        StatusBody::Stream(chunks) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            Body::from_stream(chunks),
        )
            .into_response(),
    }
}

/// The sealed tarball, streamed from disk (constant memory whatever its size), with `Range`,
/// `HEAD` and conditional requests; its SHA-256 travels in a header and as the `ETag`.
async fn tarball(
    State(agg): State<Arc<Aggregator>>,
    req: Request<Body>,
) -> Result<Response, ApiError> {
    let Some((path, info)) = agg.tarball() else {
        return Err(ApiError::TarballNotReady(agg.status().status));
    };
    let etag = format!("\"{}\"", info.sha256);
    let req = conditional(req, &etag)?;
    let mut resp = match tower_http::services::ServeFile::new(&path)
        .oneshot(req)
        .await
    {
        Ok(r) => r.map(Body::new),
        Err(never) => match never {},
    };
    if resp.status() == StatusCode::NOT_FOUND {
        tracing::error!(path = %path.display(), "the sealed tarball is gone from disk");
        return Err(ApiError::Agg(AggError::Io {
            context: format!("the tarball {} is gone", path.display()),
            source: std::io::ErrorKind::NotFound.into(),
        }));
    }
    let h = resp.headers_mut();
    let pairs = [
        (
            buoy_wire::routes::TARBALL_SHA256_HEADER,
            info.sha256.clone(),
        ),
        ("etag", format!("\"{}\"", info.sha256)),
        (
            "content-disposition",
            format!("attachment; filename=\"{}\"", info.name),
        ),
    ];
    for (k, v) in pairs {
        if let Ok(v) = HeaderValue::from_str(&v) {
            h.insert(k, v);
        }
    }
    Ok(resp)
}

/// An entity tag without its weak prefix.
fn opaque(tag: &str) -> &str {
    tag.trim().trim_start_matches("W/")
}

/// Answers the conditional headers of a tarball request against its `etag` (RFC 9110 §13):
/// `If-Match` that matches nothing is 412, `If-None-Match` that matches (`*` matches a
/// tarball that exists) is 304, and an `If-Range` tag that is not exactly the tarball's asks
/// for the whole file, not the range. What is left goes to the file server.
fn conditional(mut req: Request<Body>, etag: &str) -> Result<Request<Body>, ApiError> {
    let list = |name: header::HeaderName, req: &Request<Body>| -> Option<Vec<String>> {
        let values: Vec<String> = req
            .headers()
            .get_all(&name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
            .collect();
        (!values.is_empty()).then_some(values)
    };
    if let Some(tags) = list(header::IF_MATCH, &req) {
        if !tags.iter().any(|t| t == "*" || t == etag) {
            return Err(ApiError::PreconditionFailed);
        }
    }
    if let Some(tags) = list(header::IF_NONE_MATCH, &req) {
        if tags.iter().any(|t| t == "*" || opaque(t) == etag) {
            return Err(ApiError::NotModified(etag.to_string()));
        }
    }
    let h = req.headers_mut();
    h.remove(header::IF_MATCH);
    h.remove(header::IF_NONE_MATCH);
    if let Some(v) = h.get(header::IF_RANGE).and_then(|v| v.to_str().ok()) {
        let is_tag = v.starts_with('"') || v.starts_with("W/");
        if is_tag {
            if v != etag {
                h.remove(header::RANGE);
            }
            h.remove(header::IF_RANGE);
        }
    }
    Ok(req)
}

async fn not_found() -> ApiError {
    ApiError::NotFound
}

async fn overview(State(agg): State<Arc<Aggregator>>) -> Json<Overview> {
    Json(agg.overview())
}

#[derive(Debug, serde::Deserialize)]
struct NodeQuery {
    plugin: String,
    state: Option<String>,
    #[serde(default)]
    offset: u64,
    limit: Option<u64>,
}

async fn nodes(State(agg): State<Arc<Aggregator>>, Query(q): Query<NodeQuery>) -> Json<NodePage> {
    let state = q.state.as_deref().filter(|s| !s.is_empty());
    Json(agg.node_page(&q.plugin, state, q.offset, q.limit.unwrap_or(MAX_NODE_PAGE)))
}

async fn metrics(State(agg): State<Arc<Aggregator>>) -> Response {
    let mut r = agg.metrics_text().into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
    );
    r
}

/// What only reads the run: the status page and its assets, status, overview, node pages,
/// metrics and the tarball. A view listener (`--view-bind`) serves these alone.
fn read_routes() -> Router<Arc<Aggregator>> {
    use buoy_wire::routes::*;
    Router::new()
        .route("/", get(crate::page::index))
        .route(&format!("{PAGE_ASSETS}/{{file}}"), get(crate::page::asset))
        .route(STATUS, get(status))
        .route(OVERVIEW, get(overview))
        .route(NODES, get(nodes))
        .route(METRICS, get(metrics))
        .route(TARBALL, get(tarball))
}

/// The read-only routes alone, for a listener that must never accept results.
pub fn view_router(agg: Arc<Aggregator>) -> Router {
    read_routes().fallback(not_found).with_state(agg)
}

/// The aggregator's routes.
pub fn router(agg: Arc<Aggregator>) -> Router {
    use buoy_wire::routes::*;
    read_routes()
        .route(
            &format!("{RESULTS_BY_NODE}/{{node}}/{{plugin}}"),
            put(put_by_node),
        )
        .route(&format!("{RESULTS_GLOBAL}/{{plugin}}"), put(put_global))
        .route(
            &format!("{PROGRESS_BY_NODE}/{{node}}/{{plugin}}"),
            post(progress_by_node),
        )
        .route(
            &format!("{PROGRESS_GLOBAL}/{{plugin}}"),
            post(progress_global),
        )
        .fallback(not_found)
        .with_state(agg)
}

/// Whether `clean_path` would leave `p` as it is: rooted, no empty, `.` or `..` segment
/// (a trailing slash aside). Nearly every request's path is, and then nothing is allocated.
fn is_clean(p: &str) -> bool {
    if p == "/" {
        return true;
    }
    let Some(rest) = p.strip_prefix('/') else {
        return false;
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    rest.split('/').all(|seg| !matches!(seg, "" | "." | ".."))
}

/// Go's `path.Clean` as gorilla/mux applies it: a trailing slash is kept.
pub fn clean_path(p: &str) -> String {
    if p.is_empty() {
        return "/".into();
    }
    let mut parts: Vec<&str> = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    let mut out = format!("/{}", parts.join("/"));
    if p.ends_with('/') && out != "/" {
        out.push('/');
    }
    out
}

/// Serves one request: non-clean paths get a 301 to the clean one before routing, as with
/// Sonobuoy's router; everything else goes to `router`.
pub async fn dispatch(router: Router, req: Request<Body>) -> Response {
    let path = req.uri().path();
    if !is_clean(path) {
        let clean = clean_path(path);
        let loc = match req.uri().query() {
            Some(q) => format!("{clean}?{q}"),
            None => clean,
        };
        let mut r = StatusCode::MOVED_PERMANENTLY.into_response();
        if let Ok(v) = HeaderValue::from_str(&loc) {
            r.headers_mut().insert(header::LOCATION, v);
        }
        return r;
    }
    match router.oneshot(req).await {
        Ok(r) => r,
        Err(never) => match never {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_path_matches_go() {
        assert_eq!(
            clean_path("//api/v1/results/global/p"),
            "/api/v1/results/global/p"
        );
        assert_eq!(
            clean_path("/api/v1/./results/global/p/"),
            "/api/v1/results/global/p/"
        );
        assert_eq!(clean_path("/a/b/../c"), "/a/c");
        assert_eq!(clean_path("/../x"), "/x");
        assert_eq!(clean_path("/"), "/");
        assert_eq!(
            clean_path("/api/v1/results/global/p"),
            "/api/v1/results/global/p"
        );
    }

    #[test]
    fn a_path_is_taken_as_clean_exactly_when_cleaning_leaves_it_alone() {
        for p in [
            "",
            "/",
            "//",
            "/a",
            "/a/",
            "/a//b",
            "//a",
            "/a/./b",
            "/a/../b",
            "/a/.",
            "/a/..",
            "/..",
            "/.",
            "/a/b/",
            "/a/b//",
            "a/b",
            "/a.b/c..d/.e",
            "/./",
            "/a/.../b",
        ] {
            assert_eq!(is_clean(p), clean_path(p) == p, "{p:?}");
        }
    }
}
