//! The Kubernetes layer's one error type.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("cannot read the run config {path}: {reason}")]
    Config { path: PathBuf, reason: String },
    #[error("no run config found for in-cluster mode: set SONOBUOY_CONFIG, or provide ./config.json or /etc/sonobuoy/config.json (for a standalone aggregator, give --expect PLUGIN=NODE[,NODE...])")]
    NoConfig,
    #[error(transparent)]
    Manifest(#[from] buoy_wire::manifest::ManifestError),
    #[error("plugin {0:?} is selected in the config but no manifest defines it")]
    MissingPlugin(String),
    #[error("plugin {plugin}: {reason}")]
    Plugin { plugin: String, reason: String },
    #[error("cannot reach the Kubernetes API: {0}")]
    Client(String),
    #[error("Kubernetes API: {context}: {source}")]
    Api {
        context: String,
        #[source]
        source: kube::Error,
    },
    #[error("the aggregator pod was not found in namespace {0} (label sonobuoy-component=aggregator or run=sonobuoy-master, or name sonobuoy)")]
    NoAggregatorPod(String),
    #[error("pod {pod} has status {phase:?}")]
    PodNotRunning { pod: String, phase: String },
    #[error("pod {0} has no status annotation \"sonobuoy.hept.io/status\"")]
    NoStatus(String),
    #[error("the status annotation does not decode: {0}")]
    BadStatus(String),
    #[error("cannot carry on the run recorded in {path}: {reason}")]
    RunRecord { path: PathBuf, reason: String },
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

impl KubeError {
    pub(crate) fn api(context: impl Into<String>) -> impl FnOnce(kube::Error) -> Self {
        let context = context.into();
        move |source| Self::Api { context, source }
    }
}

/// The HTTP status code of an API error response, if it was one.
pub(crate) fn api_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}
