//! The operator's own figures, read from its Prometheus text (`Metrics::encode()` in
//! process, `/metrics` of a separate process): reconciles, failures, actions by name, and
//! the reconcile duration histogram's sum and count.

use std::collections::BTreeMap;
use std::time::Duration;

const PREFIX: &str = "octopus_operator_";

/// One reading of the operator's counters.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Counters {
    pub reconciles: f64,
    pub failures: f64,
    pub actions: BTreeMap<String, f64>,
    pub duration_sum: f64,
    pub duration_count: f64,
}

impl Counters {
    /// Parses the text exposition format; lines it does not know are skipped.
    pub fn parse(text: &str) -> Self {
        let mut c = Self::default();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.trim().parse::<f64>() else {
                continue;
            };
            let (name, labels) = match series.split_once('{') {
                Some((name, labels)) => (name, labels.trim_end_matches('}')),
                None => (series, ""),
            };
            let Some(name) = name.strip_prefix(PREFIX) else {
                continue;
            };
            match name {
                "reconciles_total" => c.reconciles += value,
                "reconcile_failures_total" => c.failures += value,
                "reconcile_duration_seconds_sum" => c.duration_sum += value,
                "reconcile_duration_seconds_count" => c.duration_count += value,
                "actions_total" => {
                    *c.actions.entry(label(labels, "name")).or_default() += value;
                }
                _ => {}
            }
        }
        c
    }

    /// What happened between `before` and `self`.
    pub fn since(&self, before: &Self) -> Self {
        let mut actions = self.actions.clone();
        for (name, n) in &mut actions {
            *n -= before.actions.get(name).copied().unwrap_or(0.0);
        }
        actions.retain(|_, n| *n > 0.0);
        Self {
            reconciles: self.reconciles - before.reconciles,
            failures: self.failures - before.failures,
            actions,
            duration_sum: self.duration_sum - before.duration_sum,
            duration_count: self.duration_count - before.duration_count,
        }
    }

    /// Mean time of one reconcile.
    pub fn mean_reconcile(&self) -> Option<Duration> {
        (self.duration_count > 0.0)
            .then(|| Duration::from_secs_f64((self.duration_sum / self.duration_count).max(0.0)))
    }

    pub fn actions_total(&self) -> f64 {
        self.actions.values().sum()
    }
}

/// The value of `key="..."` in a label set (no escapes: action names are plain words).
fn label(labels: &str, key: &str) -> String {
    labels
        .split(',')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| k.trim() == key)
        .map(|(_, v)| v.trim().trim_matches('"').to_string())
        .unwrap_or_default()
}
