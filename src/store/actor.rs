//! The store actor: the only owner of `events.redb`.
//!
//! Parent: the root supervisor. Inputs: alerts to append, queries. Writes are
//! group-committed: requests arriving within a few milliseconds (or 100 of
//! them) share one durable transaction, and each is answered only after the
//! commit is on disk. An I/O error fails the actor after answering the batch
//! with the error; its supervisor reopens the database, and the senders keep
//! what was not acknowledged.

use super::{AlertQuery, AlertRecord, Store};
use crate::health::HealthBoard;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const NAME: &str = "store";
const BATCH_WINDOW: Duration = Duration::from_millis(5);
const BATCH_MAX: usize = 100;

pub struct StoreActor;

pub struct StoreArgs {
    pub path: PathBuf,
    pub board: HealthBoard,
}

pub struct StoreState {
    store: Arc<Store>,
    board: HealthBoard,
    pending: Vec<(AlertRecord, RpcReplyPort<Result<(), String>>)>,
    flush_scheduled: bool,
}

pub enum StoreMsg {
    /// Append one alert; answered once it is durable.
    Append(AlertRecord, RpcReplyPort<Result<(), String>>),
    Flush,
    Alerts(AlertQuery, RpcReplyPort<Result<Vec<AlertRecord>, String>>),
    /// Writes a consistent copy of the database (for `ops backup` while the
    /// service runs) and answers its path.
    CopyTo(PathBuf, RpcReplyPort<Result<PathBuf, String>>),
}

impl Actor for StoreActor {
    type Msg = StoreMsg;
    type State = StoreState;
    type Arguments = StoreArgs;

    async fn pre_start(&self, _: ActorRef<StoreMsg>, args: StoreArgs) -> Result<StoreState, ActorProcessingErr> {
        let path = args.path.clone();
        let opened = tokio::task::spawn_blocking(move || Store::open(&path)).await?;
        match opened {
            Ok(store) => {
                args.board.set_component("store", true, "ready", None);
                tracing::info!(path = %args.path.display(), "event store open");
                Ok(StoreState {
                    store: Arc::new(store),
                    board: args.board,
                    pending: Vec::new(),
                    flush_scheduled: false,
                })
            }
            Err(e) => {
                args.board.set_component("store", false, "unavailable", Some(e.to_string()));
                Err(e.to_string().into())
            }
        }
    }

    async fn handle(
        &self,
        myself: ActorRef<StoreMsg>,
        msg: StoreMsg,
        state: &mut StoreState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            StoreMsg::Append(record, reply) => {
                state.pending.push((record, reply));
                if state.pending.len() >= BATCH_MAX {
                    flush(state).await?;
                } else if !state.flush_scheduled {
                    state.flush_scheduled = true;
                    myself.send_after(BATCH_WINDOW, || StoreMsg::Flush);
                }
            }
            StoreMsg::Flush => {
                state.flush_scheduled = false;
                flush(state).await?;
            }
            StoreMsg::CopyTo(dest, reply) => {
                let store = state.store.clone();
                let result =
                    tokio::task::spawn_blocking(move || super::backup::copy_database(&store, &dest).map(|_| dest))
                        .await?;
                let _ = reply.send(result.map_err(|e| e.to_string()));
            }
            StoreMsg::Alerts(query, reply) => {
                let store = state.store.clone();
                let result = tokio::task::spawn_blocking(move || store.alerts(&query)).await?;
                let _ = reply.send(result.map_err(|e| e.to_string()));
            }
        }
        Ok(())
    }
}

/// Commits everything pending in one durable transaction.
async fn flush(state: &mut StoreState) -> Result<(), ActorProcessingErr> {
    if state.pending.is_empty() {
        return Ok(());
    }
    let batch = std::mem::take(&mut state.pending);
    let records: Vec<AlertRecord> = batch.iter().map(|(r, _)| r.clone()).collect();
    let store = state.store.clone();
    let started = Instant::now();
    let result = tokio::task::spawn_blocking(move || store.append_alerts(&records)).await?;
    metrics::histogram!("smart_cctv_store_commit_seconds").record(started.elapsed().as_secs_f64());
    match result {
        Ok(()) => {
            metrics::counter!("smart_cctv_store_writes_total").increment(batch.len() as u64);
            for (_, reply) in batch {
                let _ = reply.send(Ok(()));
            }
            Ok(())
        }
        Err(e) => {
            metrics::counter!("smart_cctv_store_errors_total").increment(1);
            state.board.set_component("store", false, "degraded", Some(e.to_string()));
            for (_, reply) in batch {
                let _ = reply.send(Err(e.to_string()));
            }
            // redb answers PreviousIo to everything after an I/O error:
            // fail, and let the supervisor reopen the database.
            Err(format!("event store write failed: {e}").into())
        }
    }
}
