//! Reading a run's status the way `sonobuoy status` does (compat §5.6 `GetStatus`): the
//! namespace must exist, the aggregator pod is found like the publisher finds it, must be
//! `Running`, and carries the annotation.

use buoy_wire::Status;

use crate::api::{KubeApi, STATUS_ANNOTATION};
use crate::error::KubeError;

pub async fn read_status(api: &KubeApi) -> Result<Status, KubeError> {
    api.get_namespace().await?;
    let name = api.aggregator_pod_name().await?;
    let pod = api.get_pod(&name).await?;
    let phase = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_default();
    if phase != "Running" {
        return Err(KubeError::PodNotRunning { pod: name, phase });
    }
    let text = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(STATUS_ANNOTATION))
        .ok_or_else(|| KubeError::NoStatus(name.clone()))?;
    serde_json::from_str(text).map_err(|e| KubeError::BadStatus(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{list, pair, within};
    use serde_json::json;

    fn pod(phase: &str, annotation: Option<&str>) -> serde_json::Value {
        let mut p = json!({"metadata": {"name": "sonobuoy"}, "status": {"phase": phase}});
        if let Some(a) = annotation {
            p["metadata"]["annotations"] = json!({STATUS_ANNOTATION: a});
        }
        p
    }

    async fn scenario(pod_json: serde_json::Value) -> Result<Status, KubeError> {
        let (client, mut server) = pair();
        let api = KubeApi::new(client, "sonobuoy");
        let task = tokio::spawn(async move { read_status(&api).await });
        server
            .expect(
                "GET",
                "/api/v1/namespaces/sonobuoy",
                200,
                json!({"metadata": {"name": "sonobuoy"}}),
            )
            .await;
        server
            .expect(
                "GET",
                "/api/v1/namespaces/sonobuoy/pods",
                200,
                list("PodList", vec![pod_json.clone()]),
            )
            .await;
        server
            .expect(
                "GET",
                "/api/v1/namespaces/sonobuoy/pods/sonobuoy",
                200,
                pod_json,
            )
            .await;
        within(task).await.unwrap()
    }

    #[tokio::test]
    async fn the_annotation_of_a_running_aggregator_is_decoded() {
        let s = scenario(pod("Running", Some(r#"{"plugins":[{"plugin":"e2e","node":"global","status":"complete","result-status":"passed","result-counts":{"passed":3}}],"status":"complete","tar-info":{"name":"t.tar.gz","created":"2026-01-01T00:00:00Z","sha256":"ab","size":3}}"#))).await.unwrap();
        assert_eq!(s.status, "complete");
        assert_eq!(s.plugins.unwrap()[0].result_status, "passed");
    }

    #[tokio::test]
    async fn a_pod_not_running_or_without_annotation_is_an_error() {
        let e = scenario(pod("Pending", None)).await.unwrap_err();
        assert_eq!(e.to_string(), "pod sonobuoy has status \"Pending\"");
        let e = scenario(pod("Running", None)).await.unwrap_err();
        assert!(
            e.to_string()
                .contains("no status annotation \"sonobuoy.hept.io/status\""),
            "{e}"
        );
        let e = scenario(pod("Running", Some("{"))).await.unwrap_err();
        assert!(matches!(e, KubeError::BadStatus(_)));
    }
}
