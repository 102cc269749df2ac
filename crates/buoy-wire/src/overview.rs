//! The run at a glance (Buoy only, `GET /api/v1/overview`): per plugin, counts instead of one
//! row per node, the newest progress message, a bounded list of errors and, once
//! post-processing ran, the `buoy results` summary. Its size depends on the number of plugins,
//! not of nodes, so the status page and `buoy status --watch` stay fast at 5,000 nodes. The
//! per-node detail is paged separately (`GET /api/v1/nodes`, [`NodePage`]).

use serde::{Deserialize, Serialize};

use crate::status::{self, Status, TarInfo};
use crate::ProgressUpdate;

/// Errors (and failed tests) an overview names per plugin; the rest are counted.
pub const NAMED_ERRORS: usize = 50;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Overview {
    /// The overall status, as in the status document.
    pub status: String,
    pub plugins: Vec<PluginOverview>,
    /// Set once the tarball is sealed (`GET /api/v1/tarball` serves it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tarball: Option<TarInfo>,
    /// Why sealing failed last, while it is tried again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seal_error: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginOverview {
    pub plugin: String,
    /// Results expected from this plugin (one per node, or one for a global plugin).
    pub expected: u64,
    /// Results stored.
    pub complete: u64,
    /// Error results stored (a failed plugin pod, a timeout).
    pub failed: u64,
    /// Those of `failed` that are the run's timeout (unknown when read from a status document).
    #[serde(default)]
    pub timed_out: u64,
    /// Results still to come (`expected - complete - failed`).
    pub remaining: u64,
    /// Progress summed over the plugin's nodes; `None` before any update.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<ProgressSummary>,
    /// Why results failed, and why the last upload of a key still open failed, first
    /// [`NAMED_ERRORS`] of them.
    #[serde(default)]
    pub errors: Vec<NodeError>,
    /// All such errors, named or not.
    #[serde(default)]
    pub errors_total: u64,
    /// The post-processed summary, once the run is past post-processing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub results: Option<ResultSummary>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgressSummary {
    pub completed: i64,
    pub total: i64,
    /// Failing tests reported so far, over every node.
    pub failures: u64,
    /// The first [`NAMED_FAILURES`] of their names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failing: Vec<String>,
    /// The newest message and where it came from.
    pub msg: String,
    pub node: String,
    pub timestamp: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeError {
    pub node: String,
    pub reason: String,
    /// The key is still open: the error is the last failed upload, and the worker may retry.
    #[serde(default)]
    pub retrying: bool,
}

/// A plugin's `buoy results` report, bounded.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResultSummary {
    /// `passed` or `failed`, as `buoy results` says it.
    pub status: String,
    pub total: i64,
    pub passed: i64,
    pub failed: i64,
    pub skipped: i64,
    /// Failed tests (`node: name` for per-node plugins), first [`NAMED_ERRORS`].
    pub failed_tests: Vec<String>,
    pub failed_tests_total: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One key as the overview needs it.
pub struct Row<'a> {
    pub plugin: &'a str,
    pub node: &'a str,
    /// `running`, `complete` or `failed` (the status document's per-entry status).
    pub status: &'a str,
    /// How many keys this row stands for (a rolled-up status row stands for several).
    pub weight: u64,
    pub progress: Option<&'a ProgressUpdate>,
    /// The error result's text, or the last failed upload's reason (then `retrying`).
    pub error: Option<(&'a str, bool)>,
}

/// Builds an overview from rows in status order; plugins appear in order of first sight.
#[derive(Debug, Default)]
pub struct OverviewBuilder {
    plugins: Vec<PluginOverview>,
}

impl OverviewBuilder {
    pub fn add(&mut self, row: Row<'_>) {
        let i = match self.plugins.iter().position(|p| p.plugin == row.plugin) {
            Some(i) => i,
            None => {
                self.plugins.push(PluginOverview {
                    plugin: row.plugin.to_string(),
                    ..Default::default()
                });
                self.plugins.len() - 1
            }
        };
        let p = &mut self.plugins[i];
        p.expected += row.weight;
        match row.status {
            status::COMPLETE => p.complete += row.weight,
            status::FAILED => p.failed += row.weight,
            _ => p.remaining += row.weight,
        }
        if let Some(pr) = row.progress {
            let s = p.progress.get_or_insert_with(ProgressSummary::default);
            s.completed = s.completed.saturating_add(pr.completed);
            s.total = s.total.saturating_add(pr.total);
            s.failures += pr.failures.len() as u64;
            for f in &pr.failures {
                if s.failing.len() < NAMED_FAILURES && !s.failing.contains(f) {
                    s.failing.push(f.clone());
                }
            }
            if pr.timestamp >= s.timestamp {
                s.timestamp = pr.timestamp.clone();
                s.msg = pr.msg.clone();
                s.node = row.node.to_string();
            }
        }
        if let Some((reason, retrying)) = row.error {
            if !retrying && reason == crate::TIMEOUT_ERROR_MESSAGE {
                p.timed_out += row.weight;
            }
            p.errors_total += 1;
            if p.errors.len() < NAMED_ERRORS {
                p.errors.push(NodeError {
                    node: row.node.to_string(),
                    reason: reason.to_string(),
                    retrying,
                });
            }
        }
    }

    /// Attaches `plugin`'s post-processed summary.
    pub fn set_results(&mut self, plugin: &str, results: ResultSummary) {
        if let Some(p) = self.plugins.iter_mut().find(|p| p.plugin == plugin) {
            p.results = Some(results);
        }
    }

    pub fn build(self, status: String, tarball: Option<TarInfo>) -> Overview {
        Overview {
            status,
            plugins: self.plugins,
            tarball,
            seal_error: None,
        }
    }
}

/// The number of keys a status row stands for: 1, or N for a rolled-up `N nodes` row.
fn weight_of(node: &str) -> u64 {
    node.strip_suffix(" nodes")
        .or_else(|| node.strip_suffix(" node"))
        .and_then(|n| n.parse().ok())
        .unwrap_or(1)
}

impl Overview {
    /// The overview a status document allows (error reasons are not in it): what
    /// `buoy status --watch` draws from a pod annotation, rolled up or not.
    pub fn from_status(s: &Status) -> Self {
        let mut b = OverviewBuilder::default();
        for p in s.plugins.iter().flatten() {
            b.add(Row {
                plugin: &p.plugin,
                node: &p.node,
                status: &p.status,
                weight: weight_of(&p.node),
                progress: p.progress.as_ref(),
                error: None,
            });
        }
        let sealed = s.status == status::COMPLETE && !s.tar_info.name.is_empty();
        let mut o = b.build(s.status.clone(), sealed.then(|| s.tar_info.clone()));
        o.seal_error = s.seal_error.clone();
        o
    }
}

/// One page of a plugin's nodes (`GET /api/v1/nodes?plugin=P&offset=O&limit=L&state=S`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodePage {
    pub plugin: String,
    /// Nodes matching the filter, on every page.
    pub total: u64,
    pub offset: u64,
    pub nodes: Vec<NodeRow>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRow {
    pub node: String,
    pub status: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub result_status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<ProgressSummary>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Failing tests named in a plugin's progress summary; the rest are counted.
pub const NAMED_FAILURES: usize = 20;

/// Largest page `GET /api/v1/nodes` returns.
pub const MAX_NODE_PAGE: u64 = 500;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PluginStatus;

    fn row(plugin: &str, node: &str, status: &str) -> PluginStatus {
        PluginStatus::new(plugin, node, status)
    }

    #[test]
    fn counts_rolled_up_rows_by_their_node_count() {
        let mut with_progress = row("e2e", "global", "running");
        with_progress.progress = Some(ProgressUpdate {
            msg: "old".into(),
            timestamp: "2026-01-01T00:00:00Z".into(),
            completed: 3,
            total: 10,
            failures: vec!["t1".into()],
            ..Default::default()
        });
        let s = Status {
            plugins: Some(vec![
                row("logs", "4998 nodes", "complete"),
                row("logs", "1 node", "failed"),
                row("logs", "n1", "running"),
                with_progress,
            ]),
            status: "running".into(),
            tar_info: TarInfo::default(),
            interrupted: None,
            seal_error: None,
        };
        let o = Overview::from_status(&s);
        assert_eq!(o.plugins.len(), 2);
        let logs = &o.plugins[0];
        assert_eq!(
            (logs.expected, logs.complete, logs.failed, logs.remaining),
            (5000, 4998, 1, 1)
        );
        let e2e = &o.plugins[1];
        let pr = e2e.progress.as_ref().unwrap();
        assert_eq!((pr.completed, pr.total, pr.failures), (3, 10, 1));
        assert_eq!(pr.msg, "old");
        assert!(o.tarball.is_none());
    }

    #[test]
    fn errors_are_named_up_to_the_cap_and_all_counted() {
        let mut b = OverviewBuilder::default();
        for i in 0..(NAMED_ERRORS + 7) {
            let node = format!("n{i}");
            b.add(Row {
                plugin: "p",
                node: &node,
                status: "failed",
                weight: 1,
                progress: None,
                error: Some(("pod failed", false)),
            });
        }
        let o = b.build("running".into(), None);
        assert_eq!(o.plugins[0].errors.len(), NAMED_ERRORS);
        assert_eq!(o.plugins[0].errors_total, NAMED_ERRORS as u64 + 7);
        assert_eq!(o.plugins[0].failed, NAMED_ERRORS as u64 + 7);
    }
}
