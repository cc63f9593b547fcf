//! The motion gate on real decoded video: a static scene costs almost
//! nothing, moving objects and people walking pass, and a masked region
//! never triggers. Frames
//! come from the real file source; time is injected at 15 fps.

use smart_cctv::camera::source::{SourceContext, run_file};
use smart_cctv::camera::{Frame, FrameSink, SourceStats};
use smart_cctv::pipeline::motion::{MotionGate, MotionSettings};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::fixtures::{Clip, clip, ffmpeg};

crate::tests![
    static_scene_skips_almost_every_frame needs [Ffmpeg],
    moving_objects_pass_the_gate needs [Ffmpeg],
    people_walking_pass_the_gate needs [RealFixtures],
    motion_inside_a_mask_never_triggers needs [Ffmpeg],
];

/// Collects the grayscale frames of one pass, then stops the source.
struct Collect {
    frames: Mutex<Vec<Arc<image::GrayImage>>>,
    limit: usize,
    stop: Arc<AtomicBool>,
}

impl FrameSink for Collect {
    fn push(&self, frame: Frame) {
        let mut frames = self.frames.lock().unwrap();
        frames.push(frame.gray);
        if frames.len() >= self.limit {
            self.stop.store(true, Ordering::Relaxed);
        }
    }
}

fn decode(path: &Path, limit: usize) -> Vec<Arc<image::GrayImage>> {
    let stop = Arc::new(AtomicBool::new(false));
    let sink = Arc::new(Collect { frames: Mutex::new(Vec::new()), limit, stop: stop.clone() });
    let ctx = SourceContext {
        camera: Arc::from("test"),
        analysis_size: 640,
        fps: None,
        frame_skip: 0,
        sink: sink.clone(),
        stats: Arc::new(SourceStats::new(Arc::from("test"))),
        stop,
    };
    run_file(path, false, &ctx).unwrap();
    let frames = sink.frames.lock().unwrap().clone();
    assert_eq!(frames.len(), limit);
    frames
}

/// Fraction of frames that pass, at 15 fps of injected time.
fn pass_rate(frames: &[Arc<image::GrayImage>], masks: Vec<Vec<(f32, f32)>>) -> f64 {
    let mut gate = MotionGate::new(MotionSettings::default(), masks, 640);
    let t0 = Instant::now();
    let passed = frames
        .iter()
        .enumerate()
        .filter(|(i, g)| {
            let now = t0 + Duration::from_millis(*i as u64 * 1000 / 15);
            gate.check(g.as_raw(), g.width() as usize, g.height() as usize, now).passes()
        })
        .count();
    passed as f64 / frames.len() as f64
}

fn static_scene_skips_almost_every_frame() {
    let frames = decode(&clip(Clip::Still), 150);
    let rate = pass_rate(&frames, vec![]);
    // The first frame (no background yet) and one keepalive every 10 s pass.
    assert!(rate <= 0.05, "{:.1}% of a static scene passed", rate * 100.0);
}

fn moving_objects_pass_the_gate() {
    let frames = decode(&clip(Clip::Moving), 150);
    let rate = pass_rate(&frames, vec![]);
    assert!(rate >= 0.9, "only {:.1}% of the moving clip passed", rate * 100.0);
}

fn people_walking_pass_the_gate() {
    let frames = decode(&crate::fixtures::walking_clip(), 150);
    let rate = pass_rate(&frames, vec![]);
    assert!(rate >= 0.9, "only {:.1}% of the walking clip passed", rate * 100.0);
}

fn motion_inside_a_mask_never_triggers() {
    let dir = tempfile::tempdir().unwrap();
    let clip = dir.path().join("box.mp4");
    // A white box sliding back and forth in the left half of a grey scene.
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "color=c=gray:s=640x480:r=15:d=10",
        "-f",
        "lavfi",
        "-i",
        "color=c=white:s=60x60:r=15:d=10",
        "-filter_complex",
        "[0][1]overlay=x='100+100*sin(t*3)':y=200",
        "-c:v",
        "libx264",
        "-g",
        "15",
        "-pix_fmt",
        "yuv420p",
        clip.to_str().unwrap(),
    ]);
    let frames = decode(&clip, 150);
    assert!(pass_rate(&frames, vec![]) >= 0.9, "the moving box should pass without a mask");
    let left_half = vec![(0.0, 0.0), (320.0, 0.0), (320.0, 480.0), (0.0, 480.0)];
    let masked = pass_rate(&frames, vec![left_half]);
    // Only the first frame (it sets the background) and the 10 s keepalive.
    assert!(masked <= 2.0 / 150.0, "{:.1}% passed with the motion masked", masked * 100.0);
}
