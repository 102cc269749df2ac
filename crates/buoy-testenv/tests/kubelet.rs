//! The stand-in kubelet against its own control plane: a pod's volumes, env and service
//! account token are where the pod says, its status follows its container, its logs reach
//! `kubectl logs`' API, restarts follow the policy, and deletion stops it. Skips, saying why,
//! without the binaries.

use std::collections::BTreeMap;
use std::time::Duration;

use buoy_testenv::kubelet::{create_nodes, NodeMode};
use buoy_testenv::{Binaries, ControlPlane, ControlPlaneOptions, Kubelet, KubeletOptions};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, LogParams, PostParams};
use serde_json::json;

async fn eventually<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    mut f: impl FnMut() -> F,
) -> T {
    for _ in 0..600 {
        if let Some(v) = f().await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("gave up waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_runs_with_its_volumes_env_and_token_restarts_and_stops_on_deletion() {
    let bins = match Binaries::find() {
        Ok(b) => b,
        Err(why) => {
            eprintln!("SKIPPED: {why}");
            return;
        }
    };
    let cp = ControlPlane::start(&bins, &ControlPlaneOptions::default())
        .await
        .unwrap();
    let client = cp.client().await.unwrap();
    let opts = KubeletOptions {
        root: cp.dir.join("pods"),
        api_server_port: cp.port,
        play_concurrency: 4,
        ..Default::default()
    };
    let kubelet = Kubelet::start(client.clone(), opts, &cp.kubelet_serving)
        .await
        .unwrap();
    create_nodes(
        &client,
        &["n1".into()],
        NodeMode::Run,
        &BTreeMap::new(),
        kubelet.log_port(),
        1,
    )
    .await
    .unwrap();
    let ns = "default";
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(client.clone(), ns);
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(
            json!({"metadata": {"name": "cfg"}, "data": {"greeting": "hello"}}),
        )
        .unwrap(),
    )
    .await
    .unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    // Reads its ConfigMap, env and token, then exits 0: Never restarts, so the pod succeeds.
    let script = "cat /etc/cfg/greeting; echo \" $GREETING $MY_NODE\"; test -s /var/run/secrets/kubernetes.io/serviceaccount/token && echo token; echo work > /work/out";
    let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "once"}, "spec": {"restartPolicy": "Never", "nodeName": "n1",
        "containers": [{"name": "main", "image": "busybox", "command": ["sh", "-c", script],
            "env": [{"name": "GREETING", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "greeting"}}},
                    {"name": "MY_NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}],
            "volumeMounts": [{"name": "cfg", "mountPath": "/etc/cfg"}, {"name": "work", "mountPath": "/work"}]}],
        "volumes": [{"name": "cfg", "configMap": {"name": "cfg"}}, {"name": "work", "emptyDir": {}}]}})).unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    eventually("the pod to succeed", || {
        let pods = pods.clone();
        async move {
            let p = pods.get("once").await.ok()?;
            (p.status?.phase.as_deref() == Some("Succeeded")).then_some(())
        }
    })
    .await;
    let log = pods.logs("once", &LogParams::default()).await.unwrap();
    assert_eq!(log, "hello hello n1\ntoken\n");
    let dir = kubelet.pod_dir(ns, "once").unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.join("volumes/work/out")).unwrap(),
        "work\n"
    );
    // The host never saw the pod's mounts.
    assert!(!std::path::Path::new("/work/out").exists());

    // A failing container under Always is restarted and counted.
    let pod: Pod = serde_json::from_value(
        json!({"metadata": {"name": "crash"}, "spec": {"nodeName": "n1",
        "containers": [{"name": "main", "image": "busybox", "command": ["sh", "-c", "exit 3"]}]}}),
    )
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    eventually("three restarts", || {
        let pods = pods.clone();
        async move {
            let p = pods.get("crash").await.ok()?;
            let cs = p.status?.container_statuses?.pop()?;
            (cs.restart_count >= 3 && cs.last_state?.terminated?.exit_code == 3).then_some(())
        }
    })
    .await;

    // Deletion stops a running container and removes the pod.
    let pod: Pod = serde_json::from_value(
        json!({"metadata": {"name": "sleeper"}, "spec": {"nodeName": "n1",
        "containers": [{"name": "main", "image": "busybox", "command": ["sleep", "600"]}]}}),
    )
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let pid = eventually("the sleeper to run", || {
        let pids = kubelet.pids(ns, "sleeper");
        async move { pids.first().map(|(_, p)| *p) }
    })
    .await;
    pods.delete("sleeper", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the pod to go", || {
        let pods = pods.clone();
        async move { pods.get_opt("sleeper").await.ok()?.is_none().then_some(()) }
    })
    .await;
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "the process outlived its pod"
    );
}
