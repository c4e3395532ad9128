//! Octopus Server nodes as real pods on the control plane's real node
//! (`e2e/controlplane/node.sh`): the twin split along Octopus's own seam. The test process
//! runs the shared database (a [`Twin`] listening on the host's end of the node's veth,
//! 198.18.N.1, where pods reach it); each Octopus pod runs the node image
//! (`e2e/controlplane/octopus-images.sh`: the twin's node process, tagged as
//! `octopusdeploy/octopusdeploy:<version>`), which connects to the database its connection
//! string names. kubelet runs the probes, restarts and terminations.
//!
//! The operator runs either as the chart's Deployment from its own image
//! ([`RealNode::import_operator_image`], `e2e/tests/operator_pod.rs`) or as a host process
//! inside the node's network namespace ([`RealNode::start_operator`]), with a resolv.conf
//! naming CoreDNS bind-mounted in a private mount namespace (nothing on the host
//! changes); either way it reaches the nodes by the default in-cluster URL templates. The
//! shared volumes are [`crate::storage`]'s hostPath volumes.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};

use crate::cluster::{TestCluster, TestNamespace};
use crate::operator_process::operator_binary;
use crate::process::Process;
use crate::scenario;
use crate::twin::{GeneratorConfig, Timing, Twin, TwinConfig, TwinHandle};
use octopus_operator::api::OctopusCluster;

/// The taint keeping pods that do not ask for it off the real node.
pub const TAINT: &str = "octopus-operator.dev/real-node";

/// The database of the real-node tests: nodes start in a second, deployments keep
/// arriving; a node whose heartbeats stop is offline after `offline_after`.
pub fn database_config(offline_after: Duration) -> TwinConfig {
    TwinConfig {
        timing: Timing {
            start_delay: Duration::from_secs(1),
            migration_time: Duration::from_secs(1),
            offline_after,
            ..Timing::default()
        },
        generator: GeneratorConfig {
            deployments_per_minute: 30.0,
            deployment_duration_min: Duration::from_millis(500),
            deployment_duration_max: Duration::from_millis(2500),
            ..GeneratorConfig::default()
        },
        ..TwinConfig::default()
    }
}

/// The spec of an OctopusCluster of `replicas` real Octopus pods on `version`, with the
/// Secrets [`RealNode::octopus_secrets`] creates and the default shared volumes (which
/// [`crate::storage::provide`] backs with hostPath volumes).
pub fn cluster_spec(version: &str, replicas: i32) -> Value {
    json!({
        "version": version,
        "replicas": replicas,
        "image": {"pullPolicy": "IfNotPresent"},
        "database": {"connectionStringSecretRef": {"name": "octopus-db", "key": "connectionString"}},
        "masterKeySecretRef": {"name": "octopus", "key": "masterKey"},
        "apiKeySecretRef": {"name": "octopus", "key": "apiKey"},
        "upgrade": {"drainTimeout": "2m", "nodeReadyTimeout": "3m"},
    })
}

/// The operator image imported into the node: its reference, archive size, import time.
#[derive(Debug)]
pub struct OperatorImage {
    pub image: String,
    pub bytes: u64,
    pub import: Duration,
}

/// The real node of a control plane: its slot's addresses, namespace and containerd.
pub struct RealNode {
    run: PathBuf,
    slot: u32,
}

impl RealNode {
    /// The node of `cluster`'s control plane; fails when it has none.
    pub fn of(cluster: &TestCluster) -> Result<Self> {
        let run = cluster
            .kubeconfig()
            .parent()
            .context("the kubeconfig has no directory")?
            .to_path_buf();
        let state = run.join("node/state.env");
        let text = std::fs::read_to_string(&state).with_context(|| {
            format!(
                "{} is missing: this control plane has no real node \
                 (run as root, or OCTOPUS_OPERATOR_NODE=1 e2e/controlplane/up.sh)",
                state.display()
            )
        })?;
        let slot = text
            .lines()
            .find_map(|l| l.strip_prefix("NODE_SLOT="))
            .and_then(|s| s.trim().parse().ok())
            .with_context(|| format!("no NODE_SLOT in {}", state.display()))?;
        Ok(Self { run, slot })
    }

    /// The host's end of the node's veth: where pods reach host processes.
    pub fn host_ip(&self) -> String {
        format!("198.18.{}.1", self.slot)
    }

    /// The node's end of the veth: where host processes reach what listens in the node's
    /// network namespace.
    pub fn node_ip(&self) -> String {
        format!("198.18.{}.2", self.slot)
    }

    /// CoreDNS, on the pods' gateway.
    pub fn dns_ip(&self) -> String {
        format!("198.18.{}.129", self.slot)
    }

    fn netns(&self) -> String {
        format!("/run/netns/octopus-node{}", self.slot)
    }

    fn containerd_socket(&self) -> PathBuf {
        self.run.join("node/containerd/containerd.sock")
    }

    /// Builds the Octopus node images when missing (cached) and imports every tag into
    /// the node's containerd, once per test process.
    pub async fn import_octopus_images(&self) -> Result<()> {
        static IMPORTED: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
        IMPORTED
            .get_or_try_init(|| async {
                self.script("controlplane/octopus-images.sh", &["--import"])
                    .await
                    .map(drop)
            })
            .await
            .copied()
    }

    /// `make image` of this checkout (a no-op build when nothing changed) imported into
    /// the node's containerd (`e2e/controlplane/node-import.sh`): what the chart's
    /// Deployment runs.
    pub async fn import_operator_image(&self) -> Result<OperatorImage> {
        let built = self.script("../operator/image/build.sh", &[]).await?;
        let summary: Value = serde_json::from_str(built.lines().last().unwrap_or_default())
            .with_context(|| format!("build.sh printed {built:?}"))?;
        let archive = summary["archive"].as_str().context("no archive")?;
        let image = summary["image"].as_str().context("no image")?;
        let started = Instant::now();
        self.script("controlplane/node-import.sh", &[archive])
            .await?;
        Ok(OperatorImage {
            image: image.to_owned(),
            bytes: std::fs::metadata(archive)?.len(),
            import: started.elapsed(),
        })
    }

    /// Runs `script` (relative to the e2e crate) for this node's control plane; its stdout.
    async fn script(&self, script: &str, args: &[&str]) -> Result<String> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join(script);
        let output = tokio::process::Command::new(&script)
            .args(args)
            .env("OCTOPUS_OPERATOR_RUN_DIR", &self.run)
            .output()
            .await
            .with_context(|| format!("running {}", script.display()))?;
        if !output.status.success() {
            bail!(
                "{} {args:?} failed ({}): {}",
                script.display(),
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// The shared database: a twin on the host's end of the veth (no kubelet role: the
    /// node's kubelet runs the pods).
    pub async fn start_database(&self, config: TwinConfig) -> Result<TwinHandle> {
        let bind = format!("{}:0", self.host_ip()).parse()?;
        Ok(Twin::start(TwinConfig {
            bind,
            kube: None,
            ..config
        })
        .await?)
    }

    /// A SQL Server style connection string naming `database` on the twin's database
    /// process (`Server=host,port`), what the node image connects to.
    pub fn connection_string(&self, db: &TwinHandle, database: &str) -> String {
        format!(
            "Server={},{};Database={database};User Id=octopus;Password=e2e",
            self.host_ip(),
            db.addr().port()
        )
    }

    /// The Secrets [`cluster_spec`] names in `ns`: the connection string of `db`, the
    /// master key and the API key.
    pub async fn octopus_secrets(&self, ns: &TestNamespace, db: &TwinHandle) -> Result<()> {
        scenario::octopus_secrets(ns, &self.connection_string(db, ns.name())).await
    }

    /// Lets the pods of `ns` onto the tainted node: the namespace's default tolerations
    /// (the API server's PodTolerationRestriction admission adds them to every pod).
    pub async fn admit(&self, cluster: &TestCluster, ns: &TestNamespace) -> Result<()> {
        let tolerations = json!([{"key": TAINT, "operator": "Exists", "effect": "NoSchedule"}]);
        let namespaces: Api<Namespace> = Api::all(cluster.client());
        namespaces
            .patch(
                ns.name(),
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"annotations": {
                    "scheduler.alpha.kubernetes.io/defaultTolerations": tolerations.to_string()
                }}})),
            )
            .await?;
        Ok(())
    }

    /// `octopus-operator run` for `ns` inside the node's network namespace, resolving
    /// through CoreDNS, with the default URL templates (client Service, and each node by
    /// its pod DNS name through the headless Service). Killed when dropped.
    pub async fn start_operator(
        &self,
        cluster: &TestCluster,
        ns: &TestNamespace,
    ) -> Result<OperatorInNode> {
        let binary = operator_binary().await?;
        let single = ["--leader-elect=false".to_string()];
        self.spawn_operator(&binary, cluster, ns.name(), "operator", &single)
    }

    /// [`RealNode::start_operator`] of `binary` with `extra` flags; `label` names its log
    /// (several may run at once, in one namespace or many). Its /metrics, /healthz and
    /// /readyz listen on a port the kernel picks on the node's address, reachable from
    /// the host ([`OperatorInNode::metrics_url`]).
    pub fn spawn_operator(
        &self,
        binary: &Path,
        cluster: &TestCluster,
        namespace: &str,
        label: &str,
        extra: &[String],
    ) -> Result<OperatorInNode> {
        let dir = std::env::temp_dir().join(format!("octopus-e2e-{namespace}"));
        std::fs::create_dir_all(&dir)?;
        let resolv = dir.join("resolv.conf");
        std::fs::write(
            &resolv,
            format!(
                "nameserver {}\nsearch {namespace}.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n",
                self.dns_ip(),
            ),
        )?;
        let log = dir.join(format!("{label}.log"));
        let out = std::fs::File::create(&log)?;
        let err = out.try_clone()?;
        let mut command = Command::new("unshare");
        command
            .args(["--mount", "--propagation", "private", "/bin/sh", "-ec"])
            .arg(r#"mount --bind "$0" /etc/resolv.conf; netns=$1; shift; exec nsenter --net="$netns" -- "$@""#)
            .arg(&resolv)
            .arg(self.netns())
            .arg(binary)
            .args(["run", "--namespace", namespace, "--poll-interval", "300ms"])
            .arg(format!("--metrics-addr={}:0", self.node_ip()))
            .args(extra)
            .env("KUBECONFIG", cluster.kubeconfig())
            .env("RUST_LOG", "info")
            // Plain log lines: the metrics address is read from them.
            .env("NO_COLOR", "1")
            .env_remove("POD_NAME")
            .env_remove("POD_NAMESPACE")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let process = Process::spawn(command).context("starting the operator in the node")?;
        Ok(OperatorInNode { process, log })
    }

    /// SIGKILLs a pod's (first) container through containerd, as the OOM killer would:
    /// no SIGTERM, no grace.
    pub async fn kill_container(&self, pod: &Pod) -> Result<()> {
        let id = pod
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|c| c.first())
            .and_then(|c| c.container_id.as_deref())
            .and_then(|id| id.strip_prefix("containerd://"))
            .context("the pod has no running container")?;
        let status = tokio::process::Command::new("ctr")
            .arg("--address")
            .arg(self.containerd_socket())
            .args(["-n", "k8s.io", "task", "kill", "--signal", "SIGKILL", id])
            .status()
            .await?;
        if !status.success() {
            bail!("ctr task kill {id}: {status}");
        }
        Ok(())
    }
}

/// The operator process in the node's network namespace; SIGKILLed when dropped.
pub struct OperatorInNode {
    process: Process,
    pub log: PathBuf,
}

impl OperatorInNode {
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// `http://ADDR` of its /metrics, /healthz and /readyz, once it has logged where it
    /// listens (`addr=` of its start line).
    pub fn metrics_url(&self) -> Option<String> {
        let log = self.log_text();
        let line = log
            .lines()
            .find(|l| l.contains("octopus-operator starting"))?;
        let addr = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("addr="))?;
        Some(format!("http://{addr}"))
    }

    /// Its /metrics now (blocking, a few milliseconds: the scrape of a scenario's
    /// synchronous `reconciles`).
    pub fn scrape(&self) -> Result<String> {
        let url = self
            .metrics_url()
            .context("the operator has not said where it listens yet")?;
        let addr = url.trim_start_matches("http://");
        let mut stream = std::net::TcpStream::connect_timeout(
            &addr.parse().context("the operator's metrics address")?,
            Duration::from_secs(2),
        )?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(stream, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        let (head, body) = response
            .split_once("\r\n\r\n")
            .context("no HTTP answer from /metrics")?;
        if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
            bail!(
                "/metrics answered {}",
                head.lines().next().unwrap_or_default()
            );
        }
        Ok(body.to_string())
    }

    /// Its log so far (for failure messages).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// The cluster is Ready on `version`, with no upgrade under way.
pub fn ready_on(c: &OctopusCluster, version: &str) -> bool {
    c.status.as_ref().is_some_and(|st| {
        st.current_version.as_deref() == Some(version)
            && st
                .conditions
                .iter()
                .any(|k| k.type_ == "Ready" && k.status == "True" && k.reason == "Ready")
            && st.upgrade.as_ref().is_none_or(|u| u.finished_at.is_some())
    })
}
