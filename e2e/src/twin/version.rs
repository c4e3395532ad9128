//! Octopus Server versions as the twin reads them from container image tags.
//!
//! Owns parsing (`2024.1.12345`, `2024.1.12345-hardened`, legacy `2.6.5.0`), ordering and
//! the schema line (major.minor: a minor or major release usually changes the database
//! schema, a patch never does).

use std::cmp::Ordering;
use std::fmt;

/// A parsed Octopus Server version: MAJOR.MINOR.PATCH(.BUILD), suffix after `-` ignored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct OctopusVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
    pub build: u32,
}

/// Since this release a database upgrade aborts while other nodes are still running.
pub const MIGRATION_REFUSES_RUNNING_NODES_SINCE: OctopusVersion = OctopusVersion {
    major: 2023,
    minor: 2,
    patch: 9755,
    build: 0,
};

impl OctopusVersion {
    pub const fn new(major: u32, minor: u32, patch: u32) -> Self {
        Self {
            major,
            minor,
            patch,
            build: 0,
        }
    }

    /// Parses an image tag. A variant suffix (`-hardened`) is allowed; `latest`, digests
    /// and anything without at least major.minor.patch are not.
    pub fn parse_tag(tag: &str) -> Option<Self> {
        let core = tag.split(['-', '+']).next()?;
        let parts: Vec<&str> = core.split('.').collect();
        if !(3..=4).contains(&parts.len()) {
            return None;
        }
        let mut numbers = [0u32; 4];
        for (slot, part) in numbers.iter_mut().zip(&parts) {
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            *slot = part.parse().ok()?;
        }
        Some(Self {
            major: numbers[0],
            minor: numbers[1],
            patch: numbers[2],
            build: numbers[3],
        })
    }

    /// The schema line: versions with the same major.minor share a database schema.
    pub fn schema_line(&self) -> (u32, u32) {
        (self.major, self.minor)
    }

    /// Whether a schema upgrade by this version refuses to run beside running nodes.
    pub fn refuses_migration_beside_running_nodes(&self) -> bool {
        *self >= MIGRATION_REFUSES_RUNNING_NODES_SINCE
    }
}

impl Ord for OctopusVersion {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.major, self.minor, self.patch, self.build).cmp(&(
            other.major,
            other.minor,
            other.patch,
            other.build,
        ))
    }
}

impl PartialOrd for OctopusVersion {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for OctopusVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.build == 0 {
            write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
        } else {
            write!(
                f,
                "{}.{}.{}.{}",
                self.major, self.minor, self.patch, self.build
            )
        }
    }
}

/// Splits an image reference into repository and tag (`None` for untagged or digest-only).
pub fn split_image(image: &str) -> (&str, Option<&str>) {
    let without_digest = image.split('@').next().unwrap_or(image);
    // A ':' after the last '/' separates the tag; one before it belongs to a registry port.
    let last_slash = without_digest.rfind('/').map_or(0, |i| i + 1);
    match without_digest[last_slash..].rfind(':') {
        Some(i) => {
            let at = last_slash + i;
            (&without_digest[..at], Some(&without_digest[at + 1..]))
        }
        None => (without_digest, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_modern_legacy_and_variant_tags() {
        assert_eq!(
            OctopusVersion::parse_tag("2024.1.12345"),
            Some(OctopusVersion::new(2024, 1, 12345))
        );
        assert_eq!(
            OctopusVersion::parse_tag("2024.1.12345-hardened"),
            Some(OctopusVersion::new(2024, 1, 12345))
        );
        let legacy = OctopusVersion::parse_tag("2.6.5.0");
        assert_eq!(legacy.map(|v| v.schema_line()), Some((2, 6)));
        for bad in ["", "latest", "2024.1", "2024.x.1", "2024..1", "1.2.3.4.5"] {
            assert_eq!(OctopusVersion::parse_tag(bad), None, "{bad}");
        }
    }

    #[test]
    fn orders_numerically_and_knows_the_abort_release() {
        let a = OctopusVersion::new(2023, 2, 9754);
        let b = OctopusVersion::new(2023, 2, 9755);
        let c = OctopusVersion::new(2023, 10, 1);
        assert!(a < b && b < c);
        assert!(!a.refuses_migration_beside_running_nodes());
        assert!(b.refuses_migration_beside_running_nodes());
        assert!(c.refuses_migration_beside_running_nodes());
    }

    #[test]
    fn splits_image_references() {
        assert_eq!(
            split_image("octopusdeploy/octopusdeploy:2024.1.1"),
            ("octopusdeploy/octopusdeploy", Some("2024.1.1"))
        );
        assert_eq!(
            split_image("registry:5000/octopusdeploy/octopusdeploy"),
            ("registry:5000/octopusdeploy/octopusdeploy", None)
        );
        assert_eq!(
            split_image("registry:5000/o/o:2024.1.1@sha256:abc"),
            ("registry:5000/o/o", Some("2024.1.1"))
        );
    }
}
