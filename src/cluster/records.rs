//! One record across edges: alerts, events and snapshots stay on the edge
//! that owns the camera, and a list asks every edge and merges the answers,
//! naming the edges that did not answer instead of failing.

use super::RECORDS;
use super::peers::Peers;
use super::wire::Payload;
use crate::store::{Query, SharedStore};
use ractor::rpc::CallResult;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::RactorClusterMessage;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// How long a list waits for each edge.
pub const ASK_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RecordKind {
    Alerts,
    Events,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecordRequest {
    pub kind: RecordKind,
    /// The [`Query`] as JSON (its optional fields need a self-describing form).
    pub query: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecordReply {
    pub node: String,
    /// The records as a JSON array, or why there are none.
    pub records: Result<String, String>,
}

/// Reads this node's store for other nodes.
pub struct RecordsServer;

pub struct RecordsArgs {
    pub node: String,
    pub store: SharedStore,
}

#[derive(RactorClusterMessage)]
pub enum RecordsMsg {
    #[rpc]
    List(Payload<RecordRequest>, RpcReplyPort<Payload<RecordReply>>),
}

impl Actor for RecordsServer {
    type Msg = RecordsMsg;
    type State = RecordsArgs;
    type Arguments = RecordsArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<RecordsMsg>,
        args: RecordsArgs,
    ) -> Result<RecordsArgs, ActorProcessingErr> {
        ractor::pg::join(RECORDS.to_owned(), vec![myself.get_cell()]);
        Ok(args)
    }

    async fn handle(
        &self,
        _: ActorRef<RecordsMsg>,
        msg: RecordsMsg,
        args: &mut RecordsArgs,
    ) -> Result<(), ActorProcessingErr> {
        let RecordsMsg::List(Payload(request), reply) = msg;
        let records = match request {
            Ok(request) => read_json(&args.store, &request).await,
            Err(e) => Err(e),
        };
        let _ = reply.send(Payload::ok(RecordReply { node: args.node.clone(), records }));
        Ok(())
    }
}

/// This node's records for `request`, as a JSON array.
async fn read_json(store: &SharedStore, request: &RecordRequest) -> Result<String, String> {
    let query: Query = serde_json::from_str(&request.query).map_err(|e| format!("bad query: {e}"))?;
    let json = match request.kind {
        RecordKind::Alerts => store.read(move |s| s.alerts(&query)).await.map(|r| serde_json::to_string(&r)),
        RecordKind::Events => store.read(move |s| s.events(&query)).await.map(|r| serde_json::to_string(&r)),
    };
    json.map_err(|e| e.to_string())?.map_err(|e| e.to_string())
}

/// Records from every edge, each with its `node`, oldest first, and what
/// each edge answered (`ok`, or why not).
#[derive(Debug, Serialize, Deserialize)]
pub struct Merged {
    pub records: Vec<serde_json::Value>,
    pub nodes: BTreeMap<String, String>,
}

/// Asks this node's store and every other edge's at once, and merges.
pub async fn merged(kind: RecordKind, query: &Query, local: (&str, &SharedStore), peers: Option<&Peers>) -> Merged {
    let request = RecordRequest { kind, query: serde_json::to_string(query).unwrap_or_default() };
    let mut answers = vec![(local.0.to_owned(), read_json(local.1, &request).await)];
    if let Some(peers) = peers {
        let members: Vec<(String, ActorRef<RecordsMsg>)> = ractor::pg::get_members(&RECORDS.to_owned())
            .into_iter()
            .filter(|cell| !cell.get_id().is_local())
            .filter_map(|cell| Some((peers.name_of(cell.get_id().node())?, ActorRef::from(cell))))
            .collect();
        let asks = members.into_iter().map(|(name, server)| {
            let request = request.clone();
            async move {
                let answer = server.call(|port| RecordsMsg::List(Payload::ok(request), port), Some(ASK_TIMEOUT)).await;
                let records = match answer {
                    Ok(CallResult::Success(Payload(Ok(reply)))) => reply.records,
                    Ok(CallResult::Success(Payload(Err(e)))) => Err(e),
                    Ok(CallResult::Timeout) => Err("unreachable: no answer in time".into()),
                    Ok(CallResult::SenderError) | Err(_) => Err("unreachable: not delivered".into()),
                };
                (name, records)
            }
        });
        answers.extend(futures_util::future::join_all(asks).await);
        // Edges that are down have no member to ask: name them too.
        for peer in peers.snapshot() {
            let keeps_records = peer.role.as_deref().is_none_or(|r| r != "inference");
            if !peer.up && keeps_records && !answers.iter().any(|(n, _)| *n == peer.name) {
                let why = peer.reason.unwrap_or_else(|| "down".into());
                answers.push((peer.name, Err(format!("unreachable: {why}"))));
            }
        }
    }
    merge(kind, answers, query.limit)
}

/// The merge itself: every answer's records tagged with its node, in time
/// order, the newest `limit` kept.
pub fn merge(kind: RecordKind, answers: Vec<(String, Result<String, String>)>, limit: Option<usize>) -> Merged {
    let time_key = match kind {
        RecordKind::Alerts => "time_us",
        RecordKind::Events => "first_seen_us",
    };
    let mut records = Vec::new();
    let mut nodes = BTreeMap::new();
    for (node, answer) in answers {
        let parsed = answer.and_then(|json| {
            serde_json::from_str::<Vec<serde_json::Value>>(&json).map_err(|e| format!("bad answer: {e}"))
        });
        match parsed {
            Ok(list) => {
                for mut record in list {
                    if let Some(object) = record.as_object_mut() {
                        object.insert("node".into(), serde_json::Value::String(node.clone()));
                    }
                    records.push(record);
                }
                nodes.insert(node, "ok".to_owned());
            }
            Err(why) => {
                nodes.insert(node, why);
            }
        }
    }
    records.sort_by_key(|r| r[time_key].as_i64().unwrap_or(0));
    if let Some(limit) = limit
        && records.len() > limit
    {
        records.drain(..records.len() - limit);
    }
    Merged { records, nodes }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_merged_in_time_order_and_silent_edges_named() {
        let answers = vec![
            ("edge-1".to_owned(), Ok(r#"[{"time_us":1,"rule":"a"},{"time_us":5,"rule":"b"}]"#.to_owned())),
            ("edge-2".to_owned(), Ok(r#"[{"time_us":3,"rule":"c"}]"#.to_owned())),
            ("edge-3".to_owned(), Err("unreachable: connection closed".to_owned())),
        ];
        let merged = merge(RecordKind::Alerts, answers, Some(2));
        let order: Vec<(&str, &str)> =
            merged.records.iter().map(|r| (r["node"].as_str().unwrap(), r["rule"].as_str().unwrap())).collect();
        assert_eq!(order, [("edge-2", "c"), ("edge-1", "b")], "the newest two, oldest first");
        assert_eq!(merged.nodes["edge-1"], "ok");
        assert_eq!(merged.nodes["edge-3"], "unreachable: connection closed");
    }
}
