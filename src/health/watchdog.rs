//! The watchdog actor: pets systemd's watchdog while the process is healthy
//! enough that a restart would not help.
//!
//! Parent: the root supervisor, which it pings every tick. Output:
//! `WATCHDOG=1` on `NOTIFY_SOCKET`. The rule: pet while the runtime runs and
//! the supervision tree answers; a camera being down is not a reason to stop,
//! since restarting the process would not bring the camera back.

use crate::supervision::SupervisorMsg;
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, call_t};
use std::time::Duration;

pub struct Watchdog;

pub struct WatchdogArgs {
    /// The supervisor whose answer proves the tree is alive.
    pub tree: ActorCell,
    pub interval: Duration,
    /// Whether systemd asked for pets (`WATCHDOG_USEC` set).
    pub systemd: bool,
}

pub struct WatchdogState {
    tree: ActorRef<SupervisorMsg>,
    /// How long the tree may take to answer one ping.
    probe_timeout: Duration,
    systemd: bool,
    ticker: tokio::task::JoinHandle<()>,
}

pub enum WatchdogMsg {
    Tick,
}

/// The tick interval: half of `WATCHDOG_USEC` when systemd set it, so one
/// late tick does not trip it; otherwise a slow heartbeat for the logs.
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

impl Actor for Watchdog {
    type Msg = WatchdogMsg;
    type State = WatchdogState;
    type Arguments = WatchdogArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<WatchdogMsg>,
        args: WatchdogArgs,
    ) -> Result<WatchdogState, ActorProcessingErr> {
        let ticker = myself.send_interval(args.interval, || WatchdogMsg::Tick);
        Ok(WatchdogState {
            tree: args.tree.into(),
            probe_timeout: args.interval.min(Duration::from_secs(2)),
            systemd: args.systemd,
            ticker,
        })
    }

    async fn handle(
        &self,
        _: ActorRef<WatchdogMsg>,
        msg: WatchdogMsg,
        state: &mut WatchdogState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            WatchdogMsg::Tick => {
                let timeout_ms = state.probe_timeout.as_millis() as u64;
                match call_t!(state.tree, SupervisorMsg::Children, timeout_ms) {
                    Ok(children) => {
                        tracing::debug!(children = children.len(), "watchdog: supervision tree answered");
                        if state.systemd {
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
        }
        Ok(())
    }

    async fn post_stop(&self, _: ActorRef<WatchdogMsg>, state: &mut WatchdogState) -> Result<(), ActorProcessingErr> {
        state.ticker.abort();
        Ok(())
    }
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
