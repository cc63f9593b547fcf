//! The event store against SQLite doing the same work in the same run:
//! durable inserts of track summaries at batch sizes 1, 100 and 1000 (redb
//! `Durability::Immediate` vs SQLite WAL with `synchronous = FULL`: each
//! commit is on disk when it returns), and a one-minute time-range query
//! over 1 M events, values decoded from JSON in both.
//!
//! `cargo bench --bench store`. The ratios go in the README.

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use rusqlite::{Connection, params};
use smart_cctv::store::{EventRecord, Query, Record, Store};
use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

/// Events 100 ms apart from this time: 1 M of them span about 28 hours.
const START_US: i64 = 1_780_000_000_000_000;
const STEP_US: i64 = 100_000;
const MILLION: i64 = 1_000_000;

fn event(i: i64) -> EventRecord {
    EventRecord {
        first_seen_us: START_US + i * STEP_US,
        last_seen_us: START_US + i * STEP_US + 4_000_000,
        camera: format!("camera-{}", i % 4),
        class: "person".into(),
        track_id: i as u64,
        best_confidence: 0.87,
        snapshot: None,
    }
}

fn sqlite(path: &Path) -> Connection {
    let db = Connection::open(path).expect("sqlite open");
    db.pragma_update(None, "journal_mode", "WAL").expect("wal");
    db.pragma_update(None, "synchronous", "FULL").expect("synchronous");
    db.execute_batch(
        "CREATE TABLE IF NOT EXISTS events (time_us INTEGER, seq INTEGER, value BLOB, PRIMARY KEY (time_us, seq)) WITHOUT ROWID",
    )
    .expect("schema");
    db
}

fn sqlite_insert(db: &mut Connection, events: &[EventRecord], seq: &mut i64) {
    let txn = db.transaction().expect("begin");
    {
        let mut insert = txn.prepare_cached("INSERT INTO events VALUES (?1, ?2, ?3)").expect("prepare");
        for e in events {
            *seq += 1;
            insert.execute(params![e.first_seen_us, *seq, serde_json::to_vec(e).expect("json")]).expect("insert");
        }
    }
    txn.commit().expect("commit");
}

fn sqlite_range(db: &Connection, from: i64, to: i64) -> Vec<EventRecord> {
    let mut query = db
        .prepare_cached("SELECT value FROM events WHERE time_us >= ?1 AND time_us < ?2 ORDER BY time_us, seq")
        .expect("prepare");
    let rows = query.query_map(params![from, to], |row| row.get::<_, Vec<u8>>(0)).expect("query");
    rows.map(|v| serde_json::from_slice(&v.expect("row")).expect("decode")).collect()
}

fn inserts(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("events.redb")).expect("redb");
    let mut lite = sqlite(&dir.path().join("events.sqlite"));
    let mut group = c.benchmark_group("store_insert");
    group.sample_size(20).measurement_time(Duration::from_secs(8));
    let mut seq = 0;
    for batch in [1usize, 100, 1000] {
        group.throughput(Throughput::Elements(batch as u64));
        // Fresh times for every batch, so each insert is a new key in both.
        let next = std::cell::Cell::new(0i64);
        let records = |n: usize| {
            let first = next.replace(next.get() + n as i64);
            (first..first + n as i64).map(event).collect::<Vec<_>>()
        };
        group.bench_function(format!("redb/batch_{batch}"), |b| {
            b.iter_batched(
                || records(batch).into_iter().map(Record::Event).collect::<Vec<_>>(),
                |r| store.append(&r).expect("append"),
                BatchSize::SmallInput,
            )
        });
        group.bench_function(format!("sqlite_wal/batch_{batch}"), |b| {
            b.iter_batched(|| records(batch), |r| sqlite_insert(&mut lite, &r, &mut seq), BatchSize::SmallInput)
        });
    }
    group.finish();
}

fn range_query(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("events.redb")).expect("redb");
    let mut lite = sqlite(&dir.path().join("events.sqlite"));
    let mut seq = 0;
    for chunk in (0..MILLION).collect::<Vec<_>>().chunks(20_000) {
        let events: Vec<EventRecord> = chunk.iter().map(|&i| event(i)).collect();
        sqlite_insert(&mut lite, &events, &mut seq);
        store.append(&events.into_iter().map(Record::Event).collect::<Vec<_>>()).expect("append");
    }
    // One minute in the middle of the 28 hours: 600 events.
    let from = START_US + MILLION / 2 * STEP_US;
    let to = from + 60_000_000;
    let query = Query { since_us: Some(from), until_us: Some(to), ..Query::default() };
    assert_eq!(store.events(&query).expect("range").len(), 600);
    assert_eq!(sqlite_range(&lite, from, to).len(), 600);

    let mut group = c.benchmark_group("store_range_1m_events");
    group.throughput(Throughput::Elements(600));
    group.bench_function("redb/one_minute", |b| b.iter(|| black_box(store.events(&query).expect("range"))));
    group.bench_function("sqlite_wal/one_minute", |b| b.iter(|| black_box(sqlite_range(&lite, from, to))));
    group.finish();
}

criterion_group!(benches, inserts, range_query);
criterion_main!(benches);
