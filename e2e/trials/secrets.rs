//! The secret scan: the values of the Secrets the cluster references (API key, Master
//! Key, database connection string), read back from the API server, must never appear in
//! the operator's logs, in any Event of the namespace, or in any status the trial saw.

use std::collections::BTreeSet;
use std::path::PathBuf;

use anyhow::{Context as _, Result};
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use octopus_e2e::scenario::Scenario;
use octopus_operator::api::OctopusCluster;

/// The (Secret, key) pairs `scenario::spec` references.
const REFERENCED: [(&str, &str); 3] = [
    ("octopus", "apiKey"),
    ("octopus", "masterKey"),
    ("octopus-db", "connectionString"),
];

/// Secret values and where they were found.
pub struct Scan {
    /// (what, value)
    values: Vec<(String, String)>,
    /// "what in where", each once.
    hits: BTreeSet<String>,
}

impl Scan {
    /// Reads the values from the scenario's Secrets.
    pub async fn of(s: &Scenario) -> Result<Self> {
        let api: Api<Secret> = s.ns.api();
        let mut values = Vec::new();
        for (name, key) in REFERENCED {
            let secret = api.get(name).await?;
            let value = secret
                .data
                .as_ref()
                .and_then(|d| d.get(key))
                .map(|v| String::from_utf8_lossy(&v.0).into_owned())
                .with_context(|| format!("Secret {name} has no {key}"))?;
            values.push((format!("{name}/{key}"), value));
        }
        Ok(Self {
            values,
            hits: BTreeSet::new(),
        })
    }

    fn look(&mut self, text: &str, place: &str) {
        for (what, value) in &self.values {
            if text.contains(value.as_str()) {
                self.hits.insert(format!("{what} in {place}"));
            }
        }
    }

    /// A status the trial read.
    pub fn status(&mut self, c: &OctopusCluster) {
        let text = serde_json::to_string(&c.status).unwrap_or_default();
        self.look(&text, "OctopusCluster status");
    }

    /// Every Event of the namespace (both APIs), whatever it is about.
    pub async fn events(&mut self, s: &Scenario) -> Result<()> {
        let new: Api<k8s_openapi::api::events::v1::Event> = s.ns.api();
        let text = serde_json::to_string(&new.list(&Default::default()).await?.items)?;
        self.look(&text, "Events (events.k8s.io/v1)");
        let core: Api<k8s_openapi::api::core::v1::Event> = s.ns.api();
        let text = serde_json::to_string(&core.list(&Default::default()).await?.items)?;
        self.look(&text, "Events (v1)");
        Ok(())
    }

    /// The operator processes' logs.
    pub fn logs(&mut self, logs: &[PathBuf]) {
        for log in logs {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            self.look(&text, &format!("operator log {}", log.display()));
        }
    }

    pub fn hits(&self) -> Vec<String> {
        self.hits.iter().cloned().collect()
    }
}
