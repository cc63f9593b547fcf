//! The alerts actor: the one place alerts go.
//!
//! Parent: the root supervisor. Input: alerts from rule actors. Output: a
//! line in `alerts.log` (target `alert`), the snapshot (encoded off the
//! runtime), metrics, and a rate-limited email.

use super::{Alert, email, snapshot};
use crate::config::MonitoringConfig;
use crate::store::AlertRecord;
use crate::store::actor::{NAME as STORE, StoreMsg};
use ractor::call_t;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use std::collections::VecDeque;
use std::path::PathBuf;
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
    last_email: Option<Instant>,
    /// Alerts not yet acknowledged by the store, oldest first; bounded so a
    /// long store outage costs memory only up to a point, and the loss is counted.
    unsaved: VecDeque<AlertRecord>,
    retry_scheduled: bool,
}

pub enum AlertsMsg {
    Alert(Box<Alert>),
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
        Ok(AlertsState { args, last_email: None, unsaved: VecDeque::new(), retry_scheduled: false })
    }

    async fn handle(
        &self,
        myself: ActorRef<AlertsMsg>,
        msg: AlertsMsg,
        state: &mut AlertsState,
    ) -> Result<(), ActorProcessingErr> {
        let alert = match msg {
            AlertsMsg::Alert(alert) => alert,
            AlertsMsg::Retry => {
                state.retry_scheduled = false;
                save(state, &myself).await;
                return Ok(());
            }
        };
        let latency = alert.captured_at.elapsed();
        metrics::histogram!("smart_cctv_alert_latency_seconds").record(latency.as_secs_f64());
        metrics::counter!("smart_cctv_alerts_total", "rule" => alert.rule.clone(), "camera" => alert.camera.to_string())
            .increment(1);
        let path = snapshot::path_for(&state.args.data_dir.join("snapshots"), &alert);
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
            let _ =
                ActorRef::<crate::speaker::SpeakerMsg>::from(member).cast(crate::speaker::SpeakerMsg::Play(request));
        }

        if state.unsaved.len() >= UNSAVED_MAX {
            state.unsaved.pop_front();
            metrics::counter!("smart_cctv_alerts_unsaved_lost_total").increment(1);
            tracing::error!("event store down too long: the oldest unsaved alert was dropped from the record");
        }
        state.unsaved.push_back(AlertRecord {
            time_us: crate::store::unix_micros(alert.captured),
            rule: alert.rule.clone(),
            camera: alert.camera.to_string(),
            class: alert.class_name.to_owned(),
            confidence: alert.confidence,
            track_ids: alert.track_ids.clone(),
            distance_m: alert.distance_m,
            snapshot: path.strip_prefix(&state.args.data_dir).unwrap_or(&path).display().to_string(),
        });

        let for_snapshot = alert.clone();
        let snapshot_path = path.clone();
        tokio::task::spawn_blocking(move || {
            if let Err(e) = snapshot::write(&snapshot_path, &for_snapshot) {
                tracing::error!("snapshot: {e}");
            }
        });

        let m = &state.args.monitoring;
        if m.email_alerts_enabled {
            let due = state.last_email.is_none_or(|t| t.elapsed() >= m.email_min_interval);
            if due {
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
            } else {
                metrics::counter!("smart_cctv_alert_emails_total", "result" => "rate_limited").increment(1);
            }
        }
        save(state, &myself).await;
        Ok(())
    }
}

/// Writes unsaved alerts in order until the store refuses; retries later.
async fn save(state: &mut AlertsState, myself: &ActorRef<AlertsMsg>) {
    if let Some(cell) = ractor::registry::where_is(STORE) {
        let store: ActorRef<StoreMsg> = cell.into();
        // Send them all at once so the store commits them together, then
        // drop from the front exactly those acknowledged, in order.
        let calls = state.unsaved.iter().map(|record| {
            let store = store.clone();
            let record = record.clone();
            async move { call_t!(store, StoreMsg::Append, 5_000, record) }
        });
        let results = futures_util::future::join_all(calls).await;
        for result in results {
            match result {
                Ok(Ok(())) => {
                    state.unsaved.pop_front();
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
