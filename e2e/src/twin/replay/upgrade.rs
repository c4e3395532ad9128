//! An upgrade's milestones, replayed from the log for the benchmarks: when each node was
//! drained, stopped, started and served again, how long its running tasks held it, and
//! the stop-the-world steps (maintenance mode, stops, migration, starts).

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;

use super::{Replay, span};
use crate::twin::EventKind;

/// One task's life, from the node picking it up to its end (finished, failed, canceled).
struct TaskRun<'a> {
    node: &'a str,
    started: Timestamp,
    ended: Option<Timestamp>,
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

/// One node starting on the new version in a stop-the-world upgrade.
#[derive(Clone, Debug)]
pub struct NodeStart {
    pub node: String,
    pub starting: Timestamp,
    pub running: Option<Timestamp>,
}

/// The milestones of a stop-the-world upgrade.
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
pub(crate) fn schema_line(version: &str) -> String {
    version.split('.').take(2).collect::<Vec<_>>().join(".")
}

impl Replay<'_> {
    /// Time of the first event of the whole log after `after` that `pick` accepts.
    pub fn first_after(
        &self,
        after: Timestamp,
        pick: impl Fn(&EventKind) -> bool,
    ) -> Option<Timestamp> {
        self.log()
            .iter()
            .find(|e| e.at > after && pick(&e.kind))
            .map(|e| e.at)
    }

    /// Task runs of the whole log (a task of the span may have started before it).
    fn task_runs(&self) -> BTreeMap<&str, TaskRun<'_>> {
        let mut runs = BTreeMap::new();
        for e in self.log() {
            match &e.kind {
                EventKind::TaskStarted { task, node, .. } => {
                    let run = TaskRun {
                        node,
                        started: e.at,
                        ended: None,
                    };
                    runs.insert(task.as_str(), run);
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

    /// How long the tasks running at `at` (on `node`, or on any node) kept running after
    /// it: the part of a drain no operator can shorten without cancelling work.
    pub fn drain_wait(&self, node: Option<&str>, at: Timestamp) -> Duration {
        let last = self.log().last().map_or(at, |e| e.at);
        self.task_runs()
            .values()
            .filter(|r| node.is_none_or(|n| r.node == n))
            .filter(|r| r.started <= at && r.ended.is_none_or(|end| end > at))
            .map(|r| span(at, r.ended.unwrap_or(last)))
            .max()
            .unwrap_or(Duration::ZERO)
    }

    /// The nodes of a rolling upgrade to `to` in this span, in the order they were
    /// drained (each once).
    pub fn rolling(&self, to: &str) -> Vec<NodeRoll> {
        let mut order: Vec<(&str, Timestamp)> = Vec::new();
        for e in self.events() {
            if let EventKind::NodeDrained { node } = &e.kind
                && !order.iter().any(|(n, _)| n == node)
            {
                order.push((node, e.at));
            }
        }
        order
            .into_iter()
            .map(|(node, drained)| {
                let stopped = self.first_after(drained, |k| {
                    matches!(k, EventKind::NodeStopped { node: n, version, .. }
                        if n == node && version != to)
                });
                let starting = self.first_after(drained, |k| {
                    matches!(k, EventKind::NodeStarting { node: n, version, .. }
                        if n == node && version == to)
                });
                let running = starting.and_then(|s| {
                    self.first_after(s, |k| {
                        matches!(k, EventKind::NodeRunning { node: n, version, .. }
                            if n == node && version == to)
                    })
                });
                let undrained = running.and_then(|r| {
                    self.first_after(
                        r,
                        |k| matches!(k, EventKind::NodeUndrained { node: n } if n == node),
                    )
                });
                NodeRoll {
                    drain_wait: self.drain_wait(Some(node), drained),
                    node: node.to_string(),
                    drained,
                    stopped,
                    starting,
                    running,
                    undrained,
                }
            })
            .collect()
    }

    /// The milestones of a stop-the-world upgrade to `to` in this span.
    pub fn stop_the_world(&self, to: &str) -> StopTheWorld {
        let line = schema_line(to);
        let mut f = StopTheWorld {
            maintenance_on: self
                .first(|k| matches!(k, EventKind::MaintenanceModeOn))
                .map(|e| e.at),
            first_stop: self
                .first(|k| matches!(k, EventKind::NodeStopped { .. }))
                .map(|e| e.at),
            ..StopTheWorld::default()
        };
        let first_new_start = self
            .first(|k| matches!(k, EventKind::NodeStarting { version, .. } if version == to))
            .map(|e| e.at);
        let before = |t: Option<Timestamp>, at: Timestamp| t.is_none_or(|t| at < t);
        for e in self.events() {
            match &e.kind {
                EventKind::NodeDrained { .. } if before(f.first_stop, e.at) => {
                    f.all_drained = Some(e.at);
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
                    f.maintenance_off = Some(e.at);
                }
                _ => {}
            }
        }
        if let Some(drained) = f.all_drained {
            f.drain_wait = self.drain_wait(None, drained);
        }
        f.first_serving_new = self.first_serving_on(to);
        f
    }
}
