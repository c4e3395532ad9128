//! Octopus's REST API over the model: routes, authentication, permissions, paging and
//! refusals, for one request already routed to an installation and an answering node.
//! Transport-free (method, path, query, key, body in; status and JSON out), so it is
//! tested without sockets; the HTTP server and its faults live in `server`.

use std::collections::BTreeMap;

use axum::http::{Method, StatusCode};
use jiff::Timestamp;
use serde::Serialize;
use serde_json::Value;

use crate::twin::json::{self, Links, OctopusErrorsContract};
use crate::twin::model::inventory::{Environment, Machine, Space};
use crate::twin::model::task::{self, Task, TaskState};
use crate::twin::model::{Installation, NodeRow, Refusal, Role, World};

/// Application name `/api` reports.
pub const APPLICATION: &str = "Octopus Deploy";
/// ApiVersion `/api` reports.
pub const API_VERSION: &str = "3.0.0";

/// One API request as the answering node sees it.
#[derive(Debug, Clone, Copy)]
pub struct ApiRequest<'a> {
    pub method: &'a Method,
    /// Path below the virtual directory, starting with `/api`.
    pub path: &'a str,
    pub query: Option<&'a str>,
    /// X-Octopus-ApiKey header value, if sent.
    pub api_key: Option<&'a str>,
    pub body: &'a [u8],
}

#[derive(Debug, Clone, PartialEq)]
pub struct ApiResponse {
    pub status: StatusCode,
    /// JSON, or with `text` a plain-text body held as a JSON string.
    pub body: Value,
    pub text: bool,
    /// The route template matched (`/api/tasks/{id}`), for the event log.
    pub route: String,
}

/// The routes the twin serves. `space: None` is the unscoped route, which Octopus
/// answers for the default space.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Route {
    Root,
    Spaces,
    Space(String),
    SpaceRoot(String),
    Nodes,
    NodesAll,
    ClusterSummary,
    Ping,
    Node(String),
    NodeDetails(String),
    MaintenanceConfiguration,
    ServerStatus,
    ServerHealth,
    HostedInternal,
    TaskTypes,
    Tasks { space: Option<String> },
    Task { space: Option<String>, id: String },
    TaskCancel { space: Option<String>, id: String },
    TaskDetails { space: Option<String>, id: String },
    TaskRaw { space: Option<String>, id: String },
    TaskQueuedBehind { space: Option<String>, id: String },
    Environments { space: Option<String> },
    Environment { space: Option<String>, id: String },
    EnvironmentMachines { space: Option<String>, id: String },
    Machines { space: Option<String> },
    Machine { space: Option<String>, id: String },
}

impl Route {
    fn parse(path: &str) -> Option<Route> {
        let segments: Vec<&str> = path
            .trim_matches('/')
            .split('/')
            .filter(|s| !s.is_empty())
            .collect();
        let lower: Vec<String> = segments.iter().map(|s| s.to_ascii_lowercase()).collect();
        let lower: Vec<&str> = lower.iter().map(String::as_str).collect();
        let (first, rest) = lower.split_first()?;
        if *first != "api" {
            return None;
        }
        let original = &segments[1..];
        let route = match rest {
            [] => Route::Root,
            ["spaces"] => Route::Spaces,
            ["spaces", _] => Route::Space(original[1].to_string()),
            // Newer clients cancel through /api/spaces/{spaceId}/tasks/{id}/cancel.
            ["spaces", _, "tasks", _, "cancel"] => Route::TaskCancel {
                space: Some(original[1].to_string()),
                id: original[3].to_string(),
            },
            ["octopusservernodes"] => Route::Nodes,
            ["octopusservernodes", "all"] => Route::NodesAll,
            ["octopusservernodes", "summary"] => Route::ClusterSummary,
            ["octopusservernodes", "ping"] => Route::Ping,
            ["octopusservernodes", _] => Route::Node(original[1].to_string()),
            ["octopusservernodes", _, "details"] => Route::NodeDetails(original[1].to_string()),
            ["maintenanceconfiguration"] => Route::MaintenanceConfiguration,
            ["serverstatus"] => Route::ServerStatus,
            ["serverstatus", "health"] => Route::ServerHealth,
            ["serverstatus", "hosted", "internal"] => Route::HostedInternal,
            ["tasks", "tasktypes"] => Route::TaskTypes,
            [space] if space.starts_with("spaces-") => Route::SpaceRoot(original[0].to_string()),
            [space, tail @ ..] if space.starts_with("spaces-") => {
                return Self::scoped(Some(original[0].to_string()), tail, &original[1..]);
            }
            tail => return Self::scoped(None, tail, original),
        };
        Some(route)
    }

    /// Routes that exist unscoped and under `/api/{spaceId}/...`.
    fn scoped(space: Option<String>, lower: &[&str], original: &[&str]) -> Option<Route> {
        let id = || original[1].to_string();
        Some(match lower {
            ["tasks"] => Route::Tasks { space },
            ["tasks", _] => Route::Task { space, id: id() },
            ["tasks", _, "cancel"] => Route::TaskCancel { space, id: id() },
            ["tasks", _, "details"] => Route::TaskDetails { space, id: id() },
            ["tasks", _, "raw"] => Route::TaskRaw { space, id: id() },
            ["tasks", _, "queued-behind"] => Route::TaskQueuedBehind { space, id: id() },
            ["environments"] => Route::Environments { space },
            ["environments", _] => Route::Environment { space, id: id() },
            ["environments", _, "machines"] => Route::EnvironmentMachines { space, id: id() },
            ["machines"] => Route::Machines { space },
            ["machines", _] => Route::Machine { space, id: id() },
            _ => return None,
        })
    }

    fn template(&self) -> &'static str {
        let scoped = |space: &Option<String>, unscoped: &'static str, in_space: &'static str| {
            if space.is_some() { in_space } else { unscoped }
        };
        match self {
            Route::Root => "/api",
            Route::Spaces => "/api/spaces",
            Route::Space(_) => "/api/spaces/{id}",
            Route::SpaceRoot(_) => "/api/{spaceId}",
            Route::Nodes => "/api/octopusservernodes",
            Route::NodesAll => "/api/octopusservernodes/all",
            Route::ClusterSummary => "/api/octopusservernodes/summary",
            Route::Ping => "/api/octopusservernodes/ping",
            Route::Node(_) => "/api/octopusservernodes/{id}",
            Route::NodeDetails(_) => "/api/octopusservernodes/{id}/details",
            Route::MaintenanceConfiguration => "/api/maintenanceconfiguration",
            Route::ServerStatus => "/api/serverstatus",
            Route::ServerHealth => "/api/serverstatus/health",
            Route::HostedInternal => "/api/serverstatus/hosted/internal",
            Route::TaskTypes => "/api/tasks/taskTypes",
            Route::Tasks { space } => scoped(space, "/api/tasks", "/api/{spaceId}/tasks"),
            Route::Task { space, .. } => {
                scoped(space, "/api/tasks/{id}", "/api/{spaceId}/tasks/{id}")
            }
            Route::TaskCancel { space, .. } => scoped(
                space,
                "/api/tasks/{id}/cancel",
                "/api/spaces/{spaceId}/tasks/{id}/cancel",
            ),
            Route::TaskDetails { space, .. } => scoped(
                space,
                "/api/tasks/{id}/details",
                "/api/{spaceId}/tasks/{id}/details",
            ),
            Route::TaskRaw { space, .. } => scoped(
                space,
                "/api/tasks/{id}/raw",
                "/api/{spaceId}/tasks/{id}/raw",
            ),
            Route::TaskQueuedBehind { space, .. } => scoped(
                space,
                "/api/tasks/{id}/queued-behind",
                "/api/{spaceId}/tasks/{id}/queued-behind",
            ),
            Route::Environments { space } => {
                scoped(space, "/api/environments", "/api/{spaceId}/environments")
            }
            Route::Environment { space, .. } => scoped(
                space,
                "/api/environments/{id}",
                "/api/{spaceId}/environments/{id}",
            ),
            Route::EnvironmentMachines { space, .. } => scoped(
                space,
                "/api/environments/{id}/machines",
                "/api/{spaceId}/environments/{id}/machines",
            ),
            Route::Machines { space } => scoped(space, "/api/machines", "/api/{spaceId}/machines"),
            Route::Machine { space, .. } => {
                scoped(space, "/api/machines/{id}", "/api/{spaceId}/machines/{id}")
            }
        }
    }

    /// Routes a load balancer or an anonymous visitor may call.
    fn is_anonymous(&self) -> bool {
        matches!(
            self,
            Route::Root | Route::Ping | Route::ServerHealth | Route::HostedInternal
        )
    }
}

/// The route template a path matches (`/api/tasks/{id}`), or the path itself.
pub fn route_template(path: &str) -> String {
    Route::parse(path).map_or_else(|| path.to_string(), |r| r.template().to_string())
}

/// Handles one request against installation `index`, answered by node process `process`,
/// with links prefixed by `prefix` (the virtual directory, e.g. `/ns/octo`).
pub fn handle(
    world: &mut World,
    index: usize,
    process: &str,
    prefix: &str,
    req: &ApiRequest<'_>,
    now: Timestamp,
) -> ApiResponse {
    let Some(route) = Route::parse(req.path) else {
        return error(
            StatusCode::NOT_FOUND,
            "unmatched",
            format!("The resource you requested was not found: {}", req.path),
        );
    };
    let template = route.template();
    let ctx = Ctx {
        prefix,
        now,
        query: parse_query(req.query),
    };
    let Some(inst) = world.installation(index) else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            template,
            "No server available",
        );
    };
    let role = if route.is_anonymous() {
        None
    } else {
        let key = req
            .api_key
            .or_else(|| ctx.query.get("apikey").map(String::as_str));
        match key.and_then(|k| inst.authenticate(k)) {
            Some(role) if !inst.faults.api_key_expired => Some(role),
            _ => {
                return error(
                    StatusCode::UNAUTHORIZED,
                    template,
                    "You must be logged in to perform this action. Please provide a valid API key or log in again.",
                );
            }
        }
    };
    let Some(answering) = inst
        .processes
        .get(process)
        .and_then(|p| inst.nodes.get(&p.node_name))
        .cloned()
    else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            template,
            "No server available",
        );
    };
    let version = answering.version.clone();
    let method = req.method;
    let mut response = match (&route, method) {
        (Route::Root, &Method::GET) => ok(root(inst, &version, &ctx)),
        (Route::Nodes, &Method::GET) => ok(node_list(inst, &ctx)),
        (Route::NodesAll, &Method::GET) => ok(inst
            .nodes
            .values()
            .map(|r| node_resource(r, &ctx))
            .collect::<Vec<_>>()),
        (Route::ClusterSummary, &Method::GET) => ok(json::OctopusServerClusterSummaryResource {
            nodes: inst
                .nodes
                .values()
                .map(|r| node_summary(inst, r, &ctx))
                .collect(),
            links: links(&ctx, &[("Self", "/api/octopusservernodes/summary")]),
        }),
        (Route::Spaces, &Method::GET) => ok(space_list(inst, &ctx)),
        (Route::Space(id), &Method::GET) => match inst.inventory.space(id) {
            Some(space) => ok(space_resource(space, &ctx)),
            None => not_found(id),
        },
        (Route::SpaceRoot(id), &Method::GET) => match inst.inventory.space(id) {
            Some(space) => ok(json::SpaceRootResource {
                links: space_links(&space.id, &ctx),
            }),
            None => not_found(id),
        },
        (Route::Ping, &Method::GET) => ping(inst, &answering, &ctx),
        (Route::Node(id), &Method::GET) => match inst.node_by_id(id) {
            Some(row) => ok(node_resource(row, &ctx)),
            None => not_found(id),
        },
        (Route::Node(id), &Method::PUT) => {
            return with_route(put_node(world, index, id, role, req.body, &ctx), template);
        }
        (Route::Node(id), &Method::DELETE) => {
            return with_route(delete_node(world, index, id, role, &ctx), template);
        }
        (Route::NodeDetails(id), &Method::GET) => match inst.node_by_id(id) {
            Some(row) => ok(json::OctopusServerNodeDetailsResource {
                id: row.id.clone(),
                running_tasks: inst.running_task_count(&row.name),
                links: links(
                    &ctx,
                    &[(
                        "Self",
                        &format!("/api/octopusservernodes/{}/details", row.id),
                    )],
                ),
            }),
            None => not_found(id),
        },
        (Route::MaintenanceConfiguration, &Method::GET) => ok(maintenance(inst, &ctx)),
        (Route::MaintenanceConfiguration, &Method::PUT) => {
            return with_route(
                put_maintenance(world, index, role, req.body, &ctx),
                template,
            );
        }
        (Route::ServerStatus, &Method::GET) => ok(json::ServerStatusResource {
            id: "serverstatus".into(),
            is_database_encrypted: true,
            is_in_maintenance_mode: inst.maintenance_mode,
            is_major_minor_upgrade: false,
            is_upgrade_available: false,
            maximum_available_version: version.clone(),
            maximum_available_version_covered_by_license: version.clone(),
            links: links(
                &ctx,
                &[
                    ("Self", "/api/serverstatus"),
                    ("Health", "/api/serverstatus/health"),
                ],
            ),
        }),
        (Route::ServerHealth, &Method::GET) => health(inst, &ctx),
        (Route::HostedInternal, &Method::GET) => ok(serde_json::json!({})),
        (Route::Tasks { space }, &Method::GET) => ok(task_list(inst, space.as_deref(), &ctx)),
        (Route::Tasks { space }, &Method::POST) => {
            return with_route(
                post_task(world, index, role, space.as_deref(), req.body, &ctx),
                template,
            );
        }
        (Route::Task { id, .. }, &Method::GET) => match find_task(inst, id) {
            Some(t) => ok(task_resource(t, &ctx)),
            None => not_found(id),
        },
        (Route::TaskTypes, &Method::GET) => ok(task::BUILT_IN_TASKS
            .iter()
            .map(|name| json::TaskTypeResource {
                id: (*name).to_string(),
                name: (*name).to_string(),
                links: Links::new(),
            })
            .collect::<Vec<_>>()),
        (Route::TaskDetails { id, .. }, &Method::GET) => match find_task(inst, id) {
            Some(t) => ok(task_details(t, &ctx)),
            None => not_found(id),
        },
        (Route::TaskRaw { id, .. }, &Method::GET) => match find_task(inst, id) {
            Some(t) => text(StatusCode::OK, task_log(t).join("\n")),
            None => not_found(id),
        },
        (Route::TaskQueuedBehind { id, .. }, &Method::GET) => match find_task(inst, id) {
            Some(t) => ok(queued_behind(inst, t, &ctx)),
            None => not_found(id),
        },
        (Route::Environments { space }, &Method::GET) => match space_id(inst, space) {
            Ok(space) => ok(environment_list(inst, &space, &ctx)),
            Err(e) => e,
        },
        (Route::Environment { space, id }, &Method::GET) => {
            match space_id(inst, space).map(|s| inst.inventory.environment(&s, id)) {
                Ok(Some(e)) => ok(environment_resource(inst, e, &ctx)),
                Ok(None) => not_found(id),
                Err(e) => e,
            }
        }
        (Route::EnvironmentMachines { space, id }, &Method::GET) => {
            match space_id(inst, space).map(|s| inst.inventory.environment(&s, id)) {
                Ok(Some(e)) => ok(machine_list(
                    inst,
                    &e.space_id,
                    std::slice::from_ref(&e.id),
                    &ctx,
                )),
                Ok(None) => not_found(id),
                Err(e) => e,
            }
        }
        (Route::Machines { space }, &Method::GET) => match space_id(inst, space) {
            Ok(space) => ok(machine_list(
                inst,
                &space,
                &ctx.list("environmentIds"),
                &ctx,
            )),
            Err(e) => e,
        },
        (Route::Machine { space, id }, &Method::GET) => {
            match space_id(inst, space).map(|s| inst.inventory.machine(&s, id)) {
                Ok(Some(m)) => ok(machine_resource(m, &ctx)),
                Ok(None) => not_found(id),
                Err(e) => e,
            }
        }
        (Route::TaskCancel { id, .. }, &Method::POST) => {
            return with_route(cancel_task(world, index, role, id, &ctx), template);
        }
        _ => error(
            StatusCode::METHOD_NOT_ALLOWED,
            template,
            format!("The method {method} is not allowed on this resource."),
        ),
    };
    response.route = template.to_string();
    response
}

struct Ctx<'a> {
    prefix: &'a str,
    now: Timestamp,
    query: BTreeMap<String, String>,
}

impl Ctx<'_> {
    fn href(&self, path: &str) -> String {
        format!("{}{}", self.prefix, path)
    }

    fn flag(&self, name: &str) -> Option<bool> {
        self.query.get(name).map(|v| v.eq_ignore_ascii_case("true"))
    }

    fn list(&self, name: &str) -> Vec<String> {
        self.query
            .get(name)
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    }

    fn number(&self, name: &str, default: usize) -> usize {
        self.query
            .get(name)
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    }
}

fn with_route(mut r: ApiResponse, template: &str) -> ApiResponse {
    r.route = template.to_string();
    r
}

fn ok<T: Serialize>(body: T) -> ApiResponse {
    respond(StatusCode::OK, body)
}

fn respond<T: Serialize>(status: StatusCode, body: T) -> ApiResponse {
    match serde_json::to_value(body) {
        Ok(body) => ApiResponse {
            status,
            body,
            text: false,
            route: String::new(),
        },
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "", e.to_string()),
    }
}

/// An Octopus error response.
pub fn error(status: StatusCode, route: &str, message: impl Into<String>) -> ApiResponse {
    ApiResponse {
        status,
        body: serde_json::to_value(OctopusErrorsContract::new(message)).unwrap_or(Value::Null),
        text: false,
        route: route.to_string(),
    }
}

/// A plain-text answer (task logs).
fn text(status: StatusCode, body: String) -> ApiResponse {
    ApiResponse {
        status,
        body: Value::String(body),
        text: true,
        route: String::new(),
    }
}

fn not_found(id: &str) -> ApiResponse {
    error(
        StatusCode::NOT_FOUND,
        "",
        format!("The resource '{id}' was not found."),
    )
}

fn refusal(r: Refusal, id: &str) -> ApiResponse {
    match r {
        Refusal::MaintenanceMode => error(
            StatusCode::BAD_REQUEST,
            "",
            "Octopus Server is in maintenance mode. Only users with the Administer System permission can make changes until maintenance mode is turned off.",
        ),
        Refusal::UnknownTaskName(name) => error(
            StatusCode::BAD_REQUEST,
            "",
            format!(
                "There was a problem with your request. '{name}' is not a task that can be created through this API."
            ),
        ),
        Refusal::Forbidden => error(
            StatusCode::FORBIDDEN,
            "",
            "You do not have permission to perform this action. Please contact your Octopus administrator. Missing permission: AdministerSystem",
        ),
        Refusal::NotFound => not_found(id),
        Refusal::Invalid(message) => error(StatusCode::BAD_REQUEST, "", message),
        Refusal::BadArguments(errors) => ApiResponse {
            status: StatusCode::BAD_REQUEST,
            body: serde_json::to_value(OctopusErrorsContract::invalid(errors))
                .unwrap_or(Value::Null),
            text: false,
            route: String::new(),
        },
    }
}

fn links(ctx: &Ctx<'_>, pairs: &[(&str, &str)]) -> Links {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_string(), ctx.href(v)))
        .collect()
}

fn root(inst: &Installation, version: &str, ctx: &Ctx<'_>) -> json::RootResource {
    let default_space = inst
        .inventory
        .default_space()
        .map_or("Spaces-1", |s| s.id.as_str());
    json::RootResource {
        application: APPLICATION.into(),
        version: version.to_string(),
        api_version: API_VERSION.into(),
        installation_id: inst.installation_id.clone(),
        has_long_term_support: false,
        links: links(
            ctx,
            &[
                ("Self", "/api"),
                (
                    "OctopusServerNodes",
                    "/api/octopusservernodes{/id}{?skip,take,ids,partialName}",
                ),
                (
                    "OctopusServerClusterSummary",
                    "/api/octopusservernodes/summary",
                ),
                ("MaintenanceConfiguration", "/api/maintenanceconfiguration"),
                ("ServerStatus", "/api/serverstatus"),
                ("ServerHealthStatus", "/api/serverstatus/health"),
                ("Tasks", &format!("/api/tasks{{/id}}{{?{TASK_QUERY}}}")),
                (
                    "Environments",
                    &format!(
                        "/api/{default_space}/environments{{/id}}{{?skip,take,ids,partialName}}"
                    ),
                ),
                (
                    "Machines",
                    &format!("/api/{default_space}/machines{{/id}}{{?{MACHINE_QUERY}}}"),
                ),
                ("TaskTypes", "/api/tasks/taskTypes"),
                ("Spaces", "/api/spaces{/id}{?skip,ids,take,partialName}"),
                ("SpaceHome", "/api/{spaceId}"),
                ("Web", "/app"),
            ],
        ),
    }
}

/// The links of a space root: its collections, under `/api/{spaceId}`.
fn space_links(space: &str, ctx: &Ctx<'_>) -> Links {
    links(
        ctx,
        &[
            ("Self", &format!("/api/{space}")),
            ("SpaceHome", &format!("/api/{space}")),
            (
                "Tasks",
                &format!("/api/{space}/tasks{{/id}}{{?{TASK_QUERY}}}"),
            ),
            (
                "Environments",
                &format!("/api/{space}/environments{{/id}}{{?skip,take,ids,partialName}}"),
            ),
            (
                "Machines",
                &format!("/api/{space}/machines{{/id}}{{?{MACHINE_QUERY}}}"),
            ),
        ],
    )
}

/// Parameters of the Tasks link template.
const TASK_QUERY: &str = "skip,active,environment,tenant,project,name,node,running,states,hasPendingInterruptions,hasWarningsOrErrors,take,ids,partialName,spaces,includeSystem";
/// Parameters of the Machines link template.
const MACHINE_QUERY: &str = "skip,take,name,ids,partialName,roles,isDisabled,healthStatuses,commStyles,tenantIds,tenantTags,environmentIds,thumbprint,deploymentId,shellNames";

/// The space a scoped route names, else the default space; 404 when it does not exist.
fn space_id(inst: &Installation, space: &Option<String>) -> Result<String, ApiResponse> {
    let found = match space {
        Some(id) => inst.inventory.space(id),
        None => inst.inventory.default_space(),
    };
    found
        .map(|s| s.id.clone())
        .ok_or_else(|| not_found(space.as_deref().unwrap_or("default space")))
}

fn space_resource(space: &Space, ctx: &Ctx<'_>) -> json::SpaceResource {
    json::SpaceResource {
        id: space.id.clone(),
        name: space.name.clone(),
        slug: space.slug.clone(),
        description: None,
        is_default: space.is_default,
        is_private: false,
        task_queue_stopped: false,
        space_managers_teams: Vec::new(),
        space_managers_team_members: Vec::new(),
        links: links(
            ctx,
            &[
                ("Self", &format!("/api/spaces/{}", space.id)),
                ("SpaceHome", &format!("/api/{}", space.id)),
                ("Web", &format!("/app#/{}", space.id)),
            ],
        ),
    }
}

fn space_list(inst: &Installation, ctx: &Ctx<'_>) -> json::ResourceCollection<json::SpaceResource> {
    let ids = ctx.list("ids");
    let partial = ctx.query.get("partialName").map(|s| s.to_ascii_lowercase());
    let spaces: Vec<&Space> = inst
        .inventory
        .spaces
        .iter()
        .filter(|s| ids.is_empty() || ids.iter().any(|id| id.eq_ignore_ascii_case(&s.id)))
        .filter(|s| {
            partial
                .as_ref()
                .is_none_or(|p| s.name.to_ascii_lowercase().contains(p))
        })
        .collect();
    page(
        "Space",
        "/api/spaces",
        "/api/spaces{/id}{?skip,ids,take,partialName}",
        spaces,
        |s| space_resource(s, ctx),
        None,
        ctx,
    )
}

fn environment_resource(
    inst: &Installation,
    e: &Environment,
    ctx: &Ctx<'_>,
) -> json::EnvironmentResource {
    let sort_order = inst
        .inventory
        .environments
        .iter()
        .position(|x| x.id == e.id)
        .unwrap_or_default();
    let base = format!("/api/{}/environments/{}", e.space_id, e.id);
    json::EnvironmentResource {
        id: e.id.clone(),
        name: e.name.clone(),
        slug: e.name.to_ascii_lowercase(),
        description: String::new(),
        sort_order,
        use_guided_failure: false,
        allow_dynamic_infrastructure: false,
        space_id: e.space_id.clone(),
        links: links(
            ctx,
            &[
                ("Self", &base),
                (
                    "Machines",
                    &format!(
                        "{base}/machines{{?skip,take,partialName,roles,isDisabled,healthStatuses,commStyles,tenantIds,tenantTags,shellNames}}"
                    ),
                ),
            ],
        ),
    }
}

fn environment_list(
    inst: &Installation,
    space: &str,
    ctx: &Ctx<'_>,
) -> json::ResourceCollection<json::EnvironmentResource> {
    let ids = ctx.list("ids");
    let envs: Vec<&Environment> = inst
        .inventory
        .environments
        .iter()
        .filter(|e| e.space_id == space)
        .filter(|e| ids.is_empty() || ids.iter().any(|id| id.eq_ignore_ascii_case(&e.id)))
        .collect();
    page(
        "Environment",
        &format!("/api/{space}/environments"),
        &format!("/api/{space}/environments{{/id}}{{?skip,take,ids,partialName}}"),
        envs,
        |e| environment_resource(inst, e, ctx),
        None,
        ctx,
    )
}

fn machine_resource(m: &Machine, ctx: &Ctx<'_>) -> json::MachineResource {
    json::MachineResource {
        id: m.id.clone(),
        name: m.name.clone(),
        environment_ids: m.environment_ids.clone(),
        roles: vec!["web".into()],
        tenant_ids: Vec::new(),
        tenant_tags: Vec::new(),
        tenanted_deployment_participation: "Untenanted".into(),
        is_disabled: false,
        machine_policy_id: "MachinePolicies-1".into(),
        health_status: "Healthy".into(),
        status: "Online".into(),
        status_summary:
            "Octopus was able to successfully establish a connection with this machine.".into(),
        has_latest_calamari: true,
        is_in_process: false,
        endpoint: json::EndpointResource {
            communication_style: "TentaclePassive".into(),
            uri: format!("https://{}:10933/", m.name),
            thumbprint: "0000000000000000000000000000000000000000".into(),
        },
        space_id: m.space_id.clone(),
        links: links(
            ctx,
            &[("Self", &format!("/api/{}/machines/{}", m.space_id, m.id))],
        ),
    }
}

fn machine_list(
    inst: &Installation,
    space: &str,
    environments: &[String],
    ctx: &Ctx<'_>,
) -> json::ResourceCollection<json::MachineResource> {
    let ids = ctx.list("ids");
    let machines: Vec<&Machine> = inst
        .inventory
        .machines_in(space, environments)
        .filter(|m| ids.is_empty() || ids.iter().any(|id| id.eq_ignore_ascii_case(&m.id)))
        .collect();
    page(
        "DeploymentTarget",
        &format!("/api/{space}/machines"),
        &format!("/api/{space}/machines{{/id}}{{?{MACHINE_QUERY}}}"),
        machines,
        |m| machine_resource(m, ctx),
        None,
        ctx,
    )
}

fn node_links(row: &NodeRow, ctx: &Ctx<'_>) -> Links {
    links(
        ctx,
        &[
            ("Self", &format!("/api/octopusservernodes/{}", row.id)),
            (
                "Details",
                &format!("/api/octopusservernodes/{}/details", row.id),
            ),
        ],
    )
}

fn node_resource(row: &NodeRow, ctx: &Ctx<'_>) -> json::OctopusServerNodeResource {
    json::OctopusServerNodeResource {
        id: row.id.clone(),
        name: row.name.clone(),
        max_concurrent_tasks: row.max_concurrent_tasks,
        is_in_maintenance_mode: row.drained,
        last_modified_on: row.last_modified_on,
        last_modified_by: row.last_modified_on.map(|_| "admin".to_string()),
        links: node_links(row, ctx),
    }
}

fn node_summary(
    inst: &Installation,
    row: &NodeRow,
    ctx: &Ctx<'_>,
) -> json::OctopusServerNodeSummaryResource {
    json::OctopusServerNodeSummaryResource {
        id: row.id.clone(),
        name: row.name.clone(),
        max_concurrent_tasks: row.max_concurrent_tasks,
        is_in_maintenance_mode: row.drained,
        last_seen: inst.node_last_seen(row, ctx.now),
        is_offline: inst.node_is_offline(row, ctx.now),
        running_task_count: inst.running_task_count(&row.name),
        links: node_links(row, ctx),
    }
}

fn node_list(
    inst: &Installation,
    ctx: &Ctx<'_>,
) -> json::ResourceCollection<json::OctopusServerNodeResource> {
    let ids = ctx.list("ids");
    let partial = ctx.query.get("partialName").map(|s| s.to_ascii_lowercase());
    let rows: Vec<&NodeRow> = inst
        .nodes
        .values()
        .filter(|r| ids.is_empty() || ids.iter().any(|id| id.eq_ignore_ascii_case(&r.id)))
        .filter(|r| {
            partial
                .as_ref()
                .is_none_or(|p| r.name.to_ascii_lowercase().contains(p))
        })
        .collect();
    page(
        "OctopusServerNode",
        "/api/octopusservernodes",
        "/api/octopusservernodes{?skip,take,ids,partialName}",
        rows,
        |r| node_resource(r, ctx),
        None,
        ctx,
    )
}

fn page<T, R>(
    item_type: &str,
    self_path: &str,
    template: &str,
    all: Vec<T>,
    render: impl Fn(T) -> R,
    total_counts: Option<BTreeMap<String, usize>>,
    ctx: &Ctx<'_>,
) -> json::ResourceCollection<R> {
    let skip = ctx.number("skip", 0);
    let take = ctx.number("take", 30);
    let total = all.len();
    let pages = if take == 0 { 0 } else { total.div_ceil(take) };
    let mut page_links = links(ctx, &[("Self", self_path), ("Template", template)]);
    page_links.insert(
        "Page.Current".into(),
        ctx.href(&format!("{self_path}?skip={skip}&take={take}")),
    );
    if take > 0 && skip + take < total {
        page_links.insert(
            "Page.Next".into(),
            ctx.href(&format!("{self_path}?skip={}&take={take}", skip + take)),
        );
    }
    page_links.insert(
        "Page.All".into(),
        ctx.href(&format!("{self_path}?skip=0&take={}", i32::MAX)),
    );
    page_links.insert(
        "Page.Last".into(),
        ctx.href(&format!(
            "{self_path}?skip={}&take={take}",
            pages.saturating_sub(1) * take
        )),
    );
    if skip > 0 {
        page_links.insert(
            "Page.Prev".into(),
            ctx.href(&format!(
                "{self_path}?skip={}&take={take}",
                skip.saturating_sub(take)
            )),
        );
    }
    json::ResourceCollection {
        item_type: item_type.into(),
        is_stale: false,
        total_results: total,
        items_per_page: take,
        number_of_pages: pages,
        last_page_number: pages.saturating_sub(1),
        items: all.into_iter().skip(skip).take(take).map(render).collect(),
        total_counts,
        links: page_links,
    }
}

/// The load balancer's check of the answering node: 200 when it serves, 418 when it is
/// draining or offline; the body is the node's configuration (its node resource).
fn ping(inst: &Installation, row: &NodeRow, ctx: &Ctx<'_>) -> ApiResponse {
    let offline = inst.node_is_offline(row, ctx.now);
    let status = if row.drained || offline {
        StatusCode::IM_A_TEAPOT
    } else {
        StatusCode::OK
    };
    respond(status, node_resource(row, ctx))
}

fn health(inst: &Installation, ctx: &Ctx<'_>) -> ApiResponse {
    let online: Vec<&NodeRow> = inst
        .nodes
        .values()
        .filter(|r| !inst.node_is_offline(r, ctx.now))
        .collect();
    let read_only = inst.maintenance_mode;
    let draining = !online.is_empty() && online.iter().all(|r| r.drained);
    let normal = !read_only && !draining;
    let description = match (read_only, draining) {
        (false, false) => "Octopus Server is operating normally.",
        (true, false) => {
            "The Octopus Server cluster is in maintenance mode: it is read-only for everyone but administrators."
        }
        (false, true) => "Every Octopus Server node is draining tasks: no new tasks will start.",
        (true, true) => {
            "The Octopus Server cluster is in maintenance mode and every node is draining tasks."
        }
    };
    let body = json::ServerStatusHealthResource {
        is_operating_normally: normal,
        is_entire_cluster_read_only: read_only,
        is_entire_cluster_draining_tasks: draining,
        is_compliant_with_license: true,
        description: description.into(),
        links: links(ctx, &[("Self", "/api/serverstatus/health")]),
    };
    let status = if normal {
        StatusCode::OK
    } else {
        StatusCode::IM_A_TEAPOT
    };
    respond(status, body)
}

fn maintenance(inst: &Installation, ctx: &Ctx<'_>) -> json::MaintenanceConfigurationResource {
    json::MaintenanceConfigurationResource {
        id: "maintenance".into(),
        is_in_maintenance_mode: inst.maintenance_mode,
        last_modified_on: inst.maintenance_modified_on,
        links: links(ctx, &[("Self", "/api/maintenanceconfiguration")]),
    }
}

fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiResponse> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "",
            "No request body was supplied.",
        ));
    }
    serde_json::from_slice(body).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            "",
            format!("There was a problem with your request: the body could not be read ({e})."),
        )
    })
}

fn put_node(
    world: &mut World,
    index: usize,
    id: &str,
    role: Option<Role>,
    body: &[u8],
    ctx: &Ctx<'_>,
) -> ApiResponse {
    let Some((inst, log)) = world.installation_mut(index) else {
        return not_found(id);
    };
    let Some(row) = inst.node_by_id(id).cloned() else {
        return not_found(id);
    };
    if role != Some(Role::Administrator) {
        return refusal(Refusal::Forbidden, id);
    }
    let update: json::OctopusServerNodeUpdate = match parse_body(body) {
        Ok(u) => u,
        Err(e) => return e,
    };
    if update
        .id
        .as_deref()
        .is_some_and(|b| !b.eq_ignore_ascii_case(&row.id))
    {
        return error(
            StatusCode::BAD_REQUEST,
            "",
            "The Id in the request body does not match the Id of the resource being modified.",
        );
    }
    if update.name.as_deref().is_some_and(|n| n != row.name) {
        return error(
            StatusCode::BAD_REQUEST,
            "",
            "The Name of an Octopus Server node cannot be changed.",
        );
    }
    let Ok(cap) = u32::try_from(update.max_concurrent_tasks) else {
        return error(
            StatusCode::BAD_REQUEST,
            "",
            "MaxConcurrentTasks must be zero or greater.",
        );
    };
    match inst.update_node(&row.id, update.is_in_maintenance_mode, cap, ctx.now, log) {
        Ok(row) => ok(node_resource(&row, ctx)),
        Err(r) => refusal(r, id),
    }
}

fn put_maintenance(
    world: &mut World,
    index: usize,
    role: Option<Role>,
    body: &[u8],
    ctx: &Ctx<'_>,
) -> ApiResponse {
    let Some((inst, log)) = world.installation_mut(index) else {
        return not_found("maintenance");
    };
    if role != Some(Role::Administrator) {
        return refusal(Refusal::Forbidden, "maintenance");
    }
    let update: json::MaintenanceConfigurationUpdate = match parse_body(body) {
        Ok(u) => u,
        Err(e) => return e,
    };
    if update.id.as_deref().is_some_and(|id| id != "maintenance") {
        return error(
            StatusCode::BAD_REQUEST,
            "",
            "The Id in the request body does not match the Id of the resource being modified.",
        );
    }
    inst.set_maintenance_mode(update.is_in_maintenance_mode, ctx.now, log);
    ok(maintenance(inst, ctx))
}

fn delete_node(
    world: &mut World,
    index: usize,
    id: &str,
    role: Option<Role>,
    ctx: &Ctx<'_>,
) -> ApiResponse {
    let Some((inst, log)) = world.installation_mut(index) else {
        return not_found(id);
    };
    if inst.node_by_id(id).is_none() {
        return not_found(id);
    }
    if role != Some(Role::Administrator) {
        return refusal(Refusal::Forbidden, id);
    }
    match inst.delete_node(id, ctx.now, log) {
        Ok(()) => text(StatusCode::OK, String::new()),
        Err(r) => refusal(r, id),
    }
}

fn post_task(
    world: &mut World,
    index: usize,
    role: Option<Role>,
    route_space: Option<&str>,
    body: &[u8],
    ctx: &Ctx<'_>,
) -> ApiResponse {
    let Some((inst, log)) = world.installation_mut(index) else {
        return not_found("tasks");
    };
    let create: json::TaskCreate = match parse_body(body) {
        Ok(c) => c,
        Err(e) => return e,
    };
    let Some(name) = create.name.filter(|n| !n.trim().is_empty()) else {
        return error(StatusCode::BAD_REQUEST, "", "Please provide a task name.");
    };
    let role = role.unwrap_or(Role::User);
    let space = route_space.or(create.space_id.as_deref());
    match inst.create_task(
        &name,
        create.description,
        create.arguments.unwrap_or_default(),
        space,
        role,
        ctx.now,
        log,
    ) {
        Ok(number) => match inst.tasks.get(&number) {
            Some(t) => respond(StatusCode::CREATED, task_resource(t, ctx)),
            None => not_found(&task::task_id(number)),
        },
        Err(r) => refusal(r, &name),
    }
}

fn cancel_task(
    world: &mut World,
    index: usize,
    role: Option<Role>,
    id: &str,
    ctx: &Ctx<'_>,
) -> ApiResponse {
    let Some((inst, log)) = world.installation_mut(index) else {
        return not_found(id);
    };
    let Some(number) = task::parse_task_id(id).filter(|n| inst.tasks.contains_key(n)) else {
        return not_found(id);
    };
    if role != Some(Role::Administrator) && inst.maintenance_mode {
        return refusal(Refusal::MaintenanceMode, id);
    }
    if let Err(r) = inst.cancel_task(number, ctx.now, log) {
        return refusal(r, id);
    }
    match inst.tasks.get(&number) {
        Some(t) => ok(task_resource(t, ctx)),
        None => not_found(id),
    }
}

fn find_task<'a>(inst: &'a Installation, id: &str) -> Option<&'a Task> {
    inst.tasks.get(&task::parse_task_id(id)?)
}

fn task_resource(t: &Task, ctx: &Ctx<'_>) -> json::TaskResource {
    let id = t.id();
    let duration = match (t.start_time, t.completed_time) {
        (Some(s), Some(c)) => c.as_second() - s.as_second(),
        (Some(s), None) => ctx.now.as_second() - s.as_second(),
        _ => 0,
    };
    json::TaskResource {
        space_id: t.space_id.clone(),
        name: t.name.clone(),
        description: t.description.clone(),
        arguments: t.arguments.clone(),
        state: t.state.as_str().into(),
        completed: json::completed_text(t.state.as_str(), t.completed_time),
        queue_time: t.queue_time,
        queue_time_expiry: None,
        start_time: t.start_time,
        last_updated_time: t.last_updated_time,
        completed_time: t.completed_time,
        server_node: t.server_node.clone(),
        duration: json::duration_text(duration),
        error_message: t.error_message.clone().unwrap_or_default(),
        has_been_picked_up_by_processor: t.start_time.is_some(),
        is_completed: t.state.is_completed(),
        finished_successfully: t.state == TaskState::Success,
        has_pending_interruptions: false,
        can_rerun: false,
        has_warnings_or_errors: t.state == TaskState::Failed,
        project_id: t.project_id.clone(),
        links: links(
            ctx,
            &[
                ("Self", &format!("/api/tasks/{id}")),
                ("Web", &format!("/app#/tasks/{id}")),
                ("Raw", &format!("/api/tasks/{id}/raw")),
                ("Cancel", &format!("/api/tasks/{id}/cancel")),
                (
                    "QueuedBehind",
                    &format!("/api/tasks/{id}/queued-behind{{?skip}}"),
                ),
                (
                    "Details",
                    &format!("/api/tasks/{id}/details{{?verbose,tail}}"),
                ),
            ],
        ),
        id,
    }
}

/// What the task log says: one line per thing that happened to it.
fn task_log(t: &Task) -> Vec<String> {
    let mut lines = vec![format!(
        "{} Info | Task {} queued: {}",
        json::octopus_time(t.queue_time),
        t.id(),
        t.description
    )];
    if let (Some(start), Some(node)) = (t.start_time, &t.server_node) {
        lines.push(format!(
            "{} Info | Picked up by Octopus Server node {node}",
            json::octopus_time(start)
        ));
    }
    if let Some(done) = t.completed_time {
        let outcome = t
            .error_message
            .clone()
            .unwrap_or_else(|| format!("Task {}", t.state.as_str()));
        lines.push(format!("{} Info | {outcome}", json::octopus_time(done)));
    }
    lines
}

fn task_details(t: &Task, ctx: &Ctx<'_>) -> json::TaskDetailsResource {
    let status = match t.state {
        TaskState::Queued => "Pending",
        TaskState::Executing | TaskState::Cancelling => "Running",
        TaskState::Success => "Success",
        TaskState::Canceled => "Canceled",
        TaskState::Failed | TaskState::TimedOut => "Failed",
    };
    let progress = if t.state.is_completed() { 100 } else { 0 };
    let log = task_log(t);
    let size = log.iter().map(|l| l.len() + 1).sum();
    let elements = log
        .into_iter()
        .enumerate()
        .map(|(number, message_text)| json::ActivityLogElement {
            category: "Info".into(),
            message_text,
            occurred_at: t.last_updated_time,
            number,
        })
        .collect();
    let id = t.id();
    json::TaskDetailsResource {
        task: task_resource(t, ctx),
        activity_logs: vec![json::ActivityElement {
            id: format!("{id}_root"),
            name: t.description.clone(),
            started: t.start_time,
            ended: t.completed_time,
            status: status.into(),
            children: Vec::new(),
            show_at_summary_level: true,
            log_elements: elements,
            progress_percentage: progress,
            progress_message: None,
        }],
        physical_log_size: size,
        progress: json::TaskProgress {
            progress_percentage: progress,
            estimated_time_remaining: String::new(),
        },
        links: links(ctx, &[("Self", &format!("/api/tasks/{id}/details"))]),
    }
}

/// Tasks still queued ahead of a queued task, oldest first.
fn queued_behind(
    inst: &Installation,
    t: &Task,
    ctx: &Ctx<'_>,
) -> json::ResourceCollection<json::TaskResource> {
    let ahead: Vec<&Task> = if t.state == TaskState::Queued {
        inst.tasks
            .values()
            .filter(|o| o.state == TaskState::Queued && o.number < t.number)
            .collect()
    } else {
        Vec::new()
    };
    let id = t.id();
    page(
        "Task",
        &format!("/api/tasks/{id}/queued-behind"),
        &format!("/api/tasks/{id}/queued-behind{{?skip,take}}"),
        ahead,
        |o| task_resource(o, ctx),
        None,
        ctx,
    )
}

fn task_list(
    inst: &Installation,
    space: Option<&str>,
    ctx: &Ctx<'_>,
) -> json::ResourceCollection<json::TaskResource> {
    let states: Vec<TaskState> = ctx
        .list("states")
        .iter()
        .filter_map(|s| TaskState::parse(s))
        .collect();
    let names = ctx.list("name");
    let ids = ctx.list("ids");
    let node = ctx.query.get("node").cloned();
    let running = ctx.flag("running") == Some(true);
    let active = ctx.flag("active") == Some(true);
    let interruptions = ctx.flag("hasPendingInterruptions") == Some(true);
    let mut spaces = ctx.list("spaces");
    if let Some(space) = space {
        spaces.push(space.to_string());
    }
    let include_system = space.is_none() || ctx.flag("includeSystem") == Some(true);
    let partial = ctx.query.get("partialName").map(|s| s.to_ascii_lowercase());
    let matches_all_but_state = |t: &&Task| {
        (names.is_empty() || names.iter().any(|n| n.eq_ignore_ascii_case(&t.name)))
            && (ids.is_empty() || ids.iter().any(|i| i.eq_ignore_ascii_case(&t.id())))
            && node.as_ref().is_none_or(|n| {
                t.server_node
                    .as_deref()
                    .is_some_and(|s| s.eq_ignore_ascii_case(n))
            })
            && (!running || t.state.is_running())
            && (!active || !t.state.is_completed())
            && !interruptions
            && (spaces.is_empty()
                || t.space_id.as_ref().is_some_and(|s| spaces.contains(s))
                || (include_system && t.space_id.is_none()))
            && partial
                .as_ref()
                .is_none_or(|p| t.description.to_ascii_lowercase().contains(p))
    };
    // Newest first, as Octopus lists them.
    let candidates: Vec<&Task> = inst
        .tasks
        .values()
        .rev()
        .filter(matches_all_but_state)
        .collect();
    let mut counts: BTreeMap<String, usize> = TaskState::ALL
        .iter()
        .map(|s| (s.as_str().to_string(), 0))
        .collect();
    for t in &candidates {
        *counts.entry(t.state.as_str().to_string()).or_default() += 1;
    }
    let selected: Vec<&Task> = candidates
        .into_iter()
        .filter(|t| states.is_empty() || states.contains(&t.state))
        .collect();
    let base = match space {
        Some(s) => format!("/api/{s}/tasks"),
        None => "/api/tasks".to_string(),
    };
    let template = format!(
        "{base}{{/id}}{{?skip,active,environment,tenant,project,name,node,running,states,hasPendingInterruptions,hasWarningsOrErrors,take,ids,partialName,spaces,includeSystem}}"
    );
    page(
        "Task",
        &base,
        &template,
        selected,
        |t| task_resource(t, ctx),
        Some(counts),
        ctx,
    )
}

/// Splits and percent-decodes a query string.
fn parse_query(query: Option<&str>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for pair in query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        out.insert(percent_decode(k), percent_decode(v));
    }
    out
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_routes_case_insensitively_with_spaces() {
        assert_eq!(Route::parse("/api"), Some(Route::Root));
        assert_eq!(Route::parse("/api/"), Some(Route::Root));
        assert_eq!(
            Route::parse("/API/OctopusServerNodes/OctopusServerNodes-a/details"),
            Some(Route::NodeDetails("OctopusServerNodes-a".into()))
        );
        assert_eq!(
            Route::parse("/api/Spaces-1/tasks/ServerTasks-3/cancel"),
            Some(Route::TaskCancel {
                space: Some("Spaces-1".into()),
                id: "ServerTasks-3".into()
            })
        );
        assert_eq!(Route::parse("/api/projects"), None);
        assert_eq!(Route::parse("/app"), None);
    }

    #[test]
    fn decodes_queries() {
        let q = parse_query(Some(
            "states=Executing%2CCancelling&take=5&partialName=a+b&x=%zz",
        ));
        assert_eq!(q["states"], "Executing,Cancelling");
        assert_eq!(q["take"], "5");
        assert_eq!(q["partialName"], "a b");
        assert_eq!(q["x"], "%zz");
    }
}
