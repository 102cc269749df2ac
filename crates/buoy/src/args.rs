//! The command line: every subcommand and flag `buoy` takes, with their help texts and
//! defaults. `main.rs` runs what these parse to.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use buoy_aggregator::{Options, ServerOptions};
use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "buoy",
    version,
    about = "A Sonobuoy-compatible result aggregator for Kubernetes conformance and diagnostic plugins"
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
    /// How log lines on stderr look: `human` (default) or `json`, one object a line, for
    /// clusters' log collectors. The level is set with `BUOY_LOG` (e.g. `BUOY_LOG=debug`).
    #[arg(long, global = true, value_enum, default_value = "human")]
    pub(crate) log_format: LogFormat,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum LogFormat {
    Human,
    Json,
}

/// Flags Sonobuoy's manifests pass to its binary; accepted and ignored (logging is set with
/// `BUOY_LOG`, e.g. `BUOY_LOG=debug`).
#[derive(Args, Debug, Default)]
pub(crate) struct CompatFlags {
    #[arg(short = 'v', hide = true, value_name = "N")]
    pub(crate) verbosity: Option<String>,
    #[arg(long, hide = true)]
    pub(crate) level: Option<String>,
    #[arg(long, hide = true, num_args = 0..=1, default_missing_value = "true")]
    pub(crate) logtostderr: Option<String>,
    #[arg(long, hide = true, num_args = 0..=1, default_missing_value = "true")]
    pub(crate) alsologtostderr: Option<String>,
}

#[derive(Subcommand)]
pub(crate) enum Command {
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
    /// List every image a run in a cluster pulls, to mirror them.
    Images(ImagesArgs),
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
    /// Download a sealed run's tarball from the aggregator in a cluster (or at --url) in
    /// ranges, resuming after a broken connection, and check its SHA-256 against the run's
    /// status.
    Retrieve(RetrieveArgs),
    /// Remove what `buoy manifest` applied: the namespace (and with it the aggregator, its
    /// plugins and their Secrets) and its cluster role and binding, as `sonobuoy delete` does.
    Delete(DeleteArgs),
}

#[derive(Debug, clap::Args)]
pub(crate) struct DeleteArgs {
    /// The run's namespace.
    #[arg(short = 'n', long, default_value = "sonobuoy")]
    pub(crate) namespace: String,
    /// Return only once the namespace is gone.
    #[arg(long)]
    pub(crate) wait: bool,
    #[arg(long)]
    pub(crate) kubeconfig: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub(crate) struct RetrieveArgs {
    /// Where the tarball is written (made if missing).
    #[arg(default_value = ".")]
    pub(crate) dir: PathBuf,
    /// The run's namespace: the tarball comes from its aggregator pod's status page through a
    /// port-forward by the API server (needs `pods/portforward`, not `pods/exec`).
    #[arg(short = 'n', long, default_value = "sonobuoy", conflicts_with = "url")]
    pub(crate) namespace: String,
    #[arg(long, conflicts_with = "url")]
    pub(crate) kubeconfig: Option<PathBuf>,
    /// A standalone aggregator's URL instead of a cluster.
    #[arg(long, value_name = "URL")]
    pub(crate) url: Option<String>,
    /// With an https --url: the CA, client certificate and key files (e.g. from --certs).
    #[arg(long, value_name = "FILE")]
    pub(crate) cacert: Option<PathBuf>,
    #[arg(long, value_name = "FILE")]
    pub(crate) cert: Option<PathBuf>,
    #[arg(long, value_name = "FILE")]
    pub(crate) key: Option<PathBuf>,
    /// No progress bar.
    #[arg(short, long)]
    pub(crate) quiet: bool,
    /// Bytes per range request (tests make it small).
    #[arg(long, hide = true, default_value_t = buoy_worker::retrieve::RANGE_BYTES)]
    pub(crate) range_bytes: u64,
}

#[derive(Args)]
pub(crate) struct BenchArgs {
    /// The aggregator: http://HOST:PORT, or https://HOST:PORT with --certs.
    #[arg(long)]
    pub(crate) url: String,
    /// Nodes, named n00000, n00001, ...
    #[arg(long, default_value_t = 1000)]
    pub(crate) nodes: usize,
    /// Per-node plugins (each node uploads one result for each).
    #[arg(long, value_delimiter = ',', default_value = "p")]
    pub(crate) node_plugins: Vec<String>,
    /// Global plugins (one result each).
    #[arg(long, value_delimiter = ',')]
    pub(crate) global_plugins: Vec<String>,
    /// Bytes per result (of all files together with --tar-files).
    #[arg(long, default_value_t = 10 << 10)]
    pub(crate) size: usize,
    /// Uploads in flight.
    #[arg(short = 'c', default_value_t = 50)]
    pub(crate) concurrency: usize,
    /// Send each result as a tar.gz of K files (default: a plain body).
    #[arg(long, default_value_t = 0, value_name = "K")]
    pub(crate) tar_files: usize,
    /// Chunked bodies instead of Content-Length.
    #[arg(long)]
    pub(crate) chunked: bool,
    /// A new connection (TCP and TLS) per upload, as Sonobuoy's workers do.
    #[arg(long)]
    pub(crate) new_conn: bool,
    /// Client certificates in the layout `buoy aggregator --certs` writes (for https).
    #[arg(long, value_name = "DIR")]
    pub(crate) certs: Option<PathBuf>,
    /// Slow clients that trickle their bodies (reported apart).
    #[arg(long, default_value_t = 0, value_name = "S")]
    pub(crate) slow: usize,
    /// How fast slow clients send, bytes per second.
    #[arg(long, default_value_t = 1024)]
    pub(crate) slow_rate: u64,
    /// Progress updates per node per second while uploads run.
    #[arg(long, default_value_t = 0.0, value_name = "R")]
    pub(crate) progress_rate: f64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Subcommand)]
pub(crate) enum CertsCommand {
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
pub(crate) struct ResultsArgs {
    /// A results `.tar.gz`, or the directory it was extracted to (a run directory works too).
    pub(crate) archive: PathBuf,
    /// Only this plugin (default: every plugin the archive lists).
    #[arg(short, long)]
    pub(crate) plugin: Option<String>,
    /// Start at the item with this name: a node, a file or a suite.
    #[arg(short, long)]
    pub(crate) node: Option<String>,
    /// report: counts and failed tests; detailed: one line per test or file; dump: the trees.
    #[arg(short, long, value_enum, default_value = "report")]
    pub(crate) mode: ResultsMode,
    /// Machine-readable output (report and dump modes).
    #[arg(long, value_enum, default_value = "text")]
    pub(crate) format: ResultsFormat,
    /// Detailed mode: print only the contents of result files, without their path prefix.
    #[arg(short = 's', long)]
    pub(crate) skip_prefix: bool,
    /// Report mode: name the node of each failed test (`node: test`).
    #[arg(long)]
    pub(crate) failed_by_node: bool,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub(crate) enum ResultsMode {
    Report,
    Detailed,
    Dump,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub(crate) enum ResultsFormat {
    Text,
    Json,
    Yaml,
}

#[derive(Args)]
pub(crate) struct StatusArgs {
    /// The run's namespace.
    #[arg(short = 'n', long, default_value = "sonobuoy")]
    pub(crate) namespace: String,
    /// One row per plugin and node.
    #[arg(long)]
    pub(crate) show_all: bool,
    /// Print the status document as JSON.
    #[arg(long, conflicts_with = "show_all")]
    pub(crate) json: bool,
    /// Refresh every few seconds until the run is complete: a progress bar per plugin on a
    /// terminal, the table again otherwise.
    #[arg(long)]
    pub(crate) watch: bool,
    /// With --watch: no bars; print the table on each refresh, as when not on a terminal.
    #[arg(short, long, requires = "watch")]
    pub(crate) quiet: bool,
    /// Read `GET /api/v1/status` of a standalone aggregator instead of a cluster.
    #[arg(long, value_name = "URL")]
    pub(crate) url: Option<String>,
    /// With an https --url: the CA, client certificate and key files (e.g. from --certs).
    #[arg(long, requires = "url", value_name = "FILE")]
    pub(crate) cacert: Option<PathBuf>,
    #[arg(long, requires = "url", value_name = "FILE")]
    pub(crate) cert: Option<PathBuf>,
    #[arg(long, requires = "url", value_name = "FILE")]
    pub(crate) key: Option<PathBuf>,
    #[arg(long)]
    pub(crate) kubeconfig: Option<PathBuf>,
}

#[derive(Args)]
pub(crate) struct SplatArgs {
    #[arg(default_value = "/tmp/sonobuoy")]
    pub(crate) dir: PathBuf,
}

#[derive(Args)]
pub(crate) struct ManifestArgs {
    #[command(flatten)]
    pub(crate) plugins: PluginFlags,
    #[command(flatten)]
    pub(crate) cluster: ClusterFlags,
    /// Per-plugin timeout in seconds (0 = none).
    #[arg(long, default_value_t = 21600)]
    pub(crate) timeout: u64,
}

/// Which plugins a run in a cluster has, and how the built-in ones run (Sonobuoy's flags).
#[derive(Args, Debug, Default, Clone)]
pub(crate) struct PluginFlags {
    /// A plugin: `e2e` (the Kubernetes conformance tests), `systemd-logs` (each node's
    /// journal), or a manifest file or directory of them. Repeatable; default: e2e and
    /// systemd-logs.
    #[arg(long = "plugin", short = 'p', value_name = "NAME_OR_PATH")]
    pub(crate) plugins: Vec<String>,
    /// What e2e runs: `non-disruptive-conformance` (default: every conformance test that does
    /// not disrupt the cluster), `certified-conformance` (all of them, as for certification),
    /// `conformance-lite` (without the slowest, in parallel), `quick` (one pod test).
    #[arg(long, short = 'm', value_name = "MODE")]
    pub(crate) mode: Option<String>,
    /// E2E_FOCUS: a regular expression of the e2e tests to run (replaces the mode's).
    #[arg(long, value_name = "REGEX")]
    pub(crate) e2e_focus: Option<String>,
    /// E2E_SKIP: a regular expression of the e2e tests not to run (replaces the mode's).
    #[arg(long, value_name = "REGEX")]
    pub(crate) e2e_skip: Option<String>,
    /// E2E_PARALLEL: `true` runs e2e tests in parallel (and skips the [Serial] ones).
    #[arg(long, value_name = "BOOL")]
    pub(crate) e2e_parallel: Option<String>,
    /// An env var of a plugin's container, PLUGIN.KEY=VALUE (PLUGIN.KEY removes it); applied
    /// after the e2e flags above. Repeatable.
    #[arg(long = "plugin-env", value_name = "PLUGIN.KEY=VALUE")]
    pub(crate) plugin_env: Vec<String>,
    /// The version the conformance image is tagged with (default: the API server's).
    #[arg(long, value_name = "VERSION")]
    pub(crate) kubernetes_version: Option<String>,
    /// The conformance image in full, instead of registry.k8s.io/conformance:VERSION (a
    /// mirror of it, say).
    #[arg(long, value_name = "IMAGE")]
    pub(crate) kube_conformance_image: Option<String>,
    /// The systemd-logs image (default sonobuoy/systemd-logs:v0.4).
    #[arg(long, value_name = "IMAGE")]
    pub(crate) systemd_logs_image: Option<String>,
    /// A YAML file naming the registries e2e pulls its test images from (KUBE_TEST_REPO_LIST),
    /// for private mirrors; `buoy images` lists what to mirror.
    #[arg(long, value_name = "FILE")]
    pub(crate) e2e_repo_config: Option<PathBuf>,
    /// Run exactly the e2e tests that failed in an earlier run's tarball.
    #[arg(long, value_name = "TARBALL")]
    pub(crate) rerun_failed: Option<PathBuf>,
}

impl PluginFlags {
    /// Whether any of these flags was given (they make `buoy run` a cluster run).
    pub(crate) fn any(&self) -> bool {
        !self.plugins.is_empty()
            || self.mode.is_some()
            || self.e2e_focus.is_some()
            || self.e2e_skip.is_some()
            || self.e2e_parallel.is_some()
            || !self.plugin_env.is_empty()
            || self.kubernetes_version.is_some()
            || self.kube_conformance_image.is_some()
            || self.systemd_logs_image.is_some()
            || self.e2e_repo_config.is_some()
            || self.rerun_failed.is_some()
    }
}

/// Where a run in a cluster goes and what runs its aggregator.
#[derive(Args, Debug, Clone)]
pub(crate) struct ClusterFlags {
    /// The kubeconfig (default: $KUBECONFIG, ~/.kube/config, or the in-cluster config).
    #[arg(long, value_name = "FILE")]
    pub(crate) kubeconfig: Option<PathBuf>,
    /// The kubeconfig context (default: its current one).
    #[arg(long, value_name = "NAME")]
    pub(crate) context: Option<String>,
    #[arg(short = 'n', long, default_value = "sonobuoy")]
    pub(crate) namespace: String,
    /// The image with Buoy at /sonobuoy (see the Dockerfile).
    #[arg(long, default_value = concat!("buoy:", env!("CARGO_PKG_VERSION")))]
    pub(crate) image: String,
    /// The image plugin pods run their worker from (default: --image).
    #[arg(long)]
    pub(crate) worker_image: Option<String>,
    #[arg(long, default_value = "IfNotPresent")]
    pub(crate) image_pull_policy: String,
}

/// `buoy images`: what a run pulls.
#[derive(Args)]
pub(crate) struct ImagesArgs {
    #[command(flatten)]
    pub(crate) plugins: PluginFlags,
    #[command(flatten)]
    pub(crate) cluster: ClusterFlags,
    /// The conformance suite's `e2e.test` (of the same version): also list the images its
    /// tests pull, with --e2e-repo-config applied.
    #[arg(long, value_name = "FILE")]
    pub(crate) e2e_test: Option<PathBuf>,
}

#[derive(Args)]
pub(crate) struct RunArgs {
    /// Plugin manifests, or directories of *.yaml / *.yml manifests, run locally. With none,
    /// or with --kubeconfig, --context, --mode or --plugin, the run goes to a cluster.
    #[arg(value_name = "MANIFEST_OR_DIR")]
    pub(crate) manifests: Vec<PathBuf>,
    /// Node names a DaemonSet plugin runs once for (default: this host's name).
    #[arg(long = "node", value_name = "NAME")]
    pub(crate) nodes: Vec<String>,
    /// Where the run directory and the tarball are written.
    #[arg(long, default_value = "buoy-results")]
    pub(crate) output: PathBuf,
    /// Give up waiting after this many seconds (0 = never); in a cluster, each plugin's
    /// timeout (default 3600 locally, 21600 in a cluster).
    #[arg(long)]
    pub(crate) timeout: Option<u64>,
    /// Serve the live status page over plain HTTP on this address (port 0: any free port);
    /// its URL is printed. Keep it on loopback: anyone who reaches it sees the run.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    pub(crate) status_page: SocketAddr,
    /// Do not serve the status page.
    #[arg(long, conflicts_with = "serve_after")]
    pub(crate) no_status_page: bool,
    /// After the run, keep serving the status page (and the tarball) until Ctrl-C.
    #[arg(long)]
    pub(crate) serve_after: bool,
    /// No progress bars: print a plain line per change, as when stderr is not a terminal.
    #[arg(short, long)]
    pub(crate) quiet: bool,
    #[command(flatten)]
    pub(crate) plugins: PluginFlags,
    #[command(flatten)]
    pub(crate) cluster: ClusterFlags,
    /// In a cluster: leave the run's objects there when it ends (default: delete them).
    #[arg(long)]
    pub(crate) keep: bool,
}

impl RunArgs {
    /// Whether this run goes to a cluster rather than running locally.
    pub(crate) fn in_cluster(&self) -> bool {
        self.manifests.is_empty()
            || self.cluster.kubeconfig.is_some()
            || self.cluster.context.is_some()
            || self.plugins.any()
    }
}

#[derive(Args)]
#[group(id = "expectations", multiple = true)]
pub(crate) struct AggregatorArgs {
    /// Results to expect: PLUGIN=NODE[,NODE...]; NODE `global` for a Job plugin. Without it,
    /// the aggregator runs in-cluster: it reads Sonobuoy's config.json and plugins.d, launches
    /// the plugins and publishes the status annotation.
    #[arg(
        long = "expect",
        value_name = "PLUGIN=NODE[,NODE...]",
        group = "expectations"
    )]
    pub(crate) expect: Vec<String>,
    /// Results to expect, read from a file: one PLUGIN=NODE[,NODE...] per line (lines may
    /// repeat a plugin; blank lines and lines starting with `#` are skipped). For node lists
    /// longer than one command-line argument may be (128 KiB on Linux). Adds to --expect.
    #[arg(long = "expect-file", value_name = "FILE", group = "expectations")]
    pub(crate) expect_files: Vec<PathBuf>,
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub(crate) bind: SocketAddr,
    /// Where the run directory `<UUID>/` and the tarball are written.
    #[arg(long, default_value = "/tmp/sonobuoy")]
    pub(crate) output: PathBuf,
    /// Host workers use to reach this aggregator (IP or DNS name); the server certificate
    /// names it. Default: the bind address, or this host's name when binding all interfaces.
    #[arg(long)]
    pub(crate) advertise: Option<String>,
    /// Write (or reuse) the CA, server and per-plugin client certificates here and require mTLS.
    #[arg(long, conflicts_with = "insecure_http", value_name = "DIR")]
    pub(crate) certs: Option<PathBuf>,
    /// Serve plain HTTP with no client authentication (trusted networks and tests only).
    #[arg(long)]
    pub(crate) insecure_http: bool,
    /// Seconds to wait for results before recording timeout errors (0 = no timeout).
    #[arg(long, default_value_t = 21600)]
    pub(crate) timeout: u64,
    /// Keep serving after the tarball is written, until SIGTERM/SIGINT.
    #[arg(long)]
    pub(crate) no_exit: bool,
    /// Also serve the status page and the read-only API (status, metrics, tarball) over plain
    /// HTTP on this address, e.g. 127.0.0.1:8081 for `kubectl port-forward`; it never accepts
    /// results. The mTLS listener serves the page too, to clients with a certificate.
    #[arg(long, value_name = "ADDR")]
    pub(crate) status_page: Option<SocketAddr>,
    /// Run ID (UUID) to use; an existing run directory with this ID is resumed. Without it,
    /// the one unfinished run found in --output is resumed.
    #[arg(long, value_name = "UUID")]
    pub(crate) run_id: Option<String>,
    /// In-cluster: on SIGTERM/SIGINT before every result arrived, delete the plugins' pods and
    /// DaemonSets too (by default they are left running; the final status says `failed`, and
    /// why, either way).
    #[arg(long)]
    pub(crate) cleanup_on_interrupt: bool,
    /// In-cluster: on such a stop, record an error result for every missing one and seal what
    /// arrived (the status then says `failed`, why, and the tarball). Sealing must fit in the
    /// pod's termination grace period.
    #[arg(long)]
    pub(crate) seal_on_interrupt: bool,
    /// Start a new run even if --output holds an unfinished one.
    #[arg(long, conflicts_with = "run_id")]
    pub(crate) new_run: bool,
    /// Uploads processed at once; more wait their turn.
    #[arg(long, default_value_t = 256)]
    pub(crate) max_concurrent_uploads: usize,
    #[command(flatten)]
    pub(crate) caps: CapFlags,
    /// With --expect: plugin manifests (files or directories) giving each plugin's
    /// result-format and result-files for post-processing; plugins not found are `raw`.
    #[arg(long = "plugins", value_name = "PATH", requires = "expectations")]
    pub(crate) plugin_manifests: Vec<PathBuf>,
    /// In-cluster mode (no --expect): the kubeconfig to use instead of the in-cluster config.
    #[arg(long)]
    pub(crate) kubeconfig: Option<PathBuf>,
    /// In-cluster: seconds a DaemonSet plugin's node may go without a pod before its result is
    /// an error ("No pod was scheduled on node ..."), counted from the launch and again from
    /// each time the DaemonSet gained a pod.
    #[arg(long, value_name = "SECS", default_value_t = 120)]
    pub(crate) missing_pod_grace: u64,
    #[command(flatten)]
    pub(crate) compat: CompatFlags,
}

impl AggregatorArgs {
    /// The aggregator tunables both modes take from the command line.
    pub(crate) fn options(&self) -> Options {
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

    /// The connection tunables both modes take from the command line.
    pub(crate) fn server_options(&self) -> ServerOptions {
        ServerOptions {
            write_stall_timeout: Duration::from_secs(self.caps.write_stall_timeout),
            ..ServerOptions::default()
        }
    }
}

/// Caps on what clients may make the aggregator store or hold (defaults sized to real
/// results: a conformance run's results are tens of MB).
#[derive(Args)]
pub(crate) struct CapFlags {
    /// Bytes of request body accepted for one upload (413 past it).
    #[arg(long, default_value_t = Options::default().limits.max_upload_bytes)]
    pub(crate) max_upload_bytes: u64,
    /// Bytes one uploaded tarball may expand to (413 past it).
    #[arg(long, default_value_t = Options::default().limits.max_extracted_bytes)]
    pub(crate) max_extracted_bytes: u64,
    /// Bytes of one file inside an uploaded tarball (413 past it).
    #[arg(long, default_value_t = Options::default().limits.max_file_bytes)]
    pub(crate) max_file_bytes: u64,
    /// Entries in one uploaded tarball (413 past it).
    #[arg(long, default_value_t = Options::default().limits.max_entries)]
    pub(crate) max_entries: u64,
    /// Bytes of results the whole run may store (507 past it; the key stays open).
    #[arg(long, default_value_t = Options::default().max_run_bytes)]
    pub(crate) max_run_bytes: u64,
    /// Free bytes to keep on the output file system: uploads get 507 instead of filling it,
    /// and succeed again once space returns (0 = no reserve).
    #[arg(long, default_value_t = Options::default().disk_reserve_bytes)]
    pub(crate) disk_reserve_bytes: u64,
    /// Seconds an upload may wait for a slot before a 503 (the worker retries).
    #[arg(long, default_value_t = Options::default().slot_wait.as_secs())]
    pub(crate) upload_slot_wait: u64,
    /// While uploads wait for a slot, bodies slower than this many bytes/s give theirs up (503).
    #[arg(long, default_value_t = Options::default().min_upload_rate)]
    pub(crate) min_upload_rate: u64,
    /// Seconds an upload body may pause between two chunks (408 past it).
    #[arg(long, default_value_t = Options::default().body_idle_timeout.as_secs())]
    pub(crate) body_idle_timeout: u64,
    /// Seconds a connection may take none of the answer it is sent before it is closed (a
    /// client that never reads would hold its answer, a whole status body, for ever).
    #[arg(long, default_value_t = ServerOptions::default().write_stall_timeout.as_secs(), value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) write_stall_timeout: u64,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub(crate) enum WorkerMode {
    Global,
    SingleNode,
}

#[derive(Args)]
pub(crate) struct WorkerArgs {
    #[arg(value_enum)]
    pub(crate) mode: WorkerMode,
    /// single-node: seconds to sleep after sending (negative: until terminated).
    #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
    pub(crate) sleep: i64,
    #[command(flatten)]
    pub(crate) compat: CompatFlags,
}

#[derive(Args)]
pub(crate) struct ProgressArgs {
    #[arg(long, default_value = "")]
    pub(crate) msg: String,
    #[arg(long)]
    pub(crate) total: Option<i64>,
    #[arg(long)]
    pub(crate) completed: Option<i64>,
    /// A failing test's name (repeatable).
    #[arg(long = "failure")]
    pub(crate) failures: Vec<String>,
    /// An error message (repeatable).
    #[arg(long = "error")]
    pub(crate) errors: Vec<String>,
    /// Add to the completed count instead of replacing it.
    #[arg(long)]
    pub(crate) append_completed: Option<i64>,
    /// With --append-completed/--append-failing, grow the total too.
    #[arg(long)]
    pub(crate) append_totals: bool,
    /// Add a failing test's name (repeatable).
    #[arg(long = "append-failing")]
    pub(crate) append_failing: Vec<String>,
    /// The relay's port (default: $SONOBUOY_PROGRESS_PORT, else 8099).
    #[arg(long, env = "SONOBUOY_PROGRESS_PORT", default_value_t = 8099)]
    pub(crate) port: u16,
}
