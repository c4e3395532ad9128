//! Kubernetes-convention conditions: computed from observation on every reconcile, then
//! merged with the previous ones so `lastTransitionTime` moves only when a status flips.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use super::model::CondWant;

pub const READY: &str = "Ready";
pub const PROGRESSING: &str = "Progressing";
pub const DEGRADED: &str = "Degraded";
pub const UPGRADE_BLOCKED: &str = "UpgradeBlocked";
pub const PAUSED: &str = "Paused";

/// Every condition type, in the order status lists them.
pub const ALL: [&str; 5] = [READY, PROGRESSING, DEGRADED, UPGRADE_BLOCKED, PAUSED];

/// Builds the status conditions from the decided ones, keeping each previous
/// `lastTransitionTime` unless that condition's status changed.
pub fn merge(
    previous: &[Condition],
    wanted: &[CondWant],
    generation: i64,
    now: Timestamp,
) -> Vec<Condition> {
    wanted
        .iter()
        .map(|want| {
            let status = if want.status { "True" } else { "False" };
            let since = previous
                .iter()
                .find(|c| c.type_ == want.type_ && c.status == status)
                .map(|c| c.last_transition_time.clone())
                .unwrap_or(Time(now));
            Condition {
                type_: want.type_.to_string(),
                status: status.to_string(),
                reason: want.reason.as_str().to_string(),
                message: want.message.clone(),
                observed_generation: Some(generation),
                last_transition_time: since,
            }
        })
        .collect()
}

/// The condition of `type_` in `conditions`, when true.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == "True")
}

#[cfg(test)]
mod tests;
