//! Carries out a decision: applies the owned objects (server-side apply, idempotent) and
//! performs the one [`Action`]. Decides nothing; every call here is safe to repeat.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Secret, Service};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::model::{Action, StatefulSetWant};
use super::observe;
use super::{Context, Error};
use crate::api::{FIELD_MANAGER, OctopusCluster, TentacleSpec};
use crate::octopus::{CreateTask, OctopusApi, OctopusError, builtin_tasks};
use crate::resources::{backup, service, statefulset, storage};

/// Applies the StatefulSet, its Services and the storage claims as decided.
pub async fn apply_cluster(
    ctx: &Context,
    cluster: &OctopusCluster,
    want: &StatefulSetWant,
) -> Result<(), Error> {
    let ns = cluster.namespace().unwrap_or_default();
    for claim in storage::claims(cluster) {
        // Claims are created once and never patched: most of their spec is immutable.
        create_if_missing::<PersistentVolumeClaim>(ctx, &ns, &claim).await?;
    }
    apply::<Service>(ctx, &ns, &service::headless(cluster)).await?;
    apply::<Service>(ctx, &ns, &service::client(cluster)).await?;
    apply::<StatefulSet>(
        ctx,
        &ns,
        &statefulset::build(cluster, &want.version, want.replicas),
    )
    .await
}

/// Performs one action.
pub async fn perform(
    ctx: &Context,
    cluster: &OctopusCluster,
    api: Option<&dyn OctopusApi>,
    action: &Action,
) -> Result<(), Error> {
    let ns = cluster.namespace().unwrap_or_default();
    let octopus = || api.ok_or(Error::NoOctopusApi);
    match action {
        Action::SetMaintenance(on) => {
            octopus()?.set_maintenance(*on).await?;
        }
        Action::SetDrain {
            node_id, drained, ..
        } => {
            octopus()?.set_node_drain(node_id, *drained).await?;
        }
        Action::CancelTasks(ids) => {
            for id in ids {
                octopus()?.cancel_task(id).await?;
            }
        }
        Action::DeletePod(name) => {
            let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
            match pods.delete(name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
        Action::CopyMasterKey { from, to, attempt } => {
            let key = observe::secret_value(ctx, &ns, &cluster.spec.master_key_secret_ref)
                .await?
                .ok_or(Error::MasterKeyMissing)?;
            let of = backup::BackupOf {
                from,
                to,
                attempt: attempt.as_deref(),
            };
            let copy = backup::master_key_copy(cluster, of, &key);
            create_if_missing::<Secret>(ctx, &ns, &copy).await?;
        }
        Action::CreateBackupJob { from, to, attempt } => {
            let template = cluster
                .spec
                .upgrade
                .backup
                .as_ref()
                .and_then(|b| b.job_template.as_ref())
                .ok_or(Error::BackupNotConfigured)?;
            let of = backup::BackupOf {
                from,
                to,
                attempt: attempt.as_deref(),
            };
            let job = backup::build_job(cluster, template, of);
            create_if_missing::<Job>(ctx, &ns, &job).await?;
        }
        Action::DeleteBackupJob(name) => {
            let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
            match jobs.delete(name, &DeleteParams::background()).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
        Action::QueueTentacleTasks { to } => {
            let Some(t) = &cluster.spec.tentacles else {
                return Ok(());
            };
            queue_tentacle_tasks(octopus()?, t, to).await?;
        }
    }
    Ok(())
}

/// Queues Octopus's own Tentacle tasks in the default space, where the environments are:
/// `Upgrade` per environment (EnvironmentId), and one `UpdateCalamari` for the machines
/// of those environments (it takes MachineIds only).
async fn queue_tentacle_tasks(
    octopus: &dyn OctopusApi,
    t: &TentacleSpec,
    to: &str,
) -> Result<(), Error> {
    let space = octopus
        .default_space()
        .await?
        .ok_or_else(|| OctopusError::NotFound {
            route: "GET /api/spaces".into(),
            message: "Octopus has no default space to queue Tentacle tasks in".into(),
        })?
        .id;
    let description = format!("Requested by octopus-operator after upgrading to {to}");
    if t.upgrade_tentacles {
        for env in &t.environment_ids {
            let task = CreateTask::new(builtin_tasks::UPGRADE, description.clone())
                .argument("EnvironmentId", env.clone())
                .in_space(space.clone());
            octopus.create_task(&task).await?;
        }
    }
    if t.update_calamari {
        let machines: Vec<String> = octopus
            .all_machines(&space, &t.environment_ids)
            .await?
            .into_iter()
            .map(|m| m.id)
            .collect();
        if machines.is_empty() {
            tracing::info!(?t.environment_ids, "no machines to update Calamari on");
        } else {
            let task = CreateTask::new(builtin_tasks::UPDATE_CALAMARI, description)
                .argument("MachineIds", machines)
                .in_space(space);
            octopus.create_task(&task).await?;
        }
    }
    Ok(())
}

/// A namespaced Kubernetes object the operator writes.
trait Owned:
    Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
    + Clone
    + Serialize
    + DeserializeOwned
    + std::fmt::Debug
{
}

impl<K> Owned for K where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Serialize
        + DeserializeOwned
        + std::fmt::Debug
{
}

async fn apply<K: Owned>(ctx: &Context, ns: &str, obj: &K) -> Result<(), Error> {
    let api: Api<K> = Api::namespaced(ctx.client.clone(), ns);
    let params = PatchParams::apply(FIELD_MANAGER).force();
    api.patch(&obj.name_any(), &params, &Patch::Apply(obj))
        .await?;
    Ok(())
}

async fn create_if_missing<K: Owned>(ctx: &Context, ns: &str, obj: &K) -> Result<(), Error> {
    let api: Api<K> = Api::namespaced(ctx.client.clone(), ns);
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PostParams::default()
    };
    match api.create(&params, obj).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}
