//! The twin's HTTP front: a load balancer per Kubernetes Service at
//! `/{namespace}/{service}/api/...` (ready pods only, round robin, 503 without
//! endpoints), the injected network faults (latency, 5xx, dropped connections), the
//! request log, and the `/_twin/...` admin routes for tests. Connections are served one
//! by one with hyper so a "dropped connection" really closes the socket unanswered.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Extension, Json, Router};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use jiff::Timestamp;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};

use crate::twin::api::{self, ApiRequest};
use crate::twin::config::{Faults, GeneratorConfig, Timing};
use crate::twin::database;
use crate::twin::events::{Event, EventKind};
use crate::twin::model::{Resolution, Role, Secret, World};

/// The world shared by the server, the ticker and the kubelet role.
pub type SharedWorld = Arc<Mutex<World>>;

/// Locks the world; a panic elsewhere must not take the twin down with it.
pub fn lock(world: &SharedWorld) -> MutexGuard<'_, World> {
    world
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Closes the connection a request came in on.
#[derive(Clone)]
pub(super) struct DropConnection(Arc<Notify>);

/// Serves until `shutdown` turns true.
pub async fn serve(listener: TcpListener, world: SharedWorld, mut shutdown: watch::Receiver<bool>) {
    let router = router(world);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.changed() => break,
        };
        let Ok((stream, _)) = accepted else {
            continue;
        };
        let kill = Arc::new(Notify::new());
        let service = TowerToHyperService::new(
            router
                .clone()
                .layer(Extension(DropConnection(kill.clone()))),
        );
        let mut shutdown = shutdown.clone();
        tokio::spawn(async move {
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            // Dropping the connection future closes the socket without an answer.
            tokio::select! {
                _ = connection => {}
                _ = kill.notified() => {}
                _ = shutdown.changed() => {}
            }
        });
    }
}

fn router(world: SharedWorld) -> Router {
    Router::new()
        .route("/_twin/state", get(admin_state))
        .route("/_twin/events", get(admin_events))
        .route("/_twin/timing", put(admin_default_timing))
        .route("/_twin/pods/{ns}/{name}", get(admin_pod))
        .route("/_twin/installations/{ns}/{svc}", get(admin_snapshot))
        .route(
            "/_twin/installations/{ns}/{svc}/events",
            get(admin_installation_events),
        )
        .route("/_twin/installations/{ns}/{svc}/faults", put(admin_faults))
        .route("/_twin/installations/{ns}/{svc}/timing", put(admin_timing))
        .route(
            "/_twin/installations/{ns}/{svc}/generator",
            put(admin_generator),
        )
        .route(
            "/_twin/installations/{ns}/{svc}/generator/pause",
            post(admin_pause),
        )
        .route(
            "/_twin/installations/{ns}/{svc}/generator/resume",
            post(admin_resume),
        )
        .route(
            "/_twin/installations/{ns}/{svc}/apikeys",
            post(admin_api_key),
        )
        .merge(database::routes())
        .fallback(octopus)
        .with_state(world)
}

pub(super) fn json_response(status: StatusCode, body: &serde_json::Value) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    (
        status,
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        bytes,
    )
        .into_response()
}

pub(super) fn text(status: StatusCode, message: String) -> Response {
    (status, message).into_response()
}

/// Where a request goes: `/{namespace}/{service}/api/...` is the Service (a load
/// balancer over its ready pods); `/{namespace}/{service}/{pod}/api/...` is one pod by
/// its own DNS name through the (headless) Service, `{pod}.{service}.{namespace}.svc`.
#[derive(Debug, PartialEq, Eq)]
struct Address {
    namespace: String,
    service: String,
    pod: Option<String>,
    /// The path below the virtual directory, starting with `/`.
    rest: String,
}

impl Address {
    fn parse(path: &str) -> Option<Address> {
        let mut parts = path.trim_start_matches('/').splitn(3, '/');
        let namespace = parts.next().filter(|s| !s.is_empty())?.to_string();
        let service = parts.next().filter(|s| !s.is_empty())?.to_string();
        let tail = parts.next().unwrap_or_default();
        let (head, below) = tail.split_once('/').unwrap_or((tail, ""));
        let pod = (!head.is_empty() && !head.eq_ignore_ascii_case("api")).then(|| head.to_string());
        let rest = match &pod {
            Some(_) => format!("/{below}"),
            None => format!("/{tail}"),
        };
        Some(Address {
            namespace,
            service,
            pod,
            rest,
        })
    }
}

/// What was decided when the request reached the load balancer.
pub(super) struct Arrival {
    installation: usize,
    installation_name: String,
    process: String,
    faults: Faults,
    drop: bool,
    fail: bool,
}

async fn octopus(
    State(world): State<SharedWorld>,
    Extension(drop_connection): Extension<DropConnection>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(address) = Address::parse(uri.path()) else {
        return text(
            StatusCode::NOT_FOUND,
            "address an installation as /{namespace}/{service}/api/... or one node as \
             /{namespace}/{service}/{pod}/api/..."
                .into(),
        );
    };
    let Address {
        namespace,
        service,
        pod,
        rest,
    } = &address;
    let (namespace, service) = (namespace.as_str(), service.as_str());
    let service_label = match pod {
        Some(pod) => format!("{namespace}/{service}/{pod}"),
        None => format!("{namespace}/{service}"),
    };
    let prefix = format!("/{service_label}");
    let rest = rest.as_str();

    let arrival = {
        let mut w = lock(&world);
        let now = w.advance(Timestamp::now());
        let resolution = match pod {
            Some(pod) => w.resolve_pod(namespace, service, pod),
            None => w.resolve(namespace, service),
        };
        match resolution {
            Resolution::Endpoint {
                installation,
                process,
            } => match arrive(&mut w, installation, process) {
                Some(arrival) => arrival,
                None => return text(StatusCode::SERVICE_UNAVAILABLE, "no endpoints".into()),
            },
            resolution => {
                let installation = w
                    .installation_for_service(namespace, service)
                    .and_then(|i| w.installation(i))
                    .map(|i| i.name.clone());
                w.log.record(
                    now,
                    installation.as_deref(),
                    EventKind::HttpRequest {
                        method: method.to_string(),
                        route: api::route_template(rest),
                        status: 503,
                        service: service_label.clone(),
                        node: None,
                    },
                );
                let why = if resolution == Resolution::NoService {
                    "no such service"
                } else {
                    "no ready endpoints"
                };
                return text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("twin load balancer: {why} for {service_label}"),
                );
            }
        }
    };

    let request = Request {
        method: &method,
        uri: &uri,
        headers: &headers,
        body: &body,
        rest,
        prefix: &prefix,
        service_label: &service_label,
    };
    deliver(&world, &arrival, &request, &drop_connection).await
}

/// A request on its way to a node process.
pub(super) struct Request<'a> {
    pub method: &'a Method,
    pub uri: &'a Uri,
    pub headers: &'a HeaderMap,
    pub body: &'a Bytes,
    /// The path below the virtual directory, starting with `/`.
    pub rest: &'a str,
    /// The virtual directory links are given under.
    pub prefix: &'a str,
    /// Where it was addressed, for the event log.
    pub service_label: &'a str,
}

/// The request reached node process `process`: decides the injected faults it meets.
pub(super) fn arrive(w: &mut World, installation: usize, process: String) -> Option<Arrival> {
    let (inst, _) = w.installation_mut(installation)?;
    let faults = inst.faults.clone();
    let drop = faults.drop_rate > 0.0 && inst.random_unit() < faults.drop_rate;
    let fail = faults.error_rate > 0.0 && inst.random_unit() < faults.error_rate;
    Some(Arrival {
        installation,
        installation_name: inst.name.clone(),
        process,
        faults,
        drop,
        fail,
    })
}

/// Answers after the injected latency, or drops the connection.
pub(super) async fn deliver(
    world: &SharedWorld,
    arrival: &Arrival,
    request: &Request<'_>,
    drop_connection: &DropConnection,
) -> Response {
    if !arrival.faults.latency.is_zero() {
        tokio::time::sleep(arrival.faults.latency).await;
    }
    match answer(world, arrival, request) {
        Some(response) => response,
        None => {
            drop_connection.0.notify_one();
            std::future::pending::<()>().await;
            text(StatusCode::SERVICE_UNAVAILABLE, String::new())
        }
    }
}

/// Answers a request that reached a node; `None` means drop the connection.
fn answer(world: &SharedWorld, arrival: &Arrival, request: &Request<'_>) -> Option<Response> {
    let Request {
        method,
        uri,
        headers,
        body,
        rest,
        prefix,
        service_label,
    } = *request;
    let mut w = lock(world);
    let now = w.advance(Timestamp::now());
    let template = api::route_template(rest);
    let node = w
        .installation(arrival.installation)
        .and_then(|i| i.processes.get(&arrival.process))
        .filter(|p| p.is_running())
        .map(|p| p.node_name.clone());
    let record = |w: &mut World, route: &str, status: u16| {
        w.log.record(
            now,
            Some(&arrival.installation_name),
            EventKind::HttpRequest {
                method: method.to_string(),
                route: route.to_string(),
                status,
                service: service_label.to_string(),
                node: node.clone(),
            },
        );
    };
    if node.is_none() {
        // The pod died while the request was on its way.
        record(&mut w, &template, 502);
        return Some(text(
            StatusCode::BAD_GATEWAY,
            "twin load balancer: endpoint went away".into(),
        ));
    }
    if arrival.drop {
        record(&mut w, &template, 0);
        return None;
    }
    if arrival.fail {
        let response = api::error(
            StatusCode::INTERNAL_SERVER_ERROR,
            rest,
            "An unexpected error occurred in Octopus Server (injected fault).",
        );
        record(&mut w, &template, 500);
        return Some(json_response(response.status, &response.body));
    }
    let api_key = headers
        .get("X-Octopus-ApiKey")
        .and_then(|v| v.to_str().ok());
    let request = ApiRequest {
        method,
        path: rest,
        query: uri.query(),
        api_key,
        body,
    };
    let response = api::handle(
        &mut w,
        arrival.installation,
        &arrival.process,
        prefix,
        &request,
        now,
    );
    record(&mut w, &response.route, response.status.as_u16());
    Some(match (&response.body, response.text) {
        (serde_json::Value::String(body), true) => (
            response.status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            body.clone(),
        )
            .into_response(),
        (body, _) => json_response(response.status, body),
    })
}

// ----- admin routes -------------------------------------------------------------------

fn to_json<T: serde::Serialize>(value: &T) -> Response {
    match serde_json::to_value(value) {
        Ok(v) => json_response(StatusCode::OK, &v),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn admin_state(State(world): State<SharedWorld>) -> Response {
    let mut w = lock(&world);
    w.advance(Timestamp::now());
    to_json(&w.state())
}

#[derive(Deserialize)]
struct EventQuery {
    since: Option<u64>,
    installation: Option<String>,
}

fn filter_events(events: &[Event], installation: Option<&str>) -> Vec<Event> {
    events
        .iter()
        .filter(|e| installation.is_none_or(|i| e.installation.as_deref() == Some(i)))
        .cloned()
        .collect()
}

async fn admin_events(State(world): State<SharedWorld>, Query(q): Query<EventQuery>) -> Response {
    let mut w = lock(&world);
    w.advance(Timestamp::now());
    to_json(&filter_events(
        w.log.since(q.since.unwrap_or(0)),
        q.installation.as_deref(),
    ))
}

async fn admin_installation_events(
    State(world): State<SharedWorld>,
    Path((ns, svc)): Path<(String, String)>,
    Query(q): Query<EventQuery>,
) -> Response {
    let mut w = lock(&world);
    w.advance(Timestamp::now());
    let Some(name) = w
        .installation_for_service(&ns, &svc)
        .and_then(|i| w.installation(i))
        .map(|i| i.name.clone())
    else {
        return text(
            StatusCode::NOT_FOUND,
            format!("no installation behind {ns}/{svc}"),
        );
    };
    to_json(&filter_events(
        w.log.since(q.since.unwrap_or(0)),
        Some(&name),
    ))
}

async fn admin_snapshot(
    State(world): State<SharedWorld>,
    Path((ns, svc)): Path<(String, String)>,
) -> Response {
    let mut w = lock(&world);
    w.advance(Timestamp::now());
    match w.snapshot_service(&ns, &svc) {
        Some(s) => to_json(&s),
        None => text(
            StatusCode::NOT_FOUND,
            format!("no installation behind {ns}/{svc}"),
        ),
    }
}

async fn admin_pod(
    State(world): State<SharedWorld>,
    Path((ns, name)): Path<(String, String)>,
) -> Response {
    let mut w = lock(&world);
    w.advance(Timestamp::now());
    match w.pod_status(&ns, &name) {
        Some(s) => to_json(&s),
        None => text(StatusCode::NOT_FOUND, format!("no Octopus pod {ns}/{name}")),
    }
}

async fn admin_faults(
    State(world): State<SharedWorld>,
    Path((ns, svc)): Path<(String, String)>,
    Json(faults): Json<Faults>,
) -> Response {
    lock(&world).set_faults(&ns, &svc, faults);
    StatusCode::NO_CONTENT.into_response()
}

async fn admin_timing(
    State(world): State<SharedWorld>,
    Path((ns, svc)): Path<(String, String)>,
    Json(timing): Json<Timing>,
) -> Response {
    lock(&world).set_timing(&ns, &svc, timing);
    StatusCode::NO_CONTENT.into_response()
}

async fn admin_default_timing(
    State(world): State<SharedWorld>,
    Json(timing): Json<Timing>,
) -> Response {
    lock(&world).set_default_timing(timing);
    StatusCode::NO_CONTENT.into_response()
}

async fn admin_generator(
    State(world): State<SharedWorld>,
    Path((ns, svc)): Path<(String, String)>,
    Json(generator): Json<GeneratorConfig>,
) -> Response {
    lock(&world).set_generator(&ns, &svc, generator);
    StatusCode::NO_CONTENT.into_response()
}

async fn set_generator_enabled(
    world: &SharedWorld,
    ns: &str,
    svc: &str,
    enabled: bool,
) -> Response {
    let mut w = lock(world);
    w.advance(Timestamp::now());
    if w.set_generator_enabled(ns, svc, enabled) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        text(
            StatusCode::NOT_FOUND,
            format!("no installation behind {ns}/{svc}"),
        )
    }
}

async fn admin_pause(
    State(world): State<SharedWorld>,
    Path((ns, svc)): Path<(String, String)>,
) -> Response {
    set_generator_enabled(&world, &ns, &svc, false).await
}

async fn admin_resume(
    State(world): State<SharedWorld>,
    Path((ns, svc)): Path<(String, String)>,
) -> Response {
    set_generator_enabled(&world, &ns, &svc, true).await
}

#[derive(Deserialize)]
struct NewApiKey {
    key: String,
    role: Role,
}

async fn admin_api_key(
    State(world): State<SharedWorld>,
    Path((ns, svc)): Path<(String, String)>,
    Json(new): Json<NewApiKey>,
) -> Response {
    lock(&world).add_api_key(&ns, &svc, Secret::new(new.key), new.role);
    StatusCode::NO_CONTENT.into_response()
}

/// Keeps model time moving so pods, tasks and generators progress without requests.
pub async fn tick(world: SharedWorld, every: Duration, mut shutdown: watch::Receiver<bool>) {
    let mut interval = tokio::time::interval(every.max(Duration::from_millis(1)));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => {
                lock(&world).advance(Timestamp::now());
            }
            _ = shutdown.changed() => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Address;

    #[test]
    fn addresses_a_service_or_one_pod_behind_it() {
        let lb = Address::parse("/ns/octo/api/octopusservernodes/summary");
        assert_eq!(
            lb,
            Some(Address {
                namespace: "ns".into(),
                service: "octo".into(),
                pod: None,
                rest: "/api/octopusservernodes/summary".into(),
            })
        );
        let node = Address::parse("/ns/octo-nodes/octo-1/api");
        assert_eq!(
            node,
            Some(Address {
                namespace: "ns".into(),
                service: "octo-nodes".into(),
                pod: Some("octo-1".into()),
                rest: "/api".into(),
            })
        );
        assert_eq!(Address::parse("/ns"), None);
    }
}
