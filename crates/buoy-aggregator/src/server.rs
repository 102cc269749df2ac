//! The network side: accepts connections on a bound listener, performs the TLS handshake
//! (requiring a client certificate from the run CA) under a timeout, reads the peer's identity
//! from its certificate, and serves HTTP/1.1 with a header-read timeout and a write-stall
//! timeout. Stops accepting when the shutdown future resolves and drains open connections for
//! a grace period.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::Router;
use hyper::body::Incoming;
use hyper::Request;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;

use crate::api::{dispatch, PeerIdentity};

#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Time a client has to send a request's headers; also bounds an idle keep-alive wait.
    pub header_read_timeout: Duration,
    pub tls_handshake_timeout: Duration,
    /// How long a connection may go without taking any of the bytes it is sent before it is
    /// closed: a client that never reads its answer would otherwise hold the answer (a whole
    /// status body) and the connection forever.
    pub write_stall_timeout: Duration,
    /// How long open connections may finish after shutdown starts.
    pub grace_period: Duration,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(30),
            tls_handshake_timeout: Duration::from_secs(10),
            write_stall_timeout: Duration::from_secs(30),
            grace_period: Duration::from_secs(30),
        }
    }
}

async fn serve_conn<IO>(
    io: IO,
    router: Router,
    peer: PeerIdentity,
    opts: &ServerOptions,
    watcher: hyper_util::server::graceful::Watcher,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
        let router = router.clone();
        let peer = peer.clone();
        async move {
            let mut req = req.map(Body::new);
            req.extensions_mut().insert(peer);
            Ok::<_, Infallible>(dispatch(router, req).await)
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(opts.header_read_timeout)
        // hyper's read buffer grows to about 400 KiB on a connection streaming a large body,
        // 20 MiB for 50 such uploads. A request head must also fit in it: 64 KiB is eight
        // times what nginx allows by default.
        .max_buf_size(MAX_READ_BUF)
        .keep_alive(true);
    let io = StallGuard::new(io, opts.write_stall_timeout);
    let conn = builder.serve_connection(TokioIo::new(io), svc);
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// Largest read buffer per connection, the request head included.
const MAX_READ_BUF: usize = 64 * 1024;

/// A connection whose writes fail with `TimedOut` once the peer has taken none of the bytes
/// sent to it for a whole timeout. hyper has no write timeout; its header-read timeout only
/// covers the wait for a request.
struct StallGuard<IO> {
    io: IO,
    timeout: Duration,
    /// Armed at the first write that could not proceed, cleared by any progress.
    stall: Pin<Box<tokio::time::Sleep>>,
    stalled: bool,
}

impl<IO> StallGuard<IO> {
    fn new(io: IO, timeout: Duration) -> Self {
        Self {
            io,
            timeout,
            stall: Box::pin(tokio::time::sleep(timeout)),
            stalled: false,
        }
    }

    /// Called with a write's outcome: progress clears the stall, and a write still pending
    /// once the stall has lasted the timeout becomes an error that ends the connection.
    fn check<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if polled.is_ready() {
            self.stalled = false;
            return polled;
        }
        if !self.stalled {
            self.stalled = true;
            let deadline = tokio::time::Instant::now() + self.timeout;
            self.stall.as_mut().reset(deadline);
        }
        match self.stall.as_mut().poll(cx) {
            Poll::Ready(()) => {
                tracing::info!(
                    timeout = ?self.timeout,
                    "closing a connection whose client took none of its answer"
                );
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the client took none of its answer within the write-stall timeout",
                )))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for StallGuard<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for StallGuard<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write(cx, buf);
        self.check(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.check(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.io).poll_flush(cx);
        self.check(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.io).poll_shutdown(cx);
        self.check(cx, polled)
    }
}

/// Serves `router` on `listener` until `shutdown` resolves, then drains.
pub async fn serve<F>(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    router: Router,
    opts: ServerOptions,
    shutdown: F,
) -> std::io::Result<()>
where
    F: Future<Output = ()> + Send,
{
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let opts = Arc::new(opts);
    tokio::pin!(shutdown);
    loop {
        let (tcp, remote) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(x) => x,
                Err(e) => {
                    // Out of descriptors and similar: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let router = router.clone();
        let opts = opts.clone();
        let acceptor = acceptor.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            match acceptor {
                None => serve_conn(tcp, router, PeerIdentity(None), &opts, watcher).await,
                Some(acc) => {
                    let tls =
                        match tokio::time::timeout(opts.tls_handshake_timeout, acc.accept(tcp))
                            .await
                        {
                            Ok(Ok(s)) => s,
                            Ok(Err(e)) => {
                                tracing::info!(%remote, error = %e, "TLS handshake refused");
                                return;
                            }
                            Err(_) => {
                                tracing::info!(%remote, "TLS handshake timed out");
                                return;
                            }
                        };
                    let ids = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .map(buoy_pki::identities)
                        .unwrap_or_default();
                    tracing::debug!(%remote, identities = ?ids, "client connected");
                    serve_conn(
                        tls,
                        router,
                        PeerIdentity(Some(Arc::new(ids))),
                        &opts,
                        watcher,
                    )
                    .await
                }
            }
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(opts.grace_period) => {
            tracing::warn!("grace period over; closing the remaining connections");
        }
    }
    Ok(())
}

/// A plain-HTTP listener that serves only what reads the run (the status page, status,
/// overview, node pages, metrics, the tarball) and never accepts a result: for a browser on a
/// host or behind `kubectl port-forward`, where the mTLS listener would ask for a client
/// certificate. It may outlive the run's own server (`buoy run --serve-after`); dropped, it
/// stops accepting and drains on its own.
pub struct ViewServer {
    addr: std::net::SocketAddr,
    stop: tokio::sync::watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl ViewServer {
    pub fn start(
        listener: TcpListener,
        agg: Arc<crate::Aggregator>,
        opts: ServerOptions,
    ) -> std::io::Result<Self> {
        let addr = listener.local_addr()?;
        let (stop, mut stop_rx) = tokio::sync::watch::channel(false);
        let router = crate::api::view_router(agg);
        let task = tokio::spawn(async move {
            serve(listener, None, router, opts, async move {
                let _ = stop_rx.wait_for(|s| *s).await;
            })
            .await
        });
        tracing::info!(%addr, "status page listening");
        Ok(Self {
            addr,
            stop,
            task: Some(task),
        })
    }

    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    /// The status page's address, for people.
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// Stops accepting and waits for open connections to drain.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            if let Ok(Err(e)) = task.await {
                tracing::warn!(error = %e, "the status page server ended with an error");
            }
        }
    }
}

impl Drop for ViewServer {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}
