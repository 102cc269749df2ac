//! One whole run of the aggregator, used by `buoy aggregator` and `buoy run` alike: open the
//! run directory, serve the API, drive the run to completion (timeouts), seal
//! the tarball, then stop (or keep serving until shutdown with `--no-exit`).

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use buoy_results::{PluginReport, PluginSpec};
use buoy_wire::{ResultKey, Status, TarInfo};
use time::OffsetDateTime;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::aggregator::{Aggregator, Options};
use crate::error::AggError;
use crate::server::{serve, ServerOptions};

/// What one run needs.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// The directory that holds the run directory `<uuid>/` and, at the end, the tarball.
    pub output_dir: PathBuf,
    pub uuid: String,
    pub expected: Vec<ResultKey>,
    /// Plugins in load order: `meta/info.json` lists them, post-processing reads them.
    pub plugins: Vec<PluginSpec>,
    /// Per-run timeout; `None` waits forever.
    pub timeout: Option<Duration>,
    pub options: Options,
    pub server: ServerOptions,
    /// Written as `meta/config.json` (with `UUID`, `Version` and `BuoyVersion` filled in).
    pub config_json: serde_json::Value,
}

/// A finished run.
#[derive(Debug, Clone)]
pub struct Finished {
    pub tarball: PathBuf,
    pub tar_info: TarInfo,
    pub status: Status,
    pub run_dir: PathBuf,
    /// Each plugin's post-processed summary, in load order.
    pub reports: Vec<PluginReport>,
}

/// A run whose server is up.
pub struct RunHandle {
    agg: Arc<Aggregator>,
    cfg: RunConfig,
    started: OffsetDateTime,
    local_addr: SocketAddr,
    stop: watch::Sender<bool>,
    server: JoinHandle<std::io::Result<()>>,
    staging: PathBuf,
    /// Set when an earlier aggregator already sealed this run: it is final.
    sealed: Option<TarInfo>,
}

/// The pause after a failed seal, doubling up to [`SEAL_RETRY_MAX`].
const SEAL_RETRY_FIRST: std::time::Duration = std::time::Duration::from_secs(1);
const SEAL_RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(60);

/// Where a sealed run's tar-info is recorded, beside its tarball, so that a restart serves the
/// same tarball and SHA-256 instead of sealing again.
fn sealed_record(output_dir: &Path, uuid: &str) -> PathBuf {
    output_dir.join(format!(".buoy-sealed-{uuid}.json"))
}

/// The runs in `output_dir` that were started and never sealed (a run directory named by its
/// UUID, with no sealed record beside it), oldest first: what a restarted standalone
/// aggregator picks up.
pub fn unfinished_runs(output_dir: &Path) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(output_dir) else {
        return Vec::new();
    };
    let mut runs: Vec<(std::time::SystemTime, String)> = rd
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let uuid = name.parse::<uuid::Uuid>().ok()?.to_string();
            (uuid == name && !sealed_record(output_dir, &name).exists()).then(|| {
                let made = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .unwrap_or(std::time::UNIX_EPOCH);
                (made, name)
            })
        })
        .collect();
    runs.sort();
    runs.into_iter().map(|(_, name)| name).collect()
}

/// Removes what a crash during sealing left (`.<name>.tar.gz.partial` of this run).
fn remove_partial_tarballs(output_dir: &Path, uuid: &str) {
    let suffix = format!("_sonobuoy_{uuid}.tar.gz.partial");
    let Ok(rd) = std::fs::read_dir(output_dir) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') && name.ends_with(&suffix) {
            match std::fs::remove_file(e.path()) {
                Ok(()) => tracing::info!(file = %name, "removed a partial tarball left by a crash"),
                Err(e) => {
                    tracing::warn!(file = %name, error = %e, "cannot remove a partial tarball")
                }
            }
        }
    }
}

/// Whether `name` is a tarball name of run `uuid` (`<YYYYMMDDHHMM>_sonobuoy_<uuid>.tar.gz`, a
/// plain file name): what a sealed record may name and `GET /api/v1/tarball` may serve.
fn is_tarball_of(name: &str, uuid: &str) -> bool {
    name.strip_suffix(&format!("_sonobuoy_{uuid}.tar.gz"))
        .is_some_and(|stamp| stamp.len() == 12 && stamp.bytes().all(|b| b.is_ascii_digit()))
}

/// The tar-info of a run sealed earlier. The record is trusted only when it names a tarball
/// of this run that is there with the recorded size. When the record is damaged or missing
/// beside such a tarball (a crash between the tarball's rename and the record's write, or a
/// damaged file), the tarball is final: its size and SHA-256 are read again and the record
/// rewritten, and a damaged record is kept aside. Sealing again would give the same run a
/// second tarball under another digest.
fn read_sealed(output_dir: &Path, uuid: &str, tmp_dir: &Path) -> Option<TarInfo> {
    let record = sealed_record(output_dir, uuid);
    let recorded = std::fs::read(&record).ok();
    if let Some(bytes) = &recorded {
        if let Ok(info) = serde_json::from_slice::<TarInfo>(bytes) {
            let size_matches = std::fs::metadata(output_dir.join(&info.name))
                .is_ok_and(|m| m.is_file() && m.len() == info.size as u64);
            if is_tarball_of(&info.name, uuid) && size_matches {
                return Some(info);
            }
        }
    }
    let mut found: Vec<(std::time::SystemTime, String)> = std::fs::read_dir(output_dir)
        .ok()?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let meta = e.metadata().ok()?;
            (is_tarball_of(&name, uuid) && meta.is_file())
                .then(|| (meta.modified().unwrap_or(std::time::UNIX_EPOCH), name))
        })
        .collect();
    found.sort();
    let Some((modified, name)) = found.pop() else {
        if recorded.is_some() {
            let aside = record.with_extension("json.damaged");
            let _ = std::fs::rename(&record, &aside);
            tracing::error!(record = %record.display(), kept = %aside.display(),
                "the sealed-run record is damaged and its tarball is gone: the run is sealed again");
        }
        return None;
    };
    let path = output_dir.join(&name);
    let digest = (|| -> std::io::Result<(String, u64)> {
        use sha2::Digest;
        let mut f = std::fs::File::open(&path)?;
        let mut h = sha2::Sha256::new();
        let n = std::io::copy(&mut f, &mut h)?;
        Ok((hex::encode(h.finalize()), n))
    })();
    let (sha256, size) = match digest {
        Ok(d) => d,
        Err(e) => {
            tracing::error!(tarball = %path.display(), error = %e, "cannot read this run's tarball again");
            return None;
        }
    };
    let info = TarInfo {
        name,
        created: buoy_wire::timefmt::rfc3339_nano(time::OffsetDateTime::from(modified)),
        sha256,
        size: size as i64,
    };
    if recorded.is_some() {
        let aside = record.with_extension("json.damaged");
        let _ = std::fs::rename(&record, &aside);
        tracing::error!(record = %record.display(), kept = %aside.display(), tarball = %info.name,
            "the sealed-run record is damaged; it is rebuilt from the tarball, which stays final");
    } else {
        tracing::warn!(tarball = %info.name, "this run's tarball has no sealed-run record (a crash right after sealing); recording it");
    }
    let value = serde_json::to_value(&info).unwrap_or_default();
    if let Err(e) = crate::seal::write_json_atomic(&record, &value, tmp_dir) {
        tracing::warn!(error = %e, "cannot rewrite the sealed-run record");
    }
    Some(info)
}

/// A Sonobuoy-shaped `meta/config.json` for a run without a cluster config. `UUID`, `Version`
/// and `BuoyVersion` are filled in when the run is sealed, as for every config.
pub fn standalone_config_json(
    plugins: &[String],
    bind: SocketAddr,
    advertise: &str,
    timeout: Option<Duration>,
) -> serde_json::Value {
    serde_json::json!({
        "Description": "Buoy standalone run",
        "ResultsDir": "/tmp/sonobuoy/results",
        "Resources": null,
        "Filters": {"Namespaces": ".*", "LabelSelector": ""},
        "Limits": {"PodLogs": {}},
        "Server": {
            "bindaddress": bind.ip().to_string(),
            "bindport": bind.port(),
            "advertiseaddress": advertise,
            "timeoutseconds": timeout.map(|t| t.as_secs()).unwrap_or(0),
        },
        "Plugins": plugins.iter().map(|p| serde_json::json!({"name": p})).collect::<Vec<_>>(),
        "PluginSearchPath": [],
        "Namespace": "sonobuoy",
        "WorkerImage": "",
        "ImagePullPolicy": "IfNotPresent",
        "ProgressUpdatesPort": "8099",
    })
}

impl RunHandle {
    /// Opens the run directory and starts serving on `listener`.
    pub async fn start(
        listener: TcpListener,
        tls: Option<Arc<rustls::ServerConfig>>,
        mut cfg: RunConfig,
    ) -> Result<Self, AggError> {
        // The run state keeps the keys; a second copy of 10,000 of them is a megabyte.
        let expected = std::mem::take(&mut cfg.expected);
        if let Some(bad) = expected.iter().find(|k| {
            !buoy_wire::key::is_expectable_name(&k.plugin)
                || !buoy_wire::key::is_expectable_name(&k.node)
        }) {
            return Err(AggError::Config(format!(
                "cannot expect result {bad}: a plugin or node name must be 1 to {} bytes, not . or .., without / or NUL (it is a directory name)",
                buoy_wire::key::MAX_NAME_BYTES
            )));
        }
        let expected_len = expected.len();
        let started = OffsetDateTime::now_utc();
        let run_dir = cfg.output_dir.join(&cfg.uuid);
        let staging = cfg.output_dir.join(format!(".buoy-staging-{}", cfg.uuid));
        remove_partial_tarballs(&cfg.output_dir, &cfg.uuid);
        let sealed = read_sealed(&cfg.output_dir, &cfg.uuid, &cfg.output_dir);
        let agg = Aggregator::open(&run_dir, &staging, expected, cfg.options.clone())?;
        let local_addr = listener
            .local_addr()
            .map_err(AggError::io("cannot read the listener address"))?;
        let (stop, mut stop_rx) = watch::channel(false);
        let router = crate::api::router(agg.clone());
        let server_opts = cfg.server.clone();
        let server = tokio::spawn(async move {
            serve(listener, tls, router, server_opts, async move {
                let _ = stop_rx.wait_for(|s| *s).await;
            })
            .await
        });
        tracing::info!(addr = %local_addr, run_dir = %run_dir.display(), expected = expected_len, "aggregator listening");
        if let Some(info) = &sealed {
            tracing::info!(tarball = %info.name, sha256 = %info.sha256, "this run was sealed before; serving its tarball as it is");
        }
        Ok(Self {
            agg,
            cfg,
            started,
            local_addr,
            stop,
            server,
            staging,
            sealed,
        })
    }

    pub fn aggregator(&self) -> &Arc<Aggregator> {
        &self.agg
    }

    /// Whether an earlier aggregator sealed this run: it is final, and only served.
    pub fn is_sealed(&self) -> bool {
        self.sealed.is_some()
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    async fn stop_server(self) {
        let _ = self.stop.send(true);
        match self.server.await {
            Ok(Err(e)) => tracing::error!(error = %e, "server error"),
            Err(e) => tracing::error!(error = %e, "server task failed"),
            Ok(Ok(())) => {}
        }
    }

    /// Waits for every result (or `shutdown`), seals the tarball, then keeps serving until
    /// `shutdown` when `keep_serving` is set. A shutdown before completion is an error that
    /// leaves the run directory in place, so a restart on it resumes.
    pub async fn finish<F>(self, shutdown: F, keep_serving: bool) -> Result<Finished, AggError>
    where
        F: Future<Output = ()> + Send,
    {
        tokio::pin!(shutdown);
        if self.sealed.is_none() && !self.wait(shutdown.as_mut()).await {
            self.abort().await;
            return Err(AggError::Interrupted);
        }
        self.seal_and_serve(shutdown, keep_serving).await
    }

    /// Drives the run until every expected result is in (`true`) or `shutdown` resolves
    /// (`false`).
    pub async fn wait<F>(&self, shutdown: std::pin::Pin<&mut F>) -> bool
    where
        F: Future<Output = ()> + Send,
    {
        tokio::select! {
            _ = self.agg.drive(self.cfg.timeout) => true,
            _ = shutdown => false,
        }
    }

    /// Stops serving a run that did not complete; its run directory stays for a resume.
    pub async fn abort(self) {
        tracing::warn!("shutdown requested before every result arrived; stopping");
        let agg = self.agg.clone();
        self.stop_server().await;
        // What arrived is left as files, for a reader of the directory or a resume.
        if let Err(e) = agg.flush().await {
            tracing::error!(error = %e, "the journal stays for the next aggregator on this directory to lay out");
        }
    }

    /// Seals a completed run into its tarball, then keeps serving until `shutdown` when
    /// `keep_serving` is set.
    pub async fn seal_and_serve<F>(
        self,
        shutdown: F,
        keep_serving: bool,
    ) -> Result<Finished, AggError>
    where
        F: Future<Output = ()> + Send,
    {
        let mut config = self.cfg.config_json.clone();
        if let Some(obj) = config.as_object_mut() {
            obj.insert("UUID".into(), self.cfg.uuid.clone().into());
            obj.insert("Version".into(), buoy_wire::SONOBUOY_COMPAT_VERSION.into());
            obj.insert("BuoyVersion".into(), buoy_wire::BUOY_VERSION.into());
        }
        let names: Vec<&str> = self.cfg.plugins.iter().map(|p| p.name.as_str()).collect();
        let info = serde_json::json!({ "plugins": names });
        let name = crate::seal::tarball_name(self.started, &self.cfg.uuid);
        tokio::pin!(shutdown);
        let sealed = match self.sealed.clone() {
            Some(info) => {
                self.agg
                    .restore_sealed(self.cfg.plugins.clone(), info)
                    .await
            }
            None => {
                // A seal that fails (a full disk, no file descriptors left) is tried again, with
                // a growing pause, while the server goes on and the status says why; only a
                // stop ends the trying. Ending the process instead restarted it into the same
                // failure.
                let mut wait = SEAL_RETRY_FIRST;
                let sealed = loop {
                    let tried = self
                        .agg
                        .seal(
                            config.clone(),
                            info.clone(),
                            name.clone(),
                            self.cfg.plugins.clone(),
                        )
                        .await;
                    match tried {
                        Ok(s) => break s,
                        Err(e) => {
                            tracing::error!(error = %e, retry_in = ?wait, "cannot seal the run; trying again");
                            self.agg.set_seal_error(Some(e.to_string()));
                            tokio::select! {
                                _ = tokio::time::sleep(wait) => {}
                                _ = &mut shutdown => {
                                    self.stop_server().await;
                                    return Err(e);
                                }
                            }
                            wait = (wait * 2).min(SEAL_RETRY_MAX);
                        }
                    }
                };
                self.agg.set_seal_error(None);
                let record = sealed_record(&self.cfg.output_dir, &self.cfg.uuid);
                let value = serde_json::to_value(&sealed.tar_info).unwrap_or_default();
                if let Err(e) = crate::seal::write_json_atomic(&record, &value, &self.staging) {
                    tracing::warn!(error = %e, "cannot record the sealed tarball; a restart would seal again");
                }
                tracing::info!(tarball = %sealed.tarball.display(), sha256 = %sealed.tar_info.sha256, "results sealed");
                sealed
            }
        };
        // A result that arrived after sealing (an interrupted run keeps serving its uploads)
        // is laid out before the staging directory, with the journal in it, goes.
        match self.agg.close_store().await {
            Ok(()) => {
                let _ = std::fs::remove_dir_all(&self.staging);
            }
            Err(e) => {
                tracing::error!(error = %e, "the journal stays for the next aggregator on this directory to lay out")
            }
        }
        let status = self.agg.status();
        let run_dir = self.agg.run_dir().to_path_buf();
        if keep_serving {
            tracing::info!("the run is sealed; serving until shutdown (--no-exit)");
            shutdown.await;
        }
        self.stop_server().await;
        Ok(Finished {
            tarball: sealed.tarball,
            tar_info: sealed.tar_info,
            status,
            run_dir,
            reports: sealed.reports,
        })
    }
}
