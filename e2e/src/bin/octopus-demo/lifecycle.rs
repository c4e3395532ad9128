//! What the demo starts and how it ends: kubectl as a person would run it, the twin and
//! the operator as child processes, and the clean-up (also after a failure or CTRL-C)
//! that deletes the cluster while the operator still runs, then the namespace, then
//! stops the processes.

use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use octopus_e2e::process::Process;
use octopus_operator::api::OctopusCluster;

use crate::{Demo, NAME, Outcome, screen};

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

    pub(crate) async fn start_twin(&mut self) -> Result<()> {
        let out = self.run.join("twin.out");
        let mut command = Command::new(&self.args.twin);
        command
            .arg("--bind=127.0.0.1:0")
            .arg("--kubeconfig")
            .arg(&self.args.kubeconfig)
            .args(["--namespace", &self.args.namespace, "--run-backup-jobs"])
            .args(["--start-delay-ms=800", "--migration-time-ms=3000"])
            .args([
                "--deployments-per-minute=40",
                "--deployment-duration-min-ms=1000",
            ])
            .arg("--deployment-duration-max-ms=4000")
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
            "started octopus-twin (pid {pid}) at {}: kubelet for {}, Octopus API, backup Jobs",
            self.twin_url, self.args.namespace
        ));
        Ok(())
    }

    pub(crate) fn start_operator(&mut self) -> Result<()> {
        let log = std::fs::File::create(self.run.join("operator.log"))?;
        let mut command = Command::new(&self.args.operator);
        command
            .args(["run", "--namespace", &self.args.namespace])
            .args(["--metrics-addr", "127.0.0.1:0", "--poll-interval", "500ms"])
            .arg("--api-url-template")
            .arg(format!("{}/{{namespace}}/{{name}}", self.twin_url))
            .arg("--node-url-template")
            .arg(format!(
                "{}/{{namespace}}/{{service}}/{{pod}}",
                self.twin_url
            ))
            .env("KUBECONFIG", &self.args.kubeconfig)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let operator = Process::spawn(command)
            .with_context(|| format!("starting {}", self.args.operator.display()))?;
        self.screen.say(&format!(
            "started octopus-operator (pid {}) watching {}",
            operator.pid(),
            self.args.namespace
        ));
        self.operator = Some(operator);
        Ok(())
    }

    /// Fails when the operator or the twin has exited.
    pub(crate) fn alive(&mut self) -> Result<()> {
        for (process, what, log) in [
            (&mut self.operator, "octopus-operator", "operator.log"),
            (&mut self.twin, "octopus-twin", "twin.log"),
        ] {
            if let Some(process) = process
                && process.exited()?.is_some()
            {
                bail!("{what} exited (see {})", self.run.join(log).display());
            }
        }
        Ok(())
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
                for log in ["operator.log", "twin.log"] {
                    screen::tail(&self.run.join(log), 25);
                }
                true
            }
        };
        self.screen.banner("cleaning up");
        let ns = self.args.namespace.clone();
        if self.namespace_created {
            self.screen.say(&format!(
                "deleting OctopusCluster {NAME} (the operator releases what it holds) and namespace {ns}"
            ));
            let running = self
                .operator
                .as_mut()
                .is_some_and(|p| matches!(p.exited(), Ok(None)));
            self.delete_namespace(running).await;
        }
        let operator = self.operator.take();
        self.stop(operator, "octopus-operator");
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
