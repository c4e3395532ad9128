//! Where an Octopus Server is and how to prove who we are to it: base URL, API key, and an
//! optional extra CA bundle. Owns the API key's secrecy: it never prints.

use std::fmt;

use reqwest::Url;

use super::error::OctopusError;

/// An Octopus API key (`API-...`). Debug and Display print `<redacted>`; the only way to
/// the secret is [`ApiKey::expose`], used to build the request header.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// Surrounding whitespace is dropped: keys read from Secrets often end in a newline.
    pub fn new(key: impl Into<String>) -> Self {
        ApiKey(key.into().trim().to_string())
    }

    /// The secret itself. Only for the request header and for scrubbing it from text.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// One Octopus Server (a cluster's load-balanced URL, or one node's own URL).
#[derive(Clone)]
pub struct OctopusEndpoint {
    /// `http(s)://host[:port][/virtual/directory]`; a trailing slash does not matter.
    pub base_url: String,
    pub api_key: ApiKey,
    /// Extra trust roots (PEM, one or more certificates) on top of the built-in ones.
    pub ca_bundle_pem: Option<Vec<u8>>,
}

impl OctopusEndpoint {
    pub fn new(base_url: impl Into<String>, api_key: ApiKey) -> Self {
        OctopusEndpoint {
            base_url: base_url.into(),
            api_key,
            ca_bundle_pem: None,
        }
    }

    pub fn with_ca_bundle(mut self, pem: Vec<u8>) -> Self {
        self.ca_bundle_pem = Some(pem);
        self
    }

    /// The base URL, checked and normalised to end in `/`, so `api/...` joins under any
    /// virtual directory.
    pub(crate) fn parsed_base_url(&self) -> Result<Url, OctopusError> {
        let invalid = |detail: String| OctopusError::InvalidEndpoint { detail };
        let mut url = Url::parse(self.base_url.trim())
            .map_err(|e| invalid(format!("base URL {:?}: {e}", self.base_url)))?;
        if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
            return Err(invalid(format!(
                "base URL {:?} must be http(s)://host[/path]",
                self.base_url
            )));
        }
        if !url.username().is_empty() || url.password().is_some() {
            // Never echo it: it holds credentials.
            return Err(invalid("base URL must not contain credentials".into()));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(invalid(format!(
                "base URL {:?} must not have a query or fragment",
                self.base_url
            )));
        }
        if !url.path().ends_with('/') {
            let path = format!("{}/", url.path());
            url.set_path(&path);
        }
        Ok(url)
    }
}

impl fmt::Debug for OctopusEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OctopusEndpoint")
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key)
            .field(
                "ca_bundle_pem",
                &self.ca_bundle_pem.as_ref().map(|pem| pem.len()),
            )
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_key_never_prints() {
        let key = ApiKey::new("API-SECRET123\n");
        assert_eq!(key.expose(), "API-SECRET123");
        assert!(!format!("{key:?}").contains("SECRET"));
        assert!(!format!("{key}").contains("SECRET"));
        let endpoint = OctopusEndpoint::new("http://octopus", key);
        assert!(!format!("{endpoint:?}").contains("SECRET"));
    }

    #[test]
    fn base_url_keeps_virtual_directory_with_or_without_slash() {
        for base in [
            "http://127.0.0.1:8065/ns1/octo",
            "http://127.0.0.1:8065/ns1/octo/",
        ] {
            let endpoint = OctopusEndpoint::new(base, ApiKey::new("API-X"));
            let url = endpoint.parsed_base_url().unwrap();
            assert_eq!(url.as_str(), "http://127.0.0.1:8065/ns1/octo/");
        }
        let endpoint = OctopusEndpoint::new("https://octopus.example", ApiKey::new("API-X"));
        assert_eq!(
            endpoint.parsed_base_url().unwrap().as_str(),
            "https://octopus.example/"
        );
    }

    #[test]
    fn bad_base_urls_are_refused_without_echoing_credentials() {
        for base in [
            "octopus:8080",
            "ftp://octopus",
            "http://o/?a=b",
            "not a url",
        ] {
            let endpoint = OctopusEndpoint::new(base, ApiKey::new("API-X"));
            let error = endpoint.parsed_base_url().unwrap_err();
            assert_eq!(error.reason(), "OctopusEndpointInvalid", "{base}");
        }
        let endpoint = OctopusEndpoint::new("http://user:hunter2@octopus", ApiKey::new("API-X"));
        let error = endpoint.parsed_base_url().unwrap_err();
        assert!(!error.to_string().contains("hunter2"));
    }
}
