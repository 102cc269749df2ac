//! Conformance in one command, with the real test suite: `buoy run --kubeconfig ... -p e2e`
//! against the test control plane, the stand-in kubelet running the conformance image as its
//! parts built from the same Kubernetes tree (`go-runner` as `/run_e2e.sh`, `ginkgo`,
//! `e2e.test` from `BUOY_TEST_CONFORMANCE_BIN`, default `/usr/local/buoy-conformance/bin`; the
//! test skips with a note without them). A focus on API-only conformance specs passes end to
//! end (junit counts, progress, retrieval, cleanup); a run with a spec that fails exits 1 and
//! names it, and `--rerun-failed` on its tarball runs exactly that spec.

use std::path::{Path, PathBuf};
use std::time::Duration;

use buoy_testenv::kubelet::ImageSpec;
use buoy_testenv::NodeMode;

use super::{cluster, kubectl, tar_file, tar_list, ClusterOpts, IN_CLUSTER};
use crate::cli::buoy;

/// The fast API-only conformance specs this test runs (each one to two seconds here).
const PASSING: [&str; 4] = [
    "[sig-api-machinery] Discovery should validate PreferredVersion for each APIGroup [Conformance]",
    "[sig-node] Lease lease API should be available [Conformance]",
    "[sig-network] Ingress API should support creating Ingress API operations [Conformance]",
    "[sig-node] RuntimeClass  should support RuntimeClasses API operations [Conformance]",
];

/// A spec that runs `kubectl`, which this stand-in image lacks: it fails at once. (Two
/// spaces before `[Conformance]`: its name has them, and a rerun must keep them.)
const FAILING: &str =
    "[sig-cli] Kubectl client Kubectl version should check is all data is printed  [Conformance]";

fn conformance_bin() -> Result<PathBuf, String> {
    let dir = std::env::var_os("BUOY_TEST_CONFORMANCE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/local/buoy-conformance/bin"));
    for b in ["e2e.test", "ginkgo", "go-runner"] {
        if !dir.join(b).is_file() {
            return Err(format!(
                "no {b} in {} (set BUOY_TEST_CONFORMANCE_BIN to a directory holding e2e.test, ginkgo and go-runner of the control plane's Kubernetes version)",
                dir.display()
            ));
        }
    }
    Ok(dir)
}

/// The conformance image as the stand-in kubelet plays it: its binaries where the image has
/// them, its ENV, and a `kubectl` that always fails.
fn conformance_image(bin: &Path, stub: &Path) -> ImageSpec {
    let runner = bin.join("go-runner");
    ImageSpec {
        name: "registry.k8s.io/conformance".into(),
        entrypoint: vec!["kubeconformance".into()],
        args: vec![],
        binds: vec![
            ("/run_e2e.sh".into(), runner.clone()),
            ("/gorunner".into(), runner.clone()),
            ("/usr/local/bin/kubeconformance".into(), runner),
            ("/usr/local/bin/ginkgo".into(), bin.join("ginkgo")),
            ("/usr/local/bin/e2e.test".into(), bin.join("e2e.test")),
            ("/usr/local/bin/kubectl".into(), stub.to_path_buf()),
        ],
        env: [
            ("E2E_FOCUS", r"\[Conformance\]"),
            ("E2E_SKIP", ""),
            ("E2E_PROVIDER", "local"),
            ("E2E_PARALLEL", "1"),
            ("E2E_VERBOSITY", "4"),
            ("RESULTS_DIR", "/tmp/results"),
            ("KUBECONFIG", ""),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
    }
}

/// The specs of a tarball's e2e junit that ran: `(name, failed)`.
fn ran(tarball: &Path) -> Vec<(String, bool)> {
    let names = tar_list(tarball);
    let junit = names
        .iter()
        .find(|n| n.starts_with("plugins/e2e/results/global/") && n.ends_with("junit_01.xml"))
        .unwrap_or_else(|| panic!("no junit in {names:?}"));
    let xml = tar_file(tarball, junit);
    let mut out = Vec::new();
    for case in xml.split("<testcase ").skip(1) {
        let body = case.split("</testcase>").next().unwrap_or_default();
        if body.contains("<skipped") {
            continue;
        }
        let name = case
            .split("name=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap_or_default();
        let name = name.replace("&#34;", "\"").replace("&amp;", "&");
        // Specs only: the suite's own entries ([SynchronizedBeforeSuite], ...) run too.
        if name.starts_with("[It] ") {
            out.push((name, body.contains("<failure")));
        }
    }
    out
}

/// `buoy run` against the cluster with `args`: its exit code, stdout and stderr.
async fn buoy_run(k: &Path, out: &Path, args: &[&str]) -> (i32, String, String) {
    let run = buoy()
        .args([
            "run",
            "--kubeconfig",
            k.to_str().unwrap(),
            "-n",
            "conformance",
        ])
        .args(["--image", "buoy:test", "-p", "e2e", "-q", "--output"])
        .arg(out)
        .args(args)
        .output();
    let run = tokio::time::timeout(Duration::from_secs(600), run)
        .await
        .expect("buoy run ends")
        .unwrap();
    (
        run.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&run.stdout).into_owned(),
        String::from_utf8_lossy(&run.stderr).into_owned(),
    )
}

/// `sonobuoy results TARBALL` (a Sonobuoy v0.57 binary beside the conformance binaries)
/// prints what `buoy results TARBALL` prints; says so and returns without one.
async fn same_as_sonobuoy_results(bin: &Path, tarball: &Path) {
    let sonobuoy = bin.join("sonobuoy");
    if !sonobuoy.is_file() {
        eprintln!(
            "note: no sonobuoy in {}: its reading of the tarball is not checked",
            bin.display()
        );
        return;
    }
    let theirs = tokio::process::Command::new(&sonobuoy)
        .arg("results")
        .arg(tarball)
        .output()
        .await
        .unwrap();
    crate::succeeded(&theirs);
    let ours = buoy().arg("results").arg(tarball).output().await.unwrap();
    assert_eq!(
        error_blocks_sorted(&String::from_utf8_lossy(&ours.stdout)),
        error_blocks_sorted(&String::from_utf8_lossy(&theirs.stdout))
    );
}

/// The text with the blocks under "Errors detected in files:" (one per kind, `Errors:`,
/// `Warnings:`) in sorted order: Sonobuoy prints them in Go's map order, which changes from
/// one run to the next.
fn error_blocks_sorted(text: &str) -> String {
    const HEAD: &str = "Errors detected in files:\n";
    let Some(at) = text.find(HEAD) else {
        return text.to_string();
    };
    let (before, tail) = text.split_at(at + HEAD.len());
    let mut blocks: Vec<String> = Vec::new();
    for line in tail.lines() {
        match blocks.last_mut() {
            Some(b) if line.starts_with(' ') || line.starts_with(|c: char| c.is_ascii_digit()) => {
                b.push_str(line);
                b.push('\n');
            }
            _ => blocks.push(format!("{line}\n")),
        }
    }
    blocks.sort();
    format!("{before}{}", blocks.concat())
}

fn newest_tarball(dir: &Path) -> PathBuf {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(".tar.gz"))
        .max_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        .expect("a tarball")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_specs_run_in_one_command_and_a_failure_reruns_alone() {
    let bin = match conformance_bin() {
        Ok(b) => b,
        Err(why) => {
            eprintln!("SKIPPED conformance_in_one_command: {why}");
            return;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let stub = dir.path().join("kubectl");
    std::fs::write(
        &stub,
        "#!/bin/sh\necho 'kubectl is not in this stand-in image' >&2\nexit 1\n",
    )
    .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&stub, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let opts = ClusterOpts {
        images: vec![conformance_image(&bin, &stub)],
        ..Default::default()
    };
    let Some(c) = cluster("conformance_in_one_command", opts).await else {
        return;
    };
    let _ports = IN_CLUSTER.lock().await;
    let k = c.kubeconfig();
    c.add_nodes(&["conf-a".into()], NodeMode::Run, &[])
        .await
        .unwrap();

    // 1. The passing specs, end to end.
    let focus = PASSING
        .iter()
        .map(|n| buoy_kube::conformance::quote_meta(n))
        .collect::<Vec<_>>()
        .join("|");
    let out = dir.path().join("results");
    let (code, stdout, stderr) = buoy_run(k, &out, &["--e2e-focus", &focus]).await;
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("Plugin: e2e\nStatus: passed"), "{stdout}");
    // The progress Ginkgo posted was followed: what ran and passed, without a total.
    assert!(stderr.contains("4 run, 4 passed"), "{stderr}");
    let tarball = newest_tarball(&out);
    let mut names: Vec<String> = ran(&tarball)
        .into_iter()
        .map(|(n, failed)| {
            assert!(!failed, "{n} failed");
            n
        })
        .collect();
    names.sort();
    let mut want: Vec<String> = PASSING.iter().map(|n| format!("[It] {n}")).collect();
    want.sort();
    assert_eq!(names, want);
    // Sonobuoy's own `sonobuoy results`, when it is there, reads the tarball and says what
    // `buoy results` says, byte for byte.
    same_as_sonobuoy_results(&bin, &tarball).await;
    // Cleaned up: the namespace and the run's cluster role are gone.
    assert!(!kubectl(k, &["get", "namespace", "conformance"], None).0);
    let (_, roles) = kubectl(
        k,
        &[
            "get",
            "clusterroles",
            "-l",
            "namespace=conformance",
            "-o",
            "name",
        ],
        None,
    );
    assert!(roles.trim().is_empty(), "{roles}");

    // 2. One spec fails: the run exits 1 and names it.
    let out2 = dir.path().join("failing");
    let focus = format!(
        "{}|{}",
        buoy_kube::conformance::quote_meta(PASSING[1]),
        buoy_kube::conformance::quote_meta(FAILING)
    );
    let (code, stdout, stderr) = buoy_run(k, &out2, &["--e2e-focus", &focus]).await;
    assert_eq!(code, 1, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("Status: failed"), "{stdout}");
    assert!(stdout.contains(FAILING), "{stdout}");
    let failed_run = newest_tarball(&out2);
    same_as_sonobuoy_results(&bin, &failed_run).await;
    let ran2 = ran(&failed_run);
    assert_eq!(ran2.len(), 2, "{ran2:?}");

    // 3. --rerun-failed runs exactly that spec.
    let out3 = dir.path().join("rerun");
    let (code, stdout, stderr) =
        buoy_run(k, &out3, &["--rerun-failed", failed_run.to_str().unwrap()]).await;
    assert_eq!(code, 1, "stdout:\n{stdout}\nstderr:\n{stderr}");
    let ran3 = ran(&newest_tarball(&out3));
    assert_eq!(ran3, [(format!("[It] {FAILING}"), true)]);
}

/// What `buoy manifest` prints for a conformance run (both built-in plugins, a registry list
/// for the test images) passes the API server's strict validation, object by object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_conformance_manifest_passes_strict_server_side_validation() {
    let Some(c) = cluster("conformance_manifest_validation", Default::default()).await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let repos = dir.path().join("repos.yaml");
    std::fs::write(&repos, "dockerLibraryRegistry: mirror.example/library\n").unwrap();
    let out = buoy()
        .args([
            "manifest",
            "--mode",
            "certified-conformance",
            "--e2e-repo-config",
        ])
        .arg(&repos)
        .args(["--kubeconfig", c.kubeconfig().to_str().unwrap()])
        .output()
        .await
        .unwrap();
    crate::succeeded(&out);
    let manifest = String::from_utf8(out.stdout).unwrap();
    // The version came from the API server.
    assert!(
        manifest.contains("image: registry.k8s.io/conformance:v1.26.0"),
        "{manifest}"
    );
    // A dry run creates nothing: the namespace, and the service account the pod runs as,
    // must be there already.
    let (ok, text) = kubectl(c.kubeconfig(), &["create", "namespace", "sonobuoy"], None);
    assert!(ok, "{text}");
    let sa = [
        "create",
        "serviceaccount",
        "sonobuoy-serviceaccount",
        "-n",
        "sonobuoy",
    ];
    let (ok, text) = kubectl(c.kubeconfig(), &sa, None);
    assert!(ok, "{text}");
    let (ok, text) = kubectl(
        c.kubeconfig(),
        &[
            "apply",
            "--server-side",
            "--validate=strict",
            "--dry-run=server",
            "-f",
            "-",
        ],
        Some(&manifest),
    );
    assert!(ok, "{text}");
    for object in [
        "namespace/sonobuoy",
        "configmap/plugin-e2e-cm",
        "pod/sonobuoy",
    ] {
        assert!(text.contains(object), "{object} not in {text}");
    }
}
