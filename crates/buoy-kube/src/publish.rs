//! Publishing the run's status as the aggregator pod's `sonobuoy.hept.io/status` annotation
//! (compat §5.3, design departure 7): a merge patch every 5 s plus jitter, only when the status
//! changed, never over 64 KiB, falling back to ever smaller forms when the API server answers
//! 422 (the summary, then a quarter of it, and so on, down to the overall status and tar-info
//! alone, which always fits), and a final patch once the run is complete.

use std::sync::Arc;
use std::time::Duration;

use buoy_aggregator::metrics::Metrics;
use buoy_aggregator::Aggregator;
use buoy_wire::status::{Detail, ANNOTATION_LIMIT};
use buoy_wire::Status;
use rand::Rng;
use tokio::sync::watch;

use crate::api::{KubeApi, PatchError};

#[derive(Debug, Clone)]
pub struct PublishOptions {
    /// The base period (Sonobuoy: 5 s); each gap adds up to 1.2 times it at random.
    pub period: Duration,
    pub limit: usize,
    /// The limit used once the API server has refused a patch as too long.
    pub fallback_limit: usize,
}

impl Default for PublishOptions {
    fn default() -> Self {
        Self {
            period: Duration::from_secs(5),
            limit: ANNOTATION_LIMIT,
            fallback_limit: 16 * 1024,
        }
    }
}

/// Patches the annotation; remembers what was last written and whether the API server forced
/// the summary.
pub struct Publisher {
    api: KubeApi,
    opts: PublishOptions,
    last: Option<String>,
    min_detail: Detail,
    limit: usize,
    /// Where patches are counted (the aggregator's metrics, once `run` is given one).
    metrics: Option<Arc<Metrics>>,
    /// The aggregator pod's name, once found.
    pod: Option<String>,
}

impl Publisher {
    pub fn new(api: KubeApi, opts: PublishOptions) -> Self {
        let limit = opts.limit;
        Self {
            api,
            opts,
            last: None,
            min_detail: Detail::Full,
            limit,
            metrics: None,
            pod: None,
        }
    }

    /// Writes `status` if it differs from the last one written. Errors are logged: a missed
    /// update is retried on the next tick, never fatal to the run.
    pub async fn publish(&mut self, status: &Status) -> bool {
        let (json, detail) = status.to_bounded_json(self.limit, self.min_detail);
        if self.last.as_deref() == Some(json.as_str()) {
            return true;
        }
        if detail != Detail::Full {
            tracing::debug!(?detail, bytes = json.len(), "status annotation rolled up");
        }
        // Looked up once: the pod a run annotates never changes while it runs.
        let pod = match &self.pod {
            Some(p) => p.clone(),
            None => match self.api.aggregator_pod_name().await {
                Ok(p) => self.pod.insert(p).clone(),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot find the aggregator pod to annotate");
                    return false;
                }
            },
        };
        match self.patch(&pod, &json).await {
            Ok(()) => {
                self.last = Some(json);
                true
            }
            Err(PatchError::TooLong(msg)) => {
                tracing::warn!(message = %msg, "the API server refused the status as too long; publishing a smaller form from now on");
                self.min_detail = Detail::Summary;
                // The smallest form there is: the overall status and tar-info alone.
                let (minimal, _) = status.to_bounded_json(0, Detail::Summary);
                loop {
                    // The pod's other annotations may leave little room: keep shrinking until
                    // the minimal form, which carries what `sonobuoy status` needs to finish.
                    self.limit = if self.limit > self.opts.fallback_limit {
                        self.opts.fallback_limit
                    } else {
                        self.limit / 4
                    };
                    let (json, _) = status.to_bounded_json(self.limit, self.min_detail);
                    match self.patch(&pod, &json).await {
                        Ok(()) => {
                            self.last = Some(json);
                            return true;
                        }
                        Err(PatchError::TooLong(_)) if json != minimal => {
                            tracing::warn!(
                                limit = self.limit,
                                "still too long; shrinking the status further"
                            );
                        }
                        Err(e) => {
                            tracing::warn!(error = ?e, "cannot publish even the smaller status");
                            return false;
                        }
                    }
                }
            }
            Err(PatchError::Other(e)) => {
                tracing::warn!(error = %e, "cannot publish the status");
                false
            }
        }
    }

    /// Counts this publisher's patches in `metrics` (by default, `run`'s aggregator's).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// One annotation patch, counted in the metrics.
    async fn patch(&self, pod: &str, json: &str) -> Result<(), PatchError> {
        let r = self.api.patch_status(pod, json).await;
        if let Some(m) = &self.metrics {
            m.status_patch(r.is_ok());
        }
        r
    }

    fn gap(&self) -> Duration {
        let p = self.opts.period;
        p + p.mul_f64(rand::rng().random_range(0.0..1.2))
    }

    /// Publishes `agg`'s status immediately, then every period while it changes, until the run
    /// is complete (one last patch) or `stop` is set (one last attempt). Returns itself, so a
    /// later publish remembers what was written and any fallback to the summary.
    pub async fn run(mut self, agg: Arc<Aggregator>, mut stop: watch::Receiver<bool>) -> Self {
        if self.metrics.is_none() {
            self.metrics = Some(agg.metrics().clone());
        }
        loop {
            let status = agg.status();
            let complete = status.status == buoy_wire::status::COMPLETE;
            let ok = self.publish(&status).await;
            if (complete && ok) || *stop.borrow() {
                return self;
            }
            let gap = self.gap();
            let mut changed = agg.subscribe();
            tokio::select! {
                _ = tokio::time::sleep(gap) => {}
                _ = stop.changed() => {}
                // Completion is published at once rather than at the next tick.
                _ = async { while changed.changed().await.is_ok() { if agg.status().status == buoy_wire::status::COMPLETE { return; } } } => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{api_error, list, pair, within};
    use buoy_wire::status::PluginStatus;
    use serde_json::json;

    fn big(nodes: usize, status: &str) -> Status {
        Status {
            plugins: Some(
                (0..nodes)
                    .map(|n| PluginStatus {
                        plugin: "systemd-logs".into(),
                        node: format!("node-{n:05}"),
                        status: status.into(),
                        result_status: String::new(),
                        result_counts: None,
                        progress: None,
                    })
                    .collect(),
            ),
            status: "running".into(),
            tar_info: Default::default(),
            interrupted: None,
            seal_error: None,
        }
    }

    fn annotation(c: &crate::fixtures::Call) -> String {
        c.body["metadata"]["annotations"]["sonobuoy.hept.io/status"]
            .as_str()
            .unwrap()
            .to_string()
    }

    #[tokio::test]
    async fn a_too_long_refusal_falls_back_to_the_summary_and_updates_go_on() {
        let (client, mut server) = pair();
        let metrics = Arc::new(Metrics::new());
        let mut p = Publisher::new(KubeApi::new(client, "sonobuoy"), PublishOptions::default())
            .with_metrics(metrics.clone());
        let agg_pods = || {
            list(
                "PodList",
                vec![json!({"metadata": {"name": "sonobuoy-agg"}})],
            )
        };
        let task = tokio::spawn(async move {
            let first = p.publish(&big(400, "running")).await;
            let again = p.publish(&big(400, "running")).await;
            let changed = p.publish(&big(400, "complete")).await;
            (first, again, changed)
        });
        server
            .expect("GET", "/api/v1/namespaces/sonobuoy/pods", 200, agg_pods())
            .await;
        let c = server
            .expect(
                "PATCH",
                "/api/v1/namespaces/sonobuoy/pods/sonobuoy-agg",
                422,
                api_error(
                    422,
                    "Invalid",
                    "metadata.annotations: Too long: must have at most 262144 bytes",
                ),
            )
            .await;
        let full = annotation(&c);
        assert!(
            full.len() <= ANNOTATION_LIMIT && full.len() > 16 * 1024,
            "{}",
            full.len()
        );
        let c = server
            .expect(
                "PATCH",
                "/api/v1/namespaces/sonobuoy/pods/sonobuoy-agg",
                200,
                json!({"metadata": {"name": "sonobuoy-agg"}}),
            )
            .await;
        let summary: Status = serde_json::from_str(&annotation(&c)).unwrap();
        assert_eq!(summary.status, "running");
        assert_eq!(summary.plugins.unwrap()[0].node, "400 nodes");
        // The same status again is not re-sent; a new one is, still as the summary, to the pod
        // found the first time (no second lookup).
        let c = server
            .expect(
                "PATCH",
                "/api/v1/namespaces/sonobuoy/pods/sonobuoy-agg",
                200,
                json!({"metadata": {"name": "sonobuoy-agg"}}),
            )
            .await;
        let s: Status = serde_json::from_str(&annotation(&c)).unwrap();
        assert_eq!(s.plugins.unwrap().len(), 1);
        server.expect_silence(Duration::from_millis(200)).await;
        assert_eq!(within(task).await.unwrap(), (true, true, true));
        let text = metrics.render(&Default::default());
        for line in [
            "buoy_status_patches_total{outcome=\"error\"} 1",
            "buoy_status_patches_total{outcome=\"ok\"} 2",
        ] {
            assert!(text.contains(line), "{line} not in {text}");
        }
    }

    /// The pod's other annotations left no room for even the 16 KiB summary: the final
    /// `complete` used to be lost, so status readers said `running` for good.
    #[tokio::test]
    async fn the_final_status_shrinks_to_the_minimal_form_until_it_is_written() {
        let (client, mut server) = pair();
        let mut p = Publisher::new(KubeApi::new(client, "sonobuoy"), PublishOptions::default());
        let mut done = big(400, "complete");
        done.status = "complete".into();
        done.tar_info.name = "202611250000_sonobuoy_x.tar.gz".into();
        done.tar_info.sha256 = "ab".repeat(32);
        let task = tokio::spawn(async move { p.publish(&done).await });
        server
            .expect(
                "GET",
                "/api/v1/namespaces/sonobuoy/pods",
                200,
                list(
                    "PodList",
                    vec![json!({"metadata": {"name": "sonobuoy-agg"}})],
                ),
            )
            .await;
        let too_long = || {
            api_error(
                422,
                "Invalid",
                "metadata.annotations: Too long: must have at most 262144 bytes",
            )
        };
        let patch = "/api/v1/namespaces/sonobuoy/pods/sonobuoy-agg";
        // 64 KiB, the 16 KiB summary, 4 KiB, 1 KiB: each refused.
        let mut sizes = Vec::new();
        for _ in 0..4 {
            let c = server.expect("PATCH", patch, 422, too_long()).await;
            let body = annotation(&c);
            let s: Status = serde_json::from_str(&body).unwrap();
            assert!(s.plugins.is_some());
            sizes.push(body.len());
        }
        // Then the minimal form, which fits.
        let ok = json!({"metadata": {"name": "sonobuoy-agg"}});
        let c = server.expect("PATCH", patch, 200, ok).await;
        let body = annotation(&c);
        sizes.push(body.len());
        let last: Status = serde_json::from_str(&body).unwrap();
        assert!(last.plugins.is_none(), "{body}");
        assert!(sizes.windows(2).all(|w| w[1] <= w[0]), "{sizes:?}");
        assert!(sizes.len() >= 3, "{sizes:?}");
        assert_eq!(last.status, "complete");
        assert_eq!(last.tar_info.sha256, "ab".repeat(32));
        assert!(within(task).await.unwrap());
    }
}
