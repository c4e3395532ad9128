//! The Octopus Server twin: plays any number of Octopus HA clusters on 127.0.0.1 for the
//! end-to-end scenarios and benchmarks.
//!
//! Layers, each usable without the next:
//! - [`model`]: the pure domain (installations = shared databases, node processes,
//!   schema, drain, maintenance mode, tasks), driven by explicit time;
//! - [`api`] + [`server`]: Octopus's REST API on `/{namespace}/{service}/api/...`,
//!   routed like a load balancer in front of the pods, plus `/_twin/...` admin routes;
//! - [`kubelet`]: watches Pods and Services on a real API server and plays the kubelet
//!   for Octopus pods (patches their status);
//! - [`database`]: the same world as the shared database of Octopus Server nodes that run
//!   as real pods (the node image, `e2e/twin-node`): they start, heartbeat, stop and hand
//!   over their REST requests on `/_db/nodes/...`;
//! - [`replay`]: reads the flight recorder ([`events`]) back: who served on which
//!   version at every moment, tasks, drains, schema; what tests, benchmarks and the demo
//!   assert and print.
//!
//! The twin never looks at operator types, labels or annotations: it sees pods, their
//! images and env, Secrets, ConfigMaps, Services, and HTTP requests — what Octopus and
//! the kubelet would see.

pub mod api;
pub mod config;
pub mod database;
pub mod events;
pub mod json;
pub mod kubelet;
pub mod model;
pub mod replay;
pub mod server;
pub mod version;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use config::{Faults, GeneratorConfig, ImagePattern, Timing};
pub use events::{Event, EventKind};
pub use model::snapshot::{InstallationSnapshot, TwinState};
pub use model::{ConfigError, OctopusEnv, PodRuntimeStatus, PodView, Role, Secret, Shutdown};

use server::{SharedWorld, lock};

/// How to start a twin.
#[derive(Clone)]
pub struct TwinConfig {
    /// Where to listen; `127.0.0.1:0` picks a free port.
    pub bind: SocketAddr,
    /// With a client the twin plays kubelet for Octopus pods on that API server.
    pub kube: Option<kube::Client>,
    /// Timing of installations not configured otherwise.
    pub timing: Timing,
    /// Task generator of installations not configured otherwise.
    pub generator: GeneratorConfig,
    /// Which images are Octopus Server.
    pub image_pattern: ImagePattern,
    /// Play kubelet only in this namespace (all namespaces when unset).
    pub namespace: Option<String>,
    /// How often model time is advanced without requests (and pod status published).
    pub tick: Duration,
    /// Seed of every random choice (task durations, faults, arrival jitter).
    pub seed: u64,
}

impl Default for TwinConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            kube: None,
            timing: Timing::default(),
            generator: GeneratorConfig::default(),
            image_pattern: ImagePattern::default(),
            namespace: None,
            tick: Duration::from_millis(50),
            seed: 1,
        }
    }
}

impl TwinConfig {
    /// A quiet twin for API client contract tests: no generated work, nodes up in 50 ms, a
    /// task created through the API runs for two minutes (long enough to be cancelled),
    /// cancelling takes 100 ms.
    pub fn for_api_clients() -> Self {
        Self {
            timing: Timing {
                start_delay: Duration::from_millis(50),
                api_task_duration: Duration::from_secs(120),
                cancel_delay: Duration::from_millis(100),
                ..Timing::default()
            },
            generator: GeneratorConfig::off(),
            tick: Duration::from_millis(10),
            ..Self::default()
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TwinError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Entry point.
pub struct Twin;

impl Twin {
    /// Binds, starts the server, the clock and (with a kube client) the kubelet role.
    pub async fn start(config: TwinConfig) -> Result<TwinHandle, TwinError> {
        let listener = TcpListener::bind(config.bind)
            .await
            .map_err(|source| TwinError::Bind {
                addr: config.bind,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| TwinError::Bind {
            addr: config.bind,
            source,
        })?;
        let world: SharedWorld = Arc::new(Mutex::new(model::World::new(
            config.timing.clone(),
            config.generator.clone(),
            config.seed,
            Timestamp::now(),
        )));
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let mut tasks = vec![
            tokio::spawn(server::serve(listener, world.clone(), shutdown_rx.clone())),
            tokio::spawn(server::tick(
                world.clone(),
                config.tick,
                shutdown_rx.clone(),
            )),
        ];
        if let Some(client) = config.kube.clone() {
            tasks.push(tokio::spawn(kubelet::run(
                client,
                world.clone(),
                config.image_pattern.clone(),
                config.namespace.clone(),
                config.tick,
                shutdown_rx,
            )));
        }
        tracing::info!(%addr, kubelet = config.kube.is_some(), "octopus twin listening");
        Ok(TwinHandle {
            addr,
            world,
            shutdown: shutdown_tx,
            tasks,
        })
    }
}

/// A running twin. Dropping it without [`TwinHandle::shutdown`] leaves its tasks running
/// until the runtime ends.
pub struct TwinHandle {
    addr: SocketAddr,
    world: SharedWorld,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl TwinHandle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The Octopus server URL of the installation behind a Service:
    /// `http://127.0.0.1:PORT/{namespace}/{service}` (append `/api/...`).
    pub fn installation_url(&self, namespace: &str, service: &str) -> String {
        format!("{}/{namespace}/{service}", self.base_url())
    }

    /// One node's own server URL, as through a headless Service:
    /// `http://127.0.0.1:PORT/{namespace}/{service}/{pod}` (append `/api/...`).
    pub fn node_url(&self, namespace: &str, service: &str, pod: &str) -> String {
        format!("{}/{namespace}/{service}/{pod}", self.base_url())
    }

    fn with_world<T>(&self, f: impl FnOnce(&mut model::World) -> T) -> T {
        let mut w = lock(&self.world);
        w.advance(Timestamp::now());
        f(&mut w)
    }

    /// Every recorded event so far.
    pub fn events(&self) -> Vec<Event> {
        self.with_world(|w| w.log.all().to_vec())
    }

    /// Events after sequence number `seq`.
    pub fn events_since(&self, seq: u64) -> Vec<Event> {
        self.with_world(|w| w.log.since(seq).to_vec())
    }

    /// Events of the installation behind a Service (empty if none is known yet).
    pub fn installation_events(&self, namespace: &str, service: &str) -> Vec<Event> {
        self.with_world(|w| {
            let Some(name) = w
                .installation_for_service(namespace, service)
                .and_then(|i| w.installation(i))
                .map(|i| i.name.clone())
            else {
                return Vec::new();
            };
            w.log
                .all()
                .iter()
                .filter(|e| e.installation.as_deref() == Some(name.as_str()))
                .cloned()
                .collect()
        })
    }

    /// Faults of the installation behind a Service (kept until its first pod appears).
    pub fn set_faults(&self, namespace: &str, service: &str, faults: Faults) {
        self.with_world(|w| w.set_faults(namespace, service, faults));
    }

    /// Faults of the installation in the database `connection_string` names (nodes in
    /// real containers, see [`database`]).
    pub fn set_database_faults(&self, connection_string: &str, faults: Faults) {
        self.with_world(|w| w.set_database_faults(connection_string, faults));
    }

    /// The database `connection_string` names is that of `namespace`'s clusters: what is
    /// set by namespace and Service (faults, timing) applies to its installation.
    pub fn name_database(&self, namespace: &str, connection_string: &str) {
        self.with_world(|w| w.name_database(namespace, connection_string));
    }

    /// The backups of `namespace`'s database (see [`TwinHandle::name_database`]).
    pub fn backups(&self, namespace: &str) -> database::DatabaseBackups {
        database::DatabaseBackups {
            world: self.world.clone(),
            namespace: namespace.to_string(),
        }
    }

    /// Timing of the installation in the database `connection_string` names.
    pub fn set_database_timing(&self, connection_string: &str, timing: Timing) {
        self.with_world(|w| w.set_database_timing(connection_string, timing));
    }

    /// The registry lacks these image references from now on (and has every other): their
    /// pods wait in ErrImagePull / ImagePullBackOff, as a kubelet reports them.
    pub fn set_missing_images<I: IntoIterator<Item = String>>(&self, images: I) {
        let images = images.into_iter().collect();
        self.with_world(|w| w.set_missing_images(images));
    }

    /// Timing of the installation behind a Service (kept until its first pod appears).
    pub fn set_timing(&self, namespace: &str, service: &str, timing: Timing) {
        self.with_world(|w| w.set_timing(namespace, service, timing));
    }

    /// Timing of installations created from now on.
    pub fn set_default_timing(&self, timing: Timing) {
        self.with_world(|w| w.set_default_timing(timing));
    }

    /// Task generator of the installation behind a Service.
    pub fn set_generator(&self, namespace: &str, service: &str, generator: GeneratorConfig) {
        self.with_world(|w| w.set_generator(namespace, service, generator));
    }

    /// Task generator of installations created from now on.
    pub fn set_default_generator(&self, generator: GeneratorConfig) {
        self.with_world(|w| w.set_default_generator(generator));
    }

    /// Pauses (false) or resumes (true) the generator; false if no installation is known.
    pub fn set_generator_enabled(&self, namespace: &str, service: &str, enabled: bool) -> bool {
        self.with_world(|w| w.set_generator_enabled(namespace, service, enabled))
    }

    /// Registers an API key with a role in the installation's database.
    pub fn add_api_key(&self, namespace: &str, service: &str, key: &str, role: Role) {
        self.with_world(|w| w.add_api_key(namespace, service, Secret::new(key), role));
    }

    /// The installation behind a Service, if one is known.
    pub fn snapshot(&self, namespace: &str, service: &str) -> Option<InstallationSnapshot> {
        self.with_world(|w| w.snapshot_service(namespace, service))
    }

    /// Everything the twin knows.
    pub fn state(&self) -> TwinState {
        self.with_world(|w| w.state())
    }

    /// The status the twin (as kubelet) gives an Octopus pod.
    pub fn pod_status(&self, namespace: &str, name: &str) -> Option<PodRuntimeStatus> {
        self.with_world(|w| w.pod_status(namespace, name))
    }

    /// Waits (polling every 10 ms) until the twin reports the pod Ready; false when it is
    /// not within `within`.
    pub async fn wait_pod_ready(&self, namespace: &str, name: &str, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if self.pod_status(namespace, name).is_some_and(|s| s.ready) {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Feeds a pod directly (what the kubelet role does from a watch); for tests
    /// without a control plane.
    pub fn apply_pod(&self, pod: PodView) {
        self.with_world(|w| w.apply_pod(pod, Timestamp::now()));
    }

    pub fn delete_pod(&self, namespace: &str, name: &str) {
        self.with_world(|w| w.delete_pod(namespace, name, Timestamp::now()));
    }

    /// The pod is gone without a clean shutdown (SIGKILL, deleted with grace 0): Octopus
    /// keeps counting its node as running until its heartbeat ages out.
    pub fn kill_pod(&self, namespace: &str, name: &str) {
        self.with_world(|w| w.stop_pod(namespace, name, Shutdown::Killed, Timestamp::now()));
    }

    /// Feeds a Service directly; for tests without a control plane.
    pub fn apply_service(&self, namespace: &str, name: &str, selector: BTreeMap<String, String>) {
        self.with_world(|w| w.apply_service(namespace, name, selector));
    }

    pub fn delete_service(&self, namespace: &str, name: &str) {
        self.with_world(|w| w.delete_service(namespace, name));
    }

    /// Plays one installation without a control plane: Service `service` in `namespace`
    /// selecting `app=octopus`, and one Ready pod per name running `image` whose admin
    /// API key is `api_key`. Returns the installation's URL; None when a pod is not Ready
    /// within 5 s.
    pub async fn play_installation(
        &self,
        namespace: &str,
        service: &str,
        pods: &[&str],
        image: &str,
        api_key: &str,
    ) -> Option<String> {
        let labels = BTreeMap::from([("app".to_string(), "octopus".to_string())]);
        self.apply_service(namespace, service, labels.clone());
        for name in pods {
            self.apply_pod(PodView {
                namespace: namespace.into(),
                name: (*name).into(),
                uid: format!("{name}-uid"),
                labels: labels.clone(),
                image: image.into(),
                env: Ok(OctopusEnv {
                    node_name: (*name).into(),
                    connection_string: Secret::new(format!(
                        "Server=sql;Database={namespace}-{service};Password=x"
                    )),
                    admin_api_key: Some(Secret::new(api_key)),
                    task_cap: None,
                }),
            });
            if !self
                .wait_pod_ready(namespace, name, Duration::from_secs(5))
                .await
            {
                return None;
            }
        }
        Some(self.installation_url(namespace, service))
    }

    /// Stops serving, the clock and the kubelet role.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}
