//! A request body as a byte stream with the server's guards applied: a cap on total bytes, an
//! idle timeout between chunks and an overall deadline (departure 8). When a guard trips, the
//! stream fails and records why, so the caller can answer 413 or 408 instead of a generic error.

use std::future::Future;
use std::io;
use std::pin::Pin;
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
    Read(String),
}

pub type FailureSlot = Arc<Mutex<Option<BodyFailure>>>;

pub struct GuardedBody<S> {
    inner: S,
    seen: u64,
    limit: u64,
    idle: Duration,
    idle_sleep: Pin<Box<Sleep>>,
    total: Duration,
    deadline: Pin<Box<Sleep>>,
    failure: FailureSlot,
    done: bool,
}

impl<S> GuardedBody<S> {
    pub fn new(inner: S, limit: u64, idle: Duration, total: Duration) -> (Self, FailureSlot) {
        let failure: FailureSlot = Arc::new(Mutex::new(None));
        let now = Instant::now();
        (
            Self {
                inner,
                seen: 0,
                limit,
                idle,
                idle_sleep: Box::pin(tokio::time::sleep_until(now + idle)),
                total,
                deadline: Box::pin(tokio::time::sleep_until(now + total)),
                failure: failure.clone(),
                done: false,
            },
            failure,
        )
    }

    fn fail(&mut self, f: BodyFailure) -> Poll<Option<io::Result<Bytes>>> {
        let msg = match &f {
            BodyFailure::TooLarge(n) => format!("request body exceeds {n} bytes"),
            BodyFailure::Idle(d) => format!("no request body data for {}s", d.as_secs()),
            BodyFailure::Deadline(d) => {
                format!("request body not complete within {}s", d.as_secs())
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
                if self.seen > self.limit {
                    let limit = self.limit;
                    return self.fail(BodyFailure::TooLarge(limit));
                }
                let next = Instant::now() + self.idle;
                self.idle_sleep.as_mut().reset(next);
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(e))) => self.fail(BodyFailure::Read(e.to_string())),
            Poll::Ready(None) => {
                self.done = true;
                Poll::Ready(None)
            }
            Poll::Pending => {
                if self.deadline.as_mut().poll(cx).is_ready() {
                    let t = self.total;
                    return self.fail(BodyFailure::Deadline(t));
                }
                if self.idle_sleep.as_mut().poll(cx).is_ready() {
                    let t = self.idle;
                    return self.fail(BodyFailure::Idle(t));
                }
                Poll::Pending
            }
        }
    }
}
