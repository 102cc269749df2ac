//! Results: post-processing a run's plugin output into Sonobuoy's `sonobuoy_results.yaml` item
//! trees (compat §6.9), the `result-status` / `result-counts` they give each status entry
//! (compat §5.4), and reading results archives for `buoy results` (compat §5.6). No network,
//! no async: plain files in, plain data out.

pub mod archive;
pub mod health;
pub mod item;
mod junit;
pub mod process;
pub mod report;
mod xmlcap;

pub use archive::{Archive, ArchiveError};
pub use item::Item;
pub use process::{
    entry_result, process_plugin, write_plugin_results, EntryResult, EntryResults, PluginSpec,
    RESULTS_FILE,
};
pub use report::{PluginReport, Query};
