//! `make bench`: how fast the operator upgrades and how little it costs, measured against
//! the real control plane (started or reused through `TestCluster::shared`) and the
//! Octopus twin. The twin's flight recorder gives the irreducible part of each upgrade
//! (start delays, schema migration, running tasks draining); the rest is overhead of the
//! operator and the control plane. Prints figures only: no thresholds, no pass/fail.
//!
//! Progress goes to stderr, the tables to stdout.

mod fleet;
mod memory;
mod prom;
mod report;
mod table;
mod upgrades;

use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context as _, Result};
use octopus_e2e::cluster::{TestCluster, pinned_kubernetes_version};

use crate::table::{millis, secs};

fn main() -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bench: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<()> {
    let started = Instant::now();
    let cluster = TestCluster::shared()
        .await
        .context("the control plane is required")?;
    machine();
    let timing = upgrades::timing();
    let generator = upgrades::generator();
    println!(
        "twin: start delay {}, schema migration {}, deployments {}/min of {}-{}; backup Job run {}",
        millis(timing.start_delay),
        millis(timing.migration_time),
        generator.deployments_per_minute,
        secs(generator.deployment_duration_min),
        secs(generator.deployment_duration_max),
        millis(upgrades::BACKUP_RUN),
    );
    println!("operator: in process for 1-3 (poll interval 300 ms), its release binary for 4");

    // OCTOPUS_BENCH_ONLY=fleet: only section 5.
    if std::env::var("OCTOPUS_BENCH_ONLY").as_deref() == Ok("fleet") {
        return fleet_section(&cluster, started).await;
    }
    progress("patch rolling upgrades, 3 nodes");
    let patch3 = upgrades::rolling(3)
        .await
        .context("patch upgrades of 3 nodes")?;
    progress("patch rolling upgrades, 5 nodes");
    let patch5 = upgrades::rolling(5)
        .await
        .context("patch upgrades of 5 nodes")?;
    report::rolling(&[&patch3, &patch5]);

    let mut minors = Vec::new();
    for nodes in [3, 5, 16] {
        progress(&format!("minor stop-the-world upgrades, {nodes} nodes"));
        let runs = upgrades::minor(nodes)
            .await
            .with_context(|| format!("minor upgrades of {nodes} nodes"))?;
        report::minor(&runs);
        minors.push(runs);
    }
    let [minor, minor5, minor16] = &minors[..] else {
        anyhow::bail!("three sets of minor upgrades");
    };

    let mut medians = Vec::new();
    for (name, run) in [
        (
            "patch N=3",
            upgrades::median(&patch3, |r| &r.run).map(|r| &r.run),
        ),
        (
            "patch N=5",
            upgrades::median(&patch5, |r| &r.run).map(|r| &r.run),
        ),
        (
            "minor N=3",
            upgrades::median(minor, |m| &m.run).map(|m| &m.run),
        ),
    ] {
        if let Some(run) = run {
            medians.push((name, run));
        }
    }
    report::reconciles(&medians);
    report::summary(&[&patch3, &patch5], &[minor, minor5, minor16]);

    progress("operator process: idle, 1 cluster, many clusters");
    let mem = memory::run(&cluster).await.context("operator process")?;
    report::memory(&mem);
    fleet_section(&cluster, started).await
}

/// Section 5, the fleet and start-up figures, then the closing lines.
async fn fleet_section(cluster: &TestCluster, started: Instant) -> Result<()> {
    progress("a fleet of clusters on one operator process");
    let run = fleet::run(cluster).await.context("the fleet")?;
    fleet::report(&run);

    println!();
    println!("load average at the end: {}", load_average());
    println!("bench finished in {}", secs(started.elapsed()));
    Ok(())
}

fn progress(what: &str) {
    eprintln!("bench: running {what} ...");
}

/// The machine the figures come from.
fn machine() {
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let memory_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .unwrap_or(0);
    println!("octopus-operator benchmarks");
    println!(
        "machine: {cpus} CPUs ({model}), {:.1} GiB memory; load average {}",
        memory_kib as f64 / 1024.0 / 1024.0,
        load_average()
    );
    println!(
        "control plane: Kubernetes {} (etcd, kube-apiserver, kube-controller-manager on this machine)",
        pinned_kubernetes_version()
    );
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".into())
}
