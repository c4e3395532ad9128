//! `octopus-twin`: runs the Octopus Server twin as a process (for the demo and the
//! operator's e2e runs). Prints its URL, serves until Ctrl-C. Bound where pods reach it
//! (the real node's 198.18.N.1) it is also the shared database of Octopus nodes running
//! as real pods of the node image (`e2e/controlplane/octopus-images.sh`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use octopus_e2e::jobs::JobRunner;
use octopus_e2e::twin::{GeneratorConfig, ImagePattern, Timing, Twin, TwinConfig};

#[derive(Parser, Debug)]
#[command(
    about = "Octopus Server twin: plays Octopus HA clusters (and their kubelet) on 127.0.0.1"
)]
struct Args {
    /// Address to serve on.
    #[arg(long, default_value = "127.0.0.1:8065")]
    bind: SocketAddr,
    /// Kubeconfig of the API server whose Octopus pods the twin plays kubelet for.
    /// Without it the twin serves only what is fed to it.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// Play kubelet only for pods in this namespace (all namespaces when unset).
    #[arg(long)]
    namespace: Option<String>,
    /// Image repositories that are Octopus Server (repeatable).
    #[arg(
        long = "image-repository",
        default_value = "octopusdeploy/octopusdeploy"
    )]
    image_repositories: Vec<String>,
    /// From container start until the server checks the schema.
    #[arg(long, default_value_t = 1000)]
    start_delay_ms: u64,
    /// Duration of a schema upgrade.
    #[arg(long, default_value_t = 2000)]
    migration_time_ms: u64,
    /// First crash-loop back-off (doubles up to --crash-backoff-max-ms).
    #[arg(long, default_value_t = 1000)]
    crash_backoff_base_ms: u64,
    #[arg(long, default_value_t = 10_000)]
    crash_backoff_max_ms: u64,
    /// Simulated user deployments per minute and installation.
    #[arg(long, default_value_t = 6.0)]
    deployments_per_minute: f64,
    #[arg(long, default_value_t = 2000)]
    deployment_duration_min_ms: u64,
    #[arg(long, default_value_t = 8000)]
    deployment_duration_max_ms: u64,
    /// Switch the task generator off.
    #[arg(long)]
    no_task_generator: bool,
    /// Seed of all random choices.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Also play kubelet for backup Job pods of --namespace: each one succeeds after a
    /// moment (needs --kubeconfig and --namespace).
    #[arg(long, requires_all = ["kubeconfig", "namespace"])]
    run_backup_jobs: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let kube = match &args.kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            let config = kube::Config::from_custom_kubeconfig(
                kubeconfig,
                &kube::config::KubeConfigOptions::default(),
            )
            .await
            .context("loading kubeconfig")?;
            Some(kube::Client::try_from(config).context("building the kube client")?)
        }
        None => None,
    };
    let generator = GeneratorConfig {
        enabled: !args.no_task_generator,
        deployments_per_minute: args.deployments_per_minute,
        deployment_duration_min: Duration::from_millis(args.deployment_duration_min_ms),
        deployment_duration_max: Duration::from_millis(args.deployment_duration_max_ms),
        ..GeneratorConfig::default()
    };
    let timing = Timing {
        start_delay: Duration::from_millis(args.start_delay_ms),
        migration_time: Duration::from_millis(args.migration_time_ms),
        crash_backoff_base: Duration::from_millis(args.crash_backoff_base_ms),
        crash_backoff_max: Duration::from_millis(args.crash_backoff_max_ms),
        ..Timing::default()
    };
    let jobs = match (&kube, &args.namespace) {
        (Some(client), Some(namespace)) if args.run_backup_jobs => {
            Some(JobRunner::start(client.clone(), namespace))
        }
        _ => None,
    };
    let twin = Twin::start(TwinConfig {
        bind: args.bind,
        kube,
        timing,
        generator,
        image_pattern: ImagePattern {
            repositories: args.image_repositories,
        },
        namespace: args.namespace,
        seed: args.seed,
        ..TwinConfig::default()
    })
    .await?;
    println!("octopus-twin listening on {}", twin.base_url());
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    if let Some(jobs) = &jobs {
        jobs.stop();
    }
    twin.shutdown().await;
    Ok(())
}
