//! Buoy's Kubernetes layer, the only crate that imports kube-rs: the in-cluster run of
//! `buoy aggregator` (config, drivers, monitoring, status annotation, gathering, cleanup), `buoy status`
//! against a cluster, and `buoy manifest`.

pub mod api;
pub mod cluster;
pub mod config;
pub mod conformance;
pub mod delete;
pub mod error;
pub mod failing;
pub mod forward;
pub mod gather;
pub mod identity;
pub mod manifest;
pub mod monitor;
pub mod nodes;
pub mod objects;
pub mod publish;
pub mod runlog;
pub mod status;
pub mod view;

pub use error::KubeError;

#[cfg(test)]
mod fixtures;
