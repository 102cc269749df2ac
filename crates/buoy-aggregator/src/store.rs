//! The run directory on disk (compat §3, departure 3): `plugins/<p>/results/<node>/...` and
//! `plugins/<p>/errors/<node>/error.json`. Every write goes to a fresh staging directory first
//! (beside the run directory: same file system, never inside the tarball) and is renamed into
//! place only when complete. Durability is a group commit: one committer thread syncs the file
//! system once for the data of every write that is ready, renames them, syncs once more for
//! the renames, and only then answers each writer, so a 200 always follows the sync of its own
//! data and name and writes that finish together share the cost.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use buoy_wire::ResultKey;
use bytes::Bytes;
use tokio::sync::oneshot;

use crate::state::Outcome;

/// Writes in one group commit at most; more wait for the next.
const MAX_BATCH: usize = 4096;

#[derive(Debug, Clone)]
pub struct Store {
    run_dir: PathBuf,
    staging: PathBuf,
    committer: mpsc::Sender<CommitJob>,
}

/// One write for the committer: a staged directory (written already, or to write now with one
/// file) to make durable and then rename to `target`.
struct CommitJob {
    staged: PathBuf,
    file: Option<(String, Bytes)>,
    target: PathBuf,
    done: oneshot::Sender<io::Result<()>>,
}

/// Makes everything written on the file system of `dir` (an open directory) durable: one call
/// covers every write of a batch, which is what makes a durable 200 cheap under load.
fn sync_fs(dir: &fs::File) -> io::Result<()> {
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

/// The group committer: a thread that takes every write that is ready, makes their data
/// durable with one file-system sync, renames each into place, syncs once more for the
/// renames, and only then answers each writer. A writer's 200 therefore always follows the
/// sync of its own data and name; writers that finish together share the syncs.
fn committer(staging: fs::File, rx: mpsc::Receiver<CommitJob>) {
    let mut parents: HashSet<PathBuf> = HashSet::new();
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        let mut results: Vec<io::Result<()>> = batch.iter().map(write_staged).collect();
        if let Err(e) = sync_fs(&staging) {
            for r in results.iter_mut().filter(|r| r.is_ok()) {
                *r = Err(io::Error::new(
                    e.kind(),
                    format!("cannot sync staged data: {e}"),
                ));
            }
        }
        let mut renamed = Vec::new();
        for (i, (job, r)) in batch.iter().zip(results.iter_mut()).enumerate() {
            if r.is_err() {
                continue;
            }
            *r = place(job, &mut parents);
            if r.is_ok() {
                renamed.push(i);
            }
        }
        if !renamed.is_empty() {
            if let Err(e) = sync_fs(&staging) {
                // Visible but not durable: take the names back, so a retry finds the key open.
                for &i in &renamed {
                    let _ = fs::remove_dir_all(&batch[i].target);
                    results[i] = Err(io::Error::new(
                        e.kind(),
                        format!("cannot sync the rename: {e}"),
                    ));
                }
            }
        }
        for (job, r) in batch.into_iter().zip(results) {
            if r.is_err() && job.file.is_some() {
                let _ = fs::remove_dir_all(&job.staged);
            }
            let _ = job.done.send(r);
        }
    }
}

/// Creates and fills the staged directory of a job that brings its file.
fn write_staged(job: &CommitJob) -> io::Result<()> {
    let Some((name, data)) = &job.file else {
        return Ok(());
    };
    fs::create_dir(&job.staged)?;
    // The same open as a streamed upload's: a new name only, and the same mode (0644 less the umask).
    let mut f = crate::extract::open_new_file(&job.staged.join(name), false)?;
    io::Write::write_all(&mut f, data)
}

/// Renames a job's staged directory to its target, creating the target's parents once.
fn place(job: &CommitJob, parents: &mut HashSet<PathBuf>) -> io::Result<()> {
    let parent = job
        .target
        .parent()
        .expect("result paths always have a parent");
    if !parents.contains(parent) {
        fs::create_dir_all(parent)?;
        parents.insert(parent.to_path_buf());
    }
    rename_new(&job.staged, &job.target).map_err(|e| {
        if e.kind() == io::ErrorKind::AlreadyExists {
            io::Error::new(e.kind(), format!("{} already exists", job.target.display()))
        } else {
            e
        }
    })
}

impl Store {
    /// Opens (creating if needed) `run_dir` and an empty staging directory `staging`, and
    /// starts the committer, which runs until the last clone of this store is dropped.
    pub fn open(run_dir: &Path, staging: &Path) -> io::Result<Self> {
        fs::create_dir_all(run_dir.join("plugins"))?;
        fs::create_dir_all(run_dir.join("meta"))?;
        if staging.exists() {
            fs::remove_dir_all(staging)?;
        }
        fs::create_dir_all(staging)?;
        let (tx, rx) = mpsc::channel();
        // Opened once: the committer syncs through it for the life of the run.
        let root = fs::File::open(staging)?;
        std::thread::Builder::new()
            .name("buoy-commit".into())
            .spawn(move || committer(root, rx))?;
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

    async fn commit(
        &self,
        staged: PathBuf,
        file: Option<(String, Bytes)>,
        target: PathBuf,
    ) -> io::Result<()> {
        let (done, rx) = oneshot::channel();
        self.committer
            .send(CommitJob {
                staged,
                file,
                target,
                done,
            })
            .map_err(|_| io::Error::other("the committer has stopped"))?;
        rx.await
            .unwrap_or_else(|_| Err(io::Error::other("the committer has stopped")))
    }

    /// Makes a complete staged upload durable and moves it into `results/<node>`.
    pub async fn commit_result(&self, staged: &Path, key: &ResultKey) -> io::Result<()> {
        self.commit(staged.to_path_buf(), None, self.result_dir(key))
            .await
    }

    /// Stores `data` as `results/<node>/<name>` (a small upload held in memory), durably.
    pub async fn write_result(
        &self,
        id: u64,
        key: &ResultKey,
        name: &str,
        data: Bytes,
    ) -> io::Result<()> {
        let file = Some((name.to_string(), data));
        self.commit(self.staged_path(id), file, self.result_dir(key))
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
        // A written upload for a stored key is refused too, and leaves no staging behind.
        let e = s
            .write_result(3, &key, "result", Bytes::from_static(b"y"))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert!(!s.staged_path(3).exists());
        assert_eq!(fs::read(s.result_dir(&key).join("result")).unwrap(), b"x");
    }

    #[tokio::test]
    async fn many_writes_at_once_share_the_syncs_and_all_land() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(&d.path().join("run"), &d.path().join("stage")).unwrap();
        let writes = (0..200u64).map(|i| {
            let s = s.clone();
            tokio::spawn(async move {
                let key = ResultKey::new("p", format!("n{i}"));
                s.write_result(i, &key, "r", Bytes::from(i.to_string()))
                    .await
            })
        });
        for w in writes.collect::<Vec<_>>() {
            w.await.unwrap().unwrap();
        }
        for i in 0..200u64 {
            let key = ResultKey::new("p", format!("n{i}"));
            assert_eq!(
                fs::read_to_string(s.result_dir(&key).join("r")).unwrap(),
                i.to_string()
            );
        }
        assert_eq!(fs::read_dir(s.staging_root()).unwrap().count(), 0);
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
