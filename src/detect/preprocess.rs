//! Pre-processing exactly as Ultralytics does it, because the reference
//! numbers depend on it: letterbox with the aspect ratio kept, OpenCV-style
//! bilinear resize, pad value 114, centred; RGB, /255, NCHW.

use candle_core::{Device, Tensor};
use image::RgbImage;

/// How far the letterbox pads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum LetterboxMode {
    /// Only up to a multiple of 32 (Ultralytics' predict default): less work for wide frames.
    #[default]
    Rect,
    /// To size × size.
    Square,
}

const STRIDE: usize = 32;
const PAD_VALUE: u8 = 114;

/// Where the original image sits inside the network input.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Letterbox {
    pub orig_w: usize,
    pub orig_h: usize,
    /// Size of the resized image before padding.
    pub resized_w: usize,
    pub resized_h: usize,
    pub input_w: usize,
    pub input_h: usize,
    pub left: usize,
    pub top: usize,
}

impl Letterbox {
    /// Ultralytics' `LetterBox` geometry for an image of `w`×`h`.
    pub fn new(w: usize, h: usize, size: usize, mode: LetterboxMode) -> Self {
        let r = (size as f64 / h as f64).min(size as f64 / w as f64);
        // Python's round() rounds halves to even.
        let resized_w = (w as f64 * r).round_ties_even() as usize;
        let resized_h = (h as f64 * r).round_ties_even() as usize;
        let (mut dw, mut dh) = (size - resized_w.min(size), size - resized_h.min(size));
        if mode == LetterboxMode::Rect {
            dw %= STRIDE;
            dh %= STRIDE;
        }
        let (dw, dh) = (dw as f64 / 2.0, dh as f64 / 2.0);
        let left = (dw - 0.1).round_ties_even() as usize;
        let right = (dw + 0.1).round_ties_even() as usize;
        let top = (dh - 0.1).round_ties_even() as usize;
        let bottom = (dh + 0.1).round_ties_even() as usize;
        Self {
            orig_w: w,
            orig_h: h,
            resized_w,
            resized_h,
            input_w: resized_w + left + right,
            input_h: resized_h + top + bottom,
            left,
            top,
        }
    }

    /// Maps a box in network-input pixels back to original-image pixels,
    /// clipped to the image (Ultralytics' `scale_boxes`).
    pub fn to_original(&self, b: [f32; 4]) -> [f32; 4] {
        let gain = (self.input_h as f64 / self.orig_h as f64).min(self.input_w as f64 / self.orig_w as f64);
        let pad_x = ((self.input_w as f64 - self.orig_w as f64 * gain) / 2.0 - 0.1).round_ties_even();
        let pad_y = ((self.input_h as f64 - self.orig_h as f64 * gain) / 2.0 - 0.1).round_ties_even();
        let (w, h) = (self.orig_w as f64, self.orig_h as f64);
        let x = |v: f32| ((v as f64 - pad_x) / gain).clamp(0.0, w) as f32;
        let y = |v: f32| ((v as f64 - pad_y) / gain).clamp(0.0, h) as f32;
        [x(b[0]), y(b[1]), x(b[2]), y(b[3])]
    }

    /// Letterboxes `img` into an RGB buffer of `input_w × input_h`.
    pub fn apply(&self, img: &RgbImage) -> Vec<u8> {
        let resized = if (img.width() as usize, img.height() as usize) == (self.resized_w, self.resized_h) {
            img.as_raw().clone()
        } else {
            resize_bilinear(img.as_raw(), self.orig_w, self.orig_h, self.resized_w, self.resized_h)
        };
        let mut out = vec![PAD_VALUE; self.input_w * self.input_h * 3];
        let row = self.resized_w * 3;
        for y in 0..self.resized_h {
            let dst = ((y + self.top) * self.input_w + self.left) * 3;
            out[dst..dst + row].copy_from_slice(&resized[y * row..(y + 1) * row]);
        }
        out
    }
}

/// The network input for `img`: `[1, 3, h, w]` f32 in `[0, 1]`.
pub fn to_input(
    img: &RgbImage,
    size: usize,
    mode: LetterboxMode,
    device: &Device,
) -> candle_core::Result<(Tensor, Letterbox)> {
    let lb = Letterbox::new(img.width() as usize, img.height() as usize, size, mode);
    let rgb = lb.apply(img);
    Ok((rgb_to_tensor(&rgb, lb.input_w, lb.input_h, device)?, lb))
}

/// Interleaved RGB8 to planar `[1, 3, h, w]` f32 / 255.
pub fn rgb_to_tensor(rgb: &[u8], w: usize, h: usize, device: &Device) -> candle_core::Result<Tensor> {
    let plane = w * h;
    let mut planar = vec![0f32; 3 * plane];
    let (r, rest) = planar.split_at_mut(plane);
    let (g, b) = rest.split_at_mut(plane);
    for (i, px) in rgb.chunks_exact(3).enumerate() {
        r[i] = px[0] as f32 / 255.0;
        g[i] = px[1] as f32 / 255.0;
        b[i] = px[2] as f32 / 255.0;
    }
    Tensor::from_vec(planar, (1, 3, h, w), device)
}

/// OpenCV's `INTER_LINEAR` for 8-bit images: half-pixel centres, edge
/// clamping, 11-bit fixed-point weights, and the rounding of its SIMD
/// vertical pass, so results match `cv2.resize` to the least significant bit
/// in the common cases.
pub fn resize_bilinear(src: &[u8], sw: usize, sh: usize, dw: usize, dh: usize) -> Vec<u8> {
    const BITS: u32 = 11;
    const SCALE: f32 = (1 << BITS) as f32;
    // (source index, weight of that index, weight of the next) per destination index.
    let taps = |src_len: usize, dst_len: usize| -> Vec<(usize, i32, i32)> {
        let scale = 1.0 / (dst_len as f64 / src_len as f64);
        (0..dst_len)
            .map(|d| {
                let f = ((d as f64 + 0.5) * scale - 0.5) as f32;
                let mut s = f.floor() as i64;
                let mut frac = f - s as f32;
                if s < 0 {
                    s = 0;
                    frac = 0.0;
                }
                if s >= src_len as i64 - 1 {
                    s = src_len as i64 - 1;
                    frac = 0.0;
                }
                let a1 = (frac * SCALE).round() as i32;
                let a0 = ((1.0 - frac) * SCALE).round() as i32;
                (s as usize, a0, a1)
            })
            .collect()
    };
    let xs = taps(sw, dw);
    let ys = taps(sh, dh);

    // Horizontal pass for one source row, values scaled by 2^11.
    let hrow = |y: usize, out: &mut [i32]| {
        let row = &src[y * sw * 3..(y + 1) * sw * 3];
        for (dx, &(sx, a0, a1)) in xs.iter().enumerate() {
            let next = (sx + 1).min(sw - 1);
            for c in 0..3 {
                out[dx * 3 + c] = row[sx * 3 + c] as i32 * a0 + row[next * 3 + c] as i32 * a1;
            }
        }
    };
    let mut out = vec![0u8; dw * dh * 3];
    // The two most recent horizontally resized source rows: consecutive
    // output rows mostly reuse them.
    let mut slots = [(usize::MAX, vec![0i32; dw * 3]), (usize::MAX, vec![0i32; dw * 3])];
    for (dy, &(sy, b0, b1)) in ys.iter().enumerate() {
        let sy1 = (sy + 1).min(sh - 1);
        for r in [sy, sy1] {
            if slots.iter().all(|(held, _)| *held != r) {
                let victim = usize::from(slots[0].0 == sy || slots[0].0 == sy1);
                hrow(r, &mut slots[victim].1);
                slots[victim].0 = r;
            }
        }
        let row = |r: usize| {
            if slots[0].0 == r { &slots[0].1 } else { &slots[1].1 }
        };
        let (row0, row1) = (row(sy), row(sy1));
        let dst = &mut out[dy * dw * 3..(dy + 1) * dw * 3];
        for (i, d) in dst.iter_mut().enumerate() {
            let v = (((b0 * (row0[i] >> 4)) >> 16) + ((b1 * (row1[i] >> 4)) >> 16) + 2) >> 2;
            *d = v.clamp(0, 255) as u8;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn letterbox_geometry_matches_ultralytics() {
        // bus.jpg is 810×1080: rect 640 gives 480×640 input, square pads to 640×640.
        let rect = Letterbox::new(810, 1080, 640, LetterboxMode::Rect);
        assert_eq!((rect.input_w, rect.input_h, rect.left, rect.top), (480, 640, 0, 0));
        let square = Letterbox::new(810, 1080, 640, LetterboxMode::Square);
        assert_eq!((square.input_w, square.input_h, square.left, square.top), (640, 640, 80, 0));
        // chelsea.png is 451×300: rect 640 gives 640×448 (resized 640×426, 11 above, 11 below).
        let cat = Letterbox::new(451, 300, 640, LetterboxMode::Rect);
        assert_eq!((cat.resized_w, cat.resized_h, cat.input_w, cat.input_h, cat.top), (640, 426, 640, 448, 11));
    }

    #[test]
    fn boxes_map_back_to_the_original() {
        let lb = Letterbox::new(451, 300, 640, LetterboxMode::Rect);
        let gain = 640.0 / 451.0;
        let b = lb.to_original([100.0 * gain, 11.0 + 50.0 * gain, 200.0 * gain, 11.0 + 80.0 * gain]);
        for (got, want) in b.iter().zip([100.0, 50.0, 200.0, 80.0]) {
            assert!((got - want).abs() < 1e-3, "{b:?}");
        }
    }

    #[test]
    fn bilinear_halving_averages_two_by_two_blocks() {
        // 4×2 image, one channel value per pixel repeated over RGB.
        let values = [10u8, 20, 30, 50, 4, 100, 200, 255];
        let src: Vec<u8> = values.iter().flat_map(|&v| [v, v, v]).collect();
        let out = resize_bilinear(&src, 4, 2, 2, 1);
        assert_eq!(out[0], ((10 + 20 + 4 + 100 + 2) >> 2) as u8);
        assert_eq!(out[3], ((30 + 50 + 200 + 255 + 2) >> 2) as u8);
    }

    #[test]
    fn identity_resize_is_exact() {
        let src: Vec<u8> = (0..5 * 3 * 3).map(|i| (i * 7 % 256) as u8).collect();
        assert_eq!(resize_bilinear(&src, 5, 3, 5, 3), src);
    }
}
