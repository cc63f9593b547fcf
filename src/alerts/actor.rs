//! The alerts actor: the one place alerts go.
//!
//! Parent: the root supervisor. Input: alerts from rule actors. Output, at
//! once and in this order: a line in `alerts.log` (target `alert`), the
//! speakers and the email. That is the sounding path, and nothing on it
//! waits on storage. Then the snapshot is encoded off the runtime into
//! `snapshots/.pending/`, and the record goes to the recorder (see
//! `recorder.rs`), which stores it and moves the snapshot into place.

use super::recorder::{InFlight, Recorder, Unsaved};
use super::{Alert, email, snapshot};
use crate::config::MonitoringConfig;
use crate::store::actor::{NAME as STORE, StoreMsg};
use crate::store::{AlertRecord, Query};
use ractor::call_t;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub const NAME: &str = "alerts";

pub struct AlertsActor;

pub struct AlertsArgs {
    /// The data directory; snapshots go to `snapshots/` under it.
    pub data_dir: PathBuf,
    pub monitoring: MonitoringConfig,
    /// MQTT: the alert and the snapshot go there too, without waiting.
    pub bus: crate::mqtt::Bus,
}

pub struct AlertsState {
    args: AlertsArgs,
    snapshots: PathBuf,
    last_email: Option<Instant>,
    /// Final snapshot paths handed out but not yet in place.
    in_flight: InFlight,
    /// Stores records in the background; `None` only while stopping.
    recorder: Option<Recorder>,
}

pub enum AlertsMsg {
    Alert(Box<Alert>),
    /// The snapshot of an alert was written to its pending path (or failed).
    SnapshotDone(Box<Unsaved>),
    /// Fail as asked: sent only by the test-only fault routes (`faults.rs`).
    Fault(crate::faults::Fault),
}

impl ractor::Message for AlertsMsg {}

/// How long a stopping actor gives the recorder to store what it holds.
const RECORDER_STOP: Duration = Duration::from_secs(3);

impl Actor for AlertsActor {
    type Msg = AlertsMsg;
    type State = AlertsState;
    type Arguments = AlertsArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<AlertsMsg>,
        args: AlertsArgs,
    ) -> Result<AlertsState, ActorProcessingErr> {
        crate::faults::register("alerts", &myself, AlertsMsg::Fault);
        let snapshots = args.data_dir.join("snapshots");
        settle_after_crash(&snapshots).await;
        let in_flight = InFlight::default();
        Ok(AlertsState {
            args,
            snapshots,
            last_email: None,
            recorder: Some(Recorder::start(in_flight.clone())),
            in_flight,
        })
    }

    async fn post_stop(&self, _: ActorRef<AlertsMsg>, state: &mut AlertsState) -> Result<(), ActorProcessingErr> {
        if let Some(recorder) = state.recorder.take() {
            recorder.stop(RECORDER_STOP).await;
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<AlertsMsg>,
        msg: AlertsMsg,
        state: &mut AlertsState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            AlertsMsg::Fault(fault) => return fault.strike("alerts"),
            AlertsMsg::Alert(alert) => sound(&myself, *alert, state),
            AlertsMsg::SnapshotDone(unsaved) => {
                if let Some(recorder) = &state.recorder {
                    recorder.save(*unsaved);
                }
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
    // Time-ordered and unique: the alert is stored and listed under it.
    let id = uuid::Uuid::now_v7().to_string();
    let path = {
        let mut in_flight = state.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        let path = snapshot::path_for(&state.snapshots, &alert, &|p| in_flight.contains(p));
        in_flight.insert(path.clone());
        path
    };
    let distance = alert.distance_m.map(|d| format!(" distance_m={d:.2}")).unwrap_or_default();
    let summary = format!(
        "ALERT rule={} camera={} class={} confidence={:.2} tracks={:?}{distance} id={id} snapshot={}",
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
    let snapshot_url = format!("/api/{}", path.strip_prefix(&state.args.data_dir).unwrap_or(&path).display());
    publish_alert(&state.args.bus, &alert, &id, &snapshot_url);

    let record = AlertRecord {
        id,
        time_us: crate::store::unix_micros(alert.captured),
        rule: alert.rule.clone(),
        camera: alert.camera.to_string(),
        class: alert.class_name.to_owned(),
        confidence: alert.confidence,
        track_ids: alert.track_ids.clone(),
        distance_m: alert.distance_m,
        snapshot: path.strip_prefix(&state.args.data_dir).unwrap_or(&path).display().to_string(),
        review: None,
    };
    let pending = snapshot::pending_path(&state.snapshots, &path);
    let myself = myself.clone();
    let bus = state.args.bus.clone();
    tokio::task::spawn_blocking(move || {
        let (mut record, snapshot) = (record, Some((pending.clone(), path.clone())));
        let snapshot = match snapshot::write(&pending, &alert) {
            Ok(()) => {
                if bus.enabled()
                    && let Ok(jpeg) = std::fs::read(&pending)
                {
                    bus.publish(&format!("{}/{}/snapshot", alert.camera, alert.class_name), jpeg, true);
                }
                snapshot
            }
            Err(e) => {
                tracing::error!("snapshot: {e}");
                record.snapshot.clear();
                None
            }
        };
        let _ = myself.cast(AlertsMsg::SnapshotDone(Box::new(Unsaved { record, snapshot })));
    });
}

/// `<prefix>/alerts` and, for Home Assistant's event entity,
/// `<prefix>/<camera>/alerts`.
fn publish_alert(bus: &crate::mqtt::Bus, alert: &Alert, id: &str, snapshot_url: &str) {
    if !bus.enabled() {
        return;
    }
    let message = serde_json::json!({
        "event_type": "alert",
        "id": id,
        "rule": alert.rule,
        "camera": &*alert.camera,
        "label": alert.class_name,
        "score": alert.confidence,
        "time": crate::mqtt::unix_seconds(alert.captured),
        "zones": alert.zone_names,
        "distance_m": alert.distance_m,
        "snapshot": snapshot_url,
    })
    .to_string();
    bus.publish(&format!("{}/alerts", alert.camera), message.clone(), false);
    bus.publish("alerts", message, false);
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
