//! What `buoy results` prints, and what `buoy run` and the aggregator print when they finish:
//! per plugin the status, counts of leaves by status and the failed tests (mode `report`), one
//! line per leaf (`detailed`), or the whole tree (`dump`); as text, JSON or YAML.

use std::collections::BTreeMap;
use std::io::{self, Write};

use serde::Serialize;

use crate::archive::Archive;
use crate::item::{self, Item, TYPE_NODE};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    #[default]
    Report,
    Detailed,
    Dump,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    #[default]
    Text,
    Json,
    Yaml,
}

/// A failed (or timed-out) leaf.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FailedTest {
    pub name: String,
    /// The node item it sits under (DaemonSet plugins).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    pub status: String,
}

/// One plugin's summary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PluginReport {
    pub plugin: String,
    pub status: String,
    pub total: i64,
    pub passed: i64,
    /// `failed` plus `timeout`, as `sonobuoy results` counts them.
    pub failed: i64,
    pub skipped: i64,
    /// Leaves by status, every status.
    pub counts: BTreeMap<String, i64>,
    #[serde(rename = "failed-tests")]
    pub failed_tests: Vec<FailedTest>,
    /// Why the plugin's results could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn failing(status: &str) -> bool {
    item::is_failure(status) || status == item::UNKNOWN
}

impl PluginReport {
    pub fn from_item(plugin: &str, root: &Item) -> Self {
        let counts = root.leaf_counts();
        let get = |k: &str| counts.get(k).copied().unwrap_or(0);
        let mut failed_tests = Vec::new();
        collect_failed(root, None, &mut failed_tests);
        Self {
            plugin: plugin.to_string(),
            status: root.status.clone(),
            total: counts.values().sum(),
            passed: get(item::PASSED),
            failed: get(item::FAILED) + get(item::TIMEOUT),
            skipped: get(item::SKIPPED),
            counts,
            failed_tests,
            error: None,
        }
    }

    pub fn unreadable(plugin: &str, error: String) -> Self {
        Self {
            plugin: plugin.to_string(),
            status: item::UNKNOWN.into(),
            total: 0,
            passed: 0,
            failed: 0,
            skipped: 0,
            counts: BTreeMap::new(),
            failed_tests: vec![],
            error: Some(error),
        }
    }

    /// No failed, timed-out or unknown result anywhere, and at least one result.
    pub fn passed(&self) -> bool {
        let status_ok = match item::parse_counts(&self.status) {
            Some(c) => c.iter().all(|(k, n)| *n == 0 || !failing(k)),
            None => !failing(&self.status),
        };
        self.error.is_none()
            && self.total > 0
            && status_ok
            && self.counts.iter().all(|(k, n)| *n == 0 || !failing(k))
    }

    /// The text block `sonobuoy results` prints for a plugin, with any custom statuses after
    /// the built-in ones.
    pub fn write_text(&self, out: &mut impl Write) -> io::Result<()> {
        writeln!(out, "Plugin: {}", self.plugin)?;
        if let Some(e) = &self.error {
            return writeln!(out, "Error: {e}");
        }
        writeln!(out, "Status: {}", self.status)?;
        writeln!(out, "Total: {}", self.total)?;
        writeln!(out, "Passed: {}", self.passed)?;
        writeln!(out, "Failed: {}", self.failed)?;
        writeln!(out, "Skipped: {}", self.skipped)?;
        for (k, n) in &self.counts {
            if ![item::PASSED, item::FAILED, item::TIMEOUT, item::SKIPPED].contains(&k.as_str()) {
                writeln!(out, "{k}: {n}")?;
            }
        }
        if !self.failed_tests.is_empty() {
            writeln!(out, "\nFailed tests:")?;
            for t in &self.failed_tests {
                match &t.node {
                    Some(n) => writeln!(out, "{n}: {}", t.name)?,
                    None => writeln!(out, "{}", t.name)?,
                }
            }
        }
        Ok(())
    }
}

fn collect_failed(i: &Item, node: Option<&str>, out: &mut Vec<FailedTest>) {
    let node = if i.meta.get("type").map(String::as_str) == Some(TYPE_NODE) {
        Some(i.name.as_str())
    } else {
        node
    };
    if i.is_leaf() {
        if item::is_failure(&i.status) {
            out.push(FailedTest {
                name: i.name.clone(),
                node: node.map(str::to_string),
                status: i.status.clone(),
            });
        }
        return;
    }
    for c in &i.items {
        collect_failed(c, node, out);
    }
}

/// Reports for items already in memory (the aggregator's own trees).
pub fn write_reports(
    reports: &[PluginReport],
    format: Format,
    out: &mut impl Write,
) -> io::Result<()> {
    match format {
        Format::Text => {
            for (i, r) in reports.iter().enumerate() {
                if i > 0 {
                    writeln!(out)?;
                }
                r.write_text(out)?;
            }
            Ok(())
        }
        Format::Json => {
            serde_json::to_writer_pretty(&mut *out, reports).map_err(io::Error::other)?;
            writeln!(out)
        }
        Format::Yaml => {
            let y = serde_yaml_ng::to_string(reports).map_err(io::Error::other)?;
            out.write_all(y.as_bytes())
        }
    }
}

/// What to show from an archive.
#[derive(Debug, Clone, Default)]
pub struct Query {
    /// Only this plugin; default every plugin the archive lists.
    pub plugin: Option<String>,
    /// Start at the first item with this name (a node, a file, a suite).
    pub node: Option<String>,
    pub mode: Mode,
    pub format: Format,
}

/// Prints what `query` asks for and returns whether every plugin shown passed.
pub fn show(archive: &Archive, query: &Query, out: &mut impl Write) -> io::Result<bool> {
    let plugins: Vec<String> = match &query.plugin {
        Some(p) => vec![p.clone()],
        None => archive.plugins.clone(),
    };
    if plugins.is_empty() {
        return Err(io::Error::other("the archive lists no plugins"));
    }
    let mut trees: Vec<(String, Result<Item, String>)> = Vec::new();
    let node = query.node.as_deref().unwrap_or("");
    for p in &plugins {
        let tree = match archive.results(p) {
            Ok(root) => match root.find(node) {
                Some(i) => Ok(i.clone()),
                // Asked for one node across every plugin: plugins without it are not shown.
                None if query.plugin.is_none() => continue,
                None => Err(format!("plugin {p}: no item named {node:?}")),
            },
            Err(e) => Err(e),
        };
        trees.push((p.clone(), tree));
    }
    if trees.is_empty() {
        return Err(io::Error::other(format!(
            "no plugin has an item named {node:?}"
        )));
    }
    let reports: Vec<PluginReport> = trees
        .iter()
        .map(|(p, t)| match t {
            Ok(i) => PluginReport::from_item(p, i),
            Err(e) => PluginReport::unreadable(p, e.clone()),
        })
        .collect();
    match query.mode {
        Mode::Report => write_reports(&reports, query.format, out)?,
        Mode::Dump => dump(&trees, query.format, out)?,
        Mode::Detailed => detailed(archive, &trees, out)?,
    }
    Ok(reports.iter().all(PluginReport::passed))
}

fn dump(
    trees: &[(String, Result<Item, String>)],
    format: Format,
    out: &mut impl Write,
) -> io::Result<()> {
    let ok: Vec<&Item> = trees.iter().filter_map(|(_, t)| t.as_ref().ok()).collect();
    for (_, t) in trees {
        if let Err(e) = t {
            eprintln!("buoy: {e}");
        }
    }
    match format {
        Format::Json => {
            serde_json::to_writer_pretty(&mut *out, &ok).map_err(io::Error::other)?;
            writeln!(out)
        }
        Format::Text | Format::Yaml => {
            for (i, t) in ok.iter().enumerate() {
                if i > 0 {
                    writeln!(out, "---")?;
                }
                let y = serde_yaml_ng::to_string(t).map_err(io::Error::other)?;
                out.write_all(y.as_bytes())?;
            }
            Ok(())
        }
    }
}

/// One line per leaf: a JSON object with `meta.path` (the names above it, `|`-joined), or,
/// for a leaf that stands for a file, the path then the file's contents (as Sonobuoy does).
fn detailed(
    archive: &Archive,
    trees: &[(String, Result<Item, String>)],
    out: &mut impl Write,
) -> io::Result<()> {
    // Every leaf with its path and, for a leaf that stands for a file, the file's archive path.
    let mut leaves: Vec<(String, &Item, Option<String>)> = Vec::new();
    for (p, t) in trees {
        match t {
            Ok(root) => for_leaves(root, &mut vec![], &mut |path, leaf| {
                let file = leaf
                    .meta
                    .get("file")
                    .map(|f| format!("plugins/{p}/{}", f.replace('\\', "/")));
                leaves.push((path.join("|"), leaf, file));
            }),
            Err(e) => eprintln!("buoy: {e}"),
        }
    }
    let files: Vec<String> = leaves.iter().filter_map(|l| l.2.clone()).collect();
    let tmp = tempfile::tempdir()?;
    if !files.is_empty() {
        archive.extract_files(&files, tmp.path())?;
    }
    for (path, leaf, file) in leaves {
        match file {
            Some(rel) => {
                write!(out, "{path}|{} ", leaf.name)?;
                match std::fs::File::open(tmp.path().join(&rel)) {
                    Ok(mut f) => {
                        io::copy(&mut f, out)?;
                    }
                    Err(_) => writeln!(out, "(file {rel} is not in the archive)")?,
                }
            }
            None => {
                let mut l = leaf.clone();
                l.meta.insert("path".into(), path);
                serde_json::to_writer(&mut *out, &l).map_err(io::Error::other)?;
                writeln!(out)?;
            }
        }
    }
    Ok(())
}

fn for_leaves<'a>(i: &'a Item, path: &mut Vec<&'a str>, f: &mut impl FnMut(&[&str], &'a Item)) {
    if i.is_leaf() {
        f(path, i);
        return;
    }
    path.push(&i.name);
    for c in &i.items {
        for_leaves(c, path, f);
    }
    path.pop();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> Item {
        let mut root = Item::new("ds", "");
        let mut n1 = Item::new("n1", "").with_meta("type", TYPE_NODE);
        n1.items.push(Item::new("t1", item::PASSED));
        n1.items.push(Item::new("t2", item::FAILED));
        let mut n2 = Item::new("n2", "").with_meta("type", TYPE_NODE);
        n2.items.push(Item::new("t3", "custom"));
        n2.items.push(Item::new("t4", item::SKIPPED));
        root.items = vec![n1, n2];
        item::roll_up(&mut root);
        root
    }

    #[test]
    fn the_text_report_lists_counts_custom_statuses_and_failed_tests_by_node() {
        let r = PluginReport::from_item("ds", &tree());
        let mut out = Vec::new();
        r.write_text(&mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "Plugin: ds\nStatus: custom: 1, failed: 1, passed: 1, skipped: 1\nTotal: 4\nPassed: 1\nFailed: 1\nSkipped: 1\ncustom: 1\n\nFailed tests:\nn1: t2\n"
        );
        assert!(!r.passed());
    }

    #[test]
    fn passing_needs_results_and_no_failure_or_unknown() {
        let mut root = Item::new("p", "");
        root.items.push(Item::new("a", item::PASSED));
        root.items.push(Item::new("b", item::SKIPPED));
        item::roll_up(&mut root);
        assert!(PluginReport::from_item("p", &root).passed());
        root.items.push(Item::new("c", ""));
        item::roll_up(&mut root);
        assert!(!PluginReport::from_item("p", &root).passed());
        let mut empty = Item::new("p", "");
        item::roll_up(&mut empty);
        assert!(!PluginReport::from_item("p", &empty).passed());
        assert!(!PluginReport::unreadable("p", "x".into()).passed());
    }
}
