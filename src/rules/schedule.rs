//! Rule schedules: days of the week and an hour range in local time.

use chrono::{Datelike, NaiveDateTime, NaiveTime, Weekday};

pub fn parse_day(text: &str) -> Option<Weekday> {
    Some(match text.to_ascii_lowercase().get(..3)? {
        "mon" => Weekday::Mon,
        "tue" => Weekday::Tue,
        "wed" => Weekday::Wed,
        "thu" => Weekday::Thu,
        "fri" => Weekday::Fri,
        "sat" => Weekday::Sat,
        "sun" => Weekday::Sun,
        _ => return None,
    })
}

/// `"22:00-06:00"`.
pub fn parse_hours(text: &str) -> Result<(NaiveTime, NaiveTime), String> {
    let (from, to) = text.split_once('-').ok_or_else(|| format!("`{text}` is not a range like 22:00-06:00"))?;
    let time =
        |t: &str| NaiveTime::parse_from_str(t.trim(), "%H:%M").map_err(|_| format!("`{t}` is not a time like 06:30"));
    Ok((time(from)?, time(to)?))
}

/// When a rule is armed.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Schedule {
    days: Vec<Weekday>,
    hours: Option<(NaiveTime, NaiveTime)>,
}

impl Schedule {
    pub fn from_config(c: &crate::config::ScheduleConfig) -> Self {
        Self {
            days: c.days.iter().filter_map(|d| parse_day(d)).collect(),
            hours: c.hours.as_deref().and_then(|h| parse_hours(h).ok()),
        }
    }

    /// Whether `local` falls in the schedule. A range that wraps midnight
    /// belongs to the day it starts on.
    pub fn contains(&self, local: NaiveDateTime) -> bool {
        let (time, day) = (local.time(), local.weekday());
        match self.hours {
            None => self.days.is_empty() || self.days.contains(&day),
            Some((from, to)) if from <= to => {
                (self.days.is_empty() || self.days.contains(&day)) && time >= from && time < to
            }
            Some((from, to)) => {
                let started_today = time >= from && (self.days.is_empty() || self.days.contains(&day));
                let started_yesterday = time < to && (self.days.is_empty() || self.days.contains(&day.pred()));
                started_today || started_yesterday
            }
        }
    }
}
