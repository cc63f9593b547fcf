//! An inference worker: one of N under the `inference` supervisor. It takes
//! the next frame from the shared queue, runs the detector off the async
//! runtime, and publishes the detections. A panic in the detector fails the
//! worker; its supervisor restarts it, the frame it held is counted as lost,
//! and the other workers carry on.

use super::queue::FrameQueue;
use super::{DetectionSink, Detections, SharedDetector};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How long one wait for a frame may hold the mailbox, so a stop is served promptly.
const POLL: Duration = Duration::from_millis(200);

pub struct InferenceWorker;

pub struct WorkerArgs {
    pub queue: Arc<FrameQueue>,
    pub detector: watch::Receiver<SharedDetector>,
    pub output: Arc<dyn DetectionSink>,
}

pub enum WorkerMsg {
    Next,
    /// Fail as asked: sent only by the test-only fault routes (`faults.rs`).
    Fault(crate::faults::Fault),
}

impl ractor::Message for WorkerMsg {}

impl Actor for InferenceWorker {
    type Msg = WorkerMsg;
    type State = WorkerArgs;
    type Arguments = WorkerArgs;

    async fn pre_start(&self, myself: ActorRef<WorkerMsg>, args: WorkerArgs) -> Result<WorkerArgs, ActorProcessingErr> {
        crate::faults::register(&format!("worker/{}", myself.get_id()), &myself, WorkerMsg::Fault);
        myself.cast(WorkerMsg::Next)?;
        Ok(args)
    }

    async fn handle(
        &self,
        myself: ActorRef<WorkerMsg>,
        msg: WorkerMsg,
        state: &mut WorkerArgs,
    ) -> Result<(), ActorProcessingErr> {
        if let WorkerMsg::Fault(fault) = msg {
            return fault.strike("inference worker");
        }
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
            let (model, size) = detector.labels();
            metrics::histogram!("smart_cctv_inference_seconds", "model" => model, "size" => size)
                .record(inference.as_secs_f64());
            metrics::histogram!("smart_cctv_detection_latency_seconds", "camera" => camera.to_string())
                .record(frame.captured_at.elapsed().as_secs_f64());
            state.output.publish(Detections { frame, detections, inference });
        }
        myself.cast(WorkerMsg::Next)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base::clock::tokio_clock;
    use crate::camera::Frame;
    use crate::detect::{DetectError, Detection};
    use crate::health::HealthBoard;
    use crate::pipeline::FrameDetector;
    use crate::supervision::{ChildSpec, Intensity, Restart, Strategy, Supervisor, SupervisorArgs};
    use std::sync::Mutex;
    use std::time::SystemTime;

    /// Finds one "person" in every frame, and panics on frames 13 pixels wide.
    struct Poisonable;

    impl FrameDetector for Poisonable {
        fn detect(&self, image: &image::RgbImage) -> Result<Vec<Detection>, DetectError> {
            assert!(image.width() != 13, "poisoned frame");
            Ok(vec![Detection { class_id: 0, class_name: "person", confidence: 0.9, bbox: [0.0, 0.0, 1.0, 1.0] }])
        }

        fn labels(&self) -> (String, String) {
            ("test".into(), "1".into())
        }
    }

    #[derive(Default)]
    struct Published(Mutex<Vec<u64>>);

    impl DetectionSink for Published {
        fn publish(&self, d: Detections) {
            self.0.lock().unwrap().push(d.frame.seq);
        }
    }

    fn frame(seq: u64, width: u32) -> Frame {
        Frame {
            camera: Arc::from(if seq.is_multiple_of(2) { "a" } else { "b" }),
            seq,
            pts: None,
            captured: SystemTime::now(),
            captured_at: Instant::now(),
            rgb: Arc::new(image::RgbImage::new(width, 4)),
            gray: Arc::new(image::GrayImage::new(2, 2)),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panicking_worker_is_restarted_and_only_its_frame_is_lost() {
        let queue = Arc::new(FrameQueue::new(64));
        let detector: SharedDetector = Some(Arc::new(Poisonable));
        let (_tx, rx) = watch::channel(detector);
        let published = Arc::new(Published::default());
        let board = HealthBoard::new();
        let workers = (0..2)
            .map(|i| {
                let (queue, rx, output) = (queue.clone(), rx.clone(), published.clone() as Arc<dyn DetectionSink>);
                let mut spec = ChildSpec::new(format!("worker-{i}"), Restart::Permanent, move |sup| {
                    let args = WorkerArgs { queue: queue.clone(), detector: rx.clone(), output: output.clone() };
                    async move { Ok(Actor::spawn_linked(None, InferenceWorker, args, sup).await?.0.get_cell()) }
                });
                spec.backoff.initial = Duration::from_millis(50);
                spec
            })
            .collect();
        let args = SupervisorArgs {
            path: "inference".into(),
            strategy: Strategy::OneForOne,
            intensity: Intensity { max_restarts: 5, period: Duration::from_secs(10) },
            children: workers,
            board: board.clone(),
            clock: tokio_clock(),
            on_escalate: None,
        };
        let (sup, _) = Actor::spawn(None, Supervisor, args).await.unwrap();

        for seq in 1..=20 {
            queue.push(frame(seq, if seq == 11 { 13 } else { 4 }));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while published.0.lock().unwrap().len() < 19 {
            assert!(Instant::now() < deadline, "published only {:?}", published.0.lock().unwrap());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut seqs = published.0.lock().unwrap().clone();
        seqs.sort_unstable();
        let expected: Vec<u64> = (1..=20).filter(|s| *s != 11).collect();
        assert_eq!(seqs, expected);
        let restarts =
            || -> u64 { (0..2).filter_map(|i| board.get(&format!("inference/worker-{i}"))).map(|h| h.restarts).sum() };
        while restarts() < 1 {
            assert!(Instant::now() < deadline, "no restart: {:?}", board.snapshot());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(restarts(), 1);
        let failed =
            (0..2).filter_map(|i| board.get(&format!("inference/worker-{i}"))).find(|h| h.restarts == 1).unwrap();
        assert!(failed.last_error.unwrap().contains("panicked"));
        sup.stop(None);
    }
}
