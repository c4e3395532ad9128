//! `OctopusCluster.spec`: what the user declares. The operator never writes it (GitOps tools
//! own it); everything it learns goes to status.
//!
//! What can be checked without the cluster is checked at admission by the OpenAPI schema and
//! the CEL rules declared here (string formats: [`super::admission`]); what needs the cluster
//! (Secrets, time zones) becomes a condition at reconcile time.

use k8s_openapi::api::batch::v1::JobSpec;
use k8s_openapi::api::core::v1::{LocalObjectReference, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::core::Duration;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::admission;
use super::status::OctopusClusterStatus;

/// Longest duration string accepted (`maxLength`, which bounds the CEL rule's cost).
const DURATION_MAX: u32 = 32;

/// Desired state of an Octopus Deploy Server high-availability cluster.
// kube-derive repeats `printcolumn`, which clippy mistakes for duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "octopusoperator.dev",
    version = "v1alpha1",
    kind = "OctopusCluster",
    plural = "octopusclusters",
    shortname = "octc",
    category = "octopus",
    doc = "An Octopus Deploy Server high-availability cluster: its nodes, and the version the operator upgrades them to by Octopus's own rules.",
    namespaced,
    status = "OctopusClusterStatus",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(
        name = "Desired",
        type_ = "string",
        json_path = ".spec.version",
        description = "Octopus Server version the spec asks for"
    ),
    printcolumn(
        name = "Current",
        type_ = "string",
        json_path = ".status.currentVersion",
        description = "Octopus Server version every node runs"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.readyNodes",
        description = "Ready nodes / desired nodes"
    ),
    printcolumn(
        name = "Status",
        type_ = "string",
        json_path = ".status.phase",
        description = "Why the cluster is where it is: the reason of the blocking or progressing condition"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct OctopusClusterSpec {
    /// The exact Octopus Server version to run, e.g. `2024.1.12345`, `3.4.12`, or
    /// `2.6.5.1010` (before 3.0). Floating tags such as `latest` are rejected: the operator
    /// must know which database schema a version brings. Changing it starts an upgrade:
    /// patch changes roll one node at a time; minor and major changes follow Octopus's
    /// stop-the-world procedure (see `upgrade`).
    #[schemars(length(max = 32))]
    #[x_kube(validation = admission::version(), validation = admission::four_parts_only_before_three())]
    pub version: String,

    /// Number of Octopus Server nodes (pods). Each node is one member of the HA cluster.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 1, max = 16))]
    pub replicas: i32,

    /// Container image of Octopus Server. The tag is always derived from `version`.
    #[serde(default)]
    pub image: ImageSpec,

    /// The SQL Server database shared by every node.
    pub database: DatabaseSpec,

    /// Secret key holding the Master Key that encrypts sensitive data in the database.
    /// Without it, database backups are useless: the operator keeps a copy next to every
    /// backup it takes.
    pub master_key_secret_ref: SecretKeyRef,

    /// Secret key holding an Octopus API key (`API-...`) of an administrator. The operator
    /// uses it for the Octopus REST API (drain, maintenance mode, tasks); it is also passed
    /// to the container as ADMIN_API_KEY so a new installation bootstraps with it.
    pub api_key_secret_ref: SecretKeyRef,

    /// Secret key holding the base64 Octopus licence (OCTOPUS_SERVER_BASE64_LICENSE).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub license_secret_ref: Option<SecretKeyRef>,

    /// Maximum number of tasks each node runs at once (TASK_CAP). Octopus's default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub task_cap: Option<i32>,

    /// Compute resources of the Octopus Server container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Shared file storage every node mounts (ReadWriteMany for more than one node).
    #[serde(default)]
    pub storage: StorageSpec,

    /// How strictly the nodes spread over Kubernetes nodes (pod anti-affinity on
    /// `kubernetes.io/hostname`). `Preferred` (the default) schedules them together when it
    /// must; `Required` never puts two on one Kubernetes node, so losing a machine or
    /// draining it costs at most one Octopus node, but pods stay Pending when there are
    /// fewer schedulable Kubernetes nodes than replicas (on a one-node Kubernetes cluster,
    /// every node but the first). Takes effect as pods are recreated.
    #[serde(default)]
    pub pod_anti_affinity: PodAntiAffinity,

    /// How the operator reaches the Octopus REST API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api: Option<ApiSpec>,

    /// How and when version changes are carried out.
    #[serde(default)]
    pub upgrade: UpgradeSpec,

    /// Follow-up tasks after a successful server upgrade (Tentacle and Calamari updates).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tentacles: Option<TentacleSpec>,

    /// Stop reconciling at the next step boundary. Nothing is started, stopped, drained or
    /// undrained while paused; status still reports what the operator observes.
    #[serde(default)]
    pub paused: bool,
}

fn default_replicas() -> i32 {
    1
}

/// A key in a Secret of the cluster's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret, in the OctopusCluster's namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key within the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// The Octopus Server container image.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!self.repository.contains('@') && !self.repository.matches(':[^/]*$')").message("repository must not carry a tag or digest: the tag comes from spec.version").field_path(".repository"))]
pub struct ImageSpec {
    /// Image repository without tag, e.g. `octopusdeploy/octopusdeploy` or a mirror of it.
    #[serde(default = "default_repository")]
    #[schemars(length(min = 1, max = 512))]
    pub repository: String,
    /// Tag variant appended to the version, e.g. `hardened` gives `2024.1.12345-hardened`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    #[x_kube(validation = admission::variant())]
    pub variant: Option<String>,
    /// Image pull policy of the Octopus Server container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_policy: Option<PullPolicy>,
    /// Secrets for pulling the image from a private registry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pull_secrets: Vec<LocalObjectReference>,
}

impl Default for ImageSpec {
    fn default() -> Self {
        Self {
            repository: default_repository(),
            variant: None,
            pull_policy: None,
            pull_secrets: Vec::new(),
        }
    }
}

fn default_repository() -> String {
    "octopusdeploy/octopusdeploy".to_owned()
}

/// Kubernetes image pull policy.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

impl PullPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Always => "Always",
            Self::IfNotPresent => "IfNotPresent",
            Self::Never => "Never",
        }
    }
}

/// Pod anti-affinity of the nodes over Kubernetes nodes.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum PodAntiAffinity {
    /// Spread when the scheduler can; share a Kubernetes node otherwise.
    #[default]
    Preferred,
    /// Never two nodes on one Kubernetes node; pods stay Pending when none is free.
    Required,
}

/// The SQL Server database every node shares.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseSpec {
    /// Secret key holding the SQL Server connection string (DB_CONNECTION_STRING). Passed to
    /// the pods by reference; the operator never copies or logs it.
    pub connection_string_secret_ref: SecretKeyRef,
}

/// The shared volumes Octopus Server needs.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// Packages of the built-in repository (/repository).
    #[serde(default)]
    pub repository: VolumeSpec,
    /// Artifacts collected by deployments and runbooks (/artifacts).
    #[serde(default)]
    pub artifacts: VolumeSpec,
    /// Task logs (/taskLogs).
    #[serde(default)]
    pub task_logs: VolumeSpec,
    /// Archived audit events (/eventExports).
    #[serde(default)]
    pub event_exports: VolumeSpec,
}

/// One shared volume: an existing claim, or a claim the operator creates.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.existingClaim) || (!has(self.storageClassName) && !has(self.size))").message("existingClaim excludes storageClassName and size: those only shape a claim the operator creates"))]
pub struct VolumeSpec {
    /// Use this existing PersistentVolumeClaim instead of creating one. It is never deleted
    /// by the operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub existing_claim: Option<String>,
    /// Storage class of the claim the operator creates (cluster default when unset). Must
    /// support ReadWriteMany when `replicas` > 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
    /// Size of the claim the operator creates (default 10Gi).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<Quantity>,
}

/// How the operator reaches the Octopus REST API.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiSpec {
    /// Base URL of the Octopus Server (the part before `/api`). Default: the cluster's own
    /// Service, `http://<name>.<namespace>.svc:8080`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    #[x_kube(validation = admission::url())]
    pub url: Option<String>,
    /// Base URL of one node's own server (the part before `/api`), where the operator
    /// reads the node's version (`GET /api`) and readiness (`/api/octopusservernodes/ping`)
    /// past the load balancer. `{pod}` is replaced by the node's pod name, `{service}` by
    /// the headless Service (`<name>-nodes`), `{namespace}` and `{name}` by the cluster's.
    /// Default: the operator's `--node-url-template`,
    /// `http://{pod}.{service}.{namespace}.svc:8080`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    #[x_kube(validation = admission::node_url_template())]
    pub node_url_template: Option<String>,
    /// Secret key holding extra PEM CA certificates to trust for an https URL (the API URL
    /// and the nodes' own URLs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<SecretKeyRef>,
}

/// The upgrade policy.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpgradeSpec {
    /// Major version (e.g. `2025`) the operator may upgrade to. Major upgrades change the
    /// database schema and may break integrations, so they need this explicit approval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 2, max = 9999))]
    pub approved_major_version: Option<i64>,

    /// Schema-changing upgrades (minor and major versions) stop every node. `Manual` (the
    /// default) waits until `approvedVersion` names the target version; `Automatic` starts
    /// them by itself inside the maintenance window.
    #[serde(default)]
    pub schema_upgrades: SchemaUpgradePolicy,

    /// Approval of one schema-changing upgrade: set it to the target `spec.version` to let
    /// the operator take the cluster down and migrate the database now (ignores the
    /// maintenance window). Patch upgrades need no approval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = admission::version())]
    pub approved_version: Option<String>,

    /// When `Automatic` schema upgrades may start. Unset: any time. A started upgrade always
    /// runs to its end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance_window: Option<MaintenanceWindow>,

    /// How long to wait for a drained node's running tasks (or, before a schema upgrade, for
    /// every running task) before `onDrainTimeout` applies.
    #[serde(default = "default_drain_timeout")]
    #[schemars(length(max = DURATION_MAX))]
    #[x_kube(validation = admission::duration())]
    pub drain_timeout: Duration,

    /// What happens when `drainTimeout` passes: `Wait` keeps waiting and says so in status;
    /// `CancelTasks` cancels the tasks still running.
    #[serde(default)]
    pub on_drain_timeout: DrainTimeoutPolicy,

    /// How long a replaced or started node may take to become ready (and, for the first node
    /// of a schema upgrade, to migrate the database) before the operator stops and reports
    /// it as Degraded.
    #[serde(default = "default_node_ready_timeout")]
    #[schemars(length(max = DURATION_MAX))]
    #[x_kube(validation = admission::duration())]
    pub node_ready_timeout: Duration,

    /// Database backup taken before every schema-changing upgrade.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupSpec>,

    /// The way back after a failed schema migration: the name of the backup you restored
    /// the database and Master Key from (the failed attempt's backup Job, which the
    /// UpgradeBlocked condition and `status.lastBackup.jobName` name). Until it names that
    /// attempt's backup, setting `spec.version` back starts no node of the old version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    #[x_kube(validation = admission::backup_name())]
    pub restored_backup: Option<String>,
}

impl UpgradeSpec {
    /// The person acknowledged schema upgrades without a backup (`backup.skip: true`).
    pub fn backup_skipped(&self) -> bool {
        self.backup.as_ref().and_then(|b| b.skip).unwrap_or(false)
    }
}

impl Default for UpgradeSpec {
    fn default() -> Self {
        Self {
            approved_major_version: None,
            schema_upgrades: SchemaUpgradePolicy::default(),
            approved_version: None,
            maintenance_window: None,
            drain_timeout: default_drain_timeout(),
            on_drain_timeout: DrainTimeoutPolicy::default(),
            node_ready_timeout: default_node_ready_timeout(),
            backup: None,
            restored_backup: None,
        }
    }
}

fn default_drain_timeout() -> Duration {
    Duration::from(std::time::Duration::from_secs(30 * 60))
}

fn default_node_ready_timeout() -> Duration {
    Duration::from(std::time::Duration::from_secs(15 * 60))
}

/// Who starts a schema-changing upgrade.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum SchemaUpgradePolicy {
    /// Wait until `upgrade.approvedVersion` equals `spec.version`.
    #[default]
    Manual,
    /// Start inside the maintenance window (any time when none is set).
    Automatic,
}

/// What to do when running tasks outlast `drainTimeout`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum DrainTimeoutPolicy {
    /// Keep waiting; status says which tasks hold the upgrade.
    #[default]
    Wait,
    /// Cancel the tasks still running, then go on.
    CancelTasks,
}

/// A weekly window in which automatic schema upgrades may start.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct MaintenanceWindow {
    /// Days on which the window opens. Empty: every day.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 7))]
    pub days: Vec<Weekday>,
    /// Local time at which the window opens, `HH:MM` (24-hour clock).
    #[schemars(length(max = 16))]
    #[x_kube(validation = admission::clock())]
    pub start: String,
    /// How long the window stays open, e.g. `4h`.
    #[schemars(length(max = DURATION_MAX))]
    #[x_kube(validation = admission::duration())]
    pub duration: Duration,
    /// IANA time zone of `start`, e.g. `Europe/Berlin`. Default `UTC`.
    #[serde(default = "default_time_zone")]
    #[schemars(length(max = 64))]
    #[x_kube(validation = admission::time_zone())]
    pub time_zone: String,
}

fn default_time_zone() -> String {
    "UTC".to_owned()
}

/// Day of the week.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Weekday {
    Monday,
    Tuesday,
    Wednesday,
    Thursday,
    Friday,
    Saturday,
    Sunday,
}

/// The database backup taken before a schema-changing upgrade.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.jobTemplate) != (has(self.skip) && self.skip)").message("set exactly one of jobTemplate (the backup to run) or skip: true (an explicit acknowledgement that no backup is taken)"))]
pub struct BackupSpec {
    /// Job the operator runs (and waits for) after maintenance mode is on and tasks have
    /// finished, before any node stops. Its pods get DB_CONNECTION_STRING (by reference),
    /// OCTOPUS_FROM_VERSION, OCTOPUS_TO_VERSION and BACKUP_NAME in their environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_template: Option<JobSpec>,
    /// Acknowledge that schema upgrades run without a backup. A failed migration then
    /// cannot be rolled back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip: Option<bool>,
}

/// Tentacle and Calamari updates after a server upgrade.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!(self.upgradeTentacles || self.updateCalamari) || size(self.environmentIds) > 0").message("name at least one environment when upgradeTentacles or updateCalamari is on"))]
pub struct TentacleSpec {
    /// Queue an Octopus `Upgrade` task for the Tentacles of each environment after the
    /// server runs the new version.
    #[serde(default)]
    pub upgrade_tentacles: bool,
    /// Queue an `UpdateCalamari` task for each environment after the server upgrade.
    #[serde(default)]
    pub update_calamari: bool,
    /// Octopus environment ids (e.g. `Environments-1`, in Octopus's default space) whose
    /// machines are updated.
    #[serde(default)]
    #[schemars(length(max = 100))]
    pub environment_ids: Vec<String>,
}
