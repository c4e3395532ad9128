//! Node processes in real containers (the Octopus Server image on the real node, see
//! `e2e/twin-node`): they connect to this world as to their database, by the connection
//! string they were given, so the installation is the same one a played pod with that
//! connection string joins. They are keyed by the key handed out at start, live as long as
//! their heartbeats, and their requests are answered by their own process (its drain
//! flag, its version) against the installation's shared state, into the one event log.

use jiff::Timestamp;
use octopus_twin_node::{Heartbeat, Phase, Start};

use super::snapshot::phase_name;
use super::{ProcessPhase, ProcessSpec, Secret, World};
use crate::twin::config::{Faults, Timing};

impl World {
    /// Faults of the installation in the database a connection string names (created
    /// empty if no node has connected yet): how tests inject faults into real nodes,
    /// which no Service of the twin's knows.
    pub fn set_database_faults(&mut self, connection_string: &str, faults: Faults) {
        let now = self.clock;
        let index = self.installation_for_database(&Secret::new(connection_string), now);
        if let Some(inst) = self.installations.get_mut(index) {
            inst.faults = faults;
        }
    }

    /// Timing of the installation in the database a connection string names.
    pub fn set_database_timing(&mut self, connection_string: &str, timing: Timing) {
        let now = self.clock;
        let index = self.installation_for_database(&Secret::new(connection_string), now);
        if let Some(inst) = self.installations.get_mut(index) {
            inst.timing = timing;
        }
    }

    /// A backup of the database a connection string names, as a backup tool connected
    /// to it would take one: recorded in the event log with the schema it holds.
    pub fn back_up_database(&mut self, connection_string: &str, backup: String, now: Timestamp) {
        let now = self.advance(now);
        let index = self.installation_for_database(&Secret::new(connection_string), now);
        if let Some((inst, log)) = self.installation_mut(index) {
            let schema = inst.schema.map(|s| s.migrated_by.to_string());
            log.record(
                now,
                Some(&inst.name),
                crate::twin::EventKind::DatabaseBackedUp { backup, schema },
            );
        }
    }

    /// A node process in a real container starts; returns its key.
    pub fn start_remote(&mut self, start: Start, now: Timestamp) -> String {
        let now = self.advance(now);
        let index = self.installation_for_database(&Secret::new(start.connection_string), now);
        self.remote_seq = self.remote_seq.wrapping_add(1);
        let key = format!("{}.{}", start.pod, self.remote_seq);
        let spec = ProcessSpec {
            pod: start.pod,
            node_name: start.node_name,
            version_text: start.version,
            admin_api_key: start.admin_api_key.map(Secret::new),
            task_cap: start.task_cap,
        };
        self.remote.insert(key.clone(), index);
        if let Some((inst, log)) = self.installation_mut(index) {
            inst.start_remote_process(key.clone(), spec, now, log);
        }
        key
    }

    /// The installation a remote process belongs to, while the database knows it.
    pub fn remote_installation(&self, key: &str) -> Option<usize> {
        let index = *self.remote.get(key)?;
        self.installation(index)?
            .processes
            .contains_key(key)
            .then_some(index)
    }

    /// A heartbeat: where the process is, or `None` when it is gone (reaped, stopped).
    pub fn remote_heartbeat(&mut self, key: &str, now: Timestamp) -> Option<Heartbeat> {
        let now = self.advance(now);
        let Some(index) = self.remote_installation(key) else {
            self.remote.remove(key);
            return None;
        };
        let (inst, _) = self.installation_mut(index)?;
        let process = inst.remote_heartbeat(&key.to_string(), now)?;
        let (phase, message) = match &process.phase {
            ProcessPhase::Running { .. } => (Phase::Running, None),
            ProcessPhase::CrashLoopBackOff { .. } => (
                Phase::Exited,
                process.last_termination.as_ref().map(|t| t.message.clone()),
            ),
            other => (Phase::Starting, Some(phase_name(other).to_string())),
        };
        Some(Heartbeat { phase, message })
    }

    /// The process shuts down cleanly (SIGTERM): its node is flagged offline at once.
    pub fn stop_remote(&mut self, key: &str, now: Timestamp) -> bool {
        let now = self.advance(now);
        let Some(index) = self.remote_installation(key) else {
            return false;
        };
        self.remote.remove(key);
        if let Some((inst, log)) = self.installation_mut(index) {
            inst.stop_process(&key.to_string(), super::Shutdown::Graceful, now, log);
        }
        true
    }
}
