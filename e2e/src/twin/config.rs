//! Knobs of the twin that tests and benchmarks turn: timing of node start, schema
//! migration and crash back-off; the simulated task stream; injected faults; which images
//! count as Octopus Server. Durations travel as integer milliseconds (`*_ms`) in JSON.

use std::collections::BTreeSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How long things take inside one installation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Timing {
    /// From container start until the server checks the database schema.
    #[serde(rename = "start_delay_ms", with = "millis")]
    pub start_delay: Duration,
    /// How long a schema upgrade (or creating a fresh database) takes.
    #[serde(rename = "migration_time_ms", with = "millis")]
    pub migration_time: Duration,
    /// Heartbeat age after which Octopus counts a node offline. A node stopped cleanly is
    /// offline at once; one killed (SIGKILL, pod deleted with grace 0, OOM) keeps looking
    /// alive until its LastSeen is this old, and blocks database upgrades until then.
    #[serde(rename = "offline_after_ms", with = "millis")]
    pub offline_after: Duration,
    /// First crash-loop back-off; doubles per consecutive failure up to the maximum.
    #[serde(rename = "crash_backoff_base_ms", with = "millis")]
    pub crash_backoff_base: Duration,
    #[serde(rename = "crash_backoff_max_ms", with = "millis")]
    pub crash_backoff_max: Duration,
    /// From Cancelling to Canceled for an executing task.
    #[serde(rename = "cancel_delay_ms", with = "millis")]
    pub cancel_delay: Duration,
    /// MaxConcurrentTasks of a node registered without TASK_CAP (Octopus default: 5).
    pub default_task_cap: u32,
    /// Duration of tasks created through POST /api/tasks.
    #[serde(rename = "api_task_duration_ms", with = "millis")]
    pub api_task_duration: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            start_delay: Duration::from_secs(1),
            migration_time: Duration::from_secs(2),
            offline_after: Duration::from_secs(60),
            crash_backoff_base: Duration::from_secs(1),
            crash_backoff_max: Duration::from_secs(10),
            cancel_delay: Duration::from_millis(500),
            default_task_cap: 5,
            api_task_duration: Duration::from_secs(2),
        }
    }
}

/// The steady stream of work users and the server itself put on an installation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GeneratorConfig {
    pub enabled: bool,
    /// Deployments users try to queue per minute (0 = none).
    pub deployments_per_minute: f64,
    #[serde(rename = "deployment_duration_min_ms", with = "millis")]
    pub deployment_duration_min: Duration,
    #[serde(rename = "deployment_duration_max_ms", with = "millis")]
    pub deployment_duration_max: Duration,
    /// Interval of the server's own scheduled health checks (system tasks), if any.
    #[serde(rename = "health_check_interval_ms", with = "millis_opt")]
    pub health_check_interval: Option<Duration>,
    #[serde(rename = "health_check_duration_ms", with = "millis")]
    pub health_check_duration: Duration,
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            deployments_per_minute: 6.0,
            deployment_duration_min: Duration::from_secs(2),
            deployment_duration_max: Duration::from_secs(8),
            health_check_interval: Some(Duration::from_secs(60)),
            health_check_duration: Duration::from_secs(1),
        }
    }
}

impl GeneratorConfig {
    /// A generator that creates nothing.
    pub fn off() -> Self {
        Self {
            enabled: false,
            ..Self::default()
        }
    }
}

/// Faults injected into one installation, settable at runtime.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Faults {
    /// Share (0..=1) of API requests answered with 500.
    pub error_rate: f64,
    /// Added to every API request before it is handled.
    #[serde(rename = "latency_ms", with = "millis")]
    pub latency: Duration,
    /// Share (0..=1) of API requests whose connection is dropped without an answer.
    pub drop_rate: f64,
    /// Every API key of the installation is refused (401).
    pub api_key_expired: bool,
    /// Node names whose next starts hang forever (never Ready, never exit).
    pub hang_on_start: BTreeSet<String>,
    /// Node names whose starts fail (crash loop).
    pub fail_to_start: BTreeSet<String>,
    /// Versions (image tags) whose servers exit at every start (crash loop): a broken
    /// release, whichever node runs it.
    pub crash_versions: BTreeSet<String>,
    /// Schema upgrades fail at their end and roll back (the node process exits).
    pub fail_migration: bool,
    /// Every stopped node process dies without flagging its node offline (as if every
    /// pod were killed); the node then reads IsOffline only once not seen for
    /// `offline_after`.
    pub unclean_shutdown: bool,
    /// Backups the database is asked to take (`/_db/backups`, what the backup Job's pod
    /// calls on the real node) fail.
    pub backup_fails: bool,
}

/// Which container images are Octopus Server: repositories matched exactly or as the
/// trailing path of a longer reference (`docker.io/octopusdeploy/octopusdeploy`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImagePattern {
    pub repositories: Vec<String>,
}

impl Default for ImagePattern {
    fn default() -> Self {
        Self {
            repositories: vec!["octopusdeploy/octopusdeploy".to_string()],
        }
    }
}

impl ImagePattern {
    pub fn matches(&self, image: &str) -> bool {
        let (repository, _) = crate::twin::version::split_image(image);
        self.repositories.iter().any(|r| {
            repository == r
                || repository
                    .strip_suffix(r.as_str())
                    .is_some_and(|head| head.ends_with('/'))
        })
    }
}

pub(crate) mod millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

pub(crate) mod millis_opt {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_millis))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_pattern_matches_repository_paths_only() {
        let p = ImagePattern::default();
        assert!(p.matches("octopusdeploy/octopusdeploy:2024.1.1"));
        assert!(p.matches("docker.io/octopusdeploy/octopusdeploy:2024.1.1-hardened"));
        assert!(!p.matches("evil-octopusdeploy/octopusdeploy:2024.1.1"));
        assert!(!p.matches("octopusdeploy/tentacle:8.0.0"));
    }

    #[test]
    fn timing_round_trips_as_milliseconds() {
        let json = serde_json::json!({"start_delay_ms": 250, "migration_time_ms": 1000});
        let t: Timing = serde_json::from_value(json).unwrap_or_default();
        assert_eq!(t.start_delay, Duration::from_millis(250));
        assert_eq!(t.migration_time, Duration::from_secs(1));
        assert_eq!(t.default_task_cap, 5);
        let back = serde_json::to_value(&t).unwrap_or_default();
        assert_eq!(back["start_delay_ms"], 250);
    }
}
