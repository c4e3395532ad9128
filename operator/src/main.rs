//! The `octopus-operator` binary: `run` (the controller), `crd` (print the CRD), `plan`
//! (preview an upgrade).
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use octopus_operator::planner;

#[derive(Debug, Parser)]
#[command(name = "octopus-operator", version, about = "Runs Octopus Deploy Server HA clusters on Kubernetes and upgrades them safely")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Preview what a version change means and the steps the operator would take.
    Plan(planner::cli::PlanArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Plan(args) => planner::cli::run(&args),
    }
}
