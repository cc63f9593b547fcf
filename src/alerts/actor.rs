//! The alerts actor: the one place alerts go.
//!
//! Parent: the root supervisor. Input: alerts from rule actors. Output: a
//! line in `alerts.log` (target `alert`) and the speakers at once; then the
//! snapshot (encoded off the runtime, into `snapshots/.pending/`), then the
//! record in the event store, and only once that is acknowledged the
//! snapshot moves into place. Also metrics and a rate-limited email.

use super::{Alert, email, snapshot};
use crate::config::MonitoringConfig;
use crate::store::actor::{NAME as STORE, StoreMsg};
use crate::store::{AlertRecord, Query, Record};
use ractor::call_t;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use std::collections::{HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub const NAME: &str = "alerts";

pub struct AlertsActor;

pub struct AlertsArgs {
    /// The data directory; snapshots go to `snapshots/` under it.
    pub data_dir: PathBuf,
    pub monitoring: MonitoringConfig,
}

pub struct AlertsState {
    args: AlertsArgs,
    snapshots: PathBuf,
    last_email: Option<Instant>,
    /// Alerts not yet acknowledged by the store, oldest first; bounded so a
    /// long store outage costs memory only up to a point, and the loss is counted.
    unsaved: VecDeque<Unsaved>,
    /// Final snapshot paths handed out but not yet in place.
    in_flight: HashSet<PathBuf>,
    retry_scheduled: bool,
}

/// An alert waiting for the store, with its pending snapshot if it has one.
struct Unsaved {
    record: AlertRecord,
    snapshot: Option<(PathBuf, PathBuf)>,
}

pub enum AlertsMsg {
    Alert(Box<Alert>),
    /// The snapshot of an alert was written to its pending path (or failed).
    SnapshotDone {
        record: AlertRecord,
        snapshot: Option<(PathBuf, PathBuf)>,
    },
    /// Try again to write what the store has not acknowledged.
    Retry,
}

/// Alerts kept while the store is down.
const UNSAVED_MAX: usize = 1000;
const RETRY: Duration = Duration::from_secs(5);

impl Actor for AlertsActor {
    type Msg = AlertsMsg;
    type State = AlertsState;
    type Arguments = AlertsArgs;

    async fn pre_start(&self, _: ActorRef<AlertsMsg>, args: AlertsArgs) -> Result<AlertsState, ActorProcessingErr> {
        let snapshots = args.data_dir.join("snapshots");
        settle_after_crash(&snapshots).await;
        Ok(AlertsState {
            args,
            snapshots,
            last_email: None,
            unsaved: VecDeque::new(),
            in_flight: HashSet::new(),
            retry_scheduled: false,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<AlertsMsg>,
        msg: AlertsMsg,
        state: &mut AlertsState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            AlertsMsg::Alert(alert) => sound(&myself, *alert, state),
            AlertsMsg::SnapshotDone { record, snapshot } => {
                if state.unsaved.len() >= UNSAVED_MAX
                    && let Some(lost) = state.unsaved.pop_front()
                {
                    metrics::counter!("smart_cctv_alerts_unsaved_lost_total").increment(1);
                    tracing::error!(
                        "event store down too long: alert {} on {} was dropped from the record",
                        lost.record.rule,
                        lost.record.camera
                    );
                    if let Some((pending, target)) = lost.snapshot {
                        let _ = std::fs::remove_file(pending);
                        state.in_flight.remove(&target);
                    }
                }
                state.unsaved.push_back(Unsaved { record, snapshot });
                save(state, &myself).await;
            }
            AlertsMsg::Retry => {
                state.retry_scheduled = false;
                save(state, &myself).await;
            }
        }
        Ok(())
    }
}

/// Everything that must not wait: metrics, the log line, the speakers and
/// the email; then the snapshot is written off the runtime.
fn sound(myself: &ActorRef<AlertsMsg>, alert: Alert, state: &mut AlertsState) {
    let latency = alert.captured_at.elapsed();
    metrics::histogram!("smart_cctv_alert_latency_seconds").record(latency.as_secs_f64());
    metrics::counter!("smart_cctv_alerts_total", "rule" => alert.rule.clone(), "camera" => alert.camera.to_string())
        .increment(1);
    let in_flight = &state.in_flight;
    let path = snapshot::path_for(&state.snapshots, &alert, &|p| in_flight.contains(p));
    state.in_flight.insert(path.clone());
    let distance = alert.distance_m.map(|d| format!(" distance_m={d:.2}")).unwrap_or_default();
    let summary = format!(
        "ALERT rule={} camera={} class={} confidence={:.2} tracks={:?}{distance} snapshot={}",
        alert.rule,
        alert.camera,
        alert.class_name,
        alert.confidence,
        alert.track_ids,
        path.display()
    );
    tracing::info!(target: crate::telemetry::logging::ALERT_TARGET, "{summary}");

    for member in ractor::pg::get_members(&crate::speaker::SPEAKERS_GROUP.to_owned()) {
        let request = crate::speaker::policy::PlayRequest {
            rule: alert.rule.clone(),
            sound: alert.sound.clone().unwrap_or_default(),
            priority: alert.priority,
        };
        let _ = ActorRef::<crate::speaker::SpeakerMsg>::from(member).cast(crate::speaker::SpeakerMsg::Play(request));
    }
    email_if_due(state, &alert, summary);

    let record = AlertRecord {
        time_us: crate::store::unix_micros(alert.captured),
        rule: alert.rule.clone(),
        camera: alert.camera.to_string(),
        class: alert.class_name.to_owned(),
        confidence: alert.confidence,
        track_ids: alert.track_ids.clone(),
        distance_m: alert.distance_m,
        snapshot: path.strip_prefix(&state.args.data_dir).unwrap_or(&path).display().to_string(),
    };
    let pending = snapshot::pending_path(&state.snapshots, &path);
    let myself = myself.clone();
    tokio::task::spawn_blocking(move || {
        let (mut record, snapshot) = (record, Some((pending.clone(), path.clone())));
        let snapshot = match snapshot::write(&pending, &alert) {
            Ok(()) => snapshot,
            Err(e) => {
                tracing::error!("snapshot: {e}");
                record.snapshot.clear();
                None
            }
        };
        let _ = myself.cast(AlertsMsg::SnapshotDone { record, snapshot });
    });
}

fn email_if_due(state: &mut AlertsState, alert: &Alert, summary: String) {
    let m = &state.args.monitoring;
    if !m.email_alerts_enabled {
        return;
    }
    let due = state.last_email.is_none_or(|t| t.elapsed() >= m.email_min_interval);
    if !due {
        metrics::counter!("smart_cctv_alert_emails_total", "result" => "rate_limited").increment(1);
        return;
    }
    state.last_email = Some(Instant::now());
    let monitoring = m.clone();
    let subject = format!("smart-cctv: {} on {}", alert.rule, alert.camera);
    tokio::task::spawn_blocking(move || match email::send(&monitoring, &subject, &summary) {
        Ok(()) => metrics::counter!("smart_cctv_alert_emails_total", "result" => "sent").increment(1),
        Err(e) => {
            metrics::counter!("smart_cctv_alert_emails_total", "result" => "failed").increment(1);
            tracing::error!("alert email: {e}");
        }
    });
}

/// Writes unsaved alerts in order until the store refuses; retries later.
/// Each acknowledged alert's snapshot then moves into place.
async fn save(state: &mut AlertsState, myself: &ActorRef<AlertsMsg>) {
    if let Some(cell) = ractor::registry::where_is(STORE) {
        let store: ActorRef<StoreMsg> = cell.into();
        // Send them all at once so the store commits them together, then
        // drop from the front exactly those acknowledged, in order.
        let calls = state.unsaved.iter().map(|u| {
            let store = store.clone();
            let record = Record::Alert(u.record.clone());
            async move { call_t!(store, StoreMsg::Append, 5_000, record) }
        });
        let results = futures_util::future::join_all(calls).await;
        for result in results {
            match result {
                Ok(Ok(())) => {
                    if let Some(saved) = state.unsaved.pop_front() {
                        stored(state, saved);
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
    metrics::gauge!("smart_cctv_alerts_unsaved").set(state.unsaved.len() as f64);
    if !state.unsaved.is_empty() && !state.retry_scheduled {
        state.retry_scheduled = true;
        myself.send_after(RETRY, || AlertsMsg::Retry);
    }
}

fn stored(state: &mut AlertsState, saved: Unsaved) {
    let r = &saved.record;
    tracing::debug!(time_us = r.time_us, camera = %r.camera, rule = %r.rule, "alert stored");
    if let Some((pending, target)) = saved.snapshot {
        let placed =
            target.parent().map(std::fs::create_dir_all).transpose().and_then(|_| std::fs::rename(&pending, &target));
        if let Err(e) = placed {
            tracing::error!("snapshot {}: {e}", target.display());
        }
        state.in_flight.remove(&target);
    }
}

/// Settles what a crash left in `snapshots/.pending/`, asking the store which
/// of those alerts were stored. With the store down they wait for a later start.
async fn settle_after_crash(snapshots: &Path) {
    let pending = snapshots.join(snapshot::PENDING);
    let oldest = crate::store::check::files_under(&pending)
        .iter()
        .filter_map(|f| std::fs::metadata(f).and_then(|m| m.modified()).ok())
        .min();
    let Some(oldest) = oldest else { return };
    let Some(cell) = ractor::registry::where_is(STORE) else { return };
    let store: ActorRef<StoreMsg> = cell.into();
    // Records carry capture time, a little before the file was written.
    let since = crate::store::unix_micros(oldest) - 600_000_000;
    let query = Query { since_us: Some(since), ..Query::default() };
    let Ok(Ok(alerts)) = call_t!(store, StoreMsg::Alerts, 30_000, query) else {
        tracing::warn!("pending snapshots wait: the event store did not answer");
        return;
    };
    let known: HashSet<PathBuf> =
        alerts.into_iter().filter_map(|a| a.snapshot.strip_prefix("snapshots/").map(PathBuf::from)).collect();
    let (moved, deleted) = snapshot::settle_pending(snapshots, &|relative| known.contains(relative));
    tracing::info!(moved, deleted, "settled the snapshots a crash left pending");
}
