//! The node's REST API on its pod address: every request goes to the database process,
//! answered there by this node's process against the shared state; before the node runs
//! (and once it is shutting down) it answers 503 itself.

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use octopus_twin_node::{FORWARDED_HOST, Phase, api_path};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Where requests go.
pub struct Upstream {
    pub client: reqwest::Client,
    pub database: String,
    pub key: String,
    pub phase: watch::Receiver<Phase>,
}

pub async fn serve(listener: TcpListener, upstream: Arc<Upstream>) {
    let app = Router::new().fallback(handle).with_state(upstream);
    if let Err(e) = axum::serve(listener, app).await {
        eprintln!("http server stopped: {e}");
    }
}

fn unavailable(message: &str) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        serde_json::json!({ "ErrorMessage": message }).to_string(),
    )
        .into_response()
}

async fn handle(
    State(upstream): State<Arc<Upstream>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match *upstream.phase.borrow() {
        Phase::Running => {}
        Phase::Starting => return unavailable("Octopus Server is starting"),
        Phase::Exited => return unavailable("Octopus Server is shutting down"),
    }
    let rest = uri
        .path_and_query()
        .map_or_else(|| uri.path().to_string(), |p| p.as_str().to_string());
    let url = format!("{}{}", upstream.database, api_path(&upstream.key, &rest));
    let mut request = upstream
        .client
        .request(method, url)
        .header(FORWARDED_HOST, host(&headers))
        .body(body);
    for name in ["x-octopus-apikey", "content-type", "accept"] {
        if let Some(value) = headers.get(name) {
            request = request.header(name, value);
        }
    }
    match request.send().await {
        Ok(answer) => {
            let status = answer.status();
            let content_type = answer.headers().get(header::CONTENT_TYPE).cloned();
            let bytes = answer.bytes().await.unwrap_or_default();
            let mut response = Response::new(Body::from(bytes));
            *response.status_mut() = status;
            if let Some(content_type) = content_type {
                response
                    .headers_mut()
                    .insert(header::CONTENT_TYPE, content_type);
            }
            response
        }
        Err(e) => unavailable(&format!("the database is unavailable: {e}")),
    }
}

/// The Host the request came by, without the port.
fn host(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    host.rsplit_once(':')
        .map_or(host, |(name, _)| name)
        .to_string()
}
