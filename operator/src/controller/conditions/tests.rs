//! Tests of the condition merge.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use proptest::prelude::*;

use super::*;
use strum::IntoEnumIterator;

use crate::controller::reason::Reason;
use crate::controller::tests::fixtures::{after, t0};

fn want(status: bool, reason: Reason) -> CondWant {
    CondWant {
        type_: READY,
        status,
        reason,
        message: String::new(),
    }
}

#[test]
fn transition_time_moves_only_when_status_flips() {
    let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
    let t1: Timestamp = "2026-01-01T00:05:00Z".parse().unwrap();
    let t2: Timestamp = "2026-01-01T00:10:00Z".parse().unwrap();
    let first = merge(&[], &[want(false, Reason::Creating)], 1, t0);
    assert_eq!(first[0].last_transition_time, Time(t0));
    // Same status, new reason: the time stays.
    let second = merge(&first, &[want(false, Reason::NodesNotReady)], 2, t1);
    assert_eq!(second[0].last_transition_time, Time(t0));
    assert_eq!(second[0].reason, "NodesNotReady");
    assert_eq!(second[0].observed_generation, Some(2));
    // Flip: the time moves.
    let third = merge(&second, &[want(true, Reason::Ready)], 2, t2);
    assert_eq!(third[0].last_transition_time, Time(t2));
    assert!(is_true(&third, READY));
}

fn cw(type_: &'static str, status: bool, reason: Reason) -> CondWant {
    CondWant {
        type_,
        status,
        reason,
        message: format!("{reason} message"),
    }
}

#[test]
fn merge_keeps_the_transition_time_unless_the_status_flips() {
    let t1 = after(t0(), 60);
    let t2 = after(t0(), 120);
    let first = merge(
        &[],
        &[
            cw(READY, false, Reason::Creating),
            cw(PAUSED, false, Reason::NotPaused),
        ],
        1,
        t0(),
    );
    assert_eq!(first.len(), 2);
    assert!(first.iter().all(|c| c.last_transition_time == Time(t0())));
    assert_eq!(first[0].status, "False");
    assert_eq!(first[0].observed_generation, Some(1));

    // Same status, new reason, message and generation: the time stays, the rest moves.
    let second = merge(
        &first,
        &[
            cw(READY, false, Reason::NodesNotReady),
            cw(PAUSED, false, Reason::NotPaused),
        ],
        2,
        t1,
    );
    assert_eq!(second[0].last_transition_time, Time(t0()));
    assert_eq!(second[0].reason, "NodesNotReady");
    assert_eq!(second[0].message, "NodesNotReady message");
    assert_eq!(second[0].observed_generation, Some(2));
    assert_eq!(second[1].last_transition_time, Time(t0()));

    // A flip moves only the flipped condition's time.
    let third = merge(
        &second,
        &[
            cw(READY, true, Reason::Ready),
            cw(PAUSED, false, Reason::NotPaused),
        ],
        2,
        t2,
    );
    assert_eq!(third[0].last_transition_time, Time(t2));
    assert_eq!(third[0].status, "True");
    assert_eq!(third[1].last_transition_time, Time(t0()));
    assert!(is_true(&third, READY));
    assert!(!is_true(&third, PAUSED));
    assert!(!is_true(&third, DEGRADED));
}

#[test]
fn merge_follows_the_wanted_list_and_ignores_unknown_previous_conditions() {
    let stale = Condition {
        type_: "Available".into(),
        status: "True".into(),
        reason: "Old".into(),
        message: String::new(),
        observed_generation: Some(1),
        last_transition_time: Time(t0()),
    };
    let merged = merge(
        &[stale],
        &[
            cw(DEGRADED, true, Reason::BackupFailed),
            cw(READY, false, Reason::Upgrading),
        ],
        3,
        after(t0(), 60),
    );
    let types: Vec<&str> = merged.iter().map(|c| c.type_.as_str()).collect();
    assert_eq!(types, [DEGRADED, READY]);
    assert!(
        merged
            .iter()
            .all(|c| c.last_transition_time == Time(after(t0(), 60)))
    );
}

#[test]
fn conditions_survive_a_status_round_trip_through_json() {
    // What the API server stores and hands back must merge the same way.
    let merged = merge(&[], &[cw(READY, true, Reason::Ready)], 1, t0());
    let json = serde_json::to_string(&merged).expect("serialise");
    let back: Vec<Condition> = serde_json::from_str(&json).expect("parse");
    let again = merge(
        &back,
        &[cw(READY, true, Reason::Ready)],
        2,
        after(t0(), 600),
    );
    assert_eq!(again[0].last_transition_time, Time(t0()));
}

proptest! {
    #[test]
    fn prop_transition_time_is_the_time_of_the_last_flip(
        statuses in prop::collection::vec(any::<bool>(), 1..30),
    ) {
        let mut previous = Vec::new();
        let mut last_flip = t0();
        let mut last_status = None;
        for (i, status) in statuses.iter().enumerate() {
            let now = after(t0(), i64::try_from(i).unwrap_or(0) * 60);
            if last_status != Some(*status) {
                last_flip = now;
                last_status = Some(*status);
            }
            let generation = i64::try_from(i).unwrap_or(0);
            // A different reason each time: the merge copies the wanted one.
            let reason = Reason::iter().nth(i).unwrap_or(Reason::Ready);
            previous = merge(
                &previous,
                &[cw(READY, *status, reason)],
                generation,
                now,
            );
            prop_assert_eq!(previous.len(), 1);
            prop_assert_eq!(&previous[0].last_transition_time, &Time(last_flip));
            prop_assert_eq!(previous[0].reason.as_str(), reason.as_str());
            prop_assert_eq!(previous[0].observed_generation, Some(generation));
        }
    }
}
