//! The status page in a real browser: headless Chromium, driven over the DevTools protocol,
//! watches a run while a test client uploads, and the 5,000-node page is loaded and timed.
//! Without Chromium the tests say so and pass, unless `BUOY_REQUIRE_BROWSER` is set (CI sets
//! it, after installing Debian's `chromium`).

use std::path::{Path, PathBuf};
use std::time::Instant;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::*;

/// The browser to drive: `$BUOY_CHROMIUM`, else the first Chromium on `PATH`.
fn chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("BUOY_CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|d| ["chromium", "chromium-browser"].map(|n| d.join(n)))
        .find(|p| p.is_file())
}

/// `None` (with a note) when there is no browser and none is required.
fn browser_or_skip(test: &str) -> Option<PathBuf> {
    match chromium() {
        Some(p) => Some(p),
        None if std::env::var_os("BUOY_REQUIRE_BROWSER").is_some() => {
            panic!("BUOY_REQUIRE_BROWSER is set but no chromium was found (set BUOY_CHROMIUM)")
        }
        None => {
            eprintln!("note: {test} skipped: no chromium on PATH (apt-get install chromium)");
            None
        }
    }
}

/// A headless Chromium in its own process group and profile, killed with the test.
struct Chrome {
    child: std::process::Child,
    _profile: tempfile::TempDir,
    cdp: Cdp,
}

impl Drop for Chrome {
    fn drop(&mut self) {
        let pg = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::killpg(pg, nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

impl Chrome {
    async fn launch(bin: &Path) -> Self {
        use std::os::unix::process::CommandExt;
        let profile = tempfile::tempdir().unwrap();
        let child = std::process::Command::new(bin)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                "--hide-scrollbars",
                "--window-size=1100,1000",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap();
        // Chromium writes the port it chose once DevTools listens.
        let port_file = profile.path().join("DevToolsActivePort");
        let port: u16 = within(async {
            loop {
                if let Some(p) = std::fs::read_to_string(&port_file)
                    .ok()
                    .and_then(|s| s.lines().next().and_then(|l| l.parse().ok()))
                {
                    return p;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        let http = Client::new(&format!("http://127.0.0.1:{port}"), None).unwrap();
        let ws_url = within(async {
            loop {
                let r = send(
                    &http,
                    http::Method::GET,
                    "/json/list",
                    http::HeaderMap::new(),
                    full(bytes::Bytes::new()),
                )
                .await;
                let targets: Vec<Value> = serde_json::from_slice(&r.body).unwrap_or_default();
                if let Some(u) = targets
                    .iter()
                    .find(|t| t["type"] == "page")
                    .and_then(|t| t["webSocketDebuggerUrl"].as_str())
                {
                    return u.to_string();
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        let (ws, _) = within(tokio_tungstenite::connect_async(ws_url.as_str()))
            .await
            .unwrap();
        Self {
            child,
            _profile: profile,
            cdp: Cdp { ws, next: 0 },
        }
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The few DevTools protocol calls these tests make, on one page.
struct Cdp {
    ws: Ws,
    next: u64,
}

impl Cdp {
    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next += 1;
        let id = self.next;
        let msg = json!({"id": id, "method": method, "params": params}).to_string();
        within(self.ws.send(Message::text(msg))).await.unwrap();
        within(async {
            loop {
                let m = self.ws.next().await.expect("DevTools closed").unwrap();
                let Message::Text(t) = m else { continue };
                let v: Value = serde_json::from_str(t.as_str()).unwrap();
                if v["id"] == id {
                    assert!(v.get("error").is_none(), "{method}: {v}");
                    return v["result"].clone();
                }
            }
        })
        .await
    }

    async fn navigate(&mut self, url: &str) {
        let r = self.call("Page.navigate", json!({"url": url})).await;
        assert!(r.get("errorText").is_none(), "{r}");
    }

    /// The value of a JavaScript expression in the page.
    async fn eval(&mut self, js: &str) -> Value {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({"expression": js, "returnByValue": true}),
            )
            .await;
        assert!(r.get("exceptionDetails").is_none(), "{js}: {r}");
        r["result"]["value"].clone()
    }

    /// Waits until `js` is truthy in the page (it re-renders as the aggregator's state moves),
    /// and returns its value.
    async fn wait_for(&mut self, js: &str) -> Value {
        let deadline = Instant::now() + LIMIT;
        // While the document loads, `document.body` may not exist yet: not there is not yet.
        let guarded =
            format!("(() => {{ try {{ return ({js}); }} catch (e) {{ return null; }} }})()");
        loop {
            let v = self.eval(&guarded).await;
            let truthy = match &v {
                Value::Null | Value::Bool(false) => false,
                Value::String(s) => !s.is_empty(),
                Value::Number(n) => n.as_f64() != Some(0.0),
                _ => true,
            };
            if truthy {
                return v;
            }
            assert!(Instant::now() < deadline, "the page never showed: {js}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn screenshot(&mut self) -> Vec<u8> {
        use base64::Engine;
        let r = self
            .call("Page.captureScreenshot", json!({"format": "png"}))
            .await;
        base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().unwrap())
            .unwrap()
    }
}

/// The card of `plugin`'s data attribute `attr`.
fn card(plugin: &str, attr: &str) -> String {
    format!("document.querySelector('[data-plugin=\"{plugin}\"]')?.dataset.{attr}")
}

/// Decodes a PNG and checks it shows something: many colours, and much that is not the
/// background.
fn assert_not_blank(png_bytes: &[u8]) -> (u32, u32) {
    let mut dec = png::Decoder::new(std::io::Cursor::new(png_bytes))
        .read_info()
        .unwrap();
    let mut buf = vec![0; dec.output_buffer_size().unwrap()];
    let info = dec.next_frame(&mut buf).unwrap();
    let px = info.color_type.samples();
    let pixels: Vec<&[u8]> = buf[..info.buffer_size()].chunks(px).collect();
    let background = pixels[pixels.len() / 2 + 7];
    let colours: std::collections::HashSet<&[u8]> = pixels.iter().copied().collect();
    let ink = pixels.iter().filter(|p| **p != background).count();
    assert!(colours.len() > 32, "{} colours", colours.len());
    assert!(
        ink * 50 > pixels.len(),
        "{ink} of {} pixels drawn",
        pixels.len()
    );
    (info.width, info.height)
}

const JUNIT: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<testsuites><testsuite name="conformance" tests="5" failures="1" skipped="1">
<testcase name="[sig-node] Pods should be submitted and removed" classname="e2e" time="1.5"/>
<testcase name="[sig-network] Services should serve a basic endpoint" classname="e2e" time="2.1"/>
<testcase name="[sig-storage] ConfigMap should be consumable from pods" classname="e2e" time="0.9"/>
<testcase name="[sig-apps] Deployment should roll back" classname="e2e" time="3.0"><failure message="timed out waiting for rollout">rollout stuck</failure></testcase>
<testcase name="[sig-node] needs a GPU" classname="e2e" time="0"><skipped message="no GPU"/></testcase>
</testsuite></testsuites>"#;

#[tokio::test]
async fn a_browser_watches_the_status_page_follow_a_run() {
    let Some(bin) = browser_or_skip("a_browser_watches_the_status_page_follow_a_run") else {
        return;
    };
    let expected = [
        ("e2e", "global"),
        ("systemd-logs", "node-1"),
        ("systemd-logs", "node-2"),
        ("systemd-logs", "node-3"),
    ];
    let mut specs = buoy_results::PluginSpec::raw_for_keys(&keys(&expected));
    specs[0].result_format = "junit".into();
    let server = ServerOptions {
        grace_period: Duration::from_secs(2),
        ..ServerOptions::default()
    };
    let mut a = spawn_run(&expected, specs, insecure(), server, None, None).await;
    let c = a.client();
    let mut chrome = Chrome::launch(&bin).await;
    let b = &mut chrome.cdp;
    b.navigate(&format!("{}/", a.url())).await;
    b.wait_for("document.body.dataset.ready").await;
    let names = b
        .eval("[...document.querySelectorAll('[data-plugin]')].map(e => e.dataset.plugin)")
        .await;
    assert_eq!(names, json!(["e2e", "systemd-logs"]));
    assert_eq!(b.eval(&card("systemd-logs", "complete")).await, "0");
    let text = b.eval("document.body.innerText").await;
    assert!(text.as_str().unwrap().contains("0 of 3 received"), "{text}");

    // A result arrives: the bar moves.
    let cd = [("content-disposition", "attachment;filename=journal.txt")];
    assert_eq!(
        put(
            &c,
            "/api/v1/results/by-node/node-1/systemd-logs",
            &cd,
            "log lines\n"
        )
        .await
        .status,
        200
    );
    b.wait_for(&format!("{} === '1'", card("systemd-logs", "complete")))
        .await;
    let width = b
        .eval("document.querySelector('[data-plugin=\"systemd-logs\"] .bar .ok').style.width")
        .await;
    assert!(width.as_str().unwrap().starts_with("33.3"), "{width}");

    // Progress, then a failed node with its reason.
    let progress = r#"{"msg":"[sig-network] Services should serve a basic endpoint","total":5,"completed":3,"failures":["[sig-apps] Deployment should roll back"]}"#;
    assert_eq!(
        post(&c, "/api/v1/progress/global/e2e", progress)
            .await
            .status,
        200
    );
    b.wait_for("document.body.innerText.includes('Services should serve a basic endpoint')")
        .await;
    a.agg
        .submit_error(
            &ResultKey::new("systemd-logs", "node-3"),
            "the plugin pod on node-3 failed: ImagePullBackOff",
            None,
        )
        .await
        .unwrap();
    b.wait_for(&format!("{} === '1'", card("systemd-logs", "failed")))
        .await;
    b.wait_for("document.body.innerText.includes('ImagePullBackOff')")
        .await;

    // The rest arrive; the run is sealed; the page offers the tarball and the results.
    assert_eq!(
        put(
            &c,
            "/api/v1/results/by-node/node-2/systemd-logs",
            &cd,
            "log lines\n"
        )
        .await
        .status,
        200
    );
    let junit = [("content-disposition", "attachment;filename=junit_01.xml")];
    assert_eq!(
        put(&c, "/api/v1/results/global/e2e", &junit, JUNIT)
            .await
            .status,
        200
    );
    a.complete().await;
    b.wait_for("document.body.dataset.status === 'complete'")
        .await;
    let link = b
        .wait_for("document.querySelector('#tarball:not([hidden]) a')?.getAttribute('href')")
        .await;
    assert_eq!(link, "/api/v1/tarball");
    b.wait_for("document.body.innerText.includes('Deployment should roll back')")
        .await;
    let text = b.eval("document.body.innerText").await;
    let text = text.as_str().unwrap();
    for want in [
        "e2e",
        "systemd-logs",
        "Results sealed",
        "1 failed",
        "5 total",
    ] {
        assert!(text.contains(want), "{want:?} not on the page:\n{text}");
    }

    let shot = b.screenshot().await;
    let (w, h) = assert_not_blank(&shot);
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
    std::fs::write(&out, &shot).unwrap();
    if let Some(dir) = std::env::var_os("BUOY_SCREENSHOT_DIR") {
        std::fs::write(Path::new(&dir).join("status-page.png"), &shot).unwrap();
    }
    eprintln!("status page screenshot ({w}x{h}): {}", out.display());
    drop(chrome);
    a.finished().await;
}

#[tokio::test]
async fn the_5000_node_page_loads_and_pages_its_nodes() {
    let Some(bin) = browser_or_skip("the_5000_node_page_loads_and_pages_its_nodes") else {
        return;
    };
    let nodes: Vec<String> = (0..5000).map(|i| format!("n{i:05}")).collect();
    let plugins = ["systemd-logs", "node-facts", "cis-bench"];
    let mut expected: Vec<(&str, &str)> = vec![("e2e", "global")];
    for p in plugins {
        expected.extend(nodes.iter().map(|n| (p, n.as_str())));
    }
    let a = spawn_aggregator(&expected, insecure(), None, None).await;
    // A run well under way: most of one plugin in, progress from every node, some failures.
    for n in &nodes[..3000] {
        let key = ResultKey::new("systemd-logs", n.as_str());
        let body =
            futures_util::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"x"))]);
        a.agg
            .upload(key, None, Some("attachment;filename=r.txt"), None, body)
            .await
            .unwrap();
    }
    for (i, n) in nodes.iter().enumerate() {
        let key = ResultKey::new("node-facts", n.as_str());
        let body = format!(
            r#"{{"msg":"checked {i}","total":10,"completed":{}}}"#,
            i % 11
        );
        a.agg.progress(&key, body.as_bytes()).unwrap();
    }
    for n in &nodes[..40] {
        let key = ResultKey::new("cis-bench", n.as_str());
        a.agg
            .submit_error(&key, &format!("the plugin pod on {n} was evicted"), None)
            .await
            .unwrap();
    }
    let mut chrome = Chrome::launch(&bin).await;
    let b = &mut chrome.cdp;
    let started = Instant::now();
    b.navigate(&format!("{}/", a.url())).await;
    b.wait_for("document.body.dataset.ready").await;
    let wall = started.elapsed();
    let rendered = b.eval("document.body.dataset.loadMs").await;
    eprintln!(
        "5,000-node status page: navigation to first full render {} ms in the browser, {} ms \
         seen from the test (this machine, debug build)",
        rendered.as_str().unwrap_or("?"),
        wall.as_millis()
    );
    assert_eq!(b.eval(&card("systemd-logs", "complete")).await, "3000");
    assert_eq!(b.eval(&card("cis-bench", "failed")).await, "40");
    assert_eq!(b.eval(&card("node-facts", "expected")).await, "5000");
    // The node list is collapsed; opened, it shows one page of 200.
    b.eval("document.querySelector('[data-plugin=\"cis-bench\"] details.nodes').open = true")
        .await;
    let rows = b
        .wait_for(
            "document.querySelectorAll('[data-plugin=\"cis-bench\"] table.nodes tbody tr').length",
        )
        .await;
    assert_eq!(rows, 200);
    let pager = b
        .eval("document.querySelector('[data-plugin=\"cis-bench\"] .pager span').textContent")
        .await;
    assert_eq!(pager, "1–200 of 5,000");
    let rows_on_page = b.eval("document.querySelectorAll('tr').length").await;
    assert!(rows_on_page.as_u64().unwrap() <= 201, "{rows_on_page}");
    drop(chrome);
    a.stop().await;
}
