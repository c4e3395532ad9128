//! `--max-concurrent-upgrades` on the real API server: three clusters bumped at once with
//! a cap of one upgrade at a time, the operator killed and restarted while one upgrades.
//! From the clusters' status, polled throughout: never two upgrades recorded at once, the
//! others wait with `WaitingForUpgradeSlot` (not blocked, not degraded), and all finish.
//! Fails (never skips) when the control plane cannot be reached.

use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::api::{ListParams, PostParams};
use octopus_e2e::scenario::{Scenario, World, condition, must, spec, twin_config};
use octopus_operator::api::OctopusCluster;
use serde_json::json;

const FROM: &str = "2024.1.100";
const TO: &str = "2024.1.200";
const CLUSTERS: usize = 3;
const WAIT: Duration = Duration::from_secs(180);

fn name(i: usize) -> String {
    format!("octo-{i}")
}

/// Each cluster its own database, so the twin gives each its own Octopus installation.
async fn create(s: &Scenario, i: usize) {
    let secrets: kube::Api<Secret> = s.ns.api();
    let db: Secret = must(
        serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": format!("octopus-db-{i}")},
            "stringData": {"connectionString": format!(
                "Server=mssql;Database=Octopus-{}-{i};User Id=octopus;Password=e2e", s.ns.name()
            )},
        }))
        .map_err(Into::into),
    );
    must(
        secrets
            .create(&PostParams::default(), &db)
            .await
            .map_err(Into::into),
    );
    let mut sp = spec(FROM, 2);
    sp["database"]["connectionStringSecretRef"]["name"] = json!(format!("octopus-db-{i}"));
    must(s.create_cluster(&name(i), sp).await);
}

fn upgrading(c: &OctopusCluster) -> bool {
    c.status
        .as_ref()
        .and_then(|s| s.upgrade.as_ref())
        .is_some_and(|u| u.finished_at.is_none())
}

fn done(c: &OctopusCluster) -> bool {
    c.status.as_ref().is_some_and(|s| {
        s.current_version.as_deref() == Some(TO)
            && s.upgrade.as_ref().is_some_and(|u| u.finished_at.is_some())
    }) && condition(c, "Ready").is_some_and(|r| r.status == "True")
}

fn waiting_for_slot(c: &OctopusCluster) -> bool {
    let reason = |t: &str| condition(c, t).map(|k| (k.status.clone(), k.reason.clone()));
    let waits =
        reason("Progressing") == Some(("True".to_string(), "WaitingForUpgradeSlot".to_string()));
    if waits {
        assert_eq!(
            reason("UpgradeBlocked").map(|r| r.0).as_deref(),
            Some("False"),
            "waiting for a slot is no block"
        );
        assert_eq!(
            reason("Degraded").map(|r| r.0).as_deref(),
            Some("False"),
            "waiting for a slot is no fault"
        );
    }
    waits
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cap_of_one_upgrades_one_cluster_at_a_time_across_a_restart() {
    let mut s =
        must(Scenario::start_without_operator_in(World::Played, "blast", twin_config(false)).await);
    s.max_concurrent_upgrades = NonZeroU32::new(1);
    s.start_operator();
    for i in 0..CLUSTERS {
        create(&s, i).await;
    }
    for i in 0..CLUSTERS {
        must(
            s.wait_condition(&name(i), "Ready", true, Some("Ready"), WAIT)
                .await,
        );
    }

    for i in 0..CLUSTERS {
        must(s.patch_spec(&name(i), json!({"version": TO})).await);
    }
    let started = Instant::now();
    let (mut most, mut waits_seen, mut restarted) = (0, 0, false);
    loop {
        let list = must(
            s.clusters()
                .list(&ListParams::default())
                .await
                .map_err(Into::into),
        )
        .items;
        let now = list.iter().filter(|c| upgrading(c)).count();
        most = most.max(now);
        assert!(now <= 1, "{now} upgrades recorded at once with a cap of 1");
        waits_seen += list.iter().filter(|c| waiting_for_slot(c)).count();
        // Kill the operator while one cluster upgrades and others wait: the new process
        // counts the slot from status.
        if !restarted && now == 1 && waits_seen > 0 {
            s.kill_operator().await;
            s.start_operator();
            restarted = true;
        }
        if list.len() == CLUSTERS && list.iter().all(done) {
            break;
        }
        assert!(
            started.elapsed() < WAIT,
            "the fleet did not finish: {:?}",
            list.iter()
                .map(|c| (
                    c.metadata.name.clone(),
                    c.status.as_ref().and_then(|s| s.phase.clone())
                ))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(most, 1, "one cluster upgraded at a time");
    assert!(waits_seen > 0, "the others waited for a slot");
    assert!(restarted, "the operator was restarted mid-upgrade");
    must(s.finish().await);
}
