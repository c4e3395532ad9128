//! Whether `now` lies inside the weekly maintenance window. Pure; the time zone database is
//! bundled with jiff so the answer does not depend on the container image.

use jiff::civil::{Time, Weekday as CivilWeekday};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};

use crate::api::{MaintenanceWindow, Weekday};

/// Why a window could not be evaluated (bad time zone or start, only possible past
/// admission for the time zone name).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("maintenance window: {0}")]
pub struct WindowError(String);

/// True when `now` falls in an opening of `window`. Openings start on the listed days (every
/// day when none) at `start` local time and last `duration`; one that began yesterday and
/// runs past midnight counts.
pub fn is_open(window: &MaintenanceWindow, now: Timestamp) -> Result<bool, WindowError> {
    let tz = TimeZone::get(&window.time_zone)
        .map_err(|_| WindowError(format!("unknown time zone {:?}", window.time_zone)))?;
    let start: Time = window
        .start
        .parse()
        .map_err(|_| WindowError(format!("start {:?} is not HH:MM", window.start)))?;
    let length = std::time::Duration::from(window.duration);
    let length = jiff::SignedDuration::try_from(length)
        .map_err(|_| WindowError("duration too long".into()))?;
    let local = now.to_zoned(tz.clone());
    // An opening lasting up to 7 days may have begun on any of the last 7 days.
    for back in 0..=7i64 {
        let day = local
            .date()
            .checked_sub(back.days())
            .map_err(|e| WindowError(e.to_string()))?;
        if !window.days.is_empty() && !window.days.iter().any(|d| same_day(*d, day.weekday())) {
            continue;
        }
        let opens = day
            .to_datetime(start)
            .to_zoned(tz.clone())
            .map_err(|e| WindowError(e.to_string()))?
            .timestamp();
        let closes = opens
            .checked_add(length)
            .map_err(|e| WindowError(e.to_string()))?;
        if opens <= now && now < closes {
            return Ok(true);
        }
    }
    Ok(false)
}

fn same_day(day: Weekday, civil: CivilWeekday) -> bool {
    let mapped = match day {
        Weekday::Monday => CivilWeekday::Monday,
        Weekday::Tuesday => CivilWeekday::Tuesday,
        Weekday::Wednesday => CivilWeekday::Wednesday,
        Weekday::Thursday => CivilWeekday::Thursday,
        Weekday::Friday => CivilWeekday::Friday,
        Weekday::Saturday => CivilWeekday::Saturday,
        Weekday::Sunday => CivilWeekday::Sunday,
    };
    mapped == civil
}

#[cfg(test)]
mod tests;
