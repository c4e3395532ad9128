//! The API server restarts mid-upgrade: at a milestone of the twin's log picked by the
//! seed, `e2e/controlplane/restart-apiserver.sh` stops kube-apiserver (etcd and the
//! controller manager keep running), leaves it down 1-5 s and starts it again. The
//! operator process is never touched: it must reconnect and finish, and carry out every
//! step once (each node drained and replaced once; maintenance mode on and off, the
//! migration and the backup once).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use octopus_e2e::twin::EventKind;
use octopus_e2e::twin::replay::invariants::Strategy;
use octopus_e2e::twin::replay::{Mark, Replay};

use crate::trial::{NODES, Trial, step};

/// A point of the upgrade, as the twin's log shows it.
#[derive(Clone, Copy, Debug)]
enum Milestone {
    /// The n-th drain (1-based).
    Drained(usize),
    MaintenanceOn,
    FirstStop,
    Migrated,
}

impl Milestone {
    fn reached(self, span: &Replay<'_>) -> bool {
        match self {
            Self::Drained(n) => span.drained().len() >= n,
            Self::MaintenanceOn => span.count(|k| matches!(k, EventKind::MaintenanceModeOn)) > 0,
            Self::FirstStop => span.count(|k| matches!(k, EventKind::NodeStopped { .. })) > 0,
            Self::Migrated => span.count(|k| matches!(k, EventKind::SchemaMigrated { .. })) > 0,
        }
    }
}

pub async fn restart(t: &mut Trial) -> Result<()> {
    let milestones: Vec<Milestone> = match t.upgrade.strategy {
        Strategy::Rolling => (1..=NODES).map(Milestone::Drained).collect(),
        Strategy::StopTheWorld => vec![
            Milestone::MaintenanceOn,
            Milestone::FirstStop,
            Milestone::Migrated,
        ],
    };
    let at = milestones[t.rng.usize(..milestones.len())];
    let down = t.rng.u64(1..=5);
    t.begin_upgrade().await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let events = t.s.twin.events();
        if at.reached(&Replay::new(&events).since(Mark::Seq(t.mark))) {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("the upgrade never reached {at:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let c = t.cluster().await?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("controlplane/restart-apiserver.sh");
    let output = tokio::process::Command::new(&script)
        .arg(down.to_string())
        .output()
        .await?;
    if !output.status.success() {
        bail!(
            "{} failed: {}",
            script.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let back = Instant::now();
    t.notes.push(format!(
        "restarted at {at:?} (step {}), down {down} s after a graceful stop",
        step(&c)
    ));
    let to = t.upgrade.to;
    let finished = t
        .wait(
            "the upgrade to finish after the restart",
            Duration::from_secs(240),
            |c| crate::trial::finished(c, to),
        )
        .await;
    t.notes.push(format!(
        "{} {:.0} s after the API server was back",
        if finished.is_ok() {
            "finished"
        } else {
            "not finished"
        },
        back.elapsed().as_secs_f64()
    ));
    finished?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let events = t.s.twin.events();
    let span = Replay::new(&events).since(Mark::Seq(t.mark));
    let repeated = repeated_steps(&span, t);
    t.violations.extend(repeated);
    Ok(())
}

/// Steps whose Octopus action (or pod replacement) happened more than once.
fn repeated_steps(span: &Replay<'_>, t: &Trial) -> Vec<String> {
    let mut found = Vec::new();
    let mut once = |what: String, n: usize| {
        if n != 1 {
            found.push(format!("step repeated: {what} happened {n} times"));
        }
    };
    for node in (0..NODES).map(|i| format!("{}-{i}", crate::trial::NAME)) {
        let stops = span.stopped_on(t.upgrade.from).get(node.as_str()).copied();
        once(format!("replace {node}"), stops.unwrap_or(0));
        if t.upgrade.strategy == Strategy::Rolling {
            let drains = span.drained().iter().filter(|d| **d == node).count();
            once(format!("drain {node}"), drains);
            let undrains =
                span.count(|k| matches!(k, EventKind::NodeUndrained { node: n } if *n == node));
            once(format!("undrain {node}"), undrains);
        }
    }
    if t.upgrade.strategy == Strategy::StopTheWorld {
        let on = span.count(|k| matches!(k, EventKind::MaintenanceModeOn));
        once("maintenance-on".into(), on);
        let off = span.count(|k| matches!(k, EventKind::MaintenanceModeOff));
        once("maintenance-off".into(), off);
        let migrated = span.count(|k| matches!(k, EventKind::SchemaMigrated { .. }));
        once("migration".into(), migrated);
        once("backup".into(), t.s.jobs.runs().len());
    }
    found
}
