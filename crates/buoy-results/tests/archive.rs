//! Reading archives Sonobuoy wrote (compat §5.6): the v0.57 layout with `meta/info.json`, a
//! v0.15 archive that predates `info.json`, an extracted directory, and the versions refused.
//! The archives are built here, entry by entry, the way Sonobuoy's tarball writer lays them out.

use buoy_results::report::{show, Format, Mode};
use buoy_results::{Archive, ArchiveError, Query};

mod common;
use common::{gzip, tar_bytes, write_tarball, DS_RESULTS};

/// The `sonobuoy_results.yaml` of an e2e run as Sonobuoy's YAML encoder writes it.
const E2E_RESULTS: &str = r#"name: e2e
status: failed
meta:
  type: summary
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
    - name: '[sig-apps] Deployment should run'
      status: passed
    - name: '[sig-network] DNS should resolve'
      status: failed
      details:
        failure: "dns.go:12 timed out"
    - name: '[sig-storage] CSI should mount'
      status: skipped
"#;

fn report(archive: &Archive, query: Query) -> (bool, serde_json::Value) {
    let mut out = Vec::new();
    let passed = show(
        archive,
        &Query {
            format: Format::Json,
            ..query
        },
        &mut out,
    )
    .unwrap()
    .passed;
    (passed, serde_json::from_slice(&out).unwrap())
}

#[test]
fn a_sonobuoy_v0_57_tarball_is_read_through_info_json() {
    let d = tempfile::tempdir().unwrap();
    let t = d.path().join("202611240000_sonobuoy_x.tar.gz");
    write_tarball(
        &t,
        &[
            ("resources/cluster/Nodes.json", b"[]"),
            ("meta/config.json", br#"{"UUID":"x","Version":"v0.57.5"}"#),
            ("meta/info.json", br#"{"plugins":["e2e","systemd-logs"]}"#),
            ("meta/clusterhealth.json", b"{}"),
            ("plugins/e2e/results/global/junit_01.xml", b"<testsuite/>"),
            ("plugins/e2e/sonobuoy_results.yaml", E2E_RESULTS.as_bytes()),
            (
                "plugins/systemd-logs/results/node-1/systemd_logs",
                b"log line\n",
            ),
            (
                "plugins/systemd-logs/sonobuoy_results.yaml",
                DS_RESULTS.as_bytes(),
            ),
        ],
    );
    let a = Archive::open(&t).unwrap();
    assert_eq!(a.version, "v0.57.5");
    assert_eq!(a.plugins, ["e2e", "systemd-logs"]);
    let (passed, r) = report(&a, Query::default());
    assert!(!passed);
    assert_eq!(r[0]["status"], "failed");
    assert_eq!(r[0]["total"], 3);
    assert_eq!(
        r[0]["failed-tests"][0]["name"],
        "[sig-network] DNS should resolve"
    );
    assert_eq!(r[1]["status"], "passed");

    let (passed, r) = report(
        &a,
        Query {
            plugin: Some("systemd-logs".into()),
            ..Query::default()
        },
    );
    assert!(passed);
    assert_eq!(r[0]["passed"], 1);

    // Detailed mode prints a file leaf's contents from the archive, after its path.
    let mut out = Vec::new();
    show(
        &a,
        &Query {
            plugin: Some("systemd-logs".into()),
            mode: Mode::Detailed,
            ..Query::default()
        },
        &mut out,
    )
    .unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "systemd-logs|node-1|systemd_logs log line\n"
    );
}

#[test]
fn a_v0_15_tarball_without_info_json_lists_the_plugins_it_has_results_for() {
    let d = tempfile::tempdir().unwrap();
    let t = d.path().join("old.tar.gz");
    write_tarball(
        &t,
        &[
            ("./meta/config.json", br#"{"Version":"v0.15.4"}"#),
            (
                "./plugins/systemd-logs/sonobuoy_results.yaml",
                DS_RESULTS.as_bytes(),
            ),
            (
                "./plugins/e2e/sonobuoy_results.yaml",
                E2E_RESULTS.as_bytes(),
            ),
        ],
    );
    let a = Archive::open(&t).unwrap();
    assert_eq!(a.plugins, ["e2e", "systemd-logs"]);
    let (_, r) = report(
        &a,
        Query {
            node: Some("node-1".into()),
            ..Query::default()
        },
    );
    // Only the plugin that has a `node-1` item is shown.
    assert_eq!(r.as_array().unwrap().len(), 1);
    assert_eq!(r[0]["plugin"], "systemd-logs");
}

#[test]
fn an_extracted_directory_reads_like_its_tarball() {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(d.path().join("meta")).unwrap();
    std::fs::create_dir_all(d.path().join("plugins/e2e")).unwrap();
    std::fs::write(
        d.path().join("meta/config.json"),
        r#"{"Version":"v0.56.16"}"#,
    )
    .unwrap();
    std::fs::write(d.path().join("meta/info.json"), r#"{"plugins":["e2e"]}"#).unwrap();
    std::fs::write(
        d.path().join("plugins/e2e/sonobuoy_results.yaml"),
        E2E_RESULTS,
    )
    .unwrap();
    let a = Archive::open(d.path()).unwrap();
    let (passed, r) = report(&a, Query::default());
    assert!(!passed);
    assert_eq!(r[0]["skipped"], 1);
}

#[test]
fn old_missing_or_unreadable_versions_are_refused_with_a_reason() {
    let d = tempfile::tempdir().unwrap();
    let old = d.path().join("old.tar.gz");
    write_tarball(&old, &[("meta/config.json", br#"{"Version":"v0.10.0"}"#)]);
    assert!(matches!(
        Archive::open(&old),
        Err(ArchiveError::TooOld { .. })
    ));
    let none = d.path().join("none.tar.gz");
    write_tarball(&none, &[("plugins/x/results/global/f", b"x")]);
    assert!(matches!(
        Archive::open(&none),
        Err(ArchiveError::NoConfig(_))
    ));
    let junk = d.path().join("junk.tar.gz");
    std::fs::write(&junk, b"not gzip at all").unwrap();
    let e = Archive::open(&junk).unwrap_err();
    assert!(e.to_string().contains("junk.tar.gz"), "{e}");
}

#[test]
fn a_results_file_that_does_not_decode_is_reported_for_its_plugin_only() {
    let d = tempfile::tempdir().unwrap();
    let t = d.path().join("r.tar.gz");
    write_tarball(
        &t,
        &[
            ("meta/config.json", br#"{"Version":"v0.57.5"}"#),
            ("meta/info.json", br#"{"plugins":["bad","systemd-logs"]}"#),
            ("plugins/bad/sonobuoy_results.yaml", b"name: [unclosed"),
            (
                "plugins/systemd-logs/sonobuoy_results.yaml",
                DS_RESULTS.as_bytes(),
            ),
        ],
    );
    let a = Archive::open(&t).unwrap();
    let (passed, r) = report(&a, Query::default());
    assert!(!passed);
    assert!(
        r[0]["error"].as_str().unwrap().contains("cannot decode"),
        "{r}"
    );
    assert_eq!(r[1]["status"], "passed");
}

/// A plugin whose two nodes each have a file leaf, for detailed mode.
const TWO_NODES: &str = r#"name: p
status: passed
meta:
  type: summary
items:
- name: node-1
  status: passed
  meta:
    type: node
  items:
  - name: f
    status: passed
    meta:
      file: results/node-1/f
- name: node-2
  status: passed
  meta:
    type: node
  items:
  - name: f
    status: passed
    meta:
      file: results/node-2/f
- name: node-3
  status: passed
  meta:
    type: node
"#;

#[test]
fn a_gzip_of_several_members_is_read_to_its_end() {
    let tar = tar_bytes(&[
        ("meta/config.json", br#"{"Version":"v0.57.5"}"#),
        ("meta/info.json", br#"{"plugins":["systemd-logs"]}"#),
        (
            "plugins/systemd-logs/sonobuoy_results.yaml",
            DS_RESULTS.as_bytes(),
        ),
    ]);
    // Two entries of one 512-byte block and one of data each, then the rest: a second member.
    let (first, rest) = tar.split_at(4 * 512);
    let d = tempfile::tempdir().unwrap();
    let t = d.path().join("two-members.tar.gz");
    std::fs::write(&t, [gzip(first), gzip(rest)].concat()).unwrap();
    let a = Archive::open(&t).unwrap();
    let (passed, r) = report(&a, Query::default());
    assert!(passed, "{r}");
    assert_eq!(r[0]["passed"], 1);
}

#[test]
fn detailed_mode_prints_file_leaves_in_tree_order_whatever_the_archive_order() {
    let d = tempfile::tempdir().unwrap();
    let t = d.path().join("r.tar.gz");
    write_tarball(
        &t,
        &[
            ("meta/config.json", br#"{"Version":"v0.57.5"}"#),
            ("meta/info.json", br#"{"plugins":["p"]}"#),
            ("plugins/p/results/node-2/f", b"two\n"),
            ("plugins/p/sonobuoy_results.yaml", TWO_NODES.as_bytes()),
            ("plugins/p/results/node-1/f", b"one\n"),
        ],
    );
    let a = Archive::open(&t).unwrap();
    let shown = |mode| {
        let mut out = Vec::new();
        let q = Query {
            mode,
            plugin: Some("p".into()),
            ..Query::default()
        };
        show(&a, &q, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    };
    assert_eq!(
        shown(Mode::Detailed),
        "p|node-1|f one\np|node-2|f two\n{\"name\":\"node-3\",\"status\":\"passed\",\"meta\":{\"path\":\"p\",\"type\":\"node\"}}\n"
    );
    // Dump mode copies the stored file, streamed from the archive.
    assert_eq!(shown(Mode::Dump), TWO_NODES);
}
