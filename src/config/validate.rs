//! Semantic checks that serde cannot express. Every problem is reported, not
//! just the first, each with its key path, so a user fixes a file in one go.

use super::load::Problem;
use super::model::*;
use std::collections::HashSet;
use std::net::SocketAddr;

/// Everything wrong with `config`; empty when it is good.
pub fn validate(config: &Config) -> Vec<Problem> {
    let mut p = Vec::new();
    cameras(config, &mut p);
    detection(&config.processing.detection, &mut p);
    let m = &config.processing.motion;
    if !(0.0..=1.0).contains(&m.min_area) {
        p.push(Problem::new("processing.motion.min_area", format!("{} must be between 0 and 1", m.min_area)));
    }
    rules(config, &mut p);
    performance(&config.performance, &mut p);
    retention(&config.retention, &mut p);
    health(&config.health, &mut p);
    speakers(&config.speakers, &mut p);
    monitoring(&config.monitoring, &mut p);
    http(&config.http, &mut p);
    let m = &config.monitoring;
    if m.smtp_password.is_some() && !m.smtp_tls && !m.smtp_starttls && !m.smtp_allow_plaintext {
        p.push(Problem::new(
            "monitoring.smtp_starttls",
            "false would send the SMTP password in clear text; use smtp_starttls: true or smtp_tls: true \
             (port 465), or say smtp_allow_plaintext: true",
        ));
    }
    if config.backup.every.is_some_and(|d| d < std::time::Duration::from_secs(1)) {
        p.push(Problem::new("backup.every", "must be at least 1s"));
    }
    if !(1..=1000).contains(&config.backup.keep) {
        p.push(Problem::new("backup.keep", format!("{} must be between 1 and 1000", config.backup.keep)));
    }
    if let Some(mqtt) = &config.mqtt {
        self::mqtt(mqtt, &mut p);
    }
    if let Some(cluster) = &config.cluster {
        super::cluster::validate(cluster, &mut p);
        let enabled = config.cameras.iter().filter(|c| c.enabled).count();
        if cluster.role == super::cluster::Role::Inference && enabled > 0 {
            p.push(Problem::new(
                "cluster.role",
                format!(
                    "an inference node runs no cameras, yet {enabled} are enabled here; \
                     move them to an edge node, or use role: all"
                ),
            ));
        }
    }
    if config.storage.data_dir.as_os_str().is_empty() {
        p.push(Problem::new("storage.data_dir", "must not be empty"));
    }
    p
}

fn mqtt(m: &MqttConfig, p: &mut Vec<Problem>) {
    if m.host.trim().is_empty() {
        p.push(Problem::new("mqtt.host", "must not be empty"));
    }
    // Prefixes head every topic we publish or subscribe: wildcards or empty
    // levels would make them match other publishers' topics.
    for (key, prefix) in [("mqtt.topic_prefix", &m.topic_prefix), ("mqtt.discovery_prefix", &m.discovery_prefix)] {
        let bad_level = prefix.split('/').any(|level| level.is_empty() || level.contains(['+', '#', '\0']));
        if bad_level || prefix.len() > 128 {
            p.push(Problem::new(
                key,
                format!("`{prefix}` must be up to 128 characters of topic levels without `+`, `#` or empty levels"),
            ));
        }
    }
    if m.client_id.as_ref().is_some_and(|id| id.is_empty() || id.len() > 64) {
        p.push(Problem::new("mqtt.client_id", "must be 1 to 64 characters"));
    }
    if m.stats_interval < std::time::Duration::from_secs(1) {
        p.push(Problem::new("mqtt.stats_interval", "must be at least 1s"));
    }
    if let Some(tls) = &m.tls
        && tls.client_cert.is_some() != tls.client_key.is_some()
    {
        p.push(Problem::new("mqtt.tls", "client_cert and client_key go together"));
    }
}

/// Ids become metric labels, file names and URL segments.
fn check_id(key: String, id: &str, seen: &mut HashSet<String>, what: &str, p: &mut Vec<Problem>) {
    if id.is_empty() {
        p.push(Problem::new(key, "must not be empty"));
    } else if !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        p.push(Problem::new(key, format!("`{id}` may only contain letters, digits, `_` and `-`")));
    } else if !seen.insert(id.to_owned()) {
        p.push(Problem::new(key, format!("duplicate {what} `{id}`")));
    }
}

fn cameras(config: &Config, p: &mut Vec<Problem>) {
    let mut seen = HashSet::new();
    for (i, cam) in config.cameras.iter().enumerate() {
        check_id(format!("cameras[{i}].id"), &cam.id, &mut seen, "camera id", p);
        if let Err(why) = check_camera_url(cam.url.expose()) {
            p.push(Problem::new(format!("cameras[{i}].url"), format!("`{}`: {why}", cam.url)));
        }
        if let Some(fps) = cam.fps
            && !(fps > 0.0 && fps <= 240.0)
        {
            p.push(Problem::new(format!("cameras[{i}].fps"), format!("{fps} must be above 0 and at most 240")));
        }
        if cam.stall_timeout < std::time::Duration::from_millis(100) {
            p.push(Problem::new(format!("cameras[{i}].stall_timeout"), "must be at least 100ms"));
        }
        for (j, poly) in cam.motion_masks.iter().enumerate() {
            if poly.len() < 3 {
                p.push(Problem::new(format!("cameras[{i}].motion_masks[{j}]"), "a polygon needs at least 3 points"));
            }
            points(&format!("cameras[{i}].motion_masks[{j}]"), poly, ZoneSpace::Image, p);
        }
        for (key, b) in [("backoff", &cam.backoff), ("auth_backoff", &cam.auth_backoff)] {
            backoff(&format!("cameras[{i}].{key}"), b, p);
        }
    }
}

/// Every point finite, and inside the analysed frame (image space) or within
/// [`crate::calibration::MAX_GROUND_METRES`] (ground space): drawing and point-in-polygon tests
/// walk these coordinates.
fn points(key: &str, points: &[[f32; 2]], space: ZoneSpace, p: &mut Vec<Problem>) {
    let frame = crate::service::topology::ANALYSIS_SIZE as f32;
    let ground = crate::calibration::MAX_GROUND_METRES as f32;
    for (k, &[x, y]) in points.iter().enumerate() {
        let fine = match space {
            ZoneSpace::Image => (0.0..=frame).contains(&x) && (0.0..=frame).contains(&y),
            ZoneSpace::Ground => x.abs() <= ground && y.abs() <= ground,
        };
        if !fine {
            let bound = match space {
                ZoneSpace::Image => format!("inside the analysed frame (0 to {frame} pixels)"),
                ZoneSpace::Ground => format!("finite and within {ground} m of the origin"),
            };
            p.push(Problem::new(format!("{key}[{k}]"), format!("[{x}, {y}] must be {bound}")));
        }
    }
}

fn backoff(key: &str, b: &BackoffConfig, p: &mut Vec<Problem>) {
    if b.initial.is_zero() {
        p.push(Problem::new(format!("{key}.initial"), "must be greater than zero"));
    }
    if b.max < b.initial {
        p.push(Problem::new(format!("{key}.max"), "must not be less than initial"));
    }
    if !(b.multiplier.is_finite() && b.multiplier >= 1.0) {
        p.push(Problem::new(format!("{key}.multiplier"), format!("{} must be >= 1.0", b.multiplier)));
    }
    if !(0.0..=1.0).contains(&b.jitter) {
        p.push(Problem::new(format!("{key}.jitter"), format!("{} must be between 0.0 and 1.0", b.jitter)));
    }
}

/// The schemes a camera source understands.
fn check_camera_url(text: &str) -> Result<(), String> {
    let url = url::Url::parse(text).map_err(|e| format!("not a URL ({e})"))?;
    match url.scheme() {
        "rtsp" | "rtsps" => {
            if url.host_str().is_none_or(str::is_empty) {
                return Err("an RTSP URL needs a host".into());
            }
        }
        "file" | "v4l2" => {
            if url.path().is_empty() || url.path() == "/" {
                return Err(format!("a {}:// URL needs a path", url.scheme()));
            }
        }
        other => {
            return Err(format!("unsupported scheme `{other}`; use rtsp://, v4l2:// or file://"));
        }
    }
    Ok(())
}

fn detection(d: &DetectionConfig, p: &mut Vec<Problem>) {
    let key = "processing.detection";
    if d.model.trim().is_empty() {
        p.push(Problem::new(format!("{key}.model"), "must name a model (yolov8n) or a weights file"));
    }
    if !(d.confidence_threshold > 0.0 && d.confidence_threshold <= 1.0) {
        p.push(Problem::new(
            format!("{key}.confidence_threshold"),
            format!("{} must be above 0 and at most 1", d.confidence_threshold),
        ));
    }
    if d.size != 640 && d.size != 320 {
        p.push(Problem::new(format!("{key}.size"), format!("{} is not 640 or 320", d.size)));
    }
    if !(1..=16).contains(&d.workers) {
        p.push(Problem::new(format!("{key}.workers"), format!("{} must be between 1 and 16", d.workers)));
    }
    let device_ok =
        d.device == "cpu" || d.device.strip_prefix("cuda:").is_some_and(|n| !n.is_empty() && n.parse::<u32>().is_ok());
    if !device_ok {
        p.push(Problem::new(format!("{key}.device"), format!("`{}` is not `cpu` or `cuda:N`", d.device)));
    }
    if d.precision == crate::config::Precision::Int8 && d.device != "cpu" {
        p.push(Problem::new(format!("{key}.precision"), "int8 runs on the CPU only (device: cpu)"));
    }
}

fn rules(config: &Config, p: &mut Vec<Problem>) {
    let cameras: HashSet<&str> = config.cameras.iter().map(|c| c.id.as_str()).collect();
    let mut seen = HashSet::new();
    for (i, rule) in config.alert_rules.iter().enumerate() {
        let key = format!("alert_rules[{i}]");
        if rule.name.trim().is_empty() {
            p.push(Problem::new(format!("{key}.name"), "must not be empty"));
        } else if !seen.insert(rule.name.as_str()) {
            p.push(Problem::new(format!("{key}.name"), format!("duplicate rule name `{}`", rule.name)));
        }
        for (j, cam) in rule.cameras.iter().enumerate() {
            if !cameras.contains(cam.as_str()) {
                p.push(Problem::new(format!("{key}.cameras[{j}]"), format!("no camera has id `{cam}`")));
            }
        }
        let c = &rule.conditions;
        for (j, class) in c.classes.iter().enumerate() {
            if crate::coco::class_index(class).is_none() {
                p.push(Problem::new(
                    format!("{key}.conditions.classes[{j}]"),
                    format!("`{class}` is not a COCO class (e.g. person, car, dog)"),
                ));
            }
        }
        if let Some(conf) = c.min_confidence
            && !(0.0..=1.0).contains(&conf)
        {
            p.push(Problem::new(format!("{key}.conditions.min_confidence"), format!("{conf} must be between 0 and 1")));
        }
        if let Some(d) = &c.distance_to_reference
            && !(d.value.is_finite() && d.value > 0.0)
        {
            p.push(Problem::new(
                format!("{key}.conditions.distance_to_reference.value"),
                format!("{} must be a distance in metres above 0", d.value),
            ));
        }
        for (j, zone) in c.zones.iter().enumerate() {
            if zone.points.len() < 3 {
                p.push(Problem::new(format!("{key}.conditions.zones[{j}].points"), "a zone needs at least 3 points"));
            }
            points(&format!("{key}.conditions.zones[{j}].points"), &zone.points, zone.space, p);
        }
        if let Some(schedule) = &c.schedule {
            for (j, day) in schedule.days.iter().enumerate() {
                if crate::rules::schedule::parse_day(day).is_none() {
                    p.push(Problem::new(
                        format!("{key}.conditions.schedule.days[{j}]"),
                        format!("`{day}` is not mon, tue, wed, thu, fri, sat or sun"),
                    ));
                }
            }
            if let Some(hours) = &schedule.hours
                && let Err(e) = crate::rules::schedule::parse_hours(hours)
            {
                p.push(Problem::new(format!("{key}.conditions.schedule.hours"), e));
            }
        }
        if c.min_count == Some(0) {
            p.push(Problem::new(format!("{key}.conditions.min_count"), "must be at least 1"));
        }
    }
}

fn performance(perf: &PerformanceConfig, p: &mut Vec<Problem>) {
    if let Some(fps) = perf.fps_limit
        && !(fps > 0.0 && fps <= 240.0)
    {
        p.push(Problem::new("performance.fps_limit", format!("{fps} must be above 0 and at most 240")));
    }
}

fn retention(r: &RetentionConfig, p: &mut Vec<Problem>) {
    for (key, days) in [("snapshots_days", r.snapshots_days), ("events_days", r.events_days)] {
        if days == 0 {
            p.push(Problem::new(format!("retention.{key}"), "must be at least 1 day"));
        }
    }
    if r.delete_batch == 0 {
        p.push(Problem::new("retention.delete_batch", "must be at least 1"));
    }
    if r.interval < std::time::Duration::from_secs(1) {
        p.push(Problem::new("retention.interval", "must be at least 1s"));
    }
    if r.logs_compress_days >= r.logs_delete_days {
        p.push(Problem::new(
            "retention.logs_compress_days",
            format!("{} must be less than logs_delete_days ({})", r.logs_compress_days, r.logs_delete_days),
        ));
    }
}

fn health(h: &HealthConfig, p: &mut Vec<Problem>) {
    for (key, value) in [("disk_warn_percent", h.disk_warn_percent), ("disk_critical_percent", h.disk_critical_percent)]
    {
        if !(value > 0.0 && value <= 100.0) {
            p.push(Problem::new(format!("health.{key}"), format!("{value} is not a percentage in (0, 100]")));
        }
    }
    if h.disk_warn_percent >= h.disk_critical_percent {
        p.push(Problem::new(
            "health.disk_warn_percent",
            format!("{} must be less than disk_critical_percent ({})", h.disk_warn_percent, h.disk_critical_percent),
        ));
    }
    if h.interval < std::time::Duration::from_millis(100) {
        p.push(Problem::new("health.interval", "must be at least 100ms"));
    }
}

fn speakers(speakers: &[SpeakerConfig], p: &mut Vec<Problem>) {
    let mut seen = HashSet::new();
    for (i, s) in speakers.iter().enumerate() {
        check_id(format!("speakers[{i}].id"), &s.id, &mut seen, "speaker id", p);
        if !(0.0..=1.0).contains(&s.volume) {
            p.push(Problem::new(format!("speakers[{i}].volume"), format!("{} must be between 0 and 1", s.volume)));
        }
        if let Some(h) = &s.quiet_hours
            && let Err(e) = crate::rules::schedule::parse_hours(h)
        {
            p.push(Problem::new(format!("speakers[{i}].quiet_hours"), e));
        }
        backoff(&format!("speakers[{i}].backoff"), &s.backoff, p);
        match (s.kind, &s.address) {
            (SpeakerKind::Bluetooth, None) => {
                p.push(Problem::new(format!("speakers[{i}].address"), "a bluetooth speaker needs its MAC address"));
            }
            (SpeakerKind::Bluetooth, Some(mac)) if !is_mac(mac) => {
                p.push(Problem::new(
                    format!("speakers[{i}].address"),
                    format!("`{mac}` is not a MAC address like AA:BB:CC:DD:EE:FF"),
                ));
            }
            _ => {}
        }
    }
}

fn is_mac(text: &str) -> bool {
    let parts: Vec<&str> = text.split(':').collect();
    parts.len() == 6 && parts.iter().all(|b| b.len() == 2 && b.chars().all(|c| c.is_ascii_hexdigit()))
}

fn monitoring(m: &MonitoringConfig, p: &mut Vec<Problem>) {
    if let Err(e) = tracing_subscriber::EnvFilter::builder().parse(&m.log_level) {
        p.push(Problem::new("monitoring.log_level", format!("`{}` is not a log level or filter: {e}", m.log_level)));
    }
    if m.email_alerts_enabled {
        for (key, value) in [("email_to", &m.email_to), ("email_from", &m.email_from), ("smtp_server", &m.smtp_server)]
        {
            if value.as_deref().is_none_or(|v| v.trim().is_empty()) {
                p.push(Problem::new(format!("monitoring.{key}"), "is required when email_alerts_enabled is true"));
            }
        }
    }
}

fn http(h: &HttpConfig, p: &mut Vec<Problem>) {
    match h.listen.parse::<SocketAddr>() {
        Err(e) => {
            p.push(Problem::new("http.listen", format!("`{}` is not an address like 127.0.0.1:9810 ({e})", h.listen)))
        }
        Ok(addr) if !addr.ip().is_loopback() && !h.allow_non_loopback => p.push(Problem::new(
            "http.listen",
            format!(
                "{addr} is reachable from other machines and the API has no authentication; \
                 set http.allow_non_loopback: true to do this on purpose"
            ),
        )),
        Ok(_) => {}
    }
}
