//! The aggregator's URL paths (compat §1.2). Workers and the server build them from here.

pub const RESULTS_BY_NODE: &str = "/api/v1/results/by-node";
pub const RESULTS_GLOBAL: &str = "/api/v1/results/global";
pub const PROGRESS_BY_NODE: &str = "/api/v1/progress/by-node";
pub const PROGRESS_GLOBAL: &str = "/api/v1/progress/global";
pub const STATUS: &str = "/api/v1/status";
/// The sealed tarball (Buoy only): `Range` requests, SHA-256 in [`TARBALL_SHA256_HEADER`].
pub const TARBALL: &str = "/api/v1/tarball";
/// The run at a glance, and one page of a plugin's nodes (Buoy only; see `overview`).
pub const OVERVIEW: &str = "/api/v1/overview";
pub const NODES: &str = "/api/v1/nodes";
/// Prometheus metrics (Buoy only).
pub const METRICS: &str = "/metrics";
/// The status page's scripts and styles (the page itself is `/`).
pub const PAGE_ASSETS: &str = "/ui";
pub const TARBALL_SHA256_HEADER: &str = "x-buoy-tarball-sha256";

/// The content type that makes the aggregator extract a gzipped tarball (exact match).
pub const GZIP_CONTENT_TYPE: &str = "application/gzip";

/// Percent-encodes one path segment the way Go's URL serialiser does for a path.
pub fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        let c = b as char;
        if c.is_ascii_alphanumeric() || "-._~!$&'()*+,;=:@".contains(c) {
            out.push(c);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Path of the result upload for `plugin` on `node` (`None` = global).
pub fn result_path(plugin: &str, node: Option<&str>) -> String {
    match node {
        Some(n) => format!(
            "{RESULTS_BY_NODE}/{}/{}",
            encode_segment(n),
            encode_segment(plugin)
        ),
        None => format!("{RESULTS_GLOBAL}/{}", encode_segment(plugin)),
    }
}

/// Path of the progress update for `plugin` on `node` (`None` = global).
pub fn progress_path(plugin: &str, node: Option<&str>) -> String {
    match node {
        Some(n) => format!(
            "{PROGRESS_BY_NODE}/{}/{}",
            encode_segment(n),
            encode_segment(plugin)
        ),
        None => format!("{PROGRESS_GLOBAL}/{}", encode_segment(plugin)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_match_sonobuoy_workers() {
        assert_eq!(result_path("e2e", None), "/api/v1/results/global/e2e");
        assert_eq!(
            result_path("systemd-logs", Some("node 1")),
            "/api/v1/results/by-node/node%201/systemd-logs"
        );
        assert_eq!(
            progress_path("p", Some("n")),
            "/api/v1/progress/by-node/n/p"
        );
    }
}
