//! The run directory on disk (compat §3, departure 3): `plugins/<p>/results/<node>/...` and
//! `plugins/<p>/errors/<node>/error.json`. Every write goes to a fresh staging directory first
//! (beside the run directory: same file system, never inside the tarball) and is renamed into
//! place only when complete. Durability is a group commit: one committer thread syncs the file
//! system once for the data of every write that is ready, renames them, syncs once more for
//! the renames, and only then answers each writer, so a 200 always follows the sync of its own
//! data and name and writes that finish together share the cost. Small results held in memory
//! skip the staging directory: they go to the journal (`journal.rs`) and are laid out later.

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use buoy_wire::ResultKey;
use bytes::Bytes;
use tokio::sync::oneshot;

use crate::journal::{self, Journal};
use crate::state::Outcome;

/// The journal's file name inside the staging directory.
const JOURNAL: &str = "journal";

/// Writes in one group commit at most; more wait for the next.
const MAX_BATCH: usize = 4096;

#[derive(Debug, Clone)]
pub struct Store {
    run_dir: PathBuf,
    staging: PathBuf,
    committer: mpsc::Sender<Job>,
}

/// Work for the committer thread.
enum Job {
    /// A staged directory (written already, or to write now with one file) to make durable
    /// and then rename to `target`.
    Place {
        staged: PathBuf,
        file: Option<(String, Bytes)>,
        target: PathBuf,
        done: oneshot::Sender<io::Result<()>>,
    },
    /// A small result for the journal: `target` relative to the run directory.
    Journal {
        target: String,
        name: String,
        data: Bytes,
        done: oneshot::Sender<io::Result<()>>,
    },
    /// Lay out every journaled result and empty the journal; with `close`, take no more
    /// results into the journal afterwards.
    Flush {
        close: bool,
        done: oneshot::Sender<io::Result<()>>,
    },
}

/// How long the committer waits for work before it lays out journaled results: under load
/// it never does, and the tree catches up as soon as uploads pause.
const IDLE: std::time::Duration = std::time::Duration::from_millis(20);
/// Journaled results laid out between two looks for new work, so new work waits at most one
/// chunk.
const IDLE_CHUNK: usize = 64;

/// Makes everything written on the file system of `dir` (an open directory) durable: one call
/// covers every write of a batch, which is what makes a durable 200 cheap under load.
pub(crate) fn sync_fs(dir: &fs::File) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        nix::unistd::syncfs(dir).map_err(io::Error::from)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = dir;
        nix::unistd::sync();
        Ok(())
    }
}

/// Renames `from` to `to`, refusing to replace anything already at `to`.
fn rename_new(from: &Path, to: &Path) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use nix::fcntl::{renameat2, RenameFlags, AT_FDCWD};
        renameat2(AT_FDCWD, from, AT_FDCWD, to, RenameFlags::RENAME_NOREPLACE)
            .map_err(io::Error::from)
    }
    #[cfg(not(target_os = "linux"))]
    {
        if to.exists() {
            return Err(io::ErrorKind::AlreadyExists.into());
        }
        fs::rename(from, to)
    }
}

/// What the committer thread owns.
struct Committer {
    run_dir: PathBuf,
    staging: PathBuf,
    /// Opened once: the committer syncs through it for the life of the run.
    staging_dir: fs::File,
    journal: Journal,
    parents: HashSet<PathBuf>,
    /// Set when laying out failed while idle; only a flush tries again (and reports it).
    idle_failed: bool,
    /// Set by a closing flush: the staging directory (and the journal in it) is about to go,
    /// and a record written into it now would be acknowledged and then lost.
    closed: bool,
}

impl Committer {
    /// The group committer's loop: take every job that is ready; journal records are made
    /// durable with one `fdatasync`, staged directories with one file-system sync for their
    /// data and one for their renames; only then is each writer answered. Writers that
    /// finish together share the syncs. When no work comes for a moment, journaled results
    /// are laid out in the tree.
    fn run(mut self, rx: mpsc::Receiver<Job>) {
        // Idle: no work came for `IDLE`; chunks are then laid out back to back until work
        // comes again.
        let mut idle = false;
        loop {
            let first = if self.journal.has_pending() && !self.idle_failed {
                let next = if idle {
                    rx.try_recv().map_err(|e| match e {
                        mpsc::TryRecvError::Empty => mpsc::RecvTimeoutError::Timeout,
                        mpsc::TryRecvError::Disconnected => mpsc::RecvTimeoutError::Disconnected,
                    })
                } else {
                    rx.recv_timeout(IDLE)
                };
                match next {
                    Ok(j) => {
                        idle = false;
                        j
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        idle = true;
                        if let Err(e) = self.lay_out(IDLE_CHUNK) {
                            tracing::warn!(error = %e, "cannot lay out journaled results; they stay in the journal until the run is sealed");
                            self.idle_failed = true;
                        }
                        continue;
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                }
            } else {
                match rx.recv() {
                    Ok(j) => j,
                    Err(_) => break,
                }
            };
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(j) => batch.push(j),
                    Err(_) => break,
                }
            }
            let mut places = Vec::new();
            let mut records = Vec::new();
            let mut flushes = Vec::new();
            for job in batch {
                match job {
                    Job::Place {
                        staged,
                        file,
                        target,
                        done,
                    } => places.push((staged, file, target, done)),
                    Job::Journal {
                        target,
                        name,
                        data,
                        done,
                    } => records.push((target, name, data, done)),
                    Job::Flush { close, done } => flushes.push((close, done)),
                }
            }
            if self.closed {
                for (.., done) in records.drain(..) {
                    let _ = done.send(Err(io::Error::other(
                        "the run is sealed: no more results are stored",
                    )));
                }
            }
            if !records.is_empty() {
                let writes: Vec<(&str, &str, &[u8])> = records
                    .iter()
                    .map(|(t, n, d, _)| (t.as_str(), n.as_str(), &d[..]))
                    .collect();
                let answers = self.journal.append(&self.run_dir, &writes);
                for ((.., done), a) in records.into_iter().zip(answers) {
                    let _ = done.send(a);
                }
            }
            if !places.is_empty() {
                self.place_all(places);
            }
            if !flushes.is_empty() {
                let r = self.lay_out(usize::MAX);
                if r.is_ok() {
                    self.idle_failed = false;
                    self.closed |= flushes.iter().any(|(close, _)| *close);
                }
                for (_, done) in flushes {
                    let _ = done.send(
                        r.as_ref()
                            .map(|_| ())
                            .map_err(|e| io::Error::new(e.kind(), e.to_string())),
                    );
                }
            }
        }
    }

    /// Lays out up to `max` journaled results; once none is left, syncs and empties the
    /// journal.
    fn lay_out(&mut self, max: usize) -> io::Result<()> {
        self.journal
            .lay_out(max, &self.run_dir, &self.staging, &mut self.parents)?;
        self.journal.settle(&self.staging_dir)
    }

    /// Writes, syncs and renames staged directories: data synced before the rename, the
    /// rename synced before the answer.
    #[allow(clippy::type_complexity)]
    fn place_all(
        &mut self,
        jobs: Vec<(
            PathBuf,
            Option<(String, Bytes)>,
            PathBuf,
            oneshot::Sender<io::Result<()>>,
        )>,
    ) {
        let mut results: Vec<io::Result<()>> = jobs
            .iter()
            .map(|(staged, file, ..)| write_staged(staged, file.as_ref()))
            .collect();
        if let Err(e) = sync_fs(&self.staging_dir) {
            for r in results.iter_mut().filter(|r| r.is_ok()) {
                *r = Err(io::Error::new(
                    e.kind(),
                    format!("cannot sync staged data: {e}"),
                ));
            }
        }
        let mut renamed = Vec::new();
        for (i, ((staged, _, target, _), r)) in jobs.iter().zip(results.iter_mut()).enumerate() {
            if r.is_err() {
                continue;
            }
            *r = place(staged, target, &mut self.parents);
            if r.is_ok() {
                renamed.push(i);
            }
        }
        if !renamed.is_empty() {
            if let Err(e) = sync_fs(&self.staging_dir) {
                // Visible but not durable: take the names back, so a retry finds the key open.
                for &i in &renamed {
                    let _ = fs::remove_dir_all(&jobs[i].2);
                    results[i] = Err(io::Error::new(
                        e.kind(),
                        format!("cannot sync the rename: {e}"),
                    ));
                }
            }
        }
        for ((staged, file, _, done), r) in jobs.into_iter().zip(results) {
            if r.is_err() && file.is_some() {
                let _ = fs::remove_dir_all(&staged);
            }
            let _ = done.send(r);
        }
    }
}

/// Creates and fills the staged directory of a job that brings its file.
fn write_staged(staged: &Path, file: Option<&(String, Bytes)>) -> io::Result<()> {
    let Some((name, data)) = file else {
        return Ok(());
    };
    fs::create_dir(staged)?;
    // The same open as a streamed upload's: a new name only, and the same mode (0644 less the umask).
    let mut f = crate::extract::open_new_file(&staged.join(name), false)?;
    io::Write::write_all(&mut f, data)
}

/// Renames a staged directory to its target, creating the target's parents once.
pub(crate) fn place(
    staged: &Path,
    target: &Path,
    parents: &mut HashSet<PathBuf>,
) -> io::Result<()> {
    let parent = target.parent().expect("result paths always have a parent");
    if !parents.contains(parent) {
        fs::create_dir_all(parent)?;
        parents.insert(parent.to_path_buf());
    }
    rename_new(staged, target).map_err(|e| {
        if e.kind() == io::ErrorKind::AlreadyExists {
            io::Error::new(e.kind(), format!("{} already exists", target.display()))
        } else {
            e
        }
    })
}

/// The names in `dir` (none if it does not exist), or `None` when it cannot be listed whole:
/// then nothing can be ruled out from the listing.
fn entry_names(dir: &Path) -> Option<Vec<OsString>> {
    match fs::read_dir(dir) {
        Ok(entries) => entries.map(|e| e.ok().map(|e| e.file_name())).collect(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Some(Vec::new()),
        Err(_) => None,
    }
}

impl Store {
    /// Opens (creating if needed) `run_dir` and an empty staging directory `staging`, and
    /// starts the committer, which runs until the last clone of this store is dropped.
    pub fn open(run_dir: &Path, staging: &Path) -> io::Result<Self> {
        /// Moves a damaged journal beside the staging directory (which is removed), named by
        /// the time, and returns where it went.
        fn keep_aside(journal: &Path, staging: &Path) -> Option<PathBuf> {
            let stamp = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or_default();
            let name = format!(
                "{}.damaged-journal-{stamp}",
                staging.file_name()?.to_string_lossy()
            );
            let dest = staging.with_file_name(name);
            fs::rename(journal, &dest).ok()?;
            Some(dest)
        }
        fs::create_dir_all(run_dir.join("plugins"))?;
        fs::create_dir_all(run_dir.join("meta"))?;
        if staging.exists() {
            // Results an earlier aggregator acknowledged but had not laid out yet.
            let journal = staging.join(JOURNAL);
            let replayed = journal::replay(&journal, run_dir, staging)?;
            if replayed.records > 0 {
                tracing::info!(
                    results = replayed.records,
                    "laid out the results journaled by an earlier aggregator on this directory"
                );
            }
            if replayed.damaged > 0 && replayed.damaged_records == 0 {
                let kept = keep_aside(&journal, staging);
                tracing::warn!(stretches = replayed.damaged, laid_out = replayed.records,
                    kept = ?kept, "the journal holds damaged bytes between whole records (no record in them); skipped");
            } else if replayed.damaged > 0 {
                // Acknowledged results are lost: say how many, and keep the evidence.
                let kept = keep_aside(&journal, staging);
                tracing::error!(
                    lost = replayed.damaged_records,
                    stretches = replayed.damaged,
                    laid_out = replayed.records,
                    kept = %kept.as_deref().map(|p| p.display().to_string()).unwrap_or_else(|| "nowhere (it could not be moved)".into()),
                    "the journal holds damaged records before whole ones: those acknowledged results are lost and their keys stay open"
                );
            } else if replayed.torn_tail {
                tracing::warn!(
                    laid_out = replayed.records,
                    "the journal ends in a record that was never acknowledged (a write cut short); it is dropped"
                );
            }
            fs::remove_dir_all(staging)?;
        }
        fs::create_dir_all(staging)?;
        let (tx, rx) = mpsc::channel();
        let committer = Committer {
            run_dir: run_dir.to_path_buf(),
            staging: staging.to_path_buf(),
            staging_dir: fs::File::open(staging)?,
            journal: Journal::new(&staging.join(JOURNAL)),
            parents: HashSet::new(),
            idle_failed: false,
            closed: false,
        };
        std::thread::Builder::new()
            .name("buoy-commit".into())
            .spawn(move || committer.run(rx))?;
        Ok(Self {
            run_dir: run_dir.to_path_buf(),
            staging: staging.to_path_buf(),
            committer: tx,
        })
    }

    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    pub fn staging_root(&self) -> &Path {
        &self.staging
    }

    pub fn result_dir(&self, key: &ResultKey) -> PathBuf {
        self.run_dir
            .join("plugins")
            .join(&key.plugin)
            .join("results")
            .join(&key.node)
    }

    pub fn error_dir(&self, key: &ResultKey) -> PathBuf {
        self.run_dir
            .join("plugins")
            .join(&key.plugin)
            .join("errors")
            .join(&key.node)
    }

    /// The staging directory of write number `id` (not created).
    pub fn staged_path(&self, id: u64) -> PathBuf {
        self.staging.join(format!("upload-{id}"))
    }

    /// A fresh, empty staging directory for write number `id`.
    pub fn stage(&self, id: u64) -> io::Result<PathBuf> {
        let p = self.staged_path(id);
        if p.exists() {
            fs::remove_dir_all(&p)?;
        }
        fs::create_dir(&p)?;
        Ok(p)
    }

    /// Removes a staging directory; used on every failure path.
    pub fn discard(&self, staged: &Path) {
        if staged.starts_with(&self.staging) {
            let _ = fs::remove_dir_all(staged);
        }
    }

    /// Hands `job` (made with its answer's sender) to the committer and waits for the answer.
    async fn send(
        &self,
        job: impl FnOnce(oneshot::Sender<io::Result<()>>) -> Job,
    ) -> io::Result<()> {
        let (done, rx) = oneshot::channel();
        self.committer
            .send(job(done))
            .map_err(|_| io::Error::other("the committer has stopped"))?;
        rx.await
            .unwrap_or_else(|_| Err(io::Error::other("the committer has stopped")))
    }

    async fn commit(
        &self,
        staged: PathBuf,
        file: Option<(String, Bytes)>,
        target: PathBuf,
    ) -> io::Result<()> {
        self.send(|done| Job::Place {
            staged,
            file,
            target,
            done,
        })
        .await
    }

    /// Lays out every journaled result in the tree and empties the journal: what
    /// post-processing and sealing read must be on disk as files.
    pub async fn flush(&self) -> io::Result<()> {
        self.send(|done| Job::Flush { close: false, done }).await
    }

    /// Flushes, then refuses small results from then on: before the staging directory, with
    /// the journal in it, is removed at the end of a run.
    pub async fn close(&self) -> io::Result<()> {
        self.send(|done| Job::Flush { close: true, done }).await
    }

    /// Makes a complete staged upload durable and moves it into `results/<node>`.
    pub async fn commit_result(&self, staged: &Path, key: &ResultKey) -> io::Result<()> {
        self.commit(staged.to_path_buf(), None, self.result_dir(key))
            .await
    }

    /// Stores `data` as `results/<node>/<name>` (a small upload held in memory), durably:
    /// in the journal at once, in the tree when the committer is idle or at the next
    /// [`Store::flush`].
    pub async fn write_result(&self, key: &ResultKey, name: &str, data: Bytes) -> io::Result<()> {
        let target = format!("plugins/{}/results/{}", key.plugin, key.node);
        let name = name.to_string();
        self.send(|done| Job::Journal {
            target,
            name,
            data,
            done,
        })
        .await
    }

    /// Writes `body` as `errors/<node>/error.json`, durably and atomically.
    pub async fn write_error(&self, id: u64, key: &ResultKey, body: &[u8]) -> io::Result<()> {
        let file = Some((
            buoy_wire::ERROR_RESULT_FILENAME.to_string(),
            Bytes::copy_from_slice(body),
        ));
        self.commit(self.staged_path(id), file, self.error_dir(key))
            .await
    }

    /// What an earlier aggregator on this directory already stored for each of `keys`, for
    /// those that have something. Each plugin's `results` and `errors` directories are listed
    /// once, and only the keys named there are looked at: a fresh run with 300,000 keys costs a
    /// few hundred failed `read_dir`s at start, not 600,000 failed path lookups (1.5 s here).
    pub fn recorded_among<'a>(
        &self,
        keys: impl IntoIterator<Item = &'a ResultKey>,
    ) -> Vec<(ResultKey, Outcome)> {
        let mut listed: HashMap<&str, Option<HashSet<OsString>>> = HashMap::new();
        let mut found = Vec::new();
        for key in keys {
            let names = listed.entry(key.plugin.as_str()).or_insert_with(|| {
                // The directories `result_dir` and `error_dir` put this plugin's keys in.
                let mut names = HashSet::new();
                for dir in [self.result_dir(key), self.error_dir(key)] {
                    let parent = dir.parent().expect("a key's directory has a parent");
                    names.extend(entry_names(parent)?);
                }
                Some(names)
            });
            let maybe = names
                .as_ref()
                .is_none_or(|n| n.contains(OsStr::new(&key.node)));
            if let Some(outcome) = maybe.then(|| self.recorded(key)).flatten() {
                found.push((key.clone(), outcome));
            }
        }
        found
    }

    /// What an earlier aggregator on this directory already stored for `key`, if anything.
    pub fn recorded(&self, key: &ResultKey) -> Option<Outcome> {
        if self.result_dir(key).is_dir() {
            return Some(Outcome::Result);
        }
        let err = self.error_dir(key).join(buoy_wire::ERROR_RESULT_FILENAME);
        let body = fs::read(err).ok()?;
        let msg = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
            .unwrap_or_else(|| "Unknown error".to_string());
        Some(Outcome::Error(msg))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn commit_makes_a_staged_result_visible_and_refuses_overwrite() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(&d.path().join("run"), &d.path().join("stage")).unwrap();
        let key = ResultKey::new("p", "n1");
        let st = s.stage(1).unwrap();
        fs::write(st.join("result"), b"x").unwrap();
        assert!(s.recorded(&key).is_none());
        s.commit_result(&st, &key).await.unwrap();
        assert_eq!(fs::read(s.result_dir(&key).join("result")).unwrap(), b"x");
        assert_eq!(s.recorded(&key), Some(Outcome::Result));
        let st2 = s.stage(2).unwrap();
        assert!(s.commit_result(&st2, &key).await.is_err());
        // A written upload for a stored key is refused too, and leaves nothing behind.
        let e = s
            .write_result(&key, "result", Bytes::from_static(b"y"))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        s.flush().await.unwrap();
        assert_eq!(fs::read(s.result_dir(&key).join("result")).unwrap(), b"x");
    }

    #[tokio::test]
    async fn many_small_writes_are_journaled_then_laid_out_by_a_flush() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(&d.path().join("run"), &d.path().join("stage")).unwrap();
        let writes = (0..200u64).map(|i| {
            let s = s.clone();
            tokio::spawn(async move {
                let key = ResultKey::new("p", format!("n{i}"));
                s.write_result(&key, "r", Bytes::from(i.to_string())).await
            })
        });
        for w in writes.collect::<Vec<_>>() {
            w.await.unwrap().unwrap();
        }
        let journal = s.staging_root().join(JOURNAL);
        // Journaled or already laid out by an idle moment, a stored key is refused.
        let again = s
            .write_result(&ResultKey::new("p", "n7"), "r", Bytes::new())
            .await;
        assert_eq!(again.unwrap_err().kind(), io::ErrorKind::AlreadyExists);
        s.flush().await.unwrap();
        for i in 0..200u64 {
            let key = ResultKey::new("p", format!("n{i}"));
            assert_eq!(s.recorded(&key), Some(Outcome::Result));
            assert_eq!(
                fs::read_to_string(s.result_dir(&key).join("r")).unwrap(),
                i.to_string()
            );
        }
        assert_eq!(
            fs::metadata(&journal).unwrap().len(),
            0,
            "emptied once laid out"
        );
        let names: Vec<_> = fs::read_dir(s.staging_root())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [JOURNAL], "nothing staged is left");
    }

    /// A store holding one small result, `p/n1` with `r` = "1".
    async fn store_with_one_result() -> (tempfile::TempDir, Store, ResultKey) {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(&d.path().join("run"), &d.path().join("stage")).unwrap();
        let key = ResultKey::new("p", "n1");
        s.write_result(&key, "r", Bytes::from_static(b"1"))
            .await
            .unwrap();
        (d, s, key)
    }

    #[tokio::test]
    async fn a_closed_store_lays_out_what_it_took_and_refuses_more() {
        let (_d, s, key) = store_with_one_result().await;
        s.close().await.unwrap();
        assert_eq!(fs::read(s.result_dir(&key).join("r")).unwrap(), b"1");
        let late = s
            .write_result(&ResultKey::new("p", "n2"), "r", Bytes::from_static(b"2"))
            .await
            .unwrap_err();
        assert!(late.to_string().contains("sealed"), "{late}");
    }

    #[tokio::test]
    async fn journaled_results_are_laid_out_when_the_committer_is_idle() {
        let (_d, s, key) = store_with_one_result().await;
        let journal = s.staging_root().join(JOURNAL);
        // No flush: the committer lays it out and empties the journal on its own.
        tokio::time::timeout(std::time::Duration::from_secs(60), async {
            while fs::metadata(&journal).unwrap().len() > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the journal was never emptied");
        assert_eq!(fs::read(s.result_dir(&key).join("r")).unwrap(), b"1");
    }

    #[tokio::test]
    async fn a_store_reopened_after_a_crash_lays_out_what_its_journal_holds() {
        let d = tempfile::tempdir().unwrap();
        let (run, stage) = (d.path().join("run"), d.path().join("stage"));
        // What a crash before the lay-out leaves: a journal written by the journal's own writer
        // (no committer here, so no idle lay-out can empty it first).
        fs::create_dir_all(&stage).unwrap();
        let mut j = Journal::new(&stage.join(JOURNAL));
        let written = j.append(&run, &[("plugins/p/results/n1", "r", b"1")]);
        assert!(written[0].is_ok());
        drop(j);
        let s = Store::open(&run, &stage).unwrap();
        let key = ResultKey::new("p", "n1");
        assert_eq!(s.recorded(&key), Some(Outcome::Result));
        assert_eq!(fs::read(s.result_dir(&key).join("r")).unwrap(), b"1");
        assert!(
            !stage.join(JOURNAL).exists(),
            "replayed, then a fresh staging directory"
        );
    }

    /// One damaged record in the middle of a journal costs that record only: the ones after
    /// it are laid out too (they used to be dropped with it, the journal deleted), and the
    /// journal is kept beside the staging directory for a look.
    #[tokio::test]
    async fn a_damaged_record_costs_only_itself_and_the_journal_is_kept_aside() {
        let d = tempfile::tempdir().unwrap();
        let (run, stage) = (d.path().join("run"), d.path().join("stage"));
        fs::create_dir_all(&stage).unwrap();
        let mut j = Journal::new(&stage.join(JOURNAL));
        for n in 1..=3 {
            let target = format!("plugins/p/results/n{n}");
            let data = format!("result {n} {}", "x".repeat(200));
            assert!(j.append(&run, &[(target.as_str(), "r", data.as_bytes())])[0].is_ok());
        }
        drop(j);
        let mut bytes = fs::read(stage.join(JOURNAL)).unwrap();
        let at = bytes
            .windows(8)
            .position(|w| w == b"result 2")
            .expect("the second record");
        bytes[at + 20] ^= 0xff;
        fs::write(stage.join(JOURNAL), &bytes).unwrap();
        let s = Store::open(&run, &stage).unwrap();
        let done: Vec<bool> = (1..=3)
            .map(|n| s.recorded(&ResultKey::new("p", format!("n{n}"))) == Some(Outcome::Result))
            .collect();
        assert_eq!(done, [true, false, true]);
        let kept: Vec<String> = fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".damaged-journal-"))
            .collect();
        assert_eq!(kept.len(), 1, "{kept:?}");
        assert_eq!(fs::read(d.path().join(&kept[0])).unwrap(), bytes);
    }

    #[test]
    fn recorded_among_finds_what_recorded_finds_for_each_key() {
        let d = tempfile::tempdir().unwrap();
        let run = d.path().join("run");
        for (dir, file, body) in [
            ("plugins/p/results/n1", "r", "x"),
            ("plugins/p/errors/n2", "error.json", r#"{"error":"boom"}"#),
            ("plugins/q/results/global", "r", "y"),
            // A stray file, not a result directory: not a result, as with `recorded`.
            ("plugins/p/results", "n3", "stray"),
        ] {
            fs::create_dir_all(run.join(dir)).unwrap();
            fs::write(run.join(dir).join(file), body).unwrap();
        }
        let s = Store::open(&run, &d.path().join("stage")).unwrap();
        let keys = [
            ResultKey::new("p", "n1"),
            ResultKey::new("p", "n2"),
            ResultKey::new("p", "n3"),
            ResultKey::new("p", "n4"),
            ResultKey::global("q"),
            ResultKey::new("absent", "n1"),
        ];
        let one_by_one: Vec<_> = keys
            .iter()
            .filter_map(|k| s.recorded(k).map(|o| (k.clone(), o)))
            .collect();
        assert_eq!(s.recorded_among(&keys), one_by_one);
        assert_eq!(
            one_by_one,
            vec![
                (keys[0].clone(), Outcome::Result),
                (keys[1].clone(), Outcome::Error("boom".into())),
                (keys[4].clone(), Outcome::Result),
            ]
        );
    }

    #[tokio::test]
    async fn error_results_land_under_errors() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(&d.path().join("run"), &d.path().join("stage")).unwrap();
        let key = ResultKey::global("e2e");
        s.write_error(1, &key, &buoy_wire::error_body("foo", None))
            .await
            .unwrap();
        let p = d.path().join("run/plugins/e2e/errors/global/error.json");
        assert_eq!(fs::read_to_string(p).unwrap(), r#"{"error":"foo"}"#);
        assert_eq!(s.recorded(&key), Some(Outcome::Error("foo".into())));
        assert_eq!(
            fs::read_dir(s.staging_root()).unwrap().count(),
            0,
            "staging is empty after commit"
        );
    }
}
