//! The full status as an HTTP answer (`GET /api/v1/status`): built whole for a small run, and
//! for a large one streamed a chunk of keys at a time as the client takes it, so a client that
//! reads slowly, or never, holds one chunk and not the whole document (about 95 bytes a key:
//! 19 MB at 200,000 keys, and the same again or more to build it whole).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use buoy_wire::Status;
use futures_util::Stream;

use crate::aggregator::Aggregator;

/// Runs with more keys than this get their full status streamed instead of built whole.
pub const WHOLE_STATUS_KEYS: usize = 4096;

/// Keys a streamed status chunk holds (about 50 KB), serialized under one short hold of the lock.
const STATUS_CHUNK_KEYS: usize = 512;

/// A full status answer: built whole for small runs, streamed chunk by chunk for large ones.
pub enum StatusBody {
    Whole(Status),
    Stream(
        std::pin::Pin<
            Box<dyn Stream<Item = Result<bytes::Bytes, std::convert::Infallible>> + Send>,
        >,
    ),
}

/// Counts one streamed status answer as open while it lives.
struct OpenStream(Arc<AtomicUsize>);

impl OpenStream {
    fn new(n: Arc<AtomicUsize>) -> Self {
        n.fetch_add(1, Ordering::SeqCst);
        Self(n)
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Aggregator {
    /// The full status as an answer: whole for a small run; for a large one a stream that
    /// serializes `STATUS_CHUNK_KEYS` keys at a time as the client takes them, and nothing
    /// builds the whole document at once. Each key is as it stands when its chunk is made; the
    /// run's overall status, at the end, as it stands then.
    pub fn status_body(self: &Arc<Self>) -> StatusBody {
        if self.inspect(|s| s.key_count()) <= WHOLE_STATUS_KEYS {
            return StatusBody::Whole(self.status());
        }
        let open = OpenStream::new(self.status_streams.clone());
        let chunks = futures_util::stream::unfold(
            (self.clone(), Some(0usize), open),
            |(agg, next, open)| async move {
                let from = next?;
                let mut out = Vec::with_capacity(64 << 10);
                let more = agg.inspect(|s| s.write_status_chunk(from, STATUS_CHUNK_KEYS, &mut out));
                Some((Ok(bytes::Bytes::from(out)), (agg, more, open)))
            },
        );
        StatusBody::Stream(Box::pin(chunks))
    }

    /// Streamed status answers being sent right now (a stream ends when its last chunk is
    /// taken, or when its connection is dropped).
    pub fn status_streams_open(&self) -> usize {
        self.status_streams.load(Ordering::SeqCst)
    }
}
