//! Evictions (issue 10, item 4): the PodDisruptionBudget the operator owns lets one
//! eviction through while the cluster is steady and none while it has a node out, so
//! `kubectl drain` or the autoscaler can never take a second node; and what happens when
//! a pod disappears mid-step anyway (a `kubectl delete`, a machine lost).

use super::fixtures::*;
use super::sim::*;
use super::walks::*;

#[test]
fn a_steady_cluster_lets_one_eviction_through_and_refuses_the_second() {
    let mut sim = Sim::steady(V1, 3);
    assert_eq!(sim.pdb, Some(Evictions::One));
    assert!(sim.evict(2), "{}", sim.story());
    assert!(
        !sim.evict(1),
        "a second eviction went through\n{}",
        sim.story()
    );
    // The evicted node comes back; then the next one may go.
    sim.run(20);
    sim.assert_converged(V1);
    assert!(sim.evict(1), "{}", sim.story());
}

#[test]
fn a_single_node_can_be_evicted_while_steady() {
    // One node is not highly available: a budget of 0 would hold node drains for good.
    let mut sim = Sim::steady(V1, 1);
    assert_eq!(sim.pdb, Some(Evictions::One));
    assert!(sim.evict(0));
    sim.run(20);
    sim.assert_converged(V1);
}

#[test]
fn a_node_drained_by_hand_in_octopus_closes_the_budget() {
    let mut sim = Sim::steady(V1, 3);
    if let Some(n) = sim.nodes.get_mut("octo-1") {
        n.drained = true;
    }
    sim.step(Kill::Never);
    assert_eq!(sim.pdb, Some(Evictions::None));
    assert!(!sim.evict(2));
    if let Some(n) = sim.nodes.get_mut("octo-1") {
        n.drained = false;
    }
    sim.step(Kill::Never);
    assert_eq!(sim.pdb, Some(Evictions::One));
}

#[test]
fn the_budget_closes_before_the_first_node_of_a_roll_goes_out() {
    let mut sim = rolling_sim(V1, V1_PATCH, 3);
    // The reconcile that records the plan closes the budget; the drain comes after.
    let d = sim.step(Kill::Never);
    assert_eq!(d.action, None, "{d:?}");
    assert_eq!(d.evictions, Some(Evictions::None));
    let d = sim.reconcile(Kill::Never);
    assert_eq!(d.action, Some(drain(2, true)), "{}", sim.story());
    let t = &sim.timeline;
    assert!(pos(t, "pdb:0") < pos(t, "drain:octo-2"));
}

/// An upgrade recorded before the operator owned a budget (an operator upgraded mid-roll)
/// holds its next drain until the budget it reads is closed.
#[test]
fn a_drain_waits_until_the_budget_is_seen_closed() {
    let mut o = steady(V1, 3);
    o.spec.version = V1_PATCH.into();
    o.status.upgrade = upgrade_record(V1, V1_PATCH, 3, 0, t0());
    for seen in [None, Some(Evictions::One)] {
        o.evictions = seen;
        let d = decide(&o);
        assert_eq!(d.action, None, "{seen:?}: {d:?}");
        assert_eq!(d.evictions, Some(Evictions::None));
        assert_cond(&d, PROGRESSING, true, "WaitingForEvictionsBlocked");
        let held = d.upgrade.as_ref().and_then(|u| u.held_by.clone());
        assert_eq!(
            held.map(|h| h.predicate),
            Some("EvictionsBlocked".to_string())
        );
    }
    o.evictions = Some(Evictions::None);
    assert_eq!(decide(&o).action, Some(drain(2, true)));
}

#[test]
fn no_eviction_goes_through_during_a_roll_and_the_budget_reopens_after_it() {
    let mut sim = rolling_sim(V1, V1_PATCH, 3);
    for _ in 0..300 {
        sim.step(Kill::Never);
        if sim.settled() {
            break;
        }
        let upgrading = sim
            .status
            .upgrade
            .as_ref()
            .is_some_and(|u| u.finished_at.is_none());
        if upgrading {
            for ordinal in 0..3 {
                assert!(
                    !sim.evict(ordinal),
                    "evicted octo-{ordinal}\n{}",
                    sim.story()
                );
            }
        }
    }
    sim.assert_converged(V1_PATCH);
    assert!(sim.evictions_refused > 10, "{}", sim.evictions_refused);
    assert_eq!(sim.max_out, 1);
    assert_eq!(sim.pdb, Some(Evictions::One));
}

#[test]
fn the_first_node_migrating_the_schema_cannot_be_evicted() {
    let mut sim = stop_the_world_sim(V1, V2, 3);
    sim.run_until(200, |d| step_of(d).0 == Some(StepKind::WaitSchema));
    let first = sim.pods.get(&0).cloned().expect("the first node runs");
    assert!(!first.ready, "{first:?}");
    // Not ready while it migrates: IfHealthyBudget refuses it with the budget at 0.
    assert!(!sim.evict(0), "{}", sim.story());
    sim.run(200);
    sim.assert_converged(V2);
}

#[test]
fn every_node_stopped_on_purpose_keeps_the_budget_closed() {
    let mut sim = stop_the_world_sim(V1, V2, 3);
    sim.run_until(200, |d| step_of(d).0 == Some(StepKind::StartRest));
    assert_eq!(sim.pdb, Some(Evictions::None));
    for ordinal in 0..3 {
        assert!(!sim.evict(ordinal));
    }
}

/// A pod deleted mid-roll (not evicted: `kubectl delete`, a lost machine) while another
/// node is out comes back on the new template, which is harmless within a schema line;
/// the operator takes no further node out until it is back, and counts its steps done.
#[test]
fn a_pod_lost_mid_roll_comes_back_on_the_new_version_and_no_other_node_goes_out() {
    let mut sim = rolling_sim(V1, V1_PATCH, 3);
    // Right before octo-2, drained and idle, would be replaced.
    let replace = Some(Action::DeletePod("octo-2".into()));
    sim.run_until_due(100, |d| d.action == replace);
    // The loss is the world's doing, not the operator's: the roll's own check is off.
    sim.expect.strategy = None;
    if let Some(p) = sim.pods.get_mut(&0) {
        p.terminating = true;
    }
    sim.tasks
        .retain(|t| t.view.node.as_deref() != Some("octo-0"));
    sim.event("pod-lost:octo-0".into());
    let d = sim.reconcile(Kill::Never);
    assert_eq!(d.action, None, "{d:?}");
    assert_cond(&d, PROGRESSING, true, "WaitingForOtherNodesServing");
    sim.tick();
    sim.run(300);
    sim.assert_converged(V1_PATCH);
    let t = &sim.timeline;
    let back = pos(t, &format!("pod-ready:octo-0@{V1_PATCH}"));
    // octo-2 was drained; its pod goes only once octo-0 serves again.
    assert!(back < pos(t, "pod-deleted:octo-2"), "{}", sim.story());
    // octo-0 came back on the new version: the operator never replaced it.
    assert!(
        !sim.replaced.contains(&"octo-0".to_string()),
        "{:?}",
        sim.replaced
    );
}
