//! SIGHUP: re-read, validate, diff, apply. A config that fails any step is
//! rejected whole; the running one stays.

use super::topology::{Components, camera_sink, camera_spec, rule_spec, speaker_spec};
use super::{ServiceOptions, load_config};
use crate::config::{Config, ConfigDiff, Problem};
use crate::supervision::SupervisorMsg;
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
                self.apply_cameras(&diff).await;
                self.apply_rules(&diff).await;
                self.apply_speakers(&diff).await;
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

    /// Restarts only the cameras that were added, removed or changed.
    async fn apply_cameras(&self, diff: &ConfigDiff) {
        let d = &diff.cameras;
        if d.is_empty() {
            return;
        }
        let Some(cell) = ractor::registry::where_is("cameras") else {
            tracing::warn!("no cameras supervisor is running; camera changes apply when it starts");
            return;
        };
        let cameras: ActorRef<SupervisorMsg> = cell.into();
        for id in d.to_remove.iter().chain(&d.to_change) {
            if let Err(e) = call_t!(cameras, SupervisorMsg::StopChild, 30_000, id.clone()) {
                tracing::error!(camera = %id, "cannot stop camera: {e}");
            }
        }
        let config = self.config.borrow().clone();
        let sink = camera_sink(&self.components, &config);
        for camera in
            config.cameras.iter().filter(|c| c.enabled && (d.to_add.contains(&c.id) || d.to_change.contains(&c.id)))
        {
            let spec = camera_spec(camera, &config, sink.clone(), &self.components);
            match call_t!(cameras, SupervisorMsg::StartChild, 30_000, spec) {
                Ok(Ok(())) => tracing::info!(camera = %camera.id, "camera started"),
                Ok(Err(e)) => tracing::error!(camera = %camera.id, "camera did not start: {e}"),
                Err(e) => tracing::error!(camera = %camera.id, "cameras supervisor did not answer: {e}"),
            }
        }
    }

    /// Restarts only the rules that were added, removed or changed; the
    /// others keep their cooldowns.
    async fn apply_rules(&self, diff: &ConfigDiff) {
        let d = &diff.rules;
        if d.is_empty() {
            return;
        }
        let Some(cell) = ractor::registry::where_is("rules") else {
            tracing::warn!("no rules supervisor is running; rule changes apply when it starts");
            return;
        };
        let rules: ActorRef<SupervisorMsg> = cell.into();
        for name in d.to_remove.iter().chain(&d.to_change) {
            if let Err(e) = call_t!(rules, SupervisorMsg::StopChild, 10_000, name.clone()) {
                tracing::error!(rule = %name, "cannot stop rule: {e}");
            }
        }
        let config = self.config.borrow().clone();
        for rule in config.alert_rules.iter().filter(|r| d.to_add.contains(&r.name) || d.to_change.contains(&r.name)) {
            if let Err(e) = call_t!(rules, SupervisorMsg::StartChild, 10_000, rule_spec(rule, &self.components)) {
                tracing::error!(rule = %rule.name, "rules supervisor did not answer: {e}");
            }
        }
    }

    /// Restarts only the speakers that were added, removed or changed.
    async fn apply_speakers(&self, diff: &ConfigDiff) {
        let d = &diff.speakers;
        if d.is_empty() {
            return;
        }
        let Some(cell) = ractor::registry::where_is("speakers") else {
            tracing::warn!("no speakers supervisor is running; speaker changes apply when it starts");
            return;
        };
        let speakers: ActorRef<SupervisorMsg> = cell.into();
        for id in d.to_remove.iter().chain(&d.to_change) {
            if let Err(e) = call_t!(speakers, SupervisorMsg::StopChild, 10_000, id.clone()) {
                tracing::error!(speaker = %id, "cannot stop speaker: {e}");
            }
        }
        let config = self.config.borrow().clone();
        for speaker in config.speakers.iter().filter(|s| d.to_add.contains(&s.id) || d.to_change.contains(&s.id)) {
            if let Err(e) =
                call_t!(speakers, SupervisorMsg::StartChild, 10_000, speaker_spec(speaker, &self.components))
            {
                tracing::error!(speaker = %speaker.id, "speakers supervisor did not answer: {e}");
            }
        }
    }
}
