//! What crosses between nodes, and its bytes. Only these types are
//! serialisable; every other actor message stays local.
//!
//! Bytes from a peer are hostile until decoded: [`Payload`] holds the decode
//! error instead of panicking (ractor's `BytesConvertable` has no way to fail),
//! and frames are checked against their stated size before any image is made.

use crate::config::cluster::FrameEncoding;
use crate::detect::Detection;
use crate::detect::preprocess::{Letterbox, LetterboxMode, resize_bilinear};
use image::RgbImage;
use ractor::BytesConvertable;
use serde::{Deserialize, Serialize, de::DeserializeOwned};

/// The largest frame side a worker accepts from a peer.
pub const MAX_SIDE: u32 = 2048;

/// A value from a peer, or why its bytes did not decode.
#[derive(Debug, Clone)]
pub struct Payload<T>(pub Result<T, String>);

impl<T: Serialize + DeserializeOwned> BytesConvertable for Payload<T> {
    fn into_bytes(self) -> Vec<u8> {
        match self.0 {
            // Plain structs of numbers, strings and bytes: postcard cannot fail on them.
            Ok(value) => postcard::to_allocvec(&value).unwrap_or_default(),
            Err(_) => Vec::new(),
        }
    }

    fn from_bytes(bytes: Vec<u8>) -> Self {
        Self(postcard::from_bytes(&bytes).map_err(|e| format!("undecodable message from a peer: {e}")))
    }
}

impl<T> Payload<T> {
    pub fn ok(value: T) -> Self {
        Self(Ok(value))
    }
}

/// One frame for a remote worker, already scaled to the detector's input.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FrameRequest {
    /// The node that sent it, for the worker's per-node counts.
    pub from: String,
    pub camera: String,
    pub seq: u64,
    pub width: u32,
    pub height: u32,
    pub encoding: WireEncoding,
    pub bytes: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WireEncoding {
    Rgb,
    Jpeg,
}

/// What a worker found, in the pixels of the frame it was sent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FrameReply {
    pub node: String,
    pub detections: Vec<WireDetection>,
    pub inference_us: u64,
    /// Frames the worker's node has in hand (being run or waiting), for the
    /// edges' choice of worker.
    pub queue_depth: u32,
    /// Why the worker could not run the frame (no model yet, a bad frame).
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct WireDetection {
    pub class_id: u16,
    pub confidence: f32,
    pub bbox: [f32; 4],
}

/// A node's answer to a heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub node: String,
    pub role: String,
    /// Inference workers it runs (0 on an edge).
    pub workers: u32,
    pub detector_ready: bool,
    pub queue_depth: u32,
    pub frames_served: u64,
}

/// A frame scaled for the link, and how to map boxes back.
pub struct Prepared {
    pub request: FrameRequest,
    /// Original pixels per sent pixel, x and y.
    pub scale: (f32, f32),
    pub original: (u32, u32),
}

/// Scales `rgb` as the detector would (its longest side to `size`) and
/// encodes it for the link.
pub fn prepare(
    from: &str,
    camera: &str,
    seq: u64,
    rgb: &RgbImage,
    size: usize,
    encoding: FrameEncoding,
) -> Result<Prepared, String> {
    let (w, h) = (rgb.width() as usize, rgb.height() as usize);
    let lb = Letterbox::new(w, h, size, LetterboxMode::Rect);
    let (sw, sh) = (lb.resized_w.max(1), lb.resized_h.max(1));
    let pixels = if (sw, sh) == (w, h) { rgb.as_raw().clone() } else { resize_bilinear(rgb.as_raw(), w, h, sw, sh) };
    let (wire, bytes) = match encoding {
        FrameEncoding::Raw => (WireEncoding::Rgb, pixels),
        FrameEncoding::Jpeg => {
            let mut out = Vec::with_capacity(pixels.len() / 8);
            let encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 85);
            encoder
                .write_image(&pixels, sw as u32, sh as u32, image::ExtendedColorType::Rgb8)
                .map_err(|e| format!("jpeg: {e}"))?;
            (WireEncoding::Jpeg, out)
        }
    };
    Ok(Prepared {
        request: FrameRequest {
            from: from.to_owned(),
            camera: camera.to_owned(),
            seq,
            width: sw as u32,
            height: sh as u32,
            encoding: wire,
            bytes,
        },
        scale: (w as f32 / sw as f32, h as f32 / sh as f32),
        original: (w as u32, h as u32),
    })
}

use image::ImageEncoder;

/// The image in a request from a peer, checked against its stated size.
pub fn decode_frame(request: &FrameRequest) -> Result<RgbImage, String> {
    let (w, h) = (request.width, request.height);
    if w == 0 || h == 0 || w > MAX_SIDE || h > MAX_SIDE {
        return Err(format!("frame of {w}x{h} refused: sides must be 1 to {MAX_SIDE}"));
    }
    match request.encoding {
        WireEncoding::Rgb => RgbImage::from_raw(w, h, request.bytes.clone())
            .ok_or_else(|| format!("frame of {w}x{h} has {} bytes, not {}", request.bytes.len(), w * h * 3)),
        WireEncoding::Jpeg => {
            let mut reader =
                image::ImageReader::with_format(std::io::Cursor::new(&request.bytes), image::ImageFormat::Jpeg);
            let mut limits = image::Limits::default();
            limits.max_image_width = Some(MAX_SIDE);
            limits.max_image_height = Some(MAX_SIDE);
            limits.max_alloc = Some(64 << 20);
            reader.limits(limits);
            let img = reader.decode().map_err(|e| format!("jpeg frame: {e}"))?.to_rgb8();
            if img.dimensions() != (w, h) {
                return Err(format!("jpeg frame is {}x{}, said {w}x{h}", img.width(), img.height()));
            }
            Ok(img)
        }
    }
}

impl From<&Detection> for WireDetection {
    fn from(d: &Detection) -> Self {
        Self { class_id: d.class_id as u16, confidence: d.confidence, bbox: d.bbox }
    }
}

/// Detections from a reply in the original frame's pixels; unknown classes
/// (a peer on another model) are left out.
pub fn detections_back(reply: &FrameReply, prepared: &Prepared) -> Vec<Detection> {
    let (sx, sy) = prepared.scale;
    let (w, h) = (prepared.original.0 as f32, prepared.original.1 as f32);
    reply
        .detections
        .iter()
        .filter_map(|d| {
            let class_name = crate::coco::CLASSES.get(d.class_id as usize)?;
            let [x1, y1, x2, y2] = d.bbox;
            Some(Detection {
                class_id: d.class_id as usize,
                class_name,
                confidence: d.confidence,
                bbox: [
                    (x1 * sx).clamp(0.0, w),
                    (y1 * sy).clamp(0.0, h),
                    (x2 * sx).clamp(0.0, w),
                    (y2 * sy).clamp(0.0, h),
                ],
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame() -> RgbImage {
        RgbImage::from_fn(640, 480, |x, y| image::Rgb([(x % 256) as u8, (y % 256) as u8, 90]))
    }

    #[test]
    fn a_raw_frame_is_scaled_to_the_input_and_boxes_come_back_in_original_pixels() {
        let prepared = prepare("edge", "yard", 7, &frame(), 320, FrameEncoding::Raw).unwrap();
        assert_eq!((prepared.request.width, prepared.request.height), (320, 240));
        assert_eq!(prepared.request.bytes.len(), 320 * 240 * 3);
        let bytes = Payload::ok(prepared.request.clone()).into_bytes();
        let back = Payload::<FrameRequest>::from_bytes(bytes).0.unwrap();
        let img = decode_frame(&back).unwrap();
        assert_eq!(img.dimensions(), (320, 240));
        let reply = FrameReply {
            node: "gpu".into(),
            detections: vec![WireDetection { class_id: 0, confidence: 0.9, bbox: [10.0, 20.0, 100.0, 240.0] }],
            inference_us: 1,
            queue_depth: 0,
            error: None,
        };
        let d = detections_back(&reply, &prepared);
        assert_eq!(d[0].class_name, "person");
        assert_eq!(d[0].bbox, [20.0, 40.0, 200.0, 480.0]);
    }

    #[test]
    fn a_jpeg_frame_is_smaller_and_decodes_to_its_stated_size() {
        let raw = prepare("edge", "yard", 1, &frame(), 320, FrameEncoding::Raw).unwrap();
        let jpeg = prepare("edge", "yard", 1, &frame(), 320, FrameEncoding::Jpeg).unwrap();
        assert!(jpeg.request.bytes.len() * 4 < raw.request.bytes.len(), "{}", jpeg.request.bytes.len());
        assert_eq!(decode_frame(&jpeg.request).unwrap().dimensions(), (320, 240));
    }

    #[test]
    fn hostile_bytes_are_an_error_not_a_panic() {
        assert!(Payload::<FrameRequest>::from_bytes(vec![0xff; 7]).0.is_err());
        let mut lying = prepare("edge", "yard", 1, &frame(), 320, FrameEncoding::Raw).unwrap().request;
        lying.height = 241;
        assert!(decode_frame(&lying).unwrap_err().contains("bytes"));
        lying.width = 100_000;
        assert!(decode_frame(&lying).unwrap_err().contains("refused"));
        let mut garbage = lying.clone();
        (garbage.width, garbage.height, garbage.encoding, garbage.bytes) = (8, 8, WireEncoding::Jpeg, vec![1, 2, 3]);
        assert!(decode_frame(&garbage).unwrap_err().contains("jpeg"));
    }
}
