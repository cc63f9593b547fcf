//! The store actor: the only owner of `events.redb`.
//!
//! Parent: the `storage` supervisor. Inputs: records to append (alerts are
//! acknowledged; events, camera states and health transitions are sent and
//! forgotten), queries, copies, compaction and retention deletes. Writes are
//! group-committed: records arriving within a few milliseconds (or 100 of
//! them) share one durable transaction, and each acknowledged one is answered
//! only after the commit is on disk. An I/O error fails the actor after
//! answering the batch with the error; its supervisor reopens the database,
//! and the senders keep what was not acknowledged.

use super::shared::{Database, SharedStore};
use super::{AlertRecord, Query, Record, Store};
use crate::health::HealthBoard;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const NAME: &str = "store";
const BATCH_WINDOW: Duration = Duration::from_millis(5);
const BATCH_MAX: usize = 100;

type Reply<T> = RpcReplyPort<Result<T, String>>;

pub struct StoreActor;

pub struct StoreArgs {
    pub path: PathBuf,
    pub board: HealthBoard,
    /// Where the open database is published for readers (the HTTP lists).
    pub shared: SharedStore,
}

pub struct StoreState {
    store: Database,
    shared: SharedStore,
    board: HealthBoard,
    pending: Vec<(Record, Option<Reply<()>>)>,
    flush_scheduled: bool,
    commits: u64,
}

pub enum StoreMsg {
    /// Append one record; answered once it is durable.
    Append(Record, Reply<()>),
    /// Append one record without an answer (a loss is counted, not retried).
    Submit(Record),
    Flush,
    /// Alerts for the alerts actor's crash recovery; the HTTP lists read
    /// through [`SharedStore`] instead, off this actor.
    Alerts(Query, Reply<Vec<AlertRecord>>),
    /// Records a person's verdict on an alert (id, mark, who); answers the
    /// review, or `None` when there is no such alert.
    Review(String, crate::store::Mark, String, Reply<Option<crate::store::AlertReview>>),
    /// Writes a consistent copy of the database (for `ops backup` while the
    /// service runs) and answers its path.
    CopyTo(PathBuf, Reply<PathBuf>),
    /// Rewrites the file to give free pages back; answers whether it shrank.
    Compact(Reply<bool>),
    /// Deletes up to N records older than a Unix-microsecond time from every
    /// table; answers the count per table.
    DeleteBefore(i64, usize, Reply<Vec<(&'static str, usize)>>),
    /// Fail as asked: sent only by the test-only fault routes (`faults.rs`).
    Fault(crate::faults::Fault),
}

impl ractor::Message for StoreMsg {}

/// When the last commit succeeded, Unix milliseconds (0: none yet).
static LAST_COMMIT_MS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How long ago the store last committed, if it has.
pub fn last_commit_age() -> Option<Duration> {
    let ms = LAST_COMMIT_MS.load(std::sync::atomic::Ordering::Relaxed);
    (ms > 0).then(|| {
        let now = crate::store::unix_micros(std::time::SystemTime::now()) as u64 / 1000;
        Duration::from_millis(now.saturating_sub(ms))
    })
}

/// Sends `record` to the store without waiting; counts it as lost when the
/// store is not running.
pub fn submit(record: Record) {
    let kind = record.kind();
    let sent = ractor::registry::where_is(NAME)
        .is_some_and(|cell| ActorRef::<StoreMsg>::from(cell).cast(StoreMsg::Submit(record)).is_ok());
    if !sent {
        metrics::counter!("smart_cctv_store_dropped_total", "kind" => kind).increment(1);
    }
}

impl Actor for StoreActor {
    type Msg = StoreMsg;
    type State = StoreState;
    type Arguments = StoreArgs;

    async fn pre_start(&self, myself: ActorRef<StoreMsg>, args: StoreArgs) -> Result<StoreState, ActorProcessingErr> {
        crate::faults::register("store", &myself, StoreMsg::Fault);
        // A database the last incarnation left to readers is closed first:
        // redb refuses a second open of the same file.
        args.shared.withdraw().await;
        let path = args.path.clone();
        // Ready means able to write: a full disk fails here, and the
        // supervisor tries again after its backoff.
        let opened =
            tokio::task::spawn_blocking(move || Store::open(&path).and_then(|s| s.probe().map(|()| s))).await?;
        match opened {
            Ok(store) => {
                args.board.set_component("store", true, "ready", None);
                tracing::info!(path = %args.path.display(), "event store open");
                let store = Arc::new(tokio::sync::RwLock::new(store));
                args.shared.publish(store.clone());
                Ok(StoreState {
                    store,
                    shared: args.shared,
                    board: args.board,
                    pending: Vec::new(),
                    flush_scheduled: false,
                    commits: 0,
                })
            }
            Err(e) => {
                metrics::counter!("smart_cctv_store_errors_total").increment(1);
                args.board.set_component("store", false, "unavailable", Some(e.to_string()));
                Err(e.to_string().into())
            }
        }
    }

    async fn post_stop(&self, _: ActorRef<StoreMsg>, state: &mut StoreState) -> Result<(), ActorProcessingErr> {
        state.shared.withdraw().await;
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<StoreMsg>,
        msg: StoreMsg,
        state: &mut StoreState,
    ) -> Result<(), ActorProcessingErr> {
        // A test-only fault holds writes back, as a dying disk would.
        if let Some(until) = crate::faults::store_blocked_until()
            && matches!(msg, StoreMsg::Append(..) | StoreMsg::Submit(_) | StoreMsg::Flush)
        {
            tokio::time::sleep_until(until.into()).await;
        }
        match msg {
            StoreMsg::Fault(fault) => return fault.strike("store"),
            StoreMsg::Append(record, reply) => queue(state, &myself, record, Some(reply)).await?,
            StoreMsg::Submit(record) => queue(state, &myself, record, None).await?,
            StoreMsg::Flush => {
                state.flush_scheduled = false;
                flush(state).await?;
            }
            StoreMsg::CopyTo(dest, reply) => {
                let copied = blocking(state, move |store| store.copy_to(&dest).map(|_| dest)).await?;
                let _ = reply.send(copied);
            }
            StoreMsg::Alerts(query, reply) => {
                let _ = reply.send(blocking(state, move |store| store.alerts(&query)).await?);
            }
            StoreMsg::Review(id, mark, by, reply) => {
                // The alert may still be among the pending writes.
                flush(state).await?;
                let now = crate::store::unix_micros(std::time::SystemTime::now());
                let _ = reply.send(blocking(state, move |store| store.review(&id, mark, &by, now)).await?);
            }
            StoreMsg::DeleteBefore(before_us, max, reply) => {
                // Pending writes first, so a delete never races ahead of them.
                flush(state).await?;
                let _ = reply.send(blocking(state, move |store| store.delete_before(before_us, max)).await?);
            }
            StoreMsg::Compact(reply) => {
                flush(state).await?;
                let _ = reply.send(compact(state).await?);
            }
        }
        Ok(())
    }
}

/// Runs `f` on the database on a blocking thread, beside any readers.
async fn blocking<T: Send + 'static>(
    state: &StoreState,
    f: impl FnOnce(&Store) -> Result<T, super::StoreError> + Send + 'static,
) -> Result<Result<T, String>, ActorProcessingErr> {
    let store = state.store.clone().read_owned().await;
    Ok(tokio::task::spawn_blocking(move || f(&store)).await?.map_err(|e| e.to_string()))
}

async fn queue(
    state: &mut StoreState,
    myself: &ActorRef<StoreMsg>,
    record: Record,
    reply: Option<Reply<()>>,
) -> Result<(), ActorProcessingErr> {
    state.pending.push((record, reply));
    if state.pending.len() >= BATCH_MAX {
        flush(state).await?;
    } else if !state.flush_scheduled {
        state.flush_scheduled = true;
        myself.send_after(BATCH_WINDOW, || StoreMsg::Flush);
    }
    Ok(())
}

/// Compaction needs the database to itself: it waits for the readers under
/// way, and readers arriving meanwhile wait for it.
async fn compact(state: &mut StoreState) -> Result<Result<bool, String>, ActorProcessingErr> {
    let mut store = state.store.write().await;
    let started = Instant::now();
    let result = tokio::task::block_in_place(|| store.compact()).map_err(|e| e.to_string());
    tracing::info!(shrank = ?result, seconds = started.elapsed().as_secs_f64(), "event store compacted");
    Ok(result)
}

/// Commits everything pending in one durable transaction.
async fn flush(state: &mut StoreState) -> Result<(), ActorProcessingErr> {
    if state.pending.is_empty() {
        return Ok(());
    }
    let batch = std::mem::take(&mut state.pending);
    let records: Vec<Record> = batch.iter().map(|(r, _)| r.clone()).collect();
    let store = state.store.clone().read_owned().await;
    let started = Instant::now();
    let result = tokio::task::spawn_blocking(move || store.append(&records)).await?;
    let seconds = started.elapsed().as_secs_f64();
    metrics::histogram!("smart_cctv_store_commit_seconds").record(seconds);
    match result {
        Ok(()) => {
            state.commits += 1;
            let now_ms = crate::store::unix_micros(std::time::SystemTime::now()) as u64 / 1000;
            LAST_COMMIT_MS.store(now_ms, std::sync::atomic::Ordering::Relaxed);
            metrics::counter!("smart_cctv_store_writes_total").increment(batch.len() as u64);
            state.board.set_detail(
                "store",
                serde_json::json!({ "commits": state.commits, "last_commit_ms": seconds * 1000.0, "batch": batch.len() }),
            );
            for (_, reply) in batch {
                if let Some(reply) = reply {
                    let _ = reply.send(Ok(()));
                }
            }
            Ok(())
        }
        Err(e) => {
            metrics::counter!("smart_cctv_store_errors_total").increment(1);
            tracing::error!("event store write failed: {e}");
            state.board.set_component("store", false, "degraded", Some(e.to_string()));
            for (record, reply) in batch {
                match reply {
                    Some(reply) => {
                        let _ = reply.send(Err(e.to_string()));
                    }
                    None => metrics::counter!("smart_cctv_store_dropped_total", "kind" => record.kind()).increment(1),
                }
            }
            // redb answers PreviousIo to everything after an I/O error:
            // fail, and let the supervisor reopen the database.
            Err(format!("event store write failed: {e}").into())
        }
    }
}
