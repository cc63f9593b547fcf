//! Retention: what the old `find … -delete`, `gzip` and `VACUUM` cron jobs
//! did, as plain functions of the data directory and an injected `now`, run
//! on a schedule by [`actor::RetentionActor`].
//!
//! Snapshots always go oldest first, whatever the reason (age, the size
//! quota, disk pressure), so a missing snapshot older than every one still
//! on disk is retention's doing; `ops check` relies on that.

pub mod actor;

use serde::Serialize;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Why something was deleted, as metrics label it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    Age,
    Quota,
    Pressure,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Age => "age",
            Reason::Quota => "quota",
            Reason::Pressure => "pressure",
        }
    }
}

/// What one pass did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Outcome {
    /// (kind, reason) → count.
    pub deleted: BTreeMap<(&'static str, Reason), u64>,
    pub compressed: u64,
    pub freed_bytes: u64,
    pub errors: Vec<String>,
}

impl Outcome {
    fn count(&mut self, kind: &'static str, reason: Reason, bytes: u64) {
        *self.deleted.entry((kind, reason)).or_default() += 1;
        self.freed_bytes += bytes;
    }

    pub fn total_deleted(&self) -> u64 {
        self.deleted.values().sum()
    }

    /// Counts everything in the metrics.
    pub fn publish(&self) {
        for ((kind, reason), n) in &self.deleted {
            metrics::counter!("smart_cctv_retention_deleted_total", "kind" => *kind, "reason" => reason.as_str())
                .increment(*n);
        }
        metrics::counter!("smart_cctv_retention_compressed_total", "kind" => "log").increment(self.compressed);
        metrics::counter!("smart_cctv_retention_freed_bytes_total").increment(self.freed_bytes);
    }
}

/// A snapshot file, as retention sees it.
#[derive(Debug, Clone)]
pub struct SnapshotFile {
    pub path: PathBuf,
    pub modified: SystemTime,
    pub bytes: u64,
}

/// Every snapshot under `snapshots/`, oldest first; pending ones (not yet
/// stored) are not retention's business.
pub fn list_snapshots(snapshots: &Path) -> Vec<SnapshotFile> {
    let pending = snapshots.join(crate::alerts::snapshot::PENDING);
    let mut files: Vec<SnapshotFile> = crate::store::check::files_under(snapshots)
        .into_iter()
        .filter(|p| !p.starts_with(&pending) && p.extension().is_some_and(|e| e == "jpg"))
        .filter_map(|path| {
            let meta = std::fs::symlink_metadata(&path).ok()?;
            Some(SnapshotFile { modified: meta.modified().ok()?, bytes: meta.len(), path })
        })
        .collect();
    files.sort_by(|a, b| a.modified.cmp(&b.modified).then_with(|| a.path.cmp(&b.path)));
    files
}

/// Deletes snapshots older than `max_age`, then the oldest while the rest
/// exceed `max_bytes`; removes day folders left empty.
pub fn sweep_snapshots(snapshots: &Path, now: SystemTime, max_age: Duration, max_bytes: Option<u64>) -> Outcome {
    let mut outcome = Outcome::default();
    let files = list_snapshots(snapshots);
    let cutoff = now.checked_sub(max_age).unwrap_or(SystemTime::UNIX_EPOCH);
    let mut total: u64 = files.iter().map(|f| f.bytes).sum();
    for file in files {
        let reason = if file.modified < cutoff {
            Reason::Age
        } else if max_bytes.is_some_and(|max| total > max) {
            Reason::Quota
        } else {
            break;
        };
        if delete(&file.path, &mut outcome) {
            outcome.count("snapshot", reason, file.bytes);
            total -= file.bytes;
        }
    }
    remove_empty_days(snapshots, &mut outcome);
    outcome
}

/// Disk pressure: deletes the oldest snapshots until `bytes` are freed.
pub fn free_snapshots(snapshots: &Path, bytes: u64) -> Outcome {
    let mut outcome = Outcome::default();
    for file in list_snapshots(snapshots) {
        if outcome.freed_bytes >= bytes {
            break;
        }
        if delete(&file.path, &mut outcome) {
            outcome.count("snapshot", Reason::Pressure, file.bytes);
        }
    }
    remove_empty_days(snapshots, &mut outcome);
    outcome
}

fn delete(path: &Path, outcome: &mut Outcome) -> bool {
    match std::fs::remove_file(path) {
        Ok(()) => true,
        // Gone meanwhile (ops check --repair, a person): not an error.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => {
            outcome.errors.push(format!("{}: {e}", path.display()));
            false
        }
    }
}

fn remove_empty_days(snapshots: &Path, outcome: &mut Outcome) {
    let Ok(days) = std::fs::read_dir(snapshots) else { return };
    for day in days.flatten() {
        let path = day.path();
        let is_pending = path.file_name().is_some_and(|n| n == crate::alerts::snapshot::PENDING);
        let is_dir = std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir());
        let empty = is_dir && !is_pending && std::fs::read_dir(&path).is_ok_and(|mut d| d.next().is_none());
        if empty && let Err(e) = std::fs::remove_dir(&path) {
            outcome.errors.push(format!("{}: {e}", path.display()));
        }
    }
}

/// Rotated logs (`app.2026-01-15.log`) older than `compress_after` are
/// gzipped (keeping their time); compressed or not, those older than
/// `delete_after` are deleted. The live `*.log` files are never touched.
pub fn sweep_logs(logs: &Path, now: SystemTime, compress_after: Duration, delete_after: Duration) -> Outcome {
    let mut outcome = Outcome::default();
    let Ok(entries) = std::fs::read_dir(logs) else { return outcome };
    let compress_cutoff = now.checked_sub(compress_after).unwrap_or(SystemTime::UNIX_EPOCH);
    let delete_cutoff = now.checked_sub(delete_after).unwrap_or(SystemTime::UNIX_EPOCH);
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()).map(str::to_owned) else { continue };
        let Ok(meta) = entry.metadata() else { continue };
        let Ok(modified) = meta.modified() else { continue };
        let rotated = name.ends_with(".log") && name.matches('.').count() >= 2;
        let compressed = name.ends_with(".log.gz");
        if !(rotated || compressed) || !meta.is_file() {
            continue;
        }
        if modified < delete_cutoff {
            if delete(&path, &mut outcome) {
                outcome.count("log", Reason::Age, meta.len());
            }
        } else if rotated && modified < compress_cutoff {
            match gzip(&path, modified) {
                Ok(saved) => {
                    outcome.compressed += 1;
                    outcome.freed_bytes += saved;
                }
                Err(e) => outcome.errors.push(format!("{}: {e}", path.display())),
            }
        }
    }
    outcome
}

/// `gzip FILE`: writes `FILE.gz` with the original's time, then removes the
/// original. Answers the bytes saved.
fn gzip(path: &Path, modified: SystemTime) -> std::io::Result<u64> {
    let mut target = path.as_os_str().to_owned();
    target.push(".gz");
    let target = PathBuf::from(target);
    let partial = target.with_extension("gz.part");
    let bytes = std::fs::read(path)?;
    let mut encoder = flate2::write::GzEncoder::new(std::fs::File::create(&partial)?, flate2::Compression::default());
    encoder.write_all(&bytes)?;
    let file = encoder.finish()?;
    file.sync_all()?;
    file.set_modified(modified)?;
    let written = file.metadata()?.len();
    std::fs::rename(&partial, &target)?;
    std::fs::remove_file(path)?;
    Ok((bytes.len() as u64).saturating_sub(written))
}

#[cfg(test)]
mod tests;
