//! `octopus-twin-node`: the twin's Octopus Server node, PID 1 of the node image. Run as
//! `curl` (a link in the image) it is the few flags of curl the operator's probes use.
//!
//! Env (what Octopus's container reads): `DB_CONNECTION_STRING` (the database to connect
//! to), `OCTOPUS_SERVER_NODE_NAME` (else the host name), `ADMIN_API_KEY`, `TASK_CAP`; and
//! the image's own [`octopus_twin_node::VERSION_ENV`]. Listens on `0.0.0.0:8080`
//! (`OCTOPUS_TWIN_LISTEN`).
//!
//! Lives like Octopus Server: starts, waits while the database decides (schema created,
//! migrated, or refused: then it exits 1 with the refusal, and its kubelet restarts it),
//! serves once running (503 before), heartbeats every 500 ms; on SIGTERM it flags its node
//! offline and exits 0. SIGKILL leaves its node row to age out.

mod curl;
mod forward;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use octopus_twin_node::{
    HEARTBEAT_INTERVAL, Heartbeat, Phase, START_PATH, Start, Started, VERSION_ENV,
    database_address, heartbeat_path, stop_path,
};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

/// How long a starting node keeps trying to reach its database before it gives up.
const CONNECT_FOR: Duration = Duration::from_secs(60);

fn main() -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut args = std::env::args();
    let argv0 = args.next().unwrap_or_default();
    if argv0.rsplit('/').next() == Some("curl") {
        return runtime.block_on(curl::main(args.collect()));
    }
    match runtime.block_on(run()) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("{message}");
            // What kubelet shows as the container's termination message.
            let _ = std::fs::write("/dev/termination-log", &message);
            ExitCode::FAILURE
        }
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// The node: start, serve, heartbeat; Ok on a clean shutdown.
async fn run() -> Result<ExitCode, String> {
    let version = env(VERSION_ENV).ok_or(format!("{VERSION_ENV} is not set by the image"))?;
    let pod = env("HOSTNAME").unwrap_or_else(|| "octopus".into());
    let connection_string = env("DB_CONNECTION_STRING").ok_or("DB_CONNECTION_STRING is not set")?;
    let address = database_address(&connection_string)
        .ok_or("DB_CONNECTION_STRING names no Server: cannot connect to the database")?;
    let start = Start {
        node_name: env("OCTOPUS_SERVER_NODE_NAME").unwrap_or_else(|| pod.clone()),
        pod,
        version,
        connection_string,
        admin_api_key: env("ADMIN_API_KEY"),
        task_cap: env("TASK_CAP").and_then(|v| v.parse().ok()),
    };
    let listen = env("OCTOPUS_TWIN_LISTEN").unwrap_or_else(|| "0.0.0.0:8080".into());
    let database = format!("http://{address}");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| format!("http client: {e}"))?;
    eprintln!(
        "Octopus Server {} (node {}) connecting to the database at {address}",
        start.version, start.node_name
    );
    let key = connect(&client, &database, &start).await?;

    let (phase_tx, phase_rx) = watch::channel(Phase::Starting);
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let upstream = Arc::new(forward::Upstream {
        client: client.clone(),
        database: database.clone(),
        key: key.clone(),
        phase: phase_rx,
    });
    tokio::spawn(forward::serve(listener, upstream));

    let mut term = signal(SignalKind::terminate()).map_err(|e| format!("SIGTERM: {e}"))?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(|e| format!("SIGINT: {e}"))?;
    let mut beat = tokio::time::interval(HEARTBEAT_INTERVAL);
    let mut last = Phase::Starting;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = interrupt.recv() => break,
            _ = beat.tick() => {
                // A missed heartbeat is retried; the database gives up on the process
                // (and answers 404) once its heartbeats are stale.
                let heartbeat = match heartbeat(&client, &database, &key).await {
                    Ok(Some(heartbeat)) => heartbeat,
                    Ok(None) => return Err("the database no longer knows this node process".into()),
                    Err(e) => {
                        eprintln!("heartbeat failed: {e}");
                        continue;
                    }
                };
                if heartbeat.phase != last {
                    eprintln!("node {}: {:?}", start.node_name, heartbeat.phase);
                    last = heartbeat.phase;
                }
                if heartbeat.phase == Phase::Exited {
                    return Err(heartbeat.message.unwrap_or_else(|| "Octopus Server stopped".into()));
                }
                let _ = phase_tx.send(heartbeat.phase);
            }
        }
    }
    // SIGTERM: stop taking requests, flag the node offline, exit 0.
    let _ = phase_tx.send(Phase::Exited);
    let stopped = client
        .post(format!("{database}{}", stop_path(&key)))
        .send()
        .await;
    match stopped {
        Ok(r) if r.status().is_success() => {
            eprintln!("node {}: shut down cleanly", start.node_name);
            Ok(ExitCode::SUCCESS)
        }
        other => Err(format!(
            "could not flag the node offline on shutdown: {other:?}"
        )),
    }
}

/// Registers the process with the database, retrying while it cannot be reached.
async fn connect(
    client: &reqwest::Client,
    database: &str,
    start: &Start,
) -> Result<String, String> {
    let deadline = tokio::time::Instant::now() + CONNECT_FOR;
    loop {
        let sent = client
            .post(format!("{database}{START_PATH}"))
            .header("content-type", "application/json")
            .body(serde_json::to_vec(start).map_err(|e| e.to_string())?)
            .send()
            .await;
        let error = match sent {
            Ok(r) if r.status().is_success() => {
                let body = r.bytes().await.map_err(|e| e.to_string())?;
                let started: Started = serde_json::from_slice(&body)
                    .map_err(|e| format!("the database answered the start oddly: {e}"))?;
                return Ok(started.key);
            }
            Ok(r) => format!("the database refused the connection: HTTP {}", r.status()),
            Err(e) => format!("cannot reach the database: {e}"),
        };
        if tokio::time::Instant::now() >= deadline {
            return Err(error);
        }
        eprintln!("{error}; retrying");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The database's view of the process; `None` when it has forgotten it.
async fn heartbeat(
    client: &reqwest::Client,
    database: &str,
    key: &str,
) -> Result<Option<Heartbeat>, String> {
    let r = client
        .post(format!("{database}{}", heartbeat_path(key)))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if r.status() == reqwest::StatusCode::NOT_FOUND {
        return Ok(None);
    }
    let body = r.bytes().await.map_err(|e| e.to_string())?;
    serde_json::from_slice(&body)
        .map(Some)
        .map_err(|e| format!("odd heartbeat answer: {e}"))
}
