//! What kind of change a move between two versions is, in Octopus's own terms (patch, minor,
//! major, and their downgrades). Says nothing about whether the change is allowed.

use serde::{Deserialize, Serialize};

use crate::version::OctopusVersion;

/// The kind of a version change. Serialises kebab-case (`patch-downgrade`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, strum::EnumString)]
#[serde(rename_all = "kebab-case")]
#[strum(serialize_all = "kebab-case")]
pub enum ChangeKind {
    /// Same version.
    None,
    /// Higher version on the same schema line (major.minor): binaries only.
    Patch,
    /// Higher minor on the same major: usually changes the database schema.
    Minor,
    /// Higher major: changes the schema, may break things, needs approval.
    Major,
    /// Lower version on the same schema line: as free as a patch upgrade.
    PatchDowngrade,
    /// Lower minor on the same major: needs the database restored.
    MinorDowngrade,
    /// Lower major: needs the database (and file storage) restored.
    MajorDowngrade,
}

impl ChangeKind {
    /// The name used in JSON and tables (`minor-downgrade`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Patch => "patch",
            Self::Minor => "minor",
            Self::Major => "major",
            Self::PatchDowngrade => "patch-downgrade",
            Self::MinorDowngrade => "minor-downgrade",
            Self::MajorDowngrade => "major-downgrade",
        }
    }

    /// Whether the change moves to another schema line (minor or major, either way). Octopus
    /// upgrades the schema when the first node of the new version starts; going back needs
    /// a restore.
    pub fn is_schema_change(self) -> bool {
        matches!(
            self,
            Self::Minor | Self::Major | Self::MinorDowngrade | Self::MajorDowngrade
        )
    }

    /// Whether the change goes to a lower version.
    pub fn is_downgrade(self) -> bool {
        matches!(
            self,
            Self::PatchDowngrade | Self::MinorDowngrade | Self::MajorDowngrade
        )
    }

    /// The kind of the opposite move: `classify(b, a) == classify(a, b).inverse()`.
    pub fn inverse(self) -> Self {
        match self {
            Self::None => Self::None,
            Self::Patch => Self::PatchDowngrade,
            Self::Minor => Self::MinorDowngrade,
            Self::Major => Self::MajorDowngrade,
            Self::PatchDowngrade => Self::Patch,
            Self::MinorDowngrade => Self::Minor,
            Self::MajorDowngrade => Self::Major,
        }
    }
}

impl std::fmt::Display for ChangeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Classifies the move from `from` to `to`. The first differing part decides: major, then
/// minor, then anything below (patch and the pre-3.0 build part) is a patch move.
pub fn classify(from: &OctopusVersion, to: &OctopusVersion) -> ChangeKind {
    use std::cmp::Ordering::{Equal, Greater, Less};
    match (
        to.major().cmp(&from.major()),
        to.minor().cmp(&from.minor()),
        to.cmp(from),
    ) {
        (Greater, _, _) => ChangeKind::Major,
        (Less, _, _) => ChangeKind::MajorDowngrade,
        (Equal, Greater, _) => ChangeKind::Minor,
        (Equal, Less, _) => ChangeKind::MinorDowngrade,
        (Equal, Equal, Greater) => ChangeKind::Patch,
        (Equal, Equal, Less) => ChangeKind::PatchDowngrade,
        (Equal, Equal, Equal) => ChangeKind::None,
    }
}
