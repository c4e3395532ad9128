//! Why the operator may not disrupt a node right now: every safety rule is a named
//! predicate of one enum. Before a disruptive action all predicates that apply run; the
//! first that fails holds the step: status names it (`status.upgrade.heldBy`), the
//! condition reason is `WaitingFor<predicate>` ([`Predicate::reason`]). Pure: reads only
//! [`Observed`].

use strum::{EnumIter, EnumString, IntoEnumIterator, IntoStaticStr};

use super::model::{Evictions, Observed};
use super::reason::Reason;
use crate::version::OctopusVersion;

/// A disruptive move the operator is about to make.
#[derive(Clone, Copy, Debug)]
pub enum Disruption<'a> {
    /// Take one node out of service (drain it, or replace its pod), cluster staying up.
    TakeNodeOut { node: &'a str },
    /// Replace a drained node's pod.
    ReplacePod { node: &'a str },
    /// Remove a node for good (scale-down): its pod goes and does not come back.
    RemoveNode { node: &'a str },
    /// Stop every node for a schema upgrade.
    StopAll,
    /// Start pods on `version`.
    StartVersion { version: &'a OctopusVersion },
}

/// One safety rule. Declared in the order they are checked; the name is the variant's
/// (`OtherNodesServing`), recorded in `status.upgrade.heldBy` and never renamed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, EnumIter, EnumString, IntoStaticStr)]
pub enum Predicate {
    /// Decisions that need Octopus's view must have one.
    OctopusReachable,
    /// At most one node out of service.
    OtherNodesServing,
    /// A pod is replaced or removed only after its node is drained and idle.
    NodeDrainedAndIdle,
    /// Every node stops only when no task runs anywhere.
    TasksFinished,
    /// Every node stops only after the backup (or its waiver).
    BackupTaken,
    /// No node starts while a node of another schema line runs.
    NoOtherSchemaRunning,
    /// No node starts on a version older than the database schema.
    NotBelowSchema,
    /// The operator takes a node out only while the PodDisruptionBudget lets no eviction
    /// through, so no eviction can take a second one at the same time.
    EvictionsBlocked,
}

impl Predicate {
    /// The stable name, e.g. `OtherNodesServing`.
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// The reason a step waits while this predicate holds it.
    pub fn reason(self) -> Reason {
        match self {
            Self::OctopusReachable => Reason::WaitingForOctopusReachable,
            Self::OtherNodesServing => Reason::WaitingForOtherNodesServing,
            Self::NodeDrainedAndIdle => Reason::WaitingForNodeDrainedAndIdle,
            Self::TasksFinished => Reason::WaitingForTasksFinished,
            Self::BackupTaken => Reason::WaitingForBackupTaken,
            Self::NoOtherSchemaRunning => Reason::WaitingForNoOtherSchemaRunning,
            Self::NotBelowSchema => Reason::WaitingForNotBelowSchema,
            Self::EvictionsBlocked => Reason::WaitingForEvictionsBlocked,
        }
    }

    fn check(self, o: &Observed, d: Disruption<'_>) -> Result<(), String> {
        match self {
            Self::OctopusReachable => octopus_reachable(o, d),
            Self::OtherNodesServing => other_nodes_serving(o, d),
            Self::NodeDrainedAndIdle => node_drained_and_idle(o, d),
            Self::TasksFinished => tasks_finished(o, d),
            Self::BackupTaken => backup_taken(o, d),
            Self::NoOtherSchemaRunning => no_other_schema_running(o, d),
            Self::NotBelowSchema => not_below_schema(o, d),
            Self::EvictionsBlocked => evictions_blocked(o, d),
        }
    }
}

/// A failed predicate: which, and what it waits for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Held {
    pub predicate: Predicate,
    pub message: String,
}

impl std::fmt::Display for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.predicate.as_str(), self.message)
    }
}

/// Runs every predicate against `disruption`, in declaration order; the first failure
/// holds it.
pub fn check(observed: &Observed, disruption: Disruption<'_>) -> Result<(), Held> {
    for p in Predicate::iter() {
        p.check(observed, disruption).map_err(|message| Held {
            predicate: p,
            message,
        })?;
    }
    Ok(())
}

/// Decisions that need Octopus's view must have one.
fn octopus_reachable(o: &Observed, d: Disruption<'_>) -> Result<(), String> {
    match d {
        Disruption::TakeNodeOut { .. }
        | Disruption::ReplacePod { .. }
        | Disruption::RemoveNode { .. }
        | Disruption::StopAll => {
            o.octopus.state().map(|_| ()).ok_or_else(|| {
                "the Octopus API gave no answer; the operator never acts blind".into()
            })
        }
        Disruption::StartVersion { .. } => Ok(()),
    }
}

/// At most one node out of service: every other desired node is ready, serving, not drained.
fn other_nodes_serving(o: &Observed, d: Disruption<'_>) -> Result<(), String> {
    let (Disruption::TakeNodeOut { node } | Disruption::ReplacePod { node }) = d else {
        return Ok(());
    };
    let desired = o.running_replicas();
    let state = o.octopus.state();
    for ordinal in 0..desired {
        let name = format!("{}-{ordinal}", o.name);
        if name == node {
            continue;
        }
        let pod = o.pods.iter().find(|p| p.name == name);
        if !pod.is_some_and(|p| p.ready && !p.terminating) {
            return Err(format!("node {name} is not ready; {node} must wait"));
        }
        if let Some(n) = state.and_then(|s| s.node(&name))
            && (n.drained || n.offline)
        {
            return Err(format!(
                "node {name} is {} in Octopus; {node} must wait",
                if n.offline { "offline" } else { "drained" }
            ));
        }
    }
    Ok(())
}

/// A pod is replaced (or removed) only after Octopus drained its node and its tasks
/// finished.
fn node_drained_and_idle(o: &Observed, d: Disruption<'_>) -> Result<(), String> {
    let (node, removing) = match d {
        Disruption::ReplacePod { node } => (node, false),
        Disruption::RemoveNode { node } => (node, true),
        _ => return Ok(()),
    };
    let Some(state) = o.octopus.state() else {
        return Err("the Octopus API gave no answer".into());
    };
    match state.node(node) {
        // A node that never registered (or whose record is gone) runs nothing to lose.
        None if removing => Ok(()),
        None => Err(format!("node {node} is not registered with Octopus")),
        Some(n) if removing && n.offline => Ok(()),
        Some(n) if !n.drained => Err(format!("node {node} is not drained")),
        Some(_) => match state.tasks_on(node).count() {
            0 => Ok(()),
            n => Err(format!("node {node} still runs {n} task(s)")),
        },
    }
}

/// Every node stops only when no task runs anywhere.
fn tasks_finished(o: &Observed, d: Disruption<'_>) -> Result<(), String> {
    if !matches!(d, Disruption::StopAll) {
        return Ok(());
    }
    match o.octopus.state() {
        Some(s) if !s.maintenance => Err("maintenance mode is off".into()),
        Some(s) if !s.running_tasks.is_empty() => {
            Err(format!("{} task(s) still running", s.running_tasks.len()))
        }
        _ => Ok(()),
    }
}

/// Every node stops for a schema upgrade only after the backup (or its waiver).
fn backup_taken(o: &Observed, d: Disruption<'_>) -> Result<(), String> {
    if !matches!(d, Disruption::StopAll) {
        return Ok(());
    }
    let skip = o.spec.upgrade.backup_skipped();
    let Some(upgrade) = o.status.upgrade.as_ref() else {
        return Err("no upgrade is recorded".into());
    };
    let taken = o
        .status
        .last_backup
        .as_ref()
        .is_some_and(|b| b.is_of(&upgrade.from, &upgrade.to, upgrade.attempt.as_deref()));
    if skip || taken {
        Ok(())
    } else {
        Err(format!(
            "no backup of {} recorded for this upgrade attempt",
            upgrade.from
        ))
    }
}

/// A node of one schema line never starts while a node of another line runs.
fn no_other_schema_running(o: &Observed, d: Disruption<'_>) -> Result<(), String> {
    let Disruption::StartVersion { version } = d else {
        return Ok(());
    };
    for pod in &o.pods {
        let other = pod
            .version
            .as_deref()
            .and_then(|v| OctopusVersion::parse(v).ok());
        match other {
            Some(v) if v.schema_line() == version.schema_line() => {}
            _ => {
                return Err(format!(
                    "pod {} runs {} while {} would start",
                    pod.name,
                    pod.version.as_deref().unwrap_or("an unknown version"),
                    version
                ));
            }
        }
    }
    Ok(())
}

/// No node starts on a version older than the database schema.
fn not_below_schema(o: &Observed, d: Disruption<'_>) -> Result<(), String> {
    let Disruption::StartVersion { version } = d else {
        return Ok(());
    };
    let schema = o
        .status
        .schema_version
        .as_deref()
        .and_then(|v| OctopusVersion::parse(v).ok());
    match schema {
        Some(s) if version.schema_line() < s.schema_line() => Err(format!(
            "the database schema is at {s}; {version} cannot run against it"
        )),
        _ => Ok(()),
    }
}

/// A node goes out of service only while the PodDisruptionBudget, read before the pods,
/// lets no eviction through: then no eviction landed after the pods were read, and none
/// can land while the node is out.
fn evictions_blocked(o: &Observed, d: Disruption<'_>) -> Result<(), String> {
    if !matches!(
        d,
        Disruption::TakeNodeOut { .. } | Disruption::ReplacePod { .. }
    ) {
        return Ok(());
    }
    match o.evictions {
        Some(Evictions::None) => Ok(()),
        Some(Evictions::One) => Err(
            "the PodDisruptionBudget still lets an eviction through; it is closed first, so no \
             eviction can take a second node"
                .into(),
        ),
        None => Err("the PodDisruptionBudget does not exist yet".into()),
    }
}
