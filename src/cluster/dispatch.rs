//! An edge's dispatcher: one of `cluster.in_flight` under the `inference`
//! supervisor. It takes the next frame from the same per-camera, drop-oldest
//! queue the local workers drain, sends it to the remote worker chosen by
//! load and round trip, and publishes what comes back. A frame no remote
//! worker answers in time goes to this node's own detector when it has one;
//! otherwise it is dropped and counted (`no_worker`).

use super::INFERENCE;
use super::peers::{Choice, Peers};
use super::server::RemoteWorkerMsg;
use super::wire::{FrameReply, Payload, Prepared, detections_back, prepare};
use crate::config::cluster::FrameEncoding;
use crate::pipeline::queue::FrameQueue;
use crate::pipeline::{DetectionSink, Detections, SharedDetector};
use ractor::rpc::CallResult;
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How long one wait for a frame or a worker may hold the mailbox.
const POLL: Duration = Duration::from_millis(200);
/// How soon a dispatcher looks again when every remote worker is busy.
const BUSY: Duration = Duration::from_millis(5);

pub struct Dispatcher;

pub struct DispatchArgs {
    pub node: String,
    pub queue: Arc<FrameQueue>,
    pub output: Arc<dyn DetectionSink>,
    pub peers: Peers,
    /// The detector's input size, to scale frames before they cross.
    pub size: usize,
    pub encoding: FrameEncoding,
    pub deadline: Duration,
    /// This node's own detector, on an `all` node.
    pub local: Option<watch::Receiver<SharedDetector>>,
}

pub struct DispatchState {
    args: DispatchArgs,
    turn: usize,
}

pub enum DispatchMsg {
    Next,
    /// Fail as asked: sent only by the test-only fault routes (`faults.rs`).
    Fault(crate::faults::Fault),
}

impl ractor::Message for DispatchMsg {}

/// Remote workers in the pool, by the name of their node.
fn remote_workers(peers: &Peers) -> BTreeMap<String, Vec<ActorCell>> {
    let mut by_node: BTreeMap<String, Vec<ActorCell>> = BTreeMap::new();
    for cell in ractor::pg::get_members(&INFERENCE.to_owned()) {
        let id = cell.get_id();
        if id.is_local() {
            continue;
        }
        if let Some(name) = peers.name_of(id.node()) {
            by_node.entry(name).or_default().push(cell);
        }
    }
    by_node
}

impl Actor for Dispatcher {
    type Msg = DispatchMsg;
    type State = DispatchState;
    type Arguments = DispatchArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<DispatchMsg>,
        args: DispatchArgs,
    ) -> Result<DispatchState, ActorProcessingErr> {
        crate::faults::register(&format!("dispatch/{}", myself.get_id()), &myself, DispatchMsg::Fault);
        myself.cast(DispatchMsg::Next)?;
        Ok(DispatchState { args, turn: fastrand::usize(..64) })
    }

    async fn handle(
        &self,
        myself: ActorRef<DispatchMsg>,
        msg: DispatchMsg,
        state: &mut DispatchState,
    ) -> Result<(), ActorProcessingErr> {
        if let DispatchMsg::Fault(fault) = msg {
            return fault.strike("dispatcher");
        }
        state.next().await;
        myself.cast(DispatchMsg::Next)?;
        Ok(())
    }
}

impl DispatchState {
    async fn next(&mut self) {
        let args = &self.args;
        let workers = remote_workers(&args.peers);
        let node = match args.peers.choose(workers.keys().map(String::as_str)) {
            Choice::Node(node) => node,
            // A frame waits in the queue, where a newer one may replace it.
            Choice::AllBusy => return tokio::time::sleep(BUSY).await,
            // The local workers take the frames meanwhile.
            Choice::Nobody if args.local.is_some() => return tokio::time::sleep(POLL).await,
            Choice::Nobody => {
                if args.queue.pop(POLL).await.is_some() {
                    metrics::counter!("smart_cctv_frames_lost_total", "reason" => "no_worker").increment(1);
                }
                return;
            }
        };
        let Some(frame) = args.queue.pop(POLL).await else { return };
        let cells = &workers[&node];
        self.turn = self.turn.wrapping_add(1);
        let worker: ActorRef<RemoteWorkerMsg> = ActorRef::from(cells[self.turn % cells.len()].clone());
        let (from, camera, seq, rgb, size, encoding) =
            (args.node.clone(), frame.camera.clone(), frame.seq, frame.rgb.clone(), args.size, args.encoding);
        let prepared = tokio::task::spawn_blocking(move || prepare(&from, &camera, seq, &rgb, size, encoding)).await;
        let prepared = match prepared {
            Ok(Ok(p)) => p,
            Ok(Err(why)) => {
                tracing::warn!(camera = %frame.camera, "frame not sent: {why}");
                metrics::counter!("smart_cctv_frames_lost_total", "reason" => "encode").increment(1);
                return;
            }
            Err(join) => {
                tracing::error!(camera = %frame.camera, "frame preparation panicked: {join}");
                metrics::counter!("smart_cctv_frames_lost_total", "reason" => "encode").increment(1);
                return;
            }
        };
        let encoding_label = if args.encoding == FrameEncoding::Jpeg { "jpeg" } else { "raw" };
        metrics::histogram!("smart_cctv_cluster_frame_bytes", "encoding" => encoding_label)
            .record(prepared.request.bytes.len() as f64);
        let started = Instant::now();
        args.peers.sent(&node);
        let request = prepared.request.clone();
        let answer = worker.call(|port| RemoteWorkerMsg::Detect(Payload::ok(request), port), Some(args.deadline)).await;
        let elapsed = started.elapsed();
        let failure = match answer {
            Ok(CallResult::Success(Payload(Ok(reply)))) if reply.error.is_none() => {
                args.peers.answered(&node, Some(reply.queue_depth));
                self.delivered(&node, frame, &reply, &prepared, elapsed);
                return;
            }
            Ok(CallResult::Success(Payload(Ok(reply)))) => reply.error.unwrap_or_default(),
            Ok(CallResult::Success(Payload(Err(e)))) => e,
            Ok(CallResult::Timeout) => "deadline passed".to_owned(),
            Ok(CallResult::SenderError) | Err(_) => "not delivered".to_owned(),
        };
        args.peers.answered(&node, None);
        metrics::counter!("smart_cctv_cluster_failures_total", "node" => node.clone()).increment(1);
        tracing::debug!(peer = %node, camera = %frame.camera, "remote inference failed: {failure}");
        self.fallback(frame).await;
    }

    fn delivered(
        &self,
        node: &str,
        frame: crate::camera::Frame,
        reply: &FrameReply,
        prepared: &Prepared,
        rtt: Duration,
    ) {
        let inference = Duration::from_micros(reply.inference_us);
        metrics::counter!("smart_cctv_cluster_frames_total", "node" => node.to_owned(), "direction" => "sent")
            .increment(1);
        // What the link and the remote queue add to the inference itself.
        metrics::histogram!("smart_cctv_cluster_added_latency_seconds", "node" => node.to_owned())
            .record(rtt.saturating_sub(inference).as_secs_f64());
        metrics::histogram!("smart_cctv_detection_latency_seconds", "camera" => frame.camera.to_string())
            .record(frame.captured_at.elapsed().as_secs_f64());
        let detections = detections_back(reply, prepared);
        self.args.output.publish(Detections { frame, detections, inference });
    }

    /// This node's own detector, when it has one and it is loaded.
    async fn fallback(&self, frame: crate::camera::Frame) {
        let detector = self.args.local.as_ref().and_then(|rx| rx.borrow().clone());
        let Some(detector) = detector else {
            metrics::counter!("smart_cctv_frames_lost_total", "reason" => "no_worker").increment(1);
            return;
        };
        let rgb = frame.rgb.clone();
        let started = Instant::now();
        match tokio::task::spawn_blocking(move || detector.detect(&rgb)).await {
            Ok(Ok(detections)) => {
                let inference = started.elapsed();
                self.args.output.publish(Detections { frame, detections, inference });
            }
            _ => metrics::counter!("smart_cctv_frames_lost_total", "reason" => "inference_error").increment(1),
        }
    }
}
