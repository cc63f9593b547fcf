//! The files operators use from `ops/`: Prometheus rules and scrape config,
//! the Grafana dashboard, and `install.sh`, checked against what the binary
//! really exports and does.

use crate::support::repo_file;
use std::collections::BTreeSet;
use yaml_rust2::{Yaml, YamlLoader};

crate::tests![
    prometheus_rules_cover_the_failures_and_name_real_metrics,
    the_scrape_config_and_dashboard_match_the_service,
    install_sh_can_run_twice_and_keeps_the_users_config,
];

/// Every `smart_cctv_*` name in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (i, _) in text.match_indices("smart_cctv_") {
        let name: String = text[i..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        names.insert(name.trim_end_matches("_bucket").to_owned());
    }
    names
}

/// Every metric name the source code records.
fn exported() -> BTreeSet<String> {
    fn walk(dir: &std::path::Path, out: &mut String) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push_str(&std::fs::read_to_string(&path).unwrap());
            }
        }
    }
    let mut source = String::new();
    walk(&repo_file("src"), &mut source);
    metric_names(&source)
}

fn prometheus_rules_cover_the_failures_and_name_real_metrics() {
    let text = std::fs::read_to_string(repo_file("ops/alerts.rules.yml")).unwrap();
    let docs = YamlLoader::load_from_str(&text).unwrap();
    let rules = docs[0]["groups"][0]["rules"].as_vec().unwrap();
    let alerts: Vec<(&str, &str, Option<&str>)> =
        rules.iter().map(|r| (r["alert"].as_str().unwrap(), r["expr"].as_str().unwrap(), r["for"].as_str())).collect();
    let names: BTreeSet<&str> = alerts.iter().map(|a| a.0).collect();
    for wanted in [
        "SmartCctvCameraDown",
        "SmartCctvNoFrames",
        "SmartCctvDiskAlmostFull",
        "SmartCctvReloadFailed",
        "SmartCctvRestartStorm",
        "SmartCctvStoreErrors",
        "SmartCctvSpeakerDown",
        "SmartCctvLoginFailures",
    ] {
        assert!(names.contains(wanted), "{wanted} missing from {names:?}");
    }
    let camera_down = alerts.iter().find(|a| a.0 == "SmartCctvCameraDown").unwrap();
    assert_eq!(camera_down.2, Some("5m"), "a camera down for 5 minutes");
    assert!(alerts.iter().find(|a| a.0 == "SmartCctvDiskAlmostFull").unwrap().1.contains("> 90"));
    let exported = exported();
    for name in metric_names(&text) {
        assert!(exported.contains(&name), "ops/alerts.rules.yml uses {name}, which smart-cctv does not export");
    }
    // promtool, when Debian's prometheus package is installed (ops/setup-deps installs it).
    if let Ok(out) =
        std::process::Command::new("promtool").args(["check", "rules"]).arg(repo_file("ops/alerts.rules.yml")).output()
    {
        assert!(out.status.success(), "promtool: {}", String::from_utf8_lossy(&out.stdout));
        let out = std::process::Command::new("promtool")
            .args(["check", "config"])
            .arg(repo_file("ops/prometheus.yml"))
            .output()
            .unwrap();
        assert!(out.status.success(), "promtool: {}", String::from_utf8_lossy(&out.stdout));
    } else {
        eprintln!("promtool not installed: checked the rules as YAML only");
    }
}

fn the_scrape_config_and_dashboard_match_the_service() {
    let scrape = YamlLoader::load_from_str(&std::fs::read_to_string(repo_file("ops/prometheus.yml")).unwrap()).unwrap();
    let target = scrape[0]["scrape_configs"][0]["static_configs"][0]["targets"][0].as_str().unwrap().to_owned();
    let default_listen = smart_cctv::config::Config::default().http.listen;
    assert_eq!(target, default_listen);
    assert!(matches!(scrape[0]["rule_files"][0], Yaml::String(ref f) if f == "alerts.rules.yml"));

    let text = std::fs::read_to_string(repo_file("ops/grafana-dashboard.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).unwrap();
    let panels = dashboard["panels"].as_array().unwrap();
    assert!(panels.len() >= 8);
    let exported = exported();
    for name in metric_names(&text) {
        assert!(exported.contains(&name), "the dashboard uses {name}, which smart-cctv does not export");
    }
}

fn install_sh_can_run_twice_and_keeps_the_users_config() {
    let root = tempfile::tempdir().unwrap();
    let install = |root: &std::path::Path| {
        let out = std::process::Command::new(repo_file("ops/install.sh"))
            .args(["--binary", crate::support::BIN, "--root"])
            .arg(root)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    install(root.path());
    let config = root.path().join("etc/smart-cctv/config.yaml");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&config).unwrap().permissions().mode() & 0o777, 0o640);
    assert!(root.path().join("etc/systemd/system/smart-cctv.service").is_file());
    assert!(root.path().join("usr/local/bin/smart-cctv").is_file());
    assert!(root.path().join("var/lib/smart-cctv").is_dir());
    // The user edits the config and loosens its mode; a second run keeps the
    // edit and tightens the mode again.
    std::fs::write(&config, "cameras: []\n").unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    install(root.path());
    assert_eq!(std::fs::read_to_string(&config).unwrap(), "cameras: []\n");
    assert_eq!(std::fs::metadata(&config).unwrap().permissions().mode() & 0o777, 0o640);
}
