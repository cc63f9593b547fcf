//! `smart-cctv cameras test [--camera ID] [--frames N] [--quiet]`

use super::Cli;
use crate::camera::probe::probe;
use clap::Subcommand;
use std::time::Duration;

#[derive(Debug, Subcommand)]
pub enum CamerasCommand {
    /// Connect to each enabled camera, decode some frames, and report codec,
    /// resolution, measured fps and time to first frame; exit 1 if any fails
    Test {
        /// Only this camera (enabled or not)
        #[arg(long)]
        camera: Option<String>,
        /// Frames to decode per camera
        #[arg(long, default_value_t = 30)]
        frames: u64,
        /// Print only failures
        #[arg(long)]
        quiet: bool,
        /// Output JSON lines
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cli: &Cli, command: &CamerasCommand) -> anyhow::Result<i32> {
    let CamerasCommand::Test { camera, frames, quiet, json } = command;
    let config = crate::config::load(cli.config_path().as_deref())?.config;
    let cameras: Vec<_> = match camera {
        Some(id) => {
            let found: Vec<_> = config.cameras.iter().filter(|c| &c.id == id).cloned().collect();
            anyhow::ensure!(!found.is_empty(), "--camera: no camera has id `{id}`");
            found
        }
        None => config.cameras.iter().filter(|c| c.enabled).cloned().collect(),
    };
    if cameras.is_empty() {
        println!("no enabled cameras in the configuration");
        return Ok(0);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let reports = runtime.block_on(async {
        let probes = cameras.iter().map(|c| {
            // Allow for a slow first keyframe on top of the stall timeout.
            let timeout = c.stall_timeout + Duration::from_secs(10) + Duration::from_millis(*frames * 200);
            probe(c, *frames, 640, timeout)
        });
        futures_util::future::join_all(probes).await
    });
    runtime.shutdown_timeout(Duration::from_secs(1));
    let mut failed = 0;
    for report in &reports {
        failed += usize::from(!report.ok);
        if *quiet && report.ok {
            continue;
        }
        if *json {
            println!("{}", serde_json::to_string(report)?);
        } else {
            println!("{report}");
        }
    }
    Ok(if failed > 0 { 1 } else { 0 })
}
