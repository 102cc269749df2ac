//! The shared aggregator: one `RunState` behind a short lock, the `Store`, and the
//! operations the HTTP handlers and the runners call. Upload bytes stream to a staging
//! directory with no lock held; only claiming a key and recording the outcome take the lock.
//! Changes are announced on a watch channel, which never blocks (no bounded event channel to
//! deadlock on, compat §2.9).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use buoy_results::{PluginReport, PluginSpec};
use buoy_wire::overview::{NodePage, Overview, ResultSummary, NAMED_ERRORS};
use buoy_wire::{ProgressInput, ResultKey, Status, TarInfo};
use futures_util::Stream;
use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;
use tokio_util::io::{StreamReader, SyncIoBridge};

use crate::body::{BodyFailure, BodyGuards, GuardedBody};
use crate::budget::{DiskBudget, FreeSpaceProbe};
use crate::error::AggError;
use crate::extract::{self, ExtractError, Limits};
use crate::metrics::Metrics;
use crate::state::{Outcome, Refusal, RunPhase, RunState, Ticket};
use crate::store::Store;

/// Plain bodies up to this size (by `Content-Length`) are read into memory and appended to the
/// journal by the committer; at most `max_concurrent_uploads` of them are held at once.
const SMALL_BODY: u64 = 64 << 10;
/// How long the run's driver lets changes gather before it looks again.
const DRIVE_COALESCE: Duration = Duration::from_millis(5);

/// Tunables of one aggregator.
#[derive(Debug, Clone)]
pub struct Options {
    pub limits: Limits,
    /// Bytes of results the whole run may store (507 past it).
    pub max_run_bytes: u64,
    /// Free space kept on the run directory's file system: uploads are refused with 507 (and
    /// their keys stay open) rather than fill the disk past it.
    pub disk_reserve_bytes: u64,
    /// How free space is read (statvfs; tests substitute their own).
    pub free_space: FreeSpaceProbe,
    /// Longest pause between two chunks of an upload body.
    pub body_idle_timeout: Duration,
    /// Longest time one upload body may take.
    pub body_deadline: Duration,
    /// Uploads processed at once; more wait for a slot (back-pressure).
    pub max_concurrent_uploads: usize,
    /// Longest wait for an upload slot before a 503 (the worker retries).
    pub slot_wait: Duration,
    /// While another upload waits for a slot, a body slower than this (bytes per second, over
    /// `slow_window`) loses its slot with a 503.
    pub min_upload_rate: u64,
    pub slow_window: Duration,
    /// Refuse uploads whose client certificate was issued for another plugin.
    pub enforce_identity: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            max_run_bytes: 256 << 30,
            disk_reserve_bytes: 256 << 20,
            free_space: FreeSpaceProbe::default(),
            body_idle_timeout: Duration::from_secs(60),
            body_deadline: Duration::from_secs(2 * 3600),
            max_concurrent_uploads: 256,
            slot_wait: Duration::from_secs(10),
            min_upload_rate: 16 << 10,
            slow_window: Duration::from_secs(2),
            enforce_identity: true,
        }
    }
}

/// What was stored for one accepted upload.
#[derive(Debug, Clone, Copy)]
pub struct UploadReport {
    pub files: u64,
    pub bytes: u64,
}

pub struct Aggregator {
    state: Mutex<RunState>,
    store: Store,
    opts: Options,
    changed: watch::Sender<u64>,
    upload_slots: Semaphore,
    /// Uploads waiting for a slot right now; while any do, slow bodies lose theirs.
    slot_waiters: Arc<AtomicUsize>,
    budget: Arc<DiskBudget>,
    metrics: Arc<Metrics>,
    /// Each plugin's post-processed summary, once post-processing ran.
    summaries: Mutex<Vec<(String, ResultSummary)>>,
    /// Streamed status answers being sent right now (`status_body`).
    pub(crate) status_streams: Arc<AtomicUsize>,
}

/// Counts one upload as waiting for a slot while it lives.
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn new(n: &'a AtomicUsize) -> Self {
        n.fetch_add(1, Ordering::SeqCst);
        Self(n)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Marks the key failed if an upload ends without recording its outcome (the handler's future
/// was dropped, or it returned early), so a key is never stuck in "receiving".
struct TicketGuard<'a> {
    agg: &'a Aggregator,
    ticket: Option<Ticket>,
    staged: Option<PathBuf>,
}

/// Runs blocking file-system work off the async threads; a panicked task is an I/O error.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)))
}

impl TicketGuard<'_> {
    fn finish(mut self, result: Result<Outcome, String>) {
        if let Some(t) = self.ticket.take() {
            self.agg.finish(&t, result);
        }
    }
}

impl Drop for TicketGuard<'_> {
    fn drop(&mut self) {
        if let Some(p) = self.staged.take() {
            self.agg.store.discard(&p);
        }
        if let Some(t) = self.ticket.take() {
            self.agg
                .finish(&t, Err("upload aborted before it completed".into()));
        }
    }
}

impl Aggregator {
    /// Opens the run directory and expects `keys`. Results an earlier aggregator stored in
    /// the same directory are recognised, so a restarted run never asks for them again.
    pub fn open(
        run_dir: &Path,
        staging: &Path,
        keys: Vec<ResultKey>,
        opts: Options,
    ) -> Result<Arc<Self>, AggError> {
        let store = Store::open(run_dir, staging).map_err(AggError::io(format!(
            "cannot open run directory {}",
            run_dir.display()
        )))?;
        let mut state = RunState::new(keys);
        let restored = store.recorded_among(state.keys());
        for (k, o) in restored {
            tracing::info!(key = %k, "result already stored by an earlier run on this directory");
            state.restore(&k, o);
        }
        let (changed, _) = watch::channel(0);
        let budget = DiskBudget::new(
            run_dir,
            opts.max_run_bytes,
            opts.disk_reserve_bytes,
            crate::budget::bytes_under(&run_dir.join("plugins")),
            opts.free_space.clone(),
        );
        Ok(Arc::new(Self {
            state: Mutex::new(state),
            store,
            upload_slots: Semaphore::new(opts.max_concurrent_uploads.max(1)),
            slot_waiters: Arc::new(AtomicUsize::new(0)),
            budget: Arc::new(budget),
            metrics: Arc::new(Metrics::new()),
            summaries: Mutex::new(Vec::new()),
            status_streams: Arc::new(AtomicUsize::new(0)),
            opts,
            changed,
        }))
    }

    fn lock(&self) -> MutexGuard<'_, RunState> {
        // A panic while holding this lock would be a bug in plain-data code; keep serving.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn notify(&self) {
        self.changed.send_modify(|n| *n += 1);
    }

    fn finish(&self, ticket: &Ticket, result: Result<Outcome, String>) {
        let recorded = self.lock().finish(ticket, result);
        if recorded {
            self.notify();
        }
    }

    pub fn run_dir(&self) -> &Path {
        self.store.run_dir()
    }

    /// Bytes charged to the run's disk budget: what its results hold, plus what uploads under
    /// way have read so far (charged as each chunk arrives).
    pub fn budget_used(&self) -> u64 {
        self.budget.used()
    }

    /// A receiver that changes whenever a result, error or progress update is recorded.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    pub fn status(&self) -> Status {
        self.lock().status()
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The run at a glance: per-plugin counts, error reasons and, once post-processed, each
    /// plugin's results summary.
    pub fn overview(&self) -> Overview {
        let (mut builder, (status, tarball), seal_error) =
            self.inspect(|s| (s.overview(), s.overall(), s.seal_error().map(str::to_owned)));
        let summaries = self.summaries.lock().unwrap_or_else(|p| p.into_inner());
        for (plugin, summary) in summaries.iter() {
            builder.set_results(plugin, summary.clone());
        }
        let mut o = builder.build(status, tarball);
        o.seal_error = seal_error;
        o
    }

    /// One page of `plugin`'s nodes, optionally only those in `state`.
    pub fn node_page(
        &self,
        plugin: &str,
        state: Option<&str>,
        offset: u64,
        limit: u64,
    ) -> NodePage {
        self.inspect(|s| s.node_page(plugin, state, offset, limit))
    }

    /// The Prometheus exposition of this run's metrics.
    pub fn metrics_text(&self) -> String {
        let (builder, (status, _)) = self.inspect(|s| (s.overview(), s.overall()));
        self.metrics.render(&builder.build(status, None))
    }

    /// Runs `f` on the state (read-only) under the lock.
    pub fn inspect<T>(&self, f: impl FnOnce(&RunState) -> T) -> T {
        f(&self.lock())
    }

    /// Resolves once every one of `plugins` has all its results (delivered or errors).
    pub async fn wait_plugins_done(&self, plugins: &[&str]) {
        let mut rx = self.subscribe();
        while !self.inspect(|s| plugins.iter().all(|p| s.plugin_done(p))) {
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    pub fn set_run_phase(&self, phase: RunPhase) {
        self.lock().set_run_phase(phase);
        self.notify();
    }

    /// Says in the status why sealing failed last (`None` once it worked).
    pub fn set_seal_error(&self, e: Option<String>) {
        self.lock().set_seal_error(e);
        self.notify();
    }

    fn refusal(key: &ResultKey, r: Refusal) -> AggError {
        match r {
            Refusal::Unexpected => AggError::Unexpected(key.clone()),
            Refusal::Duplicate => AggError::Duplicate(key.clone()),
            Refusal::InFlight => AggError::InFlight(key.clone()),
        }
    }

    /// Checks a client certificate's names against the plugin it submits for.
    pub fn authorize(&self, plugin: &str, identities: Option<&[String]>) -> Result<(), AggError> {
        match identities {
            Some(ids) if self.opts.enforce_identity && !ids.iter().any(|i| i == plugin) => {
                Err(AggError::WrongIdentity {
                    plugin: plugin.to_string(),
                    identities: if ids.is_empty() {
                        "(no name)".into()
                    } else {
                        format!("{:?}", ids.join(","))
                    },
                })
            }
            _ => Ok(()),
        }
    }

    /// Receives one upload: gzip bodies (exactly `application/gzip`) are extracted safely,
    /// others are stored under the sanitised `content-disposition` name. `content_length`, when
    /// the client sent one, is checked against the body cap before anything is read.
    pub async fn upload<S, E>(
        self: &Arc<Self>,
        key: ResultKey,
        content_type: Option<&str>,
        disposition: Option<&str>,
        content_length: Option<u64>,
        body: S,
    ) -> Result<UploadReport, AggError>
    where
        S: Stream<Item = Result<bytes::Bytes, E>> + Unpin + Send + 'static,
        E: std::fmt::Display + 'static,
    {
        self.lock()
            .check(&key)
            .map_err(|r| Self::refusal(&key, r))?;
        let cap = self.opts.limits.max_upload_bytes;
        if let Some(n) = content_length.filter(|n| *n > cap) {
            return Err(AggError::TooLarge {
                key,
                reason: format!("content-length {n} exceeds the {cap}-byte cap"),
            });
        }
        let _slot = {
            let _waiting = Waiting::new(&self.slot_waiters);
            match tokio::time::timeout(self.opts.slot_wait, self.upload_slots.acquire()).await {
                Ok(Ok(slot)) => slot,
                Ok(Err(_)) => return Err(AggError::ShuttingDown),
                Err(_) => {
                    return Err(AggError::Busy {
                        key,
                        reason: format!(
                            "all {} upload slots stayed busy for {}s",
                            self.opts.max_concurrent_uploads,
                            self.opts.slot_wait.as_secs()
                        ),
                    })
                }
            }
        };
        let ticket = self
            .lock()
            .begin(&key, false)
            .map_err(|r| Self::refusal(&key, r))?;
        let mut guard = TicketGuard {
            agg: self,
            ticket: Some(ticket.clone()),
            staged: None,
        };
        let gzip = content_type == Some(buoy_wire::routes::GZIP_CONTENT_TYPE);
        let filename = buoy_wire::disposition::stored_filename(disposition);
        // A small plain body is read into memory and journaled by the committer: no staging
        // directory made here, no trip through the blocking pool, no inode until it is laid out.
        let small = !gzip && content_length.is_some_and(|n| n <= SMALL_BODY);
        // A small body has nothing staged on disk, so nothing to discard if it fails.
        let staged = if small {
            None
        } else {
            Some(
                self.store
                    .stage(ticket.id)
                    .map_err(|e| AggError::Internal {
                        key: key.clone(),
                        reason: e.to_string(),
                    })?,
            )
        };
        guard.staged = staged.clone();
        let (guarded, failure) = GuardedBody::new(
            body,
            BodyGuards {
                limit: cap,
                idle: self.opts.body_idle_timeout,
                total: self.opts.body_deadline,
                min_rate: self.opts.min_upload_rate,
                rate_window: self.opts.slow_window,
                contention: self.slot_waiters.clone(),
            },
        );
        let mut in_memory = None;
        let outcome = if small {
            self.read_small(guarded, content_length.unwrap_or(0))
                .await
                .map(|(data, meter)| {
                    let stats = extract::Stats {
                        files: 1,
                        dirs: 0,
                        bytes: data.len() as u64,
                    };
                    in_memory = Some((data, meter));
                    stats
                })
        } else {
            let reader = SyncIoBridge::new(StreamReader::new(guarded));
            let limits = self.opts.limits;
            let dest = staged
                .clone()
                .expect("a body that is not small is staged above");
            let budget = self.budget.clone();
            let filename = filename.clone();
            tokio::task::spawn_blocking(move || {
                if gzip {
                    extract::extract_tar_gz(reader, &dest, &limits, &budget)
                } else {
                    extract::write_plain(reader, &dest, &filename, &budget)
                }
            })
            .await
            .unwrap_or_else(|e| {
                Err(ExtractError::Io {
                    context: "extraction task failed".into(),
                    source: std::io::Error::other(e),
                })
            })
        };

        let body_failure = failure.lock().expect("failure slot").clone();
        let stats = match (outcome, body_failure) {
            (Ok(s), _) => s,
            (Err(e), failure) => {
                let err = match failure {
                    Some(BodyFailure::TooLarge(n)) => AggError::TooLarge {
                        key: key.clone(),
                        reason: format!("request body exceeds the {n}-byte cap"),
                    },
                    Some(BodyFailure::Idle(d)) => AggError::BodyTimeout {
                        key: key.clone(),
                        reason: format!("no body data for {}s", d.as_secs()),
                    },
                    Some(BodyFailure::Deadline(d)) => AggError::BodyTimeout {
                        key: key.clone(),
                        reason: format!("body not complete within {}s", d.as_secs()),
                    },
                    Some(BodyFailure::Slow { rate, min }) => AggError::Busy {
                        key: key.clone(),
                        reason: format!(
                            "body arrived at {rate} bytes/s while other uploads waited for a slot \
                             (at least {min} bytes/s needed then)"
                        ),
                    },
                    Some(BodyFailure::Read(r)) => AggError::Refused {
                        key: key.clone(),
                        reason: format!("error reading request body: {r}"),
                    },
                    None => match e {
                        ExtractError::Refused(reason) => AggError::Refused {
                            key: key.clone(),
                            reason,
                        },
                        ExtractError::TooLarge(reason) => AggError::TooLarge {
                            key: key.clone(),
                            reason,
                        },
                        ExtractError::NoSpace(reason) => AggError::NoSpace {
                            key: key.clone(),
                            reason,
                        },
                        ExtractError::Io { .. } => AggError::Internal {
                            key: key.clone(),
                            reason: e.to_string(),
                        },
                    },
                };
                tracing::warn!(key = %key, error = %err, "upload failed; the key stays open for a retry");
                guard.finish(Err(err.to_string()));
                return Err(err);
            }
        };

        // From here the outcome is recorded whether or not the client is still there: were
        // this future dropped mid-commit, a result renamed into place would sit behind a key
        // marked failed, and every retry would fail. So the commit and its record run on their
        // own task, which owns the ticket now.
        let ticket = guard
            .ticket
            .take()
            .expect("the guard holds the ticket until here");
        guard.staged = None;
        let data = in_memory.map(|(data, meter)| {
            meter.keep();
            data
        });
        let agg = Arc::clone(self);
        let tail = tokio::spawn(async move {
            // Even a panic below leaves the key open, not stuck in "receiving".
            let mut guard = TicketGuard {
                agg: &agg,
                ticket: Some(ticket.clone()),
                staged: staged.clone(),
            };
            let committed = match (data, &staged) {
                (Some(data), _) => agg.store.write_result(&ticket.key, &filename, data).await,
                (None, Some(dir)) => agg.store.commit_result(dir, &ticket.key).await,
                (None, None) => unreachable!("a body is either held in memory or staged"),
            };
            match committed {
                Ok(()) => {
                    // The staging directory is now the result; nothing is left to discard.
                    guard.staged = None;
                    tracing::info!(key = %ticket.key, files = stats.files, bytes = stats.bytes, "result received");
                    guard.finish(Ok(Outcome::Result));
                    Ok(UploadReport {
                        files: stats.files,
                        bytes: stats.bytes,
                    })
                }
                Err(e) => {
                    agg.budget.give_back(stats.bytes);
                    let err = commit_error(&ticket.key, &e);
                    guard.finish(Err(err.to_string()));
                    Err(err)
                }
            }
        });
        tail.await.unwrap_or_else(|e| {
            Err(AggError::Internal {
                key,
                reason: format!("the commit task failed: {e}"),
            })
        })
    }

    /// Reads a small body whole (`expected` bytes, its content length), charging it to the
    /// run's disk budget first. Read errors are the client's (the body guards say which).
    async fn read_small<S>(
        &self,
        mut body: GuardedBody<S>,
        expected: u64,
    ) -> Result<(bytes::Bytes, crate::budget::Meter<'_>), ExtractError>
    where
        GuardedBody<S>: Stream<Item = std::io::Result<bytes::Bytes>> + Unpin,
    {
        use futures_util::StreamExt;
        let mut meter = self.budget.meter()?;
        // A small body usually arrives as one chunk: keep it as it is rather than copying it,
        // and only gather into one buffer once a second chunk shows up.
        let mut first: Option<bytes::Bytes> = None;
        let mut gathered: Option<bytes::BytesMut> = None;
        while let Some(chunk) = body.next().await {
            let chunk = chunk
                .map_err(|e| ExtractError::Refused(format!("error reading request body: {e}")))?;
            meter.charge(chunk.len() as u64)?;
            match (&mut gathered, first.take()) {
                (Some(buf), _) => buf.extend_from_slice(&chunk),
                (None, None) => first = Some(chunk),
                (None, Some(head)) => {
                    let have = head.len() + chunk.len();
                    // `expected` is at most SMALL_BODY; the guards end a body that outgrows it.
                    let mut buf = bytes::BytesMut::with_capacity(have.max(expected as usize));
                    buf.extend_from_slice(&head);
                    buf.extend_from_slice(&chunk);
                    gathered = Some(buf);
                }
            }
        }
        let data = match gathered {
            Some(buf) => buf.freeze(),
            None => first.unwrap_or_default(),
        };
        Ok((data, meter))
    }

    /// Records a progress update from its raw body. Decode errors come first (400), then the
    /// expected-key check (403), as in Sonobuoy.
    pub fn progress(&self, key: &ResultKey, body: &[u8]) -> Result<(), AggError> {
        let input =
            ProgressInput::decode(body).map_err(|e| AggError::BadProgress(e.to_string()))?;
        let update = input.into_update(
            &key.plugin,
            &key.node,
            buoy_wire::timefmt::now_rfc3339_nano(),
        );
        // The replaced update (strings, lists) is freed here, after the lock is let go.
        let replaced = self
            .lock()
            .record_progress(key, update)
            .map_err(|_| AggError::ProgressUnexpected(key.clone()))?;
        drop(replaced);
        self.metrics.progress_update(&key.plugin);
        self.notify();
        Ok(())
    }

    /// Stores an internal error result (a failed plugin, a timeout, a lost upload). First
    /// writer wins: if the key already has a result, this is refused with `Duplicate`.
    pub async fn submit_error(
        &self,
        key: &ResultKey,
        message: &str,
        extra: Option<(&str, serde_json::Value)>,
    ) -> Result<(), AggError> {
        let ticket = self
            .lock()
            .begin(key, true)
            .map_err(|r| Self::refusal(key, r))?;
        let body = buoy_wire::error_body(message, extra);
        match self.store.write_error(ticket.id, key, &body).await {
            Ok(()) => {
                tracing::info!(key = %key, error = message, "error result recorded");
                self.finish(&ticket, Ok(Outcome::Error(message.to_string())));
                Ok(())
            }
            Err(e) => {
                self.finish(&ticket, Err(e.to_string()));
                Err(AggError::Internal {
                    key: key.clone(),
                    reason: format!("cannot store error result: {e}"),
                })
            }
        }
    }

    /// Drives the run until every expected key is done: after `timeout`, gives every missing
    /// key a timeout error result. Returns as soon as the run is complete; never sleeps
    /// needlessly. A failed upload leaves its key open (only a result, a plugin failure or the
    /// timeout closes a key).
    pub async fn drive(&self, timeout: Option<Duration>) {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut rx = self.subscribe();
        loop {
            let now = Instant::now();
            let (due, complete) = {
                let mut s = self.lock();
                if let Some(d) = deadline {
                    if now >= d && !s.timed_out() {
                        tracing::warn!("plugin timeout reached; recording a timeout error for every missing result");
                        s.mark_timed_out();
                    }
                }
                (s.due_errors(), s.is_complete())
            };
            if complete {
                return;
            }
            let mut io_failed = false;
            for d in &due {
                if let Err(e) = self.submit_error(&d.key, &d.message, None).await {
                    if matches!(e, AggError::Internal { .. }) {
                        tracing::error!(error = %e, "cannot record an error result; retrying shortly");
                        io_failed = true;
                    }
                }
            }
            if io_failed {
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            if !due.is_empty() {
                continue;
            }
            let wake = deadline.filter(|_| !self.lock().timed_out());
            tokio::select! {
                r = rx.changed() => {
                    if r.is_err() { return; }
                    // Changes come thousands of times a second under load (every result and
                    // progress update); looking at most every few milliseconds lets them
                    // coalesce instead of waking this task, and its thread, for each one.
                    tokio::time::sleep(DRIVE_COALESCE).await;
                }
                _ = async { match wake { Some(w) => tokio::time::sleep_until(w).await, None => std::future::pending().await } } => {}
            }
        }
    }

    /// Post-processes every plugin into `plugins/<p>/sonobuoy_results.yaml` and gives each
    /// status entry its `result-status` and `result-counts` (compat §5.4, every entry, even
    /// after one whose node has no item). Returns each plugin's summary.
    pub async fn post_process(
        &self,
        specs: Vec<PluginSpec>,
    ) -> Result<Vec<PluginReport>, AggError> {
        self.flush().await?;
        Ok(self.process_results(specs, true).await)
    }

    /// Lays out every journaled result as its files in the run directory, which
    /// post-processing, sealing and anyone reading the directory after the run expect.
    pub async fn flush(&self) -> Result<(), AggError> {
        self.store
            .flush()
            .await
            .map_err(AggError::io("cannot lay out the journaled results"))
    }

    /// Flushes, then takes no more small results: the run's storage is about to be closed.
    pub async fn close_store(&self) -> Result<(), AggError> {
        self.store
            .close()
            .await
            .map_err(AggError::io("cannot lay out the journaled results"))
    }

    /// Marks a run that an earlier aggregator already sealed as complete, without touching
    /// its directory or its tarball: the per-entry results are read back from the run
    /// directory, and the recorded tar-info (and so the SHA-256) is served as it was.
    pub async fn restore_sealed(&self, specs: Vec<PluginSpec>, info: TarInfo) -> Sealed {
        let reports = self.process_results(specs, false).await;
        let tarball = self.output_dir().join(&info.name);
        self.set_run_phase(RunPhase::Complete(info.clone()));
        Sealed {
            tarball,
            tar_info: info,
            reports,
        }
    }

    /// Post-processing proper; `write` says whether `sonobuoy_results.yaml` files are written.
    async fn process_results(&self, specs: Vec<PluginSpec>, write: bool) -> Vec<PluginReport> {
        let run_dir = self.store.run_dir().to_path_buf();
        let tmp_dir = self.store.staging_root().to_path_buf();
        let keys: Vec<ResultKey> = self.inspect(|s| s.keys().cloned().collect());
        // Trees and per-entry results are computed off the lock; only setting them takes it.
        // One plugin's tree at a time: it is dropped once its entries and report are taken.
        let (results, reports) = tokio::task::spawn_blocking(move || {
            let mut results = Vec::with_capacity(keys.len());
            let mut reports = Vec::new();
            for spec in specs {
                let tree = if write {
                    buoy_results::write_plugin_results(&run_dir, &spec, &tmp_dir)
                        .unwrap_or_else(|e| {
                            tracing::error!(plugin = %spec.name, error = %e, "cannot write the plugin's sonobuoy_results.yaml");
                            buoy_results::process_plugin(&run_dir, &spec)
                        })
                } else {
                    buoy_results::process_plugin(&run_dir, &spec)
                };
                let entries = buoy_results::EntryResults::new(&tree);
                for key in keys.iter().filter(|k| k.plugin == spec.name) {
                    if let Some((status, counts)) = entries.get(&key.node) {
                        results.push((key.clone(), status, Vec::from_iter(counts)));
                    }
                }
                reports.push(PluginReport::from_item(&spec.name, &tree));
            }
            (results, reports)
        })
        .await
        .unwrap_or_else(|e| {
            tracing::error!(error = %e, "post-processing failed; the status carries no result-status");
            Default::default()
        });
        {
            let mut s = self.lock();
            for (key, status, counts) in results {
                s.set_result(&key, status, counts);
            }
        }
        *self.summaries.lock().unwrap_or_else(|p| p.into_inner()) = reports
            .iter()
            .map(|r| (r.plugin.clone(), summary_of(r)))
            .collect();
        self.notify();
        reports
    }

    /// Post-processes the results (status `post-processing` meanwhile), writes
    /// `meta/config.json` and `meta/info.json`, seals the run directory into a tarball beside it
    /// and only then sets the status to `complete`.
    pub async fn seal(
        &self,
        config: serde_json::Value,
        info: serde_json::Value,
        tarball_name: String,
        specs: Vec<PluginSpec>,
    ) -> Result<Sealed, AggError> {
        self.set_run_phase(RunPhase::PostProcessing);
        let reports = self.post_process(specs).await?;
        let run_dir = self.store.run_dir().to_path_buf();
        let tmp_dir = self.store.staging_root().to_path_buf();
        let dest = self.output_dir();
        let (tarball, tar_info) = blocking(move || {
            crate::seal::write_json_atomic(&run_dir.join("meta/config.json"), &config, &tmp_dir)?;
            crate::seal::write_json_atomic(&run_dir.join("meta/info.json"), &info, &tmp_dir)?;
            crate::seal::write_tarball(&run_dir, &dest, &tarball_name)
        })
        .await
        .map_err(AggError::io("cannot write the results tarball"))?;
        self.set_run_phase(RunPhase::Complete(tar_info.clone()));
        Ok(Sealed {
            tarball,
            tar_info,
            reports,
        })
    }

    /// The sealed tarball's path and tar-info, once the run is complete.
    pub fn tarball(&self) -> Option<(PathBuf, TarInfo)> {
        let info = self.inspect(|s| match s.run_phase() {
            RunPhase::Complete(t)
            | RunPhase::Interrupted {
                sealed: Some(t), ..
            } => Some(t.clone()),
            _ => None,
        })?;
        Some((self.output_dir().join(&info.name), info))
    }

    /// Where the tarball is written: beside the run directory.
    fn output_dir(&self) -> PathBuf {
        self.store
            .run_dir()
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."))
    }
}

/// A plugin's report as the overview carries it: counts and a bounded list of failed tests.
fn summary_of(r: &PluginReport) -> ResultSummary {
    ResultSummary {
        status: r.status.clone(),
        total: r.total,
        passed: r.passed,
        failed: r.failed,
        skipped: r.skipped,
        failed_tests: r
            .failed_tests
            .iter()
            .take(NAMED_ERRORS)
            .map(|t| match &t.node {
                Some(n) => format!("{n}: {}", t.name),
                None => t.name.clone(),
            })
            .collect(),
        failed_tests_total: r.failed_tests.len() as u64,
        error: r.error.clone(),
    }
}

/// A sealed run: its tarball and the post-processed summaries.
#[derive(Debug, Clone)]
pub struct Sealed {
    pub tarball: PathBuf,
    pub tar_info: TarInfo,
    pub reports: Vec<PluginReport>,
}

/// What a failed commit is to the client: a full disk (or quota) is 507, as on every other
/// path, and the key stays open for the worker's retry; anything else is our own 500.
fn commit_error(key: &ResultKey, e: &std::io::Error) -> AggError {
    if matches!(
        e.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    ) {
        AggError::NoSpace {
            key: key.clone(),
            reason: "the aggregator's disk is full".into(),
        }
    } else {
        AggError::Internal {
            key: key.clone(),
            reason: format!("cannot store result: {e}"),
        }
    }
}
