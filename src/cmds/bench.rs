//! `smart-cctv bench detector`: times the detector's forward pass, the way
//! users compare models and machines. The last line is stable for scripts:
//! `median_ms=12.3 p90_ms=13.0 size=320 threads=2`.

use super::Cli;
use crate::detect::preprocess::to_input;
use crate::detect::weights::ModelStore;
use crate::detect::{Detector, DetectorOptions, LetterboxMode};
use anyhow::Context;
use clap::{Args, Subcommand};
use std::path::PathBuf;
use std::time::Instant;

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Time the detector's forward pass on a real image after a warm-up
    Detector(DetectorBench),
}

#[derive(Debug, Args)]
pub struct DetectorBench {
    /// Weights file or model name [default: processing.detection.model]
    #[arg(long)]
    pub model: Option<String>,
    /// Network input size (square)
    #[arg(long, default_value_t = 640, value_parser = super::detect::parse_size)]
    pub size: usize,
    /// Compute threads [default: all cores]
    #[arg(long)]
    pub threads: Option<usize>,
    /// Timed iterations
    #[arg(long, default_value_t = 20)]
    pub iterations: usize,
    /// Warm-up iterations
    #[arg(long, default_value_t = 3)]
    pub warmup: usize,
    /// Frames per forward pass (to measure whether batching cameras pays)
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Image to run on [default: the first frame of the demo clip]
    #[arg(long)]
    pub image: Option<PathBuf>,
    /// Also print where the time goes, layer by layer (timed separately,
    /// after the timed iterations, so it does not slow them)
    #[arg(long)]
    pub profile: bool,
    /// The same per-layer table (kind, shape, ms, GFLOP/s), to set beside
    /// ONNX Runtime's own profile of the model
    #[arg(long)]
    pub layers: bool,
    /// Use candle's conv2d and silu (the reference path) instead of the fused fast path
    #[arg(long)]
    pub reference: bool,
    /// The CPU fast path: `blocked` (direct convolutions on NCHWc, the
    /// default) or `gemm` (the earlier im2col + GEMM path)
    #[arg(long, default_value = "blocked", value_parser = ["blocked", "gemm"])]
    pub conv: String,
    /// The blocked path's micro-kernel: `auto` (the best this CPU has),
    /// `avx512`, `avx2` or `generic` (a kernel the CPU lacks falls back)
    #[arg(long, default_value = "auto", value_parser = ["auto", "avx512", "avx2", "generic"])]
    pub kernel: String,
    /// `f32`, or `int8` (calibrated first on the demo clip's frames; the
    /// calibration is not timed)
    #[arg(long, default_value = "f32", value_parser = ["f32", "int8"])]
    pub precision: String,
}

pub fn run(cli: &Cli, command: &BenchCommand) -> anyhow::Result<i32> {
    let BenchCommand::Detector(args) = command;
    let threads = args.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    anyhow::ensure!(threads >= 1, "--threads must be at least 1");
    // candle sizes its thread pool from this on first use; nothing has run yet.
    // SAFETY: no other thread exists yet that could read the environment.
    unsafe { std::env::set_var("RAYON_NUM_THREADS", threads.to_string()) };

    crate::detect::fastconv::set_enabled(!args.reference);
    crate::detect::model::set_blocked(args.conv == "blocked");
    {
        use crate::detect::fastconv::nchwc::{Kernel, force_kernel};
        force_kernel(match args.kernel.as_str() {
            "avx512" => Some(Kernel::Avx512),
            "avx2" => Some(Kernel::Avx2),
            "generic" => Some(Kernel::Generic),
            _ => None,
        });
    }
    let config = crate::config::load(cli.config_path().as_deref())?.config;
    let store = ModelStore::open(&ModelStore::default_dir())?;
    let weights = store.resolve(args.model.as_deref().unwrap_or(&config.processing.detection.model))?;
    let options = DetectorOptions { size: args.size, mode: LetterboxMode::Square, ..DetectorOptions::default() };
    let mut detector = Detector::load(&weights, &candle_core::Device::Cpu, options)?;
    if args.precision == "int8" {
        let ranges = crate::detect::int8::calibrate_on_clip(&detector, &weights, std::path::Path::new(DEMO_CLIP))?;
        detector = detector.in_int8(&ranges)?;
    }
    let image = match &args.image {
        Some(path) => image::open(path).with_context(|| format!("cannot read {}", path.display()))?.to_rgb8(),
        None => demo_frame()?,
    };
    let (one, _) = to_input(&image, args.size, LetterboxMode::Square, detector.device())?;
    let input = candle_core::Tensor::cat(&vec![&one; args.batch.max(1)], 0)?;

    for _ in 0..args.warmup {
        detector.forward(&input)?;
    }
    let mut times: Vec<f64> = (0..args.iterations.max(1))
        .map(|_| {
            let started = Instant::now();
            detector.forward(&input).map(|_| started.elapsed().as_secs_f64() * 1000.0)
        })
        .collect::<Result<_, _>>()?;
    times.sort_by(f64::total_cmp);
    let pick = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    let (median, p90) = (pick(0.5), pick(0.9));
    println!(
        "yolov8{} {}x{} batch {} on {} thread(s), {} path: {} iterations after {} warm-up",
        detector.variant,
        args.size,
        args.size,
        args.batch,
        threads,
        match (args.reference, args.conv.as_str()) {
            (true, _) => "reference".to_owned(),
            (false, "blocked") =>
                format!("fast (blocked, {:?}, {})", crate::detect::fastconv::nchwc::kernel(), args.precision),
            (false, _) => "fast (im2col + GEMM)".to_owned(),
        },
        times.len(),
        args.warmup
    );
    if args.batch > 1 {
        println!("  per frame: median {:.1} ms", median / args.batch as f64);
    }
    println!("  min {:.1} ms  median {median:.1} ms  p90 {p90:.1} ms  max {:.1} ms", times[0], times[times.len() - 1]);
    if args.profile || args.layers {
        print_profile(&detector, &input, args.iterations.max(1))?;
    }
    println!("median_ms={median:.1} p90_ms={p90:.1} size={} threads={threads}", args.size);
    Ok(0)
}

/// Runs `iterations` more forward passes with per-layer timing and prints the
/// layers by total time, then the same grouped by kind.
fn print_profile(detector: &Detector, input: &candle_core::Tensor, iterations: usize) -> anyhow::Result<()> {
    use crate::detect::profile;
    profile::enable(true);
    crate::detect::fastconv::take_stage_times();
    let started = Instant::now();
    for _ in 0..iterations {
        detector.forward(input)?;
    }
    let total = started.elapsed().as_secs_f64() * 1000.0 / iterations as f64;
    profile::enable(false);
    let stages = crate::detect::fastconv::take_stage_times().map(|d| d.as_secs_f64() * 1000.0 / iterations as f64);
    let mut layers: Vec<(String, u64, f64)> = profile::take()
        .into_iter()
        .map(|(label, (calls, time))| {
            (label, calls / iterations as u64, time.as_secs_f64() * 1000.0 / iterations as f64)
        })
        .collect();
    layers.sort_by(|a, b| b.2.total_cmp(&a.2));
    println!("profile: {total:.1} ms per forward pass");
    println!("  {:>8} {:>6} {:>6} {:>8}  layer", "ms", "%", "calls", "GFLOP/s");
    for (label, calls, ms) in &layers {
        // Blocked layers carry their work: `[12.3 MFLOP]` per call.
        let gflops = label
            .rsplit_once('[')
            .and_then(|(_, tail)| tail.strip_suffix(" MFLOP]")?.parse::<f64>().ok())
            .map(|mflop| format!("{:>8.1}", mflop * *calls as f64 / ms))
            .unwrap_or_else(|| format!("{:>8}", ""));
        println!("  {ms:>8.2} {:>5.1}% {calls:>6} {gflops}  {label}", ms * 100.0 / total);
    }
    let mut kinds: std::collections::BTreeMap<&str, f64> = std::collections::BTreeMap::new();
    // (Per-layer labels are kinds of their own unless grouped here.)
    for (label, _, ms) in &layers {
        let kind = match label.as_str() {
            l if l.starts_with("fused conv") => "fused conv + bias + silu (fast path)",
            l if l.starts_with("nchwc conv 1x1") => "blocked conv 1x1",
            l if l.starts_with("nchwc conv 3x3") && l.contains(" s2 ") => "blocked conv 3x3 stride 2",
            l if l.starts_with("nchwc conv 3x3") && l.contains(" winograd") => "blocked conv 3x3 stride 1, Winograd",
            l if l.starts_with("nchwc conv 3x3") => "blocked conv 3x3 stride 1",
            l if l.starts_with("conv 1x1") => "conv 1x1",
            l if l.starts_with("conv 3x3") && l.contains(" s2 ") => "conv 3x3 stride 2",
            l if l.starts_with("conv 3x3") => "conv 3x3 stride 1",
            other => other,
        };
        *kinds.entry(kind).or_default() += ms;
    }
    let timed: f64 = kinds.values().sum();
    kinds.insert("everything else (C2f split, tensor plumbing)", total - timed);
    println!("  by kind:");
    for (kind, ms) in kinds {
        println!("  {ms:>8.2} {:>5.1}%  {kind}", ms * 100.0 / total);
    }
    if stages.iter().any(|ms| *ms > 0.0) {
        println!("  inside the fused convolutions:");
        for (stage, ms) in ["unfold (im2col)", "GEMM (bias as its start value)", "SiLU pass"].iter().zip(stages) {
            println!("  {ms:>8.2} {:>5.1}%  {stage}", ms * 100.0 / total);
        }
    }
    Ok(())
}

/// The first frame of the demo clip, decoded by the camera path.
fn demo_frame() -> anyhow::Result<image::RgbImage> {
    let frames = crate::camera::decode::clip_frames(std::path::Path::new(DEMO_CLIP), 1, 1, 640)
        .context("cannot read the demo frame; pass --image")?;
    frames.into_iter().next().context("no frame in the demo clip")
}

use crate::detect::int8::DEMO_CLIP;
