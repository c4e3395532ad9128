//! The twin as kubelet on the real control plane: a Secret, a Service and a StatefulSet of
//! Octopus pods in a fresh namespace; the twin makes the pods Ready (so the StatefulSet
//! controller proceeds), lists the nodes in the cluster summary, keeps a pod with a
//! missing Secret waiting, and follows pod replacement. Fails (never skips) when the
//! control plane cannot be reached.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, ensure};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Pod, Secret, Service};
use kube::api::{DeleteParams, PostParams};
use octopus_e2e::cluster::{TestCluster, wait_until};
use octopus_e2e::twin::{GeneratorConfig, Timing, Twin, TwinConfig};
use serde_json::{Value, json};

const KEY: &str = "API-KUBETWIN000000000000000000";
const WAIT: Duration = Duration::from_secs(60);

fn statefulset() -> anyhow::Result<StatefulSet> {
    Ok(serde_json::from_value(json!({
        "metadata": {"name": "octo"},
        "spec": {
            "replicas": 2,
            "serviceName": "octo",
            "selector": {"matchLabels": {"app": "octo"}},
            "template": {
                "metadata": {"labels": {"app": "octo"}},
                "spec": {
                    "containers": [{
                        "name": "octopus",
                        "image": "octopusdeploy/octopusdeploy:2024.1.100",
                        "env": [
                            {"name": "ACCEPT_EULA", "value": "Y"},
                            {"name": "OCTOPUS_SERVER_NODE_NAME",
                             "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                            {"name": "DB_CONNECTION_STRING",
                             "valueFrom": {"secretKeyRef": {"name": "octo-db", "key": "connectionString"}}},
                            {"name": "ADMIN_API_KEY",
                             "valueFrom": {"secretKeyRef": {"name": "octo-db", "key": "apiKey"}}}
                        ],
                        "ports": [{"containerPort": 8080, "name": "http"}]
                    }]
                }
            }
        }
    }))?)
}

#[tokio::test]
async fn twin_makes_statefulset_pods_ready_and_lists_them() -> anyhow::Result<()> {
    let cluster = TestCluster::shared().await?;
    let ns = cluster.namespace("twin").await?;
    let twin = Twin::start(TwinConfig {
        kube: Some(cluster.client()),
        timing: Timing {
            start_delay: Duration::from_millis(200),
            migration_time: Duration::from_millis(300),
            ..Timing::default()
        },
        generator: GeneratorConfig::off(),
        ..TwinConfig::default()
    })
    .await?;

    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "octo-db"},
        "stringData": {
            "connectionString": "Server=sql.example;Database=Octopus;User Id=sa;Password=kube-twin",
            "apiKey": KEY
        }
    }))?;
    ns.api::<Secret>()
        .create(&PostParams::default(), &secret)
        .await?;
    let service: Service = serde_json::from_value(json!({
        "metadata": {"name": "octo"},
        "spec": {"selector": {"app": "octo"}, "ports": [{"port": 80, "targetPort": 8080}]}
    }))?;
    ns.api::<Service>()
        .create(&PostParams::default(), &service)
        .await?;
    let sets = ns.api::<StatefulSet>();
    sets.create(&PostParams::default(), &statefulset()?).await?;

    // OrderedReady: octo-1 is only created once the API server shows octo-0 Ready.
    wait_until("both StatefulSet replicas ready", WAIT, || async {
        let set = sets.get("octo").await?;
        let ready = set.status.and_then(|s| s.ready_replicas).unwrap_or(0);
        Ok((ready == 2).then_some(()))
    })
    .await?;

    let pods = ns.api::<Pod>();
    let pod = pods.get("octo-0").await?;
    let status = pod.status.context("pod status")?;
    ensure!(
        status.phase.as_deref() == Some("Running"),
        "phase {:?}",
        status.phase
    );
    let container = status
        .container_statuses
        .unwrap_or_default()
        .into_iter()
        .next()
        .context("container status")?;
    ensure!(
        container.ready && container.started == Some(true),
        "{container:?}"
    );
    ensure!(container.name == "octopus");
    let ready = status
        .conditions
        .unwrap_or_default()
        .into_iter()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    ensure!(ready, "Ready condition");
    ensure!(
        pod.spec.and_then(|s| s.node_name).is_none(),
        "the twin does not schedule"
    );

    let http = reqwest::Client::new();
    let base = twin.installation_url(ns.name(), "octo");
    let summary: Value = http
        .get(format!("{base}/api/octopusservernodes/summary"))
        .header("X-Octopus-ApiKey", KEY)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let mut names: Vec<String> = summary["Nodes"]
        .as_array()
        .context("Nodes")?
        .iter()
        .filter_map(|n| n["Name"].as_str().map(str::to_string))
        .collect();
    names.sort();
    ensure!(names == ["octo-0", "octo-1"], "summary lists {names:?}");
    // As the real server: the summary names no node's version; each node tells its own.
    ensure!(
        summary["Nodes"][0].get("Version").is_none(),
        "the summary must not carry a per-node Version: {summary}"
    );
    for pod in ["octo-0", "octo-1"] {
        let root: Value = http
            .get(format!("{}/api", twin.node_url(ns.name(), "octo", pod)))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        ensure!(root["Version"] == "2024.1.100", "{pod} answers {root}");
    }

    // A pod whose Secret is missing stays waiting with CreateContainerConfigError.
    let broken: Pod = serde_json::from_value(json!({
        "metadata": {"name": "broken", "labels": {"app": "broken"}},
        "spec": {"containers": [{
            "name": "octopus",
            "image": "octopusdeploy/octopusdeploy:2024.1.100",
            "env": [{"name": "DB_CONNECTION_STRING",
                     "valueFrom": {"secretKeyRef": {"name": "missing", "key": "connectionString"}}}]
        }]}
    }))?;
    pods.create(&PostParams::default(), &broken).await?;
    let reason = wait_until("broken pod reports its config error", WAIT, || async {
        let pod = pods.get("broken").await?;
        let waiting = pod
            .status
            .and_then(|s| s.container_statuses)
            .and_then(|c| c.into_iter().next())
            .and_then(|c| c.state)
            .and_then(|s| s.waiting)
            .and_then(|w| w.reason);
        Ok(waiting)
    })
    .await?;
    ensure!(reason == "CreateContainerConfigError", "reason {reason}");

    // A deleted pod stops its node; the StatefulSet's replacement comes back Ready.
    let old_uid = pods.get("octo-1").await?.metadata.uid;
    pods.delete("octo-1", &DeleteParams::default()).await?;
    wait_until("octo-1 replaced and ready", WAIT, || async {
        let Some(pod) = pods.get_opt("octo-1").await? else {
            return Ok(None);
        };
        let ready = pod
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .into_iter()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        Ok((pod.metadata.uid != old_uid && ready).then_some(()))
    })
    .await?;
    let snapshot = twin
        .snapshot(ns.name(), "octo")
        .context("installation behind the Service")?;
    ensure!(snapshot.schema.map(|s| s.line) == Some("2024.1".to_string()));
    let node_names: BTreeMap<String, bool> = snapshot
        .nodes
        .iter()
        .map(|n| (n.name.clone(), n.running))
        .collect();
    ensure!(
        node_names == BTreeMap::from([("octo-0".into(), true), ("octo-1".into(), true)]),
        "{node_names:?}"
    );
    let stopped = twin.installation_events(ns.name(), "octo").into_iter().any(|e| {
        matches!(e.kind, octopus_e2e::twin::EventKind::NodeStopped { ref node, .. } if node == "octo-1")
    });
    ensure!(stopped, "the deleted pod's node process stopped");

    twin.shutdown().await;
    ns.cleanup().await?;
    Ok(())
}
