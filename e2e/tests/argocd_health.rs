//! The Argo CD health check of OctopusCluster
//! (charts/octopus-operator/argocd/octopusoperator.dev/OctopusCluster/health.lua) run by
//! Argo CD's own Lua code: e2e/argocd-health is a small Go program on
//! github.com/argoproj/argo-cd/v3/util/lua that evaluates every case of the check's
//! health_test.yaml, the file format of Argo CD's resource_customizations. Any failing case
//! fails the test. The runner is built (minutes the first time, then cached) by
//! e2e/argocd-health/build.sh; a missing Go fails the test, never skips it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{Context, Result, ensure};
use serde::Deserialize;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("e2e/ has a parent")
        .to_owned()
}

fn check_dir() -> PathBuf {
    repo_root().join("charts/octopus-operator/argocd/octopusoperator.dev/OctopusCluster")
}

/// Builds (or finds in the cache) the runner and returns its path.
fn runner() -> Result<PathBuf> {
    let script = repo_root().join("e2e/argocd-health/build.sh");
    let output = Command::new("bash")
        .arg(&script)
        .output()
        .with_context(|| format!("cannot run {}", script.display()))?;
    ensure!(
        output.status.success(),
        "{}: {}\n{}",
        script.display(),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(PathBuf::from(String::from_utf8(output.stdout)?.trim()))
}

fn run(dir: &Path) -> Result<(Output, String)> {
    let output = Command::new(runner()?).arg(dir).output()?;
    let stdout = String::from_utf8(output.stdout.clone())?;
    Ok((output, stdout))
}

#[derive(Deserialize)]
struct Cases {
    tests: Vec<Case>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Case {
    input_path: String,
    health_status: Health,
}

#[derive(Deserialize)]
struct Health {
    status: String,
}

#[test]
fn every_health_case_passes_in_argo_cds_lua_runtime() -> Result<()> {
    let (output, stdout) = run(&check_dir())?;
    println!("{stdout}");
    assert!(
        output.status.success(),
        "Argo CD's util/lua disagrees with health_test.yaml:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let cases: Cases = serde_yaml::from_str(&std::fs::read_to_string(
        check_dir().join("health_test.yaml"),
    )?)?;
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("PASS ")).count(),
        cases.tests.len(),
        "one PASS line per case"
    );
    // The mapping covers every status it promises, and every testdata file is a case.
    let statuses: BTreeSet<_> = cases
        .tests
        .iter()
        .map(|c| c.health_status.status.as_str())
        .collect();
    assert_eq!(
        statuses,
        BTreeSet::from(["Degraded", "Healthy", "Progressing", "Suspended"])
    );
    let inputs: BTreeSet<_> = cases.tests.iter().map(|c| c.input_path.clone()).collect();
    for entry in std::fs::read_dir(check_dir().join("testdata"))? {
        let name = format!("testdata/{}", entry?.file_name().to_string_lossy());
        assert!(
            inputs.contains(&name),
            "{name} is not a case in health_test.yaml"
        );
    }
    Ok(())
}

/// The runner is not a rubber stamp: one wrong expectation makes it fail.
#[test]
fn a_wrong_expectation_fails_the_runner() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let copy = dir.path();
    std::fs::copy(check_dir().join("health.lua"), copy.join("health.lua"))?;
    std::fs::create_dir(copy.join("testdata"))?;
    std::fs::copy(
        check_dir().join("testdata/paused.yaml"),
        copy.join("testdata/paused.yaml"),
    )?;
    std::fs::write(
        copy.join("health_test.yaml"),
        "tests:\n  - inputPath: testdata/paused.yaml\n    healthStatus:\n      status: Healthy\n      message: ready\n",
    )?;
    let (output, stdout) = run(copy)?;
    assert!(!output.status.success(), "{stdout}");
    assert!(
        stdout.contains("FAIL") && stdout.contains("got Suspended"),
        "{stdout}"
    );
    Ok(())
}
