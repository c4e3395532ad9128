//! Upgrade paths Octopus documents as broken: exact version ranges that fail. Data, so a
//! new entry is one more table row.
//!
//! Octopus tracks these in its issue tracker ("Broken upgrade paths" in the upgrade docs).

use crate::version::OctopusVersion;

/// A move that fails: from `from_at_least` or later into one of the affected schema lines
/// at a build below the fix on that line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownBadPath {
    /// Where Octopus tracks it.
    pub issue: &'static str,
    /// What the failing upgrade says.
    pub symptom: &'static str,
    /// Sources at or above this version are affected.
    pub from_at_least: OctopusVersion,
    /// The first fixed build on each affected schema line; targets on that line below it
    /// fail. Lines not listed are not affected.
    pub fixed_in: &'static [OctopusVersion],
}

/// OctopusDeploy/Issues#7790: a change shipped in 2021.3.12912 leaves upgrade history that
/// these earlier builds of later lines do not recognise.
static ISSUE_7790_FIXES: [OctopusVersion; 5] = [
    OctopusVersion::new(2022, 1, 3277),
    OctopusVersion::new(2022, 2, 8552),
    OctopusVersion::new(2022, 3, 10780),
    OctopusVersion::new(2022, 4, 8151),
    OctopusVersion::new(2023, 1, 1160),
];

/// Every known bad path.
pub static KNOWN_BAD_PATHS: [KnownBadPath; 1] = [KnownBadPath {
    issue: "OctopusDeploy/Issues#7790",
    symptom: "Unexpected upgrade history detected",
    from_at_least: OctopusVersion::new(2021, 3, 12912),
    fixed_in: &ISSUE_7790_FIXES,
}];

/// A known bad path the upgrade from `from` to `to` would take, with the fixed build to use
/// instead.
///
/// Only moves into another (higher) schema line count: the failure is the new line's schema
/// upgrade meeting history it does not know. A patch move inside an affected line starts
/// from a database that line already accepted, and downgrades restore a backup instead.
pub fn find(
    from: &OctopusVersion,
    to: &OctopusVersion,
) -> Option<(&'static KnownBadPath, &'static OctopusVersion)> {
    if from.schema_line() >= to.schema_line() {
        return None;
    }
    KNOWN_BAD_PATHS.iter().find_map(|bad| {
        if *from < bad.from_at_least {
            return None;
        }
        bad.fixed_in
            .iter()
            .find(|fix| fix.schema_line() == to.schema_line() && to < *fix)
            .map(|fix| (bad, fix))
    })
}
