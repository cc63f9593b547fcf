//! The open database, shared for reading with callers other than the store
//! actor (the HTTP lists). Each read runs in its own redb read transaction on
//! a blocking thread, so a long list never holds up the actor's writes; redb
//! allows any number of readers beside the one writer.
//!
//! The store actor publishes the database when it opens it and withdraws it
//! when it stops or reopens, so a reader never keeps a failed database open
//! under its replacement. Compaction takes the lock exclusively: it waits for
//! the reads under way, and reads that arrive meanwhile wait for it.

use super::{Store, StoreError};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// The database as the store actor holds it.
pub type Database = Arc<tokio::sync::RwLock<Store>>;

/// Where readers find the database the store actor has open, if any.
#[derive(Clone, Default)]
pub struct SharedStore(Arc<Mutex<Option<Database>>>);

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("the event store is down")]
    Down,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the read did not finish: {0}")]
    Interrupted(String),
}

impl SharedStore {
    fn slot(&self) -> MutexGuard<'_, Option<Database>> {
        // The slot holds one Arc; a panic while it was held cannot leave it torn.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn publish(&self, database: Database) {
        *self.slot() = Some(database);
    }

    /// Takes the database away from new readers and waits for the reads
    /// under way, so that the file is closed once the caller drops its own.
    pub(super) async fn withdraw(&self) {
        let taken = self.slot().take();
        if let Some(database) = taken {
            drop(database.write().await);
        }
    }

    /// Runs `read` on the open database, off the async threads.
    pub async fn read<T: Send + 'static>(
        &self,
        read: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, ReadError> {
        let database = self.slot().clone().ok_or(ReadError::Down)?;
        let guard = database.read_owned().await;
        tokio::task::spawn_blocking(move || read(&guard))
            .await
            .map_err(|e| ReadError::Interrupted(e.to_string()))?
            .map_err(ReadError::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Query, test_alert};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reads_run_beside_the_owner_and_stop_when_withdrawn() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.redb");
        let shared = SharedStore::default();
        assert!(matches!(shared.read(|s| s.alerts(&Query::default())).await, Err(ReadError::Down)));

        let database: Database = Arc::new(tokio::sync::RwLock::new(Store::open(&path).unwrap()));
        shared.publish(database.clone());
        database.read().await.append_alerts(&[test_alert(1_000_000, "front")]).unwrap();
        let listed = shared.read(|s| s.alerts(&Query::default())).await.unwrap();
        assert_eq!(listed.len(), 1);

        // While a reader holds the database, the owner still writes.
        let held = database.clone().read_owned().await;
        database.read().await.append_alerts(&[test_alert(2_000_000, "front")]).unwrap();
        drop(held);
        assert_eq!(shared.read(|s| s.alerts(&Query::default())).await.unwrap().len(), 2);

        shared.withdraw().await;
        assert!(matches!(shared.read(|s| s.alerts(&Query::default())).await, Err(ReadError::Down)));
        // Once the owner drops its handle too, the file can be opened again.
        drop(database);
        Store::open(&path).unwrap();
    }
}
