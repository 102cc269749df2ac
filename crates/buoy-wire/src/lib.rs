//! Buoy's wire and file types, shared by every other crate: result keys, routes, progress
//! updates and their append rule, the status document, content-disposition handling, error
//! result bodies, Sonobuoy plugin manifests, and how a directory tree goes into a tarball. Data
//! and functions with no I/O beyond reading manifests and the tree being archived, and never a
//! dependency on an HTTP framework or Kubernetes client.

pub mod archive;
pub mod disposition;
pub mod gojson;
pub mod key;
pub mod manifest;
pub mod overview;
pub mod progress;
pub mod routes;
pub mod status;
pub mod timefmt;
pub mod yaml;

pub use key::{ResultKey, GLOBAL_NODE};
pub use progress::{ProgressInput, ProgressUpdate};
pub use status::{PluginStatus, Status, TarInfo};

/// The end of the longest prefix of `s` within `max` bytes that ends on a character boundary
/// (`str::floor_char_boundary`, stable only after this workspace's minimum Rust).
pub fn floor_char_boundary(s: &str, max: usize) -> usize {
    let mut end = max.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    end
}

/// Reads a file of at most `max` bytes whole. A longer one (or a device such as `/dev/zero`
/// that never ends) is an error once `max` bytes are read, instead of growing without bound.
pub fn read_bounded(path: &std::path::Path, max: u64) -> std::io::Result<Vec<u8>> {
    read_bounded_from(std::fs::File::open(path)?, max)
}

/// [`read_bounded`] from any reader: more than `max` bytes is an error of kind
/// `FileTooLarge` ("larger than `max` bytes"), found once `max + 1` bytes are read.
pub fn read_bounded_from(r: impl std::io::Read, max: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut out = Vec::new();
    r.take(max + 1).read_to_end(&mut out)?;
    if out.len() as u64 > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::FileTooLarge,
            format!("larger than {max} bytes"),
        ));
    }
    Ok(out)
}

/// The error text of a result that never arrived before the plugin's timeout (v0.57 wording,
/// which still contains "timeout" so post-processing classifies it as such).
pub const TIMEOUT_ERROR_MESSAGE: &str = "Plugin timeout while waiting for results so there are no results. Check pod logs or other cluster details for more information as to why this occurred.";

/// File name of an internal error result, stored under `plugins/<p>/errors/<node>/`.
pub const ERROR_RESULT_FILENAME: &str = "error.json";

/// The Sonobuoy release whose archive layout and status shape Buoy writes. `sonobuoy results`
/// reads `Version` from `meta/config.json` to choose a layout, so it must be a plain Sonobuoy
/// version (>= v0.15); Buoy's own version goes in a separate `BuoyVersion` key.
pub const SONOBUOY_COMPAT_VERSION: &str = "v0.57.5";

/// Buoy's own version.
pub const BUOY_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The worker env var in which the aggregator says until when a plugin may still deliver
/// (its launch plus its timeout, RFC 3339): Buoy's worker retries its upload until then.
pub const RESULT_DEADLINE_ENV: &str = "BUOY_RESULT_DEADLINE";

/// Builds the body of an internal error result: `{"error": msg, ...extra}` with keys sorted as
/// Go's encoder sorts map keys.
pub fn error_body(message: &str, extra: Option<(&str, serde_json::Value)>) -> Vec<u8> {
    let mut map = std::collections::BTreeMap::new();
    map.insert(
        "error".to_string(),
        serde_json::Value::String(message.to_string()),
    );
    if let Some((k, v)) = extra {
        map.insert(k.to_string(), v);
    }
    serde_json::to_vec(&map).expect("a map of JSON values always serialises")
}

/// This host's name: the kernel's, else `$HOSTNAME`, else `localhost`.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "localhost".to_string())
}
