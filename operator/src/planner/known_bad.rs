//! Upgrade paths Octopus documents as broken, as data: which sources, which targets, and
//! what to do instead. A new entry is one more table row.
//!
//! The legacy upgrade guide's "Broken upgrade paths" box points to the tracker issue
//! OctopusDeploy/Issues#4979 ("Known upgrade path bugs and restrictions"); the issue tracker
//! holds the rest. Entries come in the shapes Octopus writes them in: a lower or an upper
//! bound on the source, a range of targets, and a remedy that is either a chain of versions
//! to go through ([`Remedy::Through`]) or a fixed build to take instead ([`Remedy::FixedIn`]).
//!
//! Only moves into another (higher) schema line count: each failure is a schema upgrade
//! meeting data it does not expect. A patch move inside a line starts from a database that
//! line already accepted, and downgrades restore a backup instead.

use crate::version::OctopusVersion;

/// A half-open range of versions, `at_least <= v < below`; a missing end is unbounded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionRange {
    /// Lowest version in the range.
    pub at_least: Option<OctopusVersion>,
    /// First version above the range.
    pub below: Option<OctopusVersion>,
}

impl VersionRange {
    /// `at_least <= v < below`.
    pub const fn between(at_least: OctopusVersion, below: OctopusVersion) -> Self {
        Self {
            at_least: Some(at_least),
            below: Some(below),
        }
    }

    /// `v >= at_least`.
    pub const fn from(at_least: OctopusVersion) -> Self {
        Self {
            at_least: Some(at_least),
            below: None,
        }
    }

    /// `v < below`.
    pub const fn below(below: OctopusVersion) -> Self {
        Self {
            at_least: None,
            below: Some(below),
        }
    }

    /// Whether `version` lies in the range.
    pub fn contains(&self, version: &OctopusVersion) -> bool {
        self.at_least.as_ref().is_none_or(|low| version >= low)
            && self.below.as_ref().is_none_or(|high| version < high)
    }
}

/// What Octopus says to do instead of the broken move.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Remedy {
    /// Upgrade to each of these versions in turn, then to the target.
    Through(&'static [OctopusVersion]),
    /// The first fixed build on each affected schema line: a target on a listed line below
    /// its build fails, the build itself or any later patch works. Lines not listed are not
    /// affected.
    FixedIn(&'static [OctopusVersion]),
}

/// One broken upgrade path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownBadPath {
    /// Where Octopus tracks it (`OctopusDeploy/Issues#7790`).
    pub issue: &'static str,
    /// What the failing upgrade does, in Octopus's words where it has some.
    pub symptom: &'static str,
    /// The sources that are affected.
    pub from: VersionRange,
    /// The targets that are affected.
    pub to: VersionRange,
    /// What to do instead.
    pub remedy: Remedy,
}

impl KnownBadPath {
    /// Whether moving from `from` to `to` takes this broken path.
    pub fn affects(&self, from: &OctopusVersion, to: &OctopusVersion) -> bool {
        if from.schema_line() >= to.schema_line() || !self.from.contains(from) {
            return false;
        }
        if !self.to.contains(to) {
            return false;
        }
        match self.remedy {
            Remedy::Through(_) => true,
            Remedy::FixedIn(fixes) => fixed_build(fixes, to).is_some_and(|fix| to < fix),
        }
    }

    /// The fixed build to take instead of `to`, for a [`Remedy::FixedIn`] entry.
    pub fn fix_for(&self, to: &OctopusVersion) -> Option<&'static OctopusVersion> {
        match self.remedy {
            Remedy::Through(_) => None,
            Remedy::FixedIn(fixes) => fixed_build(fixes, to),
        }
    }

    /// The versions to go through first, for a [`Remedy::Through`] entry.
    pub fn hops(&self) -> &'static [OctopusVersion] {
        match self.remedy {
            Remedy::Through(hops) => hops,
            Remedy::FixedIn(_) => &[],
        }
    }
}

/// The fix on `to`'s schema line, if the line is listed.
fn fixed_build(
    fixes: &'static [OctopusVersion],
    to: &OctopusVersion,
) -> Option<&'static OctopusVersion> {
    fixes
        .iter()
        .find(|fix| fix.schema_line() == to.schema_line())
}

/// OctopusDeploy/Issues#7790: the first fixed build on each affected line.
static ISSUE_7790_FIXES: [OctopusVersion; 5] = [
    OctopusVersion::new(2022, 1, 3277),
    OctopusVersion::new(2022, 2, 8552),
    OctopusVersion::new(2022, 3, 10780),
    OctopusVersion::new(2022, 4, 8151),
    OctopusVersion::new(2023, 1, 1160),
];

/// OctopusDeploy/Issues#4979 and #4509: from before 3.4, through these to 2018.4-2018.5.4.
static ISSUE_4509_HOPS: [OctopusVersion; 2] = [
    OctopusVersion::new(3, 4, 15),
    OctopusVersion::new(3, 17, 14),
];

/// OctopusDeploy/Issues#4979 and #4958: from 2.6, through 2018.7.14 to 2018.8.0-2018.8.11.
static ISSUE_4958_HOPS: [OctopusVersion; 1] = [OctopusVersion::new(2018, 7, 14)];

/// OctopusDeploy/Issues#4739: "please upgrade directly to 2018.7.1 or newer".
static ISSUE_4739_FIXES: [OctopusVersion; 1] = [OctopusVersion::new(2018, 7, 1)];

/// OctopusDeploy/Issues#4742 names 2018.7.0 and 2018.7.1 as the failing targets but not the
/// release with the fix; the table takes the next build, 2018.7.2, as the first safe one.
static ISSUE_4742_FIXES: [OctopusVersion; 1] = [OctopusVersion::new(2018, 7, 2)];

/// OctopusDeploy/Issues#6685: "upgrading to an earlier version of 2020.x and then upgrading
/// to 2020.5.0 should prevent this issue". The table goes through the first build of the
/// last line before 2020.5.
static ISSUE_6685_HOPS: [OctopusVersion; 1] = [OctopusVersion::new(2020, 4, 0)];

/// Every known bad path, oldest first. Sources:
/// - upgrade docs, "Upgrading old versions of Octopus", box "Broken upgrade paths"
///   (octopus.com/docs/administration/upgrading/legacy), which links #4979;
/// - the issues named in each row (github.com/OctopusDeploy/Issues/issues/N).
pub static KNOWN_BAD_PATHS: [KnownBadPath; 6] = [
    // #4979 "< 3.4 to 2018.4.0-2018.5.4": Script0045AddDefaultMachinePolicyToExistingTentacles
    // fails (#4509). Sources from 3.0: before that the move is a migration into a new
    // database, which the legacy gateways cover.
    KnownBadPath {
        issue: "OctopusDeploy/Issues#4509, #4979",
        symptom: "Upgrade failed due to an unexpected exception: Cannot perform runtime binding on a null reference",
        from: VersionRange::between(OctopusVersion::new(3, 0, 0), OctopusVersion::new(3, 4, 0)),
        to: VersionRange::between(
            OctopusVersion::new(2018, 4, 0),
            OctopusVersion::new(2018, 5, 5),
        ),
        remedy: Remedy::Through(&ISSUE_4509_HOPS),
    },
    // #4979 "2.6 to 2018.8.0-2018.8.11": the migrator imports a null FeedUri for the
    // built-in feed (#4958), which breaks every package deployment.
    KnownBadPath {
        issue: "OctopusDeploy/Issues#4958, #4979",
        symptom: "the migrator imports the built-in feed without its FeedUri and deployments fail with \"The feed type NuGetFeed named 'Octopus Server (built-in)' is not supported\"",
        from: VersionRange::between(OctopusVersion::new(2, 6, 0), OctopusVersion::new(3, 0, 0)),
        to: VersionRange::between(
            OctopusVersion::new(2018, 8, 0),
            OctopusVersion::new(2018, 8, 12),
        ),
        remedy: Remedy::Through(&ISSUE_4958_HOPS),
    },
    // #4739: "a bug preventing upgrades from Octopus Server 2018.5.7 or earlier directly to
    // 2018.7.0".
    KnownBadPath {
        issue: "OctopusDeploy/Issues#4739",
        symptom: "Error while executing SQL command in transaction 'TargetLimitPolicy': Invalid column name 'CommunicationStyle'",
        from: VersionRange::below(OctopusVersion::new(2018, 5, 8)),
        to: VersionRange::from(OctopusVersion::new(2018, 7, 0)),
        remedy: Remedy::FixedIn(&ISSUE_4739_FIXES),
    },
    // #4742: upgrading to 2018.7.0 or 2018.7.1 from an earlier version fails when an account
    // id has the form Accounts-N, and leaves a database that must be restored.
    KnownBadPath {
        issue: "OctopusDeploy/Issues#4742",
        symptom: "Unrecognised document prefix Accounts-1 (the database must then be restored from backup)",
        from: VersionRange::below(OctopusVersion::new(2018, 7, 0)),
        to: VersionRange::from(OctopusVersion::new(2018, 7, 0)),
        remedy: Remedy::FixedIn(&ISSUE_4742_FIXES),
    },
    // #6685 (and #6699): from 3.x straight to 2020.5.0 corrupts FeedId in legacy deployment
    // processes. 2020.5.0 only; the fix shipped in a later 2020.5 patch.
    KnownBadPath {
        issue: "OctopusDeploy/Issues#6685",
        symptom: "upgrading from 3.x writes corrupt FeedId values into deployment processes",
        from: VersionRange::between(
            OctopusVersion::new(3, 0, 0),
            OctopusVersion::new(2018, 1, 0),
        ),
        to: VersionRange::between(
            OctopusVersion::new(2020, 5, 0),
            OctopusVersion::new(2020, 5, 1),
        ),
        remedy: Remedy::Through(&ISSUE_6685_HOPS),
    },
    // #7790: "Upgrades affected going from >=2021.3.12912 to >= 2022.1.2735, all 2022.2 GA
    // versions, all 2022.3 GA versions"; its fix table lists the builds per line (2022.4
    // and 2023.1 builds before the fix were affected too).
    KnownBadPath {
        issue: "OctopusDeploy/Issues#7790",
        symptom: "Unexpected upgrade history detected",
        from: VersionRange::from(OctopusVersion::new(2021, 3, 12912)),
        to: VersionRange::from(OctopusVersion::new(2022, 1, 2735)),
        remedy: Remedy::FixedIn(&ISSUE_7790_FIXES),
    },
];

/// Every known bad path the move from `from` to `to` takes, in table order.
pub fn find(from: &OctopusVersion, to: &OctopusVersion) -> Vec<&'static KnownBadPath> {
    KNOWN_BAD_PATHS
        .iter()
        .filter(|bad| bad.affects(from, to))
        .collect()
}

/// The versions a known bad path makes the move from `from` to `to` go through first
/// (empty when none does): the chain of the first [`Remedy::Through`] entry that applies.
pub fn hops(from: &OctopusVersion, to: &OctopusVersion) -> &'static [OctopusVersion] {
    find(from, to)
        .into_iter()
        .map(KnownBadPath::hops)
        .find(|hops| !hops.is_empty())
        .unwrap_or(&[])
}

/// The target to take instead of `to` when the move from `from` hits [`Remedy::FixedIn`]
/// entries: the highest of their fixes, re-checked until no entry applies any more, so the
/// answer is itself a good target.
pub fn replacement(from: &OctopusVersion, to: &OctopusVersion) -> Option<OctopusVersion> {
    let mut target = to.clone();
    // Each round moves the target strictly up to a table entry, so the table bounds it.
    for _ in 0..=KNOWN_BAD_PATHS.len() {
        let next = find(from, &target)
            .into_iter()
            .filter_map(|bad| bad.fix_for(&target))
            .max();
        match next {
            Some(fix) if *fix > target => target = fix.clone(),
            _ => break,
        }
    }
    (target != *to).then_some(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> OctopusVersion {
        OctopusVersion::parse(s).expect("a version")
    }

    /// A chain must lead forward and land below the targets it serves, or a path could loop
    /// or overshoot; a fix must lie above the targets it replaces.
    #[test]
    fn remedies_lead_forward() {
        for bad in &KNOWN_BAD_PATHS {
            match bad.remedy {
                Remedy::Through(hops) => {
                    assert!(!hops.is_empty(), "{bad:?}");
                    assert!(hops.windows(2).all(|w| w[0] < w[1]), "{bad:?}");
                    let lowest_target = bad.to.at_least.as_ref().expect("a lowest target");
                    assert!(hops.iter().all(|hop| hop < lowest_target), "{bad:?}");
                    if let Some(below) = &bad.from.below {
                        assert!(hops[0] >= *below, "{bad:?}");
                    }
                    // The chain itself is a good path.
                    let first = bad
                        .from
                        .at_least
                        .clone()
                        .unwrap_or(OctopusVersion::new(3, 0, 0));
                    assert!(
                        !bad.affects(&hops[hops.len() - 1], lowest_target),
                        "{bad:?}"
                    );
                    assert!(find(&first, &hops[0]).is_empty(), "{bad:?}");
                }
                Remedy::FixedIn(fixes) => {
                    assert!(!fixes.is_empty(), "{bad:?}");
                    for fix in fixes {
                        assert!(bad.to.contains(fix), "{bad:?}");
                    }
                }
            }
        }
    }

    /// One row per entry: a move it names is caught, the remedy it names is offered, and the
    /// moves just outside its bounds are not caught.
    #[test]
    fn each_entry_catches_what_its_source_says() {
        type Case = (&'static str, &'static str, &'static str, bool);
        // (issue, from, to, affected)
        let cases: &[Case] = &[
            // #4509 / #4979: source below 3.4, targets 2018.4.0-2018.5.4.
            ("#4509", "3.3.8", "2018.4.0", true),
            ("#4509", "3.0.0", "2018.5.4", true),
            ("#4509", "3.3.27", "2018.4.3", true),
            ("#4509", "3.4.0", "2018.4.0", false),
            ("#4509", "3.3.8", "2018.5.5", false),
            ("#4509", "3.3.8", "2018.3.13", false),
            // #4958 / #4979: 2.6 to 2018.8.0-2018.8.11.
            ("#4958", "2.6.5.1010", "2018.8.0", true),
            ("#4958", "2.6.0", "2018.8.11", true),
            ("#4958", "2.6.5", "2018.8.12", false),
            ("#4958", "2.6.5", "2018.7.14", false),
            ("#4958", "3.0.0", "2018.8.6", false),
            // #4739: 2018.5.7 or earlier to 2018.7.0.
            ("#4739", "2018.5.7", "2018.7.0", true),
            ("#4739", "3.17.14", "2018.7.0", true),
            ("#4739", "2018.5.8", "2018.7.0", false),
            ("#4739", "2018.6.15", "2018.7.0", false),
            ("#4739", "2018.5.7", "2018.7.1", false),
            // #4742: earlier versions to 2018.7.0 or 2018.7.1.
            ("#4742", "2018.6.15", "2018.7.1", true),
            ("#4742", "2018.6.15", "2018.7.0", true),
            ("#4742", "2018.6.15", "2018.7.2", false),
            ("#4742", "2018.7.0", "2018.7.1", false),
            // #6685: 3.x to 2020.5.0.
            ("#6685", "3.17.14", "2020.5.0", true),
            ("#6685", "3.0.0", "2020.5.0", true),
            ("#6685", "3.17.14", "2020.5.1", false),
            ("#6685", "2018.1.0", "2020.5.0", false),
            // #7790: from 2021.3.12912, targets from 2022.1.2735 below each line's fix.
            ("#7790", "2021.3.12912", "2022.1.2735", true),
            ("#7790", "2021.3.12912", "2022.1.3276", true),
            ("#7790", "2021.3.13000", "2022.2.1", true),
            ("#7790", "2022.2.9000", "2022.3.10779", true),
            ("#7790", "2022.3.10780", "2022.4.8150", true),
            ("#7790", "2022.4.8151", "2023.1.1159", true),
            ("#7790", "2021.3.12911", "2022.1.3276", false),
            ("#7790", "2021.3.12912", "2022.1.2734", false),
            ("#7790", "2021.3.12912", "2022.1.3277", false),
            ("#7790", "2022.4.8151", "2023.1.1160", false),
            ("#7790", "2023.1.1160", "2023.2.1", false),
            ("#7790", "2022.1.100", "2022.1.3000", false),
        ];
        for (issue, from, to, affected) in cases {
            let hits: Vec<_> = find(&v(from), &v(to))
                .into_iter()
                .filter(|bad| bad.issue.contains(&format!("Issues{issue}")))
                .collect();
            assert_eq!(!hits.is_empty(), *affected, "{issue}: {from} -> {to}");
        }
        for bad in &KNOWN_BAD_PATHS {
            assert!(
                cases
                    .iter()
                    .any(|(issue, ..)| bad.issue.contains(&format!("Issues{issue}"))),
                "no case for {}",
                bad.issue
            );
        }
    }

    #[test]
    fn chains_and_replacements_name_the_versions_octopus_names() {
        assert_eq!(
            hops(&v("3.3.8"), &v("2018.4.0")),
            [v("3.4.15"), v("3.17.14")]
        );
        assert_eq!(hops(&v("2.6.5.1010"), &v("2018.8.6")), [v("2018.7.14")]);
        assert_eq!(hops(&v("3.17.14"), &v("2020.5.0")), [v("2020.4.0")]);
        assert!(hops(&v("2018.5.7"), &v("2018.7.0")).is_empty());

        assert_eq!(
            replacement(&v("2018.6.15"), &v("2018.7.0")),
            Some(v("2018.7.2"))
        );
        // #4739 says 2018.7.1; #4742 also applies, so 2018.7.2.
        assert_eq!(
            replacement(&v("2018.5.7"), &v("2018.7.0")),
            Some(v("2018.7.2"))
        );
        assert_eq!(
            replacement(&v("2021.4.1"), &v("2022.2.8000")),
            Some(v("2022.2.8552"))
        );
        assert_eq!(replacement(&v("2021.4.1"), &v("2022.2.8552")), None);
        assert_eq!(replacement(&v("3.3.8"), &v("2018.4.0")), None);
    }
}
