//! `ops backup` and `ops restore`.
//!
//! A backup is `smart-cctv-YYYYmmdd-HHMMSS.tar.gz` holding a consistent copy
//! of the database (one redb read transaction, so the service keeps writing
//! meanwhile), the config, calibration files and `supervision.toml`,
//! optionally the snapshots, and `manifest.json` with every file's sha256.
//! A restore verifies the whole manifest before touching anything, refuses
//! while the service runs, and keeps the current files aside.

use super::{SCHEMA_VERSION, Store, StoreError};
use crate::detect::weights::sha256_file;
use flate2::Compression;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

pub const MANIFEST: &str = "manifest.json";

#[derive(Debug, Serialize, Deserialize)]
pub struct Manifest {
    pub created: String,
    pub schema_version: u64,
    /// Archive path → sha256.
    pub files: BTreeMap<String, String>,
}

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Io(String),
    #[error("{archive}: {reason}; nothing was changed")]
    BadArchive { archive: String, reason: String },
}

fn io(e: impl std::fmt::Display) -> BackupError {
    BackupError::Io(e.to_string())
}

/// Archives `files` (archive name → source) with a manifest into `out_dir`.
/// Each file is read once, hashed and archived from the same bytes, so a
/// file changing meanwhile cannot make the manifest disagree with the archive.
/// `progress` hears (bytes done, bytes in all) after each file.
pub fn write_archive(
    out_dir: &Path,
    files: &[(String, PathBuf)],
    progress: &dyn Fn(u64, u64),
) -> Result<PathBuf, BackupError> {
    use sha2::{Digest, Sha256};
    std::fs::create_dir_all(out_dir).map_err(|e| BackupError::Io(format!("{}: {e}", out_dir.display())))?;
    let now = chrono::Local::now();
    let path = out_dir.join(format!("smart-cctv-{}.tar.gz", now.format("%Y%m%d-%H%M%S")));
    let mut manifest = Manifest { created: now.to_rfc3339(), schema_version: SCHEMA_VERSION, files: BTreeMap::new() };
    let partial = path.with_extension("part");
    let file = std::fs::File::create(&partial).map_err(|e| BackupError::Io(format!("{}: {e}", partial.display())))?;
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(file, Compression::default()));
    let append = |tar: &mut tar::Builder<_>, name: &str, bytes: &[u8]| -> Result<(), BackupError> {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o600);
        header.set_cksum();
        tar.append_data(&mut header, name, bytes).map_err(io)
    };
    let total: u64 = files.iter().filter_map(|(_, source)| std::fs::metadata(source).ok()).map(|m| m.len()).sum();
    let mut done = 0;
    for (name, source) in files {
        let bytes = match std::fs::read(source) {
            Ok(bytes) => bytes,
            // A snapshot removed by retention meanwhile is simply not in this backup.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && name.starts_with("data/snapshots/") => continue,
            Err(e) => return Err(BackupError::Io(format!("{}: {e}", source.display()))),
        };
        let digest: String = Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
        manifest.files.insert(name.clone(), digest);
        append(&mut tar, name, &bytes)?;
        done += bytes.len() as u64;
        progress(done, total.max(done));
    }
    let manifest_json = serde_json::to_vec_pretty(&manifest).map_err(io)?;
    append(&mut tar, MANIFEST, &manifest_json)?;
    tar.into_inner().and_then(|gz| gz.finish()).and_then(|f| f.sync_all()).map_err(io)?;
    std::fs::rename(&partial, &path).map_err(io)?;
    Ok(path)
}

/// The files a backup holds besides the database.
pub fn config_files(
    config: Option<&Path>,
    supervision: Option<&Path>,
    calibration_dir: &Path,
) -> Vec<(String, PathBuf)> {
    let mut files = Vec::new();
    if let Some(c) = config {
        files.push(("config/config.yaml".to_owned(), c.to_owned()));
    }
    if let Some(s) = supervision {
        files.push(("config/supervision.toml".to_owned(), s.to_owned()));
    }
    if let Ok(entries) = std::fs::read_dir(calibration_dir) {
        for e in entries.flatten().filter(|e| e.path().extension().is_some_and(|x| x == "yaml")) {
            files.push((format!("config/calibration/{}", e.file_name().to_string_lossy()), e.path()));
        }
    }
    files
}

/// Every snapshot under `data_dir/snapshots`, by archive name.
pub fn snapshot_files(data_dir: &Path) -> Vec<(String, PathBuf)> {
    fn walk(dir: &Path, base: &Path, out: &mut Vec<(String, PathBuf)>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, base, out);
            } else if p.extension().is_some_and(|x| x == "jpg")
                && let Ok(rel) = p.strip_prefix(base)
            {
                // Only finished snapshots: they are renamed into place whole.
                out.push((format!("data/{}", rel.display()), p.clone()));
            }
        }
    }
    let mut out = Vec::new();
    walk(&data_dir.join("snapshots"), data_dir, &mut out);
    out
}

/// Restores `archive` into `data_dir` (database, snapshots) and `config_dir`
/// (config, calibration, supervision). Returns what it did.
pub fn restore(archive: &Path, data_dir: &Path, config_dir: &Path) -> Result<Vec<String>, BackupError> {
    let bad = |reason: String| BackupError::BadArchive { archive: archive.display().to_string(), reason };
    let db = data_dir.join(super::FILE);
    if db.exists() {
        // Refuse while the service holds the database.
        drop(Store::open(&db).map_err(|e| match e {
            StoreError::InUse { .. } => {
                BackupError::Io(format!("{}: the service is running; stop it before restoring", db.display()))
            }
            other => BackupError::Store(other),
        })?);
    }
    let staging = data_dir.join(".restore-staging");
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging).map_err(io)?;
    let result = (|| {
        let file = std::fs::File::open(archive).map_err(|e| bad(e.to_string()))?;
        let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(file));
        let mut names = Vec::new();
        for entry in tar.entries().map_err(|e| bad(format!("not a tar.gz archive: {e}")))? {
            let mut entry = entry.map_err(|e| bad(format!("damaged archive: {e}")))?;
            let name = entry.path().map_err(|e| bad(e.to_string()))?.into_owned();
            if name.is_absolute() || name.components().any(|c| matches!(c, Component::ParentDir)) {
                return Err(bad(format!("unsafe path {} in the archive", name.display())));
            }
            entry.unpack_in(&staging).map_err(|e| bad(format!("damaged archive at {}: {e}", name.display())))?;
            names.push(name);
        }
        let manifest_text = std::fs::read(staging.join(MANIFEST)).map_err(|_| bad("no manifest.json".into()))?;
        let manifest: Manifest =
            serde_json::from_slice(&manifest_text).map_err(|e| bad(format!("manifest.json: {e}")))?;
        if manifest.schema_version > SCHEMA_VERSION {
            return Err(bad(format!("schema version {} is newer than this build", manifest.schema_version)));
        }
        for (name, sha) in &manifest.files {
            let actual = sha256_file(&staging.join(name)).map_err(|_| bad(format!("{name} is missing")))?;
            if &actual != sha {
                return Err(bad(format!("{name} does not match its checksum")));
            }
        }
        if !manifest.files.contains_key("data/events.redb") {
            return Err(bad("no database in the archive".into()));
        }
        Ok(manifest)
    })();
    let manifest = match result {
        Ok(m) => m,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
    };
    // Everything checked: keep the current files aside, then move in.
    let aside = data_dir.join(format!("pre-restore-{}", chrono::Local::now().format("%Y%m%d-%H%M%S")));
    let mut done = Vec::new();
    for name in manifest.files.keys() {
        let (root, rel) = match name.split_once('/') {
            Some(("data", rel)) => (data_dir, rel),
            Some(("config", rel)) => (config_dir, rel),
            _ => continue,
        };
        let target = root.join(rel);
        if target.exists() {
            let keep = aside.join(name);
            std::fs::create_dir_all(keep.parent().unwrap_or(&aside)).map_err(io)?;
            std::fs::rename(&target, &keep).map_err(io)?;
        }
        std::fs::create_dir_all(target.parent().unwrap_or(root)).map_err(io)?;
        std::fs::rename(staging.join(name), &target).map_err(io)?;
        done.push(format!("restored {}", target.display()));
    }
    let _ = std::fs::remove_dir_all(&staging);
    if aside.exists() {
        done.push(format!("previous files kept in {}", aside.display()));
    }
    Ok(done)
}
