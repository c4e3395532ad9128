//! The controller's Kubernetes client, counting every request it sends by verb and
//! resource (`octopus_operator_kubernetes_requests_total`): how many writes the operator
//! costs the API server, in steady state and per upgrade, seen from the operator.

use std::sync::Arc;

use kube::client::{Body, ClientBuilder};
use kube::{Client, Config};

use crate::controller::metrics::Metrics;

/// A client for `config` whose requests are counted in `metrics`.
pub fn counted(config: Config, metrics: Arc<Metrics>) -> Result<Client, kube::Error> {
    let count = tower::util::MapRequestLayer::new(move |request: http::Request<Body>| {
        let (verb, resource) = describe(request.method(), request.uri());
        metrics.kube_request(verb, &resource);
        request
    });
    Ok(ClientBuilder::try_from(config)?.with_layer(&count).build())
}

/// The Kubernetes verb and the resource (with its subresource, e.g.
/// `octopusclusters/status`) of a request.
pub fn describe(method: &http::Method, uri: &http::Uri) -> (&'static str, String) {
    let watch = uri
        .query()
        .is_some_and(|q| q.split('&').any(|p| p == "watch=true" || p == "watch=1"));
    let segments: Vec<&str> = uri.path().split('/').filter(|s| !s.is_empty()).collect();
    // /api/v1/... or /apis/<group>/<version>/..., then namespaces/<ns>/ when namespaced.
    let rest: &[&str] = match segments.first() {
        Some(&"api") => segments.get(2..).unwrap_or_default(),
        Some(&"apis") => segments.get(3..).unwrap_or_default(),
        _ => &[],
    };
    let rest = match rest {
        ["namespaces", _, tail @ ..] if !tail.is_empty() => tail,
        other => other,
    };
    let resource = match rest {
        [] => "other".to_string(),
        [resource] | [resource, _] => (*resource).to_string(),
        [resource, _, sub, ..] => format!("{resource}/{sub}"),
    };
    let named = rest.len() >= 2;
    let verb = match *method {
        http::Method::GET if watch => "watch",
        http::Method::GET if named => "get",
        http::Method::GET => "list",
        http::Method::POST => "create",
        http::Method::PUT => "update",
        http::Method::PATCH => "patch",
        http::Method::DELETE => "delete",
        _ => "other",
    };
    (verb, resource)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(method: http::Method, uri: &str) -> (&'static str, String) {
        describe(&method, &uri.parse().expect("uri"))
    }

    #[test]
    fn requests_are_named_by_verb_and_resource() {
        use http::Method;
        let cases = [
            (
                Method::GET,
                "/apis/octopusoperator.dev/v1alpha1/octopusclusters?&watch=true&resourceVersion=1",
                ("watch", "octopusclusters"),
            ),
            (
                Method::GET,
                "/apis/octopusoperator.dev/v1alpha1/namespaces/a/octopusclusters/c1",
                ("get", "octopusclusters"),
            ),
            (
                Method::PATCH,
                "/apis/octopusoperator.dev/v1alpha1/namespaces/a/octopusclusters/c1/status?fieldManager=x",
                ("patch", "octopusclusters/status"),
            ),
            (
                Method::GET,
                "/api/v1/namespaces/a/pods?labelSelector=x",
                ("list", "pods"),
            ),
            (
                Method::DELETE,
                "/api/v1/namespaces/a/pods/c1-0",
                ("delete", "pods"),
            ),
            (
                Method::PATCH,
                "/apis/apps/v1/namespaces/a/statefulsets/c1",
                ("patch", "statefulsets"),
            ),
            (
                Method::POST,
                "/apis/events.k8s.io/v1/namespaces/a/events",
                ("create", "events"),
            ),
            (Method::GET, "/api/v1/namespaces/a", ("get", "namespaces")),
            (Method::GET, "/version", ("list", "other")),
        ];
        for (method, uri, (verb, resource)) in cases {
            assert_eq!(d(method, uri), (verb, resource.to_string()), "{uri}");
        }
    }
}
