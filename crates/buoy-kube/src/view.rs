//! What a run knows of its cluster while its plugins run, kept current by watches instead of
//! polls (design departure 10): the run's plugin pods, each boiled down to a [`SeenPod`] as its
//! event arrives; the cluster's node names; and which plugin DaemonSets exist. Each kind is
//! listed once, 100 objects a page, then watched (kube-runtime's watcher: bookmarks, a re-list
//! after a gap, backoff after errors), so the API server sees a handful of requests for a
//! whole run instead of a list per plugin every 10 s, and at most one page of whole objects is
//! ever in memory. Monitors read the view; they never call the API.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::core::PartialObjectMeta;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::Api;
use tokio::sync::watch;

use crate::monitor::{Observation, SeenPod, Watched};

/// Objects per page of a watch's (re-)list.
const WATCH_PAGE: u32 = 100;

/// One watched kind, by UID: what the last complete list and the events since then say.
/// A re-list fills `listing` and replaces `current` only once it is whole, so a watch gap
/// never shows a half-listed cluster.
struct Synced<T> {
    current: Option<HashMap<String, T>>,
    listing: Option<HashMap<String, T>>,
}

impl<T> Default for Synced<T> {
    fn default() -> Self {
        Self {
            current: None,
            listing: None,
        }
    }
}

impl<T> Synced<T> {
    /// Applies one watcher event; `keep` turns an object into what is kept (`None`: skip it).
    fn event<K: kube::Resource>(&mut self, ev: Event<K>, keep: impl Fn(&K) -> Option<T>) {
        let uid = |k: &K| k.meta().uid.clone().unwrap_or_default();
        match ev {
            Event::Init => self.listing = Some(HashMap::new()),
            Event::InitApply(k) => {
                if let (Some(l), Some(v)) = (&mut self.listing, keep(&k)) {
                    l.insert(uid(&k), v);
                }
            }
            Event::InitDone => {
                if let Some(l) = self.listing.take() {
                    self.current = Some(l);
                }
            }
            Event::Apply(k) => {
                if let Some(c) = &mut self.current {
                    match keep(&k) {
                        Some(v) => {
                            c.insert(uid(&k), v);
                        }
                        None => {
                            c.remove(&uid(&k));
                        }
                    }
                }
            }
            Event::Delete(k) => {
                if let Some(c) = &mut self.current {
                    c.remove(&uid(&k));
                }
            }
        }
    }
}

#[derive(Default)]
struct ViewState {
    /// Plugin pods: `(session ID, what judging needs)`.
    pods: Synced<(String, SeenPod)>,
    nodes: Synced<String>,
    /// Plugin DaemonSets: their session IDs.
    daemonsets: Synced<String>,
}

/// The run's view of its cluster, shared by its monitors.
#[derive(Default)]
pub struct ClusterView {
    state: Mutex<ViewState>,
}

fn session(meta: &kube::api::ObjectMeta) -> Option<String> {
    meta.labels.as_ref()?.get("sonobuoy-run").cloned()
}

impl ClusterView {
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// What a poll would have seen of `w`'s objects now; `None` until its pods (and for a
    /// DaemonSet plugin, the DaemonSets) have been listed once.
    pub fn observation(&self, w: &Watched) -> Option<Observation> {
        let st = self.state.lock().expect("view state");
        let pods = st
            .pods
            .current
            .as_ref()?
            .values()
            .filter(|(sid, _)| *sid == w.sid)
            .map(|(_, p)| p.clone())
            .collect();
        let mut obs = Observation {
            pods,
            ..Default::default()
        };
        if w.driver == buoy_wire::manifest::Driver::DaemonSet {
            obs.daemonsets = st
                .daemonsets
                .current
                .as_ref()?
                .values()
                .filter(|sid| **sid == w.sid)
                .count();
            obs.nodes = st
                .nodes
                .current
                .as_ref()
                .map(|n| n.values().cloned().collect::<BTreeSet<String>>());
        }
        Some(obs)
    }

    pub(crate) fn pod_event(&self, ev: Event<Pod>) {
        self.state
            .lock()
            .expect("view state")
            .pods
            .event(ev, |p| Some((session(&p.metadata)?, SeenPod::of(p))));
    }

    pub(crate) fn node_event(&self, ev: Event<PartialObjectMeta<Node>>) {
        self.state
            .lock()
            .expect("view state")
            .nodes
            .event(ev, |n| n.metadata.name.clone());
    }

    pub(crate) fn daemonset_event(&self, ev: Event<PartialObjectMeta<DaemonSet>>) {
        self.state
            .lock()
            .expect("view state")
            .daemonsets
            .event(ev, |d| session(&d.metadata));
    }

    /// Starts the watches in `api`'s namespace (node names only when `nodes`), each ending
    /// when `stop` is set.
    pub fn watch(
        self: &Arc<Self>,
        api: &crate::api::KubeApi,
        nodes: bool,
        stop: watch::Receiver<bool>,
    ) {
        let selector = crate::api::PLUGIN_SELECTOR;
        let cfg = || {
            watcher::Config::default()
                .labels(selector)
                .page_size(WATCH_PAGE)
        };
        let pods: Api<Pod> = api.namespaced();
        let view = self.clone();
        spawn_watch("plugin pods", pods, cfg(), stop.clone(), move |ev| {
            view.pod_event(ev)
        });
        let sets: Api<PartialObjectMeta<DaemonSet>> = api.namespaced();
        let view = self.clone();
        spawn_watch("plugin daemonsets", sets, cfg(), stop.clone(), move |ev| {
            view.daemonset_event(ev)
        });
        if nodes {
            let all: Api<PartialObjectMeta<Node>> = api.cluster_wide();
            let view = self.clone();
            let cfg = watcher::Config::default().page_size(WATCH_PAGE);
            spawn_watch("node names", all, cfg, stop, move |ev| view.node_event(ev));
        }
    }
}

/// Runs one watch until `stop`, handing each event to `apply`. Errors are retried with the
/// watcher's backoff and logged once per kind of error while they last, not once per retry.
fn spawn_watch<K>(
    what: &'static str,
    api: Api<K>,
    cfg: watcher::Config,
    mut stop: watch::Receiver<bool>,
    apply: impl Fn(Event<K>) + Send + 'static,
) where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
    K::DynamicType: Default,
{
    tokio::spawn(async move {
        let mut events = watcher::watcher(api, cfg).default_backoff().boxed();
        let mut failing: Option<(String, u64)> = None;
        loop {
            let ev = tokio::select! {
                ev = events.next() => ev,
                _ = stop.wait_for(|s| *s) => return,
            };
            match ev {
                Some(Ok(ev)) => {
                    if let Some((error, times)) = failing.take() {
                        tracing::info!(watch = what, error = %error, failed = times, "watch recovered");
                    }
                    apply(ev);
                }
                Some(Err(e)) => {
                    let text = e.to_string();
                    match &mut failing {
                        Some((last, times)) if *last == text => *times += 1,
                        _ => {
                            tracing::warn!(watch = what, error = %text, "watch failed; retrying with backoff");
                            failing = Some((text, 1));
                        }
                    }
                }
                None => {
                    // The watcher's stream never ends on its own; if it does, start again.
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use buoy_wire::manifest::Driver;
    use serde_json::json;
    use time::OffsetDateTime;

    fn pod(uid: &str, sid: &str, node: &str, status: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": format!("p-{uid}"), "uid": uid, "labels": {"sonobuoy-run": sid}},
            "spec": {"containers": [], "nodeName": node}, "status": status}))
        .unwrap()
    }

    fn ds(uid: &str, sid: &str) -> PartialObjectMeta<DaemonSet> {
        serde_json::from_value(json!({"apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": {"name": format!("d-{uid}"), "uid": uid, "labels": {"sonobuoy-run": sid}}}))
        .unwrap()
    }

    fn node(uid: &str, name: &str) -> PartialObjectMeta<Node> {
        serde_json::from_value(
            json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "uid": uid}}),
        )
        .unwrap()
    }

    fn watched(driver: Driver, sid: &str) -> Watched {
        Watched {
            plugin: "p".into(),
            driver,
            sid: sid.into(),
            nodes: vec!["a".into(), "b".into()],
            launched: OffsetDateTime::now_utc(),
            timeout: None,
        }
    }

    #[test]
    fn nothing_is_judged_until_the_first_list_is_whole() {
        let v = ClusterView::new();
        let w = watched(Driver::Job, "s1");
        assert!(v.observation(&w).is_none());
        v.pod_event(Event::Init);
        v.pod_event(Event::InitApply(pod("1", "s1", "a", json!({}))));
        assert!(v.observation(&w).is_none(), "a half-done list was shown");
        v.pod_event(Event::InitDone);
        assert_eq!(v.observation(&w).unwrap().pods.len(), 1);
    }

    #[test]
    fn events_update_deletions_remove_and_a_relist_replaces_the_whole_set() {
        let v = ClusterView::new();
        let w = watched(Driver::DaemonSet, "s1");
        v.pod_event(Event::Init);
        v.pod_event(Event::InitApply(pod("1", "s1", "a", json!({}))));
        v.pod_event(Event::InitApply(pod("2", "s1", "b", json!({}))));
        v.pod_event(Event::InitApply(pod("3", "other", "a", json!({}))));
        v.pod_event(Event::InitDone);
        v.daemonset_event(Event::Init);
        v.daemonset_event(Event::InitApply(ds("d1", "s1")));
        v.daemonset_event(Event::InitDone);
        // Node names are optional: without a node list the monitor just does not check removal.
        let obs = v.observation(&w).unwrap();
        assert_eq!((obs.pods.len(), obs.daemonsets), (2, 1));
        assert!(obs.nodes.is_none());
        v.node_event(Event::Init);
        v.node_event(Event::InitApply(node("n1", "a")));
        v.node_event(Event::InitDone);
        assert_eq!(
            v.observation(&w)
                .unwrap()
                .nodes
                .unwrap()
                .into_iter()
                .collect::<Vec<_>>(),
            ["a"]
        );

        // A pod turns unschedulable: the next look judges it failing, with the whole pod.
        let stuck = json!({"conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "taints"}]});
        v.pod_event(Event::Apply(pod("2", "s1", "b", stuck)));
        let obs = v.observation(&w).unwrap();
        let failing: Vec<_> = obs
            .pods
            .iter()
            .filter(|p| p.failure(OffsetDateTime::now_utc()).is_some())
            .collect();
        assert_eq!(failing.len(), 1);
        assert!(failing[0].pod.is_some());
        v.pod_event(Event::Delete(pod("1", "s1", "a", json!({}))));
        assert_eq!(v.observation(&w).unwrap().pods.len(), 1);

        // After a watch gap the re-list is the truth: pod 2 went meanwhile, pod 4 came.
        v.pod_event(Event::Init);
        v.pod_event(Event::InitApply(pod("4", "s1", "a", json!({}))));
        assert_eq!(
            v.observation(&w).unwrap().pods.len(),
            1,
            "the old set stays until the list is whole"
        );
        v.pod_event(Event::InitDone);
        let obs = v.observation(&w).unwrap();
        assert_eq!(obs.pods.len(), 1);
        assert_eq!(obs.pods[0].node.as_deref(), Some("a"));
        assert!(obs.pods[0].failure(OffsetDateTime::now_utc()).is_none());
    }
}
