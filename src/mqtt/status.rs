//! Camera status for `<prefix>/<camera>/status`, debounced, and the numbers
//! for `<prefix>/stats`. Plain code: the `mqtt` actor feeds it the health
//! board once a second.

use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// What a camera's phase on the health board means on MQTT: streaming is
/// online, a refused login is `auth_failed`, waiting to retry is offline;
/// connecting says nothing new.
pub fn status_of(phase: &str) -> Option<&'static str> {
    match phase {
        "streaming" => Some("online"),
        "auth_failed" => Some("auth_failed"),
        "backoff" => Some("offline"),
        _ => None,
    }
}

#[derive(Default)]
struct Camera {
    published: Option<&'static str>,
    candidate: Option<(&'static str, Instant)>,
}

/// Publishes a camera's status once it has held for `debounce`.
pub struct StatusDebouncer {
    debounce: Duration,
    cameras: BTreeMap<String, Camera>,
}

impl StatusDebouncer {
    pub fn new(debounce: Duration) -> Self {
        Self { debounce, cameras: BTreeMap::new() }
    }

    /// `phases`: camera id → its phase on the board now. Answers the statuses
    /// to publish.
    pub fn observe(&mut self, now: Instant, phases: &BTreeMap<String, String>) -> Vec<(String, &'static str)> {
        self.cameras.retain(|id, _| phases.contains_key(id));
        let mut out = Vec::new();
        for (id, phase) in phases {
            let camera = self.cameras.entry(id.clone()).or_default();
            let Some(status) = status_of(phase) else { continue };
            if camera.published == Some(status) {
                camera.candidate = None;
                continue;
            }
            let since = match camera.candidate {
                Some((candidate, since)) if candidate == status => since,
                _ => {
                    camera.candidate = Some((status, now));
                    now
                }
            };
            if now.saturating_duration_since(since) >= self.debounce {
                camera.published = Some(status);
                camera.candidate = None;
                out.push((id.clone(), status));
            }
        }
        out
    }
}

/// Per camera: frames decoded and analysed, as totals.
type Counted = BTreeMap<String, (u64, u64)>;

/// Frames counted at the last stats message, to turn totals into rates.
#[derive(Default)]
pub struct Rates {
    last: Option<(Instant, Counted)>,
}

/// One camera's totals: frames decoded, frames analysed, and the mean time
/// from capture to detection of recent frames.
#[derive(Debug, Clone, Copy, Default)]
pub struct CameraTotals {
    pub decoded: u64,
    pub analysed: u64,
    pub latency_seconds: f64,
}

impl Rates {
    /// The `<prefix>/stats` payload: per camera fps, detection fps and
    /// latency; the process's CPU, memory and disk from the board's details.
    pub fn stats(
        &mut self,
        now: Instant,
        cameras: &BTreeMap<String, CameraTotals>,
        details: &BTreeMap<String, Value>,
    ) -> Value {
        let previous = self.last.take();
        let mut per_camera = serde_json::Map::new();
        for (id, totals) in cameras {
            let rate = |pick: fn(&(u64, u64)) -> u64, now_total: u64| {
                previous.as_ref().and_then(|(at, before)| {
                    let seconds = now.saturating_duration_since(*at).as_secs_f64();
                    let before = before.get(id).map(pick)?;
                    (seconds > 0.0).then(|| now_total.saturating_sub(before) as f64 / seconds)
                })
            };
            per_camera.insert(
                id.clone(),
                json!({
                    "camera_fps": rate(|t| t.0, totals.decoded).map(round2),
                    "detection_fps": rate(|t| t.1, totals.analysed).map(round2),
                    "detection_latency_ms": round2(totals.latency_seconds * 1000.0),
                }),
            );
        }
        self.last = Some((now, cameras.iter().map(|(id, t)| (id.clone(), (t.decoded, t.analysed))).collect()));
        let process = details.get("process");
        let disk = details.get("disk");
        json!({
            "cameras": per_camera,
            "service": {
                "cpu_percent": process.and_then(|p| p.get("cpu_percent")).cloned(),
                "rss_bytes": process.and_then(|p| p.get("rss_bytes")).cloned(),
                "disk_used_percent": disk.and_then(|d| d.get("used_percent")).cloned(),
            },
        })
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phases(list: &[(&str, &str)]) -> BTreeMap<String, String> {
        list.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    #[test]
    fn a_status_is_published_once_it_has_held_for_the_debounce() {
        let t0 = Instant::now();
        let s = |secs: f64| t0 + Duration::from_secs_f64(secs);
        let mut d = StatusDebouncer::new(Duration::from_secs(3));
        // Connecting says nothing; streaming for 3 s is online.
        assert!(d.observe(s(0.0), &phases(&[("front", "connecting")])).is_empty());
        assert!(d.observe(s(1.0), &phases(&[("front", "streaming")])).is_empty());
        assert_eq!(d.observe(s(4.0), &phases(&[("front", "streaming")])), [("front".into(), "online")]);
        assert!(d.observe(s(5.0), &phases(&[("front", "streaming")])).is_empty());
        // A one-second drop does not flap.
        assert!(d.observe(s(6.0), &phases(&[("front", "backoff")])).is_empty());
        assert!(d.observe(s(7.0), &phases(&[("front", "streaming")])).is_empty());
        assert!(d.observe(s(20.0), &phases(&[("front", "streaming")])).is_empty());
        // A real outage does, and so does the recovery.
        assert!(d.observe(s(21.0), &phases(&[("front", "backoff")])).is_empty());
        assert!(d.observe(s(22.0), &phases(&[("front", "connecting")])).is_empty());
        assert_eq!(d.observe(s(24.5), &phases(&[("front", "backoff")])), [("front".into(), "offline")]);
        assert!(d.observe(s(25.0), &phases(&[("front", "auth_failed")])).is_empty());
        assert_eq!(d.observe(s(28.0), &phases(&[("front", "auth_failed")])), [("front".into(), "auth_failed")]);
    }

    #[test]
    fn stats_turn_totals_into_rates() {
        let t0 = Instant::now();
        let mut rates = Rates::default();
        let totals = |decoded, analysed| {
            BTreeMap::from([("front".to_string(), CameraTotals { decoded, analysed, latency_seconds: 0.05 })])
        };
        let details = BTreeMap::from([
            ("process".to_string(), json!({ "cpu_percent": 12.5, "rss_bytes": 1000 })),
            ("disk".to_string(), json!({ "used_percent": 40.0 })),
        ]);
        let first = rates.stats(t0, &totals(100, 50), &details);
        assert_eq!(first["cameras"]["front"]["camera_fps"], Value::Null);
        assert_eq!(first["service"]["cpu_percent"], json!(12.5));
        assert_eq!(first["service"]["disk_used_percent"], json!(40.0));
        let second = rates.stats(t0 + Duration::from_secs(10), &totals(250, 120), &details);
        assert_eq!(second["cameras"]["front"]["camera_fps"], json!(15.0));
        assert_eq!(second["cameras"]["front"]["detection_fps"], json!(7.0));
        assert_eq!(second["cameras"]["front"]["detection_latency_ms"], json!(50.0));
    }
}
