//! The command line: one module per subcommand, each with `run(..) -> exit code`.

pub mod alerts;
pub mod bench;
pub mod bench_pipeline;
pub mod calibrate;
pub mod cameras;
pub mod config;
pub mod detect;
pub mod events;
pub mod model;
pub mod ops;
pub mod run;
pub mod service_api;
pub mod speaker;
pub mod status;
pub mod user;

use crate::telemetry::logging::LogFormat;
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};

/// Default locations, relative to the working directory. When absent, the
/// embedded defaults are used, so the binary runs anywhere.
pub const DEFAULT_CONFIG: &str = "config/config.yaml";
pub const DEFAULT_SUPERVISION: &str = "supervision.toml";

#[derive(Debug, Parser)]
#[command(name = "smart-cctv", version, about = "Watches cameras, detects people and objects, and sounds alerts")]
pub struct Cli {
    /// Configuration file [default: config/config.yaml, else the embedded default]
    #[arg(long, global = true, env = "SMART_CCTV_CONFIG")]
    pub config: Option<PathBuf>,
    /// Supervision policy [default: supervision.toml, else the embedded default]
    #[arg(long, global = true, env = "SMART_CCTV_SUPERVISION")]
    pub supervision: Option<PathBuf>,
    /// Data directory for logs, events and snapshots (overrides storage.data_dir)
    #[arg(long, global = true, env = "SMART_CCTV_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Log format on stderr; files always use `time | LEVEL | target | message`
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Pretty)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service until SIGTERM/SIGINT; SIGHUP reloads the configuration
    Run,
    /// Stored alerts
    Alerts {
        #[command(subcommand)]
        command: alerts::AlertsCommand,
    },
    /// Cameras, detector, speakers, store, disk and the process, from the running service
    Status(status::StatusArgs),
    /// Stored events: one per tracked object
    Events {
        #[command(subcommand)]
        command: events::EventsCommand,
    },
    /// Maintenance of the data directory
    Ops {
        #[command(subcommand)]
        command: ops::OpsCommand,
    },
    /// Benchmarks: the whole pipeline over N cameras (`bench --cameras N --seconds S`), or `bench detector`
    #[command(args_conflicts_with_subcommands = true)]
    Bench {
        #[command(subcommand)]
        command: Option<bench::BenchCommand>,
        #[command(flatten)]
        pipeline: bench_pipeline::PipelineBench,
    },
    /// Fit a camera's image-to-ground calibration from measured points
    Calibrate(calibrate::CalibrateArgs),
    /// Camera tools
    Cameras {
        #[command(subcommand)]
        command: cameras::CamerasCommand,
    },
    /// Detect objects in still images, to check a model or a threshold
    Detect(detect::DetectArgs),
    /// Model tools: `model quantize` calibrates int8 on your own clip
    Model {
        #[command(subcommand)]
        command: model::ModelCommand,
    },
    /// Speaker tools
    Speaker {
        #[command(subcommand)]
        command: speaker::SpeakerCommand,
    },
    /// Configuration tools
    Config {
        #[command(subcommand)]
        command: config::ConfigCommand,
    },
    /// The people who may log in to the web page and use the API
    User {
        #[command(subcommand)]
        command: user::UserCommand,
    },
}

/// An explicit path, else the default path when it exists, else `None`
/// (the embedded default).
pub fn resolve(explicit: Option<&Path>, default: &str) -> Option<PathBuf> {
    match explicit {
        Some(p) => Some(p.to_owned()),
        None => Some(PathBuf::from(default)).filter(|p| p.exists()),
    }
}

impl Cli {
    pub fn config_path(&self) -> Option<PathBuf> {
        resolve(self.config.as_deref(), DEFAULT_CONFIG)
    }

    pub fn supervision_path(&self) -> Option<PathBuf> {
        resolve(self.supervision.as_deref(), DEFAULT_SUPERVISION)
    }
}

/// Runs the parsed command and returns the process exit code.
pub fn dispatch(cli: Cli) -> anyhow::Result<i32> {
    match &cli.command {
        Command::Run => run::run(&cli),
        Command::Config { command } => config::run(&cli, command),
        Command::Detect(args) => detect::run(&cli, args),
        Command::Cameras { command } => cameras::run(&cli, command),
        Command::Bench { command: Some(command), .. } => bench::run(&cli, command),
        Command::Bench { command: None, pipeline } => bench_pipeline::run(&cli, pipeline),
        Command::Alerts { command } => alerts::run(&cli, command),
        Command::Events { command } => events::run(&cli, command),
        Command::Status(args) => status::run(&cli, args),
        Command::Ops { command } => ops::run(&cli, command),
        Command::Calibrate(args) => calibrate::run(&cli, args),
        Command::Model { command } => model::run(&cli, command),
        Command::Speaker { command } => speaker::run(&cli, command),
        Command::User { command } => user::run(&cli, command),
    }
}
