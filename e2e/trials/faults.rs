//! Octopus misbehaves during the upgrade (the twin's injected faults): 20% of requests
//! answered 500 after added latency, 20% of connections dropped without an answer, or the
//! API key refused (expired or revoked: Octopus answers 401 alike). With errors and drops
//! the upgrade must finish with every check made (the invariants judge that); with the key
//! refused the operator must hold with a condition that says so and change nothing until
//! the key works again.

use std::time::Duration;

use anyhow::Result;
use octopus_e2e::scenario::condition;
use octopus_e2e::twin::replay::{Mark, Replay};
use octopus_e2e::twin::{EventKind, Faults};

use crate::trial::{NAME, Trial};

const FINISH: Duration = Duration::from_secs(300);
/// How long the operator is watched holding with the key refused.
const HOLD: Duration = Duration::from_secs(8);

fn set_faults(t: &Trial, faults: Faults) {
    t.s.twin.set_faults(t.s.ns.name(), NAME, faults);
}

/// Runs the upgrade under `faults` until it finished, then lifts them; notes what Octopus
/// answered meanwhile.
async fn upgrade_under(t: &mut Trial, faults: Faults) -> Result<()> {
    set_faults(t, faults);
    t.begin_upgrade().await?;
    let to = t.upgrade.to;
    let waited = t
        .wait("the upgrade to finish under faults", FINISH, |c| {
            crate::trial::finished(c, to)
        })
        .await;
    set_faults(t, Faults::default());
    let events = t.s.twin.events();
    let requests = Replay::new(&events).since(Mark::Seq(t.mark)).requests();
    t.notes.push(format!(
        "Octopus answered {} requests, {} with an error",
        requests.total, requests.errors
    ));
    waited.map(|_| ())
}

/// 20% 5xx, each request 100-300 ms late.
pub async fn errors(t: &mut Trial) -> Result<()> {
    let latency = Duration::from_millis(t.rng.u64(100..=300));
    t.notes.push(format!("20% 500s, latency {latency:?}"));
    let faults = Faults {
        error_rate: 0.2,
        latency,
        ..Faults::default()
    };
    upgrade_under(t, faults).await
}

/// 20% of connections dropped.
pub async fn drops(t: &mut Trial) -> Result<()> {
    t.notes.push("20% connections dropped".into());
    let faults = Faults {
        drop_rate: 0.2,
        ..Faults::default()
    };
    upgrade_under(t, faults).await
}

/// Every key refused: held, said, nothing done; the upgrade goes on once the key works.
pub async fn expired_key(t: &mut Trial) -> Result<()> {
    set_faults(
        t,
        Faults {
            api_key_expired: true,
            ..Faults::default()
        },
    );
    t.begin_upgrade().await?;
    let held = t
        .wait("Degraded=True OctopusUnauthorized", FINISH, |c| {
            condition(c, "Degraded").is_some_and(|d| {
                d.status == "True"
                    && d.reason == "OctopusUnauthorized"
                    && d.observed_generation == c.metadata.generation
            })
        })
        .await?;
    let message = condition(&held, "Degraded")
        .map(|d| d.message.clone())
        .unwrap_or_default();
    if !message.to_lowercase().contains("api key") {
        t.violations.push(format!(
            "the Degraded message does not name the API key: {message:?}"
        ));
    }
    tokio::time::sleep(HOLD).await;
    let c = t.cluster().await?;
    let events = t.s.twin.events();
    let span = Replay::new(&events).since(Mark::Seq(t.mark));
    // Pods deleted or started, Octopus changed, or a change asked of it at all (every
    // answer is 401: any write would have been made without Octopus's view).
    let acted = span.count(|k| {
        matches!(
            k,
            EventKind::NodeDrained { .. }
                | EventKind::NodeUndrained { .. }
                | EventKind::NodeStopped { .. }
                | EventKind::NodeStarting { .. }
                | EventKind::MaintenanceModeOn
                | EventKind::MaintenanceModeOff
        ) || matches!(k, EventKind::HttpRequest { method, .. }
                if matches!(method.as_str(), "PUT" | "POST" | "DELETE"))
    });
    if acted > 0 {
        t.violations.push(format!(
            "{acted} action(s) reached Octopus or the nodes while the key was refused"
        ));
    }
    let still = crate::trial::step(&c);
    t.notes.push(format!(
        "held {HOLD:?} at step {still:?}: Degraded OctopusUnauthorized {message:?}"
    ));
    set_faults(t, Faults::default());
    Ok(())
}
