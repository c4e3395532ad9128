//! The fleet: many OctopusClusters of [`NODES`] nodes on one operator process (release
//! binary), the twin playing every installation and the kubelet of every pod. Measures
//! start-up (binary and image size, process start -> /readyz, empty and with the fleet),
//! the time until every cluster is Ready, peak RSS, Kubernetes API writes in steady state
//! (from the operator's own client counter and from the API server's
//! `apiserver_request_total`), and a fleet-wide patch bump against one cluster's, without
//! and with `--max-concurrent-upgrades`.
//!
//! Size: `OCTOPUS_BENCH_FLEET` clusters (default [`DEFAULT_CLUSTERS`]), cap
//! `OCTOPUS_BENCH_FLEET_CAP` (default [`DEFAULT_CAP`]), steady window
//! `OCTOPUS_BENCH_STEADY_SECS` (default 60).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use octopus_e2e::cluster::{TestCluster, TestNamespace};
use octopus_e2e::scenario::{condition, install_crd, spec};
use octopus_e2e::twin::{GeneratorConfig, Twin, TwinConfig, TwinHandle};
use octopus_operator::api::OctopusCluster;
use serde_json::json;

use crate::memory::{NODES, OperatorProcess, operator_binary, secrets};
use crate::upgrades::{FROM, delete_clusters, timing};

pub const DEFAULT_CLUSTERS: usize = 100;
pub const DEFAULT_CAP: u32 = 10;
/// The patch targets of the three bumps: one cluster, the fleet, the fleet capped.
const BUMPS: [&str; 3] = ["2024.1.300", "2024.1.301", "2024.1.302"];
const SETTLE: Duration = Duration::from_secs(5);
/// Longest wait for the fleet to get anywhere; grows with the fleet.
fn wait(clusters: usize) -> Duration {
    Duration::from_secs(300 + 3 * u64::try_from(clusters).unwrap_or(u64::MAX / 4))
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// API writes over a span, by resource (`octopusclusters/status`, `statefulsets`, ...).
#[derive(Clone, Debug, Default)]
pub struct Writes {
    pub by_resource: BTreeMap<String, f64>,
}

impl Writes {
    pub fn total(&self) -> f64 {
        self.by_resource.values().sum()
    }

    fn since(&self, before: &Self) -> Self {
        let mut by_resource = self.by_resource.clone();
        for (k, v) in &mut by_resource {
            *v -= before.by_resource.get(k).copied().unwrap_or(0.0);
        }
        by_resource.retain(|_, v| *v > 0.0);
        Self { by_resource }
    }

    /// Writes of the operator's client (`octopus_operator_kubernetes_requests_total`).
    fn of_operator(text: &str) -> Self {
        Self::parse(
            text,
            "octopus_operator_kubernetes_requests_total{",
            "verb",
            &["create", "update", "patch", "delete"],
        )
    }

    /// Writes the API server served from every client but Lease renewals
    /// (`apiserver_request_total`).
    fn of_apiserver(text: &str) -> Self {
        let mut w = Self::parse(
            text,
            "apiserver_request_total{",
            "verb",
            &[
                "POST",
                "PUT",
                "PATCH",
                "APPLY",
                "DELETE",
                "DELETECOLLECTION",
            ],
        );
        w.by_resource.retain(|r, _| r != "leases");
        w
    }

    fn parse(text: &str, prefix: &str, verb_label: &str, writes: &[&str]) -> Self {
        let mut by_resource = BTreeMap::new();
        for line in text.lines().filter(|l| l.starts_with(prefix)) {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            let labels = label_map(series);
            if !labels
                .get(verb_label)
                .is_some_and(|v| writes.contains(&v.as_str()))
            {
                continue;
            }
            let mut resource = labels.get("resource").cloned().unwrap_or_default();
            if let Some(sub) = labels.get("subresource").filter(|s| !s.is_empty()) {
                resource = format!("{resource}/{sub}");
            }
            *by_resource.entry(resource).or_default() += value;
        }
        Self { by_resource }
    }

    /// The three largest, e.g. `octopusclusters/status 30, statefulsets 12`.
    fn top(&self) -> String {
        let mut v: Vec<(&String, &f64)> = self.by_resource.iter().collect();
        v.sort_by(|a, b| b.1.total_cmp(a.1));
        v.iter()
            .take(4)
            .map(|(r, n)| format!("{r} {n:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn label_map(series: &str) -> BTreeMap<String, String> {
    let inner = series
        .split_once('{')
        .map_or("", |(_, l)| l.trim_end_matches('}'));
    inner
        .split("\",")
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim_matches('"').to_string()))
        .collect()
}

/// One patch bump: spec changed -> every bumped cluster Ready on the new version.
#[derive(Clone, Debug, Default)]
pub struct Bump {
    pub clusters: usize,
    pub wall: Duration,
    pub operator_writes: Writes,
    pub apiserver_writes: Writes,
    /// Most clusters with an unfinished upgrade in status at one poll.
    pub most_upgrading: usize,
    pub cap: Option<u32>,
}

impl Bump {
    pub fn nodes(&self) -> usize {
        self.clusters * NODES
    }
}

/// Steady state: every cluster Ready, nothing changing.
#[derive(Clone, Debug, Default)]
pub struct Steady {
    pub window: Duration,
    pub operator_writes: Writes,
    pub apiserver_writes: Writes,
    pub reconciles: f64,
}

/// Everything the fleet run measured.
pub struct FleetRun {
    pub clusters: usize,
    pub binary: PathBuf,
    pub binary_bytes: u64,
    /// The newest `target/image/*.tar`, if `make image` was run.
    pub image: Option<(PathBuf, u64)>,
    /// Process start -> /readyz with no cluster, then with the whole fleet Ready.
    pub ready_empty: Duration,
    pub ready_fleet: Option<Duration>,
    pub to_ready: Duration,
    pub rss_after_create: u64,
    pub steady: Steady,
    pub one: Bump,
    pub fleet: Bump,
    pub capped: Bump,
    /// Peak RSS over the whole run, KiB (the first process; the capped bump's restarted
    /// one is in `peak_capped`).
    pub peak: u64,
    pub peak_capped: u64,
}

/// The fleet run, on its own namespace and twin.
pub async fn run(cluster: &TestCluster) -> Result<FleetRun> {
    let clusters: usize = env_or("OCTOPUS_BENCH_FLEET", DEFAULT_CLUSTERS).max(1);
    let cap: u32 = env_or("OCTOPUS_BENCH_FLEET_CAP", DEFAULT_CAP).max(1);
    let steady_window = Duration::from_secs(env_or("OCTOPUS_BENCH_STEADY_SECS", 60));
    let binary = operator_binary()?;
    install_crd(cluster).await?;
    let ns = cluster.namespace("bench-fleet").await?;
    let twin = Twin::start(TwinConfig {
        kube: Some(cluster.client()),
        namespace: Some(ns.name().to_string()),
        timing: timing(),
        generator: GeneratorConfig::off(),
        ..TwinConfig::default()
    })
    .await?;
    let result = measure(cluster, &binary, &ns, &twin, clusters, cap, steady_window).await;
    let api: Api<OctopusCluster> = ns.api();
    let names: Vec<String> = (0..clusters).map(name).collect();
    // Without an operator the finalizers stay; the namespace goes with them removed.
    if let Err(e) = strip_finalizers(&api, &names).await {
        eprintln!(
            "bench: warning: removing finalizers in {}: {e:#}",
            ns.name()
        );
    }
    twin.shutdown().await;
    if let Err(e) = ns.cleanup().await {
        eprintln!("bench: warning: deleting the namespace: {e}");
    }
    result
}

fn name(i: usize) -> String {
    format!("f{i:04}")
}

#[allow(clippy::too_many_arguments)]
async fn measure(
    cluster: &TestCluster,
    binary: &Path,
    ns: &TestNamespace,
    twin: &TwinHandle,
    clusters: usize,
    cap: u32,
    steady_window: Duration,
) -> Result<FleetRun> {
    let api: Api<OctopusCluster> = ns.api();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let binary_bytes = std::fs::metadata(binary)?.len();
    let image = newest_image(binary);
    secrets(&ns.api(), "fleet", clusters).await?;

    progress(&format!(
        "fleet: operator start, {clusters} clusters created"
    ));
    let mut op = OperatorProcess::spawn_with(binary, cluster.kubeconfig(), ns.name(), twin, &[])?;
    let ready_empty = op.wait_ready(&http).await?;
    let created = Instant::now();
    create(&api, clusters).await?;
    wait_all(&api, clusters, FROM, &mut op, None, wait(clusters)).await?;
    let to_ready = created.elapsed();
    let rss_after_create = op.memory()?.rss;

    progress(&format!("fleet: steady for {} s", steady_window.as_secs()));
    tokio::time::sleep(SETTLE).await;
    let (o0, a0, r0) = (
        Writes::of_operator(&op.metrics_text(&http).await?),
        Writes::of_apiserver(&apiserver_metrics(cluster).await?),
        op.counters(&http).await?.reconciles,
    );
    tokio::time::sleep(steady_window).await;
    let steady = Steady {
        window: steady_window,
        operator_writes: Writes::of_operator(&op.metrics_text(&http).await?).since(&o0),
        apiserver_writes: Writes::of_apiserver(&apiserver_metrics(cluster).await?).since(&a0),
        reconciles: op.counters(&http).await?.reconciles - r0,
    };

    progress("fleet: one cluster's patch bump");
    let one = bump(cluster, &api, &mut op, &http, &[name(0)], BUMPS[0], None).await?;
    progress(&format!(
        "fleet: the whole fleet's patch bump ({clusters} clusters)"
    ));
    let all: Vec<String> = (0..clusters).map(name).collect();
    let fleet = bump(cluster, &api, &mut op, &http, &all, BUMPS[1], None).await?;
    let peak = op.memory()?.hwm;
    drop(op);

    progress(&format!(
        "fleet: restart with --max-concurrent-upgrades={cap}, fleet bump"
    ));
    let extra = [format!("--max-concurrent-upgrades={cap}")];
    let mut op =
        OperatorProcess::spawn_with(binary, cluster.kubeconfig(), ns.name(), twin, &extra)?;
    let ready_fleet = op.wait_ready(&http).await.ok();
    let capped = bump(cluster, &api, &mut op, &http, &all, BUMPS[2], Some(cap)).await?;
    let peak_capped = op.memory()?.hwm;
    // Deleted while the operator runs: its finalizer releases Octopus first.
    if let Err(e) = delete_clusters(&api, &all).await {
        eprintln!("bench: warning: deleting the fleet: {e:#}");
    }
    let log = op.log.clone();
    drop(op);
    let _ = std::fs::remove_file(log);
    Ok(FleetRun {
        clusters,
        binary: binary.to_path_buf(),
        binary_bytes,
        image,
        ready_empty,
        ready_fleet,
        to_ready,
        rss_after_create,
        steady,
        one,
        fleet,
        capped,
        peak,
        peak_capped,
    })
}

fn progress(what: &str) {
    eprintln!("bench: {what} ...");
}

/// `target/image/*.tar` beside the release directory, newest first.
fn newest_image(binary: &Path) -> Option<(PathBuf, u64)> {
    let target = binary.parent()?.parent()?;
    std::fs::read_dir(target.join("image"))
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "tar"))
        .filter_map(|p| {
            let meta = std::fs::metadata(&p).ok()?;
            Some((meta.modified().ok()?, p, meta.len()))
        })
        .max_by_key(|(t, _, _)| *t)
        .map(|(_, p, n)| (p, n))
}

async fn apiserver_metrics(cluster: &TestCluster) -> Result<String> {
    let out = cluster.kubectl(["get", "--raw", "/metrics"]).await?.ok()?;
    Ok(out.stdout)
}

async fn create(api: &Api<OctopusCluster>, clusters: usize) -> Result<()> {
    let replicas = i32::try_from(NODES)?;
    for i in 0..clusters {
        let mut sp = spec(FROM, replicas);
        sp["database"]["connectionStringSecretRef"]["name"] = json!(format!("octopus-db-{i}"));
        let obj: OctopusCluster = serde_json::from_value(json!({
            "apiVersion": "octopusoperator.dev/v1alpha1",
            "kind": "OctopusCluster",
            "metadata": {"name": name(i)},
            "spec": sp,
        }))?;
        api.create(&PostParams::default(), &obj).await?;
    }
    Ok(())
}

fn ready_on(c: &OctopusCluster, version: &str) -> bool {
    c.spec.version == version
        && c.status.as_ref().is_some_and(|s| {
            s.current_version.as_deref() == Some(version)
                && s.upgrade.as_ref().is_none_or(|u| u.finished_at.is_some())
        })
        && condition(c, "Ready")
            .is_some_and(|r| r.status == "True" && r.observed_generation == c.metadata.generation)
}

fn upgrading(c: &OctopusCluster) -> bool {
    c.status
        .as_ref()
        .and_then(|s| s.upgrade.as_ref())
        .is_some_and(|u| u.finished_at.is_none())
}

/// Waits until the clusters named (all when `only` is `None`) are Ready on `version`;
/// returns the time and the most clusters seen upgrading at one poll. Polls a one-cluster
/// wait often, a fleet once a second (a list of the fleet costs the API server).
async fn wait_all(
    api: &Api<OctopusCluster>,
    expect: usize,
    version: &str,
    op: &mut OperatorProcess,
    only: Option<&str>,
    limit: Duration,
) -> Result<(Duration, usize)> {
    let started = Instant::now();
    let mut most = 0;
    let every = if only.is_some() || expect <= 5 {
        Duration::from_millis(100)
    } else {
        Duration::from_secs(1)
    };
    loop {
        let list = match only {
            Some(n) => vec![api.get(n).await?],
            None => api.list(&ListParams::default()).await?.items,
        };
        most = most.max(list.iter().filter(|c| upgrading(c)).count());
        let ready = list.iter().filter(|c| ready_on(c, version)).count();
        if list.len() >= expect.min(1) && ready == list.len() && (only.is_some() || ready == expect)
        {
            return Ok((started.elapsed(), most));
        }
        if started.elapsed() >= limit {
            bail!(
                "{ready} of {} clusters Ready on {version} after {limit:?}",
                list.len()
            );
        }
        op.alive()?;
        tokio::time::sleep(every).await;
    }
}

/// Bumps `names` to `version` at once; waits for all of them.
async fn bump(
    cluster: &TestCluster,
    api: &Api<OctopusCluster>,
    op: &mut OperatorProcess,
    http: &reqwest::Client,
    names: &[String],
    version: &str,
    cap: Option<u32>,
) -> Result<Bump> {
    tokio::time::sleep(SETTLE).await;
    let o0 = Writes::of_operator(&op.metrics_text(http).await?);
    let a0 = Writes::of_apiserver(&apiserver_metrics(cluster).await?);
    let started = Instant::now();
    for n in names {
        api.patch(
            n,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"version": version}})),
        )
        .await
        .with_context(|| format!("bumping {n}"))?;
    }
    let only = (names.len() == 1).then(|| names[0].as_str());
    let (_, most) = wait_all(api, names.len(), version, op, only, wait(names.len())).await?;
    let wall = started.elapsed();
    Ok(Bump {
        clusters: names.len(),
        wall,
        operator_writes: Writes::of_operator(&op.metrics_text(http).await?).since(&o0),
        apiserver_writes: Writes::of_apiserver(&apiserver_metrics(cluster).await?).since(&a0),
        most_upgrading: most,
        cap,
    })
}

async fn strip_finalizers(api: &Api<OctopusCluster>, names: &[String]) -> Result<()> {
    for n in names {
        match api
            .patch(
                n,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"finalizers": null}})),
            )
            .await
        {
            Ok(_) | Err(kube::Error::Api(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Section 5: prints the fleet's figures.
pub fn report(r: &FleetRun) {
    let mut t = crate::table::Table::new(
        format!(
            "5. Fleet and start-up: {} OctopusClusters of {NODES} nodes on one operator process (played kubelet)",
            r.clusters
        ),
        &["figure"],
    );
    t.note("writes: create/update/patch/delete; operator's from its own client counter, API server's from apiserver_request_total (every client: operator, twin as kubelet, controller-manager)");
    for (label, value) in lines(r) {
        t.row(label, vec![value]);
    }
    t.print();
}

/// The figures as lines: `(label, value)`.
fn lines(r: &FleetRun) -> Vec<(String, String)> {
    let mib = |kib: u64| format!("{:.1} MiB", kib as f64 / 1024.0);
    let secs = |d: Duration| format!("{:.1} s", d.as_secs_f64());
    let per_min = |w: &Writes, d: Duration| w.total() * 60.0 / d.as_secs_f64().max(1e-9);
    let mut out = vec![
        (
            "binary (release)".to_string(),
            format!(
                "{:.1} MiB ({})",
                r.binary_bytes as f64 / 1048576.0,
                r.binary.display()
            ),
        ),
        (
            "image (make image)".into(),
            r.image.as_ref().map_or_else(
                || "not built: run `make image` first".into(),
                |(p, n)| format!("{:.1} MiB ({})", *n as f64 / 1048576.0, p.display()),
            ),
        ),
        (
            "process start -> /readyz, no cluster".into(),
            format!("{:.0} ms", r.ready_empty.as_secs_f64() * 1000.0),
        ),
        (
            format!("process start -> /readyz, {} clusters", r.clusters),
            r.ready_fleet.map_or("did not become ready".into(), |d| {
                format!("{:.0} ms", d.as_secs_f64() * 1000.0)
            }),
        ),
        (
            format!("{} clusters created -> all Ready", r.clusters),
            secs(r.to_ready),
        ),
        ("RSS once all Ready".into(), mib(r.rss_after_create)),
        (
            "peak RSS (VmHWM), first process / capped restart".into(),
            format!("{} / {} (goal < 100 MiB)", mib(r.peak), mib(r.peak_capped)),
        ),
        (
            format!("steady ({} s): reconciles", r.steady.window.as_secs()),
            format!("{:.0}", r.steady.reconciles),
        ),
        (
            "steady: operator API writes".into(),
            format!(
                "{:.1}/min (goal 0) [{}]",
                per_min(&r.steady.operator_writes, r.steady.window),
                r.steady.operator_writes.top()
            ),
        ),
        (
            "steady: API server writes, all clients, no Leases".into(),
            format!(
                "{:.1}/min [{}]",
                per_min(&r.steady.apiserver_writes, r.steady.window),
                r.steady.apiserver_writes.top()
            ),
        ),
    ];
    for (label, b) in [
        ("one cluster", &r.one),
        ("fleet, no cap", &r.fleet),
        ("fleet, capped", &r.capped),
    ] {
        let what = match b.cap {
            Some(c) => format!("{label} ({} clusters, cap {c})", b.clusters),
            None => format!("{label} ({} clusters)", b.clusters),
        };
        out.push((format!("patch bump, {what}"), secs(b.wall)));
        if b.clusters > 1 {
            let ratio = b.wall.as_secs_f64() / r.one.wall.as_secs_f64().max(1e-9);
            out.push((
                "  / one cluster's".into(),
                format!("{ratio:.2}x (goal <= 1.5x)"),
            ));
            out.push((
                "  most clusters upgrading at once".into(),
                b.most_upgrading.to_string(),
            ));
        }
        let nodes = b.nodes().max(1) as f64;
        out.push((
            "  operator API writes per upgraded node".into(),
            format!(
                "{:.1} [{}]",
                b.operator_writes.total() / nodes,
                b.operator_writes.top()
            ),
        ));
        out.push((
            "  API server writes per upgraded node (all clients)".into(),
            format!("{:.1}", b.apiserver_writes.total() / nodes),
        ));
    }
    out
}
