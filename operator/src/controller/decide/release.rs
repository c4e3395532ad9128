//! What deletion releases in Octopus before the cluster goes: what the unfinished upgrade
//! recorded in status may hold. The plan is recorded before its first action, so the record
//! read fresh at deletion covers every action already taken.

use crate::api::OctopusClusterStatus;
use crate::controller::model::{Action, OctopusState};
use crate::controller::steps::{StepState, Upgrade};
use crate::planner::Strategy;

/// The actions that release what the recorded upgrade may hold: server maintenance mode
/// (stop-the-world) and drained nodes it names in a step not yet done (a kill right after
/// a drain can leave the record a step behind). Empty without an unfinished upgrade.
pub fn release(status: &OctopusClusterStatus, state: &OctopusState) -> Vec<Action> {
    let Some(recorded) = status.upgrade.as_ref().filter(|u| u.finished_at.is_none()) else {
        return Vec::new();
    };
    let stop_the_world = recorded.strategy.as_deref().map(str::parse::<Strategy>)
        == Some(Ok(Strategy::StopTheWorld));
    // A record this operator cannot read still names its strategy and node.
    let pending: Vec<String> = Upgrade::try_from(recorded)
        .map(|u| {
            u.steps
                .into_iter()
                .filter(|s| s.state != StepState::Done)
                .filter_map(|s| s.node)
                .collect()
        })
        .unwrap_or_default();
    let mut actions = Vec::new();
    if state.maintenance && stop_the_world {
        actions.push(Action::SetMaintenance(false));
    }
    for node in state.nodes.iter().filter(|n| n.drained) {
        let ours = stop_the_world
            || recorded.node.as_deref() == Some(node.name.as_str())
            || pending.contains(&node.name);
        if ours {
            actions.push(Action::SetDrain {
                node_id: node.id.clone(),
                node: node.name.clone(),
                drained: false,
            });
        }
    }
    actions
}
