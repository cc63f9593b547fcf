//! The running service: load config and policy, build the tree, then serve
//! signals until told to stop.
//!
//! - SIGHUP re-reads the config; a bad one is rejected and the running one kept.
//! - SIGTERM/SIGINT stop the tree gracefully (children in reverse start order,
//!   each within its shutdown timeout) and exit 0; a second one exits at once.
//! - If the root supervisor gives up, the process exits 1 and systemd restarts it.

pub mod reload;
pub mod topology;

use crate::base::clock::tokio_clock;
use crate::config::{ConfigError, LoadedConfig};
use crate::health::HealthBoard;
use crate::supervision::{PolicyError, SupervisionPolicy, Supervisor, SupervisorArgs};
use crate::telemetry::logging::{self, LogFormat, LoggingError};
use ractor::Actor;
use reload::Reloader;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, watch};

/// Where things are, as the CLI resolved them.
#[derive(Debug, Clone)]
pub struct ServiceOptions {
    /// `None` runs the embedded default config.
    pub config_path: Option<PathBuf>,
    /// `None` runs the embedded default `supervision.toml`.
    pub supervision_path: Option<PathBuf>,
    /// Overrides `storage.data_dir`.
    pub data_dir: Option<PathBuf>,
    pub log_format: LogFormat,
}

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("invalid supervision policy:\n{}", .0.iter().map(|e| format!("  {e}")).collect::<Vec<_>>().join("\n"))]
    Policy(Vec<PolicyError>),
    #[error(transparent)]
    Logging(#[from] LoggingError),
    #[error("cannot create data directory {dir}: {source}")]
    DataDir { dir: String, source: std::io::Error },
    #[error("cannot install the metrics recorder: {0}")]
    Metrics(#[from] metrics_exporter_prometheus::BuildError),
    #[error("cannot listen for signals: {0}")]
    Signals(std::io::Error),
    #[error("the supervision tree failed to start: {0}")]
    Start(String),
}

impl ServiceError {
    /// 2 for bad input the user must fix, 1 for everything else.
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Config(_) | Self::Policy(_) => 2,
            _ => 1,
        }
    }
}

/// Loads the config with the CLI's data-dir override applied.
pub fn load_config(opts: &ServiceOptions) -> Result<LoadedConfig, ConfigError> {
    let mut loaded = crate::config::load(opts.config_path.as_deref())?;
    if let Some(dir) = &opts.data_dir {
        loaded.config.storage.data_dir = dir.clone();
    }
    Ok(loaded)
}

/// Runs until a signal or a root failure; returns the process exit code.
pub async fn run(opts: ServiceOptions) -> Result<i32, ServiceError> {
    let loaded = load_config(&opts)?;
    let config = loaded.config;
    let data_dir = config.storage.data_dir.clone();
    let logs = data_dir.join("logs");
    std::fs::create_dir_all(&logs)
        .map_err(|source| ServiceError::DataDir { dir: logs.display().to_string(), source })?;
    let logging = logging::init(Some(&logs), opts.log_format, &config.monitoring.log_level)?;
    for warning in &loaded.warnings {
        tracing::warn!("{warning}");
    }
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        config = %loaded.source,
        data_dir = %data_dir.display(),
        cameras = config.cameras.len(),
        rules = config.alert_rules.len(),
        "starting smart-cctv"
    );

    let policy = SupervisionPolicy::load(opts.supervision_path.as_deref()).map_err(ServiceError::Policy)?;
    policy.check_components(topology::COMPONENTS, topology::DYNAMIC).map_err(ServiceError::Policy)?;
    // A policy written before clusters would leave the section silently unused.
    if config.cluster.is_some() && !policy.root.children.iter().any(|c| c.id == "cluster") {
        return Err(ServiceError::Policy(vec![crate::supervision::policy::PolicyError {
            file: policy.source.clone(),
            key: "root.children".into(),
            message: "the config has a `cluster` section but this policy has no `cluster` child; \
                      add one before `detector` (see the supervision.toml shipped with this version)"
                .into(),
        }]));
    }
    tracing::info!(source = %policy.source, "supervision tree: {policy}");

    let metrics = crate::telemetry::metrics::install()?;
    let mut hangups = signal(SignalKind::hangup()).map_err(ServiceError::Signals)?;
    let mut terms = signal(SignalKind::terminate()).map_err(ServiceError::Signals)?;
    let mut ints = signal(SignalKind::interrupt()).map_err(ServiceError::Signals)?;

    let board = HealthBoard::new();
    let (config_tx, config_rx) = watch::channel(Arc::new(config));
    let calibration_dir = crate::config::load::calibration_dir(opts.config_path.as_deref());
    let calibrations = topology::load_calibrations(&config_rx.borrow(), &calibration_dir, opts.config_path.is_none());
    let mut components = topology::Components::new(board.clone(), metrics, config_rx, calibrations, data_dir.clone());
    components.config_files = (opts.config_path.clone(), opts.supervision_path.clone());
    let (escalate_tx, mut escalations) = mpsc::unbounded_channel();
    let args = SupervisorArgs {
        path: "root".into(),
        strategy: policy.root.strategy,
        intensity: policy.root.intensity,
        children: topology::child_specs(&policy.root, "root", &components),
        board: board.clone(),
        clock: tokio_clock(),
        on_escalate: Some(escalate_tx),
    };
    let (root, root_done) =
        Actor::spawn(Some("root".into()), Supervisor, args).await.map_err(|e| ServiceError::Start(e.to_string()))?;

    metrics::gauge!("smart_cctv_up").set(1.0);
    metrics::gauge!("smart_cctv_config_generation").set(1.0);
    // Present from the start, so alert rules see 0 rather than no series.
    metrics::counter!("smart_cctv_config_reloads_total").absolute(0);
    metrics::counter!("smart_cctv_config_reload_failures_total").absolute(0);
    notify(sd_notify::NotifyState::Ready);
    tracing::info!("ready");

    let mut reloader = Reloader::new(opts.clone(), config_tx, logging, components, root.clone());
    let failed = loop {
        tokio::select! {
            _ = hangups.recv() => reloader.reload().await,
            _ = terms.recv() => break None,
            _ = ints.recv() => break None,
            reason = escalations.recv() => break Some(reason.unwrap_or_else(|| "root supervisor ended".into())),
        }
    };
    metrics::gauge!("smart_cctv_up").set(0.0);

    if let Some(reason) = failed {
        tracing::error!("supervision tree gave up, exiting so the service manager restarts us: {reason}");
        let _ = tokio::time::timeout(Duration::from_secs(5), root_done).await;
        return Ok(1);
    }

    notify(sd_notify::NotifyState::Stopping);
    let budget = policy.shutdown_budget() + Duration::from_secs(2);
    tracing::info!(budget = %humantime::format_duration(budget), "shutting down; send the signal again to exit at once");
    root.stop(Some("shutdown".into()));
    tokio::select! {
        done = tokio::time::timeout(budget, root_done) => match done {
            Ok(_) => {
                tracing::info!("stopped cleanly");
                Ok(0)
            }
            Err(_) => {
                tracing::error!("shutdown took longer than {}; exiting anyway", humantime::format_duration(budget));
                Ok(1)
            }
        },
        _ = terms.recv() => Ok(immediate_exit()),
        _ = ints.recv() => Ok(immediate_exit()),
    }
}

fn immediate_exit() -> i32 {
    tracing::warn!("second signal: exiting without waiting");
    130
}

fn notify(state: sd_notify::NotifyState) {
    if let Err(e) = sd_notify::notify(false, &[state]) {
        tracing::warn!("cannot notify the service manager: {e}");
    }
}
