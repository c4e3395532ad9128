//! Smoke scenario for the proving ground itself: the control plane is the pinned
//! Kubernetes release, its controller-manager really runs controllers (StatefulSets and
//! Jobs create Pods, the garbage collector follows owner references), and RBAC is
//! enforced for ServiceAccount tokens.

use std::time::Duration;

use k8s_openapi::api::{
    apps::v1::{StatefulSet, StatefulSetSpec, StatefulSetUpdateStrategy},
    authentication::v1::{TokenRequest, TokenRequestSpec},
    batch::v1::{Job, JobSpec},
    core::v1::{Container, Pod, PodSpec, PodTemplateSpec, ServiceAccount},
    rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject},
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, PostParams};
use octopus_e2e::cluster::{ClusterError, TestCluster, pinned_kubernetes_version, wait_until};

const IMAGE: &str = "octopusdeploy/octopusdeploy:2024.1.100";
const WAIT: Duration = Duration::from_secs(60);

fn meta(name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        ..ObjectMeta::default()
    }
}

fn pod_template(app: &str, restart_policy: Option<&str>) -> PodTemplateSpec {
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some([("app".to_owned(), app.to_owned())].into()),
            ..ObjectMeta::default()
        }),
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "octopus".to_owned(),
                image: Some(IMAGE.to_owned()),
                ..Container::default()
            }],
            restart_policy: restart_policy.map(str::to_owned),
            ..PodSpec::default()
        }),
    }
}

#[tokio::test]
async fn api_server_is_the_pinned_release() -> Result<(), ClusterError> {
    let cluster = TestCluster::shared().await?;
    let info = cluster.client().apiserver_version().await?;
    assert_eq!(info.git_version, pinned_kubernetes_version());
    Ok(())
}

#[tokio::test]
async fn statefulset_controller_creates_pods_and_garbage_collector_removes_them()
-> Result<(), ClusterError> {
    let cluster = TestCluster::shared().await?;
    let ns = cluster.namespace("smoke-sts").await?;
    let sets: Api<StatefulSet> = ns.api();
    let pods: Api<Pod> = ns.api();

    let set = StatefulSet {
        metadata: meta("octopus"),
        spec: StatefulSetSpec {
            replicas: Some(2),
            service_name: Some("octopus".to_owned()),
            // Parallel: without a kubelet no Pod becomes Ready, so OrderedReady would stop at -0.
            pod_management_policy: Some("Parallel".to_owned()),
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("OnDelete".to_owned()),
                ..StatefulSetUpdateStrategy::default()
            }),
            selector: LabelSelector {
                match_labels: Some([("app".to_owned(), "octopus".to_owned())].into()),
                ..LabelSelector::default()
            },
            template: pod_template("octopus", None),
            ..StatefulSetSpec::default()
        },
        ..StatefulSet::default()
    };
    let set = sets.create(&PostParams::default(), &set).await?;
    let set_uid = set.metadata.uid.clone();

    let created = wait_until("the StatefulSet's two Pods", WAIT, || async {
        let list = pods
            .list(&ListParams::default().labels("app=octopus"))
            .await?;
        Ok((list.items.len() == 2).then_some(list.items))
    })
    .await?;
    let mut names: Vec<_> = created
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    names.sort();
    assert_eq!(names, ["octopus-0", "octopus-1"]);
    for pod in &created {
        let owner = pod
            .metadata
            .owner_references
            .as_ref()
            .and_then(|refs| refs.iter().find(|r| r.controller == Some(true)));
        assert_eq!(owner.map(|o| o.kind.as_str()), Some("StatefulSet"));
        assert_eq!(owner.map(|o| Some(o.uid.clone())), Some(set_uid.clone()));
        // The ServiceAccount admission plugin mounted the API token volume.
        let volumes = pod.spec.as_ref().and_then(|s| s.volumes.as_ref());
        assert!(
            volumes.is_some_and(|v| v.iter().any(|v| v.name.starts_with("kube-api-access-"))),
            "no service account token volume in {:?}",
            pod.metadata.name
        );
        assert_eq!(
            pod.spec.as_ref().and_then(|s| s.node_name.clone()),
            None,
            "nothing schedules Pods"
        );
    }

    sets.delete("octopus", &DeleteParams::background()).await?;
    wait_until(
        "the garbage collector to delete the orphaned Pods",
        WAIT,
        || async {
            let list = pods
                .list(&ListParams::default().labels("app=octopus"))
                .await?;
            Ok(list.items.is_empty().then_some(()))
        },
    )
    .await?;
    ns.cleanup().await
}

#[tokio::test]
async fn job_controller_creates_a_pod() -> Result<(), ClusterError> {
    let cluster = TestCluster::shared().await?;
    let ns = cluster.namespace("smoke-job").await?;
    let jobs: Api<Job> = ns.api();
    let pods: Api<Pod> = ns.api();
    let job = Job {
        metadata: meta("backup"),
        spec: Some(JobSpec {
            backoff_limit: Some(0),
            template: pod_template("backup", Some("Never")),
            ..JobSpec::default()
        }),
        ..Job::default()
    };
    jobs.create(&PostParams::default(), &job).await?;
    let pod = wait_until("the Job's Pod", WAIT, || async {
        let list = pods
            .list(&ListParams::default().labels("batch.kubernetes.io/job-name=backup"))
            .await?;
        Ok(list.items.into_iter().next())
    })
    .await?;
    let owner = pod.metadata.owner_references.unwrap_or_default();
    assert!(
        owner.iter().any(|o| o.kind == "Job" && o.name == "backup"),
        "{owner:?}"
    );
    ns.cleanup().await
}

#[tokio::test]
async fn rbac_denies_a_service_account_until_a_role_allows_it() -> Result<(), ClusterError> {
    let cluster = TestCluster::shared().await?;
    let ns = cluster.namespace("smoke-rbac").await?;
    let accounts: Api<ServiceAccount> = ns.api();
    accounts
        .create(
            &PostParams::default(),
            &ServiceAccount {
                metadata: meta("nobody"),
                ..ServiceAccount::default()
            },
        )
        .await?;
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            expiration_seconds: Some(600),
            ..TokenRequestSpec::default()
        }),
        ..TokenRequest::default()
    };
    let issued = accounts
        .create_token_request("nobody", &PostParams::default(), &request)
        .await?;
    let token = issued.status.and_then(|s| s.token).unwrap_or_default();
    assert!(!token.is_empty(), "the TokenRequest returned no token");

    let as_nobody: Api<Pod> = Api::namespaced(cluster.client_with_token(&token)?, ns.name());
    match as_nobody.list(&ListParams::default()).await {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 403, "{status:?}"),
        other => panic!("listing pods without permission must be forbidden, got {other:?}"),
    }

    // Positive control: the same token works once a Role grants the verb, so the 403 above
    // was RBAC speaking, not a broken token.
    let roles: Api<Role> = ns.api();
    roles
        .create(
            &PostParams::default(),
            &Role {
                metadata: meta("pod-reader"),
                rules: Some(vec![PolicyRule {
                    api_groups: Some(vec![String::new()]),
                    resources: Some(vec!["pods".to_owned()]),
                    verbs: vec!["list".to_owned()],
                    ..PolicyRule::default()
                }]),
            },
        )
        .await?;
    let bindings: Api<RoleBinding> = ns.api();
    bindings
        .create(
            &PostParams::default(),
            &RoleBinding {
                metadata: meta("nobody-reads-pods"),
                role_ref: RoleRef {
                    api_group: Some("rbac.authorization.k8s.io".to_owned()),
                    kind: "Role".to_owned(),
                    name: "pod-reader".to_owned(),
                },
                subjects: Some(vec![Subject {
                    kind: "ServiceAccount".to_owned(),
                    name: "nobody".to_owned(),
                    namespace: Some(ns.name().to_owned()),
                    ..Subject::default()
                }]),
            },
        )
        .await?;
    wait_until(
        "the RoleBinding to let the token list pods",
        WAIT,
        || async {
            match as_nobody.list(&ListParams::default()).await {
                Ok(_) => Ok(Some(())),
                Err(kube::Error::Api(status)) if status.code == 403 => Ok(None),
                Err(e) => Err(e.into()),
            }
        },
    )
    .await?;
    ns.cleanup().await
}

#[tokio::test]
async fn kubectl_talks_to_the_control_plane() -> Result<(), ClusterError> {
    let cluster = TestCluster::shared().await?;
    let ns = cluster.namespace("smoke-kubectl").await?;
    let out = cluster
        .kubectl([
            "get",
            "serviceaccount",
            "default",
            "-n",
            ns.name(),
            "-o",
            "name",
        ])
        .await?
        .ok()?;
    assert_eq!(out.stdout.trim(), "serviceaccount/default");
    let missing = cluster
        .kubectl(["get", "namespace", "does-not-exist"])
        .await?;
    assert!(!missing.success());
    assert!(missing.stderr.contains("not found"), "{}", missing.stderr);
    ns.cleanup().await
}
