//! The run directory on disk (compat §3, departure 3): `plugins/<p>/results/<node>/...` and
//! `plugins/<p>/errors/<node>/error.json`. Every write goes to a fresh staging directory first
//! and is renamed into place only when complete and synced, so a result is visible only once
//! whole and a failed write leaves nothing. Staging lives beside the run directory (same file
//! system, never inside the tarball).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use buoy_wire::ResultKey;

use crate::state::Outcome;

#[derive(Debug, Clone)]
pub struct Store {
    run_dir: PathBuf,
    staging: PathBuf,
}

fn sync_dir(p: &Path) {
    // Durability of the rename; not every file system supports syncing a directory.
    if let Ok(d) = fs::File::open(p) {
        let _ = d.sync_all();
    }
}

impl Store {
    /// Opens (creating if needed) `run_dir` and an empty staging directory `staging`.
    pub fn open(run_dir: &Path, staging: &Path) -> io::Result<Self> {
        fs::create_dir_all(run_dir.join("plugins"))?;
        fs::create_dir_all(run_dir.join("meta"))?;
        if staging.exists() {
            fs::remove_dir_all(staging)?;
        }
        fs::create_dir_all(staging)?;
        Ok(Self {
            run_dir: run_dir.to_path_buf(),
            staging: staging.to_path_buf(),
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

    /// A fresh, empty staging directory for write number `id`.
    pub fn stage(&self, id: u64) -> io::Result<PathBuf> {
        let p = self.staging.join(format!("upload-{id}"));
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

    fn commit(&self, staged: &Path, target: &Path) -> io::Result<()> {
        let parent = target.parent().expect("result paths always have a parent");
        fs::create_dir_all(parent)?;
        sync_dir(staged);
        if target.exists() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} already exists", target.display()),
            ));
        }
        fs::rename(staged, target)?;
        sync_dir(parent);
        Ok(())
    }

    /// Moves a complete upload into `results/<node>`.
    pub fn commit_result(&self, staged: &Path, key: &ResultKey) -> io::Result<()> {
        self.commit(staged, &self.result_dir(key))
    }

    /// Writes `body` as `errors/<node>/error.json`, atomically.
    pub fn write_error(&self, id: u64, key: &ResultKey, body: &[u8]) -> io::Result<()> {
        let staged = self.stage(id)?;
        let res = (|| {
            let p = staged.join(buoy_wire::ERROR_RESULT_FILENAME);
            fs::write(&p, body)?;
            fs::File::open(&p)?.sync_all()?;
            self.commit(&staged, &self.error_dir(key))
        })();
        if res.is_err() {
            self.discard(&staged);
        }
        res
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

    #[test]
    fn commit_makes_a_staged_result_visible_and_refuses_overwrite() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(&d.path().join("run"), &d.path().join("stage")).unwrap();
        let key = ResultKey::new("p", "n1");
        let st = s.stage(1).unwrap();
        fs::write(st.join("result"), b"x").unwrap();
        assert!(s.recorded(&key).is_none());
        s.commit_result(&st, &key).unwrap();
        assert_eq!(fs::read(s.result_dir(&key).join("result")).unwrap(), b"x");
        assert_eq!(s.recorded(&key), Some(Outcome::Result));
        let st2 = s.stage(2).unwrap();
        assert!(s.commit_result(&st2, &key).is_err());
    }

    #[test]
    fn error_results_land_under_errors() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(&d.path().join("run"), &d.path().join("stage")).unwrap();
        let key = ResultKey::global("e2e");
        s.write_error(1, &key, &buoy_wire::error_body("foo", None))
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
