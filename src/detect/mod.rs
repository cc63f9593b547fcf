//! Object detection: YOLOv8 on candle, written here.
//!
//! - `model.rs`: the network;
//! - `preprocess.rs` / `postprocess.rs`: Ultralytics-exact letterbox, decode and NMS;
//! - `weights.rs`: finding weights (a path, `models/`, or a download from the hub);
//! - `detector.rs`: the three put together behind `Detector::detect`.

mod blocked;
pub mod detector;
pub mod int8;
pub use smart_cctv_fastconv as fastconv;
pub mod model;
pub mod postprocess;
pub mod preprocess;
pub mod profile;
pub mod weights;

pub use detector::{Detector, DetectorOptions, device_from_config};
pub use postprocess::{DecodeOptions, Detection};
pub use preprocess::LetterboxMode;

/// Everything that can go wrong finding, loading or running a model.
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    #[error("weights file {path}: {reason}")]
    Weights { path: String, reason: String },
    #[error("model `{name}`: {reason}")]
    Model { name: String, reason: String },
    #[error("device `{device}`: {reason}")]
    Device { device: String, reason: String },
    #[error("image {path}: {reason}")]
    Image { path: String, reason: String },
    #[error("inference failed: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("int8: {0}")]
    Quantize(String),
}
