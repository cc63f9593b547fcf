//! Drawing boxes and labels on RGB images, for `detect --annotate` and alert
//! snapshots. Labels use the public-domain 8×8 bitmap font from `font8x8`, so
//! no font file ships with the service.

use font8x8::{BASIC_FONTS, UnicodeFonts};
use image::{Rgb, RgbImage};

/// A colour per class id that stays the same across runs.
pub fn class_colour(class_id: usize) -> Rgb<u8> {
    const PALETTE: [[u8; 3]; 8] = [
        [255, 56, 56],
        [255, 157, 151],
        [255, 112, 31],
        [255, 178, 29],
        [72, 249, 10],
        [26, 147, 52],
        [0, 194, 255],
        [132, 56, 255],
    ];
    Rgb(PALETTE[class_id % PALETTE.len()])
}

/// A rectangle outline, clipped to the image.
pub fn draw_box(img: &mut RgbImage, bbox: [f32; 4], colour: Rgb<u8>, thickness: u32) {
    let (w, h) = (img.width() as i64, img.height() as i64);
    if w == 0 || h == 0 {
        return;
    }
    let clamp = |v: f32, max: i64| (v.round() as i64).clamp(0, max - 1);
    let (x1, y1, x2, y2) = (clamp(bbox[0], w), clamp(bbox[1], h), clamp(bbox[2], w), clamp(bbox[3], h));
    for t in 0..thickness as i64 {
        for x in x1..=x2 {
            for y in [y1 + t, y2 - t] {
                if (0..h).contains(&y) {
                    img.put_pixel(x as u32, y as u32, colour);
                }
            }
        }
        for y in y1..=y2 {
            for x in [x1 + t, x2 - t] {
                if (0..w).contains(&x) {
                    img.put_pixel(x as u32, y as u32, colour);
                }
            }
        }
    }
}

/// White text on a `background` band whose top-left corner is at `(x, y)`.
pub fn draw_label(img: &mut RgbImage, x: i64, y: i64, text: &str, background: Rgb<u8>) {
    let (w, h) = (img.width() as i64, img.height() as i64);
    let band_w = text.chars().count() as i64 * 8 + 4;
    for py in y..y + 10 {
        for px in x..x + band_w {
            if (0..w).contains(&px) && (0..h).contains(&py) {
                img.put_pixel(px as u32, py as u32, background);
            }
        }
    }
    for (i, ch) in text.chars().enumerate() {
        let Some(glyph) = BASIC_FONTS.get(ch) else {
            continue;
        };
        for (row, bits) in glyph.iter().enumerate() {
            for col in 0..8 {
                if bits & (1 << col) != 0 {
                    let (px, py) = (x + 2 + i as i64 * 8 + col, y + 1 + row as i64);
                    if (0..w).contains(&px) && (0..h).contains(&py) {
                        img.put_pixel(px as u32, py as u32, Rgb([255, 255, 255]));
                    }
                }
            }
        }
    }
}

/// A labelled box: `person 0.88` above the box, or inside it at the top edge.
pub fn draw_detection(img: &mut RgbImage, bbox: [f32; 4], label: &str, colour: Rgb<u8>) {
    draw_box(img, bbox, colour, 2);
    let y = if bbox[1] >= 10.0 { bbox[1] as i64 - 10 } else { bbox[1] as i64 };
    draw_label(img, bbox[0] as i64, y, label, colour);
}

/// Outlines a closed polygon (a zone) one pixel wide.
pub fn draw_polygon(img: &mut RgbImage, points: &[(f32, f32)], colour: Rgb<u8>) {
    // One step per pixel, but never more than the image could show: a point
    // far outside the frame must not make this loop for ever.
    let most_steps = 4 * (img.width() + img.height()).max(1) as usize;
    for (i, &(x0, y0)) in points.iter().enumerate() {
        let (x1, y1) = points[(i + 1) % points.len()];
        if ![x0, y0, x1, y1].iter().all(|v| v.is_finite()) {
            continue;
        }
        let steps = ((x1 - x0).abs().max((y1 - y0).abs()) as usize).clamp(1, most_steps);
        for s in 0..=steps {
            let f = s as f32 / steps as f32;
            let (x, y) = (x0 + (x1 - x0) * f, y0 + (y1 - y0) * f);
            draw_box(img, [x, y, x + 1.0, y + 1.0], colour, 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boxes_and_labels_touch_the_expected_pixels() {
        let mut img = RgbImage::new(40, 40);
        draw_box(&mut img, [5.0, 5.0, 30.0, 20.0], Rgb([255, 0, 0]), 1);
        assert_eq!(img.get_pixel(5, 5), &Rgb([255, 0, 0]));
        assert_eq!(img.get_pixel(30, 20), &Rgb([255, 0, 0]));
        assert_eq!(img.get_pixel(15, 12), &Rgb([0, 0, 0]));
        // Out-of-range boxes are clipped, not a panic.
        draw_box(&mut img, [-10.0, -10.0, 100.0, 100.0], Rgb([0, 255, 0]), 3);
        draw_label(&mut img, 35, 35, "person 0.88", Rgb([0, 0, 255]));
        assert_eq!(img.get_pixel(36, 36), &Rgb([0, 0, 255]));
    }
}
