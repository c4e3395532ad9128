//! What must hold over an upgrade, whatever happened to the operator meanwhile (killed,
//! cut off from the API server, answered with errors): read from the twin's log only, so
//! the same checks judge every world the twin plays. Each broken rule is one [`Violation`]
//! naming the moment it broke; `make trials` counts them (goal 0).
//!
//! Rules of every upgrade: no node ran against a newer schema, no migration ran beside old
//! nodes, no task died with its node, and at the end every node runs the target, none is
//! drained and maintenance mode is off. A rolling upgrade never has two nodes out of
//! service at once, stops a node only while drained and asks each new node for its version
//! before it takes work again; a stop-the-world upgrade turns maintenance mode on before
//! the first stop, never runs two versions at once, and no old node runs once the schema
//! migrated.

use std::fmt;

use super::upgrade::schema_line;
use super::{Mark, Replay};
use crate::twin::EventKind;

/// How the upgrade moves the nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    /// One node at a time, the others serving (a patch).
    Rolling,
    /// Maintenance mode, all nodes stopped, the schema migrated, all started (a minor).
    StopTheWorld,
}

/// The upgrade a span of the log should show.
#[derive(Clone, Copy, Debug)]
pub struct Expected<'a> {
    pub strategy: Strategy,
    pub from: &'a str,
    pub to: &'a str,
    /// Nodes of the cluster.
    pub nodes: usize,
}

/// One broken rule, with the moment it broke.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub rule: &'static str,
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.rule, self.detail)
    }
}

fn violation(rule: &'static str, detail: impl Into<String>) -> Violation {
    Violation {
        rule,
        detail: detail.into(),
    }
}

/// Every rule `span` (the upgrade, from before its first step to after its end) breaks.
pub fn check(span: &Replay<'_>, expected: &Expected<'_>) -> Vec<Violation> {
    let mut found = common(span, expected);
    match expected.strategy {
        Strategy::Rolling => found.extend(rolling(span, expected)),
        Strategy::StopTheWorld => found.extend(stop_the_world(span, expected)),
    }
    found
}

fn common(span: &Replay<'_>, expected: &Expected<'_>) -> Vec<Violation> {
    let mut found = Vec::new();
    let schema = span.schema();
    if schema.violations > 0 {
        found.push(violation(
            "schema violation",
            format!(
                "{} node start(s) ran against a newer schema",
                schema.violations
            ),
        ));
    }
    if schema.aborted > 0 {
        found.push(violation(
            "migration beside running nodes",
            format!(
                "{} migration(s) refused: old nodes still ran",
                schema.aborted
            ),
        ));
    }
    let failed = span.tasks().failed;
    if failed > 0 {
        found.push(violation(
            "task lost",
            format!("{failed} task(s) failed: their node stopped under them"),
        ));
    }
    let end = span.nodes_at_end();
    let running = end.running();
    let on_target = running.values().filter(|v| **v == expected.to).count();
    if running.len() != expected.nodes || on_target != expected.nodes {
        found.push(violation(
            "upgrade not finished",
            format!(
                "at the end running {running:?}, want {} on {}",
                expected.nodes, expected.to
            ),
        ));
    }
    let drained: Vec<&str> = running
        .keys()
        .copied()
        .filter(|n| end.get(n).is_some_and(|s| s.drained))
        .collect();
    if !drained.is_empty() {
        found.push(violation(
            "node left drained",
            format!("{drained:?} drained at the end"),
        ));
    }
    if span.maintenance_mode().last().is_some_and(|(_, on)| *on) {
        found.push(violation("maintenance mode left on", "on at the end"));
    }
    found
}

fn rolling(span: &Replay<'_>, expected: &Expected<'_>) -> Vec<Violation> {
    let mut found = Vec::new();
    let floor = expected.nodes.saturating_sub(1);
    if let Some(m) = span
        .moments()
        .into_iter()
        .find(|m| m.nodes.serving() < floor)
    {
        found.push(violation(
            "two nodes out",
            format!(
                "{} of {} serving after event {:?}",
                m.nodes.serving(),
                expected.nodes,
                m.event.map(|e| e.seq)
            ),
        ));
    }
    if span.count(|k| matches!(k, EventKind::MaintenanceModeOn)) > 0 {
        found.push(violation(
            "maintenance mode in a roll",
            "a rolling upgrade turned maintenance mode on",
        ));
    }
    // Every stop of an old process found its node drained (its work had moved away).
    for m in span.moments().windows(2) {
        let Some(e) = m[1].event else { continue };
        if let EventKind::NodeStopped { node, version, .. } = &e.kind
            && version == expected.from
            && m[0].nodes.get(node).is_some_and(|n| !n.drained)
        {
            found.push(violation(
                "stopped undrained",
                format!("{node} stopped at event {} while not drained", e.seq),
            ));
        }
    }
    // Each new node answered for its own version before it was undrained.
    for node in dedup(span.drained()) {
        let Some(up) = span.first(|k| {
            matches!(k, EventKind::NodeRunning { node: n, version, .. }
                if n == node && version == expected.to)
        }) else {
            continue; // "upgrade not finished" says it
        };
        let after = span.since(Mark::Seq(up.seq));
        let undrained =
            after.first(|k| matches!(k, EventKind::NodeUndrained { node: n } if n == node));
        let before = undrained.map_or(after.clone(), |u| after.until(Mark::Seq(u.seq)));
        let verified = before.count(|k| {
            matches!(k, EventKind::HttpRequest { method, route, status: 200, node: Some(n), .. }
                if method == "GET" && route == "/api" && n == node)
        }) > 0;
        if !verified {
            found.push(violation(
                "version not verified",
                format!(
                    "{node} undrained at event {:?} without answering GET /api since it \
                     started on {}",
                    undrained.map(|u| u.seq),
                    expected.to
                ),
            ));
        }
    }
    found
}

fn stop_the_world(span: &Replay<'_>, expected: &Expected<'_>) -> Vec<Violation> {
    let mut found = Vec::new();
    let on = span.first(|k| matches!(k, EventKind::MaintenanceModeOn));
    let first_stop = span
        .first(|k| matches!(k, EventKind::NodeStopped { version, .. } if version == expected.from));
    if let Some(stop) = first_stop
        && on.is_none_or(|on| on.seq > stop.seq)
    {
        found.push(violation(
            "stopped before maintenance mode",
            format!("first stop at event {} with maintenance mode off", stop.seq),
        ));
    }
    if let Some(m) = span.mixed_versions().first() {
        found.push(violation(
            "two versions at once",
            format!(
                "{:?} after event {:?}",
                m.nodes.running(),
                m.event.map(|e| e.seq)
            ),
        ));
    }
    let line = schema_line(expected.to);
    let migrated = span
        .first(|k| matches!(k, EventKind::SchemaMigrated { to, .. } if schema_line(to) == line));
    match migrated {
        None => found.push(violation(
            "schema not migrated",
            format!("no migration to {line}"),
        )),
        Some(migrated) => {
            let old = span
                .since(Mark::Seq(migrated.seq))
                .moments()
                .into_iter()
                .find(|m| m.nodes.running().values().any(|v| *v != expected.to));
            if let Some(m) = old {
                found.push(violation(
                    "old node after migration",
                    format!(
                        "{:?} after event {:?}, the schema migrated at {}",
                        m.nodes.running(),
                        m.event.map(|e| e.seq),
                        migrated.seq
                    ),
                ));
            }
        }
    }
    found
}

/// Names in first-seen order, each once.
fn dedup(names: Vec<&str>) -> Vec<&str> {
    let mut seen = Vec::new();
    for n in names {
        if !seen.contains(&n) {
            seen.push(n);
        }
    }
    seen
}

#[cfg(test)]
mod tests {
    use jiff::Timestamp;

    use super::*;
    use crate::twin::Event;

    const FROM: &str = "2024.1.100";
    const PATCH: &str = "2024.1.200";
    const MINOR: &str = "2024.2.50";

    fn log(kinds: Vec<EventKind>) -> Vec<Event> {
        kinds
            .into_iter()
            .zip(1..)
            .map(|(kind, seq)| Event {
                seq,
                at: Timestamp::from_second(1_000_000_000 + i64::try_from(seq).unwrap_or_default())
                    .unwrap_or_default(),
                installation: Some("installation-1".into()),
                kind,
            })
            .collect()
    }

    fn running(node: &str, version: &str, drained: bool) -> EventKind {
        EventKind::NodeRunning {
            node: node.into(),
            pod: node.into(),
            version: version.into(),
            drained,
        }
    }

    fn stopped(node: &str, version: &str) -> EventKind {
        EventKind::NodeStopped {
            node: node.into(),
            pod: node.into(),
            version: version.into(),
            was_running: true,
        }
    }

    fn drained(node: &str) -> EventKind {
        EventKind::NodeDrained { node: node.into() }
    }

    fn undrained(node: &str) -> EventKind {
        EventKind::NodeUndrained { node: node.into() }
    }

    /// The node answers GET /api at its own address.
    fn asked(node: &str) -> EventKind {
        EventKind::HttpRequest {
            method: "GET".into(),
            route: "/api".into(),
            status: 200,
            service: format!("ns/octo-nodes/{node}"),
            node: Some(node.into()),
        }
    }

    fn migrated(node: &str) -> EventKind {
        EventKind::SchemaMigrated {
            node: node.into(),
            from: Some(FROM.into()),
            to: MINOR.into(),
        }
    }

    const NODES: [&str; 2] = ["octo-0", "octo-1"];

    fn start(version: &str) -> Vec<EventKind> {
        NODES.iter().map(|n| running(n, version, false)).collect()
    }

    /// One node's trip through a roll, with its checks unless `skip`.
    fn roll(node: &str, skip_drain: bool, skip_ask: bool) -> Vec<EventKind> {
        let mut kinds = Vec::new();
        if !skip_drain {
            kinds.push(drained(node));
        }
        kinds.push(stopped(node, FROM));
        kinds.push(running(node, PATCH, !skip_drain));
        if !skip_ask {
            kinds.push(asked(node));
        }
        if !skip_drain {
            kinds.push(undrained(node));
        }
        kinds
    }

    fn rules(kinds: Vec<EventKind>, strategy: Strategy, to: &str) -> Vec<&'static str> {
        let events = log(kinds);
        let expected = Expected {
            strategy,
            from: FROM,
            to,
            nodes: NODES.len(),
        };
        // As the trials do: from after the cluster came up.
        let span = Replay::new(&events).since(Mark::Seq(NODES.len() as u64));
        check(&span, &expected)
            .into_iter()
            .map(|v| v.rule)
            .collect()
    }

    #[test]
    fn a_careful_roll_breaks_no_rule() {
        let mut kinds = start(FROM);
        kinds.extend(roll("octo-1", false, false));
        kinds.extend(roll("octo-0", false, false));
        assert_eq!(rules(kinds, Strategy::Rolling, PATCH), Vec::<&str>::new());
    }

    #[test]
    fn a_roll_that_skips_checks_or_takes_two_out_is_caught() {
        let mut kinds = start(FROM);
        kinds.extend(roll("octo-1", true, false));
        kinds.extend(roll("octo-0", false, true));
        let broken = rules(kinds, Strategy::Rolling, PATCH);
        assert!(broken.contains(&"stopped undrained"), "{broken:?}");
        assert!(broken.contains(&"version not verified"), "{broken:?}");

        let mut kinds = start(FROM);
        kinds.extend([drained("octo-1"), drained("octo-0")]);
        kinds.extend(roll("octo-1", true, false));
        kinds.extend(roll("octo-0", true, false));
        kinds.extend([undrained("octo-1"), undrained("octo-0")]);
        let broken = rules(kinds, Strategy::Rolling, PATCH);
        assert!(broken.contains(&"two nodes out"), "{broken:?}");
    }

    #[test]
    fn a_careful_stop_the_world_breaks_no_rule() {
        let mut kinds = start(FROM);
        kinds.push(EventKind::MaintenanceModeOn);
        kinds.extend(NODES.iter().map(|n| stopped(n, FROM)));
        kinds.push(migrated("octo-0"));
        kinds.extend(NODES.iter().map(|n| running(n, MINOR, false)));
        kinds.push(EventKind::MaintenanceModeOff);
        assert_eq!(
            rules(kinds, Strategy::StopTheWorld, MINOR),
            Vec::<&str>::new()
        );
    }

    #[test]
    fn an_old_node_after_the_migration_and_maintenance_left_on_are_caught() {
        let mut kinds = start(FROM);
        kinds.push(stopped("octo-0", FROM));
        kinds.push(EventKind::MaintenanceModeOn);
        kinds.push(migrated("octo-0"));
        kinds.push(running("octo-0", MINOR, false));
        kinds.push(stopped("octo-1", FROM));
        kinds.push(running("octo-1", MINOR, true));
        let broken = rules(kinds, Strategy::StopTheWorld, MINOR);
        for rule in [
            "stopped before maintenance mode",
            "two versions at once",
            "old node after migration",
            "maintenance mode left on",
            "node left drained",
        ] {
            assert!(broken.contains(&rule), "{rule} not in {broken:?}");
        }
    }
}
