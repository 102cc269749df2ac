//! One plugin instance of a local run: the plugin's command as a child process with its own
//! results directory and environment, a real worker beside it, and the rules that turn a
//! process that cannot deliver into an error result (first writer wins, so a result the worker
//! already delivered is never replaced).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use buoy_aggregator::Aggregator;
use buoy_pki::Issued;
use buoy_wire::manifest::Manifest;
use buoy_wire::ResultKey;
use buoy_worker::{Delivery, Mode, WorkerConfig};

use crate::LocalError;

/// Kills a plugin's whole process group when dropped, so a shell's children die with it on
/// every path out of `Instance::run`, including an aborted task.
struct GroupKiller(Option<i32>);

impl Drop for GroupKiller {
    fn drop(&mut self) {
        if let Some(pgid) = self.0 {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pgid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

pub struct Instance {
    pub key: ResultKey,
    results_dir: PathBuf,
    log: PathBuf,
    program: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    cwd: PathBuf,
    worker: WorkerConfig,
    /// Taken by `run` for the worker.
    relay: Option<std::net::TcpListener>,
    mode: Mode,
}

/// Kubernetes' `$(VAR)` expansion in command and args, the later of two same names winning.
fn expand(s: &str, env: &[(String, String)]) -> String {
    buoy_wire::manifest::expand_env_refs(s, |name| {
        env.iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    })
}

/// The plugin's progress relay, bound here and held until the worker serves it: a port chosen
/// and released could be taken by another socket before the worker bound it again.
fn relay_listener() -> std::io::Result<(std::net::TcpListener, u16)> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let port = listener.local_addr()?.port();
    Ok((listener, port))
}

impl Instance {
    #[allow(clippy::too_many_arguments)]
    pub fn prepare(
        m: &Manifest,
        node: Option<String>,
        work: &Path,
        run_dir: &Path,
        url: &str,
        ca_pem: &str,
        issued: &Issued,
        buoy_bin: Option<&Path>,
    ) -> Result<Self, LocalError> {
        let key = ResultKey::new(m.name(), node.clone().unwrap_or_default());
        let io = |context: String| move |source| LocalError::Io { context, source };
        let base = work.join(&key.plugin).join(&key.node);
        let results_dir = base.join("results");
        std::fs::create_dir_all(&results_dir)
            .map_err(io(format!("cannot create {}", results_dir.display())))?;
        let log = crate::log_path(run_dir, &key);
        let (relay, port) =
            relay_listener().map_err(io("cannot listen for the progress relay".into()))?;
        let node_name = node.clone().unwrap_or_else(crate::host_name);
        let pod_name = format!("sonobuoy-{}-{}", key.plugin, key.node);

        let mut env: Vec<(String, String)> = Vec::new();
        let results = results_dir.to_string_lossy().into_owned();
        for (k, v) in [
            ("NODE_NAME", node_name.clone()),
            ("RESULTS_DIR", results.clone()),
            ("SONOBUOY_RESULTS_DIR", results.clone()),
            ("SONOBUOY_PROGRESS_PORT", port.to_string()),
            ("SONOBUOY_DIR", base.to_string_lossy().into_owned()),
            ("SONOBUOY_NS", "buoy-local".to_string()),
            ("SONOBUOY_PLUGIN_POD", pod_name.clone()),
        ] {
            env.push((k.to_string(), v));
        }
        if let Some(bin) = buoy_bin.and_then(Path::parent) {
            let path = std::env::var("PATH").unwrap_or_default();
            env.push(("PATH".into(), format!("{}:{path}", bin.display())));
        }
        for e in &m.container.env {
            let value = match (&e.value, &e.value_from) {
                (Some(v), _) => Some(expand(v, &env)),
                (None, Some(from)) => {
                    match from.pointer("/fieldRef/fieldPath").and_then(|v| v.as_str()) {
                        Some("spec.nodeName") => Some(node_name.clone()),
                        Some("metadata.name") => Some(pod_name.clone()),
                        Some("metadata.namespace") => Some("buoy-local".into()),
                        _ => {
                            tracing::warn!(plugin = %key.plugin, var = %e.name, "valueFrom is not available in local mode; variable left unset");
                            None
                        }
                    }
                }
                (None, None) => Some(String::new()),
            };
            if let Some(v) = value {
                env.push((e.name.clone(), v));
            }
        }
        // The results directory is the instance's own, whatever the manifest says.
        env.push(("RESULTS_DIR".into(), results.clone()));
        env.push(("SONOBUOY_RESULTS_DIR".into(), results));

        let mut argv: Vec<String> = m
            .container
            .command
            .iter()
            .chain(m.container.args.iter())
            .map(|a| expand(a, &env))
            .collect();
        let program = argv.remove(0);
        let cwd = m
            .container
            .working_dir
            .as_ref()
            .map(PathBuf::from)
            .filter(|p| p.is_dir())
            .unwrap_or_else(|| base.clone());

        let mut worker = WorkerConfig::new(url, &key.plugin, node_name, &results_dir);
        worker.progress_port = port;
        worker.progress_bind = std::net::IpAddr::from([127, 0, 0, 1]);
        worker.ca_cert = Some(ca_pem.to_string());
        worker.client_cert = Some(issued.cert_pem.clone());
        worker.client_key = Some(issued.key_pem.clone());
        worker.done_file_delay = Duration::from_millis(200);
        worker.poll_interval = Duration::from_millis(200);
        worker.backoff = Duration::from_millis(500);
        let mode = if node.is_some() {
            Mode::SingleNode
        } else {
            Mode::Global
        };
        Ok(Self {
            key,
            results_dir,
            log,
            program,
            args: argv,
            env,
            cwd,
            worker,
            relay: Some(relay),
            mode,
        })
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    async fn fail(&self, agg: &Aggregator, message: String) {
        let extra = Some(("log", serde_json::Value::String(self.log_tail())));
        match agg.submit_error(&self.key, &message, extra).await {
            Ok(()) => tracing::warn!(key = %self.key, error = %message, "plugin failed"),
            Err(e) => {
                tracing::debug!(key = %self.key, error = %e, "error result not recorded (a result was already there)")
            }
        }
    }

    /// Runs the plugin and its worker until the key has its result or error result.
    pub async fn run(mut self, agg: Arc<Aggregator>) {
        if let Some(parent) = self.log.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        let log = match std::fs::File::create(&self.log).and_then(|f| Ok((f.try_clone()?, f))) {
            Ok(pair) => pair,
            Err(e) => {
                return self
                    .fail(
                        &agg,
                        format!("cannot create the plugin log {}: {e}", self.log.display()),
                    )
                    .await
            }
        };
        let mut cmd = tokio::process::Command::new(&self.program);
        cmd.args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&self.cwd)
            .stdin(std::process::Stdio::null())
            .stdout(log.0)
            .stderr(log.1)
            .process_group(0)
            .kill_on_drop(true);
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                return self
                    .fail(
                        &agg,
                        format!("cannot start plugin command {:?}: {e}", self.program),
                    )
                    .await
            }
        };
        let _group = GroupKiller(child.id().and_then(|p| i32::try_from(p).ok()));
        tracing::info!(key = %self.key, pid = child.id(), "plugin started");
        let wcfg = self.worker.clone();
        let mode = self.mode;
        // Without the listener the plugin's progress is lost (logged), its result is not.
        let relay = self
            .relay
            .take()
            .map(tokio::net::TcpListener::from_std)
            .transpose()
            .inspect_err(
                |e| tracing::warn!(key = %self.key, error = %e, "progress relay not served"),
            )
            .ok()
            .flatten();
        let mut worker = tokio::spawn(async move {
            buoy_worker::run_with_relay(&wcfg, mode, relay, std::future::pending()).await
        });

        let worker_result = tokio::select! {
            w = &mut worker => Some(w),
            status = child.wait() => {
                let done = self.results_dir.join("done");
                match status {
                    Ok(s) if !done.exists() => {
                        // Give a done file written just before exit a moment to be seen.
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        if !done.exists() {
                            worker.abort();
                            let how = if s.success() { "exited with status 0".to_string() } else { format!("failed ({s})") };
                            return self.fail(&agg, format!("plugin command {how} without writing {}", done.display())).await;
                        }
                        None
                    }
                    Ok(_) => None,
                    Err(e) => {
                        worker.abort();
                        return self.fail(&agg, format!("cannot wait for the plugin command: {e}")).await;
                    }
                }
            }
        };
        let worker_result = match worker_result {
            Some(w) => w,
            None => worker.await,
        };
        match worker_result {
            Ok(Ok(Delivery::Stored { .. } | Delivery::AlreadyReceived)) => {}
            Ok(Ok(Delivery::NotDelivered)) => {
                self.fail(
                    &agg,
                    "the worker stopped before the plugin signalled a result".into(),
                )
                .await
            }
            Ok(Err(e)) => {
                self.fail(
                    &agg,
                    format!("the worker could not deliver the result: {e}"),
                )
                .await
            }
            Err(e) if e.is_cancelled() => {}
            Err(e) => self.fail(&agg, format!("the worker failed: {e}")).await,
        }
        // A plugin still running after its result was delivered is stopped.
        if tokio::time::timeout(Duration::from_secs(5), child.wait())
            .await
            .is_err()
        {
            let _ = child.kill().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubernetes_style_expansion() {
        let env = vec![
            ("A".to_string(), "1".to_string()),
            ("B".to_string(), "two".to_string()),
        ];
        assert_eq!(expand("x$(A)y$(B)", &env), "x1ytwo");
        assert_eq!(expand("$(C) $$(A) $", &env), "$(C) $(A) $");
        assert_eq!(expand("echo $HOME", &env), "echo $HOME");
    }

    #[test]
    fn the_progress_port_a_plugin_is_told_is_held_from_prepare_on() {
        let dir = tempfile::tempdir().unwrap();
        let m = Manifest::parse(
            Path::new("p.yaml"),
            "sonobuoy-config: {driver: Job, plugin-name: p}\nspec:\n  command: [/bin/true]\n",
        )
        .unwrap();
        let issued = Issued {
            cert_pem: String::new(),
            key_pem: String::new(),
        };
        let i = Instance::prepare(
            &m,
            None,
            dir.path(),
            dir.path(),
            "https://127.0.0.1:1",
            "",
            &issued,
            None,
        )
        .unwrap();
        let port: u16 = i
            .env
            .iter()
            .find(|(k, _)| k == "SONOBUOY_PROGRESS_PORT")
            .unwrap()
            .1
            .parse()
            .unwrap();
        let taken = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap_err();
        assert_eq!(taken.kind(), std::io::ErrorKind::AddrInUse);
    }
}
