//! The retention actor: the snapshot, log and database cron jobs, in process.
//!
//! Parent: the root supervisor. Inputs: its own timer. Every check (each
//! `health.interval`) it reads the disk; a full pass runs at start, every
//! `retention.interval`, and at once when the disk is critical (disk-pressure
//! mode: the oldest snapshots go until use is back under the threshold with
//! a margin). Events and alerts are deleted through the store actor in small
//! batches so that writes never wait long. Compaction runs every
//! `retention.compact_every`, when the store has been idle for a minute.

use super::{Outcome, free_snapshots, sweep_logs, sweep_snapshots};
use crate::config::Config;
use crate::health::disk;
use crate::store::actor::{NAME as STORE, StoreMsg};
use ractor::{Actor, ActorProcessingErr, ActorRef, call_t};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::watch;

pub struct RetentionActor;

pub struct RetentionArgs {
    pub data_dir: PathBuf,
    pub config: watch::Receiver<Arc<Config>>,
    /// The config and supervision files, which scheduled backups hold.
    pub config_files: (Option<PathBuf>, Option<PathBuf>),
}

pub struct RetentionState {
    args: RetentionArgs,
    last_pass: Option<Instant>,
    last_check: Option<Instant>,
    in_pressure: bool,
    /// The last scheduled backup tried, so a failing one is retried hourly,
    /// not every tick.
    last_backup_try: Option<Instant>,
    timer: tokio::task::JoinHandle<()>,
}

pub enum RetentionMsg {
    Tick,
    /// Fail as asked: sent only by the test-only fault routes (`faults.rs`).
    Fault(crate::faults::Fault),
}

impl ractor::Message for RetentionMsg {}

const TICK: Duration = Duration::from_secs(1);
/// Disk-pressure mode frees down to this many points under the critical threshold.
const PRESSURE_MARGIN_PERCENT: f64 = 5.0;
/// The store counts as idle for compaction after this long without a commit.
const IDLE_FOR: Duration = Duration::from_secs(60);
/// The time of the last compaction, kept across restarts.
const COMPACTED_MARKER: &str = ".last-compaction";

impl Actor for RetentionActor {
    type Msg = RetentionMsg;
    type State = RetentionState;
    type Arguments = RetentionArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<RetentionMsg>,
        args: RetentionArgs,
    ) -> Result<RetentionState, ActorProcessingErr> {
        crate::faults::register("retention", &myself, RetentionMsg::Fault);
        let timer = myself.send_interval(TICK, || RetentionMsg::Tick);
        let _ = myself.cast(RetentionMsg::Tick);
        Ok(RetentionState { args, last_pass: None, last_check: None, in_pressure: false, last_backup_try: None, timer })
    }

    async fn handle(
        &self,
        _: ActorRef<RetentionMsg>,
        msg: RetentionMsg,
        state: &mut RetentionState,
    ) -> Result<(), ActorProcessingErr> {
        if let RetentionMsg::Fault(fault) = msg {
            return fault.strike("retention");
        }
        let config = state.args.config.borrow().clone();
        if state.last_check.is_some_and(|t| t.elapsed() < config.health.interval) {
            return Ok(());
        }
        state.last_check = Some(Instant::now());
        let critical = disk_critical(state, &config);
        if critical || state.last_pass.is_none_or(|t| t.elapsed() >= config.retention.interval) {
            state.last_pass = Some(Instant::now());
            pass(state, &config, critical).await;
        }
        compact_if_due(state, &config).await;
        backup_if_due(state, &config).await;
        Ok(())
    }

    async fn post_stop(&self, _: ActorRef<RetentionMsg>, state: &mut RetentionState) -> Result<(), ActorProcessingErr> {
        state.timer.abort();
        Ok(())
    }
}

/// When the last scheduled backup succeeded, kept across restarts.
const BACKED_UP_MARKER: &str = ".last-backup";
/// A failed scheduled backup is tried again after this long.
const BACKUP_RETRY: Duration = Duration::from_secs(3600);

/// The old monthly backup cron: every `backup.every`, a backup into
/// `backup.to`, verified as `ops restore --verify` would, the newest
/// `backup.keep` kept. Failures are counted and logged, and retried.
async fn backup_if_due(state: &mut RetentionState, config: &Config) {
    let Some(every) = config.backup.every else { return };
    let data_dir = state.args.data_dir.clone();
    let marker = data_dir.join(BACKED_UP_MARKER);
    let last = std::fs::metadata(&marker).and_then(|m| m.modified()).ok();
    let due = last.is_none_or(|t| t.elapsed().is_ok_and(|e| e >= every));
    let retry = state.last_backup_try.is_none_or(|t| t.elapsed() >= BACKUP_RETRY.min(every));
    if !due || !retry {
        return;
    }
    state.last_backup_try = Some(Instant::now());
    let copy = data_dir.join(crate::store::backup::COPY_DIR).join("events-scheduled.redb");
    let copied = match ractor::registry::where_is(STORE) {
        Some(cell) => {
            let store: ActorRef<StoreMsg> = cell.into();
            let _ = std::fs::create_dir_all(copy.parent().unwrap_or(&data_dir));
            match call_t!(store, StoreMsg::CopyTo, 120_000, copy.clone()) {
                Ok(Ok(path)) => Ok(path),
                Ok(Err(e)) => Err(e),
                Err(e) => Err(format!("the event store did not answer: {e}")),
            }
        }
        None => Err("the event store is down".to_owned()),
    };
    let (config_path, supervision_path) = state.args.config_files.clone();
    let out = config.backup.to.clone().unwrap_or_else(|| data_dir.join("backups"));
    let keep = config.backup.keep;
    let result = match copied {
        Err(e) => Err(e),
        Ok(copy) => tokio::task::spawn_blocking(move || {
            use crate::store::backup;
            let files = backup::backup_files(&copy, config_path.as_deref(), supervision_path.as_deref());
            let written = backup::write_archive(&out, &files, &|_, _| {});
            let _ = std::fs::remove_file(&copy);
            let archive = written.map_err(|e| e.to_string())?;
            // Verified as a restore would read it, in a scratch folder.
            let scratch = data_dir.join("backup-verify");
            let targets = backup::RestoreTargets { data_dir: scratch.clone(), config: None, supervision: None };
            let verified = backup::restore(&archive, &targets, backup::RestoreLimits::default(), true);
            let _ = std::fs::remove_dir_all(&scratch);
            verified.map_err(|e| format!("{} does not verify: {e}", archive.display()))?;
            let _ = std::fs::File::create(&marker);
            backup::rotate(&out, keep);
            Ok(archive)
        })
        .await
        .unwrap_or_else(|e| Err(e.to_string())),
    };
    match result {
        Ok(archive) => {
            metrics::counter!("smart_cctv_backups_total", "result" => "ok").increment(1);
            metrics::gauge!("smart_cctv_backup_last_success_timestamp_seconds")
                .set(SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64()));
            tracing::info!(archive = %archive.display(), "scheduled backup written and verified");
        }
        Err(e) => {
            metrics::counter!("smart_cctv_backups_total", "result" => "failed").increment(1);
            tracing::error!("scheduled backup failed: {e}; trying again in an hour");
        }
    }
}

fn disk_critical(state: &mut RetentionState, config: &Config) -> bool {
    let critical =
        disk::usage(&state.args.data_dir).is_ok_and(|u| u.used_percent >= config.health.disk_critical_percent);
    if critical != state.in_pressure {
        state.in_pressure = critical;
        metrics::gauge!("smart_cctv_retention_pressure").set(if critical { 1.0 } else { 0.0 });
        if critical {
            tracing::warn!("disk critical: retention runs now, in disk-pressure mode");
        } else {
            tracing::info!("disk pressure over");
        }
    }
    critical
}

/// One full pass: snapshots, logs, events and alerts; under pressure, then
/// the oldest snapshots until the disk is back under the threshold.
async fn pass(state: &mut RetentionState, config: &Config, pressure: bool) {
    let r = &config.retention;
    let data_dir = state.args.data_dir.clone();
    let now = SystemTime::now();
    let days = |d: u32| Duration::from_secs(u64::from(d) * 86_400);
    let (snapshot_age, quota) = (days(r.snapshots_days), r.snapshots_max_bytes);
    let (compress, delete) = (days(r.logs_compress_days), days(r.logs_delete_days));
    let critical = config.health.disk_critical_percent;
    let files = tokio::task::spawn_blocking(move || {
        let mut outcome = sweep_snapshots(&data_dir.join("snapshots"), now, snapshot_age, quota);
        merge(&mut outcome, sweep_logs(&data_dir.join("logs"), now, compress, delete));
        if pressure && let Ok(usage) = disk::usage(&data_dir) {
            let size = usage.total_bytes as f64;
            let target = size * (critical - PRESSURE_MARGIN_PERCENT).max(0.0) / 100.0;
            let used = size * usage.used_percent / 100.0;
            let need = (used - target).max(0.0) as u64;
            merge(&mut outcome, free_snapshots(&data_dir.join("snapshots"), need));
        }
        outcome
    })
    .await;
    let mut outcome = files.unwrap_or_else(|e| Outcome { errors: vec![e.to_string()], ..Outcome::default() });
    let before_us = crate::store::unix_micros(now) - days(r.events_days).as_micros() as i64;
    merge(&mut outcome, expire_records(before_us, r.delete_batch).await);
    outcome.publish();
    for error in &outcome.errors {
        tracing::warn!("retention: {error}");
    }
    if outcome.total_deleted() > 0 || outcome.compressed > 0 {
        let deleted: Vec<String> =
            outcome.deleted.iter().map(|((kind, reason), n)| format!("{n} {kind} ({})", reason.as_str())).collect();
        tracing::info!(
            compressed_logs = outcome.compressed,
            freed_bytes = outcome.freed_bytes,
            pressure,
            "retention deleted {}",
            if deleted.is_empty() { "nothing".to_owned() } else { deleted.join(", ") }
        );
    }
}

fn merge(into: &mut Outcome, from: Outcome) {
    for (key, n) in from.deleted {
        *into.deleted.entry(key).or_default() += n;
    }
    into.compressed += from.compressed;
    into.freed_bytes += from.freed_bytes;
    into.errors.extend(from.errors);
}

/// Deletes records older than `before_us`, `batch` per table per store
/// transaction, until none are left; other writes go in between.
async fn expire_records(before_us: i64, batch: usize) -> Outcome {
    let mut outcome = Outcome::default();
    loop {
        let Some(cell) = ractor::registry::where_is(STORE) else {
            outcome.errors.push("the event store is down; records expire on a later pass".into());
            return outcome;
        };
        let store: ActorRef<StoreMsg> = cell.into();
        match call_t!(store, StoreMsg::DeleteBefore, 60_000, before_us, batch) {
            Ok(Ok(deleted)) => {
                let mut any = false;
                for (table, n) in deleted {
                    let kind = match table {
                        "alerts" => "alert",
                        "events" => "event",
                        "camera_status" => "camera_status",
                        _ => "health_event",
                    };
                    if n > 0 {
                        *outcome.deleted.entry((kind, super::Reason::Age)).or_default() += n as u64;
                        any = true;
                    }
                }
                if !any {
                    return outcome;
                }
                tokio::task::yield_now().await;
            }
            Ok(Err(e)) => {
                outcome.errors.push(format!("expiring records: {e}"));
                return outcome;
            }
            Err(e) => {
                outcome.errors.push(format!("expiring records: the store did not answer: {e}"));
                return outcome;
            }
        }
    }
}

/// Compacts when `compact_every` has passed since the last compaction (kept
/// in a marker file across restarts) and the store has been idle a while.
async fn compact_if_due(state: &mut RetentionState, config: &Config) {
    let marker = state.args.data_dir.join(COMPACTED_MARKER);
    let last = std::fs::metadata(&marker).and_then(|m| m.modified()).ok();
    let Some(last) = last else {
        // First start: the schedule begins now.
        let _ = std::fs::write(&marker, b"");
        return;
    };
    if SystemTime::now().duration_since(last).unwrap_or_default() < config.retention.compact_every {
        return;
    }
    let idle = crate::store::actor::last_commit_age().is_none_or(|age| age >= IDLE_FOR);
    if !idle {
        return;
    }
    let Some(cell) = ractor::registry::where_is(STORE) else { return };
    let store: ActorRef<StoreMsg> = cell.into();
    match call_t!(store, StoreMsg::Compact, 600_000) {
        Ok(Ok(shrank)) => {
            metrics::counter!("smart_cctv_store_compactions_total").increment(1);
            tracing::info!(shrank, "scheduled compaction done");
            let _ = std::fs::write(&marker, b"");
        }
        Ok(Err(e)) => tracing::warn!("scheduled compaction: {e}"),
        Err(e) => tracing::warn!("scheduled compaction: the store did not answer: {e}"),
    }
}
