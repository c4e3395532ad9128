//! The real control plane the scenarios run against: etcd, kube-apiserver and
//! kube-controller-manager started by `e2e/controlplane/up.sh`, with (as root) one real
//! node tainted so that only pods tolerating it are scheduled (e2e/tests/node.rs).
//!
//! [`TestCluster::shared`] reuses a running control plane or starts one, and hands out
//! kube clients, throwaway namespaces and kubectl bound to its admin kubeconfig. It owns
//! only the namespaces it creates; it never stops the control plane (`make cluster-down`
//! does), so the next test binary starts in milliseconds.
//!
//! A control plane that cannot be started or reached is an error, never a skip: a scenario
//! that did not run must not look like one that passed.

use std::{
    future::Future,
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
    sync::OnceLock,
    time::Duration,
};

use k8s_openapi::{
    NamespaceResourceScope,
    api::core::v1::{Namespace, ServiceAccount},
};
use kube::{
    Api, Client, Config, Resource,
    api::{DeleteParams, ObjectMeta, PostParams},
    config::{AuthInfo, KubeConfigOptions, Kubeconfig},
};
use serde::de::DeserializeOwned;

/// Env var naming the kubeconfig of an already running control plane to use instead of
/// starting one with up.sh. When set, up.sh is not run.
pub const KUBECONFIG_ENV: &str = "OCTOPUS_E2E_KUBECONFIG";
/// Env var that, when set to `1`, keeps test namespaces after the test (for debugging).
pub const KEEP_NAMESPACES_ENV: &str = "OCTOPUS_E2E_KEEP_NAMESPACES";
/// Env var naming the kubectl binary (see [`kubectl_binary`]).
pub const KUBECTL_ENV: &str = "KUBECTL";
/// Label put on every namespace the harness creates, so leftovers are easy to find.
pub const NAMESPACE_LABEL: &str = "octopusoperator.dev/e2e";

/// A pin from `e2e/controlplane/versions.env` (`KEY=value` lines), compiled in: the
/// Kubernetes version and the tool layers (kubectl, helm) the harness expects.
pub fn pin(key: &str) -> Option<&'static str> {
    include_str!("../controlplane/versions.env")
        .lines()
        .filter_map(|line| line.split_once('='))
        .find(|(k, _)| k.trim() == key)
        .map(|(_, v)| v.trim())
}

/// The Kubernetes version the control plane is built from (`e2e/controlplane/versions.env`).
pub fn pinned_kubernetes_version() -> &'static str {
    pin("K8S_VERSION").unwrap_or("unknown")
}

/// The kubectl the harness runs: env [`KUBECTL_ENV`], else the one of the control plane's
/// minor installed by `e2e/tools/install-kubectl.sh` (if it is), else `kubectl` on PATH.
pub fn kubectl_binary() -> PathBuf {
    if let Some(path) = std::env::var_os(KUBECTL_ENV) {
        return path.into();
    }
    let cache = std::env::var_os("OCTOPUS_OPERATOR_CACHE")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|home| Path::new(&home).join(".cache/octopus-operator"))
        });
    let installed = cache.zip(pin("KUBECTL_LAYER_PACKAGE").zip(pin("KUBECTL_LAYER_VERSION")));
    match installed {
        Some((cache, (package, version))) => {
            let path = cache
                .join("tools")
                .join(format!("{package}-{version}"))
                .join("kubectl");
            if path.is_file() {
                path
            } else {
                "kubectl".into()
            }
        }
        None => "kubectl".into(),
    }
}

fn up_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("controlplane/up.sh")
}

/// Why the harness could not give a test its control plane or run a command on it.
#[derive(thiserror::Error)]
pub enum ClusterError {
    #[error("the control plane did not start: {script} {status}; its output:\n{output}")]
    Start {
        script: PathBuf,
        status: String,
        output: String,
    },
    #[error("cannot reach the control plane of {kubeconfig}: {message}")]
    Unreachable {
        kubeconfig: PathBuf,
        message: String,
    },
    #[error("cannot load kubeconfig {kubeconfig}: {message}")]
    Kubeconfig {
        kubeconfig: PathBuf,
        message: String,
    },
    #[error("kubectl {args}: {message}")]
    Kubectl { args: String, message: String },
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout { what: String, after: Duration },
    #[error(transparent)]
    Kube(#[from] kube::Error),
}

// A test returning `Err` prints it with Debug: show the readable message (with up.sh's
// output on real lines) instead of an escaped struct.
impl std::fmt::Debug for ClusterError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// A handle on the shared control plane. Cheap to create; make one per test (a kube
/// [`Client`] is bound to the tokio runtime it was created on, and each `#[tokio::test]`
/// has its own).
#[derive(Clone)]
pub struct TestCluster {
    client: Client,
    config: Config,
    kubeconfig: PathBuf,
}

impl std::fmt::Debug for TestCluster {
    // The config holds the admin client key: show only where it came from.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCluster")
            .field("kubeconfig", &self.kubeconfig)
            .field("server", &self.config.cluster_url)
            .finish()
    }
}

/// The kubeconfig of the control plane, found or started once per test process.
static KUBECONFIG: OnceLock<Result<PathBuf, String>> = OnceLock::new();

impl TestCluster {
    /// Connects to the control plane, starting it first if needed.
    ///
    /// With [`KUBECONFIG_ENV`] set, that kubeconfig is used as is. Otherwise
    /// `e2e/controlplane/up.sh` runs once per test process (it reuses a healthy control
    /// plane in its run directory and starts a fresh one otherwise; the `OCTOPUS_OPERATOR_*`
    /// env vars it reads pass through). Either way the API server must answer, or this
    /// returns an error naming the kubeconfig and the cause.
    pub async fn shared() -> Result<Self, ClusterError> {
        let kubeconfig =
            tokio::task::spawn_blocking(|| KUBECONFIG.get_or_init(find_or_start).clone())
                .await
                .map_err(|e| ClusterError::Start {
                    script: up_script(),
                    status: "panicked".into(),
                    output: e.to_string(),
                })?
                .map_err(|output| ClusterError::Start {
                    script: up_script(),
                    status: "failed".into(),
                    output,
                })?;
        Self::connect(&kubeconfig).await
    }

    /// Connects with the given admin kubeconfig; the API server must answer.
    pub async fn connect(kubeconfig: &Path) -> Result<Self, ClusterError> {
        let load_error = |message: String| ClusterError::Kubeconfig {
            kubeconfig: kubeconfig.to_owned(),
            message,
        };
        let file = Kubeconfig::read_from(kubeconfig).map_err(|e| load_error(e.to_string()))?;
        let config = Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
            .await
            .map_err(|e| load_error(e.to_string()))?;
        let client = Client::try_from(config.clone()).map_err(|e| load_error(e.to_string()))?;
        client
            .apiserver_version()
            .await
            .map_err(|e| ClusterError::Unreachable {
                kubeconfig: kubeconfig.to_owned(),
                message: format!("{e} (is it running? `make cluster-up` starts it)"),
            })?;
        Ok(Self {
            client,
            config,
            kubeconfig: kubeconfig.to_owned(),
        })
    }

    /// A client acting as cluster admin (group system:masters).
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// The admin client configuration, e.g. to derive a client with other credentials.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Path of the admin kubeconfig.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// A client that authenticates with a bearer token only (no client certificate),
    /// e.g. a ServiceAccount token from a TokenRequest, to test what RBAC lets it do.
    pub fn client_with_token(&self, token: &str) -> Result<Client, ClusterError> {
        let auth: AuthInfo = serde_json::from_value(serde_json::json!({ "token": token }))
            .map_err(|e| ClusterError::Kubeconfig {
                kubeconfig: self.kubeconfig.clone(),
                message: format!("building token credentials: {e}"),
            })?;
        let mut config = self.config.clone();
        config.auth_info = auth;
        Ok(Client::try_from(config)?)
    }

    /// Creates a namespace named `<prefix>-<random>` and waits until its `default`
    /// ServiceAccount exists (Pods cannot be created before). It is deleted when the
    /// returned handle is dropped or [`TestNamespace::cleanup`] is awaited, unless
    /// [`KEEP_NAMESPACES_ENV`] is `1`.
    pub async fn namespace(&self, prefix: &str) -> Result<TestNamespace, ClusterError> {
        let name = unique_name(prefix);
        let namespaces: Api<Namespace> = Api::all(self.client());
        let namespace = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some([(NAMESPACE_LABEL.to_owned(), "true".to_owned())].into()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        namespaces
            .create(&PostParams::default(), &namespace)
            .await?;
        let handle = TestNamespace {
            name: name.clone(),
            client: self.client(),
            config: self.config.clone(),
            deleted: false,
        };
        let accounts: Api<ServiceAccount> = Api::namespaced(self.client(), &name);
        wait_until(
            &format!("the default ServiceAccount in namespace {name}"),
            Duration::from_secs(60),
            || async { Ok(accounts.get_opt("default").await?.map(|_| ())) },
        )
        .await?;
        Ok(handle)
    }

    /// Runs kubectl with the admin kubeconfig. A non-zero exit is not an error here (tests
    /// of rejected input need its stderr); use [`KubectlOutput::ok`] to require success.
    pub async fn kubectl<I, S>(&self, args: I) -> Result<KubectlOutput, ClusterError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.kubectl_with_stdin(args, None).await
    }

    /// Like [`Self::kubectl`], writing `stdin` to kubectl's standard input (`apply -f -`).
    pub async fn kubectl_with_stdin<I, S>(
        &self,
        args: I,
        stdin: Option<&str>,
    ) -> Result<KubectlOutput, ClusterError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let args: Vec<String> = args.into_iter().map(Into::into).collect();
        let kubeconfig = self.kubeconfig.clone();
        let stdin = stdin.map(str::to_owned);
        let shown = args.join(" ");
        tokio::task::spawn_blocking(move || run_kubectl(&kubeconfig, &args, stdin.as_deref()))
            .await
            .map_err(|e| ClusterError::Kubectl {
                args: shown.clone(),
                message: e.to_string(),
            })?
            .map_err(|message| ClusterError::Kubectl {
                args: shown,
                message,
            })
    }
}

/// What a kubectl run printed and how it exited.
#[derive(Debug, Clone)]
pub struct KubectlOutput {
    pub args: Vec<String>,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl KubectlOutput {
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// `self` if kubectl exited 0, else an error carrying its stderr.
    pub fn ok(self) -> Result<Self, ClusterError> {
        if self.success() {
            Ok(self)
        } else {
            Err(ClusterError::Kubectl {
                args: self.args.join(" "),
                message: format!("{}: {}", self.status, self.stderr.trim()),
            })
        }
    }
}

/// A namespace created for one test; deleted on drop (in the background: the call does
/// not wait for the namespace controller to empty it).
pub struct TestNamespace {
    name: String,
    client: Client,
    config: Config,
    deleted: bool,
}

impl std::fmt::Debug for TestNamespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestNamespace")
            .field("name", &self.name)
            .finish()
    }
}

impl TestNamespace {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// An API for a namespaced resource kind in this namespace, as cluster admin.
    pub fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }

    /// Deletes the namespace now and reports failure (drop only logs it).
    pub async fn cleanup(mut self) -> Result<(), ClusterError> {
        self.deleted = true;
        if keep_namespaces() {
            return Ok(());
        }
        delete_namespace(self.client.clone(), &self.name).await
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        if self.deleted || keep_namespaces() {
            return;
        }
        // Drop cannot await, and the test's runtime may be shutting down: delete from a
        // short-lived thread with its own runtime and client.
        let (config, name) = (self.config.clone(), self.name.clone());
        let deleted = std::thread::spawn(move || -> Result<(), String> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async {
                let client = Client::try_from(config).map_err(|e| e.to_string())?;
                delete_namespace(client, &name)
                    .await
                    .map_err(|e| e.to_string())
            })
        })
        .join();
        match deleted {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!(
                "warning: could not delete test namespace {}: {e}",
                self.name
            ),
            Err(_) => eprintln!("warning: deleting test namespace {} panicked", self.name),
        }
    }
}

async fn delete_namespace(client: Client, name: &str) -> Result<(), ClusterError> {
    let namespaces: Api<Namespace> = Api::all(client);
    match namespaces.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Polls `check` every 200 ms until it yields `Some`, an error, or `timeout` passes.
/// `what` names the awaited condition in the timeout error.
pub async fn wait_until<T, F, Fut>(
    what: &str,
    timeout: Duration,
    mut check: F,
) -> Result<T, ClusterError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>, ClusterError>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await? {
            return Ok(value);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(ClusterError::Timeout {
                what: what.to_owned(),
                after: timeout,
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn keep_namespaces() -> bool {
    std::env::var(KEEP_NAMESPACES_ENV).is_ok_and(|v| v == "1")
}

/// `<prefix>-<6 random chars>`, cut to a valid namespace name (DNS label).
fn unique_name(prefix: &str) -> String {
    let mut base: String = prefix
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    base.truncate(55);
    let base = base.trim_matches('-');
    let base = if base.is_empty() { "e2e" } else { base };
    let suffix: String = (0..6)
        .map(|_| fastrand::alphanumeric().to_ascii_lowercase())
        .collect();
    format!("{base}-{suffix}")
}

/// The explicit kubeconfig, or the one up.sh prints after starting or reusing the
/// control plane. Errors are the text shown to the test author.
fn find_or_start() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os(KUBECONFIG_ENV) {
        return Ok(PathBuf::from(path));
    }
    let script = up_script();
    let output = Command::new("bash")
        .arg(&script)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        return Err(format!("{}\n{stderr}", output.status));
    }
    // Shown with the test's output if it fails.
    eprint!("{stderr}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    stdout
        .lines()
        .last()
        .map(|line| PathBuf::from(line.trim()))
        .filter(|path| path.is_file())
        .ok_or_else(|| format!("up.sh printed no kubeconfig path (stdout: {stdout:?})\n{stderr}"))
}

fn run_kubectl(
    kubeconfig: &Path,
    args: &[String],
    stdin: Option<&str>,
) -> Result<KubectlOutput, String> {
    use std::io::Write;
    let kubectl = kubectl_binary();
    let mut child = Command::new(&kubectl)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", kubectl.display()))?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input.as_bytes())
            .map_err(|e| format!("writing kubectl's stdin: {e}"))?;
    }
    let output = child.wait_with_output().map_err(|e| e.to_string())?;
    Ok(KubectlOutput {
        args: args.to_vec(),
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_names_are_valid_dns_labels() {
        for prefix in ["smoke", "CRD Samples", "---", "", &"x".repeat(80)] {
            let name = unique_name(prefix);
            assert!(name.len() <= 63, "{name}");
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "{name}"
            );
            assert!(!name.starts_with('-') && !name.ends_with('-'), "{name}");
        }
        assert_ne!(unique_name("a"), unique_name("a"));
    }

    #[test]
    fn version_pin_is_read() {
        assert!(pinned_kubernetes_version().starts_with("v1."));
    }
}
