//! A scenario's backups ([`Backups`]): on the real node the backup Job's pod runs for real
//! and asks the database twin for the backup (`/_db/backups`, recorded in its event log);
//! in the played world [`JobRunner`] plays kubelet for backup Job pods of one namespace:
//! each pod of a backup Job "runs" for a moment and then succeeds, or fails while failure
//! is switched on. Either way scenarios see when each backup finished, so they can check
//! that the backup came before any Octopus node stopped.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::TryStreamExt;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::task::JoinHandle;

use crate::twin::database::DatabaseBackups;

/// Label value of backup pods (set by the operator's backup Job builder).
const BACKUP_SELECTOR: &str = "app.kubernetes.io/name=octopus-backup";

/// A finished backup: its pod (played world) or its BACKUP_NAME, the Job's name (real
/// node).
#[derive(Clone, Debug)]
pub struct BackupRun {
    pub pod: String,
    pub succeeded: bool,
    pub at: Timestamp,
}

/// The backups of a scenario's world.
pub enum Backups {
    /// Backup pods played by [`JobRunner`].
    Played(JobRunner),
    /// Backup pods on the real node, taken by the database twin.
    Real(DatabaseBackups),
}

impl Backups {
    /// Makes backups fail (true) or succeed (false) from now on.
    pub fn set_failing(&self, failing: bool) {
        match self {
            Self::Played(runner) => runner.set_failing(failing),
            Self::Real(db) => db.set_failing(failing),
        }
    }

    /// The backups finished so far, oldest first.
    pub fn runs(&self) -> Vec<BackupRun> {
        match self {
            Self::Played(runner) => runner.runs(),
            Self::Real(db) => db
                .taken()
                .into_iter()
                .map(|(pod, succeeded, at)| BackupRun { pod, succeeded, at })
                .collect(),
        }
    }

    pub fn stop(&self) {
        if let Self::Played(runner) = self {
            runner.stop();
        }
    }
}

/// The running job kubelet.
pub struct JobRunner {
    fail: Arc<AtomicBool>,
    runs: Arc<Mutex<Vec<BackupRun>>>,
    task: JoinHandle<()>,
}

impl JobRunner {
    pub fn start(client: Client, namespace: &str) -> Self {
        let fail = Arc::new(AtomicBool::new(false));
        let runs = Arc::new(Mutex::new(Vec::new()));
        let pods: Api<Pod> = Api::namespaced(client, namespace);
        let task = tokio::spawn(run(pods, fail.clone(), runs.clone()));
        Self { fail, runs, task }
    }

    /// Makes backups fail (true) or succeed (false) from now on.
    pub fn set_failing(&self, failing: bool) {
        self.fail.store(failing, Ordering::SeqCst);
    }

    pub fn runs(&self) -> Vec<BackupRun> {
        self.runs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub fn stop(&self) {
        self.task.abort();
    }
}

async fn run(pods: Api<Pod>, fail: Arc<AtomicBool>, runs: Arc<Mutex<Vec<BackupRun>>>) {
    let stream = watcher::watcher(
        pods.clone(),
        watcher::Config::default().labels(BACKUP_SELECTOR),
    )
    .applied_objects();
    let mut stream = std::pin::pin!(stream);
    loop {
        let pod = match stream.try_next().await {
            Ok(Some(pod)) => pod,
            Ok(None) => return,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let phase = pod.status.as_ref().and_then(|s| s.phase.clone());
        if matches!(phase.as_deref(), Some("Succeeded" | "Failed"))
            || pod.metadata.deletion_timestamp.is_some()
        {
            continue;
        }
        let name = pod.name_any();
        let succeeded = !fail.load(Ordering::SeqCst);
        // The backup "runs" for a moment.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let container = pod
            .spec
            .as_ref()
            .and_then(|s| s.containers.first())
            .map(|c| c.name.clone())
            .unwrap_or_else(|| "backup".into());
        let now = Timestamp::now().to_string();
        let status = json!({"status": {
            "phase": if succeeded { "Succeeded" } else { "Failed" },
            "startTime": now,
            "conditions": [{"type": "Ready", "status": "False", "reason": "PodCompleted"}],
            "containerStatuses": [{
                "name": container, "image": "backup", "imageID": "", "ready": false,
                "restartCount": 0,
                "state": {"terminated": {
                    "exitCode": if succeeded { 0 } else { 1 },
                    "reason": if succeeded { "Completed" } else { "Error" },
                    "startedAt": now, "finishedAt": now,
                }}
            }]
        }});
        if pods
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .is_ok()
        {
            runs.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(BackupRun {
                    pod: name,
                    succeeded,
                    at: Timestamp::now(),
                });
        }
    }
}
