//! Every stop, hold and timeout of a walk, and how each clears.

use super::fixtures::*;
use super::sim::*;
use super::walks::*;

// ------------------------------------------------------------------------------ stops

/// Runs a stop-the-world walk whose first node crash-loops on the new version, until the
/// operator stops.
pub fn failed_migration() -> (Sim, Decision) {
    let mut sim = stop_the_world_sim(V1, V2, 3);
    sim.crash_on = Some((0, V2.into()));
    let d = sim.run_until(100, |d| d.stop.is_some());
    (sim, d)
}

#[test]
fn a_node_failing_after_the_schema_migration_stops_everything() {
    let (mut sim, d) = failed_migration();
    assert_cond(&d, UPGRADE_BLOCKED, true, "NodeFailedAfterMigration");
    assert_cond(&d, DEGRADED, true, "NodeFailedAfterMigration");
    assert_cond(&d, READY, false, "Upgrading");
    assert!(d.action.is_none());
    let message = &cond(&d, UPGRADE_BLOCKED).message;
    for words in ["octo-0", V2, "status.lastBackup", "spec.version"] {
        assert!(message.contains(words), "{message}");
    }
    let up = typed(d.upgrade.as_ref().expect("recorded"));
    assert_eq!(up.stopped_reason, Some(Reason::NodeFailedAfterMigration));
    assert_eq!(up.stopped_generation, Some(sim.generation));
    assert_eq!(up.step, Some(StepKind::WaitSchema));
    // Node 0 alone: no other node was ever started on the new version.
    assert_eq!(sim.pods.keys().copied().collect::<Vec<_>>(), [0]);
    // The stop holds for this generation: nothing is decided, whatever the world does.
    tick_and_hold(&mut sim, "NodeFailedAfterMigration", message);
    sim.assert_clean();
    assert_eq!(sim.pods.keys().copied().collect::<Vec<_>>(), [0]);
    assert!(
        sim.maintenance,
        "maintenance mode stays on while the schema is in doubt"
    );
}

/// Ten reconciles under a stop: no action, no StatefulSet change, the same words.
pub fn tick_and_hold(sim: &mut Sim, reason: &str, message: &str) {
    for _ in 0..10 {
        let before = sim.sts.clone();
        let d = sim.step(Kill::Never);
        assert!(d.action.is_none(), "{d:?}");
        let unchanged = d.statefulset.as_ref().is_none_or(|w| {
            before
                == Some(StatefulSetView {
                    version: Some(w.version.clone()),
                    replicas: w.replicas,
                })
        });
        assert!(unchanged, "{:?} -> {:?}", before, d.statefulset);
        assert_cond(&d, UPGRADE_BLOCKED, true, reason);
        assert_cond(&d, DEGRADED, true, reason);
        assert_eq!(cond(&d, UPGRADE_BLOCKED).message, message);
        assert_eq!(d.stop.as_ref().map(|s| s.0.as_str()), Some(reason));
    }
}

#[test]
fn a_stop_is_looked_at_again_when_the_generation_changes() {
    let (mut sim, _) = failed_migration();
    // A person fixes the cause (e.g. the database firewall); the pod comes up.
    sim.crash_on = None;
    sim.tick();
    // Same generation: still stopped, although the node is fine now.
    let d = sim.step(Kill::Never);
    assert!(d.action.is_none() && d.statefulset.is_none());
    assert_cond(&d, UPGRADE_BLOCKED, true, "NodeFailedAfterMigration");
    // A spec change: the operator looks again and goes on.
    sim.change_spec(|s| s.upgrade.node_ready_timeout = minutes(30));
    let d = sim.step(Kill::Never);
    assert_cond(&d, UPGRADE_BLOCKED, false, "NotBlocked");
    assert!(
        d.upgrade
            .as_ref()
            .is_some_and(|u| u.stopped_reason.is_none())
    );
    sim.run(100);
    sim.assert_converged(V2);
    assert_eq!(sim.status.schema_version.as_deref(), Some(V2));
}

#[test]
fn a_node_still_failing_after_a_spec_change_stops_again_for_the_new_generation() {
    let (mut sim, _) = failed_migration();
    sim.change_spec(|s| s.upgrade.node_ready_timeout = minutes(30));
    // The step timer restarts: a crash within the heartbeat age-out may still be Octopus
    // refusing the migration beside a stale node, so it waits that long again.
    let d = sim.step(Kill::Never);
    assert_cond(&d, PROGRESSING, true, "WaitingForStaleNodes");
    let d = sim.run_until(20, |d| d.stop.is_some());
    assert_cond(&d, UPGRADE_BLOCKED, true, "NodeFailedAfterMigration");
    let up = d.upgrade.as_ref().expect("recorded");
    assert_eq!(up.stopped_generation, Some(sim.generation));
    assert_eq!(sim.pods.keys().copied().collect::<Vec<_>>(), [0]);
}

#[test]
fn lifting_a_stop_restarts_the_step_timer() {
    let (mut sim, _) = failed_migration();
    // An hour later a person fixes the cause, deletes the crash-looping pod and edits the
    // spec to let the operator look again. The new pod is starting, not ready yet.
    sim.now = after(sim.now, 3600);
    sim.crash_on = None;
    if let Some(p) = sim.pods.get_mut(&0) {
        p.terminating = true;
    }
    sim.tick();
    assert!(
        sim.pods
            .get(&0)
            .is_some_and(|p| !p.ready && p.restarts == 0)
    );
    sim.change_spec(|s| s.upgrade.node_ready_timeout = minutes(20));
    let d = sim.step(Kill::Never);
    assert!(
        d.stop.is_none(),
        "a fresh pod gets nodeReadyTimeout to start, got {:?}",
        d.stop
    );
    assert_cond(&d, PROGRESSING, true, "WaitingForNode");
}

#[test]
fn setting_the_old_version_back_after_a_failed_migration_is_followed() {
    let (mut sim, _) = failed_migration();
    // As the message says: restore the backup (outside the operator), then set
    // spec.version to the old version and name the restored backup.
    let job = typed(sim.status.upgrade.as_ref().expect("recorded")).backup_job(NAME);
    sim.change_spec(|s| {
        s.version = V1.into();
        s.upgrade.restored_backup = Some(job);
    });
    let d = sim.step(Kill::Never);
    assert!(
        d.statefulset
            .as_ref()
            .is_none_or(|w| w.version != V2 || w.replicas == 0),
        "the operator still wants {:?} and says {:?}",
        d.statefulset,
        d.stop
    );
    // It brings every node back to the old version and releases Octopus.
    let d = sim.run_until(200, |d| {
        d.upgrade
            .as_ref()
            .is_some_and(|u| u.finished_at.is_some() && u.to == V1)
    });
    assert!(d.stop.is_none(), "{:?}", d.stop);
    assert_eq!(d.statefulset, want(V1, 3));
    assert_eq!(sim.pods.len(), 3);
    assert!(sim.pods.values().all(|p| p.version.as_deref() == Some(V1)));
}

pub fn failed_backup() -> (Sim, Decision) {
    let mut sim = stop_the_world_sim(V1, V2, 3);
    sim.backup_fails = true;
    let d = sim.run_until(100, |d| d.stop.is_some());
    (sim, d)
}

#[test]
fn a_failed_backup_stops_before_anything_stops() {
    let (mut sim, d) = failed_backup();
    assert_cond(&d, UPGRADE_BLOCKED, true, "BackupFailed");
    assert_cond(&d, DEGRADED, true, "BackupFailed");
    assert!(d.action.is_none());
    assert_eq!(d.statefulset, want(V1, 3));
    let message = cond(&d, UPGRADE_BLOCKED).message.clone();
    let up = typed(d.upgrade.as_ref().expect("recorded"));
    assert!(message.contains(&up.backup_job(NAME)), "{message}");
    assert!(d.last_backup.is_none());
    tick_and_hold(&mut sim, "BackupFailed", &message);
    // Every node still runs the old version.
    assert_eq!(sim.pods.len(), 3);
    assert!(
        sim.pods
            .values()
            .all(|p| p.ready && p.version.as_deref() == Some(V1))
    );
    assert_eq!(
        sim.sts,
        Some(StatefulSetView {
            version: Some(V1.into()),
            replicas: 3
        })
    );
    assert!(first_pos(&sim.timeline, "pod-stopping:").is_none());
    sim.assert_clean();
}

#[test]
fn deleting_a_failed_backup_job_retries_the_backup() {
    let (mut sim, _) = failed_backup();
    // As the message says: fix the cause, delete the Job. No spec change.
    sim.backup_fails = false;
    sim.jobs.clear();
    let d = sim.step(Kill::Never);
    let attempt = d.upgrade.as_ref().and_then(|u| u.attempt.clone());
    assert!(attempt.is_some());
    assert_eq!(
        d.action,
        Some(Action::CreateBackupJob {
            from: V1.into(),
            to: V2.into(),
            attempt,
        }),
        "{:?}",
        d.stop
    );
    assert_cond(&d, UPGRADE_BLOCKED, false, "NotBlocked");
    assert_cond(&d, DEGRADED, false, "AsExpected");
    sim.run(200);
    sim.assert_converged(V2);
}

#[test]
fn a_failed_backup_retried_after_a_spec_change_converges() {
    let (mut sim, _) = failed_backup();
    sim.backup_fails = false;
    sim.jobs.clear();
    sim.change_spec(|s| s.upgrade.drain_timeout = minutes(45));
    sim.run(200);
    sim.assert_converged(V2);
}

#[test]
fn octopus_unreachable_during_a_rolling_step_waits_and_never_acts_blind() {
    for (step, node) in [
        (StepKind::Drain, "octo-1"),
        (StepKind::WaitTasks, "octo-1"),
        (StepKind::Replace, "octo-1"),
        // Octopus fails while the pod starts: verify-version must wait for it.
        (StepKind::WaitReady, "octo-1"),
        (StepKind::Undrain, "octo-1"),
    ] {
        let mut sim = rolling_sim(V1, V1_PATCH, 3);
        // Node 1 is busy when its turn comes, so wait-tasks is a step of its own.
        sim.add_task(Some(1), 60);
        sim.run_until_due(300, |d| step_of(d) == (Some(step), Some(node)));
        sim.fault = Some((
            Reason::OctopusUnauthorized,
            "the API key was rejected (401)".into(),
        ));
        for _ in 0..6 {
            let d = sim.step(Kill::Never);
            assert!(d.action.is_none(), "{step}: {:?}", d.action);
            assert_eq!(d.requeue, Requeue::Poll, "{step}");
            assert_cond(&d, DEGRADED, true, "OctopusUnauthorized");
            assert!(cond(&d, PROGRESSING).status, "{step}");
            assert!(d.stop.is_none(), "{step}: a wait, not a stop: {:?}", d.stop);
        }
        let progressing = cond(sim.last.as_ref().expect("decided"), PROGRESSING);
        assert!(
            ["OctopusUnauthorized", "WaitingForOctopusReachable"]
                .contains(&progressing.reason.as_str()),
            "{step}: {progressing:?}"
        );
        // Once Octopus answers again the walk goes on, and nothing unsafe happened.
        sim.fault = None;
        sim.run(300);
        sim.assert_converged(V1_PATCH);
    }
}

#[test]
fn octopus_unreachable_at_maintenance_on_waits() {
    let mut sim = Sim::steady(V1, 3);
    sim.fault = Some((Reason::OctopusServerError, "Octopus answered 503".into()));
    sim.change_spec(|s| {
        s.version = V2.into();
        approve(s, V2);
    });
    sim.expect = Expect::new(Strategy::StopTheWorld, V1, V2, 3);
    // The plan is recorded; its first step then waits for an answer.
    let planned = sim.step(Kill::Never);
    assert_eq!(step_of(&planned), (None, None));
    let d = sim.step(Kill::Never);
    assert!(d.action.is_none());
    assert_eq!(step_of(&d), (Some(StepKind::MaintenanceOn), None));
    assert_cond(&d, PROGRESSING, true, "OctopusServerError");
    assert!(cond(&d, PROGRESSING).message.contains("never acts blind"));
    sim.fault = None;
    sim.run(300);
    sim.assert_converged(V2);
}

/// A rolling walk stopped at node 2's wait-tasks with tasks that never end by themselves,
/// past drainTimeout.
pub fn drain_timed_out(policy: DrainTimeoutPolicy) -> (Sim, Vec<String>) {
    let mut sim = Sim::steady(V1, 3);
    let stuck = sim.add_task(Some(2), FOREVER);
    let cancelling = sim.add_task(Some(2), FOREVER);
    let elsewhere = sim.add_task(Some(1), FOREVER);
    if let Some(t) = sim.tasks.iter_mut().find(|t| t.view.id == cancelling) {
        t.view.cancelling = true;
        t.left = FOREVER;
    }
    sim.change_spec(|s| {
        s.version = V1_PATCH.into();
        s.upgrade.on_drain_timeout = policy;
    });
    sim.expect = Expect::new(Strategy::Rolling, V1, V1_PATCH, 3);
    sim.run_until(10, |d| {
        step_of(d) == (Some(StepKind::WaitTasks), Some("octo-2"))
    });
    sim.now = after(sim.now, 31 * 60);
    (sim, vec![stuck, cancelling, elsewhere])
}

#[test]
fn drain_timeout_with_wait_says_so_and_keeps_waiting() {
    let (sim, ids) = drain_timed_out(DrainTimeoutPolicy::Wait);
    let d = decide(&sim.observe());
    assert!(d.action.is_none());
    assert_cond(&d, PROGRESSING, true, "DrainTimeoutExceeded");
    let message = &cond(&d, PROGRESSING).message;
    assert!(
        message.contains(&ids[0]) && message.contains("CancelTasks"),
        "{message}"
    );
    assert!(
        !message.contains(&ids[2]),
        "a task of another node: {message}"
    );
    assert_eq!(d.requeue, Requeue::Poll);
    // Before the timeout it is a plain wait.
    let mut early = sim.observe();
    early.now = after(early.now, -31 * 60);
    assert_cond(&decide(&early), PROGRESSING, true, "WaitingForTasks");
}

#[test]
fn drain_timeout_with_cancel_tasks_cancels_the_nodes_tasks_not_yet_cancelling() {
    let (mut sim, ids) = drain_timed_out(DrainTimeoutPolicy::CancelTasks);
    let d = sim.reconcile(Kill::Never);
    assert_eq!(d.action, Some(Action::CancelTasks(vec![ids[0].clone()])));
    // Once every task there is cancelling, it waits for them.
    let d = decide(&sim.observe());
    assert!(d.action.is_none(), "{:?}", d.action);
    assert_cond(&d, PROGRESSING, true, "WaitingForTasks");
    // The cancelled tasks end; the roll goes on and the other node's task is untouched.
    sim.tick();
    assert!(
        sim.tasks
            .iter()
            .any(|t| t.view.id == ids[2] && !t.view.cancelling)
    );
    if let Some(t) = sim.tasks.iter_mut().find(|t| t.view.id == ids[2]) {
        t.left = 2;
    }
    sim.run(200);
    sim.assert_converged(V1_PATCH);
}

#[test]
fn drain_timeout_before_a_schema_upgrade_cancels_tasks_cluster_wide() {
    let mut sim = Sim::steady(V1, 2);
    let a = sim.add_task(Some(0), FOREVER);
    let b = sim.add_task(None, FOREVER);
    sim.change_spec(|s| {
        s.version = V2.into();
        approve(s, V2);
        s.upgrade.on_drain_timeout = DrainTimeoutPolicy::CancelTasks;
    });
    sim.expect = Expect::new(Strategy::StopTheWorld, V1, V2, 2);
    sim.run_until(10, |d| step_of(d) == (Some(StepKind::WaitTasks), None));
    sim.now = after(sim.now, 31 * 60);
    let d = sim.reconcile(Kill::Never);
    assert_eq!(d.action, Some(Action::CancelTasks(vec![a, b])));
    sim.tick();
    sim.run(200);
    sim.assert_converged(V2);
}

#[test]
fn a_stopped_upgrade_record_is_kept_while_paused() {
    let (mut sim, _) = failed_migration();
    sim.change_spec(|s| s.paused = true);
    let before = sim.status.upgrade.clone();
    let d = sim.step(Kill::Never);
    assert!(d.action.is_none() && d.statefulset.is_none());
    assert_eq!(d.upgrade, before);
    assert_cond(&d, PAUSED, true, "Paused");
}

#[test]
fn scaling_up_during_a_rolling_upgrade_still_converges() {
    let mut sim = rolling_sim(V1, V1_PATCH, 3);
    sim.run_until(100, |d| {
        step_of(d) == (Some(StepKind::Drain), Some("octo-1"))
    });
    sim.change_spec(|s| s.replicas = 4);
    // The upgrade keeps its three nodes; the fourth comes after it.
    if let Err(e) = sim.try_run(300) {
        panic!("{e}; last: {}", sim.log.last().cloned().unwrap_or_default());
    }
    sim.expect.replicas = 4;
    sim.assert_converged(V1_PATCH);
}

#[test]
fn scaling_during_an_upgrade_never_starts_an_old_version_node() {
    let mut sim = stop_the_world_sim(V1, V2, 3);
    sim.run_until(100, |d| step_of(d).0 == Some(StepKind::WaitSchema));
    sim.change_spec(|s| s.replicas = 5);
    let d = sim.step(Kill::Never);
    // The upgrade runs with the nodes it planned for.
    assert_eq!(d.statefulset, want(V2, 1));
    assert!(sim.pods.values().all(|p| p.version.as_deref() == Some(V2)));
}

#[test]
fn stop_all_stops_nothing_while_a_predicate_holds() {
    // The backup is recorded; the next step stops every node.
    let mut sim = stop_the_world_sim(V1, V2, 3);
    sim.run_until(100, |d| d.last_backup.is_some());
    let mut o = sim.observe();
    // Pretend the previous reconcile had recorded everything up to the backup (and nothing
    // was scaled yet).
    o.statefulset = Some(StatefulSetView {
        version: Some(V1.into()),
        replicas: 3,
    });
    o.pods = (0..3).map(|i| pod(i, V1)).collect();
    let mut up = typed(o.status.upgrade.as_ref().expect("recorded"));
    for s in &mut up.steps {
        if s.kind == StepKind::StopAll {
            s.state = StepState::Pending;
        }
    }
    o.status.upgrade = Some(UpgradeStatus::from(&up));

    let mut unreachable = o.clone();
    unreachable.octopus = unavailable();
    let mut busy = o.clone();
    state_mut(&mut busy)
        .running_tasks
        .push(task("ServerTasks-99", Some(1)));
    let mut failures = Vec::new();
    for (what, o, predicate) in [
        ("Octopus unreachable", unreachable, "OctopusReachable"),
        ("a task runs", busy, "TasksFinished"),
    ] {
        let d = decide(&o);
        let progressing = cond(&d, PROGRESSING);
        if progressing.reason.as_str() != format!("WaitingFor{predicate}") {
            failures.push(format!("{what}: progressing {progressing:?}"));
        }
        // Status names the predicate that holds the step, and what it waits for.
        let held_by = d.upgrade.as_ref().and_then(|u| u.held_by.as_ref());
        if held_by.is_none_or(|h| h.predicate != predicate || h.message.is_empty()) {
            failures.push(format!("{what}: heldBy {held_by:?}"));
        }
        if d.statefulset.as_ref().is_some_and(|w| w.replicas < 3) {
            failures.push(format!(
                "{what}: waits for {predicate} yet wants {:?}",
                d.statefulset
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

// ------------------------------------------------- migration refused beside a stale node

/// The twin's words; Octopus does not publish its own.
const ABORTED: &str = "The database upgrade was aborted because other Octopus Server nodes \
                       are still running: octo-2. Stop all nodes before upgrading.";

/// A stop-the-world walk whose first node exits on the new version with `message`, and a
/// nodeReadyTimeout of two minutes.
fn refused_migration(message: Option<&str>) -> Sim {
    let mut sim = stop_the_world_sim(V1, V2, 3);
    sim.spec.upgrade.node_ready_timeout = minutes(2);
    sim.crash_on = Some((0, V2.into()));
    sim.crash_message = message.map(str::to_string);
    sim
}

/// How long the wait-schema step had run when the operator stopped.
fn wait_schema_elapsed(sim: &Sim) -> SignedDuration {
    let up = sim.status.upgrade.as_ref().expect("recorded");
    assert_eq!(up.step.as_deref(), Some(StepKind::WaitSchema.as_str()));
    let started = up.step_started_at.as_ref().expect("step started");
    sim.now.duration_since(started.0)
}

#[test]
fn an_aborted_migration_beside_a_stale_node_waits_then_runs() {
    let mut sim = refused_migration(Some(ABORTED));
    let d = sim.run_until(100, |d| {
        cond(d, PROGRESSING).reason == Reason::WaitingForStaleNodes
    });
    assert_cond(&d, PROGRESSING, true, "WaitingForStaleNodes");
    assert_cond(&d, DEGRADED, false, "AsExpected");
    assert_cond(&d, UPGRADE_BLOCKED, false, "NotBlocked");
    assert!(d.stop.is_none() && d.action.is_none(), "{d:?}");
    let message = &cond(&d, PROGRESSING).message;
    for words in ["octo-0", V2, "heartbeat", "age out"] {
        assert!(message.contains(words), "{message}");
    }
    // Past the heartbeat age-out, still within age-out + nodeReadyTimeout: it still waits.
    for _ in 0..12 {
        let d = sim.step(Kill::Never);
        assert!(d.stop.is_none(), "{}", sim.story());
    }
    // The stale heartbeat aged out: the next start migrates.
    sim.crash_on = None;
    sim.run(200);
    sim.assert_converged(V2);
    sim.assert_clean();
}

#[test]
fn another_crash_after_the_heartbeat_age_out_is_a_failed_migration() {
    let mut sim = refused_migration(Some("Unhandled exception: login failed for user 'octo'"));
    let d = sim.run_until(100, |d| d.stop.is_some());
    assert_cond(&d, UPGRADE_BLOCKED, true, "NodeFailedAfterMigration");
    assert_cond(&d, DEGRADED, true, "NodeFailedAfterMigration");
    let elapsed = wait_schema_elapsed(&sim);
    assert!(
        elapsed >= HEARTBEAT_AGE_OUT && elapsed < HEARTBEAT_AGE_OUT + SignedDuration::from_secs(20),
        "stopped after {elapsed}"
    );
}

#[test]
fn an_abort_past_the_age_out_and_node_ready_timeout_is_a_failed_migration() {
    let mut sim = refused_migration(Some(ABORTED));
    let d = sim.run_until(100, |d| d.stop.is_some());
    assert_cond(&d, UPGRADE_BLOCKED, true, "NodeFailedAfterMigration");
    assert_cond(&d, DEGRADED, true, "NodeFailedAfterMigration");
    assert!(wait_schema_elapsed(&sim) >= HEARTBEAT_AGE_OUT + SignedDuration::from_mins(2));
    let wait = Reason::WaitingForStaleNodes;
    assert!(!wait.sticky() && !wait.degraded() && !wait.blocks());
}

#[test]
fn the_abort_is_recognised_loosely() {
    let exit = |message: &str| ContainerExit {
        message: Some(message.into()),
        ..ContainerExit::default()
    };
    assert!(exit(ABORTED).aborted_beside_live_nodes());
    assert!(exit("Upgrade ABORTED: other nodes detected").aborted_beside_live_nodes());
    assert!(!exit("The database upgrade failed: timeout").aborted_beside_live_nodes());
    assert!(!ContainerExit::default().aborted_beside_live_nodes());
}
