//! Alerts: what a rule raises, and where it goes: a line in `alerts.log`, a
//! JPEG snapshot with the boxes and zones drawn, metrics, and optionally an
//! email. (The event store and speakers join as their issues land.)

pub mod actor;
pub mod email;
pub mod recorder;
pub mod snapshot;

use crate::rules::TrackView;
use image::RgbImage;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

/// One alert.
#[derive(Clone)]
pub struct Alert {
    pub rule: String,
    pub camera: Arc<str>,
    pub track_ids: Vec<u64>,
    pub class_name: &'static str,
    pub confidence: f32,
    /// Metres to the rule's reference point, for distance rules.
    pub distance_m: Option<f64>,
    /// When the frame that satisfied the rule was captured.
    pub captured: SystemTime,
    pub captured_at: Instant,
    /// The frame, for the snapshot.
    pub image: Arc<RgbImage>,
    /// The objects that triggered it, to draw.
    pub tracks: Vec<TrackView>,
    /// The rule's image-space zones, to draw.
    pub zones: Vec<Vec<(f32, f32)>>,
    /// The names of the rule's zones the objects are in (for MQTT).
    pub zone_names: Vec<String>,
    /// What speakers should play, and how urgently.
    pub sound: Option<String>,
    pub priority: u8,
}
