//! The twin's world: the Kubernetes objects a kubelet and a load balancer would see
//! (pods with their resolved Octopus settings, services with selectors) and the Octopus
//! installations behind them, one per shared database. Owns routing a Service to an
//! answering node, keeping pods and node processes in step, and the kubelet's image pulls
//! (with its back-off) from a registry that may lack some images. Pure: the caller passes
//! the time; the kubelet role and the HTTP server only call in here.

pub mod installation;
pub mod inventory;
pub mod remote;
pub mod snapshot;
pub mod task;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::time::Duration;

use jiff::Timestamp;

pub use installation::{
    Installation, NodeRow, Process, ProcessKey, ProcessPhase, ProcessSpec, Refusal, Role, Schema,
    Shutdown, Termination,
};

use crate::twin::config::{Faults, GeneratorConfig, Timing};
use crate::twin::events::{EventKind, EventLog};
use crate::twin::version::split_image;

/// A secret value (connection string, API key): compared and used, never printed.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// `t + d`, saturating.
pub fn after(t: Timestamp, d: Duration) -> Timestamp {
    t.checked_add(d).unwrap_or(Timestamp::MAX)
}

/// The Octopus settings a pod's container receives, resolved from env, Secrets and
/// ConfigMaps.
#[derive(Clone, Debug, PartialEq)]
pub struct OctopusEnv {
    /// OCTOPUS_SERVER_NODE_NAME, else the pod name.
    pub node_name: String,
    pub connection_string: Secret,
    pub admin_api_key: Option<Secret>,
    pub task_cap: Option<u32>,
}

/// Why a container cannot be created (kubelet's CreateContainerConfigError).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub reason: String,
    pub message: String,
}

/// What the twin knows about an Octopus pod.
#[derive(Clone, Debug, PartialEq)]
pub struct PodView {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub labels: BTreeMap<String, String>,
    pub image: String,
    pub env: Result<OctopusEnv, ConfigError>,
}

/// The container state a kubelet would report.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(tag = "state")]
pub enum ContainerState {
    Waiting { reason: String, message: String },
    Running { started_at: Timestamp },
}

/// A pod's status as its kubelet (the twin) reports it.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct PodRuntimeStatus {
    /// Pending until a container could be created, then Running.
    pub phase: String,
    pub ready: bool,
    pub started: bool,
    pub restart_count: u32,
    pub state: ContainerState,
    pub last_termination: Option<Termination>,
    pub start_time: Timestamp,
    /// Since when `ready` has its current value.
    pub ready_since: Timestamp,
}

/// Where a request to a Service goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resolution {
    NoService,
    /// The Service exists but no pod behind it is Ready.
    NoEndpoints,
    Endpoint {
        installation: usize,
        process: ProcessKey,
    },
}

/// Per-installation settings given before the installation existed.
#[derive(Clone, Debug, Default)]
struct Overrides {
    timing: Option<Timing>,
    faults: Option<Faults>,
    generator: Option<GeneratorConfig>,
    api_keys: Vec<(Secret, Role)>,
}

struct PodEntry {
    view: PodView,
    installation: Option<usize>,
    first_seen: Timestamp,
    ready_since: Timestamp,
    last_ready: bool,
    /// The image could not be pulled: no container exists yet.
    pull: Option<PullBackOff>,
}

/// A kubelet's back-off on an image it could not pull.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct PullBackOff {
    attempts: u32,
    /// Until then the kubelet reports `ErrImagePull` (the first half of the back-off),
    /// then `ImagePullBackOff`.
    failed_until: Timestamp,
    retry_at: Timestamp,
}

/// Everything the twin plays.
pub struct World {
    pub log: EventLog,
    installations: Vec<Installation>,
    by_database: HashMap<Secret, usize>,
    pods: BTreeMap<(String, String), PodEntry>,
    services: BTreeMap<(String, String), BTreeMap<String, String>>,
    pending: BTreeMap<(String, String), Overrides>,
    default_timing: Timing,
    default_generator: GeneratorConfig,
    seed: u64,
    round_robin: usize,
    clock: Timestamp,
    /// Node processes in real containers: key -> installation ([`remote`]).
    remote: HashMap<String, usize>,
    remote_seq: u64,
    /// Image references the registry does not have: their pods never start a container.
    missing_images: BTreeSet<String>,
    /// Namespace -> the installation whose database its clusters use, for installations
    /// of real containers, which no Service of the twin's knows ([`remote`]).
    namespace_databases: BTreeMap<String, usize>,
}

impl World {
    pub fn new(timing: Timing, generator: GeneratorConfig, seed: u64, now: Timestamp) -> Self {
        Self {
            log: EventLog::default(),
            installations: Vec::new(),
            by_database: HashMap::new(),
            pods: BTreeMap::new(),
            services: BTreeMap::new(),
            pending: BTreeMap::new(),
            default_timing: timing,
            default_generator: generator,
            seed,
            round_robin: 0,
            clock: now,
            remote: HashMap::new(),
            remote_seq: 0,
            missing_images: BTreeSet::new(),
            namespace_databases: BTreeMap::new(),
        }
    }

    pub fn now(&self) -> Timestamp {
        self.clock
    }

    /// Plays everything up to `now` (time never goes backwards).
    pub fn advance(&mut self, now: Timestamp) -> Timestamp {
        let now = now.max(self.clock);
        self.clock = now;
        for installation in &mut self.installations {
            installation.advance(now, &mut self.log);
        }
        self.retry_pulls(now);
        self.refresh_readiness(now);
        now
    }

    /// The registry lacks these image references from now on (and has every other): pods
    /// on them wait in ErrImagePull / ImagePullBackOff, and start at the kubelet's next
    /// attempt once the image is there.
    pub fn set_missing_images(&mut self, images: BTreeSet<String>) {
        self.missing_images = images;
    }

    /// Pods whose pull back-off is over try again.
    fn retry_pulls(&mut self, now: Timestamp) {
        let due: Vec<(String, String)> = self
            .pods
            .iter()
            .filter(|(_, e)| e.pull.is_some_and(|p| p.retry_at <= now))
            .map(|(k, _)| k.clone())
            .collect();
        for key in due {
            self.start_container(&key, now);
        }
    }

    /// Pulls the pod's image; false (and a back-off) when the registry lacks it.
    fn pull_image(&mut self, key: &(String, String), now: Timestamp) -> bool {
        let backoff = (
            self.default_timing.crash_backoff_base,
            self.default_timing.crash_backoff_max,
        );
        let Some(entry) = self.pods.get_mut(key) else {
            return false;
        };
        if !self.missing_images.contains(&entry.view.image) {
            entry.pull = None;
            return true;
        }
        let attempts = entry.pull.map_or(1, |p| p.attempts.saturating_add(1));
        let doublings = attempts.saturating_sub(1).min(20);
        let wait = backoff.0.saturating_mul(1u32 << doublings).min(backoff.1);
        entry.pull = Some(PullBackOff {
            attempts,
            failed_until: after(now, wait / 2),
            retry_at: after(now, wait),
        });
        let (pod, image) = (
            format!("{}/{}", entry.view.namespace, entry.view.name),
            entry.view.image.clone(),
        );
        self.log.record(
            now,
            None,
            EventKind::ImagePullFailed {
                pod,
                image,
                attempt: attempts,
            },
        );
        false
    }

    fn refresh_readiness(&mut self, now: Timestamp) {
        for entry in self.pods.values_mut() {
            let ready = entry
                .installation
                .and_then(|i| self.installations.get(i))
                .and_then(|inst| inst.processes.get(&entry.view.uid))
                .is_some_and(Process::is_running);
            if ready != entry.last_ready {
                entry.last_ready = ready;
                entry.ready_since = now;
            }
        }
    }

    pub fn installations(&self) -> &[Installation] {
        &self.installations
    }

    pub fn installation(&self, index: usize) -> Option<&Installation> {
        self.installations.get(index)
    }

    /// Mutable access to an installation together with the event log.
    pub fn installation_mut(&mut self, index: usize) -> Option<(&mut Installation, &mut EventLog)> {
        let installation = self.installations.get_mut(index)?;
        Some((installation, &mut self.log))
    }

    pub fn set_default_timing(&mut self, timing: Timing) {
        self.default_timing = timing;
    }

    pub fn set_default_generator(&mut self, generator: GeneratorConfig) {
        self.default_generator = generator;
    }

    // ----- pods and services (fed by the kubelet role or by tests) ----------------------

    /// A pod was created or changed.
    pub fn apply_pod(&mut self, view: PodView, now: Timestamp) {
        let now = self.advance(now);
        let key = (view.namespace.clone(), view.name.clone());
        if let Some(existing) = self.pods.get(&key) {
            if existing.view.uid != view.uid {
                self.delete_pod(&view.namespace, &view.name, now);
            } else {
                self.update_pod(key, view, now);
                return;
            }
        }
        self.pods.insert(
            key.clone(),
            PodEntry {
                view: view.clone(),
                installation: None,
                first_seen: now,
                ready_since: now,
                last_ready: false,
                pull: None,
            },
        );
        self.start_container(&key, now);
    }

    fn update_pod(&mut self, key: (String, String), view: PodView, now: Timestamp) {
        let Some(entry) = self.pods.get_mut(&key) else {
            return;
        };
        let old = std::mem::replace(&mut entry.view, view.clone());
        let installation = entry.installation;
        let pulling = entry.pull.is_some();
        match (installation, &view.env) {
            // A pull in back-off is retried when it is due, not on every pod update.
            (None, Ok(_)) if !pulling => self.start_container(&key, now),
            (None, Err(e)) if !pulling && old.env.as_ref().err() != Some(e) => {
                self.record_config_error(&view, e.clone(), now);
            }
            (Some(index), Ok(env)) if old.image != view.image => {
                let spec = process_spec(&view, env);
                if let Some((inst, log)) = self.installation_mut(index) {
                    inst.restart_process_with(&view.uid, spec, now, log);
                }
            }
            _ => {}
        }
        self.apply_pending();
    }

    fn start_container(&mut self, key: &(String, String), now: Timestamp) {
        // As a kubelet: the image first, then the container's config.
        if !self.pull_image(key, now) {
            return;
        }
        let Some(view) = self.pods.get(key).map(|e| e.view.clone()) else {
            return;
        };
        let env = match &view.env {
            Ok(env) => env.clone(),
            Err(e) => {
                self.record_config_error(&view, e.clone(), now);
                return;
            }
        };
        let index = self.installation_for_database(&env.connection_string, now);
        if let Some(entry) = self.pods.get_mut(key) {
            entry.installation = Some(index);
        }
        // Settings given for a Service in front of this pod apply before it starts.
        self.apply_pending();
        let spec = process_spec(&view, &env);
        if let Some((inst, log)) = self.installation_mut(index) {
            inst.start_process(view.uid.clone(), spec, now, log);
        }
    }

    fn record_config_error(&mut self, view: &PodView, error: ConfigError, now: Timestamp) {
        self.log.record(
            now,
            None,
            EventKind::PodConfigError {
                pod: format!("{}/{}", view.namespace, view.name),
                reason: error.reason,
                message: error.message,
            },
        );
    }

    fn installation_for_database(&mut self, connection_string: &Secret, now: Timestamp) -> usize {
        let key = database_key(connection_string.expose());
        if let Some(index) = self.by_database.get(&key) {
            return *index;
        }
        let index = self.installations.len();
        let name = format!("installation-{}", index + 1);
        let seed = self
            .seed
            .wrapping_add(index as u64)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.installations.push(Installation::new(
            name,
            self.default_timing.clone(),
            self.default_generator.clone(),
            seed,
            now,
        ));
        self.by_database.insert(key, index);
        index
    }

    /// A pod was deleted (or got a deletionTimestamp) with a grace period: its server
    /// process shuts down.
    pub fn delete_pod(&mut self, namespace: &str, name: &str, now: Timestamp) {
        self.stop_pod(namespace, name, Shutdown::Graceful, now);
    }

    /// A pod is gone; `how` says whether its server could shut down (grace period) or was
    /// killed (grace 0, SIGKILL).
    pub fn stop_pod(&mut self, namespace: &str, name: &str, how: Shutdown, now: Timestamp) {
        let now = self.advance(now);
        let Some(entry) = self.pods.remove(&(namespace.to_string(), name.to_string())) else {
            return;
        };
        if let Some((inst, log)) = entry.installation.and_then(|i| self.installation_mut(i)) {
            inst.stop_process(&entry.view.uid, how, now, log);
        }
    }

    pub fn pod_uids(&self) -> Vec<(String, String, String)> {
        self.pods
            .iter()
            .map(|((ns, name), e)| (ns.clone(), name.clone(), e.view.uid.clone()))
            .collect()
    }

    /// The twin's name of the installation a pod belongs to.
    pub fn pod_installation(&self, namespace: &str, name: &str) -> Option<String> {
        let entry = self.pods.get(&(namespace.to_string(), name.to_string()))?;
        let index = entry.installation?;
        Some(self.installations.get(index)?.name.clone())
    }

    pub fn apply_service(
        &mut self,
        namespace: &str,
        name: &str,
        selector: BTreeMap<String, String>,
    ) {
        self.services
            .insert((namespace.to_string(), name.to_string()), selector);
        self.apply_pending();
    }

    pub fn delete_service(&mut self, namespace: &str, name: &str) {
        self.services
            .remove(&(namespace.to_string(), name.to_string()));
    }

    pub fn service_names(&self) -> Vec<(String, String)> {
        self.services.keys().cloned().collect()
    }

    fn selected_pods<'a>(
        &'a self,
        namespace: &'a str,
        service: &str,
    ) -> Option<impl Iterator<Item = &'a PodEntry> + 'a> {
        let selector = self
            .services
            .get(&(namespace.to_string(), service.to_string()))?;
        if selector.is_empty() {
            return None;
        }
        let selector = selector.clone();
        Some(self.pods.values().filter(move |e| {
            e.view.namespace == namespace
                && selector
                    .iter()
                    .all(|(k, v)| e.view.labels.get(k) == Some(v))
        }))
    }

    /// The installation behind a Service, whether or not any node serves right now.
    pub fn installation_for_service(&self, namespace: &str, service: &str) -> Option<usize> {
        self.selected_pods(namespace, service)
            .and_then(|mut pods| pods.find_map(|e| e.installation))
            .or_else(|| self.namespace_databases.get(namespace).copied())
    }

    /// Picks a ready endpoint of the Service, round robin, as kube-proxy would.
    pub fn resolve(&mut self, namespace: &str, service: &str) -> Resolution {
        let Some(pods) = self.selected_pods(namespace, service) else {
            return Resolution::NoService;
        };
        let ready: Vec<(usize, ProcessKey)> = pods
            .filter_map(|e| {
                let index = e.installation?;
                let process = self.installations.get(index)?.processes.get(&e.view.uid)?;
                process.is_running().then(|| (index, e.view.uid.clone()))
            })
            .collect();
        if ready.is_empty() {
            return Resolution::NoEndpoints;
        }
        self.round_robin = self.round_robin.wrapping_add(1);
        let (installation, process) = ready[self.round_robin % ready.len()].clone();
        Resolution::Endpoint {
            installation,
            process,
        }
    }

    /// A pod by its own address, `{pod}.{service}.{namespace}.svc` through a headless
    /// Service: the Service must select it and its server must be up.
    pub fn resolve_pod(&self, namespace: &str, service: &str, pod: &str) -> Resolution {
        let Some(mut pods) = self.selected_pods(namespace, service) else {
            return Resolution::NoService;
        };
        pods.find(|e| e.view.name == pod)
            .and_then(|e| {
                let index = e.installation?;
                let process = self.installations.get(index)?.processes.get(&e.view.uid)?;
                process.is_running().then(|| Resolution::Endpoint {
                    installation: index,
                    process: e.view.uid.clone(),
                })
            })
            .unwrap_or(Resolution::NoEndpoints)
    }

    pub fn pod_status(&self, namespace: &str, name: &str) -> Option<PodRuntimeStatus> {
        let entry = self.pods.get(&(namespace.to_string(), name.to_string()))?;
        let pulling = entry
            .pull
            .map(|p| pull_waiting(&entry.view.image, p, self.clock));
        let base = PodRuntimeStatus {
            phase: "Pending".into(),
            ready: false,
            started: false,
            restart_count: 0,
            state: ContainerState::Waiting {
                reason: "ContainerCreating".into(),
                message: String::new(),
            },
            last_termination: None,
            start_time: entry.first_seen,
            ready_since: entry.ready_since,
        };
        if let Some(state) = pulling {
            return Some(PodRuntimeStatus { state, ..base });
        }
        if let Err(e) = &entry.view.env {
            return Some(PodRuntimeStatus {
                state: ContainerState::Waiting {
                    reason: e.reason.clone(),
                    message: e.message.clone(),
                },
                ..base
            });
        }
        let Some(process) = entry
            .installation
            .and_then(|i| self.installations.get(i))
            .and_then(|inst| inst.processes.get(&entry.view.uid))
        else {
            return Some(base);
        };
        let running = ContainerState::Running {
            started_at: process.container_started_at,
        };
        let (ready, started, state) = match &process.phase {
            ProcessPhase::Running { .. } => (true, true, running),
            ProcessPhase::CrashLoopBackOff { .. } => (
                false,
                false,
                ContainerState::Waiting {
                    reason: "CrashLoopBackOff".into(),
                    message: format!(
                        "back-off restarting failed container octopus in pod {}_{}",
                        entry.view.name, entry.view.namespace
                    ),
                },
            ),
            _ => (false, false, running),
        };
        Some(PodRuntimeStatus {
            phase: "Running".into(),
            ready,
            started,
            restart_count: process.restart_count,
            state,
            last_termination: process.last_termination.clone(),
            ..base
        })
    }

    // ----- per-installation settings ------------------------------------------------------

    fn with_overrides(&mut self, namespace: &str, service: &str, f: impl FnOnce(&mut Overrides)) {
        let key = (namespace.to_string(), service.to_string());
        f(self.pending.entry(key).or_default());
        self.apply_pending();
    }

    /// Moves settings given for a Service onto its installation once it is known.
    fn apply_pending(&mut self) {
        let keys: Vec<(String, String)> = self.pending.keys().cloned().collect();
        let now = self.clock;
        for key in keys {
            let Some(index) = self.installation_for_service(&key.0, &key.1) else {
                continue;
            };
            let Some(overrides) = self.pending.remove(&key) else {
                continue;
            };
            let Some(inst) = self.installations.get_mut(index) else {
                continue;
            };
            if let Some(timing) = overrides.timing {
                inst.timing = timing;
            }
            if let Some(faults) = overrides.faults {
                inst.faults = faults;
            }
            if let Some(generator) = overrides.generator {
                inst.set_generator(generator, now);
            }
            for (key, role) in overrides.api_keys {
                inst.add_api_key(key, role);
            }
        }
    }

    pub fn set_faults(&mut self, namespace: &str, service: &str, faults: Faults) {
        self.with_overrides(namespace, service, |o| o.faults = Some(faults));
    }

    pub fn set_timing(&mut self, namespace: &str, service: &str, timing: Timing) {
        self.with_overrides(namespace, service, |o| o.timing = Some(timing));
    }

    pub fn set_generator(&mut self, namespace: &str, service: &str, generator: GeneratorConfig) {
        self.with_overrides(namespace, service, |o| o.generator = Some(generator));
    }

    /// Pauses or resumes the task generator of the installation behind a Service.
    pub fn set_generator_enabled(&mut self, namespace: &str, service: &str, enabled: bool) -> bool {
        let Some(index) = self.installation_for_service(namespace, service) else {
            return false;
        };
        let now = self.clock;
        let Some(inst) = self.installations.get_mut(index) else {
            return false;
        };
        let config = GeneratorConfig {
            enabled,
            ..inst.generator.config.clone()
        };
        inst.set_generator(config, now);
        true
    }

    pub fn add_api_key(&mut self, namespace: &str, service: &str, key: Secret, role: Role) {
        self.with_overrides(namespace, service, |o| o.api_keys.push((key, role)));
    }
}

/// What a kubelet reports while an image cannot be pulled: `ErrImagePull` right after an
/// attempt, `ImagePullBackOff` while it waits for the next, in the words of containerd
/// and the kubelet.
fn pull_waiting(image: &str, pull: PullBackOff, now: Timestamp) -> ContainerState {
    let reference = qualified(image);
    if now < pull.failed_until {
        ContainerState::Waiting {
            reason: "ErrImagePull".into(),
            message: format!(
                "failed to pull and unpack image \"{reference}\": failed to resolve reference \"{reference}\": {reference}: not found"
            ),
        }
    } else {
        ContainerState::Waiting {
            reason: "ImagePullBackOff".into(),
            message: format!("Back-off pulling image \"{image}\""),
        }
    }
}

/// The reference containerd resolves: a name without a registry host is Docker Hub's.
fn qualified(image: &str) -> String {
    let first = image.split('/').next().unwrap_or_default();
    let has_host =
        image.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    match (has_host, image.contains('/')) {
        (true, _) => image.to_string(),
        (false, true) => format!("docker.io/{image}"),
        (false, false) => format!("docker.io/library/{image}"),
    }
}

fn process_spec(view: &PodView, env: &OctopusEnv) -> ProcessSpec {
    let (_, tag) = split_image(&view.image);
    ProcessSpec {
        pod: format!("{}/{}", view.namespace, view.name),
        node_name: env.node_name.clone(),
        version_text: tag.unwrap_or_default().to_string(),
        admin_api_key: env.admin_api_key.clone(),
        task_cap: env.task_cap,
    }
}

/// Identifies the database a connection string points at: server + database name when
/// they can be read (so a changed password is still the same database), else the whole
/// string.
fn database_key(connection_string: &str) -> Secret {
    let mut server = None;
    let mut database = None;
    for pair in connection_string.split(';') {
        let Some((k, v)) = pair.split_once('=') else {
            continue;
        };
        let k = k.trim().to_ascii_lowercase();
        let v = v.trim().to_ascii_lowercase();
        match k.as_str() {
            "server" | "data source" | "address" | "addr" | "network address" => {
                server = Some(v);
            }
            "database" | "initial catalog" => database = Some(v),
            _ => {}
        }
    }
    match (server, database) {
        (Some(s), Some(d)) => Secret::new(format!("{s}|{d}")),
        _ => Secret::new(connection_string.trim()),
    }
}

#[cfg(test)]
mod tests;
