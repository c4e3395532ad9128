//! The upgrade planner: what a version change means and what is safe, by Octopus's own
//! upgrade rules. Pure and deterministic (no I/O, no clock, no async): the reconciler calls
//! [`plan`] with observed and wanted versions; `octopus-operator plan` ([`cli`]) shows the
//! same plan to a person.
//!
//! - [`change`]: patch / minor / major and their downgrades ([`classify`]).
//! - [`rules`]: the ordered checks that refuse a change, each with a [`BlockReason`].
//! - [`legacy`], [`known_bad`]: upgrade-path knowledge as data tables; [`route`] chains
//!   their hops into the path to take.
//! - [`steps`]: the [`Strategy`] a change needs and its ordered [`Step`]s.
//!
//! It decides; it does not act and must not touch Kubernetes or the Octopus API.

pub mod change;
pub mod cli;
pub mod known_bad;
pub mod legacy;
pub mod reason;
pub mod route;
pub mod rules;
pub mod steps;
pub mod table;

use serde::{Deserialize, Serialize};

pub use change::{ChangeKind, classify};
pub use reason::{BlockReason, invalid_version_message};
pub use rules::{Refusal, refusals};
pub use steps::{Step, Strategy};

use crate::version::OctopusVersion;

/// What to plan: a move between two versions on a cluster of `nodes` nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanRequest {
    /// The version the cluster runs.
    pub from: OctopusVersion,
    /// The version wanted.
    pub to: OctopusVersion,
    /// Number of Octopus Server nodes (StatefulSet replicas). 0 plans as 1: a stopped
    /// cluster still upgrades its schema when its first node starts.
    pub nodes: u32,
    /// `spec.upgrade.approvedMajorVersion`: the one major version an upgrade may go to.
    pub approved_major: Option<u64>,
}

/// The decision for a [`PlanRequest`]. Serialises to the JSON contract of
/// `octopus-operator plan -o json` (camelCase keys, every key always present).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    /// The version the cluster runs.
    pub from: OctopusVersion,
    /// The version wanted.
    pub to: OctopusVersion,
    /// What kind of change this is.
    pub change: ChangeKind,
    /// Whether the operator may carry it out.
    pub allowed: bool,
    /// Why not, when blocked.
    pub reason: Option<BlockReason>,
    /// What is wrong and what to do, when blocked.
    pub message: Option<String>,
    /// How the change is carried out; `None` when blocked or when nothing changes.
    pub strategy: Option<Strategy>,
    /// Whether the database and Master Key are backed up before anything stops.
    pub backup_required: bool,
    /// Versions passed through, `from` first and `to` last: two entries for a direct move,
    /// more when Octopus needs hops (a legacy gateway or a known bad path's chain; then the
    /// plan is blocked), one when nothing changes.
    pub path: Vec<OctopusVersion>,
    /// The ordered steps; empty when blocked or when nothing changes.
    pub steps: Vec<Step>,
}

/// Decides what moving from `request.from` to `request.to` means and what to do.
///
/// Refusals are checked in the order of [`rules`]; the first wins. Allowed patch moves roll
/// node by node without backup; allowed minor and major upgrades stop the world and back up
/// first.
pub fn plan(request: &PlanRequest) -> Plan {
    let change = classify(&request.from, &request.to);
    let path = if change == ChangeKind::None {
        vec![request.from.clone()]
    } else {
        route::path(&request.from, &request.to)
    };
    let refusal = refusals(request, change).into_iter().next();
    let strategy = match refusal {
        Some(_) => None,
        None => Strategy::for_change(change),
    };
    Plan {
        from: request.from.clone(),
        to: request.to.clone(),
        change,
        allowed: refusal.is_none(),
        reason: refusal.as_ref().map(|r| r.reason),
        message: refusal.map(|r| r.message),
        strategy,
        backup_required: strategy == Some(Strategy::StopTheWorld),
        path,
        steps: strategy.map(|s| s.steps(request.nodes)).unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests;
