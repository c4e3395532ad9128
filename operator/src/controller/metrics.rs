//! Prometheus metrics of the operator (names agreed in the chart's alerts and dashboard):
//! the reconciler's own figures, one set of series per OctopusCluster taken from the status
//! the operator writes, Octopus API calls by route template and status, and whether this
//! process leads. Label values are stable names (action names, error variants, reasons,
//! route templates) or the cluster's own name, versions and phase; never Secret contents.
//!
//! Per-cluster series are replaced as the status moves (a changed reason or step removes
//! the old series) and removed when the cluster is deleted.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::conditions;
use crate::api::OctopusClusterStatus;
use crate::octopus::CallObserver;

/// The content type of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NameLabel {
    name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClusterLabels {
    namespace: String,
    name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InfoLabels {
    namespace: String,
    name: String,
    current_version: String,
    desired_version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    namespace: String,
    name: String,
    phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConditionLabels {
    namespace: String,
    name: String,
    r#type: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    namespace: String,
    name: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StepLabels {
    namespace: String,
    name: String,
    step: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpgradeLabels {
    strategy: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KubeRequestLabels {
    verb: String,
    resource: String,
}

/// The label sets one cluster's series were last written with, so a change removes the
/// old series and a deletion removes them all.
#[derive(Clone, Debug, Default, PartialEq)]
struct ClusterSeries {
    info: Option<InfoLabels>,
    phase: Option<PhaseLabels>,
    conditions: Vec<ConditionLabels>,
    blocked: Option<ReasonLabels>,
    step: Option<StepLabels>,
    upgrade_started: bool,
    last_backup: bool,
}

type GaugeF = Gauge<f64, AtomicU64>;

/// The per-cluster families.
#[derive(Default)]
struct ClusterFamilies {
    info: Family<InfoLabels, Gauge>,
    phase: Family<PhaseLabels, Gauge>,
    condition: Family<ConditionLabels, Gauge>,
    blocked: Family<ReasonLabels, Gauge>,
    step: Family<StepLabels, Gauge>,
    upgrade_started: Family<ClusterLabels, GaugeF>,
    last_backup: Family<ClusterLabels, GaugeF>,
}

/// The operator's metrics and their registry.
pub struct Metrics {
    registry: Mutex<Registry>,
    reconciles: Counter,
    failures: Family<NameLabel, Counter>,
    actions: Family<NameLabel, Counter>,
    duration: Histogram,
    clusters: ClusterFamilies,
    series: Mutex<HashMap<(String, String), ClusterSeries>>,
    upgrade_duration: Family<UpgradeLabels, Histogram>,
    octopus_requests: Family<RequestLabels, Counter>,
    kube_requests: Family<KubeRequestLabels, Counter>,
    leader: Gauge,
}

fn upgrade_histogram() -> Histogram {
    // 10 s to about 11 h: a patch roll of a small cluster to a long stop-the-world.
    Histogram::new(exponential_buckets(10.0, 2.0, 13))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("octopus_operator");
        let reconciles = Counter::default();
        let failures = Family::<NameLabel, Counter>::default();
        let actions = Family::<NameLabel, Counter>::default();
        let duration = Histogram::new(exponential_buckets(0.005, 2.0, 12));
        let clusters = ClusterFamilies::default();
        let upgrade_duration = Family::<UpgradeLabels, Histogram>::new_with_constructor(
            upgrade_histogram as fn() -> _,
        );
        let octopus_requests = Family::<RequestLabels, Counter>::default();
        let kube_requests = Family::<KubeRequestLabels, Counter>::default();
        let leader = Gauge::default();
        registry.register("reconciles", "Reconciles run", reconciles.clone());
        registry.register(
            "reconcile_failures",
            "Reconciles that failed, by error",
            failures.clone(),
        );
        registry.register("actions", "Actions taken, by action", actions.clone());
        registry.register(
            "reconcile_duration_seconds",
            "Time one reconcile takes",
            duration.clone(),
        );
        let c = &clusters;
        registry.register(
            "cluster_info",
            "An OctopusCluster with its current (status) and desired (spec) version",
            c.info.clone(),
        );
        registry.register(
            "cluster_phase",
            "1 for the cluster's current phase",
            c.phase.clone(),
        );
        registry.register(
            "cluster_condition",
            "1 when the condition is True, 0 when False, with its reason",
            c.condition.clone(),
        );
        registry.register(
            "cluster_blocked",
            "1 while UpgradeBlocked is True, with the blocking reason",
            c.blocked.clone(),
        );
        registry.register(
            "upgrade_step",
            "1 for the step a running upgrade is carrying out",
            c.step.clone(),
        );
        registry.register(
            "upgrade_started_timestamp_seconds",
            "When the running upgrade began (Unix time)",
            c.upgrade_started.clone(),
        );
        registry.register(
            "last_backup_timestamp_seconds",
            "When the last backup before a schema-changing upgrade succeeded (Unix time)",
            c.last_backup.clone(),
        );
        registry.register(
            "upgrade_duration_seconds",
            "Time from an upgrade's start to its end (succeeded) or its stop (failed)",
            upgrade_duration.clone(),
        );
        registry.register(
            "octopus_requests",
            "Octopus API requests by method, route template and HTTP status (or error)",
            octopus_requests.clone(),
        );
        registry.register(
            "kubernetes_requests",
            "Kubernetes API requests the controller sent, by verb and resource (writes are create, update, patch, delete)",
            kube_requests.clone(),
        );
        registry.register(
            "leader",
            "1 when this process holds the leader lease (and so reconciles)",
            leader.clone(),
        );
        Self {
            registry: Mutex::new(registry),
            reconciles,
            failures,
            actions,
            duration,
            clusters,
            series: Mutex::new(HashMap::new()),
            upgrade_duration,
            octopus_requests,
            kube_requests,
            leader,
        }
    }
}

/// Observes a reconcile's duration when dropped.
pub struct Timer<'a> {
    start: Instant,
    metrics: &'a Metrics,
}

impl Drop for Timer<'_> {
    fn drop(&mut self) {
        self.metrics
            .duration
            .observe(self.start.elapsed().as_secs_f64());
    }
}

fn seconds(t: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time) -> f64 {
    t.0.as_millisecond() as f64 / 1000.0
}

impl Metrics {
    pub fn reconcile_timer(&self) -> Timer<'_> {
        self.reconciles.inc();
        Timer {
            start: Instant::now(),
            metrics: self,
        }
    }

    pub fn failure(&self, label: &str) {
        self.failures
            .get_or_create(&NameLabel { name: label.into() })
            .inc();
    }

    pub fn action(&self, name: &str) {
        self.actions
            .get_or_create(&NameLabel { name: name.into() })
            .inc();
    }

    /// One Kubernetes API request the controller's client sent.
    pub fn kube_request(&self, verb: &str, resource: &str) {
        self.kube_requests
            .get_or_create(&KubeRequestLabels {
                verb: verb.to_string(),
                resource: resource.to_string(),
            })
            .inc();
    }

    /// Whether this process leads.
    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// Sets one cluster's series from the status just written (`previous` is the status it
    /// replaced: an upgrade that ended or stopped in between is observed once).
    pub fn cluster_status(
        &self,
        namespace: &str,
        name: &str,
        desired_version: &str,
        previous: &OctopusClusterStatus,
        status: &OctopusClusterStatus,
    ) {
        self.upgrade_outcome(previous, status);
        let key = (namespace.to_string(), name.to_string());
        let want = self.series_for(namespace, name, desired_version, status);
        let mut series = self
            .series
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let old = series.remove(&key).unwrap_or_default();
        self.remove_series(namespace, name, &old, Some(&want));
        self.write_series(namespace, name, &want, status);
        series.insert(key, want);
    }

    /// Removes every series of a cluster (it is being deleted).
    pub fn forget_cluster(&self, namespace: &str, name: &str) {
        let old = self
            .series
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&(namespace.to_string(), name.to_string()));
        if let Some(old) = old {
            self.remove_series(namespace, name, &old, None);
        }
    }

    fn upgrade_outcome(&self, previous: &OctopusClusterStatus, status: &OctopusClusterStatus) {
        let Some(up) = &status.upgrade else {
            return;
        };
        let Some(started) = &up.started_at else {
            return;
        };
        let before = previous
            .upgrade
            .as_ref()
            .filter(|b| b.started_at == up.started_at);
        let (result, end) = if up.finished_at.is_some()
            && before.is_none_or(|b| b.finished_at.is_none())
        {
            ("succeeded", up.finished_at.as_ref())
        } else if up.stopped_reason.is_some() && before.is_none_or(|b| b.stopped_reason.is_none()) {
            ("failed", None)
        } else {
            return;
        };
        let end = end.map_or_else(
            || jiff::Timestamp::now().as_millisecond() as f64 / 1000.0,
            seconds,
        );
        self.upgrade_duration
            .get_or_create(&UpgradeLabels {
                strategy: up.strategy.clone().unwrap_or_else(|| "none".into()),
                result: result.into(),
            })
            .observe((end - seconds(started)).max(0.0));
    }

    fn series_for(
        &self,
        namespace: &str,
        name: &str,
        desired_version: &str,
        status: &OctopusClusterStatus,
    ) -> ClusterSeries {
        let ns = || namespace.to_string();
        let nm = || name.to_string();
        let condition = |type_: &str| status.conditions.iter().find(|c| c.type_ == type_);
        let running = status.upgrade.as_ref().filter(|u| u.finished_at.is_none());
        ClusterSeries {
            info: Some(InfoLabels {
                namespace: ns(),
                name: nm(),
                current_version: status.current_version.clone().unwrap_or_default(),
                desired_version: desired_version.to_string(),
            }),
            phase: status.phase.as_ref().map(|phase| PhaseLabels {
                namespace: ns(),
                name: nm(),
                phase: phase.clone(),
            }),
            conditions: conditions::ALL
                .iter()
                .filter_map(|t| condition(t))
                .filter(|c| c.status == "True" || c.status == "False")
                .map(|c| ConditionLabels {
                    namespace: ns(),
                    name: nm(),
                    r#type: c.type_.clone(),
                    reason: c.reason.clone(),
                })
                .collect(),
            blocked: condition(conditions::UPGRADE_BLOCKED)
                .filter(|c| c.status == "True")
                .map(|c| ReasonLabels {
                    namespace: ns(),
                    name: nm(),
                    reason: c.reason.clone(),
                }),
            step: running.and_then(|u| u.step.clone()).map(|step| StepLabels {
                namespace: ns(),
                name: nm(),
                step,
            }),
            upgrade_started: running.is_some_and(|u| u.started_at.is_some()),
            last_backup: status
                .last_backup
                .as_ref()
                .is_some_and(|b| b.completed_at.is_some()),
        }
    }

    fn write_series(
        &self,
        namespace: &str,
        name: &str,
        want: &ClusterSeries,
        status: &OctopusClusterStatus,
    ) {
        let c = &self.clusters;
        if let Some(l) = &want.info {
            c.info.get_or_create(l).set(1);
        }
        if let Some(l) = &want.phase {
            c.phase.get_or_create(l).set(1);
        }
        for l in &want.conditions {
            let on = status
                .conditions
                .iter()
                .any(|s| s.type_ == l.r#type && s.status == "True");
            c.condition.get_or_create(l).set(i64::from(on));
        }
        if let Some(l) = &want.blocked {
            c.blocked.get_or_create(l).set(1);
        }
        if let Some(l) = &want.step {
            c.step.get_or_create(l).set(1);
        }
        let key = ClusterLabels {
            namespace: namespace.to_string(),
            name: name.to_string(),
        };
        let started = status.upgrade.as_ref().and_then(|u| u.started_at.as_ref());
        if let (true, Some(t)) = (want.upgrade_started, started) {
            c.upgrade_started.get_or_create(&key).set(seconds(t));
        }
        let backup = status
            .last_backup
            .as_ref()
            .and_then(|b| b.completed_at.as_ref());
        if let (true, Some(t)) = (want.last_backup, backup) {
            c.last_backup.get_or_create(&key).set(seconds(t));
        }
    }

    /// Removes the series of `old` that `want` does not keep (all of them without `want`).
    fn remove_series(
        &self,
        namespace: &str,
        name: &str,
        old: &ClusterSeries,
        want: Option<&ClusterSeries>,
    ) {
        fn drop_if<S: Clone + Eq + std::hash::Hash, M>(
            family: &Family<S, M>,
            old: &Option<S>,
            keep: Option<&Option<S>>,
        ) {
            if let Some(l) = old
                && keep.is_none_or(|k| k.as_ref() != Some(l))
            {
                family.remove(l);
            }
        }
        let c = &self.clusters;
        drop_if(&c.info, &old.info, want.map(|w| &w.info));
        drop_if(&c.phase, &old.phase, want.map(|w| &w.phase));
        drop_if(&c.blocked, &old.blocked, want.map(|w| &w.blocked));
        drop_if(&c.step, &old.step, want.map(|w| &w.step));
        for l in &old.conditions {
            if want.is_none_or(|w| !w.conditions.contains(l)) {
                c.condition.remove(l);
            }
        }
        let key = ClusterLabels {
            namespace: namespace.to_string(),
            name: name.to_string(),
        };
        if old.upgrade_started && want.is_none_or(|w| !w.upgrade_started) {
            c.upgrade_started.remove(&key);
        }
        if old.last_backup && want.is_none_or(|w| !w.last_backup) {
            c.last_backup.remove(&key);
        }
    }

    /// The OpenMetrics text exposition (serve it with [`CONTENT_TYPE`]).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let registry = self
            .registry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if prometheus_client::encoding::text::encode(&mut out, &registry).is_err() {
            out.clear();
        }
        out
    }
}

impl CallObserver for Metrics {
    fn observed(&self, method: &str, route: &'static str, status: Option<u16>) {
        self.octopus_requests
            .get_or_create(&RequestLabels {
                method: method.to_string(),
                route: route.to_string(),
                status: status.map_or_else(|| "error".to_string(), |s| s.to_string()),
            })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

    use super::*;
    use crate::api::{BackupStatus, UpgradeStatus};

    fn time(s: &str) -> Time {
        Time(s.parse().expect("timestamp"))
    }

    fn condition(type_: &str, on: bool, reason: &str) -> Condition {
        Condition {
            type_: type_.into(),
            status: if on { "True" } else { "False" }.into(),
            reason: reason.into(),
            message: String::new(),
            observed_generation: Some(1),
            last_transition_time: time("2026-01-01T00:00:00Z"),
        }
    }

    fn rolling(step: &str) -> OctopusClusterStatus {
        OctopusClusterStatus {
            current_version: Some("2024.1.100".into()),
            phase: Some("Upgrading".into()),
            conditions: vec![
                condition("Ready", true, "AllNodesReady"),
                condition("Progressing", true, "Upgrading"),
                condition("UpgradeBlocked", false, "NotBlocked"),
            ],
            upgrade: Some(UpgradeStatus {
                from: "2024.1.100".into(),
                to: "2024.1.200".into(),
                change: "patch".into(),
                strategy: Some("rolling".into()),
                step: Some(step.into()),
                started_at: Some(time("2026-01-01T00:00:00Z")),
                ..UpgradeStatus::default()
            }),
            last_backup: Some(BackupStatus {
                job_name: "b".into(),
                from_version: "2024.1.0".into(),
                to_version: "2024.1.100".into(),
                attempt: None,
                master_key_secret: None,
                completed_at: Some(time("2025-12-31T00:00:00Z")),
            }),
            ..OctopusClusterStatus::default()
        }
    }

    fn lines(m: &Metrics, family: &str) -> Vec<String> {
        let prefix = format!("octopus_operator_{family}");
        m.encode()
            .lines()
            .filter(|l| l.starts_with(&prefix))
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn a_cluster_series_follow_its_status() {
        let m = Metrics::default();
        let none = OctopusClusterStatus::default();
        m.cluster_status("ns", "octo", "2024.1.200", &none, &rolling("drain"));
        assert_eq!(
            lines(&m, "cluster_info"),
            [
                r#"octopus_operator_cluster_info{namespace="ns",name="octo",current_version="2024.1.100",desired_version="2024.1.200"} 1"#
            ]
        );
        assert_eq!(
            lines(&m, "upgrade_step"),
            [r#"octopus_operator_upgrade_step{namespace="ns",name="octo",step="drain"} 1"#]
        );
        assert!(lines(&m, "cluster_condition").contains(
            &r#"octopus_operator_cluster_condition{namespace="ns",name="octo",type="UpgradeBlocked",reason="NotBlocked"} 0"#.to_string()
        ));
        assert_eq!(
            lines(&m, "upgrade_started_timestamp_seconds"),
            [
                r#"octopus_operator_upgrade_started_timestamp_seconds{namespace="ns",name="octo"} 1767225600.0"#
            ]
        );
        assert_eq!(
            lines(&m, "last_backup_timestamp_seconds"),
            [
                r#"octopus_operator_last_backup_timestamp_seconds{namespace="ns",name="octo"} 1767139200.0"#
            ]
        );

        // The step moves: the old step's series goes.
        m.cluster_status(
            "ns",
            "octo",
            "2024.1.200",
            &rolling("drain"),
            &rolling("replace"),
        );
        assert_eq!(
            lines(&m, "upgrade_step"),
            [r#"octopus_operator_upgrade_step{namespace="ns",name="octo",step="replace"} 1"#]
        );

        // Blocked: a reason series appears; the upgrade ends: step and start go, one
        // duration is observed.
        let mut done = rolling("replace");
        done.current_version = Some("2024.1.200".into());
        done.conditions[2] = condition("UpgradeBlocked", true, "MaintenanceWindowClosed");
        if let Some(up) = done.upgrade.as_mut() {
            up.finished_at = Some(time("2026-01-01T00:01:40Z"));
        }
        m.cluster_status("ns", "octo", "2024.1.200", &rolling("replace"), &done);
        m.cluster_status("ns", "octo", "2024.1.200", &done, &done);
        assert!(lines(&m, "upgrade_step").is_empty());
        assert!(lines(&m, "upgrade_started").is_empty());
        assert_eq!(
            lines(&m, "cluster_blocked"),
            [
                r#"octopus_operator_cluster_blocked{namespace="ns",name="octo",reason="MaintenanceWindowClosed"} 1"#
            ]
        );
        assert!(lines(&m, "cluster_info")[0].contains(r#"current_version="2024.1.200""#));
        let duration = lines(&m, "upgrade_duration_seconds");
        assert!(duration.contains(
            &r#"octopus_operator_upgrade_duration_seconds_count{strategy="rolling",result="succeeded"} 1"#.to_string()
        ), "{duration:?}");
        assert!(duration.contains(
            &r#"octopus_operator_upgrade_duration_seconds_sum{strategy="rolling",result="succeeded"} 100.0"#.to_string()
        ), "{duration:?}");

        // Deleted: every per-cluster series goes; the histogram stays.
        m.forget_cluster("ns", "octo");
        let text = m.encode();
        assert!(!text.contains(r#"name="octo""#), "{text}");
        assert!(text.contains("upgrade_duration_seconds_count"));
    }

    #[test]
    fn octopus_calls_and_leadership_are_counted() {
        let m = Metrics::default();
        m.observed("GET", "/api/octopusservernodes/{id}", Some(200));
        m.observed("GET", "/api/octopusservernodes/{id}", Some(200));
        m.observed("PUT", "/api/octopusservernodes/{id}", None);
        m.set_leader(true);
        let text = m.encode();
        assert!(text.contains(r#"octopus_operator_octopus_requests_total{method="GET",route="/api/octopusservernodes/{id}",status="200"} 2"#), "{text}");
        assert!(text.contains(r#"octopus_operator_octopus_requests_total{method="PUT",route="/api/octopusservernodes/{id}",status="error"} 1"#), "{text}");
        assert!(text.contains("octopus_operator_leader 1\n"), "{text}");
        assert!(text.ends_with("# EOF\n"), "OpenMetrics ends with # EOF");
    }
}
