//! The one replay of the twin's flight recorder ([`Event`]s): which nodes served, on
//! which version, at every moment, and what happened to tasks, drains, maintenance mode,
//! the schema and Octopus's API over a span of the log. Scenarios assert with it, the
//! benchmarks measure with it ([`upgrade`]) and the demo prints its summary from it.
//!
//! Pure: events in, answers out. The log is in sequence order (the twin appends), so a
//! span is a slice of it plus the nodes as they stood where it begins.

pub mod invariants;
pub mod upgrade;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use jiff::Timestamp;

use crate::twin::{Event, EventKind};

/// A point in the log: after an event's sequence number, or at a moment (model time).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mark {
    Seq(u64),
    At(Timestamp),
}

impl Mark {
    /// Whether `e` happened at or before this mark.
    fn covers(self, e: &Event) -> bool {
        match self {
            Self::Seq(seq) => e.seq <= seq,
            Self::At(at) => e.at <= at,
        }
    }
}

/// A node as the log last showed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeState {
    /// Version of its last process.
    pub version: String,
    /// Its process is up (between `NodeRunning` and `NodeStopped`/`NodeCrashed`).
    pub running: bool,
    /// Octopus has it drained: it takes no new tasks.
    pub drained: bool,
}

impl NodeState {
    /// Running and not drained: it takes users' work.
    pub fn serving(&self) -> bool {
        self.running && !self.drained
    }
}

/// Every node the log has shown running, by name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Nodes(BTreeMap<String, NodeState>);

impl Nodes {
    /// Applies one event; true when it changed what a node is (only node events do). A
    /// node seen only stopping or draining (its start before the span) is not invented.
    pub fn apply(&mut self, kind: &EventKind) -> bool {
        let (node, change): (&String, fn(&mut NodeState)) = match kind {
            EventKind::NodeRunning {
                node,
                version,
                drained,
                ..
            } => {
                let state = NodeState {
                    version: version.clone(),
                    running: true,
                    drained: *drained,
                };
                self.0.insert(node.clone(), state);
                return true;
            }
            EventKind::NodeStopped { node, .. } | EventKind::NodeCrashed { node, .. } => {
                (node, |n| n.running = false)
            }
            EventKind::NodeDrained { node } => (node, |n| n.drained = true),
            EventKind::NodeUndrained { node } => (node, |n| n.drained = false),
            _ => return false,
        };
        if let Some(state) = self.0.get_mut(node) {
            change(state);
        }
        true
    }

    pub fn get(&self, node: &str) -> Option<&NodeState> {
        self.0.get(node)
    }

    /// How many nodes serve (running and not drained).
    pub fn serving(&self) -> usize {
        self.0.values().filter(|n| n.serving()).count()
    }

    /// How many nodes serve on `version`.
    pub fn serving_on(&self, version: &str) -> usize {
        self.0
            .values()
            .filter(|n| n.serving() && n.version == version)
            .count()
    }

    /// Running nodes and their versions, drained or not.
    pub fn running(&self) -> BTreeMap<&str, &str> {
        self.0
            .iter()
            .filter(|(_, n)| n.running)
            .map(|(name, n)| (name.as_str(), n.version.as_str()))
            .collect()
    }

    /// The distinct versions running (drained nodes included: they still run).
    pub fn running_versions(&self) -> BTreeSet<&str> {
        self.running().into_values().collect()
    }
}

/// The nodes at one moment of a span: where it begins (`event` is `None`), or right
/// after an event that changed a node.
#[derive(Clone, Debug)]
pub struct Moment<'a> {
    pub event: Option<&'a Event>,
    pub nodes: Nodes,
}

/// `to - from`, zero when `to` is earlier.
pub fn span(from: Timestamp, to: Timestamp) -> Duration {
    Duration::try_from(to.duration_since(from)).unwrap_or(Duration::ZERO)
}

/// A span of the twin's event log, replayed.
#[derive(Clone, Debug)]
pub struct Replay<'a> {
    /// The whole log the span was cut from (task runs may begin before the span).
    log: &'a [Event],
    /// The span: `log[begin..end]`.
    begin: usize,
    end: usize,
    /// The nodes as they stood at `begin`.
    start: Nodes,
}

impl<'a> Replay<'a> {
    /// The whole log.
    pub fn new(log: &'a [Event]) -> Self {
        Self {
            log,
            begin: 0,
            end: log.len(),
            start: Nodes::default(),
        }
    }

    /// The part of this span after `mark` (the nodes as they stood at the mark carried in).
    #[must_use]
    pub fn since(&self, mark: Mark) -> Self {
        let cut = self.begin + self.events().partition_point(|e| mark.covers(e));
        let mut start = self.start.clone();
        for e in &self.log[self.begin..cut] {
            start.apply(&e.kind);
        }
        Self {
            begin: cut,
            start,
            ..self.clone()
        }
    }

    /// The part of this span up to `mark` (inclusive).
    #[must_use]
    pub fn until(&self, mark: Mark) -> Self {
        let end = self.begin + self.events().partition_point(|e| mark.covers(e));
        Self {
            end,
            ..self.clone()
        }
    }

    /// The events of the span.
    pub fn events(&self) -> &'a [Event] {
        &self.log[self.begin..self.end]
    }

    /// The whole log the span was cut from.
    pub fn log(&self) -> &'a [Event] {
        self.log
    }

    /// The nodes where the span begins, then after every event of it that changed one.
    pub fn moments(&self) -> Vec<Moment<'a>> {
        let mut nodes = self.start.clone();
        let mut moments = vec![Moment {
            event: None,
            nodes: nodes.clone(),
        }];
        for e in self.events() {
            if nodes.apply(&e.kind) {
                moments.push(Moment {
                    event: Some(e),
                    nodes: nodes.clone(),
                });
            }
        }
        moments
    }

    /// The nodes where the span ends.
    pub fn nodes_at_end(&self) -> Nodes {
        self.moments()
            .pop()
            .map(|m| m.nodes)
            .unwrap_or_else(|| self.start.clone())
    }

    /// The fewest nodes serving at any moment of the span (its start included).
    pub fn min_serving(&self) -> usize {
        self.moments()
            .iter()
            .map(|m| m.nodes.serving())
            .min()
            .unwrap_or(0)
    }

    /// The moments two or more versions ran at once.
    pub fn mixed_versions(&self) -> Vec<Moment<'a>> {
        self.moments()
            .into_iter()
            .filter(|m| m.nodes.running_versions().len() > 1)
            .collect()
    }

    /// The first moment of the span a node serves on `version`.
    pub fn first_serving_on(&self, version: &str) -> Option<Timestamp> {
        self.moments()
            .iter()
            .skip(1)
            .find(|m| m.nodes.serving_on(version) > 0)
            .and_then(|m| m.event.map(|e| e.at))
    }

    /// How many events of the span `pick` accepts.
    pub fn count(&self, pick: impl Fn(&EventKind) -> bool) -> usize {
        self.events().iter().filter(|e| pick(&e.kind)).count()
    }

    /// The first event of the span `pick` accepts.
    pub fn first(&self, pick: impl Fn(&EventKind) -> bool) -> Option<&'a Event> {
        self.events().iter().find(|e| pick(&e.kind))
    }

    /// The last event of the span `pick` accepts.
    pub fn last(&self, pick: impl Fn(&EventKind) -> bool) -> Option<&'a Event> {
        self.events().iter().rfind(|e| pick(&e.kind))
    }

    /// Nodes in the order they were drained (a node drained twice appears twice).
    pub fn drained(&self) -> Vec<&'a str> {
        self.events()
            .iter()
            .filter_map(|e| match &e.kind {
                EventKind::NodeDrained { node } => Some(node.as_str()),
                _ => None,
            })
            .collect()
    }

    /// How often each node's process on `version` was stopped: with a roll away from
    /// `version`, how often each node was replaced.
    pub fn stopped_on(&self, version: &str) -> BTreeMap<&'a str, usize> {
        let mut stops = BTreeMap::new();
        for e in self.events() {
            if let EventKind::NodeStopped {
                node, version: v, ..
            } = &e.kind
                && v == version
            {
                *stops.entry(node.as_str()).or_default() += 1;
            }
        }
        stops
    }

    /// When maintenance mode went on (`true`) and off (`false`), in order.
    pub fn maintenance_mode(&self) -> Vec<(Timestamp, bool)> {
        self.events()
            .iter()
            .filter_map(|e| match e.kind {
                EventKind::MaintenanceModeOn => Some((e.at, true)),
                EventKind::MaintenanceModeOff => Some((e.at, false)),
                _ => None,
            })
            .collect()
    }

    /// What happened to the schema: migrations, and what must never happen.
    pub fn schema(&self) -> Schema {
        let mut s = Schema::default();
        for e in self.events() {
            match e.kind {
                EventKind::SchemaMigrated { .. } => s.migrated += 1,
                EventKind::SchemaViolation { .. } => s.violations += 1,
                EventKind::SchemaMigrationAborted { .. } => s.aborted += 1,
                EventKind::SchemaMigrationRolledBack { .. } => s.rolled_back += 1,
                _ => {}
            }
        }
        s
    }

    /// Task outcomes in the span.
    pub fn tasks(&self) -> Tasks {
        let mut t = Tasks::default();
        for e in self.events() {
            match e.kind {
                EventKind::TaskStarted { .. } => t.started += 1,
                EventKind::TaskFinished { .. } => t.finished += 1,
                EventKind::TaskFailed { .. } => t.failed += 1,
                EventKind::TaskCanceled { .. } => t.canceled += 1,
                EventKind::TaskRefused { .. } => t.refused += 1,
                _ => {}
            }
        }
        t
    }

    /// What reached Octopus's API in the span.
    pub fn requests(&self) -> Requests {
        let mut r = Requests::default();
        for e in self.events() {
            if let EventKind::HttpRequest {
                method,
                route,
                status,
                ..
            } = &e.kind
            {
                r.total += 1;
                if matches!(method.as_str(), "PUT" | "POST") {
                    r.writes += 1;
                }
                if *status >= 400 {
                    r.errors += 1;
                }
                *r.by_route.entry(format!("{method} {route}")).or_default() += 1;
            }
        }
        r
    }
}

/// Schema happenings in a span.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Schema {
    /// Migrations that finished (creating the schema counts).
    pub migrated: usize,
    /// A node ran against a schema newer than itself: corruption risk.
    pub violations: usize,
    /// A migration refused to run beside running nodes.
    pub aborted: usize,
    /// A migration failed or was killed.
    pub rolled_back: usize,
}

/// Task outcomes in a span.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tasks {
    pub started: usize,
    pub finished: usize,
    pub failed: usize,
    pub canceled: usize,
    /// Users' attempts to queue a deployment that Octopus refused.
    pub refused: usize,
}

/// What reached Octopus's API in a span.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Requests {
    pub total: usize,
    /// PUT and POST: changes the operator asked for.
    pub writes: usize,
    /// Answered with a status >= 400.
    pub errors: usize,
    /// Requests by route template, e.g. `GET /api/octopusservernodes/summary`.
    pub by_route: BTreeMap<String, usize>,
}

#[cfg(test)]
mod tests;
