//! Reads everything a decision needs, fresh from the API server and from Octopus, into an
//! [`Observed`]. Reads only: it creates, changes and deletes nothing. Direct reads (not a
//! cache) so a decision never rests on a stale view of pods the operator just replaced.

use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::ResourceExt;
use kube::api::{Api, ListParams};

use super::model::{
    JobView, Observed, OctopusNode, OctopusState, OctopusView, PodView, StatefulSetView, TaskView,
};
use super::reason::Reason;
use super::steps::{StepKind, Upgrade};
use super::{Context, Error};
use crate::api::{OctopusCluster, SecretKeyRef};
use crate::octopus::{ApiKey, OctopusApi, OctopusEndpoint, TaskQuery, TaskState};
use crate::resources::{image, labels, names};

/// Secret values the reconcile needs beyond observation. Never logged (Debug redacts).
pub struct Credentials {
    pub api_key: Option<ApiKey>,
    pub ca_bundle: Option<Vec<u8>>,
}

/// Reads the cluster's world.
pub async fn observe(
    ctx: &Context,
    cluster: &OctopusCluster,
) -> Result<(Observed, Option<Arc<dyn OctopusApi>>), Error> {
    let ns = cluster.namespace().unwrap_or_default();
    let name = cluster.name_any();
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let spec = &cluster.spec;

    let mut missing = Vec::new();
    let mut refs: Vec<(SecretUse, &SecretKeyRef)> = vec![
        (
            SecretUse::Database,
            &spec.database.connection_string_secret_ref,
        ),
        (SecretUse::MasterKey, &spec.master_key_secret_ref),
        (SecretUse::ApiKey, &spec.api_key_secret_ref),
    ];
    if let Some(r) = &spec.license_secret_ref {
        refs.push((SecretUse::Licence, r));
    }
    if let Some(r) = spec.api.as_ref().and_then(|a| a.ca_secret_ref.as_ref()) {
        refs.push((SecretUse::CaBundle, r));
    }
    let mut creds = Credentials {
        api_key: None,
        ca_bundle: None,
    };
    for (what, r) in refs {
        match read_key(&secrets, r).await? {
            KeyLookup::Found(bytes) => match what {
                SecretUse::ApiKey => {
                    creds.api_key = Some(ApiKey::new(String::from_utf8_lossy(&bytes)));
                }
                SecretUse::CaBundle => creds.ca_bundle = Some(bytes),
                _ => {}
            },
            KeyLookup::NoSecret => missing.push(format!("{what}: Secret {} not found", r.name)),
            KeyLookup::NoKey => {
                missing.push(format!("{what}: Secret {} has no key {:?}", r.name, r.key));
            }
        }
    }

    let sts = Api::<StatefulSet>::namespaced(ctx.client.clone(), &ns)
        .get_opt(&names::statefulset(&name))
        .await?
        .map(|s| StatefulSetView {
            version: s
                .spec
                .template
                .spec
                .as_ref()
                .and_then(|p| p.containers.first())
                .and_then(|c| c.image.as_deref())
                .and_then(image::version_of),
            replicas: s.spec.replicas.unwrap_or(1),
        });

    let pods = Api::<Pod>::namespaced(ctx.client.clone(), &ns)
        .list(&ListParams::default().labels(&labels::selector_string(&name)))
        .await?;
    let mut pods: Vec<PodView> = pods
        .items
        .iter()
        .filter_map(|p| pod_view(&name, p))
        .collect();
    pods.sort_by_key(|p| p.ordinal);

    let (octopus, api) = if pods.iter().any(|p| p.ready) {
        match connect(ctx, cluster, &creds) {
            Ok(api) => (octopus_state(api.as_ref()).await, Some(api)),
            Err(view) => (view, None),
        }
    } else {
        (OctopusView::NoReadyNode, None)
    };

    // An upgrade whose steps do not decode stops in the decision core: nothing to read.
    let upgrade = cluster
        .status
        .as_ref()
        .and_then(|s| s.upgrade.as_ref())
        .filter(|u| u.finished_at.is_none())
        .and_then(|u| Upgrade::try_from(u).ok());
    let (backup_job, master_key_copy) = match upgrade {
        Some(u) if u.has(StepKind::Backup) => {
            let job = Api::<Job>::namespaced(ctx.client.clone(), &ns)
                .get_opt(&names::backup_job(&name, &u.from, &u.to))
                .await?
                .map(|j| job_view(&j));
            let copy = secrets
                .get_opt(&names::master_key_copy(&name, &u.from, &u.to))
                .await?
                .is_some();
            (job, copy)
        }
        _ => (None, false),
    };

    let observed = Observed {
        name,
        generation: cluster.metadata.generation.unwrap_or_default(),
        spec: cluster.spec.clone(),
        status: cluster.status.clone().unwrap_or_default(),
        missing_secrets: missing,
        statefulset: sts,
        pods,
        octopus,
        backup_job,
        master_key_copy,
        now: Timestamp::now(),
    };
    Ok((observed, api))
}

/// The Octopus API client for this cluster, when one can be built.
pub fn connect(
    ctx: &Context,
    cluster: &OctopusCluster,
    creds: &Credentials,
) -> Result<Arc<dyn OctopusApi>, OctopusView> {
    let Some(key) = creds.api_key.clone() else {
        return Err(OctopusView::Unavailable {
            reason: Reason::SecretNotFound,
            message: "the API key Secret is missing".into(),
        });
    };
    let url = api_url(ctx, cluster);
    let mut endpoint = OctopusEndpoint::new(url, key);
    if let Some(ca) = &creds.ca_bundle {
        endpoint = endpoint.with_ca_bundle(ca.clone());
    }
    ctx.octopus
        .connect(&endpoint)
        .map_err(|e| OctopusView::Unavailable {
            reason: Reason::from(&e),
            message: e.to_string(),
        })
}

/// `spec.api.url`, else the operator's URL template (default: the client Service).
pub fn api_url(ctx: &Context, cluster: &OctopusCluster) -> String {
    if let Some(url) = cluster.spec.api.as_ref().and_then(|a| a.url.clone()) {
        return url;
    }
    ctx.config
        .api_url_template
        .replace("{name}", &names::client_service(&cluster.name_any()))
        .replace("{namespace}", &cluster.namespace().unwrap_or_default())
}

/// Cluster summary, maintenance mode and running tasks, or why they could not be read.
async fn octopus_state(api: &dyn OctopusApi) -> OctopusView {
    let result = async {
        let summary = api.cluster_summary().await?;
        let maintenance = api.maintenance().await?;
        let tasks = api
            .all_tasks(&TaskQuery {
                states: vec![TaskState::Executing, TaskState::Cancelling],
                ..TaskQuery::default()
            })
            .await?;
        Ok::<_, crate::octopus::OctopusError>(OctopusState {
            nodes: summary
                .nodes
                .into_iter()
                .map(|n| OctopusNode {
                    id: n.id,
                    name: n.name,
                    drained: n.is_in_maintenance_mode,
                    offline: n.is_offline,
                    running_tasks: n.running_task_count,
                    version: n.version,
                })
                .collect(),
            maintenance: maintenance.is_in_maintenance_mode,
            running_tasks: tasks
                .into_iter()
                .map(|t| TaskView {
                    cancelling: t.state == TaskState::Cancelling,
                    id: t.id,
                    name: t.name,
                    node: t.server_node,
                })
                .collect(),
        })
    }
    .await;
    match result {
        Ok(state) => OctopusView::Up(state),
        Err(e) => OctopusView::Unavailable {
            reason: Reason::from(&e),
            message: e.to_string(),
        },
    }
}

/// What a referenced Secret key is for (named in conditions, never its value).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SecretUse {
    Database,
    MasterKey,
    ApiKey,
    Licence,
    CaBundle,
}

impl std::fmt::Display for SecretUse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Database => "database connection string",
            Self::MasterKey => "Master Key",
            Self::ApiKey => "API key",
            Self::Licence => "licence",
            Self::CaBundle => "API CA bundle",
        })
    }
}

enum KeyLookup {
    Found(Vec<u8>),
    NoSecret,
    NoKey,
}

async fn read_key(secrets: &Api<Secret>, r: &SecretKeyRef) -> Result<KeyLookup, Error> {
    let Some(secret) = secrets.get_opt(&r.name).await? else {
        return Ok(KeyLookup::NoSecret);
    };
    Ok(secret
        .data
        .as_ref()
        .and_then(|d| d.get(&r.key))
        .map(|b| KeyLookup::Found(b.0.clone()))
        .unwrap_or(KeyLookup::NoKey))
}

/// Reads one key of a Secret (the Master Key for its backup copy).
pub async fn secret_value(
    ctx: &Context,
    ns: &str,
    r: &SecretKeyRef,
) -> Result<Option<Vec<u8>>, Error> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    Ok(match read_key(&secrets, r).await? {
        KeyLookup::Found(b) => Some(b),
        _ => None,
    })
}

fn pod_view(cluster: &str, pod: &Pod) -> Option<PodView> {
    let name = pod.name_any();
    let ordinal = name
        .strip_prefix(cluster)?
        .strip_prefix('-')?
        .parse::<u32>()
        .ok()?;
    let spec = pod.spec.as_ref()?;
    let container = spec.containers.first()?;
    let status = pod.status.as_ref();
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    let container_status = status
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.name == container.name));
    let waiting = container_status
        .and_then(|c| c.state.as_ref())
        .and_then(|s| s.waiting.as_ref())
        .and_then(|w| w.reason.clone());
    Some(PodView {
        name: name.clone(),
        ordinal,
        version: container.image.as_deref().and_then(image::version_of),
        ready,
        restarts: container_status
            .map(|c| c.restart_count)
            .unwrap_or_default(),
        crash_looping: matches!(
            waiting.as_deref(),
            Some(
                "CrashLoopBackOff"
                    | "CreateContainerConfigError"
                    | "ImagePullBackOff"
                    | "ErrImagePull"
            )
        ),
        terminating: pod.metadata.deletion_timestamp.is_some(),
    })
}

fn job_view(job: &Job) -> JobView {
    let conditions = job
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let has = |t: &str| {
        conditions
            .iter()
            .any(|c| c.type_ == t && c.status == "True")
    };
    JobView {
        name: job.name_any(),
        succeeded: has("Complete"),
        failed: has("Failed"),
        completed_at: job
            .status
            .as_ref()
            .and_then(|s| s.completion_time.as_ref())
            .map(|t| t.0),
    }
}
