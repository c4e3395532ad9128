//! One trial's world and its verdict: a `Scenario` (namespace, twin, backup runner) with a
//! 3-node cluster made Ready by an operator process, an upgrade begun at a mark in the
//! twin's log, and at the end every check: the upgrade finished, the shared invariants
//! over the log since the mark, the backups, and the secret scan.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use k8s_openapi::api::batch::v1::Job;
use octopus_e2e::operator_process::OperatorProcess;
use octopus_e2e::scenario::{Scenario, World, condition, spec, twin_config};
use octopus_e2e::twin::replay::invariants::{self, Expected, Strategy};
use octopus_e2e::twin::replay::{Mark, Replay};
use octopus_e2e::twin::{EventKind, TwinConfig};
use octopus_operator::api::OctopusCluster;
use serde_json::json;

use crate::secrets::Scan;

pub const NAME: &str = "octo";
pub const NODES: usize = 3;
/// Longest an upgrade may take once nothing disturbs it any more.
const FINISH: Duration = Duration::from_secs(240);

/// The kinds of trial, each replayable by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    CrashPatch,
    CrashMinor,
    LeaderPatch,
    LeaderMinor,
    ApiserverPatch,
    ApiserverMinor,
    Errors5xxPatch,
    Errors5xxMinor,
    DropsPatch,
    DropsMinor,
    ExpiredKeyPatch,
    ExpiredKeyMinor,
}

impl Kind {
    pub const CRASH: [Self; 4] = [
        Self::CrashPatch,
        Self::CrashMinor,
        Self::LeaderPatch,
        Self::LeaderMinor,
    ];
    pub const OTHERS: [Self; 8] = [
        Self::ApiserverPatch,
        Self::ApiserverMinor,
        Self::Errors5xxPatch,
        Self::Errors5xxMinor,
        Self::DropsPatch,
        Self::DropsMinor,
        Self::ExpiredKeyPatch,
        Self::ExpiredKeyMinor,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::CrashPatch => "crash-patch",
            Self::CrashMinor => "crash-minor",
            Self::LeaderPatch => "leader-patch",
            Self::LeaderMinor => "leader-minor",
            Self::ApiserverPatch => "apiserver-patch",
            Self::ApiserverMinor => "apiserver-minor",
            Self::Errors5xxPatch => "5xx-patch",
            Self::Errors5xxMinor => "5xx-minor",
            Self::DropsPatch => "drops-patch",
            Self::DropsMinor => "drops-minor",
            Self::ExpiredKeyPatch => "expired-key-patch",
            Self::ExpiredKeyMinor => "expired-key-minor",
        }
    }

    pub fn parse(name: &str) -> Result<Self> {
        Self::CRASH
            .into_iter()
            .chain(Self::OTHERS)
            .find(|k| k.name() == name)
            .with_context(|| format!("no trial kind {name:?}"))
    }

    fn upgrade(self) -> Upgrade {
        match self {
            Self::CrashPatch
            | Self::LeaderPatch
            | Self::ApiserverPatch
            | Self::Errors5xxPatch
            | Self::DropsPatch
            | Self::ExpiredKeyPatch => Upgrade::PATCH,
            _ => Upgrade::MINOR,
        }
    }
}

/// The upgrade a trial carries out.
#[derive(Clone, Copy, Debug)]
pub struct Upgrade {
    pub strategy: Strategy,
    pub from: &'static str,
    pub to: &'static str,
}

impl Upgrade {
    const PATCH: Self = Self {
        strategy: Strategy::Rolling,
        from: "2024.1.100",
        to: "2024.1.200",
    };
    /// Approved in the spec from the start: it begins as soon as the version changes.
    const MINOR: Self = Self {
        strategy: Strategy::StopTheWorld,
        from: "2024.1.100",
        to: "2024.2.50",
    };

    pub fn schema_changes(self) -> bool {
        self.strategy == Strategy::StopTheWorld
    }
}

/// A trial's verdict.
pub struct Outcome {
    pub kind: Kind,
    pub seed: u64,
    pub kills: usize,
    pub violations: Vec<String>,
    pub secret_hits: usize,
    pub duration: Duration,
    /// What happened, in a few words (kill steps, restart point, fault figures).
    pub note: String,
}

/// Runs one trial; a trial that could not be carried out counts as one violation.
pub async fn run(kind: Kind, seed: u64) -> Outcome {
    let started = Instant::now();
    let mut outcome = Outcome {
        kind,
        seed,
        kills: 0,
        violations: Vec::new(),
        secret_hits: 0,
        duration: Duration::ZERO,
        note: String::new(),
    };
    let result = match Trial::start(kind, seed).await {
        Ok(mut trial) => {
            let ran = match kind {
                Kind::CrashPatch | Kind::CrashMinor => crate::crash::single(&mut trial).await,
                Kind::LeaderPatch | Kind::LeaderMinor => crate::crash::leader(&mut trial).await,
                Kind::ApiserverPatch | Kind::ApiserverMinor => {
                    crate::apiserver::restart(&mut trial).await
                }
                Kind::Errors5xxPatch | Kind::Errors5xxMinor => {
                    crate::faults::errors(&mut trial).await
                }
                Kind::DropsPatch | Kind::DropsMinor => crate::faults::drops(&mut trial).await,
                Kind::ExpiredKeyPatch | Kind::ExpiredKeyMinor => {
                    crate::faults::expired_key(&mut trial).await
                }
            };
            if let Err(e) = ran {
                trial.violations.push(format!("trial aborted: {e:#}"));
            }
            let verdict = trial.finish().await;
            outcome.kills = verdict.kills;
            outcome.secret_hits = verdict.secret_hits;
            outcome.note = verdict.note;
            Ok(verdict.violations)
        }
        Err(e) => Err(e),
    };
    match result {
        Ok(violations) => outcome.violations = violations,
        Err(e) => outcome
            .violations
            .push(format!("trial could not start: {e:#}")),
    }
    outcome.duration = started.elapsed();
    outcome
}

/// A trial under way.
pub struct Trial {
    pub upgrade: Upgrade,
    pub rng: fastrand::Rng,
    pub s: Scenario,
    /// Operator processes alive now.
    pub operators: Vec<OperatorProcess>,
    /// Every operator log of the trial, for the secret scan.
    logs: Vec<PathBuf>,
    started: usize,
    /// The twin's last event before the upgrade began.
    pub mark: u64,
    pub kills: usize,
    pub violations: Vec<String>,
    pub notes: Vec<String>,
    pub scan: Scan,
}

/// What [`Trial::finish`] found.
pub struct Verdict {
    pub kills: usize,
    pub violations: Vec<String>,
    pub secret_hits: usize,
    pub note: String,
}

impl Trial {
    /// A Ready cluster of [`NODES`] on the upgrade's `from`, one operator process (no
    /// leader election) running.
    async fn start(kind: Kind, seed: u64) -> Result<Self> {
        let upgrade = kind.upgrade();
        // The played world: the trials' operator is an `OperatorProcess` on the host, which
        // reaches the twin's load balancer, not pods in the node.
        let s = Scenario::start_without_operator_in(
            World::Played,
            &format!("trial-{}", kind.name()),
            TwinConfig {
                seed,
                ..twin_config(true)
            },
        )
        .await?;
        let scan = Scan::of(&s).await?;
        let mut trial = Self {
            upgrade,
            rng: fastrand::Rng::with_seed(seed),
            s,
            operators: Vec::new(),
            logs: Vec::new(),
            started: 0,
            mark: 0,
            kills: 0,
            violations: Vec::new(),
            notes: Vec::new(),
            scan,
        };
        trial
            .start_operator(&["--leader-elect=false".into()])
            .await?;
        let mut sp = spec(upgrade.from, i32::try_from(NODES)?);
        if upgrade.schema_changes() {
            sp["upgrade"]["approvedVersion"] = json!(upgrade.to);
        }
        trial.s.create_cluster(NAME, sp).await?;
        trial.wait("the cluster to be Ready", FINISH, ready).await?;
        Ok(trial)
    }

    /// The label of the next operator process, `op-N`.
    pub fn next_label(&self) -> String {
        format!("op-{}", self.started + 1)
    }

    /// Starts one more operator process with `flags`; returns its label.
    pub async fn start_operator(&mut self, flags: &[String]) -> Result<String> {
        let label = self.next_label();
        self.started += 1;
        let op = OperatorProcess::start(&self.s, &label, flags).await?;
        self.logs.push(op.log.clone());
        self.operators.push(op);
        Ok(label)
    }

    /// Marks the log and sets spec.version to the upgrade's target.
    pub async fn begin_upgrade(&mut self) -> Result<()> {
        self.mark = self.s.twin.events().last().map_or(0, |e| e.seq);
        self.s
            .patch_spec(NAME, json!({"version": self.upgrade.to}))
            .await?;
        Ok(())
    }

    /// The cluster now; its status is scanned for secrets on the way.
    pub async fn cluster(&mut self) -> Result<OctopusCluster> {
        let c = self.s.clusters().get(NAME).await?;
        self.scan.status(&c);
        Ok(c)
    }

    /// Polls the cluster until `check` holds; API errors (a restarting API server) are
    /// retried until the timeout.
    pub async fn wait(
        &mut self,
        what: &str,
        timeout: Duration,
        check: impl Fn(&OctopusCluster) -> bool,
    ) -> Result<OctopusCluster> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let last = match self.cluster().await {
                Ok(c) if check(&c) => return Ok(c),
                Ok(c) => serde_json::to_string(&c.status.map(|st| {
                    json!({"upgrade": st.upgrade.map(|u| (u.step, u.node, u.stopped_reason)),
                               "conditions": st.conditions.iter()
                                   .map(|c| format!("{}={} {}", c.type_, c.status, c.reason))
                                   .collect::<Vec<_>>()})
                }))
                .unwrap_or_default(),
                Err(e) => format!("{e:#}"),
            };
            if tokio::time::Instant::now() >= deadline {
                bail!("timed out after {timeout:?} waiting for {what}; last: {last}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Every check, then the scenario torn down (the in-process operator releases the
    /// cluster's finalizer).
    async fn finish(mut self) -> Verdict {
        let to = self.upgrade.to;
        if let Err(e) = self
            .wait("the upgrade to finish", FINISH, |c| finished(c, to))
            .await
        {
            self.violations.push(format!("upgrade not finished: {e:#}"));
        }
        // Tasks running when the last node came back get time to end.
        tokio::time::sleep(Duration::from_secs(2)).await;
        self.judge_log();
        if let Err(e) = self.judge_cluster().await {
            self.violations
                .push(format!("cluster checks failed: {e:#}"));
        }
        if let Err(e) = self.scan.events(&self.s).await {
            self.violations.push(format!("Events not scanned: {e:#}"));
        }
        self.scan.logs(&self.logs);
        let hits = self.scan.hits();
        self.violations
            .extend(hits.iter().map(|h| format!("secret leaked: {h}")));
        for op in &mut self.operators {
            op.kill();
        }
        self.operators.clear();
        let passed = self.violations.is_empty();
        if let Err(e) = self.s.finish().await {
            self.violations.push(format!("teardown failed: {e:#}"));
        }
        if passed {
            for log in &self.logs {
                let _ = std::fs::remove_file(log);
            }
        } else {
            let logs: Vec<String> = self.logs.iter().map(|l| l.display().to_string()).collect();
            self.notes.push(format!("logs: {}", logs.join(" ")));
        }
        Verdict {
            kills: self.kills,
            violations: self.violations,
            secret_hits: hits.len(),
            note: self.notes.join("; "),
        }
    }

    /// The shared invariants over the twin's log since the mark.
    fn judge_log(&mut self) {
        let events = self.s.twin.events();
        let span = Replay::new(&events).since(Mark::Seq(self.mark));
        let expected = Expected {
            strategy: self.upgrade.strategy,
            from: self.upgrade.from,
            to: self.upgrade.to,
            nodes: NODES,
        };
        self.violations.extend(
            invariants::check(&span, &expected)
                .into_iter()
                .map(|v| v.to_string()),
        );
        if self.upgrade.schema_changes()
            && let Some(first_stop) = span.first(|k| matches!(k, EventKind::NodeStopped { .. }))
        {
            let backed_up = self
                .s
                .jobs
                .runs()
                .iter()
                .find(|r| r.succeeded)
                .map(|r| r.at);
            if backed_up.is_none_or(|at| at > first_stop.at) {
                self.violations.push(format!(
                    "stopped before the backup: first stop {}, backup {backed_up:?}",
                    first_stop.at
                ));
            }
        }
    }

    /// The operator's own account: no node drained, and exactly one backup per
    /// schema-changing attempt (none for a patch).
    async fn judge_cluster(&mut self) -> Result<()> {
        let c = self.cluster().await?;
        let status = c.status.unwrap_or_default();
        let drained: Vec<&str> = status
            .nodes
            .iter()
            .filter(|n| n.drained)
            .map(|n| n.name.as_str())
            .collect();
        if !drained.is_empty() {
            self.violations
                .push(format!("status shows {drained:?} drained at the end"));
        }
        let jobs: kube::Api<Job> = self.s.ns.api();
        let jobs: Vec<String> = jobs
            .list(&Default::default())
            .await?
            .items
            .into_iter()
            .filter_map(|j| j.metadata.name)
            .collect();
        let runs = self.s.jobs.runs();
        let attempts = usize::from(self.upgrade.schema_changes());
        if jobs.len() != attempts || runs.len() != attempts {
            self.violations.push(format!(
                "{attempts} schema-changing attempt(s) but backup Jobs {jobs:?}, backup runs {:?}",
                runs.iter().map(|r| &r.pod).collect::<Vec<_>>()
            ));
        }
        if self.upgrade.schema_changes() {
            let attempt = status.upgrade.as_ref().and_then(|u| u.attempt.clone());
            let backup = status.last_backup.as_ref();
            if backup.is_none_or(|b| b.attempt != attempt || !jobs.contains(&b.job_name)) {
                self.violations.push(format!(
                    "lastBackup {backup:?} is not the Job of attempt {attempt:?} ({jobs:?})"
                ));
            }
        }
        Ok(())
    }
}

/// Ready=True for the current generation.
pub fn ready(c: &OctopusCluster) -> bool {
    condition(c, "Ready").is_some_and(|r| {
        r.status == "True" && r.reason == "Ready" && r.observed_generation == c.metadata.generation
    })
}

/// The upgrade to `to` finished and the cluster is Ready on it.
pub fn finished(c: &OctopusCluster, to: &str) -> bool {
    let done = c.status.as_ref().is_some_and(|st| {
        st.current_version.as_deref() == Some(to)
            && st
                .upgrade
                .as_ref()
                .is_some_and(|u| u.to == to && u.finished_at.is_some())
    });
    done && ready(c)
}

/// The step the status shows, e.g. `drain octo-2`.
pub fn step(c: &OctopusCluster) -> String {
    let upgrade = c.status.as_ref().and_then(|st| st.upgrade.as_ref());
    match upgrade {
        Some(u) if u.finished_at.is_some() => "finished".into(),
        Some(u) => match (&u.step, &u.node) {
            (Some(step), Some(node)) => format!("{step} {node}"),
            (Some(step), None) => step.clone(),
            _ => "planned".into(),
        },
        None => "not begun".into(),
    }
}
