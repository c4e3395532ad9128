//! The twin against Octopus's official TypeScript client, `@octopusdeploy/api-client`
//! (pinned in `e2e/tsclient/package.json`, locked by its `package-lock.json`), driven as
//! a user script would drive a real server: `Client.create` with a wrong and a right API
//! key, spaces and space resolution by name, the root document and server status, nodes
//! list/get/drain/undrain/summary/ping and maintenance mode through the client's request
//! methods, tasks create/get/filter by state and node/details/raw/cancel/wait.
//!
//! `npm ci` installs the client (from the npm cache when it holds it, else from the
//! registry), then Node runs `e2e/tsclient/contract.mjs` against the twin on 127.0.0.1.
//! The script prints one line per call and exits non-zero naming the first call that
//! failed; this test fails with that output. No Node or npm on the machine is a failure
//! (`.ci/run` installs them), never a skip.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use octopus_e2e::twin::{EventKind, Twin, TwinConfig};

const NS: &str = "tsclient";
const SVC: &str = "octo";
const KEY: &str = "API-TSCLIENTCONTRACT0000000000";
const VERSION: &str = "2024.2.9220";
const NODES: [&str; 2] = ["octo-0", "octo-1"];

fn project_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tsclient")
}

/// Runs a tool in the client project (off the runtime's threads, which serve the twin);
/// the output, or a panic naming what is missing.
async fn run(program: &'static str, args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut command = Command::new(program);
    command
        .args(args)
        .current_dir(project_dir())
        .envs(envs.iter().copied())
        // The twin is on loopback: a proxy from the environment must not be asked.
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("no_proxy", "127.0.0.1,localhost");
    tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("the blocking task runs")
        .unwrap_or_else(|e| panic!("cannot run {program} (install Node.js and npm): {e}"))
}

fn report(what: &str, out: &Output) -> String {
    format!(
        "{what}: {}\n--- stdout\n{}--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test]
async fn official_typescript_client_drives_the_twin() {
    let install = run(
        "npm",
        &["ci", "--prefer-offline", "--no-audit", "--no-fund"],
        &[],
    )
    .await;
    assert!(install.status.success(), "{}", report("npm ci", &install));

    let twin = Twin::start(TwinConfig::for_api_clients())
        .await
        .expect("twin starts");
    let url = twin
        .play_installation(
            NS,
            SVC,
            &NODES,
            &format!("octopusdeploy/octopusdeploy:{VERSION}"),
            KEY,
        )
        .await
        .expect("both pods ready");

    let nodes = NODES.join(",");
    let out = run(
        "node",
        &["contract.mjs"],
        &[
            ("OCTOPUS_URL", &url),
            ("OCTOPUS_API_KEY", KEY),
            ("OCTOPUS_VERSION", VERSION),
            ("OCTOPUS_NODES", &nodes),
        ],
    )
    .await;
    // What the twin saw: every request the client made, by route template and status.
    let mut seen: BTreeMap<(String, String, u16), usize> = BTreeMap::new();
    for event in twin.installation_events(NS, SVC) {
        if let EventKind::HttpRequest {
            method,
            route,
            status,
            ..
        } = event.kind
        {
            *seen.entry((route, method, status)).or_default() += 1;
        }
    }
    twin.shutdown().await;
    let text = report("node contract.mjs", &out);
    let routes: Vec<String> = seen
        .iter()
        .map(|((route, method, status), n)| format!("{status} {method} {route} x{n}"))
        .collect();
    // Shown with --nocapture: the calls and what the twin answered.
    println!(
        "{text}--- requests the twin answered\n{}",
        routes.join("\n")
    );
    assert!(out.status.success(), "{text}");
    // The refusals the script asks for, and nothing the twin failed to route.
    let refusals: Vec<&String> = routes
        .iter()
        .filter(|r| !r.starts_with("200 ") && !r.starts_with("201 "))
        .collect();
    assert_eq!(
        refusals,
        [
            "401 GET /api/spaces x1",
            "400 POST /api/{spaceId}/tasks x1",
            "404 GET /api/{spaceId}/tasks/{id} x1",
        ],
        "unexpected refusals; all requests:\n{}",
        routes.join("\n")
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("contract: every call answered as expected"),
        "the script stopped before its last call\n{text}"
    );
}
