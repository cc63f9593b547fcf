//! v1 → v2: adds the tables for camera status changes and health events
//! beside the alerts. Existing alerts are untouched.

use crate::store::{CAMERA_STATUS, HEALTH_EVENTS, StoreError, io};

pub fn run(txn: &redb::WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(CAMERA_STATUS).map_err(io)?;
    txn.open_table(HEALTH_EVENTS).map_err(io)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::store::*;
    use redb::Database;

    /// A v1 file as the first release wrote it: meta and alerts only.
    fn v1_file(path: &Path) {
        let db = Database::create(path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(META).unwrap().insert("schema_version", 1).unwrap();
        let bytes = serde_json::to_vec(&test_alert(42, "old")).unwrap();
        txn.open_table(ALERTS).unwrap().insert(42u128 << 16, bytes.as_slice()).unwrap();
        txn.commit().unwrap();
    }

    #[test]
    fn v1_is_refused_until_migrated_and_keeps_its_alerts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        v1_file(&path);
        assert!(matches!(Store::open(&path), Err(StoreError::OlderSchema { found: 1, .. })));
        assert_eq!(Store::migrate(&path).unwrap(), vec![2, 3, 4]);
        let store = Store::open(&path).unwrap();
        assert_eq!(store.schema_version().unwrap(), Some(SCHEMA_VERSION));
        assert_eq!(store.alerts(&Query::default()).unwrap(), vec![test_alert(42, "old")]);
        let txn = store.db.begin_read().unwrap();
        assert!(txn.open_table(CAMERA_STATUS).is_ok() && txn.open_table(HEALTH_EVENTS).is_ok());
        drop(txn);
        drop(store);
        assert!(Store::migrate(&path).unwrap().is_empty(), "a current file needs nothing");
    }
}
