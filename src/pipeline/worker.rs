//! An inference worker: one of N under the `inference` supervisor. It takes
//! the next frame from the shared queue, runs the detector off the async
//! runtime, and publishes the detections. A panic in the detector fails the
//! worker; its supervisor restarts it, the frame it held is counted as lost,
//! and the other workers carry on.

use super::queue::FrameQueue;
use super::{DetectionSink, Detections};
use crate::detect::Detector;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How long one wait for a frame may hold the mailbox, so a stop is served promptly.
const POLL: Duration = Duration::from_millis(200);

pub struct InferenceWorker;

pub struct WorkerArgs {
    pub queue: Arc<FrameQueue>,
    pub detector: watch::Receiver<Option<Detector>>,
    pub output: Arc<dyn DetectionSink>,
}

pub enum WorkerMsg {
    Next,
}

impl Actor for InferenceWorker {
    type Msg = WorkerMsg;
    type State = WorkerArgs;
    type Arguments = WorkerArgs;

    async fn pre_start(&self, myself: ActorRef<WorkerMsg>, args: WorkerArgs) -> Result<WorkerArgs, ActorProcessingErr> {
        myself.cast(WorkerMsg::Next)?;
        Ok(args)
    }

    async fn handle(
        &self,
        myself: ActorRef<WorkerMsg>,
        _: WorkerMsg,
        state: &mut WorkerArgs,
    ) -> Result<(), ActorProcessingErr> {
        let detector = state.detector.borrow().clone();
        let Some(detector) = detector else {
            // No model yet: leave frames to age out of the queue.
            let _ = tokio::time::timeout(POLL, state.detector.changed()).await;
            myself.cast(WorkerMsg::Next)?;
            return Ok(());
        };
        if let Some(frame) = state.queue.pop(POLL).await {
            let camera = frame.camera.clone();
            let rgb = frame.rgb.clone();
            let started = Instant::now();
            let run = detector.clone();
            let result = tokio::task::spawn_blocking(move || run.detect(&rgb)).await;
            let inference = started.elapsed();
            let detections = match result {
                Ok(Ok(d)) => d,
                Ok(Err(e)) => {
                    metrics::counter!("smart_cctv_frames_lost_total", "reason" => "inference_error").increment(1);
                    return Err(format!("inference on {camera} failed: {e}").into());
                }
                Err(join) => {
                    metrics::counter!("smart_cctv_frames_lost_total", "reason" => "worker_panic").increment(1);
                    return Err(format!("inference worker panicked on a frame from {camera}: {join}").into());
                }
            };
            let size = detector.options.size.to_string();
            metrics::histogram!("smart_cctv_inference_seconds", "model" => format!("yolov8{}", detector.variant), "size" => size)
                .record(inference.as_secs_f64());
            metrics::histogram!("smart_cctv_detection_latency_seconds", "camera" => camera.to_string())
                .record(frame.captured_at.elapsed().as_secs_f64());
            state.output.publish(Detections { frame, detections, inference });
        }
        myself.cast(WorkerMsg::Next)?;
        Ok(())
    }
}
