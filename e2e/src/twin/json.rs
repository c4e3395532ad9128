//! Octopus's JSON resources as the twin sends and reads them, written from
//! OctopusDeploy/OctopusClients (Model/*.cs) and Octopus's API reference — independently
//! of the operator's client, so a misspelt field cannot hide on both sides. PascalCase,
//! dates as ISO-8601 with offset (`2024-01-02T03:04:05.678+00:00`), links application
//! relative (prefixed with the virtual directory the server is reached under).

use std::collections::BTreeMap;

use jiff::{Timestamp, tz::TimeZone};
use serde::{Deserialize, Serialize};

/// Link name -> (templated) href.
pub type Links = BTreeMap<String, String>;

/// Octopus's DateTimeOffset format.
pub fn octopus_time(t: Timestamp) -> String {
    t.to_zoned(TimeZone::UTC)
        .strftime("%Y-%m-%dT%H:%M:%S%.3f%:z")
        .to_string()
}

fn serialize_time<S: serde::Serializer>(t: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&octopus_time(*t))
}

fn serialize_opt_time<S: serde::Serializer>(
    t: &Option<Timestamp>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_str(&octopus_time(*t)),
        None => s.serialize_none(),
    }
}

/// `GET /api`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct RootResource {
    pub application: String,
    pub version: String,
    pub api_version: String,
    pub installation_id: String,
    pub has_long_term_support: bool,
    pub links: Links,
}

/// `GET/PUT /api/octopusservernodes/{id}`, items of the node list.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct OctopusServerNodeResource {
    pub id: String,
    pub name: String,
    pub max_concurrent_tasks: u32,
    pub is_in_maintenance_mode: bool,
    #[serde(
        serialize_with = "serialize_opt_time",
        skip_serializing_if = "Option::is_none"
    )]
    pub last_modified_on: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_modified_by: Option<String>,
    pub links: Links,
}

/// Body of `PUT /api/octopusservernodes/{id}`. Missing writeable fields take their
/// .NET defaults (false, 0) as Octopus's model binding does.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct OctopusServerNodeUpdate {
    pub id: Option<String>,
    pub name: Option<String>,
    #[serde(default)]
    pub max_concurrent_tasks: i64,
    #[serde(default)]
    pub is_in_maintenance_mode: bool,
}

/// Items of `GET /api/octopusservernodes/summary` (OctopusServerNodeSummaryResource:
/// no version — a node's version is what the node's own `/api` says).
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct OctopusServerNodeSummaryResource {
    pub id: String,
    pub name: String,
    pub max_concurrent_tasks: u32,
    pub is_in_maintenance_mode: bool,
    #[serde(serialize_with = "serialize_time")]
    pub last_seen: Timestamp,
    pub is_offline: bool,
    pub running_task_count: usize,
    pub links: Links,
}

/// `GET /api/octopusservernodes/summary`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct OctopusServerClusterSummaryResource {
    pub nodes: Vec<OctopusServerNodeSummaryResource>,
    pub links: Links,
}

/// `GET /api/octopusservernodes/{id}/details`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct OctopusServerNodeDetailsResource {
    pub id: String,
    pub running_tasks: usize,
    pub links: Links,
}

/// `GET/PUT /api/maintenanceconfiguration`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct MaintenanceConfigurationResource {
    pub id: String,
    pub is_in_maintenance_mode: bool,
    #[serde(
        serialize_with = "serialize_opt_time",
        skip_serializing_if = "Option::is_none"
    )]
    pub last_modified_on: Option<Timestamp>,
    pub links: Links,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct MaintenanceConfigurationUpdate {
    pub id: Option<String>,
    pub is_in_maintenance_mode: bool,
}

/// `GET /api/serverstatus/health`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ServerStatusHealthResource {
    pub is_operating_normally: bool,
    pub is_entire_cluster_read_only: bool,
    pub is_entire_cluster_draining_tasks: bool,
    pub is_compliant_with_license: bool,
    pub description: String,
    pub links: Links,
}

/// `GET /api/serverstatus`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ServerStatusResource {
    pub id: String,
    pub is_database_encrypted: bool,
    pub is_in_maintenance_mode: bool,
    pub is_major_minor_upgrade: bool,
    pub is_upgrade_available: bool,
    pub maximum_available_version: String,
    pub maximum_available_version_covered_by_license: String,
    pub links: Links,
}

/// A server task.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct TaskResource {
    pub id: String,
    pub space_id: Option<String>,
    pub name: String,
    pub description: String,
    pub arguments: serde_json::Map<String, serde_json::Value>,
    pub state: String,
    pub completed: String,
    #[serde(serialize_with = "serialize_time")]
    pub queue_time: Timestamp,
    #[serde(serialize_with = "serialize_opt_time")]
    pub queue_time_expiry: Option<Timestamp>,
    #[serde(serialize_with = "serialize_opt_time")]
    pub start_time: Option<Timestamp>,
    #[serde(serialize_with = "serialize_time")]
    pub last_updated_time: Timestamp,
    #[serde(serialize_with = "serialize_opt_time")]
    pub completed_time: Option<Timestamp>,
    pub server_node: Option<String>,
    pub duration: String,
    pub error_message: String,
    pub has_been_picked_up_by_processor: bool,
    pub is_completed: bool,
    pub finished_successfully: bool,
    pub has_pending_interruptions: bool,
    pub can_rerun: bool,
    pub has_warnings_or_errors: bool,
    pub project_id: Option<String>,
    pub links: Links,
}

/// `GET /api/tasks/{id}/details` (TaskDetailsResource).
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct TaskDetailsResource {
    pub task: TaskResource,
    pub activity_logs: Vec<ActivityElement>,
    pub physical_log_size: usize,
    pub progress: TaskProgress,
    pub links: Links,
}

/// One node of a task's activity log tree (ActivityElement).
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ActivityElement {
    pub id: String,
    pub name: String,
    #[serde(serialize_with = "serialize_opt_time")]
    pub started: Option<Timestamp>,
    #[serde(serialize_with = "serialize_opt_time")]
    pub ended: Option<Timestamp>,
    /// ActivityStatus: Pending, Running, Success, Failed, Skipped, SuccessWithWarning,
    /// Canceled.
    pub status: String,
    pub children: Vec<ActivityElement>,
    pub show_at_summary_level: bool,
    pub log_elements: Vec<ActivityLogElement>,
    pub progress_percentage: u32,
    pub progress_message: Option<String>,
}

/// One line of a task log (ActivityLogElement).
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ActivityLogElement {
    pub category: String,
    pub message_text: String,
    #[serde(serialize_with = "serialize_time")]
    pub occurred_at: Timestamp,
    pub number: usize,
}

/// TaskProgress.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct TaskProgress {
    pub progress_percentage: u32,
    pub estimated_time_remaining: String,
}

/// Items of `GET /api/tasks/taskTypes` (TaskTypeResource).
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct TaskTypeResource {
    pub id: String,
    pub name: String,
    pub links: Links,
}

/// `GET /api/spaces/{id}` and the items of `/api/spaces` (SpaceResource).
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct SpaceResource {
    pub id: String,
    pub name: String,
    pub slug: String,
    pub description: Option<String>,
    pub is_default: bool,
    pub is_private: bool,
    pub task_queue_stopped: bool,
    pub space_managers_teams: Vec<String>,
    pub space_managers_team_members: Vec<String>,
    pub links: Links,
}

/// `GET /api/{spaceId}` (SpaceRootResource): links of the space's collections.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct SpaceRootResource {
    pub links: Links,
}

/// `GET /api/{spaceId}/environments/{id}` (EnvironmentResource).
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct EnvironmentResource {
    pub id: String,
    pub name: String,
    pub slug: String,
    pub description: String,
    pub sort_order: usize,
    pub use_guided_failure: bool,
    pub allow_dynamic_infrastructure: bool,
    pub space_id: String,
    pub links: Links,
}

/// A deployment target's endpoint (a listening Tentacle).
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct EndpointResource {
    pub communication_style: String,
    pub uri: String,
    pub thumbprint: String,
}

/// `GET /api/{spaceId}/machines/{id}` (DeploymentTargetResource / MachineResource).
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct MachineResource {
    pub id: String,
    pub name: String,
    pub environment_ids: Vec<String>,
    pub roles: Vec<String>,
    pub tenant_ids: Vec<String>,
    pub tenant_tags: Vec<String>,
    pub tenanted_deployment_participation: String,
    pub is_disabled: bool,
    pub machine_policy_id: String,
    pub health_status: String,
    pub status: String,
    pub status_summary: String,
    pub has_latest_calamari: bool,
    pub is_in_process: bool,
    pub endpoint: EndpointResource,
    pub space_id: String,
    pub links: Links,
}

/// Body of `POST /api/tasks`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TaskCreate {
    pub name: Option<String>,
    pub description: Option<String>,
    #[serde(default)]
    pub arguments: Option<serde_json::Map<String, serde_json::Value>>,
    pub space_id: Option<String>,
}

/// A page of a list resource (ResourceCollection).
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ResourceCollection<T> {
    pub item_type: String,
    pub is_stale: bool,
    pub total_results: usize,
    pub items_per_page: usize,
    pub number_of_pages: usize,
    pub last_page_number: usize,
    pub items: Vec<T>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_counts: Option<BTreeMap<String, usize>>,
    pub links: Links,
}

/// Octopus's error body (OctopusErrorsContract).
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct OctopusErrorsContract {
    pub error_message: String,
    pub errors: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub full_exception: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub help_text: Option<String>,
}

impl OctopusErrorsContract {
    /// A refusal of a request whose details are wrong: Octopus's summary sentence and
    /// one entry per problem.
    pub fn invalid(errors: Vec<String>) -> Self {
        Self {
            error_message: "There was a problem with your request.".into(),
            errors,
            full_exception: None,
            help_text: None,
        }
    }

    pub fn new(message: impl Into<String>) -> Self {
        let message = message.into();
        Self {
            errors: vec![message.clone()],
            error_message: message,
            full_exception: None,
            help_text: None,
        }
    }
}

/// A task's "Completed" text: the completion time in words, or what it is doing.
pub fn completed_text(state: &str, completed: Option<Timestamp>) -> String {
    match (state, completed) {
        ("TimedOut", _) => "Timed out".into(),
        (_, Some(t)) => t
            .to_zoned(TimeZone::UTC)
            .strftime("%A, %B %-d, %Y %-I:%M %p")
            .to_string(),
        ("Queued", None) => "Queued...".into(),
        _ => "Executing...".into(),
    }
}

/// A task's "Duration" text (`32 seconds`, `1 minute`, `2 hours`).
pub fn duration_text(seconds: i64) -> String {
    let seconds = seconds.max(0);
    let (n, unit) = if seconds < 60 {
        (seconds, "second")
    } else if seconds < 3600 {
        (seconds / 60, "minute")
    } else {
        (seconds / 3600, "hour")
    };
    if n == 1 {
        format!("1 {unit}")
    } else {
        format!("{n} {unit}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_dates_as_octopus_does() {
        let t: Timestamp = "2017-03-20T21:00:17.205Z"
            .parse()
            .unwrap_or(Timestamp::UNIX_EPOCH);
        assert_eq!(octopus_time(t), "2017-03-20T21:00:17.205+00:00");
        assert_eq!(
            completed_text("Success", Some(t)),
            "Monday, March 20, 2017 9:00 PM"
        );
        assert_eq!(completed_text("Queued", None), "Queued...");
        assert_eq!(duration_text(32), "32 seconds");
        assert_eq!(duration_text(61), "1 minute");
    }
}
