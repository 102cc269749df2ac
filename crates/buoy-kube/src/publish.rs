//! Publishing the run's status as the aggregator pod's `sonobuoy.hept.io/status` annotation
//! (compat §5.3, design departure 7): a merge patch every 5 s plus jitter, only when the status
//! changed, never over 64 KiB, falling back to the summary when the API server answers 422, and
//! a final patch once the run is complete.

use std::sync::Arc;
use std::time::Duration;

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
        let pod = match self.api.aggregator_pod_name().await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "cannot find the aggregator pod to annotate");
                return false;
            }
        };
        match self.api.patch_status(&pod, &json).await {
            Ok(()) => {
                self.last = Some(json);
                true
            }
            Err(PatchError::TooLong(msg)) => {
                tracing::warn!(message = %msg, "the API server refused the status as too long; publishing the summary from now on");
                self.min_detail = Detail::Summary;
                self.limit = self.opts.fallback_limit;
                let (json, _) = status.to_bounded_json(self.limit, self.min_detail);
                match self.api.patch_status(&pod, &json).await {
                    Ok(()) => {
                        self.last = Some(json);
                        true
                    }
                    Err(e) => {
                        tracing::warn!(error = ?e, "cannot publish the status summary");
                        false
                    }
                }
            }
            Err(PatchError::Other(e)) => {
                tracing::warn!(error = %e, "cannot publish the status");
                false
            }
        }
    }

    fn gap(&self) -> Duration {
        let p = self.opts.period;
        p + p.mul_f64(rand::rng().random_range(0.0..1.2))
    }

    /// Publishes `agg`'s status immediately, then every period while it changes, until the run
    /// is complete (one last patch) or `stop` is set (one last attempt).
    pub async fn run(mut self, agg: Arc<Aggregator>, mut stop: watch::Receiver<bool>) {
        loop {
            let status = agg.status();
            let complete = status.status == buoy_wire::status::COMPLETE;
            let ok = self.publish(&status).await;
            if complete && ok {
                return;
            }
            if *stop.borrow() {
                return;
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
