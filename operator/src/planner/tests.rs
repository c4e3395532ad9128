//! Table-driven tests of every seed example and rule, and properties over all versions.

use proptest::prelude::{
    Just, ProptestConfig, Strategy as Gen, prop_assert, prop_assert_eq, prop_assert_ne, prop_oneof,
    proptest,
};

use super::*;
use crate::version::OctopusVersion;

fn v(s: &str) -> OctopusVersion {
    OctopusVersion::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn request(from: &str, to: &str, approved_major: Option<u64>) -> PlanRequest {
    PlanRequest {
        from: v(from),
        to: v(to),
        nodes: 3,
        approved_major,
    }
}

// ---------------------------------------------------------------- classification

#[test]
fn seed_examples_classify_as_the_docs_say() {
    use ChangeKind::*;
    for (from, to, kind) in [
        // "Octopus 2018.1.2 to Octopus 2018.1.4 (same Major.Minor but different Patch)"
        ("2018.1.2", "2018.1.4", Patch),
        ("2018.1.4", "2018.1.2", PatchDowngrade),
        // "Octopus 2018.1.4 to Octopus 2018.2.1 would be a Minor upgrade"
        ("2018.1.4", "2018.2.1", Minor),
        ("2018.2.1", "2018.1.4", MinorDowngrade),
        // "Octopus 3.6.5 to Octopus 2018.1.4 would be a Major upgrade"
        ("3.6.5", "2018.1.4", Major),
        ("2018.1.4", "3.6.5", MajorDowngrade),
        ("2024.1.12345", "2024.1.12345", None),
        ("2.6.5.1010", "2.6.5.1010", None),
        // The pre-3.0 build part is below the patch: a patch move.
        ("2.6.5.1000", "2.6.5.1010", Patch),
        ("2.6.5", "2.6.5.1010", Patch),
        ("2.6.4.900", "2.6.5.1", Patch),
        ("2.5.0", "2.6.5", Minor),
        ("2.6.5.1010", "3.0.0", Major),
        // A larger patch on a lower minor is still a minor downgrade.
        ("2024.2.1", "2024.1.99999", MinorDowngrade),
    ] {
        assert_eq!(classify(&v(from), &v(to)), kind, "{from} -> {to}");
        assert_eq!(
            kind.is_schema_change(),
            !matches!(kind, None | Patch | PatchDowngrade)
        );
    }
}

#[test]
fn change_kinds_serialise_kebab_case() {
    for (kind, name) in [
        (ChangeKind::None, "none"),
        (ChangeKind::Patch, "patch"),
        (ChangeKind::Minor, "minor"),
        (ChangeKind::Major, "major"),
        (ChangeKind::PatchDowngrade, "patch-downgrade"),
        (ChangeKind::MinorDowngrade, "minor-downgrade"),
        (ChangeKind::MajorDowngrade, "major-downgrade"),
    ] {
        assert_eq!(
            serde_json::to_value(kind).ok(),
            Some(serde_json::json!(name))
        );
        assert_eq!(kind.as_str(), name);
        assert_eq!(kind.inverse().inverse(), kind);
    }
}

#[test]
fn reasons_serialise_by_their_stable_names() {
    for reason in BlockReason::ALL {
        assert_eq!(
            serde_json::to_value(reason).ok(),
            Some(serde_json::json!(reason.as_str()))
        );
    }
    let names: Vec<_> = BlockReason::ALL.iter().map(|r| r.as_str()).collect();
    assert_eq!(
        names,
        [
            "InvalidVersion",
            "UnsupportedUpgradePath",
            "KnownBadUpgradePath",
            "DowngradeRequiresRestore",
            "MajorUpgradeNotApproved"
        ]
    );
    let mut sorted = BlockReason::ALL;
    sorted.sort();
    assert_eq!(sorted, BlockReason::ALL, "Ord is precedence order");
}

#[test]
fn invalid_version_message_names_the_value() {
    let err = OctopusVersion::parse("latest").expect_err("latest is not a version");
    let message = invalid_version_message(&err);
    assert!(message.contains("\"latest\""), "{message}");
    assert!(message.contains("spec.version"), "{message}");
}

// ---------------------------------------------------------------- rules, one table

/// What a plan must look like: (from, to, approved major, change, outcome).
enum Outcome {
    Rolling,
    StopTheWorld,
    Nothing,
    Blocked(BlockReason, &'static [&'static str]),
}

#[test]
fn every_rule_decides_as_documented() {
    use BlockReason::*;
    use ChangeKind as K;
    use Outcome::*;
    let cases: &[(&str, &str, Option<u64>, ChangeKind, Outcome)] = &[
        // Patches move freely in both directions (seed: 3.4.2, 3.4.10, 3.4.12).
        ("2018.1.2", "2018.1.4", None, K::Patch, Rolling),
        ("2018.1.4", "2018.1.2", None, K::PatchDowngrade, Rolling),
        ("3.4.2", "3.4.10", None, K::Patch, Rolling),
        ("3.4.2", "3.4.12", None, K::Patch, Rolling),
        ("3.4.10", "3.4.12", None, K::Patch, Rolling),
        ("3.4.12", "3.4.2", None, K::PatchDowngrade, Rolling),
        ("3.4.12", "3.4.10", None, K::PatchDowngrade, Rolling),
        ("3.4.10", "3.4.2", None, K::PatchDowngrade, Rolling),
        ("2.6.5.1000", "2.6.5.1010", None, K::Patch, Rolling),
        // Minor upgrades stop the world and back up; no approval needed.
        ("2018.1.4", "2018.2.1", None, K::Minor, StopTheWorld),
        ("2.5.0", "2.6.5", None, K::Minor, StopTheWorld),
        // Major upgrades need approval of exactly the target major.
        (
            "3.6.5",
            "2018.1.4",
            None,
            K::Major,
            Blocked(MajorUpgradeNotApproved, &[]),
        ),
        (
            "3.6.5",
            "2018.1.4",
            Some(2019),
            K::Major,
            Blocked(MajorUpgradeNotApproved, &[]),
        ),
        (
            "3.6.5",
            "2018.1.4",
            Some(3),
            K::Major,
            Blocked(MajorUpgradeNotApproved, &[]),
        ),
        ("3.6.5", "2018.1.4", Some(2018), K::Major, StopTheWorld),
        (
            "2023.4.1",
            "2024.1.12345",
            Some(2024),
            K::Major,
            StopTheWorld,
        ),
        // An approval has no effect on anything but a major upgrade.
        ("2018.1.4", "2018.2.1", Some(2025), K::Minor, StopTheWorld),
        // Going back across a schema change needs a restore.
        (
            "2018.2.1",
            "2018.1.4",
            None,
            K::MinorDowngrade,
            Blocked(DowngradeRequiresRestore, &[]),
        ),
        (
            "2018.1.4",
            "3.6.5",
            Some(3),
            K::MajorDowngrade,
            Blocked(DowngradeRequiresRestore, &[]),
        ),
        (
            "3.0.0",
            "2.6.5.1010",
            None,
            K::MajorDowngrade,
            Blocked(DowngradeRequiresRestore, &[]),
        ),
        // Legacy: 3.x only from 2.6.5; older goes to 2.6.5 first.
        (
            "2.5.0",
            "3.0.0",
            Some(3),
            K::Major,
            Blocked(UnsupportedUpgradePath, &["2.5.0", "2.6.5", "3.0.0"]),
        ),
        (
            "2.6.4.1000",
            "3.4.12",
            Some(3),
            K::Major,
            Blocked(UnsupportedUpgradePath, &["2.6.4.1000", "2.6.5", "3.4.12"]),
        ),
        ("2.6.5", "3.0.0", Some(3), K::Major, StopTheWorld),
        ("2.6.5.1010", "3.17.14", Some(3), K::Major, StopTheWorld),
        (
            "2.6.5.1010",
            "2018.10.0",
            Some(2018),
            K::Major,
            StopTheWorld,
        ),
        // ... and after 2018.10 LTS only through 2018.10 LTS.
        (
            "2.6.5.1010",
            "2024.1.12345",
            Some(2024),
            K::Major,
            Blocked(
                UnsupportedUpgradePath,
                &["2.6.5.1010", "2018.10.0", "2024.1.12345"],
            ),
        ),
        (
            "2.5.0",
            "2024.1.12345",
            Some(2024),
            K::Major,
            Blocked(
                UnsupportedUpgradePath,
                &["2.5.0", "2.6.5", "2018.10.0", "2024.1.12345"],
            ),
        ),
        // 1.x goes to 1.6 before 2.x.
        (
            "1.5.0",
            "2.0.0",
            Some(2),
            K::Major,
            Blocked(UnsupportedUpgradePath, &["1.5.0", "1.6.0", "2.0.0"]),
        ),
        (
            "1.2.0",
            "3.0.0",
            Some(3),
            K::Major,
            Blocked(
                UnsupportedUpgradePath,
                &["1.2.0", "1.6.0", "2.6.5", "3.0.0"],
            ),
        ),
        ("1.6.3.1723", "2.6.5.1010", Some(2), K::Major, StopTheWorld),
        // Modern versions reach any newer version directly.
        ("3.0.0", "2024.1.12345", Some(2024), K::Major, StopTheWorld),
        // OctopusDeploy/Issues#7790, each affected line at and below its fix.
        (
            "2021.3.12912",
            "2022.1.3276",
            Some(2022),
            K::Major,
            Blocked(KnownBadUpgradePath, &[]),
        ),
        (
            "2021.3.12912",
            "2022.1.3277",
            Some(2022),
            K::Major,
            StopTheWorld,
        ),
        (
            "2021.3.12911",
            "2022.1.3276",
            Some(2022),
            K::Major,
            StopTheWorld,
        ),
        (
            "2021.4.100",
            "2022.2.8551",
            Some(2022),
            K::Major,
            Blocked(KnownBadUpgradePath, &[]),
        ),
        (
            "2022.1.3300",
            "2022.2.8551",
            None,
            K::Minor,
            Blocked(KnownBadUpgradePath, &[]),
        ),
        ("2022.1.3300", "2022.2.8552", None, K::Minor, StopTheWorld),
        (
            "2022.2.9000",
            "2022.3.10779",
            None,
            K::Minor,
            Blocked(KnownBadUpgradePath, &[]),
        ),
        (
            "2022.3.10780",
            "2022.4.8150",
            None,
            K::Minor,
            Blocked(KnownBadUpgradePath, &[]),
        ),
        (
            "2022.4.8151",
            "2023.1.1159",
            Some(2023),
            K::Major,
            Blocked(KnownBadUpgradePath, &[]),
        ),
        (
            "2022.4.8151",
            "2023.1.1160",
            Some(2023),
            K::Major,
            StopTheWorld,
        ),
        ("2023.1.1160", "2023.2.1", None, K::Minor, StopTheWorld),
        // The other broken paths Octopus documents (known_bad.rs), with the chain to take.
        (
            "3.3.8",
            "2018.4.3",
            Some(2018),
            K::Major,
            Blocked(
                KnownBadUpgradePath,
                &["3.3.8", "3.4.15", "3.17.14", "2018.4.3"],
            ),
        ),
        ("3.4.0", "2018.4.3", Some(2018), K::Major, StopTheWorld),
        ("3.3.8", "2018.6.0", Some(2018), K::Major, StopTheWorld),
        (
            "2.6.5.1010",
            "2018.8.6",
            Some(2018),
            K::Major,
            Blocked(
                KnownBadUpgradePath,
                &["2.6.5.1010", "2018.7.14", "2018.8.6"],
            ),
        ),
        (
            "2.5.0",
            "2018.8.6",
            Some(2018),
            K::Major,
            Blocked(
                UnsupportedUpgradePath,
                &["2.5.0", "2.6.5", "2018.7.14", "2018.8.6"],
            ),
        ),
        (
            "2.6.5.1010",
            "2018.7.14",
            Some(2018),
            K::Major,
            StopTheWorld,
        ),
        (
            "2018.5.7",
            "2018.7.0",
            None,
            K::Minor,
            Blocked(KnownBadUpgradePath, &[]),
        ),
        ("2018.6.15", "2018.7.2", None, K::Minor, StopTheWorld),
        (
            "2018.6.15",
            "2018.7.1",
            None,
            K::Minor,
            Blocked(KnownBadUpgradePath, &[]),
        ),
        (
            "3.17.14",
            "2020.5.0",
            Some(2020),
            K::Major,
            Blocked(KnownBadUpgradePath, &["3.17.14", "2020.4.0", "2020.5.0"]),
        ),
        ("2018.1.0", "2020.5.0", Some(2020), K::Major, StopTheWorld),
        ("3.17.14", "2020.5.1", Some(2020), K::Major, StopTheWorld),
        // Patch moves inside an affected line and downgrades into one are not this bug.
        ("2022.1.100", "2022.1.200", None, K::Patch, Rolling),
        (
            "2022.3.11000",
            "2022.2.100",
            None,
            K::MinorDowngrade,
            Blocked(DowngradeRequiresRestore, &[]),
        ),
        // Precedence: the first rule in the contract's order wins.
        (
            "2.5.0",
            "3.0.0",
            None,
            K::Major,
            Blocked(UnsupportedUpgradePath, &["2.5.0", "2.6.5", "3.0.0"]),
        ),
        (
            "2021.3.13000",
            "2022.1.2735",
            None,
            K::Major,
            Blocked(KnownBadUpgradePath, &[]),
        ),
        // Nothing to do.
        ("2024.1.12345", "2024.1.12345", None, K::None, Nothing),
        ("2.6.5.1010", "2.6.5.1010", Some(2), K::None, Nothing),
    ];
    for (from, to, approved, change, outcome) in cases {
        let plan = plan(&request(from, to, *approved));
        let case = format!("{from} -> {to} (approved {approved:?}): {plan:?}");
        assert_eq!(plan.change, *change, "{case}");
        assert_eq!(plan.from, v(from), "{case}");
        assert_eq!(plan.to, v(to), "{case}");
        match outcome {
            Rolling | StopTheWorld => {
                let strategy = if matches!(outcome, Rolling) {
                    Strategy::Rolling
                } else {
                    Strategy::StopTheWorld
                };
                assert!(plan.allowed, "{case}");
                assert_eq!(
                    (plan.reason, plan.message.as_deref()),
                    (None, None),
                    "{case}"
                );
                assert_eq!(plan.strategy, Some(strategy), "{case}");
                assert_eq!(
                    plan.backup_required,
                    strategy == Strategy::StopTheWorld,
                    "{case}"
                );
                assert_eq!(plan.path, [v(from), v(to)], "{case}");
                assert_eq!(plan.steps, strategy.steps(3), "{case}");
            }
            Nothing => {
                assert!(plan.allowed, "{case}");
                assert_eq!(plan.strategy, None, "{case}");
                assert!(!plan.backup_required, "{case}");
                assert_eq!(plan.path, [v(from)], "{case}");
                assert!(plan.steps.is_empty(), "{case}");
            }
            Blocked(reason, path) => {
                assert!(!plan.allowed, "{case}");
                assert_eq!(plan.reason, Some(*reason), "{case}");
                assert!(
                    plan.message.as_deref().is_some_and(|m| !m.is_empty()),
                    "{case}"
                );
                assert_eq!(plan.strategy, None, "{case}");
                assert!(!plan.backup_required, "{case}");
                assert!(plan.steps.is_empty(), "{case}");
                let want: Vec<_> = if path.is_empty() {
                    vec![v(from), v(to)]
                } else {
                    path.iter().map(|p| v(p)).collect()
                };
                assert_eq!(plan.path, want, "{case}");
            }
        }
    }
}

#[test]
fn messages_tell_the_user_what_to_do() {
    let message = |from: &str, to: &str| plan(&request(from, to, None)).message.unwrap_or_default();
    let major = message("2024.1.1", "2025.1.1");
    assert!(
        major.contains("set spec.upgrade.approvedMajorVersion to 2025"),
        "{major}"
    );
    let other = plan(&request("2024.1.1", "2025.1.1", Some(2026)))
        .message
        .unwrap_or_default();
    assert!(other.contains("to 2025 (it is 2026)"), "{other}");
    let legacy = message("2.5.0", "3.0.0");
    assert!(legacy.contains("set spec.version to 2.6.5"), "{legacy}");
    assert!(legacy.contains("2.5.0 -> 2.6.5 -> 3.0.0"), "{legacy}");
    let lts = message("2.6.5", "2024.1.1");
    assert!(
        lts.contains("set spec.version to 2018.10.0 (2018.10 LTS) first"),
        "{lts}"
    );
    let bad = message("2022.1.3300", "2022.2.8000");
    assert!(bad.contains("OctopusDeploy/Issues#7790"), "{bad}");
    assert!(bad.contains("Unexpected upgrade history detected"), "{bad}");
    assert!(bad.contains("set spec.version to 2022.2.8552"), "{bad}");
    let chain = message("3.3.8", "2018.4.3");
    assert!(chain.contains("OctopusDeploy/Issues#4509"), "{chain}");
    assert!(
        chain.contains("set spec.version to 3.4.15 first, one hop at a time along 3.3.8 -> 3.4.15 -> 3.17.14 -> 2018.4.3"),
        "{chain}"
    );
    let both = message("2018.5.7", "2018.7.0");
    assert!(both.contains("OctopusDeploy/Issues#4739"), "{both}");
    assert!(both.contains("OctopusDeploy/Issues#4742"), "{both}");
    assert!(
        both.contains("set spec.version to 2018.7.2 or a later 2018.7 patch instead"),
        "{both}"
    );
    let down = message("2018.2.1", "2018.1.4");
    assert!(
        down.contains("restore the database and Master Key"),
        "{down}"
    );
    assert!(down.contains("set spec.version back to 2018.2.1"), "{down}");
    let major_down = message("2018.1.4", "3.6.5");
    assert!(major_down.contains("file storage"), "{major_down}");
    for m in [
        major, other, legacy, lts, bad, chain, both, down, major_down,
    ] {
        assert!(!m.contains('\n'), "one line: {m}");
    }
}

#[test]
fn all_refusals_are_listed_in_precedence_order() {
    let req = request("2.5.0", "3.0.0", None);
    let reasons: Vec<_> = refusals(&req, classify(&req.from, &req.to))
        .into_iter()
        .map(|r| r.reason)
        .collect();
    assert_eq!(
        reasons,
        [
            BlockReason::UnsupportedUpgradePath,
            BlockReason::MajorUpgradeNotApproved
        ]
    );
}

// ---------------------------------------------------------------- steps and JSON

#[test]
fn rolling_steps_go_node_by_node_from_the_highest_ordinal() {
    let actions: Vec<String> = Strategy::Rolling
        .steps(2)
        .iter()
        .map(|s| {
            format!(
                "{}:{}",
                s.action(),
                s.node().map_or("-".into(), |n| n.to_string())
            )
        })
        .collect();
    assert_eq!(
        actions,
        [
            "drain:1",
            "wait-tasks:1",
            "replace:1",
            "wait-ready:1",
            "verify-version:1",
            "undrain:1",
            "drain:0",
            "wait-tasks:0",
            "replace:0",
            "wait-ready:0",
            "verify-version:0",
            "undrain:0",
        ]
    );
}

#[test]
fn stop_the_world_follows_octopus_ha_procedure() {
    let actions: Vec<String> = Strategy::StopTheWorld
        .steps(2)
        .iter()
        .map(|s| {
            format!(
                "{}:{}",
                s.action(),
                s.node().map_or("-".into(), |n| n.to_string())
            )
        })
        .collect();
    assert_eq!(
        actions,
        [
            "maintenance-on:-",
            "drain:0",
            "drain:1",
            "wait-tasks:-",
            "backup:-",
            "stop-all:-",
            "start-first:0",
            "wait-schema:-",
            "undrain:0",
            "maintenance-off:-",
            "start-rest:-",
            "verify:-",
            "undrain:1",
        ]
    );
    assert!(!Strategy::StopTheWorld.steps(1).contains(&Step::StartRest));
    assert_eq!(
        Strategy::StopTheWorld.steps(0),
        Strategy::StopTheWorld.steps(1)
    );
}

#[test]
fn json_matches_the_cli_contract() {
    let json = serde_json::to_value(plan(&request("2018.1.4", "2018.2.1", None))).expect("json");
    let object = json.as_object().expect("an object");
    let keys: Vec<_> = object.keys().map(String::as_str).collect();
    let mut want = vec![
        "from",
        "to",
        "change",
        "allowed",
        "reason",
        "message",
        "strategy",
        "backupRequired",
        "path",
        "steps",
    ];
    want.sort_unstable();
    let mut got = keys.clone();
    got.sort_unstable();
    assert_eq!(got, want);
    assert_eq!(json["from"], "2018.1.4");
    assert_eq!(json["change"], "minor");
    assert_eq!(json["allowed"], true);
    assert_eq!(json["reason"], serde_json::Value::Null);
    assert_eq!(json["strategy"], "stop-the-world");
    assert_eq!(json["backupRequired"], true);
    assert_eq!(json["path"], serde_json::json!(["2018.1.4", "2018.2.1"]));
    assert_eq!(
        json["steps"][0],
        serde_json::json!({"action": "maintenance-on"})
    );
    assert_eq!(
        json["steps"][1],
        serde_json::json!({"action": "drain", "node": 0})
    );
    assert_eq!(
        json["steps"][4],
        serde_json::json!({"action": "wait-tasks"})
    );

    let blocked = serde_json::to_value(plan(&request("2023.1.1", "2024.1.1", None))).expect("json");
    assert_eq!(blocked["allowed"], false);
    assert_eq!(blocked["reason"], "MajorUpgradeNotApproved");
    assert_eq!(blocked["strategy"], serde_json::Value::Null);
    assert_eq!(blocked["steps"], serde_json::json!([]));

    let rolling = serde_json::to_value(plan(&request("2024.1.1", "2024.1.2", None))).expect("json");
    assert_eq!(
        rolling["steps"][1],
        serde_json::json!({"action": "wait-tasks", "node": 2})
    );
    let back: Plan = serde_json::from_value(rolling.clone()).expect("round-trips");
    assert_eq!(serde_json::to_value(back).ok(), Some(rolling));
}

#[test]
fn table_shows_the_same_plan() {
    let allowed = table::render(&plan(&request("2018.1.4", "2018.2.1", None)));
    assert!(allowed.contains("stop-the-world"), "{allowed}");
    assert!(allowed.contains("maintenance-on"), "{allowed}");
    assert!(allowed.contains("2018.1.4 -> 2018.2.1"), "{allowed}");
    let blocked = table::render(&plan(&request("2018.2.1", "2018.1.4", None)));
    assert!(
        blocked.contains("no: DowngradeRequiresRestore"),
        "{blocked}"
    );
    assert!(blocked.contains("none: blocked"), "{blocked}");
    assert!(!blocked.contains("ACTION"), "{blocked}");
}

// ---------------------------------------------------------------- a model of the cluster

/// Which version a node's process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Running {
    Old,
    New,
    Stopped,
}

#[derive(Debug, Clone, Copy)]
struct Node {
    running: Running,
    ready: bool,
    drained: bool,
}

impl Node {
    /// Serving users and tasks.
    fn in_service(self) -> bool {
        self.running != Running::Stopped && self.ready && !self.drained
    }
}

/// What happened while the steps ran, for the properties to judge.
#[derive(Debug, Default)]
struct Trace {
    max_out_of_service: usize,
    backed_up_before_first_stop: Option<bool>,
    new_started_while_old_ran: bool,
    final_all_new_ready_undrained: bool,
    maintenance_left_on: bool,
}

/// Runs `steps` on a model of `n` nodes that all start on the old version, ready and
/// undrained. Nodes become ready only when a step waits for them.
fn simulate(steps: &[Step], n: u32) -> Trace {
    let mut nodes = vec![
        Node {
            running: Running::Old,
            ready: true,
            drained: false
        };
        n as usize
    ];
    let mut trace = Trace::default();
    let mut backed_up = false;
    let mut maintenance = false;
    let mut first_stop_seen = false;
    let mut stop = |backed_up: bool, trace: &mut Trace| {
        if !first_stop_seen {
            first_stop_seen = true;
            trace.backed_up_before_first_stop = Some(backed_up);
        }
    };
    let start_new = |nodes: &mut Vec<Node>, i: usize, trace: &mut Trace| {
        if nodes
            .iter()
            .enumerate()
            .any(|(j, other)| j != i && other.running == Running::Old)
        {
            trace.new_started_while_old_ran = true;
        }
        nodes[i].running = Running::New;
        nodes[i].ready = false;
    };
    for step in steps {
        match *step {
            Step::MaintenanceOn => maintenance = true,
            Step::MaintenanceOff => maintenance = false,
            Step::Drain { node } => nodes[node as usize].drained = true,
            Step::Undrain { node } => nodes[node as usize].drained = false,
            Step::WaitTasks { .. } | Step::VerifyVersion { .. } => {}
            Step::Backup => backed_up = true,
            Step::Replace { node } => {
                stop(backed_up, &mut trace);
                nodes[node as usize].running = Running::Stopped;
                start_new(&mut nodes, node as usize, &mut trace);
            }
            Step::WaitReady { node } => nodes[node as usize].ready = true,
            Step::StopAll => {
                stop(backed_up, &mut trace);
                for node in &mut nodes {
                    node.running = Running::Stopped;
                    node.ready = false;
                }
            }
            Step::StartFirst { node } => start_new(&mut nodes, node as usize, &mut trace),
            Step::WaitSchema => nodes[0].ready = true,
            Step::StartRest => {
                for i in 1..nodes.len() {
                    start_new(&mut nodes, i, &mut trace);
                }
            }
            Step::Verify => {
                for node in &mut nodes {
                    node.ready = node.running == Running::New;
                }
            }
        }
        let out = nodes.iter().filter(|node| !node.in_service()).count();
        trace.max_out_of_service = trace.max_out_of_service.max(out);
    }
    trace.final_all_new_ready_undrained = nodes
        .iter()
        .all(|node| node.running == Running::New && node.ready && !node.drained);
    trace.maintenance_left_on = maintenance;
    trace
}

#[test]
fn the_model_catches_bad_plans() {
    // A roll that drains two nodes at once, and a schema change that starts node 0 before
    // stopping the others and backs up too late: the properties below must see both.
    let two_down = [
        Step::Drain { node: 0 },
        Step::Drain { node: 1 },
        Step::Replace { node: 0 },
    ];
    assert_eq!(simulate(&two_down, 3).max_out_of_service, 2);
    let mixed = [Step::StartFirst { node: 0 }, Step::StopAll, Step::Backup];
    let trace = simulate(&mixed, 3);
    assert!(trace.new_started_while_old_ran);
    assert_eq!(trace.backed_up_before_first_stop, Some(false));
}

// ---------------------------------------------------------------- properties

/// Versions around every boundary the rules care about, and anything else.
fn any_version() -> impl Gen<Value = OctopusVersion> {
    let landmarks = [
        "1.5.0",
        "1.6.0",
        "1.6.3.1723",
        "2.0.0",
        "2.5.0",
        "2.6.4.999",
        "2.6.5",
        "2.6.5.1010",
        "3.0.0",
        "3.3.8",
        "3.4.0",
        "3.4.12",
        "3.4.15",
        "3.17.14",
        "2018.1.4",
        "2018.4.0",
        "2018.5.4",
        "2018.5.5",
        "2018.5.7",
        "2018.5.8",
        "2018.7.0",
        "2018.7.1",
        "2018.7.2",
        "2018.7.14",
        "2018.8.0",
        "2018.8.11",
        "2018.8.12",
        "2018.10.0",
        "2018.10.5",
        "2018.11.0",
        "2020.4.0",
        "2020.5.0",
        "2020.5.1",
        "2021.3.12911",
        "2021.3.12912",
        "2021.4.1",
        "2022.1.2734",
        "2022.1.2735",
        "2022.1.3276",
        "2022.1.3277",
        "2022.2.8551",
        "2022.2.8552",
        "2022.3.10779",
        "2022.3.10780",
        "2022.4.8150",
        "2022.4.8151",
        "2023.1.1159",
        "2023.1.1160",
        "2023.2.9755",
        "2024.1.12345",
        "2025.1.1",
    ]
    .map(v);
    prop_oneof![
        proptest::sample::select(landmarks.to_vec()),
        (0u64..3, 0u64..8, 0u64..8, proptest::option::of(0u64..2000)).prop_map(|(a, b, c, d)| {
            match d {
                Some(d) => v(&format!("{a}.{b}.{c}.{d}")),
                None => OctopusVersion::new(a, b, c),
            }
        }),
        (
            prop_oneof![Just(3u64), Just(4), 2018u64..2027],
            0u64..5,
            0u64..20_000
        )
            .prop_map(|(a, b, c)| OctopusVersion::new(a, b, c)),
    ]
}

fn any_request() -> impl Gen<Value = PlanRequest> {
    (any_version(), any_version(), 1u32..=10, 0u8..3, 0u64..2030).prop_map(
        |(from, to, nodes, approval, other)| {
            let approved_major = match approval {
                0 => None,
                1 => Some(to.major()),
                _ => Some(other),
            };
            PlanRequest {
                from,
                to,
                nodes,
                approved_major,
            }
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn rolling_never_takes_two_nodes_out_of_service(req in any_request()) {
        let plan = plan(&req);
        if plan.strategy == Some(Strategy::Rolling) {
            let trace = simulate(&plan.steps, req.nodes);
            prop_assert!(trace.max_out_of_service <= 1, "{trace:?} for {plan:?}");
        }
    }

    #[test]
    fn schema_changes_back_up_before_the_first_stop(req in any_request()) {
        let plan = plan(&req);
        if plan.allowed && plan.change.is_schema_change() {
            prop_assert!(plan.backup_required);
            let trace = simulate(&plan.steps, req.nodes);
            prop_assert_eq!(trace.backed_up_before_first_stop, Some(true), "{:?}", plan);
        }
    }

    #[test]
    fn no_new_node_starts_while_an_old_one_runs_across_a_schema_change(req in any_request()) {
        let plan = plan(&req);
        if plan.change.is_schema_change() {
            let trace = simulate(&plan.steps, req.nodes);
            prop_assert!(!trace.new_started_while_old_ran, "{plan:?}");
        }
    }

    #[test]
    fn blocked_plans_have_no_steps(req in any_request()) {
        let plan = plan(&req);
        prop_assert_eq!(plan.allowed, plan.reason.is_none());
        prop_assert_eq!(plan.allowed, plan.message.is_none());
        if !plan.allowed {
            prop_assert!(plan.steps.is_empty());
            prop_assert!(plan.strategy.is_none());
            prop_assert!(!plan.backup_required);
        }
    }

    #[test]
    fn allowed_changes_end_with_every_node_on_the_new_version(req in any_request()) {
        let plan = plan(&req);
        if plan.allowed && plan.change != ChangeKind::None {
            let trace = simulate(&plan.steps, req.nodes);
            prop_assert!(trace.final_all_new_ready_undrained, "{plan:?}");
            prop_assert!(!trace.maintenance_left_on, "{plan:?}");
            prop_assert_eq!(plan.strategy, Strategy::for_change(plan.change));
        }
    }

    #[test]
    fn paths_run_from_from_to_to_and_only_upwards(req in any_request()) {
        let plan = plan(&req);
        prop_assert_eq!(plan.path.first(), Some(&req.from));
        prop_assert_eq!(plan.path.last(), Some(&req.to));
        if plan.path.len() > 2 {
            prop_assert!(
                matches!(
                    plan.reason,
                    Some(BlockReason::UnsupportedUpgradePath | BlockReason::KnownBadUpgradePath)
                ),
                "{:?}",
                plan
            );
            prop_assert!(plan.path.windows(2).all(|w| w[0] < w[1]), "{:?}", plan.path);
        }
    }

    #[test]
    fn planning_is_deterministic(req in any_request()) {
        prop_assert_eq!(plan(&req), plan(&req));
    }

    #[test]
    fn classify_is_antisymmetric(a in any_version(), b in any_version()) {
        let up = classify(&a, &b);
        prop_assert_eq!(classify(&b, &a), up.inverse());
        prop_assert_eq!(up == ChangeKind::None, a == b);
        prop_assert_eq!(up.is_downgrade(), b < a);
        prop_assert_eq!(up.is_schema_change(), a.schema_line() != b.schema_line());
    }

    #[test]
    fn only_downgrades_of_schema_need_a_restore(req in any_request()) {
        let plan = plan(&req);
        let restore = plan.reason == Some(BlockReason::DowngradeRequiresRestore);
        prop_assert_eq!(
            restore,
            matches!(plan.change, ChangeKind::MinorDowngrade | ChangeKind::MajorDowngrade)
        );
    }

    #[test]
    fn an_approved_major_is_never_refused_for_approval(req in any_request()) {
        let approved = PlanRequest { approved_major: Some(req.to.major()), ..req };
        prop_assert_ne!(plan(&approved).reason, Some(BlockReason::MajorUpgradeNotApproved));
    }
}
