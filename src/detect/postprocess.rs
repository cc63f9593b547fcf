//! From the network's `[1, 4 + classes, anchors]` output to detections:
//! best class per anchor, confidence filter, per-class NMS, `max_det`, and
//! boxes mapped back to original-image pixels (Ultralytics'
//! `non_max_suppression` + `scale_boxes`).

use super::preprocess::Letterbox;
use serde::Serialize;

/// One detected object.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Detection {
    #[serde(skip)]
    pub class_id: usize,
    #[serde(rename = "class")]
    pub class_name: &'static str,
    pub confidence: f32,
    /// `[x1, y1, x2, y2]` in original-image pixels.
    #[serde(rename = "box")]
    pub bbox: [f32; 4],
}

/// Thresholds for [`decode`].
#[derive(Debug, Clone, PartialEq)]
pub struct DecodeOptions {
    pub confidence: f32,
    pub iou: f32,
    pub max_det: usize,
    /// Keep only these class ids; `None` keeps all.
    pub classes: Option<Vec<usize>>,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        Self { confidence: 0.25, iou: 0.7, max_det: 300, classes: None }
    }
}

/// Decodes one image's output, `data` laid out `[4 + classes][anchors]`.
pub fn decode(data: &[f32], anchors: usize, lb: &Letterbox, opts: &DecodeOptions) -> Vec<Detection> {
    let rows = data.len() / anchors.max(1);
    let classes = rows.saturating_sub(4);
    let at = |row: usize, a: usize| data[row * anchors + a];
    let mut candidates: Vec<(usize, f32, [f32; 4])> = Vec::new();
    for a in 0..anchors {
        let mut best = (0, f32::MIN);
        for c in 0..classes {
            let score = at(4 + c, a);
            if score > best.1 {
                best = (c, score);
            }
        }
        if best.1 <= opts.confidence || opts.classes.as_ref().is_some_and(|keep| !keep.contains(&best.0)) {
            continue;
        }
        let (cx, cy, w, h) = (at(0, a), at(1, a), at(2, a), at(3, a));
        candidates.push((best.0, best.1, [cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0]));
    }
    candidates.sort_by(|a, b| b.1.total_cmp(&a.1));

    let mut kept: Vec<(usize, f32, [f32; 4])> = Vec::new();
    for cand in candidates {
        if kept.len() >= opts.max_det {
            break;
        }
        if kept.iter().all(|k| k.0 != cand.0 || iou(&k.2, &cand.2) <= opts.iou) {
            kept.push(cand);
        }
    }
    kept.into_iter()
        .map(|(class_id, confidence, b)| Detection {
            class_id,
            class_name: crate::coco::CLASSES.get(class_id).copied().unwrap_or("unknown"),
            confidence,
            bbox: lb.to_original(b),
        })
        .collect()
}

/// Intersection over union of two `xyxy` boxes.
pub fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let w = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let h = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = w * h;
    let union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter;
    if union <= 0.0 { 0.0 } else { inter / union }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::preprocess::LetterboxMode;

    /// Output for 3 anchors and 2 classes, in `[6][3]` layout.
    fn output(anchors: &[([f32; 4], [f32; 2])]) -> Vec<f32> {
        let n = anchors.len();
        let mut data = vec![0.0; 6 * n];
        for (a, (b, s)) in anchors.iter().enumerate() {
            for r in 0..4 {
                data[r * n + a] = b[r];
            }
            data[4 * n + a] = s[0];
            data[5 * n + a] = s[1];
        }
        data
    }

    #[test]
    fn nms_is_per_class_and_sorted() {
        let lb = Letterbox::new(100, 100, 100, LetterboxMode::Square);
        let data = output(&[
            ([50.0, 50.0, 20.0, 20.0], [0.6, 0.1]),
            ([51.0, 50.0, 20.0, 20.0], [0.9, 0.1]), // overlaps the first: suppresses it
            ([51.0, 50.0, 20.0, 20.0], [0.1, 0.8]), // same place, other class: kept
            ([10.0, 10.0, 4.0, 4.0], [0.2, 0.1]),   // below the threshold
        ]);
        let dets = decode(&data, 4, &lb, &DecodeOptions::default());
        let summary: Vec<(usize, f32)> = dets.iter().map(|d| (d.class_id, d.confidence)).collect();
        assert_eq!(summary, [(0, 0.9), (1, 0.8)]);
        assert_eq!(dets[0].bbox, [41.0, 40.0, 61.0, 60.0]);

        let only_second = DecodeOptions { classes: Some(vec![1]), ..Default::default() };
        assert_eq!(decode(&data, 4, &lb, &only_second).len(), 1);
        let one = DecodeOptions { max_det: 1, ..Default::default() };
        assert_eq!(decode(&data, 4, &lb, &one).len(), 1);
    }

    #[test]
    fn iou_of_known_boxes() {
        assert_eq!(iou(&[0.0, 0.0, 2.0, 2.0], &[1.0, 0.0, 3.0, 2.0]), 2.0 / 6.0);
        assert_eq!(iou(&[0.0, 0.0, 1.0, 1.0], &[2.0, 2.0, 3.0, 3.0]), 0.0);
    }
}
