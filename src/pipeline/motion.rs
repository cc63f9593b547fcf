//! The motion gate: detection runs only on frames where something moved, so
//! a static scene costs almost nothing.
//!
//! Per camera, on the small grayscale frame: a running-average background,
//! an absolute-difference threshold, a square dilation that joins nearby
//! changed pixels, and a minimum changed area. Mask polygons (in the pixels
//! of the analysed frame) are ignored. A `keepalive` still lets a frame
//! through now and then on a static scene, so tracked objects refresh.

use std::time::{Duration, Instant};

#[derive(Debug, Clone, PartialEq)]
pub struct MotionSettings {
    /// Per-pixel difference from the background that counts as change (0–255).
    pub threshold: u8,
    /// Fraction of the (unmasked) frame that must change.
    pub min_area: f32,
    /// Dilation radius in gate pixels.
    pub dilate: usize,
    /// How fast the background follows the scene (0–1 per frame).
    pub learning_rate: f32,
    /// Let a frame through at least this often.
    pub keepalive: Duration,
}

impl Default for MotionSettings {
    fn default() -> Self {
        Self { threshold: 25, min_area: 0.001, dilate: 1, learning_rate: 0.05, keepalive: Duration::from_secs(10) }
    }
}

/// Why a frame passed or not.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum GateDecision {
    /// This fraction of the frame changed.
    Motion(f32),
    /// Static, but the keepalive is due.
    Keepalive,
    Static,
}

impl GateDecision {
    pub fn passes(self) -> bool {
        !matches!(self, Self::Static)
    }
}

pub struct MotionGate {
    settings: MotionSettings,
    /// Polygons in the coordinates of a frame `frame_w`×`frame_h`.
    masks: Vec<Vec<(f32, f32)>>,
    frame_w: u32,
    background: Vec<f32>,
    /// Masked-out pixels, for the current gate size.
    ignore: Vec<bool>,
    size: (usize, usize),
    last_pass: Option<Instant>,
    changed: Vec<bool>,
}

impl MotionGate {
    /// `masks` are polygons in the pixels of frames `frame_w` wide.
    pub fn new(settings: MotionSettings, masks: Vec<Vec<(f32, f32)>>, frame_w: u32) -> Self {
        Self {
            settings,
            masks,
            frame_w,
            background: Vec::new(),
            ignore: Vec::new(),
            size: (0, 0),
            last_pass: None,
            changed: Vec::new(),
        }
    }

    /// Looks at one grayscale frame.
    pub fn check(&mut self, gray: &[u8], w: usize, h: usize, now: Instant) -> GateDecision {
        if self.size != (w, h) || self.background.len() != gray.len() {
            self.reset(gray, w, h);
            self.last_pass = Some(now);
            return GateDecision::Motion(1.0);
        }
        let threshold = self.settings.threshold as f32;
        for (i, (&px, bg)) in gray.iter().zip(&self.background).enumerate() {
            self.changed[i] = !self.ignore[i] && (px as f32 - bg).abs() > threshold;
        }
        let area = dilated_count(&self.changed, w, h, self.settings.dilate);
        let usable = self.ignore.iter().filter(|m| !**m).count().max(1);
        let fraction = area as f32 / usable as f32;
        let rate = self.settings.learning_rate;
        for (bg, &px) in self.background.iter_mut().zip(gray) {
            *bg += rate * (px as f32 - *bg);
        }
        let decision = if fraction >= self.settings.min_area {
            GateDecision::Motion(fraction)
        } else if self.last_pass.is_none_or(|t| now.duration_since(t) >= self.settings.keepalive) {
            GateDecision::Keepalive
        } else {
            GateDecision::Static
        };
        if decision.passes() {
            self.last_pass = Some(now);
        }
        decision
    }

    fn reset(&mut self, gray: &[u8], w: usize, h: usize) {
        self.size = (w, h);
        self.background = gray.iter().map(|&p| p as f32).collect();
        self.changed = vec![false; gray.len()];
        let scale = w as f32 / self.frame_w.max(1) as f32;
        self.ignore = (0..h)
            .flat_map(|y| (0..w).map(move |x| (x, y)))
            .map(|(x, y)| {
                let p = ((x as f32 + 0.5) / scale, (y as f32 + 0.5) / scale);
                self.masks.iter().any(|poly| point_in_polygon(p, poly))
            })
            .collect();
    }
}

/// Changed pixels after a square dilation of `radius`, counted.
fn dilated_count(changed: &[bool], w: usize, h: usize, radius: usize) -> usize {
    if radius == 0 {
        return changed.iter().filter(|c| **c).count();
    }
    // Separable max filter: rows, then columns.
    let mut rows = vec![false; changed.len()];
    for y in 0..h {
        for x in 0..w {
            let (lo, hi) = (x.saturating_sub(radius), (x + radius).min(w - 1));
            rows[y * w + x] = changed[y * w + lo..=y * w + hi].iter().any(|c| *c);
        }
    }
    let mut count = 0;
    for x in 0..w {
        for y in 0..h {
            let (lo, hi) = (y.saturating_sub(radius), (y + radius).min(h - 1));
            if (lo..=hi).any(|yy| rows[yy * w + x]) {
                count += 1;
            }
        }
    }
    count
}

/// Even-odd rule.
pub fn point_in_polygon((x, y): (f32, f32), poly: &[(f32, f32)]) -> bool {
    let mut inside = false;
    let mut j = poly.len().wrapping_sub(1);
    for i in 0..poly.len() {
        let ((xi, yi), (xj, yj)) = (poly[i], poly[j]);
        if (yi > y) != (yj > y) && x < (xj - xi) * (y - yi) / (yj - yi) + xi {
            inside = !inside;
        }
        j = i;
    }
    inside
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(w: usize, h: usize, square: Option<(usize, usize)>) -> Vec<u8> {
        let mut f = vec![100u8; w * h];
        if let Some((sx, sy)) = square {
            for y in sy..sy + 8 {
                for x in sx..sx + 8 {
                    f[y * w + x] = 220;
                }
            }
        }
        f
    }

    #[test]
    fn static_scene_is_skipped_until_keepalive() {
        let mut gate = MotionGate::new(MotionSettings::default(), vec![], 160);
        let t0 = Instant::now();
        assert!(gate.check(&frame(160, 120, None), 160, 120, t0).passes(), "first frame initialises");
        for i in 1..50 {
            let d = gate.check(&frame(160, 120, None), 160, 120, t0 + Duration::from_millis(100 * i));
            assert_eq!(d, GateDecision::Static);
        }
        let d = gate.check(&frame(160, 120, None), 160, 120, t0 + Duration::from_secs(11));
        assert_eq!(d, GateDecision::Keepalive);
    }

    #[test]
    fn moving_square_passes_and_a_masked_one_does_not() {
        let t0 = Instant::now();
        let mut gate = MotionGate::new(MotionSettings::default(), vec![], 160);
        gate.check(&frame(160, 120, None), 160, 120, t0);
        assert!(matches!(gate.check(&frame(160, 120, Some((40, 40))), 160, 120, t0), GateDecision::Motion(_)));

        // Mask the left half, in the coordinates of a 640-wide frame.
        let mask = vec![(0.0, 0.0), (320.0, 0.0), (320.0, 480.0), (0.0, 480.0)];
        let mut gate = MotionGate::new(MotionSettings::default(), vec![mask], 640);
        gate.check(&frame(160, 120, None), 160, 120, t0);
        assert_eq!(gate.check(&frame(160, 120, Some((20, 40))), 160, 120, t0), GateDecision::Static);
        assert!(gate.check(&frame(160, 120, Some((120, 40))), 160, 120, t0).passes());
    }

    #[test]
    fn polygon_containment() {
        let tri = [(0.0, 0.0), (10.0, 0.0), (0.0, 10.0)];
        assert!(point_in_polygon((2.0, 2.0), &tri));
        assert!(!point_in_polygon((8.0, 8.0), &tri));
    }
}
