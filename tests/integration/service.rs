//! The real process: health, metrics, SIGHUP reloads, SIGTERM, sd_notify.

use crate::support::*;
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

const PASSWORD: &str = "hunter2-secret";

crate::tests![
    runs_reloads_and_stops_like_a_systemd_service,
    a_root_that_cannot_start_exits_non_zero_with_the_reason,
    non_loopback_listen_is_refused_unless_allowed,
    a_reload_applies_detection_settings_live_and_rolls_back_when_a_start_fails needs [Ffmpeg],
    a_foreign_host_or_origin_is_refused,
    ops_routes_are_only_on_a_socket_for_the_services_own_users needs [Tmpfs],
    two_thousand_idle_connections_starve_nothing needs [Ffmpeg],
];

fn ops_routes_are_only_on_a_socket_for_the_services_own_users() {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    use std::os::unix::process::CommandExt;
    let service = Service::start(&config(""), &[]);
    service.wait_healthy(Duration::from_secs(60));
    let own = format!("Host: {}\r\n", service.addr);
    // Not on TCP, whatever the headers say.
    assert_eq!(status_with(service.addr, "POST", "/api/ops/compact", &own), 404);
    assert_eq!(status_with(service.addr, "POST", "/api/ops/db-copy", &own), 404);
    let socket = service.data_dir().join("ops.sock");
    let meta = std::fs::symlink_metadata(&socket).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    // Even where the file's mode lets another user connect, the service
    // checks who is on the other end (SO_PEERCRED) and says nothing.
    for dir in [service.dir.path().to_path_buf(), service.data_dir()] {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let client = "import socket, sys\n\
                  s = socket.socket(socket.AF_UNIX)\n\
                  s.connect(sys.argv[1])\n\
                  try:\n\
                  \x20   s.sendall(b'POST /api/ops/compact HTTP/1.1\\r\\nHost: localhost\\r\\nContent-Length: 0\\r\\nConnection: close\\r\\n\\r\\n')\n\
                  \x20   print(len(s.recv(4096)))\n\
                  except ConnectionError:\n\
                  \x20   print(0)\n";
    let run_as = |uid: u32| {
        let out = std::process::Command::new("/usr/bin/python3")
            .args(["-c", client])
            .arg(&socket)
            .uid(uid)
            .gid(uid)
            .output()
            .unwrap();
        (String::from_utf8_lossy(&out.stdout).trim().to_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (nobody, err) = run_as(65534);
    assert_eq!(nobody, "0", "another user got an answer: {err}");
    let (root, err) = run_as(0);
    assert_ne!(root, "0", "root got no answer: {err}");
}

/// Status of one request with these extra header lines.
fn status_with(addr: std::net::SocketAddr, method: &str, path: &str, headers: &str) -> u16 {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(stream, "{method} {path} HTTP/1.1\r\n{headers}Content-Length: 0\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

fn a_foreign_host_or_origin_is_refused() {
    let service = Service::start(&config(""), &[]);
    service.wait_healthy(Duration::from_secs(60));
    let addr = service.addr;
    let own = format!("Host: {addr}\r\n");
    assert_eq!(status_with(addr, "GET", "/api/config", &own), 200);
    assert_eq!(status_with(addr, "GET", "/api/config", "Host: localhost\r\n"), 200);
    // DNS rebinding: a page on evil.example whose name now points here.
    assert_eq!(status_with(addr, "GET", "/api/config", "Host: evil.example\r\n"), 403);
    assert_eq!(status_with(addr, "GET", "/api/alerts", "Host: evil.example:80\r\n"), 403);
    assert_eq!(status_with(addr, "GET", "/metrics", ""), 403, "no Host at all");
    // A page elsewhere posting to the loopback API.
    let foreign = format!("{own}Origin: http://evil.example\r\n");
    assert_eq!(status_with(addr, "POST", "/api/faults/store-block?seconds=0", &foreign), 403);
    assert_eq!(status_with(addr, "POST", "/api/faults/store-block?seconds=0", &own), 200);
    // `since` out of range is the caller's error, not a crash.
    assert_eq!(status_with(addr, "GET", "/api/alerts?since=1e20", &own), 400);
    assert_eq!(status_with(addr, "GET", "/api/alerts?limit=100000", &own), 400);
    assert_eq!(service.get("/healthz").0, 200);
}

/// A config with no cameras and the random-weights model; `detection`
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

/// A model that loads and runs (the service needs one; these tests need no detections).
fn weights() -> std::path::PathBuf {
    crate::fixtures::random_model()
}

fn recv(socket: &UnixDatagram) -> String {
    let mut buf = [0u8; 4096];
    let n = socket.recv(&mut buf).expect("no sd_notify message within the deadline");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

fn runs_reloads_and_stops_like_a_systemd_service() {
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

fn a_root_that_cannot_start_exits_non_zero_with_the_reason() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let mut service = Service::start(&config("").replace("{listen}", &addr.to_string()), &[]);
    let status = wait_exit(&mut service.child, Duration::from_secs(20));
    assert_eq!(status.code(), Some(1));
    let output = service.output();
    assert!(output.contains(&format!("cannot listen on {addr}")), "{output}");
}

fn non_loopback_listen_is_refused_unless_allowed() {
    let mut service = Service::start(&config("").replace("\"{listen}\"", "\"0.0.0.0:9\""), &[]);
    let status = wait_exit(&mut service.child, Duration::from_secs(20));
    assert_eq!(status.code(), Some(2));
    assert!(service.output().contains("http.listen"), "{}", service.output());
}

/// Frames inferred at input size `size`, by the detector's own histogram.
fn inferred_at(service: &Service, size: u32) -> f64 {
    let (_, text) = service.get("/metrics");
    text.lines()
        .filter(|l| l.starts_with("smart_cctv_inference_seconds_count{") && l.contains(&format!("size=\"{size}\"")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn reload_status(service: &Service) -> serde_json::Value {
    let (_, body) = service.get("/api/status");
    serde_json::from_str::<serde_json::Value>(&body).map(|s| s["details"]["reload"].clone()).unwrap_or_default()
}

fn a_reload_applies_detection_settings_live_and_rolls_back_when_a_start_fails() {
    let config = |size: u32, workers: u32| {
        format!(
            "cameras:\n  - id: yard\n    url: \"file://{}\"\nprocessing:\n  detection:\n    model: {}\n    size: {size}\n    workers: {workers}\n\
             http:\n  listen: \"{{listen}}\"\n",
            crate::fixtures::clip(crate::fixtures::Clip::Moving).display(),
            weights().display()
        )
    };
    let mut service = Service::start(&config(640, 1), &[]);
    service.wait_healthy(Duration::from_secs(60));
    wait_for("inference at 640", Duration::from_secs(30), || (inferred_at(&service, 640) > 0.0).then_some(()));

    // Size and workers change: both are applied, not just reported.
    service.write_config(&config(320, 2));
    signal(&service.child, libc::SIGHUP);
    wait_for("inference at 320", Duration::from_secs(60), || (inferred_at(&service, 320) > 0.0).then_some(()));
    wait_for("a second worker", Duration::from_secs(30), || {
        service.get("/api/status").1.contains("root/inference/worker-1").then_some(())
    });
    let report = reload_status(&service);
    assert_eq!(report["outcome"], "applied", "{report}");
    assert_eq!(report["restarted"], serde_json::json!(["detector", "inference"]), "{report}");
    let at_640 = inferred_at(&service, 640);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(inferred_at(&service, 640), at_640, "the old size is still being run");
    assert_eq!(metric(&service.get("/metrics").1, "smart_cctv_config_generation"), Some(2.0));

    // The next reload needs the detector restarted, and its start fails:
    // the previous config is put back and the service runs as it was.
    let (code, _) = http_post(service.addr, "/api/faults/start-failure/root/detector");
    assert_eq!(code, 200);
    service.write_config(&config(640, 2));
    signal(&service.child, libc::SIGHUP);
    let report = wait_for("the reload to be rolled back", Duration::from_secs(60), || {
        Some(reload_status(&service)).filter(|r| r["outcome"] == "rolled_back")
    });
    assert!(report["errors"][0].as_str().unwrap_or("").contains("detector"), "{report}");
    assert_eq!(metric(&service.get("/metrics").1, "smart_cctv_config_generation"), Some(2.0));
    assert!(service.get("/api/config").1.contains("\"size\":320"));
    service.wait_healthy(Duration::from_secs(60));
    let at_320 = inferred_at(&service, 320);
    wait_for("inference at 320 again", Duration::from_secs(30), || (inferred_at(&service, 320) > at_320).then_some(()));
    assert!(service.log("errors.log").contains("rolling back"), "{}", service.log("errors.log"));
    signal(&service.child, libc::SIGTERM);
    assert_eq!(wait_exit(&mut service.child, Duration::from_secs(15)).code(), Some(0));
}

/// Frames decoded so far by camera `id`, from `/metrics`.
fn decoded(addr: std::net::SocketAddr, id: &str) -> f64 {
    let series = format!("smart_cctv_camera_frames_decoded_total{{camera=\"{id}\"}} ");
    http_get(addr, "/metrics")
        .map(|(_, text)| text.lines().find_map(|l| l.strip_prefix(&series)?.trim().parse().ok()).unwrap_or(0.0))
        .unwrap_or(0.0)
}

fn two_thousand_idle_connections_starve_nothing() {
    // This test process needs the descriptors for its side of them.
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit on this process with a valid struct.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        limit.rlim_cur = limit.rlim_max.min(8192).max(limit.rlim_cur);
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
    }
    let config = format!(
        "cameras:\n  - id: yard\n    url: \"file://{}\"\nprocessing:\n  detection:\n    model: {}\n    size: 320\n\
         http:\n  listen: \"{{listen}}\"\n",
        crate::fixtures::clip(crate::fixtures::Clip::Moving).display(),
        weights().display()
    );
    let service = Service::start(&config, &[]);
    service.wait_healthy(Duration::from_secs(60));
    let before = decoded(service.addr, "yard");
    let idle: Vec<std::net::TcpStream> = (0..2000)
        .filter_map(|_| std::net::TcpStream::connect_timeout(&service.addr, Duration::from_secs(2)).ok())
        .collect();
    assert!(idle.len() >= 1900, "only {} connections opened", idle.len());
    // The service holds a bounded number of them and closes idle ones after
    // the header timeout: /healthz answers again, well before they are gone.
    let took = std::time::Instant::now();
    wait_for("/healthz with 2000 idle connections open", Duration::from_secs(40), || {
        http_get(service.addr, "/healthz").ok().filter(|(code, _)| *code == 200)
    });
    eprintln!("/healthz answered {:?} after 2000 idle connections were opened", took.elapsed());
    let fds = std::fs::read_dir(format!("/proc/{}/fd", service.child.id())).unwrap().count();
    assert!(fds < 256 + 128, "the service holds {fds} files");
    assert!(decoded(service.addr, "yard") > before, "the camera stopped while the API was flooded");
    drop(idle);
}
