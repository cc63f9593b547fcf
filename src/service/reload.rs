//! SIGHUP: re-read, validate, diff, apply. A config that fails any step is
//! rejected whole; the running one stays.

use super::{ServiceOptions, load_config};
use crate::config::{Config, ConfigDiff, Problem};
use crate::telemetry::logging::Logging;
use std::sync::Arc;
use tokio::sync::watch;

pub struct Reloader {
    opts: ServiceOptions,
    /// Components watch this; sending applies the new config.
    config: watch::Sender<Arc<Config>>,
    logging: Logging,
    generation: u64,
}

impl Reloader {
    pub fn new(opts: ServiceOptions, config: watch::Sender<Arc<Config>>, logging: Logging) -> Self {
        Self {
            opts,
            config,
            logging,
            generation: 1,
        }
    }

    pub fn reload(&mut self) {
        tracing::info!("SIGHUP: reloading configuration");
        match self.try_reload() {
            Ok(diff) => {
                metrics::counter!("smart_cctv_config_reloads_total").increment(1);
                tracing::info!(
                    generation = self.generation,
                    "configuration reloaded: {diff}"
                );
            }
            Err(problems) => {
                metrics::counter!("smart_cctv_config_reload_failures_total").increment(1);
                for p in &problems {
                    tracing::error!("config reload: {p}");
                }
                tracing::error!(
                    problems = problems.len(),
                    "configuration reload rejected; still running the previous configuration"
                );
            }
        }
    }

    fn try_reload(&mut self) -> Result<ConfigDiff, Vec<Problem>> {
        let loaded = load_config(&self.opts).map_err(|e| e.problems())?;
        for warning in &loaded.warnings {
            tracing::warn!("{warning}");
        }
        let current = self.config.borrow().clone();
        let diff = ConfigDiff::new(&current, &loaded.config)?;
        if current.monitoring.log_level != loaded.config.monitoring.log_level {
            self.logging
                .set_level(&loaded.config.monitoring.log_level)
                .map_err(|e| vec![Problem::new("monitoring.log_level", e.to_string())])?;
        }
        self.generation += 1;
        metrics::gauge!("smart_cctv_config_generation").set(self.generation as f64);
        self.config.send_replace(Arc::new(loaded.config));
        Ok(diff)
    }
}
