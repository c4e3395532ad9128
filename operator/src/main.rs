//! The `octopus-operator` binary: `run` (the controller), `crd` (print the CRD), `plan`
//! (preview an upgrade).
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use clap::{Parser, Subcommand, ValueEnum};
use octopus_operator::controller::{self, metrics::Metrics};
use octopus_operator::{api, planner};
use tracing::{error, info};
use tracing_subscriber::EnvFilter;

#[derive(Debug, Parser)]
#[command(
    name = "octopus-operator",
    version = version(),
    about = "Runs Octopus Deploy Server HA clusters on Kubernetes and upgrades them safely"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the controller.
    Run(RunArgs),
    /// Print the OctopusCluster CustomResourceDefinition as YAML.
    Crd,
    /// Preview what a version change means and the steps the operator would take.
    Plan(planner::cli::PlanArgs),
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "WATCH_NAMESPACE")]
    namespace: Option<String>,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, default_value = "0.0.0.0:8080")]
    metrics_addr: SocketAddr,
    /// Octopus API URL when spec.api.url is unset; {name} is the cluster's client Service,
    /// {namespace} its namespace.
    #[arg(long, default_value = "http://{name}.{namespace}.svc:8080")]
    api_url_template: String,
    /// How often to look at Octopus while waiting on it, e.g. 5s.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    poll_interval: Duration,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// The crate version, plus the git revision when the build passes one in
/// `OCTOPUS_OPERATOR_REVISION` (`make image` does). Read here, not in a build script, so a
/// new revision recompiles only the binary, not the library.
fn version() -> &'static str {
    match option_env!("OCTOPUS_OPERATOR_REVISION") {
        Some(revision) if !revision.is_empty() => {
            Box::leak(format!("{} ({revision})", env!("CARGO_PKG_VERSION")).into_boxed_str())
        }
        _ => env!("CARGO_PKG_VERSION"),
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let d: kube::core::Duration = s.parse().map_err(|e| format!("{s:?}: {e}"))?;
    Ok(d.into())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => run(args),
        Command::Crd => match api::crd_yaml() {
            Ok(yaml) => {
                print!("{yaml}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("octopus-operator crd: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Plan(args) => planner::cli::run(&args),
    }
}

fn run(args: RunArgs) -> ExitCode {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    match args.log_format {
        LogFormat::Text => tracing_subscriber::fmt().with_env_filter(filter).init(),
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init(),
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let client = match kube::Client::try_default().await {
            Ok(c) => c,
            Err(e) => {
                error!(error = %e, "cannot reach the Kubernetes API");
                return ExitCode::FAILURE;
            }
        };
        let metrics = Arc::new(Metrics::default());
        let listener = match tokio::net::TcpListener::bind(args.metrics_addr).await {
            Ok(l) => l,
            Err(e) => {
                error!(error = %e, addr = %args.metrics_addr, "cannot bind the metrics address");
                return ExitCode::FAILURE;
            }
        };
        let served = metrics.clone();
        let app = Router::new()
            .route("/metrics", get(move || async move { served.encode() }))
            .route("/healthz", get(|| async { "ok" }))
            .route("/readyz", get(|| async { "ok" }));
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                error!(error = %e, "metrics server stopped");
            }
        });
        let config = controller::Config {
            api_url_template: args.api_url_template,
            poll_interval: args.poll_interval,
            namespace: args.namespace,
            ..controller::Config::default()
        };
        info!(?config, "octopus-operator starting");
        controller::run(client, config, metrics).await;
        info!("octopus-operator stopped");
        ExitCode::SUCCESS
    })
}
