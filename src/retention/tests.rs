use super::*;

const DAY: Duration = Duration::from_secs(86_400);

/// A file of `bytes` bytes last modified `age` before `now`.
fn file(path: &Path, bytes: usize, now: SystemTime, age: Duration) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, vec![7u8; bytes]).unwrap();
    std::fs::File::options().write(true).open(path).unwrap().set_modified(now - age).unwrap();
}

#[test]
fn exactly_the_expired_snapshots_go_and_empty_days_with_them() {
    let dir = tempfile::tempdir().unwrap();
    let snaps = dir.path().join("snapshots");
    // A fixed "now" a year from the real one: nothing depends on the wall clock.
    let now = SystemTime::now() + 365 * DAY;
    file(&snaps.join("d1/old_a.jpg"), 10, now, 9 * DAY);
    file(&snaps.join("d1/old_b.jpg"), 10, now, 8 * DAY);
    file(&snaps.join("d2/edge.jpg"), 10, now, 7 * DAY - Duration::from_secs(60));
    file(&snaps.join("d3/new.jpg"), 10, now, DAY);
    file(&snaps.join("d3/notes.txt"), 10, now, 30 * DAY);
    file(&snaps.join(".pending/d0/inflight.jpg"), 10, now, 30 * DAY);

    let outcome = sweep_snapshots(&snaps, now, 7 * DAY, None);
    assert_eq!(outcome.deleted, BTreeMap::from([(("snapshot", Reason::Age), 2)]));
    assert_eq!(outcome.freed_bytes, 20);
    assert!(!snaps.join("d1").exists(), "an emptied day folder goes");
    for kept in ["d2/edge.jpg", "d3/new.jpg", "d3/notes.txt", ".pending/d0/inflight.jpg"] {
        assert!(snaps.join(kept).exists(), "{kept} must stay");
    }
    assert!(outcome.errors.is_empty());
}

#[test]
fn the_size_quota_keeps_the_newest() {
    let dir = tempfile::tempdir().unwrap();
    let snaps = dir.path().join("snapshots");
    let now = SystemTime::now();
    for (i, name) in ["a", "b", "c", "d", "e"].iter().enumerate() {
        // a is the oldest, e the newest; 100 bytes each.
        file(&snaps.join(format!("day/{name}.jpg")), 100, now, Duration::from_secs(3600 * (5 - i as u64)));
    }
    let outcome = sweep_snapshots(&snaps, now, 7 * DAY, Some(250));
    assert_eq!(outcome.deleted, BTreeMap::from([(("snapshot", Reason::Quota), 3)]));
    let left: Vec<String> =
        list_snapshots(&snaps).iter().map(|f| f.path.file_name().unwrap().to_string_lossy().into()).collect();
    assert_eq!(left, ["d.jpg", "e.jpg"]);

    // Pressure frees at least what it is asked, oldest first.
    let outcome = free_snapshots(&snaps, 50);
    assert_eq!(outcome.deleted, BTreeMap::from([(("snapshot", Reason::Pressure), 1)]));
    assert!(snaps.join("day/e.jpg").exists() && !snaps.join("day/d.jpg").exists());
}

#[test]
fn logs_are_gzipped_then_deleted_on_schedule() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path();
    let now = SystemTime::now() + 365 * DAY;
    file(&logs.join("app.log"), 100, now, 200 * DAY);
    file(&logs.join("app.2026-01-01.log"), 1000, now, 40 * DAY);
    file(&logs.join("errors.2026-01-02.1.log"), 1000, now, 31 * DAY);
    file(&logs.join("app.2026-02-01.log"), 1000, now, 5 * DAY);
    file(&logs.join("app.2025-09-01.log.gz"), 100, now, 95 * DAY);
    file(&logs.join("app.2025-12-01.log.gz"), 100, now, 60 * DAY);
    file(&logs.join("alerts.2025-08-01.log"), 100, now, 120 * DAY);

    let outcome = sweep_logs(logs, now, 30 * DAY, 90 * DAY);
    assert_eq!(outcome.compressed, 2);
    assert_eq!(outcome.deleted, BTreeMap::from([(("log", Reason::Age), 2)]));
    let mut names: Vec<String> =
        std::fs::read_dir(logs).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into()).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "app.2025-12-01.log.gz",
            "app.2026-01-01.log.gz",
            "app.2026-02-01.log",
            "app.log",
            "errors.2026-01-02.1.log.gz"
        ]
    );
    // The archive keeps the log's time (so it is deleted 90 days after the
    // log was written, not after it was compressed) and its content.
    let gz = logs.join("app.2026-01-01.log.gz");
    let modified = std::fs::metadata(&gz).unwrap().modified().unwrap();
    assert_eq!(modified, now - 40 * DAY);
    let mut text = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(std::fs::File::open(&gz).unwrap()), &mut text)
        .unwrap();
    assert_eq!(text, vec![7u8; 1000]);

    // 51 more days on: the new archive is past 90 days and goes too.
    let later = sweep_logs(logs, now + 51 * DAY, 30 * DAY, 90 * DAY);
    assert!(!gz.exists());
    assert!(later.deleted[&("log", Reason::Age)] >= 2);
}
