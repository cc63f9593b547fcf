//! What the store keeps: alerts, track summaries, camera state changes and
//! health transitions, each a JSON value under a time-ordered key.

use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime};

/// One alert as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertRecord {
    /// Given when the alert is raised (UUIDv7), so that writing it again
    /// after a timed-out attempt stores it once. Empty for alerts stored
    /// before ids existed.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    /// Capture time, Unix microseconds.
    pub time_us: i64,
    pub rule: String,
    pub camera: String,
    pub class: String,
    pub confidence: f32,
    pub track_ids: Vec<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distance_m: Option<f64>,
    /// Relative to the data directory (`snapshots/2026-01-15/...jpg`).
    pub snapshot: String,
    /// How a person judged it (the `alert_reviews` table, merged in when
    /// alerts are listed; never stored inside the alert itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub review: Option<AlertReview>,
}

/// A person's verdict on one alert, kept by alert id.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AlertReview {
    pub reviewed: bool,
    /// Nothing that the rule is for was there: counted per rule and camera
    /// by `alerts analyze`.
    pub false_positive: bool,
    /// When it was last marked, Unix microseconds.
    pub time_us: i64,
    /// Who marked it.
    pub by: String,
}

/// What a mark changes: `reviewed`, or `false_positive` (which implies reviewed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    Reviewed,
    FalsePositive,
    /// Back to not a false positive (still reviewed).
    NotFalsePositive,
}

/// One tracked object, written when its track ends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventRecord {
    /// First sighting, Unix microseconds (the key).
    pub first_seen_us: i64,
    pub last_seen_us: i64,
    pub camera: String,
    pub class: String,
    pub track_id: u64,
    pub best_confidence: f32,
    /// The snapshot of an alert it raised, relative to the data directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
}

/// A camera entering a state (`streaming`, `backoff`, `auth_failed`, ...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CameraStatusRecord {
    pub time_us: i64,
    pub camera: String,
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A supervised child or component turning healthy or unhealthy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthRecord {
    pub time_us: i64,
    /// `root/store`, `disk`, ...
    pub component: String,
    pub ok: bool,
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Anything the store writes.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    Alert(AlertRecord),
    Event(EventRecord),
    CameraStatus(CameraStatusRecord),
    Health(HealthRecord),
}

impl Record {
    /// The table index (into [`super::RECORD_TABLES`]), the key time and the value.
    pub(super) fn encode(&self) -> serde_json::Result<(usize, i64, Vec<u8>)> {
        Ok(match self {
            Record::Alert(r) => (0, r.time_us, serde_json::to_vec(r)?),
            Record::Event(r) => (1, r.first_seen_us, serde_json::to_vec(r)?),
            Record::CameraStatus(r) => (2, r.time_us, serde_json::to_vec(r)?),
            Record::Health(r) => (3, r.time_us, serde_json::to_vec(r)?),
        })
    }

    /// The kind, as metrics label it.
    pub fn kind(&self) -> &'static str {
        match self {
            Record::Alert(_) => "alert",
            Record::Event(_) => "event",
            Record::CameraStatus(_) => "camera_status",
            Record::Health(_) => "health",
        }
    }
}

/// Filters for listing records.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Query {
    /// Unix microseconds, inclusive.
    #[serde(default)]
    pub since_us: Option<i64>,
    /// Unix microseconds, exclusive.
    #[serde(default)]
    pub until_us: Option<i64>,
    #[serde(default)]
    pub camera: Option<String>,
    #[serde(default)]
    pub rule: Option<String>,
    #[serde(default)]
    pub class: Option<String>,
    /// At most this many, the newest.
    #[serde(default)]
    pub limit: Option<usize>,
}

impl Query {
    /// Whether a record with these fields passes; `rule` is `None` for
    /// records that have no rule (they pass a rule filter only when unset).
    pub(super) fn matches(&self, camera: &str, class: &str, rule: Option<&str>) -> bool {
        self.camera.as_ref().is_none_or(|c| c == camera)
            && self.class.as_ref().is_none_or(|x| x == class)
            && self.rule.as_ref().is_none_or(|x| Some(x.as_str()) == rule)
    }

    /// `since` as a duration back from now.
    pub fn since(mut self, ago: Option<Duration>) -> Self {
        self.since_us = ago.map(|d| super::unix_micros(SystemTime::now()) - d.as_micros() as i64);
        self
    }
}
