//! The CRD's admission rules for string formats, as CEL rules whose messages say what is
//! expected, with an example. The API server prints the rejected value before the message
//! (`spec.version: Invalid value: "latest": must be an exact Octopus version: ...`).
//!
//! Why not an OpenAPI `pattern`: the API server then answers `spec.version in body should
//! match '^(0|[1-9][0-9]*)\.…'`, which tells a person nothing. A CEL rule reports its
//! message instead. Clients learn the format from each field's description
//! (`kubectl explain`).
//!
//! Every rule evaluates on any string of the field's type: no conversion (`int()`,
//! `duration()`) that could fail on bad input, so a malformed value gets one readable
//! message and never "type conversion error". Every checked field has a `maxLength`, which
//! keeps the rules' estimated cost inside the API server's budget.

use kube::core::Rule;

/// An exact Octopus Server version: MAJOR.MINOR.PATCH, or MAJOR.MINOR.PATCH.BUILD before 3.0.
pub const VERSION_PATTERN: &str =
    r"^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))?$";
/// A four-part version whose major is 0, 1 or 2 (leading zeros are already excluded).
const PRE_THREE_PATTERN: &str = r"^[0-2]\.";
/// Four dot-separated parts.
const FOUR_PARTS_PATTERN: &str = r"^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$";
/// A Go-style duration as Kubernetes writes them (`90s`, `30m`, `1h30m`).
const DURATION_PATTERN: &str = r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$";
/// `HH:MM` on a 24-hour clock.
const CLOCK_PATTERN: &str = r"^([01][0-9]|2[0-3]):[0-5][0-9]$";
/// An IANA time zone name (`UTC`, `Europe/Berlin`, `America/Argentina/Buenos_Aires`).
const TIME_ZONE_PATTERN: &str = r"^[A-Za-z][A-Za-z0-9_+\-]*(/[A-Za-z0-9_+\-]+)*$";
/// An image tag variant (`hardened`).
const VARIANT_PATTERN: &str = r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$";
/// A Kubernetes object name that is also a DNS label: what backup Job names are.
const BACKUP_NAME_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
/// An http or https URL without whitespace.
const URL_PATTERN: &str = r"^https?://[^\s]+$";
/// An http or https URL without whitespace that names `{pod}`.
const NODE_URL_PATTERN: &str = r"^https?://[^\s]*\{pod\}[^\s]*$";

/// What an exact version looks like, shared by `version` and `approvedVersion`.
const VERSION_EXPECTED: &str = "must be an exact Octopus version: MAJOR.MINOR.PATCH such as 2024.1.12345, or MAJOR.MINOR.PATCH.BUILD before 3.0 such as 2.6.5.1010 (no tags such as latest, no v prefix)";

/// `spec.version` and `spec.upgrade.approvedVersion`: an exact version.
pub fn version() -> Rule {
    matching(VERSION_PATTERN, VERSION_EXPECTED)
}

/// `spec.version`: the four-part form exists only before 3.0. True for anything that is not
/// four numbers, so a malformed value gets only [`version`]'s message.
pub fn four_parts_only_before_three() -> Rule {
    Rule::new(format!(
        "!self.matches({}) || self.matches({})",
        cel_string(FOUR_PARTS_PATTERN),
        cel_string(PRE_THREE_PATTERN)
    ))
    .message(
        "four-part versions exist only before Octopus 3.0: write MAJOR.MINOR.PATCH such as 2024.1.12345",
    )
}

/// Durations (`drainTimeout`, `nodeReadyTimeout`, `maintenanceWindow.duration`).
pub fn duration() -> Rule {
    matching(
        DURATION_PATTERN,
        "must be a duration, a number with a unit (h, m, s, ms) such as 30m, 90s or 1h30m",
    )
}

/// `maintenanceWindow.start`.
pub fn clock() -> Rule {
    matching(
        CLOCK_PATTERN,
        "must be a time of day as HH:MM on a 24-hour clock, such as 02:00 or 22:30",
    )
}

/// `maintenanceWindow.timeZone`.
pub fn time_zone() -> Rule {
    matching(
        TIME_ZONE_PATTERN,
        "must be an IANA time zone name such as UTC, Europe/Berlin or America/New_York",
    )
}

/// `image.variant`.
pub fn variant() -> Rule {
    matching(
        VARIANT_PATTERN,
        "must be an image tag variant of lowercase letters, digits, dots and dashes, such as hardened (the tag becomes VERSION-VARIANT)",
    )
}

/// `api.url`.
pub fn url() -> Rule {
    matching(
        URL_PATTERN,
        "must be an http:// or https:// URL without spaces, such as https://octopus.example.com (the part before /api)",
    )
}

/// `api.nodeUrlTemplate`.
pub fn node_url_template() -> Rule {
    matching(
        NODE_URL_PATTERN,
        "must be an http:// or https:// URL template without spaces that contains {pod}, such as http://{pod}.{service}.{namespace}.svc:8080 (the part before /api)",
    )
}

/// `upgrade.restoredBackup`.
pub fn backup_name() -> Rule {
    matching(
        BACKUP_NAME_PATTERN,
        "must name the backup you restored: its backup Job, as the UpgradeBlocked condition and status.lastBackup.jobName show it, such as octo-backup-2024-2-100-1a2b3c4d (lowercase letters, digits and dashes)",
    )
}

/// A rule that `self` matches `pattern`, with `expected` as its message.
fn matching(pattern: &str, expected: &str) -> Rule {
    Rule::new(format!("self.matches({})", cel_string(pattern))).message(expected)
}

/// `text` as a single-quoted CEL string literal.
fn cel_string(text: &str) -> String {
    format!("'{}'", text.replace('\\', r"\\").replace('\'', r"\'"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::Message;

    fn message(rule: &Rule) -> String {
        match &rule.message {
            Some(Message::Message(text) | Message::Expression(text)) => text.clone(),
            None => String::new(),
        }
    }

    #[test]
    fn patterns_become_cel_string_literals() {
        assert_eq!(cel_string(r"^a\.b$"), r"'^a\\.b$'");
        assert_eq!(cel_string("it's"), r"'it\'s'");
        assert_eq!(
            version().rule,
            r"self.matches('^(0|[1-9][0-9]*)\\.(0|[1-9][0-9]*)\\.(0|[1-9][0-9]*)(\\.(0|[1-9][0-9]*))?$')"
        );
    }

    /// The rules are plain RE2 matches: no conversion that can fail on bad input.
    #[test]
    fn no_rule_converts_types() {
        let rules = [
            version(),
            four_parts_only_before_three(),
            duration(),
            clock(),
            time_zone(),
            variant(),
            url(),
            backup_name(),
        ];
        for rule in &rules {
            for conversion in ["int(", "uint(", "double(", "duration(", "timestamp("] {
                assert!(!rule.rule.contains(conversion), "{}", rule.rule);
                assert!(!message(rule).contains(conversion), "{}", message(rule));
            }
            assert!(message(rule).contains("such as"), "{}", message(rule));
        }
    }

    /// The two version rules together accept exactly what the operator's parser accepts.
    #[test]
    fn version_rules_agree_with_the_parser() {
        let shape = regex::Regex::new(VERSION_PATTERN).expect("pattern");
        let four = regex::Regex::new(FOUR_PARTS_PATTERN).expect("pattern");
        let pre_three = regex::Regex::new(PRE_THREE_PATTERN).expect("pattern");
        let admitted = |s: &str| shape.is_match(s) && (!four.is_match(s) || pre_three.is_match(s));
        let mut inputs: Vec<String> = [
            "2024.1.12345",
            "3.4.12",
            "2.6.5.1010",
            "0.0.0",
            "1.6.3.1723",
            "latest",
            "2024",
            "v2024.1.1",
            "2024.01.1",
            "2024.1.1-hardened",
            "",
            "3.0.0.1",
            "2024.1.1.1",
            "2.6.5.01",
            " 2024.1.1",
            "2024.1.1 ",
            "2024..1",
            "-1.0.0",
        ]
        .map(String::from)
        .to_vec();
        for a in ["0", "1", "2", "3", "10", "2024", "01"] {
            for b in ["0", "5", "05"] {
                inputs.push(format!("{a}.{b}.7"));
                inputs.push(format!("{a}.{b}.7.1010"));
                inputs.push(format!("{a}.{b}"));
            }
        }
        for input in &inputs {
            let parsed = crate::version::OctopusVersion::parse(input).is_ok();
            assert_eq!(admitted(input), parsed, "{input:?}");
        }
    }

    #[test]
    fn format_patterns_take_their_examples() {
        for (pattern, good, bad) in [
            (
                DURATION_PATTERN,
                &["30m", "90s", "1h30m", "1.5h"][..],
                &["half an hour", "30", "-5m", "1d"][..],
            ),
            (
                CLOCK_PATTERN,
                &["02:00", "22:30", "00:00"],
                &["24:00", "2:00", "noon", "02:60"],
            ),
            (
                TIME_ZONE_PATTERN,
                &[
                    "UTC",
                    "Europe/Berlin",
                    "America/Argentina/Buenos_Aires",
                    "Etc/GMT+2",
                ],
                &["Europe/", "/UTC", "Central European Time"],
            ),
            (
                VARIANT_PATTERN,
                &["hardened", "ubuntu.22-04"],
                &["Hardened", "-x", "x-", "a b"],
            ),
            (
                BACKUP_NAME_PATTERN,
                &["octo-backup-2024-2-100-1a2b3c4d", "a", "0-1"],
                &[
                    "Octo-backup",
                    "octo-",
                    "-octo",
                    "octo backup",
                    "octo.backup",
                    "",
                ],
            ),
            (
                URL_PATTERN,
                &["https://octopus.example.com", "http://octopus:8080"],
                &["ftp://x", "octopus.example.com", "https://a b"],
            ),
            (
                NODE_URL_PATTERN,
                &[
                    "http://{pod}.{service}.{namespace}.svc:8080",
                    "https://{pod}.octo-nodes.prod.svc",
                ],
                &[
                    "http://octo-0.octo-nodes.svc",
                    "{pod}.octo",
                    "https://{pod} x",
                ],
            ),
        ] {
            let re = regex::Regex::new(pattern).expect("pattern");
            for g in good {
                assert!(re.is_match(g), "{pattern} rejects {g}");
            }
            for b in bad {
                assert!(!re.is_match(b), "{pattern} accepts {b}");
            }
        }
    }
}
