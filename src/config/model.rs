//! The typed shape of `config.yaml`.
//!
//! Keys follow the old Python system so existing files keep working; unknown
//! keys are errors, because a typo (`cooldwon: 60`) silently ignored is how
//! alert storms happen.

use super::secret::CameraUrl;
use crate::base::duration;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub cameras: Vec<CameraConfig>,
    #[serde(default)]
    pub processing: ProcessingConfig,
    #[serde(default)]
    pub alert_rules: Vec<AlertRuleConfig>,
    #[serde(default)]
    pub performance: PerformanceConfig,
    #[serde(default)]
    pub storage: StorageConfig,
    #[serde(default)]
    pub retention: RetentionConfig,
    #[serde(default)]
    pub speakers: Vec<SpeakerConfig>,
    #[serde(default)]
    pub monitoring: MonitoringConfig,
    #[serde(default)]
    pub health: HealthConfig,
    #[serde(default)]
    pub http: HttpConfig,
    #[serde(default)]
    pub backup: BackupConfig,
    /// MQTT and Home Assistant; no section, no MQTT at all.
    #[serde(default)]
    pub mqtt: Option<MqttConfig>,
    /// Camera and inference nodes on several boxes; no section, one box.
    #[serde(default)]
    pub cluster: Option<super::cluster::ClusterConfig>,
}

/// The MQTT broker, the topics under `topic_prefix` (Frigate's layout), and
/// Home Assistant discovery.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    pub host: String,
    #[serde(default = "default_mqtt_port")]
    pub port: u16,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub password: Option<crate::config::secret::Secret>,
    /// TLS to the broker; plain TCP when absent.
    #[serde(default)]
    pub tls: Option<MqttTlsConfig>,
    #[serde(default = "default_topic_prefix")]
    pub topic_prefix: String,
    /// [default: `smart-cctv-<host name>`]
    #[serde(default)]
    pub client_id: Option<String>,
    /// How often `<prefix>/stats` is published.
    #[serde(default = "default_stats_interval", with = "duration")]
    pub stats_interval: Duration,
    /// A camera's status is published once it has held this long, so a
    /// reconnect that takes a second does not flap Home Assistant.
    #[serde(default = "default_status_debounce", with = "duration")]
    pub status_debounce: Duration,
    #[serde(default = "yes")]
    pub ha_discovery: bool,
    #[serde(default = "default_discovery_prefix")]
    pub discovery_prefix: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MqttTlsConfig {
    /// PEM file of the CA that signed the broker's certificate.
    pub ca_file: PathBuf,
    /// PEM client certificate and key, for brokers that ask for one.
    #[serde(default)]
    pub client_cert: Option<PathBuf>,
    #[serde(default)]
    pub client_key: Option<PathBuf>,
}

fn default_mqtt_port() -> u16 {
    1883
}

fn default_topic_prefix() -> String {
    "smart_cctv".into()
}

fn default_discovery_prefix() -> String {
    "homeassistant".into()
}

fn default_stats_interval() -> Duration {
    Duration::from_secs(60)
}

fn default_status_debounce() -> Duration {
    Duration::from_secs(3)
}

/// Backups: `ops backup`'s archives, and scheduled ones (the old monthly cron).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BackupConfig {
    /// Archives kept in the backup folder; older ones are deleted after a
    /// new one is written.
    #[serde(default = "default_backup_keep")]
    pub keep: usize,
    /// Make a backup this often (`7d`); none when unset.
    #[serde(default, with = "duration::option")]
    pub every: Option<Duration>,
    /// Where scheduled backups go, a mounted drive say [default: data/backups].
    #[serde(default)]
    pub to: Option<std::path::PathBuf>,
}

impl Default for BackupConfig {
    fn default() -> Self {
        Self { keep: default_backup_keep(), every: None, to: None }
    }
}

fn default_backup_keep() -> usize {
    7
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CameraConfig {
    /// Stable key for metrics, rules and records; `[A-Za-z0-9_-]+`.
    pub id: String,
    /// Shown to people; defaults to the id.
    #[serde(default)]
    pub name: Option<String>,
    /// `rtsp://user:pass@host:port/path`, `v4l2:///dev/video0` or `file:///clip.mp4`.
    pub url: CameraUrl,
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Frames per second to analyse; `None` takes the stream's own rate.
    #[serde(default)]
    pub fps: Option<f64>,
    /// RTSP transport: `tcp` (interleaved, the default) or `udp`.
    #[serde(default)]
    pub transport: crate::camera::source::RtspTransport,
    /// No frame for this long counts as a failure and reconnects.
    #[serde(default = "default_stall_timeout", with = "duration")]
    pub stall_timeout: Duration,
    /// Reconnect backoff after a failure.
    #[serde(default)]
    pub backoff: BackoffConfig,
    /// Slower backoff after the camera rejected the credentials, so a wrong
    /// password does not hammer it (or lock the account).
    #[serde(default = "default_auth_backoff")]
    pub auth_backoff: BackoffConfig,
    /// For `file://` sources: pace frames in real time (true) or decode as
    /// fast as possible (false).
    #[serde(default = "yes")]
    pub realtime: bool,
    /// Polygons, in pixels of the analysed frame, where motion is ignored
    /// (a tree, a road): `[[[x, y], [x, y], [x, y]], ...]`.
    #[serde(default)]
    pub motion_masks: Vec<Vec<[f32; 2]>>,
}

/// Capped exponential backoff with jitter.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BackoffConfig {
    #[serde(default = "default_backoff_initial", with = "duration")]
    pub initial: Duration,
    #[serde(default = "default_backoff_max", with = "duration")]
    pub max: Duration,
    #[serde(default = "default_multiplier")]
    pub multiplier: f64,
    #[serde(default = "default_jitter")]
    pub jitter: f64,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self {
            initial: default_backoff_initial(),
            max: default_backoff_max(),
            multiplier: default_multiplier(),
            jitter: default_jitter(),
        }
    }
}

impl From<BackoffConfig> for crate::supervision::Backoff {
    fn from(b: BackoffConfig) -> Self {
        Self { initial: b.initial, max: b.max, multiplier: b.multiplier, jitter: b.jitter }
    }
}

fn default_stall_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_backoff_initial() -> Duration {
    Duration::from_secs(1)
}
fn default_backoff_max() -> Duration {
    Duration::from_secs(60)
}
fn default_multiplier() -> f64 {
    2.0
}
fn default_jitter() -> f64 {
    0.2
}
fn default_auth_backoff() -> BackoffConfig {
    BackoffConfig { initial: Duration::from_secs(30), max: Duration::from_secs(600), ..BackoffConfig::default() }
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessingConfig {
    #[serde(default)]
    pub detection: DetectionConfig,
    #[serde(default)]
    pub motion: MotionConfig,
}

/// The motion gate in front of detection.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MotionConfig {
    /// Off: every frame goes to detection.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Per-pixel brightness change that counts (0–255).
    #[serde(default = "default_motion_threshold")]
    pub threshold: u8,
    /// Fraction of the frame that must change (0–1).
    #[serde(default = "default_motion_min_area")]
    pub min_area: f64,
    /// Run detection at least this often on a static scene.
    #[serde(default = "default_keepalive", with = "duration")]
    pub keepalive: Duration,
}

impl Default for MotionConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            threshold: default_motion_threshold(),
            min_area: default_motion_min_area(),
            keepalive: default_keepalive(),
        }
    }
}

fn default_motion_threshold() -> u8 {
    25
}
fn default_motion_min_area() -> f64 {
    0.001
}
fn default_keepalive() -> Duration {
    Duration::from_secs(10)
}
fn default_workers() -> usize {
    1
}
fn default_size() -> usize {
    640
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DetectionConfig {
    /// A model name from `models/manifest.toml` (`yolov8n`) or a path to weights.
    #[serde(default = "default_model")]
    pub model: String,
    #[serde(default = "default_confidence")]
    pub confidence_threshold: f64,
    /// `cpu` or `cuda:N`.
    #[serde(default = "default_device")]
    pub device: String,
    /// Network input size: 640, or 320 for about 4× less CPU.
    #[serde(default = "default_size")]
    pub size: usize,
    /// Inference workers; each uses one core.
    #[serde(default = "default_workers")]
    pub workers: usize,
    /// `f32`, or `int8`: quantized convolutions on CPUs with AVX-512 VNNI,
    /// calibrated by `smart-cctv model quantize` (else on the demo clip at
    /// load).
    #[serde(default)]
    pub precision: Precision,
}

/// How the detector computes on the CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    F32,
    Int8,
}

impl Default for DetectionConfig {
    fn default() -> Self {
        Self {
            model: default_model(),
            confidence_threshold: default_confidence(),
            device: default_device(),
            size: default_size(),
            workers: default_workers(),
            precision: Precision::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AlertRuleConfig {
    pub name: String,
    /// Camera ids; empty means every camera.
    #[serde(default)]
    pub cameras: Vec<String>,
    #[serde(default)]
    pub conditions: ConditionsConfig,
    /// Minimum time between two alerts of this rule on one camera.
    #[serde(default = "default_cooldown", with = "duration")]
    pub cooldown: Duration,
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Keep the cooldown per tracked object instead of per camera: a second
    /// person arriving alerts even while the first one's cooldown runs.
    #[serde(default)]
    pub cooldown_per_track: bool,
    /// Objects that have not moved for a while (a parked car) do not trigger.
    #[serde(default = "yes")]
    pub ignore_stationary: bool,
    /// What speakers play for it: `chime`, `alarm`, `beep` or a sound file;
    /// each speaker's own `sound` when absent.
    #[serde(default)]
    pub sound: Option<String>,
    /// Higher plays first when several alerts queue on a speaker.
    #[serde(default)]
    pub priority: u8,
}

/// A polygon, in image pixels of the analysed frame or in ground metres
/// (which needs the camera's calibration).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ZoneConfig {
    #[serde(default)]
    pub name: Option<String>,
    pub points: Vec<[f32; 2]>,
    #[serde(default)]
    pub space: ZoneSpace,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ZoneSpace {
    #[default]
    Image,
    Ground,
}

/// When a rule is armed, in local time.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleConfig {
    /// `mon` … `sun`; empty means every day.
    #[serde(default)]
    pub days: Vec<String>,
    /// `"22:00-06:00"` (may wrap midnight); absent means all day.
    #[serde(default)]
    pub hours: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ConditionsConfig {
    /// The object's foot point must be inside one of these.
    #[serde(default)]
    pub zones: Vec<ZoneConfig>,
    #[serde(default)]
    pub schedule: Option<ScheduleConfig>,
    /// COCO class names; empty means any class.
    #[serde(default)]
    pub classes: Vec<String>,
    #[serde(default)]
    pub min_confidence: Option<f64>,
    #[serde(default)]
    pub distance_to_reference: Option<DistanceCondition>,
    /// How long an object must stay before the rule fires.
    #[serde(default, with = "duration::option")]
    pub min_dwell: Option<Duration>,
    #[serde(default)]
    pub min_count: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DistanceCondition {
    /// A reference point from the camera's calibration; the first one when omitted.
    #[serde(default)]
    pub reference: Option<String>,
    #[serde(default)]
    pub operator: DistanceOperator,
    /// Metres on the ground.
    pub value: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DistanceOperator {
    /// Closer than `value`.
    #[default]
    Lt,
    /// Further than `value`.
    Gt,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PerformanceConfig {
    /// A cap on analysed frames per second for every camera.
    #[serde(default)]
    pub fps_limit: Option<f64>,
    /// Analyse one frame, then skip this many.
    #[serde(default)]
    pub frame_skip: u32,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// Logs, the event store and snapshots live here. `--data-dir` overrides it.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self { data_dir: default_data_dir() }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    #[serde(default = "default_snapshots_days")]
    pub snapshots_days: u32,
    /// Snapshots beyond this many bytes in all go, oldest first.
    #[serde(default)]
    pub snapshots_max_bytes: Option<u64>,
    #[serde(default = "default_events_days")]
    pub events_days: u32,
    #[serde(default = "default_logs_compress_days")]
    pub logs_compress_days: u32,
    #[serde(default = "default_logs_delete_days")]
    pub logs_delete_days: u32,
    /// How often retention runs (it also runs at start and under disk pressure).
    #[serde(default = "default_retention_interval", with = "duration")]
    pub interval: Duration,
    /// How often the event store is compacted, when the service is idle.
    #[serde(default = "default_compact_every", with = "duration")]
    pub compact_every: Duration,
    /// Records deleted per store transaction, so writes never wait long.
    #[serde(default = "default_delete_batch")]
    pub delete_batch: usize,
}

fn default_retention_interval() -> Duration {
    Duration::from_secs(3600)
}

fn default_compact_every() -> Duration {
    Duration::from_secs(7 * 86_400)
}

fn default_delete_batch() -> usize {
    500
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            snapshots_days: default_snapshots_days(),
            snapshots_max_bytes: None,
            events_days: default_events_days(),
            logs_compress_days: default_logs_compress_days(),
            logs_delete_days: default_logs_delete_days(),
            interval: default_retention_interval(),
            compact_every: default_compact_every(),
            delete_batch: default_delete_batch(),
        }
    }
}

/// What the health and resource actors watch, and when they complain.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    /// How often health is collected (disk, resources, transitions).
    #[serde(default = "default_health_interval", with = "duration")]
    pub interval: Duration,
    /// Disk use under the data directory that is warned about.
    #[serde(default = "default_disk_warn")]
    pub disk_warn_percent: f64,
    /// Disk use that turns `/healthz` red and retention aggressive.
    #[serde(default = "default_disk_critical")]
    pub disk_critical_percent: f64,
    /// Email on every health transition (rate-limited by
    /// `monitoring.email_min_interval`, through the `monitoring` SMTP settings).
    #[serde(default)]
    pub email_on_transition: bool,
    /// Warn when the process goes over these.
    #[serde(default)]
    pub max_rss_mb: Option<u64>,
    #[serde(default)]
    pub max_cpu_percent: Option<f64>,
    #[serde(default)]
    pub max_open_files: Option<u64>,
}

fn default_health_interval() -> Duration {
    Duration::from_secs(5)
}

fn default_disk_warn() -> f64 {
    80.0
}

fn default_disk_critical() -> f64 {
    90.0
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            interval: default_health_interval(),
            disk_warn_percent: default_disk_warn(),
            disk_critical_percent: default_disk_critical(),
            email_on_transition: false,
            max_rss_mb: None,
            max_cpu_percent: None,
            max_open_files: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SpeakerConfig {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    pub kind: SpeakerKind,
    /// An ALSA PCM name, or `default`.
    #[serde(default = "default_pcm")]
    pub device: String,
    /// Bluetooth MAC address, for `kind: bluetooth`.
    #[serde(default)]
    pub address: Option<String>,
    /// 0.0 to 1.0.
    #[serde(default = "default_volume")]
    pub volume: f64,
    /// Rules that play here; empty means all.
    #[serde(default)]
    pub rules: Vec<String>,
    /// `chime`, `alarm`, `beep`, or a WAV/OGG/MP3 file; a rule's `sound` wins.
    #[serde(default = "default_sound")]
    pub sound: String,
    /// `"22:00-07:00"`: alerts are still stored and logged, just not played.
    #[serde(default)]
    pub quiet_hours: Option<String>,
    /// The same rule within this window plays once.
    #[serde(default = "default_coalesce", with = "duration")]
    pub coalesce: Duration,
    /// Reconnect backoff when the device is missing or drops.
    #[serde(default)]
    pub backoff: BackoffConfig,
}

fn default_sound() -> String {
    "chime".into()
}
fn default_coalesce() -> Duration {
    Duration::from_secs(10)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SpeakerKind {
    Alsa,
    Bluetooth,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MonitoringConfig {
    /// `error`, `warn`, `info`, `debug`, `trace`, or a tracing filter
    /// (`info,smart_cctv::camera=debug`). `RUST_LOG` overrides it.
    #[serde(default = "default_log_level")]
    pub log_level: String,
    #[serde(default)]
    pub email_alerts_enabled: bool,
    #[serde(default)]
    pub email_to: Option<String>,
    #[serde(default)]
    pub email_from: Option<String>,
    #[serde(default)]
    pub smtp_server: Option<String>,
    #[serde(default = "default_smtp_port")]
    pub smtp_port: u16,
    #[serde(default)]
    pub smtp_username: Option<String>,
    #[serde(default, skip_serializing)]
    pub smtp_password: Option<crate::config::secret::Secret>,
    #[serde(default = "yes")]
    pub smtp_starttls: bool,
    /// Implicit TLS from the first byte (SMTPS, usually port 465), instead of
    /// STARTTLS.
    #[serde(default)]
    pub smtp_tls: bool,
    /// Sending the SMTP password over a connection without TLS must be said
    /// out loud; otherwise such a config is refused.
    #[serde(default)]
    pub smtp_allow_plaintext: bool,
    /// At most one alert email per this interval; the rest are counted.
    #[serde(default = "default_email_interval", with = "duration")]
    pub email_min_interval: Duration,
}

fn default_email_interval() -> Duration {
    Duration::from_secs(300)
}

impl Default for MonitoringConfig {
    fn default() -> Self {
        Self {
            log_level: default_log_level(),
            email_alerts_enabled: false,
            email_to: None,
            email_from: None,
            smtp_server: None,
            smtp_port: default_smtp_port(),
            smtp_username: None,
            smtp_password: None,
            smtp_tls: false,
            smtp_allow_plaintext: false,
            smtp_starttls: true,
            email_min_interval: default_email_interval(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// `/metrics`, `/healthz` and the API. Loopback unless `allow_non_loopback`.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Exposing the page and the API beyond this machine must be a deliberate
    /// choice; with it, everything but `/metrics` and `/healthz` needs a
    /// logged-in session or an API token.
    #[serde(default)]
    pub allow_non_loopback: bool,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self { listen: default_listen(), allow_non_loopback: false }
    }
}

fn yes() -> bool {
    true
}
fn default_model() -> String {
    "yolov8n".into()
}
fn default_confidence() -> f64 {
    0.5
}
fn default_device() -> String {
    "cpu".into()
}
fn default_cooldown() -> Duration {
    Duration::from_secs(60)
}
fn default_data_dir() -> PathBuf {
    PathBuf::from("data")
}
fn default_snapshots_days() -> u32 {
    7
}
fn default_events_days() -> u32 {
    90
}
fn default_logs_compress_days() -> u32 {
    30
}
fn default_logs_delete_days() -> u32 {
    90
}
fn default_pcm() -> String {
    "default".into()
}
fn default_volume() -> f64 {
    1.0
}
fn default_log_level() -> String {
    "info".into()
}
fn default_smtp_port() -> u16 {
    587
}
fn default_listen() -> String {
    "127.0.0.1:9810".into()
}
