//! `Detector`: weights, device and thresholds, loaded once, run per image.

use super::DetectError;
use super::model::{Multiples, YoloV8};
use super::postprocess::{DecodeOptions, Detection, decode};
use super::preprocess::{LetterboxMode, to_input};
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::VarBuilder;
use image::RgbImage;
use std::path::Path;
use std::sync::Arc;

/// COCO has 80 classes.
pub const COCO_CLASSES: usize = 80;

/// How images are fed to the network and its output filtered.
#[derive(Debug, Clone, PartialEq)]
pub struct DetectorOptions {
    /// The longest side of the network input: 640 or 320.
    pub size: usize,
    pub mode: LetterboxMode,
    pub decode: DecodeOptions,
}

impl Default for DetectorOptions {
    fn default() -> Self {
        Self { size: 640, mode: LetterboxMode::Rect, decode: DecodeOptions::default() }
    }
}

/// int8 asked of a detector off the CPU's blocked path.
fn not_on_the_cpu() -> DetectError {
    DetectError::Quantize("runs on the CPU's blocked path only (processing.detection.device: cpu)".into())
}

/// A loaded model. Cheap to clone: clones share the weights.
#[derive(Clone)]
pub struct Detector {
    model: Arc<YoloV8>,
    device: Device,
    pub variant: char,
    pub options: DetectorOptions,
}

/// `cpu` or `cuda:N`, as in `processing.detection.device`.
pub fn device_from_config(name: &str) -> Result<Device, DetectError> {
    if name == "cpu" {
        return Ok(Device::Cpu);
    }
    let err = |reason: String| DetectError::Device { device: name.to_owned(), reason };
    let Some(ordinal) = name.strip_prefix("cuda:").and_then(|n| n.parse::<usize>().ok()) else {
        return Err(err("expected `cpu` or `cuda:N`".into()));
    };
    if cfg!(feature = "cuda") {
        Device::new_cuda(ordinal).map_err(|e| err(e.to_string()))
    } else {
        Err(err(format!(
            "this build has no GPU support; rebuild with `cargo build --release --features cuda`, \
             or set processing.detection.device: cpu (asked for GPU {ordinal})"
        )))
    }
}

impl Detector {
    /// Loads YOLOv8 weights in candle's naming; the size (n/s/m/l/x) is read
    /// from the tensors themselves.
    pub fn load(weights: &Path, device: &Device, options: DetectorOptions) -> Result<Self, DetectError> {
        let path = weights.display().to_string();
        let bad = |reason: String| DetectError::Weights { path: path.clone(), reason };
        if !weights.is_file() {
            return Err(bad("not found".into()));
        }
        // SAFETY: the file is mapped read-only and copied into owned f32
        // tensors during load; it is not used after `YoloV8::load` returns.
        let tensors = unsafe { candle_core::safetensors::MmapedSafetensors::new(weights) }
            .map_err(|e| bad(format!("not a valid safetensors file ({e}); re-download or point to another file")))?;
        let stem = tensors
            .get("net.b1.0.conv.weight")
            .map_err(|_| bad("has no tensor `net.b1.0.conv.weight`: not YOLOv8 weights in candle's naming".into()))?;
        let variant = match stem.shape().first() {
            Some(16) => 'n',
            Some(32) => 's',
            Some(48) => 'm',
            Some(64) => 'l',
            Some(80) => 'x',
            other => {
                return Err(bad(format!("unexpected stem width {other:?}; expected a YOLOv8 n/s/m/l/x")));
            }
        };
        let multiples = Multiples::from_variant(&variant.to_string()).ok_or_else(|| bad("unknown variant".into()))?;
        let vb = VarBuilder::from_backend(Box::new(tensors), DType::F32, device.clone());
        let model = YoloV8::load(vb, multiples, COCO_CLASSES).map_err(|e| bad(format!("cannot load: {e}")))?;
        Ok(Self { model: Arc::new(model), device: device.clone(), variant, options })
    }

    /// The same weights with other options.
    pub fn with_options(&self, options: DetectorOptions) -> Self {
        Self { options, ..self.clone() }
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The raw network output for a prepared input `[b, 3, h, w]`.
    pub fn forward(&self, input: &Tensor) -> Result<Tensor, DetectError> {
        Ok(self.model.forward(input)?)
    }

    /// The ranges the network's activations take on `frames`, fed as this
    /// detector feeds them: the calibration of [`Self::in_int8`].
    pub fn calibrate(&self, frames: &[RgbImage]) -> Result<super::int8::Ranges, DetectError> {
        let inputs = frames
            .iter()
            .map(|f| to_input(f, self.options.size, self.options.mode, &self.device).map(|(input, _)| input))
            .collect::<Result<Vec<_>, _>>()?;
        self.model.calibrate(&inputs)?.ok_or_else(not_on_the_cpu)
    }

    /// Whether the network runs in int8.
    pub fn is_int8(&self) -> bool {
        self.model.is_int8()
    }

    /// The same detector running in int8, its activations quantized by `ranges`.
    pub fn in_int8(&self, ranges: &super::int8::Ranges) -> Result<Self, DetectError> {
        let model =
            self.model.in_int8(ranges).ok_or_else(not_on_the_cpu)?.map_err(|e| DetectError::Quantize(e.to_string()))?;
        Ok(Self { model: Arc::new(model), ..self.clone() })
    }

    /// Detects objects in one RGB image.
    pub fn detect(&self, img: &RgbImage) -> Result<Vec<Detection>, DetectError> {
        let (input, lb) = to_input(img, self.options.size, self.options.mode, &self.device)?;
        let output = self.forward(&input)?.squeeze(0)?;
        let anchors = output.dim(1)?;
        let data = output.flatten_all()?.to_vec1::<f32>()?;
        Ok(decode(&data, anchors, &lb, &self.options.decode))
    }
}
