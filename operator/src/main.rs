//! The `octopus-operator` binary: `run` (the controller), `crd` (print the CRD), `plan`
//! (preview an upgrade).
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use octopus_operator::{api, planner};

#[derive(Debug, Parser)]
#[command(
    name = "octopus-operator",
    version,
    about = "Runs Octopus Deploy Server HA clusters on Kubernetes and upgrades them safely"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the OctopusCluster CustomResourceDefinition as YAML.
    Crd,
    /// Preview what a version change means and the steps the operator would take.
    Plan(planner::cli::PlanArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
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
