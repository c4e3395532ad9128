//! A patch roll whose node cannot start (crash loop, image pull, container config) stops
//! within seconds, and a new target of the same schema line re-plans the roll at once:
//! back to the old patch or forward to a fixed one, the failed node first, never a second
//! node out. A target on another schema line still waits for the roll, as before.

use super::fixtures::*;
use super::restarts::*;
use super::sim::*;
use super::walks::*;

/// A patch of [`V1`] that fixes a broken [`V1_PATCH`].
const V1_FIXED: &str = "2024.1.30";

/// The ways a node cannot start on a broken patch.
const FAILURES: [Broken; 3] = [
    Broken::Crash,
    Broken::Start(StartFailure::ImagePull),
    Broken::Start(StartFailure::ContainerConfig),
];

/// The reason each way stops with.
fn stop_reason(how: Broken) -> Reason {
    match how {
        Broken::Start(StartFailure::ImagePull) => Reason::NodeImagePullFailed,
        Broken::Start(StartFailure::ContainerConfig) => Reason::NodeContainerConfigFailed,
        Broken::Crash | Broken::Hang => Reason::NodeFailedToStart,
    }
}

/// The roll of [`V1`] -> [`V1_PATCH`] on `n` nodes whose pods cannot start on the patch,
/// run until the operator stops.
fn broken_roll(n: u32, how: Broken) -> (Sim, Decision) {
    let mut sim = rolling_sim(V1, V1_PATCH, n);
    sim.broken.insert(V1_PATCH.into(), how);
    let d = sim.run_until(200, |d| d.stop.is_some());
    (sim, d)
}

/// Only `node` was ever drained or replaced.
fn only_out(sim: &Sim, node: &str) {
    for e in &sim.timeline {
        let other = ["drain:", "pod-deleted:"]
            .iter()
            .any(|verb| e.starts_with(verb) && !e.ends_with(node));
        assert!(!other, "{e}: another node went out\n{}", sim.story());
    }
    assert_eq!(sim.max_out, 1, "{}", sim.story());
}

#[test]
fn a_node_that_cannot_start_on_a_patch_stops_the_roll_within_seconds() {
    for how in FAILURES {
        let (sim, d) = broken_roll(3, how);
        let reason = stop_reason(how);
        assert_cond(&d, UPGRADE_BLOCKED, true, reason.as_str());
        assert_cond(&d, DEGRADED, true, reason.as_str());
        assert!(d.action.is_none(), "{how:?}: {:?}", d.action);
        // Long before nodeReadyTimeout (15 minutes): the kubelet already said why.
        let created = sim.pods[&2].created_at.expect("the sim stamps pods");
        let after = sim.now.duration_since(created);
        assert!(
            after <= SignedDuration::from_secs(40),
            "{how:?}: stopped {after} after the pod was created"
        );
        let message = &cond(&d, UPGRADE_BLOCKED).message;
        for words in ["octo-2", V1_PATCH, "spec.version back to", V1] {
            assert!(message.contains(words), "{how:?}: {message}");
        }
        if let Broken::Start(f) = how {
            let kubelet = waiting_on(f).kubelet_reason;
            assert!(message.contains(&kubelet), "{how:?}: {message}");
            assert!(!reason.sticky(), "the container never ran: the stop clears");
        }
        only_out(&sim, "octo-2");
        sim.assert_clean();
    }
}

#[test]
fn setting_the_version_back_rolls_the_node_that_cannot_start_back() {
    for how in FAILURES {
        let (mut sim, _) = broken_roll(3, how);
        sim.change_spec(|s| s.version = V1.into());
        let d = sim.step(Kill::Never);
        let up = typed(d.upgrade.as_ref().expect("recorded"));
        assert_eq!(
            (up.from.as_str(), up.to.as_str(), up.change.as_str()),
            (V1_PATCH, V1, ChangeKind::PatchDowngrade.as_str()),
            "{how:?}: re-planned at once"
        );
        assert_eq!(up.steps[0].node.as_deref(), Some("octo-2"), "{how:?}");
        assert!(d.stop.is_none(), "{how:?}: {:?}", d.stop);
        sim.run(200);
        sim.assert_converged(V1);
        assert_eq!(sim.replaced, ["octo-2", "octo-2"], "{how:?}");
        only_out(&sim, "octo-2");
    }
}

#[test]
fn a_one_node_cluster_rolls_its_node_back_although_no_node_answers() {
    for how in FAILURES {
        let (mut sim, _) = broken_roll(1, how);
        assert!(matches!(sim.observe().octopus, OctopusView::NoReadyNode));
        sim.change_spec(|s| s.version = V1.into());
        // The new plan is recorded first; its first action follows from the record.
        let d = sim.step(Kill::Never);
        assert!(d.action.is_none() && d.upgrade.as_ref().is_some_and(|u| u.to == V1));
        let d = sim.step(Kill::Never);
        assert_eq!(
            d.action,
            Some(Action::DeletePod("octo-0".into())),
            "{how:?}"
        );
        sim.run(100);
        sim.assert_converged(V1);
        assert_eq!(sim.replaced, ["octo-0", "octo-0"], "{how:?}");
    }
}

#[test]
fn a_fixed_patch_after_a_failed_one_rolls_forward_failed_node_first() {
    for how in FAILURES {
        let (mut sim, _) = broken_roll(3, how);
        sim.change_spec(|s| s.version = V1_FIXED.into());
        sim.run(300);
        sim.assert_converged(V1_FIXED);
        assert_eq!(
            sim.replaced,
            ["octo-2", "octo-2", "octo-1", "octo-0"],
            "{how:?}"
        );
        assert_eq!(sim.max_out, 1);
        let up = sim.status.upgrade.as_ref().expect("recorded");
        assert_eq!((up.from.as_str(), up.to.as_str()), (V1_PATCH, V1_FIXED));
    }
}

#[test]
fn an_image_that_appears_later_lets_the_roll_go_on_without_a_spec_change() {
    let (mut sim, d) = broken_roll(3, Broken::Start(StartFailure::ImagePull));
    assert_cond(&d, UPGRADE_BLOCKED, true, "NodeImagePullFailed");
    // The stop clears by itself and writes nothing new while it holds.
    let before = sim.status.clone();
    sim.step(Kill::Never);
    assert_eq!(
        sim.status.upgrade, before.upgrade,
        "a held stop rewrites status"
    );
    // The tag is pushed: the kubelet's next pull succeeds.
    sim.broken.clear();
    sim.run(300);
    sim.assert_converged(V1_PATCH);
    assert_eq!(sim.replaced, ["octo-2", "octo-1", "octo-0"]);
}

#[test]
fn a_new_patch_target_mid_roll_replans_at_once_from_the_node_in_flight() {
    let mut sim = rolling_sim(V1, V1_PATCH, 3);
    sim.run_until(100, |d| {
        step_of(d) == (Some(StepKind::WaitReady), Some("octo-1"))
    });
    sim.change_spec(|s| s.version = V1_FIXED.into());
    let d = sim.step(Kill::Never);
    let up = typed(d.upgrade.as_ref().expect("recorded"));
    assert_eq!((up.from.as_str(), up.to.as_str()), (V1_PATCH, V1_FIXED));
    assert_eq!(
        up.steps
            .iter()
            .map(|s| s.node.as_deref())
            .take(6)
            .collect::<Vec<_>>(),
        [Some("octo-1"); 6]
    );
    assert!(!cond(&d, PROGRESSING).message.contains("planned once"));
    sim.run(400);
    sim.assert_converged(V1_FIXED);
    assert_eq!(
        sim.replaced,
        ["octo-2", "octo-1", "octo-1", "octo-2", "octo-0"]
    );
    assert_eq!(sim.max_out, 1);
}

#[test]
fn a_schema_line_change_during_a_roll_waits_for_the_roll_to_finish() {
    let mut sim = rolling_sim(V1, V1_PATCH, 3);
    sim.run_until(100, |d| step_of(d).1 == Some("octo-1"));
    sim.change_spec(|s| {
        s.version = V2.into();
        approve(s, V2);
    });
    let d = sim.step(Kill::Never);
    let up = d.upgrade.as_ref().expect("recorded");
    assert_eq!(up.to, V1_PATCH, "the running roll keeps its target");
    assert!(cond(&d, PROGRESSING).message.contains(V2));
    sim.run_until(200, |d| {
        d.upgrade
            .as_ref()
            .is_some_and(|u| u.finished_at.is_some() && u.to == V1_PATCH)
    });
    sim.expect = Expect::new(Strategy::StopTheWorld, V1_PATCH, V2, 3);
    sim.run(400);
    sim.assert_converged(V2);
}

#[test]
fn a_schema_line_change_after_a_failed_patch_start_starts_nothing_new() {
    let (mut sim, _) = broken_roll(3, Broken::Crash);
    sim.change_spec(|s| {
        s.version = V2.into();
        approve(s, V2);
    });
    let d = sim.run_until(20, |d| d.stop.is_some());
    assert_cond(&d, UPGRADE_BLOCKED, true, "NodeFailedToStart");
    for _ in 0..10 {
        let d = sim.step(Kill::Never);
        assert!(d.action.is_none(), "{:?}", d.action);
    }
    assert!(
        sim.pods.values().all(|p| p.version.as_deref() != Some(V2)),
        "{}",
        sim.story()
    );
    assert!(!sim.maintenance);
    only_out(&sim, "octo-2");
}

#[test]
fn a_schema_upgrade_whose_first_node_cannot_pull_stops_at_once_and_can_go_back() {
    let mut sim = stop_the_world_sim(V1, V2, 3);
    sim.broken
        .insert(V2.into(), Broken::Start(StartFailure::ImagePull));
    let d = sim.run_until(200, |d| d.stop.is_some());
    // Still a failed migration (sticky; the way back is the return plan), but at once.
    assert_cond(&d, UPGRADE_BLOCKED, true, "NodeFailedAfterMigration");
    let message = &cond(&d, UPGRADE_BLOCKED).message;
    assert!(message.contains("ImagePullBackOff"), "{message}");
    let created = sim.pods[&0].created_at.expect("stamped");
    assert!(sim.now.duration_since(created) <= SignedDuration::from_secs(20));
    assert_eq!(sim.pods.keys().copied().collect::<Vec<_>>(), [0]);
    sim.assert_clean();
    // The return plan (the walk's invariants are those of the way up: not checked),
    // once the restored backup is named.
    let job = typed(sim.status.upgrade.as_ref().expect("recorded")).backup_job(NAME);
    sim.change_spec(|s| {
        s.version = V1.into();
        s.upgrade.restored_backup = Some(job);
    });
    let d = sim.run_until(200, |d| {
        d.upgrade
            .as_ref()
            .is_some_and(|u| u.finished_at.is_some() && u.to == V1)
    });
    assert!(d.stop.is_none(), "{:?}", d.stop);
    assert!(sim.pods.values().all(|p| p.version.as_deref() == Some(V1)));
}

#[test]
fn after_a_second_broken_patch_the_stop_still_names_the_version_the_others_run() {
    let (mut sim, _) = broken_roll(3, Broken::Crash);
    sim.broken.insert(V1_FIXED.into(), Broken::Crash);
    sim.change_spec(|s| s.version = V1_FIXED.into());
    let d = sim.run_until(100, |d| d.stop.is_some());
    assert_cond(&d, UPGRADE_BLOCKED, true, "NodeFailedToStart");
    let message = &cond(&d, UPGRADE_BLOCKED).message;
    assert!(
        message.contains(&format!(
            "spec.version back to {V1} (the other nodes run it)"
        )),
        "{message}"
    );
    sim.change_spec(|s| s.version = V1.into());
    sim.run(200);
    sim.assert_converged(V1);
    only_out(&sim, "octo-2");
}

/// The roll stopped on a node that cannot start, then spec.version set back to [`V1`].
fn set_back(how: Broken) -> Sim {
    let (mut sim, _) = broken_roll(3, how);
    sim.change_spec(|s| s.version = V1.into());
    sim
}

#[test]
fn rolling_a_failed_node_back_survives_a_kill_at_every_point() {
    for how in [Broken::Crash, Broken::Start(StartFailure::ImagePull)] {
        for kill in [Kill::BeforeRecord, Kill::AfterApply] {
            let failures = sweep(&|| set_back(how), kill, V1);
            assert!(failures.is_empty(), "{how:?}:\n{}", failures.join("\n"));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]

    /// A new patch target at any moment of a roll, healthy or broken, with one kill
    /// anywhere: never a second node out, and the roll ends on the new target.
    #[test]
    fn prop_a_new_patch_target_at_any_moment_of_a_roll_is_safe_and_converges(
        n in 1u32..=4,
        broken in prop::option::of(0..FAILURES.len()),
        at in 0u32..50,
        back in any::<bool>(),
        kill in prop::option::of((0u32..40, any::<bool>())),
    ) {
        let to = if back { V1 } else { V1_FIXED };
        let setup = move || {
            let mut sim = rolling_sim(V1, V1_PATCH, n);
            if let Some(i) = broken {
                sim.broken.insert(V1_PATCH.into(), FAILURES[i]);
            }
            for _ in 0..at {
                sim.step(Kill::Never);
            }
            sim.change_spec(|s| s.version = to.into());
            sim
        };
        match kill {
            None => {
                let mut sim = setup();
                if let Err(e) = sim.try_run(500) {
                    return Err(TestCaseError::fail(format!("{e}\n{}", sim.story())));
                }
                sim.assert_converged(to);
            }
            Some((k, before_record)) => {
                let mode = if before_record { Kill::BeforeRecord } else { Kill::AfterApply };
                if let Err(e) = killed_at(&setup, k, mode, to) {
                    return Err(TestCaseError::fail(e));
                }
            }
        }
    }
}
