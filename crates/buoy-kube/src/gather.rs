//! What Sonobuoy gathers from the cluster once the plugins are done and before cleanup (compat
//! §3.6, §6.3 step 8): the listable resources (`resources/cluster/<g>_<v>_<r>.json`,
//! `resources/ns/<ns>/…`), pod logs (`podlogs/<ns>/<pod>/logs/<container>.txt`),
//! `serverversion.json`, `servergroups.json`, `meta/query-time.json`, and the v0.57 health
//! summary `meta/clusterhealth.json`.
//!
//! Memory stays bounded: lists are fetched a page at a time and written as they come, logs are
//! copied as they arrive, and the health summary is built on the way instead of by reading the
//! files back. Everything is written in a work directory beside the run directory and moved in
//! once written. Nothing here fails a run: a failed query is logged and recorded in
//! `query-time.json`, and the rest goes on (Sonobuoy gives up a whole namespace's logs, or all
//! resources, at the first error).

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use futures_util::AsyncReadExt;
use serde::Serialize;
use serde_json::{json, Value};

mod health;

use health::{add, node_health, pod_health, LineCounter};
pub use health::{ClusterHealth, HealthDetail, HealthInfo};

use crate::api::{query_escape, KubeApi};
use crate::config::GatherConfig;
use crate::error::KubeError;

/// Whole objects per page of a gathered list (a page of pods is about 1 MB).
const GATHER_PAGE: u32 = 100;
/// Pod logs fetched at once.
const LOG_CONCURRENCY: usize = 8;
/// Time between two pod-log reads starting: at most 100 a second, so thousands of pods' logs
/// never hammer the API server (and the kubelets it asks).
const LOG_INTERVAL: std::time::Duration = std::time::Duration::from_millis(10);

/// One listable resource, from discovery.
#[derive(Debug, Clone, PartialEq)]
struct Resource {
    group: String,
    version: String,
    name: String,
    kind: String,
    namespaced: bool,
}

impl Resource {
    fn path(&self, ns: Option<&str>) -> String {
        let root = if self.group.is_empty() {
            format!("/api/{}", self.version)
        } else {
            format!("/apis/{}/{}", self.group, self.version)
        };
        match ns {
            Some(ns) => format!("{root}/namespaces/{ns}/{}", self.name),
            None => format!("{root}/{}", self.name),
        }
    }

    fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `core_v1_nodes.json`: the core group is written `core`.
    fn file_name(&self) -> String {
        let group = if self.group.is_empty() {
            "core"
        } else {
            &self.group
        };
        format!("{group}_{}_{}.json", self.version, self.name)
    }

    fn is_core(&self, name: &str) -> bool {
        self.group.is_empty() && self.version == "v1" && self.name == name
    }
}

/// One line of `meta/query-time.json`. Sonobuoy marshals a Go `error` here, which comes out
/// as `{}`; Buoy writes its message.
#[derive(Debug, Serialize)]
struct QueryRecord {
    queryobj: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    namespace: String,
    time: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

fn text(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}

/// One page's URL: `base` with the page size, the selectors that are set, and the token of
/// the page before.
fn page_url(base: &str, selectors: &[(&str, &str)], cont: Option<&str>) -> String {
    let mut q = format!("{base}?limit={GATHER_PAGE}");
    for (name, value) in selectors.iter().filter(|(_, v)| !v.is_empty()) {
        q.push_str(&format!("&{name}={}", query_escape(value)));
    }
    if let Some(c) = cont {
        q.push_str(&format!("&continue={}", query_escape(c)));
    }
    q
}

/// The token of the next page, if the list goes on.
fn next_page(page: &Value) -> Option<String> {
    page["metadata"]["continue"]
        .as_str()
        .filter(|c| !c.is_empty())
        .map(str::to_string)
}

/// Lists `base` page by page with the selectors that are set, handing each page to `take`
/// before the next one is asked for.
async fn each_page(
    api: &KubeApi,
    base: &str,
    selectors: &[(&str, &str)],
    mut take: impl FnMut(Value) -> Result<(), KubeError>,
) -> Result<(), KubeError> {
    let mut cont: Option<String> = None;
    loop {
        let page = api
            .get_json(&page_url(base, selectors, cont.as_deref()))
            .await?;
        cont = next_page(&page);
        take(page)?;
        if cont.is_none() {
            return Ok(());
        }
    }
}

/// A path component taken from an object's name: refused if it could leave its directory.
fn safe_component(s: &str) -> Option<&str> {
    (!s.is_empty() && s != "." && s != ".." && !s.contains('/') && !s.contains('\0')).then_some(s)
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> KubeError + '_ {
    move |source| KubeError::Io {
        context: format!("cannot write {}", path.display()),
        source,
    }
}

/// One pod whose logs are wanted.
struct LogPod {
    namespace: String,
    name: String,
    containers: Vec<String>,
}

/// Copies one container's log to its file under `work` as it arrives, counting matching lines.
/// Returns the file's path in the tarball and its Errors and Warnings counts (also for what
/// arrived before a broken read), and whether the copy was whole.
async fn copy_log(
    api: &KubeApi,
    cfg: &GatherConfig,
    work: &Path,
    pod: &LogPod,
    container: &str,
) -> (Option<(String, u64, u64)>, Result<(), KubeError>) {
    let (Some(ns), Some(name), Some(c)) = (
        safe_component(&pod.namespace),
        safe_component(&pod.name),
        safe_component(container),
    ) else {
        return (None, Ok(()));
    };
    let rel = format!("podlogs/{ns}/{name}/logs/{c}.txt");
    let dest = work.join(&rel);
    let q = format!(
        "/api/v1/namespaces/{ns}/pods/{name}/log?{}",
        cfg.pod_logs.log_query(c)
    );
    let mut body = match api.get_stream(&q).await {
        Ok(b) => b,
        Err(e) => return (None, Err(e)),
    };
    let mut out = match fs::create_dir_all(dest.parent().expect("a parent"))
        .and_then(|()| File::create(&dest))
    {
        Ok(f) => BufWriter::new(f),
        Err(e) => return (None, Err(io_error(&dest)(e))),
    };
    let mut counter = LineCounter::default();
    let mut buf = vec![0u8; 64 * 1024];
    let copied = loop {
        match body.read(&mut buf).await {
            Ok(0) => break Ok(()),
            Ok(n) => {
                counter.feed(&buf[..n]);
                if let Err(e) = out.write_all(&buf[..n]) {
                    break Err(io_error(&dest)(e));
                }
            }
            Err(source) => {
                break Err(KubeError::Io {
                    context: format!("reading the log of {ns}/{name} container {c}"),
                    source,
                })
            }
        }
    };
    let copied = copied.and(out.flush().map_err(io_error(&dest)));
    let (errors, warnings) = counter.finish();
    (Some((rel, errors, warnings)), copied)
}

struct Gatherer<'a> {
    api: &'a KubeApi,
    cfg: &'a GatherConfig,
    work: PathBuf,
    queries: Vec<QueryRecord>,
    health: ClusterHealth,
    log_failures: Tally,
}

/// Failures of one kind counted, not logged one by one: at 5,000 nodes a line per unreadable
/// log was 20,000 lines of run.log.
#[derive(Default)]
struct Tally(std::collections::BTreeMap<String, (u64, String, String)>);

impl Tally {
    /// Counts `e` under its kind (the API's status code and reason, or the I/O error's kind),
    /// keeping the first one's subject and message as the example.
    fn add(&mut self, e: &KubeError, subject: &str) {
        let kind = match e {
            KubeError::Api {
                source: kube::Error::Api(s),
                ..
            } => format!("{} {}", s.code, s.reason),
            KubeError::Api { .. } => "no answer".to_string(),
            KubeError::Io { source, .. } => format!("{:?}", source.kind()),
            other => other.to_string(),
        };
        let entry = self
            .0
            .entry(kind)
            .or_insert_with(|| (0, subject.to_string(), e.to_string()));
        entry.0 += 1;
    }

    /// Empties the tally: per kind, its count, the first subject and its message.
    fn lines(&mut self) -> Vec<(String, u64, String, String)> {
        std::mem::take(&mut self.0)
            .into_iter()
            .map(|(kind, (count, subject, message))| (kind, count, subject, message))
            .collect()
    }

    /// One line per kind, with its count and the first example.
    fn report(&mut self, what: &str) {
        for (kind, count, subject, message) in self.lines() {
            tracing::warn!(kind = %kind, count, first = %subject, error = %message, "gathering: {what} failed");
        }
    }
}

impl Gatherer<'_> {
    fn record(&mut self, what: &str, ns: &str, started: Instant, err: Option<&KubeError>) {
        if let Some(e) = err {
            tracing::warn!(query = what, namespace = ns, error = %e, "gathering: query failed");
        }
        self.queries.push(QueryRecord {
            queryobj: what.to_string(),
            namespace: ns.to_string(),
            time: buoy_wire::timefmt::go_duration(started.elapsed()),
            error: err.map(|e| e.to_string()),
        });
    }

    /// The preferred version of every group, as `ServerPreferredResources` gives it: listable,
    /// no subresources, a name seen in an earlier group skipped. Also returns the group list
    /// for `servergroups.json`.
    async fn discover(&mut self) -> (Vec<Resource>, Option<Value>) {
        let started = Instant::now();
        let mut lists: Vec<(String, String, Value)> = Vec::new();
        let mut first_error = None;
        let legacy = self.api.get_json("/api").await;
        let groups = self.api.get_json("/apis").await;
        match self.api.get_json("/api/v1").await {
            Ok(v) => lists.push((String::new(), "v1".into(), v)),
            Err(e) => first_error = Some(e),
        }
        if let Ok(g) = &groups {
            for group in g["groups"].as_array().into_iter().flatten() {
                let gv = text(&group["preferredVersion"]["groupVersion"]);
                let Some((name, version)) = gv.split_once('/') else {
                    continue;
                };
                match self.api.get_json(&format!("/apis/{gv}")).await {
                    Ok(v) => lists.push((name.to_string(), version.to_string(), v)),
                    Err(e) => {
                        tracing::warn!(group = %gv, error = %e, "gathering: discovery of a group failed");
                        first_error.get_or_insert(e);
                    }
                }
            }
        }
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for (group, version, list) in lists {
            for r in list["resources"].as_array().into_iter().flatten() {
                let name = text(&r["name"]);
                let listable = r["verbs"]
                    .as_array()
                    .is_some_and(|v| v.iter().any(|v| v == "list"));
                if name.contains('/') || !listable || !seen.insert(name.clone()) {
                    continue;
                }
                out.push(Resource {
                    group: group.clone(),
                    version: version.clone(),
                    kind: text(&r["kind"]),
                    namespaced: r["namespaced"].as_bool().unwrap_or(false),
                    name,
                });
            }
        }
        let server_groups = match (legacy, groups) {
            (Ok(legacy), Ok(mut groups)) => {
                let versions: Vec<Value> = legacy["versions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|v| json!({"groupVersion": v, "version": v}))
                    .collect();
                let mut core = json!({"name": "", "versions": versions});
                if let Some(first) = versions.first() {
                    core["preferredVersion"] = first.clone();
                }
                if let Some(a) = legacy
                    .get("serverAddressByClientCIDRs")
                    .filter(|a| a.is_array())
                {
                    core["serverAddressByClientCIDRs"] = a.clone();
                }
                if let Some(list) = groups["groups"].as_array_mut() {
                    list.insert(0, core);
                }
                Some(groups)
            }
            (Err(e), _) | (_, Err(e)) => {
                first_error.get_or_insert(e);
                None
            }
        };
        self.record("discovery", "", started, first_error.as_ref());
        (out, server_groups)
    }

    /// Whether `Resources` asks for this resource (by default everything but Secrets, which
    /// are gathered only when named).
    fn wanted(&self, r: &Resource) -> bool {
        match &self.cfg.resources {
            Some(names) => names.contains(&r.name),
            None => r.name != "secrets",
        }
    }

    /// Lists `res` (in `ns`) page by page into `dest`, handing each object to `each`. An
    /// empty list writes no file (as Sonobuoy); a list that fails half-way leaves none.
    async fn list_to_file(
        &self,
        res: &Resource,
        ns: Option<&str>,
        dest: &Path,
        label_selector: &str,
        mut each: impl FnMut(&Value),
    ) -> Result<usize, KubeError> {
        let mut out: Option<BufWriter<File>> = None;
        // The list's kind and resourceVersion, from its first page.
        let mut tail: Option<(String, Value)> = None;
        let mut count = 0usize;
        let listed = each_page(
            self.api,
            &res.path(ns),
            &[("labelSelector", label_selector)],
            |mut page| {
                if tail.is_none() {
                    let kind = page["kind"]
                        .as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| format!("{}List", res.kind));
                    tail = Some((kind, page["metadata"]["resourceVersion"].take()));
                }
                let items = page
                    .get_mut("items")
                    .and_then(Value::as_array_mut)
                    .map(std::mem::take)
                    .unwrap_or_default();
                for mut item in items {
                    if let Some(meta) = item.get_mut("metadata").and_then(Value::as_object_mut) {
                        meta.remove("managedFields");
                    }
                    if let Some(o) = item.as_object_mut() {
                        o.entry("apiVersion")
                            .or_insert_with(|| res.api_version().into());
                        o.entry("kind").or_insert_with(|| res.kind.clone().into());
                    }
                    each(&item);
                    let w = match &mut out {
                        Some(w) => {
                            w.write_all(b",").map_err(io_error(dest))?;
                            w
                        }
                        None => {
                            if let Some(parent) = dest.parent() {
                                fs::create_dir_all(parent).map_err(io_error(dest))?;
                            }
                            let mut w = BufWriter::new(File::create(dest).map_err(io_error(dest))?);
                            write!(
                                w,
                                "{{\"apiVersion\":{},\"items\":[",
                                json!(res.api_version())
                            )
                            .map_err(io_error(dest))?;
                            out.insert(w)
                        }
                    };
                    serde_json::to_writer(&mut *w, &item)
                        .map_err(io::Error::from)
                        .map_err(io_error(dest))?;
                    count += 1;
                }
                Ok(())
            },
        )
        .await;
        let result = listed.and_then(|()| {
            if let (Some(w), Some((kind, rv))) = (&mut out, tail) {
                write!(
                    w,
                    "],\"kind\":{},\"metadata\":{}}}",
                    json!(kind),
                    json!({"resourceVersion": rv})
                )
                .and_then(|()| w.flush())
                .map_err(io_error(dest))?;
            }
            Ok(count)
        });
        if result.is_err() && out.take().is_some() {
            let _ = fs::remove_file(dest);
        }
        result
    }

    async fn resources(&mut self, resources: &[Resource], ns: Option<&str>) {
        let dir = match ns {
            Some(ns) => self.work.join("resources/ns").join(ns),
            None => self.work.join("resources/cluster"),
        };
        let label = self.cfg.label_selector.clone();
        for r in resources {
            let started = Instant::now();
            let dest = dir.join(r.file_name());
            let mut nodes = Vec::new();
            let mut pods = Vec::new();
            let result = self
                .list_to_file(r, ns, &dest, &label, |item| {
                    if r.is_core("nodes") {
                        nodes.push(node_health(item));
                    } else if r.is_core("pods") {
                        pods.push(pod_health(item));
                    }
                })
                .await;
            for d in nodes {
                add(&mut self.health.node_health, d);
            }
            for d in pods {
                add(&mut self.health.pod_health, d);
            }
            self.record(
                &r.name,
                ns.unwrap_or_default(),
                started,
                result.err().as_ref(),
            );
        }
    }

    /// Every namespace's name; if they cannot be listed, the run's own (as Sonobuoy).
    async fn namespaces(&mut self) -> Vec<String> {
        let mut names = Vec::new();
        let listed = each_page(self.api, "/api/v1/namespaces", &[], |page| {
            let items = page["items"].as_array().into_iter().flatten();
            names.extend(items.map(|n| text(&n["metadata"]["name"])));
            Ok(())
        })
        .await;
        match listed {
            Ok(()) => names,
            Err(e) => {
                tracing::warn!(error = %e, "gathering: cannot list namespaces; only the run's own is gathered");
                vec![self.api.namespace().to_string()]
            }
        }
    }

    /// The pods whose logs are wanted, by namespace or (with `ns` `None`) by field selector,
    /// one page at a time; evicted pods and pods seen before are skipped.
    async fn log_pods(
        &self,
        ns: Option<&str>,
        field_selector: Option<&str>,
        visited: &mut HashSet<String>,
    ) -> Result<Vec<LogPod>, KubeError> {
        let base = match ns {
            Some(ns) => format!("/api/v1/namespaces/{ns}/pods"),
            None => "/api/v1/pods".to_string(),
        };
        let selectors = [
            ("labelSelector", self.cfg.pod_logs.label_selector.as_str()),
            ("fieldSelector", field_selector.unwrap_or_default()),
        ];
        let mut pods = Vec::new();
        each_page(self.api, &base, &selectors, |page| {
            for p in page["items"].as_array().into_iter().flatten() {
                let uid = text(&p["metadata"]["uid"]);
                let name = text(&p["metadata"]["name"]);
                let namespace = text(&p["metadata"]["namespace"]);
                let key = if uid.is_empty() {
                    format!("{namespace}/{name}")
                } else {
                    uid
                };
                if !visited.insert(key) {
                    continue;
                }
                if p["status"]["phase"] == "Failed" && p["status"]["reason"] == "Evicted" {
                    continue;
                }
                // A container that never started has no log to read: asking would only earn
                // an error per container.
                let statuses = p["status"]["containerStatuses"].as_array();
                let started = |name: &str| match statuses {
                    None => p["status"]["phase"] != "Pending",
                    Some(all) => all.iter().find(|s| s["name"] == name).is_none_or(|s| {
                        s["state"].get("waiting").is_none()
                            || s["lastState"].get("terminated").is_some()
                    }),
                };
                let containers = p["spec"]["containers"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|c| text(&c["name"]))
                    .filter(|c| started(c))
                    .collect();
                pods.push(LogPod {
                    namespace,
                    name,
                    containers,
                });
            }
            Ok(())
        })
        .await?;
        Ok(pods)
    }

    async fn logs_of(
        &mut self,
        ns: Option<&str>,
        field_selector: Option<&str>,
        visited: &mut HashSet<String>,
    ) -> Result<(), KubeError> {
        use futures_util::StreamExt;
        let pods = self.log_pods(ns, field_selector, visited).await?;
        let (api, cfg, work) = (self.api, self.cfg, self.work.clone());
        // Owned jobs, so the stream's closure takes no borrowed argument (the future must be
        // Send for any lifetime).
        let jobs: Vec<(usize, String)> = pods
            .iter()
            .enumerate()
            .flat_map(|(i, p)| p.containers.iter().map(move |c| (i, c.clone())))
            .collect();
        let (pods, work) = (&pods, &work);
        let mut ticks = tokio::time::interval(LOG_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let ticks = tokio::sync::Mutex::new(ticks);
        let ticks = &ticks;
        // A few at a time, and started no faster than LOG_INTERVAL apart: each is one request
        // and a file, so thousands of pods are neither thousands of round trips end to end nor
        // a burst at the API server.
        let mut copies = futures_util::stream::iter(jobs)
            .map(|(i, c)| async move {
                ticks.lock().await.tick().await;
                let copied = copy_log(api, cfg, work, &pods[i], &c).await;
                (&pods[i], c, copied)
            })
            .buffer_unordered(LOG_CONCURRENCY);
        let mut first_error = None;
        while let Some((pod, c, (counts, copied))) = copies.next().await {
            if let Some((rel, errors, warnings)) = counts {
                self.health.count_log(&rel, errors, warnings);
            }
            if let Err(e) = copied {
                self.log_failures
                    .add(&e, &format!("{}/{} container {c}", pod.namespace, pod.name));
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    async fn pod_logs(&mut self, namespaces: &[String]) {
        let mut visited = HashSet::new();
        let cfg = self.cfg;
        if let Some(re) = &cfg.pod_log_namespaces {
            for ns in namespaces.iter().filter(|n| re.is_match(n)) {
                let started = Instant::now();
                let r = self.logs_of(Some(ns), None, &mut visited).await;
                self.record("PodLogs", ns, started, r.err().as_ref());
            }
        }
        let started = Instant::now();
        let mut err = None;
        for fs in cfg.pod_logs.field_selectors.iter().flatten() {
            if let Err(e) = self.logs_of(None, Some(fs), &mut visited).await {
                err.get_or_insert(e);
            }
        }
        self.record("PodLogs", "", started, err.as_ref());
        self.log_failures.report("reading pod logs");
    }

    async fn object(&mut self, what: &str, path: &str, file: &str) -> Option<Value> {
        let started = Instant::now();
        let result = match self.api.get_json(path).await {
            Ok(v) => self.write_json(file, &v).map(|()| v),
            Err(e) => Err(e),
        };
        self.record(what, "", started, result.as_ref().err());
        result.ok()
    }

    fn write_json(&self, rel: &str, value: &impl Serialize) -> Result<(), KubeError> {
        let dest = self.work.join(rel);
        fs::create_dir_all(dest.parent().expect("a parent")).map_err(io_error(&dest))?;
        let bytes = serde_json::to_vec(value).expect("JSON");
        fs::write(&dest, bytes).map_err(io_error(&dest))
    }
}

/// What a gathering did, for the log line that follows it.
#[derive(Debug, Default)]
pub struct GatherSummary {
    pub queries: usize,
    pub failed: usize,
}

/// Gathers into `work` (made empty first) and moves the result into `run_dir`. Never fails the
/// run; an error is returned only when the work directory itself cannot be used.
pub async fn gather(
    api: &KubeApi,
    cfg: &GatherConfig,
    run_dir: &Path,
    work: &Path,
) -> Result<GatherSummary, KubeError> {
    if work.exists() {
        fs::remove_dir_all(work).map_err(io_error(work))?;
    }
    fs::create_dir_all(work.join("meta")).map_err(io_error(work))?;
    let mut g = Gatherer {
        api,
        cfg,
        work: work.to_path_buf(),
        queries: Vec::new(),
        health: ClusterHealth::default(),
        log_failures: Tally::default(),
    };
    let (resources, server_groups) = g.discover().await;
    let (namespaced, cluster): (Vec<Resource>, Vec<Resource>) = resources
        .into_iter()
        .filter(|r| g.wanted(r))
        .partition(|r| r.namespaced);
    tracing::info!("Running cluster queries");
    g.resources(&cluster, None).await;
    if cfg.wants("serverversion") {
        if let Some(v) = g
            .object("serverversion", "/version", "serverversion.json")
            .await
        {
            g.health.api_version = text(&v["gitVersion"]);
        }
    }
    if cfg.wants("servergroups") {
        let started = Instant::now();
        let r = match &server_groups {
            Some(groups) => g.write_json("servergroups.json", groups),
            None => Err(KubeError::Client(
                "the API groups could not be discovered".into(),
            )),
        };
        g.record("servergroups", "", started, r.err().as_ref());
    }
    let all_namespaces = g.namespaces().await;
    for ns in all_namespaces.iter().filter(|n| cfg.namespaces.is_match(n)) {
        if safe_component(ns).is_some() {
            g.resources(&namespaced, Some(ns)).await;
        }
    }
    if cfg.wants("podlogs") {
        g.pod_logs(&all_namespaces).await;
    }
    let summary = GatherSummary {
        queries: g.queries.len(),
        failed: g.queries.iter().filter(|q| q.error.is_some()).count(),
    };
    g.write_json("meta/query-time.json", &g.queries)?;
    g.write_json("meta/clusterhealth.json", &g.health)?;
    move_into(work, run_dir)?;
    let _ = fs::remove_dir_all(work);
    Ok(summary)
}

/// Moves every entry of `work` into `run_dir` (`meta/` file by file), replacing what an
/// earlier attempt left.
fn move_into(work: &Path, run_dir: &Path) -> Result<(), KubeError> {
    fs::create_dir_all(run_dir).map_err(io_error(run_dir))?;
    let entries = fs::read_dir(work).map_err(io_error(work))?;
    for e in entries {
        let e = e.map_err(io_error(work))?;
        let name = e.file_name();
        let dest = run_dir.join(&name);
        if name == "meta" {
            fs::create_dir_all(&dest).map_err(io_error(&dest))?;
            move_into(&e.path(), &dest)?;
            continue;
        }
        if dest.is_dir() {
            fs::remove_dir_all(&dest).map_err(io_error(&dest))?;
        }
        fs::rename(e.path(), &dest).map_err(io_error(&dest))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
