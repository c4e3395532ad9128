//! What an Octopus Server node in a real container and the twin's database process say to
//! each other, along Octopus's own seam: the node connects to the database its
//! `DB_CONNECTION_STRING` names, starts (the database decides, as Octopus's start-up does,
//! whether the schema must be created, migrated, or refuses), heartbeats while it lives,
//! and flags itself offline on a clean shutdown. A node that stops heartbeating (SIGKILL,
//! OOM) is only noticed by its heartbeat going stale.
//!
//! The node also hands each REST request it receives to the database, where the shared
//! state (node rows, tasks, maintenance mode) and the one ordered event log live; the
//! answer is the node's own (its drain flag, its version).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How often a running node reports alive.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_millis(500);

/// Env: the Octopus version the image is (a container cannot see its tag).
pub const VERSION_ENV: &str = "OCTOPUS_TWIN_VERSION";

/// `POST`: a node process starts; body [`Start`], answer [`Started`].
pub const START_PATH: &str = "/_db/nodes";

/// `POST`: the node process `key` is alive; answer [`Heartbeat`], 404 when the database
/// has forgotten it.
pub fn heartbeat_path(key: &str) -> String {
    format!("{START_PATH}/{key}/heartbeat")
}

/// `POST`: the node process `key` shuts down cleanly (flags its node offline).
pub fn stop_path(key: &str) -> String {
    format!("{START_PATH}/{key}/stop")
}

/// Any method: a REST request (`rest` starts with `/api`) answered by node process `key`.
pub fn api_path(key: &str, rest: &str) -> String {
    format!("{START_PATH}/{key}/octopus{rest}")
}

/// Header carrying the Host the request reached the node by (its pod DNS name or the
/// client Service's), for the database's event log.
pub const FORWARDED_HOST: &str = "x-forwarded-host";

/// A node process starting. Holds secrets: no `Debug`.
#[derive(Clone, Serialize, Deserialize)]
pub struct Start {
    /// The pod (its host name).
    pub pod: String,
    /// OCTOPUS_SERVER_NODE_NAME, else the host name.
    pub node_name: String,
    /// The image's Octopus version.
    pub version: String,
    pub connection_string: String,
    pub admin_api_key: Option<String>,
    pub task_cap: Option<u32>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Started {
    /// Names this process in every later call.
    pub key: String,
}

/// Where a node process is, as the database sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// Starting, waiting for another node's migration, or migrating the schema.
    Starting,
    /// Serving.
    Running,
    /// Start-up failed or was refused: the process exits with an error.
    Exited,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Heartbeat {
    pub phase: Phase,
    /// Why it exits (the server's last log line), with [`Phase::Exited`].
    pub message: Option<String>,
}

/// The database address (`host:port`) in a SQL Server connection string: `Server=`
/// (or `Data Source=`, ...) `host,port`; port 1433 when none is given.
pub fn database_address(connection_string: &str) -> Option<String> {
    connection_string.split(';').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        let key = key.trim().to_ascii_lowercase();
        let server = [
            "server",
            "data source",
            "address",
            "addr",
            "network address",
        ]
        .contains(&key.as_str())
        .then(|| value.trim().trim_start_matches("tcp:"))?;
        let (host, port) = server.split_once(',').unwrap_or((server, "1433"));
        (!host.is_empty()).then(|| format!("{}:{}", host.trim(), port.trim()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_is_the_connection_strings_server() {
        assert_eq!(
            database_address("Server=198.18.1.1,41433;Database=octo;Password=x").as_deref(),
            Some("198.18.1.1:41433")
        );
        assert_eq!(
            database_address("Data Source=tcp:sql.example;Initial Catalog=o").as_deref(),
            Some("sql.example:1433")
        );
        assert_eq!(database_address("Database=octo"), None);
    }
}
