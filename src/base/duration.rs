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
        .and_then(bounded)
}

/// The longest duration any setting may have: ten years. Anything longer is
/// a typo, and would overflow when added to a clock reading.
pub const MAX: Duration = Duration::from_secs(10 * 365 * 86_400);

fn from_seconds(seconds: f64) -> Result<Duration, String> {
    match Duration::try_from_secs_f64(seconds) {
        Ok(d) => bounded(d),
        Err(_) => {
            Err(format!("{seconds} is not a valid number of seconds (must be >= 0 and at most {})", MAX.as_secs()))
        }
    }
}

fn bounded(d: Duration) -> Result<Duration, String> {
    if d <= MAX {
        Ok(d)
    } else {
        Err(format!("{} is longer than the maximum of 10 years", humantime::format_duration(d)))
    }
}

struct DurationVisitor;

impl de::Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a duration such as \"30s\", \"5m\", \"250ms\" or a number of seconds")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
        bounded(Duration::from_secs(v)).map_err(E::custom)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
        u64::try_from(v)
            .map_err(|_| E::custom(format!("{v} is negative; a duration must be >= 0")))
            .and_then(|v| self.visit_u64(v))
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

    #[test]
    fn huge_and_non_finite_durations_are_errors_not_panics() {
        for text in ["1e20", "NaN", "inf", "-inf", "1e400", "100000y", "315360001"] {
            let err = parse(text).unwrap_err();
            assert!(
                err.contains("at most") || err.contains("maximum") || err.contains("not a duration"),
                "{text}: {err}"
            );
        }
        assert_eq!(parse("3650d").unwrap(), MAX);
        let yaml = |v: &str| serde_json::from_str::<Wrapped>(&format!("{{\"d\": {v}}}")).map(|w| w.d);
        assert!(yaml("1e20").unwrap_err().to_string().contains("at most"));
        assert!(yaml("18446744073709551615").unwrap_err().to_string().contains("maximum"));
        assert_eq!(yaml("2").unwrap(), Duration::from_secs(2));
    }

    #[derive(serde::Deserialize)]
    struct Wrapped {
        #[serde(with = "super")]
        d: Duration,
    }
}
