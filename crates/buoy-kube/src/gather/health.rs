//! The health summary of a gathering, `meta/clusterhealth.json` in v0.57's shape: node health
//! from each Node's `Ready` condition, pod health from each pod's phase and conditions, and the
//! lines of each gathered log that Sonobuoy's default patterns count as errors or warnings.
//! Built from the objects and bytes as they stream past, never by reading files back.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use super::text;

/// The longest log line the error summary looks at whole (Go's `bufio.Scanner` limit); the rest
/// of a longer line is copied but not scanned.
const MAX_SCANNED_LINE: usize = 64 * 1024;

/// `meta/clusterhealth.json` (v0.57 `discovery.ClusterSummary`).
#[derive(Debug, Default, Serialize)]
pub struct ClusterHealth {
    pub node_health: HealthInfo,
    pub pod_health: HealthInfo,
    pub api_version: String,
    /// Pattern name (`Errors`, `Warnings`) → log file → matching lines.
    pub error_summary: BTreeMap<String, BTreeMap<String, u64>>,
}

impl ClusterHealth {
    /// Records a log file's matching lines (none is no entry, as in Sonobuoy).
    pub(super) fn count_log(&mut self, rel: &str, errors: u64, warnings: u64) {
        for (pattern, n) in [("Errors", errors), ("Warnings", warnings)] {
            if n > 0 {
                self.error_summary
                    .entry(pattern.into())
                    .or_default()
                    .insert(rel.to_string(), n);
            }
        }
    }
}

#[derive(Debug, Default, Serialize)]
pub struct HealthInfo {
    pub total_nodes: usize,
    pub healthy_nodes: usize,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<HealthDetail>,
}

#[derive(Debug, Serialize)]
pub struct HealthDetail {
    pub name: String,
    pub healthy: bool,
    pub ready: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reason: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub message: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub namespace: String,
}

/// A node is healthy when its `Ready` condition is `True`.
pub(super) fn node_health(node: &Value) -> HealthDetail {
    let mut d = HealthDetail {
        name: text(&node["metadata"]["name"]),
        healthy: false,
        ready: String::new(),
        reason: String::new(),
        message: String::new(),
        namespace: String::new(),
    };
    let conditions = node["status"]["conditions"].as_array();
    if let Some(c) = conditions
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Ready")
    {
        d.ready = text(&c["status"]);
        d.healthy = d.ready == "True";
        d.reason = text(&c["reason"]);
        d.message = text(&c["message"]);
    }
    d
}

/// A pod is healthy when Running or Succeeded; otherwise its first condition that is not
/// `True` says why.
pub(super) fn pod_health(pod: &Value) -> HealthDetail {
    let phase = pod["status"]["phase"].as_str().unwrap_or_default();
    let mut d = HealthDetail {
        name: text(&pod["metadata"]["name"]),
        healthy: matches!(phase, "Running" | "Succeeded"),
        ready: String::new(),
        reason: String::new(),
        message: String::new(),
        namespace: text(&pod["metadata"]["namespace"]),
    };
    if d.healthy {
        d.ready = "Ready".into();
    } else if let Some(c) = pod["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["status"] != "True")
    {
        d.ready = text(&c["status"]);
        d.reason = text(&c["reason"]);
        d.message = text(&c["message"]);
    }
    d
}

pub(super) fn add(h: &mut HealthInfo, d: HealthDetail) {
    h.total_nodes += 1;
    h.healthy_nodes += usize::from(d.healthy);
    h.details.push(d);
}

/// Sonobuoy's default log patterns (`GetDefaultLogPatterns`): which of `Errors` and
/// `Warnings` a log line counts for.
fn classify(line: &[u8]) -> (bool, bool) {
    let has = |needle: &[u8]| line.windows(needle.len()).any(|w| w == needle);
    let coded = |c: u8| line.first() == Some(&c) && line.get(1).is_some_and(u8::is_ascii_digit);
    let error = has(b"failed") || has(b"Failed") || has(b"error") || has(b"Error") || coded(b'E');
    let warning = has(b"warn") || has(b"Warn") || coded(b'W');
    (error, warning)
}

/// Counts matching lines of a log as it streams past, holding at most one line's head.
#[derive(Default)]
pub(super) struct LineCounter {
    line: Vec<u8>,
    errors: u64,
    warnings: u64,
}

impl LineCounter {
    pub(super) fn feed(&mut self, mut chunk: &[u8]) {
        while let Some(i) = chunk.iter().position(|&b| b == b'\n') {
            self.take(&chunk[..i]);
            self.end_line();
            chunk = &chunk[i + 1..];
        }
        self.take(chunk);
    }

    fn take(&mut self, part: &[u8]) {
        let room = MAX_SCANNED_LINE.saturating_sub(self.line.len());
        self.line.extend_from_slice(&part[..part.len().min(room)]);
    }

    fn end_line(&mut self) {
        let line = self.line.strip_suffix(b"\r").unwrap_or(&self.line);
        let (e, w) = classify(line);
        self.errors += u64::from(e);
        self.warnings += u64::from(w);
        self.line.clear();
    }

    pub(super) fn finish(mut self) -> (u64, u64) {
        if !self.line.is_empty() {
            self.end_line();
        }
        (self.errors, self.warnings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_count_as_sonobuoys_default_patterns_do() {
        for (line, want) in [
            ("all good", (false, false)),
            ("E0101 12:00 broke", (true, false)),
            ("Eventually", (false, false)),
            ("W0101 12:00", (false, true)),
            ("level=error msg=x", (true, false)),
            ("request Failed", (true, false)),
            ("a warning and an error", (true, true)),
        ] {
            assert_eq!(classify(line.as_bytes()), want, "{line}");
        }
        let mut c = LineCounter::default();
        c.feed(b"fir");
        c.feed(b"st error\r\nsecond\nwarn");
        assert_eq!(c.finish(), (1, 1));
    }
}
