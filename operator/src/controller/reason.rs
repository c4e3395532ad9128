//! Every reason the operator reports: condition reasons, the `phase`, Event reasons and the
//! stop recorded in `status.upgrade.stoppedReason`. One enum, one place to answer "why did
//! it stop?": whether a reason stops the upgrade, marks the cluster degraded or holds
//! until the spec changes is a property of the reason, not of the code that reports it.
//!
//! The serialised name is the variant's name (`NodeFailedAfterMigration`). Never rename a
//! variant: scripts, alerts and `kubectl wait` match on these names, and status written by
//! an earlier operator stores them. The README's reasons table lists every variant (a test
//! keeps it in sync); another test fails when a reason is spelled as a string elsewhere in
//! the controller.

use strum::{EnumIter, EnumString, IntoStaticStr};

use crate::octopus::OctopusError;
use crate::planner::BlockReason;

/// A reason the operator reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, EnumIter, EnumString, IntoStaticStr)]
pub enum Reason {
    // ---------------------------------------------------------- steady and progress
    /// Every desired node is ready on spec.version.
    Ready,
    /// The StatefulSet is being created (day one).
    Creating,
    /// Not every desired node is ready on spec.version.
    NodesNotReady,
    /// An upgrade is under way.
    Upgrading,
    /// Progressing is false: nothing to do.
    Idle,
    /// Degraded is false: no fault observed.
    AsExpected,
    /// UpgradeBlocked is false: nothing holds the cluster from its spec.
    NotBlocked,
    /// Paused is false.
    NotPaused,
    /// spec.paused is true: the operator takes no step.
    Paused,

    // ---------------------------------------------------------- waits of a step
    /// A node is not ready on the new version yet, or not registered with Octopus yet.
    WaitingForNode,
    /// The StatefulSet has not recreated a replaced pod yet.
    WaitingForPod,
    /// Tasks still run on the node (or the cluster) being drained.
    WaitingForTasks,
    /// Tasks still run after drainTimeout and onDrainTimeout is Wait.
    DrainTimeoutExceeded,
    /// Octopus does not report the new version on a node yet.
    VerifyingVersion,
    /// Every node is stopping for a schema upgrade.
    StoppingNodes,
    /// The first node is starting alone on the new version.
    StartingFirstNode,
    /// The first node is ready; Octopus does not report the new version yet.
    WaitingForSchemaUpgrade,
    /// The first node's database upgrade was refused because a node stopped without a
    /// clean shutdown still looks alive to Octopus; it runs once that heartbeat ages out.
    WaitingForStaleNodes,
    /// The other nodes are starting on the new version.
    StartingNodes,
    /// The backup Job runs.
    BackingUp,
    /// No Octopus node is ready to answer the API; the operator waits rather than act blind.
    OctopusUnavailable,

    // ---------------------------------------------------------- holds by a safety predicate
    /// Held by `OctopusReachable`: Octopus gave no answer.
    WaitingForOctopusReachable,
    /// Held by `OtherNodesServing`: another node is out of service.
    WaitingForOtherNodesServing,
    /// Held by `NodeDrainedAndIdle`: the node is not drained or still runs tasks.
    WaitingForNodeDrainedAndIdle,
    /// Held by `TasksFinished`: maintenance mode is off or tasks still run.
    WaitingForTasksFinished,
    /// Held by `BackupTaken`: no backup is recorded for this upgrade.
    WaitingForBackupTaken,
    /// Held by `NoOtherSchemaRunning`: a node of another schema line runs.
    WaitingForNoOtherSchemaRunning,
    /// Held by `NotBelowSchema`: the version is older than the database schema.
    WaitingForNotBelowSchema,

    // ---------------------------------------------------------- stops
    /// spec.version (or a recorded version) is not an exact Octopus version.
    InvalidVersion,
    /// Octopus cannot move there directly; the message lists the versions to go through.
    UnsupportedUpgradePath,
    /// Octopus documents this exact move as failing.
    KnownBadUpgradePath,
    /// Going back to an older minor or major needs the database restored.
    DowngradeRequiresRestore,
    /// A major upgrade whose major is not in spec.upgrade.approvedMajorVersion.
    MajorUpgradeNotApproved,
    /// A referenced Secret or Secret key does not exist.
    SecretNotFound,
    /// The spec cannot be carried out as written (e.g. the maintenance window's time zone).
    InvalidSpec,
    /// A schema-changing upgrade waits for spec.upgrade.approvedVersion.
    SchemaUpgradeNotApproved,
    /// A schema-changing upgrade waits for the maintenance window.
    OutsideMaintenanceWindow,
    /// A schema-changing upgrade needs a backup Job template, or an explicit skip.
    BackupNotConfigured,
    /// The backup Job failed; nothing was stopped.
    BackupFailed,
    /// Nodes run versions of different database schemas.
    MixedSchemaVersions,
    /// The first node on the new version failed while the schema was upgrading.
    NodeFailedAfterMigration,
    /// A node crash-loops on the new version.
    NodeFailedToStart,
    /// A node did not become ready within nodeReadyTimeout.
    NodeNotReady,
    /// Octopus reports a node on another version than its pod after nodeReadyTimeout.
    NodeVersionMismatch,
    /// A node's image cannot be pulled (ErrImagePull, ImagePullBackOff, InvalidImageName):
    /// its container never ran. Clears once the kubelet starts it.
    NodeImagePullFailed,
    /// A node's container cannot be created (CreateContainerConfigError,
    /// CreateContainerError): it never ran. Clears once the kubelet starts it.
    NodeContainerConfigFailed,
    /// Starting pods on the wanted version would break a safety predicate.
    UnsafeToStart,
    /// status.upgrade names a step, step state, strategy or stop this operator does not know.
    UnknownStep,

    // ---------------------------------------------------------- the way back from a failed migration
    /// spec.version is back below a failed migration; no node runs until
    /// spec.upgrade.restoredBackup names the failed attempt's backup.
    RestoreNotAcknowledged,
    /// Event: deleting a finished backup Job of an earlier attempt beyond the kept history.
    PruneBackupJob,

    // ---------------------------------------------------------- Octopus API failures
    /// The Octopus endpoint is unusable (URL, CA bundle, API key format).
    OctopusEndpointInvalid,
    /// Octopus refused the API key (401/403).
    OctopusUnauthorized,
    /// An Octopus route or resource does not exist (404).
    OctopusNotFound,
    /// Octopus rejected a request (another 4xx).
    OctopusRejected,
    /// Octopus failed (5xx).
    OctopusServerError,
    /// Octopus gave no answer in time.
    OctopusTimeout,
    /// Octopus could not be reached (connection, DNS, TLS).
    OctopusUnreachable,
    /// Octopus answered with something that is not the JSON the route promises.
    OctopusBadResponse,

    // ---------------------------------------------------------- Events
    /// Event: an upgrade began.
    UpgradeStarted,
    /// Event: an upgrade moved to its next step.
    UpgradeStep,
    /// Event: an upgrade finished.
    UpgradeSucceeded,
    /// Event: maintenance mode and drained nodes were released before deletion.
    Released,
    /// Event: no node runs to release maintenance mode and drained nodes before deletion.
    ReleaseImpossible,
    /// Event: releasing Octopus before deletion kept failing; the deletion went on.
    ReleaseAbandoned,
    /// Event: turning Octopus maintenance mode on.
    MaintenanceOn,
    /// Event: turning Octopus maintenance mode off.
    MaintenanceOff,
    /// Event: draining a node.
    Drain,
    /// Event: undraining a node.
    Undrain,
    /// Event: cancelling tasks after drainTimeout.
    CancelTasks,
    /// Event: replacing a pod with one on the new version.
    ReplacePod,
    /// Event: copying the Master Key for the backup.
    CopyMasterKey,
    /// Event: starting the backup Job.
    StartBackup,
    /// Event: queueing Tentacle and Calamari updates.
    QueueTentacleTasks,

    // ---------------------------------------------------------- evictions and scale-down
    /// Held by `EvictionsBlocked`: the PodDisruptionBudget still lets an eviction through.
    WaitingForEvictionsBlocked,
    /// Nodes above spec.replicas are being drained, stopped and forgotten by Octopus.
    ScalingDown,
    /// The StatefulSet is stopping the drained nodes above spec.replicas.
    RemovingNodes,
    /// Event: deleting the Octopus record of a node the scale-down removed.
    DeleteNodeRecord,

    // ---------------------------------------------------------- blast radius
    /// The cluster wants an upgrade, but as many clusters as --max-concurrent-upgrades
    /// allows are upgrading: it begins when one of them finishes.
    WaitingForUpgradeSlot,
}

impl Reason {
    /// The stable name, e.g. `NodeFailedAfterMigration`.
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// A stop with this reason holds until a person changes the spec, even if the world
    /// looks fine a moment later: a failed node leaves the database in an unknown state.
    pub fn sticky(self) -> bool {
        matches!(
            self,
            Self::NodeFailedAfterMigration
                | Self::NodeFailedToStart
                | Self::NodeNotReady
                | Self::NodeVersionMismatch
        )
    }

    /// Reported with Degraded=True: something is wrong, not just waiting for a person.
    pub fn degraded(self) -> bool {
        self.sticky()
            || self.is_octopus_failure()
            || matches!(
                self,
                Self::SecretNotFound
                    | Self::BackupFailed
                    | Self::MixedSchemaVersions
                    | Self::UnsafeToStart
                    | Self::UnknownStep
                    | Self::NodeImagePullFailed
                    | Self::NodeContainerConfigFailed
                    | Self::RestoreNotAcknowledged
            )
    }

    /// A stop: reported with UpgradeBlocked=True, and the operator takes no step until it
    /// clears.
    pub fn blocks(self) -> bool {
        self.sticky()
            || matches!(
                self,
                Self::InvalidVersion
                    | Self::UnsupportedUpgradePath
                    | Self::KnownBadUpgradePath
                    | Self::DowngradeRequiresRestore
                    | Self::MajorUpgradeNotApproved
                    | Self::SecretNotFound
                    | Self::InvalidSpec
                    | Self::SchemaUpgradeNotApproved
                    | Self::OutsideMaintenanceWindow
                    | Self::BackupNotConfigured
                    | Self::BackupFailed
                    | Self::MixedSchemaVersions
                    | Self::UnsafeToStart
                    | Self::UnknownStep
                    | Self::NodeImagePullFailed
                    | Self::NodeContainerConfigFailed
                    | Self::RestoreNotAcknowledged
            )
    }

    fn is_octopus_failure(self) -> bool {
        matches!(
            self,
            Self::OctopusEndpointInvalid
                | Self::OctopusUnauthorized
                | Self::OctopusNotFound
                | Self::OctopusRejected
                | Self::OctopusServerError
                | Self::OctopusTimeout
                | Self::OctopusUnreachable
                | Self::OctopusBadResponse
        )
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<BlockReason> for Reason {
    fn from(reason: BlockReason) -> Self {
        match reason {
            BlockReason::InvalidVersion => Self::InvalidVersion,
            BlockReason::UnsupportedUpgradePath => Self::UnsupportedUpgradePath,
            BlockReason::KnownBadUpgradePath => Self::KnownBadUpgradePath,
            BlockReason::DowngradeRequiresRestore => Self::DowngradeRequiresRestore,
            BlockReason::MajorUpgradeNotApproved => Self::MajorUpgradeNotApproved,
        }
    }
}

impl From<&OctopusError> for Reason {
    fn from(error: &OctopusError) -> Self {
        match error {
            OctopusError::InvalidEndpoint { .. } => Self::OctopusEndpointInvalid,
            OctopusError::Unauthorized { .. } => Self::OctopusUnauthorized,
            OctopusError::NotFound { .. } => Self::OctopusNotFound,
            OctopusError::Rejected { .. } => Self::OctopusRejected,
            OctopusError::Server { .. } => Self::OctopusServerError,
            OctopusError::Timeout { .. } => Self::OctopusTimeout,
            OctopusError::Unreachable { .. } => Self::OctopusUnreachable,
            OctopusError::BadResponse { .. } => Self::OctopusBadResponse,
        }
    }
}

#[cfg(test)]
mod tests;
