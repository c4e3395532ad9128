//! Octopus Server versions and the image tags that carry them.
//!
//! Owns parsing, printing and ordering of versions (`2024.1.12345`, `3.4.12`, and the
//! pre-3.0 four-part form `2.6.5.1010`) and of image tags (`2024.1.12345-hardened`).
//! Floating or partial names (`latest`, `2024`, `v2024.1.1`) are rejected: the operator must
//! know exactly which database schema a version brings. Pure: no I/O, no policy — what a
//! version change *means* is decided by [`crate::planner`].

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The first major version with three-part versions only; before it Octopus versions had a
/// fourth, build part (`2.6.5.1010`).
const FIRST_THREE_PART_MAJOR: u64 = 3;

/// What a version looks like, for error messages.
const EXPECTED: &str = "expected MAJOR.MINOR.PATCH such as 2024.1.12345, or MAJOR.MINOR.PATCH.BUILD before 3.0 such as 2.6.5.1010";

/// Why a string is not an Octopus version or image tag. Every message names the bad value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    /// Nothing was given.
    #[error("empty Octopus version: {EXPECTED}")]
    Empty,
    /// Not three or four dot-separated numbers without leading zeros.
    #[error("{value:?} is not an Octopus version: {EXPECTED}")]
    Malformed {
        /// The rejected input.
        value: String,
    },
    /// A four-part version from 3.0 on; Octopus 3.0 and later have three parts.
    #[error(
        "{value:?} is not an Octopus version: four-part versions exist only before 3.0, use MAJOR.MINOR.PATCH"
    )]
    BuildAfterThree {
        /// The rejected input.
        value: String,
    },
    /// An image tag whose variant suffix (after the version and `-`) is not a tag variant.
    #[error(
        "{value:?} is not an Octopus image tag: expected VERSION or VERSION-VARIANT such as 2024.1.12345-hardened (variant: lowercase letters, digits, '.' and '-')"
    )]
    BadVariant {
        /// The rejected input.
        value: String,
    },
}

impl VersionError {
    /// The rejected input ("" when it was empty).
    pub fn value(&self) -> &str {
        match self {
            Self::Empty => "",
            Self::Malformed { value }
            | Self::BuildAfterThree { value }
            | Self::BadVariant { value } => value,
        }
    }
}

/// An exact Octopus Server version.
///
/// A [`semver::Version`] underneath; the pre-3.0 fourth part is kept as numeric build
/// metadata. `Display` prints the form that was parsed (`2.6.5.1010` stays four-part).
/// Ordering is numeric on all parts; a three-part version sorts before the same version with
/// a build part (`2.6.5 < 2.6.5.0`), which keeps `Ord` consistent with `Eq`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OctopusVersion {
    semver: semver::Version,
}

impl OctopusVersion {
    /// A three-part version (`MAJOR.MINOR.PATCH`).
    pub const fn new(major: u64, minor: u64, patch: u64) -> Self {
        Self {
            semver: semver::Version::new(major, minor, patch),
        }
    }

    /// Parses `MAJOR.MINOR.PATCH` or, before 3.0, `MAJOR.MINOR.PATCH.BUILD`. Parts are
    /// decimal numbers without sign, leading zeros or surrounding whitespace.
    pub fn parse(input: &str) -> Result<Self, VersionError> {
        if input.is_empty() {
            return Err(VersionError::Empty);
        }
        let malformed = || VersionError::Malformed {
            value: input.to_owned(),
        };
        let parts: Vec<&str> = input.split('.').collect();
        if !(3..=4).contains(&parts.len()) || !parts.iter().all(|p| is_canonical_number(p)) {
            return Err(malformed());
        }
        let mut numbers = [0u64; 4];
        for (slot, part) in numbers.iter_mut().zip(&parts) {
            *slot = part.parse().map_err(|_| malformed())?;
        }
        let mut semver = semver::Version::new(numbers[0], numbers[1], numbers[2]);
        if parts.len() == 4 {
            if numbers[0] >= FIRST_THREE_PART_MAJOR {
                return Err(VersionError::BuildAfterThree {
                    value: input.to_owned(),
                });
            }
            semver.build = semver::BuildMetadata::new(parts[3]).map_err(|_| malformed())?;
        }
        Ok(Self { semver })
    }

    /// The major version: `2024` in `2024.1.12345`, `3` in `3.4.12`.
    pub fn major(&self) -> u64 {
        self.semver.major
    }

    /// The minor version: `1` in `2024.1.12345`.
    pub fn minor(&self) -> u64 {
        self.semver.minor
    }

    /// The patch version: `12345` in `2024.1.12345`.
    pub fn patch(&self) -> u64 {
        self.semver.patch
    }

    /// The pre-3.0 build part: `Some(1010)` in `2.6.5.1010`, `None` for three-part versions.
    pub fn build(&self) -> Option<u64> {
        if self.semver.build.is_empty() {
            None
        } else {
            // Only canonical decimal numbers are ever stored here (see `parse`).
            self.semver.build.as_str().parse().ok()
        }
    }

    /// The database schema line, `(major, minor)`. Versions on one line share a schema, so
    /// moving between them is a patch; a different line is a schema change.
    pub fn schema_line(&self) -> (u64, u64) {
        (self.semver.major, self.semver.minor)
    }

    /// The version as a [`semver::Version`] (the fourth part, if any, is build metadata).
    pub fn as_semver(&self) -> &semver::Version {
        &self.semver
    }

    fn sort_key(&self) -> (u64, u64, u64, Option<u64>) {
        (self.major(), self.minor(), self.patch(), self.build())
    }
}

/// A number as Octopus writes it: ASCII digits, no sign, no leading zero (except `0`).
fn is_canonical_number(part: &str) -> bool {
    !part.is_empty()
        && part.bytes().all(|b| b.is_ascii_digit())
        && (part == "0" || !part.starts_with('0'))
}

impl Ord for OctopusVersion {
    fn cmp(&self, other: &Self) -> Ordering {
        self.sort_key().cmp(&other.sort_key())
    }
}

impl PartialOrd for OctopusVersion {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for OctopusVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major(), self.minor(), self.patch())?;
        if !self.semver.build.is_empty() {
            write!(f, ".{}", self.semver.build)?;
        }
        Ok(())
    }
}

impl FromStr for OctopusVersion {
    type Err = VersionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for OctopusVersion {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for OctopusVersion {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// An Octopus Server image tag: a version, optionally followed by `-VARIANT`
/// (`2024.1.12345-hardened`).
///
/// The variant is kept but does not change what version runs. Ordering compares the version
/// first and the variant only to break ties, so sorting tags sorts versions.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ImageTag {
    version: OctopusVersion,
    variant: Option<String>,
}

impl ImageTag {
    /// The tag for `version` with an optional variant (without the leading `-`).
    pub fn new(version: OctopusVersion, variant: Option<String>) -> Result<Self, VersionError> {
        if let Some(v) = &variant
            && !is_variant(v)
        {
            return Err(VersionError::BadVariant {
                value: format!("{version}-{v}"),
            });
        }
        Ok(Self { version, variant })
    }

    /// Parses `VERSION` or `VERSION-VARIANT`. The variant is lowercase letters, digits, `.`
    /// and `-`, starting and ending with a letter or digit (as `spec.image.variant`).
    pub fn parse(input: &str) -> Result<Self, VersionError> {
        match input.split_once('-') {
            None => Ok(Self {
                version: OctopusVersion::parse(input)?,
                variant: None,
            }),
            Some((version, variant)) => {
                let version =
                    OctopusVersion::parse(version).map_err(|_| VersionError::Malformed {
                        value: input.to_owned(),
                    })?;
                if !is_variant(variant) {
                    return Err(VersionError::BadVariant {
                        value: input.to_owned(),
                    });
                }
                Ok(Self {
                    version,
                    variant: Some(variant.to_owned()),
                })
            }
        }
    }

    /// The Octopus version this tag runs.
    pub fn version(&self) -> &OctopusVersion {
        &self.version
    }

    /// The variant without its leading `-` (`hardened`), if any.
    pub fn variant(&self) -> Option<&str> {
        self.variant.as_deref()
    }
}

/// A tag variant as `spec.image.variant` allows it: `^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$`.
fn is_variant(variant: &str) -> bool {
    let bytes = variant.as_bytes();
    let edge = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            edge(first) && edge(last) && bytes.iter().all(|b| edge(b) || *b == b'.' || *b == b'-')
        }
        _ => false,
    }
}

impl fmt::Display for ImageTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.variant {
            Some(variant) => write!(f, "{}-{variant}", self.version),
            None => write!(f, "{}", self.version),
        }
    }
}

impl FromStr for ImageTag {
    type Err = VersionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for ImageTag {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ImageTag {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn v(s: &str) -> OctopusVersion {
        OctopusVersion::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn parses_every_form_octopus_uses() {
        for (input, parts, build) in [
            ("2018.1.4", (2018, 1, 4), None),
            ("3.4.12", (3, 4, 12), None),
            ("2024.1.12345", (2024, 1, 12345), None),
            ("2.6.5.1010", (2, 6, 5), Some(1010)),
            ("1.6.3.1723", (1, 6, 3), Some(1723)),
            ("0.0.0", (0, 0, 0), None),
            ("2.6.5.0", (2, 6, 5), Some(0)),
        ] {
            let version = v(input);
            assert_eq!(
                (version.major(), version.minor(), version.patch()),
                parts,
                "{input}"
            );
            assert_eq!(version.build(), build, "{input}");
            assert_eq!(version.to_string(), input, "Display round-trips {input}");
        }
    }

    #[test]
    fn rejects_anything_that_is_not_an_exact_version() {
        for input in [
            "latest",
            "2024",
            "2024.1",
            "v2024.1.1",
            "-1.2.3",
            "1.-2.3",
            "2024.-1.1",
            "a.b.c",
            "2024.1.x",
            " 2024.1.1",
            "2024.1.1 ",
            "2024.1.1\n",
            "2024.1.1-hardened",
            "2024.1.1+5",
            "01.2.3",
            "2024.01.1",
            "2.6.5.01",
            "2024.1.1.5",
            "3.0.0.1",
            "1.2.3.4.5",
            "1..3",
            "1.2.3.",
            ".1.2.3",
            "+1.2.3",
            "99999999999999999999.1.1",
            "２０２４.1.1",
        ] {
            let err = OctopusVersion::parse(input).expect_err(input);
            assert_eq!(err.value(), input);
            let message = err.to_string();
            assert!(
                message.contains(&format!("{input:?}")),
                "message names the bad value: {message}"
            );
            assert!(!message.contains('\n'), "one line: {message:?}");
        }
        assert_eq!(OctopusVersion::parse(""), Err(VersionError::Empty));
        assert!(VersionError::Empty.to_string().contains("empty"));
    }

    #[test]
    fn four_parts_only_before_three() {
        assert!(matches!(
            OctopusVersion::parse("2024.1.1.5"),
            Err(VersionError::BuildAfterThree { .. })
        ));
        assert!(OctopusVersion::parse("2.99.99.99").is_ok());
    }

    #[test]
    fn orders_numerically_including_the_build_part() {
        let ordered = [
            "1.6.3.1723",
            "2.6.4.999",
            "2.6.5",
            "2.6.5.0",
            "2.6.5.999",
            "2.6.5.1010",
            "3.4.2",
            "3.4.10",
            "3.4.12",
            "3.6.5",
            "3.17.14",
            "2018.1.4",
            "2018.2.1",
            "2018.10.0",
            "2024.1.9999",
            "2024.1.12345",
        ];
        for pair in ordered.windows(2) {
            assert!(v(pair[0]) < v(pair[1]), "{} < {}", pair[0], pair[1]);
        }
    }

    #[test]
    fn schema_line_is_major_and_minor() {
        assert_eq!(v("2024.1.12345").schema_line(), (2024, 1));
        assert_eq!(v("2.6.5.1010").schema_line(), (2, 6));
    }

    #[test]
    fn serialises_as_a_string() {
        let version = v("2.6.5.1010");
        assert_eq!(
            serde_json::to_value(&version).ok(),
            Some(serde_json::json!("2.6.5.1010"))
        );
        let back: OctopusVersion =
            serde_json::from_value(serde_json::json!("2.6.5.1010")).expect("parses");
        assert_eq!(back, version);
        let err = serde_json::from_value::<OctopusVersion>(serde_json::json!("latest"))
            .expect_err("latest is rejected");
        assert!(err.to_string().contains("\"latest\""), "{err}");
    }

    #[test]
    fn image_tags_keep_the_variant_and_compare_the_version() {
        let plain = ImageTag::parse("2024.1.12345").expect("plain tag");
        assert_eq!(plain.version(), &v("2024.1.12345"));
        assert_eq!(plain.variant(), None);

        let hardened = ImageTag::parse("2024.1.12345-hardened").expect("hardened tag");
        assert_eq!(hardened.version(), &v("2024.1.12345"));
        assert_eq!(hardened.variant(), Some("hardened"));
        assert_eq!(hardened.to_string(), "2024.1.12345-hardened");

        let newer = ImageTag::parse("2024.1.12346").expect("newer tag");
        assert!(hardened < newer, "the version decides before the variant");

        let multi = ImageTag::parse("2.6.5.1010-a.b-c").expect("dots and dashes");
        assert_eq!(multi.variant(), Some("a.b-c"));
        assert_eq!(multi.to_string(), "2.6.5.1010-a.b-c");

        assert_eq!(
            ImageTag::new(v("2024.1.1"), Some("hardened".into()))
                .map(|t| t.to_string())
                .ok(),
            Some("2024.1.1-hardened".to_owned())
        );
        assert!(ImageTag::new(v("2024.1.1"), Some("Hardened".into())).is_err());

        let json = serde_json::to_value(&hardened).expect("serialises");
        assert_eq!(json, serde_json::json!("2024.1.12345-hardened"));
        let back: ImageTag = serde_json::from_value(json).expect("deserialises");
        assert_eq!(back, hardened);
    }

    #[test]
    fn rejects_bad_image_tags_naming_them() {
        for input in [
            "latest",
            "",
            "2024.1.1-",
            "-hardened",
            "2024.1-hardened",
            "2024.1.1-Hardened",
            "2024.1.1-hard ened",
            "2024.1.1-hardened-",
            "2024.1.1-.x",
            "2024.1.1_hardened",
            "v2024.1.1-hardened",
        ] {
            let err = ImageTag::parse(input).expect_err(input);
            assert_eq!(err.value(), input);
        }
    }

    fn any_version() -> impl Strategy<Value = OctopusVersion> {
        prop_oneof![
            (
                0u64..3,
                0u64..20,
                0u64..20,
                proptest::option::of(0u64..5000)
            )
                .prop_map(|(a, b, c, d)| {
                    let text = match d {
                        Some(d) => format!("{a}.{b}.{c}.{d}"),
                        None => format!("{a}.{b}.{c}"),
                    };
                    v(&text)
                }),
            (3u64..3000, 0u64..20, 0u64..100_000)
                .prop_map(|(a, b, c)| OctopusVersion::new(a, b, c)),
        ]
    }

    proptest! {
        #[test]
        fn display_round_trips(version in any_version()) {
            prop_assert_eq!(v(&version.to_string()), version);
        }

        #[test]
        fn order_matches_the_numbers(a in any_version(), b in any_version()) {
            let key = |x: &OctopusVersion| (x.major(), x.minor(), x.patch(), x.build());
            prop_assert_eq!(a.cmp(&b), key(&a).cmp(&key(&b)));
            prop_assert_eq!(a == b, a.cmp(&b) == Ordering::Equal);
        }

        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,24}") {
            let _ = OctopusVersion::parse(&text);
            let _ = ImageTag::parse(&text);
        }
    }
}
