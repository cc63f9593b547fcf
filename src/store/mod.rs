//! The event store: one redb file, `data/events.redb`, owned by one actor.
//!
//! Crash-safety invariants:
//! - every write is a redb transaction; a commit with `Durability::Immediate`
//!   is on disk when `commit` returns, and a request is answered only then;
//! - keys are time-ordered (`unix micros << 16 | sequence`), so range reads
//!   by time need no index;
//! - the schema version lives in the `meta` table; a file from a newer
//!   version is refused rather than misread;
//! - only one process opens the file (redb locks it); CLI commands go through
//!   the running service's HTTP API when the file is taken.

pub mod actor;
pub mod analyze;
pub mod backup;
pub mod check;
pub mod upgrade;

use redb::{Database, ReadableDatabase, TableDefinition};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The schema this build writes and understands.
pub const SCHEMA_VERSION: u64 = 2;

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const ALERTS: TableDefinition<u128, &[u8]> = TableDefinition::new("alerts");
/// Since v2: camera state changes and health transitions, time-keyed JSON.
const CAMERA_STATUS: TableDefinition<u128, &[u8]> = TableDefinition::new("camera_status");
const HEALTH_EVENTS: TableDefinition<u128, &[u8]> = TableDefinition::new("health_events");

/// The store's file name under the data directory.
pub const FILE: &str = "events.redb";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path} is in use by another process (is the service running?)")]
    InUse { path: String },
    #[error("{path}: schema version {found} is newer than this build knows ({known}); upgrade smart-cctv")]
    NewerSchema { path: String, found: u64, known: u64 },
    #[error("{path}: schema version {found} is older than this build's ({known}); run `smart-cctv ops migrate`")]
    OlderSchema { path: String, found: u64, known: u64 },
    #[error("{path}: {reason}")]
    Open { path: String, reason: String },
    #[error("event store: {0}")]
    Io(String),
}

pub(crate) fn io(e: impl std::fmt::Display) -> StoreError {
    StoreError::Io(e.to_string())
}

/// One alert as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertRecord {
    /// Capture time, Unix microseconds.
    pub time_us: i64,
    pub rule: String,
    pub camera: String,
    pub class: String,
    pub confidence: f32,
    pub track_ids: Vec<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distance_m: Option<f64>,
    /// Relative to the data directory (`snapshots/2026-01-15/...jpg`).
    pub snapshot: String,
}

/// Filters for listing alerts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AlertQuery {
    /// Unix microseconds, inclusive.
    #[serde(default)]
    pub since_us: Option<i64>,
    #[serde(default)]
    pub camera: Option<String>,
    #[serde(default)]
    pub rule: Option<String>,
    #[serde(default)]
    pub class: Option<String>,
    #[serde(default)]
    pub limit: Option<usize>,
}

impl AlertQuery {
    fn matches(&self, r: &AlertRecord) -> bool {
        self.camera.as_ref().is_none_or(|c| c == &r.camera)
            && self.rule.as_ref().is_none_or(|x| x == &r.rule)
            && self.class.as_ref().is_none_or(|x| x == &r.class)
    }

    /// `since` as a duration back from now.
    pub fn since(mut self, ago: Option<Duration>) -> Self {
        self.since_us = ago.map(|d| unix_micros(SystemTime::now()) - d.as_micros() as i64);
        self
    }
}

pub fn unix_micros(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as i64)
}

static SEQUENCE: AtomicU16 = AtomicU16::new(0);

fn key(time_us: i64) -> u128 {
    ((time_us.max(0) as u128) << 16) | SEQUENCE.fetch_add(1, Ordering::Relaxed) as u128
}

/// An open store.
pub struct Store {
    db: Database,
    path: PathBuf,
}

impl Store {
    /// Opens (creating if needed) the store at `path`; an older schema is
    /// refused (see [`Store::migrate`]).
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let store = Self::open_any(path)?;
        match store.schema_version()? {
            Some(found) if found < SCHEMA_VERSION => {
                Err(StoreError::OlderSchema { path: path.display().to_string(), found, known: SCHEMA_VERSION })
            }
            _ => Ok(store),
        }
    }

    /// Opens `path` and upgrades it to the current schema; returns the
    /// versions it went through (empty when it was current).
    pub fn migrate(path: &Path) -> Result<Vec<u64>, StoreError> {
        let store = Self::open_any(path)?;
        let from = store.schema_version()?.unwrap_or(SCHEMA_VERSION);
        upgrade::upgrade(&store.db, from)
    }

    /// Opens without refusing an older schema.
    fn open_any(path: &Path) -> Result<Self, StoreError> {
        let shown = path.display().to_string();
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Open { path: shown.clone(), reason: e.to_string() })?;
        }
        let db = Database::create(path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError::InUse { path: shown.clone() },
            other => StoreError::Open { path: shown.clone(), reason: format!("not a readable event store: {other}") },
        })?;
        let store = Self { db, path: path.to_owned() };
        store.init_schema()?;
        Ok(store)
    }

    fn init_schema(&self) -> Result<(), StoreError> {
        let version = self.schema_version()?;
        match version {
            None => {
                let txn = self.db.begin_write().map_err(io)?;
                {
                    let mut meta = txn.open_table(META).map_err(io)?;
                    meta.insert("schema_version", SCHEMA_VERSION).map_err(io)?;
                    txn.open_table(ALERTS).map_err(io)?;
                    txn.open_table(CAMERA_STATUS).map_err(io)?;
                    txn.open_table(HEALTH_EVENTS).map_err(io)?;
                }
                txn.commit().map_err(io)
            }
            Some(found) if found > SCHEMA_VERSION => {
                Err(StoreError::NewerSchema { path: self.path.display().to_string(), found, known: SCHEMA_VERSION })
            }
            Some(_) => Ok(()),
        }
    }

    /// The version recorded in the file, if any.
    pub fn schema_version(&self) -> Result<Option<u64>, StoreError> {
        let txn = self.db.begin_read().map_err(io)?;
        match txn.open_table(META) {
            Ok(meta) => Ok(meta.get("schema_version").map_err(io)?.map(|v| v.value())),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
            Err(e) => Err(io(e)),
        }
    }

    /// Writes `records` in one durable transaction.
    pub fn append_alerts(&self, records: &[AlertRecord]) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(io)?;
        {
            let mut table = txn.open_table(ALERTS).map_err(io)?;
            for r in records {
                let bytes = serde_json::to_vec(r).map_err(io)?;
                table.insert(key(r.time_us), bytes.as_slice()).map_err(io)?;
            }
        }
        txn.commit().map_err(io)
    }

    /// Alerts matching `query`, oldest first.
    pub fn alerts(&self, query: &AlertQuery) -> Result<Vec<AlertRecord>, StoreError> {
        let txn = self.db.begin_read().map_err(io)?;
        let table = txn.open_table(ALERTS).map_err(io)?;
        let from = (query.since_us.unwrap_or(0).max(0) as u128) << 16;
        let mut out = Vec::new();
        for entry in table.range(from..).map_err(io)? {
            let (_, value) = entry.map_err(io)?;
            let record: AlertRecord = serde_json::from_slice(value.value()).map_err(io)?;
            if query.matches(&record) {
                out.push(record);
            }
        }
        if let Some(limit) = query.limit {
            let skip = out.len().saturating_sub(limit);
            out.drain(..skip);
        }
        Ok(out)
    }

    /// Rewrites the file to reclaim free space; `true` when it shrank.
    pub fn compact(&mut self) -> Result<bool, StoreError> {
        self.db.compact().map_err(io)
    }

    /// redb's own integrity check (repairs what redb can).
    pub fn check_integrity(&mut self) -> Result<bool, StoreError> {
        self.db.check_integrity().map_err(io)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// An alert record for tests of the store and its upgrades.
#[cfg(test)]
pub(crate) fn test_alert(time_us: i64, camera: &str) -> AlertRecord {
    AlertRecord {
        time_us,
        rule: "r".into(),
        camera: camera.into(),
        class: "person".into(),
        confidence: 0.9,
        track_ids: vec![1],
        distance_m: None,
        snapshot: "snapshots/x.jpg".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alerts_round_trip_in_time_order_and_filter() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        let store = Store::open(&path).unwrap();
        store.append_alerts(&[test_alert(300, "b"), test_alert(100, "a"), test_alert(200, "a")]).unwrap();
        let all = store.alerts(&AlertQuery::default()).unwrap();
        assert_eq!(all.iter().map(|r| r.time_us).collect::<Vec<_>>(), [100, 200, 300]);
        let q = AlertQuery { since_us: Some(150), camera: Some("a".into()), ..AlertQuery::default() };
        assert_eq!(store.alerts(&q).unwrap().len(), 1);
        drop(store);
        // Reopened: still there; a second open while one is held is refused.
        let store = Store::open(&path).unwrap();
        assert_eq!(store.alerts(&AlertQuery::default()).unwrap().len(), 3);
        assert!(matches!(Store::open(&path), Err(StoreError::InUse { .. })));
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        {
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(META).unwrap().insert("schema_version", SCHEMA_VERSION + 1).unwrap();
            txn.commit().unwrap();
        }
        assert!(matches!(Store::open(&path), Err(StoreError::NewerSchema { .. })));
    }
}
