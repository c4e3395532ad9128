//! Rules of the domain model, one test each, with time driven explicitly.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;

use super::*;
use crate::twin::events::EventKind;
use crate::twin::model::task::TaskState;

const DB: &str = "Server=sql;Database=Octopus;User Id=sa;Password=p";

fn t(seconds: i64) -> Timestamp {
    Timestamp::from_second(1_700_000_000 + seconds).unwrap_or(Timestamp::UNIX_EPOCH)
}

fn timing() -> Timing {
    Timing {
        start_delay: Duration::from_secs(1),
        migration_time: Duration::from_secs(2),
        offline_after: Duration::from_secs(60),
        crash_backoff_base: Duration::from_secs(1),
        crash_backoff_max: Duration::from_secs(8),
        cancel_delay: Duration::from_secs(1),
        default_task_cap: 2,
        api_task_duration: Duration::from_secs(10),
    }
}

fn world() -> World {
    let mut w = World::new(timing(), GeneratorConfig::off(), 7, t(0));
    w.apply_service(
        "ns",
        "octo",
        BTreeMap::from([("app".into(), "octo".into())]),
    );
    w
}

fn pod(name: &str, tag: &str) -> PodView {
    PodView {
        namespace: "ns".into(),
        name: name.into(),
        uid: format!("uid-{name}-{tag}"),
        labels: BTreeMap::from([("app".into(), "octo".into())]),
        image: format!("octopusdeploy/octopusdeploy:{tag}"),
        env: Ok(OctopusEnv {
            node_name: name.into(),
            connection_string: Secret::new(DB),
            admin_api_key: Some(Secret::new("API-ADMIN")),
            task_cap: None,
        }),
    }
}

fn inst(w: &World) -> &Installation {
    w.installation(0).expect("installation")
}

fn phase(w: &World, node: &str) -> String {
    inst(w)
        .processes
        .values()
        .find(|p| p.node_name == node)
        .map(|p| snapshot::phase_name(&p.phase).to_string())
        .unwrap_or_else(|| "gone".into())
}

fn count(w: &World, pred: impl Fn(&EventKind) -> bool) -> usize {
    w.log.all().iter().filter(|e| pred(&e.kind)).count()
}

/// Brings up nodes on `tag` one after the other and returns the time they all run.
fn cluster(w: &mut World, names: &[&str], tag: &str) -> i64 {
    let mut now = 0;
    for name in names {
        w.apply_pod(pod(name, tag), t(now));
        now += 10;
        w.advance(t(now));
        assert_eq!(phase(w, name), "Running", "{name}");
    }
    now
}

#[test]
fn fresh_database_takes_the_schema_of_the_first_node() {
    let mut w = world();
    w.apply_pod(pod("octo-0", "2024.1.100"), t(0));
    w.advance(t(1));
    assert_eq!(phase(&w, "octo-0"), "Migrating");
    w.advance(t(2));
    assert_eq!(phase(&w, "octo-0"), "Migrating");
    w.advance(t(3));
    assert_eq!(phase(&w, "octo-0"), "Running");
    let schema = inst(&w).schema.expect("schema");
    assert_eq!(schema.line, (2024, 1));
    assert_eq!(schema.migrated_by.to_string(), "2024.1.100");
    let status = w.pod_status("ns", "octo-0").expect("status");
    assert!(status.ready);
    // The migration finished exactly at start delay + migration time.
    let migrated = w
        .log
        .all()
        .iter()
        .find(|e| matches!(e.kind, EventKind::SchemaMigrated { .. }));
    assert_eq!(migrated.map(|e| e.at), Some(t(3)));
}

#[test]
fn same_schema_line_starts_after_the_start_delay() {
    let mut w = world();
    let now = cluster(&mut w, &["octo-0"], "2024.1.100");
    w.apply_pod(pod("octo-1", "2024.1.200"), t(now));
    w.advance(t(now) + Duration::from_millis(999));
    assert_eq!(phase(&w, "octo-1"), "Starting");
    w.advance(t(now + 1));
    assert_eq!(phase(&w, "octo-1"), "Running");
    assert_eq!(
        count(&w, |k| matches!(k, EventKind::SchemaMigrated { .. })),
        1
    );
}

#[test]
fn newer_minor_migrates_when_alone() {
    let mut w = world();
    let now = cluster(&mut w, &["octo-0"], "2024.1.100");
    w.delete_pod("ns", "octo-0", t(now));
    w.apply_pod(pod("octo-0", "2024.2.50"), t(now));
    w.advance(t(now + 3));
    assert_eq!(phase(&w, "octo-0"), "Running");
    assert_eq!(inst(&w).schema.map(|s| s.line), Some((2024, 2)));
    assert_eq!(
        count(&w, |k| matches!(k, EventKind::SchemaViolation { .. })),
        0
    );
}

#[test]
fn migration_aborts_beside_running_nodes_since_2023_2_9755() {
    let mut w = world();
    let now = cluster(&mut w, &["octo-0", "octo-1"], "2023.2.9000");
    w.delete_pod("ns", "octo-1", t(now));
    w.apply_pod(pod("octo-1", "2023.3.1"), t(now));
    w.advance(t(now + 1));
    assert_eq!(phase(&w, "octo-1"), "CrashLoopBackOff");
    assert_eq!(inst(&w).schema.map(|s| s.line), Some((2023, 2)));
    let aborted = count(
        &w,
        |k| matches!(k, EventKind::SchemaMigrationAborted { running_nodes, .. } if running_nodes == &vec!["octo-0".to_string()]),
    );
    assert_eq!(aborted, 1);
    // Retried with back-off (crashes at +1, +3, +6): restarts counted, still aborting.
    w.advance(t(now + 9));
    let status = w.pod_status("ns", "octo-1").expect("status");
    assert!(!status.ready);
    assert!(status.restart_count >= 2, "{status:?}");
    assert!(
        matches!(status.state, ContainerState::Waiting { ref reason, .. } if reason == "CrashLoopBackOff")
    );
    // Once the other node is stopped the next retry migrates.
    w.delete_pod("ns", "octo-0", t(now + 10));
    w.advance(t(now + 30));
    assert_eq!(phase(&w, "octo-1"), "Running");
    assert_eq!(inst(&w).schema.map(|s| s.line), Some((2023, 3)));
    assert_eq!(
        count(&w, |k| matches!(k, EventKind::SchemaViolation { .. })),
        0
    );
}

fn aborted_migrations(w: &World) -> Vec<Vec<String>> {
    w.log
        .all()
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::SchemaMigrationAborted { running_nodes, .. } => Some(running_nodes.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn cleanly_stopped_nodes_do_not_block_the_migration() {
    let mut w = world();
    let now = cluster(&mut w, &["octo-0", "octo-1"], "2024.1.100");
    w.delete_pod("ns", "octo-0", t(now));
    w.delete_pod("ns", "octo-1", t(now));
    w.apply_pod(pod("octo-0", "2024.2.50"), t(now));
    w.advance(t(now + 4));
    assert!(aborted_migrations(&w).is_empty());
    assert_eq!(phase(&w, "octo-0"), "Running");
    assert_eq!(inst(&w).schema.map(|s| s.line), Some((2024, 2)));
}

#[test]
fn a_killed_node_blocks_the_migration_until_its_heartbeat_ages_out() {
    let mut w = world();
    let now = cluster(&mut w, &["octo-0", "octo-1"], "2024.1.100");
    // octo-1 is killed (grace 0): no process runs, but its row still looks alive.
    w.stop_pod("ns", "octo-1", Shutdown::Killed, t(now));
    w.delete_pod("ns", "octo-0", t(now));
    assert!(inst(&w).processes.is_empty(), "no server process is left");
    w.apply_pod(pod("octo-0", "2024.2.50"), t(now));
    w.advance(t(now + 1));
    assert_eq!(aborted_migrations(&w), vec![vec!["octo-1".to_string()]]);
    assert_eq!(phase(&w, "octo-0"), "CrashLoopBackOff");
    let status = w.pod_status("ns", "octo-0").expect("status");
    let message = status
        .last_termination
        .map(|t| t.message)
        .unwrap_or_default();
    assert!(message.contains("octo-1"), "{message}");
    // Still within offline_after (60 s): every retry aborts, the schema is untouched.
    w.advance(t(now + 50));
    assert_eq!(inst(&w).schema.map(|s| s.line), Some((2024, 1)));
    assert!(aborted_migrations(&w).len() >= 2);
    // Once octo-1 has not been seen for offline_after, the next retry migrates.
    w.advance(t(now + 61 + 8 + 1 + 2));
    assert_eq!(phase(&w, "octo-0"), "Running");
    assert_eq!(inst(&w).schema.map(|s| s.line), Some((2024, 2)));
}

#[test]
fn older_releases_migrate_anyway_and_the_violation_is_recorded() {
    let mut w = world();
    let now = cluster(&mut w, &["octo-0", "octo-1"], "2022.4.100");
    w.delete_pod("ns", "octo-1", t(now));
    w.apply_pod(pod("octo-1", "2023.1.50"), t(now));
    w.advance(t(now + 3));
    assert_eq!(phase(&w, "octo-1"), "Running");
    assert_eq!(phase(&w, "octo-0"), "Running");
    let violations: Vec<_> = w
        .log
        .all()
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::SchemaViolation {
                node,
                node_version,
                schema,
            } => Some((node.clone(), node_version.clone(), schema.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        violations,
        vec![("octo-0".into(), "2022.4.100".into(), "2023.1".into())]
    );
    assert!(inst(&w).processes.values().any(|p| p.violating_schema));
}

#[test]
fn a_node_older_than_the_schema_fails_to_start() {
    let mut w = world();
    let now = cluster(&mut w, &["octo-0"], "2024.2.10");
    w.apply_pod(pod("octo-1", "2024.1.999"), t(now));
    w.advance(t(now + 1));
    assert_eq!(phase(&w, "octo-1"), "CrashLoopBackOff");
    assert_eq!(
        count(&w, |k| matches!(k, EventKind::SchemaNewerThanNode { .. })),
        1
    );
    w.advance(t(now + 20));
    let status = w.pod_status("ns", "octo-1").expect("status");
    assert!(!status.ready && status.restart_count >= 3);
    let term = status.last_termination.expect("terminated before");
    assert!(term.message.contains("newer"), "{}", term.message);
    assert_eq!(inst(&w).schema.map(|s| s.line), Some((2024, 2)));
}

#[test]
fn patch_rollback_within_the_schema_line_is_fine() {
    let mut w = world();
    let now = cluster(&mut w, &["octo-0"], "2024.1.200");
    w.delete_pod("ns", "octo-0", t(now));
    w.apply_pod(pod("octo-0", "2024.1.100"), t(now));
    w.advance(t(now + 1));
    assert_eq!(phase(&w, "octo-0"), "Running");
}

#[test]
fn unparsable_version_tags_fail_to_start() {
    let mut w = world();
    w.apply_pod(pod("octo-0", "latest"), t(0));
    w.advance(t(1));
    assert_eq!(phase(&w, "octo-0"), "CrashLoopBackOff");
    let mut untagged = pod("octo-1", "x");
    untagged.image = "octopusdeploy/octopusdeploy".into();
    w.apply_pod(untagged, t(1));
    w.advance(t(2));
    assert_eq!(phase(&w, "octo-1"), "CrashLoopBackOff");
    assert!(inst(&w).schema.is_none());
}

#[test]
fn concurrent_starters_wait_for_the_schema_lock() {
    let mut w = world();
    w.apply_pod(pod("octo-0", "2024.1.1"), t(0));
    w.apply_pod(pod("octo-1", "2024.1.1"), t(0));
    w.advance(t(1));
    let phases = [phase(&w, "octo-0"), phase(&w, "octo-1")];
    assert!(phases.contains(&"Migrating".to_string()));
    assert!(phases.contains(&"AwaitingSchemaLock".to_string()));
    w.advance(t(3));
    assert_eq!(phase(&w, "octo-0"), "Running");
    assert_eq!(phase(&w, "octo-1"), "Running");
    assert_eq!(
        count(&w, |k| matches!(k, EventKind::SchemaMigrated { .. })),
        1
    );
}

#[test]
fn killing_a_migrating_node_rolls_the_upgrade_back() {
    let mut w = world();
    let now = cluster(&mut w, &["octo-0"], "2024.1.1");
    w.delete_pod("ns", "octo-0", t(now));
    w.apply_pod(pod("octo-0", "2024.2.1"), t(now));
    w.advance(t(now + 2));
    assert_eq!(phase(&w, "octo-0"), "Migrating");
    w.delete_pod("ns", "octo-0", t(now + 2));
    assert_eq!(inst(&w).schema.map(|s| s.line), Some((2024, 1)));
    assert_eq!(
        count(&w, |k| matches!(
            k,
            EventKind::SchemaMigrationRolledBack { .. }
        )),
        1
    );
}

#[test]
fn drain_persists_in_the_database_across_a_pod_replacement() {
    let mut w = world();
    let now = cluster(&mut w, &["octo-0"], "2024.1.1");
    let (i, log) = w.installation_mut(0).expect("installation");
    i.update_node("OctopusServerNodes-octo-0", true, 2, t(now), log)
        .expect("drain");
    w.delete_pod("ns", "octo-0", t(now));
    let row = inst(&w).nodes.get("octo-0").cloned().expect("row survives");
    assert!(row.drained);
    assert!(
        inst(&w).node_is_offline(&row, t(now)),
        "clean shutdown flags offline"
    );
    let mut replacement = pod("octo-0", "2024.1.1");
    replacement.uid = "uid-new".into();
    w.apply_pod(replacement, t(now));
    w.advance(t(now + 1));
    assert_eq!(phase(&w, "octo-0"), "Running");
    assert!(inst(&w).nodes["octo-0"].drained, "comes back drained");
    assert!(
        w.log
            .all()
            .iter()
            .any(|e| matches!(&e.kind, EventKind::NodeRunning { drained: true, .. }))
    );
}

#[test]
fn stopped_nodes_stay_in_the_node_table_and_go_offline_after_a_while() {
    let mut w = world();
    let now = cluster(&mut w, &["octo-0", "octo-1"], "2024.1.1");
    // A clean shutdown flags the node offline at once.
    w.delete_pod("ns", "octo-0", t(now));
    let row = inst(&w).nodes["octo-0"].clone();
    assert!(inst(&w).node_is_offline(&row, t(now)));
    // A process killed without shutting down is offline only once not seen for a while.
    w.set_faults(
        "ns",
        "octo",
        Faults {
            unclean_shutdown: true,
            ..Faults::default()
        },
    );
    w.delete_pod("ns", "octo-1", t(now));
    let row = inst(&w).nodes["octo-1"].clone();
    assert_eq!(row.last_seen, t(now));
    assert!(!inst(&w).node_is_offline(&row, t(now + 30)));
    assert!(inst(&w).node_is_offline(&row, t(now + 61)));
    assert_eq!(inst(&w).nodes.len(), 2, "rows outlive their processes");
}

fn queue_health(w: &mut World, now: i64, role: Role) -> Result<u64, Refusal> {
    let (i, log) = w.installation_mut(0).expect("installation");
    i.create_task(
        "Health",
        None,
        serde_json::Map::new(),
        None,
        role,
        t(now),
        log,
    )
}

fn task_state(w: &World, n: u64) -> (TaskState, Option<String>) {
    let task = &inst(w).tasks[&n];
    (task.state, task.server_node.clone())
}

#[test]
fn tasks_run_on_undrained_nodes_up_to_their_cap() {
    let mut w = world();
    let now = cluster(&mut w, &["octo-0", "octo-1"], "2024.1.1");
    let (i, log) = w.installation_mut(0).expect("installation");
    i.update_node("OctopusServerNodes-octo-1", true, 2, t(now), log)
        .expect("drain");
    let ids: Vec<u64> = (0..3)
        .map(|_| queue_health(&mut w, now, Role::Administrator).expect("queued"))
        .collect();
    assert_eq!(
        task_state(&w, ids[0]),
        (TaskState::Executing, Some("octo-0".into()))
    );
    assert_eq!(
        task_state(&w, ids[1]),
        (TaskState::Executing, Some("octo-0".into()))
    );
    assert_eq!(
        task_state(&w, ids[2]).0,
        TaskState::Queued,
        "cap 2 reached, octo-1 drained"
    );
    w.advance(t(now + 10));
    assert_eq!(task_state(&w, ids[0]).0, TaskState::Success);
    assert_eq!(
        task_state(&w, ids[2]),
        (TaskState::Executing, Some("octo-0".into()))
    );
    let started = w.log.all().iter().find(
        |e| matches!(&e.kind, EventKind::TaskStarted { task, .. } if task == "ServerTasks-3"),
    );
    assert_eq!(
        started.map(|e| e.at),
        Some(t(now + 10)),
        "picked up the moment a slot freed"
    );
}

#[test]
fn running_tasks_finish_on_their_node_after_drain_and_maintenance_mode() {
    let mut w = world();
    let now = cluster(&mut w, &["octo-0"], "2024.1.1");
    let id = queue_health(&mut w, now, Role::Administrator).expect("queued");
    let (i, log) = w.installation_mut(0).expect("installation");
    i.update_node("OctopusServerNodes-octo-0", true, 2, t(now + 1), log)
        .expect("drain");
    i.set_maintenance_mode(true, t(now + 1), log);
    w.advance(t(now + 10));
    assert_eq!(
        task_state(&w, id),
        (TaskState::Success, Some("octo-0".into()))
    );
}

#[test]
fn maintenance_mode_refuses_users_but_not_administrators_or_system_tasks() {
    let mut w = world();
    let now = cluster(&mut w, &["octo-0"], "2024.1.1");
    let (i, log) = w.installation_mut(0).expect("installation");
    i.set_maintenance_mode(true, t(now), log);
    assert_eq!(
        queue_health(&mut w, now, Role::User),
        Err(Refusal::MaintenanceMode)
    );
    assert!(queue_health(&mut w, now, Role::Administrator).is_ok());
    // The generator plays users deploying (refused) and the server's health checks (not).
    let generator = GeneratorConfig {
        enabled: true,
        deployments_per_minute: 60.0,
        health_check_interval: Some(Duration::from_secs(5)),
        ..GeneratorConfig::default()
    };
    let (i, _) = w.installation_mut(0).expect("installation");
    i.set_generator(generator, t(now));
    w.advance(t(now + 30));
    let i = inst(&w);
    assert!(
        i.generator.refused_maintenance_mode >= 10,
        "{}",
        i.generator.refused_maintenance_mode
    );
    assert_eq!(i.generator.deployments_queued, 0);
    assert!(i.tasks.values().filter(|t| t.name == "Health").count() >= 5);
    // Out of maintenance mode deployments flow again.
    let (i, log) = w.installation_mut(0).expect("installation");
    i.set_maintenance_mode(false, t(now + 30), log);
    w.advance(t(now + 60));
    assert!(inst(&w).generator.deployments_queued >= 10);
}

#[test]
fn unknown_task_names_are_refused() {
    let mut w = world();
    let now = cluster(&mut w, &["octo-0"], "2024.1.1");
    let (i, log) = w.installation_mut(0).expect("installation");
    let refused = i.create_task(
        "Deploy",
        None,
        serde_json::Map::new(),
        None,
        Role::Administrator,
        t(now),
        log,
    );
    assert_eq!(refused, Err(Refusal::UnknownTaskName("Deploy".into())));
}

#[test]
fn cancel_goes_through_cancelling_to_canceled() {
    let mut w = world();
    let now = cluster(&mut w, &["octo-0"], "2024.1.1");
    let running = queue_health(&mut w, now, Role::Administrator).expect("queued");
    let (i, log) = w.installation_mut(0).expect("installation");
    i.update_node("OctopusServerNodes-octo-0", false, 1, t(now), log)
        .expect("cap");
    let queued = queue_health(&mut w, now, Role::Administrator).expect("queued");
    let (i, log) = w.installation_mut(0).expect("installation");
    i.cancel_task(running, t(now + 1), log).expect("cancel");
    i.cancel_task(queued, t(now + 1), log).expect("cancel");
    assert_eq!(task_state(&w, running).0, TaskState::Cancelling);
    assert_eq!(task_state(&w, queued).0, TaskState::Canceled);
    w.advance(t(now + 2));
    assert_eq!(task_state(&w, running).0, TaskState::Canceled);
}

#[test]
fn tasks_fail_when_their_node_process_stops() {
    let mut w = world();
    let now = cluster(&mut w, &["octo-0"], "2024.1.1");
    let id = queue_health(&mut w, now, Role::Administrator).expect("queued");
    w.delete_pod("ns", "octo-0", t(now + 1));
    let task = &inst(&w).tasks[&id];
    assert_eq!(task.state, TaskState::Failed);
    assert!(
        task.error_message
            .as_deref()
            .is_some_and(|m| m.contains("octo-0"))
    );
    assert_eq!(count(&w, |k| matches!(k, EventKind::TaskFailed { .. })), 1);
}

#[test]
fn api_keys_come_from_the_pods_and_unknown_keys_are_not_valid() {
    let mut w = world();
    w.add_api_key("ns", "octo", Secret::new("API-USER"), Role::User);
    cluster(&mut w, &["octo-0"], "2024.1.1");
    let i = inst(&w);
    assert_eq!(i.authenticate("API-ADMIN"), Some(Role::Administrator));
    assert_eq!(i.authenticate("API-USER"), Some(Role::User));
    assert_eq!(i.authenticate("API-OTHER"), None);
}

#[test]
fn a_node_that_hangs_on_start_is_never_ready_and_never_restarts() {
    let mut w = world();
    let now = cluster(&mut w, &["octo-0"], "2024.1.1");
    w.set_faults(
        "ns",
        "octo",
        Faults {
            hang_on_start: ["octo-1".to_string()].into(),
            ..Faults::default()
        },
    );
    w.apply_pod(pod("octo-1", "2024.1.1"), t(now));
    w.advance(t(now + 600));
    let status = w.pod_status("ns", "octo-1").expect("status");
    assert!(!status.ready);
    assert_eq!(status.restart_count, 0);
    assert_eq!(phase(&w, "octo-1"), "Starting");
}

#[test]
fn a_node_that_fails_to_start_crash_loops_with_growing_back_off() {
    let mut w = world();
    w.set_faults(
        "ns",
        "octo",
        Faults {
            fail_to_start: ["octo-0".to_string()].into(),
            ..Faults::default()
        },
    );
    w.apply_pod(pod("octo-0", "2024.1.1"), t(0));
    w.advance(t(60));
    let status = w.pod_status("ns", "octo-0").expect("status");
    // start 1s, back-off 1,2,4,8,8,8...: bounded restarts within a minute.
    assert!(
        (4..=10).contains(&status.restart_count),
        "{}",
        status.restart_count
    );
    let crashes: Vec<Timestamp> = w
        .log
        .all()
        .iter()
        .filter(|e| matches!(e.kind, EventKind::NodeCrashed { .. }))
        .map(|e| e.at)
        .collect();
    assert_eq!(crashes[0], t(1));
    assert_eq!(crashes[1], t(3));
    assert_eq!(crashes[2], t(6));
}

#[test]
fn a_failing_migration_rolls_back_and_keeps_the_old_schema() {
    let mut w = world();
    let now = cluster(&mut w, &["octo-0"], "2024.1.1");
    w.set_faults(
        "ns",
        "octo",
        Faults {
            fail_migration: true,
            ..Faults::default()
        },
    );
    w.delete_pod("ns", "octo-0", t(now));
    w.apply_pod(pod("octo-0", "2024.2.1"), t(now));
    w.advance(t(now + 3));
    assert_eq!(inst(&w).schema.map(|s| s.line), Some((2024, 1)));
    assert_eq!(phase(&w, "octo-0"), "CrashLoopBackOff");
}

#[test]
fn settings_given_before_the_installation_exists_apply_to_its_first_start() {
    let mut w = world();
    w.set_timing(
        "ns",
        "octo",
        Timing {
            start_delay: Duration::from_secs(30),
            ..timing()
        },
    );
    w.apply_pod(pod("octo-0", "2024.1.1"), t(0));
    w.advance(t(29));
    assert_eq!(phase(&w, "octo-0"), "Starting");
    w.advance(t(32));
    assert_eq!(phase(&w, "octo-0"), "Running");
}

#[test]
fn the_load_balancer_only_routes_to_ready_pods() {
    let mut w = world();
    assert_eq!(w.resolve("ns", "missing"), Resolution::NoService);
    w.apply_pod(pod("octo-0", "2024.1.1"), t(0));
    assert_eq!(w.resolve("ns", "octo"), Resolution::NoEndpoints);
    w.advance(t(3));
    assert!(matches!(
        w.resolve("ns", "octo"),
        Resolution::Endpoint {
            installation: 0,
            ..
        }
    ));
}

#[test]
fn config_errors_keep_the_pod_waiting() {
    let mut w = world();
    let mut broken = pod("octo-0", "2024.1.1");
    broken.env = Err(ConfigError {
        reason: "CreateContainerConfigError".into(),
        message: "secret \"octo\" not found".into(),
    });
    w.apply_pod(broken, t(0));
    w.advance(t(10));
    let status = w.pod_status("ns", "octo-0").expect("status");
    assert_eq!(status.phase, "Pending");
    assert!(
        matches!(status.state, ContainerState::Waiting { ref reason, .. } if reason == "CreateContainerConfigError")
    );
    // Once the Secret exists the same pod starts.
    w.apply_pod(pod("octo-0", "2024.1.1"), t(10));
    w.advance(t(20));
    assert!(w.pod_status("ns", "octo-0").is_some_and(|s| s.ready));
}

#[test]
fn the_same_database_with_another_password_is_the_same_installation() {
    let a = database_key("Server=SQL;Database=Octopus;Password=a");
    let b = database_key("server = sql ; Initial Catalog=octopus;Password=b");
    assert_eq!(a, b);
    assert_ne!(a, database_key("Server=sql;Database=Other"));
    assert_eq!(format!("{a:?}"), "Secret(***)");
}

// ----- node processes in real containers ------------------------------------------------

fn remote_start(node: &str, tag: &str) -> octopus_twin_node::Start {
    octopus_twin_node::Start {
        pod: node.into(),
        node_name: node.into(),
        version: tag.into(),
        connection_string: DB.into(),
        admin_api_key: Some("API-ADMIN".into()),
        task_cap: None,
    }
}

fn remote_phase(w: &mut World, key: &str, at: i64) -> Option<octopus_twin_node::Phase> {
    w.remote_heartbeat(key, t(at)).map(|h| h.phase)
}

#[test]
fn a_remote_node_joins_the_database_its_connection_string_names_and_runs() {
    let mut w = world();
    cluster(&mut w, &["octo-0"], "2024.1.100");
    let key = w.start_remote(remote_start("real-1", "2024.1.100"), t(20));
    assert_eq!(
        w.installations().len(),
        1,
        "same database, same installation"
    );
    assert_eq!(
        remote_phase(&mut w, &key, 20),
        Some(octopus_twin_node::Phase::Starting)
    );
    assert_eq!(
        remote_phase(&mut w, &key, 22),
        Some(octopus_twin_node::Phase::Running)
    );
    assert!(inst(&w).node_is_running("real-1"));
}

#[test]
fn a_remote_node_stopped_cleanly_is_offline_at_once() {
    let mut w = world();
    let key = w.start_remote(remote_start("real-1", "2024.1.100"), t(0));
    remote_phase(&mut w, &key, 3);
    assert!(w.stop_remote(&key, t(4)));
    let row = inst(&w).nodes.get("real-1").cloned().expect("row");
    assert!(inst(&w).node_is_offline(&row, t(4)));
    assert_eq!(remote_phase(&mut w, &key, 5), None, "forgotten");
}

#[test]
fn a_silent_remote_node_is_reaped_as_killed_and_looks_alive_until_it_ages_out() {
    let mut w = world();
    let key = w.start_remote(remote_start("real-1", "2024.1.100"), t(0));
    assert_eq!(
        remote_phase(&mut w, &key, 3),
        Some(octopus_twin_node::Phase::Running)
    );
    // SIGKILL at 3: no more heartbeats; gone once the lease passed.
    w.advance(t(3 + 1));
    assert!(inst(&w).node_is_running("real-1"), "within the lease");
    w.advance(t(3 + 4));
    assert_eq!(phase(&w, "real-1"), "gone");
    assert_eq!(
        count(&w, |k| matches!(
            k,
            EventKind::NodeStopped {
                was_running: true,
                ..
            }
        )),
        1
    );
    let row = inst(&w).nodes.get("real-1").cloned().expect("row");
    assert_eq!(row.last_seen, t(3), "LastSeen is the last heartbeat");
    assert!(!inst(&w).node_is_offline(&row, t(60)));
    assert!(inst(&w).node_is_offline(&row, t(64)));
    assert_eq!(remote_phase(&mut w, &key, 8), None);
}

#[test]
fn a_refused_remote_node_exits_and_the_model_does_not_restart_it() {
    let mut w = world();
    cluster(&mut w, &["octo-0"], "2024.1.100");
    // A newer schema line beside a running node: refused (2024.2 refuses to migrate).
    let key = w.start_remote(remote_start("real-1", "2024.2.50"), t(20));
    let beat = w.remote_heartbeat(&key, t(22)).expect("known");
    assert_eq!(beat.phase, octopus_twin_node::Phase::Exited);
    assert!(
        beat.message
            .as_deref()
            .is_some_and(|m| m.contains("octo-0")),
        "{:?}",
        beat.message
    );
    assert_eq!(
        remote_phase(&mut w, &key, 23),
        Some(octopus_twin_node::Phase::Exited),
        "no back-off restart: its kubelet restarts the container"
    );
}

#[test]
fn faults_set_for_a_database_reach_the_remote_nodes_connecting_to_it() {
    let mut w = world();
    w.set_database_faults(
        DB,
        Faults {
            fail_to_start: ["real-1".to_string()].into(),
            ..Faults::default()
        },
    );
    let key = w.start_remote(remote_start("real-1", "2024.1.100"), t(0));
    let beat = w.remote_heartbeat(&key, t(2)).expect("known");
    assert_eq!(beat.phase, octopus_twin_node::Phase::Exited);
    assert!(
        beat.message
            .as_deref()
            .is_some_and(|m| m.contains("injected")),
        "{:?}",
        beat.message
    );
}

fn waiting_reason(w: &World, name: &str) -> Option<String> {
    match w.pod_status("ns", name)?.state {
        ContainerState::Waiting { reason, .. } => Some(reason),
        ContainerState::Running { .. } => None,
    }
}

#[test]
fn an_image_the_registry_lacks_waits_in_image_pull_back_off_until_it_is_there() {
    let mut w = world();
    cluster(&mut w, &["octo-0"], "2024.1.100");
    w.set_missing_images(["octopusdeploy/octopusdeploy:2024.1.999".to_string()].into());
    w.apply_pod(pod("octo-1", "2024.1.999"), t(100));
    let status = w.pod_status("ns", "octo-1").expect("known");
    assert_eq!(status.phase, "Pending");
    assert_eq!(
        (status.ready, status.started, status.restart_count),
        (false, false, 0)
    );
    match &status.state {
        ContainerState::Waiting { reason, message } => {
            assert_eq!(reason, "ErrImagePull");
            assert!(message.contains("docker.io/octopusdeploy/octopusdeploy:2024.1.999"));
            assert!(message.contains("not found"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    w.advance(after(t(100), Duration::from_millis(700)));
    assert_eq!(
        waiting_reason(&w, "octo-1").as_deref(),
        Some("ImagePullBackOff")
    );
    // The kubelet tries again with a growing back-off; nothing ever started.
    for s in 101..=160 {
        w.advance(t(s));
    }
    let attempts = count(&w, |k| matches!(k, EventKind::ImagePullFailed { .. }));
    assert!(attempts >= 4, "{attempts} attempts");
    assert_eq!(phase(&w, "octo-1"), "gone");
    // The tag is pushed: the next attempt pulls it and the node starts.
    w.set_missing_images(BTreeSet::new());
    for s in 161..=180 {
        w.advance(t(s));
    }
    assert_eq!(phase(&w, "octo-1"), "Running");
    assert_eq!(waiting_reason(&w, "octo-1"), None);
}

#[test]
fn a_broken_release_crash_loops_on_every_node_that_runs_it() {
    let mut w = world();
    let now = cluster(&mut w, &["octo-0", "octo-1"], "2024.1.100");
    w.set_faults(
        "ns",
        "octo",
        Faults {
            crash_versions: ["2024.1.200".to_string()].into(),
            ..Faults::default()
        },
    );
    w.stop_pod("ns", "octo-1", Shutdown::Graceful, t(now));
    w.apply_pod(pod("octo-1", "2024.1.200"), t(now));
    w.advance(t(now + 20));
    let status = w.pod_status("ns", "octo-1").expect("known");
    assert!(!status.ready && status.restart_count >= 2, "{status:?}");
    assert_eq!(
        waiting_reason(&w, "octo-1").as_deref(),
        Some("CrashLoopBackOff")
    );
    assert_eq!(phase(&w, "octo-0"), "Running");
}
