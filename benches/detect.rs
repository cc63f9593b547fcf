//! Detector benchmarks: forward latency at 320 and 640 (square inputs, as the
//! ONNX Runtime and PyTorch baselines in `../shared/bench` are timed), the
//! pre- and post-processing around it, and the motion gate per frame.
//!
//! `cargo bench --bench detect`; the weights come from `SMART_CCTV_WEIGHTS`
//! or `../shared/fixtures/yolov8n/yolov8n.safetensors`.

use criterion::{Criterion, criterion_group, criterion_main};
use smart_cctv::detect::postprocess::{DecodeOptions, decode};
use smart_cctv::detect::preprocess::{Letterbox, to_input};
use smart_cctv::detect::{Detector, DetectorOptions, LetterboxMode};
use smart_cctv::pipeline::motion::{MotionGate, MotionSettings};
use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures")
}

fn weights() -> Option<PathBuf> {
    let path = std::env::var_os("SMART_CCTV_WEIGHTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| fixtures().join("yolov8n/yolov8n.safetensors"));
    path.is_file().then_some(path)
}

fn frame() -> image::RgbImage {
    let path = fixtures().join("frames/people_walking_f075.png");
    image::open(&path)
        .map(|i| i.to_rgb8())
        .unwrap_or_else(|_| image::RgbImage::from_pixel(640, 480, image::Rgb([90, 100, 110])))
}

fn forward(c: &mut Criterion) {
    let Some(weights) = weights() else {
        eprintln!("no weights: skipping the forward benchmarks");
        return;
    };
    let detector = Detector::load(&weights, &candle_core::Device::Cpu, DetectorOptions::default()).unwrap();
    let img = frame();
    let mut group = c.benchmark_group("forward");
    group.sample_size(10).measurement_time(Duration::from_secs(10));
    for size in [320, 640] {
        let (input, _) = to_input(&img, size, LetterboxMode::Square, detector.device()).unwrap();
        group.bench_function(format!("yolov8n_{size}x{size}"), |b| {
            b.iter(|| detector.forward(black_box(&input)).unwrap())
        });
    }
    group.finish();

    let mut group = c.benchmark_group("processing");
    group.bench_function("preprocess_640x480_to_640", |b| {
        b.iter(|| to_input(black_box(&img), 640, LetterboxMode::Rect, &candle_core::Device::Cpu).unwrap())
    });
    let (input, lb) = to_input(&img, 640, LetterboxMode::Rect, detector.device()).unwrap();
    let output = detector.forward(&input).unwrap().squeeze(0).unwrap();
    let anchors = output.dim(1).unwrap();
    let data = output.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    group.bench_function("postprocess_640x480", |b| {
        b.iter(|| decode(black_box(&data), anchors, &lb, &DecodeOptions::default()))
    });
    group.finish();
}

fn motion_gate(c: &mut Criterion) {
    // The gate sees a 640×480 camera frame scaled to 160×120 by the decoder.
    let (w, h) = (160usize, 120usize);
    let still: Vec<u8> = (0..w * h).map(|i| (i * 7 % 200) as u8).collect();
    let mut moving = still.clone();
    for y in 40..70 {
        for x in 60..80 {
            moving[y * w + x] = 250;
        }
    }
    let mut gate = MotionGate::new(MotionSettings::default(), vec![], 640);
    let t0 = Instant::now();
    gate.check(&still, w, h, t0);
    let mut flip = false;
    c.bench_function("motion_gate_640x480_frame", |b| {
        b.iter(|| {
            flip = !flip;
            gate.check(black_box(if flip { &moving } else { &still }), w, h, t0)
        })
    });
    let _ = Letterbox::new(640, 480, 640, LetterboxMode::Rect);
}

criterion_group!(benches, forward, motion_gate);
criterion_main!(benches);
