//! The last analysed frame of every camera, with what was found in it, for
//! the live page (`/api/cameras/{id}/latest.jpg`). Kept as it comes from
//! the detector (shared, not copied) and encoded only when asked for.

use crate::detect::Detection;
use crate::pipeline::{DetectionSink, Detections};
use image::RgbImage;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

#[derive(Clone)]
pub struct LatestFrame {
    pub image: Arc<RgbImage>,
    pub detections: Vec<Detection>,
    pub captured: SystemTime,
}

/// Per camera, the latest analysed frame. Cloning shares it.
#[derive(Clone, Default)]
pub struct LatestFrames(Arc<Mutex<HashMap<Arc<str>, LatestFrame>>>);

impl LatestFrames {
    pub fn get(&self, camera: &str) -> Option<LatestFrame> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).get(camera).cloned()
    }

    fn put(&self, d: &Detections) {
        let frame =
            LatestFrame { image: d.frame.rgb.clone(), detections: d.detections.clone(), captured: d.frame.captured };
        self.0.lock().unwrap_or_else(|e| e.into_inner()).insert(d.frame.camera.clone(), frame);
    }

    /// Forgets cameras that are no longer configured.
    pub fn retain(&self, cameras: &[String]) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).retain(|k, _| cameras.iter().any(|c| **c == **k));
    }
}

/// The narrowest a frame is scaled to.
pub const MIN_WIDTH: u32 = 64;

/// Keeps each frame as the latest, then passes it on.
pub struct KeepLatest {
    pub latest: LatestFrames,
    pub next: Arc<dyn DetectionSink>,
}

impl DetectionSink for KeepLatest {
    fn publish(&self, detections: Detections) {
        self.latest.put(&detections);
        self.next.publish(detections);
    }
}

/// JPEG of `frame`, with its boxes (and the camera's `zones`) drawn when
/// asked, scaled down to `width` pixels when that is narrower (a phone's
/// grid of cameras needs a fraction of the bytes).
pub fn jpeg(
    frame: &LatestFrame,
    boxes: bool,
    zones: &[Vec<(f32, f32)>],
    width: Option<u32>,
) -> Result<Vec<u8>, image::ImageError> {
    let drawn;
    let image: &RgbImage = if boxes {
        let mut canvas = (*frame.image).clone();
        for zone in zones {
            crate::draw::draw_polygon(&mut canvas, zone, image::Rgb([255, 255, 0]));
        }
        for d in &frame.detections {
            let label = format!("{} {:.2}", d.class_name, d.confidence);
            crate::draw::draw_detection(&mut canvas, d.bbox, &label, crate::draw::class_colour(d.class_id));
        }
        drawn = canvas;
        &drawn
    } else {
        &frame.image
    };
    let scaled;
    let image: &RgbImage = match width.map(|w| w.max(MIN_WIDTH)) {
        Some(w) if w < image.width() => {
            let h = (u64::from(image.height()) * u64::from(w) / u64::from(image.width())).max(1) as u32;
            scaled = image::imageops::resize(image, w, h, image::imageops::FilterType::Triangle);
            &scaled
        }
        _ => image,
    };
    let mut out = std::io::Cursor::new(Vec::new());
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 80).encode_image(image)?;
    Ok(out.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_is_encoded_as_it_is_or_narrower_never_wider() {
        let image = RgbImage::from_fn(640, 480, |x, y| image::Rgb([x as u8, y as u8, 0]));
        let frame = LatestFrame { image: Arc::new(image), detections: Vec::new(), captured: SystemTime::now() };
        let size = |width| {
            let jpeg = jpeg(&frame, true, &[vec![(10.0, 10.0), (100.0, 10.0), (50.0, 90.0)]], width).unwrap();
            let decoded = image::load_from_memory(&jpeg).unwrap();
            (decoded.width(), decoded.height())
        };
        assert_eq!(size(None), (640, 480));
        assert_eq!(size(Some(320)), (320, 240));
        assert_eq!(size(Some(4000)), (640, 480));
        assert_eq!(size(Some(1)), (MIN_WIDTH, 48));
    }
}
