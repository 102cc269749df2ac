//! The scripted API server for tests (kube-rs `tower_test::mock::pair` style): a client whose
//! requests arrive here, checked one by one against a scenario, or answered by a handler when
//! several tasks talk to the API at once. Every await has a timeout.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response};
use http_body_util::BodyExt;
use kube::client::Body;
use serde_json::{json, Value};

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

pub const WAIT: Duration = Duration::from_secs(10);

/// One request as the API server saw it.
#[derive(Debug, Clone)]
pub struct Call {
    pub method: String,
    /// Path and query, e.g. `/api/v1/namespaces/sonobuoy/pods?&labelSelector=...`.
    pub uri: String,
    pub content_type: String,
    /// What the client asked the answer to be (a metadata-only list says so here).
    pub accept: String,
    pub body: Value,
}

impl Call {
    pub fn path(&self) -> &str {
        self.uri.split('?').next().unwrap_or_default()
    }

    /// A query parameter, URL-decoded.
    pub fn query(&self, name: &str) -> Option<String> {
        let q = self.uri.split_once('?')?.1;
        q.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            (k == name).then(|| url_decode(v))
        })
    }
}

fn url_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn header(headers: &http::HeaderMap, name: http::header::HeaderName) -> String {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

async fn read(req: Request<Body>) -> Call {
    let (parts, body) = req.into_parts();
    let bytes = tokio::time::timeout(WAIT, body.collect())
        .await
        .expect("request body in time")
        .expect("request body")
        .to_bytes();
    Call {
        method: parts.method.to_string(),
        uri: parts
            .uri
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default(),
        content_type: header(&parts.headers, http::header::CONTENT_TYPE),
        accept: header(&parts.headers, http::header::ACCEPT),
        body: if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
        },
    }
}

/// A JSON string body goes out as plain text (a pod's log); anything else as JSON.
fn response(code: u16, body: &Value) -> Response<Body> {
    let (content_type, bytes) = match body {
        Value::String(text) => ("text/plain", text.clone().into_bytes()),
        v => ("application/json", serde_json::to_vec(v).unwrap()),
    };
    Response::builder()
        .status(code)
        .header("content-type", content_type)
        .body(Body::from(bytes))
        .unwrap()
}

/// A Kubernetes `Status` error body.
pub fn api_error(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

pub fn list(kind: &str, items: Vec<Value>) -> Value {
    json!({"kind": kind, "apiVersion": "v1", "metadata": {"resourceVersion": "1"}, "items": items})
}

/// A client talking to a scripted API server.
pub fn pair() -> (kube::Client, ApiServerVerifier) {
    let (svc, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (kube::Client::new(svc, "default"), ApiServerVerifier(handle))
}

pub struct ApiServerVerifier(Handle);

impl ApiServerVerifier {
    /// Takes the next request, checks its method and path, answers `code` with `body`.
    pub async fn expect(&mut self, method: &str, path: &str, code: u16, body: Value) -> Call {
        let (req, send) = tokio::time::timeout(WAIT, self.0.next_request())
            .await
            .unwrap_or_else(|_| panic!("no request arrived; expected {method} {path}"))
            .expect("the client is gone");
        let call = read(req).await;
        assert_eq!(
            (call.method.as_str(), call.path()),
            (method, path),
            "unexpected request {} {}",
            call.method,
            call.uri
        );
        send.send_response(response(code, &body));
        call
    }

    /// Asserts that no further request arrives within `wait`.
    pub async fn expect_silence(&mut self, wait: Duration) {
        if let Ok(Some((req, _))) = tokio::time::timeout(wait, self.0.next_request()).await {
            panic!("unexpected request {} {}", req.method(), req.uri());
        }
    }

    /// Answers every request with `handler` from now on, recording each call. A watch is
    /// answered 50 ms later with what the handler lists for the same path and selector, as
    /// one `ADDED` event per item, and then ends: the watcher watches again, so it sees the
    /// scripted cluster about twenty times a second, as if each change were an event.
    pub fn serve<F>(mut self, handler: F) -> Recorded
    where
        F: FnMut(&Call) -> (u16, Value) + Send + 'static,
    {
        let calls: Recorded = Arc::new(Mutex::new(Vec::new()));
        let rec = calls.clone();
        let handler = Arc::new(Mutex::new(handler));
        tokio::spawn(async move {
            while let Some((req, send)) = self.0.next_request().await {
                let call = read(req).await;
                let watch = matches!(call.query("watch").as_deref(), Some("true" | "1"));
                rec.lock().unwrap().push(call.clone());
                if !watch {
                    let (code, body) = (handler.lock().unwrap())(&call);
                    send.send_response(response(code, &body));
                    continue;
                }
                let handler = handler.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    let (code, body) = (handler.lock().unwrap())(&call);
                    let events = body["items"]
                        .as_array()
                        .filter(|_| code == 200)
                        .into_iter()
                        .flatten()
                        .map(|o| json!({"type": "ADDED", "object": o}).to_string() + "\n")
                        .collect::<String>();
                    send.send_response(response(200, &Value::String(events)));
                });
            }
        });
        calls
    }
}

pub type Recorded = Arc<Mutex<Vec<Call>>>;

/// Runs `f` with a timeout, so a stuck conversation fails the test instead of hanging it.
pub async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), f)
        .await
        .expect("the scenario finished in time")
}

#[test]
fn query_decoding() {
    let c = Call {
        method: "GET".into(),
        uri: "/api/v1/pods?&labelSelector=sonobuoy-component%3Daggregator".into(),
        content_type: String::new(),
        accept: String::new(),
        body: Value::Null,
    };
    assert_eq!(
        c.query("labelSelector").unwrap(),
        "sonobuoy-component=aggregator"
    );
}
