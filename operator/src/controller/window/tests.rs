//! Tests of the maintenance window.

use jiff::Timestamp;
use proptest::prelude::*;

use super::*;
use crate::controller::tests::fixtures::{after, minutes, t0, ts};

fn window(days: Vec<Weekday>, start: &str, hours: u64, tz: &str) -> MaintenanceWindow {
    MaintenanceWindow {
        days,
        start: start.into(),
        duration: std::time::Duration::from_secs(hours * 3600).into(),
        time_zone: tz.into(),
    }
}

fn at(s: &str) -> Timestamp {
    s.parse().expect("timestamp")
}

#[test]
fn saturday_night_in_berlin() {
    let w = window(vec![Weekday::Saturday], "22:00", 4, "Europe/Berlin");
    // 2026-11-21 is a Saturday; Berlin is UTC+1 in November.
    assert!(!is_open(&w, at("2026-11-21T20:59:00Z")).unwrap());
    assert!(is_open(&w, at("2026-11-21T21:00:00Z")).unwrap());
    // Past midnight, Sunday local time, still inside the opening that began Saturday.
    assert!(is_open(&w, at("2026-11-22T00:30:00Z")).unwrap());
    assert!(!is_open(&w, at("2026-11-22T01:00:00Z")).unwrap());
    // Another day of the week at the same hour is closed.
    assert!(!is_open(&w, at("2026-11-18T21:30:00Z")).unwrap());
}

#[test]
fn no_days_means_every_day() {
    let w = window(vec![], "02:00", 1, "UTC");
    assert!(is_open(&w, at("2026-11-18T02:30:00Z")).unwrap());
    assert!(!is_open(&w, at("2026-11-18T03:00:00Z")).unwrap());
}

#[test]
fn unknown_time_zone_is_an_error_naming_it() {
    let w = window(vec![], "02:00", 1, "Mars/Olympus");
    let err = is_open(&w, at("2026-11-18T02:30:00Z")).unwrap_err();
    assert!(err.to_string().contains("Mars/Olympus"));
}

fn window_of(
    days: Vec<Weekday>,
    start: &str,
    duration_minutes: u64,
    tz: &str,
) -> MaintenanceWindow {
    MaintenanceWindow {
        days,
        start: start.into(),
        duration: minutes(duration_minutes),
        time_zone: tz.into(),
    }
}

fn open(w: &MaintenanceWindow, at: &str) -> bool {
    is_open(w, ts(at)).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn a_window_opens_at_its_start_and_closes_at_its_end() {
    let w = window_of(vec![Weekday::Wednesday], "10:00", 60, "UTC");
    assert!(!open(&w, "2026-03-04T09:59:59Z"));
    assert!(open(&w, "2026-03-04T10:00:00Z"));
    assert!(open(&w, "2026-03-04T10:59:59Z"));
    assert!(!open(&w, "2026-03-04T11:00:00Z"));
    // A week later it opens again; the days between it does not.
    assert!(open(&w, "2026-03-11T10:30:00Z"));
    for day in 5..=10 {
        assert!(
            !open(&w, &format!("2026-03-{day:02}T10:30:00Z")),
            "March {day}"
        );
    }
}

#[test]
fn a_zero_length_window_never_opens() {
    let w = window_of(vec![], "10:00", 0, "UTC");
    assert!(!open(&w, "2026-03-04T10:00:00Z"));
}

#[test]
fn a_window_of_a_week_is_always_open() {
    let w = window_of(vec![Weekday::Monday], "03:00", 7 * 24 * 60, "Europe/Berlin");
    for hours in (0..24 * 14).step_by(5) {
        let at = after(t0(), hours * 3600);
        assert!(is_open(&w, at).unwrap_or(false), "{at}");
    }
}

#[test]
fn a_window_longer_than_a_day_spans_the_days_after_its_start() {
    // Friday 20:00 for 48 hours: open all Saturday and until Sunday 20:00.
    let w = window_of(vec![Weekday::Friday], "20:00", 48 * 60, "UTC");
    assert!(!open(&w, "2026-03-06T19:59:00Z"));
    assert!(open(&w, "2026-03-06T20:00:00Z"));
    assert!(open(&w, "2026-03-07T12:00:00Z"));
    assert!(open(&w, "2026-03-08T19:59:00Z"));
    assert!(!open(&w, "2026-03-08T20:00:00Z"));
    assert!(!open(&w, "2026-03-05T21:00:00Z"));
}

#[test]
fn an_opening_past_midnight_counts_on_the_next_day_only_until_it_ends() {
    // Sunday 23:00 for 2 hours: Monday 00:30 is open, Monday 23:30 is not.
    let w = window_of(vec![Weekday::Sunday], "23:00", 120, "UTC");
    assert!(open(&w, "2026-03-09T00:30:00Z"));
    assert!(!open(&w, "2026-03-09T01:00:00Z"));
    assert!(!open(&w, "2026-03-09T23:30:00Z"));
}

#[test]
fn every_weekday_maps_to_its_own_day() {
    let days = [
        Weekday::Monday,
        Weekday::Tuesday,
        Weekday::Wednesday,
        Weekday::Thursday,
        Weekday::Friday,
        Weekday::Saturday,
        Weekday::Sunday,
    ];
    for (i, day) in days.iter().enumerate() {
        let w = window_of(vec![*day], "00:00", 24 * 60, "UTC");
        for d in 0..7 {
            // 2026-03-02 is a Monday.
            let at = format!("2026-03-{:02}T12:00:00Z", 2 + d);
            assert_eq!(open(&w, &at), d == i, "{day:?} at {at}");
        }
    }
}

#[test]
fn the_window_keeps_its_real_length_across_daylight_saving_changes() {
    // Berlin springs forward on Sunday 2026-03-29 (02:00 -> 03:00). Saturday 22:00 CET
    // (21:00Z) for 6 hours closes 6 real hours later, at 03:00Z.
    let w = window_of(vec![Weekday::Saturday], "22:00", 360, "Europe/Berlin");
    assert!(!open(&w, "2026-03-28T20:59:00Z"));
    assert!(open(&w, "2026-03-28T21:00:00Z"));
    assert!(open(&w, "2026-03-29T02:59:00Z"));
    assert!(!open(&w, "2026-03-29T03:00:00Z"));
    // The next Saturday it opens at 22:00 CEST, 20:00Z.
    assert!(open(&w, "2026-04-04T20:00:00Z"));
    assert!(!open(&w, "2026-04-04T19:59:00Z"));
}

/// Minutes of one UTC day in which `w` is open.
fn open_minutes(w: &MaintenanceWindow, day: &str) -> i64 {
    let start = ts(&format!("{day}T00:00:00Z"));
    (0..24 * 60)
        .filter(|m| is_open(w, after(start, m * 60)).unwrap_or(false))
        .count()
        .try_into()
        .unwrap_or(0)
}

#[test]
fn a_start_inside_the_spring_gap_still_opens_that_day() {
    // 02:30 does not exist in Berlin on 2026-03-29; the window must not be lost.
    let w = window_of(vec![], "02:30", 60, "Europe/Berlin");
    assert_eq!(open_minutes(&w, "2026-03-29"), 60);
}

#[test]
fn an_ambiguous_start_in_the_autumn_opens_once() {
    // 02:30 happens twice in Berlin on 2026-10-25; the window opens once, for 30 minutes.
    let w = window_of(vec![], "02:30", 30, "Europe/Berlin");
    assert_eq!(open_minutes(&w, "2026-10-25"), 30);
}

#[test]
fn a_half_hour_time_zone_is_honoured() {
    // 02:00 in Kolkata (UTC+05:30) is 20:30Z the day before.
    let w = window_of(vec![Weekday::Thursday], "02:00", 60, "Asia/Kolkata");
    assert!(!open(&w, "2026-03-04T20:29:00Z"));
    assert!(open(&w, "2026-03-04T20:30:00Z"));
    assert!(!open(&w, "2026-03-04T21:30:00Z"));
}

#[test]
fn a_malformed_start_is_an_error_naming_it() {
    for start in ["24:00", "7pm", ""] {
        let w = window_of(vec![], start, 60, "UTC");
        let err = is_open(&w, t0()).expect_err(start);
        assert!(err.to_string().contains("start"), "{start}: {err}");
    }
}

proptest! {
    /// In UTC a daily window is open exactly when the time since its start, modulo a day,
    /// is shorter than its length.
    #[test]
    fn prop_a_daily_utc_window_is_minute_arithmetic(
        start in 0i64..24 * 60,
        length in 0u64..3 * 24 * 60,
        at in 0i64..400 * 24 * 3600,
    ) {
        let w = window_of(vec![], &format!("{:02}:{:02}", start / 60, start % 60), length, "UTC");
        // 2026-01-01T00:00:00Z is a midnight.
        let now = after(ts("2026-01-01T00:00:00Z"), at);
        let since_opening = (at - start * 60).rem_euclid(24 * 3600);
        let length_secs = i64::try_from(length * 60).unwrap_or(i64::MAX);
        let expected = length_secs >= 24 * 3600 || since_opening < length_secs;
        prop_assert_eq!(is_open(&w, now), Ok(expected));
    }

    /// More days or a longer window never closes a window that is open.
    #[test]
    fn prop_a_larger_window_is_open_whenever_a_smaller_one_is(
        days in prop::collection::vec(0usize..7, 0..4),
        extra_day in 0usize..7,
        start in 0i64..24 * 60,
        length in 1u64..48 * 60,
        extra in 0u64..600,
        at in 0i64..60 * 24 * 3600,
        tz in prop::sample::select(vec!["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata"]),
    ) {
        let all = [
            Weekday::Monday,
            Weekday::Tuesday,
            Weekday::Wednesday,
            Weekday::Thursday,
            Weekday::Friday,
            Weekday::Saturday,
            Weekday::Sunday,
        ];
        let start = format!("{:02}:{:02}", start / 60, start % 60);
        let small_days: Vec<Weekday> = days.iter().map(|d| all[*d]).collect();
        let small = window_of(small_days.clone(), &start, length, tz);
        let now = after(ts("2026-01-01T00:00:00Z"), at);
        if is_open(&small, now).unwrap_or(false) {
            let longer = window_of(small_days.clone(), &start, length + extra, tz);
            prop_assert!(is_open(&longer, now).unwrap_or(false));
            if !small_days.is_empty() {
                let mut more = small_days;
                more.push(all[extra_day]);
                let wider = window_of(more, &start, length, tz);
                prop_assert!(is_open(&wider, now).unwrap_or(false));
            }
        }
    }
}
