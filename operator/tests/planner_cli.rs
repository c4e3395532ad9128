//! `octopus-operator plan` as scripts see it: the built binary, its JSON and exit codes.

use std::process::{Command, Output};

fn plan(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_octopus-operator"))
        .arg("plan")
        .args(args)
        .output()
        .expect("the binary runs")
}

fn json(args: &[&str]) -> serde_json::Value {
    let out = plan(args);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(out.stderr.is_empty(), "{out:?}");
    let stdout = String::from_utf8(out.stdout).expect("utf-8");
    assert_eq!(
        stdout.lines().count(),
        1,
        "one JSON object on one line: {stdout}"
    );
    serde_json::from_str(&stdout).expect("stdout is JSON")
}

#[test]
fn minor_upgrade_prints_the_contract() {
    let plan = json(&["--from", "2018.1.4", "--to", "2018.2.1", "-o", "json"]);
    assert_eq!(plan["from"], "2018.1.4");
    assert_eq!(plan["to"], "2018.2.1");
    assert_eq!(plan["change"], "minor");
    assert_eq!(plan["allowed"], true);
    assert_eq!(plan["reason"], serde_json::Value::Null);
    assert_eq!(plan["message"], serde_json::Value::Null);
    assert_eq!(plan["strategy"], "stop-the-world");
    assert_eq!(plan["backupRequired"], true);
    assert_eq!(plan["path"], serde_json::json!(["2018.1.4", "2018.2.1"]));
    assert_eq!(
        plan["steps"][0],
        serde_json::json!({"action": "maintenance-on"})
    );
    assert_eq!(
        plan["steps"][1],
        serde_json::json!({"action": "drain", "node": 0})
    );
    let drains = plan["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .filter(|s| s["action"] == "drain")
        .count();
    assert_eq!(drains, 3, "default --nodes is 3");
}

#[test]
fn blocked_changes_exit_zero_with_a_reason_and_no_steps() {
    for (from, to, reason) in [
        ("2023.1.1", "2024.1.1", "MajorUpgradeNotApproved"),
        ("2018.2.1", "2018.1.4", "DowngradeRequiresRestore"),
        ("2.5.0", "3.0.0", "UnsupportedUpgradePath"),
        ("2021.3.12912", "2022.1.3000", "KnownBadUpgradePath"),
    ] {
        let plan = json(&["--from", from, "--to", to, "-o", "json"]);
        assert_eq!(plan["allowed"], false, "{plan}");
        assert_eq!(plan["reason"], reason, "{plan}");
        assert_eq!(plan["steps"], serde_json::json!([]), "{plan}");
        assert!(
            plan["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{plan}"
        );
    }
    let hop = json(&["--from", "2.5.0", "--to", "3.0.0", "-o", "json"]);
    assert_eq!(hop["path"], serde_json::json!(["2.5.0", "2.6.5", "3.0.0"]));
    // A known bad path with a chain of hops (OctopusDeploy/Issues#4509): the path lists
    // them and the message names them.
    let chain = json(&["--from", "3.3.8", "--to", "2018.4.3", "-o", "json"]);
    assert_eq!(chain["reason"], "KnownBadUpgradePath", "{chain}");
    assert_eq!(
        chain["path"],
        serde_json::json!(["3.3.8", "3.4.15", "3.17.14", "2018.4.3"])
    );
    let message = chain["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("3.3.8 -> 3.4.15 -> 3.17.14 -> 2018.4.3"),
        "{message}"
    );
    assert!(message.contains("OctopusDeploy/Issues#4509"), "{message}");
}

#[test]
fn approve_major_approves_the_target_major() {
    let plan = json(&[
        "--from",
        "2023.1.1",
        "--to",
        "2024.1.1",
        "--approve-major",
        "--nodes",
        "2",
        "-o",
        "json",
    ]);
    assert_eq!(plan["allowed"], true, "{plan}");
    assert_eq!(plan["change"], "major");
    assert_eq!(plan["steps"].as_array().map(Vec::len), Some(13), "{plan}");
}

#[test]
fn patch_rolls_node_by_node() {
    let plan = json(&[
        "--from", "2024.1.1", "--to", "2024.1.2", "--nodes", "1", "-o", "json",
    ]);
    assert_eq!(plan["strategy"], "rolling");
    assert_eq!(plan["backupRequired"], false);
    assert_eq!(
        plan["steps"],
        serde_json::json!([
            {"action": "drain", "node": 0},
            {"action": "wait-tasks", "node": 0},
            {"action": "replace", "node": 0},
            {"action": "wait-ready", "node": 0},
            {"action": "verify-version", "node": 0},
            {"action": "undrain", "node": 0},
        ])
    );
}

#[test]
fn unparsable_versions_exit_two_naming_the_value() {
    for (args, bad) in [
        (["--from", "latest", "--to", "2024.1.1"], "\"latest\""),
        (["--from", "2024.1.1", "--to", "v2024.1.1"], "\"v2024.1.1\""),
        (["--from", "2024", "--to", "2024.1.1"], "\"2024\""),
        (["--from", "2024.1.1", "--to", ""], "empty"),
    ] {
        for output in [&["-o", "json"][..], &[]] {
            let out = plan(&[&args[..], output].concat());
            assert_eq!(out.status.code(), Some(2), "{out:?}");
            assert!(out.stdout.is_empty(), "{out:?}");
            let stderr = String::from_utf8(out.stderr).expect("utf-8");
            assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
            assert!(stderr.contains(bad), "names {bad}: {stderr}");
        }
    }
}

#[test]
fn table_is_the_default_output() {
    let out = plan(&["--from", "2018.1.4", "--to", "2018.2.1"]);
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8(out.stdout).expect("utf-8");
    assert!(
        stdout.starts_with("Upgrade plan 2018.1.4 -> 2018.2.1"),
        "{stdout}"
    );
    assert!(stdout.contains("stop-the-world"), "{stdout}");
    assert!(stdout.contains("maintenance-off"), "{stdout}");
}
