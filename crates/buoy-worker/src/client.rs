//! A small HTTP/1.1 client over plain TCP or mTLS, one connection per request: what the worker
//! needs to upload results and relay progress. Bodies stream from their source.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode, Uri};
use http_body_util::{combinators::BoxBody, BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid aggregator URL {0:?}: {1}")]
    Url(String, String),
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("TLS handshake with {addr} failed: {source}")]
    Tls {
        addr: String,
        source: std::io::Error,
    },
    #[error("HTTP error talking to {addr}: {source}")]
    Http { addr: String, source: hyper::Error },
    #[error("timed out talking to {0}")]
    Timeout(String),
    #[error("the answer from {addr} broke off: {reason}")]
    Body { addr: String, reason: String },
    #[error("{0}")]
    Other(String),
}

impl ClientError {
    /// Transport failures are worth retrying.
    pub fn is_transport(&self) -> bool {
        !matches!(self, ClientError::Url(..) | ClientError::Other(_))
    }
}

pub type Body = BoxBody<Bytes, std::io::Error>;

pub fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

/// A response, its body capped at 64 KiB (aggregator answers are short texts).
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).trim_end().to_string()
    }
}

/// How much of a reply body to read, and whether a broken one is an error.
#[derive(Debug, Clone, Copy)]
enum BodyRead {
    Lenient,
    Whole(usize),
}

#[derive(Clone)]
pub struct Client {
    scheme_https: bool,
    host: String,
    port: u16,
    tls: Option<tokio_rustls::TlsConnector>,
    /// Applies to connecting, the handshake and reading the response head.
    pub connect_timeout: Duration,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Client({}://{}:{})",
            if self.scheme_https { "https" } else { "http" },
            self.host,
            self.port
        )
    }
}

impl Client {
    /// A client for `base_url` (`https://host:port` or `http://host:port`; any path is
    /// ignored, as Sonobuoy's worker ignores it). `tls` is required for https.
    pub fn new(base_url: &str, tls: Option<rustls::ClientConfig>) -> Result<Self, ClientError> {
        let uri: Uri = base_url
            .parse()
            .map_err(|e: http::uri::InvalidUri| ClientError::Url(base_url.into(), e.to_string()))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => {
                return Err(ClientError::Url(
                    base_url.into(),
                    "scheme must be http or https".into(),
                ))
            }
        };
        let host = uri
            .host()
            .ok_or_else(|| ClientError::Url(base_url.into(), "no host".into()))?
            .to_string();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tls = match (https, tls) {
            (true, Some(cfg)) => Some(tokio_rustls::TlsConnector::from(Arc::new(cfg))),
            (true, None) => {
                return Err(ClientError::Url(
                    base_url.into(),
                    "https needs CA_CERT, CLIENT_CERT and CLIENT_KEY".into(),
                ))
            }
            (false, _) => None,
        };
        Ok(Self {
            scheme_https: https,
            host,
            port,
            tls,
            connect_timeout: Duration::from_secs(30),
        })
    }

    fn addr(&self) -> String {
        let h = &self.host;
        if h.contains(':') && !h.starts_with('[') {
            format!("[{h}]:{}", self.port)
        } else {
            format!("{h}:{}", self.port)
        }
    }

    /// Sends one request and reads the reply; a reply body past 64 KiB, or one that breaks
    /// off, reads as empty.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: HeaderMap,
        body: Body,
    ) -> Result<Reply, ClientError> {
        self.send_with(method, path, headers, body, BodyRead::Lenient)
            .await
    }

    /// A GET whose whole reply body, up to `limit` bytes, is wanted: one that breaks off or
    /// runs past `limit` is an error ([`ClientError::Body`], worth retrying).
    pub async fn get_whole(
        &self,
        path: &str,
        headers: HeaderMap,
        limit: usize,
    ) -> Result<Reply, ClientError> {
        self.send_with(
            Method::GET,
            path,
            headers,
            full(Vec::new()),
            BodyRead::Whole(limit),
        )
        .await
    }

    async fn send_with(
        &self,
        method: Method,
        path: &str,
        headers: HeaderMap,
        body: Body,
        read: BodyRead,
    ) -> Result<Reply, ClientError> {
        let addr = self.addr();
        let tcp = tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr.as_str()))
            .await
            .map_err(|_| ClientError::Timeout(addr.clone()))?
            .map_err(|source| ClientError::Connect {
                addr: addr.clone(),
                source,
            })?;
        let _ = tcp.set_nodelay(true);
        let authority = if self.port == if self.scheme_https { 443 } else { 80 } {
            self.host.clone()
        } else {
            addr.clone()
        };
        let mut req = http::Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, authority);
        for (k, v) in headers.iter() {
            req = req.header(k, v);
        }
        let req = req
            .body(body)
            .map_err(|e| ClientError::Other(e.to_string()))?;
        match &self.tls {
            None => self.exchange(TokioIo::new(tcp), req, &addr, read).await,
            Some(conn) => {
                let name = self
                    .host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_string();
                let server_name = ServerName::try_from(name)
                    .map_err(|e| ClientError::Url(self.host.clone(), e.to_string()))?;
                let tls =
                    tokio::time::timeout(self.connect_timeout, conn.connect(server_name, tcp))
                        .await
                        .map_err(|_| ClientError::Timeout(addr.clone()))?
                        .map_err(|source| ClientError::Tls {
                            addr: addr.clone(),
                            source,
                        })?;
                self.exchange(TokioIo::new(tls), req, &addr, read).await
            }
        }
    }

    async fn exchange<IO>(
        &self,
        io: TokioIo<IO>,
        req: http::Request<Body>,
        addr: &str,
        read: BodyRead,
    ) -> Result<Reply, ClientError>
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(io)
                .await
                .map_err(|source| ClientError::Http {
                    addr: addr.to_string(),
                    source,
                })?;
        let conn_task = tokio::spawn(conn);
        let resp = sender
            .send_request(req)
            .await
            .map_err(|source| ClientError::Http {
                addr: addr.to_string(),
                source,
            });
        let resp = match resp {
            Ok(r) => r,
            Err(e) => {
                conn_task.abort();
                return Err(e);
            }
        };
        let status = resp.status();
        let headers = resp.headers().clone();
        let limit = match read {
            BodyRead::Lenient => 64 * 1024,
            BodyRead::Whole(limit) => limit,
        };
        let body = match (Limited::new(resp.into_body(), limit).collect().await, read) {
            (Ok(c), _) => c.to_bytes(),
            (Err(_), BodyRead::Lenient) => Bytes::new(),
            (Err(e), BodyRead::Whole(_)) => {
                conn_task.abort();
                return Err(ClientError::Body {
                    addr: addr.to_string(),
                    reason: e.to_string(),
                });
            }
        };
        conn_task.abort();
        Ok(Reply {
            status,
            headers,
            body,
        })
    }
}
