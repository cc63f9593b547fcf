//! `smart-cctv detect IMAGE...`: runs the detector on still images, the way
//! users check a model or a threshold.

use super::Cli;
use crate::detect::weights::ModelStore;
use crate::detect::{DecodeOptions, Detector, DetectorOptions, LetterboxMode, device_from_config};
use crate::draw::{class_colour, draw_detection};
use anyhow::Context;
use clap::Args;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct DetectArgs {
    /// Images (JPEG or PNG)
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
    /// Weights file or model name [default: processing.detection.model]
    #[arg(long)]
    pub model: Option<String>,
    /// Network input size
    #[arg(long, default_value_t = 640, value_parser = parse_size)]
    pub size: usize,
    /// Letterbox padding
    #[arg(long, value_enum, default_value_t = LetterboxMode::Rect)]
    pub mode: LetterboxMode,
    /// Minimum confidence [default: processing.detection.confidence_threshold]
    #[arg(long)]
    pub confidence: Option<f32>,
    /// Only these classes, comma-separated COCO names (person,car)
    #[arg(long, value_delimiter = ',')]
    pub classes: Vec<String>,
    /// One JSON object per image and line
    #[arg(long)]
    pub json: bool,
    /// Write each image with its boxes drawn into this directory
    #[arg(long)]
    pub annotate: Option<PathBuf>,
}

pub fn run(cli: &Cli, args: &DetectArgs) -> anyhow::Result<i32> {
    let config = crate::config::load(cli.config_path().as_deref())?.config;
    let detection = &config.processing.detection;
    let classes = args
        .classes
        .iter()
        .map(|name| crate::coco::class_index(name).with_context(|| format!("--classes: `{name}` is not a COCO class")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let options = DetectorOptions {
        size: args.size,
        mode: args.mode,
        decode: DecodeOptions {
            confidence: args.confidence.unwrap_or(detection.confidence_threshold as f32),
            classes: (!classes.is_empty()).then_some(classes),
            ..DecodeOptions::default()
        },
    };
    let store = ModelStore::open(&ModelStore::default_dir())?;
    let weights = store.resolve(args.model.as_deref().unwrap_or(&detection.model))?;
    let device = device_from_config(&detection.device)?;
    let detector = Detector::load(&weights, &device, options)?;
    if let Some(dir) = &args.annotate {
        std::fs::create_dir_all(dir).with_context(|| format!("--annotate: cannot create {}", dir.display()))?;
    }

    let mut failed = 0;
    for path in &args.images {
        let img = match image::open(path) {
            Ok(img) => img.to_rgb8(),
            Err(e) => {
                eprintln!("{}: cannot read image: {e}", path.display());
                failed += 1;
                continue;
            }
        };
        let detections = detector.detect(&img)?;
        if args.json {
            let line = serde_json::json!({ "image": path, "detections": detections });
            println!("{line}");
        } else {
            println!("{}: {} detection(s)", path.display(), detections.len());
            for d in &detections {
                let [x1, y1, x2, y2] = d.bbox;
                println!("  {:<14} {:.2}  [{x1:.0}, {y1:.0}, {x2:.0}, {y2:.0}]", d.class_name, d.confidence);
            }
        }
        if let Some(dir) = &args.annotate {
            let mut canvas = img;
            for d in &detections {
                let label = format!("{} {:.2}", d.class_name, d.confidence);
                draw_detection(&mut canvas, d.bbox, &label, class_colour(d.class_id));
            }
            let name = path.file_stem().map_or_else(|| "image".into(), |s| s.to_string_lossy().into_owned());
            let out = dir.join(format!("{name}.jpg"));
            canvas.save(&out).with_context(|| format!("cannot write {}", out.display()))?;
        }
    }
    Ok(if failed > 0 { 1 } else { 0 })
}

/// The network input sizes the detector is checked at.
pub fn parse_size(text: &str) -> Result<usize, String> {
    match text {
        "640" => Ok(640),
        "320" => Ok(320),
        _ => Err(format!("`{text}` is not a supported size; use 640 or 320")),
    }
}
