//! More cameras than one box: camera ("edge") nodes and inference nodes on
//! `ractor_cluster`.
//!
//! - `node.rs`: the cluster node in the supervision tree: the node server,
//!   dials to the configured peers with backoff, and heartbeats;
//! - `server.rs`: what this node offers others: an agent that answers
//!   heartbeats, and remote workers that run frames on this node's detector;
//! - `dispatch.rs`: what an edge does with its frames: send each to the
//!   least-loaded remote worker, fall back to its own, or drop and count;
//! - `peers.rs`: the table of other nodes, for choices, status and health;
//! - `records.rs`: lists of alerts and events asked of every edge and merged;
//! - `wire.rs`: the only types that cross nodes, and their checked bytes;
//! - `tls.rs`: optional mutual TLS between nodes.
//!
//! Alerts, events and snapshots never cross: they stay on the edge that owns
//! the camera.

pub mod dispatch;
pub mod node;
pub mod peers;
pub mod records;
pub mod server;
pub mod tls;
pub mod wire;

pub use peers::{PeerStatus, Peers};

/// The process group every node's agent joins.
pub const NODES: &str = "smart-cctv/nodes";
/// The process group of every remote worker in the cluster.
pub const INFERENCE: &str = "smart-cctv/inference";
/// The process group of every edge's record reader.
pub const RECORDS: &str = "smart-cctv/records";

use crate::config::{ClusterConfig, Role};
use std::sync::Arc;

/// What the rest of the service knows of the cluster: this node and its peers.
#[derive(Clone)]
pub struct ClusterView {
    pub config: ClusterConfig,
    pub peers: Peers,
    /// Frames this node's remote workers have in hand and have served.
    pub stats: Arc<server::ServeStats>,
}

impl ClusterView {
    pub fn new(config: ClusterConfig) -> Self {
        Self { config, peers: Peers::default(), stats: Arc::default() }
    }

    pub fn role(&self) -> Role {
        self.config.role
    }

    /// `/api/status`'s `cluster` object.
    pub fn status(&self) -> serde_json::Value {
        serde_json::json!({
            "node": self.config.node_name,
            "role": self.config.role.as_str(),
            "listen": self.config.listen,
            "frames_served": self.stats.served.load(std::sync::atomic::Ordering::Relaxed),
            "peers": self.peers.snapshot(),
        })
    }
}
