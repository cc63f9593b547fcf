//! This node's side of the pool: the agent that answers heartbeats, and the
//! remote workers that run other nodes' frames on this node's detector.
//! Both join their process group when they start and leave it when they
//! stop, and ractor_cluster tells every connected node.

use super::peers::Peers;
use super::wire::{FrameReply, FrameRequest, NodeInfo, Payload, WireDetection, decode_frame};
use super::{INFERENCE, NODES};
use crate::config::Role;
use crate::pipeline::SharedDetector;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::RactorClusterMessage;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Instant;
use tokio::sync::watch;

/// What this node says of itself.
#[derive(Clone)]
pub struct LocalNode {
    pub name: String,
    pub role: Role,
    /// Remote workers this node runs.
    pub workers: u32,
    pub detector: watch::Receiver<SharedDetector>,
    pub stats: Arc<ServeStats>,
    pub peers: Peers,
}

#[derive(Default)]
pub struct ServeStats {
    /// Frames from other nodes being run or waiting for a worker.
    pub in_hand: AtomicU32,
    pub served: AtomicU64,
}

impl LocalNode {
    fn info(&self) -> NodeInfo {
        NodeInfo {
            node: self.name.clone(),
            role: self.role.as_str().to_owned(),
            workers: self.workers,
            detector_ready: self.detector.borrow().is_some(),
            queue_depth: self.stats.in_hand.load(Ordering::Relaxed),
            frames_served: self.stats.served.load(Ordering::Relaxed),
        }
    }
}

pub struct NodeAgent;

#[derive(RactorClusterMessage)]
pub enum AgentMsg {
    #[rpc]
    Ping(RpcReplyPort<Payload<NodeInfo>>),
}

impl Actor for NodeAgent {
    type Msg = AgentMsg;
    type State = LocalNode;
    type Arguments = LocalNode;

    async fn pre_start(&self, myself: ActorRef<AgentMsg>, local: LocalNode) -> Result<LocalNode, ActorProcessingErr> {
        ractor::pg::join(NODES.to_owned(), vec![myself.get_cell()]);
        Ok(local)
    }

    async fn handle(
        &self,
        _: ActorRef<AgentMsg>,
        msg: AgentMsg,
        local: &mut LocalNode,
    ) -> Result<(), ActorProcessingErr> {
        let AgentMsg::Ping(reply) = msg;
        let _ = reply.send(Payload::ok(local.info()));
        Ok(())
    }
}

pub struct RemoteWorker;

#[derive(RactorClusterMessage)]
pub enum RemoteWorkerMsg {
    #[rpc]
    Detect(Payload<FrameRequest>, RpcReplyPort<Payload<FrameReply>>),
}

impl Actor for RemoteWorker {
    type Msg = RemoteWorkerMsg;
    type State = LocalNode;
    type Arguments = LocalNode;

    async fn pre_start(
        &self,
        myself: ActorRef<RemoteWorkerMsg>,
        local: LocalNode,
    ) -> Result<LocalNode, ActorProcessingErr> {
        ractor::pg::join(INFERENCE.to_owned(), vec![myself.get_cell()]);
        Ok(local)
    }

    async fn handle(
        &self,
        _: ActorRef<RemoteWorkerMsg>,
        msg: RemoteWorkerMsg,
        local: &mut LocalNode,
    ) -> Result<(), ActorProcessingErr> {
        let RemoteWorkerMsg::Detect(Payload(request), reply) = msg;
        local.stats.in_hand.fetch_add(1, Ordering::Relaxed);
        let outcome = serve(local, request).await;
        local.stats.in_hand.fetch_sub(1, Ordering::Relaxed);
        let (answer, failure) = match outcome {
            Ok(answer) => (answer, None),
            Err(Served { answer, fatal }) => (answer, fatal),
        };
        let _ = reply.send(Payload::ok(answer));
        match failure {
            // The detector failed or panicked: this worker fails and is restarted.
            Some(why) => Err(why.into()),
            None => Ok(()),
        }
    }
}

/// A reply that carries an error, and whether the worker must fail for it.
struct Served {
    answer: FrameReply,
    fatal: Option<String>,
}

async fn serve(local: &LocalNode, request: Result<FrameRequest, String>) -> Result<FrameReply, Served> {
    let reply = |error: Option<String>, detections: Vec<WireDetection>, inference_us: u64| FrameReply {
        node: local.name.clone(),
        detections,
        inference_us,
        queue_depth: local.stats.in_hand.load(Ordering::Relaxed).saturating_sub(1),
        error,
    };
    let refuse = |why: String| {
        metrics::counter!("smart_cctv_cluster_bad_frames_total").increment(1);
        Served { answer: reply(Some(why), Vec::new(), 0), fatal: None }
    };
    let request = request.map_err(refuse)?;
    let from = request.from.clone();
    let camera = request.camera.clone();
    let Some(detector) = local.detector.borrow().clone() else {
        return Err(Served { answer: reply(Some("no model loaded yet".into()), Vec::new(), 0), fatal: None });
    };
    let started = Instant::now();
    let run = tokio::task::spawn_blocking(move || {
        let image = decode_frame(&request)?;
        detector.detect(&image).map_err(|e| format!("inference failed: {e}")).map(|d| (d, detector.labels()))
    })
    .await;
    let inference = started.elapsed();
    let (detections, (model, size)) = match run {
        Ok(Ok(found)) => found,
        Ok(Err(why)) if why.starts_with("inference failed") => {
            metrics::counter!("smart_cctv_frames_lost_total", "reason" => "inference_error").increment(1);
            return Err(Served {
                answer: reply(Some(why.clone()), Vec::new(), 0),
                fatal: Some(format!("{why} (frame from {from}/{camera})")),
            });
        }
        Ok(Err(why)) => return Err(refuse(format!("{why} (from {from})"))),
        Err(join) => {
            metrics::counter!("smart_cctv_frames_lost_total", "reason" => "worker_panic").increment(1);
            let why = format!("remote worker panicked on a frame from {from}/{camera}: {join}");
            return Err(Served { answer: reply(Some(why.clone()), Vec::new(), 0), fatal: Some(why) });
        }
    };
    metrics::histogram!("smart_cctv_inference_seconds", "model" => model, "size" => size)
        .record(inference.as_secs_f64());
    metrics::counter!("smart_cctv_cluster_frames_total", "node" => from.clone(), "direction" => "served").increment(1);
    local.stats.served.fetch_add(1, Ordering::Relaxed);
    local.peers.served(&from);
    let detections = detections.iter().map(WireDetection::from).collect();
    Ok(reply(None, detections, inference.as_micros() as u64))
}
