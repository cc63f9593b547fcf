//! What the tests need, and where each thing comes from.
//!
//! The project makes most of it itself, cached under the target directory:
//! H.264 clips drawn by FFmpeg ([`clip`]), a YOLOv8n-shaped model with seeded
//! random weights ([`random_model`]) and an RTSP camera (`tests/rtsp-server`).
//! What it cannot make is found outside:
//! - the real COCO weights and the media they are checked on (AGPL, never
//!   committed): `SMART_CCTV_FIXTURES`, else `../shared/fixtures`;
//! - the ALSA capture and BlueZ mock peers: `SMART_CCTV_TESTBED`, else
//!   `../shared/testbed`.
//!
//! A test that needs something missing is ignored, with the reason, in the
//! runner's own count. Under CI (`CI=true`) a missing need fails the run.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

/// Something a test needs that may be missing on a machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Need {
    /// The real YOLOv8n weights, reference detections and the walking clip.
    RealFixtures,
    /// The shared testbed's ALSA capture and BlueZ mock.
    SharedTestbed,
    /// The FFmpeg command line, to make clips.
    Ffmpeg,
    /// The project's RTSP server: Debian's python3-gi and GstRtspServer.
    RtspServer,
    /// Mounting a small tmpfs (root, or a container that allows it).
    Tmpfs,
    /// `systemd-analyze`, to score the unit's confinement.
    SystemdAnalyze,
    /// Debian's `mosquitto`, the MQTT broker.
    Mosquitto,
    /// Debian's `chromium` and Python Playwright to drive it.
    Browser,
    /// Network namespaces joined by a veth (root, iproute2, the testbed's `netns-pair`).
    NetNamespaces,
}

impl Need {
    /// Shown beside an ignored test in the runner's output.
    pub fn label(self) -> &'static str {
        match self {
            Need::RealFixtures => "needs fixtures",
            Need::SharedTestbed => "needs testbed",
            Need::Ffmpeg => "needs ffmpeg",
            Need::RtspServer => "needs gstreamer",
            Need::Tmpfs => "needs root",
            Need::SystemdAnalyze => "needs systemd-analyze",
            Need::Mosquitto => "needs mosquitto",
            Need::Browser => "needs chromium",
            Need::NetNamespaces => "needs ip netns",
        }
    }

    /// `None` when it is there, else why not.
    pub fn missing(self) -> Option<String> {
        static CACHE: OnceLock<Mutex<std::collections::HashMap<Need, Option<String>>>> = OnceLock::new();
        let cache = CACHE.get_or_init(Default::default);
        if let Some(known) = cache.lock().unwrap().get(&self) {
            return known.clone();
        }
        let answer = match self {
            Need::RealFixtures => real_fixtures_dir().err(),
            Need::SharedTestbed => shared_testbed_dir().err(),
            Need::Ffmpeg => command_works("ffmpeg", &["-version"])
                .then_some(())
                .map_or_else(|| Some("needs the ffmpeg command (ops/setup-deps installs it)".to_owned()), |_| None),
            Need::RtspServer => command_works(
                "/usr/bin/python3",
                &[
                    "-c",
                    "import gi; gi.require_version('GstRtspServer', '1.0'); from gi.repository import GstRtspServer",
                ],
            )
            .then_some(())
            .map_or_else(
                || {
                    Some(
                        "needs python3-gi and GstRtspServer for the RTSP camera (ops/setup-deps installs them)"
                            .to_owned(),
                    )
                },
                |_| None,
            ),
            Need::Tmpfs => tmpfs_mountable(),
            Need::SystemdAnalyze => (!command_works("systemd-analyze", &["--version"]))
                .then(|| "needs systemd-analyze (Debian's systemd; ops/setup-deps installs it)".to_owned()),
            Need::Mosquitto => crate::broker::Broker::program()
                .is_none()
                .then(|| "needs the mosquitto MQTT broker (ops/setup-deps installs it)".to_owned()),
            Need::Browser => (!Path::new("/usr/bin/chromium").is_file()
                || !command_works(&browser_python().to_string_lossy(), &["-c", "import playwright"]))
            .then(|| "needs Debian's chromium and Playwright for Python (ops/setup-deps installs both)".to_owned()),
            Need::NetNamespaces => shared_testbed_dir().err().or_else(|| {
                let pair = shared_testbed().join("netns-pair");
                (!command_works(&pair.to_string_lossy(), &["--check"]))
                    .then(|| "needs network namespaces: root and iproute2 (`netns-pair --check` failed)".to_owned())
            }),
        };
        cache.lock().unwrap().insert(self, answer.clone());
        answer
    }
}

fn command_works(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn tmpfs_mountable() -> Option<String> {
    let probe = tempfile::tempdir().ok()?;
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(probe.path())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if mounted {
        let _ = Command::new("umount").arg(probe.path()).status();
        None
    } else {
        Some("needs to mount a tmpfs (run as root)".to_owned())
    }
}

/// `$env`, or `../shared/<relative>`, when it holds `marker`.
fn shared_dir(env: &str, relative: &str, marker: &str) -> Result<PathBuf, String> {
    let dir = std::env::var_os(env)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared").join(relative));
    if dir.join(marker).is_file() {
        Ok(dir)
    } else {
        Err(format!("needs {relative} ({marker} not found in {}; set {env})", dir.display()))
    }
}

/// The Python that has Playwright: `$SMART_CCTV_BROWSER_PYTHON`, else the
/// virtual environment `ops/setup-deps` makes under `target/tmp`.
pub fn browser_python() -> PathBuf {
    std::env::var_os("SMART_CCTV_BROWSER_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("browser-venv/bin/python"))
}

fn real_fixtures_dir() -> Result<PathBuf, String> {
    shared_dir("SMART_CCTV_FIXTURES", "fixtures", "yolov8n/yolov8n.safetensors")
}

fn shared_testbed_dir() -> Result<PathBuf, String> {
    shared_dir("SMART_CCTV_TESTBED", "testbed", "alsa-capture")
}

/// The real fixtures (the test is registered with [`Need::RealFixtures`]).
pub fn real() -> PathBuf {
    real_fixtures_dir().unwrap_or_else(|why| panic!("{why}"))
}

/// The real walking-people clip (640x480, 15 fps, 10 s).
pub fn walking_clip() -> PathBuf {
    real().join("video/people_walking_640x480_15fps_10s.mp4")
}

/// The shared testbed (the test is registered with [`Need::SharedTestbed`]).
pub fn shared_testbed() -> PathBuf {
    shared_testbed_dir().unwrap_or_else(|why| panic!("{why}"))
}

/// Where generated media is cached between runs.
fn cache_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("test-media");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Makes `name` in the cache once (per process, and across runs): `make`
/// writes the given path, which is then renamed into place, so a reader never
/// sees half a file.
fn cached(name: &str, make: impl FnOnce(&Path)) -> PathBuf {
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let path = cache_dir().join(name);
    if !path.is_file() {
        let partial = cache_dir().join(format!(".{name}.{}.part", std::process::id()));
        make(&partial);
        std::fs::rename(&partial, &path).unwrap();
    }
    path
}

/// The clips the project draws itself: H.264 (constrained baseline, one
/// keyframe a second, no B-frames), 640x480 at 15 fps, 10 s, as a camera sends.
#[derive(Debug, Clone, Copy)]
pub enum Clip {
    /// Two boxes moving across a plain scene, on different paths.
    Moving,
    /// FFmpeg's `testsrc2` pattern: other content, for changing a camera.
    Pattern,
    /// A textured scene where nothing moves.
    Still,
}

/// A generated clip (the test is registered with [`Need::Ffmpeg`]).
pub fn clip(which: Clip) -> PathBuf {
    let (name, graph) = match which {
        Clip::Moving => (
            "moving_640x480_15fps_10s.mp4",
            "color=c=0x3c4650:s=640x480:r=15:d=10[bg];color=c=0xe0e0e0:s=70x150:r=15[a];\
             color=c=0x202020:s=90x60:r=15[b];\
             [bg][a]overlay=x='20+mod(t*110\\,540)':y=200:shortest=1[ab];\
             [ab][b]overlay=x='500-mod(t*70\\,460)':y='60+mod(t*40\\,300)':shortest=1",
        ),
        Clip::Pattern => ("pattern_640x480_15fps_10s.mp4", "testsrc2=s=640x480:r=15:d=10"),
        Clip::Still => (
            "still_640x480_15fps_10s.mp4",
            "color=c=0x708090:s=640x480:r=15:d=10,drawgrid=w=64:h=48:t=2:c=white@0.5,\
             drawbox=x=200:y=150:w=120:h=200:c=black:t=fill",
        ),
    };
    cached(name, |path| {
        ffmpeg(&[
            "-f",
            "lavfi",
            "-i",
            graph,
            "-c:v",
            "libx264",
            "-profile:v",
            "baseline",
            "-pix_fmt",
            "yuv420p",
            "-g",
            "15",
            "-bf",
            "0",
            "-preset",
            "veryfast",
            "-movflags",
            "+faststart",
            "-f",
            "mp4",
            path.to_str().unwrap(),
        ])
    })
}

/// Runs the FFmpeg command line quietly; panics with its arguments on failure.
pub fn ffmpeg(args: &[&str]) {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(args)
        .output()
        .expect("cannot run ffmpeg");
    assert!(out.status.success(), "ffmpeg {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A model with YOLOv8n's tensor names and shapes and seeded random weights:
/// it loads and runs like the real one, at the same cost, and finds nothing
/// (its class scores are biased far below any threshold). For the tests that
/// need "a YOLOv8 that loads and runs", not real detections.
pub fn random_model() -> PathBuf {
    cached("yolov8n-random-seed7.safetensors", |path| write_random_model(path, 7))
}

fn write_random_model(path: &Path, seed: u64) {
    use candle_core::{DType, Device, Tensor};
    use smart_cctv::detect::model::{Multiples, YoloV8};
    let varmap = candle_nn::VarMap::new();
    let vb = candle_nn::VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    YoloV8::load(vb, Multiples::N, 80).expect("the model shape builds");
    let mut rng = fastrand::Rng::with_seed(seed);
    let vars = varmap.data().lock().unwrap();
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort();
    for name in names {
        let var = &vars[name];
        let dims = var.dims().to_vec();
        let count: usize = dims.iter().product();
        let values: Vec<f32> = if name == "head.dfl.conv.weight" {
            // The distribution-to-distance bins, as in every YOLOv8.
            (0..count).map(|i| i as f32).collect()
        } else if name.ends_with("running_var") || (name.ends_with("bn.weight")) {
            vec![1.0; count]
        } else if name.ends_with("running_mean") {
            vec![0.0; count]
        } else if name.starts_with("head.cv3.") && name.ends_with(".2.bias") {
            // Class logits far below zero: sigmoid ≈ 0.0003, never a detection.
            vec![-8.0; count]
        } else if dims.len() == 4 {
            // Uniform with variance 1/fan_in keeps activations in range.
            let fan_in: usize = dims[1..].iter().product();
            let scale = (3.0 / fan_in as f32).sqrt();
            let scale = if name.starts_with("head.cv3.") && name.contains(".2.") { scale * 0.05 } else { scale };
            (0..count).map(|_| (rng.f32() * 2.0 - 1.0) * scale).collect()
        } else {
            (0..count).map(|_| (rng.f32() * 2.0 - 1.0) * 0.1).collect()
        };
        let tensor = Tensor::from_vec(values, dims, &Device::Cpu).unwrap();
        var.set(&tensor).unwrap();
    }
    drop(vars);
    varmap.save(path).unwrap();
}

/// A small gradient picture in `dir`, for tests that need any image at all.
pub fn any_image(dir: &Path) -> PathBuf {
    let path = dir.join("gradient.png");
    image::RgbImage::from_fn(96, 64, |x, y| image::Rgb([(x * 2) as u8, (y * 3) as u8, 128])).save(&path).unwrap();
    path
}
