//! From policy to running children: each leaf in `supervision.toml` names a
//! component, and this is the one place that knows how to start each.
//! `cameras` and `inference` are supervisors whose children come from the
//! config: one camera actor per enabled camera, N inference workers.

use crate::alerts::actor::{AlertsActor, AlertsArgs, NAME as ALERTS};
use crate::calibration::Calibration;
use crate::camera::{CameraActor, CameraArgs, FrameSink};
use crate::cluster::ClusterView;
use crate::cluster::dispatch::{DispatchArgs, Dispatcher};
use crate::cluster::node::{ClusterArgs, ClusterNode};
use crate::cluster::server::{LocalNode, RemoteWorker};
use crate::config::{AlertRuleConfig, CameraConfig, Config, Role};
use crate::health::HealthBoard;
use crate::health::actor::{HealthActor, HealthArgs, interval_from_env};
use crate::http::{ApiState, HttpArgs, HttpServer};
use crate::mqtt::actor::{MqttActor, MqttArgs};
use crate::pipeline::loader::{DetectorLoader, LoaderArgs};
use crate::pipeline::worker::{InferenceWorker, WorkerArgs};
use crate::pipeline::{DetectionSink, GatedSink, SharedDetector, motion::MotionSettings, queue::FrameQueue};
use crate::resources::{ResourceActor, ResourceArgs};
use crate::retention::actor::{RetentionActor, RetentionArgs};
use crate::rules::actor::{RuleActor, RuleArgs};
use crate::speaker::{SpeakerActor, SpeakerArgs};
use crate::store::actor::{NAME as STORE, StoreActor, StoreArgs};
use crate::supervision::policy::{ChildPolicy, SupervisorPolicy};
use crate::supervision::{ChildSpec, Restart, StartFn, Supervisor, SupervisorArgs};
use crate::tracker::TrackerSettings;
use crate::tracker::actor::{NAME as TRACKER, ToTracker, TrackerActor, TrackerArgs};
use metrics_exporter_prometheus::PrometheusHandle;
use ractor::{Actor, SpawnErr};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::watch;

/// Component ids a `supervision.toml` leaf may name.
pub const COMPONENTS: &[&str] =
    &["health", "resources", "retention", "http", "mqtt", "store", "detector", "alerts", "tracker", "cluster"];
/// Supervisors whose children come from the config.
pub const DYNAMIC: &[&str] = &["cameras", "inference", "rules", "speakers"];

/// Frames queued per camera for inference; more would only add latency.
const QUEUE_PER_CAMERA: usize = 2;

/// The longest side of frames handed to the pipeline.
pub const ANALYSIS_SIZE: u32 = 640;

/// What components are built from.
#[derive(Clone)]
pub struct Components {
    pub board: HealthBoard,
    pub metrics: PrometheusHandle,
    pub config: watch::Receiver<Arc<Config>>,
    pub frames: Arc<FrameQueue>,
    pub detector: watch::Receiver<SharedDetector>,
    pub detector_tx: Arc<watch::Sender<SharedDetector>>,
    pub detections: Arc<dyn DetectionSink>,
    /// The policy for children of dynamic supervisors.
    pub defaults: Option<ChildPolicy>,
    /// Per camera, from `calibration/` beside the config file.
    pub calibrations: Arc<HashMap<String, Calibration>>,
    /// The data directory (logs, events.redb, snapshots).
    pub data_dir: std::path::PathBuf,
    /// The config and policy files the service reads, for scheduled backups.
    pub config_files: (Option<std::path::PathBuf>, Option<std::path::PathBuf>),
    /// The event store as the store actor publishes it, for the HTTP lists.
    pub store: crate::store::SharedStore,
    /// MQTT's outbox: producers publish here, the `mqtt` actor sends.
    pub bus: crate::mqtt::Bus,
    /// The switches MQTT can flip (detection per camera, rules).
    pub controls: crate::mqtt::Controls,
    /// Web users and sessions (outlive an HTTP restart).
    pub auth: Arc<crate::web::auth::WebAuth>,
    /// Every camera's last analysed frame, for the live page.
    pub latest: crate::web::latest::LatestFrames,
    /// CPU and RSS over the last hour, kept by `resources`.
    pub history: crate::resources::History,
    /// This node's place in a cluster, when the config has one.
    pub cluster: Option<ClusterView>,
}

impl Components {
    pub fn new(
        board: HealthBoard,
        metrics: PrometheusHandle,
        config: watch::Receiver<Arc<Config>>,
        calibrations: HashMap<String, Calibration>,
        data_dir: std::path::PathBuf,
    ) -> Self {
        let (tx, rx) = watch::channel(None);
        let bus = crate::mqtt::Bus::new(&config.borrow());
        let controls = crate::mqtt::Controls::load(&data_dir);
        let latest = crate::web::latest::LatestFrames::default();
        let auth = crate::web::auth::WebAuth::new(&data_dir);
        let detections = crate::web::latest::KeepLatest { latest: latest.clone(), next: Arc::new(ToTracker) };
        let cluster = config.borrow().cluster.clone().map(ClusterView::new);
        Self {
            board,
            metrics,
            config,
            frames: Arc::new(FrameQueue::new(QUEUE_PER_CAMERA)),
            detector: rx,
            detector_tx: Arc::new(tx),
            detections: Arc::new(detections),
            defaults: None,
            calibrations: Arc::new(calibrations),
            data_dir,
            config_files: (None, None),
            store: crate::store::SharedStore::default(),
            bus,
            controls,
            auth,
            latest,
            history: crate::resources::History::default(),
            cluster,
        }
    }

    /// What this node runs: everything, unless a cluster role says less.
    fn role(&self) -> Role {
        self.cluster.as_ref().map_or(Role::All, ClusterView::role)
    }

    /// Camera frames pass the motion gates, then queue for inference.
    fn camera_sink(&self, config: &Config) -> Arc<dyn FrameSink> {
        let m = &config.processing.motion;
        let settings = m.enabled.then(|| MotionSettings {
            threshold: m.threshold,
            min_area: m.min_area as f32,
            keepalive: m.keepalive,
            ..MotionSettings::default()
        });
        let masks: HashMap<String, Vec<Vec<(f32, f32)>>> = config
            .cameras
            .iter()
            .map(|c| {
                (c.id.clone(), c.motion_masks.iter().map(|poly| poly.iter().map(|p| (p[0], p[1])).collect()).collect())
            })
            .collect();
        Arc::new(GatedSink::new(settings, masks, self.frames.clone(), self.bus.clone(), self.controls.clone()))
    }
}

/// Specs for a supervisor's children, nested supervisors included.
/// Ids were checked against [`COMPONENTS`] and [`DYNAMIC`] when the policy was loaded.
pub fn child_specs(policy: &SupervisorPolicy, path: &str, components: &Components) -> Vec<ChildSpec> {
    let role = components.role();
    policy
        .children
        .iter()
        .filter(|child| runs_on(role, &child.id))
        .filter_map(|child| {
            let start = match &child.supervisor {
                Some(sub) => Some(start_supervisor(
                    sub.clone(),
                    &child.id,
                    format!("{path}/{}", child.id),
                    child.clone(),
                    components.clone(),
                )),
                None => start_component(&child.id, components),
            };
            start.map(|s| child.spec(s))
        })
        .collect()
}

/// Whether a root child runs on a node of `role`: an inference node runs
/// only what serves and watches its workers; an edge has no detector.
fn runs_on(role: Role, id: &str) -> bool {
    match role {
        Role::All => true,
        Role::Edge => id != "detector",
        Role::Inference => matches!(id, "health" | "resources" | "http" | "cluster" | "detector" | "inference"),
    }
}

fn start_supervisor(
    policy: SupervisorPolicy,
    id: &str,
    path: String,
    own: ChildPolicy,
    components: Components,
) -> StartFn {
    let id = id.to_owned();
    Arc::new(move |parent| {
        let mut components = components.clone();
        components.defaults = Some(own.clone());
        let children = match id.as_str() {
            "cameras" => camera_specs(&components),
            "inference" => worker_specs(&components),
            "rules" => rule_specs(&components),
            "speakers" => speaker_specs(&components),
            _ => child_specs(&policy, &path, &components),
        };
        let args = SupervisorArgs {
            path: path.clone(),
            strategy: policy.strategy,
            intensity: policy.intensity,
            children,
            board: components.board.clone(),
            clock: crate::base::clock::tokio_clock(),
            on_escalate: None,
        };
        // Named so a reload can find it; the previous instance is gone
        // before its supervisor starts a new one.
        let name = DYNAMIC.contains(&id.as_str()).then(|| id.clone());
        Box::pin(async move { Ok(Actor::spawn_linked(name, Supervisor, args, parent).await?.0.get_cell()) })
    })
}

fn dynamic_child(id: String, components: &Components, start: StartFn) -> ChildSpec {
    let mut spec = ChildSpec {
        start,
        ..ChildSpec::new(id, Restart::Permanent, |_| async { Err(SpawnErr::StartupFailed("unused".into())) })
    };
    if let Some(own) = &components.defaults {
        spec.backoff = own.backoff;
        spec.reset_after = own.reset_after;
    }
    spec
}

/// One camera actor per enabled camera.
pub fn camera_specs(components: &Components) -> Vec<ChildSpec> {
    let config = components.config.borrow().clone();
    let sink = components.camera_sink(&config);
    config.cameras.iter().filter(|c| c.enabled).map(|c| camera_spec(c, &config, sink.clone(), components)).collect()
}

pub fn camera_spec(
    camera: &CameraConfig,
    config: &Config,
    sink: Arc<dyn FrameSink>,
    components: &Components,
) -> ChildSpec {
    let board = components.board.clone();
    let camera = camera.clone();
    let performance = config.performance.clone();
    // Frames stay at up to 640 px whatever the detector size: snapshots and
    // calibration use them, and the detector letterboxes them itself.
    let analysis_size = ANALYSIS_SIZE;
    let id = camera.id.clone();
    // One opener per camera spec: restarts of the actor keep its RTSP
    // session group, so they too wait for a stale session's teardown.
    let opener: Arc<dyn crate::camera::source::Opener> = Arc::new(crate::camera::source::RealOpener::default());
    let start: StartFn = Arc::new(move |parent| {
        let args = CameraArgs {
            config: camera.clone(),
            performance: performance.clone(),
            analysis_size,
            sink: sink.clone(),
            board: board.clone(),
            opener: opener.clone(),
        };
        Box::pin(async move { Ok(Actor::spawn_linked(None, CameraActor, args, parent).await?.0.get_cell()) })
    });
    dynamic_child(id, components, start)
}

/// The camera sink for a new config (reloads rebuild it so masks follow).
pub fn camera_sink(components: &Components, config: &Config) -> Arc<dyn FrameSink> {
    components.camera_sink(config)
}

/// One actor per alert rule.
pub fn rule_specs(components: &Components) -> Vec<ChildSpec> {
    let config = components.config.borrow().clone();
    config.alert_rules.iter().map(|r| rule_spec(r, components)).collect()
}

pub fn rule_spec(rule: &AlertRuleConfig, components: &Components) -> ChildSpec {
    let rule = rule.clone();
    let calibrations = components.calibrations.clone();
    let controls = components.controls.clone();
    let id = rule.name.clone();
    let start: StartFn = Arc::new(move |parent| {
        let args = RuleArgs { rule: rule.clone(), calibrations: calibrations.clone(), controls: controls.clone() };
        Box::pin(async move { Ok(Actor::spawn_linked(None, RuleActor, args, parent).await?.0.get_cell()) })
    });
    dynamic_child(id, components, start)
}

/// One actor per speaker.
pub fn speaker_specs(components: &Components) -> Vec<ChildSpec> {
    let config = components.config.borrow().clone();
    config.speakers.iter().map(|s| speaker_spec(s, components)).collect()
}

pub fn speaker_spec(speaker: &crate::config::SpeakerConfig, components: &Components) -> ChildSpec {
    let speaker = speaker.clone();
    let board = components.board.clone();
    let id = speaker.id.clone();
    let start: StartFn = Arc::new(move |parent| {
        let args = SpeakerArgs { config: speaker.clone(), board: board.clone() };
        Box::pin(async move { Ok(Actor::spawn_linked(None, SpeakerActor, args, parent).await?.0.get_cell()) })
    });
    dynamic_child(id, components, start)
}

/// The `inference` supervisor's children: local workers on the shared
/// queue, and in a cluster, remote workers serving other nodes and
/// dispatchers sending this node's frames to them, as the role says.
fn worker_specs(components: &Components) -> Vec<ChildSpec> {
    let config = components.config.borrow().clone();
    let workers = config.processing.detection.workers;
    let role = components.role();
    let mut specs = Vec::new();
    if role == Role::All {
        for i in 0..workers {
            let c = components.clone();
            let start: StartFn = Arc::new(move |parent| {
                let args =
                    WorkerArgs { queue: c.frames.clone(), detector: c.detector.clone(), output: c.detections.clone() };
                Box::pin(
                    async move { Ok(Actor::spawn_linked(None, InferenceWorker, args, parent).await?.0.get_cell()) },
                )
            });
            specs.push(dynamic_child(format!("worker-{i}"), components, start));
        }
    }
    let Some(cluster) = &components.cluster else { return specs };
    if role.has_workers() {
        let local = local_node(cluster, components, workers as u32);
        for i in 0..workers {
            let local = local.clone();
            let start: StartFn = Arc::new(move |parent| {
                let local = local.clone();
                Box::pin(async move { Ok(Actor::spawn_linked(None, RemoteWorker, local, parent).await?.0.get_cell()) })
            });
            specs.push(dynamic_child(format!("remote-worker-{i}"), components, start));
        }
    }
    if role.has_cameras() {
        for i in 0..cluster.config.in_flight {
            let c = components.clone();
            let settings = cluster.config.clone();
            let size = config.processing.detection.size;
            let start: StartFn = Arc::new(move |parent| {
                let args = DispatchArgs {
                    node: settings.node_name.clone(),
                    queue: c.frames.clone(),
                    output: c.detections.clone(),
                    peers: c.cluster.as_ref().map(|v| v.peers.clone()).unwrap_or_default(),
                    size,
                    encoding: settings.frame_encoding,
                    deadline: settings.inference_deadline,
                    local: (settings.role == Role::All).then(|| c.detector.clone()),
                };
                Box::pin(async move { Ok(Actor::spawn_linked(None, Dispatcher, args, parent).await?.0.get_cell()) })
            });
            specs.push(dynamic_child(format!("dispatch-{i}"), components, start));
        }
    }
    specs
}

/// What this node says of itself to the others.
fn local_node(cluster: &ClusterView, components: &Components, workers: u32) -> LocalNode {
    LocalNode {
        name: cluster.config.node_name.clone(),
        role: cluster.role(),
        workers: if cluster.role().has_workers() { workers } else { 0 },
        detector: components.detector.clone(),
        stats: cluster.stats.clone(),
        peers: cluster.peers.clone(),
    }
}

fn start_component(id: &str, components: &Components) -> Option<StartFn> {
    let c = components.clone();
    let start: StartFn = match id {
        "cluster" => {
            // No `cluster` section: a single box, and no cluster node.
            let cluster = c.cluster.clone()?;
            let workers = c.config.borrow().processing.detection.workers as u32;
            Arc::new(move |parent| {
                let args = ClusterArgs {
                    config: cluster.config.clone(),
                    peers: cluster.peers.clone(),
                    board: c.board.clone(),
                    local: local_node(&cluster, &c, workers),
                    store: c.store.clone(),
                };
                Box::pin(async move { Ok(Actor::spawn_linked(None, ClusterNode, args, parent).await?.0.get_cell()) })
            })
        }
        "health" => Arc::new(move |parent| {
            let (interval, systemd) = interval_from_env();
            let args = HealthArgs {
                tree: parent.clone(),
                watchdog_interval: interval,
                systemd,
                board: c.board.clone(),
                config: c.config.clone(),
                data_dir: c.data_dir.clone(),
            };
            Box::pin(async move { Ok(Actor::spawn_linked(None, HealthActor, args, parent).await?.0.get_cell()) })
        }),
        "resources" => Arc::new(move |parent| {
            let args = ResourceArgs { board: c.board.clone(), config: c.config.clone(), history: c.history.clone() };
            Box::pin(async move { Ok(Actor::spawn_linked(None, ResourceActor, args, parent).await?.0.get_cell()) })
        }),
        "retention" => Arc::new(move |parent| {
            let args = RetentionArgs {
                data_dir: c.data_dir.clone(),
                config: c.config.clone(),
                config_files: c.config_files.clone(),
            };
            Box::pin(async move { Ok(Actor::spawn_linked(None, RetentionActor, args, parent).await?.0.get_cell()) })
        }),
        "http" => Arc::new(move |parent| {
            let listen = c.config.borrow().http.listen.parse::<SocketAddr>();
            let api = ApiState {
                data_dir: c.data_dir.clone(),
                board: c.board.clone(),
                metrics: c.metrics.clone(),
                config: c.config.clone(),
                store: c.store.clone(),
                auth: c.auth.clone(),
                latest: c.latest.clone(),
                history: c.history.clone(),
                cluster: c.cluster.clone(),
            };
            Box::pin(async move {
                // Validation already parsed it; this only guards a programming error.
                let listen = listen.map_err(|e| SpawnErr::StartupFailed(format!("http.listen: {e}").into()))?;
                Ok(Actor::spawn_linked(None, HttpServer, HttpArgs { listen, api }, parent).await?.0.get_cell())
            })
        }),
        "mqtt" => Arc::new(move |parent| {
            let args = MqttArgs {
                config: c.config.clone(),
                bus: c.bus.clone(),
                controls: c.controls.clone(),
                board: c.board.clone(),
            };
            Box::pin(async move { Ok(Actor::spawn_linked(None, MqttActor, args, parent).await?.0.get_cell()) })
        }),
        "detector" => Arc::new(move |parent| {
            let config = c.config.borrow().processing.detection.clone();
            let args = LoaderArgs {
                size: config.size,
                config,
                models_dir: crate::detect::weights::ModelStore::default_dir(),
                board: c.board.clone(),
                publish: c.detector_tx.clone(),
            };
            Box::pin(async move { Ok(Actor::spawn_linked(None, DetectorLoader, args, parent).await?.0.get_cell()) })
        }),
        "store" => Arc::new(move |parent| {
            let args = StoreArgs {
                path: c.data_dir.join(crate::store::FILE),
                board: c.board.clone(),
                shared: c.store.clone(),
            };
            Box::pin(async move {
                Ok(Actor::spawn_linked(Some(STORE.into()), StoreActor, args, parent).await?.0.get_cell())
            })
        }),
        "tracker" => Arc::new(move |parent| {
            let config = c.config.borrow().clone();
            let zones = config
                .cameras
                .iter()
                .map(|cam| (cam.id.clone(), crate::mqtt::objects::zones_for(&config, &cam.id)))
                .collect();
            let args = TrackerArgs {
                settings: TrackerSettings::default(),
                calibrations: c.calibrations.clone(),
                bus: c.bus.clone(),
                zones,
            };
            Box::pin(async move {
                Ok(Actor::spawn_linked(Some(TRACKER.into()), TrackerActor, args, parent).await?.0.get_cell())
            })
        }),
        "alerts" => Arc::new(move |parent| {
            let args = AlertsArgs {
                data_dir: c.data_dir.clone(),
                monitoring: c.config.borrow().monitoring.clone(),
                bus: c.bus.clone(),
            };
            Box::pin(async move {
                Ok(Actor::spawn_linked(Some(ALERTS.into()), AlertsActor, args, parent).await?.0.get_cell())
            })
        }),
        _ => return None,
    };
    Some(start)
}

/// Every camera's calibration found in `dir`; a broken file is logged and
/// skipped (validation already rejected rules that need it).
pub fn load_calibrations(
    config: &Config,
    dir: &std::path::Path,
    embedded_default: bool,
) -> HashMap<String, Calibration> {
    config
        .cameras
        .iter()
        .filter_map(|c| {
            let path = crate::calibration::path_for(dir, &c.id);
            let embedded = embedded_default && c.id == "demo";
            if !path.exists() && !embedded {
                return None;
            }
            match crate::calibration::load_camera(dir, &c.id, embedded_default) {
                Ok(cal) => Some((c.id.clone(), cal)),
                Err(e) => {
                    tracing::warn!(camera = %c.id, "calibration ignored: {e}");
                    None
                }
            }
        })
        .collect()
}
