//! The run config of an in-cluster aggregator (compat §6.2): which `config.json` is read, the
//! defaults Sonobuoy fills in, the advertise address, and the plugins found on the search path
//! with the v0.57 results-directory reconciliation (compat §4.4).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use buoy_wire::manifest::{self, Manifest};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::KubeError;

/// The plugins' results directory of v0.57 (`plugin.ResultsDir`).
pub const DEFAULT_RESULTS_DIR: &str = "/tmp/sonobuoy/results";

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
pub struct ServerConfig {
    pub bindaddress: String,
    pub bindport: u16,
    pub advertiseaddress: String,
    pub timeoutseconds: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Selection {
    pub name: String,
}

/// The typed part of `config.json` the aggregator acts on. Everything else is kept verbatim in
/// [`ClusterConfig::raw`] and written back as `meta/config.json`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
struct Typed {
    #[serde(rename = "UUID")]
    uuid: String,
    #[serde(rename = "ResultsDir")]
    results_dir: String,
    #[serde(rename = "Server")]
    server: Option<ServerConfig>,
    #[serde(rename = "Plugins")]
    plugins: Option<Vec<Selection>>,
    #[serde(rename = "PluginSearchPath")]
    plugin_search_path: Option<Vec<String>>,
    #[serde(rename = "Namespace")]
    namespace: String,
    #[serde(rename = "WorkerImage")]
    worker_image: String,
    #[serde(rename = "ImagePullPolicy")]
    image_pull_policy: String,
    #[serde(rename = "ImagePullSecrets")]
    image_pull_secrets: String,
    #[serde(rename = "CustomAnnotations")]
    custom_annotations: Option<BTreeMap<String, String>>,
    #[serde(rename = "ProgressUpdatesPort")]
    progress_updates_port: String,
    #[serde(rename = "Resources")]
    resources: Option<Vec<String>>,
    #[serde(rename = "Filters")]
    filters: Filters,
    #[serde(rename = "Limits")]
    limits: Limits,
}

/// What is gathered from the cluster once the plugins are done (compat §3.6, §6.2): the
/// `Resources`, `Filters` and `Limits.PodLogs` keys with Sonobuoy's defaults.
#[derive(Debug, Clone)]
pub struct GatherConfig {
    /// `Resources`: `None` gathers every listable resource but Secrets; a list gathers only the
    /// resource names in it, plus the specials `podlogs`, `serverversion` and `servergroups`.
    pub resources: Option<Vec<String>>,
    /// `Filters.Namespaces`: the namespaces whose resources are gathered.
    pub namespaces: regex::Regex,
    /// `Filters.LabelSelector`, for every resource list.
    pub label_selector: String,
    /// The namespaces whose pods' logs are gathered ([`PodLogLimits::namespace_filter`] with
    /// the run's namespace); `None` gathers logs by namespace nowhere.
    pub pod_log_namespaces: Option<regex::Regex>,
    pub pod_logs: PodLogLimits,
}

impl GatherConfig {
    /// Whether `Resources` asks for `name`.
    pub fn wants(&self, name: &str) -> bool {
        self.resources
            .as_ref()
            .is_none_or(|r| r.iter().any(|n| n == name))
    }
}

/// `Limits.PodLogs`: which pods' logs are gathered and how much of each.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct PodLogLimits {
    #[serde(rename = "Namespaces")]
    pub namespaces: String,
    #[serde(rename = "SonobuoyNamespace")]
    pub sonobuoy_namespace: Option<bool>,
    #[serde(rename = "FieldSelectors")]
    pub field_selectors: Option<Vec<String>>,
    #[serde(rename = "LabelSelector")]
    pub label_selector: String,
    #[serde(rename = "Previous")]
    pub previous: bool,
    #[serde(rename = "SinceSeconds")]
    pub since_seconds: Option<i64>,
    #[serde(rename = "SinceTime")]
    pub since_time: Option<String>,
    #[serde(rename = "Timestamps")]
    pub timestamps: bool,
    #[serde(rename = "TailLines")]
    pub tail_lines: Option<i64>,
    #[serde(rename = "LimitBytes")]
    pub limit_bytes: Option<i64>,
}

impl Default for PodLogLimits {
    fn default() -> Self {
        Self {
            namespaces: "kube-system".into(),
            sonobuoy_namespace: Some(true),
            field_selectors: None,
            label_selector: String::new(),
            previous: false,
            since_seconds: None,
            since_time: None,
            timestamps: false,
            tail_lines: None,
            limit_bytes: None,
        }
    }
}

impl PodLogLimits {
    /// The namespaces whose pods' logs are gathered, as one pattern (v0.57
    /// `getPodLogNamespaceFilter`): `Namespaces`, and the run's namespace with
    /// `SonobuoyNamespace`. Empty gathers by namespace nothing.
    pub fn namespace_filter(&self, run_namespace: &str) -> String {
        match (
            self.sonobuoy_namespace == Some(true),
            self.namespaces.is_empty(),
        ) {
            (false, _) => self.namespaces.clone(),
            (true, true) => run_namespace.to_string(),
            (true, false) => format!("{}|{run_namespace}", self.namespaces),
        }
    }

    /// The query string of a log request for `container`, without the leading `?`.
    pub fn log_query(&self, container: &str) -> String {
        let mut q = format!("container={}", crate::api::query_escape(container));
        if self.previous {
            q.push_str("&previous=true");
        }
        if let Some(s) = self.since_seconds {
            q.push_str(&format!("&sinceSeconds={s}"));
        }
        if let Some(t) = self.since_time.as_deref().filter(|t| !t.is_empty()) {
            q.push_str(&format!("&sinceTime={}", crate::api::query_escape(t)));
        }
        if self.timestamps {
            q.push_str("&timestamps=true");
        }
        if let Some(n) = self.tail_lines {
            q.push_str(&format!("&tailLines={n}"));
        }
        if let Some(n) = self.limit_bytes {
            q.push_str(&format!("&limitBytes={n}"));
        }
        q
    }
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
struct Filters {
    #[serde(rename = "Namespaces")]
    namespaces: Option<String>,
    #[serde(rename = "LabelSelector")]
    label_selector: String,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
struct Limits {
    #[serde(rename = "PodLogs")]
    pod_logs: PodLogLimits,
}

/// A loaded run config with Sonobuoy's defaults applied.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub path: Option<PathBuf>,
    pub uuid: String,
    /// Whether the config named the UUID (`sonobuoy gen` does); `buoy manifest` leaves it
    /// empty, and a new one is made at each start.
    pub uuid_given: bool,
    pub namespace: String,
    /// The plugins' results directory (mounted in every plugin pod).
    pub results_dir: String,
    pub server: ServerConfig,
    pub selection: Option<Vec<String>>,
    pub plugin_search_path: Vec<String>,
    pub worker_image: String,
    pub image_pull_policy: String,
    pub image_pull_secrets: String,
    pub custom_annotations: BTreeMap<String, String>,
    pub progress_port: String,
    pub gather: GatherConfig,
    /// The whole config as read, with `UUID`, `ResultsDir`, `Namespace` and the advertise
    /// address filled in.
    pub raw: Value,
}

/// What the process environment says, passed in so tests need not touch the real one.
pub trait Env {
    fn var(&self, name: &str) -> Option<String>;
}

/// The real process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }
}

impl<F: Fn(&str) -> Option<String>> Env for F {
    fn var(&self, name: &str) -> Option<String> {
        self(name)
    }
}

/// `SONOBUOY_CONFIG` alone if set; else `config.json` (relative to the working directory), then
/// `/etc/sonobuoy/config.json`. A missing file moves on; any other error is fatal.
pub fn find_config(env: &dyn Env) -> Result<(PathBuf, String), KubeError> {
    let candidates: Vec<PathBuf> = match env.var("SONOBUOY_CONFIG") {
        Some(p) => vec![PathBuf::from(p)],
        None => vec![
            PathBuf::from("config.json"),
            PathBuf::from("/etc/sonobuoy/config.json"),
        ],
    };
    for path in candidates {
        match std::fs::read_to_string(&path) {
            Ok(text) => return Ok((path, text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(KubeError::Config {
                    path,
                    reason: e.to_string(),
                })
            }
        }
    }
    Err(KubeError::NoConfig)
}

/// `<ip>:<port>` for IPv4 (v0.57.4), `[<ip>]:<port>` for IPv6.
pub fn advertise_from_ip(ip: &str, port: u16) -> String {
    match ip.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(v6)) => format!("[{v6}]:{port}"),
        _ => format!("{ip}:{port}"),
    }
}

impl ClusterConfig {
    /// Parses `text` (the file at `path`) and applies Sonobuoy's defaults and overrides.
    pub fn parse(path: Option<&Path>, text: &str, env: &dyn Env) -> Result<Self, KubeError> {
        let bad = |reason: String| KubeError::Config {
            path: path.map(Path::to_path_buf).unwrap_or_default(),
            reason,
        };
        let mut raw: Value = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
        if !raw.is_object() {
            return Err(bad("expected a JSON object".into()));
        }
        let t: Typed = serde_json::from_value(raw.clone()).map_err(|e| bad(e.to_string()))?;
        let mut server = t.server.unwrap_or_default();
        if server.bindaddress.is_empty() {
            server.bindaddress = "0.0.0.0".into();
        }
        if server.bindport == 0 {
            server.bindport = 8080;
        }
        if raw.pointer("/Server/timeoutseconds").is_none() {
            server.timeoutseconds = 21600;
        }
        if server.advertiseaddress.is_empty() {
            server.advertiseaddress = match env.var("SONOBUOY_ADVERTISE_IP") {
                Some(ip) => advertise_from_ip(&ip, server.bindport),
                None => format!("{}:{}", buoy_wire::host_name(), server.bindport),
            };
        }
        let namespace = if t.namespace.is_empty() {
            "sonobuoy".to_string()
        } else {
            t.namespace
        };
        let ns_pattern = t.filters.namespaces.clone().unwrap_or_else(|| ".*".into());
        let namespaces = regex::Regex::new(&ns_pattern).map_err(|e| {
            bad(format!(
                "Filters.Namespaces {ns_pattern:?} is not a pattern: {e}"
            ))
        })?;
        let pod_logs = t.limits.pod_logs.clone();
        let log_pattern = pod_logs.namespace_filter(&namespace);
        let pod_log_namespaces = match log_pattern.is_empty() {
            true => None,
            false => Some(regex::Regex::new(&log_pattern).map_err(|e| {
                bad(format!(
                    "Limits.PodLogs.Namespaces {:?} is not a pattern: {e}",
                    pod_logs.namespaces
                ))
            })?),
        };
        if pod_logs.since_seconds.is_some()
            && pod_logs
                .since_time
                .as_deref()
                .is_some_and(|t| !t.is_empty())
        {
            return Err(bad(
                "Limits.PodLogs: SinceSeconds and SinceTime cannot both be set".into(),
            ));
        }
        let gather = GatherConfig {
            resources: t.resources.clone(),
            namespaces,
            label_selector: t.filters.label_selector.clone(),
            pod_log_namespaces,
            pod_logs,
        };
        let uuid_given = !t.uuid.is_empty();
        let uuid = if t.uuid.is_empty() {
            uuid::Uuid::new_v4().to_string()
        } else {
            t.uuid
        };
        let results_dir = env
            .var("RESULTS_DIR")
            .or_else(|| Some(t.results_dir).filter(|d| !d.is_empty()))
            .unwrap_or_else(|| DEFAULT_RESULTS_DIR.into());
        let obj = raw.as_object_mut().expect("checked above");
        obj.insert("UUID".into(), uuid.clone().into());
        obj.insert("ResultsDir".into(), results_dir.clone().into());
        obj.insert("Namespace".into(), namespace.clone().into());
        let server_obj = obj.entry("Server").or_insert_with(|| json!({}));
        if let Some(s) = server_obj.as_object_mut() {
            s.insert("bindaddress".into(), server.bindaddress.clone().into());
            s.insert("bindport".into(), server.bindport.into());
            s.insert(
                "advertiseaddress".into(),
                server.advertiseaddress.clone().into(),
            );
            s.insert("timeoutseconds".into(), server.timeoutseconds.into());
        }
        Ok(Self {
            path: path.map(Path::to_path_buf),
            uuid,
            uuid_given,
            namespace,
            results_dir,
            server,
            selection: t.plugins.map(|v| v.into_iter().map(|s| s.name).collect()),
            plugin_search_path: t.plugin_search_path.unwrap_or_else(|| {
                vec![
                    "./plugins.d".into(),
                    "/etc/sonobuoy/plugins.d".into(),
                    "~/sonobuoy/plugins.d".into(),
                ]
            }),
            worker_image: if t.worker_image.is_empty() {
                format!("sonobuoy/sonobuoy:{}", buoy_wire::SONOBUOY_COMPAT_VERSION)
            } else {
                t.worker_image
            },
            image_pull_policy: if t.image_pull_policy.is_empty() {
                "IfNotPresent".into()
            } else {
                t.image_pull_policy
            },
            image_pull_secrets: t.image_pull_secrets,
            custom_annotations: t.custom_annotations.unwrap_or_default(),
            progress_port: if t.progress_updates_port.is_empty() {
                "8099".into()
            } else {
                t.progress_updates_port
            },
            gather,
            raw,
        })
    }

    /// Finds and parses the config as the aggregator does at start.
    pub fn load(env: &dyn Env) -> Result<Self, KubeError> {
        let (path, text) = find_config(env)?;
        Self::parse(Some(&path), &text, env)
    }

    /// The advertise host without its port (for the server certificate).
    pub fn advertise_host(&self) -> String {
        let a = &self.server.advertiseaddress;
        if let Some(rest) = a.strip_prefix('[') {
            return rest.split(']').next().unwrap_or(rest).to_string();
        }
        match a.rsplit_once(':') {
            Some((h, p)) if p.parse::<u16>().is_ok() && !h.contains(':') => h.to_string(),
            _ => a.clone(),
        }
    }

    /// The per-plugin timeout; `None` when `timeoutseconds` is 0 (v0.57: no timeout).
    pub fn plugin_timeout(&self) -> Option<std::time::Duration> {
        (self.server.timeoutseconds > 0)
            .then(|| std::time::Duration::from_secs(self.server.timeoutseconds))
    }

    /// Loads the plugins from the search path (directories that exist; `~` is not expanded,
    /// as in Sonobuoy) and applies the `Plugins` selection: none given loads all, `[]` none,
    /// names only those (a name not found is an error). Load order is the selection's, else
    /// file order.
    pub fn load_plugins(&self, env: &dyn Env) -> Result<Vec<Manifest>, KubeError> {
        let mut dirs: Vec<PathBuf> = Vec::new();
        for d in &self.plugin_search_path {
            let p = PathBuf::from(d);
            if !p.is_dir() {
                continue;
            }
            let canon = std::fs::canonicalize(&p).unwrap_or(p);
            if !dirs.contains(&canon) {
                dirs.push(canon);
            }
        }
        let mut found: Vec<Manifest> = Vec::new();
        for d in dirs {
            match manifest::load(std::slice::from_ref(&d)) {
                Ok(ms) => {
                    for m in ms {
                        if found.iter().any(|f| f.name() == m.name()) {
                            return Err(KubeError::Plugin {
                                plugin: m.name().to_string(),
                                reason: format!("defined twice (again in {})", m.path.display()),
                            });
                        }
                        found.push(m);
                    }
                }
                Err(manifest::ManifestError::Empty(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let mut selected = match &self.selection {
            None => found,
            Some(names) => {
                let mut out = Vec::new();
                for n in names {
                    let i = found
                        .iter()
                        .position(|m| m.name() == n)
                        .ok_or_else(|| KubeError::MissingPlugin(n.clone()))?;
                    out.push(found.remove(i));
                }
                out
            }
        };
        if env.var("SONOBUOY_DISABLE_RECONCILIATION").as_deref() != Some("true") {
            for m in &mut selected {
                reconcile_results_dir(m, &self.results_dir);
            }
        }
        Ok(selected)
    }
}

fn fix_container(c: &mut Value, dir: &str) {
    let Some(obj) = c.as_object_mut() else { return };
    let mounts = obj
        .entry("volumeMounts")
        .or_insert_with(|| Value::Array(vec![]));
    if !mounts.is_array() {
        *mounts = Value::Array(vec![]);
    }
    let mounts = mounts.as_array_mut().expect("an array");
    match mounts.iter_mut().find(|m| m["name"] == "results") {
        Some(m) => m["mountPath"] = dir.into(),
        None => mounts.push(json!({"name": "results", "mountPath": dir})),
    }
    let env = obj.entry("env").or_insert_with(|| Value::Array(vec![]));
    if !env.is_array() {
        *env = Value::Array(vec![]);
    }
    let env = env.as_array_mut().expect("an array");
    for name in ["SONOBUOY_RESULTS_DIR", "RESULTS_DIR"] {
        match env.iter_mut().find(|e| e["name"] == name) {
            Some(e) => *e = json!({"name": name, "value": dir}),
            None => env.push(json!({"name": name, "value": dir})),
        }
    }
}

/// v0.57's `avoidResultsDirIssue`: the `results` volume is mounted at the results directory and
/// `SONOBUOY_RESULTS_DIR`/`RESULTS_DIR` name it, on the plugin container and on every container
/// of a given `podSpec`.
pub fn reconcile_results_dir(m: &mut Manifest, dir: &str) {
    if let Some(spec) = m.raw.get_mut("spec").filter(|s| s.is_object()) {
        fix_container(spec, dir);
    }
    if let Some(cs) = m
        .raw
        .pointer_mut("/podSpec/containers")
        .and_then(Value::as_array_mut)
    {
        for c in cs {
            fix_container(c, dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |n| {
            pairs
                .iter()
                .find(|(k, _)| *k == n)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn defaults_follow_sonobuoy() {
        let c = ClusterConfig::parse(None, "{}", &env(&[])).unwrap();
        assert_eq!(c.namespace, "sonobuoy");
        assert_eq!(c.server.bindaddress, "0.0.0.0");
        assert_eq!(c.server.bindport, 8080);
        assert_eq!(c.server.timeoutseconds, 21600);
        assert_eq!(c.progress_port, "8099");
        assert_eq!(c.image_pull_policy, "IfNotPresent");
        assert_eq!(c.results_dir, DEFAULT_RESULTS_DIR);
        assert!(c.selection.is_none());
        assert_eq!(c.plugin_search_path[0], "./plugins.d");
        assert_eq!(c.uuid.len(), 36);
        assert_eq!(c.raw["UUID"], c.uuid.as_str());
    }

    #[test]
    fn advertise_ip_is_bracketed_only_for_ipv6() {
        let c = ClusterConfig::parse(
            None,
            r#"{"Server":{"bindport":8443}}"#,
            &env(&[("SONOBUOY_ADVERTISE_IP", "10.244.1.5")]),
        )
        .unwrap();
        assert_eq!(c.server.advertiseaddress, "10.244.1.5:8443");
        assert_eq!(c.advertise_host(), "10.244.1.5");
        assert_eq!(c.raw["Server"]["advertiseaddress"], "10.244.1.5:8443");
        let c = ClusterConfig::parse(None, "{}", &env(&[("SONOBUOY_ADVERTISE_IP", "fd00::5")]))
            .unwrap();
        assert_eq!(c.server.advertiseaddress, "[fd00::5]:8080");
        assert_eq!(c.advertise_host(), "fd00::5");
    }

    #[test]
    fn explicit_values_and_results_dir_env_win() {
        let c = ClusterConfig::parse(
            None,
            r#"{"UUID":"u-1","Namespace":"conf","Server":{"advertiseaddress":"agg.svc:9000","timeoutseconds":0},
                "Plugins":[{"name":"e2e"}],"WorkerImage":"w:1","ProgressUpdatesPort":"9099",
                "CustomAnnotations":{"a":"b"}}"#,
            &env(&[("RESULTS_DIR", "/r")]),
        )
        .unwrap();
        assert_eq!(c.uuid, "u-1");
        assert_eq!(c.namespace, "conf");
        assert_eq!(c.advertise_host(), "agg.svc");
        assert_eq!(c.plugin_timeout(), None);
        assert_eq!(c.selection, Some(vec!["e2e".to_string()]));
        assert_eq!(c.worker_image, "w:1");
        assert_eq!(c.progress_port, "9099");
        assert_eq!(c.results_dir, "/r");
        assert_eq!(c.custom_annotations["a"], "b");
    }

    #[test]
    fn config_search_order() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.json");
        std::fs::write(&p, "{}").unwrap();
        let ps = p.to_str().unwrap().to_string();
        let (found, _) =
            find_config(&move |n: &str| (n == "SONOBUOY_CONFIG").then(|| ps.clone())).unwrap();
        assert_eq!(found, p);
        let missing = dir.path().join("nope.json").to_str().unwrap().to_string();
        let e = find_config(&move |n: &str| (n == "SONOBUOY_CONFIG").then(|| missing.clone()))
            .unwrap_err();
        assert!(matches!(e, KubeError::NoConfig), "{e}");
    }

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::write(dir.join(name), text).unwrap();
    }

    #[test]
    fn plugins_come_from_the_search_path_with_selection_and_reconciliation() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        write(a.path(), "e2e.yaml", "sonobuoy-config: {driver: Job, plugin-name: e2e}\nspec: {name: plugin, image: e2e:1, volumeMounts: [{name: results, mountPath: /tmp/results}]}\n");
        write(b.path(), "logs.yml", "sonobuoy-config: {driver: DaemonSet, plugin-name: systemd-logs}\nspec: {name: plugin, image: l:1}\npodSpec: {containers: [{name: x, image: x}]}\n");
        write(b.path(), "notes.txt", "not a manifest");
        let mut c = ClusterConfig::parse(None, "{}", &env(&[])).unwrap();
        c.plugin_search_path = vec![
            a.path().display().to_string(),
            "/nonexistent/plugins.d".into(),
            b.path().display().to_string(),
            a.path().display().to_string(),
        ];
        let all = c.load_plugins(&env(&[])).unwrap();
        let names: Vec<&str> = all.iter().map(|m| m.name()).collect();
        assert_eq!(names, ["e2e", "systemd-logs"]);
        let spec = &all[0].raw["spec"];
        assert_eq!(spec["volumeMounts"][0]["mountPath"], DEFAULT_RESULTS_DIR);
        assert_eq!(spec["env"][0]["name"], "SONOBUOY_RESULTS_DIR");
        assert_eq!(
            all[1].raw["podSpec"]["containers"][0]["volumeMounts"][0]["mountPath"],
            DEFAULT_RESULTS_DIR
        );
        let kept = c
            .load_plugins(&env(&[("SONOBUOY_DISABLE_RECONCILIATION", "true")]))
            .unwrap();
        assert_eq!(
            kept[0].raw["spec"]["volumeMounts"][0]["mountPath"],
            "/tmp/results"
        );

        c.selection = Some(vec!["systemd-logs".into()]);
        let one = c.load_plugins(&env(&[])).unwrap();
        assert_eq!(one.len(), 1);
        c.selection = Some(vec![]);
        assert!(c.load_plugins(&env(&[])).unwrap().is_empty());
        c.selection = Some(vec!["nope".into()]);
        assert!(matches!(
            c.load_plugins(&env(&[])),
            Err(KubeError::MissingPlugin(n)) if n == "nope"
        ));
    }
}
