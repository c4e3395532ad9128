//! The operator as its own process (`octopus-operator run`, release build) against the
//! control plane and an in-process twin: its memory (VmRSS, peak VmHWM from
//! /proc/<pid>/status) and CPU time idle, with one steady cluster, and after many
//! clusters are created at once in one namespace, plus how long those take to be Ready.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams, PostParams};
use octopus_e2e::cluster::{TestCluster, TestNamespace};
use octopus_e2e::process::Process;
use octopus_e2e::scenario::{API_KEY, condition, install_crd, spec};
use octopus_e2e::twin::replay::{self, Replay};
use octopus_e2e::twin::{GeneratorConfig, Twin, TwinConfig, TwinHandle};
use octopus_operator::api::OctopusCluster;
use serde_json::json;

use crate::prom::Counters;
use crate::upgrades::{FROM, delete_clusters, timing};

/// Env var naming the operator binary (default: `octopus-operator` beside the bench's
/// target directory, as `cargo build --release -p octopus-operator` leaves it).
pub const OPERATOR_BIN_ENV: &str = "OCTOPUS_OPERATOR_BIN";
/// Nodes per cluster.
pub const NODES: usize = 3;
/// Clusters in the scale phase.
pub const CLUSTERS: usize = 20;
/// How long a phase is watched once its clusters are Ready.
pub const STEADY: Duration = Duration::from_secs(10);
const POLL: &str = "300ms";
/// From every cluster Ready to the start of the steady window.
const SETTLE: Duration = Duration::from_secs(2);
const WAIT: Duration = Duration::from_secs(240);

/// Memory of a process, KiB.
#[derive(Clone, Copy, Debug, Default)]
pub struct Memory {
    pub rss: u64,
    /// Peak resident set size so far.
    pub hwm: u64,
}

/// One phase of the memory run.
pub struct Phase {
    pub name: String,
    pub clusters: usize,
    /// Created -> every cluster Ready.
    pub to_ready: Option<Duration>,
    pub memory: Memory,
    /// Operator CPU time spent in the phase.
    pub cpu: Duration,
    /// Reconciles in the phase (creation included).
    pub reconciles: f64,
    /// Reconciles and Octopus API requests per second while steady.
    pub steady_reconciles: Option<f64>,
    pub steady_requests: Option<f64>,
}

/// The binary and the figures of its run.
pub struct MemoryRun {
    pub binary: PathBuf,
    pub phases: Vec<Phase>,
}

/// The operator binary: [`OPERATOR_BIN_ENV`], else `../octopus-operator` from the bench
/// executable (`target/release/deps/operator-*`).
pub fn operator_binary() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os(OPERATOR_BIN_ENV) {
        return Ok(path.into());
    }
    let exe = std::env::current_exe().context("locating the bench executable")?;
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .context("the bench executable has no target directory")?;
    let path = dir.join("octopus-operator");
    if !path.is_file() {
        bail!(
            "{} is missing: run `cargo build --release -p octopus-operator` first (or set {OPERATOR_BIN_ENV})",
            path.display()
        );
    }
    Ok(path)
}

/// The operator process; killed when dropped.
pub struct OperatorProcess {
    child: Process,
    metrics_url: String,
    pub log: PathBuf,
    started: Instant,
}

impl OperatorProcess {
    fn spawn(binary: &Path, kubeconfig: &Path, namespace: &str, twin: &TwinHandle) -> Result<Self> {
        Self::spawn_with(binary, kubeconfig, namespace, twin, &[])
    }

    /// [`OperatorProcess::spawn`] with more arguments of `run`.
    pub fn spawn_with(
        binary: &Path,
        kubeconfig: &Path,
        namespace: &str,
        twin: &TwinHandle,
        extra: &[String],
    ) -> Result<Self> {
        let port = free_port()?;
        let log = std::env::temp_dir().join(format!("octopus-bench-operator-{namespace}.log"));
        let log_file =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut command = Command::new(binary);
        command
            .args(["run", "--namespace", namespace, "--poll-interval", POLL])
            .arg("--metrics-addr")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--api-url-template")
            .arg(format!("{}/{{namespace}}/{{name}}", twin.base_url()))
            .arg("--node-url-template")
            .arg(format!(
                "{}/{{namespace}}/{{service}}/{{pod}}",
                twin.base_url()
            ))
            .args(extra)
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file);
        let child =
            Process::spawn(command).with_context(|| format!("starting {}", binary.display()))?;
        Ok(Self {
            child,
            metrics_url: format!("http://127.0.0.1:{port}"),
            log,
            started: Instant::now(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// Fails with the log's path if the process has exited.
    pub fn alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.exited()? {
            bail!(
                "the operator exited ({status}); its log: {}",
                self.log.display()
            );
        }
        Ok(())
    }

    /// Waits for /readyz; returns the time from the process's start.
    pub async fn wait_ready(&mut self, http: &reqwest::Client) -> Result<Duration> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            self.alive()?;
            let ok = http
                .get(format!("{}/readyz", self.metrics_url))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ok {
                return Ok(self.started.elapsed());
            }
            if Instant::now() >= deadline {
                bail!(
                    "the operator's /readyz did not answer in 30 s; its log: {}",
                    self.log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The operator's /metrics text.
    pub async fn metrics_text(&self, http: &reqwest::Client) -> Result<String> {
        Ok(http
            .get(format!("{}/metrics", self.metrics_url))
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?)
    }

    pub async fn counters(&self, http: &reqwest::Client) -> Result<Counters> {
        let text = http
            .get(format!("{}/metrics", self.metrics_url))
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?;
        Ok(Counters::parse(&text))
    }

    pub fn memory(&self) -> Result<Memory> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .unwrap_or(0)
        };
        Ok(Memory {
            rss: field("VmRSS:"),
            hwm: field("VmHWM:"),
        })
    }

    /// User + system CPU time so far.
    pub fn cpu(&self) -> Result<Duration> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()))?;
        // Fields after the command name (which may hold spaces) start at field 3; utime
        // and stime are fields 14 and 15.
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0)
        };
        let total = ticks(11) + ticks(12);
        Ok(Duration::from_secs_f64(total as f64 / clock_ticks()))
    }
}

/// `getconf CLK_TCK`, else the usual 100.
fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|t| *t > 0.0)
        .unwrap_or(100.0)
}

/// A port free right now on 127.0.0.1.
fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

fn cluster_name(i: usize) -> String {
    format!("c{i:02}")
}

/// Runs the phases: idle, one steady cluster, then [`CLUSTERS`] clusters.
pub async fn run(cluster: &TestCluster) -> Result<MemoryRun> {
    let binary = operator_binary()?;
    install_crd(cluster).await?;
    let ns = cluster.namespace("bench-scale").await?;
    let twin = Twin::start(TwinConfig {
        kube: Some(cluster.client()),
        namespace: Some(ns.name().to_string()),
        timing: timing(),
        generator: GeneratorConfig::off(),
        ..TwinConfig::default()
    })
    .await?;
    let result = phases(cluster, &binary, &ns, &twin).await;
    twin.shutdown().await;
    if let Err(e) = ns.cleanup().await {
        eprintln!("bench: warning: deleting the namespace: {e}");
    }
    Ok(MemoryRun {
        binary,
        phases: result?,
    })
}

/// The phases, on a namespace and twin the caller cleans up.
async fn phases(
    cluster: &TestCluster,
    binary: &Path,
    ns: &TestNamespace,
    twin: &TwinHandle,
) -> Result<Vec<Phase>> {
    let api: Api<OctopusCluster> = ns.api();
    secrets(&ns.api(), "bench", CLUSTERS).await?;
    let mut operator = OperatorProcess::spawn(binary, cluster.kubeconfig(), ns.name(), twin)?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    operator.wait_ready(&http).await?;
    let mut phases = Vec::new();
    let mut mark = Mark::take(&operator, &http).await?;

    tokio::time::sleep(Duration::from_secs(3)).await;
    operator.alive()?;
    phases.push(mark.phase("idle", 0, None, None, &operator, &http).await?);
    mark = Mark::take(&operator, &http).await?;

    let to_ready = create_and_wait(&api, 0..1, &mut operator).await?;
    let calm = steady(&operator, &http, twin).await?;
    phases.push(
        mark.phase("1 cluster", 1, Some(to_ready), Some(calm), &operator, &http)
            .await?,
    );
    mark = Mark::take(&operator, &http).await?;

    let to_ready = create_and_wait(&api, 1..CLUSTERS, &mut operator).await?;
    let calm = steady(&operator, &http, twin).await?;
    let name = format!("{CLUSTERS} clusters");
    phases.push(
        mark.phase(
            &name,
            CLUSTERS,
            Some(to_ready),
            Some(calm),
            &operator,
            &http,
        )
        .await?,
    );

    // Deleted while the operator runs: its finalizer releases Octopus first.
    let names: Vec<String> = (0..CLUSTERS).map(cluster_name).collect();
    if let Err(e) = delete_clusters(&api, &names).await {
        eprintln!("bench: warning: cleaning up {}: {e:#}", ns.name());
    }
    let log = operator.log.clone();
    drop(operator);
    let _ = std::fs::remove_file(log);
    Ok(phases)
}

/// The shared API key and master key, and one database per cluster (the twin keys an
/// installation by its database): `Octopus-<prefix>-<i>`, `clusters` of them.
pub async fn secrets(api: &Api<Secret>, prefix: &str, clusters: usize) -> Result<()> {
    let secret = |name: String, data: serde_json::Value| -> Result<Secret> {
        Ok(serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name},
            "stringData": data,
        }))?)
    };
    api.create(
        &PostParams::default(),
        &secret(
            "octopus".into(),
            json!({"masterKey": "6EdU6IWsCtMEwk0kPKflQQ==", "apiKey": API_KEY}),
        )?,
    )
    .await?;
    for i in 0..clusters {
        let db =
            format!("Server=mssql;Database=Octopus-{prefix}-{i};User Id=octopus;Password=bench");
        api.create(
            &PostParams::default(),
            &secret(format!("octopus-db-{i}"), json!({"connectionString": db}))?,
        )
        .await?;
    }
    Ok(())
}

/// Creates the clusters with these indexes at once and waits until every cluster in the
/// namespace is Ready; returns how long that took.
async fn create_and_wait(
    api: &Api<OctopusCluster>,
    indexes: std::ops::Range<usize>,
    operator: &mut OperatorProcess,
) -> Result<Duration> {
    let started = Instant::now();
    let replicas = i32::try_from(NODES)?;
    for i in indexes {
        let mut sp = spec(FROM, replicas);
        sp["database"]["connectionStringSecretRef"]["name"] = json!(format!("octopus-db-{i}"));
        let obj: OctopusCluster = serde_json::from_value(json!({
            "apiVersion": "octopusoperator.dev/v1alpha1",
            "kind": "OctopusCluster",
            "metadata": {"name": cluster_name(i)},
            "spec": sp,
        }))?;
        api.create(&PostParams::default(), &obj).await?;
    }
    loop {
        let list = api.list(&ListParams::default()).await?.items;
        let ready = list
            .iter()
            .filter(|c| {
                condition(c, "Ready").is_some_and(|r| {
                    r.status == "True" && r.observed_generation == c.metadata.generation
                })
            })
            .count();
        if ready == list.len() {
            return Ok(started.elapsed());
        }
        if started.elapsed() >= WAIT {
            bail!("{ready} of {} clusters Ready after {WAIT:?}", list.len());
        }
        operator.alive()?;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Reconciles and Octopus requests per second over [`STEADY`], after [`SETTLE`].
struct Steady {
    reconciles: f64,
    requests: f64,
}

async fn steady(
    operator: &OperatorProcess,
    http: &reqwest::Client,
    twin: &TwinHandle,
) -> Result<Steady> {
    // Let the last status writes and requeues after Ready pass first.
    tokio::time::sleep(SETTLE).await;
    let before = operator.counters(http).await?;
    let since = Timestamp::now();
    tokio::time::sleep(STEADY).await;
    let after = operator.counters(http).await?;
    let until = Timestamp::now();
    let events = twin.events();
    let requests = Replay::new(&events)
        .since(replay::Mark::At(since))
        .until(replay::Mark::At(until))
        .requests()
        .total;
    let seconds = STEADY.as_secs_f64();
    Ok(Steady {
        reconciles: after.since(&before).reconciles / seconds,
        requests: requests as f64 / seconds,
    })
}

/// Counters and CPU time at the start of a phase.
struct Mark {
    counters: Counters,
    cpu: Duration,
}

impl Mark {
    async fn take(operator: &OperatorProcess, http: &reqwest::Client) -> Result<Self> {
        Ok(Self {
            counters: operator.counters(http).await?,
            cpu: operator.cpu()?,
        })
    }

    async fn phase(
        &self,
        name: &str,
        clusters: usize,
        to_ready: Option<Duration>,
        steady: Option<Steady>,
        operator: &OperatorProcess,
        http: &reqwest::Client,
    ) -> Result<Phase> {
        let counters = operator.counters(http).await?.since(&self.counters);
        Ok(Phase {
            name: name.to_string(),
            clusters,
            to_ready,
            memory: operator.memory()?,
            cpu: operator.cpu()?.saturating_sub(self.cpu),
            reconciles: counters.reconciles,
            steady_reconciles: steady.as_ref().map(|s| s.reconciles),
            steady_requests: steady.as_ref().map(|s| s.requests),
        })
    }
}
