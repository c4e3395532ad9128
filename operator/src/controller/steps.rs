//! The steps of an upgrade as the controller records and walks them. `status.upgrade` stores
//! them as stable strings ([`UpgradeStatus`]); this module reads them once into an
//! [`Upgrade`] ([`TryFrom`]) and writes them back ([`From`]). Everything else matches on
//! [`StepKind`], so a new step that some code does not handle fails to compile.
//!
//! The serialised names are the variants' names in kebab-case (`wait-tasks`, `stop-all`),
//! the same as the planner's step actions; step states are `Pending`, `Running`, `Done`.
//! Never rename a variant: status written by an earlier operator must keep decoding.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use strum::{EnumIter, EnumString, IntoStaticStr};

use super::reason::Reason;
use super::safety::{Held, Predicate};
use crate::api::{HeldBy, StepStatus, UpgradeStatus};
use crate::planner::{self, ChangeKind, Strategy};

/// What a recorded step does. The planner's steps, plus the follow-ups the controller adds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, EnumIter, EnumString, IntoStaticStr)]
#[strum(serialize_all = "kebab-case")]
pub enum StepKind {
    /// Octopus maintenance mode on.
    MaintenanceOn,
    /// Drain a node in Octopus.
    Drain,
    /// Wait for the running tasks of a node, or of the whole cluster.
    WaitTasks,
    /// Replace a drained node's pod.
    Replace,
    /// Wait until a node is ready on the new version.
    WaitReady,
    /// Wait until Octopus reports the new version on a node.
    VerifyVersion,
    /// Undrain a node.
    Undrain,
    /// Copy the Master Key and run the backup Job.
    Backup,
    /// Stop every node.
    StopAll,
    /// Start the first node alone on the new version.
    StartFirst,
    /// Wait until the first node has upgraded the schema.
    WaitSchema,
    /// Start the other nodes.
    StartRest,
    /// Wait until every node is ready and reports the new version.
    Verify,
    /// Octopus maintenance mode off.
    MaintenanceOff,
    /// Queue Tentacle and Calamari updates (`spec.tentacles`), once, at the end.
    Tentacles,
}

impl StepKind {
    /// The stable name, e.g. `wait-tasks`.
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// What the walk must know about this step besides how to evaluate it.
    pub fn traits(self) -> StepTraits {
        const NONE: StepTraits = StepTraits {
            needs_octopus: false,
            done_once_replaced: false,
            planned_outage: false,
            done_once_acted: false,
        };
        match self {
            Self::MaintenanceOn | Self::MaintenanceOff | Self::Undrain | Self::VerifyVersion => {
                StepTraits {
                    needs_octopus: true,
                    ..NONE
                }
            }
            Self::Drain | Self::WaitTasks => StepTraits {
                needs_octopus: true,
                done_once_replaced: true,
                ..NONE
            },
            Self::Replace => StepTraits {
                done_once_replaced: true,
                ..NONE
            },
            Self::StopAll | Self::StartFirst | Self::WaitSchema => StepTraits {
                planned_outage: true,
                ..NONE
            },
            Self::WaitReady | Self::Backup | Self::StartRest | Self::Verify => NONE,
            Self::Tentacles => StepTraits {
                needs_octopus: true,
                done_once_acted: true,
                ..NONE
            },
        }
    }
}

/// See [`StepKind::traits`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StepTraits {
    /// The step reads Octopus's view: without an answer it waits, never acts blind.
    pub needs_octopus: bool,
    /// A node step that is behind its node once the node's pod runs the new version (the
    /// operator was killed after replacing the pod, before recording).
    pub done_once_replaced: bool,
    /// While the step runs every node is stopped or the first one migrates: the Octopus
    /// API is down on purpose, which is no fault.
    pub planned_outage: bool,
    /// Fire and forget: recorded done as soon as its action is decided.
    pub done_once_acted: bool,
}

impl std::fmt::Display for StepKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<planner::Step> for StepKind {
    fn from(step: planner::Step) -> Self {
        use planner::Step as P;
        match step {
            P::MaintenanceOn => Self::MaintenanceOn,
            P::Drain { .. } => Self::Drain,
            P::WaitTasks { .. } => Self::WaitTasks,
            P::Replace { .. } => Self::Replace,
            P::WaitReady { .. } => Self::WaitReady,
            P::VerifyVersion { .. } => Self::VerifyVersion,
            P::Undrain { .. } => Self::Undrain,
            P::Backup => Self::Backup,
            P::StopAll => Self::StopAll,
            P::StartFirst { .. } => Self::StartFirst,
            P::WaitSchema => Self::WaitSchema,
            P::StartRest => Self::StartRest,
            P::Verify => Self::Verify,
            P::MaintenanceOff => Self::MaintenanceOff,
        }
    }
}

/// Where a recorded step stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, EnumIter, EnumString, IntoStaticStr)]
pub enum StepState {
    Pending,
    Running,
    Done,
}

impl StepState {
    /// The stable name, e.g. `Running`.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// One recorded step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedStep {
    pub kind: StepKind,
    /// The pod the step acts on, for node steps.
    pub node: Option<String>,
    pub state: StepState,
}

impl PlannedStep {
    /// A pending step; node ordinals of the planner become pod names of `cluster`.
    pub fn planned(cluster: &str, step: planner::Step) -> Self {
        Self {
            kind: step.into(),
            node: step.node().map(|n| format!("{cluster}-{n}")),
            state: StepState::Pending,
        }
    }

    /// `drain octo-2`, `backup`.
    pub fn label(&self) -> String {
        match &self.node {
            Some(n) => format!("{} {n}", self.kind),
            None => self.kind.to_string(),
        }
    }
}

/// An upgrade as recorded in `status.upgrade`, typed. See [`UpgradeStatus`] for the fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upgrade {
    pub from: String,
    pub to: String,
    pub change: String,
    pub strategy: Option<Strategy>,
    pub attempt: Option<String>,
    pub step: Option<StepKind>,
    pub node: Option<String>,
    pub started_at: Option<Time>,
    pub step_started_at: Option<Time>,
    pub finished_at: Option<Time>,
    pub replicas: Option<i32>,
    pub stopped_reason: Option<Reason>,
    pub stopped_generation: Option<i64>,
    pub held_by: Option<Held>,
    pub steps: Vec<PlannedStep>,
}

impl Upgrade {
    /// The backup Job this attempt takes (or would take) before the schema changes.
    pub fn backup_job(&self, cluster: &str) -> String {
        crate::resources::names::backup_job(cluster, &self.from, &self.to, self.attempt.as_deref())
    }

    /// The Master Key copy kept with this attempt's backup.
    pub fn master_key_copy(&self, cluster: &str) -> String {
        crate::resources::names::master_key_copy(
            cluster,
            &self.from,
            &self.to,
            self.attempt.as_deref(),
        )
    }

    /// Whether the upgrade has a step of this kind.
    pub fn has(&self, kind: StepKind) -> bool {
        self.steps.iter().any(|s| s.kind == kind)
    }

    /// The state of the first step of this kind.
    pub fn state_of(&self, kind: StepKind) -> Option<StepState> {
        self.steps.iter().find(|s| s.kind == kind).map(|s| s.state)
    }

    /// A return plan (back to the version before a failed schema upgrade): the only
    /// stop-the-world record that goes down.
    pub fn is_return(&self) -> bool {
        self.strategy == Some(Strategy::StopTheWorld)
            && self
                .change
                .parse::<ChangeKind>()
                .is_ok_and(ChangeKind::is_downgrade)
    }
}

/// A recorded name this operator does not know: written by another operator version, or
/// edited by hand. The upgrade stops with [`Reason::UnknownStep`] rather than guess.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "status.upgrade.{field} is {value:?}, which this operator does not know; it was written \
     by another operator version or edited by hand. Run the operator version that started \
     this upgrade, or remove status.upgrade once the cluster is in a known state"
)]
pub struct UnknownStep {
    /// Where, e.g. `steps[3].action`.
    pub field: String,
    pub value: String,
}

fn decode<T: std::str::FromStr>(field: impl Into<String>, value: &str) -> Result<T, UnknownStep> {
    value.parse().map_err(|_| UnknownStep {
        field: field.into(),
        value: value.to_string(),
    })
}

impl TryFrom<&UpgradeStatus> for Upgrade {
    type Error = UnknownStep;

    fn try_from(up: &UpgradeStatus) -> Result<Self, UnknownStep> {
        let steps = up
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| {
                Ok(PlannedStep {
                    kind: decode(format!("steps[{i}].action"), &s.action)?,
                    node: s.node.clone(),
                    state: decode(format!("steps[{i}].state"), &s.state)?,
                })
            })
            .collect::<Result<Vec<_>, UnknownStep>>()?;
        Ok(Self {
            from: up.from.clone(),
            to: up.to.clone(),
            change: up.change.clone(),
            strategy: up
                .strategy
                .as_deref()
                .map(|s| decode("strategy", s))
                .transpose()?,
            attempt: up.attempt.clone(),
            step: up.step.as_deref().map(|s| decode("step", s)).transpose()?,
            node: up.node.clone(),
            started_at: up.started_at.clone(),
            step_started_at: up.step_started_at.clone(),
            finished_at: up.finished_at.clone(),
            replicas: up.replicas,
            stopped_reason: up
                .stopped_reason
                .as_deref()
                .map(|s| decode("stoppedReason", s))
                .transpose()?,
            stopped_generation: up.stopped_generation,
            // A report, recomputed on every reconcile: an unknown predicate is dropped.
            held_by: up.held_by.as_ref().and_then(|h| {
                Some(Held {
                    predicate: h.predicate.parse::<Predicate>().ok()?,
                    message: h.message.clone(),
                })
            }),
            steps,
        })
    }
}

impl From<&Upgrade> for UpgradeStatus {
    fn from(up: &Upgrade) -> Self {
        Self {
            from: up.from.clone(),
            to: up.to.clone(),
            change: up.change.clone(),
            strategy: up.strategy.map(|s| s.as_str().to_string()),
            attempt: up.attempt.clone(),
            step: up.step.map(|s| s.as_str().to_string()),
            node: up.node.clone(),
            started_at: up.started_at.clone(),
            step_started_at: up.step_started_at.clone(),
            finished_at: up.finished_at.clone(),
            replicas: up.replicas,
            stopped_reason: up.stopped_reason.map(|r| r.as_str().to_string()),
            stopped_generation: up.stopped_generation,
            held_by: up.held_by.as_ref().map(|h| HeldBy {
                predicate: h.predicate.as_str().to_string(),
                message: h.message.clone(),
            }),
            steps: up
                .steps
                .iter()
                .map(|s| StepStatus {
                    action: s.kind.as_str().to_string(),
                    node: s.node.clone(),
                    state: s.state.as_str().to_string(),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests;
