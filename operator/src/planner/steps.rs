//! The steps of an upgrade, as data, in the order the operator carries them out.
//!
//! Two strategies, chosen by the kind of change (never configured):
//! - `rolling` (patch moves): one node at a time, drain -> wait-tasks -> replace ->
//!   wait-ready -> verify-version -> undrain; at most one node is ever out of service.
//! - `stop-the-world` (schema changes): Octopus's HA procedure. Maintenance mode on, drain
//!   every node, wait for tasks, back up database + Master Key, stop every node, start one
//!   node on the new version and wait for its schema upgrade, undrain it and turn
//!   maintenance mode off (users are served again), then start the rest, verify, undrain
//!   them. No node of the new version starts while an old one runs: since 2023.2.9755
//!   Octopus aborts such a schema upgrade, and older versions can corrupt data. No old
//!   node starts once the first new one has: the schema is migrated.
//!
//! Nodes are StatefulSet ordinals `0..nodes`. Rolling goes from the highest ordinal down,
//! as a StatefulSet rolling update does; stop-the-world starts ordinal 0 first, as a
//! StatefulSet scaling up from zero does.

use serde::{Deserialize, Serialize};

use super::change::ChangeKind;

/// How a change is carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, strum::EnumString)]
#[serde(rename_all = "kebab-case")]
#[strum(serialize_all = "kebab-case")]
pub enum Strategy {
    /// One node at a time, the cluster stays up (patch moves).
    Rolling,
    /// Every node stops, one node upgrades the schema, then the rest start (schema changes).
    StopTheWorld,
}

impl Strategy {
    /// The strategy a change needs; `None` when there is nothing to change.
    pub fn for_change(change: ChangeKind) -> Option<Self> {
        match change {
            ChangeKind::None => None,
            ChangeKind::Patch | ChangeKind::PatchDowngrade => Some(Self::Rolling),
            ChangeKind::Minor
            | ChangeKind::Major
            | ChangeKind::MinorDowngrade
            | ChangeKind::MajorDowngrade => Some(Self::StopTheWorld),
        }
    }

    /// The name used in JSON and tables (`stop-the-world`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rolling => "rolling",
            Self::StopTheWorld => "stop-the-world",
        }
    }

    /// The ordered steps of this strategy for a cluster of `nodes` nodes (at least one).
    pub fn steps(self, nodes: u32) -> Vec<Step> {
        let nodes = nodes.max(1);
        match self {
            Self::Rolling => rolling(nodes),
            Self::StopTheWorld => stop_the_world(nodes),
        }
    }
}

impl std::fmt::Display for Strategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One step of a plan. Serialises as `{"action": "drain", "node": 0}`; cluster-wide steps
/// have no `node`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum Step {
    /// Turn server-wide maintenance mode on: only administrators can change anything.
    MaintenanceOn,
    /// Drain a node: it finishes its tasks and picks up no new ones.
    Drain {
        /// StatefulSet ordinal of the node.
        node: u32,
    },
    /// Wait until running tasks finish: on one node, or on the whole cluster without `node`.
    WaitTasks {
        /// StatefulSet ordinal of the node; absent for the whole cluster.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        node: Option<u32>,
    },
    /// Replace a node's pod with one running the new version.
    Replace {
        /// StatefulSet ordinal of the node.
        node: u32,
    },
    /// Wait until a node is ready.
    WaitReady {
        /// StatefulSet ordinal of the node.
        node: u32,
    },
    /// Check that a node reports the new version.
    VerifyVersion {
        /// StatefulSet ordinal of the node.
        node: u32,
    },
    /// Undrain a node: it picks up tasks again.
    Undrain {
        /// StatefulSet ordinal of the node.
        node: u32,
    },
    /// Back up the database and the Master Key.
    Backup,
    /// Stop every node.
    StopAll,
    /// Start one node on the new version; it upgrades the database schema.
    StartFirst {
        /// StatefulSet ordinal of the node.
        node: u32,
    },
    /// Wait until the first node has finished the schema upgrade and is ready.
    WaitSchema,
    /// Start every other node on the new version.
    StartRest,
    /// Check that every node is ready and reports the new version.
    Verify,
    /// Turn server-wide maintenance mode off.
    MaintenanceOff,
}

impl Step {
    /// The action name used in JSON (`wait-tasks`).
    pub fn action(self) -> &'static str {
        match self {
            Self::MaintenanceOn => "maintenance-on",
            Self::Drain { .. } => "drain",
            Self::WaitTasks { .. } => "wait-tasks",
            Self::Replace { .. } => "replace",
            Self::WaitReady { .. } => "wait-ready",
            Self::VerifyVersion { .. } => "verify-version",
            Self::Undrain { .. } => "undrain",
            Self::Backup => "backup",
            Self::StopAll => "stop-all",
            Self::StartFirst { .. } => "start-first",
            Self::WaitSchema => "wait-schema",
            Self::StartRest => "start-rest",
            Self::Verify => "verify",
            Self::MaintenanceOff => "maintenance-off",
        }
    }

    /// The node this step acts on, if it acts on one node.
    pub fn node(self) -> Option<u32> {
        match self {
            Self::Drain { node }
            | Self::Replace { node }
            | Self::WaitReady { node }
            | Self::VerifyVersion { node }
            | Self::Undrain { node }
            | Self::StartFirst { node } => Some(node),
            Self::WaitTasks { node } => node,
            Self::MaintenanceOn
            | Self::Backup
            | Self::StopAll
            | Self::WaitSchema
            | Self::StartRest
            | Self::Verify
            | Self::MaintenanceOff => None,
        }
    }

    /// What the step does, in one sentence, for people reading a plan.
    pub fn describe(self) -> &'static str {
        match self {
            Self::MaintenanceOn => {
                "turn maintenance mode on (only administrators can make changes)"
            }
            Self::Drain { .. } => "drain the node: it picks up no new tasks",
            Self::WaitTasks { node: Some(_) } => "wait until the node's running tasks finish",
            Self::WaitTasks { node: None } => "wait until every running task finishes",
            Self::Replace { .. } => "replace the node's pod with one on the new version",
            Self::WaitReady { .. } => "wait until the node is ready",
            Self::VerifyVersion { .. } => "check that the node reports the new version",
            Self::Undrain { .. } => "undrain the node: it picks up tasks again",
            Self::Backup => "back up the database and the Master Key",
            Self::StopAll => "stop every node",
            Self::StartFirst { .. } => {
                "start this node alone on the new version: it upgrades the database schema"
            }
            Self::WaitSchema => "wait until the schema upgrade finishes and the node is ready",
            Self::StartRest => "start every other node on the new version",
            Self::Verify => "check that every node is ready and reports the new version",
            Self::MaintenanceOff => "turn maintenance mode off",
        }
    }
}

/// Patch moves: one node at a time, highest ordinal first.
fn rolling(nodes: u32) -> Vec<Step> {
    (0..nodes)
        .rev()
        .flat_map(|node| {
            [
                Step::Drain { node },
                Step::WaitTasks { node: Some(node) },
                Step::Replace { node },
                Step::WaitReady { node },
                Step::VerifyVersion { node },
                Step::Undrain { node },
            ]
        })
        .collect()
}

/// Schema changes: Octopus's HA procedure, backup before anything stops, no mixed versions.
fn stop_the_world(nodes: u32) -> Vec<Step> {
    let mut steps = vec![Step::MaintenanceOn];
    steps.extend((0..nodes).map(|node| Step::Drain { node }));
    steps.extend([
        Step::WaitTasks { node: None },
        Step::Backup,
        Step::StopAll,
        Step::StartFirst { node: 0 },
        Step::WaitSchema,
    ]);
    // The schema is migrated and the first node serves on the new version: users get the
    // cluster back now. Only new-version nodes can start from here on (the template runs
    // the new version, and no old node starts on a migrated database), so the rest join a
    // serving cluster the way a scale-up does. A node's drain flag lives in the database:
    // every restarted node is still drained until its own undrain.
    steps.extend([Step::Undrain { node: 0 }, Step::MaintenanceOff]);
    if nodes > 1 {
        steps.push(Step::StartRest);
    }
    steps.push(Step::Verify);
    steps.extend((1..nodes).map(|node| Step::Undrain { node }));
    steps
}
