//! [`OctopusClient`]: the reqwest (rustls) implementation of [`OctopusApi`].
//!
//! Owns the wire: URL building under the base URL's virtual directory, the
//! `X-Octopus-ApiKey` header, the per-call timeout, retries with exponential backoff for
//! idempotent calls only (GET and PUT; a POST is sent once, since it may have been carried
//! out even when its answer was lost), mapping statuses to [`OctopusError`], and a debug
//! line per attempt. It does not decide anything.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use backon::{ExponentialBuilder, Retryable};
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap, HeaderValue, USER_AGENT};
use reqwest::{Method, StatusCode, Url};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use tracing::Instrument;

use super::endpoint::{ApiKey, OctopusEndpoint};
use super::error::OctopusError;
use super::models::{
    ClusterSummary, CreateTask, Machine, MaintenanceConfiguration, NodePing, OctopusServerNode,
    Page, RootResource, ServerStatusHealth, ServerTask, Space, TaskQuery,
};
use super::{OctopusApi, OctopusResult};

/// The header Octopus reads the API key from.
pub const API_KEY_HEADER: &str = "X-Octopus-ApiKey";

/// How patient the client is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientOptions {
    /// Limit for one attempt of one call, connect to last body byte.
    pub timeout: Duration,
    /// Extra attempts for idempotent calls after a transient failure (0 = no retry).
    pub retries: usize,
    /// First backoff delay; doubles per retry (with jitter) up to `max_backoff`.
    pub min_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            timeout: Duration::from_secs(10),
            retries: 3,
            min_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
        }
    }
}

/// Told about every attempt of every call (metrics): the method, the route template
/// (`/api/octopusservernodes/{id}`, never an id) and the HTTP status, or `None` when no
/// answer came (timeout, connection refused).
pub trait CallObserver: Send + Sync {
    fn observed(&self, method: &str, route: &'static str, status: Option<u16>);
}

/// Talks to one Octopus Server endpoint. Cheap to clone (the connection pool is shared).
#[derive(Clone)]
pub struct OctopusClient {
    http: reqwest::Client,
    base: Url,
    api_key: ApiKey,
    options: ClientOptions,
    observer: Option<Arc<dyn CallObserver>>,
}

impl fmt::Debug for OctopusClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OctopusClient")
            .field("base", &self.base.as_str())
            .field("api_key", &self.api_key)
            .field("options", &self.options)
            .finish()
    }
}

/// Octopus's error body (`OctopusErrorsContract`).
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ErrorsContract {
    #[serde(default)]
    error_message: Option<String>,
    #[serde(default)]
    errors: Option<Vec<String>>,
}

/// Longest server-supplied text kept in an error.
const MAX_MESSAGE_CHARS: usize = 400;

/// One prepared call.
struct Call<'a> {
    method: Method,
    /// The route template, for metrics.
    template: &'static str,
    /// Path under the base URL, as segments (each percent-encoded on its own).
    segments: &'a [&'a str],
    query: Vec<(&'static str, String)>,
    body: Option<Vec<u8>>,
    /// Non-2xx statuses that are answers for this route (418 for ping and health).
    also_ok: &'a [u16],
}

impl OctopusClient {
    pub fn new(endpoint: &OctopusEndpoint) -> OctopusResult<Self> {
        Self::with_options(endpoint, ClientOptions::default())
    }

    pub fn with_options(endpoint: &OctopusEndpoint, options: ClientOptions) -> OctopusResult<Self> {
        let invalid = |detail: &str| OctopusError::InvalidEndpoint {
            detail: detail.to_string(),
        };
        let base = endpoint.parsed_base_url()?;
        let api_key = endpoint.api_key.clone();
        if api_key.expose().is_empty() {
            return Err(invalid("API key is empty"));
        }
        let mut key_header = HeaderValue::from_str(api_key.expose())
            .map_err(|_| invalid("API key is not a valid HTTP header value"))?;
        // Keeps hyper and reqwest from ever printing it.
        key_header.set_sensitive(true);
        let mut headers = HeaderMap::new();
        headers.insert(API_KEY_HEADER, key_header);
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        headers.insert(
            USER_AGENT,
            HeaderValue::from_static(concat!("octopus-operator/", env!("CARGO_PKG_VERSION"))),
        );

        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .default_headers(headers)
            .timeout(options.timeout)
            .connect_timeout(options.timeout);
        if let Some(pem) = &endpoint.ca_bundle_pem {
            let certificates = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|_| invalid("CA bundle is not valid PEM"))?;
            if certificates.is_empty() {
                return Err(invalid("CA bundle holds no certificate"));
            }
            for certificate in certificates {
                builder = builder.add_root_certificate(certificate);
            }
        }
        let http = builder
            .build()
            .map_err(|e| invalid(&format!("HTTP client: {}", describe(&e))))?;
        Ok(OctopusClient {
            http,
            base,
            api_key,
            options,
            observer: None,
        })
    }

    /// Reports every attempt to `observer`.
    pub fn with_observer(mut self, observer: Arc<dyn CallObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// The normalised base URL (ends in `/`).
    pub fn base_url(&self) -> &Url {
        &self.base
    }

    fn url(&self, segments: &[&str], query: &[(&'static str, String)]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            // The base ends in '/': drop its empty last segment, then add ours.
            path.pop_if_empty().extend(segments);
        }
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query.iter());
        }
        url
    }

    fn backoff(&self) -> ExponentialBuilder {
        ExponentialBuilder::default()
            .with_min_delay(self.options.min_backoff)
            .with_max_delay(self.options.max_backoff)
            .with_max_times(self.options.retries)
            .with_jitter()
    }

    /// Sends the call (retrying if idempotent) and decodes the answer.
    async fn call<T: DeserializeOwned>(&self, call: Call<'_>) -> OctopusResult<(u16, T)> {
        let route = format!("{} /{}", call.method, call.segments.join("/"));
        let (status, body) = self.send(call).await?;
        let value = serde_json::from_slice(&body).map_err(|e| OctopusError::BadResponse {
            route,
            status,
            detail: self.scrub(&e.to_string()),
        })?;
        Ok((status, value))
    }

    /// Sends the call (retrying if idempotent): the status and body of an accepted answer.
    async fn send(&self, call: Call<'_>) -> OctopusResult<(u16, Vec<u8>)> {
        let route = format!("{} /{}", call.method, call.segments.join("/"));
        let url = self.url(call.segments, &call.query);
        let span = tracing::debug_span!("octopus_call", method = %call.method, route = %route);
        async {
            let attempts = AtomicU32::new(0);
            let attempt = || async {
                let n = attempts.fetch_add(1, Ordering::Relaxed) + 1;
                self.attempt(&call, &url, &route, n).await
            };
            let (status, body) = if call.method == Method::POST {
                attempt().await?
            } else {
                attempt
                    .retry(self.backoff())
                    .sleep(tokio::time::sleep)
                    .when(OctopusError::is_transient)
                    .notify(|error, delay| {
                        tracing::debug!(reason = error.reason(), ?delay, "octopus call retrying");
                    })
                    .await?
            };
            Ok((status, body))
        }
        .instrument(span)
        .await
    }

    /// One attempt: the status and body of an answer this route accepts, or the error.
    async fn attempt(
        &self,
        call: &Call<'_>,
        url: &Url,
        route: &str,
        attempt: u32,
    ) -> OctopusResult<(u16, Vec<u8>)> {
        let mut request = self.http.request(call.method.clone(), url.clone());
        if let Some(body) = &call.body {
            request = request
                .header(CONTENT_TYPE, "application/json")
                .body(body.clone());
        } else if call.method != Method::GET {
            request = request.body(Vec::new());
        }
        let started = Instant::now();
        let answer = async {
            let response = request.send().await?;
            let status = response.status();
            let body = response.bytes().await?;
            Ok::<_, reqwest::Error>((status, body))
        }
        .await;
        let elapsed_ms = started.elapsed().as_millis() as u64;
        if let Some(observer) = &self.observer {
            let status = answer.as_ref().ok().map(|(status, _)| status.as_u16());
            observer.observed(call.method.as_str(), call.template, status);
        }
        let (status, body) = match answer {
            Ok(answer) => answer,
            Err(error) => {
                let error = self.transport_error(route, error);
                tracing::debug!(
                    method = %call.method, route, attempt, elapsed_ms,
                    reason = error.reason(), error = %error, "octopus call failed"
                );
                return Err(error);
            }
        };
        tracing::debug!(
            method = %call.method, route, attempt, elapsed_ms,
            status = status.as_u16(), "octopus call"
        );
        if status.is_success() || call.also_ok.contains(&status.as_u16()) {
            Ok((status.as_u16(), body.to_vec()))
        } else {
            Err(self.status_error(route, status, &body))
        }
    }

    fn transport_error(&self, route: &str, error: reqwest::Error) -> OctopusError {
        if error.is_timeout() {
            OctopusError::Timeout {
                route: route.to_string(),
                after: self.options.timeout,
            }
        } else {
            OctopusError::Unreachable {
                route: route.to_string(),
                detail: self.scrub(&describe(&error.without_url())),
            }
        }
    }

    fn status_error(&self, route: &str, status: StatusCode, body: &[u8]) -> OctopusError {
        let route = route.to_string();
        let message = self.scrub(&error_message(status, body));
        let status = status.as_u16();
        match status {
            401 | 403 => OctopusError::Unauthorized {
                route,
                status,
                message,
            },
            404 => OctopusError::NotFound { route, message },
            400..=499 => OctopusError::Rejected {
                route,
                status,
                message,
            },
            _ => OctopusError::Server {
                route,
                status,
                message,
            },
        }
    }

    /// Server-supplied text, cut short, without the API key should the server echo it.
    fn scrub(&self, text: &str) -> String {
        let key = self.api_key.expose();
        let text = if key.is_empty() {
            text.to_string()
        } else {
            text.replace(key, "<redacted>")
        };
        if text.chars().count() > MAX_MESSAGE_CHARS {
            let mut cut: String = text.chars().take(MAX_MESSAGE_CHARS).collect();
            cut.push('…');
            cut
        } else {
            text
        }
    }

    async fn get<T: DeserializeOwned>(
        &self,
        template: &'static str,
        segments: &[&str],
    ) -> OctopusResult<T> {
        let call = Call {
            method: Method::GET,
            template,
            segments,
            query: Vec::new(),
            body: None,
            also_ok: &[],
        };
        Ok(self.call(call).await?.1)
    }

    async fn send_json<B: serde::Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        template: &'static str,
        segments: &[&str],
        body: &B,
    ) -> OctopusResult<T> {
        let route = format!("{method} /{}", segments.join("/"));
        let body = serde_json::to_vec(body).map_err(|e| OctopusError::BadResponse {
            route,
            status: 0,
            detail: format!("request body: {e}"),
        })?;
        let call = Call {
            method,
            template,
            segments,
            query: Vec::new(),
            body: Some(body),
            also_ok: &[],
        };
        Ok(self.call(call).await?.1)
    }
}

/// Octopus's `ErrorMessage` and `Errors`, or a snippet of a non-Octopus body, or the
/// status's reason phrase.
fn error_message(status: StatusCode, body: &[u8]) -> String {
    if let Ok(contract) = serde_json::from_slice::<ErrorsContract>(body) {
        let mut message = contract.error_message.unwrap_or_default();
        let errors = contract.errors.unwrap_or_default();
        if !errors.is_empty() {
            if !message.is_empty() {
                message.push_str(": ");
            }
            message.push_str(&errors.join("; "));
        }
        if !message.is_empty() {
            return message;
        }
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("no message")
            .to_string()
    } else {
        text.to_string()
    }
}

/// An error and its causes, one line (reqwest's own text is only "error sending request").
fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[async_trait]
impl OctopusApi for OctopusClient {
    async fn root(&self) -> OctopusResult<RootResource> {
        self.get("/api", &["api"]).await
    }

    async fn cluster_summary(&self) -> OctopusResult<ClusterSummary> {
        self.get(
            "/api/octopusservernodes/summary",
            &["api", "octopusservernodes", "summary"],
        )
        .await
    }

    async fn get_node(&self, id: &str) -> OctopusResult<OctopusServerNode> {
        self.get(
            "/api/octopusservernodes/{id}",
            &["api", "octopusservernodes", id],
        )
        .await
    }

    async fn update_node(&self, node: &OctopusServerNode) -> OctopusResult<OctopusServerNode> {
        self.send_json(
            Method::PUT,
            "/api/octopusservernodes/{id}",
            &["api", "octopusservernodes", &node.id],
            node,
        )
        .await
    }

    async fn delete_node(&self, id: &str) -> OctopusResult<()> {
        let call = Call {
            method: Method::DELETE,
            template: "/api/octopusservernodes/{id}",
            segments: &["api", "octopusservernodes", id],
            query: Vec::new(),
            body: None,
            also_ok: &[],
        };
        self.send(call).await.map(|_| ())
    }

    async fn ping(&self) -> OctopusResult<NodePing> {
        let call = Call {
            method: Method::GET,
            template: "/api/octopusservernodes/ping",
            segments: &["api", "octopusservernodes", "ping"],
            query: Vec::new(),
            body: None,
            also_ok: &[418],
        };
        let (status, _) = self.send(call).await?;
        Ok(NodePing { status })
    }

    async fn maintenance(&self) -> OctopusResult<MaintenanceConfiguration> {
        self.get(
            "/api/maintenanceconfiguration",
            &["api", "maintenanceconfiguration"],
        )
        .await
    }

    async fn update_maintenance(
        &self,
        config: &MaintenanceConfiguration,
    ) -> OctopusResult<MaintenanceConfiguration> {
        self.send_json(
            Method::PUT,
            "/api/maintenanceconfiguration",
            &["api", "maintenanceconfiguration"],
            config,
        )
        .await
    }

    async fn tasks(&self, query: &TaskQuery) -> OctopusResult<Page<ServerTask>> {
        let call = Call {
            method: Method::GET,
            template: "/api/tasks",
            segments: &["api", "tasks"],
            query: query.to_pairs(),
            body: None,
            also_ok: &[],
        };
        Ok(self.call(call).await?.1)
    }

    async fn cancel_task(&self, id: &str) -> OctopusResult<ServerTask> {
        let call = Call {
            method: Method::POST,
            template: "/api/tasks/{id}/cancel",
            segments: &["api", "tasks", id, "cancel"],
            query: Vec::new(),
            body: None,
            also_ok: &[],
        };
        Ok(self.call(call).await?.1)
    }

    async fn create_task(&self, task: &CreateTask) -> OctopusResult<ServerTask> {
        match &task.space_id {
            Some(space) => {
                self.send_json(
                    Method::POST,
                    "/api/{spaceId}/tasks",
                    &["api", space, "tasks"],
                    task,
                )
                .await
            }
            None => {
                self.send_json(Method::POST, "/api/tasks", &["api", "tasks"], task)
                    .await
            }
        }
    }

    async fn spaces(&self, skip: u32, take: u32) -> OctopusResult<Page<Space>> {
        let call = Call {
            method: Method::GET,
            template: "/api/spaces",
            segments: &["api", "spaces"],
            query: vec![("skip", skip.to_string()), ("take", take.to_string())],
            body: None,
            also_ok: &[],
        };
        Ok(self.call(call).await?.1)
    }

    async fn machines(
        &self,
        space: &str,
        environment_ids: &[String],
        skip: u32,
        take: u32,
    ) -> OctopusResult<Page<Machine>> {
        let mut query = vec![("skip", skip.to_string()), ("take", take.to_string())];
        if !environment_ids.is_empty() {
            query.push(("environmentIds", environment_ids.join(",")));
        }
        let call = Call {
            method: Method::GET,
            template: "/api/{spaceId}/machines",
            segments: &["api", space, "machines"],
            query,
            body: None,
            also_ok: &[],
        };
        Ok(self.call(call).await?.1)
    }

    async fn health(&self) -> OctopusResult<ServerStatusHealth> {
        let call = Call {
            method: Method::GET,
            template: "/api/serverstatus/health",
            segments: &["api", "serverstatus", "health"],
            query: Vec::new(),
            body: None,
            also_ok: &[418],
        };
        Ok(self.call(call).await?.1)
    }
}
