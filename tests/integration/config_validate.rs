//! `smart-cctv config validate` on a table of broken configs: each names the
//! right key path, exits 2, and never prints the camera password; hostile
//! files (alias bombs, deep nesting, huge numbers, garbage) are refused by
//! `config validate` and by a running service's reload alike.

use crate::support::*;
use std::process::Command;
use std::time::Duration;

const PASSWORD: &str = "Sup3r-s3cret";

crate::tests![
    valid_config_passes,
    the_shipped_config_is_valid,
    broken_configs_name_the_key_path,
    every_problem_is_reported_at_once,
    environment_overrides_the_file,
    systemd_unit_matches_the_service_contract,
    the_unit_is_confined_to_an_exposure_of_2_or_less needs [SystemdAnalyze],
    hostile_configs_are_refused_with_the_key_or_the_limit,
    an_smtp_password_is_never_sent_in_clear_unless_allowed,
    a_bad_mqtt_section_names_each_key,
    a_running_service_refuses_hostile_reloads_and_keeps_its_config,
];

/// A valid config with one password-protected camera, to which each case adds
/// or changes something.
fn base() -> String {
    format!("cameras:\n  - id: front\n    url: rtsp://admin:{PASSWORD}@192.168.1.101:554/stream1\n    fps: 15\n")
}

fn validate(text: &str) -> (i32, String) {
    validate_bytes(text.as_bytes())
}

fn valid_config_passes() {
    let (code, out) = validate(&base());
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("1 camera(s)"));
    assert!(!out.contains(PASSWORD));
}

fn the_shipped_config_is_valid() {
    let out = Command::new(BIN).args(["config", "validate"]).arg(repo_file("config/config.yaml")).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
    // The embedded copy (used where no config/config.yaml exists) is valid too.
    let elsewhere = tempfile::tempdir().unwrap();
    let out = Command::new(BIN).args(["config", "validate"]).current_dir(elsewhere.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
}

fn broken_configs_name_the_key_path() {
    let cam = |extra: &str| format!("{}{extra}", base());
    let second_cam = |yaml: &str| format!("{}  - {yaml}\n", base());
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "duplicate camera id",
            second_cam(&format!("id: front\n    url: rtsp://admin:{PASSWORD}@192.168.1.102/s")),
            "cameras[1].id",
        ),
        ("empty camera id", second_cam("id: \"\"\n    url: rtsp://h/s"), "cameras[1].id"),
        ("camera id with a slash", second_cam("id: a/b\n    url: rtsp://h/s"), "cameras[1].id"),
        (
            "camera URL that does not parse",
            second_cam(&format!("id: back\n    url: \"rtsp://admin:{PASSWORD}@[::1/s\"")),
            "cameras[1].url",
        ),
        (
            "unsupported URL scheme",
            second_cam(&format!("id: back\n    url: http://admin:{PASSWORD}@cam/s")),
            "cameras[1].url",
        ),
        ("camera without a URL", second_cam("id: back"), "cameras[1]"),
        ("fps of zero", second_cam("id: back\n    url: rtsp://h/s\n    fps: 0"), "cameras[1].fps"),
        ("fps of the wrong type", second_cam("id: back\n    url: rtsp://h/s\n    fps: fast"), "cameras[1].fps"),
        ("unknown camera key", second_cam("id: back\n    url: rtsp://h/s\n    colour: red"), "cameras[1]"),
        ("unknown top-level key", cam("bogus_section: 1\n"), "bogus_section"),
        (
            "confidence threshold above 1",
            cam("processing:\n  detection:\n    confidence_threshold: 1.5\n"),
            "processing.detection.confidence_threshold",
        ),
        ("unknown device", cam("processing:\n  detection:\n    device: gpu\n"), "processing.detection.device"),
        (
            "unknown precision",
            cam("processing:\n  detection:\n    precision: int4\n"),
            "processing.detection.precision",
        ),
        (
            "int8 on a GPU",
            cam("processing:\n  detection:\n    device: cuda:0\n    precision: int8\n"),
            "processing.detection.precision",
        ),
        (
            "rule naming a missing camera",
            cam("alert_rules:\n  - name: r\n    cameras: [front, garage]\n"),
            "alert_rules[0].cameras[1]",
        ),
        ("duplicate rule name", cam("alert_rules:\n  - name: r\n  - name: r\n"), "alert_rules[1].name"),
        (
            "unknown class",
            cam("alert_rules:\n  - name: r\n    conditions:\n      classes: [person, unicorn]\n"),
            "alert_rules[0].conditions.classes[1]",
        ),
        (
            "negative distance",
            cam("alert_rules:\n  - name: r\n    conditions:\n      distance_to_reference:\n        value: -2\n"),
            "alert_rules[0].conditions.distance_to_reference.value",
        ),
        (
            "min_confidence above 1",
            cam("alert_rules:\n  - name: r\n    conditions:\n      min_confidence: 3\n"),
            "alert_rules[0].conditions.min_confidence",
        ),
        (
            "cooldown that is not a duration",
            cam("alert_rules:\n  - name: r\n    cooldown: soon\n"),
            "alert_rules[0].cooldown",
        ),
        ("fps_limit of zero", cam("performance:\n  fps_limit: 0\n"), "performance.fps_limit"),
        (
            "logs deleted before they are compressed",
            cam("retention:\n  logs_compress_days: 90\n  logs_delete_days: 30\n"),
            "retention.logs_compress_days",
        ),
        (
            "bluetooth speaker without an address",
            cam("speakers:\n  - id: porch\n    kind: bluetooth\n"),
            "speakers[0].address",
        ),
        (
            "speaker volume above 1",
            cam("speakers:\n  - id: porch\n    kind: alsa\n    volume: 11\n"),
            "speakers[0].volume",
        ),
        (
            "email enabled without a server",
            cam("monitoring:\n  email_alerts_enabled: true\n  email_to: a@b.c\n  email_from: c@b.a\n"),
            "monitoring.smtp_server",
        ),
        ("invalid log level", cam("monitoring:\n  log_level: \"loud=[\"\n"), "monitoring.log_level"),
        ("listen address that does not parse", cam("http:\n  listen: localhost-ish\n"), "http.listen"),
        ("non-loopback listen without opting in", cam("http:\n  listen: 0.0.0.0:9810\n"), "http.listen"),
        ("YAML syntax error", format!("{}  - [unclosed\n", base()), "(syntax)"),
        (
            "disk warning above the critical level",
            cam("health:\n  disk_warn_percent: 95\n  disk_critical_percent: 90\n"),
            "health.disk_warn_percent",
        ),
        ("disk threshold over 100%", cam("health:\n  disk_critical_percent: 120\n"), "health.disk_critical_percent"),
        ("retention deleting nothing per batch", cam("retention:\n  delete_batch: 0\n"), "retention.delete_batch"),
        ("unknown health key", cam("health:\n  disk_full_percent: 95\n"), "health.disk_full_percent"),
    ];
    assert!(cases.len() >= 15);
    let mut failures = Vec::new();
    for (name, text, key) in &cases {
        let (code, out) = validate(text);
        if code != 2 {
            failures.push(format!("{name}: exit {code}, expected 2:\n{out}"));
        }
        if !out.lines().any(|l| l.starts_with("error:") && l.contains(&format!(": {key}"))) {
            failures.push(format!("{name}: no error line names `{key}`:\n{out}"));
        }
        if out.contains(PASSWORD) {
            failures.push(format!("{name}: the password was printed:\n{out}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

fn every_problem_is_reported_at_once() {
    let text = format!(
        "{}processing:\n  detection:\n    confidence_threshold: 0\n    device: tpu\nhttp:\n  listen: nowhere\n",
        base()
    );
    let (code, out) = validate(&text);
    assert_eq!(code, 2);
    for key in ["processing.detection.confidence_threshold", "processing.detection.device", "http.listen"] {
        assert!(out.contains(key), "{key} missing from:\n{out}");
    }
    assert!(out.contains("3 problem(s)"), "{out}");
}

fn environment_overrides_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    write_private(&path, &base());
    let out = Command::new(BIN)
        .args(["config", "validate"])
        .arg(&path)
        .env("SMART_CCTV__HTTP__LISTEN", "0.0.0.0:1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stdout).contains("http.listen"));
}

/// The unit must keep the contract the service implements: notify, watchdog,
/// reload by SIGHUP, restart on failure but not on a bad config.
fn systemd_unit_matches_the_service_contract() {
    let unit = std::fs::read_to_string(repo_file("ops/smart-cctv.service")).unwrap();
    let keys: Vec<&str> = unit.lines().map(str::trim).filter(|l| !l.starts_with('#')).collect();
    for expected in
        ["Type=notify", "Restart=on-failure", "ExecReload=/bin/kill -HUP $MAINPID", "RestartPreventExitStatus=2"]
    {
        assert!(keys.contains(&expected), "{expected} missing from the unit");
    }
    assert!(keys.iter().any(|k| k.starts_with("WatchdogSec=")));
    let exec = keys.iter().find(|k| k.starts_with("ExecStart=")).unwrap();
    assert!(exec.ends_with(" run"), "{exec}");
}

fn validate_bytes(bytes: &[u8]) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, bytes).unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let out = Command::new(BIN)
        .args(["--supervision", repo_file("supervision.toml").to_str().unwrap(), "config", "validate"])
        .arg(&path)
        .current_dir(dir.path())
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

/// Each hostile file, and the words its refusal must contain.
fn hostile_cases() -> Vec<(&'static str, Vec<u8>, &'static str)> {
    let mut bomb = String::from("a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for i in 1..10 {
        let p = i - 1;
        bomb.push_str(&format!("a{i}: &a{i} [{}]\n", vec![format!("*a{p}"); 10].join(", ")));
    }
    let zone = |points: &str| {
        format!(
            "{}alert_rules:\n  - name: r\n    conditions:\n      classes: [person]\n      zones:\n        - points: {points}\n",
            base()
        )
    };
    let garbage: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    vec![
        ("alias bomb", bomb.into_bytes(), "aliases are expanded"),
        ("100 000-deep nesting", ("- ".repeat(100_000) + "x\n").into_bytes(), "nested deeper than 64"),
        ("1e20 duration", format!("{}    stall_timeout: 1e20\n", base()).into_bytes(), "cameras[0].stall_timeout"),
        (
            "huge humantime",
            format!("{}    stall_timeout: 100000000y\n", base()).into_bytes(),
            "cameras[0].stall_timeout",
        ),
        // YAML's own NaN and infinity are refused by the parser, naming them...
        ("YAML NaN", format!("{}processing:\n  motion:\n    min_area: .nan\n", base()).into_bytes(), ".nan"),
        (
            "YAML infinity",
            format!("{}processing:\n  detection:\n    confidence_threshold: .inf\n", base()).into_bytes(),
            ".inf",
        ),
        // ...and spelt as strings they reach the checks, which name the key.
        ("NaN duration", format!("{}    stall_timeout: NaN\n", base()).into_bytes(), "cameras[0].stall_timeout"),
        ("infinite duration", format!("{}    stall_timeout: inf\n", base()).into_bytes(), "cameras[0].stall_timeout"),
        (
            "NaN threshold",
            format!("{}processing:\n  detection:\n    confidence_threshold: NaN\n", base()).into_bytes(),
            "processing.detection.confidence_threshold",
        ),
        ("1e39 points", zone("[[0, 0], [1e39, 0], [0, 1]]").into_bytes(), "zones[0].points[1]"),
        ("negative points", zone("[[0, 0], [-5, 0], [0, 1]]").into_bytes(), "zones[0].points[1]"),
        ("10 MB file", vec![b'#'; 10 << 20], "limit of 1024 KiB"),
        ("binary garbage", garbage, "(file)"),
        ("control characters", "cameras: [\u{1}\u{2}\u{3}]\n\u{7f}\u{0}\n".as_bytes().to_vec(), "(syntax)"),
        ("non-UTF-8", b"cameras: []\n# caf\xe9\n".to_vec(), "not UTF-8"),
    ]
}

fn hostile_configs_are_refused_with_the_key_or_the_limit() {
    for (what, bytes, needle) in hostile_cases() {
        let started = std::time::Instant::now();
        let (code, out) = validate_bytes(&bytes);
        assert_eq!(code, 2, "{what}: {out}");
        assert!(out.contains(needle), "{what}: expected `{needle}` in:\n{out}");
        assert!(!out.contains(PASSWORD), "{what}: the password leaked");
        eprintln!("{what}: refused in {:?}", started.elapsed());
    }
}

/// Resident memory of a process, in MiB.
fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:")?.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb / 1024.0
}

fn a_running_service_refuses_hostile_reloads_and_keeps_its_config() {
    let good = format!(
        "cameras: []\nprocessing:\n  detection:\n    model: {}\n    size: 320\nhttp:\n  listen: \"{{listen}}\"\n",
        crate::fixtures::random_model().display()
    );
    let mut service = Service::start(&good, &[]);
    service.wait_healthy(Duration::from_secs(60));
    let rss_before = rss_mib(service.child.id());
    let failures = |s: &Service| metric(&s.get("/metrics").1, "smart_cctv_config_reload_failures_total").unwrap_or(0.0);
    for (i, (what, bytes, _)) in hostile_cases().into_iter().enumerate() {
        // The listen address is kept where the case has a place for it.
        let bytes = String::from_utf8(bytes.clone())
            .map(|t| t.replace("{listen}", &service.addr.to_string()).into_bytes())
            .unwrap_or(bytes);
        std::fs::write(service.config_path(), &bytes).unwrap();
        signal(&service.child, libc::SIGHUP);
        wait_for(&format!("the {what} reload to be refused"), Duration::from_secs(30), || {
            (failures(&service) >= (i + 1) as f64).then_some(())
        });
        assert!(service.child.try_wait().unwrap().is_none(), "{what} stopped the service:\n{}", service.output());
    }
    let grew = rss_mib(service.child.id()) - rss_before;
    assert!(grew < 50.0, "RSS grew {grew:.1} MiB over the hostile reloads");
    assert_eq!(metric(&service.get("/metrics").1, "smart_cctv_config_generation"), Some(1.0));
    assert_eq!(service.get("/healthz").0, 200);
}

fn the_unit_is_confined_to_an_exposure_of_2_or_less() {
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(repo_file("ops/smart-cctv.service"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let score: f64 = text
        .lines()
        .find_map(|l| {
            l.split("exposure level for smart-cctv.service: ").nth(1)?.split_whitespace().next()?.parse().ok()
        })
        .unwrap_or_else(|| panic!("no score in:\n{text}{}", String::from_utf8_lossy(&out.stderr)));
    eprintln!("systemd-analyze security: {score}");
    assert!(score <= 2.0, "exposure {score} > 2.0:\n{text}");
    let unit = std::fs::read_to_string(repo_file("ops/smart-cctv.service")).unwrap();
    for needed in [
        "DeviceAllow=char-video4linux rw",
        "DeviceAllow=char-alsa rw",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
    ] {
        assert!(unit.contains(needed), "the unit must still allow what the service uses: {needed}");
    }
}

fn an_smtp_password_is_never_sent_in_clear_unless_allowed() {
    let smtp = |extra: &str| {
        format!(
            "{}monitoring:\n  smtp_server: mail.example\n  smtp_username: me\n  smtp_password: {PASSWORD}\n{extra}",
            base()
        )
    };
    let (code, out) = validate(&smtp("  smtp_starttls: false\n"));
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("monitoring.smtp_starttls") && out.contains("clear text"), "{out}");
    assert!(!out.contains(PASSWORD));
    for fine in [
        "",
        "  smtp_starttls: false\n  smtp_tls: true\n  smtp_port: 465\n",
        "  smtp_starttls: false\n  smtp_allow_plaintext: true\n",
    ] {
        let (code, out) = validate(&smtp(fine));
        assert_eq!(code, 0, "{fine}: {out}");
    }
}

fn a_bad_mqtt_section_names_each_key() {
    let mqtt = |body: &str| format!("{}mqtt:\n{body}", base());
    let (code, out) = validate(&mqtt(
        "  host: \"\"\n  password: {PASSWORD}\n  topic_prefix: \"home/#\"\n  discovery_prefix: \"a//b\"\n  stats_interval: 0s\n  tls:\n    ca_file: /ca.pem\n    client_cert: /c.pem\n"
            .replace("{PASSWORD}", PASSWORD)
            .as_str(),
    ));
    assert_eq!(code, 2, "{out}");
    for key in ["mqtt.host", "mqtt.topic_prefix", "mqtt.discovery_prefix", "mqtt.stats_interval", "mqtt.tls"] {
        assert!(out.contains(key), "{key} is not named: {out}");
    }
    assert!(!out.contains(PASSWORD));
    let (code, out) = validate(&mqtt("  hots: broker.lan\n"));
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("hots"), "{out}");
    let (code, out) = validate(&mqtt("  host: broker.lan\n  user: cctv\n  password: x\n"));
    assert_eq!(code, 0, "{out}");
}
