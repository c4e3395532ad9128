//! The twin's REST API over real HTTP on 127.0.0.1, with pods and Services fed directly
//! (no control plane). Responses are read as raw JSON with literal Octopus field names,
//! so the twin's own types cannot vouch for themselves.

use std::collections::BTreeMap;
use std::time::Duration;

use octopus_e2e::twin::{
    EventKind, Faults, GeneratorConfig, OctopusEnv, PodView, Role, Secret, Timing, Twin,
    TwinConfig, TwinHandle,
};
use reqwest::StatusCode;
use serde_json::{Value, json};

const NS: &str = "ns1";
const SVC: &str = "octo";
const KEY: &str = "API-TWINADMIN0000000000000000";
const USER_KEY: &str = "API-TWINUSER00000000000000000";

fn fast_timing() -> Timing {
    Timing {
        start_delay: Duration::from_millis(50),
        migration_time: Duration::from_millis(100),
        crash_backoff_base: Duration::from_millis(50),
        crash_backoff_max: Duration::from_millis(200),
        cancel_delay: Duration::from_millis(100),
        api_task_duration: Duration::from_secs(120),
        ..Timing::default()
    }
}

async fn twin() -> TwinHandle {
    Twin::start(TwinConfig {
        timing: fast_timing(),
        generator: GeneratorConfig::off(),
        tick: Duration::from_millis(10),
        ..TwinConfig::default()
    })
    .await
    .expect("twin starts")
}

fn pod(name: &str, tag: &str) -> PodView {
    PodView {
        namespace: NS.into(),
        name: name.into(),
        uid: format!("{name}-{tag}"),
        labels: BTreeMap::from([("app".into(), "octopus".into())]),
        image: format!("octopusdeploy/octopusdeploy:{tag}"),
        env: Ok(OctopusEnv {
            node_name: name.into(),
            connection_string: Secret::new("Server=sql;Database=Octopus1;Password=x"),
            admin_api_key: Some(Secret::new(KEY)),
            task_cap: None,
        }),
    }
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("gave up waiting until {what}");
}

/// A twin with a Service and `n` running nodes on 2024.1.100.
async fn cluster(n: usize) -> TwinHandle {
    let twin = twin().await;
    twin.apply_service(NS, SVC, BTreeMap::from([("app".into(), "octopus".into())]));
    for i in 0..n {
        let name = format!("octo-{i}");
        twin.apply_pod(pod(&name, "2024.1.100"));
        wait_until(&format!("{name} is ready"), || {
            twin.pod_status(NS, &name).is_some_and(|s| s.ready)
        })
        .await;
    }
    twin
}

struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    fn new(twin: &TwinHandle) -> Self {
        Self {
            http: reqwest::Client::new(),
            base: twin.installation_url(NS, SVC),
        }
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(key) = key {
            req = req.header("X-Octopus-ApiKey", key);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.expect("request is answered");
        let status = resp.status();
        let text = resp.text().await.expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.send(reqwest::Method::GET, path, Some(KEY), None).await
    }
}

#[tokio::test]
async fn twin_root_document_is_anonymous_and_links_into_the_virtual_directory() {
    let twin = cluster(1).await;
    let api = Api::new(&twin);
    let (status, root) = api.send(reqwest::Method::GET, "/api", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(root["Application"], "Octopus Deploy");
    assert_eq!(root["Version"], "2024.1.100");
    assert_eq!(root["ApiVersion"], "3.0.0");
    assert!(
        root["InstallationId"]
            .as_str()
            .is_some_and(|s| s.len() == 36)
    );
    let links = &root["Links"];
    assert_eq!(
        links["OctopusServerClusterSummary"],
        "/ns1/octo/api/octopusservernodes/summary"
    );
    assert_eq!(
        links["OctopusServerNodes"],
        "/ns1/octo/api/octopusservernodes{/id}{?skip,take,ids,partialName}"
    );
    assert_eq!(
        links["MaintenanceConfiguration"],
        "/ns1/octo/api/maintenanceconfiguration"
    );
    assert_eq!(
        links["ServerHealthStatus"],
        "/ns1/octo/api/serverstatus/health"
    );
    assert_eq!(links["ServerStatus"], "/ns1/octo/api/serverstatus");
    assert!(
        links["Tasks"]
            .as_str()
            .is_some_and(|t| t.starts_with("/ns1/octo/api/tasks{/id}{?skip,"))
    );
    twin.shutdown().await;
}

#[tokio::test]
async fn twin_requests_need_a_valid_api_key() {
    let twin = cluster(1).await;
    let api = Api::new(&twin);
    let path = "/api/octopusservernodes/summary";
    let (status, body) = api.send(reqwest::Method::GET, path, None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        body["ErrorMessage"]
            .as_str()
            .is_some_and(|m| m.contains("API key"))
    );
    let (status, _) = api
        .send(reqwest::Method::GET, path, Some("API-WRONG"), None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = api.get(path).await;
    assert_eq!(status, StatusCode::OK);
    // The key may also travel as a query parameter.
    let (status, _) = api
        .send(
            reqwest::Method::GET,
            &format!("{path}?apikey={KEY}"),
            None,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    twin.shutdown().await;
}

#[tokio::test]
async fn twin_no_ready_endpoint_means_503() {
    let twin = twin().await;
    let api = Api::new(&twin);
    let (status, _) = api.get("/api").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "no Service yet");
    twin.apply_service(NS, SVC, BTreeMap::from([("app".into(), "octopus".into())]));
    twin.set_faults(
        NS,
        SVC,
        Faults {
            hang_on_start: ["octo-0".to_string()].into(),
            ..Faults::default()
        },
    );
    twin.apply_pod(pod("octo-0", "2024.1.100"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, _) = api.get("/api").await;
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "pod never becomes ready"
    );
    twin.shutdown().await;
}

#[tokio::test]
async fn twin_nodes_summary_details_and_paging() {
    let twin = cluster(2).await;
    let api = Api::new(&twin);
    let (status, summary) = api.get("/api/octopusservernodes/summary").await;
    assert_eq!(status, StatusCode::OK);
    let nodes = summary["Nodes"].as_array().expect("Nodes");
    assert_eq!(nodes.len(), 2);
    let first = &nodes[0];
    assert_eq!(first["Id"], "OctopusServerNodes-octo-0");
    assert_eq!(first["Name"], "octo-0");
    assert_eq!(first["IsInMaintenanceMode"], false);
    assert_eq!(first["IsOffline"], false);
    assert_eq!(first["MaxConcurrentTasks"], 5);
    assert_eq!(first["RunningTaskCount"], 0);
    // Exactly OctopusServerNodeSummaryResource's fields: no version (ask the node).
    let mut fields: Vec<&str> = first
        .as_object()
        .expect("node")
        .keys()
        .map(String::as_str)
        .collect();
    fields.sort_unstable();
    assert_eq!(
        fields,
        [
            "Id",
            "IsInMaintenanceMode",
            "IsOffline",
            "LastSeen",
            "Links",
            "MaxConcurrentTasks",
            "Name",
            "RunningTaskCount"
        ]
    );
    let last_seen = first["LastSeen"].as_str().expect("LastSeen");
    assert!(
        last_seen.ends_with("+00:00") && last_seen.contains('T'),
        "{last_seen}"
    );

    let (status, page) = api.get("/api/octopusservernodes?take=1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["ItemType"], "OctopusServerNode");
    assert_eq!(page["TotalResults"], 2);
    assert_eq!(page["ItemsPerPage"], 1);
    assert_eq!(page["NumberOfPages"], 2);
    assert_eq!(page["LastPageNumber"], 1);
    assert_eq!(page["Items"].as_array().map(Vec::len), Some(1));
    assert!(page["Links"]["Page.Next"].is_string());
    assert_eq!(
        page["Links"]["Page.Last"],
        "/ns1/octo/api/octopusservernodes?skip=1&take=1"
    );
    let (_, all) = api
        .get(
            page["Links"]["Page.All"]
                .as_str()
                .and_then(|l| l.strip_prefix("/ns1/octo"))
                .expect("Page.All"),
        )
        .await;
    assert_eq!(all["Items"].as_array().map(Vec::len), Some(2));

    let (status, node) = api
        .get("/api/octopusservernodes/OctopusServerNodes-octo-1")
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(node["Name"], "octo-1");
    assert_eq!(
        node["Links"]["Self"],
        "/ns1/octo/api/octopusservernodes/OctopusServerNodes-octo-1"
    );
    let (status, details) = api
        .get("/api/octopusservernodes/OctopusServerNodes-octo-1/details")
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(details["RunningTasks"], 0);

    let (status, missing) = api
        .get("/api/octopusservernodes/OctopusServerNodes-nope")
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(missing["ErrorMessage"].is_string());
    twin.shutdown().await;
}

#[tokio::test]
async fn twin_drain_through_put_and_ping_answers_418_for_a_drained_node() {
    let twin = cluster(1).await;
    let api = Api::new(&twin);
    let (status, ping) = api
        .send(
            reqwest::Method::GET,
            "/api/octopusservernodes/ping",
            None,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ping["Name"], "octo-0");
    assert!(ping.get("Version").is_none(), "{ping}");

    let id = "OctopusServerNodes-octo-0";
    let (_, mut node) = api.get(&format!("/api/octopusservernodes/{id}")).await;
    node["IsInMaintenanceMode"] = json!(true);
    let (status, updated) = api
        .send(
            reqwest::Method::PUT,
            &format!("/api/octopusservernodes/{id}"),
            Some(KEY),
            Some(node.clone()),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(updated["IsInMaintenanceMode"], true);
    let (status, ping) = api
        .send(
            reqwest::Method::GET,
            "/api/octopusservernodes/ping",
            None,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::IM_A_TEAPOT);
    assert_eq!(ping["IsInMaintenanceMode"], true);

    let mut renamed = node.clone();
    renamed["Name"] = json!("other");
    let (status, body) = api
        .send(
            reqwest::Method::PUT,
            &format!("/api/octopusservernodes/{id}"),
            Some(KEY),
            Some(renamed),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["ErrorMessage"].is_string());
    let mut moved = node.clone();
    moved["Id"] = json!("OctopusServerNodes-other");
    let (status, _) = api
        .send(
            reqwest::Method::PUT,
            &format!("/api/octopusservernodes/{id}"),
            Some(KEY),
            Some(moved),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = api
        .send(
            reqwest::Method::PUT,
            &format!("/api/octopusservernodes/{id}"),
            Some(KEY),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // The drain flag lives in the database: a replaced pod comes back drained.
    twin.delete_pod(NS, "octo-0");
    let mut replacement = pod("octo-0", "2024.1.100");
    replacement.uid = "replacement".into();
    twin.apply_pod(replacement);
    wait_until("replacement ready", || {
        twin.pod_status(NS, "octo-0").is_some_and(|s| s.ready)
    })
    .await;
    let (_, node) = api.get(&format!("/api/octopusservernodes/{id}")).await;
    assert_eq!(node["IsInMaintenanceMode"], true);
    twin.shutdown().await;
}

#[tokio::test]
async fn twin_maintenance_mode_is_read_only_for_users_and_health_says_so() {
    let twin = cluster(1).await;
    twin.add_api_key(NS, SVC, USER_KEY, Role::User);
    let api = Api::new(&twin);
    let (status, m) = api.get("/api/maintenanceconfiguration").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(m["Id"], "maintenance");
    assert_eq!(m["IsInMaintenanceMode"], false);
    let (status, health) = api
        .send(reqwest::Method::GET, "/api/serverstatus/health", None, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(health["IsOperatingNormally"], true);

    let on = json!({"Id": "maintenance", "IsInMaintenanceMode": true});
    let (status, _) = api
        .send(
            reqwest::Method::PUT,
            "/api/maintenanceconfiguration",
            Some(USER_KEY),
            Some(on.clone()),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "only administrators switch maintenance mode"
    );
    let (status, m) = api
        .send(
            reqwest::Method::PUT,
            "/api/maintenanceconfiguration",
            Some(KEY),
            Some(on),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(m["IsInMaintenanceMode"], true);

    let (status, health) = api
        .send(reqwest::Method::GET, "/api/serverstatus/health", None, None)
        .await;
    assert_eq!(status, StatusCode::IM_A_TEAPOT);
    assert_eq!(health["IsOperatingNormally"], false);
    assert_eq!(health["IsEntireClusterReadOnly"], true);
    assert_eq!(health["IsEntireClusterDrainingTasks"], false);
    assert_eq!(health["IsCompliantWithLicense"], true);
    assert!(health["Description"].is_string());

    let health_task =
        json!({"Name": "Health", "Description": "Check", "Arguments": {"EnvironmentId": null}});
    let (status, refused) = api
        .send(
            reqwest::Method::POST,
            "/api/tasks",
            Some(USER_KEY),
            Some(health_task.clone()),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        refused["ErrorMessage"]
            .as_str()
            .is_some_and(|m| m.contains("maintenance mode"))
    );
    let (status, task) = api
        .send(
            reqwest::Method::POST,
            "/api/tasks",
            Some(KEY),
            Some(health_task),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "administrators still queue system tasks"
    );
    assert_eq!(task["Name"], "Health");
    twin.shutdown().await;
}

#[tokio::test]
async fn twin_tasks_list_filter_and_cancel() {
    let twin = cluster(1).await;
    let api = Api::new(&twin);
    let (status, task) = api
        .send(
            reqwest::Method::POST,
            "/api/tasks",
            Some(KEY),
            Some(json!({"Name": "UpdateCalamari", "Description": "Update Calamari", "Arguments": {"MachineIds": ["Machines-1"]}})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let id = task["Id"].as_str().expect("Id").to_string();
    assert!(id.starts_with("ServerTasks-"));
    assert_eq!(task["State"], "Executing");
    assert_eq!(task["ServerNode"], "octo-0");
    assert_eq!(task["IsCompleted"], false);
    assert_eq!(task["Arguments"]["MachineIds"][0], "Machines-1");
    assert_eq!(
        task["Links"]["Cancel"],
        format!("/ns1/octo/api/tasks/{id}/cancel")
    );

    let (status, list) = api
        .get("/api/tasks?states=Executing,Cancelling&node=octo-0&take=10")
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["ItemType"], "Task");
    assert_eq!(list["TotalResults"], 1);
    assert_eq!(list["ItemsPerPage"], 10);
    assert_eq!(list["Items"][0]["Id"], id.as_str());
    assert_eq!(list["TotalCounts"]["Executing"], 1);
    let (_, running) = api.get("/api/tasks?running=true").await;
    assert_eq!(running["TotalResults"], 1);
    let (_, other_node) = api.get("/api/tasks?node=octo-9").await;
    assert_eq!(other_node["TotalResults"], 0);
    let (_, spaced) = api.get("/api/Spaces-1/tasks?active=true").await;
    assert_eq!(spaced["TotalResults"], 1);

    let (status, cancelling) = api
        .send(
            reqwest::Method::POST,
            &format!("/api/tasks/{id}/cancel"),
            Some(KEY),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(cancelling["State"], "Cancelling");
    let mut state = String::new();
    for _ in 0..200 {
        let (_, t) = api.get(&format!("/api/tasks/{id}")).await;
        state = t["State"].as_str().unwrap_or_default().to_string();
        if state == "Canceled" {
            assert_eq!(t["IsCompleted"], true);
            assert_eq!(t["FinishedSuccessfully"], false);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(state, "Canceled");

    let (status, _) = api.get("/api/tasks/ServerTasks-999").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = api
        .send(
            reqwest::Method::POST,
            "/api/tasks",
            Some(KEY),
            Some(json!({"Name": "Deploy"})),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "deployments are not created by task name"
    );
    assert!(body["ErrorMessage"].is_string());
    twin.shutdown().await;
}

#[tokio::test]
async fn twin_a_task_fails_when_its_node_is_killed() {
    let twin = cluster(1).await;
    let api = Api::new(&twin);
    let (_, task) = api
        .send(
            reqwest::Method::POST,
            "/api/tasks",
            Some(KEY),
            Some(json!({"Name": "Health"})),
        )
        .await;
    let id = task["Id"].as_str().expect("Id").to_string();
    twin.delete_pod(NS, "octo-0");
    twin.apply_pod(pod("octo-1", "2024.1.100"));
    wait_until("octo-1 ready", || {
        twin.pod_status(NS, "octo-1").is_some_and(|s| s.ready)
    })
    .await;
    let (_, t) = api.get(&format!("/api/tasks/{id}")).await;
    assert_eq!(t["State"], "Failed");
    assert!(
        t["ErrorMessage"]
            .as_str()
            .is_some_and(|m| m.contains("octo-0"))
    );
    let (_, summary) = api.get("/api/octopusservernodes/summary").await;
    let old = summary["Nodes"]
        .as_array()
        .and_then(|n| n.iter().find(|n| n["Name"] == "octo-0"))
        .cloned()
        .expect("stopped node stays in the table");
    assert_eq!(old["IsOffline"], true);
    twin.shutdown().await;
}

#[tokio::test]
async fn twin_injected_faults_error_expired_key_and_dropped_connections() {
    let twin = cluster(1).await;
    let api = Api::new(&twin);
    twin.set_faults(
        NS,
        SVC,
        Faults {
            error_rate: 1.0,
            ..Faults::default()
        },
    );
    let (status, body) = api.get("/api/octopusservernodes/summary").await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(body["ErrorMessage"].is_string());

    twin.set_faults(
        NS,
        SVC,
        Faults {
            api_key_expired: true,
            ..Faults::default()
        },
    );
    let (status, _) = api.get("/api/octopusservernodes/summary").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = api
        .send(
            reqwest::Method::GET,
            "/api/octopusservernodes/ping",
            None,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "anonymous routes still answer");

    twin.set_faults(
        NS,
        SVC,
        Faults {
            drop_rate: 1.0,
            ..Faults::default()
        },
    );
    let result = reqwest::Client::new()
        .get(format!("{}/api", twin.installation_url(NS, SVC)))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    let err = result.expect_err("the connection is dropped");
    assert!(!err.is_timeout(), "closed, not hung: {err}");

    twin.set_faults(
        NS,
        SVC,
        Faults {
            latency: Duration::from_millis(50),
            ..Faults::default()
        },
    );
    let (status, _) = api.get("/api").await;
    assert_eq!(status, StatusCode::OK, "latency delays but answers");

    let statuses: Vec<u16> = twin
        .installation_events(NS, SVC)
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::HttpRequest { status, .. } => Some(status),
            _ => None,
        })
        .collect();
    assert!(statuses.contains(&500) && statuses.contains(&401) && statuses.contains(&0));
    twin.shutdown().await;
}

#[tokio::test]
async fn twin_admin_routes_show_state_and_events_and_take_settings() {
    let twin = cluster(1).await;
    let http = reqwest::Client::new();
    let base = twin.base_url();
    let api = Api::new(&twin);
    api.get("/api/octopusservernodes/summary").await;

    let snapshot: Value = http
        .get(format!("{base}/_twin/installations/{NS}/{SVC}"))
        .send()
        .await
        .expect("snapshot")
        .json()
        .await
        .expect("json");
    assert_eq!(snapshot["schema"]["line"], "2024.1");
    assert_eq!(snapshot["nodes"][0]["name"], "octo-0");
    assert_eq!(snapshot["services"][0], "ns1/octo");
    let dump = serde_json::to_string(&snapshot).unwrap_or_default();
    assert!(
        !dump.contains(KEY) && !dump.contains("Password"),
        "no secrets in snapshots"
    );

    let events: Vec<Value> = http
        .get(format!("{base}/_twin/events?since=0"))
        .send()
        .await
        .expect("events")
        .json()
        .await
        .expect("json");
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "NodeRunning" && e["node"] == "octo-0")
    );
    assert!(events.iter().any(|e| e["type"] == "HttpRequest"
        && e["route"] == "/api/octopusservernodes/summary"
        && e["status"] == 200));

    let status = http
        .put(format!("{base}/_twin/installations/{NS}/{SVC}/faults"))
        .json(&json!({"error_rate": 1.0}))
        .send()
        .await
        .expect("faults")
        .status();
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = api.get("/api").await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    http.put(format!("{base}/_twin/installations/{NS}/{SVC}/faults"))
        .json(&json!({}))
        .send()
        .await
        .expect("faults cleared");

    let generator = json!({"enabled": true, "deployments_per_minute": 600.0,
        "deployment_duration_min_ms": 50, "deployment_duration_max_ms": 100, "health_check_interval_ms": null});
    http.put(format!("{base}/_twin/installations/{NS}/{SVC}/generator"))
        .json(&generator)
        .send()
        .await
        .expect("generator");
    wait_until("deployments ran", || {
        twin.snapshot(NS, SVC)
            .is_some_and(|s| s.tasks.get("Success").copied().unwrap_or(0) >= 2)
    })
    .await;
    let paused = http
        .post(format!(
            "{base}/_twin/installations/{NS}/{SVC}/generator/pause"
        ))
        .send()
        .await
        .expect("pause")
        .status();
    assert_eq!(paused, StatusCode::NO_CONTENT);
    assert_eq!(
        twin.snapshot(NS, SVC).map(|s| s.generator.config.enabled),
        Some(false)
    );

    let pod: Value = http
        .get(format!("{base}/_twin/pods/{NS}/octo-0"))
        .send()
        .await
        .expect("pod")
        .json()
        .await
        .expect("json");
    assert_eq!(pod["ready"], true);
    twin.shutdown().await;
}

#[tokio::test]
async fn twin_schema_rules_over_http_old_node_never_serves_after_an_upgrade() {
    let twin = cluster(1).await;
    let api = Api::new(&twin);
    twin.delete_pod(NS, "octo-0");
    twin.apply_pod(pod("octo-0", "2024.2.5"));
    wait_until("upgraded node ready", || {
        twin.pod_status(NS, "octo-0").is_some_and(|s| s.ready)
    })
    .await;
    let (_, root) = api.get("/api").await;
    assert_eq!(root["Version"], "2024.2.5");
    twin.apply_pod(pod("octo-1", "2024.1.100"));
    wait_until("old node crash loops", || {
        twin.pod_status(NS, "octo-1")
            .is_some_and(|s| s.restart_count >= 2)
    })
    .await;
    assert!(twin.pod_status(NS, "octo-1").is_some_and(|s| !s.ready));
    let events = twin.installation_events(NS, SVC);
    assert!(
        events
            .iter()
            .any(|e| matches!(e.kind, EventKind::SchemaNewerThanNode { .. }))
    );
    assert!(
        !events
            .iter()
            .any(|e| matches!(e.kind, EventKind::SchemaViolation { .. }))
    );
    twin.shutdown().await;
}

#[tokio::test]
async fn twin_answers_each_pod_at_its_own_address() {
    let twin = cluster(2).await;
    twin.apply_pod(PodView {
        uid: "octo-1-2024.1.100".into(),
        ..pod("octo-1", "2024.1.200")
    });
    let http = reqwest::Client::new();
    let root_of = |pod: &str| {
        let url = format!("{}/api", twin.node_url(NS, SVC, pod));
        let http = http.clone();
        async move {
            let resp = http.get(url).send().await.expect("answered");
            let status = resp.status();
            (status, resp.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let mut version = Value::Null;
    for _ in 0..300 {
        version = root_of("octo-1").await.1["Version"].clone();
        if version == "2024.1.200" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(version, "2024.1.200");
    let (status, root) = root_of("octo-0").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(root["Version"], "2024.1.100");
    // Links stay under the node's own address.
    assert_eq!(root["Links"]["Self"], "/ns1/octo/octo-0/api");
    let (status, _) = root_of("octo-7").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    twin.shutdown().await;
}

#[tokio::test]
async fn twin_serves_what_the_official_clients_read_first() {
    let twin = cluster(1).await;
    let api = Api::new(&twin);
    let (_, root) = api.get("/api/").await;
    assert_eq!(
        root["Links"]["Spaces"],
        "/ns1/octo/api/spaces{/id}{?skip,ids,take,partialName}"
    );
    let (status, spaces) = api.get("/api/spaces").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(spaces["ItemType"], "Space");
    let space = &spaces["Items"][0];
    assert_eq!(space["Id"], "Spaces-1");
    assert_eq!(space["IsDefault"], true);
    assert_eq!(space["Slug"], "default");
    assert_eq!(space["SpaceManagersTeams"], json!([]));
    assert_eq!(space["Links"]["SpaceHome"], "/ns1/octo/api/Spaces-1");
    let (status, one) = api.get("/api/spaces/Spaces-1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(one["Name"], "Default");
    let (status, home) = api.get("/api/Spaces-1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(home["Links"]["Self"], "/ns1/octo/api/Spaces-1");
    assert!(
        home["Links"]["Tasks"]
            .as_str()
            .is_some_and(|t| t.starts_with("/ns1/octo/api/Spaces-1/tasks{/id}{?skip,"))
    );
    let (status, _) = api.get("/api/Spaces-9").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (status, types) = api.get("/api/tasks/taskTypes").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        types
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t["Id"] == "UpdateCalamari"))
    );

    let (status, envs) = api.get("/api/Spaces-1/environments").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(envs["Items"][0]["Id"], "Environments-1");
    let machines_link = envs["Items"][0]["Links"]["Machines"]
        .as_str()
        .and_then(|l| l.split('{').next())
        .and_then(|l| l.strip_prefix("/ns1/octo"))
        .expect("Machines link")
        .to_string();
    let (status, machines) = api.get(&machines_link).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(machines["TotalResults"], 2);
    let (_, filtered) = api
        .get("/api/Spaces-1/machines?environmentIds=Environments-2")
        .await;
    assert_eq!(filtered["Items"][0]["Id"], "Machines-3");
    assert_eq!(
        filtered["Items"][0]["EnvironmentIds"],
        json!(["Environments-2"])
    );
    twin.shutdown().await;
}

#[tokio::test]
async fn twin_task_details_log_queue_and_space_cancel() {
    let twin = cluster(1).await;
    let api = Api::new(&twin);
    // One slot on the node (cap 1): the second task waits behind the first.
    let (_, mut node) = api
        .get("/api/octopusservernodes/OctopusServerNodes-octo-0")
        .await;
    node["MaxConcurrentTasks"] = json!(1);
    api.send(
        reqwest::Method::PUT,
        "/api/octopusservernodes/OctopusServerNodes-octo-0",
        Some(KEY),
        Some(node),
    )
    .await;
    let mut ids = Vec::new();
    for _ in 0..2 {
        let (status, task) = api
            .send(
                reqwest::Method::POST,
                "/api/Spaces-1/tasks",
                Some(KEY),
                Some(json!({"Name": "Health", "Description": "Check", "Arguments": {"EnvironmentId": "Environments-1"}})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{task}");
        assert_eq!(task["SpaceId"], "Spaces-1");
        ids.push(task["Id"].as_str().expect("Id").to_string());
    }
    let (status, details) = api.get(&format!("/api/tasks/{}/details", ids[0])).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(details["Task"]["Id"], ids[0].as_str());
    assert_eq!(details["ActivityLogs"][0]["Status"], "Running");
    assert!(details["Progress"]["ProgressPercentage"].is_number());
    let (status, raw) = api.get(&format!("/api/tasks/{}/raw", ids[0])).await;
    assert_eq!(status, StatusCode::OK);
    assert!(raw.as_str().is_some_and(|r| r.contains("octo-0")), "{raw}");
    let (status, behind) = api
        .get(&format!("/api/tasks/{}/queued-behind", ids[1]))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(behind["TotalResults"], 0, "only running tasks are ahead");
    // Cancel through the route newer clients use.
    let (status, cancelled) = api
        .send(
            reqwest::Method::POST,
            &format!("/api/spaces/Spaces-1/tasks/{}/cancel", ids[1]),
            Some(KEY),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(cancelled["State"], "Canceled");
    twin.shutdown().await;
}

#[tokio::test]
async fn twin_refuses_machine_tasks_of_the_wrong_shape_as_octopus_does() {
    let twin = cluster(1).await;
    let api = Api::new(&twin);
    let (status, body) = api
        .send(
            reqwest::Method::POST,
            "/api/Spaces-1/tasks",
            Some(KEY),
            Some(json!({"Name": "UpdateCalamari", "Description": "x", "Arguments": {"EnvironmentId": "Environments-1"}})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body["ErrorMessage"],
        "There was a problem with your request."
    );
    let errors = body["Errors"].as_array().expect("Errors");
    assert_eq!(errors.len(), 2, "{body}");
    let (status, body) = api
        .send(
            reqwest::Method::POST,
            "/api/Spaces-1/tasks",
            Some(KEY),
            Some(json!({"Name": "Upgrade", "Description": "x", "Arguments": {}})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["Errors"][0]
            .as_str()
            .is_some_and(|e| e.contains("EnvironmentId"))
    );
    twin.shutdown().await;
}

#[tokio::test]
async fn twin_deletes_a_node_record_and_a_running_node_writes_it_again() {
    let twin = cluster(2).await;
    let api = Api::new(&twin);
    twin.delete_pod(NS, "octo-1");
    let id = "OctopusServerNodes-octo-1";
    let (status, _) = api
        .send(
            reqwest::Method::DELETE,
            &format!("/api/octopusservernodes/{id}"),
            Some(USER_KEY),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "an unknown key");
    let (status, _) = api
        .send(
            reqwest::Method::DELETE,
            &format!("/api/octopusservernodes/{id}"),
            Some(KEY),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = api.get(&format!("/api/octopusservernodes/{id}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, summary) = api.get("/api/octopusservernodes/summary").await;
    assert_eq!(summary["Nodes"].as_array().map(Vec::len), Some(1));
    // octo-0 still runs: its heartbeat writes its row again.
    let (status, _) = api
        .send(
            reqwest::Method::DELETE,
            "/api/octopusservernodes/OctopusServerNodes-octo-0",
            Some(KEY),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, node) = api
        .get("/api/octopusservernodes/OctopusServerNodes-octo-0")
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(node["Name"], "octo-0");
    twin.shutdown().await;
}
