//! The StatefulSet of Octopus Server nodes: one pod per node, the pod name being the
//! Octopus node name.
//!
//! Two choices carry the operator's safety rules and must not be "simplified":
//! - `updateStrategy: OnDelete`. A template change (new version) replaces no pod by itself;
//!   the operator deletes a pod only after draining it (patch) or after stopping every node
//!   (schema change). A RollingUpdate would mix versions against one database, which
//!   Octopus says "won't work".
//! - `podManagementPolicy: OrderedReady`. When an empty cluster starts (first install, or
//!   the restart of a stop-the-world upgrade), node 0 must migrate the database schema
//!   alone: Octopus aborts or deadlocks when several nodes upgrade the schema at once. With
//!   OrderedReady node 1 is not created until node 0 is Ready, that is, until the migration
//!   is done. (Parallel would start them all at once.)

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec, StatefulSetUpdateStrategy};
use k8s_openapi::api::core::v1::{
    Affinity, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource,
    ObjectFieldSelector, PodAffinityTerm, PodAntiAffinity, PodSpec, PodTemplateSpec,
    SecretKeySelector, Volume, VolumeMount, WeightedPodAffinityTerm,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::ResourceExt;

use super::{image, labels, names, owned_meta, probes, storage};
use crate::api::{OctopusCluster, PodAntiAffinity as Spread, SecretKeyRef};

/// Seconds a node gets to shut down after SIGTERM. The operator drains a node before it
/// deletes its pod, so this only covers Octopus's own shutdown, not running tasks; it is
/// still well above Octopus's chart (10 s) so the node can deregister cleanly.
pub const TERMINATION_GRACE_PERIOD_SECONDS: i64 = 60;
/// Where Octopus Server writes its own logs inside the container.
pub const SERVER_LOGS_PATH: &str = "/home/octopus/.octopus/OctopusServer/Server/Logs";
/// Upper bound of a node's server logs volume.
pub const SERVER_LOGS_SIZE_LIMIT: &str = "1Gi";

/// Environment variable names of the Octopus Server container.
pub mod env {
    pub const ACCEPT_EULA: &str = "ACCEPT_EULA";
    pub const NODE_NAME: &str = "OCTOPUS_SERVER_NODE_NAME";
    pub const DB_CONNECTION_STRING: &str = "DB_CONNECTION_STRING";
    pub const MASTER_KEY: &str = "MASTER_KEY";
    pub const ADMIN_API_KEY: &str = "ADMIN_API_KEY";
    pub const LICENSE: &str = "OCTOPUS_SERVER_BASE64_LICENSE";
    pub const TASK_CAP: &str = "TASK_CAP";
    pub const DISABLE_DIND: &str = "DISABLE_DIND";
    pub const GRPC_PORT: &str = "OCTOPUS_GRPC_SERVICES_PORT";
}

/// The StatefulSet running `replicas` nodes of `version`.
///
/// `version` and `replicas` are the operator's decision, not necessarily the spec's: during
/// an upgrade the template carries the version being rolled out and replicas may be 0 or 1.
/// The pod template also depends on other spec fields (resources, Secret references, task
/// cap, nodeReadyTimeout); with OnDelete a change there waits, like a version, until the
/// operator replaces the pod. Which pods run which version is told by each pod's
/// [`labels::VERSION_ANNOTATION`].
pub fn build(cluster: &OctopusCluster, version: &str, replicas: i32) -> StatefulSet {
    let name = cluster.name_any();
    StatefulSet {
        metadata: owned_meta(
            cluster,
            names::statefulset(&name),
            labels::common_labels(&name, Some(version)),
        ),
        spec: StatefulSetSpec {
            replicas: Some(replicas),
            service_name: Some(names::headless_service(&name)),
            selector: LabelSelector {
                match_labels: Some(labels::selector_labels(&name)),
                ..LabelSelector::default()
            },
            pod_management_policy: Some("OrderedReady".to_owned()),
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("OnDelete".to_owned()),
                rolling_update: None,
            }),
            template: pod_template(cluster, version),
            ..StatefulSetSpec::default()
        },
        ..StatefulSet::default()
    }
}

fn pod_template(cluster: &OctopusCluster, version: &str) -> PodTemplateSpec {
    let name = cluster.name_any();
    let spec = &cluster.spec;
    let mut volumes = storage::volumes(cluster);
    volumes.push(server_logs_volume());
    let pull_secrets =
        (!spec.image.pull_secrets.is_empty()).then(|| spec.image.pull_secrets.clone());
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(labels::selector_labels(&name)),
            annotations: Some(BTreeMap::from([(
                labels::VERSION_ANNOTATION.to_owned(),
                version.to_owned(),
            )])),
            ..ObjectMeta::default()
        }),
        spec: Some(PodSpec {
            containers: vec![container(cluster, version)],
            image_pull_secrets: pull_secrets,
            termination_grace_period_seconds: Some(TERMINATION_GRACE_PERIOD_SECONDS),
            volumes: Some(volumes),
            affinity: Some(spread_nodes(&name, spec.pod_anti_affinity)),
            // Service links would inject `<SERVICE>_PORT`-style variables; a Service whose
            // name starts with "octopus-server" would produce OCTOPUS_SERVER_* variables,
            // the prefix Octopus reads its own settings from.
            enable_service_links: Some(false),
            // Octopus Server does not call the Kubernetes API; it gets no token.
            automount_service_account_token: Some(false),
            ..PodSpec::default()
        }),
    }
}

fn container(cluster: &OctopusCluster, version: &str) -> Container {
    let spec = &cluster.spec;
    let mut volume_mounts = storage::volume_mounts();
    volume_mounts.push(VolumeMount {
        name: names::SERVER_LOGS_VOLUME.to_owned(),
        mount_path: SERVER_LOGS_PATH.to_owned(),
        ..VolumeMount::default()
    });
    let node_ready_timeout = std::time::Duration::from(spec.upgrade.node_ready_timeout);
    Container {
        name: names::CONTAINER.to_owned(),
        image: Some(image::image_ref(&spec.image, version)),
        image_pull_policy: spec.image.pull_policy.map(|p| p.as_str().to_owned()),
        env: Some(env_vars(cluster)),
        ports: Some(vec![
            port(names::WEB_PORT_NAME, names::WEB_PORT),
            port(names::TENTACLE_PORT_NAME, names::TENTACLE_PORT),
            port(names::GRPC_PORT_NAME, names::GRPC_PORT),
        ]),
        readiness_probe: Some(probes::readiness()),
        liveness_probe: Some(probes::liveness()),
        startup_probe: Some(probes::startup(node_ready_timeout)),
        resources: spec.resources.clone(),
        volume_mounts: Some(volume_mounts),
        // A server that exits with an error (e.g. a database upgrade it aborted) leaves
        // the tail of its log in lastState.terminated.message, where observe reads it.
        termination_message_policy: Some("FallbackToLogsOnError".to_owned()),
        ..Container::default()
    }
}

/// The container's environment. Secrets are passed by reference only: the operator never
/// reads their values into the pod spec.
fn env_vars(cluster: &OctopusCluster) -> Vec<EnvVar> {
    let spec = &cluster.spec;
    let mut vars = vec![
        value(env::ACCEPT_EULA, "Y"),
        EnvVar {
            name: env::NODE_NAME.to_owned(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: "metadata.name".to_owned(),
                    api_version: None,
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        },
        secret(
            env::DB_CONNECTION_STRING,
            &spec.database.connection_string_secret_ref,
        ),
        secret(env::MASTER_KEY, &spec.master_key_secret_ref),
        secret(env::ADMIN_API_KEY, &spec.api_key_secret_ref),
    ];
    if let Some(license) = &spec.license_secret_ref {
        vars.push(secret(env::LICENSE, license));
    }
    if let Some(task_cap) = spec.task_cap {
        vars.push(value(env::TASK_CAP, &task_cap.to_string()));
    }
    vars.push(value(env::DISABLE_DIND, "Y"));
    vars.push(value(env::GRPC_PORT, &names::GRPC_PORT.to_string()));
    vars
}

fn value(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.to_owned()),
        ..EnvVar::default()
    }
}

/// An env var read from a Secret key. Not optional: a missing Secret or key keeps the pod
/// from starting rather than starting Octopus without it.
pub(crate) fn secret(name: &str, source: &SecretKeyRef) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: source.name.clone(),
                key: source.key.clone(),
                optional: None,
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

fn port(name: &str, number: i32) -> ContainerPort {
    ContainerPort {
        name: Some(name.to_owned()),
        container_port: number,
        protocol: Some("TCP".to_owned()),
        ..ContainerPort::default()
    }
}

/// Server logs live on an emptyDir, not a volumeClaimTemplate:
/// - volumeClaimTemplates of a StatefulSet are immutable, so a later change would mean
///   deleting the StatefulSet, and they leave a claim per node behind on every scale-down;
/// - an emptyDir survives container restarts (a liveness kill, a crash loop), when the logs
///   matter most; it is lost only when the operator replaces the pod on purpose, after
///   draining it.
fn server_logs_volume() -> Volume {
    Volume {
        name: names::SERVER_LOGS_VOLUME.to_owned(),
        empty_dir: Some(EmptyDirVolumeSource {
            size_limit: Some(Quantity(SERVER_LOGS_SIZE_LIMIT.to_owned())),
            ..EmptyDirVolumeSource::default()
        }),
        ..Volume::default()
    }
}

/// One node per Kubernetes node, so losing a machine costs one Octopus node: preferred by
/// default, so small clusters still schedule; required when the spec asks (pods then stay
/// Pending rather than share a machine).
fn spread_nodes(cluster: &str, policy: Spread) -> Affinity {
    let term = PodAffinityTerm {
        label_selector: Some(LabelSelector {
            match_labels: Some(labels::selector_labels(cluster)),
            ..LabelSelector::default()
        }),
        topology_key: "kubernetes.io/hostname".to_owned(),
        ..PodAffinityTerm::default()
    };
    let anti = match policy {
        Spread::Preferred => PodAntiAffinity {
            preferred_during_scheduling_ignored_during_execution: Some(vec![
                WeightedPodAffinityTerm {
                    weight: 100,
                    pod_affinity_term: term,
                },
            ]),
            ..PodAntiAffinity::default()
        },
        Spread::Required => PodAntiAffinity {
            required_during_scheduling_ignored_during_execution: Some(vec![term]),
            ..PodAntiAffinity::default()
        },
    };
    Affinity {
        pod_anti_affinity: Some(anti),
        ..Affinity::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::PullPolicy;
    use crate::resources::fixtures;
    use k8s_openapi::api::core::v1::{LocalObjectReference, ResourceRequirements};

    fn pod_spec(sts: &StatefulSet) -> &PodSpec {
        sts.spec.template.spec.as_ref().expect("pod spec")
    }

    fn server(sts: &StatefulSet) -> &Container {
        let containers = &pod_spec(sts).containers;
        assert_eq!(containers.len(), 1);
        &containers[0]
    }

    fn env_of<'a>(container: &'a Container, name: &str) -> Option<&'a EnvVar> {
        container.env.as_ref()?.iter().find(|e| e.name == name)
    }

    fn secret_ref(container: &Container, name: &str) -> Option<(String, String)> {
        let var = env_of(container, name)?;
        assert_eq!(var.value, None, "{name} must not carry a value");
        let selector = var.value_from.as_ref()?.secret_key_ref.as_ref()?;
        Some((selector.name.clone(), selector.key.clone()))
    }

    #[test]
    fn statefulset_is_named_after_the_cluster_and_owned_by_it() {
        let sts = build(&fixtures::cluster(), "2024.1.12345", 3);
        assert_eq!(sts.metadata.name.as_deref(), Some("octo"));
        assert_eq!(sts.metadata.namespace.as_deref(), Some(fixtures::NAMESPACE));
        let owners = sts.metadata.owner_references.as_ref().expect("owner refs");
        assert_eq!(owners.len(), 1);
        assert_eq!(owners[0].uid, fixtures::UID);
        assert_eq!(owners[0].controller, Some(true));
        assert_eq!(owners[0].block_owner_deletion, Some(true));
        let labels = sts.metadata.labels.as_ref().expect("labels");
        assert_eq!(labels[labels::VERSION], "2024.1.12345");
    }

    #[test]
    fn statefulset_rolls_nothing_by_itself_and_starts_nodes_in_order() {
        let sts = build(&fixtures::cluster(), "2024.1.12345", 3);
        let spec = &sts.spec;
        assert_eq!(spec.replicas, Some(3));
        assert_eq!(spec.service_name.as_deref(), Some("octo-nodes"));
        assert_eq!(spec.pod_management_policy.as_deref(), Some("OrderedReady"));
        assert_eq!(
            spec.update_strategy
                .as_ref()
                .and_then(|u| u.type_.as_deref()),
            Some("OnDelete")
        );
        assert_eq!(spec.volume_claim_templates, None);
    }

    #[test]
    fn a_failed_server_leaves_its_log_tail_as_the_termination_message() {
        let sts = build(&fixtures::cluster(), "2024.1.12345", 3);
        assert_eq!(
            server(&sts).termination_message_policy.as_deref(),
            Some("FallbackToLogsOnError")
        );
    }

    #[test]
    fn replicas_are_the_operators_not_the_specs() {
        let sts = build(&fixtures::cluster(), "2024.1.12345", 0);
        assert_eq!(sts.spec.replicas, Some(0));
    }

    #[test]
    fn pod_template_is_selected_and_carries_the_version() {
        let sts = build(&fixtures::cluster(), "2024.2.7", 3);
        let spec = &sts.spec;
        let selector = spec.selector.match_labels.clone().expect("match labels");
        assert_eq!(selector, labels::selector_labels("octo"));
        let meta = spec.template.metadata.as_ref().expect("template metadata");
        assert_eq!(meta.labels.as_ref(), Some(&selector));
        assert_eq!(
            meta.annotations
                .as_ref()
                .map(|a| a[labels::VERSION_ANNOTATION].as_str()),
            Some("2024.2.7")
        );
        assert_eq!(
            server(&sts).image.as_deref(),
            Some("octopusdeploy/octopusdeploy:2024.2.7")
        );
    }

    #[test]
    fn selector_does_not_change_with_the_version() {
        let a = build(&fixtures::cluster(), "2024.1.1", 3);
        let b = build(&fixtures::cluster(), "2025.1.1", 3);
        assert_eq!(a.spec.selector, b.spec.selector);
    }

    #[test]
    fn secrets_are_passed_by_reference() {
        let sts = build(&fixtures::cluster(), "2024.1.12345", 3);
        let c = server(&sts);
        assert_eq!(
            secret_ref(c, "DB_CONNECTION_STRING"),
            Some(("db".to_owned(), "connectionString".to_owned()))
        );
        assert_eq!(
            secret_ref(c, "MASTER_KEY"),
            Some(("octo-keys".to_owned(), "masterKey".to_owned()))
        );
        assert_eq!(
            secret_ref(c, "ADMIN_API_KEY"),
            Some(("octo-keys".to_owned(), "apiKey".to_owned()))
        );
        assert!(env_of(c, "OCTOPUS_SERVER_BASE64_LICENSE").is_none());
        assert!(env_of(c, "TASK_CAP").is_none());
    }

    #[test]
    fn fixed_env_and_node_name_from_the_pod() {
        let sts = build(&fixtures::cluster(), "2024.1.12345", 3);
        let c = server(&sts);
        assert_eq!(
            env_of(c, "ACCEPT_EULA").and_then(|e| e.value.as_deref()),
            Some("Y")
        );
        assert_eq!(
            env_of(c, "DISABLE_DIND").and_then(|e| e.value.as_deref()),
            Some("Y")
        );
        assert_eq!(
            env_of(c, "OCTOPUS_GRPC_SERVICES_PORT").and_then(|e| e.value.as_deref()),
            Some("8443")
        );
        let node_name = env_of(c, "OCTOPUS_SERVER_NODE_NAME")
            .and_then(|e| e.value_from.as_ref())
            .and_then(|v| v.field_ref.as_ref())
            .map(|f| f.field_path.as_str());
        assert_eq!(node_name, Some("metadata.name"));
    }

    #[test]
    fn optional_spec_fields_reach_the_container() {
        let mut spec = fixtures::spec();
        spec.license_secret_ref = Some(SecretKeyRef {
            name: "licence".to_owned(),
            key: "base64".to_owned(),
        });
        spec.task_cap = Some(20);
        spec.image.variant = Some("hardened".to_owned());
        spec.image.pull_policy = Some(PullPolicy::IfNotPresent);
        spec.image.pull_secrets = vec![LocalObjectReference {
            name: "registry".to_owned(),
        }];
        let resources = ResourceRequirements {
            limits: Some(BTreeMap::from([(
                "memory".to_owned(),
                Quantity("4Gi".to_owned()),
            )])),
            ..ResourceRequirements::default()
        };
        spec.resources = Some(resources.clone());
        let sts = build(&fixtures::cluster_with(spec), "2024.1.12345", 3);
        let c = server(&sts);
        assert_eq!(
            secret_ref(c, "OCTOPUS_SERVER_BASE64_LICENSE"),
            Some(("licence".to_owned(), "base64".to_owned()))
        );
        assert_eq!(
            env_of(c, "TASK_CAP").and_then(|e| e.value.as_deref()),
            Some("20")
        );
        assert_eq!(
            c.image.as_deref(),
            Some("octopusdeploy/octopusdeploy:2024.1.12345-hardened")
        );
        assert_eq!(c.image_pull_policy.as_deref(), Some("IfNotPresent"));
        assert_eq!(c.resources.as_ref(), Some(&resources));
        assert_eq!(
            pod_spec(&sts).image_pull_secrets,
            Some(vec![LocalObjectReference {
                name: "registry".to_owned()
            }])
        );
    }

    #[test]
    fn no_pull_secrets_means_none_not_empty() {
        let sts = build(&fixtures::cluster(), "2024.1.12345", 3);
        assert_eq!(pod_spec(&sts).image_pull_secrets, None);
        assert_eq!(server(&sts).image_pull_policy, None);
    }

    #[test]
    fn ports_web_tentacle_grpc() {
        let sts = build(&fixtures::cluster(), "2024.1.12345", 3);
        let ports: Vec<_> = server(&sts)
            .ports
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|p| (p.name.unwrap_or_default(), p.container_port))
            .collect();
        assert_eq!(
            ports,
            [
                ("web".to_owned(), 8080),
                ("tentacle".to_owned(), 10943),
                ("grpc".to_owned(), 8443)
            ]
        );
    }

    #[test]
    fn probes_are_set_and_liveness_spares_drained_nodes() {
        let sts = build(&fixtures::cluster(), "2024.1.12345", 3);
        let c = server(&sts);
        assert!(
            c.readiness_probe
                .as_ref()
                .and_then(|p| p.http_get.as_ref())
                .is_some()
        );
        for probe in [&c.liveness_probe, &c.startup_probe] {
            let probe = probe.as_ref().expect("probe");
            assert!(probe.http_get.is_none());
            assert!(probe.exec.is_some());
        }
    }

    #[test]
    fn startup_probe_follows_node_ready_timeout() {
        let mut spec = fixtures::spec();
        spec.upgrade.node_ready_timeout =
            kube::core::Duration::from(std::time::Duration::from_secs(3 * 3600));
        let sts = build(&fixtures::cluster_with(spec), "2024.1.12345", 3);
        let probe = server(&sts).startup_probe.clone().expect("startup probe");
        let allowed = probe.period_seconds.unwrap_or(0) * probe.failure_threshold.unwrap_or(0);
        assert!(allowed >= 3 * 3600, "{allowed}");
    }

    #[test]
    fn shared_volumes_and_server_logs_are_mounted() {
        let sts = build(&fixtures::cluster(), "2024.1.12345", 3);
        let mounts: Vec<_> = server(&sts)
            .volume_mounts
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|m| m.mount_path)
            .collect();
        assert_eq!(
            mounts,
            [
                "/repository",
                "/artifacts",
                "/taskLogs",
                "/eventExports",
                SERVER_LOGS_PATH
            ]
        );
        let volumes = pod_spec(&sts).volumes.clone().unwrap_or_default();
        let claims: Vec<_> = volumes
            .iter()
            .filter_map(|v| v.persistent_volume_claim.as_ref())
            .map(|c| c.claim_name.as_str())
            .collect();
        assert_eq!(
            claims,
            [
                "octo-repository",
                "octo-artifacts",
                "octo-task-logs",
                "octo-event-exports"
            ]
        );
        let logs = volumes
            .iter()
            .find(|v| v.name == names::SERVER_LOGS_VOLUME)
            .expect("server logs volume");
        assert!(logs.empty_dir.is_some());
    }

    #[test]
    fn anti_affinity_is_preferred_unless_the_spec_requires_it() {
        let anti = |sts: &StatefulSet| {
            pod_spec(sts)
                .affinity
                .clone()
                .and_then(|a| a.pod_anti_affinity)
                .expect("pod anti-affinity")
        };
        let preferred = anti(&build(&fixtures::cluster(), "2024.1.12345", 3));
        assert!(
            preferred
                .required_during_scheduling_ignored_during_execution
                .is_none()
        );
        let terms = preferred
            .preferred_during_scheduling_ignored_during_execution
            .expect("preferred");
        assert_eq!(
            terms[0].pod_affinity_term.topology_key,
            "kubernetes.io/hostname"
        );

        let mut spec = fixtures::spec();
        spec.pod_anti_affinity = Spread::Required;
        let required = anti(&build(&fixtures::cluster_with(spec), "2024.1.12345", 3));
        assert!(
            required
                .preferred_during_scheduling_ignored_during_execution
                .is_none()
        );
        let terms = required
            .required_during_scheduling_ignored_during_execution
            .expect("required");
        assert_eq!(terms.len(), 1);
        assert_eq!(terms[0].topology_key, "kubernetes.io/hostname");
        assert_eq!(
            terms[0]
                .label_selector
                .as_ref()
                .and_then(|s| s.match_labels.clone()),
            Some(labels::selector_labels("octo"))
        );
    }

    #[test]
    fn pod_gets_grace_period_and_no_service_links_or_token() {
        let sts = build(&fixtures::cluster(), "2024.1.12345", 3);
        let pod = pod_spec(&sts);
        assert_eq!(pod.termination_grace_period_seconds, Some(60));
        assert_eq!(pod.enable_service_links, Some(false));
        assert_eq!(pod.automount_service_account_token, Some(false));
    }

    #[test]
    fn serialised_statefulset_holds_no_secret_values() {
        // The builder sees only references; make sure nothing turns them into values.
        let sts = build(&fixtures::cluster(), "2024.1.12345", 3);
        let json = serde_json::to_value(&sts).expect("serialises");
        let env = &json["spec"]["template"]["spec"]["containers"][0]["env"];
        for var in env.as_array().expect("env list") {
            if var["valueFrom"]["secretKeyRef"].is_object() {
                assert!(var.get("value").is_none(), "{var}");
            }
        }
    }
}
