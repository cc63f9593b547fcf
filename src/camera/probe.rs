//! `smart-cctv cameras test`, which replaces `test_cameras.py`: connect to
//! each camera, decode some frames, report what came.

use super::source::{Opener, RealOpener, SourceContext};
use super::{CountingSink, SourceStats};
use crate::config::CameraConfig;
use serde::Serialize;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// What one camera test found.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeReport {
    pub camera: String,
    pub ok: bool,
    pub codec: Option<String>,
    /// Size of the frames handed to the detector.
    pub resolution: Option<(u32, u32)>,
    pub frames: u64,
    pub fps: Option<f64>,
    pub first_frame_seconds: Option<f64>,
    pub error: Option<String>,
}

impl std::fmt::Display for ProbeReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if !self.ok {
            return write!(f, "{}: FAILED: {}", self.camera, self.error.as_deref().unwrap_or("unknown error"));
        }
        write!(f, "{}: ok  codec {}", self.camera, self.codec.as_deref().unwrap_or("?"))?;
        if let Some((w, h)) = self.resolution {
            write!(f, "  {w}x{h}")?;
        }
        if let Some(fps) = self.fps {
            write!(f, "  {fps:.1} fps")?;
        }
        if let Some(t) = self.first_frame_seconds {
            write!(f, "  first frame after {t:.2}s")?;
        }
        write!(f, "  ({} frames)", self.frames)
    }
}

/// Decodes `frames` frames from `camera`, or gives up after `timeout`.
pub async fn probe(camera: &CameraConfig, frames: u64, analysis_size: u32, timeout: Duration) -> ProbeReport {
    let id: Arc<str> = Arc::from(camera.id.as_str());
    let sink = Arc::new(CountingSink::default());
    let stats = Arc::new(SourceStats::new(id.clone()));
    let stop = Arc::new(AtomicBool::new(false));
    let ctx = SourceContext {
        camera: id,
        analysis_size,
        fps: None,
        frame_skip: 0,
        sink: sink.clone(),
        stats: stats.clone(),
        stop: stop.clone(),
    };
    let started = Instant::now();
    let mut task = tokio::spawn(RealOpener::default().run(camera, ctx));
    let mut first: Option<Duration> = None;
    let mut error = None;
    let mut ended = false;
    let deadline = tokio::time::Instant::now() + timeout;
    while stats.decoded() < frames {
        tokio::select! {
            result = &mut task => {
                ended = true;
                error = Some(match result {
                    Ok(Err(e)) => crate::config::load::redact_text(&e.to_string()),
                    Ok(Ok(())) => "source stopped".into(),
                    Err(e) => format!("source task failed: {e}"),
                });
                break;
            }
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            _ = tokio::time::sleep_until(deadline) => {
                error = Some(format!("only {} of {frames} frames within {}", stats.decoded(), humantime::format_duration(timeout)));
                break;
            }
        }
        if first.is_none() && stats.decoded() > 0 {
            first = Some(started.elapsed());
        }
    }
    stop.store(true, Ordering::Relaxed);
    if !ended {
        task.abort();
        // Awaited, so no session outlives the probe.
        let _ = task.await;
    }
    let count = sink.frames.load(Ordering::Relaxed);
    let elapsed_since_first = first.map(|f| started.elapsed().saturating_sub(f).as_secs_f64());
    ProbeReport {
        camera: camera.id.clone(),
        ok: error.is_none(),
        codec: stats.codec(),
        resolution: *sink.last_size.lock().unwrap_or_else(|p| p.into_inner()),
        frames: count,
        fps: elapsed_since_first.filter(|s| *s > 0.0 && count > 1).map(|s| (count - 1) as f64 / s),
        first_frame_seconds: first.map(|d| d.as_secs_f64()),
        error,
    }
}
