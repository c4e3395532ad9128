//! Figures read from the twin's flight recorder alone: when each node was drained,
//! stopped, started and served again, how long its running tasks held it, how many nodes
//! served at the worst moment, and what reached Octopus's API. Pure: events in, times out.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use octopus_e2e::twin::{Event, EventKind};

/// `to - from`, zero when `to` is earlier.
pub fn span(from: Timestamp, to: Timestamp) -> Duration {
    Duration::try_from(to.duration_since(from)).unwrap_or(Duration::ZERO)
}

/// Events in the window (since, until].
pub fn window(
    events: &[Event],
    since: Timestamp,
    until: Timestamp,
) -> impl Iterator<Item = &Event> {
    events.iter().filter(move |e| e.at > since && e.at <= until)
}

/// Time of the first event after `after` that `pick` accepts.
pub fn first_after(
    events: &[Event],
    after: Timestamp,
    pick: impl Fn(&EventKind) -> bool,
) -> Option<Timestamp> {
    events
        .iter()
        .find(|e| e.at > after && pick(&e.kind))
        .map(|e| e.at)
}

/// One task's life, from the node picking it up to its end (finished, failed, canceled).
struct TaskRun {
    node: String,
    started: Timestamp,
    ended: Option<Timestamp>,
}

fn task_runs(events: &[Event]) -> BTreeMap<&str, TaskRun> {
    let mut runs = BTreeMap::new();
    for e in events {
        match &e.kind {
            EventKind::TaskStarted { task, node, .. } => {
                runs.insert(
                    task.as_str(),
                    TaskRun {
                        node: node.clone(),
                        started: e.at,
                        ended: None,
                    },
                );
            }
            EventKind::TaskFinished { task, .. }
            | EventKind::TaskFailed { task, .. }
            | EventKind::TaskCanceled { task, .. } => {
                if let Some(run) = runs.get_mut(task.as_str())
                    && run.ended.is_none()
                {
                    run.ended = Some(e.at);
                }
            }
            _ => {}
        }
    }
    runs
}

/// How long the tasks running at `at` (on `node`, or on any node) kept running after it:
/// the part of a drain no operator can shorten without cancelling work.
pub fn drain_wait(events: &[Event], node: Option<&str>, at: Timestamp) -> Duration {
    let last = events.last().map_or(at, |e| e.at);
    task_runs(events)
        .values()
        .filter(|r| node.is_none_or(|n| r.node == n))
        .filter(|r| r.started <= at && r.ended.is_none_or(|end| end > at))
        .map(|r| span(at, r.ended.unwrap_or(last)))
        .max()
        .unwrap_or(Duration::ZERO)
}

#[derive(Clone, Debug)]
struct NodeState {
    version: String,
    running: bool,
    drained: bool,
}

/// Every node's version and whether it serves (running and not drained), replayed event
/// by event.
#[derive(Clone, Debug, Default)]
struct Nodes(BTreeMap<String, NodeState>);

impl Nodes {
    fn apply(&mut self, kind: &EventKind) {
        match kind {
            EventKind::NodeRunning {
                node,
                version,
                drained,
                ..
            } => {
                self.0.insert(
                    node.clone(),
                    NodeState {
                        version: version.clone(),
                        running: true,
                        drained: *drained,
                    },
                );
            }
            EventKind::NodeStopped { node, .. } | EventKind::NodeCrashed { node, .. } => {
                if let Some(n) = self.0.get_mut(node) {
                    n.running = false;
                }
            }
            EventKind::NodeDrained { node } => {
                if let Some(n) = self.0.get_mut(node) {
                    n.drained = true;
                }
            }
            EventKind::NodeUndrained { node } => {
                if let Some(n) = self.0.get_mut(node) {
                    n.drained = false;
                }
            }
            _ => {}
        }
    }

    fn serving(&self, version: Option<&str>) -> usize {
        self.0
            .values()
            .filter(|n| n.running && !n.drained && version.is_none_or(|v| n.version == v))
            .count()
    }
}

/// The fewest nodes serving at any moment of (since, until].
pub fn min_serving(events: &[Event], since: Timestamp, until: Timestamp) -> usize {
    let mut nodes = Nodes::default();
    let mut at_since = 0;
    let mut min = usize::MAX;
    for e in events.iter().take_while(|e| e.at <= until) {
        nodes.apply(&e.kind);
        if e.at <= since {
            at_since = nodes.serving(None);
        } else {
            min = min.min(nodes.serving(None));
        }
    }
    min.min(at_since)
}

/// The first moment after `since` a node serves on `version`.
pub fn first_serving_on(events: &[Event], since: Timestamp, version: &str) -> Option<Timestamp> {
    let mut nodes = Nodes::default();
    for e in events {
        nodes.apply(&e.kind);
        if e.at > since && nodes.serving(Some(version)) > 0 {
            return Some(e.at);
        }
    }
    None
}

/// One node's trip through a rolling upgrade.
#[derive(Clone, Debug)]
pub struct NodeRoll {
    pub node: String,
    pub drained: Timestamp,
    /// Its tasks running when it was drained kept it this long.
    pub drain_wait: Duration,
    /// The old process stopped (pod deleted).
    pub stopped: Option<Timestamp>,
    /// The new pod's container started on the new version.
    pub starting: Option<Timestamp>,
    /// The new process is up (the twin's start delay after `starting`).
    pub running: Option<Timestamp>,
    pub undrained: Option<Timestamp>,
}

impl NodeRoll {
    /// The twin's start time of the new process.
    pub fn start_delay(&self) -> Duration {
        match (self.starting, self.running) {
            (Some(s), Some(r)) => span(s, r),
            _ => Duration::ZERO,
        }
    }

    /// When the node's tasks were done.
    pub fn tasks_done(&self) -> Timestamp {
        self.drained
            .checked_add(self.drain_wait)
            .unwrap_or(self.drained)
    }
}

/// The nodes of a rolling upgrade to `to` after `since`, in the order they were drained.
pub fn rolling(events: &[Event], since: Timestamp, to: &str) -> Vec<NodeRoll> {
    let mut order: Vec<(String, Timestamp)> = Vec::new();
    for e in events.iter().filter(|e| e.at > since) {
        if let EventKind::NodeDrained { node } = &e.kind
            && !order.iter().any(|(n, _)| n == node)
        {
            order.push((node.clone(), e.at));
        }
    }
    order
        .into_iter()
        .map(|(node, drained)| {
            let stopped = first_after(events, drained, |k| {
                matches!(k, EventKind::NodeStopped { node: n, version, .. }
                    if *n == node && version != to)
            });
            let starting = first_after(events, drained, |k| {
                matches!(k, EventKind::NodeStarting { node: n, version, .. }
                    if *n == node && version == to)
            });
            let running = starting.and_then(|s| {
                first_after(events, s, |k| {
                    matches!(k, EventKind::NodeRunning { node: n, version, .. }
                        if *n == node && version == to)
                })
            });
            let undrained = running.and_then(|r| {
                first_after(
                    events,
                    r,
                    |k| matches!(k, EventKind::NodeUndrained { node: n } if *n == node),
                )
            });
            NodeRoll {
                drain_wait: drain_wait(events, Some(&node), drained),
                node,
                drained,
                stopped,
                starting,
                running,
                undrained,
            }
        })
        .collect()
}

/// One node starting on the new version in a stop-the-world upgrade.
#[derive(Clone, Debug)]
pub struct NodeStart {
    pub node: String,
    pub starting: Timestamp,
    pub running: Option<Timestamp>,
}

/// The milestones of a stop-the-world upgrade to `to` after `since`.
#[derive(Clone, Debug, Default)]
pub struct StopTheWorld {
    pub maintenance_on: Option<Timestamp>,
    /// The last node drained before the first stop.
    pub all_drained: Option<Timestamp>,
    /// Tasks running when the last node was drained kept running this long.
    pub drain_wait: Duration,
    pub first_stop: Option<Timestamp>,
    /// The last old-version process stopped.
    pub all_stopped: Option<Timestamp>,
    pub migration_started: Option<Timestamp>,
    pub migrated: Option<Timestamp>,
    pub starts: Vec<NodeStart>,
    pub first_running_new: Option<Timestamp>,
    /// A node runs the new version and is not drained: users are served again.
    pub first_serving_new: Option<Timestamp>,
    pub maintenance_off: Option<Timestamp>,
}

impl StopTheWorld {
    pub fn migration(&self) -> Duration {
        match (self.migration_started, self.migrated) {
            (Some(s), Some(m)) => span(s, m),
            _ => Duration::ZERO,
        }
    }

    /// Σ of the nodes' start times on the new version, migration excluded (the
    /// StatefulSet starts them one by one: OrderedReady).
    pub fn start_delays(&self) -> Duration {
        let total: Duration = self
            .starts
            .iter()
            .filter_map(|s| s.running.map(|r| span(s.starting, r)))
            .sum();
        total.saturating_sub(self.migration())
    }
}

/// `major.minor` of a version: the schema line the twin names in migration events.
fn schema_line(version: &str) -> String {
    version.split('.').take(2).collect::<Vec<_>>().join(".")
}

pub fn stop_the_world(events: &[Event], since: Timestamp, to: &str) -> StopTheWorld {
    let line = schema_line(to);
    let mut f = StopTheWorld {
        maintenance_on: first_after(events, since, |k| matches!(k, EventKind::MaintenanceModeOn)),
        first_stop: first_after(events, since, |k| {
            matches!(k, EventKind::NodeStopped { .. })
        }),
        ..StopTheWorld::default()
    };
    let first_new_start = first_after(
        events,
        since,
        |k| matches!(k, EventKind::NodeStarting { version, .. } if version == to),
    );
    let before = |t: Option<Timestamp>, at: Timestamp| t.is_none_or(|t| at < t);
    for e in events.iter().filter(|e| e.at > since) {
        match &e.kind {
            EventKind::NodeDrained { .. } if before(f.first_stop, e.at) => {
                f.all_drained = Some(e.at)
            }
            EventKind::NodeStopped { version, .. }
                if version != to && before(first_new_start, e.at) =>
            {
                f.all_stopped = Some(e.at);
            }
            EventKind::SchemaMigrationStarted { to: v, .. }
                if schema_line(v) == line && f.migration_started.is_none() =>
            {
                f.migration_started = Some(e.at);
            }
            EventKind::SchemaMigrated { to: v, .. }
                if schema_line(v) == line && f.migrated.is_none() =>
            {
                f.migrated = Some(e.at);
            }
            EventKind::NodeStarting { node, version, .. }
                if version == to && !f.starts.iter().any(|s| s.node == *node) =>
            {
                f.starts.push(NodeStart {
                    node: node.clone(),
                    starting: e.at,
                    running: None,
                });
            }
            EventKind::NodeRunning { node, version, .. } if version == to => {
                f.first_running_new.get_or_insert(e.at);
                if let Some(s) = f
                    .starts
                    .iter_mut()
                    .find(|s| s.node == *node && s.running.is_none())
                {
                    s.running = Some(e.at);
                }
            }
            EventKind::MaintenanceModeOff if f.maintenance_off.is_none() => {
                f.maintenance_off = Some(e.at)
            }
            _ => {}
        }
    }
    if let Some(drained) = f.all_drained {
        f.drain_wait = drain_wait(events, None, drained);
    }
    f.first_serving_new = first_serving_on(events, since, to);
    f
}

/// What reached Octopus's API in a window.
#[derive(Clone, Debug, Default)]
pub struct Requests {
    pub total: usize,
    /// PUT and POST: changes the operator asked for.
    pub writes: usize,
    /// Answered with a status >= 400.
    pub errors: usize,
    /// Requests by route template, e.g. `GET /api/octopusservernodes/summary`.
    pub by_route: BTreeMap<String, usize>,
}

pub fn requests(events: &[Event], since: Timestamp, until: Timestamp) -> Requests {
    let mut r = Requests::default();
    for e in window(events, since, until) {
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

/// Task outcomes in a window.
#[derive(Clone, Debug, Default)]
pub struct Tasks {
    pub started: usize,
    pub finished: usize,
    pub failed: usize,
    pub canceled: usize,
    /// Users' attempts to queue a deployment that Octopus refused.
    pub refused: usize,
}

pub fn tasks(events: &[Event], since: Timestamp, until: Timestamp) -> Tasks {
    let mut t = Tasks::default();
    for e in window(events, since, until) {
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
