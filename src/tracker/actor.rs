//! The tracker actor: one tracker per camera, fed by the inference workers.
//!
//! Parent: the root supervisor. Input: detections per frame. Output: each
//! camera's active tracks, sent to every rule actor (process group `rules`).

use super::{Track, Tracker, TrackerSettings};
use crate::calibration::Calibration;
use crate::pipeline::{DetectionSink, Detections};
use crate::rules::actor::{RULES_GROUP, RuleMsg};
use crate::rules::{TrackView, TrackedFrame};
use crate::store::{EventRecord, Record, unix_micros};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

/// The registered name the detection sink sends to.
pub const NAME: &str = "tracker";

pub struct TrackerActor;

pub struct TrackerArgs {
    pub settings: TrackerSettings,
    /// Per camera; positions are metres where present, pixels elsewhere.
    pub calibrations: Arc<HashMap<String, Calibration>>,
    /// MQTT: tracked objects and counts go there, without waiting.
    pub bus: crate::mqtt::Bus,
    /// Per camera, the named zones objects are reported in on MQTT.
    pub zones: HashMap<String, Vec<crate::mqtt::objects::Zone>>,
}

pub struct TrackerState {
    args: TrackerArgs,
    trackers: HashMap<Arc<str>, Tracker>,
    /// Per camera, what MQTT has been told; only while MQTT is on.
    feeds: HashMap<Arc<str>, crate::mqtt::objects::ObjectFeed>,
}

pub enum TrackerMsg {
    Detections(Box<Detections>),
    /// Fail as asked: sent only by the test-only fault routes (`faults.rs`).
    Fault(crate::faults::Fault),
}

impl ractor::Message for TrackerMsg {}

/// Hands detections to the tracker actor, wherever it currently runs.
#[derive(Debug, Default)]
pub struct ToTracker;

impl DetectionSink for ToTracker {
    fn publish(&self, detections: Detections) {
        for d in &detections.detections {
            metrics::counter!("smart_cctv_detections_total", "camera" => detections.frame.camera.to_string(), "class" => d.class_name)
                .increment(1);
        }
        match ractor::registry::where_is(NAME) {
            Some(cell) => {
                let _ = ActorRef::<TrackerMsg>::from(cell).cast(TrackerMsg::Detections(Box::new(detections)));
            }
            None => metrics::counter!("smart_cctv_frames_lost_total", "reason" => "tracker_down").increment(1),
        }
    }
}

impl Actor for TrackerActor {
    type Msg = TrackerMsg;
    type State = TrackerState;
    type Arguments = TrackerArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<TrackerMsg>,
        args: TrackerArgs,
    ) -> Result<TrackerState, ActorProcessingErr> {
        crate::faults::register("tracker", &myself, TrackerMsg::Fault);
        Ok(TrackerState { args, trackers: HashMap::new(), feeds: HashMap::new() })
    }

    async fn handle(
        &self,
        _: ActorRef<TrackerMsg>,
        msg: TrackerMsg,
        state: &mut TrackerState,
    ) -> Result<(), ActorProcessingErr> {
        let d = match msg {
            TrackerMsg::Detections(d) => d,
            TrackerMsg::Fault(fault) => return fault.strike("tracker"),
        };
        let camera = d.frame.camera.clone();
        let calibration = state.args.calibrations.get(&*camera);
        let settings = &state.args.settings;
        let tracker = state.trackers.entry(camera.clone()).or_insert_with(|| {
            let mut s = settings.clone();
            if calibration.is_none() {
                // Without calibration positions are pixels of the analysed frame.
                s.stationary_radius = 8.0;
            }
            Tracker::new(s)
        });
        let project = |p: (f32, f32)| -> (f32, f32) {
            calibration
                .and_then(|c| c.homography.project((p.0 as f64, p.1 as f64)))
                .map_or(p, |(x, y)| (x as f32, y as f32))
        };
        let ended = tracker.update(&d.detections, d.frame.captured_at, &project);
        let ended_ids: Vec<u64> = ended.iter().map(|t| t.id).collect();
        for track in ended {
            crate::store::actor::submit(summary(&track, &camera, d.frame.captured, d.frame.captured_at));
        }
        let tracks: Vec<TrackView> = tracker
            .active()
            .map(|t| TrackView {
                id: t.id,
                class_name: t.class_name,
                confidence: t.confidence,
                bbox: t.bbox,
                stationary: t.stationary,
            })
            .collect();
        metrics::gauge!("smart_cctv_tracks_active", "camera" => camera.to_string()).set(tracks.len() as f64);
        let bus = &state.args.bus;
        if bus.enabled() {
            bus.note_analysed(&camera, d.frame.captured_at.elapsed().as_secs_f64());
            let zones = &state.args.zones;
            let feed = state.feeds.entry(camera.clone()).or_insert_with(|| {
                crate::mqtt::objects::ObjectFeed::new(&camera, zones.get(&*camera).cloned().unwrap_or_default())
            });
            let frame_time = crate::mqtt::unix_seconds(d.frame.captured);
            for (subtopic, payload, retain) in feed.frame(frame_time, &tracks, &ended_ids) {
                bus.publish(&subtopic, payload, retain);
            }
        }
        let tracked = Arc::new(TrackedFrame { frame: d.frame, tracks });
        for member in ractor::pg::get_members(&RULES_GROUP.to_owned()) {
            let _ = ActorRef::<RuleMsg>::from(member).cast(RuleMsg::Frame(tracked.clone()));
        }
        Ok(())
    }
}

/// A track's record, its times turned from the monotonic clock to wall time
/// through the frame that ended it.
fn summary(track: &Track, camera: &str, wall: SystemTime, at: Instant) -> Record {
    let wall_of = |t: Instant| unix_micros(wall) - at.saturating_duration_since(t).as_micros() as i64;
    Record::Event(EventRecord {
        first_seen_us: wall_of(track.first_seen),
        last_seen_us: wall_of(track.last_seen),
        camera: camera.to_owned(),
        class: track.class_name.to_owned(),
        track_id: track.id,
        best_confidence: track.best_confidence,
        snapshot: None,
    })
}
