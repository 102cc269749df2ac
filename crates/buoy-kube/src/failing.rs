//! Whether a plugin pod is failing (compat §6.8 `IsPodFailing`, with design departure 10: a
//! container that exited 0 is not a failure, since its worker may still be delivering).

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use time::OffsetDateTime;

/// How long an image-pull error or a failed container is given before it counts.
pub const GRACE: Duration = Duration::from_secs(5 * 60);

fn older_than(
    t: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    now: OffsetDateTime,
) -> bool {
    t.and_then(|t| OffsetDateTime::from_unix_timestamp(t.0.as_second()).ok())
        .is_some_and(|t| now - t > GRACE)
}

/// The reason a pod is failing, or `None` while it is healthy (or may still recover).
pub fn pod_failure(pod: &Pod, now: OffsetDateTime) -> Option<String> {
    let status = pod.status.as_ref()?;
    for c in status.conditions.iter().flatten() {
        if c.reason.as_deref() == Some("Unschedulable") {
            return Some(format!(
                "Can't schedule pod: {}",
                c.message.as_deref().unwrap_or_default()
            ));
        }
    }
    for cs in status.container_statuses.iter().flatten() {
        if cs.restart_count > 2 {
            return Some(format!(
                "Container {} has restarted unsuccessfully {} times",
                cs.name, cs.restart_count
            ));
        }
        let state = cs.state.as_ref();
        if let Some(w) = state.and_then(|s| s.waiting.as_ref()) {
            let reason = w.reason.as_deref().unwrap_or_default();
            if matches!(reason, "ImagePullBackOff" | "ErrImagePull")
                && older_than(status.start_time.as_ref(), now)
            {
                return Some(format!(
                    "Failed to pull image {} for container {} within 5m0s. Container is in state {reason}",
                    cs.image, cs.name
                ));
            }
        }
        if let Some(t) = state.and_then(|s| s.terminated.as_ref()) {
            if t.exit_code != 0 && older_than(t.finished_at.as_ref(), now) {
                return Some(format!(
                    "Container {} is in a terminated state (exit code {}) due to reason: {}: {}",
                    cs.name,
                    t.exit_code,
                    t.reason.as_deref().unwrap_or_default(),
                    t.message.as_deref().unwrap_or_default()
                ));
            }
        }
    }
    None
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
}
