//! The history of backup Jobs, kept bounded. Every schema-upgrade attempt runs its own
//! backup Job, so retries add Jobs (and their pods). A Job is only the process that took a
//! backup, not the backup: once the cluster is steady, finished Jobs beyond the newest
//! [`KEPT_BACKUP_JOBS`] are deleted, oldest first, one per reconcile. Never deleted: a Job
//! still running, the Job `status.lastBackup` names, and the Job of the last upgrade
//! record. Master Key copies are never deleted: a backup is useless without its key, and
//! the backups themselves live outside the cluster.

use crate::controller::model::{Action, Decision, Observed, Requeue};
use crate::controller::steps::Upgrade;

/// Finished backup Jobs kept per cluster (their logs show how each backup ran).
pub const KEPT_BACKUP_JOBS: usize = 3;

/// Adds the deletion of one backup Job beyond the kept history, when the cluster is
/// steady and nothing else is to be done.
pub(super) fn prune(o: &Observed, mut d: Decision) -> Decision {
    let steady = d.action.is_none()
        && d.stop.is_none()
        && !o.spec.paused
        && d.upgrade.as_ref().is_none_or(|u| u.finished_at.is_some());
    if !steady {
        return d;
    }
    if let Some(name) = beyond_history(o, &d) {
        d.action = Some(Action::DeleteBackupJob(name));
        d.requeue = Requeue::Soon;
    }
    d
}

/// The oldest finished backup Job past the newest [`KEPT_BACKUP_JOBS`] that nothing names.
fn beyond_history(o: &Observed, d: &Decision) -> Option<String> {
    let mut jobs: Vec<_> = o.backup_history.iter().collect();
    if jobs.len() <= KEPT_BACKUP_JOBS {
        return None;
    }
    // Newest first; a Job without a creation time counts as oldest.
    jobs.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.name.cmp(&a.name)));
    let named: Vec<String> = d
        .last_backup
        .iter()
        .map(|b| b.job_name.clone())
        .chain(
            d.upgrade
                .as_ref()
                .and_then(|u| Upgrade::try_from(u).ok())
                .map(|u| u.backup_job(&o.name)),
        )
        .collect();
    jobs.into_iter()
        .skip(KEPT_BACKUP_JOBS)
        .rfind(|j| (j.succeeded || j.failed) && !named.contains(&j.name))
        .map(|j| j.name.clone())
}
