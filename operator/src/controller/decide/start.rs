//! No upgrade under way: create the cluster, hold it steady, or plan an upgrade and start
//! it once its gates (approval, maintenance window, backup plan) open. Also the guard that
//! keeps pods of a wrong version from ever starting.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::{Progress, Stop, report, restore, run, scale_down};
use crate::api::SchemaUpgradePolicy;
use crate::controller::model::{Decision, Observed, PodView, StatefulSetWant};
use crate::controller::reason::Reason;
use crate::controller::safety::{self, Disruption};
use crate::controller::slots;
use crate::controller::steps::{PlannedStep, StepKind, StepState, Upgrade};
use crate::controller::window;
use crate::planner::{self, PlanRequest, Strategy};
use crate::resources::names;
use crate::version::OctopusVersion;

/// No upgrade under way: create, hold steady, or start one.
pub(super) fn steady_or_start(o: &Observed, mut d: Decision, target: &OctopusVersion) -> Decision {
    let replicas = o.spec.replicas;
    let Some(sts) = &o.statefulset else {
        // Day 1. OrderedReady starts node 0 alone first, so a fresh database gets its
        // schema from one node before the others join.
        let progress: Progress = (
            Reason::Creating,
            format!("creating {replicas} Octopus Server node(s) on {target}"),
        );
        return run_on_target(o, d, target, Some(progress));
    };

    let live: Vec<&PodView> = o.pods.iter().filter(|p| !p.terminating).collect();
    if let Some(stop) = mixed_schema_lines(&live) {
        return report::finish(o, d, None, Some(stop), None);
    }

    // What the cluster runs: the oldest pod version (patch mixes are harmless), else the
    // template; but never below the schema the database is known to be at.
    let pod_versions: Vec<OctopusVersion> = live
        .iter()
        .filter_map(|p| p.version.as_deref())
        .filter_map(|v| OctopusVersion::parse(v).ok())
        .collect();
    let running = pod_versions.iter().min().cloned().or_else(|| {
        sts.version
            .as_deref()
            .and_then(|v| OctopusVersion::parse(v).ok())
    });
    let schema = d
        .schema_version
        .as_deref()
        .and_then(|v| OctopusVersion::parse(v).ok());
    let from = match (running, schema) {
        (Some(r), Some(s)) if s.schema_line() > r.schema_line() => s,
        (Some(r), _) => r,
        (None, Some(s)) => s,
        (None, None) => target.clone(),
    };
    // A template edited below the database's schema is never kept, not even while blocked.
    let (current_template, found) = restore::template_at_least(sts, &from);
    // Fewer replicas: the leaving nodes go first, drained, on what the cluster runs; a
    // version change in the same edit is planned after, for the nodes that stay.
    if let Some(up) = scale_down::plan(o, sts, &current_template) {
        return run::record_plan(o, d, up);
    }
    // Drift within the target's schema line (a pod image or the template edited by hand to
    // another patch) is corrected by an ordinary rolling plan from the drifted version, or,
    // when every pod already runs the target, by applying the template again. Never an
    // empty upgrade: that would be recorded, finished and recreated on every reconcile.
    let from = if from == *target {
        match drifted_patch(&pod_versions, target) {
            Some(drifted) => drifted,
            None => return run_on_target(o, d, target, None),
        }
    } else {
        from
    };

    let plan = planner::plan(&PlanRequest {
        from: from.clone(),
        to: target.clone(),
        nodes: u32::try_from(replicas.max(1)).unwrap_or(1),
        approved_major: o
            .spec
            .upgrade
            .approved_major_version
            .and_then(|m| u64::try_from(m).ok()),
    });
    // While blocked the cluster keeps running (and may scale) on what it runs now.
    let hold = StatefulSetWant {
        version: current_template,
        // A template put back at the database's version starts no node by itself.
        replicas: if found.is_some() {
            sts.replicas
        } else {
            replicas
        },
    };
    let gate = match plan.reason {
        Some(reason) => Some(Stop::new(reason.into(), plan.message.unwrap_or_default())),
        None if plan.strategy == Some(Strategy::StopTheWorld) => {
            schema_upgrade_gate(o, &from, target)
        }
        None => None,
    };
    if let Some(mut stop) = gate {
        d.statefulset = guard_start(o, &hold).ok().map(|()| hold);
        if let Some(found) = found.filter(|_| d.statefulset.is_some()) {
            stop.message = restore::with_found(&stop.message, &found);
        }
        return report::finish(o, d, None, Some(stop), None);
    }
    // Blast radius: only the start waits for a slot, never an upgrade under way.
    if let Some(message) = slots::admit(o.upgrade_slots).message(&format!("{from} -> {target}")) {
        d.statefulset = guard_start(o, &hold).ok().map(|()| hold);
        let wait = (Reason::WaitingForUpgradeSlot, message);
        return report::finish(o, d, None, None, Some(wait));
    }
    let mut steps: Vec<PlannedStep> = plan
        .steps
        .iter()
        .map(|s| PlannedStep::planned(&o.name, *s))
        .collect();
    if o.spec
        .tentacles
        .as_ref()
        .is_some_and(|t| t.upgrade_tentacles || t.update_calamari)
        && moves_server(o, sts.version.as_deref())
    {
        steps.push(PlannedStep {
            kind: StepKind::Tentacles,
            node: None,
            state: StepState::Pending,
        });
    }
    let upgrade = begin(
        o,
        (from.to_string(), target.to_string()),
        plan.change.as_str(),
        plan.strategy,
        replicas,
        steps,
    );
    run::record_plan(o, d, upgrade)
}

/// The highest pod version on the target's schema line other than the target: where a
/// drift correction rolls from when no pod is below the target.
fn drifted_patch(pods: &[OctopusVersion], target: &OctopusVersion) -> Option<OctopusVersion> {
    pods.iter()
        .filter(|v| v.schema_line() == target.schema_line() && *v != target)
        .max()
        .cloned()
}

/// Whether an upgrade to spec.version changes the server version, as opposed to
/// correcting drift: the template does not name it yet, no finished upgrade went to it,
/// and status did not last see every node on it. The Tentacle/Calamari follow-up is
/// queued only then.
fn moves_server(o: &Observed, template: Option<&str>) -> bool {
    let target = Some(o.spec.version.as_str());
    let last_to = o
        .status
        .upgrade
        .as_ref()
        .filter(|u| u.finished_at.is_some())
        .map(|u| u.to.as_str());
    template != target && last_to != target && o.status.current_version.as_deref() != target
}

/// No upgrade needed: the StatefulSet runs the target with the desired nodes, unless
/// that would start pods that must not run.
fn run_on_target(
    o: &Observed,
    mut d: Decision,
    target: &OctopusVersion,
    progress: Option<Progress>,
) -> Decision {
    let want = StatefulSetWant {
        version: target.to_string(),
        replicas: o.spec.replicas,
    };
    match guard_start(o, &want) {
        Ok(()) => {
            d.statefulset = Some(want);
            report::finish(o, d, None, None, progress)
        }
        Err(stop) => report::finish(o, d, None, Some(stop), None),
    }
}

/// Pods on two schema lines outside an upgrade: nobody knows which the database is at.
fn mixed_schema_lines(live: &[&PodView]) -> Option<Stop> {
    let lines: std::collections::BTreeSet<(u64, u64)> = live
        .iter()
        .filter_map(|p| p.version.as_deref())
        .filter_map(|v| OctopusVersion::parse(v).ok())
        .map(|v| v.schema_line())
        .collect();
    if lines.len() <= 1 {
        return None;
    }
    let versions: Vec<String> = live
        .iter()
        .map(|p| format!("{}={}", p.name, p.version.as_deref().unwrap_or("?")))
        .collect();
    Some(Stop::new(
        Reason::MixedSchemaVersions,
        format!(
            "nodes run versions of different database schemas ({}); an old node against a \
             newer schema risks data corruption. The operator takes no step until a person \
             stops the wrong nodes and the spec names the version the database is at",
            versions.join(", ")
        ),
    ))
}

/// A schema-changing upgrade needs a person's approval (or the window) and a backup plan.
fn schema_upgrade_gate(o: &Observed, from: &OctopusVersion, to: &OctopusVersion) -> Option<Stop> {
    let upgrade = &o.spec.upgrade;
    let approved = match upgrade.schema_upgrades {
        SchemaUpgradePolicy::Manual => upgrade.approved_version.as_deref() == Some(&o.spec.version),
        SchemaUpgradePolicy::Automatic => true,
    };
    if !approved {
        return Some(Stop::new(
            Reason::SchemaUpgradeNotApproved,
            format!(
                "{from} -> {to} changes the database schema: every node stops, the database is \
                 backed up, one node migrates it. To approve, set spec.upgrade.approvedVersion: \
                 \"{to}\" (or spec.upgrade.schemaUpgrades: Automatic)"
            ),
        ));
    }
    if upgrade.schema_upgrades == SchemaUpgradePolicy::Automatic
        && upgrade.approved_version.as_deref() != Some(&o.spec.version)
        && let Some(w) = &upgrade.maintenance_window
    {
        match window::is_open(w, o.now) {
            Ok(true) => {}
            Ok(false) => {
                return Some(Stop::new(
                    Reason::OutsideMaintenanceWindow,
                    format!(
                        "{from} -> {to} changes the database schema and waits for the \
                             maintenance window ({:?} {} for {} {}); set \
                             spec.upgrade.approvedVersion: \"{to}\" to start now",
                        w.days, w.start, w.duration, w.time_zone
                    ),
                ));
            }
            Err(e) => return Some(Stop::new(Reason::InvalidSpec, e.to_string())),
        }
    }
    if upgrade.backup.is_none() {
        return Some(Stop::new(
            Reason::BackupNotConfigured,
            format!(
                "{from} -> {to} changes the database schema and can only be undone by restoring \
                 a backup. Set spec.upgrade.backup.jobTemplate (a Job that backs up the \
                 database), or spec.upgrade.backup.skip: true to go on without one"
            ),
        ));
    }
    None
}

/// A new upgrade record, starting now.
pub(super) fn begin(
    o: &Observed,
    (from, to): (String, String),
    change: &str,
    strategy: Option<Strategy>,
    replicas: i32,
    steps: Vec<PlannedStep>,
) -> Upgrade {
    Upgrade {
        // Before any action: every reconcile of this attempt names its backup alike.
        attempt: Some(names::attempt(&o.uid, o.generation, &from, &to)),
        from,
        to,
        change: change.to_string(),
        strategy,
        step: None,
        node: None,
        started_at: Some(Time(o.now)),
        step_started_at: Some(Time(o.now)),
        finished_at: None,
        replicas: Some(replicas),
        stopped_reason: None,
        stopped_generation: None,
        held_by: None,
        steps,
    }
}

/// Stops when the StatefulSet would start pods that must not run.
pub(super) fn guard_start(o: &Observed, want: &StatefulSetWant) -> Result<(), Stop> {
    if want.replicas == 0 {
        return Ok(());
    }
    let Ok(version) = OctopusVersion::parse(&want.version) else {
        return Err(Stop::new(
            Reason::InvalidVersion,
            format!("{:?} is not an Octopus version", want.version),
        ));
    };
    // Pods still on another schema line are fine only if they are the ones the template
    // keeps (same version): the guard is about what *new* pods would run.
    let observed_template = o.statefulset.as_ref().and_then(|s| s.version.clone());
    let new_version = observed_template.as_deref() != Some(want.version.as_str());
    let growing = o
        .statefulset
        .as_ref()
        .is_none_or(|s| want.replicas > s.replicas);
    if !(new_version || growing) {
        return Ok(());
    }
    safety::check(o, Disruption::StartVersion { version: &version })
        .map_err(|held| Stop::new(Reason::UnsafeToStart, held.to_string()))
}
