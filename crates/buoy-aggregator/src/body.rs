//! A request body as a byte stream with the server's guards applied: a cap on total bytes, an
//! idle timeout between chunks, an overall deadline (departure 8), and the minimum-rate rule:
//! while another upload waits for a slot, a body that delivered less than `min_rate` bytes per
//! second over the last `rate_window` gives its slot up. A slow client therefore delays others
//! by at most about one window. When a guard trips, the stream fails and records why, so the
//! caller can answer 413, 408 or 503 instead of a generic error.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use tokio::time::{Instant, Sleep};

/// Why a body stopped early.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyFailure {
    TooLarge(u64),
    Idle(Duration),
    Deadline(Duration),
    /// Too slow while others waited: the rate seen and the rate needed, in bytes per second.
    Slow {
        rate: u64,
        min: u64,
    },
    Read(String),
}

/// The guards applied to one body.
#[derive(Debug, Clone)]
pub struct BodyGuards {
    pub limit: u64,
    pub idle: Duration,
    pub total: Duration,
    pub min_rate: u64,
    pub rate_window: Duration,
    /// How many uploads wait for a slot now.
    pub contention: Arc<AtomicUsize>,
}

pub type FailureSlot = Arc<Mutex<Option<BodyFailure>>>;

pub struct GuardedBody<S> {
    inner: S,
    seen: u64,
    guards: BodyGuards,
    started: Instant,
    /// When the idle guard trips unless more data comes first.
    idle_at: Instant,
    /// Made the first time the body waits on the client: a small body usually arrives whole
    /// with its request head, and a timer armed (or re-armed per chunk) in the runtime's
    /// timer wheel for every upload cost more than the rest of the guarding.
    timers: Option<Timers>,
    /// `seen` when the current rate window began.
    window_start_seen: u64,
    failure: FailureSlot,
    done: bool,
}

struct Timers {
    idle: Pin<Box<Sleep>>,
    deadline: Pin<Box<Sleep>>,
    /// Fires at the end of each rate window.
    rate_tick: Pin<Box<Sleep>>,
}

impl<S> GuardedBody<S> {
    pub fn new(inner: S, guards: BodyGuards) -> (Self, FailureSlot) {
        let failure: FailureSlot = Arc::new(Mutex::new(None));
        let now = Instant::now();
        (
            Self {
                inner,
                seen: 0,
                started: now,
                idle_at: now + guards.idle,
                timers: None,
                window_start_seen: 0,
                guards,
                failure: failure.clone(),
                done: false,
            },
            failure,
        )
    }

    /// At the end of a rate window: the rate over it, if it is too slow while others wait.
    fn too_slow(&mut self, cx: &mut Context<'_>) -> Option<BodyFailure> {
        let window = self.guards.rate_window;
        if window.is_zero() || self.guards.min_rate == 0 {
            return None;
        }
        loop {
            let tick = &mut self.timers.as_mut()?.rate_tick;
            tick.as_mut().poll(cx).is_ready().then_some(())?;
            tick.as_mut().reset(Instant::now() + window);
            let got = self.seen - self.window_start_seen;
            self.window_start_seen = self.seen;
            let rate = (got as f64 / window.as_secs_f64()) as u64;
            if rate < self.guards.min_rate && self.guards.contention.load(Ordering::SeqCst) > 0 {
                return Some(BodyFailure::Slow {
                    rate,
                    min: self.guards.min_rate,
                });
            }
        }
    }

    fn fail(&mut self, f: BodyFailure) -> Poll<Option<io::Result<Bytes>>> {
        let msg = match &f {
            BodyFailure::TooLarge(n) => format!("request body exceeds {n} bytes"),
            BodyFailure::Idle(d) => format!("no request body data for {}s", d.as_secs()),
            BodyFailure::Deadline(d) => {
                format!("request body not complete within {}s", d.as_secs())
            }
            BodyFailure::Slow { rate, .. } => {
                format!("request body too slow ({rate} bytes/s) while others waited")
            }
            BodyFailure::Read(e) => format!("error reading request body: {e}"),
        };
        *self.failure.lock().expect("failure slot") = Some(f);
        self.done = true;
        Poll::Ready(Some(Err(io::Error::other(msg))))
    }
}

impl<S, E> Stream for GuardedBody<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    type Item = io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        match Pin::new(&mut self.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                self.seen += chunk.len() as u64;
                if self.seen > self.guards.limit {
                    let limit = self.guards.limit;
                    return self.fail(BodyFailure::TooLarge(limit));
                }
                self.idle_at = Instant::now() + self.guards.idle;
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(e))) => self.fail(BodyFailure::Read(e.to_string())),
            Poll::Ready(None) => {
                self.done = true;
                Poll::Ready(None)
            }
            Poll::Pending => {
                let (started, idle_at, g) = (self.started, self.idle_at, &self.guards);
                let (total, window) = (g.total, g.rate_window);
                let t = self.timers.get_or_insert_with(|| Timers {
                    idle: Box::pin(tokio::time::sleep_until(idle_at)),
                    deadline: Box::pin(tokio::time::sleep_until(started + total)),
                    rate_tick: Box::pin(tokio::time::sleep_until(started + window)),
                });
                if t.idle.deadline() != idle_at {
                    t.idle.as_mut().reset(idle_at);
                }
                if t.deadline.as_mut().poll(cx).is_ready() {
                    let t = self.guards.total;
                    return self.fail(BodyFailure::Deadline(t));
                }
                if t.idle.as_mut().poll(cx).is_ready() {
                    let t = self.guards.idle;
                    return self.fail(BodyFailure::Idle(t));
                }
                // Only while waiting on the client: time we spend writing is not its fault.
                if let Some(f) = self.too_slow(cx) {
                    return self.fail(f);
                }
                Poll::Pending
            }
        }
    }
}
