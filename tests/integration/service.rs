//! The real process: health, metrics, SIGHUP reloads, SIGTERM, sd_notify.

use crate::support::*;
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

const PASSWORD: &str = "hunter2-secret";

/// A config with no cameras and the fixture weights as the model; `detection`
/// adds keys under `processing.detection`, `extra` adds top-level sections.
fn config_with(detection: &str, extra: &str) -> String {
    format!(
        "cameras: []\nprocessing:\n  detection:\n    model: {}\n{detection}monitoring:\n  log_level: info\nhttp:\n  listen: \"{{listen}}\"\n{extra}",
        weights().display()
    )
}

fn config(extra: &str) -> String {
    config_with("", extra)
}

fn weights() -> std::path::PathBuf {
    crate::fixtures::dir().map(|d| d.join("yolov8n/yolov8n.safetensors")).unwrap_or_default()
}

fn recv(socket: &UnixDatagram) -> String {
    let mut buf = [0u8; 4096];
    let n = socket.recv(&mut buf).expect("no sd_notify message within the deadline");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn runs_reloads_and_stops_like_a_systemd_service() {
    let _ = crate::fixtures_or_skip!();
    let notify_dir = tempfile::tempdir().unwrap();
    let notify_path = notify_dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify.set_read_timeout(Some(Duration::from_secs(20))).unwrap();

    let mut service =
        Service::start(&config(""), &[("NOTIFY_SOCKET", notify_path.to_str().unwrap()), ("WATCHDOG_USEC", "300000")]);

    // systemd: READY=1 once the tree is up, then WATCHDOG=1 from the health path.
    assert_eq!(recv(&notify).trim(), "READY=1", "{}", service.output());
    assert_eq!(recv(&notify).trim(), "WATCHDOG=1");
    assert_eq!(recv(&notify).trim(), "WATCHDOG=1");

    // Healthy once the detector has loaded its model.
    wait_for("/healthz to answer 200", Duration::from_secs(20), || (service.get("/healthz").0 == 200).then_some(()));
    let (_, metrics) = service.get("/metrics");
    assert_eq!(metric(&metrics, "smart_cctv_up"), Some(1.0), "{metrics}");
    assert_eq!(metric(&metrics, "smart_cctv_config_reload_failures_total"), Some(0.0));

    // A broken config on SIGHUP is rejected; the service keeps running on the old one.
    service.write_config(&config_with("    confidence_threshold: 7\n", ""));
    signal(&service.child, libc::SIGHUP);
    wait_for("the reload failure to be counted", Duration::from_secs(10), || {
        let (_, m) = service.get("/metrics");
        (metric(&m, "smart_cctv_config_reload_failures_total") == Some(1.0)).then_some(())
    });
    assert!(service.child.try_wait().unwrap().is_none(), "a bad reload must not stop the service");
    assert_eq!(service.get("/healthz").0, 200);
    // The log is written by a background thread: wait for the line, with a deadline.
    wait_for("the rejected key in errors.log", Duration::from_secs(10), || {
        service.log("errors.log").contains("processing.detection.confidence_threshold").then_some(())
    });
    assert_eq!(metric(&service.get("/metrics").1, "smart_cctv_config_generation"), Some(1.0));

    // A valid, changed config is applied: the API shows it and the new log level takes effect.
    let changed = format!(
        "cameras:\n  - id: gate\n    url: rtsp://admin:{PASSWORD}@127.0.0.1:8554/gate\n\
         processing:\n  detection:\n    model: {}\nmonitoring:\n  log_level: debug\nhttp:\n  listen: \"{{listen}}\"\n",
        weights().display()
    );
    service.write_config(&changed);
    signal(&service.child, libc::SIGHUP);
    let api = wait_for("the new config to be applied", Duration::from_secs(10), || {
        let (_, body) = service.get("/api/config");
        body.contains("\"log_level\":\"debug\"").then_some(body)
    });
    assert!(api.contains("rtsp://admin:***@127.0.0.1:8554/gate"), "{api}");
    let (_, metrics) = service.get("/metrics");
    assert_eq!(metric(&metrics, "smart_cctv_config_generation"), Some(2.0));
    assert_eq!(metric(&metrics, "smart_cctv_config_reloads_total"), Some(1.0));
    wait_for("a debug line after the level change", Duration::from_secs(10), || {
        service.log("app.log").contains("| DEBUG | smart_cctv::health::actor |").then_some(())
    });
    assert!(service.log("app.log").contains("cameras added: gate"));

    // SIGTERM: graceful stop, exit 0, well within 5 s.
    signal(&service.child, libc::SIGTERM);
    let status = wait_exit(&mut service.child, Duration::from_secs(5));
    assert_eq!(status.code(), Some(0), "{}", service.output());
    let stopping = std::iter::from_fn(|| {
        notify.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
        let mut buf = [0u8; 256];
        notify.recv(&mut buf).ok().map(|n| String::from_utf8_lossy(&buf[..n]).into_owned())
    })
    .any(|m| m.trim() == "STOPPING=1");
    assert!(stopping, "STOPPING=1 was not sent");

    // The password never leaked anywhere.
    let everything = [service.log("app.log"), service.log("errors.log"), service.output(), metrics, api];
    assert!(everything.iter().all(|text| !text.contains(PASSWORD)));
    // The old layout: `time | LEVEL | target | message`.
    let line = service.log("app.log").lines().find(|l| l.contains("ready")).unwrap().to_owned();
    let fields: Vec<&str> = line.split(" | ").collect();
    assert_eq!(fields.len(), 4, "{line}");
    assert_eq!((fields[1].trim(), fields[2], fields[3]), ("INFO", "smart_cctv::service", "ready"));
}

#[test]
fn a_root_that_cannot_start_exits_non_zero_with_the_reason() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let mut service = Service::start(&config("").replace("{listen}", &addr.to_string()), &[]);
    let status = wait_exit(&mut service.child, Duration::from_secs(20));
    assert_eq!(status.code(), Some(1));
    let output = service.output();
    assert!(output.contains(&format!("cannot listen on {addr}")), "{output}");
}

#[test]
fn non_loopback_listen_is_refused_unless_allowed() {
    let mut service = Service::start(&config("").replace("\"{listen}\"", "\"0.0.0.0:9\""), &[]);
    let status = wait_exit(&mut service.child, Duration::from_secs(20));
    assert_eq!(status.code(), Some(2));
    assert!(service.output().contains("http.listen"), "{}", service.output());
}
