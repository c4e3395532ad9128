//! Restart safety: every walk is killed at every reconcile (between act and record, and
//! between applying the StatefulSet and acting) and must stay safe and converge.

use super::fixtures::*;
use super::sim::*;
use super::walks::*;

// -------------------------------------------------------------------- restart safety

/// What changes while the operator is down: the spec (a person, a GitOps sync) or the
/// clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// spec.version back to the version the walk started from.
    VersionBack,
    /// The approval withdrawn: spec.upgrade.approvedVersion cleared.
    Unapproved,
    /// Automatic schema upgrades in a maintenance window that is closed now.
    WindowClosed,
    /// spec.paused set.
    Paused,
    /// The clock jumps three hours: past drainTimeout, nodeReadyTimeout and the window.
    ClockJump,
}

impl Change {
    pub const ALL: [Self; 5] = [
        Self::VersionBack,
        Self::Unapproved,
        Self::WindowClosed,
        Self::Paused,
        Self::ClockJump,
    ];

    pub fn apply(self, sim: &mut Sim) {
        let from = sim.expect.from.clone();
        match self {
            Self::VersionBack => sim.change_spec(|s| s.version = from),
            Self::Unapproved => sim.change_spec(|s| s.upgrade.approved_version = None),
            Self::WindowClosed => sim.change_spec(|s| {
                s.upgrade.approved_version = None;
                s.upgrade.schema_upgrades = SchemaUpgradePolicy::Automatic;
                s.upgrade.maintenance_window = Some(MaintenanceWindow {
                    days: vec![Weekday::Sunday],
                    start: "02:00".into(),
                    duration: minutes(60),
                    time_zone: "UTC".into(),
                });
            }),
            Self::Paused => sim.change_spec(|s| s.paused = true),
            Self::ClockJump => sim.now = after(sim.now, 3 * 3600),
        }
    }
}

/// Kills the operator once, at reconcile `k` of the walk `setup` builds, then lets it run:
/// every invariant must hold and the walk must converge on `to`.
pub fn killed_at(setup: &dyn Fn() -> Sim, k: u32, kill: Kill, to: &str) -> Result<(), String> {
    killed_and_changed_at(setup, k, kill, None, to)
}

/// [`killed_at`], and while the operator is down `change` happens; the operator then runs
/// under it for a while (invariants checked at every moment) before a person puts the spec
/// back, which also lifts a stop a timeout caused.
pub fn killed_and_changed_at(
    setup: &dyn Fn() -> Sim,
    k: u32,
    kill: Kill,
    change: Option<Change>,
    to: &str,
) -> Result<(), String> {
    let mut sim = setup();
    for _ in 0..k {
        sim.step(Kill::Never);
    }
    sim.step(kill);
    if let Some(change) = change {
        let wanted = sim.spec.clone();
        change.apply(&mut sim);
        for _ in 0..30 {
            sim.step(Kill::Never);
        }
        sim.change_spec(|s| *s = wanted);
    }
    let settled = sim.try_run(400);
    let problem = match settled {
        Err(e) => Some(e),
        Ok(()) if !sim.violations.is_empty() => Some("unsafe".into()),
        Ok(()) => {
            let fine = sim
                .pods
                .values()
                .all(|p| p.ready && p.version.as_deref() == Some(to))
                && sim.nodes.values().all(|n| !n.drained)
                && !sim.maintenance;
            (!fine).then(|| "settled short of the target".into())
        }
    };
    match problem {
        None => Ok(()),
        Some(p) => {
            let killed = sim
                .log
                .iter()
                .find(|l| l.contains("[killed"))
                .cloned()
                .unwrap_or_default();
            Err(format!(
                "killed at reconcile {k} ({kill:?}, then {change:?}): {p}\n    {killed}\n    {}",
                sim.violations.first().cloned().unwrap_or_default()
            ))
        }
    }
}

/// Every point of the walk, killed.
pub fn sweep(setup: &dyn Fn() -> Sim, kill: Kill, to: &str) -> Vec<String> {
    (0..points(setup, to))
        .filter_map(|k| killed_at(setup, k, kill, to).err())
        .collect()
}

/// The reconciles of the walk without a kill.
fn points(setup: &dyn Fn() -> Sim, to: &str) -> u32 {
    let mut reference = setup();
    reference.run(400);
    reference.assert_converged(to);
    reference.reconciles
}

/// Every point of the walk, killed both ways, then each [`Change`].
pub fn sweep_with_changes(setup: &dyn Fn() -> Sim, to: &str) -> Vec<String> {
    let mut failures = Vec::new();
    for k in 0..points(setup, to) {
        for kill in [Kill::BeforeRecord, Kill::AfterApply] {
            for change in Change::ALL {
                if let Err(e) = killed_and_changed_at(setup, k, kill, Some(change), to) {
                    failures.push(e);
                }
            }
        }
    }
    failures
}

/// Every point of the walk, killed between act and record, then deleted: the cleanup
/// releases whatever Octopus holds.
pub fn deletion_sweep(setup: &dyn Fn() -> Sim, to: &str) -> Vec<String> {
    (0..points(setup, to))
        .filter_map(|k| {
            let mut sim = setup();
            for _ in 0..k {
                sim.step(Kill::Never);
            }
            sim.step(Kill::BeforeRecord);
            sim.delete()
                .map(|held| format!("deleted after a kill at reconcile {k}: {held}"))
        })
        .collect()
}

#[test]
fn a_rolling_upgrade_survives_a_kill_between_act_and_record_at_every_point() {
    let failures = sweep(
        &|| rolling_sim(V1, V1_PATCH, 3),
        Kill::BeforeRecord,
        V1_PATCH,
    );
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn a_rolling_upgrade_survives_a_kill_between_apply_and_act_at_every_point() {
    let failures = sweep(&|| rolling_sim(V1, V1_PATCH, 3), Kill::AfterApply, V1_PATCH);
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn a_schema_upgrade_survives_a_kill_between_apply_and_act_at_every_point() {
    let failures = sweep(&|| stop_the_world_sim(V1, V2, 3), Kill::AfterApply, V2);
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn a_schema_upgrade_survives_a_kill_between_act_and_record_at_every_point() {
    let failures = sweep(&|| stop_the_world_sim(V1, V2, 3), Kill::BeforeRecord, V2);
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

/// Five nodes: the rest start after maintenance mode is lifted, so kills land while the
/// cluster serves on node 0 and the others still join.
#[test]
fn a_five_node_schema_upgrade_survives_a_kill_at_every_point() {
    let setup = || stop_the_world_sim(V1, V2, 5);
    let mut failures = sweep(&setup, Kill::AfterApply, V2);
    failures.extend(sweep(&setup, Kill::BeforeRecord, V2));
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn a_rolling_upgrade_stays_safe_when_the_spec_or_the_clock_changes_after_a_kill() {
    let failures = sweep_with_changes(&|| rolling_sim(V1, V1_PATCH, 3), V1_PATCH);
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn a_schema_upgrade_stays_safe_when_the_spec_or_the_clock_changes_after_a_kill() {
    let failures = sweep_with_changes(&|| stop_the_world_sim(V1, V2, 3), V2);
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn deletion_after_a_kill_at_any_point_releases_octopus() {
    let mut failures = deletion_sweep(&|| rolling_sim(V1, V1_PATCH, 3), V1_PATCH);
    failures.extend(deletion_sweep(&|| stop_the_world_sim(V1, V2, 3), V2));
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn a_kill_right_after_maintenance_on_then_a_withdrawn_approval_keeps_the_record() {
    // The first action of the schema upgrade runs, the operator dies before writing
    // status, and a person withdraws the approval. The plan was saved before the action,
    // so the upgrade it started is carried to its end (maintenance mode off again); and a
    // deletion at that moment releases maintenance mode.
    let mut sim = stop_the_world_sim(V1, V2, 3);
    sim.run_until_due(10, |d| d.action == Some(Action::SetMaintenance(true)));
    let recorded = sim
        .status
        .upgrade
        .clone()
        .expect("plan saved before the action");
    assert!(recorded.step.is_none() && recorded.finished_at.is_none());
    sim.step(Kill::BeforeRecord);
    assert!(sim.maintenance);
    sim.change_spec(|s| s.upgrade.approved_version = None);
    let mut deleted = sim.clone();
    assert_eq!(deleted.delete(), None, "{}", deleted.story());
    sim.run(300);
    sim.assert_converged(V2);
}

#[test]
fn a_kill_after_starting_the_first_node_never_stops_it_again() {
    for operator_down_ticks in [0, 3] {
        let mut sim = stop_the_world_sim(V1, V2, 3);
        sim.run_until_due(100, |d| d.statefulset == want(V2, 1));
        sim.step(Kill::BeforeRecord);
        // The operator is down for a while: node 0 may start and migrate the schema.
        for _ in 0..operator_down_ticks {
            sim.tick();
        }
        let o = sim.observe();
        let d = decide(&o);
        assert!(
            d.statefulset
                .as_ref()
                .is_none_or(|w| w.version == V2 && w.replicas >= 1),
            "down {operator_down_ticks} ticks: node 0 runs {:?} (ready {:?}) and the operator \
             wants {:?}: {}",
            o.pods.first().and_then(|p| p.version.clone()),
            o.pods.first().map(|p| p.ready),
            d.statefulset,
            cond(&d, PROGRESSING).message
        );
    }
}

/// The invariants above must be able to fail: an operator that misbehaves is caught.
#[test]
fn the_simulator_catches_an_unsafe_operator() {
    let caught = |sim: &Sim, words: &str| {
        assert!(
            sim.violations.iter().any(|v| v.contains(words)),
            "not caught: {words}; violations: {:?}",
            sim.violations
        );
    };
    // Replacing a busy node that was never drained.
    let mut sim = rolling_sim(V1, V1_PATCH, 3);
    let o = sim.observe();
    let mut d = decide(&o);
    d.action = Some(Action::DeletePod(pod_name(2)));
    sim.check_decision(&o, &d);
    caught(&sim, "replacing octo-2: drained=false");
    // ... and stopping its task with it.
    sim.perform(&Action::DeletePod(pod_name(2)));
    sim.tick();
    caught(&sim, "stopped while running tasks");

    // Two nodes out of service at once.
    let mut sim = rolling_sim(V1, V1_PATCH, 3);
    sim.perform(&drain(2, true));
    sim.check_world("test");
    assert!(sim.violations.is_empty());
    sim.perform(&drain(1, true));
    sim.check_world("test");
    caught(&sim, "out of service at once");

    // Acting on Octopus without its view.
    let mut sim = rolling_sim(V1, V1_PATCH, 3);
    let mut o = sim.observe();
    o.octopus = unavailable();
    let mut d = decide(&o);
    d.action = Some(drain(2, true));
    sim.check_decision(&o, &d);
    caught(&sim, "acted blind");

    // Stopping every node before maintenance mode and the backup.
    let mut sim = stop_the_world_sim(V1, V2, 3);
    sim.apply_statefulset(&StatefulSetWant {
        version: V1.into(),
        replicas: 0,
    });
    sim.check_world("test");
    caught(&sim, "before maintenance mode is on");
    caught(&sim, "before the backup succeeded");
    caught(&sim, "task(s) run");

    // The new version in the template while old pods run, then back again.
    let mut sim = stop_the_world_sim(V1, V2, 3);
    sim.apply_statefulset(&StatefulSetWant {
        version: V2.into(),
        replicas: 3,
    });
    sim.check_world("test");
    caught(
        &sim,
        "while [\"octo-0\", \"octo-1\", \"octo-2\"] run another version",
    );
    sim.apply_statefulset(&StatefulSetWant {
        version: V1.into(),
        replicas: 3,
    });
    sim.check_world("test");
    caught(&sim, "went back");

    // Lifting maintenance mode while the nodes are stopped on the old version, and once the
    // first new node runs but is still drained (not serving, not verified).
    let mut sim = stop_the_world_sim(V1, V2, 3);
    sim.perform(&Action::SetMaintenance(true));
    sim.apply_statefulset(&StatefulSetWant {
        version: V1.into(),
        replicas: 0,
    });
    sim.perform(&Action::SetMaintenance(false));
    caught(&sim, "while nodes are stopped on 2024.1.10@0");
    let mut sim = stop_the_world_sim(V1, V2, 3);
    sim.run_until(300, |d| {
        step_of(d) == (Some(StepKind::Undrain), Some("octo-0"))
    });
    assert!(sim.violations.is_empty(), "{}", sim.story());
    sim.perform(&drain(0, true));
    sim.perform(&Action::SetMaintenance(false));
    caught(&sim, "before a node serves verified on");

    // Acting before the plan is recorded, and maintenance mode with no record.
    let mut sim = stop_the_world_sim(V1, V2, 3);
    let o = sim.observe();
    let mut d = decide(&o);
    d.action = Some(Action::SetMaintenance(true));
    sim.check_decision(&o, &d);
    caught(&sim, "before its upgrade was recorded");
    sim.perform(&Action::SetMaintenance(true));
    sim.tick();
    caught(
        &sim,
        "maintenance mode on and drained nodes [] with no upgrade record",
    );
    assert!(
        sim.delete().is_some(),
        "deletion released what no record names"
    );

    // Two schema lines at once.
    let mut sim = Sim::steady(V1, 2);
    if let Some(p) = sim.pods.get_mut(&1) {
        p.version = Some(V2.into());
    }
    sim.check_world("test");
    caught(&sim, "schema lines");
}
