//! SIGHUP: re-read, validate, diff, apply. A config that fails any step is
//! rejected whole; the running one stays.

use super::topology::{Components, camera_sink, camera_spec, rule_spec, speaker_spec};
use super::{ServiceOptions, load_config};
use crate::config::diff::Difference;
use crate::config::{Config, ConfigDiff, Problem};
use crate::supervision::{ChildSpec, SupervisorMsg};
use crate::telemetry::logging::Logging;
use ractor::{ActorRef, call_t};
use std::sync::Arc;
use tokio::sync::watch;

pub struct Reloader {
    opts: ServiceOptions,
    /// Components watch this; sending applies the new config.
    config: watch::Sender<Arc<Config>>,
    logging: Logging,
    components: Components,
    generation: u64,
}

impl Reloader {
    pub fn new(
        opts: ServiceOptions,
        config: watch::Sender<Arc<Config>>,
        logging: Logging,
        components: Components,
    ) -> Self {
        Self { opts, config, logging, components, generation: 1 }
    }

    pub async fn reload(&mut self) {
        tracing::info!("SIGHUP: reloading configuration");
        match self.try_reload() {
            Ok(diff) => {
                metrics::counter!("smart_cctv_config_reloads_total").increment(1);
                tracing::info!(generation = self.generation, "configuration reloaded: {diff}");
                self.apply(&diff).await;
            }
            Err(problems) => {
                for p in &problems {
                    tracing::error!("config reload: {p}");
                }
                tracing::error!(
                    problems = problems.len(),
                    "configuration reload rejected; still running the previous configuration"
                );
                metrics::counter!("smart_cctv_config_reload_failures_total").increment(1);
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

    /// Restarts only the cameras, rules and speakers that were added,
    /// removed or changed; the others keep running (and rules keep their
    /// cooldowns).
    async fn apply(&self, diff: &ConfigDiff) {
        let config = self.config.borrow().clone();
        let c = &self.components;
        let sink = camera_sink(c, &config);
        let cameras = config
            .cameras
            .iter()
            .filter(|cam| cam.enabled)
            .map(|cam| (cam.id.clone(), camera_spec(cam, &config, sink.clone(), c)));
        restart_changed("cameras", &diff.cameras, cameras.collect()).await;
        let rules = config.alert_rules.iter().map(|r| (r.name.clone(), rule_spec(r, c)));
        restart_changed("rules", &diff.rules, rules.collect()).await;
        let speakers = config.speakers.iter().map(|s| (s.id.clone(), speaker_spec(s, c)));
        restart_changed("speakers", &diff.speakers, speakers.collect()).await;
    }
}

/// Stops the removed and changed children of the dynamic supervisor
/// `supervisor`, then starts the added and changed ones from `specs` (by id).
async fn restart_changed(supervisor: &str, d: &Difference, specs: Vec<(String, ChildSpec)>) {
    if d.is_empty() {
        return;
    }
    let Some(cell) = ractor::registry::where_is(supervisor) else {
        tracing::warn!("no {supervisor} supervisor is running; the changes apply when it starts");
        return;
    };
    let parent: ActorRef<SupervisorMsg> = cell.into();
    for id in d.to_remove.iter().chain(&d.to_change) {
        if let Err(e) = call_t!(parent, SupervisorMsg::StopChild, 30_000, id.clone()) {
            tracing::error!(%supervisor, child = %id, "cannot stop: {e}");
        }
    }
    for (id, spec) in specs.into_iter().filter(|(id, _)| d.to_add.contains(id) || d.to_change.contains(id)) {
        match call_t!(parent, SupervisorMsg::StartChild, 30_000, spec) {
            Ok(Ok(())) => tracing::info!(%supervisor, child = %id, "started"),
            Ok(Err(e)) => tracing::error!(%supervisor, child = %id, "did not start: {e}"),
            Err(e) => tracing::error!(%supervisor, child = %id, "supervisor did not answer: {e}"),
        }
    }
}
