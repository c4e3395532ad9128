//! Storage for the shared-volume claims an OctopusCluster's StatefulSet mounts, on a
//! control plane without a provisioner (the real node has none, and no StorageClass).
//!
//! [`provide`] creates one hostPath PersistentVolume per claim the operator will create
//! (`<cluster>-repository`, ...), pre-bound to it by `claimRef`, ReadWriteMany like the
//! claims, `Retain`ed. The PersistentVolume controller binds each claim as soon as the
//! operator creates it. The directories sit in the control plane's run directory
//! (`<run>/volumes/<pv>`, created by kubelet on first mount), so `make cluster-down` /
//! the next fresh `up.sh` removes them with it. [`release`] deletes the volumes (they are
//! cluster-scoped and outlive the test's namespace).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::{
    HostPathVolumeSource, ObjectReference, PersistentVolume, PersistentVolumeSpec,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use octopus_operator::resources::names;
use octopus_operator::resources::storage::{ACCESS_MODE, DEFAULT_SIZE, SharedVolume};

use crate::cluster::TestCluster;

/// Label on every volume [`provide`] creates: the namespace of the claims it is for.
pub const VOLUME_LABEL: &str = "octopus-e2e/claims-namespace";

/// Creates a hostPath PersistentVolume pre-bound to each claim the operator creates for
/// the OctopusCluster `cluster` in `namespace` (default storage spec: 10Gi, no class).
/// Returns the volumes' names.
pub async fn provide(tc: &TestCluster, namespace: &str, cluster: &str) -> Result<Vec<String>> {
    let run_dir = tc
        .kubeconfig()
        .parent()
        .context("the kubeconfig has no directory")?;
    provide_in(tc.client(), run_dir, namespace, cluster).await
}

/// [`provide`] for a control plane given by its client and run directory (the
/// kubeconfig's directory), as the demo has it.
pub async fn provide_in(
    client: kube::Client,
    run_dir: &Path,
    namespace: &str,
    cluster: &str,
) -> Result<Vec<String>> {
    let volumes: Api<PersistentVolume> = Api::all(client);
    let mut created = Vec::new();
    for volume in SharedVolume::ALL {
        let claim = names::claim(cluster, volume);
        let name = format!("{namespace}-{claim}");
        let path = run_dir.join("volumes").join(&name);
        let pv = PersistentVolume {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some(BTreeMap::from([(
                    VOLUME_LABEL.to_owned(),
                    namespace.to_owned(),
                )])),
                ..ObjectMeta::default()
            },
            spec: Some(PersistentVolumeSpec {
                access_modes: Some(vec![ACCESS_MODE.to_owned()]),
                capacity: Some(BTreeMap::from([(
                    "storage".to_owned(),
                    Quantity(DEFAULT_SIZE.to_owned()),
                )])),
                // Pre-bound: only this claim may take it.
                claim_ref: Some(ObjectReference {
                    namespace: Some(namespace.to_owned()),
                    name: Some(claim),
                    ..ObjectReference::default()
                }),
                host_path: Some(HostPathVolumeSource {
                    path: path.to_string_lossy().into_owned(),
                    type_: Some("DirectoryOrCreate".to_owned()),
                }),
                persistent_volume_reclaim_policy: Some("Retain".to_owned()),
                // The claims name no class and the cluster has no default one.
                storage_class_name: Some(String::new()),
                ..PersistentVolumeSpec::default()
            }),
            ..PersistentVolume::default()
        };
        volumes.create(&PostParams::default(), &pv).await?;
        created.push(name);
    }
    Ok(created)
}

/// Deletes the volumes [`provide`] created for `namespace`.
pub async fn release(tc: &TestCluster, namespace: &str) -> Result<()> {
    release_in(tc.client(), namespace).await
}

/// [`release`] through a client.
pub async fn release_in(client: kube::Client, namespace: &str) -> Result<()> {
    let volumes: Api<PersistentVolume> = Api::all(client);
    let selector = format!("{VOLUME_LABEL}={namespace}");
    volumes
        .delete_collection(
            &DeleteParams::default(),
            &kube::api::ListParams::default().labels(&selector),
        )
        .await?;
    Ok(())
}
