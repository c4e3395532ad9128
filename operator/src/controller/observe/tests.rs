//! What `observe` reads from a pod as the kubelet reports it.

use k8s_openapi::api::core::v1::Pod;
use serde_json::json;

use super::*;

fn pod(container_state: serde_json::Value, ready: bool) -> Pod {
    let ready = if ready { "True" } else { "False" };
    serde_json::from_value(json!({
        "metadata": {"name": "octo-2", "creationTimestamp": "2026-03-04T10:00:00Z"},
        "spec": {"containers": [{"name": "octopus", "image": "octopusdeploy/octopusdeploy:2024.1.200"}]},
        "status": {
            "conditions": [{"type": "Ready", "status": ready, "lastTransitionTime": "2026-03-04T10:01:00Z"}],
            "containerStatuses": [{
                "name": "octopus", "image": "octopusdeploy/octopusdeploy:2024.1.200", "imageID": "",
                "ready": false, "restartCount": 4, "state": container_state,
            }],
        },
    }))
    .expect("a pod")
}

fn waiting(reason: &str) -> PodView {
    let state = json!({"waiting": {"reason": reason, "message": "the kubelet's words"}});
    pod_view("octo", &pod(state, false)).expect("a node pod")
}

#[test]
fn image_pull_and_config_errors_fail_the_start_and_a_crash_loop_counts_restarts() {
    for (reason, failure) in [
        ("ErrImagePull", Some(StartFailure::ImagePull)),
        ("ImagePullBackOff", Some(StartFailure::ImagePull)),
        ("InvalidImageName", Some(StartFailure::ImagePull)),
        (
            "CreateContainerConfigError",
            Some(StartFailure::ContainerConfig),
        ),
        ("CreateContainerError", Some(StartFailure::ContainerConfig)),
        ("CrashLoopBackOff", None),
        ("ContainerCreating", None),
    ] {
        let view = waiting(reason);
        let w = view.waiting.clone().expect("waiting");
        assert_eq!(
            (w.kubelet_reason.as_str(), w.failure, w.message.as_deref()),
            (reason, failure, Some("the kubelet's words"))
        );
        assert_eq!(view.crash_looping, reason == "CrashLoopBackOff", "{reason}");
        assert_eq!(
            view.is_down(),
            failure.is_some() || reason == "CrashLoopBackOff",
            "{reason}"
        );
        assert_eq!(view.restarts, 4);
        assert_eq!(view.started_at, None);
    }
}

#[test]
fn a_running_pod_tells_when_it_was_created_started_and_became_ready() {
    let state = json!({"running": {"startedAt": "2026-03-04T10:00:20Z"}});
    let view = pod_view("octo", &pod(state.clone(), true)).expect("a node pod");
    let at = |s: &str| s.parse::<Timestamp>().expect("a time");
    assert_eq!(view.created_at, Some(at("2026-03-04T10:00:00Z")));
    assert_eq!(view.started_at, Some(at("2026-03-04T10:00:20Z")));
    assert_eq!(view.ready_since, Some(at("2026-03-04T10:01:00Z")));
    assert!(view.waiting.is_none() && !view.is_down());
    // The node's clock: its container's start, never before the step's own start.
    assert_eq!(
        view.start_clock(at("2026-03-04T09:00:00Z")),
        at("2026-03-04T10:00:20Z")
    );
    assert_eq!(
        view.start_clock(at("2026-03-04T11:00:00Z")),
        at("2026-03-04T11:00:00Z")
    );
    let not_ready = pod_view("octo", &pod(state, false)).expect("a node pod");
    assert_eq!(not_ready.ready_since, None);
}
