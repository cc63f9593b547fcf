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
pub mod records;
pub mod shared;
pub mod upgrade;

pub use records::{AlertRecord, AlertReview, CameraStatusRecord, EventRecord, HealthRecord, Mark, Query, Record};
pub use shared::SharedStore;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// The schema this build writes and understands.
pub const SCHEMA_VERSION: u64 = 4;

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const ALERTS: TableDefinition<u128, &[u8]> = TableDefinition::new("alerts");
/// Since v2: camera state changes and health transitions, time-keyed JSON.
const CAMERA_STATUS: TableDefinition<u128, &[u8]> = TableDefinition::new("camera_status");
const HEALTH_EVENTS: TableDefinition<u128, &[u8]> = TableDefinition::new("health_events");
/// Since v3: track summaries (one per object seen), keyed by first sighting.
const EVENTS: TableDefinition<u128, &[u8]> = TableDefinition::new("events");

/// Since v4: people's verdicts on alerts (reviewed, false positive), JSON
/// keyed by alert id: kept apart so an alert as raised is never rewritten.
const REVIEWS: TableDefinition<&str, &[u8]> = TableDefinition::new("alert_reviews");

type RecordTable = TableDefinition<'static, u128, &'static [u8]>;

/// Every time-keyed table, for copies, checks and retention.
pub(crate) const RECORD_TABLES: [RecordTable; 4] = [ALERTS, EVENTS, CAMERA_STATUS, HEALTH_EVENTS];
/// Their names, in the same order, as metrics and reports give them.
pub const RECORD_TABLE_NAMES: [&str; 4] = ["alerts", "events", "camera_status", "health_events"];

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

pub fn unix_micros(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as i64)
}

static SEQUENCE: AtomicU16 = AtomicU16::new(0);

pub(crate) fn key(time_us: i64) -> u128 {
    ((time_us.max(0) as u128) << 16) | SEQUENCE.fetch_add(1, Ordering::Relaxed) as u128
}

/// Inserts an alert with id `id` unless it is already stored. Its key is in
/// the block of its capture microsecond (`time << 16`), starting at a slot
/// taken from the id and probing onwards past other alerts of the same
/// microsecond, so a retry of the same id always finds its earlier copy.
fn insert_once(
    table: &mut redb::Table<'_, u128, &[u8]>,
    time_us: i64,
    id: &str,
    bytes: &[u8],
) -> Result<(), StoreError> {
    #[derive(serde::Deserialize)]
    struct IdOnly {
        #[serde(default)]
        id: String,
    }
    let block = (time_us.max(0) as u128) << 16;
    let start = id.bytes().fold(0u16, |h, b| h.rotate_left(5) ^ u16::from(b));
    for step in 0..=u16::MAX {
        let slot = block | u128::from(start.wrapping_add(step));
        let taken_by = table
            .get(slot)
            .map_err(io)?
            .map(|value| serde_json::from_slice::<IdOnly>(value.value()).map(|r| r.id).unwrap_or_default());
        match taken_by {
            None => {
                table.insert(slot, bytes).map_err(io)?;
                return Ok(());
            }
            Some(stored) if stored == id => return Ok(()),
            Some(_) => continue,
        }
    }
    Err(StoreError::Io(format!("no free key for alert {id}: 65536 alerts in one microsecond")))
}

/// A file whose first page is all zeros was never given a header: a
/// creation cut short (by a full disk, or a crash) left it. It holds no
/// records; it is renamed aside (`*.unfinished`), so the store can be created.
fn set_aside_unfinished(path: &Path) {
    use std::io::Read;
    let Ok(mut file) = std::fs::File::open(path) else { return };
    let mut head = [0u8; 4096];
    let Ok(n) = file.read(&mut head) else { return };
    if head[..n].iter().all(|b| *b == 0) {
        let aside = path.with_extension("redb.unfinished");
        tracing::warn!("{} was never finished (no header); moving it to {}", path.display(), aside.display());
        let _ = std::fs::rename(path, aside);
    }
}

/// redb's page cache. Its default, 1 GiB, lets a growing database grow the
/// process's memory for months on a small box; reads here are recent pages.
const CACHE_BYTES: usize = 4 << 20;

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
        set_aside_unfinished(path);
        let existed = path.exists();
        let db = redb::Builder::new().set_cache_size(CACHE_BYTES).create(path).map_err(|e| {
            // A database this call began (on a full disk, say) has no header:
            // it would be refused as "not a redb database" from then on.
            if !existed {
                let _ = std::fs::remove_file(path);
            }
            match e {
                redb::DatabaseError::DatabaseAlreadyOpen => StoreError::InUse { path: shown.clone() },
                other => {
                    StoreError::Open { path: shown.clone(), reason: format!("not a readable event store: {other}") }
                }
            }
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
                    for table in RECORD_TABLES {
                        txn.open_table(table).map_err(io)?;
                    }
                    txn.open_table(REVIEWS).map_err(io)?;
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
    pub fn append(&self, records: &[Record]) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(io)?;
        {
            // Only the tables this batch touches are opened.
            let mut tables: [Option<redb::Table<'_, u128, &[u8]>>; 4] = [None, None, None, None];
            for record in records {
                let (index, time_us, bytes) = record.encode().map_err(io)?;
                let table = match &mut tables[index] {
                    Some(table) => table,
                    slot => slot.insert(txn.open_table(RECORD_TABLES[index]).map_err(io)?),
                };
                match record {
                    Record::Alert(alert) if !alert.id.is_empty() => {
                        insert_once(table, time_us, &alert.id, &bytes)?;
                    }
                    _ => {
                        table.insert(key(time_us), bytes.as_slice()).map_err(io)?;
                    }
                }
            }
        }
        txn.commit().map_err(io)
    }

    /// Writes alerts in one durable transaction.
    pub fn append_alerts(&self, alerts: &[AlertRecord]) -> Result<(), StoreError> {
        self.append(&alerts.iter().cloned().map(Record::Alert).collect::<Vec<_>>())
    }

    /// Alerts matching `query`, oldest first.
    /// With each alert's review merged in.
    pub fn alerts(&self, query: &Query) -> Result<Vec<AlertRecord>, StoreError> {
        let mut alerts =
            self.list(ALERTS, query, |r: &AlertRecord| query.matches(&r.camera, &r.class, Some(&r.rule)))?;
        let txn = self.db.begin_read().map_err(io)?;
        let reviews = txn.open_table(REVIEWS).map_err(io)?;
        for alert in alerts.iter_mut().filter(|a| !a.id.is_empty()) {
            if let Some(value) = reviews.get(alert.id.as_str()).map_err(io)? {
                alert.review = serde_json::from_slice(value.value()).ok();
            }
        }
        Ok(alerts)
    }

    /// The alert with id `id`. Ids are UUIDv7, made when the alert is
    /// raised, seconds after its capture time (the key): only the hour
    /// before the id's time is read.
    pub fn alert(&self, id: &str) -> Result<Option<AlertRecord>, StoreError> {
        let Ok(uuid) = uuid::Uuid::parse_str(id) else { return Ok(None) };
        let Some((secs, nanos)) = uuid.get_timestamp().map(|t| t.to_unix()) else { return Ok(None) };
        let raised_us = (secs as i64).saturating_mul(1_000_000) + i64::from(nanos / 1000);
        let query = Query {
            since_us: Some(raised_us - 3_600_000_000),
            until_us: Some(raised_us + 60_000_000),
            ..Query::default()
        };
        Ok(self.alerts(&query)?.into_iter().find(|a| a.id == id))
    }

    /// Records a person's verdict on alert `id`; `None` when there is no
    /// such alert. Marking is idempotent: the same mark twice leaves one review.
    pub fn review(&self, id: &str, mark: Mark, by: &str, now_us: i64) -> Result<Option<AlertReview>, StoreError> {
        let Some(alert) = self.alert(id)? else { return Ok(None) };
        let mut review = alert.review.unwrap_or_default();
        review.reviewed = true;
        match mark {
            Mark::Reviewed => {}
            Mark::FalsePositive => review.false_positive = true,
            Mark::NotFalsePositive => review.false_positive = false,
        }
        review.time_us = now_us;
        by.clone_into(&mut review.by);
        let bytes = serde_json::to_vec(&review).map_err(io)?;
        let txn = self.db.begin_write().map_err(io)?;
        txn.open_table(REVIEWS).map_err(io)?.insert(id, bytes.as_slice()).map_err(io)?;
        txn.commit().map_err(io)?;
        Ok(Some(review))
    }

    /// Track summaries matching `query` (its `rule` is ignored), oldest first.
    pub fn events(&self, query: &Query) -> Result<Vec<EventRecord>, StoreError> {
        self.list(EVENTS, query, |r: &EventRecord| query.matches(&r.camera, &r.class, None))
    }

    /// Camera state changes since `query.since_us`, oldest first.
    pub fn camera_status(&self, query: &Query) -> Result<Vec<CameraStatusRecord>, StoreError> {
        self.list(CAMERA_STATUS, query, |r: &CameraStatusRecord| query.camera.as_ref().is_none_or(|c| c == &r.camera))
    }

    /// Health transitions since `query.since_us`, oldest first.
    pub fn health_events(&self, query: &Query) -> Result<Vec<HealthRecord>, StoreError> {
        self.list(HEALTH_EVENTS, query, |_: &HealthRecord| true)
    }

    fn list<T: serde::de::DeserializeOwned>(
        &self,
        table: RecordTable,
        query: &Query,
        keep: impl Fn(&T) -> bool,
    ) -> Result<Vec<T>, StoreError> {
        let txn = self.db.begin_read().map_err(io)?;
        let table = txn.open_table(table).map_err(io)?;
        let from = (query.since_us.unwrap_or(0).max(0) as u128) << 16;
        let to = query.until_us.map_or(u128::MAX, |t| (t.max(0) as u128) << 16);
        // Newest first, stopping at the limit: a small page of a large
        // table decodes only what it returns.
        let limit = query.limit.unwrap_or(usize::MAX);
        let mut out = Vec::new();
        for entry in table.range(from..to).map_err(io)?.rev() {
            if out.len() >= limit {
                break;
            }
            let (_, value) = entry.map_err(io)?;
            let record: T = serde_json::from_slice(value.value()).map_err(io)?;
            if keep(&record) {
                out.push(record);
            }
        }
        out.reverse();
        Ok(out)
    }

    /// Deletes up to `max` records older than `before_us` from each table, in
    /// one short transaction, so retention never holds the writer for long.
    /// Answers how many went, per table name.
    pub fn delete_before(&self, before_us: i64, max: usize) -> Result<Vec<(&'static str, usize)>, StoreError> {
        let cutoff = (before_us.max(0) as u128) << 16;
        let txn = self.db.begin_write().map_err(io)?;
        let mut deleted = Vec::new();
        for (def, name) in RECORD_TABLES.into_iter().zip(RECORD_TABLE_NAMES) {
            let mut table = txn.open_table(def).map_err(io)?;
            let mut n = 0;
            let mut last = None;
            let mut reviewed_ids = Vec::new();
            for entry in table.range(..cutoff).map_err(io)?.take(max) {
                let (key, value) = entry.map_err(io)?;
                last = Some(key.value());
                n += 1;
                if name == "alerts"
                    && let Ok(alert) = serde_json::from_slice::<AlertRecord>(value.value())
                    && !alert.id.is_empty()
                {
                    reviewed_ids.push(alert.id);
                }
            }
            // An alert's review goes with it.
            let mut reviews = txn.open_table(REVIEWS).map_err(io)?;
            for id in &reviewed_ids {
                reviews.remove(id.as_str()).map_err(io)?;
            }
            if let Some(last) = last {
                table.retain_in(..=last, |_, _| false).map_err(io)?;
            }
            deleted.push((name, n));
        }
        txn.commit().map_err(io)?;
        Ok(deleted)
    }

    /// Copies every table into a new store at `dest` from one read
    /// transaction: a consistent copy while writes go on.
    pub fn copy_to(&self, dest: &Path) -> Result<usize, StoreError> {
        let _ = std::fs::remove_file(dest);
        let copy = Store::open(dest)?;
        let read = self.db.begin_read().map_err(io)?;
        let write = copy.db.begin_write().map_err(io)?;
        let mut copied = 0;
        for def in RECORD_TABLES {
            let from = read.open_table(def).map_err(io)?;
            let mut to = write.open_table(def).map_err(io)?;
            for entry in from.iter().map_err(io)? {
                let (k, v) = entry.map_err(io)?;
                to.insert(k.value(), v.value()).map_err(io)?;
                copied += 1;
            }
        }
        {
            let from = read.open_table(REVIEWS).map_err(io)?;
            let mut to = write.open_table(REVIEWS).map_err(io)?;
            for entry in from.iter().map_err(io)? {
                let (k, v) = entry.map_err(io)?;
                to.insert(k.value(), v.value()).map_err(io)?;
            }
        }
        write.commit().map_err(io)?;
        Ok(copied)
    }

    /// Records the time in `meta` durably: proves the file can be written.
    pub fn probe(&self) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(io)?;
        txn.open_table(META).map_err(io)?.insert("last_open_us", unix_micros(SystemTime::now()) as u64).map_err(io)?;
        txn.commit().map_err(io)
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
        id: String::new(),
        time_us,
        rule: "r".into(),
        camera: camera.into(),
        class: "person".into(),
        confidence: 0.9,
        track_ids: vec![1],
        distance_m: None,
        snapshot: "snapshots/x.jpg".into(),
        review: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_whose_creation_was_cut_short_is_set_aside_and_created() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        // What a full disk leaves: pages reserved, no header written.
        std::fs::write(&path, vec![0u8; 73_728]).unwrap();
        let store = Store::open(&path).unwrap();
        store.append(&[Record::Alert(test_alert(1, "a"))]).unwrap();
        assert!(dir.path().join("events.redb.unfinished").is_file());
        // A real database that is damaged is not touched: it is an error.
        drop(store);
        let other = dir.path().join("other.redb");
        std::fs::write(&other, b"not a database at all, and not zeros").unwrap();
        assert!(Store::open(&other).is_err());
        assert!(other.is_file() && !dir.path().join("other.redb.unfinished").exists());
    }

    #[test]
    fn an_alert_written_twice_is_stored_once_and_same_time_alerts_all_stay() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join(FILE)).unwrap();
        let with_id = |id: &str, rule: &str| {
            Record::Alert(AlertRecord { id: id.into(), rule: rule.into(), ..test_alert(5, "a") })
        };
        // A retry after a timeout: the same id again, alone and in a batch.
        store.append(&[with_id("0192-a", "r1")]).unwrap();
        store.append(&[with_id("0192-a", "r1"), with_id("0192-b", "r2")]).unwrap();
        store.append(&[with_id("0192-b", "r2")]).unwrap();
        // Many alerts of the same microsecond (rules on one frame), each kept.
        let many: Vec<Record> = (0..300).map(|i| with_id(&format!("id-{i}"), "r3")).collect();
        store.append(&many).unwrap();
        store.append(&many[..50]).unwrap();
        let stored = store.alerts(&Query::default()).unwrap();
        assert_eq!(stored.len(), 302);
        let ids: std::collections::HashSet<&str> = stored.iter().map(|a| a.id.as_str()).collect();
        assert_eq!(ids.len(), 302, "an id is stored twice");
        // Old records without ids are still appended as before.
        store.append(&[Record::Alert(test_alert(6, "a")), Record::Alert(test_alert(6, "a"))]).unwrap();
        assert_eq!(store.alerts(&Query::default()).unwrap().len(), 304);
    }

    #[test]
    fn alerts_round_trip_in_time_order_and_filter() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        let store = Store::open(&path).unwrap();
        store.append_alerts(&[test_alert(300, "b"), test_alert(100, "a"), test_alert(200, "a")]).unwrap();
        let all = store.alerts(&Query::default()).unwrap();
        assert_eq!(all.iter().map(|r| r.time_us).collect::<Vec<_>>(), [100, 200, 300]);
        let q = Query { since_us: Some(150), camera: Some("a".into()), ..Query::default() };
        assert_eq!(store.alerts(&q).unwrap().len(), 1);
        drop(store);
        // Reopened: still there; a second open while one is held is refused.
        let store = Store::open(&path).unwrap();
        assert_eq!(store.alerts(&Query::default()).unwrap().len(), 3);
        assert!(matches!(Store::open(&path), Err(StoreError::InUse { .. })));
    }

    #[test]
    fn every_kind_is_kept_apart_copied_whole_and_expired_in_batches() {
        use redb::TableHandle;
        for (def, name) in RECORD_TABLES.into_iter().zip(RECORD_TABLE_NAMES) {
            assert_eq!(def.name(), name);
        }
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join(FILE)).unwrap();
        let event = |t: i64, camera: &str| {
            Record::Event(EventRecord {
                first_seen_us: t,
                last_seen_us: t + 5,
                camera: camera.into(),
                class: "car".into(),
                track_id: t as u64,
                best_confidence: 0.8,
                snapshot: None,
            })
        };
        let status = |t: i64| {
            Record::CameraStatus(CameraStatusRecord {
                time_us: t,
                camera: "a".into(),
                state: "backoff".into(),
                error: None,
            })
        };
        let health = |t: i64| {
            Record::Health(HealthRecord {
                time_us: t,
                component: "disk".into(),
                ok: false,
                state: "critical".into(),
                error: None,
            })
        };
        let mut records: Vec<Record> = (1..=10).map(|t| event(t * 100, if t % 2 == 0 { "a" } else { "b" })).collect();
        records.extend([
            Record::Alert(test_alert(150, "a")),
            status(160),
            health(170),
            Record::Alert(test_alert(950, "a")),
        ]);
        store.append(&records).unwrap();

        let q = Query { camera: Some("a".into()), since_us: Some(300), ..Query::default() };
        let events = store.events(&q).unwrap();
        assert_eq!(events.iter().map(|e| e.first_seen_us).collect::<Vec<_>>(), [400, 600, 800, 1000]);
        assert!(store.events(&Query { rule: Some("r".into()), ..Query::default() }).unwrap().is_empty());
        assert_eq!(store.alerts(&Query::default()).unwrap().len(), 2);
        assert_eq!(store.camera_status(&Query::default()).unwrap().len(), 1);
        assert_eq!(store.health_events(&Query::default()).unwrap().len(), 1);

        let copy_path = dir.path().join("copy.redb");
        assert_eq!(store.copy_to(&copy_path).unwrap(), records.len());
        assert_eq!(Store::open(&copy_path).unwrap().events(&Query::default()).unwrap().len(), 10);

        // Older than 550 µs: events 100..500 (5), alert 150, status, health.
        // At most 2 per table per call, so it takes three calls.
        let mut gone = 0;
        for _ in 0..4 {
            let deleted = store.delete_before(550, 2).unwrap();
            assert!(deleted.iter().all(|(_, n)| *n <= 2));
            gone += deleted.iter().map(|(_, n)| n).sum::<usize>();
        }
        assert_eq!(gone, 8);
        assert_eq!(store.events(&Query::default()).unwrap()[0].first_seen_us, 600);
        assert_eq!(store.alerts(&Query::default()).unwrap().iter().map(|a| a.time_us).collect::<Vec<_>>(), [950]);
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
