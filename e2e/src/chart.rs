//! The chart as data for the tests that read it: `helm template` output parsed into
//! documents, and the permissions its bindings grant a ServiceAccount ([`Grant`]s), for
//! the offline RBAC check (e2e/tests/chart.rs) and the audit-log comparison
//! (e2e/tests/rbac_audit.rs).

use std::collections::BTreeSet;

use anyhow::{Context, Result, ensure};
use serde::Deserialize;
use serde_json::Value;

use crate::helm::{chart_dir, helm};

/// The scope of a permission granted by a ClusterRoleBinding: every namespace.
pub const CLUSTER: &str = "<cluster>";

/// `helm template` of the chart for `release` in `namespace` with `--set` values.
pub fn render(release: &str, namespace: &str, set: &[&str]) -> Result<String> {
    let chart = chart_dir();
    let mut args = vec![
        "template".into(),
        release.into(),
        chart.into_os_string(),
        "--namespace".into(),
        namespace.into(),
    ];
    for value in set {
        args.push("--set".into());
        args.push((*value).into());
    }
    helm(args)
}

/// Every document of a multi-document YAML stream, empty ones dropped.
pub fn documents(yaml: &str) -> Result<Vec<Value>> {
    let mut docs = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(yaml) {
        let value = Value::deserialize(doc).context("rendered YAML does not parse")?;
        if !value.is_null() {
            docs.push(value);
        }
    }
    Ok(docs)
}

pub fn kind_of(doc: &Value) -> &str {
    doc["kind"].as_str().unwrap_or_default()
}

pub fn name_of(doc: &Value) -> &str {
    doc["metadata"]["name"].as_str().unwrap_or_default()
}

/// The strings of a JSON array (nothing when it is not one).
pub fn strings(value: &Value) -> Vec<&str> {
    value
        .as_array()
        .map(|items| items.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// One permission: in `scope` (a namespace, or [`CLUSTER`]) the verb on group/resource
/// (`resource` or `resource/subresource`, as RBAC rules name them).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Grant {
    pub scope: String,
    pub group: String,
    pub resource: String,
    pub verb: String,
}

/// What the rendered bindings grant the ServiceAccount `namespace/name`.
pub fn rendered_grants(docs: &[Value], namespace: &str, name: &str) -> Result<BTreeSet<Grant>> {
    let mut set = BTreeSet::new();
    for binding in docs
        .iter()
        .filter(|d| matches!(kind_of(d), "ClusterRoleBinding" | "RoleBinding"))
    {
        let bound = binding["subjects"].as_array().is_some_and(|subjects| {
            subjects.iter().any(|s| {
                s["kind"] == "ServiceAccount" && s["name"] == name && s["namespace"] == namespace
            })
        });
        if !bound {
            continue;
        }
        let binding_namespace = binding["metadata"]["namespace"].as_str();
        let scope = match kind_of(binding) {
            "ClusterRoleBinding" => CLUSTER.to_owned(),
            _ => binding_namespace
                .with_context(|| format!("RoleBinding {} has no namespace", name_of(binding)))?
                .to_owned(),
        };
        let role_kind = binding["roleRef"]["kind"].as_str().unwrap_or_default();
        let role_name = binding["roleRef"]["name"].as_str().unwrap_or_default();
        let role = docs
            .iter()
            .find(|d| {
                kind_of(d) == role_kind
                    && name_of(d) == role_name
                    && (role_kind == "ClusterRole"
                        || d["metadata"]["namespace"].as_str() == binding_namespace)
            })
            .with_context(|| {
                format!(
                    "{} refers to {role_kind} {role_name}, which is not rendered",
                    name_of(binding)
                )
            })?;
        for rule in role["rules"].as_array().into_iter().flatten() {
            ensure!(
                rule.get("resourceNames").is_none() && rule.get("nonResourceURLs").is_none(),
                "{role_kind} {role_name}: unexpected rule {rule}"
            );
            for group in strings(&rule["apiGroups"]) {
                for resource in strings(&rule["resources"]) {
                    for verb in strings(&rule["verbs"]) {
                        set.insert(Grant {
                            scope: scope.clone(),
                            group: group.to_owned(),
                            resource: resource.to_owned(),
                            verb: verb.to_owned(),
                        });
                    }
                }
            }
        }
    }
    Ok(set)
}
