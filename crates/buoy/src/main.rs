//! The `buoy` binary: parses arguments (`args`), sets up logging and signal handling, and calls the
//! libraries. `anyhow` lives only here.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;

use buoy_aggregator::run::standalone_config_json;
use buoy_aggregator::{Options, RunConfig, RunHandle, ServerOptions};
use buoy_wire::ResultKey;

mod args;
mod cluster_run;
mod status_view;

use args::*;

/// Logs go to stderr; `BUOY_LOG` overrides the level (`buoy run` shows its own progress, so it
/// logs only warnings by default). The returned run log copies the same lines into
/// `meta/run.log` while an in-cluster run has it open.
fn init_tracing(default_level: &str, format: LogFormat) -> buoy_kube::runlog::RunLog {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    let filter = tracing_subscriber::EnvFilter::try_from_env("BUOY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false);
    let fmt = match format {
        LogFormat::Human => fmt.with_ansi(std::io::stderr().is_terminal()).boxed(),
        LogFormat::Json => fmt.json().with_ansi(false).boxed(),
    };
    let run_log = buoy_kube::runlog::RunLog::default();
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(run_log.layer())
        .init();
    run_log
}

/// Resolves on SIGINT or SIGTERM.
pub(crate) async fn shutdown_signal() {
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

/// Every expectation of `--expect` and `--expect-file`, each with where it came from for errors.
fn expectations(args: &AggregatorArgs) -> Result<Vec<(String, String)>> {
    let mut specs: Vec<(String, String)> = args
        .expect
        .iter()
        .map(|s| (format!("--expect {s:?}"), s.clone()))
        .collect();
    for file in &args.expect_files {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("--expect-file {}", file.display()))?;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if !line.is_empty() && !line.starts_with('#') {
                specs.push((
                    format!("{} line {}", file.display(), n + 1),
                    line.to_string(),
                ));
            }
        }
    }
    Ok(specs)
}

fn parse_expect(specs: &[(String, String)]) -> Result<(Vec<String>, Vec<ResultKey>)> {
    let mut plugins: Vec<String> = Vec::new();
    let mut keys = Vec::new();
    for (origin, spec) in specs {
        let (plugin, nodes) = spec
            .split_once('=')
            .with_context(|| format!("{origin}: expected PLUGIN=NODE[,NODE...]"))?;
        if !buoy_wire::key::is_valid_name(plugin) {
            bail!("{origin}: invalid plugin name {plugin:?}");
        }
        for node in nodes.split(',') {
            if !buoy_wire::key::is_valid_name(node) {
                bail!("{origin}: invalid node name {node:?}");
            }
            keys.push(ResultKey::new(plugin, node));
        }
        if !plugins.iter().any(|p| p == plugin) {
            plugins.push(plugin.to_string());
        }
    }
    if specs.is_empty() {
        bail!("--expect-file: no PLUGIN=NODE[,NODE...] line found");
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
async fn bind_status_page(addr: SocketAddr) -> Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot serve the status page on {addr}"))
}

async fn start_view(
    addr: SocketAddr,
    agg: &Arc<buoy_aggregator::Aggregator>,
    server: ServerOptions,
) -> Result<buoy_aggregator::ViewServer> {
    let listener = bind_status_page(addr).await?;
    let view = buoy_aggregator::ViewServer::start(listener, agg.clone(), server)?;
    eprintln!("buoy: status page: {}", view.url());
    Ok(view)
}

async fn aggregator_in_cluster(
    args: AggregatorArgs,
    run_log: buoy_kube::runlog::RunLog,
) -> Result<i32> {
    use buoy_kube::config::{ClusterConfig, ProcessEnv};
    let cfg = ClusterConfig::load(&ProcessEnv)?;
    let plugins = cfg.load_plugins(&ProcessEnv)?;
    let api =
        buoy_kube::api::KubeApi::connect(args.kubeconfig.as_deref(), cfg.namespace.clone()).await?;
    let view_listener = match args.status_page {
        Some(addr) => Some(bind_status_page(addr).await?),
        None => None,
    };
    let opts = buoy_kube::cluster::ClusterOptions {
        output_dir: args.output.clone(),
        no_exit: args.no_exit,
        view_listener,
        aggregator: args.options(),
        server: args.server_options(),
        run_log: Some(run_log),
        cleanup_on_interrupt: args.cleanup_on_interrupt,
        seal_on_interrupt: args.seal_on_interrupt,
        monitor: buoy_kube::monitor::MonitorOptions {
            missing_pod_grace: Duration::from_secs(args.missing_pod_grace),
            ..Default::default()
        },
        ..Default::default()
    };
    let finished = buoy_kube::cluster::run(api, cfg, plugins, opts, shutdown_signal())
        .await
        .context("the run did not finish")?;
    print_reports(&finished.reports, &mut std::io::stderr().lock());
    println!("{}", finished.tarball.display());
    Ok(0)
}

async fn aggregator(args: AggregatorArgs, run_log: buoy_kube::runlog::RunLog) -> Result<i32> {
    let _ = &args.compat;
    if args.expect.is_empty() && args.expect_files.is_empty() {
        return aggregator_in_cluster(args, run_log).await;
    }
    let (plugins, expected) = parse_expect(&expectations(&args)?)?;
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
    let (uuid, resumed) = match &args.run_id {
        Some(id) => (
            id.parse::<uuid::Uuid>()
                .with_context(|| format!("--run-id {id:?} is not a UUID"))?
                .to_string(),
            false,
        ),
        None if args.new_run => (uuid::Uuid::new_v4().to_string(), false),
        None => match buoy_aggregator::run::unfinished_runs(&args.output).as_slice() {
            [] => (uuid::Uuid::new_v4().to_string(), false),
            [one] => (one.clone(), true),
            many => bail!(
                "{} holds {} unfinished runs ({}): choose one with --run-id, or start another with --new-run",
                args.output.display(),
                many.len(),
                many.join(", ")
            ),
        },
    };
    let timeout = secs(args.timeout);
    let options = Options {
        enforce_identity: tls.is_some(),
        ..args.options()
    };
    let bound = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    eprintln!("buoy: aggregator for run {uuid} listening on {bound}; workers use AGGREGATOR_URL={scheme}://{advertise}:{}", bound.port());
    if resumed {
        eprintln!(
            "buoy: resuming the unfinished run {uuid} found in {}: results it stored are kept and not asked for again (--new-run starts another run)",
            args.output.display()
        );
    }
    let cfg = RunConfig {
        output_dir: args.output.clone(),
        uuid: uuid.clone(),
        plugins: post_processing_specs(&args.plugin_manifests, &expected)?,
        expected,
        timeout,
        options,
        server: args.server_options(),
        config_json: standalone_config_json(
            &plugins,
            bound,
            &format!("{advertise}:{}", bound.port()),
            timeout,
        ),
    };
    let handle = RunHandle::start(listener, tls, cfg).await?;
    let view = match args.status_page {
        Some(addr) => Some(start_view(addr, handle.aggregator(), args.server_options()).await?),
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

/// A client for an aggregator's `url`, with mTLS when the three files are given.
fn aggregator_client(
    url: &str,
    cacert: &Option<PathBuf>,
    cert: &Option<PathBuf>,
    key: &Option<PathBuf>,
) -> Result<buoy_worker::client::Client> {
    let tls = match (cacert, cert, key) {
        (Some(ca), Some(cert), Some(key)) => {
            let read = |p: &PathBuf| {
                std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))
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
    Ok(buoy_worker::client::Client::new(url, tls)?)
}

async fn retrieve(args: RetrieveArgs) -> Result<i32> {
    // In a cluster: a port-forward to the aggregator pod's status page, held while we fetch.
    let (url, _forward) = match &args.url {
        Some(url) => (url.clone(), None),
        None => {
            let api = buoy_kube::api::KubeApi::connect(
                args.kubeconfig.as_deref(),
                args.namespace.clone(),
            )
            .await?;
            let pod = api.aggregator_pod_name().await?;
            let port = buoy_kube::manifest::STATUS_PAGE_PORT;
            let forward = buoy_kube::forward::Forward::start(&api, &pod, port).await?;
            eprintln!(
                "buoy: retrieving from pod {}/{pod} port {port} through the API server",
                args.namespace
            );
            (forward.url(), Some(forward))
        }
    };
    let client = aggregator_client(&url, &args.cacert, &args.cert, &args.key)?;
    let got = download(&client, &args.dir, args.range_bytes, args.quiet)
        .await
        .with_context(|| match &args.url {
            Some(url) => format!("cannot retrieve the tarball from {url}"),
            None => format!(
                "cannot retrieve the tarball from the aggregator in namespace {} (a Sonobuoy aggregator has no status page on port {}: use `sonobuoy retrieve` for it)",
                args.namespace,
                buoy_kube::manifest::STATUS_PAGE_PORT
            ),
        })?;
    println!("{}", got.path.display());
    Ok(0)
}

/// Downloads the sealed tarball into `dir` in ranges (a bar on a terminal unless `quiet`),
/// checked against the run's SHA-256, and says what it got.
pub(crate) async fn download(
    client: &buoy_worker::client::Client,
    dir: &std::path::Path,
    range_bytes: u64,
    quiet: bool,
) -> Result<buoy_worker::retrieve::Retrieved> {
    let bar = if !quiet && std::io::stderr().is_terminal() {
        let b = indicatif::ProgressBar::new(0);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "tarball [{bar:30.green/blue}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        b
    } else {
        indicatif::ProgressBar::hidden()
    };
    let mut on_progress = |done: u64, total: u64| {
        bar.set_length(total);
        bar.set_position(done);
    };
    let got = buoy_worker::retrieve::retrieve(client, dir, range_bytes, &mut on_progress).await;
    bar.finish_and_clear();
    let got = got?;
    if got.resumed_from > 0 || got.retries > 0 {
        eprintln!(
            "resumed: {} bytes were already here, {} requests tried again",
            got.resumed_from, got.retries
        );
    }
    eprintln!(
        "{} bytes, SHA-256 {} (matches the run's status)",
        got.bytes, got.sha256
    );
    Ok(got)
}

async fn delete(args: DeleteArgs) -> Result<i32> {
    let api = buoy_kube::api::KubeApi::connect(args.kubeconfig.as_deref(), args.namespace.clone())
        .await?;
    let opts = buoy_kube::delete::DeleteOptions {
        wait: args.wait,
        ..Default::default()
    };
    buoy_kube::delete::delete(&api, &opts, |s| eprintln!("buoy: {s}")).await?;
    Ok(0)
}

async fn fetch_status(args: &StatusArgs) -> Result<buoy_wire::Status> {
    if let Some(url) = &args.url {
        let client = aggregator_client(url, &args.cacert, &args.cert, &args.key)?;
        // Read whole: `send` keeps 64 KiB of a reply, less than the status of 700 keys.
        let reply = client
            .get_whole(
                buoy_wire::routes::STATUS,
                http::HeaderMap::new(),
                buoy_worker::retrieve::MAX_STATUS_BYTES,
            )
            .await
            .with_context(|| format!("cannot read the status from {url}"))?;
        if !reply.status.is_success() {
            bail!("{url} answered {}: {}", reply.status, reply.text());
        }
        return serde_json::from_slice(&reply.body).context("the status does not decode");
    }
    let api = buoy_kube::api::KubeApi::connect(args.kubeconfig.as_deref(), args.namespace.clone())
        .await?;
    Ok(buoy_kube::status::read_status(&api).await?)
}

/// `buoy status --watch` on a terminal: a bar per plugin until the run is complete, then the
/// final table.
async fn watch_with_bars(args: &StatusArgs) -> Result<i32> {
    let mut bars = buoy_local::display::PluginBars::new();
    loop {
        let s = fetch_status(args).await?;
        bars.update(&buoy_wire::overview::Overview::from_status(&s));
        if s.is_final() {
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
        if args.watch && std::io::stdout().is_terminal() {
            print!("\x1b[2J\x1b[H");
        }
        print!("{text}");
        if !args.watch || s.is_final() {
            return Ok(i32::from(s.status == buoy_wire::status::FAILED));
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
        timeout: secs(args.timeout.unwrap_or(3600)),
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

/// One malloc arena for the whole process unless `MALLOC_ARENA_MAX` says otherwise. glibc
/// gives each busy thread an arena of its own, and memory freed in one (post-processing a
/// large run, say) stays with it: measured here, peak RSS for 10,000 results fell from 42 to
/// 28 MiB with one arena, at the same upload rate (docs/BENCHMARKS.md). Threads keep their
/// own small caches, so they rarely meet on the arena's lock.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: called first thing in `main`, before any other thread exists; mallopt only
        // sets an allocator parameter.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
    }
}

/// Raises the soft limit on open files to the hard one. Every upload in flight, staged result
/// and connection holds a descriptor; the usual soft limit of 1,024 made a busy aggregator fail
/// to seal (and its restarts fail the same way) while the hard limit allowed far more.
fn raise_open_file_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                eprintln!("buoy: cannot raise the open-file limit from {soft} to {hard}: {e}");
            }
        }
    }
}

fn main() {
    limit_malloc_arenas();
    raise_open_file_limit();
    let cli = Cli::parse();
    let run_log = init_tracing(
        if matches!(
            cli.command,
            Command::Run(_)
                | Command::Status(_)
                | Command::Splat(_)
                | Command::Manifest(_)
                | Command::Images(_)
                | Command::Results(_)
                | Command::Bench(_)
                | Command::Retrieve(_)
                | Command::Delete(_)
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
            Command::Run(a) if a.in_cluster() => cluster_run::run(a).await,
            Command::Run(a) => run_local(a).await,
            Command::Aggregator(a) => aggregator(*a, run_log).await,
            Command::Worker(a) => worker(a).await,
            Command::Progress(a) => progress(a).await,
            Command::Status(a) => status(a).await,
            Command::Splat(a) => splat(a),
            Command::Manifest(a) => cluster_run::manifest(a).await,
            Command::Images(a) => cluster_run::images(a).await,
            Command::Results(a) => results(a),
            Command::Certs(c) => certs(c),
            Command::Bench(a) => bench(a).await,
            Command::Retrieve(a) => retrieve(a).await,
            Command::Delete(a) => delete(a).await,
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
    // What the command took at its peak, for whoever sizes its memory (`BUOY_LOG=debug`). A
    // parent's wait4 cannot say: a child started by vfork inherits its parent's peak.
    if let Some(kib) = peak_rss_kib() {
        tracing::debug!(peak_rss_kib = kib, code, "exiting");
    }
    std::process::exit(code);
}

/// This process's peak resident set (`VmHWM`), in KiB.
fn peak_rss_kib() -> Option<u64> {
    std::fs::read_to_string("/proc/self/status")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}
