//! `buoy run`: the embedded local mode, through the binary as the README runs it.

use std::path::{Path, PathBuf};

use http::HeaderMap;

use crate::cli::buoy;
use crate::*;

fn quickstart() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/quickstart")
}

fn tarball_from(stdout: &str) -> PathBuf {
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("Tarball: "))
        .unwrap_or_else(|| panic!("no tarball line in {stdout}"));
    PathBuf::from(line.trim())
}

#[tokio::test]
async fn the_quickstart_runs_and_its_tarball_holds_every_result() {
    let out = tempfile::tempdir().unwrap();
    let o = within(
        buoy()
            .arg("run")
            .arg(quickstart())
            .args(["--node", "alpha", "--node", "beta", "--output"])
            .arg(out.path())
            .output(),
    )
    .await
    .unwrap();
    let stdout = succeeded(&o);
    // Piped, progress is plain lines (no bars, no escape codes), ending with each plugin done,
    // and the status page's URL is given.
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!stderr.contains('\x1b'), "{stderr}");
    assert!(
        stderr.contains("buoy: status page: http://127.0.0.1:"),
        "{stderr}"
    );
    assert!(
        stderr.contains("buoy: hello-e2e: 1/1 results · ✓ complete"),
        "{stderr}"
    );
    assert!(
        stderr.contains("buoy: node-info: 2/2 results · ✓ complete"),
        "{stderr}"
    );
    let tarball = tarball_from(&stdout);
    assert!(tarball.starts_with(std::fs::canonicalize(out.path()).unwrap()));
    let entries = tarball_entries(&tarball);
    for e in [
        "meta/config.json",
        "meta/info.json",
        "plugins/hello-e2e/results/global/junit_01.xml",
        "plugins/node-info/results/alpha/node-info.txt",
        "plugins/node-info/results/beta/node-info.txt",
    ] {
        assert!(
            entries.contains(&e.to_string()),
            "{e} missing from {entries:?}"
        );
    }
    assert!(
        stdout.contains(
            "Plugin: hello-e2e\nStatus: passed\nTotal: 5\nPassed: 4\nFailed: 0\nSkipped: 1\n"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("Plugin: node-info\nStatus: passed\nTotal: 2\nPassed: 2\n"),
        "{stdout}"
    );
    for e in [
        "plugins/hello-e2e/sonobuoy_results.yaml",
        "plugins/node-info/sonobuoy_results.yaml",
    ] {
        assert!(entries.contains(&e.to_string()), "{e} missing");
    }

    // `buoy results` reads the tarball with the expected counts and exits 0.
    let o = within(
        buoy()
            .arg("results")
            .arg(&tarball)
            .args(["--format", "json"])
            .output(),
    )
    .await
    .unwrap();
    succeeded(&o);
    let reports: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        reports,
        serde_json::json!([
            {"plugin": "hello-e2e", "status": "passed", "total": 5, "passed": 4, "failed": 0,
             "skipped": 1, "counts": {"passed": 4, "skipped": 1}, "failed-tests": []},
            {"plugin": "node-info", "status": "passed", "total": 2, "passed": 2, "failed": 0,
             "skipped": 0, "counts": {"passed": 2}, "failed-tests": []},
        ])
    );
    // What Sonobuoy's reader needs (compat §5.6): exact paths, a v0.15+ Version, the plugin list.
    let config: serde_json::Value =
        serde_json::from_slice(&tar_file(&tarball, "meta/config.json")).unwrap();
    assert_eq!(config["Version"], "v0.57.5");
    let info: serde_json::Value =
        serde_json::from_slice(&tar_file(&tarball, "meta/info.json")).unwrap();
    assert_eq!(
        info["plugins"],
        serde_json::json!(["hello-e2e", "node-info"])
    );
    // Nothing but the run directory, the tarball and its seal record is left behind.
    let mut left: Vec<String> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left.len(), 3, "{left:?}");
    assert!(left[0].starts_with(".buoy-sealed-"), "{left:?}");
}

#[tokio::test]
async fn a_plugin_that_fails_becomes_an_error_result() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.yaml"),
        "sonobuoy-config: {driver: Job, plugin-name: bad}\nspec:\n  command: [/bin/sh, -c, 'echo boom >&2; exit 3']\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("silent.yaml"),
        "sonobuoy-config: {driver: DaemonSet, plugin-name: silent}\nspec:\n  command: [/bin/sh, -c, 'exit 0']\n",
    )
    .unwrap();
    let out = dir.path().join("out");
    let o = within(
        buoy()
            .arg("run")
            .arg(dir.path())
            .args(["--node", "n1", "--output"])
            .arg(&out)
            .output(),
    )
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{stdout}");
    let tarball = tarball_from(&stdout);
    let run = tarball
        .parent()
        .unwrap()
        .join(&tarball.file_name().unwrap().to_str().unwrap()[22..58]);
    let bad = std::fs::read_to_string(run.join("plugins/bad/errors/global/error.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&bad).unwrap();
    assert!(
        v["error"].as_str().unwrap().contains("exit status: 3"),
        "{bad}"
    );
    assert!(v["log"].as_str().unwrap().contains("boom"), "{bad}");
    let silent = std::fs::read_to_string(run.join("plugins/silent/errors/n1/error.json")).unwrap();
    assert!(silent.contains("without writing"), "{silent}");

    // The failures are results too: `buoy results` names them and exits 1.
    let o = within(buoy().arg("results").arg(&tarball).output())
        .await
        .unwrap();
    let report = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{report}");
    assert!(report.contains("Plugin: bad\nStatus: failed\n"), "{report}");
    assert!(report.contains("Failed tests:\n"), "{report}");
    assert!(
        !report.contains("n1: "),
        "nodes are named only on request: {report}"
    );
    let o = within(
        buoy()
            .arg("results")
            .arg(&tarball)
            .arg("--failed-by-node")
            .output(),
    )
    .await
    .unwrap();
    let report = String::from_utf8_lossy(&o.stdout);
    assert!(report.contains("n1: "), "{report}");
}

/// The relay's port is bound before the plugin starts, so an update sent as the plugin's very
/// first act is relayed, not refused; `set -e` makes a refused `buoy progress` fail the plugin.
#[tokio::test]
async fn a_progress_update_sent_as_the_plugin_starts_is_relayed() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("eager.yaml"),
        r#"sonobuoy-config: {driver: Job, plugin-name: eager, result-format: raw}
spec:
  command: [/bin/sh, -c]
  args:
  - |
    set -eu
    buoy progress --msg "first words" --total 1 --completed 0
    echo ok > "$SONOBUOY_RESULTS_DIR/r.txt"
    printf '%s' "$SONOBUOY_RESULTS_DIR/r.txt" > "$SONOBUOY_RESULTS_DIR/done"
"#,
    )
    .unwrap();
    let out = dir.path().join("out");
    let o = within(
        buoy()
            .arg("run")
            .arg(dir.path().join("eager.yaml"))
            .arg("--output")
            .arg(&out)
            .output(),
    )
    .await
    .unwrap();
    let stdout = succeeded(&o);
    assert!(
        stdout.contains("Plugin: eager\nStatus: passed\n"),
        "{stdout}"
    );
}

/// One file's bytes from a `.tar.gz`.
fn tar_file(tarball: &Path, name: &str) -> Vec<u8> {
    use std::io::Read;
    let f = std::fs::File::open(tarball).unwrap();
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(f));
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        if e.path().unwrap().to_str() == Some(name) {
            let mut b = Vec::new();
            e.read_to_end(&mut b).unwrap();
            return b;
        }
    }
    panic!("{name} not in {}", tarball.display());
}

#[tokio::test]
async fn a_manifest_without_a_command_is_refused_up_front() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("img.yaml"),
        "sonobuoy-config: {driver: Job, plugin-name: img}\nspec:\n  image: example/e2e\n",
    )
    .unwrap();
    let o = within(
        buoy()
            .arg("run")
            .arg(dir.path())
            .arg("--output")
            .arg(dir.path().join("o"))
            .output(),
    )
    .await
    .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("plugin img") && err.contains("spec.command"),
        "{err}"
    );
}

#[tokio::test]
async fn no_plugin_process_outlives_an_interrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("grandchild.pid");
    std::fs::write(
        dir.path().join("slow.yaml"),
        format!(
            "sonobuoy-config: {{driver: Job, plugin-name: slow}}\nspec:\n  command: [/bin/sh, -c, 'sleep 300 & echo $! > {}; wait']\n",
            pidfile.display()
        ),
    )
    .unwrap();
    let mut child = buoy()
        .arg("run")
        .arg(dir.path())
        .arg("--output")
        .arg(dir.path().join("out"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = within(async {
        loop {
            if let Some(p) = std::fs::read_to_string(&pidfile)
                .ok()
                .and_then(|s| s.trim().parse::<u32>().ok())
            {
                return p;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    let buoy_pid = child.id().unwrap().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-INT", &buoy_pid])
        .status()
        .unwrap()
        .success());
    let status = within(child.wait()).await.unwrap();
    assert_eq!(status.code(), Some(1));
    // The plugin's own child is gone too (its process group was killed).
    within(async {
        while Path::new(&format!("/proc/{pid}")).exists() && !is_zombie(pid) {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.split(") ").nth(1).is_some_and(|r| r.starts_with('Z')))
        .unwrap_or(true)
}

/// Runs `buoy ARGS` with stderr on a pseudo-terminal and returns (exit code, stdout, what the
/// terminal showed).
async fn in_a_terminal(args: &[&std::ffi::OsStr]) -> (Option<i32>, String, String) {
    use std::io::Read;
    let size = nix::pty::Winsize {
        ws_row: 40,
        ws_col: 140,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = nix::pty::openpty(Some(&size), None).unwrap();
    let mut child = buoy()
        .args(args)
        .env("TERM", "xterm-256color")
        .env_remove("NO_COLOR")
        .env("BUOY_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::from(pty.slave))
        .spawn()
        .unwrap();
    // Drain the terminal as it is written, or the child would block on a full pty.
    let mut master = std::fs::File::from(pty.master);
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        // EIO once every writer is gone: the terminal has nothing more to show.
        while let Ok(n @ 1..) = master.read(&mut buf) {
            seen.extend_from_slice(&buf[..n]);
        }
        let _ = tx.send(seen);
    });
    let mut stdout = String::new();
    let mut out = child.stdout.take().unwrap();
    within(tokio::io::AsyncReadExt::read_to_string(
        &mut out,
        &mut stdout,
    ))
    .await
    .unwrap();
    let status = within(child.wait()).await.unwrap();
    let seen = within(rx).await.unwrap();
    (
        status.code(),
        stdout,
        String::from_utf8_lossy(&seen).into_owned(),
    )
}

#[tokio::test]
async fn in_a_terminal_buoy_run_draws_a_bar_per_plugin() {
    let out = tempfile::tempdir().unwrap();
    let qs = quickstart();
    let (code, stdout, term) = in_a_terminal(&[
        "run".as_ref(),
        qs.as_os_str(),
        "--output".as_ref(),
        out.path().as_os_str(),
    ])
    .await;
    assert_eq!(code, Some(0), "{stdout}\n{term}");
    // indicatif's redraws move the cursor and clear lines; the bars end full and say so.
    assert!(term.contains("\x1b["), "no terminal control in {term:?}");
    for plugin in ["hello-e2e", "node-info"] {
        let bar = term
            .lines()
            .rev()
            .find(|l| l.contains(plugin) && l.contains('['))
            .unwrap_or_else(|| panic!("no bar for {plugin} in {term:?}"));
        assert!(bar.contains("========"), "{bar:?}");
        assert!(bar.contains("1/1") && bar.contains("✓ complete"), "{bar:?}");
    }
    assert!(
        !term.contains("buoy: hello-e2e:"),
        "plain lines on a terminal: {term:?}"
    );
    assert!(
        stdout.contains("Plugin: hello-e2e\nStatus: passed"),
        "{stdout}"
    );

    // --quiet keeps the terminal to plain lines.
    let out = tempfile::tempdir().unwrap();
    let (code, _, term) = in_a_terminal(&[
        "run".as_ref(),
        qs.as_os_str(),
        "--quiet".as_ref(),
        "--output".as_ref(),
        out.path().as_os_str(),
    ])
    .await;
    assert_eq!(code, Some(0), "{term}");
    assert!(
        term.contains("buoy: hello-e2e: 1/1 results · ✓ complete"),
        "{term:?}"
    );
    assert!(!term.contains("========"), "{term:?}");
}

#[tokio::test]
async fn serve_after_keeps_the_page_and_tarball_up_until_interrupted() {
    use tokio::io::AsyncBufReadExt;
    let out = tempfile::tempdir().unwrap();
    let mut child = buoy()
        .arg("run")
        .arg(quickstart())
        .arg("--serve-after")
        .arg("--output")
        .arg(out.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let url = within(async {
        while let Some(l) = lines.next_line().await.unwrap() {
            if let Some(rest) = l.strip_prefix("buoy: the run is over; serving its status page at ")
            {
                return rest.split_whitespace().next().unwrap().to_string();
            }
        }
        panic!("buoy ended without serving its page");
    })
    .await;
    let c = Client::new(url.trim_end_matches('/'), None).unwrap();
    let get = |p: &'static str| {
        send(
            &c,
            http::Method::GET,
            p,
            HeaderMap::new(),
            full(bytes::Bytes::new()),
        )
    };
    assert_eq!(get("/").await.status, 200);
    let o: buoy_wire::overview::Overview =
        serde_json::from_slice(&get("/api/v1/overview").await.body).unwrap();
    assert_eq!(o.status, "complete");
    let t = get("/api/v1/tarball").await;
    assert_eq!(t.status, 200);
    assert_eq!(
        t.headers
            .get(buoy_wire::routes::TARBALL_SHA256_HEADER)
            .unwrap(),
        o.tarball.unwrap().sha256.as_str()
    );
    let pid = child.id().unwrap().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    let status = within(child.wait()).await.unwrap();
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn in_a_terminal_buoy_status_watch_draws_bars_then_the_table() {
    let mut a = spawn_aggregator(
        &[("p", "n1"), ("p", "n2"), ("e2e", "global")],
        insecure(),
        None,
        None,
    )
    .await;
    let c = a.client();
    let cd = [("content-disposition", "attachment;filename=r.txt")];
    for path in [
        "/api/v1/results/by-node/n1/p",
        "/api/v1/results/by-node/n2/p",
        "/api/v1/results/global/e2e",
    ] {
        assert_eq!(put(&c, path, &cd, "x").await.status, 200);
    }
    a.complete().await;
    let url = a.url();
    let (code, stdout, term) = in_a_terminal(&[
        "status".as_ref(),
        "--watch".as_ref(),
        "--url".as_ref(),
        url.as_ref(),
    ])
    .await;
    assert_eq!(code, Some(0), "{stdout}\n{term}");
    for (plugin, n) in [("p", "2/2"), ("e2e", "1/1")] {
        let bar = term
            .lines()
            .rev()
            .find(|l| l.contains(plugin) && l.contains('['))
            .unwrap_or_else(|| panic!("no bar for {plugin} in {term:?}"));
        assert!(bar.contains(n) && bar.contains("✓ complete"), "{bar:?}");
    }
    assert!(stdout.contains("The run is complete"), "{stdout}");
    a.finished().await;
}
