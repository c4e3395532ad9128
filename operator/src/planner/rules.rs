//! The rules that can refuse a version change, as one ordered table of named checks. When
//! several refuse, the first in the table wins; this order is part of the contract:
//! UnsupportedUpgradePath, KnownBadUpgradePath, DowngradeRequiresRestore,
//! MajorUpgradeNotApproved (InvalidVersion comes before all of them, at parse time).
//!
//! Each refusal says what the user can do about it.

use super::change::ChangeKind;
use super::reason::BlockReason;
use super::{PlanRequest, known_bad, legacy, route};
use crate::version::OctopusVersion;

/// A rule that refuses a change, with the message to show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Stable name of the rule.
    pub reason: BlockReason,
    /// What is wrong and what to do, in one line.
    pub message: String,
}

type Check = fn(&PlanRequest, ChangeKind) -> Option<String>;

/// The checks, in precedence order.
const RULES: [(BlockReason, Check); 4] = [
    (BlockReason::UnsupportedUpgradePath, unsupported_path),
    (BlockReason::KnownBadUpgradePath, known_bad_path),
    (BlockReason::DowngradeRequiresRestore, downgrade),
    (BlockReason::MajorUpgradeNotApproved, major_not_approved),
];

/// Every rule that refuses the change, in precedence order (empty: allowed).
pub fn refusals(request: &PlanRequest, change: ChangeKind) -> Vec<Refusal> {
    RULES
        .iter()
        .filter_map(|(reason, check)| {
            check(request, change).map(|message| Refusal {
                reason: *reason,
                message,
            })
        })
        .collect()
}

fn join(path: &[OctopusVersion]) -> String {
    path.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" -> ")
}

fn unsupported_path(request: &PlanRequest, _: ChangeKind) -> Option<String> {
    let first = legacy::gateway(&request.from, &request.to)?;
    let path = route::path(&request.from, &request.to);
    let via = first.via.to_string();
    let named = if first.via_name == via {
        via
    } else {
        format!("{via} ({})", first.via_name)
    };
    Some(format!(
        "{} (Octopus docs: supported upgrade paths): set spec.version to {named} first, one hop at a time along {}",
        first.rule,
        join(&path)
    ))
}

fn known_bad_path(request: &PlanRequest, _: ChangeKind) -> Option<String> {
    let (from, to) = (&request.from, &request.to);
    let bad = known_bad::find(from, to);
    if bad.is_empty() {
        return None;
    }
    let why = bad
        .iter()
        .map(|bad| format!("{} ({})", bad.symptom, bad.issue))
        .collect::<Vec<_>>()
        .join("; ");
    let path = route::path(from, to);
    let what = if path.len() > 2 {
        format!(
            "set spec.version to {} first, one hop at a time along {}",
            path[1],
            join(&path)
        )
    } else if let Some(fix) = known_bad::replacement(from, to) {
        let (major, minor) = fix.schema_line();
        format!("set spec.version to {fix} or a later {major}.{minor} patch instead")
    } else {
        // Every entry names a chain or a fix (known_bad's tests), so this is not reached.
        "choose another target version".to_owned()
    };
    Some(format!(
        "{from} -> {to} is a broken upgrade path: {why}: {what}"
    ))
}

fn downgrade(request: &PlanRequest, change: ChangeKind) -> Option<String> {
    let restore = match change {
        ChangeKind::MinorDowngrade => "the database and Master Key",
        ChangeKind::MajorDowngrade => "the database, file storage and Master Key",
        _ => return None,
    };
    let (major, minor) = request.from.schema_line();
    Some(format!(
        "going back from {} to {} undoes a database schema change: restore {restore} from the backup taken before the upgrade to {major}.{minor}, or set spec.version back to {}",
        request.from, request.to, request.from
    ))
}

fn major_not_approved(request: &PlanRequest, change: ChangeKind) -> Option<String> {
    if change != ChangeKind::Major || request.approved_major == Some(request.to.major()) {
        return None;
    }
    let approved = match request.approved_major {
        Some(other) => format!(" (it is {other})"),
        None => String::new(),
    };
    Some(format!(
        "{} -> {} is a major upgrade and needs approval: set spec.upgrade.approvedMajorVersion to {}{approved}",
        request.from,
        request.to,
        request.to.major()
    ))
}
