//! `make trials`: reliability trials of the operator process against the real control
//! plane and the Octopus twin, counted in figures (issue 13). Never part of `make test`:
//! a run takes a quarter of an hour and restarts its control plane's API server.
//!
//! - crash: SIGKILLs of the operator at random moments of patch rolls and stop-the-world
//!   upgrades, with one replica and with two (the Lease holder killed); trials run until
//!   at least [`MIN_KILLS`] kills;
//! - apiserver: kube-apiserver stopped and started again mid-upgrade (etcd kept);
//! - faults: Octopus answers 20% of requests with 500 and slowly, drops 20% of its
//!   connections, or refuses the API key.
//!
//! After every trial the twin's log is judged by the shared invariants
//! (`twin::replay::invariants`), the cluster's status and backup Jobs are checked, and the
//! operator's logs, the namespace's Events and every status seen are scanned for the
//! Secrets' values. Every trial prints its seed; `TRIALS_SEED=<kind>:<seed>` replays that
//! one trial, `TRIALS_SEED=<number>` the whole run. Exit status 1 on any violation.
//!
//! The world is whatever `Scenario` gives (today: the twin plays kubelet for the Octopus
//! pods); the operator is always the built binary (`OperatorProcess`).

mod apiserver;
mod crash;
mod faults;
mod secrets;
mod trial;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use crate::trial::{Kind, Outcome};

/// Crash trials go on until this many SIGKILLs were sent.
const MIN_KILLS: usize = 50;
/// ... and stop after this many trials whatever the count.
const MAX_CRASH_TRIALS: usize = 30;
/// Env var that replays one trial (`kind:seed`) or a whole run (`seed`).
const SEED_ENV: &str = "TRIALS_SEED";

fn main() -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("trials: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("trials: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// What `TRIALS_SEED` asks for.
enum Plan {
    /// Every trial, their seeds drawn from this one.
    All(u64),
    /// One trial.
    One(Kind, u64),
}

fn plan() -> Result<Plan> {
    let Ok(value) = std::env::var(SEED_ENV) else {
        return Ok(Plan::All(fastrand::u64(..)));
    };
    match value.split_once(':') {
        Some((kind, seed)) => {
            let kind = Kind::parse(kind).with_context(|| format!("{SEED_ENV}={value}"))?;
            let seed = seed
                .parse()
                .with_context(|| format!("{SEED_ENV}={value}: the seed is not a number"))?;
            Ok(Plan::One(kind, seed))
        }
        None => match value.parse() {
            Ok(seed) => Ok(Plan::All(seed)),
            Err(_) => bail!("{SEED_ENV}={value}: want <kind>:<seed> or <seed>"),
        },
    }
}

async fn run() -> Result<bool> {
    let started = Instant::now();
    // The API server trial restarts the API server of the control plane the harness uses:
    // only one up.sh started (and so named by OCTOPUS_OPERATOR_CLUSTER) can be restarted.
    if std::env::var_os(octopus_e2e::cluster::KUBECONFIG_ENV).is_some() {
        bail!(
            "{} is set: the trials need a control plane of their own (OCTOPUS_OPERATOR_CLUSTER)",
            octopus_e2e::cluster::KUBECONFIG_ENV
        );
    }
    let cluster = octopus_e2e::cluster::TestCluster::shared()
        .await
        .context("the control plane is required")?;
    let binary = octopus_e2e::operator_process::operator_binary().await?;
    println!(
        "trials on control plane {} ({}), operator {}",
        std::env::var("OCTOPUS_OPERATOR_CLUSTER").unwrap_or_else(|_| "default".into()),
        cluster.kubeconfig().display(),
        binary.display()
    );
    let mut outcomes = Vec::new();
    match plan()? {
        Plan::One(kind, seed) => {
            println!("replaying {}:{seed}", kind.name());
            outcomes.push(report(trial::run(kind, seed).await));
        }
        Plan::All(seed) => {
            println!("run seed {seed} (replay the whole run: {SEED_ENV}={seed} make trials)");
            let mut rng = fastrand::Rng::with_seed(seed);
            let mut kills = 0;
            for (i, kind) in Kind::CRASH.iter().cycle().enumerate() {
                let enough = kills >= MIN_KILLS && i >= Kind::CRASH.len();
                if enough || i >= MAX_CRASH_TRIALS {
                    break;
                }
                let outcome = report(trial::run(*kind, rng.u64(..)).await);
                kills += outcome.kills;
                outcomes.push(outcome);
            }
            for kind in Kind::OTHERS {
                outcomes.push(report(trial::run(kind, rng.u64(..)).await));
            }
        }
    }
    summary(&outcomes, started.elapsed());
    Ok(outcomes.iter().all(|o| o.violations.is_empty()))
}

/// Prints one trial's line (and its violations) as it ends.
fn report(outcome: Outcome) -> Outcome {
    println!(
        "trial {:<17} seed {:<20} kills {:>2}  violations {:>2}  {:>6.1} s  {}",
        outcome.kind.name(),
        outcome.seed,
        outcome.kills,
        outcome.violations.len(),
        outcome.duration.as_secs_f64(),
        outcome.note,
    );
    for v in &outcome.violations {
        println!("    VIOLATION {v}");
    }
    if !outcome.violations.is_empty() {
        println!(
            "    replay: {SEED_ENV}={}:{} make trials",
            outcome.kind.name(),
            outcome.seed
        );
    }
    outcome
}

/// The table of the run: per trial kind, runs, kills, violations, time and seeds.
fn summary(outcomes: &[Outcome], elapsed: Duration) {
    println!();
    println!(
        "{:<17} {:>5} {:>6} {:>11} {:>12} {:>9}  seeds",
        "trial", "runs", "kills", "violations", "secret hits", "time"
    );
    let mut kinds: Vec<Kind> = Vec::new();
    for o in outcomes {
        if !kinds.contains(&o.kind) {
            kinds.push(o.kind);
        }
    }
    let row = |name: &str, of: &[&Outcome], seeds: String| {
        println!(
            "{:<17} {:>5} {:>6} {:>11} {:>12} {:>7.0} s  {seeds}",
            name,
            of.len(),
            of.iter().map(|o| o.kills).sum::<usize>(),
            of.iter().map(|o| o.violations.len()).sum::<usize>(),
            of.iter().map(|o| o.secret_hits).sum::<usize>(),
            of.iter().map(|o| o.duration.as_secs_f64()).sum::<f64>(),
        );
    };
    for kind in kinds {
        let of: Vec<&Outcome> = outcomes.iter().filter(|o| o.kind == kind).collect();
        let seeds: Vec<String> = of.iter().map(|o| o.seed.to_string()).collect();
        row(kind.name(), &of, seeds.join(" "));
    }
    let all: Vec<&Outcome> = outcomes.iter().collect();
    row("total", &all, String::new());
    println!("trials finished in {:.0} s", elapsed.as_secs_f64());
}
