//! Typed failures of Octopus REST calls, each with a stable condition reason.
//!
//! Every variant names the route (`METHOD /api/...`, no host) so a message in status or an
//! Event says which call failed. No variant ever holds the API key: server-supplied text is
//! scrubbed of it before it gets here (see `client`).

use std::time::Duration;

/// A failed call to Octopus Server.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OctopusError {
    /// The endpoint cannot be used: bad base URL, bad CA bundle, unusable API key.
    #[error("Octopus endpoint is invalid: {detail}")]
    InvalidEndpoint { detail: String },

    /// 401 or 403: the API key is missing, wrong, expired, or lacks permission.
    #[error("{route}: Octopus refused the API key ({status}): {message}")]
    Unauthorized {
        route: String,
        status: u16,
        message: String,
    },

    /// 404: the resource (or the route, on a server too old for it) does not exist.
    #[error("{route}: not found: {message}")]
    NotFound { route: String, message: String },

    /// Another 4xx: Octopus refused the request itself (validation, conflict, ...).
    #[error("{route}: Octopus rejected the request ({status}): {message}")]
    Rejected {
        route: String,
        status: u16,
        message: String,
    },

    /// 5xx (or any other unexpected status): the server failed.
    #[error("{route}: Octopus server error ({status}): {message}")]
    Server {
        route: String,
        status: u16,
        message: String,
    },

    /// No complete answer within the client's timeout.
    #[error("{route}: no answer within {after:?}")]
    Timeout { route: String, after: Duration },

    /// Connection refused, reset or dropped, DNS or TLS failure.
    #[error("{route}: Octopus unreachable: {detail}")]
    Unreachable { route: String, detail: String },

    /// The body was not the JSON the route promises.
    #[error("{route}: undecodable response ({status}): {detail}")]
    BadResponse {
        route: String,
        status: u16,
        detail: String,
    },
}

impl OctopusError {
    /// Stable CamelCase reason for conditions, Events and metric labels.
    pub fn reason(&self) -> &'static str {
        match self {
            OctopusError::InvalidEndpoint { .. } => "OctopusEndpointInvalid",
            OctopusError::Unauthorized { .. } => "OctopusUnauthorized",
            OctopusError::NotFound { .. } => "OctopusNotFound",
            OctopusError::Rejected { .. } => "OctopusRejected",
            OctopusError::Server { .. } => "OctopusServerError",
            OctopusError::Timeout { .. } => "OctopusTimeout",
            OctopusError::Unreachable { .. } => "OctopusUnreachable",
            OctopusError::BadResponse { .. } => "OctopusBadResponse",
        }
    }

    /// True for failures that may pass by themselves (timeouts, lost connections, 5xx):
    /// the ones an idempotent call retries, and a reconciler requeues soon.
    pub fn is_transient(&self) -> bool {
        match self {
            OctopusError::Timeout { .. } | OctopusError::Unreachable { .. } => true,
            OctopusError::Server { status, .. } => *status >= 500,
            _ => false,
        }
    }

    /// The route of the failed call, if the failure belongs to one.
    pub fn route(&self) -> Option<&str> {
        match self {
            OctopusError::InvalidEndpoint { .. } => None,
            OctopusError::Unauthorized { route, .. }
            | OctopusError::NotFound { route, .. }
            | OctopusError::Rejected { route, .. }
            | OctopusError::Server { route, .. }
            | OctopusError::Timeout { route, .. }
            | OctopusError::Unreachable { route, .. }
            | OctopusError::BadResponse { route, .. } => Some(route),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_stable_and_transience_is_right() {
        let route = || "GET /api".to_string();
        let cases = [
            (
                OctopusError::Unauthorized {
                    route: route(),
                    status: 401,
                    message: String::new(),
                },
                "OctopusUnauthorized",
                false,
            ),
            (
                OctopusError::NotFound {
                    route: route(),
                    message: String::new(),
                },
                "OctopusNotFound",
                false,
            ),
            (
                OctopusError::Rejected {
                    route: route(),
                    status: 400,
                    message: String::new(),
                },
                "OctopusRejected",
                false,
            ),
            (
                OctopusError::Server {
                    route: route(),
                    status: 503,
                    message: String::new(),
                },
                "OctopusServerError",
                true,
            ),
            (
                OctopusError::Timeout {
                    route: route(),
                    after: Duration::from_secs(1),
                },
                "OctopusTimeout",
                true,
            ),
            (
                OctopusError::Unreachable {
                    route: route(),
                    detail: String::new(),
                },
                "OctopusUnreachable",
                true,
            ),
            (
                OctopusError::BadResponse {
                    route: route(),
                    status: 200,
                    detail: String::new(),
                },
                "OctopusBadResponse",
                false,
            ),
        ];
        for (error, reason, transient) in cases {
            assert_eq!(error.reason(), reason);
            assert_eq!(error.is_transient(), transient, "{reason}");
            assert_eq!(error.route(), Some("GET /api"));
        }
    }
}
