//! What one recorded step needs now: done, one action, a wait, a hold by a safety
//! predicate, or a stop. One function per [`StepKind`]; [`evaluate`] matches every kind, so
//! a new step without an evaluation does not compile.

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::{Outcome, Stop, max_version, restore, scale_down, signed};
use crate::api::{BackupStatus, DrainTimeoutPolicy};
use crate::controller::model::{
    Action, ContainerWaiting, Decision, Observed, OctopusState, OctopusView, PodView, StartFailure,
};
use crate::controller::reason::Reason;
use crate::controller::safety::{self, Disruption};
use crate::controller::steps::{PlannedStep, StepKind, Upgrade};
use crate::planner::Strategy;

/// Restarts after which a starting node counts as failed rather than slow.
pub const CRASH_RESTARTS: i32 = 3;

/// How long a node killed without a clean shutdown (SIGKILL, eviction without grace, OOM)
/// still looks alive to Octopus: its heartbeat (`LastSeen`) must age out before Octopus
/// counts it offline and runs a database upgrade (refused beside live nodes since
/// 2023.2.9755). Octopus publishes no figure for this; one minute is the value the
/// project's Octopus notes and twin assume. After it, plus nodeReadyTimeout, a first node
/// that still cannot migrate has failed.
pub const HEARTBEAT_AGE_OUT: SignedDuration = SignedDuration::from_secs(60);

/// What a step's evaluation may read.
pub(super) struct StepCx<'a> {
    pub o: &'a Observed,
    pub up: &'a Upgrade,
    pub step: &'a PlannedStep,
    /// The version the upgrade moves to.
    pub to: String,
    /// Nodes the upgrade runs with.
    pub replicas: i32,
    /// How long the step has run.
    pub elapsed: SignedDuration,
}

impl StepCx<'_> {
    pub(super) fn pod(&self, name: &str) -> Option<&PodView> {
        self.o.pods.iter().find(|p| p.name == name)
    }

    /// The node the step acts on (empty for cluster steps).
    pub(super) fn node(&self) -> &str {
        self.step.node.as_deref().unwrap_or_default()
    }

    pub(super) fn state(&self) -> Option<&OctopusState> {
        self.o.octopus.state()
    }

    fn ready_timeout(&self) -> SignedDuration {
        signed(self.o.spec.upgrade.node_ready_timeout)
    }

    /// When the step started.
    fn step_started(&self) -> Timestamp {
        self.o.now.checked_sub(self.elapsed).unwrap_or(self.o.now)
    }
}

/// Evaluates the step in `cx`; may record a backup or a newer schema in `d`.
pub(super) fn evaluate(cx: &StepCx<'_>, d: &mut Decision) -> Outcome {
    let traits = cx.step.kind.traits();
    let replaced = cx.step.node.is_some()
        && cx
            .pod(cx.node())
            .is_some_and(|p| !p.terminating && p.version.as_deref() == Some(cx.to.as_str()));
    // A scale-down does not change the version: a leaving pod on it is not replaced.
    if traits.done_once_replaced && replaced && !cx.up.is_scale_down() {
        return Outcome::Done;
    }
    // A rolled node whose container does not run on another version than the target
    // serves nothing and runs no task: draining it and waiting for its tasks are moot. So
    // a roll moved off a patch that cannot start brings its node back even when no node
    // answers (a one-node cluster).
    if matches!(cx.step.kind, StepKind::Drain | StepKind::WaitTasks) && down_elsewhere(cx) {
        return Outcome::Done;
    }
    // Never act blind.
    if traits.needs_octopus && cx.state().is_none() {
        return octopus_wait(cx.o);
    }
    match cx.step.kind {
        StepKind::MaintenanceOn => maintenance(cx, true),
        StepKind::MaintenanceOff => maintenance(cx, false),
        StepKind::Drain => drain(cx, true),
        StepKind::Undrain => drain(cx, false),
        StepKind::WaitTasks => wait_tasks(cx),
        StepKind::Replace => replace(cx),
        StepKind::WaitReady => wait_node_ready(cx, cx.node(), false, cx.step_started()),
        StepKind::VerifyVersion => verify_version(cx),
        StepKind::Backup => backup(cx, d),
        StepKind::StopAll => stop_all(cx),
        StepKind::StartFirst => start_first(cx),
        StepKind::WaitSchema => wait_schema(cx, d),
        StepKind::StartRest => start_rest(cx),
        StepKind::Verify => verify(cx),
        StepKind::Tentacles => Outcome::Act(Action::QueueTentacleTasks { to: cx.to.clone() }),
        StepKind::RemoveNodes => scale_down::remove_nodes(cx),
        StepKind::ForgetNode => scale_down::forget_node(cx),
    }
}

fn maintenance(cx: &StepCx<'_>, on: bool) -> Outcome {
    if cx.state().is_some_and(|s| s.maintenance == on) {
        Outcome::Done
    } else {
        Outcome::Act(Action::SetMaintenance(on))
    }
}

fn drain(cx: &StepCx<'_>, drained: bool) -> Outcome {
    let name = cx.node();
    let Some(node) = cx.state().and_then(|s| s.node(name)) else {
        if cx.up.is_scale_down() {
            // A leaving node that never registered runs nothing: nothing to drain.
            return Outcome::Done;
        }
        return Outcome::Wait {
            reason: Reason::WaitingForNode,
            message: format!("node {name} is not registered with Octopus yet"),
            poll: true,
        };
    };
    if node.drained == drained {
        return Outcome::Done;
    }
    if drained
        && (cx.up.strategy == Some(Strategy::Rolling) || cx.up.is_scale_down())
        && let Err(held) = safety::check(cx.o, Disruption::TakeNodeOut { node: name })
    {
        return Outcome::Held(held);
    }
    Outcome::Act(Action::SetDrain {
        node_id: node.id.clone(),
        node: name.to_string(),
        drained,
    })
}

fn wait_tasks(cx: &StepCx<'_>) -> Outcome {
    let Some(s) = cx.state() else {
        return octopus_wait(cx.o);
    };
    let name = cx.node();
    let tasks: Vec<_> = if cx.step.node.is_some() {
        s.tasks_on(name).collect()
    } else {
        s.running_tasks.iter().collect()
    };
    if tasks.is_empty() {
        return Outcome::Done;
    }
    let where_ = if cx.step.node.is_some() {
        format!("on node {name}")
    } else {
        "in the cluster".to_string()
    };
    let ids: Vec<String> = tasks.iter().map(|t| t.id.clone()).collect();
    let upgrade = &cx.o.spec.upgrade;
    if cx.elapsed >= signed(upgrade.drain_timeout) {
        match upgrade.on_drain_timeout {
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
                    reason: Reason::DrainTimeoutExceeded,
                    message: format!(
                        "{} task(s) still running {where_} after drainTimeout {} ({}); \
                         waiting (onDrainTimeout: Wait). Set onDrainTimeout: CancelTasks \
                         to cancel them",
                        ids.len(),
                        upgrade.drain_timeout,
                        ids.join(", ")
                    ),
                    poll: true,
                };
            }
        }
    }
    Outcome::Wait {
        reason: Reason::WaitingForTasks,
        message: format!(
            "waiting for {} running task(s) {where_}: {}",
            ids.len(),
            ids.join(", ")
        ),
        poll: true,
    }
}

/// The step's node is in a roll, its pod runs another version than the target and no
/// server process runs in it ([`PodView::is_down`]).
fn down_elsewhere(cx: &StepCx<'_>) -> bool {
    cx.up.strategy == Some(Strategy::Rolling)
        && cx.step.node.is_some()
        && cx
            .pod(cx.node())
            .is_some_and(|p| p.is_down() && p.version.as_deref() != Some(cx.to.as_str()))
}

fn replace(cx: &StepCx<'_>) -> Outcome {
    let name = cx.node();
    match cx.pod(name) {
        Some(p) if !p.terminating => {
            // Replacing a pod that runs nothing takes nothing out of service.
            if !down_elsewhere(cx)
                && let Err(held) = safety::check(cx.o, Disruption::ReplacePod { node: name })
            {
                return Outcome::Held(held);
            }
            Outcome::Act(Action::DeletePod(p.name.clone()))
        }
        _ => Outcome::Wait {
            reason: Reason::WaitingForPod,
            message: format!("waiting for the StatefulSet to recreate pod {name}"),
            poll: false,
        },
    }
}

fn verify_version(cx: &StepCx<'_>) -> Outcome {
    let name = cx.node();
    let to = &cx.to;
    let reported = cx
        .state()
        .and_then(|s| s.node(name))
        .filter(|n| !n.offline)
        .and_then(|n| n.version.clone());
    if reported.as_deref() == Some(to.as_str()) {
        return Outcome::Done;
    }
    if cx.elapsed >= cx.ready_timeout() {
        return Outcome::Stop(Stop::new(
            Reason::NodeVersionMismatch,
            format!(
                "Octopus reports node {name} on {} instead of {to} after nodeReadyTimeout",
                reported.as_deref().unwrap_or("no version")
            ),
        ));
    }
    Outcome::Wait {
        reason: Reason::VerifyingVersion,
        message: format!(
            "waiting for Octopus to report node {name} on {to} (now {})",
            reported.as_deref().unwrap_or("unknown")
        ),
        poll: true,
    }
}

/// Keep the Master Key, run the backup Job, record it: all of this attempt's own. A backup
/// recorded by an earlier attempt of the same versions is not this attempt's: the database
/// has run (and maybe changed) since, and the Job of that attempt has another name.
fn backup(cx: &StepCx<'_>, d: &mut Decision) -> Outcome {
    let (o, up) = (cx.o, cx.up);
    if o.spec.upgrade.backup_skipped() {
        return Outcome::Done;
    }
    let attempt = up.attempt.as_deref();
    let recorded = d
        .last_backup
        .as_ref()
        .is_some_and(|b| b.is_of(&up.from, &up.to, attempt));
    if recorded {
        return Outcome::Done;
    }
    if !o.master_key_copy {
        return Outcome::Act(Action::CopyMasterKey {
            from: up.from.clone(),
            to: up.to.clone(),
            attempt: up.attempt.clone(),
        });
    }
    match &o.backup_job {
        None => Outcome::Act(Action::CreateBackupJob {
            from: up.from.clone(),
            to: up.to.clone(),
            attempt: up.attempt.clone(),
        }),
        Some(job) if job.failed => Outcome::Stop(Stop::new(
            Reason::BackupFailed,
            format!(
                "backup Job {} failed; nothing was stopped. Read its logs, fix the cause, delete \
                 the Job, and the operator retries",
                job.name
            ),
        )),
        Some(job) if job.succeeded => {
            d.last_backup = Some(BackupStatus {
                job_name: job.name.clone(),
                from_version: up.from.clone(),
                to_version: up.to.clone(),
                attempt: up.attempt.clone(),
                master_key_secret: Some(up.master_key_copy(&o.name)),
                completed_at: Some(Time(job.completed_at.unwrap_or(o.now))),
            });
            Outcome::Done
        }
        Some(job) => Outcome::Wait {
            reason: Reason::BackingUp,
            message: format!("waiting for backup Job {}", job.name),
            poll: false,
        },
    }
}

fn stop_all(cx: &StepCx<'_>) -> Outcome {
    let o = cx.o;
    let to = Some(cx.to.as_str());
    // Already past it (a kill after start-first, before recording): the template runs
    // the new version and no old pod is left. Never go back to the old one.
    let moved_on = o
        .statefulset
        .as_ref()
        .is_some_and(|s| s.version.as_deref() == to)
        && o.pods.iter().all(|p| p.version.as_deref() == to);
    if moved_on {
        return Outcome::Done;
    }
    let applied = o.statefulset.as_ref().is_some_and(|s| s.replicas == 0);
    if !applied
        && !cx.up.is_return()
        && let Err(held) = safety::check(o, Disruption::StopAll)
    {
        return Outcome::Held(held);
    }
    if applied && o.pods.is_empty() {
        Outcome::Done
    } else {
        Outcome::Wait {
            reason: Reason::StoppingNodes,
            message: format!("waiting for {} node(s) to stop", o.pods.len()),
            poll: false,
        }
    }
}

fn start_first(cx: &StepCx<'_>) -> Outcome {
    let applied =
        cx.o.statefulset
            .as_ref()
            .is_some_and(|s| s.replicas >= 1 && s.version.as_deref() == Some(cx.to.as_str()));
    if applied {
        Outcome::Done
    } else {
        Outcome::Wait {
            reason: Reason::StartingFirstNode,
            message: format!("starting node {}-0 alone on {}", cx.o.name, cx.to),
            poll: false,
        }
    }
}

fn wait_schema(cx: &StepCx<'_>, d: &mut Decision) -> Outcome {
    let first = format!("{}-0", cx.o.name);
    let to = &cx.to;
    match wait_node_ready(cx, &first, true, cx.step_started()) {
        Outcome::Done => {
            let reported = cx
                .state()
                .and_then(|s| s.node(&first))
                .and_then(|n| n.version.clone());
            if reported.as_deref() == Some(to.as_str()) {
                d.schema_version = Some(max_version(d.schema_version.as_deref(), to));
                Outcome::Done
            } else if cx.state().is_none() {
                octopus_wait(cx.o)
            } else {
                Outcome::Wait {
                    reason: Reason::WaitingForSchemaUpgrade,
                    message: format!("node {first} is ready; waiting for Octopus to report {to}"),
                    poll: true,
                }
            }
        }
        other => other,
    }
}

fn start_rest(cx: &StepCx<'_>) -> Outcome {
    let applied =
        cx.o.statefulset.as_ref().is_some_and(|s| {
            s.replicas == cx.replicas && s.version.as_deref() == Some(cx.to.as_str())
        });
    if applied {
        Outcome::Done
    } else {
        Outcome::Wait {
            reason: Reason::StartingNodes,
            message: format!(
                "starting the other {} node(s) on {}",
                cx.replicas - 1,
                cx.to
            ),
            poll: false,
        }
    }
}

fn verify(cx: &StepCx<'_>) -> Outcome {
    let names: Vec<String> = (0..cx.replicas.max(0))
        .map(|i| format!("{}-{i}", cx.o.name))
        .collect();
    // OrderedReady starts the nodes one by one: each one's turn begins when the one
    // before it became ready, and its timer runs from there, not from this step's start.
    let mut turn = cx.step_started();
    for name in &names {
        match wait_node_ready(cx, name, false, turn) {
            Outcome::Done => {
                let ready_since = cx.pod(name).and_then(|p| p.ready_since);
                turn = ready_since.map_or(turn, |t| t.max(turn));
            }
            other => return other,
        }
    }
    let Some(s) = cx.state() else {
        return octopus_wait(cx.o);
    };
    let to = Some(cx.to.as_str());
    let behind: Vec<&str> = names
        .iter()
        .filter(|n| {
            s.node(n)
                .is_none_or(|node| node.offline || node.version.as_deref() != to)
        })
        .map(String::as_str)
        .collect();
    if behind.is_empty() {
        Outcome::Done
    } else {
        Outcome::Wait {
            reason: Reason::VerifyingVersion,
            message: format!(
                "waiting for Octopus to report {} on {}",
                cx.to,
                behind.join(", ")
            ),
            poll: true,
        }
    }
}

/// Waits for `name` to be ready on the new version; a crash loop, a start that cannot
/// succeed (image, container config) or the timeout stops. The timeout runs per node, from
/// that node's own start ([`PodView::start_clock`]), never from before `turn`, when its turn
/// to start began.
fn wait_node_ready(
    cx: &StepCx<'_>,
    name: &str,
    first_after_migration: bool,
    turn: Timestamp,
) -> Outcome {
    let version = &cx.to;
    let pod = cx.pod(name);
    if let Some(p) = pod
        && p.ready
        && !p.terminating
        && p.version.as_deref() == Some(version.as_str())
    {
        return Outcome::Done;
    }
    // Only this pod, on this version, counts: an old pod's failures belong to no step.
    let attempt = pod.filter(|p| !p.terminating && p.version.as_deref() == Some(version.as_str()));
    let crashed = attempt.is_some_and(|p| p.crash_looping && p.restarts >= CRASH_RESTARTS);
    if let Some(p) = attempt
        && let Some(w) = &p.waiting
        && let Some(failure) = w.failure
    {
        return Outcome::Stop(cannot_start(cx, name, first_after_migration, failure, w));
    }
    if first_after_migration && let Some(wait) = stale_nodes_wait(cx, name, pod) {
        return wait;
    }
    let since = attempt.map_or(turn, |p| p.start_clock(turn));
    if crashed || cx.o.now.duration_since(since) >= cx.ready_timeout() {
        let why = if crashed {
            format!(
                "keeps crashing ({} restarts)",
                pod.map(|p| p.restarts).unwrap_or_default()
            )
        } else {
            "did not become ready within nodeReadyTimeout of its start".to_string()
        };
        let stop = if first_after_migration {
            failed_after_migration(cx, name, &why)
        } else {
            let reason = if crashed {
                Reason::NodeFailedToStart
            } else {
                Reason::NodeNotReady
            };
            Stop::new(
                reason,
                format!(
                    "node {name} {why} on {version}; the operator takes no further step. {}",
                    way_back(cx, name)
                ),
            )
        };
        return Outcome::Stop(stop);
    }
    Outcome::Wait {
        reason: Reason::WaitingForNode,
        message: format!("waiting for node {name} to be ready on {version}"),
        poll: true,
    }
}

fn failed_after_migration(cx: &StepCx<'_>, name: &str, why: &str) -> Stop {
    Stop::new(
        Reason::NodeFailedAfterMigration,
        format!(
            "node {name} {why} on {} while upgrading the database schema. The database may \
             be partly migrated: no other node is started. Read the pod's logs; {}; to retry, \
             fix the cause and change the spec",
            cx.to,
            restore::way_back(cx.o, cx.up)
        ),
    )
}

/// The container of `name` cannot start until something changes: it never ran. After a
/// migration that is still a failed migration (the way back is the return plan);
/// otherwise a stop that clears once the kubelet starts the container.
fn cannot_start(
    cx: &StepCx<'_>,
    name: &str,
    first_after_migration: bool,
    failure: StartFailure,
    waiting: &ContainerWaiting,
) -> Stop {
    let kubelet = match &waiting.message {
        Some(m) if !m.is_empty() => format!("{}: {m}", waiting.kubelet_reason),
        _ => waiting.kubelet_reason.clone(),
    };
    let (reason, what) = match failure {
        StartFailure::ImagePull => (Reason::NodeImagePullFailed, "cannot pull its image"),
        StartFailure::ContainerConfig => (
            Reason::NodeContainerConfigFailed,
            "cannot create its container",
        ),
    };
    let why = format!("{what} ({kubelet})");
    if first_after_migration {
        return failed_after_migration(cx, name, &why);
    }
    Stop::new(
        reason,
        format!(
            "node {name} {why} on {}; its container never ran. The operator takes no \
             further step until it starts. {}",
            cx.to,
            way_back(cx, name)
        ),
    )
}

/// What a person can do about `name`, a node that cannot start on the upgrade's target.
/// In a roll: go back to the version the other nodes serve on (re-planned at once), or on
/// to another patch.
fn way_back(cx: &StepCx<'_>, name: &str) -> String {
    if cx.up.strategy != Some(Strategy::Rolling) {
        return "Read the pod's logs and events, fix the cause, then change the spec".to_string();
    }
    let serving: std::collections::BTreeSet<&str> =
        cx.o.pods
            .iter()
            .filter(|p| p.name != name && p.ready && !p.terminating)
            .filter_map(|p| p.version.as_deref())
            .collect();
    let back = match (serving.len(), serving.first()) {
        (1, Some(v)) => format!("back to {v} (the other nodes run it)"),
        // One node, or the others on several patches: the roll's own start, unless that
        // is where it goes.
        _ if cx.up.from != cx.to => format!("back to {}", cx.up.from),
        _ => "to a patch of the same line that starts".to_string(),
    };
    format!(
        "Set spec.version {back} to roll the node back, or to another patch of the same \
         line to roll there instead; no other node goes out meanwhile"
    )
}

/// After stop-all, the first node's database upgrade is refused while a node killed
/// without a clean shutdown still looks alive to Octopus: a wait, not a failed migration,
/// until its heartbeat has aged out. Recognised by the abort in the pod's last exit, or by
/// any crash within [`HEARTBEAT_AGE_OUT`] (Octopus's words are not published); bounded by
/// the age-out plus nodeReadyTimeout, after which the caller reports the failure.
fn stale_nodes_wait(cx: &StepCx<'_>, name: &str, pod: Option<&PodView>) -> Option<Outcome> {
    let pod = pod?;
    let aborted = pod
        .last_exit
        .as_ref()
        .is_some_and(|e| e.aborted_beside_live_nodes());
    let crashed = pod.restarts > 0 || pod.crash_looping;
    let within = if aborted {
        cx.elapsed < HEARTBEAT_AGE_OUT + cx.ready_timeout()
    } else {
        crashed && cx.elapsed < HEARTBEAT_AGE_OUT
    };
    if !within || pod.ready {
        return None;
    }
    let seen = if aborted {
        "Octopus aborted the database upgrade because other nodes still look alive to it"
    } else {
        "it exited, possibly because other nodes still look alive to Octopus"
    };
    Some(Outcome::Wait {
        reason: Reason::WaitingForStaleNodes,
        message: format!(
            "node {name} has not migrated the database to {}: {seen} (a node stopped without \
             a clean shutdown keeps its heartbeat fresh). The migration runs once the other \
             nodes' heartbeats age out in Octopus (about {}s); the operator waits up to that \
             plus nodeReadyTimeout",
            cx.to,
            HEARTBEAT_AGE_OUT.as_secs()
        ),
        poll: true,
    })
}

/// Octopus gave no answer: wait, saying why.
pub(super) fn octopus_wait(o: &Observed) -> Outcome {
    let (reason, message) = match &o.octopus {
        OctopusView::Unavailable { reason, message } => (*reason, message.clone()),
        _ => (
            Reason::OctopusUnavailable,
            "no Octopus node is ready to answer the API".to_string(),
        ),
    };
    Outcome::Wait {
        reason,
        message: format!("{message}; the operator never acts blind and retries"),
        poll: true,
    }
}
