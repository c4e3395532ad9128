//! Labels and annotations the operator puts on what it creates.
//!
//! The selector labels pick a cluster's Octopus Server pods and nothing else: they are the
//! StatefulSet selector, the Services' selector, `status.selector` (scale subresource) and
//! the pod template's labels. They never change for the life of a cluster (a StatefulSet
//! selector is immutable), so nothing that varies — the version above all — belongs in
//! them. Everything else the operator creates carries the selector labels plus more
//! (`component`, `version`), except backup pods, which must not look like nodes.

use std::collections::BTreeMap;

/// `app.kubernetes.io/name`: the application.
pub const NAME: &str = "app.kubernetes.io/name";
/// `app.kubernetes.io/instance`: the cluster.
pub const INSTANCE: &str = "app.kubernetes.io/instance";
/// `app.kubernetes.io/managed-by`: the operator.
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// `app.kubernetes.io/component`: what part of the cluster an object is.
pub const COMPONENT: &str = "app.kubernetes.io/component";
/// `app.kubernetes.io/version`: the Octopus version an object runs.
pub const VERSION: &str = "app.kubernetes.io/version";

/// Value of [`NAME`] on Octopus Server objects.
pub const APP: &str = "octopus-server";
/// Value of [`NAME`] on backup Jobs and their pods: deliberately not [`APP`], so a backup
/// pod is never taken for a node by the Services or the scale subresource.
pub const BACKUP_APP: &str = "octopus-backup";
/// Value of [`MANAGED_BY`].
pub const MANAGER: &str = "octopus-operator";

/// [`COMPONENT`] of the StatefulSet and Services.
pub const COMPONENT_SERVER: &str = "server";
/// [`COMPONENT`] of the shared storage claims.
pub const COMPONENT_STORAGE: &str = "storage";
/// [`COMPONENT`] of backup Jobs.
pub const COMPONENT_BACKUP: &str = "backup";
/// [`COMPONENT`] of Master Key copies.
pub const COMPONENT_MASTER_KEY: &str = "master-key-copy";

/// Pod template annotation: the Octopus version the node's pod runs. The reconciler reads
/// it from each pod to know which nodes still run an old version (with updateStrategy
/// OnDelete a pod keeps its template until the operator deletes it).
pub const VERSION_ANNOTATION: &str = "octopusoperator.dev/version";

/// Labels that select the Octopus Server pods of `cluster` (and only those).
pub fn selector_labels(cluster: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (NAME.to_owned(), APP.to_owned()),
        (INSTANCE.to_owned(), cluster.to_owned()),
        (MANAGED_BY.to_owned(), MANAGER.to_owned()),
    ])
}

/// [`selector_labels`] as a label selector string, for `status.selector`.
pub fn selector_string(cluster: &str) -> String {
    as_selector(&selector_labels(cluster))
}

/// Labels as a label selector string (`k=v,k=v`).
pub fn as_selector(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Labels of the StatefulSet and the Services: the selector labels, the component, and the
/// version when the object is tied to one (the StatefulSet; not the Services, which serve
/// whichever version runs).
pub fn common_labels(cluster: &str, version: Option<&str>) -> BTreeMap<String, String> {
    let mut labels = with_component(cluster, COMPONENT_SERVER);
    if let Some(version) = version {
        labels.insert(VERSION.to_owned(), version.to_owned());
    }
    labels
}

/// Labels of the shared storage claims.
pub fn storage_labels(cluster: &str) -> BTreeMap<String, String> {
    with_component(cluster, COMPONENT_STORAGE)
}

/// Labels of Master Key copies.
pub fn master_key_copy_labels(cluster: &str) -> BTreeMap<String, String> {
    with_component(cluster, COMPONENT_MASTER_KEY)
}

/// Labels of backup Jobs and their pods. Same instance and manager as the nodes, but
/// another [`NAME`], so they do not match [`selector_labels`].
pub fn backup_labels(cluster: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (NAME.to_owned(), BACKUP_APP.to_owned()),
        (INSTANCE.to_owned(), cluster.to_owned()),
        (MANAGED_BY.to_owned(), MANAGER.to_owned()),
        (COMPONENT.to_owned(), COMPONENT_BACKUP.to_owned()),
    ])
}

fn with_component(cluster: &str, component: &str) -> BTreeMap<String, String> {
    let mut labels = selector_labels(cluster);
    labels.insert(COMPONENT.to_owned(), component.to_owned());
    labels
}

#[cfg(test)]
mod tests {
    use super::*;

    fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
        selector.iter().all(|(k, v)| labels.get(k) == Some(v))
    }

    #[test]
    fn selector_labels_name_app_cluster_and_manager() {
        let labels = selector_labels("octo");
        assert_eq!(labels.len(), 3);
        assert_eq!(labels[NAME], "octopus-server");
        assert_eq!(labels[INSTANCE], "octo");
        assert_eq!(labels[MANAGED_BY], "octopus-operator");
    }

    #[test]
    fn selector_string_lists_every_selector_label() {
        assert_eq!(
            selector_string("octo"),
            "app.kubernetes.io/instance=octo,app.kubernetes.io/managed-by=octopus-operator,app.kubernetes.io/name=octopus-server"
        );
    }

    #[test]
    fn common_labels_add_version_only_when_given_and_keep_the_selector() {
        let with = common_labels("octo", Some("2024.1.12345"));
        assert_eq!(with[VERSION], "2024.1.12345");
        assert_eq!(with[COMPONENT], "server");
        assert!(selects(&selector_labels("octo"), &with));
        assert!(!common_labels("octo", None).contains_key(VERSION));
    }

    #[test]
    fn backup_pods_are_not_nodes() {
        assert!(!selects(&selector_labels("octo"), &backup_labels("octo")));
    }

    #[test]
    fn other_clusters_are_not_selected() {
        assert!(!selects(
            &selector_labels("octo"),
            &common_labels("other", None)
        ));
    }
}
