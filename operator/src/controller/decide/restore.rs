//! What keeps old-version nodes off a database that may be migrated, while an upgrade is
//! stopped:
//!
//! - Going back after a failed migration needs evidence, not just the edit: until
//!   `spec.upgrade.restoredBackup` names the failed attempt's backup, no node runs and the
//!   stop says which backup (Job, Master Key copy) to restore and what to set. Octopus's
//!   own way back from a failed upgrade is the same: restore the database and the Master
//!   Key, then run the old version.
//! - A pod template edited by hand to a version below the database's schema is applied
//!   again at the database's version, even under a sticky stop: every pod the StatefulSet
//!   recreates would otherwise start an old node on the migrated schema.

use super::Stop;
use super::start::guard_start;
use crate::controller::model::{Decision, Observed, StatefulSetView, StatefulSetWant};
use crate::controller::reason::Reason;
use crate::controller::steps::{StepKind, StepState, Upgrade};
use crate::planner::Strategy;
use crate::version::OctopusVersion;

/// Where the note on a found template starts in a stop's message.
const FOUND: &str = ". Found: ";

/// Going back from the failed attempt `up` (spec.version is its `from` again): `Ok` once
/// `spec.upgrade.restoredBackup` names this attempt's backup, else the stop that says
/// exactly what to restore and what to set.
pub(super) fn acknowledged(o: &Observed, up: &Upgrade) -> Result<(), Stop> {
    let job = up.backup_job(&o.name);
    let named = o.spec.upgrade.restored_backup.as_deref();
    if named == Some(job.as_str()) {
        return Ok(());
    }
    let attempt = up
        .attempt
        .as_deref()
        .map_or_else(|| "the upgrade".to_string(), |a| format!("attempt {a}"));
    let recorded = o
        .status
        .last_backup
        .as_ref()
        .filter(|b| b.is_of(&up.from, &up.to, up.attempt.as_deref()));
    let what = match recorded {
        Some(b) => format!(
            "Restore the database from the backup taken by Job {}{} and the Master Key from \
             Secret {} (key masterKey)",
            b.job_name,
            b.completed_at
                .as_ref()
                .map(|t| format!(" (completed {})", t.0))
                .unwrap_or_default(),
            b.master_key_secret
                .clone()
                .unwrap_or_else(|| up.master_key_copy(&o.name)),
        ),
        None => format!(
            "The operator recorded no backup for this attempt (spec.upgrade.backup.skip): \
             restore your own backup of the database as it was on {} and its Master Key; \
             {job} is the name this attempt's backup would have had",
            up.from
        ),
    };
    let wrong = named
        .map(|n| {
            format!(
                "spec.upgrade.restoredBackup names {n:?}, which is not the backup of this attempt. "
            )
        })
        .unwrap_or_default();
    Err(Stop::new(
        Reason::RestoreNotAcknowledged,
        format!(
            "{wrong}spec.version is back to {from}, but {attempt} failed while \
             migrating the database to {to}: the database may be partly migrated, and {from} \
             must not run against it. No node runs until the restore is confirmed. {what}; \
             then set spec.upgrade.restoredBackup: \"{job}\"",
            from = up.from,
            to = up.to,
        ),
    ))
}

/// How to go back from the failed attempt `up`, for its stop's message: this attempt's
/// backup by name, and the two fields to set.
pub(super) fn way_back(o: &Observed, up: &Upgrade) -> String {
    let job = up.backup_job(&o.name);
    let skipped = o.spec.upgrade.backup_skipped();
    let restore = if skipped {
        format!(
            "restore your own backup of the database as it was on {} and its Master Key (this \
             attempt took none: spec.upgrade.backup.skip)",
            up.from
        )
    } else {
        format!(
            "restore this attempt's backup {job} (status.lastBackup) and the Master Key from \
             Secret {}",
            up.master_key_copy(&o.name)
        )
    };
    format!(
        "to go back, {restore}, then set spec.version: \"{}\" and \
         spec.upgrade.restoredBackup: \"{job}\"",
        up.from
    )
}

/// While waiting for the acknowledgement no node runs: the failed node would otherwise
/// keep restarting against the database being restored (and migrate it again).
pub(super) fn nothing_runs(up: &Upgrade) -> StatefulSetWant {
    StatefulSetWant {
        version: up.to.clone(),
        replicas: 0,
    }
}

/// Under a stop of `up`: when its pod template runs a version below the database's schema
/// (edited by hand), the StatefulSet to apply (unless a safety predicate forbids it) and
/// the stop's message saying what was found; `None` when the template is fine.
pub(super) fn template_below_schema(
    o: &Observed,
    d: &Decision,
    up: &Upgrade,
    message: &str,
) -> Option<(Option<StatefulSetWant>, String)> {
    let sts = o.statefulset.as_ref()?;
    let template = sts.version.as_deref()?;
    let database = database_version(d, up)?;
    let found = OctopusVersion::parse(template).ok()?;
    if found.schema_line() >= database.schema_line() {
        return None;
    }
    let found = with_found(message, &below(template, &database));
    let want = StatefulSetWant {
        version: database.to_string(),
        replicas: sts.replicas,
    };
    // Never a new node beside one of another schema line, not even to undo the edit.
    Some(match guard_start(o, &want) {
        Ok(()) => (
            Some(want),
            format!("{found}, so the operator applied it at {database} again"),
        ),
        Err(held) => (
            None,
            format!(
                "{found}; it is not applied at {database} while {}",
                held.message
            ),
        ),
    })
}

/// `message` with `found` as its note on a found template (replacing an earlier one).
pub(super) fn with_found(message: &str, found: &str) -> String {
    let base = message
        .split(FOUND)
        .next()
        .unwrap_or(message)
        .trim_end_matches('.');
    format!("{base}{FOUND}{found}")
}

fn below(template: &str, database: &OctopusVersion) -> String {
    format!(
        "the StatefulSet's pod template ran {template}, older than the database's schema \
         ({database}); any pod it recreated would start an old node on the migrated database"
    )
}

/// No upgrade under way, `database` the version the cluster is known to be at: the
/// template version to keep, which is `database` when the template was edited below its
/// schema line (then with what was found, to say why it was applied again).
pub(super) fn template_at_least(
    sts: &StatefulSetView,
    database: &OctopusVersion,
) -> (String, Option<String>) {
    let template = sts.version.as_deref();
    match template.and_then(|t| OctopusVersion::parse(t).ok()) {
        Some(t) if t.schema_line() < database.schema_line() => {
            let found = below(&t.to_string(), database);
            (
                database.to_string(),
                Some(format!(
                    "{found}, so the operator applied it at {database} again"
                )),
            )
        }
        _ => (
            template.map_or_else(|| database.to_string(), str::to_string),
            None,
        ),
    }
}

/// The newest version that has run, or may have begun migrating, against the database:
/// the recorded schema, or the target of a stop-the-world upgrade whose first node was
/// started (its migration may be under way or partly done).
fn database_version(d: &Decision, up: &Upgrade) -> Option<OctopusVersion> {
    let schema = d
        .schema_version
        .as_deref()
        .and_then(|v| OctopusVersion::parse(v).ok());
    let first_started = up.strategy == Some(Strategy::StopTheWorld)
        && !up.is_return()
        && matches!(
            up.state_of(StepKind::StartFirst),
            Some(StepState::Running | StepState::Done)
        );
    let migrating = first_started
        .then(|| OctopusVersion::parse(&up.to).ok())
        .flatten();
    schema.into_iter().chain(migrating).max()
}
