//! What the demo shows while it waits: the cluster as the operator reports it (read
//! through the `OctopusCluster` types), the operator's Events, and either one plain line
//! per change or a screen redrawn every second.

use std::collections::{BTreeSet, VecDeque};
use std::io::Write as _;
use std::path::Path;
use std::time::Instant;

use k8s_openapi::api::core::v1::Event as KubeEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::Api;
use kube::api::ListParams;
use octopus_operator::api::{NodeStatus, OctopusCluster};
use serde::Deserialize;

/// The cluster as the operator reports it.
pub struct Observed {
    pub desired: String,
    pub current: Option<String>,
    pub ready_nodes: Option<String>,
    pub phase: Option<String>,
    pub schema: Option<String>,
    pub generation: Option<i64>,
    pub upgrade: Upgrade,
    pub nodes: Vec<NodeStatus>,
    pub conditions: Vec<Condition>,
}

/// `status.upgrade` in its wire form: steps, states and strategies are shown as the
/// operator writes them, whatever Rust types carry them inside the operator.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Upgrade {
    pub from: String,
    /// Empty when there was no upgrade yet.
    pub to: String,
    pub change: String,
    pub strategy: Option<String>,
    pub step: Option<String>,
    pub node: Option<String>,
    pub finished_at: Option<String>,
    pub steps: Vec<Step>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Step {
    pub action: String,
    pub node: Option<String>,
    pub state: String,
}

impl From<&OctopusCluster> for Observed {
    fn from(c: &OctopusCluster) -> Self {
        let status = c.status.clone().unwrap_or_default();
        let upgrade = status
            .upgrade
            .as_ref()
            .and_then(|u| serde_json::to_value(u).ok())
            .and_then(|u| serde_json::from_value(u).ok())
            .unwrap_or_default();
        Self {
            desired: c.spec.version.clone(),
            current: status.current_version,
            ready_nodes: status.ready_nodes,
            phase: status.phase,
            schema: status.schema_version,
            generation: c.metadata.generation,
            upgrade,
            nodes: status.nodes,
            conditions: status.conditions,
        }
    }
}

impl Observed {
    /// The condition is True for the current generation (with that reason, when given).
    pub fn condition(&self, type_: &str, reason: Option<&str>) -> bool {
        self.conditions.iter().any(|c| {
            c.type_ == type_
                && c.status == "True"
                && c.observed_generation == self.generation
                && reason.is_none_or(|r| c.reason == r)
        })
    }

    /// The message of the condition of `type_`, if any.
    pub fn message(&self, type_: &str) -> &str {
        self.conditions
            .iter()
            .find(|c| c.type_ == type_)
            .map_or("", |c| c.message.as_str())
    }

    /// The upgrade to `version` finished, every node runs it and the cluster is Ready.
    pub fn finished(&self, version: &str) -> bool {
        self.current.as_deref() == Some(version)
            && self.upgrade.to == version
            && self.upgrade.finished_at.is_some()
            && self.condition("Ready", None)
    }

    pub fn step_line(&self) -> String {
        let u = &self.upgrade;
        if u.to.is_empty() {
            return "upgrade: none".into();
        }
        let state = if u.finished_at.is_some() {
            "finished".to_string()
        } else {
            let on = u
                .node
                .as_ref()
                .map(|n| format!(" on {n}"))
                .unwrap_or_default();
            format!("step {}{on}", u.step.as_deref().unwrap_or("-"))
        };
        let strategy = u.strategy.as_deref().unwrap_or("-");
        format!(
            "upgrade: {} {} -> {} ({strategy}): {state}",
            u.change, u.from, u.to
        )
    }

    /// One line: the cluster, the upgrade step, every node's version and state.
    pub fn plain_line(&self, name: &str) -> String {
        let nodes: Vec<String> = self
            .nodes
            .iter()
            .map(|n| {
                let ready = if n.ready { "ready" } else { "not-ready" };
                let drained = if n.drained { ",drained" } else { "" };
                format!(
                    "{} {} {ready}{drained} tasks={}",
                    n.name,
                    n.version.as_deref().unwrap_or(""),
                    n.running_tasks
                )
            })
            .collect();
        let or_dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
        format!(
            "octc {name}: desired={} current={} ready={} status={} schema={} | {} | nodes: {}",
            self.desired,
            or_dash(&self.current),
            or_dash(&self.ready_nodes),
            or_dash(&self.phase),
            or_dash(&self.schema),
            self.step_line(),
            nodes.join(";")
        )
    }
}

/// One Event of the operator about an OctopusCluster.
pub struct Shown {
    /// uid and count: a repeated Event is shown again.
    key: String,
    line: String,
}

/// The operator's Events on OctopusClusters in `namespace`, oldest first (none when
/// they cannot be read: the view goes on without them).
pub async fn new_events(client: &kube::Client, namespace: &str) -> Vec<Shown> {
    let api: Api<KubeEvent> = Api::namespaced(client.clone(), namespace);
    let params = ListParams::default().fields("involvedObject.kind=OctopusCluster");
    let Ok(list) = api.list(&params).await else {
        return Vec::new();
    };
    let mut events = list.items;
    events.sort_by(|a, b| {
        a.metadata
            .creation_timestamp
            .cmp(&b.metadata.creation_timestamp)
    });
    events
        .into_iter()
        .map(|e| Shown {
            key: format!(
                "{}/{}",
                e.metadata.uid.unwrap_or_default(),
                e.count.unwrap_or(1)
            ),
            line: format!(
                "{:<7} {:<24} {}",
                e.type_.unwrap_or_default(),
                e.reason.unwrap_or_default(),
                e.message.unwrap_or_default()
            ),
        })
        .collect()
}

/// The terminal: narration lines, the live view, the Events seen.
pub struct Screen {
    interactive: bool,
    started: Instant,
    namespace: String,
    name: String,
    columns: usize,
    /// The last lines said, repeated at the top of the redrawn screen.
    narration: VecDeque<String>,
    recent_events: VecDeque<String>,
    seen_events: BTreeSet<String>,
    last_line: String,
}

impl Screen {
    pub fn new(interactive: bool, namespace: &str, name: &str) -> Self {
        let columns = std::process::Command::new("tput")
            .arg("cols")
            .stderr(std::process::Stdio::inherit())
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(120);
        Self {
            interactive,
            started: Instant::now(),
            namespace: namespace.into(),
            name: name.into(),
            columns,
            narration: VecDeque::new(),
            recent_events: VecDeque::new(),
            seen_events: BTreeSet::new(),
            last_line: String::new(),
        }
    }

    pub fn interactive(&self) -> bool {
        self.interactive
    }

    pub fn stamp(&self) -> String {
        format!("[+{:>3}s]", self.started.elapsed().as_secs())
    }

    pub fn say(&mut self, text: &str) {
        let line = format!("{} {text}", self.stamp());
        println!("{line}");
        self.narration.push_back(line);
        if self.narration.len() > 4 {
            self.narration.pop_front();
        }
    }

    pub fn banner(&self, text: &str) {
        println!("\n{} ==== {text} ====", self.stamp());
    }

    pub fn hide_cursor(&self, hide: bool) {
        if self.interactive {
            print!("{}", if hide { "\x1b[?25l" } else { "\x1b[?25h" });
            let _ = std::io::stdout().flush();
        }
    }

    /// Shows what the operator reports: a line when it changed (plain), or the whole
    /// picture with `table` (`kubectl get octc`'s output) redrawn (interactive).
    pub fn show(
        &mut self,
        title: &str,
        observed: &Observed,
        events: Vec<Shown>,
        table: Option<&str>,
    ) {
        for event in events {
            if !self.seen_events.insert(event.key) {
                continue;
            }
            if self.interactive {
                self.recent_events
                    .push_back(format!("{} {}", self.stamp(), event.line));
                if self.recent_events.len() > 8 {
                    self.recent_events.pop_front();
                }
            } else {
                self.say(&format!("event   {}", event.line));
            }
        }
        if self.interactive {
            let frame = self.frame(title, observed, table.unwrap_or_default());
            print!("\x1b[H\x1b[J{frame}");
            let _ = std::io::stdout().flush();
        } else {
            let line = observed.plain_line(&self.name);
            if line != self.last_line {
                self.say(&line);
                self.last_line = line;
            }
        }
    }

    fn frame(&self, title: &str, o: &Observed, table: &str) -> String {
        let cols = self.columns;
        let cut = |s: &str, width: usize| s.chars().take(width).collect::<String>();
        let mut f = format!(
            "Octopus operator demo  |  {title}  |  {}s\n\n",
            self.started.elapsed().as_secs()
        );
        for said in &self.narration {
            f += &format!("{}\n", cut(said, cols));
        }
        f += &format!("\n$ kubectl get octc -n {}\n{table}\n", self.namespace);
        f += &format!(
            "{:<10} {:<12} {:<7} {:<8} RUNNING-TASKS\n",
            "NODE", "VERSION", "READY", "DRAINED"
        );
        for n in &o.nodes {
            f += &format!(
                "{:<10} {:<12} {:<7} {:<8} {}\n",
                n.name,
                n.version.as_deref().unwrap_or(""),
                n.ready,
                n.drained,
                n.running_tasks
            );
        }
        f += &format!(
            "\nschema {}  |  {}\n",
            o.schema.as_deref().unwrap_or("-"),
            o.step_line()
        );
        let marks: Vec<String> = o
            .upgrade
            .steps
            .iter()
            .map(|s| {
                let mark = match s.state.as_str() {
                    "Done" => "[x]",
                    "Running" => "[>]",
                    _ => "[_]",
                };
                let on = s
                    .node
                    .as_ref()
                    .map(|n| format!("({n})"))
                    .unwrap_or_default();
                format!("{mark}{}{on}", s.action)
            })
            .collect();
        f += &wrap(&marks, "  ", cols);
        f += &format!("\nEvents of octc/{}:\n", self.name);
        for e in &self.recent_events {
            f += &format!("  {}\n", cut(e, cols.saturating_sub(3)));
        }
        f
    }
}

/// `words` joined by `gap`, broken into lines of at most `width` columns.
fn wrap(words: &[String], gap: &str, width: usize) -> String {
    let mut out = String::new();
    let mut line = String::new();
    for word in words {
        if !line.is_empty() && line.len() + gap.len() + word.len() > width {
            out += &format!("{line}\n");
            line.clear();
        }
        if !line.is_empty() {
            line += gap;
        }
        line += word;
    }
    if !line.is_empty() {
        out += &format!("{line}\n");
    }
    out
}

/// The last `n` lines of a log, on stderr (after a failure).
pub fn tail(log: &Path, n: usize) {
    let Ok(text) = std::fs::read_to_string(log) else {
        return;
    };
    if text.is_empty() {
        return;
    }
    eprintln!("--- last lines of {}", log.display());
    let lines: Vec<&str> = text.lines().collect();
    for line in &lines[lines.len().saturating_sub(n)..] {
        eprintln!("{line}");
    }
}
