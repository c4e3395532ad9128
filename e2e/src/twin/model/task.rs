//! Server tasks as Octopus keeps them in its database: queued, executing on one node,
//! finished. Owns the task record and its states; scheduling lives in the installation.

use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// Octopus's TaskState, spelled as its API spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TaskState {
    Queued,
    Executing,
    Failed,
    Canceled,
    TimedOut,
    Success,
    Cancelling,
}

impl TaskState {
    pub const ALL: [TaskState; 7] = [
        TaskState::Queued,
        TaskState::Executing,
        TaskState::Failed,
        TaskState::Canceled,
        TaskState::TimedOut,
        TaskState::Success,
        TaskState::Cancelling,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Queued => "Queued",
            TaskState::Executing => "Executing",
            TaskState::Failed => "Failed",
            TaskState::Canceled => "Canceled",
            TaskState::TimedOut => "TimedOut",
            TaskState::Success => "Success",
            TaskState::Cancelling => "Cancelling",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|state| state.as_str().eq_ignore_ascii_case(s))
    }

    /// As Octopus.Client's TaskStateExtensions.IsCompleted.
    pub fn is_completed(self) -> bool {
        !matches!(
            self,
            TaskState::Queued | TaskState::Executing | TaskState::Cancelling
        )
    }

    /// Holding a slot on its node.
    pub fn is_running(self) -> bool {
        matches!(self, TaskState::Executing | TaskState::Cancelling)
    }
}

/// Task names POST /api/tasks accepts (built-in server tasks). Deployments and runbook
/// runs are created through their own resources, never by name here.
pub const BUILT_IN_TASKS: &[&str] = &[
    "Health",
    "Upgrade",
    "UpdateCalamari",
    "AdHocScript",
    "Backup",
    "Retention",
    "TestEmail",
    "SyncCommunityActionTemplates",
    "SystemIntegrityCheck",
];

/// Built-in tasks that act on machines in a space (the others are server-wide).
const SPACE_TASKS: &[&str] = &["Health", "Upgrade", "UpdateCalamari", "AdHocScript"];

pub fn built_in_task_name(name: &str) -> Option<&'static str> {
    BUILT_IN_TASKS
        .iter()
        .copied()
        .find(|known| known.eq_ignore_ascii_case(name))
}

pub fn is_space_task(name: &str) -> bool {
    SPACE_TASKS.contains(&name)
}

/// One row of the task table.
#[derive(Clone, Debug, PartialEq)]
pub struct Task {
    pub number: u64,
    pub name: String,
    pub description: String,
    pub arguments: serde_json::Map<String, serde_json::Value>,
    pub state: TaskState,
    pub queue_time: Timestamp,
    pub start_time: Option<Timestamp>,
    pub completed_time: Option<Timestamp>,
    pub last_updated_time: Timestamp,
    /// Name of the node that picked it up.
    pub server_node: Option<String>,
    pub error_message: Option<String>,
    /// Created by the server itself (health checks, ...) or an administrator's built-in
    /// task rather than a user's deployment.
    pub system: bool,
    pub space_id: Option<String>,
    pub project_id: Option<String>,
    /// How long it executes once picked up.
    pub planned: Duration,
    /// When a Cancelling task becomes Canceled.
    pub cancel_at: Option<Timestamp>,
}

impl Task {
    pub fn id(&self) -> String {
        task_id(self.number)
    }

    /// When this task next changes by itself, if ever.
    pub fn due(&self) -> Option<Timestamp> {
        match self.state {
            TaskState::Executing => self.start_time.map(|s| super::after(s, self.planned)),
            TaskState::Cancelling => self.cancel_at,
            _ => None,
        }
    }
}

pub fn task_id(number: u64) -> String {
    format!("ServerTasks-{number}")
}

pub fn parse_task_id(id: &str) -> Option<u64> {
    id.strip_prefix("ServerTasks-")?.parse().ok()
}
