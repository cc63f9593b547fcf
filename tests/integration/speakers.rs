//! Speakers on real audio and D-Bus paths: ALSA routed into a file by the
//! testbed's capture config, and a BlueZ mock on a private D-Bus.

use crate::support::*;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

crate::tests![
    speaker_test_plays_the_chime_into_alsa needs [SharedTestbed],
    a_bad_sound_file_falls_back_to_the_chime needs [SharedTestbed],
    a_missing_alsa_device_is_a_clear_failure needs [SharedTestbed],
    alerts_play_once_per_coalescing_window needs [SharedTestbed, RealFixtures],
    bluetooth_speaker_connects_and_reconnects_after_removal needs [SharedTestbed],
    no_dbus_is_a_clear_error_and_a_backoff_loop needs [SharedTestbed],
];

fn alsa_env(testbed: &Path, capture: &Path) -> Vec<(String, String)> {
    vec![
        ("ALSA_CONFIG_PATH".into(), testbed.join("alsa-capture.conf").display().to_string()),
        ("ALSA_CAPTURE_FILE".into(), capture.display().to_string()),
    ]
}

/// `speaker test` for a one-speaker config; (exit code, stdout + stderr).
fn speaker_test(testbed: &Path, dir: &Path, speaker_yaml: &str) -> (Option<i32>, String) {
    let config = dir.join("config.yaml");
    write_private(&config, &format!("speakers:\n{speaker_yaml}"));
    let capture = dir.join("capture.raw");
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .args(["speaker", "test", "--speaker", "porch"])
        .envs(alsa_env(testbed, &capture))
        .output()
        .unwrap();
    (out.status.code(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// Seconds of sound in a capture file, by the testbed's analyser.
fn audible_seconds(testbed: &Path, capture: &Path) -> f64 {
    let out = Command::new(testbed.join("alsa-capture")).arg("analyze").arg(capture).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "silent or unreadable capture: {text}");
    text.split_whitespace()
        .find_map(|w| w.strip_prefix("audible_seconds=").and_then(|v| v.parse().ok()))
        .unwrap_or_else(|| panic!("no audible_seconds= in {text:?}"))
}

fn speaker_test_plays_the_chime_into_alsa() {
    let testbed = crate::fixtures::shared_testbed();
    let dir = tempfile::tempdir().unwrap();
    let (code, out) = speaker_test(&testbed, dir.path(), "  - id: porch\n    kind: alsa\n    device: default\n");
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("played chime (0.90 s)"), "{out}");
    let seconds = audible_seconds(&testbed, &dir.path().join("capture.raw"));
    assert!((seconds - 0.9).abs() <= 0.09, "the chime is 0.9 s; {seconds} s were audible");
}

fn a_bad_sound_file_falls_back_to_the_chime() {
    let testbed = crate::fixtures::shared_testbed();
    let dir = tempfile::tempdir().unwrap();
    let corrupt = dir.path().join("corrupt.ogg");
    std::fs::write(&corrupt, b"OggS garbage, not vorbis").unwrap();
    for sound in ["/no/such/sound.wav".to_owned(), corrupt.display().to_string()] {
        let (code, out) =
            speaker_test(&testbed, dir.path(), &format!("  - id: porch\n    kind: alsa\n    sound: \"{sound}\"\n"));
        assert_eq!(code, Some(0), "{out}");
        assert!(out.contains(&sound) && out.contains("playing the built-in chime instead"), "{out}");
    }
    assert!(audible_seconds(&testbed, &dir.path().join("capture.raw")) > 0.8);
}

fn a_missing_alsa_device_is_a_clear_failure() {
    let testbed = crate::fixtures::shared_testbed();
    let dir = tempfile::tempdir().unwrap();
    let (code, out) = speaker_test(&testbed, dir.path(), "  - id: porch\n    kind: alsa\n    device: no_such_pcm\n");
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("porch: FAILED") && out.contains("no_such_pcm"), "{out}");
}

fn components(service: &Service) -> Value {
    http_get(service.addr, "/api/status")
        .ok()
        .and_then(|(_, b)| serde_json::from_str::<Value>(&b).ok())
        .map_or(Value::Null, |v| v["components"].clone())
}

fn metric_labeled(service: &Service, prefix: &str) -> f64 {
    let text = http_get(service.addr, "/metrics").map(|(_, b)| b).unwrap_or_default();
    text.lines().find(|l| l.starts_with(prefix)).and_then(|l| l.rsplit(' ').next()?.parse().ok()).unwrap_or(0.0)
}

fn alerts_play_once_per_coalescing_window() {
    let testbed = crate::fixtures::shared_testbed();
    let fixtures = crate::fixtures::real();
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "cameras:\n  - id: walk\n    url: file://{}\nprocessing:\n  detection:\n    model: {}\n    size: 320\n\
         alert_rules:\n  - name: person\n    conditions:\n      classes: [person]\n    cooldown: 0s\n\
         speakers:\n  - id: once\n    kind: alsa\n    coalesce: 10m\n  - id: often\n    kind: alsa\n    coalesce: 1s\n\
         http:\n  listen: \"{{listen}}\"\n",
        fixtures.join("video/people_walking_640x480_15fps_10s.mp4").display(),
        fixtures.join("yolov8n/yolov8n.safetensors").display()
    );
    let env = alsa_env(&testbed, &dir.path().join("capture.raw"));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let service = Service::start(&config, &env);
    wait_for("two plays outside the window", Duration::from_secs(90), || {
        (metric_labeled(&service, "smart_cctv_sounds_played_total{speaker=\"often\"}") >= 2.0).then_some(())
    });
    assert_eq!(metric_labeled(&service, "smart_cctv_sounds_played_total{speaker=\"once\"}"), 1.0);
    assert!(metric_labeled(&service, "smart_cctv_sounds_dropped_total{speaker=\"once\",reason=\"coalesced\"}") >= 1.0);
}

/// The testbed's BlueZ mock on a private bus, stopped when dropped.
struct BluezMock {
    child: std::process::Child,
    address: String,
    script: std::path::PathBuf,
}

impl BluezMock {
    fn start(testbed: &Path, speaker: &str) -> Self {
        let script = testbed.join("bluez-mock");
        let mut child = Command::new(&script).args(["--speaker", speaker]).stdout(Stdio::piped()).spawn().unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut address = String::new();
        for line in lines.by_ref() {
            let line = line.unwrap();
            if let Some(a) = line.strip_prefix("DBUS_SYSTEM_BUS_ADDRESS=") {
                address = a.to_owned();
            }
            if line == "ready" {
                break;
            }
        }
        std::thread::spawn(move || for _ in lines {});
        Self { child, address, script }
    }

    fn ctl(&self, args: &[&str]) -> String {
        let out = Command::new(&self.script)
            .arg("ctl")
            .args(args)
            .env("DBUS_SYSTEM_BUS_ADDRESS", &self.address)
            .output()
            .unwrap();
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    }
}

impl Drop for BluezMock {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn bluetooth_service(testbed: &Path, dir: &Path, bus: &str) -> Service {
    let config = "cameras: []\nalert_rules: []\nprocessing:\n  detection:\n    model: /nonexistent.safetensors\n\
                  speakers:\n  - id: bt\n    kind: bluetooth\n    address: \"AA:BB:CC:DD:EE:01\"\n    device: default\n    \
                  backoff: { initial: 300ms, max: 1s }\nhttp:\n  listen: \"{listen}\"\n";
    let mut env = alsa_env(testbed, &dir.join("capture.raw"));
    env.push(("DBUS_SYSTEM_BUS_ADDRESS".into(), bus.to_owned()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Service::start(config, &env)
}

fn bluetooth_speaker_connects_and_reconnects_after_removal() {
    let testbed = crate::fixtures::shared_testbed();
    let dir = tempfile::tempdir().unwrap();
    let mock = BluezMock::start(&testbed, "AA:BB:CC:DD:EE:01=Porch-Speaker");
    let service = bluetooth_service(&testbed, dir.path(), &mock.address);
    let ready = |service: &Service| components(service)["speaker/bt"]["ok"] == true;
    wait_for("the speaker to connect", Duration::from_secs(20), || ready(&service).then_some(()));
    let calls = mock.ctl(&["calls", "AA:BB:CC:DD:EE:01"]);
    assert!(calls.contains("Connect"), "{calls}");

    // `speaker test` works against the same mock, through the ALSA capture.
    let config = dir.path().join("bt.yaml");
    write_private(&config, "speakers:\n  - id: bt\n    kind: bluetooth\n    address: \"AA:BB:CC:DD:EE:01\"\n");
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .args(["speaker", "test", "--speaker", "bt"])
        .envs(alsa_env(&testbed, &dir.path().join("bt-test.raw")))
        .env("DBUS_SYSTEM_BUS_ADDRESS", &mock.address)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(audible_seconds(&testbed, &dir.path().join("bt-test.raw")) > 0.8);

    mock.ctl(&["remove-device", "AA:BB:CC:DD:EE:01"]);
    wait_for("the speaker to go down", Duration::from_secs(10), || (!ready(&service)).then_some(()));
    let error = components(&service)["speaker/bt"]["error"].as_str().unwrap_or("").to_owned();
    assert!(error.contains("AA:BB:CC:DD:EE:01"), "{error}");

    mock.ctl(&["add-speaker", "AA:BB:CC:DD:EE:01=Porch-Speaker"]);
    wait_for("the speaker to reconnect", Duration::from_secs(20), || ready(&service).then_some(()));
    assert!(metric_labeled(&service, "smart_cctv_speaker_reconnects_total{speaker=\"bt\"}") >= 1.0);
}

fn no_dbus_is_a_clear_error_and_a_backoff_loop() {
    let testbed = crate::fixtures::shared_testbed();
    let dir = tempfile::tempdir().unwrap();
    let service = bluetooth_service(&testbed, dir.path(), "unix:path=/nonexistent/system_bus_socket");
    wait_for("three failed attempts", Duration::from_secs(20), || {
        (metric_labeled(&service, "smart_cctv_speaker_reconnects_total{speaker=\"bt\"}") >= 3.0).then_some(())
    });
    let error = components(&service)["speaker/bt"]["error"].as_str().unwrap_or("").to_owned();
    assert!(error.contains("D-Bus"), "{error}");
    let (_, metrics) = service.get("/metrics");
    assert!(!metrics.contains("smart_cctv_child_restarts_total{child=\"root/speakers"), "restart storm:\n{metrics}");
    assert!(!service.output().contains("panicked"));
}
