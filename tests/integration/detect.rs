//! Detection against an independent reference (Ultralytics on the same
//! weights): every image, at 640 and 320, rect and square.

use crate::support::*;
use smart_cctv::detect::postprocess::iou;
use smart_cctv::detect::preprocess::rgb_to_tensor;
use smart_cctv::detect::{DecodeOptions, Detection, Detector, DetectorOptions, LetterboxMode};
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

crate::tests![
    detections_match_the_reference needs [RealFixtures],
    the_fast_path_agrees_with_the_reference_on_every_layer_of_the_real_model needs [RealFixtures],
    raw_network_output_matches_the_reference needs [RealFixtures],
    detect_command_prints_json_and_annotates needs [RealFixtures],
    int8_keeps_the_reference_detections_and_the_person_counts needs [RealFixtures],
    model_quantize_writes_the_calibration_the_service_reads needs [RealFixtures],
    corrupt_or_truncated_weights_give_a_clear_error,
    gpu_request_without_gpu_support_is_explained,
    bench_detector_ends_with_a_stable_line,
];

fn detector(fixtures: &Path) -> &'static Detector {
    static DETECTOR: OnceLock<Detector> = OnceLock::new();
    DETECTOR.get_or_init(|| {
        let weights = fixtures.join("yolov8n/yolov8n.safetensors");
        Detector::load(&weights, &candle_core::Device::Cpu, DetectorOptions::default()).unwrap()
    })
}

struct Reference {
    class: String,
    conf: f32,
    bbox: [f32; 4],
}

fn references(fixtures: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures.join("reference_detections.json")).unwrap()).unwrap()
}

fn matches(ours: &Detection, r: &Reference) -> bool {
    ours.class_name == r.class && iou(&ours.bbox, &r.bbox) >= 0.9
}

fn detections_match_the_reference() {
    let fixtures = crate::fixtures::real();
    let refs = references(&fixtures);
    let base = detector(&fixtures);
    let mut problems = Vec::new();
    let mut checked = 0;
    for (name, entry) in refs["images"].as_object().unwrap() {
        let path = ["images", "frames"].iter().map(|d| fixtures.join(d).join(name)).find(|p| p.is_file()).unwrap();
        let img = image::open(&path).unwrap().to_rgb8();
        for (run, (size, mode)) in [
            ("rect640", (640, LetterboxMode::Rect)),
            ("square640", (640, LetterboxMode::Square)),
            ("rect320", (320, LetterboxMode::Rect)),
            ("square320", (320, LetterboxMode::Square)),
        ] {
            let detector = base.with_options(DetectorOptions {
                size,
                mode,
                decode: DecodeOptions { confidence: 0.25, ..DecodeOptions::default() },
            });
            let ours = detector.detect(&img).unwrap();
            let expected: Vec<Reference> = entry["runs"][run]["detections"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| Reference {
                    class: d["class"].as_str().unwrap().to_owned(),
                    conf: d["conf"].as_f64().unwrap() as f32,
                    bbox: std::array::from_fn(|i| d["xyxy"][i].as_f64().unwrap() as f32),
                })
                .collect();
            for r in expected.iter().filter(|r| r.conf >= 0.30) {
                checked += 1;
                match ours
                    .iter()
                    .filter(|o| matches(o, r))
                    .min_by(|a, b| (a.confidence - r.conf).abs().total_cmp(&(b.confidence - r.conf).abs()))
                {
                    Some(o) if (o.confidence - r.conf).abs() <= 0.03 => {}
                    Some(o) => problems
                        .push(format!("{name} {run}: {} conf {:.3} vs reference {:.3}", r.class, o.confidence, r.conf)),
                    None => problems.push(format!("{name} {run}: missing {} {:.3} {:?}", r.class, r.conf, r.bbox)),
                }
            }
            for o in ours.iter().filter(|o| o.confidence >= 0.30) {
                if !expected.iter().any(|r| matches(o, r)) {
                    problems.push(format!("{name} {run}: extra {} {:.3} {:?}", o.class_name, o.confidence, o.bbox));
                }
            }
        }
    }
    assert!(checked >= 50, "only {checked} reference detections checked");
    assert!(problems.is_empty(), "{} mismatches:\n{}", problems.len(), problems.join("\n"));
}

fn the_fast_path_agrees_with_the_reference_on_every_layer_of_the_real_model() {
    let fixtures = crate::fixtures::real();
    let detector = detector(&fixtures);
    let input = image::open(fixtures.join("reference/bus_square640_input.png")).unwrap().to_rgb8();
    let (w, h) = (input.width() as usize, input.height() as usize);
    let tensor = rgb_to_tensor(input.as_raw(), w, h, &candle_core::Device::Cpu).unwrap();
    // On both vector kernels this machine may have (a forced kernel it
    // lacks falls back to the next one down): each has its own Winograd
    // products and transforms. Other tests running meanwhile take the
    // forced kernel too, and are just as right on it. The portable kernel
    // is left to fastconv's own tests: on the real model it takes seconds
    // a pass, and starved the tests beside it (ALSA playback underran).
    use smart_cctv::detect::fastconv::nchwc::{Kernel, force_kernel, kernel};
    for forced in [Kernel::Avx512, Kernel::Avx2] {
        force_kernel(Some(forced));
        let running = kernel();
        smart_cctv::detect::model::layer_check(true);
        let result = detector.forward(&tensor);
        let diffs = smart_cctv::detect::model::layer_check(false);
        force_kernel(None);
        result.unwrap();
        // YOLOv8n has 57 convolutions with batch norm and SiLU (the head's
        // last three 1x1 convolutions of each branch have neither), each
        // compared on both fast paths (im2col + GEMM, and blocked). The
        // check covers this thread's pass only: other tests' frames running
        // meanwhile are not this fixture's, and were not meant to be held
        // to its bound (a demo-clip frame reached 1.45e-4 in CI; the rect320
        // fixture reaches 1.2e-4 on the direct path, 3.8e-5 by Winograd).
        assert_eq!(diffs.len(), 2 * 57, "{running:?}: layers compared");
        assert_eq!(diffs.iter().filter(|(layer, _)| layer.starts_with("nchwc")).count(), 57);
        for (layer, diff) in &diffs {
            assert!(*diff <= 1e-4, "{running:?}: {layer}: max |fast - reference| = {diff}");
        }
        let worst = diffs.iter().map(|d| d.1).fold(0.0, f32::max);
        eprintln!("{running:?}: {} layers, worst max |fast - reference| = {worst:e}", diffs.len());
    }
}

fn raw_network_output_matches_the_reference() {
    let fixtures = crate::fixtures::real();
    let detector = detector(&fixtures);
    for run in ["rect640", "square640", "rect320", "square320"] {
        let input = image::open(fixtures.join(format!("reference/bus_{run}_input.png"))).unwrap().to_rgb8();
        let (w, h) = (input.width() as usize, input.height() as usize);
        let tensor = rgb_to_tensor(input.as_raw(), w, h, &candle_core::Device::Cpu).unwrap();
        let ours = detector.forward(&tensor).unwrap();
        let raw = candle_core::safetensors::load(
            fixtures.join(format!("reference/bus_{run}_raw.safetensors")),
            &candle_core::Device::Cpu,
        )
        .unwrap();
        let expected = &raw["output"];
        assert_eq!(ours.dims(), expected.dims(), "{run}");
        // numpy/torch `allclose(ours, expected, atol=1e-3)`, whose default
        // rtol is 1e-5: box coordinates reach 640 px, where f32 rounding in a
        // different accumulation order alone is a few 1e-4 px.
        let ours = ours.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let expected = expected.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let (atol, rtol) = (1e-3f32, 1e-5f32);
        let worst =
            ours.iter().zip(&expected).map(|(a, b)| (a - b).abs() - (atol + rtol * b.abs())).fold(f32::MIN, f32::max);
        assert!(worst <= 0.0, "{run}: exceeds allclose(atol=1e-3) by {worst}");
    }
}

/// The gate of `processing.detection.precision: int8`: on every fixture
/// image at 640 and 320, rect and square, each reference detection with
/// confidence ≥ 0.5 is still found (same class, IoU ≥ 0.8); on the walking
/// clip, the person count of each frame is within one of f32's on at least
/// 95 % of frames. Each is calibrated on frames it is not judged on: the
/// images on the walking clip (the demo camera's, the default), the clip on
/// the stills slideshow.
fn int8_keeps_the_reference_detections_and_the_person_counts() {
    use smart_cctv::camera::decode::clip_frames;
    let fixtures = crate::fixtures::real();
    let base = detector(&fixtures);
    let walking = fixtures.join("video/people_walking_640x480_15fps_10s.mp4");
    let calibrated_on = |clip: &Path| {
        let frames = clip_frames(clip, 8, 32, 640).unwrap();
        base.in_int8(&base.calibrate(&frames).unwrap()).unwrap()
    };
    let int8 = calibrated_on(&walking);
    let refs = references(&fixtures);
    let (mut checked, mut missing) = (0, Vec::new());
    for (name, entry) in refs["images"].as_object().unwrap() {
        let path = ["images", "frames"].iter().map(|d| fixtures.join(d).join(name)).find(|p| p.is_file()).unwrap();
        let img = image::open(&path).unwrap().to_rgb8();
        for (run, size, mode) in [
            ("rect640", 640, LetterboxMode::Rect),
            ("square640", 640, LetterboxMode::Square),
            ("rect320", 320, LetterboxMode::Rect),
            ("square320", 320, LetterboxMode::Square),
        ] {
            let options =
                DetectorOptions { size, mode, decode: DecodeOptions { confidence: 0.25, ..Default::default() } };
            let ours = int8.with_options(options).detect(&img).unwrap();
            for r in entry["runs"][run]["detections"].as_array().unwrap() {
                let (class, conf) = (r["class"].as_str().unwrap(), r["conf"].as_f64().unwrap());
                if conf < 0.5 {
                    continue;
                }
                checked += 1;
                let bbox: [f32; 4] = std::array::from_fn(|i| r["xyxy"][i].as_f64().unwrap() as f32);
                if !ours.iter().any(|o| o.class_name == class && iou(&o.bbox, &bbox) >= 0.8) {
                    missing.push(format!("{name} {run}: {class} {conf:.3} {bbox:?}"));
                }
            }
        }
    }
    assert!(checked >= 40, "only {checked} reference detections checked");
    assert!(missing.is_empty(), "int8 misses {} of {checked}:\n{}", missing.len(), missing.join("\n"));

    let int8 = calibrated_on(&fixtures.join("video/stills_slideshow_640x480_15fps_10s.mp4"));
    let frames = clip_frames(&walking, 1, usize::MAX, 640).unwrap();
    let people = |d: &Detector, img: &image::RgbImage| {
        d.detect(img).unwrap().iter().filter(|o| o.class_name == "person").count() as i64
    };
    let agreeing = frames.iter().filter(|f| (people(base, f) - people(&int8, f)).abs() <= 1).count();
    eprintln!(
        "int8: {checked} reference detections kept; person counts within one on {agreeing} of {} frames",
        frames.len()
    );
    assert!(frames.len() >= 100, "{} frames decoded", frames.len());
    assert!(agreeing * 100 >= frames.len() * 95, "person counts within one on {agreeing} of {} frames", frames.len());
}

/// `model quantize` writes a calibration beside the weights (or where
/// told); the service's loader reads it, and replaces one that is damaged.
fn model_quantize_writes_the_calibration_the_service_reads() {
    use smart_cctv::detect::int8::{Calibrated, Ranges, calibration_path, int8_detector};
    let fixtures = crate::fixtures::real();
    let dir = tempfile::tempdir().unwrap();
    let weights = dir.path().join("yolov8n.safetensors");
    std::fs::copy(fixtures.join("yolov8n/yolov8n.safetensors"), &weights).unwrap();
    let walking = fixtures.join("video/people_walking_640x480_15fps_10s.mp4");
    let output = Command::new(BIN)
        .args(["model", "quantize", "--size", "320", "--model"])
        .arg(&weights)
        .arg("--clip")
        .arg(&walking)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let path = calibration_path(&weights);
    assert!(String::from_utf8_lossy(&output.stdout).contains(path.to_str().unwrap()));
    let ranges = Ranges::read(&path).unwrap();
    // 57 convolutions with batch norm and SiLU, and the head's 6 last ones.
    assert_eq!((ranges.ranges.len(), ranges.frames, ranges.size), (63, 32, 320));
    assert!(ranges.ranges.iter().all(|(lo, hi)| lo < hi), "{:?}", ranges.ranges);
    assert_eq!(ranges.weights_sha256, smart_cctv::detect::weights::sha256_file(&weights).unwrap());

    let detector = Detector::load(&weights, &candle_core::Device::Cpu, DetectorOptions::default()).unwrap();
    let (int8, how) = int8_detector(&detector, &weights, &walking).unwrap();
    assert_eq!(how, Calibrated::Read(path.clone()));
    assert!(int8.is_int8() && !detector.is_int8());
    // Another model's calibration, even of the same shape, is taken again.
    let other = Ranges { weights_sha256: "0".repeat(64), ..ranges.clone() };
    other.write(&path).unwrap();
    let (_, how) = int8_detector(&detector, &weights, &walking).unwrap();
    assert!(matches!(&how, Calibrated::Taken { saved: Ok(p), .. } if *p == path), "{how:?}");
    assert_eq!(Ranges::read(&path).unwrap().weights_sha256, ranges.weights_sha256);
    // Damaged: a clear error naming the file; the loader takes a new one.
    std::fs::write(&path, "{\"size\": 320, \"frames\": 3, \"ranges\": [[1, NaN]]}").unwrap();
    let err = Ranges::read(&path).unwrap_err().to_string();
    assert!(err.contains(path.to_str().unwrap()), "{err}");
    std::fs::write(&path, "{\"size\": 320, \"frames\": 3, \"ranges\": [[0.0, 1.0]]}").unwrap();
    let err = detector.in_int8(&Ranges::read(&path).unwrap()).err().unwrap().to_string();
    assert!(err.contains("63 layers"), "{err}");
    let (_, how) = int8_detector(&detector, &weights, &walking).unwrap();
    assert!(matches!(&how, Calibrated::Taken { frames: 32, saved: Ok(p), .. } if *p == path), "{how:?}");
    assert_eq!(Ranges::read(&path).unwrap().ranges.len(), 63);
}

fn detect_command_prints_json_and_annotates() {
    let fixtures = crate::fixtures::real();
    let out_dir = tempfile::tempdir().unwrap();
    let bus = fixtures.join("images/bus.jpg");
    let output = Command::new(BIN)
        .args(["detect", "--json", "--confidence", "0.5", "--model"])
        .arg(fixtures.join("yolov8n/yolov8n.safetensors"))
        .arg("--annotate")
        .arg(out_dir.path())
        .arg(&bus)
        .current_dir(out_dir.path())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let line: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(line["image"], bus.to_str().unwrap());
    let classes: Vec<&str> =
        line["detections"].as_array().unwrap().iter().map(|d| d["class"].as_str().unwrap()).collect();
    assert_eq!(classes.iter().filter(|c| **c == "person").count(), 3, "{classes:?}");
    assert!(classes.contains(&"bus"));
    let first = &line["detections"][0];
    assert!(first["confidence"].as_f64().unwrap() > 0.5);
    assert_eq!(first["box"].as_array().unwrap().len(), 4);
    let annotated = image::open(out_dir.path().join("bus.jpg")).unwrap();
    assert_eq!((annotated.width(), annotated.height()), (810, 1080));
}

fn corrupt_or_truncated_weights_give_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(crate::fixtures::random_model()).unwrap();
    let image = crate::fixtures::any_image(dir.path());
    let truncated = dir.path().join("truncated.safetensors");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let garbage = dir.path().join("garbage.safetensors");
    std::fs::write(&garbage, b"this is not a model at all").unwrap();
    for path in [&truncated, &garbage] {
        let err =
            Detector::load(path, &candle_core::Device::Cpu, DetectorOptions::default()).err().unwrap().to_string();
        assert!(err.contains(path.to_str().unwrap()) && err.contains("not a valid safetensors file"), "{err}");
        let output = Command::new(BIN).args(["detect", "--model"]).arg(path).arg(&image).output().unwrap();
        assert_eq!(output.status.code(), Some(1));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("not a valid safetensors file"), "{stderr}");
    }
    let err =
        Detector::load(&dir.path().join("missing.safetensors"), &candle_core::Device::Cpu, DetectorOptions::default())
            .err()
            .unwrap()
            .to_string();
    assert!(err.contains("not found"), "{err}");
}

fn gpu_request_without_gpu_support_is_explained() {
    if cfg!(feature = "cuda") {
        return;
    }
    let err = smart_cctv::detect::device_from_config("cuda:0").err().unwrap().to_string();
    assert!(err.contains("no GPU support") && err.contains("--features cuda"), "{err}");
}

fn bench_detector_ends_with_a_stable_line() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(BIN)
        .args(["bench", "detector", "--size", "320", "--threads", "1", "--iterations", "2", "--warmup", "1", "--model"])
        .arg(crate::fixtures::random_model())
        .arg("--image")
        .arg(crate::fixtures::any_image(dir.path()))
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let last = stdout.lines().last().unwrap();
    let fields: Vec<(&str, &str)> = last.split(' ').map(|kv| kv.split_once('=').unwrap()).collect();
    let keys: Vec<&str> = fields.iter().map(|(k, _)| *k).collect();
    assert_eq!(keys, ["median_ms", "p90_ms", "size", "threads"], "{last}");
    assert!(fields[0].1.parse::<f64>().unwrap() > 0.0);
    assert_eq!((fields[2].1, fields[3].1), ("320", "1"));
}
