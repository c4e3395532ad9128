//! Smoke scenario for the real node (`OCTOPUS_OPERATOR_NODE=1 make cluster-up`, or
//! `make node-test`): kubelet registered a Ready, tainted node; a pod from the locally
//! built busybox image runs on it through the scheduler, with logs and exec; CoreDNS
//! resolves the `kubernetes` Service and a Service of ours; the pod reaches the API
//! server through the `kubernetes` Service, and a ClusterIP Service reaches another pod
//! through kube-proxy. Without a node every test here fails.

use std::time::Duration;

use anyhow::{Context, bail, ensure};
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use kube::api::{Api, ListParams, LogParams};
use octopus_e2e::cluster::{TestCluster, TestNamespace, wait_until};

const WAIT: Duration = Duration::from_secs(90);
/// The taint that keeps pods which do not ask for the real node (the Octopus pods the
/// twin plays) off it.
const TAINT: &str = "octopus-operator.dev/real-node";
const BUSYBOX: &str = "octopus-operator.local/busybox:";

/// The node, Ready; fails with how to start one when the control plane has none.
async fn ready_node(cluster: &TestCluster) -> anyhow::Result<Node> {
    let nodes: Api<Node> = Api::all(cluster.client());
    let mut list = nodes.list(&ListParams::default()).await?.items;
    ensure!(
        list.len() == 1,
        "expected one node, found {}: start the control plane with OCTOPUS_OPERATOR_NODE=1 \
         (`make node-test` does)",
        list.len()
    );
    let node = list.remove(0);
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    ensure!(ready, "node is not Ready: {:?}", node.status);
    Ok(node)
}

/// The busybox image the node has (imported by up.sh; nothing can be pulled).
fn busybox_image(node: &Node) -> anyhow::Result<String> {
    node.status
        .as_ref()
        .and_then(|s| s.images.as_ref())
        .into_iter()
        .flatten()
        .flat_map(|i| i.names.clone().unwrap_or_default())
        .find(|name| name.starts_with(BUSYBOX))
        .with_context(|| format!("no {BUSYBOX}* image on the node"))
}

/// A busybox pod tolerating the real node's taint, running `script` with `sh -c`.
fn pod_yaml(name: &str, image: &str, script: &str, readiness_port: Option<u16>) -> String {
    let probe = readiness_port
        .map(|p| format!("\n    readinessProbe: {{tcpSocket: {{port: {p}}}, periodSeconds: 1}}"))
        .unwrap_or_default();
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}, labels: {{app: {name}}}}}
spec:
  terminationGracePeriodSeconds: 1
  tolerations: [{{key: {TAINT}, operator: Exists, effect: NoSchedule}}]
  containers:
  - name: main
    image: {image}
    imagePullPolicy: Never
    command: [sh, -c, {script:?}]{probe}
"#
    )
}

async fn running(ns: &TestNamespace, name: &str) -> anyhow::Result<Pod> {
    let pods: Api<Pod> = ns.api();
    let pod = wait_until(&format!("pod {name} Ready"), WAIT, || async {
        let pod = pods.get(name).await?;
        let ready = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        Ok(ready.then_some(pod))
    })
    .await;
    match pod {
        Ok(pod) => Ok(pod),
        Err(e) => {
            let now = pods.get(name).await.ok().and_then(|p| p.status);
            bail!("{e}; pod status: {now:?}")
        }
    }
}

/// `sh -c script` in the pod through kubectl exec (API server -> kubelet -> containerd).
async fn exec(
    cluster: &TestCluster,
    ns: &TestNamespace,
    pod: &str,
    script: &str,
) -> anyhow::Result<String> {
    let out = cluster
        .kubectl(["exec", "-n", ns.name(), pod, "--", "sh", "-c", script])
        .await?
        .ok()?;
    Ok(out.stdout)
}

/// An HTTP/1.0 GET from the pod with busybox `nc` (its `wget` crashes on this image's
/// static glibc); the raw response, status line first.
async fn http_get(
    cluster: &TestCluster,
    ns: &TestNamespace,
    pod: &str,
    host: &str,
    port: u16,
    path: &str,
) -> anyhow::Result<String> {
    let script = format!(
        "printf 'GET {path} HTTP/1.0\\r\\nHost: {host}\\r\\n\\r\\n' | nc -w 5 {host} {port}"
    );
    exec(cluster, ns, pod, &script).await
}

#[tokio::test]
async fn node_is_ready_and_tainted() -> anyhow::Result<()> {
    let cluster = TestCluster::shared().await?;
    let node = ready_node(&cluster).await?;
    let taints = node.spec.and_then(|s| s.taints).unwrap_or_default();
    ensure!(
        taints
            .iter()
            .any(|t| t.key == TAINT && t.effect == "NoSchedule"),
        "the node lacks the {TAINT} taint: {taints:?}"
    );
    let pod_cidr_route = node
        .status
        .and_then(|s| s.addresses)
        .unwrap_or_default()
        .into_iter()
        .find(|a| a.type_ == "InternalIP")
        .context("node InternalIP")?;
    ensure!(
        pod_cidr_route.address.starts_with("198.18."),
        "node address {} is outside 198.18.0.0/15",
        pod_cidr_route.address
    );
    Ok(())
}

#[tokio::test]
async fn pod_runs_with_logs_exec_cluster_dns_and_services() -> anyhow::Result<()> {
    let cluster = TestCluster::shared().await?;
    let node = ready_node(&cluster).await?;
    let image = busybox_image(&node)?;
    let ns = cluster.namespace("node").await?;

    let web = pod_yaml(
        "web",
        &image,
        "mkdir -p /www && echo hello-from-web > /www/index.html && exec httpd -f -p 8080 -h /www",
        Some(8080),
    );
    let client = pod_yaml(
        "client",
        &image,
        "echo client-started; exec sleep 3600",
        None,
    );
    let service = "apiVersion: v1\nkind: Service\nmetadata: {name: web}\n\
                   spec: {selector: {app: web}, ports: [{port: 80, targetPort: 8080}]}\n";
    let manifests = format!("{web}---\n{client}---\n{service}");
    cluster
        .kubectl_with_stdin(["apply", "-n", ns.name(), "-f", "-"], Some(&manifests))
        .await?
        .ok()?;

    let web_pod = running(&ns, "web").await?;
    let client_pod = running(&ns, "client").await?;
    for pod in [&web_pod, &client_pod] {
        let ip = pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.clone())
            .unwrap_or_default();
        ensure!(
            ip.starts_with("198.18."),
            "pod IP {ip:?} outside 198.18.0.0/15"
        );
        ensure!(
            pod.spec.as_ref().and_then(|s| s.node_name.clone()) == node.metadata.name,
            "pod not bound to the node by the scheduler"
        );
    }

    // Logs: kubelet serves the container's output through the API server.
    let pods: Api<Pod> = ns.api();
    let logs = wait_until("the client's log line", WAIT, || async {
        let logs = pods.logs("client", &LogParams::default()).await?;
        Ok(logs.contains("client-started").then_some(logs))
    })
    .await?;
    ensure!(logs.contains("client-started"), "{logs}");

    // Exec, and the resolver kubelet configured.
    let resolv = exec(&cluster, &ns, "client", "cat /etc/resolv.conf").await?;
    ensure!(
        resolv.contains(&format!("search {}.svc.cluster.local", ns.name())),
        "{resolv}"
    );

    // Cluster DNS: the API server's Service and ours, by full and by short name.
    let services: Api<Service> = ns.api();
    let web_ip = services
        .get("web")
        .await?
        .spec
        .and_then(|s| s.cluster_ip)
        .context("web ClusterIP")?;
    let kubernetes = exec(
        &cluster,
        &ns,
        "client",
        "nslookup kubernetes.default.svc.cluster.local",
    )
    .await?;
    ensure!(kubernetes.contains("198.19.0.1"), "{kubernetes}");
    let ours = exec(
        &cluster,
        &ns,
        "client",
        &format!("nslookup web.{}.svc.cluster.local", ns.name()),
    )
    .await?;
    ensure!(ours.contains(&web_ip), "web is {web_ip}: {ours}");

    // The API server through the `kubernetes` Service, by its short name (the pod's
    // search path) -> 198.19.0.1:443 -> kube-proxy -> the address the API server
    // advertises. Plain HTTP on its TLS port gets Go's own refusal, which only an HTTPS
    // server written in Go sends: the API server answered. (busybox's TLS client cannot
    // finish a handshake with Go's TLS server, so no HTTPS request here.)
    let api = http_get(
        &cluster,
        &ns,
        "client",
        "kubernetes.default.svc",
        443,
        "/readyz",
    )
    .await?;
    ensure!(
        api.contains("Client sent an HTTP request to an HTTPS server"),
        "{api}"
    );

    // A ClusterIP Service through kube-proxy to the other pod, by address and by name.
    for host in [web_ip.clone(), format!("web.{}.svc", ns.name())] {
        let page = http_get(&cluster, &ns, "client", &host, 80, "/").await?;
        ensure!(
            page.split_whitespace().nth(1) == Some("200") && page.contains("hello-from-web"),
            "{host}: {page}"
        );
    }

    ns.cleanup().await?;
    Ok(())
}
