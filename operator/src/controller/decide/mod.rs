//! The decision core: from one [`Observed`] snapshot to one [`Decision`]. Pure and
//! synchronous; the reconciler's I/O layers carry the decision out.
//!
//! An upgrade is the planner's list of steps, recorded in `status.upgrade.steps` and read
//! back once as a typed [`Upgrade`]. Each reconcile walks it from the first unfinished
//! step: a step is *done* when observation says so (never because the operator did
//! something before), otherwise it yields one idempotent action, a wait, a hold by a
//! safety predicate, or a stop. Every stop has a [`Reason`]. A new upgrade is first only
//! recorded (no action): its first step runs from the saved record, so nothing in Octopus
//! is ever changed by an upgrade that status does not name.
//!
//! - [`start`]: no upgrade under way: create, hold steady, or plan one behind its gates.
//! - [`run`]: walk the recorded steps of the upgrade under way.
//! - [`replan`]: a new patch target during a patch roll re-plans the roll at once.
//! - [`evaluate`]: what one step needs now, one function per [`StepKind`](super::steps::StepKind).
//! - [`report`]: the conditions and the phase.
//! - [`release`]: what deletion releases in Octopus.
//! - [`history`]: finished backup Jobs of earlier attempts beyond the kept history.
//! - [`restore`]: no old node on a database that may be migrated (the way back after a
//!   failed migration, a template edited below the schema).

mod evaluate;
mod history;
mod release;
mod replan;
mod report;
mod restore;
mod run;
mod start;

use jiff::SignedDuration;

pub use evaluate::{CRASH_RESTARTS, HEARTBEAT_AGE_OUT};
pub use history::KEPT_BACKUP_JOBS;
pub use release::release;
pub use report::phase;

use super::model::{Action, Decision, Observed, Requeue};
use super::reason::Reason;
use super::safety::Held;
use super::steps::Upgrade;
use crate::planner;
use crate::version::OctopusVersion;

/// What stops the cluster from reaching the spec. The reason says whether it also
/// degrades it ([`Reason::degraded`]) or holds until the spec changes ([`Reason::sticky`]).
#[derive(Clone, Debug)]
struct Stop {
    reason: Reason,
    message: String,
}

impl Stop {
    fn new(reason: Reason, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }
}

/// The result of evaluating one step.
enum Outcome {
    Done,
    Act(Action),
    /// A safety predicate holds the step: it has not started (its StatefulSet effect too).
    Held(Held),
    Wait {
        reason: Reason,
        message: String,
        /// Octopus sends no watch events: look again after the poll interval.
        poll: bool,
    },
    Stop(Stop),
}

/// A condition reason and message for Progressing.
type Progress = (Reason, String);

/// Decides what to do now.
pub fn decide(o: &Observed) -> Decision {
    let mut d = Decision {
        statefulset: None,
        action: None,
        requeue: Requeue::Idle,
        conditions: Vec::new(),
        upgrade: o.status.upgrade.clone(),
        schema_version: schema_version(o),
        current_version: current_version(o),
        target_version: o.status.target_version.clone(),
        last_backup: o.status.last_backup.clone(),
        stop: None,
    };
    // The upgrade under way, read once from status.
    let recorded = o
        .status
        .upgrade
        .as_ref()
        .filter(|u| u.finished_at.is_none())
        .map(Upgrade::try_from)
        .transpose();
    let current = recorded.as_ref().ok().and_then(Option::as_ref);
    let target = match OctopusVersion::parse(&o.spec.version) {
        Ok(v) => v,
        Err(e) => {
            let stop = Stop::new(Reason::InvalidVersion, planner::invalid_version_message(&e));
            return report::finish(o, d, current, Some(stop), None);
        }
    };
    if !o.missing_secrets.is_empty() {
        let stop = Stop::new(
            Reason::SecretNotFound,
            format!(
                "{}; nothing is created or changed until every referenced Secret key exists",
                o.missing_secrets.join("; ")
            ),
        );
        // Secrets send no watch events to this controller: look again soon.
        d.requeue = Requeue::Poll;
        return report::finish(o, d, current, Some(stop), None);
    }
    if o.spec.paused {
        return report::finish(o, d, current, None, None);
    }
    d.target_version = Some(o.spec.version.clone());

    let d = match recorded {
        // Status names something this operator does not know: touch nothing.
        Err(e) => {
            return report::finish(
                o,
                d,
                None,
                Some(Stop::new(Reason::UnknownStep, e.to_string())),
                None,
            );
        }
        Ok(Some(upgrade)) => run::run_upgrade(o, d, upgrade),
        Ok(None) => start::steady_or_start(o, d, &target),
    };
    history::prune(o, d)
}

/// The database schema is at the highest version that ran against it: the recorded one,
/// or a newer one a ready pod proves.
fn schema_version(o: &Observed) -> Option<String> {
    let mut best = o.status.schema_version.clone();
    for pod in o.pods.iter().filter(|p| p.ready) {
        if let Some(v) = &pod.version {
            best = Some(max_version(best.as_deref(), v));
        }
    }
    best
}

fn max_version(a: Option<&str>, b: &str) -> String {
    let pa = a.and_then(|v| OctopusVersion::parse(v).ok());
    let pb = OctopusVersion::parse(b).ok();
    match (pa, pb) {
        (Some(x), Some(y)) if x > y => x.to_string(),
        (_, Some(y)) => y.to_string(),
        (Some(x), None) => x.to_string(),
        (None, None) => b.to_string(),
    }
}

/// The version every live pod runs, when they agree.
fn current_version(o: &Observed) -> Option<String> {
    let mut versions = o
        .pods
        .iter()
        .filter(|p| !p.terminating)
        .filter_map(|p| p.version.clone());
    let first = versions.next()?;
    versions.all(|v| v == first).then_some(first)
}

fn signed(d: kube::core::Duration) -> SignedDuration {
    SignedDuration::try_from(std::time::Duration::from(d)).unwrap_or(SignedDuration::MAX)
}
