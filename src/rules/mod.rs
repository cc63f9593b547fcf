//! Alert rules: one actor per `alert_rules` entry, each fed every camera's
//! tracked objects. The evaluation here is plain code with the time passed
//! in, so every condition is tested without a runtime or a clock.
//!
//! Conditions, all optional, combined with AND: `classes`, `min_confidence`,
//! `zones` (image pixels or ground metres), `distance_to_reference`,
//! `min_dwell`, `min_count`, `schedule`. Stationary objects do not trigger
//! unless `ignore_stationary: false`. `cooldown` is kept per (rule, camera),
//! or per (rule, camera, track) with `cooldown_per_track`.

pub mod actor;
pub mod schedule;

use crate::calibration::Calibration;
use crate::camera::Frame;
use crate::config::{AlertRuleConfig, DistanceOperator, ZoneSpace};
use crate::pipeline::motion::point_in_polygon;
use chrono::NaiveDateTime;
use schedule::Schedule;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A tracked object as rules see it.
#[derive(Debug, Clone, PartialEq)]
pub struct TrackView {
    pub id: u64,
    pub class_name: &'static str,
    pub confidence: f32,
    pub bbox: [f32; 4],
    pub stationary: bool,
}

impl TrackView {
    pub fn foot(&self) -> (f32, f32) {
        ((self.bbox[0] + self.bbox[2]) / 2.0, self.bbox[3])
    }
}

/// One analysed frame of one camera with its active tracks.
#[derive(Clone)]
pub struct TrackedFrame {
    pub frame: Frame,
    pub tracks: Vec<TrackView>,
}

/// What a rule decided to alert about.
#[derive(Debug, Clone, PartialEq)]
pub struct Firing {
    pub track_ids: Vec<u64>,
    pub class_name: &'static str,
    pub confidence: f32,
    /// Metres to the reference, for distance rules.
    pub distance_m: Option<f64>,
}

/// A rule's configuration and its memory (dwell starts, cooldowns).
pub struct RuleEngine {
    pub rule: AlertRuleConfig,
    schedule: Option<Schedule>,
    calibrations: Arc<HashMap<String, Calibration>>,
    /// When each (camera, track) started satisfying the conditions.
    dwell: HashMap<(Arc<str>, u64), Instant>,
    /// When the rule last fired, per camera or per (camera, track).
    cooldowns: HashMap<(Arc<str>, Option<u64>), Instant>,
}

impl RuleEngine {
    pub fn new(rule: AlertRuleConfig, calibrations: Arc<HashMap<String, Calibration>>) -> Self {
        let schedule = rule.conditions.schedule.as_ref().map(Schedule::from_config);
        Self { rule, schedule, calibrations, dwell: HashMap::new(), cooldowns: HashMap::new() }
    }

    fn applies_to(&self, camera: &str) -> bool {
        self.rule.enabled && (self.rule.cameras.is_empty() || self.rule.cameras.iter().any(|c| c == camera))
    }

    /// Whether `track` meets the per-object conditions; with the distance
    /// when the rule measures one.
    fn matches(&self, camera: &str, track: &TrackView) -> Option<Option<f64>> {
        let c = &self.rule.conditions;
        if !c.classes.is_empty() && !c.classes.iter().any(|k| k == track.class_name) {
            return None;
        }
        if c.min_confidence.is_some_and(|m| (track.confidence as f64) < m) {
            return None;
        }
        if self.rule.ignore_stationary && track.stationary {
            return None;
        }
        let calibration = self.calibrations.get(camera);
        let foot = track.foot();
        if !c.zones.is_empty() {
            let inside = c.zones.iter().any(|zone| {
                let polygon: Vec<(f32, f32)> = zone.points.iter().map(|p| (p[0], p[1])).collect();
                match zone.space {
                    ZoneSpace::Image => point_in_polygon(foot, &polygon),
                    ZoneSpace::Ground => calibration
                        .and_then(|cal| cal.homography.project((foot.0 as f64, foot.1 as f64)))
                        .is_some_and(|(x, y)| point_in_polygon((x as f32, y as f32), &polygon)),
                }
            });
            if !inside {
                return None;
            }
        }
        match &c.distance_to_reference {
            None => Some(None),
            Some(d) => {
                let distance = calibration?.distance_to(foot, d.reference.as_deref())?;
                let ok = match d.operator {
                    DistanceOperator::Lt => distance < d.value,
                    DistanceOperator::Gt => distance > d.value,
                };
                ok.then_some(Some(distance))
            }
        }
    }

    /// Looks at one frame seen at `now` (monotonic, for dwell and cooldown)
    /// and `local` (wall clock, for the schedule).
    pub fn evaluate(
        &mut self,
        camera: &Arc<str>,
        tracks: &[TrackView],
        now: Instant,
        local: NaiveDateTime,
    ) -> Option<Firing> {
        if !self.applies_to(camera) {
            return None;
        }
        if self.schedule.as_ref().is_some_and(|s| !s.contains(local)) {
            self.dwell.retain(|(c, _), _| c != camera);
            return None;
        }
        let matching: Vec<(&TrackView, Option<f64>)> =
            tracks.iter().filter_map(|t| self.matches(camera, t).map(|d| (t, d))).collect();
        // Dwell: how long each object has met the conditions without a break.
        self.dwell.retain(|(c, id), _| c != camera || matching.iter().any(|(t, _)| t.id == *id));
        let min_dwell = self.rule.conditions.min_dwell.unwrap_or(Duration::ZERO);
        let mut qualifying: Vec<(&TrackView, Option<f64>)> = matching
            .into_iter()
            .filter(|(t, _)| {
                let since = *self.dwell.entry((camera.clone(), t.id)).or_insert(now);
                now.saturating_duration_since(since) >= min_dwell
            })
            .collect();
        if qualifying.len() < self.rule.conditions.min_count.unwrap_or(1) as usize {
            return None;
        }
        let cooldown = self.rule.cooldown;
        let cooling = |key: &(Arc<str>, Option<u64>), cooldowns: &HashMap<(Arc<str>, Option<u64>), Instant>| {
            cooldowns.get(key).is_some_and(|t| now.saturating_duration_since(*t) < cooldown)
        };
        if self.rule.cooldown_per_track {
            qualifying.retain(|(t, _)| !cooling(&(camera.clone(), Some(t.id)), &self.cooldowns));
            if qualifying.is_empty() {
                return None;
            }
            // Cooldowns that have run out are forgotten: track ids only grow,
            // and the service runs for months.
            self.cooldowns.retain(|_, t| now.saturating_duration_since(*t) < cooldown);
            for (t, _) in &qualifying {
                self.cooldowns.insert((camera.clone(), Some(t.id)), now);
            }
        } else {
            let key = (camera.clone(), None);
            if cooling(&key, &self.cooldowns) {
                return None;
            }
            self.cooldowns.insert(key, now);
        }
        qualifying.sort_by(|a, b| b.0.confidence.total_cmp(&a.0.confidence));
        let (best, distance) = qualifying[0];
        Some(Firing {
            track_ids: qualifying.iter().map(|(t, _)| t.id).collect(),
            class_name: best.class_name,
            confidence: best.confidence,
            distance_m: distance,
        })
    }
}

#[cfg(test)]
mod tests;
