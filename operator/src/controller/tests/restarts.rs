//! Restart safety: every walk is killed at every reconcile (between act and record, and
//! between applying the StatefulSet and acting) and must stay safe and converge.

use super::fixtures::*;
use super::sim::*;
use super::walks::*;

// -------------------------------------------------------------------- restart safety

/// Kills the operator once, at reconcile `k` of the walk `setup` builds, then lets it run:
/// every invariant must hold and the walk must converge on `to`.
pub fn killed_at(setup: &dyn Fn() -> Sim, k: u32, kill: Kill, to: &str) -> Result<(), String> {
    let mut sim = setup();
    for _ in 0..k {
        sim.step(Kill::Never);
    }
    sim.step(kill);
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
                "killed at reconcile {k} ({kill:?}): {p}\n    {killed}\n    {}",
                sim.violations.first().cloned().unwrap_or_default()
            ))
        }
    }
}

/// Every point of the walk, killed.
pub fn sweep(setup: &dyn Fn() -> Sim, kill: Kill, to: &str) -> Vec<String> {
    let mut reference = setup();
    reference.run(400);
    reference.assert_converged(to);
    let points = reference.reconciles;
    (0..points)
        .filter_map(|k| killed_at(setup, k, kill, to).err())
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

    // Two schema lines at once.
    let mut sim = Sim::steady(V1, 2);
    if let Some(p) = sim.pods.get_mut(&1) {
        p.version = Some(V2.into());
    }
    sim.check_world("test");
    caught(&sim, "schema lines");
}
