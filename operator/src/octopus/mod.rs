//! Octopus Server REST API: the [`OctopusApi`] trait the reconciler talks through, its
//! reqwest implementation [`OctopusClient`], the resources in Octopus's own JSON names, and
//! typed errors with condition reasons.
//!
//! This module only speaks the protocol. It decides nothing: the planner (`planner`) says
//! which steps an upgrade takes, and the controller's decision core (`controller::decide`)
//! when to drain a node or turn maintenance mode on. Tests swap the trait for a fake.
//!
//! Routes (under the endpoint's base URL, which may carry a virtual directory):
//! `GET /api`, `GET /api/octopusservernodes/summary`, `GET/PUT/DELETE /api/octopusservernodes/{id}`,
//! `GET /api/octopusservernodes/ping`, `GET/PUT /api/maintenanceconfiguration`,
//! `GET /api/tasks`, `POST /api/tasks` (or `/api/{spaceId}/tasks`),
//! `POST /api/tasks/{id}/cancel`, `GET /api/serverstatus/health`, `GET /api/spaces`,
//! `GET /api/{spaceId}/machines`. A node's own version and readiness are read with
//! `root` and `ping` on a client for that node's own address.

mod client;
mod endpoint;
mod error;
pub mod models;

#[cfg(test)]
mod client_tests;

use std::collections::HashSet;

use async_trait::async_trait;

pub use client::{API_KEY_HEADER, CallObserver, ClientOptions, OctopusClient};
pub use endpoint::{ApiKey, OctopusEndpoint};
pub use error::OctopusError;
pub use models::{
    ClusterSummary, CreateTask, Links, Machine, MaintenanceConfiguration, NodePing, NodeSummary,
    OctopusServerNode, Page, RootResource, ServerStatusHealth, ServerTask, Space, TaskQuery,
    TaskState, builtin_tasks,
};

pub type OctopusResult<T> = Result<T, OctopusError>;

/// `all_tasks` gives up rather than follow more pages than this.
pub const MAX_TASK_PAGES: usize = 1000;
/// Page size `all_tasks` asks for when the query sets none (and of the other lists).
pub const ALL_TASKS_PAGE_SIZE: u32 = 100;

/// The calls the operator makes to one Octopus Server endpoint.
///
/// `set_node_drain`, `set_maintenance` and `all_tasks` are provided on top of the others,
/// so every implementation (the real client, test fakes) shares their logic.
#[async_trait]
pub trait OctopusApi: Send + Sync {
    /// `GET /api`: version and links.
    async fn root(&self) -> OctopusResult<RootResource>;

    /// `GET /api/octopusservernodes/summary`: every node with its drain flag, liveness
    /// (IsOffline, LastSeen) and running task count. No version: see [`OctopusApi::root`]
    /// on the node's own address.
    async fn cluster_summary(&self) -> OctopusResult<ClusterSummary>;

    /// `GET /api/octopusservernodes/{id}`.
    async fn get_node(&self, id: &str) -> OctopusResult<OctopusServerNode>;

    /// `PUT /api/octopusservernodes/{node.Id}` with the whole resource; returns Octopus's
    /// copy.
    async fn update_node(&self, node: &OctopusServerNode) -> OctopusResult<OctopusServerNode>;

    /// `DELETE /api/octopusservernodes/{id}`: forgets a node's record (a node removed for
    /// good; a running server would register itself again). A record already gone is a
    /// 404 ([`OctopusError::NotFound`]).
    async fn delete_node(&self, id: &str) -> OctopusResult<()>;

    /// `GET /api/octopusservernodes/ping` on the node this endpoint reaches: 200 (serving)
    /// and 418 (draining or offline) are both answers.
    async fn ping(&self) -> OctopusResult<NodePing>;

    /// `GET /api/maintenanceconfiguration`.
    async fn maintenance(&self) -> OctopusResult<MaintenanceConfiguration>;

    /// `PUT /api/maintenanceconfiguration` with the whole resource.
    async fn update_maintenance(
        &self,
        config: &MaintenanceConfiguration,
    ) -> OctopusResult<MaintenanceConfiguration>;

    /// `GET /api/tasks?...`: one page.
    async fn tasks(&self, query: &TaskQuery) -> OctopusResult<Page<ServerTask>>;

    /// `POST /api/tasks/{id}/cancel`. Sent once, never retried.
    async fn cancel_task(&self, id: &str) -> OctopusResult<ServerTask>;

    /// `POST /api/tasks` (or `/api/{SpaceId}/tasks`), e.g. `Upgrade`, `UpdateCalamari`,
    /// `Health`. Sent once, never retried.
    async fn create_task(&self, task: &CreateTask) -> OctopusResult<ServerTask>;

    /// `GET /api/serverstatus/health`; a 418 (not operating normally) is an answer.
    async fn health(&self) -> OctopusResult<ServerStatusHealth>;

    /// `GET /api/spaces?skip=&take=`: one page of spaces.
    async fn spaces(&self, skip: u32, take: u32) -> OctopusResult<Page<Space>>;

    /// `GET /api/{space}/machines?environmentIds=&skip=&take=`: one page of the space's
    /// deployment targets, only those in `environment_ids` when it is not empty.
    async fn machines(
        &self,
        space: &str,
        environment_ids: &[String],
        skip: u32,
        take: u32,
    ) -> OctopusResult<Page<Machine>>;

    /// The default space (`IsDefault`), if there is one.
    async fn default_space(&self) -> OctopusResult<Option<Space>> {
        let mut found = None;
        follow_pages(
            "GET /api/spaces",
            0,
            ALL_TASKS_PAGE_SIZE,
            |skip, take| self.spaces(skip, take),
            |space: Space| {
                if space.is_default && found.is_none() {
                    found = Some(space);
                }
            },
        )
        .await?;
        Ok(found)
    }

    /// Every deployment target of a space in one of `environment_ids` (all when empty).
    async fn all_machines(
        &self,
        space: &str,
        environment_ids: &[String],
    ) -> OctopusResult<Vec<Machine>> {
        let mut machines = Vec::new();
        follow_pages(
            "GET /api/{spaceId}/machines",
            0,
            ALL_TASKS_PAGE_SIZE,
            |skip, take| self.machines(space, environment_ids, skip, take),
            |m| machines.push(m),
        )
        .await?;
        Ok(machines)
    }

    /// Drains (`true`) or undrains a node: reads it and, only if its `IsInMaintenanceMode`
    /// differs, PUTs it back with that one field changed. Returns the node as it now is.
    async fn set_node_drain(&self, id: &str, drained: bool) -> OctopusResult<OctopusServerNode> {
        let mut node = self.get_node(id).await?;
        if node.is_in_maintenance_mode == drained {
            return Ok(node);
        }
        node.is_in_maintenance_mode = drained;
        self.update_node(&node).await
    }

    /// Turns server-wide maintenance mode on or off, read-modify-write like
    /// `set_node_drain`; no PUT when it already is.
    async fn set_maintenance(&self, on: bool) -> OctopusResult<MaintenanceConfiguration> {
        let mut config = self.maintenance().await?;
        if config.is_in_maintenance_mode == on {
            return Ok(config);
        }
        config.is_in_maintenance_mode = on;
        self.update_maintenance(&config).await
    }

    /// Every task matching `query`, following pages from `query.skip` with `query.take`
    /// (default [`ALL_TASKS_PAGE_SIZE`]) per page. A task seen on two pages (the list
    /// shifts while tasks are queued) is kept once.
    async fn all_tasks(&self, query: &TaskQuery) -> OctopusResult<Vec<ServerTask>> {
        let take = query.take.unwrap_or(ALL_TASKS_PAGE_SIZE).max(1);
        let mut tasks: Vec<ServerTask> = Vec::new();
        let mut seen = HashSet::new();
        follow_pages(
            "GET /api/tasks",
            query.skip.unwrap_or(0),
            take,
            |skip, take| {
                let page_query = TaskQuery {
                    skip: Some(skip),
                    take: Some(take),
                    ..query.clone()
                };
                async move { self.tasks(&page_query).await }
            },
            |task: ServerTask| {
                if seen.insert(task.id.clone()) {
                    tasks.push(task);
                }
            },
        )
        .await?;
        Ok(tasks)
    }
}

/// Reads every page of a list resource from `skip`, `take` at a time (up to
/// [`MAX_TASK_PAGES`] pages), handing each item to `each`.
async fn follow_pages<T, F, Fut>(
    route: &str,
    mut skip: u32,
    take: u32,
    mut page: F,
    mut each: impl FnMut(T),
) -> OctopusResult<()>
where
    F: FnMut(u32, u32) -> Fut,
    Fut: std::future::Future<Output = OctopusResult<Page<T>>>,
{
    for _ in 0..MAX_TASK_PAGES {
        let page = page(skip, take).await?;
        let count = page.items.len();
        page.items.into_iter().for_each(&mut each);
        skip = skip.saturating_add(u32::try_from(count).unwrap_or(u32::MAX));
        if count == 0 || u64::from(skip) >= page.total_results {
            return Ok(());
        }
    }
    Err(OctopusError::BadResponse {
        route: route.into(),
        status: 200,
        detail: format!("more than {MAX_TASK_PAGES} pages; narrow the query"),
    })
}
