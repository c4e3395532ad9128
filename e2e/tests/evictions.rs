//! Evictions and scale-down (issue 10, items 4 and 5) on the real API server: the policy/v1
//! Eviction API on the Octopus pods, judged by the PodDisruptionBudget the operator owns
//! (kube-controller-manager runs the disruption controller), and a scale-down checked
//! against the twin's event log. Each prints what it saw. They fail (never skip) when the
//! control plane cannot be reached.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::Api;
use octopus_e2e::cluster::wait_until;
use octopus_e2e::scenario::{Scenario, must, spec, twin_config};
use octopus_e2e::twin::replay::{Mark, Replay};
use octopus_e2e::twin::{Event, EventKind, GeneratorConfig};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(240);

/// Creates `octo` with `replicas` nodes on `version` and waits until it is Ready.
async fn ready_cluster(s: &Scenario, version: &str, replicas: i32) {
    must(s.create_cluster("octo", spec(version, replicas)).await);
    must(
        s.wait_condition("octo", "Ready", true, Some("Ready"), WAIT)
            .await,
    );
}

/// Waits until the disruption controller has processed the operator's budget and it lets
/// `allowed` evictions through; returns it.
async fn budget_allows(s: &Scenario, allowed: i32) -> PodDisruptionBudget {
    let pdbs: Api<PodDisruptionBudget> = s.ns.api();
    must(
        wait_until(
            &format!("the PodDisruptionBudget to allow {allowed} eviction(s)"),
            WAIT,
            || async {
                let pdb = pdbs.get_opt("octo").await?;
                let processed = pdb.as_ref().is_some_and(|p| {
                    p.status.as_ref().is_some_and(|st| {
                        st.observed_generation == p.metadata.generation
                            && st.disruptions_allowed == Some(allowed)
                    })
                });
                Ok(pdb.filter(|_| processed))
            },
        )
        .await
        .map_err(anyhow::Error::from),
    )
}

/// Evicts pod `name` through the policy/v1 Eviction API, once, as `kubectl drain` does
/// (kubectl, not kube-rs: kube's client retries a 429 by itself until it passes, and the
/// refusal is what is under test). `Ok(())`, or the refusal's HTTP code and message.
async fn evict(s: &Scenario, name: &str) -> Result<(), (u16, String)> {
    let body = json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": name}});
    let path = format!("/api/v1/namespaces/{}/pods/{name}/eviction", s.ns.name());
    let out = s
        .cluster
        .kubectl_with_stdin(
            ["create", "--raw", path.as_str(), "-f", "-"],
            Some(body.to_string().as_str()),
        )
        .await
        .map_err(|e| (0, e.to_string()))?;
    if out.success() {
        return Ok(());
    }
    let message = out.stderr.trim().to_string();
    let code = if message.contains("(TooManyRequests)") {
        429
    } else if message.contains("(NotFound)") {
        404
    } else {
        0
    };
    Err((code, message))
}

/// Waits until pod `name` is back (a new uid) and ready.
async fn pod_back(s: &Scenario, name: &str, old_uid: &str) {
    let pods: Api<Pod> = s.ns.api();
    must(
        wait_until(&format!("pod {name} to come back"), WAIT, || async {
            let back = pods.get_opt(name).await?.filter(|p| {
                p.metadata.uid.as_deref() != Some(old_uid)
                    && p.status
                        .as_ref()
                        .and_then(|st| st.conditions.as_ref())
                        .is_some_and(|cs| {
                            cs.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                        })
            });
            Ok(back.map(|_| ()))
        })
        .await
        .map_err(anyhow::Error::from),
    );
}

fn is_budget_refusal(answer: &Result<(), (u16, String)>) -> bool {
    matches!(answer, Err((429, message)) if message.contains("disruption budget"))
}

/// From now on a node takes `start` to start, as a real Octopus Server does: an evicted
/// pod then stays out long enough that a second eviction meets the budget it used up
/// (the API server retries a conflicting eviction for a few seconds, by which time a
/// twin node with the scenarios' 300 ms start would be back).
fn slow_restarts(s: &Scenario, start: Duration) {
    let mut timing = twin_config(false).timing;
    timing.start_delay = start;
    s.twin.set_timing(s.ns.name(), "octo", timing);
}

/// The upgrade under way, if any: (step, node).
async fn under_way(s: &Scenario) -> Option<(String, String)> {
    let c = must(s.clusters().get("octo").await.map_err(anyhow::Error::from));
    c.status
        .and_then(|st| st.upgrade)
        .filter(|u| u.finished_at.is_none())
        .map(|u| (u.step.unwrap_or_default(), u.node.unwrap_or_default()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steady_cluster_lets_one_of_two_concurrent_evictions_through() {
    let s = must(Scenario::start("evict", twin_config(false)).await);
    ready_cluster(&s, "2024.1.100", 3).await;
    slow_restarts(&s, Duration::from_secs(15));
    let pdb = budget_allows(&s, 1).await;
    let budget = pdb.spec.clone().expect("spec");
    assert_eq!(budget.max_unavailable, Some(IntOrString::Int(1)));
    assert_eq!(
        budget.unhealthy_pod_eviction_policy.as_deref(),
        Some("IfHealthyBudget")
    );
    let pods: Api<Pod> = s.ns.api();
    let uid = |name: &'static str| {
        let pods = pods.clone();
        async move {
            must(pods.get(name).await.map_err(anyhow::Error::from))
                .metadata
                .uid
                .unwrap_or_default()
        }
    };
    let (uid1, uid2) = (uid("octo-1").await, uid("octo-2").await);
    // `kubectl drain` of two Kubernetes nodes at once: both ask at the same moment.
    let (a, b) = tokio::join!(evict(&s, "octo-1"), evict(&s, "octo-2"));
    eprintln!("concurrent evictions: octo-1 -> {a:?}, octo-2 -> {b:?}");
    let through = [&a, &b].iter().filter(|r| r.is_ok()).count();
    let refused = [&a, &b].iter().filter(|r| is_budget_refusal(r)).count();
    assert_eq!((through, refused), (1, 1), "octo-1: {a:?}, octo-2: {b:?}");
    let (evicted, old_uid) = if a.is_ok() {
        ("octo-1", uid1)
    } else {
        ("octo-2", uid2)
    };
    // The evicted node comes back; then the budget lets one through again.
    pod_back(&s, evicted, &old_uid).await;
    budget_allows(&s, 1).await;
    must(s.finish().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eviction_during_a_patch_roll_is_refused() {
    let s = must(Scenario::start("evictroll", twin_config(true)).await);
    ready_cluster(&s, "2024.1.100", 3).await;
    slow_restarts(&s, Duration::from_secs(2));
    budget_allows(&s, 1).await;
    let since = Timestamp::now();
    must(s.patch_spec("octo", json!({"version": "2024.1.200"})).await);
    must(
        wait_until("the roll to begin", WAIT, || async {
            Ok(under_way(&s).await.map(|_| ()))
        })
        .await
        .map_err(anyhow::Error::from),
    );
    // While the roll takes the other nodes out, a drain of octo-0's Kubernetes node is
    // refused. An answer counts only when the roll was under way, not yet at octo-0,
    // both before and after it.
    let mut refused_during = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let before = under_way(&s).await;
        let answer = evict(&s, "octo-0").await;
        let after = under_way(&s).await;
        let inside = |w: &Option<(String, String)>| w.as_ref().is_some_and(|(_, n)| n != "octo-0");
        if !(inside(&before) && inside(&after)) {
            eprintln!("roll at {before:?} .. {after:?}: {answer:?}; stop evicting");
            break;
        }
        let (step, node) = after.unwrap_or_default();
        assert!(
            is_budget_refusal(&answer),
            "octo-0 evicted during {step} {node}: {answer:?}"
        );
        refused_during.push(if step.is_empty() {
            "the plan recorded".to_string()
        } else {
            format!("{step} {node}")
        });
        assert!(
            tokio::time::Instant::now() < deadline,
            "the roll took too long"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    refused_during.dedup();
    eprintln!(
        "evictions of octo-0 refused (429) during: {}",
        refused_during.join(", ")
    );
    assert!(refused_during.len() >= 3, "{refused_during:?}");
    must(
        s.wait_for("octo", "the roll to finish", WAIT, |c| {
            c.status.as_ref().is_some_and(|st| {
                st.current_version.as_deref() == Some("2024.1.200")
                    && st.upgrade.as_ref().is_some_and(|u| u.finished_at.is_some())
            })
        })
        .await,
    );
    let events = s.twin.events();
    let min_serving = Replay::new(&events).since(Mark::At(since)).min_serving();
    eprintln!("fewest nodes serving during the roll: {min_serving}");
    assert!(
        min_serving >= 2,
        "fewer than 2 nodes served ({min_serving})"
    );
    // After the roll the budget opens again: the drain goes through.
    budget_allows(&s, 1).await;
    assert_eq!(evict(&s, "octo-0").await, Ok(()));
    must(s.finish().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eviction_of_the_first_node_during_wait_schema_is_refused() {
    let s = must(Scenario::start("evictschema", twin_config(false)).await);
    ready_cluster(&s, "2024.1.100", 2).await;
    // A migration long enough to try an eviction in the middle of it.
    let mut timing = twin_config(false).timing;
    timing.migration_time = Duration::from_secs(8);
    s.twin.set_timing(s.ns.name(), "octo", timing);
    must(
        s.patch_spec(
            "octo",
            json!({"version": "2024.2.50", "upgrade": {"approvedVersion": "2024.2.50"}}),
        )
        .await,
    );
    // octo-0 migrates the database alone.
    must(
        wait_until("octo-0 to migrate the schema", WAIT, || async {
            let c = s.clusters().get("octo").await?;
            let st = c
                .status
                .and_then(|st| st.upgrade)
                .map(|u| (u.step, u.node, u.stopped_reason));
            eprintln!("DEBUG {st:?}");
            let migrating = s.twin.events().iter().any(|e| {
                matches!(&e.kind, EventKind::SchemaMigrationStarted { node, to, .. }
                    if node == "octo-0" && to == "2024.2")
            });
            Ok(migrating.then_some(()))
        })
        .await
        .map_err(anyhow::Error::from),
    );
    let c = must(s.clusters().get("octo").await.map_err(anyhow::Error::from));
    let step = c.status.and_then(|st| st.upgrade).and_then(|u| u.step);
    let answer = evict(&s, "octo-0").await;
    eprintln!("eviction of octo-0 at step {step:?} while it migrates: {answer:?}");
    assert!(is_budget_refusal(&answer), "{answer:?}");
    must(
        s.wait_for("octo", "the upgrade to finish", WAIT, |c| {
            c.status.as_ref().is_some_and(|st| {
                st.current_version.as_deref() == Some("2024.2.50")
                    && st.upgrade.as_ref().is_some_and(|u| u.finished_at.is_some())
            })
        })
        .await,
    );
    // The migration ran once, to its end.
    let events = s.twin.events();
    let replay = Replay::new(&events);
    let started = replay
        .count(|k| matches!(k, EventKind::SchemaMigrationStarted { to, .. } if to == "2024.2"));
    let rolled_back = replay.count(|k| matches!(k, EventKind::SchemaMigrationRolledBack { .. }));
    assert_eq!((started, rolled_back), (1, 0));
    must(s.finish().await);
}

/// The tasks that started on `node` before event `seq` and had not ended by then.
fn running_on_at(events: &[Event], node: &str, seq: u64) -> Vec<String> {
    let before: Vec<&Event> = events.iter().filter(|e| e.seq < seq).collect();
    let ended = |task: &str| {
        before.iter().any(|e| match &e.kind {
            EventKind::TaskFinished { task: t, .. }
            | EventKind::TaskFailed { task: t, .. }
            | EventKind::TaskCanceled { task: t, .. } => t == task,
            _ => false,
        })
    };
    before
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::TaskStarted { task, node: n, .. } if n == node && !ended(task) => {
                Some(task.clone())
            }
            _ => None,
        })
        .collect()
}

/// The sequence number of the first event `pick` matches.
fn seq_of(events: &[Event], what: &str, pick: impl Fn(&EventKind) -> bool) -> u64 {
    events
        .iter()
        .find(|e| pick(&e.kind))
        .map(|e| e.seq)
        .unwrap_or_else(|| panic!("{what} never happened"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_down_drains_the_leaving_node_waits_for_its_task_then_forgets_it() {
    let mut config = twin_config(true);
    // Deployments long enough that the leaving node is busy when the scale-down begins.
    config.generator = GeneratorConfig {
        deployments_per_minute: 120.0,
        deployment_duration_min: Duration::from_secs(4),
        deployment_duration_max: Duration::from_secs(8),
        ..config.generator
    };
    let s = must(Scenario::start("scaledown", config).await);
    ready_cluster(&s, "2024.1.100", 3).await;
    must(
        wait_until("a task to run on octo-2", WAIT, || async {
            let events = s.twin.events();
            let next = events.last().map_or(0, |e| e.seq + 1);
            Ok((!running_on_at(&events, "octo-2", next).is_empty()).then_some(()))
        })
        .await
        .map_err(anyhow::Error::from),
    );
    must(s.patch_spec("octo", json!({"replicas": 2})).await);
    let c = must(
        s.wait_for("octo", "the scale-down to finish", WAIT, |c| {
            c.status.as_ref().is_some_and(|st| {
                st.upgrade
                    .as_ref()
                    .is_some_and(|u| u.change == "scale-down" && u.finished_at.is_some())
                    && st.ready_nodes.as_deref() == Some("2/2")
            })
        })
        .await,
    );
    let up = c.status.and_then(|st| st.upgrade).expect("recorded");
    let steps: Vec<String> = up
        .steps
        .iter()
        .map(|s| {
            format!("{} {}", s.action, s.node.as_deref().unwrap_or(""))
                .trim_end()
                .to_string()
        })
        .collect();
    assert_eq!(
        steps,
        [
            "drain octo-2",
            "wait-tasks octo-2",
            "remove-nodes",
            "forget-node octo-2"
        ]
    );
    let events = s.twin.events();
    let drained = seq_of(
        &events,
        "drain octo-2",
        |k| matches!(k, EventKind::NodeDrained { node } if node == "octo-2"),
    );
    let stopped = seq_of(
        &events,
        "octo-2 stopping",
        |k| matches!(k, EventKind::NodeStopped { node, .. } if node == "octo-2"),
    );
    let forgotten = seq_of(
        &events,
        "octo-2's record deleted",
        |k| matches!(k, EventKind::NodeRecordDeleted { node } if node == "octo-2"),
    );
    // Every task octo-2 ran when it was drained finished before it stopped.
    let busy = running_on_at(&events, "octo-2", drained);
    assert!(!busy.is_empty(), "octo-2 ran no task when it was drained");
    let mut log = vec![format!("NodeDrained octo-2 #{drained}")];
    for task in &busy {
        let finished = seq_of(
            &events,
            &format!("{task} finishing"),
            |k| matches!(k, EventKind::TaskFinished { task: t, .. } if t == task),
        );
        assert!(
            drained < finished && finished < stopped,
            "{task} #{finished}"
        );
        log.push(format!("TaskFinished {task} #{finished}"));
    }
    log.push(format!("NodeStopped octo-2 #{stopped}"));
    log.push(format!("NodeRecordDeleted octo-2 #{forgotten}"));
    eprintln!("twin event log: {}", log.join(" < "));
    assert!(stopped < forgotten);
    let replay = Replay::new(&events);
    assert_eq!(replay.tasks().failed, 0, "a task failed");
    assert_eq!(replay.drained(), ["octo-2"], "only the leaving node drains");
    // No record of octo-2 lingers, and no new one appeared.
    let deletions = replay.count(|k| matches!(k, EventKind::NodeRecordDeleted { .. }));
    assert_eq!(deletions, 1);
    let pods: Api<Pod> = s.ns.api();
    assert!(must(pods.get_opt("octo-2").await.map_err(anyhow::Error::from)).is_none());
    must(s.finish().await);
}
