//! A run in a cluster from one command (`buoy run` with a cluster), and what shares its
//! choice of plugins: `buoy manifest` and `buoy images`. `buoy run` applies the objects
//! `buoy manifest` prints (server-side, strictly validated), follows the run with the bars
//! `buoy status --watch` draws, retrieves and checks the tarball through the API server, prints
//! the `buoy results` summary, deletes what it created (unless `--keep`), and exits 0 only if
//! every plugin passed. Ctrl-C stops it and cleans up.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use buoy_kube::api::KubeApi;
use buoy_kube::conformance::{self, Choices, Plan, PluginSource};
use buoy_kube::manifest::{self, ManifestOptions};

use crate::args::{ClusterFlags, ImagesArgs, ManifestArgs, PluginFlags, RunArgs};

/// A client for the cluster the flags name, bound to their namespace.
async fn connect(c: &ClusterFlags) -> Result<KubeApi> {
    let client = buoy_kube::api::connect_to(c.kubeconfig.as_deref(), c.context.as_deref())
        .await
        .context("cannot reach the cluster (give --kubeconfig or --context)")?;
    Ok(KubeApi::new(client, c.namespace.clone()))
}

/// The API server's version (`v1.26.0`), which tags the conformance image.
async fn server_version(api: &KubeApi) -> Result<String> {
    let v = api.get_json("/version").await?;
    v["gitVersion"]
        .as_str()
        .filter(|v| !v.is_empty())
        .map(str::to_string)
        .context("the API server's /version names no gitVersion")
}

/// The plugins `flags` (and `extra` manifests) choose. The cluster is asked for its version
/// only when the conformance image needs it and `--kubernetes-version` does not say.
async fn plan(
    flags: &PluginFlags,
    cluster: &ClusterFlags,
    extra: &[PathBuf],
    api: Option<&KubeApi>,
) -> Result<Plan> {
    let mut sources: Vec<PluginSource> = flags
        .plugins
        .iter()
        .map(|p| PluginSource::parse(p))
        .collect();
    sources.extend(extra.iter().cloned().map(PluginSource::Path));
    if sources.is_empty() {
        sources = vec![
            PluginSource::Builtin(conformance::E2E),
            PluginSource::Builtin(conformance::SYSTEMD_LOGS),
        ];
    }
    let mut choices = Choices {
        mode: match &flags.mode {
            Some(m) => m.parse().map_err(anyhow::Error::msg)?,
            None => Default::default(),
        },
        focus: flags.e2e_focus.clone(),
        skip: flags.e2e_skip.clone(),
        parallel: flags.e2e_parallel.clone(),
        plugin_env: flags
            .plugin_env
            .iter()
            .map(|e| e.parse().map_err(anyhow::Error::msg))
            .collect::<Result<_>>()?,
        conformance_image: flags.kube_conformance_image.clone(),
        systemd_logs_image: flags.systemd_logs_image.clone(),
        ..Default::default()
    };
    if let Some(path) = &flags.e2e_repo_config {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("--e2e-repo-config {}", path.display()))?;
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .context("--e2e-repo-config names no file")?;
        choices.repo_config = Some((name.to_string(), text));
    }
    if let Some(tarball) = &flags.rerun_failed {
        let failed = conformance::failed_tests(tarball)?;
        eprintln!(
            "buoy: running again the {} e2e tests that failed in {}",
            failed.len(),
            tarball.display()
        );
        choices.rerun = Some(failed);
    }
    let needs_version = sources.contains(&PluginSource::Builtin(conformance::E2E))
        && flags.kube_conformance_image.is_none();
    choices.kubernetes_version = match (&flags.kubernetes_version, needs_version) {
        (Some(v), _) => v.clone(),
        (None, false) => String::new(),
        (None, true) => {
            let asked = match api {
                Some(api) => server_version(api).await,
                None => match connect(cluster).await {
                    Ok(api) => server_version(&api).await,
                    Err(e) => Err(e),
                },
            };
            asked.context(
                "cannot tell which Kubernetes version to test (the conformance image is tagged with it): give --kubernetes-version, or a reachable cluster",
            )?
        }
    };
    Ok(conformance::plan(&sources, &choices)?)
}

fn manifest_options(plan: &Plan, cluster: &ClusterFlags, timeout: u64) -> ManifestOptions {
    ManifestOptions {
        namespace: cluster.namespace.clone(),
        image: cluster.image.clone(),
        worker_image: cluster.worker_image.clone(),
        image_pull_policy: cluster.image_pull_policy.clone(),
        timeout_seconds: timeout,
        plugins: plan.plugins.iter().map(|(_, text)| text.clone()).collect(),
        config_maps: plan.config_maps.clone(),
        ..Default::default()
    }
}

/// `buoy manifest`: the run's objects as YAML.
pub(crate) async fn manifest(args: ManifestArgs) -> Result<i32> {
    let plan = plan(&args.plugins, &args.cluster, &[], None).await?;
    let opts = manifest_options(&plan, &args.cluster, args.timeout);
    print!(
        "{}",
        manifest::render(&manifest::objects(&opts, &plan.names()))
    );
    Ok(0)
}

/// `buoy images`: every image the run pulls, one a line.
pub(crate) async fn images(args: ImagesArgs) -> Result<i32> {
    let plan = plan(&args.plugins, &args.cluster, &[], None).await?;
    let mut out: Vec<String> = vec![args.cluster.image.clone()];
    out.extend(args.cluster.worker_image.clone());
    out.extend(plan.images());
    if let Some(e2e) = &args.e2e_test {
        let mut cmd = std::process::Command::new(e2e);
        cmd.arg("--list-images");
        if let Some(repo) = &args.plugins.e2e_repo_config {
            cmd.env("KUBE_TEST_REPO_LIST", repo);
        }
        let listed = cmd
            .output()
            .with_context(|| format!("cannot run {}", e2e.display()))?;
        if !listed.status.success() {
            bail!(
                "{} --list-images failed: {}",
                e2e.display(),
                String::from_utf8_lossy(&listed.stderr).trim()
            );
        }
        out.extend(
            String::from_utf8_lossy(&listed.stdout)
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_string),
        );
    }
    let mut seen = std::collections::BTreeSet::new();
    for image in out.into_iter().filter(|i| seen.insert(i.clone())) {
        println!("{image}");
    }
    Ok(0)
}

/// How a followed run ended.
enum Ended {
    /// The run is complete: its tarball's path and whether every plugin passed.
    Complete(PathBuf, bool),
    /// The run failed or was stopped, and why.
    Failed(String),
}

/// `buoy run` against a cluster.
pub(crate) async fn run(args: RunArgs) -> Result<i32> {
    let api = connect(&args.cluster).await?;
    let ns = args.cluster.namespace.clone();
    let plan = plan(&args.plugins, &args.cluster, &args.manifests, Some(&api)).await?;
    if api.namespace_exists().await? {
        bail!(
            "namespace {ns} exists already (a run there?): `buoy delete -n {ns} --wait` first, or choose another with -n"
        );
    }
    let timeout = args.timeout.unwrap_or(21600);
    let objects = manifest::objects(
        &manifest_options(&plan, &args.cluster, timeout),
        &plan.names(),
    );
    let mode = args
        .plugins
        .mode
        .as_deref()
        .unwrap_or("non-disruptive-conformance");
    eprintln!(
        "buoy: running {:?} in namespace {ns}{}",
        plan.names(),
        if plan.names().iter().any(|n| n == conformance::E2E) {
            format!(" (mode {mode})")
        } else {
            String::new()
        }
    );
    let ended = tokio::select! {
        r = drive(&api, &objects, &args) => Some(r),
        _ = crate::shutdown_signal() => None,
    };
    let code = match ended {
        None => {
            eprintln!("buoy: stopped; cleaning up");
            130
        }
        Some(Err(e)) => {
            eprintln!("buoy: error: {e:#}");
            1
        }
        Some(Ok(Ended::Failed(why))) => {
            eprintln!("buoy: the run failed: {why}");
            1
        }
        Some(Ok(Ended::Complete(tarball, passed))) => {
            eprintln!("buoy: results in {}", tarball.display());
            i32::from(!passed)
        }
    };
    if args.keep {
        eprintln!("buoy: the run's objects stay in namespace {ns} (--keep); `buoy delete -n {ns}` removes them");
    } else {
        let opts = buoy_kube::delete::DeleteOptions {
            wait: true,
            ..Default::default()
        };
        buoy_kube::delete::delete(&api, &opts, |s| eprintln!("buoy: {s}"))
            .await
            .context("cleaning up the run")?;
    }
    Ok(code)
}

/// Applies the objects, follows the run to its end, and on completion retrieves the tarball
/// and prints the results summary.
async fn drive(api: &KubeApi, objects: &[serde_json::Value], args: &RunArgs) -> Result<Ended> {
    for o in objects {
        let what = api.apply(o).await?;
        tracing::debug!(object = %what, "applied");
    }
    let status = follow(api, args.quiet).await?;
    if status.status != buoy_wire::status::COMPLETE {
        return Ok(Ended::Failed(status.interrupted.clone().unwrap_or_else(
            || format!("the run's status is {}", status.status),
        )));
    }
    let pod = api.aggregator_pod_name().await?;
    let port = manifest::STATUS_PAGE_PORT;
    let forward = buoy_kube::forward::Forward::start(api, &pod, port).await?;
    let client = buoy_worker::client::Client::new(&forward.url(), None)?;
    let got = crate::download(
        &client,
        &args.output,
        buoy_worker::retrieve::RANGE_BYTES,
        args.quiet,
    )
    .await
    .context("cannot retrieve the tarball through the API server")?;
    drop(forward);
    let archive = buoy_results::Archive::open(&got.path)?;
    println!();
    let shown = buoy_results::report::show(
        &archive,
        &buoy_results::Query::default(),
        &mut std::io::stdout().lock(),
    )?;
    for e in &shown.errors {
        eprintln!("buoy: {e}");
    }
    Ok(Ended::Complete(
        got.path,
        shown.passed && shown.errors.is_empty(),
    ))
}

/// Follows the run's status annotation until it is final, drawing a bar per plugin (plain
/// lines when stderr is not a terminal or `quiet`). While the aggregator pod starts there is
/// no status yet; a pod that ends before its run does is an error.
async fn follow(api: &KubeApi, quiet: bool) -> Result<buoy_wire::Status> {
    let bars = !quiet && std::io::stderr().is_terminal();
    let mut drawn = buoy_local::display::PluginBars::new();
    let mut last_lines: Vec<String> = Vec::new();
    let mut waiting_said = false;
    loop {
        match buoy_kube::status::read_status(api).await {
            Ok(s) => {
                let overview = buoy_wire::overview::Overview::from_status(&s);
                if bars {
                    drawn.update(&overview);
                } else {
                    let lines: Vec<String> = overview
                        .plugins
                        .iter()
                        .map(buoy_local::display::plain_line)
                        .collect();
                    for l in lines.iter().filter(|l| !last_lines.contains(l)) {
                        eprintln!("{l}");
                    }
                    last_lines = lines;
                }
                if s.is_final() {
                    drawn.finish();
                    return Ok(s);
                }
            }
            Err(buoy_kube::KubeError::PodNotRunning { pod, phase })
                if phase == "Failed" || phase == "Succeeded" =>
            {
                bail!("the aggregator pod {pod} ended ({phase}) before its run did: `kubectl logs -n {} {pod}` says why", api.namespace());
            }
            Err(e) => {
                if !waiting_said {
                    eprintln!("buoy: waiting for the aggregator ({e})");
                    waiting_said = true;
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}
