//! Schema upgrades, one file per step (`v1_to_v2.rs`, ...), each run in its
//! own write transaction that also records the new version, so a crash
//! mid-upgrade leaves the file at the old version, intact.

mod v1_to_v2;
mod v2_to_v3;
mod v3_to_v4;

use super::{META, SCHEMA_VERSION, StoreError, io};
use redb::Database;

type Step = fn(&redb::WriteTransaction) -> Result<(), StoreError>;

/// `STEPS[i]` upgrades version `i + 1` to `i + 2`.
const STEPS: &[Step] = &[v1_to_v2::run, v2_to_v3::run, v3_to_v4::run];

// One upgrader per version up to the current one.
const _: () = assert!(STEPS.len() as u64 == SCHEMA_VERSION - 1);

/// Upgrades `db` from `from` to [`SCHEMA_VERSION`]; returns the versions it went through.
pub fn upgrade(db: &Database, from: u64) -> Result<Vec<u64>, StoreError> {
    let mut done = Vec::new();
    for version in from..SCHEMA_VERSION {
        let step =
            STEPS.get(version as usize - 1).ok_or_else(|| StoreError::Io(format!("no upgrade from v{version}")))?;
        let txn = db.begin_write().map_err(io)?;
        step(&txn)?;
        txn.open_table(META).map_err(io)?.insert("schema_version", version + 1).map_err(io)?;
        txn.commit().map_err(io)?;
        done.push(version + 1);
    }
    Ok(done)
}
