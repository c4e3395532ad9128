//! What the demo starts and how it ends: kubectl and helm as a person would run them,
//! the shared database (the twin) as a child process, the operator's Helm release, and
//! the clean-up (also after a failure or CTRL-C) that deletes the cluster while the
//! operator still runs, then uninstalls the release, deletes the volumes and the
//! namespace, then stops the database.

use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use octopus_e2e::helm::{HelmOutput, helm_output};
use octopus_e2e::process::Process;
use octopus_e2e::real_node::TAINT;
use octopus_e2e::storage;
use octopus_operator::api::OctopusCluster;

use crate::{Demo, NAME, Outcome, repo_file, screen};

/// The namespace annotation whose tolerations the API server adds to its pods.
const TOLERATIONS_ANNOTATION: &str = "scheduler.alpha.kubernetes.io/defaultTolerations";

impl Demo {
    /// `kubectl` against the demo's control plane (and namespace, when `namespaced`).
    pub(crate) fn kubectl(&self, namespaced: bool, args: &[&str]) -> Command {
        let mut command = Command::new(&self.args.kubectl);
        command.arg("--kubeconfig").arg(&self.args.kubeconfig);
        if namespaced {
            command.args(["-n", &self.args.namespace]);
        }
        command.args(args).stdin(Stdio::null());
        command
    }

    /// Runs kubectl; its output, or an error with what it said.
    pub(crate) fn kubectl_output(&self, namespaced: bool, args: &[&str]) -> Result<String> {
        let output = self
            .kubectl(namespaced, args)
            .output()
            .with_context(|| format!("running {}", self.args.kubectl.display()))?;
        if !output.status.success() {
            bail!(
                "kubectl {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Shows `$ kubectl ...` as a person would type it, runs it and shows its output.
    pub(crate) fn type_kubectl(&mut self, shown: &str, args: &[&str]) -> Result<String> {
        self.screen.say(&format!("$ kubectl {shown}"));
        let output = self.kubectl_output(true, args)?;
        print!("{output}");
        Ok(output)
    }

    /// Lets the namespace's pods onto the real node (it is tainted so that only pods that
    /// ask for it land there): its default tolerations, which the API server's
    /// PodTolerationRestriction admission adds to every pod of the namespace.
    pub(crate) fn admit_to_node(&mut self) -> Result<()> {
        let tolerations =
            format!(r#"[{{"key":"{TAINT}","operator":"Exists","effect":"NoSchedule"}}]"#);
        let annotation = format!("{TOLERATIONS_ANNOTATION}={tolerations}");
        let ns = self.args.namespace.clone();
        self.type_kubectl(
            &format!("annotate namespace {ns} '{annotation}'"),
            &["annotate", "namespace", &ns, &annotation],
        )?;
        Ok(())
    }

    /// The shared database: `octopus-twin` on the host's end of the node's veth, where
    /// the Octopus pods reach it (no kubelet role: the node's kubelet runs the pods), and
    /// the Secret `octopus-db` with its connection string.
    pub(crate) async fn start_twin(&mut self) -> Result<()> {
        let out = self.run.join("twin.out");
        let mut command = Command::new(&self.args.twin);
        command
            .arg(format!("--bind={}:0", self.args.database_host))
            .args(["--start-delay-ms=800", "--migration-time-ms=3000"])
            .args([
                "--deployments-per-minute=40",
                "--deployment-duration-min-ms=1000",
            ])
            .arg("--deployment-duration-max-ms=4000")
            // Its --kubeconfig (also read from KUBECONFIG) would make it play kubelet.
            .env_remove("KUBECONFIG")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out)?)
            .stderr(std::fs::File::create(self.run.join("twin.log"))?);
        let twin = self.twin.insert(
            Process::spawn(command)
                .with_context(|| format!("starting {}", self.args.twin.display()))?,
        );
        let pid = twin.pid();
        let deadline = Instant::now() + Duration::from_secs(10);
        self.twin_url = loop {
            let said = std::fs::read_to_string(&out).unwrap_or_default();
            if let Some(url) = said
                .lines()
                .find_map(|l| l.strip_prefix("octopus-twin listening on "))
            {
                break url.trim().to_string();
            }
            if twin.exited()?.is_some() {
                bail!("octopus-twin exited at start");
            }
            if Instant::now() >= deadline {
                bail!("octopus-twin did not report its address");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        self.screen.say(&format!(
            "started octopus-twin (pid {pid}) at {}: the shared Octopus database, on the host's end of the node's veth",
            self.twin_url
        ));
        let server = self
            .twin_url
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .replace(':', ",");
        let database = format!("Server={server};Database=OctopusDemo");
        self.connection_string = format!("{database};User Id=octopus;Password=demo");
        self.screen.say(&format!(
            "$ kubectl create secret generic octopus-db --from-literal=connectionString='{database};User Id=octopus;Password=...'"
        ));
        let literal = format!("connectionString={}", self.connection_string);
        let created = self.kubectl_output(
            true,
            &[
                "create",
                "secret",
                "generic",
                "octopus-db",
                "--from-literal",
                &literal,
            ],
        )?;
        print!("{created}");
        Ok(())
    }

    /// The shared volumes' claims get hostPath PersistentVolumes: the node has no
    /// provisioner (`octopus_e2e::storage`).
    pub(crate) async fn provide_volumes(&mut self) -> Result<()> {
        let run_dir = self
            .args
            .kubeconfig
            .parent()
            .context("the kubeconfig has no directory")?;
        let volumes =
            storage::provide_in(self.client.clone(), run_dir, &self.args.namespace, NAME).await?;
        self.volumes_created = true;
        self.screen.say(&format!(
            "created {} hostPath PersistentVolumes for the cluster's shared-volume claims (the node has no provisioner)",
            volumes.len()
        ));
        Ok(())
    }

    /// The Helm release: the namespace's name, so that its cluster-scoped objects never
    /// meet another demo's.
    fn release(&self) -> &str {
        &self.args.namespace
    }

    /// Shows `$ helm ...` as typed, runs it (against the demo's control plane and
    /// namespace) and shows its output.
    fn type_helm(&mut self, shown: &str, args: &[&str]) -> Result<String> {
        self.screen.say(&format!("$ helm {shown}"));
        let out = self.helm(args)?;
        if !out.success {
            bail!("helm {shown} failed: {}", out.stderr.trim());
        }
        print!("{}", out.stdout);
        Ok(out.stdout)
    }

    fn helm(&self, args: &[&str]) -> Result<HelmOutput> {
        let kubeconfig = self.args.kubeconfig.to_string_lossy();
        let mut all = args.to_vec();
        all.extend([
            "--namespace",
            &self.args.namespace,
            "--kubeconfig",
            &kubeconfig,
        ]);
        helm_output(all)
    }

    /// `helm install` of the chart: the operator as a Deployment from its image, under
    /// its ServiceAccount, watching the demo's namespace, reaching Octopus by the chart's
    /// default in-cluster URLs; then waits for its rollout.
    pub(crate) fn install_operator(&mut self) -> Result<()> {
        let release = self.release().to_owned();
        let ns = self.args.namespace.clone();
        let (repository, tag) = self
            .args
            .operator_image
            .rsplit_once(':')
            .context("DEMO_OPERATOR_IMAGE has no tag")?;
        let chart = repo_file("charts/octopus-operator");
        let image = format!("image.repository={repository},image.tag={tag}");
        let watch = format!("watchNamespace={ns}");
        let tolerations = format!(
            r#"tolerations=[{{"key":"{TAINT}","operator":"Exists","effect":"NoSchedule"}}]"#
        );
        self.release_installed = true;
        self.type_helm(
            &format!(
                "install {release} charts/octopus-operator --set {image} --set {watch} --set pollInterval=1s --set-json '{tolerations}'"
            ),
            &[
                "install",
                &release,
                &chart.to_string_lossy(),
                "--set",
                &image,
                "--set",
                &watch,
                "--set",
                "pollInterval=1s",
                "--set-json",
                &tolerations,
            ],
        )?;
        let deployment = format!("deployment/{release}-octopus-operator");
        self.type_kubectl(
            &format!("rollout status {deployment}"),
            &["rollout", "status", &deployment, "--timeout=180s"],
        )?;
        Ok(())
    }

    /// Fails when the database has exited.
    pub(crate) fn alive(&mut self) -> Result<()> {
        if let Some(process) = &mut self.twin
            && process.exited()?.is_some()
        {
            bail!(
                "octopus-twin exited (see {})",
                self.run.join("twin.log").display()
            );
        }
        Ok(())
    }

    /// Whether the demo's Helm release is installed (left from an earlier run, say).
    pub(crate) fn release_exists(&self) -> bool {
        let release = self.release().to_owned();
        self.helm(&["status", &release]).is_ok_and(|o| o.success)
    }

    pub(crate) async fn namespace_exists(&self) -> Result<bool> {
        let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(self.client.clone());
        Ok(namespaces.get_opt(&self.args.namespace).await?.is_some())
    }

    /// Deletes the demo's clusters (their finalizer needs the operator, or is removed by
    /// hand when none runs) and then the namespace, waiting until it is gone.
    pub(crate) async fn delete_namespace(&mut self, operator_running: bool) {
        let clusters = self.clusters();
        let names = |list: Option<Vec<OctopusCluster>>| -> Vec<String> {
            list.unwrap_or_default()
                .into_iter()
                .filter_map(|c| c.metadata.name)
                .collect()
        };
        let list = clusters.list(&ListParams::default()).await.ok();
        if !names(list.map(|l| l.items)).is_empty() {
            let _ = clusters
                .delete_collection(&DeleteParams::default(), &ListParams::default())
                .await;
            if operator_running {
                let deadline = Instant::now() + Duration::from_secs(30);
                while Instant::now() < deadline
                    && clusters
                        .list(&ListParams::default())
                        .await
                        .is_ok_and(|l| !l.items.is_empty())
                {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
            // Whatever still holds a finalizer has no operator left to release it.
            let left = clusters.list(&ListParams::default()).await.ok();
            for name in names(left.map(|l| l.items)) {
                self.screen.say(&format!(
                    "warning: removing the finalizer of octopuscluster/{name} by hand"
                ));
                let patch = serde_json::json!({ "metadata": { "finalizers": null } });
                let _ = clusters
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await;
            }
            self.screen.say("OctopusCluster deleted");
        }
        if self.release_exists() {
            let release = self.release().to_owned();
            if let Err(e) = self.type_helm(
                &format!("uninstall {release} --wait"),
                &["uninstall", &release, "--wait", "--timeout", "120s"],
            ) {
                self.screen.say(&format!("warning: {e:#}"));
            }
        }
        self.release_installed = false;
        if let Err(e) = storage::release_in(self.client.clone(), &self.args.namespace).await {
            self.screen
                .say(&format!("warning: the volumes were not deleted: {e:#}"));
        }
        let deleted = self.kubectl_output(
            false,
            &[
                "delete",
                "namespace",
                &self.args.namespace,
                "--ignore-not-found",
                "--wait=true",
                "--timeout=120s",
            ],
        );
        if deleted.is_err() {
            self.screen.say(&format!(
                "warning: namespace {} is still terminating",
                self.args.namespace
            ));
        }
    }

    /// The operator pods' last log lines (for a failure).
    fn operator_logs(&self) {
        let selector = format!("app.kubernetes.io/instance={}", self.release());
        match self.kubectl_output(
            true,
            &[
                "logs",
                "-l",
                &selector,
                "--tail=25",
                "--prefix",
                "--all-containers",
            ],
        ) {
            Ok(logs) => eprintln!("--- the operator pods' logs (last lines)\n{logs}"),
            Err(e) => eprintln!("--- no operator logs: {e:#}"),
        }
    }

    /// Stops a process the demo started, and says so.
    fn stop(&mut self, process: Option<Process>, what: &str) {
        if let Some(mut process) = process {
            process.stop();
            self.screen
                .say(&format!("stopped {what} (pid {})", process.pid()));
        }
    }

    /// Cleans up whatever the stages reached; the exit code.
    pub(crate) async fn finish(mut self, outcome: Outcome) -> ExitCode {
        self.screen.hide_cursor(false);
        let mut failed = match &outcome {
            Outcome::Done => false,
            Outcome::Interrupted => {
                self.screen.say("interrupted");
                true
            }
            Outcome::Failed(e) => {
                eprintln!("\n{} DEMO FAILED: {e:#}", self.screen.stamp());
                screen::tail(&self.run.join("twin.log"), 25);
                self.operator_logs();
                true
            }
        };
        self.screen.banner("cleaning up");
        let ns = self.args.namespace.clone();
        if self.namespace_created {
            self.screen.say(&format!(
                "deleting OctopusCluster {NAME} (the operator releases what it holds), the operator's release and namespace {ns}"
            ));
            let running = self.release_installed;
            self.delete_namespace(running).await;
        }
        let twin = self.twin.take();
        self.stop(twin, "octopus-twin");
        if self.namespace_created {
            if self.namespace_exists().await.unwrap_or(true) {
                self.screen.say(&format!(
                    "namespace {ns} still exists: the next run deletes it first"
                ));
                failed = true;
            } else {
                self.screen.say(&format!("namespace {ns} deleted"));
            }
        }
        if !failed && self.run_is_ours && !self.args.keep_run_dir {
            let _ = std::fs::remove_dir_all(&self.run);
        } else {
            self.screen
                .say(&format!("logs kept in {}", self.run.display()));
        }
        match outcome {
            Outcome::Interrupted => ExitCode::from(130),
            _ if failed => ExitCode::FAILURE,
            _ => ExitCode::SUCCESS,
        }
    }
}
