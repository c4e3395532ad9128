//! The upgrade under way: walk its recorded steps from the first unfinished one, record
//! where it stands, and keep the StatefulSet where the strategy wants it at that step. A
//! sticky stop holds until the spec changes; going back after a failed migration becomes
//! a return plan.

use jiff::SignedDuration;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::evaluate::{StepCx, evaluate};
use super::replan::replan_roll;
use super::start::{begin, guard_start};
use super::{Outcome, Progress, Stop, max_version, report, restore, scale_down};
use crate::api::UpgradeStatus;
use crate::controller::conditions::UPGRADE_BLOCKED;
use crate::controller::model::{Decision, Observed, Requeue, StatefulSetWant};
use crate::controller::reason::Reason;
use crate::controller::steps::{PlannedStep, StepKind, StepState, Upgrade};
use crate::planner::{self, Step, Strategy};
use crate::version::OctopusVersion;

/// A new upgrade is only recorded: its first step (e.g. maintenance-on) runs on the next
/// reconcile, from the saved record. So a kill or a failed status write can never leave
/// Octopus changed with no record of what to undo, whatever the gates say afterwards.
/// Nothing else changes meanwhile, not even the StatefulSet.
pub(super) fn record_plan(o: &Observed, mut d: Decision, up: Upgrade) -> Decision {
    let progress = (
        Reason::Upgrading,
        format!(
            "planned {} -> {} ({} change, {} strategy, {} steps); the plan is recorded \
             before its first step runs",
            up.from,
            up.to,
            up.change,
            up.strategy.map_or("no", Strategy::as_str),
            up.steps.len()
        ),
    );
    d.statefulset = None;
    d.action = None;
    d.requeue = Requeue::Soon;
    d.upgrade = Some(UpgradeStatus::from(&up));
    report::finish(o, d, Some(&up), None, Some(progress))
}

/// Walks the recorded steps of the upgrade under way.
pub(super) fn run_upgrade(o: &Observed, mut d: Decision, mut up: Upgrade) -> Decision {
    if let Some(replanned) = replan_roll(o, &up) {
        return record_plan(o, d, replanned);
    }
    if let Some(holding) = lift_stop(o, &mut d, &mut up) {
        return report::finish(o, d, Some(&up), Some(holding), None);
    }
    let Ok(to) = OctopusVersion::parse(&up.to) else {
        d.upgrade = None;
        return report::finish(o, d, None, None, None);
    };
    let replicas = up.replicas.unwrap_or(o.spec.replicas);
    let Walked {
        mut progress,
        mut stop,
        finished,
    } = walk(o, &mut d, &mut up, &to, replicas);
    if finished {
        up.finished_at = Some(Time(o.now));
        up.step = None;
        up.node = None;
        d.schema_version = Some(max_version(d.schema_version.as_deref(), &up.to));
        d.current_version = Some(up.to.clone());
    }
    d.statefulset = Some(statefulset_for(&up, replicas));
    if let Some(want) = &d.statefulset
        && let Err(s) = guard_start(o, want)
    {
        d.statefulset = None;
        d.action = None;
        d.requeue = Requeue::Idle;
        if stop.is_none() {
            up.stopped_reason = Some(s.reason);
            up.stopped_generation = Some(o.generation);
            stop = Some(s);
        }
    }
    if let Some(p) = progress.as_mut()
        && o.spec.version != up.to
    {
        let what = if up.is_scale_down() {
            "the scale-down on"
        } else {
            "the upgrade to"
        };
        p.1.push_str(&format!(
            "; spec.version is now {} and is planned once {what} {} finishes",
            o.spec.version, up.to
        ));
    }
    let finished = up.finished_at.is_some();
    d.upgrade = Some(UpgradeStatus::from(&up));
    if finished {
        d.requeue = Requeue::Soon;
    }
    report::finish(o, d, Some(&up), stop, progress)
}

/// A node that failed holds the upgrade until a person changes the spec: its pod may look
/// fine a moment later (a restart), but the database state is unknown. Other stops (a
/// failed backup Job) clear as soon as observation changes. Returns the stop that still
/// holds.
fn lift_stop(o: &Observed, d: &mut Decision, up: &mut Upgrade) -> Option<Stop> {
    let went_back = o.spec.version == up.from
        && up.stopped_reason == Some(Reason::NodeFailedAfterMigration)
        && up.stopped_generation != Some(o.generation);
    if went_back {
        // Only on evidence that the database was restored: the backup of this attempt
        // named in spec.upgrade.restoredBackup. Then stop the failed node and bring every
        // node back to the old version.
        if let Err(stop) = restore::acknowledged(o, up) {
            d.statefulset = Some(restore::nothing_runs(up));
            d.upgrade = Some(UpgradeStatus::from(&*up));
            return Some(stop);
        }
        d.schema_version = Some(up.from.clone());
        *up = return_plan(o, up);
    } else if let Some(reason) = up.stopped_reason.filter(|r| r.sticky())
        && up.stopped_generation == Some(o.generation)
    {
        // The message said when the stop happened still holds.
        let mut message = o
            .status
            .conditions
            .iter()
            .find(|c| c.type_ == UPGRADE_BLOCKED)
            .map(|c| c.message.clone())
            .unwrap_or_default();
        d.statefulset = None;
        if let Some((want, found)) = restore::template_below_schema(o, d, up, &message) {
            d.statefulset = want;
            message = found;
        }
        d.upgrade = Some(UpgradeStatus::from(&*up));
        return Some(Stop::new(reason, message));
    }
    if up.stopped_reason.take().is_some_and(Reason::sticky) {
        // A person changed the spec: the step gets its full timeout again. (A stop that
        // clears by itself keeps the step's clock: restarting it on every look would
        // rewrite status on every reconcile.)
        up.step_started_at = Some(Time(o.now));
    }
    up.stopped_generation = None;
    // Recomputed by the walk: a predicate names itself only while it holds.
    up.held_by = None;
    None
}

/// Where a walk of the steps ended.
struct Walked {
    progress: Option<Progress>,
    stop: Option<Stop>,
    /// Every step was done when the walk looked.
    finished: bool,
}

/// Walks from the first unfinished step until one acts, waits, is held or stops; records
/// in `up` where the upgrade stands.
fn walk(
    o: &Observed,
    d: &mut Decision,
    up: &mut Upgrade,
    to: &OctopusVersion,
    replicas: i32,
) -> Walked {
    let ended = |progress, stop| Walked {
        progress,
        stop,
        finished: false,
    };
    let mut index = up.steps.iter().position(|s| s.state != StepState::Done);
    while let Some(i) = index {
        let step = up.steps[i].clone();
        if step.state != StepState::Running {
            up.steps[i].state = StepState::Running;
            up.step_started_at = Some(Time(o.now));
        }
        up.step = Some(step.kind);
        up.node = step.node.clone();
        let elapsed = up
            .step_started_at
            .as_ref()
            .map(|t| o.now.duration_since(t.0))
            .unwrap_or(SignedDuration::ZERO);
        let cx = StepCx {
            o,
            up,
            step: &step,
            to: to.to_string(),
            replicas,
            elapsed,
        };
        let outcome = evaluate(&cx, d);
        match outcome {
            Outcome::Done => {
                up.steps[i].state = StepState::Done;
                index = up.steps.iter().position(|s| s.state != StepState::Done);
                if index.is_some() {
                    up.step_started_at = Some(Time(o.now));
                }
            }
            Outcome::Act(action) => {
                if step.kind.traits().done_once_acted {
                    up.steps[i].state = StepState::Done;
                }
                let progress = format!("{}: {}", step.label(), action.describe());
                d.action = Some(action);
                d.requeue = Requeue::Soon;
                let reason = if up.is_scale_down() {
                    Reason::ScalingDown
                } else {
                    Reason::Upgrading
                };
                return ended(Some((reason, progress)), None);
            }
            Outcome::Wait {
                reason,
                message,
                poll,
            } => {
                d.requeue = if poll { Requeue::Poll } else { Requeue::Idle };
                return ended(Some((reason, format!("{}: {message}", step.label()))), None);
            }
            Outcome::Held(held) => {
                // Not started: e.g. stop-all must not scale down while a predicate holds.
                up.steps[i].state = StepState::Pending;
                let progress = (held.predicate.reason(), format!("{}: {held}", step.label()));
                up.held_by = Some(held);
                d.requeue = Requeue::Poll;
                return ended(Some(progress), None);
            }
            Outcome::Stop(s) => {
                up.stopped_reason = Some(s.reason);
                up.stopped_generation = Some(o.generation);
                return ended(None, Some(s));
            }
        }
    }
    Walked {
        progress: None,
        stop: None,
        finished: true,
    }
}

/// The way back from a schema upgrade whose first node failed: stop it, start the old
/// version again on one node, undrain it and lift maintenance mode once it serves on the
/// restored database, then start, verify and undrain the rest. No backup and no safety
/// hold on stopping: the node being stopped never served.
fn return_plan(o: &Observed, failed: &Upgrade) -> Upgrade {
    let replicas = failed.replicas.unwrap_or(o.spec.replicas);
    let nodes = u32::try_from(replicas.max(1)).unwrap_or(1);
    // The planner's stop-the-world procedure from stop-all on: the same restart, verify,
    // undrain and maintenance-off, without draining or backing up again.
    let steps: Vec<PlannedStep> = Strategy::StopTheWorld
        .steps(nodes)
        .into_iter()
        .skip_while(|s| *s != Step::StopAll)
        .map(|s| PlannedStep::planned(&o.name, s))
        .collect();
    let change = match (
        OctopusVersion::parse(&failed.to),
        OctopusVersion::parse(&failed.from),
    ) {
        (Ok(a), Ok(b)) => planner::classify(&a, &b).as_str().to_string(),
        _ => "unknown".into(),
    };
    begin(
        o,
        (failed.to.clone(), failed.from.clone()),
        &change,
        Some(Strategy::StopTheWorld),
        replicas,
        steps,
    )
}

/// The StatefulSet an upgrade wants at its current step. Stop-the-world keeps the old
/// version in the template until every node has stopped, so no pod of the new version can
/// appear while an old one runs.
fn statefulset_for(up: &Upgrade, replicas: i32) -> StatefulSetWant {
    if up.is_scale_down() {
        return scale_down::statefulset(up, replicas);
    }
    let started = |kind| {
        matches!(
            up.state_of(kind),
            Some(StepState::Running | StepState::Done)
        )
    };
    let stop_the_world = up.strategy == Some(Strategy::StopTheWorld);
    let (version, replicas) = if !stop_the_world || started(StepKind::StartRest) {
        (&up.to, replicas)
    } else if started(StepKind::StartFirst) {
        (&up.to, 1)
    } else if started(StepKind::StopAll) {
        (&up.from, 0)
    } else {
        (&up.from, replicas)
    };
    StatefulSetWant {
        version: version.clone(),
        replicas,
    }
}
