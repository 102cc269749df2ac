//! Buoy's integration tests: real servers on port 0, in-process, many at once; the `buoy`
//! binary where the command line itself is under test. One module per area.

mod api;
mod bench;
mod browser;
mod catalogue;
mod cli;
mod concurrency;
mod durability;
mod fuzz_regressions;
mod hardening;
mod kube;
mod local;
mod page;
mod real_cluster;
mod replay;
mod results;
mod tls;
mod worker;

/// The fuzz targets' invariant checks, replayed by `fuzz_regressions`.
#[path = "../../../../fuzz/checks.rs"]
mod fuzz_checks;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use buoy_aggregator::{
    AggError, Aggregator, Finished, Options, RunConfig, RunHandle, ServerOptions,
};
use buoy_wire::ResultKey;
use buoy_worker::client::{full, Body, Reply};
use buoy_worker::Client;
use http::{HeaderMap, HeaderValue, Method};

/// Every await in these tests is bounded by this.
pub const LIMIT: Duration = Duration::from_secs(60);

pub async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(LIMIT, f)
        .await
        .expect("test step timed out")
}

pub struct TestAgg {
    pub addr: SocketAddr,
    pub agg: Arc<Aggregator>,
    pub dir: tempfile::TempDir,
    pub scheme: &'static str,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    pub done: Option<tokio::task::JoinHandle<Result<Finished, AggError>>>,
}

/// The stdout of a command that must have exited 0 (both streams shown if it did not).
pub fn succeeded(o: &std::process::Output) -> std::borrow::Cow<'_, str> {
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    stdout
}

pub fn keys(spec: &[(&str, &str)]) -> Vec<ResultKey> {
    spec.iter().map(|(p, n)| ResultKey::new(*p, *n)).collect()
}

/// Starts an aggregator expecting `expected` on 127.0.0.1:0. It keeps serving after the run
/// completes until `stop`.
pub async fn spawn_aggregator(
    expected: &[(&str, &str)],
    options: Options,
    timeout: Option<Duration>,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> TestAgg {
    let server = ServerOptions {
        grace_period: Duration::from_secs(2),
        ..ServerOptions::default()
    };
    spawn_aggregator_with(expected, options, server, timeout, tls).await
}

/// `spawn_aggregator` with server options of the test's choosing.
pub async fn spawn_aggregator_with(
    expected: &[(&str, &str)],
    options: Options,
    server: ServerOptions,
    timeout: Option<Duration>,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> TestAgg {
    let specs = buoy_results::PluginSpec::raw_for_keys(&keys(expected));
    spawn_run(expected, specs, options, server, timeout, tls).await
}

/// `spawn_aggregator_with`, post-processing each plugin as `specs` say.
pub async fn spawn_run(
    expected: &[(&str, &str)],
    specs: Vec<buoy_results::PluginSpec>,
    options: Options,
    server: ServerOptions,
    timeout: Option<Duration>,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> TestAgg {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut plugins: Vec<String> = expected.iter().map(|(p, _)| p.to_string()).collect();
    plugins.dedup();
    let scheme = if tls.is_some() { "https" } else { "http" };
    let cfg = RunConfig {
        output_dir: dir.path().to_path_buf(),
        uuid: "11111111-2222-4333-8444-555555555555".into(),
        expected: keys(expected),
        plugins: specs,
        timeout,
        options,
        server,
        config_json: buoy_aggregator::run::standalone_config_json(
            &plugins,
            addr,
            &addr.to_string(),
            timeout,
        ),
    };
    let handle = RunHandle::start(listener, tls, cfg).await.unwrap();
    let agg = handle.aggregator().clone();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let done = tokio::spawn(handle.finish(
        async move {
            let _ = rx.await;
        },
        true,
    ));
    TestAgg {
        addr,
        agg,
        dir,
        scheme,
        stop: Some(tx),
        done: Some(done),
    }
}

/// `spawn_aggregator` over mTLS with a run CA written to a fresh directory (the layout
/// `--certs` uses), with client certificates for `plugins`.
pub async fn spawn_mtls_aggregator(
    expected: &[(&str, &str)],
    plugins: &[&str],
) -> (TestAgg, buoy_pki::RunPki, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let names: Vec<String> = plugins.iter().map(|p| p.to_string()).collect();
    let pki = buoy_pki::RunPki::load_or_create(dir.path(), "127.0.0.1", &[], &names).unwrap();
    let tls = Some(Arc::new(pki.server_config().unwrap()));
    let a = spawn_aggregator(expected, Options::default(), None, tls).await;
    (a, pki, dir)
}

pub fn insecure() -> Options {
    Options {
        enforce_identity: false,
        ..Options::default()
    }
}

impl TestAgg {
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }

    pub fn client(&self) -> Client {
        Client::new(&self.url(), None).unwrap()
    }

    pub fn run_dir(&self) -> PathBuf {
        self.agg.run_dir().to_path_buf()
    }

    pub fn plugins_dir(&self) -> PathBuf {
        self.run_dir().join("plugins")
    }

    /// Waits until the status says `complete` (the tarball is sealed).
    pub async fn complete(&self) {
        let mut rx = self.agg.subscribe();
        within(async {
            while self.agg.status().status != "complete" {
                rx.changed().await.unwrap();
            }
        })
        .await;
    }

    /// Waits until the run is sealed and returns how it finished.
    pub async fn finished(&mut self) -> Finished {
        self.complete().await;
        let _ = self.stop.take().map(|s| s.send(()));
        within(self.done.take().unwrap()).await.unwrap().unwrap()
    }

    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(d) = self.done.take() {
            let _ = within(d).await;
        }
    }
}

pub fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.insert(*k, HeaderValue::from_str(v).unwrap());
    }
    h
}

pub async fn send(c: &Client, method: Method, path: &str, hdrs: HeaderMap, body: Body) -> Reply {
    within(c.send(method, path, hdrs, body)).await.unwrap()
}

pub async fn put(
    c: &Client,
    path: &str,
    hdrs: &[(&'static str, &str)],
    body: impl Into<bytes::Bytes>,
) -> Reply {
    send(c, Method::PUT, path, headers(hdrs), full(body.into())).await
}

/// `GET /api/v1/status`, decoded.
pub async fn status_json(c: &Client) -> serde_json::Value {
    let r = send(
        c,
        Method::GET,
        "/api/v1/status",
        HeaderMap::new(),
        full(bytes::Bytes::new()),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    serde_json::from_slice(&r.body).unwrap()
}

pub async fn post(c: &Client, path: &str, body: &str) -> Reply {
    send(
        c,
        Method::POST,
        path,
        HeaderMap::new(),
        full(body.to_string()),
    )
    .await
}

/// A gzipped tarball of (name, contents) regular files.
pub fn tar_gz(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, *data).unwrap();
    }
    gz(&b.into_inner().unwrap())
}

pub fn gz(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// A tarball with one raw header, for names and types the tar crate would refuse to write.
pub fn raw_tar_gz(name: &str, kind: tar::EntryType, link: Option<&str>, data: &[u8]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_old();
    h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    if let Some(l) = link {
        h.as_old_mut().linkname[..l.len()].copy_from_slice(l.as_bytes());
    }
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_entry_type(kind);
    h.set_cksum();
    b.append(&h, data).unwrap();
    gz(&b.into_inner().unwrap())
}

/// Every regular file under `dir`, relative.
pub fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    out.sort();
    out
}

pub fn sha256_file(p: &Path) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(std::fs::read(p).unwrap()))
}

/// Names of the entries of a .tar.gz file.
pub fn tarball_entries(p: &Path) -> Vec<String> {
    let f = std::fs::File::open(p).unwrap();
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(f));
    ar.entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect()
}
