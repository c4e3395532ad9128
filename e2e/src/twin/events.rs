//! The twin's flight recorder: every API request and every change of a node, the
//! schema, maintenance mode or a task, stamped with the (model) time it happened.
//! Scenarios assert over it ("never fewer than N-1 nodes serving", "no schema
//! violation"), benchmarks measure waits with it and the demo sums it up, all through
//! [`super::replay`]. Never holds secrets.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// One recorded happening.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Increasing from 1; `/_twin/events?since=N` returns those after N.
    pub seq: u64,
    pub at: Timestamp,
    /// The twin's name for the installation (`installation-1`), if any.
    pub installation: Option<String>,
    #[serde(flatten)]
    pub kind: EventKind,
}

/// What happened. Serialized with a `type` tag, fields alongside.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum EventKind {
    HttpRequest {
        method: String,
        /// The route template, e.g. `/api/octopusservernodes/{id}`.
        route: String,
        status: u16,
        /// `namespace/service` the request was addressed to.
        service: String,
        /// The node that answered, if one did.
        node: Option<String>,
    },
    PodConfigError {
        pod: String,
        reason: String,
        message: String,
    },
    /// The kubelet could not pull the pod's image (the registry lacks it).
    ImagePullFailed {
        pod: String,
        image: String,
        attempt: u32,
    },
    NodeStarting {
        node: String,
        pod: String,
        version: String,
        restart_count: u32,
    },
    NodeRunning {
        node: String,
        pod: String,
        version: String,
        drained: bool,
    },
    NodeCrashed {
        node: String,
        pod: String,
        version: String,
        reason: String,
        message: String,
    },
    NodeStopped {
        node: String,
        pod: String,
        version: String,
        was_running: bool,
    },
    NodeDrained {
        node: String,
    },
    NodeUndrained {
        node: String,
    },
    /// A node's record was deleted through the API.
    NodeRecordDeleted {
        node: String,
    },
    NodeTaskCapChanged {
        node: String,
        max_concurrent_tasks: u32,
    },
    MaintenanceModeOn,
    MaintenanceModeOff,
    SchemaMigrationStarted {
        node: String,
        from: Option<String>,
        to: String,
    },
    SchemaMigrated {
        node: String,
        from: Option<String>,
        to: String,
    },
    /// A schema upgrade refused to run beside running nodes (>= 2023.2.9755).
    SchemaMigrationAborted {
        node: String,
        version: String,
        running_nodes: Vec<String>,
    },
    /// A schema upgrade failed or was killed and rolled back.
    SchemaMigrationRolledBack {
        node: String,
        version: String,
        reason: String,
    },
    /// A node runs against a schema newer than its own version: corruption risk.
    SchemaViolation {
        node: String,
        node_version: String,
        schema: String,
    },
    /// A node refused to start against a schema newer than itself.
    SchemaNewerThanNode {
        node: String,
        node_version: String,
        schema: String,
    },
    TaskQueued {
        task: String,
        name: String,
        system: bool,
    },
    /// A user's attempt to queue work was refused.
    TaskRefused {
        name: String,
        reason: String,
    },
    TaskStarted {
        task: String,
        name: String,
        node: String,
    },
    TaskFinished {
        task: String,
        name: String,
        node: String,
    },
    TaskFailed {
        task: String,
        name: String,
        node: Option<String>,
        error: String,
    },
    TaskCancelling {
        task: String,
    },
    /// A backup of the database was taken (the backup Job's pod asked for it): `schema`
    /// is what it holds, the release that last migrated the schema, if any.
    DatabaseBackedUp {
        backup: String,
        schema: Option<String>,
    },
    TaskCanceled {
        task: String,
        name: String,
        node: Option<String>,
    },
}

/// Append-only event store.
#[derive(Debug, Default)]
pub struct EventLog {
    events: Vec<Event>,
}

impl EventLog {
    pub fn record(&mut self, at: Timestamp, installation: Option<&str>, kind: EventKind) {
        let seq = self.events.len() as u64 + 1;
        self.events.push(Event {
            seq,
            at,
            installation: installation.map(str::to_string),
            kind,
        });
    }

    pub fn all(&self) -> &[Event] {
        &self.events
    }

    /// Events after `seq` (exclusive).
    pub fn since(&self, seq: u64) -> &[Event] {
        let start = usize::try_from(seq)
            .unwrap_or(usize::MAX)
            .min(self.events.len());
        &self.events[start..]
    }
}
