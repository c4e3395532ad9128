//! What a person or a monitoring system sees of the operator binary during an upgrade:
//! `/metrics` scraped while a patch roll runs (the per-cluster series move, the Octopus
//! calls are counted), and `octopus-operator status` / `kubectl octopus status` against
//! the real cluster object. Fails (never skips) when the control plane is unreachable.
//!
//! Runs in the played world, whatever OCTOPUS_E2E_WORLD says: its operator is a host
//! process reaching the twin's load balancer, not yet a process in the node.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use octopus_e2e::cluster::kubectl_binary;
use octopus_e2e::operator_process::{OperatorProcess, operator_binary, sample};
use octopus_e2e::scenario::{Scenario, World, must, spec};
use octopus_e2e::twin::{Faults, Timing, TwinConfig};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(120);

/// The value of `label` in a series line.
fn label<'a>(line: &'a str, label: &str) -> Option<&'a str> {
    let start = line.find(&format!("{label}=\""))? + label.len() + 2;
    let len = line[start..].find('"')?;
    Some(&line[start..start + len])
}

fn series<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .collect()
}

/// Total of a counter family over all its label sets.
fn total(text: &str, name: &str) -> f64 {
    series(text, name)
        .iter()
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// `octopus-operator status` as a separate process; stdout, or the failure.
async fn status_command(
    program: &Path,
    args: &[&str],
    envs: &[(&str, &std::ffi::OsStr)],
) -> String {
    let mut command = tokio::process::Command::new(program);
    command.args(args);
    for (k, v) in envs {
        command.env(k, v);
    }
    let out = command.output().await.expect("running the status command");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{} {args:?}: {}\n{stdout}{}",
        program.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_and_status_shows_the_roll() {
    let twin = TwinConfig {
        timing: Timing {
            start_delay: Duration::from_millis(300),
            ..Timing::default()
        },
        ..TwinConfig::default()
    };
    let s = must(Scenario::start_without_operator_in(World::Played, "observe", twin).await);
    let flags = [format!("--leader-election-namespace={}", s.ns.name())];
    let operator = must(OperatorProcess::start(&s, "operator", &flags).await);
    must(operator.wait_for("/readyz", 200, WAIT).await);
    must(s.create_cluster("octo", spec("2024.1.100", 3)).await);
    must(
        s.wait_condition("octo", "Ready", true, Some("Ready"), WAIT)
            .await,
    );

    let (_, before) = operator.get("/metrics").await.expect("metrics");
    let info = series(&before, "octopus_operator_cluster_info");
    assert_eq!(info.len(), 1, "{before}");
    assert_eq!(label(info[0], "current_version"), Some("2024.1.100"));
    assert_eq!(label(info[0], "desired_version"), Some("2024.1.100"));
    assert_eq!(sample(&before, "octopus_operator_leader "), Some(1.0));
    assert!(series(&before, "octopus_operator_upgrade_step").is_empty());
    let requests_before = total(&before, "octopus_operator_octopus_requests_total");
    assert!(requests_before > 0.0, "{before}");

    // Every Octopus answer takes 400 ms from now on, so each step (even drain and undrain,
    // one request and one reconcile each) stays in /metrics across several 150 ms scrapes.
    let slow = Faults {
        latency: Duration::from_millis(400),
        ..Faults::default()
    };
    s.twin.set_faults(s.ns.name(), "octo", slow);
    // Scrape through the roll; run `status` once while it runs.
    must(s.patch_spec("octo", json!({"version": "2024.1.200"})).await);
    let binary = must(operator_binary().await);
    let kubeconfig = s.cluster.kubeconfig().as_os_str().to_owned();
    let mut steps = BTreeSet::new();
    let mut excerpt = None;
    let mut mid_roll = None;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (_, text) = operator.get("/metrics").await.expect("metrics");
        for line in series(&text, "octopus_operator_upgrade_step") {
            steps.insert(label(line, "step").unwrap_or_default().to_string());
            if excerpt.is_none() {
                let wanted = |l: &&str| {
                    [
                        "octopus_operator_cluster_",
                        "octopus_operator_upgrade_",
                        "octopus_operator_octopus_requests_total",
                        "octopus_operator_leader",
                    ]
                    .iter()
                    .any(|p| l.starts_with(p))
                };
                excerpt = Some(text.lines().filter(wanted).collect::<Vec<_>>().join("\n"));
            }
        }
        if mid_roll.is_none() && !steps.is_empty() {
            let ns = s.ns.name();
            let args = ["status", "octo", "-n", ns];
            mid_roll = Some(status_command(&binary, &args, &[("KUBECONFIG", &kubeconfig)]).await);
        }
        let c = must(s.clusters().get("octo").await.map_err(anyhow::Error::from));
        let done = c.status.as_ref().is_some_and(|st| {
            st.current_version.as_deref() == Some("2024.1.200")
                && st.upgrade.as_ref().is_some_and(|u| u.finished_at.is_some())
        });
        if done {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the roll did not finish"
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    println!("/metrics during the roll:\n{}", excerpt.unwrap_or_default());
    println!("upgrade steps seen in /metrics: {steps:?}");
    assert!(
        steps.len() >= 2 && steps.contains("drain") && steps.contains("undrain"),
        "upgrade_step did not move through the roll: {steps:?}"
    );

    // The status write that ends the upgrade is the one the series come from.
    let after = must(
        async {
            for _ in 0..50 {
                let (_, text) = operator.get("/metrics").await.expect("metrics");
                if series(&text, "octopus_operator_upgrade_step").is_empty() {
                    return Ok(text);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            anyhow::bail!("upgrade_step stayed after the upgrade finished")
        }
        .await,
    );
    let info = series(&after, "octopus_operator_cluster_info");
    assert_eq!(
        label(info[0], "current_version"),
        Some("2024.1.200"),
        "{after}"
    );
    assert_eq!(label(info[0], "desired_version"), Some("2024.1.200"));
    let requests_after = total(&after, "octopus_operator_octopus_requests_total");
    assert!(
        requests_after > requests_before,
        "{requests_before} -> {requests_after}"
    );
    assert!(
        after.contains(r#"route="/api/octopusservernodes/{id}",status="200""#),
        "drains are PUTs on the node route template: {after}"
    );
    assert_eq!(
        sample(
            &after,
            r#"octopus_operator_upgrade_duration_seconds_count{strategy="rolling",result="succeeded"}"#
        ),
        Some(1.0)
    );
    assert!(series(&after, "octopus_operator_upgrade_started_timestamp_seconds").is_empty());

    // `status` mid-roll showed where it stood; after it, what it did.
    let mid_roll = mid_roll.expect("status ran during the roll");
    println!("octopus-operator status during the roll:\n{mid_roll}");
    for line in [
        "Cluster:         octo (namespace ",
        "Desired version: 2024.1.200",
        "  2024.1.100 -> 2024.1.200 (patch change, rolling), running",
        "  NAME    VERSION     READY  DRAINED  TASKS  OFFLINE  RESTARTS",
        "  ->  ",
        // Upgrading, or the wait of the step it reached (WaitingForTasks, WaitingForNode).
        "  Progressing     True    ",
    ] {
        assert!(mid_roll.contains(line), "missing {line:?} in:\n{mid_roll}");
    }

    // As the kubectl plugin: a `kubectl-octopus` link on PATH.
    let bin_dir = std::env::temp_dir().join(format!("octopus-e2e-plugin-{}", s.ns.name()));
    std::fs::create_dir_all(&bin_dir).expect("plugin dir");
    let plugin = bin_dir.join("kubectl-octopus");
    let _ = std::fs::remove_file(&plugin);
    std::os::unix::fs::symlink(&binary, &plugin).expect("plugin link");
    let path = std::env::join_paths(
        std::iter::once(bin_dir.clone()).chain(std::env::split_paths(
            &std::env::var_os("PATH").unwrap_or_default(),
        )),
    )
    .expect("PATH");
    let kubectl = kubectl_binary();
    let finished = status_command(
        &kubectl,
        &["octopus", "status", "octo", "-n", s.ns.name()],
        &[("KUBECONFIG", &kubeconfig), ("PATH", &path)],
    )
    .await;
    println!("kubectl octopus status after the roll:\n{finished}");
    for line in [
        "Current version: 2024.1.200",
        "Ready nodes:     3/3",
        "  2024.1.100 -> 2024.1.200 (patch change, rolling), finished",
        "  Ready           True    Ready",
        "  UpgradeBlocked  False",
    ] {
        assert!(finished.contains(line), "missing {line:?} in:\n{finished}");
    }
    assert!(
        !finished.contains("  ->  "),
        "no step runs after the roll:\n{finished}"
    );
    assert_eq!(
        finished.matches(" 2024.1.200  yes    no  ").count(),
        3,
        "three ready, undrained nodes on 2024.1.200:\n{finished}"
    );
    let _ = std::fs::remove_dir_all(&bin_dir);

    // Deleting the cluster removes its series (the finalizer runs in this process).
    must(
        s.clusters()
            .delete("octo", &Default::default())
            .await
            .map(|_| ())
            .map_err(anyhow::Error::from),
    );
    must(
        async {
            for _ in 0..100 {
                let (_, text) = operator.get("/metrics").await.expect("metrics");
                if !text.contains(r#"name="octo""#) {
                    return Ok(());
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            anyhow::bail!("series of the deleted cluster stayed")
        }
        .await,
    );
    drop(operator);
    must(s.finish().await);
}
