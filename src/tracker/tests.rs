//! Tracker properties on synthetic box sequences.

use super::*;
use proptest::prelude::{prop_assert, prop_assert_eq, proptest};

fn person(b: [f32; 4]) -> Detection {
    Detection { class_id: 0, class_name: "person", confidence: 0.8, bbox: b }
}

fn pixels(p: (f32, f32)) -> (f32, f32) {
    p
}

fn step(t0: Instant, i: u64) -> Instant {
    t0 + Duration::from_millis(i * 67)
}

proptest! {
    #[test]
    fn one_object_moving_linearly_keeps_one_id(
        x0 in 0f32..300.0, y0 in 0f32..300.0, vx in -12f32..12.0, vy in -6f32..6.0,
        w in 20f32..80.0, h in 40f32..160.0, frames in 5u64..60,
    ) {
        let mut tracker = Tracker::new(TrackerSettings::default());
        let t0 = Instant::now();
        let mut ids = Vec::new();
        for i in 0..frames {
            let (x, y) = (x0 + vx * i as f32, y0 + vy * i as f32);
            tracker.update(&[person([x, y, x + w, y + h])], step(t0, i), &pixels);
            ids.extend(tracker.active().map(|t| t.id));
        }
        ids.dedup();
        prop_assert_eq!(ids, vec![1]);
    }

    #[test]
    fn a_missed_frame_does_not_change_the_id(
        vx in 2f32..10.0, missing in 3u64..20,
    ) {
        let mut tracker = Tracker::new(TrackerSettings::default());
        let t0 = Instant::now();
        let mut ids = Vec::new();
        for i in 0..30 {
            if i == missing {
                tracker.update(&[], step(t0, i), &pixels);
                continue;
            }
            let x = 50.0 + vx * i as f32;
            tracker.update(&[person([x, 100.0, x + 40.0, 200.0])], step(t0, i), &pixels);
            ids.extend(tracker.active().map(|t| t.id));
        }
        ids.dedup();
        prop_assert_eq!(ids, vec![1]);
    }

    #[test]
    fn two_crossing_objects_keep_their_ids(
        speed in 4f32..10.0, dy in 30f32..70.0,
    ) {
        // A walks right, B walks left, B a little lower: they overlap midway.
        let mut tracker = Tracker::new(TrackerSettings::default());
        let t0 = Instant::now();
        let frames = (400.0 / speed) as u64;
        let mut first: Option<(u64, u64)> = None;
        for i in 0..frames {
            let ax = 50.0 + speed * i as f32;
            let bx = 450.0 - speed * i as f32;
            let dets = [person([ax, 100.0, ax + 40.0, 200.0]), person([bx, 100.0 + dy, bx + 40.0, 200.0 + dy])];
            tracker.update(&dets, step(t0, i), &pixels);
            let find = |x: f32, y: f32| tracker.active().find(|t| (t.bbox[0] - x).abs() < 1.0 && (t.bbox[1] - y).abs() < 1.0).map(|t| t.id);
            if let (Some(a), Some(b)) = (find(ax, 100.0), find(bx, 100.0 + dy)) {
                match first {
                    None => first = Some((a, b)),
                    Some(ids) => prop_assert_eq!(ids, (a, b), "swapped at frame {}", i),
                }
            }
        }
        prop_assert!(first.is_some());
    }
}

#[test]
fn lost_tracks_are_removed_after_their_ttl() {
    let mut tracker = Tracker::new(TrackerSettings { lost_ttl: Duration::from_secs(1), ..TrackerSettings::default() });
    let t0 = Instant::now();
    for i in 0..3 {
        tracker.update(&[person([10.0, 10.0, 50.0, 110.0])], step(t0, i), &pixels);
    }
    tracker.update(&[], t0 + Duration::from_millis(500), &pixels);
    assert_eq!(tracker.tracks()[0].state, TrackState::Lost);
    tracker.update(&[], t0 + Duration::from_secs(2), &pixels);
    assert!(tracker.tracks().is_empty());
}

#[test]
fn a_parked_object_becomes_stationary() {
    let settings = TrackerSettings {
        stationary_radius: 5.0,
        stationary_after: Duration::from_secs(10),
        ..TrackerSettings::default()
    };
    let mut tracker = Tracker::new(settings);
    let t0 = Instant::now();
    let car = |jitter: f32| Detection {
        class_id: 2,
        class_name: "car",
        confidence: 0.9,
        bbox: [100.0 + jitter, 50.0, 200.0, 120.0],
    };
    for i in 0..200u64 {
        tracker.update(&[car((i % 3) as f32)], t0 + Duration::from_millis(i * 100), &pixels);
    }
    let t = tracker.active().next().unwrap();
    assert!(t.stationary, "still for 20 s");
    tracker.update(&[car(40.0)], t0 + Duration::from_millis(200 * 100), &pixels);
    assert!(!tracker.active().next().unwrap().stationary, "it moved");
}
