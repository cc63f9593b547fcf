//! A table of rule conditions, with injected time.

use super::*;
use crate::calibration::{Calibration, Homography};
use crate::config::AlertRuleConfig;
use chrono::NaiveDate;
use nalgebra::Matrix3;

fn rule(yaml_conditions: serde_json::Value, extra: serde_json::Value) -> AlertRuleConfig {
    let mut v = serde_json::json!({ "name": "r", "conditions": yaml_conditions, "cooldown": "30s" });
    if let (Some(obj), Some(more)) = (v.as_object_mut(), extra.as_object()) {
        obj.extend(more.clone());
    }
    serde_json::from_value(v).unwrap()
}

/// 1 px = 1 cm on the ground; the door at (1 m, 1 m).
fn calibrations() -> Arc<HashMap<String, Calibration>> {
    let cal = Calibration {
        homography: Homography(Matrix3::new(0.01, 0.0, 0.0, 0.0, 0.01, 0.0, 0.0, 0.0, 1.0)),
        references: [("door".to_owned(), (1.0, 1.0))].into_iter().collect(),
    };
    Arc::new([("cam".to_owned(), cal)].into_iter().collect())
}

fn person(id: u64, foot: (f32, f32), confidence: f32) -> TrackView {
    TrackView {
        id,
        class_name: "person",
        confidence,
        bbox: [foot.0 - 10.0, foot.1 - 50.0, foot.0 + 10.0, foot.1],
        stationary: false,
    }
}

fn noon() -> NaiveDateTime {
    // A Wednesday.
    NaiveDate::from_ymd_opt(2026, 11, 25).unwrap().and_hms_opt(12, 0, 0).unwrap()
}

struct Case {
    name: &'static str,
    rule: AlertRuleConfig,
    /// (seconds after start, tracks, local time, expect a firing)
    frames: Vec<(u64, Vec<TrackView>, NaiveDateTime, bool)>,
}

#[test]
fn conditions_table() {
    let cam: Arc<str> = Arc::from("cam");
    let at = |h: u32, m: u32| noon().date().and_hms_opt(h, m, 0).unwrap();
    let p = |id, x, y| person(id, (x, y), 0.8);
    let mut parked = p(7, 100.0, 100.0);
    parked.stationary = true;
    let mut car = p(8, 100.0, 100.0);
    car.class_name = "car";
    let cases = vec![
        Case {
            name: "class matches",
            rule: rule(serde_json::json!({"classes": ["person"]}), serde_json::json!({})),
            frames: vec![(0, vec![p(1, 10.0, 10.0)], noon(), true)],
        },
        Case {
            name: "class does not match",
            rule: rule(serde_json::json!({"classes": ["dog"]}), serde_json::json!({})),
            frames: vec![(0, vec![p(1, 10.0, 10.0), car.clone()], noon(), false)],
        },
        Case {
            name: "min_confidence",
            rule: rule(serde_json::json!({"min_confidence": 0.85}), serde_json::json!({})),
            frames: vec![
                (0, vec![person(1, (5.0, 5.0), 0.8)], noon(), false),
                (1, vec![person(1, (5.0, 5.0), 0.9)], noon(), true),
            ],
        },
        Case {
            name: "image zone",
            rule: rule(
                serde_json::json!({"zones": [{"points": [[0, 0], [50, 0], [50, 50], [0, 50]]}]}),
                serde_json::json!({}),
            ),
            frames: vec![(0, vec![p(1, 80.0, 80.0)], noon(), false), (1, vec![p(1, 20.0, 20.0)], noon(), true)],
        },
        Case {
            name: "ground zone",
            rule: rule(
                serde_json::json!({"zones": [{"space": "ground", "points": [[0, 0], [0.5, 0], [0.5, 0.5], [0, 0.5]]}]}),
                serde_json::json!({}),
            ),
            frames: vec![(0, vec![p(1, 80.0, 80.0)], noon(), false), (1, vec![p(1, 20.0, 20.0)], noon(), true)],
        },
        Case {
            name: "closer than 0.5 m to the door",
            rule: rule(
                serde_json::json!({"distance_to_reference": {"reference": "door", "operator": "lt", "value": 0.5}}),
                serde_json::json!({}),
            ),
            frames: vec![(0, vec![p(1, 10.0, 10.0)], noon(), false), (1, vec![p(1, 90.0, 110.0)], noon(), true)],
        },
        Case {
            name: "further than 1 m from the door",
            rule: rule(
                serde_json::json!({"distance_to_reference": {"operator": "gt", "value": 1.0}}),
                serde_json::json!({}),
            ),
            frames: vec![(0, vec![p(1, 90.0, 110.0)], noon(), false), (1, vec![p(1, 0.0, 0.0)], noon(), true)],
        },
        Case {
            name: "dwell of 5 s",
            rule: rule(serde_json::json!({"min_dwell": "5s"}), serde_json::json!({})),
            frames: vec![
                (0, vec![p(1, 1.0, 1.0)], noon(), false),
                (3, vec![p(1, 1.0, 1.0)], noon(), false),
                (4, vec![], noon(), false),
                (5, vec![p(1, 1.0, 1.0)], noon(), false),
                (10, vec![p(1, 1.0, 1.0)], noon(), true),
            ],
        },
        Case {
            name: "at least 2 people",
            rule: rule(serde_json::json!({"min_count": 2}), serde_json::json!({})),
            frames: vec![
                (0, vec![p(1, 1.0, 1.0)], noon(), false),
                (1, vec![p(1, 1.0, 1.0), p(2, 9.0, 9.0)], noon(), true),
            ],
        },
        Case {
            name: "night schedule wrapping midnight on weekdays",
            rule: rule(
                serde_json::json!({"schedule": {"days": ["mon", "tue", "wed"], "hours": "22:00-06:00"}}),
                serde_json::json!({}),
            ),
            frames: vec![
                (0, vec![p(1, 1.0, 1.0)], noon(), false),
                (1, vec![p(1, 1.0, 1.0)], at(23, 0), true),
                // Thursday 05:00 belongs to Wednesday's night.
                (100, vec![p(1, 1.0, 1.0)], noon().date().succ_opt().unwrap().and_hms_opt(5, 0, 0).unwrap(), true),
            ],
        },
        Case {
            name: "cooldown per camera",
            rule: rule(serde_json::json!({}), serde_json::json!({})),
            frames: vec![
                (0, vec![p(1, 1.0, 1.0)], noon(), true),
                (10, vec![p(2, 1.0, 1.0)], noon(), false),
                (29, vec![p(2, 1.0, 1.0)], noon(), false),
                (30, vec![p(2, 1.0, 1.0)], noon(), true),
            ],
        },
        Case {
            name: "cooldown per track",
            rule: rule(serde_json::json!({}), serde_json::json!({"cooldown_per_track": true})),
            frames: vec![
                (0, vec![p(1, 1.0, 1.0)], noon(), true),
                (10, vec![p(1, 1.0, 1.0)], noon(), false),
                (11, vec![p(1, 1.0, 1.0), p(2, 5.0, 5.0)], noon(), true),
                (12, vec![p(1, 1.0, 1.0), p(2, 5.0, 5.0)], noon(), false),
            ],
        },
        Case {
            name: "a parked object does not alert",
            rule: rule(serde_json::json!({}), serde_json::json!({})),
            frames: vec![(0, vec![parked.clone()], noon(), false)],
        },
        Case {
            name: "unless asked to",
            rule: rule(serde_json::json!({}), serde_json::json!({"ignore_stationary": false})),
            frames: vec![(0, vec![parked], noon(), true)],
        },
        Case {
            name: "another camera",
            rule: rule(serde_json::json!({}), serde_json::json!({"cameras": ["other"]})),
            frames: vec![(0, vec![p(1, 1.0, 1.0)], noon(), false)],
        },
    ];
    let t0 = Instant::now();
    let mut failures = Vec::new();
    for case in cases {
        let mut engine = RuleEngine::new(case.rule, calibrations());
        for (i, (secs, tracks, local, expect)) in case.frames.into_iter().enumerate() {
            let fired = engine.evaluate(&cam, &tracks, t0 + Duration::from_secs(secs), local).is_some();
            if fired != expect {
                failures.push(format!("{}: frame {i} at {secs}s: fired {fired}, expected {expect}", case.name));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_firing_reports_the_distance_and_best_object() {
    let mut engine = RuleEngine::new(
        rule(
            serde_json::json!({"distance_to_reference": {"reference": "door", "operator": "lt", "value": 2.0}}),
            serde_json::json!({}),
        ),
        calibrations(),
    );
    let tracks = [person(1, (100.0, 100.0), 0.6), person(2, (100.0, 120.0), 0.9)];
    let firing = engine.evaluate(&Arc::from("cam"), &tracks, Instant::now(), noon()).unwrap();
    assert_eq!(firing.track_ids, vec![2, 1]);
    assert_eq!(firing.confidence, 0.9);
    assert!((firing.distance_m.unwrap() - 0.2).abs() < 1e-6, "{firing:?}");
}

#[test]
fn per_track_cooldowns_are_forgotten_once_they_run_out() {
    let mut engine =
        RuleEngine::new(rule(serde_json::json!({}), serde_json::json!({"cooldown_per_track": true})), calibrations());
    let cam: Arc<str> = Arc::from("cam");
    let t0 = Instant::now();
    // A thousand people pass one after another, a minute apart.
    for i in 0..1000u64 {
        let now = t0 + Duration::from_secs(60 * i);
        assert!(engine.evaluate(&cam, &[person(i, (100.0, 100.0), 0.9)], now, noon()).is_some());
    }
    // Only the cooldowns still running (30 s) are kept, not one per track ever seen.
    assert_eq!(engine.cooldowns.len(), 1);
}
