//! `make demo` as a test: runs e2e/demo/demo.sh (which builds the operator image and the
//! Octopus node images, imports them into the real node and runs octopus-demo)
//! non-interactively against the shared control plane (in a namespace of its own) and
//! checks that it finished both upgrades on real pods (the operator installed by the
//! chart, the Octopus nodes and the backup Job as pods on the node, `kubectl get pods -A
//! -o wide` shown mid-roll) and left nothing behind: no namespace, no Helm release (nor
//! its cluster-scoped roles), no database process. Needs the real node (root); fails,
//! never skips, when it, the control plane, kubectl, helm or cargo is missing.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::rbac::v1::ClusterRole;
use kube::Api;
use kube::api::ListParams;
use octopus_e2e::cluster::{TestCluster, kubectl_binary};
use octopus_e2e::helm::helm_binary;

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("demo/demo.sh")
}

/// The pid the demo printed for `what` ("octopus-twin").
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
        .env("HELM", helm_binary().expect("helm (make tools)"))
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
        "$ helm install",
        "$ kubectl get pods -A -o wide",
        "approvedVersion",
        "minor upgrade to 2024.2.50 finished: 3/3 nodes ready, schema 2024.2.50, strategy stop-the-world",
        "Last Backup:",
        "tasks finished: ",
        "(taken, before the schema migration)",
        "$ helm uninstall",
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
    let pid =
        started_pid(&stdout, "octopus-twin").expect("the demo printed no pid for octopus-twin");
    assert!(
        !runs_demo_binary(pid),
        "octopus-twin (pid {pid}) still runs"
    );
    // The operator ran as pods on the real node (their rows in the mid-roll listing), and
    // its release's cluster-scoped roles went with `helm uninstall`.
    let operator_rows = stdout
        .lines()
        .filter(|l| {
            l.starts_with(&namespace) && l.contains("-octopus-operator-") && l.contains("Running")
        })
        .count();
    assert!(
        operator_rows >= 1,
        "no operator pod Running in the listing\n{stdout}"
    );
    // The backup Job ran as a pod on the node and completed.
    assert!(
        stdout.lines().any(|l| l.starts_with("demo-backup-")
            && l.contains("Completed")
            && l.contains("198.18.")),
        "no Completed backup pod on the node in the listing\n{stdout}"
    );
    let roles: Api<ClusterRole> = Api::all(cluster.client());
    let left = roles
        .list(&ListParams::default().labels(&format!("app.kubernetes.io/instance={namespace}")))
        .await
        .expect("listing ClusterRoles");
    assert!(
        left.items.is_empty(),
        "the release's ClusterRoles are still there"
    );
}
