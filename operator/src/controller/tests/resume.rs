//! Status written by the operator before steps and reasons were typed (JSON fixtures in
//! `status/`, produced by these very walks on that code) decodes, matches what today's
//! code writes at the same point of the same walk, and the decision core resumes from it.

use super::fixtures::*;
use super::sim::*;
use super::stops::{failed_migration, tick_and_hold};
use super::walks::{rolling_sim, stop_the_world_sim, tentacles_sim};

/// The fixture, its upgrade record typed.
fn decoded(name: &str) -> OctopusClusterStatus {
    let old = fixture(name);
    if let Some(up) = &old.upgrade {
        typed(up);
    }
    old
}

fn fixture(name: &str) -> OctopusClusterStatus {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/controller/tests/status")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Checks that today's walk wrote the same status as the fixture, then carries on from
/// the fixture's status. The fixtures predate upgrade attempts: today's attempt is left
/// out of the comparison, and the walk resumes from a record without one (its backup is
/// then named as those operators named it).
fn resume_from(sim: &mut Sim, name: &str) {
    let old = decoded(name);
    // Steps compared in one order: since maintenance mode ends after the first node of a
    // schema upgrade, today's plan orders the same steps differently (at the points these
    // fixtures were taken, each step is in the same state).
    let json = |s: &OctopusClusterStatus| {
        let mut s = s.clone();
        if let Some(up) = s.upgrade.as_mut() {
            up.steps
                .sort_by(|a, b| (&a.action, &a.node).cmp(&(&b.action, &b.node)));
        }
        serde_json::to_string_pretty(&s).expect("serialises")
    };
    let mut today = sim.status.clone();
    if let Some(up) = today.upgrade.as_mut() {
        up.attempt = None;
    }
    if let Some(b) = today.last_backup.as_mut() {
        b.attempt = None;
    }
    assert_eq!(
        json(&today),
        json(&old),
        "{name}: today's code writes another status"
    );
    // The world as the earlier operator left it: its backup objects carry no attempt.
    if let Some(up) = sim.status.upgrade.as_ref().map(typed)
        && up.attempt.is_some()
    {
        let legacy = Upgrade {
            attempt: None,
            ..up.clone()
        };
        if sim.master_key_copies.remove(&up.master_key_copy(NAME)) {
            sim.master_key_copies.insert(legacy.master_key_copy(NAME));
        }
        if let Some(mut job) = sim.jobs.remove(&up.backup_job(NAME)) {
            job.name = legacy.backup_job(NAME);
            sim.jobs.insert(job.name.clone(), job);
        }
    }
    sim.status = old;
}

#[test]
fn a_rolling_upgrade_resumes_from_old_status() {
    let mut sim = rolling_sim(V1, V1_PATCH, 3);
    sim.run_until(100, |d| {
        step_of(d) == (Some(StepKind::WaitReady), Some("octo-2"))
    });
    resume_from(&mut sim, "rolling-wait-ready.json");
    sim.run(300);
    sim.assert_converged(V1_PATCH);
    resume_from(&mut sim, "rolling-finished.json");
    sim.run(5);
    sim.assert_converged(V1_PATCH);
}

#[test]
fn a_schema_upgrade_resumes_from_old_status_at_backup_and_at_wait_schema() {
    let mut sim = stop_the_world_sim(V1, V2, 3);
    sim.run_until(100, |d| step_of(d).0 == Some(StepKind::Backup));
    resume_from(&mut sim, "stop-the-world-backup.json");
    sim.run_until(100, |d| step_of(d).0 == Some(StepKind::WaitSchema));
    resume_from(&mut sim, "stop-the-world-wait-schema.json");
    sim.run(300);
    sim.assert_converged(V2);
}

#[test]
fn a_sticky_stop_in_old_status_still_holds() {
    let (mut sim, _) = failed_migration();
    // Today's walk stops later than the one that wrote the fixture (a crash within the
    // heartbeat age-out is first taken for a refused migration), so only the stop is the
    // same: the old record must still hold.
    sim.status = decoded("stopped-node-failed-after-migration.json");
    let message = sim
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == UPGRADE_BLOCKED)
        .map(|c| c.message.clone())
        .expect("recorded");
    tick_and_hold(&mut sim, "NodeFailedAfterMigration", &message);
    sim.assert_clean();
}

#[test]
fn a_pending_tentacles_step_in_old_status_runs_once() {
    let mut sim = tentacles_sim();
    sim.run_until(300, |d| {
        step_of(d) == (Some(StepKind::Undrain), Some("octo-0"))
    });
    resume_from(&mut sim, "rolling-tentacles-pending.json");
    sim.run(300);
    sim.assert_converged(V1_PATCH);
    assert_eq!(sim.tentacle_queues, 1);
}

#[test]
fn an_unknown_step_in_status_stops_with_a_named_reason_and_touches_nothing() {
    let mut o = steady(V1, 3);
    o.spec.version = V1_PATCH.into();
    let mut old = fixture("rolling-wait-ready.json");
    let up = old.upgrade.as_mut().expect("recorded");
    up.steps[5].action = "rollback".into();
    o.status = old.clone();
    let d = decide(&o);
    assert_cond(&d, UPGRADE_BLOCKED, true, "UnknownStep");
    assert_cond(&d, DEGRADED, true, "UnknownStep");
    let message = &cond(&d, UPGRADE_BLOCKED).message;
    for words in ["status.upgrade.steps[5].action", "rollback"] {
        assert!(message.contains(words), "{message}");
    }
    assert!(d.action.is_none() && d.statefulset.is_none(), "{d:?}");
    assert_eq!(d.upgrade, old.upgrade, "the record is kept as it is");
    assert_eq!(d.stop.as_ref().map(|s| s.0), Some(Reason::UnknownStep));
}
