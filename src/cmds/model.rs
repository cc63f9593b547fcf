//! `smart-cctv model quantize`: calibrates the int8 detector
//! (`processing.detection.precision: int8`) on frames from the user's own
//! cameras, where the demo clip's street may not look like their scene.

use super::Cli;
use crate::detect::int8::{DEMO_CLIP, calibrate_on_clip, calibration_path};
use crate::detect::weights::ModelStore;
use crate::detect::{Detector, DetectorOptions};
use clap::{Args, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// Calibrate int8 on a clip: each layer's activation range over frames
    /// spread across it, written beside the weights for the service to read
    Quantize(QuantizeArgs),
}

#[derive(Debug, Args)]
pub struct QuantizeArgs {
    /// A video file from your cameras [default: the demo clip]
    #[arg(long)]
    pub clip: Option<PathBuf>,
    /// Weights file or model name [default: processing.detection.model]
    #[arg(long)]
    pub model: Option<String>,
    /// Network input size [default: processing.detection.size]
    #[arg(long, value_parser = super::detect::parse_size)]
    pub size: Option<usize>,
    /// Where to write [default: beside the weights, NAME.int8.json, where the service looks]
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub fn run(cli: &Cli, command: &ModelCommand) -> anyhow::Result<i32> {
    let ModelCommand::Quantize(args) = command;
    let config = crate::config::load(cli.config_path().as_deref())?.config;
    let detection = &config.processing.detection;
    let store = ModelStore::open(&ModelStore::default_dir())?;
    let weights = store.resolve(args.model.as_deref().unwrap_or(&detection.model))?;
    let options = DetectorOptions { size: args.size.unwrap_or(detection.size), ..DetectorOptions::default() };
    let detector = Detector::load(&weights, &candle_core::Device::Cpu, options)?;
    let clip = args.clip.clone().unwrap_or_else(|| PathBuf::from(DEMO_CLIP));
    let ranges = calibrate_on_clip(&detector, &weights, &clip)?;
    // The network builds from it: a calibration the service would refuse is not written.
    detector.in_int8(&ranges)?;
    let out = args.out.clone().unwrap_or_else(|| calibration_path(&weights));
    ranges.write(&out)?;
    println!(
        "calibrated {} layers on {} frames of {} at {}; wrote {}",
        ranges.ranges.len(),
        ranges.frames,
        clip.display(),
        ranges.size,
        out.display()
    );
    if !crate::detect::fastconv::nchwc::int8::vnni() {
        println!("note: this CPU has no AVX-512 VNNI, so precision int8 runs in f32 here");
    }
    Ok(0)
}
