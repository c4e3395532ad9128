//! The decision core: from one [`Observed`] snapshot to one [`Decision`]. Pure and
//! synchronous; the reconciler's I/O layers carry the decision out.
//!
//! An upgrade is the planner's list of steps, recorded in `status.upgrade.steps`. Each
//! reconcile walks it from the first unfinished step: a step is *done* when observation
//! says so (never because the operator did something before), otherwise it yields one
//! idempotent action, a wait, or a stop. Every stop has a named reason (see [`reasons`]).

use jiff::SignedDuration;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::conditions::{DEGRADED, PAUSED, PROGRESSING, READY, UPGRADE_BLOCKED};
use super::model::{Action, CondWant, Decision, Observed, PodView, Requeue, StatefulSetWant};
use super::safety::{self, Disruption};
use super::window;
use crate::api::{
    BackupStatus, DrainTimeoutPolicy, SchemaUpgradePolicy, StepStatus, UpgradeStatus,
};
use crate::planner::{self, PlanRequest, Step, Strategy};
use crate::resources;
use crate::version::OctopusVersion;

/// Stable condition reasons of the reconciler (the planner's `BlockReason`s are used as
/// they are). A user reads these in `kubectl describe`; scripts may match on them.
pub mod reasons {
    pub const READY: &str = "Ready";
    pub const CREATING: &str = "Creating";
    pub const NODES_NOT_READY: &str = "NodesNotReady";
    pub const UPGRADING: &str = "Upgrading";
    pub const SECRET_NOT_FOUND: &str = "SecretNotFound";
    pub const INVALID_SPEC: &str = "InvalidSpec";
    pub const PAUSED: &str = "Paused";
    pub const SCHEMA_UPGRADE_NOT_APPROVED: &str = "SchemaUpgradeNotApproved";
    pub const OUTSIDE_MAINTENANCE_WINDOW: &str = "OutsideMaintenanceWindow";
    pub const BACKUP_NOT_CONFIGURED: &str = "BackupNotConfigured";
    pub const BACKUP_FAILED: &str = "BackupFailed";
    pub const MIXED_SCHEMA_VERSIONS: &str = "MixedSchemaVersions";
    pub const NODE_FAILED_AFTER_MIGRATION: &str = "NodeFailedAfterMigration";
    pub const NODE_FAILED_TO_START: &str = "NodeFailedToStart";
    pub const NODE_NOT_READY: &str = "NodeNotReady";
    pub const NODE_VERSION_MISMATCH: &str = "NodeVersionMismatch";
    pub const UNSAFE_TO_START: &str = "UnsafeToStart";
    pub const AS_EXPECTED: &str = "AsExpected";
    pub const NOT_BLOCKED: &str = "NotBlocked";
    pub const NOT_PAUSED: &str = "NotPaused";
    pub const IDLE: &str = "Idle";
}

/// Stops that hold until the spec changes (see `run_upgrade`).
const STICKY_STOPS: [&str; 4] = [
    reasons::NODE_FAILED_AFTER_MIGRATION,
    reasons::NODE_FAILED_TO_START,
    reasons::NODE_NOT_READY,
    reasons::NODE_VERSION_MISMATCH,
];

/// Restarts after which a starting node counts as failed rather than slow.
pub const CRASH_RESTARTS: i32 = 3;

/// Name of the follow-up step appended when `spec.tentacles` asks for it.
const TENTACLES_STEP: &str = "tentacles";

const PENDING: &str = "Pending";
const RUNNING: &str = "Running";
const DONE: &str = "Done";

/// What stops the cluster from reaching the spec, and whether it is also degraded.
#[derive(Clone, Debug)]
struct Stop {
    reason: String,
    message: String,
    degraded: bool,
    /// Also blocks the upgrade (vs. a degraded cluster that still converges).
    blocks: bool,
}

/// The result of evaluating one step.
enum Outcome {
    Done,
    Act(Action),
    /// A safety predicate holds the step: it has not started (its StatefulSet effect too).
    Held {
        reason: String,
        message: String,
    },
    Wait {
        reason: String,
        message: String,
        poll: bool,
    },
    Stop(Stop),
}

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
    let target = match OctopusVersion::parse(&o.spec.version) {
        Ok(v) => v,
        Err(e) => {
            let stop = Stop {
                reason: planner::BlockReason::InvalidVersion.as_str().into(),
                message: planner::invalid_version_message(&e),
                degraded: false,
                blocks: true,
            };
            return finish(o, d, Some(stop), None);
        }
    };
    if !o.missing_secrets.is_empty() {
        let stop = Stop {
            reason: reasons::SECRET_NOT_FOUND.into(),
            message: format!(
                "{}; nothing is created or changed until every referenced Secret key exists",
                o.missing_secrets.join("; ")
            ),
            degraded: true,
            blocks: true,
        };
        // Secrets send no watch events to this controller: look again soon.
        d.requeue = Requeue::Poll;
        return finish(o, d, Some(stop), None);
    }
    if o.spec.paused {
        return finish(o, d, None, None);
    }
    d.target_version = Some(o.spec.version.clone());

    let in_progress = o.status.upgrade.clone().filter(|u| u.finished_at.is_none());
    match in_progress {
        Some(upgrade) => run_upgrade(o, d, upgrade),
        None => steady_or_start(o, d, &target),
    }
}

/// No upgrade under way: create, hold steady, or start one.
fn steady_or_start(o: &Observed, mut d: Decision, target: &OctopusVersion) -> Decision {
    let replicas = o.spec.replicas;
    let Some(sts) = &o.statefulset else {
        // Day 1. OrderedReady starts node 0 alone first, so a fresh database gets its
        // schema from one node before the others join.
        let want = StatefulSetWant {
            version: target.to_string(),
            replicas,
        };
        return match guard_start(o, &want) {
            Ok(()) => {
                d.statefulset = Some(want);
                let progress = (
                    reasons::CREATING.to_string(),
                    format!("creating {replicas} Octopus Server node(s) on {target}"),
                );
                finish(o, d, None, Some(progress))
            }
            Err(stop) => finish(o, d, Some(stop), None),
        };
    };

    let live: Vec<&PodView> = o.pods.iter().filter(|p| !p.terminating).collect();
    let lines: std::collections::BTreeSet<(u64, u64)> = live
        .iter()
        .filter_map(|p| p.version.as_deref())
        .filter_map(|v| OctopusVersion::parse(v).ok())
        .map(|v| v.schema_line())
        .collect();
    if lines.len() > 1 {
        let versions: Vec<String> = live
            .iter()
            .map(|p| format!("{}={}", p.name, p.version.as_deref().unwrap_or("?")))
            .collect();
        let stop = Stop {
            reason: reasons::MIXED_SCHEMA_VERSIONS.into(),
            message: format!(
                "nodes run versions of different database schemas ({}); an old node against a \
                 newer schema risks data corruption. The operator takes no step until a person \
                 stops the wrong nodes and the spec names the version the database is at",
                versions.join(", ")
            ),
            degraded: true,
            blocks: true,
        };
        return finish(o, d, Some(stop), None);
    }

    // What the cluster runs: the oldest pod version (patch mixes are harmless), else the
    // template; but never below the schema the database is known to be at.
    let running = live
        .iter()
        .filter_map(|p| p.version.as_deref())
        .filter_map(|v| OctopusVersion::parse(v).ok())
        .min()
        .or_else(|| {
            sts.version
                .as_deref()
                .and_then(|v| OctopusVersion::parse(v).ok())
        });
    let schema = d
        .schema_version
        .as_deref()
        .and_then(|v| OctopusVersion::parse(v).ok());
    let from = match (running, schema) {
        (Some(r), Some(s)) if s.schema_line() > r.schema_line() => s,
        (Some(r), _) => r,
        (None, Some(s)) => s,
        (None, None) => target.clone(),
    };
    let current_template = sts.version.clone().unwrap_or_else(|| from.to_string());
    let all_on_target = live
        .iter()
        .all(|p| p.version.as_deref() == Some(&o.spec.version))
        && current_template == o.spec.version;

    if all_on_target && from == *target {
        let want = StatefulSetWant {
            version: target.to_string(),
            replicas,
        };
        return match guard_start(o, &want) {
            Ok(()) => {
                d.statefulset = Some(want);
                finish(o, d, None, None)
            }
            Err(stop) => finish(o, d, Some(stop), None),
        };
    }

    let plan = planner::plan(&PlanRequest {
        from: from.clone(),
        to: target.clone(),
        nodes: u32::try_from(replicas.max(1)).unwrap_or(1),
        approved_major: o
            .spec
            .upgrade
            .approved_major_version
            .and_then(|m| u64::try_from(m).ok()),
    });
    // While blocked the cluster keeps running (and may scale) on what it runs now.
    let hold = StatefulSetWant {
        version: current_template,
        replicas,
    };
    if !plan.allowed {
        let stop = Stop {
            reason: plan
                .reason
                .map(|r| r.as_str().to_string())
                .unwrap_or_default(),
            message: plan.message.unwrap_or_default(),
            degraded: false,
            blocks: true,
        };
        d.statefulset = guard_start(o, &hold).ok().map(|()| hold);
        return finish(o, d, Some(stop), None);
    }
    if plan.strategy == Some(Strategy::StopTheWorld)
        && let Some(stop) = schema_upgrade_gate(o, &from, target)
    {
        d.statefulset = guard_start(o, &hold).ok().map(|()| hold);
        return finish(o, d, Some(stop), None);
    }
    let mut steps: Vec<StepStatus> = plan
        .steps
        .iter()
        .map(|s| step_status(&o.name, *s))
        .collect();
    if o.spec
        .tentacles
        .as_ref()
        .is_some_and(|t| t.upgrade_tentacles || t.update_calamari)
    {
        steps.push(StepStatus {
            action: TENTACLES_STEP.into(),
            node: None,
            state: PENDING.into(),
        });
    }
    let upgrade = begin(
        o,
        (from.to_string(), target.to_string()),
        plan.change.as_str(),
        plan.strategy,
        replicas,
        steps,
    );
    run_upgrade(o, d, upgrade)
}

/// A schema-changing upgrade needs a person's approval (or the window) and a backup plan.
fn schema_upgrade_gate(o: &Observed, from: &OctopusVersion, to: &OctopusVersion) -> Option<Stop> {
    let upgrade = &o.spec.upgrade;
    let approved = match upgrade.schema_upgrades {
        SchemaUpgradePolicy::Manual => upgrade.approved_version.as_deref() == Some(&o.spec.version),
        SchemaUpgradePolicy::Automatic => true,
    };
    if !approved {
        return Some(Stop {
            reason: reasons::SCHEMA_UPGRADE_NOT_APPROVED.into(),
            message: format!(
                "{from} -> {to} changes the database schema: every node stops, the database is \
                 backed up, one node migrates it. To approve, set spec.upgrade.approvedVersion: \
                 \"{to}\" (or spec.upgrade.schemaUpgrades: Automatic)"
            ),
            degraded: false,
            blocks: true,
        });
    }
    if upgrade.schema_upgrades == SchemaUpgradePolicy::Automatic
        && upgrade.approved_version.as_deref() != Some(&o.spec.version)
        && let Some(w) = &upgrade.maintenance_window
    {
        match window::is_open(w, o.now) {
            Ok(true) => {}
            Ok(false) => {
                return Some(Stop {
                    reason: reasons::OUTSIDE_MAINTENANCE_WINDOW.into(),
                    message: format!(
                        "{from} -> {to} changes the database schema and waits for the \
                             maintenance window ({:?} {} for {} {}); set \
                             spec.upgrade.approvedVersion: \"{to}\" to start now",
                        w.days, w.start, w.duration, w.time_zone
                    ),
                    degraded: false,
                    blocks: true,
                });
            }
            Err(e) => {
                return Some(Stop {
                    reason: reasons::INVALID_SPEC.into(),
                    message: e.to_string(),
                    degraded: false,
                    blocks: true,
                });
            }
        }
    }
    if upgrade.backup.is_none() {
        return Some(Stop {
            reason: reasons::BACKUP_NOT_CONFIGURED.into(),
            message: format!(
                "{from} -> {to} changes the database schema and can only be undone by restoring \
                 a backup. Set spec.upgrade.backup.jobTemplate (a Job that backs up the \
                 database), or spec.upgrade.backup.skip: true to go on without one"
            ),
            degraded: false,
            blocks: true,
        });
    }
    None
}

/// Walks the recorded steps of the upgrade under way.
fn run_upgrade(o: &Observed, mut d: Decision, mut up: UpgradeStatus) -> Decision {
    // A node that failed holds the upgrade until a person changes the spec: its pod may
    // look fine a moment later (a restart), but the database state is unknown. Other
    // stops (a failed backup Job) clear as soon as observation changes.
    let sticky = up
        .stopped_reason
        .as_deref()
        .is_some_and(|r| STICKY_STOPS.contains(&r));
    let went_back = o.spec.version == up.from
        && up.stopped_reason.as_deref() == Some(reasons::NODE_FAILED_AFTER_MIGRATION)
        && up.stopped_generation != Some(o.generation);
    if went_back {
        // As the stop told them: the database was restored and spec.version names the
        // old version again. Stop the failed node and bring every node back to it.
        d.schema_version = Some(up.from.clone());
        up = return_plan(o, &up);
    } else if sticky && up.stopped_generation == Some(o.generation) {
        let stop = Stop {
            reason: up.stopped_reason.clone().unwrap_or_default(),
            // The message said when the stop happened still holds.
            message: o
                .status
                .conditions
                .iter()
                .find(|c| c.type_ == UPGRADE_BLOCKED)
                .map(|c| c.message.clone())
                .unwrap_or_default(),
            degraded: true,
            blocks: true,
        };
        d.statefulset = None;
        d.upgrade = Some(up);
        return finish(o, d, Some(stop), None);
    }
    if up.stopped_reason.take().is_some() {
        // A person changed the spec: the step gets its full timeout again.
        up.step_started_at = Some(Time(o.now));
    }
    up.stopped_generation = None;

    let Ok(to) = OctopusVersion::parse(&up.to) else {
        d.upgrade = None;
        return finish(o, d, None, None);
    };
    let deferred = (o.spec.version != up.to).then(|| {
        format!(
            "; spec.version is now {} and is planned once the upgrade to {} finishes",
            o.spec.version, up.to
        )
    });
    let replicas = up.replicas.unwrap_or(o.spec.replicas);
    let mut progress = None;
    let mut stop = None;

    let mut index = up.steps.iter().position(|s| s.state != DONE);
    while let Some(i) = index {
        let step = up.steps[i].clone();
        if step.state != RUNNING {
            up.steps[i].state = RUNNING.into();
            up.step_started_at = Some(Time(o.now));
        }
        up.step = Some(step.action.clone());
        up.node = step.node.clone();
        let elapsed = up
            .step_started_at
            .as_ref()
            .map(|t| o.now.duration_since(t.0))
            .unwrap_or(SignedDuration::ZERO);
        match evaluate(o, &mut d, &up, &step, &to, replicas, elapsed) {
            Outcome::Done => {
                up.steps[i].state = DONE.into();
                index = up.steps.iter().position(|s| s.state != DONE);
                if index.is_some() {
                    up.step_started_at = Some(Time(o.now));
                }
            }
            Outcome::Act(action) => {
                if step.action == TENTACLES_STEP {
                    // Fire-and-forget follow-up: recorded done once queued.
                    up.steps[i].state = DONE.into();
                }
                progress = Some((
                    reasons::UPGRADING.to_string(),
                    format!("{}: {}", step_label(&step), action.describe()),
                ));
                d.action = Some(action);
                d.requeue = Requeue::Soon;
                break;
            }
            Outcome::Wait {
                reason,
                message,
                poll,
            } => {
                progress = Some((reason, format!("{}: {message}", step_label(&step))));
                d.requeue = if poll { Requeue::Poll } else { Requeue::Idle };
                break;
            }
            Outcome::Held { reason, message } => {
                // Not started: e.g. stop-all must not scale down while a predicate holds.
                up.steps[i].state = PENDING.into();
                progress = Some((reason, format!("{}: {message}", step_label(&step))));
                d.requeue = Requeue::Poll;
                break;
            }
            Outcome::Stop(s) => {
                up.stopped_reason = Some(s.reason.clone());
                up.stopped_generation = Some(o.generation);
                stop = Some(s);
                break;
            }
        }
    }
    if index.is_none() && stop.is_none() {
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
            up.stopped_reason = Some(s.reason.clone());
            up.stopped_generation = Some(o.generation);
            stop = Some(s);
        }
    }
    if let (Some(p), Some(extra)) = (progress.as_mut(), deferred) {
        p.1.push_str(&extra);
    }
    let finished = up.finished_at.is_some();
    d.upgrade = Some(up);
    if finished {
        d.requeue = Requeue::Soon;
    }
    finish(o, d, stop, progress)
}

/// The way back from a schema upgrade whose first node failed: stop it, start the old
/// version again (one node first), verify, undrain, maintenance mode off. No backup and no
/// safety hold on stopping: the node being stopped never served.
fn return_plan(o: &Observed, failed: &UpgradeStatus) -> UpgradeStatus {
    let replicas = failed.replicas.unwrap_or(o.spec.replicas);
    let nodes = u32::try_from(replicas.max(1)).unwrap_or(1);
    // The planner's stop-the-world procedure from stop-all on: the same restart, verify,
    // undrain and maintenance-off, without draining or backing up again.
    let steps: Vec<Step> = Strategy::StopTheWorld
        .steps(nodes)
        .into_iter()
        .skip_while(|s| *s != Step::StopAll)
        .collect();
    let change = match (
        OctopusVersion::parse(&failed.to),
        OctopusVersion::parse(&failed.from),
    ) {
        (Ok(a), Ok(b)) => planner::classify(&a, &b).as_str().to_string(),
        _ => "unknown".into(),
    };
    let steps = steps.into_iter().map(|s| step_status(&o.name, s)).collect();
    begin(
        o,
        (failed.to.clone(), failed.from.clone()),
        &change,
        Some(Strategy::StopTheWorld),
        replicas,
        steps,
    )
}

/// A new upgrade record, starting now.
fn begin(
    o: &Observed,
    (from, to): (String, String),
    change: &str,
    strategy: Option<Strategy>,
    replicas: i32,
    steps: Vec<StepStatus>,
) -> UpgradeStatus {
    UpgradeStatus {
        from,
        to,
        change: change.to_string(),
        strategy: strategy.map(|s| s.as_str().to_string()),
        step: None,
        node: None,
        started_at: Some(Time(o.now)),
        step_started_at: Some(Time(o.now)),
        finished_at: None,
        replicas: Some(replicas),
        stopped_reason: None,
        stopped_generation: None,
        steps,
    }
}

/// A return plan (see [`return_plan`]): the only stop-the-world record that goes down.
fn is_return(up: &UpgradeStatus) -> bool {
    up.strategy.as_deref() == Some(Strategy::StopTheWorld.as_str())
        && up.change.ends_with("-downgrade")
}

/// The StatefulSet an upgrade wants at its current step. Stop-the-world keeps the old
/// version in the template until every node has stopped, so no pod of the new version can
/// appear while an old one runs.
fn statefulset_for(up: &UpgradeStatus, replicas: i32) -> StatefulSetWant {
    let state_of = |action: &str| {
        up.steps
            .iter()
            .find(|s| s.action == action)
            .map(|s| s.state.as_str())
    };
    let started = |action: &str| matches!(state_of(action), Some(RUNNING | DONE));
    if up.strategy.as_deref() == Some(Strategy::StopTheWorld.as_str()) {
        if started("start-rest") {
            StatefulSetWant {
                version: up.to.clone(),
                replicas,
            }
        } else if started("start-first") {
            StatefulSetWant {
                version: up.to.clone(),
                replicas: 1,
            }
        } else if started("stop-all") {
            StatefulSetWant {
                version: up.from.clone(),
                replicas: 0,
            }
        } else {
            StatefulSetWant {
                version: up.from.clone(),
                replicas,
            }
        }
    } else {
        StatefulSetWant {
            version: up.to.clone(),
            replicas,
        }
    }
}

/// Stops when the StatefulSet would start pods that must not run.
fn guard_start(o: &Observed, want: &StatefulSetWant) -> Result<(), Stop> {
    if want.replicas == 0 {
        return Ok(());
    }
    let Ok(version) = OctopusVersion::parse(&want.version) else {
        return Err(Stop {
            reason: planner::BlockReason::InvalidVersion.as_str().into(),
            message: format!("{:?} is not an Octopus version", want.version),
            degraded: false,
            blocks: true,
        });
    };
    // Pods still on another schema line are fine only if they are the ones the template
    // keeps (same version): the guard is about what *new* pods would run.
    let observed_template = o.statefulset.as_ref().and_then(|s| s.version.clone());
    let new_version = observed_template.as_deref() != Some(want.version.as_str());
    let growing = o
        .statefulset
        .as_ref()
        .is_none_or(|s| want.replicas > s.replicas);
    if !(new_version || growing) {
        return Ok(());
    }
    safety::check(o, Disruption::StartVersion { version: &version }).map_err(|held| Stop {
        reason: reasons::UNSAFE_TO_START.into(),
        message: format!("{}: {}", held.predicate, held.message),
        degraded: true,
        blocks: true,
    })
}

#[allow(clippy::too_many_lines)]
fn evaluate(
    o: &Observed,
    d: &mut Decision,
    up: &UpgradeStatus,
    step: &StepStatus,
    to: &OctopusVersion,
    replicas: i32,
    elapsed: SignedDuration,
) -> Outcome {
    let to_s = to.to_string();
    let drain_timeout = signed(o.spec.upgrade.drain_timeout);
    let ready_timeout = signed(o.spec.upgrade.node_ready_timeout);
    let pod = |name: &str| o.pods.iter().find(|p| p.name == name);
    let on_target = |name: &str| {
        pod(name).is_some_and(|p| !p.terminating && p.version.as_deref() == Some(to_s.as_str()))
    };
    let node_name = step.node.clone().unwrap_or_default();

    // Steps that need Octopus's view wait for it: never act blind.
    let needs_octopus = matches!(
        step.action.as_str(),
        "maintenance-on"
            | "maintenance-off"
            | "drain"
            | "undrain"
            | "wait-tasks"
            | "verify-version"
    ) || step.action == TENTACLES_STEP;
    let skip_for_replaced = matches!(step.action.as_str(), "drain" | "wait-tasks" | "replace")
        && step.node.is_some()
        && on_target(&node_name);
    if skip_for_replaced {
        return Outcome::Done;
    }
    if needs_octopus && o.octopus.state().is_none() {
        return octopus_wait(o);
    }
    let state = o.octopus.state();

    match step.action.as_str() {
        "maintenance-on" | "maintenance-off" => {
            let on = step.action == "maintenance-on";
            if state.is_some_and(|s| s.maintenance == on) {
                Outcome::Done
            } else {
                Outcome::Act(Action::SetMaintenance(on))
            }
        }
        "drain" | "undrain" => {
            let drained = step.action == "drain";
            let Some(node) = state.and_then(|s| s.node(&node_name)) else {
                return Outcome::Wait {
                    reason: "WaitingForNode".into(),
                    message: format!("node {node_name} is not registered with Octopus yet"),
                    poll: true,
                };
            };
            if node.drained == drained {
                return Outcome::Done;
            }
            if drained
                && up.strategy.as_deref() == Some(Strategy::Rolling.as_str())
                && let Err(held) = safety::check(o, Disruption::TakeNodeOut { node: &node_name })
            {
                return held_wait(held);
            }
            Outcome::Act(Action::SetDrain {
                node_id: node.id.clone(),
                node: node_name,
                drained,
            })
        }
        "wait-tasks" => {
            let Some(s) = state else {
                return octopus_wait(o);
            };
            let tasks: Vec<_> = if step.node.is_some() {
                s.tasks_on(&node_name).collect()
            } else {
                s.running_tasks.iter().collect()
            };
            if tasks.is_empty() {
                return Outcome::Done;
            }
            let where_ = if step.node.is_some() {
                format!("on node {node_name}")
            } else {
                "in the cluster".to_string()
            };
            let ids: Vec<String> = tasks.iter().map(|t| t.id.clone()).collect();
            if elapsed >= drain_timeout {
                match o.spec.upgrade.on_drain_timeout {
                    DrainTimeoutPolicy::CancelTasks => {
                        let cancel: Vec<String> = tasks
                            .iter()
                            .filter(|t| !t.cancelling)
                            .map(|t| t.id.clone())
                            .collect();
                        if !cancel.is_empty() {
                            return Outcome::Act(Action::CancelTasks(cancel));
                        }
                    }
                    DrainTimeoutPolicy::Wait => {
                        return Outcome::Wait {
                            reason: "DrainTimeoutExceeded".into(),
                            message: format!(
                                "{} task(s) still running {where_} after drainTimeout {} ({}); \
                                 waiting (onDrainTimeout: Wait). Set onDrainTimeout: CancelTasks \
                                 to cancel them",
                                ids.len(),
                                o.spec.upgrade.drain_timeout,
                                ids.join(", ")
                            ),
                            poll: true,
                        };
                    }
                }
            }
            Outcome::Wait {
                reason: "WaitingForTasks".into(),
                message: format!(
                    "waiting for {} running task(s) {where_}: {}",
                    ids.len(),
                    ids.join(", ")
                ),
                poll: true,
            }
        }
        "replace" => match pod(&node_name) {
            Some(p) if !p.terminating => {
                if let Err(held) = safety::check(o, Disruption::ReplacePod { node: &node_name }) {
                    return held_wait(held);
                }
                Outcome::Act(Action::DeletePod(p.name.clone()))
            }
            _ => Outcome::Wait {
                reason: "WaitingForPod".into(),
                message: format!("waiting for the StatefulSet to recreate pod {node_name}"),
                poll: false,
            },
        },
        "wait-ready" => wait_node_ready(o, &node_name, &to_s, elapsed, ready_timeout, false),
        "verify-version" => {
            let reported = state
                .and_then(|s| s.node(&node_name))
                .filter(|n| !n.offline)
                .and_then(|n| n.version.clone());
            if reported.as_deref() == Some(to_s.as_str()) {
                return Outcome::Done;
            }
            if elapsed >= ready_timeout {
                return Outcome::Stop(Stop {
                    reason: reasons::NODE_VERSION_MISMATCH.into(),
                    message: format!(
                        "Octopus reports node {node_name} on {} instead of {to_s} after \
                         nodeReadyTimeout",
                        reported.as_deref().unwrap_or("no version")
                    ),
                    degraded: true,
                    blocks: true,
                });
            }
            Outcome::Wait {
                reason: "VerifyingVersion".into(),
                message: format!(
                    "waiting for Octopus to report node {node_name} on {to_s} (now {})",
                    reported.as_deref().unwrap_or("unknown")
                ),
                poll: true,
            }
        }
        "backup" => backup_step(o, d, up),
        "stop-all" => {
            // Already past it (a kill after start-first, before recording): the template
            // runs the new version and no old pod is left. Never go back to the old one.
            let moved_on = o
                .statefulset
                .as_ref()
                .is_some_and(|s| s.version.as_deref() == Some(to_s.as_str()))
                && o.pods
                    .iter()
                    .all(|p| p.version.as_deref() == Some(to_s.as_str()));
            if moved_on {
                return Outcome::Done;
            }
            let applied = o.statefulset.as_ref().is_some_and(|s| s.replicas == 0);
            if !applied
                && !is_return(up)
                && let Err(held) = safety::check(o, Disruption::StopAll)
            {
                return held_wait(held);
            }
            if applied && o.pods.is_empty() {
                Outcome::Done
            } else {
                Outcome::Wait {
                    reason: "StoppingNodes".into(),
                    message: format!("waiting for {} node(s) to stop", o.pods.len()),
                    poll: false,
                }
            }
        }
        "start-first" => {
            let applied = o
                .statefulset
                .as_ref()
                .is_some_and(|s| s.replicas >= 1 && s.version.as_deref() == Some(to_s.as_str()));
            if applied {
                Outcome::Done
            } else {
                Outcome::Wait {
                    reason: "StartingFirstNode".into(),
                    message: format!("starting node {}-0 alone on {to_s}", o.name),
                    poll: false,
                }
            }
        }
        "wait-schema" => {
            let first = format!("{}-0", o.name);
            match wait_node_ready(o, &first, &to_s, elapsed, ready_timeout, true) {
                Outcome::Done => {
                    let reported = state
                        .and_then(|s| s.node(&first))
                        .and_then(|n| n.version.clone());
                    if reported.as_deref() == Some(to_s.as_str()) {
                        d.schema_version = Some(max_version(d.schema_version.as_deref(), &to_s));
                        Outcome::Done
                    } else if state.is_none() {
                        octopus_wait(o)
                    } else {
                        Outcome::Wait {
                            reason: "WaitingForSchemaUpgrade".into(),
                            message: format!(
                                "node {first} is ready; waiting for Octopus to report {to_s}"
                            ),
                            poll: true,
                        }
                    }
                }
                other => other,
            }
        }
        "start-rest" => {
            let applied = o.statefulset.as_ref().is_some_and(|s| {
                s.replicas == replicas && s.version.as_deref() == Some(to_s.as_str())
            });
            if applied {
                Outcome::Done
            } else {
                Outcome::Wait {
                    reason: "StartingNodes".into(),
                    message: format!("starting the other {} node(s) on {to_s}", replicas - 1),
                    poll: false,
                }
            }
        }
        "verify" => {
            for ordinal in 0..replicas.max(0) {
                let name = format!("{}-{ordinal}", o.name);
                match wait_node_ready(o, &name, &to_s, elapsed, ready_timeout, false) {
                    Outcome::Done => {}
                    other => return other,
                }
            }
            let Some(s) = state else {
                return octopus_wait(o);
            };
            let behind: Vec<String> = (0..replicas.max(0))
                .map(|i| format!("{}-{i}", o.name))
                .filter(|n| {
                    s.node(n).is_none_or(|node| {
                        node.offline || node.version.as_deref() != Some(to_s.as_str())
                    })
                })
                .collect();
            if behind.is_empty() {
                Outcome::Done
            } else {
                Outcome::Wait {
                    reason: "VerifyingVersion".into(),
                    message: format!(
                        "waiting for Octopus to report {to_s} on {}",
                        behind.join(", ")
                    ),
                    poll: true,
                }
            }
        }
        TENTACLES_STEP => Outcome::Act(Action::QueueTentacleTasks { to: to_s }),
        other => Outcome::Stop(Stop {
            reason: reasons::INVALID_SPEC.into(),
            message: format!("status.upgrade names an unknown step {other:?}"),
            degraded: true,
            blocks: true,
        }),
    }
}

/// The backup step: keep the Master Key, run the backup Job, record it.
fn backup_step(o: &Observed, d: &mut Decision, up: &UpgradeStatus) -> Outcome {
    let backup = o.spec.upgrade.backup.as_ref();
    if backup.and_then(|b| b.skip).unwrap_or(false) {
        return Outcome::Done;
    }
    let recorded = d
        .last_backup
        .as_ref()
        .is_some_and(|b| b.from_version == up.from && b.to_version == up.to);
    if recorded {
        return Outcome::Done;
    }
    if !o.master_key_copy {
        return Outcome::Act(Action::CopyMasterKey {
            from: up.from.clone(),
            to: up.to.clone(),
        });
    }
    match &o.backup_job {
        None => Outcome::Act(Action::CreateBackupJob {
            from: up.from.clone(),
            to: up.to.clone(),
        }),
        Some(job) if job.failed => Outcome::Stop(Stop {
            reason: reasons::BACKUP_FAILED.into(),
            message: format!(
                "backup Job {} failed; nothing was stopped. Read its logs, fix the cause, delete \
                 the Job, and the operator retries",
                job.name
            ),
            degraded: true,
            blocks: true,
        }),
        Some(job) if job.succeeded => {
            d.last_backup = Some(BackupStatus {
                job_name: job.name.clone(),
                from_version: up.from.clone(),
                to_version: up.to.clone(),
                master_key_secret: Some(resources::names::master_key_copy(
                    &o.name, &up.from, &up.to,
                )),
                completed_at: Some(Time(job.completed_at.unwrap_or(o.now))),
            });
            Outcome::Done
        }
        Some(job) => Outcome::Wait {
            reason: "BackingUp".into(),
            message: format!("waiting for backup Job {}", job.name),
            poll: false,
        },
    }
}

/// Waits for `name` to be ready on `version`; a crash loop or the timeout stops.
fn wait_node_ready(
    o: &Observed,
    name: &str,
    version: &str,
    elapsed: SignedDuration,
    timeout: SignedDuration,
    first_after_migration: bool,
) -> Outcome {
    let pod = o.pods.iter().find(|p| p.name == name);
    if let Some(p) = pod
        && p.ready
        && !p.terminating
        && p.version.as_deref() == Some(version)
    {
        return Outcome::Done;
    }
    let crashed = pod.is_some_and(|p| p.crash_looping && p.restarts >= CRASH_RESTARTS);
    if crashed || elapsed >= timeout {
        let why = if crashed {
            format!(
                "keeps crashing ({} restarts)",
                pod.map(|p| p.restarts).unwrap_or_default()
            )
        } else {
            "did not become ready within nodeReadyTimeout".to_string()
        };
        let (reason, message) = if first_after_migration {
            (
                reasons::NODE_FAILED_AFTER_MIGRATION,
                format!(
                    "node {name} {why} on {version} while upgrading the database schema. The \
                     database may be partly migrated: no other node is started. Read the pod's \
                     logs; to go back, restore the backup recorded in status.lastBackup (with \
                     its Master Key copy) and set spec.version to the old version; to retry, \
                     fix the cause and change the spec"
                ),
            )
        } else if crashed {
            (
                reasons::NODE_FAILED_TO_START,
                format!("node {name} {why} on {version}; the operator takes no further step"),
            )
        } else {
            (
                reasons::NODE_NOT_READY,
                format!("node {name} {why} on {version}; the operator takes no further step"),
            )
        };
        return Outcome::Stop(Stop {
            reason: reason.into(),
            message,
            degraded: true,
            blocks: true,
        });
    }
    Outcome::Wait {
        reason: "WaitingForNode".into(),
        message: format!("waiting for node {name} to be ready on {version}"),
        poll: true,
    }
}

fn octopus_wait(o: &Observed) -> Outcome {
    let (reason, message) = match &o.octopus {
        super::model::OctopusView::Unavailable { reason, message } => {
            (reason.clone(), message.clone())
        }
        _ => (
            "OctopusUnavailable".to_string(),
            "no Octopus node is ready to answer the API".to_string(),
        ),
    };
    Outcome::Wait {
        reason,
        message: format!("{message}; the operator never acts blind and retries"),
        poll: true,
    }
}

fn held_wait(held: safety::Held) -> Outcome {
    Outcome::Held {
        reason: format!("WaitingFor{}", held.predicate),
        message: format!("{}: {}", held.predicate, held.message),
    }
}

fn signed(d: kube::core::Duration) -> SignedDuration {
    SignedDuration::try_from(std::time::Duration::from(d)).unwrap_or(SignedDuration::MAX)
}

fn step_label(step: &StepStatus) -> String {
    match &step.node {
        Some(n) => format!("{} {n}", step.action),
        None => step.action.clone(),
    }
}

/// The status record of a planned step: node ordinals become pod names.
fn step_status(cluster: &str, step: Step) -> StepStatus {
    StepStatus {
        action: step.action().to_string(),
        node: step.node().map(|n| format!("{cluster}-{n}")),
        state: PENDING.into(),
    }
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

/// Turns the outcome into conditions.
fn finish(
    o: &Observed,
    mut d: Decision,
    stop: Option<Stop>,
    progress: Option<(String, String)>,
) -> Decision {
    let desired = o.spec.replicas;
    let ready_on_target = o
        .pods
        .iter()
        .filter(|p| p.ready && !p.terminating && p.version.as_deref() == Some(&o.spec.version))
        .count();
    let upgrading = d.upgrade.as_ref().is_some_and(|u| u.finished_at.is_none());
    let all_ready = i32::try_from(ready_on_target).unwrap_or(i32::MAX) >= desired && desired > 0;
    let scaling = o
        .statefulset
        .as_ref()
        .is_some_and(|s| s.replicas != desired)
        || !all_ready;

    let mut conditions = Vec::new();
    let ready = all_ready && !upgrading && stop.is_none();
    conditions.push(CondWant {
        type_: READY,
        status: ready,
        reason: if ready {
            reasons::READY.into()
        } else if upgrading {
            reasons::UPGRADING.into()
        } else if o.statefulset.is_none() {
            reasons::CREATING.into()
        } else {
            reasons::NODES_NOT_READY.into()
        },
        message: format!(
            "{ready_on_target}/{desired} node(s) ready on {}",
            o.spec.version
        ),
    });

    let progressing = match (&progress, &stop) {
        (_, Some(_)) => None,
        (Some(p), None) => Some(p.clone()),
        (None, None) if !o.spec.paused && scaling && o.statefulset.is_some() => Some((
            reasons::NODES_NOT_READY.to_string(),
            format!("waiting for {desired} node(s) to be ready"),
        )),
        (None, None) => None,
    };
    conditions.push(match &progressing {
        Some((reason, message)) => CondWant {
            type_: PROGRESSING,
            status: true,
            reason: reason.clone(),
            message: message.clone(),
        },
        None if o.spec.paused => CondWant {
            type_: PROGRESSING,
            status: false,
            reason: reasons::PAUSED.into(),
            message: match d.upgrade.as_ref().filter(|u| u.finished_at.is_none()) {
                Some(u) => format!(
                    "paused during the upgrade to {} at step {}",
                    u.to,
                    u.step.as_deref().unwrap_or("-")
                ),
                None => "paused".into(),
            },
        },
        None => CondWant {
            type_: PROGRESSING,
            status: false,
            reason: stop
                .as_ref()
                .map(|s| s.reason.clone())
                .unwrap_or_else(|| reasons::IDLE.into()),
            message: stop
                .as_ref()
                .map(|s| s.message.clone())
                .unwrap_or_else(|| "nothing to do".into()),
        },
    });

    // While every node stops and the first one migrates, the API is down on purpose.
    let planned_outage = d.upgrade.as_ref().is_some_and(|u| {
        u.finished_at.is_none()
            && matches!(
                u.step.as_deref(),
                Some("stop-all" | "start-first" | "wait-schema")
            )
    });
    let octopus_trouble = match &o.octopus {
        super::model::OctopusView::Unavailable { reason, message }
            if o.pods.iter().any(|p| p.ready) && !planned_outage =>
        {
            Some((reason.clone(), message.clone()))
        }
        _ => None,
    };
    let degraded = stop
        .as_ref()
        .filter(|s| s.degraded)
        .map(|s| (s.reason.clone(), s.message.clone()))
        .or(octopus_trouble);
    conditions.push(match &degraded {
        Some((reason, message)) => CondWant {
            type_: DEGRADED,
            status: true,
            reason: reason.clone(),
            message: message.clone(),
        },
        None => CondWant {
            type_: DEGRADED,
            status: false,
            reason: reasons::AS_EXPECTED.into(),
            message: "no fault observed".into(),
        },
    });
    let blocked = stop.as_ref().filter(|s| s.blocks);
    conditions.push(match blocked {
        Some(s) => CondWant {
            type_: UPGRADE_BLOCKED,
            status: true,
            reason: s.reason.clone(),
            message: s.message.clone(),
        },
        None => CondWant {
            type_: UPGRADE_BLOCKED,
            status: false,
            reason: reasons::NOT_BLOCKED.into(),
            message: "nothing holds the cluster from its spec".into(),
        },
    });
    conditions.push(CondWant {
        type_: PAUSED,
        status: o.spec.paused,
        reason: if o.spec.paused {
            reasons::PAUSED.into()
        } else {
            reasons::NOT_PAUSED.into()
        },
        message: if o.spec.paused {
            "spec.paused is true: the operator takes no step until it is false".into()
        } else {
            "reconciling".into()
        },
    });
    if let Some(s) = &stop {
        d.stop = Some((s.reason.clone(), s.message.clone()));
    }
    if o.spec.paused {
        d.statefulset = None;
        d.action = None;
        d.requeue = Requeue::Idle;
    }
    d.conditions = conditions;
    d
}

/// The one-word phase for `kubectl get`.
pub fn phase(conditions: &[CondWant]) -> String {
    let get = |t: &str| conditions.iter().find(|c| c.type_ == t);
    for t in [PAUSED, UPGRADE_BLOCKED, DEGRADED, PROGRESSING] {
        if let Some(c) = get(t).filter(|c| c.status) {
            return c.reason.clone();
        }
    }
    match get(READY) {
        Some(c) => c.reason.clone(),
        None => reasons::READY.into(),
    }
}
