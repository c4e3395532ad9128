//! Leader election between two operator processes (the built binary) on the real API
//! server: only the Lease holder reconciles; the leader is killed with SIGKILL in the
//! middle of a patch roll; the standby takes over within the lease duration plus 5 s and
//! finishes the roll with never more than one node out of service. Fails (never skips)
//! when the control plane cannot be reached.
//!
//! Runs in the played world, whatever OCTOPUS_E2E_WORLD says: its replicas are host
//! processes reaching the twin's load balancer, not yet processes in the node.

use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use octopus_e2e::operator_process::{OperatorProcess, lease_holder, sample};
use octopus_e2e::scenario::{Scenario, World, must, spec, twin_config};
use octopus_e2e::twin::replay::{Mark, Replay};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(120);
const LEASE: &str = "octopus-operator-e2e";
/// A short lease so the test is quick; the renew period leaves 3 s of grace.
const LEASE_SECONDS: u64 = 8;
const RENEW_SECONDS: u64 = 5;

async fn replica(s: &Scenario, identity: &str) -> OperatorProcess {
    let flags = [
        "--leader-elect=true".to_string(),
        format!("--leader-election-lease-name={LEASE}"),
        format!("--leader-election-namespace={}", s.ns.name()),
        format!("--leader-election-identity={identity}"),
        format!("--lease-duration={LEASE_SECONDS}s"),
        format!("--lease-renew-period={RENEW_SECONDS}s"),
    ];
    must(OperatorProcess::start(s, identity, &flags).await)
}

async fn holder(leases: &Api<Lease>) -> Option<String> {
    lease_holder(leases, LEASE).await
}

async fn wait_holder(leases: &Api<Lease>, identity: &str, timeout: Duration) -> Duration {
    let started = Instant::now();
    while holder(leases).await.as_deref() != Some(identity) {
        assert!(
            started.elapsed() < timeout,
            "{identity} did not take the Lease within {timeout:?} (holder: {:?})",
            holder(leases).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    started.elapsed()
}

fn nodes_on(c: &octopus_operator::api::OctopusCluster, version: &str) -> usize {
    c.status.as_ref().map_or(0, |st| {
        st.nodes
            .iter()
            .filter(|n| n.version.as_deref() == Some(version))
            .count()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standby_takes_over_a_patch_roll_when_the_leader_is_killed() {
    let s =
        must(Scenario::start_without_operator_in(World::Played, "leader", twin_config(true)).await);
    let leases: Api<Lease> = s.ns.api();

    let mut a = replica(&s, "operator-a").await;
    wait_holder(&leases, "operator-a", Duration::from_secs(30)).await;
    let b = replica(&s, "operator-b").await;
    assert_eq!(must(b.wait_for("/readyz", 200, WAIT).await), "standby\n");
    assert_eq!(must(a.wait_for("/readyz", 200, WAIT).await), "leader\n");

    must(s.create_cluster("octo", spec("2024.1.100", 3)).await);
    must(
        s.wait_condition("octo", "Ready", true, Some("Ready"), WAIT)
            .await,
    );
    let since = Timestamp::now();
    must(s.patch_spec("octo", json!({"version": "2024.1.200"})).await);
    must(
        s.wait_for("octo", "the first node on 2024.1.200", WAIT, |c| {
            nodes_on(c, "2024.1.200") >= 1
                && c.status
                    .as_ref()
                    .and_then(|st| st.upgrade.as_ref())
                    .is_some_and(|u| u.finished_at.is_none())
        })
        .await,
    );

    // Only the leader has reconciled so far.
    let (_, standby) = b.get("/metrics").await.expect("standby metrics");
    assert_eq!(
        sample(&standby, "octopus_operator_reconciles_total"),
        Some(0.0)
    );
    assert_eq!(sample(&standby, "octopus_operator_leader "), Some(0.0));
    let (_, leader) = a.get("/metrics").await.expect("leader metrics");
    assert!(sample(&leader, "octopus_operator_reconciles_total").unwrap_or(0.0) > 0.0);
    assert_eq!(sample(&leader, "octopus_operator_leader "), Some(1.0));

    // SIGKILL in the middle of the roll: no Lease release, no graceful anything.
    let mid_roll = must(s.clusters().get("octo").await.map_err(anyhow::Error::from));
    let step = mid_roll
        .status
        .as_ref()
        .and_then(|st| st.upgrade.as_ref())
        .and_then(|u| u.step.clone());
    a.kill();
    let bound = Duration::from_secs(LEASE_SECONDS + 5);
    let takeover = wait_holder(&leases, "operator-b", bound + Duration::from_secs(10)).await;
    println!(
        "takeover: operator-b holds the Lease {:.2} s after operator-a was killed (SIGKILL at step {step:?}; lease {LEASE_SECONDS} s, renew {RENEW_SECONDS} s)",
        takeover.as_secs_f64()
    );
    assert!(
        takeover <= bound,
        "takeover took {takeover:?}, more than the lease duration plus 5 s"
    );
    assert_eq!(must(b.wait_for("/readyz", 200, WAIT).await), "leader\n");

    must(
        s.wait_for("octo", "the roll to finish on 2024.1.200", WAIT, |c| {
            c.status.as_ref().is_some_and(|st| {
                st.current_version.as_deref() == Some("2024.1.200")
                    && st.upgrade.as_ref().is_some_and(|u| u.finished_at.is_some())
            })
        })
        .await,
    );
    let c = must(
        s.wait_condition("octo", "Ready", true, Some("Ready"), WAIT)
            .await,
    );
    assert!(c.status.expect("status").nodes.iter().all(|n| !n.drained));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let events = s.twin.events();
    let replay = Replay::new(&events);
    let fewest = replay.since(Mark::At(since)).min_serving();
    println!("fewest nodes serving during the roll and the takeover: {fewest} of 3");
    assert!(
        fewest >= 2,
        "fewer than 2 of 3 nodes served at some moment ({fewest})"
    );
    let replaced: usize = replay.stopped_on("2024.1.100").values().sum();
    assert_eq!(replaced, 3, "each node is replaced exactly once");
    assert_eq!(replay.tasks().failed, 0, "a task failed during the roll");
    let (_, after) = b.get("/metrics").await.expect("new leader metrics");
    assert!(sample(&after, "octopus_operator_reconciles_total").unwrap_or(0.0) > 0.0);
    assert_eq!(sample(&after, "octopus_operator_leader "), Some(1.0));

    // A graceful stop releases the Lease; the scenario's own operator then cleans up.
    let exit = must(b.terminate(Duration::from_secs(30)).await);
    assert!(exit.success(), "operator-b exited with {exit}");
    assert_eq!(
        holder(&leases).await,
        None,
        "the Lease is released on SIGTERM"
    );
    must(s.finish().await);
}
