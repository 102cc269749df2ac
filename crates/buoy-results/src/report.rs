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
    /// the built-in ones and failed tests without Ginkgo's `[It]` prefix (as v0.57 prints
    /// them). `by_node` names each failure's node (`node: test`), a Buoy extension.
    pub fn write_text(&self, out: &mut impl Write, by_node: bool) -> io::Result<()> {
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
            if by_node {
                for t in &self.failed_tests {
                    let name = t.name.strip_prefix("[It]").unwrap_or(&t.name);
                    match &t.node {
                        Some(n) => writeln!(out, "{n}: {name}")?,
                        None => writeln!(out, "{name}")?,
                    }
                }
            } else {
                for (name, times) in self.failed_names() {
                    match times {
                        1 => writeln!(out, "{name}")?,
                        n => writeln!(out, "{name} ({n} times)")?,
                    }
                }
            }
        }
        Ok(())
    }

    /// The failed tests' names in order of first appearance, each with how often it failed:
    /// 5,000 nodes timing out are one line, not 5,000 identical ones.
    pub fn failed_names(&self) -> Vec<(&str, usize)> {
        let mut index: std::collections::HashMap<&str, usize> = Default::default();
        let mut out: Vec<(&str, usize)> = Vec::new();
        for t in &self.failed_tests {
            let name = t.name.strip_prefix("[It]").unwrap_or(&t.name);
            match index.get(name) {
                Some(&i) => out[i].1 += 1,
                None => {
                    index.insert(name, out.len());
                    out.push((name, 1));
                }
            }
        }
        out
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
                r.write_text(out, true)?;
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
    /// Only this plugin; default every plugin the archive lists, then the cluster health.
    pub plugin: Option<String>,
    /// Start at the first item with this name (a node, a file, a suite).
    pub node: Option<String>,
    pub mode: Mode,
    pub format: Format,
    /// Detailed mode: print a file's contents without its path prefix (`-s`).
    pub skip_prefix: bool,
    /// Report mode: name each failed test's node (a Buoy extension).
    pub failed_by_node: bool,
}

/// What `show` found.
#[derive(Debug, Clone, Default)]
pub struct Shown {
    /// Every plugin shown has results and none failed, timed out or is unknown.
    pub passed: bool,
    /// What could not be shown (said on stderr by the caller; Sonobuoy exits 1 for these).
    pub errors: Vec<String>,
    /// Worth saying, but no failure (a local or standalone run's archive has no cluster health).
    pub notes: Vec<String>,
}

/// Prints what `query` asks for. Text output is what `sonobuoy results` prints for the same
/// query, byte for byte: a blank line between plugins, the cluster health section last when
/// no plugin is named, dump mode copying each `sonobuoy_results.yaml` as stored. JSON and YAML
/// are Buoy's own.
pub fn show(archive: &Archive, query: &Query, out: &mut impl Write) -> io::Result<Shown> {
    let plugins: Vec<String> = match &query.plugin {
        Some(p) => vec![p.clone()],
        None => archive.plugins.clone(),
    };
    if plugins.is_empty() {
        return Err(io::Error::other("the archive lists no plugins"));
    }
    let node = query.node.as_deref().unwrap_or("");
    let mut errors = Vec::new();
    let mut notes = Vec::new();
    // Each plugin in order: its (sub)tree, or why it has none.
    let mut found: Vec<(String, Result<Item, String>)> = Vec::new();
    for p in &plugins {
        match archive.results(p) {
            Ok(root) => match root.find(node) {
                Some(i) => found.push((p.clone(), Ok(i.clone()))),
                None => {
                    let e = format!("plugin {p}: node named {node:?} not found");
                    errors.push(e.clone());
                    // With no plugin named, a plugin without the item is only left out.
                    if query.plugin.is_some() {
                        found.push((p.clone(), Err(e)));
                    }
                }
            },
            Err(e) => {
                errors.push(e.clone());
                found.push((p.clone(), Err(e)));
            }
        }
    }
    let tree_of = |p: &str| {
        found
            .iter()
            .find(|(q, _)| q == p)
            .and_then(|(_, t)| t.as_ref().ok())
    };
    let reports: Vec<PluginReport> = found
        .iter()
        .map(|(p, t)| match t {
            Ok(i) => PluginReport::from_item(p, i),
            Err(e) => PluginReport::unreadable(p, e.clone()),
        })
        .collect();
    let passed = !reports.is_empty() && reports.iter().all(PluginReport::passed);
    match (query.mode, query.format) {
        (Mode::Report, Format::Json | Format::Yaml) => write_reports(&reports, query.format, out)?,
        (Mode::Dump, Format::Json | Format::Yaml) => {
            let items: Vec<&Item> = found.iter().filter_map(|(_, t)| t.as_ref().ok()).collect();
            if query.format == Format::Json {
                serde_json::to_writer_pretty(&mut *out, &items).map_err(io::Error::other)?;
                writeln!(out)?;
            } else {
                out.write_all(
                    serde_yaml_ng::to_string(&items)
                        .map_err(io::Error::other)?
                        .as_bytes(),
                )?;
            }
        }
        _ => {
            let with_health = query.plugin.is_none();
            let sections = plugins.len() + usize::from(with_health);
            for (i, p) in plugins.iter().enumerate() {
                let tree = tree_of(p);
                match query.mode {
                    // Sonobuoy copies the file as stored and ignores -n.
                    Mode::Dump => {
                        if let Err(e) = archive.copy_raw_results(p, out)? {
                            errors.push(e);
                        }
                    }
                    Mode::Report => {
                        if let Some(t) = tree {
                            PluginReport::from_item(&t.name, t)
                                .write_text(out, query.failed_by_node)?;
                        }
                    }
                    Mode::Detailed => {
                        if let Some(t) = tree {
                            if let Err(e) = detailed(archive, p, t, query.skip_prefix, out)? {
                                errors.push(e);
                            }
                        }
                    }
                }
                if i + 1 < sections {
                    writeln!(out)?;
                }
            }
            if with_health {
                let raw = archive.cluster_health();
                let summary = crate::health::ClusterSummary::from_json(raw);
                match query.mode {
                    Mode::Report => crate::health::write_text(&summary, out)?,
                    Mode::Dump => crate::health::write_yaml(&summary, out)?,
                    Mode::Detailed => match raw {
                        Some(b) => out.write_all(b)?,
                        None => notes.push(format!(
                            "no {} in the archive; no cluster health to show",
                            crate::archive::HEALTH_FILE
                        )),
                    },
                }
            }
        }
    }
    Ok(Shown {
        passed,
        errors,
        notes,
    })
}

/// JSON as Go's `encoding/json` writes it: `<`, `>`, `&`, U+2028 and U+2029 escaped.
pub fn go_json<T: Serialize>(value: &T) -> serde_json::Result<String> {
    let s = serde_json::to_string(value)?;
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    Ok(out)
}

/// One plugin's leaves, one line each: a JSON object with `meta.path` (the names above it,
/// `|`-joined), or, for a leaf that stands for a file, its path then the file's contents (only
/// the contents with `skip_prefix`). A linked file missing from the archive stops the plugin
/// there, as in Sonobuoy; the reason is returned.
fn detailed(
    archive: &Archive,
    plugin: &str,
    root: &Item,
    skip_prefix: bool,
    out: &mut impl Write,
) -> io::Result<Result<(), String>> {
    let mut leaves: Vec<Leaf<'_>> = Vec::new();
    for_leaves(root, &mut vec![], &mut |path, leaf| {
        let file = leaf
            .meta
            .get("file")
            .filter(|f| !f.is_empty())
            .map(|f| format!("plugins/{plugin}/{}", f.replace('\\', "/")));
        leaves.push((path.to_vec(), leaf, file));
    });
    // Leaves print in tree order; a file leaf's contents are streamed from the archive as
    // its turn comes (one pass when the archive holds them in that order).
    let files: Vec<String> = leaves.iter().filter_map(|l| l.2.clone()).collect();
    let mut leaves = leaves.into_iter().peekable();
    let mut missing = None;
    print_plain(&mut leaves, out)?;
    archive.read_files_in_order(&files, |i, contents| {
        let Some((mut path, leaf, Some(rel))) = leaves.next() else {
            return Ok(false);
        };
        let Some(contents) = contents else {
            missing = Some(format!("file {} is not in the archive", files[i]));
            return Ok(false);
        };
        debug_assert_eq!(rel, files[i]);
        if !skip_prefix {
            path.push(&leaf.name);
            write!(out, "{} ", path.join("|"))?;
        }
        io::copy(contents, out)?;
        print_plain(&mut leaves, out)?;
        Ok(true)
    })?;
    Ok(match missing {
        Some(why) => Err(why),
        None => Ok(()),
    })
}

type Leaf<'a> = (Vec<&'a str>, &'a Item, Option<String>);

/// Prints the leaves up to the next one that stands for a file, a JSON object each.
fn print_plain(
    leaves: &mut std::iter::Peekable<std::vec::IntoIter<Leaf<'_>>>,
    out: &mut impl Write,
) -> io::Result<()> {
    while let Some((path, leaf, _)) = leaves.next_if(|l| l.2.is_none()) {
        let mut l = leaf.clone();
        l.meta.insert("path".into(), path.join("|"));
        writeln!(out, "{}", go_json(&l).map_err(io::Error::other)?)?;
    }
    Ok(())
}

fn for_leaves<'a>(i: &'a Item, path: &mut Vec<&'a str>, f: &mut impl FnMut(&[&'a str], &'a Item)) {
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
        r.write_text(&mut out, true).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "Plugin: ds\nStatus: custom: 1, failed: 1, passed: 1, skipped: 1\nTotal: 4\nPassed: 1\nFailed: 1\nSkipped: 1\ncustom: 1\n\nFailed tests:\nn1: t2\n"
        );
        assert!(!r.passed());
    }

    #[test]
    fn identical_failures_are_one_line_with_a_count_unless_named_by_node() {
        let mut root = Item::new("ds", "");
        for n in 0..3 {
            let mut node = Item::new(format!("n{n}"), "");
            node.meta.insert("type".into(), TYPE_NODE.into());
            node.items
                .push(Item::new("timeout waiting for results", item::TIMEOUT));
            root.items.push(node);
        }
        let mut other = Item::new("n9", "");
        other.meta.insert("type".into(), TYPE_NODE.into());
        other.items.push(Item::new("t1", item::FAILED));
        root.items.push(other);
        item::roll_up(&mut root);
        let r = PluginReport::from_item("ds", &root);
        let text = |by_node| {
            let mut out = Vec::new();
            r.write_text(&mut out, by_node).unwrap();
            String::from_utf8(out).unwrap()
        };
        assert!(
            text(false).ends_with("\nFailed tests:\ntimeout waiting for results (3 times)\nt1\n"),
            "{}",
            text(false)
        );
        assert!(text(true).ends_with(
            "\nFailed tests:\nn0: timeout waiting for results\nn1: timeout waiting for results\nn2: timeout waiting for results\nn9: t1\n"
        ));
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
