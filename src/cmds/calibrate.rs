//! `smart-cctv calibrate --camera ID --points FILE`: fits the camera's
//! image-to-ground homography, prints the reprojection error of every point
//! and the RMS, and writes `calibration/<camera>.yaml` beside the config.

use super::Cli;
use crate::calibration::{CalibrationFile, Homography, path_for};
use anyhow::Context;
use clap::Args;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct CalibrateArgs {
    /// The camera id
    #[arg(long)]
    pub camera: String,
    /// YAML with `points: [{image: [x, y], ground: [X, Y]}, ...]` (at least 4)
    /// and optional `references: {door: [X, Y]}`
    #[arg(long)]
    pub points: PathBuf,
    /// Write here instead of `calibration/<camera>.yaml` beside the config
    #[arg(long)]
    pub output: Option<PathBuf>,
}

pub fn run(cli: &Cli, args: &CalibrateArgs) -> anyhow::Result<i32> {
    let config_path = cli.config_path();
    let config = crate::config::load(config_path.as_deref())?.config;
    anyhow::ensure!(config.cameras.iter().any(|c| c.id == args.camera), "--camera: no camera has id `{}`", args.camera);
    let text =
        std::fs::read_to_string(&args.points).with_context(|| format!("cannot read {}", args.points.display()))?;
    let value: serde_json::Value = config::Config::builder()
        .add_source(config::File::from_str(&text, config::FileFormat::Yaml))
        .build()
        .and_then(|c| c.try_deserialize())
        .with_context(|| format!("{} is not valid YAML", args.points.display()))?;
    let mut file: CalibrationFile = serde_path_to_error::deserialize(value)
        .map_err(|e| anyhow::anyhow!("{}: {}: {}", args.points.display(), e.path(), e.inner()))?;
    let homography = match Homography::fit(&file.points) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("calibrate: {}: {e}", args.points.display());
            return Ok(2);
        }
    };
    println!("{:>4}  {:>16}  {:>16}  {:>10}", "#", "image px", "ground m", "error m");
    for (i, (p, e)) in file.points.iter().zip(homography.errors(&file.points)).enumerate() {
        println!(
            "{:>4}  {:>16}  {:>16}  {e:>10.3}",
            i + 1,
            format!("({:.0}, {:.0})", p.image[0], p.image[1]),
            format!("({:.2}, {:.2})", p.ground[0], p.ground[1])
        );
    }
    let rms = homography.rms(&file.points);
    println!("rms reprojection error: {rms:.3} m over {} points", file.points.len());
    file.homography = Some(homography.rows());
    file.rms_error_m = Some(rms);
    let out = args
        .output
        .clone()
        .unwrap_or_else(|| path_for(&crate::config::load::calibration_dir(config_path.as_deref()), &args.camera));
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let header = format!("# Calibration of camera `{}`, fitted by `smart-cctv calibrate`.\n", args.camera);
    let body = serde_json::to_string_pretty(&file)?;
    // JSON is valid YAML, and the config crate reads it back unchanged.
    std::fs::write(&out, format!("{header}{body}\n")).with_context(|| format!("cannot write {}", out.display()))?;
    println!("wrote {}", out.display());
    Ok(0)
}
