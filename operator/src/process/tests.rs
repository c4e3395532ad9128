//! The supervisor and the probes, over real HTTP on 127.0.0.1 (no API server: the
//! controller is a stand-in future; e2e/tests/leader.rs runs the real one).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;

use super::probes::{self, Health};
use super::{Exit, supervise};
use crate::controller::metrics::Metrics;

/// Serves the probes on a free port; returns their base URL.
async fn serve(metrics: Arc<Metrics>, health: Arc<Health>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, probes::router(metrics, health)).await;
    });
    format!("http://{addr}")
}

async fn probe(base: &str, path: &str) -> (u16, String, String) {
    let response = reqwest::get(format!("{base}{path}")).await.expect("probe");
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    (status, content_type, response.text().await.expect("body"))
}

#[tokio::test]
async fn readyz_waits_for_leadership_and_the_watch_cache() {
    let health = Arc::new(Health::default());
    let base = serve(Arc::new(Metrics::default()), health.clone()).await;
    let (status, _, body) = probe(&base, "/readyz").await;
    assert_eq!((status, body.as_str()), (503, "leadership not known yet\n"));
    health.set_leading(true);
    let (status, _, body) = probe(&base, "/readyz").await;
    assert_eq!(
        (status, body.as_str()),
        (503, "leader, watch cache not synced yet\n")
    );
    health.set_synced();
    let (status, _, body) = probe(&base, "/readyz").await;
    assert_eq!((status, body.as_str()), (200, "leader\n"));
    assert_eq!(probe(&base, "/healthz").await.0, 200);
}

#[tokio::test]
async fn a_standby_is_ready() {
    let health = Arc::new(Health::default());
    let base = serve(Arc::new(Metrics::default()), health.clone()).await;
    health.set_leading(false);
    let (status, _, body) = probe(&base, "/readyz").await;
    assert_eq!((status, body.as_str()), (200, "standby\n"));
}

#[tokio::test]
async fn metrics_are_openmetrics() {
    let base = serve(Arc::new(Metrics::default()), Arc::new(Health::default())).await;
    let (status, content_type, body) = probe(&base, "/metrics").await;
    assert_eq!(status, 200);
    assert_eq!(
        content_type,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert!(
        body.contains("# TYPE octopus_operator_leader gauge"),
        "{body}"
    );
    assert!(body.ends_with("# EOF\n"), "{body}");
}

/// Runs `supervise` without an election around `controller`; returns the probe URL, the
/// shutdown trigger and the supervisor's task.
async fn supervised<F>(
    controller: F,
) -> (
    String,
    Arc<Metrics>,
    oneshot::Sender<()>,
    tokio::task::JoinHandle<Exit>,
)
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let health = Arc::new(Health::default());
    let metrics = Arc::new(Metrics::default());
    let base = serve(metrics.clone(), health.clone()).await;
    let (stop, stopped) = oneshot::channel::<()>();
    let m = metrics.clone();
    let task = tokio::spawn(async move {
        supervise(move || controller, None, health, m, async {
            let _ = stopped.await;
        })
        .await
    });
    (base, metrics, stop, task)
}

async fn eventually_status(base: &str, path: &str, want: u16) -> String {
    for _ in 0..100 {
        let (status, _, body) = probe(base, path).await;
        if status == want {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{path} never answered {want}");
}

#[tokio::test]
async fn healthz_fails_when_the_controller_panics() {
    let (go, gone) = oneshot::channel::<()>();
    let (base, metrics, stop, task) = supervised(async move {
        let _ = gone.await;
        panic!("boom");
    })
    .await;
    assert_eq!(probe(&base, "/healthz").await.0, 200);
    assert!(metrics.encode().contains("octopus_operator_leader 1\n"));
    let _ = go.send(());
    let body = eventually_status(&base, "/healthz", 500).await;
    assert!(body.contains("panicked"), "{body}");
    assert_eq!(probe(&base, "/readyz").await.0, 503);
    assert!(metrics.encode().contains("octopus_operator_leader 0\n"));
    // The process keeps answering until it is told to stop.
    assert!(!task.is_finished());
    let _ = stop.send(());
    let exit = task.await.expect("supervisor");
    assert!(matches!(exit, Exit::ControllerDied(why) if why.contains("panicked")));
}

#[tokio::test]
async fn healthz_fails_when_the_controller_returns() {
    let (base, _metrics, stop, task) = supervised(async {}).await;
    let body = eventually_status(&base, "/healthz", 500).await;
    assert_eq!(body, "the controller loop ended\n");
    let _ = stop.send(());
    assert!(matches!(
        task.await.expect("supervisor"),
        Exit::ControllerDied(_)
    ));
}

#[tokio::test]
async fn a_shutdown_is_not_a_death() {
    // The controller stops on the same signal as the supervisor, as the real one does.
    let signal = Arc::new(tokio::sync::Notify::new());
    let seen = signal.clone();
    let (base, metrics, stop, task) = supervised(async move { seen.notified().await }).await;
    assert_eq!(probe(&base, "/healthz").await.0, 200);
    let _ = stop.send(());
    signal.notify_one();
    assert_eq!(task.await.expect("supervisor"), Exit::Shutdown);
    assert_eq!(probe(&base, "/healthz").await.0, 200);
    assert!(metrics.encode().contains("octopus_operator_leader 0\n"));
}
