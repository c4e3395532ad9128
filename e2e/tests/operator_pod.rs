//! The operator as it runs in production, on the real node: its image (`make image`)
//! imported into the node's containerd, installed by `helm install` of the chart, two
//! replicas of the Deployment under the chart's ServiceAccount with RBAC on, reaching the
//! API server through the `kubernetes` Service; kubelet runs their probes, one replica
//! leads through the Lease, `/metrics` says which. From that pod the operator creates an
//! Octopus cluster and rolls it through a patch upgrade; `helm test` passes, and fails once
//! the operator is down.
//!
//! Until the Octopus nodes run as pods themselves, they are the twin's played pods (they
//! do not tolerate the node's taint, so the twin's kubelet plays them): the twin listens on
//! the host's end of the node's veth (198.18.N.1, the one address pods may reach off the
//! node) and the cluster's `spec.api` points the operator at its per-pod routes
//! ([`octopus_api`]). The claims of the cluster's StatefulSet get hostPath volumes
//! ([`octopus_e2e::storage`]): the node has no provisioner.
//!
//! Needs the real node (root; `make cluster-up` starts it) and ctr (containerd): without
//! them the test fails, never skips. Prints the image import time, the time until the
//! operator pods are ready, the upgrade's duration, `kubectl get pods -A -o wide` and the
//! `helm test` output; it asserts none of the times.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, PersistentVolumeClaim, Pod};
use k8s_openapi::api::events::v1::Event;
use kube::Api;
use kube::api::ListParams;
use octopus_e2e::cluster::{TestCluster, wait_until};
use octopus_e2e::helm::{chart_dir, helm_output, repo_root};
use octopus_e2e::scenario::{Scenario, spec, twin_config};
use octopus_e2e::twin::replay::{Mark, Replay};
use octopus_e2e::twin::{TwinConfig, TwinHandle};
use octopus_e2e::{operator_process, storage};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(180);
/// The real node's taint; the test tolerates it through the chart's `tolerations` value.
const TAINT: &str = "octopus-operator.dev/real-node";
const CLUSTER: &str = "octo";

/// Where the operator pod finds Octopus for the cluster `name` in `namespace`. The twin
/// plays the Octopus nodes, on the host's end of the node's veth, per pod at
/// `/{namespace}/{service}/{pod}`. Once the nodes run as pods, this returns `None`: the
/// chart's default in-cluster templates (`http://{pod}.{service}.{namespace}.svc:8080`).
fn octopus_api(twin: &TwinHandle, namespace: &str, name: &str) -> Option<Value> {
    Some(json!({
        "url": format!("{}/{namespace}/{name}", twin.base_url()),
        "nodeUrlTemplate": format!("{}/{{namespace}}/{{service}}/{{pod}}", twin.base_url()),
    }))
}

/// The one Ready node, and the host's end of its veth (198.18.N.1 for node 198.18.N.2).
async fn node_and_host_address(cluster: &TestCluster) -> Result<(String, Ipv4Addr)> {
    let nodes = Api::<Node>::all(cluster.client())
        .list(&ListParams::default())
        .await?
        .items;
    ensure!(
        nodes.len() == 1,
        "expected the real node, found {} nodes: run as root (or OCTOPUS_OPERATOR_NODE=1) so \
         `make cluster-up` starts it",
        nodes.len()
    );
    let node = &nodes[0];
    let status = node.status.clone().unwrap_or_default();
    let ready = status
        .conditions
        .unwrap_or_default()
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    ensure!(ready, "the node is not Ready");
    let ip: Ipv4Addr = status
        .addresses
        .unwrap_or_default()
        .into_iter()
        .find(|a| a.type_ == "InternalIP")
        .context("the node has no InternalIP")?
        .address
        .parse()?;
    let [a, b, c, _] = ip.octets();
    ensure!(
        a == 198 && b == 18,
        "node address {ip} outside 198.18.0.0/16"
    );
    Ok((
        node.metadata.name.clone().unwrap_or_default(),
        Ipv4Addr::new(a, b, c, 1),
    ))
}

fn run_checked(command: &mut Command) -> Result<String> {
    let shown = format!("{command:?}");
    let out = command
        .output()
        .with_context(|| format!("cannot run {shown}"))?;
    ensure!(
        out.status.success(),
        "{shown}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `make image` of this checkout (a no-op build when nothing changed): the archive and
/// the image reference.
fn operator_image() -> Result<(PathBuf, String)> {
    let out = run_checked(&mut Command::new(
        repo_root().join("operator/image/build.sh"),
    ))?;
    let summary: Value = serde_json::from_str(out.lines().last().unwrap_or_default())
        .with_context(|| format!("build.sh printed {out:?}"))?;
    let archive = summary["archive"].as_str().context("no archive")?;
    let image = summary["image"].as_str().context("no image")?;
    Ok((archive.into(), image.to_owned()))
}

/// Imports the archive into the node's containerd (e2e/controlplane/node-import.sh).
fn import(cluster: &TestCluster, archive: &PathBuf) -> Result<Duration> {
    let run_dir = cluster.kubeconfig().parent().context("kubeconfig dir")?;
    let started = Instant::now();
    run_checked(
        Command::new(repo_root().join("e2e/controlplane/node-import.sh"))
            .arg(archive)
            .env("OCTOPUS_OPERATOR_RUN_DIR", run_dir),
    )?;
    Ok(started.elapsed())
}

/// helm with the control plane's kubeconfig, in `namespace`, off the async runtime.
async fn helm_in(
    cluster: &TestCluster,
    namespace: &str,
    args: &[&str],
) -> Result<octopus_e2e::helm::HelmOutput> {
    let mut all: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    all.extend([
        "--namespace".into(),
        namespace.into(),
        "--kubeconfig".into(),
        cluster.kubeconfig().display().to_string(),
    ]);
    tokio::task::spawn_blocking(move || helm_output(&all)).await?
}

/// The operator's pods (the Deployment's selector).
async fn operator_pods(
    cluster: &TestCluster,
    namespace: &str,
    release: &str,
) -> kube::Result<Vec<Pod>> {
    let selector =
        format!("app.kubernetes.io/name=octopus-operator,app.kubernetes.io/instance={release}");
    Ok(Api::<Pod>::namespaced(cluster.client(), namespace)
        .list(&ListParams::default().labels(&selector))
        .await?
        .items)
}

fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// GET from the host, straight to a pod's address (the host routes the node's pod subnet).
async fn get(url: &str) -> Result<String> {
    let response = reqwest::Client::new()
        .get(url)
        .timeout(Duration::from_secs(5))
        .send()
        .await?;
    ensure!(
        response.status().is_success(),
        "{url}: {}",
        response.status()
    );
    Ok(response.text().await?)
}

async fn kubectl_print(cluster: &TestCluster, args: &[&str]) -> Result<()> {
    let out = cluster.kubectl(args.iter().copied()).await?.ok()?;
    println!("$ kubectl {}\n{}", args.join(" "), out.stdout);
    Ok(())
}

#[tokio::test]
async fn chart_deployment_runs_the_operator_on_the_node_through_a_patch_upgrade() -> Result<()> {
    let cluster = TestCluster::shared().await?;
    let (node, host) = node_and_host_address(&cluster).await?;

    let (archive, image) = tokio::task::spawn_blocking(operator_image).await??;
    let imported = import(&cluster, &archive)?;
    println!(
        "operator image {image} ({} bytes) imported into the node's containerd in {imported:.2?}",
        std::fs::metadata(&archive)?.len()
    );

    // The world of a scenario without the in-process operator, its twin on 198.18.N.1.
    let s = Scenario::start_without_operator(
        "oppod",
        TwinConfig {
            bind: SocketAddr::new(IpAddr::V4(host), 0),
            ..twin_config(true)
        },
    )
    .await?;
    let operator_ns = cluster.namespace("oppod-operator").await?;
    let release = operator_ns.name().to_owned();
    let volumes = storage::provide(&cluster, s.ns.name(), CLUSTER).await?;

    let result = run(&cluster, &s, &node, &release, &image).await;

    // Whatever happened: the release (its cluster-scoped roles), the volumes, the world.
    let uninstall = helm_in(&cluster, &release, &["uninstall", &release, "--wait"]).await;
    storage::release(&cluster, s.ns.name()).await?;
    let finished = s.finish().await;
    operator_ns.cleanup().await?;
    result?;
    let uninstall = uninstall?;
    ensure!(uninstall.success, "helm uninstall: {}", uninstall.stderr);
    finished?;
    println!("volumes used and released: {volumes:?}");
    Ok(())
}

async fn run(
    cluster: &TestCluster,
    s: &Scenario,
    node: &str,
    release: &str,
    image: &str,
) -> Result<()> {
    let (repository, tag) = image.rsplit_once(':').context("image without a tag")?;
    let tolerations = json!([{"key": TAINT, "operator": "Exists", "effect": "NoSchedule"}]);
    let started = Instant::now();
    let install = helm_in(
        cluster,
        release,
        &[
            "install",
            release,
            &chart_dir().display().to_string(),
            "--set",
            &format!("image.repository={repository},image.tag={tag}"),
            // Only the scenario's namespace: other tests' operators own the rest.
            "--set",
            &format!("watchNamespace={}", s.ns.name()),
            "--set",
            "pollInterval=1s",
            "--set-json",
            &format!("tolerations={tolerations}"),
        ],
    )
    .await?;
    ensure!(install.success, "helm install: {}", install.stderr);

    let fullname = format!("{release}-octopus-operator");
    let deployments: Api<Deployment> = Api::namespaced(cluster.client(), release);
    wait_until("2 operator replicas ready", WAIT, || async {
        let d = deployments.get(&fullname).await?;
        let ready = d.status.and_then(|s| s.ready_replicas).unwrap_or(0);
        Ok((ready == 2).then_some(()))
    })
    .await?;
    println!(
        "operator pods ready {:.2?} after helm install",
        started.elapsed()
    );

    // Both replicas on the real node, under the chart's ServiceAccount, probed by kubelet.
    let pods = operator_pods(cluster, release, release).await?;
    ensure!(pods.len() == 2, "{} operator pods", pods.len());
    for pod in &pods {
        let spec = pod.spec.clone().unwrap_or_default();
        ensure!(spec.node_name.as_deref() == Some(node), "not on the node");
        ensure!(spec.service_account_name.as_deref() == Some(fullname.as_str()));
        ensure!(pod_ready(pod), "not Ready");
    }
    // One of them holds the Lease; /metrics on each pod's address says which.
    let lease = Api::<Lease>::namespaced(cluster.client(), release)
        .get(&fullname)
        .await?;
    let leader = lease
        .spec
        .and_then(|s| s.holder_identity)
        .context("the Lease has no holder")?;
    for pod in &pods {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let ip = pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.clone())
            .unwrap_or_default();
        let metrics = get(&format!("http://{ip}:8080/metrics")).await?;
        let leads = operator_process::sample(&metrics, "octopus_operator_leader");
        let expected = if name == leader { 1.0 } else { 0.0 };
        ensure!(
            leads == Some(expected),
            "{name} ({ip}): octopus_operator_leader {leads:?}, Lease holder {leader}"
        );
        let ready = get(&format!("http://{ip}:8080/readyz")).await?;
        println!(
            "{name} {ip}: /readyz {}, octopus_operator_leader {expected}",
            ready.trim()
        );
    }

    // From that pod: a 3-node cluster, then a patch upgrade rolled node by node.
    let mut cluster_spec = spec("2024.1.100", 3);
    if let Some(api) = octopus_api(&s.twin, s.ns.name(), CLUSTER) {
        cluster_spec["api"] = api;
    }
    s.create_cluster(CLUSTER, cluster_spec).await?;
    s.wait_condition(CLUSTER, "Ready", true, Some("Ready"), WAIT)
        .await?;
    let claims = Api::<PersistentVolumeClaim>::namespaced(cluster.client(), s.ns.name())
        .list(&ListParams::default())
        .await?
        .items;
    let bound = claims
        .iter()
        .filter(|c| c.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound"))
        .count();
    println!(
        "{bound} of {} claims Bound to hostPath volumes",
        claims.len()
    );

    let since = jiff::Timestamp::now();
    let rolled = Instant::now();
    s.patch_spec(CLUSTER, json!({"version": "2024.1.200"}))
        .await?;
    let done = s
        .wait_for(CLUSTER, "the patch upgrade to finish", WAIT, |c| {
            c.status.as_ref().is_some_and(|st| {
                st.current_version.as_deref() == Some("2024.1.200")
                    && st.upgrade.as_ref().is_some_and(|u| u.finished_at.is_some())
            })
        })
        .await?;
    println!(
        "patch upgrade 2024.1.100 -> 2024.1.200 of 3 nodes by the operator pod: {:.2?}",
        rolled.elapsed()
    );
    let nodes = done.status.map(|s| s.nodes).unwrap_or_default();
    ensure!(
        nodes.len() == 3
            && nodes
                .iter()
                .all(|n| n.version.as_deref() == Some("2024.1.200")),
        "nodes after the upgrade: {nodes:?}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let min_serving = Replay::new(&s.twin.events())
        .since(Mark::At(since))
        .min_serving();
    ensure!(
        min_serving >= 2,
        "only {min_serving} node(s) served at some moment"
    );
    ensure!(
        bound == claims.len() && bound == 4,
        "claims not all Bound: {bound} of {}",
        claims.len()
    );
    // The Events of the roll name the pod that reported them.
    let events = Api::<Event>::namespaced(cluster.client(), s.ns.name())
        .list(&ListParams::default())
        .await?
        .items;
    let reporters: std::collections::BTreeSet<String> = events
        .iter()
        .filter_map(|e| e.reporting_instance.clone())
        .collect();
    ensure!(
        reporters.contains(&leader),
        "no Event reported by the leader pod {leader}: {reporters:?}"
    );

    kubectl_print(cluster, &["get", "pods", "-A", "-o", "wide"]).await?;

    // helm test: the check pod, from the operator's image, passes.
    let test = helm_in(
        cluster,
        release,
        &["test", release, "--logs", "--timeout", "2m"],
    )
    .await?;
    println!(
        "$ helm test {release} --logs\n{}{}",
        test.stdout, test.stderr
    );
    ensure!(test.success, "helm test failed on a working operator");
    ensure!(
        test.stdout.contains("leads and renews the Lease"),
        "the check's log is missing from helm test: {}",
        test.stdout
    );

    // The cluster goes while the operator runs (its finalizer).
    s.clusters().delete(CLUSTER, &Default::default()).await?;
    wait_until("the OctopusCluster deleted", WAIT, || async {
        Ok(s.clusters().get_opt(CLUSTER).await?.is_none().then_some(()))
    })
    .await?;

    // Broken: the operator scaled away. helm test must fail, saying why.
    cluster
        .kubectl([
            "scale",
            "-n",
            release,
            &format!("deployment/{fullname}"),
            "--replicas=0",
        ])
        .await?
        .ok()?;
    wait_until("the operator pods gone", WAIT, || async {
        Ok(operator_pods(cluster, release, release)
            .await?
            .is_empty()
            .then_some(()))
    })
    .await?;
    let broken = helm_in(
        cluster,
        release,
        &["test", release, "--logs", "--timeout", "2m"],
    )
    .await?;
    println!(
        "$ helm test {release} --logs   # operator scaled to 0\n{}{}",
        broken.stdout, broken.stderr
    );
    if broken.success {
        bail!("helm test passed with no operator running");
    }
    ensure!(
        broken.stdout.contains("FAILED"),
        "helm test failed without the check saying why: {}",
        broken.stdout
    );
    Ok(())
}
