//! `make demo` as a test: runs e2e/demo/demo.sh (which builds and runs octopus-demo)
//! non-interactively against the shared control plane (in a namespace of its own) and
//! checks that it finished both upgrades and left nothing behind: no namespace, no twin,
//! no operator. Fails, never skips, when the control plane, kubectl or cargo is missing.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use octopus_e2e::cluster::{TestCluster, kubectl_binary};

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("demo/demo.sh")
}

/// The pid the demo printed for `what` ("octopus-twin", "octopus-operator").
fn started_pid(output: &str, what: &str) -> Option<u32> {
    let marker = format!("started {what} (pid ");
    let rest = &output[output.find(&marker)? + marker.len()..];
    rest[..rest.find(')')?].parse().ok()
}

/// Whether a process with this pid runs one of our binaries (a reused pid does not count).
fn runs_demo_binary(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|cmdline| String::from_utf8_lossy(&cmdline).contains("octopus-"))
        .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_runs_both_upgrades_and_cleans_up() {
    let cluster = TestCluster::shared()
        .await
        .expect("the e2e control plane is required");
    let suffix: String = (0..6)
        .map(|_| fastrand::alphanumeric().to_ascii_lowercase())
        .collect();
    let namespace = format!("demo-e2e-{suffix}");
    let mut command = Command::new("bash");
    command
        .arg(script())
        .env("DEMO_KUBECONFIG", cluster.kubeconfig())
        .env("DEMO_NAMESPACE", &namespace)
        .env("DEMO_NONINTERACTIVE", "1")
        .env("DEMO_STAGE_TIMEOUT", "150")
        .env("KUBECTL", kubectl_binary())
        // The script builds the operator and the demo; the twin is this package's own.
        .env("DEMO_TWIN_BIN", env!("CARGO_BIN_EXE_octopus-twin"))
        .stdin(Stdio::null());
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("join")
        .expect("running bash e2e/demo/demo.sh");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "demo.sh {}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        output.status
    );
    for shown in [
        "cluster ready: 3/3 nodes on 2024.1.100",
        "patch upgrade to 2024.1.200 finished: 3/3 nodes ready, strategy rolling",
        "UpgradeBlocked: SchemaUpgradeNotApproved (the cluster still serves 2024.1.200)",
        "approvedVersion",
        "minor upgrade to 2024.2.50 finished: 3/3 nodes ready, schema 2024.2.50, strategy stop-the-world",
        "Last Backup:",
        "tasks finished: ",
        "demo finished: 2024.1.100 -> 2024.1.200 (rolling) -> 2024.2.50",
        &format!("namespace {namespace} deleted"),
    ] {
        assert!(
            stdout.contains(shown),
            "the demo's output lacks {shown:?}\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
        );
    }
    // Nothing left behind.
    let namespaces: Api<Namespace> = Api::all(cluster.client());
    let left = namespaces
        .get_opt(&namespace)
        .await
        .expect("reading the namespace");
    assert!(left.is_none(), "namespace {namespace} is still there");
    for what in ["octopus-twin", "octopus-operator"] {
        let pid = started_pid(&stdout, what)
            .unwrap_or_else(|| panic!("the demo printed no pid for {what}"));
        assert!(!runs_demo_binary(pid), "{what} (pid {pid}) still runs");
    }
}
