//! Reads everything a decision needs, fresh from the API server and from Octopus, into an
//! [`Observed`]. Reads only: it creates, changes and deletes nothing. Direct reads (not a
//! cache) so a decision never rests on a stale view of pods the operator just replaced.

use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::ResourceExt;
use kube::api::{Api, ListParams};

use super::model::{
    ContainerExit, ContainerWaiting, Evictions, JobView, NodeFacts, Observed, OctopusNode,
    OctopusState, OctopusView, PodView, StartFailure, StatefulSetView, TaskView,
};
use super::reason::Reason;
use super::slots::UpgradeSlots;
use super::steps::{StepKind, Upgrade};
use super::{Context, Error};
use crate::api::{OctopusCluster, SecretKeyRef};
use crate::octopus::{ApiKey, OctopusApi, OctopusEndpoint, TaskQuery, TaskState};
use crate::resources::{disruption, image, labels, names};

/// Secret values the reconcile needs beyond observation. Never logged (Debug redacts).
pub struct Credentials {
    pub api_key: Option<ApiKey>,
    pub ca_bundle: Option<Vec<u8>>,
}

/// What one reconcile read.
pub struct Observation {
    pub observed: Observed,
    /// Per pod (by ordinal): the node's own readiness and the container's last exit.
    pub nodes: Vec<NodeFacts>,
    /// The client of the cluster's API URL, when one could be built and asked.
    pub api: Option<Arc<dyn OctopusApi>>,
}

/// Reads the cluster's world.
pub async fn observe(ctx: &Context, cluster: &OctopusCluster) -> Result<Observation, Error> {
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

    // Before the pods: an eviction the budget let through shows in the pods read after it.
    let evictions = Api::<PodDisruptionBudget>::namespaced(ctx.client.clone(), &ns)
        .get_opt(&names::disruption_budget(&name))
        .await?
        .map(|pdb| Evictions::from_max_unavailable(disruption::max_unavailable(&pdb)));

    let pods = Api::<Pod>::namespaced(ctx.client.clone(), &ns)
        .list(&ListParams::default().labels(&labels::selector_string(&name)))
        .await?;
    let mut seen: Vec<(PodView, NodeFacts)> = pods
        .items
        .iter()
        .filter_map(|p| {
            let view = pod_view(&name, p)?;
            let facts = NodeFacts {
                pod: view.name.clone(),
                serving: None,
            };
            Some((view, facts))
        })
        .collect();
    seen.sort_by_key(|(p, _)| p.ordinal);
    let (pods, mut nodes): (Vec<PodView>, Vec<NodeFacts>) = seen.into_iter().unzip();

    let (octopus, api) = if pods.iter().any(|p| p.ready) {
        match connect(ctx, cluster, &creds) {
            Ok(api) => {
                let mut view = octopus_state(api.as_ref()).await;
                if let OctopusView::Up(state) = &mut view {
                    read_nodes(ctx, cluster, &creds, &pods, &mut nodes, state).await;
                }
                (view, Some(api))
            }
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
                .get_opt(&u.backup_job(&name))
                .await?
                .map(|j| job_view(&j));
            let copy = secrets.get_opt(&u.master_key_copy(&name)).await?.is_some();
            (job, copy)
        }
        _ => (None, false),
    };

    let history = Api::<Job>::namespaced(ctx.client.clone(), &ns)
        .list(&ListParams::default().labels(&labels::as_selector(&labels::backup_labels(&name))))
        .await?
        .items
        .iter()
        .map(job_view)
        .collect();

    let observed = Observed {
        name,
        uid: cluster.uid().unwrap_or_default(),
        generation: cluster.metadata.generation.unwrap_or_default(),
        spec: cluster.spec.clone(),
        status: cluster.status.clone().unwrap_or_default(),
        missing_secrets: missing,
        statefulset: sts,
        pods,
        octopus,
        backup_job,
        backup_history: history,
        master_key_copy,
        evictions,
        // The ledger fills it when the operator caps concurrent upgrades.
        upgrade_slots: UpgradeSlots::default(),
        now: Timestamp::now(),
    };
    Ok(Observation {
        observed,
        nodes,
        api,
    })
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
    ctx.octopus
        .connect(&endpoint(api_url(ctx, cluster), key, creds))
        .map_err(|e| OctopusView::Unavailable {
            reason: Reason::from(&e),
            message: e.to_string(),
        })
}

fn endpoint(url: String, key: ApiKey, creds: &Credentials) -> OctopusEndpoint {
    let endpoint = OctopusEndpoint::new(url, key);
    match &creds.ca_bundle {
        Some(ca) => endpoint.with_ca_bundle(ca.clone()),
        None => endpoint,
    }
}

/// One node's own base URL: `spec.api.nodeUrlTemplate`, else the operator's template,
/// with `{pod}`, `{service}` (the headless Service), `{namespace}` and `{name}` replaced.
pub fn node_url(ctx: &Context, cluster: &OctopusCluster, pod: &str) -> String {
    let name = cluster.name_any();
    cluster
        .spec
        .api
        .as_ref()
        .and_then(|a| a.node_url_template.as_deref())
        .unwrap_or(&ctx.config.node_url_template)
        .replace("{pod}", pod)
        .replace("{service}", &names::headless_service(&name))
        .replace("{namespace}", &cluster.namespace().unwrap_or_default())
        .replace("{name}", &name)
}

/// Asks every ready node at its own address (past the load balancer) for its version
/// (`GET /api`) and readiness (`/api/octopusservernodes/ping`): the version goes to the
/// Octopus node of the same name, the readiness to the pod's facts. A node that does not
/// answer keeps `None`; the decision waits for it.
async fn read_nodes(
    ctx: &Context,
    cluster: &OctopusCluster,
    creds: &Credentials,
    pods: &[PodView],
    facts: &mut [NodeFacts],
    state: &mut OctopusState,
) {
    let Some(key) = &creds.api_key else {
        return;
    };
    let asks = pods.iter().filter(|p| p.ready && !p.terminating).map(|p| {
        let url = node_url(ctx, cluster, &p.name);
        let node = ctx.octopus.connect(&endpoint(url, key.clone(), creds));
        let pod = p.name.clone();
        async move {
            let node = match node {
                Ok(node) => node,
                Err(e) => {
                    tracing::debug!(pod, error = %e, "cannot reach the node's own address");
                    return (pod, None, None);
                }
            };
            let (root, ping) = futures::join!(node.root(), node.ping());
            if let Err(e) = &root {
                tracing::debug!(pod, error = %e, "node's own GET /api failed");
            }
            (
                pod,
                root.ok().map(|r| r.version),
                ping.ok().map(|p| p.is_serving()),
            )
        }
    });
    for (pod, version, serving) in futures::future::join_all(asks).await {
        if let Some(facts) = facts.iter_mut().find(|f| f.pod == pod) {
            facts.serving = serving;
        }
        if let Some(node) = state.nodes.iter_mut().find(|n| n.name == pod) {
            node.version = version;
        }
    }
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
                    // Filled from the node's own root document by `read_nodes`.
                    version: None,
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
    let state = container_status.and_then(|c| c.state.as_ref());
    let waiting = state.and_then(|s| s.waiting.as_ref()).and_then(|w| {
        let kubelet_reason = w.reason.clone()?;
        Some(ContainerWaiting {
            failure: start_failure(&kubelet_reason),
            kubelet_reason,
            message: w.message.clone(),
        })
    });
    let ready_since = status
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready" && c.status == "True"))
        .and_then(|c| c.last_transition_time.as_ref())
        .map(|t| t.0);
    Some(PodView {
        name: name.clone(),
        ordinal,
        version: container.image.as_deref().and_then(image::version_of),
        ready,
        restarts: container_status
            .map(|c| c.restart_count)
            .unwrap_or_default(),
        crash_looping: waiting
            .as_ref()
            .is_some_and(|w| w.kubelet_reason == "CrashLoopBackOff"),
        terminating: pod.metadata.deletion_timestamp.is_some(),
        last_exit: last_exit(pod),
        waiting,
        created_at: pod.metadata.creation_timestamp.as_ref().map(|t| t.0),
        started_at: state
            .and_then(|s| s.running.as_ref())
            .and_then(|r| r.started_at.as_ref())
            .map(|t| t.0),
        ready_since,
    })
}

/// What the kubelet's waiting reason means for a start: an image that cannot be pulled or
/// a container that cannot be created waits forever without a change, so it fails the
/// start at once rather than at nodeReadyTimeout.
fn start_failure(kubelet_reason: &str) -> Option<StartFailure> {
    match kubelet_reason {
        "ErrImagePull" | "ImagePullBackOff" | "InvalidImageName" => Some(StartFailure::ImagePull),
        "CreateContainerConfigError" | "CreateContainerError" => {
            Some(StartFailure::ContainerConfig)
        }
        _ => None,
    }
}

/// The Octopus container's last termination (`lastState.terminated`).
fn last_exit(pod: &Pod) -> Option<ContainerExit> {
    let container = pod.spec.as_ref()?.containers.first()?;
    let terminated = pod
        .status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == container.name)?
        .last_state
        .as_ref()?
        .terminated
        .as_ref()?;
    Some(ContainerExit {
        kubelet_reason: terminated.reason.clone(),
        message: terminated.message.clone(),
        exit_code: terminated.exit_code,
        finished_at: terminated.finished_at.as_ref().map(|f| f.0),
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
        created_at: job.metadata.creation_timestamp.as_ref().map(|t| t.0),
    }
}

#[cfg(test)]
mod tests;
