//! Whether a plugin pod is failing (compat §6.8 `IsPodFailing`, with design departure 10: a
//! container that exited 0 is not a failure, since its worker may still be delivering).

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use time::OffsetDateTime;

/// How long an image-pull error or a failed container is given before it counts.
pub const GRACE: Duration = Duration::from_secs(5 * 60);

/// One way a pod is failing: at once (`from` is `None`), or once `from` has passed (an image
/// pull or a failed container given the grace period).
#[derive(Debug, Clone, PartialEq)]
pub struct PendingFailure {
    pub from: Option<OffsetDateTime>,
    pub reason: String,
}

impl PendingFailure {
    pub fn holds_at(&self, now: OffsetDateTime) -> bool {
        self.from.is_none_or(|t| now > t)
    }
}

/// When the grace given from `t` runs out; `None` when `t` is unknown (the rule never holds).
fn after_grace(
    t: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
) -> Option<OffsetDateTime> {
    t.and_then(|t| OffsetDateTime::from_unix_timestamp(t.0.as_second()).ok())
        .map(|t| t + GRACE)
}

/// Every way `pod` fails or will fail if nothing changes, in the order the rules are judged.
/// A watch sees a pod only when it changes, so what only time turns into a failure is kept
/// with its time instead of judged once.
pub fn failure_timeline(pod: &Pod) -> Vec<PendingFailure> {
    let mut out = Vec::new();
    let Some(status) = pod.status.as_ref() else {
        return out;
    };
    let mut push =
        |from: Option<OffsetDateTime>, reason: String| out.push(PendingFailure { from, reason });
    for c in status.conditions.iter().flatten() {
        if c.reason.as_deref() == Some("Unschedulable") {
            push(
                None,
                format!(
                    "Can't schedule pod: {}",
                    c.message.as_deref().unwrap_or_default()
                ),
            );
        }
    }
    for cs in status.container_statuses.iter().flatten() {
        if cs.restart_count > 2 {
            push(
                None,
                format!(
                    "Container {} has restarted unsuccessfully {} times",
                    cs.name, cs.restart_count
                ),
            );
        }
        let state = cs.state.as_ref();
        if let Some(w) = state.and_then(|s| s.waiting.as_ref()) {
            let reason = w.reason.as_deref().unwrap_or_default();
            if matches!(reason, "ImagePullBackOff" | "ErrImagePull") {
                if let Some(from) = after_grace(status.start_time.as_ref()) {
                    push(Some(from), format!(
                        "Failed to pull image {} for container {} within 5m0s. Container is in state {reason}",
                        cs.image, cs.name
                    ));
                }
            }
        }
        if let Some(t) = state.and_then(|s| s.terminated.as_ref()) {
            if t.exit_code != 0 {
                if let Some(from) = after_grace(t.finished_at.as_ref()) {
                    push(
                        Some(from),
                        format!(
                            "Container {} is in a terminated state (exit code {}) due to reason: {}: {}",
                            cs.name,
                            t.exit_code,
                            t.reason.as_deref().unwrap_or_default(),
                            t.message.as_deref().unwrap_or_default()
                        ),
                    );
                }
            }
        }
    }
    out
}

/// The reason a pod is failing at `now`, or `None` while it is healthy (or may still recover).
pub fn pod_failure(pod: &Pod, now: OffsetDateTime) -> Option<String> {
    first_at(&failure_timeline(pod), now).map(str::to_string)
}

/// The first of `failures` that holds at `now`.
pub fn first_at(failures: &[PendingFailure], now: OffsetDateTime) -> Option<&str> {
    failures
        .iter()
        .find(|f| f.holds_at(now))
        .map(|f| f.reason.as_str())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    pub fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p"}, "status": status})).unwrap()
    }

    fn ts(t: OffsetDateTime) -> String {
        t.format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    }

    #[test]
    fn unschedulable_fails_at_once() {
        let p = pod(
            json!({"conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/3 nodes are available"}]}),
        );
        assert_eq!(
            pod_failure(&p, OffsetDateTime::now_utc()).unwrap(),
            "Can't schedule pod: 0/3 nodes are available"
        );
    }

    #[test]
    fn more_than_two_restarts_fail() {
        let mk = |n: i32| {
            pod(
                json!({"containerStatuses": [{"name": "plugin", "image": "i", "imageID": "", "ready": false, "restartCount": n}]}),
            )
        };
        let now = OffsetDateTime::now_utc();
        assert_eq!(pod_failure(&mk(2), now), None);
        assert_eq!(
            pod_failure(&mk(3), now).unwrap(),
            "Container plugin has restarted unsuccessfully 3 times"
        );
    }

    #[test]
    fn image_pull_errors_fail_only_after_five_minutes() {
        let now = OffsetDateTime::now_utc();
        let mk = |started: Option<OffsetDateTime>, reason: &str| {
            let mut s = json!({"containerStatuses": [{"name": "plugin", "image": "e2e:bad", "imageID": "", "ready": false, "restartCount": 0, "state": {"waiting": {"reason": reason}}}]});
            if let Some(t) = started {
                s["startTime"] = ts(t).into();
            }
            pod(s)
        };
        assert_eq!(
            pod_failure(
                &mk(Some(now - Duration::from_secs(60)), "ErrImagePull"),
                now
            ),
            None
        );
        assert_eq!(pod_failure(&mk(None, "ImagePullBackOff"), now), None);
        assert_eq!(
            pod_failure(&mk(Some(now - Duration::from_secs(301)), "ImagePullBackOff"), now).unwrap(),
            "Failed to pull image e2e:bad for container plugin within 5m0s. Container is in state ImagePullBackOff"
        );
        assert_eq!(
            pod_failure(
                &mk(Some(now - Duration::from_secs(900)), "ContainerCreating"),
                now
            ),
            None
        );
    }

    #[test]
    fn a_failed_container_counts_after_five_minutes_and_a_clean_exit_never() {
        let now = OffsetDateTime::now_utc();
        let mk = |code: i32, ago: u64| {
            pod(
                json!({"containerStatuses": [{"name": "plugin", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": code, "reason": "Error", "message": "boom", "finishedAt": ts(now - Duration::from_secs(ago))}}}]}),
            )
        };
        assert_eq!(pod_failure(&mk(1, 60), now), None);
        assert_eq!(
            pod_failure(&mk(1, 301), now).unwrap(),
            "Container plugin is in a terminated state (exit code 1) due to reason: Error: boom"
        );
        assert_eq!(pod_failure(&mk(0, 3600), now), None);
    }

    #[test]
    fn the_timeline_keeps_what_only_time_turns_into_a_failure_and_judges_in_rule_order() {
        let now = OffsetDateTime::now_utc();
        let p = pod(
            json!({"startTime": ts(now - Duration::from_secs(60)), "containerStatuses": [
            {"name": "a", "image": "e2e:bad", "imageID": "", "ready": false, "restartCount": 0, "state": {"waiting": {"reason": "ErrImagePull"}}},
            {"name": "b", "image": "i", "imageID": "", "ready": false, "restartCount": 5}]}),
        );
        let t = failure_timeline(&p);
        assert_eq!(t.len(), 2);
        // Now the restarts hold; in five minutes the image pull, which comes first, does.
        assert_eq!(
            first_at(&t, now).unwrap(),
            "Container b has restarted unsuccessfully 5 times"
        );
        assert!(first_at(&t, now + Duration::from_secs(241))
            .unwrap()
            .starts_with("Failed to pull image e2e:bad for container a"));
        assert_eq!(
            pod_failure(&p, now + Duration::from_secs(241)).as_deref(),
            first_at(&t, now + Duration::from_secs(241))
        );
    }
}
