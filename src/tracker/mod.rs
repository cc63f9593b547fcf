//! Multi-object tracking, ByteTrack-style.
//!
//! Each frame's detections are split by confidence. High-confidence ones are
//! matched first to every live track (active and recently lost) by IoU with
//! the Kalman-predicted boxes; low-confidence ones then rescue the active
//! tracks still unmatched (a person half-hidden behind a car keeps their id).
//! Matching is per class and greedy by IoU. Unmatched high-confidence
//! detections start new tracks, which become active when seen again; tracks
//! missing for `lost_ttl` are removed. A track whose ground position stays
//! within `stationary_radius` for `stationary_after` is stationary, so a
//! parked car does not alert again and again.

pub mod actor;
pub mod kalman;

use crate::detect::Detection;
use crate::detect::postprocess::iou;
use kalman::BoxFilter;
use serde::Serialize;
use std::time::{Duration, Instant};

/// Tracker thresholds.
#[derive(Debug, Clone, PartialEq)]
pub struct TrackerSettings {
    /// Detections at or above this start and confirm tracks.
    pub high_threshold: f32,
    /// Detections below this are ignored altogether.
    pub low_threshold: f32,
    /// IoU needed to match a high-confidence detection.
    pub match_iou: f32,
    /// IoU needed to match a low-confidence detection.
    pub low_match_iou: f32,
    /// How long a track that is not seen is kept before removal.
    pub lost_ttl: Duration,
    /// How far (in position units: metres with calibration, else pixels) a
    /// stationary object may wander.
    pub stationary_radius: f32,
    pub stationary_after: Duration,
    /// Unmatched by IoU, a detection may still continue a track whose
    /// predicted centre is within this many box heights.
    pub near_factor: f32,
}

impl Default for TrackerSettings {
    fn default() -> Self {
        Self {
            high_threshold: 0.5,
            low_threshold: 0.1,
            match_iou: 0.2,
            low_match_iou: 0.5,
            lost_ttl: Duration::from_secs(3),
            stationary_radius: 0.5,
            stationary_after: Duration::from_secs(30),
            near_factor: 1.0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TrackState {
    /// Seen once; not yet confirmed.
    New,
    Active,
    /// Not seen in the last frames; kept for `lost_ttl`.
    Lost,
    Removed,
}

/// A tracked object.
#[derive(Debug, Clone)]
pub struct Track {
    pub id: u64,
    pub class_id: usize,
    pub class_name: &'static str,
    pub state: TrackState,
    pub confidence: f32,
    pub best_confidence: f32,
    pub bbox: [f32; 4],
    pub first_seen: Instant,
    pub last_seen: Instant,
    /// Where it stands: metres on the ground with calibration, else pixels.
    pub position: (f32, f32),
    /// Where and since when it has stayed within the stationary radius.
    anchor: ((f32, f32), Instant),
    pub stationary: bool,
    filter: BoxFilter,
    hits: u32,
}

impl Track {
    /// The bottom centre of the box: where the object touches the ground.
    pub fn foot(&self) -> (f32, f32) {
        ((self.bbox[0] + self.bbox[2]) / 2.0, self.bbox[3])
    }

    /// How long it has been tracked.
    pub fn age(&self) -> Duration {
        self.last_seen.saturating_duration_since(self.first_seen)
    }
}

/// Maps an image point to a position (the homography, with calibration).
pub type Project<'a> = &'a dyn Fn((f32, f32)) -> (f32, f32);

/// One camera's tracks.
pub struct Tracker {
    settings: TrackerSettings,
    tracks: Vec<Track>,
    next_id: u64,
}

impl Tracker {
    pub fn new(settings: TrackerSettings) -> Self {
        Self { settings, tracks: Vec::new(), next_id: 1 }
    }

    /// Live tracks (new, active and lost).
    pub fn tracks(&self) -> &[Track] {
        &self.tracks
    }

    /// Active tracks: confirmed and seen in this frame.
    pub fn active(&self) -> impl Iterator<Item = &Track> {
        self.tracks.iter().filter(|t| t.state == TrackState::Active)
    }

    /// Feeds one frame's detections, seen at `now`; answers the confirmed
    /// tracks that ended with it (their summaries are worth keeping).
    pub fn update(&mut self, detections: &[Detection], now: Instant, project: Project<'_>) -> Vec<Track> {
        for t in &mut self.tracks {
            t.filter.predict();
            t.bbox = t.filter.bbox();
        }
        let (high, low): (Vec<&Detection>, Vec<&Detection>) = detections
            .iter()
            .filter(|d| d.confidence >= self.settings.low_threshold)
            .partition(|d| d.confidence >= self.settings.high_threshold);

        let all: Vec<usize> = (0..self.tracks.len()).collect();
        let (matched_high, unmatched_tracks, unmatched_high) = self.assign(&all, &high, self.settings.match_iou);
        for (ti, d) in matched_high {
            self.hit(ti, d, now, project);
        }
        // At a low analysis rate a walker moves more than their own width
        // between frames and boxes stop overlapping: match what is left by
        // how close the detection is to where the track was predicted.
        let (matched_near, unmatched_tracks, unmatched_high) = self.assign_nearby(&unmatched_tracks, &unmatched_high);
        for (ti, d) in matched_near {
            self.hit(ti, d, now, project);
        }
        let active_left: Vec<usize> =
            unmatched_tracks.into_iter().filter(|&ti| self.tracks[ti].state == TrackState::Active).collect();
        let (matched_low, _, _) = self.assign(&active_left, &low, self.settings.low_match_iou);
        for (ti, d) in matched_low {
            self.hit(ti, d, now, project);
        }
        for t in &mut self.tracks {
            if t.last_seen != now {
                match t.state {
                    TrackState::Active => t.state = TrackState::Lost,
                    // A detection seen once and not again was noise.
                    TrackState::New => t.state = TrackState::Removed,
                    _ => {}
                }
                if t.state == TrackState::Lost && now.saturating_duration_since(t.last_seen) > self.settings.lost_ttl {
                    t.state = TrackState::Removed;
                }
            }
        }
        let (ended, live): (Vec<Track>, Vec<Track>) =
            std::mem::take(&mut self.tracks).into_iter().partition(|t| t.state == TrackState::Removed);
        self.tracks = live;
        for d in unmatched_high {
            let filter = BoxFilter::new(d.bbox);
            let mut track = Track {
                id: self.next_id,
                class_id: d.class_id,
                class_name: d.class_name,
                state: TrackState::New,
                confidence: d.confidence,
                best_confidence: d.confidence,
                bbox: d.bbox,
                first_seen: now,
                last_seen: now,
                position: (0.0, 0.0),
                anchor: ((0.0, 0.0), now),
                stationary: false,
                filter,
                hits: 1,
            };
            track.position = project(track.foot());
            track.anchor = (track.position, now);
            self.next_id += 1;
            self.tracks.push(track);
        }
        ended.into_iter().filter(|t| t.hits > 1).collect()
    }

    fn hit(&mut self, ti: usize, d: &Detection, now: Instant, project: Project<'_>) {
        let settings = &self.settings;
        let t = &mut self.tracks[ti];
        t.filter.update(d.bbox);
        t.bbox = d.bbox;
        t.confidence = d.confidence;
        t.best_confidence = t.best_confidence.max(d.confidence);
        t.last_seen = now;
        t.hits += 1;
        t.state = TrackState::Active;
        t.position = project(t.foot());
        let ((ax, ay), since) = t.anchor;
        let moved = ((t.position.0 - ax).powi(2) + (t.position.1 - ay).powi(2)).sqrt();
        if moved > settings.stationary_radius {
            t.anchor = (t.position, now);
            t.stationary = false;
        } else {
            t.stationary = now.saturating_duration_since(since) >= settings.stationary_after;
        }
    }

    /// Greedy matching by centre distance, within `near_factor` box heights.
    fn assign_nearby<'d>(
        &self,
        tracks: &[usize],
        detections: &[&'d Detection],
    ) -> (Vec<(usize, &'d Detection)>, Vec<usize>, Vec<&'d Detection>) {
        let centre = |b: &[f32; 4]| ((b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0);
        let mut pairs: Vec<(f32, usize, usize)> = Vec::new();
        for &ti in tracks {
            let t = &self.tracks[ti];
            if t.state == TrackState::New {
                continue;
            }
            let (tx, ty) = centre(&t.bbox);
            let reach = self.settings.near_factor * (t.bbox[3] - t.bbox[1]).max(1.0);
            for (di, d) in detections.iter().enumerate() {
                if t.class_id == d.class_id {
                    let (dx, dy) = centre(&d.bbox);
                    let dist = ((tx - dx).powi(2) + (ty - dy).powi(2)).sqrt();
                    if dist <= reach {
                        pairs.push((dist / reach, ti, di));
                    }
                }
            }
        }
        pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
        self.greedy(tracks, detections, pairs)
    }

    /// Greedy IoU matching of `tracks` (indices) with `detections`, same
    /// class only. Returns matches, unmatched track indices, unmatched detections.
    fn assign<'d>(
        &self,
        tracks: &[usize],
        detections: &[&'d Detection],
        min_iou: f32,
    ) -> (Vec<(usize, &'d Detection)>, Vec<usize>, Vec<&'d Detection>) {
        let mut pairs: Vec<(f32, usize, usize)> = Vec::new();
        for &ti in tracks {
            for (di, d) in detections.iter().enumerate() {
                if self.tracks[ti].class_id == d.class_id {
                    let overlap = iou(&self.tracks[ti].bbox, &d.bbox);
                    if overlap >= min_iou {
                        pairs.push((overlap, ti, di));
                    }
                }
            }
        }
        pairs.sort_by(|a, b| b.0.total_cmp(&a.0));
        self.greedy(tracks, detections, pairs)
    }

    /// Takes `pairs` (score, track, detection) in order, each side once.
    fn greedy<'d>(
        &self,
        tracks: &[usize],
        detections: &[&'d Detection],
        pairs: Vec<(f32, usize, usize)>,
    ) -> (Vec<(usize, &'d Detection)>, Vec<usize>, Vec<&'d Detection>) {
        let (mut used_t, mut used_d) = (Vec::new(), vec![false; detections.len()]);
        let mut matches = Vec::new();
        for (_, ti, di) in pairs {
            if !used_t.contains(&ti) && !used_d[di] {
                used_t.push(ti);
                used_d[di] = true;
                matches.push((ti, detections[di]));
            }
        }
        let unmatched_t = tracks.iter().copied().filter(|t| !used_t.contains(t)).collect();
        let unmatched_d = detections.iter().zip(&used_d).filter(|(_, u)| !**u).map(|(d, _)| *d).collect();
        (matches, unmatched_t, unmatched_d)
    }
}

#[cfg(test)]
mod tests;
