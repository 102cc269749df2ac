//! Golden trees: every directory under `tests/golden/` is a run directory with one plugin, a
//! `case.yaml` naming its driver, result format and result files, and the `expected.yaml` its
//! `sonobuoy_results.yaml` must equal byte for byte. `BUOY_BLESS=1` rewrites the expectations
//! (review the diff: they are the specification).

use std::path::Path;

use buoy_results::{process_plugin, PluginSpec};
use buoy_wire::manifest::Driver;

#[derive(serde::Deserialize)]
struct Case {
    plugin: String,
    driver: String,
    #[serde(rename = "result-format", default)]
    result_format: String,
    #[serde(rename = "result-files", default)]
    result_files: Vec<String>,
}

fn spec(dir: &Path) -> PluginSpec {
    let c: Case =
        serde_yaml_ng::from_str(&std::fs::read_to_string(dir.join("case.yaml")).unwrap()).unwrap();
    PluginSpec {
        name: c.plugin,
        driver: match c.driver.as_str() {
            "Job" => Driver::Job,
            "DaemonSet" => Driver::DaemonSet,
            d => panic!("driver {d}"),
        },
        result_format: c.result_format,
        result_files: c.result_files,
    }
}

#[test]
fn every_golden_case_produces_its_expected_tree() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let bless = std::env::var_os("BUOY_BLESS").is_some();
    let mut cases: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("case.yaml").exists())
        .collect();
    cases.sort();
    assert!(cases.len() >= 9, "golden cases: {cases:?}");
    let mut failures = Vec::new();
    for dir in &cases {
        let tree = process_plugin(dir, &spec(dir));
        let got = serde_yaml_ng::to_string(&tree).unwrap();
        let path = dir.join("expected.yaml");
        if bless {
            std::fs::write(&path, &got).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&path).unwrap_or_default();
        if got != want {
            failures.push(format!(
                "{}:\n--- expected\n{want}\n--- got\n{got}",
                dir.display()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
