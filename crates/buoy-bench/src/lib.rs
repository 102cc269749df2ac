//! `buoy bench`: plays Sonobuoy workers' traffic against any aggregator that speaks the same
//! API (Buoy, Sonobuoy, or a plain PUT-to-disk server such as nginx) and measures it. Every
//! (plugin, node) result is uploaded once, by C lanes in parallel, over keep-alive connections
//! or a new connection (TCP + TLS) per upload as real workers do; S slow clients trickle their
//! bodies meanwhile, and progress updates can run beside the uploads at a set rate.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use http::{header, HeaderValue, Method, Request};
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rand::{Rng, SeedableRng};
use rustls_pki_types::ServerName;
use serde::Serialize;
use tokio::net::TcpStream;

type Body = BoxBody<Bytes, std::io::Error>;

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("invalid --url {0:?}: {1}")]
    Url(String, String),
    #[error("certificates in {dir}: {reason}")]
    Certs { dir: String, reason: String },
    #[error("{0}")]
    Config(String),
}

/// What to send, how, and how hard.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// `http://host:port` or `https://host:port` (then `certs` is required).
    pub url: String,
    pub nodes: usize,
    /// Per-node plugins: each node uploads one result for each.
    pub node_plugins: Vec<String>,
    /// Global plugins: one result each.
    pub global_plugins: Vec<String>,
    /// Bytes of each result (plain body), or of all files of its tarball together.
    pub size: usize,
    pub concurrency: usize,
    /// 0: a plain body with `content-disposition`; K > 0: a tar.gz of K files.
    pub tar_files: usize,
    /// Send bodies with `Transfer-Encoding: chunked` instead of a `Content-Length`.
    pub chunked: bool,
    /// A new connection (and TLS handshake) per upload, as Sonobuoy's workers do.
    pub new_conn: bool,
    /// A directory in the layout `buoy aggregator --certs` writes (ca.pem, <plugin>.crt.pem,
    /// <plugin>.key.pem): each upload authenticates as its own plugin.
    pub certs: Option<PathBuf>,
    /// Uploads that trickle their bodies at `slow_rate` bytes/s, started with the others and
    /// reported apart.
    pub slow: usize,
    pub slow_rate: u64,
    /// Progress updates per node per second while uploads run (0: none).
    pub progress_rate: f64,
    /// Seed of the random bodies.
    pub seed: u64,
}

impl Default for BenchConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            nodes: 1000,
            node_plugins: vec!["p".into()],
            global_plugins: vec![],
            size: 10 << 10,
            concurrency: 50,
            tar_files: 0,
            chunked: false,
            new_conn: false,
            certs: None,
            slow: 0,
            slow_rate: 1024,
            progress_rate: 0.0,
            seed: 1,
        }
    }
}

/// Node names: `n00000`, `n00001`, ... (what a matching `buoy aggregator --expect` uses).
pub fn node_name(i: usize) -> String {
    format!("n{i:05}")
}

/// Latency figures in milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Latency {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    fn of(mut d: Vec<Duration>) -> Self {
        if d.is_empty() {
            return Self::default();
        }
        d.sort_unstable();
        let at = |q: f64| {
            let i = ((d.len() as f64 * q).ceil() as usize).clamp(1, d.len()) - 1;
            d[i].as_secs_f64() * 1e3
        };
        Self {
            p50_ms: at(0.50),
            p99_ms: at(0.99),
            max_ms: at(1.0),
        }
    }
}

/// What one run measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Uploads attempted (slow ones included).
    pub results: u64,
    /// Answered 2xx.
    pub ok: u64,
    pub results_per_s: f64,
    pub mb_per_s: f64,
    /// Of the normal (not slow) uploads.
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Status code → count; `transport` counts uploads that got no answer.
    pub codes: BTreeMap<String, u64>,
    /// From the first request to the last 2xx.
    pub last_ack_s: f64,
    /// Bytes of request bodies sent.
    pub body_bytes: u64,
    /// The slow clients' uploads on their own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slow: Option<Latency>,
    pub progress_sent: u64,
    pub progress_per_s: f64,
    pub progress_codes: BTreeMap<String, u64>,
    /// The first few failures, for the reader.
    pub failures: Vec<String>,
}

impl Report {
    /// Every upload was answered 2xx.
    pub fn all_ok(&self) -> bool {
        self.ok == self.results && self.progress_codes.keys().all(|c| c.starts_with('2'))
    }

    pub fn text(&self, cfg: &BenchConfig) -> String {
        let shape = if cfg.tar_files > 0 {
            format!("tar.gz of {} files", cfg.tar_files)
        } else {
            "plain".into()
        };
        let conn = if cfg.new_conn {
            "new connection per upload"
        } else {
            "keep-alive"
        };
        let tls = if cfg.certs.is_some() { "mTLS" } else { "HTTP" };
        let codes: Vec<String> = self.codes.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let mut s = format!(
            "{} results of {} bytes ({shape}, {}{}) over {tls}, {conn}, {} in flight\n\
             results/s {:.0}   MB/s {:.1}   latency ms p50 {:.2}  p99 {:.2}  max {:.2}\n\
             codes {}   last result acknowledged after {:.2} s\n",
            self.results,
            cfg.size,
            if cfg.chunked { "chunked" } else { "sized" },
            if cfg.slow > 0 {
                format!(", {} slow at {} B/s", cfg.slow, cfg.slow_rate)
            } else {
                String::new()
            },
            cfg.concurrency,
            self.results_per_s,
            self.mb_per_s,
            self.p50_ms,
            self.p99_ms,
            self.max_ms,
            codes.join(" "),
            self.last_ack_s,
        );
        if let Some(l) = &self.slow {
            s.push_str(&format!(
                "slow clients: p50 {:.0} ms  max {:.0} ms\n",
                l.p50_ms, l.max_ms
            ));
        }
        if self.progress_sent > 0 {
            let pc: Vec<String> = self
                .progress_codes
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            s.push_str(&format!(
                "progress updates {} ({:.0}/s), codes {}\n",
                self.progress_sent,
                self.progress_per_s,
                pc.join(" ")
            ));
        }
        for f in &self.failures {
            s.push_str(&format!("failure: {f}\n"));
        }
        s
    }
}

/// Where and how to connect.
struct Target {
    /// The host to dial (an IPv6 literal without brackets).
    host: String,
    port: u16,
    authority: String,
    /// Per plugin, when over mTLS.
    tls: Option<BTreeMap<String, tokio_rustls::TlsConnector>>,
    server_name: Option<ServerName<'static>>,
}

impl Target {
    fn new(cfg: &BenchConfig) -> Result<Self, BenchError> {
        let bad = |why: &str| BenchError::Url(cfg.url.clone(), why.to_string());
        let uri: http::Uri = cfg.url.parse().map_err(|_| bad("not a URL"))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(bad("the scheme must be http or https")),
        };
        let host = uri.host().ok_or_else(|| bad("no host"))?.to_string();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tls = match (https, &cfg.certs) {
            (false, None) => None,
            (false, Some(_)) => return Err(bad("--certs needs an https URL")),
            (true, None) => return Err(bad("an https URL needs --certs DIR")),
            (true, Some(dir)) => {
                let read = |name: String| {
                    std::fs::read_to_string(dir.join(&name)).map_err(|e| BenchError::Certs {
                        dir: dir.display().to_string(),
                        reason: format!("{name}: {e}"),
                    })
                };
                let ca = read(buoy_pki::CA_CERT_FILE.to_string())?;
                let mut map = BTreeMap::new();
                for p in cfg.node_plugins.iter().chain(&cfg.global_plugins) {
                    let c = buoy_pki::client_config(
                        &ca,
                        &read(buoy_pki::client_cert_file(p))?,
                        &read(buoy_pki::client_key_file(p))?,
                    )
                    .map_err(|e| BenchError::Certs {
                        dir: dir.display().to_string(),
                        reason: e.to_string(),
                    })?;
                    map.insert(p.clone(), tokio_rustls::TlsConnector::from(Arc::new(c)));
                }
                Some(map)
            }
        };
        let authority = match uri.port_u16() {
            Some(p) => format!("{host}:{p}"),
            None => host.clone(),
        };
        // An IPv6 literal without its URL brackets, to dial and to name in TLS.
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let server_name = match tls {
            Some(_) => Some(ServerName::try_from(host.clone()).map_err(|_| bad("bad host name"))?),
            None => None,
        };
        Ok(Self {
            host,
            port,
            authority,
            tls,
            server_name,
        })
    }

    async fn connect(&self, plugin: &str) -> Result<SendRequest<Body>, String> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            None => handshake(tcp).await,
            Some(map) => {
                let conn = map
                    .get(plugin)
                    .ok_or_else(|| format!("no certificate for {plugin}"))?;
                let name = self.server_name.clone().expect("set with tls");
                let tls = conn
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("TLS: {e}"))?;
                handshake(tls).await
            }
        }
    }
}

async fn handshake<IO>(io: IO) -> Result<SendRequest<Body>, String>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!("HTTP handshake: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// One upload or progress update to make.
#[derive(Debug, Clone)]
struct Job {
    plugin: String,
    node: Option<String>,
}

impl std::fmt::Display for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let node = self.node.as_deref().unwrap_or(buoy_wire::GLOBAL_NODE);
        write!(f, "{}/{node}", self.plugin)
    }
}

/// A lane's connections, one per plugin (identity is per connection under mTLS).
struct Lane {
    target: Arc<Target>,
    conns: BTreeMap<String, SendRequest<Body>>,
    new_conn: bool,
}

impl Lane {
    /// Sends one request and drains the answer; the status code, or why there was none.
    async fn send(
        &mut self,
        plugin: &str,
        req: http::request::Builder,
        body: Body,
    ) -> Result<u16, String> {
        let mut sender = match self.conns.remove(plugin) {
            Some(s) if !self.new_conn && !s.is_closed() => s,
            _ => self.target.connect(plugin).await?,
        };
        sender.ready().await.map_err(|e| e.to_string())?;
        let req = req
            .header(header::HOST, self.target.authority.as_str())
            .body(body)
            .map_err(|e| e.to_string())?;
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let keep = !resp
            .headers()
            .get(header::CONNECTION)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
        resp.into_body()
            .collect()
            .await
            .map_err(|e| format!("reading the answer: {e}"))?;
        if keep && !self.new_conn {
            self.conns.insert(plugin.to_string(), sender);
        }
        Ok(status)
    }
}

/// The body each upload sends: random bytes, or a tar.gz of random files.
fn payload(cfg: &BenchConfig) -> Bytes {
    let mut rng = rand::rngs::StdRng::seed_from_u64(cfg.seed);
    if cfg.tar_files == 0 {
        let mut b = vec![0u8; cfg.size];
        rng.fill(&mut b[..]);
        return Bytes::from(b);
    }
    let per = cfg.size / cfg.tar_files;
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    for i in 0..cfg.tar_files {
        let mut data = vec![0u8; per];
        rng.fill(&mut data[..]);
        let mut h = tar::Header::new_gnu();
        h.set_size(per as u64);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, format!("results/file-{i}.bin"), &data[..])
            .expect("writing to memory");
    }
    let gz = tar.into_inner().expect("writing to memory");
    Bytes::from(gz.finish().expect("writing to memory"))
}

/// The body of one upload: all at once, in 16 KiB chunks (no length), or trickled.
fn body_of(data: &Bytes, chunked: bool, trickle: Option<u64>) -> Body {
    if let Some(rate) = trickle {
        // 10 pieces a second at `rate` bytes/s.
        let piece = ((rate / 10).max(1)) as usize;
        let chunks: Vec<Bytes> = (0..data.len())
            .step_by(piece)
            .map(|i| data.slice(i..(i + piece).min(data.len())))
            .collect();
        let s = futures_util::stream::iter(chunks).then(|c| async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            Ok::<_, std::io::Error>(Frame::data(c))
        });
        return BodyExt::boxed(StreamBody::new(s));
    }
    if chunked {
        let chunks: Vec<Result<Frame<Bytes>, std::io::Error>> = (0..data.len())
            .step_by(16 << 10)
            .map(|i| Ok(Frame::data(data.slice(i..(i + (16 << 10)).min(data.len())))))
            .collect();
        return BodyExt::boxed(StreamBody::new(futures_util::stream::iter(chunks)));
    }
    Full::new(data.clone())
        .map_err(|never| match never {})
        .boxed()
}

fn upload_request(job: &Job, gzip: bool, len: Option<usize>) -> http::request::Builder {
    let path = buoy_wire::routes::result_path(&job.plugin, job.node.as_deref());
    let mut b = Request::builder().method(Method::PUT).uri(path);
    if gzip {
        b = b.header(header::CONTENT_TYPE, buoy_wire::routes::GZIP_CONTENT_TYPE);
    } else {
        b = b.header(
            header::CONTENT_DISPOSITION,
            HeaderValue::from_static("attachment;filename=result.bin"),
        );
    }
    if let Some(n) = len {
        b = b.header(header::CONTENT_LENGTH, n);
    }
    b
}

#[derive(Default)]
struct Tally {
    /// By status code; `None` for no answer.
    codes: BTreeMap<Option<u16>, u64>,
    failures: Vec<String>,
    normal: Vec<Duration>,
    slow: Vec<Duration>,
    last_ack: Option<Duration>,
    ok: u64,
}

impl Tally {
    fn record(
        &mut self,
        job: &Job,
        took: Duration,
        since_start: Duration,
        r: Result<u16, String>,
        slow: bool,
    ) {
        *self.codes.entry(r.as_ref().ok().copied()).or_default() += 1;
        match r {
            Ok(code) if (200..300).contains(&code) => {
                self.ok += 1;
                self.last_ack = self.last_ack.max(Some(since_start));
            }
            Ok(code) if self.failures.len() < 5 => {
                self.failures.push(format!("{job}: HTTP {code}"));
            }
            Err(e) if self.failures.len() < 5 => self.failures.push(format!("{job}: {e}")),
            _ => {}
        }
        if slow {
            self.slow.push(took);
        } else {
            self.normal.push(took);
        }
    }
}

/// Runs the benchmark; `tick` is called after each upload with (done, total).
pub async fn run(
    cfg: BenchConfig,
    tick: impl Fn(u64, u64) + Send + Sync + 'static,
) -> Result<Report, BenchError> {
    if cfg.concurrency == 0 {
        return Err(BenchError::Config("-c must be at least 1".into()));
    }
    for p in cfg.node_plugins.iter().chain(&cfg.global_plugins) {
        if !buoy_wire::key::is_valid_name(p) {
            return Err(BenchError::Config(format!("invalid plugin name {p:?}")));
        }
    }
    let target = Arc::new(Target::new(&cfg)?);
    let mut jobs: Vec<Job> = Vec::new();
    for n in 0..cfg.nodes {
        for p in &cfg.node_plugins {
            jobs.push(Job {
                plugin: p.clone(),
                node: Some(node_name(n)),
            });
        }
    }
    for p in &cfg.global_plugins {
        jobs.push(Job {
            plugin: p.clone(),
            node: None,
        });
    }
    if jobs.is_empty() {
        return Err(BenchError::Config(
            "nothing to upload: give --nodes and --node-plugins, or --global-plugins".into(),
        ));
    }
    let slow_jobs: Vec<Job> = jobs.split_off(jobs.len() - cfg.slow.min(jobs.len()));
    let data = payload(&cfg);
    let gzip = cfg.tar_files > 0;
    let total = (jobs.len() + slow_jobs.len()) as u64;
    let jobs = Arc::new(jobs);
    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let tick = Arc::new(tick);
    let start = Instant::now();

    let mut tasks = Vec::new();
    for job in slow_jobs {
        let (target, data, tally, done, tick) = (
            target.clone(),
            data.clone(),
            tally.clone(),
            done.clone(),
            tick.clone(),
        );
        let rate = cfg.slow_rate.max(1);
        let chunked = cfg.chunked;
        tasks.push(tokio::spawn(async move {
            let mut lane = Lane {
                target,
                conns: BTreeMap::new(),
                new_conn: true,
            };
            let t0 = Instant::now();
            let req = upload_request(&job, gzip, (!chunked).then_some(data.len()));
            let r = lane
                .send(&job.plugin, req, body_of(&data, chunked, Some(rate)))
                .await;
            tally
                .lock()
                .expect("tally")
                .record(&job, t0.elapsed(), start.elapsed(), r, true);
            tick(done.fetch_add(1, Ordering::Relaxed) + 1, total);
        }));
    }
    for _ in 0..cfg.concurrency {
        let (target, data, tally, done, tick, jobs, next) = (
            target.clone(),
            data.clone(),
            tally.clone(),
            done.clone(),
            tick.clone(),
            jobs.clone(),
            next.clone(),
        );
        let (chunked, new_conn) = (cfg.chunked, cfg.new_conn);
        tasks.push(tokio::spawn(async move {
            let mut lane = Lane {
                target,
                conns: BTreeMap::new(),
                new_conn,
            };
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(job) = jobs.get(i) else { return };
                let t0 = Instant::now();
                let req = upload_request(job, gzip, (!chunked).then_some(data.len()));
                let r = lane
                    .send(&job.plugin, req, body_of(&data, chunked, None))
                    .await;
                let took = t0.elapsed();
                tally
                    .lock()
                    .expect("tally")
                    .record(job, took, start.elapsed(), r, false);
                tick(done.fetch_add(1, Ordering::Relaxed) + 1, total);
            }
        }));
    }

    // Progress beside the uploads, until they are all answered.
    let stop = Arc::new(AtomicBool::new(false));
    let progress = if cfg.progress_rate > 0.0 && cfg.nodes > 0 && !cfg.node_plugins.is_empty() {
        Some(tokio::spawn(progress_load(
            target.clone(),
            cfg.clone(),
            stop.clone(),
        )))
    } else {
        None
    };
    for t in tasks {
        let _ = t.await;
    }
    let elapsed = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    let (progress_sent, progress_codes, progress_secs) = match progress {
        Some(p) => p.await.unwrap_or_default(),
        None => (0, BTreeMap::new(), 0.0),
    };

    let t = std::mem::take(&mut *tally.lock().expect("tally"));
    let secs = elapsed.as_secs_f64().max(1e-9);
    let lat = Latency::of(t.normal);
    let sent = total * data.len() as u64;
    Ok(Report {
        results: total,
        ok: t.ok,
        results_per_s: total as f64 / secs,
        mb_per_s: sent as f64 / 1e6 / secs,
        p50_ms: lat.p50_ms,
        p99_ms: lat.p99_ms,
        max_ms: lat.max_ms,
        codes: named(t.codes),
        last_ack_s: t.last_ack.unwrap_or_default().as_secs_f64(),
        body_bytes: sent,
        slow: (!t.slow.is_empty()).then(|| Latency::of(t.slow)),
        progress_sent,
        progress_per_s: if progress_secs > 0.0 {
            progress_sent as f64 / progress_secs
        } else {
            0.0
        },
        progress_codes,
        failures: t.failures,
    })
}

/// Posts progress updates for every node of the first node plugin, in turn, at
/// `progress_rate` per node per second (paced over 10 ms steps), over keep-alive lanes.
async fn progress_load(
    target: Arc<Target>,
    cfg: BenchConfig,
    stop: Arc<AtomicBool>,
) -> (u64, BTreeMap<String, u64>, f64) {
    let plugin = cfg.node_plugins[0].clone();
    let per_sec = cfg.progress_rate * cfg.nodes as f64;
    let lanes = cfg.concurrency.clamp(1, 64);
    let issued = Arc::new(AtomicU64::new(0));
    let codes = Arc::new(Mutex::new(BTreeMap::<Option<u16>, u64>::new()));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..lanes {
        let (target, stop, issued, codes, plugin) = (
            target.clone(),
            stop.clone(),
            issued.clone(),
            codes.clone(),
            plugin.clone(),
        );
        let nodes = cfg.nodes as u64;
        tasks.push(tokio::spawn(async move {
            let mut lane = Lane {
                target,
                conns: BTreeMap::new(),
                new_conn: false,
            };
            while !stop.load(Ordering::Relaxed) {
                // Take the next update only when the schedule allows it.
                let due = (start.elapsed().as_secs_f64() * per_sec) as u64;
                let n = issued.load(Ordering::Relaxed);
                if n >= due {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
                if issued
                    .compare_exchange(n, n + 1, Ordering::Relaxed, Ordering::Relaxed)
                    .is_err()
                {
                    continue;
                }
                let node = node_name((n % nodes) as usize);
                let body = format!(
                    r#"{{"msg":"bench update {n}","total":1000,"completed":{}}}"#,
                    n % 1000
                );
                let req = Request::builder()
                    .method(Method::POST)
                    .uri(buoy_wire::routes::progress_path(&plugin, Some(&node)))
                    .header(header::CONTENT_TYPE, "application/json");
                let key = lane
                    .send(
                        &plugin,
                        req,
                        Full::new(Bytes::from(body))
                            .map_err(|never| match never {})
                            .boxed(),
                    )
                    .await
                    .ok();
                *codes.lock().expect("codes").entry(key).or_default() += 1;
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let codes = named(std::mem::take(&mut *codes.lock().expect("codes")));
    let sent = codes.values().sum();
    (sent, codes, start.elapsed().as_secs_f64())
}

/// Answers by status code as the report names them: the code, or `transport` for none.
fn named(codes: BTreeMap<Option<u16>, u64>) -> BTreeMap<String, u64> {
    codes
        .into_iter()
        .map(|(c, n)| (c.map_or_else(|| "transport".into(), |c| c.to_string()), n))
        .collect()
}

/// A bar on stderr while the benchmark runs (hidden when stderr is not a terminal).
pub fn progress_bar(total: u64, visible: bool) -> indicatif::ProgressBar {
    if !visible {
        return indicatif::ProgressBar::hidden();
    }
    let b = indicatif::ProgressBar::with_draw_target(
        Some(total),
        indicatif::ProgressDrawTarget::stderr(),
    );
    b.set_style(
        indicatif::ProgressStyle::with_template(
            "uploads [{bar:30.green/blue}] {pos}/{len} {per_sec} {elapsed}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_the_nearest_rank() {
        let d: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let l = Latency::of(d);
        assert_eq!((l.p50_ms, l.p99_ms, l.max_ms), (50.0, 99.0, 100.0));
        assert_eq!(Latency::of(vec![]).max_ms, 0.0);
    }

    #[test]
    fn node_names_are_zero_padded() {
        assert_eq!(node_name(0), "n00000");
        assert_eq!(node_name(4999), "n04999");
    }

    #[test]
    fn tar_payloads_are_gzip_tarballs_of_k_files() {
        let cfg = BenchConfig {
            tar_files: 3,
            size: 3000,
            ..Default::default()
        };
        let gz = payload(&cfg);
        let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(&gz[..]));
        let sizes: Vec<u64> = ar.entries().unwrap().map(|e| e.unwrap().size()).collect();
        assert_eq!(sizes, vec![1000, 1000, 1000]);
    }
}
