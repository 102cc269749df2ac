//! One pod on a played node, from binding to deletion: its volumes made on disk, its env
//! resolved, each container run as a local process in a mount namespace of its own (the
//! pod's volumes and the configured host files bound where the pod says), restarts as the
//! restart policy says, the status patched as containers start and end, and on deletion the
//! processes stopped and the pod removed. Or, on a node in play mode, the pod only marked
//! running and its worker's result uploaded in-process.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::kubelet::{ImageSpec, Inner, ObjectData};
use crate::EnvError;

/// What the watcher asks of a running pod: stop its containers within the grace period.
pub(crate) type StopSignal = watch::Receiver<Option<Duration>>;

fn now() -> String {
    time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .expect("zero nanoseconds")
        .format(&time::format_description::well_known::Rfc3339)
        .expect("a formattable time")
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

/// One container's state as the status shows it.
#[derive(Debug, Clone)]
struct ContainerState {
    name: String,
    image: String,
    restarts: u32,
    state: Value,
    last: Value,
    pid: Option<u32>,
    finished: bool,
}

/// What the pod's status is made of, shared by its containers' tasks.
struct PodState {
    containers: Vec<ContainerState>,
    started: String,
    dirty: bool,
}

impl PodState {
    /// Every container of the pod in `state`, the pod started at `started`.
    fn new(containers: &[Value], started: String, state: Value) -> Self {
        Self {
            containers: containers
                .iter()
                .map(|c| ContainerState {
                    name: s(&c["name"]).to_string(),
                    image: s(&c["image"]).to_string(),
                    restarts: 0,
                    state: state.clone(),
                    last: json!({}),
                    pid: None,
                    finished: false,
                })
                .collect(),
            started,
            dirty: true,
        }
    }
}

/// The pod's identity and the bits of it that env references and status patches read.
struct Ident {
    ns: String,
    name: String,
    uid: String,
    node: String,
    host_network: bool,
    pod: Value,
}

impl Ident {
    fn of(pod: &Pod) -> Self {
        let v = serde_json::to_value(pod).expect("a pod serialises");
        Self {
            ns: pod.metadata.namespace.clone().unwrap_or_default(),
            name: pod.metadata.name.clone().unwrap_or_default(),
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            node: s(&v["spec"]["nodeName"]).to_string(),
            host_network: v["spec"]["hostNetwork"].as_bool().unwrap_or(false),
            pod: v,
        }
    }

    fn field(&self, path: &str) -> Option<String> {
        let p = &self.pod;
        let label = |kind: &str, path: &str| {
            let key = path
                .strip_prefix(&format!("metadata.{kind}['"))?
                .strip_suffix("']")?;
            Some(s(&p["metadata"][kind][key]).to_string())
        };
        Some(match path {
            "metadata.name" => self.name.clone(),
            "metadata.namespace" => self.ns.clone(),
            "metadata.uid" => self.uid.clone(),
            "spec.nodeName" => self.node.clone(),
            "spec.serviceAccountName" => s(&p["spec"]["serviceAccountName"]).to_string(),
            "status.podIP" | "status.hostIP" => "127.0.0.1".to_string(),
            other => label("labels", other).or_else(|| label("annotations", other))?,
        })
    }
}

/// `$(VAR)` references expanded from `env` as the kubelet does.
fn expand(text: &str, env: &BTreeMap<String, String>) -> String {
    buoy_wire::manifest::expand_env_refs(text, |name| env.get(name).map(String::as_str))
}

pub(crate) struct PodRun {
    pub inner: Arc<Inner>,
    pub pod: Pod,
    pub dir: PathBuf,
    pub pids: Arc<Mutex<Vec<(String, u32)>>>,
    /// Read each Secret and ConfigMap once for every pod (played pods, thousands of which
    /// share a plugin's Secret); a pod that runs reads them fresh, as they are now.
    pub cached: bool,
}

async fn get_json(client: &Client, path: &str) -> Result<Value, EnvError> {
    let req = http::Request::get(path)
        .body(Vec::new())
        .expect("a GET request");
    Ok(client.request::<Value>(req).await?)
}

/// The data of a ConfigMap or Secret (Secret values base64-decoded); with `cached`, what an
/// earlier read of the same name got.
async fn object_data(
    inner: &Inner,
    cached: bool,
    ns: &str,
    kind: &str,
    name: &str,
) -> Result<Arc<ObjectData>, EnvError> {
    let key = format!("{ns}/{kind}/{name}");
    if !cached {
        return Ok(Arc::new(
            read_object_data(&inner.client, ns, kind, name).await?,
        ));
    }
    if let Some(d) = inner.objects.lock().expect("object cache").get(&key) {
        return Ok(d.clone());
    }
    let d = Arc::new(read_object_data(&inner.client, ns, kind, name).await?);
    inner
        .objects
        .lock()
        .expect("object cache")
        .insert(key, d.clone());
    Ok(d)
}

async fn read_object_data(
    client: &Client,
    ns: &str,
    kind: &str,
    name: &str,
) -> Result<BTreeMap<String, Vec<u8>>, EnvError> {
    let v = get_json(client, &format!("/api/v1/namespaces/{ns}/{kind}/{name}")).await?;
    let mut out = BTreeMap::new();
    for (k, val) in v["data"].as_object().into_iter().flatten() {
        let bytes = if kind == "secrets" {
            base64::engine::general_purpose::STANDARD
                .decode(s(val))
                .unwrap_or_default()
        } else {
            s(val).as_bytes().to_vec()
        };
        out.insert(k.clone(), bytes);
    }
    if kind == "configmaps" {
        for (k, val) in v["binaryData"].as_object().into_iter().flatten() {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(s(val))
                .unwrap_or_default();
            out.insert(k.clone(), bytes);
        }
    }
    Ok(out)
}

fn write_file(dir: &Path, rel: &str, data: &[u8]) -> Result<(), EnvError> {
    let path = dir.join(rel.trim_start_matches('/'));
    let io = |source| EnvError::Io {
        context: format!("cannot write {}", path.display()),
        source,
    };
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p).map_err(io)?;
    }
    std::fs::write(&path, data).map_err(io)
}

/// Writes a ConfigMap's or Secret's keys (or the chosen `items`) into `dir`.
fn write_items(
    dir: &Path,
    data: &BTreeMap<String, Vec<u8>>,
    items: &Value,
) -> Result<(), EnvError> {
    match items.as_array() {
        Some(items) => {
            for it in items {
                if let Some(d) = data.get(s(&it["key"])) {
                    write_file(dir, s(&it["path"]), d)?;
                }
            }
        }
        None => {
            for (k, d) in data {
                write_file(dir, k, d)?;
            }
        }
    }
    Ok(())
}

impl PodRun {
    fn client(&self) -> &Client {
        &self.inner.client
    }

    /// Makes every volume on disk; returns each volume's host directory (or file).
    async fn volumes(&self, id: &Ident) -> Result<BTreeMap<String, PathBuf>, EnvError> {
        let mut out = BTreeMap::new();
        let spec = &id.pod["spec"];
        for v in spec["volumes"].as_array().into_iter().flatten() {
            let name = s(&v["name"]).to_string();
            let dir = self.dir.join("volumes").join(&name);
            let mkdir = |d: &Path| {
                std::fs::create_dir_all(d).map_err(|source| EnvError::Io {
                    context: format!("cannot make {}", d.display()),
                    source,
                })
            };
            if v.get("emptyDir").is_some() {
                mkdir(&dir)?;
            } else if let Some(h) = v.get("hostPath") {
                out.insert(name, PathBuf::from(s(&h["path"])));
                continue;
            } else if let Some(c) = v.get("configMap") {
                mkdir(&dir)?;
                self.project(id, &dir, "configmaps", &c["name"], c).await?;
            } else if let Some(c) = v.get("secret") {
                mkdir(&dir)?;
                self.project(id, &dir, "secrets", &c["secretName"], c)
                    .await?;
            } else if let Some(d) = v.get("downwardAPI") {
                mkdir(&dir)?;
                self.downward(id, &dir, &d["items"])?;
            } else if let Some(p) = v.get("projected") {
                mkdir(&dir)?;
                for src in p["sources"].as_array().into_iter().flatten() {
                    if let Some(t) = src.get("serviceAccountToken") {
                        let token = self.token(id, t).await?;
                        write_file(&dir, s(&t["path"]), token.as_bytes())?;
                    } else if let Some(c) = src.get("configMap") {
                        self.project(id, &dir, "configmaps", &c["name"], c).await?;
                    } else if let Some(c) = src.get("secret") {
                        self.project(id, &dir, "secrets", &c["name"], c).await?;
                    } else if let Some(d) = src.get("downwardAPI") {
                        self.downward(id, &dir, &d["items"])?;
                    }
                }
            } else {
                return Err(EnvError::Kube(format!(
                    "volume {name}: a kind the stand-in kubelet does not make"
                )));
            }
            out.insert(name, dir);
        }
        Ok(out)
    }

    /// Writes a ConfigMap's or Secret's keys (`source`'s `items`, else all) into `dir`; a
    /// missing one is no error when `source` says it is optional.
    async fn project(
        &self,
        id: &Ident,
        dir: &Path,
        kind: &str,
        name: &Value,
        source: &Value,
    ) -> Result<(), EnvError> {
        match object_data(&self.inner, self.cached, &id.ns, kind, s(name)).await {
            Ok(data) => write_items(dir, &data, &source["items"]),
            Err(_) if source["optional"] == true => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// One key of a Secret or ConfigMap (`r`: its name, key and whether it is optional).
    async fn key_ref(&self, id: &Ident, kind: &str, r: &Value) -> Result<String, EnvError> {
        match object_data(&self.inner, self.cached, &id.ns, kind, s(&r["name"])).await {
            Ok(d) => Ok(
                String::from_utf8_lossy(d.get(s(&r["key"])).map_or(&[][..], |v| v)).into_owned(),
            ),
            Err(_) if r["optional"] == true => Ok(String::new()),
            Err(e) => Err(e),
        }
    }

    fn downward(&self, id: &Ident, dir: &Path, items: &Value) -> Result<(), EnvError> {
        for it in items.as_array().into_iter().flatten() {
            let value = id
                .field(s(&it["fieldRef"]["fieldPath"]))
                .unwrap_or_default();
            write_file(dir, s(&it["path"]), value.as_bytes())?;
        }
        Ok(())
    }

    /// A token for the pod's service account, bound to the pod (TokenRequest).
    async fn token(&self, id: &Ident, source: &Value) -> Result<String, EnvError> {
        let sa = match s(&id.pod["spec"]["serviceAccountName"]) {
            "" => "default",
            n => n,
        };
        let mut spec = json!({
            "expirationSeconds": source["expirationSeconds"].as_i64().unwrap_or(3607),
            "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": id.name, "uid": id.uid},
        });
        if let Some(a) = source["audience"].as_str() {
            spec["audiences"] = json!([a]);
        }
        let body =
            json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec});
        let req = http::Request::post(format!(
            "/api/v1/namespaces/{}/serviceaccounts/{sa}/token",
            id.ns
        ))
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(serde_json::to_vec(&body).expect("JSON"))
        .expect("a POST request");
        let v: Value = self.client().request(req).await?;
        Ok(s(&v["status"]["token"]).to_string())
    }

    /// A container's environment: the kubelet's service variables, then `envFrom`, then `env`
    /// in order (later wins, `$(VAR)` expanded from what came before).
    async fn env(
        &self,
        id: &Ident,
        c: &Value,
        image: Option<&ImageSpec>,
    ) -> Result<BTreeMap<String, String>, EnvError> {
        // The image's own ENV first; the pod's env overrides it.
        let mut env: BTreeMap<String, String> = image
            .map(|i| i.env.iter().cloned().collect())
            .unwrap_or_default();
        let port = self.inner.opts.api_server_port.to_string();
        env.insert("KUBERNETES_SERVICE_HOST".into(), "127.0.0.1".into());
        env.insert("KUBERNETES_SERVICE_PORT".into(), port.clone());
        env.insert("KUBERNETES_SERVICE_PORT_HTTPS".into(), port.clone());
        env.insert("KUBERNETES_PORT".into(), format!("tcp://127.0.0.1:{port}"));
        env.insert(
            "HOSTNAME".into(),
            if id.host_network {
                id.node.clone()
            } else {
                id.name.clone()
            },
        );
        for from in c["envFrom"].as_array().into_iter().flatten() {
            let prefix = s(&from["prefix"]);
            let (kind, r) = match (from.get("configMapRef"), from.get("secretRef")) {
                (Some(r), _) => ("configmaps", r),
                (_, Some(r)) => ("secrets", r),
                _ => continue,
            };
            match object_data(&self.inner, self.cached, &id.ns, kind, s(&r["name"])).await {
                Ok(data) => {
                    for (k, v) in data.iter() {
                        env.insert(format!("{prefix}{k}"), String::from_utf8_lossy(v).into());
                    }
                }
                Err(_) if r["optional"] == true => {}
                Err(e) => return Err(e),
            }
        }
        for e in c["env"].as_array().into_iter().flatten() {
            let name = s(&e["name"]).to_string();
            let value = if let Some(v) = e.get("value") {
                expand(s(v), &env)
            } else if let Some(f) = e.pointer("/valueFrom/fieldRef") {
                id.field(s(&f["fieldPath"])).unwrap_or_default()
            } else if let Some(r) = e.pointer("/valueFrom/secretKeyRef") {
                self.key_ref(id, "secrets", r).await?
            } else if let Some(r) = e.pointer("/valueFrom/configMapKeyRef") {
                self.key_ref(id, "configmaps", r).await?
            } else {
                String::new()
            };
            env.insert(name, value);
        }
        Ok(env)
    }

    /// Patches the pod's status from `st`.
    async fn patch_status(&self, id: &Ident, st: &PodState, phase: &str) {
        let statuses: Vec<Value> = st
            .containers
            .iter()
            .map(|c| {
                let running = c.state.get("running").is_some();
                json!({
                    "name": c.name, "image": c.image, "imageID": format!("buoy-testenv://{}", c.image),
                    "containerID": c.pid.map(|p| format!("buoy-testenv://{p}")),
                    "ready": running, "started": running, "restartCount": c.restarts,
                    "state": c.state, "lastState": c.last,
                })
            })
            .collect();
        let ready = if phase == "Running"
            && st
                .containers
                .iter()
                .all(|c| c.state.get("running").is_some())
        {
            "True"
        } else {
            "False"
        };
        let cond = |t: &str, status: &str| json!({"type": t, "status": status, "lastTransitionTime": st.started});
        let body = json!({"status": {
            "phase": phase, "hostIP": "127.0.0.1", "podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}],
            "startTime": st.started,
            "conditions": [cond("Initialized", "True"), cond("Ready", ready), cond("ContainersReady", ready), cond("PodScheduled", "True")],
            "containerStatuses": statuses,
        }});
        let api: kube::Api<Pod> = kube::Api::namespaced(self.client().clone(), &id.ns);
        if let Err(e) = api
            .patch_status(
                &id.name,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(&body),
            )
            .await
        {
            tracing::debug!(pod = %id.name, error = %e, "stand-in kubelet: status patch failed");
        }
    }

    /// Runs the pod until `stop` says so or its containers are all done for good.
    pub async fn run(self, mut stop: StopSignal) {
        let id = Ident::of(&self.pod);
        let started = now();
        let containers: Vec<Value> = id.pod["spec"]["containers"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let state = Arc::new(Mutex::new(PodState::new(
            &containers,
            started,
            json!({"waiting": {"reason": "ContainerCreating"}}),
        )));
        // Volumes and env are made before any container starts; a missing Secret or
        // ConfigMap is waited for, as the kubelet does.
        let prepared = loop {
            match self.prepare(&id, &containers).await {
                Ok(p) => break Some(p),
                Err(e) => {
                    tracing::debug!(pod = %id.name, error = %e, "stand-in kubelet: pod not ready to start");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = stop.changed() => break None,
                    }
                }
            }
        };
        let policy = match s(&id.pod["spec"]["restartPolicy"]) {
            "" => "Always",
            p => p,
        }
        .to_string();
        let mut tasks = Vec::new();
        if let Some(prepared) = prepared {
            for (i, (argv, env, mounts, workdir)) in prepared.into_iter().enumerate() {
                tasks.push(tokio::spawn(run_container(
                    i,
                    argv,
                    env,
                    mounts,
                    workdir,
                    self.dir
                        .join("logs")
                        .join(format!("{}.log", s(&containers[i]["name"]))),
                    policy.clone(),
                    state.clone(),
                    self.pids.clone(),
                    stop.clone(),
                )));
            }
        }
        // Status: patched whenever a container's state changed, until every task ended.
        let mut ticker = tokio::time::interval(Duration::from_millis(100));
        loop {
            ticker.tick().await;
            let (snapshot, all_done) = {
                let mut st = state.lock().expect("pod state");
                let done = st.containers.iter().all(|c| c.finished);
                let snap = st.dirty.then(|| PodState {
                    containers: st.containers.clone(),
                    started: st.started.clone(),
                    dirty: false,
                });
                st.dirty = false;
                (snap, done)
            };
            let stopping = stop.borrow().is_some();
            if let Some(snap) = snapshot {
                let phase = if all_done && !stopping && !tasks.is_empty() {
                    if snap
                        .containers
                        .iter()
                        .all(|c| c.state["terminated"]["exitCode"] == 0)
                    {
                        "Succeeded"
                    } else {
                        "Failed"
                    }
                } else {
                    "Running"
                };
                if !stopping {
                    self.patch_status(&id, &snap, phase).await;
                }
            }
            if tasks.iter().all(|t| t.is_finished()) && (stopping || all_done || tasks.is_empty()) {
                break;
            }
        }
        if stop.borrow().is_none() {
            // Done for good (Never, or OnFailure with every exit 0): the pod stays until
            // someone deletes it.
            let _ = stop.changed().await;
        }
        self.pids.lock().expect("pids").clear();
        // The kubelet's last word on a deleted pod: remove it for good.
        let api: kube::Api<Pod> = kube::Api::namespaced(self.client().clone(), &id.ns);
        let dp = kube::api::DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(kube::api::Preconditions {
                uid: Some(id.uid.clone()),
                resource_version: None,
            }),
            ..Default::default()
        };
        let _ = api.delete(&id.name, &dp).await;
        let _ = std::fs::remove_dir_all(&self.dir);
    }

    /// Per container: argv, env, mounts (host, target, read-only) and working directory.
    #[allow(clippy::type_complexity)]
    async fn prepare(
        &self,
        id: &Ident,
        containers: &[Value],
    ) -> Result<
        Vec<(
            Vec<String>,
            BTreeMap<String, String>,
            Vec<(PathBuf, PathBuf, bool)>,
            PathBuf,
        )>,
        EnvError,
    > {
        let volumes = self.volumes(id).await?;
        // Every pod shares the host's network, so the worker's progress port is one per pod
        // here (the same in all its containers), not the fixed 8099 of a real pod.
        let progress_port = crate::free_port().to_string();
        let mut out = Vec::new();
        for c in containers {
            let image = self.inner.opts.image(s(&c["image"]));
            let mut env = self.env(id, c, image).await?;
            if let Some(old) = env.get("SONOBUOY_PROGRESS_PORT").cloned() {
                // The pod's own port, wherever the pod says where its relay listens (e2e
                // passes `--progress-report-url=http://localhost:8099/progress`).
                for v in env.values_mut() {
                    for host in ["localhost", "127.0.0.1"] {
                        *v =
                            v.replace(&format!("{host}:{old}"), &format!("{host}:{progress_port}"));
                    }
                }
                env.insert("SONOBUOY_PROGRESS_PORT".into(), progress_port.clone());
            }
            let strings = |v: &Value| -> Option<Vec<String>> {
                v.as_array()
                    .map(|a| a.iter().map(|x| expand(s(x), &env)).collect())
            };
            let (command, args) = (strings(&c["command"]), strings(&c["args"]));
            let mut argv = match (command, image) {
                (Some(cmd), _) => cmd,
                (None, Some(ImageSpec { entrypoint, .. })) => entrypoint.clone(),
                (None, None) => {
                    return Err(EnvError::Kube(format!(
                    "container {} has no command and image {} is not known to the stand-in kubelet",
                    s(&c["name"]),
                    s(&c["image"])
                )))
                }
            };
            match (args, image) {
                (Some(a), _) => argv.extend(a),
                (None, Some(i)) if c["command"].is_null() => argv.extend(i.args.iter().cloned()),
                _ => {}
            }
            let mut mounts: Vec<(PathBuf, PathBuf, bool)> = Vec::new();
            for (target, host) in &self.inner.opts.binds {
                mounts.push((host.clone(), target.clone(), true));
            }
            if let Some(i) = image {
                for (target, host) in &i.binds {
                    mounts.push((host.clone(), target.clone(), true));
                }
            }
            for m in c["volumeMounts"].as_array().into_iter().flatten() {
                let Some(host) = volumes.get(s(&m["name"])) else {
                    continue;
                };
                let mut host = host.clone();
                if let Some(sub) = m["subPath"].as_str().filter(|p| !p.is_empty()) {
                    host = host.join(sub);
                    if !host.exists() {
                        let _ = std::fs::create_dir_all(&host);
                    }
                }
                mounts.push((
                    host,
                    PathBuf::from(s(&m["mountPath"])),
                    m["readOnly"] == true,
                ));
            }
            let workdir = PathBuf::from(match s(&c["workingDir"]) {
                "" => "/",
                w => w,
            });
            out.push((argv, env, mounts, workdir));
        }
        Ok(out)
    }
}

/// Where `target` must exist on the host before it is mounted over, given the mounts made
/// before it in the container's namespace (a mount inside another volume goes in that
/// volume's directory).
fn mount_point(target: &Path, earlier: &[(PathBuf, PathBuf, bool)]) -> PathBuf {
    for (host, t, _) in earlier.iter().rev() {
        if let Ok(rest) = target.strip_prefix(t) {
            if host.is_dir() {
                return host.join(rest);
            }
        }
    }
    target.to_path_buf()
}

/// Makes each mount point (a directory, or an empty file for a file) and orders the mounts
/// so that one inside another comes after it.
fn plan_mounts(mut mounts: Vec<(PathBuf, PathBuf, bool)>) -> Vec<(CString, CString, bool)> {
    mounts.sort_by_key(|(_, t, _)| t.components().count());
    let mut done: Vec<(PathBuf, PathBuf, bool)> = Vec::new();
    let mut out = Vec::new();
    for (host, target, ro) in mounts {
        let point = mount_point(&target, &done);
        if host.is_dir() {
            let _ = std::fs::create_dir_all(&point);
        } else if !point.exists() {
            if let Some(p) = point.parent() {
                let _ = std::fs::create_dir_all(p);
            }
            let _ = std::fs::File::create(&point);
        }
        let c = |p: &Path| CString::new(p.as_os_str().as_bytes()).expect("no NUL in a path");
        out.push((c(&host), c(&target), ro));
        done.push((host, target, ro));
    }
    out
}

/// mount(2) with no file system type or data; `false` on failure (errno says why).
fn mount(source: Option<&std::ffi::CStr>, target: &std::ffi::CStr, flags: libc::c_ulong) -> bool {
    let source = source.map_or(std::ptr::null(), |s| s.as_ptr());
    // SAFETY: both strings are NUL-terminated and outlive the call; null type and data are
    // allowed for bind mounts and propagation changes.
    unsafe {
        libc::mount(
            source,
            target.as_ptr(),
            std::ptr::null(),
            flags,
            std::ptr::null(),
        ) == 0
    }
}

/// Starts one container process: its own session (so the whole process group can be
/// signalled), its own mount namespace with the mounts, killed if the kubelet's thread ends.
fn spawn_container(
    argv: &[String],
    env: &BTreeMap<String, String>,
    mounts: &[(PathBuf, PathBuf, bool)],
    workdir: &Path,
    log: &Path,
) -> std::io::Result<tokio::process::Child> {
    let plan = plan_mounts(mounts.to_vec());
    let workdir = CString::new(workdir.as_os_str().as_bytes()).expect("no NUL in a path");
    if let Some(p) = log.parent() {
        std::fs::create_dir_all(p)?;
    }
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    let err = out.try_clone()?;
    let program = argv.first().cloned().unwrap_or_default();
    let mut cmd = tokio::process::Command::new(&program);
    cmd.args(&argv[1..])
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .envs(env)
        .stdin(std::process::Stdio::null())
        .stdout(out)
        .stderr(err)
        .kill_on_drop(false);
    // SAFETY: between fork and exec only async-signal-safe system calls run, on memory
    // prepared before the fork.
    unsafe {
        cmd.pre_exec(move || {
            let fail = || Err(std::io::Error::last_os_error());
            if libc::setsid() < 0 {
                return fail();
            }
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            if libc::unshare(libc::CLONE_NEWNS) != 0 {
                return fail();
            }
            // Nothing mounted here reaches the host's namespace.
            if !mount(None, c"/", libc::MS_REC | libc::MS_PRIVATE) {
                return fail();
            }
            for (host, target, ro) in &plan {
                if !mount(Some(host), target, libc::MS_BIND | libc::MS_REC)
                    || (*ro
                        && !mount(
                            None,
                            target,
                            libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY,
                        ))
                {
                    return fail();
                }
            }
            if libc::chdir(workdir.as_ptr()) != 0 {
                return fail();
            }
            Ok(())
        });
    }
    cmd.spawn()
}

/// Runs one container with restarts as `policy` says (Always, OnFailure, Never), backing
/// off 1, 2, 4 and then 8 s between restarts, until it is done for good or `stop` says so.
#[allow(clippy::too_many_arguments)]
async fn run_container(
    index: usize,
    argv: Vec<String>,
    env: BTreeMap<String, String>,
    mounts: Vec<(PathBuf, PathBuf, bool)>,
    workdir: PathBuf,
    log: PathBuf,
    policy: String,
    state: Arc<Mutex<PodState>>,
    pids: Arc<Mutex<Vec<(String, u32)>>>,
    mut stop: StopSignal,
) {
    let name = state.lock().expect("pod state").containers[index]
        .name
        .clone();
    let mut backoff = Duration::from_secs(1);
    loop {
        if stop.borrow().is_some() {
            break;
        }
        let started = now();
        let (code, reason, message) = match spawn_container(&argv, &env, &mounts, &workdir, &log) {
            Ok(mut child) => {
                let pid = child.id().unwrap_or_default();
                pids.lock().expect("pids").push((name.clone(), pid));
                {
                    let mut st = state.lock().expect("pod state");
                    let c = &mut st.containers[index];
                    c.state = json!({"running": {"startedAt": started}});
                    c.pid = Some(pid);
                    st.dirty = true;
                }
                let status = tokio::select! {
                    s = child.wait() => s.ok(),
                    grace = stopped(&mut stop) => stop_group(pid, &mut child, grace).await,
                };
                pids.lock().expect("pids").retain(|(_, p)| *p != pid);
                use std::os::unix::process::ExitStatusExt;
                let code = status
                    .map(|s| s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(9)))
                    .unwrap_or(137);
                let reason = if code == 0 { "Completed" } else { "Error" };
                (code, reason.to_string(), String::new())
            }
            Err(e) => (128, "StartError".to_string(), e.to_string()),
        };
        let stopping = stop.borrow().is_some();
        let again = !stopping
            && match policy.as_str() {
                "Always" => true,
                "OnFailure" => code != 0,
                _ => false,
            };
        {
            let mut st = state.lock().expect("pod state");
            let c = &mut st.containers[index];
            let terminated = json!({"terminated": {"exitCode": code, "reason": reason, "message": message,
                "startedAt": started, "finishedAt": now()}});
            if again {
                c.last = terminated;
                c.restarts += 1;
                c.state = json!({"waiting": {"reason": "CrashLoopBackOff"}});
            } else {
                c.state = terminated;
                c.finished = true;
            }
            c.pid = None;
            st.dirty = true;
        }
        if !again {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stopped(&mut stop) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(8));
    }
    state.lock().expect("pod state").containers[index].finished = true;
}

/// Waits until the pod is to stop; the grace period it is given.
async fn stopped(stop: &mut StopSignal) -> Duration {
    stop.wait_for(|s| s.is_some())
        .await
        .map(|g| g.unwrap_or_default())
        .unwrap_or_default()
}

/// SIGTERM to the container's process group, SIGKILL once `grace` (at most 10 s) passed.
async fn stop_group(
    pid: u32,
    child: &mut tokio::process::Child,
    grace: Duration,
) -> Option<std::process::ExitStatus> {
    // SAFETY: kill(2) on the process group our child leads.
    unsafe {
        libc::kill(-(pid as i32), libc::SIGTERM);
    }
    match tokio::time::timeout(grace.min(Duration::from_secs(10)), child.wait()).await {
        Ok(s) => {
            // What the leader left behind goes with it.
            unsafe {
                libc::kill(-(pid as i32), libc::SIGKILL);
            }
            s.ok()
        }
        Err(_) => {
            unsafe {
                libc::kill(-(pid as i32), libc::SIGKILL);
            }
            child.wait().await.ok()
        }
    }
}

/// A pod on a node in play mode: marked running, its worker's result (a small text file)
/// uploaded with the pod's own credentials, then left running until deleted.
pub(crate) async fn play(inner: Arc<Inner>, pod: Pod, mut stop: StopSignal) {
    // Only the pod's name outlives its upload: thousands of played pods wait at once.
    let (ns, name) = play_once(inner.clone(), pod).await;
    stopped(&mut stop).await;
    let api: kube::Api<Pod> = kube::Api::namespaced(inner.client.clone(), &ns);
    let dp = kube::api::DeleteParams {
        grace_period_seconds: Some(0),
        ..Default::default()
    };
    let _ = api.delete(&name, &dp).await;
}

/// Marks a played pod running and uploads its worker's result; its namespace and name.
async fn play_once(inner: Arc<Inner>, pod: Pod) -> (String, String) {
    let id = Ident::of(&pod);
    let run = PodRun {
        inner: inner.clone(),
        pod,
        dir: PathBuf::new(),
        pids: Default::default(),
        cached: true,
    };
    let containers: Vec<Value> = id.pod["spec"]["containers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let started = now();
    let st = PodState::new(
        &containers,
        started.clone(),
        json!({"running": {"startedAt": started}}),
    );
    {
        let _slot = inner.play_slots.acquire().await.expect("slots never close");
        run.patch_status(&id, &st, "Running").await;
        if let Some(worker) = containers.iter().find(|c| c["name"] == "sonobuoy-worker") {
            match run
                .env(&id, worker, inner.opts.image(s(&worker["image"])))
                .await
            {
                Ok(env) => upload(&inner, &id, &env).await,
                Err(e) => {
                    tracing::warn!(pod = %id.name, error = %e, "stand-in kubelet: no env for the played worker")
                }
            }
        }
    }
    (id.ns, id.name)
}

async fn upload(inner: &Inner, id: &Ident, env: &BTreeMap<String, String>) {
    let cfg = match buoy_worker::WorkerConfig::from_lookup(|k| {
        env.get(k).cloned().filter(|v| !v.is_empty())
    }) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(pod = %id.name, error = %e, "stand-in kubelet: the played worker's env is not usable");
            return;
        }
    };
    let mode = if cfg.node_name.is_empty()
        || id.pod["metadata"]["ownerReferences"][0]["kind"] != "DaemonSet"
    {
        buoy_worker::Mode::Global
    } else {
        buoy_worker::Mode::SingleNode
    };
    let client = match cfg.client() {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(pod = %id.name, error = %e, "stand-in kubelet: no client for the played worker");
            return;
        }
    };
    if let Err(e) = buoy_worker::upload::send_file(&cfg, mode, &client, &inner.played_result).await
    {
        tracing::warn!(pod = %id.name, error = %e, "stand-in kubelet: the played upload failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mount_inside_another_volume_gets_its_point_in_that_volume() {
        let vol = tempfile::tempdir().unwrap();
        let earlier = vec![(
            vol.path().to_path_buf(),
            PathBuf::from("/tmp/sonobuoy"),
            false,
        )];
        assert_eq!(
            mount_point(Path::new("/tmp/sonobuoy/results"), &earlier),
            vol.path().join("results")
        );
        assert_eq!(
            mount_point(Path::new("/etc/sonobuoy"), &earlier),
            PathBuf::from("/etc/sonobuoy")
        );
    }
}
