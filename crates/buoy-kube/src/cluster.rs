//! The in-cluster run of `buoy aggregator` (compat §6.3-6.5): initial status, node listing,
//! expected results, certificates, the HTTPS server, status publication, plugin launch in
//! order groups with a monitor per plugin, gathering, cleanup, `definition.json`, `run.log`,
//! sealing and the final status, or the interrupted status on a stop. Handlers never call the
//! Kubernetes API; only this module and its helpers do.

use std::path::PathBuf;
use std::sync::Arc;

use buoy_aggregator::{Aggregator, Finished, Options, RunConfig, RunHandle, ServerOptions};
use buoy_wire::manifest::{Driver, Manifest};
use buoy_wire::{ResultKey, Status};
use k8s_openapi::api::core::v1::PodSpec;
use time::OffsetDateTime;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::api::KubeApi;
use crate::config::ClusterConfig;
use crate::error::KubeError;
use crate::identity::{self, LaunchRecord, PluginRecord, RunRecord};
use crate::monitor::{plugin_keys, MonitorOptions, Watched};
use crate::objects::{self, DriverContext};
use crate::publish::{PublishOptions, Publisher};
use crate::runlog::RunLog;

/// How an in-cluster run behaves beyond its config.
pub struct ClusterOptions {
    /// Holds the run directory `<UUID>/` and the tarball (Sonobuoy v0.57: `/tmp/sonobuoy`).
    pub output_dir: PathBuf,
    pub no_exit: bool,
    /// A listener already bound (tests); otherwise the config's bind address is used.
    pub listener: Option<TcpListener>,
    /// Where to serve the read-only status page over plain HTTP as well (`--status-page`).
    pub view_listener: Option<TcpListener>,
    pub monitor: MonitorOptions,
    pub publish: PublishOptions,
    pub aggregator: Options,
    pub server: ServerOptions,
    /// Where the process's log lines are copied for `meta/run.log`, when the binary set one up.
    pub run_log: Option<RunLog>,
    /// On a stop before every result arrived, delete the launched plugins' objects (as
    /// `sonobuoy delete` would) instead of leaving them for a resume.
    pub cleanup_on_interrupt: bool,
    /// On such a stop, record an error result for every missing one and seal what arrived.
    pub seal_on_interrupt: bool,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            output_dir: PathBuf::from(objects::SONOBUOY_DIR),
            no_exit: false,
            listener: None,
            view_listener: None,
            monitor: MonitorOptions::default(),
            publish: PublishOptions::default(),
            aggregator: Options::default(),
            server: ServerOptions::default(),
            run_log: None,
            cleanup_on_interrupt: false,
            seal_on_interrupt: false,
        }
    }
}

fn plugin_pod_spec(m: &Manifest) -> Option<PodSpec> {
    m.raw
        .get("podSpec")
        .filter(|p| p.is_object())
        .and_then(|p| serde_json::from_value(p.clone()).ok())
}

/// The results every plugin expects, in plugin order (DaemonSet nodes in node-list order),
/// and each DaemonSet plugin's nodes.
pub fn expected_results(
    plugins: &[Manifest],
    nodes: &[k8s_openapi::api::core::v1::Node],
) -> (Vec<ResultKey>, Vec<Vec<String>>) {
    let per_plugin: Vec<Vec<String>> = plugins
        .iter()
        .map(|m| match m.driver {
            Driver::Job => Vec::new(),
            Driver::DaemonSet => crate::nodes::filter_nodes(plugin_pod_spec(m).as_ref(), nodes)
                .into_iter()
                .map(String::from)
                .collect(),
        })
        .collect();
    expectations(plugins, per_plugin)
}

/// The keys of `plugins` given each one's nodes.
fn expectations(
    plugins: &[Manifest],
    per_plugin: Vec<Vec<String>>,
) -> (Vec<ResultKey>, Vec<Vec<String>>) {
    let keys = plugins
        .iter()
        .zip(&per_plugin)
        .flat_map(|(m, nodes)| plugin_keys(m.name(), m.driver, nodes))
        .collect();
    (keys, per_plugin)
}

/// A launched plugin: what cleanup and `definition.json` need.
struct Launched {
    index: usize,
    sid: String,
}

/// Creates one plugin's Secret and Pod or DaemonSet.
async fn launch(
    api: &KubeApi,
    m: &Manifest,
    sid: &str,
    ctx: &DriverContext,
    cert: &buoy_pki::Issued,
) -> Result<(), KubeError> {
    api.create_secret(&objects::tls_secret(
        m.name(),
        sid,
        ctx,
        &cert.cert_pem,
        &cert.key_pem,
    ))
    .await?;
    match m.driver {
        Driver::Job => api.create_pod(&objects::job_pod(m, sid, ctx)?).await,
        Driver::DaemonSet => {
            api.create_daemonset(&objects::daemonset(m, sid, ctx)?)
                .await
        }
    }
}

/// Makes sure a recorded plugin instance has its Secret and its Pod or DaemonSet, creating only
/// what is missing; returns what it created.
async fn adopt(
    api: &KubeApi,
    m: &Manifest,
    sid: &str,
    ctx: &DriverContext,
    cert: &buoy_pki::Issued,
) -> Result<Vec<&'static str>, KubeError> {
    let mut made = Vec::new();
    if !api
        .secret_exists(&objects::secret_name(m.name(), sid))
        .await?
    {
        let secret = objects::tls_secret(m.name(), sid, ctx, &cert.cert_pem, &cert.key_pem);
        exists_ok(api.create_secret(&secret).await)?;
        made.push("secret");
    }
    match m.driver {
        Driver::Job => {
            if !api.pod_exists(&objects::pod_name(m.name(), sid)).await? {
                exists_ok(api.create_pod(&objects::job_pod(m, sid, ctx)?).await)?;
                made.push("pod");
            }
        }
        Driver::DaemonSet => {
            if api
                .list_daemonsets(&objects::run_selector(sid))
                .await?
                .is_empty()
            {
                exists_ok(
                    api.create_daemonset(&objects::daemonset(m, sid, ctx)?)
                        .await,
                )?;
                made.push("daemonset");
            }
        }
    }
    Ok(made)
}

/// A create that lost a race with an object of the same name (one still terminating, say)
/// finds what it wanted.
fn exists_ok(r: Result<(), KubeError>) -> Result<(), KubeError> {
    match r {
        Err(KubeError::Api { source, .. }) if crate::error::api_code(&source) == Some(409) => {
            Ok(())
        }
        r => r,
    }
}

/// Deletes the plugin instances this aggregator pod owns that its record does not name (a
/// launch the record gave up, after a CA change), with their Secrets.
async fn remove_strays(api: &KubeApi, record: &RunRecord, owner_uid: &str) {
    let keep = record.sessions();
    let found = match api.owned_plugin_instances(owner_uid).await {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(error = %e, "cannot look for stray plugin objects");
            return;
        }
    };
    for (plugin, sid, ds) in found
        .iter()
        .filter(|(_, sid, _)| !keep.contains(sid.as_str()))
    {
        let deleted = match api
            .delete_plugin_objects(&objects::run_selector(sid), *ds)
            .await
        {
            Ok(()) => api.delete_secret(&objects::secret_name(plugin, sid)).await,
            Err(e) => Err(e),
        };
        match deleted {
            Ok(()) => {
                tracing::info!(plugin = %plugin, session = %sid, "deleted a stray plugin instance of this run")
            }
            Err(e) => {
                tracing::warn!(plugin = %plugin, session = %sid, error = %e, "cannot delete a stray plugin instance")
            }
        }
    }
}

/// A plugin that cannot be launched gets an error result for each of its keys.
async fn fail_plugin(agg: &Aggregator, m: &Manifest, nodes: &[String], e: &KubeError) {
    tracing::error!(plugin = m.name(), error = %e, "cannot launch plugin");
    let msg = format!("error running plugin {}: {e}", m.name());
    for key in plugin_keys(m.name(), m.driver, nodes) {
        let _ = agg.submit_error(&key, &msg, None).await;
    }
}

/// The run an output directory's record says this start carries on, if any: the record when
/// the config names no UUID or the same one, with the same plugins.
fn resumable(
    cfg: &ClusterConfig,
    names: &[String],
    output_dir: &std::path::Path,
) -> Result<Option<RunRecord>, KubeError> {
    let Some(record) = identity::load(output_dir)? else {
        return Ok(None);
    };
    if cfg.uuid_given && cfg.uuid != record.uuid {
        tracing::warn!(recorded = %record.uuid, config = %cfg.uuid,
            "the output directory holds another run; starting the one the config names");
        return Ok(None);
    }
    let recorded: Vec<&str> = record.plugins.iter().map(|p| p.name.as_str()).collect();
    if recorded != names {
        return Err(KubeError::RunRecord {
            path: output_dir.join(identity::RECORD_FILE),
            reason: format!(
                "it runs the plugins {recorded:?}, this config {names:?}; restore the config, or \
                 start a new run in an empty output directory"
            ),
        });
    }
    Ok(Some(record))
}

/// Runs the whole in-cluster job and returns once the tarball is sealed and the final status
/// published (and, with `no_exit`, once `shutdown` resolves). A run recorded in the output
/// directory by an earlier start (a restarted container) is carried on: same UUID, CA and
/// session IDs, its objects adopted, and only what is missing created.
pub async fn run(
    api: KubeApi,
    mut cfg: ClusterConfig,
    plugins: Vec<Manifest>,
    opts: ClusterOptions,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<Finished, KubeError> {
    let names: Vec<String> = plugins.iter().map(|m| m.name().to_string()).collect();
    let resumed = resumable(&cfg, &names, &opts.output_dir)?;
    if let Some(r) = &resumed {
        cfg.uuid = r.uuid.clone();
        if let Some(obj) = cfg.raw.as_object_mut() {
            obj.insert("UUID".into(), r.uuid.clone().into());
        }
    }
    // Said only now: a restart carries on the recorded UUID, never the config's fresh one.
    tracing::info!(uuid = %cfg.uuid, namespace = %cfg.namespace, plugins = ?names,
        aggregator_url = %format!("https://{}", cfg.server.advertiseaddress),
        resumed = resumed.is_some(), "in-cluster run");
    if let Some(log) = &opts.run_log {
        let path = opts.output_dir.join(format!(".buoy-run-{}.log", cfg.uuid));
        // A restart during sealing finds the log moved into the run already: it goes on there.
        let moved = opts.output_dir.join(&cfg.uuid).join("meta/run.log");
        if !path.exists() && moved.is_file() {
            let _ = std::fs::rename(&moved, &path);
        }
        if let Err(e) = std::fs::create_dir_all(&opts.output_dir).and_then(|()| log.open(&path)) {
            tracing::warn!(path = %path.display(), error = %e, "no run.log for this run");
        }
    }
    let mut publisher = Publisher::new(api.clone(), opts.publish.clone());
    let resuming = resumed.is_some();
    let (mut record, expected, ds_nodes) = match resumed {
        Some(record) => {
            tracing::info!(uuid = %record.uuid, launched = record.sessions().len(),
                "carrying on the run recorded in the output directory");
            let nodes = record.plugins.iter().map(|p| p.nodes.clone()).collect();
            let (expected, ds_nodes) = expectations(&plugins, nodes);
            (record, expected, ds_nodes)
        }
        None => {
            publisher.publish(&Status::initial()).await;
            let nodes = if plugins.is_empty() {
                Vec::new()
            } else {
                api.list_nodes().await?
            };
            let (expected, ds_nodes) = expected_results(&plugins, &nodes);
            tracing::info!(plugins = ?names, nodes = nodes.len(), expected = expected.len(), "starting the run");
            let record = RunRecord {
                uuid: cfg.uuid.clone(),
                ca_sha256: String::new(),
                plugins: names
                    .iter()
                    .zip(&ds_nodes)
                    .map(|(name, nodes)| PluginRecord {
                        name: name.clone(),
                        nodes: nodes.clone(),
                        launch: None,
                    })
                    .collect(),
                gathered: false,
            };
            (record, expected, ds_nodes)
        }
    };

    let host = cfg.advertise_host();
    // Kept beside the run, so a restart serves with the same CA and running workers deliver.
    let pki = buoy_pki::RunPki::load_or_create(
        &identity::pki_dir(&opts.output_dir, &cfg.uuid),
        &host,
        &[],
        &names,
    )?;
    let ca_sha256 = identity::ca_fingerprint(pki.ca.cert_pem());
    if record.ca_sha256 != ca_sha256 {
        // Workers holding another CA's certificates can never deliver here: those plugins are
        // launched again, and their old objects go as strays.
        for p in &mut record.plugins {
            if let Some(l) = p.launch.take() {
                tracing::warn!(plugin = %p.name, session = %l.session, "the run's CA changed; launching the plugin again");
            }
        }
        record.ca_sha256 = ca_sha256;
    }
    // Before any object is created, so that none is ever unknown to a restart.
    identity::save(&opts.output_dir, &record)?;
    let listener = match opts.listener {
        Some(l) => l,
        None => {
            let bind = format!("{}:{}", cfg.server.bindaddress, cfg.server.bindport);
            TcpListener::bind(&bind)
                .await
                .map_err(|source| KubeError::Io {
                    context: format!("cannot listen on {bind}"),
                    source,
                })?
        }
    };
    let mut aggregator = opts.aggregator.clone();
    aggregator.enforce_identity = true;
    let run_cfg = RunConfig {
        output_dir: opts.output_dir.clone(),
        uuid: cfg.uuid.clone(),
        expected,
        plugins: plugins
            .iter()
            .map(buoy_results::PluginSpec::from_manifest)
            .collect(),
        // Timeouts are per plugin, counted from its launch (compat §6.5); the monitors own them.
        timeout: None,
        options: aggregator,
        server: opts.server.clone(),
        config_json: cfg.raw.clone(),
    };
    let handle = RunHandle::start(listener, Some(Arc::new(pki.server_config()?)), run_cfg).await?;
    let agg = handle.aggregator().clone();
    // Dropped when the run returns, whichever way: the page stops with the run.
    let _view = match opts.view_listener {
        Some(l) => {
            let v = buoy_aggregator::ViewServer::start(l, agg.clone(), opts.server.clone())
                .map_err(|source| KubeError::Io {
                    context: "cannot serve the status page".into(),
                    source,
                })?;
            tracing::info!(url = %v.url(), "status page");
            Some(v)
        }
        None => None,
    };
    if handle.is_sealed() {
        // Sealed before the restart: final. Nothing is launched or gathered again.
        let finished = handle
            .seal_and_serve(
                async {
                    publisher.publish(&agg.status()).await;
                    if opts.no_exit {
                        shutdown.await;
                    }
                },
                true,
            )
            .await?;
        return Ok(finished);
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let publisher_task = tokio::spawn(publisher.run(agg.clone(), stop_rx.clone()));

    let owner_pod = match api.aggregator_pod().await {
        Ok(p) => p,
        Err(e) => {
            let _ = stop_tx.send(true);
            let _ = publisher_task.await;
            handle.abort().await;
            return Err(e);
        }
    };
    let ctx = DriverContext {
        namespace: cfg.namespace.clone(),
        worker_image: cfg.worker_image.clone(),
        image_pull_policy: cfg.image_pull_policy.clone(),
        image_pull_secrets: cfg.image_pull_secrets.clone(),
        custom_annotations: cfg.custom_annotations.clone(),
        progress_port: cfg.progress_port.clone(),
        results_dir: cfg.results_dir.clone(),
        advertise_address: cfg.server.advertiseaddress.clone(),
        ca_pem: pki.ca.cert_pem().to_string(),
        owner: objects::owner_reference(&owner_pod),
        result_deadline: None,
    };

    if resuming {
        remove_strays(&api, &record, &ctx.owner.uid).await;
    }
    // One set of watches for every plugin's monitor, until the run stops.
    let view = crate::view::ClusterView::new();
    view.watch(
        &api,
        plugins.iter().any(|m| m.driver == Driver::DaemonSet),
        stop_rx.clone(),
    );

    // Known before the launcher runs: a resumed run that has every result completes at once,
    // and its cleanup must still find every recorded plugin.
    let launched: Arc<std::sync::Mutex<Vec<Launched>>> = Arc::new(std::sync::Mutex::new(
        record
            .plugins
            .iter()
            .enumerate()
            .filter_map(|(index, p)| {
                Some(Launched {
                    index,
                    sid: p.launch.as_ref()?.session.clone(),
                })
            })
            .collect(),
    ));
    let launcher = {
        let (api, agg, plugins, launched, stop_rx, view) = (
            api.clone(),
            agg.clone(),
            plugins.clone(),
            launched.clone(),
            stop_rx.clone(),
            view.clone(),
        );
        let (ctx, monitor_opts, timeout) =
            (ctx.clone(), opts.monitor.clone(), cfg.plugin_timeout());
        let output_dir = opts.output_dir.clone();
        async move {
            for group in buoy_wire::manifest::order_groups(&plugins) {
                for &i in &group {
                    let m = &plugins[i];
                    let done = agg.inspect(|s| s.plugin_done(m.name()));
                    let prior = record.plugins[i].launch.clone();
                    if done && prior.is_none() {
                        tracing::info!(
                            plugin = m.name(),
                            "every result of the plugin is stored already; not launched"
                        );
                        continue;
                    }
                    let (sid, at) = match &prior {
                        Some(l) => (l.session.clone(), l.launched()),
                        None => {
                            let l =
                                LaunchRecord::new(objects::session_id(), OffsetDateTime::now_utc());
                            record.plugins[i].launch = Some(l.clone());
                            let (dir, r) = (output_dir.clone(), record.clone());
                            let saved =
                                tokio::task::spawn_blocking(move || identity::save(&dir, &r))
                                    .await
                                    .unwrap_or_else(|e| {
                                        Err(KubeError::Plugin {
                                            plugin: m.name().into(),
                                            reason: e.to_string(),
                                        })
                                    });
                            if let Err(e) = saved {
                                // Not on disk, so never claimed: no later save may name it.
                                record.plugins[i].launch = None;
                                fail_plugin(&agg, m, &ds_nodes[i], &e).await;
                                continue;
                            }
                            (l.session.clone(), l.launched())
                        }
                    };
                    if prior.is_none() {
                        launched.lock().expect("launch list").push(Launched {
                            index: i,
                            sid: sid.clone(),
                        });
                    }
                    if done {
                        tracing::info!(plugin = m.name(), session = %sid, "every result of the plugin is stored already; its objects stay until cleanup");
                        continue;
                    }
                    let cert = pki.client(m.name()).expect("a certificate per plugin");
                    // Its workers keep trying to deliver until the plugin times out.
                    let ctx = DriverContext {
                        result_deadline: timeout.and_then(|t| rfc3339(at + t)),
                        ..ctx.clone()
                    };
                    let made = if prior.is_some() {
                        adopt(&api, m, &sid, &ctx, cert).await
                    } else {
                        launch(&api, m, &sid, &ctx, cert).await.map(|()| Vec::new())
                    };
                    match made {
                        Err(e) => {
                            fail_plugin(&agg, m, &ds_nodes[i], &e).await;
                            continue;
                        }
                        Ok(made) if prior.is_some() => {
                            tracing::info!(plugin = m.name(), session = %sid, created_again = ?made, "plugin adopted")
                        }
                        Ok(_) => {
                            tracing::info!(plugin = m.name(), session = %sid, "plugin launched")
                        }
                    }
                    let w = Watched {
                        plugin: m.name().to_string(),
                        driver: m.driver,
                        sid,
                        nodes: ds_nodes[i].clone(),
                        launched: at,
                        timeout,
                    };
                    tokio::spawn(crate::monitor::monitor(
                        view.clone(),
                        agg.clone(),
                        w,
                        monitor_opts.clone(),
                        stop_rx.clone(),
                    ));
                }
                let names: Vec<&str> = group.iter().map(|&i| plugins[i].name()).collect();
                agg.wait_plugins_done(&names).await;
            }
        }
    };
    let launcher = tokio::spawn(launcher);

    tokio::pin!(shutdown);
    let completed = handle.wait(shutdown.as_mut()).await;
    launcher.abort();
    let _ = stop_tx.send(true);
    let launched = std::mem::take(&mut *launched.lock().expect("launch list"));
    // The publisher stopped with the monitors; the last patches (interrupted, or complete once
    // sealed) come from the same publisher, so an earlier fallback to the summary still holds.
    let mut publisher = match publisher_task.await {
        Ok(p) => p,
        Err(_) => Publisher::new(api.clone(), opts.publish.clone()),
    };
    if !completed {
        // Interrupted is a state: the last word in the annotation says so, never `running`.
        let why =
            "the aggregator was asked to stop (SIGTERM or SIGINT) before every result arrived";
        tracing::warn!(
            reason = why,
            cleanup = opts.cleanup_on_interrupt,
            seal = opts.seal_on_interrupt,
            "the run is interrupted"
        );
        agg.set_run_phase(buoy_aggregator::state::RunPhase::Interrupted {
            why: why.into(),
            sealed: None,
        });
        if opts.cleanup_on_interrupt {
            delete_plugins(&api, &plugins, &launched, true).await;
        }
        publisher.publish(&agg.status()).await;
        if opts.seal_on_interrupt {
            let msg = format!("no result: {why}");
            for key in agg.inspect(|s| s.open_keys()) {
                if let Err(e) = agg.submit_error(&key, &msg, None).await {
                    tracing::warn!(key = %key, error = %e, "cannot record the missing result");
                }
            }
            move_run_log(opts.run_log.as_ref(), &agg);
            let sealed = handle.seal_and_serve(std::future::ready(()), false).await;
            let tar = match sealed {
                Ok(f) => {
                    tracing::info!(tarball = %f.tarball.display(), "what arrived before the stop is sealed");
                    Some(f.tar_info)
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot seal what arrived before the stop");
                    None
                }
            };
            agg.set_run_phase(buoy_aggregator::state::RunPhase::Interrupted {
                why: why.into(),
                sealed: tar,
            });
            publisher.publish(&agg.status()).await;
        } else {
            handle.abort().await;
            // Uploads in flight at the stop finished while the server drained: the last word
            // counts them too.
            publisher.publish(&agg.status()).await;
        }
        return Err(KubeError::Aggregator(
            buoy_aggregator::AggError::Interrupted,
        ));
    }
    agg.set_run_phase(buoy_aggregator::state::RunPhase::PostProcessing);
    // Before cleanup, so the plugin pods' logs are still there (compat §6.3 step 8); and only
    // once: after a restart during sealing the plugins' objects may be gone already.
    if identity::load(&opts.output_dir)?.is_some_and(|r| r.gathered) {
        tracing::info!("cluster data was gathered before the restart; not gathered again");
    } else {
        let work = opts.output_dir.join(format!(".buoy-gather-{}", cfg.uuid));
        match crate::gather::gather(&api, &cfg.gather, agg.run_dir(), &work).await {
            Ok(s) => {
                tracing::info!(
                    queries = s.queries,
                    failed = s.failed,
                    "gathered cluster data"
                );
                mark_gathered(&opts.output_dir);
            }
            Err(e) => tracing::error!(error = %e, "gathering cluster data failed"),
        }
    }
    delete_plugins(&api, &plugins, &launched, false).await;
    for l in &launched {
        let m = &plugins[l.index];
        write_definition(&agg, m, &l.sid, &ctx, !m.config.skip_cleanup)?;
    }
    move_run_log(opts.run_log.as_ref(), &agg);
    // The status is published while sealing (a seal that fails is tried again, and the status
    // says why) and once sealed; with --no-exit the server then keeps going until the stop.
    let (sealing_tx, sealing_rx) = watch::channel(false);
    let publishing = tokio::spawn(publisher.run(agg.clone(), sealing_rx));
    let sealed = handle.seal_and_serve(shutdown, opts.no_exit).await;
    let _ = sealing_tx.send(true);
    // The publisher may have been mid-patch when told to stop; the final status goes out once
    // more (an unchanged status is not sent again).
    if let Ok(mut publisher) = publishing.await {
        publisher.publish(&agg.status()).await;
    }
    let finished = sealed?;
    tracing::info!(tarball = %finished.tarball.display(), "Results available at {}", finished.tarball.display());
    Ok(finished)
}

/// Records that gathering's output is in the run directory.
fn mark_gathered(output_dir: &std::path::Path) {
    let marked = identity::load(output_dir).and_then(|r| match r {
        Some(mut r) => {
            r.gathered = true;
            identity::save(output_dir, &r)
        }
        None => Ok(()),
    });
    if let Err(e) = marked {
        tracing::warn!(error = %e, "cannot record that gathering is done; a restart would gather again");
    }
}

fn rfc3339(t: OffsetDateTime) -> Option<String> {
    t.format(&time::format_description::well_known::Rfc3339)
        .ok()
}

/// Ends `meta/run.log` just before sealing: the file moves into the run directory.
fn move_run_log(log: Option<&RunLog>, agg: &Aggregator) {
    let Some(log) = log else {
        return;
    };
    tracing::info!("Log lines after this point will not appear in the downloaded tarball.");
    if let Err(e) = log.close_into(&agg.run_dir().join("meta/run.log")) {
        tracing::warn!(error = %e, "cannot move run.log into the run directory");
    }
}

/// Deletes each launched plugin's pods or DaemonSet by its run label; `all` ignores the
/// plugins' `skip-cleanup`.
async fn delete_plugins(api: &KubeApi, plugins: &[Manifest], launched: &[Launched], all: bool) {
    for l in launched {
        let m = &plugins[l.index];
        if m.config.skip_cleanup && !all {
            continue;
        }
        let sel = objects::run_selector(&l.sid);
        if let Err(e) = api
            .delete_plugin_objects(&sel, m.driver == Driver::DaemonSet)
            .await
        {
            tracing::warn!(plugin = m.name(), error = %e, "cleanup failed");
        }
    }
}

fn write_definition(
    agg: &Aggregator,
    m: &Manifest,
    sid: &str,
    ctx: &DriverContext,
    cleaned_up: bool,
) -> Result<(), KubeError> {
    let path = agg
        .run_dir()
        .join("plugins")
        .join(m.name())
        .join("definition.json");
    let def = objects::definition_json(m, sid, ctx, cleaned_up);
    std::fs::create_dir_all(path.parent().expect("a parent"))
        .and_then(|()| std::fs::write(&path, serde_json::to_vec(&def).expect("JSON")))
        .map_err(|source| KubeError::Io {
            context: format!("cannot write {}", path.display()),
            source,
        })
}

#[cfg(test)]
mod tests;
