//! One control plane and one stand-in kubelet for a whole test binary, started on first use
//! on a thread of their own that lives as long as the process: tests isolate themselves by
//! namespace and node names. Its processes die with the test binary (they are killed when
//! that thread ends), and its directory is removed by the next start.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use crate::kubelet::{pids_of, Inner, Kubelet, KubeletOptions};
use crate::{Binaries, ControlPlane, ControlPlaneOptions};

pub struct Shared {
    /// An admin kubeconfig.
    pub kubeconfig: PathBuf,
    pub server: String,
    /// The API server's audit log.
    pub audit_log: PathBuf,
    /// The stand-in kubelet's endpoint port (give it to nodes it plays).
    pub log_port: u16,
    inner: Arc<Inner>,
}

impl Shared {
    /// The processes of `ns/pod` now: `(container, pid)`.
    pub fn pids(&self, ns: &str, pod: &str) -> Vec<(String, u32)> {
        pids_of(&self.inner, ns, pod)
    }

    /// The directory of `ns/pod` while the kubelet runs it (volumes under `volumes/<name>`).
    pub fn pod_dir(&self, ns: &str, pod: &str) -> Option<PathBuf> {
        self.inner.pod_dir(ns, pod)
    }
}

static SHARED: OnceLock<Result<Shared, String>> = OnceLock::new();

/// The test binary's control plane and kubelet, started by the first caller with `opts`
/// (its `root` and `api_server_port` are filled in here). `Err` says why there is none: no
/// binaries (the note a skipped test prints), or a start that failed.
pub fn shared(opts: impl FnOnce() -> KubeletOptions) -> Result<&'static Shared, String> {
    SHARED
        .get_or_init(|| {
            let bins = Binaries::find()?;
            let mut opts = opts();
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::Builder::new()
                .name("buoy-testenv".into())
                .spawn(move || {
                    let rt = tokio::runtime::Builder::new_multi_thread()
                        .worker_threads(1)
                        .enable_all()
                        .build()
                        .expect("a runtime");
                    rt.block_on(async move {
                        let started = async {
                            let cp = ControlPlane::start(&bins, &ControlPlaneOptions::default())
                                .await
                                .map_err(|e| e.to_string())?;
                            opts.root = cp.dir.join("pods");
                            opts.api_server_port = cp.port;
                            let client = cp.client().await.map_err(|e| e.to_string())?;
                            let kubelet = Kubelet::start(client, opts, &cp.kubelet_serving)
                                .await
                                .map_err(|e| e.to_string())?;
                            Ok::<_, String>((cp, kubelet))
                        }
                        .await;
                        match started {
                            Ok((cp, kubelet)) => {
                                let _ = tx.send(Ok(Shared {
                                    kubeconfig: cp.kubeconfig.clone(),
                                    server: cp.server.clone(),
                                    audit_log: cp.audit_log.clone(),
                                    log_port: kubelet.log_port(),
                                    inner: kubelet.inner(),
                                }));
                                // Kept until the process ends.
                                let _keep = (cp, kubelet);
                                std::future::pending::<()>().await;
                            }
                            Err(e) => {
                                let _ = tx.send(Err(format!(
                                    "the test control plane did not start: {e}"
                                )));
                            }
                        }
                    });
                })
                .map_err(|e| e.to_string())?;
            rx.recv()
                .map_err(|_| "the test control plane's thread ended".to_string())?
        })
        .as_ref()
        .map_err(Clone::clone)
}
