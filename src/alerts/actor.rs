//! The alerts actor: the one place alerts go.
//!
//! Parent: the root supervisor. Input: alerts from rule actors. Output: a
//! line in `alerts.log` (target `alert`), the snapshot (encoded off the
//! runtime), metrics, and a rate-limited email.

use super::{Alert, email, snapshot};
use crate::config::MonitoringConfig;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use std::path::PathBuf;
use std::time::Instant;

pub const NAME: &str = "alerts";

pub struct AlertsActor;

pub struct AlertsArgs {
    /// `data/snapshots`.
    pub snapshots: PathBuf,
    pub monitoring: MonitoringConfig,
}

pub struct AlertsState {
    args: AlertsArgs,
    last_email: Option<Instant>,
}

pub enum AlertsMsg {
    Alert(Box<Alert>),
}

impl Actor for AlertsActor {
    type Msg = AlertsMsg;
    type State = AlertsState;
    type Arguments = AlertsArgs;

    async fn pre_start(&self, _: ActorRef<AlertsMsg>, args: AlertsArgs) -> Result<AlertsState, ActorProcessingErr> {
        Ok(AlertsState { args, last_email: None })
    }

    async fn handle(
        &self,
        _: ActorRef<AlertsMsg>,
        msg: AlertsMsg,
        state: &mut AlertsState,
    ) -> Result<(), ActorProcessingErr> {
        let AlertsMsg::Alert(alert) = msg;
        let latency = alert.captured_at.elapsed();
        metrics::histogram!("smart_cctv_alert_latency_seconds").record(latency.as_secs_f64());
        metrics::counter!("smart_cctv_alerts_total", "rule" => alert.rule.clone(), "camera" => alert.camera.to_string())
            .increment(1);
        let path = snapshot::path_for(&state.args.snapshots, &alert);
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
        Ok(())
    }
}
