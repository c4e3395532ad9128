//! Table-driven single decisions on hand-built observations: Day 1, steady state, the
//! schema-upgrade gates and every stop.

use super::fixtures::*;

// ------------------------------------------------------------------- table-driven cases

/// One decision on one observation, and what must come out of it.
pub struct Case {
    pub name: &'static str,
    pub observed: Observed,
    pub action: Option<Action>,
    pub statefulset: Option<StatefulSetWant>,
    /// (type, status, reason) of conditions that must hold.
    pub conditions: Vec<(&'static str, bool, &'static str)>,
    /// Words the message of the condition of this type must contain.
    pub message: Option<(&'static str, Vec<String>)>,
}

pub fn run_cases(cases: Vec<Case>) {
    let mut failures = Vec::new();
    for case in cases {
        let d = decide(&case.observed);
        let mut wrong = Vec::new();
        if d.action != case.action {
            wrong.push(format!("action {:?}, want {:?}", d.action, case.action));
        }
        if d.statefulset != case.statefulset {
            wrong.push(format!(
                "statefulset {:?}, want {:?}",
                d.statefulset, case.statefulset
            ));
        }
        for (type_, status, reason) in &case.conditions {
            let c = cond(&d, type_);
            if (c.status, c.reason.as_str()) != (*status, *reason) {
                wrong.push(format!(
                    "{type_} {}/{} ({}), want {status}/{reason}",
                    c.status, c.reason, c.message
                ));
            }
        }
        if let Some((type_, words)) = &case.message {
            let message = &cond(&d, type_).message;
            for word in words {
                if !message.contains(word.as_str()) {
                    wrong.push(format!("{type_} message {message:?} lacks {word:?}"));
                }
            }
        }
        if !wrong.is_empty() {
            failures.push(format!("{}:\n    {}", case.name, wrong.join("\n    ")));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn day_one_and_steady_state() {
    let mut no_sts = steady(V1, 3);
    no_sts.statefulset = None;
    no_sts.pods.clear();
    no_sts.octopus = OctopusView::NoReadyNode;
    no_sts.status = OctopusClusterStatus::default();

    let mut missing = no_sts.clone();
    missing.missing_secrets = vec!["Master Key: Secret octo not found".into()];

    let mut paused = no_sts.clone();
    paused.spec.paused = true;

    let mut paused_steady = steady(V1, 3);
    paused_steady.spec.paused = true;

    let mut one_not_ready = steady(V1, 3);
    pod_mut(&mut one_not_ready, "octo-1").ready = false;

    let mut scale_up = steady(V1, 3);
    scale_up.spec.replicas = 4;

    let mut invalid = steady(V1, 3);
    invalid.spec.version = "latest".into();

    run_cases(vec![
        Case {
            name: "day 1: no StatefulSet -> create it on spec.version",
            observed: no_sts,
            action: None,
            statefulset: want(V1, 3),
            conditions: vec![
                (PROGRESSING, true, "Creating"),
                (READY, false, "Creating"),
                (DEGRADED, false, "AsExpected"),
                (UPGRADE_BLOCKED, false, "NotBlocked"),
                (PAUSED, false, "NotPaused"),
            ],
            message: Some((PROGRESSING, vec!["3".into(), V1.into()])),
        },
        Case {
            name: "day 1: missing Secret -> nothing created",
            observed: missing,
            action: None,
            statefulset: None,
            conditions: vec![
                (DEGRADED, true, "SecretNotFound"),
                (UPGRADE_BLOCKED, true, "SecretNotFound"),
                (READY, false, "Creating"),
                (PROGRESSING, false, "SecretNotFound"),
            ],
            message: Some((
                UPGRADE_BLOCKED,
                vec!["Master Key: Secret octo not found".into()],
            )),
        },
        Case {
            name: "day 1: paused -> nothing created",
            observed: paused,
            action: None,
            statefulset: None,
            conditions: vec![
                (PAUSED, true, "Paused"),
                (READY, false, "Creating"),
                (UPGRADE_BLOCKED, false, "NotBlocked"),
            ],
            message: None,
        },
        Case {
            name: "steady and paused -> no StatefulSet change",
            observed: paused_steady,
            action: None,
            statefulset: None,
            conditions: vec![(PAUSED, true, "Paused"), (READY, true, "Ready")],
            message: None,
        },
        Case {
            name: "steady: every node ready on the target",
            observed: steady(V1, 3),
            action: None,
            statefulset: want(V1, 3),
            conditions: vec![
                (READY, true, "Ready"),
                (PROGRESSING, false, "Idle"),
                (DEGRADED, false, "AsExpected"),
                (UPGRADE_BLOCKED, false, "NotBlocked"),
                (PAUSED, false, "NotPaused"),
            ],
            message: Some((READY, vec!["3/3".into()])),
        },
        Case {
            name: "steady: one node not ready",
            observed: one_not_ready,
            action: None,
            statefulset: want(V1, 3),
            conditions: vec![
                (READY, false, "NodesNotReady"),
                (PROGRESSING, true, "NodesNotReady"),
            ],
            message: Some((READY, vec!["2/3".into()])),
        },
        Case {
            name: "steady: scale up on the running version",
            observed: scale_up,
            action: None,
            statefulset: want(V1, 4),
            conditions: vec![
                (READY, false, "NodesNotReady"),
                (UPGRADE_BLOCKED, false, "NotBlocked"),
            ],
            message: None,
        },
        Case {
            name: "invalid spec.version",
            observed: invalid,
            action: None,
            statefulset: None,
            conditions: vec![(UPGRADE_BLOCKED, true, "InvalidVersion")],
            message: Some((UPGRADE_BLOCKED, vec!["latest".into()])),
        },
    ]);
}

#[test]
fn steady_state_decides_idle_requeue_and_no_upgrade() {
    let d = decide(&steady(V1, 3));
    assert_eq!(d.requeue, Requeue::Idle);
    assert!(d.upgrade.is_none());
    assert!(d.stop.is_none());
    assert_eq!(d.current_version.as_deref(), Some(V1));
    assert_eq!(d.target_version.as_deref(), Some(V1));
    assert_eq!(d.schema_version.as_deref(), Some(V1));
    assert_eq!(phase(&d.conditions), "Ready");
}

/// Upgrade gates and refusals: the cluster keeps running what it runs.
#[test]
fn schema_upgrade_gates_and_refusals() {
    let minor = |f: &dyn Fn(&mut Observed)| {
        let mut o = steady(V1, 3);
        o.spec.version = V2.into();
        o.generation = 2;
        f(&mut o);
        o
    };
    let saturday_night = MaintenanceWindow {
        days: vec![Weekday::Saturday],
        start: "22:00".into(),
        duration: minutes(240),
        time_zone: "Europe/Berlin".into(),
    };
    let wednesday_morning = MaintenanceWindow {
        days: vec![Weekday::Wednesday],
        start: "10:30".into(), // 09:30Z; t0 is 10:00Z
        duration: minutes(60),
        time_zone: "Europe/Berlin".into(),
    };
    let major = |f: &dyn Fn(&mut Observed)| {
        let mut o = steady(V1, 3);
        o.spec.version = V3.into();
        o.spec.upgrade.backup = Some(backup_job_spec());
        f(&mut o);
        o
    };
    let mut downgrade = steady(V2, 3);
    downgrade.spec.version = V1.into();
    let mut below_schema = steady(V2, 3);
    below_schema.spec.version = "2024.1.99".into();

    let mut mixed = steady(V1, 3);
    pod_mut(&mut mixed, "octo-2").version = Some(V2.into());
    let mut mixed_patches = steady(V1, 3);
    mixed_patches.spec.version = V1_PATCH.into();
    pod_mut(&mut mixed_patches, "octo-2").version = Some(V1_PATCH.into());
    node_mut(&mut mixed_patches, "octo-2").version = Some(V1_PATCH.into());
    mixed_patches.statefulset = Some(StatefulSetView {
        version: Some(V1_PATCH.into()),
        replicas: 3,
    });

    let blocked_stays = want(V1, 3);
    // From the recorded plan (see `a_new_upgrade_is_recorded_before_its_first_action`).
    let start = Some(Action::SetMaintenance(true));
    run_cases(vec![
        Case {
            name: "minor, Manual, not approved",
            observed: minor(&|o| o.spec.upgrade.backup = Some(backup_job_spec())),
            action: None,
            statefulset: blocked_stays.clone(),
            conditions: vec![
                (UPGRADE_BLOCKED, true, "SchemaUpgradeNotApproved"),
                (PROGRESSING, false, "SchemaUpgradeNotApproved"),
                (DEGRADED, false, "AsExpected"),
            ],
            message: Some((
                UPGRADE_BLOCKED,
                vec![
                    "spec.upgrade.approvedVersion".into(),
                    format!("\"{V2}\""),
                    V1.into(),
                ],
            )),
        },
        Case {
            name: "minor, approved for another version",
            observed: minor(&|o| approve(&mut o.spec, "2024.3.1")),
            action: None,
            statefulset: blocked_stays.clone(),
            conditions: vec![(UPGRADE_BLOCKED, true, "SchemaUpgradeNotApproved")],
            message: None,
        },
        Case {
            name: "minor, approved, no backup configured",
            observed: minor(&|o| o.spec.upgrade.approved_version = Some(V2.into())),
            action: None,
            statefulset: blocked_stays.clone(),
            conditions: vec![(UPGRADE_BLOCKED, true, "BackupNotConfigured")],
            message: Some((
                UPGRADE_BLOCKED,
                vec![
                    "spec.upgrade.backup.jobTemplate".into(),
                    "skip: true".into(),
                ],
            )),
        },
        Case {
            name: "minor, Automatic, window closed",
            observed: minor(&|o| {
                o.spec.upgrade.schema_upgrades = SchemaUpgradePolicy::Automatic;
                o.spec.upgrade.backup = Some(backup_job_spec());
                o.spec.upgrade.maintenance_window = Some(saturday_night.clone());
            }),
            action: None,
            statefulset: blocked_stays.clone(),
            conditions: vec![(UPGRADE_BLOCKED, true, "OutsideMaintenanceWindow")],
            message: Some((
                UPGRADE_BLOCKED,
                vec!["spec.upgrade.approvedVersion".into(), V2.into()],
            )),
        },
        Case {
            name: "minor, Automatic, window open -> maintenance mode first",
            observed: planned(minor(&|o| {
                o.spec.upgrade.schema_upgrades = SchemaUpgradePolicy::Automatic;
                o.spec.upgrade.backup = Some(backup_job_spec());
                o.spec.upgrade.maintenance_window = Some(wednesday_morning.clone());
            })),
            action: start.clone(),
            statefulset: want(V1, 3),
            conditions: vec![
                (PROGRESSING, true, "Upgrading"),
                (READY, false, "Upgrading"),
                (UPGRADE_BLOCKED, false, "NotBlocked"),
            ],
            message: None,
        },
        Case {
            name: "minor, Automatic, no window -> starts",
            observed: planned(minor(&|o| {
                o.spec.upgrade.schema_upgrades = SchemaUpgradePolicy::Automatic;
                o.spec.upgrade.backup = Some(backup_job_spec());
            })),
            action: start.clone(),
            statefulset: want(V1, 3),
            conditions: vec![(PROGRESSING, true, "Upgrading")],
            message: None,
        },
        Case {
            name: "minor, Automatic, window closed but approved -> starts",
            observed: planned(minor(&|o| {
                o.spec.upgrade.schema_upgrades = SchemaUpgradePolicy::Automatic;
                approve(&mut o.spec, V2);
                o.spec.upgrade.maintenance_window = Some(saturday_night.clone());
            })),
            action: start.clone(),
            statefulset: want(V1, 3),
            conditions: vec![(UPGRADE_BLOCKED, false, "NotBlocked")],
            message: None,
        },
        Case {
            name: "minor, Automatic, bad time zone -> InvalidSpec",
            observed: minor(&|o| {
                o.spec.upgrade.schema_upgrades = SchemaUpgradePolicy::Automatic;
                o.spec.upgrade.backup = Some(backup_job_spec());
                let mut w = saturday_night.clone();
                w.time_zone = "Mars/Olympus".into();
                o.spec.upgrade.maintenance_window = Some(w);
            }),
            action: None,
            statefulset: blocked_stays.clone(),
            conditions: vec![(UPGRADE_BLOCKED, true, "InvalidSpec")],
            message: Some((UPGRADE_BLOCKED, vec!["Mars/Olympus".into()])),
        },
        Case {
            name: "minor, approved with backup skip -> starts",
            observed: planned(minor(&|o| {
                o.spec.upgrade.approved_version = Some(V2.into());
                o.spec.upgrade.backup = Some(BackupSpec {
                    job_template: None,
                    skip: Some(true),
                });
            })),
            action: start.clone(),
            statefulset: want(V1, 3),
            conditions: vec![(PROGRESSING, true, "Upgrading")],
            message: None,
        },
        Case {
            name: "major without approvedMajorVersion",
            observed: major(&|o| o.spec.upgrade.approved_version = Some(V3.into())),
            action: None,
            statefulset: blocked_stays.clone(),
            conditions: vec![
                (UPGRADE_BLOCKED, true, "MajorUpgradeNotApproved"),
                (DEGRADED, false, "AsExpected"),
            ],
            message: Some((
                UPGRADE_BLOCKED,
                vec!["approvedMajorVersion".into(), "2025".into()],
            )),
        },
        Case {
            name: "major, approvedMajorVersion names another major",
            observed: major(&|o| {
                o.spec.upgrade.approved_version = Some(V3.into());
                o.spec.upgrade.approved_major_version = Some(2026);
            }),
            action: None,
            statefulset: blocked_stays.clone(),
            conditions: vec![(UPGRADE_BLOCKED, true, "MajorUpgradeNotApproved")],
            message: None,
        },
        Case {
            name: "major, major approved but schema upgrade not approved",
            observed: major(&|o| o.spec.upgrade.approved_major_version = Some(2025)),
            action: None,
            statefulset: blocked_stays.clone(),
            conditions: vec![(UPGRADE_BLOCKED, true, "SchemaUpgradeNotApproved")],
            message: None,
        },
        Case {
            name: "major, fully approved -> starts",
            observed: planned(major(&|o| {
                o.spec.upgrade.approved_major_version = Some(2025);
                o.spec.upgrade.approved_version = Some(V3.into());
            })),
            action: start.clone(),
            statefulset: want(V1, 3),
            conditions: vec![(PROGRESSING, true, "Upgrading")],
            message: None,
        },
        Case {
            name: "minor downgrade",
            observed: downgrade,
            action: None,
            statefulset: want(V2, 3),
            conditions: vec![(UPGRADE_BLOCKED, true, "DowngradeRequiresRestore")],
            message: Some((UPGRADE_BLOCKED, vec!["restore".into(), V2.into()])),
        },
        Case {
            name: "lower patch of a lower schema line than the migrated one",
            observed: below_schema,
            action: None,
            statefulset: want(V2, 3),
            conditions: vec![(UPGRADE_BLOCKED, true, "DowngradeRequiresRestore")],
            message: None,
        },
        Case {
            name: "pods on two schema lines outside an upgrade",
            observed: mixed,
            action: None,
            statefulset: None,
            conditions: vec![
                (UPGRADE_BLOCKED, true, "MixedSchemaVersions"),
                (DEGRADED, true, "MixedSchemaVersions"),
                (READY, false, "NodesNotReady"),
            ],
            message: Some((
                UPGRADE_BLOCKED,
                vec![format!("octo-2={V2}"), format!("octo-0={V1}")],
            )),
        },
        Case {
            name: "two patches of one line (a half-done roll) resume where they stand",
            observed: planned(mixed_patches),
            action: Some(drain(1, true)),
            statefulset: want(V1_PATCH, 3),
            conditions: vec![(PROGRESSING, true, "Upgrading")],
            message: None,
        },
    ]);
}

#[test]
fn a_schema_line_below_the_recorded_schema_is_never_started() {
    // The pods are gone (e.g. scaled to zero by hand); the status says the database is at
    // V2; spec.version names V1's line: no StatefulSet may start V1 pods.
    let mut o = steady(V1, 3);
    o.pods.clear();
    o.octopus = OctopusView::NoReadyNode;
    o.status.schema_version = Some(V2.into());
    o.statefulset = Some(StatefulSetView {
        version: Some(V1.into()),
        replicas: 0,
    });
    let d = decide(&o);
    assert!(
        d.statefulset.as_ref().is_none_or(|w| w.replicas == 0),
        "{:?}",
        d.statefulset
    );
    assert!(cond(&d, UPGRADE_BLOCKED).status, "{:?}", d.conditions);
    assert!(d.action.is_none());
}

#[test]
fn a_new_upgrade_is_recorded_before_its_first_action() {
    let mut o = steady(V1, 3);
    o.spec.version = V1_PATCH.into();
    // The plan alone: no action, and the StatefulSet is left as it is until it is saved.
    let d = decide(&o);
    assert_eq!((&d.action, &d.statefulset), (&None, &None));
    assert_eq!(d.requeue, Requeue::Soon);
    assert_cond(&d, PROGRESSING, true, "Upgrading");
    assert!(
        cond(&d, PROGRESSING)
            .message
            .contains("recorded before its first step runs"),
        "{:?}",
        cond(&d, PROGRESSING)
    );
    let up = typed(d.upgrade.as_ref().expect("plan recorded"));
    assert_eq!(up.step, None);
    assert!(up.steps.iter().all(|s| s.state == StepState::Pending));
    assert_eq!(up.steps.len(), 18);
    // The same for a schema upgrade: maintenance mode goes on only from the saved record.
    let mut schema = steady(V1, 3);
    schema.spec.version = V2.into();
    approve(&mut schema.spec, V2);
    assert_eq!(decide(&schema).action, None);
    assert_eq!(
        decide(&planned(schema)).action,
        Some(Action::SetMaintenance(true))
    );
}

#[test]
fn the_first_action_of_a_patch_upgrade_drains_the_highest_ordinal() {
    let mut o = steady(V1, 3);
    o.spec.version = V1_PATCH.into();
    let d = decide(&planned(o));
    assert_eq!(d.action, Some(drain(2, true)));
    assert_eq!(d.statefulset, want(V1_PATCH, 3));
    assert_eq!(d.requeue, Requeue::Soon);
    let up = typed(d.upgrade.as_ref().expect("upgrade recorded"));
    assert_eq!(
        (up.from.as_str(), up.to.as_str(), up.change.as_str()),
        (V1, V1_PATCH, "patch")
    );
    assert_eq!(up.strategy, Some(Strategy::Rolling));
    assert_eq!(up.started_at, Some(Time(t0())));
    assert_eq!(up.replicas, Some(3));
    let planned: Vec<(StepKind, Option<String>)> =
        up.steps.iter().map(|s| (s.kind, s.node.clone())).collect();
    let mut expected = Vec::new();
    for n in [2, 1, 0] {
        for a in [
            StepKind::Drain,
            StepKind::WaitTasks,
            StepKind::Replace,
            StepKind::WaitReady,
            StepKind::VerifyVersion,
            StepKind::Undrain,
        ] {
            expected.push((a, Some(format!("octo-{n}"))));
        }
    }
    assert_eq!(planned, expected);
    assert_eq!(up.steps[0].state, StepState::Running);
    assert!(up.steps[1..].iter().all(|s| s.state == StepState::Pending));
    assert_eq!(step_of(&d), (Some(StepKind::Drain), Some("octo-2")));
}

#[test]
fn phase_names_the_condition_that_matters_most() {
    let c = |type_: &'static str, status: bool, reason: Reason| CondWant {
        type_,
        status,
        reason,
        message: String::new(),
    };
    let all_false = vec![
        c(READY, false, Reason::NodesNotReady),
        c(PROGRESSING, false, Reason::Idle),
        c(DEGRADED, false, Reason::AsExpected),
        c(UPGRADE_BLOCKED, false, Reason::NotBlocked),
        c(PAUSED, false, Reason::NotPaused),
    ];
    assert_eq!(phase(&all_false), "NodesNotReady");
    let with = |i: usize, reason: Reason| {
        let mut cs = all_false.clone();
        cs[i].status = true;
        cs[i].reason = reason;
        cs
    };
    assert_eq!(phase(&with(1, Reason::Upgrading)), "Upgrading");
    assert_eq!(
        phase(&with(2, Reason::NodeFailedToStart)),
        "NodeFailedToStart"
    );
    assert_eq!(phase(&with(3, Reason::BackupFailed)), "BackupFailed");
    assert_eq!(phase(&with(4, Reason::Paused)), "Paused");
    let mut both = with(3, Reason::BackupFailed);
    both[4].status = true;
    both[4].reason = Reason::Paused;
    assert_eq!(phase(&both), "Paused");
    assert_eq!(phase(&[]), "Ready");
}
