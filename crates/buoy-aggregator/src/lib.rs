//! Buoy's aggregator: it knows which (plugin, node) results to expect, receives them over a
//! Sonobuoy-compatible HTTP API in parallel, stores them safely, reports live status, records
//! error results for failures and timeouts, and seals the run into one tarball.
//!
//! Layers, inner to outer: `state` (sans-IO state machine), `extract`/`store`/`seal` (disk),
//! `aggregator` (ties state and disk together, no HTTP), `api` (routes and the one error-to-
//! response mapping), `server` (sockets, TLS, timeouts, shutdown) and `run` (one whole run).

pub mod aggregator;
pub mod api;
pub mod body;
pub mod budget;
pub mod error;
pub mod extract;
mod journal;
pub mod metrics;
pub mod page;
pub mod run;
pub mod seal;
pub mod server;
pub mod state;
pub mod status_body;
pub mod store;

pub use aggregator::{Aggregator, Options};
pub use error::AggError;
pub use extract::Limits;
pub use run::{Finished, RunConfig, RunHandle};
pub use server::{ServerOptions, ViewServer};
