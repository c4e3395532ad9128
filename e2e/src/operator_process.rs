//! The operator binary as a separate process (`octopus-operator run ...`), for scenarios
//! about the process itself: leader election between replicas, probes, `/metrics`, and
//! the `status` command. The binary is built on first use (`cargo build`, as the demo
//! does) unless `OCTOPUS_OPERATOR_BIN` names one.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use tokio::sync::OnceCell;

use crate::scenario::Scenario;

/// Environment variable naming a prebuilt operator binary.
pub const OPERATOR_BIN_ENV: &str = "OCTOPUS_OPERATOR_BIN";

static BINARY: OnceCell<PathBuf> = OnceCell::const_new();

/// The operator binary: [`OPERATOR_BIN_ENV`], else `target/debug/octopus-operator`, built
/// (or brought up to date) once per test process.
pub async fn operator_binary() -> Result<PathBuf> {
    BINARY
        .get_or_try_init(|| async {
            if let Some(path) = std::env::var_os(OPERATOR_BIN_ENV) {
                return Ok(PathBuf::from(path));
            }
            let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let mut build = tokio::process::Command::new(cargo);
            build.current_dir(&root).args([
                "build",
                "--quiet",
                "-p",
                "octopus-operator",
                "--bin",
                "octopus-operator",
            ]);
            let status = build.status().await.context("running cargo build")?;
            if !status.success() {
                bail!("cargo build -p octopus-operator failed: {status}");
            }
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| root.join("target"));
            Ok(target.join("debug/octopus-operator"))
        })
        .await
        .cloned()
}

/// A free port on 127.0.0.1 (bound, then released for the process to take).
pub fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// One `octopus-operator run` process watching a scenario's namespace and its twin; killed
/// (SIGKILL) when dropped.
pub struct OperatorProcess {
    child: Child,
    /// `http://127.0.0.1:PORT` of its /metrics, /healthz and /readyz.
    pub base_url: String,
    /// Its stdout and stderr.
    pub log: PathBuf,
}

impl OperatorProcess {
    /// Starts the operator for `s` with `extra` flags (e.g. leader election settings).
    pub async fn start(s: &Scenario, label: &str, extra: &[String]) -> Result<Self> {
        Self::start_as(s, label, extra, s.cluster.kubeconfig()).await
    }

    /// [`OperatorProcess::start`] with the credentials of `kubeconfig` instead of the
    /// admin's (e.g. a ServiceAccount token, to run under the chart's RBAC).
    pub async fn start_as(
        s: &Scenario,
        label: &str,
        extra: &[String],
        kubeconfig: &Path,
    ) -> Result<Self> {
        let binary = operator_binary().await?;
        let port = free_port()?;
        let log = std::env::temp_dir().join(format!("octopus-e2e-{}-{label}.log", s.ns.name()));
        let out =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        let child = Command::new(&binary)
            .args([
                "run",
                "--namespace",
                s.ns.name(),
                "--poll-interval",
                "300ms",
            ])
            .arg(format!("--metrics-addr=127.0.0.1:{port}"))
            .arg(format!(
                "--api-url-template={}/{{namespace}}/{{name}}",
                s.twin.base_url()
            ))
            // Each node's own address, as the in-process operator of the scenario has it.
            .arg(format!(
                "--node-url-template={}/{{namespace}}/{{service}}/{{pod}}",
                s.twin.base_url()
            ))
            .args(extra)
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "info")
            .env_remove("POD_NAME")
            .env_remove("POD_NAMESPACE")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        Ok(Self {
            child,
            base_url: format!("http://127.0.0.1:{port}"),
            log,
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `GET path`: the status code and body, or `None` while nothing answers.
    pub async fn get(&self, path: &str) -> Option<(u16, String)> {
        let response = reqwest::Client::new()
            .get(format!("{}{path}", self.base_url))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .ok()?;
        let status = response.status().as_u16();
        Some((status, response.text().await.ok()?))
    }

    /// Waits until `path` answers `status`; returns the body.
    pub async fn wait_for(&self, path: &str, status: u16, timeout: Duration) -> Result<String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let got = self.get(path).await;
            if let Some((code, body)) = &got
                && *code == status
            {
                return Ok(body.clone());
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "{path} of the operator (log {}) never answered {status}; last: {got:?}",
                    self.log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Kills the process with SIGKILL, as a crashed node or an OOM kill would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM (as the kubelet does) and waits for the exit status.
    pub async fn terminate(mut self, timeout: Duration) -> Result<std::process::ExitStatus> {
        let pid = self.child.id().to_string();
        // bash's builtin kill: no procps needed.
        let status = tokio::process::Command::new("bash")
            .args(["-c", &format!("kill -TERM {pid}")])
            .status()
            .await?;
        if !status.success() {
            bail!("kill -TERM {pid}: {status}");
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if tokio::time::Instant::now() >= deadline {
                bail!("the operator did not stop within {timeout:?} of SIGTERM");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Its log so far (for failure messages).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The value of the first sample of `series` (`name{labels}` prefix) in Prometheus text.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit_once(' '))
        .and_then(|(_, v)| v.parse().ok())
}

/// Who holds the Lease `name` (leader election's `holderIdentity`), if it exists and can be
/// read.
pub async fn lease_holder(
    leases: &kube::Api<k8s_openapi::api::coordination::v1::Lease>,
    name: &str,
) -> Option<String> {
    leases
        .get_opt(name)
        .await
        .ok()
        .flatten()
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
}
