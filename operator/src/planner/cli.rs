//! `octopus-operator plan`: previews what a version change means and the steps the operator
//! would take, without touching any cluster.
//!
//! Contract (scripts depend on it): with `-o json` it prints one JSON object (see
//! [`Plan`](super::Plan)) and exits 0 whether the change is allowed or blocked. A version
//! that does not parse exits 2 with one line on stderr naming the bad value. Without
//! `-o json` it prints a table of the same plan.
use std::process::ExitCode;

use super::{PlanRequest, plan, table};
use crate::version::OctopusVersion;

/// Default `--nodes`: a typical HA cluster, so the preview shows how nodes interleave.
pub const DEFAULT_NODES: u32 = 3;

/// Exit code for unusable input (the same code clap uses for usage errors).
const EXIT_USAGE: u8 = 2;

/// Output formats of `octopus-operator plan`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// A human-readable summary and step table.
    Table,
    /// One JSON object on one line.
    Json,
}

/// Arguments of `octopus-operator plan`.
#[derive(Debug, clap::Args)]
pub struct PlanArgs {
    /// Version the cluster runs now, e.g. 2024.1.12345 (or 2.6.5.1010 before 3.0).
    #[arg(long, value_name = "VERSION")]
    pub from: String,
    /// Version to move to.
    #[arg(long, value_name = "VERSION")]
    pub to: String,
    /// Number of Octopus Server nodes in the cluster (spec.replicas).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_NODES,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub nodes: u32,
    /// Approve a major upgrade to the target's major version, as setting
    /// spec.upgrade.approvedMajorVersion to it would.
    #[arg(long)]
    pub approve_major: bool,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// Runs `octopus-operator plan`.
pub fn run(args: &PlanArgs) -> ExitCode {
    let (from, to) = match (parse("--from", &args.from), parse("--to", &args.to)) {
        (Ok(from), Ok(to)) => (from, to),
        (Err(line), _) | (_, Err(line)) => {
            eprintln!("{line}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let request = PlanRequest {
        approved_major: args.approve_major.then(|| to.major()),
        from,
        to,
        nodes: args.nodes,
    };
    let plan = plan(&request);
    match args.output {
        Output::Table => print!("{}", table::render(&plan)),
        Output::Json => match serde_json::to_string(&plan) {
            Ok(json) => println!("{json}"),
            Err(err) => {
                eprintln!("error: cannot serialise the plan: {err}");
                return ExitCode::FAILURE;
            }
        },
    }
    ExitCode::SUCCESS
}

/// Parses one version argument; the error is the single stderr line.
fn parse(flag: &str, value: &str) -> Result<OctopusVersion, String> {
    OctopusVersion::parse(value).map_err(|err| format!("error: {flag}: {err}"))
}
