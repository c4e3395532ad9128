//! The demo's closing figures: an excerpt of `kubectl describe`, and the twin's counters
//! with what the replay of its flight recorder says about the two upgrades.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use octopus_e2e::twin::replay::{Mark, Replay};
use octopus_e2e::twin::{Event, EventKind};
use serde::Deserialize;

/// The top-level status blocks of `kubectl describe` worth reading, and the Events.
pub fn describe_excerpt(described: &str) -> String {
    const STATUS: [&str; 5] = [
        "Conditions",
        "Last Backup",
        "Current Version",
        "Schema Version",
        "Ready Nodes",
    ];
    let mut keep = false;
    let mut out = String::new();
    for line in described.lines() {
        if let Some(heading) = heading(line, 2) {
            keep = STATUS.contains(&heading);
        } else if let Some(heading) = heading(line, 0) {
            keep = heading == "Events";
        }
        if keep {
            out += line;
            out.push('\n');
        }
    }
    out
}

/// The name of a `Name:` heading indented by exactly `indent` spaces.
fn heading(line: &str, indent: usize) -> Option<&str> {
    let rest = line.strip_prefix(&" ".repeat(indent))?;
    let (name, _) = rest.split_once(':')?;
    let well_formed = name.starts_with(|c: char| c.is_ascii_uppercase())
        && name.chars().all(|c| c.is_ascii_alphabetic() || c == ' ');
    well_formed.then_some(name)
}

/// The database's state (`/_twin/state`): its installations, the demo's the only one.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct State {
    pub installations: Vec<Installation>,
}

/// What the twin's admin API says about the installation now (the fields shown).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Installation {
    pub tasks: BTreeMap<String, usize>,
    pub generator: Generator,
    pub schema: Option<Schema>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Generator {
    pub deployments_queued: u64,
    pub refused_maintenance_mode: u64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Schema {
    pub line: String,
    pub migrated_by: String,
}

/// The twin's sequence numbers around the upgrades.
pub struct Marks {
    /// Before and after the patch roll.
    pub patch_roll: (u64, u64),
    /// When the schema upgrade was approved.
    pub minor_start: u64,
}

/// The counters, one indented line each.
pub fn counters(events: &[Event], installation: &Installation, marks: Marks) -> String {
    let replay = Replay::new(events);
    let tasks = replay.tasks();
    let (patch_start, patch_end) = marks.patch_roll;
    let min_serving = replay
        .since(Mark::Seq(patch_start))
        .until(Mark::Seq(patch_end))
        .min_serving();
    let mixed = replay
        .since(Mark::Seq(marks.minor_start))
        .mixed_versions()
        .len();
    let maintenance = replay.maintenance_mode();
    let on = maintenance.iter().filter(|(_, on)| *on).count();
    let schema = replay.schema();
    let by_state: Vec<String> = installation
        .tasks
        .iter()
        .map(|(state, n)| format!("{state}={n}"))
        .collect();
    let by_state = if by_state.is_empty() {
        "none".to_string()
    } else {
        by_state.join(", ")
    };
    let (line, migrated_by) = installation
        .schema
        .as_ref()
        .map_or(("-", "-"), |s| (s.line.as_str(), s.migrated_by.as_str()));
    let mut out = String::new();
    let _ = writeln!(
        out,
        "  tasks finished: {}   failed: {}   canceled: {}   refused (maintenance mode): {}",
        tasks.finished,
        tasks.failed,
        tasks.canceled,
        installation.generator.refused_maintenance_mode
    );
    let _ = writeln!(
        out,
        "  deployments queued: {}   tasks by state now: {by_state}",
        installation.generator.deployments_queued
    );
    let _ = writeln!(
        out,
        "  fewest nodes serving during the patch roll: {min_serving} of 3"
    );
    let _ = writeln!(
        out,
        "  moments with two versions running at once during the schema upgrade: {mixed}"
    );
    let _ = writeln!(
        out,
        "  maintenance mode on/off: {on}/{}   schema migrations (creation included): {}   schema violations: {}",
        maintenance.len() - on,
        schema.migrated,
        schema.violations
    );
    let _ = writeln!(out, "  schema now: {line} (migrated by {migrated_by})");
    let _ = writeln!(out, "  {}", backups(events));
    out
}

/// The backups the database took (the backup Job's pod asked for them), and whether each
/// came before the next schema migration started.
fn backups(events: &[Event]) -> String {
    let mut taken = Vec::new();
    for (i, e) in events.iter().enumerate() {
        if let EventKind::DatabaseBackup { name, succeeded } = &e.kind {
            let before = events[i..]
                .iter()
                .any(|later| matches!(later.kind, EventKind::SchemaMigrationStarted { .. }));
            let when = if before {
                "before the schema migration"
            } else {
                "no schema migration after it"
            };
            let outcome = if *succeeded { "taken" } else { "failed" };
            taken.push(format!("{name} ({outcome}, {when})"));
        }
    }
    if taken.is_empty() {
        "database backups: none".into()
    } else {
        format!("database backups: {}", taken.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(kinds: Vec<EventKind>) -> Vec<Event> {
        kinds
            .into_iter()
            .zip(1..)
            .map(|(kind, seq)| Event {
                seq,
                at: jiff::Timestamp::UNIX_EPOCH,
                installation: Some("installation-1".into()),
                kind,
            })
            .collect()
    }

    #[test]
    fn a_backup_is_shown_with_its_schema_and_whether_a_migration_followed() {
        let backup = |name: &str| EventKind::DatabaseBackup {
            name: name.into(),
            succeeded: true,
        };
        let migration = EventKind::SchemaMigrationStarted {
            node: "demo-0".into(),
            from: Some("2024.1".into()),
            to: "2024.2".into(),
        };
        assert_eq!(backups(&[]), "database backups: none");
        assert_eq!(
            backups(&events(vec![backup("b1"), migration, backup("b2")])),
            "database backups: b1 (taken, before the schema migration), \
             b2 (taken, no schema migration after it)"
        );
    }

    #[test]
    fn the_excerpt_keeps_the_status_blocks_worth_reading_and_the_events() {
        let described = "\
Name:         demo
Spec:
  Version:  2024.2.50
Status:
  Conditions:
    Type:    Ready
  Current Version:  2024.2.50
  Nodes:
    Name:  demo-0
  Last Backup:
    Job Name:  demo-backup
Events:
  Type    Reason  Age
";
        assert_eq!(
            describe_excerpt(described),
            "  Conditions:\n    Type:    Ready\n  Current Version:  2024.2.50\n  Last Backup:\n    Job Name:  demo-backup\nEvents:\n  Type    Reason  Age\n"
        );
    }
}
