//! The twin as the database of Octopus Server nodes that run in real containers
//! (`e2e/twin-node`, protocol in `octopus_twin_node`): `/_db/nodes` routes where a node
//! process starts, heartbeats, stops cleanly, and hands over the REST requests its pod
//! receives. The state and the event log are the same the played pods use, so replay and
//! its invariants read both alike; injected faults (latency, 5xx, dropped connections)
//! apply to these requests as to those through the twin's load balancer.

use axum::body::Bytes;
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use axum::{Json, Router};
use jiff::Timestamp;
use octopus_twin_node::{FORWARDED_HOST, Start, Started};

use crate::twin::server::{
    DropConnection, Request, SharedWorld, arrive, deliver, json_response, lock, text,
};

pub(super) fn routes() -> Router<SharedWorld> {
    Router::new()
        .route(octopus_twin_node::START_PATH, post(start))
        .route("/_db/nodes/{key}/heartbeat", post(heartbeat))
        .route("/_db/nodes/{key}/stop", post(stop))
        .route("/_db/nodes/{key}/octopus/{*rest}", any(octopus))
        .merge(backup_routes())
}

/// What a backup tool does to the database (the demo's backup Job runs it from its pod):
/// `POST /_db/backups` with `{"connectionString": ..., "backup": name}` takes a backup of
/// the database the connection string names, recorded in the event log.
fn backup_routes() -> Router<SharedWorld> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Backup {
        connection_string: String,
        backup: String,
    }
    async fn backup(State(world): State<SharedWorld>, Json(b): Json<Backup>) -> Response {
        lock(&world).back_up_database(&b.connection_string, b.backup, Timestamp::now());
        StatusCode::CREATED.into_response()
    }
    Router::new().route("/_db/backups", post(backup))
}

fn gone(key: &str) -> Response {
    text(
        StatusCode::NOT_FOUND,
        format!("no node process {key} in this database"),
    )
}

async fn start(State(world): State<SharedWorld>, Json(start): Json<Start>) -> Response {
    let key = lock(&world).start_remote(start, Timestamp::now());
    match serde_json::to_value(Started { key }) {
        Ok(body) => json_response(StatusCode::CREATED, &body),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn heartbeat(State(world): State<SharedWorld>, Path(key): Path<String>) -> Response {
    match lock(&world).remote_heartbeat(&key, Timestamp::now()) {
        Some(heartbeat) => match serde_json::to_value(heartbeat) {
            Ok(body) => json_response(StatusCode::OK, &body),
            Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        },
        None => gone(&key),
    }
}

async fn stop(State(world): State<SharedWorld>, Path(key): Path<String>) -> Response {
    if lock(&world).stop_remote(&key, Timestamp::now()) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        gone(&key)
    }
}

async fn octopus(
    State(world): State<SharedWorld>,
    Extension(drop_connection): Extension<DropConnection>,
    Path((key, _)): Path<(String, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let rest = uri
        .path()
        .split_once("/octopus")
        .map_or("/", |(_, rest)| rest)
        .to_string();
    // Where the request reached the node: its pod DNS name or the client Service's.
    let service_label = headers
        .get(FORWARDED_HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or(&key)
        .to_string();
    let arrival = {
        let mut w = lock(&world);
        w.advance(Timestamp::now());
        let Some(arrival) = w
            .remote_installation(&key)
            .and_then(|index| arrive(&mut w, index, key.clone()))
        else {
            return gone(&key);
        };
        arrival
    };
    let request = Request {
        method: &method,
        uri: &uri,
        headers: &headers,
        body: &body,
        rest: &rest,
        prefix: "",
        service_label: &service_label,
    };
    deliver(&world, &arrival, &request, &drop_connection).await
}
