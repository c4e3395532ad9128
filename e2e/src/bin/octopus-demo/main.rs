//! `octopus-demo` (`make demo`, through e2e/demo/demo.sh): a live upgrade of a 3-node
//! Octopus cluster on the local control plane's real node, run as in production.
//!
//! Starts the shared Octopus database (the twin's database role, an `octopus-twin`
//! child process on the host's end of the node's veth), lets the namespace's pods onto
//! the node, installs the operator with `helm install` of the chart (a Deployment from
//! the image demo.sh imported), creates the cluster of e2e/demo/cluster.yaml on
//! 2024.1.100 (Octopus Server nodes as pods of the node images, deployments flowing),
//! then
//!   1. waits until it is Ready,
//!   2. rolls a patch upgrade to 2024.1.200 one node at a time (showing
//!      `kubectl get pods -A -o wide` once the first node was replaced),
//!   3. asks for the minor upgrade to 2024.2.50, shows it blocked until approved, approves
//!      it with `kubectl patch` and shows the stop-the-world steps (the backup Job runs
//!      as a pod and asks the database for a backup),
//!   4. prints a summary replayed from the database's flight recorder.
//!
//! Every change is made with the `kubectl` or `helm` command a person would type, printed
//! and run. On exit (also CTRL-C or a failure) it deletes the cluster, uninstalls the
//! release, deletes the namespace and stops the database. Exits non-zero when a stage
//! fails or times out.

mod lifecycle;
mod screen;
mod summary;

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use clap::Parser;
use clap::builder::FalseyValueParser;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use octopus_e2e::process::Process;
use octopus_e2e::twin::Event;
use octopus_operator::api::OctopusCluster;

use crate::screen::{Observed, Screen};

const NAME: &str = "demo";
const FROM: &str = "2024.1.100";
const PATCH: &str = "2024.1.200";
const MINOR: &str = "2024.2.50";

#[derive(Parser, Debug)]
#[command(about = "A live upgrade of a 3-node Octopus cluster on the local control plane")]
struct Args {
    /// Kubeconfig of the control plane to use.
    #[arg(long, env = "DEMO_KUBECONFIG")]
    kubeconfig: PathBuf,
    /// Namespace to create and delete.
    #[arg(long, env = "DEMO_NAMESPACE", default_value = "octopus-demo")]
    namespace: String,
    /// Plain lines instead of a redrawn screen (also when stdout is not a terminal).
    #[arg(long, env = "DEMO_NONINTERACTIVE", value_parser = FalseyValueParser::new())]
    noninteractive: bool,
    /// Seconds each stage may take.
    #[arg(long, env = "DEMO_STAGE_TIMEOUT", default_value_t = 180)]
    stage_timeout: u64,
    /// The octopus-twin binary (run as the shared database).
    #[arg(long, env = "DEMO_TWIN_BIN")]
    twin: PathBuf,
    /// Where the database listens: the host's end of the real node's veth, which pods
    /// reach (demo.sh reads it from the node's state).
    #[arg(long, env = "DEMO_DATABASE_HOST")]
    database_host: String,
    /// The operator image imported into the node (`make image`), `repository:tag`.
    #[arg(long, env = "DEMO_OPERATOR_IMAGE")]
    operator_image: String,
    /// The kubectl to run (and to show as `kubectl`).
    #[arg(long, env = "KUBECTL", default_value = "kubectl")]
    kubectl: PathBuf,
    /// Where the logs go (default: a new temporary directory, removed after success).
    #[arg(long, env = "DEMO_RUN_DIR")]
    run_dir: Option<PathBuf>,
    /// Keep the logs directory also after a successful run.
    #[arg(long, env = "DEMO_KEEP_RUN_DIR", value_parser = FalseyValueParser::new())]
    keep_run_dir: bool,
}

/// Files of the repository the demo applies, shown relative to its root.
fn repo_file(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(relative)
}

/// How the stages ended.
enum Outcome {
    Done,
    Failed(anyhow::Error),
    Interrupted,
}

#[tokio::main(worker_threads = 2)]
async fn main() -> ExitCode {
    let args = Args::parse();
    let mut demo = match Demo::new(args).await {
        Ok(demo) => demo,
        Err(e) => {
            eprintln!("DEMO FAILED: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = tokio::select! {
        result = demo.run() => match result {
            Ok(()) => Outcome::Done,
            Err(e) => Outcome::Failed(e),
        },
        () = interrupted() => Outcome::Interrupted,
    };
    demo.finish(outcome).await
}

/// CTRL-C or SIGTERM.
async fn interrupted() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// The demo's world: the control plane, what it started and installed, what it shows.
struct Demo {
    args: Args,
    client: kube::Client,
    screen: Screen,
    run: PathBuf,
    run_is_ours: bool,
    namespace_created: bool,
    volumes_created: bool,
    /// The shared database (`octopus-twin`).
    twin: Option<Process>,
    twin_url: String,
    /// The connection string of the demo's database on `twin`.
    connection_string: String,
    /// Whether the operator's Helm release was installed (and is not uninstalled yet).
    release_installed: bool,
    http: reqwest::Client,
}

impl Demo {
    async fn new(args: Args) -> Result<Self> {
        let kubeconfig = kube::config::Kubeconfig::read_from(&args.kubeconfig)
            .with_context(|| format!("reading kubeconfig {}", args.kubeconfig.display()))?;
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .context("loading the kubeconfig")?;
        let client = kube::Client::try_from(config).context("building the kube client")?;
        let (run, run_is_ours) = match &args.run_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir)?;
                (dir.clone(), false)
            }
            None => {
                let dir = std::env::temp_dir().join(format!(
                    "octopus-demo.{}.{}",
                    std::process::id(),
                    fastrand::u32(..)
                ));
                std::fs::create_dir_all(&dir)?;
                (dir, true)
            }
        };
        let interactive = !args.noninteractive && std::io::stdout().is_terminal();
        Ok(Self {
            screen: Screen::new(interactive, &args.namespace, NAME),
            args,
            client,
            run,
            run_is_ours,
            namespace_created: false,
            volumes_created: false,
            twin: None,
            twin_url: String::new(),
            connection_string: String::new(),
            release_installed: false,
            http: reqwest::Client::new(),
        })
    }

    fn clusters(&self) -> Api<OctopusCluster> {
        Api::namespaced(self.client.clone(), &self.args.namespace)
    }

    async fn run(&mut self) -> Result<()> {
        let ns = self.args.namespace.clone();
        self.screen.banner(&format!(
            "Octopus operator demo: namespace {ns}, logs in {}",
            self.run.display()
        ));
        if self.namespace_exists().await? {
            self.screen.say(&format!(
                "namespace {ns} is left from an earlier run: deleting it first"
            ));
            let operator_running = self.release_exists();
            self.delete_namespace(operator_running).await;
            if self.namespace_exists().await? {
                bail!("namespace {ns} could not be deleted");
            }
        }
        self.screen
            .say("applying the OctopusCluster CRD (crds/octopusclusters.yaml)");
        let crd = repo_file("crds/octopusclusters.yaml");
        let crd = crd.to_string_lossy();
        self.kubectl_output(
            false,
            &["apply", "--server-side", "--force-conflicts", "-f", &crd],
        )?;
        // Through the API rather than `kubectl wait`, which fails on a CRD created so
        // recently that it has no conditions yet.
        let crds: Api<CustomResourceDefinition> = Api::all(self.client.clone());
        let established = kube::runtime::wait::await_condition(
            crds,
            "octopusclusters.octopusoperator.dev",
            kube::runtime::wait::conditions::is_crd_established(),
        );
        tokio::time::timeout(Duration::from_secs(60), established)
            .await
            .context("the CRD was not Established within 60s")??;
        self.kubectl_output(false, &["create", "namespace", &ns])?;
        self.namespace_created = true;
        self.screen.say(&format!("created namespace {ns}"));
        self.admit_to_node()?;
        self.start_twin().await?;
        self.provide_volumes().await?;
        self.install_operator()?;

        self.create().await?;
        let patch_roll = self.patch_upgrade().await?;
        let minor_start = self.minor_upgrade().await?;
        self.summary(patch_roll, minor_start).await
    }

    /// Shows the live view every second until `done` holds for what the operator
    /// reports; fails after the stage timeout or when a process it started died.
    async fn watch_until(
        &mut self,
        title: &str,
        done: impl Fn(&Observed) -> bool,
    ) -> Result<Observed> {
        let since = Instant::now();
        let timeout = Duration::from_secs(self.args.stage_timeout);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        self.screen.hide_cursor(true);
        let result = loop {
            tick.tick().await;
            let observed = match self.clusters().get_opt(NAME).await {
                Ok(Some(c)) => Some(Observed::from(&c)),
                _ => None,
            };
            if let Some(observed) = observed {
                let events = screen::new_events(&self.client, &self.args.namespace).await;
                let table = self.screen.interactive().then(|| {
                    self.kubectl_output(true, &["get", "octc"])
                        .unwrap_or_else(|e| format!("{e:#}\n"))
                });
                self.screen.show(title, &observed, events, table.as_deref());
                if done(&observed) {
                    break Ok(observed);
                }
                if since.elapsed() > timeout {
                    break Err(anyhow::anyhow!(
                        "timed out after {}s: {title} (last: {}; status {})",
                        timeout.as_secs(),
                        observed.step_line(),
                        observed.phase.as_deref().unwrap_or("-")
                    ));
                }
            } else if since.elapsed() > timeout {
                break Err(anyhow::anyhow!(
                    "timed out after {}s: {title}",
                    timeout.as_secs()
                ));
            }
            if let Err(e) = self.alive() {
                break Err(e);
            }
        };
        self.screen.hide_cursor(false);
        result
    }

    /// A pause for the eye; none in plain mode.
    async fn pause(&self, seconds: u64) {
        if self.screen.interactive() {
            tokio::time::sleep(Duration::from_secs(seconds)).await;
        }
    }

    async fn create(&mut self) -> Result<()> {
        let ns = self.args.namespace.clone();
        self.screen
            .banner(&format!("1/4 create a 3-node OctopusCluster on {FROM}"));
        let manifest = repo_file("e2e/demo/cluster.yaml");
        self.type_kubectl(
            &format!("apply -n {ns} -f e2e/demo/cluster.yaml   (Secrets + OctopusCluster {NAME})"),
            &["apply", "-f", &manifest.to_string_lossy()],
        )?;
        let ready = self
            .watch_until(&format!("1/4 create {NAME} on {FROM}"), |o| {
                o.condition("Ready", None) && o.current.as_deref() == Some(FROM)
            })
            .await?;
        self.type_kubectl(
            &format!("wait --for=condition=Ready octc/{NAME}"),
            &[
                "wait",
                "--for=condition=Ready",
                &format!("octc/{NAME}"),
                "--timeout=30s",
            ],
        )?;
        self.screen.say(&format!(
            "cluster ready: {} nodes on {FROM}, tasks flowing",
            ready.ready_nodes.as_deref().unwrap_or("-")
        ));
        self.pause(3).await;
        Ok(())
    }

    /// `kubectl patch octc` with a merge patch of the spec, shown as typed.
    fn patch_spec(&mut self, spec: &serde_json::Value) -> Result<()> {
        let body = serde_json::json!({ "spec": spec }).to_string();
        self.type_kubectl(
            &format!("patch octc {NAME} --type=merge -p '{body}'"),
            &[
                "patch",
                &format!("octc/{NAME}"),
                "--type=merge",
                "-p",
                &body,
            ],
        )?;
        Ok(())
    }

    /// The twin's last event's sequence number: a mark to replay an upgrade from.
    async fn twin_mark(&self) -> Result<u64> {
        Ok(self.twin_events().await?.last().map_or(0, |e| e.seq))
    }

    /// The database's event log (it holds only the demo's installation).
    async fn twin_events(&self) -> Result<Vec<Event>> {
        self.twin_get("/_twin/events").await
    }

    /// What the twin's admin API answers at `path`.
    async fn twin_get<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T> {
        let url = format!("{}{path}", self.twin_url);
        self.http
            .get(&url)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await
            .with_context(|| format!("reading {url}"))
    }

    /// Rolls the patch upgrade; the twin's marks before and after it.
    async fn patch_upgrade(&mut self) -> Result<(u64, u64)> {
        self.screen.banner(&format!(
            "2/4 patch upgrade {FROM} -> {PATCH} (rolling, one node at a time)"
        ));
        let start = self.twin_mark().await?;
        self.patch_spec(&serde_json::json!({ "version": PATCH }))?;
        // Mid-roll, once the first node runs the new version: what the node runs.
        self.watch_until(&format!("2/4 patch upgrade to {PATCH}"), |o| {
            o.finished(PATCH)
                || o.nodes
                    .iter()
                    .any(|n| n.ready && n.version.as_deref() == Some(PATCH))
        })
        .await?;
        self.screen.say("$ kubectl get pods -A -o wide");
        print!(
            "{}",
            self.kubectl_output(false, &["get", "pods", "-A", "-o", "wide"])?
        );
        self.pause(8).await;
        let done = self
            .watch_until(&format!("2/4 patch upgrade to {PATCH}"), |o| {
                o.finished(PATCH)
            })
            .await?;
        let end = self.twin_mark().await?;
        self.screen.say(&format!(
            "patch upgrade to {PATCH} finished: {} nodes ready, strategy {}",
            done.ready_nodes.as_deref().unwrap_or("-"),
            done.upgrade.strategy.as_deref().unwrap_or("-")
        ));
        self.pause(3).await;
        Ok((start, end))
    }

    /// Asks for the minor upgrade, shows it blocked, approves it and watches the
    /// stop-the-world steps; the twin's mark at the approval.
    async fn minor_upgrade(&mut self) -> Result<u64> {
        self.screen.banner(&format!(
            "3/4 minor upgrade {PATCH} -> {MINOR} (schema change)"
        ));
        self.patch_spec(&serde_json::json!({ "version": MINOR }))?;
        let blocked = self
            .watch_until(
                &format!("3/4 minor upgrade to {MINOR}: waiting for approval"),
                |o| o.condition("UpgradeBlocked", Some("SchemaUpgradeNotApproved")),
            )
            .await?;
        let current = blocked.current.as_deref().unwrap_or("-");
        self.screen.say(&format!(
            "UpgradeBlocked: SchemaUpgradeNotApproved (the cluster still serves {current})"
        ));
        self.screen
            .say(&format!("  message: {}", blocked.message("UpgradeBlocked")));
        if current != PATCH {
            bail!("the cluster left {PATCH} before approval (current: {current})");
        }
        self.pause(5).await;
        self.screen
            .say("approving the schema upgrade, as its message asks:");
        let start = self.twin_mark().await?;
        self.patch_spec(&serde_json::json!({ "upgrade": { "approvedVersion": MINOR } }))?;
        let done = self
            .watch_until(
                &format!("3/4 minor upgrade to {MINOR}: stop-the-world"),
                |o| o.finished(MINOR),
            )
            .await?;
        self.screen.say(&format!(
            "minor upgrade to {MINOR} finished: {} nodes ready, schema {}, strategy {}",
            done.ready_nodes.as_deref().unwrap_or("-"),
            done.schema.as_deref().unwrap_or("-"),
            done.upgrade.strategy.as_deref().unwrap_or("-")
        ));
        Ok(start)
    }

    async fn summary(&mut self, patch_roll: (u64, u64), minor_start: u64) -> Result<()> {
        self.screen.banner("4/4 summary");
        self.type_kubectl(
            &format!("get octc -n {}", self.args.namespace),
            &["get", "octc"],
        )?;
        self.screen.say(&format!(
            "$ kubectl describe octc {NAME}   (excerpt: conditions, last backup, events)"
        ));
        let described = self.kubectl_output(true, &["describe", &format!("octc/{NAME}")])?;
        print!("{}", summary::describe_excerpt(&described));
        // The backup Job's pod among the Octopus pods: it ran on the node and completed.
        self.type_kubectl(
            &format!("get pods -n {} -o wide", self.args.namespace),
            &["get", "pods", "-o", "wide"],
        )?;
        self.screen
            .say("the Octopus database's counters (replayed from its event log):");
        let events = self.twin_events().await?;
        let state: summary::State = self.twin_get("/_twin/state").await?;
        let installation = state.installations.into_iter().next().unwrap_or_default();
        let marks = summary::Marks {
            patch_roll,
            minor_start,
        };
        print!("{}", summary::counters(&events, &installation, marks));
        println!();
        self.screen.say(&format!(
            "demo finished: {FROM} -> {PATCH} (rolling) -> {MINOR} (stop-the-world, after approval)"
        ));
        Ok(())
    }
}
