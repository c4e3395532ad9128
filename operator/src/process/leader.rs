//! Leader election on a `coordination.k8s.io/v1` Lease, with kube-lease-manager.
//!
//! The crate takes the Lease when it is free or expired and renews it `renew` after each
//! renewal (its "grace" is `duration - renew`: the clock skew it tolerates). Rights it
//! needs: `get`, `create` and `patch` on leases in the Lease's namespace.
//!
//! The Lease's requests use their own client whose timeouts are the grace: a renewal that
//! hangs fails before the Lease expires, so a leader cut off from the API server learns it
//! may have lost the Lease no later than the others may take it.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder, LeaseManagerError};

/// Settings of `octopus-operator run --leader-elect`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseSettings {
    /// Name of the Lease.
    pub name: String,
    /// Namespace of the Lease (`None`: the client's default namespace).
    pub namespace: Option<String>,
    /// Who this process is (pod name, or host name and pid).
    pub identity: String,
    /// How long a Lease stays valid after its last renewal.
    pub duration: Duration,
    /// How often the leader renews it.
    pub renew: Duration,
}

impl LeaseSettings {
    /// Duration and grace in whole seconds, as the Lease API counts them.
    pub fn seconds(&self) -> Result<(u64, u64), String> {
        let whole = |d: Duration, what: &str| {
            if d.subsec_nanos() != 0 || d.is_zero() {
                Err(format!(
                    "{what} must be a whole number of seconds, at least 1s"
                ))
            } else {
                Ok(d.as_secs())
            }
        };
        let duration = whole(self.duration, "lease duration")?;
        let renew = whole(self.renew, "lease renew period")?;
        if renew >= duration {
            return Err(format!(
                "lease renew period ({renew}s) must be shorter than the lease duration ({duration}s)"
            ));
        }
        Ok((duration, duration - renew))
    }
}

/// The default identity of a process outside a pod: host name and process id.
pub fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    format!("{host}-{}", std::process::id())
}

/// One process's part in the election.
pub struct Election {
    manager: LeaseManager,
    leases: Api<Lease>,
    settings: LeaseSettings,
    namespace: String,
}

impl Election {
    /// Prepares the election (creates the Lease if missing). `config` is the API server
    /// configuration; the Lease gets its own client with timeouts of one grace period.
    pub async fn join(config: &kube::Config, settings: LeaseSettings) -> Result<Self, String> {
        let (duration, grace) = settings.seconds()?;
        let mut config = config.clone();
        let timeout = Some(Duration::from_secs(grace));
        config.connect_timeout = timeout;
        config.read_timeout = timeout;
        config.write_timeout = timeout;
        let client = kube::Client::try_from(config).map_err(|e| format!("Lease client: {e}"))?;
        let namespace = settings
            .namespace
            .clone()
            .unwrap_or_else(|| client.default_namespace().to_string());
        let manager = LeaseManagerBuilder::new(client.clone(), &settings.name)
            .with_namespace(&namespace)
            .with_identity(&settings.identity)
            .with_duration(duration)
            .with_grace(grace)
            .with_field_manager(format!("octopus-operator-{}", settings.identity))
            .build()
            .await
            .map_err(|e| format!("Lease {namespace}/{}: {e}", settings.name))?;
        Ok(Self {
            manager,
            leases: Api::namespaced(client, &namespace),
            settings,
            namespace,
        })
    }

    /// `namespace/name` of the Lease.
    pub fn lease(&self) -> String {
        format!("{}/{}", self.namespace, self.settings.name)
    }

    /// How often the holder renews: how often a standby looks at the Lease.
    pub fn renew_period(&self) -> Duration {
        self.settings.renew
    }

    /// Whether another process holds an unexpired Lease now (read by a replica that does
    /// not lead: the crate only speaks when this process's leadership changes).
    pub async fn held_by_another(&self) -> Result<Option<String>, kube::Error> {
        let lease = self.leases.get(&self.settings.name).await?;
        let Some(spec) = lease.spec else {
            return Ok(None);
        };
        let (Some(holder), Some(renewed), Some(seconds)) = (
            spec.holder_identity,
            spec.renew_time,
            spec.lease_duration_seconds,
        ) else {
            return Ok(None);
        };
        let expires = renewed
            .0
            .checked_add(jiff::SignedDuration::from_secs(i64::from(seconds)))
            .ok();
        let valid = expires.is_some_and(|e| e > jiff::Timestamp::now());
        Ok((valid && holder != self.settings.identity).then_some(holder))
    }

    /// Waits until this process's leadership changes and says whether it now leads. While
    /// it leads this keeps renewing the Lease, so it must be polled all along.
    pub async fn changed(&self) -> Result<bool, LeaseManagerError> {
        self.manager.changed().await
    }

    /// Gives the Lease up (if held), so another replica need not wait for it to expire.
    pub async fn release(&self) -> Result<(), LeaseManagerError> {
        self.manager.release().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(duration: u64, renew_ms: u64) -> LeaseSettings {
        LeaseSettings {
            name: "octopus-operator".into(),
            namespace: None,
            identity: "a".into(),
            duration: Duration::from_secs(duration),
            renew: Duration::from_millis(renew_ms),
        }
    }

    #[test]
    fn grace_is_what_the_renew_period_leaves_of_the_duration() {
        assert_eq!(settings(15, 10_000).seconds(), Ok((15, 5)));
        assert_eq!(settings(6, 4_000).seconds(), Ok((6, 2)));
    }

    #[test]
    fn unusable_periods_are_refused_with_a_reason() {
        let e = settings(10, 10_000).seconds().unwrap_err();
        assert!(e.contains("must be shorter"), "{e}");
        let e = settings(10, 1_500).seconds().unwrap_err();
        assert!(e.contains("whole number of seconds"), "{e}");
        let e = settings(10, 0).seconds().unwrap_err();
        assert!(e.contains("at least 1s"), "{e}");
    }

    #[test]
    fn a_host_process_is_named_by_host_and_pid() {
        let id = default_identity();
        assert!(id.ends_with(&format!("-{}", std::process::id())), "{id}");
    }
}
