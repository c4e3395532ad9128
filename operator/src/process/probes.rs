//! The process's HTTP endpoints and the state they report.
//!
//! - `/metrics`: the OpenMetrics text of [`Metrics`].
//! - `/healthz` (liveness): 200 while the controller loop runs (or has not been started
//!   because another replica leads); 500 once it ended or panicked, or the lease loop
//!   failed, so the kubelet restarts the container.
//! - `/readyz` (readiness): 200 once the process knows whether it leads and, when it leads,
//!   once the OctopusCluster watch cache holds its first full list. A replica that is not
//!   the leader is ready: it is a hot standby that takes over when the lease expires, and
//!   marking it unready would only block rolling updates of the operator's Deployment.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::controller::metrics::{self, Metrics};

// 0: not known yet.
const STANDBY: u8 = 1;
const LEADER: u8 = 2;

/// What the probes report; shared by the supervisor, the controller and the HTTP server.
#[derive(Debug, Default)]
pub struct Health {
    leadership: AtomicU8,
    synced: AtomicBool,
    dead: Mutex<Option<String>>,
}

impl Health {
    /// This process leads (and reconciles), or another one does.
    pub fn set_leading(&self, leading: bool) {
        let value = if leading { LEADER } else { STANDBY };
        self.leadership.store(value, Ordering::Release);
    }

    /// The controller's watch cache of OctopusClusters holds its first full list.
    pub fn set_synced(&self) {
        self.synced.store(true, Ordering::Release);
    }

    /// The controller loop (or the lease loop) stopped for good, with why.
    pub fn set_dead(&self, why: impl Into<String>) {
        let mut dead = self
            .dead
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        dead.get_or_insert(why.into());
    }

    fn dead(&self) -> Option<String> {
        self.dead
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// `/healthz`: `Err(why)` once the loop died.
    pub fn liveness(&self) -> Result<&'static str, String> {
        match self.dead() {
            Some(why) => Err(why),
            None => Ok("ok"),
        }
    }

    /// `/readyz`: `Ok(role)` when ready, else `Err(why not)`.
    pub fn readiness(&self) -> Result<&'static str, String> {
        if let Some(why) = self.dead() {
            return Err(why);
        }
        match self.leadership.load(Ordering::Acquire) {
            STANDBY => Ok("standby"),
            LEADER if self.synced.load(Ordering::Acquire) => Ok("leader"),
            LEADER => Err("leader, watch cache not synced yet".into()),
            _ => Err("leadership not known yet".into()),
        }
    }
}

fn answer(result: Result<&'static str, String>, failed: StatusCode) -> impl IntoResponse {
    match result {
        Ok(text) => (StatusCode::OK, format!("{text}\n")),
        Err(why) => (failed, format!("{why}\n")),
    }
}

/// The router serving `/metrics`, `/healthz` and `/readyz`.
pub fn router(metrics: Arc<Metrics>, health: Arc<Health>) -> Router {
    let live = health.clone();
    Router::new()
        .route(
            "/metrics",
            get(move || async move {
                (
                    [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
                    metrics.encode(),
                )
            }),
        )
        .route(
            "/healthz",
            get(move || async move { answer(live.liveness(), StatusCode::INTERNAL_SERVER_ERROR) }),
        )
        .route(
            "/readyz",
            get(move || async move { answer(health.readiness(), StatusCode::SERVICE_UNAVAILABLE) }),
        )
}
