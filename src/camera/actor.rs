//! The camera actor: one per enabled camera.
//!
//! Parent: the dynamic `cameras` supervisor. Input: the camera's config.
//! Output: frames to its [`FrameSink`], its state on the health board and in
//! metrics. It owns its source (a task or thread) and restarts it after a
//! failure, with exponential backoff and jitter; an authentication failure
//! gets its own, slower backoff. No frame within `stall_timeout` is a failure
//! too, whether the camera hangs while connecting or while streaming.
//! The actor itself fails only on bugs, and its supervisor restarts it.
//!
//! Each connection is one generation: one task running the opener's future,
//! with its own stats. A generation is stopped (its stop flag set, its task
//! aborted, which drops any RTSP session) and awaited before the next one
//! starts, so a hung camera never leaves a session decoding beside the new one.

use super::source::{Opener, SourceContext, SourceError};
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
/// How long a stopping source may take to end (a blocking file or V4L2 read
/// notices its stop flag within one frame).
const SOURCE_STOP: Duration = Duration::from_secs(5);

pub struct CameraActor;

pub struct CameraArgs {
    pub config: CameraConfig,
    pub performance: PerformanceConfig,
    /// The longest side of frames for the detector.
    pub analysis_size: u32,
    pub sink: Arc<dyn FrameSink>,
    pub board: HealthBoard,
    /// Runs the source; one per camera, kept across restarts of the actor.
    pub opener: Arc<dyn Opener>,
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
    /// Fail as asked: sent only by the test-only fault routes (`faults.rs`).
    Fault(crate::faults::Fault),
}

impl ractor::Message for CameraMsg {}

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

/// One generation of the source. Stopped and awaited by
/// [`CameraState::stop_source`]; dropping it still stops it.
struct RunningSource {
    generation: u64,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
    started: Instant,
    /// This generation's frames and progress, and no other's.
    stats: Arc<SourceStats>,
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
    opener: Arc<dyn Opener>,
    /// Frames decoded by the generations that have ended.
    frames_before: u64,
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
        let stats = Arc::new(SourceStats::new(self.id.clone()));
        let ctx = SourceContext {
            camera: self.id.clone(),
            analysis_size: self.analysis_size,
            fps,
            frame_skip: self.performance.frame_skip,
            sink: self.sink.clone(),
            stats: stats.clone(),
            stop: stop.clone(),
        };
        let run = self.opener.run(&self.config, ctx);
        let me = myself.clone();
        // One task per generation, running the source itself: aborting it
        // drops the source (and its RTSP session), nothing is left detached.
        let task = tokio::spawn(async move {
            let result = run.await;
            let _ = me.cast(CameraMsg::SourceEnded(generation, result));
        });
        self.source = Some(RunningSource { generation, stop, task, started: Instant::now(), stats });
        self.set_phase(CameraPhase::Connecting);
    }

    /// Stops the running generation and waits for it to end.
    async fn stop_source(&mut self) {
        let Some(mut source) = self.source.take() else { return };
        source.stop.store(true, Ordering::Relaxed);
        source.task.abort();
        if tokio::time::timeout(SOURCE_STOP, &mut source.task).await.is_err() {
            metrics::counter!("smart_cctv_camera_sources_unstopped_total", "camera" => self.id.to_string())
                .increment(1);
            tracing::error!(camera = %self.id, "the source did not stop within {SOURCE_STOP:?}");
        }
        self.frames_before += source.stats.decoded();
    }

    /// The source failed or stalled: stop it and schedule the next try.
    async fn fail(&mut self, myself: &ActorRef<CameraMsg>, error: SourceError) {
        let streamed_long =
            self.source.as_ref().is_some_and(|s| s.started.elapsed() >= RESET_AFTER && s.stats.last_frame().is_some());
        self.stop_source().await;
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

    async fn check(&mut self, myself: &ActorRef<CameraMsg>) {
        let Some(source) = &self.source else { return };
        let last = source.stats.last_frame();
        if let Some(t) = last {
            metrics::gauge!("smart_cctv_camera_last_frame_age_seconds", "camera" => self.id.to_string())
                .set(t.elapsed().as_secs_f64());
        }
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
            )
            .await;
        }
    }

    fn status(&self) -> CameraStatus {
        CameraStatus {
            id: self.id.to_string(),
            phase: self.phase,
            frames: self.frames_before + self.source.as_ref().map_or(0, |s| s.stats.decoded()),
            reconnects: self.reconnects,
            last_frame_age_seconds: self
                .source
                .as_ref()
                .and_then(|s| s.stats.last_frame())
                .map(|t| t.elapsed().as_secs_f64()),
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
        crate::faults::register(&format!("camera/{id}"), &myself, CameraMsg::Fault);
        let ticker = myself.send_interval(TICK, || CameraMsg::Tick);
        // No I/O here: a failed pre_start would count as a restart.
        myself.cast(CameraMsg::Connect)?;
        Ok(CameraState {
            opener: args.opener,
            frames_before: 0,
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
            CameraMsg::Fault(fault) => return fault.strike(&format!("camera/{}", state.id)),
            CameraMsg::Connect => state.connect(&myself),
            CameraMsg::SourceEnded(generation, result) => {
                if state.source.as_ref().is_some_and(|s| s.generation == generation) {
                    let error = result.err().unwrap_or_else(|| SourceError::Ended("source stopped".into()));
                    state.fail(&myself, error).await;
                }
            }
            CameraMsg::Tick => {
                state.check(&myself).await;
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
        state.stop_source().await;
        state.board.remove_component(&format!("camera/{}", state.id));
        metrics::gauge!("smart_cctv_camera_up", "camera" => state.id.to_string()).set(0.0);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    //! The actor on a fake source: its lifecycle, with no camera at all.

    use super::*;
    use crate::camera::Frame;
    use futures_util::future::BoxFuture;
    use std::sync::Mutex;

    struct NoSink;

    impl FrameSink for NoSink {
        fn push(&self, _: Frame) {}
    }

    /// A source that connects and then never sends a frame (a hung camera),
    /// logging when each generation opens and when its future is dropped.
    #[derive(Default)]
    struct HungOpener {
        log: Arc<Mutex<Vec<String>>>,
    }

    struct DropLog(Arc<Mutex<Vec<String>>>, usize);

    impl Drop for DropLog {
        fn drop(&mut self) {
            self.0.lock().unwrap().push(format!("closed {}", self.1));
        }
    }

    impl Opener for HungOpener {
        fn run(&self, _: &CameraConfig, _: SourceContext) -> BoxFuture<'static, Result<(), SourceError>> {
            let n = {
                let mut log = self.log.lock().unwrap();
                let n = log.iter().filter(|l| l.starts_with("opened")).count();
                log.push(format!("opened {n}"));
                n
            };
            let guard = DropLog(self.log.clone(), n);
            Box::pin(async move {
                let _guard = guard;
                std::future::pending::<()>().await;
                Ok(())
            })
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn each_stalled_generation_is_closed_before_the_next_opens() {
        let opener = Arc::new(HungOpener::default());
        let config: CameraConfig = serde_json::from_value(serde_json::json!({
            "id": "fake", "url": "rtsp://127.0.0.1/fake", "stall_timeout": "150ms",
            "backoff": { "initial": "10ms", "max": "20ms" },
        }))
        .unwrap();
        let args = CameraArgs {
            config,
            performance: PerformanceConfig::default(),
            analysis_size: 320,
            sink: Arc::new(NoSink),
            board: HealthBoard::new(),
            opener: opener.clone(),
        };
        let (camera, handle) = Actor::spawn(None, CameraActor, args).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while opener.log.lock().unwrap().iter().filter(|l| l.starts_with("opened")).count() < 4 {
            assert!(Instant::now() < deadline, "the camera did not reconnect: {:?}", opener.log.lock().unwrap());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        camera.stop(None);
        handle.await.unwrap();
        // Strictly one at a time: every generation is closed before the next
        // opens, and the last one is closed when the actor stops.
        let log = opener.log.lock().unwrap().clone();
        let opened = log.iter().filter(|l| l.starts_with("opened")).count();
        let expected: Vec<String> = (0..opened).flat_map(|n| [format!("opened {n}"), format!("closed {n}")]).collect();
        assert_eq!(log, expected);
    }
}
