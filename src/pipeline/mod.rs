//! From camera frames to detections.
//!
//! Cameras push frames into a [`GatedSink`]: the motion gate runs on the
//! camera's own thread (it costs microseconds on a 160-pixel frame) and only
//! frames that pass enter the [`FrameQueue`], which is bounded per camera,
//! drops the oldest frame when full, and is drained round-robin by the pool
//! of inference workers, so a busy camera cannot starve a quiet one.

pub mod loader;
pub mod motion;
pub mod queue;
pub mod worker;

use crate::camera::{Frame, FrameSink};
use crate::detect::Detection;
use motion::{MotionGate, MotionSettings};
use queue::FrameQueue;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Frames that passed the gate, with what was found in them.
#[derive(Clone)]
pub struct Detections {
    pub frame: Frame,
    pub detections: Vec<Detection>,
    /// Time spent in the network and its pre/post-processing.
    pub inference: Duration,
}

/// What the workers run: the real [`Detector`](crate::detect::Detector), or
/// a stand-in in tests of the pool itself.
pub trait FrameDetector: Send + Sync {
    fn detect(&self, image: &image::RgbImage) -> Result<Vec<Detection>, crate::detect::DetectError>;
    /// `(model, input size)` for metric labels.
    fn labels(&self) -> (String, String);
}

impl FrameDetector for crate::detect::Detector {
    fn detect(&self, image: &image::RgbImage) -> Result<Vec<Detection>, crate::detect::DetectError> {
        crate::detect::Detector::detect(self, image)
    }

    fn labels(&self) -> (String, String) {
        (format!("yolov8{}", self.variant), self.options.size.to_string())
    }
}

/// The model the workers use, once the loader has one.
pub type SharedDetector = Option<Arc<dyn FrameDetector>>;

/// Where detections go next (the tracker and rules, when present).
pub trait DetectionSink: Send + Sync {
    fn publish(&self, detections: Detections);
}

/// The motion gates of every camera in front of the inference queue.
pub struct GatedSink {
    settings: Option<MotionSettings>,
    /// Per camera: mask polygons in analysed-frame pixels.
    masks: HashMap<String, Vec<Vec<(f32, f32)>>>,
    gates: Mutex<HashMap<Arc<str>, MotionGate>>,
    queue: Arc<FrameQueue>,
    /// MQTT: `<camera>/motion` ON/OFF as the gate opens and closes.
    bus: crate::mqtt::Bus,
    /// Detection per camera can be switched off over MQTT.
    controls: crate::mqtt::Controls,
    /// Per camera, the motion state last published.
    motion: Mutex<HashMap<Arc<str>, bool>>,
}

impl GatedSink {
    /// `settings: None` turns the gate off: every frame goes to detection.
    pub fn new(
        settings: Option<MotionSettings>,
        masks: HashMap<String, Vec<Vec<(f32, f32)>>>,
        queue: Arc<FrameQueue>,
        bus: crate::mqtt::Bus,
        controls: crate::mqtt::Controls,
    ) -> Self {
        Self {
            settings,
            masks,
            gates: Mutex::new(HashMap::new()),
            queue,
            bus,
            controls,
            motion: Mutex::new(HashMap::new()),
        }
    }

    fn publish_motion(&self, camera: &Arc<str>, moving: bool) {
        if !self.bus.enabled() {
            return;
        }
        let changed = {
            let mut motion = self.motion.lock().unwrap_or_else(|p| p.into_inner());
            motion.insert(camera.clone(), moving) != Some(moving)
        };
        if changed {
            self.bus.publish(&format!("{camera}/motion"), if moving { "ON" } else { "OFF" }, true);
        }
    }
}

impl FrameSink for GatedSink {
    fn push(&self, frame: Frame) {
        if !self.controls.detect_enabled(&frame.camera) {
            metrics::counter!("smart_cctv_frames_skipped_detect_off_total", "camera" => frame.camera.to_string())
                .increment(1);
            return;
        }
        if let Some(settings) = &self.settings {
            let started = Instant::now();
            let passes = {
                let mut gates = self.gates.lock().unwrap_or_else(|p| p.into_inner());
                let gate = gates.entry(frame.camera.clone()).or_insert_with(|| {
                    let masks = self.masks.get(&*frame.camera).cloned().unwrap_or_default();
                    MotionGate::new(settings.clone(), masks, frame.rgb.width())
                });
                let (w, h) = frame.gray.dimensions();
                gate.check(frame.gray.as_raw(), w as usize, h as usize, frame.captured_at).passes()
            };
            metrics::histogram!("smart_cctv_motion_gate_seconds").record(started.elapsed().as_secs_f64());
            self.publish_motion(&frame.camera, passes);
            if !passes {
                metrics::counter!("smart_cctv_frames_skipped_no_motion_total", "camera" => frame.camera.to_string())
                    .increment(1);
                return;
            }
        }
        self.queue.push(frame);
    }
}
