//! The aggregator's state machine (compat §2 with departures 2-4), as plain data and functions:
//! no I/O, no clock (the driver says when the timeout has passed), no locks. Per key the phase
//! is Expected, Receiving (one upload or internal write holds a ticket), Done (a result or an
//! error result is on disk) or Failed (the last write failed; the key is open for a retry,
//! exactly as Expected).
//! A failed upload never consumes a key: only a stored result, an internal error result (a
//! plugin failure seen by monitoring) or the run's timeout closes it.
//!
//! The I/O of an upload happens between `begin` and `finish`, outside whatever lock guards
//! this value, so uploads for different keys never wait for each other.

use std::collections::HashMap;

use buoy_wire::overview::{
    NodePage, NodeRow, OverviewBuilder, ProgressSummary, Row, MAX_NODE_PAGE,
};
use buoy_wire::status::{self, PluginStatus, Status, TarInfo};
use buoy_wire::{ProgressUpdate, ResultKey};

/// What is on disk for a finished key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A result under `results/<node>/`.
    Result,
    /// An error result under `errors/<node>/error.json`, with its error text.
    Error(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    Expected,
    Receiving { ticket: u64, internal: bool },
    Done(Outcome),
    Failed { reason: String },
}

/// Why a submission was turned away before any byte was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The key is not expected in this run (403).
    Unexpected,
    /// The key already has its result (409).
    Duplicate,
    /// Another upload for the key is in flight (409).
    InFlight,
}

/// Proof that the holder may write the result of one key; returned to `finish`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    pub key: ResultKey,
    pub id: u64,
}

#[derive(Debug, Clone)]
struct Entry {
    key: ResultKey,
    phase: Phase,
    /// Boxed, as is `result`: most keys of a large run have neither for most of it, and an
    /// entry stays small (10,000 nodes hold 10,000 entries).
    progress: Option<Box<ProgressUpdate>>,
    attempts: u32,
    /// `result-status` and `result-counts`, once post-processing has run.
    result: Option<Box<EntryResult>>,
}

impl Entry {
    /// `result-status`: empty until post-processing has run.
    fn result_status(&self) -> String {
        self.result
            .as_ref()
            .map(|r| r.status.clone())
            .unwrap_or_default()
    }
}

/// A status entry's post-processed result; counts as a sorted vector (a `BTreeMap` node is
/// over 500 bytes, and there is one per entry).
#[derive(Debug, Clone)]
struct EntryResult {
    status: String,
    counts: Vec<(String, i64)>,
}

/// Where the run as a whole stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunPhase {
    Running,
    PostProcessing,
    Complete(TarInfo),
    /// Stopped before every result arrived, and why: `failed` to every status reader, with the
    /// tarball's tar-info when what had arrived was sealed anyway (`--seal-on-interrupt`).
    Interrupted {
        why: String,
        sealed: Option<TarInfo>,
    },
}

/// An internal error result the driver must write now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueError {
    pub key: ResultKey,
    pub message: String,
}

#[derive(Debug, Clone)]
pub struct RunState {
    entries: Vec<Entry>,
    index: HashMap<ResultKey, usize>,
    /// How many entries are `Done`: completion is checked on every change, and a scan of
    /// 300,000 entries under the lock each time cost more than the uploads themselves.
    done: usize,
    next_ticket: u64,
    timed_out: bool,
    phase: RunPhase,
    seal_error: Option<String>,
}

impl RunState {
    /// A run expecting `keys`, in this order (the status lists them in the same order).
    pub fn new(keys: impl IntoIterator<Item = ResultKey>) -> Self {
        let keys = keys.into_iter();
        let mut entries = Vec::with_capacity(keys.size_hint().0);
        let mut index = HashMap::with_capacity(keys.size_hint().0);
        for key in keys {
            if index.contains_key(&key) {
                continue;
            }
            index.insert(key.clone(), entries.len());
            entries.push(Entry {
                key,
                phase: Phase::Expected,
                progress: None,
                attempts: 0,
                result: None,
            });
        }
        entries.shrink_to_fit();
        Self {
            entries,
            index,
            done: 0,
            next_ticket: 1,
            timed_out: false,
            phase: RunPhase::Running,
            seal_error: None,
        }
    }

    pub fn phase_of(&self, key: &ResultKey) -> Option<&Phase> {
        self.index.get(key).map(|&i| &self.entries[i].phase)
    }

    /// The keys with no result or error result yet.
    pub fn open_keys(&self) -> Vec<ResultKey> {
        self.entries
            .iter()
            .filter(|e| !matches!(e.phase, Phase::Done(_)))
            .map(|e| e.key.clone())
            .collect()
    }

    pub fn keys(&self) -> impl Iterator<Item = &ResultKey> {
        self.entries.iter().map(|e| &e.key)
    }

    /// Quick pre-check for an upload, without claiming the key.
    pub fn check(&self, key: &ResultKey) -> Result<(), Refusal> {
        let &i = self.index.get(key).ok_or(Refusal::Unexpected)?;
        match self.entries[i].phase {
            Phase::Expected | Phase::Failed { .. } => Ok(()),
            Phase::Receiving { .. } => Err(Refusal::InFlight),
            Phase::Done(_) => Err(Refusal::Duplicate),
        }
    }

    /// Claims `key` for one write. Expected and failed keys can be claimed; the first writer
    /// wins, whether it is an upload or an internal error result.
    pub fn begin(&mut self, key: &ResultKey, internal: bool) -> Result<Ticket, Refusal> {
        self.check(key)?;
        let i = self.index[key];
        let id = self.next_ticket;
        self.next_ticket += 1;
        let e = &mut self.entries[i];
        e.phase = Phase::Receiving {
            ticket: id,
            internal,
        };
        e.attempts += 1;
        Ok(Ticket {
            key: key.clone(),
            id,
        })
    }

    /// Records how a write ended. A ticket that no longer holds its key is ignored (returns
    /// false).
    pub fn finish(&mut self, ticket: &Ticket, result: Result<Outcome, String>) -> bool {
        let Some(&i) = self.index.get(&ticket.key) else {
            return false;
        };
        let e = &mut self.entries[i];
        if !matches!(e.phase, Phase::Receiving { ticket: t, .. } if t == ticket.id) {
            return false;
        }
        e.phase = match result {
            Ok(outcome) => {
                self.done += 1;
                Phase::Done(outcome)
            }
            Err(reason) => Phase::Failed { reason },
        };
        true
    }

    /// Marks a key done without a write (results found on disk when a run resumes).
    pub fn restore(&mut self, key: &ResultKey, outcome: Outcome) {
        if let Some(&i) = self.index.get(key) {
            let e = &mut self.entries[i];
            if !matches!(e.phase, Phase::Done(_)) {
                self.done += 1;
            }
            e.phase = Phase::Done(outcome);
        }
    }

    /// Stores a progress update by the append rule. Accepted even after the key's result.
    /// Returns the update it replaces, for the caller to drop once it has let go of the lock.
    pub fn record_progress(
        &mut self,
        key: &ResultKey,
        update: ProgressUpdate,
    ) -> Result<Option<Box<ProgressUpdate>>, Refusal> {
        let &i = self.index.get(key).ok_or(Refusal::Unexpected)?;
        let e = &mut self.entries[i];
        let merged = Box::new(ProgressUpdate::merge(e.progress.as_deref(), update));
        Ok(e.progress.replace(merged))
    }

    /// The plugin's deadline passed: every key without a result now gets a timeout error.
    pub fn mark_timed_out(&mut self) {
        self.timed_out = true;
    }

    pub fn timed_out(&self) -> bool {
        self.timed_out
    }

    /// Internal error results that are due: after the timeout, every key still without a
    /// result (a key being received is left to its upload, and gets the timeout error only if
    /// that upload fails). A failed upload alone never makes an error result due.
    pub fn due_errors(&self) -> Vec<DueError> {
        if !self.timed_out {
            return Vec::new();
        }
        self.entries
            .iter()
            .filter(|e| matches!(e.phase, Phase::Expected | Phase::Failed { .. }))
            .map(|e| DueError {
                key: e.key.clone(),
                message: buoy_wire::TIMEOUT_ERROR_MESSAGE.to_string(),
            })
            .collect()
    }

    /// Every expected key has a result or an error result on disk.
    pub fn is_complete(&self) -> bool {
        debug_assert_eq!(
            self.done,
            self.entries
                .iter()
                .filter(|e| matches!(e.phase, Phase::Done(_)))
                .count()
        );
        self.done == self.entries.len()
    }

    /// Whether every key of `plugin` is done (plugins with no keys are done at once).
    pub fn plugin_done(&self, plugin: &str) -> bool {
        self.entries
            .iter()
            .filter(|e| e.key.plugin == plugin)
            .all(|e| matches!(e.phase, Phase::Done(_)))
    }

    pub fn run_phase(&self) -> &RunPhase {
        &self.phase
    }

    /// Sets `result-status` and `result-counts` of `key`'s status entry.
    pub fn set_result(
        &mut self,
        key: &ResultKey,
        status: String,
        counts: impl IntoIterator<Item = (String, i64)>,
    ) {
        if let Some(&i) = self.index.get(key) {
            self.entries[i].result = Some(Box::new(EntryResult {
                status,
                counts: counts.into_iter().collect(),
            }));
        }
    }

    pub fn set_run_phase(&mut self, phase: RunPhase) {
        self.phase = phase;
    }

    /// Why sealing failed last, shown while the run is post-processing (`None` once it worked).
    pub fn set_seal_error(&mut self, e: Option<String>) {
        self.seal_error = e;
    }

    /// Why sealing failed last, while the run is post-processing.
    pub fn seal_error(&self) -> Option<&str> {
        match self.phase {
            RunPhase::PostProcessing => self.seal_error.as_deref(),
            _ => None,
        }
    }

    /// Counts of keys by per-plugin status: (complete, failed, running).
    pub fn counts(&self) -> (usize, usize, usize) {
        let mut c = (0, 0, 0);
        for e in &self.entries {
            match &e.phase {
                Phase::Done(Outcome::Result) => c.0 += 1,
                Phase::Done(Outcome::Error(_)) => c.1 += 1,
                _ => c.2 += 1,
            }
        }
        c
    }

    /// Per-plugin counts, newest progress and error reasons, without the per-node rows.
    pub fn overview(&self) -> OverviewBuilder {
        let mut b = OverviewBuilder::default();
        for e in &self.entries {
            b.add(Row {
                plugin: &e.key.plugin,
                node: &e.key.node,
                status: Self::word(&e.phase),
                weight: 1,
                progress: e.progress.as_deref(),
                error: Self::error_of(&e.phase),
            });
        }
        b
    }

    /// The overall status word of the status document.
    pub fn overall(&self) -> (String, Option<TarInfo>) {
        match &self.phase {
            RunPhase::Complete(t) => (status::COMPLETE.to_string(), Some(t.clone())),
            RunPhase::PostProcessing => (status::POST_PROCESSING.to_string(), None),
            RunPhase::Interrupted { sealed, .. } => (status::FAILED.to_string(), sealed.clone()),
            RunPhase::Running => {
                let words = self.entries.iter().map(|e| Self::word(&e.phase));
                let word = status::overall_status(words).unwrap_or(status::RUNNING);
                (word.to_string(), None)
            }
        }
    }

    /// An error result's text, or the reason the last upload of an open key failed (`true`).
    fn error_of(phase: &Phase) -> Option<(&str, bool)> {
        match phase {
            Phase::Done(Outcome::Error(m)) => Some((m, false)),
            Phase::Failed { reason } => Some((reason, true)),
            _ => None,
        }
    }

    /// A key's status-document word.
    fn word(phase: &Phase) -> &'static str {
        match phase {
            Phase::Done(Outcome::Result) => status::COMPLETE,
            Phase::Done(Outcome::Error(_)) => status::FAILED,
            _ => status::RUNNING,
        }
    }

    /// One page of `plugin`'s keys in status order, those in `state` only when it is given
    /// (`running`, `complete` or `failed`).
    pub fn node_page(
        &self,
        plugin: &str,
        state: Option<&str>,
        offset: u64,
        limit: u64,
    ) -> NodePage {
        let mut page = NodePage {
            plugin: plugin.to_string(),
            offset,
            ..Default::default()
        };
        let limit = limit.min(MAX_NODE_PAGE);
        for e in self.entries.iter().filter(|e| e.key.plugin == plugin) {
            let st = Self::word(&e.phase);
            if state.is_some_and(|s| s != st) {
                continue;
            }
            page.total += 1;
            if page.total <= offset || page.nodes.len() as u64 >= limit {
                continue;
            }
            page.nodes.push(NodeRow {
                node: e.key.node.clone(),
                status: st.to_string(),
                result_status: e.result_status(),
                progress: e.progress.as_ref().map(|p| ProgressSummary {
                    completed: p.completed,
                    total: p.total,
                    failures: p.failures.len() as u64,
                    failing: p
                        .failures
                        .iter()
                        .take(buoy_wire::overview::NAMED_FAILURES)
                        .cloned()
                        .collect(),
                    msg: p.msg.clone(),
                    node: e.key.node.clone(),
                    timestamp: p.timestamp.clone(),
                }),
                error: Self::error_of(&e.phase).map(|(m, _)| m.to_string()),
            });
        }
        page
    }

    /// The status document for the run as it stands.
    pub fn status(&self) -> Status {
        let plugins: Vec<PluginStatus> = self.entries.iter().map(Self::entry_status).collect();
        let mut status = self.status_without_keys();
        if !plugins.is_empty() {
            status.plugins = Some(plugins);
        }
        status
    }

    pub fn key_count(&self) -> usize {
        self.entries.len()
    }

    /// Writes keys `from..from + n` of the status document (`status()` serialized) to `out`,
    /// with the document's opening before the first and its close after the last. Returns
    /// where the next chunk starts, `None` once the document is complete.
    pub fn write_status_chunk(&self, from: usize, n: usize, out: &mut Vec<u8>) -> Option<usize> {
        let end = from.saturating_add(n).min(self.entries.len());
        if from == 0 {
            out.extend_from_slice(b"{\"plugins\":[");
        }
        for (i, e) in self.entries[from.min(end)..end].iter().enumerate() {
            if from + i > 0 {
                out.push(b',');
            }
            serde_json::to_writer(&mut *out, &Self::entry_status(e)).expect("a status serializes");
        }
        if end < self.entries.len() {
            return Some(end);
        }
        // The rest of the document is what follows `"plugins":null` in one without keys.
        let rest = serde_json::to_vec(&self.status_without_keys()).expect("a status serializes");
        const HEAD: &[u8] = b"{\"plugins\":null";
        debug_assert!(rest.starts_with(HEAD));
        out.push(b']');
        out.extend_from_slice(&rest[HEAD.len()..]);
        None
    }

    fn entry_status(e: &Entry) -> PluginStatus {
        PluginStatus {
            plugin: e.key.plugin.clone(),
            node: e.key.node.clone(),
            status: Self::word(&e.phase).to_string(),
            result_status: e.result_status(),
            result_counts: e
                .result
                .as_ref()
                .map(|r| r.counts.iter().cloned().collect()),
            progress: e.progress.as_deref().map(ProgressUpdate::for_status),
        }
    }

    fn status_without_keys(&self) -> Status {
        let (overall, tar_info) = self.overall();
        Status {
            plugins: None,
            status: overall,
            tar_info: tar_info.unwrap_or_default(),
            interrupted: match &self.phase {
                RunPhase::Interrupted { why, .. } => Some(why.clone()),
                _ => None,
            },
            seal_error: self.seal_error().map(str::to_owned),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(p: &str, n: &str) -> ResultKey {
        ResultKey::new(p, n)
    }

    #[test]
    fn a_status_written_in_chunks_is_the_status_document_byte_for_byte() {
        for keys in [1usize, 2, 7] {
            let mut s = RunState::new(
                (0..keys)
                    .map(|i| k("p", &format!("n{i}")))
                    .collect::<Vec<_>>(),
            );
            s.restore(&k("p", "n0"), Outcome::Error("it \"broke\"".into()));
            s.set_result(&k("p", "n0"), "failed".into(), [("failed".to_string(), 2)]);
            s.set_seal_error(Some("disk full".into()));
            let whole = serde_json::to_vec(&s.status()).unwrap();
            for chunk in [1usize, 2, 3, 100] {
                let (mut out, mut next) = (Vec::new(), Some(0));
                while let Some(from) = next {
                    next = s.write_status_chunk(from, chunk, &mut out);
                }
                assert_eq!(
                    String::from_utf8(out).unwrap(),
                    String::from_utf8(whole.clone()).unwrap(),
                    "{keys} keys, {chunk} a chunk"
                );
            }
        }
    }

    fn run() -> RunState {
        RunState::new([
            k("systemd_logs", "node1"),
            k("systemd_logs", "node2"),
            k("e2e", "global"),
        ])
    }

    #[test]
    fn unexpected_key_is_refused_and_records_nothing() {
        let mut s = run();
        assert_eq!(
            s.begin(&k("systemd_logs", "node9"), false),
            Err(Refusal::Unexpected)
        );
        assert_eq!(
            s.record_progress(&k("foo", "bar"), ProgressUpdate::default()),
            Err(Refusal::Unexpected)
        );
        assert_eq!(s.counts(), (0, 0, 3));
    }

    #[test]
    fn duplicate_after_success_is_refused() {
        let mut s = run();
        let t = s.begin(&k("e2e", "global"), false).unwrap();
        assert!(s.finish(&t, Ok(Outcome::Result)));
        assert_eq!(s.begin(&k("e2e", "global"), false), Err(Refusal::Duplicate));
    }

    #[test]
    fn second_upload_while_receiving_is_refused() {
        let mut s = run();
        let _t = s.begin(&k("e2e", "global"), false).unwrap();
        assert_eq!(s.begin(&k("e2e", "global"), false), Err(Refusal::InFlight));
        assert_eq!(s.begin(&k("e2e", "global"), true), Err(Refusal::InFlight));
    }

    #[test]
    fn retry_after_failed_write_is_accepted() {
        let mut s = run();
        let t = s.begin(&k("e2e", "global"), false).unwrap();
        s.finish(&t, Err("disk full".into()));
        assert!(!s.is_complete());
        let t2 = s.begin(&k("e2e", "global"), false).unwrap();
        assert!(s.finish(&t2, Ok(Outcome::Result)));
        assert_eq!(
            s.phase_of(&k("e2e", "global")),
            Some(&Phase::Done(Outcome::Result))
        );
    }

    #[test]
    fn stale_ticket_is_ignored() {
        let mut s = run();
        let t = s.begin(&k("e2e", "global"), false).unwrap();
        s.finish(&t, Err("x".into()));
        let t2 = s.begin(&k("e2e", "global"), false).unwrap();
        assert!(!s.finish(&t, Ok(Outcome::Result)));
        assert!(s.finish(&t2, Ok(Outcome::Result)));
    }

    #[test]
    fn internal_error_first_makes_the_upload_a_duplicate() {
        let mut s = run();
        let t = s.begin(&k("e2e", "global"), true).unwrap();
        s.finish(&t, Ok(Outcome::Error("foo".into())));
        assert_eq!(s.begin(&k("e2e", "global"), false), Err(Refusal::Duplicate));
        assert_eq!(s.status().plugins.unwrap()[2].status, "failed");
    }

    #[test]
    fn upload_first_makes_the_internal_error_a_duplicate() {
        let mut s = run();
        let t = s.begin(&k("e2e", "global"), false).unwrap();
        s.finish(&t, Ok(Outcome::Result));
        assert_eq!(s.begin(&k("e2e", "global"), true), Err(Refusal::Duplicate));
    }

    #[test]
    fn a_failed_upload_never_makes_an_error_result_due() {
        let mut s = run();
        let t = s.begin(&k("e2e", "global"), false).unwrap();
        s.finish(&t, Err("not gzip".into()));
        assert!(s.due_errors().is_empty());
        assert_eq!(s.check(&k("e2e", "global")), Ok(()));
        assert!(run().due_errors().is_empty());
    }

    #[test]
    fn timeout_makes_missing_and_failed_keys_due_but_not_receiving_ones() {
        let mut s = run();
        let t = s.begin(&k("systemd_logs", "node1"), false).unwrap();
        s.finish(&t, Err("x".into()));
        let _receiving = s.begin(&k("systemd_logs", "node2"), false).unwrap();
        s.mark_timed_out();
        let due: Vec<String> = s
            .due_errors()
            .into_iter()
            .map(|d| d.key.to_string())
            .collect();
        assert_eq!(due, vec!["systemd_logs/node1", "e2e/global"]);
        assert!(s.due_errors().iter().all(|d| d.message.contains("timeout")));
    }

    #[test]
    fn completion_requires_every_key_done() {
        let mut s = run();
        for key in [k("systemd_logs", "node1"), k("systemd_logs", "node2")] {
            let t = s.begin(&key, false).unwrap();
            s.finish(&t, Ok(Outcome::Result));
        }
        assert!(s.plugin_done("systemd_logs"));
        assert!(!s.plugin_done("e2e"));
        assert!(!s.is_complete());
        let t = s.begin(&k("e2e", "global"), true).unwrap();
        s.finish(&t, Ok(Outcome::Error("timeout".into())));
        assert!(s.is_complete());
        assert!(RunState::new([]).is_complete());
    }

    #[test]
    fn status_follows_results_and_progress() {
        let mut s = run();
        let st = s.status();
        assert_eq!(st.status, "running");
        assert!(st
            .plugins
            .as_ref()
            .unwrap()
            .iter()
            .all(|p| p.status == "running"));
        let mut upd = ProgressUpdate {
            name: "e2e".into(),
            node: "global".into(),
            msg: "half".into(),
            ..Default::default()
        };
        upd.completed = 5;
        s.record_progress(&k("e2e", "global"), upd).unwrap();
        let t = s.begin(&k("e2e", "global"), false).unwrap();
        s.finish(&t, Ok(Outcome::Result));
        let st = s.status();
        let e2e = &st.plugins.as_ref().unwrap()[2];
        assert_eq!(
            (
                e2e.status.as_str(),
                e2e.progress.as_ref().unwrap().completed
            ),
            ("complete", 5)
        );
        for key in [k("systemd_logs", "node1"), k("systemd_logs", "node2")] {
            let t = s.begin(&key, true).unwrap();
            s.finish(&t, Ok(Outcome::Error("pod failed".into())));
        }
        // v0.57: failed plugins never make the run `failed`; they keep it `running` until the
        // aggregator itself moves on to post-processing.
        assert!(s.is_complete());
        assert_eq!(s.status().status, "running");
        s.set_run_phase(RunPhase::PostProcessing);
        assert_eq!(s.status().status, "post-processing");
        s.set_run_phase(RunPhase::Complete(TarInfo {
            name: "x.tar.gz".into(),
            ..TarInfo::default()
        }));
        assert_eq!(s.status().status, "complete");
        assert_eq!(s.status().tar_info.name, "x.tar.gz");
    }
}
