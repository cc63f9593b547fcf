//! Alert snapshots: `data/snapshots/YYYY-MM-DD/<camera>_<HHMMSS>_<rule>.jpg`,
//! the frame with the triggering objects boxed and labelled and the rule's
//! zones outlined.

use super::Alert;
use crate::draw::{class_colour, draw_box, draw_detection};
use chrono::{DateTime, Local};
use image::{Rgb, RgbImage};
use std::path::{Path, PathBuf};

/// Where the snapshot of `alert` goes (not yet taken by another file).
pub fn path_for(snapshots: &Path, alert: &Alert) -> PathBuf {
    let local = DateTime::<Local>::from(alert.captured);
    let dir = snapshots.join(local.format("%Y-%m-%d").to_string());
    let stem = format!("{}_{}_{}", alert.camera, local.format("%H%M%S"), sanitize(&alert.rule));
    let mut path = dir.join(format!("{stem}.jpg"));
    let mut n = 1;
    while path.exists() {
        path = dir.join(format!("{stem}_{n}.jpg"));
        n += 1;
    }
    path
}

/// Rule names are free text; file names must not be.
fn sanitize(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect()
}

/// Draws and encodes the snapshot. Runs off the async runtime.
pub fn write(path: &Path, alert: &Alert) -> Result<(), String> {
    let mut canvas: RgbImage = (*alert.image).clone();
    for zone in &alert.zones {
        draw_polygon(&mut canvas, zone, Rgb([255, 255, 0]));
    }
    for t in &alert.tracks {
        let label = format!("{} {:.2} #{}", t.class_name, t.confidence, t.id);
        let class_id = crate::coco::class_index(t.class_name).unwrap_or(0);
        draw_detection(&mut canvas, t.bbox, &label, class_colour(class_id));
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    // Write then rename, so a half-written JPEG is never seen under its name.
    let partial = path.with_extension("jpg.part");
    let file = std::fs::File::create(&partial).map_err(|e| format!("cannot write {}: {e}", partial.display()))?;
    let mut writer = std::io::BufWriter::new(file);
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut writer, 85)
        .encode_image(&canvas)
        .map_err(|e| format!("cannot encode {}: {e}", path.display()))?;
    drop(writer);
    std::fs::rename(&partial, path).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn draw_polygon(img: &mut RgbImage, points: &[(f32, f32)], colour: Rgb<u8>) {
    for (i, &(x0, y0)) in points.iter().enumerate() {
        let (x1, y1) = points[(i + 1) % points.len()];
        let steps = ((x1 - x0).abs().max((y1 - y0).abs()) as usize).max(1);
        for s in 0..=steps {
            let f = s as f32 / steps as f32;
            let (x, y) = (x0 + (x1 - x0) * f, y0 + (y1 - y0) * f);
            draw_box(img, [x, y, x + 1.0, y + 1.0], colour, 1);
        }
    }
}
