//! The `cluster:` section: this box's place among several (issue: more
//! cameras than one box). No section means one box, as before.

use super::load::Problem;
use super::secret::Secret;
use crate::base::duration;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// This node's name among its peers; unique in the cluster.
    pub node_name: String,
    /// Where peers connect to this node, `host:port`.
    pub listen: String,
    /// Nodes this one connects to (and reconnects to, with backoff).
    #[serde(default)]
    pub peers: Vec<String>,
    /// The shared secret every node presents; a peer with another is refused.
    pub cookie: Secret,
    #[serde(default)]
    pub role: Role,
    /// TLS between nodes; plain TCP (authenticated by the cookie) without it.
    #[serde(default)]
    pub tls: Option<ClusterTlsConfig>,
    /// How long an edge waits for a remote worker before it gives the frame
    /// to a local worker, or drops it.
    #[serde(default = "default_deadline", with = "duration")]
    pub inference_deadline: Duration,
    /// Frames an edge keeps in flight to remote workers at once.
    #[serde(default = "default_in_flight")]
    pub in_flight: usize,
    /// How frames cross the link: `raw` RGB (no CPU spent) or `jpeg` (about
    /// a tenth of the bytes, for slow links).
    #[serde(default)]
    pub frame_encoding: FrameEncoding,
}

/// What runs on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything, as on a single box, and its workers serve other edges.
    #[default]
    All,
    /// Cameras, tracker, rules, alerts, store and speakers; inference remote.
    Edge,
    /// Inference workers only, for the edges.
    Inference,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::All => "all",
            Role::Edge => "edge",
            Role::Inference => "inference",
        }
    }

    /// Runs cameras, rules and the store.
    pub fn has_cameras(self) -> bool {
        self != Role::Inference
    }

    /// Runs the detector itself.
    pub fn has_workers(self) -> bool {
        self != Role::Edge
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FrameEncoding {
    #[default]
    Raw,
    Jpeg,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterTlsConfig {
    /// PEM certificate chain and key this node presents.
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// PEM CA that signed every node's certificate; peers are checked against it.
    pub ca_file: PathBuf,
}

fn default_deadline() -> Duration {
    Duration::from_secs(2)
}

fn default_in_flight() -> usize {
    4
}

impl ClusterConfig {
    /// `listen` as an address (validation checked it).
    pub fn listen_addr(&self) -> Option<SocketAddr> {
        self.listen.parse().ok()
    }
}

/// Everything wrong with the section, each with its key.
pub fn validate(c: &ClusterConfig, p: &mut Vec<Problem>) {
    let name_ok = !c.node_name.is_empty()
        && c.node_name.len() <= 64
        && c.node_name.chars().all(|ch| ch.is_ascii_alphanumeric() || "-_.".contains(ch));
    if !name_ok {
        p.push(Problem::new("cluster.node_name", "must be 1 to 64 letters, digits, '-', '_' or '.'"));
    }
    if c.listen.parse::<SocketAddr>().is_err() {
        p.push(Problem::new("cluster.listen", format!("`{}` is not an address like 0.0.0.0:9820", c.listen)));
    }
    for (i, peer) in c.peers.iter().enumerate() {
        // host:port; the host may be a name resolved at each connect.
        let ok = peer.rsplit_once(':').is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !ok {
            p.push(Problem::new(format!("cluster.peers[{i}]"), format!("`{peer}` is not host:port")));
        }
    }
    if c.cookie.expose().len() < 16 {
        p.push(Problem::new("cluster.cookie", "must be at least 16 characters: it is all that keeps strangers out"));
    }
    if c.role == Role::Edge && c.peers.is_empty() {
        p.push(Problem::new(
            "cluster.peers",
            "an edge node has no workers of its own: name at least one inference peer",
        ));
    }
    if !(1..=64).contains(&c.in_flight) {
        p.push(Problem::new("cluster.in_flight", format!("{} must be between 1 and 64", c.in_flight)));
    }
    if !(Duration::from_millis(100)..=Duration::from_secs(60)).contains(&c.inference_deadline) {
        p.push(Problem::new("cluster.inference_deadline", "must be between 100ms and 60s"));
    }
    if let Some(tls) = &c.tls {
        for (key, path) in [("cert_file", &tls.cert_file), ("key_file", &tls.key_file), ("ca_file", &tls.ca_file)] {
            if !path.is_file() {
                p.push(Problem::new(
                    format!("cluster.tls.{key}"),
                    format!("{} is not a readable file", path.display()),
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> ClusterConfig {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn a_good_section_passes_and_each_bad_key_is_named() {
        let good = parse(
            r#"{"node_name":"edge-1","listen":"0.0.0.0:9820","peers":["gpu-box:9820"],"cookie":"0123456789abcdef","role":"edge"}"#,
        );
        let mut p = Vec::new();
        validate(&good, &mut p);
        assert!(p.is_empty(), "{p:?}");
        assert_eq!(good.inference_deadline, Duration::from_secs(2));

        let bad = parse(
            r#"{"node_name":"edge 1","listen":"nowhere","peers":["gpu-box"],"cookie":"short","role":"edge","in_flight":0}"#,
        );
        let mut p = Vec::new();
        validate(&bad, &mut p);
        let keys: Vec<&str> = p.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            ["cluster.node_name", "cluster.listen", "cluster.peers[0]", "cluster.cookie", "cluster.in_flight"]
        );
        assert!(!format!("{bad:?}").contains("short"), "the cookie must not print");
    }

    #[test]
    fn an_inference_node_with_cameras_is_refused() {
        let mut config = crate::config::load(None).unwrap().config;
        assert!(config.cameras.iter().any(|c| c.enabled), "the embedded default has the demo camera");
        config.cluster = Some(parse(
            r#"{"node_name":"gpu","listen":"0.0.0.0:9820","cookie":"0123456789abcdef","role":"inference"}"#,
        ));
        let problems = crate::config::validate::validate(&config);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].key, "cluster.role");
    }

    #[test]
    fn an_edge_without_peers_is_refused() {
        let edge = parse(r#"{"node_name":"e","listen":"127.0.0.1:1","cookie":"0123456789abcdef","role":"edge"}"#);
        let mut p = Vec::new();
        validate(&edge, &mut p);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].key, "cluster.peers");
    }
}
