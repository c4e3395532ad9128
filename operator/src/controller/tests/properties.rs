//! Properties over random observations, and over randomised walks.

use super::fixtures::*;
use super::restarts::*;
use super::sim::*;
use super::walks::*;

// ------------------------------------------------------------------------- properties

pub const VERSIONS: [&str; 5] = [V1, V1_PATCH, V2, V3, "2023.4.1"];

/// Kubelet waiting reasons a random pod may show.
const WAITING: [StartFailure; 2] = [StartFailure::ImagePull, StartFailure::ContainerConfig];

prop_compose! {
    fn arb_pods()(
        pods in prop::collection::vec(
            prop::option::weighted(
                0.85,
                (
                    0..VERSIONS.len(),
                    prop::bool::weighted(0.8),
                    prop::bool::weighted(0.15),
                    prop::bool::weighted(0.15),
                    0i32..5,
                    prop::option::weighted(0.15, 0..WAITING.len()),
                ),
            ),
            0..=5,
        )
    ) -> Vec<PodView> {
        pods.into_iter()
            .enumerate()
            .filter_map(|(i, p)| {
                let (version, ready, terminating, crash_looping, restarts, waiting) = p?;
                let ordinal = u32::try_from(i).ok()?;
                Some(PodView {
                    name: pod_name(ordinal),
                    ordinal,
                    version: Some(VERSIONS[version].into()),
                    ready,
                    restarts,
                    crash_looping,
                    terminating,
                    waiting: waiting.map(|w| waiting_on(WAITING[w])),
                    ..PodView::default()
                })
            })
            .collect()
    }
}

prop_compose! {
    fn arb_octopus()(
        kind in 0u8..5,
        maintenance in any::<bool>(),
        nodes in prop::collection::vec(
            (
                prop::bool::weighted(0.85),
                prop::bool::weighted(0.3),
                prop::bool::weighted(0.1),
                0..VERSIONS.len(),
            ),
            5,
        ),
        tasks in prop::collection::vec((0u32..6, prop::bool::weighted(0.3)), 0..=3),
    ) -> OctopusView {
        match kind {
            0 => OctopusView::NoReadyNode,
            1 => unavailable(),
            _ => OctopusView::Up(OctopusState {
                nodes: nodes
                    .iter()
                    .enumerate()
                    .filter(|(_, n)| n.0)
                    .map(|(i, (_, drained, offline, version))| OctopusNode {
                        drained: *drained,
                        offline: *offline,
                        ..node(u32::try_from(i).unwrap_or(0), VERSIONS[*version])
                    })
                    .collect(),
                maintenance,
                running_tasks: tasks
                    .iter()
                    .enumerate()
                    .map(|(i, (n, cancelling))| TaskView {
                        cancelling: *cancelling,
                        ..task(&format!("ServerTasks-{i}"), (*n < 5).then_some(*n))
                    })
                    .collect(),
            }),
        }
    }
}

prop_compose! {
    /// Any observation the reconciler might make, including ones no sane world produces.
    fn arb_observed()(
        replicas in 1i32..=4,
        version in 0..VERSIONS.len(),
        pods in arb_pods(),
        sts in prop::option::weighted(0.9, (0..VERSIONS.len(), 0i32..=5)),
        octopus in arb_octopus(),
        upgrade in prop::option::weighted(
            0.7,
            (0..VERSIONS.len(), 0..VERSIONS.len(), 1u32..=4, 0usize..24, 0i64..120),
        ),
        status in (
            prop::option::of(0..VERSIONS.len()),
            0u8..3,
            1i64..=3,
            prop::option::weighted(0.2, (1i64..=3, 0usize..3)),
        ),
        knobs in (
            prop::bool::weighted(0.1),
            prop::bool::weighted(0.1),
            prop::option::of(0..VERSIONS.len()),
            any::<bool>(),
            0u8..3,
            any::<bool>(),
        ),
        backup in (
            prop::option::of((any::<bool>(), any::<bool>())),
            any::<bool>(),
        ),
        budget in 0usize..3,
    ) -> Observed {
        let (schema, last_backup, generation, stopped) = status;
        let (paused, missing, approved, automatic, backup_kind, cancel) = knobs;
        let mut o = steady(VERSIONS[version], 1);
        o.spec.replicas = replicas;
        o.spec.paused = paused;
        if missing {
            o.missing_secrets = vec!["API key: Secret octo has no key \"apiKey\"".into()];
        }
        o.spec.upgrade.approved_version = approved.map(|a| VERSIONS[a].to_string());
        o.spec.upgrade.approved_major_version = approved.map(|a| i64::try_from(v(VERSIONS[a]).major()).unwrap_or(0));
        if automatic {
            o.spec.upgrade.schema_upgrades = SchemaUpgradePolicy::Automatic;
        }
        o.spec.upgrade.backup = match backup_kind {
            0 => None,
            1 => Some(backup_job_spec()),
            _ => Some(BackupSpec { job_template: None, skip: Some(true) }),
        };
        if cancel {
            o.spec.upgrade.on_drain_timeout = DrainTimeoutPolicy::CancelTasks;
        }
        o.generation = generation;
        o.pods = pods;
        o.statefulset = sts.map(|(version, replicas)| StatefulSetView {
            version: Some(VERSIONS[version].into()),
            replicas,
        });
        o.octopus = octopus;
        o.status = OctopusClusterStatus {
            schema_version: schema.map(|s| VERSIONS[s].to_string()),
            ..OctopusClusterStatus::default()
        };
        o.status.upgrade = upgrade.and_then(|(from, to, nodes, done, minutes_ago)| {
            let mut up = upgrade_record(
                VERSIONS[from],
                VERSIONS[to],
                nodes,
                done,
                after(t0(), -minutes_ago * 60),
            )?;
            if let Some((stopped_generation, reason)) = stopped {
                up.stopped_reason = Some(
                    [
                        Reason::NodeFailedAfterMigration,
                        Reason::NodeNotReady,
                        Reason::BackupFailed,
                    ][reason]
                        .as_str()
                        .into(),
                );
                up.stopped_generation = Some(stopped_generation);
            }
            Some(up)
        });
        o.status.last_backup = match (last_backup, &o.status.upgrade) {
            (1, Some(up)) => Some(BackupStatus {
                job_name: "b".into(),
                from_version: up.from.clone(),
                to_version: up.to.clone(),
                attempt: up.attempt.clone(),
                master_key_secret: None,
                completed_at: None,
            }),
            (2, _) => Some(BackupStatus {
                job_name: "old".into(),
                from_version: "2023.3.1".into(),
                to_version: "2023.4.1".into(),
                attempt: None,
                master_key_secret: None,
                completed_at: None,
            }),
            _ => None,
        };
        let (job, copy) = backup;
        o.backup_job = job.map(|(succeeded, failed)| JobView {
            name: "octo-backup".into(),
            succeeded: succeeded && !failed,
            failed,
            completed_at: None,
            created_at: None,
        });
        o.master_key_copy = copy;
        o.evictions = [Some(Evictions::None), Some(Evictions::One), None][budget];
        // Earlier attempts' Jobs: finished ones, the newest still running, one named "b"
        // (status.lastBackup's when recorded).
        let earlier = usize::try_from(o.generation.rem_euclid(7)).expect("small");
        o.backup_history = (0..earlier)
            .map(|i| JobView {
                name: if i == 0 { "b".into() } else { format!("octo-backup-{i}") },
                succeeded: i % 3 != 1 && i + 1 < earlier,
                failed: i % 3 == 1,
                completed_at: None,
                created_at: Some(after(t0(), i64::try_from(i).expect("small") * 3600)),
            })
            .collect();
        o
    }
}

/// Every desired node other than `except` is ready, running and serving in Octopus.
pub fn others_serving(o: &Observed, except: &str) -> Result<(), TestCaseError> {
    let state = o.octopus.state();
    // Over the nodes the cluster runs, as OtherNodesServing counts them: a scale-up asked
    // for mid-roll has no node out yet.
    for ordinal in 0..o.running_replicas() {
        let name = pod_name(ordinal);
        if name == except {
            continue;
        }
        let pod = o.pods.iter().find(|p| p.name == name);
        prop_assert!(
            pod.is_some_and(|p| p.ready && !p.terminating),
            "{name} not serving: {pod:?}"
        );
        if let Some(n) = state.and_then(|s| s.node(&name)) {
            prop_assert!(!n.drained && !n.offline, "{name} out in Octopus: {n:?}");
        }
    }
    Ok(())
}

pub fn step_states(up: &UpgradeStatus) -> String {
    typed(up)
        .steps
        .iter()
        .map(|s| match s.state {
            StepState::Done => 'D',
            StepState::Running => 'R',
            StepState::Pending => 'P',
        })
        .collect()
}

/// What must hold of any decision on any observation.
pub fn check_decision_properties(o: &Observed, d: &Decision) -> Result<(), TestCaseError> {
    // The same observation, the same decision.
    prop_assert_eq!(format!("{d:?}"), format!("{:?}", decide(o)));

    // Paused or missing Secrets: hands off.
    if o.spec.paused || !o.missing_secrets.is_empty() {
        prop_assert!(d.action.is_none() && d.statefulset.is_none(), "{d:?}");
    }

    // Every condition type, once, in the documented order.
    let types: Vec<&str> = d.conditions.iter().map(|c| c.type_).collect();
    prop_assert_eq!(types, conditions::ALL.to_vec());

    // Ready means nothing blocks and nothing is to do (Degraded may accompany it: the
    // Octopus API can fail while every node serves).
    if cond(d, READY).status {
        prop_assert!(!cond(d, UPGRADE_BLOCKED).status);
        prop_assert!(d.action.is_none() && d.stop.is_none(), "{d:?}");
    }
    // A stop is never acted through, and is always visible. (UnsafeToStart is exempt
    // here: see `a_stop_found_by_the_start_guard_cancels_the_steps_action`.)
    if let Some((reason, _)) = &d.stop {
        if *reason != Reason::UnsafeToStart {
            prop_assert!(d.action.is_none(), "{:?} despite {reason}", d.action);
        }
        prop_assert!(cond(d, UPGRADE_BLOCKED).status || cond(d, DEGRADED).status);
        prop_assert!(!cond(d, PROGRESSING).status);
    }
    if d.action.is_some() {
        prop_assert_eq!(d.requeue, Requeue::Soon);
        // Only from a saved record: a new upgrade's plan is written before it acts.
        let saved = o
            .status
            .upgrade
            .as_ref()
            .filter(|u| u.finished_at.is_none());
        prop_assert!(
            saved.is_some_and(|u| d.upgrade.as_ref().map(|n| &n.started_at) == Some(&u.started_at)),
            "{:?} for an upgrade not recorded yet",
            d.action
        );
    }

    match &d.action {
        // Only a finished Job of an earlier attempt, beyond the kept history, while steady.
        Some(Action::DeleteBackupJob(name)) => {
            let job = o.backup_history.iter().find(|j| j.name == *name);
            prop_assert!(job.is_some_and(|j| j.succeeded || j.failed), "{job:?}");
            prop_assert!(o.backup_history.len() > KEPT_BACKUP_JOBS);
            prop_assert!(d.last_backup.as_ref().is_none_or(|b| b.job_name != *name));
            prop_assert!(d.stop.is_none());
            prop_assert!(d.upgrade.as_ref().is_none_or(|u| u.finished_at.is_some()));
        }
        // Octopus actions need Octopus's view: never act blind.
        Some(
            Action::SetMaintenance(_)
            | Action::SetDrain { .. }
            | Action::CancelTasks(_)
            | Action::QueueTentacleTasks { .. },
        ) => prop_assert!(o.octopus.state().is_some(), "{:?} blind", d.action),
        // A pod that runs nothing (crash loop, cannot start) on another version than the
        // roll's target takes nothing out of service: it may go without Octopus's view.
        Some(Action::DeletePod(name))
            if o.pods.iter().any(|p| {
                p.name == *name
                    && p.is_down()
                    && d.upgrade.as_ref().is_some_and(|u| {
                        typed(u).strategy == Some(Strategy::Rolling)
                            && p.version.as_deref() != Some(u.to.as_str())
                    })
            }) => {}
        // Any other pod is replaced only when drained, idle, and everyone else serves.
        Some(Action::DeletePod(name)) => {
            let state = o.octopus.state();
            prop_assert!(state.is_some(), "replacing {name} blind");
            let state = state.expect("checked");
            let pod = o.pods.iter().find(|p| p.name == *name);
            prop_assert!(pod.is_some_and(|p| !p.terminating), "{pod:?}");
            if let Some(n) = state.node(name) {
                prop_assert!(n.drained, "{name} not drained: {n:?}");
            }
            prop_assert_eq!(state.tasks_on(name).count(), 0);
            others_serving(o, name)?;
        }
        // A node record goes only with its pod, and never blind.
        Some(Action::DeleteNodeRecord { node, .. }) => {
            prop_assert!(o.octopus.state().is_some(), "forgetting {node} blind");
            prop_assert!(!o.pods.iter().any(|p| p.name == *node), "{node} still runs");
        }
        _ => {}
    }
    // No eviction can take a node beside one the operator takes out: a serving pod is
    // replaced only while the budget it saw lets none through, and an upgrade under way
    // keeps it closed. (A pod that runs nothing takes nothing out when it goes, whatever
    // the budget said: a generated observation may pair it with an open budget, which a
    // real disruption controller would not, as the pod counts as unhealthy.)
    if let Some(Action::DeletePod(name)) = &d.action
        && !o.pods.iter().any(|p| p.name == *name && p.is_down())
    {
        prop_assert_eq!(o.evictions, Some(Evictions::None));
    }
    if d.upgrade.as_ref().is_some_and(|u| u.finished_at.is_none()) {
        prop_assert!(
            d.evictions.is_none_or(|e| e == Evictions::None),
            "{:?} during an upgrade",
            d.evictions
        );
    }
    let rolling = d
        .upgrade
        .as_ref()
        .is_some_and(|u| typed(u).strategy == Some(Strategy::Rolling));
    if let Some(Action::SetDrain {
        node,
        drained: true,
        ..
    }) = &d.action
        && rolling
    {
        others_serving(o, node)?;
    }

    // A StatefulSet that would start pods starts them only on the schema line every pod
    // runs, never below the recorded schema.
    if let Some(w) = &d.statefulset
        && w.replicas > 0
    {
        let starts = o.statefulset.as_ref().is_none_or(|s| {
            s.version.as_deref() != Some(w.version.as_str()) || s.replicas < w.replicas
        });
        if starts {
            let want_line = line(&w.version);
            for p in &o.pods {
                prop_assert_eq!(
                    p.version.as_deref().map(line),
                    Some(want_line),
                    "{} would start next to {:?}",
                    &w.version,
                    p
                );
            }
            if let Some(schema) = &o.status.schema_version {
                prop_assert!(want_line >= line(schema), "{} below {schema}", &w.version);
            }
        }
    }

    // heldBy names the predicate exactly while one holds the step, as the reason does.
    if let Some(up) = d.upgrade.as_ref().filter(|u| u.finished_at.is_none())
        && !o.spec.paused
        && d.stop.is_none()
    {
        let held = typed(up).held_by.map(|h| h.predicate.reason());
        let progressing = cond(d, PROGRESSING).reason;
        let waits_for_predicate = Predicate::iter().any(|p| p.reason() == progressing);
        prop_assert_eq!(
            held.is_some(),
            waits_for_predicate,
            "heldBy {:?}",
            up.held_by
        );
        if let Some(reason) = held {
            prop_assert_eq!(reason, progressing);
        }
    }
    // The upgrade record: done steps form a prefix, at most one runs, none is undone.
    if let Some(up) = &d.upgrade {
        let states = step_states(up);
        let prefix = states.trim_start_matches('D');
        let rest = prefix.strip_prefix('R').unwrap_or(prefix);
        prop_assert!(rest.chars().all(|c| c == 'P'), "steps {states}");
        if up.finished_at.is_some() {
            prop_assert!(states.chars().all(|c| c == 'D'), "finished with {states}");
        }
        // The same record: a re-planned roll is a new one (another target).
        if let Some(before) = &o.status.upgrade
            && before.started_at == up.started_at
            && before.to == up.to
            && before.steps.len() == up.steps.len()
        {
            for (b, a) in typed(before).steps.iter().zip(&typed(up).steps) {
                prop_assert!(
                    b.state != StepState::Done || a.state == StepState::Done,
                    "{states}"
                );
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn prop_any_observation_gets_a_safe_decision(o in arb_observed()) {
        let d = decide(&o);
        check_decision_properties(&o, &d)?;
    }
}

#[test]
fn a_stop_found_by_the_start_guard_cancels_the_steps_action() {
    // A rolling upgrade at `drain octo-1`; the template still names the old patch (e.g.
    // reverted by hand) and octo-0 runs another schema line (e.g. its image patched by
    // hand): applying the template is unsafe, and so is draining.
    let mut o = steady(V1, 3);
    o.spec.version = V1_PATCH.into();
    o.status.upgrade = upgrade_record(V1, V1_PATCH, 3, 6, t0());
    pod_mut(&mut o, "octo-2").version = Some(V1_PATCH.into());
    node_mut(&mut o, "octo-2").version = Some(V1_PATCH.into());
    pod_mut(&mut o, "octo-0").version = Some(V2.into());
    let d = decide(&o);
    assert_eq!(d.stop.as_ref().map(|s| s.0.as_str()), Some("UnsafeToStart"));
    assert_eq!(d.action, None, "the operator acts although it stopped");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]

    /// Walks with random cluster sizes, work, backup durations and one kill anywhere,
    /// after which the spec or the clock may change.
    #[test]
    fn prop_randomised_walks_stay_safe_and_converge(
        n in 1u32..=6,
        schema in any::<bool>(),
        spawn_every in prop::option::of(1u32..6),
        task_ticks in 1u32..8,
        backup_ticks in 0u32..4,
        kill in prop::option::of((0u32..40, any::<bool>())),
        change in prop::option::of(0..Change::ALL.len()),
    ) {
        let to = if schema { V2 } else { V1_PATCH };
        let setup = move || {
            let mut sim = if schema {
                stop_the_world_sim(V1, V2, n)
            } else {
                rolling_sim(V1, V1_PATCH, n)
            };
            sim.spawn_every = spawn_every;
            sim.task_ticks = task_ticks;
            sim.backup_ticks = backup_ticks;
            sim
        };
        match kill {
            None => {
                let mut sim = setup();
                if let Err(e) = sim.try_run(500) {
                    return Err(TestCaseError::fail(format!("{e}\n{}", sim.story())));
                }
                sim.assert_converged(to);
            }
            Some((k, before_record)) => {
                let mode = if before_record { Kill::BeforeRecord } else { Kill::AfterApply };
                let change = change.map(|c| Change::ALL[c]);
                if let Err(e) = killed_and_changed_at(&setup, k, mode, change, to) {
                    return Err(TestCaseError::fail(e));
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]

    /// Scale-downs of random sizes, with random work and one kill anywhere: the leaving
    /// nodes' tasks always finish, the nodes that stay always serve, and no record of a
    /// removed node is left in Octopus.
    #[test]
    fn prop_randomised_scale_downs_stay_safe_and_forget_the_removed_nodes(
        (from, to) in proptest::strategy::Strategy::prop_flat_map(2u32..=4, |from| (Just(from), 1..from)),
        spawn_every in prop::option::of(1u32..6),
        task_ticks in 1u32..8,
        kill in prop::option::of((0u32..40, any::<bool>())),
    ) {
        let setup = move || {
            let mut sim = Sim::steady(V1, from);
            sim.spawn_every = spawn_every;
            sim.task_ticks = task_ticks;
            sim.add_task(Some(from - 1), task_ticks);
            sim.change_spec(|s| s.replicas = i32::try_from(to).expect("small"));
            sim.expect = Expect::new(Strategy::Rolling, V1, V1, to);
            sim
        };
        let mut sim = setup();
        if let Some((k, before_record)) = kill {
            for _ in 0..k {
                sim.step(Kill::Never);
            }
            sim.step(if before_record { Kill::BeforeRecord } else { Kill::AfterApply });
        }
        if let Err(e) = sim.try_run(500) {
            return Err(TestCaseError::fail(format!("{e}\n{}", sim.story())));
        }
        sim.assert_converged(V1);
        let kept: Vec<String> = (0..to).map(pod_name).collect();
        prop_assert_eq!(sim.nodes.keys().cloned().collect::<Vec<_>>(), kept);
    }
}
