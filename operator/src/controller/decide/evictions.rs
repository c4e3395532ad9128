//! What the cluster's PodDisruptionBudget lets through: one eviction at a time while the
//! cluster is steady, none while the operator has a node out (an upgrade or a scale-down
//! under way, stopped or paused included) or a node is drained in Octopus. Together with
//! the `EvictionsBlocked` predicate this keeps the roll's guarantee against `kubectl drain`
//! and the cluster autoscaler: never more than one node out of service.

use crate::controller::model::{Decision, Evictions, Observed};

/// The budget to apply with `d`; `None` while the cluster has nothing to protect.
pub(super) fn evictions(o: &Observed, d: &Decision) -> Option<Evictions> {
    if o.statefulset.is_none() && d.statefulset.is_none() {
        return None;
    }
    let under_way = d.upgrade.as_ref().is_some_and(|u| u.finished_at.is_none());
    // A node a person drained in Octopus is out of service as surely as a missing pod.
    let drained = o.octopus.state().is_some_and(|s| {
        s.nodes
            .iter()
            .any(|n| n.drained && o.pods.iter().any(|p| p.name == n.name))
    });
    Some(if under_way || drained {
        Evictions::None
    } else {
        Evictions::One
    })
}
