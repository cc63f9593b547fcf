//! Tracked objects as Frigate publishes them: `<prefix>/events` with `new`
//! when a track is confirmed, `update` when its best score or its zones
//! change, `end` when it ends; and the count of objects per label on
//! `<prefix>/<camera>/<label>` and `<prefix>/<camera>/all`.
//!
//! Plain code: the tracker actor feeds it every analysed frame of a camera.

use crate::pipeline::motion::point_in_polygon;
use crate::rules::TrackView;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// A best score must improve by this much to be worth an `update`.
const SCORE_STEP: f32 = 0.02;

/// One named zone of a camera, in analysed-frame pixels.
#[derive(Debug, Clone)]
pub struct Zone {
    pub name: String,
    pub polygon: Vec<(f32, f32)>,
}

/// The named image-space zones of the rules that watch `camera`.
pub fn zones_for(config: &crate::config::Config, camera: &str) -> Vec<Zone> {
    let mut zones: Vec<Zone> = Vec::new();
    for rule in &config.alert_rules {
        if !(rule.cameras.is_empty() || rule.cameras.iter().any(|c| c == camera)) {
            continue;
        }
        for zone in &rule.conditions.zones {
            let (Some(name), crate::config::ZoneSpace::Image) = (&zone.name, zone.space) else { continue };
            if zones.iter().all(|z| &z.name != name) {
                zones.push(Zone { name: name.clone(), polygon: zone.points.iter().map(|p| (p[0], p[1])).collect() });
            }
        }
    }
    zones
}

struct Object {
    id: String,
    start_time: f64,
    top_score: f32,
    entered: BTreeSet<String>,
    last: Value,
}

/// One camera's objects and counts, and what changed with each frame.
pub struct ObjectFeed {
    camera: String,
    zones: Vec<Zone>,
    objects: HashMap<u64, Object>,
    /// Counts last published; labels once seen stay, so they can go to 0.
    counts: BTreeMap<&'static str, usize>,
}

/// A message for the bus: subtopic, payload, retained.
pub type Out = (String, Vec<u8>, bool);

impl ObjectFeed {
    pub fn new(camera: &str, zones: Vec<Zone>) -> Self {
        Self { camera: camera.to_owned(), zones, objects: HashMap::new(), counts: BTreeMap::new() }
    }

    /// One analysed frame at `frame_time` (Unix seconds): its active tracks,
    /// and the ids of the tracks that ended with it.
    pub fn frame(&mut self, frame_time: f64, tracks: &[TrackView], ended: &[u64]) -> Vec<Out> {
        let mut out = Vec::new();
        for track in tracks {
            let current = self.current_zones(track);
            let event = match self.objects.get_mut(&track.id) {
                None => {
                    let mut object = Object {
                        id: format!("{frame_time:.6}-{}", track.id),
                        start_time: frame_time,
                        top_score: track.confidence,
                        entered: current.iter().cloned().collect(),
                        last: Value::Null,
                    };
                    object.last = describe(&self.camera, &object, track, frame_time, &current);
                    let message = json!({ "type": "new", "before": object.last, "after": object.last });
                    self.objects.insert(track.id, object);
                    Some(message)
                }
                Some(object) => {
                    let better = track.confidence >= object.top_score + SCORE_STEP;
                    object.top_score = object.top_score.max(track.confidence);
                    let was_in: Vec<String> = zone_list(&object.last, "current_zones");
                    let moved = was_in != current;
                    let was_stationary = object.last["stationary"].as_bool() == Some(true);
                    object.entered.extend(current.iter().cloned());
                    if better || moved || was_stationary != track.stationary {
                        let after = describe(&self.camera, object, track, frame_time, &current);
                        let before = std::mem::replace(&mut object.last, after.clone());
                        Some(json!({ "type": "update", "before": before, "after": after }))
                    } else {
                        None
                    }
                }
            };
            if let Some(event) = event {
                out.push(("events".to_owned(), event.to_string().into_bytes(), false));
            }
        }
        for id in ended {
            if let Some(object) = self.objects.remove(id) {
                let mut after = object.last.clone();
                after["end_time"] = json!(frame_time);
                after["frame_time"] = json!(frame_time);
                let message = json!({ "type": "end", "before": object.last, "after": after });
                out.push(("events".to_owned(), message.to_string().into_bytes(), false));
            }
        }
        // Tracks that vanished without an end (a tracker restart) go quietly.
        self.objects.retain(|id, _| tracks.iter().any(|t| t.id == *id));
        out.extend(self.counts(tracks));
        out
    }

    fn counts(&mut self, tracks: &[TrackView]) -> Vec<Out> {
        let mut now: BTreeMap<&'static str, usize> = self.counts.keys().map(|k| (*k, 0)).collect();
        for track in tracks {
            *now.entry(track.class_name).or_default() += 1;
        }
        let mut out = Vec::new();
        let all_before: usize = self.counts.values().sum();
        for (label, count) in &now {
            if self.counts.get(label) != Some(count) {
                out.push((format!("{}/{label}", self.camera), count.to_string().into_bytes(), true));
            }
        }
        let all: usize = now.values().sum();
        if all != all_before || self.counts.is_empty() && !now.is_empty() {
            out.push((format!("{}/all", self.camera), all.to_string().into_bytes(), true));
        }
        self.counts = now;
        out
    }

    fn current_zones(&self, track: &TrackView) -> Vec<String> {
        let foot = track.foot();
        self.zones.iter().filter(|z| point_in_polygon(foot, &z.polygon)).map(|z| z.name.clone()).collect()
    }
}

/// An object as Frigate describes it; `end_time` is set by the `end` event.
fn describe(camera: &str, object: &Object, track: &TrackView, frame_time: f64, current: &[String]) -> Value {
    let [x1, y1, x2, y2] = track.bbox;
    json!({
        "id": object.id,
        "camera": camera,
        "frame_time": frame_time,
        "label": track.class_name,
        "score": track.confidence,
        "top_score": object.top_score,
        "box": [x1.round(), y1.round(), x2.round(), y2.round()],
        "area": ((x2 - x1).max(0.0) * (y2 - y1).max(0.0)).round(),
        "current_zones": current,
        "entered_zones": object.entered,
        "start_time": object.start_time,
        "end_time": Value::Null,
        "stationary": track.stationary,
        "has_snapshot": false,
        "false_positive": false,
    })
}

fn zone_list(object: &Value, key: &str) -> Vec<String> {
    object[key].as_array().map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn track(id: u64, confidence: f32, x: f32) -> TrackView {
        TrackView { id, class_name: "person", confidence, bbox: [x, 100.0, x + 40.0, 200.0], stationary: false }
    }

    fn events(out: &[Out]) -> Vec<Value> {
        out.iter().filter(|(t, _, _)| t == "events").map(|(_, p, _)| serde_json::from_slice(p).unwrap()).collect()
    }

    fn counts(out: &[Out]) -> Vec<(String, String)> {
        out.iter()
            .filter(|(t, _, _)| t != "events")
            .map(|(t, p, retain)| {
                assert!(retain);
                (t.clone(), String::from_utf8(p.clone()).unwrap())
            })
            .collect()
    }

    #[test]
    fn a_track_is_new_then_updated_on_a_better_score_or_a_zone_then_ends() {
        let zones =
            vec![Zone { name: "porch".into(), polygon: vec![(0.0, 0.0), (100.0, 0.0), (100.0, 300.0), (0.0, 300.0)] }];
        let mut feed = ObjectFeed::new("front", zones);
        let out = feed.frame(10.0, &[track(7, 0.6, 200.0)], &[]);
        let new = &events(&out)[0];
        assert_eq!(new["type"], "new");
        assert_eq!(new["after"]["label"], "person");
        assert_eq!(new["after"]["camera"], "front");
        assert_eq!(new["after"]["box"], json!([200.0, 100.0, 240.0, 200.0]));
        assert_eq!(new["after"]["area"], json!(4000.0));
        assert_eq!(new["after"]["end_time"], Value::Null);
        assert_eq!(counts(&out), [("front/person".into(), "1".into()), ("front/all".into(), "1".into())]);

        // Same score, same place: nothing to say.
        assert!(feed.frame(10.1, &[track(7, 0.6, 201.0)], &[]).is_empty());
        // A better score.
        let update = &events(&feed.frame(10.2, &[track(7, 0.8, 202.0)], &[]))[0];
        assert_eq!(update["type"], "update");
        assert_eq!(update["before"]["top_score"].as_f64().map(|s| (s * 10.0).round()), Some(6.0));
        assert_eq!(update["after"]["top_score"].as_f64().map(|s| (s * 10.0).round()), Some(8.0));
        // Into the porch: the zone shows up, current and entered.
        let update = &events(&feed.frame(10.3, &[track(7, 0.8, 20.0)], &[]))[0];
        assert_eq!(update["after"]["current_zones"], json!(["porch"]));
        assert_eq!(update["after"]["entered_zones"], json!(["porch"]));
        // Out again: current empties, entered stays.
        let update = &events(&feed.frame(10.4, &[track(7, 0.8, 300.0)], &[]))[0];
        assert_eq!(update["after"]["current_zones"], json!([]));
        assert_eq!(update["after"]["entered_zones"], json!(["porch"]));

        let out = feed.frame(11.0, &[], &[7]);
        let end = &events(&out)[0];
        assert_eq!(end["type"], "end");
        assert_eq!(end["after"]["end_time"], json!(11.0));
        assert_eq!(end["after"]["id"], new["after"]["id"]);
        assert_eq!(counts(&out), [("front/person".into(), "0".into()), ("front/all".into(), "0".into())]);
        // Nothing changes, nothing is sent.
        assert!(feed.frame(11.1, &[], &[]).is_empty());
    }

    #[test]
    fn rule_zones_with_names_in_image_space_are_the_cameras_zones() {
        let config: crate::config::Config = serde_yaml_like(
            r#"{"alert_rules": [
                {"name": "a", "cameras": ["front"], "conditions": {"zones": [{"name": "porch", "points": [[0,0],[1,0],[0,1]]}, {"points": [[0,0],[1,0],[0,1]]}]}},
                {"name": "b", "conditions": {"zones": [{"name": "drive", "points": [[0,0],[1,0],[0,1]]}, {"name": "lawn", "space": "ground", "points": [[0,0],[1,0],[0,1]]}]}},
                {"name": "c", "cameras": ["back"], "conditions": {"zones": [{"name": "shed", "points": [[0,0],[1,0],[0,1]]}]}}
            ]}"#,
        );
        let names: Vec<String> = zones_for(&config, "front").into_iter().map(|z| z.name).collect();
        assert_eq!(names, ["porch", "drive"]);
    }

    fn serde_yaml_like(json: &str) -> crate::config::Config {
        serde_json::from_str(json).unwrap()
    }
}
