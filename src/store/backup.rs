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
use std::path::{Path, PathBuf};

pub const MANIFEST: &str = "manifest.json";
/// Where database copies for backups are made, under the data directory.
pub const COPY_DIR: &str = "backup-tmp";

/// Deletes database copies in `dir` older than `age`.
pub fn remove_stale_copies(dir: &Path, age: std::time::Duration) {
    for file in crate::store::check::files_under(dir) {
        let old = std::fs::symlink_metadata(&file)
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().is_ok_and(|e| e > age));
        if old {
            let _ = std::fs::remove_file(&file);
        }
    }
}

/// The copy the running service says it made: accepted only as a regular
/// file directly in `data_dir/backup-tmp/` that opens as an event store, so
/// whatever answers on the port cannot make a backup read (and then delete)
/// another file.
pub fn check_copy(data_dir: &Path, answered: &Path) -> Result<PathBuf, BackupError> {
    let refuse =
        |why: &str| BackupError::Io(format!("the service answered {}: {why}; refusing it", answered.display()));
    let dir = std::fs::canonicalize(data_dir.join(COPY_DIR)).map_err(|_| refuse("there is no copy folder"))?;
    let name = answered.file_name().ok_or_else(|| refuse("not a file name"))?;
    let inside = answered.parent().and_then(|p| std::fs::canonicalize(p).ok()).is_some_and(|p| p == dir);
    if !inside {
        return Err(refuse("not in the data directory's backup-tmp folder"));
    }
    let path = dir.join(name);
    if !std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_file()) {
        return Err(refuse("not a regular file"));
    }
    Store::open(&path).map_err(|_| refuse("not an event store"))?;
    Ok(path)
}

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
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    // Backups hold the database and the config's passwords: a private folder
    // (when this creates it) and files only their owner reads.
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(out_dir)
        .map_err(|e| BackupError::Io(format!("{}: {e}", out_dir.display())))?;
    let now = chrono::Local::now();
    let path = out_dir.join(format!("smart-cctv-{}.tar.gz", now.format("%Y%m%d-%H%M%S%.3f")));
    let partial = path.with_extension("part");
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&partial)
        .map_err(|e| BackupError::Io(format!("{}: {e}", partial.display())))?;
    let written = write_entries(file, files, now, progress).and_then(|()| std::fs::rename(&partial, &path).map_err(io));
    if let Err(e) = written {
        // No half-written archive is left to be mistaken for a backup.
        let _ = std::fs::remove_file(&partial);
        return Err(e);
    }
    Ok(path)
}

/// Keeps the newest `keep` archives in `dir` (by their time-stamped names)
/// and deletes the rest; answers what it deleted.
pub fn rotate(dir: &Path, keep: usize) -> Vec<PathBuf> {
    let mut archives: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("smart-cctv-") && n.ends_with(".tar.gz"))
        })
        .collect();
    archives.sort();
    let excess = archives.len().saturating_sub(keep.max(1));
    archives.truncate(excess);
    archives.retain(|p| std::fs::remove_file(p).is_ok());
    archives
}

fn write_entries(
    file: std::fs::File,
    files: &[(String, PathBuf)],
    now: chrono::DateTime<chrono::Local>,
    progress: &dyn Fn(u64, u64),
) -> Result<(), BackupError> {
    use sha2::{Digest, Sha256};
    let mut manifest = Manifest { created: now.to_rfc3339(), schema_version: SCHEMA_VERSION, files: BTreeMap::new() };
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
        // Files under data/ are the service user's: a link planted there is
        // never followed (a backup often runs as root).
        let read = if name.starts_with("data/") { read_no_follow(source) } else { std::fs::read(source) };
        let bytes = match read {
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
    tar.into_inner().and_then(|gz| gz.finish()).and_then(|f| f.sync_all()).map_err(io)
}

/// A regular file's bytes, refusing a symbolic link (`O_NOFOLLOW`).
pub fn read_no_follow(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(path)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Everything a backup holds but the snapshots: the database copy, the
/// config and policy files the service reads, and the calibration files
/// beside the config. `ops backup` and scheduled backups both start here.
pub fn backup_files(db_copy: &Path, config: Option<&Path>, supervision: Option<&Path>) -> Vec<(String, PathBuf)> {
    let calibration_dir = crate::config::load::calibration_dir(config);
    let mut files = vec![("data/events.redb".to_owned(), db_copy.to_owned())];
    files.extend(config_files(config, supervision, &calibration_dir));
    files
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

/// Every snapshot under `data_dir/snapshots`, by archive name. Links are
/// skipped and logged, never followed, so a planted link cannot pull another
/// file into the backup and a folder loop cannot recurse for ever.
pub fn snapshot_files(data_dir: &Path) -> Vec<(String, PathBuf)> {
    crate::store::check::files_under(&data_dir.join("snapshots"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|x| x == "jpg"))
        .filter_map(|p| {
            // Only finished snapshots: they are renamed into place whole.
            let rel = p.strip_prefix(data_dir).ok()?.display().to_string();
            Some((format!("data/{rel}"), p))
        })
        .collect()
}

/// Where a restore puts each kind of file.
#[derive(Debug, Clone)]
pub struct RestoreTargets {
    /// The database and snapshots.
    pub data_dir: PathBuf,
    /// The config file the service reads (`--config`); with none (the
    /// embedded default), config files go to `data/restored-config/`.
    pub config: Option<PathBuf>,
    /// The supervision policy the service reads (`--supervision`); likewise.
    pub supervision: Option<PathBuf>,
}

impl RestoreTargets {
    /// Where config files go when the service reads none from disk: never
    /// into whatever the current directory happens to be.
    fn unread(&self) -> PathBuf {
        self.data_dir.join("restored-config")
    }
}

/// How much an archive may hold; `ops restore --max-bytes/--max-entries`.
#[derive(Debug, Clone, Copy)]
pub struct RestoreLimits {
    pub max_bytes: u64,
    pub max_entries: usize,
}

impl Default for RestoreLimits {
    fn default() -> Self {
        Self { max_bytes: 16 << 30, max_entries: 50_000 }
    }
}

/// What an archive entry is, by its name: only the layout `ops backup` writes.
fn place_of(name: &str, targets: &RestoreTargets) -> Option<PathBuf> {
    let parts: Vec<&str> = name.split('/').collect();
    // Plain components only: no empty ones (`//`, a leading `/`), no `.` or `..`.
    let plain = |c: &&str| !c.is_empty() && *c != "." && *c != ".." && !c.contains('\\') && !c.contains('\0');
    if !parts.iter().all(plain) {
        return None;
    }
    match parts.as_slice() {
        ["data", "events.redb"] => Some(targets.data_dir.join(super::FILE)),
        ["data", "snapshots", day, file] if file.ends_with(".jpg") => {
            Some(targets.data_dir.join("snapshots").join(day).join(file))
        }
        ["config", "config.yaml"] => {
            Some(targets.config.clone().unwrap_or_else(|| targets.unread().join("config.yaml")))
        }
        ["config", "supervision.toml"] => {
            Some(targets.supervision.clone().unwrap_or_else(|| targets.unread().join("supervision.toml")))
        }
        ["config", "calibration", file] if file.ends_with(".yaml") => Some(match &targets.config {
            Some(config) => crate::config::load::calibration_dir(Some(config)).join(file),
            None => targets.unread().join("calibration").join(file),
        }),
        _ => None,
    }
}

/// Restores `archive`: every entry is checked against the known layout and
/// the manifest, extracted within `limits`, and the database opened, before
/// anything is touched; then the files are swapped in, and if that fails
/// half-way the previous files are put back. With `verify_only` it stops
/// after the checks and changes nothing. Returns what it did.
pub fn restore(
    archive: &Path,
    targets: &RestoreTargets,
    limits: RestoreLimits,
    verify_only: bool,
) -> Result<Vec<String>, BackupError> {
    let data_dir = &targets.data_dir;
    let db = data_dir.join(super::FILE);
    if db.exists() && !verify_only {
        // Refuse while the service holds the database.
        drop(Store::open(&db).map_err(|e| match e {
            StoreError::InUse { .. } => {
                BackupError::Io(format!("{}: the service is running; stop it before restoring", db.display()))
            }
            other => BackupError::Store(other),
        })?);
    }
    std::fs::create_dir_all(data_dir).map_err(io)?;
    let staging = data_dir.join(".restore-staging");
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging).map_err(io)?;
    let checked = stage(archive, &staging, targets, limits);
    let plan = match checked {
        Ok(plan) if !verify_only => plan,
        Ok(plan) => {
            let _ = std::fs::remove_dir_all(&staging);
            return Ok(vec![format!("{}: verified, {} files; nothing was changed", archive.display(), plan.len())]);
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
    };
    let aside = data_dir.join(format!("pre-restore-{}", chrono::Local::now().format("%Y%m%d-%H%M%S")));
    let result = swap_in(&plan, &staging, &aside);
    let _ = std::fs::remove_dir_all(&staging);
    let mut done = result?;
    if aside.exists() {
        done.push(format!("previous files kept in {}", aside.display()));
    }
    Ok(done)
}

/// Extracts and checks everything into `staging`; answers (archive name,
/// target) for each file, manifest excluded.
fn stage(
    archive: &Path,
    staging: &Path,
    targets: &RestoreTargets,
    limits: RestoreLimits,
) -> Result<Vec<(String, PathBuf)>, BackupError> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let bad = |reason: String| BackupError::BadArchive { archive: archive.display().to_string(), reason };
    let file = std::fs::File::open(archive).map_err(|e| bad(e.to_string()))?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let mut plan: BTreeMap<String, PathBuf> = BTreeMap::new();
    let mut manifest_bytes = None;
    let (mut entries, mut bytes) = (0usize, 0u64);
    for entry in tar.entries().map_err(|e| bad(format!("not a tar.gz archive: {e}")))? {
        let mut entry = entry.map_err(|e| bad(format!("damaged archive: {e}")))?;
        entries += 1;
        if entries > limits.max_entries {
            return Err(bad(format!("more than {} entries (raise it with --max-entries)", limits.max_entries)));
        }
        let raw = entry.path_bytes().into_owned();
        let name = String::from_utf8(raw).map_err(|_| bad("an entry name is not UTF-8".into()))?;
        let kind = entry.header().entry_type();
        if !kind.is_file() {
            return Err(bad(format!("{name}: not a regular file ({kind:?}); only files are restored")));
        }
        let size = entry.header().size().map_err(|e| bad(format!("{name}: {e}")))?;
        bytes = bytes.saturating_add(size);
        if bytes > limits.max_bytes {
            return Err(bad(format!("more than {} bytes (raise it with --max-bytes)", limits.max_bytes)));
        }
        if name == MANIFEST {
            let mut text = Vec::new();
            entry.by_ref().take(1 << 24).read_to_end(&mut text).map_err(|e| bad(format!("{name}: {e}")))?;
            manifest_bytes = Some(text);
            continue;
        }
        let target = place_of(&name, targets)
            .ok_or_else(|| bad(format!("`{name}` is not a file a backup holds; refusing the archive")))?;
        if plan.insert(name.clone(), target).is_some() {
            return Err(bad(format!("{name} appears twice")));
        }
        // The name was checked to be plain components under a known folder.
        let staged = staging.join(&name);
        if let Some(dir) = staged.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&staged)
            .map_err(|e| BackupError::Io(format!("{}: {e}", staged.display())))?;
        let copied =
            std::io::copy(&mut entry.by_ref().take(size), &mut out).map_err(|e| bad(format!("{name}: {e}")))?;
        if copied != size {
            return Err(bad(format!("{name} is truncated")));
        }
    }
    let manifest_text = manifest_bytes.ok_or_else(|| bad("no manifest.json".into()))?;
    let manifest: Manifest = serde_json::from_slice(&manifest_text).map_err(|e| bad(format!("manifest.json: {e}")))?;
    if manifest.schema_version > SCHEMA_VERSION {
        return Err(bad(format!("schema version {} is newer than this build", manifest.schema_version)));
    }
    for (name, sha) in &manifest.files {
        if !plan.contains_key(name) {
            return Err(bad(format!("the manifest lists {name}, which the archive does not hold")));
        }
        let actual = sha256_file(&staging.join(name)).map_err(|_| bad(format!("{name} is missing")))?;
        if &actual != sha {
            return Err(bad(format!("{name} does not match its checksum")));
        }
    }
    if let Some(extra) = plan.keys().find(|name| !manifest.files.contains_key(*name)) {
        return Err(bad(format!("{extra} is not in the manifest")));
    }
    if !plan.contains_key("data/events.redb") {
        return Err(bad("no database in the archive".into()));
    }
    // The database must open as an event store of a schema this build reads.
    let staged_db = staging.join("data/events.redb");
    let store = Store::open(&staged_db).or_else(|e| match e {
        StoreError::OlderSchema { .. } => Store::migrate(&staged_db).and_then(|_| Store::open(&staged_db)),
        other => Err(other),
    });
    let store = store.map_err(|e| bad(format!("data/events.redb is not a usable event store: {e}")))?;
    store.alerts(&super::Query::default()).map_err(|e| bad(format!("data/events.redb cannot be read: {e}")))?;
    drop(store);
    Ok(plan.into_iter().collect())
}

/// Moves the staged files into place, keeping what they replace in `aside`;
/// on any failure, undoes every move made so far.
fn swap_in(plan: &[(String, PathBuf)], staging: &Path, aside: &Path) -> Result<Vec<String>, BackupError> {
    // (target, where its previous file went)
    let mut moved: Vec<(PathBuf, Option<PathBuf>)> = Vec::new();
    let mut done = Vec::new();
    let owner = OwnerFix::for_root();
    for (name, target) in plan {
        let step = (|| -> std::io::Result<Option<PathBuf>> {
            let kept = if std::fs::symlink_metadata(target).is_ok() {
                let keep = aside.join(name);
                create_dirs(keep.parent().unwrap_or(aside), &owner)?;
                move_file(target, &keep)?;
                Some(keep)
            } else {
                None
            };
            create_dirs(target.parent().unwrap_or(Path::new(".")), &owner)?;
            if let Err(e) = move_file(&staging.join(name), target) {
                if let Some(keep) = &kept {
                    let _ = move_file(keep, target);
                }
                return Err(e);
            }
            owner.apply(target);
            Ok(kept)
        })();
        match step {
            Ok(kept) => {
                moved.push((target.clone(), kept));
                done.push(format!("restored {}", target.display()));
            }
            Err(e) => {
                for (target, kept) in moved.iter().rev() {
                    let _ = std::fs::remove_file(target);
                    if let Some(keep) = kept {
                        let _ = move_file(keep, target);
                    }
                }
                return Err(BackupError::Io(format!(
                    "{}: {e}; every file restored so far was put back as it was",
                    target.display()
                )));
            }
        }
    }
    Ok(done)
}

/// A rename, or a copy and a rename where the two paths are on different
/// filesystems (the config may live apart from the data).
fn move_file(from: &Path, to: &Path) -> std::io::Result<()> {
    match std::fs::rename(from, to) {
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            let tmp = to.with_extension("restore-tmp");
            std::fs::copy(from, &tmp)?;
            std::fs::File::open(&tmp)?.sync_all()?;
            std::fs::rename(&tmp, to)?;
            std::fs::remove_file(from)
        }
        other => other,
    }
}

fn create_dirs(dir: &Path, owner: &OwnerFix) -> std::io::Result<()> {
    if dir.exists() {
        return Ok(());
    }
    std::fs::create_dir_all(dir)?;
    owner.apply(dir);
    Ok(())
}

/// Run as root (`sudo smart-cctv ops restore`), restored files go to the
/// owner of the folder they land in, so the service user can open them.
struct OwnerFix {
    as_root: bool,
}

impl OwnerFix {
    fn for_root() -> Self {
        // SAFETY: geteuid(2) has no preconditions and cannot fail.
        Self { as_root: unsafe { libc::geteuid() } == 0 }
    }

    fn apply(&self, path: &Path) {
        use std::os::unix::fs::MetadataExt;
        if !self.as_root {
            return;
        }
        let Some(parent) = path.parent().and_then(|p| std::fs::metadata(p).ok()) else { return };
        if let Err(e) = std::os::unix::fs::lchown(path, Some(parent.uid()), Some(parent.gid())) {
            tracing::warn!("{}: cannot give it to the folder's owner: {e}", path.display());
        }
    }
}
