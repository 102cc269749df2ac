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
    /// Buoy's: why a run stopped before every result arrived (its `status` is then `failed`,
    /// which Sonobuoy's readers show as a failed run). Sonobuoy's readers ignore the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interrupted: Option<String>,
    /// Buoy's: why sealing the run failed last (it is tried again, and the run stays
    /// `post-processing` meanwhile). Sonobuoy's readers ignore the key.
    #[serde(
        rename = "seal-error",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub seal_error: Option<String>,
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

impl PluginStatus {
    /// How many nodes this row stands for: `N` for a rolled-up row named `N nodes`, else one
    /// (a node name never holds a space).
    pub fn nodes(&self) -> u64 {
        self.node
            .strip_suffix(" nodes")
            .or_else(|| self.node.strip_suffix(" node"))
            .and_then(|n| n.parse().ok())
            .unwrap_or(1)
    }

    /// An entry with no result or progress yet.
    pub fn new(plugin: &str, node: &str, status: &str) -> Self {
        Self {
            plugin: plugin.into(),
            node: node.into(),
            status: status.into(),
            result_status: String::new(),
            result_counts: None,
            progress: None,
        }
    }
}

impl Status {
    /// The run will not change any more: it is complete, or its aggregator failed.
    pub fn is_final(&self) -> bool {
        matches!(self.status.as_str(), COMPLETE | FAILED)
    }

    /// The very first status of a run: no plugins yet, running.
    pub fn initial() -> Self {
        Self {
            plugins: None,
            status: RUNNING.into(),
            tar_info: TarInfo::default(),
            interrupted: None,
            seal_error: None,
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

/// The largest status annotation Buoy writes (design departure 7). Kubernetes allows 256 KiB
/// for all of a pod's annotations together.
pub const ANNOTATION_LIMIT: usize = 64 * 1024;

/// How much of the per-node detail an encoded status kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Detail {
    /// Exactly Sonobuoy's shape, one row per expected result.
    Full,
    /// Plugins with several rows are rolled up: one row per (status, result-status) with the
    /// node count as its node name, plus a few failed nodes by name.
    RolledUp,
    /// One row per (plugin, status, result-status), progress reduced to its counts.
    Summary,
    /// The summary with rows dropped from the end until it fits.
    Truncated,
}

/// Failed nodes of a plugin still named individually in a rolled-up status.
const NAMED_FAILURES: usize = 20;

fn rolled_node_name(n: usize) -> String {
    if n == 1 {
        "1 node".into()
    } else {
        format!("{n} nodes")
    }
}

/// The progress of a rolled-up row counts nodes, not the plugin's own items: `total` is the
/// row's nodes and `completed` those done (the row is `complete`, or the node's last update
/// says it finished every item). Item counts cannot be summed across nodes that report
/// different totals, or none: 50 finished nodes of which 12 had sent one update read `12 of
/// 12`. The message says what the numbers are, then the newest node message.
fn sum_progress<'a>(
    plugin: &str,
    node: &str,
    status: &str,
    rows: impl Iterator<Item = &'a PluginStatus>,
) -> Option<ProgressUpdate> {
    let (mut nodes, mut done, mut reporting) = (0i64, 0i64, 0i64);
    let mut newest: Option<&ProgressUpdate> = None;
    for r in rows {
        nodes += 1;
        let finished = r
            .progress
            .as_ref()
            .is_some_and(|p| p.total > 0 && p.completed >= p.total);
        if status == COMPLETE || finished {
            done += 1;
        }
        if let Some(p) = &r.progress {
            reporting += 1;
            if newest.is_none_or(|n| p.timestamp >= n.timestamp) {
                newest = Some(p);
            }
        }
    }
    let newest = newest?;
    let mut msg = format!("{done} of {nodes} nodes done; {reporting} sent progress");
    if !newest.msg.is_empty() {
        msg.push_str("; newest: ");
        msg.push_str(&newest.msg);
    }
    Some(ProgressUpdate {
        name: plugin.to_string(),
        node: node.to_string(),
        timestamp: newest.timestamp.clone(),
        msg,
        total: nodes,
        completed: done,
        ..Default::default()
    })
}

fn sum_counts<'a>(rows: impl Iterator<Item = &'a PluginStatus>) -> Option<BTreeMap<String, i64>> {
    let mut out: Option<BTreeMap<String, i64>> = None;
    for c in rows.filter_map(|r| r.result_counts.as_ref()) {
        let o = out.get_or_insert_with(BTreeMap::new);
        for (k, v) in c {
            *o.entry(k.clone()).or_default() += v;
        }
    }
    out
}

/// Groups `rows` by (plugin, status, result-status), in first-seen order, into one row each.
fn group_rows(rows: &[&PluginStatus], keep_lists: bool) -> Vec<PluginStatus> {
    let mut groups: Vec<(String, String, String, Vec<&PluginStatus>)> = Vec::new();
    for r in rows {
        match groups
            .iter_mut()
            .find(|g| g.0 == r.plugin && g.1 == r.status && g.2 == r.result_status)
        {
            Some(g) => g.3.push(r),
            None => groups.push((
                r.plugin.clone(),
                r.status.clone(),
                r.result_status.clone(),
                vec![r],
            )),
        }
    }
    groups
        .into_iter()
        .map(|(plugin, status, result_status, members)| {
            if members.len() == 1 && keep_lists {
                return (*members[0]).clone();
            }
            let node = if members.len() == 1 {
                members[0].node.clone()
            } else {
                rolled_node_name(members.len())
            };
            // A row of one node keeps that node's own progress, lists aside.
            let progress = if members.len() == 1 {
                members[0].progress.as_ref().map(|p| ProgressUpdate {
                    errors: vec![],
                    failures: vec![],
                    appendfailing: vec![],
                    ..p.clone()
                })
            } else {
                sum_progress(&plugin, &node, &status, members.iter().copied())
            };
            PluginStatus {
                result_counts: sum_counts(members.iter().copied()),
                plugin,
                node,
                status,
                result_status,
                progress,
            }
        })
        .collect()
}

impl Status {
    /// The status as annotation JSON of at most `limit` bytes (design departure 7). Up to the
    /// limit it is exactly Sonobuoy's shape; past it, rows are rolled up (see [`Detail`]), never
    /// below `min_detail`. The overall status and `tar-info` are always kept, so
    /// `sonobuoy status` and `sonobuoy wait` still read the run right.
    pub fn to_bounded_json(&self, limit: usize, min_detail: Detail) -> (String, Detail) {
        let enc = |s: &Status| serde_json::to_string(s).expect("a status always encodes");
        if min_detail <= Detail::Full {
            let full = enc(self);
            if full.len() <= limit {
                return (full, Detail::Full);
            }
        }
        let rows: Vec<&PluginStatus> = self.plugins.iter().flatten().collect();
        // No row left is the minimal form: the overall status and tar-info alone.
        let with_rows = |plugins: Vec<PluginStatus>| Status {
            plugins: (!plugins.is_empty()).then_some(plugins),
            status: self.status.clone(),
            tar_info: self.tar_info.clone(),
            interrupted: self.interrupted.clone(),
            seal_error: self.seal_error.clone(),
        };
        if min_detail <= Detail::RolledUp {
            let mut plugins: Vec<PluginStatus> = Vec::new();
            let mut names: Vec<&str> = Vec::new();
            for r in &rows {
                if !names.contains(&r.plugin.as_str()) {
                    names.push(&r.plugin);
                }
            }
            for name in names {
                let mine: Vec<&PluginStatus> =
                    rows.iter().copied().filter(|r| r.plugin == name).collect();
                if mine.len() == 1 {
                    plugins.push(mine[0].clone());
                    continue;
                }
                let named: Vec<&PluginStatus> = mine
                    .iter()
                    .copied()
                    .filter(|r| r.status == FAILED)
                    .take(NAMED_FAILURES)
                    .collect();
                let rest: Vec<&PluginStatus> = mine
                    .iter()
                    .copied()
                    .filter(|r| !named.iter().any(|n| std::ptr::eq(*n, *r)))
                    .collect();
                plugins.extend(named.iter().map(|r| PluginStatus {
                    progress: None,
                    ..(*r).clone()
                }));
                plugins.extend(group_rows(&rest, false));
            }
            let s = enc(&with_rows(plugins));
            if s.len() <= limit {
                return (s, Detail::RolledUp);
            }
        }
        let mut summary = group_rows(&rows, false);
        for r in &mut summary {
            if let Some(p) = r.progress.as_mut() {
                p.msg.clear();
            }
        }
        let s = enc(&with_rows(summary.clone()));
        if s.len() <= limit {
            return (s, Detail::Summary);
        }
        while !summary.is_empty() {
            summary.pop();
            let s = enc(&with_rows(summary.clone()));
            if s.len() <= limit {
                return (s, Detail::Truncated);
            }
        }
        (enc(&with_rows(Vec::new())), Detail::Truncated)
    }
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

    fn big_status(nodes: usize, plugins: &[&str]) -> Status {
        let mut rows = Vec::new();
        for p in plugins {
            for n in 0..nodes {
                let status = match n % 50 {
                    0 => FAILED,
                    1..=30 => COMPLETE,
                    _ => RUNNING,
                };
                let node = format!("ip-10-0-{}-{}.eu-west-1.compute.internal", n / 256, n % 256);
                rows.push(PluginStatus {
                    plugin: p.to_string(),
                    node: node.clone(),
                    status: status.into(),
                    result_status: String::new(),
                    result_counts: None,
                    progress: Some(ProgressUpdate {
                        name: p.to_string(),
                        node,
                        timestamp: "2026-11-24T10:00:00.123456789Z".into(),
                        msg: "collecting the node's journal".into(),
                        total: 10,
                        completed: 4,
                        failures: vec!["a failing check with a long name".into()],
                        ..Default::default()
                    }),
                });
            }
        }
        Status {
            plugins: Some(rows),
            status: RUNNING.into(),
            tar_info: TarInfo::default(),
            interrupted: None,
            seal_error: None,
        }
    }

    #[test]
    fn a_status_that_fits_is_written_exactly() {
        let s = big_status(3, &["systemd-logs"]);
        let (json, detail) = s.to_bounded_json(ANNOTATION_LIMIT, Detail::Full);
        assert_eq!(detail, Detail::Full);
        assert_eq!(json, serde_json::to_string(&s).unwrap());
    }

    #[test]
    fn status_for_5000_nodes_and_3_plugins_stays_under_64_kib_and_decodes() {
        let s = big_status(5000, &["systemd-logs", "node-checks", "cis-benchmark"]);
        let full = serde_json::to_string(&s).unwrap().len();
        assert!(
            full > 10 * ANNOTATION_LIMIT,
            "the full status is {full} bytes"
        );
        let (json, detail) = s.to_bounded_json(ANNOTATION_LIMIT, Detail::Full);
        assert!(json.len() <= ANNOTATION_LIMIT, "{} bytes", json.len());
        assert_eq!(detail, Detail::RolledUp);
        let back: Status = serde_json::from_str(&json).unwrap();
        assert_eq!(back.status, RUNNING);
        // Every row keeps Sonobuoy's keys, so `sonobuoy status` decodes it.
        let raw: serde_json::Value = serde_json::from_str(&json).unwrap();
        for row in raw["plugins"].as_array().unwrap() {
            for k in ["plugin", "node", "status", "result-status", "result-counts"] {
                assert!(row.get(k).is_some(), "row without {k}: {row}");
            }
        }
        let rows = back.plugins.unwrap();
        // The roll-up still accounts for every node of every plugin.
        for p in ["systemd-logs", "node-checks", "cis-benchmark"] {
            let failed_named = rows
                .iter()
                .filter(|r| r.plugin == p && r.status == FAILED && !r.node.ends_with("nodes"))
                .count();
            let rolled: usize = rows
                .iter()
                .filter(|r| r.plugin == p && r.node.ends_with(" nodes"))
                .map(|r| r.nodes() as usize)
                .sum();
            assert_eq!(failed_named, NAMED_FAILURES);
            assert_eq!(failed_named + rolled, 5000, "{p}");
        }
        let running = rows
            .iter()
            .find(|r| r.plugin == "node-checks" && r.status == RUNNING)
            .unwrap();
        let prog = running.progress.as_ref().unwrap();
        // Its progress counts nodes: 1,900 running, none through its 10 items yet.
        assert_eq!((prog.total, prog.completed), (1900, 0));
    }

    #[test]
    fn a_tighter_limit_falls_back_to_the_summary_and_keeps_the_overall_status() {
        let mut s = big_status(5000, &["a", "b", "c"]);
        s.status = COMPLETE.into();
        let (json, detail) = s.to_bounded_json(4096, Detail::Summary);
        assert!(json.len() <= 4096);
        assert_eq!(detail, Detail::Summary);
        let back: Status = serde_json::from_str(&json).unwrap();
        assert_eq!(back.status, COMPLETE);
        assert_eq!(back.plugins.unwrap().len(), 9);
        let (json, detail) = s.to_bounded_json(400, Detail::Summary);
        assert!(json.len() <= 400);
        assert_eq!(detail, Detail::Truncated);
        assert_eq!(
            serde_json::from_str::<Status>(&json).unwrap().status,
            COMPLETE
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

    #[test]
    fn a_rolled_up_row_counts_nodes_done_not_summed_items() {
        let row = |n: usize, status: &str, progress: Option<(i64, i64)>| PluginStatus {
            progress: progress.map(|(completed, total)| ProgressUpdate {
                name: "logs".into(),
                node: format!("n{n}"),
                timestamp: format!("2026-11-24T10:00:{:02}Z", n % 60),
                msg: format!("node {n} says hi"),
                total,
                completed,
                ..Default::default()
            }),
            ..PluginStatus::new("logs", &format!("n{n}"), status)
        };
        let mut rows = Vec::new();
        // 50 finished nodes, 12 of which sent one update each: the case that read `12 of 12`.
        for n in 0..50 {
            rows.push(row(n, COMPLETE, (n < 12).then_some((1, 1))));
        }
        // 30 running nodes: 10 say they finished their items, 5 are part way, 15 sent nothing.
        for n in 50..80 {
            let p = match n {
                50..=59 => Some((7, 7)),
                60..=64 => Some((2, 7)),
                _ => None,
            };
            rows.push(row(n, RUNNING, p));
        }
        let s = Status {
            plugins: Some(rows),
            status: RUNNING.into(),
            tar_info: TarInfo::default(),
            interrupted: None,
            seal_error: None,
        };
        let (json, detail) = s.to_bounded_json(2_000, Detail::RolledUp);
        assert_eq!(detail, Detail::RolledUp);
        let back: Status = serde_json::from_str(&json).unwrap();
        let rows = back.plugins.unwrap();
        let done = rows.iter().find(|r| r.status == COMPLETE).unwrap();
        assert_eq!((done.node.as_str(), done.nodes()), ("50 nodes", 50));
        let p = done.progress.as_ref().unwrap();
        assert_eq!((p.completed, p.total), (50, 50));
        assert_eq!(
            p.msg,
            "50 of 50 nodes done; 12 sent progress; newest: node 11 says hi"
        );
        let running = rows.iter().find(|r| r.status == RUNNING).unwrap();
        assert_eq!(running.nodes(), 30);
        let p = running.progress.as_ref().unwrap();
        assert_eq!((p.completed, p.total), (10, 30));
        assert!(
            p.msg.starts_with("10 of 30 nodes done; 15 sent progress"),
            "{}",
            p.msg
        );
    }
}
