//! `buoy results` text output against what `sonobuoy results` (v0.57.5,
//! `cmd/sonobuoy/app/results.go`) prints for the same archive and flags. Each expected text
//! below was worked out by hand from that code: a blank line after every plugin but the last
//! section, the cluster health section last when no plugin is named, `Plugin:` naming the
//! (sub)tree's own name, `[It]` trimmed from failed tests, dump mode copying each
//! `sonobuoy_results.yaml` byte for byte (and ignoring `-n`), detailed JSON escaped as Go
//! escapes it, and `-s` leaving out a file's path prefix.

use std::path::Path;

use buoy_results::report::{show, Mode, Shown};
use buoy_results::{Archive, Query};

mod common;
use common::{write_tarball, DS_RESULTS as DS};

/// A Job plugin whose directory (`e2eds`) differs from its name (`e2e`), with the legacy
/// top-level `file:` key, an `[It]`-prefixed failure and characters Go escapes in JSON.
const E2E: &str = r#"name: e2e
status: failed
meta:
  type: summary
file: legacy
items:
- name: junit_01.xml
  status: failed
  meta:
    file: results/global/junit_01.xml
    type: file
  items:
  - name: Kubernetes e2e suite
    status: failed
    items:
    - name: '[sig-apps] Deployment <v1> & more should run'
      status: passed
    - name: '[It] [sig-network] DNS should resolve'
      status: failed
      details:
        failure: dns.go:12 timed out
    - name: '[sig-storage] CSI should mount'
      status: skipped
"#;

const REVIEW: &str = r#"name: review
status: 'needs-review: 1, passed: 1'
meta:
  type: summary
items:
- name: checks.yaml
  status: 'needs-review: 1, passed: 1'
  meta:
    file: results/global/checks.yaml
    type: file
  items:
  - name: a
    status: passed
  - name: b
    status: needs-review
"#;

const HEALTH_REPORT: &str = "Run Details:\nAPI Server version: \nNode health: 0/0\n";
const HEALTH_DUMP: &str = "node_health:\n  total_nodes: 0\n  healthy_nodes: 0\npod_health:\n  total_nodes: 0\n  healthy_nodes: 0\napi_version: \"\"\nerror_summary: {}\n\n";

fn archive(dir: &Path, extra: &[(&str, &str)]) -> Archive {
    let t = dir.join("r.tar.gz");
    let mut files = vec![
        ("meta/config.json", r#"{"Version":"v0.57.5"}"#),
        (
            "meta/info.json",
            r#"{"plugins":["e2eds","systemd-logs","review"]}"#,
        ),
        ("plugins/e2eds/sonobuoy_results.yaml", E2E),
        ("plugins/e2eds/results/global/junit_01.xml", "<testsuites/>"),
        ("plugins/systemd-logs/sonobuoy_results.yaml", DS),
        (
            "plugins/systemd-logs/results/node-1/systemd_logs",
            "log line\n",
        ),
        ("plugins/review/sonobuoy_results.yaml", REVIEW),
    ];
    files.extend_from_slice(extra);
    let bytes: Vec<(&str, &[u8])> = files.iter().map(|(n, d)| (*n, d.as_bytes())).collect();
    write_tarball(&t, &bytes);
    Archive::open(&t).unwrap()
}

fn text(a: &Archive, q: Query) -> (String, Shown) {
    let mut out = Vec::new();
    let shown = show(a, &q, &mut out).unwrap();
    (String::from_utf8(out).unwrap(), shown)
}

fn q(plugin: Option<&str>, node: Option<&str>, mode: Mode) -> Query {
    Query {
        plugin: plugin.map(str::to_string),
        node: node.map(str::to_string),
        mode,
        ..Query::default()
    }
}

const E2E_REPORT: &str = "Plugin: e2e\nStatus: failed\nTotal: 3\nPassed: 1\nFailed: 1\nSkipped: 1\n\nFailed tests:\n [sig-network] DNS should resolve\n";
const DS_REPORT: &str =
    "Plugin: systemd-logs\nStatus: passed\nTotal: 1\nPassed: 1\nFailed: 0\nSkipped: 0\n";
const REVIEW_REPORT: &str = "Plugin: review\nStatus: needs-review: 1, passed: 1\nTotal: 2\nPassed: 1\nFailed: 0\nSkipped: 0\nneeds-review: 1\n";

#[test]
fn report_mode_matches_sonobuoy_for_every_plugin_then_the_health_section() {
    let d = tempfile::tempdir().unwrap();
    let a = archive(d.path(), &[]);
    let (t, shown) = text(&a, q(None, None, Mode::Report));
    assert_eq!(
        t,
        format!("{E2E_REPORT}\n{DS_REPORT}\n{REVIEW_REPORT}\n{HEALTH_REPORT}")
    );
    assert!(!shown.passed);
    // One plugin: no separator, no health section; the label is the YAML name.
    let (t, _) = text(&a, q(Some("e2eds"), None, Mode::Report));
    assert_eq!(t, E2E_REPORT);
    // -n: the label is the subtree's name.
    let (t, _) = text(
        &a,
        q(Some("e2eds"), Some("Kubernetes e2e suite"), Mode::Report),
    );
    assert!(
        t.starts_with("Plugin: Kubernetes e2e suite\nStatus: failed\nTotal: 3\n"),
        "{t}"
    );
    // -n across plugins: plugins without the item print nothing but keep their separator.
    let (t, _) = text(&a, q(None, Some("node-1"), Mode::Report));
    let node = "Plugin: node-1\nStatus: passed\nTotal: 1\nPassed: 1\nFailed: 0\nSkipped: 0\n";
    assert_eq!(t, format!("\n{node}\n\n{HEALTH_REPORT}"));
}

#[test]
fn detailed_mode_matches_sonobuoy_with_and_without_n_and_s() {
    let d = tempfile::tempdir().unwrap();
    let a = archive(d.path(), &[]);
    let (t, shown) = text(&a, q(None, None, Mode::Detailed));
    let path = "e2e|junit_01.xml|Kubernetes e2e suite";
    let expected = [
        format!(r#"{{"name":"[sig-apps] Deployment \u003cv1\u003e \u0026 more should run","status":"passed","meta":{{"path":"{path}"}}}}"#),
        format!(r#"{{"name":"[It] [sig-network] DNS should resolve","status":"failed","meta":{{"path":"{path}"}},"details":{{"failure":"dns.go:12 timed out"}}}}"#),
        format!(r#"{{"name":"[sig-storage] CSI should mount","status":"skipped","meta":{{"path":"{path}"}}}}"#),
        String::new(),
        "systemd-logs|node-1|systemd_logs log line".into(),
        String::new(),
        r#"{"name":"a","status":"passed","meta":{"path":"review|checks.yaml"}}"#.into(),
        r#"{"name":"b","status":"needs-review","meta":{"path":"review|checks.yaml"}}"#.into(),
        String::new(),
    ]
    .join("\n");
    assert_eq!(t, format!("{expected}\n"));
    assert!(shown.errors.is_empty(), "{:?}", shown.errors);
    assert_eq!(
        shown.notes.len(),
        1,
        "no cluster health file: {:?}",
        shown.notes
    );

    let ds = Some("systemd-logs");
    let (t, _) = text(&a, q(ds, Some("node-1"), Mode::Detailed));
    assert_eq!(t, "node-1|systemd_logs log line\n");
    // A file item chosen with -n: its name alone, with no stray `|` before it.
    let (t, _) = text(&a, q(ds, Some("systemd_logs"), Mode::Detailed));
    assert_eq!(t, "systemd_logs log line\n");
    let (t, _) = text(
        &a,
        Query {
            skip_prefix: true,
            ..q(ds, None, Mode::Detailed)
        },
    );
    assert_eq!(t, "log line\n");
}

#[test]
fn dump_mode_copies_each_results_file_verbatim_and_ignores_n() {
    let d = tempfile::tempdir().unwrap();
    let a = archive(d.path(), &[]);
    let (t, _) = text(&a, q(None, None, Mode::Dump));
    assert_eq!(t, format!("{E2E}\n{DS}\n{REVIEW}\n{HEALTH_DUMP}"));
    assert!(t.contains("file: legacy\n"), "unknown keys survive");
    let (t, _) = text(&a, q(Some("e2eds"), Some("node-1"), Mode::Dump));
    assert_eq!(t, E2E);
}

#[test]
fn a_cluster_health_file_is_summarised_after_the_plugins() {
    let d = tempfile::tempdir().unwrap();
    let health = r#"{"node_health":{"total_nodes":1,"healthy_nodes":1},"pod_health":{"total_nodes":0,"healthy_nodes":0},"api_version":"v1.26.3","error_summary":{}}"#;
    let a = archive(d.path(), &[("meta/clusterhealth.json", health)]);
    let (t, _) = text(&a, q(None, None, Mode::Report));
    assert!(
        t.ends_with("\n\nRun Details:\nAPI Server version: v1.26.3\nNode health: 1/1 (100%)\n"),
        "{t}"
    );
    let (t, shown) = text(&a, q(None, None, Mode::Detailed));
    assert!(t.ends_with(&format!("\n{health}")), "{t}");
    assert!(shown.notes.is_empty());
}

#[test]
fn a_missing_linked_file_stops_that_plugin_and_is_an_error() {
    let d = tempfile::tempdir().unwrap();
    let ds = DS.replace("results/node-1/systemd_logs", "results/node-1/gone");
    let t = d.path().join("m.tar.gz");
    write_tarball(
        &t,
        &[
            ("meta/config.json", br#"{"Version":"v0.57.5"}"#),
            ("meta/info.json", br#"{"plugins":["systemd-logs"]}"#),
            ("plugins/systemd-logs/sonobuoy_results.yaml", ds.as_bytes()),
        ],
    );
    let a = Archive::open(&t).unwrap();
    let (out, shown) = text(&a, q(Some("systemd-logs"), None, Mode::Detailed));
    assert_eq!(out, "");
    assert_eq!(shown.errors.len(), 1, "{:?}", shown.errors);
    assert!(shown.errors[0].contains("gone"), "{:?}", shown.errors);
}
