//! The operator's Octopus client against the twin: every call the reconciler makes, over
//! real HTTP on 127.0.0.1, with the twin's refusals mapped to typed errors.

use std::collections::BTreeMap;
use std::time::Duration;

use octopus_e2e::twin::{
    Faults, GeneratorConfig, OctopusEnv, PodView, Secret, Timing, Twin, TwinConfig, TwinHandle,
};
use octopus_operator::octopus::{
    ApiKey, ClientOptions, CreateTask, OctopusApi, OctopusClient, OctopusEndpoint, OctopusError,
    TaskQuery, TaskState, builtin_tasks,
};

const NS: &str = "ns1";
const SVC: &str = "octo";
const KEY: &str = "API-CLIENTTWIN000000000000000";

fn pod(name: &str) -> PodView {
    PodView {
        namespace: NS.into(),
        name: name.into(),
        uid: format!("{name}-uid"),
        labels: BTreeMap::from([("app".into(), "octopus".into())]),
        image: "octopusdeploy/octopusdeploy:2024.1.100".into(),
        env: Ok(OctopusEnv {
            node_name: name.into(),
            connection_string: Secret::new("Server=sql;Database=ClientTwin;Password=x"),
            admin_api_key: Some(Secret::new(KEY)),
            task_cap: None,
        }),
    }
}

async fn cluster() -> TwinHandle {
    let twin = Twin::start(TwinConfig {
        timing: Timing {
            start_delay: Duration::from_millis(50),
            migration_time: Duration::from_millis(100),
            cancel_delay: Duration::from_millis(100),
            api_task_duration: Duration::from_secs(60),
            ..Timing::default()
        },
        generator: GeneratorConfig::off(),
        tick: Duration::from_millis(10),
        ..TwinConfig::default()
    })
    .await
    .expect("twin starts");
    twin.apply_service(NS, SVC, BTreeMap::from([("app".into(), "octopus".into())]));
    for name in ["octo-0", "octo-1"] {
        twin.apply_pod(pod(name));
        assert!(
            twin.wait_pod_ready(NS, name, Duration::from_secs(5)).await,
            "{name} ready"
        );
    }
    twin
}

fn client(twin: &TwinHandle, key: &str) -> OctopusClient {
    client_at(&twin.installation_url(NS, SVC), key)
}

fn client_at(url: &str, key: &str) -> OctopusClient {
    let endpoint = OctopusEndpoint::new(url, ApiKey::new(key));
    OctopusClient::with_options(
        &endpoint,
        ClientOptions {
            timeout: Duration::from_secs(2),
            retries: 1,
            ..ClientOptions::default()
        },
    )
    .expect("client")
}

#[tokio::test]
async fn every_call_the_reconciler_makes() {
    let twin = cluster().await;
    let api = client(&twin, KEY);

    let root = api.root().await.expect("root");
    assert_eq!(root.version, "2024.1.100");
    assert!(root.links.contains_key("OctopusServerClusterSummary"));

    let summary = api.cluster_summary().await.expect("summary");
    let names: Vec<_> = summary.nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["octo-0", "octo-1"]);
    assert!(
        summary
            .nodes
            .iter()
            .all(|n| !n.is_offline && n.last_seen.is_some())
    );

    // Drain is read-modify-write on the node resource and shows in the summary.
    let id = summary.nodes[1].id.clone();
    let node = api.set_node_drain(&id, true).await.expect("drain");
    assert!(node.is_in_maintenance_mode);
    let again = api.cluster_summary().await.expect("summary");
    assert!(
        again
            .nodes
            .iter()
            .any(|n| n.id == id && n.is_in_maintenance_mode)
    );
    assert!(
        !api.set_node_drain(&id, false)
            .await
            .expect("undrain")
            .is_in_maintenance_mode
    );

    // Server-wide maintenance mode, and the health endpoint's 418 while in it.
    assert!(
        api.set_maintenance(true)
            .await
            .expect("on")
            .is_in_maintenance_mode
    );
    let health = api
        .health()
        .await
        .expect("health answers even when not normal");
    assert!(!health.is_operating_normally);
    assert!(
        !api.set_maintenance(false)
            .await
            .expect("off")
            .is_in_maintenance_mode
    );
    assert!(api.health().await.expect("health").is_operating_normally);

    // Tasks: create a system task, find it running, cancel it.
    let task = api
        .create_task(
            &CreateTask::new(builtin_tasks::HEALTH, "client test")
                .argument("EnvironmentId", "Environments-1"),
        )
        .await
        .expect("create");
    let running = api
        .all_tasks(&TaskQuery {
            states: vec![TaskState::Executing, TaskState::Cancelling],
            ..TaskQuery::default()
        })
        .await
        .expect("tasks");
    assert!(
        running
            .iter()
            .any(|t| t.id == task.id && t.server_node.is_some())
    );
    let cancelled = api.cancel_task(&task.id).await.expect("cancel");
    assert!(matches!(
        cancelled.state,
        TaskState::Cancelling | TaskState::Canceled
    ));

    let ping = api.ping().await.expect("ping");
    assert!(ping.is_serving());

    // Refusals become typed errors.
    match api.get_node("OctopusServerNodes-nope").await {
        Err(OctopusError::NotFound { .. }) => {}
        other => panic!("expected NotFound, got {other:?}"),
    }
    let stranger = client(&twin, "API-NOTAKEY00000000000000000");
    match stranger.cluster_summary().await {
        Err(e @ OctopusError::Unauthorized { .. }) => {
            assert_eq!(e.reason(), "OctopusUnauthorized");
            assert!(!e.to_string().contains("API-NOTAKEY"), "key leaked: {e}");
        }
        other => panic!("expected Unauthorized, got {other:?}"),
    }
    twin.set_faults(
        NS,
        SVC,
        Faults {
            error_rate: 1.0,
            ..Faults::default()
        },
    );
    match api.cluster_summary().await {
        Err(e @ OctopusError::Server { .. }) => assert!(e.is_transient()),
        other => panic!("expected a server error, got {other:?}"),
    }
    twin.set_faults(
        NS,
        SVC,
        Faults {
            drop_rate: 1.0,
            ..Faults::default()
        },
    );
    match api.cluster_summary().await {
        Err(OctopusError::Unreachable { .. }) => {}
        other => panic!("expected Unreachable, got {other:?}"),
    }
    twin.shutdown().await;
}

#[tokio::test]
async fn each_node_answers_its_own_version_and_ping_at_its_own_address() {
    let twin = cluster().await;
    // octo-1 is replaced by a newer patch; the load balancer mixes both, each node does not.
    twin.apply_pod(PodView {
        image: "octopusdeploy/octopusdeploy:2024.1.200".into(),
        ..pod("octo-1")
    });
    let octo_1 = client_at(&twin.node_url(NS, SVC, "octo-1"), KEY);
    let mut version = String::new();
    for _ in 0..300 {
        if let Ok(root) = octo_1.root().await {
            version = root.version;
            if version == "2024.1.200" {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(version, "2024.1.200");
    let octo_0 = client_at(&twin.node_url(NS, SVC, "octo-0"), KEY);
    assert_eq!(octo_0.root().await.expect("root").version, "2024.1.100");

    // Its own ping: 418 once drained, while the other node still serves.
    let api = client(&twin, KEY);
    api.set_node_drain("OctopusServerNodes-octo-1", true)
        .await
        .expect("drain");
    assert_eq!(octo_1.ping().await.expect("ping").status, 418);
    assert!(octo_0.ping().await.expect("ping").is_serving());

    // A pod the Service does not select, or that does not run, has no address.
    let nobody = client_at(&twin.node_url(NS, SVC, "octo-9"), KEY);
    match nobody.root().await {
        Err(OctopusError::Server { status: 503, .. }) => {}
        other => panic!("expected 503 for a pod that is not there, got {other:?}"),
    }
    twin.shutdown().await;
}

#[tokio::test]
async fn tentacle_tasks_go_to_the_default_space_with_the_arguments_octopus_takes() {
    let twin = cluster().await;
    let api = client(&twin, KEY);
    let space = api
        .default_space()
        .await
        .expect("spaces")
        .expect("a default space");
    assert_eq!(space.id, "Spaces-1");
    let machines = api
        .all_machines(&space.id, &["Environments-1".to_string()])
        .await
        .expect("machines");
    let ids: Vec<&str> = machines.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids, ["Machines-1", "Machines-2"]);

    let calamari = api
        .create_task(
            &CreateTask::new(builtin_tasks::UPDATE_CALAMARI, "Update Calamari")
                .argument("MachineIds", ids.clone())
                .in_space(space.id.clone()),
        )
        .await
        .expect("UpdateCalamari with MachineIds");
    assert_eq!(calamari.space_id.as_deref(), Some("Spaces-1"));
    assert_eq!(calamari.arguments["MachineIds"], serde_json::json!(ids));
    let upgrade = api
        .create_task(
            &CreateTask::new(builtin_tasks::UPGRADE, "Upgrade Tentacles")
                .argument("EnvironmentId", "Environments-1")
                .in_space(space.id.clone()),
        )
        .await
        .expect("Upgrade in the space");
    assert_eq!(upgrade.space_id.as_deref(), Some("Spaces-1"));

    // The shape older operators sent is refused as Octopus refuses it.
    match api
        .create_task(
            &CreateTask::new(builtin_tasks::UPDATE_CALAMARI, "Update Calamari")
                .argument("EnvironmentId", "Environments-1"),
        )
        .await
    {
        Err(e @ OctopusError::Rejected { status: 400, .. }) => {
            let text = e.to_string();
            assert!(
                text.contains("There was a problem with your request"),
                "{text}"
            );
            assert!(
                text.contains("'EnvironmentId' is not an argument"),
                "{text}"
            );
            assert!(text.contains("needs MachineIds"), "{text}");
        }
        other => panic!("expected a 400 refusal, got {other:?}"),
    }
    twin.shutdown().await;
}
