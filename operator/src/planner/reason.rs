//! Why a version change is refused: one stable CamelCase name per rule. The same name goes
//! into the plan, the status condition, the Event and the log. Never rename a variant:
//! scripts and alerts match on these names.

use serde::{Deserialize, Serialize};

use crate::version::VersionError;

/// The reason a plan is blocked. Variants are listed in precedence order: when several
/// rules refuse a change, the first listed here wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum BlockReason {
    /// A version is not an exact Octopus version (`latest`, `2024`, `v2024.1.1`).
    InvalidVersion,
    /// Octopus cannot move there directly; the plan's `path` lists the versions to go
    /// through, one `spec.version` change at a time.
    UnsupportedUpgradePath,
    /// Octopus documents this exact move as failing (e.g. OctopusDeploy/Issues#7790). The
    /// message names the versions to go through (also in the plan's `path`) or the fixed
    /// build to take instead.
    KnownBadUpgradePath,
    /// Going back to an older minor or major needs the database restored from the backup
    /// taken before the upgrade.
    DowngradeRequiresRestore,
    /// A major upgrade whose major version was not approved in
    /// `spec.upgrade.approvedMajorVersion`.
    MajorUpgradeNotApproved,
}

impl BlockReason {
    /// Every reason, in precedence order.
    pub const ALL: [Self; 5] = [
        Self::InvalidVersion,
        Self::UnsupportedUpgradePath,
        Self::KnownBadUpgradePath,
        Self::DowngradeRequiresRestore,
        Self::MajorUpgradeNotApproved,
    ];

    /// The stable name (`MajorUpgradeNotApproved`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidVersion => "InvalidVersion",
            Self::UnsupportedUpgradePath => "UnsupportedUpgradePath",
            Self::KnownBadUpgradePath => "KnownBadUpgradePath",
            Self::DowngradeRequiresRestore => "DowngradeRequiresRestore",
            Self::MajorUpgradeNotApproved => "MajorUpgradeNotApproved",
        }
    }
}

impl std::fmt::Display for BlockReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The message that goes with [`BlockReason::InvalidVersion`] when `spec.version` (or an
/// observed version) does not parse. Names the bad value and says what to write instead.
pub fn invalid_version_message(err: &VersionError) -> String {
    format!("{err}; set spec.version to an exact Octopus version")
}
