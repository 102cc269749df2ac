//! The `buoy aggregator` and `buoy worker` binaries, as an operator runs them.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::*;

pub fn buoy() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_buoy"));
    c.env("BUOY_LOG", "info")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    c
}

/// Starts `buoy aggregator ARGS` and returns it with the address it listens on.
pub async fn start_aggregator(args: &[&str]) -> (Child, SocketAddr) {
    let (child, addr, _) = start_aggregator_logged(args).await;
    (child, addr)
}

/// `start_aggregator`, also returning everything the aggregator writes to stderr (the task
/// ends when the aggregator closes stderr).
pub async fn start_aggregator_logged(
    args: &[&str],
) -> (Child, SocketAddr, tokio::task::JoinHandle<String>) {
    let (child, addr, _, log) = start_logged(args, false).await;
    (child, addr, log)
}

/// `start_aggregator_logged` with `--status-page` among `args`: also the page's address.
pub async fn start_aggregator_with_page(
    args: &[&str],
) -> (
    Child,
    SocketAddr,
    SocketAddr,
    tokio::task::JoinHandle<String>,
) {
    let (child, addr, page, log) = start_logged(args, true).await;
    (child, addr, page.unwrap(), log)
}

async fn start_logged(
    args: &[&str],
    page: bool,
) -> (
    Child,
    SocketAddr,
    Option<SocketAddr>,
    tokio::task::JoinHandle<String>,
) {
    let mut child = buoy()
        .arg("aggregator")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut log = String::new();
    let (addr, page_addr) = within(async {
        let (mut addr, mut page_addr) = (None, None);
        loop {
            let line = lines
                .next_line()
                .await
                .unwrap()
                .expect("aggregator exited before listening");
            log.push_str(&line);
            log.push('\n');
            if let Some(rest) = line.split(" listening on ").nth(1) {
                addr = rest.split(';').next().unwrap().parse::<SocketAddr>().ok();
            }
            if let Some(rest) = line.split("status page: http://").nth(1) {
                page_addr = rest.trim_end_matches('/').parse::<SocketAddr>().ok();
            }
            if let Some(a) = addr.filter(|_| !page || page_addr.is_some()) {
                return (a, page_addr);
            }
        }
    })
    .await;
    // Keep draining stderr so the child never blocks on a full pipe.
    let log = tokio::spawn(async move {
        while let Ok(Some(l)) = lines.next_line().await {
            log.push_str(&l);
            log.push('\n');
        }
        log
    });
    (child, addr, page_addr, log)
}

pub async fn exit_and_stdout(mut child: Child) -> (i32, String) {
    let mut out = String::new();
    let mut stdout = child.stdout.take().unwrap();
    let status = within(async {
        stdout.read_to_string(&mut out).await.unwrap();
        child.wait().await.unwrap()
    })
    .await;
    (status.code().unwrap_or(-1), out)
}

pub fn sigterm(child: &Child) {
    let pid = child.id().unwrap().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
}

#[tokio::test]
async fn the_aggregator_binary_seals_then_exits_0() {
    let out = tempfile::tempdir().unwrap();
    let (child, addr) = start_aggregator(&[
        "--insecure-http",
        "--expect",
        "p=n1,n2",
        "--expect",
        "e2e=global",
        "--bind",
        "127.0.0.1:0",
        "--output",
        out.path().to_str().unwrap(),
    ])
    .await;
    let c = Client::new(&format!("http://{addr}"), None).unwrap();
    assert_eq!(
        put(
            &c,
            "/api/v1/results/by-node/n1/p",
            &[("content-type", "application/gzip")],
            tar_gz(&[("a.txt", b"a")])
        )
        .await
        .status,
        200
    );
    assert_eq!(
        put(
            &c,
            "/api/v1/results/by-node/n1/p",
            &[("content-type", "application/gzip")],
            tar_gz(&[("a.txt", b"a")])
        )
        .await
        .status,
        409
    );
    assert_eq!(
        put(&c, "/api/v1/results/by-node/n3/p", &[], "x")
            .await
            .status,
        403
    );
    assert_eq!(
        post(&c, "/api/v1/progress/by-node/n2/p", r#"{"msg":"n2 half"}"#)
            .await
            .status,
        200
    );
    assert_eq!(
        post(&c, "/api/v1/progress/global/e2e", r#"{"msg":"e2e half"}"#)
            .await
            .status,
        200
    );
    assert_eq!(
        post(&c, "/api/v1/progress/global/e2e", "{bad").await.status,
        400
    );
    let v = status_json(&c).await;
    assert_eq!(
        (
            v["plugins"][1]["progress"]["msg"].as_str(),
            v["plugins"][2]["progress"]["msg"].as_str()
        ),
        (Some("n2 half"), Some("e2e half"))
    );
    assert_eq!(
        put(&c, "/api/v1/results/by-node/n2/p", &[], "two")
            .await
            .status,
        200
    );
    assert_eq!(
        put(&c, "/api/v1/results/global/e2e", &[], "e2e")
            .await
            .status,
        200
    );
    let (code, stdout) = exit_and_stdout(child).await;
    assert_eq!(code, 0);
    let tarball = Path::new(stdout.trim());
    assert!(
        tarball.starts_with(out.path()) && tarball.exists(),
        "{stdout}"
    );
    let entries = tarball_entries(tarball);
    assert!(
        entries.contains(&"plugins/p/results/n1/a.txt".to_string()),
        "{entries:?}"
    );
    assert!(entries.contains(&"meta/config.json".to_string()));
}

#[tokio::test]
async fn with_no_exit_the_status_carries_the_tarball_sha_until_sigterm() {
    let out = tempfile::tempdir().unwrap();
    let (child, addr) = start_aggregator(&[
        "--insecure-http",
        "--no-exit",
        "--expect",
        "e2e=global",
        "--bind",
        "127.0.0.1:0",
        "--output",
        out.path().to_str().unwrap(),
    ])
    .await;
    let c = Client::new(&format!("http://{addr}"), None).unwrap();
    assert_eq!(
        put(&c, "/api/v1/results/global/e2e", &[], "e2e")
            .await
            .status,
        200
    );
    let v = within(async {
        loop {
            let v = status_json(&c).await;
            if v["status"] == "complete" {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    sigterm(&child);
    let (code, stdout) = exit_and_stdout(child).await;
    assert_eq!(code, 0);
    let tarball = Path::new(stdout.trim());
    assert_eq!(v["tar-info"]["sha256"], sha256_file(tarball));
}

#[tokio::test]
async fn certs_dir_serves_mtls_to_a_real_worker_process() {
    let out = tempfile::tempdir().unwrap();
    let certs = tempfile::tempdir().unwrap();
    let (child, addr) = start_aggregator(&[
        "--certs",
        certs.path().to_str().unwrap(),
        "--advertise",
        "127.0.0.1",
        "--expect",
        "systemd_logs=n1",
        "--bind",
        "127.0.0.1:0",
        "--output",
        out.path().to_str().unwrap(),
    ])
    .await;
    let key = std::fs::read_to_string(certs.path().join("systemd_logs.key.pem")).unwrap();
    assert!(key.starts_with("-----BEGIN EC PRIVATE KEY-----"), "{key}");
    let results = tempfile::tempdir().unwrap();
    std::fs::write(
        results.path().join("logs.tar.gz"),
        tar_gz(&[("journal.txt", b"boot ok")]),
    )
    .unwrap();
    std::fs::write(
        results.path().join("done"),
        results.path().join("logs.tar.gz").to_str().unwrap(),
    )
    .unwrap();
    let port = buoy_testenv::free_port();
    let read = |f: &str| std::fs::read_to_string(certs.path().join(f)).unwrap();
    let worker = buoy()
        .args([
            "worker",
            "single-node",
            "-v=6",
            "--level=trace",
            "--logtostderr",
            "--sleep=0",
        ])
        .env(
            "AGGREGATOR_URL",
            format!("https://127.0.0.1:{}", addr.port()),
        )
        .env("NODE_NAME", "n1")
        .env("RESULT_TYPE", "systemd_logs")
        .env("SONOBUOY_RESULTS_DIR", results.path())
        .env("SONOBUOY_PROGRESS_PORT", port.to_string())
        .env("SONOBUOY_DONE_FILE_DELAY", "0s")
        .env("CA_CERT", read("ca.pem"))
        .env("CLIENT_CERT", read("systemd_logs.crt.pem"))
        .env("CLIENT_KEY", key)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    assert!(within(worker).await.unwrap().success());
    let (code, stdout) = exit_and_stdout(child).await;
    assert_eq!(code, 0);
    assert!(tarball_entries(Path::new(stdout.trim()))
        .contains(&"plugins/systemd_logs/results/n1/journal.txt".to_string()));
}

#[tokio::test]
async fn an_expect_file_adds_to_expect_and_a_bad_line_is_named_by_its_number() {
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("expect.txt");
    std::fs::write(&file, "# nodes of p\n\np=n1\n  p=n2  \n").unwrap();
    let (child, addr) = start_aggregator(&[
        "--insecure-http",
        "--expect-file",
        file.to_str().unwrap(),
        "--expect=e2e=global",
        "--bind",
        "127.0.0.1:0",
        "--output",
        out.path().to_str().unwrap(),
    ])
    .await;
    let c = Client::new(&format!("http://{addr}"), None).unwrap();
    assert_eq!(
        put(&c, "/api/v1/results/by-node/n3/p", &[], "x")
            .await
            .status,
        403
    );
    for path in [
        "/api/v1/results/by-node/n1/p",
        "/api/v1/results/by-node/n2/p",
        "/api/v1/results/global/e2e",
    ] {
        assert_eq!(put(&c, path, &[], "r").await.status, 200, "{path}");
    }
    let (code, stdout) = exit_and_stdout(child).await;
    assert_eq!(
        code, 0,
        "all three expected results sealed the run: {stdout}"
    );

    for (text, want) in [
        ("p=n1\nnot a spec\n", "line 2: expected PLUGIN=NODE"),
        ("# nothing\n", "no PLUGIN=NODE"),
    ] {
        std::fs::write(&file, text).unwrap();
        let o = within(
            buoy()
                .args(["aggregator", "--insecure-http", "--bind", "127.0.0.1:0"])
                .arg("--expect-file")
                .arg(&file)
                .arg("--output")
                .arg(out.path())
                .output(),
        )
        .await
        .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert!(err.contains(want), "{err}");
    }
}

#[tokio::test]
async fn bad_invocations_say_what_is_wrong() {
    let o = within(buoy().args(["aggregator", "--insecure-http"]).output())
        .await
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("--expect"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = within(
        buoy()
            .args(["aggregator", "--expect", "p=n1", "--bind", "127.0.0.1:0"])
            .output(),
    )
    .await
    .unwrap();
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("--certs DIR"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = within(
        buoy()
            .args([
                "aggregator",
                "--insecure-http",
                "--expect",
                "p",
                "--bind",
                "127.0.0.1:0",
            ])
            .output(),
    )
    .await
    .unwrap();
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("PLUGIN=NODE"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = within(
        buoy()
            .args(["worker", "global"])
            .env_remove("AGGREGATOR_URL")
            .output(),
    )
    .await
    .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("AGGREGATOR_URL"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[tokio::test]
async fn a_standalone_aggregator_post_processes_by_its_manifests_and_prints_the_summary() {
    let out = tempfile::tempdir().unwrap();
    let manifests = out.path().join("plugins.d");
    std::fs::create_dir_all(&manifests).unwrap();
    std::fs::write(
        manifests.join("e2e.yaml"),
        "sonobuoy-config: {driver: Job, plugin-name: e2e, result-format: junit}\nspec: {command: [run]}\n",
    )
    .unwrap();
    let (child, addr, log) = start_aggregator_logged(&[
        "--insecure-http",
        "--expect",
        "e2e=global",
        "--expect",
        "logs=n1",
        "--plugins",
        manifests.to_str().unwrap(),
        "--bind",
        "127.0.0.1:0",
        "--output",
        out.path().to_str().unwrap(),
    ])
    .await;
    let c = Client::new(&format!("http://{addr}"), None).unwrap();
    let junit = r#"<testsuite name="s"><testcase name="ok"/><testcase name="bad"><failure message="no"/></testcase></testsuite>"#;
    let cd = [("content-disposition", "attachment;filename=junit.xml")];
    assert_eq!(
        put(&c, "/api/v1/results/global/e2e", &cd, junit)
            .await
            .status,
        200
    );
    assert_eq!(
        put(&c, "/api/v1/results/by-node/n1/logs", &[], "x")
            .await
            .status,
        200
    );
    let (code, stdout) = exit_and_stdout(child).await;
    assert_eq!(code, 0);
    let log = within(log).await.unwrap();
    assert!(
        log.contains("Plugin: e2e\nStatus: failed\nTotal: 2\nPassed: 1\nFailed: 1\nSkipped: 0\n\nFailed tests:\nbad\n"),
        "{log}"
    );
    assert!(log.contains("Plugin: logs\nStatus: passed\n"), "{log}");
    let o = within(
        buoy()
            .arg("results")
            .arg(stdout.trim())
            .args(["-p", "e2e"])
            .output(),
    )
    .await
    .unwrap();
    assert_eq!(o.status.code(), Some(1));
}

#[tokio::test]
async fn a_cause_is_said_once_and_a_closed_stdout_is_quiet() {
    let o = within(buoy().args(["run", "/nonexistent-buoy-manifest"]).output())
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");

    let mut a = spawn_aggregator(&[("p", "n1")], insecure(), None, None).await;
    assert_eq!(
        put(&a.client(), "/api/v1/results/by-node/n1/p", &[], "r")
            .await
            .status,
        200
    );
    let fin = a.finished().await;
    // A reader that has already gone: every write to stdout fails with EPIPE.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let child = buoy()
        .args(["results", fin.tarball.to_str().unwrap(), "-m", "dump"])
        .stdout(writer)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // `output()` would capture stdout itself; wait_with_output keeps our closed pipe.
    let o = within(child.wait_with_output()).await.unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains("Broken pipe"), "{err}");
    assert!(err.is_empty(), "{err}");
    assert_eq!(o.status.code(), Some(141));
}

/// `go test -json` written with lowercase keys: Go's decoder (and so Sonobuoy) reads
/// `{"action":"fail","test":"t2"}` as a failed `t2`; Buoy used to report the file as passed.
#[tokio::test]
async fn a_gojson_failure_with_lowercase_keys_fails_the_plugin_end_to_end() {
    let out = tempfile::tempdir().unwrap();
    let manifest = out.path().join("g.yaml");
    std::fs::write(
        &manifest,
        "sonobuoy-config:\n  driver: Job\n  plugin-name: g\n  result-format: gojson\nspec:\n  name: plugin\n  image: x\n",
    )
    .unwrap();
    let (child, addr, log) = start_aggregator_logged(&[
        "--insecure-http",
        "--expect",
        "g=global",
        "--plugins",
        manifest.to_str().unwrap(),
        "--bind",
        "127.0.0.1:0",
        "--output",
        out.path().to_str().unwrap(),
    ])
    .await;
    let c = Client::new(&format!("http://{addr}"), None).unwrap();
    let body = "{\"action\":\"run\",\"test\":\"t2\"}\n{\"action\":\"fail\",\"test\":\"t2\"}\n";
    let cd = [("content-disposition", "attachment;filename=out.json")];
    let r = put(&c, "/api/v1/results/global/g", &cd, body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let (code, stdout) = exit_and_stdout(child).await;
    let log = within(log).await.unwrap();
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("Plugin: g\nStatus: failed\n"), "{log}");
    let o = within(buoy().arg("results").arg(stdout.trim()).output())
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{text}");
    assert!(text.contains("Failed tests:\nt2\n"), "{text}");
    // Sonobuoy's -s/--skip-prefix is accepted (it used to be a usage error).
    let o = within(
        buoy()
            .arg("results")
            .arg(stdout.trim())
            .args(["-p", "g", "-m", "detailed", "-s"])
            .output(),
    )
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains(r#""name":"t2","status":"failed""#), "{text}");
}

/// The README's multi-host recipe, on one host: `buoy certs` makes the certificates, the
/// aggregator serves mTLS from that directory, and a worker whose environment comes from
/// `eval "$(buoy certs env ...)"` delivers.
#[tokio::test]
async fn buoy_certs_and_a_worker_deliver_over_mtls() {
    let d = tempfile::tempdir().unwrap();
    let certs = d.path().join("certs");
    let certs_s = certs.to_str().unwrap();
    let ok = |o: std::process::Output| {
        succeeded(&o);
        o
    };
    ok(within(
        buoy()
            .args(["certs", "init", certs_s, "--advertise", "127.0.0.1"])
            .output(),
    )
    .await
    .unwrap());
    ok(within(
        buoy()
            .args(["certs", "plugin", certs_s, "node-checks"])
            .output(),
    )
    .await
    .unwrap());
    // Without a CA first, `plugin` says what to do.
    let o = within(
        buoy()
            .args([
                "certs",
                "plugin",
                d.path().join("none").to_str().unwrap(),
                "x",
            ])
            .output(),
    )
    .await
    .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("buoy certs init"));

    let out = d.path().join("out");
    let (child, addr, log) = start_aggregator_logged(&[
        "--certs",
        certs_s,
        "--advertise",
        "127.0.0.1",
        "--bind",
        "127.0.0.1:0",
        "--output",
        out.to_str().unwrap(),
        "--expect",
        "node-checks=host-a",
    ])
    .await;
    let results = d.path().join("results");
    std::fs::create_dir_all(&results).unwrap();
    std::fs::write(results.join("checks.txt"), "all good\n").unwrap();
    std::fs::write(
        results.join("done"),
        results.join("checks.txt").to_str().unwrap(),
    )
    .unwrap();
    let script = format!(
        "eval \"$('{bin}' certs env '{certs_s}' node-checks)\" && exec '{bin}' worker single-node --sleep=0",
        bin = env!("CARGO_BIN_EXE_buoy"),
    );
    let worker = within(
        Command::new("sh")
            .args(["-c", &script])
            .env(
                "AGGREGATOR_URL",
                format!("https://127.0.0.1:{}", addr.port()),
            )
            .env("NODE_NAME", "host-a")
            .env("RESULT_TYPE", "node-checks")
            .env("SONOBUOY_RESULTS_DIR", &results)
            .env("SONOBUOY_PROGRESS_PORT", "0")
            .stdin(Stdio::null())
            .output(),
    )
    .await
    .unwrap();
    succeeded(&worker);
    let (code, stdout) = exit_and_stdout(child).await;
    let log = within(log).await.unwrap();
    assert_eq!(code, 0, "{log}");
    let tarball = stdout.trim();
    assert!(tarball_entries(Path::new(tarball))
        .iter()
        .any(|e| e == "plugins/node-checks/results/host-a/checks.txt"));
}

#[tokio::test]
async fn log_format_json_writes_one_json_object_per_log_line() {
    let out = tempfile::tempdir().unwrap();
    let (child, addr, log) = start_aggregator_logged(&[
        "--log-format",
        "json",
        "--insecure-http",
        "--expect",
        "p=n1",
        "--bind",
        "127.0.0.1:0",
        "--output",
        out.path().to_str().unwrap(),
    ])
    .await;
    let c = Client::new(&format!("http://{addr}"), None).unwrap();
    assert_eq!(
        put(&c, "/api/v1/results/by-node/n1/p", &[], "r")
            .await
            .status,
        200
    );
    let (code, _) = exit_and_stdout(child).await;
    let log = within(log).await.unwrap();
    assert_eq!(code, 0, "{log}");
    let events: Vec<serde_json::Value> = log
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(
        events
            .iter()
            .any(|e| e["level"] == "INFO" && e["fields"]["message"] == "result received"),
        "{log}"
    );
    assert!(!log.contains(" INFO "), "a human-format line: {log}");
}

/// The first run directory in `out` not in `known`, once there is one.
async fn new_run_dir(out: &Path, known: &[&str]) -> String {
    within(async {
        loop {
            for e in std::fs::read_dir(out).unwrap().flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if e.path().is_dir()
                    && name.parse::<uuid::Uuid>().is_ok()
                    && !known.contains(&name.as_str())
                {
                    return name;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

fn run_of(log: &str) -> String {
    log.split("aggregator for run ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn a_restarted_standalone_aggregator_resumes_the_unfinished_run_without_run_id() {
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().to_str().unwrap();
    let args = [
        "--insecure-http",
        "--expect",
        "p=n1,n2",
        "--bind",
        "127.0.0.1:0",
        "--output",
        dir,
    ];
    let cd = [("content-disposition", "attachment;filename=r.txt")];
    let (mut first, addr, log) = start_aggregator_logged(&args).await;
    let c = Client::new(&format!("http://{addr}"), None).unwrap();
    assert_eq!(
        put(&c, "/api/v1/results/by-node/n1/p", &cd, b"one".to_vec())
            .await
            .status,
        200
    );
    first.kill().await.unwrap();
    let run = run_of(&log.await.unwrap());

    // Started again the same way: the same run, n1 kept (and not taken twice), n2 completes it.
    let (second, addr, log) = start_aggregator_logged(&args).await;
    let c = Client::new(&format!("http://{addr}"), None).unwrap();
    assert_eq!(
        put(&c, "/api/v1/results/by-node/n1/p", &cd, b"again".to_vec())
            .await
            .status,
        409
    );
    assert_eq!(
        put(&c, "/api/v1/results/by-node/n2/p", &cd, b"two".to_vec())
            .await
            .status,
        200
    );
    let (code, stdout) = exit_and_stdout(second).await;
    assert_eq!(code, 0);
    let log = log.await.unwrap();
    assert_eq!(run_of(&log), run);
    assert!(
        log.contains(&format!("resuming the unfinished run {run}")),
        "{log}"
    );
    assert!(
        stdout.trim().ends_with(&format!("_sonobuoy_{run}.tar.gz")),
        "{stdout}"
    );
    let stored = out.path().join(&run).join("plugins/p/results/n1/r.txt");
    assert_eq!(std::fs::read(stored).unwrap(), b"one");

    // A sealed run is not picked up again: the next start is a new run. (Each is killed once
    // its run directory exists, which is just after its listening line.)
    let (mut third, _, _) = start_aggregator_logged(&args).await;
    let third_run = new_run_dir(out.path(), &[&run]).await;
    third.kill().await.unwrap();

    // --new-run leaves that unfinished run alone; with two unfinished runs the choice is the
    // operator's, and the message names both.
    let with_new: Vec<&str> = args.iter().copied().chain(["--new-run"]).collect();
    let (mut fourth, _, log) = start_aggregator_logged(&with_new).await;
    let fourth_run = new_run_dir(out.path(), &[&run, &third_run]).await;
    fourth.kill().await.unwrap();
    let log = log.await.unwrap();
    assert!(!log.contains("resuming"), "{log}");
    let refused = within(buoy().arg("aggregator").args(args).output())
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{err}");
    assert!(
        err.contains("2 unfinished runs") && err.contains(&third_run) && err.contains(&fourth_run),
        "{err}"
    );
}

/// `buoy images` lists what a run pulls: the aggregator's image, the plugins', and with
/// --e2e-test the images the conformance tests pull (as that binary lists them, with the
/// registry list applied).
#[tokio::test]
async fn images_lists_every_image_a_run_pulls() {
    let dir = tempfile::tempdir().unwrap();
    let e2e = dir.path().join("e2e.test");
    std::fs::write(
        &e2e,
        "#!/bin/sh\n[ \"$1\" = --list-images ] || exit 2\necho registry.k8s.io/e2e-test-images/agnhost:2.43\necho \"${KUBE_TEST_REPO_LIST:+mirrored}\"\n",
    )
    .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&e2e, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let repos = dir.path().join("repos.yaml");
    std::fs::write(&repos, "dockerLibraryRegistry: m\n").unwrap();
    let out = buoy()
        .args([
            "images",
            "--kubernetes-version",
            "v1.26.0",
            "--image",
            "my/buoy:1",
            "--e2e-test",
        ])
        .arg(&e2e)
        .arg("--e2e-repo-config")
        .arg(&repos)
        .output()
        .await
        .unwrap();
    succeeded(&out);
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "my/buoy:1\nregistry.k8s.io/conformance:v1.26.0\nsonobuoy/systemd-logs:v0.4\nregistry.k8s.io/e2e-test-images/agnhost:2.43\nmirrored\n"
    );
    // Without a version or a cluster to ask, it says what to give.
    let out = buoy()
        .args(["images", "--kubeconfig", "/nonexistent"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--kubernetes-version"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A sealed-run record that is damaged, or names another file, is rebuilt from the run's own
/// tarball: the run stays sealed with its digest (it used to be sealed again under another
/// one), and `GET /api/v1/tarball` never serves a file the record names outside the run (one
/// naming `../../etc/passwd` served that file).
#[tokio::test]
async fn a_damaged_or_lying_sealed_record_is_rebuilt_from_the_runs_tarball() {
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().to_str().unwrap();
    let run = "3f0e2a9c-1b2d-4c5e-8f70-112233445566";
    let args = |extra: &[&'static str]| -> Vec<String> {
        [
            "--insecure-http",
            "--expect",
            "p=n1",
            "--bind",
            "127.0.0.1:0",
            "--output",
            dir,
            "--run-id",
            run,
        ]
        .iter()
        .chain(extra)
        .map(|s| s.to_string())
        .collect()
    };
    let first_args = args(&[]);
    let first_args: Vec<&str> = first_args.iter().map(String::as_str).collect();
    let (first, addr) = start_aggregator(&first_args).await;
    let c = Client::new(&format!("http://{addr}"), None).unwrap();
    let cd = [("content-disposition", "attachment;filename=r.txt")];
    assert_eq!(
        put(&c, "/api/v1/results/by-node/n1/p", &cd, b"one".to_vec())
            .await
            .status,
        200
    );
    let (code, _) = exit_and_stdout(first).await;
    assert_eq!(code, 0);
    let record = out.path().join(format!(".buoy-sealed-{run}.json"));
    let sealed: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&record).unwrap()).unwrap();
    let passwd = std::fs::metadata("/etc/passwd").unwrap().len();
    for damage in [
        serde_json::json!({"name": "../../../../../../etc/passwd", "size": passwd, "sha256": "00", "created": ""}).to_string(),
        "{\"name\": \"202612".to_string(),
    ] {
        std::fs::write(&record, &damage).unwrap();
        let again = args(&["--no-exit"]);
        let again: Vec<&str> = again.iter().map(String::as_str).collect();
        let (mut second, addr) = start_aggregator(&again).await;
        let c = Client::new(&format!("http://{addr}"), None).unwrap();
        // Served once the restart has taken the run as sealed again.
        within(async {
            while crate::status_json(&c).await["status"] != "complete" {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        let got = c
            .get_whole("/api/v1/tarball", http::HeaderMap::new(), 1 << 30)
            .await
            .unwrap();
        second.kill().await.unwrap();
        assert_eq!(got.status, 200, "{damage}");
        assert_eq!(
            got.headers["x-buoy-tarball-sha256"].to_str().unwrap(),
            sealed["sha256"].as_str().unwrap(),
            "{damage}"
        );
        assert!(got.body.starts_with(&[0x1f, 0x8b]), "not the tarball: {damage}");
        let rebuilt: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&record).unwrap()).unwrap();
        assert_eq!(rebuilt["sha256"], sealed["sha256"]);
        assert_eq!(rebuilt["name"], sealed["name"]);
        assert_eq!(
            std::fs::read_to_string(record.with_extension("json.damaged")).unwrap(),
            damage
        );
    }
}
