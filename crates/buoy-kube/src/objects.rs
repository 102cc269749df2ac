//! The objects the drivers create (compat §6.7): the TLS Secret, the Job driver's bare Pod and
//! the DaemonSet driver's DaemonSet, with Sonobuoy's names, labels, annotations, owner reference,
//! default pod specs and the `sonobuoy-worker` container. Pure functions: no API calls here.

use std::collections::BTreeMap;

use buoy_wire::manifest::{Driver, Manifest};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use serde_json::{json, Value};

use crate::error::KubeError;

pub const WORKER_CONTAINER: &str = "sonobuoy-worker";
/// The aggregator's output root inside its pod (v0.57).
pub const SONOBUOY_DIR: &str = "/tmp/sonobuoy";

/// A new session ID: the first 8 bytes of a random UUIDv4, as 16 lowercase hex characters.
pub fn session_id() -> String {
    hex::encode(&uuid::Uuid::new_v4().as_bytes()[..8])
}

/// Everything besides the manifest that the objects of one plugin instance depend on.
#[derive(Debug, Clone)]
pub struct DriverContext {
    pub namespace: String,
    pub worker_image: String,
    pub image_pull_policy: String,
    pub image_pull_secrets: String,
    pub custom_annotations: BTreeMap<String, String>,
    pub progress_port: String,
    /// The plugins' results directory.
    pub results_dir: String,
    /// `host:port` workers reach the aggregator at.
    pub advertise_address: String,
    pub ca_pem: String,
    pub owner: OwnerReference,
    /// Until when the plugin may deliver (its launch plus its timeout, RFC 3339): Buoy's
    /// worker keeps retrying its upload until then.
    pub result_deadline: Option<String>,
}

/// The owner reference every object carries: the aggregator pod, so that deleting it removes
/// everything the run created.
pub fn owner_reference(pod: &Pod) -> OwnerReference {
    OwnerReference {
        api_version: "v1".into(),
        kind: "Pod".into(),
        name: pod.metadata.name.clone().unwrap_or_default(),
        uid: pod.metadata.uid.clone().unwrap_or_default(),
        ..Default::default()
    }
}

pub fn secret_name(plugin: &str, sid: &str) -> String {
    format!("sonobuoy-plugin-{plugin}-{sid}")
}

pub fn pod_name(plugin: &str, sid: &str) -> String {
    format!("sonobuoy-{plugin}-job-{sid}")
}

pub fn daemonset_name(plugin: &str, sid: &str) -> String {
    format!("sonobuoy-{plugin}-daemon-set-{sid}")
}

/// The label selector of one plugin instance's objects.
pub fn run_selector(sid: &str) -> String {
    format!("sonobuoy-run={sid}")
}

fn labels(plugin: &str, sid: &str) -> Value {
    json!({
        "component": "sonobuoy",
        "sonobuoy-component": "plugin",
        "sonobuoy-plugin": plugin,
        "sonobuoy-run": sid,
        "tier": "analysis",
    })
}

fn annotations(m: &Manifest, ctx: &DriverContext) -> Value {
    let mut a = serde_json::Map::new();
    a.insert("sonobuoy-driver".into(), m.config.driver.clone().into());
    a.insert("sonobuoy-plugin".into(), m.name().into());
    for (k, v) in &ctx.custom_annotations {
        a.insert(k.clone(), v.clone().into());
    }
    Value::Object(a)
}

fn metadata(m: &Manifest, ctx: &DriverContext, name: String, sid: &str) -> Value {
    json!({
        "name": name,
        "namespace": ctx.namespace,
        "labels": labels(m.name(), sid),
        "annotations": annotations(m, ctx),
        "ownerReferences": [ctx.owner],
    })
}

/// The TLS Secret holding a plugin's client certificate and SEC1 key.
pub fn tls_secret(
    plugin: &str,
    sid: &str,
    ctx: &DriverContext,
    cert_pem: &str,
    key_pem: &str,
) -> Secret {
    let mut data = BTreeMap::new();
    data.insert(
        "tls.crt".to_string(),
        k8s_openapi::ByteString(cert_pem.as_bytes().to_vec()),
    );
    data.insert(
        "tls.key".to_string(),
        k8s_openapi::ByteString(key_pem.as_bytes().to_vec()),
    );
    Secret {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some(secret_name(plugin, sid)),
            namespace: Some(ctx.namespace.clone()),
            owner_references: Some(vec![ctx.owner.clone()]),
            ..Default::default()
        },
        type_: Some("kubernetes.io/tls".into()),
        data: Some(data),
        ..Default::default()
    }
}

/// The `sonobuoy-worker` container (v0.57 command, args and env, plus the plugin container's
/// own env merged in after them).
pub fn worker_container(m: &Manifest, sid: &str, ctx: &DriverContext) -> Value {
    let secret = secret_name(m.name(), sid);
    let field = |path: &str| json!({"fieldRef": {"fieldPath": path}});
    let key = |k: &str| json!({"secretKeyRef": {"name": secret, "key": k}});
    let mut env = vec![
        json!({"name": "NODE_NAME", "valueFrom": field("spec.nodeName")}),
        json!({"name": "RESULTS_DIR", "value": ctx.results_dir}),
        json!({"name": "SONOBUOY_RESULTS_DIR", "value": ctx.results_dir}),
        json!({"name": "RESULT_TYPE", "value": m.name()}),
        json!({"name": "AGGREGATOR_URL", "value": format!("https://{}", ctx.advertise_address)}),
        json!({"name": "CA_CERT", "value": ctx.ca_pem}),
        json!({"name": "CLIENT_CERT", "valueFrom": key("tls.crt")}),
        json!({"name": "CLIENT_KEY", "valueFrom": key("tls.key")}),
        json!({"name": "SONOBUOY_PROGRESS_PORT", "value": ctx.progress_port}),
        json!({"name": "SONOBUOY_DIR", "value": SONOBUOY_DIR}),
        json!({"name": "SONOBUOY_NS", "valueFrom": field("metadata.namespace")}),
        json!({"name": "SONOBUOY_PLUGIN_POD", "valueFrom": field("metadata.name")}),
        json!({"name": "SONOBUOY_WORKER_CONTAINER", "value": WORKER_CONTAINER}),
    ];
    if let Some(d) = &ctx.result_deadline {
        env.push(json!({"name": buoy_wire::RESULT_DEADLINE_ENV, "value": d}));
    }
    if let Some(plugin_env) = m.raw.pointer("/spec/env").and_then(Value::as_array) {
        for e in plugin_env {
            if !env.iter().any(|w| w["name"] == e["name"]) {
                env.push(e.clone());
            }
        }
    }
    // Flags every Sonobuoy worker since v0.16 accepts (glog's); v0.57's `--level=trace` is left
    // out because v0.16-v0.20 workers exit on it as an unknown flag.
    let (command, args): (Vec<&str>, Vec<&str>) = match m.driver {
        Driver::Job => (
            vec!["/sonobuoy"],
            vec!["worker", "global", "-v=6", "--logtostderr"],
        ),
        Driver::DaemonSet => (
            vec![
                "/sonobuoy",
                "worker",
                "single-node",
                "-v=6",
                "--logtostderr",
                "--sleep=-1",
            ],
            vec![],
        ),
    };
    let mut c = json!({
        "name": WORKER_CONTAINER,
        "image": ctx.worker_image,
        "imagePullPolicy": ctx.image_pull_policy,
        "command": command,
        "env": env,
        "volumeMounts": [{"name": "results", "mountPath": ctx.results_dir, "readOnly": false}],
    });
    if !args.is_empty() {
        c["args"] = json!(args);
    }
    c
}

fn default_pod_spec(driver: Driver) -> Value {
    match driver {
        Driver::Job => json!({
            "restartPolicy": "Never",
            "serviceAccountName": "sonobuoy-serviceaccount",
            "nodeSelector": {"kubernetes.io/os": "linux"},
            "tolerations": [
                {"key": "node-role.kubernetes.io/master", "operator": "Exists", "effect": "NoSchedule"},
                {"key": "CriticalAddonsOnly", "operator": "Exists"},
                {"key": "kubernetes.io/e2e-evict-taint-key", "operator": "Exists"},
            ],
        }),
        Driver::DaemonSet => json!({
            "dnsPolicy": "ClusterFirstWithHostNet",
            "hostIPC": true,
            "hostNetwork": true,
            "hostPID": true,
            "serviceAccountName": "sonobuoy-serviceaccount",
            "tolerations": [{"operator": "Exists"}],
            "volumes": [{"name": "root", "hostPath": {"path": "/"}}],
        }),
    }
}

fn push(spec: &mut Value, field: &str, item: Value) {
    let slot = &mut spec[field];
    if !slot.is_array() {
        *slot = Value::Array(vec![]);
    }
    slot.as_array_mut().expect("an array").push(item);
}

/// The pod spec of a plugin instance: the plugin's `podSpec` as given, or the driver's
/// default; then the plugin container, the worker, the pull secret, `results` and the
/// `extra-volumes`.
pub fn pod_spec(m: &Manifest, sid: &str, ctx: &DriverContext) -> Value {
    let mut spec = match m.raw.get("podSpec") {
        Some(p) if p.is_object() => p.clone(),
        _ => default_pod_spec(m.driver),
    };
    if let Some(c) = m.raw.get("spec").filter(|c| c.is_object()) {
        push(&mut spec, "containers", c.clone());
    }
    push(&mut spec, "containers", worker_container(m, sid, ctx));
    if !ctx.image_pull_secrets.is_empty() {
        push(
            &mut spec,
            "imagePullSecrets",
            json!({"name": ctx.image_pull_secrets}),
        );
    }
    push(
        &mut spec,
        "volumes",
        json!({"name": "results", "emptyDir": {}}),
    );
    if let Some(extra) = m.raw.get("extra-volumes").and_then(Value::as_array) {
        for v in extra {
            push(&mut spec, "volumes", v.clone());
        }
    }
    spec
}

fn typed<T: serde::de::DeserializeOwned>(plugin: &str, v: Value) -> Result<T, KubeError> {
    serde_json::from_value(v).map_err(|e| KubeError::Plugin {
        plugin: plugin.to_string(),
        reason: format!("its pod spec is not valid: {e}"),
    })
}

/// The Job driver's bare Pod `sonobuoy-<plugin>-job-<sid>`.
pub fn job_pod(m: &Manifest, sid: &str, ctx: &DriverContext) -> Result<Pod, KubeError> {
    typed(
        m.name(),
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": metadata(m, ctx, pod_name(m.name(), sid), sid),
            "spec": pod_spec(m, sid, ctx),
        }),
    )
}

/// The DaemonSet driver's `sonobuoy-<plugin>-daemon-set-<sid>`.
pub fn daemonset(m: &Manifest, sid: &str, ctx: &DriverContext) -> Result<DaemonSet, KubeError> {
    typed(
        m.name(),
        json!({
            "apiVersion": "apps/v1",
            "kind": "DaemonSet",
            "metadata": metadata(m, ctx, daemonset_name(m.name(), sid), sid),
            "spec": {
                "selector": {"matchLabels": {"sonobuoy-run": sid}},
                "template": {
                    "metadata": {
                        "labels": labels(m.name(), sid),
                        "annotations": ctx.custom_annotations,
                    },
                    "spec": pod_spec(m, sid, ctx),
                },
            },
        }),
    )
}

/// `plugins/<p>/definition.json`: the driver object with Go's field names.
pub fn definition_json(m: &Manifest, sid: &str, ctx: &DriverContext, cleaned_up: bool) -> Value {
    json!({
        "Definition": m.raw,
        "SessionID": sid,
        "Namespace": ctx.namespace,
        "SonobuoyImage": ctx.worker_image,
        "CleanedUp": cleaned_up,
        "ImagePullPolicy": ctx.image_pull_policy,
        "ImagePullSecrets": ctx.image_pull_secrets,
        "CustomAnnotations": if ctx.custom_annotations.is_empty() { Value::Null } else { json!(ctx.custom_annotations) },
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::path::Path;

    pub fn manifest(yaml: &str) -> Manifest {
        Manifest::parse(Path::new("test.yaml"), yaml).unwrap()
    }

    pub fn ctx() -> DriverContext {
        DriverContext {
            namespace: "sonobuoy".into(),
            worker_image: "buoy:test".into(),
            image_pull_policy: "IfNotPresent".into(),
            image_pull_secrets: String::new(),
            custom_annotations: BTreeMap::new(),
            progress_port: "8099".into(),
            results_dir: "/tmp/sonobuoy/results".into(),
            advertise_address: "10.0.0.9:8080".into(),
            ca_pem: "-----BEGIN CERTIFICATE-----\nCA\n-----END CERTIFICATE-----\n".into(),
            owner: OwnerReference {
                api_version: "v1".into(),
                kind: "Pod".into(),
                name: "sonobuoy".into(),
                uid: "uid-1".into(),
                ..Default::default()
            },
            result_deadline: None,
        }
    }

    pub const JOB: &str = "sonobuoy-config: {driver: Job, plugin-name: e2e, result-format: junit}\nspec:\n  name: e2e\n  image: e2e:1\n  env: [{name: E2E_FOCUS, value: Conformance}, {name: RESULTS_DIR, value: /ignored}]\n";
    pub const DS: &str = "sonobuoy-config: {driver: DaemonSet, plugin-name: systemd-logs}\nspec: {name: systemd-logs, image: logs:1}\nextra-volumes: [{name: x, hostPath: {path: /var/x}}]\n";

    #[test]
    fn session_ids_are_16_lowercase_hex() {
        let s = session_id();
        assert_eq!(s.len(), 16);
        assert!(s
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_ne!(s, session_id());
    }

    #[test]
    fn job_pod_has_sonobuoys_shape() {
        let m = manifest(JOB);
        let mut c = ctx();
        c.image_pull_secrets = "regcred".into();
        c.custom_annotations
            .insert("team".into(), "conformance".into());
        let pod = serde_json::to_value(job_pod(&m, "0123456789abcdef", &c).unwrap()).unwrap();
        assert_eq!(pod["metadata"]["name"], "sonobuoy-e2e-job-0123456789abcdef");
        assert_eq!(pod["metadata"]["namespace"], "sonobuoy");
        let l = &pod["metadata"]["labels"];
        assert_eq!(l["component"], "sonobuoy");
        assert_eq!(l["sonobuoy-component"], "plugin");
        assert_eq!(l["sonobuoy-plugin"], "e2e");
        assert_eq!(l["sonobuoy-run"], "0123456789abcdef");
        assert_eq!(l["tier"], "analysis");
        let a = &pod["metadata"]["annotations"];
        assert_eq!(a["sonobuoy-driver"], "Job");
        assert_eq!(a["sonobuoy-plugin"], "e2e");
        assert_eq!(a["team"], "conformance");
        assert_eq!(pod["metadata"]["ownerReferences"][0]["kind"], "Pod");
        assert_eq!(pod["metadata"]["ownerReferences"][0]["uid"], "uid-1");
        let spec = &pod["spec"];
        assert_eq!(spec["restartPolicy"], "Never");
        assert_eq!(spec["serviceAccountName"], "sonobuoy-serviceaccount");
        assert_eq!(spec["nodeSelector"]["kubernetes.io/os"], "linux");
        assert_eq!(spec["tolerations"].as_array().unwrap().len(), 3);
        let cs = spec["containers"].as_array().unwrap();
        assert_eq!(cs.len(), 2);
        assert_eq!(cs[0]["name"], "e2e");
        let w = &cs[1];
        assert_eq!(w["name"], WORKER_CONTAINER);
        assert_eq!(w["image"], "buoy:test");
        assert_eq!(w["command"], json!(["/sonobuoy"]));
        assert_eq!(
            w["args"],
            json!(["worker", "global", "-v=6", "--logtostderr"])
        );
        assert_eq!(w["volumeMounts"][0]["mountPath"], "/tmp/sonobuoy/results");
        let env: Vec<&str> = w["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            env,
            [
                "NODE_NAME",
                "RESULTS_DIR",
                "SONOBUOY_RESULTS_DIR",
                "RESULT_TYPE",
                "AGGREGATOR_URL",
                "CA_CERT",
                "CLIENT_CERT",
                "CLIENT_KEY",
                "SONOBUOY_PROGRESS_PORT",
                "SONOBUOY_DIR",
                "SONOBUOY_NS",
                "SONOBUOY_PLUGIN_POD",
                "SONOBUOY_WORKER_CONTAINER",
                "E2E_FOCUS"
            ]
        );
        let by = |n: &str| {
            w["env"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["name"] == n)
                .unwrap()
                .clone()
        };
        assert_eq!(by("AGGREGATOR_URL")["value"], "https://10.0.0.9:8080");
        assert_eq!(by("CA_CERT")["value"], c.ca_pem.as_str());
        assert_eq!(by("RESULTS_DIR")["value"], "/tmp/sonobuoy/results");
        assert_eq!(
            by("CLIENT_KEY")["valueFrom"]["secretKeyRef"],
            json!({"name": "sonobuoy-plugin-e2e-0123456789abcdef", "key": "tls.key"})
        );
        assert_eq!(spec["imagePullSecrets"], json!([{"name": "regcred"}]));
        assert_eq!(
            spec["volumes"],
            json!([{"name": "results", "emptyDir": {}}])
        );
    }

    #[test]
    fn daemonset_has_sonobuoys_shape() {
        let m = manifest(DS);
        let mut c = ctx();
        c.custom_annotations.insert("team".into(), "x".into());
        let ds = serde_json::to_value(daemonset(&m, "00000000000000aa", &c).unwrap()).unwrap();
        assert_eq!(
            ds["metadata"]["name"],
            "sonobuoy-systemd-logs-daemon-set-00000000000000aa"
        );
        assert_eq!(
            ds["metadata"]["annotations"]["sonobuoy-driver"],
            "DaemonSet"
        );
        assert_eq!(
            ds["spec"]["selector"],
            json!({"matchLabels": {"sonobuoy-run": "00000000000000aa"}})
        );
        let t = &ds["spec"]["template"];
        assert_eq!(t["metadata"]["labels"]["sonobuoy-plugin"], "systemd-logs");
        assert_eq!(t["metadata"]["annotations"], json!({"team": "x"}));
        let spec = &t["spec"];
        assert_eq!(spec["hostPID"], true);
        assert_eq!(spec["hostNetwork"], true);
        assert_eq!(spec["hostIPC"], true);
        assert_eq!(spec["dnsPolicy"], "ClusterFirstWithHostNet");
        assert_eq!(spec["tolerations"], json!([{"operator": "Exists"}]));
        let vols: Vec<&str> = spec["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["name"].as_str().unwrap())
            .collect();
        assert_eq!(vols, ["root", "results", "x"]);
        let w = &spec["containers"][1];
        assert_eq!(
            w["command"],
            json!([
                "/sonobuoy",
                "worker",
                "single-node",
                "-v=6",
                "--logtostderr",
                "--sleep=-1"
            ])
        );
        assert!(w.get("args").is_none());
    }

    #[test]
    fn a_given_pod_spec_replaces_the_default_and_is_added_to() {
        let m = manifest("sonobuoy-config: {driver: Job, plugin-name: p}\nspec: {name: p, image: p}\npodSpec: {restartPolicy: OnFailure, containers: [{name: side, image: s}], volumes: [{name: v, emptyDir: {}}]}\n");
        let pod = serde_json::to_value(job_pod(&m, "s", &ctx()).unwrap()).unwrap();
        assert_eq!(pod["spec"]["restartPolicy"], "OnFailure");
        assert!(pod["spec"].get("tolerations").is_none());
        let names: Vec<&str> = pod["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["side", "p", WORKER_CONTAINER]);
        assert_eq!(pod["spec"]["volumes"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn tls_secret_holds_the_leaf_and_sec1_key() {
        let s = serde_json::to_value(tls_secret(
            "e2e",
            "sid",
            &ctx(),
            "CERT",
            "-----BEGIN EC PRIVATE KEY-----",
        ))
        .unwrap();
        assert_eq!(s["metadata"]["name"], "sonobuoy-plugin-e2e-sid");
        assert_eq!(s["type"], "kubernetes.io/tls");
        assert_eq!(s["data"]["tls.crt"], "Q0VSVA==");
        assert!(s["data"]["tls.key"].is_string());
        assert_eq!(s["metadata"]["ownerReferences"][0]["name"], "sonobuoy");
    }
}
