//! End-to-end scenarios of the operator against the real API server and the Octopus twin.
//! Each scenario runs in its own namespace with its own twin and in-process operator.
//! They fail (never skip) when the control plane cannot be reached.

use std::time::Duration;

use jiff::Timestamp;
use octopus_e2e::scenario::{Scenario, World, condition, must, spec, twin_config};
use octopus_e2e::twin::replay::{Mark, Replay};
use octopus_e2e::twin::{Event, EventKind, Faults};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(240);

/// A patch no registry has (and no node imported): its pods cannot pull their image.
const UNPULLABLE: &str = "2024.1.199";

/// Waits until the upgrade to `version` has finished and every node runs it.
async fn wait_upgraded(s: &Scenario, version: &str) -> octopus_operator::api::OctopusCluster {
    must(
        s.wait_for(
            "octo",
            &format!("the upgrade to {version} to finish"),
            WAIT,
            |c| {
                c.status.as_ref().is_some_and(|st| {
                    st.current_version.as_deref() == Some(version)
                        && st.upgrade.as_ref().is_some_and(|u| u.finished_at.is_some())
                })
            },
        )
        .await,
    )
}

/// Creates the cluster `octo` and waits until it is Ready.
async fn create_ready(s: &Scenario, spec: serde_json::Value) {
    must(s.create_cluster("octo", spec).await);
    must(
        s.wait_condition("octo", "Ready", true, Some("Ready"), WAIT)
            .await,
    );
}

/// After a roll of 3 nodes: at least 2 served at every moment since `since`, and no task
/// failed (tasks already running are given time to finish). Returns the recorder's events.
async fn roll_kept_serving(s: &Scenario, since: Timestamp) -> Vec<Event> {
    tokio::time::sleep(Duration::from_secs(3)).await;
    let events = s.twin.events();
    let min_serving = Replay::new(&events).since(Mark::At(since)).min_serving();
    assert!(
        min_serving >= 2,
        "fewer than 2 nodes served at some moment ({min_serving})"
    );
    assert_eq!(
        Replay::new(&events).tasks().failed,
        0,
        "a task failed during the roll"
    );
    events
}

fn count<F: Fn(&EventKind) -> bool>(events: &[Event], f: F) -> usize {
    Replay::new(events).count(f)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_three_nodes_and_reach_ready() {
    let s = must(Scenario::start("create", twin_config(false)).await);
    must(s.create_cluster("octo", spec("2024.1.100", 3)).await);
    let c = must(
        s.wait_condition("octo", "Ready", true, Some("Ready"), WAIT)
            .await,
    );
    let status = c.status.expect("status");
    assert_eq!(status.current_version.as_deref(), Some("2024.1.100"));
    assert_eq!(status.ready_nodes.as_deref(), Some("3/3"));
    assert_eq!(status.nodes.len(), 3);
    assert_eq!(status.schema_version.as_deref(), Some("2024.1.100"));
    assert!(status.nodes.iter().all(|n| n.ready && !n.drained));
    // kubectl sees what a person would.
    let wait = must(
        s.cluster
            .kubectl([
                "-n",
                s.ns.name(),
                "wait",
                "--for=condition=Ready",
                "octc/octo",
                "--timeout=10s",
            ])
            .await
            .map_err(anyhow::Error::from),
    );
    assert!(wait.success(), "kubectl wait: {}", wait.stderr);
    let get = must(
        s.cluster
            .kubectl(["-n", s.ns.name(), "get", "octc", "octo"])
            .await
            .map_err(anyhow::Error::from),
    );
    for column in [
        "DESIRED",
        "CURRENT",
        "READY",
        "STATUS",
        "AGE",
        "2024.1.100",
        "3/3",
    ] {
        assert!(
            get.stdout.contains(column),
            "kubectl get octc lacks {column}:\n{}",
            get.stdout
        );
    }
    // Node 0 created the schema alone: nobody else started before it ran.
    let events = s.twin.events();
    let schema = Replay::new(&events).schema();
    assert_eq!(schema.violations, 0);
    assert_eq!(schema.aborted, 0);
    must(s.finish().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_secret_creates_nothing() {
    let s = must(Scenario::start("nosecret", twin_config(false)).await);
    let mut sp = spec("2024.1.100", 1);
    sp["masterKeySecretRef"] = json!({"name": "absent", "key": "masterKey"});
    must(s.create_cluster("octo", sp).await);
    let c = must(
        s.wait_condition("octo", "Degraded", true, Some("SecretNotFound"), WAIT)
            .await,
    );
    let message = condition(&c, "Degraded").expect("Degraded").message.clone();
    assert!(message.contains("absent"), "{message}");
    let sts: kube::Api<k8s_openapi::api::apps::v1::StatefulSet> = s.ns.api();
    assert!(must(sts.get_opt("octo").await.map_err(anyhow::Error::from)).is_none());
    must(s.finish().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patch_upgrade_rolls_with_tasks_running() {
    let s = must(Scenario::start("patch", twin_config(true)).await);
    create_ready(&s, spec("2024.1.100", 3)).await;
    let since = Timestamp::now();
    must(s.patch_spec("octo", json!({"version": "2024.1.200"})).await);
    let c = wait_upgraded(&s, "2024.1.200").await;
    must(
        s.wait_condition("octo", "Ready", true, Some("Ready"), WAIT)
            .await,
    );
    let up = c.status.and_then(|st| st.upgrade).expect("upgrade");
    assert_eq!(up.change, "patch");
    assert_eq!(up.strategy.as_deref(), Some("rolling"));
    let events = roll_kept_serving(&s, since).await;
    let replay = Replay::new(&events);
    assert!(replay.tasks().finished > 0, "no task ran");
    // Each node once, highest ordinal first.
    assert_eq!(replay.drained(), ["octo-2", "octo-1", "octo-0"]);
    // Each node's version came from that node itself, at its own address through the
    // headless Service (the summary has none): every node answered its own GET /api.
    for node in ["octo-0", "octo-1", "octo-2"] {
        // The played load balancer names the route it took; a real node the Host it was
        // reached by, its pod DNS name.
        let own = match s.world() {
            World::Played => format!("{}/octo-nodes/{node}", s.ns.name()),
            World::Real => format!("{node}.octo-nodes.{}.svc", s.ns.name()),
        };
        assert!(
            events.iter().any(|e| matches!(&e.kind,
                EventKind::HttpRequest { route, service, node: answered, status: 200, .. }
                    if route == "/api" && *service == own && answered.as_deref() == Some(node))),
            "{node} was never asked for its own version"
        );
    }
    must(s.finish().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minor_upgrade_waits_for_approval_then_stops_the_world() {
    let s = must(Scenario::start("minor", twin_config(true)).await);
    let mut sp = spec("2024.1.100", 3);
    sp["tentacles"] = json!({"upgradeTentacles": true, "environmentIds": ["Environments-1"]});
    create_ready(&s, sp).await;
    must(s.patch_spec("octo", json!({"version": "2024.2.50"})).await);
    let c = must(
        s.wait_condition(
            "octo",
            "UpgradeBlocked",
            true,
            Some("SchemaUpgradeNotApproved"),
            WAIT,
        )
        .await,
    );
    let message = condition(&c, "UpgradeBlocked")
        .expect("cond")
        .message
        .clone();
    assert!(
        message.contains("approvedVersion") && message.contains("2024.2.50"),
        "{message}"
    );
    // Still serving the old version while blocked.
    assert_eq!(
        c.status
            .as_ref()
            .and_then(|st| st.current_version.as_deref()),
        Some("2024.1.100")
    );
    must(
        s.patch_spec("octo", json!({"upgrade": {"approvedVersion": "2024.2.50"}}))
            .await,
    );
    let c = wait_upgraded(&s, "2024.2.50").await;
    must(
        s.wait_condition("octo", "Ready", true, Some("Ready"), WAIT)
            .await,
    );
    let status = c.status.expect("status");
    assert_eq!(status.schema_version.as_deref(), Some("2024.2.50"));
    let backup = status.last_backup.expect("backup recorded");
    assert_eq!(backup.from_version, "2024.1.100");
    assert!(backup.master_key_secret.is_some());
    let events = s.twin.events();
    let replay = Replay::new(&events);
    // The backup finished before any node stopped.
    let runs = s.jobs.runs();
    let backed_up = runs.iter().find(|r| r.succeeded).expect("a backup ran").at;
    let first_stop = replay
        .first(|k| matches!(k, EventKind::NodeStopped { .. }))
        .expect("nodes stopped")
        .at;
    assert!(
        backed_up < first_stop,
        "backup {backed_up} after first stop {first_stop}"
    );
    // Maintenance mode was on before the first stop, and off again.
    let maintenance = replay.maintenance_mode();
    let maintenance_on = maintenance
        .iter()
        .find(|(_, on)| *on)
        .expect("maintenance mode on")
        .0;
    assert!(maintenance_on < first_stop);
    let maintenance_off = maintenance
        .iter()
        .rfind(|(_, on)| !*on)
        .expect("maintenance off")
        .0;
    // Users got the cluster back once the schema was migrated and node 0 served on the new
    // version, before the other nodes started; no old-version node started after that.
    let stw = replay.stop_the_world("2024.2.50");
    let migrated = stw.migrated.expect("schema migrated");
    let serving = stw.first_serving_new.expect("a node served on 2024.2.50");
    let lifted = stw.maintenance_off.expect("maintenance off");
    assert!(migrated <= serving && serving <= lifted, "{stw:?}");
    assert_eq!(stw.starts.len(), 3, "{stw:?}");
    assert!(
        stw.starts[1..].iter().all(|n| n.starting > lifted),
        "the other nodes started before maintenance mode was lifted: {stw:?}"
    );
    assert!(
        !events.iter().any(|e| e.at > migrated
            && matches!(&e.kind, EventKind::NodeStarting { version, .. } if version != "2024.2.50")),
        "an old-version node started after the schema migrated"
    );
    // Never two versions running at once, never a schema violation or aborted migration.
    if let Some(mixed) = replay.mixed_versions().first() {
        panic!(
            "mixed versions running at {:?}: {:?}",
            mixed.event.map(|e| e.at),
            mixed.nodes.running()
        );
    }
    let schema = replay.schema();
    assert_eq!(schema.violations, 0);
    assert_eq!(schema.aborted, 0);
    assert_eq!(replay.tasks().failed, 0);
    // The Tentacle follow-up was queued once, after the server upgrade.
    let upgrades: Vec<&Event> = events
        .iter()
        .filter(|e| matches!(&e.kind, EventKind::TaskQueued { name, .. } if name == "Upgrade"))
        .collect();
    assert_eq!(
        upgrades.len(),
        1,
        "Tentacle upgrade tasks queued: {}",
        upgrades.len()
    );
    assert!(upgrades[0].at >= maintenance_off);
    must(s.finish().await);
}

/// A 2-node cluster whose approved minor upgrade is held by a failing backup Job (after
/// maintenance mode went on).
async fn held_by_failed_backup(prefix: &str) -> (Scenario, octopus_operator::api::OctopusCluster) {
    let s = must(Scenario::start(prefix, twin_config(false)).await);
    let mut sp = spec("2024.1.100", 2);
    sp["upgrade"]["approvedVersion"] = json!("2024.2.1");
    create_ready(&s, sp).await;
    s.jobs.set_failing(true);
    must(s.patch_spec("octo", json!({"version": "2024.2.1"})).await);
    let c = must(
        s.wait_condition("octo", "UpgradeBlocked", true, Some("BackupFailed"), WAIT)
            .await,
    );
    (s, c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_mid_upgrade_releases_maintenance_mode() {
    let (s, _) = held_by_failed_backup("delete").await;
    let snapshot = s.twin.events();
    assert_eq!(
        count(&snapshot, |k| matches!(k, EventKind::MaintenanceModeOn)),
        1
    );
    assert_eq!(
        count(&snapshot, |k| matches!(k, EventKind::NodeStopped { .. })),
        0,
        "nothing may stop after a failed backup"
    );
    must(
        s.clusters()
            .delete("octo", &Default::default())
            .await
            .map_err(anyhow::Error::from),
    );
    let deadline = tokio::time::Instant::now() + WAIT;
    while must(
        s.clusters()
            .get_opt("octo")
            .await
            .map_err(anyhow::Error::from),
    )
    .is_some()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the cluster was not deleted"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let events = s.twin.events();
    let maintenance = Replay::new(&events).maintenance_mode();
    let on = maintenance.iter().position(|(_, on)| *on);
    let off = maintenance.iter().rposition(|(_, on)| !*on);
    assert!(
        matches!((on, off), (Some(a), Some(b)) if b > a),
        "maintenance mode left on"
    );
    assert!(
        count(&events, |k| matches!(k, EventKind::NodeUndrained { .. })) >= 2,
        "nodes left drained"
    );
    must(s.finish().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn major_needs_approval_and_downgrade_needs_restore() {
    let s = must(Scenario::start("refuse", twin_config(false)).await);
    create_ready(&s, spec("2024.1.100", 1)).await;
    must(
        s.patch_spec(
            "octo",
            json!({"version": "2025.1.10", "upgrade": {"approvedVersion": "2025.1.10"}}),
        )
        .await,
    );
    let c = must(
        s.wait_condition(
            "octo",
            "UpgradeBlocked",
            true,
            Some("MajorUpgradeNotApproved"),
            WAIT,
        )
        .await,
    );
    assert!(
        condition(&c, "UpgradeBlocked")
            .expect("c")
            .message
            .contains("approvedMajorVersion")
    );
    must(s.patch_spec("octo", json!({"version": "2023.4.1"})).await);
    must(
        s.wait_condition(
            "octo",
            "UpgradeBlocked",
            true,
            Some("DowngradeRequiresRestore"),
            WAIT,
        )
        .await,
    );
    // Nothing was touched: the node still runs the original version.
    let c = must(
        s.wait_condition("octo", "Degraded", false, None, WAIT)
            .await,
    );
    assert_eq!(
        c.status.and_then(|st| st.current_version).as_deref(),
        Some("2024.1.100")
    );
    let events = s.twin.events();
    let stopped: Vec<&Event> = events
        .iter()
        .filter(|e| {
            matches!(
                e.kind,
                EventKind::NodeStopped { .. } | EventKind::NodeCrashed { .. }
            )
        })
        .collect();
    assert!(stopped.is_empty(), "{stopped:?}");
    must(s.finish().await);
}

/// A 2-node cluster on 2024.1.100 whose automatic upgrade to 2024.2.1 fails at the
/// migration (node 0 cannot start on it): stopped with NodeFailedAfterMigration.
async fn failed_migration(prefix: &str) -> (Scenario, octopus_operator::api::OctopusCluster) {
    let s = must(Scenario::start(prefix, twin_config(false)).await);
    let mut sp = spec("2024.1.100", 2);
    sp["upgrade"]["schemaUpgrades"] = json!("Automatic");
    sp["upgrade"]["nodeReadyTimeout"] = json!("20s");
    create_ready(&s, sp).await;
    s.twin.set_faults(
        s.ns.name(),
        "octo",
        Faults {
            fail_to_start: ["octo-0".to_string()].into_iter().collect(),
            ..Faults::default()
        },
    );
    must(s.patch_spec("octo", json!({"version": "2024.2.1"})).await);
    let c = must(
        s.wait_condition(
            "octo",
            "Degraded",
            true,
            Some("NodeFailedAfterMigration"),
            WAIT,
        )
        .await,
    );
    (s, c)
}

/// The backup Jobs of the scenario's namespace: (name, succeeded).
async fn backup_jobs(s: &Scenario) -> Vec<(String, bool)> {
    let jobs: kube::Api<k8s_openapi::api::batch::v1::Job> = s.ns.api();
    let list = must(
        jobs.list(&Default::default())
            .await
            .map_err(anyhow::Error::from),
    );
    list.items
        .into_iter()
        .map(|j| {
            let done = j.status.and_then(|st| st.succeeded).unwrap_or_default() > 0;
            (j.metadata.name.unwrap_or_default(), done)
        })
        .collect()
}

/// The StatefulSet's replicas and the Octopus version of its pod template.
async fn statefulset_now(s: &Scenario) -> (Option<i32>, Option<String>) {
    let sts: kube::Api<k8s_openapi::api::apps::v1::StatefulSet> = s.ns.api();
    let sts = must(sts.get("octo").await.map_err(anyhow::Error::from));
    let spec = sts.spec;
    let image = spec
        .template
        .spec
        .and_then(|p| p.containers.into_iter().next())
        .and_then(|c| c.image);
    (
        spec.replicas,
        image
            .as_deref()
            .and_then(octopus_operator::resources::image::version_of),
    )
}

/// Issue 10, items 2 and 9: A -> B fails at the migration; setting A back starts nothing
/// until spec.upgrade.restoredBackup names that attempt's backup; then every node returns
/// to A; A -> B again runs a second backup Job, under another name, before the schema
/// migrates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_migration_goes_back_on_the_restored_backup_and_a_retry_backs_up_again() {
    let (s, c) = failed_migration("failmig").await;
    assert!(condition(&c, "UpgradeBlocked").is_some_and(|b| b.status == "True"));
    let status = c.status.clone().expect("status");
    let first = status.upgrade.clone().expect("upgrade");
    let first_backup = status
        .last_backup
        .clone()
        .expect("backup of the first attempt");
    assert_eq!(first_backup.attempt, first.attempt);
    let stop = condition(&c, "UpgradeBlocked")
        .expect("cond")
        .message
        .clone();
    assert!(
        stop.contains(&first_backup.job_name) && stop.contains("spec.upgrade.restoredBackup"),
        "{stop}"
    );
    // The operator takes no further step: node 1 is never started on either version.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(statefulset_now(&s).await.0, Some(1));
    let events = s.twin.events();
    let started_1_after_stop = events.iter().any(|e| {
        matches!(&e.kind, EventKind::NodeStarting { node, version, .. } if node == "octo-1" && version == "2024.2.1")
    });
    assert!(
        !started_1_after_stop,
        "node 1 was started after node 0 failed"
    );

    // spec.version back alone is no evidence: no node runs, the condition says what to do.
    let edited = Timestamp::now();
    must(s.patch_spec("octo", json!({"version": "2024.1.100"})).await);
    let c = must(
        s.wait_condition(
            "octo",
            "UpgradeBlocked",
            true,
            Some("RestoreNotAcknowledged"),
            WAIT,
        )
        .await,
    );
    let message = condition(&c, "UpgradeBlocked")
        .expect("cond")
        .message
        .clone();
    println!("RestoreNotAcknowledged: {message}");
    let copy = first_backup.master_key_secret.clone().expect("copy");
    for words in [
        first_backup.job_name.as_str(),
        copy.as_str(),
        "restoredBackup",
    ] {
        assert!(message.contains(words), "{words}: {message}");
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    while statefulset_now(&s).await.0 != Some(0) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "node 0 kept running"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let events = s.twin.events();
    let old_started = Replay::new(&events)
        .since(Mark::At(edited))
        .count(|k| matches!(k, EventKind::NodeStarting { version, .. } if version == "2024.1.100"));
    assert_eq!(old_started, 0, "an old node started on the edit alone");

    // The person restored the database and Master Key from that backup and says so.
    s.twin.set_faults(s.ns.name(), "octo", Faults::default());
    must(
        s.patch_spec(
            "octo",
            json!({"upgrade": {"restoredBackup": first_backup.job_name}}),
        )
        .await,
    );
    let c = wait_upgraded(&s, "2024.1.100").await;
    let up = c.status.and_then(|st| st.upgrade).expect("upgrade");
    assert_eq!(up.change, "minor-downgrade");
    must(
        s.wait_condition("octo", "Ready", true, Some("Ready"), WAIT)
            .await,
    );

    // The retry takes its own backup before any node stops for it.
    let retried = Timestamp::now();
    must(s.patch_spec("octo", json!({"version": "2024.2.1"})).await);
    let c = wait_upgraded(&s, "2024.2.1").await;
    let status = c.status.expect("status");
    let second = status.upgrade.expect("upgrade");
    let second_backup = status.last_backup.expect("backup of the retry");
    assert_ne!(second.attempt, first.attempt);
    assert_eq!(second_backup.attempt, second.attempt);
    assert_ne!(second_backup.job_name, first_backup.job_name);
    assert_ne!(
        second_backup.master_key_secret,
        first_backup.master_key_secret
    );
    let jobs = backup_jobs(&s).await;
    println!("backup Jobs: {jobs:?}");
    assert!(
        jobs.contains(&(first_backup.job_name.clone(), true))
            && jobs.contains(&(second_backup.job_name.clone(), true)),
        "{jobs:?}"
    );
    let runs = s.jobs.runs();
    let backed_up = runs
        .iter()
        .filter(|r| r.succeeded && r.at > retried)
        .map(|r| r.at)
        .next()
        .expect("a backup ran for the retry");
    let events = s.twin.events();
    let replay = Replay::new(&events);
    let first_stop = replay
        .since(Mark::At(retried))
        .first(|k| matches!(k, EventKind::NodeStopped { .. }))
        .expect("nodes stopped for the retry")
        .at;
    assert!(
        backed_up < first_stop,
        "the retry's backup {backed_up} came after its first stop {first_stop}"
    );
    let migrated = replay
        .since(Mark::At(retried))
        .first(|k| matches!(k, EventKind::SchemaMigrated { .. }))
        .expect("the retry migrated")
        .at;
    assert!(backed_up < migrated);
    assert_eq!(replay.schema().violations, 0);
    must(s.finish().await);
}

/// Issue 10, item 8: under a sticky stop, a pod template edited by hand to a version below
/// the database's schema is applied again at the database's version, and the condition
/// says what was found.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_edited_below_the_schema_is_applied_again_while_stopped() {
    let (s, c) = failed_migration("oldtmpl").await;
    assert_eq!(
        statefulset_now(&s).await,
        (Some(1), Some("2024.2.1".to_string()))
    );
    let before = condition(&c, "UpgradeBlocked")
        .expect("cond")
        .message
        .clone();
    // Someone puts the old image back into the template (kubectl edit).
    let sts: kube::Api<k8s_openapi::api::apps::v1::StatefulSet> = s.ns.api();
    let current = must(sts.get("octo").await.map_err(anyhow::Error::from));
    let image = current
        .spec
        .template
        .spec
        .as_ref()
        .and_then(|p| p.containers.first())
        .and_then(|c| c.image.clone())
        .expect("image");
    let old_image = image.replace("2024.2.1", "2024.1.100");
    let edited = Timestamp::now();
    let patch = json!({"spec": {"template": {"spec": {"containers": [
        {"name": octopus_operator::resources::names::CONTAINER, "image": old_image}
    ]}}}});
    must(
        sts.patch(
            "octo",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Strategic(patch),
        )
        .await
        .map_err(anyhow::Error::from),
    );
    let c = must(
        s.wait_for("octo", "the stop to say what was found", WAIT, |c| {
            condition(c, "UpgradeBlocked").is_some_and(|b| b.message.contains("Found: "))
        })
        .await,
    );
    let message = condition(&c, "UpgradeBlocked")
        .expect("cond")
        .message
        .clone();
    println!("UpgradeBlocked: {message}");
    assert!(message.starts_with(&before), "{message}");
    assert!(
        message.contains("pod template ran 2024.1.100")
            && message.contains("applied it at 2024.2.1 again"),
        "{message}"
    );
    assert_eq!(
        condition(&c, "UpgradeBlocked").map(|b| b.reason.as_str()),
        Some("NodeFailedAfterMigration")
    );
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let now = statefulset_now(&s).await;
        if now == (Some(1), Some("2024.2.1".to_string())) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the template stayed {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // No node of the old version ever started against the database.
    let events = s.twin.events();
    let old_started = Replay::new(&events)
        .since(Mark::At(edited))
        .count(|k| matches!(k, EventKind::NodeStarting { version, .. } if version == "2024.1.100"));
    assert_eq!(old_started, 0, "an old node started");
    assert_eq!(Replay::new(&events).schema().violations, 0);
    must(s.finish().await);
}

/// Waits until the roll has replaced `n` nodes (their pods run `version`).
async fn wait_replaced(s: &Scenario, n: usize, version: &str) {
    must(
        s.wait_for("octo", &format!("{n} node(s) on {version}"), WAIT, |c| {
            c.status.as_ref().is_some_and(|st| {
                st.nodes
                    .iter()
                    .filter(|node| node.version.as_deref() == Some(version))
                    .count()
                    >= n
            })
        })
        .await,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_holds_the_roll_and_resume_finishes_it() {
    let s = must(Scenario::start("pause", twin_config(false)).await);
    create_ready(&s, spec("2024.1.100", 3)).await;
    must(s.patch_spec("octo", json!({"version": "2024.1.200"})).await);
    wait_replaced(&s, 1, "2024.1.200").await;
    must(s.patch_spec("octo", json!({"paused": true})).await);
    must(
        s.wait_condition("octo", "Paused", true, Some("Paused"), WAIT)
            .await,
    );
    // While paused nothing is drained, undrained, started or stopped.
    let mark = s.twin.events().last().map(|e| e.seq).unwrap_or_default();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let after: Vec<Event> = s.twin.events_since(mark);
    let moves = count(&after, |k| {
        matches!(
            k,
            EventKind::NodeDrained { .. }
                | EventKind::NodeUndrained { .. }
                | EventKind::NodeStopped { .. }
                | EventKind::NodeStarting { .. }
        )
    });
    // A step already in flight when the pause landed may still settle (a recreated pod
    // starting); the operator itself must not start a new one.
    let drains = count(&after, |k| matches!(k, EventKind::NodeDrained { .. }));
    assert_eq!(drains, 0, "a node was drained while paused ({moves} moves)");
    let stops = count(&after, |k| matches!(k, EventKind::NodeStopped { .. }));
    assert_eq!(stops, 0, "a node was stopped while paused");
    must(s.patch_spec("octo", json!({"paused": false})).await);
    wait_upgraded(&s, "2024.1.200").await;
    must(
        s.wait_condition("octo", "Ready", true, Some("Ready"), WAIT)
            .await,
    );
    must(s.finish().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn automatic_schema_upgrade_waits_for_the_maintenance_window() {
    let s = must(Scenario::start("window", twin_config(false)).await);
    // A one-hour window that opened 3 hours ago (UTC) is closed now.
    let now = jiff::Timestamp::now().to_zoned(jiff::tz::TimeZone::UTC);
    let closed = now
        .checked_sub(jiff::SignedDuration::from_hours(3))
        .expect("time");
    let open = now
        .checked_sub(jiff::SignedDuration::from_mins(10))
        .expect("time");
    let hhmm = |z: &jiff::Zoned| format!("{:02}:{:02}", z.hour(), z.minute());
    let mut sp = spec("2024.1.100", 2);
    sp["upgrade"]["schemaUpgrades"] = json!("Automatic");
    sp["upgrade"]["maintenanceWindow"] =
        json!({"start": hhmm(&closed), "duration": "1h", "timeZone": "UTC"});
    create_ready(&s, sp).await;
    must(s.patch_spec("octo", json!({"version": "2024.2.1"})).await);
    let c = must(
        s.wait_condition(
            "octo",
            "UpgradeBlocked",
            true,
            Some("OutsideMaintenanceWindow"),
            WAIT,
        )
        .await,
    );
    assert_eq!(
        c.status
            .as_ref()
            .and_then(|st| st.current_version.as_deref()),
        Some("2024.1.100")
    );
    assert_eq!(
        count(&s.twin.events(), |k| matches!(
            k,
            EventKind::MaintenanceModeOn
        )),
        0
    );
    must(
        s.patch_spec(
            "octo",
            json!({"upgrade": {"maintenanceWindow": {"start": hhmm(&open), "duration": "1h", "timeZone": "UTC"}}}),
        )
        .await,
    );
    wait_upgraded(&s, "2024.2.1").await;
    must(s.finish().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_killed_mid_roll_resumes_and_finishes() {
    let mut s = must(Scenario::start("restart", twin_config(true)).await);
    create_ready(&s, spec("2024.1.100", 3)).await;
    let since = Timestamp::now();
    must(s.patch_spec("octo", json!({"version": "2024.1.200"})).await);
    wait_replaced(&s, 1, "2024.1.200").await;
    s.kill_operator().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    s.start_operator();
    wait_upgraded(&s, "2024.1.200").await;
    let c = must(
        s.wait_condition("octo", "Ready", true, Some("Ready"), WAIT)
            .await,
    );
    assert!(c.status.expect("status").nodes.iter().all(|n| !n.drained));
    let events = roll_kept_serving(&s, since).await;
    // Each node was replaced exactly once: three stops of the old version.
    let replaced = Replay::new(&events).stopped_on("2024.1.100");
    assert_eq!(replaced.values().sum::<usize>(), 3, "{replaced:?}");
    must(s.finish().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_backup_holds_until_its_job_is_deleted() {
    let (s, c) = held_by_failed_backup("backup").await;
    let message = condition(&c, "UpgradeBlocked")
        .expect("cond")
        .message
        .clone();
    assert!(message.contains("delete the Job"), "{message}");
    // A person fixes the cause and deletes the failed Job: the operator backs up again.
    s.jobs.set_failing(false);
    let jobs: kube::Api<k8s_openapi::api::batch::v1::Job> = s.ns.api();
    let list = must(
        jobs.list(&Default::default())
            .await
            .map_err(anyhow::Error::from),
    );
    let dp = kube::api::DeleteParams::background();
    for job in list.items {
        let name = job.metadata.name.unwrap_or_default();
        must(jobs.delete(&name, &dp).await.map_err(anyhow::Error::from));
    }
    must(
        s.wait_for("octo", "the upgrade after the retried backup", WAIT, |c| {
            c.status.as_ref().is_some_and(|st| {
                st.current_version.as_deref() == Some("2024.2.1")
                    && st.upgrade.as_ref().is_some_and(|u| u.finished_at.is_some())
                    && st.last_backup.is_some()
            })
        })
        .await,
    );
    must(s.finish().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthorized_api_holds_the_roll_without_acting_blind() {
    let s = must(Scenario::start("authz", twin_config(false)).await);
    create_ready(&s, spec("2024.1.100", 2)).await;
    s.twin.set_faults(
        s.ns.name(),
        "octo",
        Faults {
            api_key_expired: true,
            ..Faults::default()
        },
    );
    must(s.patch_spec("octo", json!({"version": "2024.1.200"})).await);
    must(
        s.wait_condition("octo", "Degraded", true, Some("OctopusUnauthorized"), WAIT)
            .await,
    );
    // The plan is recorded first (it needs no answer); its first step then says why it
    // waits.
    let c = must(
        s.wait_condition(
            "octo",
            "Progressing",
            true,
            Some("OctopusUnauthorized"),
            WAIT,
        )
        .await,
    );
    assert!(condition(&c, "Degraded").is_some_and(|d| d.status == "True"));
    // Nothing was drained or replaced while the operator could not see Octopus.
    let events = s.twin.events();
    assert_eq!(
        count(&events, |k| matches!(k, EventKind::NodeDrained { .. })),
        0
    );
    assert_eq!(
        count(&events, |k| matches!(k, EventKind::NodeStopped { .. })),
        0
    );
    // The key works again: the roll goes on by itself.
    s.twin.set_faults(s.ns.name(), "octo", Faults::default());
    wait_upgraded(&s, "2024.1.200").await;
    must(s.finish().await);
}

/// Sets the image tag of `octo`'s pod template to `version`, as a person editing the
/// StatefulSet by hand would.
async fn set_template_version(s: &Scenario, version: &str) {
    let sts: kube::Api<k8s_openapi::api::apps::v1::StatefulSet> = s.ns.api();
    let current = must(sts.get("octo").await.map_err(anyhow::Error::from));
    let container = current
        .spec
        .template
        .spec
        .and_then(|t| t.containers.into_iter().next())
        .expect("a container");
    let image = container.image.unwrap_or_default();
    let (repository, _) = image.rsplit_once(':').expect("a tagged image");
    let patch = json!({"spec": {"template": {"spec": {"containers": [
        {"name": container.name, "image": format!("{repository}:{version}")}
    ]}}}});
    must(
        sts.patch(
            "octo",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Strategic(patch),
        )
        .await
        .map_err(anyhow::Error::from),
    );
}

/// Waits until pod `name` runs `version` and is ready.
async fn wait_pod_on(s: &Scenario, name: &str, version: &str) {
    let pods: kube::Api<k8s_openapi::api::core::v1::Pod> = s.ns.api();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let pod = must(pods.get_opt(name).await.map_err(anyhow::Error::from));
        let on = pod.as_ref().is_some_and(|p| {
            let image = p
                .spec
                .as_ref()
                .and_then(|sp| sp.containers.first())
                .and_then(|c| c.image.clone())
                .unwrap_or_default();
            let ready = p
                .status
                .as_ref()
                .and_then(|st| st.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            image.ends_with(&format!(":{version}"))
                && ready
                && p.metadata.deletion_timestamp.is_none()
        });
        if on {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "pod {name} never ran {version}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_in_steady_state_is_rolled_back_once_then_nothing_is_written() {
    let mut s = must(Scenario::start_without_operator("drift", twin_config(false)).await);
    s.resync_interval = Duration::from_secs(2);
    s.start_operator();
    let mut sp = spec("2024.1.100", 3);
    sp["tentacles"] = json!({"upgradeTentacles": true, "environmentIds": ["Environments-1"]});
    create_ready(&s, sp).await;
    // While the operator is down, a person edits the template to another patch of the
    // line and octo-1 is recreated from it.
    s.kill_operator().await;
    set_template_version(&s, "2024.1.150").await;
    let pods: kube::Api<k8s_openapi::api::core::v1::Pod> = s.ns.api();
    must(
        pods.delete("octo-1", &Default::default())
            .await
            .map_err(anyhow::Error::from),
    );
    wait_pod_on(&s, "octo-1", "2024.1.150").await;
    let since = Timestamp::now();
    s.start_operator();
    let c = wait_upgraded(&s, "2024.1.100").await;
    must(
        s.wait_condition("octo", "Ready", true, Some("Ready"), WAIT)
            .await,
    );
    let up = c
        .status
        .and_then(|st| st.upgrade)
        .expect("an ordinary plan");
    assert_eq!(
        (up.from.as_str(), up.change.as_str(), up.strategy.as_deref()),
        ("2024.1.150", "patch-downgrade", Some("rolling"))
    );
    let events = roll_kept_serving(&s, since).await;
    let replay = Replay::new(&events).since(Mark::At(since));
    // One rolling replacement: only the drifted node, drained first.
    assert_eq!(replay.drained(), ["octo-1"]);
    let replaced = Replay::new(&events).stopped_on("2024.1.150");
    assert_eq!(replaced.values().sum::<usize>(), 1, "{replaced:?}");
    assert_eq!(
        count(
            &events,
            |k| matches!(k, EventKind::TaskQueued { name, .. } if name == "Upgrade")
        ),
        0,
        "correcting drift queued Tentacle upgrades"
    );
    // Steady state: several resyncs, and nothing written, published or done.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rv = |c: &octopus_operator::api::OctopusCluster| c.metadata.resource_version.clone();
    let before = rv(&must(
        s.clusters().get("octo").await.map_err(anyhow::Error::from),
    ));
    let events_before = must(s.events_about("octo").await);
    let reconciles_before = s.reconciles();
    let mark = s.twin.events().last().map(|e| e.seq).unwrap_or_default();
    // At least four whole resyncs (2 s each; the fifth has begun), however loaded the
    // machine is.
    let deadline = tokio::time::Instant::now() + WAIT;
    while s.reconciles() - reconciles_before < 5 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no resync ran in steady state"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let after = rv(&must(
        s.clusters().get("octo").await.map_err(anyhow::Error::from),
    ));
    let events_after = must(s.events_about("octo").await);
    let reconciles = s.reconciles() - reconciles_before;
    let moves = count(&s.twin.events_since(mark), |k| {
        matches!(
            k,
            EventKind::NodeDrained { .. }
                | EventKind::NodeUndrained { .. }
                | EventKind::NodeStopped { .. }
                | EventKind::MaintenanceModeOn
                | EventKind::MaintenanceModeOff
                | EventKind::TaskQueued { .. }
        )
    });
    println!(
        "steady state over {reconciles} reconciles: status resourceVersion {before:?} -> \
         {after:?}, {} -> {} Events about octo, {moves} Octopus changes",
        events_before.len(),
        events_after.len()
    );
    assert_eq!(before, after, "the status was written in steady state");
    assert_eq!(
        events_before, events_after,
        "Events were published in steady state"
    );
    assert_eq!(moves, 0, "the operator changed Octopus in steady state");
    must(s.finish().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_upgrade_is_saved_before_maintenance_mode_and_deletion_right_after_releases_it() {
    use futures::StreamExt;
    use kube::runtime::{WatchStreamExt, watcher};
    let s = must(Scenario::start("planfirst", twin_config(false)).await);
    let mut sp = spec("2024.1.100", 2);
    sp["upgrade"]["approvedVersion"] = json!("2024.2.1");
    create_ready(&s, sp).await;
    // Every version of status.upgrade the API server holds, in order.
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let recorder = {
        let seen = seen.clone();
        let stream = watcher(
            s.clusters(),
            watcher::Config::default().fields("metadata.name=octo"),
        )
        .applied_objects();
        tokio::spawn(async move {
            futures::pin_mut!(stream);
            while let Some(Ok(c)) = stream.next().await {
                let upgrade = c.status.and_then(|st| st.upgrade);
                if let Ok(mut seen) = seen.lock() {
                    seen.push(upgrade);
                }
            }
        })
    };
    let mark = s.twin.events().last().map(|e| e.seq).unwrap_or_default();
    must(s.patch_spec("octo", json!({"version": "2024.2.1"})).await);
    // The first action: delete the cluster the moment maintenance mode is on.
    let deadline = tokio::time::Instant::now() + WAIT;
    while count(&s.twin.events_since(mark), |k| {
        matches!(k, EventKind::MaintenanceModeOn)
    }) == 0
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "maintenance mode never went on"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    must(
        s.clusters()
            .delete("octo", &Default::default())
            .await
            .map_err(anyhow::Error::from),
    );
    while must(
        s.clusters()
            .get_opt("octo")
            .await
            .map_err(anyhow::Error::from),
    )
    .is_some()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the cluster was not deleted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    recorder.abort();
    // The plan reached the API server alone, before any step ran.
    let seen = seen.lock().map(|s| s.clone()).unwrap_or_default();
    let first = seen
        .iter()
        .flatten()
        .find(|u| u.to == "2024.2.1")
        .expect("the upgrade was recorded");
    println!(
        "first record of the upgrade: step {:?}, step states {:?}",
        first.step,
        first
            .steps
            .iter()
            .map(|s| s.state.as_str())
            .collect::<Vec<_>>()
    );
    assert!(
        first.step.is_none() && first.steps.iter().all(|st| st.state == "Pending"),
        "the first record of the upgrade already ran a step: {first:?}"
    );
    // Deletion read that record and released maintenance mode.
    let events = s.twin.events_since(mark);
    let maintenance = Replay::new(&events).maintenance_mode();
    let on = maintenance.iter().position(|(_, on)| *on);
    let off = maintenance.iter().rposition(|(_, on)| !*on);
    assert!(
        matches!((on, off), (Some(a), Some(b)) if b > a),
        "maintenance mode left on: {maintenance:?}"
    );
    let drained = count(&events, |k| matches!(k, EventKind::NodeDrained { .. }));
    let undrained = count(&events, |k| matches!(k, EventKind::NodeUndrained { .. }));
    assert_eq!(drained, undrained, "nodes left drained");
    let reasons: Vec<String> = must(s.events_about("octo").await)
        .into_iter()
        .map(|e| e.2)
        .collect();
    assert!(reasons.iter().any(|r| r == "Released"), "{reasons:?}");
    must(s.finish().await);
}

/// The nodes that ever stopped on `version`, and how often.
fn stops_on(events: &[Event], version: &str) -> Vec<(String, usize)> {
    Replay::new(events)
        .stopped_on(version)
        .into_iter()
        .map(|(node, n)| (node.to_string(), n))
        .collect()
}

/// A patch whose image the registry lacks stops the roll within seconds (nodeReadyTimeout
/// is ten minutes); setting spec.version back rolls that node back at once. No second
/// node ever goes out, and no task fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patch_whose_image_cannot_be_pulled_rolls_back_when_the_version_is_set_back() {
    let s = must(Scenario::start("pullback", twin_config(true)).await);
    let mut sp = spec("2024.1.100", 3);
    sp["upgrade"]["nodeReadyTimeout"] = json!("10m");
    create_ready(&s, sp).await;
    // The played registry is told it lacks the tag; the real node never imported it, and
    // its containerd pulls from nowhere.
    s.twin
        .set_missing_images([format!("octopusdeploy/octopusdeploy:{UNPULLABLE}")]);
    let since = Timestamp::now();
    must(s.patch_spec("octo", json!({"version": UNPULLABLE})).await);
    let c = must(
        s.wait_condition("octo", "Degraded", true, Some("NodeImagePullFailed"), WAIT)
            .await,
    );
    let message = condition(&c, "UpgradeBlocked")
        .expect("UpgradeBlocked")
        .message
        .clone();
    for words in [
        "octo-2",
        "ImagePull",
        UNPULLABLE,
        "spec.version back to 2024.1.100",
    ] {
        assert!(message.contains(words), "{words}: {message}");
    }
    must(s.patch_spec("octo", json!({"version": "2024.1.100"})).await);
    let c = wait_upgraded(&s, "2024.1.100").await;
    let up = c.status.and_then(|st| st.upgrade).expect("upgrade");
    assert_eq!(
        (up.from.as_str(), up.change.as_str()),
        (UNPULLABLE, "patch-downgrade")
    );
    must(
        s.wait_condition("octo", "Ready", true, Some("Ready"), WAIT)
            .await,
    );
    let events = roll_kept_serving(&s, since).await;
    let replay = Replay::new(&events);
    assert_eq!(
        replay.drained(),
        ["octo-2"],
        "only the failed node went out"
    );
    assert_eq!(stops_on(&events, "2024.1.100"), [("octo-2".to_string(), 1)]);
    // Only the played kubelet records its pulls; the real one said so in the pod status
    // the operator read (NodeImagePullFailed above).
    if s.world() == World::Played {
        assert!(count(&events, |k| matches!(k, EventKind::ImagePullFailed { .. })) >= 1);
    }
    must(s.finish().await);
}

/// A patch whose server crash-loops stops the roll; a fixed patch of the same line rolls
/// forward at once, the failed node first, one node at a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_looping_patch_rolls_forward_to_a_fixed_patch() {
    let s = must(Scenario::start("crashfwd", twin_config(true)).await);
    let mut sp = spec("2024.1.100", 3);
    sp["upgrade"]["nodeReadyTimeout"] = json!("10m");
    create_ready(&s, sp).await;
    s.twin.set_faults(
        s.ns.name(),
        "octo",
        Faults {
            crash_versions: ["2024.1.200".to_string()].into_iter().collect(),
            ..Faults::default()
        },
    );
    let since = Timestamp::now();
    must(s.patch_spec("octo", json!({"version": "2024.1.200"})).await);
    must(
        s.wait_condition("octo", "Degraded", true, Some("NodeFailedToStart"), WAIT)
            .await,
    );
    must(s.patch_spec("octo", json!({"version": "2024.1.201"})).await);
    wait_upgraded(&s, "2024.1.201").await;
    must(
        s.wait_condition("octo", "Ready", true, Some("Ready"), WAIT)
            .await,
    );
    let events = roll_kept_serving(&s, since).await;
    let replay = Replay::new(&events);
    assert_eq!(replay.drained(), ["octo-2", "octo-1", "octo-0"]);
    // Only octo-2 ran the broken patch. The played kubelet restarts one process; on the
    // real node each crash is a process of its own, stopped once.
    let stops = stops_on(&events, "2024.1.200");
    let stopped: Vec<&str> = stops.iter().map(|(node, _)| node.as_str()).collect();
    assert_eq!(stopped, ["octo-2"]);
    if s.world() == World::Played {
        assert_eq!(stops, [("octo-2".to_string(), 1)]);
    }
    let crashes = count(
        &events,
        |k| matches!(k, EventKind::NodeCrashed { node, version, .. } if node == "octo-2" && version == "2024.1.200"),
    );
    assert!(crashes >= 3, "{crashes} crashes");
    must(s.finish().await);
}

/// After a schema upgrade's first node, OrderedReady starts the others one by one: each
/// gets nodeReadyTimeout from its own start, so nodes that take longer together than one
/// timeout still finish the upgrade.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_upgrade_times_each_starting_node_from_its_own_start() {
    let s = must(Scenario::start("pernode", twin_config(false)).await);
    // A real pod adds its container start and readiness probe period to the start delay.
    let (start_delay, timeout) = match s.world() {
        World::Played => (Duration::from_secs(4), 8),
        World::Real => (Duration::from_secs(15), 30),
    };
    let mut sp = spec("2024.1.100", 4);
    sp["upgrade"]["approvedVersion"] = json!("2024.2.1");
    sp["upgrade"]["nodeReadyTimeout"] = json!(format!("{timeout}s"));
    create_ready(&s, sp).await;
    s.twin.set_timing(
        s.ns.name(),
        "octo",
        octopus_e2e::twin::Timing {
            start_delay,
            ..twin_config(false).timing
        },
    );
    must(s.patch_spec("octo", json!({"version": "2024.2.1"})).await);
    wait_upgraded(&s, "2024.2.1").await;
    must(
        s.wait_condition("octo", "Ready", true, Some("Ready"), WAIT)
            .await,
    );
    // The premise: nodes 1 to 3 took longer together than one nodeReadyTimeout.
    let events = s.twin.events();
    let replay = Replay::new(&events);
    let first = replay
        .first(|k| matches!(k, EventKind::NodeStarting { node, version, .. } if node == "octo-1" && version == "2024.2.1"))
        .expect("octo-1 started on 2024.2.1")
        .at;
    let last = replay
        .first(|k| matches!(k, EventKind::NodeRunning { node, version, .. } if node == "octo-3" && version == "2024.2.1"))
        .expect("octo-3 ran on 2024.2.1")
        .at;
    assert!(
        last.duration_since(first) > jiff::SignedDuration::from_secs(timeout),
        "the nodes started within one timeout ({first} .. {last})"
    );
    assert_eq!(replay.schema().violations, 0);
    must(s.finish().await);
}
