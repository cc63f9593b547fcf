//! Cameras: one actor per configured camera under the dynamic `cameras`
//! supervisor, so a reload adds, removes or restarts one camera without
//! touching the others.
//!
//! - `source.rs`: RTSP (retina), V4L2 (nokhwa) and file (FFmpeg) sources;
//! - `decode.rs`: FFmpeg decoding and scaling;
//! - `actor.rs`: the camera actor: connect, stream, detect stalls, back off;
//! - `probe.rs`: `smart-cctv cameras test`.
//!
//! Frames leave through a [`FrameSink`], whose queues are bounded and drop
//! the oldest frame: a slow consumer never blocks a camera.

pub mod actor;
pub mod decode;
pub mod probe;
pub mod source;

use image::{GrayImage, RgbImage};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime};

pub use actor::{CameraActor, CameraArgs, CameraMsg, CameraPhase};

/// One decoded, scaled picture from a camera.
#[derive(Clone)]
pub struct Frame {
    pub camera: Arc<str>,
    /// Per camera, from 1, in decode order.
    pub seq: u64,
    /// Presentation timestamp in the stream's time base, when known.
    pub pts: Option<i64>,
    /// Wall-clock capture time, for records.
    pub captured: SystemTime,
    /// Monotonic capture time, for latency.
    pub captured_at: Instant,
    /// Scaled so its longer side is at most the detector's input size.
    pub rgb: Arc<RgbImage>,
    /// Small grayscale copy for the motion gate.
    pub gray: Arc<GrayImage>,
}

/// Where a camera's frames go. `push` must never block.
pub trait FrameSink: Send + Sync {
    fn push(&self, frame: Frame);
}

/// Progress counters a source updates and its camera actor reads.
#[derive(Debug)]
pub struct SourceStats {
    camera: Arc<str>,
    base: Instant,
    decoded: AtomicU64,
    packets: AtomicU64,
    /// Nanoseconds after `base` of the last decoded frame; 0 for none yet.
    last_frame_ns: AtomicU64,
    /// What the source says it is decoding (`avc1.42C01E`, `h264`, `mjpeg`).
    codec: std::sync::Mutex<Option<String>>,
}

impl SourceStats {
    pub fn new(camera: Arc<str>) -> Self {
        Self {
            camera,
            base: Instant::now(),
            decoded: AtomicU64::new(0),
            packets: AtomicU64::new(0),
            last_frame_ns: AtomicU64::new(0),
            codec: Default::default(),
        }
    }

    /// Counts a decoded frame and returns its sequence number.
    pub fn frame_decoded(&self) -> u64 {
        self.last_frame_ns.store(self.base.elapsed().as_nanos().max(1) as u64, Ordering::Relaxed);
        metrics::counter!("smart_cctv_camera_frames_decoded_total", "camera" => self.camera.to_string()).increment(1);
        self.decoded.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub fn set_codec(&self, codec: String) {
        *self.codec.lock().unwrap_or_else(|p| p.into_inner()) = Some(codec);
    }

    pub fn codec(&self) -> Option<String> {
        self.codec.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn packet_seen(&self) {
        self.packets.fetch_add(1, Ordering::Relaxed);
    }

    pub fn decoded(&self) -> u64 {
        self.decoded.load(Ordering::Relaxed)
    }

    /// When the last frame was decoded.
    pub fn last_frame(&self) -> Option<Instant> {
        match self.last_frame_ns.load(Ordering::Relaxed) {
            0 => None,
            ns => Some(self.base + std::time::Duration::from_nanos(ns)),
        }
    }
}

/// A sink that only counts, for `cameras test` and for tests.
#[derive(Debug, Default)]
pub struct CountingSink {
    pub frames: AtomicU64,
    pub last_size: std::sync::Mutex<Option<(u32, u32)>>,
}

impl FrameSink for CountingSink {
    fn push(&self, frame: Frame) {
        self.frames.fetch_add(1, Ordering::Relaxed);
        *self.last_size.lock().unwrap_or_else(|p| p.into_inner()) = Some(frame.rgb.dimensions());
    }
}
