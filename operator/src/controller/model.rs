//! What one reconcile observed, as plain data, and what it decided. The decision core
//! (`decide`, `safety`, `window`; steps and reasons typed in `steps` and `reason`) reads
//! only these types; the I/O layers (`observe`, `act`, `record`) fill and carry them out.
//! Nothing here talks to Kubernetes or Octopus.

use jiff::Timestamp;

use super::reason::Reason;
use super::slots::UpgradeSlots;
use crate::api::{BackupStatus, OctopusClusterSpec, OctopusClusterStatus, UpgradeStatus};

/// Everything a decision may depend on, read fresh at the start of a reconcile.
#[derive(Clone, Debug)]
pub struct Observed {
    /// Cluster name (= StatefulSet name; pods are `<name>-<ordinal>`).
    pub name: String,
    /// The cluster object's UID: part of an upgrade attempt's identity, so a cluster
    /// recreated under the same name never takes an old attempt's Master Key copy.
    pub uid: String,
    pub generation: i64,
    pub spec: OctopusClusterSpec,
    /// Status as the operator last wrote it: where an upgrade stands.
    pub status: OctopusClusterStatus,
    /// Secret references that do not resolve, e.g. `Secret octopus-db has no key "x"`.
    pub missing_secrets: Vec<String>,
    pub statefulset: Option<StatefulSetView>,
    /// Pods of the StatefulSet, by ordinal.
    pub pods: Vec<PodView>,
    pub octopus: OctopusView,
    /// The backup Job of the upgrade in progress, when one exists.
    pub backup_job: Option<JobView>,
    /// Every backup Job of the cluster: one per attempt, until pruned.
    pub backup_history: Vec<JobView>,
    /// Whether the Master Key copy of the upgrade in progress exists.
    pub master_key_copy: bool,
    /// What the cluster's PodDisruptionBudget allows, read before the pods (so no eviction
    /// it let through is missing from them); `None` when there is none yet.
    pub evictions: Option<Evictions>,
    /// How many clusters may begin an upgrade, and how many other clusters hold a slot
    /// (`--max-concurrent-upgrades`); filled by the reconciler's ledger.
    pub upgrade_slots: UpgradeSlots,
    pub now: Timestamp,
}

impl Observed {
    /// The nodes the cluster runs: while an upgrade runs the StatefulSet keeps the replicas
    /// it started with, so a scale asked for mid-upgrade changes nothing yet.
    pub fn running_replicas(&self) -> u32 {
        self.status
            .upgrade
            .as_ref()
            .filter(|u| u.finished_at.is_none())
            .and_then(|u| u.replicas)
            .unwrap_or(self.spec.replicas)
            .max(0)
            .unsigned_abs()
    }
}

/// How many Octopus pods a voluntary eviction (`kubectl drain`, the cluster autoscaler) may
/// take at once: the `maxUnavailable` of the cluster's PodDisruptionBudget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Evictions {
    /// One: the steady cluster can lose one node (with one replica, the only one: a
    /// single node is not highly available, and blocking would hold node drains forever).
    One,
    /// None: the operator has a node out of service, stops every node on purpose, or a
    /// node is drained in Octopus.
    None,
}

impl Evictions {
    /// The PodDisruptionBudget's `maxUnavailable`.
    pub fn max_unavailable(self) -> i32 {
        match self {
            Self::One => 1,
            Self::None => 0,
        }
    }

    /// What a budget read back allows: anything but 0 lets an eviction through.
    pub fn from_max_unavailable(n: Option<i32>) -> Self {
        if n == Some(0) { Self::None } else { Self::One }
    }
}

/// The StatefulSet as observed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatefulSetView {
    /// Octopus version of the pod template's image.
    pub version: Option<String>,
    pub replicas: i32,
}

/// One Octopus Server pod.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodView {
    pub name: String,
    pub ordinal: u32,
    /// Octopus version of the pod's image.
    pub version: Option<String>,
    pub ready: bool,
    pub restarts: i32,
    /// The container waits in CrashLoopBackOff.
    pub crash_looping: bool,
    /// The pod has a deletionTimestamp.
    pub terminating: bool,
    /// How the Octopus container last ended (`lastState.terminated`), e.g. the message of
    /// a database upgrade Octopus aborted because other nodes still look alive.
    pub last_exit: Option<ContainerExit>,
    /// Why the Octopus container waits (`state.waiting`), when it does.
    pub waiting: Option<ContainerWaiting>,
    /// The pod's creationTimestamp: with OrderedReady each node's own start.
    pub created_at: Option<Timestamp>,
    /// When the Octopus container last started running (`state.running.startedAt`).
    pub started_at: Option<Timestamp>,
    /// Since when the pod is Ready (its Ready condition's lastTransitionTime), when it is.
    pub ready_since: Option<Timestamp>,
}

impl PodView {
    /// No server process runs in the pod: its container waits to restart after a crash,
    /// or cannot start at all. It serves nothing and runs no task.
    pub fn is_down(&self) -> bool {
        !self.ready
            && !self.terminating
            && (self.crash_looping || self.waiting.as_ref().is_some_and(|w| w.failure.is_some()))
    }

    /// When this node's current attempt to start began: the pod's creation or its
    /// container's last start, whichever is later. A node's readiness timer runs from here
    /// (never from before `floor`, the step's own start).
    pub fn start_clock(&self, floor: Timestamp) -> Timestamp {
        [self.created_at, self.started_at]
            .into_iter()
            .flatten()
            .fold(floor, Timestamp::max)
    }
}

/// Why a container waits, as the kubelet reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerWaiting {
    /// The kubelet's word (`ErrImagePull`, `CreateContainerConfigError`), not one of the
    /// operator's reasons.
    pub kubelet_reason: String,
    pub message: Option<String>,
    /// What the kubelet's word means for a start; set by `observe`, the layer that knows
    /// the kubelet's vocabulary.
    pub failure: Option<StartFailure>,
}

/// A start that cannot succeed without a change: the container never ran, so the node
/// never touched the database.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartFailure {
    /// The image cannot be pulled (ErrImagePull, ImagePullBackOff, InvalidImageName).
    ImagePull,
    /// The container cannot be created from the pod's spec (CreateContainerConfigError,
    /// CreateContainerError).
    ContainerConfig,
}

/// What observe reads about one node beyond its pod view and the cluster summary. Kept
/// beside [`Observed`] (one per pod, by ordinal) until the decision core takes it in.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeFacts {
    /// The pod, which is also the Octopus node name.
    pub pod: String,
    /// The node's own `/api/octopusservernodes/ping` at its own address: `Some(true)` on
    /// 200 (serving), `Some(false)` on 418 (draining or offline); `None` when not asked
    /// (pod not ready) or not answered.
    pub serving: Option<bool>,
}

/// A container's last termination, as the kubelet reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerExit {
    /// The kubelet's word for it (`Error`, `OOMKilled`), not one of the operator's reasons.
    pub kubelet_reason: Option<String>,
    /// The termination message (with `FallbackToLogsOnError`, the tail of the log).
    pub message: Option<String>,
    pub exit_code: i32,
    pub finished_at: Option<Timestamp>,
}

impl ContainerExit {
    /// Octopus (since 2023.2.9755) refused the database upgrade because other nodes still
    /// look alive to it. Octopus does not publish the exact words, so this matches loosely:
    /// the message speaks of other nodes and of them running or of an abort.
    pub fn aborted_beside_live_nodes(&self) -> bool {
        let Some(message) = &self.message else {
            return false;
        };
        let m = message.to_lowercase();
        m.contains("other") && m.contains("node") && (m.contains("running") || m.contains("abort"))
    }
}

/// What the Octopus REST API told this reconcile.
#[derive(Clone, Debug)]
pub enum OctopusView {
    /// Not asked: no node can answer (no ready pod).
    NoReadyNode,
    /// Asked, and it failed.
    Unavailable {
        reason: Reason,
        message: String,
    },
    Up(OctopusState),
}

impl OctopusView {
    pub fn state(&self) -> Option<&OctopusState> {
        match self {
            Self::Up(state) => Some(state),
            _ => None,
        }
    }
}

/// Cluster-wide state as Octopus reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OctopusState {
    pub nodes: Vec<OctopusNode>,
    /// Server-wide maintenance mode.
    pub maintenance: bool,
    /// Tasks executing or cancelling, on any node.
    pub running_tasks: Vec<TaskView>,
}

impl OctopusState {
    pub fn node(&self, name: &str) -> Option<&OctopusNode> {
        self.nodes.iter().find(|n| n.name == name)
    }

    pub fn tasks_on<'a>(&'a self, node: &'a str) -> impl Iterator<Item = &'a TaskView> + 'a {
        self.running_tasks
            .iter()
            .filter(move |t| t.node.as_deref() == Some(node))
    }
}

/// A node in Octopus's cluster summary.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OctopusNode {
    pub id: String,
    pub name: String,
    /// Octopus's `IsInMaintenanceMode` on the node: drained.
    pub drained: bool,
    /// Octopus's `IsOffline`: a clean shutdown, or no heartbeat for a while. A node that
    /// was killed stays `false` until its heartbeat ages out.
    pub offline: bool,
    pub running_tasks: u32,
    /// The version the node itself answers on its own address (`GET /api`); `None` when
    /// its pod is not ready or did not answer. The summary has no version.
    pub version: Option<String>,
}

/// A running task.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskView {
    pub id: String,
    pub name: String,
    pub node: Option<String>,
    /// Already being cancelled.
    pub cancelling: bool,
}

/// A backup Job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobView {
    pub name: String,
    pub succeeded: bool,
    pub failed: bool,
    pub completed_at: Option<Timestamp>,
    pub created_at: Option<Timestamp>,
}

/// The StatefulSet the operator wants: which version its pod template runs and how many
/// pods. Applied (server-side, idempotent) on every reconcile that decides it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatefulSetWant {
    pub version: String,
    pub replicas: i32,
}

/// One idempotent action. At most one per reconcile; the next reconcile observes its effect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    SetMaintenance(bool),
    SetDrain {
        node_id: String,
        node: String,
        drained: bool,
    },
    CancelTasks(Vec<String>),
    DeletePod(String),
    CopyMasterKey {
        from: String,
        to: String,
        /// The upgrade attempt the backup belongs to.
        attempt: Option<String>,
    },
    CreateBackupJob {
        from: String,
        to: String,
        attempt: Option<String>,
    },
    QueueTentacleTasks {
        to: String,
    },
    /// Delete the Octopus record of a node removed for good (`DELETE
    /// /api/octopusservernodes/{id}`), so no offline node lingers in Octopus.
    DeleteNodeRecord {
        node_id: String,
        node: String,
    },
    /// Delete a finished backup Job of an earlier attempt (the history is bounded).
    DeleteBackupJob(String),
}

impl Action {
    /// The Event reason of the action.
    pub fn reason(&self) -> Reason {
        match self {
            Self::SetMaintenance(true) => Reason::MaintenanceOn,
            Self::SetMaintenance(false) => Reason::MaintenanceOff,
            Self::SetDrain { drained: true, .. } => Reason::Drain,
            Self::SetDrain { drained: false, .. } => Reason::Undrain,
            Self::CancelTasks(_) => Reason::CancelTasks,
            Self::DeletePod(_) => Reason::ReplacePod,
            Self::CopyMasterKey { .. } => Reason::CopyMasterKey,
            Self::CreateBackupJob { .. } => Reason::StartBackup,
            Self::QueueTentacleTasks { .. } => Reason::QueueTentacleTasks,
            Self::DeleteNodeRecord { .. } => Reason::DeleteNodeRecord,
            Self::DeleteBackupJob(_) => Reason::PruneBackupJob,
        }
    }

    /// Short verb for logs and metrics: the Event reason.
    pub fn name(&self) -> &'static str {
        self.reason().as_str()
    }

    /// What it does, in words for an Event.
    pub fn describe(&self) -> String {
        match self {
            Self::SetMaintenance(true) => "Turning Octopus maintenance mode on".into(),
            Self::SetMaintenance(false) => "Turning Octopus maintenance mode off".into(),
            Self::SetDrain {
                node,
                drained: true,
                ..
            } => format!("Draining node {node}: it picks up no new tasks"),
            Self::SetDrain {
                node,
                drained: false,
                ..
            } => format!("Undraining node {node}: it picks up tasks again"),
            Self::CancelTasks(ids) => format!("Cancelling tasks {}", ids.join(", ")),
            Self::DeletePod(pod) => format!("Replacing pod {pod} with one on the new version"),
            Self::CopyMasterKey { from, .. } => {
                format!("Keeping a copy of the Master Key for the backup of {from}")
            }
            Self::CreateBackupJob { from, to, attempt } => match attempt {
                Some(a) => format!(
                    "Starting the database backup before upgrading {from} -> {to} (attempt {a})"
                ),
                None => format!("Starting the database backup before upgrading {from} -> {to}"),
            },
            Self::QueueTentacleTasks { to } => {
                format!("Queueing Tentacle/Calamari updates after the upgrade to {to}")
            }
            Self::DeleteNodeRecord { node, .. } => {
                format!("Deleting the Octopus record of node {node}, removed by the scale-down")
            }
            Self::DeleteBackupJob(name) => format!(
                "Deleting backup Job {name} of an earlier upgrade attempt: the newest {} are \
                 kept",
                super::decide::KEPT_BACKUP_JOBS
            ),
        }
    }
}

/// When to look again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Requeue {
    /// Right after an action, to observe its effect.
    Soon,
    /// Waiting on Octopus (tasks, versions), which sends no watch events: poll.
    Poll,
    /// Steady or stopped: watch events wake the controller; a slow resync guards drift.
    Idle,
}

/// A condition as decided (the merge with the previous status fills the times).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CondWant {
    pub type_: &'static str,
    pub status: bool,
    pub reason: Reason,
    pub message: String,
}

/// Everything one reconcile decided.
#[derive(Clone, Debug)]
pub struct Decision {
    pub statefulset: Option<StatefulSetWant>,
    /// The PodDisruptionBudget to apply (before the StatefulSet and the action); `None`
    /// before the cluster has anything to protect.
    pub evictions: Option<Evictions>,
    pub action: Option<Action>,
    pub requeue: Requeue,
    pub conditions: Vec<CondWant>,
    pub upgrade: Option<UpgradeStatus>,
    pub schema_version: Option<String>,
    pub current_version: Option<String>,
    pub target_version: Option<String>,
    pub last_backup: Option<BackupStatus>,
    /// A Warning-worthy stop, said once per change (Event).
    pub stop: Option<(Reason, String)>,
}
