//! A rule actor: one per `alert_rules` entry.
//!
//! Parent: the dynamic `rules` supervisor, so a reload restarts only the
//! rules that changed and the others keep their cooldowns. Input: every
//! camera's tracked frames (it joins the `rules` process group). Output:
//! alerts to the alerts actor.

use super::{RuleEngine, TrackedFrame};
use crate::alerts::Alert;
use crate::alerts::actor::{AlertsMsg, NAME as ALERTS};
use crate::calibration::Calibration;
use crate::config::{AlertRuleConfig, ZoneSpace};
use crate::pipeline::motion::point_in_polygon;
use chrono::{DateTime, Local};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use std::collections::HashMap;
use std::sync::Arc;

pub const RULES_GROUP: &str = "rules";

pub struct RuleActor;

pub struct RuleArgs {
    pub rule: AlertRuleConfig,
    pub calibrations: Arc<HashMap<String, Calibration>>,
    /// The switch MQTT can turn the rule off with.
    pub controls: crate::mqtt::Controls,
}

pub struct RuleState {
    engine: RuleEngine,
    controls: crate::mqtt::Controls,
}

pub enum RuleMsg {
    Frame(Arc<TrackedFrame>),
    /// Fail as asked: sent only by the test-only fault routes (`faults.rs`).
    Fault(crate::faults::Fault),
}

impl ractor::Message for RuleMsg {}

impl Actor for RuleActor {
    type Msg = RuleMsg;
    type State = RuleState;
    type Arguments = RuleArgs;

    async fn pre_start(&self, myself: ActorRef<RuleMsg>, args: RuleArgs) -> Result<RuleState, ActorProcessingErr> {
        ractor::pg::join(RULES_GROUP.to_owned(), vec![myself.get_cell()]);
        crate::faults::register(&format!("rule/{}", args.rule.name), &myself, RuleMsg::Fault);
        Ok(RuleState { engine: RuleEngine::new(args.rule, args.calibrations), controls: args.controls })
    }

    async fn handle(
        &self,
        _: ActorRef<RuleMsg>,
        msg: RuleMsg,
        state: &mut RuleState,
    ) -> Result<(), ActorProcessingErr> {
        let engine = &mut state.engine;
        let tracked = match msg {
            RuleMsg::Frame(tracked) => tracked,
            RuleMsg::Fault(fault) => return fault.strike(&format!("rule/{}", engine.rule.name)),
        };
        if !state.controls.rule_enabled(&engine.rule.name) {
            return Ok(());
        }
        let frame = &tracked.frame;
        let local = DateTime::<Local>::from(frame.captured).naive_local();
        let Some(firing) = engine.evaluate(&frame.camera, &tracked.tracks, frame.captured_at, local) else {
            return Ok(());
        };
        let alert = Alert {
            rule: engine.rule.name.clone(),
            camera: frame.camera.clone(),
            track_ids: firing.track_ids.clone(),
            class_name: firing.class_name,
            confidence: firing.confidence,
            distance_m: firing.distance_m,
            captured: frame.captured,
            captured_at: frame.captured_at,
            image: frame.rgb.clone(),
            tracks: tracked.tracks.iter().filter(|t| firing.track_ids.contains(&t.id)).cloned().collect(),
            zones: engine
                .rule
                .conditions
                .zones
                .iter()
                .filter(|z| z.space == ZoneSpace::Image)
                .map(|z| z.points.iter().map(|p| (p[0], p[1])).collect())
                .collect(),
            zone_names: engine
                .rule
                .conditions
                .zones
                .iter()
                .filter(|z| z.space == ZoneSpace::Image)
                .filter_map(|z| {
                    let polygon: Vec<(f32, f32)> = z.points.iter().map(|p| (p[0], p[1])).collect();
                    let inside = tracked
                        .tracks
                        .iter()
                        .any(|t| firing.track_ids.contains(&t.id) && point_in_polygon(t.foot(), &polygon));
                    inside.then(|| z.name.clone()).flatten()
                })
                .collect(),
            sound: engine.rule.sound.clone(),
            priority: engine.rule.priority,
        };
        match ractor::registry::where_is(ALERTS) {
            Some(cell) => ActorRef::<AlertsMsg>::from(cell).cast(AlertsMsg::Alert(Box::new(alert)))?,
            None => tracing::error!(rule = %engine.rule.name, "alert raised while the alerts actor is down"),
        }
        Ok(())
    }
}
