//! Tests of the reconciler's decision core: `decide`, the named `safety` predicates,
//! `conditions` and `window`. Nothing here touches Kubernetes or Octopus.
//!
//! - Table-driven single decisions on hand-built observations: Day 1, steady state, the
//!   schema-upgrade gates and every stop.
//! - Whole upgrades walked against [`Sim`], a tiny simulated world (StatefulSet controller
//!   with OnDelete + OrderedReady, kubelet, Octopus nodes / tasks / maintenance mode, the
//!   backup Job). Invariants are checked at every moment of every walk.
//! - Restart safety: every walk is killed at every reconcile (between act and record, and
//!   between applying the StatefulSet and acting) and must stay safe and converge.
//! - Properties over random observations, and over randomised walks.
//!

use std::collections::{BTreeMap, BTreeSet};

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::batch::v1::JobSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use proptest::prelude::*;

use super::conditions::{self, DEGRADED, PAUSED, PROGRESSING, READY, UPGRADE_BLOCKED};
use super::decide::{decide, phase, reasons};
use super::model::{
    Action, CondWant, Decision, JobView, Observed, OctopusNode, OctopusState, OctopusView, PodView,
    Requeue, StatefulSetView, StatefulSetWant, TaskView,
};
use super::safety::{self, Disruption};
use super::window;
use crate::api::{
    BackupSpec, BackupStatus, DatabaseSpec, DrainTimeoutPolicy, ImageSpec, MaintenanceWindow,
    OctopusClusterSpec, OctopusClusterStatus, SchemaUpgradePolicy, SecretKeyRef, StepStatus,
    StorageSpec, TentacleSpec, UpgradeSpec, UpgradeStatus, Weekday,
};
use crate::planner::{self, PlanRequest};
use crate::resources::names;
use crate::version::OctopusVersion;

// ------------------------------------------------------------------------------ fixtures

const NAME: &str = "octo";
/// The version the clusters run.
const V1: &str = "2024.1.10";
/// A patch of [`V1`]: rolls.
const V1_PATCH: &str = "2024.1.20";
/// A minor upgrade of [`V1`]: stops the world.
const V2: &str = "2024.2.5";
/// A major upgrade of [`V1`].
const V3: &str = "2025.1.1";

fn v(s: &str) -> OctopusVersion {
    OctopusVersion::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn line(s: &str) -> (u64, u64) {
    v(s).schema_line()
}

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

/// A Wednesday morning (2026-03-02 is a Monday).
fn t0() -> Timestamp {
    ts("2026-03-04T10:00:00Z")
}

fn after(t: Timestamp, secs: i64) -> Timestamp {
    t.checked_add(SignedDuration::from_secs(secs))
        .expect("time in range")
}

fn minutes(m: u64) -> kube::core::Duration {
    std::time::Duration::from_secs(m * 60).into()
}

fn pod_name(ordinal: u32) -> String {
    format!("{NAME}-{ordinal}")
}

fn node_id(name: &str) -> String {
    format!("OctopusServerNodes-{name}")
}

fn secret(name: &str, key: &str) -> SecretKeyRef {
    SecretKeyRef {
        name: name.into(),
        key: key.into(),
    }
}

fn spec(version: &str, replicas: i32) -> OctopusClusterSpec {
    OctopusClusterSpec {
        version: version.into(),
        replicas,
        image: ImageSpec::default(),
        database: DatabaseSpec {
            connection_string_secret_ref: secret("octo-db", "connectionString"),
        },
        master_key_secret_ref: secret("octo", "masterKey"),
        api_key_secret_ref: secret("octo", "apiKey"),
        license_secret_ref: None,
        task_cap: None,
        resources: None,
        storage: StorageSpec::default(),
        api: None,
        upgrade: UpgradeSpec::default(),
        tentacles: None,
        paused: false,
    }
}

fn backup_job_spec() -> BackupSpec {
    BackupSpec {
        job_template: Some(JobSpec::default()),
        skip: None,
    }
}

/// A person approves the schema upgrade to `version` and configures the backup.
fn approve(spec: &mut OctopusClusterSpec, version: &str) {
    spec.upgrade.approved_version = Some(version.into());
    spec.upgrade.backup = Some(backup_job_spec());
}

fn pod(ordinal: u32, version: &str) -> PodView {
    PodView {
        name: pod_name(ordinal),
        ordinal,
        version: Some(version.into()),
        ready: true,
        ..PodView::default()
    }
}

fn node(ordinal: u32, version: &str) -> OctopusNode {
    let name = pod_name(ordinal);
    OctopusNode {
        id: node_id(&name),
        name,
        drained: false,
        offline: false,
        running_tasks: 0,
        version: Some(version.into()),
    }
}

fn task(id: &str, ordinal: Option<u32>) -> TaskView {
    TaskView {
        id: id.into(),
        name: "Deploy".into(),
        node: ordinal.map(pod_name),
        cancelling: false,
    }
}

/// A steady cluster of `n` nodes, all ready on `version`, as a reconcile observes it.
fn steady(version: &str, n: u32) -> Observed {
    let replicas = i32::try_from(n).expect("small");
    Observed {
        name: NAME.into(),
        generation: 1,
        spec: spec(version, replicas),
        status: OctopusClusterStatus {
            schema_version: Some(version.into()),
            current_version: Some(version.into()),
            target_version: Some(version.into()),
            ..OctopusClusterStatus::default()
        },
        missing_secrets: Vec::new(),
        statefulset: Some(StatefulSetView {
            version: Some(version.into()),
            replicas,
        }),
        pods: (0..n).map(|i| pod(i, version)).collect(),
        octopus: OctopusView::Up(OctopusState {
            nodes: (0..n).map(|i| node(i, version)).collect(),
            maintenance: false,
            running_tasks: Vec::new(),
        }),
        backup_job: None,
        master_key_copy: false,
        now: t0(),
    }
}

fn state_mut(o: &mut Observed) -> &mut OctopusState {
    match &mut o.octopus {
        OctopusView::Up(state) => state,
        other => panic!("Octopus is not up: {other:?}"),
    }
}

fn node_mut<'a>(o: &'a mut Observed, name: &str) -> &'a mut OctopusNode {
    state_mut(o)
        .nodes
        .iter_mut()
        .find(|n| n.name == name)
        .unwrap_or_else(|| panic!("no node {name}"))
}

fn pod_mut<'a>(o: &'a mut Observed, name: &str) -> &'a mut PodView {
    o.pods
        .iter_mut()
        .find(|p| p.name == name)
        .unwrap_or_else(|| panic!("no pod {name}"))
}

fn unavailable() -> OctopusView {
    OctopusView::Unavailable {
        reason: "Unauthorized".into(),
        message: "the Octopus API rejected the API key (401)".into(),
    }
}

/// The upgrade record the reconciler writes for `from -> to` on `nodes` nodes, with the
/// first `done` steps done and the next one running.
fn upgrade_record(
    from: &str,
    to: &str,
    nodes: u32,
    done: usize,
    started: Timestamp,
) -> Option<UpgradeStatus> {
    let plan = planner::plan(&PlanRequest {
        from: v(from),
        to: v(to),
        nodes,
        approved_major: Some(v(to).major()),
    });
    if !plan.allowed || plan.steps.is_empty() {
        return None;
    }
    let steps: Vec<StepStatus> = plan
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| StepStatus {
            action: s.action().into(),
            node: s.node().map(pod_name),
            state: match i.cmp(&done) {
                std::cmp::Ordering::Less => "Done",
                std::cmp::Ordering::Equal => "Running",
                std::cmp::Ordering::Greater => "Pending",
            }
            .into(),
        })
        .collect();
    Some(UpgradeStatus {
        from: from.into(),
        to: to.into(),
        change: plan.change.as_str().into(),
        strategy: plan.strategy.map(|s| s.as_str().to_string()),
        step: steps.get(done).map(|s| s.action.clone()),
        node: steps.get(done).and_then(|s| s.node.clone()),
        started_at: Some(Time(started)),
        step_started_at: Some(Time(started)),
        finished_at: None,
        replicas: Some(i32::try_from(nodes).expect("small")),
        stopped_reason: None,
        stopped_generation: None,
        steps,
    })
}

/// The status `record::write` builds from a decision (the part the core reads back).
fn record(o: &Observed, d: &Decision) -> OctopusClusterStatus {
    OctopusClusterStatus {
        observed_generation: Some(o.generation),
        current_version: d.current_version.clone(),
        target_version: d.target_version.clone(),
        schema_version: d.schema_version.clone(),
        replicas: i32::try_from(o.pods.len()).expect("small"),
        selector: None,
        ready_nodes: None,
        phase: Some(phase(&d.conditions)),
        conditions: conditions::merge(&o.status.conditions, &d.conditions, o.generation, o.now),
        nodes: super::record::node_statuses(o),
        upgrade: d.upgrade.clone(),
        last_backup: d.last_backup.clone(),
    }
}

// ---------------------------------------------------------------- decision assertions

fn cond<'a>(d: &'a Decision, type_: &str) -> &'a CondWant {
    d.conditions
        .iter()
        .find(|c| c.type_ == type_)
        .unwrap_or_else(|| panic!("no {type_} condition in {:?}", d.conditions))
}

#[track_caller]
fn assert_cond(d: &Decision, type_: &str, status: bool, reason: &str) {
    let c = cond(d, type_);
    assert_eq!(
        (c.status, c.reason.as_str()),
        (status, reason),
        "{type_}: {c:?}"
    );
}

fn want(version: &str, replicas: i32) -> Option<StatefulSetWant> {
    Some(StatefulSetWant {
        version: version.into(),
        replicas,
    })
}

fn step_of(d: &Decision) -> (Option<&str>, Option<&str>) {
    d.upgrade
        .as_ref()
        .map(|u| (u.step.as_deref(), u.node.as_deref()))
        .unwrap_or((None, None))
}

fn drain(ordinal: u32, drained: bool) -> Action {
    let name = pod_name(ordinal);
    Action::SetDrain {
        node_id: node_id(&name),
        node: name,
        drained,
    }
}

// ------------------------------------------------------------------- table-driven cases

/// One decision on one observation, and what must come out of it.
struct Case {
    name: &'static str,
    observed: Observed,
    action: Option<Action>,
    statefulset: Option<StatefulSetWant>,
    /// (type, status, reason) of conditions that must hold.
    conditions: Vec<(&'static str, bool, &'static str)>,
    /// Words the message of the condition of this type must contain.
    message: Option<(&'static str, Vec<String>)>,
}

fn run_cases(cases: Vec<Case>) {
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
                (PROGRESSING, true, reasons::CREATING),
                (READY, false, reasons::CREATING),
                (DEGRADED, false, reasons::AS_EXPECTED),
                (UPGRADE_BLOCKED, false, reasons::NOT_BLOCKED),
                (PAUSED, false, reasons::NOT_PAUSED),
            ],
            message: Some((PROGRESSING, vec!["3".into(), V1.into()])),
        },
        Case {
            name: "day 1: missing Secret -> nothing created",
            observed: missing,
            action: None,
            statefulset: None,
            conditions: vec![
                (DEGRADED, true, reasons::SECRET_NOT_FOUND),
                (UPGRADE_BLOCKED, true, reasons::SECRET_NOT_FOUND),
                (READY, false, reasons::CREATING),
                (PROGRESSING, false, reasons::SECRET_NOT_FOUND),
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
                (PAUSED, true, reasons::PAUSED),
                (READY, false, reasons::CREATING),
                (UPGRADE_BLOCKED, false, reasons::NOT_BLOCKED),
            ],
            message: None,
        },
        Case {
            name: "steady and paused -> no StatefulSet change",
            observed: paused_steady,
            action: None,
            statefulset: None,
            conditions: vec![
                (PAUSED, true, reasons::PAUSED),
                (READY, true, reasons::READY),
            ],
            message: None,
        },
        Case {
            name: "steady: every node ready on the target",
            observed: steady(V1, 3),
            action: None,
            statefulset: want(V1, 3),
            conditions: vec![
                (READY, true, reasons::READY),
                (PROGRESSING, false, reasons::IDLE),
                (DEGRADED, false, reasons::AS_EXPECTED),
                (UPGRADE_BLOCKED, false, reasons::NOT_BLOCKED),
                (PAUSED, false, reasons::NOT_PAUSED),
            ],
            message: Some((READY, vec!["3/3".into()])),
        },
        Case {
            name: "steady: one node not ready",
            observed: one_not_ready,
            action: None,
            statefulset: want(V1, 3),
            conditions: vec![
                (READY, false, reasons::NODES_NOT_READY),
                (PROGRESSING, true, reasons::NODES_NOT_READY),
            ],
            message: Some((READY, vec!["2/3".into()])),
        },
        Case {
            name: "steady: scale up on the running version",
            observed: scale_up,
            action: None,
            statefulset: want(V1, 4),
            conditions: vec![
                (READY, false, reasons::NODES_NOT_READY),
                (UPGRADE_BLOCKED, false, reasons::NOT_BLOCKED),
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
    assert_eq!(phase(&d.conditions), reasons::READY);
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
    let start = Some(Action::SetMaintenance(true));
    run_cases(vec![
        Case {
            name: "minor, Manual, not approved",
            observed: minor(&|o| o.spec.upgrade.backup = Some(backup_job_spec())),
            action: None,
            statefulset: blocked_stays.clone(),
            conditions: vec![
                (UPGRADE_BLOCKED, true, reasons::SCHEMA_UPGRADE_NOT_APPROVED),
                (PROGRESSING, false, reasons::SCHEMA_UPGRADE_NOT_APPROVED),
                (DEGRADED, false, reasons::AS_EXPECTED),
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
            conditions: vec![(UPGRADE_BLOCKED, true, reasons::SCHEMA_UPGRADE_NOT_APPROVED)],
            message: None,
        },
        Case {
            name: "minor, approved, no backup configured",
            observed: minor(&|o| o.spec.upgrade.approved_version = Some(V2.into())),
            action: None,
            statefulset: blocked_stays.clone(),
            conditions: vec![(UPGRADE_BLOCKED, true, reasons::BACKUP_NOT_CONFIGURED)],
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
            conditions: vec![(UPGRADE_BLOCKED, true, reasons::OUTSIDE_MAINTENANCE_WINDOW)],
            message: Some((
                UPGRADE_BLOCKED,
                vec!["spec.upgrade.approvedVersion".into(), V2.into()],
            )),
        },
        Case {
            name: "minor, Automatic, window open -> maintenance mode first",
            observed: minor(&|o| {
                o.spec.upgrade.schema_upgrades = SchemaUpgradePolicy::Automatic;
                o.spec.upgrade.backup = Some(backup_job_spec());
                o.spec.upgrade.maintenance_window = Some(wednesday_morning.clone());
            }),
            action: start.clone(),
            statefulset: want(V1, 3),
            conditions: vec![
                (PROGRESSING, true, reasons::UPGRADING),
                (READY, false, reasons::UPGRADING),
                (UPGRADE_BLOCKED, false, reasons::NOT_BLOCKED),
            ],
            message: None,
        },
        Case {
            name: "minor, Automatic, no window -> starts",
            observed: minor(&|o| {
                o.spec.upgrade.schema_upgrades = SchemaUpgradePolicy::Automatic;
                o.spec.upgrade.backup = Some(backup_job_spec());
            }),
            action: start.clone(),
            statefulset: want(V1, 3),
            conditions: vec![(PROGRESSING, true, reasons::UPGRADING)],
            message: None,
        },
        Case {
            name: "minor, Automatic, window closed but approved -> starts",
            observed: minor(&|o| {
                o.spec.upgrade.schema_upgrades = SchemaUpgradePolicy::Automatic;
                approve(&mut o.spec, V2);
                o.spec.upgrade.maintenance_window = Some(saturday_night.clone());
            }),
            action: start.clone(),
            statefulset: want(V1, 3),
            conditions: vec![(UPGRADE_BLOCKED, false, reasons::NOT_BLOCKED)],
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
            conditions: vec![(UPGRADE_BLOCKED, true, reasons::INVALID_SPEC)],
            message: Some((UPGRADE_BLOCKED, vec!["Mars/Olympus".into()])),
        },
        Case {
            name: "minor, approved with backup skip -> starts",
            observed: minor(&|o| {
                o.spec.upgrade.approved_version = Some(V2.into());
                o.spec.upgrade.backup = Some(BackupSpec {
                    job_template: None,
                    skip: Some(true),
                });
            }),
            action: start.clone(),
            statefulset: want(V1, 3),
            conditions: vec![(PROGRESSING, true, reasons::UPGRADING)],
            message: None,
        },
        Case {
            name: "major without approvedMajorVersion",
            observed: major(&|o| o.spec.upgrade.approved_version = Some(V3.into())),
            action: None,
            statefulset: blocked_stays.clone(),
            conditions: vec![
                (UPGRADE_BLOCKED, true, "MajorUpgradeNotApproved"),
                (DEGRADED, false, reasons::AS_EXPECTED),
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
            conditions: vec![(UPGRADE_BLOCKED, true, reasons::SCHEMA_UPGRADE_NOT_APPROVED)],
            message: None,
        },
        Case {
            name: "major, fully approved -> starts",
            observed: major(&|o| {
                o.spec.upgrade.approved_major_version = Some(2025);
                o.spec.upgrade.approved_version = Some(V3.into());
            }),
            action: start.clone(),
            statefulset: want(V1, 3),
            conditions: vec![(PROGRESSING, true, reasons::UPGRADING)],
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
                (UPGRADE_BLOCKED, true, reasons::MIXED_SCHEMA_VERSIONS),
                (DEGRADED, true, reasons::MIXED_SCHEMA_VERSIONS),
                (READY, false, reasons::NODES_NOT_READY),
            ],
            message: Some((
                UPGRADE_BLOCKED,
                vec![format!("octo-2={V2}"), format!("octo-0={V1}")],
            )),
        },
        Case {
            name: "two patches of one line (a half-done roll) resume where they stand",
            observed: mixed_patches,
            action: Some(drain(1, true)),
            statefulset: want(V1_PATCH, 3),
            conditions: vec![(PROGRESSING, true, reasons::UPGRADING)],
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
fn the_first_decision_of_a_patch_upgrade_drains_the_highest_ordinal() {
    let mut o = steady(V1, 3);
    o.spec.version = V1_PATCH.into();
    let d = decide(&o);
    assert_eq!(d.action, Some(drain(2, true)));
    assert_eq!(d.statefulset, want(V1_PATCH, 3));
    assert_eq!(d.requeue, Requeue::Soon);
    let up = d.upgrade.as_ref().expect("upgrade recorded");
    assert_eq!(
        (up.from.as_str(), up.to.as_str(), up.change.as_str()),
        (V1, V1_PATCH, "patch")
    );
    assert_eq!(up.strategy.as_deref(), Some("rolling"));
    assert_eq!(up.started_at, Some(Time(t0())));
    assert_eq!(up.replicas, Some(3));
    let planned: Vec<String> = up
        .steps
        .iter()
        .map(|s| format!("{} {}", s.action, s.node.as_deref().unwrap_or("-")))
        .collect();
    let mut expected = Vec::new();
    for n in [2, 1, 0] {
        for a in [
            "drain",
            "wait-tasks",
            "replace",
            "wait-ready",
            "verify-version",
            "undrain",
        ] {
            expected.push(format!("{a} octo-{n}"));
        }
    }
    assert_eq!(planned, expected);
    assert_eq!(up.steps[0].state, "Running");
    assert!(up.steps[1..].iter().all(|s| s.state == "Pending"));
    assert_eq!(step_of(&d), (Some("drain"), Some("octo-2")));
}

#[test]
fn phase_names_the_condition_that_matters_most() {
    let c = |type_: &'static str, status: bool, reason: &str| CondWant {
        type_,
        status,
        reason: reason.into(),
        message: String::new(),
    };
    let all_false = vec![
        c(READY, false, "NodesNotReady"),
        c(PROGRESSING, false, "Idle"),
        c(DEGRADED, false, "AsExpected"),
        c(UPGRADE_BLOCKED, false, "NotBlocked"),
        c(PAUSED, false, "NotPaused"),
    ];
    assert_eq!(phase(&all_false), "NodesNotReady");
    let with = |i: usize, reason: &str| {
        let mut cs = all_false.clone();
        cs[i].status = true;
        cs[i].reason = reason.into();
        cs
    };
    assert_eq!(phase(&with(1, "Upgrading")), "Upgrading");
    assert_eq!(phase(&with(2, "NodeFailedToStart")), "NodeFailedToStart");
    assert_eq!(phase(&with(3, "BackupFailed")), "BackupFailed");
    assert_eq!(phase(&with(4, "Paused")), "Paused");
    let mut both = with(3, "BackupFailed");
    both[4].status = true;
    both[4].reason = "Paused".into();
    assert_eq!(phase(&both), "Paused");
    assert_eq!(phase(&[]), reasons::READY);
}

// ------------------------------------------------------------------- safety predicates

#[test]
fn predicates_are_checked_in_their_table_order() {
    let names: Vec<&str> = safety::PREDICATES.iter().map(|p| p.name).collect();
    assert_eq!(
        names,
        [
            "OctopusReachable",
            "OtherNodesServing",
            "NodeDrainedAndIdle",
            "TasksFinished",
            "BackupTaken",
            "NoOtherSchemaRunning",
            "NotBelowSchema",
        ]
    );
}

#[test]
fn each_predicate_holds_back_what_it_names() {
    let name2 = pod_name(2);
    let v1 = v(V1);
    let v2 = v(V2);
    // The world in which replacing octo-2 is fine.
    let replaceable = || {
        let mut o = steady(V1, 3);
        node_mut(&mut o, "octo-2").drained = true;
        o
    };
    // The world in which stopping every node for V1 -> V2 is fine.
    let stoppable = || {
        let mut o = steady(V1, 3);
        state_mut(&mut o).maintenance = true;
        o.status.upgrade = upgrade_record(V1, V2, 3, 6, t0());
        o.status.last_backup = Some(BackupStatus {
            job_name: "b".into(),
            from_version: V1.into(),
            to_version: V2.into(),
            master_key_secret: None,
            completed_at: None,
        });
        o
    };
    let take = Disruption::TakeNodeOut { node: &name2 };
    let replace = Disruption::ReplacePod { node: &name2 };
    let start_v1 = Disruption::StartVersion { version: &v1 };
    let start_v2 = Disruption::StartVersion { version: &v2 };

    type Base = Box<dyn Fn() -> Observed>;
    type Mutate = Box<dyn Fn(&mut Observed)>;
    let cases: Vec<(&str, Base, Disruption<'_>, Mutate, Option<&str>)> = vec![
        (
            "fine",
            Box::new(replaceable),
            replace,
            Box::new(|_| {}),
            None,
        ),
        ("fine", Box::new(replaceable), take, Box::new(|_| {}), None),
        (
            "fine",
            Box::new(stoppable),
            Disruption::StopAll,
            Box::new(|_| {}),
            None,
        ),
        (
            "fine",
            Box::new(|| steady(V1, 3)),
            start_v1,
            Box::new(|_| {}),
            None,
        ),
        (
            "patch of the running line",
            Box::new(|| steady(V1_PATCH, 3)),
            start_v1,
            Box::new(|_| {}),
            None,
        ),
        (
            "Octopus unreachable",
            Box::new(replaceable),
            take,
            Box::new(|o| o.octopus = unavailable()),
            Some("OctopusReachable"),
        ),
        (
            "Octopus unreachable",
            Box::new(replaceable),
            replace,
            Box::new(|o| o.octopus = OctopusView::NoReadyNode),
            Some("OctopusReachable"),
        ),
        (
            "Octopus unreachable",
            Box::new(stoppable),
            Disruption::StopAll,
            Box::new(|o| o.octopus = unavailable()),
            Some("OctopusReachable"),
        ),
        (
            "starting needs no Octopus",
            Box::new(|| steady(V1, 3)),
            start_v1,
            Box::new(|o| o.octopus = unavailable()),
            None,
        ),
        (
            "other pod not ready",
            Box::new(replaceable),
            take,
            Box::new(|o| pod_mut(o, "octo-0").ready = false),
            Some("OtherNodesServing"),
        ),
        (
            "other pod terminating",
            Box::new(replaceable),
            replace,
            Box::new(|o| pod_mut(o, "octo-1").terminating = true),
            Some("OtherNodesServing"),
        ),
        (
            "other pod missing",
            Box::new(replaceable),
            replace,
            Box::new(|o| o.pods.retain(|p| p.name != "octo-1")),
            Some("OtherNodesServing"),
        ),
        (
            "other node drained",
            Box::new(replaceable),
            take,
            Box::new(|o| node_mut(o, "octo-1").drained = true),
            Some("OtherNodesServing"),
        ),
        (
            "other node offline",
            Box::new(replaceable),
            take,
            Box::new(|o| node_mut(o, "octo-0").offline = true),
            Some("OtherNodesServing"),
        ),
        (
            "node not drained",
            Box::new(replaceable),
            replace,
            Box::new(|o| node_mut(o, "octo-2").drained = false),
            Some("NodeDrainedAndIdle"),
        ),
        (
            "node still runs a task",
            Box::new(replaceable),
            replace,
            Box::new(|o| state_mut(o).running_tasks.push(task("t1", Some(2)))),
            Some("NodeDrainedAndIdle"),
        ),
        (
            "a task on another node does not hold a drain",
            Box::new(replaceable),
            take,
            Box::new(|o| state_mut(o).running_tasks.push(task("t1", Some(0)))),
            None,
        ),
        (
            "maintenance mode off",
            Box::new(stoppable),
            Disruption::StopAll,
            Box::new(|o| state_mut(o).maintenance = false),
            Some("TasksFinished"),
        ),
        (
            "a task still runs",
            Box::new(stoppable),
            Disruption::StopAll,
            Box::new(|o| state_mut(o).running_tasks.push(task("t1", None))),
            Some("TasksFinished"),
        ),
        (
            "no backup recorded",
            Box::new(stoppable),
            Disruption::StopAll,
            Box::new(|o| o.status.last_backup = None),
            Some("BackupTaken"),
        ),
        (
            "backup of another upgrade",
            Box::new(stoppable),
            Disruption::StopAll,
            Box::new(|o| {
                if let Some(b) = o.status.last_backup.as_mut() {
                    b.from_version = "2023.4.1".into();
                }
            }),
            Some("BackupTaken"),
        ),
        (
            "backup skipped on purpose",
            Box::new(stoppable),
            Disruption::StopAll,
            Box::new(|o| {
                o.status.last_backup = None;
                o.spec.upgrade.backup = Some(BackupSpec {
                    job_template: None,
                    skip: Some(true),
                });
            }),
            None,
        ),
        (
            "no upgrade recorded",
            Box::new(stoppable),
            Disruption::StopAll,
            Box::new(|o| o.status.upgrade = None),
            Some("BackupTaken"),
        ),
        (
            "old line still runs",
            Box::new(|| steady(V1, 3)),
            start_v2,
            Box::new(|_| {}),
            Some("NoOtherSchemaRunning"),
        ),
        (
            "a terminating old pod still runs",
            Box::new(|| steady(V1, 1)),
            start_v2,
            Box::new(|o| pod_mut(o, "octo-0").terminating = true),
            Some("NoOtherSchemaRunning"),
        ),
        (
            "a pod of unknown version",
            Box::new(|| steady(V1, 3)),
            start_v1,
            Box::new(|o| pod_mut(o, "octo-1").version = None),
            Some("NoOtherSchemaRunning"),
        ),
        (
            "below the migrated schema",
            Box::new(|| steady(V1, 3)),
            start_v1,
            Box::new(|o| {
                o.pods.clear();
                o.status.schema_version = Some(V2.into());
            }),
            Some("NotBelowSchema"),
        ),
    ];
    let mut failures = Vec::new();
    for (what, base, disruption, mutate, held) in cases {
        let mut o = base();
        mutate(&mut o);
        let got = safety::check(&o, disruption);
        let got_name = got.as_ref().err().map(|h| h.predicate);
        if got_name != held {
            failures.push(format!("{what} ({disruption:?}): {got:?}, want {held:?}"));
        }
        if let Err(h) = &got
            && h.message.is_empty()
        {
            failures.push(format!("{what}: {} says nothing", h.predicate));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

// ------------------------------------------------------------------------ the simulator

/// Ticks that never end on their own.
const FOREVER: u32 = u32::MAX;

/// A task Octopus runs, with the ticks it still needs.
#[derive(Clone, Debug)]
struct SimTask {
    view: TaskView,
    left: u32,
}

/// The backup Job: succeeds (or fails) after some ticks.
#[derive(Clone, Debug)]
struct SimJob {
    name: String,
    from: String,
    to: String,
    left: u32,
    outcome: Option<bool>,
    completed_at: Option<Timestamp>,
}

impl SimJob {
    fn view(&self) -> JobView {
        JobView {
            name: self.name.clone(),
            succeeded: self.outcome == Some(true),
            failed: self.outcome == Some(false),
            completed_at: self.completed_at,
        }
    }
}

/// Where the operator dies during a reconcile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kill {
    /// It does not: act, then record.
    Never,
    /// After applying the StatefulSet, before the action and the status write.
    AfterApply,
    /// After the action, before the status write: the world moved, the status did not.
    BeforeRecord,
}

/// The upgrade a walk carries out, for the invariants.
#[derive(Clone, Debug, Default)]
struct Expect {
    /// `rolling` or `stop-the-world`.
    strategy: Option<&'static str>,
    from: String,
    to: String,
    replicas: u32,
}

impl Expect {
    fn new(strategy: &'static str, from: &str, to: &str, replicas: u32) -> Self {
        Self {
            strategy: Some(strategy),
            from: from.into(),
            to: to.into(),
            replicas,
        }
    }
}

/// A tiny world: the StatefulSet controller (OnDelete, OrderedReady, one pod per tick),
/// the kubelet (a started pod is ready one tick later, or crash-loops), Octopus (nodes that
/// register when their pod is ready and keep their drain flag in the database, server-wide
/// maintenance mode, tasks that run on serving nodes) and the backup Job. A reconcile
/// observes it, decides, acts and records the status the way `controller::apply` does.
#[derive(Clone, Debug)]
struct Sim {
    generation: i64,
    spec: OctopusClusterSpec,
    status: OctopusClusterStatus,
    missing_secrets: Vec<String>,
    sts: Option<StatefulSetView>,
    pods: BTreeMap<u32, PodView>,
    /// Nodes registered with Octopus: like their drain flag, they live in the database.
    nodes: BTreeMap<String, OctopusNode>,
    maintenance: bool,
    tasks: Vec<SimTask>,
    task_seq: u32,
    /// Every this many ticks a task starts on each serving node, unless in maintenance mode.
    spawn_every: Option<u32>,
    /// Ticks a spawned task runs.
    task_ticks: u32,
    /// The Octopus API fails with this (reason, message).
    fault: Option<(String, String)>,
    job: Option<SimJob>,
    backup_ticks: u32,
    backup_fails: bool,
    /// The Master Key copy of (from, to).
    master_key_copy: Option<(String, String)>,
    /// A pod of this ordinal crash-loops on this version.
    crash_on: Option<(u32, String)>,
    now: Timestamp,
    ticks: u32,
    reconciles: u32,
    tentacle_queues: u32,
    expect: Expect,
    /// The template has run the new version with pods (stop-the-world).
    new_template_started: bool,
    /// Most nodes out of service at one moment (rolling).
    max_out: usize,
    /// Pods the operator deleted, in order.
    replaced: Vec<String>,
    /// What happened in the world, in order.
    timeline: Vec<String>,
    /// One line per reconcile.
    log: Vec<String>,
    violations: Vec<String>,
    last: Option<Decision>,
}

impl Sim {
    fn new(version: &str, replicas: u32) -> Self {
        Self {
            generation: 1,
            spec: spec(version, i32::try_from(replicas).expect("small")),
            status: OctopusClusterStatus::default(),
            missing_secrets: Vec::new(),
            sts: None,
            pods: BTreeMap::new(),
            nodes: BTreeMap::new(),
            maintenance: false,
            tasks: Vec::new(),
            task_seq: 0,
            spawn_every: None,
            task_ticks: 3,
            fault: None,
            job: None,
            backup_ticks: 2,
            backup_fails: false,
            master_key_copy: None,
            crash_on: None,
            now: t0(),
            ticks: 0,
            reconciles: 0,
            tentacle_queues: 0,
            expect: Expect::default(),
            new_template_started: false,
            max_out: 0,
            replaced: Vec::new(),
            timeline: Vec::new(),
            log: Vec::new(),
            violations: Vec::new(),
            last: None,
        }
    }

    /// A cluster of `n` nodes ready on `version`, its status recorded by one reconcile.
    fn steady(version: &str, n: u32) -> Self {
        let mut sim = Self::new(version, n);
        sim.sts = Some(StatefulSetView {
            version: Some(version.into()),
            replicas: i32::try_from(n).expect("small"),
        });
        for i in 0..n {
            sim.pods.insert(i, pod(i, version));
            sim.nodes.insert(pod_name(i), node(i, version));
        }
        sim.status.schema_version = Some(version.into());
        let d = sim.reconcile(Kill::Never);
        assert!(
            d.action.is_none() && cond(&d, READY).status,
            "the steady world is not steady: {d:?}"
        );
        sim
    }

    /// A person edits the spec (the generation moves).
    fn change_spec(&mut self, edit: impl FnOnce(&mut OctopusClusterSpec)) {
        edit(&mut self.spec);
        self.generation += 1;
    }

    fn add_task(&mut self, ordinal: Option<u32>, ticks: u32) -> String {
        self.task_seq += 1;
        let id = format!("ServerTasks-{}", self.task_seq);
        self.tasks.push(SimTask {
            view: task(&id, ordinal),
            left: ticks,
        });
        self.event(format!(
            "task-started:{id}@{}",
            ordinal.map(pod_name).unwrap_or_default()
        ));
        id
    }

    fn event(&mut self, what: String) {
        self.timeline.push(what);
    }

    fn violation(&mut self, what: String) {
        if self.violations.len() < 20 {
            let at = self.log.last().cloned().unwrap_or_default();
            self.violations.push(format!("{what}\n      at {at}"));
        }
    }

    fn octopus_state(&self) -> OctopusState {
        OctopusState {
            nodes: self
                .nodes
                .values()
                .map(|n| OctopusNode {
                    running_tasks: u32::try_from(
                        self.tasks
                            .iter()
                            .filter(|t| t.view.node.as_deref() == Some(n.name.as_str()))
                            .count(),
                    )
                    .expect("few"),
                    ..n.clone()
                })
                .collect(),
            maintenance: self.maintenance,
            running_tasks: self.tasks.iter().map(|t| t.view.clone()).collect(),
        }
    }

    /// What `observe::observe` would read.
    fn observe(&self) -> Observed {
        let pods: Vec<PodView> = self.pods.values().cloned().collect();
        let octopus = match (&self.fault, pods.iter().any(|p| p.ready)) {
            (_, false) => OctopusView::NoReadyNode,
            (Some((reason, message)), true) => OctopusView::Unavailable {
                reason: reason.clone(),
                message: message.clone(),
            },
            (None, true) => OctopusView::Up(self.octopus_state()),
        };
        let backing_up = self
            .status
            .upgrade
            .as_ref()
            .filter(|u| u.finished_at.is_none())
            .filter(|u| u.steps.iter().any(|s| s.action == "backup"));
        let (backup_job, master_key_copy) = match backing_up {
            Some(u) => (
                self.job
                    .as_ref()
                    .filter(|j| j.from == u.from && j.to == u.to)
                    .map(SimJob::view),
                self.master_key_copy == Some((u.from.clone(), u.to.clone())),
            ),
            None => (None, false),
        };
        Observed {
            name: NAME.into(),
            generation: self.generation,
            spec: self.spec.clone(),
            status: self.status.clone(),
            missing_secrets: self.missing_secrets.clone(),
            statefulset: self.sts.clone(),
            pods,
            octopus,
            backup_job,
            master_key_copy,
            now: self.now,
        }
    }

    /// One reconcile: observe, decide, apply the StatefulSet, act, record.
    fn reconcile(&mut self, kill: Kill) -> Decision {
        self.reconciles += 1;
        let o = self.observe();
        let d = decide(&o);
        self.log_decision(&d, kill);
        self.check_decision(&o, &d);
        if let Some(want) = &d.statefulset {
            self.apply_statefulset(want);
            self.check_world("after applying the StatefulSet");
        }
        if kill != Kill::AfterApply {
            if let Some(action) = &d.action {
                self.perform(action);
                self.check_world("after the action");
            }
            if kill == Kill::Never {
                self.status = record(&o, &d);
            }
        }
        self.last = Some(d.clone());
        d
    }

    /// One reconcile, then the world moves one tick.
    fn step(&mut self, kill: Kill) -> Decision {
        let d = self.reconcile(kill);
        self.tick();
        d
    }

    fn log_decision(&mut self, d: &Decision, kill: Kill) {
        let (step, node) = step_of(d);
        let progressing = cond(d, PROGRESSING);
        let line = format!(
            "#{} t+{}s gen{} {}{} -> action={} sts={} {}: {}{}",
            self.reconciles,
            self.now.duration_since(t0()).as_secs(),
            self.generation,
            step.unwrap_or("-"),
            node.map(|n| format!(" {n}")).unwrap_or_default(),
            d.action.as_ref().map_or("-", Action::name),
            d.statefulset
                .as_ref()
                .map_or("-".into(), |w| format!("{}@{}", w.version, w.replicas)),
            progressing.reason,
            progressing.message,
            match kill {
                Kill::Never => "",
                Kill::AfterApply => " [killed after applying the StatefulSet]",
                Kill::BeforeRecord => " [killed before recording]",
            }
        );
        self.log.push(line);
    }

    fn apply_statefulset(&mut self, want: &StatefulSetWant) {
        let view = StatefulSetView {
            version: Some(want.version.clone()),
            replicas: want.replicas,
        };
        if self.sts.as_ref() != Some(&view) {
            self.event(format!("sts:{}@{}", want.version, want.replicas));
            self.sts = Some(view);
        }
    }

    fn perform(&mut self, action: &Action) {
        match action {
            Action::SetMaintenance(on) => {
                if self.maintenance != *on {
                    self.event(format!("maintenance:{}", if *on { "on" } else { "off" }));
                }
                self.maintenance = *on;
            }
            Action::SetDrain {
                node_id,
                node,
                drained,
            } => {
                let found = self.nodes.values_mut().find(|n| n.id == *node_id);
                match found {
                    Some(n) if n.name == *node => n.drained = *drained,
                    _ => self.violation(format!("drain of unknown node {node_id} ({node})")),
                }
                let verb = if *drained { "drain" } else { "undrain" };
                self.event(format!("{verb}:{node}"));
            }
            Action::CancelTasks(ids) => {
                for t in &mut self.tasks {
                    if ids.contains(&t.view.id) {
                        t.view.cancelling = true;
                    }
                }
                self.event(format!("cancel:{}", ids.join(",")));
            }
            Action::DeletePod(name) => {
                match self.pods.values_mut().find(|p| p.name == *name) {
                    Some(p) => p.terminating = true,
                    None => self.violation(format!("deleted missing pod {name}")),
                }
                self.replaced.push(name.clone());
                self.event(format!("pod-deleted:{name}"));
            }
            Action::CopyMasterKey { from, to } => {
                self.master_key_copy = Some((from.clone(), to.clone()));
                self.event("master-key-copy".into());
            }
            Action::CreateBackupJob { from, to } => {
                if self.job.is_none() {
                    self.job = Some(SimJob {
                        name: names::backup_job(NAME, from, to),
                        from: from.clone(),
                        to: to.clone(),
                        left: self.backup_ticks,
                        outcome: None,
                        completed_at: None,
                    });
                    self.event("backup-job:created".into());
                } else {
                    self.violation("created the backup Job twice".into());
                }
            }
            Action::QueueTentacleTasks { .. } => {
                self.tentacle_queues += 1;
                self.event("tentacles".into());
            }
        }
    }

    /// The world moves on by ten seconds.
    fn tick(&mut self) {
        self.ticks += 1;
        self.now = after(self.now, 10);

        // Octopus: tasks run down; cancelled ones end.
        for t in &mut self.tasks {
            if t.view.cancelling {
                t.left = 0;
            } else if t.left != FOREVER {
                t.left = t.left.saturating_sub(1);
            }
        }
        let (done, running): (Vec<_>, Vec<_>) = std::mem::take(&mut self.tasks)
            .into_iter()
            .partition(|t| t.left == 0);
        self.tasks = running;
        for t in done {
            self.event(format!("task-finished:{}", t.view.id));
        }

        // The backup Job.
        let mut job_event = None;
        if let Some(job) = self.job.as_mut().filter(|j| j.outcome.is_none()) {
            if job.left == 0 {
                job.outcome = Some(!self.backup_fails);
                job.completed_at = Some(self.now);
                job_event = Some(if self.backup_fails {
                    "backup-job:failed"
                } else {
                    "backup-job:succeeded"
                });
            } else {
                job.left -= 1;
            }
        }
        if let Some(e) = job_event {
            self.event(e.into());
        }

        // Kubelet: terminating pods go; Octopus sees their node offline.
        let gone: Vec<u32> = self
            .pods
            .values()
            .filter(|p| p.terminating)
            .map(|p| p.ordinal)
            .collect();
        for ordinal in gone {
            let name = pod_name(ordinal);
            let killed: Vec<String> = self
                .tasks
                .iter()
                .filter(|t| t.view.node.as_deref() == Some(name.as_str()) && !t.view.cancelling)
                .map(|t| t.view.id.clone())
                .collect();
            if !killed.is_empty() {
                self.violation(format!("pod {name} stopped while running tasks {killed:?}"));
            }
            self.tasks
                .retain(|t| t.view.node.as_deref() != Some(name.as_str()));
            self.pods.remove(&ordinal);
            if let Some(n) = self.nodes.get_mut(&name) {
                n.offline = true;
            }
            self.event(format!("pod-gone:{name}"));
        }

        // Kubelet: started pods become ready (and register with Octopus), or crash.
        let starting: Vec<u32> = self
            .pods
            .values()
            .filter(|p| !p.ready && !p.terminating)
            .map(|p| p.ordinal)
            .collect();
        for ordinal in starting {
            let Some(p) = self.pods.get_mut(&ordinal) else {
                continue;
            };
            let version = p.version.clone().unwrap_or_default();
            let crashes = self
                .crash_on
                .as_ref()
                .is_some_and(|(o, v)| *o == ordinal && *v == version);
            let name = p.name.clone();
            if crashes {
                p.crash_looping = true;
                p.restarts += 1;
                self.event(format!("pod-crashed:{name}@{version}"));
            } else {
                p.crash_looping = false;
                p.ready = true;
                let n = self
                    .nodes
                    .entry(name.clone())
                    .or_insert_with(|| node(ordinal, &version));
                n.version = Some(version.clone());
                n.offline = false;
                self.event(format!("pod-ready:{name}@{version}"));
            }
        }

        // StatefulSet controller: OnDelete, OrderedReady, one pod per tick.
        if let Some(sts) = self.sts.clone() {
            let replicas = u32::try_from(sts.replicas.max(0)).expect("non-negative");
            let excess = self
                .pods
                .values()
                .filter(|p| p.ordinal >= replicas && !p.terminating)
                .map(|p| p.ordinal)
                .max();
            if let Some(ordinal) = excess {
                if let Some(p) = self.pods.get_mut(&ordinal) {
                    p.terminating = true;
                }
                self.event(format!("pod-stopping:{}", pod_name(ordinal)));
            } else if let Some(missing) = (0..replicas).find(|o| !self.pods.contains_key(o)) {
                let lower_ready = (0..missing)
                    .all(|l| self.pods.get(&l).is_some_and(|p| p.ready && !p.terminating));
                if lower_ready {
                    let version = sts.version.clone().unwrap_or_default();
                    self.pods.insert(
                        missing,
                        PodView {
                            name: pod_name(missing),
                            ordinal: missing,
                            version: Some(version.clone()),
                            ..PodView::default()
                        },
                    );
                    self.event(format!("pod-created:{}@{version}", pod_name(missing)));
                }
            }
        }

        // Octopus: work arrives on serving nodes.
        if let Some(every) = self.spawn_every
            && self.ticks.is_multiple_of(every)
            && !self.maintenance
        {
            let serving: Vec<u32> = self
                .pods
                .values()
                .filter(|p| p.ready && !p.terminating)
                .filter(|p| {
                    self.nodes
                        .get(&p.name)
                        .is_some_and(|n| !n.drained && !n.offline)
                })
                .map(|p| p.ordinal)
                .collect();
            for ordinal in serving {
                let ticks = self.task_ticks;
                self.add_task(Some(ordinal), ticks);
            }
        }
        self.check_world("after the world moved");
    }

    /// Desired nodes that serve no tasks right now: pod missing, not ready or terminating,
    /// or the node drained or offline in Octopus.
    fn out_of_service(&self) -> Vec<String> {
        (0..self.expect.replicas)
            .filter(|ordinal| {
                let name = pod_name(*ordinal);
                let pod_ok = self
                    .pods
                    .get(ordinal)
                    .is_some_and(|p| p.ready && !p.terminating);
                let node_ok = self
                    .nodes
                    .get(&name)
                    .is_none_or(|n| !n.drained && !n.offline);
                !(pod_ok && node_ok)
            })
            .map(pod_name)
            .collect()
    }

    /// Invariants of the world at every moment.
    fn check_world(&mut self, when: &str) {
        let mut problems = Vec::new();
        let lines: BTreeSet<(u64, u64)> = self
            .pods
            .values()
            .filter_map(|p| p.version.as_deref())
            .map(line)
            .collect();
        if lines.len() > 1 {
            problems.push(format!("pods run schema lines {lines:?} at once"));
        }
        match self.expect.strategy {
            Some("rolling") => {
                let out = self.out_of_service();
                self.max_out = self.max_out.max(out.len());
                if out.len() > 1 {
                    problems.push(format!("nodes out of service at once: {out:?}"));
                }
            }
            Some("stop-the-world") => {
                if let Some(sts) = self.sts.clone() {
                    let template = sts.version.clone().unwrap_or_default();
                    let full = i32::try_from(self.expect.replicas).expect("small");
                    let backup_needed =
                        self.spec.upgrade.backup.as_ref().and_then(|b| b.skip) != Some(true);
                    if template == self.expect.from && sts.replicas < full {
                        if !self.maintenance {
                            problems.push("nodes stop before maintenance mode is on".into());
                        }
                        let pair = (self.expect.from.clone(), self.expect.to.clone());
                        if backup_needed && self.master_key_copy.as_ref() != Some(&pair) {
                            problems.push("nodes stop before the Master Key is copied".into());
                        }
                        if backup_needed
                            && self.job.as_ref().is_none_or(|j| j.outcome != Some(true))
                        {
                            problems.push("nodes stop before the backup succeeded".into());
                        }
                        if !self.tasks.is_empty() {
                            problems
                                .push(format!("nodes stop while {} task(s) run", self.tasks.len()));
                        }
                    }
                    if template == self.expect.to {
                        let old: Vec<String> = self
                            .pods
                            .values()
                            .filter(|p| p.version.as_deref() != Some(self.expect.to.as_str()))
                            .map(|p| p.name.clone())
                            .collect();
                        if !old.is_empty() {
                            problems.push(format!(
                                "the template runs {} while {old:?} run another version",
                                self.expect.to
                            ));
                        }
                        if sts.replicas >= 1 {
                            self.new_template_started = true;
                        }
                    } else if self.new_template_started {
                        problems.push(format!(
                            "the template went back to {template}@{} after pods started on {}",
                            sts.replicas, self.expect.to
                        ));
                    }
                }
            }
            _ => {}
        }
        for p in problems {
            self.violation(format!("{when}: {p}"));
        }
    }

    /// Invariants of one decision against the world it was made on.
    fn check_decision(&mut self, o: &Observed, d: &Decision) {
        let Some(action) = &d.action else {
            return;
        };
        let needs_octopus = matches!(
            action,
            Action::SetMaintenance(_)
                | Action::SetDrain { .. }
                | Action::CancelTasks(_)
                | Action::QueueTentacleTasks { .. }
        );
        if needs_octopus && o.octopus.state().is_none() {
            self.violation(format!("acted blind: {action:?} without Octopus's view"));
        }
        if d.stop.is_some() {
            self.violation(format!("{action:?} despite the stop {:?}", d.stop));
        }
        if let Action::DeletePod(name) = action {
            let drained = self.nodes.get(name).is_some_and(|n| n.drained);
            let busy: Vec<String> = self
                .tasks
                .iter()
                .filter(|t| t.view.node.as_deref() == Some(name.as_str()))
                .map(|t| t.view.id.clone())
                .collect();
            if !drained || !busy.is_empty() {
                self.violation(format!(
                    "replacing {name}: drained={drained}, running tasks {busy:?}"
                ));
            }
        }
    }

    /// The cluster is where the spec wants it and the operator has nothing left to do.
    fn settled(&self) -> bool {
        let Some(d) = &self.last else {
            return false;
        };
        d.action.is_none()
            && cond(d, READY).status
            && d.upgrade.as_ref().is_none_or(|u| u.finished_at.is_some())
            && d.statefulset == want(&self.spec.version, self.spec.replicas)
            && self.status.upgrade == d.upgrade
    }

    fn try_run(&mut self, max: u32) -> Result<(), String> {
        for _ in 0..max {
            self.step(Kill::Never);
            if self.settled() {
                return Ok(());
            }
        }
        Err(format!("did not settle within {max} reconciles"))
    }

    /// Reconciles until settled; panics with the story when it does not.
    fn run(&mut self, max: u32) {
        if let Err(e) = self.try_run(max) {
            panic!("{e}\n{}", self.story());
        }
    }

    /// Reconciles until a decision satisfies `until`; the world is left right after that
    /// reconcile's act and record.
    fn run_until(&mut self, max: u32, until: impl Fn(&Decision) -> bool) -> Decision {
        for _ in 0..max {
            let d = self.reconcile(Kill::Never);
            if until(&d) {
                return d;
            }
            self.tick();
        }
        panic!("never got there within {max} reconciles\n{}", self.story());
    }

    /// Reconciles until the decision about to be made satisfies `until`, and leaves the
    /// world and status just before that reconcile.
    fn run_until_due(&mut self, max: u32, until: impl Fn(&Decision) -> bool) -> Decision {
        for _ in 0..max {
            let before = self.clone();
            let d = self.reconcile(Kill::Never);
            if until(&d) {
                *self = before;
                return d;
            }
            self.tick();
        }
        panic!("never got there within {max} reconciles\n{}", self.story());
    }

    fn story(&self) -> String {
        let tail = self.log.len().saturating_sub(40);
        format!(
            "violations:\n  {}\nlast reconciles:\n  {}\ntimeline:\n  {}",
            self.violations.join("\n  "),
            self.log[tail..].join("\n  "),
            self.timeline.join(" | ")
        )
    }

    fn assert_clean(&self) {
        assert!(self.violations.is_empty(), "{}", self.story());
    }

    /// The end of every walk: every node ready and serving on `version`, Octopus out of
    /// maintenance mode, the upgrade record finished, Ready in status.
    fn assert_converged(&self, version: &str) {
        self.assert_clean();
        let n = u32::try_from(self.spec.replicas).expect("small");
        let story = || self.story();
        assert_eq!(
            self.pods.keys().copied().collect::<Vec<_>>(),
            (0..n).collect::<Vec<_>>(),
            "{}",
            story()
        );
        for p in self.pods.values() {
            assert!(
                p.ready && !p.terminating && p.version.as_deref() == Some(version),
                "{p:?}\n{}",
                story()
            );
            let node = self.nodes.get(&p.name).expect("registered");
            assert!(!node.drained && !node.offline, "{node:?}\n{}", story());
            assert_eq!(node.version.as_deref(), Some(version));
        }
        assert!(!self.maintenance, "maintenance mode left on\n{}", story());
        assert_eq!(
            self.sts,
            Some(StatefulSetView {
                version: Some(version.into()),
                replicas: self.spec.replicas,
            })
        );
        if let Some(up) = &self.status.upgrade {
            assert!(up.finished_at.is_some(), "{up:?}");
            assert!(up.steps.iter().all(|s| s.state == "Done"), "{up:?}");
            assert!(up.step.is_none() && up.node.is_none(), "{up:?}");
            assert!(up.stopped_reason.is_none(), "{up:?}");
        }
        assert!(
            conditions::is_true(&self.status.conditions, READY),
            "{:?}",
            self.status.conditions
        );
        for type_ in [DEGRADED, UPGRADE_BLOCKED, PAUSED] {
            assert!(
                !conditions::is_true(&self.status.conditions, type_),
                "{type_}: {:?}",
                self.status.conditions
            );
        }
        assert_eq!(self.status.current_version.as_deref(), Some(version));
        assert_eq!(self.status.target_version.as_deref(), Some(version));
    }
}

fn pos(timeline: &[String], what: &str) -> usize {
    timeline
        .iter()
        .position(|e| e == what)
        .unwrap_or_else(|| panic!("{what} never happened:\n  {}", timeline.join(" | ")))
}

fn last_pos(timeline: &[String], prefix: &str) -> Option<usize> {
    timeline.iter().rposition(|e| e.starts_with(prefix))
}

fn first_pos(timeline: &[String], prefix: &str) -> Option<usize> {
    timeline.iter().position(|e| e.starts_with(prefix))
}

// ------------------------------------------------------------------------------ walks

/// The rolling walk of the patch upgrade `from -> to` on `n` nodes, with work arriving.
fn rolling_sim(from: &str, to: &str, n: u32) -> Sim {
    let mut sim = Sim::steady(from, n);
    sim.spawn_every = Some(3);
    sim.task_ticks = 4;
    // A long task on the first node to go, and one elsewhere.
    sim.add_task(Some(n - 1), 6);
    if n > 1 {
        sim.add_task(Some(0), 9);
    }
    sim.change_spec(|s| s.version = to.into());
    sim.expect = Expect::new("rolling", from, to, n);
    sim
}

/// The stop-the-world walk of the approved schema upgrade `from -> to` on `n` nodes.
fn stop_the_world_sim(from: &str, to: &str, n: u32) -> Sim {
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
    sim.expect = Expect::new("stop-the-world", from, to, n);
    sim
}

#[test]
fn day_one_creates_the_nodes_in_order_and_becomes_ready() {
    let mut sim = Sim::new(V1, 3);
    let d = sim.step(Kill::Never);
    assert_eq!(d.statefulset, want(V1, 3));
    assert_cond(&d, PROGRESSING, true, reasons::CREATING);
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
        assert_cond(&d, DEGRADED, true, reasons::SECRET_NOT_FOUND);
        assert_cond(&d, UPGRADE_BLOCKED, true, reasons::SECRET_NOT_FOUND);
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
        sim.job.is_none()
            && sim.master_key_copy.is_none()
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

#[test]
fn a_patch_upgrade_with_tentacle_updates_queues_them_once_at_the_end() {
    let mut sim = rolling_sim(V1, V1_PATCH, 2);
    sim.change_spec(|s| {
        s.tentacles = Some(TentacleSpec {
            upgrade_tentacles: true,
            update_calamari: true,
            environment_ids: vec!["Environments-1".into()],
        });
    });
    sim.run(300);
    sim.assert_converged(V1_PATCH);
    assert_eq!(sim.tentacle_queues, 1);
    let t = &sim.timeline;
    assert!(pos(t, "tentacles") > pos(t, "undrain:octo-0"));
    let up = sim.status.upgrade.as_ref().expect("recorded");
    assert_eq!(
        up.steps.last().map(|s| s.action.as_str()),
        Some("tentacles")
    );
}

#[test]
fn minor_upgrade_stops_the_world_with_backup_first_and_no_mixed_versions() {
    let mut sim = stop_the_world_sim(V1, V2, 3);
    sim.run(300);
    sim.assert_converged(V2);
    let t = sim.timeline.clone();
    let at = |what: &str| pos(&t, what);

    let on = at("maintenance:on");
    let copy = at("master-key-copy");
    let job = at("backup-job:created");
    let backed_up = at("backup-job:succeeded");
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
    // Maintenance off is the very last thing Octopus is told, after every undrain.
    let off = at("maintenance:off");
    for n in 0..3 {
        assert!(at(&format!("undrain:{}", pod_name(n))) < off, "{t:?}");
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
    assert_eq!(backup.job_name, names::backup_job(NAME, V1, V2));
    assert_eq!(
        backup.master_key_secret.as_deref(),
        Some(names::master_key_copy(NAME, V1, V2).as_str())
    );
    assert!(backup.completed_at.is_some());
    let up = status.upgrade.as_ref().expect("recorded");
    assert_eq!(
        (up.change.as_str(), up.strategy.as_deref()),
        ("minor", Some("stop-the-world"))
    );
    let actions: Vec<String> = up
        .steps
        .iter()
        .map(|s| format!("{} {}", s.action, s.node.as_deref().unwrap_or("-")))
        .collect();
    assert_eq!(
        actions,
        [
            "maintenance-on -",
            "drain octo-0",
            "drain octo-1",
            "drain octo-2",
            "wait-tasks -",
            "backup -",
            "stop-all -",
            "start-first octo-0",
            "wait-schema -",
            "start-rest -",
            "verify -",
            "undrain octo-0",
            "undrain octo-1",
            "undrain octo-2",
            "maintenance-off -",
        ]
    );
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
    assert!(sim.job.is_none() && sim.master_key_copy.is_none());
    assert!(sim.status.last_backup.is_none());
}

#[test]
fn a_schema_upgrade_blocked_until_approved_then_runs() {
    let mut sim = Sim::steady(V1, 3);
    sim.change_spec(|s| {
        s.version = V2.into();
        s.upgrade.backup = Some(backup_job_spec());
    });
    sim.expect = Expect::new("stop-the-world", V1, V2, 3);
    for _ in 0..5 {
        let d = sim.step(Kill::Never);
        assert!(d.action.is_none());
        assert_eq!(d.statefulset, want(V1, 3));
        assert_cond(
            &d,
            UPGRADE_BLOCKED,
            true,
            reasons::SCHEMA_UPGRADE_NOT_APPROVED,
        );
        assert!(d.upgrade.is_none());
    }
    assert!(!sim.maintenance && sim.job.is_none());
    sim.change_spec(|s| s.upgrade.approved_version = Some(V2.into()));
    sim.run(300);
    sim.assert_converged(V2);
}

#[test]
fn pause_stops_at_the_next_step_and_resumes() {
    let mut sim = rolling_sim(V1, V1_PATCH, 3);
    sim.run_until(100, |d| step_of(d) == (Some("wait-ready"), Some("octo-2")));
    sim.change_spec(|s| s.paused = true);
    let before = (sim.sts.clone(), sim.nodes.clone());
    for _ in 0..10 {
        let d = sim.step(Kill::Never);
        assert!(d.action.is_none() && d.statefulset.is_none(), "{d:?}");
        assert_cond(&d, PAUSED, true, reasons::PAUSED);
        assert_cond(&d, READY, false, reasons::UPGRADING);
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

// ------------------------------------------------------------------------------ stops

/// Runs a stop-the-world walk whose first node crash-loops on the new version, until the
/// operator stops.
fn failed_migration() -> (Sim, Decision) {
    let mut sim = stop_the_world_sim(V1, V2, 3);
    sim.crash_on = Some((0, V2.into()));
    let d = sim.run_until(100, |d| d.stop.is_some());
    (sim, d)
}

#[test]
fn a_node_failing_after_the_schema_migration_stops_everything() {
    let (mut sim, d) = failed_migration();
    assert_cond(
        &d,
        UPGRADE_BLOCKED,
        true,
        reasons::NODE_FAILED_AFTER_MIGRATION,
    );
    assert_cond(&d, DEGRADED, true, reasons::NODE_FAILED_AFTER_MIGRATION);
    assert_cond(&d, READY, false, reasons::UPGRADING);
    assert!(d.action.is_none());
    let message = &cond(&d, UPGRADE_BLOCKED).message;
    for words in ["octo-0", V2, "status.lastBackup", "spec.version"] {
        assert!(message.contains(words), "{message}");
    }
    let up = d.upgrade.as_ref().expect("recorded");
    assert_eq!(
        up.stopped_reason.as_deref(),
        Some(reasons::NODE_FAILED_AFTER_MIGRATION)
    );
    assert_eq!(up.stopped_generation, Some(sim.generation));
    assert_eq!(up.step.as_deref(), Some("wait-schema"));
    // Node 0 alone: no other node was ever started on the new version.
    assert_eq!(sim.pods.keys().copied().collect::<Vec<_>>(), [0]);
    // The stop holds for this generation: nothing is decided, whatever the world does.
    tick_and_hold(&mut sim, reasons::NODE_FAILED_AFTER_MIGRATION, message);
    sim.assert_clean();
    assert_eq!(sim.pods.keys().copied().collect::<Vec<_>>(), [0]);
    assert!(
        sim.maintenance,
        "maintenance mode stays on while the schema is in doubt"
    );
}

/// Ten reconciles under a stop: no action, no StatefulSet change, the same words.
fn tick_and_hold(sim: &mut Sim, reason: &str, message: &str) {
    for _ in 0..10 {
        let before = sim.sts.clone();
        let d = sim.step(Kill::Never);
        assert!(d.action.is_none(), "{d:?}");
        let unchanged = d.statefulset.as_ref().is_none_or(|w| {
            before
                == Some(StatefulSetView {
                    version: Some(w.version.clone()),
                    replicas: w.replicas,
                })
        });
        assert!(unchanged, "{:?} -> {:?}", before, d.statefulset);
        assert_cond(&d, UPGRADE_BLOCKED, true, reason);
        assert_cond(&d, DEGRADED, true, reason);
        assert_eq!(cond(&d, UPGRADE_BLOCKED).message, message);
        assert_eq!(d.stop.as_ref().map(|s| s.0.as_str()), Some(reason));
    }
}

#[test]
fn a_stop_is_looked_at_again_when_the_generation_changes() {
    let (mut sim, _) = failed_migration();
    // A person fixes the cause (e.g. the database firewall); the pod comes up.
    sim.crash_on = None;
    sim.tick();
    // Same generation: still stopped, although the node is fine now.
    let d = sim.step(Kill::Never);
    assert!(d.action.is_none() && d.statefulset.is_none());
    assert_cond(
        &d,
        UPGRADE_BLOCKED,
        true,
        reasons::NODE_FAILED_AFTER_MIGRATION,
    );
    // A spec change: the operator looks again and goes on.
    sim.change_spec(|s| s.upgrade.node_ready_timeout = minutes(30));
    let d = sim.step(Kill::Never);
    assert_cond(&d, UPGRADE_BLOCKED, false, reasons::NOT_BLOCKED);
    assert!(
        d.upgrade
            .as_ref()
            .is_some_and(|u| u.stopped_reason.is_none())
    );
    sim.run(100);
    sim.assert_converged(V2);
    assert_eq!(sim.status.schema_version.as_deref(), Some(V2));
}

#[test]
fn a_node_still_failing_after_a_spec_change_stops_again_for_the_new_generation() {
    let (mut sim, _) = failed_migration();
    sim.change_spec(|s| s.upgrade.node_ready_timeout = minutes(30));
    let d = sim.step(Kill::Never);
    assert_cond(
        &d,
        UPGRADE_BLOCKED,
        true,
        reasons::NODE_FAILED_AFTER_MIGRATION,
    );
    let up = d.upgrade.as_ref().expect("recorded");
    assert_eq!(up.stopped_generation, Some(sim.generation));
    assert_eq!(sim.pods.keys().copied().collect::<Vec<_>>(), [0]);
}

#[test]
fn lifting_a_stop_restarts_the_step_timer() {
    let (mut sim, _) = failed_migration();
    // An hour later a person fixes the cause, deletes the crash-looping pod and edits the
    // spec to let the operator look again. The new pod is starting, not ready yet.
    sim.now = after(sim.now, 3600);
    sim.crash_on = None;
    if let Some(p) = sim.pods.get_mut(&0) {
        p.terminating = true;
    }
    sim.tick();
    assert!(
        sim.pods
            .get(&0)
            .is_some_and(|p| !p.ready && p.restarts == 0)
    );
    sim.change_spec(|s| s.upgrade.node_ready_timeout = minutes(20));
    let d = sim.step(Kill::Never);
    assert!(
        d.stop.is_none(),
        "a fresh pod gets nodeReadyTimeout to start, got {:?}",
        d.stop
    );
    assert_cond(&d, PROGRESSING, true, "WaitingForNode");
}

#[test]
fn setting_the_old_version_back_after_a_failed_migration_is_followed() {
    let (mut sim, _) = failed_migration();
    // As the message says: restore the backup (outside the operator), then set
    // spec.version to the old version.
    sim.change_spec(|s| s.version = V1.into());
    let d = sim.step(Kill::Never);
    assert!(
        d.statefulset
            .as_ref()
            .is_none_or(|w| w.version != V2 || w.replicas == 0),
        "the operator still wants {:?} and says {:?}",
        d.statefulset,
        d.stop
    );
    // It brings every node back to the old version and releases Octopus.
    let d = sim.run_until(200, |d| {
        d.upgrade
            .as_ref()
            .is_some_and(|u| u.finished_at.is_some() && u.to == V1)
    });
    assert!(d.stop.is_none(), "{:?}", d.stop);
    assert_eq!(d.statefulset, want(V1, 3));
    assert_eq!(sim.pods.len(), 3);
    assert!(sim.pods.values().all(|p| p.version.as_deref() == Some(V1)));
}

fn failed_backup() -> (Sim, Decision) {
    let mut sim = stop_the_world_sim(V1, V2, 3);
    sim.backup_fails = true;
    let d = sim.run_until(100, |d| d.stop.is_some());
    (sim, d)
}

#[test]
fn a_failed_backup_stops_before_anything_stops() {
    let (mut sim, d) = failed_backup();
    assert_cond(&d, UPGRADE_BLOCKED, true, reasons::BACKUP_FAILED);
    assert_cond(&d, DEGRADED, true, reasons::BACKUP_FAILED);
    assert!(d.action.is_none());
    assert_eq!(d.statefulset, want(V1, 3));
    let message = cond(&d, UPGRADE_BLOCKED).message.clone();
    assert!(
        message.contains(&names::backup_job(NAME, V1, V2)),
        "{message}"
    );
    assert!(d.last_backup.is_none());
    tick_and_hold(&mut sim, reasons::BACKUP_FAILED, &message);
    // Every node still runs the old version.
    assert_eq!(sim.pods.len(), 3);
    assert!(
        sim.pods
            .values()
            .all(|p| p.ready && p.version.as_deref() == Some(V1))
    );
    assert_eq!(
        sim.sts,
        Some(StatefulSetView {
            version: Some(V1.into()),
            replicas: 3
        })
    );
    assert!(first_pos(&sim.timeline, "pod-stopping:").is_none());
    sim.assert_clean();
}

#[test]
fn deleting_a_failed_backup_job_retries_the_backup() {
    let (mut sim, _) = failed_backup();
    // As the message says: fix the cause, delete the Job. No spec change.
    sim.backup_fails = false;
    sim.job = None;
    let d = sim.step(Kill::Never);
    assert_eq!(
        d.action,
        Some(Action::CreateBackupJob {
            from: V1.into(),
            to: V2.into()
        }),
        "{:?}",
        d.stop
    );
    assert_cond(&d, UPGRADE_BLOCKED, false, reasons::NOT_BLOCKED);
    assert_cond(&d, DEGRADED, false, reasons::AS_EXPECTED);
    sim.run(200);
    sim.assert_converged(V2);
}

#[test]
fn a_failed_backup_retried_after_a_spec_change_converges() {
    let (mut sim, _) = failed_backup();
    sim.backup_fails = false;
    sim.job = None;
    sim.change_spec(|s| s.upgrade.drain_timeout = minutes(45));
    sim.run(200);
    sim.assert_converged(V2);
}

#[test]
fn octopus_unreachable_during_a_rolling_step_waits_and_never_acts_blind() {
    for (step, node) in [
        ("drain", "octo-1"),
        ("wait-tasks", "octo-1"),
        ("replace", "octo-1"),
        // Octopus fails while the pod starts: verify-version must wait for it.
        ("wait-ready", "octo-1"),
        ("undrain", "octo-1"),
    ] {
        let mut sim = rolling_sim(V1, V1_PATCH, 3);
        // Node 1 is busy when its turn comes, so wait-tasks is a step of its own.
        sim.add_task(Some(1), 60);
        sim.run_until_due(300, |d| step_of(d) == (Some(step), Some(node)));
        sim.fault = Some((
            "Unauthorized".into(),
            "the API key was rejected (401)".into(),
        ));
        for _ in 0..6 {
            let d = sim.step(Kill::Never);
            assert!(d.action.is_none(), "{step}: {:?}", d.action);
            assert_eq!(d.requeue, Requeue::Poll, "{step}");
            assert_cond(&d, DEGRADED, true, "Unauthorized");
            assert!(cond(&d, PROGRESSING).status, "{step}");
            assert!(d.stop.is_none(), "{step}: a wait, not a stop: {:?}", d.stop);
        }
        let progressing = cond(sim.last.as_ref().expect("decided"), PROGRESSING);
        assert!(
            ["Unauthorized", "WaitingForOctopusReachable"].contains(&progressing.reason.as_str()),
            "{step}: {progressing:?}"
        );
        // Once Octopus answers again the walk goes on, and nothing unsafe happened.
        sim.fault = None;
        sim.run(300);
        sim.assert_converged(V1_PATCH);
    }
}

#[test]
fn octopus_unreachable_at_maintenance_on_waits() {
    let mut sim = Sim::steady(V1, 3);
    sim.fault = Some(("ServiceUnavailable".into(), "Octopus answered 503".into()));
    sim.change_spec(|s| {
        s.version = V2.into();
        approve(s, V2);
    });
    sim.expect = Expect::new("stop-the-world", V1, V2, 3);
    let d = sim.step(Kill::Never);
    assert!(d.action.is_none());
    assert_eq!(step_of(&d), (Some("maintenance-on"), None));
    assert_cond(&d, PROGRESSING, true, "ServiceUnavailable");
    assert!(cond(&d, PROGRESSING).message.contains("never acts blind"));
    sim.fault = None;
    sim.run(300);
    sim.assert_converged(V2);
}

/// A rolling walk stopped at node 2's wait-tasks with tasks that never end by themselves,
/// past drainTimeout.
fn drain_timed_out(policy: DrainTimeoutPolicy) -> (Sim, Vec<String>) {
    let mut sim = Sim::steady(V1, 3);
    let stuck = sim.add_task(Some(2), FOREVER);
    let cancelling = sim.add_task(Some(2), FOREVER);
    let elsewhere = sim.add_task(Some(1), FOREVER);
    if let Some(t) = sim.tasks.iter_mut().find(|t| t.view.id == cancelling) {
        t.view.cancelling = true;
        t.left = FOREVER;
    }
    sim.change_spec(|s| {
        s.version = V1_PATCH.into();
        s.upgrade.on_drain_timeout = policy;
    });
    sim.expect = Expect::new("rolling", V1, V1_PATCH, 3);
    sim.run_until(10, |d| step_of(d) == (Some("wait-tasks"), Some("octo-2")));
    sim.now = after(sim.now, 31 * 60);
    (sim, vec![stuck, cancelling, elsewhere])
}

#[test]
fn drain_timeout_with_wait_says_so_and_keeps_waiting() {
    let (sim, ids) = drain_timed_out(DrainTimeoutPolicy::Wait);
    let d = decide(&sim.observe());
    assert!(d.action.is_none());
    assert_cond(&d, PROGRESSING, true, "DrainTimeoutExceeded");
    let message = &cond(&d, PROGRESSING).message;
    assert!(
        message.contains(&ids[0]) && message.contains("CancelTasks"),
        "{message}"
    );
    assert!(
        !message.contains(&ids[2]),
        "a task of another node: {message}"
    );
    assert_eq!(d.requeue, Requeue::Poll);
    // Before the timeout it is a plain wait.
    let mut early = sim.observe();
    early.now = after(early.now, -31 * 60);
    assert_cond(&decide(&early), PROGRESSING, true, "WaitingForTasks");
}

#[test]
fn drain_timeout_with_cancel_tasks_cancels_the_nodes_tasks_not_yet_cancelling() {
    let (mut sim, ids) = drain_timed_out(DrainTimeoutPolicy::CancelTasks);
    let d = sim.reconcile(Kill::Never);
    assert_eq!(d.action, Some(Action::CancelTasks(vec![ids[0].clone()])));
    // Once every task there is cancelling, it waits for them.
    let d = decide(&sim.observe());
    assert!(d.action.is_none(), "{:?}", d.action);
    assert_cond(&d, PROGRESSING, true, "WaitingForTasks");
    // The cancelled tasks end; the roll goes on and the other node's task is untouched.
    sim.tick();
    assert!(
        sim.tasks
            .iter()
            .any(|t| t.view.id == ids[2] && !t.view.cancelling)
    );
    if let Some(t) = sim.tasks.iter_mut().find(|t| t.view.id == ids[2]) {
        t.left = 2;
    }
    sim.run(200);
    sim.assert_converged(V1_PATCH);
}

#[test]
fn drain_timeout_before_a_schema_upgrade_cancels_tasks_cluster_wide() {
    let mut sim = Sim::steady(V1, 2);
    let a = sim.add_task(Some(0), FOREVER);
    let b = sim.add_task(None, FOREVER);
    sim.change_spec(|s| {
        s.version = V2.into();
        approve(s, V2);
        s.upgrade.on_drain_timeout = DrainTimeoutPolicy::CancelTasks;
    });
    sim.expect = Expect::new("stop-the-world", V1, V2, 2);
    sim.run_until(10, |d| step_of(d) == (Some("wait-tasks"), None));
    sim.now = after(sim.now, 31 * 60);
    let d = sim.reconcile(Kill::Never);
    assert_eq!(d.action, Some(Action::CancelTasks(vec![a, b])));
    sim.tick();
    sim.run(200);
    sim.assert_converged(V2);
}

#[test]
fn a_stopped_upgrade_record_is_kept_while_paused() {
    let (mut sim, _) = failed_migration();
    sim.change_spec(|s| s.paused = true);
    let before = sim.status.upgrade.clone();
    let d = sim.step(Kill::Never);
    assert!(d.action.is_none() && d.statefulset.is_none());
    assert_eq!(d.upgrade, before);
    assert_cond(&d, PAUSED, true, reasons::PAUSED);
}

#[test]
fn a_spec_version_change_during_an_upgrade_waits_for_it_to_finish() {
    let mut sim = rolling_sim(V1, V1_PATCH, 3);
    sim.run_until(100, |d| step_of(d).1 == Some("octo-1"));
    sim.change_spec(|s| s.version = "2024.1.30".into());
    let d = sim.step(Kill::Never);
    let up = d.upgrade.as_ref().expect("recorded");
    assert_eq!(up.to, V1_PATCH, "the running upgrade keeps its target");
    assert!(cond(&d, PROGRESSING).message.contains("2024.1.30"));
    sim.expect = Expect::new("rolling", V1, "2024.1.30", 3);
    sim.run(400);
    sim.assert_converged("2024.1.30");
}

#[test]
fn scaling_up_during_a_rolling_upgrade_still_converges() {
    let mut sim = rolling_sim(V1, V1_PATCH, 3);
    sim.run_until(100, |d| step_of(d) == (Some("drain"), Some("octo-1")));
    sim.change_spec(|s| s.replicas = 4);
    // The upgrade keeps its three nodes; the fourth comes after it.
    if let Err(e) = sim.try_run(300) {
        panic!("{e}; last: {}", sim.log.last().cloned().unwrap_or_default());
    }
    sim.expect.replicas = 4;
    sim.assert_converged(V1_PATCH);
}

#[test]
fn scaling_during_an_upgrade_never_starts_an_old_version_node() {
    let mut sim = stop_the_world_sim(V1, V2, 3);
    sim.run_until(100, |d| step_of(d).0 == Some("wait-schema"));
    sim.change_spec(|s| s.replicas = 5);
    let d = sim.step(Kill::Never);
    // The upgrade runs with the nodes it planned for.
    assert_eq!(d.statefulset, want(V2, 1));
    assert!(sim.pods.values().all(|p| p.version.as_deref() == Some(V2)));
}

#[test]
fn stop_all_stops_nothing_while_a_predicate_holds() {
    // The backup is recorded; the next step stops every node.
    let mut sim = stop_the_world_sim(V1, V2, 3);
    sim.run_until(100, |d| d.last_backup.is_some());
    let mut o = sim.observe();
    // Pretend the previous reconcile had recorded everything up to the backup (and nothing
    // was scaled yet).
    o.statefulset = Some(StatefulSetView {
        version: Some(V1.into()),
        replicas: 3,
    });
    o.pods = (0..3).map(|i| pod(i, V1)).collect();
    let mut up = o.status.upgrade.clone().expect("recorded");
    for s in &mut up.steps {
        if s.action == "stop-all" {
            s.state = "Pending".into();
        }
    }
    o.status.upgrade = Some(up);

    let mut unreachable = o.clone();
    unreachable.octopus = unavailable();
    let mut busy = o.clone();
    state_mut(&mut busy)
        .running_tasks
        .push(task("ServerTasks-99", Some(1)));
    let mut failures = Vec::new();
    for (what, o, predicate) in [
        ("Octopus unreachable", unreachable, "OctopusReachable"),
        ("a task runs", busy, "TasksFinished"),
    ] {
        let d = decide(&o);
        let progressing = cond(&d, PROGRESSING);
        if progressing.reason != format!("WaitingFor{predicate}") {
            failures.push(format!("{what}: progressing {progressing:?}"));
        }
        if d.statefulset.as_ref().is_some_and(|w| w.replicas < 3) {
            failures.push(format!(
                "{what}: waits for {predicate} yet wants {:?}",
                d.statefulset
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

// -------------------------------------------------------------------- restart safety

/// Kills the operator once, at reconcile `k` of the walk `setup` builds, then lets it run:
/// every invariant must hold and the walk must converge on `to`.
fn killed_at(setup: &dyn Fn() -> Sim, k: u32, kill: Kill, to: &str) -> Result<(), String> {
    let mut sim = setup();
    for _ in 0..k {
        sim.step(Kill::Never);
    }
    sim.step(kill);
    let settled = sim.try_run(400);
    let problem = match settled {
        Err(e) => Some(e),
        Ok(()) if !sim.violations.is_empty() => Some("unsafe".into()),
        Ok(()) => {
            let fine = sim
                .pods
                .values()
                .all(|p| p.ready && p.version.as_deref() == Some(to))
                && sim.nodes.values().all(|n| !n.drained)
                && !sim.maintenance;
            (!fine).then(|| "settled short of the target".into())
        }
    };
    match problem {
        None => Ok(()),
        Some(p) => {
            let killed = sim
                .log
                .iter()
                .find(|l| l.contains("[killed"))
                .cloned()
                .unwrap_or_default();
            Err(format!(
                "killed at reconcile {k} ({kill:?}): {p}\n    {killed}\n    {}",
                sim.violations.first().cloned().unwrap_or_default()
            ))
        }
    }
}

/// Every point of the walk, killed.
fn sweep(setup: &dyn Fn() -> Sim, kill: Kill, to: &str) -> Vec<String> {
    let mut reference = setup();
    reference.run(400);
    reference.assert_converged(to);
    let points = reference.reconciles;
    (0..points)
        .filter_map(|k| killed_at(setup, k, kill, to).err())
        .collect()
}

#[test]
fn a_rolling_upgrade_survives_a_kill_between_act_and_record_at_every_point() {
    let failures = sweep(
        &|| rolling_sim(V1, V1_PATCH, 3),
        Kill::BeforeRecord,
        V1_PATCH,
    );
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn a_rolling_upgrade_survives_a_kill_between_apply_and_act_at_every_point() {
    let failures = sweep(&|| rolling_sim(V1, V1_PATCH, 3), Kill::AfterApply, V1_PATCH);
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn a_schema_upgrade_survives_a_kill_between_apply_and_act_at_every_point() {
    let failures = sweep(&|| stop_the_world_sim(V1, V2, 3), Kill::AfterApply, V2);
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn a_schema_upgrade_survives_a_kill_between_act_and_record_at_every_point() {
    let failures = sweep(&|| stop_the_world_sim(V1, V2, 3), Kill::BeforeRecord, V2);
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn a_kill_after_starting_the_first_node_never_stops_it_again() {
    for operator_down_ticks in [0, 3] {
        let mut sim = stop_the_world_sim(V1, V2, 3);
        sim.run_until_due(100, |d| d.statefulset == want(V2, 1));
        sim.step(Kill::BeforeRecord);
        // The operator is down for a while: node 0 may start and migrate the schema.
        for _ in 0..operator_down_ticks {
            sim.tick();
        }
        let o = sim.observe();
        let d = decide(&o);
        assert!(
            d.statefulset
                .as_ref()
                .is_none_or(|w| w.version == V2 && w.replicas >= 1),
            "down {operator_down_ticks} ticks: node 0 runs {:?} (ready {:?}) and the operator \
             wants {:?}: {}",
            o.pods.first().and_then(|p| p.version.clone()),
            o.pods.first().map(|p| p.ready),
            d.statefulset,
            cond(&d, PROGRESSING).message
        );
    }
}

/// The invariants above must be able to fail: an operator that misbehaves is caught.
#[test]
fn the_simulator_catches_an_unsafe_operator() {
    let caught = |sim: &Sim, words: &str| {
        assert!(
            sim.violations.iter().any(|v| v.contains(words)),
            "not caught: {words}; violations: {:?}",
            sim.violations
        );
    };
    // Replacing a busy node that was never drained.
    let mut sim = rolling_sim(V1, V1_PATCH, 3);
    let o = sim.observe();
    let mut d = decide(&o);
    d.action = Some(Action::DeletePod(pod_name(2)));
    sim.check_decision(&o, &d);
    caught(&sim, "replacing octo-2: drained=false");
    // ... and stopping its task with it.
    sim.perform(&Action::DeletePod(pod_name(2)));
    sim.tick();
    caught(&sim, "stopped while running tasks");

    // Two nodes out of service at once.
    let mut sim = rolling_sim(V1, V1_PATCH, 3);
    sim.perform(&drain(2, true));
    sim.check_world("test");
    assert!(sim.violations.is_empty());
    sim.perform(&drain(1, true));
    sim.check_world("test");
    caught(&sim, "out of service at once");

    // Acting on Octopus without its view.
    let mut sim = rolling_sim(V1, V1_PATCH, 3);
    let mut o = sim.observe();
    o.octopus = unavailable();
    let mut d = decide(&o);
    d.action = Some(drain(2, true));
    sim.check_decision(&o, &d);
    caught(&sim, "acted blind");

    // Stopping every node before maintenance mode and the backup.
    let mut sim = stop_the_world_sim(V1, V2, 3);
    sim.apply_statefulset(&StatefulSetWant {
        version: V1.into(),
        replicas: 0,
    });
    sim.check_world("test");
    caught(&sim, "before maintenance mode is on");
    caught(&sim, "before the backup succeeded");
    caught(&sim, "task(s) run");

    // The new version in the template while old pods run, then back again.
    let mut sim = stop_the_world_sim(V1, V2, 3);
    sim.apply_statefulset(&StatefulSetWant {
        version: V2.into(),
        replicas: 3,
    });
    sim.check_world("test");
    caught(
        &sim,
        "while [\"octo-0\", \"octo-1\", \"octo-2\"] run another version",
    );
    sim.apply_statefulset(&StatefulSetWant {
        version: V1.into(),
        replicas: 3,
    });
    sim.check_world("test");
    caught(&sim, "went back");

    // Two schema lines at once.
    let mut sim = Sim::steady(V1, 2);
    if let Some(p) = sim.pods.get_mut(&1) {
        p.version = Some(V2.into());
    }
    sim.check_world("test");
    caught(&sim, "schema lines");
}

// ------------------------------------------------------------------------- properties

const VERSIONS: [&str; 5] = [V1, V1_PATCH, V2, V3, "2023.4.1"];

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
                ),
            ),
            0..=5,
        )
    ) -> Vec<PodView> {
        pods.into_iter()
            .enumerate()
            .filter_map(|(i, p)| {
                let (version, ready, terminating, crash_looping, restarts) = p?;
                let ordinal = u32::try_from(i).ok()?;
                Some(PodView {
                    name: pod_name(ordinal),
                    ordinal,
                    version: Some(VERSIONS[version].into()),
                    ready,
                    restarts,
                    crash_looping,
                    terminating,
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
                        reasons::NODE_FAILED_AFTER_MIGRATION,
                        reasons::NODE_NOT_READY,
                        reasons::BACKUP_FAILED,
                    ][reason]
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
                master_key_secret: None,
                completed_at: None,
            }),
            (2, _) => Some(BackupStatus {
                job_name: "old".into(),
                from_version: "2023.3.1".into(),
                to_version: "2023.4.1".into(),
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
        });
        o.master_key_copy = copy;
        o
    }
}

/// Every desired node other than `except` is ready, running and serving in Octopus.
fn others_serving(o: &Observed, except: &str) -> Result<(), TestCaseError> {
    let state = o.octopus.state();
    for ordinal in 0..u32::try_from(o.spec.replicas).unwrap_or(0) {
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

fn step_states(up: &UpgradeStatus) -> String {
    up.steps
        .iter()
        .map(|s| match s.state.as_str() {
            "Done" => 'D',
            "Running" => 'R',
            "Pending" => 'P',
            _ => '?',
        })
        .collect()
}

/// What must hold of any decision on any observation.
fn check_decision_properties(o: &Observed, d: &Decision) -> Result<(), TestCaseError> {
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
        if reason != reasons::UNSAFE_TO_START {
            prop_assert!(d.action.is_none(), "{:?} despite {reason}", d.action);
        }
        prop_assert!(cond(d, UPGRADE_BLOCKED).status || cond(d, DEGRADED).status);
        prop_assert!(!cond(d, PROGRESSING).status);
    }
    if d.action.is_some() {
        prop_assert_eq!(d.requeue, Requeue::Soon);
    }

    match &d.action {
        // Octopus actions need Octopus's view: never act blind.
        Some(
            Action::SetMaintenance(_)
            | Action::SetDrain { .. }
            | Action::CancelTasks(_)
            | Action::QueueTentacleTasks { .. },
        ) => prop_assert!(o.octopus.state().is_some(), "{:?} blind", d.action),
        // A pod is replaced only when drained, idle, and everyone else serves.
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
        _ => {}
    }
    let rolling = d
        .upgrade
        .as_ref()
        .is_some_and(|u| u.strategy.as_deref() == Some("rolling"));
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

    // The upgrade record: done steps form a prefix, at most one runs, none is undone.
    if let Some(up) = &d.upgrade {
        let states = step_states(up);
        let prefix = states.trim_start_matches('D');
        let rest = prefix.strip_prefix('R').unwrap_or(prefix);
        prop_assert!(rest.chars().all(|c| c == 'P'), "steps {states}");
        if up.finished_at.is_some() {
            prop_assert!(states.chars().all(|c| c == 'D'), "finished with {states}");
        }
        if let Some(before) = &o.status.upgrade
            && before.started_at == up.started_at
            && before.steps.len() == up.steps.len()
        {
            for (b, a) in before.steps.iter().zip(&up.steps) {
                prop_assert!(b.state != "Done" || a.state == "Done", "{states}");
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
    assert_eq!(
        d.stop.as_ref().map(|s| s.0.as_str()),
        Some(reasons::UNSAFE_TO_START)
    );
    assert_eq!(d.action, None, "the operator acts although it stopped");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]

    /// Walks with random cluster sizes, work, backup durations and one kill anywhere.
    #[test]
    fn prop_randomised_walks_stay_safe_and_converge(
        n in 1u32..=4,
        schema in any::<bool>(),
        spawn_every in prop::option::of(1u32..6),
        task_ticks in 1u32..8,
        backup_ticks in 0u32..4,
        kill in prop::option::of((0u32..40, any::<bool>())),
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
                if let Err(e) = killed_at(&setup, k, mode, to) {
                    return Err(TestCaseError::fail(e));
                }
            }
        }
    }
}

// ------------------------------------------------------------------------- conditions

fn cw(type_: &'static str, status: bool, reason: &str) -> CondWant {
    CondWant {
        type_,
        status,
        reason: reason.into(),
        message: format!("{reason} message"),
    }
}

#[test]
fn merge_keeps_the_transition_time_unless_the_status_flips() {
    let t1 = after(t0(), 60);
    let t2 = after(t0(), 120);
    let first = conditions::merge(
        &[],
        &[cw(READY, false, "Creating"), cw(PAUSED, false, "NotPaused")],
        1,
        t0(),
    );
    assert_eq!(first.len(), 2);
    assert!(first.iter().all(|c| c.last_transition_time == Time(t0())));
    assert_eq!(first[0].status, "False");
    assert_eq!(first[0].observed_generation, Some(1));

    // Same status, new reason, message and generation: the time stays, the rest moves.
    let second = conditions::merge(
        &first,
        &[
            cw(READY, false, "NodesNotReady"),
            cw(PAUSED, false, "NotPaused"),
        ],
        2,
        t1,
    );
    assert_eq!(second[0].last_transition_time, Time(t0()));
    assert_eq!(second[0].reason, "NodesNotReady");
    assert_eq!(second[0].message, "NodesNotReady message");
    assert_eq!(second[0].observed_generation, Some(2));
    assert_eq!(second[1].last_transition_time, Time(t0()));

    // A flip moves only the flipped condition's time.
    let third = conditions::merge(
        &second,
        &[cw(READY, true, "Ready"), cw(PAUSED, false, "NotPaused")],
        2,
        t2,
    );
    assert_eq!(third[0].last_transition_time, Time(t2));
    assert_eq!(third[0].status, "True");
    assert_eq!(third[1].last_transition_time, Time(t0()));
    assert!(conditions::is_true(&third, READY));
    assert!(!conditions::is_true(&third, PAUSED));
    assert!(!conditions::is_true(&third, DEGRADED));
}

#[test]
fn merge_follows_the_wanted_list_and_ignores_unknown_previous_conditions() {
    let stale = Condition {
        type_: "Available".into(),
        status: "True".into(),
        reason: "Old".into(),
        message: String::new(),
        observed_generation: Some(1),
        last_transition_time: Time(t0()),
    };
    let merged = conditions::merge(
        &[stale],
        &[
            cw(DEGRADED, true, "BackupFailed"),
            cw(READY, false, "Upgrading"),
        ],
        3,
        after(t0(), 60),
    );
    let types: Vec<&str> = merged.iter().map(|c| c.type_.as_str()).collect();
    assert_eq!(types, [DEGRADED, READY]);
    assert!(
        merged
            .iter()
            .all(|c| c.last_transition_time == Time(after(t0(), 60)))
    );
}

#[test]
fn conditions_survive_a_status_round_trip_through_json() {
    // What the API server stores and hands back must merge the same way.
    let merged = conditions::merge(&[], &[cw(READY, true, "Ready")], 1, t0());
    let json = serde_json::to_string(&merged).expect("serialise");
    let back: Vec<Condition> = serde_json::from_str(&json).expect("parse");
    let again = conditions::merge(&back, &[cw(READY, true, "Ready")], 2, after(t0(), 600));
    assert_eq!(again[0].last_transition_time, Time(t0()));
}

proptest! {
    #[test]
    fn prop_transition_time_is_the_time_of_the_last_flip(
        statuses in prop::collection::vec(any::<bool>(), 1..30),
    ) {
        let mut previous = Vec::new();
        let mut last_flip = t0();
        let mut last_status = None;
        for (i, status) in statuses.iter().enumerate() {
            let now = after(t0(), i64::try_from(i).unwrap_or(0) * 60);
            if last_status != Some(*status) {
                last_flip = now;
                last_status = Some(*status);
            }
            let generation = i64::try_from(i).unwrap_or(0);
            previous = conditions::merge(
                &previous,
                &[cw(READY, *status, &format!("R{i}"))],
                generation,
                now,
            );
            prop_assert_eq!(previous.len(), 1);
            prop_assert_eq!(&previous[0].last_transition_time, &Time(last_flip));
            prop_assert_eq!(&previous[0].reason, &format!("R{i}"));
            prop_assert_eq!(previous[0].observed_generation, Some(generation));
        }
    }
}

// ----------------------------------------------------------------------------- window

fn window_of(
    days: Vec<Weekday>,
    start: &str,
    duration_minutes: u64,
    tz: &str,
) -> MaintenanceWindow {
    MaintenanceWindow {
        days,
        start: start.into(),
        duration: minutes(duration_minutes),
        time_zone: tz.into(),
    }
}

fn open(w: &MaintenanceWindow, at: &str) -> bool {
    window::is_open(w, ts(at)).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn a_window_opens_at_its_start_and_closes_at_its_end() {
    let w = window_of(vec![Weekday::Wednesday], "10:00", 60, "UTC");
    assert!(!open(&w, "2026-03-04T09:59:59Z"));
    assert!(open(&w, "2026-03-04T10:00:00Z"));
    assert!(open(&w, "2026-03-04T10:59:59Z"));
    assert!(!open(&w, "2026-03-04T11:00:00Z"));
    // A week later it opens again; the days between it does not.
    assert!(open(&w, "2026-03-11T10:30:00Z"));
    for day in 5..=10 {
        assert!(
            !open(&w, &format!("2026-03-{day:02}T10:30:00Z")),
            "March {day}"
        );
    }
}

#[test]
fn a_zero_length_window_never_opens() {
    let w = window_of(vec![], "10:00", 0, "UTC");
    assert!(!open(&w, "2026-03-04T10:00:00Z"));
}

#[test]
fn a_window_of_a_week_is_always_open() {
    let w = window_of(vec![Weekday::Monday], "03:00", 7 * 24 * 60, "Europe/Berlin");
    for hours in (0..24 * 14).step_by(5) {
        let at = after(t0(), hours * 3600);
        assert!(window::is_open(&w, at).unwrap_or(false), "{at}");
    }
}

#[test]
fn a_window_longer_than_a_day_spans_the_days_after_its_start() {
    // Friday 20:00 for 48 hours: open all Saturday and until Sunday 20:00.
    let w = window_of(vec![Weekday::Friday], "20:00", 48 * 60, "UTC");
    assert!(!open(&w, "2026-03-06T19:59:00Z"));
    assert!(open(&w, "2026-03-06T20:00:00Z"));
    assert!(open(&w, "2026-03-07T12:00:00Z"));
    assert!(open(&w, "2026-03-08T19:59:00Z"));
    assert!(!open(&w, "2026-03-08T20:00:00Z"));
    assert!(!open(&w, "2026-03-05T21:00:00Z"));
}

#[test]
fn an_opening_past_midnight_counts_on_the_next_day_only_until_it_ends() {
    // Sunday 23:00 for 2 hours: Monday 00:30 is open, Monday 23:30 is not.
    let w = window_of(vec![Weekday::Sunday], "23:00", 120, "UTC");
    assert!(open(&w, "2026-03-09T00:30:00Z"));
    assert!(!open(&w, "2026-03-09T01:00:00Z"));
    assert!(!open(&w, "2026-03-09T23:30:00Z"));
}

#[test]
fn every_weekday_maps_to_its_own_day() {
    let days = [
        Weekday::Monday,
        Weekday::Tuesday,
        Weekday::Wednesday,
        Weekday::Thursday,
        Weekday::Friday,
        Weekday::Saturday,
        Weekday::Sunday,
    ];
    for (i, day) in days.iter().enumerate() {
        let w = window_of(vec![*day], "00:00", 24 * 60, "UTC");
        for d in 0..7 {
            // 2026-03-02 is a Monday.
            let at = format!("2026-03-{:02}T12:00:00Z", 2 + d);
            assert_eq!(open(&w, &at), d == i, "{day:?} at {at}");
        }
    }
}

#[test]
fn the_window_keeps_its_real_length_across_daylight_saving_changes() {
    // Berlin springs forward on Sunday 2026-03-29 (02:00 -> 03:00). Saturday 22:00 CET
    // (21:00Z) for 6 hours closes 6 real hours later, at 03:00Z.
    let w = window_of(vec![Weekday::Saturday], "22:00", 360, "Europe/Berlin");
    assert!(!open(&w, "2026-03-28T20:59:00Z"));
    assert!(open(&w, "2026-03-28T21:00:00Z"));
    assert!(open(&w, "2026-03-29T02:59:00Z"));
    assert!(!open(&w, "2026-03-29T03:00:00Z"));
    // The next Saturday it opens at 22:00 CEST, 20:00Z.
    assert!(open(&w, "2026-04-04T20:00:00Z"));
    assert!(!open(&w, "2026-04-04T19:59:00Z"));
}

/// Minutes of one UTC day in which `w` is open.
fn open_minutes(w: &MaintenanceWindow, day: &str) -> i64 {
    let start = ts(&format!("{day}T00:00:00Z"));
    (0..24 * 60)
        .filter(|m| window::is_open(w, after(start, m * 60)).unwrap_or(false))
        .count()
        .try_into()
        .unwrap_or(0)
}

#[test]
fn a_start_inside_the_spring_gap_still_opens_that_day() {
    // 02:30 does not exist in Berlin on 2026-03-29; the window must not be lost.
    let w = window_of(vec![], "02:30", 60, "Europe/Berlin");
    assert_eq!(open_minutes(&w, "2026-03-29"), 60);
}

#[test]
fn an_ambiguous_start_in_the_autumn_opens_once() {
    // 02:30 happens twice in Berlin on 2026-10-25; the window opens once, for 30 minutes.
    let w = window_of(vec![], "02:30", 30, "Europe/Berlin");
    assert_eq!(open_minutes(&w, "2026-10-25"), 30);
}

#[test]
fn a_half_hour_time_zone_is_honoured() {
    // 02:00 in Kolkata (UTC+05:30) is 20:30Z the day before.
    let w = window_of(vec![Weekday::Thursday], "02:00", 60, "Asia/Kolkata");
    assert!(!open(&w, "2026-03-04T20:29:00Z"));
    assert!(open(&w, "2026-03-04T20:30:00Z"));
    assert!(!open(&w, "2026-03-04T21:30:00Z"));
}

#[test]
fn a_malformed_start_is_an_error_naming_it() {
    for start in ["24:00", "7pm", ""] {
        let w = window_of(vec![], start, 60, "UTC");
        let err = window::is_open(&w, t0()).expect_err(start);
        assert!(err.to_string().contains("start"), "{start}: {err}");
    }
}

proptest! {
    /// In UTC a daily window is open exactly when the time since its start, modulo a day,
    /// is shorter than its length.
    #[test]
    fn prop_a_daily_utc_window_is_minute_arithmetic(
        start in 0i64..24 * 60,
        length in 0u64..3 * 24 * 60,
        at in 0i64..400 * 24 * 3600,
    ) {
        let w = window_of(vec![], &format!("{:02}:{:02}", start / 60, start % 60), length, "UTC");
        // 2026-01-01T00:00:00Z is a midnight.
        let now = after(ts("2026-01-01T00:00:00Z"), at);
        let since_opening = (at - start * 60).rem_euclid(24 * 3600);
        let length_secs = i64::try_from(length * 60).unwrap_or(i64::MAX);
        let expected = length_secs >= 24 * 3600 || since_opening < length_secs;
        prop_assert_eq!(window::is_open(&w, now), Ok(expected));
    }

    /// More days or a longer window never closes a window that is open.
    #[test]
    fn prop_a_larger_window_is_open_whenever_a_smaller_one_is(
        days in prop::collection::vec(0usize..7, 0..4),
        extra_day in 0usize..7,
        start in 0i64..24 * 60,
        length in 1u64..48 * 60,
        extra in 0u64..600,
        at in 0i64..60 * 24 * 3600,
        tz in prop::sample::select(vec!["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata"]),
    ) {
        let all = [
            Weekday::Monday,
            Weekday::Tuesday,
            Weekday::Wednesday,
            Weekday::Thursday,
            Weekday::Friday,
            Weekday::Saturday,
            Weekday::Sunday,
        ];
        let start = format!("{:02}:{:02}", start / 60, start % 60);
        let small_days: Vec<Weekday> = days.iter().map(|d| all[*d]).collect();
        let small = window_of(small_days.clone(), &start, length, tz);
        let now = after(ts("2026-01-01T00:00:00Z"), at);
        if window::is_open(&small, now).unwrap_or(false) {
            let longer = window_of(small_days.clone(), &start, length + extra, tz);
            prop_assert!(window::is_open(&longer, now).unwrap_or(false));
            if !small_days.is_empty() {
                let mut more = small_days;
                more.push(all[extra_day]);
                let wider = window_of(more, &start, length, tz);
                prop_assert!(window::is_open(&wider, now).unwrap_or(false));
            }
        }
    }
}
