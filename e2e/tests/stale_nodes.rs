//! A schema upgrade against what Octopus can see of its nodes (issue 9): since 2023.2.9755
//! Octopus refuses a database upgrade while other node records look alive, and it knows
//! them only by clean shutdowns and heartbeats. Both paths, against the real API server
//! and the twin: nodes that stop cleanly migrate at once; a node killed at stop-all looks
//! alive until its heartbeat ages out, and the operator waits for that instead of taking
//! the refused migration for a failed one. Each prints the twin's event log.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::time::Duration;

use octopus_e2e::scenario::{Scenario, must, spec};
use octopus_e2e::twin::{Event, EventKind, Faults, Timing, TwinConfig};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(300);
const FROM: &str = "2024.1.100";
const TO: &str = "2024.2.1";

fn timing(offline_after: Duration) -> Timing {
    Timing {
        start_delay: Duration::from_millis(300),
        migration_time: Duration::from_secs(1),
        offline_after,
        ..Timing::default()
    }
}

/// A two-node cluster on [`FROM`] whose schema upgrades run without approval or backup.
async fn ready_cluster(prefix: &str, offline_after: Duration) -> Scenario {
    let config = TwinConfig {
        timing: timing(offline_after),
        ..TwinConfig::default()
    };
    let s = must(Scenario::start(prefix, config).await);
    let mut sp = spec(FROM, 2);
    sp["upgrade"]["schemaUpgrades"] = json!("Automatic");
    sp["upgrade"]["backup"] = json!({"skip": true});
    must(s.create_cluster("octo", sp).await);
    must(
        s.wait_condition("octo", "Ready", true, Some("Ready"), WAIT)
            .await,
    );
    s
}

/// Upgrades to [`TO`] and returns every condition reason seen until it finished (printing
/// each reason's first message).
async fn upgrade_watching_reasons(s: &Scenario) -> BTreeSet<String> {
    must(s.patch_spec("octo", json!({"version": TO})).await);
    let seen = RefCell::new(BTreeSet::new());
    must(
        s.wait_for("octo", "the upgrade to finish", WAIT, |c| {
            let Some(st) = c.status.as_ref() else {
                return false;
            };
            let mut seen = seen.borrow_mut();
            for cond in &st.conditions {
                if seen.insert(cond.reason.clone()) {
                    println!("{} {}: {}", cond.type_, cond.reason, cond.message);
                }
            }
            st.current_version.as_deref() == Some(TO)
                && st.schema_version.as_deref() == Some(TO)
                && st.upgrade.as_ref().is_some_and(|u| u.finished_at.is_some())
        })
        .await,
    );
    seen.into_inner()
}

fn count(events: &[Event], f: impl Fn(&EventKind) -> bool) -> usize {
    events.iter().filter(|e| f(&e.kind)).count()
}

/// Prints the twin's event log without its HTTP request lines.
fn print_events(title: &str, events: &[Event]) {
    println!("--- {title}: the twin's event log");
    for e in events
        .iter()
        .filter(|e| !matches!(e.kind, EventKind::HttpRequest { .. }))
    {
        println!("{}", serde_json::to_string(e).unwrap_or_default());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_stopped_cleanly_migrate_at_once() {
    let s = ready_cluster("cleanstop", Duration::from_secs(60)).await;
    let seen = upgrade_watching_reasons(&s).await;
    let events = s.twin.events();
    print_events("clean stop", &events);
    assert_eq!(
        count(&events, |k| matches!(
            k,
            EventKind::SchemaMigrationAborted { .. }
        )),
        0,
        "a clean stop-all leaves no node looking alive"
    );
    assert_eq!(
        count(&events, |k| matches!(k, EventKind::SchemaViolation { .. })),
        0
    );
    assert!(!seen.contains("WaitingForStaleNodes"), "{seen:?}");
    assert!(!seen.contains("NodeFailedAfterMigration"), "{seen:?}");
    must(s.finish().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_at_stop_all_delays_the_migration_until_its_heartbeat_ages_out() {
    let s = ready_cluster("killstop", Duration::from_secs(8)).await;
    // Every node stopped from now on dies without a clean shutdown (SIGKILL, grace 0):
    // its record looks alive to Octopus for offline_after.
    s.twin.set_faults(
        s.ns.name(),
        "octo",
        Faults {
            unclean_shutdown: true,
            ..Faults::default()
        },
    );
    let seen = upgrade_watching_reasons(&s).await;
    s.twin.set_faults(s.ns.name(), "octo", Faults::default());
    let events = s.twin.events();
    print_events("node killed at stop-all", &events);
    println!("condition reasons seen: {seen:?}");
    let aborted: Vec<&Event> = events
        .iter()
        .filter(|e| matches!(&e.kind, EventKind::SchemaMigrationAborted { node, .. } if node == "octo-0"))
        .collect();
    assert!(
        !aborted.is_empty(),
        "the first node's migration was never refused"
    );
    assert!(seen.contains("WaitingForStaleNodes"), "{seen:?}");
    assert!(!seen.contains("NodeFailedAfterMigration"), "{seen:?}");
    assert_eq!(
        count(&events, |k| matches!(k, EventKind::SchemaViolation { .. })),
        0
    );
    // The migration ran after the refusals, and only then did octo-1 start on the new
    // version.
    let last_abort = aborted.last().map(|e| e.seq).unwrap_or_default();
    let started_1 = events
        .iter()
        .find(|e| matches!(&e.kind, EventKind::NodeStarting { node, version, .. } if node == "octo-1" && version == TO))
        .map(|e| e.seq)
        .expect("octo-1 started on the new version");
    assert!(last_abort < started_1);
    must(s.finish().await);
}
