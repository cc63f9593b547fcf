//! MQTT and Home Assistant against a real broker (Debian's mosquitto): the
//! topics a Frigate user's automations read, availability through birth,
//! last will and clean stop, discovery, camera status, the switches, and
//! alarms that go on while the broker is down.

use crate::broker::{Broker, Subscriber};
use crate::support::*;
use crate::testbed::RtspServer;
use std::path::Path;
use std::time::Duration;

crate::tests![
    events_alerts_snapshots_and_discovery_reach_the_broker needs [RealFixtures, Mosquitto],
    alarms_go_on_while_the_broker_is_down_and_it_reconnects needs [RealFixtures, Mosquitto],
    camera_status_follows_its_rtsp_server_and_switches_are_kept needs [RtspServer, Mosquitto],
];

const WAIT: Duration = Duration::from_secs(60);

fn mqtt_section(port: u16) -> String {
    format!(
        "mqtt:\n  host: 127.0.0.1\n  port: {port}\n  topic_prefix: cctv\n  stats_interval: 1s\n  status_debounce: 1s\n"
    )
}

/// The walking clip as camera `walk` with a `person` rule, and MQTT.
fn walking_config(fixtures: &Path, port: u16, cooldown: &str) -> String {
    format!(
        "cameras:\n  - id: walk\n    url: file://{}\nprocessing:\n  detection:\n    model: {}\n    size: 320\n\
         alert_rules:\n  - name: person\n    conditions:\n      classes: [person]\n    cooldown: {cooldown}\n\
         http:\n  listen: \"{{listen}}\"\n{}",
        fixtures.join("video/people_walking_640x480_15fps_10s.mp4").display(),
        fixtures.join("yolov8n/yolov8n.safetensors").display(),
        mqtt_section(port)
    )
}

fn events_alerts_snapshots_and_discovery_reach_the_broker() {
    let fixtures = crate::fixtures::real();
    let broker = Broker::start(free_port());
    let watcher = Subscriber::connect(broker.port, &["cctv/#", "homeassistant/#"]);
    let mut service = Service::start(&walking_config(&fixtures, broker.port, "30s"), &[]);

    watcher.wait_last("cctv/available", "online", WAIT);
    let new = watcher.wait("an events `new` for a person", WAIT, |m| {
        m.topic == "cctv/events" && m.json()["type"] == "new" && m.json()["after"]["label"] == "person"
    });
    let after = &new.json()["after"];
    assert_eq!(after["camera"], "walk");
    assert!(after["box"].as_array().is_some_and(|b| b.len() == 4), "{after}");
    assert!(after["score"].as_f64().is_some_and(|s| s > 0.0) && after["end_time"].is_null(), "{after}");
    let alert = watcher.wait("the alert", WAIT, |m| m.topic == "cctv/alerts").json();
    assert_eq!(
        (alert["rule"].as_str(), alert["camera"].as_str(), alert["label"].as_str()),
        (Some("person"), Some("walk"), Some("person"))
    );
    let snapshot = alert["snapshot"].as_str().unwrap().to_owned();
    assert!(snapshot.starts_with("/api/snapshots/"), "{alert}");
    // Served once the alert is stored, a moment after it sounded.
    wait_for("the alert's snapshot URL to be served", WAIT, || (service.get(&snapshot).0 == 200).then_some(()));
    watcher.wait("Home Assistant's event for the alert", WAIT, |m| {
        m.topic == "cctv/walk/alerts" && m.json()["event_type"] == "alert"
    });
    let jpeg = watcher.wait("the snapshot", WAIT, |m| m.topic == "cctv/walk/person/snapshot");
    assert!(jpeg.payload.starts_with(&[0xff, 0xd8]), "not a JPEG");
    watcher.wait("a person count", WAIT, |m| {
        m.topic == "cctv/walk/person" && m.text().parse::<u32>().is_ok_and(|n| n >= 1)
    });
    let stats = watcher.wait("stats with the camera's fps", WAIT, |m| {
        m.topic == "cctv/stats" && m.json()["cameras"]["walk"]["camera_fps"].as_f64().is_some_and(|f| f > 0.0)
    });
    assert!(stats.json()["cameras"]["walk"]["detection_fps"].as_f64().is_some(), "{}", stats.text());

    // A client arriving now gets the discovery configs and the states as
    // retained messages, as Home Assistant does when it starts.
    let late = Subscriber::connect(broker.port, &["homeassistant/#", "cctv/available", "cctv/walk/person/snapshot"]);
    let occupancy = "homeassistant/binary_sensor/cctv/walk_person_occupancy/config";
    let config = late.wait("the retained discovery config", WAIT, |m| m.topic == occupancy && m.retained).json();
    assert_eq!(config["state_topic"], "cctv/walk/person");
    assert_eq!(config["availability_topic"], "cctv/available");
    for component in [
        "binary_sensor/cctv/walk_status",
        "sensor/cctv/walk_fps",
        "image/cctv/walk_person_snapshot",
        "event/cctv/walk_alert",
    ] {
        let topic = format!("homeassistant/{component}/config");
        late.wait(&topic, WAIT, |m| m.topic == topic && m.retained);
    }
    late.wait("retained online", WAIT, |m| m.topic == "cctv/available" && m.retained && m.text() == "online");
    late.wait("the retained snapshot", WAIT, |m| m.topic == "cctv/walk/person/snapshot" && m.retained);

    // Home Assistant's birth message makes discovery go out again.
    let before = late.on(occupancy).len();
    late.publish("homeassistant/status", "online", false);
    wait_for("discovery republished", WAIT, || (late.on(occupancy).len() > before).then_some(()));

    // Killed: the broker says `offline` for it, through the last will.
    service.kill_hard();
    watcher.wait_last("cctv/available", "offline", WAIT);
    // Started again and stopped cleanly: `online`, then `stopped`.
    service.restart();
    watcher.wait_last("cctv/available", "online", WAIT);
    signal(&service.child, libc::SIGTERM);
    assert!(wait_exit(&mut service.child, WAIT).success());
    watcher.wait_last("cctv/available", "stopped", Duration::from_secs(10));
}

fn alarms_go_on_while_the_broker_is_down_and_it_reconnects() {
    let fixtures = crate::fixtures::real();
    let mut broker = Broker::start(free_port());
    let service = Service::start(&walking_config(&fixtures, broker.port, "0s"), &[]);
    let watcher = Subscriber::connect(broker.port, &["cctv/#"]);
    watcher.wait_last("cctv/available", "online", WAIT);
    watcher.wait("an alert", WAIT, |m| m.topic == "cctv/alerts");

    broker.stop();
    // MQTT shows as down on /healthz, as a component: nothing restarts for it.
    let body = wait_for("/healthz to name mqtt", WAIT, || {
        let (_, body) = http_get(service.addr, "/healthz").ok()?;
        body.contains("mqtt").then_some(body)
    });
    assert!(body.contains("disconnected"), "{body}");
    let metrics = service.get("/metrics").1;
    assert_eq!(metric(&metrics, "smart_cctv_mqtt_connected"), Some(0.0));
    // Alarms keep being raised and logged meanwhile.
    let logged = |service: &Service| service.log("alerts.log").lines().filter(|l| l.contains("ALERT")).count();
    let before = logged(&service);
    wait_for("alerts while the broker is down", WAIT, || (logged(&service) >= before + 3).then_some(()));

    broker.restart();
    let watcher = Subscriber::connect(broker.port, &["cctv/#"]);
    // The broker kept nothing: `online` is the service's birth after the reconnect.
    watcher.wait_last("cctv/available", "online", WAIT);
    watcher.wait("alerts again", WAIT, |m| m.topic == "cctv/alerts");
    wait_for("healthy MQTT", WAIT, || {
        let metrics = http_get(service.addr, "/metrics").ok()?.1;
        (metric(&metrics, "smart_cctv_mqtt_connected") == Some(1.0)).then_some(())
    });
    let metrics = service.get("/metrics").1;
    assert!(metric(&metrics, "smart_cctv_mqtt_published_total").is_some_and(|n| n > 0.0), "{metrics}");
    let logs = service.output() + &service.log("app.log");
    assert!(logs.contains("mqtt down"), "the drop is logged");
}

fn camera_status_follows_its_rtsp_server_and_switches_are_kept() {
    let broker = Broker::start(free_port());
    let mut camera = RtspServer::start(free_port(), None, &["cam=test:320x240@15"]);
    let config = format!(
        "cameras:\n  - id: door\n    url: \"rtsp://127.0.0.1:{}/cam\"\n    stall_timeout: 2s\n    backoff: {{ initial: 500ms, max: 1s }}\n\
         processing:\n  motion:\n    enabled: false\n  detection:\n    model: {}\n    size: 320\n\
         alert_rules:\n  - name: night\n    conditions:\n      classes: [person]\n\
         http:\n  listen: \"{{listen}}\"\n{}",
        camera.port,
        crate::fixtures::random_model().display(),
        mqtt_section(broker.port) + "  user: cctv\n  password: \"Sup3r-s3cret\"\n"
    );
    let watcher = Subscriber::connect(broker.port, &["cctv/#"]);
    let mut service = Service::start(&config, &[]);
    watcher.wait_last("cctv/door/status", "online", WAIT);
    // The broker's password is a secret like the others (the suite's leak
    // check reads this answer too).
    let shown = service.get("/api/config").1;
    assert!(shown.contains("\"mqtt\"") && shown.contains("***"), "{shown}");
    watcher.wait_last("cctv/door/detect/state", "ON", WAIT);
    watcher.wait_last("cctv/rules/night/enabled/state", "ON", WAIT);

    camera.stop();
    watcher.wait_last("cctv/door/status", "offline", WAIT);
    camera.restart();
    watcher.wait_last("cctv/door/status", "online", WAIT);

    // Home Assistant turns detection and the rule off; both are echoed,
    // frames stop reaching the detector, and a restart keeps them off.
    watcher.publish("cctv/door/detect/set", "OFF", false);
    watcher.publish("cctv/rules/night/enabled/set", "OFF", false);
    watcher.wait_last("cctv/door/detect/state", "OFF", WAIT);
    watcher.wait_last("cctv/rules/night/enabled/state", "OFF", WAIT);
    wait_for("frames skipped for detection off", WAIT, || {
        let metrics = http_get(service.addr, "/metrics").ok()?.1;
        metrics.contains("smart_cctv_frames_skipped_detect_off_total{camera=\"door\"}").then_some(())
    });
    // A switch for something that does not exist changes nothing.
    watcher.publish("cctv/nosuch/detect/set", "OFF", false);
    signal(&service.child, libc::SIGTERM);
    assert!(wait_exit(&mut service.child, WAIT).success());
    watcher.wait_last("cctv/available", "stopped", Duration::from_secs(10));
    let saved = std::fs::read_to_string(service.data_dir().join("mqtt-controls.json")).unwrap();
    assert!(saved.contains("door") && saved.contains("night") && !saved.contains("nosuch"), "{saved}");

    let fresh = Subscriber::connect(broker.port, &["cctv/door/detect/state"]);
    fresh.wait("the retained state", WAIT, |m| m.retained);
    let before = fresh.all().len();
    service.restart();
    // The new process states it again at its birth, from the saved file.
    wait_for("the state republished", WAIT, || (fresh.all().len() > before).then_some(()));
    assert_eq!(fresh.last_text("cctv/door/detect/state").as_deref(), Some("OFF"));
}
