//! One Octopus installation: the shared SQL database (schema, node table, maintenance
//! mode, tasks, API keys) and the node processes connected to it. Owns every rule of how
//! a node starts, migrates, crashes and stops, and how tasks are picked up and finish.
//! Pure: time is passed in, randomness comes from a seeded generator.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use serde::Serialize;

use super::inventory::Inventory;
use super::task::{self, Task, TaskState};
use super::{Secret, after};
use crate::twin::config::{Faults, GeneratorConfig, Timing};
use crate::twin::events::{EventKind, EventLog};
use crate::twin::version::OctopusVersion;

/// A node process is keyed by the uid of the pod it runs in (or, in a real container, by
/// the key the database gave it when it connected).
pub type ProcessKey = String;

/// A node process in a real container not heard from for this long is gone (its
/// heartbeat comes every [`octopus_twin_node::HEARTBEAT_INTERVAL`]).
pub const HEARTBEAT_LEASE: Duration = Duration::from_secs(3);

/// What an API key may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub enum Role {
    /// Has AdministerSystem (the ADMIN_API_KEY user): may do anything, even in
    /// maintenance mode.
    Administrator,
    /// An ordinary user: read, queue work; refused every change in maintenance mode.
    User,
}

/// The database schema: its major.minor line and the release that migrated it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Schema {
    pub line: (u32, u32),
    pub migrated_by: OctopusVersion,
}

impl Schema {
    pub fn line_text(&self) -> String {
        format!("{}.{}", self.line.0, self.line.1)
    }
}

/// Where a node process is in its life.
#[derive(Clone, Debug, PartialEq)]
pub enum ProcessPhase {
    /// Container started; at `ready_at` the server checks the schema (`None`: hangs).
    Starting {
        ready_at: Option<Timestamp>,
    },
    /// Waiting for another node's schema upgrade to finish.
    AwaitingSchemaLock,
    Migrating {
        until: Timestamp,
        to: OctopusVersion,
    },
    Running {
        since: Timestamp,
    },
    /// Exited; the kubelet restarts it at `until`.
    CrashLoopBackOff {
        until: Timestamp,
    },
}

/// How a container last ended.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Termination {
    pub reason: String,
    pub message: String,
    pub exit_code: i32,
    pub started_at: Timestamp,
    pub finished_at: Timestamp,
}

/// What a pod hands its Octopus container.
#[derive(Clone, PartialEq)]
pub struct ProcessSpec {
    pub pod: String,
    pub node_name: String,
    pub version_text: String,
    pub admin_api_key: Option<Secret>,
    pub task_cap: Option<u32>,
}

/// One Octopus Server process (one container of one pod).
#[derive(Clone, Debug)]
pub struct Process {
    pub pod: String,
    pub node_name: String,
    pub version: Option<OctopusVersion>,
    pub version_text: String,
    pub admin_api_key: Option<Secret>,
    pub task_cap: Option<u32>,
    pub phase: ProcessPhase,
    pub restart_count: u32,
    consecutive_failures: u32,
    pub container_started_at: Timestamp,
    pub last_termination: Option<Termination>,
    /// Ran while a newer schema was applied under it.
    pub violating_schema: bool,
    /// A node process in a real container (see [`super::remote`]): when it last reported
    /// alive. The database knows such a process only through these heartbeats; `None` for
    /// a process the twin plays itself.
    pub heartbeat: Option<Timestamp>,
}

impl Process {
    pub fn is_running(&self) -> bool {
        matches!(self.phase, ProcessPhase::Running { .. })
    }

    fn due(&self) -> Option<Timestamp> {
        match self.phase {
            ProcessPhase::Starting { ready_at } => ready_at,
            ProcessPhase::Migrating { until, .. } | ProcessPhase::CrashLoopBackOff { until } => {
                Some(until)
            }
            ProcessPhase::AwaitingSchemaLock | ProcessPhase::Running { .. } => None,
        }
    }
}

/// How a node process ended, which decides what Octopus's database remembers of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shutdown {
    /// SIGTERM within the grace period: the server flags its node offline on the way out.
    Graceful,
    /// SIGKILL, a pod deleted with grace 0, OOM: nothing is written; the node's last
    /// heartbeat (LastSeen) makes it look alive until it ages out (`offline_after`).
    Killed,
}

/// A row of the OctopusServerNode table; outlives the processes that wrote it.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeRow {
    pub id: String,
    pub name: String,
    pub max_concurrent_tasks: u32,
    /// IsInMaintenanceMode of the node: drained.
    pub drained: bool,
    pub last_seen: Timestamp,
    pub version: String,
    /// Flagged itself offline on a clean shutdown.
    pub shut_down: bool,
    pub last_modified_on: Option<Timestamp>,
}

/// The simulated users and the server's own schedules.
#[derive(Clone, Debug)]
pub struct Generator {
    pub config: GeneratorConfig,
    pub next_deployment_at: Option<Timestamp>,
    pub next_health_check_at: Option<Timestamp>,
    pub deployments_queued: u64,
    pub refused_maintenance_mode: u64,
    pub refused_unavailable: u64,
}

/// Why a request to queue or change something was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    MaintenanceMode,
    UnknownTaskName(String),
    Forbidden,
    NotFound,
    Invalid(String),
    /// The request was understood but its arguments are wrong, one sentence each.
    BadArguments(Vec<String>),
}

pub struct Installation {
    pub name: String,
    pub installation_id: String,
    pub schema: Option<Schema>,
    migration_lock: Option<ProcessKey>,
    pub maintenance_mode: bool,
    pub maintenance_modified_on: Option<Timestamp>,
    pub nodes: BTreeMap<String, NodeRow>,
    pub processes: BTreeMap<ProcessKey, Process>,
    pub inventory: Inventory,
    api_keys: Vec<(Secret, Role)>,
    pub tasks: BTreeMap<u64, Task>,
    next_task: u64,
    next_deployment: u64,
    pub generator: Generator,
    pub timing: Timing,
    pub faults: Faults,
    rng: fastrand::Rng,
}

impl Installation {
    pub fn new(
        name: String,
        timing: Timing,
        generator: GeneratorConfig,
        seed: u64,
        now: Timestamp,
    ) -> Self {
        let mut rng = fastrand::Rng::with_seed(seed);
        let installation_id = guid(&mut rng);
        let mut installation = Self {
            name,
            installation_id,
            schema: None,
            migration_lock: None,
            maintenance_mode: false,
            maintenance_modified_on: None,
            nodes: BTreeMap::new(),
            processes: BTreeMap::new(),
            inventory: Inventory::default(),
            api_keys: Vec::new(),
            tasks: BTreeMap::new(),
            next_task: 1,
            next_deployment: 1,
            generator: Generator {
                config: GeneratorConfig::off(),
                next_deployment_at: None,
                next_health_check_at: None,
                deployments_queued: 0,
                refused_maintenance_mode: 0,
                refused_unavailable: 0,
            },
            timing,
            faults: Faults::default(),
            rng,
        };
        installation.set_generator(generator, now);
        installation
    }

    // ----- configuration -------------------------------------------------------------

    pub fn set_generator(&mut self, config: GeneratorConfig, now: Timestamp) {
        self.generator.next_deployment_at = None;
        self.generator.next_health_check_at = None;
        if config.enabled {
            if config.deployments_per_minute > 0.0 {
                let gap = self.deployment_gap(&config);
                self.generator.next_deployment_at = Some(after(now, gap));
            }
            if let Some(interval) = config.health_check_interval {
                self.generator.next_health_check_at =
                    Some(after(now, interval.max(Duration::from_millis(1))));
            }
        }
        self.generator.config = config;
    }

    pub fn add_api_key(&mut self, key: Secret, role: Role) {
        if let Some(existing) = self.api_keys.iter_mut().find(|(k, _)| *k == key) {
            existing.1 = role;
        } else {
            self.api_keys.push((key, role));
        }
    }

    /// The role of a key, if the database knows it.
    pub fn authenticate(&self, key: &str) -> Option<Role> {
        self.api_keys
            .iter()
            .find(|(k, _)| k.expose() == key)
            .map(|(_, role)| *role)
    }

    pub fn random_unit(&mut self) -> f64 {
        self.rng.f64()
    }

    // ----- queries ---------------------------------------------------------------------

    pub fn running_processes(&self) -> impl Iterator<Item = (&ProcessKey, &Process)> {
        self.processes.iter().filter(|(_, p)| p.is_running())
    }

    pub fn node_is_running(&self, node: &str) -> bool {
        self.running_processes().any(|(_, p)| p.node_name == node)
    }

    pub fn node_is_offline(&self, row: &NodeRow, now: Timestamp) -> bool {
        if self.node_is_running(&row.name) {
            return false;
        }
        row.shut_down || elapsed(row.last_seen, now) > self.timing.offline_after
    }

    pub fn node_last_seen(&self, row: &NodeRow, now: Timestamp) -> Timestamp {
        if self.node_is_running(&row.name) {
            now
        } else {
            row.last_seen
        }
    }

    pub fn running_task_count(&self, node: &str) -> usize {
        self.tasks
            .values()
            .filter(|t| t.state.is_running() && t.server_node.as_deref() == Some(node))
            .count()
    }

    pub fn node_by_id(&self, id: &str) -> Option<&NodeRow> {
        self.nodes.values().find(|n| n.id.eq_ignore_ascii_case(id))
    }

    // ----- node processes ------------------------------------------------------------

    /// A container of a pod starts (first start or a kubelet restart after a spec change).
    pub fn start_process(
        &mut self,
        key: ProcessKey,
        spec: ProcessSpec,
        now: Timestamp,
        log: &mut EventLog,
    ) {
        let ready_at = self.start_ready_at(&spec.node_name, now);
        let process = Process {
            pod: spec.pod,
            node_name: spec.node_name,
            version: OctopusVersion::parse_tag(&spec.version_text),
            version_text: spec.version_text,
            admin_api_key: spec.admin_api_key,
            task_cap: spec.task_cap,
            phase: ProcessPhase::Starting { ready_at },
            restart_count: 0,
            consecutive_failures: 0,
            container_started_at: now,
            last_termination: None,
            violating_schema: false,
            heartbeat: None,
        };
        self.record_starting(&process, now, log);
        self.processes.insert(key, process);
    }

    /// The container is replaced in place (new image): the old process stops, the new
    /// one starts with the restart counted, as a kubelet does.
    pub fn restart_process_with(
        &mut self,
        key: &ProcessKey,
        spec: ProcessSpec,
        now: Timestamp,
        log: &mut EventLog,
    ) {
        let restart_count = self
            .processes
            .get(key)
            .map_or(0, |p| p.restart_count.saturating_add(1));
        self.stop_process(key, Shutdown::Graceful, now, log);
        self.start_process(key.clone(), spec, now, log);
        if let Some(p) = self.processes.get_mut(key) {
            p.restart_count = restart_count;
        }
    }

    /// The pod is gone: the server shuts down (a graceful stop flags its node offline, a
    /// killed one leaves only its last heartbeat); whatever it was executing fails, and an
    /// unfinished schema upgrade rolls back.
    pub fn stop_process(
        &mut self,
        key: &ProcessKey,
        how: Shutdown,
        now: Timestamp,
        log: &mut EventLog,
    ) {
        let Some(process) = self.processes.remove(key) else {
            return;
        };
        let inst = self.name.clone();
        if self.migration_lock.as_ref() == Some(key) {
            self.migration_lock = None;
            log.record(
                now,
                Some(&inst),
                EventKind::SchemaMigrationRolledBack {
                    node: process.node_name.clone(),
                    version: process.version_text.clone(),
                    reason: "the node process stopped during the schema upgrade".into(),
                },
            );
            self.wake_lock_waiters(now);
        }
        let was_running = process.is_running();
        log.record(
            now,
            Some(&inst),
            EventKind::NodeStopped {
                node: process.node_name.clone(),
                pod: process.pod.clone(),
                version: process.version_text.clone(),
                was_running,
            },
        );
        if was_running {
            let clean = how == Shutdown::Graceful && !self.faults.unclean_shutdown;
            self.node_went_down(&process.node_name, now, clean, log);
        }
        self.schedule_tasks(now, log);
    }

    // ----- node processes in real containers --------------------------------------------

    /// A node process in a real container starts (see [`super::remote`]): it starts as a
    /// played one does (schema check after `start_delay`, migration, refusals), but lives
    /// only as long as its heartbeats, and its kubelet, not the model, restarts it.
    pub fn start_remote_process(
        &mut self,
        key: ProcessKey,
        spec: ProcessSpec,
        now: Timestamp,
        log: &mut EventLog,
    ) {
        self.start_process(key.clone(), spec, now, log);
        if let Some(p) = self.processes.get_mut(&key) {
            p.heartbeat = Some(now);
        }
    }

    /// A heartbeat of a node process in a real container; `None` when the database no
    /// longer knows it.
    pub fn remote_heartbeat(&mut self, key: &ProcessKey, now: Timestamp) -> Option<&Process> {
        let p = self
            .processes
            .get_mut(key)
            .filter(|p| p.heartbeat.is_some())?;
        p.heartbeat = Some(now);
        Some(p)
    }

    /// Processes in real containers silent for [`HEARTBEAT_LEASE`] are gone without a
    /// clean shutdown (SIGKILL, OOM): stopped as killed, their node's LastSeen stays their
    /// last heartbeat, so the node looks alive until that ages out (`offline_after`).
    fn reap_silent_processes(&mut self, now: Timestamp, log: &mut EventLog) {
        let silent: Vec<(ProcessKey, Timestamp)> = self
            .processes
            .iter()
            .filter_map(|(key, p)| {
                let last = p.heartbeat?;
                (elapsed(last, now) > HEARTBEAT_LEASE).then(|| (key.clone(), last))
            })
            .collect();
        for (key, last) in silent {
            let node = self.processes.get(&key).map(|p| p.node_name.clone());
            self.stop_process(&key, Shutdown::Killed, now, log);
            let Some(node) = node.filter(|n| !self.node_is_running(n)) else {
                continue;
            };
            if let Some(row) = self.nodes.get_mut(&node).filter(|r| !r.shut_down) {
                row.last_seen = row.last_seen.min(last);
            }
        }
    }

    fn start_ready_at(&self, node: &str, now: Timestamp) -> Option<Timestamp> {
        if self.faults.hang_on_start.contains(node) {
            None
        } else {
            Some(after(now, self.timing.start_delay))
        }
    }

    fn record_starting(&self, p: &Process, now: Timestamp, log: &mut EventLog) {
        log.record(
            now,
            Some(&self.name),
            EventKind::NodeStarting {
                node: p.node_name.clone(),
                pod: p.pod.clone(),
                version: p.version_text.clone(),
                restart_count: p.restart_count,
            },
        );
    }

    /// The server process is up far enough to look at the database.
    fn on_started(&mut self, key: &ProcessKey, now: Timestamp, log: &mut EventLog) {
        let Some(p) = self.processes.get(key) else {
            return;
        };
        let node = p.node_name.clone();
        let version_text = p.version_text.clone();
        if self.faults.fail_to_start.contains(&node)
            || self.faults.crash_versions.contains(&version_text)
        {
            self.crash(
                key,
                now,
                "Octopus Server failed to start (injected fault)".into(),
                log,
            );
            return;
        }
        let Some(version) = p.version else {
            self.crash(
                key,
                now,
                format!(
                    "cannot determine the Octopus Server version from image tag '{version_text}'"
                ),
                log,
            );
            return;
        };
        if self
            .migration_lock
            .as_ref()
            .is_some_and(|holder| holder != key)
        {
            if let Some(p) = self.processes.get_mut(key) {
                p.phase = ProcessPhase::AwaitingSchemaLock;
            }
            return;
        }
        let inst = self.name.clone();
        match self.schema {
            None => self.begin_migration(key, version, now, log),
            Some(schema) if schema.line == version.schema_line() => self.run(key, now, log),
            Some(schema) if version.schema_line() > schema.line => {
                // Octopus cannot see processes: a node counts as running while its row
                // is not flagged shut down and its heartbeat is fresh.
                let running: Vec<String> = self
                    .nodes
                    .values()
                    .filter(|row| row.name != node && !self.node_is_offline(row, now))
                    .map(|row| row.name.clone())
                    .collect();
                if version.refuses_migration_beside_running_nodes() && !running.is_empty() {
                    log.record(
                        now,
                        Some(&inst),
                        EventKind::SchemaMigrationAborted {
                            node: node.clone(),
                            version: version_text,
                            running_nodes: running.clone(),
                        },
                    );
                    self.crash(
                        key,
                        now,
                        format!(
                            "The database upgrade was aborted because other Octopus Server nodes are still running: {}. Stop all nodes before upgrading.",
                            running.join(", ")
                        ),
                        log,
                    );
                } else {
                    self.begin_migration(key, version, now, log);
                }
            }
            Some(schema) => {
                log.record(
                    now,
                    Some(&inst),
                    EventKind::SchemaNewerThanNode {
                        node,
                        node_version: version_text.clone(),
                        schema: schema.line_text(),
                    },
                );
                self.crash(
                    key,
                    now,
                    format!(
                        "The database schema ({}, upgraded by {}) is newer than this Octopus Server ({version_text}). Upgrade this node.",
                        schema.line_text(),
                        schema.migrated_by
                    ),
                    log,
                );
            }
        }
    }

    fn begin_migration(
        &mut self,
        key: &ProcessKey,
        to: OctopusVersion,
        now: Timestamp,
        log: &mut EventLog,
    ) {
        let until = after(now, self.timing.migration_time);
        self.migration_lock = Some(key.clone());
        let from = self.schema.map(|s| s.line_text());
        let Some(p) = self.processes.get_mut(key) else {
            return;
        };
        p.phase = ProcessPhase::Migrating { until, to };
        let node = p.node_name.clone();
        log.record(
            now,
            Some(&self.name),
            EventKind::SchemaMigrationStarted {
                node,
                from,
                to: format!("{}.{}", to.major, to.minor),
            },
        );
    }

    fn finish_migration(
        &mut self,
        key: &ProcessKey,
        to: OctopusVersion,
        now: Timestamp,
        log: &mut EventLog,
    ) {
        let inst = self.name.clone();
        let Some(p) = self.processes.get(key) else {
            return;
        };
        let node = p.node_name.clone();
        if self.faults.fail_migration {
            self.migration_lock = None;
            log.record(
                now,
                Some(&inst),
                EventKind::SchemaMigrationRolledBack {
                    node,
                    version: p.version_text.clone(),
                    reason: "an upgrade script failed (injected fault)".into(),
                },
            );
            self.wake_lock_waiters(now);
            self.crash(
                key,
                now,
                "The database upgrade failed and was rolled back (injected fault)".into(),
                log,
            );
            return;
        }
        let from = self.schema.map(|s| s.line_text());
        let schema = Schema {
            line: to.schema_line(),
            migrated_by: to,
        };
        self.schema = Some(schema);
        self.migration_lock = None;
        log.record(
            now,
            Some(&inst),
            EventKind::SchemaMigrated {
                node,
                from,
                to: schema.line_text(),
            },
        );
        // Old servers still running now use a schema they do not know.
        for (k, other) in self.processes.iter_mut() {
            let older = other.version.is_some_and(|v| v.schema_line() < schema.line);
            if k != key && other.is_running() && older {
                other.violating_schema = true;
                log.record(
                    now,
                    Some(&inst),
                    EventKind::SchemaViolation {
                        node: other.node_name.clone(),
                        node_version: other.version_text.clone(),
                        schema: schema.line_text(),
                    },
                );
            }
        }
        self.wake_lock_waiters(now);
        self.run(key, now, log);
    }

    fn wake_lock_waiters(&mut self, now: Timestamp) {
        for p in self.processes.values_mut() {
            if p.phase == ProcessPhase::AwaitingSchemaLock {
                p.phase = ProcessPhase::Starting {
                    ready_at: Some(now),
                };
            }
        }
    }

    fn run(&mut self, key: &ProcessKey, now: Timestamp, log: &mut EventLog) {
        let Some(p) = self.processes.get_mut(key) else {
            return;
        };
        p.phase = ProcessPhase::Running { since: now };
        p.consecutive_failures = 0;
        let node = p.node_name.clone();
        let version = p.version_text.clone();
        let pod = p.pod.clone();
        let cap = p.task_cap;
        // The container bootstraps its admin API key into the database on start.
        if let Some(key) = p.admin_api_key.clone() {
            self.add_api_key(key, Role::Administrator);
        }
        let drained = self.register_node(&node, &version, cap, now).drained;
        log.record(
            now,
            Some(&self.name),
            EventKind::NodeRunning {
                node,
                pod,
                version,
                drained,
            },
        );
        self.schedule_tasks(now, log);
    }

    /// A running server writes its row (creating it if missing) on start and on every
    /// heartbeat.
    fn register_node(
        &mut self,
        node: &str,
        version: &str,
        cap: Option<u32>,
        now: Timestamp,
    ) -> &NodeRow {
        let default_cap = self.timing.default_task_cap;
        let row = self
            .nodes
            .entry(node.to_string())
            .or_insert_with(|| NodeRow {
                id: format!("OctopusServerNodes-{node}"),
                name: node.to_string(),
                max_concurrent_tasks: cap.unwrap_or(default_cap),
                drained: false,
                last_seen: now,
                version: version.to_string(),
                shut_down: false,
                last_modified_on: None,
            });
        row.version = version.to_string();
        row.last_seen = now;
        row.shut_down = false;
        if let Some(cap) = cap {
            row.max_concurrent_tasks = cap;
        }
        row
    }

    /// DELETE of a node record. A node that still runs writes it again with its next
    /// heartbeat (as a fresh row, undrained), as Octopus does.
    pub fn delete_node(
        &mut self,
        id: &str,
        now: Timestamp,
        log: &mut EventLog,
    ) -> Result<(), Refusal> {
        let name = self
            .node_by_id(id)
            .map(|r| r.name.clone())
            .ok_or(Refusal::NotFound)?;
        self.nodes.remove(&name);
        log.record(
            now,
            Some(&self.name),
            EventKind::NodeRecordDeleted { node: name },
        );
        self.heartbeat(now);
        Ok(())
    }

    /// Running servers re-create a missing row of theirs.
    fn heartbeat(&mut self, now: Timestamp) {
        let missing: Vec<(String, String, Option<u32>)> = self
            .running_processes()
            .filter(|(_, p)| !self.nodes.contains_key(&p.node_name))
            .map(|(_, p)| (p.node_name.clone(), p.version_text.clone(), p.task_cap))
            .collect();
        for (node, version, cap) in missing {
            self.register_node(&node, &version, cap, now);
        }
    }

    /// The process exits with an error; the kubelet restarts it after a back-off.
    fn crash(&mut self, key: &ProcessKey, now: Timestamp, message: String, log: &mut EventLog) {
        if self.migration_lock.as_ref() == Some(key) {
            self.migration_lock = None;
            self.wake_lock_waiters(now);
        }
        let base = self.timing.crash_backoff_base;
        let max = self.timing.crash_backoff_max;
        let inst = self.name.clone();
        let Some(p) = self.processes.get_mut(key) else {
            return;
        };
        let was_running = p.is_running();
        p.consecutive_failures = p.consecutive_failures.saturating_add(1);
        let doublings = p.consecutive_failures.saturating_sub(1).min(20);
        let backoff = base.saturating_mul(1u32 << doublings).min(max);
        // A real container exits and its kubelet restarts it: the model never does.
        let backoff = if p.heartbeat.is_some() {
            Duration::MAX
        } else {
            backoff
        };
        p.last_termination = Some(Termination {
            reason: "Error".into(),
            message: message.clone(),
            exit_code: 1,
            started_at: p.container_started_at,
            finished_at: now,
        });
        p.phase = ProcessPhase::CrashLoopBackOff {
            until: after(now, backoff),
        };
        let node = p.node_name.clone();
        log.record(
            now,
            Some(&inst),
            EventKind::NodeCrashed {
                node: node.clone(),
                pod: p.pod.clone(),
                version: p.version_text.clone(),
                reason: "Error".into(),
                message,
            },
        );
        if was_running {
            self.node_went_down(&node, now, false, log);
        }
    }

    fn restart_after_backoff(&mut self, key: &ProcessKey, now: Timestamp, log: &mut EventLog) {
        let Some(node) = self.processes.get(key).map(|p| p.node_name.clone()) else {
            return;
        };
        let ready_at = self.start_ready_at(&node, now);
        let Some(p) = self.processes.get_mut(key) else {
            return;
        };
        p.restart_count = p.restart_count.saturating_add(1);
        p.container_started_at = now;
        p.phase = ProcessPhase::Starting { ready_at };
        let snapshot = p.clone();
        self.record_starting(&snapshot, now, log);
    }

    /// The last process of a node is gone: the row keeps its drain flag, tasks it was
    /// executing fail as they would when a server dies under them.
    fn node_went_down(&mut self, node: &str, now: Timestamp, clean: bool, log: &mut EventLog) {
        if self.node_is_running(node) {
            return;
        }
        if let Some(row) = self.nodes.get_mut(node) {
            row.last_seen = now;
            row.shut_down = clean;
        }
        let inst = self.name.clone();
        for t in self.tasks.values_mut() {
            if t.state.is_running() && t.server_node.as_deref() == Some(node) {
                let error = format!(
                    "The Octopus Server node {node} that was executing this task stopped before the task completed."
                );
                t.state = TaskState::Failed;
                t.completed_time = Some(now);
                t.last_updated_time = now;
                t.error_message = Some(error.clone());
                t.cancel_at = None;
                log.record(
                    now,
                    Some(&inst),
                    EventKind::TaskFailed {
                        task: t.id(),
                        name: t.name.clone(),
                        node: Some(node.to_string()),
                        error,
                    },
                );
            }
        }
    }

    // ----- administration through the API ----------------------------------------------

    /// PUT of a node resource: drain flag and task cap.
    pub fn update_node(
        &mut self,
        id: &str,
        drained: bool,
        max_concurrent_tasks: u32,
        now: Timestamp,
        log: &mut EventLog,
    ) -> Result<NodeRow, Refusal> {
        let inst = self.name.clone();
        let row = self
            .nodes
            .values_mut()
            .find(|n| n.id.eq_ignore_ascii_case(id))
            .ok_or(Refusal::NotFound)?;
        let node = row.name.clone();
        if row.drained != drained {
            row.drained = drained;
            let kind = if drained {
                EventKind::NodeDrained { node: node.clone() }
            } else {
                EventKind::NodeUndrained { node: node.clone() }
            };
            log.record(now, Some(&inst), kind);
        }
        if row.max_concurrent_tasks != max_concurrent_tasks {
            row.max_concurrent_tasks = max_concurrent_tasks;
            log.record(
                now,
                Some(&inst),
                EventKind::NodeTaskCapChanged {
                    node,
                    max_concurrent_tasks,
                },
            );
        }
        row.last_modified_on = Some(now);
        let row = row.clone();
        self.schedule_tasks(now, log);
        Ok(row)
    }

    pub fn set_maintenance_mode(&mut self, on: bool, now: Timestamp, log: &mut EventLog) {
        if self.maintenance_mode != on {
            self.maintenance_mode = on;
            let kind = if on {
                EventKind::MaintenanceModeOn
            } else {
                EventKind::MaintenanceModeOff
            };
            log.record(now, Some(&self.name), kind);
        }
        self.maintenance_modified_on = Some(now);
    }

    /// POST /api/tasks (or /api/{spaceId}/tasks): a built-in task by name. A task that
    /// acts on machines belongs to a space: the one named, else the default space; its
    /// arguments are checked against that space's machines and environments.
    #[allow(clippy::too_many_arguments)]
    pub fn create_task(
        &mut self,
        name: &str,
        description: Option<String>,
        arguments: serde_json::Map<String, serde_json::Value>,
        space: Option<&str>,
        role: Role,
        now: Timestamp,
        log: &mut EventLog,
    ) -> Result<u64, Refusal> {
        let inst = self.name.clone();
        if role != Role::Administrator && self.maintenance_mode {
            log.record(
                now,
                Some(&inst),
                EventKind::TaskRefused {
                    name: name.to_string(),
                    reason: "MaintenanceMode".into(),
                },
            );
            return Err(Refusal::MaintenanceMode);
        }
        let Some(known) = task::built_in_task_name(name) else {
            log.record(
                now,
                Some(&inst),
                EventKind::TaskRefused {
                    name: name.to_string(),
                    reason: "UnknownTaskName".into(),
                },
            );
            return Err(Refusal::UnknownTaskName(name.to_string()));
        };
        let space = if task::is_space_task(known) {
            let space = match space {
                Some(id) => self.inventory.space(id),
                None => self.inventory.default_space(),
            }
            .map(|s| s.id.clone())
            .ok_or(Refusal::NotFound)?;
            let errors = self.inventory.argument_errors(known, &space, &arguments);
            if !errors.is_empty() {
                log.record(
                    now,
                    Some(&inst),
                    EventKind::TaskRefused {
                        name: known.to_string(),
                        reason: "InvalidArguments".into(),
                    },
                );
                return Err(Refusal::BadArguments(errors));
            }
            Some(space)
        } else {
            None
        };
        let description = description.unwrap_or_else(|| format!("{known} task"));
        let planned = self.timing.api_task_duration;
        Ok(self.queue_task(
            known.to_string(),
            description,
            arguments,
            true,
            space,
            None,
            planned,
            now,
            log,
        ))
    }

    #[allow(clippy::too_many_arguments)]
    fn queue_task(
        &mut self,
        name: String,
        description: String,
        arguments: serde_json::Map<String, serde_json::Value>,
        system: bool,
        space_id: Option<String>,
        project_id: Option<String>,
        planned: Duration,
        now: Timestamp,
        log: &mut EventLog,
    ) -> u64 {
        let number = self.next_task;
        self.next_task += 1;
        let task = Task {
            number,
            name: name.clone(),
            description,
            arguments,
            state: TaskState::Queued,
            queue_time: now,
            start_time: None,
            completed_time: None,
            last_updated_time: now,
            server_node: None,
            error_message: None,
            system,
            space_id,
            project_id,
            planned,
            cancel_at: None,
        };
        log.record(
            now,
            Some(&self.name),
            EventKind::TaskQueued {
                task: task.id(),
                name,
                system,
            },
        );
        self.tasks.insert(number, task);
        self.schedule_tasks(now, log);
        number
    }

    /// POST /api/tasks/{id}/cancel.
    pub fn cancel_task(
        &mut self,
        number: u64,
        now: Timestamp,
        log: &mut EventLog,
    ) -> Result<(), Refusal> {
        let cancel_at = after(now, self.timing.cancel_delay);
        let inst = self.name.clone();
        let t = self.tasks.get_mut(&number).ok_or(Refusal::NotFound)?;
        match t.state {
            TaskState::Queued => {
                t.state = TaskState::Canceled;
                t.completed_time = Some(now);
                t.last_updated_time = now;
                log.record(
                    now,
                    Some(&inst),
                    EventKind::TaskCanceled {
                        task: t.id(),
                        name: t.name.clone(),
                        node: None,
                    },
                );
            }
            TaskState::Executing => {
                t.state = TaskState::Cancelling;
                t.cancel_at = Some(cancel_at);
                t.last_updated_time = now;
                log.record(now, Some(&inst), EventKind::TaskCancelling { task: t.id() });
            }
            _ => {}
        }
        Ok(())
    }

    // ----- time ------------------------------------------------------------------------

    /// Plays everything that happens up to `now`, in time order, each at its own time.
    pub fn advance(&mut self, now: Timestamp, log: &mut EventLog) {
        self.reap_silent_processes(now, log);
        // Bounded so a modelling bug cannot hang the twin.
        for _ in 0..1_000_000 {
            match self.next_due() {
                Some(t) if t <= now => self.fire(t, log),
                _ => break,
            }
        }
        self.schedule_tasks(now, log);
    }

    fn next_due(&self) -> Option<Timestamp> {
        let processes = self.processes.values().filter_map(Process::due);
        let tasks = self.tasks.values().filter_map(Task::due);
        let generator = [
            self.generator.next_deployment_at,
            self.generator.next_health_check_at,
        ]
        .into_iter()
        .flatten();
        processes.chain(tasks).chain(generator).min()
    }

    fn fire(&mut self, t: Timestamp, log: &mut EventLog) {
        let due_processes: Vec<ProcessKey> = self
            .processes
            .iter()
            .filter(|(_, p)| p.due().is_some_and(|d| d <= t))
            .map(|(k, _)| k.clone())
            .collect();
        for key in due_processes {
            let Some(phase) = self.processes.get(&key).map(|p| p.phase.clone()) else {
                continue;
            };
            match phase {
                ProcessPhase::Starting { .. } => self.on_started(&key, t, log),
                ProcessPhase::Migrating { to, .. } => self.finish_migration(&key, to, t, log),
                ProcessPhase::CrashLoopBackOff { .. } => self.restart_after_backoff(&key, t, log),
                ProcessPhase::AwaitingSchemaLock | ProcessPhase::Running { .. } => {}
            }
        }
        let inst = self.name.clone();
        for task in self.tasks.values_mut() {
            if task.due().is_none_or(|d| d > t) {
                continue;
            }
            let node = task.server_node.clone();
            if task.state == TaskState::Executing {
                task.state = TaskState::Success;
                task.completed_time = Some(t);
                task.last_updated_time = t;
                log.record(
                    t,
                    Some(&inst),
                    EventKind::TaskFinished {
                        task: task.id(),
                        name: task.name.clone(),
                        node: node.unwrap_or_default(),
                    },
                );
            } else {
                task.state = TaskState::Canceled;
                task.completed_time = Some(t);
                task.last_updated_time = t;
                task.cancel_at = None;
                log.record(
                    t,
                    Some(&inst),
                    EventKind::TaskCanceled {
                        task: task.id(),
                        name: task.name.clone(),
                        node,
                    },
                );
            }
        }
        if self.generator.next_deployment_at.is_some_and(|d| d <= t) {
            self.generate_deployment(t, log);
        }
        if self.generator.next_health_check_at.is_some_and(|d| d <= t) {
            self.generate_health_check(t, log);
        }
        self.schedule_tasks(t, log);
    }

    fn deployment_gap(&mut self, config: &GeneratorConfig) -> Duration {
        let mean = 60.0 / config.deployments_per_minute.max(1e-6);
        // Jitter of +-50% keeps arrivals from lining up with node restarts.
        let secs = mean * (0.5 + self.rng.f64());
        Duration::from_secs_f64(secs.clamp(0.001, 86_400.0))
    }

    fn generate_deployment(&mut self, t: Timestamp, log: &mut EventLog) {
        let config = self.generator.config.clone();
        let gap = self.deployment_gap(&config);
        self.generator.next_deployment_at = Some(after(t, gap));
        let inst = self.name.clone();
        let refusal = if self.maintenance_mode {
            self.generator.refused_maintenance_mode += 1;
            Some("MaintenanceMode")
        } else if self.running_processes().next().is_none() {
            self.generator.refused_unavailable += 1;
            Some("NoNodeAvailable")
        } else {
            None
        };
        if let Some(reason) = refusal {
            log.record(
                t,
                Some(&inst),
                EventKind::TaskRefused {
                    name: "Deploy".into(),
                    reason: reason.into(),
                },
            );
            return;
        }
        let min = config.deployment_duration_min;
        let max = config.deployment_duration_max.max(min);
        let span = (max - min).as_secs_f64();
        let planned = min + Duration::from_secs_f64(span * self.rng.f64());
        let n = self.next_deployment;
        self.next_deployment += 1;
        let mut arguments = serde_json::Map::new();
        arguments.insert(
            "DeploymentId".into(),
            serde_json::Value::String(format!("Deployments-{n}")),
        );
        self.generator.deployments_queued += 1;
        self.queue_task(
            "Deploy".into(),
            format!("Deploy Twin Web release 1.0.{n} to Production"),
            arguments,
            false,
            Some("Spaces-1".into()),
            Some("Projects-1".into()),
            planned,
            t,
            log,
        );
    }

    fn generate_health_check(&mut self, t: Timestamp, log: &mut EventLog) {
        let config = self.generator.config.clone();
        let interval = config
            .health_check_interval
            .unwrap_or(Duration::from_secs(60))
            .max(Duration::from_millis(1));
        self.generator.next_health_check_at = Some(after(t, interval));
        // The server schedules its own checks; with no server running nobody does.
        if self.running_processes().next().is_none() {
            return;
        }
        let mut arguments = serde_json::Map::new();
        arguments.insert("EnvironmentId".into(), serde_json::Value::Null);
        self.queue_task(
            "Health".into(),
            "Check deployment target health".into(),
            arguments,
            true,
            Some("Spaces-1".into()),
            None,
            config.health_check_duration,
            t,
            log,
        );
    }

    /// Hands queued tasks, oldest first, to running, undrained nodes with a free slot.
    fn schedule_tasks(&mut self, now: Timestamp, log: &mut EventLog) {
        let queued: Vec<u64> = self
            .tasks
            .values()
            .filter(|t| t.state == TaskState::Queued)
            .map(|t| t.number)
            .collect();
        if queued.is_empty() {
            return;
        }
        let mut load: BTreeMap<String, (usize, usize)> = BTreeMap::new();
        for row in self.nodes.values() {
            if !row.drained && self.node_is_running(&row.name) {
                let cap = row.max_concurrent_tasks as usize;
                load.insert(row.name.clone(), (self.running_task_count(&row.name), cap));
            }
        }
        let inst = self.name.clone();
        for number in queued {
            let pick = load
                .iter()
                .filter(|(_, (running, cap))| running < cap)
                .min_by_key(|(name, (running, _))| (*running, (*name).clone()))
                .map(|(name, _)| name.clone());
            let Some(node) = pick else {
                break;
            };
            if let Some(entry) = load.get_mut(&node) {
                entry.0 += 1;
            }
            if let Some(t) = self.tasks.get_mut(&number) {
                t.state = TaskState::Executing;
                t.start_time = Some(now);
                t.last_updated_time = now;
                t.server_node = Some(node.clone());
                log.record(
                    now,
                    Some(&inst),
                    EventKind::TaskStarted {
                        task: t.id(),
                        name: t.name.clone(),
                        node,
                    },
                );
            }
        }
    }
}

fn elapsed(from: Timestamp, to: Timestamp) -> Duration {
    let millis = to.as_millisecond().saturating_sub(from.as_millisecond());
    Duration::from_millis(u64::try_from(millis).unwrap_or(0))
}

fn guid(rng: &mut fastrand::Rng) -> String {
    let a = rng.u128(..);
    let hex = format!("{a:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}
