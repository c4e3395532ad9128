//! Pure builders of the Kubernetes objects an `OctopusCluster` runs on: the StatefulSet of
//! Octopus Server nodes, its PodDisruptionBudget, its headless and client Services, the
//! shared storage claims, the backup Job and the Master Key copy kept next to each backup.
//!
//! Owns the *shape* of those objects and the names and labels they share with the
//! reconciler and the tests ([`names`], [`labels`]). No I/O, no async, no policy: when an
//! object is applied, replaced or deleted is decided by `crate::controller`. The builders
//! only read the cluster's spec and metadata; Secret *values* never pass through them,
//! except the Master Key bytes handed to [`backup::master_key_copy`], which go into the
//! Secret's `data` and nowhere else.
//!
//! Ownership: the StatefulSet, the PodDisruptionBudget, the Services and the backup Job
//! carry a controller owner reference to the cluster, so deleting the cluster
//! garbage-collects them. The storage claims and the Master Key copies carry none on
//! purpose: they outlive the cluster (see [`storage`] and [`backup`]).

pub mod backup;
pub mod disruption;
pub mod image;
pub mod labels;
pub mod names;
pub mod probes;
pub mod service;
pub mod statefulset;
pub mod storage;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};

use crate::api::OctopusCluster;

/// The controller owner reference to `cluster` (controller and blockOwnerDeletion set), so
/// the object is garbage-collected with the cluster and a foreground deletion of the
/// cluster waits for it.
///
/// Empty when the cluster has no name or uid, which happens only for objects that were
/// never read from the API server (the reconciler always has both).
fn owned_by(cluster: &OctopusCluster) -> Option<Vec<OwnerReference>> {
    cluster.controller_owner_ref(&()).map(|owner| {
        vec![OwnerReference {
            block_owner_deletion: Some(true),
            ..owner
        }]
    })
}

/// Metadata of an object named `name` in the cluster's namespace, owned by the cluster.
fn owned_meta(
    cluster: &OctopusCluster,
    name: String,
    labels: std::collections::BTreeMap<String, String>,
) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: cluster.namespace(),
        labels: Some(labels),
        owner_references: owned_by(cluster),
        ..ObjectMeta::default()
    }
}

#[cfg(test)]
pub(crate) mod fixtures {
    //! A cluster as the reconciler sees it: read from the API server, so with a uid.

    use crate::api::{OctopusCluster, OctopusClusterSpec};

    pub(crate) const NAME: &str = "octo";
    pub(crate) const NAMESPACE: &str = "deploy";
    pub(crate) const UID: &str = "6f1c2a3e-0000-4000-8000-000000000001";

    pub(crate) fn spec() -> OctopusClusterSpec {
        serde_json::from_value(serde_json::json!({
            "version": "2024.1.12345",
            "replicas": 3,
            "database": {"connectionStringSecretRef": {"name": "db", "key": "connectionString"}},
            "masterKeySecretRef": {"name": "octo-keys", "key": "masterKey"},
            "apiKeySecretRef": {"name": "octo-keys", "key": "apiKey"},
        }))
        .expect("fixture spec parses")
    }

    pub(crate) fn cluster_with(spec: OctopusClusterSpec) -> OctopusCluster {
        let mut cluster = OctopusCluster::new(NAME, spec);
        cluster.metadata.namespace = Some(NAMESPACE.to_owned());
        cluster.metadata.uid = Some(UID.to_owned());
        cluster
    }

    pub(crate) fn cluster() -> OctopusCluster {
        cluster_with(spec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_reference_is_controller_and_blocks_deletion() {
        let refs = owned_by(&fixtures::cluster()).expect("cluster has a uid");
        assert_eq!(refs.len(), 1);
        let owner = &refs[0];
        assert_eq!(owner.api_version, "octopusoperator.dev/v1alpha1");
        assert_eq!(owner.kind, "OctopusCluster");
        assert_eq!(owner.name, fixtures::NAME);
        assert_eq!(owner.uid, fixtures::UID);
        assert_eq!(owner.controller, Some(true));
        assert_eq!(owner.block_owner_deletion, Some(true));
    }

    #[test]
    fn no_owner_reference_without_uid() {
        let mut cluster = fixtures::cluster();
        cluster.metadata.uid = None;
        assert_eq!(owned_by(&cluster), None);
    }
}
