//! Watching plugin objects while a run waits for results (compat §6.8, design departure 10):
//! failing pods, DaemonSet nodes that never get a pod, nodes that leave the cluster, a Job pod
//! that disappears, and the per-plugin timeout. Each finding becomes an error result. The
//! judgement is a pure function over one look at the run's [`ClusterView`] (kept current by
//! watches); the loop looks every `poll` and never calls the API itself.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use buoy_aggregator::state::Phase;
use buoy_aggregator::{AggError, Aggregator};
use buoy_wire::manifest::Driver;
use buoy_wire::{ResultKey, GLOBAL_NODE};
use k8s_openapi::api::core::v1::Pod;
use time::OffsetDateTime;
use tokio::sync::watch;

use crate::failing::{failure_timeline, first_at, PendingFailure};
use crate::view::ClusterView;

#[derive(Debug, Clone)]
pub struct MonitorOptions {
    /// Time between two looks at the view (Sonobuoy polls the API this often: 10 s).
    pub poll: Duration,
    /// How long a DaemonSet node may have no pod before it counts as failed.
    pub missing_pod_grace: Duration,
    /// Looks in a row a node (or a Job's pod) must be missing before it counts as gone.
    pub gone_polls: u32,
}

impl Default for MonitorOptions {
    fn default() -> Self {
        Self {
            poll: Duration::from_secs(10),
            missing_pod_grace: Duration::from_secs(120),
            gone_polls: 2,
        }
    }
}

/// One plugin's keys: its global key for a Job, a key per node for a DaemonSet.
pub fn plugin_keys(plugin: &str, driver: Driver, nodes: &[String]) -> Vec<ResultKey> {
    match driver {
        Driver::Job => vec![ResultKey::global(plugin)],
        Driver::DaemonSet => nodes.iter().map(|n| ResultKey::new(plugin, n)).collect(),
    }
}

/// One launched plugin instance, as the monitor sees it.
#[derive(Debug, Clone)]
pub struct Watched {
    pub plugin: String,
    pub driver: Driver,
    pub sid: String,
    /// The nodes a DaemonSet plugin expects (empty for a Job).
    pub nodes: Vec<String>,
    pub launched: OffsetDateTime,
    pub timeout: Option<Duration>,
}

impl Watched {
    pub fn keys(&self) -> Vec<ResultKey> {
        plugin_keys(&self.plugin, self.driver, &self.nodes)
    }
}

/// One plugin pod as the view holds it: only what judging needs. A pod is about 9 KB
/// (managed fields, env); thousands of them were most of the aggregator's memory, so each is
/// boiled down to this as it arrives.
#[derive(Debug, Clone, Default)]
pub struct SeenPod {
    /// The node the pod is bound to, or made for (a DaemonSet's pod before it is bound).
    pub node: Option<String>,
    /// Whether the scheduler bound it to `node`.
    pub bound: bool,
    /// How the pod fails, now or once a grace period passes ([`failure_timeline`]).
    pub failures: Vec<PendingFailure>,
    /// The whole pod, kept only when it fails or may: the error result carries it.
    pub pod: Option<serde_json::Value>,
}

impl SeenPod {
    pub fn of(pod: &Pod) -> Self {
        let failures = failure_timeline(pod);
        Self {
            node: target_node(pod),
            bound: pod.spec.as_ref().is_some_and(|s| s.node_name.is_some()),
            pod: (!failures.is_empty())
                .then(|| serde_json::to_value(pod).ok())
                .flatten(),
            failures,
        }
    }

    /// Why the pod is failing at `now`, if it is.
    pub fn failure(&self, now: OffsetDateTime) -> Option<&str> {
        first_at(&self.failures, now)
    }
}

/// The node a pod is for: the one it is bound to, or else the one a DaemonSet's pod is made
/// for (its required affinity to `metadata.name`), which it has before the scheduler binds it.
/// A pod made but not yet bound is no sign of a toleration problem: in a large cluster the
/// scheduler can take minutes to bind thousands, and one it cannot bind says so itself
/// (Unschedulable).
fn target_node(pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    if let Some(n) = &spec.node_name {
        return Some(n.clone());
    }
    let terms = &spec
        .affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms;
    terms.iter().find_map(|t| {
        t.match_fields.iter().flatten().find_map(|f| {
            let values = f.values.as_deref().unwrap_or_default();
            (f.key == "metadata.name" && f.operator == "In" && values.len() == 1)
                .then(|| values[0].clone())
        })
    })
}

/// What one poll saw.
#[derive(Debug, Default)]
pub struct Observation {
    pub pods: Vec<SeenPod>,
    /// DaemonSets found with the instance's label (DaemonSet plugins only).
    pub daemonsets: usize,
    /// The cluster's node names, when they could be listed.
    pub nodes: Option<BTreeSet<String>>,
}

/// An error result to record.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub key: ResultKey,
    pub message: String,
    pub pod: Option<serde_json::Value>,
}

/// What the monitor remembers between polls.
#[derive(Debug, Default)]
pub struct MonitorState {
    found: BTreeSet<String>,
    reported: BTreeSet<String>,
    node_missing: BTreeMap<String, u32>,
    job_pod_seen: bool,
    job_pod_missing: u32,
    /// Expected nodes with a pod at the last poll (`None` before the first).
    pods_counted: Option<usize>,
    /// When a poll last found more of them than the one before.
    last_growth: Option<OffsetDateTime>,
}

fn human(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 60 {
        format!("{}m{}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

/// Judges one poll. `done` tells which keys already have a result (they are never reported).
pub fn assess(
    w: &Watched,
    st: &mut MonitorState,
    obs: &Observation,
    done: &dyn Fn(&ResultKey) -> bool,
    opts: &MonitorOptions,
    now: OffsetDateTime,
) -> Vec<Verdict> {
    let mut out = Vec::new();
    match w.driver {
        Driver::Job => {
            let key = ResultKey::global(&w.plugin);
            if done(&key) || st.reported.contains(GLOBAL_NODE) {
                return out;
            }
            match obs.pods.as_slice() {
                [pod] => {
                    st.job_pod_seen = true;
                    st.job_pod_missing = 0;
                    if let Some(reason) = pod.failure(now) {
                        st.reported.insert(GLOBAL_NODE.into());
                        out.push(Verdict {
                            key,
                            message: reason.to_string(),
                            pod: pod.pod.clone(),
                        });
                    }
                }
                [] if st.job_pod_seen => {
                    st.job_pod_missing += 1;
                    if st.job_pod_missing >= opts.gone_polls {
                        st.reported.insert(GLOBAL_NODE.into());
                        out.push(Verdict {
                            key,
                            message: format!(
                                "The pod of plugin {} was deleted before its worker delivered a result (was its node removed?)",
                                w.plugin
                            ),
                            pod: None,
                        });
                    }
                }
                _ => {}
            }
        }
        Driver::DaemonSet => {
            if obs.daemonsets != 1 {
                return out;
            }
            let expected: BTreeSet<&str> = w.nodes.iter().map(String::as_str).collect();
            for pod in &obs.pods {
                let Some(node) = pod.node.clone() else {
                    continue;
                };
                if !expected.contains(node.as_str()) || st.reported.contains(&node) {
                    continue;
                }
                st.found.insert(node.clone());
                let key = ResultKey::new(&w.plugin, &node);
                // A pod not yet bound counts as the node's pod, but is judged only once bound
                // (as Sonobuoy judges it): the scheduler may still place it.
                if done(&key) || !pod.bound {
                    continue;
                }
                if let Some(reason) = pod.failure(now) {
                    st.reported.insert(node.clone());
                    out.push(Verdict {
                        key,
                        message: reason.to_string(),
                        pod: pod.pod.clone(),
                    });
                }
            }
            // The grace for a node without a pod counts from the launch, or from the last poll
            // that found more pods than the one before: at thousands of nodes the DaemonSet
            // controller takes minutes to make every pod (it made 3,754 of 5,001 in the first
            // two minutes here), and a node is not "without a pod" while they keep coming.
            let found = st.found.len();
            if st.pods_counted.is_some_and(|before| found > before) {
                st.last_growth = Some(now);
            }
            st.pods_counted = Some(found);
            let since = st.last_growth.map_or(w.launched, |g| g.max(w.launched));
            let quiet: Duration = (now - since).try_into().unwrap_or(Duration::ZERO);
            let waited = (now - w.launched).try_into().unwrap_or(Duration::ZERO);
            for node in &w.nodes {
                let key = ResultKey::new(&w.plugin, node);
                if st.reported.contains(node) || done(&key) {
                    continue;
                }
                if let Some(present) = &obs.nodes {
                    if present.contains(node) {
                        st.node_missing.remove(node);
                    } else {
                        let n = st.node_missing.entry(node.clone()).or_default();
                        *n += 1;
                        if *n >= opts.gone_polls {
                            st.reported.insert(node.clone());
                            out.push(Verdict {
                                key,
                                message: format!(
                                    "Node {node} was removed from the cluster during the run"
                                ),
                                pod: None,
                            });
                            continue;
                        }
                    }
                }
                if !st.found.contains(node) && quiet >= opts.missing_pod_grace {
                    st.reported.insert(node.clone());
                    out.push(Verdict {
                        key,
                        message: format!(
                            "No pod was scheduled on node {node} within {}. Check tolerations for plugin {}",
                            human(waited),
                            w.plugin
                        ),
                        pod: None,
                    });
                }
            }
        }
    }
    out
}

fn is_done(agg: &Aggregator, key: &ResultKey) -> bool {
    agg.inspect(|s| matches!(s.phase_of(key), Some(Phase::Done(_))))
}

/// Records a verdict; `false` if it must be tried again (an upload for the key is in flight, or
/// the write failed).
async fn record(agg: &Aggregator, v: &Verdict) -> bool {
    let extra = v.pod.clone().map(|p| ("pod", p));
    match agg.submit_error(&v.key, &v.message, extra).await {
        Ok(()) => true,
        Err(AggError::Duplicate(_)) | Err(AggError::Unexpected(_)) => true,
        Err(e) => {
            tracing::warn!(key = %v.key, error = %e, "cannot record the error result yet");
            false
        }
    }
}

/// Watches one plugin instance until every one of its keys has a result or `stop` is set:
/// every `poll` it judges what the view holds now (no API call is made here).
pub async fn monitor(
    view: Arc<ClusterView>,
    agg: Arc<Aggregator>,
    w: Watched,
    opts: MonitorOptions,
    mut stop: watch::Receiver<bool>,
) {
    let mut st = MonitorState::default();
    let wait = opts.poll;
    // From the launch, which a resumed run recorded before a restart.
    let deadline = w.timeout.map(|t| {
        let spent = (OffsetDateTime::now_utc() - w.launched)
            .try_into()
            .unwrap_or(Duration::ZERO);
        tokio::time::Instant::now() + t.saturating_sub(spent)
    });
    loop {
        if *stop.borrow() || agg.inspect(|s| s.plugin_done(&w.plugin)) {
            return;
        }
        if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
            for key in w.keys() {
                if !is_done(&agg, &key) {
                    record(
                        &agg,
                        &Verdict {
                            key,
                            message: buoy_wire::TIMEOUT_ERROR_MESSAGE.into(),
                            pod: None,
                        },
                    )
                    .await;
                }
            }
        } else {
            let now = OffsetDateTime::now_utc();
            // Until the watches have listed once there is nothing to judge yet.
            if let Some(obs) = view.observation(&w) {
                let verdicts = assess(&w, &mut st, &obs, &|k| is_done(&agg, k), &opts, now);
                for v in verdicts {
                    tracing::warn!(key = %v.key, reason = %v.message, "plugin failure detected");
                    if !record(&agg, &v).await {
                        st.reported.remove(&v.key.node);
                    }
                }
            }
        }
        let sleep_until = match deadline {
            Some(d) => d.min(tokio::time::Instant::now() + wait),
            None => tokio::time::Instant::now() + wait,
        };
        let mut changed = agg.subscribe();
        tokio::select! {
            _ = tokio::time::sleep_until(sleep_until.max(tokio::time::Instant::now() + Duration::from_millis(10))) => {}
            _ = stop.changed() => {}
            _ = async { while changed.changed().await.is_ok() { if agg.inspect(|s| s.plugin_done(&w.plugin)) { return; } } } => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn watched(driver: Driver, nodes: &[&str]) -> Watched {
        Watched {
            plugin: "p".into(),
            driver,
            sid: "sid".into(),
            nodes: nodes.iter().map(|n| n.to_string()).collect(),
            launched: OffsetDateTime::now_utc() - Duration::from_secs(600),
            timeout: None,
        }
    }

    fn pod_on(node: &str, status: serde_json::Value) -> SeenPod {
        let pod: Pod = serde_json::from_value(json!({"metadata": {"name": format!("pod-{node}")}, "spec": {"containers": [], "nodeName": node}, "status": status})).unwrap();
        SeenPod::of(&pod)
    }

    fn unschedulable() -> serde_json::Value {
        json!({"conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "taints"}]})
    }

    fn names(ns: &[&str]) -> Option<BTreeSet<String>> {
        Some(ns.iter().map(|n| n.to_string()).collect())
    }

    #[test]
    fn a_daemonset_pod_not_yet_bound_is_for_the_node_its_affinity_names() {
        let pending: Pod = serde_json::from_value(json!({"metadata": {"name": "ds-x"}, "spec": {"containers": [],
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n7"]}]}]}}}},
            "status": {"phase": "Pending"}})).unwrap();
        assert_eq!(SeenPod::of(&pending).node.as_deref(), Some("n7"));
        // So a node whose pod waits for the scheduler is not "without a pod" past the grace.
        let w = watched(Driver::DaemonSet, &["n7"]);
        let obs = Observation {
            pods: vec![SeenPod::of(&pending)],
            daemonsets: 1,
            nodes: names(&["n7"]),
        };
        let v = assess(
            &w,
            &mut MonitorState::default(),
            &obs,
            &|_| false,
            &MonitorOptions::default(),
            OffsetDateTime::now_utc(),
        );
        assert!(v.is_empty(), "{v:?}");
        // Nor is it judged before the scheduler binds it.
        let mut stuck = serde_json::to_value(&pending).unwrap();
        stuck["status"] = unschedulable();
        let stuck: Pod = serde_json::from_value(stuck).unwrap();
        let obs = Observation {
            pods: vec![SeenPod::of(&stuck)],
            daemonsets: 1,
            nodes: names(&["n7"]),
        };
        let v = assess(
            &w,
            &mut MonitorState::default(),
            &obs,
            &|_| false,
            &MonitorOptions::default(),
            OffsetDateTime::now_utc(),
        );
        assert!(v.is_empty(), "{v:?}");
        let bare: Pod =
            serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {"containers": []}}))
                .unwrap();
        assert_eq!(SeenPod::of(&bare).node, None);
    }

    #[test]
    fn a_seen_pod_keeps_the_whole_pod_only_when_it_is_failing() {
        let running = pod_on("a", json!({"phase": "Running"}));
        assert_eq!(running.node.as_deref(), Some("a"));
        let now = OffsetDateTime::now_utc();
        assert!(running.failure(now).is_none() && running.pod.is_none());
        let stuck = pod_on("b", unschedulable());
        assert_eq!(stuck.failure(now), Some("Can't schedule pod: taints"));
        let pod = stuck.pod.unwrap();
        assert_eq!(pod["metadata"]["name"], "pod-b");
        assert_eq!(pod["status"]["conditions"][0]["reason"], "Unschedulable");
    }

    #[test]
    fn daemonset_failing_and_missing_pods_are_each_reported_once() {
        let w = watched(Driver::DaemonSet, &["a", "b", "c"]);
        let mut st = MonitorState::default();
        let obs = Observation {
            pods: vec![
                pod_on("a", json!({"phase": "Running"})),
                pod_on("b", unschedulable()),
            ],
            daemonsets: 1,
            nodes: names(&["a", "b", "c"]),
        };
        let opts = MonitorOptions::default();
        let v = assess(
            &w,
            &mut st,
            &obs,
            &|_| false,
            &opts,
            OffsetDateTime::now_utc(),
        );
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].key, ResultKey::new("p", "b"));
        assert_eq!(v[0].message, "Can't schedule pod: taints");
        assert!(v[0].pod.is_some());
        assert_eq!(v[1].key, ResultKey::new("p", "c"));
        assert!(
            v[1].message
                .starts_with("No pod was scheduled on node c within 10m"),
            "{}",
            v[1].message
        );
        assert!(v[1].message.ends_with("Check tolerations for plugin p"));
        assert!(assess(
            &w,
            &mut st,
            &obs,
            &|_| false,
            &opts,
            OffsetDateTime::now_utc()
        )
        .is_empty());
    }

    #[test]
    fn missing_pods_wait_while_the_daemonset_still_gains_pods() {
        let t0 = OffsetDateTime::now_utc();
        let mut w = watched(Driver::DaemonSet, &["a", "b", "c"]);
        w.launched = t0 - Duration::from_secs(30);
        let mut st = MonitorState::default();
        let opts = MonitorOptions::default();
        let obs = |on: &[&str]| Observation {
            pods: on
                .iter()
                .map(|n| pod_on(n, json!({"phase": "Running"})))
                .collect(),
            daemonsets: 1,
            nodes: names(&["a", "b", "c"]),
        };
        let at = |secs: u64| t0 + Duration::from_secs(secs);
        let mut judge =
            |on: &[&str], secs| assess(&w, &mut st, &obs(on), &|_| false, &opts, at(secs));
        assert!(judge(&["a"], 0).is_empty());
        // A pod more at 100 s: the controller is still at work.
        assert!(judge(&["a", "b"], 100).is_empty());
        // 180 s after the launch, past the grace from it, but 50 s after the last new pod.
        assert!(judge(&["a", "b"], 150).is_empty());
        let v = judge(&["a", "b"], 221);
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].key, ResultKey::new("p", "c"));
        assert!(
            v[0].message
                .starts_with("No pod was scheduled on node c within 4m11s"),
            "{}",
            v[0].message
        );
    }

    #[test]
    fn no_daemonset_yet_means_no_verdicts_and_missing_pods_wait_for_the_grace() {
        let mut w = watched(Driver::DaemonSet, &["a"]);
        let mut st = MonitorState::default();
        let opts = MonitorOptions::default();
        let none = Observation {
            daemonsets: 0,
            ..Default::default()
        };
        assert!(assess(
            &w,
            &mut st,
            &none,
            &|_| false,
            &opts,
            OffsetDateTime::now_utc()
        )
        .is_empty());
        w.launched = OffsetDateTime::now_utc();
        let empty = Observation {
            daemonsets: 1,
            nodes: names(&["a"]),
            ..Default::default()
        };
        assert!(assess(
            &w,
            &mut st,
            &empty,
            &|_| false,
            &opts,
            OffsetDateTime::now_utc()
        )
        .is_empty());
    }

    #[test]
    fn a_node_that_leaves_the_cluster_gets_an_error_after_two_polls_unless_it_delivered() {
        let w = watched(Driver::DaemonSet, &["a", "b"]);
        let mut st = MonitorState::default();
        let opts = MonitorOptions::default();
        let obs = Observation {
            pods: vec![pod_on("a", json!({})), pod_on("b", json!({}))],
            daemonsets: 1,
            nodes: names(&[]),
        };
        let a_done = |k: &ResultKey| k.node == "a";
        assert!(assess(&w, &mut st, &obs, &a_done, &opts, OffsetDateTime::now_utc()).is_empty());
        let v = assess(&w, &mut st, &obs, &a_done, &opts, OffsetDateTime::now_utc());
        assert_eq!(v.len(), 1);
        assert_eq!(
            v[0].message,
            "Node b was removed from the cluster during the run"
        );
        // A node that comes back in between starts counting again.
        let w = watched(Driver::DaemonSet, &["c"]);
        let mut st = MonitorState::default();
        let gone = Observation {
            pods: vec![pod_on("c", json!({}))],
            daemonsets: 1,
            nodes: names(&[]),
        };
        let back = Observation {
            pods: vec![pod_on("c", json!({}))],
            daemonsets: 1,
            nodes: names(&["c"]),
        };
        assert!(assess(
            &w,
            &mut st,
            &gone,
            &|_| false,
            &opts,
            OffsetDateTime::now_utc()
        )
        .is_empty());
        assert!(assess(
            &w,
            &mut st,
            &back,
            &|_| false,
            &opts,
            OffsetDateTime::now_utc()
        )
        .is_empty());
        assert!(assess(
            &w,
            &mut st,
            &gone,
            &|_| false,
            &opts,
            OffsetDateTime::now_utc()
        )
        .is_empty());
    }

    #[test]
    fn a_job_pod_that_exited_zero_is_not_failing_but_one_that_vanished_is() {
        let w = watched(Driver::Job, &[]);
        let mut st = MonitorState::default();
        let opts = MonitorOptions::default();
        let done_long_ago = pod_on(
            "n",
            json!({"containerStatuses": [{"name": "plugin", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": 0, "finishedAt": "2020-01-01T00:00:00Z"}}}]}),
        );
        let one = Observation {
            pods: vec![done_long_ago],
            ..Default::default()
        };
        assert!(assess(
            &w,
            &mut st,
            &one,
            &|_| false,
            &opts,
            OffsetDateTime::now_utc()
        )
        .is_empty());
        let none = Observation::default();
        assert!(assess(
            &w,
            &mut st,
            &none,
            &|_| false,
            &opts,
            OffsetDateTime::now_utc()
        )
        .is_empty());
        let v = assess(
            &w,
            &mut st,
            &none,
            &|_| false,
            &opts,
            OffsetDateTime::now_utc(),
        );
        assert_eq!(v.len(), 1);
        assert!(v[0]
            .message
            .contains("was deleted before its worker delivered"));
        // Before a pod was ever seen, an empty list is just the API catching up.
        let mut fresh = MonitorState::default();
        for _ in 0..3 {
            assert!(assess(
                &w,
                &mut fresh,
                &none,
                &|_| false,
                &opts,
                OffsetDateTime::now_utc()
            )
            .is_empty());
        }
    }
}
