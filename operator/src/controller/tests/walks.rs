//! Whole upgrades walked against the simulated world, from start to convergence.

use super::fixtures::*;
use super::sim::*;

// ------------------------------------------------------------------------------ walks

/// The rolling walk of the patch upgrade `from -> to` on `n` nodes, with work arriving.
pub fn rolling_sim(from: &str, to: &str, n: u32) -> Sim {
    let mut sim = Sim::steady(from, n);
    sim.spawn_every = Some(3);
    sim.task_ticks = 4;
    // A long task on the first node to go, and one elsewhere.
    sim.add_task(Some(n - 1), 6);
    if n > 1 {
        sim.add_task(Some(0), 9);
    }
    sim.change_spec(|s| s.version = to.into());
    sim.expect = Expect::new(Strategy::Rolling, from, to, n);
    sim
}

/// The stop-the-world walk of the approved schema upgrade `from -> to` on `n` nodes.
pub fn stop_the_world_sim(from: &str, to: &str, n: u32) -> Sim {
    let mut sim = Sim::steady(from, n);
    // Tasks run on every node when the upgrade begins.
    for i in 0..n {
        sim.add_task(Some(i), 3 + i);
    }
    sim.change_spec(|s| {
        s.version = to.into();
        approve(s, to);
        if v(to).major() != v(from).major() {
            s.upgrade.approved_major_version = i64::try_from(v(to).major()).ok();
        }
    });
    sim.expect = Expect::new(Strategy::StopTheWorld, from, to, n);
    sim
}

#[test]
fn day_one_creates_the_nodes_in_order_and_becomes_ready() {
    let mut sim = Sim::new(V1, 3);
    let d = sim.step(Kill::Never);
    assert_eq!(d.statefulset, want(V1, 3));
    assert_cond(&d, PROGRESSING, true, "Creating");
    sim.run(30);
    sim.assert_converged(V1);
    // OrderedReady: node 0 alone first (it creates the schema of a fresh database).
    let t = &sim.timeline;
    assert!(
        pos(t, &format!("pod-ready:octo-0@{V1}")) < pos(t, &format!("pod-created:octo-1@{V1}"))
    );
    assert!(sim.status.upgrade.is_none());
    assert_eq!(sim.status.schema_version.as_deref(), Some(V1));
}

#[test]
fn day_one_with_a_missing_secret_creates_nothing_until_it_exists() {
    let mut sim = Sim::new(V1, 3);
    sim.missing_secrets = vec!["database connection string: Secret octo-db not found".into()];
    for _ in 0..3 {
        let d = sim.step(Kill::Never);
        assert!(d.statefulset.is_none() && d.action.is_none(), "{d:?}");
        // Secrets send no watch events: the operator looks again by itself.
        assert_eq!(d.requeue, Requeue::Poll);
        assert_cond(&d, DEGRADED, true, "SecretNotFound");
        assert_cond(&d, UPGRADE_BLOCKED, true, "SecretNotFound");
    }
    assert!(sim.sts.is_none() && sim.pods.is_empty());
    sim.missing_secrets.clear();
    sim.run(30);
    sim.assert_converged(V1);
}

#[test]
fn patch_upgrade_rolls_one_node_at_a_time_highest_ordinal_first() {
    let mut sim = rolling_sim(V1, V1_PATCH, 3);
    sim.run(300);
    sim.assert_converged(V1_PATCH);
    assert_eq!(sim.replaced, ["octo-2", "octo-1", "octo-0"]);
    // One node out at a time, and some node really was out.
    assert_eq!(sim.max_out, 1);
    let t = &sim.timeline;
    let mut previous_undrain = 0;
    for n in [2, 1, 0] {
        let name = pod_name(n);
        let drained = pos(t, &format!("drain:{name}"));
        let deleted = pos(t, &format!("pod-deleted:{name}"));
        let ready = pos(t, &format!("pod-ready:{name}@{V1_PATCH}"));
        let undrained = pos(t, &format!("undrain:{name}"));
        assert!(
            previous_undrain < drained && drained < deleted && deleted < ready && ready < undrained,
            "{name}: {}",
            t.join(" | ")
        );
        previous_undrain = undrained;
    }
    // Work kept arriving and every task finished (a killed task is a violation).
    assert!(t.iter().filter(|e| e.starts_with("task-finished:")).count() >= 5);
    assert!(sim.tasks.iter().all(|t| !t.view.cancelling));
    let up = sim.status.upgrade.as_ref().expect("recorded");
    assert_eq!((up.from.as_str(), up.to.as_str()), (V1, V1_PATCH));
    assert_eq!(up.steps.len(), 18);
    assert_eq!(sim.status.schema_version.as_deref(), Some(V1_PATCH));
    // Never the backup machinery for a patch.
    assert!(
        sim.jobs.is_empty()
            && sim.master_key_copies.is_empty()
            && first_pos(t, "maintenance:").is_none()
    );
}

#[test]
fn patch_walks_converge_for_every_cluster_size_and_direction() {
    for n in 1..=4 {
        for (from, to) in [(V1, V1_PATCH), (V1_PATCH, V1)] {
            let mut sim = rolling_sim(from, to, n);
            sim.run(400);
            sim.assert_converged(to);
            let expected: Vec<String> = (0..n).rev().map(pod_name).collect();
            assert_eq!(sim.replaced, expected, "{from} -> {to} on {n}");
        }
    }
}

/// The rolling walk of [`V1`] -> [`V1_PATCH`] on two nodes, with Tentacle and Calamari
/// updates asked for.
pub fn tentacles_sim() -> Sim {
    let mut sim = rolling_sim(V1, V1_PATCH, 2);
    sim.change_spec(|s| {
        s.tentacles = Some(TentacleSpec {
            upgrade_tentacles: true,
            update_calamari: true,
            environment_ids: vec!["Environments-1".into()],
        });
    });
    sim
}

#[test]
fn a_patch_upgrade_with_tentacle_updates_queues_them_once_at_the_end() {
    let mut sim = tentacles_sim();
    sim.run(300);
    sim.assert_converged(V1_PATCH);
    assert_eq!(sim.tentacle_queues, 1);
    let t = &sim.timeline;
    assert!(pos(t, "tentacles") > pos(t, "undrain:octo-0"));
    let up = typed(sim.status.upgrade.as_ref().expect("recorded"));
    assert_eq!(up.steps.last().map(|s| s.kind), Some(StepKind::Tentacles));
}

#[test]
fn minor_upgrade_stops_the_world_with_backup_first_and_no_mixed_versions() {
    let mut sim = stop_the_world_sim(V1, V2, 3);
    sim.run(300);
    sim.assert_converged(V2);
    let t = sim.timeline.clone();
    let at = |what: &str| pos(&t, what);

    let on = at("maintenance:on");
    let at_first = |what: &str| first_pos(&t, what).unwrap_or_else(|| panic!("no {what}"));
    let copy = at_first("master-key-copy:");
    let job = at_first("backup-job:created:");
    let backed_up = at_first("backup-job:succeeded:");
    let to_zero = at(&format!("sts:{V1}@0"));
    let first_stop = first_pos(&t, "pod-stopping:").expect("nodes stopped");
    // Maintenance mode, every drain and the backup come before anything stops.
    assert!(
        on < copy && copy < job && job < backed_up && backed_up < to_zero,
        "{t:?}"
    );
    assert!(to_zero < first_stop);
    for n in 0..3 {
        let drained = at(&format!("drain:{}", pod_name(n)));
        assert!(on < drained && drained < to_zero, "{t:?}");
    }
    // Every task that ran finished before the stop.
    let last_task = last_pos(&t, "task-finished:").expect("tasks ran");
    assert!(last_task < to_zero, "{t:?}");
    // The new version appears only once every old pod is gone, node 0 alone first.
    let last_gone = last_pos(&t, "pod-gone:").expect("pods stopped");
    let first_new = at(&format!("sts:{V2}@1"));
    let created0 = at(&format!("pod-created:octo-0@{V2}"));
    let ready0 = at(&format!("pod-ready:octo-0@{V2}"));
    let rest = at(&format!("sts:{V2}@3"));
    let created1 = at(&format!("pod-created:octo-1@{V2}"));
    assert!(
        last_gone < first_new
            && first_new < created0
            && created0 < ready0
            && ready0 < rest
            && rest < created1,
        "{t:?}"
    );
    // Users get the cluster back as soon as node 0 has migrated the schema and serves
    // verified: maintenance off after its undrain, before the other nodes start; they are
    // undrained one by one once verified.
    let off = at("maintenance:off");
    let undrained0 = at(&format!("undrain:{}", pod_name(0)));
    assert!(
        ready0 < undrained0 && undrained0 < off && off < rest,
        "{t:?}"
    );
    for n in 1..3 {
        let ready = at(&format!("pod-ready:{}@{V2}", pod_name(n)));
        assert!(ready < at(&format!("undrain:{}", pod_name(n))), "{t:?}");
    }
    assert_eq!(last_pos(&t, "maintenance:"), Some(off));
    // Stop-the-world never deletes pods one by one.
    assert!(sim.replaced.is_empty());

    let status = &sim.status;
    assert_eq!(status.schema_version.as_deref(), Some(V2));
    let backup = status.last_backup.as_ref().expect("backup recorded");
    assert_eq!(
        (backup.from_version.as_str(), backup.to_version.as_str()),
        (V1, V2)
    );
    let attempt = status.upgrade.as_ref().and_then(|u| u.attempt.clone());
    assert!(attempt.is_some(), "the upgrade records its attempt");
    assert_eq!(backup.attempt, attempt);
    assert_eq!(
        backup.job_name,
        names::backup_job(NAME, V1, V2, attempt.as_deref())
    );
    assert_eq!(
        backup.master_key_secret.as_deref(),
        Some(names::master_key_copy(NAME, V1, V2, attempt.as_deref()).as_str())
    );
    assert!(backup.completed_at.is_some());
    let up = typed(status.upgrade.as_ref().expect("recorded"));
    assert_eq!(
        (up.change.as_str(), up.strategy),
        ("minor", Some(Strategy::StopTheWorld))
    );
    let actions: Vec<(StepKind, Option<&str>)> = up
        .steps
        .iter()
        .map(|s| (s.kind, s.node.as_deref()))
        .collect();
    assert_eq!(
        actions,
        [
            (StepKind::MaintenanceOn, None),
            (StepKind::Drain, Some("octo-0")),
            (StepKind::Drain, Some("octo-1")),
            (StepKind::Drain, Some("octo-2")),
            (StepKind::WaitTasks, None),
            (StepKind::Backup, None),
            (StepKind::StopAll, None),
            (StepKind::StartFirst, Some("octo-0")),
            (StepKind::WaitSchema, None),
            (StepKind::Undrain, Some("octo-0")),
            (StepKind::MaintenanceOff, None),
            (StepKind::StartRest, None),
            (StepKind::Verify, None),
            (StepKind::Undrain, Some("octo-1")),
            (StepKind::Undrain, Some("octo-2")),
        ]
    );
}

#[test]
fn maintenance_mode_ends_as_soon_after_the_first_start_whatever_the_cluster_size() {
    // Maintenance mode ends once node 0 serves on the new version, before any other node
    // starts: from the first start on, how long users are refused does not grow with the
    // nodes still to start.
    let mut lifted = Vec::new();
    for n in [1, 2, 4, 8] {
        let mut sim = stop_the_world_sim(V1, V2, n);
        sim.run(600);
        sim.assert_converged(V2);
        let t = &sim.timeline;
        let off = pos(t, "maintenance:off");
        if n > 1 {
            assert!(off < pos(t, &format!("pod-created:octo-1@{V2}")), "{t:?}");
        }
        let first_start = sim.when(&format!("sts:{V2}@1"));
        lifted.push(sim.when("maintenance:off").duration_since(first_start));
    }
    assert!(lifted.windows(2).all(|w| w[0] == w[1]), "{lifted:?}");
}

#[test]
fn schema_upgrade_walks_converge_for_every_cluster_size() {
    for n in 1..=4 {
        for to in [V2, V3] {
            let mut sim = stop_the_world_sim(V1, to, n);
            sim.run(400);
            sim.assert_converged(to);
            assert_eq!(sim.status.schema_version.as_deref(), Some(to));
        }
    }
}

#[test]
fn a_schema_upgrade_with_backup_skipped_runs_no_job() {
    let mut sim = stop_the_world_sim(V1, V2, 2);
    sim.change_spec(|s| {
        s.upgrade.backup = Some(BackupSpec {
            job_template: None,
            skip: Some(true),
        });
    });
    sim.run(300);
    sim.assert_converged(V2);
    assert!(sim.jobs.is_empty() && sim.master_key_copies.is_empty());
    assert!(sim.status.last_backup.is_none());
}

#[test]
fn a_schema_upgrade_blocked_until_approved_then_runs() {
    let mut sim = Sim::steady(V1, 3);
    sim.change_spec(|s| {
        s.version = V2.into();
        s.upgrade.backup = Some(backup_job_spec());
    });
    sim.expect = Expect::new(Strategy::StopTheWorld, V1, V2, 3);
    for _ in 0..5 {
        let d = sim.step(Kill::Never);
        assert!(d.action.is_none());
        assert_eq!(d.statefulset, want(V1, 3));
        assert_cond(&d, UPGRADE_BLOCKED, true, "SchemaUpgradeNotApproved");
        assert!(d.upgrade.is_none());
    }
    assert!(!sim.maintenance && sim.jobs.is_empty());
    sim.change_spec(|s| s.upgrade.approved_version = Some(V2.into()));
    sim.run(300);
    sim.assert_converged(V2);
}

#[test]
fn pause_stops_at_the_next_step_and_resumes() {
    let mut sim = rolling_sim(V1, V1_PATCH, 3);
    sim.run_until(100, |d| {
        step_of(d) == (Some(StepKind::WaitReady), Some("octo-2"))
    });
    sim.change_spec(|s| s.paused = true);
    let before = (sim.sts.clone(), sim.nodes.clone());
    for _ in 0..10 {
        let d = sim.step(Kill::Never);
        assert!(d.action.is_none() && d.statefulset.is_none(), "{d:?}");
        assert_cond(&d, PAUSED, true, "Paused");
        assert_cond(&d, READY, false, "Upgrading");
        assert_eq!(d.requeue, Requeue::Idle);
    }
    // Octopus was told nothing; only the kubelet moved (the replaced pod became ready).
    assert_eq!(sim.sts, before.0);
    assert!(sim.nodes.get("octo-2").is_some_and(|n| n.drained));
    assert!(
        sim.nodes
            .iter()
            .filter(|(k, _)| *k != "octo-2")
            .all(|(k, n)| before.1.get(k).is_some_and(|b| b.drained == n.drained))
    );
    sim.change_spec(|s| s.paused = false);
    sim.run(300);
    sim.assert_converged(V1_PATCH);
}
