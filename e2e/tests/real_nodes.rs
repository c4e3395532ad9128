//! Octopus Server nodes as real pods on the real node (`e2e/src/real_node.rs`): the
//! node image (the twin's node process, tagged `octopusdeploy/octopusdeploy:<version>`)
//! runs under kubelet, containerd and runc, probed by the operator's own probes; the test
//! process holds the shared database and its one event log. Needs a control plane with a
//! real node (as root, `make cluster-up` has one); without it every test here fails.
//!
//! - A patch upgrade by the operator (in the node's network namespace, reaching Octopus by
//!   the default in-cluster URLs through CoreDNS and kube-proxy) replaces real pods one by
//!   one, and the replay of the database's log shows never two nodes out.
//! - SIGTERM (kubelet deleting a pod) is a clean shutdown: the node is offline at once;
//!   SIGKILL leaves its last heartbeat, which keeps it looking alive until it ages out.
//! - A node whose schema upgrade Octopus refuses (another node runs) exits 1 with the
//!   refusal, and kubelet restarts it with its back-off.

use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, PostParams};
use octopus_e2e::cluster::{TestCluster, TestNamespace, wait_until};
use octopus_e2e::real_node::{RealNode, cluster_spec, database_config, ready_on};
use octopus_e2e::scenario::{install_crd, must};
use octopus_e2e::storage;
use octopus_e2e::twin::model::snapshot::NodeSnapshot;
use octopus_e2e::twin::replay::{Mark, Replay};
use octopus_e2e::twin::{EventKind, TwinConfig, TwinHandle};
use octopus_operator::api::OctopusCluster;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(240);
const FROM: &str = "2024.1.100";
const TO: &str = "2024.1.200";

/// The control plane, its real node with the Octopus images, a namespace whose pods may
/// run there, and the database.
async fn setup(
    prefix: &str,
    config: TwinConfig,
) -> Result<(TestCluster, RealNode, TestNamespace, TwinHandle)> {
    let cluster = TestCluster::shared()
        .await
        .context("the e2e control plane is required")?;
    let node = RealNode::of(&cluster)?;
    node.import_octopus_images().await?;
    let ns = cluster.namespace(prefix).await?;
    node.admit(&cluster, &ns).await?;
    let db = node.start_database(config).await?;
    node.octopus_secrets(&ns, &db).await?;
    Ok((cluster, node, ns, db))
}

async fn kubectl_print(cluster: &TestCluster, args: &[&str]) {
    match cluster.kubectl(args.iter().copied()).await {
        Ok(out) => println!("$ kubectl {}\n{}{}", args.join(" "), out.stdout, out.stderr),
        Err(e) => println!("$ kubectl {}: {e}", args.join(" ")),
    }
}

/// Waits until the cluster satisfies `check`; the error carries its status and the
/// operator's log tail.
async fn wait_cluster(
    clusters: &Api<OctopusCluster>,
    what: &str,
    log: &dyn Fn() -> String,
    check: impl Fn(&OctopusCluster) -> bool,
) -> Result<OctopusCluster> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let c = clusters.get("octo").await?;
        if check(&c) {
            return Ok(c);
        }
        if tokio::time::Instant::now() >= deadline {
            let log = log();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            bail!(
                "timed out waiting for {what}; status: {}\noperator log (last lines, newest first):\n{}",
                serde_json::to_string_pretty(&c.status).unwrap_or_default(),
                tail.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patch_upgrade_replaces_real_octopus_pods_one_at_a_time() {
    let (cluster, node, ns, db) =
        must(setup("real-patch", database_config(Duration::from_secs(60))).await);
    must(install_crd(&cluster).await);
    must(
        storage::provide(&cluster, ns.name(), "octo")
            .await
            .map(drop),
    );
    let operator = must(node.start_operator(&cluster, &ns).await);
    let log = || operator.log_text();
    let clusters: Api<OctopusCluster> = ns.api();
    let spec = cluster_spec(FROM, 3);
    let obj: OctopusCluster = must(
        serde_json::from_value(json!({
            "apiVersion": "octopusoperator.dev/v1alpha1", "kind": "OctopusCluster",
            "metadata": {"name": "octo"}, "spec": spec,
        }))
        .map_err(anyhow::Error::from),
    );
    must(
        clusters
            .create(&PostParams::default(), &obj)
            .await
            .map_err(anyhow::Error::from),
    );
    must(
        wait_cluster(&clusters, "3 real nodes Ready on 2024.1.100", &log, |c| {
            ready_on(c, FROM)
        })
        .await,
    );

    // Every Octopus node is a real pod: scheduled on the node, with its own pod address,
    // started by kubelet from the locally imported image.
    let pods: Api<Pod> = ns.api();
    for name in ["octo-0", "octo-1", "octo-2"] {
        let pod = must(pods.get(name).await.map_err(anyhow::Error::from));
        let spec = pod.spec.clone().unwrap_or_default();
        assert!(spec.node_name.is_some(), "{name} is not bound to the node");
        let status = pod.status.clone().unwrap_or_default();
        assert!(
            status
                .pod_ip
                .as_deref()
                .is_some_and(|ip| ip.starts_with("198.18.")),
            "{name}: {:?}",
            status.pod_ip
        );
        let image = status
            .container_statuses
            .unwrap_or_default()
            .first()
            .map(|c| c.image.clone());
        assert_eq!(
            image.as_deref(),
            Some("docker.io/octopusdeploy/octopusdeploy:2024.1.100")
        );
    }

    let mark = db.events().last().map_or(0, |e| e.seq);
    let since = Timestamp::now();
    must(
        clusters
            .patch(
                "octo",
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(json!({"spec": {"version": TO}})),
            )
            .await
            .map_err(anyhow::Error::from),
    );
    // Once the roll is under way, what the cluster looks like (for the record).
    let _ = wait_until("a node replaced", WAIT, || async {
        let replaced = Replay::new(&db.events())
            .since(Mark::Seq(mark))
            .stopped_on(FROM)
            .len();
        Ok((replaced > 0).then_some(()))
    })
    .await;
    kubectl_print(&cluster, &["get", "pods", "-A", "-o", "wide"]).await;
    let c = must(
        wait_cluster(&clusters, "the roll to 2024.1.200", &log, |c| {
            ready_on(c, TO)
        })
        .await,
    );
    kubectl_print(&cluster, &["get", "pods", "-n", ns.name(), "-o", "wide"]).await;
    let up = c
        .status
        .and_then(|st| st.upgrade)
        .expect("upgrade recorded");
    assert_eq!(up.strategy.as_deref(), Some("rolling"));

    // Tasks running when a node was replaced are given time to finish.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let events = db.events();
    let replay = Replay::new(&events).since(Mark::Seq(mark));
    let min_serving = replay.min_serving();
    assert!(
        min_serving >= 2,
        "fewer than 2 nodes served at some moment ({min_serving})"
    );
    assert_eq!(replay.drained(), ["octo-2", "octo-1", "octo-0"]);
    let replaced = replay.stopped_on(FROM);
    assert_eq!(replaced.len(), 3, "every node replaced once: {replaced:?}");
    let end = replay.nodes_at_end();
    assert_eq!(end.serving_on(TO), 3, "{end:?}");
    assert_eq!(replay.schema().violations, 0);
    assert_eq!(
        Replay::new(&events).tasks().failed,
        0,
        "a task failed during the roll"
    );
    // The operator asked each node itself at its own pod DNS name.
    let requests = replay.requests();
    for n in 0..3 {
        let host = format!("octo-{n}.octo-nodes.{}.svc", ns.name());
        assert!(
            events.iter().any(|e| matches!(&e.kind, EventKind::HttpRequest { service, route, .. } if *service == host && route == "/api")),
            "no GET /api reached {host}; requests: {requests:?}"
        );
    }
    println!(
        "patch upgrade on real pods: {:.1} s, min serving {min_serving}",
        (Timestamp::now() - since)
            .total(jiff::Unit::Second)
            .unwrap_or_default()
    );
    must(storage::release(&cluster, ns.name()).await);
    drop(operator);
    must(ns.cleanup().await.map_err(anyhow::Error::from));
}

/// A bare pod running the node image on `version` (no operator).
fn bare_pod(name: &str, version: &str, restart: &str) -> Result<Pod> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": restart,
            "terminationGracePeriodSeconds": 30,
            "containers": [{
                "name": "octopus",
                "image": format!("octopusdeploy/octopusdeploy:{version}"),
                "imagePullPolicy": "IfNotPresent",
                "env": [
                    {"name": "OCTOPUS_SERVER_NODE_NAME", "value": name},
                    {"name": "DB_CONNECTION_STRING", "valueFrom": {"secretKeyRef": {"name": "octopus-db", "key": "connectionString"}}},
                ],
                "readinessProbe": {"httpGet": {"path": "/api/octopusservernodes/ping", "port": 8080}, "periodSeconds": 1},
            }],
        },
    }))?)
}

fn node_row(db: &TwinHandle, name: &str) -> Option<NodeSnapshot> {
    db.state()
        .installations
        .into_iter()
        .flat_map(|i| i.nodes)
        .find(|n| n.name == name)
}

async fn ready_pod(pods: &Api<Pod>, name: &str) -> Result<Pod> {
    Ok(wait_until(&format!("pod {name} Ready"), WAIT, || async {
        let pod = pods.get(name).await?;
        let ready = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        Ok(ready.then_some(pod))
    })
    .await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_flags_the_node_offline_sigkill_leaves_a_heartbeat_to_age_out() {
    let offline_after = Duration::from_secs(15);
    let (_cluster, node, ns, db) =
        must(setup("real-signals", database_config(offline_after)).await);
    let pods: Api<Pod> = ns.api();
    for name in ["clean", "killed"] {
        must(
            pods.create(&PostParams::default(), &must(bare_pod(name, FROM, "Never")))
                .await
                .map_err(anyhow::Error::from),
        );
    }
    must(ready_pod(&pods, "clean").await);
    let killed = must(ready_pod(&pods, "killed").await);

    // kubelet deleting the pod: SIGTERM, the node flags itself offline on the way out.
    must(
        pods.delete("clean", &DeleteParams::default())
            .await
            .map(|_| ())
            .map_err(anyhow::Error::from),
    );
    let row = must(
        wait_until("the clean node's process gone", WAIT, || async {
            Ok(node_row(&db, "clean").filter(|r| !r.running))
        })
        .await
        .map_err(anyhow::Error::from),
    );
    assert!(
        row.offline,
        "a node stopped by SIGTERM is offline at once: {row:?}"
    );

    // SIGKILL: no shutdown; the database notices only that heartbeats stopped.
    let killed_at = Timestamp::now();
    must(node.kill_container(&killed).await);
    let row = must(
        wait_until("the killed node's process gone", WAIT, || async {
            Ok(node_row(&db, "killed").filter(|r| !r.running))
        })
        .await
        .map_err(anyhow::Error::from),
    );
    assert!(!row.offline, "a killed node still looks alive: {row:?}");
    assert!(
        row.last_seen <= killed_at,
        "LastSeen is its last heartbeat: {row:?}"
    );
    let terminated = must(
        wait_until("the killed container's termination", WAIT, || async {
            let pod = pods.get("killed").await?;
            Ok(pod
                .status
                .and_then(|s| s.container_statuses)
                .and_then(|c| c.into_iter().next())
                .and_then(|c| c.state)
                .and_then(|s| s.terminated))
        })
        .await
        .map_err(anyhow::Error::from),
    );
    assert_eq!(terminated.exit_code, 137, "{terminated:?}");
    // ... until its heartbeat ages out.
    let row = must(
        wait_until("the killed node to age out", WAIT, || async {
            Ok(node_row(&db, "killed").filter(|r| r.offline))
        })
        .await
        .map_err(anyhow::Error::from),
    );
    ensure_aged(&row, offline_after).unwrap_or_else(|e| panic!("{e}"));
    must(ns.cleanup().await.map_err(anyhow::Error::from));
}

/// Offline only once its LastSeen is older than the age-out.
fn ensure_aged(row: &NodeSnapshot, offline_after: Duration) -> Result<()> {
    let age = Timestamp::now().duration_since(row.last_seen);
    ensure!(
        age.unsigned_abs() >= offline_after,
        "offline after only {age:?} without a heartbeat: {row:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_schema_upgrade_exits_and_kubelet_restarts_it_with_back_off() {
    let (_cluster, _node, ns, db) =
        must(setup("real-refused", database_config(Duration::from_secs(60))).await);
    let pods: Api<Pod> = ns.api();
    must(
        pods.create(
            &PostParams::default(),
            &must(bare_pod("old", FROM, "Never")),
        )
        .await
        .map_err(anyhow::Error::from),
    );
    must(ready_pod(&pods, "old").await);
    // 2024.2 beside a running 2024.1 node: Octopus refuses to upgrade the database.
    must(
        pods.create(
            &PostParams::default(),
            &must(bare_pod("new", "2024.2.50", "Always")),
        )
        .await
        .map_err(anyhow::Error::from),
    );
    let status = must(
        wait_until(
            "the refused node restarted and backing off",
            WAIT,
            || async {
                let pod = pods.get("new").await?;
                let status = pod
                    .status
                    .and_then(|s| s.container_statuses)
                    .and_then(|c| c.into_iter().next());
                let backing_off = status.as_ref().is_some_and(|c| {
                    c.restart_count >= 1
                        && c.state
                            .as_ref()
                            .and_then(|s| s.waiting.as_ref())
                            .is_some_and(|w| w.reason.as_deref() == Some("CrashLoopBackOff"))
                });
                Ok(status.filter(|_| backing_off))
            },
        )
        .await
        .map_err(anyhow::Error::from),
    );
    let last = status
        .last_state
        .and_then(|s| s.terminated)
        .expect("a terminated last state");
    assert_eq!(last.exit_code, 1, "{last:?}");
    let message = last.message.unwrap_or_default();
    assert!(
        message.contains("other Octopus Server nodes are still running: old"),
        "{message}"
    );
    let aborted = Replay::new(&db.events())
        .count(|k| matches!(k, EventKind::SchemaMigrationAborted { node, .. } if node == "new"));
    assert!(aborted >= 2, "one refusal per start: {aborted}");
    assert!(
        node_row(&db, "old").is_some_and(|r| r.running && r.version == FROM),
        "the running node is untouched"
    );
    must(ns.cleanup().await.map_err(anyhow::Error::from));
}
