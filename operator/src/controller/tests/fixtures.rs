//! Builders of observations and upgrade records, and assertions on decisions. The other
//! test modules glob-import this one (and the types it re-exports).

pub use std::collections::{BTreeMap, BTreeSet};

pub use jiff::{SignedDuration, Timestamp};
pub use k8s_openapi::api::batch::v1::JobSpec;
pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
pub use proptest::prelude::*;

pub use crate::api::{
    BackupSpec, BackupStatus, DatabaseSpec, DrainTimeoutPolicy, ImageSpec, MaintenanceWindow,
    OctopusClusterSpec, OctopusClusterStatus, SchemaUpgradePolicy, SecretKeyRef, StorageSpec,
    TentacleSpec, UpgradeSpec, UpgradeStatus, Weekday,
};
pub use crate::controller::conditions::{
    self, DEGRADED, PAUSED, PROGRESSING, READY, UPGRADE_BLOCKED,
};
pub use crate::controller::decide::{HEARTBEAT_AGE_OUT, KEPT_BACKUP_JOBS, decide, phase};
pub use crate::controller::model::{
    Action, CondWant, ContainerExit, ContainerWaiting, Decision, Evictions, JobView, Observed,
    OctopusNode, OctopusState, OctopusView, PodView, Requeue, StartFailure, StatefulSetView,
    StatefulSetWant, TaskView,
};
pub use crate::controller::reason::Reason;
pub use crate::controller::safety::{self, Disruption, Predicate};
pub use crate::controller::slots::{self, UpgradeSlots};
pub use crate::controller::steps::{PlannedStep, StepKind, StepState, Upgrade};
pub use crate::planner::{self, ChangeKind, PlanRequest, Strategy};
pub use crate::resources::names;
pub use crate::version::OctopusVersion;
pub use strum::IntoEnumIterator;

// ------------------------------------------------------------------------------ fixtures

pub const NAME: &str = "octo";
/// The cluster object's UID.
pub const UID: &str = "0b5e7c2a-4d1f-4e8a-9c3b-6f2d1a0e9b7c";
/// The version the clusters run.
pub const V1: &str = "2024.1.10";
/// A patch of [`V1`]: rolls.
pub const V1_PATCH: &str = "2024.1.20";
/// A minor upgrade of [`V1`]: stops the world.
pub const V2: &str = "2024.2.5";
/// A major upgrade of [`V1`].
pub const V3: &str = "2025.1.1";

pub fn v(s: &str) -> OctopusVersion {
    OctopusVersion::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

pub fn line(s: &str) -> (u64, u64) {
    v(s).schema_line()
}

pub fn ts(s: &str) -> Timestamp {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

/// A Wednesday morning (2026-03-02 is a Monday).
pub fn t0() -> Timestamp {
    ts("2026-03-04T10:00:00Z")
}

pub fn after(t: Timestamp, secs: i64) -> Timestamp {
    t.checked_add(SignedDuration::from_secs(secs))
        .expect("time in range")
}

pub fn minutes(m: u64) -> kube::core::Duration {
    std::time::Duration::from_secs(m * 60).into()
}

pub fn pod_name(ordinal: u32) -> String {
    format!("{NAME}-{ordinal}")
}

pub fn node_id(name: &str) -> String {
    format!("OctopusServerNodes-{name}")
}

pub fn secret(name: &str, key: &str) -> SecretKeyRef {
    SecretKeyRef {
        name: name.into(),
        key: key.into(),
    }
}

pub fn spec(version: &str, replicas: i32) -> OctopusClusterSpec {
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
        pod_anti_affinity: crate::api::PodAntiAffinity::Preferred,
        api: None,
        upgrade: UpgradeSpec::default(),
        tentacles: None,
        paused: false,
    }
}

pub fn backup_job_spec() -> BackupSpec {
    BackupSpec {
        job_template: Some(JobSpec::default()),
        skip: None,
    }
}

/// A person approves the schema upgrade to `version` and configures the backup.
pub fn approve(spec: &mut OctopusClusterSpec, version: &str) {
    spec.upgrade.approved_version = Some(version.into());
    spec.upgrade.backup = Some(backup_job_spec());
}

pub fn pod(ordinal: u32, version: &str) -> PodView {
    PodView {
        name: pod_name(ordinal),
        ordinal,
        version: Some(version.into()),
        ready: true,
        ..PodView::default()
    }
}

/// A container waiting as the kubelet reports `failure`.
pub fn waiting_on(failure: StartFailure) -> ContainerWaiting {
    let (kubelet_reason, message) = match failure {
        StartFailure::ImagePull => (
            "ImagePullBackOff",
            "Back-off pulling image \"octopusdeploy/octopusdeploy:2024.1.20\"",
        ),
        StartFailure::ContainerConfig => {
            ("CreateContainerConfigError", "secret \"octo-db\" not found")
        }
    };
    ContainerWaiting {
        kubelet_reason: kubelet_reason.into(),
        message: Some(message.into()),
        failure: Some(failure),
    }
}

pub fn node(ordinal: u32, version: &str) -> OctopusNode {
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

pub fn task(id: &str, ordinal: Option<u32>) -> TaskView {
    TaskView {
        id: id.into(),
        name: "Deploy".into(),
        node: ordinal.map(pod_name),
        cancelling: false,
    }
}

/// A steady cluster of `n` nodes, all ready on `version`, as a reconcile observes it.
pub fn steady(version: &str, n: u32) -> Observed {
    let replicas = i32::try_from(n).expect("small");
    Observed {
        name: NAME.into(),
        uid: UID.into(),
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
        // Closed, as the budget is once an upgrade began: a single hand-built decision
        // shows what the operator does next (the simulated world models the budget).
        evictions: Some(Evictions::None),
        backup_job: None,
        backup_history: Vec::new(),
        master_key_copy: false,
        upgrade_slots: UpgradeSlots::default(),
        now: t0(),
    }
}

pub fn state_mut(o: &mut Observed) -> &mut OctopusState {
    match &mut o.octopus {
        OctopusView::Up(state) => state,
        other => panic!("Octopus is not up: {other:?}"),
    }
}

pub fn node_mut<'a>(o: &'a mut Observed, name: &str) -> &'a mut OctopusNode {
    state_mut(o)
        .nodes
        .iter_mut()
        .find(|n| n.name == name)
        .unwrap_or_else(|| panic!("no node {name}"))
}

pub fn pod_mut<'a>(o: &'a mut Observed, name: &str) -> &'a mut PodView {
    o.pods
        .iter_mut()
        .find(|p| p.name == name)
        .unwrap_or_else(|| panic!("no pod {name}"))
}

pub fn unavailable() -> OctopusView {
    OctopusView::Unavailable {
        reason: Reason::OctopusUnauthorized,
        message: "the Octopus API rejected the API key (401)".into(),
    }
}

/// The upgrade record the reconciler writes for `from -> to` on `nodes` nodes, with the
/// first `done` steps done and the next one running.
pub fn upgrade_record(
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
    let steps: Vec<PlannedStep> = plan
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| PlannedStep {
            state: match i.cmp(&done) {
                std::cmp::Ordering::Less => StepState::Done,
                std::cmp::Ordering::Equal => StepState::Running,
                std::cmp::Ordering::Greater => StepState::Pending,
            },
            ..PlannedStep::planned(NAME, *s)
        })
        .collect();
    let upgrade = Upgrade {
        from: from.into(),
        to: to.into(),
        change: plan.change.as_str().into(),
        strategy: plan.strategy,
        // As recorded before attempts existed; `begin` gives new records one.
        attempt: None,
        step: steps.get(done).map(|s| s.kind),
        node: steps.get(done).and_then(|s| s.node.clone()),
        started_at: Some(Time(started)),
        step_started_at: Some(Time(started)),
        finished_at: None,
        replicas: Some(i32::try_from(nodes).expect("small")),
        stopped_reason: None,
        stopped_generation: None,
        held_by: None,
        steps,
    };
    Some(UpgradeStatus::from(&upgrade))
}

/// The recorded upgrade, typed (a test failure when it does not decode).
pub fn typed(up: &UpgradeStatus) -> Upgrade {
    Upgrade::try_from(up).expect("the recorded upgrade decodes")
}

/// The status `record::write` builds from a decision, without the fields only `kubectl`
/// reads (selector, readyNodes), as the resume fixtures hold it.
pub fn record(o: &Observed, d: &Decision) -> OctopusClusterStatus {
    OctopusClusterStatus {
        selector: None,
        ready_nodes: None,
        ..crate::controller::record::status(o, d, None)
    }
}

/// `o` after the reconcile that records a new upgrade's plan, which acts on nothing.
#[track_caller]
pub fn planned(mut o: Observed) -> Observed {
    let d = decide(&o);
    assert!(
        d.action.is_none() && d.statefulset.is_none(),
        "the plan acts before it is recorded: {d:?}"
    );
    o.status = record(&o, &d);
    o
}

// ---------------------------------------------------------------- decision assertions

pub fn cond<'a>(d: &'a Decision, type_: &str) -> &'a CondWant {
    d.conditions
        .iter()
        .find(|c| c.type_ == type_)
        .unwrap_or_else(|| panic!("no {type_} condition in {:?}", d.conditions))
}

#[track_caller]
pub fn assert_cond(d: &Decision, type_: &str, status: bool, reason: &str) {
    let c = cond(d, type_);
    assert_eq!(
        (c.status, c.reason.as_str()),
        (status, reason),
        "{type_}: {c:?}"
    );
}

pub fn want(version: &str, replicas: i32) -> Option<StatefulSetWant> {
    Some(StatefulSetWant {
        version: version.into(),
        replicas,
    })
}

/// The step (and its node) the decision records as under way.
pub fn step_of(d: &Decision) -> (Option<StepKind>, Option<&str>) {
    d.upgrade
        .as_ref()
        .map(|u| (typed(u).step, u.node.as_deref()))
        .unwrap_or((None, None))
}

pub fn drain(ordinal: u32, drained: bool) -> Action {
    let name = pod_name(ordinal);
    Action::SetDrain {
        node_id: node_id(&name),
        node: name,
        drained,
    }
}
