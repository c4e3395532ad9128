//! The operator process around the controller: the probe and metrics server
//! ([`probes`]), leader election ([`leader`]) and [`supervise`], which runs the controller
//! only while this process leads; [`check`] is `octopus-operator check`, the same process
//! seen from outside (the chart's `helm test`); [`client`] counts the controller's
//! Kubernetes requests.
//!
//! Losing the Lease ends the process (the caller exits non-zero; the kubelet restarts the
//! container, which rejoins as a standby). Aborting the controller in place would be
//! weaker: an in-flight reconcile could still send its Octopus call or status write after
//! another replica took over, and the caches of a reign would outlive it. Ending the
//! process is the one stop that leaves nothing running; every step is resumable, so the
//! new leader picks up from what it observes.

pub mod check;
pub mod client;
pub mod leader;
pub mod probes;

use std::future::Future;
use std::sync::Arc;

use tracing::{error, info, warn};

use crate::controller::metrics::Metrics;
use leader::Election;
use probes::Health;

/// How long a shutdown waits for in-flight reconciles (within Kubernetes's default 30 s
/// termination grace period).
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(20);

/// Why [`supervise`] returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// A shutdown signal: the controller finished its reconciles, the Lease was released.
    Shutdown,
    /// The Lease was lost (or could not be renewed): stop at once.
    LostLeadership(String),
    /// The controller loop ended on its own; `/healthz` said so until the shutdown signal.
    ControllerDied(String),
}

/// Runs `controller` while this process leads (always, without an election) until
/// `shutdown` completes, the Lease is lost, or the controller ends.
///
/// A controller that ends or panics marks `/healthz` failed and gives the Lease up, so a
/// standby takes over while the kubelet restarts this container; the process keeps
/// serving its probes until `shutdown`.
pub async fn supervise<C, F, S>(
    controller: C,
    election: Option<Election>,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    shutdown: S,
) -> Exit
where
    C: FnOnce() -> F,
    F: Future<Output = ()> + Send + 'static,
    S: Future<Output = ()>,
{
    tokio::pin!(shutdown);
    if let Some(election) = &election {
        // The crate reports only changes of our own hold: a replica that loses the first
        // race hears nothing. Read the Lease now and every renew period while standing by,
        // so it says it is a standby (and is ready) rather than "not known yet" for good.
        let mut look = tokio::time::interval(election.renew_period());
        look.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut standing_by = false;
        loop {
            tokio::select! {
                biased;
                () = &mut shutdown => return Exit::Shutdown,
                _ = look.tick(), if !standing_by => match election.held_by_another().await {
                    Ok(Some(holder)) => {
                        info!(lease = %election.lease(), %holder, "another replica leads; standing by");
                        health.set_leading(false);
                        standing_by = true;
                    }
                    Ok(None) => {}
                    Err(e) => warn!(lease = %election.lease(), error = %e, "cannot read the Lease"),
                },
                changed = election.changed() => match changed {
                    Ok(true) => break,
                    Ok(false) => {
                        health.set_leading(false);
                        standing_by = true;
                    }
                    Err(e) => {
                        // Not leading: nothing to stop. The crate backs off on its own
                        // conflicts; this is the API server refusing or unreachable.
                        warn!(lease = %election.lease(), error = %e, "leader election");
                        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    }
                },
            }
        }
        info!(lease = %election.lease(), "leading: starting the controller");
    }
    health.set_leading(true);
    metrics.set_leader(true);
    let mut task = tokio::spawn(controller());
    loop {
        let renewal = async {
            match &election {
                Some(e) => e.changed().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            () = &mut shutdown => {
                // The controller stops on the same signal; let it finish its reconciles.
                if tokio::time::timeout(SHUTDOWN_GRACE, &mut task).await.is_err() {
                    warn!("the controller did not stop in time; aborting it");
                    task.abort();
                }
                release(election.as_ref()).await;
                metrics.set_leader(false);
                return Exit::Shutdown;
            }
            ended = &mut task => {
                let why = match ended {
                    Ok(()) => "the controller loop ended".to_string(),
                    Err(e) if e.is_panic() => format!("the controller loop panicked: {e}"),
                    Err(e) => format!("the controller loop stopped: {e}"),
                };
                error!(%why, "controller died; /healthz now fails");
                health.set_dead(why.clone());
                metrics.set_leader(false);
                release(election.as_ref()).await;
                shutdown.await;
                return Exit::ControllerDied(why);
            }
            changed = renewal => {
                let why = match changed {
                    Ok(true) => continue,
                    Ok(false) => "another replica holds the Lease".to_string(),
                    Err(e) => format!("the Lease could not be renewed: {e}"),
                };
                task.abort();
                metrics.set_leader(false);
                health.set_dead(why.clone());
                return Exit::LostLeadership(why);
            }
        }
    }
}

async fn release(election: Option<&Election>) {
    if let Some(e) = election
        && let Err(err) = e.release().await
    {
        warn!(lease = %e.lease(), error = %err, "could not release the Lease");
    }
}

#[cfg(test)]
mod tests;
