//! The health actor: in place of the old `health_check.sh` cron job.
//!
//! Parent: the root supervisor, which it pings every watchdog tick. Inputs:
//! its own timers. Outputs:
//! - `WATCHDOG=1` on `NOTIFY_SOCKET`. The rule: pet while the runtime runs
//!   and the supervision tree answers. A camera being down is not a reason to
//!   stop, since restarting the process would not bring the camera back; a
//!   wedged runtime or tree is, and then no pet can be sent at all.
//! - the disk under the data directory on the health board (`disk`: warn,
//!   critical) and in metrics;
//! - every health transition written to the event store, and optionally
//!   emailed (rate-limited).

use super::HealthBoard;
use super::disk::{self, DiskLevel};
use crate::config::Config;
use crate::store::Record;
use crate::supervision::SupervisorMsg;
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, call_t};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

pub struct HealthActor;

pub struct HealthArgs {
    /// The supervisor whose answer proves the tree is alive.
    pub tree: ActorCell,
    /// How often to pet (half of `WATCHDOG_USEC`), or to log a heartbeat.
    pub watchdog_interval: Duration,
    /// Whether systemd asked for pets (`WATCHDOG_USEC` set).
    pub systemd: bool,
    pub board: HealthBoard,
    pub config: watch::Receiver<Arc<Config>>,
    pub data_dir: PathBuf,
}

pub struct HealthState {
    args: HealthArgs,
    tree: ActorRef<SupervisorMsg>,
    /// How long the tree may take to answer one ping.
    probe_timeout: Duration,
    last_disk_check: Option<Instant>,
    last_email: Option<Instant>,
    timers: Vec<tokio::task::JoinHandle<()>>,
}

pub enum HealthMsg {
    /// Ping the tree and pet the watchdog.
    Pet,
    /// Collect: transitions to the store, disk use.
    Collect,
    /// Fail as asked: sent only by the test-only fault routes (`faults.rs`).
    Fault(crate::faults::Fault),
}

impl ractor::Message for HealthMsg {}

/// How often transitions are handed to the store (disk use is read every
/// `health.interval`).
const COLLECT_INTERVAL: Duration = Duration::from_secs(1);

/// The watchdog interval: half of `WATCHDOG_USEC` when systemd set it, so
/// one late tick does not trip it; otherwise a slow heartbeat for the logs.
pub fn interval_from_env() -> (Duration, bool) {
    let usec = std::env::var("WATCHDOG_USEC").ok();
    let pid = std::env::var("WATCHDOG_PID").ok();
    match watchdog_usec(usec.as_deref(), pid.as_deref(), std::process::id()) {
        Some(usec) => (Duration::from_micros(usec / 2), true),
        None => (Duration::from_secs(10), false),
    }
}

/// `sd_watchdog_enabled(3)`: the watchdog is on when `WATCHDOG_USEC` is set
/// and `WATCHDOG_PID` is either unset or ours. (The sd-notify crate insists
/// on `WATCHDOG_PID`, which systemd leaves out in some setups.)
fn watchdog_usec(usec: Option<&str>, pid: Option<&str>, own_pid: u32) -> Option<u64> {
    let usec = usec?.trim().parse::<u64>().ok().filter(|&u| u > 0)?;
    match pid {
        None => Some(usec),
        Some(pid) => (pid.trim().parse::<u32>().ok() == Some(own_pid)).then_some(usec),
    }
}

impl Actor for HealthActor {
    type Msg = HealthMsg;
    type State = HealthState;
    type Arguments = HealthArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<HealthMsg>,
        args: HealthArgs,
    ) -> Result<HealthState, ActorProcessingErr> {
        crate::faults::register("health", &myself, HealthMsg::Fault);
        let timers = vec![
            myself.send_interval(args.watchdog_interval, || HealthMsg::Pet),
            myself.send_interval(COLLECT_INTERVAL, || HealthMsg::Collect),
        ];
        let _ = myself.cast(HealthMsg::Collect);
        Ok(HealthState {
            tree: args.tree.clone().into(),
            probe_timeout: args.watchdog_interval.min(Duration::from_secs(2)),
            args,
            last_disk_check: None,
            last_email: None,
            timers,
        })
    }

    async fn handle(
        &self,
        _: ActorRef<HealthMsg>,
        msg: HealthMsg,
        state: &mut HealthState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            HealthMsg::Fault(fault) => return fault.strike("health"),
            HealthMsg::Pet => pet(state).await,
            HealthMsg::Collect => {
                let config = state.args.config.borrow().clone();
                let due = state.last_disk_check.is_none_or(|t| t.elapsed() >= config.health.interval);
                if due {
                    state.last_disk_check = Some(Instant::now());
                    check_disk(state, &config);
                    let depth = crate::pipeline::queue::FrameQueue::current_depth();
                    state.args.board.set_detail("inference", serde_json::json!({ "queue_depth": depth }));
                }
                record_transitions(state, &config);
            }
        }
        Ok(())
    }

    async fn post_stop(&self, _: ActorRef<HealthMsg>, state: &mut HealthState) -> Result<(), ActorProcessingErr> {
        for timer in &state.timers {
            timer.abort();
        }
        Ok(())
    }
}

async fn pet(state: &mut HealthState) {
    let timeout_ms = state.probe_timeout.as_millis() as u64;
    match call_t!(state.tree, SupervisorMsg::Children, timeout_ms) {
        Ok(children) => {
            tracing::debug!(children = children.len(), "watchdog: supervision tree answered");
            if state.args.systemd {
                if let Err(e) = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]) {
                    tracing::warn!("cannot notify systemd watchdog: {e}");
                } else {
                    metrics::counter!("smart_cctv_watchdog_pets_total").increment(1);
                }
            }
        }
        Err(e) => tracing::warn!("supervision tree did not answer ({e}); not petting the watchdog"),
    }
}

fn check_disk(state: &mut HealthState, config: &Config) {
    let h = &config.health;
    match disk::usage(&state.args.data_dir) {
        Ok(usage) => {
            let level = usage.level(h.disk_warn_percent, h.disk_critical_percent);
            metrics::gauge!("smart_cctv_disk_used_percent").set(usage.used_percent);
            metrics::gauge!("smart_cctv_disk_available_bytes").set(usage.available_bytes as f64);
            let state_name = match level {
                DiskLevel::Ok => "ok",
                DiskLevel::Warn => "warn",
                DiskLevel::Critical => "critical",
            };
            let previous = state.args.board.components().get("disk").map(|c| c.state.clone());
            if previous.as_deref() != Some(state_name) && level != DiskLevel::Ok {
                tracing::warn!(
                    used_percent = format!("{:.1}", usage.used_percent),
                    data_dir = %state.args.data_dir.display(),
                    "disk {state_name}"
                );
            }
            let error = (level == DiskLevel::Critical)
                .then(|| format!("{:.1}% used, critical at {}%", usage.used_percent, h.disk_critical_percent));
            state.args.board.set_component("disk", level != DiskLevel::Critical, state_name, error);
            if let Ok(detail) = serde_json::to_value(usage) {
                state.args.board.set_detail("disk", detail);
            }
        }
        Err(e) => {
            state.args.board.set_component(
                "disk",
                false,
                "unreadable",
                Some(format!("{}: {e}", state.args.data_dir.display())),
            );
        }
    }
}

/// Hands the board's transitions to the store, and emails them when asked.
fn record_transitions(state: &mut HealthState, config: &Config) {
    let transitions = state.args.board.take_transitions();
    if transitions.is_empty() {
        return;
    }
    let mut lines = Vec::new();
    for record in transitions {
        if let Record::Health(h) = &record {
            lines.push(format!(
                "{} is {}{}",
                h.component,
                h.state,
                h.error.as_ref().map(|e| format!(": {e}")).unwrap_or_default()
            ));
        }
        crate::store::actor::submit(record);
    }
    let m = &config.monitoring;
    if !config.health.email_on_transition || !m.email_alerts_enabled || lines.is_empty() {
        return;
    }
    if state.last_email.is_some_and(|t| t.elapsed() < m.email_min_interval) {
        metrics::counter!("smart_cctv_health_emails_total", "result" => "rate_limited").increment(1);
        return;
    }
    state.last_email = Some(Instant::now());
    let monitoring = m.clone();
    tokio::task::spawn_blocking(move || {
        match crate::alerts::email::send(&monitoring, "smart-cctv: health changed", &lines.join("\n")) {
            Ok(()) => metrics::counter!("smart_cctv_health_emails_total", "result" => "sent").increment(1),
            Err(e) => {
                metrics::counter!("smart_cctv_health_emails_total", "result" => "failed").increment(1);
                tracing::error!("health email: {e}");
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::watchdog_usec;

    #[test]
    fn watchdog_env_follows_sd_watchdog_enabled() {
        assert_eq!(watchdog_usec(Some("3000000"), None, 7), Some(3_000_000));
        assert_eq!(watchdog_usec(Some("3000000"), Some("7"), 7), Some(3_000_000));
        assert_eq!(watchdog_usec(Some("3000000"), Some("8"), 7), None);
        assert_eq!(watchdog_usec(Some("0"), None, 7), None);
        assert_eq!(watchdog_usec(Some("soon"), None, 7), None);
        assert_eq!(watchdog_usec(None, Some("7"), 7), None);
    }
}
