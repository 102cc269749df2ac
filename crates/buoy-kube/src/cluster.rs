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
use crate::monitor::{MonitorOptions, Watched};
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
    let mut keys = Vec::new();
    let mut per_plugin = Vec::new();
    for m in plugins {
        match m.driver {
            Driver::Job => {
                keys.push(ResultKey::global(m.name()));
                per_plugin.push(Vec::new());
            }
            Driver::DaemonSet => {
                let spec = plugin_pod_spec(m);
                let names: Vec<String> = crate::nodes::filter_nodes(spec.as_ref(), nodes)
                    .into_iter()
                    .map(String::from)
                    .collect();
                keys.extend(names.iter().map(|n| ResultKey::new(m.name(), n)));
                per_plugin.push(names);
            }
        }
    }
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

/// Runs the whole in-cluster job and returns once the tarball is sealed and the final status
/// published (and, with `no_exit`, once `shutdown` resolves).
pub async fn run(
    api: KubeApi,
    cfg: ClusterConfig,
    plugins: Vec<Manifest>,
    opts: ClusterOptions,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<Finished, KubeError> {
    if let Some(log) = &opts.run_log {
        let path = opts.output_dir.join(format!(".buoy-run-{}.log", cfg.uuid));
        if let Err(e) = std::fs::create_dir_all(&opts.output_dir).and_then(|()| log.open(&path)) {
            tracing::warn!(path = %path.display(), error = %e, "no run.log for this run");
        }
    }
    let mut publisher = Publisher::new(api.clone(), opts.publish.clone());
    publisher.publish(&Status::initial()).await;

    let nodes = if plugins.is_empty() {
        Vec::new()
    } else {
        api.list_nodes().await?
    };
    let (expected, ds_nodes) = expected_results(&plugins, &nodes);
    let names: Vec<String> = plugins.iter().map(|m| m.name().to_string()).collect();
    tracing::info!(plugins = ?names, nodes = nodes.len(), expected = expected.len(), "starting the run");

    let host = cfg.advertise_host();
    let pki = buoy_pki::RunPki::generate(&host, &[], &names)?;
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
    };

    let launched: Arc<std::sync::Mutex<Vec<Launched>>> = Arc::default();
    let launcher = {
        let (api, agg, plugins, launched, stop_rx) = (
            api.clone(),
            agg.clone(),
            plugins.clone(),
            launched.clone(),
            stop_rx.clone(),
        );
        let (ctx, monitor_opts, timeout) =
            (ctx.clone(), opts.monitor.clone(), cfg.plugin_timeout());
        async move {
            for group in buoy_wire::manifest::order_groups(&plugins) {
                for &i in &group {
                    let m = &plugins[i];
                    let sid = objects::session_id();
                    let cert = pki.client(m.name()).expect("a certificate per plugin");
                    let w = Watched {
                        plugin: m.name().to_string(),
                        driver: m.driver,
                        sid: sid.clone(),
                        nodes: ds_nodes[i].clone(),
                        launched: OffsetDateTime::now_utc(),
                        timeout,
                    };
                    launched.lock().expect("launch list").push(Launched {
                        index: i,
                        sid: sid.clone(),
                    });
                    if let Err(e) = launch(&api, m, &sid, &ctx, cert).await {
                        tracing::error!(plugin = m.name(), error = %e, "cannot launch plugin");
                        let msg = format!("error running plugin {}: {e}", m.name());
                        for key in w.keys() {
                            let _ = agg.submit_error(&key, &msg, None).await;
                        }
                        continue;
                    }
                    tracing::info!(plugin = m.name(), session = %sid, "plugin launched");
                    tokio::spawn(crate::monitor::monitor(
                        api.clone(),
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
        }
        return Err(KubeError::Aggregator(
            buoy_aggregator::AggError::Interrupted,
        ));
    }
    agg.set_run_phase(buoy_aggregator::state::RunPhase::PostProcessing);
    // Before cleanup, so the plugin pods' logs are still there (compat §6.3 step 8).
    let work = opts.output_dir.join(format!(".buoy-gather-{}", cfg.uuid));
    match crate::gather::gather(&api, &cfg.gather, agg.run_dir(), &work).await {
        Ok(s) => tracing::info!(
            queries = s.queries,
            failed = s.failed,
            "gathered cluster data"
        ),
        Err(e) => tracing::error!(error = %e, "gathering cluster data failed"),
    }
    delete_plugins(&api, &plugins, &launched, false).await;
    for l in &launched {
        let m = &plugins[l.index];
        write_definition(&agg, m, &l.sid, &ctx, !m.config.skip_cleanup)?;
    }
    move_run_log(opts.run_log.as_ref(), &agg);
    // The final status is published once sealed; with --no-exit the server then keeps going.
    let finished = if opts.no_exit {
        let publish_then_wait = async {
            publisher.publish(&agg.status()).await;
            shutdown.await;
        };
        handle.seal_and_serve(publish_then_wait, true).await?
    } else {
        let finished = handle.seal_and_serve(std::future::ready(()), false).await?;
        publisher.publish(&agg.status()).await;
        finished
    };
    tracing::info!(tarball = %finished.tarball.display(), "Results available at {}", finished.tarball.display());
    Ok(finished)
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
mod tests {
    use super::*;
    use crate::fixtures::{list, pair, within, Call, Recorded};
    use serde_json::{json, Value};
    use std::path::Path;
    use std::time::Duration;

    const NS: &str = "/api/v1/namespaces/sonobuoy";

    fn plugin(yaml: &str) -> Manifest {
        Manifest::parse(Path::new("p.yaml"), yaml).unwrap()
    }

    fn aggregator_pod() -> Value {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "sonobuoy", "namespace": "sonobuoy", "uid": "agg-uid",
               "labels": {"sonobuoy-component": "aggregator"}}, "status": {"phase": "Running"}})
    }

    /// A scripted API server that keeps the objects the run creates and answers lists from them.
    /// `pod_status` gives each created Job pod's status; DaemonSet pods appear on `ds_pod_nodes`.
    fn scripted_cluster(
        pod_status: impl Fn(&str) -> Value + Send + 'static,
        ds_pod_nodes: Vec<&'static str>,
    ) -> (kube::Client, Recorded) {
        let (client, server) = pair();
        let created: Arc<std::sync::Mutex<Vec<Value>>> = Arc::default();
        let recorded = server.serve(move |c: &Call| {
            let sel = c.query("labelSelector").unwrap_or_default();
            let mut created = created.lock().unwrap();
            match (c.method.as_str(), c.path()) {
                ("GET", "/api/v1/nodes") => (200, list("NodeList", vec![
                    json!({"metadata": {"name": "n1", "labels": {"kubernetes.io/os": "linux"}}}),
                    json!({"metadata": {"name": "n2", "labels": {"kubernetes.io/os": "linux"}}}),
                ])),
                ("GET", p) if p == format!("{NS}/pods") && sel == "sonobuoy-component=aggregator" => {
                    (200, list("PodList", vec![aggregator_pod()]))
                }
                ("GET", p) if p == format!("{NS}/pods") => {
                    // Monitors list by run label; gathering lists every pod.
                    let sid = sel.strip_prefix("sonobuoy-run=");
                    let mut pods = Vec::new();
                    for o in created.iter().filter(|o| sid.is_none_or(|sid| o["metadata"]["labels"]["sonobuoy-run"] == sid)) {
                        let name = o["metadata"]["name"].as_str().unwrap().to_string();
                        if o["kind"] == "Pod" {
                            let mut p = o.clone();
                            p["status"] = pod_status(&name);
                            pods.push(p);
                        } else {
                            for n in &ds_pod_nodes {
                                let mut spec = o["spec"]["template"]["spec"].clone();
                                spec["nodeName"] = (*n).into();
                                pods.push(json!({"metadata": {"name": format!("{name}-{n}"), "labels": o["spec"]["template"]["metadata"]["labels"]},
                                                 "spec": spec, "status": {"phase": "Running"}}));
                            }
                        }
                    }
                    (200, list("PodList", pods))
                }
                ("GET", "/apis/apps/v1/namespaces/sonobuoy/daemonsets") => {
                    let sid = sel.trim_start_matches("sonobuoy-run=");
                    let ds: Vec<Value> = created.iter().filter(|o| o["kind"] == "DaemonSet" && o["metadata"]["labels"]["sonobuoy-run"] == sid).cloned().collect();
                    (200, list("DaemonSetList", ds))
                }
                ("PATCH" | "GET", p) if p == format!("{NS}/pods/sonobuoy") => (200, aggregator_pod()),
                // What gathering asks for: discovery, the version, namespaces, logs.
                ("GET", "/api") => (200, json!({"kind": "APIVersions", "versions": ["v1"]})),
                ("GET", "/apis") => (200, json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": []})),
                ("GET", "/api/v1") => (200, json!({"kind": "APIResourceList", "groupVersion": "v1", "resources": [
                    {"name": "nodes", "kind": "Node", "namespaced": false, "verbs": ["list"]},
                    {"name": "pods", "kind": "Pod", "namespaced": true, "verbs": ["list"]}]})),
                ("GET", "/version") => (200, json!({"gitVersion": "v1.26.3"})),
                ("GET", "/api/v1/namespaces") => (200, list("NamespaceList", vec![json!({"metadata": {"name": "sonobuoy"}})])),
                ("GET", p) if p.ends_with("/log") => (200, Value::String(format!("log of {}\nE0101 an error\n", c.query("container").unwrap_or_default()))),
                ("POST", _) => {
                    created.push(c.body.clone());
                    (201, c.body.clone())
                }
                ("DELETE", _) => (200, list("List", vec![])),
                _ => (404, crate::fixtures::api_error(404, "NotFound", &format!("{} {}", c.method, c.uri))),
            }
        });
        (client, recorded)
    }

    /// The process-wide subscriber of this test binary, with a run log. Global, because a
    /// thread-local subscriber can miss events whose callsite interest another test's thread
    /// cached meanwhile.
    fn global_run_log() -> RunLog {
        static LOG: std::sync::OnceLock<RunLog> = std::sync::OnceLock::new();
        LOG.get_or_init(|| {
            use tracing_subscriber::layer::SubscriberExt;
            use tracing_subscriber::util::SubscriberInitExt;
            let log = RunLog::default();
            tracing_subscriber::registry()
                .with(log.layer())
                .try_init()
                .expect("the only global subscriber of these tests");
            log
        })
        .clone()
    }

    fn config(port: u16, timeout: u64) -> ClusterConfig {
        let text = json!({"UUID": "8d8b1f4e-3f6a-4b8e-9a51-0c1d2e3f4a5b", "Namespace": "sonobuoy", "WorkerImage": "buoy:test",
            "Server": {"advertiseaddress": format!("127.0.0.1:{port}"), "timeoutseconds": timeout}});
        ClusterConfig::parse(None, &text.to_string(), &|_: &str| None).unwrap()
    }

    fn quick() -> ClusterOptions {
        ClusterOptions {
            monitor: MonitorOptions {
                poll: Duration::from_millis(100),
                max_backoff: Duration::from_millis(400),
                missing_pod_grace: Duration::from_millis(500),
                gone_polls: 2,
            },
            publish: PublishOptions {
                period: Duration::from_millis(100),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn calls(rec: &Recorded) -> Vec<Call> {
        rec.lock().unwrap().clone()
    }

    fn b64(v: &Value) -> String {
        use base64::Engine;
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(v.as_str().unwrap())
                .unwrap(),
        )
        .unwrap()
    }

    /// Plays a plugin pod's worker: the env of its `sonobuoy-worker` container, with the Secret's
    /// certificate and key and the node name filled in as the kubelet would.
    async fn play_worker(pod_spec: &Value, secret: &Value, node: &str, dir: &Path, file: &str) {
        let worker = pod_spec["containers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "sonobuoy-worker")
            .unwrap();
        let mut env: Vec<(String, String)> = Vec::new();
        for e in worker["env"].as_array().unwrap() {
            let name = e["name"].as_str().unwrap().to_string();
            let value = if let Some(v) = e["value"].as_str() {
                v.to_string()
            } else if let Some(k) = e
                .pointer("/valueFrom/secretKeyRef/key")
                .and_then(Value::as_str)
            {
                b64(&secret["data"][k])
            } else if e.pointer("/valueFrom/fieldRef/fieldPath") == Some(&json!("spec.nodeName")) {
                node.to_string()
            } else {
                "x".into()
            };
            env.push((name, value));
        }
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join(file), "result").unwrap();
        std::fs::write(dir.join("done"), dir.join(file).to_str().unwrap()).unwrap();
        let mut cfg = buoy_worker::WorkerConfig::from_lookup(|k| {
            env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
        })
        .unwrap();
        cfg.results_dir = dir.to_path_buf();
        cfg.progress_port = 0;
        cfg.progress_bind = std::net::Ipv4Addr::LOCALHOST.into();
        cfg.done_file_delay = Duration::ZERO;
        let mode = if node.is_empty() {
            buoy_worker::Mode::Global
        } else {
            buoy_worker::Mode::SingleNode
        };
        buoy_worker::run(&cfg, mode, std::future::pending())
            .await
            .unwrap();
    }

    async fn wait_for_post(rec: &Recorded, kind_path: &str, plugin: &str) -> Value {
        within(async {
            loop {
                if let Some(c) = calls(rec).into_iter().find(|c| {
                    c.method == "POST"
                        && c.path().ends_with(kind_path)
                        && (c.body["metadata"]["name"]
                            .as_str()
                            .unwrap_or_default()
                            .contains(&format!("-{plugin}-")))
                }) {
                    return c.body;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
    }

    #[tokio::test]
    async fn a_run_launches_plugins_collects_results_cleans_up_and_publishes_completion() {
        let (client, rec) = scripted_cluster(|_| json!({"phase": "Running"}), vec!["n1"]);
        let api = KubeApi::new(client, "sonobuoy");
        let out = tempfile::tempdir().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let plugins = vec![
            plugin("sonobuoy-config: {driver: Job, plugin-name: e2e}\nspec: {name: e2e, image: e2e:1}\n"),
            plugin("sonobuoy-config: {driver: DaemonSet, plugin-name: logs, order: 1}\nspec: {name: logs, image: l:1}\n"),
        ];
        let mut opts = quick();
        opts.output_dir = out.path().to_path_buf();
        opts.listener = Some(listener);
        let log = global_run_log();
        opts.run_log = Some(log);
        let run = tokio::spawn(run(
            api,
            config(port, 0),
            plugins,
            opts,
            std::future::pending(),
        ));

        // The Job plugin comes first (order 0); the DaemonSet only once it has its result.
        let secret = wait_for_post(&rec, "/secrets", "e2e").await;
        let pod = wait_for_post(&rec, "/pods", "e2e").await;
        assert!(!calls(&rec)
            .iter()
            .any(|c| c.path().ends_with("/daemonsets") && c.method == "POST"));
        play_worker(
            &pod["spec"],
            &secret,
            "",
            &out.path().join("w-e2e"),
            "junit.xml",
        )
        .await;
        let secret = wait_for_post(&rec, "/secrets", "logs").await;
        let ds = wait_for_post(&rec, "/daemonsets", "logs").await;
        play_worker(
            &ds["spec"]["template"]["spec"],
            &secret,
            "n1",
            &out.path().join("w-n1"),
            "logs.txt",
        )
        .await;
        // n2 never gets a pod: after the grace it becomes an error result and the run completes.
        let finished = within(run).await.unwrap().unwrap();

        let run_dir = &finished.run_dir;
        assert!(run_dir
            .join("plugins/e2e/results/global/junit.xml")
            .is_file());
        assert!(run_dir.join("plugins/logs/results/n1/logs.txt").is_file());
        let err: Value = serde_json::from_slice(
            &std::fs::read(run_dir.join("plugins/logs/errors/n2/error.json")).unwrap(),
        )
        .unwrap();
        assert!(
            err["error"]
                .as_str()
                .unwrap()
                .starts_with("No pod was scheduled on node n2 within"),
            "{err}"
        );
        let def: Value = serde_json::from_slice(
            &std::fs::read(run_dir.join("plugins/e2e/definition.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(def["Namespace"], "sonobuoy");
        assert_eq!(def["CleanedUp"], true);
        assert!(finished.tarball.is_file());

        // Gathered before cleanup: resources, the plugin pods' logs, the health summary, query
        // times, and every log line of the run.
        let nodes: Value = serde_json::from_slice(
            &std::fs::read(run_dir.join("resources/cluster/core_v1_nodes.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(nodes["items"].as_array().unwrap().len(), 2);
        let e2e_pod = pod["metadata"]["name"].as_str().unwrap();
        assert_eq!(
            std::fs::read_to_string(run_dir.join(format!(
                "podlogs/sonobuoy/{e2e_pod}/logs/sonobuoy-worker.txt"
            )))
            .unwrap(),
            "log of sonobuoy-worker\nE0101 an error\n"
        );
        assert!(run_dir.join("meta/query-time.json").is_file());
        assert!(run_dir.join("serverversion.json").is_file());
        let run_log = std::fs::read_to_string(run_dir.join("meta/run.log")).unwrap();
        for want in [
            "starting the run",
            "plugin launched",
            "gathered cluster data",
        ] {
            assert!(run_log.contains(want), "{want} not in {run_log}");
        }
        assert!(!out
            .path()
            .join(format!(
                ".buoy-run-{}.log",
                "8d8b1f4e-3f6a-4b8e-9a51-0c1d2e3f4a5b"
            ))
            .exists());
        // The sealed archive shows the health section as `sonobuoy results` does.
        let archive = buoy_results::archive::Archive::open(&finished.tarball).unwrap();
        let mut text = Vec::new();
        buoy_results::report::show(&archive, &Default::default(), &mut text).unwrap();
        let text = String::from_utf8(text).unwrap();
        assert!(text.contains("API Server version: v1.26.3"), "{text}");
        assert!(text.contains("Node health: 0/2 (0%)"), "{text}");
        assert!(
            text.contains(&format!("podlogs/sonobuoy/{e2e_pod}/logs/e2e.txt")),
            "{text}"
        );

        let all = calls(&rec);
        // Nodes are only ever listed a page at a time; the launch reads their metadata only.
        let node_lists: Vec<&Call> = all.iter().filter(|c| c.path() == "/api/v1/nodes").collect();
        assert!(node_lists.iter().all(|c| c.query("limit").is_some()));
        assert!(node_lists
            .iter()
            .any(|c| c.accept.contains("as=PartialObjectMetadataList")));
        // The Secret: type kubernetes.io/tls, SEC1 key, owned by the aggregator pod.
        let s = all
            .iter()
            .find(|c| c.method == "POST" && c.path() == format!("{NS}/secrets"))
            .unwrap();
        assert_eq!(s.body["type"], "kubernetes.io/tls");
        assert!(b64(&s.body["data"]["tls.key"]).starts_with("-----BEGIN EC PRIVATE KEY-----"));
        assert_eq!(s.body["metadata"]["ownerReferences"][0]["uid"], "agg-uid");
        // Cleanup: the Job's pods and the DaemonSet, by their run label.
        let e2e_sid = pod["metadata"]["labels"]["sonobuoy-run"].as_str().unwrap();
        let ds_sid = ds["metadata"]["labels"]["sonobuoy-run"].as_str().unwrap();
        assert!(all.iter().any(|c| c.method == "DELETE"
            && c.path() == format!("{NS}/pods")
            && c.query("labelSelector").unwrap() == format!("sonobuoy-run={e2e_sid}")));
        assert!(all.iter().any(|c| c.method == "DELETE"
            && c.path() == "/apis/apps/v1/namespaces/sonobuoy/daemonsets"
            && c.query("labelSelector").unwrap() == format!("sonobuoy-run={ds_sid}")));
        // The annotation: the initial status first, `complete` with the tarball's digest last.
        let patches: Vec<Status> = all
            .iter()
            .filter(|c| c.method == "PATCH")
            .map(|c| {
                assert_eq!(c.content_type, "application/merge-patch+json");
                serde_json::from_str(
                    c.body["metadata"]["annotations"]["sonobuoy.hept.io/status"]
                        .as_str()
                        .unwrap(),
                )
                .unwrap()
            })
            .collect();
        assert_eq!(patches[0], Status::initial());
        let last = patches.last().unwrap();
        assert_eq!(last.status, "complete");
        assert_eq!(last.tar_info.sha256, finished.tar_info.sha256);
        let rows = last.plugins.as_ref().unwrap();
        assert_eq!(rows.len(), 3);
        assert!(rows.iter().any(|r| r.node == "n2" && r.status == "failed"));
        // Post-processing ran before `complete`: every row has its result (compat §5.4).
        for r in rows {
            let want = if r.node == "n2" { "failed" } else { "passed" };
            assert_eq!(r.result_status, want, "{r:?}");
            assert_eq!(
                r.result_counts,
                Some([(want.to_string(), 1)].into()),
                "{r:?}"
            );
        }
        // No two consecutive patches carry the same status.
        assert!(patches.windows(2).all(|w| w[0] != w[1]));
    }

    #[tokio::test]
    async fn failing_pods_and_timeouts_become_error_results_with_the_pod() {
        let (client, _rec) = scripted_cluster(
            |name| {
                if name.contains("-stuck-") {
                    json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/2 nodes are available: 2 Insufficient cpu."}]})
                } else {
                    json!({"phase": "Running"})
                }
            },
            vec![],
        );
        let api = KubeApi::new(client, "sonobuoy");
        let out = tempfile::tempdir().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let plugins = vec![
            plugin("sonobuoy-config: {driver: Job, plugin-name: stuck}\nspec: {name: s, image: s:1}\n"),
            plugin("sonobuoy-config: {driver: Job, plugin-name: silent}\nspec: {name: q, image: q:1}\n"),
        ];
        let mut opts = quick();
        opts.output_dir = out.path().to_path_buf();
        opts.listener = Some(listener);
        let finished = within(run(
            api,
            config(port, 2),
            plugins,
            opts,
            std::future::pending(),
        ))
        .await
        .unwrap();
        let read = |p: &str| -> Value {
            serde_json::from_slice(&std::fs::read(finished.run_dir.join(p)).unwrap()).unwrap()
        };
        let stuck = read("plugins/stuck/errors/global/error.json");
        assert_eq!(
            stuck["error"],
            "Can't schedule pod: 0/2 nodes are available: 2 Insufficient cpu."
        );
        assert_eq!(
            stuck["pod"]["metadata"]["labels"]["sonobuoy-plugin"],
            "stuck"
        );
        assert_eq!(
            stuck["pod"]["status"]["conditions"][0]["reason"],
            "Unschedulable"
        );
        let silent = read("plugins/silent/errors/global/error.json");
        assert_eq!(silent["error"], buoy_wire::TIMEOUT_ERROR_MESSAGE);
        assert_eq!(finished.status.status, "complete");
    }

    #[tokio::test]
    async fn a_stop_before_every_result_publishes_failed_with_the_reason_and_cleans_up_or_seals_only_if_asked(
    ) {
        for (cleanup, seal) in [(false, false), (true, false), (false, true)] {
            let (client, rec) = scripted_cluster(|_| json!({"phase": "Running"}), vec![]);
            let api = KubeApi::new(client, "sonobuoy");
            let out = tempfile::tempdir().unwrap();
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = listener.local_addr().unwrap().port();
            let plugins = vec![plugin(
                "sonobuoy-config: {driver: Job, plugin-name: e2e}\nspec: {name: e2e, image: e2e:1}\n",
            )];
            let mut opts = quick();
            opts.output_dir = out.path().to_path_buf();
            opts.listener = Some(listener);
            opts.cleanup_on_interrupt = cleanup;
            opts.seal_on_interrupt = seal;
            let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
            let run = tokio::spawn(run(api, config(port, 0), plugins, opts, async {
                let _ = stop_rx.await;
            }));
            // The plugin is running and will never deliver; then the pod is told to stop.
            let pod = wait_for_post(&rec, "/pods", "e2e").await;
            stop_tx.send(()).unwrap();
            let e = within(run).await.unwrap().unwrap_err();
            assert!(
                matches!(
                    e,
                    KubeError::Aggregator(buoy_aggregator::AggError::Interrupted)
                ),
                "{e}"
            );

            let all = calls(&rec);
            let last: Status = all
                .iter()
                .rev()
                .find(|c| c.method == "PATCH")
                .map(|c| {
                    serde_json::from_str(
                        c.body["metadata"]["annotations"]["sonobuoy.hept.io/status"]
                            .as_str()
                            .unwrap(),
                    )
                    .unwrap()
                })
                .unwrap();
            assert_eq!(last.status, "failed");
            assert!(
                last.interrupted.as_deref().unwrap().contains("SIGTERM"),
                "{last:?}"
            );
            let row = &last.plugins.as_ref().unwrap()[0];
            if seal {
                // The missing result is an error result, and the tarball is named.
                assert_eq!(row.status, "failed");
                assert!(out.path().join(&last.tar_info.name).is_file(), "{last:?}");
                let err: Value = serde_json::from_slice(
                    &std::fs::read(out.path().join(
                        "8d8b1f4e-3f6a-4b8e-9a51-0c1d2e3f4a5b/plugins/e2e/errors/global/error.json",
                    ))
                    .unwrap(),
                )
                .unwrap();
                assert!(err["error"].as_str().unwrap().contains("SIGTERM"), "{err}");
            } else {
                assert_eq!(row.status, "running");
                assert!(last.tar_info.name.is_empty());
            }
            let sid = pod["metadata"]["labels"]["sonobuoy-run"].as_str().unwrap();
            let deleted = all.iter().any(|c| {
                c.method == "DELETE"
                    && c.query("labelSelector").as_deref() == Some(&format!("sonobuoy-run={sid}"))
            });
            assert_eq!(deleted, cleanup);
        }
    }
}
