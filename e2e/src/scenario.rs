//! One end-to-end scenario's world: a fresh namespace on the real control plane, the
//! OctopusCluster CRD, the Octopus twin, the backups, and the operator itself, in one of
//! two [`World`]s:
//!
//! - [`World::Real`] (the default when the control plane has a real node, as root): the
//!   Octopus nodes are real pods of the local node images under kubelet, containerd and
//!   runc ([`crate::real_node`]); the twin is their shared database on the host; backup
//!   Jobs run as real pods that ask the database for the backup; the operator is an
//!   `octopus-operator run` process in the node's network namespace, killed with SIGKILL
//!   and started again by the scenario, its figures scraped from its /metrics.
//! - [`World::Played`] (`OCTOPUS_E2E_WORLD=played`, or no node): the twin plays kubelet for
//!   the namespace, [`JobRunner`] plays the backup pods and the operator runs in-process.
//!
//! Nothing here decides for the operator: scenarios only change specs and faults, then
//! assert on what the API server and the twin's flight recorder show.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams, PostParams};
use octopus_operator::api::OctopusCluster;
use octopus_operator::controller::{self, metrics::Metrics};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use crate::cluster::{TestCluster, TestNamespace, wait_until};
use crate::jobs::{Backups, JobRunner};
use crate::operator_process::{operator_binary, sample};
use crate::real_node::{OperatorInNode, RealNode};
use crate::storage;
use crate::twin::{GeneratorConfig, Timing, Twin, TwinConfig, TwinHandle};

/// The API key every scenario's Octopus installation accepts.
pub const API_KEY: &str = "API-E2ESCENARIO00000000000000000";

/// Environment variable choosing the [`World`]: `real` or `played`.
pub const WORLD_ENV: &str = "OCTOPUS_E2E_WORLD";

/// Where a scenario's Octopus nodes, backup Jobs and operator run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum World {
    /// Real pods on the control plane's node; the operator a process in the node.
    Real,
    /// The twin plays kubelet; the operator runs in-process.
    Played,
}

impl World {
    /// [`WORLD_ENV`] if set, else real when the control plane has a node.
    pub fn chosen(cluster: &TestCluster) -> Result<Self> {
        match std::env::var(WORLD_ENV).unwrap_or_default().as_str() {
            "real" => Ok(Self::Real),
            "played" => Ok(Self::Played),
            "" if RealNode::of(cluster).is_ok() => Ok(Self::Real),
            "" => Ok(Self::Played),
            other => bail!("{WORLD_ENV}={other}: expected real or played"),
        }
    }
}

/// The running pieces of one scenario.
pub struct Scenario {
    pub cluster: TestCluster,
    pub ns: TestNamespace,
    /// The Octopus twin: the kubelet and load balancer of the played world, the shared
    /// database of the real one; either way the one event log.
    pub twin: TwinHandle,
    pub jobs: Backups,
    operator: Option<Operator>,
    /// The in-process operator's metrics (played world).
    pub metrics: Arc<Metrics>,
    /// The operator's resync when nothing happens (set before starting it).
    pub resync_interval: Duration,
    /// The operator's `--max-concurrent-upgrades` (set before starting it).
    pub max_concurrent_upgrades: Option<std::num::NonZeroU32>,
    real: Option<RealWorld>,
}

/// The real node's part of a scenario.
struct RealWorld {
    node: RealNode,
    binary: PathBuf,
    /// Operator processes started so far (names their logs).
    started: u32,
    /// Reconciles of operator processes already killed.
    reconciles_before: u64,
}

enum Operator {
    InProcess(JoinHandle<()>),
    InNode(OperatorInNode),
}

/// Path of the checked-in CRD.
/// The twin of the upgrade scenarios: nodes start in 300 ms, a migration takes 1 s, and
/// with `tasks` deployments (0.5-2.5 s) keep arriving, 60 a minute.
pub fn twin_config(tasks: bool) -> TwinConfig {
    TwinConfig {
        timing: Timing {
            start_delay: Duration::from_millis(300),
            migration_time: Duration::from_secs(1),
            ..Timing::default()
        },
        generator: GeneratorConfig {
            enabled: tasks,
            deployments_per_minute: if tasks { 60.0 } else { 0.0 },
            deployment_duration_min: Duration::from_millis(500),
            deployment_duration_max: Duration::from_millis(2500),
            ..GeneratorConfig::default()
        },
        ..TwinConfig::default()
    }
}

pub fn crd_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../crds/octopusclusters.yaml")
}

/// Applies the CRD (server-side, idempotent) and waits until it is Established.
pub async fn install_crd(cluster: &TestCluster) -> Result<()> {
    let crd = crd_path();
    cluster
        .kubectl([
            "apply",
            "--server-side",
            "--force-conflicts",
            "-f",
            crd.to_str().unwrap_or_default(),
        ])
        .await?
        .ok()?;
    // Polled rather than `kubectl wait`: that fails at once on a CRD whose status has no
    // conditions yet (a fresh control plane, the CRD created a moment ago).
    let crds: Api<CustomResourceDefinition> = Api::all(cluster.client());
    wait_until(
        "the OctopusCluster CRD to be Established",
        Duration::from_secs(60),
        || async {
            let crd = crds.get_opt("octopusclusters.octopusoperator.dev").await?;
            let established = crd
                .and_then(|c| c.status)
                .and_then(|s| s.conditions)
                .is_some_and(|c| {
                    c.iter()
                        .any(|c| c.type_ == "Established" && c.status == "True")
                });
            Ok(established.then_some(()))
        },
    )
    .await?;
    Ok(())
}

impl Scenario {
    /// Starts everything for a scenario in a fresh namespace named after `prefix`, in the
    /// [`World::chosen`] world.
    pub async fn start(prefix: &str, twin_config: TwinConfig) -> Result<Self> {
        let mut scenario = Self::start_without_operator(prefix, twin_config).await?;
        scenario.start_operator();
        Ok(scenario)
    }

    /// [`Scenario::start`] in the played world whatever the control plane has: for the
    /// scenarios whose fault only the played kubelet makes (each says why).
    pub async fn start_played(prefix: &str, twin_config: TwinConfig) -> Result<Self> {
        let mut scenario = Self::start_in(Some(World::Played), prefix, twin_config).await?;
        scenario.start_operator();
        Ok(scenario)
    }

    /// [`Scenario::start`] without the operator (start it with
    /// [`Scenario::start_operator`]), or for scenarios that run the operator binary
    /// themselves (see [`crate::operator_process`]).
    pub async fn start_without_operator(prefix: &str, twin_config: TwinConfig) -> Result<Self> {
        Self::start_in(None, prefix, twin_config).await
    }

    /// [`Scenario::start_without_operator`] in `world`, whatever [`WORLD_ENV`] says.
    pub async fn start_without_operator_in(
        world: World,
        prefix: &str,
        twin_config: TwinConfig,
    ) -> Result<Self> {
        Self::start_in(Some(world), prefix, twin_config).await
    }

    async fn start_in(world: Option<World>, prefix: &str, twin_config: TwinConfig) -> Result<Self> {
        let cluster = TestCluster::shared()
            .await
            .context("the e2e control plane is required")?;
        let world = match world {
            Some(world) => world,
            None => World::chosen(&cluster)?,
        };
        install_crd(&cluster).await?;
        let ns = cluster.namespace(prefix).await?;
        let (twin, jobs, real) = match world {
            World::Played => {
                let twin = Twin::start(TwinConfig {
                    kube: Some(cluster.client()),
                    namespace: Some(ns.name().to_string()),
                    ..twin_config
                })
                .await?;
                let connection_string = format!(
                    "Server=mssql;Database=Octopus-{};User Id=octopus;Password=e2e",
                    ns.name()
                );
                octopus_secrets(&ns, &connection_string).await?;
                let jobs = Backups::Played(JobRunner::start(cluster.client(), ns.name()));
                (twin, jobs, None)
            }
            World::Real => {
                let node = RealNode::of(&cluster)?;
                node.import_octopus_images().await?;
                node.admit(&cluster, &ns).await?;
                let twin = node.start_database(twin_config).await?;
                node.octopus_secrets(&ns, &twin).await?;
                twin.name_database(ns.name(), &node.connection_string(&twin, ns.name()));
                let jobs = Backups::Real(twin.backups(ns.name()));
                let real = RealWorld {
                    node,
                    binary: operator_binary().await?,
                    started: 0,
                    reconciles_before: 0,
                };
                (twin, jobs, Some(real))
            }
        };
        Ok(Self {
            cluster,
            ns,
            twin,
            jobs,
            operator: None,
            metrics: Arc::new(Metrics::default()),
            resync_interval: Duration::from_secs(30),
            max_concurrent_upgrades: None,
            real,
        })
    }

    /// The world this scenario runs in.
    pub fn world(&self) -> World {
        if self.real.is_some() {
            World::Real
        } else {
            World::Played
        }
    }

    /// The real node, in the real world.
    pub fn real_node(&self) -> Option<&RealNode> {
        self.real.as_ref().map(|r| &r.node)
    }

    /// Starts the operator watching only this namespace: in-process (played world), or a
    /// new `octopus-operator run` process in the node (real world; panics when it cannot
    /// be started).
    pub fn start_operator(&mut self) {
        if let Some(real) = &mut self.real {
            real.started += 1;
            let mut flags = vec![
                "--leader-elect=false".to_string(),
                format!("--resync-interval={}ms", self.resync_interval.as_millis()),
            ];
            if let Some(cap) = self.max_concurrent_upgrades {
                flags.push(format!("--max-concurrent-upgrades={cap}"));
            }
            let label = format!("operator-{}", real.started);
            let process = real
                .node
                .spawn_operator(&real.binary, &self.cluster, self.ns.name(), &label, &flags)
                .unwrap_or_else(|e| panic!("{e:#}"));
            self.operator = Some(Operator::InNode(process));
            return;
        }
        let config = controller::Config {
            api_url_template: format!("{}/{{namespace}}/{{name}}", self.twin.base_url()),
            // Each node at its own address: the twin routes /{ns}/{service}/{pod} to it.
            node_url_template: format!(
                "{}/{{namespace}}/{{service}}/{{pod}}",
                self.twin.base_url()
            ),
            poll_interval: Duration::from_millis(300),
            resync_interval: self.resync_interval,
            namespace: Some(self.ns.name().to_string()),
            max_concurrent_upgrades: self.max_concurrent_upgrades,
        };
        let client = self.cluster.client();
        let metrics = self.metrics.clone();
        self.operator = Some(Operator::InProcess(tokio::spawn(async move {
            controller::run(client, config, metrics).await;
        })));
    }

    /// Kills the operator at whatever point it is (as a crashed pod would be): the
    /// in-process one aborted, the process SIGKILLed.
    pub async fn kill_operator(&mut self) {
        match self.operator.take() {
            Some(Operator::InProcess(handle)) => {
                handle.abort();
                let _ = handle.await;
            }
            Some(Operator::InNode(process)) => {
                let reconciles = process_reconciles(&process);
                drop(process);
                if let Some(real) = &mut self.real {
                    real.reconciles_before += reconciles;
                }
            }
            None => {}
        }
    }

    /// The running operator's log so far (real world; empty in-process).
    pub fn operator_log(&self) -> String {
        match &self.operator {
            Some(Operator::InNode(process)) => process.log_text(),
            _ => String::new(),
        }
    }

    /// The running operator's /metrics text (empty while it does not answer).
    pub fn metrics_text(&self) -> String {
        match &self.operator {
            Some(Operator::InNode(process)) => process.scrape().unwrap_or_default(),
            _ => self.metrics.encode(),
        }
    }

    pub fn clusters(&self) -> Api<OctopusCluster> {
        self.ns.api()
    }

    /// Creates an OctopusCluster from a JSON spec. On the real node its shared volumes
    /// get hostPath PersistentVolumes, and a backup Job template is replaced by
    /// [`Scenario::backup_job_template`].
    pub async fn create_cluster(&self, name: &str, mut spec: Value) -> Result<OctopusCluster> {
        if self.real.is_some() {
            storage::provide(&self.cluster, self.ns.name(), name).await?;
            if let Some(template) = spec.pointer_mut("/upgrade/backup/jobTemplate") {
                *template = self.backup_job_template();
            }
        }
        let obj: OctopusCluster = serde_json::from_value(json!({
            "apiVersion": "octopusoperator.dev/v1alpha1",
            "kind": "OctopusCluster",
            "metadata": {"name": name},
            "spec": spec,
        }))?;
        Ok(self.clusters().create(&PostParams::default(), &obj).await?)
    }

    /// The backup Job template of the real node: the local node image's busybox asks the
    /// scenario's database for the backup (`POST /_db/backups/$BACKUP_NAME`, the
    /// connection string as body); it fails when the database refuses.
    pub fn backup_job_template(&self) -> Value {
        let script = format!(
            r#"wget -q -O - --post-data "$DB_CONNECTION_STRING" "http://{}/_db/backups/$BACKUP_NAME""#,
            self.twin.addr()
        );
        json!({"template": {"spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "backup", "image": BACKUP_IMAGE,
                            "imagePullPolicy": "IfNotPresent",
                            "command": ["/bin/sh", "-c", script]}]
        }}})
    }

    /// Merge-patches the spec, as a person or a GitOps tool would.
    pub async fn patch_spec(&self, name: &str, spec: Value) -> Result<OctopusCluster> {
        Ok(self
            .clusters()
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "spec": spec })),
            )
            .await?)
    }

    /// Waits until `check` holds for the cluster, or fails with its last status.
    pub async fn wait_for<F>(
        &self,
        name: &str,
        what: &str,
        timeout: Duration,
        check: F,
    ) -> Result<OctopusCluster>
    where
        F: Fn(&OctopusCluster) -> bool,
    {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let current = self.clusters().get(name).await?;
            if check(&current) {
                return Ok(current);
            }
            if tokio::time::Instant::now() >= deadline {
                let log = self.operator_log();
                let tail: Vec<&str> = log.lines().rev().take(30).collect();
                bail!(
                    "timed out waiting for {what}; status: {}\noperator log (newest first):\n{}",
                    serde_json::to_string_pretty(&current.status).unwrap_or_default(),
                    tail.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits for a condition with the given status (and reason, when given).
    pub async fn wait_condition(
        &self,
        name: &str,
        type_: &str,
        status: bool,
        reason: Option<&str>,
        timeout: Duration,
    ) -> Result<OctopusCluster> {
        let want = if status { "True" } else { "False" };
        let what = format!("{type_}={want} reason={reason:?}");
        self.wait_for(name, &what, timeout, |c| {
            condition(c, type_).is_some_and(|cond| {
                cond.status == want
                    && reason.is_none_or(|r| cond.reason == r)
                    && cond.observed_generation == c.metadata.generation
            })
        })
        .await
    }

    /// Reconciles the operator has run (its `reconciles` metric; on the real node summed
    /// over the processes this scenario started).
    pub fn reconciles(&self) -> u64 {
        match (&self.operator, &self.real) {
            (Some(Operator::InNode(process)), Some(real)) => {
                real.reconciles_before + process_reconciles(process)
            }
            (_, Some(real)) => real.reconciles_before,
            _ => reconciles_in(&self.metrics.encode()),
        }
    }

    /// The Events about OctopusCluster `name` (not its StatefulSet or Services, which share
    /// the name), as (name, resourceVersion, reason): a new Event or
    /// a repeat folded into a series both show as a change here.
    pub async fn events_about(&self, name: &str) -> Result<Vec<(String, String, String)>> {
        let api: Api<k8s_openapi::api::events::v1::Event> = self.ns.api();
        let mut events: Vec<(String, String, String)> = api
            .list(&Default::default())
            .await?
            .items
            .into_iter()
            .filter(|e| {
                e.regarding.as_ref().is_some_and(|r| {
                    r.kind.as_deref() == Some("OctopusCluster") && r.name.as_deref() == Some(name)
                })
            })
            .map(|e| {
                (
                    e.metadata.name.unwrap_or_default(),
                    e.metadata.resource_version.unwrap_or_default(),
                    e.reason.unwrap_or_default(),
                )
            })
            .collect();
        events.sort();
        Ok(events)
    }

    /// Deletes the clusters while an operator still runs (its finalizer releases them),
    /// then stops the operator and the twin and deletes the namespace.
    pub async fn finish(mut self) -> Result<()> {
        if self.operator.is_none() {
            self.start_operator();
        }
        let clusters = self.clusters();
        clusters
            .delete_collection(&Default::default(), &Default::default())
            .await?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while !clusters.list(&Default::default()).await?.items.is_empty() {
            if tokio::time::Instant::now() >= deadline {
                bail!("OctopusClusters in {} were not deleted", self.ns.name());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        self.kill_operator().await;
        self.jobs.stop();
        self.twin.shutdown().await;
        if self.real.is_some() {
            storage::release(&self.cluster, self.ns.name()).await?;
        }
        self.ns.cleanup().await?;
        Ok(())
    }
}

/// The image of the real node's backup Jobs (one of the node images: busybox and the
/// twin's node binary).
pub const BACKUP_IMAGE: &str = "octopusdeploy/octopusdeploy:2024.1.100";

/// `octopus_operator_reconciles_total` in a /metrics text (0 when absent).
fn reconciles_in(metrics: &str) -> u64 {
    sample(metrics, "octopus_operator_reconciles_total ").map_or(0, |v| v as u64)
}

/// The reconciles of an operator process so far (0 while it does not answer).
fn process_reconciles(process: &OperatorInNode) -> u64 {
    process.scrape().map_or(0, |m| reconciles_in(&m))
}

/// The Secrets the sample clusters reference: `octopus-db` with `connection_string`, and
/// `octopus` with the master key and [`API_KEY`].
pub async fn octopus_secrets(ns: &TestNamespace, connection_string: &str) -> Result<()> {
    let api: Api<Secret> = ns.api();
    for (name, data) in [
        ("octopus-db", json!({"connectionString": connection_string})),
        (
            "octopus",
            json!({"masterKey": "6EdU6IWsCtMEwk0kPKflQQ==", "apiKey": API_KEY}),
        ),
    ] {
        let secret: Secret = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": data,
        }))?;
        api.create(&PostParams::default(), &secret).await?;
    }
    Ok(())
}

/// The condition of `type_`, if any.
pub fn condition<'a>(
    c: &'a OctopusCluster,
    type_: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    c.status
        .as_ref()?
        .conditions
        .iter()
        .find(|cond| cond.type_ == type_)
}

/// A spec for `replicas` nodes on `version`, with the scenario's Secrets.
pub fn spec(version: &str, replicas: i32) -> Value {
    json!({
        "version": version,
        "replicas": replicas,
        "database": {"connectionStringSecretRef": {"name": "octopus-db", "key": "connectionString"}},
        "masterKeySecretRef": {"name": "octopus", "key": "masterKey"},
        "apiKeySecretRef": {"name": "octopus", "key": "apiKey"},
        "upgrade": {
            "drainTimeout": "2m",
            "nodeReadyTimeout": "2m",
            "backup": {"jobTemplate": {"template": {"spec": {
                "restartPolicy": "Never",
                "containers": [{"name": "backup", "image": "mcr.microsoft.com/mssql-tools:latest",
                                "command": ["/opt/mssql-tools/bin/sqlcmd"]}]
            }}}}
        }
    })
}

/// Fails with the reason when `result` is an error (keeps test bodies short).
pub fn must<T>(result: Result<T>) -> T {
    match result {
        Ok(v) => v,
        Err(e) => panic!("{e:#}"),
    }
}

/// Convenience for errors built from strings.
pub fn fail(message: impl Into<String>) -> anyhow::Error {
    anyhow!(message.into())
}
