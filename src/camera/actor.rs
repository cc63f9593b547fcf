//! The camera actor: one per enabled camera.
//!
//! Parent: the dynamic `cameras` supervisor. Input: the camera's config.
//! Output: frames to its [`FrameSink`], its state on the health board and in
//! metrics. It owns its source (a task or thread) and restarts it after a
//! failure, with exponential backoff and jitter; an authentication failure
//! gets its own, slower backoff. No frame within `stall_timeout` is a failure
//! too, whether the camera hangs while connecting or while streaming.
//! The actor itself fails only on bugs, and its supervisor restarts it.

use super::source::{SourceContext, SourceError, spawn_source};
use super::{FrameSink, SourceStats};
use crate::config::{CameraConfig, PerformanceConfig};
use crate::health::HealthBoard;
use crate::supervision::Backoff;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::Serialize;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How often the actor checks for stalls and refreshes its gauges.
const TICK: Duration = Duration::from_millis(250);
/// A camera that streamed this long starts its backoff over after a failure.
const RESET_AFTER: Duration = Duration::from_secs(30);

pub struct CameraActor;

pub struct CameraArgs {
    pub config: CameraConfig,
    pub performance: PerformanceConfig,
    /// The longest side of frames for the detector.
    pub analysis_size: u32,
    pub sink: Arc<dyn FrameSink>,
    pub board: HealthBoard,
}

/// Where a camera is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CameraPhase {
    Connecting,
    Streaming,
    Backoff,
    AuthFailed,
}

impl CameraPhase {
    pub const ALL: [Self; 4] = [Self::Connecting, Self::Streaming, Self::Backoff, Self::AuthFailed];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connecting => "connecting",
            Self::Streaming => "streaming",
            Self::Backoff => "backoff",
            Self::AuthFailed => "auth_failed",
        }
    }
}

pub enum CameraMsg {
    /// Start the source (first start, or the end of a backoff).
    Connect,
    /// The source with this generation stopped.
    SourceEnded(u64, Result<(), SourceError>),
    /// Check for a stall; refresh gauges.
    Tick,
    Status(RpcReplyPort<CameraStatus>),
}

/// A camera as `cameras` status and the API report it.
#[derive(Debug, Clone, Serialize)]
pub struct CameraStatus {
    pub id: String,
    pub phase: CameraPhase,
    pub frames: u64,
    pub reconnects: u64,
    pub last_frame_age_seconds: Option<f64>,
    pub last_error: Option<String>,
}

/// The running source, stopped on drop.
struct RunningSource {
    generation: u64,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
    started: Instant,
}

impl Drop for RunningSource {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.abort();
    }
}

pub struct CameraState {
    config: CameraConfig,
    performance: PerformanceConfig,
    analysis_size: u32,
    sink: Arc<dyn FrameSink>,
    board: HealthBoard,
    id: Arc<str>,
    phase: CameraPhase,
    source: Option<RunningSource>,
    stats: Arc<SourceStats>,
    generation: u64,
    /// Consecutive failures (and auth failures), which set the backoff.
    attempt: u32,
    auth_attempt: u32,
    reconnects: u64,
    last_error: Option<String>,
    ticker: tokio::task::JoinHandle<()>,
}

impl CameraState {
    fn set_phase(&mut self, phase: CameraPhase) {
        if self.phase != phase {
            tracing::info!(camera = %self.id, from = self.phase.as_str(), to = phase.as_str(), "camera state");
        }
        self.phase = phase;
        let id = self.id.to_string();
        for p in CameraPhase::ALL {
            metrics::gauge!("smart_cctv_camera_state", "camera" => id.clone(), "state" => p.as_str())
                .set(if p == phase { 1.0 } else { 0.0 });
        }
        metrics::gauge!("smart_cctv_camera_up", "camera" => id.clone()).set(if phase == CameraPhase::Streaming {
            1.0
        } else {
            0.0
        });
        let error = (phase != CameraPhase::Streaming).then(|| self.last_error.clone()).flatten();
        self.board.set_component(&format!("camera/{id}"), phase == CameraPhase::Streaming, phase.as_str(), error);
    }

    fn connect(&mut self, myself: &ActorRef<CameraMsg>) {
        self.generation += 1;
        let generation = self.generation;
        let stop = Arc::new(AtomicBool::new(false));
        let fps = match (self.config.fps, self.performance.fps_limit) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let ctx = SourceContext {
            camera: self.id.clone(),
            analysis_size: self.analysis_size,
            fps,
            frame_skip: self.performance.frame_skip,
            sink: self.sink.clone(),
            stats: self.stats.clone(),
            stop: stop.clone(),
        };
        let run = spawn_source(&self.config, ctx);
        let me = myself.clone();
        let task = tokio::spawn(async move {
            let result = run.await.unwrap_or_else(|e| Err(SourceError::Ended(format!("source task failed: {e}"))));
            let _ = me.cast(CameraMsg::SourceEnded(generation, result));
        });
        self.source = Some(RunningSource { generation, stop, task, started: Instant::now() });
        self.set_phase(CameraPhase::Connecting);
    }

    /// The source failed or stalled: stop it and schedule the next try.
    fn fail(&mut self, myself: &ActorRef<CameraMsg>, error: SourceError) {
        let streamed_long = self
            .source
            .as_ref()
            .is_some_and(|s| s.started.elapsed() >= RESET_AFTER && self.stats.last_frame().is_some());
        self.source = None;
        self.reconnects += 1;
        metrics::counter!("smart_cctv_camera_reconnects_total", "camera" => self.id.to_string()).increment(1);
        let message = crate::config::load::redact_text(&error.to_string());
        self.last_error = Some(message.clone());
        let delay = if error.is_auth() {
            self.auth_attempt += 1;
            self.set_phase(CameraPhase::AuthFailed);
            Backoff::from(self.config.auth_backoff).delay(self.auth_attempt, fastrand::f64())
        } else {
            if streamed_long {
                self.attempt = 0;
            }
            self.auth_attempt = 0;
            self.attempt += 1;
            self.set_phase(CameraPhase::Backoff);
            Backoff::from(self.config.backoff).delay(self.attempt, fastrand::f64())
        };
        tracing::warn!(
            camera = %self.id,
            retry_in = %humantime::format_duration(Duration::from_millis(delay.as_millis() as u64)),
            "camera failed: {message}"
        );
        myself.send_after(delay, || CameraMsg::Connect);
    }

    fn publish(&self) {
        if let Ok(detail) = serde_json::to_value(self.status()) {
            self.board.set_detail(&format!("camera/{}", self.id), detail);
        }
    }

    fn check(&mut self, myself: &ActorRef<CameraMsg>) {
        let last = self.stats.last_frame();
        if let Some(t) = last {
            metrics::gauge!("smart_cctv_camera_last_frame_age_seconds", "camera" => self.id.to_string())
                .set(t.elapsed().as_secs_f64());
        }
        let Some(source) = &self.source else { return };
        let progress = last.filter(|t| *t > source.started).unwrap_or(source.started);
        if last.is_some_and(|t| t > source.started) && self.phase == CameraPhase::Connecting {
            self.attempt = self.attempt.min(1);
            self.last_error = None;
            self.set_phase(CameraPhase::Streaming);
        }
        let timeout = self.config.stall_timeout;
        if progress.elapsed() > timeout {
            let what = if self.phase == CameraPhase::Streaming { "no frame" } else { "no first frame" };
            self.fail(
                myself,
                SourceError::Ended(format!("stalled: {what} for {}", humantime::format_duration(timeout))),
            );
        }
    }

    fn status(&self) -> CameraStatus {
        CameraStatus {
            id: self.id.to_string(),
            phase: self.phase,
            frames: self.stats.decoded(),
            reconnects: self.reconnects,
            last_frame_age_seconds: self.stats.last_frame().map(|t| t.elapsed().as_secs_f64()),
            last_error: self.last_error.clone(),
        }
    }
}

impl Actor for CameraActor {
    type Msg = CameraMsg;
    type State = CameraState;
    type Arguments = CameraArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<CameraMsg>,
        args: CameraArgs,
    ) -> Result<CameraState, ActorProcessingErr> {
        let id: Arc<str> = Arc::from(args.config.id.as_str());
        let ticker = myself.send_interval(TICK, || CameraMsg::Tick);
        // No I/O here: a failed pre_start would count as a restart.
        myself.cast(CameraMsg::Connect)?;
        Ok(CameraState {
            stats: Arc::new(SourceStats::new(id.clone())),
            id,
            config: args.config,
            performance: args.performance,
            analysis_size: args.analysis_size,
            sink: args.sink,
            board: args.board,
            phase: CameraPhase::Connecting,
            source: None,
            generation: 0,
            attempt: 0,
            auth_attempt: 0,
            reconnects: 0,
            last_error: None,
            ticker,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<CameraMsg>,
        msg: CameraMsg,
        state: &mut CameraState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            CameraMsg::Connect => state.connect(&myself),
            CameraMsg::SourceEnded(generation, result) => {
                if state.source.as_ref().is_some_and(|s| s.generation == generation) {
                    let error = result.err().unwrap_or_else(|| SourceError::Ended("source stopped".into()));
                    state.fail(&myself, error);
                }
            }
            CameraMsg::Tick => {
                state.check(&myself);
                state.publish();
            }
            CameraMsg::Status(reply) => {
                let _ = reply.send(state.status());
            }
        }
        Ok(())
    }

    async fn post_stop(&self, _: ActorRef<CameraMsg>, state: &mut CameraState) -> Result<(), ActorProcessingErr> {
        state.ticker.abort();
        state.source = None;
        state.board.remove_component(&format!("camera/{}", state.id));
        metrics::gauge!("smart_cctv_camera_up", "camera" => state.id.to_string()).set(0.0);
        Ok(())
    }
}
