//! `smart-cctv bench --cameras N --seconds S [--size 320|640]`, in place of
//! the old `benchmark_fps.py`: the real service (this binary, `run`) over N
//! looping file cameras of the walking clip, paced in real time, with motion
//! gating on and then off. It reads the service's own metrics and the
//! process's CPU time before and after the window, and prints per camera:
//! frames analysed per second, CPU %, p50/p99 capture-to-detections latency
//! and drops. The last line of each run is stable for scripts.

use super::Cli;
use anyhow::Context;
use clap::Args;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, Args)]
pub struct PipelineBench {
    /// Looping file cameras of the clip
    #[arg(long, default_value_t = 1)]
    pub cameras: usize,
    /// Measured seconds per run (after the cameras stream and a warm-up)
    #[arg(long, default_value_t = 30)]
    pub seconds: u64,
    /// Network input size
    #[arg(long, default_value_t = 320, value_parser = super::detect::parse_size)]
    pub size: usize,
    /// Weights file or model name [default: processing.detection.model]
    #[arg(long)]
    pub model: Option<String>,
    /// The clip every camera plays [default: config/demo/people_walking.mp4]
    #[arg(long)]
    pub clip: Option<PathBuf>,
    /// Only this motion-gate setting (default: on, then off)
    #[arg(long)]
    pub motion: Option<bool>,
    /// The detector's precision, as `processing.detection.precision`
    #[arg(long, default_value = "f32", value_parser = ["f32", "int8"])]
    pub precision: String,
}

/// One run's numbers, per camera where it says so.
#[derive(Debug)]
struct RunResult {
    analysed_fps: f64,
    cpu_percent_per_camera: f64,
    p50_ms: f64,
    p99_ms: f64,
    drops: f64,
    skipped_no_motion: f64,
}

pub fn run(cli: &Cli, args: &PipelineBench) -> anyhow::Result<i32> {
    anyhow::ensure!(args.cameras >= 1, "--cameras must be at least 1");
    anyhow::ensure!(args.seconds >= 1, "--seconds must be at least 1");
    let config = crate::config::load(cli.config_path().as_deref())?.config;
    let store = crate::detect::weights::ModelStore::open(&crate::detect::weights::ModelStore::default_dir())?;
    let weights = store.resolve(args.model.as_deref().unwrap_or(&config.processing.detection.model))?;
    let clip = args.clip.clone().unwrap_or_else(|| PathBuf::from(crate::detect::int8::DEMO_CLIP));
    let clip = std::fs::canonicalize(&clip).with_context(|| format!("{}: pass --clip", clip.display()))?;
    let weights = std::fs::canonicalize(&weights)?;
    let modes: Vec<bool> = args.motion.map_or_else(|| vec![true, false], |m| vec![m]);
    for motion in modes {
        let result = run_once(args, &clip, &weights, motion)?;
        let gate = if motion { "on" } else { "off" };
        println!(
            "{} camera(s) at {} px, motion gate {gate}: {} frames skipped for no motion",
            args.cameras, args.size, result.skipped_no_motion
        );
        // One stable line per run, for scripts.
        println!(
            "cameras={} size={} motion={gate} fps_per_camera={:.2} cpu_percent_per_camera={:.0} p50_ms={:.0} p99_ms={:.0} drops={}",
            args.cameras,
            args.size,
            result.analysed_fps,
            result.cpu_percent_per_camera,
            result.p50_ms,
            result.p99_ms,
            result.drops
        );
    }
    Ok(0)
}

fn run_once(args: &PipelineBench, clip: &Path, weights: &Path, motion: bool) -> anyhow::Result<RunResult> {
    let dir = tempfile::tempdir()?;
    let listen = format!("127.0.0.1:{}", std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port());
    let cameras: String =
        (0..args.cameras).map(|i| format!("  - id: cam{i}\n    url: \"file://{}\"\n", clip.display())).collect();
    let config = format!(
        "cameras:\n{cameras}processing:\n  detection:\n    model: \"{}\"\n    size: {}\n    precision: {}\n  motion:\n    enabled: {motion}\n\
         monitoring:\n  log_level: warn\nhttp:\n  listen: \"{listen}\"\n",
        weights.display(),
        args.size,
        args.precision
    );
    let config_path = dir.path().join("config.yaml");
    std::fs::write(&config_path, config)?;
    let mut child = Command::new(std::env::current_exe()?)
        .arg("--config")
        .arg(&config_path)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("run")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("stderr.txt"))?)
        .spawn()?;
    let result = measure(args, &listen, &mut child);
    // SAFETY: kill(2) on our own child; SIGTERM asks it to stop cleanly.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let _ = child.wait();
    result.with_context(|| {
        let stderr = std::fs::read_to_string(dir.path().join("stderr.txt")).unwrap_or_default();
        format!("the service did not run as expected:\n{stderr}")
    })
}

fn measure(args: &PipelineBench, listen: &str, child: &mut Child) -> anyhow::Result<RunResult> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        anyhow::ensure!(child.try_wait()?.is_none(), "the service exited");
        anyhow::ensure!(Instant::now() < deadline, "the cameras did not all stream within 120 s");
        if let Ok(text) = http_get(listen, "/metrics") {
            let decoded = sum(&parse(&text), "smart_cctv_camera_frames_decoded_total", &[]);
            let streaming = (0..args.cameras)
                .all(|i| value(&parse(&text), "smart_cctv_camera_up", &[("camera", &format!("cam{i}"))]) == Some(1.0));
            if streaming && decoded > 0.0 && http_get(listen, "/healthz").is_ok_and(|b| b.contains("\"healthy\":true"))
            {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    // Warm-up: caches, the first detections, the tracker.
    std::thread::sleep(Duration::from_secs(3));
    let (before, cpu_before, t0) = (parse(&http_get(listen, "/metrics")?), cpu_seconds(child.id())?, Instant::now());
    std::thread::sleep(Duration::from_secs(args.seconds));
    let (after, cpu_after, wall) = (parse(&http_get(listen, "/metrics")?), cpu_seconds(child.id())?, t0.elapsed());
    let delta = |name: &str| sum(&after, name, &[]) - sum(&before, name, &[]);
    let n = args.cameras as f64;
    let analysed = delta("smart_cctv_detection_latency_seconds_count");
    let quantile = |q: &str| {
        let values: Vec<f64> = (0..args.cameras)
            .filter_map(|i| {
                value(
                    &after,
                    "smart_cctv_detection_latency_seconds",
                    &[("camera", &format!("cam{i}")), ("quantile", q)],
                )
            })
            .collect();
        // The worst camera's: what a user of that camera sees.
        values.into_iter().fold(0.0, f64::max) * 1000.0
    };
    Ok(RunResult {
        analysed_fps: analysed / wall.as_secs_f64() / n,
        cpu_percent_per_camera: (cpu_after - cpu_before) / wall.as_secs_f64() * 100.0 / n,
        p50_ms: quantile("0.5"),
        p99_ms: quantile("0.99"),
        drops: delta("smart_cctv_camera_frames_dropped_total") + delta("smart_cctv_frames_lost_total"),
        skipped_no_motion: delta("smart_cctv_frames_skipped_no_motion_total"),
    })
}

/// Prometheus text as (name, labels) → value.
type Series = BTreeMap<(String, BTreeMap<String, String>), f64>;

fn parse(text: &str) -> Series {
    let mut out = Series::new();
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let Some((series, number)) = line.rsplit_once(' ') else { continue };
        let Ok(number) = number.parse::<f64>() else { continue };
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => {
                let labels = rest
                    .trim_end_matches('}')
                    .split("\",")
                    .filter_map(|kv| kv.split_once("=\""))
                    .map(|(k, v)| (k.to_owned(), v.trim_end_matches('"').to_owned()))
                    .collect();
                (name.to_owned(), labels)
            }
            None => (series.to_owned(), BTreeMap::new()),
        };
        out.insert((name, labels), number);
    }
    out
}

fn value(series: &Series, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    series
        .iter()
        .find(|((n, l), _)| n == name && labels.iter().all(|(k, v)| l.get(*k).is_some_and(|x| x == v)))
        .map(|(_, v)| *v)
}

/// Sums every series of `name` whose labels include `labels`.
fn sum(series: &Series, name: &str, labels: &[(&str, &str)]) -> f64 {
    series
        .iter()
        .filter(|((n, l), _)| n == name && labels.iter().all(|(k, v)| l.get(*k).is_some_and(|x| x == v)))
        .map(|(_, v)| v)
        .sum()
}

/// User plus system CPU seconds of `pid`, from `/proc/PID/stat`.
fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start at field 3.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).context("unexpected /proc stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 =
        fields.get(11..13).context("unexpected /proc stat")?.iter().filter_map(|f| f.parse::<f64>().ok()).sum();
    // SAFETY: sysconf only reads a system constant.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Ok(ticks / per_second)
}

fn http_get(listen: &str, path: &str) -> anyhow::Result<String> {
    Ok(super::service_api::request(listen, "GET", path, Duration::from_secs(10))?.1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text_parses_with_labels() {
        let text = "# HELP x\nsmart_cctv_up 1\nsmart_cctv_detection_latency_seconds{camera=\"cam0\",quantile=\"0.5\"} 0.25\n\
                    smart_cctv_camera_frames_dropped_total{camera=\"cam0\",reason=\"a\"} 2\n\
                    smart_cctv_camera_frames_dropped_total{camera=\"cam1\",reason=\"b\"} 3\n";
        let s = parse(text);
        assert_eq!(value(&s, "smart_cctv_up", &[]), Some(1.0));
        assert_eq!(
            value(&s, "smart_cctv_detection_latency_seconds", &[("camera", "cam0"), ("quantile", "0.5")]),
            Some(0.25)
        );
        assert_eq!(sum(&s, "smart_cctv_camera_frames_dropped_total", &[]), 5.0);
        assert_eq!(sum(&s, "smart_cctv_camera_frames_dropped_total", &[("camera", "cam1")]), 3.0);
        assert!(cpu_seconds(std::process::id()).unwrap() >= 0.0);
    }
}
