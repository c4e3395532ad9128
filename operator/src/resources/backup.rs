//! What the operator creates for the backup taken before a schema-changing upgrade: the
//! backup Job (from the user's `upgrade.backup.jobTemplate`) and a copy of the Master Key
//! kept next to it.
//!
//! Octopus says a database backup without its Master Key is useless, and the Master Key
//! Secret the cluster uses may be rotated or deleted with the cluster. So every backup gets
//! its own copy of the key, in a Secret with **no owner reference**: it outlives the
//! cluster, like the backup itself. It is immutable, so a later apply can never overwrite
//! the key that belongs to an existing backup. Remove copies by hand together with the
//! backups they belong to.
//!
//! The Job does carry an owner reference: it is only the process that took the backup.
//!
//! Both are per upgrade *attempt* ([`BackupOf::attempt`]): a retried upgrade of the same
//! versions runs its own Job and keeps its own key copy. The decision core deletes finished
//! Jobs of earlier attempts beyond a bounded history (`controller::decide::history`).

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{Container, EnvVar, PodSpec, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;

use super::statefulset::secret as secret_env;
use super::{labels, names, owned_meta};
use crate::api::OctopusCluster;

/// Environment the operator adds to every container of the backup Job.
pub mod env {
    /// The cluster's database connection string (by secretKeyRef).
    pub const DB_CONNECTION_STRING: &str = "DB_CONNECTION_STRING";
    /// Version the database is at: what the backup holds.
    pub const FROM_VERSION: &str = "OCTOPUS_FROM_VERSION";
    /// Version the upgrade moves to.
    pub const TO_VERSION: &str = "OCTOPUS_TO_VERSION";
    /// A name for the backup, unique per upgrade: the Job's name.
    pub const BACKUP_NAME: &str = "BACKUP_NAME";
}

/// Annotation: the version the database had when it was backed up.
pub const FROM_VERSION_ANNOTATION: &str = "octopusoperator.dev/from-version";
/// Annotation: the version the upgrade moved to.
pub const TO_VERSION_ANNOTATION: &str = "octopusoperator.dev/to-version";
/// Annotation: the upgrade attempt that took the backup (`status.upgrade.attempt`).
pub const ATTEMPT_ANNOTATION: &str = "octopusoperator.dev/attempt";
/// Annotation on a Master Key copy: the backup Job it belongs to.
pub const BACKUP_JOB_ANNOTATION: &str = "octopusoperator.dev/backup-job";
/// Key of the Master Key in its copy.
pub const MASTER_KEY_DATA_KEY: &str = "masterKey";

/// Which backup: the database at `from`, taken for the upgrade to `to` by `attempt`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackupOf<'a> {
    pub from: &'a str,
    pub to: &'a str,
    /// `status.upgrade.attempt`; `None` for upgrades recorded before attempts existed.
    pub attempt: Option<&'a str>,
}

/// The backup Job of `of` ([`names::backup_job`]).
pub fn job_name(cluster: &OctopusCluster, of: BackupOf<'_>) -> String {
    names::backup_job(&cluster.name_any(), of.from, of.to, of.attempt)
}

/// The Master Key copy of the backup `of` ([`names::master_key_copy`]).
pub fn master_key_copy_name(cluster: &OctopusCluster, of: BackupOf<'_>) -> String {
    names::master_key_copy(&cluster.name_any(), of.from, of.to, of.attempt)
}

/// The backup Job: the user's `template` with
/// - the name [`job_name`], the cluster's namespace, an owner reference to the cluster,
///   [`labels::backup_labels`] and the versions and attempt as annotations;
/// - [`labels::backup_labels`] on its pods (over any the user set with the same keys, so a
///   backup pod is never selected as a node);
/// - in every container and init container, DB_CONNECTION_STRING (secretKeyRef),
///   OCTOPUS_FROM_VERSION, OCTOPUS_TO_VERSION and BACKUP_NAME, unless the user set that
///   variable already;
/// - `restartPolicy: Never` and `backoffLimit: 0` unless the user chose otherwise: a backup
///   that fails is a reason to stop and look, not to retry quietly.
pub fn build_job(cluster: &OctopusCluster, template: &JobSpec, of: BackupOf<'_>) -> Job {
    let BackupOf { from, to, .. } = of;
    let cluster_name = cluster.name_any();
    let name = job_name(cluster, of);
    let mut spec = template.clone();

    let pod_meta = spec
        .template
        .metadata
        .get_or_insert_with(ObjectMeta::default);
    pod_meta
        .labels
        .get_or_insert_with(BTreeMap::new)
        .extend(labels::backup_labels(&cluster_name));

    let pod = spec.template.spec.get_or_insert_with(PodSpec::default);
    pod.restart_policy.get_or_insert_with(|| "Never".to_owned());
    let added = [
        secret_env(
            env::DB_CONNECTION_STRING,
            &cluster.spec.database.connection_string_secret_ref,
        ),
        value(env::FROM_VERSION, from),
        value(env::TO_VERSION, to),
        value(env::BACKUP_NAME, &name),
    ];
    let init = pod.init_containers.iter_mut().flatten();
    for container in pod.containers.iter_mut().chain(init) {
        add_missing_env(container, &added);
    }
    spec.backoff_limit.get_or_insert(0);

    let mut metadata = owned_meta(cluster, name, labels::backup_labels(&cluster_name));
    metadata.annotations = Some(version_annotations(of));
    Job {
        metadata,
        spec: Some(spec),
        ..Job::default()
    }
}

/// The copy of the Master Key kept with the backup `of`: an immutable Opaque Secret with
/// the key under `masterKey`, labelled with the cluster, annotated with the backup Job,
/// the versions and the attempt, and without owner reference.
///
/// The key is only in `data`. Note that `Secret`'s `Debug` prints `data`: never log the
/// returned value.
pub fn master_key_copy(cluster: &OctopusCluster, of: BackupOf<'_>, master_key: &[u8]) -> Secret {
    let cluster_name = cluster.name_any();
    let mut annotations = version_annotations(of);
    annotations.insert(BACKUP_JOB_ANNOTATION.to_owned(), job_name(cluster, of));
    Secret {
        metadata: ObjectMeta {
            name: Some(master_key_copy_name(cluster, of)),
            namespace: cluster.namespace(),
            labels: Some(labels::master_key_copy_labels(&cluster_name)),
            annotations: Some(annotations),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".to_owned()),
        immutable: Some(true),
        data: Some(BTreeMap::from([(
            MASTER_KEY_DATA_KEY.to_owned(),
            ByteString(master_key.to_vec()),
        )])),
        ..Secret::default()
    }
}

fn version_annotations(of: BackupOf<'_>) -> BTreeMap<String, String> {
    let mut annotations = BTreeMap::from([
        (FROM_VERSION_ANNOTATION.to_owned(), of.from.to_owned()),
        (TO_VERSION_ANNOTATION.to_owned(), of.to.to_owned()),
    ]);
    if let Some(attempt) = of.attempt {
        annotations.insert(ATTEMPT_ANNOTATION.to_owned(), attempt.to_owned());
    }
    annotations
}

fn add_missing_env(container: &mut Container, added: &[EnvVar]) {
    let env = container.env.get_or_insert_with(Vec::new);
    for var in added {
        if !env.iter().any(|existing| existing.name == var.name) {
            env.push(var.clone());
        }
    }
}

fn value(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.to_owned()),
        ..EnvVar::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::fixtures;
    use k8s_openapi::api::core::v1::PodTemplateSpec;

    const FROM: &str = "2024.1.12345";
    const TO: &str = "2024.2.100";
    const OF: BackupOf<'static> = BackupOf {
        from: FROM,
        to: TO,
        attempt: Some("0123abcd"),
    };

    fn template() -> JobSpec {
        serde_json::from_value(serde_json::json!({
            "template": {
                "metadata": {"labels": {"team": "dba", "app.kubernetes.io/name": "octopus-server"}},
                "spec": {
                    "initContainers": [{"name": "prepare", "image": "busybox"}],
                    "containers": [{
                        "name": "sqlbackup",
                        "image": "mcr.microsoft.com/mssql-tools",
                        "env": [{"name": "BACKUP_NAME", "value": "mine"}]
                    }]
                }
            }
        }))
        .expect("template parses")
    }

    fn env_value<'a>(container: &'a Container, name: &str) -> Option<&'a EnvVar> {
        container.env.as_ref()?.iter().find(|e| e.name == name)
    }

    fn pod(job: &Job) -> &PodSpec {
        job.spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .expect("pod spec")
    }

    #[test]
    fn job_is_named_owned_labelled_and_annotated() {
        let cluster = fixtures::cluster();
        let job = build_job(&cluster, &template(), OF);
        assert_eq!(job.metadata.name, Some(job_name(&cluster, OF)));
        assert_eq!(job.metadata.namespace.as_deref(), Some(fixtures::NAMESPACE));
        let owners = job.metadata.owner_references.as_ref().expect("owner refs");
        assert_eq!(owners[0].uid, fixtures::UID);
        assert_eq!(owners[0].controller, Some(true));
        assert_eq!(job.metadata.labels, Some(labels::backup_labels("octo")));
        let annotations = job.metadata.annotations.as_ref().expect("annotations");
        assert_eq!(annotations[FROM_VERSION_ANNOTATION], FROM);
        assert_eq!(annotations[TO_VERSION_ANNOTATION], TO);
        assert_eq!(annotations[ATTEMPT_ANNOTATION], "0123abcd");
    }

    #[test]
    fn every_container_gets_the_backup_environment() {
        let cluster = fixtures::cluster();
        let job = build_job(&cluster, &template(), OF);
        let pod = pod(&job);
        let init = pod.init_containers.as_ref().expect("init containers");
        for container in pod.containers.iter().chain(init) {
            let db = env_value(container, env::DB_CONNECTION_STRING).expect("DB_CONNECTION_STRING");
            assert_eq!(db.value, None);
            let selector = db
                .value_from
                .as_ref()
                .and_then(|v| v.secret_key_ref.as_ref())
                .expect("secretKeyRef");
            assert_eq!(
                (selector.name.as_str(), selector.key.as_str()),
                ("db", "connectionString")
            );
            assert_eq!(
                env_value(container, env::FROM_VERSION).and_then(|e| e.value.as_deref()),
                Some(FROM)
            );
            assert_eq!(
                env_value(container, env::TO_VERSION).and_then(|e| e.value.as_deref()),
                Some(TO)
            );
        }
        let init_name = env_value(&init[0], env::BACKUP_NAME).and_then(|e| e.value.clone());
        assert_eq!(init_name, Some(job_name(&cluster, OF)));
    }

    #[test]
    fn user_set_variables_win() {
        let job = build_job(&fixtures::cluster(), &template(), OF);
        let main = &pod(&job).containers[0];
        let names: Vec<_> = main
            .env
            .iter()
            .flatten()
            .filter(|e| e.name == env::BACKUP_NAME)
            .map(|e| e.value.as_deref())
            .collect();
        assert_eq!(names, [Some("mine")]);
    }

    #[test]
    fn backup_pods_keep_user_labels_but_are_never_nodes() {
        let job = build_job(&fixtures::cluster(), &template(), OF);
        let pod_labels = job
            .spec
            .as_ref()
            .and_then(|s| s.template.metadata.as_ref())
            .and_then(|m| m.labels.clone())
            .expect("pod labels");
        assert_eq!(pod_labels["team"], "dba");
        assert_eq!(pod_labels[labels::NAME], labels::BACKUP_APP);
        let selector = labels::selector_labels("octo");
        assert!(!selector.iter().all(|(k, v)| pod_labels.get(k) == Some(v)));
    }

    #[test]
    fn restart_policy_and_backoff_default_to_no_retry() {
        let job = build_job(&fixtures::cluster(), &template(), OF);
        assert_eq!(pod(&job).restart_policy.as_deref(), Some("Never"));
        assert_eq!(job.spec.as_ref().and_then(|s| s.backoff_limit), Some(0));
    }

    #[test]
    fn user_restart_policy_and_backoff_are_kept() {
        let mut template = template();
        template.backoff_limit = Some(2);
        if let Some(pod) = template.template.spec.as_mut() {
            pod.restart_policy = Some("OnFailure".to_owned());
        }
        let job = build_job(&fixtures::cluster(), &template, OF);
        assert_eq!(pod(&job).restart_policy.as_deref(), Some("OnFailure"));
        assert_eq!(job.spec.as_ref().and_then(|s| s.backoff_limit), Some(2));
    }

    #[test]
    fn empty_template_still_gets_labels_and_defaults() {
        let template = JobSpec {
            template: PodTemplateSpec::default(),
            ..JobSpec::default()
        };
        let job = build_job(&fixtures::cluster(), &template, OF);
        assert_eq!(pod(&job).restart_policy.as_deref(), Some("Never"));
        assert!(pod(&job).containers.is_empty());
    }

    #[test]
    fn master_key_copy_outlives_the_cluster_and_holds_the_key_only_in_data() {
        let cluster = fixtures::cluster();
        let key = b"s3cr3t-master-key==";
        let secret = master_key_copy(&cluster, OF, key);
        assert_eq!(
            secret.metadata.name,
            Some(master_key_copy_name(&cluster, OF))
        );
        assert_eq!(
            secret.metadata.namespace.as_deref(),
            Some(fixtures::NAMESPACE)
        );
        assert_eq!(secret.metadata.owner_references, None);
        assert_eq!(secret.type_.as_deref(), Some("Opaque"));
        assert_eq!(secret.immutable, Some(true));
        assert_eq!(secret.string_data, None);
        let data = secret.data.as_ref().expect("data");
        assert_eq!(data.len(), 1);
        assert_eq!(data[MASTER_KEY_DATA_KEY], ByteString(key.to_vec()));

        let annotations = secret.metadata.annotations.as_ref().expect("annotations");
        assert_eq!(annotations[BACKUP_JOB_ANNOTATION], job_name(&cluster, OF));
        assert_eq!(annotations[FROM_VERSION_ANNOTATION], FROM);
        assert_eq!(annotations[TO_VERSION_ANNOTATION], TO);
        let labels = secret.metadata.labels.as_ref().expect("labels");
        assert_eq!(labels[labels::INSTANCE], "octo");
        assert_eq!(labels[labels::COMPONENT], labels::COMPONENT_MASTER_KEY);

        let metadata = serde_json::to_string(&secret.metadata).expect("serialises");
        assert!(!metadata.contains("s3cr3t"), "{metadata}");
    }
}
