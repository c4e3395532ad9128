//! After a failed schema migration: every attempt takes its own backup, going back needs
//! the restored backup named, and a template edited below the database's schema is put
//! back even while the operator has stopped.

use super::fixtures::*;
use super::sim::*;
use super::stops::failed_migration;
use super::walks::rolling_sim;

/// The failed attempt's record, typed.
fn attempt_of(sim: &Sim) -> Upgrade {
    typed(sim.status.upgrade.as_ref().expect("recorded"))
}

/// From the failed migration back to V1 with the restore acknowledged, until the return
/// plan has finished. Returns the failed attempt.
fn back_to_v1(sim: &mut Sim) -> Upgrade {
    let failed = attempt_of(sim);
    sim.change_spec(|s| {
        s.version = V1.into();
        s.upgrade.restored_backup = Some(failed.backup_job(NAME));
    });
    sim.run(200);
    sim.assert_converged(V1);
    // The cause of the failure is fixed before the retry.
    sim.crash_on = None;
    failed
}

#[test]
fn an_attempt_is_named_alike_on_every_reconcile_and_anew_after_a_spec_change() {
    let mut o = steady(V1, 3);
    o.generation = 2;
    o.spec.version = V2.into();
    approve(&mut o.spec, V2);
    // A kill before the record is written: the next reconcile derives the same attempt.
    let first = decide(&o).upgrade.and_then(|u| u.attempt);
    assert!(first.is_some());
    assert_eq!(decide(&o).upgrade.and_then(|u| u.attempt), first);
    o.generation = 3;
    let later = decide(&o).upgrade.and_then(|u| u.attempt);
    assert!(later.is_some() && later != first, "{first:?} {later:?}");
    let other = Observed {
        uid: "another-cluster-same-name".into(),
        ..o.clone()
    };
    assert_ne!(decide(&other).upgrade.and_then(|u| u.attempt), later);
}

/// Issue 10, item 2: A -> B failed, the cluster went back to A; A -> B again must back
/// up again before the schema migrates, under another name.
#[test]
fn a_retried_schema_upgrade_takes_its_own_backup_before_the_schema_migrates() {
    let (mut sim, _) = failed_migration();
    let failed = back_to_v1(&mut sim);
    let first_job = failed.backup_job(NAME);
    assert!(
        sim.jobs
            .get(&first_job)
            .is_some_and(|j| j.outcome == Some(true))
    );
    let mark = sim.timeline.len();

    sim.change_spec(|s| s.version = V2.into());
    let d = sim.step(Kill::Never);
    let retry = typed(d.upgrade.as_ref().expect("a new attempt"));
    assert_ne!(retry.attempt, failed.attempt);
    let second_job = retry.backup_job(NAME);
    assert_ne!(second_job, first_job);
    assert_ne!(retry.master_key_copy(NAME), failed.master_key_copy(NAME));
    sim.run(300);
    sim.assert_converged(V2);

    // Its own Master Key copy and Job, succeeded before every node stopped for it.
    let t = &sim.timeline[mark..];
    let at =
        |what: &str| first_pos(t, what).unwrap_or_else(|| panic!("no {what} in {}", t.join(" | ")));
    let copied = at(&format!("master-key-copy:{}", retry.master_key_copy(NAME)));
    let backed_up = at(&format!("backup-job:succeeded:{second_job}"));
    let stopped = at(&format!("sts:{V1}@0"));
    assert!(copied < backed_up && backed_up < stopped, "{t:?}");
    let backup = sim.status.last_backup.as_ref().expect("recorded");
    assert_eq!(backup.job_name, second_job);
    assert_eq!(backup.attempt, retry.attempt);
    // The first attempt's Job and Master Key copy are still there, under their own names.
    assert_eq!(sim.jobs.len(), 2);
    assert_eq!(sim.master_key_copies.len(), 2);
}

/// Issue 10, item 9: setting spec.version back below a failed migration starts no node of
/// the old version until the restored backup is named.
#[test]
fn going_back_after_a_failed_migration_waits_for_the_restored_backup() {
    let (mut sim, _) = failed_migration();
    let failed = attempt_of(&sim);
    let job = failed.backup_job(NAME);
    sim.change_spec(|s| s.version = V1.into());
    let d = sim.step(Kill::Never);
    assert_cond(&d, UPGRADE_BLOCKED, true, "RestoreNotAcknowledged");
    assert_cond(&d, DEGRADED, true, "RestoreNotAcknowledged");
    let message = cond(&d, UPGRADE_BLOCKED).message.clone();
    for words in [
        job.as_str(),
        failed.master_key_copy(NAME).as_str(),
        "spec.upgrade.restoredBackup",
        failed.attempt.as_deref().expect("attempt"),
        V1,
        V2,
    ] {
        assert!(message.contains(words), "{words}: {message}");
    }
    // No node runs while the database is being restored: not the failed one, not an old one.
    assert_eq!(d.statefulset, want(V2, 0));
    assert!(d.action.is_none());
    for _ in 0..20 {
        let d = sim.step(Kill::Never);
        assert_cond(&d, UPGRADE_BLOCKED, true, "RestoreNotAcknowledged");
        assert!(d.action.is_none());
    }
    assert!(sim.pods.is_empty(), "{:?}", sim.pods);
    assert!(!sim.timeline.iter().any(|e| e == &format!("sts:{V1}@1")));

    // Another backup's name is not evidence.
    sim.change_spec(|s| s.upgrade.restored_backup = Some("octo-backup-2024-2-5-00000000".into()));
    let d = sim.step(Kill::Never);
    assert_cond(&d, UPGRADE_BLOCKED, true, "RestoreNotAcknowledged");
    assert!(
        cond(&d, UPGRADE_BLOCKED)
            .message
            .contains("not the backup of this attempt")
    );
    assert!(sim.pods.is_empty());

    // This attempt's backup: every node comes back on the old version.
    sim.change_spec(|s| s.upgrade.restored_backup = Some(job.clone()));
    sim.run(200);
    sim.assert_converged(V1);
    assert_eq!(sim.status.schema_version.as_deref(), Some(V1));
}

#[test]
fn the_failed_migration_stop_names_this_attempts_backup_and_what_to_set() {
    let (sim, d) = failed_migration();
    let failed = attempt_of(&sim);
    let message = &cond(&d, UPGRADE_BLOCKED).message;
    for words in [
        failed.backup_job(NAME),
        failed.master_key_copy(NAME),
        format!(
            "spec.upgrade.restoredBackup: \"{}\"",
            failed.backup_job(NAME)
        ),
        format!("spec.version: \"{V1}\""),
    ] {
        assert!(message.contains(&words), "{words}: {message}");
    }
}

/// Issue 10, item 8: under a sticky stop, a template edited by hand below the database's
/// schema is applied again at the database's version, and the stop says what was found.
#[test]
fn a_template_edited_below_the_schema_is_applied_again_under_a_sticky_stop() {
    let (mut sim, d) = failed_migration();
    let before = cond(&d, UPGRADE_BLOCKED).message.clone();
    // The first node may have begun migrating to V2: V1 is below the database now.
    sim.sts = Some(StatefulSetView {
        version: Some(V1.into()),
        replicas: 1,
    });
    let d = sim.step(Kill::Never);
    assert_eq!(d.statefulset, want(V2, 1));
    assert!(d.action.is_none());
    assert_cond(&d, UPGRADE_BLOCKED, true, "NodeFailedAfterMigration");
    let message = cond(&d, UPGRADE_BLOCKED).message.clone();
    assert!(message.starts_with(&before), "{message}");
    assert!(
        message.contains(&format!("pod template ran {V1}"))
            && message.contains(&format!("applied it at {V2} again")),
        "{message}"
    );
    // Applied once; then the stop holds with the same words and touches nothing.
    for _ in 0..5 {
        let d = sim.step(Kill::Never);
        assert_eq!(d.statefulset, None);
        assert_eq!(cond(&d, UPGRADE_BLOCKED).message, message);
    }
    // A second edit is reported anew, not twice.
    sim.sts = Some(StatefulSetView {
        version: Some("2023.4.1".into()),
        replicas: 1,
    });
    let d = sim.step(Kill::Never);
    let again = &cond(&d, UPGRADE_BLOCKED).message;
    assert_eq!(again.matches("Found: ").count(), 1, "{again}");
    assert!(again.contains("ran 2023.4.1"), "{again}");
    sim.assert_clean();
}

#[test]
fn a_template_edited_below_the_schema_during_a_stopped_roll_goes_back_to_the_database_version() {
    let mut sim = rolling_sim(V1, V1_PATCH, 3);
    sim.crash_on = Some((2, V1_PATCH.into()));
    let d = sim.run_until(200, |d| d.stop.is_some());
    assert_cond(&d, UPGRADE_BLOCKED, true, "NodeFailedToStart");
    let older = "2023.4.1";
    sim.sts = Some(StatefulSetView {
        version: Some(older.into()),
        replicas: 3,
    });
    let d = sim.step(Kill::Never);
    let applied = d.statefulset.clone().expect("applied again");
    assert_eq!(applied.replicas, 3);
    assert_eq!(line(&applied.version), line(V1), "{applied:?}");
    assert_cond(&d, UPGRADE_BLOCKED, true, "NodeFailedToStart");
    assert!(cond(&d, UPGRADE_BLOCKED).message.contains(older));
    // A template on the database's own line is not touched under the stop.
    let d = sim.step(Kill::Never);
    assert_eq!(d.statefulset, None);
}

fn finished_job(name: &str, hours: i64) -> JobView {
    JobView {
        name: name.into(),
        succeeded: true,
        failed: false,
        completed_at: None,
        created_at: Some(after(t0(), hours * 3600)),
    }
}

#[test]
fn backup_jobs_beyond_the_kept_history_are_deleted_oldest_first_once_steady() {
    let mut o = steady(V2, 3);
    o.backup_history = (0..5).map(|i| finished_job(&format!("j{i}"), i)).collect();
    // status.lastBackup names the oldest: it is what a person restores, so it stays.
    o.status.last_backup = Some(BackupStatus {
        job_name: "j0".into(),
        from_version: V1.into(),
        to_version: V2.into(),
        attempt: Some("0123abcd".into()),
        master_key_secret: None,
        completed_at: None,
    });
    let d = decide(&o);
    assert_eq!(d.action, Some(Action::DeleteBackupJob("j1".into())));
    assert_eq!(d.requeue, Requeue::Soon);
    assert_cond(&d, READY, true, "Ready");

    o.backup_history.retain(|j| j.name != "j1");
    assert_eq!(
        decide(&o).action,
        None,
        "the newest three and lastBackup's stay"
    );

    // A Job still running is never deleted, however old.
    let mut running = o.clone();
    running.backup_history.push(JobView {
        succeeded: false,
        ..finished_job("j-old-running", -5)
    });
    assert_eq!(decide(&running).action, None);

    // Nothing is pruned while an upgrade is under way.
    let mut upgrading = o.clone();
    upgrading.backup_history.push(finished_job("j-older", -10));
    assert_eq!(
        decide(&upgrading).action,
        Some(Action::DeleteBackupJob("j-older".into()))
    );
    upgrading.status.upgrade = upgrade_record(V2, "2024.2.9", 3, 1, t0());
    upgrading.spec.version = "2024.2.9".into();
    let d = decide(&upgrading);
    assert!(
        !matches!(d.action, Some(Action::DeleteBackupJob(_))),
        "{:?}",
        d.action
    );
}

#[test]
fn a_template_edited_below_the_schema_is_not_kept_while_an_upgrade_waits_for_approval() {
    let mut sim = Sim::steady(V2, 3);
    // A minor upgrade waits for approval; meanwhile someone puts V1 into the template.
    sim.change_spec(|s| {
        s.version = "2024.3.1".into();
        s.upgrade.backup = Some(backup_job_spec());
    });
    sim.sts = Some(StatefulSetView {
        version: Some(V1.into()),
        replicas: 3,
    });
    let d = sim.step(Kill::Never);
    assert_cond(&d, UPGRADE_BLOCKED, true, "SchemaUpgradeNotApproved");
    assert_eq!(d.statefulset, want(V2, 3));
    let message = &cond(&d, UPGRADE_BLOCKED).message;
    assert!(
        message.contains(&format!("pod template ran {V1}"))
            && message.contains(&format!("applied it at {V2} again")),
        "{message}"
    );
    // Once applied, the stop says only why it waits.
    let d = sim.step(Kill::Never);
    assert_eq!(d.statefulset, want(V2, 3));
    assert!(!cond(&d, UPGRADE_BLOCKED).message.contains("Found: "));
    sim.assert_clean();
}
