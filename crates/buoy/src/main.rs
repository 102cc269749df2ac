//! The `buoy` binary: parses arguments, sets up logging and signal handling, and calls the
//! libraries. `anyhow` lives only here.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};

use buoy_aggregator::run::standalone_config_json;
use buoy_aggregator::{Options, RunConfig, RunHandle, ServerOptions};
use buoy_wire::ResultKey;

mod status_view;

#[derive(Parser)]
#[command(
    name = "buoy",
    version,
    about = "A Sonobuoy-compatible result aggregator for Kubernetes conformance and diagnostic plugins"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// How log lines on stderr look: `human` (default) or `json`, one object a line, for
    /// clusters' log collectors. The level is set with `BUOY_LOG` (e.g. `BUOY_LOG=debug`).
    #[arg(long, global = true, value_enum, default_value = "human")]
    log_format: LogFormat,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

/// Flags Sonobuoy's manifests pass to its binary; accepted and ignored (logging is set with
/// `BUOY_LOG`, e.g. `BUOY_LOG=debug`).
#[derive(Args, Debug, Default)]
struct CompatFlags {
    #[arg(short = 'v', hide = true, value_name = "N")]
    verbosity: Option<String>,
    #[arg(long, hide = true)]
    level: Option<String>,
    #[arg(long, hide = true, num_args = 0..=1, default_missing_value = "true")]
    logtostderr: Option<String>,
    #[arg(long, hide = true, num_args = 0..=1, default_missing_value = "true")]
    alsologtostderr: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Run every plugin of the given manifests as local processes and aggregate their results.
    Run(RunArgs),
    /// Serve the aggregation API, wait for the expected results, and seal them into a tarball.
    Aggregator(Box<AggregatorArgs>),
    /// Wait for a plugin's done file and upload its result (Sonobuoy's worker contract).
    Worker(WorkerArgs),
    /// Post a progress update to the worker's relay (for plugin scripts).
    Progress(ProgressArgs),
    /// Show a run's status: the aggregator pod's annotation, or a standalone aggregator's API.
    Status(StatusArgs),
    /// Write a gzip'd tar of DIR/*.tar.gz to stdout (what `sonobuoy retrieve` runs in the pod).
    Splat(SplatArgs),
    /// Print the Kubernetes objects of a run, for `kubectl apply -f -`.
    Manifest(ManifestArgs),
    /// Summarise a results tarball (Buoy's or Sonobuoy's, v0.15 and newer) or its directory;
    /// exit 0 only if every plugin shown passed.
    Results(ResultsArgs),
    /// Make the certificates of a multi-host run without Kubernetes (the layout
    /// `buoy aggregator --certs DIR` reads).
    #[command(subcommand)]
    Certs(CertsCommand),
    /// Load-test an aggregator (Buoy's, Sonobuoy's, or any PUT-to-disk server) with workers'
    /// traffic and print results/s, MB/s and latencies; exits 1 if any upload was not 2xx.
    Bench(BenchArgs),
}

#[derive(Args)]
struct BenchArgs {
    /// The aggregator: http://HOST:PORT, or https://HOST:PORT with --certs.
    #[arg(long)]
    url: String,
    /// Nodes, named n00000, n00001, ...
    #[arg(long, default_value_t = 1000)]
    nodes: usize,
    /// Per-node plugins (each node uploads one result for each).
    #[arg(long, value_delimiter = ',', default_value = "p")]
    node_plugins: Vec<String>,
    /// Global plugins (one result each).
    #[arg(long, value_delimiter = ',')]
    global_plugins: Vec<String>,
    /// Bytes per result (of all files together with --tar-files).
    #[arg(long, default_value_t = 10 << 10)]
    size: usize,
    /// Uploads in flight.
    #[arg(short = 'c', default_value_t = 50)]
    concurrency: usize,
    /// Send each result as a tar.gz of K files (default: a plain body).
    #[arg(long, default_value_t = 0, value_name = "K")]
    tar_files: usize,
    /// Chunked bodies instead of Content-Length.
    #[arg(long)]
    chunked: bool,
    /// A new connection (TCP and TLS) per upload, as Sonobuoy's workers do.
    #[arg(long)]
    new_conn: bool,
    /// Client certificates in the layout `buoy aggregator --certs` writes (for https).
    #[arg(long, value_name = "DIR")]
    certs: Option<PathBuf>,
    /// Slow clients that trickle their bodies (reported apart).
    #[arg(long, default_value_t = 0, value_name = "S")]
    slow: usize,
    /// How fast slow clients send, bytes per second.
    #[arg(long, default_value_t = 1024)]
    slow_rate: u64,
    /// Progress updates per node per second while uploads run.
    #[arg(long, default_value_t = 0.0, value_name = "R")]
    progress_rate: f64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum CertsCommand {
    /// Write the CA (kept if DIR has one) and the aggregator's server certificate.
    Init {
        dir: PathBuf,
        /// Host name or IP address workers use to reach the aggregator; repeat for more.
        #[arg(long, required = true)]
        advertise: Vec<String>,
    },
    /// Write a client certificate for each plugin (valid ones already in DIR are kept).
    Plugin {
        dir: PathBuf,
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Print the CA_CERT, CLIENT_CERT and CLIENT_KEY a worker host for PLUGIN needs, as
    /// `export` lines: `eval "$(buoy certs env DIR PLUGIN)"`.
    Env { dir: PathBuf, plugin: String },
}

#[derive(Args)]
struct ResultsArgs {
    /// A results `.tar.gz`, or the directory it was extracted to (a run directory works too).
    archive: PathBuf,
    /// Only this plugin (default: every plugin the archive lists).
    #[arg(short, long)]
    plugin: Option<String>,
    /// Start at the item with this name: a node, a file or a suite.
    #[arg(short, long)]
    node: Option<String>,
    /// report: counts and failed tests; detailed: one line per test or file; dump: the trees.
    #[arg(short, long, value_enum, default_value = "report")]
    mode: ResultsMode,
    /// Machine-readable output (report and dump modes).
    #[arg(long, value_enum, default_value = "text")]
    format: ResultsFormat,
    /// Detailed mode: print only the contents of result files, without their path prefix.
    #[arg(short = 's', long)]
    skip_prefix: bool,
    /// Report mode: name the node of each failed test (`node: test`).
    #[arg(long)]
    failed_by_node: bool,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ResultsMode {
    Report,
    Detailed,
    Dump,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ResultsFormat {
    Text,
    Json,
    Yaml,
}

#[derive(Args)]
struct StatusArgs {
    /// The run's namespace.
    #[arg(short = 'n', long, default_value = "sonobuoy")]
    namespace: String,
    /// One row per plugin and node.
    #[arg(long)]
    show_all: bool,
    /// Print the status document as JSON.
    #[arg(long, conflicts_with = "show_all")]
    json: bool,
    /// Refresh every few seconds until the run is complete: a progress bar per plugin on a
    /// terminal, the table again otherwise.
    #[arg(long)]
    watch: bool,
    /// With --watch: no bars; print the table on each refresh, as when not on a terminal.
    #[arg(short, long, requires = "watch")]
    quiet: bool,
    /// Read `GET /api/v1/status` of a standalone aggregator instead of a cluster.
    #[arg(long, value_name = "URL")]
    url: Option<String>,
    /// With an https --url: the CA, client certificate and key files (e.g. from --certs).
    #[arg(long, requires = "url", value_name = "FILE")]
    cacert: Option<PathBuf>,
    #[arg(long, requires = "url", value_name = "FILE")]
    cert: Option<PathBuf>,
    #[arg(long, requires = "url", value_name = "FILE")]
    key: Option<PathBuf>,
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
}

#[derive(Args)]
struct SplatArgs {
    #[arg(default_value = "/tmp/sonobuoy")]
    dir: PathBuf,
}

#[derive(Args)]
struct ManifestArgs {
    /// A plugin manifest (repeatable), or a directory of them.
    #[arg(
        long = "plugin",
        short = 'p',
        required = true,
        value_name = "FILE_OR_DIR"
    )]
    plugins: Vec<PathBuf>,
    #[arg(short = 'n', long, default_value = "sonobuoy")]
    namespace: String,
    /// The image with Buoy at /sonobuoy (see the Dockerfile).
    #[arg(long, default_value = concat!("buoy:", env!("CARGO_PKG_VERSION")))]
    image: String,
    /// The image plugin pods run their worker from (default: --image).
    #[arg(long)]
    worker_image: Option<String>,
    #[arg(long, default_value = "IfNotPresent")]
    image_pull_policy: String,
    /// Per-plugin timeout in seconds (0 = none).
    #[arg(long, default_value_t = 21600)]
    timeout: u64,
}

#[derive(Args)]
struct RunArgs {
    /// Plugin manifests, or directories of *.yaml / *.yml manifests.
    #[arg(required = true, value_name = "MANIFEST_OR_DIR")]
    manifests: Vec<PathBuf>,
    /// Node names a DaemonSet plugin runs once for (default: this host's name).
    #[arg(long = "node", value_name = "NAME")]
    nodes: Vec<String>,
    /// Where the run directory and the tarball are written.
    #[arg(long, default_value = "buoy-results")]
    output: PathBuf,
    /// Give up waiting after this many seconds (0 = never).
    #[arg(long, default_value_t = 3600)]
    timeout: u64,
    /// Serve the live status page over plain HTTP on this address (port 0: any free port);
    /// its URL is printed. Keep it on loopback: anyone who reaches it sees the run.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    status_page: SocketAddr,
    /// Do not serve the status page.
    #[arg(long, conflicts_with = "serve_after")]
    no_status_page: bool,
    /// After the run, keep serving the status page (and the tarball) until Ctrl-C.
    #[arg(long)]
    serve_after: bool,
    /// No progress bars: print a plain line per change, as when stderr is not a terminal.
    #[arg(short, long)]
    quiet: bool,
}

#[derive(Args)]
struct AggregatorArgs {
    /// Results to expect: PLUGIN=NODE[,NODE...]; NODE `global` for a Job plugin. Without it,
    /// the aggregator runs in-cluster: it reads Sonobuoy's config.json and plugins.d, launches
    /// the plugins and publishes the status annotation.
    #[arg(long = "expect", value_name = "PLUGIN=NODE[,NODE...]")]
    expect: Vec<String>,
    #[arg(long, default_value = "0.0.0.0:8080")]
    bind: SocketAddr,
    /// Where the run directory `<UUID>/` and the tarball are written.
    #[arg(long, default_value = "/tmp/sonobuoy")]
    output: PathBuf,
    /// Host workers use to reach this aggregator (IP or DNS name); the server certificate
    /// names it. Default: the bind address, or this host's name when binding all interfaces.
    #[arg(long)]
    advertise: Option<String>,
    /// Write (or reuse) the CA, server and per-plugin client certificates here and require mTLS.
    #[arg(long, conflicts_with = "insecure_http", value_name = "DIR")]
    certs: Option<PathBuf>,
    /// Serve plain HTTP with no client authentication (trusted networks and tests only).
    #[arg(long)]
    insecure_http: bool,
    /// Seconds to wait for results before recording timeout errors (0 = no timeout).
    #[arg(long, default_value_t = 21600)]
    timeout: u64,
    /// Keep serving after the tarball is written, until SIGTERM/SIGINT.
    #[arg(long)]
    no_exit: bool,
    /// Also serve the status page and the read-only API (status, metrics, tarball) over plain
    /// HTTP on this address, e.g. 127.0.0.1:8081 for `kubectl port-forward`; it never accepts
    /// results. The mTLS listener serves the page too, to clients with a certificate.
    #[arg(long, value_name = "ADDR")]
    status_page: Option<SocketAddr>,
    /// Run ID (UUID) to use; an existing run directory with this ID is resumed.
    #[arg(long, value_name = "UUID")]
    run_id: Option<String>,
    /// Uploads processed at once; more wait their turn.
    #[arg(long, default_value_t = 256)]
    max_concurrent_uploads: usize,
    #[command(flatten)]
    caps: CapFlags,
    /// With --expect: plugin manifests (files or directories) giving each plugin's
    /// result-format and result-files for post-processing; plugins not found are `raw`.
    #[arg(long = "plugins", value_name = "PATH", requires = "expect")]
    plugin_manifests: Vec<PathBuf>,
    /// In-cluster mode (no --expect): the kubeconfig to use instead of the in-cluster config.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    #[command(flatten)]
    compat: CompatFlags,
}

impl AggregatorArgs {
    /// The aggregator tunables both modes take from the command line.
    fn options(&self) -> Options {
        let c = &self.caps;
        Options {
            max_concurrent_uploads: self.max_concurrent_uploads,
            limits: buoy_aggregator::Limits {
                max_upload_bytes: c.max_upload_bytes,
                max_extracted_bytes: c.max_extracted_bytes,
                max_entries: c.max_entries,
                max_file_bytes: c.max_file_bytes,
            },
            max_run_bytes: c.max_run_bytes,
            disk_reserve_bytes: c.disk_reserve_bytes,
            slot_wait: Duration::from_secs(c.upload_slot_wait),
            min_upload_rate: c.min_upload_rate,
            body_idle_timeout: Duration::from_secs(c.body_idle_timeout),
            ..Options::default()
        }
    }
}

/// Caps on what clients may make the aggregator store or hold (defaults sized to real
/// results: a conformance run's results are tens of MB).
#[derive(Args)]
struct CapFlags {
    /// Bytes of request body accepted for one upload (413 past it).
    #[arg(long, default_value_t = Options::default().limits.max_upload_bytes)]
    max_upload_bytes: u64,
    /// Bytes one uploaded tarball may expand to (413 past it).
    #[arg(long, default_value_t = Options::default().limits.max_extracted_bytes)]
    max_extracted_bytes: u64,
    /// Bytes of one file inside an uploaded tarball (413 past it).
    #[arg(long, default_value_t = Options::default().limits.max_file_bytes)]
    max_file_bytes: u64,
    /// Entries in one uploaded tarball (413 past it).
    #[arg(long, default_value_t = Options::default().limits.max_entries)]
    max_entries: u64,
    /// Bytes of results the whole run may store (507 past it; the key stays open).
    #[arg(long, default_value_t = Options::default().max_run_bytes)]
    max_run_bytes: u64,
    /// Free bytes to keep on the output file system: uploads get 507 instead of filling it,
    /// and succeed again once space returns (0 = no reserve).
    #[arg(long, default_value_t = Options::default().disk_reserve_bytes)]
    disk_reserve_bytes: u64,
    /// Seconds an upload may wait for a slot before a 503 (the worker retries).
    #[arg(long, default_value_t = Options::default().slot_wait.as_secs())]
    upload_slot_wait: u64,
    /// While uploads wait for a slot, bodies slower than this many bytes/s give theirs up (503).
    #[arg(long, default_value_t = Options::default().min_upload_rate)]
    min_upload_rate: u64,
    /// Seconds an upload body may pause between two chunks (408 past it).
    #[arg(long, default_value_t = Options::default().body_idle_timeout.as_secs())]
    body_idle_timeout: u64,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum WorkerMode {
    Global,
    SingleNode,
}

#[derive(Args)]
struct WorkerArgs {
    #[arg(value_enum)]
    mode: WorkerMode,
    /// single-node: seconds to sleep after sending (negative: until terminated).
    #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
    sleep: i64,
    #[command(flatten)]
    compat: CompatFlags,
}

#[derive(Args)]
struct ProgressArgs {
    #[arg(long, default_value = "")]
    msg: String,
    #[arg(long)]
    total: Option<i64>,
    #[arg(long)]
    completed: Option<i64>,
    /// A failing test's name (repeatable).
    #[arg(long = "failure")]
    failures: Vec<String>,
    /// An error message (repeatable).
    #[arg(long = "error")]
    errors: Vec<String>,
    /// Add to the completed count instead of replacing it.
    #[arg(long)]
    append_completed: Option<i64>,
    /// With --append-completed/--append-failing, grow the total too.
    #[arg(long)]
    append_totals: bool,
    /// Add a failing test's name (repeatable).
    #[arg(long = "append-failing")]
    append_failing: Vec<String>,
    /// The relay's port (default: $SONOBUOY_PROGRESS_PORT, else 8099).
    #[arg(long, env = "SONOBUOY_PROGRESS_PORT", default_value_t = 8099)]
    port: u16,
}

/// Logs go to stderr; `BUOY_LOG` overrides the level (`buoy run` shows its own progress, so it
/// logs only warnings by default).
fn init_tracing(default_level: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("BUOY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    match format {
        LogFormat::Human => fmt.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => fmt.json().with_ansi(false).init(),
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutdown signal received");
}

fn parse_expect(specs: &[String]) -> Result<(Vec<String>, Vec<ResultKey>)> {
    let mut plugins: Vec<String> = Vec::new();
    let mut keys = Vec::new();
    for spec in specs {
        let (plugin, nodes) = spec
            .split_once('=')
            .with_context(|| format!("--expect {spec:?}: expected PLUGIN=NODE[,NODE...]"))?;
        if !buoy_wire::key::is_valid_name(plugin) {
            bail!("--expect {spec:?}: invalid plugin name {plugin:?}");
        }
        for node in nodes.split(',') {
            if !buoy_wire::key::is_valid_name(node) {
                bail!("--expect {spec:?}: invalid node name {node:?}");
            }
            keys.push(ResultKey::new(plugin, node));
        }
        if !plugins.iter().any(|p| p == plugin) {
            plugins.push(plugin.to_string());
        }
    }
    Ok((plugins, keys))
}

/// How a standalone aggregator post-processes each expected plugin: as its manifest says, or
/// `raw` when none is given.
fn post_processing_specs(
    manifests: &[PathBuf],
    expected: &[ResultKey],
) -> Result<Vec<buoy_results::PluginSpec>> {
    let loaded = if manifests.is_empty() {
        vec![]
    } else {
        buoy_wire::manifest::load(manifests)?
    };
    Ok(buoy_results::PluginSpec::raw_for_keys(expected)
        .into_iter()
        .map(|raw| match loaded.iter().find(|m| m.name() == raw.name) {
            Some(m) => buoy_results::PluginSpec::from_manifest(m),
            None => raw,
        })
        .collect())
}

fn default_advertise(bind: SocketAddr) -> String {
    if bind.ip().is_unspecified() {
        buoy_local::host_name()
    } else {
        bind.ip().to_string()
    }
}

fn secs(s: u64) -> Option<Duration> {
    (s > 0).then(|| Duration::from_secs(s))
}

/// Serves the read-only status page on `addr` and says where.
async fn start_view(
    addr: SocketAddr,
    agg: &Arc<buoy_aggregator::Aggregator>,
) -> Result<buoy_aggregator::ViewServer> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot serve the status page on {addr}"))?;
    let view = buoy_aggregator::ViewServer::start(listener, agg.clone(), ServerOptions::default())?;
    eprintln!("buoy: status page: {}", view.url());
    Ok(view)
}

async fn aggregator_in_cluster(args: AggregatorArgs) -> Result<i32> {
    use buoy_kube::config::{ClusterConfig, ProcessEnv};
    let cfg = ClusterConfig::load(&ProcessEnv)?;
    let plugins = cfg.load_plugins(&ProcessEnv)?;
    eprintln!(
        "buoy: in-cluster run {} in namespace {} with plugins {:?}; workers use AGGREGATOR_URL=https://{}",
        cfg.uuid,
        cfg.namespace,
        plugins.iter().map(|m| m.name()).collect::<Vec<_>>(),
        cfg.server.advertiseaddress
    );
    let client = buoy_kube::api::connect(args.kubeconfig.as_deref()).await?;
    let api = buoy_kube::api::KubeApi::new(client, cfg.namespace.clone());
    let view_listener = match args.status_page {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot serve the status page on {addr}"))?,
        ),
        None => None,
    };
    let opts = buoy_kube::cluster::ClusterOptions {
        output_dir: args.output.clone(),
        no_exit: args.no_exit,
        view_listener,
        aggregator: args.options(),
        ..Default::default()
    };
    let finished = buoy_kube::cluster::run(api, cfg, plugins, opts, shutdown_signal())
        .await
        .context("the run did not finish")?;
    print_reports(&finished.reports, &mut std::io::stderr().lock());
    println!("{}", finished.tarball.display());
    Ok(0)
}

async fn aggregator(args: AggregatorArgs) -> Result<i32> {
    let _ = &args.compat;
    if args.expect.is_empty() {
        return aggregator_in_cluster(args).await;
    }
    let (plugins, expected) = parse_expect(&args.expect)?;
    let advertise = args
        .advertise
        .clone()
        .unwrap_or_else(|| default_advertise(args.bind));
    let tls = match (&args.certs, args.insecure_http) {
        (Some(dir), _) => {
            let pki = buoy_pki::RunPki::load_or_create(dir, &advertise, &[], &plugins)
                .with_context(|| format!("certificates in {}", dir.display()))?;
            eprintln!("buoy: certificates for workers are in {} (ca.pem, <plugin>.crt.pem, <plugin>.key.pem)", dir.display());
            Some(Arc::new(pki.server_config()?))
        }
        (None, true) => None,
        (None, false) => {
            bail!("choose --certs DIR (mutual TLS, certificates written there) or --insecure-http")
        }
    };
    let listener = tokio::net::TcpListener::bind(args.bind)
        .await
        .with_context(|| format!("cannot listen on {}", args.bind))?;
    let uuid = match &args.run_id {
        Some(id) => id
            .parse::<uuid::Uuid>()
            .with_context(|| format!("--run-id {id:?} is not a UUID"))?
            .to_string(),
        None => uuid::Uuid::new_v4().to_string(),
    };
    let timeout = secs(args.timeout);
    let options = Options {
        enforce_identity: tls.is_some(),
        ..args.options()
    };
    let bound = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    eprintln!("buoy: aggregator for run {uuid} listening on {bound}; workers use AGGREGATOR_URL={scheme}://{advertise}:{}", bound.port());
    let cfg = RunConfig {
        output_dir: args.output.clone(),
        uuid: uuid.clone(),
        plugins: post_processing_specs(&args.plugin_manifests, &expected)?,
        expected,
        timeout,
        options,
        server: ServerOptions::default(),
        config_json: standalone_config_json(
            &plugins,
            bound,
            &format!("{advertise}:{}", bound.port()),
            timeout,
        ),
    };
    let handle = RunHandle::start(listener, tls, cfg).await?;
    let view = match args.status_page {
        Some(addr) => Some(start_view(addr, handle.aggregator()).await?),
        None => None,
    };
    let finished = handle.finish(shutdown_signal(), args.no_exit).await;
    if let Some(v) = view {
        v.stop().await;
    }
    let finished = finished.context("the run did not finish")?;
    print_reports(&finished.reports, &mut std::io::stderr().lock());
    println!("{}", finished.tarball.display());
    Ok(0)
}

async fn worker(args: WorkerArgs) -> Result<i32> {
    let _ = &args.compat;
    let cfg = buoy_worker::WorkerConfig::from_env()?;
    let mode = match args.mode {
        WorkerMode::Global => buoy_worker::Mode::Global,
        WorkerMode::SingleNode => buoy_worker::Mode::SingleNode,
    };
    let delivery = buoy_worker::run(&cfg, mode, shutdown_signal()).await;
    let code = match &delivery {
        Ok(d) => {
            tracing::info!(outcome = ?d, "worker finished");
            0
        }
        Err(e) => {
            tracing::error!(error = %e, "worker failed");
            1
        }
    };
    if matches!(mode, buoy_worker::Mode::SingleNode) && delivery.is_ok() && args.sleep != 0 {
        if args.sleep < 0 {
            shutdown_signal().await;
        } else {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(args.sleep as u64)) => {}
                _ = shutdown_signal() => {}
            }
        }
    }
    Ok(code)
}

async fn progress(args: ProgressArgs) -> Result<i32> {
    let mut body = serde_json::json!({ "msg": args.msg });
    let obj = body.as_object_mut().expect("an object");
    if let Some(t) = args.total {
        obj.insert("total".into(), t.into());
    }
    if let Some(c) = args.completed {
        obj.insert("completed".into(), c.into());
    }
    if !args.failures.is_empty() {
        obj.insert("failures".into(), args.failures.into());
    }
    if !args.errors.is_empty() {
        obj.insert("errors".into(), args.errors.into());
    }
    if let Some(c) = args.append_completed {
        obj.insert("appendcompleted".into(), c.into());
    }
    if args.append_totals {
        obj.insert("appendtotals".into(), true.into());
    }
    if !args.append_failing.is_empty() {
        obj.insert("appendfailing".into(), args.append_failing.into());
    }
    let reply = buoy_worker::relay::post_local(args.port, serde_json::to_vec(&body)?)
        .await
        .with_context(|| format!("cannot reach the progress relay on port {}", args.port))?;
    if !reply.status.is_success() {
        bail!(
            "progress update refused ({}): {}",
            reply.status,
            reply.text()
        );
    }
    Ok(0)
}

async fn fetch_status(args: &StatusArgs) -> Result<buoy_wire::Status> {
    if let Some(url) = &args.url {
        let tls = match (&args.cacert, &args.cert, &args.key) {
            (Some(ca), Some(cert), Some(key)) => {
                let read = |p: &PathBuf| {
                    std::fs::read_to_string(p)
                        .with_context(|| format!("cannot read {}", p.display()))
                };
                Some(buoy_pki::client_config(
                    &read(ca)?,
                    &read(cert)?,
                    &read(key)?,
                )?)
            }
            (None, None, None) => None,
            _ => bail!("--cacert, --cert and --key go together"),
        };
        let client = buoy_worker::client::Client::new(url, tls)?;
        let reply = client
            .send(
                http::Method::GET,
                buoy_wire::routes::STATUS,
                http::HeaderMap::new(),
                buoy_worker::client::full(Vec::new()),
            )
            .await
            .with_context(|| format!("cannot reach {url}"))?;
        if !reply.status.is_success() {
            bail!("{url} answered {}: {}", reply.status, reply.text());
        }
        return serde_json::from_slice(&reply.body).context("the status does not decode");
    }
    let client = buoy_kube::api::connect(args.kubeconfig.as_deref()).await?;
    let api = buoy_kube::api::KubeApi::new(client, args.namespace.clone());
    Ok(buoy_kube::status::read_status(&api).await?)
}

/// `buoy status --watch` on a terminal: a bar per plugin until the run is complete, then the
/// final table.
async fn watch_with_bars(args: &StatusArgs) -> Result<i32> {
    let mut bars = buoy_local::display::PluginBars::new();
    loop {
        let s = fetch_status(args).await?;
        bars.update(&buoy_wire::overview::Overview::from_status(&s));
        let done = matches!(
            s.status.as_str(),
            buoy_wire::status::COMPLETE | buoy_wire::status::FAILED
        );
        if done {
            bars.finish();
            print!("{}", status_view::render(&s, args.show_all));
            return Ok(i32::from(s.status == buoy_wire::status::FAILED));
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = shutdown_signal() => {
                bars.finish();
                return Ok(0);
            }
        }
    }
}

async fn status(args: StatusArgs) -> Result<i32> {
    if args.watch && !args.json && !args.quiet && std::io::stderr().is_terminal() {
        return watch_with_bars(&args).await;
    }
    loop {
        let s = fetch_status(&args).await?;
        let text = if args.json {
            serde_json::to_string_pretty(&s)? + "\n"
        } else {
            status_view::render(&s, args.show_all)
        };
        let done = matches!(
            s.status.as_str(),
            buoy_wire::status::COMPLETE | buoy_wire::status::FAILED
        );
        if args.watch && std::io::stdout().is_terminal() {
            print!("\x1b[2J\x1b[H");
        }
        print!("{text}");
        if !args.watch || done {
            return Ok(if s.status == buoy_wire::status::FAILED {
                1
            } else {
                0
            });
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            _ = shutdown_signal() => return Ok(0),
        }
        if !std::io::stdout().is_terminal() {
            println!();
        }
    }
}

/// A gzip'd tar of every `DIR/*.tar.gz`, each under its base name with its mode and mtime.
fn splat(args: SplatArgs) -> Result<i32> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(&args.dir)
        .with_context(|| format!("cannot read {}", args.dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.to_string_lossy().ends_with(".tar.gz"))
        .collect();
    files.sort();
    let out = std::io::stdout().lock();
    let gz = flate2::write::GzEncoder::new(out, flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    for f in &files {
        let name = f.file_name().context("a file name")?;
        tar.append_path_with_name(f, name)
            .with_context(|| format!("cannot add {}", f.display()))?;
    }
    let mut out = tar.into_inner()?.finish()?;
    std::io::Write::flush(&mut out)?;
    Ok(0)
}

fn manifest(args: ManifestArgs) -> Result<i32> {
    let loaded = buoy_wire::manifest::load(&args.plugins)?;
    let mut texts = Vec::new();
    for m in &loaded {
        texts.push(
            std::fs::read_to_string(&m.path)
                .with_context(|| format!("cannot read {}", m.path.display()))?,
        );
    }
    let names: Vec<String> = loaded.iter().map(|m| m.name().to_string()).collect();
    let opts = buoy_kube::manifest::ManifestOptions {
        namespace: args.namespace,
        image: args.image,
        worker_image: args.worker_image,
        image_pull_policy: args.image_pull_policy,
        timeout_seconds: args.timeout,
        plugins: texts,
        ..Default::default()
    };
    print!(
        "{}",
        buoy_kube::manifest::render(&buoy_kube::manifest::objects(&opts, &names))
    );
    Ok(0)
}

fn results(args: ResultsArgs) -> Result<i32> {
    use buoy_results::report::{Format, Mode};
    let archive = buoy_results::Archive::open(&args.archive)?;
    let query = buoy_results::Query {
        plugin: args.plugin,
        node: args.node,
        mode: match args.mode {
            ResultsMode::Report => Mode::Report,
            ResultsMode::Detailed => Mode::Detailed,
            ResultsMode::Dump => Mode::Dump,
        },
        format: match args.format {
            ResultsFormat::Text => Format::Text,
            ResultsFormat::Json => Format::Json,
            ResultsFormat::Yaml => Format::Yaml,
        },
        skip_prefix: args.skip_prefix,
        failed_by_node: args.failed_by_node,
    };
    let shown = buoy_results::report::show(&archive, &query, &mut std::io::stdout().lock())
        .with_context(|| format!("cannot show the results of {}", args.archive.display()))?;
    for n in &shown.notes {
        eprintln!("buoy: note: {n}");
    }
    for e in &shown.errors {
        eprintln!("buoy: error: {e}");
    }
    Ok(if shown.passed && shown.errors.is_empty() {
        0
    } else {
        1
    })
}

fn certs(cmd: CertsCommand) -> Result<i32> {
    match cmd {
        CertsCommand::Init { dir, advertise } => {
            let (host, extra) = advertise.split_first().expect("clap requires one");
            buoy_pki::init_dir(&dir, host, extra)?;
            eprintln!(
                "buoy: wrote {} and {} in {} (the CA key stays in {}); next: buoy certs plugin {} NAME...",
                buoy_pki::CA_CERT_FILE,
                buoy_pki::SERVER_CERT_FILE,
                dir.display(),
                buoy_pki::CA_KEY_FILE,
                dir.display()
            );
        }
        CertsCommand::Plugin { dir, names } => {
            buoy_pki::issue_clients(&dir, &names)?;
            for n in &names {
                eprintln!(
                    "buoy: {} and {} in {}",
                    buoy_pki::client_cert_file(n),
                    buoy_pki::client_key_file(n),
                    dir.display()
                );
            }
        }
        CertsCommand::Env { dir, plugin } => {
            use std::io::Write;
            std::io::stdout().write_all(buoy_pki::worker_env(&dir, &plugin)?.as_bytes())?;
        }
    }
    Ok(0)
}

async fn bench(args: BenchArgs) -> Result<i32> {
    let cfg = buoy_bench::BenchConfig {
        url: args.url,
        nodes: args.nodes,
        node_plugins: args.node_plugins,
        global_plugins: args.global_plugins,
        size: args.size,
        concurrency: args.concurrency,
        tar_files: args.tar_files,
        chunked: args.chunked,
        new_conn: args.new_conn,
        certs: args.certs,
        slow: args.slow,
        slow_rate: args.slow_rate,
        progress_rate: args.progress_rate,
        ..Default::default()
    };
    let total = (cfg.nodes * cfg.node_plugins.len() + cfg.global_plugins.len()) as u64;
    let bar = buoy_bench::progress_bar(total, std::io::stderr().is_terminal());
    let b2 = bar.clone();
    let report = buoy_bench::run(cfg.clone(), move |done, _| b2.set_position(done)).await?;
    bar.finish_and_clear();
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", report.text(&cfg));
    }
    Ok(if report.all_ok() { 0 } else { 1 })
}

/// The `buoy results` summary of a finished run.
fn print_reports(reports: &[buoy_results::PluginReport], out: &mut impl std::io::Write) {
    let _ = buoy_results::report::write_reports(reports, buoy_results::report::Format::Text, out);
}

async fn run_local(args: RunArgs) -> Result<i32> {
    let opts = buoy_local::LocalOptions {
        manifests: args.manifests,
        nodes: args.nodes,
        output: args.output,
        timeout: secs(args.timeout),
        buoy_bin: std::env::current_exe().ok(),
        live: std::io::stderr().is_terminal() && !args.quiet,
        view: (!args.no_status_page).then_some(args.status_page),
    };
    let buoy_local::LocalRun { finished, view } = buoy_local::run(opts, shutdown_signal()).await?;
    let reports = &finished.reports;
    print_reports(reports, &mut std::io::stdout().lock());
    println!();
    println!("Run directory: {}", finished.run_dir.display());
    println!("SHA-256: {}", finished.tar_info.sha256);
    println!("Tarball: {}", finished.tarball.display());
    if let Some(view) = view {
        if args.serve_after {
            use std::io::Write;
            let _ = std::io::stdout().flush();
            eprintln!(
                "buoy: the run is over; serving its status page at {} until Ctrl-C",
                view.url()
            );
            shutdown_signal().await;
        }
        view.stop().await;
    }
    Ok(if reports.iter().all(|r| r.passed()) {
        0
    } else {
        1
    })
}

/// The error and its causes, each said once: a cause whose text its parent already includes
/// (as `cannot read X: <io error>` does) is not repeated.
fn error_chain(e: &anyhow::Error) -> String {
    let mut out = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !out.contains(&c) {
            out.push_str(": ");
            out.push_str(&c);
        }
    }
    out
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn main() {
    let cli = Cli::parse();
    init_tracing(
        if matches!(
            cli.command,
            Command::Run(_)
                | Command::Status(_)
                | Command::Splat(_)
                | Command::Manifest(_)
                | Command::Results(_)
                | Command::Bench(_)
        ) {
            "warn"
        } else {
            "info"
        },
        cli.log_format,
    );
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("buoy: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    let result = rt.block_on(async move {
        match cli.command {
            Command::Run(a) => run_local(a).await,
            Command::Aggregator(a) => aggregator(*a).await,
            Command::Worker(a) => worker(a).await,
            Command::Progress(a) => progress(a).await,
            Command::Status(a) => status(a).await,
            Command::Splat(a) => splat(a),
            Command::Manifest(a) => manifest(a),
            Command::Results(a) => results(a),
            Command::Certs(c) => certs(c),
            Command::Bench(a) => bench(a).await,
        }
    });
    let code = match result {
        Ok(c) => c,
        // A reader that went away (`buoy results X | head`) ends the output, as with any tool.
        Err(e) if is_broken_pipe(&e) => 141,
        Err(e) => {
            eprintln!("buoy: error: {}", error_chain(&e));
            1
        }
    };
    // Dropping the remaining tasks kills any child process they still own.
    rt.shutdown_timeout(Duration::from_secs(5));
    std::process::exit(code);
}
