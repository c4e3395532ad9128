//! Upgrade runs: a scenario (own namespace, twin, backup-Job runner, in-process operator)
//! gets a Ready cluster with deployments flowing, the spec changes, and the run records
//! the wall time until the operator reports Ready on the new version, the twin's events
//! and the operator's counters over exactly that span.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use jiff::Timestamp;
use octopus_e2e::scenario::{Scenario, condition, spec};
use octopus_e2e::twin::replay::upgrade::{NodeRoll, StopTheWorld};
use octopus_e2e::twin::replay::{Mark, Replay, Requests, Tasks, span};
use octopus_e2e::twin::{Event, GeneratorConfig, Timing, TwinConfig};
use octopus_operator::api::OctopusCluster;
use serde_json::{Value, json};

use crate::prom::Counters;

pub const FROM: &str = "2024.1.100";
/// Patch targets, upgraded to one after the other in one cluster: one run each.
pub const PATCHES: [&str; 3] = ["2024.1.200", "2024.1.201", "2024.1.202"];
/// Minor targets (each a schema change), one after the other.
pub const MINORS: [&str; 3] = ["2024.2.50", "2024.3.50", "2024.4.50"];
const NAME: &str = "octo";
/// Between two runs in one cluster, so the last node undrained holds tasks again.
const BETWEEN_RUNS: Duration = Duration::from_secs(4);
/// Longest wait for any one thing; a run that needs more fails the bench.
const WAIT: Duration = Duration::from_secs(180);
/// Deployments flow this long before the upgrade starts, so nodes hold running tasks.
const WARM_UP: Duration = Duration::from_secs(6);
/// How long a backup Job's pod "runs" (the sleep in `octopus_e2e::jobs`).
pub const BACKUP_RUN: Duration = Duration::from_millis(500);

/// How long things take inside the twin: what no operator can make faster.
pub fn timing() -> Timing {
    Timing {
        start_delay: Duration::from_secs(1),
        migration_time: Duration::from_secs(3),
        ..Timing::default()
    }
}

/// Users queue deployments all along; each runs 1-4 s.
pub fn generator() -> GeneratorConfig {
    GeneratorConfig {
        enabled: true,
        deployments_per_minute: 90.0,
        deployment_duration_min: Duration::from_secs(1),
        deployment_duration_max: Duration::from_secs(4),
        ..GeneratorConfig::default()
    }
}

/// What one upgrade run observed, from the spec change to Ready.
pub struct Run {
    pub nodes: usize,
    pub from: String,
    pub to: String,
    pub since: Timestamp,
    pub ready: Timestamp,
    pub wall: Duration,
    pub events: Vec<Event>,
    /// The operator's counters over the run.
    pub counters: Counters,
    pub requests: Requests,
    pub tasks: Tasks,
    pub min_serving: usize,
}

/// A patch upgrade rolled node by node.
pub struct Rolling {
    pub run: Run,
    pub nodes: Vec<NodeRoll>,
}

impl Rolling {
    /// Σ over nodes of the drain wait and the twin's start delay.
    pub fn irreducible(&self) -> Duration {
        self.nodes
            .iter()
            .map(|n| n.drain_wait + n.start_delay())
            .sum()
    }

    /// The operator's (and the control plane's) share of the wall time, by gap.
    pub fn gaps(&self) -> Gaps {
        let mut g = Gaps::default();
        let mut previous = self.run.since;
        for n in &self.nodes {
            g.to_drain += span(previous, n.drained);
            if let Some(stopped) = n.stopped {
                g.to_delete += span(n.tasks_done(), stopped);
                if let Some(starting) = n.starting {
                    g.to_recreate += span(stopped, starting);
                }
            }
            if let (Some(running), Some(undrained)) = (n.running, n.undrained) {
                g.to_undrain += span(running, undrained);
                previous = undrained;
            }
        }
        g.to_ready = span(previous, self.run.ready);
        g
    }
}

/// Where a roll's overhead goes, summed over nodes.
#[derive(Default)]
pub struct Gaps {
    /// Spec change or the previous node undrained -> this node drained.
    pub to_drain: Duration,
    /// The node's tasks done -> its old pod stopped.
    pub to_delete: Duration,
    /// Old pod stopped -> new pod's container started (StatefulSet controller, kubelet).
    pub to_recreate: Duration,
    /// New process running -> node undrained (pod Ready, version verified).
    pub to_undrain: Duration,
    /// Last node undrained -> Ready reported in status.
    pub to_ready: Duration,
}

/// A schema-changing upgrade, stop-the-world.
pub struct Minor {
    pub run: Run,
    pub stw: StopTheWorld,
    pub backup_done: Option<Timestamp>,
}

impl Minor {
    /// Task drain + backup + schema migration + start delays.
    pub fn irreducible(&self) -> Duration {
        self.stw.drain_wait + BACKUP_RUN + self.stw.migration() + self.stw.start_delays()
    }

    /// Maintenance mode on -> off: deployments are refused all along.
    pub fn maintenance(&self) -> Option<Duration> {
        Some(span(self.stw.maintenance_on?, self.stw.maintenance_off?))
    }

    /// What maintenance mode cannot go below: task drain + backup + schema migration + the
    /// first node's start on the new version.
    pub fn irreducible_maintenance(&self) -> Duration {
        let first_start = self.stw.starts.first().map_or(Duration::ZERO, |s| {
            s.running
                .map_or(Duration::ZERO, |r| span(s.starting, r))
                .saturating_sub(self.stw.migration())
        });
        self.stw.drain_wait + BACKUP_RUN + self.stw.migration() + first_start
    }

    /// First node stopped -> first node serving on the new version.
    pub fn downtime(&self) -> Option<Duration> {
        Some(span(self.stw.first_stop?, self.stw.first_serving_new?))
    }

    /// What the downtime cannot go below: migration + start delays.
    pub fn irreducible_downtime(&self) -> Duration {
        self.stw.migration() + self.stw.start_delays()
    }
}

/// Patch upgrades of `nodes` nodes with deployments flowing, one run per [`PATCHES`].
pub async fn rolling(nodes: usize) -> Result<Vec<Rolling>> {
    let s = prepare(&format!("bench-patch{nodes}"), nodes).await?;
    let runs = rolling_runs(&s, nodes).await;
    teardown(s).await;
    runs
}

async fn rolling_runs(s: &Scenario, nodes: usize) -> Result<Vec<Rolling>> {
    let mut runs = Vec::new();
    let mut from = FROM;
    for to in PATCHES {
        if !runs.is_empty() {
            tokio::time::sleep(BETWEEN_RUNS).await;
        }
        let run = upgrade(s, nodes, from, json!({ "version": to }), to).await?;
        let rolled = Replay::new(&run.events)
            .since(Mark::At(run.since))
            .rolling(to);
        if rolled.len() != nodes {
            bail!(
                "the twin saw {} of {nodes} nodes drained during the roll to {to}",
                rolled.len()
            );
        }
        runs.push(Rolling { run, nodes: rolled });
        from = to;
    }
    Ok(runs)
}

/// Minor upgrades (schema changes) of `nodes` nodes, each approved with the version
/// change, one run per [`MINORS`].
pub async fn minor(nodes: usize) -> Result<Vec<Minor>> {
    let s = prepare(&format!("bench-minor{nodes}"), nodes).await?;
    let runs = minor_runs(&s, nodes).await;
    teardown(s).await;
    runs
}

async fn minor_runs(s: &Scenario, nodes: usize) -> Result<Vec<Minor>> {
    let mut runs = Vec::new();
    let mut from = FROM;
    for to in MINORS {
        if !runs.is_empty() {
            tokio::time::sleep(BETWEEN_RUNS).await;
        }
        let change = json!({ "version": to, "upgrade": { "approvedVersion": to } });
        let run = upgrade(s, nodes, from, change, to).await?;
        let backup_done = s
            .jobs
            .runs()
            .iter()
            .filter(|r| r.succeeded && r.at > run.since)
            .map(|r| r.at)
            .min();
        let stw = Replay::new(&run.events)
            .since(Mark::At(run.since))
            .stop_the_world(to);
        runs.push(Minor {
            run,
            stw,
            backup_done,
        });
        from = to;
    }
    Ok(runs)
}

/// The run with the median wall time (the upper one of an even count).
pub fn median<T>(runs: &[T], run: impl Fn(&T) -> &Run) -> Option<&T> {
    let mut sorted: Vec<&T> = runs.iter().collect();
    sorted.sort_by_key(|r| run(r).wall);
    sorted.get(sorted.len() / 2).copied()
}

/// A scenario with a Ready cluster of `nodes` nodes on [`FROM`] and deployments flowing.
async fn prepare(prefix: &str, nodes: usize) -> Result<Scenario> {
    let s = Scenario::start(
        prefix,
        TwinConfig {
            timing: timing(),
            generator: generator(),
            ..TwinConfig::default()
        },
    )
    .await?;
    let replicas = i32::try_from(nodes).context("node count")?;
    s.create_cluster(NAME, spec(FROM, replicas)).await?;
    s.wait_condition(NAME, "Ready", true, Some("Ready"), WAIT)
        .await
        .with_context(|| format!("creating {nodes} nodes on {FROM}"))?;
    tokio::time::sleep(WARM_UP).await;
    Ok(s)
}

/// Changes the spec and waits (polling every 50 ms) until the operator reports Ready on
/// `to`; reads the twin and the counters over that span.
async fn upgrade(s: &Scenario, nodes: usize, from: &str, change: Value, to: &str) -> Result<Run> {
    let before = Counters::parse(&s.metrics_text());
    let since = Timestamp::now();
    let started = Instant::now();
    s.patch_spec(NAME, change).await?;
    let deadline = started + WAIT;
    let ready = loop {
        let c = s.clusters().get(NAME).await?;
        if upgraded(&c, to) {
            break Timestamp::now();
        }
        if Instant::now() >= deadline {
            bail!(
                "no Ready on {to} within {WAIT:?}; status: {}",
                serde_json::to_string(&c.status).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let wall = started.elapsed();
    let counters = Counters::parse(&s.metrics_text()).since(&before);
    let events = s.twin.events();
    let during = Replay::new(&events)
        .since(Mark::At(since))
        .until(Mark::At(ready));
    Ok(Run {
        nodes,
        from: from.to_string(),
        to: to.to_string(),
        since,
        ready,
        wall,
        counters,
        requests: during.requests(),
        tasks: during.tasks(),
        min_serving: during.min_serving(),
        events,
    })
}

/// Every node on `to`, the upgrade finished, and Ready for the current generation.
fn upgraded(c: &OctopusCluster, to: &str) -> bool {
    let Some(st) = &c.status else {
        return false;
    };
    st.current_version.as_deref() == Some(to)
        && st
            .upgrade
            .as_ref()
            .is_none_or(|u| u.to == to && u.finished_at.is_some())
        && condition(c, "Ready")
            .is_some_and(|r| r.status == "True" && r.observed_generation == c.metadata.generation)
}

/// Deletes the cluster while the operator still runs (its finalizer needs it), then
/// stops everything and deletes the namespace. Problems are reported, not fatal: the
/// figures are already taken.
async fn teardown(s: Scenario) {
    if let Err(e) = delete_clusters(&s.clusters(), &[NAME.to_string()]).await {
        eprintln!("bench: warning: cleaning up {}: {e:#}", s.ns.name());
    }
    if let Err(e) = s.finish().await {
        eprintln!("bench: warning: cleaning up: {e:#}");
    }
}

/// Deletes the named clusters and waits until they are gone.
pub async fn delete_clusters(api: &kube::Api<OctopusCluster>, names: &[String]) -> Result<()> {
    for name in names {
        api.delete(name, &kube::api::DeleteParams::default())
            .await?;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = api
            .list(&kube::api::ListParams::default())
            .await?
            .items
            .len();
        if left == 0 {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("{left} OctopusCluster(s) still there after 60 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
