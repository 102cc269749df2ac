//! The status document (compat §5.1): the JSON that `sonobuoy status` reads from the pod
//! annotation and that `GET /api/v1/status` serves, and the v0.57 overall-status rule.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::progress::ProgressUpdate;
use crate::timefmt::GO_ZERO_TIME;

pub const RUNNING: &str = "running";
pub const POST_PROCESSING: &str = "post-processing";
pub const COMPLETE: &str = "complete";
pub const FAILED: &str = "failed";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub plugins: Option<Vec<PluginStatus>>,
    pub status: String,
    #[serde(rename = "tar-info")]
    pub tar_info: TarInfo,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginStatus {
    pub plugin: String,
    pub node: String,
    pub status: String,
    #[serde(rename = "result-status", default)]
    pub result_status: String,
    #[serde(rename = "result-counts", default)]
    pub result_counts: Option<BTreeMap<String, i64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<ProgressUpdate>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TarInfo {
    pub name: String,
    pub created: String,
    pub sha256: String,
    pub size: i64,
}

impl Default for TarInfo {
    fn default() -> Self {
        Self {
            name: String::new(),
            created: GO_ZERO_TIME.to_string(),
            sha256: String::new(),
            size: 0,
        }
    }
}

impl Status {
    /// The very first status of a run: no plugins yet, running.
    pub fn initial() -> Self {
        Self {
            plugins: None,
            status: RUNNING.into(),
            tar_info: TarInfo::default(),
        }
    }
}

/// The v0.57 overall status of a set of per-plugin statuses: any `running` or `failed` entry
/// keeps the run `running`; all complete (or none) means `post-processing`. Plugin failures never
/// make the run `failed`, which `sonobuoy run --wait` would treat as fatal.
pub fn overall_status<'a>(
    entries: impl IntoIterator<Item = &'a str>,
) -> Result<&'static str, String> {
    let mut out = POST_PROCESSING;
    for s in entries {
        match s {
            COMPLETE => {}
            RUNNING | FAILED => out = RUNNING,
            other => return Err(format!("unknown status {other}")),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overall_status_follows_v057() {
        assert_eq!(overall_status([]), Ok(POST_PROCESSING));
        assert_eq!(overall_status([COMPLETE, COMPLETE]), Ok(POST_PROCESSING));
        assert_eq!(overall_status([COMPLETE, RUNNING]), Ok(RUNNING));
        assert_eq!(overall_status([RUNNING, FAILED, COMPLETE]), Ok(RUNNING));
        assert_eq!(overall_status([FAILED]), Ok(RUNNING));
        assert!(overall_status(["unknown"]).is_err());
    }

    #[test]
    fn initial_status_has_sonobuoy_shape() {
        let s = serde_json::to_string(&Status::initial()).unwrap();
        assert_eq!(
            s,
            r#"{"plugins":null,"status":"running","tar-info":{"name":"","created":"0001-01-01T00:00:00Z","sha256":"","size":0}}"#
        );
    }

    #[test]
    fn plugin_entry_always_has_result_fields() {
        let p = PluginStatus {
            plugin: "e2e".into(),
            node: "global".into(),
            status: RUNNING.into(),
            result_status: String::new(),
            result_counts: None,
            progress: None,
        };
        assert_eq!(
            serde_json::to_string(&p).unwrap(),
            r#"{"plugin":"e2e","node":"global","status":"running","result-status":"","result-counts":null}"#
        );
    }
}
