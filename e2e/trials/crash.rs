//! Crash anywhere: the operator process is killed with SIGKILL at random moments of the
//! upgrade (uniform in [0, 3 s) after it started or took over), [`KILLS`] times or until
//! the upgrade finished; with two replicas the Lease holder is the one killed and a fresh
//! replica joins, as a Deployment would start a new pod.

use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use octopus_e2e::operator_process::lease_holder;

use crate::trial::{Trial, step};

/// Kills per trial at most (fewer when the upgrade finishes first).
const KILLS: usize = 4;
/// A kill comes this long at most after the operator started or took over.
const WITHIN_MS: u64 = 3000;
/// Down time of a single replica before it is started again, at most.
const DOWN_MS: u64 = 1000;
const LEASE: &str = "octopus-operator-trials";
/// Short, so takeovers do not dominate the trial; renew leaves 2 s for clock skew.
const LEASE_SECONDS: u64 = 4;
const RENEW_SECONDS: u64 = 2;

/// One replica, killed and started again.
pub async fn single(t: &mut Trial) -> Result<()> {
    t.begin_upgrade().await?;
    let mut steps = Vec::new();
    while t.kills < KILLS {
        tokio::time::sleep(Duration::from_millis(t.rng.u64(0..WITHIN_MS))).await;
        let c = t.cluster().await?;
        if crate::trial::finished(&c, t.upgrade.to) {
            break;
        }
        let Some(op) = t.operators.last_mut() else {
            bail!("no operator process to kill");
        };
        op.kill();
        t.operators.clear();
        t.kills += 1;
        steps.push(step(&c));
        tokio::time::sleep(Duration::from_millis(t.rng.u64(0..DOWN_MS))).await;
        t.start_operator(&["--leader-elect=false".into()]).await?;
    }
    t.notes.push(format!("killed at: {}", steps.join(", ")));
    Ok(())
}

fn replica_flags(t: &Trial, identity: &str) -> Vec<String> {
    vec![
        "--leader-elect=true".into(),
        format!("--leader-election-lease-name={LEASE}"),
        format!("--leader-election-namespace={}", t.s.ns.name()),
        format!("--leader-election-identity={identity}"),
        format!("--lease-duration={LEASE_SECONDS}s"),
        format!("--lease-renew-period={RENEW_SECONDS}s"),
    ]
}

/// Starts a replica; its identity in the Lease is its label.
async fn replica(t: &mut Trial) -> Result<String> {
    let flags = replica_flags(t, &t.next_label());
    t.start_operator(&flags).await
}

async fn holder(leases: &Api<Lease>) -> Option<String> {
    lease_holder(leases, LEASE).await
}

/// Waits until a replica other than `not` holds the Lease (a kill's takeover).
async fn wait_holder(leases: &Api<Lease>, not: Option<&str>) -> Result<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(LEASE_SECONDS * 10);
    loop {
        if let Some(h) = holder(leases).await
            && Some(h.as_str()) != not
        {
            return Ok(h);
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("no replica took the Lease (last holder {not:?})");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Two replicas with leader election; the holder killed.
pub async fn leader(t: &mut Trial) -> Result<()> {
    // The replica that made the cluster Ready runs without election: replace it.
    for op in &mut t.operators {
        op.kill();
    }
    t.operators.clear();
    let leases: Api<Lease> = t.s.ns.api();
    let mut identities = vec![replica(t).await?];
    wait_holder(&leases, None).await?;
    identities.push(replica(t).await?);
    t.begin_upgrade().await?;
    let mut steps = Vec::new();
    let mut last: Option<String> = None;
    while t.kills < KILLS {
        let leader = wait_holder(&leases, last.as_deref()).await?;
        tokio::time::sleep(Duration::from_millis(t.rng.u64(0..WITHIN_MS))).await;
        let c = t.cluster().await?;
        if crate::trial::finished(&c, t.upgrade.to) {
            break;
        }
        let index = identities
            .iter()
            .position(|i| *i == leader)
            .with_context(|| format!("the Lease holder {leader} is none of {identities:?}"))?;
        let mut killed = t.operators.remove(index);
        identities.remove(index);
        killed.kill();
        t.kills += 1;
        steps.push(step(&c));
        last = Some(leader);
        identities.push(replica(t).await?);
    }
    t.notes
        .push(format!("leader killed at: {}", steps.join(", ")));
    Ok(())
}
