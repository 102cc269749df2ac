//! Prometheus metrics (`GET /metrics`, OpenMetrics text). Counters and the upload histogram
//! are updated where the events happen (the API layer, the status publisher); the per-plugin
//! result counts and the run phase are read from the state when scraped, so they can never
//! drift from what the status says.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use buoy_wire::overview::Overview;

type Labels = Vec<(String, String)>;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A counter family with one label, whose counters are found by the label's value once and
/// then kept: building a label set and looking it up in the family for every upload or progress
/// update (tens of thousands a second) cost more than counting. The values are bounded by
/// what the callers pass (status codes, expected plugins).
#[derive(Debug)]
struct ByLabel<K> {
    label: &'static str,
    family: Family<Labels, Counter>,
    known: std::sync::RwLock<std::collections::HashMap<K, Counter>>,
}

impl<K: std::hash::Hash + Eq> ByLabel<K> {
    fn new(label: &'static str) -> Self {
        Self {
            label,
            family: Family::default(),
            known: Default::default(),
        }
    }

    /// Adds one to the counter of `key`, whose label value is `value`.
    fn inc<Q>(&self, key: &Q, value: impl FnOnce() -> String)
    where
        K: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let known = self.known.read().ok().and_then(|m| m.get(key).cloned());
        let counter = known.unwrap_or_else(|| {
            let c = self
                .family
                .get_or_create(&labels(&[(self.label, &value())]))
                .clone();
            if let Ok(mut m) = self.known.write() {
                m.insert(key.to_owned(), c.clone());
            }
            c
        });
        counter.inc();
    }
}

/// The content type of the OpenMetrics text format (Prometheus reads it).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Run phases the `buoy_run_phase` gauge reports, one of them 1.
const PHASES: [&str; 3] = [
    buoy_wire::status::RUNNING,
    buoy_wire::status::POST_PROCESSING,
    buoy_wire::status::COMPLETE,
];

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    uploads: ByLabel<u16>,
    upload_bytes: Counter,
    upload_seconds: Histogram,
    progress_updates: ByLabel<String>,
    status_patches: Family<Labels, Counter>,
    results: Family<Labels, Gauge>,
    run_phase: Family<Labels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("buoy");
        let uploads = ByLabel::new("code");
        let upload_bytes = Counter::default();
        // 1 ms to ~17 min: a 10 KiB result on loopback up to a large result on a slow link.
        let upload_seconds = Histogram::new(exponential_buckets(0.001, 4.0, 11));
        let progress_updates = ByLabel::new("plugin");
        let status_patches = Family::<Labels, Counter>::default();
        let results = Family::<Labels, Gauge>::default();
        let run_phase = Family::<Labels, Gauge>::default();
        registry.register(
            "uploads",
            "Result uploads answered, by HTTP status code",
            uploads.family.clone(),
        );
        registry.register(
            "upload_received_bytes",
            "Bytes of result upload bodies received",
            upload_bytes.clone(),
        );
        registry.register(
            "upload_duration_seconds",
            "Time from an upload's request to its answer",
            upload_seconds.clone(),
        );
        registry.register(
            "progress_updates",
            "Progress updates accepted, by plugin",
            progress_updates.family.clone(),
        );
        registry.register(
            "status_patches",
            "Status annotation patches sent to the API server (in-cluster), by outcome",
            status_patches.clone(),
        );
        registry.register(
            "results",
            "Results of each plugin by state: expected, received, failed (error results, \
             timeouts included), timed_out",
            results.clone(),
        );
        registry.register(
            "run_phase",
            "The run's phase: 1 for the current one (running, post-processing, complete)",
            run_phase.clone(),
        );
        Self {
            registry,
            uploads,
            upload_bytes,
            upload_seconds,
            progress_updates,
            status_patches,
            results,
            run_phase,
        }
    }

    /// One result upload answered with `code` after `seconds`.
    pub fn upload_answered(&self, code: u16, seconds: f64) {
        self.uploads.inc(&code, || code.to_string());
        self.upload_seconds.observe(seconds);
    }

    pub fn body_bytes(&self, n: u64) {
        self.upload_bytes.inc_by(n);
    }

    pub fn progress_update(&self, plugin: &str) {
        self.progress_updates.inc(plugin, || plugin.to_string());
    }

    /// A status annotation patch was sent; `ok` says whether the API server took it.
    pub fn status_patch(&self, ok: bool) {
        let outcome = if ok { "ok" } else { "error" };
        self.status_patches
            .get_or_create(&labels(&[("outcome", outcome)]))
            .inc();
    }

    /// The exposition text, with the per-plugin counts and the phase taken from `now`.
    pub fn render(&self, now: &Overview) -> String {
        for p in &now.plugins {
            for (state, n) in [
                ("expected", p.expected),
                ("received", p.complete),
                ("failed", p.failed),
                ("timed_out", p.timed_out),
            ] {
                self.results
                    .get_or_create(&labels(&[("plugin", &p.plugin), ("state", state)]))
                    .set(n as i64);
            }
        }
        for phase in PHASES {
            self.run_phase
                .get_or_create(&labels(&[("phase", phase)]))
                .set(i64::from(now.status == phase));
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use buoy_wire::overview::PluginOverview;

    #[test]
    fn renders_counters_and_state_gauges() {
        let m = Metrics::new();
        m.upload_answered(200, 0.01);
        m.upload_answered(200, 0.02);
        m.upload_answered(409, 0.001);
        m.body_bytes(1234);
        m.progress_update("e2e");
        m.progress_update("e2e");
        m.progress_update("sys");
        m.status_patch(true);
        m.status_patch(false);
        let now = Overview {
            status: "running".into(),
            plugins: vec![PluginOverview {
                plugin: "e2e".into(),
                expected: 3,
                complete: 1,
                failed: 1,
                timed_out: 1,
                remaining: 1,
                ..Default::default()
            }],
            tarball: None,
            seal_error: None,
        };
        let text = m.render(&now);
        for line in [
            "buoy_uploads_total{code=\"200\"} 2",
            "buoy_uploads_total{code=\"409\"} 1",
            "buoy_upload_received_bytes_total 1234",
            "buoy_upload_duration_seconds_count 3",
            "buoy_progress_updates_total{plugin=\"e2e\"} 2",
            "buoy_progress_updates_total{plugin=\"sys\"} 1",
            "buoy_status_patches_total{outcome=\"ok\"} 1",
            "buoy_status_patches_total{outcome=\"error\"} 1",
            "buoy_results{plugin=\"e2e\",state=\"expected\"} 3",
            "buoy_results{plugin=\"e2e\",state=\"received\"} 1",
            "buoy_results{plugin=\"e2e\",state=\"timed_out\"} 1",
            "buoy_run_phase{phase=\"running\"} 1",
            "buoy_run_phase{phase=\"complete\"} 0",
        ] {
            assert!(text.contains(line), "{line:?} missing from:\n{text}");
        }
    }
}
