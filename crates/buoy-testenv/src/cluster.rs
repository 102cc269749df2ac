//! One test's cluster: its own control plane and stand-in kubelet, so tests never see each
//! other's nodes, and everything is torn down when it is dropped, a failed test included.

use std::collections::BTreeMap;
use std::path::Path;

use crate::kubelet::{create_nodes, Kubelet, KubeletOptions, NodeMode};
use crate::{Binaries, ControlPlane, ControlPlaneOptions, EnvError};

pub struct TestCluster {
    // Dropped in this order: the kubelet's pods first, then the control plane.
    pub kubelet: Kubelet,
    pub cp: ControlPlane,
    pub client: kube::Client,
}

impl TestCluster {
    /// Starts a cluster whose kubelet runs containers with `opts` (`root` and
    /// `api_server_port` are set here). `Ok(None)` when there are no binaries: the reason is
    /// printed as the skipped test's note.
    pub async fn start(
        test: &str,
        cp_opts: ControlPlaneOptions,
        mut opts: KubeletOptions,
    ) -> Result<Option<Self>, EnvError> {
        let bins = match Binaries::find() {
            Ok(b) => b,
            Err(why) => {
                eprintln!("SKIPPED {test}: {why}");
                return Ok(None);
            }
        };
        // SAFETY: geteuid(2) has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIPPED {test}: the stand-in kubelet gives each container a mount namespace of its own, which needs root");
            return Ok(None);
        }
        let cp = ControlPlane::start(&bins, &cp_opts).await?;
        let client = cp.client().await?;
        opts.root = cp.dir.join("pods");
        opts.api_server_port = cp.port;
        let kubelet = Kubelet::start(client.clone(), opts, &cp.kubelet_serving).await?;
        Ok(Some(Self {
            kubelet,
            cp,
            client,
        }))
    }

    pub fn kubeconfig(&self) -> &Path {
        &self.cp.kubeconfig
    }

    /// Registers nodes the kubelet plays in `mode`, with `labels` added.
    pub async fn add_nodes(
        &self,
        names: &[String],
        mode: NodeMode,
        labels: &[(&str, &str)],
    ) -> Result<(), EnvError> {
        let labels: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        create_nodes(
            &self.client,
            names,
            mode,
            &labels,
            self.kubelet.log_port(),
            32,
        )
        .await
    }
}
