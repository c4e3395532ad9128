//! Tests of the typed step records: stable names, decode once, round trips.

use strum::IntoEnumIterator;

use super::*;
use crate::controller::safety::Predicate;
use crate::controller::tests::fixtures::{V1, V1_PATCH, V2, t0, upgrade_record};

#[test]
fn every_planned_step_keeps_the_planners_name() {
    for strategy in [Strategy::Rolling, Strategy::StopTheWorld] {
        for nodes in 1..=3 {
            for step in strategy.steps(nodes) {
                assert_eq!(StepKind::from(step).as_str(), step.action(), "{step:?}");
            }
        }
    }
}

#[test]
fn every_name_decodes_to_its_own_kind_and_state() {
    for kind in StepKind::iter() {
        assert_eq!(kind.as_str().parse::<StepKind>(), Ok(kind));
    }
    for state in StepState::iter() {
        assert_eq!(state.as_str().parse::<StepState>(), Ok(state));
    }
    for strategy in [Strategy::Rolling, Strategy::StopTheWorld] {
        assert_eq!(strategy.as_str().parse::<Strategy>(), Ok(strategy));
    }
}

#[test]
fn the_serialised_names_are_the_ones_status_has_always_used() {
    let names: Vec<&str> = StepKind::iter().map(StepKind::as_str).collect();
    assert_eq!(
        names,
        [
            "maintenance-on",
            "drain",
            "wait-tasks",
            "replace",
            "wait-ready",
            "verify-version",
            "undrain",
            "backup",
            "stop-all",
            "start-first",
            "wait-schema",
            "start-rest",
            "verify",
            "maintenance-off",
            "tentacles",
            "remove-nodes",
            "forget-node",
        ]
    );
    let states: Vec<&str> = StepState::iter().map(StepState::as_str).collect();
    assert_eq!(states, ["Pending", "Running", "Done"]);
}

#[test]
fn a_record_round_trips_through_the_typed_upgrade() {
    for (from, to, done) in [(V1, V1_PATCH, 4), (V1, V2, 9)] {
        let mut wire = upgrade_record(from, to, 3, done, t0()).expect("planned");
        wire.stopped_reason = Some("NodeNotReady".into());
        wire.stopped_generation = Some(4);
        wire.held_by = Some(HeldBy {
            predicate: "OtherNodesServing".into(),
            message: "node octo-1 is not ready; octo-2 must wait".into(),
        });
        let typed = Upgrade::try_from(&wire).expect("decodes");
        assert_eq!(typed.stopped_reason, Some(Reason::NodeNotReady));
        assert_eq!(
            typed.held_by.as_ref().map(|h| h.predicate),
            Some(Predicate::OtherNodesServing)
        );
        assert_eq!(UpgradeStatus::from(&typed), wire);
    }
}

#[test]
fn an_unknown_name_is_an_error_naming_the_field_and_the_value() {
    let base = upgrade_record(V1, V2, 3, 2, t0()).expect("planned");
    type Edit = fn(&mut UpgradeStatus);
    let cases: [(&str, Edit); 5] = [
        ("steps[3].action", |u| u.steps[3].action = "rollback".into()),
        ("steps[0].state", |u| u.steps[0].state = "Skipped".into()),
        ("step", |u| u.step = Some("rollback".into())),
        ("strategy", |u| u.strategy = Some("blue-green".into())),
        ("stoppedReason", |u| {
            u.stopped_reason = Some("RollbackFailed".into());
        }),
    ];
    for (field, edit) in cases {
        let mut wire = base.clone();
        edit(&mut wire);
        let err = Upgrade::try_from(&wire).expect_err(field);
        assert_eq!(err.field, field);
        let message = err.to_string();
        assert!(
            message.contains(&format!("status.upgrade.{field}")),
            "{message}"
        );
        assert!(message.contains(&err.value), "{message}");
    }
}

#[test]
fn the_crd_documents_every_step_name() {
    let schema = serde_json::to_value(schemars::schema_for!(StepStatus)).expect("a schema");
    let documents = |field: &str, names: Vec<&str>| {
        let doc = schema["properties"][field]["description"]
            .as_str()
            .unwrap_or_default();
        for name in names {
            assert!(
                doc.contains(&format!("`{name}`")),
                "{field}: {name} missing in {doc:?}"
            );
        }
    };
    documents("action", StepKind::iter().map(StepKind::as_str).collect());
    documents("state", StepState::iter().map(StepState::as_str).collect());
}
