//! The cluster node: this box's `ractor_cluster` `NodeServer`, its dials to
//! the configured peers (reconnected with backoff), and a heartbeat to every
//! connected node, so a node that dies or is cut off is noticed within
//! seconds even when its TCP session does not end. It owns the node server,
//! the agent that answers other nodes' heartbeats, and the heartbeat task,
//! and stops and awaits each when it stops.

use super::peers::{Beat, Peers};
use super::server::{AgentMsg, LocalNode, NodeAgent};
use super::wire::NodeInfo;
use super::{NODES, tls};
use crate::config::ClusterConfig;
use crate::health::HealthBoard;
use crate::supervision::Backoff;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, rpc::CallResult};
use ractor_cluster::node::NodeServerSessionInformation;
use ractor_cluster::{NodeEventSubscription, NodeServer, NodeServerMessage, NodeSessionMessage};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How often every connected node is asked whether it is there.
const HEARTBEAT: Duration = Duration::from_secs(1);
/// A dial that takes longer has failed (a cut link drops packets silently).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const REDIAL: Backoff =
    Backoff { initial: Duration::from_millis(500), max: Duration::from_secs(10), multiplier: 2.0, jitter: 0.2 };

pub struct ClusterNode;

pub struct ClusterArgs {
    pub config: ClusterConfig,
    pub peers: Peers,
    pub board: HealthBoard,
    pub local: LocalNode,
    /// This node's event store, read for other nodes' lists (on edges).
    pub store: crate::store::SharedStore,
}

/// One configured peer.
struct Dial {
    address: String,
    /// The peers-table key: the address until the node says its name.
    key: String,
    attempt: u32,
    /// The socket address of the connection under way or up.
    connected_to: Option<String>,
    session: Option<u64>,
}

pub struct ClusterState {
    args: ClusterArgs,
    server: ActorRef<NodeServerMessage>,
    agent: ActorRef<AgentMsg>,
    records: Option<ActorRef<super::records::RecordsMsg>>,
    dials: Vec<Dial>,
    /// Every open session, by ractor_cluster's node id.
    sessions: HashMap<u64, Session>,
    tls: Option<tls::Client>,
    heartbeat: Option<tokio::task::JoinHandle<()>>,
}

struct Session {
    actor: ActorRef<NodeSessionMessage>,
    address: String,
    authenticated: bool,
}

/// A node's id, and its answer with the round trip, or why there was none.
pub type HeartbeatAnswer = (u64, Result<(NodeInfo, Duration), String>);

pub enum ClusterMsg {
    Dial(usize),
    Heartbeat,
    Beats(Vec<HeartbeatAnswer>),
    Opened(NodeServerSessionInformation),
    Authenticated(NodeServerSessionInformation),
    Closed(NodeServerSessionInformation),
    /// `/api/status`'s view of this node.
    Status(RpcReplyPort<Vec<super::peers::PeerStatus>>),
    /// Fail as asked: sent only by the test-only fault routes (`faults.rs`).
    Fault(crate::faults::Fault),
}

impl ractor::Message for ClusterMsg {}

/// Turns the node server's events into this actor's messages.
struct Events(ActorRef<ClusterMsg>);

impl NodeEventSubscription for Events {
    fn node_session_opened(&self, ses: NodeServerSessionInformation) {
        let _ = self.0.cast(ClusterMsg::Opened(ses));
    }

    fn node_session_disconnected(&self, ses: NodeServerSessionInformation) {
        let _ = self.0.cast(ClusterMsg::Closed(ses));
    }

    fn node_session_authenticated(&self, ses: NodeServerSessionInformation) {
        let _ = self.0.cast(ClusterMsg::Authenticated(ses));
    }
}

/// Whether a session with a node that listens on `listens` (`host:port` as
/// it says) and connects from `from` is the node `dial` is for.
fn serves(dial: &Dial, listens: &str, from: &str) -> bool {
    let split = |a: &str| a.rsplit_once(':').map(|(h, p)| (h.trim_matches(['[', ']']).to_owned(), p.to_owned()));
    let (Some((host, port)), Some((dial_host, dial_port))) = (split(listens), split(&dial.address)) else {
        return false;
    };
    if port != dial_port {
        return false;
    }
    let resolved = dial.connected_to.as_deref().and_then(split).map(|(h, _)| h);
    let names_it = |h: &str| h == dial_host || resolved.as_deref() == Some(h);
    // A node listening on every address says 0.0.0.0: its source address tells.
    let unspecified = host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_unspecified());
    names_it(&host) || (unspecified && split(from).is_some_and(|(h, _)| names_it(&h)))
}

/// `name@host` as ractor_cluster says it, to `name`.
fn node_name(ses: &NodeServerSessionInformation) -> Option<String> {
    ses.peer_name.as_ref().map(|n| n.name.split('@').next().unwrap_or(&n.name).to_owned())
}

impl Actor for ClusterNode {
    type Msg = ClusterMsg;
    type State = ClusterState;
    type Arguments = ClusterArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<ClusterMsg>,
        args: ClusterArgs,
    ) -> Result<ClusterState, ActorProcessingErr> {
        crate::faults::register("cluster", &myself, ClusterMsg::Fault);
        let listen = args.config.listen_addr().ok_or_else(|| format!("cluster.listen: `{}`", args.config.listen))?;
        let (incoming, outgoing) = match &args.config.tls {
            Some(settings) => {
                let (acceptor, client) = tls::load(settings).map_err(|e| format!("cluster.tls: {e}"))?;
                (Some(ractor_cluster::IncomingEncryptionMode::Tls(acceptor)), Some(client))
            }
            None => (None, None),
        };
        let server = NodeServer::new(
            listen.port(),
            args.config.cookie.expose().to_owned(),
            args.config.node_name.clone(),
            listen.ip().to_string(),
            incoming,
            // Only the configured peers: a node does not dial its peers' peers.
            Some(ractor_cluster::node::NodeConnectionMode::Isolated),
        )
        .with_listen_addr(listen.ip());
        let (server, _) = Actor::spawn_linked(None, server, (), myself.get_cell()).await?;
        server.cast(NodeServerMessage::SubscribeToEvents {
            id: "smart-cctv".into(),
            subscription: Box::new(Events(myself.clone())),
        })?;
        let (agent, _) = Actor::spawn_linked(None, NodeAgent, args.local.clone(), myself.get_cell()).await?;
        let records = if args.config.role.has_cameras() {
            let records_args =
                super::records::RecordsArgs { node: args.config.node_name.clone(), store: args.store.clone() };
            let (records, _) =
                Actor::spawn_linked(None, super::records::RecordsServer, records_args, myself.get_cell()).await?;
            Some(records)
        } else {
            None
        };
        let dials: Vec<Dial> = args
            .config
            .peers
            .iter()
            .map(|address| {
                args.peers.expect(address, address);
                Dial { address: address.clone(), key: address.clone(), attempt: 0, connected_to: None, session: None }
            })
            .collect();
        for i in 0..dials.len() {
            myself.cast(ClusterMsg::Dial(i))?;
        }
        myself.send_interval(HEARTBEAT, || ClusterMsg::Heartbeat);
        tracing::info!(node = %args.config.node_name, role = args.config.role.as_str(), %listen, peers = dials.len(), "cluster node listening");
        let state = ClusterState {
            args,
            server,
            agent,
            records,
            dials,
            sessions: HashMap::new(),
            tls: outgoing,
            heartbeat: None,
        };
        for dial in &state.dials {
            state.publish(&dial.key);
        }
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<ClusterMsg>,
        msg: ClusterMsg,
        state: &mut ClusterState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ClusterMsg::Fault(fault) => return fault.strike("cluster"),
            ClusterMsg::Dial(i) => state.dial(&myself, i).await,
            ClusterMsg::Heartbeat => state.heartbeat(&myself),
            ClusterMsg::Beats(beats) => state.beats(beats),
            ClusterMsg::Opened(ses) => {
                let address = ses.peer_addr.clone();
                if !ses.is_server
                    && let Some(dial) = state.dials.iter_mut().find(|d| d.connected_to.as_deref() == Some(&address))
                {
                    dial.session = Some(ses.node_id);
                }
                state.sessions.insert(ses.node_id, Session { actor: ses.actor, address, authenticated: false });
            }
            ClusterMsg::Authenticated(ses) => {
                let Some(name) = node_name(&ses) else { return Ok(()) };
                if let Some(session) = state.sessions.get_mut(&ses.node_id) {
                    session.authenticated = true;
                }
                state.args.peers.bind(ses.node_id, &name);
                tracing::info!(peer = %name, address = %ses.peer_addr, "cluster peer connected");
                // Two nodes that list each other both dial: whichever session
                // ractor_cluster keeps, it serves both dials.
                let listens = ses.peer_name.as_ref().map(|n| n.connection_string.clone()).unwrap_or_default();
                let dial = state
                    .dials
                    .iter_mut()
                    .find(|d| d.session == Some(ses.node_id) || serves(d, &listens, &ses.peer_addr));
                if let Some(dial) = dial {
                    dial.session = Some(ses.node_id);
                    dial.attempt = 0;
                    if dial.key != name {
                        state.args.board.remove_component(&format!("cluster/{}", dial.key));
                        state.args.peers.rename(&dial.key, &name);
                        dial.key = name;
                    }
                }
            }
            ClusterMsg::Closed(ses) => state.closed(&myself, ses),
            ClusterMsg::Status(reply) => {
                let _ = reply.send(state.args.peers.snapshot());
            }
        }
        Ok(())
    }

    async fn post_stop(&self, _: ActorRef<ClusterMsg>, state: &mut ClusterState) -> Result<(), ActorProcessingErr> {
        if let Some(task) = state.heartbeat.take() {
            task.abort();
            let _ = task.await;
        }
        let _ = state.agent.stop_and_wait(None, Some(Duration::from_secs(5))).await;
        if let Some(records) = &state.records {
            let _ = records.stop_and_wait(None, Some(Duration::from_secs(5))).await;
        }
        let _ = state.server.stop_and_wait(None, Some(Duration::from_secs(5))).await;
        for dial in &state.dials {
            state.args.board.remove_component(&format!("cluster/{}", dial.key));
        }
        Ok(())
    }
}

impl ClusterState {
    async fn dial(&mut self, myself: &ActorRef<ClusterMsg>, i: usize) {
        let Some(dial) = self.dials.get_mut(i) else { return };
        if dial.session.is_some() {
            return;
        }
        let address = dial.address.clone();
        let attempt = async {
            let to = tokio::net::lookup_host(&address)
                .await
                .map_err(|e| format!("cannot resolve: {e}"))?
                .next()
                .ok_or("resolves to no address")?;
            dial.connected_to = Some(to.to_string());
            let connected = match &self.tls {
                None => ractor_cluster::client_connect(&self.server, to).await,
                Some(client) => {
                    let name = tls::Client::server_name(&address)?;
                    ractor_cluster::client_connect_enc(&self.server, to, client.connector.clone(), name).await
                }
            };
            connected.map_err(|e| format!("{e:?}"))
        };
        let result = tokio::time::timeout(CONNECT_TIMEOUT, attempt).await.unwrap_or_else(|_| Err("timed out".into()));
        if let Err(why) = result {
            dial.connected_to = None;
            dial.attempt += 1;
            let delay = REDIAL.delay(dial.attempt, fastrand::f64());
            tracing::warn!(peer = %address, retry_in_ms = delay.as_millis() as u64, "cannot connect to cluster peer: {why}");
            let key = dial.key.clone();
            self.args.peers.beat(&key, Beat::Missed(format!("cannot connect: {why}")));
            self.publish(&key);
            myself.send_after(delay, move || ClusterMsg::Dial(i));
        }
    }

    fn closed(&mut self, myself: &ActorRef<ClusterMsg>, ses: NodeServerSessionInformation) {
        let session = self.sessions.remove(&ses.node_id);
        let authenticated = session.as_ref().is_some_and(|s| s.authenticated);
        // A second session to a node already connected, closed by
        // ractor_cluster in favour of the first: nothing is lost.
        let other_session = |id: u64| id != ses.node_id && self.sessions.get(&id).is_some_and(|s| s.authenticated);
        let duplicate = node_name(&ses).is_some_and(|name| {
            self.sessions.keys().any(|id| other_session(*id) && self.args.peers.name_of(*id).as_deref() == Some(&name))
        }) || (!ses.is_server
            && self.dials.iter().any(|d| {
                d.connected_to.as_deref() == Some(ses.peer_addr.as_str()) && d.session.is_some_and(other_session)
            }));
        if duplicate {
            tracing::debug!(address = %ses.peer_addr, "duplicate cluster session closed");
            self.args.peers.unbind(ses.node_id);
            if let Some(dial) = self.dials.iter_mut().find(|d| d.session == Some(ses.node_id)) {
                dial.session = None;
            }
            return;
        }
        if !authenticated {
            metrics::counter!("smart_cctv_cluster_refused_total").increment(1);
            if ses.is_server {
                tracing::warn!(address = %ses.peer_addr, "cluster connection refused: the peer did not authenticate (a wrong cookie?)");
            } else {
                tracing::warn!(address = %ses.peer_addr, "cluster peer refused this node: its cookie differs from ours?");
            }
        }
        let name = self.args.peers.unbind(ses.node_id);
        if let Some(name) = &name {
            if self.args.peers.lost(name, "connection closed") {
                tracing::warn!(peer = %name, "cluster peer down: connection closed");
            }
            self.publish(name);
        }
        if let Some(i) = self.dials.iter().position(|d| d.session == Some(ses.node_id)) {
            let dial = &mut self.dials[i];
            dial.session = None;
            dial.connected_to = None;
            dial.attempt += 1;
            if !authenticated {
                let key = dial.key.clone();
                self.args.peers.beat(&key, Beat::Missed("refused: cookie mismatch?".into()));
                self.publish(&key);
            }
            let delay = REDIAL.delay(self.dials[i].attempt, fastrand::f64());
            myself.send_after(delay, move || ClusterMsg::Dial(i));
        }
        self.gauges();
    }

    /// Asks every other node's agent, all at once, off this actor.
    fn heartbeat(&mut self, myself: &ActorRef<ClusterMsg>) {
        if self.heartbeat.as_ref().is_some_and(|t| !t.is_finished()) {
            return;
        }
        let agents: Vec<(u64, ActorRef<AgentMsg>)> = ractor::pg::get_members(&NODES.to_owned())
            .into_iter()
            .filter(|cell| !cell.get_id().is_local())
            .map(|cell| (cell.get_id().node(), ActorRef::from(cell)))
            .collect();
        // Sessions that are up but whose agent is not (yet) known answer nothing.
        let silent: Vec<u64> = self
            .sessions
            .iter()
            .filter(|(id, s)| s.authenticated && !agents.iter().any(|(a, _)| a == *id))
            .map(|(id, _)| *id)
            .collect();
        let myself = myself.clone();
        self.heartbeat = Some(tokio::spawn(async move {
            let asks = agents.into_iter().map(|(id, agent)| async move {
                let started = Instant::now();
                let answer = agent.call(AgentMsg::Ping, Some(HEARTBEAT)).await;
                let result = match answer {
                    Ok(CallResult::Success(super::wire::Payload(Ok(info)))) => Ok((info, started.elapsed())),
                    Ok(CallResult::Success(super::wire::Payload(Err(e)))) => Err(e),
                    Ok(CallResult::Timeout) => Err("no answer to heartbeat".into()),
                    Ok(CallResult::SenderError) | Err(_) => Err("heartbeat not delivered".into()),
                };
                (id, result)
            });
            let mut beats = futures_util::future::join_all(asks).await;
            beats.extend(silent.into_iter().map(|id| (id, Err("no agent in the pool yet".to_owned()))));
            let _ = myself.cast(ClusterMsg::Beats(beats));
        }));
    }

    fn beats(&mut self, beats: Vec<HeartbeatAnswer>) {
        for (id, result) in beats {
            let name = match (&result, self.args.peers.name_of(id)) {
                (_, Some(name)) => name,
                (Ok((info, _)), None) => info.node.clone(),
                (Err(_), None) => continue,
            };
            let beat = match result {
                Ok((info, rtt)) => Beat::Answered {
                    role: info.role,
                    workers: info.workers,
                    detector_ready: info.detector_ready,
                    queue_depth: info.queue_depth,
                    rtt,
                },
                Err(why) => Beat::Missed(why),
            };
            match self.args.peers.beat(&name, beat) {
                Some(true) => tracing::info!(peer = %name, "cluster peer up"),
                Some(false) => {
                    tracing::warn!(peer = %name, "cluster peer down: no answer to {} heartbeats", super::peers::MISSES_FOR_DOWN);
                    // A session that outlives its peer's silence is closed, so
                    // the dial starts over and finds the peer when it returns.
                    if let Some(session) = self.sessions.get(&id) {
                        tracing::info!(peer = %name, address = %session.address, "closing the silent session");
                        session.actor.stop(Some("heartbeat lost".into()));
                    }
                }
                None => {}
            }
            if let Some(peer) = self.args.peers.get(&name)
                && let Some(rtt) = peer.rtt_ms
            {
                metrics::gauge!("smart_cctv_cluster_rtt_seconds", "node" => name.clone()).set(rtt / 1e3);
            }
            self.publish(&name);
        }
        self.gauges();
    }

    /// `/healthz` names a configured peer that is down: this node relies on it.
    fn publish(&self, name: &str) {
        if !self.dials.iter().any(|d| d.key == name) {
            return;
        }
        let Some(peer) = self.args.peers.get(name) else { return };
        let state = if peer.up { "up" } else { "down" };
        self.args.board.set_component(&format!("cluster/{name}"), peer.up, state, peer.reason.clone());
    }

    fn gauges(&self) {
        let (up, down) = self.args.peers.counts();
        metrics::gauge!("smart_cctv_cluster_peers", "state" => "up").set(up as f64);
        metrics::gauge!("smart_cctv_cluster_peers", "state" => "down").set(down as f64);
    }
}
