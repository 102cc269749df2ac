//! Every conversation Buoy has with the Kubernetes API, in one place: node listing, the
//! aggregator pod lookup, object creation, pod listing for monitoring, the status annotation
//! patch and cleanup. Callers never build requests themselves.

use std::collections::BTreeSet;
use std::path::Path;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Secret};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, PropagationPolicy};
use kube::Client;

use crate::error::{api_code, KubeError};

/// The label every plugin object of Sonobuoy's and Buoy's carries.
pub(crate) const PLUGIN_SELECTOR: &str = "component=sonobuoy,sonobuoy-component=plugin";

/// `Ok(true)` when the object was there (read or deleted), `Ok(false)` for a 404.
fn found<T>(
    r: Result<T, kube::Error>,
    context: impl FnOnce() -> String,
) -> Result<bool, KubeError> {
    match r {
        Ok(_) => Ok(true),
        Err(e) if api_code(&e) == Some(404) => Ok(false),
        Err(e) => Err(KubeError::api(context())(e)),
    }
}

/// The annotation the status is published in.
pub const STATUS_ANNOTATION: &str = "sonobuoy.hept.io/status";
pub const AGGREGATOR_SELECTOR: &str = "sonobuoy-component=aggregator";
pub const LEGACY_AGGREGATOR_SELECTOR: &str = "run=sonobuoy-master";
pub const DEFAULT_AGGREGATOR_POD: &str = "sonobuoy";
/// Objects per page of a list request; larger lists are fetched page by page.
pub const PAGE: u32 = 500;

/// Lists with `lp` `PAGE` objects at a time, following `continue` tokens until the list ends,
/// and hands each page's items to `take` before the next page is asked for.
async fn each_page<K: Clone, F, Fut>(
    lp: ListParams,
    mut fetch: F,
    mut take: impl FnMut(Vec<K>),
) -> Result<(), KubeError>
where
    F: FnMut(ListParams) -> Fut,
    Fut: std::future::Future<Output = Result<kube::core::ObjectList<K>, KubeError>>,
{
    let mut lp = lp.limit(PAGE);
    loop {
        let page = fetch(lp.clone()).await?;
        take(page.items);
        match page.metadata.continue_ {
            Some(c) if !c.is_empty() => lp = lp.continue_token(&c),
            _ => return Ok(()),
        }
    }
}

/// Percent-encodes a query value (selectors carry `=`, `,` and `!`).
pub fn query_escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn get_request(path_and_query: &str) -> http::Request<Vec<u8>> {
    http::Request::get(path_and_query)
        .header(http::header::ACCEPT, "application/json")
        .body(Vec::new())
        .expect("a GET request from a path")
}

/// A client bound to the run's namespace.
#[derive(Clone)]
pub struct KubeApi {
    client: Client,
    namespace: String,
}

/// What every request to the API server says it comes from (its audit log and priority and
/// fairness name Buoy by it).
pub const USER_AGENT: &str = concat!("buoy/", env!("CARGO_PKG_VERSION"));

/// `config` with Buoy's `User-Agent` on every request.
pub fn with_user_agent(mut config: kube::Config) -> kube::Config {
    config
        .headers
        .retain(|(name, _)| name != http::header::USER_AGENT);
    config.headers.push((
        http::header::USER_AGENT,
        http::HeaderValue::from_static(USER_AGENT),
    ));
    config
}

/// Builds a client from `kubeconfig`, or else the in-cluster config (falling back to
/// `$KUBECONFIG`/`~/.kube/config` outside a cluster).
pub async fn connect(kubeconfig: Option<&Path>) -> Result<Client, KubeError> {
    connect_to(kubeconfig, None).await
}

/// [`connect`], with the kubeconfig's `context` instead of its current one.
pub async fn connect_to(
    kubeconfig: Option<&Path>,
    context: Option<&str>,
) -> Result<Client, KubeError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let options = kube::config::KubeConfigOptions {
        context: context.map(str::to_string),
        ..Default::default()
    };
    let config = match (kubeconfig, context) {
        (Some(p), _) => {
            let kc = kube::config::Kubeconfig::read_from(p)
                .map_err(|e| KubeError::Client(format!("{}: {e}", p.display())))?;
            kube::Config::from_custom_kubeconfig(kc, &options)
                .await
                .map_err(|e| KubeError::Client(format!("{}: {e}", p.display())))?
        }
        (None, Some(_)) => kube::Config::from_kubeconfig(&options)
            .await
            .map_err(|e| KubeError::Client(e.to_string()))?,
        (None, None) => kube::Config::infer()
            .await
            .map_err(|e| KubeError::Client(e.to_string()))?,
    };
    Client::try_from(with_user_agent(config)).map_err(|e| KubeError::Client(e.to_string()))
}

/// What a status patch ran into.
#[derive(Debug)]
pub enum PatchError {
    /// 422: the annotation (with the pod's others) is over the API server's limit.
    TooLong(String),
    Other(KubeError),
}

impl KubeApi {
    pub fn new(client: Client, namespace: impl Into<String>) -> Self {
        Self {
            client,
            namespace: namespace.into(),
        }
    }

    /// A client from `kubeconfig` (or the in-cluster config, see [`connect`]) bound to
    /// `namespace`.
    pub async fn connect(
        kubeconfig: Option<&Path>,
        namespace: impl Into<String>,
    ) -> Result<Self, KubeError> {
        Ok(Self::new(connect(kubeconfig).await?, namespace))
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// Any kind in the run's namespace (the watches').
    pub(crate) fn namespaced<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = kube::core::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// Any kind across the cluster.
    pub(crate) fn cluster_wide<K>(&self) -> Api<K>
    where
        K: kube::Resource,
        K::DynamicType: Default,
    {
        Api::all(self.client.clone())
    }

    /// A GET of `path_and_query` (a discovery document, the server version, one page of a
    /// gathered list) decoded as JSON.
    pub async fn get_json(&self, path_and_query: &str) -> Result<serde_json::Value, KubeError> {
        self.client
            .request(get_request(path_and_query))
            .await
            .map_err(KubeError::api(format!("GET {path_and_query}")))
    }

    /// A GET of `path_and_query` whose body is read as it arrives (a pod's log).
    pub async fn get_stream(
        &self,
        path_and_query: &str,
    ) -> Result<impl futures_util::AsyncBufRead + use<>, KubeError> {
        self.client
            .request_stream(get_request(path_and_query))
            .await
            .map_err(KubeError::api(format!("GET {path_and_query}")))
    }

    /// A port-forward to `port` of `pod` in the run's namespace.
    pub async fn port_forward(
        &self,
        pod: &str,
        port: u16,
    ) -> Result<kube::api::Portforwarder, KubeError> {
        self.pods()
            .portforward(pod, &[port])
            .await
            .map_err(KubeError::api(format!("port-forward to {pod}:{port}")))
    }

    /// All nodes. Forbidden or Unauthorized means no nodes (v0.57): DaemonSet plugins then
    /// expect nothing.
    pub async fn list_nodes(&self) -> Result<Vec<Node>, KubeError> {
        match self.try_list_nodes().await {
            Ok(l) => Ok(l),
            Err(KubeError::Api { source: e, .. }) if matches!(api_code(&e), Some(401 | 403)) => {
                tracing::warn!(error = %e, "not allowed to list nodes; DaemonSet plugins expect no results");
                Ok(Vec::new())
            }
            Err(e) => Err(e),
        }
    }

    /// All nodes, with every error reported: names and labels only (all that choosing a
    /// DaemonSet's nodes reads), from a paged metadata-only list, so a large cluster's node
    /// status never enters memory.
    pub async fn try_list_nodes(&self) -> Result<Vec<Node>, KubeError> {
        let mut out = Vec::new();
        self.each_node_metadata("listing nodes", |items| {
            out.extend(items.into_iter().map(|n| Node {
                metadata: kube::api::ObjectMeta {
                    name: n.metadata.name,
                    labels: n.metadata.labels,
                    ..Default::default()
                },
                ..Default::default()
            }))
        })
        .await?;
        Ok(out)
    }

    /// Every node's metadata, a page at a time (no spec or status is sent), each page handed
    /// to `take` before the next is asked for.
    async fn each_node_metadata(
        &self,
        context: &'static str,
        take: impl FnMut(Vec<kube::core::PartialObjectMeta<Node>>),
    ) -> Result<(), KubeError> {
        let nodes = Api::<Node>::all(self.client.clone());
        each_page(
            ListParams::default(),
            |lp| {
                let nodes = nodes.clone();
                async move {
                    nodes
                        .list_metadata(&lp)
                        .await
                        .map_err(KubeError::api(context))
                }
            },
            take,
        )
        .await
    }

    /// The aggregator pod's name: label `sonobuoy-component=aggregator`, then the deprecated
    /// `run=sonobuoy-master`, then the name `sonobuoy`. The first match wins.
    pub async fn aggregator_pod_name(&self) -> Result<String, KubeError> {
        for selector in [AGGREGATOR_SELECTOR, LEGACY_AGGREGATOR_SELECTOR] {
            match self.list_pods(selector).await {
                Ok(pods) if !pods.is_empty() => {
                    if pods.len() > 1 {
                        tracing::warn!(
                            selector,
                            count = pods.len(),
                            "several aggregator pods; using the first"
                        );
                    }
                    if let Some(n) = pods[0].metadata.name.clone() {
                        return Ok(n);
                    }
                }
                Ok(_) => {}
                Err(e) if selector == AGGREGATOR_SELECTOR => {
                    tracing::warn!(error = %e, "listing aggregator pods failed; trying the deprecated label")
                }
                Err(e) => return Err(e),
            }
        }
        Ok(DEFAULT_AGGREGATOR_POD.to_string())
    }

    /// The aggregator pod itself (its UID is every plugin object's owner).
    pub async fn aggregator_pod(&self) -> Result<Pod, KubeError> {
        let name = self.aggregator_pod_name().await?;
        self.pods()
            .get_opt(&name)
            .await
            .map_err(KubeError::api(format!("reading pod {name}")))?
            .ok_or_else(|| KubeError::NoAggregatorPod(self.namespace.clone()))
    }

    pub async fn get_namespace(&self) -> Result<Namespace, KubeError> {
        Api::<Namespace>::all(self.client.clone())
            .get(&self.namespace)
            .await
            .map_err(KubeError::api(format!(
                "reading namespace {}",
                self.namespace
            )))
    }

    pub async fn get_pod(&self, name: &str) -> Result<Pod, KubeError> {
        self.pods()
            .get(name)
            .await
            .map_err(KubeError::api(format!("reading pod {name}")))
    }

    pub async fn create_secret(&self, s: &Secret) -> Result<(), KubeError> {
        let name = s.metadata.name.clone().unwrap_or_default();
        Api::<Secret>::namespaced(self.client.clone(), &self.namespace)
            .create(&PostParams::default(), s)
            .await
            .map_err(KubeError::api(format!("creating secret {name}")))?;
        Ok(())
    }

    pub async fn create_pod(&self, p: &Pod) -> Result<(), KubeError> {
        let name = p.metadata.name.clone().unwrap_or_default();
        self.pods()
            .create(&PostParams::default(), p)
            .await
            .map_err(KubeError::api(format!("creating pod {name}")))?;
        Ok(())
    }

    pub async fn create_daemonset(&self, d: &DaemonSet) -> Result<(), KubeError> {
        let name = d.metadata.name.clone().unwrap_or_default();
        Api::<DaemonSet>::namespaced(self.client.clone(), &self.namespace)
            .create(&PostParams::default(), d)
            .await
            .map_err(KubeError::api(format!("creating daemonset {name}")))?;
        Ok(())
    }

    pub async fn list_pods(&self, selector: &str) -> Result<Vec<Pod>, KubeError> {
        Ok(self
            .pods()
            .list(&ListParams::default().labels(selector))
            .await
            .map_err(KubeError::api(format!("listing pods {selector}")))?
            .items)
    }

    pub async fn list_daemonsets(&self, selector: &str) -> Result<Vec<DaemonSet>, KubeError> {
        Ok(
            Api::<DaemonSet>::namespaced(self.client.clone(), &self.namespace)
                .list(&ListParams::default().labels(selector))
                .await
                .map_err(KubeError::api(format!("listing daemonsets {selector}")))?
                .items,
        )
    }

    /// Whether the named Secret exists.
    pub async fn secret_exists(&self, name: &str) -> Result<bool, KubeError> {
        found(
            Api::<Secret>::namespaced(self.client.clone(), &self.namespace)
                .get_metadata(name)
                .await,
            || format!("reading secret {name}"),
        )
    }

    /// Whether the named pod exists.
    pub async fn pod_exists(&self, name: &str) -> Result<bool, KubeError> {
        found(self.pods().get_metadata(name).await, || {
            format!("reading pod {name}")
        })
    }

    /// The plugin instances whose Job pods or DaemonSets name `owner_uid` as their owner:
    /// `(plugin, session ID, DaemonSet?)`, from metadata-only lists (a DaemonSet's own pods
    /// are owned by it, so they never count).
    pub async fn owned_plugin_instances(
        &self,
        owner_uid: &str,
    ) -> Result<BTreeSet<(String, String, bool)>, KubeError> {
        let lp = ListParams::default().labels(PLUGIN_SELECTOR);
        let owned = |m: &kube::api::ObjectMeta| {
            m.owner_references
                .iter()
                .flatten()
                .any(|o| o.uid == owner_uid)
        };
        let instance = |m: kube::api::ObjectMeta, ds: bool| {
            let labels = m.labels.unwrap_or_default();
            Some((
                labels.get("sonobuoy-plugin")?.clone(),
                labels.get("sonobuoy-run")?.clone(),
                ds,
            ))
        };
        let mut out = BTreeSet::new();
        let pods = self.pods();
        each_page(
            lp.clone(),
            |lp| {
                let pods = pods.clone();
                async move {
                    pods.list_metadata(&lp)
                        .await
                        .map_err(KubeError::api("listing plugin pods"))
                }
            },
            |items| {
                out.extend(
                    items
                        .into_iter()
                        .filter(|p| owned(&p.metadata))
                        .filter_map(|p| instance(p.metadata, false)),
                )
            },
        )
        .await?;
        let sets = Api::<DaemonSet>::namespaced(self.client.clone(), &self.namespace)
            .list_metadata(&lp)
            .await
            .map_err(KubeError::api("listing plugin daemonsets"))?;
        out.extend(
            sets.items
                .into_iter()
                .filter(|d| owned(&d.metadata))
                .filter_map(|d| instance(d.metadata, true)),
        );
        Ok(out)
    }

    /// Deletes the named Secret; one already gone is no error.
    pub async fn delete_secret(&self, name: &str) -> Result<(), KubeError> {
        found(
            Api::<Secret>::namespaced(self.client.clone(), &self.namespace)
                .delete(name, &DeleteParams::default())
                .await,
            || format!("deleting secret {name}"),
        )
        .map(drop)
    }

    /// Sets the status annotation on `pod` with a JSON merge patch.
    pub async fn patch_status(&self, pod: &str, status_json: &str) -> Result<(), PatchError> {
        let body =
            serde_json::json!({"metadata": {"annotations": {STATUS_ANNOTATION: status_json}}});
        match self
            .pods()
            .patch(pod, &PatchParams::default(), &Patch::Merge(&body))
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 422 => {
                Err(PatchError::TooLong(s.message.clone()))
            }
            Err(e) => Err(PatchError::Other(KubeError::api(format!(
                "annotating pod {pod}"
            ))(e))),
        }
    }

    /// Deletes the cluster-wide objects `buoy manifest` made for this namespace (its
    /// ClusterRoleBinding and ClusterRole, by their labels) and then the namespace, which takes
    /// everything in it along. Returns whether the namespace was still there.
    pub async fn delete_run(&self) -> Result<bool, KubeError> {
        use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
        let ns = &self.namespace;
        let lp = ListParams::default().labels(&format!("component=sonobuoy,namespace={ns}"));
        let dp = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Background),
            ..Default::default()
        };
        Api::<ClusterRoleBinding>::all(self.client.clone())
            .delete_collection(&dp, &lp)
            .await
            .map_err(KubeError::api(format!(
                "deleting the cluster role bindings of {ns}"
            )))?;
        Api::<ClusterRole>::all(self.client.clone())
            .delete_collection(&dp, &lp)
            .await
            .map_err(KubeError::api(format!(
                "deleting the cluster roles of {ns}"
            )))?;
        found(
            Api::<Namespace>::all(self.client.clone())
                .delete(ns, &dp)
                .await,
            || format!("deleting namespace {ns}"),
        )
    }

    /// Creates or updates `object` (any kind the API server serves) by server-side apply as
    /// field manager `buoy`, with strict field validation: a field the server does not know
    /// is an error, never silently dropped. Returns the kind and name, for messages.
    pub async fn apply(&self, object: &serde_json::Value) -> Result<String, KubeError> {
        use kube::api::{DynamicObject, GroupVersionKind};
        use kube::discovery::Scope;
        let api_version = object["apiVersion"].as_str().unwrap_or_default();
        let kind = object["kind"].as_str().unwrap_or_default();
        let name = object["metadata"]["name"].as_str().unwrap_or_default();
        let what = format!("{kind} {name}");
        let (group, version) = match api_version.split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", api_version),
        };
        let gvk = GroupVersionKind::gvk(group, version, kind);
        let (resource, caps) = kube::discovery::pinned_kind(&self.client, &gvk)
            .await
            .map_err(KubeError::api(format!("finding the API of {kind}")))?;
        let api: Api<DynamicObject> = match caps.scope {
            Scope::Namespaced => {
                let ns = object["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or(&self.namespace);
                Api::namespaced_with(self.client.clone(), ns, &resource)
            }
            Scope::Cluster => Api::all_with(self.client.clone(), &resource),
        };
        let pp = PatchParams::apply("buoy").force().validation_strict();
        api.patch(name, &pp, &Patch::Apply(object))
            .await
            .map_err(KubeError::api(format!("applying {what}")))?;
        Ok(what)
    }

    /// Whether the run's namespace still exists (it lingers while it terminates).
    pub async fn namespace_exists(&self) -> Result<bool, KubeError> {
        match self.get_namespace().await {
            Ok(_) => Ok(true),
            Err(KubeError::Api { source, .. }) if api_code(&source) == Some(404) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Deletes a Job plugin's pods (grace 60 s) or a DaemonSet plugin's DaemonSets (grace 1 s),
    /// in the background.
    pub async fn delete_plugin_objects(
        &self,
        selector: &str,
        daemonset: bool,
    ) -> Result<(), KubeError> {
        let lp = ListParams::default().labels(selector);
        let dp = |grace: u32| DeleteParams {
            grace_period_seconds: Some(grace),
            propagation_policy: Some(PropagationPolicy::Background),
            ..Default::default()
        };
        if daemonset {
            Api::<DaemonSet>::namespaced(self.client.clone(), &self.namespace)
                .delete_collection(&dp(1), &lp)
                .await
                .map_err(KubeError::api(format!("deleting daemonsets {selector}")))?;
        } else {
            self.pods()
                .delete_collection(&dp(60), &lp)
                .await
                .map_err(KubeError::api(format!("deleting pods {selector}")))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{api_error, list, pair, within};
    use serde_json::json;

    fn pod_json(name: &str) -> serde_json::Value {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "sonobuoy", "uid": format!("uid-{name}")}})
    }

    #[test]
    fn every_request_names_buoy_and_its_version_as_the_user_agent() {
        let mut c = kube::Config::new("https://127.0.0.1:6443".parse().unwrap());
        c.headers.push((
            http::header::USER_AGENT,
            http::HeaderValue::from_static("kube-rs"),
        ));
        let c = with_user_agent(c);
        let agents: Vec<_> = c
            .headers
            .iter()
            .filter(|(n, _)| n == http::header::USER_AGENT)
            .map(|(_, v)| v.to_str().unwrap())
            .collect();
        assert_eq!(agents, [format!("buoy/{}", buoy_wire::BUOY_VERSION)]);
    }

    #[tokio::test]
    async fn listing_nodes_forbidden_means_no_nodes() {
        let (client, mut server) = pair();
        let api = KubeApi::new(client, "sonobuoy");
        let task = tokio::spawn(async move {
            let a = api.list_nodes().await.unwrap();
            let b = api.list_nodes().await.unwrap();
            let c = api.list_nodes().await;
            (a, b, c)
        });
        server
            .expect(
                "GET",
                "/api/v1/nodes",
                200,
                list(
                    "NodeList",
                    vec![
                        json!({"metadata": {"name": "n1"}}),
                        json!({"metadata": {"name": "n2"}}),
                    ],
                ),
            )
            .await;
        server
            .expect(
                "GET",
                "/api/v1/nodes",
                403,
                api_error(403, "Forbidden", "nodes is forbidden"),
            )
            .await;
        server
            .expect(
                "GET",
                "/api/v1/nodes",
                500,
                api_error(500, "InternalError", "etcd is down"),
            )
            .await;
        let (a, b, c) = within(task).await.unwrap();
        assert_eq!(a.len(), 2);
        assert!(b.is_empty());
        assert!(c.is_err());
    }

    #[tokio::test]
    async fn the_aggregator_pod_is_found_by_label_then_legacy_label_then_name() {
        let (client, mut server) = pair();
        let api = KubeApi::new(client, "sonobuoy");
        let task = tokio::spawn(async move {
            let mut names = Vec::new();
            for _ in 0..3 {
                names.push(api.aggregator_pod_name().await.unwrap());
            }
            names
        });
        let c = server
            .expect(
                "GET",
                "/api/v1/namespaces/sonobuoy/pods",
                200,
                list("PodList", vec![pod_json("agg-a"), pod_json("agg-b")]),
            )
            .await;
        assert_eq!(c.query("labelSelector").unwrap(), AGGREGATOR_SELECTOR);
        // Second lookup: the new label fails, the deprecated one finds a pod.
        server
            .expect(
                "GET",
                "/api/v1/namespaces/sonobuoy/pods",
                500,
                api_error(500, "InternalError", "boom"),
            )
            .await;
        let c = server
            .expect(
                "GET",
                "/api/v1/namespaces/sonobuoy/pods",
                200,
                list("PodList", vec![pod_json("old-master")]),
            )
            .await;
        assert_eq!(
            c.query("labelSelector").unwrap(),
            LEGACY_AGGREGATOR_SELECTOR
        );
        // Third: neither label matches, so the name `sonobuoy`.
        server
            .expect(
                "GET",
                "/api/v1/namespaces/sonobuoy/pods",
                200,
                list("PodList", vec![]),
            )
            .await;
        server
            .expect(
                "GET",
                "/api/v1/namespaces/sonobuoy/pods",
                200,
                list("PodList", vec![]),
            )
            .await;
        let names = within(task).await.unwrap();
        assert_eq!(names, ["agg-a", "old-master", "sonobuoy"]);
    }

    #[tokio::test]
    async fn a_missing_aggregator_pod_is_an_error() {
        let (client, mut server) = pair();
        let api = KubeApi::new(client, "sonobuoy");
        let task = tokio::spawn(async move { api.aggregator_pod().await });
        server
            .expect(
                "GET",
                "/api/v1/namespaces/sonobuoy/pods",
                200,
                list("PodList", vec![]),
            )
            .await;
        server
            .expect(
                "GET",
                "/api/v1/namespaces/sonobuoy/pods",
                200,
                list("PodList", vec![]),
            )
            .await;
        server
            .expect(
                "GET",
                "/api/v1/namespaces/sonobuoy/pods/sonobuoy",
                404,
                api_error(404, "NotFound", "pods \"sonobuoy\" not found"),
            )
            .await;
        assert!(matches!(
            within(task).await.unwrap(),
            Err(KubeError::NoAggregatorPod(_))
        ));
    }

    #[tokio::test]
    async fn the_status_is_a_merge_patch_and_422_is_reported_as_too_long() {
        let (client, mut server) = pair();
        let api = KubeApi::new(client, "sonobuoy");
        let task = tokio::spawn(async move {
            let a = api
                .patch_status("sonobuoy", r#"{"status":"running"}"#)
                .await;
            let b = api.patch_status("sonobuoy", "x").await;
            (a, b)
        });
        let c = server
            .expect(
                "PATCH",
                "/api/v1/namespaces/sonobuoy/pods/sonobuoy",
                200,
                pod_json("sonobuoy"),
            )
            .await;
        assert_eq!(c.content_type, "application/merge-patch+json");
        assert_eq!(
            c.body,
            json!({"metadata": {"annotations": {"sonobuoy.hept.io/status": "{\"status\":\"running\"}"}}})
        );
        server
            .expect(
                "PATCH",
                "/api/v1/namespaces/sonobuoy/pods/sonobuoy",
                422,
                api_error(
                    422,
                    "Invalid",
                    "metadata.annotations: Too long: must have at most 262144 bytes",
                ),
            )
            .await;
        let (a, b) = within(task).await.unwrap();
        assert!(a.is_ok());
        assert!(matches!(b, Err(PatchError::TooLong(m)) if m.contains("Too long")));
    }

    #[tokio::test]
    async fn cleanup_deletes_the_collection_with_sonobuoys_grace_periods() {
        let (client, mut server) = pair();
        let api = KubeApi::new(client, "sonobuoy");
        let task = tokio::spawn(async move {
            api.delete_plugin_objects("sonobuoy-run=abc", false)
                .await
                .unwrap();
            api.delete_plugin_objects("sonobuoy-run=def", true)
                .await
                .unwrap();
        });
        let c = server
            .expect(
                "DELETE",
                "/api/v1/namespaces/sonobuoy/pods",
                200,
                list("PodList", vec![]),
            )
            .await;
        assert_eq!(c.query("labelSelector").unwrap(), "sonobuoy-run=abc");
        assert_eq!(c.body["gracePeriodSeconds"], 60);
        assert_eq!(c.body["propagationPolicy"], "Background");
        let c = server
            .expect(
                "DELETE",
                "/apis/apps/v1/namespaces/sonobuoy/daemonsets",
                200,
                list("DaemonSetList", vec![]),
            )
            .await;
        assert_eq!(c.query("labelSelector").unwrap(), "sonobuoy-run=def");
        assert_eq!(c.body["gracePeriodSeconds"], 1);
        within(task).await.unwrap();
    }
}
