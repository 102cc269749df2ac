//! `buoy delete`: removes what `buoy manifest` applied, as `sonobuoy delete` does: the
//! namespace's ClusterRoleBinding and ClusterRole (by their `component=sonobuoy,namespace=NS`
//! labels), then the namespace, which takes the aggregator, its plugins and their Secrets
//! along. With `wait`, returns only once the namespace is gone.

use std::time::Duration;

use crate::api::KubeApi;
use crate::error::KubeError;

pub struct DeleteOptions {
    /// Return only once the namespace is gone.
    pub wait: bool,
    /// How often the namespace is looked at while waiting.
    pub poll: Duration,
}

impl Default for DeleteOptions {
    fn default() -> Self {
        Self {
            wait: false,
            poll: Duration::from_secs(1),
        }
    }
}

/// Deletes the run in `api`'s namespace; `say` hears each step, for the operator.
pub async fn delete(
    api: &KubeApi,
    opts: &DeleteOptions,
    mut say: impl FnMut(&str),
) -> Result<(), KubeError> {
    let ns = api.namespace().to_string();
    if api.delete_run().await? {
        say(&format!(
            "deleting namespace {ns} and its cluster role and binding"
        ));
    } else {
        say(&format!(
            "namespace {ns} does not exist; its cluster role and binding are deleted"
        ));
    }
    if opts.wait {
        let mut said = false;
        while api.namespace_exists().await? {
            if !said {
                say(&format!("waiting for namespace {ns} to be gone"));
                said = true;
            }
            tokio::time::sleep(opts.poll).await;
        }
        say(&format!("namespace {ns} is gone"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{api_error, pair, within};
    use serde_json::json;

    const RBAC: &str = "/apis/rbac.authorization.k8s.io/v1";

    #[tokio::test]
    async fn deletes_rbac_by_label_then_the_namespace_and_waits_until_it_is_gone() {
        let (client, mut server) = pair();
        let api = KubeApi::new(client, "conf");
        let opts = DeleteOptions {
            wait: true,
            poll: Duration::from_millis(10),
        };
        let mut said = Vec::new();
        let run = async {
            delete(&api, &opts, |s| said.push(s.to_string()))
                .await
                .unwrap()
        };
        let script = async {
            let empty = json!({"kind": "Status", "status": "Success", "metadata": {}});
            for kind in ["clusterrolebindings", "clusterroles"] {
                let c = server
                    .expect("DELETE", &format!("{RBAC}/{kind}"), 200, empty.clone())
                    .await;
                assert_eq!(
                    c.query("labelSelector").unwrap(),
                    "component=sonobuoy,namespace=conf"
                );
            }
            let terminating = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "conf"}, "status": {"phase": "Terminating"}});
            let c = server
                .expect(
                    "DELETE",
                    "/api/v1/namespaces/conf",
                    200,
                    terminating.clone(),
                )
                .await;
            assert_eq!(c.body["propagationPolicy"], "Background");
            server
                .expect("GET", "/api/v1/namespaces/conf", 200, terminating.clone())
                .await;
            server
                .expect("GET", "/api/v1/namespaces/conf", 200, terminating)
                .await;
            server
                .expect(
                    "GET",
                    "/api/v1/namespaces/conf",
                    404,
                    api_error(404, "NotFound", "namespaces \"conf\" not found"),
                )
                .await;
        };
        within(async { tokio::join!(run, script) }).await;
        assert_eq!(said.len(), 3, "{said:?}");
        assert!(said[2].contains("is gone"));
    }

    #[tokio::test]
    async fn a_namespace_already_gone_is_no_error_and_other_failures_are() {
        let (client, mut server) = pair();
        let api = KubeApi::new(client, "conf");
        let run = async { delete(&api, &DeleteOptions::default(), |_| {}).await };
        let script = async {
            let empty = json!({"kind": "Status", "status": "Success", "metadata": {}});
            server
                .expect(
                    "DELETE",
                    &format!("{RBAC}/clusterrolebindings"),
                    200,
                    empty.clone(),
                )
                .await;
            server
                .expect("DELETE", &format!("{RBAC}/clusterroles"), 200, empty)
                .await;
            server
                .expect(
                    "DELETE",
                    "/api/v1/namespaces/conf",
                    404,
                    api_error(404, "NotFound", "gone"),
                )
                .await;
        };
        let (r, ()) = within(async { tokio::join!(run, script) }).await;
        r.unwrap();

        let (client, mut server) = pair();
        let api = KubeApi::new(client, "conf");
        let run = async { delete(&api, &DeleteOptions::default(), |_| {}).await };
        let script = async {
            server
                .expect(
                    "DELETE",
                    &format!("{RBAC}/clusterrolebindings"),
                    403,
                    api_error(403, "Forbidden", "no"),
                )
                .await;
        };
        let (r, ()) = within(async { tokio::join!(run, script) }).await;
        assert!(r
            .unwrap_err()
            .to_string()
            .contains("cluster role bindings of conf"));
    }
}
