//! The reconciler: observe -> decide (pure) -> act (one idempotent step) -> record.
//!
//! - [`observe`]: reads the cluster's objects and Octopus's view (reads only).
//! - [`decide`], [`safety`], [`window`], [`conditions`]: the pure decision core, over the
//!   typed steps of [`steps`] and the reasons of [`reason`].
//! - [`act`]: applies owned objects and performs the decided action.
//! - [`record`]: writes status (server-side apply) and Events.
//! - [`slots`] (pure) and [`ledger`]: how many clusters may upgrade at once.
//!
//! The spec is never written: GitOps tools own it.

pub mod act;
pub mod conditions;
pub mod decide;
pub mod ledger;
pub mod metrics;
pub mod model;
pub mod observe;
pub mod reason;
pub mod record;
pub mod safety;
pub mod slots;
pub mod steps;
pub mod window;

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::Api;
use kube::runtime::controller::Action as Requeue;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::utils::ResetTimerBackoff;
use kube::runtime::watcher::ExponentialBackoff;
use kube::runtime::{Controller, watcher};
use kube::{Client, ResourceExt};
use tracing::{info, instrument, warn};

use crate::api::OctopusCluster;
use crate::octopus::{CallObserver, OctopusApi, OctopusClient, OctopusEndpoint, OctopusError};
use crate::process::probes::Health;
use crate::resources::labels;
use reason::Reason;

/// Finalizer that releases maintenance mode and drains before the cluster goes.
pub const FINALIZER: &str = "octopusoperator.dev/cleanup";

/// A node's own address: its pod's stable DNS name through the headless Service.
pub const DEFAULT_NODE_URL_TEMPLATE: &str = "http://{pod}.{service}.{namespace}.svc:8080";

/// How long deletion keeps retrying to release Octopus before giving up with an Event.
pub const CLEANUP_GRACE: Duration = Duration::from_secs(300);

/// Operator settings (flags of `octopus-operator run`).
#[derive(Clone, Debug)]
pub struct Config {
    /// Octopus API base URL when spec.api.url is unset; `{name}` and `{namespace}` are
    /// replaced with the cluster's client Service and namespace.
    pub api_url_template: String,
    /// A node's own base URL when spec.api.nodeUrlTemplate is unset; `{pod}`, `{service}`
    /// (the headless Service), `{namespace}` and `{name}` are replaced.
    pub node_url_template: String,
    /// How often to look at Octopus while waiting on it (tasks, versions).
    pub poll_interval: Duration,
    /// Resync when nothing happens.
    pub resync_interval: Duration,
    /// Watch one namespace, or all.
    pub namespace: Option<String>,
    /// At most this many clusters upgrade at once (blast radius); `None`: no cap.
    pub max_concurrent_upgrades: Option<NonZeroU32>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            api_url_template: "http://{name}.{namespace}.svc:8080".into(),
            node_url_template: DEFAULT_NODE_URL_TEMPLATE.into(),
            poll_interval: Duration::from_secs(5),
            resync_interval: Duration::from_secs(300),
            namespace: None,
            max_concurrent_upgrades: None,
        }
    }
}

/// Builds Octopus API clients; tests swap it.
pub trait OctopusConnector: Send + Sync {
    fn connect(&self, endpoint: &OctopusEndpoint) -> Result<Arc<dyn OctopusApi>, OctopusError>;
}

/// The real connector: one reqwest client per endpoint, rebuilt when its key changes.
#[derive(Default)]
pub struct HttpConnector {
    clients: Mutex<HashMap<String, (String, Arc<OctopusClient>)>>,
    observer: Option<Arc<dyn CallObserver>>,
}

impl HttpConnector {
    /// A connector whose clients report every call to `observer` (metrics).
    pub fn observed_by(observer: Arc<dyn CallObserver>) -> Self {
        Self {
            clients: Mutex::default(),
            observer: Some(observer),
        }
    }
}

impl OctopusConnector for HttpConnector {
    fn connect(&self, endpoint: &OctopusEndpoint) -> Result<Arc<dyn OctopusApi>, OctopusError> {
        let key = endpoint.api_key.expose().to_string();
        let mut clients = self
            .clients
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((k, c)) = clients.get(&endpoint.base_url)
            && *k == key
            && endpoint.ca_bundle_pem.is_none()
        {
            return Ok(c.clone());
        }
        let mut client = OctopusClient::new(endpoint)?;
        if let Some(observer) = &self.observer {
            client = client.with_observer(observer.clone());
        }
        let client = Arc::new(client);
        clients.insert(endpoint.base_url.clone(), (key, client.clone()));
        Ok(client)
    }
}

/// Shared state of all reconciles.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub octopus: Arc<dyn OctopusConnector>,
    pub config: Config,
    pub metrics: Arc<metrics::Metrics>,
    /// Who holds an upgrade slot.
    pub ledger: ledger::Ledger,
}

/// Reconcile failures; the variant name is the metric label.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("Octopus API: {0}")]
    Octopus(#[from] OctopusError),
    #[error("no Octopus API client for this action")]
    NoOctopusApi,
    #[error("the Master Key Secret key disappeared before its backup copy was made")]
    MasterKeyMissing,
    #[error("spec.upgrade.backup.jobTemplate is not set")]
    BackupNotConfigured,
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
}

impl Error {
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Kube(_) => "kube",
            Self::Octopus(e) => e.reason(),
            Self::NoOctopusApi => "no_octopus_api",
            Self::MasterKeyMissing => "master_key_missing",
            Self::BackupNotConfigured => "backup_not_configured",
            Self::Finalizer(_) => "finalizer",
        }
    }
}

/// Runs the controller until a shutdown signal.
pub async fn run(client: Client, config: Config, metrics: Arc<metrics::Metrics>) {
    run_with(client, config, metrics, Arc::default()).await;
}

/// [`run`], telling `health` when the OctopusCluster watch cache holds its first list.
pub async fn run_with(
    client: Client,
    config: Config,
    metrics: Arc<metrics::Metrics>,
    health: Arc<Health>,
) {
    let (clusters, stss, jobs, pods, pdbs) = match &config.namespace {
        Some(ns) => (
            Api::<OctopusCluster>::namespaced(client.clone(), ns),
            Api::<StatefulSet>::namespaced(client.clone(), ns),
            Api::<Job>::namespaced(client.clone(), ns),
            Api::<Pod>::namespaced(client.clone(), ns),
            Api::<PodDisruptionBudget>::namespaced(client.clone(), ns),
        ),
        None => (
            Api::<OctopusCluster>::all(client.clone()),
            Api::<StatefulSet>::all(client.clone()),
            Api::<Job>::all(client.clone()),
            Api::<Pod>::all(client.clone()),
            Api::<PodDisruptionBudget>::all(client.clone()),
        ),
    };
    let managed_by = format!("{}={}", labels::MANAGED_BY, labels::MANAGER);
    let managed = watcher::Config::default().labels(&managed_by);
    let controller = Controller::new(clusters, watcher::Config::default().any_semantic());
    let store = controller.store();
    // Clusters woken when an upgrade slot frees.
    let (wake, woken) = futures::channel::mpsc::unbounded();
    let ledger = ledger::Ledger::new(config.max_concurrent_upgrades, store.clone(), wake);
    let ctx = Arc::new(Context {
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: "octopus-operator".into(),
                instance: std::env::var("POD_NAME").ok(),
            },
        ),
        client,
        octopus: Arc::new(HttpConnector::observed_by(metrics.clone())),
        config,
        metrics,
        ledger,
    });
    let synced = async move {
        if store.wait_until_ready().await.is_ok() {
            health.set_synced();
        }
    };
    let running = controller
        .owns(stss, managed.clone())
        .owns(jobs, managed.clone())
        // A budget edited or deleted by hand is put back at once.
        .owns(pdbs, managed.clone())
        .watches(pods, managed, |pod: Pod| {
            let cluster = pod.labels().get(labels::INSTANCE)?.clone();
            Some(ObjectRef::<OctopusCluster>::new(&cluster).within(&pod.namespace()?))
        })
        .reconcile_on(woken)
        .trigger_backoff(trigger_backoff())
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                warn!(error = %e, "reconcile loop");
            }
        });
    futures::future::join(synced, running).await;
}

/// The pause after a watch error. kube-runtime's default pauses every watch at once (one
/// error of any of them sleeps them all), for up to 30 s per error, and forgets only after
/// 120 s without one: after an API server restart each watch's "too old resource version"
/// added another 30 s, and steps that wait for a watch event (a pod Ready, the backup Job
/// done) stalled until the resync (`make trials`, issue 13). Short and soon forgotten
/// instead: a watch's restart is one list call.
fn trigger_backoff() -> ResetTimerBackoff<ExponentialBackoff> {
    let backoff = backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(250))
        .with_max_delay(Duration::from_secs(2))
        .with_factor(2.0)
        .with_jitter()
        .without_max_times();
    ResetTimerBackoff::new(backoff.into(), Duration::from_secs(10))
}

/// One reconcile, wrapped in the finalizer so apply and cleanup are plain functions. Its
/// span names the cluster, so every log line of observe, act and record does too.
#[instrument(skip(cluster, ctx), fields(cluster = %cluster.name_any(), namespace = %cluster.namespace().unwrap_or_default()))]
pub async fn reconcile(cluster: Arc<OctopusCluster>, ctx: Arc<Context>) -> Result<Requeue, Error> {
    let _timer = ctx.metrics.reconcile_timer();
    let ns = cluster.namespace().unwrap_or_default();
    let api: Api<OctopusCluster> = Api::namespaced(ctx.client.clone(), &ns);
    finalizer(&api, FINALIZER, cluster, |event| async {
        match event {
            FinalizerEvent::Apply(c) => apply(&c, &ctx).await,
            FinalizerEvent::Cleanup(c) => cleanup(&c, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

/// Observe, decide, act, record.
async fn apply(cached: &OctopusCluster, ctx: &Context) -> Result<Requeue, Error> {
    // The watch cache may not have seen this operator's last status write yet; deciding on
    // it would replay finished steps. Read the object itself.
    let ns = cached.namespace().unwrap_or_default();
    let fresh = Api::<OctopusCluster>::namespaced(ctx.client.clone(), &ns)
        .get(&cached.name_any())
        .await?;
    let cluster = &fresh;
    let observe::Observation {
        mut observed,
        nodes,
        api,
    } = observe::observe(ctx, cluster).await?;
    // A node that keeps exiting, e.g. on an aborted database upgrade, shows why.
    for pod in &observed.pods {
        if let Some(exit) = &pod.last_exit {
            let serving = nodes
                .iter()
                .find(|n| n.pod == pod.name)
                .and_then(|n| n.serving);
            tracing::debug!(
                pod = %pod.name, serving = ?serving, reason = ?exit.kubelet_reason,
                exit_code = exit.exit_code, message = ?exit.message, "node's last exit"
            );
        }
    }
    let decision = ctx.ledger.decide(cluster, &mut observed, decide::decide);
    let mut failure = None;
    if let Some(evictions) = decision.evictions {
        act::apply_disruption_budget(ctx, cluster, evictions).await?;
    }
    if let Some(want) = &decision.statefulset {
        act::apply_cluster(ctx, cluster, want).await?;
    }
    if let Some(action) = &decision.action {
        info!(cluster = %cluster.name_any(), action = action.name(), "{}", action.describe());
        ctx.metrics.action(action.name());
        if let Err(e) = act::perform(ctx, cluster, api.as_deref(), action).await {
            warn!(cluster = %cluster.name_any(), action = action.name(), error = %e, "action failed");
            failure = Some(e);
        }
    }
    record::write(ctx, cluster, &observed, &decision, failure.as_ref()).await?;
    ctx.ledger.written(cluster);
    if let Some(e) = failure {
        return Err(e);
    }
    Ok(match decision.requeue {
        model::Requeue::Soon => Requeue::requeue(Duration::from_millis(200)),
        model::Requeue::Poll => Requeue::requeue(ctx.config.poll_interval),
        model::Requeue::Idle => Requeue::requeue(ctx.config.resync_interval),
    })
}

/// Before the cluster goes: release what an unfinished upgrade holds in Octopus (server
/// maintenance mode, drained nodes), so the database is not left locked for whoever uses
/// it next. Owned objects then go by garbage collection; storage claims stay.
async fn cleanup(cached: &OctopusCluster, ctx: &Context) -> Result<Requeue, Error> {
    let ns = cached.namespace().unwrap_or_default();
    ctx.metrics.forget_cluster(&ns, &cached.name_any());
    ctx.ledger.forget(cached);
    // The cache may lag the status write that recorded an upgrade a moment ago (its first
    // step, maintenance-on, may already have run): release by the object itself.
    let Some(fresh) = Api::<OctopusCluster>::namespaced(ctx.client.clone(), &ns)
        .get_opt(&cached.name_any())
        .await?
    else {
        return Ok(Requeue::await_change());
    };
    let cluster = &fresh;
    let unfinished = cluster
        .status
        .as_ref()
        .and_then(|s| s.upgrade.as_ref())
        .is_some_and(|u| u.finished_at.is_none());
    if !unfinished {
        return Ok(Requeue::await_change());
    }
    let observe::Observation { observed, api, .. } = observe::observe(ctx, cluster).await?;
    if matches!(observed.octopus, model::OctopusView::NoReadyNode) {
        // No node runs, so nobody can answer; waiting would only delay the deletion.
        record::event(
            ctx,
            cluster,
            true,
            Reason::ReleaseImpossible,
            "No Octopus node runs to release maintenance mode and drained nodes; the database keeps them until an administrator turns them off",
        )
        .await;
        return Ok(Requeue::await_change());
    }
    let result = async {
        let api = api.ok_or(Error::NoOctopusApi)?;
        let state = observed.octopus.state().ok_or(Error::NoOctopusApi)?;
        for action in decide::release(&observed.status, state) {
            act::perform(ctx, cluster, Some(api.as_ref()), &action).await?;
        }
        Ok::<_, Error>(())
    }
    .await;
    match result {
        Ok(()) => {
            record::event(
                ctx,
                cluster,
                false,
                Reason::Released,
                "Released maintenance mode and drained nodes before deletion",
            )
            .await;
            Ok(Requeue::await_change())
        }
        Err(e) => {
            let deleting_for = cluster
                .metadata
                .deletion_timestamp
                .as_ref()
                .map(|t| jiff::Timestamp::now().duration_since(t.0))
                .unwrap_or_default();
            if deleting_for.unsigned_abs() > CLEANUP_GRACE {
                record::event(
                    ctx,
                    cluster,
                    true,
                    Reason::ReleaseAbandoned,
                    &format!("Could not release Octopus maintenance mode / drained nodes ({e}); check Octopus by hand"),
                )
                .await;
                Ok(Requeue::await_change())
            } else {
                Err(e)
            }
        }
    }
}

fn error_policy(cluster: Arc<OctopusCluster>, error: &Error, ctx: Arc<Context>) -> Requeue {
    warn!(cluster = %cluster.name_any(), error = %error, "reconcile failed");
    ctx.metrics.failure(error.metric_label());
    Requeue::requeue(ctx.config.poll_interval.max(Duration::from_secs(1)))
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod trigger_backoff_tests {
    use std::time::Duration;

    #[test]
    fn a_watch_error_pauses_the_watches_for_seconds_not_half_a_minute() {
        let delays: Vec<Duration> = super::trigger_backoff().take(50).collect();
        assert_eq!(delays.len(), 50, "the backoff never gives up");
        // At most the 2 s cap, doubled by jitter at worst.
        assert!(
            delays.iter().all(|d| *d <= Duration::from_secs(4)),
            "{delays:?}"
        );
    }
}
