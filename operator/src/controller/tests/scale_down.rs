//! Scale-down (issue 10, item 5): the leaving nodes are drained in Octopus and their tasks
//! waited for (drainTimeout and its policy) before their pods go, and their records are
//! deleted in Octopus after; a version change in the same edit waits for it.

use super::fixtures::*;
use super::restarts::sweep;
use super::sim::*;

/// A steady cluster of `from` nodes asked for `to`, a long task on the highest node.
fn scale_down_sim(from: u32, to: u32) -> Sim {
    let mut sim = Sim::steady(V1, from);
    sim.add_task(Some(from - 1), 5);
    sim.change_spec(|s| s.replicas = i32::try_from(to).expect("small"));
    // The nodes that stay serve throughout: checked at every moment.
    sim.expect = Expect::new(Strategy::Rolling, V1, V1, to);
    sim
}

#[test]
fn scale_down_drains_waits_for_tasks_removes_then_forgets_highest_first() {
    let mut sim = scale_down_sim(3, 1);
    let d = sim.step(Kill::Never);
    let up = d.upgrade.clone().expect("recorded");
    assert_eq!(up.change, "scale-down");
    assert_eq!((up.from.as_str(), up.to.as_str()), (V1, V1));
    assert_eq!(up.replicas, Some(1));
    let labels: Vec<String> = typed(&up).steps.iter().map(PlannedStep::label).collect();
    assert_eq!(
        labels,
        [
            "drain octo-2",
            "drain octo-1",
            "wait-tasks octo-2",
            "wait-tasks octo-1",
            "remove-nodes",
            "forget-node octo-2",
            "forget-node octo-1"
        ]
    );
    // The plan is recorded first, the budget closed; nothing changes yet.
    assert_eq!((d.statefulset.clone(), d.action.clone()), (None, None));
    assert_eq!(d.evictions, Some(Evictions::None));
    // Nothing leaves before it is drained.
    let d = sim.step(Kill::Never);
    assert_eq!(d.statefulset, want(V1, 3));
    sim.run(100);
    sim.assert_converged(V1);
    let t = &sim.timeline;
    let drained = pos(t, "drain:octo-2").max(pos(t, "drain:octo-1"));
    let task_done = pos(t, "task-finished:ServerTasks-1");
    let removed = pos(t, &format!("sts:{V1}@1"));
    assert!(
        drained < task_done && task_done < removed,
        "{}",
        sim.story()
    );
    assert!(pos(t, "pod-gone:octo-2") < pos(t, "node-record-deleted:octo-2"));
    assert!(pos(t, "pod-gone:octo-1") < pos(t, "node-record-deleted:octo-1"));
    // Highest ordinal first.
    assert!(pos(t, "drain:octo-2") < pos(t, "drain:octo-1"));
    assert!(pos(t, "pod-stopping:octo-2") < pos(t, "pod-stopping:octo-1"));
    // No offline node lingers in Octopus.
    assert_eq!(sim.nodes.keys().collect::<Vec<_>>(), ["octo-0"]);
    let up = sim.status.upgrade.as_ref().expect("recorded");
    assert!(up.finished_at.is_some());
}

#[test]
fn scale_down_is_reported_as_scaling_down() {
    let mut sim = scale_down_sim(3, 2);
    let d = sim.run_until(20, |d| d.action.is_some());
    assert_cond(&d, PROGRESSING, true, "ScalingDown");
    let d = sim.run_until(40, |d| step_of(d).0 == Some(StepKind::RemoveNodes));
    assert_eq!(cond(&d, PROGRESSING).reason, Reason::RemovingNodes);
}

#[test]
fn scale_down_past_drain_timeout_cancels_the_tasks_when_told_to() {
    let mut sim = Sim::steady(V1, 2);
    let id = sim.add_task(Some(1), FOREVER);
    sim.change_spec(|s| {
        s.replicas = 1;
        s.upgrade.drain_timeout = minutes(1);
        s.upgrade.on_drain_timeout = DrainTimeoutPolicy::CancelTasks;
    });
    sim.expect = Expect::new(Strategy::Rolling, V1, V1, 1);
    sim.run(60);
    sim.assert_converged(V1);
    let t = &sim.timeline;
    assert!(pos(t, &format!("cancel:{id}")) < pos(t, &format!("sts:{V1}@1")));
}

#[test]
fn scale_down_past_drain_timeout_waits_by_default() {
    let mut sim = Sim::steady(V1, 2);
    sim.add_task(Some(1), FOREVER);
    sim.change_spec(|s| {
        s.replicas = 1;
        s.upgrade.drain_timeout = minutes(1);
    });
    for _ in 0..30 {
        sim.step(Kill::Never);
    }
    sim.assert_clean();
    let d = sim.last.clone().expect("reconciled");
    assert_cond(&d, PROGRESSING, true, "DrainTimeoutExceeded");
    assert_eq!(sim.pods.len(), 2, "a pod went with its task running");
}

#[test]
fn a_leaving_node_that_never_registered_is_removed_without_a_drain() {
    let mut sim = Sim::steady(V1, 3);
    // octo-2 crash-loops: it never registered with Octopus.
    sim.nodes.remove("octo-2");
    if let Some(p) = sim.pods.get_mut(&2) {
        p.ready = false;
        p.crash_looping = true;
    }
    sim.crash_on = Some((2, V1.into()));
    sim.change_spec(|s| s.replicas = 2);
    sim.run(60);
    sim.assert_converged(V1);
    assert!(first_pos(&sim.timeline, "drain:octo-2").is_none());
}

#[test]
fn scale_down_and_a_patch_in_one_edit_scale_down_first() {
    let mut sim = Sim::steady(V1, 3);
    sim.change_spec(|s| {
        s.replicas = 2;
        s.version = V1_PATCH.into();
    });
    sim.run(300);
    sim.assert_converged(V1_PATCH);
    let t = &sim.timeline;
    // The leaving node never ran the new version, and was gone before the roll began.
    assert!(first_pos(t, &format!("pod-created:octo-2@{V1_PATCH}")).is_none());
    let forgotten = pos(t, "node-record-deleted:octo-2");
    assert!(
        forgotten < pos(t, &format!("sts:{V1_PATCH}@2")),
        "{}",
        sim.story()
    );
    assert!(forgotten < pos(t, "drain:octo-1"), "{}", sim.story());
}

#[test]
fn scale_down_and_a_schema_upgrade_in_one_edit_scale_down_first() {
    let mut sim = Sim::steady(V1, 3);
    sim.change_spec(|s| {
        s.replicas = 2;
        s.version = V2.into();
        approve(s, V2);
    });
    sim.run(300);
    sim.assert_converged(V2);
    let t = &sim.timeline;
    assert!(first_pos(t, &format!("pod-created:octo-2@{V2}")).is_none());
    assert!(pos(t, "node-record-deleted:octo-2") < pos(t, "maintenance:on"));
    // The upgrade planned for the nodes that stay.
    let up = sim.status.upgrade.as_ref().expect("recorded");
    assert_eq!((up.to.as_str(), up.replicas), (V2, Some(2)));
}

#[test]
fn a_version_change_during_a_scale_down_waits_for_it() {
    let mut sim = scale_down_sim(3, 2);
    sim.step(Kill::Never);
    sim.change_spec(|s| s.version = V1_PATCH.into());
    let d = sim.step(Kill::Never);
    let message = &cond(&d, PROGRESSING).message;
    assert!(
        message.contains("planned once the scale-down on"),
        "{message}"
    );
    sim.expect.strategy = None;
    sim.run(300);
    sim.assert_converged(V1_PATCH);
    assert!(first_pos(&sim.timeline, &format!("pod-created:octo-2@{V1_PATCH}")).is_none());
}

#[test]
fn a_scale_down_survives_a_kill_between_act_and_record_at_every_point() {
    let failures = sweep(&|| scale_down_sim(3, 1), Kill::BeforeRecord, V1);
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn a_scale_down_survives_a_kill_between_apply_and_act_at_every_point() {
    let failures = sweep(&|| scale_down_sim(3, 1), Kill::AfterApply, V1);
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}
