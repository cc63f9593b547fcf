//! Cameras against real peers: RTSP servers on loopback (stopped, hung,
//! password-protected), corrupted and truncated clips, a missing V4L2 device,
//! and reloads that add, remove and change cameras.

use crate::fixtures::{Clip, clip, random_model};
use crate::support::*;
use crate::testbed::RtspServer;
use serde_json::Value;

crate::tests![
    a_lost_camera_backs_off_and_recovers_without_disturbing_the_other needs [RtspServer],
    wrong_password_is_auth_failed_and_never_leaks needs [RtspServer],
    a_hung_camera_is_a_stall_within_the_timeout needs [RtspServer],
    five_hangs_leave_one_session_decoding_at_the_stream_rate needs [RtspServer],
    a_reload_that_removes_or_changes_an_rtsp_camera_ends_its_session needs [RtspServer],
    corrupted_and_truncated_clips_keep_decoding needs [Ffmpeg],
    a_missing_usb_camera_is_down_and_nothing_else_is needs [Ffmpeg],
    reload_restarts_only_the_cameras_that_changed needs [Ffmpeg],
    cameras_test_reports_each_camera_and_fails_on_a_bad_one needs [RtspServer, Ffmpeg],
];
use std::time::{Duration, Instant};

/// A service config with these camera entries (YAML list items), detection at
/// 320 on a model with random weights (cameras need one that runs, not real detections).
fn config(cameras: &str) -> String {
    format!(
        "cameras:\n{cameras}processing:\n  detection:\n    model: {}\n    size: 320\nhttp:\n  listen: \"{{listen}}\"\n",
        random_model().display()
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

fn a_lost_camera_backs_off_and_recovers_without_disturbing_the_other() {
    let mut a = RtspServer::start(free_port(), None, &["cam=test:320x240@15"]);
    let b = RtspServer::start(free_port(), None, &["cam=test:320x240@15"]);
    let cams = camera("a", &a.url("", "cam"), "") + &camera("b", &b.url("", "cam"), "");
    let service = Service::start(&config(&cams), &[]);
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

fn wrong_password_is_auth_failed_and_never_leaks() {
    let secret = "WrongPa55word";
    let server = RtspServer::start(free_port(), Some("admin:s3cret"), &["cam=test:320x240@15"]);
    let cams = camera("locked", &server.url(&format!("admin:{secret}@"), "cam"), "")
        + &camera("open", &server.url("admin:s3cret@", "cam"), "");
    let service = Service::start(&config(&cams), &[]);
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

fn a_hung_camera_is_a_stall_within_the_timeout() {
    let server = RtspServer::start(free_port(), None, &["cam=test:320x240@15"]);
    let service = Service::start(&config(&camera("hung", &server.url("", "cam"), "")), &[]);
    wait_phase(&service, "hung", "streaming", Duration::from_secs(20));
    // The server keeps the connection open but sends nothing.
    server.freeze();
    let took = wait_phase(&service, "hung", "backoff", Duration::from_secs(3));
    eprintln!("stall detected {took:?} after the server hung (stall_timeout 2 s)");
    let detail = camera_detail(&service, "hung").unwrap();
    assert!(detail["last_error"].as_str().unwrap().contains("stalled"), "{detail}");
    server.resume();
    wait_phase(&service, "hung", "streaming", Duration::from_secs(10));
}

/// Frames decoded for `id` per second over `window`, by the process-wide
/// counter: frames from a session left behind would count here too.
fn decoded_rate(service: &Service, id: &str, window: Duration) -> f64 {
    let series = format!("smart_cctv_camera_frames_decoded_total{{camera=\"{id}\"}} ");
    let read = || {
        let (_, text) = service.get("/metrics");
        text.lines().find_map(|l| l.strip_prefix(&series)?.trim().parse::<f64>().ok()).unwrap_or(0.0)
    };
    let (n0, t0) = (read(), Instant::now());
    std::thread::sleep(window);
    (read() - n0) / t0.elapsed().as_secs_f64()
}

fn five_hangs_leave_one_session_decoding_at_the_stream_rate() {
    let server = RtspServer::start(free_port(), None, &["cam=test:320x240@15"]);
    let service = Service::start(&config(&camera("hung", &server.url("", "cam"), "")), &[]);
    wait_phase(&service, "hung", "streaming", Duration::from_secs(20));
    for round in 0..5 {
        server.freeze();
        wait_phase(&service, "hung", "backoff", Duration::from_secs(5));
        server.resume();
        wait_phase(&service, "hung", "streaming", Duration::from_secs(20));
        eprintln!("hang {round}: streaming again");
    }
    // The sessions of the hung connections are gone; only the live one stays.
    wait_for("one RTSP session on the server", Duration::from_secs(20), || (server.clients() == 1).then_some(()));
    let fps = decoded_rate(&service, "hung", Duration::from_secs(4));
    assert!((12.0..=18.0).contains(&fps), "after five hangs the camera decodes {fps:.1} frames/s, not 15");
    assert_eq!(server.clients(), 1, "a session was left behind");
}

fn a_reload_that_removes_or_changes_an_rtsp_camera_ends_its_session() {
    let a = RtspServer::start(free_port(), None, &["cam=test:320x240@15"]);
    let b = RtspServer::start(free_port(), None, &["cam=test:320x240@15"]);
    let both = camera("gone", &a.url("", "cam"), "") + &camera("moved", &b.url("", "cam"), "");
    let mut service = Service::start(&config(&both), &[]);
    wait_phase(&service, "gone", "streaming", Duration::from_secs(20));
    wait_phase(&service, "moved", "streaming", Duration::from_secs(20));
    assert_eq!((a.clients(), b.clients()), (1, 1));
    // `gone` is removed; `moved` changes (its stall timeout), so it restarts.
    let after = camera("moved", &b.url("", "cam"), "").replace("stall_timeout: 2s", "stall_timeout: 3s");
    service.write_config(&config(&after));
    signal(&service.child, libc::SIGHUP);
    // Within the cameras' shutdown timeout (15 s, supervision.toml).
    wait_for("the removed camera's session to end", Duration::from_secs(15), || (a.clients() == 0).then_some(()));
    wait_phase(&service, "moved", "streaming", Duration::from_secs(20));
    wait_for("one session for the changed camera", Duration::from_secs(15), || (b.clients() == 1).then_some(()));
    signal(&service.child, libc::SIGTERM);
    assert_eq!(wait_exit(&mut service.child, Duration::from_secs(15)).code(), Some(0));
    wait_for("no session after the service stopped", Duration::from_secs(10), || (b.clients() == 0).then_some(()));
}

fn corrupted_and_truncated_clips_keep_decoding() {
    let dir = tempfile::tempdir().unwrap();
    let clip = std::fs::read(clip(Clip::Moving)).unwrap();
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
    let service = Service::start(&config(&cams), &[]);
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

fn a_missing_usb_camera_is_down_and_nothing_else_is() {
    let demo = clip(Clip::Moving);
    let cams = camera("usb", "v4l2:///dev/video7", "") + &camera("demo", &format!("file://{}", demo.display()), "");
    let service = Service::start(&config(&cams), &[]);
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

fn reload_restarts_only_the_cameras_that_changed() {
    let moving = clip(Clip::Moving);
    let other = clip(Clip::Pattern);
    let url = |p: &std::path::Path| format!("file://{}", p.display());
    let before =
        camera("keep", &url(&moving), "") + &camera("drop", &url(&moving), "") + &camera("move", &url(&moving), "");
    let mut service = Service::start(&config(&before), &[]);
    for id in ["keep", "drop", "move"] {
        wait_phase(&service, id, "streaming", Duration::from_secs(20));
    }
    wait_for("some frames", Duration::from_secs(10), || (frames(&service, "keep") > 20).then_some(()));
    let (keep_before, move_before) = (frames(&service, "keep"), frames(&service, "move"));

    let after =
        camera("keep", &url(&moving), "") + &camera("move", &url(&other), "") + &camera("new", &url(&moving), "");
    service.write_config(&config(&after));
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

fn cameras_test_reports_each_camera_and_fails_on_a_bad_one() {
    let server = RtspServer::start(free_port(), Some("admin:s3cret"), &["cam=test:320x240@15"]);
    let dir = tempfile::tempdir().unwrap();
    let cams = camera("rtsp", &server.url("admin:s3cret@", "cam"), "")
        + &camera("clip", &format!("file://{}", clip(Clip::Moving).display()), "")
        + &camera("usb", "v4l2:///dev/video9", "");
    let path = dir.path().join("config.yaml");
    write_private(&path, &config(&cams).replace("{listen}", "127.0.0.1:1"));
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
