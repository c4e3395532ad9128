//! Read-only pictures of the world for tests and the `/_twin` admin routes. Secrets
//! (connection strings, API keys) are never part of them.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::Serialize;

use super::{Installation, PodRuntimeStatus, ProcessPhase, World};
use crate::twin::config::{Faults, GeneratorConfig, Timing};

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct InstallationSnapshot {
    /// The twin's name for it, as used in events (`installation-1`).
    pub name: String,
    /// The InstallationId `/api` reports.
    pub installation_id: String,
    /// `namespace/service` of the Services in front of it.
    pub services: Vec<String>,
    pub schema: Option<SchemaSnapshot>,
    pub maintenance_mode: bool,
    pub nodes: Vec<NodeSnapshot>,
    pub processes: Vec<ProcessSnapshot>,
    /// Number of tasks per state (`Queued`, `Executing`, `Success`, ...).
    pub tasks: BTreeMap<String, usize>,
    pub generator: GeneratorSnapshot,
    pub timing: Timing,
    pub faults: Faults,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SchemaSnapshot {
    /// major.minor
    pub line: String,
    pub migrated_by: String,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NodeSnapshot {
    pub id: String,
    pub name: String,
    pub drained: bool,
    pub offline: bool,
    pub running: bool,
    pub last_seen: Timestamp,
    pub version: String,
    pub max_concurrent_tasks: u32,
    pub running_tasks: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ProcessSnapshot {
    pub pod: String,
    pub node: String,
    pub version: String,
    /// Starting, AwaitingSchemaLock, Migrating, Running, CrashLoopBackOff.
    pub phase: String,
    pub restart_count: u32,
    pub violating_schema: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GeneratorSnapshot {
    pub config: GeneratorConfig,
    pub deployments_queued: u64,
    pub refused_maintenance_mode: u64,
    pub refused_unavailable: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PodSnapshot {
    pub namespace: String,
    pub name: String,
    pub installation: Option<String>,
    pub status: Option<PodRuntimeStatus>,
}

/// Everything: `/_twin/state`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TwinState {
    pub now: Timestamp,
    pub installations: Vec<InstallationSnapshot>,
    pub pods: Vec<PodSnapshot>,
    pub services: Vec<String>,
}

pub fn phase_name(phase: &ProcessPhase) -> &'static str {
    match phase {
        ProcessPhase::Starting { .. } => "Starting",
        ProcessPhase::AwaitingSchemaLock => "AwaitingSchemaLock",
        ProcessPhase::Migrating { .. } => "Migrating",
        ProcessPhase::Running { .. } => "Running",
        ProcessPhase::CrashLoopBackOff { .. } => "CrashLoopBackOff",
    }
}

impl World {
    pub fn snapshot_installation(&self, index: usize) -> Option<InstallationSnapshot> {
        let inst = self.installation(index)?;
        let now = self.now();
        let services = self
            .service_names()
            .into_iter()
            .filter(|(ns, svc)| self.installation_for_service(ns, svc) == Some(index))
            .map(|(ns, svc)| format!("{ns}/{svc}"))
            .collect();
        Some(snapshot(inst, services, now))
    }

    pub fn snapshot_service(&self, namespace: &str, service: &str) -> Option<InstallationSnapshot> {
        self.snapshot_installation(self.installation_for_service(namespace, service)?)
    }

    pub fn state(&self) -> TwinState {
        let installations = (0..self.installations().len())
            .filter_map(|i| self.snapshot_installation(i))
            .collect();
        let pods = self
            .pod_uids()
            .into_iter()
            .map(|(ns, name, _)| PodSnapshot {
                installation: self.pod_installation(&ns, &name),
                status: self.pod_status(&ns, &name),
                namespace: ns,
                name,
            })
            .collect();
        TwinState {
            now: self.now(),
            installations,
            pods,
            services: self
                .service_names()
                .into_iter()
                .map(|(ns, svc)| format!("{ns}/{svc}"))
                .collect(),
        }
    }
}

fn snapshot(inst: &Installation, services: Vec<String>, now: Timestamp) -> InstallationSnapshot {
    let nodes = inst
        .nodes
        .values()
        .map(|row| NodeSnapshot {
            id: row.id.clone(),
            name: row.name.clone(),
            drained: row.drained,
            offline: inst.node_is_offline(row, now),
            running: inst.node_is_running(&row.name),
            last_seen: inst.node_last_seen(row, now),
            version: row.version.clone(),
            max_concurrent_tasks: row.max_concurrent_tasks,
            running_tasks: inst.running_task_count(&row.name),
        })
        .collect();
    let processes = inst
        .processes
        .values()
        .map(|p| ProcessSnapshot {
            pod: p.pod.clone(),
            node: p.node_name.clone(),
            version: p.version_text.clone(),
            phase: phase_name(&p.phase).to_string(),
            restart_count: p.restart_count,
            violating_schema: p.violating_schema,
        })
        .collect();
    let mut tasks = BTreeMap::new();
    for t in inst.tasks.values() {
        *tasks.entry(t.state.as_str().to_string()).or_insert(0) += 1;
    }
    InstallationSnapshot {
        name: inst.name.clone(),
        installation_id: inst.installation_id.clone(),
        services,
        schema: inst.schema.map(|s| SchemaSnapshot {
            line: s.line_text(),
            migrated_by: s.migrated_by.to_string(),
        }),
        maintenance_mode: inst.maintenance_mode,
        nodes,
        processes,
        tasks,
        generator: GeneratorSnapshot {
            config: inst.generator.config.clone(),
            deployments_queued: inst.generator.deployments_queued,
            refused_maintenance_mode: inst.generator.refused_maintenance_mode,
            refused_unavailable: inst.generator.refused_unavailable,
        },
        timing: inst.timing.clone(),
        faults: inst.faults.clone(),
    }
}
