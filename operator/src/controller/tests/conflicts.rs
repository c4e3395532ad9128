//! Conflicting edits during upgrades: at every reconcile of a patch roll and of a
//! stop-the-world upgrade, a person edits the spec (another patch, a higher minor, back
//! down, replicas up or down, pause then resume); the operator must keep every invariant
//! of the simulated world at every moment and end where the README's conflicting-edits
//! table says: the test reads that table, so a row cannot go unasserted and every moment
//! of both walks must fall under a row.

use std::path::Path;

use super::fixtures::*;
use super::sim::*;
use super::walks::*;

/// A patch of [`V2`]'s line, for "another patch" during the stop-the-world upgrade.
const V2_PATCH: &str = "2024.2.9";
/// Another patch of [`V1`]'s line, for "another patch" during the patch roll.
const V1_OTHER: &str = "2024.1.30";

/// The two kinds of upgrade walked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Walk {
    /// [`V1`] -> [`V1_PATCH`] on 3 nodes, one node at a time.
    PatchRoll,
    /// [`V1`] -> [`V2`] (approved) on 3 nodes, backup then stop-the-world.
    StopTheWorld,
}

impl Walk {
    fn sim(self) -> Sim {
        match self {
            Self::PatchRoll => rolling_sim(V1, V1_PATCH, 3),
            Self::StopTheWorld => stop_the_world_sim(V1, V2, 3),
        }
    }
}

/// What the person does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Edit {
    AnotherPatch,
    HigherMinor,
    BackDown,
    ReplicasUp,
    ReplicasDown,
    PauseResume,
}

/// Where the cluster ends up.
#[derive(Clone, Debug, PartialEq, Eq)]
enum End {
    /// Every node ready on this version, this many nodes, nothing left to do.
    Converged(&'static str, i32),
    /// Held with this reason on the UpgradeBlocked condition, acting on nothing.
    Held(String),
}

/// Walks `walk`, applies `edit` right before reconcile `k`, runs on with every invariant
/// checked, and says where it ended (an error names a broken invariant).
fn edited_at(walk: Walk, edit: Edit, k: u32) -> Result<End, String> {
    let mut sim = walk.sim();
    for _ in 0..k {
        sim.step(Kill::Never);
    }
    match edit {
        Edit::AnotherPatch => {
            let to = match walk {
                Walk::PatchRoll => V1_OTHER,
                Walk::StopTheWorld => V2_PATCH,
            };
            sim.change_spec(|s| {
                s.version = to.into();
                approve(s, to);
            });
        }
        Edit::HigherMinor => {
            let to = match walk {
                Walk::PatchRoll => V2,
                Walk::StopTheWorld => "2024.3.1",
            };
            sim.change_spec(|s| {
                s.version = to.into();
                approve(s, to);
            });
        }
        Edit::BackDown => sim.change_spec(|s| s.version = V1.into()),
        Edit::ReplicasUp => sim.change_spec(|s| s.replicas = 4),
        Edit::ReplicasDown => {
            sim.change_spec(|s| s.replicas = 2);
            sim.expect.replicas = 2;
        }
        Edit::PauseResume => {
            sim.change_spec(|s| s.paused = true);
            for _ in 0..20 {
                let d = sim.step(Kill::Never);
                if d.action.is_some() || d.statefulset.is_some() {
                    return Err(format!("acted while paused: {d:?}"));
                }
            }
            sim.change_spec(|s| s.paused = false);
        }
    }
    let mut held = None;
    for _ in 0..600 {
        let before = sim.status.upgrade.as_ref().map(typed);
        let d = sim.step(Kill::Never);
        follow_next_upgrade(&mut sim, before.as_ref());
        if let Some(first) = sim.violations.first() {
            return Err(format!("invariant broken: {first}"));
        }
        if sim.settled() {
            break;
        }
        if d.stop.is_some() && d.action.is_none() {
            held = Some(cond(&d, UPGRADE_BLOCKED).reason);
        } else {
            held = None;
        }
    }
    if let Some(reason) = held {
        return Ok(End::Held(reason.as_str().to_owned()));
    }
    if !sim.settled() {
        return Err(format!(
            "never settled: {}",
            sim.log.last().cloned().unwrap_or_default()
        ));
    }
    let version = sim.spec.version.clone();
    let version: &'static str = [V1, V1_PATCH, V1_OTHER, V2, V2_PATCH, "2024.3.1"]
        .into_iter()
        .find(|v| *v == version)
        .ok_or("unknown version")?;
    sim.assert_converged(version);
    Ok(End::Converged(version, sim.spec.replicas))
}

/// Once the walked upgrade has finished and the edit started another one (a higher minor
/// after a patch roll, a patch after a schema upgrade), the invariants are those of the new
/// upgrade: its strategy, from and to. A re-plan of an unfinished upgrade keeps the walk's.
fn follow_next_upgrade(sim: &mut Sim, before: Option<&Upgrade>) {
    let Some(now) = sim.status.upgrade.as_ref().map(typed) else {
        return;
    };
    let previous_finished = before.is_none_or(|b| b.finished_at.is_some());
    let another = before.is_none_or(|b| b.started_at != now.started_at);
    if previous_finished
        && another
        && now.finished_at.is_none()
        && let Some(strategy) = now.strategy
    {
        sim.expect = Expect::new(strategy, &now.from, &now.to, sim.expect.replicas);
        sim.new_template_started = false;
    }
}

/// The reconciles of the unedited walk.
fn moments(walk: Walk) -> u32 {
    let mut sim = walk.sim();
    sim.run(400);
    sim.reconciles
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Converged(version, n) => write!(f, "converged {version} x{n}"),
            Self::Held(reason) => write!(f, "held {reason}"),
        }
    }
}

/// One row of the README's table: the upgrade, the edit, the first and last moment it
/// covers, and the end it promises.
struct Row {
    walk: Walk,
    edit: Edit,
    moments: (u32, Option<u32>),
    end: String,
}

/// The rows of README.md's "Conflicting edits during upgrades" table.
fn readme_rows() -> Vec<Row> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    let text = std::fs::read_to_string(&path).expect("README.md");
    let section = text
        .split("## Conflicting edits during upgrades")
        .nth(1)
        .expect("README.md has a Conflicting edits section");
    section
        .lines()
        .skip_while(|l| !l.starts_with("| Upgrade |"))
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let walk = match cells[1] {
                "patch roll" => Walk::PatchRoll,
                "stop-the-world" => Walk::StopTheWorld,
                other => panic!("README.md: unknown upgrade {other:?}"),
            };
            let edit = match cells[2] {
                "another patch" => Edit::AnotherPatch,
                "higher minor" => Edit::HigherMinor,
                "back down" => Edit::BackDown,
                "replicas up" => Edit::ReplicasUp,
                "replicas down" => Edit::ReplicasDown,
                "pause, resume" => Edit::PauseResume,
                other => panic!("README.md: unknown edit {other:?}"),
            };
            let moments = match cells[3] {
                "all" => (0, None),
                m if m.ends_with("..") => (m.trim_end_matches("..").parse().expect("moment"), None),
                m => {
                    let k = m.parse().expect("moment");
                    (k, Some(k))
                }
            };
            Row {
                walk,
                edit,
                moments,
                end: cells[5].trim_matches('`').to_owned(),
            }
        })
        .collect()
}

#[test]
fn every_edit_at_every_moment_ends_as_the_readme_table_says() {
    let rows = readme_rows();
    let mut covered = std::collections::BTreeSet::new();
    for walk in [Walk::PatchRoll, Walk::StopTheWorld] {
        let last = moments(walk);
        for edit in [
            Edit::AnotherPatch,
            Edit::HigherMinor,
            Edit::BackDown,
            Edit::ReplicasUp,
            Edit::ReplicasDown,
            Edit::PauseResume,
        ] {
            for k in 0..last {
                let row = rows
                    .iter()
                    .find(|r| {
                        matches!(
                            (r.walk, walk),
                            (Walk::PatchRoll, Walk::PatchRoll)
                                | (Walk::StopTheWorld, Walk::StopTheWorld)
                        ) && std::mem::discriminant(&r.edit) == std::mem::discriminant(&edit)
                            && r.moments.0 <= k
                            && r.moments.1.is_none_or(|end| k <= end)
                    })
                    .unwrap_or_else(|| {
                        panic!("README.md: no row for {walk:?} x {edit:?} at moment {k}")
                    });
                match edited_at(walk, edit, k) {
                    Ok(end) => assert_eq!(
                        end.to_string(),
                        row.end,
                        "{walk:?} x {edit:?} at moment {k} of {last}"
                    ),
                    Err(e) => panic!("{walk:?} x {edit:?} at moment {k} of {last}: {e}"),
                }
                covered.insert(format!("{walk:?} {edit:?} {:?}", row.moments));
            }
        }
    }
    assert_eq!(covered.len(), rows.len(), "a README row covers no moment");
}
