//! SIGHUP: re-read, validate, diff, apply, and say truthfully what happened.
//!
//! A config that fails to load or validate is rejected whole; the running
//! one stays. A valid one is published, then applied: the cameras, rules and
//! speakers that were added, removed or changed are restarted by id, and the
//! root children that read a changed setting only when they start (see
//! [`ConfigDiff::restart`]) are restarted. If any of that fails, the
//! previous config is published again and the same steps are undone (as
//! Vector's `flip()` does), so the service runs as it did; the failure is
//! logged and counted. The outcome is on `/api/status` under `reload`.

use super::topology::{Components, camera_sink, camera_spec, rule_spec, speaker_spec};
use super::{ServiceOptions, load_config};
use crate::config::diff::Difference;
use crate::config::{Config, ConfigDiff, Problem};
use crate::supervision::{ChildSpec, SupervisorMsg};
use crate::telemetry::logging::Logging;
use ractor::{ActorRef, call_t};
use std::sync::Arc;
use tokio::sync::watch;

/// How long one child may take to stop and start again.
const CHILD_TIMEOUT_MS: u64 = 30_000;

pub struct Reloader {
    opts: ServiceOptions,
    /// Components watch this; sending publishes the new config.
    config: watch::Sender<Arc<Config>>,
    logging: Logging,
    components: Components,
    /// The root supervisor, which restarts the children a change needs.
    root: ActorRef<SupervisorMsg>,
    generation: u64,
}

impl Reloader {
    pub fn new(
        opts: ServiceOptions,
        config: watch::Sender<Arc<Config>>,
        logging: Logging,
        components: Components,
        root: ActorRef<SupervisorMsg>,
    ) -> Self {
        Self { opts, config, logging, components, root, generation: 1 }
    }

    pub async fn reload(&mut self) {
        tracing::info!("SIGHUP: reloading configuration");
        let (new, diff) = match self.load() {
            Ok(loaded) => loaded,
            Err(problems) => {
                for p in &problems {
                    tracing::error!("config reload: {p}");
                }
                tracing::error!(
                    problems = problems.len(),
                    "configuration reload rejected; still running the previous configuration"
                );
                self.failed("rejected", problems.iter().map(ToString::to_string).collect());
                return;
            }
        };
        let old = self.config.borrow().clone();
        if let Err(e) = self.set_log_level(&new) {
            tracing::error!("config reload: {e}");
            self.failed("rejected", vec![e.to_string()]);
            return;
        }
        self.config.send_replace(Arc::new(new.clone()));
        match self.apply(&new, &diff, Direction::Forward).await {
            Ok(()) => {
                self.generation += 1;
                metrics::gauge!("smart_cctv_config_generation").set(self.generation as f64);
                metrics::counter!("smart_cctv_config_reloads_total").increment(1);
                tracing::info!(generation = self.generation, "configuration reloaded and applied: {diff}");
                let needs_restart = self.needs_restart(&new);
                for what in &needs_restart {
                    tracing::warn!("{what} changed: read only at start, so it needs a restart of the service");
                }
                self.report("applied", &diff, Vec::new(), needs_restart);
            }
            Err(failure) => {
                tracing::error!("configuration reload failed while applying ({failure}); rolling back");
                self.config.send_replace(old.clone());
                let _ = self.set_log_level(&old);
                if let Err(again) = self.apply(&old, &diff, Direction::Back).await {
                    tracing::error!("rolling back the reload also failed ({again}); the supervisors keep retrying");
                }
                metrics::counter!("smart_cctv_config_rollbacks_total").increment(1);
                tracing::error!("still running the previous configuration");
                self.failed("rolled_back", vec![failure]);
            }
        }
    }

    /// The new config and what changed, or why it is refused.
    fn load(&self) -> Result<(Config, ConfigDiff), Vec<Problem>> {
        let loaded = load_config(&self.opts).map_err(|e| e.problems())?;
        for warning in &loaded.warnings {
            tracing::warn!("{warning}");
        }
        let current = self.config.borrow().clone();
        let diff = ConfigDiff::new(&current, &loaded.config)?;
        Ok((loaded.config, diff))
    }

    fn set_log_level(&self, config: &Config) -> Result<(), Problem> {
        self.logging
            .set_level(&config.monitoring.log_level)
            .map_err(|e| Problem::new("monitoring.log_level", e.to_string()))
    }

    /// Applies `diff` with `config` published: forward, or back to undo it.
    async fn apply(&self, config: &Config, diff: &ConfigDiff, direction: Direction) -> Result<(), String> {
        let c = &self.components;
        let keyed = |d: &Difference| match direction {
            Direction::Forward => d.clone(),
            Direction::Back => d.flip(),
        };
        let mut failures = Vec::new();
        // Children restarted whole read the new config as they start.
        for id in &diff.restart {
            match call_t!(self.root, SupervisorMsg::RestartChild, CHILD_TIMEOUT_MS, id.to_string()) {
                Ok(Ok(())) => tracing::info!(child = %id, "restarted to apply the new configuration"),
                Ok(Err(e)) => failures.push(format!("{id}: {e}")),
                Err(e) => failures.push(format!("{id}: the supervisor did not answer: {e}")),
            }
        }
        // A restart of all cameras already applied their changes.
        if !diff.restart.contains(&"cameras") {
            let sink = camera_sink(c, config);
            let cameras = config
                .cameras
                .iter()
                .filter(|cam| cam.enabled)
                .map(|cam| (cam.id.clone(), camera_spec(cam, config, sink.clone(), c)));
            failures.extend(restart_changed("cameras", &keyed(&diff.cameras), cameras.collect()).await);
        }
        let rules = config.alert_rules.iter().map(|r| (r.name.clone(), rule_spec(r, c)));
        failures.extend(restart_changed("rules", &keyed(&diff.rules), rules.collect()).await);
        let speakers = config.speakers.iter().map(|s| (s.id.clone(), speaker_spec(s, c)));
        failures.extend(restart_changed("speakers", &keyed(&diff.speakers), speakers.collect()).await);
        if failures.is_empty() { Ok(()) } else { Err(failures.join("; ")) }
    }

    fn failed(&self, outcome: &str, reasons: Vec<String>) {
        metrics::counter!("smart_cctv_config_reload_failures_total").increment(1);
        self.report(outcome, &ConfigDiff::default(), reasons, Vec::new());
    }

    /// What changed on disk that only a restart of the service applies: the
    /// cameras' calibration files, which rules and the tracker load at start.
    fn needs_restart(&self, config: &Config) -> Vec<String> {
        let dir = crate::config::load::calibration_dir(self.opts.config_path.as_deref());
        let on_disk = super::topology::load_calibrations(config, &dir, self.opts.config_path.is_none());
        let mut cameras: Vec<&String> = on_disk.keys().chain(self.components.calibrations.keys()).collect();
        cameras.sort();
        cameras.dedup();
        cameras
            .into_iter()
            .filter(|c| on_disk.get(*c) != self.components.calibrations.get(*c))
            .map(|c| format!("calibration of camera `{c}`"))
            .collect()
    }

    /// The last reload's outcome, for `/api/status`.
    fn report(&self, outcome: &str, diff: &ConfigDiff, errors: Vec<String>, needs_restart: Vec<String>) {
        let errors: Vec<String> = errors.iter().map(|e| crate::config::load::redact_text(e)).collect();
        self.components.board.set_detail(
            "reload",
            serde_json::json!({
                "outcome": outcome,
                "generation": self.generation,
                "at": chrono::Local::now().to_rfc3339(),
                "changes": diff.to_string(),
                "restarted": diff.restart,
                "needs_restart": needs_restart,
                "errors": errors,
            }),
        );
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    Forward,
    Back,
}

/// Stops the removed and changed children of the dynamic supervisor
/// `supervisor`, then starts the added and changed ones from `specs` (by id).
/// Answers what failed.
async fn restart_changed(supervisor: &str, d: &Difference, specs: Vec<(String, ChildSpec)>) -> Vec<String> {
    if d.is_empty() {
        return Vec::new();
    }
    let Some(cell) = ractor::registry::where_is(supervisor) else {
        tracing::warn!("no {supervisor} supervisor is running; the changes apply when it starts");
        return Vec::new();
    };
    let parent: ActorRef<SupervisorMsg> = cell.into();
    let mut failures = Vec::new();
    for id in d.to_remove.iter().chain(&d.to_change) {
        if let Err(e) = call_t!(parent, SupervisorMsg::StopChild, CHILD_TIMEOUT_MS, id.clone()) {
            failures.push(format!("{supervisor}/{id}: cannot stop: {e}"));
        }
    }
    for (id, spec) in specs.into_iter().filter(|(id, _)| d.to_add.contains(id) || d.to_change.contains(id)) {
        match call_t!(parent, SupervisorMsg::StartChild, CHILD_TIMEOUT_MS, spec) {
            Ok(Ok(())) => tracing::info!(%supervisor, child = %id, "started"),
            Ok(Err(e)) => {
                // Started children that fail are retried by their supervisor;
                // for a reload it is a failure to roll back. Remove it, so the
                // way back can start the old one under the same id.
                let _ = call_t!(parent, SupervisorMsg::StopChild, CHILD_TIMEOUT_MS, id.clone());
                failures.push(format!("{supervisor}/{id}: did not start: {e}"));
            }
            Err(e) => failures.push(format!("{supervisor}/{id}: the supervisor did not answer: {e}")),
        }
    }
    failures
}
