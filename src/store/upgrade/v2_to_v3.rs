//! v2 → v3: adds the events table (one summary per tracked object).
//! Everything already stored is untouched.

use crate::store::{EVENTS, StoreError, io};

pub fn run(txn: &redb::WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(EVENTS).map_err(io)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::store::*;
    use redb::Database;

    /// A v2 file as the second release wrote it: no events table.
    fn v2_file(path: &Path) {
        let db = Database::create(path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(META).unwrap().insert("schema_version", 2).unwrap();
        let bytes = serde_json::to_vec(&test_alert(42, "old")).unwrap();
        txn.open_table(ALERTS).unwrap().insert(42u128 << 16, bytes.as_slice()).unwrap();
        txn.open_table(CAMERA_STATUS).unwrap();
        txn.open_table(HEALTH_EVENTS).unwrap();
        txn.commit().unwrap();
    }

    #[test]
    fn v2_gains_an_events_table_and_keeps_its_alerts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        v2_file(&path);
        assert!(matches!(Store::open(&path), Err(StoreError::OlderSchema { found: 2, .. })));
        assert_eq!(Store::migrate(&path).unwrap(), vec![3, 4]);
        let store = Store::open(&path).unwrap();
        assert_eq!(store.schema_version().unwrap(), Some(SCHEMA_VERSION));
        assert_eq!(store.alerts(&Query::default()).unwrap(), vec![test_alert(42, "old")]);
        assert!(store.events(&Query::default()).unwrap().is_empty());
    }
}
