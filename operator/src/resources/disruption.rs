//! The PodDisruptionBudget of a cluster's Octopus Server pods: how many of them a voluntary
//! eviction (`kubectl drain` of a Kubernetes node, the cluster autoscaler) may take at once.
//! The number is the decision core's ([`crate::controller::model::Evictions`]); this module
//! only shapes the object.
//!
//! `maxUnavailable` counts against the StatefulSet's replicas, so a pod that is missing or
//! not ready already uses the budget up. `unhealthyPodEvictionPolicy: IfHealthyBudget` (the
//! Kubernetes default, written out because it carries a rule): a pod that is not ready —
//! node 0 migrating the database, above all — may only be evicted while the budget holds,
//! which it never does while the operator keeps it at 0.

use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use super::{labels, names, owned_meta};
use crate::api::OctopusCluster;

/// Kubernetes's policy name: unhealthy pods are evicted only while the budget holds.
pub const IF_HEALTHY_BUDGET: &str = "IfHealthyBudget";

/// The budget of `cluster`'s pods: at most `max_unavailable` of them out at once.
pub fn build(cluster: &OctopusCluster, max_unavailable: i32) -> PodDisruptionBudget {
    let name = cluster.name_any();
    PodDisruptionBudget {
        metadata: owned_meta(
            cluster,
            names::disruption_budget(&name),
            labels::common_labels(&name, None),
        ),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(max_unavailable)),
            min_available: None,
            selector: Some(LabelSelector {
                match_labels: Some(labels::selector_labels(&name)),
                ..LabelSelector::default()
            }),
            unhealthy_pod_eviction_policy: Some(IF_HEALTHY_BUDGET.to_owned()),
        }),
        status: None,
    }
}

/// The `maxUnavailable` of a budget as read back (an integer; a percentage counts as not
/// the operator's, so as allowing evictions).
pub fn max_unavailable(pdb: &PodDisruptionBudget) -> Option<i32> {
    match pdb.spec.as_ref()?.max_unavailable.as_ref()? {
        IntOrString::Int(n) => Some(*n),
        IntOrString::String(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::fixtures;

    #[test]
    fn budget_selects_the_nodes_and_is_owned_by_the_cluster() {
        let pdb = build(&fixtures::cluster(), 1);
        assert_eq!(pdb.metadata.name.as_deref(), Some("octo"));
        assert_eq!(pdb.metadata.namespace.as_deref(), Some(fixtures::NAMESPACE));
        let owners = pdb.metadata.owner_references.as_ref().expect("owner refs");
        assert_eq!(owners[0].uid, fixtures::UID);
        let spec = pdb.spec.as_ref().expect("spec");
        assert_eq!(
            spec.selector.as_ref().and_then(|s| s.match_labels.clone()),
            Some(labels::selector_labels("octo"))
        );
        assert_eq!(spec.min_available, None);
        assert_eq!(
            spec.unhealthy_pod_eviction_policy.as_deref(),
            Some(IF_HEALTHY_BUDGET)
        );
        assert_eq!(max_unavailable(&pdb), Some(1));
        assert_eq!(max_unavailable(&build(&fixtures::cluster(), 0)), Some(0));
    }
}
