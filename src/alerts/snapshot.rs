//! Alert snapshots: `data/snapshots/YYYY-MM-DD/<camera>_<HHMMSS>_<rule>.jpg`,
//! the frame with the triggering objects boxed and labelled and the rule's
//! zones outlined.

use super::Alert;
use crate::draw::{class_colour, draw_detection, draw_polygon};
use chrono::{DateTime, Local};
use image::{Rgb, RgbImage};
use std::path::{Path, PathBuf};

/// Snapshots are written here first and moved into place only once their
/// alert is stored, so a crash never leaves a stored alert without its file
/// nor a file without its alert outside this folder. What a crash leaves
/// here is settled at the next start ([`settle_pending`]).
pub const PENDING: &str = ".pending";

/// Where the snapshot of `alert` goes: a name not yet taken by a file, a
/// pending file, or one of `in_flight`.
pub fn path_for(snapshots: &Path, alert: &Alert, in_flight: &dyn Fn(&Path) -> bool) -> PathBuf {
    let local = DateTime::<Local>::from(alert.captured);
    let dir = snapshots.join(local.format("%Y-%m-%d").to_string());
    let stem = format!("{}_{}_{}", alert.camera, local.format("%H%M%S"), sanitize(&alert.rule));
    let mut path = dir.join(format!("{stem}.jpg"));
    let mut n = 1;
    while path.exists() || pending_path(snapshots, &path).exists() || in_flight(&path) {
        path = dir.join(format!("{stem}_{n}.jpg"));
        n += 1;
    }
    path
}

/// The pending twin of a final snapshot path under `snapshots`.
pub fn pending_path(snapshots: &Path, path: &Path) -> PathBuf {
    snapshots.join(PENDING).join(path.strip_prefix(snapshots).unwrap_or(path))
}

/// After a crash: pending snapshots whose alert was stored (`stored` says,
/// by final path relative to `snapshots`) go into place; the others belonged
/// to alerts never acknowledged, and are deleted. Answers (moved, deleted).
/// Moves a snapshot from its pending path into place, once its alert is stored.
pub fn place(pending: &Path, target: &Path) -> std::io::Result<()> {
    if let Some(dir) = target.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::rename(pending, target)
}

pub fn settle_pending(snapshots: &Path, stored: &dyn Fn(&Path) -> bool) -> (usize, usize) {
    let pending = snapshots.join(PENDING);
    let (mut moved, mut deleted) = (0, 0);
    for file in crate::store::check::files_under(&pending) {
        let Ok(relative) = file.strip_prefix(&pending) else { continue };
        let target = snapshots.join(relative);
        if stored(relative) {
            let placed =
                target.parent().map(std::fs::create_dir_all).transpose().and_then(|_| std::fs::rename(&file, &target));
            match placed {
                Ok(_) => moved += 1,
                Err(e) => tracing::error!("snapshot {}: {e}", target.display()),
            }
        } else if std::fs::remove_file(&file).is_ok() {
            deleted += 1;
        }
    }
    (moved, deleted)
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
    let file = writer.into_inner().map_err(|e| format!("cannot write {}: {e}", partial.display()))?;
    // On disk before its alert is stored: a stored alert's snapshot survives a crash.
    file.sync_all().map_err(|e| format!("cannot write {}: {e}", partial.display()))?;
    std::fs::rename(&partial, path).map_err(|e| format!("cannot write {}: {e}", path.display()))
}
