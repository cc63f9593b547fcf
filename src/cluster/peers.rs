//! The table of other nodes, as this node sees them: written by the cluster
//! node (sessions, heartbeats) and the dispatchers (frames, round trips),
//! read by `/api/status`, `/healthz` and the metrics. A plain mutex-guarded
//! map, like the health board, so readers answer while actors are busy.

use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

/// Heartbeats a node may miss before it counts as down.
pub const MISSES_FOR_DOWN: u32 = 3;

/// One other node.
#[derive(Debug, Clone, Serialize)]
pub struct PeerStatus {
    pub name: String,
    /// The address this node dials, for peers from the config.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    pub up: bool,
    /// Why it is down.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(with = "crate::health::board::unix_seconds")]
    pub since: SystemTime,
    /// Heartbeat round trip, smoothed.
    pub rtt_ms: Option<f64>,
    pub workers: u32,
    pub detector_ready: bool,
    /// Frames it has in hand, as it last said.
    pub queue_depth: u32,
    /// Frames this node has sent it and not had back.
    pub in_flight: u32,
    pub frames_sent: u64,
    /// Detections received for those frames.
    pub frames_received: u64,
    /// Sent and not answered in time, or answered with an error.
    pub frames_failed: u64,
    /// Frames it sent this node's workers.
    pub frames_served: u64,
    #[serde(skip)]
    misses: u32,
}

impl PeerStatus {
    fn new(name: &str, address: Option<String>) -> Self {
        Self {
            name: name.to_owned(),
            address,
            role: None,
            up: false,
            reason: Some("not connected yet".into()),
            since: SystemTime::now(),
            rtt_ms: None,
            workers: 0,
            detector_ready: false,
            queue_depth: 0,
            in_flight: 0,
            frames_sent: 0,
            frames_received: 0,
            frames_failed: 0,
            frames_served: 0,
            misses: 0,
        }
    }

    /// Lower is better: frames in hand per worker, then the round trip.
    fn load(&self) -> (f64, f64) {
        let depth = f64::from(self.in_flight.max(self.queue_depth)) / f64::from(self.workers.max(1));
        (depth, self.rtt_ms.unwrap_or(f64::MAX))
    }
}

/// Where the next frame goes.
#[derive(Debug, PartialEq, Eq)]
pub enum Choice {
    Node(String),
    /// Every node is full: the frame waits here.
    AllBusy,
    /// No node is up with workers.
    Nobody,
}

/// What a heartbeat found.
pub enum Beat {
    Answered { role: String, workers: u32, detector_ready: bool, queue_depth: u32, rtt: Duration },
    Missed(String),
}

#[derive(Clone, Default)]
pub struct Peers {
    nodes: Arc<Mutex<BTreeMap<String, PeerStatus>>>,
    /// ractor_cluster's id of each connected node, to its name.
    ids: Arc<Mutex<HashMap<u64, String>>>,
}

impl Peers {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, PeerStatus>> {
        self.nodes.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn ids(&self) -> MutexGuard<'_, HashMap<u64, String>> {
        self.ids.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn bind(&self, id: u64, name: &str) {
        self.ids().insert(id, name.to_owned());
    }

    pub fn unbind(&self, id: u64) -> Option<String> {
        self.ids().remove(&id)
    }

    pub fn name_of(&self, id: u64) -> Option<String> {
        self.ids().get(&id).cloned()
    }

    pub fn snapshot(&self) -> Vec<PeerStatus> {
        self.lock().values().cloned().collect()
    }

    pub fn get(&self, name: &str) -> Option<PeerStatus> {
        self.lock().get(name).cloned()
    }

    /// A configured peer, known by its address until it says its name.
    pub fn expect(&self, name: &str, address: &str) {
        self.lock().entry(name.to_owned()).or_insert_with(|| PeerStatus::new(name, Some(address.to_owned())));
    }

    /// Renames a configured peer once it has said who it is.
    pub fn rename(&self, old: &str, new: &str) {
        let mut peers = self.lock();
        if old == new {
            return;
        }
        if let Some(mut entry) = peers.remove(old) {
            entry.name = new.to_owned();
            peers.insert(new.to_owned(), entry);
        }
    }

    /// Returns whether it changed between up and down.
    pub fn beat(&self, name: &str, beat: Beat) -> Option<bool> {
        let mut peers = self.lock();
        let peer = peers.entry(name.to_owned()).or_insert_with(|| PeerStatus::new(name, None));
        let was = peer.up;
        match beat {
            Beat::Answered { role, workers, detector_ready, queue_depth, rtt } => {
                let ms = rtt.as_secs_f64() * 1e3;
                peer.rtt_ms = Some(peer.rtt_ms.map_or(ms, |old| old * 0.7 + ms * 0.3));
                (peer.role, peer.workers, peer.detector_ready, peer.queue_depth) =
                    (Some(role), workers, detector_ready, queue_depth);
                peer.misses = 0;
                peer.up = true;
                peer.reason = None;
            }
            Beat::Missed(why) => {
                peer.misses += 1;
                if peer.misses >= MISSES_FOR_DOWN || !peer.up {
                    peer.up = false;
                    peer.reason = Some(why);
                }
            }
        }
        if peer.up != was {
            peer.since = SystemTime::now();
            return Some(peer.up);
        }
        None
    }

    /// The node's session ended: down at once.
    pub fn lost(&self, name: &str, why: &str) -> bool {
        let mut peers = self.lock();
        let Some(peer) = peers.get_mut(name) else { return false };
        let was = peer.up;
        peer.up = false;
        peer.misses = MISSES_FOR_DOWN;
        peer.reason = Some(why.to_owned());
        peer.in_flight = 0;
        if was {
            peer.since = SystemTime::now();
        }
        was
    }

    /// Of `names` (nodes with workers in the pool), the one to send the next
    /// frame to: up, fewest frames in hand per worker, then shortest round
    /// trip. A node that already has as many of this node's frames as it has
    /// workers, plus one on the way, is full: frames then wait in this node's
    /// drop-oldest queue, where a newer one replaces them, rather than in a
    /// remote mailbox, where they would only grow old.
    pub fn choose<'a>(&self, names: impl IntoIterator<Item = &'a str>) -> Choice {
        let peers = self.lock();
        let usable: Vec<&PeerStatus> =
            names.into_iter().filter_map(|n| peers.get(n).filter(|p| p.up && p.workers > 0)).collect();
        if usable.is_empty() {
            return Choice::Nobody;
        }
        usable
            .into_iter()
            .filter(|p| p.in_flight <= p.workers)
            .min_by(|a, b| a.load().partial_cmp(&b.load()).unwrap_or(std::cmp::Ordering::Equal))
            .map_or(Choice::AllBusy, |p| Choice::Node(p.name.clone()))
    }

    pub fn sent(&self, name: &str) {
        if let Some(peer) = self.lock().get_mut(name) {
            peer.in_flight += 1;
            peer.frames_sent += 1;
        }
    }

    /// A frame sent to `name` came back (`Some(depth)`) or did not (`None`).
    pub fn answered(&self, name: &str, queue_depth: Option<u32>) {
        if let Some(peer) = self.lock().get_mut(name) {
            peer.in_flight = peer.in_flight.saturating_sub(1);
            match queue_depth {
                Some(depth) => {
                    peer.frames_received += 1;
                    peer.queue_depth = depth;
                }
                None => peer.frames_failed += 1,
            }
        }
    }

    pub fn served(&self, name: &str) {
        self.lock().entry(name.to_owned()).or_insert_with(|| PeerStatus::new(name, None)).frames_served += 1;
    }

    /// `(up, down)`.
    pub fn counts(&self) -> (usize, usize) {
        let peers = self.lock();
        let up = peers.values().filter(|p| p.up).count();
        (up, peers.len() - up)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answered(workers: u32, rtt_ms: u64) -> Beat {
        Beat::Answered {
            role: "inference".into(),
            workers,
            detector_ready: true,
            queue_depth: 0,
            rtt: Duration::from_millis(rtt_ms),
        }
    }

    #[test]
    fn a_node_is_down_after_three_missed_beats_and_up_at_the_next_answer() {
        let peers = Peers::default();
        assert_eq!(peers.beat("gpu", answered(2, 1)), Some(true));
        assert_eq!(peers.beat("gpu", Beat::Missed("timeout".into())), None);
        assert_eq!(peers.beat("gpu", Beat::Missed("timeout".into())), None);
        assert_eq!(peers.beat("gpu", Beat::Missed("timeout".into())), Some(false));
        assert_eq!(peers.get("gpu").unwrap().reason.as_deref(), Some("timeout"));
        assert_eq!(peers.counts(), (0, 1));
        assert_eq!(peers.beat("gpu", answered(2, 1)), Some(true));
        assert!(peers.lost("gpu", "session closed"));
        assert!(!peers.get("gpu").unwrap().up);
    }

    #[test]
    fn frames_go_to_the_least_loaded_node_then_the_nearest() {
        let peers = Peers::default();
        peers.beat("near", answered(1, 1));
        peers.beat("far", answered(1, 40));
        peers.beat("down", answered(8, 1));
        for _ in 0..3 {
            peers.beat("down", Beat::Missed("gone".into()));
        }
        let all = ["near", "far", "down", "unknown"];
        let node = |n: &str| Choice::Node(n.to_owned());
        assert_eq!(peers.choose(all), node("near"));
        peers.sent("near");
        assert_eq!(peers.choose(all), node("far"), "near has a frame in hand");
        peers.sent("far");
        assert_eq!(peers.choose(all), node("near"), "equal depth: the nearer");
        peers.sent("near");
        peers.sent("far");
        assert_eq!(peers.choose(all), Choice::AllBusy, "one worker each, and one frame on the way");
        peers.answered("near", Some(0));
        peers.answered("near", Some(0));
        peers.answered("far", None);
        let near = peers.get("near").unwrap();
        assert_eq!((near.in_flight, near.frames_sent, near.frames_received), (0, 2, 2));
        assert_eq!(peers.get("far").unwrap().frames_failed, 1);
        assert_eq!(peers.choose(["down"]), Choice::Nobody);
    }
}
