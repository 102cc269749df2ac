//! Buoy's Kubernetes layer, the only crate that imports kube-rs: the in-cluster run of
//! `buoy aggregator` (config, drivers, monitoring, status annotation, cleanup), `buoy status`
//! against a cluster, and `buoy manifest`.

pub mod config;
pub mod error;
pub mod failing;
pub mod nodes;
pub mod objects;

pub use error::KubeError;
