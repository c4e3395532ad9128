//! The printed figures: one table per benchmark, figures only (no thresholds).

use std::collections::BTreeSet;
use std::time::Duration;

use crate::memory::{self, MemoryRun};
use crate::table::{Table, at, count, mib, millis, percent, secs};
use crate::upgrades::{self, BACKUP_RUN, Minor, Rolling, Run};
use octopus_e2e::twin::replay::span;

/// Section 1, patch rolling upgrades: per cluster size the median run (by wall time),
/// with the spread of all runs.
pub fn rolling(sets: &[&[Rolling]]) {
    let runs: Vec<&Rolling> = sets
        .iter()
        .filter_map(|set| upgrades::median(set, |r| &r.run))
        .collect();
    let labels: Vec<String> = runs.iter().map(|r| format!("N={}", r.run.nodes)).collect();
    let columns: Vec<&str> = labels.iter().map(String::as_str).collect();
    let repeats = sets.first().map_or(0, |s| s.len());
    let mut t = Table::new(
        format!("1. Patch rolling upgrades, deployments flowing (median of {repeats} runs)"),
        &columns,
    );
    t.note(format!(
        "runs: {} -> {} in one cluster per size",
        upgrades::FROM,
        upgrades::PATCHES.join(" -> ")
    ));
    let row = |t: &mut Table, label: &str, f: &dyn Fn(&Rolling) -> String| {
        t.row(label, runs.iter().map(|r| f(r)).collect());
    };
    let spread = |t: &mut Table, label: &str, f: &dyn Fn(&Rolling) -> Duration| {
        t.row(
            label,
            sets.iter()
                .map(|set| {
                    let min = set.iter().map(f).min().unwrap_or_default();
                    let max = set.iter().map(f).max().unwrap_or_default();
                    format!("{:.2}-{:.2} s", min.as_secs_f64(), max.as_secs_f64())
                })
                .collect(),
        );
    };
    row(&mut t, "wall: spec change -> Ready", &|r| secs(r.run.wall));
    spread(&mut t, "  all runs, min-max", &|r| r.run.wall);
    row(&mut t, "irreducible (twin)", &|r| secs(r.irreducible()));
    row(&mut t, "  Σ start delays", &|r| {
        secs(r.nodes.iter().map(|n| n.start_delay()).sum())
    });
    row(&mut t, "  Σ drain waits (running tasks)", &|r| {
        secs(r.nodes.iter().map(|n| n.drain_wait).sum())
    });
    row(&mut t, "operator overhead (wall - irreducible)", &|r| {
        secs(r.run.wall.saturating_sub(r.irreducible()))
    });
    spread(&mut t, "  all runs, min-max", &|r| {
        r.run.wall.saturating_sub(r.irreducible())
    });
    row(&mut t, "  share of wall", &|r| {
        percent(r.run.wall.saturating_sub(r.irreducible()), r.run.wall)
    });
    row(&mut t, "  per node", &|r| {
        secs(
            r.run.wall.saturating_sub(r.irreducible())
                / u32::try_from(r.nodes.len().max(1)).unwrap_or(1),
        )
    });
    t.section("overhead by gap (Σ over nodes)");
    row(&mut t, "  previous node back -> drain", &|r| {
        secs(r.gaps().to_drain)
    });
    row(&mut t, "  tasks done -> old pod stopped", &|r| {
        secs(r.gaps().to_delete)
    });
    row(&mut t, "  pod stopped -> new pod starts", &|r| {
        secs(r.gaps().to_recreate)
    });
    row(&mut t, "  node running -> undrained", &|r| {
        secs(r.gaps().to_undrain)
    });
    row(&mut t, "  last undrain -> Ready in status", &|r| {
        secs(r.gaps().to_ready)
    });
    t.section("service during the roll");
    row(&mut t, "min nodes serving", &|r| {
        format!("{}/{}", r.run.min_serving, r.run.nodes)
    });
    row(&mut t, "tasks started / finished", &|r| {
        format!("{} / {}", r.run.tasks.started, r.run.tasks.finished)
    });
    row(&mut t, "tasks failed / canceled", &|r| {
        format!("{} / {}", r.run.tasks.failed, r.run.tasks.canceled)
    });
    row(&mut t, "deployments refused", &|r| {
        r.run.tasks.refused.to_string()
    });
    t.print();

    if let Some(first) = runs.first() {
        let origin = first.run.since;
        let mut n = Table::new(
            format!(
                "1b. Per node, N={}, median run {} -> {} (times after the spec change)",
                first.run.nodes, first.run.from, first.run.to
            ),
            &[
                "drained",
                "drain wait",
                "stopped",
                "starting",
                "running",
                "start delay",
                "undrained",
            ],
        );
        for node in &first.nodes {
            n.row(
                node.node.clone(),
                vec![
                    at(origin, Some(node.drained)),
                    secs(node.drain_wait),
                    at(origin, node.stopped),
                    at(origin, node.starting),
                    at(origin, node.running),
                    secs(node.start_delay()),
                    at(origin, node.undrained),
                ],
            );
        }
        n.row(
            "Ready in status",
            vec![
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                at(origin, Some(first.run.ready)),
            ],
        );
        n.print();
    }
}

/// Section 2, minor stop-the-world upgrades: one column per run, then the median run's
/// timeline.
pub fn minor(runs: &[Minor]) {
    let labels: Vec<String> = runs.iter().map(|m| format!("-> {}", m.run.to)).collect();
    let columns: Vec<&str> = labels.iter().map(String::as_str).collect();
    let nodes = runs.first().map_or(0, |m| m.run.nodes);
    let mut t = Table::new(
        format!("2. Minor stop-the-world upgrades, N={nodes}, deployments flowing"),
        &columns,
    );
    t.note(format!(
        "runs: {} -> {} in one cluster, each approved with its version change",
        upgrades::FROM,
        upgrades::MINORS.join(" -> ")
    ));
    let row = |t: &mut Table, label: &str, f: &dyn Fn(&Minor) -> String| {
        t.row(label, runs.iter().map(f).collect());
    };
    let overhead = |m: &Minor| m.run.wall.saturating_sub(m.irreducible());
    let dash = || "-".to_string();
    row(&mut t, "wall: spec change -> Ready", &|m| secs(m.run.wall));
    row(&mut t, "irreducible", &|m| secs(m.irreducible()));
    row(&mut t, "  drain wait (running tasks)", &|m| {
        secs(m.stw.drain_wait)
    });
    row(&mut t, "  backup Job run (simulated)", &|_| {
        secs(BACKUP_RUN)
    });
    row(&mut t, "  schema migration", &|m| secs(m.stw.migration()));
    row(&mut t, "  Σ start delays (one by one)", &|m| {
        secs(m.stw.start_delays())
    });
    row(&mut t, "operator overhead (wall - irreducible)", &|m| {
        secs(overhead(m))
    });
    row(&mut t, "  share of wall", &|m| {
        percent(overhead(m), m.run.wall)
    });
    row(&mut t, "downtime: first stop -> first node serving", &|m| {
        m.downtime().map_or_else(dash, secs)
    });
    row(&mut t, "  irreducible (migration + start delays)", &|m| {
        secs(m.irreducible_downtime())
    });
    row(&mut t, "  overhead", &|m| {
        m.downtime()
            .map_or_else(dash, |d| secs(d.saturating_sub(m.irreducible_downtime())))
    });
    row(
        &mut t,
        "no node running at all",
        &|m| match (m.stw.all_stopped, m.stw.first_running_new) {
            (Some(s), Some(r)) => secs(span(s, r)),
            _ => dash(),
        },
    );
    row(&mut t, "maintenance mode on", &|m| {
        m.maintenance().map_or_else(dash, secs)
    });
    row(
        &mut t,
        "  irreducible (drain + backup + migration + 1 start)",
        &|m| secs(m.irreducible_maintenance()),
    );
    row(&mut t, "deployments refused", &|m| {
        m.run.tasks.refused.to_string()
    });
    row(&mut t, "tasks finished / failed / canceled", &|m| {
        format!(
            "{} / {} / {}",
            m.run.tasks.finished, m.run.tasks.failed, m.run.tasks.canceled
        )
    });
    t.print();

    let Some(m) = upgrades::median(runs, |m| &m.run) else {
        return;
    };
    let f = &m.stw;
    let origin = m.run.since;
    let mut tl = Table::new(
        format!(
            "2b. Timeline of the median run {} -> {}, N={nodes} (after the spec change)",
            m.run.from, m.run.to
        ),
        &["at"],
    );
    tl.row("maintenance mode on", vec![at(origin, f.maintenance_on)]);
    tl.row("every node drained", vec![at(origin, f.all_drained)]);
    tl.row(
        "running tasks done",
        vec![at(
            origin,
            f.all_drained.and_then(|d| d.checked_add(f.drain_wait).ok()),
        )],
    );
    tl.row("backup Job succeeded", vec![at(origin, m.backup_done)]);
    tl.row("first node stopped", vec![at(origin, f.first_stop)]);
    tl.row("every node stopped", vec![at(origin, f.all_stopped)]);
    for (i, s) in f.starts.iter().enumerate() {
        tl.row(
            format!("{} starting", s.node),
            vec![at(origin, Some(s.starting))],
        );
        if i == 0 {
            tl.row(
                "  schema migration started",
                vec![at(origin, f.migration_started)],
            );
            tl.row("  schema migrated", vec![at(origin, f.migrated)]);
        }
        tl.row(format!("{} running", s.node), vec![at(origin, s.running)]);
    }
    tl.row(
        "first node serving (undrained)",
        vec![at(origin, f.first_serving_new)],
    );
    tl.row("maintenance mode off", vec![at(origin, f.maintenance_off)]);
    tl.row("Ready in status", vec![at(origin, Some(m.run.ready))]);
    tl.print();
}

/// Section 0, side by side: the upgrade overhead per (strategy, N) and the time users
/// lose to maintenance mode per N, each against what the twin makes irreducible. Median
/// runs by wall time.
pub fn summary(patches: &[&[Rolling]], minors: &[&[Minor]]) {
    let patch: Vec<&Rolling> = patches
        .iter()
        .filter_map(|set| upgrades::median(set, |r| &r.run))
        .collect();
    let minor: Vec<&Minor> = minors
        .iter()
        .filter_map(|set| upgrades::median(set, |m| &m.run))
        .collect();
    let ratio = |a: Duration, b: Duration| format!("{:.2}x", a.as_secs_f64() / b.as_secs_f64());
    let mut labels: Vec<String> = patch
        .iter()
        .map(|r| format!("patch N={}", r.run.nodes))
        .collect();
    labels.extend(minor.iter().map(|m| format!("minor N={}", m.run.nodes)));
    let columns: Vec<&str> = labels.iter().map(String::as_str).collect();
    let mut t = Table::new(
        "0. Summary: overhead and maintenance mode (median runs; the played world)",
        &columns,
    );
    t.note(
        "overhead = wall / irreducible (the twin's waits: drains, backup, migration, starts); \
         maintenance = maintenance-mode seconds / (drain + backup + migration + one start)",
    );
    let blank = || "-".to_string();
    let cells = |p: &dyn Fn(&Rolling) -> String, m: &dyn Fn(&Minor) -> String| {
        let mut row: Vec<String> = patch.iter().map(|r| p(r)).collect();
        row.extend(minor.iter().map(|x| m(x)));
        row
    };
    let wall = cells(&|r| secs(r.run.wall), &|m| secs(m.run.wall));
    let irreducible = cells(&|r| secs(r.irreducible()), &|m| secs(m.irreducible()));
    let overhead = cells(&|r| ratio(r.run.wall, r.irreducible()), &|m| {
        ratio(m.run.wall, m.irreducible())
    });
    let maintenance = cells(&|_| blank(), &|m| m.maintenance().map_or_else(blank, secs));
    let maintenance_min = cells(&|_| blank(), &|m| secs(m.irreducible_maintenance()));
    let maintenance_ratio = cells(&|_| blank(), &|m| {
        m.maintenance()
            .map_or_else(blank, |d| ratio(d, m.irreducible_maintenance()))
    });
    t.row("wall: spec change -> Ready", wall);
    t.row("irreducible", irreducible);
    t.row("overhead: wall / irreducible", overhead);
    t.row("maintenance mode on", maintenance);
    t.row("  irreducible", maintenance_min);
    t.row("  maintenance / irreducible", maintenance_ratio);
    t.print();
}

/// Section 3, the operator's reconciles and Octopus API requests per upgrade.
pub fn reconciles(runs: &[(&str, &Run)]) {
    let columns: Vec<&str> = runs.iter().map(|(name, _)| *name).collect();
    let mut t = Table::new(
        "3. Reconciles and Octopus API requests per upgrade (median runs)",
        &columns,
    );
    t.note("reconciles and actions: the operator's metrics; requests: the twin's log");
    let row = |t: &mut Table, label: &str, f: &dyn Fn(&Run) -> String| {
        t.row(label, runs.iter().map(|(_, r)| f(r)).collect());
    };
    let rate = |n: f64, d: Duration| format!("{:.1}/s", n / d.as_secs_f64().max(f64::EPSILON));
    row(&mut t, "reconciles", &|r| count(r.counters.reconciles));
    row(&mut t, "  per second of wall", &|r| {
        rate(r.counters.reconciles, r.wall)
    });
    row(&mut t, "  failed", &|r| count(r.counters.failures));
    row(&mut t, "  mean duration", &|r| {
        r.counters
            .mean_reconcile()
            .map_or_else(|| "-".into(), millis)
    });
    row(&mut t, "actions taken", &|r| {
        count(r.counters.actions_total())
    });
    let actions: BTreeSet<&String> = runs
        .iter()
        .flat_map(|(_, r)| r.counters.actions.keys())
        .collect();
    for action in actions {
        row(&mut t, &format!("  {action}"), &|r| {
            count(r.counters.actions.get(action).copied().unwrap_or(0.0))
        });
    }
    row(&mut t, "Octopus API requests", &|r| {
        r.requests.total.to_string()
    });
    row(&mut t, "  per second of wall", &|r| {
        rate(r.requests.total as f64, r.wall)
    });
    row(&mut t, "  per reconcile", &|r| {
        format!(
            "{:.1}",
            r.requests.total as f64 / r.counters.reconciles.max(1.0)
        )
    });
    row(&mut t, "  writes (PUT/POST)", &|r| {
        r.requests.writes.to_string()
    });
    row(&mut t, "  answered >= 400", &|r| {
        r.requests.errors.to_string()
    });
    let routes: BTreeSet<&String> = runs
        .iter()
        .flat_map(|(_, r)| r.requests.by_route.keys())
        .collect();
    for route in routes {
        row(&mut t, &format!("  {route}"), &|r| {
            r.requests
                .by_route
                .get(route)
                .copied()
                .unwrap_or(0)
                .to_string()
        });
    }
    t.print();
}

/// Section 4, the operator process's memory and CPU.
pub fn memory(run: &MemoryRun) {
    let columns: Vec<&str> = run.phases.iter().map(|p| p.name.as_str()).collect();
    let mut t = Table::new(
        format!(
            "4. Operator process, {} nodes per cluster, clusters in one namespace",
            memory::NODES
        ),
        &columns,
    );
    t.note(format!("binary: {}", run.binary.display()));
    let phases = &run.phases;
    let row = |t: &mut Table, label: &str, f: &dyn Fn(&memory::Phase) -> String| {
        t.row(label, phases.iter().map(f).collect());
    };
    let minimum = upgrades::timing().start_delay * u32::try_from(memory::NODES).unwrap_or(1)
        + upgrades::timing().migration_time;
    row(&mut t, "OctopusClusters / nodes", &|p| {
        format!("{} / {}", p.clusters, p.clusters * memory::NODES)
    });
    row(&mut t, "created -> all Ready", &|p| {
        p.to_ready.map_or_else(|| "-".into(), secs)
    });
    row(&mut t, "  twin minimum per cluster", &|p| {
        if p.to_ready.is_some() {
            secs(minimum)
        } else {
            "-".into()
        }
    });
    row(&mut t, "reconciles in phase", &|p| count(p.reconciles));
    row(&mut t, "operator CPU time in phase", &|p| secs(p.cpu));
    row(
        &mut t,
        &format!("steady reconciles ({} s)", memory::STEADY.as_secs()),
        &|p| {
            p.steady_reconciles
                .map_or_else(|| "-".into(), |r| format!("{r:.2}/s"))
        },
    );
    row(&mut t, "steady Octopus requests", &|p| {
        p.steady_requests
            .map_or_else(|| "-".into(), |r| format!("{r:.2}/s"))
    });
    row(&mut t, "RSS at end of phase (VmRSS)", &|p| {
        mib(p.memory.rss)
    });
    row(&mut t, "peak RSS so far (VmHWM)", &|p| mib(p.memory.hwm));
    t.print();
}
