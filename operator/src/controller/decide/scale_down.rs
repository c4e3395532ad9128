//! Scale-down: lowering `spec.replicas` drains the leaving nodes in Octopus, highest ordinal
//! first, and waits for their tasks (`drainTimeout`, `onDrainTimeout`); then lowers the
//! StatefulSet's replicas and waits until their pods are gone; then deletes their records
//! in Octopus, so no offline node lingers there.
//!
//! It is recorded in `status.upgrade` like an upgrade (change `scale-down`, `from` = `to`,
//! no strategy, `replicas` the count it scales to), so it resumes after a kill and a
//! version change waits for it. It comes first when one edit changes both: the leaving
//! nodes never run the new version, and the upgrade then plans for the nodes that stay.

use super::Outcome;
use super::evaluate::{StepCx, octopus_wait};
use super::start::begin;
use crate::controller::model::{Action, Observed, PodView, StatefulSetView, StatefulSetWant};
use crate::controller::reason::Reason;
use crate::controller::safety::{self, Disruption};
use crate::controller::steps::{PlannedStep, StepKind, StepState, Upgrade};
use crate::resources::names;

/// `status.upgrade.change` of a scale-down.
pub(super) const CHANGE: &str = "scale-down";

/// The scale-down from what the StatefulSet runs to `spec.replicas`, on `version` (the
/// template's), when the spec asks for fewer nodes.
pub(super) fn plan(o: &Observed, sts: &StatefulSetView, version: &str) -> Option<Upgrade> {
    let target = o.spec.replicas.max(1);
    if sts.replicas <= target {
        return None;
    }
    let leaving: Vec<String> = (target..sts.replicas)
        .rev()
        .map(|i| names::node(&o.name, i))
        .collect();
    let step = |kind, node: Option<&String>| PlannedStep {
        kind,
        node: node.cloned(),
        state: StepState::Pending,
    };
    // Drain every leaving node first, so their tasks run down together.
    let mut steps: Vec<PlannedStep> = leaving
        .iter()
        .map(|n| step(StepKind::Drain, Some(n)))
        .collect();
    steps.extend(leaving.iter().map(|n| step(StepKind::WaitTasks, Some(n))));
    steps.push(step(StepKind::RemoveNodes, None));
    steps.extend(leaving.iter().map(|n| step(StepKind::ForgetNode, Some(n))));
    Some(begin(
        o,
        (version.to_string(), version.to_string()),
        CHANGE,
        None,
        target,
        steps,
    ))
}

/// The StatefulSet a scale-down wants: every node until `remove-nodes` starts, then
/// `target` (the nodes that stay).
pub(super) fn statefulset(up: &Upgrade, target: i32) -> StatefulSetWant {
    let removing = matches!(
        up.state_of(StepKind::RemoveNodes),
        Some(StepState::Running | StepState::Done)
    );
    let leaving = up
        .steps
        .iter()
        .filter(|s| s.kind == StepKind::Drain)
        .count();
    let replicas = if removing {
        target
    } else {
        target.saturating_add(i32::try_from(leaving).unwrap_or(i32::MAX))
    };
    StatefulSetWant {
        version: up.to.clone(),
        replicas,
    }
}

/// Lowers the StatefulSet once every leaving node is drained and idle (held otherwise);
/// done when their pods are gone.
pub(super) fn remove_nodes(cx: &StepCx<'_>) -> Outcome {
    let o = cx.o;
    let target = u32::try_from(cx.replicas.max(0)).unwrap_or_default();
    let leaving: Vec<&PodView> = o.pods.iter().filter(|p| p.ordinal >= target).collect();
    let applied = o
        .statefulset
        .as_ref()
        .is_some_and(|s| s.replicas <= cx.replicas);
    if !applied {
        for pod in &leaving {
            if let Err(held) = safety::check(o, Disruption::RemoveNode { node: &pod.name }) {
                return Outcome::Held(held);
            }
        }
    }
    if applied && leaving.is_empty() {
        return Outcome::Done;
    }
    let names: Vec<&str> = leaving.iter().map(|p| p.name.as_str()).collect();
    Outcome::Wait {
        reason: Reason::RemovingNodes,
        message: format!(
            "waiting for the StatefulSet to stop {} (scaling to {} node(s))",
            names.join(", "),
            cx.replicas
        ),
        poll: false,
    }
}

/// Deletes the Octopus record of a removed node; done when Octopus has none.
pub(super) fn forget_node(cx: &StepCx<'_>) -> Outcome {
    let name = cx.node();
    let Some(state) = cx.state() else {
        return octopus_wait(cx.o);
    };
    let Some(node) = state.node(name) else {
        return Outcome::Done;
    };
    if cx.pod(name).is_some() {
        // A running server registers itself again: its record goes only with its pod.
        return Outcome::Wait {
            reason: Reason::RemovingNodes,
            message: format!("waiting for pod {name} to be gone before forgetting its node"),
            poll: false,
        };
    }
    Outcome::Act(Action::DeleteNodeRecord {
        node_id: node.id.clone(),
        node: name.to_string(),
    })
}
