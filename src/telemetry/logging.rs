//! Logging: stderr plus three files under `data/logs`, all in the old
//! system's `time | LEVEL | target | message` layout so habits such as
//! `grep ERROR app.log | cut -d'|' -f4` keep working.
//!
//! - `app.log`: everything at the configured level;
//! - `errors.log`: WARN and above;
//! - `alerts.log`: events with target `alert`.

use super::rotate::DailyFile;
use chrono::Local;
use std::fmt;
use std::path::Path;
use tracing::{Event, Subscriber};
use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry, filter, reload};

/// The target alert events use, routed to `alerts.log`.
pub const ALERT_TARGET: &str = "alert";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// `time | LEVEL | target | message`
    #[default]
    Pretty,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    #[error("cannot open log file in {dir}: {source}")]
    Open { dir: String, source: std::io::Error },
    #[error("invalid log filter `{filter}`: {source}")]
    Filter { filter: String, source: filter::ParseError },
    #[error("a logger is already installed")]
    AlreadyInstalled,
}

/// `time | LEVEL | target | message`
pub struct PipeFormat;

impl<S, N> FormatEvent<S, N> for PipeFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let meta = event.metadata();
        write!(
            writer,
            "{} | {:<5} | {} | ",
            Local::now().format("%Y-%m-%d %H:%M:%S%.3f"),
            meta.level(),
            meta.target()
        )?;
        ctx.format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// The installed logger; keep it alive until exit so buffered lines are written.
pub struct Logging {
    filter: reload::Handle<EnvFilter, Registry>,
    /// `RUST_LOG` wins over the config's level, on start and on reload.
    env_override: bool,
    _guards: Vec<WorkerGuard>,
}

impl Logging {
    /// Applies a new level from a reloaded config.
    pub fn set_level(&self, level: &str) -> Result<(), LoggingError> {
        if self.env_override {
            return Ok(());
        }
        let filter = parse_filter(level)?;
        self.filter.reload(filter).map_err(|_| LoggingError::AlreadyInstalled)
    }
}

fn parse_filter(level: &str) -> Result<EnvFilter, LoggingError> {
    EnvFilter::builder().parse(level).map_err(|source| LoggingError::Filter { filter: level.to_owned(), source })
}

fn file_writer(
    dir: &Path,
    stem: &str,
    lossy: bool,
) -> Result<(tracing_appender::non_blocking::NonBlocking, WorkerGuard), LoggingError> {
    let file =
        DailyFile::open(dir, stem).map_err(|source| LoggingError::Open { dir: dir.display().to_string(), source })?;
    Ok(NonBlockingBuilder::default().lossy(lossy).thread_name("log-writer").finish(file))
}

/// Installs the global logger: stderr, plus the three files when `dir` is given.
pub fn init(dir: Option<&Path>, format: LogFormat, level: &str) -> Result<Logging, LoggingError> {
    let env = std::env::var("RUST_LOG").ok().filter(|s| !s.is_empty());
    let (filter, handle) = reload::Layer::new(parse_filter(env.as_deref().unwrap_or(level))?);

    let stderr = match format {
        LogFormat::Pretty => tracing_subscriber::fmt::layer()
            .event_format(PipeFormat)
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer().json().with_writer(std::io::stderr).boxed(),
    };
    let mut layers = vec![stderr];
    let mut guards = Vec::new();
    if let Some(dir) = dir {
        // Losing an app.log line under a burst is acceptable; losing an error or an alert is not.
        let (app, g1) = file_writer(dir, "app", true)?;
        let (errors, g2) = file_writer(dir, "errors", false)?;
        let (alerts, g3) = file_writer(dir, "alerts", false)?;
        guards.extend([g1, g2, g3]);
        let file_layer = |w| tracing_subscriber::fmt::layer().event_format(PipeFormat).with_ansi(false).with_writer(w);
        layers.push(file_layer(app).boxed());
        layers.push(file_layer(errors).with_filter(filter::LevelFilter::WARN).boxed());
        layers.push(file_layer(alerts).with_filter(filter::filter_fn(|meta| meta.target() == ALERT_TARGET)).boxed());
    }
    tracing_subscriber::registry().with(filter).with(layers).try_init().map_err(|_| LoggingError::AlreadyInstalled)?;
    Ok(Logging { filter: handle, env_override: env.is_some(), _guards: guards })
}
