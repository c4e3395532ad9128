//! One end-to-end scenario's world: a fresh namespace on the real control plane, the
//! OctopusCluster CRD, an Octopus twin playing kubelet for that namespace, a backup-Job
//! runner, and the operator itself (in-process, so a scenario can kill and restart it).
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
use crate::jobs::JobRunner;
use crate::twin::{GeneratorConfig, Timing, Twin, TwinConfig, TwinHandle};

/// The API key every scenario's Octopus installation accepts.
pub const API_KEY: &str = "API-E2ESCENARIO00000000000000000";

/// The running pieces of one scenario.
pub struct Scenario {
    pub cluster: TestCluster,
    pub ns: TestNamespace,
    pub twin: TwinHandle,
    pub jobs: JobRunner,
    operator: Option<JoinHandle<()>>,
    pub metrics: Arc<Metrics>,
    /// The in-process operator's resync when nothing happens (set before starting it).
    pub resync_interval: Duration,
    /// The in-process operator's `--max-concurrent-upgrades` (set before starting it).
    pub max_concurrent_upgrades: Option<std::num::NonZeroU32>,
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
    /// Starts everything for a scenario in a fresh namespace named after `prefix`.
    pub async fn start(prefix: &str, twin_config: TwinConfig) -> Result<Self> {
        let mut scenario = Self::start_without_operator(prefix, twin_config).await?;
        scenario.start_operator();
        Ok(scenario)
    }

    /// [`Scenario::start`] without the in-process operator, for scenarios that run the
    /// operator binary (see [`crate::operator_process`]).
    pub async fn start_without_operator(prefix: &str, twin_config: TwinConfig) -> Result<Self> {
        let cluster = TestCluster::shared()
            .await
            .context("the e2e control plane is required")?;
        install_crd(&cluster).await?;
        let ns = cluster.namespace(prefix).await?;
        let twin = Twin::start(TwinConfig {
            kube: Some(cluster.client()),
            namespace: Some(ns.name().to_string()),
            ..twin_config
        })
        .await?;
        let jobs = JobRunner::start(cluster.client(), ns.name());
        let scenario = Self {
            cluster,
            ns,
            twin,
            jobs,
            operator: None,
            metrics: Arc::new(Metrics::default()),
            resync_interval: Duration::from_secs(30),
            max_concurrent_upgrades: None,
        };
        scenario.secrets().await?;
        Ok(scenario)
    }

    /// The Secrets the sample clusters reference.
    async fn secrets(&self) -> Result<()> {
        let api: Api<Secret> = self.ns.api();
        let secret = |name: &str, data: Value| -> Result<Secret> {
            Ok(serde_json::from_value(json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": name},
                "stringData": data,
            }))?)
        };
        let db = format!(
            "Server=mssql;Database=Octopus-{};User Id=octopus;Password=e2e",
            self.ns.name()
        );
        api.create(
            &PostParams::default(),
            &secret("octopus-db", json!({"connectionString": db}))?,
        )
        .await?;
        api.create(
            &PostParams::default(),
            &secret(
                "octopus",
                json!({"masterKey": "6EdU6IWsCtMEwk0kPKflQQ==", "apiKey": API_KEY}),
            )?,
        )
        .await?;
        Ok(())
    }

    /// Starts the operator in-process, watching only this namespace.
    pub fn start_operator(&mut self) {
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
        self.operator = Some(tokio::spawn(async move {
            controller::run(client, config, metrics).await;
        }));
    }

    /// Kills the operator at whatever point it is (as a crashed pod would be).
    pub async fn kill_operator(&mut self) {
        if let Some(handle) = self.operator.take() {
            handle.abort();
            let _ = handle.await;
        }
    }

    pub fn clusters(&self) -> Api<OctopusCluster> {
        self.ns.api()
    }

    /// Creates an OctopusCluster from a JSON spec.
    pub async fn create_cluster(&self, name: &str, spec: Value) -> Result<OctopusCluster> {
        let obj: OctopusCluster = serde_json::from_value(json!({
            "apiVersion": "octopusoperator.dev/v1alpha1",
            "kind": "OctopusCluster",
            "metadata": {"name": name},
            "spec": spec,
        }))?;
        Ok(self.clusters().create(&PostParams::default(), &obj).await?)
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
                bail!(
                    "timed out waiting for {what}; status: {}",
                    serde_json::to_string_pretty(&current.status).unwrap_or_default()
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

    /// Reconciles the in-process operator has run (its `reconciles` metric).
    pub fn reconciles(&self) -> u64 {
        self.metrics
            .encode()
            .lines()
            .find_map(|l| l.strip_prefix("octopus_operator_reconciles_total "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_default()
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
        self.ns.cleanup().await?;
        Ok(())
    }
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
