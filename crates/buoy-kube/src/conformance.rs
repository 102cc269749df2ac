//! Sonobuoy's built-in plugins and e2e modes, as v0.57 defines them (`pkg/client/gen.go`,
//! `cmd/sonobuoy/app/modes.go`, `args.go`): the `e2e` Job plugin (the conformance image for the
//! cluster's version, junit results, its focus, skip and parallelism in env, Ginkgo's progress
//! sent to the worker's relay) and the `systemd-logs` DaemonSet plugin (privileged, raw
//! results), the modes that set the e2e env, per-plugin env overrides, image overrides, a
//! registry list for the test images (`--e2e-repo-config`), and a focus on exactly the failed
//! tests of an earlier run (`--rerun-failed`). What comes out is plugin manifests (YAML) and
//! the extra ConfigMaps they mount, for `manifest::objects`.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde_json::{json, Value};

use crate::error::KubeError;

pub const E2E: &str = "e2e";
pub const SYSTEMD_LOGS: &str = "systemd-logs";
/// The conformance image, tagged with the API server's version.
pub const CONFORMANCE_IMAGE: &str = "registry.k8s.io/conformance";
pub const SYSTEMD_LOGS_IMAGE: &str = "sonobuoy/systemd-logs:v0.4";
pub const RESULTS_DIR: &str = "/tmp/sonobuoy/results";
/// Where a plugin's own ConfigMap (`plugin-<name>-cm`) is mounted.
pub const CONFIG_DIR: &str = "/tmp/sonobuoy/config";
pub const PROGRESS_PORT: &str = "8099";

/// How much of the conformance suite the e2e plugin runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    Quick,
    #[default]
    NonDisruptiveConformance,
    CertifiedConformance,
    ConformanceLite,
}

const CONFORMANCE_FOCUS: &str = r"\[Conformance\]";

/// The long-running specs conformance-lite skips beside `Serial`, `Slow` and `Disruptive`
/// (Sonobuoy v0.57's list, matched as literal names).
const LITE_SKIPS: &[&str] = &[
    "[sig-apps] StatefulSet Basic StatefulSet functionality [StatefulSetBasic] should have a working scale subresource [Conformance]",
    "[sig-network] EndpointSlice should create Endpoints and EndpointSlices for Pods matching a Service [Conformance]",
    "[sig-api-machinery] CustomResourcePublishOpenAPI [Privileged:ClusterAdmin] works for multiple CRDs of same group and version but different kinds [Conformance]",
    "[sig-auth] ServiceAccounts ServiceAccountIssuerDiscovery should support OIDC discovery of service account issuer [Conformance]",
    "[sig-network] DNS should provide DNS for services  [Conformance]",
    "[sig-network] DNS should resolve DNS of partial qualified names for services [LinuxOnly] [Conformance]",
    "[sig-apps] Job should delete a job [Conformance]",
    "[sig-network] DNS should provide DNS for ExternalName services [Conformance]",
    "[sig-node] Variable Expansion should succeed in writing subpaths in container [Slow] [Conformance]",
    "[sig-apps] Daemon set [Serial] should rollback without unnecessary restarts [Conformance]",
    "[sig-api-machinery] Garbage collector should orphan pods created by rc if delete options say so [Conformance]",
    "[sig-network] Services should have session affinity timeout work for service with type clusterIP [LinuxOnly] [Conformance]",
    "[sig-network] Services should have session affinity timeout work for NodePort service [LinuxOnly] [Conformance]",
    "[sig-node] InitContainer [NodeConformance] should not start app containers if init containers fail on a RestartAlways pod [Conformance]",
    "[sig-apps] Daemon set [Serial] should update pod when spec was updated and update strategy is RollingUpdate [Conformance]",
    "[sig-api-machinery] CustomResourcePublishOpenAPI [Privileged:ClusterAdmin] works for multiple CRDs of same group but different versions [Conformance]",
    "[sig-apps] StatefulSet Basic StatefulSet functionality [StatefulSetBasic] Burst scaling should run to completion even with unhealthy pods [Slow] [Conformance]",
    "[sig-node] Probing container should be restarted with a exec \"cat /tmp/health\" liveness probe [NodeConformance] [Conformance]",
    "[sig-network] Services should be able to switch session affinity for service with type clusterIP [LinuxOnly] [Conformance]",
    "[sig-node] Probing container with readiness probe that fails should never be ready and never restart [NodeConformance] [Conformance]",
    "[sig-api-machinery] Watchers should observe add, update, and delete watch notifications on configmaps [Conformance]",
    "[sig-scheduling] SchedulerPreemption [Serial] PriorityClass endpoints verify PriorityClass endpoints can be operated with different HTTP methods [Conformance]",
    "[sig-api-machinery] CustomResourceDefinition resources [Privileged:ClusterAdmin] Simple CustomResourceDefinition listing custom resource definition objects works  [Conformance]",
    "[sig-api-machinery] CustomResourceDefinition Watch [Privileged:ClusterAdmin] CustomResourceDefinition Watch watch on custom resource definition objects [Conformance]",
    "[sig-scheduling] SchedulerPreemption [Serial] validates basic preemption works [Conformance]",
    "[sig-storage] ConfigMap optional updates should be reflected in volume [NodeConformance] [Conformance]",
    "[sig-apps] StatefulSet Basic StatefulSet functionality [StatefulSetBasic] Scaling should happen in predictable order and halt if any stateful pod is unhealthy [Slow] [Conformance]",
    "[sig-storage] EmptyDir wrapper volumes should not cause race condition when used for configmaps [Serial] [Conformance]",
    "[sig-scheduling] SchedulerPreemption [Serial] validates lower priority pod preemption by critical pod [Conformance]",
    "[sig-storage] Projected secret optional updates should be reflected in volume [NodeConformance] [Conformance]",
    "[sig-apps] CronJob should schedule multiple jobs concurrently [Conformance]",
    "[sig-apps] CronJob should replace jobs when ReplaceConcurrent [Conformance]",
    "[sig-scheduling] SchedulerPreemption [Serial] PreemptionExecutionPath runs ReplicaSets to verify preemption running path [Conformance]",
    "[sig-apps] StatefulSet Basic StatefulSet functionality [StatefulSetBasic] should perform canary updates and phased rolling updates of template modifications [Conformance]",
    "[sig-apps] StatefulSet Basic StatefulSet functionality [StatefulSetBasic] should perform rolling updates and roll backs of template modifications [Conformance]",
    "[sig-node] Probing container should have monotonically increasing restart count [NodeConformance] [Conformance]",
    "[sig-node] Variable Expansion should verify that a failing subpath expansion can be modified during the lifecycle of a container [Slow] [Conformance]",
    "[sig-node] Probing container should *not* be restarted with a exec \"cat /tmp/health\" liveness probe [NodeConformance] [Conformance]",
    "[sig-node] Probing container should *not* be restarted with a tcp:8080 liveness probe [NodeConformance] [Conformance]",
    "[sig-node] Probing container should *not* be restarted with a /healthz http liveness probe [NodeConformance] [Conformance]",
    "[sig-apps] CronJob should not schedule jobs when suspended [Slow] [Conformance]",
    "[sig-scheduling] SchedulerPredicates [Serial] validates that there exists conflict between pods with same hostPort and protocol but one using 0.0.0.0 hostIP [Conformance]",
    "[sig-apps] CronJob should not schedule new jobs when ForbidConcurrent [Slow] [Conformance]",
    "[k8s.io] Probing container should *not* be restarted with a exec \"cat /tmp/health\" liveness probe [NodeConformance] [Conformance]",
    "[sig-apps] StatefulSet [k8s.io] Basic StatefulSet functionality [StatefulSetBasic] should perform canary updates and phased rolling updates of template modifications [Conformance]",
    "[sig-storage] ConfigMap updates should be reflected in volume [NodeConformance] [Conformance]",
    "[sig-network] Services should be able to switch session affinity for NodePort service [LinuxOnly] [Conformance]",
    "[k8s.io] Probing container with readiness probe that fails should never be ready and never restart [NodeConformance] [Conformance]",
    "[sig-storage] Projected configMap optional updates should be reflected in volume [NodeConformance] [Conformance]",
    "[k8s.io] Probing container should be restarted with a exec \"cat /tmp/health\" liveness probe [NodeConformance] [Conformance]",
    "[sig-api-machinery] Garbage collector should delete RS created by deployment when not orphaning [Conformance]",
    "[sig-api-machinery] Garbage collector should delete pods created by rc when not orphaning [Conformance]",
    "[k8s.io] Probing container should have monotonically increasing restart count [NodeConformance] [Conformance]",
    "[k8s.io] Probing container should *not* be restarted with a tcp:8080 liveness probe [NodeConformance] [Conformance]",
    "[sig-api-machinery] Garbage collector should keep the rc around until all its pods are deleted if the deleteOptions says so [Conformance]",
    "[sig-apps] StatefulSet [k8s.io] Basic StatefulSet functionality [StatefulSetBasic] should perform rolling updates and roll backs of template modifications [Conformance]",
];

impl Mode {
    pub const ALL: [Mode; 4] = [
        Mode::CertifiedConformance,
        Mode::ConformanceLite,
        Mode::NonDisruptiveConformance,
        Mode::Quick,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Mode::Quick => "quick",
            Mode::NonDisruptiveConformance => "non-disruptive-conformance",
            Mode::CertifiedConformance => "certified-conformance",
            Mode::ConformanceLite => "conformance-lite",
        }
    }

    pub fn description(self) -> &'static str {
        match self {
            Mode::Quick => {
                "one test that creates and removes a pod: the fastest check that the cluster works"
            }
            Mode::NonDisruptiveConformance => {
                "every conformance test except those that disrupt the cluster (the default)"
            }
            Mode::CertifiedConformance => {
                "the whole conformance suite, disruptive tests included, as for CNCF certification"
            }
            Mode::ConformanceLite => {
                "conformance without the slowest tests, in parallel (unofficial)"
            }
        }
    }

    pub fn focus(self) -> &'static str {
        match self {
            Mode::Quick => "Pods should be submitted and removed",
            _ => CONFORMANCE_FOCUS,
        }
    }

    pub fn skip(self) -> String {
        match self {
            Mode::NonDisruptiveConformance => r"\[Disruptive\]|NoExecuteTaintManager".into(),
            Mode::ConformanceLite => ["Serial", "Slow", "Disruptive"]
                .into_iter()
                .map(str::to_string)
                .chain(LITE_SKIPS.iter().map(|s| quote_meta(s).replace('"', ".")))
                .collect::<Vec<_>>()
                .join("|"),
            _ => String::new(),
        }
    }

    pub fn parallel(self) -> bool {
        self == Mode::ConformanceLite
    }
}

impl FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let lower = s.to_ascii_lowercase();
        Mode::ALL
            .into_iter()
            .find(|m| m.name() == lower)
            .ok_or_else(|| {
                format!(
                    "unknown mode {s:?}; the modes are {}",
                    Mode::ALL.map(Mode::name).join(", ")
                )
            })
    }
}

/// Go's `regexp.QuoteMeta`: every regular-expression metacharacter escaped, nothing else
/// touched (runs of spaces stay as they are: some spec names have two).
pub fn quote_meta(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 2);
    for c in s.chars() {
        if r"\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// One `--plugin-env PLUGIN.KEY=VALUE` (or `PLUGIN.KEY`, which removes the variable).
#[derive(Debug, Clone, PartialEq)]
pub struct EnvOverride {
    pub plugin: String,
    pub key: String,
    pub value: Option<String>,
}

impl FromStr for EnvOverride {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (plugin, rest) = s
            .split_once('.')
            .filter(|(p, r)| !p.is_empty() && !r.is_empty())
            .ok_or_else(|| format!("{s:?} is not PLUGIN.KEY=VALUE"))?;
        let (key, value) = match rest.split_once('=') {
            Some((k, v)) => (k, Some(v.to_string())),
            None => (rest, None),
        };
        if key.is_empty() {
            return Err(format!("{s:?} names no variable"));
        }
        Ok(Self {
            plugin: plugin.to_string(),
            key: key.to_string(),
            value,
        })
    }
}

/// What a user chose about the built-in plugins, in the order it is applied: the mode, then
/// `--e2e-focus`, `--e2e-skip` and `--e2e-parallel`, then each `--plugin-env`, then
/// `--rerun-failed` (which sets the focus and clears the skip).
#[derive(Debug, Clone, Default)]
pub struct Choices {
    pub mode: Mode,
    pub focus: Option<String>,
    pub skip: Option<String>,
    pub parallel: Option<String>,
    pub plugin_env: Vec<EnvOverride>,
    /// The Kubernetes version the conformance image is tagged with (`v1.26.0`).
    pub kubernetes_version: String,
    /// A whole image instead of `registry.k8s.io/conformance:<version>`.
    pub conformance_image: Option<String>,
    pub systemd_logs_image: Option<String>,
    /// `--e2e-repo-config`: the file's name and contents (KUBE_TEST_REPO_LIST).
    pub repo_config: Option<(String, String)>,
    /// `--rerun-failed`: the failed tests of an earlier run, as named there.
    pub rerun: Option<Vec<String>>,
}

/// Where a run's plugins come from.
#[derive(Debug, Clone, PartialEq)]
pub enum PluginSource {
    /// `e2e` or `systemd-logs`.
    Builtin(&'static str),
    /// A manifest file or a directory of them.
    Path(PathBuf),
}

impl PluginSource {
    /// A `--plugin` value: a built-in's name, else a path.
    pub fn parse(s: &str) -> Self {
        match s {
            E2E => PluginSource::Builtin(E2E),
            SYSTEMD_LOGS => PluginSource::Builtin(SYSTEMD_LOGS),
            path => PluginSource::Path(PathBuf::from(path)),
        }
    }
}

/// The plugins of a run, ready for `manifest::objects`.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// Each plugin's name and manifest (YAML), sorted by name as Sonobuoy sorts them.
    pub plugins: Vec<(String, String)>,
    /// The plugins' own ConfigMaps (`plugin-<name>-cm`), without a namespace.
    pub config_maps: Vec<(String, Value)>,
}

impl Plan {
    pub fn names(&self) -> Vec<String> {
        self.plugins.iter().map(|(n, _)| n.clone()).collect()
    }

    /// Every image the plugins run (their containers and sidecars), in plugin order.
    pub fn images(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (_, text) in &self.plugins {
            let v: Value = serde_yaml_ng::from_str(text).unwrap_or(Value::Null);
            let spec = std::iter::once(&v["spec"]);
            let sidecars = v["podSpec"]["containers"].as_array().into_iter().flatten();
            for c in spec.chain(sidecars) {
                if let Some(i) = c["image"].as_str().filter(|i| !i.is_empty()) {
                    if !out.iter().any(|o| o == i) {
                        out.push(i.to_string());
                    }
                }
            }
        }
        out
    }
}

fn job_pod_spec() -> Value {
    json!({
        "containers": [],
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "restartPolicy": "Never",
        "serviceAccountName": "sonobuoy-serviceaccount",
        "tolerations": [
            {"effect": "NoSchedule", "key": "node-role.kubernetes.io/master", "operator": "Exists"},
            {"key": "CriticalAddonsOnly", "operator": "Exists"},
            {"key": "kubernetes.io/e2e-evict-taint-key", "operator": "Exists"},
        ],
    })
}

/// The `e2e` plugin: the conformance image's `/run_e2e.sh`, Ginkgo's progress posted to the
/// worker's relay.
pub fn e2e_manifest(image: &str) -> Value {
    json!({
        "sonobuoy-config": {"driver": "Job", "plugin-name": E2E, "result-format": "junit"},
        "podSpec": job_pod_spec(),
        "spec": {
            "name": E2E,
            "image": image,
            "command": ["/run_e2e.sh"],
            "env": [
                {"name": "E2E_EXTRA_ARGS", "value": format!("--progress-report-url=http://localhost:{PROGRESS_PORT}/progress")},
                {"name": "E2E_FOCUS", "value": ""},
                {"name": "E2E_PARALLEL", "value": ""},
                {"name": "E2E_SKIP", "value": ""},
                {"name": "E2E_USE_GO_RUNNER", "value": "true"},
            ],
        },
    })
}

/// The `systemd-logs` plugin: a privileged DaemonSet that reads each node's journal through
/// the host's root mounted at `/node`.
pub fn systemd_logs_manifest(image: &str) -> Value {
    json!({
        "sonobuoy-config": {"driver": "DaemonSet", "plugin-name": SYSTEMD_LOGS, "result-format": "raw"},
        "podSpec": {
            "containers": [],
            "dnsPolicy": "ClusterFirstWithHostNet",
            "hostIPC": true,
            "hostNetwork": true,
            "hostPID": true,
            "nodeSelector": {"kubernetes.io/os": "linux"},
            "serviceAccountName": "sonobuoy-serviceaccount",
            "tolerations": [{"operator": "Exists"}],
            "volumes": [{"name": "root", "hostPath": {"path": "/"}}],
        },
        "spec": {
            "name": SYSTEMD_LOGS,
            "image": image,
            "command": ["/bin/sh", "-c", "/get_systemd_logs.sh; while true; do echo \"Plugin is complete. Sleeping indefinitely to avoid container exit and automatic restarts from Kubernetes\"; sleep 3600; done"],
            "env": [
                {"name": "CHROOT_DIR", "value": "/node"},
                {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            ],
            "securityContext": {"privileged": true},
            "volumeMounts": [{"name": "root", "mountPath": "/node", "readOnly": false}],
        },
    })
}

/// Sets (or with `None` removes) `name` in a container's env, keeping the others' order.
fn set_env(container: &mut Value, name: &str, value: Option<&str>) {
    if !container["env"].is_array() {
        container["env"] = json!([]);
    }
    let env = container["env"].as_array_mut().expect("an array");
    env.retain(|e| e["name"] != name);
    if let Some(v) = value {
        env.push(json!({"name": name, "value": v}));
    }
}

/// The env every plugin gets (Sonobuoy's `applyAutoEnvVars`).
fn auto_env(version: &str) -> [(&'static str, String); 6] {
    [
        ("SONOBUOY", "true".into()),
        ("SONOBUOY_CONFIG_DIR", CONFIG_DIR.into()),
        ("SONOBUOY_K8S_VERSION", version.into()),
        ("SONOBUOY_PROGRESS_PORT", PROGRESS_PORT.into()),
        ("SONOBUOY_RESULTS_DIR", RESULTS_DIR.into()),
        ("RESULTS_DIR", RESULTS_DIR.into()),
    ]
}

/// The e2e focus that runs exactly `failed` (names as `buoy results` lists them, Ginkgo's
/// `[It]` prefix dropped, each matched literally, spaces kept).
pub fn rerun_focus(failed: &[String]) -> String {
    failed
        .iter()
        .map(|n| quote_meta(n.strip_prefix("[It]").unwrap_or(n)))
        .collect::<Vec<_>>()
        .join("|")
}

/// The failed tests of the `e2e` plugin in the tarball (or directory) at `path`.
pub fn failed_tests(path: &Path) -> Result<Vec<String>, KubeError> {
    let bad = |reason: String| KubeError::Plugin {
        plugin: E2E.into(),
        reason: format!("--rerun-failed {}: {reason}", path.display()),
    };
    let archive = buoy_results::Archive::open(path).map_err(|e| bad(e.to_string()))?;
    let item = archive.results(E2E).map_err(bad)?;
    let report = buoy_results::report::PluginReport::from_item(E2E, item);
    let names: Vec<String> = report.failed_tests.iter().map(|t| t.name.clone()).collect();
    if names.is_empty() {
        return Err(bad("no test of the e2e plugin failed there".into()));
    }
    Ok(names)
}

/// Checks that `re` compiles (Ginkgo would reject it only inside the pod, much later).
fn valid_regex(what: &str, re: &str) -> Result<(), KubeError> {
    regex::Regex::new(re)
        .map(drop)
        .map_err(|e| KubeError::Plugin {
            plugin: E2E.into(),
            reason: format!("{what} {re:?} is not a regular expression: {e}"),
        })
}

/// The run's plugin manifests from the chosen sources and choices.
pub fn plan(sources: &[PluginSource], c: &Choices) -> Result<Plan, KubeError> {
    let mut plugins: Vec<(String, Value)> = Vec::new();
    for s in sources {
        match s {
            PluginSource::Builtin(E2E) => {
                let image = c
                    .conformance_image
                    .clone()
                    .unwrap_or_else(|| format!("{CONFORMANCE_IMAGE}:{}", c.kubernetes_version));
                plugins.push((E2E.into(), e2e_manifest(&image)));
            }
            PluginSource::Builtin(_) => {
                let image = c
                    .systemd_logs_image
                    .clone()
                    .unwrap_or_else(|| SYSTEMD_LOGS_IMAGE.into());
                plugins.push((SYSTEMD_LOGS.into(), systemd_logs_manifest(&image)));
            }
            PluginSource::Path(p) => {
                for m in buoy_wire::manifest::load(std::slice::from_ref(p))? {
                    plugins.push((m.name().to_string(), m.raw));
                }
            }
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    for (name, _) in &plugins {
        if !seen.insert(name.clone()) {
            return Err(KubeError::Plugin {
                plugin: name.clone(),
                reason: "chosen twice (by name and by a manifest, or by two manifests)".into(),
            });
        }
    }
    plugins.sort_by_key(|(n, _)| n.to_ascii_lowercase());

    // The e2e env: the mode, the flags, then --plugin-env, then --rerun-failed.
    let mut overrides: Vec<EnvOverride> = Vec::new();
    let e2e = |key: &str, value: Option<String>| EnvOverride {
        plugin: E2E.into(),
        key: key.into(),
        value,
    };
    overrides.push(e2e("E2E_FOCUS", Some(c.mode.focus().into())));
    overrides.push(e2e("E2E_SKIP", Some(c.mode.skip())));
    overrides.push(e2e("E2E_PARALLEL", Some(c.mode.parallel().to_string())));
    for (key, v) in [
        ("E2E_FOCUS", &c.focus),
        ("E2E_SKIP", &c.skip),
        ("E2E_PARALLEL", &c.parallel),
    ] {
        if let Some(v) = v {
            overrides.push(e2e(key, Some(v.clone())));
        }
    }
    overrides.extend(c.plugin_env.iter().cloned());
    if let Some(failed) = &c.rerun {
        overrides.push(e2e("E2E_FOCUS", Some(rerun_focus(failed))));
        overrides.push(e2e("E2E_SKIP", Some(String::new())));
    }
    for o in &c.plugin_env {
        // As Sonobuoy: e2e settings are no error when e2e does not run; others must name a
        // plugin of the run.
        if o.plugin != E2E && !plugins.iter().any(|(n, _)| *n == o.plugin) {
            return Err(KubeError::Plugin {
                plugin: o.plugin.clone(),
                reason: format!(
                    "--plugin-env {}.{}: no such plugin in this run (it has {:?})",
                    o.plugin,
                    o.key,
                    plugins.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>()
                ),
            });
        }
    }

    let mut config_maps = Vec::new();
    for (name, m) in &mut plugins {
        let image = m["spec"]["image"].as_str().unwrap_or_default().to_string();
        m["spec"]["image"] = image
            .replace("$SONOBUOY_K8S_VERSION", &c.kubernetes_version)
            .into();
        for (k, v) in auto_env(&c.kubernetes_version) {
            set_env(&mut m["spec"], k, Some(&v));
        }
        for o in overrides.iter().filter(|o| o.plugin == *name) {
            set_env(&mut m["spec"], &o.key, o.value.as_deref());
            for side in m["podSpec"]["containers"]
                .as_array_mut()
                .into_iter()
                .flatten()
            {
                set_env(side, &o.key, o.value.as_deref());
            }
        }
        if name == E2E {
            let env = m["spec"]["env"].as_array().cloned().unwrap_or_default();
            for e in &env {
                let (k, v) = (
                    e["name"].as_str().unwrap_or_default(),
                    e["value"].as_str().unwrap_or_default(),
                );
                if matches!(k, "E2E_FOCUS" | "E2E_SKIP") && !v.is_empty() {
                    valid_regex(k, v)?;
                }
            }
            if let Some((file, contents)) = &c.repo_config {
                set_env(
                    &mut m["spec"],
                    "KUBE_TEST_REPO_LIST",
                    Some(&format!("{CONFIG_DIR}/{file}")),
                );
                config_maps.push((name.clone(), json!({file.as_str(): contents})));
                let vol = format!("sonobuoy-{name}-vol");
                if !m["extra-volumes"].is_array() {
                    m["extra-volumes"] = json!([]);
                }
                m["extra-volumes"]
                    .as_array_mut()
                    .expect("an array")
                    .push(json!({"name": vol, "configMap": {"name": format!("plugin-{name}-cm")}}));
                if !m["spec"]["volumeMounts"].is_array() {
                    m["spec"]["volumeMounts"] = json!([]);
                }
                m["spec"]["volumeMounts"]
                    .as_array_mut()
                    .expect("an array")
                    .push(json!({"name": vol, "mountPath": CONFIG_DIR}));
            }
        }
        if let Some(env) = m["spec"]["env"].as_array_mut() {
            env.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
        }
    }
    Ok(Plan {
        plugins: plugins
            .into_iter()
            .map(|(n, m)| (n, serde_yaml_ng::to_string(&m).expect("YAML")))
            .collect(),
        config_maps,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(yaml: &str) -> Vec<(String, String)> {
        let v: Value = serde_yaml_ng::from_str(yaml).unwrap();
        v["spec"]["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["name"].as_str().unwrap().to_string(),
                    e["value"].as_str().unwrap_or("<from>").to_string(),
                )
            })
            .collect()
    }

    fn get<'a>(env: &'a [(String, String)], k: &str) -> Option<&'a str> {
        env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
    }

    fn both() -> Vec<PluginSource> {
        vec![
            PluginSource::Builtin(E2E),
            PluginSource::Builtin(SYSTEMD_LOGS),
        ]
    }

    #[test]
    fn the_default_is_non_disruptive_conformance_with_both_plugins_as_sonobuoy_makes_them() {
        let c = Choices {
            kubernetes_version: "v1.26.0".into(),
            ..Default::default()
        };
        let p = plan(&both(), &c).unwrap();
        assert_eq!(p.names(), ["e2e", "systemd-logs"]);
        let e2e: Value = serde_yaml_ng::from_str(&p.plugins[0].1).unwrap();
        assert_eq!(e2e["spec"]["image"], "registry.k8s.io/conformance:v1.26.0");
        assert_eq!(e2e["sonobuoy-config"]["result-format"], "junit");
        let env = env_of(&p.plugins[0].1);
        assert_eq!(get(&env, "E2E_FOCUS"), Some(r"\[Conformance\]"));
        assert_eq!(
            get(&env, "E2E_SKIP"),
            Some(r"\[Disruptive\]|NoExecuteTaintManager")
        );
        assert_eq!(get(&env, "E2E_PARALLEL"), Some("false"));
        assert_eq!(
            get(&env, "E2E_EXTRA_ARGS"),
            Some("--progress-report-url=http://localhost:8099/progress")
        );
        assert_eq!(get(&env, "SONOBUOY_K8S_VERSION"), Some("v1.26.0"));
        let names: Vec<&str> = env.iter().map(|(n, _)| n.as_str()).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        let logs: Value = serde_yaml_ng::from_str(&p.plugins[1].1).unwrap();
        assert_eq!(logs["sonobuoy-config"]["driver"], "DaemonSet");
        assert_eq!(logs["spec"]["securityContext"]["privileged"], true);
        assert_eq!(
            p.images(),
            ["registry.k8s.io/conformance:v1.26.0", SYSTEMD_LOGS_IMAGE]
        );
    }

    #[test]
    fn modes_then_flags_then_plugin_env_then_rerun_set_the_e2e_env() {
        let mut c = Choices {
            mode: "conformance-lite".parse().unwrap(),
            kubernetes_version: "v1.26.0".into(),
            ..Default::default()
        };
        let env = env_of(&plan(&both(), &c).unwrap().plugins[0].1);
        assert_eq!(get(&env, "E2E_PARALLEL"), Some("true"));
        let skip = get(&env, "E2E_SKIP").unwrap();
        assert!(skip.starts_with("Serial|Slow|Disruptive|"), "{skip}");
        // Two spaces in a name stay two; quotes become wildcards.
        assert!(skip.contains(r"DNS should provide DNS for services  \[Conformance\]"));
        assert!(skip.contains(r"exec .cat /tmp/health. liveness"));
        assert!(regex::Regex::new(skip).is_ok());

        c.focus = Some("Lease".into());
        c.plugin_env = vec![
            "e2e.E2E_SKIP=Slow".parse().unwrap(),
            "e2e.E2E_EXTRA_ARGS".parse().unwrap(),
            "systemd-logs.EXTRA=1".parse().unwrap(),
        ];
        let p = plan(&both(), &c).unwrap();
        let env = env_of(&p.plugins[0].1);
        assert_eq!(get(&env, "E2E_FOCUS"), Some("Lease"));
        assert_eq!(get(&env, "E2E_SKIP"), Some("Slow"));
        assert_eq!(get(&env, "E2E_EXTRA_ARGS"), None);
        assert_eq!(get(&env_of(&p.plugins[1].1), "EXTRA"), Some("1"));

        c.rerun = Some(vec![
            "[It] [sig-network] DNS should provide DNS for services  [Conformance]".into(),
            "plain (name)".into(),
        ]);
        let env = env_of(&plan(&both(), &c).unwrap().plugins[0].1);
        assert_eq!(
            get(&env, "E2E_FOCUS"),
            Some(
                r" \[sig-network\] DNS should provide DNS for services  \[Conformance\]|plain \(name\)"
            )
        );
        assert_eq!(get(&env, "E2E_SKIP"), Some(""));
    }

    #[test]
    fn bad_choices_are_refused_before_anything_runs() {
        assert!("fast".parse::<Mode>().unwrap_err().contains("quick"));
        assert!("nodot".parse::<EnvOverride>().is_err());
        assert!("e2e.=1".parse::<EnvOverride>().is_err());
        let c = Choices {
            plugin_env: vec!["nope.X=1".parse().unwrap()],
            ..Default::default()
        };
        let e = plan(&both(), &c).unwrap_err().to_string();
        assert!(e.contains("no such plugin"), "{e}");
        let c = Choices {
            focus: Some("[unclosed".into()),
            ..Default::default()
        };
        let e = plan(&both(), &c).unwrap_err().to_string();
        assert!(e.contains("not a regular expression"), "{e}");
        let e = plan(
            &[PluginSource::Builtin(E2E), PluginSource::Builtin(E2E)],
            &Choices::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("chosen twice"), "{e}");
    }

    #[test]
    fn a_repo_config_is_a_config_map_mounted_where_kube_test_repo_list_points() {
        let c = Choices {
            kubernetes_version: "v1.26.0".into(),
            conformance_image: Some("mirror.example/conformance:v1.26.0".into()),
            repo_config: Some((
                "repos.yaml".into(),
                "dockerLibraryRegistry: mirror.example\n".into(),
            )),
            ..Default::default()
        };
        let p = plan(&[PluginSource::Builtin(E2E)], &c).unwrap();
        let m: Value = serde_yaml_ng::from_str(&p.plugins[0].1).unwrap();
        assert_eq!(m["spec"]["image"], "mirror.example/conformance:v1.26.0");
        assert_eq!(
            get(&env_of(&p.plugins[0].1), "KUBE_TEST_REPO_LIST"),
            Some("/tmp/sonobuoy/config/repos.yaml")
        );
        assert_eq!(m["extra-volumes"][0]["configMap"]["name"], "plugin-e2e-cm");
        assert_eq!(m["spec"]["volumeMounts"][0]["mountPath"], CONFIG_DIR);
        assert_eq!(
            p.config_maps,
            [(
                "e2e".to_string(),
                json!({"repos.yaml": "dockerLibraryRegistry: mirror.example\n"})
            )]
        );
    }

    #[test]
    fn quote_meta_escapes_what_go_escapes() {
        assert_eq!(
            quote_meta(r"a.b*c [x] (y) {z} ^$|+?\"),
            r"a\.b\*c \[x\] \(y\) \{z\} \^\$\|\+\?\\"
        );
    }
}
