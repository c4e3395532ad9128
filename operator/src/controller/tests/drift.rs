//! Drift within a schema line: a pod or the StatefulSet template on another patch of the
//! target's line (an image edited by hand, a pod recreated from an edited template). It is
//! corrected by one ordinary rolling plan, or by applying the template again when every pod
//! already runs the target; then the loop is at a fixed point: no action, no status write,
//! no Event, whatever the number of resyncs.

use super::fixtures::*;
use super::sim::*;

/// Another patch on [`V1`]'s line, above [`V1_PATCH`].
const V1_LATER: &str = "2024.1.30";
const LINE: [&str; 3] = [V1, V1_PATCH, V1_LATER];

fn tentacles() -> TentacleSpec {
    TentacleSpec {
        upgrade_tentacles: true,
        update_calamari: true,
        environment_ids: vec!["Environments-1".into()],
    }
}

/// A steady cluster on `target`, then drifted: pod `i` runs `pods[i]` (and Octopus says
/// so), the template names `template`. Walks must keep one node out at a time.
fn drifted(mut sim: Sim, pods: &[&str], template: &str) -> Sim {
    let target = sim.spec.version.clone();
    for (i, version) in pods.iter().enumerate() {
        let ordinal = u32::try_from(i).expect("small");
        if let Some(p) = sim.pods.get_mut(&ordinal) {
            p.version = Some((*version).into());
        }
        if let Some(n) = sim.nodes.get_mut(&pod_name(ordinal)) {
            n.version = Some((*version).into());
        }
    }
    if let Some(sts) = sim.sts.as_mut() {
        sts.version = Some(template.into());
    }
    let n = u32::try_from(pods.len()).expect("small");
    sim.expect = Expect::new(Strategy::Rolling, &target, &target, n);
    sim
}

/// What `resyncs` more reconciles of a settled cluster did (the world ticking between),
/// once no work runs: status reports each node's running tasks, so a busy cluster is
/// rightly written when they change.
#[derive(Debug, PartialEq, Eq)]
struct Quiet {
    status_writes: u32,
    events: Vec<Reason>,
    actions: u32,
    template_changes: usize,
}

fn after_settling(sim: &mut Sim, resyncs: u32) -> Quiet {
    if let Err(e) = sim.try_run(400) {
        panic!("{e}\n{}", sim.story());
    }
    sim.spawn_every = None;
    for _ in 0..20 {
        if sim.tasks.is_empty() {
            break;
        }
        sim.step(Kill::Never);
    }
    sim.step(Kill::Never);
    let (writes, events, actions) = (sim.status_writes, sim.events.len(), sim.actions);
    let timeline = sim.timeline.len();
    for _ in 0..resyncs {
        sim.step(Kill::Never);
    }
    Quiet {
        status_writes: sim.status_writes - writes,
        events: sim.events[events..].to_vec(),
        actions: sim.actions - actions,
        template_changes: sim.timeline[timeline..]
            .iter()
            .filter(|e| e.starts_with("sts:"))
            .count(),
    }
}

const STILL: Quiet = Quiet {
    status_writes: 0,
    events: Vec::new(),
    actions: 0,
    template_changes: 0,
};

#[test]
fn a_pod_above_the_target_patch_is_rolled_back_once_then_nothing_is_written() {
    // Before: an empty "none" upgrade was created and finished on every reconcile, with
    // its Events, its status write and (with spec.tentacles) Tentacle tasks each time.
    let mut sim = Sim::steady(V1_PATCH, 3);
    sim.change_spec(|s| s.tentacles = Some(tentacles()));
    let mut sim = drifted(sim, &[V1_PATCH, V1_LATER, V1_PATCH], V1_PATCH);
    assert_eq!(after_settling(&mut sim, 10), STILL, "{}", sim.story());
    sim.assert_converged(V1_PATCH);
    assert_eq!(
        sim.replaced,
        ["octo-1"],
        "only the drifted node is replaced"
    );
    let up = sim.status.upgrade.as_ref().expect("an ordinary plan");
    assert_eq!(
        (up.from.as_str(), up.change.as_str(), up.strategy.as_deref()),
        (V1_LATER, "patch-downgrade", Some("rolling"))
    );
    // Drained first, one node out at a time, and no Tentacle tasks: the server version
    // did not change.
    let t = &sim.timeline;
    assert!(pos(t, "drain:octo-1") < pos(t, "pod-deleted:octo-1"));
    assert_eq!(sim.max_out, 1);
    assert_eq!(sim.tentacle_queues, 0);
    let started = sim.events.iter().filter(|r| **r == Reason::UpgradeStarted);
    assert_eq!(started.count(), 1);
}

#[test]
fn a_pod_below_the_target_patch_is_rolled_forward_once_then_nothing_is_written() {
    let mut sim = Sim::steady(V1_PATCH, 3);
    sim.change_spec(|s| s.tentacles = Some(tentacles()));
    let mut sim = drifted(sim, &[V1, V1_PATCH, V1_PATCH], V1_PATCH);
    assert_eq!(after_settling(&mut sim, 10), STILL, "{}", sim.story());
    sim.assert_converged(V1_PATCH);
    assert_eq!(sim.replaced, ["octo-0"]);
    assert_eq!(sim.tentacle_queues, 0);
}

#[test]
fn a_template_on_another_patch_is_applied_again_without_an_upgrade() {
    let mut sim = Sim::steady(V1_PATCH, 3);
    sim.change_spec(|s| s.tentacles = Some(tentacles()));
    let mut sim = drifted(sim, &[V1_PATCH, V1_PATCH, V1_PATCH], V1_LATER);
    let d = sim.step(Kill::Never);
    assert_eq!(d.statefulset, want(V1_PATCH, 3));
    assert!(d.upgrade.is_none() && d.action.is_none(), "{d:?}");
    assert_eq!(after_settling(&mut sim, 10), STILL, "{}", sim.story());
    sim.assert_converged(V1_PATCH);
    assert!(sim.replaced.is_empty() && sim.status.upgrade.is_none());
    assert_eq!(sim.tentacle_queues, 0);
}

#[test]
fn the_tentacle_follow_up_is_queued_once_per_upgrade_that_changes_the_server() {
    let mut sim = Sim::steady(V1, 2);
    sim.change_spec(|s| {
        s.version = V1_PATCH.into();
        s.tentacles = Some(tentacles());
    });
    sim.expect = Expect::new(Strategy::Rolling, V1, V1_PATCH, 2);
    assert_eq!(after_settling(&mut sim, 10), STILL, "{}", sim.story());
    assert_eq!(sim.tentacle_queues, 1);
    // A pod drifts afterwards: corrected, and the follow-up is not queued again.
    let mut sim = drifted(sim, &[V1_LATER, V1_PATCH], V1_PATCH);
    assert_eq!(after_settling(&mut sim, 10), STILL, "{}", sim.story());
    sim.assert_converged(V1_PATCH);
    assert_eq!(sim.tentacle_queues, 1);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// From any drifted state within one schema line (pods and template on any patch of
    /// it, a finished upgrade to the target or none, Tentacle updates on or off, work
    /// arriving), the sequence of reconciles settles on the target by rolling only the
    /// drifted nodes, one at a time, and then reaches a fixed point: further reconciles
    /// write no status, publish no Event and take no action.
    #[test]
    fn prop_drift_reaches_a_fixed_point(
        target in 0..LINE.len(),
        pods in prop::collection::vec(0..LINE.len(), 1..=4),
        template in 0..LINE.len(),
        upgraded_before in any::<bool>(),
        with_tentacles in any::<bool>(),
        spawn_every in prop::option::of(2u32..6),
    ) {
        let target = LINE[target];
        let n = u32::try_from(pods.len()).expect("small");
        let mut sim = if upgraded_before {
            // The cluster came to the target by an upgrade the operator recorded.
            let previous = LINE.iter().find(|v| **v != target).expect("three patches");
            let mut sim = Sim::steady(previous, n);
            sim.change_spec(|s| s.version = target.into());
            sim.expect = Expect::new(Strategy::Rolling, previous, target, n);
            sim.run(400);
            sim
        } else {
            Sim::steady(target, n)
        };
        if with_tentacles {
            sim.change_spec(|s| s.tentacles = Some(tentacles()));
        }
        let (queued_before, replaced_before) = (sim.tentacle_queues, sim.replaced.len());
        let versions: Vec<&str> = pods.iter().map(|i| LINE[*i]).collect();
        let mut sim = drifted(sim, &versions, LINE[template]);
        sim.spawn_every = spawn_every;
        sim.task_ticks = 2;
        let quiet = after_settling(&mut sim, 8);
        prop_assert!(sim.violations.is_empty(), "{}", sim.story());
        prop_assert_eq!(&quiet, &STILL, "{}", sim.story());
        sim.assert_converged(target);
        // Only drifted nodes were replaced, each once.
        let drifted_pods: Vec<String> = versions
            .iter()
            .enumerate()
            .filter(|(_, v)| **v != target)
            .map(|(i, _)| pod_name(u32::try_from(i).expect("small")))
            .collect();
        let mut replaced = sim.replaced[replaced_before..].to_vec();
        replaced.sort();
        prop_assert_eq!(replaced, drifted_pods);
        // Correcting drift never queues the Tentacle follow-up.
        prop_assert_eq!(sim.tentacle_queues, queued_before, "{}", sim.story());
    }
}
