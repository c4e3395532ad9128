//! The replay on hand-written logs.

use std::time::Duration;

use jiff::Timestamp;

use super::{Mark, Replay, Schema, Tasks};
use crate::twin::{Event, EventKind};

/// A log of `kinds`, one second apart from 1 000 000 000 s, seq from 1.
fn log(kinds: Vec<EventKind>) -> Vec<Event> {
    kinds
        .into_iter()
        .zip(1..)
        .map(|(kind, seq)| Event {
            seq,
            at: at(seq),
            installation: Some("installation-1".into()),
            kind,
        })
        .collect()
}

/// The time of the event with `seq` in [`log`].
fn at(seq: u64) -> Timestamp {
    Timestamp::from_second(1_000_000_000 + i64::try_from(seq).expect("seq")).expect("time")
}

fn running(node: &str, version: &str) -> EventKind {
    EventKind::NodeRunning {
        node: node.into(),
        pod: node.into(),
        version: version.into(),
        drained: false,
    }
}

/// A node's process back up while Octopus still has it drained (as after a drain).
fn running_drained(node: &str, version: &str) -> EventKind {
    EventKind::NodeRunning {
        node: node.into(),
        pod: node.into(),
        version: version.into(),
        drained: true,
    }
}

fn starting(node: &str, version: &str) -> EventKind {
    EventKind::NodeStarting {
        node: node.into(),
        pod: node.into(),
        version: version.into(),
        restart_count: 0,
    }
}

fn stopped(node: &str, version: &str) -> EventKind {
    EventKind::NodeStopped {
        node: node.into(),
        pod: node.into(),
        version: version.into(),
        was_running: true,
    }
}

fn crashed(node: &str, version: &str) -> EventKind {
    EventKind::NodeCrashed {
        node: node.into(),
        pod: node.into(),
        version: version.into(),
        reason: "Error".into(),
        message: "exit 1".into(),
    }
}

fn drained(node: &str) -> EventKind {
    EventKind::NodeDrained { node: node.into() }
}

fn undrained(node: &str) -> EventKind {
    EventKind::NodeUndrained { node: node.into() }
}

fn task(kind: &str, task: &str, node: &str) -> EventKind {
    let (task, name, node) = (task.to_string(), "Deploy".to_string(), node.to_string());
    match kind {
        "started" => EventKind::TaskStarted { task, name, node },
        "finished" => EventKind::TaskFinished { task, name, node },
        "failed" => EventKind::TaskFailed {
            task,
            name,
            node: Some(node),
            error: "boom".into(),
        },
        _ => EventKind::TaskCanceled {
            task,
            name,
            node: Some(node),
        },
    }
}

/// Three nodes on 1.1 rolled to 1.2 one at a time, highest ordinal first: seq 1-3 bring
/// them up, each node then takes 5 events (drain, stop, start, run, undrain).
fn roll() -> Vec<Event> {
    let mut kinds = vec![
        running("n-0", "2024.1.1"),
        running("n-1", "2024.1.1"),
        running("n-2", "2024.1.1"),
    ];
    for node in ["n-2", "n-1", "n-0"] {
        kinds.extend([
            drained(node),
            stopped(node, "2024.1.1"),
            starting(node, "2024.1.2"),
            running_drained(node, "2024.1.2"),
            undrained(node),
        ]);
    }
    log(kinds)
}

#[test]
fn an_empty_log_has_no_node_and_no_happening() {
    let replay = Replay::new(&[]);
    assert_eq!(replay.min_serving(), 0);
    assert!(replay.mixed_versions().is_empty());
    assert_eq!(replay.tasks(), Tasks::default());
    assert_eq!(replay.schema(), Schema::default());
    assert!(replay.drained().is_empty());
    assert!(replay.maintenance_mode().is_empty());
    assert_eq!(replay.first_serving_on("2024.1.1"), None);
    assert_eq!(replay.requests().total, 0);
    assert_eq!(replay.since(Mark::Seq(5)).events().len(), 0);
    assert!(replay.rolling("2024.1.2").is_empty());
    assert_eq!(replay.drain_wait(None, at(1)), Duration::ZERO);
}

#[test]
fn a_roll_keeps_all_but_one_node_serving_on_mixed_versions() {
    let events = roll();
    let replay = Replay::new(&events);
    // Before the first node runs nobody serves.
    assert_eq!(replay.min_serving(), 0);
    let rolled = replay.since(Mark::Seq(3));
    assert_eq!(rolled.min_serving(), 2);
    assert_eq!(rolled.drained(), ["n-2", "n-1", "n-0"]);
    assert_eq!(
        rolled
            .stopped_on("2024.1.1")
            .into_iter()
            .collect::<Vec<_>>(),
        [("n-0", 1), ("n-1", 1), ("n-2", 1)]
    );
    // From n-2 running 1.2 (seq 7) until n-0 stops on 1.1 (seq 15), two versions run;
    // a node starting (seq 11) changes nothing that runs.
    let mixed: Vec<u64> = rolled
        .mixed_versions()
        .iter()
        .filter_map(|m| m.event.map(|e| e.seq))
        .collect();
    assert_eq!(mixed, [7, 8, 9, 10, 12, 13, 14]);
    assert_eq!(rolled.first_serving_on("2024.1.2"), Some(at(8)));
    let end = rolled.nodes_at_end();
    assert_eq!(end.serving_on("2024.1.2"), 3);
    assert_eq!(
        end.running_versions().into_iter().collect::<Vec<_>>(),
        ["2024.1.2"]
    );
}

#[test]
fn a_span_carries_in_the_nodes_as_they_stood_and_ends_at_its_mark() {
    let events = roll();
    // After n-2 was drained (seq 4) only two serve; the span starts there.
    let replay = Replay::new(&events).since(Mark::At(at(4)));
    assert_eq!(replay.moments()[0].nodes.serving(), 2);
    assert_eq!(replay.events().first().map(|e| e.seq), Some(5));
    // Until n-2 serves again: n-1 is never drained inside it.
    let first_node = replay.until(Mark::Seq(8));
    assert_eq!(first_node.drained(), Vec::<&str>::new());
    assert_eq!(first_node.min_serving(), 2);
    assert_eq!(first_node.nodes_at_end().serving(), 3);
    // Time and sequence marks cut at the same place.
    assert_eq!(
        Replay::new(&events).since(Mark::Seq(4)).events(),
        replay.events()
    );
}

#[test]
fn a_restarting_node_dips_serving_but_is_neither_replaced_nor_mixed() {
    let events = log(vec![
        running("n-0", "2024.1.1"),
        running("n-1", "2024.1.1"),
        crashed("n-1", "2024.1.1"),
        starting("n-1", "2024.1.1"),
        running("n-1", "2024.1.1"),
    ]);
    let replay = Replay::new(&events).since(Mark::Seq(2));
    assert_eq!(replay.min_serving(), 1);
    assert!(replay.mixed_versions().is_empty());
    assert!(replay.stopped_on("2024.1.1").is_empty());
    assert_eq!(replay.nodes_at_end().serving(), 2);
}

#[test]
fn two_versions_are_mixed_whatever_their_order_and_drained_nodes_count() {
    // A newer node first, then an older one: a downgrade in flight. A drained node still
    // runs, so it still mixes.
    let events = log(vec![
        running("n-1", "2024.2.50"),
        drained("n-1"),
        running("n-0", "2024.1.100"),
        stopped("n-1", "2024.2.50"),
    ]);
    let replay = Replay::new(&events);
    let mixed = replay.mixed_versions();
    assert_eq!(mixed.len(), 1);
    assert_eq!(mixed[0].event.map(|e| e.seq), Some(3));
    assert_eq!(
        mixed[0]
            .nodes
            .running_versions()
            .into_iter()
            .collect::<Vec<_>>(),
        ["2024.1.100", "2024.2.50"]
    );
    assert_eq!(replay.min_serving(), 0);
}

#[test]
fn events_about_unknown_nodes_invent_none() {
    let events = log(vec![drained("ghost"), stopped("ghost", "2024.1.1")]);
    let replay = Replay::new(&events);
    assert!(replay.nodes_at_end().get("ghost").is_none());
    assert_eq!(replay.stopped_on("2024.1.1").get("ghost"), Some(&1));
    assert_eq!(replay.drained(), ["ghost"]);
}

#[test]
fn tasks_schema_and_maintenance_mode_are_counted_in_the_span() {
    let events = log(vec![
        task("started", "t-1", "n-0"),
        task("failed", "t-1", "n-0"),
        EventKind::MaintenanceModeOn,
        task("started", "t-2", "n-0"),
        task("finished", "t-2", "n-0"),
        task("canceled", "t-3", "n-0"),
        EventKind::TaskRefused {
            name: "Deploy".into(),
            reason: "maintenance mode".into(),
        },
        EventKind::SchemaMigrated {
            node: "n-0".into(),
            from: Some("2024.1".into()),
            to: "2024.2".into(),
        },
        EventKind::SchemaViolation {
            node: "n-1".into(),
            node_version: "2024.1.1".into(),
            schema: "2024.2".into(),
        },
        EventKind::MaintenanceModeOff,
    ]);
    let replay = Replay::new(&events);
    assert_eq!(
        replay.tasks(),
        Tasks {
            started: 2,
            finished: 1,
            failed: 1,
            canceled: 1,
            refused: 1,
        }
    );
    assert_eq!(
        replay.schema(),
        Schema {
            migrated: 1,
            violations: 1,
            aborted: 0,
            rolled_back: 0,
        }
    );
    assert_eq!(replay.maintenance_mode(), [(at(3), true), (at(10), false)]);
    let later = replay.since(Mark::Seq(2));
    assert_eq!(later.tasks().failed, 0);
    assert_eq!(later.tasks().started, 1);
}

#[test]
fn requests_are_counted_by_route_writes_and_errors() {
    let request = |method: &str, status| EventKind::HttpRequest {
        method: method.into(),
        route: "/api/octopusservernodes/{id}".into(),
        status,
        service: "ns/octo".into(),
        node: None,
    };
    let events = log(vec![
        request("GET", 200),
        request("PUT", 200),
        request("GET", 401),
    ]);
    let r = Replay::new(&events).requests();
    assert_eq!((r.total, r.writes, r.errors), (3, 1, 1));
    assert_eq!(r.by_route.get("GET /api/octopusservernodes/{id}"), Some(&2));
}

#[test]
fn a_roll_times_each_node_and_the_tasks_that_held_its_drain() {
    // t-1 started on n-2 before the span and ends 2 s after n-2 is drained.
    let mut kinds = vec![
        running("n-0", "2024.1.1"),
        running("n-1", "2024.1.1"),
        running("n-2", "2024.1.1"),
        task("started", "t-1", "n-2"),
        drained("n-2"),
        task("started", "t-2", "n-1"),
        task("finished", "t-1", "n-2"),
        stopped("n-2", "2024.1.1"),
        starting("n-2", "2024.1.2"),
        running("n-2", "2024.1.2"),
        undrained("n-2"),
    ];
    kinds.push(task("finished", "t-2", "n-1"));
    let events = log(kinds);
    let nodes = Replay::new(&events).since(Mark::Seq(4)).rolling("2024.1.2");
    assert_eq!(nodes.len(), 1);
    let n = &nodes[0];
    assert_eq!(n.node, "n-2");
    assert_eq!(n.drained, at(5));
    assert_eq!(n.drain_wait, Duration::from_secs(2));
    assert_eq!(n.tasks_done(), at(7));
    assert_eq!((n.stopped, n.starting), (Some(at(8)), Some(at(9))));
    assert_eq!(n.start_delay(), Duration::from_secs(1));
    assert_eq!(n.undrained, Some(at(11)));
}

#[test]
fn stop_the_world_milestones_follow_the_log() {
    let events = log(vec![
        running("n-0", "2024.1.1"),
        running("n-1", "2024.1.1"),
        EventKind::MaintenanceModeOn,
        drained("n-0"),
        drained("n-1"),
        stopped("n-1", "2024.1.1"),
        stopped("n-0", "2024.1.1"),
        starting("n-0", "2024.2.1"),
        EventKind::SchemaMigrationStarted {
            node: "n-0".into(),
            from: Some("2024.1".into()),
            to: "2024.2".into(),
        },
        EventKind::SchemaMigrated {
            node: "n-0".into(),
            from: Some("2024.1".into()),
            to: "2024.2".into(),
        },
        running("n-0", "2024.2.1"),
        starting("n-1", "2024.2.1"),
        running("n-1", "2024.2.1"),
        EventKind::MaintenanceModeOff,
    ]);
    let replay = Replay::new(&events).since(Mark::Seq(2));
    let stw = replay.stop_the_world("2024.2.1");
    assert_eq!(stw.maintenance_on, Some(at(3)));
    assert_eq!(stw.all_drained, Some(at(5)));
    assert_eq!(
        (stw.first_stop, stw.all_stopped),
        (Some(at(6)), Some(at(7)))
    );
    assert_eq!(stw.migration(), Duration::from_secs(1));
    assert_eq!(stw.starts.len(), 2);
    // n-0: 3 s from starting to running, 1 s of it the migration; n-1: 1 s.
    assert_eq!(stw.start_delays(), Duration::from_secs(3));
    assert_eq!(stw.first_serving_new, Some(at(11)));
    assert_eq!(stw.maintenance_off, Some(at(14)));
    assert!(replay.mixed_versions().is_empty());
    assert_eq!(replay.min_serving(), 0);
}
