//! helm for the tests that install the chart: which binary (env `HELM`, else the one
//! e2e/tools/install-helm.sh puts in the cache) and how it runs (its own state directories,
//! stdout returned, a non-zero exit an error with stderr). A missing helm is an error,
//! never a skip.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};

use crate::cluster::pin;

/// The repository's root directory.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// charts/octopus-operator.
pub fn chart_dir() -> PathBuf {
    repo_root().join("charts/octopus-operator")
}

/// env `HELM`, else the helm e2e/tools/install-helm.sh installs; an error (never a skip)
/// when there is none.
pub fn helm_binary() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("HELM") {
        return Ok(path.into());
    }
    let cache = match std::env::var_os("OCTOPUS_OPERATOR_CACHE") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").context("HOME is not set")?)
            .join(".cache/octopus-operator"),
    };
    let package = pin("HELM_LAYER_PACKAGE").context("versions.env has no HELM_LAYER_PACKAGE")?;
    let version = pin("HELM_LAYER_VERSION").context("versions.env has no HELM_LAYER_VERSION")?;
    let path = cache
        .join("tools")
        .join(format!("{package}-{version}"))
        .join("helm");
    ensure!(
        path.is_file(),
        "helm is not installed at {}: run `e2e/tools/install-helm.sh` (or `make tools`), \
         or set HELM to a helm binary",
        path.display()
    );
    Ok(path)
}

/// What a helm run printed and whether it succeeded.
#[derive(Debug)]
pub struct HelmOutput {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Runs helm (its `HELM_*` state kept out of the repo) and returns what it printed, exit
/// status included: for runs whose failure is the expected outcome.
pub fn helm_output<I, S>(args: I) -> Result<HelmOutput>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let helm = helm_binary()?;
    let home = std::env::temp_dir().join("octopus-e2e-helm");
    let output = Command::new(&helm)
        .args(args)
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .output()
        .with_context(|| format!("cannot run {}", helm.display()))?;
    Ok(HelmOutput {
        success: output.status.success(),
        stdout: String::from_utf8(output.stdout).context("helm printed non-UTF-8")?,
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}

/// Runs helm and returns its stdout; a non-zero exit is an error carrying stderr.
pub fn helm<I, S>(args: I) -> Result<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<_> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
    let out = helm_output(&args)?;
    if !out.success {
        bail!(
            "helm {args:?} failed\nstdout:\n{}\nstderr:\n{}",
            out.stdout,
            out.stderr
        );
    }
    Ok(out.stdout)
}
