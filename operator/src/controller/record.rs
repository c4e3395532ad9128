//! Records what a reconcile saw and decided: status via server-side apply (field manager
//! `octopus-operator`, status subresource only) and Events for every step and every stop.
//! Messages come from the decision core; Secret values never reach this module.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::warn;

use super::conditions;
use super::decide;
use super::model::{Decision, Observed};
use super::reason::Reason;
use super::steps::{StepState, Upgrade};
use super::{Context, Error};
use crate::api::{FIELD_MANAGER, NodeStatus, OctopusCluster, OctopusClusterStatus};
use crate::resources::labels;

/// Writes the status the decision implies and publishes the Events it calls for. A
/// status equal to the previous one is not written: in steady state a reconcile writes
/// nothing.
pub async fn write(
    ctx: &Context,
    cluster: &OctopusCluster,
    observed: &Observed,
    decision: &Decision,
    failure: Option<&Error>,
) -> Result<(), Error> {
    let previous = &observed.status;
    let failure = failure.map(ToString::to_string);
    let status = status(observed, decision, failure.as_deref());
    for note in notes(previous, &status, decision) {
        event(ctx, cluster, note.warning, note.reason, &note.text).await;
    }
    let ns = cluster.namespace().unwrap_or_default();
    if status != *previous {
        let api: Api<OctopusCluster> = Api::namespaced(ctx.client.clone(), &ns);
        let patch = json!({
            "apiVersion": OctopusCluster::api_version(&()),
            "kind": OctopusCluster::kind(&()),
            "status": status,
        });
        api.patch_status(
            &cluster.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
    }
    let name = cluster.name_any();
    let metrics = &ctx.metrics;
    metrics.cluster_status(&ns, &name, &observed.spec.version, previous, &status);
    Ok(())
}

/// The status a decision implies; `failure` is the action's error, if it failed.
pub fn status(
    observed: &Observed,
    decision: &Decision,
    failure: Option<&str>,
) -> OctopusClusterStatus {
    let mut wanted = decision.conditions.clone();
    if let (Some(e), Some(p)) = (
        failure,
        wanted
            .iter_mut()
            .find(|c| c.type_ == conditions::PROGRESSING),
    ) {
        p.message = format!("{} (last attempt failed: {e})", p.message);
    }
    OctopusClusterStatus {
        observed_generation: Some(observed.generation),
        current_version: decision.current_version.clone(),
        target_version: decision.target_version.clone(),
        schema_version: decision.schema_version.clone(),
        replicas: i32::try_from(observed.pods.len()).unwrap_or(i32::MAX),
        selector: Some(labels::selector_string(&observed.name)),
        ready_nodes: Some(format!(
            "{}/{}",
            observed.pods.iter().filter(|p| p.ready).count(),
            observed.spec.replicas
        )),
        phase: Some(decide::phase(&wanted)),
        conditions: conditions::merge(
            &observed.status.conditions,
            &wanted,
            observed.generation,
            observed.now,
        ),
        nodes: node_statuses(observed),
        upgrade: decision.upgrade.clone(),
        last_backup: decision.last_backup.clone(),
    }
}

/// Every node as its pod and Octopus report it.
pub fn node_statuses(o: &Observed) -> Vec<NodeStatus> {
    let state = o.octopus.state();
    o.pods
        .iter()
        .map(|p| {
            let node = state.and_then(|s| s.node(&p.name));
            NodeStatus {
                name: p.name.clone(),
                version: p.version.clone(),
                ready: p.ready,
                drained: node.is_some_and(|n| n.drained),
                running_tasks: node
                    .map(|n| i32::try_from(n.running_tasks).unwrap_or(i32::MAX))
                    .unwrap_or_default(),
                offline: node.is_some_and(|n| n.offline),
                restarts: p.restarts,
            }
        })
        .collect()
}

/// One Event to publish on the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    pub warning: bool,
    pub reason: Reason,
    pub text: String,
}

impl Note {
    fn normal(reason: Reason, text: String) -> Self {
        Self {
            warning: false,
            reason,
            text,
        }
    }
}

/// The Events for what changed from `previous` to `next`: an upgrade starting or ending,
/// each step and action, each new stop. None when nothing changed and nothing acts.
pub fn notes(
    previous: &OctopusClusterStatus,
    next: &OctopusClusterStatus,
    decision: &Decision,
) -> Vec<Note> {
    let mut notes = Vec::new();
    let before = previous.upgrade.as_ref();
    if let Some(up) = &next.upgrade {
        let done = Upgrade::try_from(up)
            .map(|u| {
                u.steps
                    .iter()
                    .filter(|s| s.state == StepState::Done)
                    .count()
            })
            .unwrap_or_default();
        let new = before.is_none_or(|b| b.started_at != up.started_at);
        if new && up.started_at.is_some() {
            let note = format!(
                "Upgrading {} -> {} ({} change, {} strategy)",
                up.from,
                up.to,
                up.change,
                up.strategy.as_deref().unwrap_or("no")
            );
            notes.push(Note::normal(Reason::UpgradeStarted, note));
        }
        let moved = before.is_none_or(|b| b.step != up.step || b.node != up.node);
        if let (true, Some(step)) = (moved, &up.step) {
            let note = format!(
                "Step {step}{} ({} of {}) toward {}",
                up.node
                    .as_deref()
                    .map(|n| format!(" {n}"))
                    .unwrap_or_default(),
                done + 1,
                up.steps.len(),
                up.to
            );
            notes.push(Note::normal(Reason::UpgradeStep, note));
        }
        let ended = up.finished_at.is_some() && before.is_none_or(|b| b.finished_at.is_none());
        if ended {
            let note = format!("Every node runs {}", up.to);
            notes.push(Note::normal(Reason::UpgradeSucceeded, note));
        }
    }
    if let Some(action) = &decision.action {
        notes.push(Note::normal(action.reason(), action.describe()));
    }
    if let Some((reason, message)) = &decision.stop {
        let was = previous
            .conditions
            .iter()
            .any(|c| c.status == "True" && c.reason == reason.as_str());
        if !was {
            notes.push(Note {
                warning: true,
                reason: *reason,
                text: message.clone(),
            });
        }
    }
    notes
}

/// Publishes one Event on the cluster; a failure to publish is logged, never fatal.
pub async fn event(
    ctx: &Context,
    cluster: &OctopusCluster,
    warning: bool,
    reason: Reason,
    note: &str,
) {
    let reference: ObjectReference = cluster.object_ref(&());
    let ev = Event {
        type_: if warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: reason.as_str().into(),
        note: Some(truncate(note, 1000)),
        // The recorder folds Events with the same reason and action into one series, so
        // the action carries the specifics (which step, which node).
        action: truncate(note, 120),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&ev, &reference).await {
        warn!(error = %e, reason = reason.as_str(), "could not publish event");
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}
