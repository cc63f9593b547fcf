//! Durations in configuration files.
//!
//! The old Python system wrote durations as plain seconds (`cooldown: 60`);
//! humans prefer `"90s"` or `"5m"`. Both are accepted everywhere.

use serde::{Deserialize, Deserializer, Serializer, de};
use std::time::Duration;

/// Parses `"500ms"`, `"1m 30s"` or a bare number of seconds (`"2.5"`).
pub fn parse(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    if let Ok(seconds) = trimmed.parse::<f64>() {
        return from_seconds(seconds);
    }
    humantime::parse_duration(trimmed)
        .map_err(|e| format!("`{trimmed}` is not a duration ({e}); write e.g. \"30s\", \"5m\" or 30"))
}

fn from_seconds(seconds: f64) -> Result<Duration, String> {
    if seconds.is_finite() && seconds >= 0.0 {
        Ok(Duration::from_secs_f64(seconds))
    } else {
        Err(format!("{seconds} is not a valid number of seconds (must be >= 0)"))
    }
}

struct DurationVisitor;

impl de::Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a duration such as \"30s\", \"5m\", \"250ms\" or a number of seconds")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
        Ok(Duration::from_secs(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
        u64::try_from(v)
            .map(Duration::from_secs)
            .map_err(|_| E::custom(format!("{v} is negative; a duration must be >= 0")))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Duration, E> {
        from_seconds(v).map_err(E::custom)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
        parse(v).map_err(E::custom)
    }
}

/// `#[serde(with = "crate::base::duration")]`
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    d.deserialize_any(DurationVisitor)
}

pub fn serialize<S: Serializer>(value: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&humantime::format_duration(*value).to_string())
}

/// The same for `Option<Duration>`.
pub mod option {
    use super::*;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        #[derive(Deserialize)]
        struct Wrapper(#[serde(deserialize_with = "super::deserialize")] Duration);
        Ok(Option::<Wrapper>::deserialize(d)?.map(|w| w.0))
    }

    pub fn serialize<S: Serializer>(value: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(d) => super::serialize(d, s),
            None => s.serialize_none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_humantime_and_seconds() {
        assert_eq!(parse("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse("1m 30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse("2.5").unwrap(), Duration::from_millis(2500));
        assert!(parse("soon").unwrap_err().contains("soon"));
        assert!(parse("-3").is_err());
    }
}
