//! Buoy's embedded local mode (the quickstart): loads Sonobuoy plugin manifests, runs each
//! plugin's container command as a local process (a Job plugin once as `global`, a DaemonSet
//! plugin once per local node name), runs a real worker beside each one, and aggregates over
//! real mTLS on 127.0.0.1 into a results tarball. No cluster, no images.

pub mod display;
mod instance;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use buoy_aggregator::{Aggregator, Finished, RunConfig, RunHandle};
use buoy_wire::manifest::{self, Driver, Manifest, ManifestError};
use buoy_wire::ResultKey;

pub use instance::Instance;

#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("plugin {plugin}: {reason}")]
    Plugin { plugin: String, reason: String },
    #[error("invalid node name {0:?}: it must be 1 to 255 bytes, not . or .. or global, without / or NUL")]
    Node(String),
    #[error(transparent)]
    Pki(#[from] buoy_pki::PkiError),
    #[error(transparent)]
    Aggregator(#[from] buoy_aggregator::AggError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

/// What `buoy run` was asked to do.
#[derive(Debug, Clone)]
pub struct LocalOptions {
    pub manifests: Vec<PathBuf>,
    /// Node names a DaemonSet plugin runs once for; empty means this host's name.
    pub nodes: Vec<String>,
    pub output: PathBuf,
    pub timeout: Option<Duration>,
    /// The `buoy` binary plugins reach as `buoy` on their PATH (for `buoy progress`).
    pub buoy_bin: Option<PathBuf>,
    /// Draw live progress bars (a terminal) or print a line per change.
    pub live: bool,
    /// Serve the status page over plain HTTP here (loopback is the safe choice: it shows
    /// the run to anyone who can connect, and offers the tarball).
    pub view: Option<std::net::SocketAddr>,
}

/// A finished local run, and the status page's server if one was asked for: it is still
/// serving, so a caller can keep it up after the run (`--serve-after`) and then stop it.
pub struct LocalRun {
    pub finished: Finished,
    pub view: Option<buoy_aggregator::ViewServer>,
}

/// This host's name, the default node of a local run.
pub use buoy_wire::host_name;

fn check_runnable(m: &Manifest) -> Result<(), LocalError> {
    if m.container.command.is_empty() {
        return Err(LocalError::Plugin {
            plugin: m.name().to_string(),
            reason: format!(
                "{} gives no spec.command: local mode runs the container's command, it cannot run the image ({:?})",
                m.path.display(),
                m.container.image
            ),
        });
    }
    Ok(())
}

/// The keys a set of plugins expects on `nodes`.
pub fn expected_keys(manifests: &[Manifest], nodes: &[String]) -> Vec<ResultKey> {
    let mut keys = Vec::new();
    for m in manifests {
        match m.driver {
            Driver::Job => keys.push(ResultKey::global(m.name())),
            Driver::DaemonSet => {
                keys.extend(nodes.iter().map(|n| ResultKey::new(m.name(), n.clone())))
            }
        }
    }
    keys
}

/// Runs every plugin locally and returns the sealed run, its summaries included (or an error
/// on `shutdown`).
pub async fn run(
    opts: LocalOptions,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<LocalRun, LocalError> {
    let manifests = manifest::load(&opts.manifests)?;
    for m in &manifests {
        check_runnable(m)?;
    }
    let nodes = if opts.nodes.is_empty() {
        vec![host_name()]
    } else {
        opts.nodes.clone()
    };
    for n in &nodes {
        if !buoy_wire::key::is_expectable_name(n) || n == buoy_wire::GLOBAL_NODE {
            return Err(LocalError::Node(n.clone()));
        }
    }
    let plugins: Vec<String> = manifests.iter().map(|m| m.name().to_string()).collect();
    let expected = expected_keys(&manifests, &nodes);
    let uuid = uuid::Uuid::new_v4().to_string();
    std::fs::create_dir_all(&opts.output).map_err(|source| LocalError::Io {
        context: format!("cannot create {}", opts.output.display()),
        source,
    })?;
    let output = std::fs::canonicalize(&opts.output).map_err(|source| LocalError::Io {
        context: format!("cannot resolve {}", opts.output.display()),
        source,
    })?;

    let pki = buoy_pki::RunPki::generate("127.0.0.1", &["localhost".to_string()], &plugins)?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|source| LocalError::Io {
            context: "cannot listen on 127.0.0.1".into(),
            source,
        })?;
    let bind = listener.local_addr().map_err(|source| LocalError::Io {
        context: "listener address".into(),
        source,
    })?;
    let cfg = RunConfig {
        output_dir: output.clone(),
        uuid: uuid.clone(),
        expected: expected.clone(),
        plugins: manifests
            .iter()
            .map(buoy_results::PluginSpec::from_manifest)
            .collect(),
        timeout: opts.timeout,
        options: buoy_aggregator::Options::default(),
        server: buoy_aggregator::ServerOptions::default(),
        config_json: buoy_aggregator::run::standalone_config_json(
            &plugins,
            bind,
            &bind.to_string(),
            opts.timeout,
        ),
    };
    let handle = RunHandle::start(listener, Some(Arc::new(pki.server_config()?)), cfg).await?;
    let agg = handle.aggregator().clone();
    let url = format!("https://{}", handle.local_addr());
    let work = output.join(format!(".buoy-work-{uuid}"));

    let mut instances = Vec::new();
    for m in &manifests {
        let issued = pki
            .client(m.name())
            .expect("a certificate was issued for every plugin")
            .clone();
        let nodes_for: Vec<Option<String>> = match m.driver {
            Driver::Job => vec![None],
            Driver::DaemonSet => nodes.iter().cloned().map(Some).collect(),
        };
        for node in nodes_for {
            instances.push(Instance::prepare(
                m,
                node,
                &work,
                agg.run_dir(),
                &url,
                pki.ca.cert_pem(),
                &issued,
                opts.buoy_bin.as_deref(),
            )?);
        }
    }

    let view = match opts.view {
        Some(addr) => {
            let io = |source| LocalError::Io {
                context: format!("cannot serve the status page on {addr}"),
                source,
            };
            let l = tokio::net::TcpListener::bind(addr).await.map_err(io)?;
            let v = buoy_aggregator::ViewServer::start(l, agg.clone(), Default::default())
                .map_err(io)?;
            eprintln!("buoy: status page: {}", v.url());
            Some(v)
        }
        None => None,
    };
    let display = display::Display::new(&agg, opts.live);
    let tasks: Launched = Arc::new(std::sync::Mutex::new(Vec::new()));
    let launcher = launch_in_order(agg.clone(), manifests.clone(), instances, tasks.clone());
    let finishing = handle.finish(shutdown, false);
    tokio::pin!(finishing);
    let res = tokio::select! {
        res = &mut finishing => res,
        () = launcher => finishing.await,
    };
    // Whatever ended the run, no plugin process outlives it: aborting a task drops its child,
    // which is killed on drop.
    let launched = std::mem::take(&mut *tasks.lock().expect("task list"));
    for t in launched {
        t.abort();
        let _ = t.await;
    }
    display.stop();
    match res {
        Ok(finished) => {
            let _ = std::fs::remove_dir_all(&work);
            Ok(LocalRun { finished, view })
        }
        Err(e) => {
            if let Some(v) = view {
                v.stop().await;
            }
            Err(e.into())
        }
    }
}

type Launched = Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>;

/// Launches plugins group by group (`sonobuoy-config.order`, ascending; name order within a
/// group), starting a group once every plugin of the previous one has all its results.
async fn launch_in_order(
    agg: Arc<Aggregator>,
    manifests: Vec<Manifest>,
    instances: Vec<Instance>,
    tasks: Launched,
) {
    let mut pending = instances;
    for group in manifest::order_groups(&manifests) {
        let group: Vec<&str> = group.iter().map(|&i| manifests[i].name()).collect();
        let (now, later): (Vec<Instance>, Vec<Instance>) = pending
            .into_iter()
            .partition(|i| group.contains(&i.key.plugin.as_str()));
        pending = later;
        for inst in now {
            tasks
                .lock()
                .expect("task list")
                .push(tokio::spawn(inst.run(agg.clone())));
        }
        agg.wait_plugins_done(&group).await;
    }
}

/// Relative path of a plugin instance's log inside the run directory (Sonobuoy keeps pod logs
/// under `podlogs/<ns>/<pod>/logs/<container>.txt`).
pub fn log_path(run_dir: &Path, key: &ResultKey) -> PathBuf {
    run_dir
        .join("podlogs")
        .join("buoy-local")
        .join(format!("{}-{}", key.plugin, key.node))
        .join("logs")
        .join("plugin.txt")
}
