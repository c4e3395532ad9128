//! `octopus-operator status NAME [-n NAMESPACE]` (also the kubectl plugin
//! `kubectl octopus status NAME`): where one OctopusCluster stands, read from the API
//! server with the kubeconfig kubectl would use (`KUBECONFIG`, current context). It only
//! reads the `OctopusCluster`: everything it shows is in its status, written by the
//! operator. [`report`] formats it (pure, tested on a fixture).

pub mod report;

use std::process::ExitCode;

use kube::Api;
use kube::config::KubeConfigOptions;

use crate::api::OctopusCluster;

/// Arguments of `octopus-operator status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// The OctopusCluster.
    pub name: String,
    /// Its namespace (default: the kubeconfig context's namespace).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// The kubeconfig context to use (default: the current one).
    #[arg(long)]
    pub context: Option<String>,
}

/// Runs `octopus-operator status`: 0 when printed, 1 when the cluster cannot be read.
pub fn run(args: &StatusArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("status: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(fetch(args)) {
        Ok(cluster) => {
            print!("{}", report::render(&cluster, jiff::Timestamp::now()));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("status: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn fetch(args: &StatusArgs) -> Result<OctopusCluster, String> {
    let options = KubeConfigOptions {
        context: args.context.clone(),
        ..KubeConfigOptions::default()
    };
    let config = match &args.context {
        Some(_) => kube::Config::from_kubeconfig(&options)
            .await
            .map_err(|e| e.to_string())?,
        None => kube::Config::infer().await.map_err(|e| e.to_string())?,
    };
    let client = kube::Client::try_from(config).map_err(|e| e.to_string())?;
    let namespace = args
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_string());
    let api: Api<OctopusCluster> = Api::namespaced(client, &namespace);
    match api.get_opt(&args.name).await {
        Ok(Some(cluster)) => Ok(cluster),
        Ok(None) => Err(format!(
            "OctopusCluster {:?} not found in namespace {namespace:?}",
            args.name
        )),
        Err(e) => Err(format!(
            "reading OctopusCluster {namespace}/{}: {e}",
            args.name
        )),
    }
}
