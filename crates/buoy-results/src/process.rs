//! Post-processing one plugin's directory (`plugins/<p>/results` and `errors`) into its item
//! tree (compat §6.9): file selection by result format and `result-files`, the Job and
//! DaemonSet tree shapes, error items, then the roll-up. Nothing here fails: a file that cannot
//! be read or parsed becomes an item with status `unknown` and the reason in `meta.error`.

use std::fs::{self, File};
use std::io::BufReader;
use std::path::{Path, PathBuf};

use buoy_wire::gojson::GoObject;
use buoy_wire::manifest::{Driver, Manifest};

use crate::item::{self, Item, TIMEOUT, TYPE_FILE, TYPE_NODE, TYPE_SUMMARY, UNKNOWN};

/// The output file, beside `results/` and `errors/` in each plugin directory.
pub const RESULTS_FILE: &str = "sonobuoy_results.yaml";
const ERROR_FILE: &str = "error.json";

/// What post-processing needs to know about a plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginSpec {
    pub name: String,
    pub driver: Driver,
    /// `junit`, `e2e`, `raw`, `manual`, `gojson`; anything else is processed as `raw`.
    pub result_format: String,
    /// Base names of the files to process; empty means the format's default selection.
    pub result_files: Vec<String>,
}

impl PluginSpec {
    pub fn from_manifest(m: &Manifest) -> Self {
        Self {
            name: m.name().to_string(),
            driver: m.driver,
            result_format: m.config.result_format.clone(),
            result_files: m.config.result_files.clone(),
        }
    }

    /// A plugin known only by the results expected of it: `raw`, a Job if its only node is
    /// `global`, else a DaemonSet.
    pub fn raw(name: &str, nodes: &[&str]) -> Self {
        let job = nodes.iter().all(|n| *n == buoy_wire::GLOBAL_NODE);
        Self {
            name: name.to_string(),
            driver: if job { Driver::Job } else { Driver::DaemonSet },
            result_format: "raw".into(),
            result_files: vec![],
        }
    }

    /// One `raw` spec per plugin of `keys`, in first-seen order (see [`PluginSpec::raw`]).
    pub fn raw_for_keys(keys: &[buoy_wire::ResultKey]) -> Vec<Self> {
        let mut names: Vec<&str> = Vec::new();
        for k in keys {
            if !names.contains(&k.plugin.as_str()) {
                names.push(&k.plugin);
            }
        }
        names
            .into_iter()
            .map(|p| {
                let nodes: Vec<&str> = keys
                    .iter()
                    .filter(|k| k.plugin == p)
                    .map(|k| k.node.as_str())
                    .collect();
                Self::raw(p, &nodes)
            })
            .collect()
    }

    fn format(&self) -> Format {
        match self.result_format.as_str() {
            "junit" | "e2e" => Format::Junit,
            "manual" => Format::Manual,
            "gojson" => Format::GoJson,
            _ => Format::Raw,
        }
    }

    fn selects(&self, path: &Path) -> bool {
        let base = base_name(path);
        if !self.result_files.is_empty() {
            return self.result_files.contains(&base);
        }
        match self.format() {
            Format::Junit => base.ends_with(".xml"),
            Format::GoJson => base.ends_with(".json"),
            Format::Manual => base.ends_with(".yaml") || base.ends_with(".yml"),
            Format::Raw => true,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Junit,
    Raw,
    Manual,
    GoJson,
}

/// Files under `dir` in Go's `filepath.Walk` order (lexical per directory, depth first).
/// A missing directory has no files.
fn walk_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir(dir) else {
        return out;
    };
    let mut entries: Vec<_> = rd.filter_map(Result::ok).collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let path = e.path();
        match e.file_type() {
            Ok(t) if t.is_dir() => out.extend(walk_files(&path)),
            Ok(_) => out.push(path),
            Err(_) => {}
        }
    }
    out
}

fn subdirs(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = fs::read_dir(dir) else {
        return vec![];
    };
    let mut dirs: Vec<PathBuf> = rd
        .filter_map(Result::ok)
        .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
        .map(|e| e.path())
        .collect();
    dirs.sort();
    dirs
}

fn base_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn rel(plugin_dir: &Path, path: &Path) -> String {
    path.strip_prefix(plugin_dir)
        .unwrap_or(path)
        .to_string_lossy()
        .into_owned()
}

fn unreadable(mut item: Item, reason: impl std::fmt::Display) -> Item {
    item.status = UNKNOWN.into();
    item.items.clear();
    item.meta.insert("error".into(), reason.to_string());
    item
}

fn file_item(
    plugin_dir: &Path,
    path: &Path,
    format: Format,
    budget: &mut crate::junit::DetailBudget,
) -> Item {
    let rel = rel(plugin_dir, path);
    let name = base_name(path);
    if format == Format::Raw {
        let status = if fs::metadata(path).is_ok() {
            item::PASSED
        } else {
            item::FAILED
        };
        return Item::new(name, status).with_meta("file", rel);
    }
    let item = Item::new(name, UNKNOWN)
        .with_meta("file", rel)
        .with_meta("type", TYPE_FILE);
    let file = match File::open(path) {
        Ok(f) => BufReader::new(f),
        Err(e) => return unreadable(item, format!("cannot open: {e}")),
    };
    let passed = |items| Item {
        status: item::PASSED.into(),
        items,
        ..Item::default()
    };
    // What the file holds; the file item takes its status, details and items.
    let parsed = match format {
        Format::Junit => crate::junit::parse_suites(file, budget)
            .map(passed)
            .map_err(|e| format!("not valid JUnit XML: {e}")),
        Format::GoJson => gojson(file)
            .map(passed)
            .map_err(|e| format!("not a `go test -json` stream: {e}")),
        Format::Manual => manual(file),
        Format::Raw => unreachable!("handled above"),
    };
    match parsed {
        Ok(p) => Item {
            status: p.status,
            details: p.details,
            items: p.items,
            ..item
        },
        Err(e) => unreadable(item, e),
    }
}

/// The largest manual results file read: a summary a plugin writes, not its logs. Decoded, a
/// YAML document takes several times its size.
pub const MAX_MANUAL_BYTES: u64 = 8 << 20;

/// A manual results file must be exactly one item, within [`MAX_MANUAL_BYTES`] and the nesting
/// and node bounds of [`buoy_wire::yaml`].
fn manual(file: impl std::io::Read) -> Result<Item, String> {
    let bytes = buoy_wire::read_bounded_from(file, MAX_MANUAL_BYTES).map_err(|e| {
        if e.kind() == std::io::ErrorKind::FileTooLarge {
            format!("not read: a manual results file is at most {MAX_MANUAL_BYTES} bytes")
        } else {
            format!("cannot read: {e}")
        }
    })?;
    let value: serde_yaml_ng::Value = buoy_wire::yaml::from_slice(&bytes)
        .map_err(|e| format!("not a single YAML results item: {e}"))?;
    if !value.is_mapping() {
        return Err("not a single YAML results item: expected a mapping".into());
    }
    serde_yaml_ng::from_value(value).map_err(|e| format!("not a valid results item: {e}"))
}

/// One `go test -json` event, with the fields and types Sonobuoy decodes it into.
#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct TestEvent {
    #[serde(rename = "Time")]
    time: Option<String>,
    #[serde(rename = "Action")]
    action: String,
    #[serde(rename = "Package")]
    _package: String,
    #[serde(rename = "Test")]
    test: String,
    #[serde(rename = "Elapsed")]
    _elapsed: f64,
    #[serde(rename = "Output")]
    _output: String,
}

const TEST_EVENT_FIELDS: &[&str] = &["Time", "Action", "Package", "Test", "Elapsed", "Output"];

/// One item per finished test (`pass`, `fail`, `skip`; other final actions are `unknown`).
/// Events decode as Go decodes them: keys match case-insensitively (`{"action":"fail"}` is a
/// failure), and a field of the wrong type, or a `Time` that is not RFC 3339, spoils the file.
fn gojson(file: impl std::io::Read) -> Result<Vec<Item>, String> {
    let mut tests = Vec::new();
    for ev in serde_json::Deserializer::from_reader(file).into_iter::<GoObject>() {
        let ev: TestEvent = ev
            .and_then(|o| o.decode(TEST_EVENT_FIELDS))
            .map_err(|e| e.to_string())?;
        if let Some(t) = &ev.time {
            time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
                .map_err(|e| format!("Time {t:?} is not RFC 3339: {e}"))?;
        }
        if ev.test.is_empty()
            || matches!(
                ev.action.as_str(),
                "run" | "pause" | "cont" | "output" | "bench"
            )
        {
            continue;
        }
        let status = match ev.action.as_str() {
            "pass" => item::PASSED,
            "fail" => item::FAILED,
            "skip" => item::SKIPPED,
            _ => UNKNOWN,
        };
        tests.push(Item::new(ev.test, status));
    }
    Ok(tests)
}

/// Go's `fmt.Sprint` of a decoded JSON value, as Sonobuoy stringifies error details.
fn go_sprint(v: &serde_json::Value) -> String {
    use serde_json::Value;
    match v {
        Value::Null => "<nil>".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < 1e21 => format!("{f:.0}"),
            Some(f) => f.to_string(),
            None => n.to_string(),
        },
        Value::String(s) => s.clone(),
        Value::Array(a) => format!(
            "[{}]",
            a.iter().map(go_sprint).collect::<Vec<_>>().join(" ")
        ),
        Value::Object(o) => {
            let mut keys: Vec<&String> = o.keys().collect();
            keys.sort();
            let parts: Vec<String> = keys
                .into_iter()
                .map(|k| format!("{k}:{}", go_sprint(&o[k])))
                .collect();
            format!("map[{}]", parts.join(" "))
        }
    }
}

/// An error the aggregator recorded (`errors/**/error.json`): named after its message,
/// `timeout` if the message says so, else `failed`.
fn error_item(plugin_dir: &Path, path: &Path) -> Item {
    let item = Item::new(base_name(path), item::FAILED).with_meta("file", rel(plugin_dir, path));
    let body = match fs::read(path) {
        Ok(b) => b,
        Err(e) => return unreadable(item, format!("cannot open: {e}")),
    };
    let obj: serde_json::Map<String, serde_json::Value> = match serde_json::from_slice(&body) {
        Ok(o) => o,
        Err(e) => return unreadable(item, format!("not a JSON object: {e}")),
    };
    let mut item = item;
    for (k, v) in &obj {
        item.details.insert(k.clone(), go_sprint(v).into());
    }
    // Sonobuoy names an error without a message `<nil>`; the file name says more.
    if let Some(msg) = obj.get("error") {
        item.name = go_sprint(msg);
        if item.name.contains("timeout") {
            item.status = TIMEOUT.into();
        }
    }
    item
}

fn items_in(
    plugin_dir: &Path,
    dir: &Path,
    spec: &PluginSpec,
    budget: &mut crate::junit::DetailBudget,
) -> Vec<Item> {
    walk_files(dir)
        .into_iter()
        .filter(|p| spec.selects(p))
        .map(|p| file_item(plugin_dir, &p, spec.format(), budget))
        .collect()
}

fn errors_in(plugin_dir: &Path, dir: &Path) -> Vec<Item> {
    walk_files(dir)
        .into_iter()
        .filter(|p| base_name(p) == ERROR_FILE)
        .map(|p| error_item(plugin_dir, &p))
        .collect()
}

fn node_item(dir: &Path, mut items: Vec<Item>) -> Item {
    // A filtered collect starts at four items; most nodes have one, and a run has thousands.
    items.shrink_to_fit();
    Item {
        name: base_name(dir),
        meta: [("type".to_string(), TYPE_NODE.to_string())].into(),
        items,
        ..Item::default()
    }
}

/// The item tree of plugin `spec` from `run_dir/plugins/<name>`, rolled up.
pub fn process_plugin(run_dir: &Path, spec: &PluginSpec) -> Item {
    let plugin_dir = run_dir.join("plugins").join(&spec.name);
    let results = plugin_dir.join("results");
    let errors = plugin_dir.join("errors");
    let mut root = Item::new(&spec.name, "").with_meta("type", TYPE_SUMMARY);
    // Detail text (failure messages, test output) is bounded per plugin, not only per item.
    let mut budget = crate::junit::DetailBudget::default();
    match spec.driver {
        Driver::Job => {
            root.items = items_in(&plugin_dir, &results, spec, &mut budget);
            root.items.extend(errors_in(&plugin_dir, &errors));
        }
        Driver::DaemonSet => {
            let (results, errors) = (subdirs(&results), subdirs(&errors));
            root.items.reserve_exact(results.len() + errors.len());
            for dir in results {
                let items = items_in(&plugin_dir, &dir, spec, &mut budget);
                root.items.push(node_item(&dir, items));
            }
            for dir in errors {
                let items = errors_in(&plugin_dir, &dir);
                root.items.push(node_item(&dir, items));
            }
        }
    }
    item::roll_up(&mut root);
    root
}

/// Processes plugin `spec` and writes its `sonobuoy_results.yaml`. The file is written and
/// synced in `tmp_dir` (on the same file system, outside the run directory) and renamed into
/// place, so nothing half-written or temporary ever appears in the plugin's directory.
pub fn write_plugin_results(
    run_dir: &Path,
    spec: &PluginSpec,
    tmp_dir: &Path,
) -> std::io::Result<Item> {
    let root = process_plugin(run_dir, spec);
    let dir = run_dir.join("plugins").join(&spec.name);
    fs::create_dir_all(&dir)?;
    let tmp = tmp_dir.join(format!("{}.{RESULTS_FILE}", spec.name));
    // Straight to the file: a 10,000-node tree is megabytes of YAML.
    let mut out = std::io::BufWriter::new(File::create(&tmp)?);
    serde_yaml_ng::to_writer(&mut out, &root).map_err(std::io::Error::other)?;
    let f = out.into_inner().map_err(|e| e.into_error())?;
    f.sync_all()?;
    fs::rename(&tmp, dir.join(RESULTS_FILE))?;
    Ok(root)
}

/// A node's `result-status` and `result-counts` (leaves by status).
pub type EntryResult = (String, std::collections::BTreeMap<String, i64>);

/// `result-status` and `result-counts` for the status entry of `node` (compat §5.4): the root
/// for `global`, else the node's items. A DaemonSet node listed under both `results/` and
/// `errors/` counts both. `None` when the tree has no item for the node.
pub fn entry_result(root: &Item, node: &str) -> Option<EntryResult> {
    EntryResults::new(root).get(node)
}

/// [`entry_result`] for many nodes of one tree: the root's children are indexed by name once,
/// not searched once per node.
pub struct EntryResults<'a> {
    root: &'a Item,
    by_name: std::collections::HashMap<&'a str, Vec<&'a Item>>,
}

impl<'a> EntryResults<'a> {
    pub fn new(root: &'a Item) -> Self {
        let mut by_name: std::collections::HashMap<&str, Vec<&Item>> = Default::default();
        for i in &root.items {
            by_name.entry(i.name.as_str()).or_default().push(i);
        }
        Self { root, by_name }
    }

    pub fn get(&self, node: &str) -> Option<EntryResult> {
        let result = |i: &Item| (i.status.clone(), i.leaf_counts());
        if node == buoy_wire::GLOBAL_NODE {
            return Some(result(self.root));
        }
        match self
            .by_name
            .get(node)
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            [] => self.root.find(node).map(result),
            [one] => Some(result(one)),
            several => {
                let mut merged = Item {
                    name: node.to_string(),
                    items: several.iter().map(|i| (*i).clone()).collect(),
                    ..Item::default()
                };
                item::roll_up(&mut merged);
                Some(result(&merged))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, leaves: &[(&str, &str)]) -> Item {
        let mut n = Item::new(name, "").with_meta("type", TYPE_NODE);
        n.items = leaves.iter().map(|(l, st)| Item::new(*l, *st)).collect();
        n
    }

    #[test]
    fn status_entries_take_the_root_their_node_or_both_of_its_items() {
        let mut root = Item::new("p", "").with_meta("type", TYPE_SUMMARY);
        root.items = vec![
            node("n1", &[("a", item::PASSED), ("b", item::SKIPPED)]),
            node("n2", &[("a", item::PASSED)]),
            node("n2", &[("plugin failed", item::FAILED)]),
        ];
        item::roll_up(&mut root);
        let (st, counts) = entry_result(&root, "global").unwrap();
        assert_eq!(st, item::FAILED);
        assert_eq!(counts.values().sum::<i64>(), 4);
        let (st, counts) = entry_result(&root, "n1").unwrap();
        assert_eq!(st, item::PASSED);
        assert_eq!(counts, [("passed".into(), 1), ("skipped".into(), 1)].into());
        let (st, counts) = entry_result(&root, "n2").unwrap();
        assert_eq!(st, item::FAILED);
        assert_eq!(counts, [("failed".into(), 1), ("passed".into(), 1)].into());
        assert!(entry_result(&root, "n3").is_none());
    }

    #[test]
    fn go_sprint_matches_fmt_sprint_of_decoded_json() {
        let v: serde_json::Value =
            serde_json::from_str(r#"{"b":[1,2.5,"x"],"a":{"z":null,"y":true},"n":1000000}"#)
                .unwrap();
        assert_eq!(
            go_sprint(&v),
            "map[a:map[y:true z:<nil>] b:[1 2.5 x] n:1000000]"
        );
    }

    #[test]
    fn selection_follows_format_and_result_files() {
        let spec = |f: &str, files: &[&str]| PluginSpec {
            name: "p".into(),
            driver: Driver::Job,
            result_format: f.into(),
            result_files: files.iter().map(|s| s.to_string()).collect(),
        };
        let p = Path::new;
        assert!(spec("junit", &[]).selects(p("r/a.xml")));
        assert!(!spec("junit", &[]).selects(p("r/a.txt")));
        assert!(spec("e2e", &["x.txt"]).selects(p("r/x.txt")));
        assert!(!spec("e2e", &["x.txt"]).selects(p("r/a.xml")));
        assert!(spec("manual", &[]).selects(p("r/m.yml")));
        assert!(spec("gojson", &[]).selects(p("r/t.json")));
        assert!(spec("", &[]).selects(p("r/anything")));
        assert!(spec("weird", &[]).selects(p("r/anything")));
    }

    #[test]
    fn a_manual_file_too_deep_or_too_large_is_refused_at_once() {
        let deep = "{a: ".repeat(200_000);
        let e = manual(deep.as_bytes()).unwrap_err();
        assert!(e.contains("nested deeper than 128 levels"), "{e}");
        let big = vec![b'#'; MAX_MANUAL_BYTES as usize + 1];
        let e = manual(&big[..]).unwrap_err();
        assert!(e.contains("at most 8388608 bytes"), "{e}");
        let ok = manual(&b"name: x\nstatus: passed\n"[..]).unwrap();
        assert_eq!(ok.status, item::PASSED);
    }
}
