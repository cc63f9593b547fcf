//! Frame sources, chosen by URL scheme: `file://` (FFmpeg demux, looping,
//! paced in real time), `rtsp://` (retina, then FFmpeg decode) and `v4l2://`
//! (nokhwa). Each runs until it fails or is told to stop, pushing frames to
//! the camera's sink and bumping its stats so the camera actor can see
//! progress and stalls.

use super::decode::{Decoder, Picture};
use super::{Frame, FrameSink, SourceStats};
use crate::config::{CameraConfig, CameraUrl};
use ffmpeg_next as ffmpeg;
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

/// Consecutive undecodable packets after which the stream counts as broken.
const DECODE_ERROR_BURST: u32 = 50;

/// Why a source stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    #[error("authentication failed: {0}")]
    Auth(String),
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("stream ended: {0}")]
    Ended(String),
    #[error("too many decode errors: {0}")]
    Decode(String),
    #[error("device: {0}")]
    Device(String),
    #[error("unsupported: {0}")]
    Unsupported(String),
}

impl SourceError {
    pub fn is_auth(&self) -> bool {
        matches!(self, Self::Auth(_))
    }
}

/// Which decoded pictures to keep: `fps` and `frame_skip` applied on the
/// stream's own timeline, before any scaling is done.
#[derive(Debug, Clone)]
pub struct RateLimit {
    /// Minimum seconds between kept frames; 0 keeps every one.
    interval: f64,
    /// Keep one, then skip this many.
    skip: u32,
    next_due: Option<f64>,
    seen: u64,
}

impl RateLimit {
    pub fn new(fps: Option<f64>, skip: u32) -> Self {
        Self { interval: fps.filter(|f| *f > 0.0).map_or(0.0, |f| 1.0 / f), skip, next_due: None, seen: 0 }
    }

    /// Whether the picture at stream time `t` seconds is kept.
    pub fn keep(&mut self, t: f64) -> bool {
        let n = self.seen;
        self.seen += 1;
        if !n.is_multiple_of(self.skip as u64 + 1) {
            return false;
        }
        match self.next_due {
            Some(due) if t + 1e-6 < due && t + 1.0 > due => false,
            _ => {
                // Snap to the grid unless far behind (a loop or a clock jump).
                let due = self.next_due.filter(|d| (t - d).abs() < 1.0).unwrap_or(t);
                self.next_due = Some(due + self.interval);
                true
            }
        }
    }
}

/// What every source needs.
#[derive(Clone)]
pub struct SourceContext {
    pub camera: Arc<str>,
    pub analysis_size: u32,
    pub fps: Option<f64>,
    pub frame_skip: u32,
    pub sink: Arc<dyn FrameSink>,
    pub stats: Arc<SourceStats>,
    /// Set by the camera actor to stop a blocking source.
    pub stop: Arc<AtomicBool>,
}

impl SourceContext {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn emit(&self, picture: Picture, decode_time: Duration) {
        let seq = self.stats.frame_decoded();
        metrics::histogram!("smart_cctv_camera_decode_seconds", "camera" => self.camera.to_string())
            .record(decode_time.as_secs_f64());
        self.sink.push(Frame {
            camera: self.camera.clone(),
            seq,
            pts: picture.pts,
            captured: SystemTime::now(),
            captured_at: Instant::now(),
            rgb: Arc::new(picture.rgb),
            gray: Arc::new(picture.gray),
        });
    }

    fn decode_error(&self, consecutive: &mut u32, e: impl std::fmt::Display) -> Result<(), SourceError> {
        *consecutive += 1;
        metrics::counter!("smart_cctv_camera_decode_errors_total", "camera" => self.camera.to_string()).increment(1);
        if *consecutive >= DECODE_ERROR_BURST {
            return Err(SourceError::Decode(format!("{consecutive} packets in a row failed, last: {e}")));
        }
        Ok(())
    }
}

/// What runs a camera's source: the seam between the camera actor and the
/// world (moonfire's `Opener`). The actor owns the future it gets: it runs
/// it as one task, and stopping means setting `ctx.stop` (for the blocking
/// sources) and aborting that task, which drops the future and with it any
/// RTSP session. Tests put a fake here.
pub trait Opener: Send + Sync + 'static {
    /// Runs `camera`'s source until it fails, `ctx.stop` is set, or the
    /// future is dropped.
    fn run(&self, camera: &CameraConfig, ctx: SourceContext) -> BoxFuture<'static, Result<(), SourceError>>;
}

/// The real sources, chosen by URL scheme. One per camera: it keeps the
/// camera's RTSP [`SessionGroup`](retina::client::SessionGroup) across
/// reconnects, so a new session waits (briefly) for the old one's teardown.
#[derive(Default)]
pub struct RealOpener {
    sessions: Arc<retina::client::SessionGroup>,
}

/// How long a reconnect waits for the previous RTSP session's teardown. A
/// hung server may never answer it; the wait is then cut short, and the
/// server expires the session itself.
const STALE_SESSION_WAIT: Duration = Duration::from_secs(2);

impl Opener for RealOpener {
    fn run(&self, camera: &CameraConfig, ctx: SourceContext) -> BoxFuture<'static, Result<(), SourceError>> {
        let url = camera.url.clone();
        let transport = camera.transport;
        let realtime = camera.realtime;
        let sessions = self.sessions.clone();
        Box::pin(async move {
            match url.expose().split("://").next().unwrap_or("") {
                "rtsp" | "rtsps" => {
                    let stale = sessions.stale_sessions();
                    if tokio::time::timeout(STALE_SESSION_WAIT, sessions.await_stale_sessions(&stale)).await.is_err() {
                        tracing::debug!(camera = %ctx.camera, "previous RTSP session not torn down yet; connecting anyway");
                    }
                    run_rtsp(&url, transport, sessions, &ctx).await
                }
                "file" => {
                    let path = file_path(url.expose());
                    blocking(move || run_file(&path, realtime, &ctx)).await
                }
                "v4l2" => blocking(move || run_v4l2(&url, &ctx)).await,
                other => Err(SourceError::Unsupported(format!("scheme `{other}`"))),
            }
        })
    }
}

/// `file:///abs/path`, or `file://relative/path` from the working directory.
pub fn file_path(url: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(url.trim_start_matches("file://"))
}

async fn blocking(work: impl FnOnce() -> Result<(), SourceError> + Send + 'static) -> Result<(), SourceError> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|e| Err(SourceError::Ended(format!("source thread panicked: {e}"))))
}

/// `file:///path`: loops forever; paced in real time unless `realtime` is off.
pub fn run_file(path: &Path, realtime: bool, ctx: &SourceContext) -> Result<(), SourceError> {
    super::decode::init();
    let shown = path.display();
    let mut input =
        ffmpeg::format::input(path).map_err(|e| SourceError::Connect(format!("cannot open {shown}: {e}")))?;
    let stream = input
        .streams()
        .best(ffmpeg::media::Type::Video)
        .ok_or_else(|| SourceError::Unsupported(format!("{shown} has no video stream")))?;
    let index = stream.index();
    ctx.stats.set_codec(format!("{:?}", stream.parameters().id()).to_lowercase());
    let time_base = f64::from(stream.time_base());
    // One frame interval, to continue the timeline across a loop.
    let rate = f64::from(stream.avg_frame_rate());
    let frame_interval = if rate.is_finite() && rate > 0.0 { 1.0 / rate } else { 1.0 / 15.0 };
    let mut decoder = Decoder::from_parameters(stream.parameters(), ctx.analysis_size)
        .map_err(|e| SourceError::Unsupported(format!("{shown}: {e}")))?;
    let mut rate = RateLimit::new(ctx.fps, ctx.frame_skip);
    let start = Instant::now();
    // Stream time at which the current pass started, on a timeline that
    // keeps growing across loops.
    let mut offset = 0.0;
    loop {
        let mut last_t = offset;
        let mut pictures_this_pass = 0u64;
        let mut consecutive_errors = 0;
        let mut first_pts: Option<i64> = None;
        for (stream, packet) in input.packets() {
            if ctx.stopped() {
                return Ok(());
            }
            if stream.index() != index {
                continue;
            }
            let began = Instant::now();
            let pts = packet.pts().or(packet.dts());
            let base = *first_pts.get_or_insert(pts.unwrap_or(0));
            let t = offset + pts.map_or(last_t - offset, |p| (p - base) as f64 * time_base);
            let mut want = || rate.keep(t);
            match decoder.decode_packet(&packet, &mut want) {
                Ok(pictures) => {
                    let decode_time = began.elapsed();
                    consecutive_errors = 0;
                    for picture in pictures {
                        pictures_this_pass += 1;
                        if realtime {
                            pace(start, t, ctx);
                        }
                        ctx.emit(picture, decode_time);
                    }
                }
                Err(e) => ctx.decode_error(&mut consecutive_errors, e)?,
            }
            ctx.stats.packet_seen();
            last_t = t;
        }
        if pictures_this_pass == 0 {
            return Err(SourceError::Ended(format!("{shown}: no decodable frames")));
        }
        // Loop: back to the start, one frame interval after the last frame.
        offset = last_t + frame_interval;
        input.seek(0, ..).map_err(|e| SourceError::Ended(format!("{shown}: cannot loop: {e}")))?;
        decoder.flush();
    }
}

/// Sleeps until stream time `t` is due, in short steps so a stop is noticed.
fn pace(start: Instant, t: f64, ctx: &SourceContext) {
    // Stream timestamps are input: a hostile or broken file may carry any value.
    let Some(due) = Duration::try_from_secs_f64(t.max(0.0)).ok().and_then(|d| start.checked_add(d)) else {
        return;
    };
    while !ctx.stopped() {
        let now = Instant::now();
        if now >= due {
            return;
        }
        std::thread::sleep((due - now).min(Duration::from_millis(100)));
    }
}

/// Splits `rtsp://user:pass@host/path` into a credential-free URL and the
/// credentials: retina refuses URLs that carry them, and it must never see
/// the password in a form it could log.
fn split_credentials(url: &CameraUrl) -> Result<(url::Url, Option<retina::client::Credentials>), SourceError> {
    let mut parsed = url::Url::parse(url.expose()).map_err(|e| SourceError::Connect(format!("{url}: {e}")))?;
    if parsed.username().is_empty() {
        return Ok((parsed, None));
    }
    let decode = |s: &str| percent_decode(s);
    let creds = retina::client::Credentials {
        username: decode(parsed.username()),
        password: decode(parsed.password().unwrap_or("")),
    };
    let _ = parsed.set_username("");
    let _ = parsed.set_password(None);
    Ok((parsed, Some(creds)))
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned()
}

/// RTSP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RtspTransport {
    /// Interleaved in the RTSP connection: works through NAT and firewalls.
    #[default]
    Tcp,
    Udp,
}

/// `rtsp://`: describe, set up the first H.264/H.265 video stream, play, and
/// decode on a dedicated thread until the stream fails or the future is
/// dropped (which tears the session down, tracked in `sessions`).
pub async fn run_rtsp(
    url: &CameraUrl,
    transport: RtspTransport,
    sessions: Arc<retina::client::SessionGroup>,
    ctx: &SourceContext,
) -> Result<(), SourceError> {
    use retina::client::{PlayOptions, Session, SessionOptions, SetupOptions, Transport};
    use retina::codec::{CodecItem, ParametersRef};

    let (plain, creds) = split_credentials(url)?;
    let options = SessionOptions::default()
        .creds(creds)
        .session_group(sessions)
        .user_agent(format!("smart-cctv/{}", env!("CARGO_PKG_VERSION")));
    let mut session = Session::describe(plain.clone(), options).await.map_err(|e| classify(url, e.to_string()))?;
    let (index, codec) = session
        .streams()
        .iter()
        .enumerate()
        .find_map(|(i, s)| match (s.media(), s.encoding_name()) {
            ("video", "h264") => Some((i, ffmpeg::codec::Id::H264)),
            ("video", "h265") => Some((i, ffmpeg::codec::Id::HEVC)),
            _ => None,
        })
        .ok_or_else(|| SourceError::Unsupported(format!("{url}: no H.264 or H.265 video stream")))?;
    ctx.stats.set_codec(if codec == ffmpeg::codec::Id::H264 { "h264".into() } else { "hevc".into() });
    let transport = match transport {
        RtspTransport::Tcp => Transport::Tcp(Default::default()),
        RtspTransport::Udp => Transport::Udp(Default::default()),
    };
    session
        .setup(index, SetupOptions::default().transport(transport))
        .await
        .map_err(|e| classify(url, e.to_string()))?;
    let playing = session.play(PlayOptions::default()).await.map_err(|e| classify(url, e.to_string()))?;
    let mut demuxed = playing.demuxed().map_err(|e| SourceError::Unsupported(format!("{url}: {e}")))?;

    let worker = RtspDecodeThread::spawn(ctx.clone());
    let mut extradata: Option<Vec<u8>> = None;
    let clock_rate = demuxed.streams()[index].clock_rate_hz().max(1) as f64;
    // After a lost or dropped packet, frames are skipped until the next
    // keyframe: decoding from a broken reference smears the picture, which
    // the motion gate and the detector would take for motion.
    let mut resync = Resync::default();
    loop {
        if let Some(err) = worker.failure() {
            return Err(err);
        }
        let item = match demuxed.next().await {
            None => return Err(SourceError::Ended(format!("{url}: server closed the stream"))),
            Some(Err(e)) => return Err(SourceError::Ended(format!("{url}: {e}"))),
            Some(Ok(item)) => item,
        };
        let CodecItem::VideoFrame(frame) = item else { continue };
        if (frame.has_new_parameters() || extradata.is_none())
            && let Some(ParametersRef::Video(params)) = demuxed.streams()[index].parameters()
        {
            ctx.stats.set_codec(params.rfc6381_codec().to_owned());
            let data = params.extra_data().to_vec();
            if extradata.as_ref() != Some(&data) {
                extradata = Some(data.clone());
                // Parameters are never dropped for long: resend with the next frame.
                if !worker.send(RtspPacket::Parameters { codec, extradata: data }) {
                    extradata = None;
                    resync.lost();
                }
            }
        }
        ctx.stats.packet_seen();
        if !resync.admit(frame.loss() > 0, frame.is_random_access_point()) {
            metrics::counter!("smart_cctv_camera_frames_dropped_total", "camera" => ctx.camera.to_string(), "reason" => "waiting_for_keyframe")
                .increment(1);
            continue;
        }
        let t = frame.timestamp().elapsed() as f64 / clock_rate;
        if !worker.send(RtspPacket::Frame { data: frame.into_data(), t }) {
            resync.lost();
        }
    }
}

/// Whether a frame may go to the decoder: not after a loss until a keyframe.
#[derive(Debug, Default)]
pub struct Resync {
    waiting: bool,
}

impl Resync {
    /// `lost`: packets were lost before this frame; `keyframe`: it can be
    /// decoded on its own.
    pub fn admit(&mut self, lost: bool, keyframe: bool) -> bool {
        if lost {
            self.waiting = true;
        }
        if keyframe {
            self.waiting = false;
        }
        !self.waiting
    }

    /// A frame was dropped after being admitted (the decoder was behind).
    pub fn lost(&mut self) {
        self.waiting = true;
    }
}

/// retina's errors carry the status line; 401 means wrong credentials.
fn classify(url: &CameraUrl, message: String) -> SourceError {
    let message = crate::config::load::redact_text(&message);
    if message.contains("401") || message.contains("Unauthorized") {
        SourceError::Auth(format!("{url}: {message}"))
    } else {
        SourceError::Connect(format!("{url}: {message}"))
    }
}

enum RtspPacket {
    Parameters { codec: ffmpeg::codec::Id, extradata: Vec<u8> },
    Frame { data: Vec<u8>, t: f64 },
}

/// FFmpeg decoding off the async runtime, fed by a bounded channel. When the
/// decoder falls behind, packets are dropped until the next parameters or
/// keyframe would let it resume cleanly, and the drop is counted.
struct RtspDecodeThread {
    tx: std::sync::mpsc::SyncSender<RtspPacket>,
    failed: Arc<std::sync::Mutex<Option<SourceError>>>,
    camera: Arc<str>,
}

impl RtspDecodeThread {
    fn spawn(ctx: SourceContext) -> Self {
        let (tx, rx) = std::sync::mpsc::sync_channel::<RtspPacket>(32);
        let failed = Arc::new(std::sync::Mutex::new(None));
        let report = failed.clone();
        let camera = ctx.camera.clone();
        let _ = std::thread::Builder::new().name(format!("decode-{}", ctx.camera)).spawn(move || {
            let mut decoder: Option<Decoder> = None;
            let mut rate = RateLimit::new(ctx.fps, ctx.frame_skip);
            let mut consecutive = 0;
            for packet in rx {
                match packet {
                    RtspPacket::Parameters { codec, extradata } => {
                        match Decoder::from_extradata(codec, &extradata, ctx.analysis_size) {
                            Ok(d) => decoder = Some(d),
                            Err(e) => {
                                *report.lock().unwrap_or_else(|p| p.into_inner()) =
                                    Some(SourceError::Unsupported(e.to_string()));
                                return;
                            }
                        }
                    }
                    RtspPacket::Frame { data, t } => {
                        let Some(decoder) = decoder.as_mut() else { continue };
                        let began = Instant::now();
                        let mut want = || rate.keep(t);
                        match decoder.decode(&data, None, &mut want) {
                            Ok(pictures) => {
                                consecutive = 0;
                                for picture in pictures {
                                    ctx.emit(picture, began.elapsed());
                                }
                            }
                            Err(e) => {
                                if let Err(err) = ctx.decode_error(&mut consecutive, e) {
                                    *report.lock().unwrap_or_else(|p| p.into_inner()) = Some(err);
                                    return;
                                }
                            }
                        }
                    }
                }
            }
        });
        Self { tx, failed, camera }
    }

    /// Queues a packet; `false` when it was dropped because the decoder is behind.
    fn send(&self, packet: RtspPacket) -> bool {
        if self.tx.try_send(packet).is_err() {
            metrics::counter!("smart_cctv_camera_frames_dropped_total", "camera" => self.camera.to_string(), "reason" => "decoder_behind")
                .increment(1);
            return false;
        }
        true
    }

    fn failure(&self) -> Option<SourceError> {
        self.failed.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// `v4l2:///dev/videoN` or `v4l2://N`: a USB camera through nokhwa (MJPEG or
/// YUYV, converted to RGB by nokhwa).
pub fn run_v4l2(url: &CameraUrl, ctx: &SourceContext) -> Result<(), SourceError> {
    use nokhwa::pixel_format::RgbFormat;
    use nokhwa::utils::{CameraIndex, RequestedFormat, RequestedFormatType};

    let text = url.expose();
    let spec = text.trim_start_matches("v4l2://");
    let index: u32 = spec
        .trim_start_matches("/dev/video")
        .trim_matches('/')
        .parse()
        .map_err(|_| SourceError::Device(format!("{url}: expected v4l2:///dev/videoN or v4l2://N")))?;
    let requested = RequestedFormat::new::<RgbFormat>(RequestedFormatType::AbsoluteHighestFrameRate);
    let mut camera = nokhwa::Camera::new(CameraIndex::Index(index), requested)
        .map_err(|e| SourceError::Device(format!("/dev/video{index}: {e}")))?;
    camera.open_stream().map_err(|e| SourceError::Device(format!("/dev/video{index}: {e}")))?;
    ctx.stats.set_codec(format!("{}", camera.camera_format().format()).to_lowercase());
    let mut rate = RateLimit::new(ctx.fps, ctx.frame_skip);
    let start = Instant::now();
    while !ctx.stopped() {
        let buffer = camera.frame().map_err(|e| SourceError::Device(format!("/dev/video{index}: {e}")))?;
        ctx.stats.packet_seen();
        if !rate.keep(start.elapsed().as_secs_f64()) {
            continue;
        }
        let began = Instant::now();
        let decoded =
            buffer.decode_image::<RgbFormat>().map_err(|e| SourceError::Device(format!("/dev/video{index}: {e}")))?;
        let (w, h) = (decoded.width(), decoded.height());
        let rgb = image::RgbImage::from_raw(w, h, decoded.into_raw())
            .ok_or_else(|| SourceError::Device(format!("/dev/video{index}: bad frame size")))?;
        ctx.emit(scale_still(rgb, ctx.analysis_size), began.elapsed());
    }
    Ok(())
}

/// Scales an RGB picture the way the FFmpeg path does, for sources that
/// decode without FFmpeg.
fn scale_still(rgb: image::RgbImage, analysis_size: u32) -> Picture {
    use super::decode::{MOTION_WIDTH, fit};
    use crate::detect::preprocess::resize_bilinear;
    let (w, h) = (rgb.width(), rgb.height());
    let (rw, rh) = fit(w, h, analysis_size);
    let rgb = if (rw, rh) == (w, h) {
        rgb
    } else {
        let data = resize_bilinear(rgb.as_raw(), w as usize, h as usize, rw as usize, rh as usize);
        image::RgbImage::from_raw(rw, rh, data).unwrap_or(rgb)
    };
    let (gw, gh) = fit(rgb.width(), rgb.height(), MOTION_WIDTH);
    let small = resize_bilinear(rgb.as_raw(), rgb.width() as usize, rgb.height() as usize, gw as usize, gh as usize);
    let gray = image::GrayImage::from_fn(gw, gh, |x, y| {
        let i = ((y * gw + x) * 3) as usize;
        let (r, g, b) = (small[i] as u32, small[i + 1] as u32, small[i + 2] as u32);
        image::Luma([((r * 77 + g * 150 + b * 29) >> 8) as u8])
    });
    Picture { rgb, gray, pts: None }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn after_a_loss_only_a_keyframe_resumes_decoding() {
        let mut r = Resync::default();
        assert!(r.admit(false, true));
        assert!(r.admit(false, false));
        // Lost packets before this frame: skip it and what follows...
        assert!(!r.admit(true, false));
        assert!(!r.admit(false, false));
        // ...until a keyframe, which is decoded.
        assert!(r.admit(false, true));
        assert!(r.admit(false, false));
        // A frame the decoder could not take counts as a loss too.
        r.lost();
        assert!(!r.admit(false, false));
        // A keyframe that itself follows a loss is still a clean start.
        assert!(r.admit(true, true));
    }

    #[test]
    fn rate_limit_keeps_one_frame_per_interval() {
        let mut rate = RateLimit::new(Some(5.0), 0);
        let kept = (0..30).filter(|i| rate.keep(*i as f64 / 15.0)).count();
        assert_eq!(kept, 10, "15 fps for 2 s limited to 5 fps");
        let mut every = RateLimit::new(None, 0);
        assert_eq!((0..30).filter(|i| every.keep(*i as f64 / 15.0)).count(), 30);
        let mut skip = RateLimit::new(None, 2);
        assert_eq!((0..30).filter(|i| skip.keep(*i as f64 / 15.0)).count(), 10);
    }

    #[test]
    fn credentials_are_split_off_and_decoded() {
        let url = CameraUrl::new("rtsp://admin:p%40ss@127.0.0.1:8554/cam1");
        let (plain, creds) = split_credentials(&url).unwrap();
        assert_eq!(plain.as_str(), "rtsp://127.0.0.1:8554/cam1");
        let creds = creds.unwrap();
        assert_eq!((creds.username.as_str(), creds.password.as_str()), ("admin", "p@ss"));
    }
}
