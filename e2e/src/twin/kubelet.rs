//! The kubelet role: watches Pods and Services on a real API server, feeds Octopus pods
//! (container image matching the pattern) and Services into the model, and publishes the
//! pod status a kubelet would (phase, conditions, containerStatuses, podIP 127.0.0.1).
//!
//! It resolves a container's env as a kubelet does — values, Secret and ConfigMap keys,
//! `envFrom`, field references — and leaves the pod waiting with
//! CreateContainerConfigError when a referenced Secret or key is missing; an image the
//! twin's registry lacks (`TwinHandle::set_missing_images`) leaves it waiting in
//! ErrImagePull / ImagePullBackOff with no container. No scheduler
//! runs: spec.nodeName stays empty. A pod that disappears or gets a deletionTimestamp
//! stops its node process. Watch restarts relist and reconcile idempotently. A pod bound
//! to a node (spec.nodeName set, by the scheduler onto the real node of
//! e2e/controlplane/node.sh) belongs to that node's kubelet and is left alone.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret as KubeSecret, Service};
use kube::api::{Patch, PatchParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::twin::config::ImagePattern;
use crate::twin::model::{
    ConfigError, ContainerState, OctopusEnv, PodRuntimeStatus, PodView, Secret, Shutdown,
};
use crate::twin::server::{SharedWorld, lock};

/// Field manager of the status patches.
pub const FIELD_MANAGER: &str = "octopus-twin-kubelet";

/// Plays kubelet until `shutdown`.
pub async fn run(
    client: Client,
    world: SharedWorld,
    images: ImagePattern,
    namespace: Option<String>,
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    // A twin scoped to one namespace lets scenarios run side by side, each with its own.
    let (pod_api, service_api) = match &namespace {
        Some(ns) => (
            Api::<Pod>::namespaced(client.clone(), ns),
            Api::<Service>::namespaced(client.clone(), ns),
        ),
        None => (
            Api::<Pod>::all(client.clone()),
            Api::<Service>::all(client.clone()),
        ),
    };
    let pods = watcher::watcher(pod_api, watcher::Config::default()).default_backoff();
    let services = watcher::watcher(service_api, watcher::Config::default()).default_backoff();
    futures::pin_mut!(pods, services);
    let mut kubelet = Kubelet {
        client,
        world,
        images,
        known: BTreeMap::new(),
        published: HashMap::new(),
        relisting_pods: None,
        relisting_services: None,
        omit_pod_ip: false,
    };
    let mut publish = tokio::time::interval(every.max(Duration::from_millis(20)));
    publish.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut retry = tokio::time::interval(Duration::from_secs(2));
    loop {
        tokio::select! {
            event = pods.next() => match event {
                Some(Ok(event)) => kubelet.on_pod_event(event).await,
                Some(Err(e)) => tracing::warn!(error = %e, "pod watch failed; retrying"),
                None => break,
            },
            event = services.next() => match event {
                Some(Ok(event)) => kubelet.on_service_event(event),
                Some(Err(e)) => tracing::warn!(error = %e, "service watch failed; retrying"),
                None => break,
            },
            _ = publish.tick() => kubelet.publish().await,
            _ = retry.tick() => kubelet.retry_config_errors().await,
            _ = shutdown.changed() => break,
        }
    }
}

/// An Octopus pod as this kubelet knows it.
struct Known {
    pod: Pod,
    view: PodView,
}

struct Kubelet {
    client: Client,
    world: SharedWorld,
    images: ImagePattern,
    known: BTreeMap<(String, String), Known>,
    /// The status last written per pod uid.
    published: HashMap<String, Value>,
    relisting_pods: Option<BTreeSet<(String, String)>>,
    relisting_services: Option<BTreeSet<(String, String)>>,
    /// Set when the API server refuses podIP on unscheduled pods.
    omit_pod_ip: bool,
}

/// A bound pod deleted with grace 0 is killed (SIGKILL): its server cannot shut down
/// cleanly. The pods this kubelet plays are never bound (spec.nodeName stays empty), and
/// the API server deletes unbound pods at once with grace 0 whatever was asked, so for
/// them that says nothing: they get their grace period (kills come from
/// `TwinHandle::kill_pod` or the `unclean_shutdown` fault).
fn shutdown_of(pod: &Pod) -> Shutdown {
    let bound = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .is_some_and(|n| !n.is_empty());
    if bound && pod.metadata.deletion_grace_period_seconds == Some(0) {
        Shutdown::Killed
    } else {
        Shutdown::Graceful
    }
}

fn key_of<K: ResourceExt>(o: &K) -> (String, String) {
    (o.namespace().unwrap_or_default(), o.name_any())
}

impl Kubelet {
    async fn on_pod_event(&mut self, event: Event<Pod>) {
        match event {
            Event::Init => self.relisting_pods = Some(BTreeSet::new()),
            Event::InitApply(pod) => {
                if let Some(seen) = self.relisting_pods.as_mut() {
                    seen.insert(key_of(&pod));
                }
                self.on_pod(pod).await;
            }
            Event::InitDone => {
                // Pods deleted while the watch was down.
                if let Some(seen) = self.relisting_pods.take() {
                    let gone: Vec<(String, String)> = self
                        .known
                        .keys()
                        .filter(|k| !seen.contains(*k))
                        .cloned()
                        .collect();
                    for (ns, name) in gone {
                        self.forget(&ns, &name, Shutdown::Graceful);
                    }
                }
            }
            Event::Apply(pod) => self.on_pod(pod).await,
            Event::Delete(pod) => {
                let (ns, name) = key_of(&pod);
                self.forget(&ns, &name, shutdown_of(&pod));
            }
        }
    }

    fn forget(&mut self, ns: &str, name: &str, how: Shutdown) {
        if let Some(known) = self.known.remove(&(ns.to_string(), name.to_string())) {
            self.published.remove(&known.view.uid);
        }
        lock(&self.world).stop_pod(ns, name, how, Timestamp::now());
    }

    async fn on_pod(&mut self, pod: Pod) {
        let (ns, name) = key_of(&pod);
        let Some(container) = self.octopus_container(&pod) else {
            if self.known.contains_key(&(ns.clone(), name.clone())) {
                self.forget(&ns, &name, Shutdown::Graceful);
            }
            return;
        };
        if pod.metadata.deletion_timestamp.is_some() {
            self.forget(&ns, &name, shutdown_of(&pod));
            return;
        }
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let image = container.image.clone().unwrap_or_default();
        let labels: BTreeMap<String, String> = pod.labels().clone();
        // Env is immutable: reuse what was resolved unless the container could not be
        // created yet (then the retry tick resolves again).
        let reuse = self
            .known
            .get(&(ns.clone(), name.clone()))
            .and_then(|k| (k.view.uid == uid && k.view.env.is_ok()).then(|| k.view.env.clone()));
        let env = match reuse {
            Some(env) => env,
            None => resolve_env(&self.client, &pod, &container).await,
        };
        let view = PodView {
            namespace: ns.clone(),
            name: name.clone(),
            uid,
            labels,
            image,
            env,
        };
        lock(&self.world).apply_pod(view.clone(), Timestamp::now());
        self.known.insert((ns, name), Known { pod, view });
    }

    /// The container this kubelet plays: the Octopus one of a pod no real node runs.
    fn octopus_container(&self, pod: &Pod) -> Option<Container> {
        let spec = pod.spec.as_ref()?;
        if spec
            .node_name
            .as_deref()
            .is_some_and(|node| !node.is_empty())
        {
            return None;
        }
        spec.containers
            .iter()
            .find(|c| {
                c.image
                    .as_deref()
                    .is_some_and(|image| self.images.matches(image))
            })
            .cloned()
    }

    async fn retry_config_errors(&mut self) {
        let waiting: Vec<Pod> = self
            .known
            .values()
            .filter(|k| k.view.env.is_err())
            .map(|k| k.pod.clone())
            .collect();
        for pod in waiting {
            let (ns, name) = key_of(&pod);
            if let Some(known) = self.known.get_mut(&(ns, name))
                && let Some(container) = pod.spec.as_ref().and_then(|s| {
                    s.containers
                        .iter()
                        .find(|c| c.image.as_deref() == Some(known.view.image.as_str()))
                })
            {
                let env = resolve_env(&self.client, &pod, container).await;
                if env != known.view.env {
                    known.view.env = env;
                    lock(&self.world).apply_pod(known.view.clone(), Timestamp::now());
                }
            }
        }
    }

    fn on_service_event(&mut self, event: Event<Service>) {
        match event {
            Event::Init => self.relisting_services = Some(BTreeSet::new()),
            Event::InitApply(svc) | Event::Apply(svc) => {
                let key = key_of(&svc);
                if let Some(seen) = self.relisting_services.as_mut() {
                    seen.insert(key.clone());
                }
                let selector = svc
                    .spec
                    .as_ref()
                    .and_then(|s| s.selector.clone())
                    .unwrap_or_default();
                lock(&self.world).apply_service(&key.0, &key.1, selector);
            }
            Event::InitDone => {
                if let Some(seen) = self.relisting_services.take() {
                    let mut w = lock(&self.world);
                    for (ns, name) in w.service_names() {
                        if !seen.contains(&(ns.clone(), name.clone())) {
                            w.delete_service(&ns, &name);
                        }
                    }
                }
            }
            Event::Delete(svc) => {
                let (ns, name) = key_of(&svc);
                lock(&self.world).delete_service(&ns, &name);
            }
        }
    }

    /// Writes the status of every Octopus pod whose status changed.
    async fn publish(&mut self) {
        let desired: Vec<(String, String, String, Value)> = {
            let mut w = lock(&self.world);
            w.advance(Timestamp::now());
            self.known
                .iter()
                .filter_map(|((ns, name), known)| {
                    let status = w.pod_status(ns, name)?;
                    let body = status_patch(&known.pod, &known.view, &status, self.omit_pod_ip);
                    Some((ns.clone(), name.clone(), known.view.uid.clone(), body))
                })
                .collect()
        };
        for (ns, name, uid, body) in desired {
            if self.published.get(&uid) == Some(&body) {
                continue;
            }
            let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
            let params = PatchParams::apply(FIELD_MANAGER);
            match api.patch_status(&name, &params, &Patch::Merge(&body)).await {
                Ok(_) => {
                    self.published.insert(uid, body);
                }
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(kube::Error::Api(e)) if e.code == 422 && !self.omit_pod_ip => {
                    tracing::warn!(pod = %format!("{ns}/{name}"), message = %e.message, "pod status refused; retrying without podIP");
                    self.omit_pod_ip = true;
                }
                Err(e) => {
                    tracing::warn!(pod = %format!("{ns}/{name}"), error = %e, "cannot patch pod status");
                }
            }
        }
    }
}

fn time(t: Timestamp) -> String {
    // RFC 3339 with second precision, as Kubernetes serializes metav1.Time.
    let seconds = t.as_second();
    Timestamp::from_second(seconds).unwrap_or(t).to_string()
}

/// The status a kubelet would report for this pod.
fn status_patch(pod: &Pod, view: &PodView, status: &PodRuntimeStatus, omit_pod_ip: bool) -> Value {
    let spec = pod.spec.clone().unwrap_or_default();
    let ready = if status.ready { "True" } else { "False" };
    let not_ready_reason = (!status.ready).then_some("ContainersNotReady");
    let condition = |kind: &str, value: &str, since: Timestamp, reason: Option<&str>| {
        let mut c = json!({"type": kind, "status": value, "lastTransitionTime": time(since), "lastProbeTime": null});
        if let Some(reason) = reason {
            c["reason"] = json!(reason);
        }
        c
    };
    let containers: Vec<Value> = spec
        .containers
        .iter()
        .map(|c| {
            let image = c.image.clone().unwrap_or_default();
            if image == view.image {
                octopus_container_status(&c.name, &image, view, status)
            } else {
                // Sidecars: this kubelet runs them and calls them ready.
                json!({
                    "name": c.name, "image": image, "imageID": "", "ready": true, "started": true,
                    "restartCount": 0, "state": {"running": {"startedAt": time(status.start_time)}},
                    "containerID": format!("twin://{}/{}", view.uid, c.name),
                })
            }
        })
        .collect();
    let init: Vec<Value> = spec
        .init_containers
        .unwrap_or_default()
        .iter()
        .map(|c| {
            json!({
                "name": c.name, "image": c.image.clone().unwrap_or_default(), "imageID": "",
                "ready": true, "restartCount": 0,
                "state": {"terminated": {"exitCode": 0, "reason": "Completed",
                    "startedAt": time(status.start_time), "finishedAt": time(status.start_time)}},
                "containerID": format!("twin://{}/{}", view.uid, c.name),
            })
        })
        .collect();
    let mut body = json!({
        "status": {
            "phase": status.phase,
            "conditions": [
                condition("PodScheduled", "True", status.start_time, None),
                condition("Initialized", "True", status.start_time, None),
                condition("ContainersReady", ready, status.ready_since, not_ready_reason),
                condition("Ready", ready, status.ready_since, not_ready_reason),
            ],
            "startTime": time(status.start_time),
            "containerStatuses": containers,
            "initContainerStatuses": init,
        }
    });
    if !omit_pod_ip {
        body["status"]["hostIP"] = json!("127.0.0.1");
        body["status"]["podIP"] = json!("127.0.0.1");
        body["status"]["podIPs"] = json!([{"ip": "127.0.0.1"}]);
    }
    body
}

fn octopus_container_status(
    name: &str,
    image: &str,
    view: &PodView,
    status: &PodRuntimeStatus,
) -> Value {
    let state = match &status.state {
        ContainerState::Running { started_at } => {
            json!({"running": {"startedAt": time(*started_at)}})
        }
        ContainerState::Waiting { reason, message } => {
            json!({"waiting": {"reason": reason, "message": message}})
        }
    };
    let last_state = match &status.last_termination {
        Some(t) => json!({"terminated": {
            "exitCode": t.exit_code, "reason": t.reason, "message": t.message,
            "startedAt": time(t.started_at), "finishedAt": time(t.finished_at),
        }}),
        None => json!({}),
    };
    let mut container = json!({
        "name": name,
        "image": image,
        "imageID": "",
        "ready": status.ready,
        "started": status.started,
        "restartCount": status.restart_count,
        "state": state,
        "lastState": last_state,
    });
    // A container that was never created (image not pulled, config error) has no id.
    if status.phase != "Pending" {
        container["containerID"] = json!(format!(
            "twin://{}/{}-{}",
            view.uid, name, status.restart_count
        ));
    }
    container
}

/// Resolves the container's environment as the kubelet does before creating it.
async fn resolve_env(
    client: &Client,
    pod: &Pod,
    container: &Container,
) -> Result<OctopusEnv, ConfigError> {
    let ns = pod.namespace().unwrap_or_default();
    let mut sources = Sources {
        client,
        ns: &ns,
        secrets: HashMap::new(),
        config_maps: HashMap::new(),
    };
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    for from in container.env_from.clone().unwrap_or_default() {
        let prefix = from.prefix.clone().unwrap_or_default();
        if let Some(r) = from.secret_ref {
            let optional = r.optional.unwrap_or(false);
            match sources.secret(&r.name).await? {
                Some(data) => {
                    env.extend(data.into_iter().map(|(k, v)| (format!("{prefix}{k}"), v)))
                }
                None if optional => {}
                None => return Err(config_error(format!("secret \"{}\" not found", r.name))),
            }
        }
        if let Some(r) = from.config_map_ref {
            let optional = r.optional.unwrap_or(false);
            match sources.config_map(&r.name).await? {
                Some(data) => {
                    env.extend(data.into_iter().map(|(k, v)| (format!("{prefix}{k}"), v)))
                }
                None if optional => {}
                None => return Err(config_error(format!("configmap \"{}\" not found", r.name))),
            }
        }
    }
    for var in container.env.clone().unwrap_or_default() {
        if let Some(value) = var.value {
            env.insert(var.name, value);
            continue;
        }
        let Some(from) = var.value_from else {
            env.insert(var.name, String::new());
            continue;
        };
        if let Some(r) = from.secret_key_ref {
            let data = sources.secret(&r.name).await?;
            let optional = r.optional.unwrap_or(false);
            if let Some(v) = key_value(data, ("Secret", "secret"), &ns, &r.name, &r.key, optional)?
            {
                env.insert(var.name, v);
            }
        } else if let Some(r) = from.config_map_key_ref {
            let data = sources.config_map(&r.name).await?;
            let optional = r.optional.unwrap_or(false);
            let kind = ("ConfigMap", "configmap");
            if let Some(v) = key_value(data, kind, &ns, &r.name, &r.key, optional)? {
                env.insert(var.name, v);
            }
        } else if let Some(f) = from.field_ref {
            let value = match f.field_path.as_str() {
                "metadata.name" => pod.name_any(),
                "metadata.namespace" => ns.clone(),
                "metadata.uid" => pod.metadata.uid.clone().unwrap_or_default(),
                "status.podIP" | "status.hostIP" => "127.0.0.1".into(),
                "spec.nodeName" => String::new(),
                other => pod
                    .labels()
                    .get(
                        other
                            .strip_prefix("metadata.labels['")
                            .and_then(|s| s.strip_suffix("']"))
                            .unwrap_or_default(),
                    )
                    .cloned()
                    .unwrap_or_default(),
            };
            env.insert(var.name, value);
        }
    }
    let Some(connection_string) = env.get("DB_CONNECTION_STRING").filter(|s| !s.is_empty()) else {
        // The container would start and exit at once: without a database there is no
        // installation to join.
        return Err(ConfigError {
            reason: "CrashLoopBackOff".into(),
            message: "DB_CONNECTION_STRING is not set; Octopus Server cannot start".into(),
        });
    };
    Ok(OctopusEnv {
        node_name: env
            .get("OCTOPUS_SERVER_NODE_NAME")
            .filter(|s| !s.is_empty())
            .cloned()
            .unwrap_or_else(|| pod.name_any()),
        connection_string: Secret::new(connection_string.clone()),
        admin_api_key: env
            .get("ADMIN_API_KEY")
            .filter(|s| !s.is_empty())
            .map(|k| Secret::new(k.clone())),
        task_cap: env.get("TASK_CAP").and_then(|v| v.trim().parse().ok()),
    })
}

/// One key of a Secret or ConfigMap for an env `valueFrom`, with the kubelet's own
/// messages when it is missing (`kind` is the object's name in each message form).
fn key_value(
    data: Option<BTreeMap<String, String>>,
    (kind, lower): (&str, &str),
    ns: &str,
    name: &str,
    key: &str,
    optional: bool,
) -> Result<Option<String>, ConfigError> {
    match data {
        Some(data) => match data.get(key) {
            Some(v) => Ok(Some(v.clone())),
            None if optional => Ok(None),
            None => Err(config_error(format!(
                "couldn't find key {key} in {kind} {ns}/{name}"
            ))),
        },
        None if optional => Ok(None),
        None => Err(config_error(format!("{lower} \"{name}\" not found"))),
    }
}

fn config_error(message: String) -> ConfigError {
    ConfigError {
        reason: "CreateContainerConfigError".into(),
        message,
    }
}

/// Secrets and ConfigMaps read once per resolution.
struct Sources<'a> {
    client: &'a Client,
    ns: &'a str,
    secrets: HashMap<String, Option<BTreeMap<String, String>>>,
    config_maps: HashMap<String, Option<BTreeMap<String, String>>>,
}

impl Sources<'_> {
    async fn secret(
        &mut self,
        name: &str,
    ) -> Result<Option<BTreeMap<String, String>>, ConfigError> {
        if let Some(found) = self.secrets.get(name) {
            return Ok(found.clone());
        }
        let api: Api<KubeSecret> = Api::namespaced(self.client.clone(), self.ns);
        let found = api
            .get_opt(name)
            .await
            .map_err(|e| config_error(format!("cannot read secret \"{name}\": {e}")))?
            .map(|s| {
                let mut data: BTreeMap<String, String> = s.string_data.unwrap_or_default();
                for (k, v) in s.data.unwrap_or_default() {
                    data.insert(k, String::from_utf8_lossy(&v.0).into_owned());
                }
                data
            });
        self.secrets.insert(name.to_string(), found.clone());
        Ok(found)
    }

    async fn config_map(
        &mut self,
        name: &str,
    ) -> Result<Option<BTreeMap<String, String>>, ConfigError> {
        if let Some(found) = self.config_maps.get(name) {
            return Ok(found.clone());
        }
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), self.ns);
        let found = api
            .get_opt(name)
            .await
            .map_err(|e| config_error(format!("cannot read configmap \"{name}\": {e}")))?
            .map(|c| c.data.unwrap_or_default());
        self.config_maps.insert(name.to_string(), found.clone());
        Ok(found)
    }
}
