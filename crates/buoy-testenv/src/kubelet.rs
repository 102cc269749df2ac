//! The stand-in kubelet: plays every node labelled `buoy-testenv/kubelet` (`run`: pods run as
//! processes, `play`: pods marked running and their worker's upload made in-process, `down`:
//! pods bound there never start, as on a node whose kubelet died). It watches bound pods in
//! every namespace, starts what lands on its nodes, stops what is deleted, and serves
//! container logs to the API server.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::Client;
use serde_json::json;
use tokio::sync::{watch, Semaphore};

use crate::certs::Pair;
use crate::pod::{self, PodRun};
use crate::EnvError;

/// The node label saying how the stand-in kubelet plays a node.
pub const MODE_LABEL: &str = "buoy-testenv/kubelet";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeMode {
    /// Pods run as local processes.
    Run,
    /// Pods are marked running and their worker's result is uploaded in-process: thousands
    /// of nodes on one machine.
    Play,
    /// Pods bound here never start.
    Down,
}

impl NodeMode {
    fn label(self) -> &'static str {
        match self {
            Self::Run => "run",
            Self::Play => "play",
            Self::Down => "down",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "run" => Some(Self::Run),
            "play" => Some(Self::Play),
            "down" => Some(Self::Down),
            _ => None,
        }
    }
}

/// How an image runs when a container gives no command, and host files bound into it.
#[derive(Debug, Clone, Default)]
pub struct ImageSpec {
    /// The image name without its tag (`registry.k8s.io/conformance`).
    pub name: String,
    pub entrypoint: Vec<String>,
    pub args: Vec<String>,
    /// `(path in the container, host path)`.
    pub binds: Vec<(PathBuf, PathBuf)>,
    /// The image's `ENV`, under the pod's env.
    pub env: Vec<(String, String)>,
}

#[derive(Debug, Clone, Default)]
pub struct KubeletOptions {
    /// How long the log endpoint waits before answering (a slow node, to widen the window in
    /// which a test can catch gathering under way).
    pub log_delay: Duration,
    /// Where each pod's directory (volumes, logs) is made.
    pub root: PathBuf,
    /// `(path in the container, host path)` bound into every container (e.g. `/sonobuoy`).
    pub binds: Vec<(PathBuf, PathBuf)>,
    pub images: Vec<ImageSpec>,
    /// The API server's port, given to containers as `KUBERNETES_SERVICE_PORT`.
    pub api_server_port: u16,
    /// Played pods uploading at once.
    pub play_concurrency: usize,
}

impl KubeletOptions {
    pub(crate) fn image(&self, image: &str) -> Option<&ImageSpec> {
        let name = match image.rsplit_once(':') {
            Some((n, tag)) if !tag.contains('/') => n,
            _ => image,
        };
        let name = name.split('@').next().unwrap_or(name);
        self.images.iter().find(|i| i.name == name)
    }
}

/// A ConfigMap's or Secret's data, by key.
pub(crate) type ObjectData = BTreeMap<String, Vec<u8>>;

/// One pod the kubelet started: how to stop it and what runs in it.
struct Entry {
    ns: String,
    name: String,
    dir: PathBuf,
    stop: watch::Sender<Option<Duration>>,
    pids: Arc<Mutex<Vec<(String, u32)>>>,
}

pub(crate) struct Inner {
    pub client: Client,
    pub opts: KubeletOptions,
    pub play_slots: Semaphore,
    pub played_result: PathBuf,
    pods: Mutex<HashMap<String, Entry>>,
    nodes: Mutex<HashMap<String, NodeMode>>,
    /// ConfigMap and Secret data by `ns/kind/name`, read once for played pods.
    pub objects: Mutex<HashMap<String, Arc<ObjectData>>>,
    pub log_port: u16,
}

impl Inner {
    /// The pod directory of `ns/name` while the kubelet runs it.
    pub(crate) fn pod_dir(&self, ns: &str, name: &str) -> Option<PathBuf> {
        self.pods
            .lock()
            .expect("pods")
            .values()
            .find(|e| e.ns == ns && e.name == name)
            .map(|e| e.dir.clone())
    }
}

/// A running stand-in kubelet; dropping it stops watching (running pods are left as they
/// are).
pub struct Kubelet {
    inner: Arc<Inner>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Kubelet {
    /// Stops watching and kills every container's process group at once: nothing a test
    /// started outlives it, whatever runtime is left to run the pods' tasks.
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        for e in self.inner.pods.lock().expect("pods").values() {
            let _ = e.stop.send(Some(Duration::ZERO));
            for (_, pid) in e.pids.lock().expect("pids").iter() {
                // SAFETY: kill(2) on a process group this kubelet started.
                unsafe {
                    libc::kill(-(*pid as i32), libc::SIGKILL);
                }
            }
        }
    }
}

impl Kubelet {
    /// Starts watching pods and nodes and serving logs with `serving`'s certificate.
    pub async fn start(
        client: Client,
        opts: KubeletOptions,
        serving: &Pair,
    ) -> Result<Self, EnvError> {
        std::fs::create_dir_all(&opts.root).map_err(|source| EnvError::Io {
            context: format!("cannot make {}", opts.root.display()),
            source,
        })?;
        let played_result = opts.root.join("played-result.txt");
        std::fs::write(&played_result, "played by the buoy-testenv kubelet\n").map_err(
            |source| EnvError::Io {
                context: "cannot write the played result".into(),
                source,
            },
        )?;
        let (log_port, log_server) = crate::logs::serve(serving).await?;
        let inner = Arc::new(Inner {
            client,
            play_slots: Semaphore::new(opts.play_concurrency.max(1)),
            opts,
            played_result,
            pods: Mutex::new(HashMap::new()),
            nodes: Mutex::new(HashMap::new()),
            objects: Mutex::new(HashMap::new()),
            log_port,
        });
        let logs = tokio::spawn(log_server(inner.clone()));
        let nodes = tokio::spawn(watch_nodes(inner.clone()));
        let pods = tokio::spawn(watch_pods(inner.clone()));
        Ok(Self {
            inner,
            tasks: vec![logs, nodes, pods],
        })
    }

    /// The port container logs are served on (each node's kubelet endpoint).
    pub fn log_port(&self) -> u16 {
        self.inner.log_port
    }

    /// The processes of `ns/pod` now: `(container, pid)`.
    pub fn pids(&self, ns: &str, pod: &str) -> Vec<(String, u32)> {
        pids_of(&self.inner, ns, pod)
    }

    /// The directory of `ns/pod` while it runs (its volumes under `volumes/<name>`, its
    /// containers' logs under `logs/`).
    pub fn pod_dir(&self, ns: &str, pod: &str) -> Option<PathBuf> {
        self.inner.pod_dir(ns, pod)
    }
}

pub(crate) fn pids_of(inner: &Inner, ns: &str, pod: &str) -> Vec<(String, u32)> {
    inner
        .pods
        .lock()
        .expect("pods")
        .values()
        .filter(|e| e.ns == ns && e.name == pod)
        .flat_map(|e| e.pids.lock().expect("pids").clone())
        .collect()
}

/// A Node object the stand-in kubelet plays in `mode`, with `labels` added.
pub fn node_object(name: &str, mode: NodeMode, labels: &BTreeMap<String, String>) -> Node {
    let mut l = json!({
        MODE_LABEL: mode.label(),
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "kubernetes.io/hostname": name,
    });
    for (k, v) in labels {
        l[k] = json!(v);
    }
    serde_json::from_value(
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": l}}),
    )
    .expect("a node")
}

/// Creates the nodes (ready, with room for many pods, their kubelet endpoint at
/// `log_port`), `concurrency` requests at a time.
pub async fn create_nodes(
    client: &Client,
    names: &[String],
    mode: NodeMode,
    labels: &BTreeMap<String, String>,
    log_port: u16,
    concurrency: usize,
) -> Result<(), EnvError> {
    let api: Api<Node> = Api::all(client.clone());
    let results: Vec<Result<(), EnvError>> = futures_util::stream::iter(names.iter().cloned())
        .map(|name| {
            let api = api.clone();
            async move {
                api.create(&PostParams::default(), &node_object(&name, mode, labels))
                    .await?;
                let now = time::OffsetDateTime::now_utc()
                    .replace_nanosecond(0)
                    .expect("zero nanoseconds")
                    .format(&time::format_description::well_known::Rfc3339)
                    .expect("a time");
                let room = json!({"cpu": "64", "memory": "512Gi", "pods": "250"});
                let status = json!({"status": {
                    "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                        "message": "played by the buoy-testenv kubelet", "lastHeartbeatTime": now, "lastTransitionTime": now}],
                    "capacity": room, "allocatable": room,
                    "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": name}],
                    "daemonEndpoints": {"kubeletEndpoint": {"Port": log_port}},
                    "nodeInfo": {"kubeletVersion": "v1.26.0", "kubeProxyVersion": "v1.26.0", "operatingSystem": "linux",
                        "architecture": "amd64", "containerRuntimeVersion": "buoy-testenv://0", "kernelVersion": "",
                        "osImage": "buoy-testenv", "machineID": "", "systemUUID": "", "bootID": ""},
                }});
                api.patch_status(&name, &PatchParams::default(), &kube::api::Patch::Merge(&status))
                    .await?;
                Ok(())
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    results.into_iter().collect()
}

async fn watch_nodes(inner: Arc<Inner>) {
    let api: Api<kube::core::PartialObjectMeta<Node>> = Api::all(inner.client.clone());
    let cfg = watcher::Config::default().labels(MODE_LABEL);
    let mut events = watcher::watcher(api, cfg).boxed();
    while let Some(ev) = events.next().await {
        let Ok(ev) = ev else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let mut nodes = inner.nodes.lock().expect("nodes");
        match ev {
            watcher::Event::Apply(n) | watcher::Event::InitApply(n) => {
                let mode = n
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| NodeMode::parse(l.get(MODE_LABEL)?));
                if let (Some(name), Some(mode)) = (n.metadata.name, mode) {
                    nodes.insert(name, mode);
                }
            }
            watcher::Event::Delete(n) => {
                if let Some(name) = n.metadata.name {
                    nodes.remove(&name);
                }
            }
            watcher::Event::Init | watcher::Event::InitDone => {}
        }
    }
}

/// How `node` is played: from the node watcher, else read now (a pod can be seen before its
/// node's event).
async fn mode_of(inner: &Inner, node: &str) -> Option<NodeMode> {
    if let Some(m) = inner.nodes.lock().expect("nodes").get(node) {
        return Some(*m);
    }
    let api: Api<Node> = Api::all(inner.client.clone());
    let n = api.get_metadata_opt(node).await.ok().flatten()?;
    let mode = NodeMode::parse(n.metadata.labels?.get(MODE_LABEL)?)?;
    inner
        .nodes
        .lock()
        .expect("nodes")
        .insert(node.to_string(), mode);
    Some(mode)
}

async fn watch_pods(inner: Arc<Inner>) {
    let api: Api<Pod> = Api::all(inner.client.clone());
    let cfg = watcher::Config::default()
        .fields("spec.nodeName!=")
        .page_size(200);
    let mut events = watcher::watcher(api, cfg).boxed();
    // The pods a re-list saw, to stop those that went while the watch was down.
    let mut listing: Option<HashSet<String>> = None;
    while let Some(ev) = events.next().await {
        let ev = match ev {
            Ok(ev) => ev,
            Err(e) => {
                tracing::debug!(error = %e, "stand-in kubelet: pod watch error");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        match ev {
            watcher::Event::Init => listing = Some(HashSet::new()),
            watcher::Event::InitApply(p) => {
                if let (Some(l), Some(uid)) = (&mut listing, p.metadata.uid.clone()) {
                    l.insert(uid);
                }
                seen(&inner, p).await;
            }
            watcher::Event::InitDone => {
                if let Some(l) = listing.take() {
                    let pods = inner.pods.lock().expect("pods");
                    for (uid, e) in pods.iter() {
                        if !l.contains(uid) {
                            let _ = e.stop.send(Some(Duration::ZERO));
                        }
                    }
                }
            }
            watcher::Event::Apply(p) => seen(&inner, p).await,
            watcher::Event::Delete(p) => {
                if let Some(uid) = &p.metadata.uid {
                    if let Some(e) = inner.pods.lock().expect("pods").remove(uid) {
                        let _ = e.stop.send(Some(Duration::ZERO));
                    }
                }
            }
        }
    }
}

/// A pod event: start the pod, or stop it when it is being deleted.
async fn seen(inner: &Arc<Inner>, p: Pod) {
    let Some(uid) = p.metadata.uid.clone() else {
        return;
    };
    let deleting = p.metadata.deletion_timestamp.is_some();
    let grace = Duration::from_secs(
        p.metadata
            .deletion_grace_period_seconds
            .unwrap_or(30)
            .max(0) as u64,
    );
    if let Some(e) = inner.pods.lock().expect("pods").get(&uid) {
        if deleting && e.stop.borrow().is_none() {
            let _ = e.stop.send(Some(grace));
        }
        return;
    }
    let node = p
        .spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .unwrap_or_default();
    let mode = match mode_of(inner, &node).await {
        Some(NodeMode::Down) | None => return,
        Some(m) => m,
    };
    let phase = p
        .status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_default();
    if deleting || phase == "Succeeded" || phase == "Failed" {
        if deleting {
            // Never started here (or started by a kubelet before this one): let it go.
            let api: Api<Pod> = Api::namespaced(
                inner.client.clone(),
                p.metadata.namespace.as_deref().unwrap_or("default"),
            );
            let dp = kube::api::DeleteParams {
                grace_period_seconds: Some(0),
                ..Default::default()
            };
            let _ = api
                .delete(p.metadata.name.as_deref().unwrap_or_default(), &dp)
                .await;
        }
        return;
    }
    let ns = p.metadata.namespace.clone().unwrap_or_default();
    let name = p.metadata.name.clone().unwrap_or_default();
    let dir = inner
        .opts
        .root
        .join(format!("{ns}_{name}_{}", &uid[..uid.len().min(8)]));
    let (stop_tx, stop_rx) = watch::channel(None);
    let pids: Arc<Mutex<Vec<(String, u32)>>> = Default::default();
    inner.pods.lock().expect("pods").insert(
        uid.clone(),
        Entry {
            ns,
            name,
            dir: dir.clone(),
            stop: stop_tx,
            pids: pids.clone(),
        },
    );
    let inner2 = inner.clone();
    tokio::spawn(async move {
        match mode {
            NodeMode::Play => pod::play(inner2.clone(), p, stop_rx).await,
            _ => {
                PodRun {
                    inner: inner2.clone(),
                    pod: p,
                    dir,
                    pids,
                    cached: false,
                }
                .run(stop_rx)
                .await
            }
        }
        inner2.pods.lock().expect("pods").remove(&uid);
    });
}

/// Reads `path` relative to a pod's directory (the log server's files).
pub(crate) fn pod_file(inner: &Inner, ns: &str, pod: &str, rel: &Path) -> Option<PathBuf> {
    Some(inner.pod_dir(ns, pod)?.join(rel))
}
