//! Cameras against real peers: RTSP servers on loopback (stopped, hung,
//! password-protected), corrupted and truncated clips, a missing V4L2 device,
//! and reloads that add, remove and change cameras.

use crate::support::*;
use crate::testbed::RtspServer;
use crate::{fixtures_or_skip, testbed_or_skip};
use serde_json::Value;
use std::time::{Duration, Instant};

/// A service config with these camera entries (YAML list items), detection at
/// 320 on the fixture weights.
fn config(fixtures: &std::path::Path, cameras: &str) -> String {
    format!(
        "cameras:\n{cameras}processing:\n  detection:\n    model: {}\n    size: 320\nhttp:\n  listen: \"{{listen}}\"\n",
        fixtures.join("yolov8n/yolov8n.safetensors").display()
    )
}

/// One camera entry with fast failure handling for tests.
fn camera(id: &str, url: &str, extra: &str) -> String {
    format!(
        "  - id: {id}\n    url: \"{url}\"\n    stall_timeout: 2s\n    backoff: {{ initial: 500ms, max: 1s }}\n    auth_backoff: {{ initial: 1s, max: 2s }}\n{extra}"
    )
}

/// `/api/status`, or `Null` while the service is not answering yet.
fn status(service: &Service) -> Value {
    http_get(service.addr, "/api/status")
        .ok()
        .and_then(|(_, body)| serde_json::from_str(&body).ok())
        .unwrap_or(Value::Null)
}

fn camera_detail(service: &Service, id: &str) -> Option<Value> {
    status(service)["details"].get(format!("camera/{id}")).cloned()
}

fn phase(service: &Service, id: &str) -> Option<String> {
    camera_detail(service, id).and_then(|d| d["phase"].as_str().map(str::to_owned))
}

fn frames(service: &Service, id: &str) -> u64 {
    camera_detail(service, id).and_then(|d| d["frames"].as_u64()).unwrap_or(0)
}

fn wait_phase(service: &Service, id: &str, want: &str, timeout: Duration) -> Duration {
    let start = Instant::now();
    wait_for(&format!("camera {id} to be {want}"), timeout, || {
        (phase(service, id).as_deref() == Some(want)).then_some(())
    });
    start.elapsed()
}

/// Frames per second of `id` over `window`.
fn rate(service: &Service, id: &str, window: Duration) -> f64 {
    let (f0, t0) = (frames(service, id), Instant::now());
    std::thread::sleep(window);
    (frames(service, id) - f0) as f64 / t0.elapsed().as_secs_f64()
}

#[test]
fn a_lost_camera_backs_off_and_recovers_without_disturbing_the_other() {
    let fixtures = fixtures_or_skip!();
    let testbed = testbed_or_skip!();
    let mut a = RtspServer::start(&testbed, free_port(), None, &["cam=test:320x240@15"]);
    let b = RtspServer::start(&testbed, free_port(), None, &["cam=test:320x240@15"]);
    let cams = camera("a", &a.url("", "cam"), "") + &camera("b", &b.url("", "cam"), "");
    let service = Service::start(&config(&fixtures, &cams), &[]);
    wait_phase(&service, "a", "streaming", Duration::from_secs(20));
    wait_phase(&service, "b", "streaming", Duration::from_secs(20));

    let before = rate(&service, "b", Duration::from_secs(4));
    a.stop();
    wait_phase(&service, "a", "backoff", Duration::from_secs(10));
    let during = rate(&service, "b", Duration::from_secs(4));
    assert!((during - before).abs() / before <= 0.10, "camera b went from {before:.1} to {during:.1} fps");
    assert_eq!(status(&service)["down"]["camera/a"]["state"], "backoff");

    a.restart();
    // Back within the longest backoff (1 s) plus the stall timeout (2 s).
    let took = wait_phase(&service, "a", "streaming", Duration::from_secs(3));
    eprintln!("camera a recovered {took:?} after its server came back");
    let (_, metrics) = service.get("/metrics");
    assert!(metrics.contains("smart_cctv_camera_reconnects_total{camera=\"a\"}"), "{metrics}");
    assert!(!metrics.contains("smart_cctv_camera_reconnects_total{camera=\"b\"}"));
}

#[test]
fn wrong_password_is_auth_failed_and_never_leaks() {
    let fixtures = fixtures_or_skip!();
    let testbed = testbed_or_skip!();
    let secret = "WrongPa55word";
    let server = RtspServer::start(&testbed, free_port(), Some("admin:s3cret"), &["cam=test:320x240@15"]);
    let cams = camera("locked", &server.url(&format!("admin:{secret}@"), "cam"), "")
        + &camera("open", &server.url("admin:s3cret@", "cam"), "");
    let service = Service::start(&config(&fixtures, &cams), &[]);
    wait_phase(&service, "locked", "auth_failed", Duration::from_secs(20));
    wait_phase(&service, "open", "streaming", Duration::from_secs(20));
    let (code, health) = service.get("/healthz");
    assert_eq!(code, 503);
    assert!(health.contains("camera/locked") && health.contains("auth_failed"), "{health}");
    // Let it retry once or twice, then look everywhere for the password.
    std::thread::sleep(Duration::from_secs(3));
    let places = [
        service.log("app.log"),
        service.log("errors.log"),
        service.output(),
        service.get("/metrics").1,
        service.get("/api/status").1,
        service.get("/api/config").1,
        health,
    ];
    for text in &places {
        assert!(!text.contains(secret) && !text.contains("s3cret"), "a password leaked:\n{text}");
    }
    assert!(service.log("app.log").contains("authentication failed"));
}

#[test]
fn a_hung_camera_is_a_stall_within_the_timeout() {
    let fixtures = fixtures_or_skip!();
    let testbed = testbed_or_skip!();
    let server = RtspServer::start(&testbed, free_port(), None, &["cam=test:320x240@15"]);
    let service = Service::start(&config(&fixtures, &camera("hung", &server.url("", "cam"), "")), &[]);
    wait_phase(&service, "hung", "streaming", Duration::from_secs(20));
    // The server keeps the connection open but sends nothing.
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(server.pid(), libc::SIGSTOP) };
    let took = wait_phase(&service, "hung", "backoff", Duration::from_secs(3));
    eprintln!("stall detected {took:?} after the server hung (stall_timeout 2 s)");
    let detail = camera_detail(&service, "hung").unwrap();
    assert!(detail["last_error"].as_str().unwrap().contains("stalled"), "{detail}");
    // SAFETY: as above.
    unsafe { libc::kill(server.pid(), libc::SIGCONT) };
    wait_phase(&service, "hung", "streaming", Duration::from_secs(10));
}

#[test]
fn corrupted_and_truncated_clips_keep_decoding() {
    let fixtures = fixtures_or_skip!();
    let dir = tempfile::tempdir().unwrap();
    let clip = std::fs::read(fixtures.join("video/people_walking_640x480_15fps_10s.mp4")).unwrap();
    // Bit flips all through the media data (the index is at the front: +faststart).
    let mut corrupted = clip.clone();
    let mut rng = 0x2545F4914F6CDD1Du64;
    for _ in 0..400 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let at = clip.len() / 10 + (rng as usize) % (clip.len() * 9 / 10);
        corrupted[at] ^= 1 << (rng % 8);
    }
    let truncated = &clip[..clip.len() * 6 / 10];
    std::fs::write(dir.path().join("corrupted.mp4"), corrupted).unwrap();
    std::fs::write(dir.path().join("truncated.mp4"), truncated).unwrap();
    let fast = "    realtime: false\n";
    let cams = camera("corrupted", &format!("file://{}", dir.path().join("corrupted.mp4").display()), fast)
        + &camera("truncated", &format!("file://{}", dir.path().join("truncated.mp4").display()), fast);
    let service = Service::start(&config(&fixtures, &cams), &[]);
    // Several passes of each: truncated has about 90 frames, so 400 means it looped.
    wait_for("both clips to loop", Duration::from_secs(60), || {
        (frames(&service, "corrupted") > 400 && frames(&service, "truncated") > 400).then_some(())
    });
    let (_, metrics) = service.get("/metrics");
    let errors = metrics
        .lines()
        .find(|l| l.starts_with("smart_cctv_camera_decode_errors_total{camera=\"corrupted\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(errors > 0.0, "decode errors were not counted:\n{metrics}");
    for id in ["corrupted", "truncated"] {
        let detail = camera_detail(&service, id).unwrap();
        assert_eq!(detail["reconnects"], 0, "{id} should loop, not fail: {detail}");
        assert_eq!(detail["phase"], "streaming");
    }
    assert!(!service.output().contains("panicked"));
}

#[test]
fn a_missing_usb_camera_is_down_and_nothing_else_is() {
    let fixtures = fixtures_or_skip!();
    let demo = fixtures.join("video/people_walking_640x480_15fps_10s.mp4");
    let cams = camera("usb", "v4l2:///dev/video7", "") + &camera("demo", &format!("file://{}", demo.display()), "");
    let service = Service::start(&config(&fixtures, &cams), &[]);
    wait_phase(&service, "demo", "streaming", Duration::from_secs(20));
    wait_for("the usb camera to fail", Duration::from_secs(20), || {
        let detail = camera_detail(&service, "usb")?;
        (detail["reconnects"].as_u64()? >= 2).then_some(())
    });
    let (code, health) = service.get("/healthz");
    assert_eq!(code, 503);
    let health: Value = serde_json::from_str(&health).unwrap();
    let down = &health["down"]["camera/usb"];
    assert!(down["error"].as_str().unwrap().contains("/dev/video7"), "{health}");
    assert!(health["down"].get("camera/demo").is_none(), "{health}");
    assert!(health["down"].as_object().unwrap().keys().all(|k| k == "camera/usb"), "{health}");
    let (_, metrics) = service.get("/metrics");
    assert!(!metrics.contains("smart_cctv_child_restarts_total"), "the camera actor must not crash:\n{metrics}");
}

#[test]
fn reload_restarts_only_the_cameras_that_changed() {
    let fixtures = fixtures_or_skip!();
    let clip = fixtures.join("video/people_walking_640x480_15fps_10s.mp4");
    let other = fixtures.join("video/stills_slideshow_640x480_15fps_10s.mp4");
    let url = |p: &std::path::Path| format!("file://{}", p.display());
    let before = camera("keep", &url(&clip), "") + &camera("drop", &url(&clip), "") + &camera("move", &url(&clip), "");
    let mut service = Service::start(&config(&fixtures, &before), &[]);
    for id in ["keep", "drop", "move"] {
        wait_phase(&service, id, "streaming", Duration::from_secs(20));
    }
    wait_for("some frames", Duration::from_secs(10), || (frames(&service, "keep") > 20).then_some(()));
    let (keep_before, move_before) = (frames(&service, "keep"), frames(&service, "move"));

    let after = camera("keep", &url(&clip), "") + &camera("move", &url(&other), "") + &camera("new", &url(&clip), "");
    service.write_config(&config(&fixtures, &after));
    signal(&service.child, libc::SIGHUP);
    wait_phase(&service, "new", "streaming", Duration::from_secs(20));
    wait_for("drop to be removed", Duration::from_secs(10), || camera_detail(&service, "drop").is_none().then_some(()));
    // `move` restarted: its per-actor frame count started again.
    wait_for("move to restart", Duration::from_secs(10), || (frames(&service, "move") < move_before).then_some(()));
    // `keep` was not touched: its count kept growing and it never reconnected.
    let keep = camera_detail(&service, "keep").unwrap();
    assert!(keep["frames"].as_u64().unwrap() > keep_before, "{keep}");
    assert_eq!(keep["reconnects"], 0);
    wait_for("the reload summary in app.log", Duration::from_secs(10), || {
        service
            .log("app.log")
            .contains("cameras added: new; cameras removed: drop; cameras changed: move")
            .then_some(())
    });
    signal(&service.child, libc::SIGTERM);
    assert_eq!(wait_exit(&mut service.child, Duration::from_secs(15)).code(), Some(0));
}

#[test]
fn cameras_test_reports_each_camera_and_fails_on_a_bad_one() {
    let fixtures = fixtures_or_skip!();
    let testbed = testbed_or_skip!();
    let server = RtspServer::start(&testbed, free_port(), Some("admin:s3cret"), &["cam=test:320x240@15"]);
    let dir = tempfile::tempdir().unwrap();
    let cams = camera("rtsp", &server.url("admin:s3cret@", "cam"), "")
        + &camera(
            "clip",
            &format!("file://{}", fixtures.join("video/people_walking_640x480_15fps_10s.mp4").display()),
            "",
        )
        + &camera("usb", "v4l2:///dev/video9", "");
    let path = dir.path().join("config.yaml");
    write_private(&path, &config(&fixtures, &cams).replace("{listen}", "127.0.0.1:1"));
    let run = |args: &[&str]| {
        let out = std::process::Command::new(BIN)
            .arg("--config")
            .arg(&path)
            .args(["cameras", "test"])
            .args(args)
            .output()
            .unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
    };

    let (code, out) = run(&["--frames", "10"]);
    assert_eq!(code, Some(1), "{out}");
    let line = |id: &str| {
        out.lines()
            .find(|l| l.starts_with(&format!("{id}:")))
            .unwrap_or_else(|| panic!("no line for {id}:\n{out}"))
            .to_owned()
    };
    assert!(line("rtsp").contains("ok") && line("rtsp").contains("320x240") && line("rtsp").contains("avc1."), "{out}");
    assert!(line("clip").contains("ok") && line("clip").contains("640x480") && line("clip").contains("h264"), "{out}");
    assert!(line("usb").contains("FAILED") && line("usb").contains("/dev/video9"), "{out}");
    assert!(!out.contains("s3cret"));

    let (code, out) = run(&["--frames", "10", "--quiet"]);
    assert_eq!(code, Some(1));
    assert_eq!(out.lines().count(), 1, "{out}");

    let (code, out) = run(&["--camera", "clip", "--frames", "10", "--json"]);
    assert_eq!(code, Some(0), "{out}");
    let report: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(report["frames"].as_u64(), Some(10));
    assert!(report["fps"].as_f64().unwrap() > 10.0, "{report}");
    assert!(report["first_frame_seconds"].as_f64().is_some());
}
