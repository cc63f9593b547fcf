//! v3 → v4: adds the alert reviews table (reviewed, false positive).
//! Everything already stored is untouched.

use crate::store::{REVIEWS, StoreError, io};

pub fn run(txn: &redb::WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(REVIEWS).map_err(io)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::store::*;
    use redb::Database;

    /// A v3 file as the third release wrote it: no reviews table.
    fn v3_file(path: &Path, alert: &AlertRecord) {
        let db = Database::create(path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(META).unwrap().insert("schema_version", 3).unwrap();
        let bytes = serde_json::to_vec(alert).unwrap();
        txn.open_table(ALERTS).unwrap().insert((alert.time_us as u128) << 16, bytes.as_slice()).unwrap();
        for table in [EVENTS, CAMERA_STATUS, HEALTH_EVENTS] {
            txn.open_table(table).unwrap();
        }
        txn.commit().unwrap();
    }

    #[test]
    fn v3_gains_a_reviews_table_and_its_alerts_can_be_marked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        let id = uuid::Uuid::now_v7().to_string();
        let alert = AlertRecord { id: id.clone(), ..test_alert(unix_micros(SystemTime::now()) - 2_000_000, "old") };
        v3_file(&path, &alert);
        assert!(matches!(Store::open(&path), Err(StoreError::OlderSchema { found: 3, .. })));
        assert_eq!(Store::migrate(&path).unwrap(), vec![4]);
        let store = Store::open(&path).unwrap();
        assert_eq!(store.alerts(&Query::default()).unwrap(), vec![alert]);
        let review = store.review(&id, Mark::FalsePositive, "ann", 7).unwrap().unwrap();
        assert!(review.reviewed && review.false_positive);
        assert_eq!(store.alerts(&Query::default()).unwrap()[0].review.as_ref(), Some(&review));
    }
}
