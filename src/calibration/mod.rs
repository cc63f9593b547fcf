//! Ground-plane calibration: a homography from image pixels (of the analysed
//! frame, as in snapshots) to metres on the ground, fitted by normalised DLT
//! (a least-squares solution through the SVD) from at least four point pairs,
//! plus named reference points (a door, a gate) to measure distances to.
//!
//! `config/calibration/<camera>.yaml`:
//! ```yaml
//! points:                       # image pixel -> ground metres
//!   - { image: [102, 410], ground: [0.0, 0.0] }
//!   - ...
//! references:
//!   door: [2.0, 8.5]
//! ```

use nalgebra::{DMatrix, Matrix3, Vector3};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CalibrationError {
    #[error("{file}: {reason}")]
    File { file: String, reason: String },
    #[error("need at least 4 point pairs, got {0}")]
    TooFewPoints(usize),
    #[error("degenerate {0} points: they lie (nearly) on one line, so they do not fix a plane")]
    Collinear(&'static str),
    #[error("the points do not determine a homography (singular fit)")]
    Singular,
}

#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PointPair {
    /// Pixel in the analysed frame.
    pub image: [f64; 2],
    /// Metres on the ground.
    pub ground: [f64; 2],
}

/// What a calibration file holds.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CalibrationFile {
    pub points: Vec<PointPair>,
    #[serde(default)]
    pub references: BTreeMap<String, [f64; 2]>,
    /// Written by `calibrate`; refitted from `points` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub homography: Option<[[f64; 3]; 3]>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rms_error_m: Option<f64>,
}

/// Farthest a ground point, reference or ground zone point may be from the
/// origin, in metres (config validation checks zones against it too).
pub const MAX_GROUND_METRES: f64 = 10_000.0;

impl CalibrationFile {
    /// Every number finite; image points inside the analysed frame, ground
    /// points and references within [`MAX_GROUND_METRES`].
    fn check_bounds(&self) -> Result<(), String> {
        let frame = f64::from(crate::service::topology::ANALYSIS_SIZE);
        for (i, pair) in self.points.iter().enumerate() {
            if !pair.image.iter().all(|v| (0.0..=frame).contains(v)) {
                return Err(format!(
                    "points[{i}].image: {:?} must be inside the analysed frame (0 to {frame})",
                    pair.image
                ));
            }
            if !pair.ground.iter().all(|v| v.abs() <= MAX_GROUND_METRES) {
                return Err(format!("points[{i}].ground: {:?} must be within {MAX_GROUND_METRES} m", pair.ground));
            }
        }
        for (name, point) in &self.references {
            if !point.iter().all(|v| v.abs() <= MAX_GROUND_METRES) {
                return Err(format!("references.{name}: {point:?} must be within {MAX_GROUND_METRES} m"));
            }
        }
        if let Some(h) = &self.homography
            && !h.iter().flatten().all(|v| v.is_finite())
        {
            return Err("homography: every entry must be a finite number".into());
        }
        Ok(())
    }
}

/// Image-to-ground mapping of one camera.
#[derive(Debug, Clone, PartialEq)]
pub struct Calibration {
    pub homography: Homography,
    pub references: BTreeMap<String, (f64, f64)>,
}

/// The demo camera's calibration, shipped with the embedded default config.
pub const EMBEDDED_DEMO: &str = include_str!("../../config/calibration/demo.yaml");

/// Camera `camera`'s calibration from `dir`; when running on the embedded
/// default config, its demo camera's calibration is embedded too.
pub fn load_camera(dir: &Path, camera: &str, embedded_default: bool) -> Result<Calibration, CalibrationError> {
    let path = path_for(dir, camera);
    if embedded_default && camera == "demo" && !path.exists() {
        return Calibration::parse(EMBEDDED_DEMO, "<embedded demo calibration>");
    }
    Calibration::load(&path)
}

/// Where camera `id`'s calibration lives.
pub fn path_for(dir: &Path, camera: &str) -> PathBuf {
    dir.join(format!("{camera}.yaml"))
}

impl Calibration {
    /// Loads and fits `path`.
    pub fn load(path: &Path) -> Result<Self, CalibrationError> {
        let file = path.display().to_string();
        let text = crate::config::limits::read(path).map_err(|e| CalibrationError::File {
            file: file.clone(),
            reason: match e {
                crate::config::limits::ReadError::Io(e) => e.to_string(),
                crate::config::limits::ReadError::Refused(p) => p.to_string(),
            },
        })?;
        Self::parse(&text, &file)
    }

    /// Parses and fits a calibration file's text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Self, CalibrationError> {
        let parsed: CalibrationFile =
            parse_yaml(text).map_err(|reason| CalibrationError::File { file: file.to_owned(), reason })?;
        parsed.check_bounds().map_err(|reason| CalibrationError::File { file: file.to_owned(), reason })?;
        let homography = match parsed.homography {
            Some(m) => Homography(Matrix3::from_fn(|r, c| m[r][c])),
            None => Homography::fit(&parsed.points)?,
        };
        Ok(Self { homography, references: parsed.references.into_iter().map(|(k, v)| (k, (v[0], v[1]))).collect() })
    }

    /// Distance in metres from an image point to a named reference (the
    /// first one when `reference` is `None`).
    pub fn distance_to(&self, image: (f32, f32), reference: Option<&str>) -> Option<f64> {
        let target = match reference {
            Some(name) => *self.references.get(name)?,
            None => *self.references.values().next()?,
        };
        let (x, y) = self.homography.project((image.0 as f64, image.1 as f64))?;
        Some(((x - target.0).powi(2) + (y - target.1).powi(2)).sqrt())
    }
}

/// YAML through the `config` crate's parser, so no second YAML library is needed.
fn parse_yaml<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, String> {
    // The same bounds as config.yaml: no alias bombs, no deep nesting.
    crate::config::limits::check_shape(text).map_err(|p| p.to_string())?;
    let layered = config::Config::builder()
        .add_source(config::File::from_str(text, config::FileFormat::Yaml))
        .build()
        .map_err(|e| e.to_string())?;
    let value: serde_json::Value = layered.try_deserialize().map_err(|e| e.to_string())?;
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        format!("{path}: {}", e.into_inner())
    })
}

/// A plane-to-plane projective map.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Homography(pub Matrix3<f64>);

/// Translates to the centroid and scales to mean distance √2 (Hartley).
fn normaliser(points: &[[f64; 2]]) -> Matrix3<f64> {
    let n = points.len() as f64;
    let (cx, cy) = points.iter().fold((0.0, 0.0), |(x, y), p| (x + p[0] / n, y + p[1] / n));
    let mean_dist = points.iter().map(|p| ((p[0] - cx).powi(2) + (p[1] - cy).powi(2)).sqrt()).sum::<f64>() / n;
    let s = if mean_dist > 0.0 { std::f64::consts::SQRT_2 / mean_dist } else { 1.0 };
    Matrix3::new(s, 0.0, -s * cx, 0.0, s, -s * cy, 0.0, 0.0, 1.0)
}

/// Whether the points lie (nearly) on one line: the smaller principal axis of
/// their spread is tiny next to the larger.
fn collinear(points: &[[f64; 2]]) -> bool {
    let n = points.len() as f64;
    let (cx, cy) = points.iter().fold((0.0, 0.0), |(x, y), p| (x + p[0] / n, y + p[1] / n));
    let (mut sxx, mut syy, mut sxy) = (0.0, 0.0, 0.0);
    for p in points {
        let (dx, dy) = (p[0] - cx, p[1] - cy);
        sxx += dx * dx;
        syy += dy * dy;
        sxy += dx * dy;
    }
    let trace = sxx + syy;
    let det = sxx * syy - sxy * sxy;
    let disc = ((trace / 2.0).powi(2) - det).max(0.0).sqrt();
    let (big, small) = (trace / 2.0 + disc, trace / 2.0 - disc);
    big <= 0.0 || small / big < 1e-6
}

impl Homography {
    /// Fits image → ground from at least four pairs.
    pub fn fit(pairs: &[PointPair]) -> Result<Self, CalibrationError> {
        if pairs.len() < 4 {
            return Err(CalibrationError::TooFewPoints(pairs.len()));
        }
        let image: Vec<[f64; 2]> = pairs.iter().map(|p| p.image).collect();
        let ground: Vec<[f64; 2]> = pairs.iter().map(|p| p.ground).collect();
        if collinear(&image) {
            return Err(CalibrationError::Collinear("image"));
        }
        if collinear(&ground) {
            return Err(CalibrationError::Collinear("ground"));
        }
        let (ti, tg) = (normaliser(&image), normaliser(&ground));
        let mut a = DMatrix::<f64>::zeros(2 * pairs.len(), 9);
        for (i, p) in pairs.iter().enumerate() {
            let u = ti * Vector3::new(p.image[0], p.image[1], 1.0);
            let v = tg * Vector3::new(p.ground[0], p.ground[1], 1.0);
            let (x, y, w) = (u[0] / u[2], u[1] / u[2], 1.0);
            let (xp, yp) = (v[0] / v[2], v[1] / v[2]);
            let r1 = [0.0, 0.0, 0.0, -x, -y, -w, yp * x, yp * y, yp * w];
            let r2 = [x, y, w, 0.0, 0.0, 0.0, -xp * x, -xp * y, -xp * w];
            for c in 0..9 {
                a[(2 * i, c)] = r1[c];
                a[(2 * i + 1, c)] = r2[c];
            }
        }
        // The least-squares solution of A h = 0 with |h| = 1 is the right
        // singular vector of the smallest singular value (of AᵀA, to get all 9).
        let ata = a.transpose() * &a;
        let svd = ata.svd(true, true);
        let v_t = svd.v_t.ok_or(CalibrationError::Singular)?;
        let (min_index, _) = svd
            .singular_values
            .iter()
            .enumerate()
            .min_by(|a, b| a.1.total_cmp(b.1))
            .ok_or(CalibrationError::Singular)?;
        let h = v_t.row(min_index);
        let hn = Matrix3::new(h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7], h[8]);
        let tg_inv = tg.try_inverse().ok_or(CalibrationError::Singular)?;
        let mut m = tg_inv * hn * ti;
        let scale = m[(2, 2)];
        if scale.abs() < 1e-12 {
            return Err(CalibrationError::Singular);
        }
        m /= scale;
        Ok(Self(m))
    }

    /// Maps an image point to the ground; `None` on the horizon line.
    pub fn project(&self, (x, y): (f64, f64)) -> Option<(f64, f64)> {
        let p = self.0 * Vector3::new(x, y, 1.0);
        (p[2].abs() > 1e-12).then(|| (p[0] / p[2], p[1] / p[2]))
    }

    /// Ground-distance error of each pair, in metres.
    pub fn errors(&self, pairs: &[PointPair]) -> Vec<f64> {
        pairs
            .iter()
            .map(|p| {
                self.project((p.image[0], p.image[1]))
                    .map_or(f64::INFINITY, |(x, y)| ((x - p.ground[0]).powi(2) + (y - p.ground[1]).powi(2)).sqrt())
            })
            .collect()
    }

    pub fn rms(&self, pairs: &[PointPair]) -> f64 {
        let e = self.errors(pairs);
        (e.iter().map(|v| v * v).sum::<f64>() / e.len().max(1) as f64).sqrt()
    }

    pub fn rows(&self) -> [[f64; 3]; 3] {
        std::array::from_fn(|r| std::array::from_fn(|c| self.0[(r, c)]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs_from(h: &Matrix3<f64>, image: &[[f64; 2]]) -> Vec<PointPair> {
        image
            .iter()
            .map(|&p| {
                let g = h * Vector3::new(p[0], p[1], 1.0);
                PointPair { image: p, ground: [g[0] / g[2], g[1] / g[2]] }
            })
            .collect()
    }

    #[test]
    fn a_known_transform_is_recovered() {
        let truth = Matrix3::new(0.02, 0.003, -3.0, -0.001, 0.05, -8.0, 0.00002, 0.0009, 1.0);
        let image = [[50.0, 400.0], [600.0, 420.0], [580.0, 200.0], [90.0, 180.0], [320.0, 300.0], [200.0, 450.0]];
        let pairs = pairs_from(&truth, &image);
        let fitted = Homography::fit(&pairs).unwrap();
        for r in 0..3 {
            for c in 0..3 {
                assert!((fitted.0[(r, c)] - truth[(r, c)]).abs() < 1e-6, "{fitted:?}");
            }
        }
        assert!(fitted.rms(&pairs) < 1e-6);
    }

    #[test]
    fn noisy_points_give_a_reasonable_rms() {
        let truth = Matrix3::new(0.02, 0.003, -3.0, -0.001, 0.05, -8.0, 0.00002, 0.0009, 1.0);
        let image: Vec<[f64; 2]> =
            (0..12).map(|i| [40.0 + 50.0 * i as f64, 150.0 + 25.0 * ((i * 7) % 12) as f64]).collect();
        let mut pairs = pairs_from(&truth, &image);
        for (i, p) in pairs.iter_mut().enumerate() {
            let n = if i % 2 == 0 { 0.05 } else { -0.05 };
            p.ground[0] += n;
            p.ground[1] -= n;
        }
        let rms = Homography::fit(&pairs).unwrap().rms(&pairs);
        assert!(rms > 0.0 && rms < 0.1, "rms {rms} m for 5 cm of noise");
    }

    #[test]
    fn degenerate_input_is_rejected() {
        let line: Vec<PointPair> = (0..5)
            .map(|i| PointPair { image: [10.0 * i as f64, 20.0 * i as f64], ground: [i as f64, (i * i) as f64] })
            .collect();
        assert_eq!(Homography::fit(&line), Err(CalibrationError::Collinear("image")));
        assert_eq!(Homography::fit(&line[..3]), Err(CalibrationError::TooFewPoints(3)));
    }
}
