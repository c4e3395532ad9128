//! `OctopusCluster.status`: what the operator observed and where an upgrade stands. Written
//! only by the operator, with server-side apply. The deployed version and the target
//! version are kept apart so an interrupted upgrade knows where it is.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Observed state of an Octopus cluster.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OctopusClusterStatus {
    /// The spec generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Version every node runs, when they all run the same one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_version: Option<String>,

    /// Version the operator is moving the cluster to (spec.version once accepted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_version: Option<String>,

    /// Highest version that has run against the database: the database schema is at this
    /// version's MAJOR.MINOR. Older versions of another MAJOR.MINOR must never start again
    /// without a database restore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_version: Option<String>,

    /// Number of pods (for the scale subresource).
    #[serde(default)]
    pub replicas: i32,

    /// Label selector of the pods (for the scale subresource).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,

    /// Ready nodes / desired nodes, e.g. `3/3`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_nodes: Option<String>,

    /// One word for `kubectl get`: the reason of the condition that matters most now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,

    /// Ready, Progressing, Degraded, UpgradeBlocked, Paused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,

    /// Every Octopus Server node, as its pod and Octopus report it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<NodeStatus>,

    /// The upgrade in progress, or the last one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade: Option<UpgradeStatus>,

    /// The last backup taken before a schema-changing upgrade.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_backup: Option<BackupStatus>,
}

/// One Octopus Server node.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    /// Node name (= pod name, OCTOPUS_SERVER_NODE_NAME).
    pub name: String,
    /// Version of the node's image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Whether the pod is Ready.
    #[serde(default)]
    pub ready: bool,
    /// Whether Octopus has the node drained (its IsInMaintenanceMode): it takes no new tasks.
    #[serde(default)]
    pub drained: bool,
    /// Tasks the node is running, as Octopus reports.
    #[serde(default)]
    pub running_tasks: i32,
    /// Whether Octopus reports the node offline.
    #[serde(default)]
    pub offline: bool,
    /// Restarts of the Octopus Server container.
    #[serde(default)]
    pub restarts: i32,
}

/// Where an upgrade stands.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpgradeStatus {
    /// Version the cluster ran when the upgrade began.
    pub from: String,
    /// Version the upgrade moves to.
    pub to: String,
    /// none, patch, minor, major, patch-downgrade, minor-downgrade, major-downgrade.
    pub change: String,
    /// `rolling` (one node at a time) or `stop-the-world` (schema change).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<String>,
    /// Identifies this attempt (8 hex digits: the cluster's UID, the spec generation that
    /// began it and its versions). Its backup Job and Master Key copy are named after it,
    /// so a retried upgrade never takes an earlier attempt's backup for its own. Absent in
    /// records of operators before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<String>,
    /// The step being carried out, e.g. `drain` or `wait-schema` (see `steps[].action`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// The node the step acts on, for per-node steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// When the upgrade began.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// When the current step began (timeouts count from here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_started_at: Option<Time>,
    /// When the upgrade ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,
    /// Nodes the upgrade runs with; a change of spec.replicas waits until it ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Why the upgrade stopped and waits for a person, when it did (a condition reason).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_reason: Option<String>,
    /// The spec generation the stop applies to: a spec change lets the operator look again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_generation: Option<i64>,
    /// The safety predicate that holds the current step back, when one does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_by: Option<HeldBy>,
    /// The planned steps and their state.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<StepStatus>,
}

/// A safety predicate that holds a step back, and what it waits for.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HeldBy {
    /// The predicate, e.g. `OtherNodesServing`; the condition reason is `WaitingFor` + it.
    pub predicate: String,
    /// What it waits for, e.g. `node octo-1 is not ready; octo-2 must wait`.
    pub message: String,
}

/// One planned step. The names are stable (status written by any earlier operator keeps
/// decoding); the operator reads them once into its typed steps (`controller::steps`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StepStatus {
    /// What the step does: `maintenance-on`, `drain`, `wait-tasks`, `replace`,
    /// `wait-ready`, `verify-version`, `undrain`, `backup`, `stop-all`, `start-first`,
    /// `wait-schema`, `start-rest`, `verify`, `maintenance-off` or `tentacles`.
    pub action: String,
    /// Node the step acts on, for per-node steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// `Pending`, `Running` or `Done`.
    pub state: String,
}

/// A backup taken before a schema-changing upgrade.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupStatus {
    /// The backup Job.
    pub job_name: String,
    /// Version (and so schema) the database had when it was backed up.
    pub from_version: String,
    /// Version the upgrade moved to.
    pub to_version: String,
    /// The upgrade attempt that took it (`status.upgrade.attempt`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<String>,
    /// Secret holding the copy of the Master Key that belongs to this backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master_key_secret: Option<String>,
    /// When the backup Job succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Time>,
}

impl BackupStatus {
    /// Whether this is the backup of the attempt `attempt` at `from` -> `to`: an earlier
    /// attempt's backup of the same versions is not (the database may have changed since).
    pub fn is_of(&self, from: &str, to: &str, attempt: Option<&str>) -> bool {
        self.from_version == from && self.to_version == to && self.attempt.as_deref() == attempt
    }
}
