//! The twin against the request sequence of Octopus's official Go client,
//! go-octopusdeploy v2, as a user script built on it would drive it: `NewClient` with and
//! without a space, nodes list/get/drain/undrain/delete, maintenance mode, server status,
//! tasks list/filter/create/details/cancel.
//!
//! The Go module proxy refuses go-octopusdeploy here ("This module version is not
//! available" for every version asked), so the client cannot be built in this suite. This
//! test replays what its source does instead, read from the repository: the routes and
//! link names of `pkg/client/octopusdeploy.go` (`NewClientWithCredentials`,
//! `RootResource.GetLinkPath`: the space root's link wins over the root's),
//! `pkg/spaces/space_service.go` (`GetDefaultSpace` pages `/api/spaces` by `Page.Next`),
//! `pkg/tasks/task_service.go` (`/api/tasks{/id}/details`,
//! `/api/spaces/{spaceId}/tasks/{id}/cancel`), `pkg/octopusservernodes` (a `CanDeleteService`
//! on the `OctopusServerNodes` link) — and decodes every answer into structs with the Go
//! models' JSON names and types, so a field the Go client could not decode fails here.

use std::collections::HashMap;
use std::time::Duration;

use jiff::Timestamp;
use octopus_e2e::twin::{Twin, TwinConfig};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

const NS: &str = "gosdk";
const SVC: &str = "octo";
const KEY: &str = "API-GOCLIENTCONTRACT000000000";

type Links = HashMap<String, String>;

/// `client.RootResource`.
#[derive(Deserialize)]
struct RootResource {
    #[serde(rename = "Application")]
    application: String,
    #[serde(rename = "Version")]
    version: String,
    #[serde(rename = "ApiVersion")]
    api_version: String,
    #[serde(rename = "InstallationId")]
    installation_id: String,
    #[serde(rename = "Links", default)]
    links: Links,
}

/// `resources.Resources[T]` with `resources.PagedResults` and `resources.Links`.
#[derive(Deserialize)]
struct Resources<T> {
    #[serde(rename = "Items")]
    items: Vec<T>,
    #[serde(rename = "ItemType")]
    item_type: String,
    #[serde(rename = "ItemsPerPage")]
    items_per_page: i64,
    #[serde(rename = "LastPageNumber")]
    last_page_number: i64,
    #[serde(rename = "NumberOfPages")]
    number_of_pages: i64,
    #[serde(rename = "TotalResults")]
    total_results: i64,
    #[serde(rename = "Links")]
    links: PageLinks,
}

#[derive(Deserialize)]
struct PageLinks {
    #[serde(rename = "Self", default)]
    self_: String,
    #[serde(rename = "Template", default)]
    template: String,
    #[serde(rename = "Page.All", default)]
    page_all: String,
    #[serde(rename = "Page.Current", default)]
    page_current: String,
    #[serde(rename = "Page.Last", default)]
    page_last: String,
    #[serde(rename = "Page.Next", default)]
    page_next: String,
}

/// `spaces.Space`.
#[derive(Deserialize)]
struct Space {
    #[serde(rename = "Id")]
    id: String,
    #[serde(rename = "Name")]
    name: String,
    #[serde(rename = "Slug")]
    slug: String,
    #[serde(rename = "IsDefault")]
    is_default: bool,
    #[serde(rename = "TaskQueueStopped")]
    task_queue_stopped: bool,
    #[serde(rename = "SpaceManagersTeams")]
    space_managers_teams: Vec<String>,
    #[serde(rename = "SpaceManagersTeamMembers")]
    space_managers_team_members: Vec<String>,
}

/// `octopusservernodes.OctopusServerNodeResource` (what the client PUTs back, too).
#[derive(Deserialize, Serialize, Clone)]
struct OctopusServerNodeResource {
    #[serde(rename = "Id")]
    id: String,
    #[serde(rename = "IsInMaintenanceMode")]
    is_in_maintenance_mode: bool,
    #[serde(rename = "MaxConcurrentTasks", skip_serializing_if = "is_zero")]
    max_concurrent_tasks: i32,
    #[serde(rename = "Name", skip_serializing_if = "String::is_empty")]
    name: String,
    #[serde(
        rename = "LastModifiedOn",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    last_modified_on: Option<Timestamp>,
    #[serde(rename = "Links", default)]
    links: Links,
}

fn is_zero(n: &i32) -> bool {
    *n == 0
}

/// `configuration.MaintenanceConfigurationResource`.
#[derive(Deserialize, Serialize)]
struct MaintenanceConfiguration {
    #[serde(rename = "Id")]
    id: String,
    #[serde(rename = "IsInMaintenanceMode")]
    is_in_maintenance_mode: bool,
}

/// `serverstatus.ServerStatus`.
#[derive(Deserialize)]
struct ServerStatus {
    #[serde(rename = "IsDatabaseEncrypted")]
    is_database_encrypted: bool,
    #[serde(rename = "IsMajorMinorUpgrade")]
    is_major_minor_upgrade: bool,
    #[serde(rename = "IsInMaintenanceMode")]
    is_in_maintenance_mode: bool,
    #[serde(rename = "IsUpgradeAvailable")]
    is_upgrade_available: bool,
    #[serde(rename = "MaximumAvailableVersion", default)]
    maximum_available_version: String,
}

/// `tasks.Task`.
#[derive(Deserialize, Serialize)]
struct Task {
    #[serde(rename = "Id", default, skip_serializing_if = "String::is_empty")]
    id: String,
    #[serde(rename = "Name")]
    name: String,
    #[serde(rename = "Description", default)]
    description: String,
    #[serde(rename = "Arguments", default)]
    arguments: HashMap<String, Value>,
    #[serde(rename = "State", default, skip_serializing_if = "String::is_empty")]
    state: String,
    #[serde(rename = "SpaceId", default, skip_serializing_if = "String::is_empty")]
    space_id: String,
    #[serde(rename = "ServerNode", default, skip_serializing)]
    server_node: Option<String>,
    #[serde(rename = "QueueTime", default, skip_serializing)]
    queue_time: Option<Timestamp>,
    #[serde(rename = "StartTime", default, skip_serializing)]
    start_time: Option<Timestamp>,
    #[serde(rename = "CompletedTime", default, skip_serializing)]
    completed_time: Option<Timestamp>,
    #[serde(rename = "LastUpdatedTime", default, skip_serializing)]
    last_updated_time: Option<Timestamp>,
    #[serde(rename = "IsCompleted", default, skip_serializing)]
    is_completed: Option<bool>,
    #[serde(rename = "FinishedSuccessfully", default, skip_serializing)]
    finished_successfully: Option<bool>,
    #[serde(rename = "HasBeenPickedUpByProcessor", default, skip_serializing)]
    has_been_picked_up_by_processor: bool,
    #[serde(rename = "Duration", default, skip_serializing)]
    duration: String,
}

/// `tasks.TaskDetailsResource`.
#[derive(Deserialize)]
struct TaskDetails {
    #[serde(rename = "Task")]
    task: Task,
    #[serde(rename = "ActivityLogs")]
    activity_logs: Vec<ActivityElement>,
    #[serde(rename = "PhysicalLogSize")]
    physical_log_size: i64,
    #[serde(rename = "Progress")]
    progress: TaskProgress,
}

#[derive(Deserialize)]
struct ActivityElement {
    #[serde(rename = "Id")]
    id: String,
    #[serde(rename = "Status")]
    status: String,
    #[serde(rename = "Started")]
    started: Option<Timestamp>,
    #[serde(rename = "Children")]
    children: Vec<ActivityElement>,
    #[serde(rename = "LogElements")]
    log_elements: Vec<ActivityLogElement>,
}

#[derive(Deserialize)]
struct ActivityLogElement {
    #[serde(rename = "OccurredAt")]
    occurred_at: Timestamp,
    #[serde(rename = "MessageText")]
    message_text: String,
    #[serde(rename = "Number")]
    number: i64,
}

#[derive(Deserialize)]
struct TaskProgress {
    #[serde(rename = "ProgressPercentage")]
    progress_percentage: i64,
    #[serde(rename = "EstimatedTimeRemaining")]
    estimated_time_remaining: String,
}

/// Expands the two RFC 6570 forms Octopus's link templates use, `{/var}` and
/// `{?a,b,c}`, as the Go client's uritemplates does (unset variables vanish).
fn expand(template: &str, vars: &[(&str, &str)]) -> String {
    let value = |name: &str| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| *v);
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}').map_or(rest.len(), |e| start + e);
        let expr = &rest[start + 1..end];
        if let Some(name) = expr.strip_prefix('/') {
            if let Some(v) = value(name) {
                out.push('/');
                out.push_str(v);
            }
        } else if let Some(names) = expr.strip_prefix('?') {
            let pairs: Vec<String> = names
                .split(',')
                .filter_map(|n| value(n).map(|v| format!("{n}={v}")))
                .collect();
            if !pairs.is_empty() {
                out.push('?');
                out.push_str(&pairs.join("&"));
            }
        } else if let Some(v) = value(expr) {
            out.push_str(v);
        }
        rest = &rest[(end + 1).min(rest.len())..];
    }
    out.push_str(rest);
    out
}

/// What `NewClient` leaves behind: the root, the space root and the space.
struct Client {
    http: reqwest::Client,
    origin: String,
    base: String,
    root: RootResource,
    space_root: Links,
    space_id: String,
}

impl Client {
    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> T {
        let (status, text) = self.raw(method.clone(), path, body).await;
        assert!(status.is_success(), "{method} {path}: {status} {text}");
        serde_json::from_str(&text).unwrap_or_else(|e| {
            panic!("{method} {path}: the Go model cannot decode it: {e}\n{text}")
        })
    }

    async fn raw(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, String) {
        let url = if path.starts_with('/') {
            format!("{}{path}", self.origin)
        } else {
            format!("{}/{path}", self.base)
        };
        let mut request = self
            .http
            .request(method, url)
            .header("X-Octopus-ApiKey", KEY)
            .header("User-Agent", "go-octopusdeploy");
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("answered");
        let status = response.status();
        (status, response.text().await.expect("body"))
    }

    /// `NewClientWithCredentials(httpClient, apiURL, credentials, spaceID, tool)`.
    async fn new(base: &str, space_id: &str) -> Client {
        let origin = {
            let url = reqwest::Url::parse(base).expect("URL");
            format!("{}://{}", url.scheme(), url.authority())
        };
        let mut client = Client {
            http: reqwest::Client::new(),
            origin,
            base: base.to_string(),
            root: RootResource {
                application: String::new(),
                version: String::new(),
                api_version: String::new(),
                installation_id: String::new(),
                links: Links::new(),
            },
            space_root: Links::new(),
            space_id: space_id.to_string(),
        };
        // getRoot: GET {apiURL}/api/
        client.root = client.call(Method::GET, "api/", None).await;
        if space_id.is_empty() {
            // spaces.GetDefaultSpace: every page of /api/spaces, the one IsDefault.
            let mut path = Client::fixed("/api/spaces{/id}{?skip,ids,take,partialName}", &[]);
            loop {
                let page: Resources<Space> = client.call(Method::GET, &path, None).await;
                if let Some(space) = page.items.iter().find(|s| s.is_default) {
                    client.space_id = space.id.clone();
                }
                if page.links.page_next.is_empty() {
                    break;
                }
                path = page.links.page_next;
            }
            assert!(!client.space_id.is_empty(), "a default space");
        } else {
            // getRoot on {apiURL}/api/{spaceID}: the space root's links.
            let space_root: Value = client
                .call(Method::GET, &format!("api/{space_id}"), None)
                .await;
            client.space_root = serde_json::from_value(space_root["Links"].clone()).expect("Links");
        }
        client
    }

    /// A fixed route of the newer `newclient` services (`/api/spaces...`,
    /// `/api/tasks{/id}/details`, ...): `HttpSession` resolves it under the base URL, so
    /// it keeps the virtual directory, unlike a link (which already carries it).
    fn fixed(template: &str, vars: &[(&str, &str)]) -> String {
        expand(template, vars).trim_start_matches('/').to_string()
    }

    /// `RootResource.GetLinkPath(sroot, link)`.
    fn link(&self, name: &str) -> String {
        let path = self
            .space_root
            .get(name)
            .filter(|l| !l.is_empty())
            .or_else(|| self.root.links.get(name))
            .cloned()
            .unwrap_or_default();
        assert!(!path.is_empty(), "the root has no {name} link");
        path
    }
}

async fn twin() -> (octopus_e2e::twin::TwinHandle, String) {
    let twin = Twin::start(TwinConfig::for_api_clients())
        .await
        .expect("twin starts");
    let url = twin
        .play_installation(
            NS,
            SVC,
            &["octo-0", "octo-1"],
            "octopusdeploy/octopusdeploy:2024.2.9220",
            KEY,
        )
        .await
        .expect("both pods ready");
    (twin, url)
}

#[tokio::test]
async fn new_client_with_and_without_a_space() {
    let (twin, url) = twin().await;
    let with_space = Client::new(&url, "Spaces-1").await;
    assert_eq!(with_space.root.application, "Octopus Deploy");
    assert_eq!(with_space.root.version, "2024.2.9220");
    assert_eq!(with_space.root.api_version, "3.0.0");
    assert_eq!(with_space.root.installation_id.len(), 36);
    assert_eq!(
        with_space.link("Tasks").split('{').next(),
        Some("/gosdk/octo/api/Spaces-1/tasks"),
        "the space root's Tasks link wins"
    );
    let default = Client::new(&url, "").await;
    assert_eq!(default.space_id, "Spaces-1");
    let spaces: Resources<Space> = default
        .call(Method::GET, &Client::fixed("/api/spaces", &[]), None)
        .await;
    let space = &spaces.items[0];
    assert_eq!(
        (space.name.as_str(), space.slug.as_str()),
        ("Default", "default")
    );
    assert!(!space.task_queue_stopped);
    assert!(space.space_managers_teams.is_empty() && space.space_managers_team_members.is_empty());
    assert_eq!(spaces.item_type, "Space");
    assert_eq!(
        (
            spaces.total_results,
            spaces.number_of_pages,
            spaces.last_page_number
        ),
        (1, 1, 0)
    );
    assert_eq!(spaces.items_per_page, 30);
    assert_eq!(spaces.links.self_, "/gosdk/octo/api/spaces");
    assert!(spaces.links.template.starts_with("/gosdk/octo/api/spaces{"));
    assert!(!spaces.links.page_all.is_empty() && !spaces.links.page_current.is_empty());
    assert_eq!(
        spaces.links.page_last,
        "/gosdk/octo/api/spaces?skip=0&take=30"
    );
    // A space that does not exist: NewClient fails ("the space ID (...) cannot be found").
    let (status, _) = default.raw(Method::GET, "api/Spaces-404", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    twin.shutdown().await;
}

#[tokio::test]
async fn nodes_maintenance_and_server_status() {
    let (twin, url) = twin().await;
    let client = Client::new(&url, "Spaces-1").await;
    let nodes_template = client.link("OctopusServerNodes");

    let list: Resources<OctopusServerNodeResource> = client
        .call(
            Method::GET,
            &expand(&nodes_template, &[("take", "1")]),
            None,
        )
        .await;
    assert_eq!((list.total_results, list.items.len()), (2, 1));
    let all: Resources<OctopusServerNodeResource> =
        client.call(Method::GET, &list.links.page_all, None).await;
    let names: Vec<&str> = all.items.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["octo-0", "octo-1"]);

    let id = all.items[1].id.clone();
    let by_id = expand(&nodes_template, &[("id", &id)]);
    let mut node: OctopusServerNodeResource = client.call(Method::GET, &by_id, None).await;
    assert_eq!(
        (node.name.as_str(), node.max_concurrent_tasks),
        ("octo-1", 5)
    );
    // Drain and undrain: PUT the resource with the flag changed.
    for drained in [true, false] {
        node.is_in_maintenance_mode = drained;
        let body = serde_json::to_value(&node).expect("encode");
        node = client.call(Method::PUT, &by_id, Some(body)).await;
        assert_eq!(node.is_in_maintenance_mode, drained);
        assert!(node.last_modified_on.is_some());
    }

    let maintenance_path = client.link("MaintenanceConfiguration");
    let mut config: MaintenanceConfiguration =
        client.call(Method::GET, &maintenance_path, None).await;
    assert_eq!(
        (config.id.as_str(), config.is_in_maintenance_mode),
        ("maintenance", false)
    );
    config.is_in_maintenance_mode = true;
    let body = serde_json::to_value(&config).expect("encode");
    let config: MaintenanceConfiguration = client
        .call(Method::PUT, &maintenance_path, Some(body))
        .await;
    assert!(config.is_in_maintenance_mode);

    let status: ServerStatus = client
        .call(Method::GET, &client.link("ServerStatus"), None)
        .await;
    assert!(status.is_in_maintenance_mode);
    assert!(status.is_database_encrypted);
    assert!(!status.is_major_minor_upgrade && !status.is_upgrade_available);
    assert_eq!(status.maximum_available_version, "2024.2.9220");

    // CanDeleteService.DeleteByID on a node record that is gone.
    twin.delete_pod(NS, "octo-1");
    let (status, _) = client.raw(Method::DELETE, &by_id, None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = client.raw(Method::GET, &by_id, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    twin.shutdown().await;
}

#[tokio::test]
async fn tasks_list_filter_create_details_cancel() {
    let (twin, url) = twin().await;
    let client = Client::new(&url, "Spaces-1").await;
    let tasks_template = client.link("Tasks");
    // TaskService.Add: POST to the Tasks path of the space.
    let create = |arguments: Value| json!({"Name": "Health", "Description": "Go client check", "Arguments": arguments});
    let add_path = expand(&tasks_template, &[]);
    let created: Task = client
        .call(
            Method::POST,
            &add_path,
            Some(create(json!({"EnvironmentId": "Environments-1"}))),
        )
        .await;
    assert_eq!(created.space_id, "Spaces-1");
    assert_eq!(created.name, "Health");
    assert_eq!(created.description, "Go client check");
    assert_eq!(created.arguments["EnvironmentId"], "Environments-1");
    assert_eq!(created.state, "Executing");
    assert!(created.has_been_picked_up_by_processor);
    assert!(created.server_node.is_some() && created.start_time.is_some());
    assert!(created.queue_time.is_some() && created.last_updated_time.is_some());
    assert_eq!(
        (created.is_completed, created.finished_successfully),
        (Some(false), Some(false))
    );
    assert!(!created.duration.is_empty());

    // TaskService.Get with a TasksQuery: states, name, ids.
    let running: Resources<Task> = client
        .call(
            Method::GET,
            &expand(
                &tasks_template,
                &[
                    ("states", "Executing,Cancelling"),
                    ("name", "Health"),
                    ("take", "10"),
                ],
            ),
            None,
        )
        .await;
    assert!(running.items.iter().any(|t| t.id == created.id));
    let none: Resources<Task> = client
        .call(
            Method::GET,
            &expand(&tasks_template, &[("states", "Success")]),
            None,
        )
        .await;
    assert!(none.items.iter().all(|t| t.state == "Success"));
    let by_ids: Resources<Task> = client
        .call(
            Method::GET,
            &expand(&tasks_template, &[("ids", &created.id)]),
            None,
        )
        .await;
    assert_eq!(by_ids.items.len(), 1);

    // tasks.GetDetails: /api/tasks{/id}/details.
    let details: TaskDetails = client
        .call(
            Method::GET,
            &Client::fixed("/api/tasks{/id}/details", &[("id", &created.id)]),
            None,
        )
        .await;
    assert_eq!(details.task.id, created.id);
    let log = &details.activity_logs[0];
    assert_eq!(log.status, "Running");
    assert!(log.started.is_some() && log.children.is_empty() && !log.id.is_empty());
    assert!(
        log.log_elements
            .iter()
            .any(|l| l.message_text.contains("octo-"))
    );
    assert!(
        log.log_elements
            .iter()
            .all(|l| l.occurred_at > Timestamp::UNIX_EPOCH && l.number >= 0)
    );
    assert!(details.physical_log_size > 0);
    assert_eq!(details.progress.progress_percentage, 0);
    assert!(details.progress.estimated_time_remaining.is_empty());

    // tasks.Cancel: /api/spaces/{spaceId}/tasks/{id}/cancel.
    let cancelled: Task = client
        .call(
            Method::POST,
            &Client::fixed(
                "/api/spaces/{spaceId}/tasks/{id}/cancel",
                &[("spaceId", &client.space_id), ("id", &created.id)],
            ),
            None,
        )
        .await;
    assert_eq!(cancelled.state, "Cancelling");
    let mut state = String::new();
    for _ in 0..200 {
        let task: Task = client
            .call(
                Method::GET,
                &expand(&tasks_template, &[("id", &created.id)]),
                None,
            )
            .await;
        state = task.state;
        if state == "Canceled" {
            assert!(task.completed_time.is_some());
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(state, "Canceled");

    // A wrong shape is refused with Octopus's error body, which the Go client reports.
    let (status, body) = client
        .raw(
            Method::POST,
            &add_path,
            Some(json!({"Name": "UpdateCalamari", "Description": "x", "Arguments": {"EnvironmentId": "Environments-1"}})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let error: Value = serde_json::from_str(&body).expect("JSON");
    assert!(error["ErrorMessage"].is_string() && error["Errors"].is_array());
    twin.shutdown().await;
}

#[test]
fn expands_octopus_link_templates_like_the_go_client() {
    let t = "/api/Spaces-1/tasks{/id}{?skip,states,take}";
    assert_eq!(expand(t, &[]), "/api/Spaces-1/tasks");
    assert_eq!(
        expand(t, &[("id", "ServerTasks-1")]),
        "/api/Spaces-1/tasks/ServerTasks-1"
    );
    assert_eq!(
        expand(t, &[("take", "5"), ("states", "Queued")]),
        "/api/Spaces-1/tasks?states=Queued&take=5"
    );
    assert_eq!(
        expand("/api/spaces/{spaceId}/x", &[("spaceId", "Spaces-2")]),
        "/api/spaces/Spaces-2/x"
    );
}
