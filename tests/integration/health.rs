//! Health, resources and retention in the real process: a dead RTSP camera
//! on /healthz while the watchdog keeps petting, a stalled runtime that stops
//! the pets, retention against back-dated files and records, disk pressure on
//! a small filesystem, and `status` against the running service.

use crate::support::*;
use crate::testbed::RtspServer;
use smart_cctv::store::{EventRecord, Query, Record, Store};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

const DAY: Duration = Duration::from_secs(86_400);

crate::tests![
    retention_removes_exactly_what_expired_and_status_shows_the_service,
    disk_pressure_frees_space_oldest_snapshots_first needs [Tmpfs],
    a_dead_camera_is_named_but_only_a_wedged_runtime_stops_the_watchdog needs [RtspServer],
    scheduled_backups_are_written_verified_and_rotated,
];

/// A service config on the random-weights model (these tests need one that runs).
fn config(cameras: &str, extra: &str) -> String {
    format!(
        "cameras:{cameras}\nprocessing:\n  detection:\n    model: {}\n    size: 320\nhttp:\n  listen: \"{{listen}}\"\n{extra}",
        crate::fixtures::random_model().display()
    )
}

/// The value of a labelled series, written as Prometheus renders it.
fn series(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(name_and_labels)?.strip_prefix(' ')?.trim().parse().ok())
}

fn backdated(path: &Path, bytes: usize, age: Duration) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, vec![1u8; bytes]).unwrap();
    std::fs::File::options().write(true).open(path).unwrap().set_modified(SystemTime::now() - age).unwrap();
}

fn event(age: Duration, id: u64) -> Record {
    let t = smart_cctv::store::unix_micros(SystemTime::now() - age);
    Record::Event(EventRecord {
        first_seen_us: t,
        last_seen_us: t + 1_000_000,
        camera: "yard".into(),
        class: "person".into(),
        track_id: id,
        best_confidence: 0.9,
        snapshot: None,
    })
}

fn retention_removes_exactly_what_expired_and_status_shows_the_service() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let snaps = data.join("snapshots");
    backdated(&snaps.join("2020-01-01/yard_000000_old.jpg"), 1000, 10 * DAY);
    backdated(&snaps.join("2020-01-02/yard_000000_old.jpg"), 1000, 8 * DAY);
    backdated(&snaps.join("2020-01-08/yard_000000_new.jpg"), 1000, DAY);
    backdated(&data.join("logs/app.2020-01-01.log"), 5000, 40 * DAY);
    backdated(&data.join("logs/app.2019-10-01.log.gz"), 500, 100 * DAY);
    backdated(&data.join("logs/app.2020-02-01.log"), 500, 2 * DAY);
    {
        let store = Store::open(&data.join("events.redb")).unwrap();
        let mut records: Vec<Record> = (0..1200).map(|i| event(40 * DAY, i)).collect();
        records.extend((0..5).map(|i| event(DAY, 10_000 + i)));
        store.append(&records).unwrap();
    }
    let extra = "retention:\n  snapshots_days: 7\n  events_days: 30\n  logs_compress_days: 30\n  logs_delete_days: 90\n  delete_batch: 100\nhealth:\n  interval: 200ms\n";
    let service = Service::start_in(dir, &config(" []", extra), &[]);
    service.wait_healthy(Duration::from_secs(60));
    let (_, metrics) = wait_for("retention to delete the old events", Duration::from_secs(60), || {
        let (code, text) = service.get("/metrics");
        (series(&text, r#"smart_cctv_retention_deleted_total{kind="event",reason="age"}"#) == Some(1200.0))
            .then_some((code, text))
    });
    assert_eq!(series(&metrics, r#"smart_cctv_retention_deleted_total{kind="snapshot",reason="age"}"#), Some(2.0));
    assert_eq!(series(&metrics, r#"smart_cctv_retention_deleted_total{kind="log",reason="age"}"#), Some(1.0));
    assert_eq!(series(&metrics, r#"smart_cctv_retention_compressed_total{kind="log"}"#), Some(1.0));
    assert!(!snaps.join("2020-01-01").exists() && !snaps.join("2020-01-02").exists());
    assert!(snaps.join("2020-01-08/yard_000000_new.jpg").is_file());
    assert!(data.join("logs/app.2020-01-01.log.gz").is_file() && !data.join("logs/app.2020-01-01.log").exists());
    assert!(!data.join("logs/app.2019-10-01.log.gz").exists());
    assert!(data.join("logs/app.2020-02-01.log").is_file());

    // `status` reads the running service: the store, the disk, the process.
    wait_for("a resource sample", Duration::from_secs(10), || {
        service.get("/api/status").1.contains("\"process\"").then_some(())
    });
    let out =
        std::process::Command::new(BIN).arg("--config").arg(service.config_path()).arg("status").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.starts_with("smart-cctv: healthy"), "{text}");
    for line in ["store", "disk", "detector"] {
        assert!(
            text.lines()
                .any(|l| l.starts_with(line) && l.contains("ready") || l.starts_with("disk") && l.contains("ok")),
            "{line}: {text}"
        );
    }
    assert!(text.contains("% used") && text.contains("process: cpu"), "{text}");
    let (_, status) = service.get("/api/status");
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    let threads = status["details"]["process"]["threads"].as_u64().unwrap();
    assert!(text.contains(&format!("{threads} threads")), "{text}");

    // The five recent events are all that is left.
    let mut service = service;
    signal(&service.child, libc::SIGTERM);
    assert_eq!(wait_exit(&mut service.child, Duration::from_secs(15)).code(), Some(0));
    let store = Store::open(&data.join("events.redb")).unwrap();
    let left = store.events(&Query::default()).unwrap();
    assert_eq!(left.len(), 5, "{left:?}");
}

fn disk_pressure_frees_space_oldest_snapshots_first() {
    let disk = SmallDisk::mount("32m");
    let dir = tempfile::tempdir_in(disk.path()).unwrap();
    let snaps = dir.path().join("data/snapshots");
    // Recent snapshots (well within the 7 days) until the disk is 93% used.
    let mut n = 0u64;
    while smart_cctv::health::disk::usage(disk.path()).unwrap().used_percent < 93.0 {
        backdated(&snaps.join(format!("day/yard_{n:06}_r.jpg")), 256 * 1024, Duration::from_secs(86_000 - n * 60));
        n += 1;
    }
    let newest = snaps.join(format!("day/yard_{:06}_r.jpg", n - 1));
    let extra = "health:\n  interval: 200ms\n  disk_warn_percent: 80\n  disk_critical_percent: 90\n";
    let service = Service::start_in(dir, &config(" []", extra), &[]);
    // The deletions are counted once the whole pass (records included) is done.
    let (freed, pressure) = wait_for("disk use back under 90%, counted", Duration::from_secs(60), || {
        let used = smart_cctv::health::disk::usage(disk.path()).unwrap().used_percent;
        let metrics = http_get(service.addr, "/metrics").map(|(_, text)| text).unwrap_or_default();
        let pressure = series(&metrics, r#"smart_cctv_retention_deleted_total{kind="snapshot",reason="pressure"}"#);
        (used < 90.0 && pressure.is_some()).then_some((used, pressure))
    });
    assert!(pressure.is_some_and(|n| n >= 1.0), "{pressure:?}");
    assert!(newest.is_file(), "the newest snapshot must stay");
    assert!(!snaps.join("day/yard_000000_r.jpg").exists(), "the oldest goes first");
    assert!(freed < 90.0);
    let log = service.log("app.log");
    assert!(log.contains("disk-pressure mode"), "{log}");
}

/// Reads `WATCHDOG=1` datagrams, noting when each came.
fn pets(socket: &UnixDatagram, within: Duration) -> Vec<Instant> {
    let deadline = Instant::now() + within;
    let mut seen = Vec::new();
    let mut buf = [0u8; 256];
    while Instant::now() < deadline {
        socket
            .set_read_timeout(Some(deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1))))
            .unwrap();
        if let Ok(n) = socket.recv(&mut buf)
            && String::from_utf8_lossy(&buf[..n]).contains("WATCHDOG=1")
        {
            seen.push(Instant::now());
        }
    }
    seen
}

fn a_dead_camera_is_named_but_only_a_wedged_runtime_stops_the_watchdog() {
    let mut server = RtspServer::start(free_port(), None, &["cam=test:320x240@15"]);
    let camera = format!(
        "\n  - id: porch\n    url: \"{}\"\n    stall_timeout: 2s\n    backoff: {{ initial: 500ms, max: 1s }}",
        server.url("", "cam")
    );
    let notify_dir = tempfile::tempdir().unwrap();
    let notify_path = notify_dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    let service = Service::start(
        &config(&camera, ""),
        &[("NOTIFY_SOCKET", notify_path.to_str().unwrap()), ("WATCHDOG_USEC", "600000")],
    );
    service.wait_healthy(Duration::from_secs(60));

    // The camera dies: /healthz names it, and the pets go on.
    server.stop();
    let (_, body) = wait_for("/healthz to name the camera", Duration::from_secs(30), || {
        Some(service.get("/healthz")).filter(|(code, body)| *code == 503 && body.contains("camera/porch"))
    });
    assert!(!body.contains("root/"), "only the camera is down: {body}");
    let while_down = pets(&notify, Duration::from_secs(3));
    assert!(while_down.len() >= 3, "pets while the camera is down: {}", while_down.len());
    server.restart();
    wait_for("/healthz back to 200", Duration::from_secs(30), || (service.get("/healthz").0 == 200).then_some(()));

    // A wedged runtime: no pets for as long as it is stalled, then they resume.
    notify.set_nonblocking(true).unwrap();
    while notify.recv(&mut [0u8; 256]).is_ok() {}
    notify.set_nonblocking(false).unwrap();
    let (code, body) = http_post(service.addr, "/api/faults/stall?seconds=4");
    assert_eq!(code, 200, "{body}");
    let stalled_at = Instant::now();
    let around = pets(&notify, Duration::from_secs(7));
    let gap = around
        .windows(2)
        .map(|w| w[1] - w[0])
        .chain(around.first().map(|first| *first - stalled_at))
        .max()
        .unwrap_or_default();
    assert!(gap >= Duration::from_secs(3), "longest gap between pets {gap:?}; pets: {}", around.len());
    assert!(around.last().is_some_and(|t| *t - stalled_at > Duration::from_secs(4)), "pets resumed after the stall");
}

fn scheduled_backups_are_written_verified_and_rotated() {
    use std::os::unix::fs::PermissionsExt;
    let out = tempfile::tempdir().unwrap();
    let extra =
        format!("health:\n  interval: 200ms\nbackup:\n  every: 1s\n  keep: 2\n  to: {}\n", out.path().display());
    let service = Service::start(&config(" []", &extra), &[]);
    wait_for("three scheduled backups", Duration::from_secs(60), || {
        let metrics = http_get(service.addr, "/metrics").map(|(_, text)| text).unwrap_or_default();
        (series(&metrics, r#"smart_cctv_backups_total{result="ok"}"#).unwrap_or(0.0) >= 3.0).then_some(())
    });
    let mut archives: Vec<_> = std::fs::read_dir(out.path()).unwrap().flatten().map(|e| e.path()).collect();
    archives.sort();
    assert_eq!(archives.len(), 2, "backup.keep is 2: {archives:?}");
    for archive in &archives {
        assert_eq!(std::fs::metadata(archive).unwrap().permissions().mode() & 0o777, 0o600);
    }
    // Each is a backup `ops restore` accepts.
    let verify = std::process::Command::new(BIN)
        .arg("--config")
        .arg(service.config_path())
        .arg("--data-dir")
        .arg(service.data_dir())
        .args(["ops", "restore", "--verify"])
        .arg(archives.last().unwrap())
        .output()
        .unwrap();
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stderr));
    assert!(!service.log("errors.log").contains("scheduled backup failed"), "{}", service.log("errors.log"));
}
