//! A constant-velocity Kalman filter on boxes, as ByteTrack uses: state
//! `(cx, cy, a, h)` (centre, aspect ratio, height) and their velocities;
//! noise scaled by the box height so it works at any distance.

use nalgebra::{SMatrix, SVector};

type Vec8 = SVector<f32, 8>;
type Mat8 = SMatrix<f32, 8, 8>;
type Vec4 = SVector<f32, 4>;
type Mat4 = SMatrix<f32, 4, 4>;
type Mat48 = SMatrix<f32, 4, 8>;

const STD_POSITION: f32 = 1.0 / 20.0;
const STD_VELOCITY: f32 = 1.0 / 160.0;

#[derive(Debug, Clone)]
pub struct BoxFilter {
    mean: Vec8,
    covariance: Mat8,
}

/// `[x1, y1, x2, y2]` to `(cx, cy, aspect, h)`.
fn measure(b: [f32; 4]) -> Vec4 {
    let (w, h) = ((b[2] - b[0]).max(1e-3), (b[3] - b[1]).max(1e-3));
    Vec4::new(b[0] + w / 2.0, b[1] + h / 2.0, w / h, h)
}

fn motion() -> Mat8 {
    let mut f = Mat8::identity();
    for i in 0..4 {
        f[(i, i + 4)] = 1.0;
    }
    f
}

fn observation() -> Mat48 {
    let mut h = Mat48::zeros();
    for i in 0..4 {
        h[(i, i)] = 1.0;
    }
    h
}

impl BoxFilter {
    pub fn new(b: [f32; 4]) -> Self {
        let m = measure(b);
        let mut mean = Vec8::zeros();
        mean.fixed_rows_mut::<4>(0).copy_from(&m);
        let h = m[3];
        let std = [
            2.0 * STD_POSITION * h,
            2.0 * STD_POSITION * h,
            1e-2,
            2.0 * STD_POSITION * h,
            10.0 * STD_VELOCITY * h,
            10.0 * STD_VELOCITY * h,
            1e-5,
            10.0 * STD_VELOCITY * h,
        ];
        Self { mean, covariance: Mat8::from_diagonal(&Vec8::from_iterator(std.iter().map(|s| s * s))) }
    }

    /// Advances one step.
    pub fn predict(&mut self) {
        let h = self.mean[3];
        let std = [
            STD_POSITION * h,
            STD_POSITION * h,
            1e-2,
            STD_POSITION * h,
            STD_VELOCITY * h,
            STD_VELOCITY * h,
            1e-5,
            STD_VELOCITY * h,
        ];
        let q = Mat8::from_diagonal(&Vec8::from_iterator(std.iter().map(|s| s * s)));
        let f = motion();
        self.mean = f * self.mean;
        self.covariance = f * self.covariance * f.transpose() + q;
    }

    /// Corrects with a measured box.
    pub fn update(&mut self, b: [f32; 4]) {
        let z = measure(b);
        let hm = observation();
        let h = self.mean[3];
        let std = [STD_POSITION * h, STD_POSITION * h, 1e-1, STD_POSITION * h];
        let r = Mat4::from_diagonal(&Vec4::from_iterator(std.iter().map(|s| s * s)));
        let s = hm * self.covariance * hm.transpose() + r;
        let Some(s_inv) = s.try_inverse() else { return };
        let gain = self.covariance * hm.transpose() * s_inv;
        self.mean += gain * (z - hm * self.mean);
        self.covariance = (Mat8::identity() - gain * hm) * self.covariance;
    }

    /// The current box estimate, `[x1, y1, x2, y2]`.
    pub fn bbox(&self) -> [f32; 4] {
        let (cx, cy, a, h) = (self.mean[0], self.mean[1], self.mean[2], self.mean[3]);
        let w = a * h;
        [cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_a_box_moving_at_constant_speed() {
        let at = |t: f32| [10.0 + 5.0 * t, 20.0, 40.0 + 5.0 * t, 80.0];
        let mut f = BoxFilter::new(at(0.0));
        for t in 1..30 {
            f.predict();
            f.update(at(t as f32));
        }
        f.predict();
        let predicted = f.bbox();
        let truth = at(30.0);
        assert!((predicted[0] - truth[0]).abs() < 1.0, "{predicted:?} vs {truth:?}");
    }
}
