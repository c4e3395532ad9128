//! The text of `octopus-operator status`: a summary, the nodes, the upgrade's steps with
//! where it stands, the conditions (why it holds) and the last backup. Pure: the cluster
//! object and the time in, text out.

use std::fmt::Write as _;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::{OctopusCluster, OctopusClusterStatus, UpgradeStatus};

/// Renders the report. `now` dates the ages.
pub fn render(cluster: &OctopusCluster, now: jiff::Timestamp) -> String {
    let mut out = String::new();
    let default = OctopusClusterStatus::default();
    let status = cluster.status.as_ref().unwrap_or(&default);
    let name = cluster.metadata.name.as_deref().unwrap_or_default();
    let namespace = cluster.metadata.namespace.as_deref().unwrap_or_default();
    let or_dash = |v: Option<&str>| v.unwrap_or("-").to_string();
    let fields = [
        ("Cluster", format!("{name} (namespace {namespace})")),
        ("Desired version", cluster.spec.version.clone()),
        (
            "Current version",
            or_dash(status.current_version.as_deref()),
        ),
        ("Schema version", or_dash(status.schema_version.as_deref())),
        ("Phase", or_dash(status.phase.as_deref())),
        ("Ready nodes", or_dash(status.ready_nodes.as_deref())),
    ];
    for (label, value) in fields {
        let _ = writeln!(out, "{:<17}{value}", format!("{label}:"));
    }
    if status.observed_generation != cluster.metadata.generation {
        let _ = writeln!(
            out,
            "{:<17}the operator has not yet seen generation {} (status is of {})",
            "Note:",
            cluster.metadata.generation.unwrap_or_default(),
            status
                .observed_generation
                .map_or_else(|| "none".to_string(), |g| g.to_string())
        );
    }

    out.push_str("\nNodes\n");
    if status.nodes.is_empty() {
        out.push_str("  (none reported yet)\n");
    } else {
        let mut rows = vec![row(&[
            "NAME", "VERSION", "READY", "DRAINED", "TASKS", "OFFLINE", "RESTARTS",
        ])];
        for n in &status.nodes {
            rows.push(vec![
                n.name.clone(),
                n.version.clone().unwrap_or_else(|| "-".into()),
                yes_no(n.ready),
                yes_no(n.drained),
                n.running_tasks.to_string(),
                yes_no(n.offline),
                n.restarts.to_string(),
            ]);
        }
        table(&mut out, &rows);
    }

    out.push_str("\nUpgrade\n");
    match &status.upgrade {
        None => out.push_str("  none\n"),
        Some(up) => upgrade(&mut out, up, now),
    }

    out.push_str("\nConditions\n");
    if status.conditions.is_empty() {
        out.push_str("  (none reported yet)\n");
    } else {
        let mut rows = vec![row(&["TYPE", "STATUS", "REASON", "SINCE", "MESSAGE"])];
        for c in &status.conditions {
            rows.push(vec![
                c.type_.clone(),
                c.status.clone(),
                c.reason.clone(),
                age(&c.last_transition_time, now),
                c.message.clone(),
            ]);
        }
        table(&mut out, &rows);
    }

    out.push_str("\nLast backup\n");
    match &status.last_backup {
        None => out.push_str("  none\n"),
        Some(b) => {
            let completed = b.completed_at.as_ref().map_or_else(
                || "not completed".to_string(),
                |t| format!("completed {} ({} ago)", t.0, age(t, now)),
            );
            let _ = writeln!(
                out,
                "  Job {} before {} -> {}, {completed}",
                b.job_name, b.from_version, b.to_version
            );
            if let Some(secret) = &b.master_key_secret {
                let _ = writeln!(out, "  Master Key copy: Secret {secret}");
            }
        }
    }
    out
}

fn upgrade(out: &mut String, up: &UpgradeStatus, now: jiff::Timestamp) {
    let state = if up.finished_at.is_some() {
        "finished"
    } else if up.stopped_reason.is_some() {
        "stopped"
    } else if up.started_at.is_some() {
        "running"
    } else {
        "not started"
    };
    let _ = writeln!(
        out,
        "  {} -> {} ({} change, {}), {state}",
        up.from,
        up.to,
        up.change,
        up.strategy.as_deref().unwrap_or("no strategy")
    );
    let times = [
        ("started", up.started_at.as_ref()),
        ("step started", up.step_started_at.as_ref()),
        ("finished", up.finished_at.as_ref()),
    ];
    for (what, at) in times {
        if let Some(t) = at {
            let _ = writeln!(out, "  {what} {} ({} ago)", t.0, age(t, now));
        }
    }
    if let Some(reason) = &up.stopped_reason {
        let _ = writeln!(
            out,
            "  stopped: {reason}; it waits for a change of the spec (see Conditions)"
        );
    }
    if up.steps.is_empty() {
        return;
    }
    let mut rows = vec![row(&["", "STEP", "NODE", "STATE"])];
    for s in &up.steps {
        let current = s.state == "Running";
        rows.push(vec![
            if current { "->" } else { "" }.to_string(),
            s.action.clone(),
            s.node.clone().unwrap_or_else(|| "-".into()),
            s.state.to_lowercase(),
        ]);
    }
    table(out, &rows);
    let done = up.steps.iter().filter(|s| s.state == "Done").count();
    let _ = writeln!(out, "  {done} of {} steps done", up.steps.len());
}

fn row(cells: &[&str]) -> Vec<String> {
    cells.iter().map(|c| (*c).to_string()).collect()
}

fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.to_string()
}

/// Left-aligned columns, two spaces apart, indented by two; the last column unpadded.
fn table(out: &mut String, rows: &[Vec<String>]) {
    let columns = rows.iter().map(Vec::len).max().unwrap_or_default();
    let widths: Vec<usize> = (0..columns)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or_default()
        })
        .collect();
    for r in rows {
        let mut line = String::from("  ");
        for (i, cell) in r.iter().enumerate() {
            if i + 1 == r.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<width$}  ", width = widths[i]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
}

/// `42s`, `5m`, `3h`, `2d` since `t`.
fn age(t: &Time, now: jiff::Timestamp) -> String {
    let secs = now.duration_since(t.0).as_secs().max(0);
    match secs {
        0..=119 => format!("{secs}s"),
        120..=7199 => format!("{}m", secs / 60),
        7200..=172_799 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 3-node cluster halfway through a patch roll, as the operator writes it.
    const FIXTURE: &str = r#"{
      "apiVersion": "octopusoperator.dev/v1alpha1",
      "kind": "OctopusCluster",
      "metadata": {"name": "octo", "namespace": "team-a", "generation": 2},
      "spec": {
        "version": "2024.1.200", "replicas": 3,
        "database": {"connectionStringSecretRef": {"name": "db", "key": "cs"}},
        "masterKeySecretRef": {"name": "octopus", "key": "masterKey"},
        "apiKeySecretRef": {"name": "octopus", "key": "apiKey"}
      },
      "status": {
        "observedGeneration": 2,
        "targetVersion": "2024.1.200",
        "schemaVersion": "2024.1.100",
        "readyNodes": "2/3",
        "phase": "Upgrading",
        "conditions": [
          {"type": "Ready", "status": "False", "reason": "NodesNotReady", "message": "2/3 nodes ready", "observedGeneration": 2, "lastTransitionTime": "2026-01-01T11:59:30Z"},
          {"type": "Progressing", "status": "True", "reason": "Upgrading", "message": "Step replace octo-1 toward 2024.1.200", "observedGeneration": 2, "lastTransitionTime": "2026-01-01T11:55:00Z"},
          {"type": "UpgradeBlocked", "status": "False", "reason": "NotBlocked", "message": "", "observedGeneration": 2, "lastTransitionTime": "2026-01-01T10:00:00Z"}
        ],
        "nodes": [
          {"name": "octo-0", "version": "2024.1.100", "ready": true, "drained": false, "runningTasks": 2, "offline": false, "restarts": 0},
          {"name": "octo-1", "version": "2024.1.200", "ready": false, "drained": true, "runningTasks": 0, "offline": false, "restarts": 0},
          {"name": "octo-2", "version": "2024.1.200", "ready": true, "drained": false, "runningTasks": 1, "offline": false, "restarts": 1}
        ],
        "upgrade": {
          "from": "2024.1.100", "to": "2024.1.200", "change": "patch", "strategy": "rolling",
          "step": "replace", "node": "octo-1",
          "startedAt": "2026-01-01T11:55:00Z", "stepStartedAt": "2026-01-01T11:59:30Z",
          "steps": [
            {"action": "drain", "node": "octo-2", "state": "Done"},
            {"action": "replace", "node": "octo-2", "state": "Done"},
            {"action": "undrain", "node": "octo-2", "state": "Done"},
            {"action": "drain", "node": "octo-1", "state": "Done"},
            {"action": "replace", "node": "octo-1", "state": "Running"},
            {"action": "undrain", "node": "octo-1", "state": "Pending"}
          ]
        },
        "lastBackup": {"jobName": "octo-backup-2024-1-100", "fromVersion": "2024.1.0", "toVersion": "2024.1.100", "masterKeySecret": "octo-master-key-2024-1-0", "completedAt": "2025-12-31T12:00:00Z"}
      }
    }"#;

    fn fixture() -> OctopusCluster {
        serde_json::from_str(FIXTURE).expect("fixture")
    }

    fn now() -> jiff::Timestamp {
        "2026-01-01T12:00:00Z".parse().expect("now")
    }

    #[test]
    fn a_roll_in_progress_reads_as_a_report() {
        let text = render(&fixture(), now());
        let expected = "\
Cluster:         octo (namespace team-a)
Desired version: 2024.1.200
Current version: -
Schema version:  2024.1.100
Phase:           Upgrading
Ready nodes:     2/3

Nodes
  NAME    VERSION     READY  DRAINED  TASKS  OFFLINE  RESTARTS
  octo-0  2024.1.100  yes    no       2      no       0
  octo-1  2024.1.200  no     yes      0      no       0
  octo-2  2024.1.200  yes    no       1      no       1

Upgrade
  2024.1.100 -> 2024.1.200 (patch change, rolling), running
  started 2026-01-01T11:55:00Z (5m ago)
  step started 2026-01-01T11:59:30Z (30s ago)
      STEP     NODE    STATE
      drain    octo-2  done
      replace  octo-2  done
      undrain  octo-2  done
      drain    octo-1  done
  ->  replace  octo-1  running
      undrain  octo-1  pending
  4 of 6 steps done

Conditions
  TYPE            STATUS  REASON         SINCE  MESSAGE
  Ready           False   NodesNotReady  30s    2/3 nodes ready
  Progressing     True    Upgrading      5m     Step replace octo-1 toward 2024.1.200
  UpgradeBlocked  False   NotBlocked     2h

Last backup
  Job octo-backup-2024-1-100 before 2024.1.0 -> 2024.1.100, completed 2025-12-31T12:00:00Z (24h ago)
  Master Key copy: Secret octo-master-key-2024-1-0
";
        assert_eq!(text, expected, "\n{text}");
    }

    #[test]
    fn a_stopped_upgrade_says_it_waits_and_a_new_cluster_says_so() {
        let mut c = fixture();
        let status = c.status.as_mut().expect("status");
        if let Some(up) = status.upgrade.as_mut() {
            up.stopped_reason = Some("NodeFailedAfterMigration".into());
        }
        let text = render(&c, now());
        assert!(
            text.contains("(patch change, rolling), stopped\n"),
            "{text}"
        );
        assert!(
            text.contains("  stopped: NodeFailedAfterMigration; it waits for a change of the spec (see Conditions)\n"),
            "{text}"
        );

        let mut fresh = fixture();
        fresh.status = None;
        let text = render(&fresh, now());
        assert!(text.contains("Phase:           -\n"), "{text}");
        assert!(
            text.contains("the operator has not yet seen generation 2"),
            "{text}"
        );
        assert!(text.contains("\nNodes\n  (none reported yet)\n"), "{text}");
        assert!(text.contains("\nUpgrade\n  none\n"), "{text}");
        assert!(text.contains("\nLast backup\n  none\n"), "{text}");
    }
}
