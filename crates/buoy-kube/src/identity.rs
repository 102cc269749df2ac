//! The in-cluster run's durable identity, so that a restarted aggregator container resumes its
//! run instead of starting another: the UUID, the expected nodes of every plugin, and each
//! launched plugin's session ID and launch time, in `<output>/.buoy-cluster-run.json`, beside
//! the run's certificates in `.buoy-pki-<UUID>/`. The record is replaced atomically (synced
//! file, rename, synced directory) before any object it names is created, so a crash at any
//! moment leaves either the old record or the new one, and never an object it does not name.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::error::KubeError;

/// The record's file name in the output directory.
pub const RECORD_FILE: &str = ".buoy-cluster-run.json";

/// What a restart needs to carry a run on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub uuid: String,
    /// SHA-256 (hex) of the CA certificate that signed the launched plugins' Secrets: a
    /// restart whose CA differs cannot keep those plugins, their workers would not trust it.
    pub ca_sha256: String,
    /// Every plugin of the run, in load order.
    pub plugins: Vec<PluginRecord>,
    /// Set once gathering's output is in the run directory: a restart during sealing does not
    /// gather again, when the plugins' own objects may be cleaned up already.
    #[serde(default)]
    pub gathered: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PluginRecord {
    pub name: String,
    /// A DaemonSet plugin's nodes, chosen at the first start; empty for a Job plugin.
    #[serde(default)]
    pub nodes: Vec<String>,
    /// Set just before the plugin's first object is created.
    #[serde(default)]
    pub launch: Option<LaunchRecord>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LaunchRecord {
    pub session: String,
    /// RFC 3339; the plugin's timeout counts from here, across restarts.
    pub at: String,
}

impl LaunchRecord {
    pub fn new(session: String, at: OffsetDateTime) -> Self {
        Self {
            session,
            at: buoy_wire::timefmt::rfc3339_nano(at),
        }
    }

    /// The launch time; a record that cannot be read counts as launched now.
    pub fn launched(&self) -> OffsetDateTime {
        buoy_wire::timefmt::parse_rfc3339(&self.at).unwrap_or_else(OffsetDateTime::now_utc)
    }
}

impl RunRecord {
    pub fn plugin(&self, name: &str) -> Option<&PluginRecord> {
        self.plugins.iter().find(|p| p.name == name)
    }

    pub fn plugin_mut(&mut self, name: &str) -> Option<&mut PluginRecord> {
        self.plugins.iter_mut().find(|p| p.name == name)
    }

    /// The session IDs this run launched.
    pub fn sessions(&self) -> BTreeSet<&str> {
        self.plugins
            .iter()
            .filter_map(|p| p.launch.as_ref().map(|l| l.session.as_str()))
            .collect()
    }
}

/// The directory that keeps run `uuid`'s CA, server certificate and plugin certificates.
pub fn pki_dir(output_dir: &Path, uuid: &str) -> PathBuf {
    output_dir.join(format!(".buoy-pki-{uuid}"))
}

pub fn ca_fingerprint(ca_pem: &str) -> String {
    hex::encode(Sha256::digest(ca_pem.as_bytes()))
}

fn io_err(context: String) -> impl FnOnce(std::io::Error) -> KubeError {
    move |source| KubeError::Io { context, source }
}

/// The record in `output_dir`, if there is one. One that cannot be read is an error that
/// names the file: guessing would launch every plugin a second time.
pub fn load(output_dir: &Path) -> Result<Option<RunRecord>, KubeError> {
    let path = output_dir.join(RECORD_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(format!("cannot read {}", path.display()))(e)),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| KubeError::RunRecord {
            path,
            reason: format!("it is damaged ({e}); remove it to start a new run in this directory"),
        })
}

/// Replaces the record in `output_dir` atomically and durably.
pub fn save(output_dir: &Path, record: &RunRecord) -> Result<(), KubeError> {
    let path = output_dir.join(RECORD_FILE);
    let tmp = output_dir.join(format!("{RECORD_FILE}.tmp"));
    let context = || format!("cannot write {}", path.display());
    std::fs::create_dir_all(output_dir).map_err(io_err(context()))?;
    let mut f = std::fs::File::create(&tmp).map_err(io_err(context()))?;
    f.write_all(&serde_json::to_vec(record).expect("a record is JSON"))
        .and_then(|()| f.sync_all())
        .map_err(io_err(context()))?;
    std::fs::rename(&tmp, &path).map_err(io_err(context()))?;
    std::fs::File::open(output_dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(context()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> RunRecord {
        RunRecord {
            uuid: "u".into(),
            ca_sha256: ca_fingerprint("pem"),
            plugins: vec![
                PluginRecord {
                    name: "e2e".into(),
                    nodes: vec![],
                    launch: Some(LaunchRecord::new(
                        "0123456789abcdef".into(),
                        time::macros::datetime!(2026-11-25 10:00 UTC),
                    )),
                },
                PluginRecord {
                    name: "logs".into(),
                    nodes: vec!["n1".into(), "n2".into()],
                    launch: None,
                },
            ],
            gathered: false,
        }
    }

    #[test]
    fn a_saved_record_loads_back_with_its_launch_times() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()).unwrap(), None);
        let r = record();
        save(dir.path(), &r).unwrap();
        let back = load(dir.path()).unwrap().unwrap();
        assert_eq!(back, r);
        assert_eq!(
            back.plugin("e2e")
                .unwrap()
                .launch
                .as_ref()
                .unwrap()
                .launched(),
            time::macros::datetime!(2026-11-25 10:00 UTC)
        );
        assert_eq!(
            back.sessions().into_iter().collect::<Vec<_>>(),
            ["0123456789abcdef"]
        );
        assert!(!dir.path().join(format!("{RECORD_FILE}.tmp")).exists());
    }

    #[test]
    fn a_damaged_record_is_an_error_that_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(RECORD_FILE), "{\"uuid\": ").unwrap();
        let e = load(dir.path()).unwrap_err().to_string();
        assert!(e.contains(RECORD_FILE), "{e}");
        assert!(e.contains("remove it to start a new run"), "{e}");
    }
}
