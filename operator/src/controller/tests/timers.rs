//! Every node's readiness timer runs from that node's own start. OrderedReady starts the
//! nodes of `start-rest` one by one, so `verify` gives each its own nodeReadyTimeout from
//! when its pod was created (or its turn came), never one timeout for all of them.

use super::fixtures::*;
use super::restarts::*;
use super::sim::*;
use super::walks::*;

/// A schema upgrade of `n` nodes, each taking `start_ticks` ticks (10 s each) to become
/// ready, with a nodeReadyTimeout of one minute.
fn slow_nodes(n: u32, start_ticks: u32) -> Sim {
    let mut sim = stop_the_world_sim(V1, V2, n);
    sim.start_ticks = start_ticks;
    sim.spec.upgrade.node_ready_timeout = minutes(1);
    sim
}

#[test]
fn sixteen_nodes_of_fifty_seconds_each_pass_a_one_minute_timeout() {
    let mut sim = slow_nodes(16, 5);
    sim.run(1000);
    sim.assert_converged(V2);
    // The nodes really took longer together than one timeout.
    let t = &sim.timeline;
    let rest = pos(t, &format!("sts:{V2}@16"));
    let last = pos(t, &format!("pod-ready:octo-15@{V2}"));
    assert!(last > rest);
    let verify_ran = sim.log.iter().filter(|l| l.contains(" verify ")).count();
    assert!(
        verify_ran > 60,
        "verify ran {verify_ran} reconciles of 10 s: more than one timeout"
    );
}

#[test]
fn a_node_that_never_becomes_ready_times_out_from_its_own_start() {
    let mut sim = slow_nodes(4, 2);
    // Node 2 hangs on the new version; nodes 0 and 1 take 20 s each before it.
    let d = sim.run_until(400, |d| {
        d.stop.is_some() || step_of(d).0 == Some(StepKind::Verify)
    });
    assert!(d.stop.is_none(), "{:?}", d.stop);
    sim.broken.insert(V2.into(), Broken::Hang);
    for p in sim.pods.values_mut().filter(|p| p.ordinal >= 2) {
        p.terminating = true;
    }
    let d = sim.run_until(400, |d| d.stop.is_some());
    assert_cond(&d, UPGRADE_BLOCKED, true, "NodeNotReady");
    let message = &cond(&d, UPGRADE_BLOCKED).message;
    assert!(message.contains("octo-"), "{message}");
    let hung = sim
        .pods
        .values()
        .find(|p| !p.ready)
        .expect("the node that never became ready");
    let since = sim.now.duration_since(hung.created_at.expect("stamped"));
    assert!(
        since >= SignedDuration::from_mins(1) && since < SignedDuration::from_secs(80),
        "stopped {since} after {} was created",
        hung.name
    );
}

#[test]
fn slow_nodes_survive_a_kill_at_every_point_of_verify() {
    let setup = || slow_nodes(4, 4);
    for kill in [Kill::BeforeRecord, Kill::AfterApply] {
        let failures = sweep(&setup, kill, V2);
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }
}

#[test]
fn a_slow_return_plan_also_times_each_node_alone() {
    let mut sim = slow_nodes(4, 4);
    sim.crash_on = Some((0, V2.into()));
    sim.run_until(200, |d| d.stop.is_some());
    sim.crash_on = None;
    let job = typed(sim.status.upgrade.as_ref().expect("recorded")).backup_job(NAME);
    sim.change_spec(|s| {
        s.version = V1.into();
        s.upgrade.restored_backup = Some(job);
    });
    sim.run(600);
    assert!(
        sim.pods
            .values()
            .all(|p| p.ready && p.version.as_deref() == Some(V1))
    );
    assert!(
        sim.last.as_ref().is_some_and(|d| d.stop.is_none()),
        "{}",
        sim.story()
    );
}
