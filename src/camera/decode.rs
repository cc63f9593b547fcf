//! Video decoding with FFmpeg (`ffmpeg-next`), and scaling of each decoded
//! picture to the two images the pipeline uses: RGB for the detector and a
//! small grayscale one for the motion gate.

use ffmpeg::codec;
use ffmpeg::format::Pixel;
use ffmpeg::software::scaling;
use ffmpeg_next as ffmpeg;
use image::{GrayImage, RgbImage};
use std::sync::Once;

/// Width of the grayscale image the motion gate works on.
pub const MOTION_WIDTH: u32 = 160;

/// Initialises FFmpeg once per process and keeps its logging quiet: decode
/// errors are counted and logged by us, per camera.
pub fn init() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        let _ = ffmpeg::init();
        ffmpeg::util::log::set_level(ffmpeg::util::log::Level::Fatal);
    });
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("no FFmpeg decoder for {0}")]
    NoDecoder(String),
    #[error("decoder: {0}")]
    Ffmpeg(#[from] ffmpeg::Error),
}

/// A decoded picture, scaled.
pub struct Picture {
    pub rgb: RgbImage,
    pub gray: GrayImage,
    pub pts: Option<i64>,
}

/// A video decoder plus the scalers for its current resolution.
pub struct Decoder {
    decoder: ffmpeg::decoder::Video,
    /// The longest side of the RGB output; smaller inputs are not upscaled.
    analysis_size: u32,
    scalers: Option<Scalers>,
    frame: ffmpeg::frame::Video,
}

struct Scalers {
    key: (Pixel, u32, u32),
    rgb: scaling::Context,
    gray: scaling::Context,
    rgb_frame: ffmpeg::frame::Video,
    gray_frame: ffmpeg::frame::Video,
}

// SAFETY: the FFmpeg contexts are owned exclusively by this value and never
// shared; moving them to another thread between calls is what libavcodec
// and libswscale allow.
unsafe impl Send for Decoder {}

impl Decoder {
    /// A decoder for a stream demuxed by FFmpeg itself.
    pub fn from_parameters(parameters: codec::Parameters, analysis_size: u32) -> Result<Self, DecodeError> {
        init();
        let ctx = codec::context::Context::from_parameters(parameters)?;
        Self::open(ctx, analysis_size)
    }

    /// A decoder for elementary-stream packets from elsewhere (RTSP), with the
    /// codec's out-of-band parameters (`avcC`/`hvcC`) as extradata.
    pub fn from_extradata(codec_id: codec::Id, extradata: &[u8], analysis_size: u32) -> Result<Self, DecodeError> {
        init();
        let codec = ffmpeg::decoder::find(codec_id).ok_or_else(|| DecodeError::NoDecoder(format!("{codec_id:?}")))?;
        let mut ctx = codec::context::Context::new_with_codec(codec);
        set_extradata(&mut ctx, extradata);
        Self::open(ctx, analysis_size)
    }

    fn open(mut ctx: codec::context::Context, analysis_size: u32) -> Result<Self, DecodeError> {
        // One thread per camera: with several cameras the cores are better
        // spent in parallel streams and inference than in frame threading,
        // which would also add a frame of latency.
        ctx.set_threading(codec::threading::Config {
            kind: codec::threading::Type::None,
            count: 1,
            ..Default::default()
        });
        let decoder = ctx.decoder().video()?;
        Ok(Self { decoder, analysis_size, scalers: None, frame: ffmpeg::frame::Video::empty() })
    }

    /// Feeds one packet; returns the pictures it completed. `want` decides
    /// per decoded picture whether to scale it (rate limiting skips the
    /// scaling of pictures nobody will look at).
    pub fn decode(
        &mut self,
        data: &[u8],
        pts: Option<i64>,
        want: &mut dyn FnMut() -> bool,
    ) -> Result<Vec<Picture>, DecodeError> {
        let mut packet = ffmpeg::Packet::copy(data);
        packet.set_pts(pts);
        packet.set_dts(pts);
        self.decoder.send_packet(&packet)?;
        self.drain(want)
    }

    /// Feeds a packet read by FFmpeg's own demuxer.
    pub fn decode_packet(
        &mut self,
        packet: &ffmpeg::Packet,
        want: &mut dyn FnMut() -> bool,
    ) -> Result<Vec<Picture>, DecodeError> {
        self.decoder.send_packet(packet)?;
        self.drain(want)
    }

    /// Forgets buffered pictures (after a seek).
    pub fn flush(&mut self) {
        self.decoder.flush();
    }

    fn drain(&mut self, want: &mut dyn FnMut() -> bool) -> Result<Vec<Picture>, DecodeError> {
        let mut out = Vec::new();
        while self.decoder.receive_frame(&mut self.frame).is_ok() {
            if !want() {
                continue;
            }
            out.push(self.scale()?);
        }
        Ok(out)
    }

    fn scale(&mut self) -> Result<Picture, DecodeError> {
        let (format, w, h) = (self.frame.format(), self.frame.width(), self.frame.height());
        if self.scalers.as_ref().is_none_or(|s| s.key != (format, w, h)) {
            let (rw, rh) = fit(w, h, self.analysis_size);
            let (gw, gh) = fit(w, h, MOTION_WIDTH);
            let flags = scaling::Flags::BILINEAR;
            self.scalers = Some(Scalers {
                key: (format, w, h),
                rgb: scaling::Context::get(format, w, h, Pixel::RGB24, rw, rh, flags)?,
                gray: scaling::Context::get(format, w, h, Pixel::GRAY8, gw, gh, flags)?,
                rgb_frame: ffmpeg::frame::Video::empty(),
                gray_frame: ffmpeg::frame::Video::empty(),
            });
        }
        let pts = self.frame.pts();
        let s = self.scalers.as_mut().ok_or(ffmpeg::Error::Bug)?;
        s.rgb.run(&self.frame, &mut s.rgb_frame)?;
        s.gray.run(&self.frame, &mut s.gray_frame)?;
        let rgb = RgbImage::from_raw(s.rgb_frame.width(), s.rgb_frame.height(), packed(&s.rgb_frame, 3))
            .ok_or(ffmpeg::Error::Bug)?;
        let gray = GrayImage::from_raw(s.gray_frame.width(), s.gray_frame.height(), packed(&s.gray_frame, 1))
            .ok_or(ffmpeg::Error::Bug)?;
        Ok(Picture { rgb, gray, pts })
    }
}

/// Every `every`-th picture of a video file (0: spread `max` over the whole
/// clip, when its length is known), up to `max` of them, RGB with the
/// longer side at most `analysis_size`: the demo frame of `bench` and the
/// calibration frames of int8.
pub fn clip_frames(
    path: &std::path::Path,
    every: usize,
    max: usize,
    analysis_size: u32,
) -> Result<Vec<RgbImage>, ClipError> {
    let clip = || path.display().to_string();
    init();
    let mut input = ffmpeg::format::input(path).map_err(|e| ClipError { clip: clip(), reason: e.to_string() })?;
    let stream = input
        .streams()
        .best(ffmpeg::media::Type::Video)
        .ok_or_else(|| ClipError { clip: clip(), reason: "has no video stream".into() })?;
    let index = stream.index();
    let every = match every {
        0 => (usize::try_from(stream.frames()).unwrap_or(0) / max.max(1)).max(1),
        n => n,
    };
    let mut decoder = Decoder::from_parameters(stream.parameters(), analysis_size)
        .map_err(|e| ClipError { clip: clip(), reason: e.to_string() })?;
    let (mut seen, mut out) = (0usize, Vec::new());
    for (stream, packet) in input.packets() {
        if out.len() >= max {
            break;
        }
        if stream.index() != index {
            continue;
        }
        let mut want = || {
            seen += 1;
            (seen - 1).is_multiple_of(every)
        };
        // A damaged packet is skipped, as a camera would skip it.
        if let Ok(pictures) = decoder.decode_packet(&packet, &mut want) {
            out.extend(pictures.into_iter().map(|p| p.rgb));
        }
    }
    out.truncate(max);
    if out.is_empty() {
        return Err(ClipError { clip: clip(), reason: "no picture decoded".into() });
    }
    Ok(out)
}

/// A video file that gave no pictures.
#[derive(Debug, thiserror::Error)]
#[error("clip {clip}: {reason}")]
pub struct ClipError {
    pub clip: String,
    pub reason: String,
}

/// Scales `w`×`h` so its longer side is at most `max`, keeping the aspect
/// ratio and even dimensions.
pub fn fit(w: u32, h: u32, max: u32) -> (u32, u32) {
    let longest = w.max(h).max(1);
    if longest <= max {
        return (w, h);
    }
    let scale = max as f64 / longest as f64;
    let even = |v: f64| ((v.round() as u32) & !1).max(2);
    (even(w as f64 * scale), even(h as f64 * scale))
}

/// Copies a frame's first plane without its row padding.
fn packed(frame: &ffmpeg::frame::Video, bytes_per_pixel: usize) -> Vec<u8> {
    let row = frame.width() as usize * bytes_per_pixel;
    let stride = frame.stride(0);
    let data = frame.data(0);
    let mut out = Vec::with_capacity(row * frame.height() as usize);
    for y in 0..frame.height() as usize {
        out.extend_from_slice(&data[y * stride..y * stride + row]);
    }
    out
}

/// Gives the decoder the stream's out-of-band parameters. ffmpeg-next has no
/// safe setter for extradata, so this is the one place that touches the raw
/// `AVCodecContext`.
fn set_extradata(ctx: &mut codec::context::Context, extradata: &[u8]) {
    if extradata.is_empty() {
        return;
    }
    let padding = ffmpeg::ffi::AV_INPUT_BUFFER_PADDING_SIZE as usize;
    // SAFETY: the buffer is allocated with av_mallocz, as libavcodec requires
    // (it frees it with av_free when the context is freed), sized for the data
    // plus the zeroed padding its bitstream readers may over-read; the context
    // is not yet opened, so nothing else holds a pointer to the old value.
    unsafe {
        let raw = ctx.as_mut_ptr();
        let buf = ffmpeg::ffi::av_mallocz(extradata.len() + padding) as *mut u8;
        if buf.is_null() {
            return;
        }
        std::ptr::copy_nonoverlapping(extradata.as_ptr(), buf, extradata.len());
        ffmpeg::ffi::av_freep(std::ptr::addr_of_mut!((*raw).extradata) as *mut std::ffi::c_void);
        (*raw).extradata = buf;
        (*raw).extradata_size = extradata.len() as i32;
    }
}

#[cfg(test)]
mod tests {
    use super::fit;

    #[test]
    fn fit_keeps_aspect_and_never_upscales() {
        assert_eq!(fit(1920, 1080, 640), (640, 360));
        assert_eq!(fit(640, 480, 640), (640, 480));
        assert_eq!(fit(320, 240, 640), (320, 240));
        assert_eq!(fit(640, 480, 160), (160, 120));
    }
}
