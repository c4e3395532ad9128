//! A new patch target while a patch roll is under way: the roll is planned again at once,
//! toward the new target, so a node that cannot start on a broken patch is rolled back (or
//! forward to a fixed one) instead of waiting for a roll that never finishes. Patch moves
//! are free both ways; a move to another schema line is not, and waits for the roll to
//! end as before. Like every new plan, it is recorded before its first step runs.

use super::start::begin;
use crate::controller::model::Observed;
use crate::controller::steps::{PlannedStep, StepKind, StepState, Upgrade};
use crate::planner::{self, PlanRequest, Strategy};
use crate::version::OctopusVersion;

/// The roll planned again toward spec.version, when `up` is a rolling upgrade to another
/// patch of the same schema line and the planner allows the move from every version the
/// roll has nodes on. The node out of service goes first, so no second node goes out;
/// nodes already on the new target are done by observation as the walk reaches them.
pub(super) fn replan_roll(o: &Observed, up: &Upgrade) -> Option<Upgrade> {
    if up.strategy != Some(Strategy::Rolling) || o.spec.version == up.to {
        return None;
    }
    let to = OctopusVersion::parse(&o.spec.version).ok()?;
    let was = OctopusVersion::parse(&up.to).ok()?;
    let from = OctopusVersion::parse(&up.from).ok()?;
    if to.schema_line() != was.schema_line() || to.schema_line() != from.schema_line() {
        return None;
    }
    let replicas = up.replicas.unwrap_or(o.spec.replicas);
    let nodes = u32::try_from(replicas.max(1)).unwrap_or(1);
    let allowed = [&from, &was].into_iter().all(|v| {
        planner::plan(&PlanRequest {
            from: v.clone(),
            to: to.clone(),
            nodes,
            approved_major: None,
        })
        .allowed
    });
    if !allowed {
        return None;
    }
    let planned = Strategy::Rolling
        .steps(nodes)
        .into_iter()
        .map(|s| PlannedStep::planned(&o.name, s));
    let out = in_flight(up);
    let (first, rest): (Vec<PlannedStep>, Vec<PlannedStep>) =
        planned.partition(|s| out.is_some() && s.node.as_deref() == out);
    let mut steps: Vec<PlannedStep> = first.into_iter().chain(rest).collect();
    // The follow-ups of the roll it replaces.
    if up.has(StepKind::Tentacles) {
        steps.push(PlannedStep {
            kind: StepKind::Tentacles,
            node: None,
            state: StepState::Pending,
        });
    }
    let change = planner::classify(&was, &to);
    Some(begin(
        o,
        (up.to.clone(), o.spec.version.clone()),
        change.as_str(),
        Some(Strategy::Rolling),
        replicas,
        steps,
    ))
}

/// The node whose steps the roll is in: the node of its first unfinished step.
fn in_flight(up: &Upgrade) -> Option<&str> {
    up.steps
        .iter()
        .find(|s| s.state != StepState::Done)
        .and_then(|s| s.node.as_deref())
}
