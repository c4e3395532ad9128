//! Container image references of Octopus Server: building them from the spec and reading
//! the Octopus version back out of a running pod's image.

use crate::api::ImageSpec;
use crate::version::ImageTag;

/// The image for `version`: `repository:version`, or `repository:version-variant`.
pub fn image_ref(image: &ImageSpec, version: &str) -> String {
    match image.variant.as_deref() {
        Some(variant) => format!("{}:{version}-{variant}", image.repository),
        None => format!("{}:{version}", image.repository),
    }
}

/// The Octopus version an image runs: its tag without the `-variant` suffix.
///
/// Accepts `[host[:port]/]path:tag[@algorithm:digest]`. `None` when there is no tag
/// (`repo`, `host:5000/repo`, `repo@sha256:...`), when the tag is not an exact Octopus
/// version (`latest`, `2024.1`), or when the reference is malformed.
pub fn version_of(image: &str) -> Option<String> {
    let (name, digest) = match image.split_once('@') {
        Some((name, digest)) => (name, Some(digest)),
        None => (image, None),
    };
    if let Some(digest) = digest {
        let (algorithm, encoded) = digest.split_once(':')?;
        // As the OCI image spec writes digests: `algorithm:encoded`.
        let algorithm_ok = !algorithm.is_empty()
            && algorithm
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+._-".contains(&b));
        let encoded_ok = !encoded.is_empty()
            && encoded
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"=_-".contains(&b));
        if !algorithm_ok || !encoded_ok {
            return None;
        }
    }
    // A tag is the part after the last ':' that comes after the last '/': a ':' before the
    // last '/' belongs to a registry port.
    let path_start = name.rfind('/').map_or(0, |slash| slash + 1);
    let (repository, tag) = name[path_start..].rsplit_once(':')?;
    if repository.is_empty() || name.chars().any(char::is_whitespace) {
        return None;
    }
    let tag = ImageTag::parse(tag).ok()?;
    Some(tag.version().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(repository: &str, variant: Option<&str>) -> ImageSpec {
        ImageSpec {
            repository: repository.to_owned(),
            variant: variant.map(str::to_owned),
            ..ImageSpec::default()
        }
    }

    #[test]
    fn image_ref_is_repository_colon_version() {
        assert_eq!(
            image_ref(&ImageSpec::default(), "2024.1.12345"),
            "octopusdeploy/octopusdeploy:2024.1.12345"
        );
    }

    #[test]
    fn image_ref_appends_the_variant() {
        assert_eq!(
            image_ref(
                &spec("mirror:5000/octo/server", Some("hardened")),
                "2024.1.12345"
            ),
            "mirror:5000/octo/server:2024.1.12345-hardened"
        );
    }

    #[test]
    fn version_of_reads_plain_and_variant_tags() {
        assert_eq!(
            version_of("octopusdeploy/octopusdeploy:2024.1.12345").as_deref(),
            Some("2024.1.12345")
        );
        assert_eq!(
            version_of("octopusdeploy/octopusdeploy:2024.1.12345-hardened").as_deref(),
            Some("2024.1.12345")
        );
        assert_eq!(version_of("octo:2.6.5.1010").as_deref(), Some("2.6.5.1010"));
    }

    #[test]
    fn version_of_skips_registry_port_and_digest() {
        assert_eq!(
            version_of("registry.local:5000/octo/server:2024.2.7-hardened").as_deref(),
            Some("2024.2.7")
        );
        assert_eq!(
            version_of("registry.local:5000/octo/server:2024.2.7@sha256:abc123").as_deref(),
            Some("2024.2.7")
        );
    }

    #[test]
    fn version_of_round_trips_image_ref() {
        let image = spec("registry.local:5000/octo/server", Some("hardened"));
        assert_eq!(
            version_of(&image_ref(&image, "2025.1.3")).as_deref(),
            Some("2025.1.3")
        );
    }

    #[test]
    fn version_of_rejects_what_names_no_exact_version() {
        for image in [
            "octopusdeploy/octopusdeploy",
            "registry.local:5000/octo/server",
            "octopusdeploy/octopusdeploy@sha256:abc123",
            "registry.local:5000/octo/server@sha256:abc123",
            "octopusdeploy/octopusdeploy:latest",
            "octopusdeploy/octopusdeploy:2024.1",
            "octopusdeploy/octopusdeploy:v2024.1.1",
            "octopusdeploy/octopusdeploy:2024.1.1-Hardened",
            "octopusdeploy/octopusdeploy:",
            ":2024.1.1",
            "octo:2024.1.1@",
            "octo:2024.1.1@sha256",
            "octo:2024.1.1@sha256:",
            "octo:2024.1.1@sha256:a:b",
            "octo:2024.1.1@sha256:a@b",
            "octo 1:2024.1.1",
            "",
        ] {
            assert_eq!(version_of(image), None, "{image:?}");
        }
    }
}
