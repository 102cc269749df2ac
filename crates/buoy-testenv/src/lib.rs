//! A disposable Kubernetes control plane for Buoy's tests, as envtest gives Go controllers:
//! etcd and the real kube-apiserver, kube-controller-manager and kube-scheduler
//! ([`control_plane`]), and a stand-in kubelet ([`kubelet`]) that plays nodes: it runs each
//! bound pod's containers as local processes (with the pod's env, Secrets, ConfigMaps,
//! emptyDirs and service-account token mounted where the pod says), patches pod status,
//! restarts containers as the restart policy says, serves their logs to the API server and
//! honours deletion. At scale it can instead *play* pods: mark them running and upload a
//! small result as their worker would, with the pod's own credentials.
//!
//! Test-only: the `buoy` binary never links it. Without the binaries, [`Binaries::find`] says
//! why, and the tests skip with that note.

pub mod audit;
mod certs;
pub mod cluster;
pub mod control_plane;
pub mod kubelet;
mod logs;
mod pod;
mod ports;

pub use cluster::TestCluster;
pub use control_plane::{Binaries, ControlPlane, ControlPlaneOptions};
pub use kubelet::{Kubelet, KubeletOptions, NodeMode};
pub use ports::free_port;

#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    #[error("{what} did not start: {reason}")]
    Start { what: String, reason: String },
    #[error("certificates: {0}")]
    Certs(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("Kubernetes API: {0}")]
    Kube(String),
}

impl From<kube::Error> for EnvError {
    fn from(e: kube::Error) -> Self {
        Self::Kube(e.to_string())
    }
}
