//! The `octopus-operator` binary: `run` (the controller), `crd` (print the CRD), `plan`
//! (preview an upgrade), `status` (where a cluster stands). Installed as `kubectl-octopus`,
//! it is the kubectl plugin `kubectl octopus status NAME`.
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{ArgAction, Parser, Subcommand, ValueEnum};
use octopus_operator::controller::{self, metrics::Metrics};
use octopus_operator::process::check;
use octopus_operator::process::leader::{self, Election, LeaseSettings};
use octopus_operator::process::probes::{self, Health};
use octopus_operator::process::{self, Exit};
use octopus_operator::{api, inspect, planner};
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
    /// Show where an OctopusCluster stands: nodes, upgrade steps, why it holds, last backup.
    Status(inspect::StatusArgs),
    /// Check that an installed operator works: a ready replica behind its metrics Service,
    /// a live leader, the OctopusCluster API readable (the chart's `helm test`).
    Check(check::CheckArgs),
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
    /// A node's own Octopus URL when spec.api.nodeUrlTemplate is unset; {pod} is the
    /// node's pod, {service} the headless Service, {namespace} and {name} the cluster's.
    #[arg(long, default_value = controller::DEFAULT_NODE_URL_TEMPLATE)]
    node_url_template: String,
    /// How often to look at Octopus while waiting on it, e.g. 5s.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    poll_interval: Duration,
    /// At most this many OctopusClusters upgrade at once (blast radius); the others wait
    /// with the reason WaitingForUpgradeSlot. Unset or 0: no cap.
    #[arg(long, env = "MAX_CONCURRENT_UPGRADES", default_value_t = 0)]
    max_concurrent_upgrades: u32,
    /// How often a cluster with nothing under way is looked at again, e.g. 5m.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    resync_interval: Duration,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(flatten)]
    election: ElectionArgs,
}

/// Leader election: with several replicas only the holder of the Lease reconciles.
#[derive(Debug, clap::Args)]
struct ElectionArgs {
    /// Take part in leader election (`--leader-elect=false`: reconcile without a Lease;
    /// only for a single replica).
    #[arg(long, env = "LEADER_ELECT", default_value_t = true, action = ArgAction::Set)]
    leader_elect: bool,
    /// Name of the Lease.
    #[arg(
        long,
        env = "LEADER_ELECTION_LEASE_NAME",
        default_value = "octopus-operator"
    )]
    leader_election_lease_name: String,
    /// Namespace of the Lease (in a pod: its own namespace, from the downward API; default:
    /// the kubeconfig's or service account's namespace).
    #[arg(long, env = "POD_NAMESPACE")]
    leader_election_namespace: Option<String>,
    /// This replica's identity in the Lease (in a pod: the pod name; default: host name
    /// and process id).
    #[arg(long, env = "POD_NAME")]
    leader_election_identity: Option<String>,
    /// How long the Lease stays valid after its last renewal (whole seconds); a standby
    /// takes over at most this long after the leader stopped renewing.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    lease_duration: Duration,
    /// How often the leader renews the Lease (whole seconds, shorter than the duration;
    /// the difference is the clock skew tolerated between nodes).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    lease_renew_period: Duration,
}

impl ElectionArgs {
    fn settings(&self) -> Option<LeaseSettings> {
        self.leader_elect.then(|| LeaseSettings {
            name: self.leader_election_lease_name.clone(),
            namespace: self.leader_election_namespace.clone(),
            identity: self
                .leader_election_identity
                .clone()
                .unwrap_or_else(leader::default_identity),
            duration: self.lease_duration,
            renew: self.lease_renew_period,
        })
    }
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

/// The name of the binary as the kubectl plugin `kubectl octopus`.
const KUBECTL_PLUGIN: &str = "kubectl-octopus";

fn main() -> ExitCode {
    let cli = parse();
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
        Command::Status(args) => inspect::run(&args),
        Command::Check(args) => check::run(&args),
    }
}

/// The arguments; usage messages say `kubectl octopus` when run as the kubectl plugin.
fn parse() -> Cli {
    use clap::{CommandFactory, FromArgMatches};
    let plugin = std::env::args_os()
        .next()
        .and_then(|arg0| {
            std::path::Path::new(&arg0)
                .file_name()
                .map(|n| n == KUBECTL_PLUGIN)
        })
        .unwrap_or(false);
    let mut command = Cli::command();
    if plugin {
        command = command.bin_name("kubectl octopus");
    }
    let matches = command.get_matches();
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
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
    runtime.block_on(operate(args))
}

async fn operate(args: RunArgs) -> ExitCode {
    let settings = args.election.settings();
    if let Some(Err(e)) = settings.as_ref().map(LeaseSettings::seconds) {
        error!(error = %e, "invalid leader election settings");
        return ExitCode::FAILURE;
    }
    let kube_config = match kube::Config::infer().await {
        Ok(c) => c,
        Err(e) => {
            error!(error = %e, "no Kubernetes API configuration");
            return ExitCode::FAILURE;
        }
    };
    let metrics = Arc::new(Metrics::default());
    let client = match process::client::counted(kube_config.clone(), metrics.clone()) {
        Ok(c) => c,
        Err(e) => {
            error!(error = %e, "cannot reach the Kubernetes API");
            return ExitCode::FAILURE;
        }
    };
    let health = Arc::new(Health::default());
    let listener = match tokio::net::TcpListener::bind(args.metrics_addr).await {
        Ok(l) => l,
        Err(e) => {
            error!(error = %e, addr = %args.metrics_addr, "cannot bind the metrics address");
            return ExitCode::FAILURE;
        }
    };
    let addr = listener.local_addr().unwrap_or(args.metrics_addr);
    let app = probes::router(metrics.clone(), health.clone());
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            error!(error = %e, "metrics server stopped");
        }
    });
    let election = match settings {
        Some(settings) => match Election::join(&kube_config, settings).await {
            Ok(e) => Some(e),
            Err(e) => {
                error!(error = %e, "cannot take part in leader election");
                return ExitCode::FAILURE;
            }
        },
        None => None,
    };
    let config = controller::Config {
        api_url_template: args.api_url_template,
        node_url_template: args.node_url_template,
        poll_interval: args.poll_interval,
        resync_interval: args.resync_interval,
        namespace: args.namespace,
        max_concurrent_upgrades: std::num::NonZeroU32::new(args.max_concurrent_upgrades),
    };
    info!(?config, %addr, lease = ?election.as_ref().map(Election::lease), "octopus-operator starting");
    let (m, h) = (metrics.clone(), health.clone());
    let run = move || controller::run_with(client, config, m, h);
    match process::supervise(run, election, health, metrics, shutdown_signal()).await {
        Exit::Shutdown => {
            info!("octopus-operator stopped");
            ExitCode::SUCCESS
        }
        Exit::LostLeadership(why) => {
            // Exit at once: nothing of this reign may act after another replica took over.
            error!(%why, "lost leadership; exiting");
            std::process::exit(1);
        }
        Exit::ControllerDied(why) => {
            error!(%why, "octopus-operator stopped after its controller died");
            ExitCode::FAILURE
        }
    }
}

/// SIGTERM (the kubelet) or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
