//! The JSON resources Octopus Server sends and accepts, in its own PascalCase names
//! (checked against OctopusClients' `Model/*.cs` and the server's API description).
//!
//! Decoding is tolerant: unknown fields are ignored (or kept in `extra` where a resource is
//! written back), fields Octopus may omit are `Option` or default. Resources the operator
//! PUTs back (node, maintenance configuration) keep every field they were read with, so a
//! read-modify-write never drops what a newer server added.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// `Links` of a resource: link name -> href or URI template (Octopus's `LinkCollection`).
pub type Links = BTreeMap<String, String>;

/// `GET /api` (Octopus's `RootResource`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RootResource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application: Option<String>,
    /// The server's version, e.g. `2024.2.9220`.
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub installation_id: Option<String>,
    #[serde(default)]
    pub has_long_term_support: bool,
    #[serde(default)]
    pub links: Links,
}

/// One node of the cluster as listed by `GET /api/octopusservernodes/summary`
/// (Octopus's `OctopusServerNodeSummaryResource`). It has no version: a node's version is
/// what the node's own `GET /api` answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NodeSummary {
    pub id: String,
    #[serde(default)]
    pub name: String,
    /// The node's drain flag: a draining node takes no new tasks.
    #[serde(default)]
    pub is_in_maintenance_mode: bool,
    /// Octopus has not heard from the node recently.
    #[serde(default)]
    pub is_offline: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<Timestamp>,
    #[serde(default)]
    pub max_concurrent_tasks: u32,
    #[serde(default)]
    pub running_task_count: u32,
    #[serde(default)]
    pub links: Links,
}

/// `GET /api/octopusservernodes/summary` (Octopus's `OctopusServerClusterSummaryResource`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ClusterSummary {
    #[serde(default)]
    pub nodes: Vec<NodeSummary>,
    #[serde(default)]
    pub links: Links,
}

/// `GET/PUT /api/octopusservernodes/{id}` (Octopus's `OctopusServerNodeResource`).
/// `IsInMaintenanceMode` here is the node's drain flag.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct OctopusServerNode {
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub max_concurrent_tasks: u32,
    #[serde(default)]
    pub is_in_maintenance_mode: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_modified_on: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_modified_by: Option<String>,
    #[serde(default)]
    pub links: Links,
    /// Fields this client does not model, sent back unchanged on PUT.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The answer of `GET /api/octopusservernodes/ping`, the load balancer's check of the node
/// that served it: 200 when it serves, 418 when it is draining or offline. Octopus also
/// sends "the node configuration" in the body but publishes no model of it, so only the
/// status is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodePing {
    /// HTTP status: 200 or 418.
    pub status: u16,
}

impl NodePing {
    /// True when the node answered 200: it takes traffic and tasks.
    pub fn is_serving(&self) -> bool {
        self.status == 200
    }
}

/// `GET/PUT /api/maintenanceconfiguration` (Octopus's `MaintenanceConfigurationResource`):
/// server-wide maintenance mode, in which only administrators may change anything.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct MaintenanceConfiguration {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default)]
    pub is_in_maintenance_mode: bool,
    #[serde(default)]
    pub links: Links,
    /// Fields this client does not model, sent back unchanged on PUT.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `GET /api/serverstatus/health` (Octopus's `ServerStatusHealthResource`). Octopus answers
/// 418 with the same body when the cluster is not operating normally.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ServerStatusHealth {
    pub is_operating_normally: bool,
    #[serde(default)]
    pub is_entire_cluster_read_only: bool,
    #[serde(default)]
    pub is_entire_cluster_draining_tasks: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_compliant_with_license: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// A server task's state (Octopus's `TaskState`, sent as its name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TaskState {
    Queued,
    Executing,
    Cancelling,
    Success,
    Failed,
    Canceled,
    TimedOut,
    /// A state this client does not know (a newer server). Never sent in a query.
    #[serde(other)]
    Unknown,
}

impl TaskState {
    /// The name Octopus uses on the wire and in `states=` queries.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Queued => "Queued",
            TaskState::Executing => "Executing",
            TaskState::Cancelling => "Cancelling",
            TaskState::Success => "Success",
            TaskState::Failed => "Failed",
            TaskState::Canceled => "Canceled",
            TaskState::TimedOut => "TimedOut",
            TaskState::Unknown => "Unknown",
        }
    }

    /// Octopus's own rule: a task is completed unless it is queued, executing or cancelling.
    pub fn is_completed(self) -> bool {
        !matches!(
            self,
            TaskState::Queued | TaskState::Executing | TaskState::Cancelling
        )
    }
}

/// A server task (Octopus's `TaskResource`), from `/api/tasks`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ServerTask {
    pub id: String,
    /// The task type, e.g. `Deploy`, `Health`, `Upgrade`.
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default)]
    pub arguments: Map<String, Value>,
    pub state: TaskState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_time: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_time_expiry: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_updated_time: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_time: Option<Timestamp>,
    /// The node that runs (or ran) the task; none while it waits in the queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_node: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    #[serde(default)]
    pub has_been_picked_up_by_processor: bool,
    #[serde(default)]
    pub is_completed: bool,
    #[serde(default)]
    pub finished_successfully: bool,
    #[serde(default)]
    pub has_pending_interruptions: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub space_id: Option<String>,
    #[serde(default)]
    pub links: Links,
}

/// A page of a list resource (Octopus's `ResourceCollection<T>`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Page<T> {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item_type: Option<String>,
    #[serde(default)]
    pub total_results: u64,
    #[serde(default)]
    pub items_per_page: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number_of_pages: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_page_number: Option<u64>,
    #[serde(default)]
    pub is_stale: bool,
    #[serde(default = "Vec::new")]
    pub items: Vec<T>,
    #[serde(default)]
    pub links: Links,
}

/// A space (Octopus's `SpaceResource`), from `GET /api/spaces`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Space {
    pub id: String,
    #[serde(default)]
    pub name: String,
    /// The space unscoped routes and clients without a space use.
    #[serde(default)]
    pub is_default: bool,
    #[serde(default)]
    pub links: Links,
}

/// A deployment target (Octopus's `MachineResource`), from `GET /api/{spaceId}/machines`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Machine {
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub environment_ids: Vec<String>,
    #[serde(default)]
    pub is_disabled: bool,
    #[serde(default)]
    pub links: Links,
}

/// Query of `GET /api/tasks` (parameters of the `Tasks` link template). Unset fields are
/// not sent, so Octopus applies its defaults (`take` = 30).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskQuery {
    /// `states=Queued,Executing`.
    pub states: Vec<TaskState>,
    /// `node=`: tasks run by this node (its name).
    pub node: Option<String>,
    /// `running=true`: tasks executing or cancelling.
    pub running: Option<bool>,
    /// `active=true`: tasks not yet completed (queued or running).
    pub active: Option<bool>,
    /// `name=`: the task type, e.g. `Deploy`.
    pub name: Option<String>,
    /// `ids=`: only these tasks.
    pub ids: Vec<String>,
    /// `spaces=`: e.g. `all`.
    pub spaces: Vec<String>,
    /// `includeSystem=true`: also system tasks (not bound to a space).
    pub include_system: Option<bool>,
    pub skip: Option<u32>,
    pub take: Option<u32>,
}

impl TaskQuery {
    /// Query-string pairs, in the order of Octopus's link template.
    pub fn to_pairs(&self) -> Vec<(&'static str, String)> {
        let mut pairs = Vec::new();
        if let Some(skip) = self.skip {
            pairs.push(("skip", skip.to_string()));
        }
        if let Some(active) = self.active {
            pairs.push(("active", active.to_string()));
        }
        if let Some(name) = &self.name {
            pairs.push(("name", name.clone()));
        }
        if let Some(node) = &self.node {
            pairs.push(("node", node.clone()));
        }
        if let Some(running) = self.running {
            pairs.push(("running", running.to_string()));
        }
        if !self.states.is_empty() {
            let states: Vec<&str> = self.states.iter().map(|s| s.as_str()).collect();
            pairs.push(("states", states.join(",")));
        }
        if let Some(take) = self.take {
            pairs.push(("take", take.to_string()));
        }
        if !self.ids.is_empty() {
            pairs.push(("ids", self.ids.join(",")));
        }
        if !self.spaces.is_empty() {
            pairs.push(("spaces", self.spaces.join(",")));
        }
        if let Some(include_system) = self.include_system {
            pairs.push(("includeSystem", include_system.to_string()));
        }
        pairs
    }
}

/// Built-in task names Octopus accepts in `POST /api/tasks` (Octopus's `BuiltInTasks`).
pub mod builtin_tasks {
    /// Upgrade Tentacles (arguments: EnvironmentId, MachineIds, RestrictedTo, WorkerpoolId).
    pub const UPGRADE: &str = "Upgrade";
    /// Push the current Calamari to machines (arguments: MachineIds only; an
    /// environment's machines come from `GET /api/{spaceId}/machines?environmentIds=`).
    pub const UPDATE_CALAMARI: &str = "UpdateCalamari";
    /// Health check machines (arguments: EnvironmentId, MachineIds, RestrictedTo,
    /// WorkerpoolId, Timeout, MachineTimeout; timeouts as .NET TimeSpans, `00:05:00`).
    pub const HEALTH: &str = "Health";
}

/// Body of `POST /api/tasks` (the create-time writable fields of `TaskResource`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateTask {
    pub name: String,
    pub description: String,
    #[serde(default)]
    pub arguments: Map<String, Value>,
    /// Space to create the task in (`POST /api/{SpaceId}/tasks`); none = the default space.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub space_id: Option<String>,
}

impl CreateTask {
    pub fn new(name: impl Into<String>, description: impl Into<String>) -> Self {
        CreateTask {
            name: name.into(),
            description: description.into(),
            arguments: Map::new(),
            space_id: None,
        }
    }

    /// Adds one argument (Octopus's argument names, e.g. `MachineIds`).
    pub fn argument(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        self.arguments.insert(name.into(), value.into());
        self
    }

    pub fn in_space(mut self, space_id: impl Into<String>) -> Self {
        self.space_id = Some(space_id.into());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn root_decodes_with_extra_fields() {
        let body = json!({
            "Application": "Octopus Deploy",
            "Version": "2024.2.9220",
            "ApiVersion": "3.0.0",
            "InstallationId": "39b44e47-37d4-4fcd-949c-2d831ebfa65e",
            "IsEarlyAccessProgram": false,
            "HasLongTermSupport": true,
            "Links": {
                "Self": "/api",
                "OctopusServerClusterSummary": "/api/octopusservernodes/summary",
                "OctopusServerNodes": "/api/octopusservernodes{/id}{?skip,take,ids,partialName}",
                "MaintenanceConfiguration": "/api/maintenanceconfiguration",
                "ServerHealthStatus": "/api/serverstatus/health"
            }
        });
        let root: RootResource = serde_json::from_value(body).unwrap();
        assert_eq!(root.version, "2024.2.9220");
        assert_eq!(root.api_version.as_deref(), Some("3.0.0"));
        assert!(root.has_long_term_support);
        assert_eq!(
            root.links
                .get("OctopusServerClusterSummary")
                .map(String::as_str),
            Some("/api/octopusservernodes/summary")
        );
    }

    #[test]
    fn root_without_version_is_rejected() {
        let body = json!({ "Application": "Octopus Deploy", "Links": {} });
        assert!(serde_json::from_value::<RootResource>(body).is_err());
    }

    #[test]
    fn cluster_summary_decodes_dotnet_timestamps_and_obsolete_fields() {
        let body = json!({
            "Nodes": [
                {
                    "Id": "OctopusServerNodes-octopus-0",
                    "Name": "octopus-0",
                    "MaxConcurrentTasks": 5,
                    "IsInMaintenanceMode": false,
                    "LastSeen": "2024-05-02T10:20:30.1234567+00:00",
                    "Rank": "Leader",
                    "IsLeader": true,
                    "IsOffline": false,
                    "RunningTaskCount": 2,
                    "Links": { "Self": "/api/octopusservernodes/OctopusServerNodes-octopus-0" }
                },
                {
                    "Id": "OctopusServerNodes-octopus-1",
                    "Name": "octopus-1",
                    "MaxConcurrentTasks": 5,
                    "IsInMaintenanceMode": true,
                    "LastSeen": "2024-05-02T12:20:30.5+02:00",
                    "IsOffline": true,
                    "RunningTaskCount": 0
                }
            ],
            "Links": {}
        });
        let summary: ClusterSummary = serde_json::from_value(body).unwrap();
        assert_eq!(summary.nodes.len(), 2);
        let first = &summary.nodes[0];
        assert_eq!(first.name, "octopus-0");
        assert_eq!(first.running_task_count, 2);
        assert_eq!(
            first.last_seen.unwrap().to_string(),
            "2024-05-02T10:20:30.1234567Z"
        );
        let second = &summary.nodes[1];
        assert!(second.is_in_maintenance_mode && second.is_offline);
        assert_eq!(
            second.last_seen.unwrap().to_string(),
            "2024-05-02T10:20:30.5Z"
        );
    }

    #[test]
    fn node_round_trip_keeps_unknown_fields() {
        let body = json!({
            "Id": "OctopusServerNodes-octopus-0",
            "Name": "octopus-0",
            "MaxConcurrentTasks": 5,
            "IsInMaintenanceMode": false,
            "LastModifiedOn": "2024-05-02T10:20:30.123+00:00",
            "LastModifiedBy": "admin",
            "SomethingNewer": { "A": 1 },
            "Links": { "Self": "/api/octopusservernodes/OctopusServerNodes-octopus-0" }
        });
        let mut node: OctopusServerNode = serde_json::from_value(body.clone()).unwrap();
        assert_eq!(node.max_concurrent_tasks, 5);
        node.is_in_maintenance_mode = true;
        let mut expected = body;
        expected["IsInMaintenanceMode"] = json!(true);
        let mut sent = serde_json::to_value(&node).unwrap();
        // Timestamps re-encode in jiff's form; compare them as instants.
        assert_eq!(
            sent["LastModifiedOn"]
                .as_str()
                .unwrap()
                .parse::<Timestamp>()
                .unwrap(),
            expected["LastModifiedOn"]
                .as_str()
                .unwrap()
                .parse::<Timestamp>()
                .unwrap()
        );
        sent["LastModifiedOn"] = expected["LastModifiedOn"].clone();
        assert_eq!(sent, expected);
    }

    #[test]
    fn maintenance_configuration_decodes() {
        let body = json!({
            "Id": "maintenance",
            "IsInMaintenanceMode": true,
            "Links": { "Self": "/api/maintenanceconfiguration" }
        });
        let config: MaintenanceConfiguration = serde_json::from_value(body).unwrap();
        assert_eq!(config.id.as_deref(), Some("maintenance"));
        assert!(config.is_in_maintenance_mode);
    }

    #[test]
    fn server_status_health_decodes() {
        let body = json!({
            "IsOperatingNormally": false,
            "Description": "The entire cluster is draining tasks",
            "IsEntireClusterReadOnly": false,
            "IsEntireClusterDrainingTasks": true,
            "IsCompliantWithLicense": true,
            "Links": {}
        });
        let health: ServerStatusHealth = serde_json::from_value(body).unwrap();
        assert!(!health.is_operating_normally);
        assert!(health.is_entire_cluster_draining_tasks);
        assert_eq!(health.is_compliant_with_license, Some(true));
    }

    #[test]
    fn task_page_decodes_like_octopus_sends_it() {
        let body = json!({
            "ItemType": "Task",
            "TotalResults": 2,
            "ItemsPerPage": 30,
            "NumberOfPages": 1,
            "LastPageNumber": 0,
            "TotalCounts": { "Executing": 1, "Queued": 1 },
            "IsStale": false,
            "Items": [
                {
                    "Id": "ServerTasks-101",
                    "SpaceId": "Spaces-1",
                    "Name": "Deploy",
                    "Description": "Deploy Web to Production",
                    "Arguments": { "DeploymentId": "Deployments-7" },
                    "State": "Executing",
                    "Completed": "",
                    "QueueTime": "2024-05-02T10:00:00.000+00:00",
                    "QueueTimeExpiry": null,
                    "StartTime": "2024-05-02T10:00:01.000+00:00",
                    "LastUpdatedTime": "2024-05-02T10:00:05.000+00:00",
                    "CompletedTime": null,
                    "ServerNode": "octopus-0",
                    "Duration": "5 seconds",
                    "ErrorMessage": "",
                    "HasBeenPickedUpByProcessor": true,
                    "IsCompleted": false,
                    "FinishedSuccessfully": false,
                    "HasPendingInterruptions": false,
                    "CanRerun": false,
                    "HasWarningsOrErrors": false,
                    "PendingInterruptionTypes": [],
                    "Links": { "Cancel": "/api/tasks/ServerTasks-101/cancel" }
                },
                {
                    "Id": "ServerTasks-102",
                    "Name": "Health",
                    "State": "Queued",
                    "QueueTime": "2024-05-02T10:00:02.000+00:00",
                    "ServerNode": null
                }
            ],
            "Links": { "Self": "/api/tasks", "Page.Current": "/api/tasks?skip=0&take=30" }
        });
        let page: Page<ServerTask> = serde_json::from_value(body).unwrap();
        assert_eq!(page.total_results, 2);
        assert_eq!(page.items_per_page, 30);
        assert_eq!(page.items[0].state, TaskState::Executing);
        assert_eq!(page.items[0].server_node.as_deref(), Some("octopus-0"));
        assert_eq!(page.items[0].arguments["DeploymentId"], "Deployments-7");
        assert_eq!(page.items[1].server_node, None);
        assert!(!page.items[1].state.is_completed());
    }

    #[test]
    fn unknown_task_state_is_tolerated() {
        let task: ServerTask =
            serde_json::from_value(json!({"Id": "ServerTasks-1", "Name": "X", "State": "Paused"}))
                .unwrap();
        assert_eq!(task.state, TaskState::Unknown);
    }

    #[test]
    fn task_query_uses_octopus_parameter_names() {
        let query = TaskQuery {
            states: vec![TaskState::Executing, TaskState::Cancelling],
            node: Some("octopus-1".into()),
            running: Some(true),
            include_system: Some(true),
            take: Some(100),
            ..TaskQuery::default()
        };
        let pairs = query.to_pairs();
        assert_eq!(
            pairs,
            vec![
                ("node", "octopus-1".to_string()),
                ("running", "true".to_string()),
                ("states", "Executing,Cancelling".to_string()),
                ("take", "100".to_string()),
                ("includeSystem", "true".to_string()),
            ]
        );
    }

    #[test]
    fn create_task_encodes_pascal_case() {
        let task = CreateTask::new(builtin_tasks::UPDATE_CALAMARI, "Update Calamari")
            .argument("MachineIds", json!(["Machines-1"]));
        assert_eq!(
            serde_json::to_value(&task).unwrap(),
            json!({
                "Name": "UpdateCalamari",
                "Description": "Update Calamari",
                "Arguments": { "MachineIds": ["Machines-1"] }
            })
        );
    }
}
