//! RBAC by evidence: the operator binary runs under the chart's own ServiceAccount, Role
//! and RoleBinding (rendered by `helm template` with `watchNamespace`, applied as they
//! are, the process authenticated by a token of that ServiceAccount), takes its Lease,
//! creates a 3-node cluster, rolls a patch upgrade, runs a stop-the-world schema upgrade
//! with its backup Job and Master Key copy, scales down and deletes the cluster. Then the
//! API server's audit log (e2e/controlplane/up.sh turns it on) says which verbs on which
//! resources that ServiceAccount used; they are compared with what the chart grants:
//!
//! - nothing it asked for was denied, and it used nothing the chart does not grant;
//! - every grant it never used is in [`UNUSED_BUT_NEEDED`], with the reason it is kept
//!   (the same reason stands next to the rule in charts/octopus-operator/templates/);
//! - every entry of [`UNUSED_BUT_NEEDED`] is still granted (the list cannot go stale).
//!
//! Prints the table of used against granted. Fails, never skips, without the control plane
//! or its audit log (a control plane started before up.sh wrote one is replaced by up.sh).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::Api;
use kube::api::PostParams;
use octopus_e2e::chart::{CLUSTER, Grant, documents, kind_of, render, rendered_grants};
use octopus_e2e::cluster::wait_until;
use octopus_e2e::operator_process::OperatorProcess;
use octopus_e2e::scenario::{Scenario, World, spec, twin_config};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(120);
const RELEASE: &str = "rbac";
const SERVICE_ACCOUNT: &str = "rbac-octopus-operator";

/// Granted, not used in this test's run, and kept: (group, resource, verb, why). The chart
/// says the same next to each rule.
const UNUSED_BUT_NEEDED: &[(&str, &str, &str, &str)] = &[
    (
        "octopusoperator.dev",
        "octopusclusters/finalizers",
        "update",
        "never a request: the OwnerReferencesPermissionEnforcement admission plugin checks it \
         when an owned object sets blockOwnerDeletion (clusters that enable the plugin)",
    ),
    (
        "apps",
        "statefulsets",
        "create",
        "a server-side apply that creates the object is authorized as create too; the audit \
         log records it as a patch",
    ),
    (
        "policy",
        "poddisruptionbudgets",
        "create",
        "created by server-side apply, as StatefulSets",
    ),
    (
        "",
        "services",
        "create",
        "created by server-side apply, as StatefulSets",
    ),
    (
        "batch",
        "jobs",
        "delete",
        "pruning: finished backup Jobs of earlier attempts beyond the newest three",
    ),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_uses_what_the_chart_grants_and_nothing_more() -> Result<()> {
    let s = Scenario::start_without_operator_in(World::Played, "rbac", twin_config(false)).await?;
    let audit_dir = s
        .cluster
        .kubeconfig()
        .parent()
        .context("the kubeconfig has no directory")?
        .join("audit");
    ensure!(
        audit_dir.join("audit.log").is_file(),
        "no audit log in {}: the control plane predates it; restart it (make cluster-down \
         cluster-up)",
        audit_dir.display()
    );
    let operator_ns = s.cluster.namespace("rbac-operator").await?;
    let result = run(&s, operator_ns.name(), &audit_dir).await;
    operator_ns.cleanup().await?;
    s.finish().await?;
    result
}

async fn run(s: &Scenario, operator_ns: &str, audit_dir: &Path) -> Result<()> {
    // The chart's ServiceAccount, Role and RoleBinding for this namespace, as rendered.
    let docs = documents(&render(
        RELEASE,
        operator_ns,
        &[&format!("watchNamespace={}", s.ns.name())],
    )?)?;
    let rbac: Vec<Value> = docs
        .iter()
        .filter(|d| matches!(kind_of(d), "ServiceAccount" | "Role" | "RoleBinding"))
        .cloned()
        .collect();
    ensure!(
        rbac.len() == 5,
        "expected SA, 2 Roles, 2 bindings: {rbac:?}"
    );
    let list = json!({"apiVersion": "v1", "kind": "List", "items": rbac}).to_string();
    s.cluster
        .kubectl_with_stdin(["apply", "--server-side", "-f", "-"], Some(&list))
        .await?
        .ok()?;
    let granted = rendered_grants(&docs, operator_ns, SERVICE_ACCOUNT)?;

    let kubeconfig = service_account_kubeconfig(s, operator_ns).await?;
    let flags = [
        "--leader-elect=true".to_owned(),
        format!("--leader-election-namespace={operator_ns}"),
        "--leader-election-identity=rbac-audit".to_owned(),
        "--lease-duration=6s".to_owned(),
        "--lease-renew-period=2s".to_owned(),
    ];
    let operator = OperatorProcess::start_as(s, "rbac", &flags, &kubeconfig).await?;
    let walked = walk(s).await;
    let stopped = operator.terminate(Duration::from_secs(30)).await;
    walked?;
    stopped?;

    let used = used_by(
        audit_dir,
        &format!("system:serviceaccount:{operator_ns}:{SERVICE_ACCOUNT}"),
    )?;
    ensure!(
        used.denied.is_empty(),
        "requests of the operator were denied: {:#?}",
        used.denied
    );
    print_table(&granted, &used.resources, &used.non_resource);
    let not_granted: Vec<_> = used
        .resources
        .keys()
        .filter(|g| !granted.contains(g))
        .collect();
    ensure!(
        not_granted.is_empty(),
        "used without a grant: {not_granted:#?}"
    );
    let unexplained: Vec<_> = granted
        .iter()
        .filter(|g| !used.resources.contains_key(g) && kept_because(g).is_none())
        .collect();
    ensure!(
        unexplained.is_empty(),
        "granted and never used: remove these from the chart, or justify them there and in \
         UNUSED_BUT_NEEDED: {unexplained:#?}"
    );
    for (group, resource, verb, _) in UNUSED_BUT_NEEDED {
        ensure!(
            granted
                .iter()
                .any(|g| g.group == *group && g.resource == *resource && g.verb == *verb),
            "UNUSED_BUT_NEEDED names {verb} {group}/{resource}, which the chart no longer grants"
        );
    }
    Ok(())
}

/// A kubeconfig for the ServiceAccount: the admin's cluster and CA, a fresh token.
async fn service_account_kubeconfig(s: &Scenario, namespace: &str) -> Result<PathBuf> {
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            expiration_seconds: Some(3600),
            ..TokenRequestSpec::default()
        }),
        ..TokenRequest::default()
    };
    let token = Api::<ServiceAccount>::namespaced(s.cluster.client(), namespace)
        .create_token_request(SERVICE_ACCOUNT, &PostParams::default(), &request)
        .await?
        .status
        .and_then(|s| s.token)
        .unwrap_or_default();
    ensure!(!token.is_empty(), "the TokenRequest returned no token");
    let admin = std::fs::read_to_string(s.cluster.kubeconfig())?;
    let mut config: Value = serde_yaml::from_str(&admin)?;
    config["users"] = json!([{"name": SERVICE_ACCOUNT, "user": {"token": token}}]);
    config["contexts"][0]["context"]["user"] = json!(SERVICE_ACCOUNT);
    let path = std::env::temp_dir().join(format!("octopus-e2e-{}-sa.kubeconfig", s.ns.name()));
    std::fs::write(&path, serde_yaml::to_string(&config)?)?;
    Ok(path)
}

/// Everything RBAC sees of the operator: a cluster, a patch roll, a schema upgrade with
/// its backup, a scale-down, the deletion.
async fn walk(s: &Scenario) -> Result<()> {
    s.create_cluster("octo", spec("2024.1.100", 3)).await?;
    s.wait_condition("octo", "Ready", true, Some("Ready"), WAIT)
        .await?;
    s.patch_spec("octo", json!({"version": "2024.1.200"}))
        .await?;
    finished(s, "patch", "2024.1.200").await?;
    s.patch_spec(
        "octo",
        json!({"version": "2024.2.50", "upgrade": {"approvedVersion": "2024.2.50"}}),
    )
    .await?;
    finished(s, "minor", "2024.2.50").await?;
    ensure!(
        s.jobs.runs().iter().any(|r| r.succeeded),
        "no backup Job ran"
    );
    s.patch_spec("octo", json!({"replicas": 2})).await?;
    finished(s, "scale-down", "2024.2.50").await?;
    let clusters = s.clusters();
    clusters.delete("octo", &Default::default()).await?;
    wait_until("the OctopusCluster deleted", WAIT, || async {
        Ok(clusters.get_opt("octo").await?.is_none().then_some(()))
    })
    .await?;
    Ok(())
}

/// Waits until the change `change` to `version` has finished and the cluster is Ready.
async fn finished(s: &Scenario, change: &str, version: &str) -> Result<()> {
    s.wait_for("octo", &format!("the {change} to {version}"), WAIT, |c| {
        c.status.as_ref().is_some_and(|st| {
            st.current_version.as_deref() == Some(version)
                && st
                    .upgrade
                    .as_ref()
                    .is_some_and(|u| u.change == change && u.finished_at.is_some())
        })
    })
    .await?;
    s.wait_condition("octo", "Ready", true, Some("Ready"), WAIT)
        .await?;
    Ok(())
}

/// What one user did, from the audit log: requests on resources counted by grant, other
/// requests (discovery) by path, and whatever was denied.
#[derive(Default)]
struct Used {
    resources: BTreeMap<Grant, usize>,
    non_resource: BTreeMap<String, usize>,
    denied: Vec<String>,
}

/// Reads every audit file (the current log and its rotated backup) for `user`'s requests.
fn used_by(dir: &Path, user: &str) -> Result<Used> {
    let mut used = Used::default();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        for line in text.lines() {
            let event: Value = serde_json::from_str(line)
                .with_context(|| format!("{}: not an audit event: {line}", path.display()))?;
            if event["user"]["username"] != user {
                continue;
            }
            let verb = event["verb"].as_str().unwrap_or_default();
            if event["responseStatus"]["code"] == 403 {
                used.denied.push(format!("{verb} {}", event["requestURI"]));
            }
            let Some(object) = event.get("objectRef") else {
                let uri = event["requestURI"].as_str().unwrap_or_default();
                *used
                    .non_resource
                    .entry(format!("{verb} {uri}"))
                    .or_default() += 1;
                continue;
            };
            let text = |key: &str| object[key].as_str().unwrap_or_default().to_owned();
            let mut resource = text("resource");
            if let Some(sub) = object["subresource"].as_str() {
                resource = format!("{resource}/{sub}");
            }
            let scope = object["namespace"].as_str().unwrap_or(CLUSTER).to_owned();
            let grant = Grant {
                scope,
                group: text("apiGroup"),
                resource,
                verb: verb.to_owned(),
            };
            *used.resources.entry(grant).or_default() += 1;
        }
    }
    Ok(used)
}

fn kept_because(grant: &Grant) -> Option<&'static str> {
    UNUSED_BUT_NEEDED
        .iter()
        .find(|(group, resource, verb, _)| {
            grant.group == *group && grant.resource == *resource && grant.verb == *verb
        })
        .map(|(.., why)| *why)
}

fn print_table(
    granted: &BTreeSet<Grant>,
    used: &BTreeMap<Grant, usize>,
    non_resource: &BTreeMap<String, usize>,
) {
    println!("| group | resource | verb | granted | requests | kept because |");
    println!("|---|---|---|---|---|---|");
    let all: BTreeSet<&Grant> = granted.iter().chain(used.keys()).collect();
    for g in all {
        let group = if g.group.is_empty() { "core" } else { &g.group };
        println!(
            "| {group} | {} | {} | {} | {} | {} |",
            g.resource,
            g.verb,
            if granted.contains(g) { "yes" } else { "NO" },
            used.get(g).copied().unwrap_or(0),
            if used.contains_key(g) {
                ""
            } else {
                kept_because(g).unwrap_or("NOT JUSTIFIED")
            }
        );
    }
    for (request, n) in non_resource {
        println!("non-resource request (system:discovery): {request} x{n}");
    }
}
