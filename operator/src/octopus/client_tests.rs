//! Tests of [`OctopusClient`] against a small axum server on 127.0.0.1 that answers like
//! Octopus Server (routes, PascalCase bodies, 401/404/418/5xx) and records every request.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::*;

const KEY: &str = "API-TESTKEY0123456789";

/// One request as the fake server saw it.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    path: String,
    query: String,
    api_key: Option<String>,
    body: String,
}

impl Seen {
    fn body_json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap()
    }
}

struct Reply {
    status: u16,
    body: String,
    delay: Duration,
}

fn reply(status: u16, body: Value) -> Reply {
    Reply {
        status,
        body: body.to_string(),
        delay: Duration::ZERO,
    }
}

/// `responder(request, n)`: n = how many earlier requests had the same method and path.
type Responder = Arc<dyn Fn(&Seen, usize) -> Reply + Send + Sync>;

#[derive(Clone)]
struct FakeState {
    seen: Arc<Mutex<Vec<Seen>>>,
    responder: Responder,
}

struct Fake {
    addr: std::net::SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Fake {
    fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn count(&self, method: &str, path: &str) -> usize {
        self.seen()
            .iter()
            .filter(|s| s.method == method && s.path == path)
            .count()
    }
}

async fn handle(
    State(state): State<FakeState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let seen = Seen {
        method: method.to_string(),
        path: uri.path().to_string(),
        query: uri.query().unwrap_or_default().to_string(),
        api_key: headers
            .get("x-octopus-apikey")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        body: String::from_utf8_lossy(&body).into_owned(),
    };
    let earlier = {
        let mut all = state.seen.lock().unwrap();
        let n = all
            .iter()
            .filter(|s| s.method == seen.method && s.path == seen.path)
            .count();
        all.push(seen.clone());
        n
    };
    let reply = (state.responder)(&seen, earlier);
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    (
        StatusCode::from_u16(reply.status).unwrap(),
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        reply.body,
    )
        .into_response()
}

async fn fake(responder: impl Fn(&Seen, usize) -> Reply + Send + Sync + 'static) -> Fake {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let state = FakeState {
        seen: seen.clone(),
        responder: Arc::new(responder),
    };
    let app = Router::new().fallback(handle).with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Fake { addr, seen }
}

fn fast_options() -> ClientOptions {
    ClientOptions {
        timeout: Duration::from_secs(5),
        retries: 3,
        min_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(5),
    }
}

fn client_for(base: &str) -> OctopusClient {
    client_with(base, KEY, fast_options())
}

fn client_with(base: &str, key: &str, options: ClientOptions) -> OctopusClient {
    let endpoint = OctopusEndpoint::new(base, ApiKey::new(key));
    OctopusClient::with_options(&endpoint, options).unwrap()
}

fn root_body() -> Value {
    json!({
        "Application": "Octopus Deploy",
        "Version": "2024.2.9220",
        "ApiVersion": "3.0.0",
        "InstallationId": "39b44e47-37d4-4fcd-949c-2d831ebfa65e",
        "IsEarlyAccessProgram": false,
        "HasLongTermSupport": false,
        "Links": { "Self": "/api", "ServerHealthStatus": "/api/serverstatus/health" }
    })
}

fn node_body(drained: bool) -> Value {
    json!({
        "Id": "OctopusServerNodes-octopus-0",
        "Name": "octopus-0",
        "MaxConcurrentTasks": 7,
        "IsInMaintenanceMode": drained,
        "LastModifiedOn": null,
        "LastModifiedBy": null,
        "FutureField": ["kept"],
        "Links": { "Self": "/api/octopusservernodes/OctopusServerNodes-octopus-0" }
    })
}

fn task_json(i: usize) -> Value {
    json!({
        "Id": format!("ServerTasks-{i}"),
        "Name": "Deploy",
        "Description": format!("Deploy {i}"),
        "State": "Executing",
        "ServerNode": "octopus-1",
        "QueueTime": "2024-05-02T10:00:00.000+00:00",
        "IsCompleted": false,
        "Links": {}
    })
}

/// Octopus's answer to a missing or wrong key.
fn unauthorized() -> Reply {
    reply(
        401,
        json!({
            "ErrorMessage": "You must be logged in to perform this action. Please provide a valid API key or log in again.",
            "Errors": []
        }),
    )
}

#[tokio::test]
async fn sends_api_key_header_and_decodes_root() {
    let server = fake(|seen, _| {
        if seen.api_key.as_deref() != Some(KEY) {
            return unauthorized();
        }
        match seen.path.as_str() {
            "/api" => reply(200, root_body()),
            _ => reply(404, json!({"ErrorMessage": "not here"})),
        }
    })
    .await;
    let root = client_for(&server.base()).root().await.unwrap();
    assert_eq!(root.version, "2024.2.9220");
    let seen = server.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, "GET");
    assert_eq!(seen[0].api_key.as_deref(), Some(KEY));
}

#[tokio::test]
async fn wrong_key_is_unauthorized_and_never_in_the_error() {
    let server = fake(|seen, _| {
        if seen.api_key.as_deref() == Some(KEY) {
            reply(200, root_body())
        } else {
            // A server that echoes the key it got must not leak it through us.
            let got = seen.api_key.clone().unwrap_or_default();
            reply(
                401,
                json!({"ErrorMessage": format!("Invalid API key {got}"), "Errors": []}),
            )
        }
    })
    .await;
    let wrong = "API-WRONGKEY999";
    let client = client_with(&server.base(), wrong, fast_options());
    let error = client.root().await.unwrap_err();
    assert_eq!(error.reason(), "OctopusUnauthorized");
    assert!(matches!(
        error,
        OctopusError::Unauthorized { status: 401, .. }
    ));
    let text = format!("{error} {error:?}");
    assert!(!text.contains(wrong), "{text}");
    assert!(text.contains("GET /api"), "{text}");
    // 401 is not transient: asked once.
    assert_eq!(server.count("GET", "/api"), 1);

    let server = fake(|_, _| reply(403, json!({"ErrorMessage": "Forbidden"}))).await;
    let error = client_for(&server.base()).maintenance().await.unwrap_err();
    assert!(matches!(
        error,
        OctopusError::Unauthorized { status: 403, .. }
    ));
}

#[tokio::test]
async fn missing_node_is_not_found_with_octopus_message() {
    let server = fake(|_, _| {
        reply(
            404,
            json!({"ErrorMessage": "The resource 'OctopusServerNodes-gone' was not found.", "Errors": []}),
        )
    })
    .await;
    let error = client_for(&server.base())
        .get_node("OctopusServerNodes-gone")
        .await
        .unwrap_err();
    assert_eq!(error.reason(), "OctopusNotFound");
    assert_eq!(
        error.route(),
        Some("GET /api/octopusservernodes/OctopusServerNodes-gone")
    );
    assert!(error.to_string().contains("was not found"), "{error}");
    assert_eq!(
        server.count("GET", "/api/octopusservernodes/OctopusServerNodes-gone"),
        1
    );
}

#[tokio::test]
async fn validation_errors_are_rejected_with_their_details() {
    let server = fake(|_, _| {
        reply(
            400,
            json!({
                "ErrorMessage": "There was a problem with your request.",
                "Errors": ["MaxConcurrentTasks must be at least 0"]
            }),
        )
    })
    .await;
    let error = client_for(&server.base())
        .set_node_drain("OctopusServerNodes-octopus-0", true)
        .await
        .unwrap_err();
    assert_eq!(error.reason(), "OctopusRejected");
    assert!(
        error
            .to_string()
            .contains("MaxConcurrentTasks must be at least 0"),
        "{error}"
    );
}

#[tokio::test]
async fn get_is_retried_on_5xx_until_it_answers() {
    let server = fake(|_, n| {
        if n < 2 {
            reply(503, json!({"ErrorMessage": "Service unavailable"}))
        } else {
            reply(200, json!({"Nodes": [], "Links": {}}))
        }
    })
    .await;
    let summary = client_for(&server.base()).cluster_summary().await.unwrap();
    assert!(summary.nodes.is_empty());
    assert_eq!(server.count("GET", "/api/octopusservernodes/summary"), 3);
}

#[tokio::test]
async fn get_gives_up_after_its_retries_with_server_error() {
    let server =
        fake(|_, _| reply(500, json!({"ErrorMessage": "Boom", "FullException": "..."}))).await;
    let error = client_for(&server.base()).health().await.unwrap_err();
    assert!(
        matches!(&error, OctopusError::Server { status: 500, message, .. } if message == "Boom"),
        "{error:?}"
    );
    assert_eq!(error.reason(), "OctopusServerError");
    // 1 attempt + 3 retries.
    assert_eq!(server.count("GET", "/api/serverstatus/health"), 4);
}

#[tokio::test]
async fn post_is_never_retried() {
    let server = fake(|_, _| reply(503, json!({"ErrorMessage": "Service unavailable"}))).await;
    let client = client_for(&server.base());
    let error = client
        .create_task(&CreateTask::new(builtin_tasks::HEALTH, "Check"))
        .await
        .unwrap_err();
    assert!(matches!(error, OctopusError::Server { status: 503, .. }));
    assert_eq!(server.count("POST", "/api/tasks"), 1);

    let error = client.cancel_task("ServerTasks-9").await.unwrap_err();
    assert!(matches!(error, OctopusError::Server { status: 503, .. }));
    assert_eq!(server.count("POST", "/api/tasks/ServerTasks-9/cancel"), 1);
}

#[tokio::test]
async fn post_is_not_retried_on_timeout_either() {
    let server = fake(|_, _| Reply {
        status: 201,
        body: task_json(1).to_string(),
        delay: Duration::from_secs(30),
    })
    .await;
    let options = ClientOptions {
        timeout: Duration::from_millis(200),
        ..fast_options()
    };
    let client = client_with(&server.base(), KEY, options);
    let error = client
        .create_task(&CreateTask::new(
            builtin_tasks::UPGRADE,
            "Upgrade Tentacles",
        ))
        .await
        .unwrap_err();
    assert_eq!(error.reason(), "OctopusTimeout");
    assert_eq!(server.count("POST", "/api/tasks"), 1);
}

#[tokio::test]
async fn slow_answer_is_a_timeout_and_get_retries_it() {
    let server = fake(|_, _| Reply {
        status: 200,
        body: root_body().to_string(),
        delay: Duration::from_secs(30),
    })
    .await;
    let options = ClientOptions {
        timeout: Duration::from_millis(200),
        retries: 1,
        ..fast_options()
    };
    let error = client_with(&server.base(), KEY, options)
        .root()
        .await
        .unwrap_err();
    assert!(
        matches!(&error, OctopusError::Timeout { route, after } if route == "GET /api" && *after == Duration::from_millis(200)),
        "{error:?}"
    );
    assert_eq!(server.count("GET", "/api"), 2);
}

#[tokio::test]
async fn refused_connection_is_unreachable() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let client = client_for(&format!("http://{addr}"));
    let error = client.root().await.unwrap_err();
    assert_eq!(error.reason(), "OctopusUnreachable");
    assert!(error.is_transient());
    assert!(!error.to_string().contains(KEY));
}

#[tokio::test]
async fn dropped_connection_is_unreachable() {
    // Accepts and closes every connection without a byte of answer.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(Mutex::new(0usize));
    let counter = accepted.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            *counter.lock().unwrap() += 1;
            drop(socket);
        }
    });
    let error = client_for(&format!("http://{addr}"))
        .cluster_summary()
        .await
        .unwrap_err();
    assert_eq!(error.reason(), "OctopusUnreachable", "{error:?}");
    // A GET is retried on a lost connection: at least one retry reached the socket.
    assert!(*accepted.lock().unwrap() >= 2);
}

#[tokio::test]
async fn undecodable_body_is_bad_response() {
    let server = fake(|_, _| Reply {
        status: 200,
        body: "<html>Sign in</html>".into(),
        delay: Duration::ZERO,
    })
    .await;
    let error = client_for(&server.base()).root().await.unwrap_err();
    assert!(
        matches!(error, OctopusError::BadResponse { status: 200, .. }),
        "{error:?}"
    );
    assert_eq!(error.reason(), "OctopusBadResponse");
    // Not transient: asked once.
    assert_eq!(server.count("GET", "/api"), 1);
}

#[tokio::test]
async fn ping_418_is_an_answer_whatever_the_body() {
    let server = fake(|_, n| {
        let draining = n > 0;
        reply(
            if draining { 418 } else { 200 },
            json!({
                "Id": "OctopusServerNodes-octopus-0",
                "Name": "octopus-0",
                "IsInMaintenanceMode": draining,
                "IsOffline": false,
                "LastSeen": "2024-05-02T10:20:30.123+00:00",
                "MaxConcurrentTasks": 5
            }),
        )
    })
    .await;
    let client = client_for(&server.base());
    let serving = client.ping().await.unwrap();
    assert!(serving.is_serving());
    let draining = client.ping().await.unwrap();
    assert_eq!(draining.status, 418);
    assert!(!draining.is_serving());
    assert_eq!(server.count("GET", "/api/octopusservernodes/ping"), 2);
}

#[tokio::test]
async fn health_418_is_an_answer() {
    let server = fake(|_, _| {
        reply(
            418,
            json!({
                "IsOperatingNormally": false,
                "IsEntireClusterReadOnly": false,
                "IsEntireClusterDrainingTasks": true,
                "IsCompliantWithLicense": true,
                "Description": "All nodes are draining",
                "Links": {}
            }),
        )
    })
    .await;
    let health = client_for(&server.base()).health().await.unwrap();
    assert!(!health.is_operating_normally);
    assert!(health.is_entire_cluster_draining_tasks);
    assert_eq!(
        health.description.as_deref(),
        Some("All nodes are draining")
    );
}

#[tokio::test]
async fn status_418_elsewhere_is_rejected() {
    let server = fake(|_, _| reply(418, json!({"ErrorMessage": "teapot"}))).await;
    let error = client_for(&server.base()).root().await.unwrap_err();
    assert_eq!(error.reason(), "OctopusRejected");
}

#[tokio::test]
async fn all_tasks_follows_pages_with_the_query() {
    const TOTAL: usize = 5;
    let server = fake(|seen, _| {
        let params: std::collections::HashMap<String, String> =
            url_pairs(&seen.query).into_iter().collect();
        let skip: usize = params["skip"].parse().unwrap();
        let take: usize = params["take"].parse().unwrap();
        let items: Vec<Value> = (skip..(skip + take).min(TOTAL)).map(task_json).collect();
        reply(
            200,
            json!({
                "ItemType": "Task",
                "TotalResults": TOTAL,
                "ItemsPerPage": take,
                "NumberOfPages": TOTAL.div_ceil(take),
                "LastPageNumber": TOTAL.div_ceil(take) - 1,
                "TotalCounts": { "Executing": TOTAL },
                "Items": items,
                "Links": {}
            }),
        )
    })
    .await;
    let query = TaskQuery {
        states: vec![TaskState::Executing, TaskState::Cancelling],
        node: Some("octopus-1".into()),
        take: Some(2),
        ..TaskQuery::default()
    };
    let tasks = client_for(&server.base()).all_tasks(&query).await.unwrap();
    let ids: Vec<&str> = tasks.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "ServerTasks-0",
            "ServerTasks-1",
            "ServerTasks-2",
            "ServerTasks-3",
            "ServerTasks-4"
        ]
    );
    let seen = server.seen();
    assert_eq!(seen.len(), 3);
    let first: Vec<(String, String)> = url_pairs(&seen[0].query);
    assert!(first.contains(&("states".into(), "Executing,Cancelling".into())));
    assert!(first.contains(&("node".into(), "octopus-1".into())));
    let skips: Vec<String> = seen
        .iter()
        .map(|s| {
            url_pairs(&s.query)
                .into_iter()
                .find(|(k, _)| k == "skip")
                .unwrap()
                .1
        })
        .collect();
    assert_eq!(skips, ["0", "2", "4"]);
}

#[tokio::test]
async fn one_page_of_tasks_decodes() {
    let server = fake(|_, _| {
        reply(
            200,
            json!({"ItemType": "Task", "TotalResults": 1, "ItemsPerPage": 30, "Items": [task_json(7)], "Links": {}}),
        )
    })
    .await;
    let query = TaskQuery {
        running: Some(true),
        ..TaskQuery::default()
    };
    let page = client_for(&server.base()).tasks(&query).await.unwrap();
    assert_eq!(page.total_results, 1);
    assert_eq!(page.items[0].server_node.as_deref(), Some("octopus-1"));
    assert_eq!(server.seen()[0].query, "running=true");
}

fn url_pairs(query: &str) -> Vec<(String, String)> {
    reqwest::Url::parse(&format!("http://x/?{query}"))
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect()
}

#[tokio::test]
async fn drain_is_read_modify_write_preserving_other_fields() {
    let drained = Arc::new(Mutex::new(false));
    let state = drained.clone();
    let server = fake(move |seen, _| {
        let mut now = state.lock().unwrap();
        match seen.method.as_str() {
            "GET" => reply(200, node_body(*now)),
            "PUT" => {
                let sent = seen.body_json();
                *now = sent["IsInMaintenanceMode"].as_bool().unwrap();
                reply(200, sent)
            }
            _ => reply(405, json!({"ErrorMessage": "Method not allowed"})),
        }
    })
    .await;
    let client = client_for(&server.base());
    let path = "/api/octopusservernodes/OctopusServerNodes-octopus-0";

    let node = client
        .set_node_drain("OctopusServerNodes-octopus-0", true)
        .await
        .unwrap();
    assert!(node.is_in_maintenance_mode);
    assert_eq!(server.count("PUT", path), 1);
    let put = server
        .seen()
        .into_iter()
        .find(|s| s.method == "PUT")
        .unwrap();
    let mut expected = node_body(true);
    // Nulls Octopus sent are not echoed back; everything else is, unchanged.
    let map = expected.as_object_mut().unwrap();
    map.remove("LastModifiedOn");
    map.remove("LastModifiedBy");
    assert_eq!(put.body_json(), expected);
    assert_eq!(put.api_key.as_deref(), Some(KEY));

    // Already drained: read only, no PUT.
    let node = client
        .set_node_drain("OctopusServerNodes-octopus-0", true)
        .await
        .unwrap();
    assert!(node.is_in_maintenance_mode);
    assert_eq!(server.count("PUT", path), 1);

    let node = client
        .set_node_drain("OctopusServerNodes-octopus-0", false)
        .await
        .unwrap();
    assert!(!node.is_in_maintenance_mode);
    assert_eq!(server.count("PUT", path), 2);
    assert_eq!(server.count("GET", path), 3);
}

#[tokio::test]
async fn maintenance_mode_is_read_modify_write() {
    let on = Arc::new(Mutex::new(false));
    let state = on.clone();
    let server = fake(move |seen, _| {
        let mut now = state.lock().unwrap();
        if seen.method == "PUT" {
            *now = seen.body_json()["IsInMaintenanceMode"].as_bool().unwrap();
        }
        reply(
            200,
            json!({
                "Id": "maintenance",
                "IsInMaintenanceMode": *now,
                "Links": { "Self": "/api/maintenanceconfiguration" }
            }),
        )
    })
    .await;
    let client = client_for(&server.base());
    let path = "/api/maintenanceconfiguration";
    assert!(!client.maintenance().await.unwrap().is_in_maintenance_mode);
    assert!(
        client
            .set_maintenance(true)
            .await
            .unwrap()
            .is_in_maintenance_mode
    );
    assert!(
        client
            .set_maintenance(true)
            .await
            .unwrap()
            .is_in_maintenance_mode
    );
    assert_eq!(server.count("PUT", path), 1);
    let put = server
        .seen()
        .into_iter()
        .find(|s| s.method == "PUT")
        .unwrap();
    assert_eq!(
        put.body_json(),
        json!({"Id": "maintenance", "IsInMaintenanceMode": true, "Links": { "Self": "/api/maintenanceconfiguration" }})
    );
    assert!(
        !client
            .set_maintenance(false)
            .await
            .unwrap()
            .is_in_maintenance_mode
    );
    assert_eq!(server.count("PUT", path), 2);
}

#[tokio::test]
async fn tasks_are_created_and_cancelled_with_octopus_bodies() {
    let server = fake(|seen, _| match (seen.method.as_str(), seen.path.as_str()) {
        ("POST", "/api/tasks") => {
            let sent = seen.body_json();
            let mut task = task_json(42);
            task["Name"] = sent["Name"].clone();
            task["Arguments"] = sent["Arguments"].clone();
            task["State"] = json!("Queued");
            reply(201, task)
        }
        ("POST", "/api/Spaces-2/tasks") => reply(201, task_json(43)),
        ("POST", "/api/tasks/ServerTasks-42/cancel") => {
            let mut task = task_json(42);
            task["State"] = json!("Cancelling");
            reply(200, task)
        }
        _ => reply(404, json!({"ErrorMessage": "no route"})),
    })
    .await;
    let client = client_for(&server.base());
    let create = CreateTask::new(builtin_tasks::UPDATE_CALAMARI, "Update Calamari")
        .argument("MachineIds", json!(["Machines-1", "Machines-2"]));
    let task = client.create_task(&create).await.unwrap();
    assert_eq!(task.name, "UpdateCalamari");
    assert_eq!(task.state, TaskState::Queued);
    assert_eq!(
        server.seen()[0].body_json(),
        json!({
            "Name": "UpdateCalamari",
            "Description": "Update Calamari",
            "Arguments": { "MachineIds": ["Machines-1", "Machines-2"] }
        })
    );

    let task = client
        .create_task(&CreateTask::new(builtin_tasks::HEALTH, "Check").in_space("Spaces-2"))
        .await
        .unwrap();
    assert_eq!(task.id, "ServerTasks-43");

    let task = client.cancel_task("ServerTasks-42").await.unwrap();
    assert_eq!(task.state, TaskState::Cancelling);
}

#[tokio::test]
async fn base_url_with_virtual_directory_prefixes_every_route() {
    let server = fake(|seen, _| match seen.path.as_str() {
        "/ns1/octo/api" => reply(200, root_body()),
        "/ns1/octo/api/octopusservernodes/summary" => reply(200, json!({"Nodes": []})),
        _ => reply(
            404,
            json!({"ErrorMessage": "outside the virtual directory"}),
        ),
    })
    .await;
    for base in [
        format!("{}/ns1/octo", server.base()),
        format!("{}/ns1/octo/", server.base()),
    ] {
        let client = client_for(&base);
        assert_eq!(client.root().await.unwrap().version, "2024.2.9220");
        client.cluster_summary().await.unwrap();
    }
    assert_eq!(server.count("GET", "/ns1/octo/api"), 2);
}

#[tokio::test]
async fn ids_are_one_path_segment() {
    let server = fake(|_, _| reply(404, json!({"ErrorMessage": "nope"}))).await;
    let _ = client_for(&server.base())
        .get_node("../maintenanceconfiguration")
        .await;
    assert_eq!(
        server.seen()[0].path,
        "/api/octopusservernodes/..%2Fmaintenanceconfiguration"
    );
}

#[test]
fn endpoint_problems_are_invalid_endpoint() {
    let bad_pem = OctopusEndpoint::new("https://octopus", ApiKey::new(KEY))
        .with_ca_bundle(b"not a certificate".to_vec());
    let error = OctopusClient::new(&bad_pem).unwrap_err();
    assert_eq!(error.reason(), "OctopusEndpointInvalid");

    let empty_key = OctopusEndpoint::new("https://octopus", ApiKey::new("  "));
    assert_eq!(
        OctopusClient::new(&empty_key).unwrap_err().reason(),
        "OctopusEndpointInvalid"
    );

    let newline_in_key = OctopusEndpoint::new("https://octopus", ApiKey::new("API-A\nB"));
    let error = OctopusClient::new(&newline_in_key).unwrap_err();
    assert!(!error.to_string().contains("API-A"));

    let client = OctopusClient::new(&OctopusEndpoint::new(
        "https://octopus:8443/",
        ApiKey::new(KEY),
    ))
    .unwrap();
    assert!(!format!("{client:?}").contains(KEY));
}

#[test]
fn the_trait_is_object_safe() {
    let client = OctopusClient::new(&OctopusEndpoint::new(
        "http://127.0.0.1:1",
        ApiKey::new(KEY),
    ))
    .unwrap();
    let api: Arc<dyn OctopusApi> = Arc::new(client);
    drop(api);
}

/// Records what the client reports, for the metrics.
#[derive(Default)]
struct Calls(Mutex<Vec<(String, &'static str, Option<u16>)>>);

impl CallObserver for Calls {
    fn observed(&self, method: &str, route: &'static str, status: Option<u16>) {
        self.0.lock().unwrap().push((method.into(), route, status));
    }
}

#[tokio::test]
async fn every_attempt_is_reported_by_route_template() {
    let server = fake(|seen, n| match seen.path.as_str() {
        "/api/octopusservernodes/summary" if n == 0 => reply(503, json!({})),
        "/api/octopusservernodes/summary" => reply(200, json!({"Nodes": [], "Links": {}})),
        _ => reply(
            404,
            json!({"ErrorMessage": "The resource you requested was not found."}),
        ),
    })
    .await;
    let calls = Arc::new(Calls::default());
    let client = client_for(&server.base()).with_observer(calls.clone());
    client.cluster_summary().await.unwrap();
    client
        .get_node("OctopusServerNodes-octo-0")
        .await
        .unwrap_err();
    let seen = calls.0.lock().unwrap().clone();
    assert_eq!(
        seen,
        [
            ("GET".into(), "/api/octopusservernodes/summary", Some(503)),
            ("GET".into(), "/api/octopusservernodes/summary", Some(200)),
            ("GET".into(), "/api/octopusservernodes/{id}", Some(404)),
        ]
    );

    // No answer at all: no status.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let calls = Arc::new(Calls::default());
    let options = ClientOptions {
        retries: 0,
        ..fast_options()
    };
    let client = client_with(&format!("http://{addr}"), KEY, options).with_observer(calls.clone());
    client.root().await.unwrap_err();
    assert_eq!(*calls.0.lock().unwrap(), [("GET".into(), "/api", None)]);
}

#[tokio::test]
async fn delete_node_sends_delete_on_the_node_and_names_a_404() {
    let server = fake(|seen, n| match (seen.method.as_str(), n) {
        ("DELETE", 0) => Reply {
            status: 200,
            body: String::new(),
            delay: Duration::ZERO,
        },
        _ => reply(
            404,
            json!({"ErrorMessage": "The resource 'OctopusServerNodes-octo-2' was not found."}),
        ),
    })
    .await;
    let client = client_for(&server.base());
    client
        .delete_node("OctopusServerNodes-octo-2")
        .await
        .unwrap();
    let error = client
        .delete_node("OctopusServerNodes-octo-2")
        .await
        .unwrap_err();
    assert!(matches!(error, OctopusError::NotFound { .. }), "{error:?}");
    assert_eq!(
        server.count(
            "DELETE",
            "/api/octopusservernodes/OctopusServerNodes-octo-2"
        ),
        2
    );
    assert_eq!(server.seen()[0].api_key.as_deref(), Some(KEY));
}
