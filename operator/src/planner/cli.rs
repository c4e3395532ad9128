//! `octopus-operator plan` (stub until the planner lands).
use std::process::ExitCode;

/// Arguments of `octopus-operator plan`.
#[derive(Debug, clap::Args)]
pub struct PlanArgs {}

/// Runs `octopus-operator plan`.
pub fn run(_args: &PlanArgs) -> ExitCode {
    ExitCode::from(2)
}
