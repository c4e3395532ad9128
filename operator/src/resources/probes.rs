//! Health probes of the Octopus Server container, after Octopus's own Helm chart
//! (charts/octopus-deploy): readiness on `/api/serverstatus/hosted/internal`, liveness and
//! startup on `/api/octopusservernodes/ping`.
//!
//! The ping answers 418 while the node is drained (or Octopus thinks it offline). A drained
//! node is healthy and is finishing its tasks; killing it would fail them, which is the one
//! thing draining exists to prevent. An `httpGet` probe counts only 200-399 as success, so
//! liveness and startup run `curl` inside the container and accept 2xx or 418, as the
//! official chart does (its image ships `sh` and `curl`). Readiness needs no such care: a
//! plain `httpGet` on the readiness endpoint, which fails on anything but success.
//!
//! The startup probe is generous: the first node of a schema upgrade migrates the database
//! before it serves anything, and a restart in the middle rolls the migration back and
//! starts it over. It allows at least `upgrade.nodeReadyTimeout`, so the operator's own
//! timeout (a Degraded condition and a stop) fires before the kubelet would restart it.

use std::time::Duration;

use k8s_openapi::api::core::v1::{ExecAction, HTTPGetAction, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::names::{WEB_PORT, WEB_PORT_NAME};

/// Readiness endpoint: succeeds once the node serves requests.
pub const READINESS_PATH: &str = "/api/serverstatus/hosted/internal";
/// Liveness and startup endpoint: 200, or 418 when the node is drained.
pub const PING_PATH: &str = "/api/octopusservernodes/ping";

/// Period of the startup probe.
const STARTUP_PERIOD_SECONDS: i32 = 10;
/// The shortest time the startup probe allows, as Octopus's chart does (30 x 60 s).
const MIN_STARTUP: Duration = Duration::from_secs(30 * 60);

/// Ready when the readiness endpoint answers 2xx/3xx. Checked every 10 s so a node that
/// stops serving leaves the client Service within half a minute.
pub fn readiness() -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(READINESS_PATH.to_owned()),
            port: IntOrString::String(WEB_PORT_NAME.to_owned()),
            scheme: Some("HTTP".to_owned()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(10),
        timeout_seconds: Some(5),
        failure_threshold: Some(3),
        ..Probe::default()
    }
}

/// Alive while the ping answers 2xx or 418; restarted after five minutes without (10
/// failures, 30 s apart), as Octopus's chart does.
pub fn liveness() -> Probe {
    Probe {
        exec: Some(ping_accepting_drained()),
        period_seconds: Some(30),
        timeout_seconds: Some(5),
        failure_threshold: Some(10),
        ..Probe::default()
    }
}

/// Started once the ping answers 2xx or 418; allowed `max(node_ready_timeout, 30m)`.
pub fn startup(node_ready_timeout: Duration) -> Probe {
    let budget = node_ready_timeout.max(MIN_STARTUP).as_secs();
    let period = u64::from(STARTUP_PERIOD_SECONDS.unsigned_abs());
    let failures = i32::try_from(budget.div_ceil(period)).unwrap_or(i32::MAX);
    Probe {
        exec: Some(ping_accepting_drained()),
        period_seconds: Some(STARTUP_PERIOD_SECONDS),
        timeout_seconds: Some(5),
        failure_threshold: Some(failures),
        ..Probe::default()
    }
}

/// `curl` the ping and succeed on 2xx or 418. A refused connection gives code 000: failure.
fn ping_accepting_drained() -> ExecAction {
    let script = format!(
        "code=$(curl --silent --max-time 4 --output /dev/null --write-out '%{{http_code}}' \
         http://localhost:{WEB_PORT}{PING_PATH}); \
         [ \"$code\" -ge 200 ] && [ \"$code\" -le 299 ] || [ \"$code\" -eq 418 ]"
    );
    ExecAction {
        command: Some(vec!["/bin/sh".to_owned(), "-c".to_owned(), script]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script(probe: &Probe) -> String {
        probe
            .exec
            .as_ref()
            .and_then(|e| e.command.as_ref())
            .and_then(|c| c.last().cloned())
            .expect("exec probe with a script")
    }

    #[test]
    fn readiness_gets_the_readiness_endpoint_on_the_web_port() {
        let probe = readiness();
        let get = probe.http_get.expect("httpGet probe");
        assert_eq!(
            get.path.as_deref(),
            Some("/api/serverstatus/hosted/internal")
        );
        assert_eq!(get.port, IntOrString::String("web".to_owned()));
    }

    #[test]
    fn liveness_and_startup_accept_a_drained_node() {
        for probe in [liveness(), startup(Duration::from_secs(60))] {
            assert!(probe.http_get.is_none(), "httpGet would fail on 418");
            let script = script(&probe);
            assert!(
                script.contains("http://localhost:8080/api/octopusservernodes/ping"),
                "{script}"
            );
            assert!(script.contains("-eq 418"), "{script}");
        }
    }

    /// Runs the probe script with a fake `curl` printing `code`: proves the shell logic
    /// (2xx and 418 succeed; 000, 3xx, 5xx and other 4xx fail).
    #[test]
    fn ping_script_accepts_2xx_and_418_only() {
        let dir = std::env::temp_dir().join(format!("octo-probe-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let curl = dir.join("curl");
        std::fs::write(&curl, "#!/bin/sh\nprintf '%s' \"$FAKE_CODE\"\n").expect("fake curl");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&curl, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        let command = liveness().exec.and_then(|e| e.command).expect("command");
        let path = format!(
            "{}:{}",
            dir.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        for (code, healthy) in [
            ("200", true),
            ("204", true),
            ("418", true),
            ("000", false),
            ("302", false),
            ("404", false),
            ("500", false),
            ("503", false),
        ] {
            let status = std::process::Command::new(&command[0])
                .args(&command[1..])
                .env("PATH", &path)
                .env("FAKE_CODE", code)
                .status()
                .expect("sh runs");
            assert_eq!(status.success(), healthy, "HTTP {code}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn startup_allows_at_least_thirty_minutes() {
        let probe = startup(Duration::from_secs(60));
        let allowed = probe.period_seconds.unwrap_or(10) * probe.failure_threshold.unwrap_or(3);
        assert_eq!(allowed, 30 * 60);
    }

    #[test]
    fn startup_outlasts_the_node_ready_timeout() {
        let probe = startup(Duration::from_secs(2 * 3600 + 5));
        let allowed = probe.period_seconds.unwrap_or(10) * probe.failure_threshold.unwrap_or(3);
        assert!(allowed >= 2 * 3600 + 5, "{allowed}");
        assert!(allowed < 2 * 3600 + 5 + 10, "{allowed}");
    }

    #[test]
    fn absurd_timeouts_do_not_overflow() {
        let probe = startup(Duration::from_secs(u64::MAX));
        assert_eq!(probe.failure_threshold, Some(i32::MAX));
    }
}
