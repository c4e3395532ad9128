//! The four shared volumes every Octopus Server node mounts (packages, artifacts, task logs,
//! archived audit events): which claim backs each, the claims the operator creates, and
//! the pod volumes that mount them.
//!
//! The claims the operator creates have **no owner reference**: deleting an
//! `OctopusCluster` keeps them, with the packages, artifacts, task logs and audit exports
//! in them, so a cluster re-created under the same name finds its files again (and a
//! database restore has its files to match). Remove them by hand when the data is no longer
//! wanted. Claims named in `existingClaim` are never created or changed.
//!
//! Created claims are always ReadWriteMany, even for a single node: access modes of a
//! claim are immutable, and `replicas` may grow later, when every node must mount the same
//! files. A storage class that cannot provide ReadWriteMany leaves the claim Pending; a
//! single-node cluster on such storage names a ReadWriteOnce claim in `existingClaim`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimSpec, PersistentVolumeClaimVolumeSource, Volume,
    VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;

use super::{labels, names};
use crate::api::{OctopusCluster, StorageSpec, VolumeSpec};

/// Size of a created claim when the spec gives none.
pub const DEFAULT_SIZE: &str = "10Gi";
/// Access mode of every created claim (see the module doc).
pub const ACCESS_MODE: &str = "ReadWriteMany";

/// One of the shared volumes of an Octopus cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SharedVolume {
    /// Packages of the built-in repository.
    Repository,
    /// Artifacts collected by deployments and runbooks.
    Artifacts,
    /// Task logs.
    TaskLogs,
    /// Archived audit events.
    EventExports,
}

impl SharedVolume {
    /// Every shared volume, in mount order.
    pub const ALL: [SharedVolume; 4] = [
        SharedVolume::Repository,
        SharedVolume::Artifacts,
        SharedVolume::TaskLogs,
        SharedVolume::EventExports,
    ];

    /// Where the Octopus Server container expects it.
    pub fn mount_path(self) -> &'static str {
        match self {
            Self::Repository => "/repository",
            Self::Artifacts => "/artifacts",
            Self::TaskLogs => "/taskLogs",
            Self::EventExports => "/eventExports",
        }
    }

    /// Its name as a pod volume and as the suffix of the created claim.
    pub fn name(self) -> &'static str {
        match self {
            Self::Repository => "repository",
            Self::Artifacts => "artifacts",
            Self::TaskLogs => "task-logs",
            Self::EventExports => "event-exports",
        }
    }

    /// Its part of the storage spec.
    pub fn spec(self, storage: &StorageSpec) -> &VolumeSpec {
        match self {
            Self::Repository => &storage.repository,
            Self::Artifacts => &storage.artifacts,
            Self::TaskLogs => &storage.task_logs,
            Self::EventExports => &storage.event_exports,
        }
    }
}

/// The claim the nodes mount for `volume`: the spec's `existingClaim`, or the one the
/// operator creates ([`names::claim`]).
pub fn claim_name(cluster: &OctopusCluster, volume: SharedVolume) -> String {
    match &volume.spec(&cluster.spec.storage).existing_claim {
        Some(existing) => existing.clone(),
        None => names::claim(&cluster.name_any(), volume),
    }
}

/// The claims the operator creates: one per shared volume without `existingClaim`.
/// ReadWriteMany, `size` (default 10Gi), `storageClassName` from the spec (the cluster
/// default when unset), and no owner reference (see the module doc).
pub fn claims(cluster: &OctopusCluster) -> Vec<PersistentVolumeClaim> {
    let name = cluster.name_any();
    SharedVolume::ALL
        .into_iter()
        .filter_map(|volume| {
            let spec = volume.spec(&cluster.spec.storage);
            if spec.existing_claim.is_some() {
                return None;
            }
            let size = spec
                .size
                .clone()
                .unwrap_or_else(|| Quantity(DEFAULT_SIZE.to_owned()));
            Some(PersistentVolumeClaim {
                metadata: ObjectMeta {
                    name: Some(names::claim(&name, volume)),
                    namespace: cluster.namespace(),
                    labels: Some(labels::storage_labels(&name)),
                    ..ObjectMeta::default()
                },
                spec: Some(PersistentVolumeClaimSpec {
                    access_modes: Some(vec![ACCESS_MODE.to_owned()]),
                    storage_class_name: spec.storage_class_name.clone(),
                    resources: Some(VolumeResourceRequirements {
                        requests: Some(BTreeMap::from([("storage".to_owned(), size)])),
                        ..VolumeResourceRequirements::default()
                    }),
                    ..PersistentVolumeClaimSpec::default()
                }),
                ..PersistentVolumeClaim::default()
            })
        })
        .collect()
}

/// The pod volume for `volume`, backed by [`claim_name`].
pub fn volume(cluster: &OctopusCluster, volume: SharedVolume) -> Volume {
    Volume {
        name: volume.name().to_owned(),
        persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
            claim_name: claim_name(cluster, volume),
            read_only: None,
        }),
        ..Volume::default()
    }
}

/// The pod volumes of all shared volumes.
pub fn volumes(cluster: &OctopusCluster) -> Vec<Volume> {
    SharedVolume::ALL
        .into_iter()
        .map(|shared| volume(cluster, shared))
        .collect()
}

/// The container mounts of all shared volumes.
pub fn volume_mounts() -> Vec<VolumeMount> {
    SharedVolume::ALL
        .into_iter()
        .map(|volume| VolumeMount {
            name: volume.name().to_owned(),
            mount_path: volume.mount_path().to_owned(),
            ..VolumeMount::default()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::fixtures;

    #[test]
    fn default_storage_creates_four_read_write_many_claims_of_10gi() {
        let claims = claims(&fixtures::cluster());
        let names: Vec<_> = claims
            .iter()
            .map(|c| c.metadata.name.clone().unwrap_or_default())
            .collect();
        assert_eq!(
            names,
            [
                "octo-repository",
                "octo-artifacts",
                "octo-task-logs",
                "octo-event-exports"
            ]
        );
        for claim in &claims {
            assert_eq!(
                claim.metadata.namespace.as_deref(),
                Some(fixtures::NAMESPACE)
            );
            let spec = claim.spec.as_ref().expect("claim has a spec");
            assert_eq!(spec.access_modes, Some(vec!["ReadWriteMany".to_owned()]));
            assert_eq!(spec.storage_class_name, None);
            let requests = spec
                .resources
                .as_ref()
                .and_then(|r| r.requests.as_ref())
                .expect("claim requests storage");
            assert_eq!(requests["storage"], Quantity("10Gi".to_owned()));
        }
    }

    #[test]
    fn single_node_clusters_get_read_write_many_too() {
        let mut spec = fixtures::spec();
        spec.replicas = 1;
        for claim in claims(&fixtures::cluster_with(spec)) {
            let modes = claim.spec.and_then(|s| s.access_modes);
            assert_eq!(modes, Some(vec!["ReadWriteMany".to_owned()]));
        }
    }

    #[test]
    fn claims_outlive_the_cluster() {
        for claim in claims(&fixtures::cluster()) {
            assert_eq!(claim.metadata.owner_references, None);
            assert_eq!(
                claim
                    .metadata
                    .labels
                    .as_ref()
                    .map(|l| l[labels::INSTANCE].as_str()),
                Some("octo")
            );
        }
    }

    #[test]
    fn size_and_storage_class_come_from_the_spec() {
        let mut spec = fixtures::spec();
        spec.storage.task_logs = VolumeSpec {
            existing_claim: None,
            storage_class_name: Some("nfs".to_owned()),
            size: Some(Quantity("50Gi".to_owned())),
        };
        let claims = claims(&fixtures::cluster_with(spec));
        let task_logs = claims
            .iter()
            .find(|c| c.metadata.name.as_deref() == Some("octo-task-logs"))
            .and_then(|c| c.spec.as_ref())
            .expect("task log claim");
        assert_eq!(task_logs.storage_class_name.as_deref(), Some("nfs"));
        assert_eq!(
            task_logs
                .resources
                .as_ref()
                .and_then(|r| r.requests.as_ref())
                .map(|r| &r["storage"]),
            Some(&Quantity("50Gi".to_owned()))
        );
    }

    #[test]
    fn existing_claims_are_mounted_and_not_created() {
        let mut spec = fixtures::spec();
        spec.storage.artifacts.existing_claim = Some("shared-artifacts".to_owned());
        let cluster = fixtures::cluster_with(spec);

        let created: Vec<_> = claims(&cluster)
            .into_iter()
            .filter_map(|c| c.metadata.name)
            .collect();
        assert_eq!(created.len(), 3);
        assert!(
            !created.iter().any(|n| n.contains("artifacts")),
            "{created:?}"
        );

        assert_eq!(
            claim_name(&cluster, SharedVolume::Artifacts),
            "shared-artifacts"
        );
        assert_eq!(
            claim_name(&cluster, SharedVolume::Repository),
            "octo-repository"
        );
        let artifacts = volume(&cluster, SharedVolume::Artifacts);
        assert_eq!(artifacts.name, "artifacts");
        assert_eq!(
            artifacts
                .persistent_volume_claim
                .map(|c| c.claim_name)
                .as_deref(),
            Some("shared-artifacts")
        );
    }

    #[test]
    fn every_volume_is_mounted_where_octopus_expects_it() {
        let cluster = fixtures::cluster();
        let mounts: Vec<_> = volume_mounts()
            .into_iter()
            .map(|m| (m.name, m.mount_path))
            .collect();
        assert_eq!(
            mounts,
            [
                ("repository".to_owned(), "/repository".to_owned()),
                ("artifacts".to_owned(), "/artifacts".to_owned()),
                ("task-logs".to_owned(), "/taskLogs".to_owned()),
                ("event-exports".to_owned(), "/eventExports".to_owned()),
            ]
        );
        let volumes: Vec<_> = volumes(&cluster).into_iter().map(|v| v.name).collect();
        assert_eq!(
            volumes,
            ["repository", "artifacts", "task-logs", "event-exports"]
        );
    }
}
