//! `buoy manifest`: everything a run needs, as one multi-document YAML for `kubectl apply -f -`:
//! the namespace, service account and RBAC, the config and plugins ConfigMaps, the aggregator
//! pod `sonobuoy` (container `kube-sonobuoy`, labels `component=sonobuoy`,
//! `sonobuoy-component=aggregator`) and its service. Names follow Sonobuoy's, so its CLI
//! (`status`, `retrieve`, `delete`) finds them.

use serde_json::{json, Value};

/// The aggregator pod's plain-HTTP status page, on the pod's loopback only: reached with
/// `kubectl -n sonobuoy port-forward pod/sonobuoy 8081`.
pub const STATUS_PAGE_PORT: u16 = 8081;

#[derive(Debug, Clone)]
pub struct ManifestOptions {
    pub namespace: String,
    /// The image holding Buoy at `/sonobuoy`, for the aggregator.
    pub image: String,
    /// The image the plugin pods' worker runs (default: the aggregator image).
    pub worker_image: Option<String>,
    pub image_pull_policy: String,
    pub timeout_seconds: u64,
    /// Plugin manifests: a file name (for the ConfigMap key order) and the YAML text as given.
    pub plugins: Vec<String>,
    /// Plugins' own ConfigMaps, `plugin-<name>-cm` (what `--e2e-repo-config` gives e2e).
    pub config_maps: Vec<(String, Value)>,
    pub log_level: String,
}

impl Default for ManifestOptions {
    fn default() -> Self {
        Self {
            namespace: "sonobuoy".into(),
            image: format!("buoy:{}", buoy_wire::BUOY_VERSION),
            worker_image: None,
            image_pull_policy: "IfNotPresent".into(),
            timeout_seconds: 21600,
            plugins: Vec::new(),
            config_maps: Vec::new(),
            log_level: "info".into(),
        }
    }
}

/// The run's `config.json`, as the aggregator reads it from `/etc/sonobuoy`.
pub fn config_json(o: &ManifestOptions, plugin_names: &[String]) -> Value {
    json!({
        "Description": "Buoy run",
        "UUID": "",
        "Version": buoy_wire::SONOBUOY_COMPAT_VERSION,
        "ResultsDir": "/tmp/sonobuoy/results",
        "Resources": null,
        "Filters": {"Namespaces": ".*", "LabelSelector": ""},
        "Limits": {"PodLogs": {"Namespaces": "", "SonobuoyNamespace": true, "FieldSelectors": [], "LabelSelector": "", "Previous": false, "SinceSeconds": null, "SinceTime": null, "Timestamps": false, "TailLines": null, "LimitBytes": null}},
        "QPS": 30,
        "Burst": 50,
        "Server": {"bindaddress": "0.0.0.0", "bindport": 8080, "advertiseaddress": "", "timeoutseconds": o.timeout_seconds},
        "Plugins": plugin_names.iter().map(|n| json!({"name": n})).collect::<Vec<_>>(),
        "PluginSearchPath": ["./plugins.d", "/etc/sonobuoy/plugins.d", "~/sonobuoy/plugins.d"],
        "Namespace": o.namespace,
        "WorkerImage": o.worker_image.clone().unwrap_or_else(|| o.image.clone()),
        "ImagePullPolicy": o.image_pull_policy,
        "ImagePullSecrets": "",
        "ProgressUpdatesPort": "8099",
    })
}

/// Every object of a run, in apply order. `plugin_names` are the `plugin-name`s of
/// `o.plugins`, in the same order.
pub fn objects(o: &ManifestOptions, plugin_names: &[String]) -> Vec<Value> {
    let ns = &o.namespace;
    let labels = json!({"component": "sonobuoy", "namespace": ns});
    let role = format!("sonobuoy-serviceaccount-{ns}");
    let plugin_data: serde_json::Map<String, Value> = o
        .plugins
        .iter()
        .enumerate()
        .map(|(i, text)| (format!("plugin-{i}.yaml"), Value::String(text.clone())))
        .collect();
    let config = serde_json::to_string_pretty(&config_json(o, plugin_names)).expect("JSON");
    let mut out = vec![
        // Privileged under Pod Security admission: systemd-logs reads the nodes' journals.
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns,
               "labels": {"pod-security.kubernetes.io/enforce": "privileged"}}}),
        json!({"apiVersion": "v1", "kind": "ServiceAccount",
               "metadata": {"name": "sonobuoy-serviceaccount", "namespace": ns, "labels": labels}}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": role, "labels": labels},
        "rules": [
            {"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
            {"nonResourceURLs": ["/metrics", "/logs", "/logs/*"], "verbs": ["get"]}
        ]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
               "metadata": {"name": role, "labels": labels},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
               "subjects": [{"kind": "ServiceAccount", "name": "sonobuoy-serviceaccount", "namespace": ns}]}),
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": "sonobuoy-config-cm", "namespace": ns, "labels": labels},
               "data": {"config.json": config}}),
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": "sonobuoy-plugins-cm", "namespace": ns, "labels": labels},
               "data": plugin_data}),
        json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "sonobuoy", "namespace": ns,
                     "labels": {"component": "sonobuoy", "sonobuoy-component": "aggregator", "tier": "sonobuoy-automation"}},
        "spec": {
            "serviceAccountName": "sonobuoy-serviceaccount",
            "restartPolicy": "OnFailure",
            "tolerations": [{"key": "kubernetes.io/e2e-evict-taint-key", "operator": "Exists"}],
            "containers": [{
                "name": "kube-sonobuoy",
                "image": o.image,
                "imagePullPolicy": o.image_pull_policy,
                "command": ["/sonobuoy"],
                "args": ["aggregator", "--no-exit", format!("--status-page=127.0.0.1:{STATUS_PAGE_PORT}"), format!("--level={}", o.log_level), "-v=4", "--alsologtostderr"],
                "env": [
                    {"name": "SONOBUOY_ADVERTISE_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                ],
                "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                "volumeMounts": [
                    {"name": "sonobuoy-config-volume", "mountPath": "/etc/sonobuoy"},
                    {"name": "sonobuoy-plugins-volume", "mountPath": "/plugins.d"},
                    {"name": "output-volume", "mountPath": "/tmp/sonobuoy"},
                ],
            }],
            "volumes": [
                {"name": "sonobuoy-config-volume", "configMap": {"name": "sonobuoy-config-cm"}},
                {"name": "sonobuoy-plugins-volume", "configMap": {"name": "sonobuoy-plugins-cm"}},
                {"name": "output-volume", "emptyDir": {}},
            ],
        }}),
        json!({"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": "sonobuoy-aggregator", "namespace": ns, "labels": {"component": "sonobuoy", "sonobuoy-component": "aggregator"}},
               "spec": {"selector": {"sonobuoy-component": "aggregator"},
                        "ports": [{"port": 8080, "protocol": "TCP", "targetPort": 8080}],
                        "type": "ClusterIP"}}),
    ];
    // The plugins' own ConfigMaps, before the aggregator pod that launches the plugins.
    let pod_at = out
        .iter()
        .position(|o| o["kind"] == "Pod")
        .unwrap_or(out.len());
    for (i, (plugin, data)) in o.config_maps.iter().enumerate() {
        out.insert(
            pod_at + i,
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                   "metadata": {"name": format!("plugin-{plugin}-cm"), "namespace": ns, "labels": labels},
                   "data": data}),
        );
    }
    out
}

/// The objects as one multi-document YAML stream.
pub fn render(objects: &[Value]) -> String {
    let mut out = String::new();
    for o in objects {
        out.push_str("---\n");
        out.push_str(&serde_yaml_ng::to_string(o).expect("YAML"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Service, ServiceAccount};
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};

    /// Decoding into the typed object and encoding again must give back the same JSON: a
    /// misspelt or misplaced field would be dropped on the way.
    fn round_trips<T: serde::de::DeserializeOwned + serde::Serialize>(v: &Value) {
        let typed: T = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(&serde_json::to_value(typed).unwrap(), v);
    }

    #[test]
    fn every_object_is_a_valid_kubernetes_object() {
        let o = ManifestOptions {
            plugins: vec!["sonobuoy-config: {driver: Job, plugin-name: e2e}\n".into()],
            ..Default::default()
        };
        let objs = objects(&o, &["e2e".into()]);
        let kinds: Vec<&str> = objs.iter().map(|o| o["kind"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            [
                "Namespace",
                "ServiceAccount",
                "ClusterRole",
                "ClusterRoleBinding",
                "ConfigMap",
                "ConfigMap",
                "Pod",
                "Service"
            ]
        );
        round_trips::<Namespace>(&objs[0]);
        round_trips::<ServiceAccount>(&objs[1]);
        round_trips::<ClusterRole>(&objs[2]);
        round_trips::<ClusterRoleBinding>(&objs[3]);
        round_trips::<ConfigMap>(&objs[4]);
        round_trips::<ConfigMap>(&objs[5]);
        round_trips::<Pod>(&objs[6]);
        round_trips::<Service>(&objs[7]);
        let pod = &objs[6];
        assert_eq!(pod["metadata"]["name"], "sonobuoy");
        assert_eq!(
            pod["metadata"]["labels"]["sonobuoy-component"],
            "aggregator"
        );
        assert_eq!(pod["spec"]["containers"][0]["name"], "kube-sonobuoy");
        // A crashed aggregator is restarted in the same pod, on the same emptyDir, where it
        // finds its run record and carries the run on.
        assert_eq!(pod["spec"]["restartPolicy"], "OnFailure");
        assert_eq!(
            pod["spec"]["volumes"][2],
            json!({"name": "output-volume", "emptyDir": {}})
        );
        assert_eq!(
            pod["spec"]["containers"][0]["volumeMounts"][2]["mountPath"],
            crate::objects::SONOBUOY_DIR
        );
        assert_eq!(
            pod["spec"]["containers"][0]["command"],
            json!(["/sonobuoy"])
        );
        assert_eq!(
            objs[5]["data"]["plugin-0.yaml"],
            "sonobuoy-config: {driver: Job, plugin-name: e2e}\n"
        );
        let cfg: Value =
            serde_json::from_str(objs[4]["data"]["config.json"].as_str().unwrap()).unwrap();
        assert_eq!(cfg["Plugins"], json!([{"name": "e2e"}]));
        // The config the manifest carries is one the aggregator loads.
        let c =
            crate::config::ClusterConfig::parse(None, &cfg.to_string(), &|_: &str| None).unwrap();
        assert_eq!(c.selection, Some(vec!["e2e".to_string()]));
        let yaml = render(&objs);
        assert_eq!(yaml.matches("\n---\n").count() + 1, 8);
    }
}
