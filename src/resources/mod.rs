//! The resource actor: what `top -p $(pgrep …)` showed, as metrics.
//!
//! Parent: the root supervisor. Every `health.interval` it samples this
//! process's CPU %, resident memory, threads and open file descriptors into
//! metrics and the health board (`process`), and warns once each time a
//! limit from `health.max_*` is crossed (and says when it is back under).

use crate::config::{Config, HealthConfig};
use crate::health::HealthBoard;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use serde::Serialize;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};
use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};
use tokio::sync::watch;

pub struct ResourceActor;

pub struct ResourceArgs {
    pub board: HealthBoard,
    pub config: watch::Receiver<Arc<Config>>,
    /// CPU and RSS over the last hour, for the web page's chart.
    pub history: History,
}

/// One point of [`History`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Point {
    /// Unix seconds.
    pub time: u64,
    pub cpu_percent: f64,
    pub rss_bytes: u64,
}

/// The process's CPU and RSS over the last hour, one point per
/// [`HISTORY_STEP`], in memory (a restart starts it again).
#[derive(Clone, Default)]
pub struct History(Arc<std::sync::Mutex<std::collections::VecDeque<Point>>>);

pub const HISTORY_STEP: Duration = Duration::from_secs(10);
pub const HISTORY_POINTS: usize = 360;

impl History {
    /// Keeps `sample` if the last point is a step old; drops points past an hour.
    pub fn record(&self, time: u64, sample: &Sample) {
        let mut points = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if points.back().is_some_and(|p| time < p.time + HISTORY_STEP.as_secs()) {
            return;
        }
        if points.len() >= HISTORY_POINTS {
            points.pop_front();
        }
        points.push_back(Point { time, cpu_percent: sample.cpu_percent, rss_bytes: sample.rss_bytes });
    }

    pub fn points(&self) -> Vec<Point> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).iter().copied().collect()
    }
}

pub struct ResourceState {
    args: ResourceArgs,
    system: System,
    pid: Pid,
    last_sample: Option<Instant>,
    last_trim: Instant,
    /// Limits currently exceeded, so each crossing is logged once.
    over: BTreeSet<&'static str>,
    timer: tokio::task::JoinHandle<()>,
}

pub enum ResourceMsg {
    Tick,
    /// Fail as asked: sent only by the test-only fault routes (`faults.rs`).
    Fault(crate::faults::Fault),
}

impl ractor::Message for ResourceMsg {}

/// One sample of this process.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Sample {
    /// Of one core: 200 means two cores busy.
    pub cpu_percent: f64,
    pub rss_bytes: u64,
    pub threads: u64,
    pub open_files: u64,
}

impl Sample {
    /// The limits of `h` this sample is over, with the value and the limit.
    pub fn over(&self, h: &HealthConfig) -> Vec<(&'static str, f64, f64)> {
        let mut over = Vec::new();
        let rss_mb = self.rss_bytes as f64 / (1024.0 * 1024.0);
        for (name, value, limit) in [
            ("max_rss_mb", rss_mb, h.max_rss_mb.map(|v| v as f64)),
            ("max_cpu_percent", self.cpu_percent, h.max_cpu_percent),
            ("max_open_files", self.open_files as f64, h.max_open_files.map(|v| v as f64)),
        ] {
            if let Some(limit) = limit
                && value > limit
            {
                over.push((name, value, limit));
            }
        }
        over
    }
}

const TICK: Duration = Duration::from_secs(1);

/// How often freed heap memory is handed back to the system.
const TRIM_EVERY: Duration = Duration::from_secs(60);

/// glibc keeps the memory freed inside its heaps for reuse, and the frames
/// and activations churned every frame leave free holes that are never at a
/// heap's top, so RSS ratchets up over weeks though nothing is in use there
/// (README "Soak"). `malloc_trim` returns every free page of every arena.
fn give_back_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free pages; it takes the allocator's
    // own locks and has no other precondition.
    unsafe {
        libc::malloc_trim(0);
    }
}

impl Actor for ResourceActor {
    type Msg = ResourceMsg;
    type State = ResourceState;
    type Arguments = ResourceArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<ResourceMsg>,
        args: ResourceArgs,
    ) -> Result<ResourceState, ActorProcessingErr> {
        crate::faults::register("resources", &myself, ResourceMsg::Fault);
        let timer = myself.send_interval(TICK, || ResourceMsg::Tick);
        Ok(ResourceState {
            args,
            system: System::new(),
            pid: Pid::from_u32(std::process::id()),
            last_sample: None,
            last_trim: Instant::now(),
            over: BTreeSet::new(),
            timer,
        })
    }

    async fn handle(
        &self,
        _: ActorRef<ResourceMsg>,
        msg: ResourceMsg,
        state: &mut ResourceState,
    ) -> Result<(), ActorProcessingErr> {
        if let ResourceMsg::Fault(fault) = msg {
            return fault.strike("resources");
        }
        let config = state.args.config.borrow().clone();
        if state.last_sample.is_some_and(|t| t.elapsed() < config.health.interval) {
            return Ok(());
        }
        state.last_sample = Some(Instant::now());
        if state.last_trim.elapsed() >= TRIM_EVERY {
            state.last_trim = Instant::now();
            // Milliseconds, but it holds the allocator's locks: off the runtime's threads.
            tokio::task::spawn_blocking(give_back_free_memory).await?;
        }
        let Some(sample) = sample(state) else {
            return Err("cannot read this process's own statistics".into());
        };
        metrics::gauge!("smart_cctv_process_cpu_percent").set(sample.cpu_percent);
        metrics::gauge!("smart_cctv_process_resident_bytes").set(sample.rss_bytes as f64);
        metrics::gauge!("smart_cctv_process_threads").set(sample.threads as f64);
        metrics::gauge!("smart_cctv_process_open_fds").set(sample.open_files as f64);
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        state.args.history.record(now, &sample);
        if let Ok(detail) = serde_json::to_value(sample) {
            state.args.board.set_detail("process", detail);
        }
        let over = sample.over(&config.health);
        let now_over: BTreeSet<&'static str> = over.iter().map(|(name, _, _)| *name).collect();
        for (name, value, limit) in &over {
            if !state.over.contains(name) {
                metrics::counter!("smart_cctv_resource_limit_exceeded_total", "limit" => *name).increment(1);
                tracing::warn!("resources: health.{name} exceeded: {value:.1} > {limit}");
            }
        }
        for name in state.over.difference(&now_over) {
            tracing::info!("resources: back under health.{name}");
        }
        state.over = now_over;
        Ok(())
    }

    async fn post_stop(&self, _: ActorRef<ResourceMsg>, state: &mut ResourceState) -> Result<(), ActorProcessingErr> {
        state.timer.abort();
        Ok(())
    }
}

fn sample(state: &mut ResourceState) -> Option<Sample> {
    let kind = ProcessRefreshKind::nothing().with_cpu().with_memory().with_tasks();
    state.system.refresh_processes_specifics(ProcessesToUpdate::Some(&[state.pid]), true, kind);
    let process = state.system.process(state.pid)?;
    // The tasks of a process are its threads; the main thread is one of them.
    let threads = process.tasks().map_or(1, |t| t.len().max(1)) as u64;
    let open_files = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count()) as u64;
    Some(Sample { cpu_percent: f64::from(process.cpu_usage()), rss_bytes: process.memory(), threads, open_files })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_keeps_one_point_per_step_for_an_hour() {
        let history = History::default();
        let sample = Sample { cpu_percent: 10.0, rss_bytes: 1, threads: 1, open_files: 1 };
        for second in 0..(2 * 3600) {
            history.record(1000 + second, &sample);
        }
        let points = history.points();
        assert_eq!(points.len(), HISTORY_POINTS);
        assert_eq!(points.last().unwrap().time, 1000 + 2 * 3600 - 10);
        assert!(points.windows(2).all(|w| w[1].time - w[0].time == 10));
    }

    #[test]
    fn limits_are_crossed_only_above_them() {
        let sample = Sample { cpu_percent: 150.0, rss_bytes: 300 * 1024 * 1024, threads: 12, open_files: 40 };
        let none = HealthConfig::default();
        assert!(sample.over(&none).is_empty());
        let h = HealthConfig { max_rss_mb: Some(256), max_cpu_percent: Some(150.0), max_open_files: Some(39), ..none };
        let names: Vec<&str> = sample.over(&h).iter().map(|(n, _, _)| *n).collect();
        assert_eq!(names, ["max_rss_mb", "max_open_files"]);
    }
}
