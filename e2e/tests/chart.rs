//! The ways users install the operator: the Helm chart (charts/octopus-operator, also what
//! Argo CD renders) and the plain manifest for `kubectl apply` (charts/install.yaml).
//!
//! Offline: the chart lints, renders the same bytes every time, its CRD is a byte copy of
//! crds/octopusclusters.yaml, install.yaml is what charts/render-install.sh produces now,
//! the operator's ServiceAccount is granted exactly [`operator_grants`] (no more, no less)
//! and the Deployment is hardened and probed. On the real control plane: install.yaml
//! applies server-side, the Pod passes Pod Security `restricted`, and the API server's
//! own RBAC answers `kubectl auth can-i` for the operator's ServiceAccount as intended; a
//! Helm install with `watchNamespace` confines the operator to that namespace.
//!
//! helm comes from env `HELM` or where e2e/tools/install-helm.sh puts it (`make tools`),
//! see [`octopus_e2e::helm`]. A missing helm or control plane fails these tests: nothing
//! here is skipped. The chart's Deployment running for real on the node, with its
//! `helm test`, is e2e/tests/operator_pod.rs.
//!
//! install.yaml's objects (namespace `octopus-operator`, its ClusterRole and binding) are
//! left on the shared control plane: re-applying is idempotent, and deleting the namespace
//! would race the next run's apply against its termination.

use std::{collections::BTreeSet, process::Command, time::Duration};

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::{
    api::{
        apps::v1::Deployment,
        authentication::v1::{TokenRequest, TokenRequestSpec},
        core::v1::{Pod, Service, ServiceAccount},
        rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding},
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api,
    api::{ListParams, PostParams},
    core::{ApiResource, DynamicObject, GroupVersionKind},
};
use octopus_e2e::chart::{
    CLUSTER, Grant, documents, kind_of, name_of, render, rendered_grants, strings,
};
use octopus_e2e::cluster::{TestCluster, wait_until};
use octopus_e2e::helm::{chart_dir, helm, helm_binary, repo_root};
use serde_json::Value;

/// Release and namespace install.yaml is rendered for (charts/render-install.sh).
const INSTALL_NAMESPACE: &str = "octopus-operator";
const INSTALL_NAME: &str = "octopus-operator";
const CRD_NAME: &str = "octopusclusters.octopusoperator.dev";
const WAIT: Duration = Duration::from_secs(60);

/// Held by the tests that install or discover cluster-wide APIs (kubectl apply, helm
/// install, the CRD upgrade): a CRD appearing or going away while helm discovers the API
/// makes its discovery fail on the half-served group.
static API_CHANGES: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn find<'a>(docs: &'a [Value], kind: &str) -> Result<&'a Value> {
    docs.iter()
        .find(|d| kind_of(d) == kind)
        .with_context(|| format!("no {kind} rendered"))
}

fn grants(scope: &str, rules: &[(&str, &[&str], &[&str])]) -> BTreeSet<Grant> {
    let mut set = BTreeSet::new();
    for (group, resources, verbs) in rules {
        for resource in *resources {
            for verb in *verbs {
                set.insert(Grant {
                    scope: scope.to_owned(),
                    group: (*group).to_owned(),
                    resource: (*resource).to_owned(),
                    verb: (*verb).to_owned(),
                });
            }
        }
    }
    set
}

/// What the operator needs, and all it may have (keep in step with
/// charts/octopus-operator/templates/rbac.yaml and the chart README's RBAC table):
/// everything in `watched` (a namespace or [`CLUSTER`]), Leases in its own namespace.
fn operator_grants(watched: &str, own_namespace: &str) -> BTreeSet<Grant> {
    let mut set = grants(
        watched,
        &[
            (
                "octopusoperator.dev",
                &["octopusclusters"],
                &["get", "list", "watch", "patch"],
            ),
            (
                "octopusoperator.dev",
                &["octopusclusters/status"],
                &["patch"],
            ),
            (
                "octopusoperator.dev",
                &["octopusclusters/finalizers"],
                &["update"],
            ),
            (
                "apps",
                &["statefulsets"],
                &["get", "list", "watch", "create", "patch"],
            ),
            ("", &["services"], &["create", "patch"]),
            ("", &["persistentvolumeclaims"], &["create"]),
            (
                "batch",
                &["jobs"],
                &["get", "list", "watch", "create", "delete"],
            ),
            ("", &["pods"], &["list", "watch", "delete"]),
            (
                "policy",
                &["poddisruptionbudgets"],
                &["get", "list", "watch", "create", "patch"],
            ),
            ("", &["secrets"], &["get", "create"]),
            ("events.k8s.io", &["events"], &["create", "patch"]),
        ],
    );
    set.extend(grants(
        own_namespace,
        &[(
            "coordination.k8s.io",
            &["leases"],
            &["get", "create", "patch"],
        )],
    ));
    set
}

fn assert_grants(rendered: &BTreeSet<Grant>, expected: &BTreeSet<Grant>, what: &str) {
    let missing: Vec<_> = expected.difference(rendered).collect();
    let extra: Vec<_> = rendered.difference(expected).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{what}: the rendered RBAC differs from what the operator needs\n\
         missing: {missing:#?}\nnot needed: {extra:#?}"
    );
}

/// The first line where two texts differ, for a readable staleness message.
fn first_difference(expected: &str, actual: &str) -> String {
    let line = expected
        .lines()
        .zip(actual.lines())
        .position(|(e, a)| e != a)
        .unwrap_or_else(|| expected.lines().count().min(actual.lines().count()));
    format!(
        "first difference at line {}:\n  checked in: {:?}\n  generated:  {:?}",
        line + 1,
        actual.lines().nth(line).unwrap_or("<end of file>"),
        expected.lines().nth(line).unwrap_or("<end of file>"),
    )
}

#[test]
fn chart_lints_strictly_with_default_and_optional_values() -> Result<()> {
    let chart = chart_dir();
    for set in [
        vec![],
        vec![
            "watchNamespace=octopus",
            "serviceMonitor.enabled=true",
            "prometheusRule.enabled=true",
            "grafanaDashboard.enabled=true",
        ],
        vec![
            "rbac.create=false",
            "serviceAccount.create=false",
            "serviceAccount.name=existing",
        ],
    ] {
        let mut args = vec![
            "lint".into(),
            "--strict".into(),
            chart.clone().into_os_string(),
        ];
        for value in &set {
            args.push("--set".into());
            args.push((*value).into());
        }
        let out = helm(args).with_context(|| format!("helm lint --strict with {set:?}"))?;
        assert!(out.contains("0 chart(s) failed"), "{out}");
    }
    Ok(())
}

#[test]
fn chart_crd_is_a_byte_copy_of_the_generated_crd() -> Result<()> {
    let generated = std::fs::read(repo_root().join("crds/octopusclusters.yaml"))?;
    let copy = std::fs::read(chart_dir().join("crds/octopusclusters.yaml"))?;
    assert!(
        generated == copy,
        "charts/octopus-operator/crds/octopusclusters.yaml differs from crds/octopusclusters.yaml; \
         run charts/render-install.sh\n{}",
        first_difference(
            &String::from_utf8_lossy(&generated),
            &String::from_utf8_lossy(&copy)
        )
    );
    // The chart directory holds nothing else Helm would install as a CRD.
    let entries: Vec<_> = std::fs::read_dir(chart_dir().join("crds"))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()?;
    assert_eq!(
        entries,
        vec![std::ffi::OsString::from("octopusclusters.yaml")]
    );
    Ok(())
}

#[test]
fn install_yaml_is_current() -> Result<()> {
    let script = repo_root().join("charts/render-install.sh");
    let output = Command::new("bash")
        .arg(&script)
        .arg("--stdout")
        .env("HELM", helm_binary()?)
        .output()
        .with_context(|| format!("cannot run {}", script.display()))?;
    ensure!(
        output.status.success(),
        "{} --stdout: {}\n{}",
        script.display(),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let rendered = String::from_utf8(output.stdout)?;
    let checked_in = std::fs::read_to_string(repo_root().join("charts/install.yaml"))?;
    assert!(
        rendered == checked_in,
        "charts/install.yaml is stale; run charts/render-install.sh\n{}",
        first_difference(&rendered, &checked_in)
    );

    let docs = documents(&checked_in)?;
    let kinds: Vec<_> = docs.iter().map(kind_of).collect();
    assert_eq!(
        &kinds[..2],
        ["Namespace", "CustomResourceDefinition"],
        "the Namespace and the CRD come before the objects that need them"
    );
    for kind in [
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Deployment",
        "Service",
    ] {
        assert!(
            kinds.contains(&kind),
            "install.yaml has no {kind}: {kinds:?}"
        );
    }
    for doc in docs.iter().skip(1) {
        let cluster_scoped = matches!(
            kind_of(doc),
            "CustomResourceDefinition" | "ClusterRole" | "ClusterRoleBinding"
        );
        let namespace = doc["metadata"]["namespace"].as_str();
        if cluster_scoped {
            assert_eq!(namespace, None, "{} {}", kind_of(doc), name_of(doc));
        } else {
            assert_eq!(
                namespace,
                Some(INSTALL_NAMESPACE),
                "{} {}",
                kind_of(doc),
                name_of(doc)
            );
        }
    }
    Ok(())
}

/// The code inside each `{{ ... }}` of a template, comments (`{{/* ... */}}`) left out.
fn template_actions(text: &str) -> Vec<&str> {
    let mut actions = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else { break };
        let action = after[..end].trim_matches(|c: char| c == '-' || c.is_whitespace());
        if !action.starts_with("/*") {
            actions.push(action);
        }
        rest = &after[end + 2..];
    }
    actions
}

#[test]
fn rendering_is_deterministic() -> Result<()> {
    // Argo CD compares renderings: the same input must give the same bytes, and nothing
    // may depend on what is in the cluster.
    let first = render("octopus-operator", "octopus-operator", &[])?;
    let second = render("octopus-operator", "octopus-operator", &[])?;
    assert!(first == second, "{}", first_difference(&first, &second));
    // Every template, those in templates/tests/ too.
    let mut dirs = vec![chart_dir().join("templates")];
    let mut files = Vec::new();
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                files.push(path);
            }
        }
    }
    assert!(
        files.iter().any(|f| f.ends_with("tests/check.yaml")),
        "the walk missed templates/tests: {files:?}"
    );
    for path in files {
        let text = std::fs::read_to_string(&path)?;
        for action in template_actions(&text) {
            let called = action
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .find(|token| {
                    ["lookup", "uuidv4", "now", "genCA", "genPrivateKey"].contains(token)
                        || token.starts_with("rand")
                        || token.starts_with("genSelfSigned")
                        || token.starts_with("genSigned")
                });
            assert!(
                called.is_none(),
                "{} calls {called:?} in {{{{{action}}}}}",
                path.display()
            );
        }
    }
    Ok(())
}

#[test]
fn rendered_rbac_grants_exactly_what_the_operator_needs() -> Result<()> {
    // Every namespace: a ClusterRole.
    let docs = documents(&render("octopus-operator", "octopus-operator", &[])?)?;
    let rendered = rendered_grants(&docs, "octopus-operator", "octopus-operator")?;
    assert_grants(
        &rendered,
        &operator_grants(CLUSTER, "octopus-operator"),
        "watching every namespace",
    );

    // One namespace: only a Role there, no cluster-wide right at all.
    let docs = documents(&render(
        "ops",
        "octopus-system",
        &["watchNamespace=octopus"],
    )?)?;
    let rendered = rendered_grants(&docs, "octopus-system", "ops-octopus-operator")?;
    assert_grants(
        &rendered,
        &operator_grants("octopus", "octopus-system"),
        "watchNamespace=octopus",
    );
    assert!(
        !docs.iter().any(|d| kind_of(d) == "ClusterRoleBinding"),
        "watchNamespace must not bind a ClusterRole"
    );

    // The aggregated roles are for people, not bound to the operator; and they can be off.
    for name in [
        "ops-octopus-operator-octopusclusters-edit",
        "ops-octopus-operator-octopusclusters-view",
    ] {
        assert!(
            docs.iter()
                .any(|d| kind_of(d) == "ClusterRole" && name_of(d) == name),
            "no ClusterRole {name}"
        );
    }
    let docs = documents(&render("o", "o", &["rbac.aggregateToDefaultRoles=false"])?)?;
    assert!(
        !docs
            .iter()
            .any(|d| kind_of(d) == "ClusterRole" && name_of(d).ends_with("-edit"))
    );
    Ok(())
}

#[test]
fn rendered_deployment_is_hardened_probed_and_configured_from_values() -> Result<()> {
    let docs = documents(&render("octopus-operator", "octopus-operator", &[])?)?;
    let deployment = find(&docs, "Deployment")?;
    let spec = &deployment["spec"];
    assert_eq!(spec["replicas"], 2, "a leader and a standby");
    assert_eq!(spec["strategy"]["type"], "RollingUpdate");
    let pdb = find(&docs, "PodDisruptionBudget")?;
    assert_eq!(pdb["spec"]["maxUnavailable"], 1);
    assert_eq!(pdb["spec"]["selector"], spec["selector"]);
    let pod = &spec["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "octopus-operator");
    assert!(
        pod["tolerations"].is_null(),
        "no tolerations by default (the e2e node's taint is tolerated through the value)"
    );
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let containers = pod["containers"].as_array().context("no containers")?;
    assert_eq!(containers.len(), 1);
    let container = &containers[0];
    let security = &container["securityContext"];
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["runAsNonRoot"], true);
    assert_eq!(strings(&security["capabilities"]["drop"]), ["ALL"]);
    assert_eq!(
        container["image"], "octopus-operator:0.1.0",
        "tag defaults to appVersion"
    );
    assert_eq!(container["ports"][0]["name"], "metrics");
    assert_eq!(container["ports"][0]["containerPort"], 8080);
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["livenessProbe"]["httpGet"]["port"], "metrics");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["readinessProbe"]["httpGet"]["port"], "metrics");
    for bound in ["requests", "limits"] {
        for resource in ["cpu", "memory"] {
            assert!(
                container["resources"][bound][resource].is_string(),
                "resources.{bound}.{resource} unset"
            );
        }
    }
    assert_eq!(
        strings(&container["args"]),
        [
            "run",
            "--metrics-addr=0.0.0.0:8080",
            "--log-format=json",
            "--poll-interval=5s",
            "--api-url-template=http://{name}.{namespace}.svc:8080",
            "--node-url-template=http://{pod}.{service}.{namespace}.svc:8080",
            "--leader-elect=true",
            "--leader-election-lease-name=octopus-operator",
            "--lease-duration=15s",
            "--lease-renew-period=10s",
        ]
    );
    assert_eq!(container["env"][0]["name"], "RUST_LOG");
    let env: Vec<(&str, &str)> = container["env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| {
            Some((
                e["name"].as_str()?,
                e["valueFrom"]["fieldRef"]["fieldPath"].as_str()?,
            ))
        })
        .collect();
    assert_eq!(
        env,
        [
            ("POD_NAME", "metadata.name"),
            ("POD_NAMESPACE", "metadata.namespace")
        ],
        "the Lease identity and namespace come from the downward API"
    );
    let service = find(&docs, "Service")?;
    assert_eq!(service["spec"]["ports"][0]["targetPort"], "metrics");
    assert_eq!(
        service["spec"]["selector"], spec["selector"]["matchLabels"],
        "the metrics Service selects the operator pod"
    );
    assert!(
        find(&docs, "ServiceMonitor").is_err(),
        "ServiceMonitor is off by default"
    );

    // Values reach the arguments, and the optional objects appear.
    let docs = documents(&render(
        "octopus-operator",
        "octopus-operator",
        &[
            "watchNamespace=octopus",
            "logFormat=text",
            "logLevel=debug",
            "pollInterval=2s",
            "maxConcurrentUpgrades=10",
            "apiUrlTemplate=https://{name}.example.com",
            "nodeUrlTemplate=https://{pod}.{service}.{namespace}.svc:8443",
            "metrics.port=9090",
            "image.repository=registry.example.com/octopus-operator",
            "image.tag=0.2.0",
            "serviceMonitor.enabled=true",
            "nodeSelector.disk=ssd",
            "podAnnotations.team=platform",
            "replicaCount=3",
            "leaderElection.leaseDuration=30s",
            "leaderElection.renewPeriod=20s",
        ],
    )?)?;
    let deployment = find(&docs, "Deployment")?;
    assert_eq!(deployment["spec"]["replicas"], 3);
    let pod = &deployment["spec"]["template"];
    let container = &pod["spec"]["containers"][0];
    assert_eq!(
        strings(&container["args"]),
        [
            "run",
            "--metrics-addr=0.0.0.0:9090",
            "--log-format=text",
            "--poll-interval=2s",
            "--api-url-template=https://{name}.example.com",
            "--node-url-template=https://{pod}.{service}.{namespace}.svc:8443",
            "--max-concurrent-upgrades=10",
            "--namespace=octopus",
            "--leader-elect=true",
            "--leader-election-lease-name=octopus-operator",
            "--lease-duration=30s",
            "--lease-renew-period=20s",
        ]
    );
    assert_eq!(container["env"][0]["value"], "debug");
    assert_eq!(
        container["image"],
        "registry.example.com/octopus-operator:0.2.0"
    );
    assert_eq!(pod["spec"]["nodeSelector"]["disk"], "ssd");
    assert_eq!(pod["metadata"]["annotations"]["team"], "platform");
    let monitor = find(&docs, "ServiceMonitor")?;
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], "metrics");
    assert_eq!(monitor["spec"]["endpoints"][0]["path"], "/metrics");

    // Without leader election: one replica, Recreate, no Lease rights, no PDB.
    let docs = documents(&render(
        "octopus-operator",
        "octopus-operator",
        &["leaderElection.enabled=false", "replicaCount=3"],
    )?)?;
    let spec = &find(&docs, "Deployment")?["spec"];
    assert_eq!(spec["replicas"], 1);
    assert_eq!(spec["strategy"]["type"], "Recreate");
    let args = strings(&spec["template"]["spec"]["containers"][0]["args"]);
    assert!(args.contains(&"--leader-elect=false"), "{args:?}");
    assert!(find(&docs, "PodDisruptionBudget").is_err());
    assert!(
        !docs
            .iter()
            .any(|d| name_of(d).ends_with("-leader-election")),
        "no Lease rights without leader election"
    );
    Ok(())
}

#[test]
fn helm_test_hook_runs_the_check_as_the_operator_and_is_no_replica() -> Result<()> {
    let hook = |set: &[&str]| -> Result<Value> {
        let docs = documents(&render("octopus-operator", "ops", set)?)?;
        let pod = find(&docs, "Pod")?.clone();
        let deployment = find(&docs, "Deployment")?;
        // The Deployment's selector (and so its Service and PDB) must not match the hook.
        let selector = deployment["spec"]["selector"]["matchLabels"]
            .as_object()
            .context("no selector")?;
        let labels = &pod["metadata"]["labels"];
        assert!(
            selector.iter().any(|(k, v)| &labels[k] != v),
            "the test pod carries the operator's selector labels: {labels}"
        );
        assert_eq!(
            pod["spec"]["serviceAccountName"],
            deployment["spec"]["template"]["spec"]["serviceAccountName"]
        );
        assert_eq!(
            pod["spec"]["containers"][0]["image"],
            deployment["spec"]["template"]["spec"]["containers"][0]["image"],
            "the check runs from the operator's own image"
        );
        assert_eq!(pod["spec"]["restartPolicy"], "Never");
        Ok(pod)
    };
    let pod = hook(&[])?;
    assert_eq!(pod["metadata"]["annotations"]["helm.sh/hook"], "test");
    assert_eq!(
        strings(&pod["spec"]["containers"][0]["args"]),
        [
            "check",
            "--url=http://octopus-operator-metrics.ops.svc:8080",
            "--lease=ops/octopus-operator",
            "--retry-for=30s",
        ]
    );
    assert_eq!(
        pod["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"],
        true
    );
    let pod = hook(&[
        "leaderElection.enabled=false",
        "watchNamespace=team-a",
        "metrics.port=9090",
        "tolerations[0].key=dedicated",
        "tolerations[0].operator=Exists",
    ])?;
    assert_eq!(
        strings(&pod["spec"]["containers"][0]["args"]),
        [
            "check",
            "--url=http://octopus-operator-metrics.ops.svc:9090",
            "--namespace=team-a",
            "--retry-for=30s",
        ]
    );
    assert_eq!(
        pod["spec"]["tolerations"][0]["key"], "dedicated",
        "it runs where the operator may run"
    );
    Ok(())
}

/// `kubectl auth can-i VERB RESOURCE [-n NS | -A] [--subresource S]` as `user`: yes or no.
async fn can_i(cluster: &TestCluster, user: &str, args: &[&str]) -> Result<bool> {
    let mut full = vec!["auth", "can-i", "--as", user];
    full.extend_from_slice(args);
    let out = cluster.kubectl(full.iter().copied()).await?;
    match out.stdout.trim() {
        "yes" => Ok(true),
        "no" => Ok(false),
        _ => bail!(
            "kubectl auth can-i {args:?}: {}\n{}{}",
            out.status,
            out.stdout,
            out.stderr
        ),
    }
}

/// Asks the API server each question and fails listing every answer that is not expected.
async fn assert_can_i(cluster: &TestCluster, user: &str, cases: &[(bool, &[&str])]) -> Result<()> {
    let mut wrong = Vec::new();
    for (expected, args) in cases {
        let answer = can_i(cluster, user, args).await?;
        if answer != *expected {
            wrong.push(format!(
                "can-i {} -> {} (expected {})",
                args.join(" "),
                if answer { "yes" } else { "no" },
                if *expected { "yes" } else { "no" }
            ));
        }
    }
    ensure!(
        wrong.is_empty(),
        "RBAC for {user} is not as intended:\n  {}",
        wrong.join("\n  ")
    );
    Ok(())
}

#[tokio::test]
async fn install_yaml_applies_server_side_and_grants_the_operator_its_rights() -> Result<()> {
    let _serial = API_CHANGES.lock().await;
    let cluster = TestCluster::shared().await?;
    let install = repo_root().join("charts/install.yaml");
    // --force-conflicts: the control plane is shared, and other scenarios may have applied
    // an older CRD under another field manager. Users upgrading from Helm need it too.
    let applied = cluster
        .kubectl([
            "apply",
            "--server-side",
            "--force-conflicts",
            "-f",
            install.to_str().context("non-UTF-8 path")?,
        ])
        .await?
        .ok()?;
    // The Namespace asks for warnings at Pod Security `restricted`: there must be none.
    assert!(
        !applied.stderr.contains("PodSecurity"),
        "the Deployment violates Pod Security restricted:\n{}",
        applied.stderr
    );

    let client = cluster.client();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    wait_until("the OctopusCluster CRD to be Established", WAIT, || async {
        let crd = crds.get(CRD_NAME).await?;
        let established = crd
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True");
        Ok(established.then_some(()))
    })
    .await?;

    let ns = INSTALL_NAMESPACE;
    let deployment = Api::<Deployment>::namespaced(client.clone(), ns)
        .get(INSTALL_NAME)
        .await
        .context("the Deployment")?;
    Api::<ServiceAccount>::namespaced(client.clone(), ns)
        .get(INSTALL_NAME)
        .await
        .context("the ServiceAccount")?;
    Api::<Service>::namespaced(client.clone(), ns)
        .get(&format!("{INSTALL_NAME}-metrics"))
        .await
        .context("the metrics Service")?;
    Api::<ClusterRole>::all(client.clone())
        .get(INSTALL_NAME)
        .await
        .context("the ClusterRole")?;
    let binding = Api::<ClusterRoleBinding>::all(client.clone())
        .get(INSTALL_NAME)
        .await
        .context("the ClusterRoleBinding")?;
    assert_eq!(binding.role_ref.name, INSTALL_NAME);
    Api::<Role>::namespaced(client.clone(), ns)
        .get(&format!("{INSTALL_NAME}-leader-election"))
        .await
        .context("the leader election Role")?;
    Api::<RoleBinding>::namespaced(client.clone(), ns)
        .get(&format!("{INSTALL_NAME}-leader-election"))
        .await
        .context("the leader election RoleBinding")?;

    // The ReplicaSet controller creates the operator Pod, so it passed Pod Security
    // `restricted` (enforced on the namespace) and the ServiceAccount admission. It stays
    // Pending: it does not tolerate the real node's taint (and without a node nothing
    // schedules it).
    let selector = deployment
        .spec
        .selector
        .match_labels
        .unwrap_or_default()
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    wait_until("the operator Pod to be created", WAIT, || async {
        let list = pods.list(&ListParams::default().labels(&selector)).await?;
        Ok(list.items.into_iter().next())
    })
    .await
    .context("no operator Pod: see `kubectl -n octopus-operator describe replicaset`")?;

    let operator = format!("system:serviceaccount:{ns}:{INSTALL_NAME}");
    let yes = true;
    let no = false;
    assert_can_i(
        &cluster,
        &operator,
        &[
            (yes, &["watch", "octopusclusters.octopusoperator.dev", "-A"]),
            (
                yes,
                &[
                    "patch",
                    "octopusclusters.octopusoperator.dev",
                    "-n",
                    "team-a",
                    "--subresource",
                    "status",
                ],
            ),
            (
                yes,
                &[
                    "update",
                    "octopusclusters.octopusoperator.dev",
                    "-n",
                    "team-a",
                    "--subresource",
                    "finalizers",
                ],
            ),
            (yes, &["create", "statefulsets.apps", "-n", "team-a"]),
            (yes, &["patch", "statefulsets.apps", "-n", "team-a"]),
            (yes, &["create", "services", "-n", "team-a"]),
            (yes, &["create", "persistentvolumeclaims", "-n", "team-a"]),
            (yes, &["create", "jobs.batch", "-n", "team-a"]),
            // Finished backup Jobs of earlier attempts are pruned (rbac.yaml).
            (yes, &["delete", "jobs.batch", "-n", "team-a"]),
            (yes, &["delete", "pods", "-n", "team-a"]),
            (
                yes,
                &["patch", "poddisruptionbudgets.policy", "-n", "team-a"],
            ),
            (yes, &["get", "secrets", "-n", "team-a"]),
            (yes, &["create", "secrets", "-n", "team-a"]),
            // Rights the audit log showed unused (e2e/tests/rbac_audit.rs) are gone.
            (no, &["list", "secrets", "-A"]),
            (no, &["get", "pods", "-n", "team-a"]),
            (no, &["patch", "jobs.batch", "-n", "team-a"]),
            (no, &["get", "services", "-n", "team-a"]),
            (
                no,
                &[
                    "update",
                    "octopusclusters.octopusoperator.dev",
                    "-n",
                    "team-a",
                ],
            ),
            (yes, &["create", "events.events.k8s.io", "-n", "team-a"]),
            (yes, &["patch", "leases.coordination.k8s.io", "-n", ns]),
            (no, &["update", "leases.coordination.k8s.io", "-n", ns]),
            (no, &["delete", "leases.coordination.k8s.io", "-n", ns]),
            // Least privilege: what it must not be able to do.
            (
                no,
                &[
                    "create",
                    "octopusclusters.octopusoperator.dev",
                    "-n",
                    "team-a",
                ],
            ),
            (
                no,
                &[
                    "delete",
                    "octopusclusters.octopusoperator.dev",
                    "-n",
                    "team-a",
                ],
            ),
            (no, &["delete", "statefulsets.apps", "-n", "team-a"]),
            (no, &["delete", "persistentvolumeclaims", "-n", "team-a"]),
            (
                no,
                &["delete", "poddisruptionbudgets.policy", "-n", "team-a"],
            ),
            (no, &["create", "pods/eviction", "-n", "team-a"]),
            (no, &["update", "secrets", "-n", "team-a"]),
            (no, &["delete", "secrets", "-n", "team-a"]),
            (no, &["create", "pods", "-n", "team-a"]),
            (no, &["create", "deployments.apps", "-n", "team-a"]),
            (
                no,
                &["patch", "leases.coordination.k8s.io", "-n", "kube-system"],
            ),
            (
                no,
                &["create", "clusterrolebindings.rbac.authorization.k8s.io"],
            ),
            (
                no,
                &["update", "customresourcedefinitions.apiextensions.k8s.io"],
            ),
        ],
    )
    .await?;

    // The same, with the ServiceAccount's own token instead of impersonation: it lists
    // OctopusClusters everywhere and is refused Deployments.
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            expiration_seconds: Some(600),
            ..TokenRequestSpec::default()
        }),
        ..TokenRequest::default()
    };
    let token = Api::<ServiceAccount>::namespaced(client.clone(), ns)
        .create_token_request(INSTALL_NAME, &PostParams::default(), &request)
        .await?
        .status
        .and_then(|s| s.token)
        .unwrap_or_default();
    ensure!(!token.is_empty(), "the TokenRequest returned no token");
    let as_operator = cluster.client_with_token(&token)?;
    let gvk = GroupVersionKind::gvk("octopusoperator.dev", "v1alpha1", "OctopusCluster");
    let clusters: Api<DynamicObject> =
        Api::all_with(as_operator.clone(), &ApiResource::from_gvk(&gvk));
    clusters
        .list(&ListParams::default())
        .await
        .context("the operator's token lists OctopusClusters in every namespace")?;
    match Api::<Deployment>::all(as_operator)
        .list(&ListParams::default())
        .await
    {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 403, "{status:?}"),
        other => bail!("listing Deployments must be forbidden to the operator, got {other:?}"),
    }
    Ok(())
}

#[tokio::test]
async fn helm_install_with_watch_namespace_confines_the_operator_to_it() -> Result<()> {
    let _serial = API_CHANGES.lock().await;
    let cluster = TestCluster::shared().await?;
    // Helm creates the CRD by server-side apply; on a control plane that kept an older CRD
    // from kubectl (a reused one, after a CRD change) that conflicts. Applying today's CRD
    // first, as the scenarios do, makes helm's apply agree with every earlier manager.
    octopus_e2e::scenario::install_crd(&cluster).await?;
    let operator_ns = cluster.namespace("chart-operator").await?;
    let watched_ns = cluster.namespace("chart-watched").await?;
    let other_ns = cluster.namespace("chart-other").await?;
    // The release name makes the cluster-scoped names (aggregated ClusterRoles) unique.
    let release = operator_ns.name().to_owned();
    let own = operator_ns.name().to_owned();
    let connection: Vec<std::ffi::OsString> = vec![
        "--namespace".into(),
        own.clone().into(),
        "--kubeconfig".into(),
        cluster.kubeconfig().into(),
    ];
    let mut args: Vec<std::ffi::OsString> =
        vec!["install".into(), release.clone().into(), chart_dir().into()];
    args.extend(connection.iter().cloned());
    args.extend([
        "--set".into(),
        format!("watchNamespace={}", watched_ns.name()).into(),
    ]);
    let install = tokio::task::spawn_blocking(move || helm(args)).await?;
    let result = async {
        install.context("helm install")?;
        let operator = format!("system:serviceaccount:{own}:{release}-octopus-operator");
        let (watched, other, own) = (watched_ns.name(), other_ns.name(), own.as_str());
        let yes = true;
        let no = false;
        assert_can_i(
            &cluster,
            &operator,
            &[
                (
                    yes,
                    &[
                        "watch",
                        "octopusclusters.octopusoperator.dev",
                        "-n",
                        watched,
                    ],
                ),
                (yes, &["create", "statefulsets.apps", "-n", watched]),
                (yes, &["delete", "pods", "-n", watched]),
                (yes, &["get", "secrets", "-n", watched]),
                (yes, &["patch", "leases.coordination.k8s.io", "-n", own]),
                (no, &["watch", "octopusclusters.octopusoperator.dev", "-A"]),
                (
                    no,
                    &["watch", "octopusclusters.octopusoperator.dev", "-n", other],
                ),
                (no, &["get", "secrets", "-n", other]),
                (no, &["get", "secrets", "-n", own]),
                (no, &["delete", "pods", "-n", other]),
                (no, &["patch", "leases.coordination.k8s.io", "-n", watched]),
            ],
        )
        .await
    }
    .await;
    // Uninstall even after a failure: the aggregated ClusterRoles outlive the namespaces.
    let mut args: Vec<std::ffi::OsString> = vec!["uninstall".into(), release.into()];
    args.extend(connection);
    let uninstall = tokio::task::spawn_blocking(move || helm(args)).await?;
    result?;
    uninstall.context("helm uninstall")?;
    Ok(())
}

#[test]
fn values_schema_refuses_bad_values_at_helm_template() -> Result<()> {
    // Each bad value fails rendering with a message that names it.
    for (set, names) in [
        ("logFormat=yaml", "/logFormat"),
        ("pollInterval=soon", "/pollInterval"),
        ("pollInterval=5", "/pollInterval"),
        ("maxConcurrentUpgrades=-1", "/maxConcurrentUpgrades"),
        ("maxConcurrentUpgrades=many", "/maxConcurrentUpgrades"),
        ("metrics.port=-1", "/metrics/port"),
        ("metrics.port=70000", "/metrics/port"),
        ("image.pullPolicy=Sometimes", "/image/pullPolicy"),
        (
            "prometheusRule.blockedFor=forever",
            "/prometheusRule/blockedFor",
        ),
        ("apiUrlTemplate=octopus:8080", "/apiUrlTemplate"),
        // A typo is refused rather than silently ignored.
        ("logformat=text", "logformat"),
    ] {
        match render("octopus-operator", "octopus-operator", &[set]) {
            Ok(_) => bail!("helm template --set {set} rendered; the schema must refuse it"),
            Err(e) => {
                let message = format!("{e:#}");
                assert!(
                    message.contains("values don't meet the specifications of the schema")
                        && message.contains(names),
                    "--set {set}: {message}"
                );
            }
        }
    }
    // Good values still render.
    render(
        "octopus-operator",
        "octopus-operator",
        &[
            "logFormat=text",
            "pollInterval=1m30s",
            "metrics.port=9090",
            "prometheusRule.enabled=true",
            "prometheusRule.blockedFor=2h",
        ],
    )?;
    Ok(())
}

/// Series the operator exports, as agreed with the metrics code (keep in step with
/// operator/src/controller/metrics.rs): the PrometheusRule and the dashboard may use
/// only these, plus Prometheus's own `up`.
const EXPORTED_METRICS: &[&str] = &[
    "octopus_operator_reconciles_total",
    "octopus_operator_reconcile_failures_total",
    "octopus_operator_actions_total",
    "octopus_operator_cluster_info",
    "octopus_operator_cluster_phase",
    "octopus_operator_cluster_condition",
    "octopus_operator_cluster_blocked",
    "octopus_operator_upgrade_step",
    "octopus_operator_upgrade_started_timestamp_seconds",
    "octopus_operator_last_backup_timestamp_seconds",
    "octopus_operator_octopus_requests_total",
    "octopus_operator_leader",
];
const EXPORTED_HISTOGRAMS: &[&str] = &[
    "octopus_operator_reconcile_duration_seconds",
    "octopus_operator_upgrade_duration_seconds",
];

fn is_exported(metric: &str) -> bool {
    metric == "up"
        || EXPORTED_METRICS.contains(&metric)
        || EXPORTED_HISTOGRAMS.iter().any(|h| {
            metric
                .strip_prefix(h)
                .is_some_and(|suffix| ["_bucket", "_sum", "_count"].contains(&suffix))
        })
}

/// Metric names a PromQL expression selects: identifiers outside strings, label matchers
/// and ranges that are neither functions, operators, aggregations nor grouping labels.
fn promql_metrics(expr: &str) -> BTreeSet<String> {
    const KEYWORDS: &[&str] = &[
        "sum",
        "min",
        "max",
        "avg",
        "count",
        "stddev",
        "stdvar",
        "topk",
        "bottomk",
        "quantile",
        "count_values",
        "group",
        "and",
        "or",
        "unless",
        "bool",
        "offset",
    ];
    const GROUPING: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    // Strings, label matchers and range selectors say nothing about metric names.
    let mut plain = String::new();
    let mut closing = None;
    for c in expr.chars() {
        match (closing, c) {
            (None, '"') => closing = Some('"'),
            (None, '{') => closing = Some('}'),
            (None, '[') => closing = Some(']'),
            (Some(end), c) if c == end => {
                closing = None;
                plain.push(' ');
            }
            (Some(_), _) => {}
            (None, c) => plain.push(c),
        }
    }
    let chars: Vec<char> = plain.chars().collect();
    let mut metrics = BTreeSet::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if !(c.is_ascii_alphabetic() || c == '_' || c == ':') {
            i += 1;
            continue;
        }
        let start = i;
        while i < chars.len() && (chars[i].is_ascii_alphanumeric() || "_:".contains(chars[i])) {
            i += 1;
        }
        let word: String = chars[start..i].iter().collect();
        let next = chars[i..].iter().find(|c| !c.is_whitespace());
        if GROUPING.contains(&word.as_str()) {
            // Skip the label list: `by (namespace, name)`.
            if next == Some(&'(') {
                while i < chars.len() && chars[i] != ')' {
                    i += 1;
                }
            }
        } else if next != Some(&'(') && !KEYWORDS.contains(&word.as_str()) {
            metrics.insert(word);
        }
    }
    metrics
}

#[test]
fn promql_metrics_finds_the_selected_series_only() {
    assert_eq!(
        promql_metrics(
            r#"histogram_quantile(0.95, sum by (le, strategy) (rate(a_bucket{x="y(z)"}[$__rate_interval]))) > on (n) group_left (s) b or absent(up{job="j"} == 1)"#
        ),
        BTreeSet::from(["a_bucket".to_owned(), "b".to_owned(), "up".to_owned()])
    );
}

#[test]
fn prometheus_rule_is_optional_and_alerts_on_exported_series_only() -> Result<()> {
    let defaults = documents(&render("octopus-operator", "octopus-operator", &[])?)?;
    assert!(
        !defaults
            .iter()
            .any(|d| kind_of(d) == "PrometheusRule" || name_of(d).ends_with("-dashboard")),
        "the PrometheusRule and the dashboard are off by default"
    );
    let docs = documents(&render(
        "octopus-operator",
        "octopus-operator",
        &[
            "prometheusRule.enabled=true",
            "serviceMonitor.enabled=true",
            "prometheusRule.upgradeStuckAfterSeconds=3600",
        ],
    )?)?;
    let rule = find(&docs, "PrometheusRule")?;
    let service = docs
        .iter()
        .find(|d| kind_of(d) == "Service")
        .context("no Service")?;
    // The ServiceMonitor keeps the series' own namespace label; its job is the Service.
    let monitor = find(&docs, "ServiceMonitor")?;
    assert_eq!(monitor["spec"]["endpoints"][0]["honorLabels"], true);
    let job = format!("job=\"{}\"", name_of(service));

    let mut alerts = BTreeSet::new();
    for group in rule["spec"]["groups"].as_array().context("no groups")? {
        for rule in group["rules"].as_array().context("a group without rules")? {
            let alert = rule["alert"].as_str().context("a rule without alert")?;
            let expr = rule["expr"].as_str().context("a rule without expr")?;
            ensure!(
                ["warning", "critical"]
                    .contains(&rule["labels"]["severity"].as_str().unwrap_or("")),
                "{alert}: severity {}",
                rule["labels"]["severity"]
            );
            ensure!(
                rule["annotations"]["summary"].is_string()
                    && rule["annotations"]["description"].is_string(),
                "{alert}: needs a summary and a description"
            );
            ensure!(expr.contains(&job), "{alert}: {expr} does not select {job}");
            let metrics = promql_metrics(expr);
            ensure!(!metrics.is_empty(), "{alert}: {expr} selects no series");
            for metric in &metrics {
                ensure!(
                    is_exported(metric),
                    "{alert}: {metric} is not a series the operator exports"
                );
            }
            alerts.insert((alert.to_owned(), expr.to_owned()));
        }
    }
    let names: BTreeSet<_> = alerts.iter().map(|(a, _)| a.as_str()).collect();
    assert_eq!(
        names,
        BTreeSet::from([
            "OctopusClusterDegraded",
            "OctopusClusterUpgradeBlocked",
            "OctopusClusterUpgradeStuck",
            "OctopusOperatorDown",
            "OctopusOperatorNoLeader",
        ])
    );
    assert!(
        alerts
            .iter()
            .any(|(a, e)| a == "OctopusClusterUpgradeStuck" && e.ends_with("> 3600")),
        "upgradeStuckAfterSeconds sets the threshold: {alerts:?}"
    );
    Ok(())
}

#[test]
fn grafana_dashboard_is_optional_and_charts_exported_series_only() -> Result<()> {
    let docs = documents(&render(
        "octopus-operator",
        "octopus-operator",
        &["grafanaDashboard.enabled=true"],
    )?)?;
    let config_map = docs
        .iter()
        .find(|d| kind_of(d) == "ConfigMap" && name_of(d) == "octopus-operator-dashboard")
        .context("no dashboard ConfigMap")?;
    assert_eq!(config_map["metadata"]["labels"]["grafana_dashboard"], "1");
    let text = config_map["data"]["octopus-operator.json"]
        .as_str()
        .context("no octopus-operator.json in the ConfigMap")?;
    // The ConfigMap carries the file as it is.
    assert_eq!(
        text.trim_end(),
        std::fs::read_to_string(chart_dir().join("dashboards/octopus-operator.json"))?.trim_end()
    );
    let dashboard: Value = serde_json::from_str(text).context("the dashboard is not JSON")?;
    assert_eq!(dashboard["uid"], "octopus-operator");

    let mut used = BTreeSet::new();
    let mut ids = BTreeSet::new();
    let panels = dashboard["panels"].as_array().context("no panels")?;
    for panel in panels {
        let title = panel["title"].as_str().context("a panel without title")?;
        ensure!(
            ids.insert(panel["id"].as_i64()),
            "{title}: duplicate panel id"
        );
        let grid = &panel["gridPos"];
        ensure!(
            grid["x"].as_i64().unwrap_or(99) + grid["w"].as_i64().unwrap_or(99) <= 24,
            "{title}: wider than the 24-column grid"
        );
        ensure!(
            panel["datasource"]["uid"] == "${datasource}",
            "{title}: not on the dashboard's data source variable"
        );
        let targets = panel["targets"]
            .as_array()
            .context("a panel without targets")?;
        ensure!(!targets.is_empty(), "{title}: no query");
        for target in targets {
            let expr = target["expr"].as_str().context("a target without expr")?;
            let metrics = promql_metrics(expr);
            ensure!(!metrics.is_empty(), "{title}: {expr} selects no series");
            for metric in metrics {
                ensure!(
                    is_exported(&metric),
                    "{title}: {metric} is not a series the operator exports"
                );
                used.insert(metric);
            }
        }
    }
    // Template variables: label_values(<series>, <label>).
    for variable in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if let Some(query) = variable["definition"].as_str() {
            let series = query
                .strip_prefix("label_values(")
                .and_then(|rest| rest.split([',', '{']).next())
                .with_context(|| format!("unexpected variable query {query}"))?;
            ensure!(is_exported(series), "variable {query}: {series}");
        }
    }
    // Every per-cluster series and the Octopus API calls are on the dashboard.
    for metric in EXPORTED_METRICS {
        assert!(
            used.contains(*metric),
            "the dashboard does not show {metric}"
        );
    }
    Ok(())
}

/// Helm installs `crds/` once and never upgrades it; the chart README says to upgrade the
/// CRD with `kubectl apply --server-side --force-conflicts -f <the chart's CRD>`. This does
/// that over a CRD created the way Helm creates it (a plain create by manager "helm") and
/// checks that the API server then serves the new schema. It runs on a copy of the chart's
/// CRD in a group of its own, so the OctopusCluster API other tests use is never touched:
/// the "older" version lacks `spec.tentacles`.
#[tokio::test]
async fn crd_upgrade_by_server_side_apply_serves_the_new_schema() -> Result<()> {
    let _serial = API_CHANGES.lock().await;
    let cluster = TestCluster::shared().await?;
    let suffix: String = (0..6)
        .map(|_| fastrand::alphanumeric().to_ascii_lowercase())
        .collect();
    let group = format!("upgrade-{suffix}.octopusoperator.dev");
    let mut new: Value = serde_yaml::from_str(&std::fs::read_to_string(
        chart_dir().join("crds/octopusclusters.yaml"),
    )?)?;
    new["metadata"] = serde_json::json!({ "name": format!("octopusclusters.{group}") });
    new["spec"]["group"] = group.clone().into();
    let names = new["spec"]["names"]
        .as_object_mut()
        .context("the CRD has no spec.names")?;
    names.remove("shortNames");
    names.remove("categories");
    let mut old = new.clone();
    for version in old["spec"]["versions"]
        .as_array_mut()
        .context("no versions")?
    {
        version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
            .as_object_mut()
            .context("no spec properties")?
            .remove("tentacles")
            .context("the CRD has no spec.tentacles")?;
    }

    let crds: Api<CustomResourceDefinition> = Api::all(cluster.client());
    let name = format!("octopusclusters.{group}");
    crds.create(
        &PostParams {
            field_manager: Some("helm".into()),
            ..PostParams::default()
        },
        &serde_json::from_value(old)?,
    )
    .await
    .context("creating the older CRD")?;
    let result = async {
        let established = || async {
            let crd = crds.get(&name).await?;
            Ok(crd
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
                .then_some(()))
        };
        wait_until("the older CRD to be established", WAIT, established).await?;
        let namespace = cluster.namespace("crd-upgrade").await?;
        let object = format!(
            "apiVersion: {group}/v1alpha1\nkind: OctopusCluster\nmetadata:\n  name: octo\nspec:\n  \
             version: \"2024.1.100\"\n  database:\n    connectionStringSecretRef: {{name: db, key: c}}\n  \
             masterKeySecretRef: {{name: o, key: masterKey}}\n  apiKeySecretRef: {{name: o, key: apiKey}}\n  \
             tentacles:\n    environmentIds: [Environments-1]\n    upgradeTentacles: true\n"
        );
        let dry_run_create = || {
            cluster.kubectl_with_stdin(
                [
                    "create",
                    "--dry-run=server",
                    "--validate=strict",
                    "-n",
                    namespace.name(),
                    "-f",
                    "-",
                ],
                Some(&object),
            )
        };
        let before = dry_run_create().await?;
        ensure!(
            !before.success() && before.stderr.contains("tentacles"),
            "the older CRD must refuse spec.tentacles: {before:?}"
        );

        let file = tempfile::NamedTempFile::new()?;
        std::fs::write(file.path(), serde_yaml::to_string(&new)?)?;
        let path = file.path().to_string_lossy().into_owned();
        cluster
            .kubectl([
                "apply",
                "--server-side",
                "--force-conflicts",
                "-f",
                path.as_str(),
            ])
            .await?
            .ok()?;
        // The API server switches to the new schema shortly after the update.
        wait_until("the new schema to be served", WAIT, || async {
            Ok(dry_run_create().await?.success().then_some(()))
        })
        .await?;
        let crd = crds.get(&name).await?;
        let managers: Vec<_> = crd
            .metadata
            .managed_fields
            .unwrap_or_default()
            .into_iter()
            .map(|m| (m.manager.unwrap_or_default(), m.operation.unwrap_or_default()))
            .collect();
        ensure!(
            managers.contains(&("kubectl".to_owned(), "Apply".to_owned())),
            "kubectl's server-side apply owns the CRD now: {managers:?}"
        );
        Ok(())
    }
    .await;
    crds.delete(&name, &Default::default()).await?;
    // Gone from discovery before the next test that discovers the API runs.
    wait_until("the test CRD to be deleted", WAIT, || async {
        Ok(crds.get_opt(&name).await?.is_none().then_some(()))
    })
    .await?;
    result
}
