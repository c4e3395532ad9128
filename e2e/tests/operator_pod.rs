//! The operator as it runs in production, on the real node, rolling Octopus Server nodes
//! that are real pods: its image (`make image`) imported into the node's containerd,
//! installed by `helm install` of the chart, two replicas of the Deployment under the
//! chart's ServiceAccount with RBAC on, reaching the API server through the `kubernetes`
//! Service; kubelet runs their probes, one replica leads through the Lease, `/metrics`
//! says which. The Octopus nodes run the node image (`e2e/src/real_node.rs`: the twin's
//! node process tagged `octopusdeploy/octopusdeploy:<version>`), their shared database is
//! a process of this test on 198.18.N.1, and the operator pod reaches them by the chart's
//! default in-cluster URL templates (no `spec.api`), through CoreDNS and kube-proxy. From
//! that pod the operator creates a 3-node cluster and rolls it through a patch upgrade;
//! the replay of the database's log shows never two nodes out and each node replaced once.
//! `helm test` passes, and fails once the operator is down. The claims of the cluster's
//! StatefulSet get hostPath volumes ([`octopus_e2e::storage`]): the node has no provisioner.
//!
//! Needs the real node (root; `make cluster-up` starts it) and ctr (containerd): without
//! them the test fails, never skips. Prints the image import time, the time until the
//! operator and the Octopus pods are ready, the upgrade's duration,
//! `kubectl get pods -A -o wide` mid-roll and the `helm test` output; it asserts none of
//! the times.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, PersistentVolumeClaim, Pod};
use k8s_openapi::api::events::v1::Event;
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use octopus_e2e::cluster::{TestCluster, TestNamespace, wait_until};
use octopus_e2e::helm::{chart_dir, helm_output};
use octopus_e2e::real_node::{RealNode, TAINT, cluster_spec, database_config, ready_on};
use octopus_e2e::scenario::install_crd;
use octopus_e2e::twin::replay::{Mark, Replay};
use octopus_e2e::twin::{EventKind, TwinHandle};
use octopus_e2e::{operator_process, storage};
use octopus_operator::api::OctopusCluster;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(240);
const CLUSTER: &str = "octo";
const FROM: &str = "2024.1.100";
const TO: &str = "2024.1.200";

/// The name of the one node, which must be Ready.
async fn the_node(cluster: &TestCluster) -> Result<String> {
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
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    ensure!(ready, "the node is not Ready");
    Ok(node.metadata.name.clone().unwrap_or_default())
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chart_deployment_rolls_real_octopus_pods_through_a_patch_upgrade() -> Result<()> {
    let cluster = TestCluster::shared().await?;
    let node = the_node(&cluster).await?;
    let real = RealNode::of(&cluster)?;

    let image = real.import_operator_image().await?;
    println!(
        "operator image {} ({} bytes) imported into the node's containerd in {:.2?}",
        image.image, image.bytes, image.import
    );
    real.import_octopus_images().await?;
    install_crd(&cluster).await?;

    // The Octopus pods' namespace (let onto the node), their database and Secrets.
    let ns = cluster.namespace("oppod").await?;
    real.admit(&cluster, &ns).await?;
    let db = real
        .start_database(database_config(Duration::from_secs(60)))
        .await?;
    real.octopus_secrets(&ns, &db).await?;
    let operator_ns = cluster.namespace("oppod-operator").await?;
    let release = operator_ns.name().to_owned();
    let volumes = storage::provide(&cluster, ns.name(), CLUSTER).await?;

    let result = run(&cluster, &ns, &db, &node, &release, &image.image).await;

    // Whatever happened: the release (its cluster-scoped roles), the volumes, the namespaces.
    let uninstall = helm_in(&cluster, &release, &["uninstall", &release, "--wait"]).await;
    storage::release(&cluster, ns.name()).await?;
    ns.cleanup().await?;
    operator_ns.cleanup().await?;
    result?;
    let uninstall = uninstall?;
    ensure!(uninstall.success, "helm uninstall: {}", uninstall.stderr);
    println!("volumes used and released: {volumes:?}");
    Ok(())
}

/// Waits until the cluster satisfies `check`; the error carries its status.
async fn wait_cluster(
    clusters: &Api<OctopusCluster>,
    what: &str,
    check: impl Fn(&OctopusCluster) -> bool,
) -> Result<OctopusCluster> {
    let last = std::sync::Mutex::new(None);
    let found = wait_until(what, WAIT, || async {
        let c = clusters.get(CLUSTER).await?;
        if check(&c) {
            return Ok(Some(c));
        }
        *last.lock().unwrap_or_else(|e| e.into_inner()) = c.status;
        Ok(None)
    })
    .await;
    found.with_context(|| {
        let status = last.lock().map(|s| s.clone()).unwrap_or_default();
        format!(
            "status: {}",
            serde_json::to_string_pretty(&status).unwrap_or_default()
        )
    })
}

async fn run(
    cluster: &TestCluster,
    ns: &TestNamespace,
    db: &TwinHandle,
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
            // Only the test's namespace: other tests' operators own the rest.
            "--set",
            &format!("watchNamespace={}", ns.name()),
            "--set",
            "pollInterval=1s",
            "--set-json",
            &format!("tolerations={tolerations}"),
        ],
    )
    .await?;
    ensure!(install.success, "helm install: {}", install.stderr);
    let fullname = format!("{release}-octopus-operator");
    // Readiness from the pods themselves: the Deployment's count can lag a pod that just
    // went unready (a replica restarted by a Lease race at start shows in `restarts`).
    wait_until("2 operator pods ready", WAIT, || async {
        let pods = operator_pods(cluster, release, release).await?;
        Ok((pods.len() == 2 && pods.iter().all(pod_ready)).then_some(()))
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
        let restarts: i32 = pod
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .map(|cs| cs.iter().map(|c| c.restart_count).sum())
            .unwrap_or(0);
        println!(
            "operator pod {}: restarts {restarts}",
            pod.metadata.name.as_deref().unwrap_or_default()
        );
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

    // From that pod: 3 real Octopus pods, then a patch upgrade rolled node by node. No
    // `spec.api`: the operator's default in-cluster URL templates.
    let clusters: Api<OctopusCluster> = ns.api();
    let obj: OctopusCluster = serde_json::from_value(json!({
        "apiVersion": "octopusoperator.dev/v1alpha1", "kind": "OctopusCluster",
        "metadata": {"name": CLUSTER}, "spec": cluster_spec(FROM, 3),
    }))?;
    let created = Instant::now();
    clusters.create(&PostParams::default(), &obj).await?;
    wait_cluster(&clusters, "3 real Octopus pods Ready on 2024.1.100", |c| {
        ready_on(c, FROM)
    })
    .await?;
    println!(
        "3 Octopus pods ready {:.2?} after the OctopusCluster was created",
        created.elapsed()
    );
    let pods: Api<Pod> = ns.api();
    for n in 0..3 {
        let pod = pods.get(&format!("{CLUSTER}-{n}")).await?;
        let spec = pod.spec.clone().unwrap_or_default();
        ensure!(
            spec.node_name.as_deref() == Some(node),
            "octo-{n} not on the node"
        );
        let image = pod
            .status
            .and_then(|s| s.container_statuses)
            .and_then(|c| c.into_iter().next())
            .map(|c| c.image);
        ensure!(
            image.as_deref() == Some("docker.io/octopusdeploy/octopusdeploy:2024.1.100"),
            "octo-{n} runs {image:?}"
        );
    }
    let claims = Api::<PersistentVolumeClaim>::namespaced(cluster.client(), ns.name())
        .list(&ListParams::default())
        .await?
        .items;
    let bound = claims
        .iter()
        .filter(|c| c.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound"))
        .count();
    ensure!(
        bound == claims.len() && bound == 4,
        "claims not all Bound: {bound} of {}",
        claims.len()
    );

    let mark = db.events().last().map_or(0, |e| e.seq);
    let rolled = Instant::now();
    clusters
        .patch(
            CLUSTER,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"version": TO}})),
        )
        .await?;
    // Once a node has been replaced, what the node runs (for the record).
    wait_until("a node replaced", WAIT, || async {
        let replaced = Replay::new(&db.events())
            .since(Mark::Seq(mark))
            .stopped_on(FROM)
            .len();
        Ok((replaced > 0).then_some(()))
    })
    .await?;
    kubectl_print(cluster, &["get", "pods", "-A", "-o", "wide"]).await?;
    wait_cluster(&clusters, "the roll to 2024.1.200", |c| ready_on(c, TO)).await?;
    println!(
        "patch upgrade 2024.1.100 -> 2024.1.200 of 3 real Octopus pods by the operator pod: {:.2?}",
        rolled.elapsed()
    );

    // Tasks running when a node was replaced are given time to finish.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let events = db.events();
    let replay = Replay::new(&events).since(Mark::Seq(mark));
    let min_serving = replay.min_serving();
    ensure!(
        min_serving >= 2,
        "only {min_serving} node(s) served at some moment"
    );
    let replaced = replay.stopped_on(FROM);
    ensure!(
        replaced.len() == 3,
        "every node replaced once: {replaced:?}"
    );
    let end = replay.nodes_at_end();
    ensure!(end.serving_on(TO) == 3, "{end:?}");
    ensure!(replay.schema().violations == 0, "schema rules broken");
    // The operator pod asked each node itself at its own pod DNS name.
    for n in 0..3 {
        let host = format!("{CLUSTER}-{n}.{CLUSTER}-nodes.{}.svc", ns.name());
        ensure!(
            events.iter().any(|e| matches!(&e.kind, EventKind::HttpRequest { service, route, .. } if *service == host && route == "/api")),
            "no GET /api reached {host}"
        );
    }
    // The Events of the roll name the pod that reported them.
    let events = Api::<Event>::namespaced(cluster.client(), ns.name())
        .list(&ListParams::default())
        .await?
        .items;
    let reporters: BTreeSet<String> = events
        .iter()
        .filter_map(|e| e.reporting_instance.clone())
        .collect();
    ensure!(
        reporters.contains(&leader),
        "no Event reported by the leader pod {leader}: {reporters:?}"
    );

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
    clusters.delete(CLUSTER, &Default::default()).await?;
    wait_until("the OctopusCluster deleted", WAIT, || async {
        Ok(clusters.get_opt(CLUSTER).await?.is_none().then_some(()))
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
