//! `smart-cctv ops check`, like fsck: the database's integrity and schema,
//! the configuration, alerts whose snapshot is missing (and was not expired
//! by retention), and snapshot files no alert points to. `--repair` moves
//! orphan files to `trash/`.

use super::{Query, SCHEMA_VERSION, Store};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// What a check found.
#[derive(Debug, Default)]
pub struct Report {
    pub problems: Vec<String>,
    pub repaired: Vec<String>,
}

impl Report {
    pub fn clean(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Checks the store at `data_dir/events.redb` and the snapshots beside it.
pub fn check(data_dir: &Path, config_path: Option<&Path>, repair: bool) -> Report {
    let mut report = Report::default();
    if let Err(e) = crate::config::load(config_path) {
        report.problems.push(format!("configuration: {e}"));
    }
    let path = data_dir.join(super::FILE);
    // Retention deletes snapshots oldest first, so a missing snapshot older
    // than every one still on disk was retention's doing, not damage.
    let oldest_kept_us =
        crate::retention::list_snapshots(&data_dir.join("snapshots")).first().map(|f| super::unix_micros(f.modified));
    let referenced: HashSet<PathBuf> = if path.exists() {
        match Store::open(&path) {
            Err(e) => {
                report.problems.push(e.to_string());
                return report;
            }
            Ok(mut store) => {
                match store.check_integrity() {
                    Ok(true) => {}
                    Ok(false) => report.problems.push(format!("{}: integrity check repaired damage", path.display())),
                    Err(e) => report.problems.push(format!("{}: integrity check failed: {e}", path.display())),
                }
                match store.schema_version() {
                    Ok(Some(SCHEMA_VERSION)) => {}
                    Ok(v) => report
                        .problems
                        .push(format!("{}: schema version {v:?}, expected {SCHEMA_VERSION}", path.display())),
                    Err(e) => report.problems.push(e.to_string()),
                }
                match store.alerts(&Query::default()) {
                    Ok(alerts) => alerts
                        .into_iter()
                        .map(|a| {
                            let file = data_dir.join(&a.snapshot);
                            // A snapshot still pending is put in place at the next start.
                            let pending = crate::alerts::snapshot::pending_path(&data_dir.join("snapshots"), &file);
                            let expired = oldest_kept_us.is_none_or(|oldest| a.time_us < oldest);
                            if !a.snapshot.is_empty() && !file.is_file() && !pending.is_file() && !expired {
                                report.problems.push(format!(
                                    "alert {} {} at {} µs: snapshot {} is missing",
                                    a.rule, a.camera, a.time_us, a.snapshot
                                ));
                            }
                            file
                        })
                        .collect(),
                    Err(e) => {
                        report.problems.push(e.to_string());
                        return report;
                    }
                }
            }
        }
    } else {
        HashSet::new()
    };

    let snapshots = data_dir.join("snapshots");
    let pending = snapshots.join(crate::alerts::snapshot::PENDING);
    for file in files_under(&snapshots) {
        if file.starts_with(&pending) {
            continue;
        }
        if file.extension().is_some_and(|e| e == "jpg") && !referenced.contains(&file) {
            let shown = file.strip_prefix(data_dir).unwrap_or(&file).display().to_string();
            if repair {
                let target = data_dir.join("trash").join(file.strip_prefix(data_dir).unwrap_or(&file));
                let moved = target
                    .parent()
                    .map(std::fs::create_dir_all)
                    .transpose()
                    .and_then(|_| std::fs::rename(&file, &target));
                match moved {
                    Ok(_) => report.repaired.push(format!("moved orphan {shown} to {}", target.display())),
                    Err(e) => report.problems.push(format!("cannot move orphan {shown}: {e}")),
                }
            } else {
                report
                    .problems
                    .push(format!("orphan snapshot {shown}: no alert points to it (--repair moves it to trash/)"));
            }
        }
    }
    report
}

/// Every file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    walk_regular(dir, &mut out);
    out
}

/// Regular files only. A symbolic link (to a file or a folder) is reported
/// and skipped, never followed: the folders under `data/` belong to the
/// service user, and `ops check`, backups and retention may run as root; a
/// link loop cannot make this recurse for ever.
fn walk_regular(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        match entry.file_type() {
            Ok(t) if t.is_dir() => walk_regular(&path, out),
            Ok(t) if t.is_file() => out.push(path),
            Ok(t) if t.is_symlink() => {
                metrics::counter!("smart_cctv_links_skipped_total").increment(1);
                tracing::warn!("{}: a symbolic link where only files belong; skipped, not followed", path.display());
            }
            _ => {}
        }
    }
}
