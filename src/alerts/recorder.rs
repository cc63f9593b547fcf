//! The recording path of alerts, apart from the sounding path.
//!
//! The alerts actor sounds an alert at once (log line, speakers, email) and
//! hands the record here. This task, owned by the actor (started in its
//! `pre_start`, closed and awaited in its `post_stop`), writes records to the
//! event store in order, retries while the store is slow or down, and moves
//! each snapshot into place once its record is acknowledged. A slow disk
//! therefore delays the record, never the next alarm.
//!
//! Every record carries the id it was raised with, and the store writes an
//! id once: a write that timed out but committed later is not duplicated by
//! the retry.

use super::snapshot;
use crate::store::actor::{NAME as STORE, StoreMsg};
use crate::store::{AlertRecord, Record};
use ractor::{ActorRef, call_t};
use std::collections::{HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// Alerts kept while the store is down; past this the oldest is dropped
/// from the record (it was already sounded) and counted.
pub const UNSAVED_MAX: usize = 1000;
/// How long to wait before trying the store again.
const RETRY: Duration = Duration::from_secs(2);
/// How long one write may take before it is retried.
const WRITE_TIMEOUT_MS: u64 = 5_000;

/// An alert waiting for the store, with its pending snapshot if it has one
/// (the pending path, then the final one).
pub struct Unsaved {
    pub record: AlertRecord,
    pub snapshot: Option<(PathBuf, PathBuf)>,
}

/// Final snapshot paths handed out but not yet in place, shared with the
/// sounding path so that two alerts never get the same file.
pub type InFlight = Arc<Mutex<HashSet<PathBuf>>>;

/// The handle the alerts actor keeps.
pub struct Recorder {
    tx: mpsc::UnboundedSender<Unsaved>,
    task: tokio::task::JoinHandle<()>,
}

impl Recorder {
    pub fn start(in_flight: InFlight) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(run(rx, in_flight));
        Self { tx, task }
    }

    /// Queues a record; never waits.
    pub fn save(&self, unsaved: Unsaved) {
        if let Err(lost) = self.tx.send(unsaved) {
            // Only while stopping: the record is lost, and said so.
            lose(&lost.0.record, "the recorder has stopped");
        }
    }

    /// Closes the queue, lets the task make a last attempt, and awaits it
    /// for at most `timeout`; past that it is aborted.
    pub async fn stop(self, timeout: Duration) {
        drop(self.tx);
        let mut task = self.task;
        if tokio::time::timeout(timeout, &mut task).await.is_err() {
            tracing::warn!("alert recorder did not finish within {timeout:?}; stopping it");
            task.abort();
            let _ = task.await;
        }
    }
}

async fn run(mut rx: mpsc::UnboundedReceiver<Unsaved>, in_flight: InFlight) {
    let mut queue = VecDeque::new();
    let mut open = true;
    while open || !queue.is_empty() {
        if queue.is_empty() {
            match rx.recv().await {
                Some(unsaved) => push(&mut queue, unsaved, &in_flight),
                None => break,
            }
        }
        while let Ok(unsaved) = rx.try_recv() {
            push(&mut queue, unsaved, &in_flight);
        }
        save(&mut queue, &in_flight).await;
        metrics::gauge!("smart_cctv_alerts_unsaved").set(queue.len() as f64);
        if queue.is_empty() {
            continue;
        }
        if !open {
            // Stopping, and the store still refuses: say what is left.
            for left in &queue {
                lose(&left.record, "the service stopped before the event store took it");
            }
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(RETRY) => {}
            next = rx.recv() => match next {
                Some(unsaved) => push(&mut queue, unsaved, &in_flight),
                None => open = false,
            },
        }
    }
}

fn push(queue: &mut VecDeque<Unsaved>, unsaved: Unsaved, in_flight: &InFlight) {
    if queue.len() >= UNSAVED_MAX
        && let Some(lost) = queue.pop_front()
    {
        metrics::counter!("smart_cctv_alerts_unsaved_lost_total").increment(1);
        lose(&lost.record, "event store down too long");
        if let Some((pending, target)) = lost.snapshot {
            let _ = std::fs::remove_file(pending);
            forget(in_flight, &target);
        }
    }
    queue.push_back(unsaved);
}

fn lose(record: &AlertRecord, why: &str) {
    tracing::error!("{why}: alert {} ({} on {}) was dropped from the record", record.id, record.rule, record.camera);
}

fn forget(in_flight: &InFlight, target: &PathBuf) {
    in_flight.lock().unwrap_or_else(|e| e.into_inner()).remove(target);
}

/// Writes the queue in order until the store refuses or times out. All are
/// sent at once so the store commits them together; exactly those
/// acknowledged, in order, leave the front.
async fn save(queue: &mut VecDeque<Unsaved>, in_flight: &InFlight) {
    let Some(cell) = ractor::registry::where_is(STORE) else { return };
    let store: ActorRef<StoreMsg> = cell.into();
    let calls = queue.iter().map(|u| {
        let store = store.clone();
        let record = Record::Alert(u.record.clone());
        async move { call_t!(store, StoreMsg::Append, WRITE_TIMEOUT_MS, record) }
    });
    let results = futures_util::future::join_all(calls).await;
    for result in results {
        match result {
            Ok(Ok(())) => {
                if let Some(saved) = queue.pop_front() {
                    place(saved, in_flight);
                }
            }
            Ok(Err(e)) => {
                tracing::warn!("alert not yet stored: {e}");
                break;
            }
            Err(e) => {
                tracing::warn!("alert not yet stored: the store did not answer: {e}");
                break;
            }
        }
    }
}

/// The record is stored: its snapshot moves from pending into place.
fn place(saved: Unsaved, in_flight: &InFlight) {
    let r = &saved.record;
    tracing::debug!(id = %r.id, time_us = r.time_us, camera = %r.camera, rule = %r.rule, "alert stored");
    if let Some((pending, target)) = saved.snapshot {
        if let Err(e) = snapshot::place(&pending, &target) {
            tracing::error!("snapshot {}: {e}", target.display());
        }
        forget(in_flight, &target);
    }
}
